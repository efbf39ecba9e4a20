//! Progress of long operations (a scan), reported to whoever draws it: the `musefs`
//! binary draws a bar on a terminal; the mount's background sync and tests report
//! nowhere. The core never draws anything itself.

use std::sync::Arc;

/// Receives the progress of one long operation. Every method has a default that does
/// nothing, so a drawer implements only what it shows.
pub trait Progress: Send + Sync {
    /// A stage starts: `what` (e.g. `scanning music`) with `total` steps.
    fn start(&self, what: &str, total: u64) {
        let _ = (what, total);
    }
    /// `n` more steps are done.
    fn advance(&self, n: u64) {
        let _ = n;
    }
    /// Runs `f` (which logs) so its output is not torn by the drawing.
    fn suspend(&self, f: &mut dyn FnMut()) {
        f();
    }
    /// The stage is over.
    fn finish(&self) {}
}

impl std::fmt::Debug for dyn Progress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("dyn Progress")
    }
}

/// Reports nowhere.
#[derive(Debug, Default, Clone, Copy)]
pub struct Silent;

impl Progress for Silent {}

/// A shared [`Silent`].
pub fn silent() -> Arc<dyn Progress> {
    Arc::new(Silent)
}

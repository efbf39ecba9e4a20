//! The progress bar the CLI draws for the core's [`Progress`] reports (on a terminal
//! only: a plain command's output stays its result).

use std::sync::{Arc, Mutex};

use musefs_core::progress::{silent, Progress};
use musefs_core::util::lock;

struct Bar(Mutex<Option<indicatif::ProgressBar>>);

impl Progress for Bar {
    fn start(&self, what: &str, total: u64) {
        let b = indicatif::ProgressBar::new(total);
        b.set_style(
            indicatif::ProgressStyle::with_template("{prefix} [{bar:40}] {pos}/{len} {per_sec} eta {eta}")
                .expect("static template")
                .progress_chars("=> "),
        );
        b.set_prefix(what.to_owned());
        *lock(&self.0) = Some(b);
    }

    fn advance(&self, n: u64) {
        if let Some(b) = &*lock(&self.0) {
            b.inc(n);
        }
    }

    fn suspend(&self, f: &mut dyn FnMut()) {
        let bar = lock(&self.0).clone();
        match bar {
            Some(b) => b.suspend(f),
            None => f(),
        }
    }

    fn finish(&self) {
        if let Some(b) = lock(&self.0).take() {
            b.finish_and_clear();
        }
    }
}

/// A bar on stderr when it is a terminal, else nothing.
pub fn bar() -> Arc<dyn Progress> {
    if std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        Arc::new(Bar(Mutex::new(None)))
    } else {
        silent()
    }
}

//! # musefs-plugin-suite
//!
//! The behaviour suites every musefs plugin passes, in the spirit of OpenDAL's
//! behaviour tests: one set of checks, each its own test (a [`Trial`] of
//! `libtest-mimic`), run through the real ABI objects ([`FormatBox`], [`OriginBox`]) and
//! gated by what the plugin says it can do (a check a plugin cannot pass by design is
//! listed as ignored, with the capability it needs, never silently skipped).
//!
//! The host's own tests run it on every bundled plugin loaded from its `.so`; a
//! third-party plugin crate runs it on itself in-process (`format_into_ffi`) from a test
//! target with `harness = false`, as `examples/format-wav/tests/suite.rs` does:
//!
//! ```ignore
//! fn main() {
//!     let args = libtest_mimic::Arguments::from_args();
//!     let f = FormatUnderTest::new("wav", format_into_ffi(Wav)).fixture(Fixture::tagged("tone.wav", bytes));
//!     libtest_mimic::run(&args, musefs_plugin_suite::format_trials(f)).exit();
//! }
//! ```

pub mod format;
pub mod origin;

pub use format::{format_trials, Fixture, FormatCaps, FormatUnderTest};
pub use libtest_mimic::{run, Arguments, Conclusion, Failed, Trial};
pub use origin::{origin_trials, OriginCaps as SuiteOriginCaps, OriginStore, OriginUnderTest};

/// `Err(message)` unless `cond`: the suite's assertion, returning instead of panicking
/// so one failed check is one failed trial with its message.
///
/// # Errors
/// `message` when `cond` is false.
pub fn check(cond: bool, message: impl FnOnce() -> String) -> Result<(), Failed> {
    if cond {
        Ok(())
    } else {
        Err(message().into())
    }
}

/// A deterministic pseudo-random sequence (for seeded reads and corruptions).
pub fn lcg(seed: &mut u64) -> u64 {
    *seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    *seed >> 11
}

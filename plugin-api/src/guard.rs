//! Panic containment at the boundary.

use std::panic::{catch_unwind, AssertUnwindSafe};

use abi_stable::std_types::RResult;

use crate::error::{ErrorKind, PluginError, PluginResult};

/// Runs `f`, turning a panic into a [`ErrorKind::PANIC`] error.
///
/// Every exported entry point of a plugin goes through this (the adapters and
/// [`export_plugin!`](crate::export_plugin) do it for you): a panic that crossed the
/// `extern "C"` boundary would abort the whole mount.
pub fn guard<R>(f: impl FnOnce() -> PluginResult<R>) -> RResult<R, PluginError> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(value)) => RResult::ROk(value),
        Ok(Err(err)) => RResult::RErr(err),
        Err(payload) => RResult::RErr(panic_error(payload.as_ref())),
    }
}

/// Like [`guard`] for calls that cannot fail (`len`, `stat`, `caps`, `probe`, ...): a
/// panic yields `fallback`, and is logged through the host as an error naming `what`
/// (the call) and the panic, so a plugin bug is never silently turned into a default.
pub fn guard_or<R>(what: &str, fallback: R, f: impl FnOnce() -> R) -> R {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(v) => v,
        Err(payload) => {
            report(&format!("{what} panicked ({}); answered with a default value", panic_message(payload.as_ref())));
            fallback
        }
    }
}

fn report(message: &str) {
    crate::host::error(message); // abi-2.0: eprintln!("musefs plugin error: {message}");
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "non-string panic payload".to_owned())
}

fn panic_error(payload: &(dyn std::any::Any + Send)) -> PluginError {
    PluginError::new(ErrorKind::PANIC, format!("plugin panicked: {}", panic_message(payload)))
}

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

/// Like [`guard`] for calls that cannot fail: a panic yields `fallback`.
pub fn guard_or<R>(fallback: R, f: impl FnOnce() -> R) -> R {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or(fallback)
}

fn panic_error(payload: &(dyn std::any::Any + Send)) -> PluginError {
    let what = payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "non-string panic payload".to_owned());
    PluginError::new(ErrorKind::PANIC, format!("plugin panicked: {what}"))
}

//! Retrying a call with backoff under a [`CallCtx`] (plain Rust, not part of the ABI):
//! the one retry loop of musefs, used by the host's layer around every origin and by
//! the remote plugins for what only they can repeat (a listing page).

use std::time::{Duration, Instant};

use abi_stable::std_types::RArc;

use crate::error::{ErrorKind, PluginError, PluginResult};
use crate::types::CallCtx;

/// How transient failures are retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// The most attempts of one call (1: no retry).
    pub attempts: u32,
    /// The first backoff delay, doubled after each failure.
    pub base: Duration,
    /// The longest backoff delay.
    pub max: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self { attempts: 4, base: Duration::from_millis(100), max: Duration::from_secs(2) }
    }
}

/// A context with what is left of `ctx`'s timeout (counted from `start`) and the same
/// cancel flag.
pub fn remaining(ctx: &CallCtx, start: Instant) -> CallCtx {
    match ctx.timeout() {
        None => ctx.clone(),
        Some(t) => {
            let left = t.saturating_sub(start.elapsed()).max(Duration::from_millis(1));
            CallCtx {
                timeout_ms: u64::try_from(left.as_millis()).unwrap_or(u64::MAX),
                cancel: RArc::clone(&ctx.cancel),
            }
        }
    }
}

/// Runs `call` (given each attempt's context: the time left of `ctx`'s timeout) until it
/// succeeds, fails with an error that is not `retryable`, has been tried
/// `policy.attempts` times, or the deadline or a cancel comes. Before each retry
/// `on_retry(error, attempt, wait)` is told (for a log line). The backoff never sleeps
/// past the deadline and wakes within 25 ms of a cancel.
///
/// # Errors
/// The last attempt's error; [`ErrorKind::CANCELLED`] if cancelled while backing off.
pub fn with_retries<T>(
    policy: RetryPolicy,
    ctx: &CallCtx,
    mut on_retry: impl FnMut(&PluginError, u32, Duration),
    mut call: impl FnMut(&CallCtx) -> PluginResult<T>,
) -> PluginResult<T> {
    let start = Instant::now();
    let mut delay = policy.base;
    let mut attempt = 1;
    loop {
        let err = match call(&remaining(ctx, start)) {
            Ok(v) => return Ok(v),
            Err(e) => e,
        };
        if !err.retryable || attempt >= policy.attempts.max(1) || ctx.check(start).is_err() {
            return Err(err);
        }
        let wait = match ctx.deadline_from(start) {
            Some(d) => delay.min(d.saturating_duration_since(Instant::now())),
            None => delay,
        };
        if wait.is_zero() {
            return Err(err);
        }
        on_retry(&err, attempt, wait);
        let slept = Instant::now();
        while slept.elapsed() < wait {
            if ctx.is_cancelled() {
                return Err(PluginError::new(ErrorKind::CANCELLED, format!("cancelled while retrying after: {err}")));
            }
            std::thread::sleep((wait - slept.elapsed()).min(Duration::from_millis(25)));
        }
        delay = (delay * 2).min(policy.max);
        attempt += 1;
    }
}

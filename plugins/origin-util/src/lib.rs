//! Helpers shared by the remote origin plugins (`s3`, `sftp`).
//!
//! - [`Remote`]: the plugin's own tokio runtime (built by the origin factory, never at
//!   library load, never shared with the host); [`Remote::attempt`] runs one async
//!   operation under the host's [`CallCtx`] (the deadline is enforced, the cancel flag
//!   is polled) for calls the host's origin layer retries (stat, open, reads), and
//!   [`Remote::call`] also retries transient failures with exponential backoff, within a
//!   bounded number of attempts and never past the deadline, for what only the plugin
//!   can repeat (a listing page).
//! - [`ReadAhead`]: a per-handle buffer so the many small reads of a format plugin
//!   (during a scan) become a few ranged requests.
//! - [`check_path`]: refuses paths that are not plain relative paths.
//!
//! Errors keep the plugin-api [`ErrorKind`] and `retryable` flag of the failing attempt;
//! messages never contain credentials (the callers build them from the operation and
//! the path only).

use std::future::Future;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use musefs_plugin_api::{CallCtx, ErrorKind, PluginError, PluginResult};

pub use musefs_plugin_api::retry::RetryPolicy;

/// A plugin's own async runtime and retry policy.
pub struct Remote {
    rt: tokio::runtime::Runtime,
    retry: RetryPolicy,
    what: &'static str,
}

impl Remote {
    /// Builds the runtime (`threads` worker threads). `what` names the plugin in errors.
    ///
    /// # Errors
    /// [`ErrorKind::IO`] if the runtime cannot be built.
    pub fn new(what: &'static str, threads: usize, retry: RetryPolicy) -> PluginResult<Self> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads.max(1))
            .thread_name(format!("musefs-{what}"))
            .enable_all()
            .build()
            .map_err(|e| PluginError::new(ErrorKind::IO, format!("origin `{what}`: cannot start its runtime: {e}")))?;
        Ok(Self { rt, retry: RetryPolicy { attempts: retry.attempts.max(1), ..retry }, what })
    }

    /// The runtime, for work that must run on it (building clients, spawning).
    pub fn runtime(&self) -> &tokio::runtime::Runtime {
        &self.rt
    }

    /// Runs `op` (called again for each attempt) under `ctx`: at most until the deadline,
    /// returning [`ErrorKind::CANCELLED`] soon after the cancel flag is raised, retrying
    /// retryable errors with backoff.
    ///
    /// # Errors
    /// The last attempt's error; [`ErrorKind::TIMED_OUT`] (retryable) when the deadline
    /// passed; [`ErrorKind::CANCELLED`].
    pub fn call<T, F, Fut>(&self, ctx: &CallCtx, op_name: &str, mut op: F) -> PluginResult<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = PluginResult<T>>,
    {
        let log = |err: &PluginError, attempt: u32, wait: Duration| {
            musefs_plugin_api::host::info(format!(
                "{} {op_name}: attempt {attempt} of {} failed ({err}); retrying in {wait:.1?}",
                self.what, self.retry.attempts
            ));
        };
        musefs_plugin_api::retry::with_retries(self.retry, ctx, log, |c| self.once(c, op_name, op()))
    }

    /// Runs the operation `op` makes once, under `ctx` (see [`once`](Self::once)). For
    /// calls the host's origin layer retries itself (stat, open, reads): a retry here
    /// too would multiply the attempts.
    ///
    /// # Errors
    /// As for [`once`](Self::once).
    pub fn attempt<T, F, Fut>(&self, ctx: &CallCtx, op_name: &str, op: F) -> PluginResult<T>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = PluginResult<T>>,
    {
        self.once(ctx, op_name, op())
    }

    /// Runs `fut` once (no retry) under `ctx`: at most until the deadline, and
    /// [`ErrorKind::CANCELLED`] soon after the cancel flag is raised. For operations that
    /// cannot be repeated, like reading the next bytes of a response body.
    ///
    /// # Errors
    /// `fut`'s error; [`ErrorKind::TIMED_OUT`] (retryable); [`ErrorKind::CANCELLED`].
    pub fn once<T>(&self, ctx: &CallCtx, op_name: &str, fut: impl Future<Output = PluginResult<T>>) -> PluginResult<T> {
        let start = Instant::now();
        self.once_until(ctx, start, ctx.deadline_from(start), op_name, fut)
    }

    fn once_until<T>(
        &self,
        ctx: &CallCtx,
        start: Instant,
        deadline: Option<Instant>,
        op_name: &str,
        fut: impl Future<Output = PluginResult<T>>,
    ) -> PluginResult<T> {
        ctx.check(start)?;
        let res = self.rt.block_on(async {
            tokio::pin!(fut);
            loop {
                let tick = tokio::time::sleep(Duration::from_millis(25));
                tokio::select! {
                    r = &mut fut => return Some(r),
                    () = tick => {
                        if ctx.is_cancelled() || deadline.is_some_and(|d| Instant::now() >= d) {
                            return None;
                        }
                    }
                }
            }
        });
        match res {
            Some(r) => r,
            None => {
                ctx.check(start)?;
                // The deadline was reached between the tick and the check.
                Err(timed_out(self.what, op_name, ctx))
            }
        }
    }
}

fn timed_out(what: &str, op: &str, ctx: &CallCtx) -> PluginError {
    PluginError::new(ErrorKind::TIMED_OUT, format!("origin `{what}`: {op}: no answer within {} ms", ctx.timeout_ms))
        .retryable()
}

pub use musefs_plugin_api::check_path;

/// A per-handle read-ahead buffer: a read that misses fetches at least `min` bytes, so
/// a format plugin's small sequential reads cost one request per `min` bytes.
pub struct ReadAhead {
    min: usize,
    buf: Mutex<(u64, Vec<u8>)>,
}

impl ReadAhead {
    /// A buffer fetching at least `min` bytes per miss.
    pub fn new(min: usize) -> Self {
        Self { min, buf: Mutex::new((0, Vec::new())) }
    }

    /// The least a miss fetches.
    pub fn min(&self) -> usize {
        self.min
    }

    /// Serves `out` at `offset` of an object of `len` bytes, from the buffer or through
    /// `fetch(offset, n)` (which must return exactly `n` bytes, or fewer only at the end).
    /// Reads of at least `min` bytes bypass the buffer.
    ///
    /// # Errors
    /// `fetch`'s errors.
    pub fn read(
        &self,
        offset: u64,
        len: u64,
        out: &mut [u8],
        fetch: impl FnOnce(u64, usize) -> PluginResult<Vec<u8>>,
    ) -> PluginResult<usize> {
        if offset >= len || out.is_empty() {
            return Ok(0);
        }
        let want = out.len().min(usize::try_from(len - offset).unwrap_or(usize::MAX));
        {
            let b = self.buf.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            if offset >= b.0 && offset + want as u64 <= b.0 + b.1.len() as u64 {
                let at = (offset - b.0) as usize;
                out[..want].copy_from_slice(&b.1[at..at + want]);
                return Ok(want);
            }
        }
        let n = want.max(self.min).min(usize::try_from(len - offset).unwrap_or(usize::MAX));
        let data = fetch(offset, n)?;
        let got = data.len().min(want);
        out[..got].copy_from_slice(&data[..got]);
        if want < self.min {
            *self.buf.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = (offset, data);
        }
        Ok(got)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    fn remote() -> Remote {
        Remote::new(
            "test",
            1,
            RetryPolicy { attempts: 3, base: Duration::from_millis(5), max: Duration::from_millis(20) },
        )
        .unwrap()
    }

    #[test]
    fn retries_transient_errors_within_the_bound() {
        let r = remote();
        let tries = AtomicU32::new(0);
        let ctx = CallCtx::with_timeout(Duration::from_secs(5));
        let out = r.call(&ctx, "get", || {
            let n = tries.fetch_add(1, Ordering::SeqCst);
            async move {
                if n < 2 {
                    Err(PluginError::new(ErrorKind::UNAVAILABLE, "blip").retryable())
                } else {
                    Ok(n)
                }
            }
        });
        assert_eq!(out.unwrap(), 2);
        tries.store(0, Ordering::SeqCst);
        let e = r
            .call(&ctx, "get", || {
                tries.fetch_add(1, Ordering::SeqCst);
                async { Err::<(), _>(PluginError::new(ErrorKind::UNAVAILABLE, "down").retryable()) }
            })
            .unwrap_err();
        assert_eq!((e.kind, tries.load(Ordering::SeqCst)), (ErrorKind::UNAVAILABLE, 3));
        tries.store(0, Ordering::SeqCst);
        let e = r
            .call(&ctx, "get", || {
                tries.fetch_add(1, Ordering::SeqCst);
                async { Err::<(), _>(PluginError::new(ErrorKind::NOT_FOUND, "no")) }
            })
            .unwrap_err();
        assert_eq!((e.kind, tries.load(Ordering::SeqCst)), (ErrorKind::NOT_FOUND, 1));
    }

    #[test]
    fn deadline_and_cancel_stop_a_hanging_call() {
        let r = remote();
        let ctx = CallCtx::with_timeout(Duration::from_millis(150));
        let t = Instant::now();
        let e = r.call(&ctx, "get", std::future::pending::<PluginResult<()>>).unwrap_err();
        assert_eq!(e.kind, ErrorKind::TIMED_OUT);
        assert!(e.retryable);
        assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
        let ctx = CallCtx::unlimited();
        let c2 = ctx.clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(100));
            c2.cancel();
        });
        let e = r.call(&ctx, "get", std::future::pending::<PluginResult<()>>).unwrap_err();
        assert_eq!(e.kind, ErrorKind::CANCELLED);
    }

    #[test]
    fn read_ahead_turns_small_reads_into_few_fetches() {
        let data: Vec<u8> = (0..10_000u32).map(|i| i as u8).collect();
        let ra = ReadAhead::new(4096);
        let mut fetches = 0;
        let mut pos = 0u64;
        let mut got = Vec::new();
        while pos < data.len() as u64 {
            let mut b = [0u8; 100];
            let n = ra
                .read(pos, data.len() as u64, &mut b, |o, n| {
                    fetches += 1;
                    let o = o as usize;
                    Ok(data[o..(o + n).min(data.len())].to_vec())
                })
                .unwrap();
            got.extend_from_slice(&b[..n]);
            pos += n as u64;
        }
        assert_eq!(got, data);
        assert!(fetches <= 4, "{fetches}");
    }

    #[test]
    fn hostile_paths_are_refused() {
        for p in ["/etc/passwd", "../x", "a/../../b", "a//b", "./a", ""] {
            assert!(check_path(p).is_err(), "{p}");
        }
        check_path("Artist/Album/01 x.flac").unwrap();
    }
}

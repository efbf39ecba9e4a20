//! The host's layer around every origin: retries of transient failures, so no plugin
//! has to remember to call a retry helper, and a third-party origin gets the same
//! policy as the bundled ones.
//!
//! Every origin the host creates (`Plugins::origin`, one layer up)
//! is wrapped: `stat`, `open`, starting a listing and `read_at` on its handles are
//! retried when the plugin says an error is `retryable`, with exponential backoff, at
//! most `retries` attempts (the origin table's `retries` key, default 4), and never past
//! the call's deadline: each attempt gets only the time left of the caller's timeout,
//! and the cancel flag stops the backoff at once. Listing pages are not retried here: a
//! cursor cannot be rewound in general (a plugin whose pages can be re-requested
//! retries them itself). Every retry is logged at debug level naming the origin and
//! the call.

use std::sync::Arc;
use std::time::Duration;

use musefs_plugin_api::abi_stable::std_types::RSliceMut;
use musefs_plugin_api::{
    origin_into_ffi, CallCtx, Entry, Handle, HandleBox, ListRequest, Lister, ListerBox, Origin, OriginBox, OriginCaps,
    PluginError, PluginResult, Stat,
};

pub use musefs_plugin_api::retry::RetryPolicy;

/// The policy of an origin table (JSON): its `retries` key, if any, is the number of
/// attempts (clamped to 1..=20).
pub fn policy_of_config(config_json: &str) -> RetryPolicy {
    let attempts = serde_json::from_str::<serde_json::Value>(config_json)
        .ok()
        .and_then(|v| v.get("retries").and_then(serde_json::Value::as_u64))
        .map(|n| n.clamp(1, 20) as u32);
    RetryPolicy { attempts: attempts.unwrap_or(RetryPolicy::default().attempts), ..RetryPolicy::default() }
}

/// `origin` (named `name` in the manifest) behind the host's retry layer.
pub fn layered(name: &str, origin: OriginBox, policy: RetryPolicy) -> OriginBox {
    origin_into_ffi(Layered { label: Arc::from(name), inner: origin, policy })
}

struct Layered {
    label: Arc<str>,
    inner: OriginBox,
    policy: RetryPolicy,
}

/// Runs `call` (`kind` of `origin`: stat, open, list, read) under `policy`, logging each
/// retry at debug level with `what`; its latency (retries included) and failure go to
/// the metrics.
fn retry<T>(
    policy: RetryPolicy,
    ctx: &CallCtx,
    (origin, kind): (&str, &'static str),
    what: impl Fn() -> String,
    call: impl FnMut(&CallCtx) -> PluginResult<T>,
) -> PluginResult<T> {
    let log = |err: &PluginError, attempt: u32, wait: Duration| {
        tracing::debug!("{}: attempt {attempt} of {} failed ({err}); retrying in {wait:.1?}", what(), policy.attempts);
    };
    let t = std::time::Instant::now();
    let res = musefs_plugin_api::retry::with_retries(policy, ctx, log, call);
    crate::metrics::global().origin_call(origin, kind, t.elapsed(), res.is_ok());
    res
}

impl Origin for Layered {
    fn list(&self, ctx: &CallCtx, req: &ListRequest) -> PluginResult<Box<dyn Lister>> {
        let what = || format!("origin {}: listing {:?}", self.label, req.dir.as_str());
        let inner = retry(self.policy, ctx, (&self.label, "list"), what, |c| self.inner.list(c, req).into_result())?;
        Ok(Box::new(LayeredLister(inner)))
    }

    fn stat(&self, ctx: &CallCtx, path: &str) -> PluginResult<Stat> {
        let what = || format!("origin {}: stat {path}", self.label);
        retry(self.policy, ctx, (&self.label, "stat"), what, |c| self.inner.stat(c, path.into()).into_result())
    }

    fn open(&self, ctx: &CallCtx, path: &str) -> PluginResult<Arc<dyn Handle>> {
        let what = || format!("origin {}: open {path}", self.label);
        let inner =
            retry(self.policy, ctx, (&self.label, "open"), what, |c| self.inner.open(c, path.into()).into_result())?;
        let label = format!("origin {}: read {path}", self.label);
        Ok(Arc::new(LayeredHandle { inner, policy: self.policy, origin: self.label.clone(), label }))
    }

    fn caps(&self) -> OriginCaps {
        self.inner.caps()
    }
}

struct LayeredLister(ListerBox);

impl Lister for LayeredLister {
    fn next_page(&mut self, ctx: &CallCtx, max: usize) -> PluginResult<Vec<Entry>> {
        let max = u32::try_from(max).unwrap_or(u32::MAX);
        self.0.next_page(ctx, max).into_result().map(|v| v.into_vec())
    }
}

struct LayeredHandle {
    inner: HandleBox,
    policy: RetryPolicy,
    origin: Arc<str>,
    label: String,
}

impl Handle for LayeredHandle {
    fn len(&self) -> u64 {
        self.inner.len()
    }

    fn stat(&self) -> Stat {
        self.inner.stat()
    }

    fn read_at(&self, ctx: &CallCtx, offset: u64, buf: &mut [u8]) -> PluginResult<usize> {
        let what = || format!("{} at {offset}", self.label);
        retry(self.policy, ctx, (&self.origin, "read"), what, |c| {
            self.inner.read_at(c, offset, RSliceMut::from_mut_slice(&mut *buf)).into_result()
        })
    }

    fn local_path(&self) -> Option<String> {
        self.inner.local_path().into_option().map(|p| p.into_string())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use musefs_plugin_api::handle_into_ffi;
    use musefs_plugin_api::testing::MemOrigin;
    use musefs_plugin_api::ErrorKind;

    use super::*;

    /// `handle` behind the layer (as an FFI handle).
    fn layered_handle(handle: HandleBox, policy: RetryPolicy) -> HandleBox {
        handle_into_ffi(Arc::new(LayeredHandle { inner: handle, policy, origin: "test".into(), label: "test".into() }))
    }

    fn quick(attempts: u32) -> RetryPolicy {
        RetryPolicy { attempts, base: Duration::from_millis(5), max: Duration::from_millis(20) }
    }

    fn blip() -> PluginError {
        PluginError::new(ErrorKind::UNAVAILABLE, "blip").retryable()
    }

    #[test]
    fn transient_failures_are_retried_within_the_attempts() {
        let mem = MemOrigin::new(OriginCaps::NONE);
        mem.put("a", vec![1, 2, 3]);
        let o = layered("m", origin_into_ffi(mem.clone()), quick(4));
        let ctx = CallCtx::with_timeout(Duration::from_secs(5));
        mem.fail_next(3, blip());
        assert_eq!(o.stat(&ctx, "a".into()).into_result().unwrap().size, 3);
        mem.fail_next(4, blip());
        let e = o.stat(&ctx, "a".into()).into_result().unwrap_err();
        assert_eq!(e.kind, ErrorKind::UNAVAILABLE, "four failures exhaust four attempts");
        let h = o.open(&ctx, "a".into()).into_result().unwrap();
        mem.fail_next(2, blip());
        let mut b = [0u8; 3];
        assert_eq!(h.read_at(&ctx, 0, RSliceMut::from_mut_slice(&mut b)).into_result().unwrap(), 3);
        assert_eq!(b, [1, 2, 3]);
        mem.fail_next(1, blip());
        assert!(o.list(&ctx, &ListRequest { dir: "".into(), recursive: true }).into_result().is_ok());
    }

    #[test]
    fn permanent_and_changed_errors_are_not_retried() {
        let mem = MemOrigin::new(OriginCaps::NONE);
        mem.put("a", vec![1]);
        let o = layered("m", origin_into_ffi(mem.clone()), quick(4));
        let ctx = CallCtx::with_timeout(Duration::from_secs(5));
        let before = mem.calls();
        assert_eq!(o.stat(&ctx, "missing".into()).into_result().unwrap_err().kind, ErrorKind::NOT_FOUND);
        assert_eq!(mem.calls() - before, 1);
        let h = o.open(&ctx, "a".into()).into_result().unwrap();
        mem.put("a", vec![2]);
        let before = mem.calls();
        let mut b = [0u8; 1];
        let e = h.read_at(&ctx, 0, RSliceMut::from_mut_slice(&mut b)).into_result().unwrap_err();
        assert_eq!((e.kind, mem.calls() - before), (ErrorKind::CHANGED, 1));
    }

    #[test]
    fn retries_never_outlast_the_deadline_or_a_cancel() {
        let mem = MemOrigin::new(OriginCaps::NONE);
        mem.fail_with(Some(blip()));
        let slow = RetryPolicy { attempts: 20, base: Duration::from_millis(100), max: Duration::from_millis(400) };
        let o = layered("m", origin_into_ffi(mem.clone()), slow);
        let t = Instant::now();
        let e = o.stat(&CallCtx::with_timeout(Duration::from_millis(300)), "a".into()).into_result().unwrap_err();
        assert!(e.retryable && t.elapsed() < Duration::from_millis(600), "{e} after {:?}", t.elapsed());
        let ctx = CallCtx::with_timeout(Duration::from_secs(30));
        let c2 = ctx.clone();
        let canceller = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(150));
            c2.cancel();
        });
        let t = Instant::now();
        let e = o.stat(&ctx, "a".into()).into_result().unwrap_err();
        canceller.join().unwrap();
        assert!(t.elapsed() < Duration::from_secs(2), "a cancel stops the backoff: {:?}", t.elapsed());
        assert!(matches!(e.kind, ErrorKind::CANCELLED | ErrorKind::UNAVAILABLE), "{e}");
        let h = layered_handle(handle_into_ffi(Arc::new(musefs_plugin_api::testing::MemHandle::new(vec![7]))), slow);
        let mut b = [0u8; 1];
        assert_eq!(h.read_at(&ctx, 0, RSliceMut::from_mut_slice(&mut b)).into_result().unwrap(), 1);
        assert_eq!(h.len(), 1);
    }
}

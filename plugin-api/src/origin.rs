//! Origins: where the original files live (a local disk, S3, SFTP, ...).
//!
//! A plugin author implements [`Origin`], [`Lister`] and [`Handle`]: plain Rust traits
//! with `Result`s. The FFI-safe traits [`FfiOrigin`], [`FfiLister`] and [`FfiHandle`]
//! are what crosses the boundary; the adapters here bridge the two and catch panics.
#![allow(unsafe_code, reason = "FFI: `#[sabi_trait]` expands to the unsafe vtable glue of the plugin boundary")]
// `len` of the generated `FfiHandle_TO` is an object's length, not a collection's:
// no `is_empty` is added to the ABI for a lint.
#![allow(clippy::len_without_is_empty)]

use std::sync::Arc;

use abi_stable::{
    sabi_trait,
    sabi_trait::prelude::TD_Opaque,
    std_types::{RBox, ROption, RResult, RSliceMut, RStr, RString, RVec},
};

use crate::error::{PluginError, PluginResult};
use crate::guard::{guard, guard_or};
use crate::types::{CallCtx, Entry, ListRequest, OriginCaps, Stat};

/// The FFI-safe origin trait object (see [`Origin`] for the meaning of each method).
#[sabi_trait]
pub trait FfiOrigin: Send + Sync {
    /// See [`Origin::list`].
    fn list(&self, ctx: &CallCtx, req: &ListRequest) -> RResult<ListerBox, PluginError>;
    /// See [`Origin::stat`].
    fn stat(&self, ctx: &CallCtx, path: RStr<'_>) -> RResult<Stat, PluginError>;
    /// See [`Origin::open`].
    fn open(&self, ctx: &CallCtx, path: RStr<'_>) -> RResult<HandleBox, PluginError>;
    /// See [`Origin::caps`].
    #[sabi(last_prefix_field)]
    fn caps(&self) -> OriginCaps;
}

/// A boxed origin as it crosses the boundary.
pub type OriginBox = FfiOrigin_TO<'static, RBox<()>>;

/// The FFI-safe listing cursor (see [`Lister`]).
#[sabi_trait]
pub trait FfiLister: Send {
    /// See [`Lister::next_page`].
    #[sabi(last_prefix_field)]
    fn next_page(&mut self, ctx: &CallCtx, max: u32) -> RResult<RVec<Entry>, PluginError>;
}

/// A boxed lister as it crosses the boundary.
pub type ListerBox = FfiLister_TO<'static, RBox<()>>;

/// The FFI-safe open-file handle (see [`Handle`]). Cloning is cheap and shares the handle.
#[sabi_trait]
pub trait FfiHandle: Send + Sync + Clone {
    /// See [`Handle::len`].
    fn len(&self) -> u64;
    /// See [`Handle::stat`].
    fn stat(&self) -> Stat;
    /// See [`Handle::read_at`].
    fn read_at(&self, ctx: &CallCtx, offset: u64, buf: RSliceMut<'_, u8>) -> RResult<usize, PluginError>;
    /// See [`Handle::local_path`].
    #[sabi(last_prefix_field)]
    fn local_path(&self) -> ROption<RString>;
}

/// A boxed handle as it crosses the boundary.
pub type HandleBox = FfiHandle_TO<'static, RBox<()>>;

/// An origin: lists, stats and opens objects by path relative to its root.
///
/// Paths are `/`-separated, relative, without `.` or `..` components. Implementations
/// must honour `ctx` (timeout and cancel flag) in every call that can block.
pub trait Origin: Send + Sync + 'static {
    /// Starts a listing of `req.dir` (recursive or one level).
    ///
    /// # Errors
    /// [`NOT_FOUND`](crate::ErrorKind::NOT_FOUND) if the directory does not exist,
    /// [`UNAVAILABLE`](crate::ErrorKind::UNAVAILABLE) (retryable) if the origin cannot be reached.
    fn list(&self, ctx: &CallCtx, req: &ListRequest) -> PluginResult<Box<dyn Lister>>;

    /// The metadata of one object.
    ///
    /// # Errors
    /// [`NOT_FOUND`](crate::ErrorKind::NOT_FOUND) if it does not exist; transport errors as for `list`.
    fn stat(&self, ctx: &CallCtx, path: &str) -> PluginResult<Stat>;

    /// Opens one object for random-access reads, pinned to the version seen now.
    ///
    /// # Errors
    /// As for [`stat`](Origin::stat).
    fn open(&self, ctx: &CallCtx, path: &str) -> PluginResult<Arc<dyn Handle>>;

    /// What this origin can do.
    fn caps(&self) -> OriginCaps;
}

/// A listing in progress.
pub trait Lister: Send + 'static {
    /// Up to `max` further entries; an empty page means the listing is complete.
    ///
    /// # Errors
    /// Transport errors; entries that cannot be represented (non-UTF-8 names) are
    /// skipped by the implementation, not reported as errors.
    fn next_page(&mut self, ctx: &CallCtx, max: usize) -> PluginResult<Vec<Entry>>;
}

/// An open object.
pub trait Handle: Send + Sync + 'static {
    /// Its length in bytes, fixed at open.
    fn len(&self) -> u64;

    /// Whether it is empty.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Its metadata as seen at open (the stamp reads are pinned to).
    fn stat(&self) -> Stat;

    /// Reads up to `buf.len()` bytes at `offset` into `buf`, returning how many were read;
    /// `0` only at or past the end. Short reads are allowed.
    ///
    /// # Errors
    /// [`CHANGED`](crate::ErrorKind::CHANGED) if the object was replaced since open;
    /// transport and I/O errors.
    fn read_at(&self, ctx: &CallCtx, offset: u64, buf: &mut [u8]) -> PluginResult<usize>;

    /// A local filesystem path with exactly these bytes, for zero-copy serving.
    fn local_path(&self) -> Option<String> {
        None
    }
}

/// Refuses paths that are not plain, relative, `/`-separated paths inside an origin:
/// empty, absolute, with an empty, `.` or `..` component, or with a NUL byte. Every
/// origin checks the paths it is given with this, so they all refuse the same ones.
///
/// # Errors
/// [`INVALID_INPUT`](crate::ErrorKind::INVALID_INPUT) naming the path.
pub fn check_path(path: &str) -> PluginResult<()> {
    let bad =
        path.starts_with('/') || path.contains('\0') || path.split('/').any(|c| c.is_empty() || c == "." || c == "..");
    if bad {
        return Err(PluginError::invalid_input(format!(
            "path {path:?} is not a plain relative path inside the origin"
        )));
    }
    Ok(())
}

/// Wraps a Rust [`Origin`] into its FFI form. Used by [`export_plugin!`](crate::export_plugin).
pub fn origin_into_ffi<T: Origin>(origin: T) -> OriginBox {
    FfiOrigin_TO::from_value(OriginAdapter(origin), TD_Opaque)
}

/// Wraps a Rust [`Handle`] into its FFI form (hosts use this too, to hand a format
/// plugin a cached or otherwise wrapped view of a file).
pub fn handle_into_ffi(handle: Arc<dyn Handle>) -> HandleBox {
    FfiHandle_TO::from_value(HandleAdapter(handle), TD_Opaque)
}

struct OriginAdapter<T>(T);

impl<T: Origin> FfiOrigin for OriginAdapter<T> {
    fn list(&self, ctx: &CallCtx, req: &ListRequest) -> RResult<ListerBox, PluginError> {
        guard(|| {
            let lister = self.0.list(ctx, req)?;
            Ok(FfiLister_TO::from_value(ListerAdapter(lister), TD_Opaque))
        })
    }

    fn stat(&self, ctx: &CallCtx, path: RStr<'_>) -> RResult<Stat, PluginError> {
        guard(|| self.0.stat(ctx, path.as_str()))
    }

    fn open(&self, ctx: &CallCtx, path: RStr<'_>) -> RResult<HandleBox, PluginError> {
        guard(|| self.0.open(ctx, path.as_str()).map(handle_into_ffi))
    }

    fn caps(&self) -> OriginCaps {
        guard_or("Origin::caps", OriginCaps::NONE, || self.0.caps())
    }
}

struct ListerAdapter(Box<dyn Lister>);

impl FfiLister for ListerAdapter {
    fn next_page(&mut self, ctx: &CallCtx, max: u32) -> RResult<RVec<Entry>, PluginError> {
        guard(|| self.0.next_page(ctx, max.max(1) as usize).map(RVec::from))
    }
}

#[derive(Clone)]
struct HandleAdapter(Arc<dyn Handle>);

impl FfiHandle for HandleAdapter {
    fn len(&self) -> u64 {
        guard_or("Handle::len", 0, || self.0.len())
    }

    fn stat(&self) -> Stat {
        let fallback = Stat { kind: crate::EntryKind::FILE, size: 0, mtime_ns: ROption::RNone, etag: ROption::RNone };
        guard_or("Handle::stat", fallback, || self.0.stat())
    }

    fn read_at(&self, ctx: &CallCtx, offset: u64, buf: RSliceMut<'_, u8>) -> RResult<usize, PluginError> {
        let mut buf = buf;
        guard(|| self.0.read_at(ctx, offset, buf.as_mut_slice()))
    }

    fn local_path(&self) -> ROption<RString> {
        guard_or("Handle::local_path", ROption::RNone, || self.0.local_path().map(RString::from).into())
    }
}

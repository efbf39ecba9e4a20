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
/// empty, absolute, with an empty, `.` or `..` component, or with a NUL byte (checked on
/// the bytes a [`path_from_bytes`] string stands for). Every origin checks the paths it
/// is given with this, so they all refuse the same ones.
///
/// # Errors
/// [`INVALID_INPUT`](crate::ErrorKind::INVALID_INPUT) naming the path.
pub fn check_path(path: &str) -> PluginResult<()> {
    let b = path_bytes(path);
    let bad = b.is_empty()
        || b.starts_with(b"/")
        || b.contains(&0)
        || b.split(|&c| c == b'/').any(|c| c.is_empty() || c == b"." || c == b"..");
    if bad {
        return Err(PluginError::invalid_input(format!(
            "path {path:?} is not a plain relative path inside the origin"
        )));
    }
    Ok(())
}

// (Since 2.1. Plain functions over the path strings that cross the boundary, not part
// of the ABI's layout: no fence.)
/// The first character of a path string that stands for bytes which are not UTF-8 (a
/// file name from an old Latin-1 system, say): see [`path_from_bytes`]. U+FFFF is a
/// noncharacter, never part of a real name's first character in practice; a UTF-8 path
/// that does start with it is escaped too, so the encoding is exact both ways.
pub const BYTES_MARKER: char = '\u{FFFF}';

/// The path string for the raw bytes of an origin path (Unix file names are bytes, not
/// text). Valid UTF-8 is itself; anything else is [`BYTES_MARKER`] followed by the bytes
/// with every invalid byte, and every `%`, written `%XX`. [`path_bytes`] reverses it;
/// the host shows such a path with [`display_path`] (lossy, deterministic).
pub fn path_from_bytes(bytes: &[u8]) -> String {
    match std::str::from_utf8(bytes) {
        Ok(s) if !s.starts_with(BYTES_MARKER) => s.to_owned(),
        _ => {
            let mut out = String::from(BYTES_MARKER);
            let push = |out: &mut String, s: &str| {
                for c in s.chars() {
                    if c == '%' {
                        out.push_str("%25");
                    } else {
                        out.push(c);
                    }
                }
            };
            let mut rest = bytes;
            loop {
                match std::str::from_utf8(rest) {
                    Ok(s) => {
                        push(&mut out, s);
                        break;
                    }
                    Err(e) => {
                        let (good, bad) = rest.split_at(e.valid_up_to());
                        push(&mut out, std::str::from_utf8(good).unwrap_or_default());
                        let n = e.error_len().unwrap_or(bad.len()).max(1);
                        for b in &bad[..n] {
                            out.push_str(&format!("%{b:02X}"));
                        }
                        rest = &bad[n..];
                    }
                }
            }
            out
        }
    }
}

/// The bytes a path string stands for (see [`path_from_bytes`]).
pub fn path_bytes(path: &str) -> std::borrow::Cow<'_, [u8]> {
    let Some(rest) = path.strip_prefix(BYTES_MARKER) else { return std::borrow::Cow::Borrowed(path.as_bytes()) };
    let b = rest.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        match (b[i], b.get(i + 1).copied().and_then(hex), b.get(i + 2).copied().and_then(hex)) {
            (b'%', Some(h), Some(l)) => {
                out.push((h * 16 + l) as u8);
                i += 3;
            }
            (c, _, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    std::borrow::Cow::Owned(out)
}

/// A path string as valid UTF-8 text for names and messages: itself, or for one that
/// stands for non-UTF-8 bytes those bytes decoded lossily (U+FFFD for each invalid
/// sequence; the same bytes always give the same text).
pub fn display_path(path: &str) -> std::borrow::Cow<'_, str> {
    if path.starts_with(BYTES_MARKER) {
        std::borrow::Cow::Owned(String::from_utf8_lossy(&path_bytes(path)).into_owned())
    } else {
        std::borrow::Cow::Borrowed(path)
    }
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

#[cfg(test)]
mod path_tests {
    use super::*;

    #[test]
    fn byte_paths_round_trip_exactly_and_display_lossily() {
        for bytes in [
            &b"plain/ascii.flac"[..],
            "ünïcödé/曲.flac".as_bytes(),
            b"Caf\xe9/01 \xc9t\xe9.mp3",
            b"100%/50% \xff.ogg",
            "\u{FFFF}starts with the marker".as_bytes(),
            b"\xf0\x9f\x8e",
        ] {
            let s = path_from_bytes(bytes);
            assert_eq!(&*path_bytes(&s), bytes, "{s:?}");
            assert_eq!(std::str::from_utf8(bytes).is_ok() && !s.starts_with(BYTES_MARKER), s.as_bytes() == bytes);
        }
        let s = path_from_bytes(b"Caf\xe9/x.flac");
        assert_eq!(s, "\u{FFFF}Caf%E9/x.flac");
        assert_eq!(display_path(&s), "Caf\u{FFFD}/x.flac");
        check_path(&s).unwrap();
        // Escapes cannot smuggle a `..`, a `/` or a NUL past the check.
        for evil in ["\u{FFFF}%2E%2E/x", "\u{FFFF}a%2F..%2Fb", "\u{FFFF}a%00b", "\u{FFFF}%2Fetc"] {
            assert!(check_path(evil).is_err(), "{evil:?}");
        }
    }
}

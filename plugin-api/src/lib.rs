//! # musefs plugin API
//!
//! The stable boundary between the `musefs` host and its plugins. A plugin is a
//! `cdylib` that exports one *root module* ([`PluginMod`]) through
//! [`export_plugin!`]; the host loads it at run time with `abi_stable` (which checks
//! the ABI generation and the layout of every type reachable from the root module
//! before any call is made).
//!
//! ## Two kinds of plugin
//!
//! - An **origin** ([`Origin`]) is where original files live: it lists objects, stats
//!   them and opens them for random-access reads (`read_at` into the caller's buffer).
//!   Every call takes a [`CallCtx`] with a timeout and a cancel flag.
//! - A **format** ([`Format`]) understands one audio container: it *probes* a file's
//!   first bytes, *reads* its tags, pictures, audio properties and the exact byte range
//!   of the audio, and *plans* how a file is served: a list of [`Segment`]s, each either
//!   literal bytes or a range of the original. The host computes the plan once per open;
//!   the hot read path only splices segments and calls the origin.
//!
//! ## Writing a plugin
//!
//! Implement the plain Rust traits ([`Origin`] + [`Lister`] + [`Handle`], or
//! [`Format`]) and export a factory with [`export_plugin!`]. The factory receives the
//! plugin's configuration as a JSON string (for an origin: its `[[origin]]` table from
//! the manifest). Adapters turn the Rust traits into the FFI-safe `sabi_trait` objects
//! ([`FfiOrigin`], [`FfiFormat`], ...) and catch panics at every entry point, returning
//! them as [`ErrorKind::PANIC`] errors: a panic must never cross the boundary (it would
//! abort the whole mount). A plugin that needs an async runtime builds its own in its
//! factory; it never shares the host's.
//!
//! ## Error policy
//!
//! Every fallible call returns a [`PluginError`]: a stable [`ErrorKind`], whether a retry
//! may help (`retryable`), and an actionable message naming the path or key concerned.
//! Messages never contain credentials. The host maps kinds to its own errors and to
//! `errno` values at the FUSE edge (`NOT_FOUND` to `ENOENT`, everything else on a read
//! path to `EIO`), and never serves bytes after an error.
//!
//! ## Evolving the ABI
//!
//! - The root module and every `sabi_trait` vtable are *prefix types*: new functions and
//!   methods are appended after the field marked `#[sabi(last_prefix_field)]`; a host
//!   calling a method an older plugin lacks gets `None` / a default and falls back.
//! - Plain data structs ([`TrackInfo`], [`Tag`], ...) never change. New data travels
//!   through new methods with new structs, or through the `extra` key/value lists.
//! - Enumerations are integers with associated constants ([`ErrorKind`],
//!   [`SegmentKind`], ...), so new values never break old code.
//! - A breaking change bumps [`ABI_VERSION`]; the host then refuses old plugins by name.

#![deny(missing_docs)]

pub mod error;
pub mod format;
mod guard;
pub mod origin;
pub mod root;
pub mod types;

pub use abi_stable;

pub use error::{ErrorKind, PluginError, PluginResult};
pub use format::{format_into_ffi, FfiFormat, Format, FormatBox, Source, SourceReader, PROBE_HEAD_LEN};
pub use guard::{guard, guard_or};
pub use origin::{
    check_path, handle_into_ffi, origin_into_ffi, FfiHandle, FfiLister, FfiOrigin, Handle, HandleBox, Lister,
    ListerBox, Origin, OriginBox,
};
pub use root::{PluginMod, PluginModRef, ABI_VERSION, ABI_VERSION_STRING};
pub use types::{
    AudioProps, CallCtx, Entry, EntryKind, KeyValue, ListRequest, OriginCaps, Picture, Plan, PlanMode, PlanRequest,
    PluginInfo, PluginKinds, Region, Segment, SegmentKind, Stat, Tag, TrackInfo,
};

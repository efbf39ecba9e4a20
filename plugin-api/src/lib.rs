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
//! The version is [`ABI_VERSION`].[`ABI_MINOR`] (now 2.2). A plugin of any minor of the
//! same generation loads; what an older plugin lacks is reported as unsupported.
//!
//! - The root module and every `sabi_trait` vtable are *prefix types*: new functions and
//!   methods are appended after the field marked `#[sabi(last_prefix_field)]`, which
//!   never moves within a generation. A root-module field an older plugin lacks reads as
//!   `None` on the host side.
//! - **A `sabi_trait` method appended later must have a default body.** A method
//!   appended without a default panics in an older plugin's host (abi_stable calls the
//!   trait's default for a method missing from an older vtable, and panics when there is
//!   none). The default says what an old plugin means: usually
//!   [`UNSUPPORTED`](ErrorKind::UNSUPPORTED). A unit test
//!   (`appended_methods_have_default_bodies`) enforces this rule.
//! - Every addition is fenced in the source by `// abi-since X.Y {` ... `// abi-since X.Y }`
//!   lines (or trailing `// abi-X.Y: replacement` markers, one per older minor): the
//!   end-to-end tests `a_plugin_built_for_abi_2_0_loads_and_serves` and `..._2_1_...`
//!   strip the later fences from a copy of this crate, build a plugin against that copy
//!   and load it in the current host.
//! - Plain data structs ([`TrackInfo`], [`Tag`], ...) never change. New data travels
//!   through new methods with new structs, or through the `extra` key/value lists.
//! - Enumerations and flag sets are integers with associated constants ([`ErrorKind`],
//!   [`SegmentKind`], [`OriginCaps`], [`PluginKinds`], ...), so new values never break
//!   old code; unknown bits and values are ignored or treated as the generic case.
//! - A breaking change bumps [`ABI_VERSION`]; the host then refuses old plugins by name.
//!
//! ## Hidden contracts, written down
//!
//! - An origin's factory receives its `[[origin]]` table as JSON *with* `name` and
//!   `kind` added by the host.
//! - A format's factory always receives `{}`; its `[format.NAME]` options arrive in
//!   every [`PlanRequest::options`] and are checked once by [`Format::check_options`]
//!   when the manifest is loaded.
//! - A panic is caught at every entry point; in calls that cannot fail (`len`, `stat`,
//!   `caps`, `probe`, `extensions`, `local_path`) it yields a default *and is logged*
//!   through the host's logger, naming the call.
//!
//! ## Testing a plugin
//!
//! The `testing` feature brings in-memory fakes ([`testing::MemOrigin`],
//! [`testing::MemHandle`], [`testing::ScriptedFormat`]) for plugin authors' tests and
//! the host's.

#![deny(missing_docs)]

#[doc(hidden)]
pub mod compat; // abi-2.0:
pub mod error;
pub mod format;
mod guard;
pub mod host; // abi-2.0:
pub mod origin;
pub mod retry;
pub mod root;
#[cfg(feature = "testing")]
pub mod testing;
pub mod types;

pub use abi_stable;

pub use error::{ErrorKind, PluginError, PluginResult};
pub use format::{format_into_ffi, FfiFormat, Format, FormatBox, Source, SourceReader, PROBE_HEAD_LEN};
// abi-since 2.2 {
pub use format::same_audio_bytes;
// abi-since 2.2 }
pub use guard::{guard, guard_or};
pub use host::{host_into_ffi, FfiHost, Host, HostBox, LogLevel}; // abi-2.0:
pub use origin::{
    check_path, display_path, handle_into_ffi, origin_into_ffi, path_bytes, path_from_bytes, FfiHandle, FfiLister,
    FfiOrigin, Handle, HandleBox, Lister, ListerBox, Origin, OriginBox, BYTES_MARKER,
};
pub use root::{PluginMod, PluginModRef, ABI_MINOR, ABI_VERSION, ABI_VERSION_STRING};
pub use types::{
    AudioProps, CallCtx, Entry, EntryKind, KeyValue, ListRequest, OriginCaps, Picture, Plan, PlanMode, PlanRequest,
    PluginInfo, PluginKinds, Region, Segment, SegmentKind, Stat, Tag, TrackInfo,
};

//! Services the host offers its plugins (since ABI 2.1): for now a logger, so a plugin's
//! retries, skipped directories and symlink loops reach the host's log (`tracing`, with
//! the plugin's name added by the host) instead of a stray `eprintln!`.
//!
//! The host hands a plugin its [`HostBox`] once, right after loading it, through the
//! root module's `set_host` (see [`PluginMod`](crate::PluginMod)); a plugin logs with
//! [`error`], [`warn`], [`info`], [`debug`] from anywhere. Without a host (a host built
//! for ABI 2.0, or a plugin's own unit tests) messages go to stderr.
//!
//! [`FfiHost`] is a `sabi_trait` like the others: services added later are methods
//! appended after `log` *with a default body* (see the crate docs, "Evolving the ABI").
#![allow(unsafe_code, reason = "FFI: `#[sabi_trait]` expands to the unsafe vtable glue of the plugin boundary")]

use std::sync::OnceLock;

use abi_stable::{
    sabi_trait,
    sabi_trait::prelude::TD_Opaque,
    std_types::{RBox, RStr},
    StableAbi,
};

/// How important a log message is.
#[repr(transparent)]
#[derive(StableAbi, Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct LogLevel(pub u32);

impl LogLevel {
    /// Something failed.
    pub const ERROR: Self = Self(1);
    /// Something is wrong but work goes on (a skipped directory, a retry).
    pub const WARN: Self = Self(2);
    /// Worth knowing in normal operation.
    pub const INFO: Self = Self(3);
    /// Detail for diagnosing.
    pub const DEBUG: Self = Self(4);
    /// Even more detail.
    pub const TRACE: Self = Self(5);

    /// A lower-case name (`warn`); unknown levels are `info`.
    pub fn name(self) -> &'static str {
        match self {
            Self::ERROR => "error",
            Self::WARN => "warn",
            Self::DEBUG => "debug",
            Self::TRACE => "trace",
            _ => "info",
        }
    }
}

/// The FFI-safe host services a plugin calls (see [`Host`]).
#[sabi_trait]
pub trait FfiHost: Send + Sync {
    /// See [`Host::log`].
    #[sabi(last_prefix_field)]
    fn log(&self, level: LogLevel, message: RStr<'_>);
}

/// The host's services as they cross the boundary.
pub type HostBox = FfiHost_TO<'static, RBox<()>>;

/// What a host implements to serve its plugins (the host side of [`FfiHost`]).
pub trait Host: Send + Sync + 'static {
    /// Records `message` at `level` (the host knows which plugin it serves and adds its
    /// name).
    fn log(&self, level: LogLevel, message: &str);
}

struct HostAdapter<T>(T);

impl<T: Host> FfiHost for HostAdapter<T> {
    fn log(&self, level: LogLevel, message: RStr<'_>) {
        // A host's logger must not unwind into the plugin.
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.0.log(level, message.as_str())));
    }
}

/// Wraps a host's [`Host`] into its FFI form (one per plugin, knowing its name).
pub fn host_into_ffi<T: Host>(host: T) -> HostBox {
    FfiHost_TO::from_value(HostAdapter(host), TD_Opaque)
}

static HOST: OnceLock<HostBox> = OnceLock::new();

/// Keeps the host's services for this plugin (the first call wins). Called by the
/// code [`export_plugin!`](crate::export_plugin) generates.
pub fn install(host: HostBox) {
    let _ = HOST.set(host);
}

/// Whether the host has handed this plugin its services.
pub fn installed() -> bool {
    HOST.get().is_some()
}

/// Logs `message` at `level` through the host (stderr without one).
pub fn log(level: LogLevel, message: &str) {
    match HOST.get() {
        Some(h) => h.log(level, message.into()),
        None => eprintln!("musefs plugin {}: {message}", level.name()),
    }
}

/// Logs at [`LogLevel::ERROR`].
pub fn error(message: impl AsRef<str>) {
    log(LogLevel::ERROR, message.as_ref());
}

/// Logs at [`LogLevel::WARN`].
pub fn warn(message: impl AsRef<str>) {
    log(LogLevel::WARN, message.as_ref());
}

/// Logs at [`LogLevel::INFO`].
pub fn info(message: impl AsRef<str>) {
    log(LogLevel::INFO, message.as_ref());
}

/// Logs at [`LogLevel::DEBUG`].
pub fn debug(message: impl AsRef<str>) {
    log(LogLevel::DEBUG, message.as_ref());
}

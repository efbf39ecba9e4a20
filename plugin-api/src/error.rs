//! The one error type that crosses the plugin boundary.

use std::fmt;

use abi_stable::{std_types::RString, StableAbi};

/// What went wrong, as a stable number.
///
/// This is a struct wrapping an integer (not a Rust `enum`) so new kinds can be added
/// in later versions without breaking the ABI: an older host sees an unknown kind as
/// [`ErrorKind::OTHER`]-like and still has the message.
#[repr(transparent)]
#[derive(StableAbi, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ErrorKind(pub u32);

impl ErrorKind {
    /// Anything not covered by a more specific kind.
    pub const OTHER: Self = Self(0);
    /// The path or object does not exist.
    pub const NOT_FOUND: Self = Self(1);
    /// The origin refused access.
    pub const PERMISSION_DENIED: Self = Self(2);
    /// A configuration value or argument is invalid (the message names it).
    pub const INVALID_INPUT: Self = Self(3);
    /// The file's bytes are not what the format expects (corrupt, truncated, not audio).
    pub const INVALID_DATA: Self = Self(4);
    /// The operation is not provided by this plugin.
    pub const UNSUPPORTED: Self = Self(5);
    /// The call's timeout ran out.
    pub const TIMED_OUT: Self = Self(6);
    /// The call's cancel flag was raised.
    pub const CANCELLED: Self = Self(7);
    /// A local input/output error.
    pub const IO: Self = Self(8);
    /// The origin (server, network) cannot be reached.
    pub const UNAVAILABLE: Self = Self(9);
    /// The object changed since it was opened or scanned (size, mtime or ETag differ).
    pub const CHANGED: Self = Self(10);
    /// The plugin panicked; the panic was caught at the boundary.
    pub const PANIC: Self = Self(11);
    /// The data ended before the expected length.
    pub const UNEXPECTED_EOF: Self = Self(12);

    /// A short lower-case name for logs and messages.
    pub fn name(self) -> &'static str {
        match self {
            Self::NOT_FOUND => "not found",
            Self::PERMISSION_DENIED => "permission denied",
            Self::INVALID_INPUT => "invalid input",
            Self::INVALID_DATA => "invalid data",
            Self::UNSUPPORTED => "unsupported",
            Self::TIMED_OUT => "timed out",
            Self::CANCELLED => "cancelled",
            Self::IO => "i/o error",
            Self::UNAVAILABLE => "unavailable",
            Self::CHANGED => "changed",
            Self::PANIC => "plugin panicked",
            Self::UNEXPECTED_EOF => "unexpected end of data",
            _ => "error",
        }
    }
}

impl fmt::Debug for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ErrorKind({}: {})", self.0, self.name())
    }
}

/// An error returned by a plugin: a kind, whether retrying may help, and a message.
///
/// The message must be actionable and must never contain credentials.
#[repr(C)]
#[derive(StableAbi, Clone, PartialEq, Eq)]
pub struct PluginError {
    /// What went wrong.
    pub kind: ErrorKind,
    /// Whether the same call may succeed if tried again later (network blips, throttling).
    pub retryable: bool,
    /// A human-readable, actionable message.
    pub message: RString,
}

impl PluginError {
    /// A non-retryable error of `kind` with `message`.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self { kind, retryable: false, message: RString::from(message.into()) }
    }

    /// The same error, marked retryable.
    #[must_use]
    pub fn retryable(mut self) -> Self {
        self.retryable = true;
        self
    }

    /// Shorthand for [`ErrorKind::INVALID_DATA`].
    pub fn invalid_data(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::INVALID_DATA, message)
    }

    /// Shorthand for [`ErrorKind::INVALID_INPUT`].
    pub fn invalid_input(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::INVALID_INPUT, message)
    }

    /// Shorthand for [`ErrorKind::UNSUPPORTED`].
    pub fn unsupported(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::UNSUPPORTED, message)
    }

    /// Converts an I/O error, keeping its meaning and adding `context` (e.g. the path).
    pub fn from_io(err: &std::io::Error, context: &str) -> Self {
        use std::io::ErrorKind as K;
        let (kind, retryable) = match err.kind() {
            K::NotFound => (ErrorKind::NOT_FOUND, false),
            K::PermissionDenied => (ErrorKind::PERMISSION_DENIED, false),
            K::UnexpectedEof => (ErrorKind::UNEXPECTED_EOF, false),
            K::TimedOut => (ErrorKind::TIMED_OUT, true),
            K::Interrupted | K::WouldBlock => (ErrorKind::IO, true),
            K::InvalidData => (ErrorKind::INVALID_DATA, false),
            K::InvalidInput => (ErrorKind::INVALID_INPUT, false),
            _ => (ErrorKind::IO, false),
        };
        let message = if context.is_empty() { err.to_string() } else { format!("{context}: {err}") };
        Self { kind, retryable, message: message.into() }
    }
}

impl fmt::Display for PluginError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({}", self.message, self.kind.name())?;
        if self.retryable {
            f.write_str(", retryable")?;
        }
        f.write_str(")")
    }
}

impl fmt::Debug for PluginError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PluginError")
            .field("kind", &self.kind)
            .field("retryable", &self.retryable)
            .field("message", &self.message.as_str())
            .finish()
    }
}

impl std::error::Error for PluginError {}

/// The result type of every plugin call on the Rust side.
pub type PluginResult<T> = Result<T, PluginError>;

//! The systemd notify protocol (`Type=notify` units): one datagram per state change on
//! the socket `$NOTIFY_SOCKET` names (a path, or `@name` in the abstract namespace).
//! Without the variable every call is a no-op, so musefs behaves the same outside
//! systemd.

use std::os::unix::net::UnixDatagram;
use std::time::Duration;

/// A connection to the service manager, if musefs runs under one.
pub struct Notifier {
    sock: Option<(UnixDatagram, String)>,
    /// Half of `$WATCHDOG_USEC`, when the unit sets `WatchdogSec`.
    pub watchdog: Option<Duration>,
}

impl Notifier {
    /// From the environment (`NOTIFY_SOCKET`, `WATCHDOG_USEC`, `WATCHDOG_PID`).
    pub fn from_env() -> Self {
        let sock = std::env::var("NOTIFY_SOCKET").ok().filter(|s| !s.is_empty()).and_then(|path| {
            let s = UnixDatagram::unbound().ok()?;
            Some((s, path))
        });
        let for_us = std::env::var("WATCHDOG_PID")
            .ok()
            .and_then(|p| p.parse::<u32>().ok())
            .is_none_or(|p| p == std::process::id());
        let watchdog = std::env::var("WATCHDOG_USEC")
            .ok()
            .and_then(|u| u.parse::<u64>().ok())
            .filter(|&u| u > 0 && for_us)
            .map(|u| Duration::from_micros(u / 2));
        Self { sock, watchdog }
    }

    /// Sends `state` (`READY=1`, `STATUS=...`, ...); failures are logged once at debug
    /// level (the manager may be gone while stopping).
    pub fn notify(&self, state: &str) {
        let Some((sock, path)) = &self.sock else { return };
        let res = match path.strip_prefix('@') {
            Some(name) => {
                use std::os::linux::net::SocketAddrExt;
                std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())
                    .and_then(|addr| sock.send_to_addr(state.as_bytes(), &addr))
            }
            None => sock.send_to(state.as_bytes(), path),
        };
        if let Err(e) = res {
            tracing::debug!("sd_notify {state:?} to {path}: {e}");
        }
    }
}

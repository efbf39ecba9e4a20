//! Waking a running mount when the catalog changed: every catalog write that logs a
//! change (a `musefs tag` edit, a scan batch, a save through the mount) sends one
//! datagram to `state_dir/wake.sock`, where the mount listens; the mount then applies
//! the change log at once instead of at its next poll (which stays, as a fallback, for
//! a writer that cannot reach the socket).
//!
//! Best effort by design: no mount listening (nothing bound, or a stale socket file)
//! is not an error, and a writer never waits for the mount.

use std::io;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The socket's file name in the state directory.
pub const SOCKET: &str = "wake.sock";

/// Tells whoever listens at `socket` that the catalog changed (errors ignored: nobody
/// listening is the normal case when no mount runs).
pub fn notify(socket: &Path) {
    if let Ok(s) = UnixDatagram::unbound() {
        let _ = s.set_nonblocking(true);
        let _ = s.send_to(b"changed", socket);
    }
}

/// The mount's end: a bound datagram socket, removed when dropped.
pub struct Listener {
    sock: UnixDatagram,
    path: PathBuf,
}

impl Listener {
    /// Binds `path` (a stale socket file left by a killed mount is replaced: the state
    /// directory's owner lock says no other mount uses it).
    ///
    /// # Errors
    /// Binding (a path longer than a socket address holds, about 107 bytes).
    pub fn bind(path: &Path) -> io::Result<Self> {
        let _ = std::fs::remove_file(path);
        let sock = UnixDatagram::bind(path)?;
        Ok(Self { sock, path: path.to_owned() })
    }

    /// Waits up to `timeout` for a notification; `true` if one (or several: all are
    /// taken) arrived.
    pub fn wait(&self, timeout: Duration) -> bool {
        let mut buf = [0u8; 16];
        let _ = self.sock.set_nonblocking(false);
        let _ = self.sock.set_read_timeout(Some(timeout.max(Duration::from_millis(1))));
        if self.sock.recv(&mut buf).is_err() {
            return false;
        }
        // Drain what else queued up: one refresh covers them all.
        let _ = self.sock.set_nonblocking(true);
        while self.sock.recv(&mut buf).is_ok() {}
        true
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_notification_wakes_the_listener_and_nobody_listening_is_fine() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join(SOCKET);
        notify(&p); // nothing bound: ignored
        let l = Listener::bind(&p).unwrap();
        assert!(!l.wait(Duration::from_millis(20)), "no notification yet");
        for _ in 0..3 {
            notify(&p);
        }
        assert!(l.wait(Duration::from_secs(5)));
        assert!(!l.wait(Duration::from_millis(20)), "the three were taken as one");
        drop(l);
        assert!(!p.exists(), "the socket file goes with the listener");
        // A stale socket file (a killed mount) is replaced.
        std::fs::write(&p, b"").unwrap();
        let l = Listener::bind(&p).unwrap();
        notify(&p);
        assert!(l.wait(Duration::from_secs(5)));
    }
}

//! Ownership of a state directory: one owner process (a mount or a scan) at a time,
//! any number of attached readers, and recovery after a crash.
//!
//! Two things together decide who owns `state_dir`:
//! - an OS lock: the owner holds `flock(LOCK_EX)` on `state_dir/owner` for its whole
//!   life. The kernel drops it when the process dies, however it dies (`kill -9`
//!   included), so "the lock is free" means "no live owner";
//! - the owner file itself, a small fixed-size record ([`OwnerRecord`]): magic, format
//!   version, owner pid, generation, reader count, state (active / released), heartbeat,
//!   the mountpoint, and a checksum. It says *who* holds the lock (for the error a second
//!   process shows), and whether the last owner released cleanly.
//!
//! Taking ownership: if the lock is held, [`StateDir::own`] fails naming the owner's pid.
//! If it is free and the record says `active`, the previous owner died: the new owner
//! bumps the generation, cleans up what the crash left (temporary chunk files, a stale
//! FUSE mount of the dead process) and logs that it recovered. A record that is not
//! valid (wrong size, magic or checksum) is never trusted: it is rebuilt, and the
//! directory is treated as after a crash.
//!
//! Readers (`ls`, `tag`, `cache stats`, `status`, ...) attach with a shared lock on
//! `state_dir/readers.lock` and count themselves in the record; they never block and are
//! never blocked by the owner. When no reader holds the shared lock, a stale count (left
//! by a reader killed with -9) is reset.

use std::fs::{File, OpenOptions};
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// The owner file's magic bytes.
pub const MAGIC: [u8; 8] = *b"MUSEFSOW";
/// The owner file's format version.
pub const FORMAT_VERSION: u32 = 1;
/// The owner file's size in bytes.
pub const RECORD_LEN: usize = 64 + MOUNTPOINT_LEN;
const MOUNTPOINT_LEN: usize = 448;
/// How often the owner refreshes its heartbeat.
pub const HEARTBEAT: Duration = Duration::from_secs(2);

/// An error taking or attaching to a state directory.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// Another live process owns it.
    #[error(
        "state_dir {dir} is in use by another musefs process (pid {pid}{what}); stop it first, \
         or point this manifest's `state_dir` elsewhere (a running mount syncs by itself; \
         `musefs sync` asks it to sync now)"
    )]
    Owned {
        /// The state directory.
        dir: PathBuf,
        /// The owner's pid (`?` if its record is unreadable).
        pid: String,
        /// What the owner does (its mountpoint), if known.
        what: String,
    },
    /// An I/O error on the owner files.
    #[error("state_dir {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
}

/// The owner record's state field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OwnerState {
    /// Released cleanly (or never owned).
    Released = 0,
    /// Owned (if the lock is free, the owner died).
    Active = 1,
}

/// The fixed-size record in `state_dir/owner`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnerRecord {
    /// The owner's pid (0 when released).
    pub pid: u32,
    /// Bumped by every new owner.
    pub generation: u64,
    /// Attached readers (best effort; reset when none holds the readers lock).
    pub readers: u32,
    /// Active or released.
    pub state: OwnerState,
    /// When the owner last showed it was alive (milliseconds since the epoch).
    pub heartbeat_ms: u64,
    /// The owner's mountpoint (empty for a scan).
    pub mountpoint: String,
}

impl Default for OwnerRecord {
    fn default() -> Self {
        Self {
            pid: 0,
            generation: 0,
            readers: 0,
            state: OwnerState::Released,
            heartbeat_ms: 0,
            mountpoint: String::new(),
        }
    }
}

fn now_ms() -> u64 {
    crate::util::now_ms().max(0) as u64
}

impl OwnerRecord {
    /// Encodes the record (fixed size, checksummed).
    pub fn encode(&self) -> [u8; RECORD_LEN] {
        let mut b = [0u8; RECORD_LEN];
        b[0..8].copy_from_slice(&MAGIC);
        b[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
        b[12..16].copy_from_slice(&self.pid.to_le_bytes());
        b[16..24].copy_from_slice(&self.generation.to_le_bytes());
        b[24..28].copy_from_slice(&self.readers.to_le_bytes());
        b[28..32].copy_from_slice(&(self.state as u32).to_le_bytes());
        b[32..40].copy_from_slice(&self.heartbeat_ms.to_le_bytes());
        // A mountpoint that does not fit is not recorded at all: a truncated one would
        // name another directory (which the next owner might unmount as stale).
        let mp = self.mountpoint.as_bytes();
        let n = if mp.len() <= MOUNTPOINT_LEN { mp.len() } else { 0 };
        b[40..42].copy_from_slice(&(n as u16).to_le_bytes());
        b[64..64 + n].copy_from_slice(&mp[..n]);
        let sum = checksum(&b);
        b[56..64].copy_from_slice(&sum);
        b
    }

    /// Decodes a record; `None` if it is not a valid one (size, magic, version, checksum).
    pub fn decode(b: &[u8]) -> Option<Self> {
        if b.len() != RECORD_LEN || b[0..8] != MAGIC || u32::from_le_bytes(b[8..12].try_into().ok()?) != FORMAT_VERSION
        {
            return None;
        }
        if checksum(b) != b[56..64] {
            return None;
        }
        let u32_at = |i: usize| u32::from_le_bytes(b[i..i + 4].try_into().expect("4 bytes"));
        let u64_at = |i: usize| u64::from_le_bytes(b[i..i + 8].try_into().expect("8 bytes"));
        let state = match u32_at(28) {
            0 => OwnerState::Released,
            1 => OwnerState::Active,
            _ => return None,
        };
        let n = usize::from(u16::from_le_bytes([b[40], b[41]]));
        if n > MOUNTPOINT_LEN {
            return None;
        }
        Some(Self {
            pid: u32_at(12),
            generation: u64_at(16),
            readers: u32_at(24),
            state,
            heartbeat_ms: u64_at(32),
            // Not UTF-8 (only a forged record): unknown, rather than a lossy other path.
            mountpoint: String::from_utf8(b[64..64 + n].to_vec()).unwrap_or_default(),
        })
    }
}

/// Writes the checksum a record of `RECORD_LEN` bytes needs (for the fuzz target: the
/// fields past the checksum get fuzzed, not rejected at it).
#[doc(hidden)]
pub fn seal(b: &mut [u8]) {
    if b.len() == RECORD_LEN {
        let sum = checksum(b);
        b[56..64].copy_from_slice(&sum);
    }
}

/// BLAKE3 of the record with its checksum field zeroed, truncated to 8 bytes.
fn checksum(b: &[u8]) -> [u8; 8] {
    let mut h = blake3::Hasher::new();
    h.update(&b[..56]);
    h.update(&[0u8; 8]);
    h.update(&b[64..]);
    h.finalize().as_bytes()[..8].try_into().expect("8 bytes")
}

pub use crate::sys::pid_alive;
use crate::sys::{flock, try_flock};

/// The paths of a state directory's owner files.
#[derive(Debug, Clone)]
pub struct StateDir {
    dir: PathBuf,
}

/// What taking ownership found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Takeover {
    /// The directory was new, or released cleanly.
    Clean,
    /// The previous owner (this pid) died without releasing.
    Crashed {
        /// The dead owner's pid.
        pid: u32,
        /// Its mountpoint, if it had one.
        mountpoint: String,
    },
    /// The owner file was not a valid record (rebuilt).
    Corrupt,
}

impl StateDir {
    /// The owner files of `dir` (created on use).
    pub fn new(dir: &Path) -> Self {
        Self { dir: dir.to_owned() }
    }

    /// The owner file.
    pub fn owner_path(&self) -> PathBuf {
        self.dir.join("owner")
    }

    fn open(&self, name: &str) -> Result<File, StateError> {
        let path = self.dir.join(name);
        std::fs::create_dir_all(&self.dir).map_err(|source| StateError::Io { path: self.dir.clone(), source })?;
        OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|source| StateError::Io { path, source })
    }

    /// Reads the owner record: `Ok(None)` if the file is missing or not a valid record.
    ///
    /// # Errors
    /// I/O errors other than absence.
    pub fn read_record(&self) -> Result<Option<OwnerRecord>, StateError> {
        let _guard = self.rmw_lock(libc::LOCK_SH)?;
        self.read_unlocked()
    }

    fn read_unlocked(&self) -> Result<Option<OwnerRecord>, StateError> {
        let path = self.owner_path();
        let mut b = Vec::new();
        match File::open(&path) {
            Ok(mut f) => f.read_to_end(&mut b).map_err(|source| StateError::Io { path, source })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(StateError::Io { path, source }),
        };
        Ok(OwnerRecord::decode(&b))
    }

    /// The short lock every read-modify-write of the record holds (`op`: shared or
    /// exclusive); released when the returned file closes.
    fn rmw_lock(&self, op: libc::c_int) -> Result<File, StateError> {
        let guard = self.open("owner.rmw")?;
        // Released when `guard` closes.
        flock(&guard, op).map_err(|source| StateError::Io { path: self.dir.join("owner.rmw"), source })?;
        Ok(guard)
    }

    /// Replaces the record with `f(current)` (if `Some`), under the exclusive short lock.
    fn rmw(&self, f: impl FnOnce(Option<OwnerRecord>) -> Option<OwnerRecord>) -> Result<(), StateError> {
        let _guard = self.rmw_lock(libc::LOCK_EX)?;
        let Some(rec) = f(self.read_unlocked()?) else { return Ok(()) };
        let path = self.owner_path();
        let io = |source| StateError::Io { path: path.clone(), source };
        let file = OpenOptions::new().write(true).create(true).truncate(false).open(&path).map_err(io)?;
        file.write_all_at(&rec.encode(), 0).map_err(io)?;
        file.set_len(RECORD_LEN as u64).map_err(io)?;
        file.sync_data().map_err(io)?;
        Ok(())
    }

    /// Takes ownership for this process (`mountpoint`: what it serves, if anything).
    ///
    /// # Errors
    /// [`StateError::Owned`] naming the live owner's pid; I/O errors.
    pub fn own(&self, mountpoint: Option<&Path>) -> Result<(Owner, Takeover), StateError> {
        let path = self.owner_path();
        let io = |source| StateError::Io { path: path.clone(), source };
        let mut file = self.open("owner")?;
        if !try_flock(&file, libc::LOCK_EX).map_err(io)? {
            let rec = self.read_record()?;
            return Err(StateError::Owned {
                dir: self.dir.clone(),
                pid: rec.as_ref().map_or_else(|| "?".to_owned(), |r| r.pid.to_string()),
                what: rec
                    .filter(|r| !r.mountpoint.is_empty())
                    .map(|r| format!(", mounted at {}", r.mountpoint))
                    .unwrap_or_default(),
            });
        }
        let b = {
            let _guard = self.rmw_lock(libc::LOCK_SH)?;
            let mut b = Vec::new();
            file.read_to_end(&mut b).map_err(io)?;
            b
        };
        let (previous, takeover) = match OwnerRecord::decode(&b) {
            Some(r) if r.state == OwnerState::Active => {
                let t = Takeover::Crashed { pid: r.pid, mountpoint: r.mountpoint.clone() };
                (r, t)
            }
            Some(r) => (r, Takeover::Clean),
            None if b.is_empty() => (OwnerRecord::default(), Takeover::Clean),
            None => (OwnerRecord::default(), Takeover::Corrupt),
        };
        let rec = OwnerRecord {
            pid: std::process::id(),
            generation: previous.generation + 1,
            readers: previous.readers,
            state: OwnerState::Active,
            heartbeat_ms: now_ms(),
            mountpoint: mountpoint.map(|m| m.display().to_string()).unwrap_or_default(),
        };
        let owner = Owner {
            dirs: self.clone(),
            _file: Some(file),
            record: rec,
            stop: Arc::new(AtomicBool::new(false)),
            released: false,
        };
        owner.write(&owner.record)?;
        match &takeover {
            Takeover::Clean => {}
            Takeover::Crashed { pid, mountpoint } => {
                tracing::warn!(
                    "state_dir {}: the previous owner (pid {pid}) did not shut down cleanly; recovering (generation {})",
                    self.dir.display(),
                    owner.record.generation
                );
                if !mountpoint.is_empty() {
                    clean_stale_mount(Path::new(mountpoint));
                }
            }
            Takeover::Corrupt => tracing::warn!(
                "state_dir {}: the owner file was not valid; rebuilt it and recovering as after a crash",
                self.dir.display()
            ),
        }
        Ok((owner, takeover))
    }

    /// Attaches as a reader (never blocks, never fails because of an owner).
    ///
    /// # Errors
    /// I/O errors on the owner files.
    pub fn attach(&self) -> Result<Reader, StateError> {
        let lock = self.open("readers.lock")?;
        let path = self.dir.join("readers.lock");
        let io = |source| StateError::Io { path: path.clone(), source };
        // No reader alive: a leftover count (a reader killed with -9) is reset.
        if try_flock(&lock, libc::LOCK_EX).map_err(io)? {
            self.update_readers(|_| 0)?;
        }
        // Downgrade (or take) the shared lock: held for the reader's life.
        flock(&lock, libc::LOCK_SH).map_err(io)?;
        self.update_readers(|n| n.saturating_add(1))?;
        Ok(Reader { dirs: self.clone(), _lock: lock })
    }

    /// Read-modify-write of the reader count.
    fn update_readers(&self, f: impl Fn(u32) -> u32) -> Result<(), StateError> {
        self.rmw(|cur| {
            cur.map(|mut r| {
                r.readers = f(r.readers);
                r
            })
        })
    }
}

/// Unmounts a FUSE mount left by a dead owner, if it is still there.
fn clean_stale_mount(mountpoint: &Path) {
    let Ok(mounts) = std::fs::read_to_string("/proc/self/mounts") else { return };
    let escaped = mountpoint.display().to_string().replace(' ', "\\040");
    let stale = mounts.lines().any(|l| {
        let mut f = l.split(' ');
        let (src, at, fstype) = (f.next(), f.next(), f.next());
        at == Some(escaped.as_str()) && src == Some("musefs") && fstype.is_some_and(|t| t.starts_with("fuse"))
    });
    if !stale {
        return;
    }
    let ok = std::process::Command::new("fusermount3")
        .args(["-u", "-z"])
        .arg(mountpoint)
        .status()
        .is_ok_and(|s| s.success());
    if ok {
        tracing::warn!("unmounted {} (left mounted by the dead owner)", mountpoint.display());
    } else {
        tracing::warn!(
            "{} is still mounted by the dead owner: run `fusermount3 -u -z {}`",
            mountpoint.display(),
            mountpoint.display()
        );
    }
}

/// Ownership of a state directory, held until [`release`](Owner::release) or drop
/// (a process that dies without either leaves an `active` record and a free lock:
/// the next owner recovers).
pub struct Owner {
    dirs: StateDir,
    /// Holds the exclusive lock.
    _file: Option<File>,
    record: OwnerRecord,
    stop: Arc<AtomicBool>,
    released: bool,
}

impl Owner {
    /// This owner's generation.
    pub fn generation(&self) -> u64 {
        self.record.generation
    }

    /// Writes `rec`, keeping the reader count the readers maintain.
    fn write(&self, rec: &OwnerRecord) -> Result<(), StateError> {
        self.dirs.rmw(|cur| Some(OwnerRecord { readers: cur.map_or(0, |c| c.readers), ..rec.clone() }))
    }

    /// Starts the heartbeat thread (refreshes the record every [`HEARTBEAT`]).
    pub fn start_heartbeat(&self) {
        let (stop, dirs, pid) = (self.stop.clone(), self.dirs.clone(), self.record.pid);
        let _ = std::thread::Builder::new().name("musefs-heartbeat".into()).spawn(move || {
            let mut last = now_ms();
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(200));
                if last + HEARTBEAT.as_millis() as u64 > now_ms() {
                    continue;
                }
                last = now_ms();
                let _ = dirs.rmw(|cur| {
                    let mut r =
                        cur.filter(|r| r.pid == pid && r.state == OwnerState::Active && !stop.load(Ordering::Relaxed))?;
                    r.heartbeat_ms = last;
                    Some(r)
                });
            }
        });
    }

    /// Releases ownership cleanly: the record says `released`, then the lock is dropped.
    /// (Dropping an `Owner` does the same; only a process that dies without running
    /// destructors, `kill -9` or a power cut, leaves an `active` record behind.)
    ///
    /// # Errors
    /// I/O errors writing the record (the lock is released anyway).
    pub fn release(mut self) -> Result<(), StateError> {
        self.released = true;
        self.stop.store(true, Ordering::Relaxed);
        let rec = OwnerRecord { pid: 0, state: OwnerState::Released, heartbeat_ms: now_ms(), ..self.record.clone() };
        self.write(&rec)
        // The lock goes with the file when `self` drops.
    }
}

impl Drop for Owner {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if !self.released {
            let rec =
                OwnerRecord { pid: 0, state: OwnerState::Released, heartbeat_ms: now_ms(), ..self.record.clone() };
            let _ = self.write(&rec);
        }
    }
}

/// Drops an owner's lock without releasing its record, as if its process died (tests).
#[doc(hidden)]
pub fn simulate_crash(mut owner: Owner) {
    owner.released = true;
    owner.stop.store(true, Ordering::Relaxed);
    drop(owner._file.take());
}

/// An attached reader; detaches on drop.
pub struct Reader {
    dirs: StateDir,
    _lock: File,
}

impl Drop for Reader {
    fn drop(&mut self) {
        let _ = self.dirs.update_readers(|n| n.saturating_sub(1));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_damage_is_detected() {
        let r = OwnerRecord {
            pid: 4242,
            generation: 7,
            readers: 2,
            state: OwnerState::Active,
            heartbeat_ms: 123_456,
            mountpoint: "/mnt/music ü".into(),
        };
        let b = r.encode();
        assert_eq!(OwnerRecord::decode(&b), Some(r));
        for i in [0, 9, 13, 20, 30, 60, 70] {
            let mut bad = b;
            bad[i] ^= 1;
            assert_eq!(OwnerRecord::decode(&bad), None, "byte {i} flipped");
        }
        assert_eq!(OwnerRecord::decode(&b[..100]), None);
        assert_eq!(OwnerRecord::decode(b""), None);
    }

    /// Regression (found by the `owner` fuzz target): a mountpoint longer than the
    /// record's field was cut at a byte, giving another path (a prefix, or invalid
    /// UTF-8 decoded lossily) that a later owner would try to unmount as stale.
    #[test]
    fn a_mountpoint_too_long_for_the_owner_record_is_left_out_not_truncated() {
        let mut r = OwnerRecord {
            pid: 1,
            generation: 1,
            readers: 0,
            state: OwnerState::Active,
            heartbeat_ms: 1,
            mountpoint: format!("/mnt/{}", "é".repeat(300)),
        };
        let back = OwnerRecord::decode(&r.encode()).unwrap();
        assert_eq!(back.mountpoint, "", "not recorded rather than cut");
        r.mountpoint = format!("/mnt/{}", "x".repeat(MOUNTPOINT_LEN - 5));
        assert_eq!(OwnerRecord::decode(&r.encode()).unwrap().mountpoint, r.mountpoint, "one that fits exactly");
        let mut forged = r.encode();
        forged[64] = 0xff;
        seal(&mut forged);
        assert_eq!(OwnerRecord::decode(&forged).unwrap().mountpoint, "", "invalid UTF-8 is unknown, not lossy");
    }

    #[test]
    fn a_live_owner_is_named_and_a_released_one_is_clean() {
        let t = tempfile::tempdir().unwrap();
        let s = StateDir::new(t.path());
        let (o, how) = s.own(Some(Path::new("/mnt/x"))).unwrap();
        assert_eq!((how, o.generation()), (Takeover::Clean, 1));
        // flock is per open file: a second open in this process conflicts like another process.
        let e = s.own(None).err().expect("second owner").to_string();
        assert!(e.contains(&format!("pid {}", std::process::id())) && e.contains("/mnt/x"), "{e}");
        o.release().unwrap();
        let rec = s.read_record().unwrap().unwrap();
        assert_eq!((rec.state, rec.pid, rec.generation), (OwnerState::Released, 0, 1));
        let (o, how) = s.own(None).unwrap();
        assert_eq!((how, o.generation()), (Takeover::Clean, 2));
    }

    #[test]
    fn a_dead_owner_is_recovered_and_a_corrupt_file_rebuilt() {
        let t = tempfile::tempdir().unwrap();
        let s = StateDir::new(t.path());
        // What a process killed with -9 leaves: an active record, no lock.
        let dead = OwnerRecord { pid: 999_999, generation: 5, state: OwnerState::Active, ..OwnerRecord::default() };
        std::fs::write(s.owner_path(), dead.encode()).unwrap();
        let (o, how) = s.own(None).unwrap();
        assert_eq!(how, Takeover::Crashed { pid: 999_999, mountpoint: String::new() });
        assert_eq!(o.generation(), 6);
        simulate_crash(o);
        std::fs::write(s.owner_path(), b"garbage, not a record").unwrap();
        let (o, how) = s.own(None).unwrap();
        assert_eq!(how, Takeover::Corrupt);
        assert_eq!(o.generation(), 1);
        let rec = s.read_record().unwrap().expect("rebuilt");
        assert_eq!((rec.pid, rec.state), (std::process::id(), OwnerState::Active));
    }

    #[test]
    fn readers_attach_beside_an_owner_and_stale_counts_reset() {
        let t = tempfile::tempdir().unwrap();
        let s = StateDir::new(t.path());
        let (o, _) = s.own(None).unwrap();
        let r1 = s.attach().unwrap();
        let r2 = s.attach().unwrap();
        assert_eq!(s.read_record().unwrap().unwrap().readers, 2);
        drop(r1);
        assert_eq!(s.read_record().unwrap().unwrap().readers, 1);
        drop(r2);
        assert_eq!(s.read_record().unwrap().unwrap().readers, 0);
        // A count left by readers killed with -9 (no shared lock held) is reset.
        s.update_readers(|_| 5).unwrap();
        let r = s.attach().unwrap();
        assert_eq!(s.read_record().unwrap().unwrap().readers, 1);
        drop(r);
        o.release().unwrap();
    }
}

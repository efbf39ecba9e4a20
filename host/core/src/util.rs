//! Small helpers every layer may use (the bottom layer: it depends on nothing else in
//! the crate): wall-clock stamps, the inode-keyed hash map, and the one way locks are
//! taken.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::{Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

/// Milliseconds since the epoch (0 if the clock is before it).
pub fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

/// Nanoseconds since the epoch (0 if the clock is before it).
pub fn now_ns() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as i64)
}

/// Seconds since the epoch (0 if the clock is before it).
pub fn now_secs() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}

/// A hash map keyed by inode. Inodes are ours (catalog ids and BLAKE3-derived directory
/// numbers), never chosen by a client, so a multiplicative hash is safe here and is
/// several times cheaper than SipHash on the mount and lookup paths.
pub type InoMap<V> = HashMap<u64, V, BuildHasherDefault<InoHasher>>;

/// The hasher of [`InoMap`]: one multiply per `u64` (the FxHash step).
#[derive(Debug, Default, Clone, Copy)]
pub struct InoHasher(u64);

impl Hasher for InoHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(u64::from(b));
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(0x517c_c1b7_2722_0a95);
    }
}

/// The one way the core takes a mutex.
///
/// A poisoned lock (a thread panicked while holding it) is taken anyway: every structure
/// behind the core's locks is updated by whole-value steps (a computed update applied at
/// once, a map insert), never left half-written across a panic point, and the panic
/// itself was already reported. Refusing every later request of a mount because one
/// request panicked would turn one bug into an outage.
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A shared read of `l`, as [`lock`] takes a mutex.
pub fn read<T>(l: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(PoisonError::into_inner)
}

/// Exclusive use of `l`, as [`lock`] takes a mutex.
pub fn write<T>(l: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_poisoned_lock_is_still_taken() {
        let m = std::sync::Arc::new(Mutex::new(1));
        let m2 = m.clone();
        let _ = std::thread::spawn(move || {
            let _g = lock(&m2);
            panic!("poison it");
        })
        .join();
        assert!(m.is_poisoned());
        *lock(&m) += 1;
        assert_eq!(*lock(&m), 2);
        let rw = RwLock::new(5);
        *write(&rw) += 1;
        assert_eq!(*read(&rw), 6);
    }
}

/// Whether file name `name` matches glob `pattern` (`*`: any run of characters, `?`: one
/// character), ignoring case.
pub fn glob_match(pattern: &str, name: &str) -> bool {
    let p: Vec<char> = pattern.to_lowercase().chars().collect();
    let n: Vec<char> = name.to_lowercase().chars().collect();
    // The classic two-pointer match with backtracking to the last `*`.
    let (mut pi, mut ni) = (0, 0);
    let (mut star, mut mark) = (None, 0);
    while ni < n.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == n[ni]) {
            pi += 1;
            ni += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ni;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ni = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

#[cfg(test)]
mod glob_tests {
    use super::glob_match;

    #[test]
    fn globs_match_names_ignoring_case() {
        assert!(glob_match("*.cue", "Album.CUE"));
        assert!(glob_match("*.jp*g", "cover.jpeg") && glob_match("*.jp*g", "cover.jpg"));
        assert!(glob_match("folder.???", "Folder.png"));
        assert!(glob_match("*", "") && glob_match("*", "x"));
        assert!(!glob_match("*.cue", "album.cue.bak"));
        assert!(!glob_match("?.log", "ab.log"));
        assert!(glob_match("*a*b*c", "xxaxxbxxc") && !glob_match("*a*b*c", "xxaxxcxxb"));
    }
}

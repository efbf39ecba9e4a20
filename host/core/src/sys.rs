//! The operating-system calls the core makes through `libc`, each behind a safe
//! function: the only module of the core (with the chunk buffers' `mmap` in
//! `cache::buf`) that opts in to `unsafe`.
#![allow(unsafe_code, reason = "FFI: the libc calls the safe functions below wrap")]

use std::fs::File;
use std::io;
use std::os::unix::io::AsRawFd;

/// Whether process `pid` exists (a process of another user counts as existing).
pub fn pid_alive(pid: u32) -> bool {
    if pid == 0 || pid > i32::MAX as u32 {
        return false;
    }
    // SAFETY: signal 0 only checks that the process exists and may be signalled.
    let r = unsafe { libc::kill(pid as i32, 0) };
    r == 0 || io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// `flock(f, op)`, blocking.
///
/// # Errors
/// The OS error.
pub fn flock(f: &File, op: libc::c_int) -> io::Result<()> {
    // SAFETY: `f` is an open file descriptor for the duration of the call.
    if unsafe { libc::flock(f.as_raw_fd(), op) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// `flock` without blocking; `Ok(false)` if someone else holds a conflicting lock.
///
/// # Errors
/// The OS error.
pub fn try_flock(f: &File, op: libc::c_int) -> io::Result<bool> {
    match flock(f, op | libc::LOCK_NB) {
        Ok(()) => Ok(true),
        Err(e) if e.raw_os_error() == Some(libc::EWOULDBLOCK) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Advises the kernel that `f` will be read soon (page-cache read-ahead); advisory only.
pub fn will_need(f: &File) {
    // SAFETY: `f` is an open file descriptor for the duration of the call; the advice
    // only affects the page cache.
    unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_WILLNEED) };
}

/// Starts writeback of all of `f`'s dirty pages without waiting.
pub fn writeback_start(f: &File) {
    // SAFETY: a valid open fd; offsets 0/0 mean the whole file.
    unsafe { libc::sync_file_range(f.as_raw_fd(), 0, 0, libc::SYNC_FILE_RANGE_WRITE) };
}

/// Writes back all of `f`'s dirty pages and waits for it.
pub fn writeback_wait(f: &File) {
    // SAFETY: a valid open fd; waits for writeback of the whole file.
    unsafe {
        libc::sync_file_range(
            f.as_raw_fd(),
            0,
            0,
            libc::SYNC_FILE_RANGE_WAIT_BEFORE | libc::SYNC_FILE_RANGE_WRITE | libc::SYNC_FILE_RANGE_WAIT_AFTER,
        )
    };
}

/// The real user and group ids of this process.
pub fn user_ids() -> (u32, u32) {
    // SAFETY: getuid and getgid cannot fail and touch no memory.
    unsafe { (libc::getuid(), libc::getgid()) }
}

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

/// The memory available for new work (`MemAvailable` of `/proc/meminfo`), in bytes.
pub fn mem_available() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Gives the memory the allocator holds free back to the kernel (after a large build's
/// temporary data is freed: glibc keeps it otherwise, and it counts in the RSS).
pub fn release_free_memory() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only walks the allocator's own free lists; no pointer of ours
    // is involved.
    unsafe {
        libc::malloc_trim(0)
    };
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

/// The uid and primary gid of user `name` (the system's user database: `/etc/passwd`,
/// LDAP, ... through NSS); `None` if there is no such user.
pub fn user_by_name(name: &str) -> Option<(u32, u32)> {
    let c = std::ffi::CString::new(name).ok()?;
    let mut buf = vec![0 as libc::c_char; 16 * 1024];
    // SAFETY: an all-zero `passwd` is a valid value (null pointers, zero ids).
    let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
    let mut out: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: every pointer is valid for the call: `c` is NUL-terminated, `buf` is
    // `buf.len()` bytes, `pwd` and `out` are live locals; the result borrows `buf` only.
    let r = unsafe { libc::getpwnam_r(c.as_ptr(), &mut pwd, buf.as_mut_ptr(), buf.len(), &mut out) };
    (r == 0 && !out.is_null()).then_some((pwd.pw_uid, pwd.pw_gid))
}

/// The gid of group `name`; `None` if there is no such group.
pub fn group_by_name(name: &str) -> Option<u32> {
    let c = std::ffi::CString::new(name).ok()?;
    let mut buf = vec![0 as libc::c_char; 64 * 1024];
    // SAFETY: an all-zero `group` is a valid value (null pointers, zero id).
    let mut grp: libc::group = unsafe { std::mem::zeroed() };
    let mut out: *mut libc::group = std::ptr::null_mut();
    // SAFETY: as for `getpwnam_r` above.
    let r = unsafe { libc::getgrnam_r(c.as_ptr(), &mut grp, buf.as_mut_ptr(), buf.len(), &mut out) };
    (r == 0 && !out.is_null()).then_some(grp.gr_gid)
}

/// Mounts the FUSE connection `dev` (an open `/dev/fuse`) on `mountpoint` as filesystem
/// type `fstype` (`fuse.musefs`) with kernel options `data`; root only (others go
/// through `fusermount3`).
///
/// # Errors
/// The `mount(2)` error.
pub fn mount_fuse(
    source: &str,
    mountpoint: &std::path::Path,
    fstype: &str,
    flags: libc::c_ulong,
    data: &str,
) -> io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let c = |b: &[u8]| std::ffi::CString::new(b).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput));
    let (src, target, ty, data) =
        (c(source.as_bytes())?, c(mountpoint.as_os_str().as_bytes())?, c(fstype.as_bytes())?, c(data.as_bytes())?);
    // SAFETY: four NUL-terminated strings that outlive the call; mount(2) copies them.
    let r = unsafe { libc::mount(src.as_ptr(), target.as_ptr(), ty.as_ptr(), flags, data.as_ptr().cast()) };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Unmounts `mountpoint` (`lazy`: detach now, clean up when no longer busy).
///
/// # Errors
/// The `umount2(2)` error.
pub fn unmount(mountpoint: &std::path::Path, lazy: bool) -> io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let target = std::ffi::CString::new(mountpoint.as_os_str().as_bytes())
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    let flags = if lazy { libc::MNT_DETACH } else { 0 };
    // SAFETY: a NUL-terminated string that outlives the call.
    if unsafe { libc::umount2(target.as_ptr(), flags) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Sends SIGUSR1 (a running mount's "sync now") to process `pid`.
///
/// # Errors
/// The `kill(2)` error (no such process, not permitted).
pub fn signal_usr1(pid: u32) -> io::Result<()> {
    let pid = libc::pid_t::try_from(pid).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: kill takes plain integers and touches no memory.
    if unsafe { libc::kill(pid, libc::SIGUSR1) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// The memory page size (4096 if the system does not say).
pub fn page_size() -> u64 {
    // SAFETY: sysconf only reads a system constant.
    let n = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    u64::try_from(n).ok().filter(|&n| n > 0).unwrap_or(4096)
}

/// The bytes available to this user on the filesystem holding `path` (`statvfs`).
///
/// # Errors
/// The OS error.
pub fn available_bytes(path: &std::path::Path) -> io::Result<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: an all-zero `statvfs` is a valid value of the plain C struct.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a NUL-terminated path and `st` a valid out-pointer for the call.
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(st.f_bavail.saturating_mul(st.f_frsize))
}

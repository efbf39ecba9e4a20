//! Chunk buffers and how chunk files are read into them.
//!
//! A chunk buffer is page-aligned, so a chunk file can be read with `O_DIRECT`: the
//! disk writes straight into the buffer (no copy out of the page cache), and the chunk
//! cache's bytes are not cached a second time by the kernel (the FUSE file's own page
//! cache already holds what players re-read). Where the filesystem refuses `O_DIRECT`
//! (tmpfs, some network filesystems) files are read through the page cache instead.
//!
//! Buffers are recycled through a small pool: a fresh buffer costs a page fault for
//! every 4 KiB the first time it is written, which on a warm stream cost as much as
//! hashing the chunk.
#![allow(unsafe_code, reason = "FFI: the buffers are anonymous mmap allocations (mmap/munmap) viewed as slices")]

use std::alloc::Layout;
use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// The alignment (and size granularity) of chunk buffers: what `O_DIRECT` asks of a
/// buffer on the filesystems in use (logical block sizes up to 4 KiB).
pub const ALIGN: usize = 4096;

/// One aligned allocation.
struct Raw {
    ptr: NonNull<u8>,
    cap: usize,
}

// SAFETY: a `Raw` owns its allocation; nothing else points into it.
unsafe impl Send for Raw {}
// SAFETY: shared access only reads the bytes (`&[u8]`).
unsafe impl Sync for Raw {}

impl Raw {
    /// A zeroed, page-aligned mapping of `cap` bytes (`cap` a non-zero multiple of
    /// [`ALIGN`]), its pages populated at once (one call, not a fault per page).
    fn new(cap: usize) -> Self {
        // SAFETY: an anonymous private mapping: no file, no shared memory; the result is
        // checked before use.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                cap,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_POPULATE,
                -1,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            let layout = Layout::from_size_align(cap, ALIGN).expect("chunk buffer layout");
            std::alloc::handle_alloc_error(layout);
        }
        Self { ptr: NonNull::new(ptr.cast()).expect("mmap returned null"), cap }
    }
}

impl Drop for Raw {
    fn drop(&mut self) {
        if self.cap == 0 {
            return; // the placeholder left by a buffer returned to its pool
        }
        // SAFETY: mapped in `Raw::new` with this length, unmapped once; no reference
        // into it outlives its owner.
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.cap) };
    }
}

/// Idle chunk buffers, all of one capacity.
pub struct BufPool {
    free: Mutex<Vec<Raw>>,
    cap: usize,
    keep: usize,
}

impl BufPool {
    /// A pool of buffers for chunks of `chunk_size` bytes (one block more: a chunk file is
    /// read with one block to spare, see [`ChunkReader`]) keeping at most `keep` idle ones.
    pub fn new(chunk_size: usize, keep: usize) -> Arc<Self> {
        Arc::new(Self { free: Mutex::new(Vec::new()), cap: round_up(chunk_size + 1), keep })
    }

    /// A buffer of at least `len` bytes: from the pool when `len` fits its buffers.
    fn take(self: &Arc<Self>, len: usize) -> ChunkBuf {
        if len > self.cap {
            return ChunkBuf { raw: Raw::new(round_up(len)), len: 0, pool: None };
        }
        let raw = crate::util::lock(&self.free).pop().unwrap_or_else(|| Raw::new(self.cap));
        ChunkBuf { raw, len: 0, pool: Some(self.clone()) }
    }

    /// Idle buffers held.
    pub fn idle(&self) -> usize {
        crate::util::lock(&self.free).len()
    }
}

fn round_up(n: usize) -> usize {
    n.div_ceil(ALIGN).max(1) * ALIGN
}

/// A chunk's bytes in an aligned buffer; dropping it returns the buffer to its pool.
pub struct ChunkBuf {
    raw: Raw,
    len: usize,
    pool: Option<Arc<BufPool>>,
}

impl ChunkBuf {
    /// A buffer of `len` bytes from `pool`, filled by `fill` (given the whole `len`
    /// bytes; returns how many it wrote, which becomes the length).
    ///
    /// # Errors
    /// `fill`'s error.
    pub fn fill<E>(
        pool: &Arc<BufPool>,
        len: usize,
        fill: impl FnOnce(&mut [u8]) -> Result<usize, E>,
    ) -> Result<Self, E> {
        let mut b = pool.take(len);
        let n = fill(&mut b.capacity_mut()[..len])?;
        b.len = n.min(len);
        Ok(b)
    }

    /// The whole allocation, initialised (zeroed when new, old bytes when recycled).
    fn capacity_mut(&mut self) -> &mut [u8] {
        // SAFETY: `ptr` points to `cap` initialised bytes owned by this buffer, and
        // `&mut self` makes this the only reference to them.
        unsafe { std::slice::from_raw_parts_mut(self.raw.ptr.as_ptr(), self.raw.cap) }
    }
}

impl From<&[u8]> for ChunkBuf {
    /// An unpooled copy of `bytes`.
    fn from(bytes: &[u8]) -> Self {
        let mut b = ChunkBuf { raw: Raw::new(round_up(bytes.len())), len: bytes.len(), pool: None };
        b.capacity_mut()[..bytes.len()].copy_from_slice(bytes);
        b
    }
}

impl std::ops::Deref for ChunkBuf {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        // SAFETY: the first `len` of the `cap` initialised bytes; shared borrow of self.
        unsafe { std::slice::from_raw_parts(self.raw.ptr.as_ptr(), self.len) }
    }
}

impl std::fmt::Debug for ChunkBuf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ChunkBuf({} bytes)", self.len)
    }
}

impl Drop for ChunkBuf {
    fn drop(&mut self) {
        let Some(pool) = self.pool.take() else { return };
        let mut free = crate::util::lock(&pool.free);
        if free.len() < pool.keep {
            let raw = std::mem::replace(&mut self.raw, Raw { ptr: NonNull::dangling(), cap: 0 });
            free.push(raw);
        }
    }
}

/// What identifies one state of a file: any write to it (or a new file in its place)
/// changes its change time, which no program can set back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileStamp {
    dev: u64,
    ino: u64,
    size: u64,
    mtime_ns: i64,
    ctime_ns: i64,
}

/// Reads whole chunk files into pooled buffers, with `O_DIRECT` while the filesystem
/// accepts it.
pub struct ChunkReader {
    pool: Arc<BufPool>,
    direct: AtomicBool,
}

impl ChunkReader {
    /// A reader over `pool`; `direct`: try `O_DIRECT` first.
    pub fn new(pool: Arc<BufPool>, direct: bool) -> Self {
        Self { pool, direct: AtomicBool::new(direct) }
    }

    /// Whether reads bypass the page cache.
    pub fn direct(&self) -> bool {
        self.direct.load(Ordering::Relaxed)
    }

    /// The pool.
    pub fn pool(&self) -> &Arc<BufPool> {
        &self.pool
    }

    /// The whole file at `path`.
    ///
    /// # Errors
    /// Open and read errors (`NotFound` for a missing file).
    pub fn read(&self, path: &Path) -> io::Result<ChunkBuf> {
        self.read_stamped(path).map(|(b, _)| b)
    }

    /// The whole file at `path`, with the stamp of the file read (taken from the open
    /// file before reading it).
    ///
    /// # Errors
    /// Open and read errors (`NotFound` for a missing file).
    pub fn read_stamped(&self, path: &Path) -> io::Result<(ChunkBuf, FileStamp)> {
        if self.direct() {
            match self.read_with(path, true) {
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                    self.direct.store(false, Ordering::Relaxed);
                    tracing::info!(
                        "chunk files are read through the page cache: {} refuses O_DIRECT",
                        path.parent().and_then(Path::parent).unwrap_or(path).display()
                    );
                }
                other => return other,
            }
        }
        self.read_with(path, false)
    }

    fn read_with(&self, path: &Path, direct: bool) -> io::Result<(ChunkBuf, FileStamp)> {
        use std::os::unix::fs::MetadataExt;
        let mut f =
            std::fs::OpenOptions::new().read(true).custom_flags(if direct { libc::O_DIRECT } else { 0 }).open(path)?;
        let md = f.metadata()?;
        let stamp = FileStamp {
            dev: md.dev(),
            ino: md.ino(),
            size: md.len(),
            mtime_ns: md.mtime() * 1_000_000_000 + md.mtime_nsec(),
            ctime_ns: md.ctime() * 1_000_000_000 + md.ctime_nsec(),
        };
        let size = usize::try_from(md.len()).map_err(|_| io::Error::other("chunk file too large"))?;
        // Read one block more than the size: a file that grew is noticed (its hash
        // then fails), and `O_DIRECT` wants whole blocks anyway.
        let want = round_up(size + 1);
        let mut b = self.pool.take(want);
        let n = read_full(&mut f, &mut b.capacity_mut()[..want], direct)?;
        b.len = n;
        Ok((b, stamp))
    }
}

/// Reads until `buf` is full or the file ends; returns the bytes read. With `direct`,
/// a read ending inside a block is the end of the file (a further read would start
/// unaligned, which `O_DIRECT` refuses).
fn read_full(f: &mut File, buf: &mut [u8], direct: bool) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
        if direct && n % ALIGN != 0 {
            break;
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_are_aligned_and_recycled_up_to_the_limit() {
        let pool = BufPool::new(10_000, 2);
        let bufs: Vec<ChunkBuf> = (0..3)
            .map(|i| {
                ChunkBuf::fill(&pool, 10_000, |b| {
                    Ok::<_, ()>({
                        b.fill(i);
                        9_000
                    })
                })
                .unwrap()
            })
            .collect();
        for (i, b) in bufs.iter().enumerate() {
            assert_eq!(b.as_ptr() as usize % ALIGN, 0);
            assert_eq!(b.len(), 9_000);
            assert!(b.iter().all(|&x| x == i as u8));
        }
        drop(bufs);
        assert_eq!(pool.idle(), 2, "only `keep` idle buffers are held");
        let again = ChunkBuf::fill(&pool, 100, |b| Ok::<_, ()>(b.len())).unwrap();
        assert_eq!(again.len(), 100);
        assert_eq!(pool.idle(), 1, "a buffer came from the pool");
        // Larger than the pool's buffers: allocated on its own, not pooled.
        let big = ChunkBuf::fill(&pool, 20_000, |b| Ok::<_, ()>(b.len())).unwrap();
        assert_eq!(big.len(), 20_000);
        drop(big);
        assert_eq!(pool.idle(), 1);
    }

    #[test]
    fn reads_whole_files_of_any_size_direct_or_not() {
        let dir = tempfile::tempdir().unwrap();
        let pool = BufPool::new(64 << 10, 4);
        for direct in [true, false] {
            let reader = ChunkReader::new(pool.clone(), direct);
            // Odd sizes (not block multiples), exactly one buffer, and larger than one.
            for size in [0usize, 1, 4095, 4096, 4097, 65_535, 64 << 10, (64 << 10) + 1, 200_000] {
                let p = dir.path().join(format!("f{size}"));
                let bytes: Vec<u8> = (0..size).map(|i| (i * 31 % 251) as u8).collect();
                std::fs::write(&p, &bytes).unwrap();
                let got = reader.read(&p).unwrap();
                assert_eq!(got.len(), size, "direct={direct} size={size}");
                assert!(got[..] == bytes[..], "direct={direct} size={size}: bytes differ");
            }
            let e = reader.read(&dir.path().join("missing")).map(|_| ()).unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::NotFound);
        }
    }
}

//! The chunk store on disk and its index in the catalog.

use std::collections::HashMap;
use std::fs;
use std::io::Write;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use super::buf::{BufPool, ChunkBuf, ChunkReader};
use super::CacheCounters;
use crate::catalog::chunks::{ChunkIndex, ChunkRecord};
use crate::catalog::CatalogError;
use crate::manifest::CacheSettings;
use crate::util::lock;

/// A chunk's BLAKE3 hash.
pub type Hash = [u8; 32];

/// A chunk's bytes, shared without copying between the memory LRU, waiting readers,
/// FUSE replies and the writer.
pub type Chunk = Arc<ChunkBuf>;

/// A cache error.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    /// The cache directory failed.
    #[error("chunk cache {path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The chunk index in the catalog failed.
    #[error("chunk cache index: {0}")]
    Index(#[from] CatalogError),
}

/// What `musefs cache stats` shows.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CacheStats {
    /// Chunks on disk.
    pub chunks: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Pinned bytes.
    pub pinned_bytes: u64,
    /// The budget.
    pub max_size: u64,
    /// Bytes of files the manifests describe (what the chunks would cost without dedup).
    pub logical_bytes: u64,
    /// Files with a manifest.
    pub files_with_chunks: u64,
    /// Files of remote origins whose every chunk is on disk, per origin: `(name, cached, total)`.
    pub per_origin: Vec<(String, u64, u64)>,
}

struct WriteJob {
    hash: Hash,
    data: Chunk,
    file: i64,
    idx: u64,
    stamp: String,
    pinned: bool,
}

enum Msg {
    Write(WriteJob),
    Flush(Arc<(Mutex<bool>, Condvar)>),
}

/// The chunk files and their index.
pub struct ChunkStore {
    pub(crate) settings: CacheSettings,
    dir: PathBuf,
    db: Arc<Mutex<ChunkIndex>>,
    total: Arc<AtomicU64>,
    /// Hashes of chunks of open files: never evicted (a count per hash).
    protected: Arc<Mutex<HashMap<Hash, u32>>>,
    /// Chunks used since the last flush of `last_used`.
    touched: Arc<Mutex<HashMap<Hash, i64>>>,
    tx: Mutex<Option<SyncSender<Msg>>>,
    writer: Mutex<Option<std::thread::JoinHandle<()>>>,
    counters: Arc<CacheCounters>,
    reader: ChunkReader,
    /// Chunk files this process has read and verified, by hash, with the stamp of the
    /// file then: the same file unchanged is not hashed again (a read from disk costs
    /// its BLAKE3 only once per process).
    verified: Arc<Mutex<HashMap<Hash, super::buf::FileStamp>>>,
    /// Chunk files hashed by [`ChunkStore::read`] (for the tests).
    hashed: AtomicU64,
}

/// Idle chunk buffers kept for reuse.
const IDLE_BUFFERS: usize = 8;

use crate::util::now_ms as now;

fn hex(h: &Hash) -> String {
    h.iter().map(|b| format!("{b:02x}")).collect()
}

impl ChunkStore {
    /// Opens the store; removes temporary files a crashed process left behind.
    ///
    /// # Errors
    /// [`CacheError`].
    pub fn open(
        dir: PathBuf,
        catalog: &Path,
        settings: CacheSettings,
        counters: Arc<CacheCounters>,
    ) -> Result<Self, CacheError> {
        let io = |path: &Path| {
            let path = path.to_owned();
            move |source| CacheError::Io { path: path.clone(), source }
        };
        fs::create_dir_all(dir.join("tmp")).map_err(io(&dir))?;
        // Temporary files of processes that are gone: never renamed, never served.
        if let Ok(rd) = fs::read_dir(dir.join("tmp")) {
            for e in rd.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                let pid = name.rsplit('.').nth(1).and_then(|p| p.parse::<i32>().ok());
                let alive = pid.is_some_and(|p| p == std::process::id() as i32 || crate::sys::pid_alive(p as u32));
                if !alive {
                    let _ = fs::remove_file(e.path());
                }
            }
        }
        let index = ChunkIndex::open(catalog)?;
        let total = index.total_bytes()?;
        let db = Arc::new(Mutex::new(index));
        let (tx, rx) = std::sync::mpsc::sync_channel(8);
        let settings_chunk = usize::try_from(settings.chunk_size).unwrap_or(usize::MAX >> 1);
        let mut store = Self {
            settings,
            dir,
            db,
            total: Arc::new(AtomicU64::new(total)),
            protected: Arc::new(Mutex::new(HashMap::new())),
            touched: Arc::new(Mutex::new(HashMap::new())),
            tx: Mutex::new(Some(tx)),
            writer: Mutex::new(None),
            counters,
            reader: ChunkReader::new(BufPool::new(settings_chunk, IDLE_BUFFERS), true),
            verified: Arc::new(Mutex::new(HashMap::new())),
            hashed: AtomicU64::new(0),
        };
        let w = Writer {
            dir: store.dir.clone(),
            db: store.db.clone(),
            total: store.total.clone(),
            protected: store.protected.clone(),
            touched: store.touched.clone(),
            verified: store.verified.clone(),
            counters: store.counters.clone(),
            max_size: store.settings.max_size,
            chunk_size: store.settings.chunk_size,
            write_behind: store.settings.write_behind,
            inflight: std::collections::VecDeque::new(),
            inflight_bytes: 0,
            degraded_until: 0,
            written: 0,
            seq: 0,
        };
        let handle = std::thread::Builder::new()
            .name("musefs-cache-writer".into())
            .spawn(move || w.run(rx))
            .map_err(io(&store.dir))?;
        store.writer = Mutex::new(Some(handle));
        Ok(store)
    }

    /// The pool chunk buffers come from.
    pub(crate) fn buffers(&self) -> &Arc<BufPool> {
        self.reader.pool()
    }

    fn path_of(&self, h: &Hash) -> PathBuf {
        chunk_path(&self.dir, h)
    }

    /// The manifest of `file` for `stamp`: `n` entries, `None` where unknown. Rows of
    /// another stamp or chunk size are dropped (the file changed, or the chunk size did).
    ///
    /// # Errors
    /// SQLite errors.
    pub fn manifest(&self, file: i64, stamp: &str, n: usize) -> Result<Vec<Option<Hash>>, CacheError> {
        Ok(lock(&self.db).manifest(file, stamp, self.settings.chunk_size, n)?)
    }

    /// Forgets the manifest of `file` (its chunks are then unreferenced, evicted first).
    ///
    /// # Errors
    /// SQLite errors.
    pub fn drop_manifest(&self, file: i64) -> Result<(), CacheError> {
        Ok(lock(&self.db).drop_manifest(file)?)
    }

    /// Marks chunks as in use by an open file (`on`) or no longer (`!on`).
    pub(crate) fn protect<'a>(&self, hashes: impl Iterator<Item = &'a Hash>, on: bool) {
        let mut p = lock(&self.protected);
        for h in hashes {
            if on {
                *p.entry(*h).or_insert(0) += 1;
            } else if let Some(c) = p.get_mut(h) {
                *c -= 1;
                if *c == 0 {
                    p.remove(h);
                }
            }
        }
    }

    /// Whether the chunk file exists (not verified).
    pub fn has(&self, h: &Hash) -> bool {
        self.path_of(h).exists()
    }

    /// Records a use (for LRU), written to the catalog in batches.
    pub(crate) fn touch(&self, h: &Hash) {
        lock(&self.touched).insert(*h, now());
    }

    /// Asks the kernel to start reading a stored chunk into the page cache
    /// (`POSIX_FADV_WILLNEED`), so the read that follows finds it there; read-ahead
    /// hints several chunks at once and the disk works on them in parallel.
    pub(crate) fn will_need(&self, h: &Hash) {
        if self.reader.direct() {
            return; // read with O_DIRECT: the page cache is not used
        }
        if let Ok(f) = fs::File::open(self.path_of(h)) {
            crate::sys::will_need(&f);
        }
    }

    /// Reads and verifies a chunk: `None` if absent; a chunk whose bytes do not hash to
    /// its name is removed (and `None` returned, so it is fetched again).
    ///
    /// # Errors
    /// I/O errors other than absence.
    pub fn read(&self, h: &Hash) -> Result<Option<ChunkBuf>, CacheError> {
        let p = self.path_of(h);
        let (data, stamp) = match self.reader.read_stamped(&p) {
            Ok(d) => d,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(CacheError::Io { path: p, source }),
        };
        if lock(&self.verified).get(h) == Some(&stamp) {
            self.touch(h);
            return Ok(Some(data));
        }
        self.hashed.fetch_add(1, Ordering::Relaxed);
        if blake3::hash(&data).as_bytes() != h {
            self.counters.corrupt.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                "chunk {} is corrupt (its bytes do not match its hash): removed, fetching it again",
                p.display()
            );
            self.remove_chunk(h);
            return Ok(None);
        }
        lock(&self.verified).insert(*h, stamp);
        self.touch(h);
        Ok(Some(data))
    }

    fn remove_chunk(&self, h: &Hash) {
        lock(&self.verified).remove(h);
        let p = self.path_of(h);
        let _ = fs::remove_file(&p);
        match lock(&self.db).remove_chunk(h) {
            Ok(Some(size)) => {
                self.total.fetch_sub(size, Ordering::Relaxed);
            }
            Ok(None) => {}
            Err(e) => tracing::warn!("chunk cache: cannot unindex {}: {e}", p.display()),
        }
    }

    /// Queues a fetched chunk for writing (blocks while the writer is behind: bounded memory).
    pub(crate) fn write(&self, hash: Hash, data: Chunk, file: i64, idx: u64, stamp: &str, pinned: bool) {
        let tx = lock(&self.tx).clone();
        if let Some(tx) = tx {
            let job = WriteJob { hash, data, file, idx, stamp: stamp.to_owned(), pinned };
            let _ = tx.send(Msg::Write(job));
        }
    }

    /// Waits until every queued chunk is written and indexed.
    pub fn flush(&self) {
        let tx = lock(&self.tx).clone();
        if let Some(tx) = tx {
            let done = Arc::new((Mutex::new(false), Condvar::new()));
            if tx.send(Msg::Flush(done.clone())).is_ok() {
                let mut d = lock(&done.0);
                while !*d {
                    d = done.1.wait(d).unwrap_or_else(std::sync::PoisonError::into_inner);
                }
            }
        }
    }

    /// Statistics from the index.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn stats(&self) -> Result<CacheStats, CacheError> {
        let st = lock(&self.db).stats(self.settings.chunk_size)?;
        Ok(CacheStats {
            chunks: st.chunks,
            bytes: st.bytes,
            pinned_bytes: st.pinned_bytes,
            max_size: self.settings.max_size,
            logical_bytes: st.logical_bytes,
            files_with_chunks: st.files,
            per_origin: st.per_origin,
        })
    }

    /// Hashes every chunk on disk; removes those that do not match their name (or are
    /// missing) and files the index does not know (whole chunks left by a process killed
    /// between writing a chunk and indexing it; they are hashed too, so a torn one is
    /// reported as corrupt).
    ///
    /// # Errors
    /// SQLite errors.
    pub fn verify(&self, mut progress: impl FnMut(u64)) -> Result<Verified, CacheError> {
        self.flush();
        let known: Vec<Vec<u8>> = lock(&self.db).hashes()?;
        let mut out = Verified::default();
        for h in &known {
            let Ok(h) = <Hash>::try_from(h.as_slice()) else { continue };
            out.checked += 1;
            progress(out.checked);
            let p = self.path_of(&h);
            let ok = self.reader.read(&p).is_ok_and(|d| blake3::hash(&d).as_bytes() == &h);
            if !ok {
                out.corrupt.push(p.display().to_string());
                self.remove_chunk(&h);
            }
        }
        // Files on disk the index does not know (a crash between rename and commit).
        let known: std::collections::HashSet<Vec<u8>> = known.into_iter().collect();
        for shard in fs::read_dir(&self.dir).into_iter().flatten().flatten() {
            if shard.file_name() == "tmp" || !shard.path().is_dir() {
                continue;
            }
            for f in fs::read_dir(shard.path()).into_iter().flatten().flatten() {
                let name = f.file_name().to_string_lossy().into_owned();
                let h = unhex(&name);
                if h.as_ref().is_none_or(|h| !known.contains(h.as_slice())) {
                    let whole = h.is_some_and(|h| {
                        self.reader.read(&f.path()).is_ok_and(|d| blake3::hash(&d).as_bytes()[..] == h[..])
                    });
                    let list = if whole { &mut out.unindexed } else { &mut out.corrupt };
                    list.push(f.path().display().to_string());
                    let _ = fs::remove_file(f.path());
                }
            }
        }
        Ok(out)
    }

    /// Removes every chunk and manifest. Returns the bytes freed.
    ///
    /// # Errors
    /// SQLite or I/O errors.
    pub fn clear(&self) -> Result<u64, CacheError> {
        self.flush();
        lock(&self.db).clear()?;
        let freed = self.total.swap(0, Ordering::Relaxed);
        for shard in fs::read_dir(&self.dir).into_iter().flatten().flatten() {
            if shard.file_name() != "tmp" && shard.path().is_dir() {
                fs::remove_dir_all(shard.path()).map_err(|source| CacheError::Io { path: shard.path(), source })?;
            }
        }
        Ok(freed)
    }

    /// Bytes on disk (as indexed).
    pub fn total(&self) -> u64 {
        self.total.load(Ordering::Relaxed)
    }
}

impl Drop for ChunkStore {
    fn drop(&mut self) {
        lock(&self.tx).take();
        if let Some(h) = lock(&self.writer).take() {
            let _ = h.join();
        }
    }
}

/// What [`ChunkStore::verify`] found (and removed).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Verified {
    /// Indexed chunks checked.
    pub checked: u64,
    /// Chunk files whose bytes do not match their hash, or indexed chunks without a file.
    pub corrupt: Vec<String>,
    /// Whole chunk files the index does not know.
    pub unindexed: Vec<String>,
}

fn chunk_path(dir: &Path, h: &Hash) -> PathBuf {
    let x = hex(h);
    dir.join(&x[..2]).join(x)
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if s.len() != 64 {
        return None;
    }
    (0..32).map(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok()).collect()
}

/// How many bytes of chunk files may be under writeback without the writer waiting for
/// them: the bound of the dirty data a long prefetch leaves (issue 18: <= 64 MiB), wide
/// enough that the writer rarely waits on the disk.
const WRITEBACK_WINDOW: u64 = 32 << 20;

/// The writer thread: chunk files, write-behind, index rows, budget.
struct Writer {
    dir: PathBuf,
    db: Arc<Mutex<ChunkIndex>>,
    total: Arc<AtomicU64>,
    protected: Arc<Mutex<HashMap<Hash, u32>>>,
    touched: Arc<Mutex<HashMap<Hash, i64>>>,
    /// The store's verified chunk files (an evicted one leaves it).
    verified: Arc<Mutex<HashMap<Hash, super::buf::FileStamp>>>,
    counters: Arc<CacheCounters>,
    max_size: u64,
    chunk_size: u64,
    write_behind: bool,
    /// Chunk files whose writeback was kicked and not waited for yet, oldest first,
    /// with their sizes: at most [`WRITEBACK_WINDOW`] bytes of them.
    inflight: std::collections::VecDeque<(fs::File, u64)>,
    inflight_bytes: u64,
    /// While `written < degraded_until`, only kick writeback (a wait stalled).
    degraded_until: u64,
    written: u64,
    seq: u64,
}

impl Writer {
    fn run(mut self, rx: Receiver<Msg>) {
        let mut batch: Vec<WriteJob> = Vec::new();
        let mut flushes = Vec::new();
        let mut last_touch_flush = Instant::now();
        loop {
            let msg = if batch.is_empty() && flushes.is_empty() {
                match rx.recv_timeout(Duration::from_secs(2)) {
                    Ok(m) => Some(m),
                    Err(RecvTimeoutError::Timeout) => None,
                    Err(RecvTimeoutError::Disconnected) => break,
                }
            } else {
                rx.try_recv().ok()
            };
            match msg {
                Some(Msg::Write(job)) => {
                    self.store_file(&job);
                    batch.push(job);
                    if batch.len() < 32 {
                        continue;
                    }
                }
                Some(Msg::Flush(f)) => {
                    flushes.push(f);
                    continue;
                }
                None => {}
            }
            self.commit(&mut batch);
            if last_touch_flush.elapsed() > Duration::from_secs(5) || !flushes.is_empty() {
                self.flush_touches();
                last_touch_flush = Instant::now();
            }
            for f in flushes.drain(..) {
                *lock(&f.0) = true;
                f.1.notify_all();
            }
        }
        self.commit(&mut batch);
        self.flush_touches();
        self.drain_writeback(0);
    }

    /// Writes the chunk file (temporary name, then rename), unless it is already there.
    fn store_file(&mut self, job: &WriteJob) {
        let path = chunk_path(&self.dir, &job.hash);
        if path.exists() {
            return;
        }
        let res = (|| -> std::io::Result<()> {
            fs::create_dir_all(path.parent().expect("shard"))?;
            self.seq += 1;
            let tmp = self.dir.join("tmp").join(format!("{}.{}.{}", hex(&job.hash), std::process::id(), self.seq));
            let mut f = fs::File::create(&tmp)?;
            f.write_all(&job.data)?;
            if self.write_behind {
                // Kick writeback of this chunk now ...
                crate::sys::writeback_start(&f);
            }
            fs::rename(&tmp, &path)?;
            if self.write_behind {
                // ... and wait for the oldest ones beyond the window: dirty data stays
                // bounded however long a prefetch runs, and the writer does not stall
                // on every chunk's writeback.
                self.inflight_bytes += job.data.len() as u64;
                self.inflight.push_back((f, job.data.len() as u64));
                self.drain_writeback(WRITEBACK_WINDOW);
            }
            self.written += 1;
            Ok(())
        })();
        if let Err(e) = res {
            tracing::warn!("chunk cache: cannot write {}: {e} (the chunk is served from memory only)", path.display());
        }
    }

    /// Waits for the writeback of the oldest kicked chunk files until at most `keep`
    /// bytes of them are in flight.
    fn drain_writeback(&mut self, keep: u64) {
        while self.inflight_bytes > keep {
            let Some((f, len)) = self.inflight.pop_front() else { break };
            self.inflight_bytes -= len;
            if self.written < self.degraded_until {
                continue;
            }
            let t = Instant::now();
            crate::sys::writeback_wait(&f);
            if t.elapsed() > Duration::from_secs(2) {
                tracing::warn!(
                    "chunk cache: waiting for writeback took {:?}; only kicking writeback for the next 256 chunks",
                    t.elapsed()
                );
                self.degraded_until = self.written + 256;
            }
        }
    }

    fn commit(&mut self, batch: &mut Vec<WriteJob>) {
        if batch.is_empty() {
            return;
        }
        // A chunk whose file is gone from disk (a failed write) is not indexed.
        let records: Vec<ChunkRecord<'_>> = batch
            .iter()
            .filter(|j| chunk_path(&self.dir, &j.hash).exists())
            .map(|j| ChunkRecord {
                hash: j.hash,
                size: j.data.len() as u64,
                file: j.file,
                idx: j.idx,
                stamp: &j.stamp,
                pinned: j.pinned,
            })
            .collect();
        match lock(&self.db).record(&records, self.chunk_size, now()) {
            Ok(added) => {
                self.total.fetch_add(added, Ordering::Relaxed);
            }
            Err(e) => tracing::warn!("chunk cache: cannot index {} chunk(s): {e}", batch.len()),
        }
        batch.clear();
        self.evict();
    }

    fn flush_touches(&self) {
        let touched: Vec<(Hash, i64)> = lock(&self.touched).drain().collect();
        if touched.is_empty() {
            return;
        }
        if let Err(e) = lock(&self.db).touch(&touched) {
            tracing::debug!("chunk cache: cannot record chunk use: {e}");
        }
    }

    /// Evicts least recently used chunks (unreferenced ones first) down to 90% of the
    /// budget; never a pinned chunk or one of an open file.
    fn evict(&mut self) {
        if self.total.load(Ordering::Relaxed) <= self.max_size {
            return;
        }
        self.flush_touches();
        let target = self.max_size / 10 * 9;
        let candidates = {
            let res = lock(&self.db).eviction_order(4096);
            match res {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!("chunk cache: eviction query failed: {e}");
                    return;
                }
            }
        };
        let mut gone = Vec::new();
        {
            let protected = lock(&self.protected);
            for (hash, size) in candidates {
                if self.total.load(Ordering::Relaxed) <= target {
                    break;
                }
                if protected.contains_key(&hash) {
                    continue;
                }
                let _ = fs::remove_file(chunk_path(&self.dir, &hash));
                self.total.fetch_sub(size, Ordering::Relaxed);
                gone.push(hash);
            }
        }
        {
            let mut verified = lock(&self.verified);
            for h in &gone {
                verified.remove(h);
            }
        }
        self.counters.evicted.fetch_add(gone.len() as u64, Ordering::Relaxed);
        if let Err(e) = lock(&self.db).remove_chunks(&gone) {
            tracing::warn!("chunk cache: cannot unindex evicted chunks: {e}");
        }
        if self.total.load(Ordering::Relaxed) > self.max_size {
            tracing::warn!(
                "chunk cache: {} bytes in use exceed the budget of {} (the rest is pinned or in use by open files)",
                self.total.load(Ordering::Relaxed),
                self.max_size
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(i: u8) -> (Hash, Chunk) {
        let data: Chunk = Arc::new(ChunkBuf::from(&vec![i; 64 << 10][..]));
        (*blake3::hash(&data).as_bytes(), data)
    }

    #[test]
    fn eviction_keeps_the_budget_but_never_pinned_or_open_chunks() {
        let t = tempfile::tempdir().unwrap();
        let db = t.path().join("catalog.db");
        drop(crate::catalog::Catalog::open(&db).unwrap());
        let settings = CacheSettings { chunk_size: 64 << 10, max_size: 4 * (64 << 10), ..CacheSettings::default() };
        let store = ChunkStore::open(t.path().join("chunks"), &db, settings, Arc::default()).unwrap();
        let (open_h, open_d) = chunk(0);
        let (pin_h, pin_d) = chunk(1);
        store.protect(std::iter::once(&open_h), true);
        store.write(open_h, open_d, 1, 0, "s", false);
        store.write(pin_h, pin_d, 1, 1, "s", true);
        store.flush();
        for i in 2..12 {
            let (h, d) = chunk(i);
            // Distinct last-use times (milliseconds).
            std::thread::sleep(std::time::Duration::from_millis(3));
            store.write(h, d, 1, u64::from(i), "s", false);
            store.flush();
        }
        assert!(store.total() <= 4 * (64 << 10), "{}", store.total());
        assert!(store.has(&open_h) && store.has(&pin_h), "an open or pinned chunk was evicted");
        assert!(store.has(&chunk(11).0), "the newest chunk was evicted");
        assert!(!store.has(&chunk(2).0), "the oldest unprotected chunk was kept");
        // What is on disk verifies; a flipped byte is caught and the chunk removed.
        assert_eq!(store.read(&pin_h).unwrap().unwrap()[..], vec![1u8; 64 << 10][..]);
        let p = store.path_of(&open_h);
        let mut bytes = std::fs::read(&p).unwrap();
        bytes[100] ^= 1;
        std::fs::write(&p, bytes).unwrap();
        assert!(store.read(&open_h).unwrap().is_none());
        assert!(!store.has(&open_h));
    }

    #[test]
    fn a_chunk_file_is_hashed_once_while_unchanged_and_a_write_to_it_is_caught() {
        let t = tempfile::tempdir().unwrap();
        let db = t.path().join("catalog.db");
        drop(crate::catalog::Catalog::open(&db).unwrap());
        let settings = CacheSettings { chunk_size: 64 << 10, ..CacheSettings::default() };
        let store = ChunkStore::open(t.path().join("chunks"), &db, settings, Arc::default()).unwrap();
        let (h, d) = chunk(7);
        store.write(h, d, 1, 0, "s", false);
        store.flush();
        for _ in 0..3 {
            assert_eq!(store.read(&h).unwrap().unwrap()[..], vec![7u8; 64 << 10][..]);
        }
        assert_eq!(store.hashed.load(Ordering::Relaxed), 1, "an unchanged chunk file is hashed once");
        // The same bytes written again (same size, a new change time): hashed again, good.
        let p = store.path_of(&h);
        std::fs::write(&p, vec![7u8; 64 << 10]).unwrap();
        assert!(store.read(&h).unwrap().is_some());
        assert_eq!(store.hashed.load(Ordering::Relaxed), 2);
        // A byte flipped in place, size and inode kept: caught.
        let mut bytes = std::fs::read(&p).unwrap();
        bytes[10] ^= 1;
        std::fs::write(&p, bytes).unwrap();
        assert!(store.read(&h).unwrap().is_none(), "a chunk changed on disk after its check was served");
        assert!(!store.has(&h));
    }
}

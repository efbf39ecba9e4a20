//! The content-addressed chunk cache for remote origins.
//!
//! A remote file is split into fixed-size, offset-aligned chunks (`chunk_size`, 1 MiB by
//! default). A fetched chunk is stored once under `state_dir/chunks/` by its BLAKE3 hash,
//! so identical chunks of different files are stored once. The per-file manifest
//! (the file's stamp and, per chunk index, the hash) lives in the catalog
//! (`cache_manifest`), the stored chunks in `cache_chunks` (size, last use, pinned), so
//! a remount or restart re-downloads nothing and cached files play with the origin
//! unreachable.
//!
//! Integrity: every chunk read from disk is hashed and compared with its name; a
//! mismatch (a torn write, bit rot, tampering) evicts it and it is fetched again. A
//! refetched chunk whose hash differs from the file's manifest although the stamp is
//! unchanged is an error (the object changed in place), never served. Chunk files are
//! written under a temporary name and renamed, and a manifest row is written only after
//! its chunk file is in place.
//!
//! Budget: `max_size` bytes on disk, least recently used chunks evicted first, never a
//! chunk of a file that is open, never a pinned chunk (with `pin_headers`, the chunks
//! holding a file's header and art, so every file opens instantly).
//!
//! Write-behind: chunk files are written by one writer thread that kicks writeback of
//! each chunk (`sync_file_range(WRITE)`) and waits for the oldest kicked ones once more
//! than 32 MiB are in flight, so dirty page-cache data stays bounded however long a
//! prefetch runs without the writer waiting on every chunk; if a wait ever stalls
//! (> 2 s), it stops waiting for a while and logs it.
//!
//! Read-ahead: [`CachedFile`] detects sequential reads per open handle and loads the
//! next `readahead` chunks on a bounded pool of fetch threads (fetches in order, stored
//! chunks up to three at once); the verified chunks live in a memory LRU with its own
//! byte budget, and the chunks a sequential reader has passed leave it at once
//! (drop-behind), so one stream does not flush it.
//!
//! Warm reads: chunk files are read with `O_DIRECT` into pooled, page-aligned buffers
//! (see [`buf`]), and a read inside one chunk is answered with the chunk itself
//! ([`CachedFile::read_shared`]), so the bytes are copied once, into the kernel.

pub mod buf;
pub mod store;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use abi_stable::std_types::RSliceMut;
use musefs_plugin_api::{CallCtx, ErrorKind, Handle, HandleBox, OriginBox, PluginError, PluginResult, Stat};

use crate::catalog::FileRow;
use crate::manifest::CacheSettings;
use crate::util::lock;
pub use buf::ChunkBuf;
pub use store::{CacheStats, Chunk, ChunkStore, Hash};

/// Counters of one process's cache use.
#[derive(Debug, Default)]
pub struct CacheCounters {
    /// Chunks served from the memory LRU.
    pub mem_hits: AtomicU64,
    /// Chunks read (and verified) from disk.
    pub disk_hits: AtomicU64,
    /// Chunks fetched from an origin.
    pub fetched: AtomicU64,
    /// Bytes fetched from origins.
    pub fetched_bytes: AtomicU64,
    /// Chunks fetched ahead of the reader.
    pub prefetched: AtomicU64,
    /// Chunks on disk whose hash did not match (evicted and refetched).
    pub corrupt: AtomicU64,
    /// Chunks evicted for the size budget.
    pub evicted: AtomicU64,
}

impl CacheCounters {
    /// A one-line summary.
    pub fn summary(&self) -> String {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        format!(
            "{} chunk(s) fetched from origins ({} bytes, {} ahead of the reader), {} read from disk, {} from memory, \
             {} corrupt chunk(s) replaced, {} evicted",
            g(&self.fetched),
            g(&self.fetched_bytes),
            g(&self.prefetched),
            g(&self.disk_hits),
            g(&self.mem_hits),
            g(&self.corrupt),
            g(&self.evicted)
        )
    }
}

/// The stamp a manifest is valid for: size, mtime and ETag of the catalog row.
pub fn stamp_of(row: &FileRow) -> String {
    crate::catalog::stamp_string(row.size, row.mtime_ns, row.etag.as_deref())
}

/// A fetch in progress, shared by every reader waiting for the same chunk.
#[derive(Default)]
struct Slot {
    done: Mutex<Option<Result<Chunk, PluginError>>>,
    cv: Condvar,
}

/// Verified chunks in memory, least recently used dropped beyond a byte budget.
struct MemLru {
    map: HashMap<Hash, (Chunk, u64)>,
    bytes: usize,
    budget: usize,
    tick: u64,
}

impl MemLru {
    fn get(&mut self, h: &Hash) -> Option<Chunk> {
        self.tick += 1;
        let t = self.tick;
        self.map.get_mut(h).map(|(d, at)| {
            *at = t;
            d.clone()
        })
    }

    fn remove(&mut self, h: &Hash) {
        if let Some((old, _)) = self.map.remove(h) {
            self.bytes -= old.len();
        }
    }

    fn put(&mut self, h: Hash, d: Chunk) {
        self.tick += 1;
        self.bytes += d.len();
        if let Some((old, _)) = self.map.insert(h, (d, self.tick)) {
            self.bytes -= old.len();
        }
        while self.bytes > self.budget && self.map.len() > 1 {
            let Some((&k, _)) = self.map.iter().min_by_key(|(_, (_, t))| *t) else { break };
            if let Some((old, _)) = self.map.remove(&k) {
                self.bytes -= old.len();
            }
        }
    }
}

type Job = Box<dyn FnOnce() + Send>;

/// The chunk cache of one process: the store on disk, the memory LRU, fetches in
/// flight, and the read-ahead pool.
pub struct ChunkCache {
    store: Arc<ChunkStore>,
    mem: Mutex<MemLru>,
    inflight: Mutex<HashMap<(i64, u64), Arc<Slot>>>,
    pool: Mutex<Option<std::sync::mpsc::SyncSender<Job>>>,
    /// Counters.
    pub counters: Arc<CacheCounters>,
}

impl ChunkCache {
    /// Opens the cache under `dir` with the catalog at `catalog` (its own connection).
    ///
    /// # Errors
    /// [`store::CacheError`] if the directory or the catalog cannot be opened.
    pub fn open(
        dir: PathBuf,
        catalog: &std::path::Path,
        settings: CacheSettings,
    ) -> Result<Arc<Self>, store::CacheError> {
        let counters = Arc::new(CacheCounters::default());
        let store = ChunkStore::open(dir, catalog, settings, counters.clone())?;
        let threads = store.settings.fetch_threads.max(1);
        let (tx, rx) = std::sync::mpsc::sync_channel::<Job>(threads * 4);
        let rx = Arc::new(Mutex::new(rx));
        for i in 0..threads {
            let rx = rx.clone();
            let _ = std::thread::Builder::new().name(format!("musefs-fetch-{i}")).spawn(move || loop {
                let job = lock(&rx).recv();
                match job {
                    Ok(job) => job(),
                    Err(_) => break,
                }
            });
        }
        Ok(Arc::new(Self {
            mem: Mutex::new(MemLru {
                map: HashMap::new(),
                bytes: 0,
                budget: store.settings.memory_bytes as usize,
                tick: 0,
            }),
            store: Arc::new(store),
            inflight: Mutex::new(HashMap::new()),
            pool: Mutex::new(Some(tx)),
            counters,
        }))
    }

    /// The store (stats, verify, clear).
    pub fn store(&self) -> &ChunkStore {
        &self.store
    }

    /// Verified chunks held in memory.
    pub fn memory_chunks(&self) -> usize {
        lock(&self.mem).map.len()
    }

    /// The chunk size.
    pub fn chunk_size(&self) -> u64 {
        self.store.settings.chunk_size
    }

    /// A cached view of the file `row` of `origin`. Nothing is fetched and the origin is
    /// not contacted until a chunk is missing.
    ///
    /// # Errors
    /// Catalog errors loading the manifest.
    pub fn file(
        self: &Arc<Self>,
        row: &FileRow,
        origin: Arc<OriginBox>,
        pin_below: u64,
        timeout: Duration,
    ) -> Result<Arc<CachedFile>, store::CacheError> {
        let stamp = stamp_of(row);
        let n = row.size.div_ceil(self.chunk_size()) as usize;
        let hashes = self.store.manifest(row.id, &stamp, n)?;
        self.store.protect(hashes.iter().flatten(), true);
        Ok(Arc::new(CachedFile {
            cache: self.clone(),
            origin,
            row: row.clone(),
            label: format!("{}:{}", row.origin, row.path),
            stamp,
            hashes: Mutex::new(hashes),
            handle: Mutex::new(None),
            pin_below,
            timeout,
            seq: Mutex::new((u64::MAX, 0)),
            ahead: Mutex::new(Ahead::default()),
            fetched: AtomicU64::new(0),
        }))
    }

    fn spawn(&self, job: Job) -> bool {
        match lock(&self.pool).as_ref() {
            Some(tx) => tx.try_send(job).is_ok(),
            None => false,
        }
    }

    /// Waits until the writer has stored everything fetched so far.
    pub fn flush(&self) {
        self.store.flush();
    }
}

impl Drop for ChunkCache {
    fn drop(&mut self) {
        lock(&self.pool).take();
    }
}

/// One remote file seen through the cache: implements [`Handle`], so format plugins
/// plan against it exactly as against the origin's own handle.
pub struct CachedFile {
    cache: Arc<ChunkCache>,
    origin: Arc<OriginBox>,
    row: FileRow,
    label: String,
    stamp: String,
    /// The manifest: per chunk index, its hash once known.
    hashes: Mutex<Vec<Option<Hash>>>,
    /// The origin handle, opened on the first miss (pinned to the version it saw).
    handle: Mutex<Option<HandleBox>>,
    pin_below: u64,
    timeout: Duration,
    /// `(end of the last read, sequential streak)`.
    seq: Mutex<(u64, u32)>,
    /// The read-ahead job's progress.
    ahead: Mutex<Ahead>,
    /// Bytes this file fetched from its origin.
    fetched: AtomicU64,
}

/// Where the read-ahead job of one file is.
#[derive(Default)]
struct Ahead {
    /// The next chunk it loads.
    next: u64,
    /// One past the last chunk it loads.
    target: u64,
    /// Whether a job is queued or running.
    running: bool,
    /// Chunks below this were hinted to the kernel already.
    hinted: u64,
    /// Loads of stored chunks running on the pool.
    loading: usize,
    /// Chunks below this were dropped from memory behind the reader.
    dropped: u64,
}

/// How many stored chunks of one file the read-ahead loads at once.
const PARALLEL_LOADS: usize = 2;

impl Drop for CachedFile {
    fn drop(&mut self) {
        let hashes = lock(&self.hashes);
        self.cache.store.protect(hashes.iter().flatten(), false);
    }
}

impl CachedFile {
    fn err(&self, kind: ErrorKind, what: impl std::fmt::Display) -> PluginError {
        PluginError::new(kind, format!("{}: {what}", self.label))
    }

    fn chunk_range(&self, idx: u64) -> (u64, usize) {
        let cs = self.cache.chunk_size();
        let start = idx * cs;
        (start, (self.row.size - start).min(cs) as usize)
    }

    fn n_chunks(&self) -> u64 {
        self.row.size.div_ceil(self.cache.chunk_size())
    }

    /// The origin handle, opened now if needed; its stamp must be the catalog's.
    fn origin_handle(&self, ctx: &CallCtx) -> PluginResult<HandleBox> {
        let mut slot = lock(&self.handle);
        if let Some(h) = slot.as_ref() {
            return Ok(h.clone());
        }
        let h = self.origin.open(ctx, self.row.path.as_str().into()).into_result().map_err(|e| {
            if e.kind == ErrorKind::NOT_FOUND {
                self.err(ErrorKind::CHANGED, "it is gone from its origin; run `musefs scan`")
            } else {
                PluginError { message: format!("{}: {}", self.label, e.message).into(), ..e }
            }
        })?;
        let stat = h.stat();
        let now = crate::cache::stamp_of(&FileRow {
            size: stat.size,
            mtime_ns: if self.row.mtime_ns.is_some() { stat.mtime_ns.into_option() } else { None },
            etag: if self.row.etag.is_some() { stat.etag.into_option().map(|e| e.into_string()) } else { None },
            ..self.row.clone()
        });
        if now != self.stamp {
            // A new version: what this file cached is stale.
            if let Err(e) = self.cache.store.drop_manifest(self.row.id) {
                tracing::warn!("{}: {e}", self.label);
            }
            return Err(self.err(
                ErrorKind::CHANGED,
                "it changed in its origin since it was scanned (size, mtime or ETag differ); its cached chunks \
                 were dropped; run `musefs scan`",
            ));
        }
        *slot = Some(h.clone());
        Ok(h)
    }

    /// Chunk `idx`: from memory, from disk (verified) or fetched. Disk reads and
    /// fetches happen once however many readers want the same chunk at the same time
    /// (the others wait for the first).
    fn chunk(&self, ctx: &CallCtx, idx: u64) -> PluginResult<Chunk> {
        if let Some(d) = self.memory_copy(idx) {
            return Ok(d);
        }
        let key = (self.row.id, idx);
        let (slot, leader) = {
            let mut inflight = lock(&self.cache.inflight);
            match inflight.get(&key) {
                Some(s) => (s.clone(), false),
                None => {
                    let s = Arc::new(Slot::default());
                    inflight.insert(key, s.clone());
                    (s, true)
                }
            }
        };
        if !leader {
            let mut done = lock(&slot.done);
            while done.is_none() {
                done = slot.cv.wait(done).unwrap_or_else(std::sync::PoisonError::into_inner);
            }
            return done.clone().expect("set");
        }
        let res = self.load(ctx, idx);
        *lock(&slot.done) = Some(res.clone());
        slot.cv.notify_all();
        lock(&self.cache.inflight).remove(&key);
        res
    }

    fn memory_copy(&self, idx: u64) -> Option<Chunk> {
        let h = lock(&self.hashes)[idx as usize]?;
        let d = lock(&self.cache.mem).get(&h)?;
        self.cache.counters.mem_hits.fetch_add(1, Ordering::Relaxed);
        self.cache.store.touch(&h);
        Some(d)
    }

    /// The leader's part of [`chunk`](Self::chunk): memory (again: it may have arrived
    /// while the slot was taken), disk, origin.
    fn load(&self, ctx: &CallCtx, idx: u64) -> PluginResult<Chunk> {
        if let Some(d) = self.memory_copy(idx) {
            return Ok(d);
        }
        let known = lock(&self.hashes)[idx as usize];
        if let Some(h) = known {
            match self.cache.store.read(&h) {
                Ok(Some(d)) => {
                    let d: Chunk = Arc::new(d);
                    self.cache.counters.disk_hits.fetch_add(1, Ordering::Relaxed);
                    lock(&self.cache.mem).put(h, d.clone());
                    return Ok(d);
                }
                Ok(None) => {}
                Err(e) => tracing::warn!("{}: chunk {idx}: {e}", self.label),
            }
        }
        self.fetch(ctx, idx, known)
    }

    fn fetch(&self, ctx: &CallCtx, idx: u64, expected: Option<Hash>) -> PluginResult<Chunk> {
        let (start, len) = self.chunk_range(idx);
        let handle = self.origin_handle(ctx)?;
        let buf = ChunkBuf::fill(self.cache.store.buffers(), len, |buf| {
            let mut done = 0;
            while done < len {
                let n = handle
                    .read_at(ctx, start + done as u64, RSliceMut::from_mut_slice(&mut buf[done..]))
                    .into_result()
                    .map_err(|e| PluginError { message: format!("{}: {}", self.label, e.message).into(), ..e })?;
                if n == 0 {
                    return Err(self.err(ErrorKind::CHANGED, format!("it ends before byte {}", start + done as u64)));
                }
                done += n;
            }
            Ok(done)
        })?;
        let h: Hash = *blake3::hash(&buf).as_bytes();
        if let Some(e) = expected {
            if e != h {
                let _ = self.cache.store.drop_manifest(self.row.id);
                return Err(self.err(
                    ErrorKind::CHANGED,
                    format!("chunk {idx} differs from the cached copy of the same version (the object changed in place); run `musefs scan`"),
                ));
            }
        }
        self.cache.counters.fetched.fetch_add(1, Ordering::Relaxed);
        self.cache.counters.fetched_bytes.fetch_add(len as u64, Ordering::Relaxed);
        self.fetched.fetch_add(len as u64, Ordering::Relaxed);
        let data: Chunk = Arc::new(buf);
        lock(&self.cache.mem).put(h, data.clone());
        {
            let mut hashes = lock(&self.hashes);
            if hashes[idx as usize].is_none() {
                hashes[idx as usize] = Some(h);
                self.cache.store.protect(std::iter::once(&h), true);
            }
        }
        let pinned = start < self.pin_below;
        self.cache.store.write(h, data.clone(), self.row.id, idx, &self.stamp, pinned);
        Ok(data)
    }

    /// Reads `dst.len()` bytes at `offset` (the caller keeps within the file).
    ///
    /// # Errors
    /// The origin's errors for missing chunks (the origin unreachable: `UNAVAILABLE` or
    /// `TIMED_OUT` within the call's timeout); `CHANGED` if the object changed.
    pub fn read_into(self: &Arc<Self>, ctx: &CallCtx, offset: u64, dst: &mut [u8]) -> PluginResult<()> {
        if dst.is_empty() {
            return Ok(());
        }
        let end = offset + dst.len() as u64;
        if end > self.row.size {
            return Err(self.err(ErrorKind::INVALID_INPUT, format!("read past the end ({end} > {})", self.row.size)));
        }
        let cs = self.cache.chunk_size();
        let (first, last) = (offset / cs, (end - 1) / cs);
        self.read_ahead(offset, end, last);
        for idx in first..=last {
            let data = self.chunk(ctx, idx)?;
            let cstart = idx * cs;
            let from = offset.max(cstart);
            let to = end.min(cstart + data.len() as u64);
            dst[(from - offset) as usize..(to - offset) as usize]
                .copy_from_slice(&data[(from - cstart) as usize..(to - cstart) as usize]);
        }
        Ok(())
    }

    /// `len` bytes at `offset` as a range of one chunk, without a copy; `None` when
    /// the range spans chunks or leaves the file (the caller then reads with
    /// [`read_into`](Self::read_into)).
    ///
    /// # Errors
    /// As for [`read_into`](Self::read_into).
    pub fn read_shared(
        self: &Arc<Self>,
        ctx: &CallCtx,
        offset: u64,
        len: usize,
    ) -> PluginResult<Option<(Chunk, std::ops::Range<usize>)>> {
        let end = offset + len as u64;
        let cs = self.cache.chunk_size();
        let idx = offset / cs;
        if len == 0 || end > self.row.size || (end - 1) / cs != idx {
            return Ok(None);
        }
        self.read_ahead(offset, end, idx);
        let data = self.chunk(ctx, idx)?;
        let from = (offset - idx * cs) as usize;
        if from + len > data.len() {
            return Ok(None);
        }
        Ok(Some((data, from..from + len)))
    }

    /// Sequential detection: after two reads near the end of the previous one (the
    /// kernel's read-ahead requests arrive slightly out of order on several FUSE
    /// threads) or a read from the start, the next `readahead` chunks are loaded ahead of
    /// the reader (from disk into memory, or fetched) by one job per file on the pool.
    /// The job goes in order, so a streaming origin serves a cold read with one request.
    fn read_ahead(self: &Arc<Self>, offset: u64, end: u64, last: u64) {
        let ahead = self.cache.store.settings.readahead as u64;
        if ahead == 0 {
            return;
        }
        let window = 2 * self.cache.chunk_size();
        let streak = {
            let mut s = lock(&self.seq);
            let near = s.0 != u64::MAX && offset + window >= s.0 && offset <= s.0 + window;
            s.1 = if near || offset == 0 { s.1.saturating_add(1) } else { 0 };
            s.0 = if near { s.0.max(end) } else { end };
            s.1
        };
        if streak < 2 {
            return;
        }
        let target = (last + 1 + ahead).min(self.n_chunks());
        {
            let mut a = lock(&self.ahead);
            // Drop-behind: chunks a sequential reader has passed leave the memory LRU
            // now (their buffers go back to the pool), so a long stream does not push
            // out what other readers use (the kernel's page cache holds what was served).
            let behind = (offset / self.cache.chunk_size()).saturating_sub(1);
            if a.dropped < behind {
                let hashes = lock(&self.hashes);
                let mut mem = lock(&self.cache.mem);
                for i in a.dropped..behind {
                    if let Some(h) = hashes.get(i as usize).copied().flatten() {
                        mem.remove(&h);
                    }
                }
                a.dropped = behind;
            }
            // The reader moved past the job (or elsewhere): continue from the reader.
            if a.next <= last || a.next > last + 1 + ahead {
                a.next = last + 1;
            }
            a.target = target;
            if a.running || a.next >= a.target {
                return;
            }
            a.running = true;
        }
        let me = self.clone();
        let queued = self.cache.spawn(Box::new(move || me.run_ahead()));
        if !queued {
            lock(&self.ahead).running = false;
        }
    }

    /// The read-ahead job: loads chunks `next..target` in order until it catches up.
    fn run_ahead(self: &Arc<Self>) {
        let ctx = CallCtx::with_timeout(self.timeout);
        loop {
            let idx = {
                let mut a = lock(&self.ahead);
                if a.next >= a.target {
                    a.running = false;
                    return;
                }
                a.next += 1;
                a.next - 1
            };
            // Hint the stored chunks of the window to the kernel, each once: their disk
            // reads then overlap instead of running one after another.
            let (from, to) = {
                let mut a = lock(&self.ahead);
                let from = a.hinted.max(idx);
                a.hinted = a.target.max(from);
                (from, a.hinted)
            };
            for i in from..to {
                if let Some(h) = lock(&self.hashes)[i as usize] {
                    if !lock(&self.cache.mem).map.contains_key(&h) {
                        self.cache.store.will_need(&h);
                    }
                }
            }
            let known = lock(&self.hashes)[idx as usize];
            let in_memory = known.is_some_and(|h| lock(&self.cache.mem).map.contains_key(&h));
            if in_memory {
                continue;
            }
            // A stored chunk (a disk read and a hash) is loaded by a job of its own, up
            // to `PARALLEL_LOADS` at once, so the reads and the hashing of the window
            // overlap across cores; fetches stay in order, in this job.
            if known.is_some() && self.spawn_load(&ctx, idx) {
                continue;
            }
            let fetched = known.is_none();
            match self.chunk(&ctx, idx) {
                Ok(_) if fetched => {
                    self.cache.counters.prefetched.fetch_add(1, Ordering::Relaxed);
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::debug!("read-ahead of {} chunk {idx}: {e}", self.label);
                    lock(&self.ahead).running = false;
                    return;
                }
            }
        }
    }

    /// Loads stored chunk `idx` on the pool if fewer than `PARALLEL_LOADS` loads of this
    /// file are running; `false` if it was not queued.
    fn spawn_load(self: &Arc<Self>, ctx: &CallCtx, idx: u64) -> bool {
        {
            let mut a = lock(&self.ahead);
            if a.loading >= PARALLEL_LOADS {
                return false;
            }
            a.loading += 1;
        }
        let (me, ctx) = (self.clone(), ctx.clone());
        let queued = self.cache.spawn(Box::new(move || {
            if let Err(e) = me.chunk(&ctx, idx) {
                tracing::debug!("read-ahead of {} chunk {idx}: {e}", me.label);
            }
            lock(&me.ahead).loading -= 1;
        }));
        if !queued {
            lock(&self.ahead).loading -= 1;
        }
        queued
    }

    /// Fetches every chunk not yet on disk (or, with `headers_only`, those below the
    /// pin limit), in order (a streaming origin serves the whole file with one request).
    /// Returns the bytes fetched.
    ///
    /// # Errors
    /// The first fetch error.
    pub fn prefetch(self: &Arc<Self>, headers_only: bool) -> PluginResult<u64> {
        let cs = self.cache.chunk_size();
        let n = if headers_only { self.pin_below.div_ceil(cs).clamp(1, self.n_chunks()) } else { self.n_chunks() };
        let before = self.fetched.load(Ordering::Relaxed);
        let ctx = CallCtx::with_timeout(self.timeout);
        for i in 0..n {
            let have = lock(&self.hashes)[i as usize].is_some_and(|h| self.cache.store.has(&h));
            if !have {
                self.chunk(&ctx, i)?;
            }
        }
        Ok(self.fetched.load(Ordering::Relaxed) - before)
    }
}

impl Handle for CachedFile {
    fn len(&self) -> u64 {
        self.row.size
    }

    fn stat(&self) -> Stat {
        Stat {
            kind: musefs_plugin_api::EntryKind::FILE,
            size: self.row.size,
            mtime_ns: self.row.mtime_ns.into(),
            etag: self.row.etag.clone().map(Into::into).into(),
        }
    }

    fn read_at(&self, ctx: &CallCtx, offset: u64, buf: &mut [u8]) -> PluginResult<usize> {
        if offset >= self.row.size {
            return Ok(0);
        }
        let n = buf.len().min((self.row.size - offset) as usize);
        // Plans read through here; a plain (non-Arc) read: no read-ahead.
        let cs = self.cache.chunk_size();
        let idx = offset / cs;
        let data = self.chunk(ctx, idx)?;
        let within = (offset - idx * cs) as usize;
        let n = n.min(data.len() - within);
        buf[..n].copy_from_slice(&data[within..within + n]);
        Ok(n)
    }
}

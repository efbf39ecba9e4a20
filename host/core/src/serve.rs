//! The serving core: everything a mount does, testable without FUSE.
//!
//! `open` resolves a tree node to its catalog row, opens the original through its
//! origin plugin, checks the stamp (size, mtime, ETag) against the catalog, and asks the
//! format plugin for the layout plan once. `read` only splices the plan's segments:
//! literal bytes are copied, origin ranges are read with `read_at` into the reply
//! buffer. A plan whose size differs from the size announced in `getattr`, a changed or
//! vanished original, or a short read is an error (EIO at the FUSE edge), never wrong
//! bytes. For local origins the stamp is checked again after every read that touched the
//! original, so bytes of an original changed mid-read are not returned.
//!
//! In synthesis mode the served size is the plan's size: layouts are kept in a header
//! cache keyed by `(file id, generation)` with a byte budget (LRU), so `getattr` and
//! `open` do not ask the plugin again; the generation changes with every edit or rescan.
//! An open handle keeps the layout it opened with (a snapshot), so it never serves a mix
//! of an old header and a new layout. [`Core::refresh`] applies the catalog's change log
//! to the tree and returns what the kernel must forget.
//!
//! A writable core (`writable = true`) also takes writes: write sessions, scratch files
//! and the commit of a saved file into a catalog edit live in `serve::write` (see
//! [`Core::open_write`]); the read path only checks whether a handle belongs to one.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use abi_stable::std_types::{RSliceMut, RVec};
use musefs_plugin_api::{
    AudioProps, CallCtx, ErrorKind, FormatBox, HandleBox, OriginBox, OriginCaps, Picture, PlanMode, PlanRequest,
    SegmentKind, Stat, TrackInfo,
};

use crate::cache::{CachedFile, ChunkCache};
use crate::catalog::{Catalog, CatalogError, FileRow};
use crate::manifest::Mode;
use crate::metrics;
use crate::tree::load::SnapshotTarget;
use crate::tree::{AttrKind, Inval, NodeAttr, Tree};
use crate::util::{lock, read, write};

/// A picture a file serves (its `data` left empty) and its bytes, shared.
type HeldPicture = (Picture, Arc<[u8]>);

/// An error serving a request.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// No such inode or handle.
    #[error("no such file or directory")]
    NotFound,
    /// A directory where a file was expected.
    #[error("is a directory")]
    IsDir,
    /// The inode belongs to a generation an edit retired (`ESTALE`: the kernel looks the
    /// name up again and retries).
    #[error("stale inode (the file was edited)")]
    Stale,
    /// The original changed or vanished since the scan.
    #[error("{origin}:{path} changed since it was scanned ({what}); run `musefs scan` to pick it up")]
    Changed {
        /// The origin.
        origin: String,
        /// The path in the origin.
        path: String,
        /// What differs.
        what: String,
    },
    /// The origin or format plugin failed.
    #[error("{origin}:{path}: {source}")]
    Plugin {
        /// The origin.
        origin: String,
        /// The path in the origin.
        path: String,
        /// The plugin's error.
        source: musefs_plugin_api::PluginError,
    },
    /// The plan is inconsistent (a plugin bug): refusing to serve.
    #[error("{origin}:{path}: refusing to serve: {what}")]
    BadPlan {
        /// The origin.
        origin: String,
        /// The path in the origin.
        path: String,
        /// What is wrong.
        what: String,
    },
    /// The catalog failed.
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    /// The catalog lost the file (removed by a concurrent scan).
    #[error("file {0} is no longer in the catalog")]
    Gone(i64),
    /// A write on a read-only mount (`EROFS`).
    #[error("read-only mount (set `writable = true` to save tags through it)")]
    ReadOnly,
    /// Something a writable mount does not do (`EPERM`).
    #[error("{0}")]
    NotPermitted(String),
    /// The name is taken (`EEXIST`).
    #[error("file exists")]
    Exists,
    /// The state directory is full (`ENOSPC`).
    #[error("{0}")]
    NoSpace(String),
    /// A local I/O error (`EIO`).
    #[error("{0}")]
    Io(String),
    /// A save through the mount was refused: nothing was stored (`EPERM` when the audio
    /// changed, `EIO` when the saved file does not read).
    #[error("{origin}:{path}: {what}")]
    Refused {
        /// The origin.
        origin: String,
        /// The path in the origin.
        path: String,
        /// Why.
        what: String,
        /// Whether the audio changed.
        audio: bool,
    },
}

impl ServeError {
    /// The errno reported to the kernel.
    pub fn errno(&self) -> i32 {
        match self {
            Self::NotFound => libc::ENOENT,
            Self::IsDir => libc::EISDIR,
            Self::Stale => libc::ESTALE,
            Self::ReadOnly => libc::EROFS,
            Self::NotPermitted(_) | Self::Refused { audio: true, .. } => libc::EPERM,
            Self::Exists => libc::EEXIST,
            Self::NoSpace(_) => libc::ENOSPC,
            _ => libc::EIO,
        }
    }
}

impl metrics::Source for Core {
    fn snapshot(&self) -> metrics::Snapshot {
        let (files, bytes, nodes) = self.totals();
        let cache = self.cache.as_ref().map(|c| {
            let g = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
            let n = &c.counters;
            metrics::CacheSnapshot {
                mem_hits: g(&n.mem_hits),
                disk_hits: g(&n.disk_hits),
                fetched: g(&n.fetched),
                fetched_bytes: g(&n.fetched_bytes),
                prefetched: g(&n.prefetched),
                corrupt: g(&n.corrupt),
                evicted: g(&n.evicted),
                disk_bytes: c.store().total(),
            }
        });
        metrics::Snapshot { files, nodes, bytes, handles: self.open_handles() as u64, cache }
    }
}

/// Where an open file's original bytes come from.
#[derive(Clone)]
pub enum Source {
    /// The origin's own handle (local origins, or remote ones with the cache off).
    Direct(HandleBox),
    /// The chunk cache (remote origins): the origin is contacted only for missing chunks.
    Cached(Arc<CachedFile>),
}

impl Source {
    /// A handle for a format plugin's plan.
    fn ffi(&self) -> HandleBox {
        match self {
            Self::Direct(h) => h.clone(),
            Self::Cached(c) => musefs_plugin_api::handle_into_ffi(c.clone()),
        }
    }
}

/// The bytes of one read: owned, or a range of a cached chunk shared without a copy
/// (the FUSE reply is written straight from it).
#[derive(Debug)]
pub enum ReadData {
    /// Bytes assembled for this read.
    Owned(Vec<u8>),
    /// `range` of a verified chunk of the chunk cache.
    Shared(crate::cache::Chunk, std::ops::Range<usize>),
}

impl std::ops::Deref for ReadData {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match self {
            Self::Owned(v) => v,
            Self::Shared(chunk, range) => &chunk[range.clone()],
        }
    }
}

impl ReadData {
    /// The bytes as a vector (a copy for a shared chunk).
    pub fn into_vec(self) -> Vec<u8> {
        match self {
            Self::Owned(v) => v,
            Self::Shared(..) => self.to_vec(),
        }
    }
}

/// An open file: its handle on the original and its layout (a snapshot: an edit made
/// while the file is open does not change what this handle serves).
pub struct OpenFile {
    /// The inode.
    pub ino: u64,
    /// The catalog row (`None` for a cover sidecar).
    pub row: Option<FileRow>,
    /// The generation served.
    pub gen: i64,
    handle: Option<Source>,
    /// The context of this file's origin calls (one per open, not one per read).
    ctx: CallCtx,
    /// Re-check the original's stamp after each read (cheap: a local origin).
    recheck: bool,
    layout: Arc<Layout>,
    /// The served size.
    pub size: u64,
    /// The kernel may hold attributes of another generation for this inode (the tree
    /// changed and the invalidation has not been sent yet): the adapter must drop them
    /// before answering the open, or `fstat` disagrees with the bytes read.
    pub attrs_stale: bool,
    /// For kernel passthrough: a local path holding exactly the served bytes.
    pub direct_path: Option<String>,
    /// The write session this handle reads (and, if `writer`, writes): opened while
    /// the file was being written.
    pub(crate) session: Option<Arc<write::Session>>,
    /// Opened for writing.
    pub writer: bool,
}

impl OpenFile {
    /// Whether this handle reads an image being written (the kernel must not cache
    /// its pages: `FOPEN_DIRECT_IO`).
    pub fn in_session(&self) -> bool {
        self.session.is_some()
    }
}

/// Counters for tests, benchmarks and `stats`.
#[derive(Debug, Default)]
pub struct Counters {
    /// Files opened.
    pub opens: AtomicU64,
    /// Bytes served through the daemon.
    pub bytes_read: AtomicU64,
    /// Layouts computed by a format plugin.
    pub plans_built: AtomicU64,
    /// Layouts found in the header cache.
    pub plan_hits: AtomicU64,
    /// Catalog refreshes applied.
    pub refreshes: AtomicU64,
}

/// How the core serves.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Passthrough or synthesis.
    pub mode: Mode,
    /// The budget of one origin call.
    pub timeout: Duration,
    /// `[format.NAME]` options as JSON, by plugin name.
    pub format_options: HashMap<String, String>,
    /// Header cache budget in bytes.
    pub header_cache_bytes: u64,
    /// The tag keys the templates use (what a tree update needs).
    pub keys: Vec<String>,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            mode: Mode::Passthrough,
            timeout: Duration::from_secs(30),
            format_options: HashMap::new(),
            header_cache_bytes: 64 << 20,
            keys: Vec::new(),
        }
    }
}

/// The serving core.
pub struct Core {
    tree: RwLock<Tree>,
    catalog: Mutex<Catalog>,
    origins: HashMap<String, Arc<OriginBox>>,
    local_origins: HashMap<String, bool>,
    cache: Option<Arc<ChunkCache>>,
    formats: HashMap<String, FormatBox>,
    settings: Settings,
    plans: Mutex<PlanCache>,
    /// Bytes shared by layouts and covers (pictures, long runs of headers).
    shared: Mutex<SharedBytes>,
    /// Served sizes announced, by file id: `(generation, size)`.
    sizes: Mutex<HashMap<i64, (i64, u64)>>,
    /// Cover sidecar bytes by directory inode.
    covers: Mutex<HashMap<u64, Arc<[u8]>>>,
    last_change: AtomicI64,
    handles: RwLock<HashMap<u64, Arc<OpenFile>>>,
    next_fh: AtomicU64,
    /// Kernel invalidations owed: those of refreshes made by an open (not yet handed out)
    /// and the inodes whose attributes changed since the adapter last confirmed sending.
    pending: Mutex<Pending>,
    /// Counters.
    pub counters: Counters,
    /// Write sessions and scratch files (`None`: a read-only core).
    writes: Option<write::Writes>,
}

#[derive(Default)]
struct Pending {
    invals: Vec<Inval>,
    inodes: HashSet<u64>,
}

fn plan_mode(mode: Mode) -> PlanMode {
    match mode {
        Mode::Passthrough => PlanMode::PASSTHROUGH,
        Mode::Synthesis => PlanMode::SYNTHESIS,
    }
}

fn stamp_diffs(row: &FileRow, stat: &Stat) -> Vec<String> {
    let mut diffs = Vec::new();
    if stat.size != row.size {
        diffs.push(format!("size {} -> {}", row.size, stat.size));
    }
    if row.mtime_ns.is_some() && stat.mtime_ns.into_option() != row.mtime_ns {
        diffs.push("mtime differs".to_owned());
    }
    if row.etag.is_some() && stat.etag.as_ref().map(|e| e.to_string()).into_option() != row.etag {
        diffs.push("ETag differs".to_owned());
    }
    diffs
}

impl Core {
    /// A core over a tree at change-log `position` (changes after it are applied by
    /// [`Core::refresh`]), the catalog it came from, and the plugins' objects.
    pub fn new(
        tree: Tree,
        position: i64,
        catalog: Catalog,
        origins: HashMap<String, OriginBox>,
        formats: HashMap<String, FormatBox>,
        settings: Settings,
    ) -> Self {
        let local_origins = origins.iter().map(|(k, o)| (k.clone(), o.caps().contains(OriginCaps::LOCAL))).collect();
        let origins = origins.into_iter().map(|(k, o)| (k, Arc::new(o))).collect();
        let budget = usize::try_from(settings.header_cache_bytes).unwrap_or(usize::MAX);
        Self {
            tree: RwLock::new(tree),
            catalog: Mutex::new(catalog),
            origins,
            local_origins,
            cache: None,
            formats,
            settings,
            plans: Mutex::new(PlanCache::new(budget)),
            shared: Mutex::new(SharedBytes::default()),
            sizes: Mutex::new(HashMap::new()),
            covers: Mutex::new(HashMap::new()),
            last_change: AtomicI64::new(position),
            handles: RwLock::new(HashMap::new()),
            next_fh: AtomicU64::new(1),
            pending: Mutex::new(Pending::default()),
            counters: Counters::default(),
            writes: None,
        }
    }

    /// Serves remote origins (those not declaring themselves local) through `cache`.
    #[must_use]
    pub fn with_cache(mut self, cache: Arc<ChunkCache>) -> Self {
        self.cache = Some(cache);
        self
    }

    /// The chunk cache, if remote origins are cached.
    pub fn cache(&self) -> Option<&Arc<ChunkCache>> {
        self.cache.as_ref()
    }

    /// Runs `f` on the current tree.
    pub fn with_tree<R>(&self, f: impl FnOnce(&Tree) -> R) -> R {
        f(&read(&self.tree))
    }

    /// Filesystem facts for `statfs`: the files served, the sum of their originals'
    /// sizes, and the nodes (files, directories, cover sidecars) in the tree.
    pub fn totals(&self) -> (u64, u64, u64) {
        let t = read(&self.tree);
        let (files, bytes) = t.totals();
        (files, bytes, t.len() as u64)
    }

    /// `ORIGIN:PATH` of the original a file inode serves (`None` for directories,
    /// covers and unknown inodes); non-UTF-8 paths as their escaped form.
    pub fn origin_of(&self, ino: u64) -> Option<String> {
        let file_id = match self.node(ino)?.kind {
            AttrKind::File { file_id, .. } => file_id,
            _ => return None,
        };
        let row = lock(&self.catalog).file(file_id).ok()??;
        Some(format!("{}:{}", row.origin, row.path))
    }

    /// The serving mode.
    pub fn mode(&self) -> Mode {
        self.settings.mode
    }

    /// A node's attributes by inode, with the size it serves. A file inode an edit
    /// retired from the tree answers while handles are open on it, as they serve it.
    pub fn node(&self, ino: u64) -> Option<NodeAttr> {
        if write::is_scratch_ino(ino) {
            return self.scratch_attr(ino);
        }
        if let Some(session) = self.session_of(ino) {
            // Being written: the image's size now.
            let mut attr = self.with_tree(|t| t.get(ino).map(|n| t.attr(n)))?;
            if let AttrKind::File { size, .. } = &mut attr.kind {
                *size = session.size();
            }
            return Some(attr);
        }
        // The tree's lock is let go before sizing: sizing takes the catalog's, and a
        // refresh takes the catalog's, then the tree's (holding both the other way round
        // deadlocked a getattr against a refresh).
        let attr = self.with_tree(|t| t.get(ino).map(|n| t.attr(n)));
        let Some(attr) = attr else {
            let fh = read(&self.handles).iter().find(|(_, f)| f.ino == ino).map(|(fh, _)| *fh)?;
            return self.handle_attr(fh);
        };
        Some(self.sized(attr))
    }

    /// The attributes of the child `name` of `parent`.
    pub fn lookup(&self, parent: u64, name: &str) -> Option<NodeAttr> {
        self.lookup_exact(parent, name).map(|(a, _)| a)
    }

    /// [`lookup`](Self::lookup), and whether `name` is the entry's own name (in
    /// case-insensitive mode another spelling finds it too; the kernel must not keep
    /// such an alias, or a rename would leave it behind).
    pub fn lookup_exact(&self, parent: u64, name: &str) -> Option<(NodeAttr, bool)> {
        let tree = read(&self.tree);
        let Some(node) = tree.lookup(parent, name) else {
            drop(tree);
            return self.scratch_lookup(parent, name).map(|a| (a, true));
        };
        let (attr, exact) = (tree.attr(node), node.name == name);
        let ino = node.public_ino();
        drop(tree);
        if self.session_of(ino).is_some() {
            return self.node(ino).map(|a| (a, exact));
        }
        Some((self.sized(attr), exact))
    }

    /// Fills in the served size: the plan's size in synthesis mode, the cover's size for
    /// a sidecar. On failure the original's size is announced (and the failure logged):
    /// opening the file then fails the same way.
    fn sized(&self, mut attr: NodeAttr) -> NodeAttr {
        match &mut attr.kind {
            AttrKind::File { file_id, size, gen, .. } if self.settings.mode == Mode::Synthesis => {
                match self.served_size(*file_id, *gen) {
                    Ok(n) => *size = n,
                    Err(e) => {
                        tracing::debug!(
                            "size of file {file_id}: {e} (announcing the original size for now; open reports the error)"
                        );
                        // Not to be cached by the kernel: the next open drops it.
                        lock(&self.pending).inodes.insert(attr.ino);
                    }
                }
            }
            AttrKind::File { .. } => {}
            AttrKind::Cover { dir, size } => *size = self.cover(*dir).map_or(0, |c| c.len() as u64),
            AttrKind::Dir { .. } => {}
        }
        attr
    }

    fn served_size(&self, file_id: i64, gen: i64) -> Result<u64, ServeError> {
        if let Some(&(g, n)) = lock(&self.sizes).get(&file_id) {
            if g >= gen {
                return Ok(n);
            }
        }
        let row = lock(&self.catalog).file(file_id)?.ok_or(ServeError::Gone(file_id))?;
        let (handle, stat) = self.open_origin(&row)?;
        let layout = self.layout(&row, &handle, &stat)?;
        Ok(layout.size)
    }

    /// The pictures file `id` serves, each with its bytes from the shared pictures (read
    /// from the catalog only when nothing holds them yet).
    fn picture_refs(&self, id: i64) -> Result<Vec<HeldPicture>, ServeError> {
        // A picture can leave the catalog between the list and its bytes (an edit or a
        // rescan in another process): then the list is read again.
        for _ in 0..3 {
            let refs = lock(&self.catalog).effective_picture_refs(id)?;
            let n = refs.len();
            let mut out = Vec::with_capacity(n);
            for r in refs {
                let held = lock(&self.shared).get(&r.hash);
                let bytes = match held {
                    Some(b) => b,
                    None => match lock(&self.catalog).picture_data(&r.hash)? {
                        Some(data) => lock(&self.shared).insert(r.hash, || data),
                        None => break,
                    },
                };
                out.push((r.picture, bytes));
            }
            if out.len() == n {
                return Ok(out);
            }
        }
        Err(ServeError::Io(format!("the pictures of file {id} kept changing while they were read")))
    }

    /// The cover bytes of directory `dir` (its first file with a front cover, else with any picture).
    fn cover(&self, dir: u64) -> Option<Arc<[u8]>> {
        if let Some(c) = lock(&self.covers).get(&dir) {
            return Some(c.clone());
        }
        let sources = self.with_tree(|t| t.cover_sources(dir));
        let mut fallback = None;
        for id in sources {
            let pics = match self.picture_refs(id) {
                Ok(p) => p,
                Err(e) => {
                    tracing::warn!("cover of directory {dir}: {e}");
                    continue;
                }
            };
            if let Some((_, b)) = pics.iter().find(|(p, _)| p.picture_type == 3) {
                fallback = Some(b.clone());
                break;
            }
            if fallback.is_none() {
                fallback = pics.first().map(|(_, b)| b.clone());
            }
        }
        let bytes = fallback?;
        lock(&self.covers).insert(dir, bytes.clone());
        Some(bytes)
    }

    /// [`readdir_from`](Self::readdir_from) with the attributes a `stat` would answer
    /// (`READDIRPLUS`), as far as they are known without planning: `add(index,
    /// attributes, name, certain)`; `certain` is false for a synthesized file whose size
    /// is not known yet (the original's is given: the kernel must not keep it). At most
    /// `max` entries are offered (the kernel's buffer holds about a thousand).
    ///
    /// # Errors
    /// As for `readdir_from`.
    pub fn readdir_plus_from(
        &self,
        ino: u64,
        offset: u64,
        max: usize,
        mut add: impl FnMut(u64, NodeAttr, &str, bool) -> bool,
    ) -> Result<(), ServeError> {
        let mut entries = Vec::new();
        self.readdir_from(ino, offset, |i, a, name| {
            entries.push((i, a, name.to_owned()));
            entries.len() >= max
        })?;
        for (i, mut a, name) in entries {
            // Scratch files and files being written change under way; a change not sent
            // to the kernel yet is uncertain too.
            let session = self.session_of(a.ino);
            let mut certain = !write::is_scratch_ino(a.ino) && session.is_none() && !self.attrs_uncertain(a.ino);
            match (&mut a.kind, session) {
                (AttrKind::File { size, .. }, Some(s)) => *size = s.size(),
                (AttrKind::File { file_id, size, gen, .. }, None) if self.settings.mode == Mode::Synthesis => {
                    match lock(&self.sizes).get(file_id) {
                        Some(&(g, n)) if g >= *gen => *size = n,
                        _ => certain = false,
                    }
                }
                (AttrKind::Cover { dir, size }, _) => *size = self.cover(*dir).map_or(0, |c| c.len() as u64),
                (AttrKind::File { .. } | AttrKind::Dir { .. }, _) => {}
            }
            if add(i, a, &name, certain) {
                break;
            }
        }
        Ok(())
    }

    /// Calls `add(index, attributes, name)` for the entries of directory `ino` from index
    /// `offset` on (`.` is 0, `..` is 1, then the children in name order) until `add`
    /// returns `true` (the kernel's buffer is full). Sizes are not filled in (readdir
    /// does not report them). Nothing is copied but what `add` copies.
    ///
    /// # Errors
    /// [`ServeError::NotFound`] if `ino` is not a directory.
    pub fn readdir_from(
        &self,
        ino: u64,
        offset: u64,
        mut add: impl FnMut(u64, NodeAttr, &str) -> bool,
    ) -> Result<(), ServeError> {
        let tree = read(&self.tree);
        let dir = tree.get(ino).map(|n| tree.attr(n)).ok_or(ServeError::NotFound)?;
        if !dir.kind.is_dir() {
            return Err(ServeError::NotFound);
        }
        let dot = |i| NodeAttr { ino: if i == 0 { dir.ino } else { dir.parent }, ..dir };
        for i in offset..2 {
            if add(i, dot(i), if i == 0 { "." } else { ".." }) {
                return Ok(());
            }
        }
        let children = tree.children(ino);
        let n = children.len() as u64;
        for (i, n) in (2u64..).zip(children).skip(offset.saturating_sub(2) as usize) {
            if add(i, tree.attr(n), &n.name) {
                return Ok(());
            }
        }
        drop(tree);
        // Scratch files (a writable mount) after the tree's entries.
        if self.writes.is_some() {
            let skip = offset.saturating_sub(2 + n) as usize;
            for (i, (a, name)) in (2 + n..).zip(self.scratch_children(ino)).skip(skip) {
                if add(i, a, &name) {
                    break;
                }
            }
        }
        Ok(())
    }

    /// The entries of directory `ino` (its own attributes and its children's), in name
    /// order; [`Core::readdir_from`] is the kernel's paged form.
    ///
    /// # Errors
    /// [`ServeError::NotFound`] if `ino` is not a directory.
    pub fn readdir(&self, ino: u64) -> Result<(NodeAttr, Vec<(NodeAttr, String)>), ServeError> {
        let tree = read(&self.tree);
        let dir = tree.get(ino).map(|n| tree.attr(n)).ok_or(ServeError::NotFound)?;
        if !dir.kind.is_dir() {
            return Err(ServeError::NotFound);
        }
        let mut entries: Vec<(NodeAttr, String)> =
            tree.children(ino).into_iter().map(|n| (tree.attr(n), n.name.clone())).collect();
        drop(tree);
        entries.extend(self.scratch_children(ino));
        Ok((dir, entries))
    }

    fn ctx(&self) -> CallCtx {
        CallCtx::with_timeout(self.settings.timeout)
    }

    fn plugin_err(row: &FileRow) -> impl Fn(musefs_plugin_api::PluginError) -> ServeError + '_ {
        move |source| ServeError::Plugin { origin: row.origin.clone(), path: row.path.clone(), source }
    }

    /// Opens the original of `row` and checks its stamp against the catalog. A remote
    /// origin served through the chunk cache is not contacted here: its stamp is checked
    /// when a missing chunk is first fetched, so cached files open with the origin down.
    fn open_origin(&self, row: &FileRow) -> Result<(Source, Stat), ServeError> {
        let origin = self.origins.get(&row.origin).ok_or_else(|| ServeError::BadPlan {
            origin: row.origin.clone(),
            path: row.path.clone(),
            what: "its origin is not in the manifest any more".into(),
        })?;
        let local = self.local_origins.get(&row.origin).copied().unwrap_or(false);
        if let (Some(cache), false) = (&self.cache, local) {
            let pin_below = if cache.store().settings.pin_headers { row.audio_offset.max(1) } else { 0 };
            let file =
                cache.file(row, origin.clone(), pin_below, self.settings.timeout).map_err(|e| ServeError::Plugin {
                    origin: row.origin.clone(),
                    path: row.path.clone(),
                    source: musefs_plugin_api::PluginError::new(ErrorKind::IO, e.to_string()),
                })?;
            let stat = musefs_plugin_api::Handle::stat(&*file);
            return Ok((Source::Cached(file), stat));
        }
        let handle = origin.open(&self.ctx(), row.path.as_str().into()).into_result().map_err(|e| {
            if e.kind == ErrorKind::NOT_FOUND {
                ServeError::Changed { origin: row.origin.clone(), path: row.path.clone(), what: "it is gone".into() }
            } else {
                Self::plugin_err(row)(e)
            }
        })?;
        let stat = handle.stat();
        let diffs = stamp_diffs(row, &stat);
        if !diffs.is_empty() {
            return Err(ServeError::Changed {
                origin: row.origin.clone(),
                path: row.path.clone(),
                what: diffs.join(", "),
            });
        }
        Ok((Source::Direct(handle), stat))
    }

    /// The layout of `row` (from the header cache, or planned by its format plugin).
    fn layout(&self, row: &FileRow, source: &Source, stat: &Stat) -> Result<Arc<Layout>, ServeError> {
        let key = (row.id, row.gen);
        if let Some(l) = lock(&self.plans).get(key) {
            self.counters.plan_hits.fetch_add(1, Ordering::Relaxed);
            metrics::global().header_cache(true);
            return Ok(l);
        }
        metrics::global().header_cache(false);
        let bad = |what: String| ServeError::BadPlan { origin: row.origin.clone(), path: row.path.clone(), what };
        if row.is_sidecar() {
            // A sidecar is served as it is, in every mode.
            let layout = Arc::new(Layout::original(stat.size));
            lock(&self.plans).put(key, layout.clone());
            return Ok(layout);
        }
        let format = self
            .formats
            .get(&row.plugin)
            .ok_or_else(|| bad(format!("format plugin `{}` is not loaded", row.plugin)))?;
        let mode = plan_mode(self.settings.mode);
        let (info, tags, pictures) = if mode == PlanMode::SYNTHESIS {
            let (info, tags) = {
                let catalog = lock(&self.catalog);
                let info = catalog.track_info(row.id)?.ok_or(ServeError::Gone(row.id))?;
                (info, catalog.effective_tags(row.id)?)
            };
            (info, tags, self.picture_refs(row.id)?)
        } else {
            let info = TrackInfo {
                format: "".into(),
                extension: row.extension.as_str().into(),
                tags: RVec::new(),
                pictures: RVec::new(),
                props: AudioProps::default(),
                audio_offset: 0,
                audio_len: row.size,
                regions: RVec::new(),
                extra: RVec::new(),
            };
            (info, Vec::new(), Vec::new())
        };
        let shared: Vec<Arc<[u8]>> = pictures.iter().map(|(_, b)| b.clone()).collect();
        let req = PlanRequest {
            mode,
            info,
            tags: tags.into(),
            pictures: pictures.into_iter().map(|(p, b)| Picture { data: b.to_vec().into(), ..p }).collect(),
            options: self.settings.format_options.get(&row.plugin).map_or("{}", String::as_str).into(),
            extra: RVec::new(),
        };
        let plan = format.plan(&self.ctx(), &source.ffi(), &req).into_result().map_err(Self::plugin_err(row))?;
        drop(req);
        self.counters.plans_built.fetch_add(1, Ordering::Relaxed);
        let mut pieces = Vec::with_capacity(plan.segments.len());
        let mut at = 0u64;
        for s in plan.segments.into_iter() {
            match s.kind {
                SegmentKind::LITERAL if s.bytes.len() as u64 == s.len => {
                    share_pictures(s.bytes.into_vec(), &shared, &mut pieces);
                }
                SegmentKind::ORIGIN if s.offset.checked_add(s.len).is_some_and(|end| end <= stat.size) => {
                    pieces.push(Piece::Origin { offset: s.offset, len: s.len });
                }
                k => return Err(bad(format!("plan segment {k:?} at {at} is inconsistent"))),
            }
            at = at.checked_add(s.len).ok_or_else(|| bad("plan size overflows".into()))?;
        }
        let unchanged = matches!(pieces.as_slice(),
            [Piece::Origin { offset: 0, len }] if *len == stat.size && *len > 0);
        let pieces = share_runs(pieces, &self.shared);
        let layout = Arc::new(Layout::new(pieces).with_unchanged(unchanged));
        {
            let mut sizes = lock(&self.sizes);
            match sizes.get(&row.id) {
                Some(&(g, n)) if g == row.gen && n != at => {
                    return Err(bad(format!(
                        "the plan is {at} bytes but {n} were announced (a nondeterministic plugin?)"
                    )));
                }
                _ => {
                    sizes.insert(row.id, (row.gen, at));
                }
            }
        }
        lock(&self.plans).put(key, layout.clone());
        Ok(layout)
    }

    /// Opens a file: original opened and stamp-checked, layout computed (or taken from
    /// the header cache).
    ///
    /// # Errors
    /// [`ServeError`]; every error is also logged once with the file's name.
    pub fn open(&self, ino: u64) -> Result<(u64, Arc<OpenFile>), ServeError> {
        // Opened while being written: the handle reads the written image.
        if let Some(opened) = self.open_session_reader(ino) {
            return Ok(opened);
        }
        if write::is_scratch_ino(ino) {
            // A scratch file renamed over a served file: the file.
            let file = self.alias_of(ino).ok_or(ServeError::NotFound)?;
            return self.open(file);
        }
        self.open_plain(ino)
    }

    /// [`open`](Self::open), whatever write session there is: the image served.
    fn open_plain(&self, ino: u64) -> Result<(u64, Arc<OpenFile>), ServeError> {
        let node = self.with_tree(|t| {
            t.get(ino).map(|n| n.attr()).ok_or(if t.retired(ino) { ServeError::Stale } else { ServeError::NotFound })
        })?;
        let file = match node.kind {
            AttrKind::Dir { .. } => return Err(ServeError::IsDir),
            AttrKind::Cover { dir, .. } => {
                let bytes = self.cover(dir).ok_or(ServeError::NotFound)?;
                let size = bytes.len() as u64;
                let layout = Arc::new(Layout::new([Piece::Shared(bytes)]));
                OpenFile {
                    ino,
                    row: None,
                    gen: 0,
                    handle: None,
                    ctx: self.ctx(),
                    recheck: false,
                    layout,
                    size,
                    attrs_stale: false,
                    direct_path: None,
                    session: None,
                    writer: false,
                }
            }
            AttrKind::File { file_id, gen, .. } => {
                let row = lock(&self.catalog).file(file_id)?.ok_or(ServeError::Gone(file_id))?;
                if row.gen != gen {
                    // Edited since the tree last moved: this inode is of the generation
                    // before, whose bytes are gone. Bring the tree to the catalog now (the
                    // invalidations go out with the mount loop's next pass) and answer
                    // ESTALE: the kernel looks the name up again (the new inode) and
                    // retries the open once.
                    let inval = self.refresh_tree()?;
                    lock(&self.pending).invals.extend(inval);
                    return Err(ServeError::Stale);
                }
                let what = format!("{}:{}", row.origin, row.path);
                let res = self.open_row(ino, row);
                if let Err(e) = &res {
                    tracing::warn!("open {what}: {e}");
                }
                res?
            }
        };
        let file = Arc::new(file);
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        write(&self.handles).insert(fh, file.clone());
        self.counters.opens.fetch_add(1, Ordering::Relaxed);
        metrics::global().opened(self.served(&file));
        Ok((fh, file))
    }

    fn open_row(&self, ino: u64, row: FileRow) -> Result<OpenFile, ServeError> {
        let (handle, stat) = self.open_origin(&row)?;
        let layout = self.layout(&row, &handle, &stat)?;
        let direct_path = match &handle {
            Source::Direct(h) if layout.unchanged => h.local_path().into_option().map(|p| p.into_string()),
            _ => None,
        };
        let recheck = self.local_origins.get(&row.origin).copied().unwrap_or(false);
        Ok(OpenFile {
            ino,
            gen: row.gen,
            row: Some(row),
            handle: Some(handle),
            ctx: self.ctx(),
            recheck,
            size: layout.size,
            attrs_stale: {
                // Stale: a tree change the kernel has not been told of yet, or a size
                // announced before the layout was known (which it is now).
                let mut p = lock(&self.pending);
                let stale = p.inodes.contains(&ino);
                if stale && !p.invals.contains(&Inval::Inode(ino)) {
                    p.inodes.remove(&ino);
                }
                stale
            },
            layout,
            direct_path,
            session: None,
            writer: false,
        })
    }

    /// The open file behind `fh`.
    pub fn handle(&self, fh: u64) -> Option<Arc<OpenFile>> {
        read(&self.handles).get(&fh).cloned()
    }

    /// The attributes of the file behind handle `fh` as that handle serves it (its
    /// size; its inode, which an edit may have retired from the tree since).
    pub fn handle_attr(&self, fh: u64) -> Option<NodeAttr> {
        let file = self.handle(fh)?;
        if file.session.is_some() {
            // An image being written: its size now.
            return self.node(file.ino);
        }
        let row = file.row.as_ref()?;
        let parent = self.with_tree(|t| t.get(file.ino).map(|n| n.parent)).unwrap_or(crate::tree::ROOT);
        let mtime_ns = row.mtime_ns.unwrap_or(0).max(row.edited_ns);
        Some(NodeAttr {
            ino: file.ino,
            parent,
            kind: AttrKind::File { file_id: row.id, size: file.size, mtime_ns, gen: file.gen },
            mtime_ns,
        })
    }

    /// Whether `ino` is a file inode an edit retired (`ESTALE` rather than `ENOENT`).
    pub fn is_retired(&self, ino: u64) -> bool {
        self.with_tree(|t| t.retired(ino))
    }

    /// Whether another open handle of `ino` serves a different generation.
    pub fn mixed_generations(&self, ino: u64, gen: i64) -> bool {
        read(&self.handles).values().any(|f| f.ino == ino && f.gen != gen)
    }

    /// Reads up to `size` bytes at `offset` (fewer only at the end of the file).
    ///
    /// # Errors
    /// [`ServeError`] if the handle is unknown or the origin fails or comes up short.
    pub fn read(&self, fh: u64, offset: u64, size: u32) -> Result<ReadData, ServeError> {
        let file = self.handle(fh).ok_or(ServeError::NotFound)?;
        let out = self.read_file(&file, offset, size);
        metrics::global().read(self.served(&file), out.as_ref().ok().map(|d| d.len()));
        let out = out?;
        self.counters.bytes_read.fetch_add(out.len() as u64, Ordering::Relaxed);
        Ok(out)
    }

    /// What `file` serves, for the metrics.
    fn served(&self, file: &OpenFile) -> metrics::Served {
        match (file.row.is_some(), self.settings.mode) {
            (false, _) => metrics::Served::Cover,
            (true, Mode::Passthrough) => metrics::Served::Passthrough,
            (true, Mode::Synthesis) => metrics::Served::Synthesis,
        }
    }

    /// [`read`](Self::read) on an [`OpenFile`].
    ///
    /// # Errors
    /// As for `read`; also [`ServeError::Changed`] when the original changed (checked
    /// after reading, so bytes of a changed original are never returned).
    pub fn read_file(&self, file: &OpenFile, offset: u64, size: u32) -> Result<ReadData, ServeError> {
        if let Some(session) = &file.session {
            return Self::read_session(session, offset, size);
        }
        if offset >= file.size {
            return Ok(ReadData::Owned(Vec::new()));
        }
        let end = (offset + u64::from(size)).min(file.size);
        if let Some(shared) = Self::read_shared(file, offset, end)? {
            return Ok(shared);
        }
        let mut out = vec![0u8; (end - offset) as usize];
        let touched_origin = Self::splice_into(file, offset, &mut out)?;
        if touched_origin && file.recheck {
            self.recheck(file)?;
        }
        Ok(ReadData::Owned(out))
    }

    /// The hot path of a cached file: a read inside one origin segment and one chunk is
    /// answered with the chunk itself, not a copy of it.
    fn read_shared(file: &OpenFile, offset: u64, end: u64) -> Result<Option<ReadData>, ServeError> {
        let (Some(Source::Cached(c)), Some(row), false) = (&file.handle, &file.row, file.recheck) else {
            return Ok(None);
        };
        let segments = &file.layout.segments;
        let i = segments.partition_point(|(start, s)| start + s.len() <= offset);
        let Some(&(start, Piece::Origin { offset: from, len })) = segments.get(i) else { return Ok(None) };
        if end > start + len {
            return Ok(None);
        }
        let res = c.read_shared(&file.ctx, from + (offset - start), (end - offset) as usize);
        match res {
            Ok(shared) => Ok(shared.map(|(chunk, range)| ReadData::Shared(chunk, range))),
            Err(e) => {
                let e = Self::plugin_err(row)(e);
                tracing::warn!("read: {e}");
                Err(e)
            }
        }
    }

    fn recheck(&self, file: &OpenFile) -> Result<(), ServeError> {
        let Some(row) = &file.row else { return Ok(()) };
        let Some(origin) = self.origins.get(&row.origin) else { return Ok(()) };
        let diffs = match origin.stat(&file.ctx, row.path.as_str().into()).into_result() {
            Ok(stat) => stamp_diffs(row, &stat),
            Err(e) if e.kind == ErrorKind::NOT_FOUND => vec!["it is gone".to_owned()],
            Err(e) => return Err(Self::plugin_err(row)(e)),
        };
        if diffs.is_empty() {
            return Ok(());
        }
        let e = ServeError::Changed { origin: row.origin.clone(), path: row.path.clone(), what: diffs.join(", ") };
        tracing::warn!("read: {e}");
        Err(e)
    }

    fn read_origin(file: &OpenFile, mut pos: u64, mut dst: &mut [u8]) -> Result<(), ServeError> {
        let (Some(source), Some(row)) = (&file.handle, &file.row) else {
            return Err(ServeError::NotFound);
        };
        let handle = match source {
            Source::Cached(c) => {
                return c.read_into(&file.ctx, pos, dst).map_err(|e| {
                    let e = Self::plugin_err(row)(e);
                    tracing::warn!("read: {e}");
                    e
                });
            }
            Source::Direct(h) => h,
        };
        while !dst.is_empty() {
            let n = handle
                .read_at(&file.ctx, pos, RSliceMut::from_mut_slice(dst))
                .into_result()
                .map_err(Self::plugin_err(row))?;
            if n == 0 {
                let e = ServeError::Changed {
                    origin: row.origin.clone(),
                    path: row.path.clone(),
                    what: format!("it ends before byte {pos}"),
                };
                tracing::warn!("read: {e}");
                return Err(e);
            }
            pos += n as u64;
            dst = &mut dst[n..];
        }
        Ok(())
    }

    /// Fills `buf` with the bytes of `file`'s image at `offset` (literal bytes copied,
    /// origin ranges read into it); returns whether the original was read. No stamp
    /// re-check (the caller's).
    fn splice_into(file: &OpenFile, offset: u64, buf: &mut [u8]) -> Result<bool, ServeError> {
        let end = offset + buf.len() as u64;
        if end > file.size {
            return Err(ServeError::Io(format!("read past the end of the image ({end} > {})", file.size)));
        }
        let segments = &file.layout.segments;
        // The first segment that ends after `offset`.
        let first = segments.partition_point(|(start, s)| start + s.len() <= offset);
        let mut touched_origin = false;
        for (start, piece) in &segments[first..] {
            if *start >= end {
                break;
            }
            let from = offset.max(*start);
            let to = end.min(start + piece.len());
            let dst = &mut buf[(from - offset) as usize..(to - offset) as usize];
            let within = from - start;
            let bytes: &[u8] = match piece {
                Piece::Origin { offset, .. } => {
                    touched_origin = true;
                    Self::read_origin(file, offset + within, dst)?;
                    continue;
                }
                Piece::Literal(b) => b,
                Piece::Shared(b) => b,
            };
            dst.copy_from_slice(&bytes[within as usize..within as usize + dst.len()]);
        }
        Ok(touched_origin)
    }

    /// Forgets a handle (the last writer of a file being written commits it).
    pub fn release(&self, fh: u64) {
        let file = write(&self.handles).remove(&fh);
        if let Some(file) = file {
            self.release_session(&file);
        }
    }

    /// Number of open handles.
    pub fn open_handles(&self) -> usize {
        read(&self.handles).len()
    }

    /// The change-log position the tree reflects.
    pub fn position(&self) -> i64 {
        self.last_change.load(Ordering::Relaxed)
    }

    /// Saves the tree as `target`'s snapshot; returns the position saved.
    ///
    /// # Errors
    /// Snapshot write errors.
    pub fn save_snapshot(&self, target: &SnapshotTarget) -> Result<i64, crate::tree::snapshot::SnapshotError> {
        // The catalog lock keeps a refresh from moving the tree between the two reads.
        let (bytes, position) = {
            let _catalog = lock(&self.catalog);
            let position = self.position();
            let tree = read(&self.tree);
            (tree.to_snapshot(&target.catalog_id, &target.key, position), position)
        };
        crate::tree::snapshot::write(&target.path, &bytes)?;
        Ok(position)
    }

    /// Applies the catalog's changes since the last refresh to the tree, incrementally,
    /// and returns the kernel cache entries made stale. A change log with a gap (pruned
    /// while this mount lagged) rebuilds the tree.
    ///
    /// # Errors
    /// Catalog errors (the tree is left as it was).
    pub fn refresh(&self) -> Result<Vec<Inval>, ServeError> {
        let mut inval = std::mem::take(&mut lock(&self.pending).invals);
        inval.extend(self.refresh_tree()?);
        Ok(inval)
    }

    /// Whether the kernel must not keep `ino`'s attributes: a change of it has not been
    /// sent yet, or its size was announced before its layout was known.
    pub fn attrs_uncertain(&self, ino: u64) -> bool {
        lock(&self.pending).inodes.contains(&ino)
    }

    /// Whether an open refreshed the tree and its invalidations wait for
    /// [`refresh`](Self::refresh).
    pub fn has_pending(&self) -> bool {
        !lock(&self.pending).invals.is_empty()
    }

    /// The adapter confirms that `inval` reached the kernel: opens of those inodes no
    /// longer report stale attributes.
    pub fn invalidated(&self, inval: &[Inval]) {
        let mut p = lock(&self.pending);
        for i in inval {
            if let Inval::Inode(ino) = i {
                p.inodes.remove(ino);
            }
        }
    }

    fn refresh_tree(&self) -> Result<Vec<Inval>, ServeError> {
        let after = self.last_change.load(Ordering::Relaxed);
        let catalog = lock(&self.catalog);
        let changes = catalog.changes_since(after)?;
        if changes.files.is_empty() && !changes.gap {
            self.last_change.store(changes.last, Ordering::Relaxed);
            return Ok(Vec::new());
        }
        let mut inval = Vec::new();
        if changes.gap {
            tracing::info!("the catalog's change log was pruned past this mount's position: rebuilding the tree");
            let files = catalog.tree_files(&self.settings.keys)?;
            let mut tree = write(&self.tree);
            let rebuilt = tree.rebuild(&files);
            // Every node, old and new, is suspect: directories' cached listings and
            // files' attributes (sizes of edited files).
            let mut all = tree.inodes();
            all.extend(rebuilt.inodes());
            all.sort_unstable();
            all.dedup();
            *tree = rebuilt;
            lock(&self.pending).inodes.extend(all.iter().copied());
            inval.extend(all.into_iter().map(Inval::Inode));
        } else {
            let mut updates = Vec::with_capacity(changes.files.len());
            for id in &changes.files {
                updates.push((*id, catalog.tree_file(*id, &self.settings.keys)?));
            }
            // The origin folders whose sidecars may move: those of the changed files,
            // and those of the sidecars shown beside them now.
            let near: Vec<i64> = {
                let tree = read(&self.tree);
                changes.files.iter().flat_map(|id| tree.sidecars_near(*id)).collect()
            };
            let mut folders: std::collections::BTreeSet<(String, String)> = updates
                .iter()
                .filter_map(|(_, f)| f.as_ref())
                .map(|f| (f.file.origin.clone(), crate::catalog::parent_dir(&f.file.path).to_owned()))
                .collect();
            for id in near {
                if let Some(row) = catalog.file(id)? {
                    folders.insert((row.origin.clone(), crate::catalog::parent_dir(&row.path).to_owned()));
                }
            }
            let mut folder_files = Vec::new();
            for (origin, dir) in &folders {
                let files = catalog.tree_files_in_dir(origin, dir, &self.settings.keys)?;
                if files.iter().any(|f| f.file.is_sidecar()) {
                    folder_files.push(files);
                }
            }
            let mut tree = write(&self.tree);
            for (id, f) in &updates {
                inval.extend(match f {
                    Some(f) => tree.upsert_file(f),
                    None => tree.remove_file(*id),
                });
            }
            for files in &folder_files {
                inval.extend(tree.update_folder(files));
            }
            // Recorded before the tree lock goes: no open sees the new tree without
            // knowing the kernel's attributes may be older.
            let mut p = lock(&self.pending);
            p.inodes.extend(inval.iter().filter_map(|i| if let Inval::Inode(n) = i { Some(*n) } else { None }));
        }
        drop(catalog);
        {
            let mut plans = lock(&self.plans);
            let mut sizes = lock(&self.sizes);
            for id in &changes.files {
                plans.forget(*id);
                sizes.remove(id);
            }
        }
        lock(&self.covers).clear();
        self.last_change.store(changes.last, Ordering::Relaxed);
        self.counters.refreshes.fetch_add(1, Ordering::Relaxed);
        tracing::debug!("refreshed {} changed file(s)", changes.files.len());
        Ok(inval)
    }
}

mod layout;
mod write;

use layout::{share_pictures, share_runs, PlanCache, SharedBytes};
pub use layout::{Layout, Piece};
pub use write::is_scratch_ino;

#[cfg(test)]
mod tests;

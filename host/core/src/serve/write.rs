//! Saving through the mount (`writable = true`): what a tag editor writes becomes a
//! catalog edit; no original is ever opened for writing.
//!
//! Opening a served file for writing starts a *write session* on its inode: an
//! [`Overlay`] of the served image whose written extents live in a scratch file under
//! `state_dir/writes/`. Every handle opened while the session lasts (readers included)
//! reads the written image; handles opened before keep the image they opened (a reader
//! streaming the file sees the old version or the new one, never a mix).
//!
//! When the last writer closes (`flush`), on `fsync`, and when a scratch file is renamed
//! over a served file (the temp-file-and-rename save), the image is *committed*: the
//! file's own format plugin reads it, its audio range must hold exactly the original's
//! audio bytes (no comparison at all when no write touched the range where the audio
//! was), and the tags and pictures read become the file's overlay in one journaled
//! transaction, as `musefs tag import` would make it: the text tags exactly those read,
//! the pictures exactly those read. Binary frames (`PRIV`, `GEOB`, ...) are not
//! editable this way and are left as they are. A refusal stores nothing: the audio
//! changed (`EPERM`), or the image does not parse (`EIO`); each is logged once with the
//! file's name and the reason.
//!
//! *Scratch files* are the files an editor creates beside the one it saves (a temporary
//! copy, a backup): kept as overlays of an empty base, listed in their directory, gone
//! when unlinked or renamed over a served file, and at the next mount.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use abi_stable::std_types::ROption;
use musefs_plugin_api::{CallCtx, PluginResult, Stat, TrackInfo};

use super::{Core, OpenFile, ReadData, ServeError};
use crate::catalog::FileRow;
use crate::overlay::Overlay;
use crate::tree::{AttrKind, NodeAttr};
use crate::util::{lock, write};

/// Scratch inodes: below every file inode (`1 << 40`), above the root, with neither
/// the directory nor the cover bit (numbers the tree never hands out).
const SCRATCH_FIRST: u64 = 1 << 20;
const SCRATCH_END: u64 = 1 << 40;

/// Whether `ino` is a scratch file's.
pub fn is_scratch_ino(ino: u64) -> bool {
    (SCRATCH_FIRST..SCRATCH_END).contains(&ino)
}

/// What a write session writes over.
pub(crate) enum Target {
    /// A served file: its image when the session began.
    Served {
        /// The handle on that image (its layout and its original).
        base: Arc<OpenFile>,
        /// The catalog row.
        row: FileRow,
    },
    /// A scratch file (an empty base).
    Scratch,
}

/// The written image of one inode and who is writing it.
pub(crate) struct Session {
    pub(crate) ino: u64,
    pub(crate) target: Target,
    state: Mutex<State>,
    /// One commit at a time.
    committing: Mutex<()>,
}

struct State {
    overlay: Overlay,
    /// Open handles that may write.
    writers: usize,
    /// Open handles of any kind on this session.
    handles: usize,
    /// Counts writes and truncations.
    version: u64,
    /// The `version` the last commit saw (written since: `version != committed`).
    committed: u64,
    mtime_ns: i64,
}

impl Session {
    fn new(ino: u64, target: Target, overlay: Overlay) -> Arc<Self> {
        let state =
            State { overlay, writers: 0, handles: 0, version: 0, committed: 0, mtime_ns: crate::util::now_ns() };
        Arc::new(Self { ino, target, state: Mutex::new(state), committing: Mutex::new(()) })
    }

    /// The image's size now.
    pub(crate) fn size(&self) -> u64 {
        lock(&self.state).overlay.size()
    }

    fn mtime_ns(&self) -> i64 {
        lock(&self.state).mtime_ns
    }

    /// Reads the image (written bytes over the base).
    pub(crate) fn read(&self, offset: u64, len: usize) -> Result<Vec<u8>, ServeError> {
        let state = lock(&self.state);
        let out = state.overlay.read(offset, len, |at, buf| match &self.target {
            Target::Served { base, .. } => {
                Core::splice_into(base, at, buf).map(|_| ()).map_err(|e| std::io::Error::other(e.to_string()))
            }
            Target::Scratch => Ok(()),
        });
        out.map_err(|e| ServeError::Io(format!("reading the image being written: {e}")))
    }
}

/// A scratch file: its place in the tree (while it has a name) and its image.
struct Scratch {
    parent: u64,
    name: String,
}

/// The write state of a writable core.
pub(crate) struct Writes {
    dir: PathBuf,
    /// Sessions by inode (served files being written, and every scratch file).
    sessions: Mutex<HashMap<u64, Arc<Session>>>,
    /// Scratch files with a name: inode -> entry, and `(parent, name)` -> inode.
    scratch: Mutex<ScratchIndex>,
    next_ino: AtomicU64,
    next_name: AtomicU64,
    /// Sessions alive (the read path skips the map when there are none).
    live: AtomicUsize,
    /// Scratch files renamed over a served file: the kernel now knows that file's name
    /// by the scratch file's inode (until the entry invalidation sent after the rename
    /// reaches it), which serves the file: scratch inode -> the file's inode.
    aliases: Mutex<HashMap<u64, u64>>,
}

#[derive(Default)]
struct ScratchIndex {
    nodes: HashMap<u64, Scratch>,
    names: HashMap<(u64, String), u64>,
}

impl Writes {
    /// The write state over `dir`, emptied first: what is there is a session a crash
    /// or kill cut short, never committed.
    pub(crate) fn open(dir: &Path) -> std::io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let mut stale = 0;
        for e in std::fs::read_dir(dir)? {
            let p = e?.path();
            if std::fs::remove_file(&p).is_ok() {
                stale += 1;
            }
        }
        if stale > 0 {
            tracing::info!(
                "discarded {stale} unfinished write session(s) in {} (cut short by a crash or kill; nothing of them was stored)",
                dir.display()
            );
        }
        Ok(Self {
            dir: dir.to_owned(),
            sessions: Mutex::new(HashMap::new()),
            scratch: Mutex::new(ScratchIndex::default()),
            next_ino: AtomicU64::new(SCRATCH_FIRST),
            next_name: AtomicU64::new(1),
            live: AtomicUsize::new(0),
            aliases: Mutex::new(HashMap::new()),
        })
    }

    fn overlay(&self, base_size: u64) -> Result<Overlay, ServeError> {
        let name = format!("{}-{}", std::process::id(), self.next_name.fetch_add(1, Ordering::Relaxed));
        Overlay::create(&self.dir, &name, base_size)
            .map_err(|e| io_err(&format!("creating a scratch file in {}", self.dir.display()), &e))
    }

    fn session(&self, ino: u64) -> Option<Arc<Session>> {
        if self.live.load(Ordering::Acquire) == 0 {
            return None;
        }
        lock(&self.sessions).get(&ino).cloned()
    }
}

fn io_err(what: &str, e: &std::io::Error) -> ServeError {
    if e.raw_os_error() == Some(libc::ENOSPC) || e.kind() == std::io::ErrorKind::StorageFull {
        ServeError::NoSpace(format!("{what}: {e}"))
    } else {
        ServeError::Io(format!("{what}: {e}"))
    }
}

/// The image being committed, as a handle a format plugin reads.
struct ImageHandle {
    session: Arc<Session>,
    size: u64,
}

impl musefs_plugin_api::Handle for ImageHandle {
    fn len(&self) -> u64 {
        self.size
    }

    fn stat(&self) -> Stat {
        Stat {
            kind: musefs_plugin_api::EntryKind::FILE,
            size: self.size,
            mtime_ns: ROption::RNone,
            etag: ROption::RNone,
        }
    }

    fn read_at(&self, _ctx: &CallCtx, offset: u64, buf: &mut [u8]) -> PluginResult<usize> {
        let data = self
            .session
            .read(offset, buf.len())
            .map_err(|e| musefs_plugin_api::PluginError::new(musefs_plugin_api::ErrorKind::IO, e.to_string()))?;
        buf[..data.len()].copy_from_slice(&data);
        Ok(data.len())
    }
}

impl Core {
    /// Makes this core writable (`writable = true`): sessions keep their scratch files
    /// in `dir`, which is emptied now.
    ///
    /// # Errors
    /// Creating or reading `dir`.
    pub fn with_writes(mut self, dir: &Path) -> std::io::Result<Self> {
        self.writes = Some(Writes::open(dir)?);
        Ok(self)
    }

    /// Whether files may be written.
    pub fn writable(&self) -> bool {
        self.writes.is_some()
    }

    /// The bytes free for scratch files (`None`: a read-only core).
    pub fn writes_available(&self) -> Option<u64> {
        let w = self.writes.as_ref()?;
        crate::sys::available_bytes(&w.dir).ok()
    }

    fn writes(&self) -> Result<&Writes, ServeError> {
        self.writes.as_ref().ok_or(ServeError::ReadOnly)
    }

    /// The write session of `ino`, if one is open.
    pub(crate) fn session_of(&self, ino: u64) -> Option<Arc<Session>> {
        self.writes.as_ref()?.session(ino)
    }

    /// The inode a scratch inode renamed over a served file stands for now (the file's
    /// current inode: an edit moves it to a new one).
    pub(crate) fn alias_of(&self, ino: u64) -> Option<u64> {
        let w = self.writes.as_ref()?;
        let file = *lock(&w.aliases).get(&ino)?;
        self.with_tree(|t| t.current(file).map(crate::tree::Node::public_ino))
    }

    /// The attributes of a scratch file.
    pub(crate) fn scratch_attr(&self, ino: u64) -> Option<NodeAttr> {
        if let Some(file) = self.alias_of(ino) {
            return self.node(file).map(|a| NodeAttr { ino, ..a });
        }
        let w = self.writes.as_ref()?;
        let session = lock(&w.sessions).get(&ino).cloned()?;
        let parent = lock(&w.scratch).nodes.get(&ino).map_or(crate::tree::ROOT, |s| s.parent);
        Some(Self::session_attr(&session, parent))
    }

    fn session_attr(session: &Session, parent: u64) -> NodeAttr {
        let mtime_ns = session.mtime_ns();
        NodeAttr {
            ino: session.ino,
            parent,
            kind: AttrKind::File { file_id: -1, size: session.size(), mtime_ns, gen: 0 },
            mtime_ns,
        }
    }

    /// The scratch file `name` in `parent`.
    pub(crate) fn scratch_lookup(&self, parent: u64, name: &str) -> Option<NodeAttr> {
        let w = self.writes.as_ref()?;
        let ino = *lock(&w.scratch).names.get(&(parent, name.to_owned()))?;
        self.scratch_attr(ino)
    }

    /// The scratch files of directory `parent`, in name order.
    pub(crate) fn scratch_children(&self, parent: u64) -> Vec<(NodeAttr, String)> {
        let Some(w) = self.writes.as_ref() else { return Vec::new() };
        let mut names: Vec<(String, u64)> = lock(&w.scratch)
            .names
            .iter()
            .filter(|((p, _), _)| *p == parent)
            .map(|((_, n), i)| (n.clone(), *i))
            .collect();
        names.sort();
        names.into_iter().filter_map(|(n, i)| Some((self.scratch_attr(i)?, n))).collect()
    }

    fn register(&self, file: OpenFile) -> (u64, Arc<OpenFile>) {
        let file = Arc::new(file);
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        write(&self.handles).insert(fh, file.clone());
        (fh, file)
    }

    fn session_file(&self, session: &Arc<Session>, writer: bool) -> OpenFile {
        {
            let mut s = lock(&session.state);
            s.handles += 1;
            if writer {
                s.writers += 1;
            }
        }
        let (row, gen) = match &session.target {
            Target::Served { row, .. } => (Some(row.clone()), row.gen),
            Target::Scratch => (None, 0),
        };
        OpenFile {
            ino: session.ino,
            row,
            gen,
            handle: None,
            ctx: self.ctx(),
            recheck: false,
            layout: Arc::new(super::Layout::new([])),
            size: 0,
            attrs_stale: false,
            direct_path: None,
            session: Some(session.clone()),
            writer,
        }
    }

    /// Opens `ino` for writing (and reading), joining its write session or starting
    /// one; `truncate` empties the image (`O_TRUNC`).
    ///
    /// # Errors
    /// [`ServeError::ReadOnly`] on a read-only core; [`ServeError::NotPermitted`] for
    /// what cannot be written (directories, cover images, sidecars); open errors.
    pub fn open_write(&self, ino: u64, truncate: bool) -> Result<(u64, Arc<OpenFile>), ServeError> {
        let w = self.writes()?;
        let session = match self.session_of(ino) {
            Some(s) => s,
            None => {
                if is_scratch_ino(ino) {
                    let file = self.alias_of(ino).ok_or(ServeError::NotFound)?;
                    return self.open_write(file, truncate);
                }
                // A new session over the image this inode serves now.
                let (fh, base) = self.open_plain(ino)?;
                // The base is held by the session, not by a kernel handle.
                write(&self.handles).remove(&fh);
                let Some(row) = base.row.clone().filter(|r| !r.is_sidecar()) else {
                    return Err(ServeError::NotPermitted(
                        "only music files can be written (cover images and sidecars are served as they are)".into(),
                    ));
                };
                let overlay = w.overlay(base.size)?;
                let mut sessions = lock(&w.sessions);
                // Another open may have started one meanwhile: join it.
                if let Some(s) = sessions.get(&ino) {
                    s.clone()
                } else {
                    let s = Session::new(ino, Target::Served { base, row }, overlay);
                    sessions.insert(ino, s.clone());
                    w.live.fetch_add(1, Ordering::AcqRel);
                    s
                }
            }
        };
        let file = self.session_file(&session, true);
        if truncate {
            self.truncate_session(&session, 0)?;
        }
        Ok(self.register(file))
    }

    /// Opens `ino` for reading while it has a write session (`None`: it has none, use
    /// [`Core::open`]): the handle reads the image being written.
    pub fn open_session_reader(&self, ino: u64) -> Option<(u64, Arc<OpenFile>)> {
        let session = self.session_of(ino)?;
        let file = self.session_file(&session, false);
        Some(self.register(file))
    }

    /// Creates the scratch file `name` in directory `parent`, open for writing.
    ///
    /// # Errors
    /// [`ServeError::ReadOnly`]; [`ServeError::Exists`] when the name is taken;
    /// [`ServeError::NotFound`] when `parent` is not a directory.
    pub fn create(&self, parent: u64, name: &str) -> Result<(NodeAttr, u64, Arc<OpenFile>), ServeError> {
        let w = self.writes()?;
        if !self.with_tree(|t| t.get(parent).is_some_and(|n| n.attr().kind.is_dir())) {
            return Err(ServeError::NotFound);
        }
        if name.is_empty() || name.contains('/') || name.len() > crate::tree::NAME_MAX {
            return Err(ServeError::NotPermitted(format!("{name:?} is not a valid file name")));
        }
        if self.with_tree(|t| t.lookup(parent, name).is_some()) {
            return Err(ServeError::Exists);
        }
        let overlay = w.overlay(0)?;
        let ino = w.next_ino.fetch_add(1, Ordering::Relaxed);
        if ino >= SCRATCH_END {
            return Err(ServeError::NoSpace("out of scratch inode numbers (remount)".into()));
        }
        let session = Session::new(ino, Target::Scratch, overlay);
        {
            let mut idx = lock(&w.scratch);
            if idx.names.contains_key(&(parent, name.to_owned())) {
                return Err(ServeError::Exists);
            }
            idx.names.insert((parent, name.to_owned()), ino);
            idx.nodes.insert(ino, Scratch { parent, name: name.to_owned() });
        }
        lock(&w.sessions).insert(ino, session.clone());
        w.live.fetch_add(1, Ordering::AcqRel);
        let file = self.session_file(&session, true);
        let (fh, file) = self.register(file);
        Ok((Self::session_attr(&session, parent), fh, file))
    }

    /// Writes `data` at `offset` through write handle `fh`.
    ///
    /// # Errors
    /// [`ServeError::NotFound`] for an unknown handle, [`ServeError::NotPermitted`] for
    /// a read-only one; [`ServeError::NoSpace`] when the state directory is full.
    pub fn write(&self, fh: u64, offset: u64, data: &[u8]) -> Result<usize, ServeError> {
        let file = self.handle(fh).ok_or(ServeError::NotFound)?;
        let (Some(session), true) = (&file.session, file.writer) else {
            return Err(ServeError::NotPermitted("the file was not opened for writing".into()));
        };
        let mut s = lock(&session.state);
        s.overlay.write(offset, data).map_err(|e| io_err("writing the scratch file", &e))?;
        s.version += 1;
        s.mtime_ns = crate::util::now_ns();
        Ok(data.len())
    }

    fn truncate_session(&self, session: &Session, size: u64) -> Result<(), ServeError> {
        let mut s = lock(&session.state);
        if s.overlay.size() != size {
            s.overlay.truncate(size).map_err(|e| io_err("truncating the scratch file", &e))?;
            s.version += 1;
            s.mtime_ns = crate::util::now_ns();
        }
        Ok(())
    }

    /// Sets the size of `ino` (`truncate`/`ftruncate`). With no write session open on
    /// it (a `truncate` of a path), one is started and committed at once.
    ///
    /// # Errors
    /// As for [`open_write`](Self::open_write) and [`fsync`](Self::fsync).
    pub fn truncate(&self, ino: u64, size: u64) -> Result<NodeAttr, ServeError> {
        self.writes()?;
        if let Some(session) = self.session_of(ino) {
            self.truncate_session(&session, size)?;
            return self.node(ino).ok_or(ServeError::NotFound);
        }
        let (fh, _) = self.open_write(ino, false)?;
        let res = self.handle(fh).and_then(|f| f.session.clone()).map_or(Err(ServeError::NotFound), |s| {
            self.truncate_session(&s, size)?;
            self.commit(&s)
        });
        let attr = self.node(ino);
        self.release(fh);
        res?;
        attr.ok_or(ServeError::NotFound)
    }

    /// A writer closes (`flush`, on every `close`): the last writer commits.
    ///
    /// # Errors
    /// The commit's refusal ([`ServeError::Refused`]); nothing was stored then.
    pub fn flush(&self, fh: u64) -> Result<(), ServeError> {
        let Some(file) = self.handle(fh) else { return Ok(()) };
        let (Some(session), true) = (&file.session, file.writer) else { return Ok(()) };
        if lock(&session.state).writers > 1 {
            return Ok(());
        }
        self.commit(session).map(|_| ())
    }

    /// `fsync`: commits what was written so far.
    ///
    /// # Errors
    /// As for [`flush`](Self::flush).
    pub fn fsync(&self, fh: u64) -> Result<(), ServeError> {
        let Some(file) = self.handle(fh) else { return Ok(()) };
        match (&file.session, file.writer) {
            (Some(session), true) => self.commit(session).map(|_| ()),
            _ => Ok(()),
        }
    }

    /// The session side of [`Core::release`]: the last writer of a served file commits
    /// what is left (its `flush` normally did), the last handle ends the session.
    pub(crate) fn release_session(&self, file: &OpenFile) {
        let (Some(session), Some(w)) = (&file.session, &self.writes) else { return };
        let (last_writer, last) = {
            let mut s = lock(&session.state);
            s.handles = s.handles.saturating_sub(1);
            if file.writer {
                s.writers = s.writers.saturating_sub(1);
            }
            (file.writer && s.writers == 0, s.handles == 0)
        };
        if last_writer {
            if let Err(e) = self.commit(session) {
                tracing::debug!("closing {}: {e}", self.session_name(session));
            }
        }
        if !last {
            return;
        }
        let keep = match session.target {
            // A scratch file lives on while it has a name.
            Target::Scratch => lock(&w.scratch).nodes.contains_key(&session.ino),
            Target::Served { .. } => false,
        };
        if keep {
            return;
        }
        let mut sessions = lock(&w.sessions);
        if sessions.get(&session.ino).is_some_and(|s| Arc::ptr_eq(s, session)) {
            sessions.remove(&session.ino);
            w.live.fetch_sub(1, Ordering::AcqRel);
        }
        drop(sessions);
        if matches!(session.target, Target::Served { .. }) {
            // The kernel saw the image's size while it was written: it forgets it.
            let mut p = lock(&self.pending);
            p.invals.push(crate::tree::Inval::Inode(session.ino));
            p.inodes.insert(session.ino);
        }
    }

    fn session_name(&self, session: &Session) -> String {
        match &session.target {
            Target::Served { row, .. } => format!("{}:{}", row.origin, row.path),
            Target::Scratch => {
                let w = self.writes.as_ref();
                w.and_then(|w| lock(&w.scratch).nodes.get(&session.ino).map(|s| format!("scratch file {:?}", s.name)))
                    .unwrap_or_else(|| "a scratch file".into())
            }
        }
    }

    /// Removes the scratch file `name` of `parent` (open handles keep it until closed).
    ///
    /// # Errors
    /// [`ServeError::ReadOnly`]; [`ServeError::NotPermitted`] for a served file or a
    /// directory; [`ServeError::NotFound`].
    pub fn unlink(&self, parent: u64, name: &str) -> Result<(), ServeError> {
        let w = self.writes()?;
        if self.with_tree(|t| t.lookup(parent, name).is_some()) {
            return Err(ServeError::NotPermitted(
                "served files cannot be deleted through the mount (the tree is the catalog's; originals are never changed)"
                    .into(),
            ));
        }
        let ino = lock(&w.scratch).names.remove(&(parent, name.to_owned())).ok_or(ServeError::NotFound)?;
        self.drop_scratch(ino);
        Ok(())
    }

    /// Forgets scratch file `ino`'s name; the session goes when no handle holds it.
    fn drop_scratch(&self, ino: u64) {
        let Some(w) = &self.writes else { return };
        lock(&w.scratch).nodes.remove(&ino);
        let mut sessions = lock(&w.sessions);
        if sessions.get(&ino).is_some_and(|s| lock(&s.state).handles == 0) {
            sessions.remove(&ino);
            w.live.fetch_sub(1, Ordering::AcqRel);
        }
    }

    /// Renames `name` of `parent` to `newname` of `newparent`. A scratch file renamed
    /// over a served file commits its image as that file's edit (and is gone); renamed
    /// elsewhere it moves. Served files and directories do not move.
    ///
    /// # Errors
    /// [`ServeError::ReadOnly`]; [`ServeError::NotPermitted`]; [`ServeError::Exists`]
    /// with `noreplace`; the commit's refusal.
    pub fn rename(
        &self,
        parent: u64,
        name: &str,
        newparent: u64,
        newname: &str,
        noreplace: bool,
    ) -> Result<(), ServeError> {
        let w = self.writes()?;
        let Some(ino) = lock(&w.scratch).names.get(&(parent, name.to_owned())).copied() else {
            if self.with_tree(|t| t.lookup(parent, name).is_some()) {
                return Err(ServeError::NotPermitted(
                    "served files are named by their tags: edit the tags to rename (`musefs tag set`, or save the file with new tags)"
                        .into(),
                ));
            }
            return Err(ServeError::NotFound);
        };
        if newname.is_empty() || newname.contains('/') || newname.len() > crate::tree::NAME_MAX {
            return Err(ServeError::NotPermitted(format!("{newname:?} is not a valid file name")));
        }
        let target = self.with_tree(|t| t.lookup(newparent, newname).map(|n| (t.attr(n), n.public_ino())));
        if let Some((attr, public)) = target {
            if noreplace {
                return Err(ServeError::Exists);
            }
            if !matches!(attr.kind, AttrKind::File { file_id, .. } if file_id >= 0) {
                return Err(ServeError::NotPermitted("only a music file can be replaced".into()));
            }
            let session = lock(&w.sessions).get(&ino).cloned().ok_or(ServeError::NotFound)?;
            self.commit_onto(&session, public)?;
            lock(&w.aliases).insert(ino, public);
            // The kernel moves the scratch file's inode to the name: it forgets that.
            let mut p = lock(&self.pending);
            p.invals.push(crate::tree::Inval::Entry { parent: newparent, name: newname.to_owned() });
            lock(&w.scratch).names.remove(&(parent, name.to_owned()));
            self.drop_scratch(ino);
            return Ok(());
        }
        if !self.with_tree(|t| t.get(newparent).is_some_and(|n| n.attr().kind.is_dir())) {
            return Err(ServeError::NotFound);
        }
        let mut idx = lock(&w.scratch);
        if let Some(&other) = idx.names.get(&(newparent, newname.to_owned())) {
            if other == ino {
                return Ok(());
            }
            if noreplace {
                return Err(ServeError::Exists);
            }
            idx.names.remove(&(newparent, newname.to_owned()));
            drop(idx);
            self.drop_scratch(other);
            idx = lock(&w.scratch);
        }
        idx.names.remove(&(parent, name.to_owned()));
        idx.names.insert((newparent, newname.to_owned()), ino);
        if let Some(s) = idx.nodes.get_mut(&ino) {
            s.parent = newparent;
            s.name = newname.to_owned();
        }
        Ok(())
    }

    /// Commits a session's image as the edit of the file it writes, if anything was
    /// written since the last commit; `Ok(true)` when an edit was stored.
    fn commit(&self, session: &Arc<Session>) -> Result<bool, ServeError> {
        let Target::Served { row, base } = &session.target else { return Ok(false) };
        let _one = lock(&session.committing);
        let version = {
            let s = lock(&session.state);
            if s.version == s.committed {
                return Ok(false);
            }
            s.version
        };
        let res = self.commit_image(session, row, base);
        // Refused or stored, this image is settled: the next commit is of writes made
        // since it was read (one made during this commit is not lost).
        lock(&session.state).committed = version;
        res
    }

    /// Commits scratch `session`'s image as the edit of the served file `ino`.
    fn commit_onto(&self, session: &Arc<Session>, ino: u64) -> Result<bool, ServeError> {
        let (_, base) = self.open_plain(ino)?;
        self.release_base(&base);
        let row = base.row.clone().ok_or(ServeError::NotFound)?;
        let _one = lock(&session.committing);
        self.commit_image(session, &row, &base)
    }

    fn release_base(&self, base: &Arc<OpenFile>) {
        let mut handles = write(&self.handles);
        let fh = handles.iter().find(|(_, f)| Arc::ptr_eq(f, base)).map(|(fh, _)| *fh);
        if let Some(fh) = fh {
            handles.remove(&fh);
        }
    }

    fn commit_image(&self, session: &Arc<Session>, row: &FileRow, base: &OpenFile) -> Result<bool, ServeError> {
        let name = format!("{}:{}", row.origin, row.path);
        let res = self.check_and_store(session, row, base);
        crate::metrics::global().saved(match &res {
            Ok(true) => crate::metrics::Saved::Stored,
            Ok(false) => crate::metrics::Saved::Unchanged,
            Err(ServeError::Refused { audio: true, .. }) => crate::metrics::Saved::AudioChanged,
            Err(ServeError::Refused { audio: false, .. }) => crate::metrics::Saved::Unreadable,
            Err(_) => crate::metrics::Saved::Failed,
        });
        match &res {
            Ok(true) => tracing::info!("saved through the mount: {name}: its tags are now an edit in the catalog"),
            Ok(false) => tracing::debug!("saved through the mount: {name}: no tag changed"),
            Err(e) => tracing::warn!("refused a save through the mount: {e}"),
        }
        res
    }

    fn check_and_store(&self, session: &Arc<Session>, row: &FileRow, base: &OpenFile) -> Result<bool, ServeError> {
        let refused = |audio: bool, what: String| ServeError::Refused {
            origin: row.origin.clone(),
            path: row.path.clone(),
            what,
            audio,
        };
        let format = self
            .formats
            .get(&row.plugin)
            .ok_or_else(|| refused(false, format!("format plugin `{}` is not loaded", row.plugin)))?;
        let size = session.size();
        let handle = musefs_plugin_api::handle_into_ffi(Arc::new(ImageHandle { session: session.clone(), size }));
        let info: TrackInfo = format
            .read(&self.ctx(), &handle)
            .into_result()
            .map_err(|e| refused(false, format!("the saved file does not read as {}: {}", row.plugin, e)))?;
        self.check_audio(session, row, base, (&handle, &info))?;
        self.store_tags(row.id, &info).map_err(|e| match e {
            ServeError::Catalog(crate::catalog::CatalogError::InvalidEdit(m)) => refused(false, m),
            e => e,
        })
    }

    /// Checks that the image holds the original's audio: nothing to compare when no
    /// write touched the range the audio was served from (a small edit within the
    /// padding); else the format plugin compares ([`Format::same_audio`], plugin ABI
    /// 2.2: the audio bytes by default; an Ogg editor renumbers the pages after a header
    /// it grew), or, for a plugin that predates it, the host compares the audio bytes.
    ///
    /// [`Format::same_audio`]: musefs_plugin_api::Format::same_audio
    fn check_audio(
        &self,
        session: &Session,
        row: &FileRow,
        base: &OpenFile,
        image: (&musefs_plugin_api::HandleBox, &TrackInfo),
    ) -> Result<(), ServeError> {
        let changed = |what: String| ServeError::Refused {
            origin: row.origin.clone(),
            path: row.path.clone(),
            what,
            audio: true,
        };
        let (handle, info) = image;
        let (start, len) = (info.audio_offset, info.audio_len);
        let original = lock(&self.catalog).track_info(row.id)?.ok_or(ServeError::Gone(row.id))?;
        if len != original.audio_len {
            return Err(changed(format!(
                "its audio changed: {len} bytes of audio where the original has {} (only tags and pictures can be saved)",
                original.audio_len
            )));
        }
        // Where the base served the audio: an origin segment holding all of it.
        let served_at = base.layout.segments.iter().find_map(|(at, p)| match *p {
            super::Piece::Origin { offset, len: n }
                if offset <= row.audio_offset && row.audio_offset + len <= offset + n =>
            {
                Some(at + (row.audio_offset - offset))
            }
            _ => None,
        });
        if served_at == Some(start) && !lock(&session.state).overlay.touched(start..start + len) {
            return Ok(());
        }
        let (Some(format), Some(source)) = (self.formats.get(&row.plugin), &base.handle) else {
            return Err(ServeError::NotFound);
        };
        let source = source.ffi();
        let same = match format.same_audio(&self.ctx(), &source, &original, handle, info).into_result() {
            Err(e) if e.kind == musefs_plugin_api::ErrorKind::UNSUPPORTED => {
                let src = |h: &musefs_plugin_api::HandleBox| musefs_plugin_api::Source::new(h.clone(), self.ctx());
                musefs_plugin_api::same_audio_bytes(&src(&source), &original, &src(handle), info)
            }
            res => res,
        };
        match same {
            Ok(true) => Ok(()),
            Ok(false) => Err(changed("its audio changed (only tags and pictures can be saved)".into())),
            // Reading either side failed (the origin is down): not a refusal, an EIO.
            Err(e) => Err(Self::plugin_err(row)(e)),
        }
    }

    /// Makes the file's text tags and pictures exactly those of `info` (one journaled
    /// transaction), then brings the tree forward. `Ok(false)`: nothing differed.
    fn store_tags(&self, file_id: i64, info: &TrackInfo) -> Result<bool, ServeError> {
        let mut want: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for t in info.tags.iter() {
            if t.data.is_empty() && !t.key.is_empty() {
                want.entry(t.key.to_string()).or_default().push(t.value.to_string());
            }
        }
        let stored = {
            let mut catalog = lock(&self.catalog);
            let (edits, art) = catalog.edits_to_match(file_id, &want, Some(&info.pictures))?;
            if edits.is_empty() && art.is_empty() {
                false
            } else {
                catalog.apply_batch(&[(file_id, edits, art)])?;
                true
            }
        };
        if stored {
            let inval = self.refresh_tree()?;
            lock(&self.pending).invals.extend(inval);
        }
        Ok(stored)
    }

    /// Reads a session handle's image.
    pub(crate) fn read_session(session: &Session, offset: u64, size: u32) -> Result<ReadData, ServeError> {
        session.read(offset, size as usize).map(ReadData::Owned)
    }
}

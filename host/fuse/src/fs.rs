//! The FUSE adapter: a thin translation from kernel requests to [`Core`] calls.
//!
//! Local files served unchanged are handed to the kernel with FUSE passthrough when the
//! kernel offers it (reads then never reach this process); otherwise, and for every
//! other file, reads go through [`Core::read`].

use std::collections::HashMap;
use std::ffi::OsStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fuser::{
    BackingId, BsdFileFlags, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, INodeNo, InitFlags,
    KernelConfig, LockOwner, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory,
    ReplyDirectoryPlus, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite, ReplyXattr, Request, TimeOrNow,
    WriteFlags,
};

use musefs_core::manifest::Access;
use musefs_core::metrics::{self, FuseOp};
use musefs_core::serve::Core;
use musefs_core::tree::{AttrKind, NodeAttr};
use musefs_core::util::lock;

/// How long the kernel may keep entries and attributes. Every change of the tree is
/// invalidated explicitly (entries, the attributes of changed files, directories and
/// their ancestors, covers; everything after a rebuild), so nothing waits for a TTL to
/// run out: a long one spares a walk its revalidation lookups.
const TTL: Duration = Duration::from_secs(3600);

impl MuseFs {
    /// The TTL of a node: none for scratch files of a writable mount (renamed,
    /// truncated and unlinked under way) and for nodes whose attributes are uncertain
    /// (a change not yet sent to the kernel, a size announced before the file's layout
    /// was known).
    fn ttl_of(&self, ino: u64) -> &'static Duration {
        if musefs_core::serve::is_scratch_ino(ino) || self.core.attrs_uncertain(ino) {
            &Duration::ZERO
        } else {
            &TTL
        }
    }
}

/// The extended attribute naming a file's original.
const XATTR_ORIGIN: &str = "user.musefs.origin";

/// Answers an xattr request: the size when asked for it (`size` 0), the bytes when they
/// fit, `ERANGE` when they do not.
fn xattr_reply(reply: ReplyXattr, data: &[u8], size: u32) {
    if size == 0 {
        reply.size(u32::try_from(data.len()).unwrap_or(u32::MAX));
    } else if data.len() <= size as usize {
        reply.data(data);
    } else {
        reply.error(Errno::from_i32(libc::ERANGE));
    }
}

fn errno(e: &musefs_core::serve::ServeError) -> Errno {
    Errno::from_i32(e.errno())
}

/// The mounted filesystem.
pub struct MuseFs {
    core: Arc<Core>,
    uid: u32,
    gid: u32,
    file_mode: u16,
    dir_mode: u16,
    mounted: SystemTime,
    passthrough_wanted: bool,
    passthrough: AtomicBool,
    fallback_logged: AtomicBool,
    backing: Mutex<Backing>,
    /// The generation whose pages the kernel may hold, by inode.
    cached_gen: Mutex<HashMap<u64, i64>>,
    /// Set once the session is up: an open that finds the kernel's attributes stale
    /// drops them before it answers.
    notifier: Arc<OnceLock<fuser::Notifier>>,
}

/// Kernel backing files. The kernel allows one backing file per inode at a time, so
/// concurrent opens of one inode share its `BackingId` (weakly held by inode, strongly by
/// each open handle; the kernel's reference goes when the last handle is released).
#[derive(Default)]
struct Backing {
    by_inode: HashMap<u64, Weak<BackingId>>,
    by_handle: HashMap<u64, Arc<BackingId>>,
}

impl MuseFs {
    /// A filesystem over `core`; `passthrough` asks for kernel passthrough of local files;
    /// `access` gives the owner and modes of every node.
    pub fn new(core: Arc<Core>, passthrough: bool, access: &Access) -> Self {
        let (uid, gid) = musefs_core::sys::user_ids();
        Self {
            core,
            uid: access.uid.unwrap_or(uid),
            gid: access.gid.unwrap_or(gid),
            file_mode: access.file_mode as u16,
            dir_mode: access.dir_mode as u16,
            mounted: SystemTime::now(),
            passthrough_wanted: passthrough,
            passthrough: AtomicBool::new(false),
            fallback_logged: AtomicBool::new(false),
            backing: Mutex::new(Backing::default()),
            cached_gen: Mutex::new(HashMap::new()),
            notifier: Arc::new(OnceLock::new()),
        }
    }

    /// Where the session's notifier goes once the mount is up.
    pub fn notifier_slot(&self) -> Arc<OnceLock<fuser::Notifier>> {
        self.notifier.clone()
    }

    /// Drops the kernel's cached attributes of `ino` (not its pages: an open of a new
    /// generation drops those itself). Offset -1 keeps the page cache.
    fn drop_attrs(&self, ino: u64) {
        if let Some(n) = self.notifier.get() {
            if let Err(e) = n.inval_inode(INodeNo(ino), -1, 0) {
                if e.raw_os_error() != Some(libc::ENOENT) {
                    tracing::debug!("invalidating the attributes of inode {ino}: {e}");
                }
            }
        }
    }

    fn attr(&self, n: &NodeAttr) -> FileAttr {
        let (kind, size, perm, nlink) = match n.kind {
            AttrKind::Dir { subdirs } => (FileType::Directory, 0, self.dir_mode, 2 + subdirs),
            AttrKind::File { size, .. } => (FileType::RegularFile, size, self.file_mode, 1),
            AttrKind::Cover { size, .. } => (FileType::RegularFile, size, self.file_mode, 1),
        };
        // Persisted times (a remount changes none); an empty tree's root has none yet.
        let mtime = match u64::try_from(n.mtime_ns) {
            Ok(ns) if ns > 0 => UNIX_EPOCH + Duration::from_nanos(ns),
            _ => self.mounted,
        };
        FileAttr {
            ino: INodeNo(n.ino),
            size,
            blocks: size.div_ceil(512),
            atime: mtime,
            mtime,
            ctime: mtime,
            crtime: mtime,
            kind,
            perm,
            nlink,
            uid: self.uid,
            gid: self.gid,
            rdev: 0,
            flags: 0,
            blksize: 128 * 1024,
        }
    }

    /// Sends what a save just made stale before its `close`/`fsync` returns, so the
    /// editor's next `stat` or `open` of the name finds the file as saved (a title edit
    /// renames it; an edit gives it a new inode). Only from handlers that hold no
    /// directory lock in the kernel (flush, fsync): an entry invalidation there would
    /// wait for the lock the kernel holds for the request (rename's go out with the mount
    /// loop's next pass).
    fn send_invalidations(&self) {
        if !self.core.has_pending() {
            return;
        }
        let Some(notifier) = self.notifier.get() else { return };
        match self.core.refresh() {
            Ok(inval) => {
                crate::session::apply_invalidations(notifier, &inval);
                self.core.invalidated(&inval);
            }
            Err(e) => tracing::warn!("refreshing from the catalog: {e}"),
        }
    }

    fn log_fallback(&self, why: &str) {
        if !self.fallback_logged.swap(true, Ordering::Relaxed) {
            tracing::info!("kernel FUSE passthrough not used ({why}); serving reads through the daemon");
        }
    }
}

impl Filesystem for MuseFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        let _ = config.set_max_readahead(1024 * 1024);
        // READDIRPLUS when the kernel judges it useful (the first batch of a directory,
        // and whenever a walk looks its entries up).
        let _ = config.add_capabilities(InitFlags::FUSE_DO_READDIRPLUS | InitFlags::FUSE_READDIRPLUS_AUTO);
        if self.passthrough_wanted {
            match config.add_capabilities(InitFlags::FUSE_PASSTHROUGH) {
                Ok(()) => {
                    let _ = config.set_max_stack_depth(1);
                    self.passthrough.store(true, Ordering::Relaxed);
                    tracing::info!("kernel FUSE passthrough enabled for local files served unchanged");
                }
                Err(_) => self.log_fallback("the kernel does not offer it"),
            }
        }
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        metrics::global().fuse(FuseOp::Lookup);
        match name.to_str().and_then(|n| self.core.lookup_exact(parent.0, n)) {
            Some((n, true)) => reply.entry(self.ttl_of(n.ino), &self.attr(&n), fuser::Generation(0)),
            // Another spelling of the name (case-insensitive mode): not cached.
            Some((n, false)) => reply.entry(&Duration::ZERO, &self.attr(&n), fuser::Generation(0)),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, fh: Option<FileHandle>, reply: ReplyAttr) {
        metrics::global().fuse(FuseOp::Getattr);
        // `fstat` of an open file: what that handle serves, even once an edit gave the
        // file a new inode (the handle keeps serving its generation until closed).
        if let Some(n) = fh.and_then(|fh| self.core.handle_attr(fh.0)).filter(|n| n.ino == ino.0) {
            reply.attr(self.ttl_of(n.ino), &self.attr(&n));
            return;
        }
        match self.core.node(ino.0) {
            Some(n) => reply.attr(self.ttl_of(n.ino), &self.attr(&n)),
            // `stat` of a name whose dentry still holds a retired inode: ESTALE makes the
            // kernel look the name up again.
            None if self.core.is_retired(ino.0) => reply.error(Errno::from_i32(libc::ESTALE)),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        metrics::global().fuse(FuseOp::Open);
        if flags.0 & libc::O_ACCMODE != libc::O_RDONLY {
            // A tag editor saving (a writable mount); the kernel never caches the pages
            // of an image being written.
            match self.core.open_write(ino.0, flags.0 & libc::O_TRUNC != 0) {
                Ok((fh, _)) => reply.opened(FileHandle(fh), FopenFlags::FOPEN_DIRECT_IO),
                Err(e) => reply.error(errno(&e)),
            }
            return;
        }
        let (fh, file) = match self.core.open(ino.0) {
            Ok(x) => x,
            Err(e) => {
                reply.error(errno(&e));
                return;
            }
        };
        if file.attrs_stale {
            self.drop_attrs(ino.0);
        }
        if file.in_session() {
            reply.opened(FileHandle(fh), FopenFlags::FOPEN_DIRECT_IO);
            return;
        }
        if self.passthrough.load(Ordering::Relaxed) {
            if let Some(path) = &file.direct_path {
                let mut backing = lock(&self.backing);
                let existing = backing.by_inode.get(&ino.0).and_then(Weak::upgrade);
                let id = match existing {
                    Some(id) => Ok(id),
                    None => std::fs::File::open(path).and_then(|f| reply.open_backing(&f)).map(Arc::new),
                };
                match id {
                    Ok(id) => {
                        backing.by_inode.insert(ino.0, Arc::downgrade(&id));
                        reply.opened_passthrough(FileHandle(fh), FopenFlags::empty(), &id);
                        backing.by_handle.insert(fh, id);
                        return;
                    }
                    Err(e) => {
                        self.passthrough.store(false, Ordering::Relaxed);
                        self.log_fallback(&format!("registering a backing file failed: {e}"));
                    }
                }
            }
        } else if file.direct_path.is_some() {
            self.log_fallback("not available");
        }
        // The page cache is kept across opens while the inode serves one generation (a
        // changed original is an error, not new bytes). An open of a new generation drops
        // the cached pages; if a handle of another generation is still open, this one
        // bypasses the page cache so the two never mix.
        let flags = {
            let mut cached = lock(&self.cached_gen);
            if self.core.mixed_generations(ino.0, file.gen) {
                FopenFlags::FOPEN_DIRECT_IO
            } else if cached.insert(ino.0, file.gen) == Some(file.gen) {
                FopenFlags::FOPEN_KEEP_CACHE
            } else {
                FopenFlags::empty()
            }
        };
        reply.opened(FileHandle(fh), flags);
    }

    #[allow(clippy::too_many_arguments)]
    fn read(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        metrics::global().fuse(FuseOp::Read);
        match self.core.read(fh.0, offset, size) {
            Ok(data) => reply.data(&data),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn release(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        metrics::global().fuse(FuseOp::Release);
        {
            let mut backing = lock(&self.backing);
            if backing.by_handle.remove(&fh.0).is_some_and(|id| Arc::strong_count(&id) == 1) {
                backing.by_inode.remove(&ino.0);
            }
        }
        self.core.release(fh.0);
        reply.ok();
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        metrics::global().fuse(FuseOp::Statfs);
        // Used space: the files served (their originals' sizes), so importers that
        // refuse a 0-byte filesystem accept it; free: nothing on a read-only mount, the
        // state directory's free space on a writable one (where saves are kept);
        // inodes: the tree's nodes.
        const BSIZE: u64 = 4096;
        let (_, bytes, nodes) = self.core.totals();
        let free = self.core.writes_available().unwrap_or(0) / BSIZE;
        let ffree = if self.core.writable() { 1 << 20 } else { 0 };
        reply.statfs(bytes.div_ceil(BSIZE) + free, free, free, nodes + ffree, ffree, BSIZE as u32, 255, BSIZE as u32);
    }

    fn flush(&self, _req: &Request, _ino: INodeNo, fh: FileHandle, _lock_owner: LockOwner, reply: ReplyEmpty) {
        metrics::global().fuse(FuseOp::Flush);
        if !self.core.writable() {
            // Nothing to do on close: the kernel stops asking.
            reply.error(Errno::ENOSYS);
            return;
        }
        match self.core.flush(fh.0) {
            Ok(()) => {
                self.send_invalidations();
                reply.ok();
            }
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn fsync(&self, _req: &Request, _ino: INodeNo, fh: FileHandle, _datasync: bool, reply: ReplyEmpty) {
        metrics::global().fuse(FuseOp::Fsync);
        match self.core.fsync(fh.0) {
            Ok(()) => {
                self.send_invalidations();
                reply.ok();
            }
            Err(e) => reply.error(errno(&e)),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn write(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        metrics::global().fuse(FuseOp::Write);
        match self.core.write(fh.0, offset, data) {
            Ok(n) => reply.written(u32::try_from(n).unwrap_or(u32::MAX)),
            Err(e) => reply.error(errno(&e)),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        _mode: Option<u32>,
        _uid: Option<u32>,
        _gid: Option<u32>,
        size: Option<u64>,
        _atime: Option<TimeOrNow>,
        _mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        metrics::global().fuse(FuseOp::Setattr);
        if !self.core.writable() {
            reply.error(Errno::from_i32(libc::EROFS));
            return;
        }
        // A size is a truncation of the image; modes, owners and times are the mount's
        // (an editor restoring them is answered with them, unchanged).
        let attr = match size {
            Some(size) => self.core.truncate(ino.0, size),
            None => self.core.node(ino.0).ok_or(musefs_core::serve::ServeError::NotFound),
        };
        match attr {
            Ok(n) => reply.attr(&Duration::ZERO, &self.attr(&n)),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn create(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        _mode: u32,
        _umask: u32,
        _flags: i32,
        reply: ReplyCreate,
    ) {
        metrics::global().fuse(FuseOp::Create);
        let Some(name) = name.to_str() else {
            reply.error(Errno::from_i32(libc::EINVAL));
            return;
        };
        match self.core.create(parent.0, name) {
            Ok((attr, fh, _)) => reply.created(
                &Duration::ZERO,
                &self.attr(&attr),
                fuser::Generation(0),
                FileHandle(fh),
                FopenFlags::FOPEN_DIRECT_IO,
            ),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        metrics::global().fuse(FuseOp::Unlink);
        let res =
            name.to_str().ok_or(musefs_core::serve::ServeError::NotFound).and_then(|n| self.core.unlink(parent.0, n));
        match res {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        metrics::global().fuse(FuseOp::Rename);
        if flags.contains(RenameFlags::RENAME_EXCHANGE) {
            reply.error(Errno::from_i32(libc::EINVAL));
            return;
        }
        let (Some(name), Some(newname)) = (name.to_str(), newname.to_str()) else {
            reply.error(Errno::from_i32(libc::EINVAL));
            return;
        };
        let noreplace = flags.contains(RenameFlags::RENAME_NOREPLACE);
        match self.core.rename(parent.0, name, newparent.0, newname, noreplace) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn getxattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        metrics::global().fuse(FuseOp::Getxattr);
        // One attribute, on files: `user.musefs.origin` = `ORIGIN:PATH` of the original.
        let value = (name == XATTR_ORIGIN).then(|| self.core.origin_of(ino.0)).flatten();
        match value {
            Some(v) => xattr_reply(reply, v.as_bytes(), size),
            None => reply.error(Errno::from_i32(libc::ENODATA)),
        }
    }

    fn listxattr(&self, _req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        metrics::global().fuse(FuseOp::Listxattr);
        let names: &[u8] = match self.core.node(ino.0).map(|n| n.kind) {
            Some(AttrKind::File { .. }) => b"user.musefs.origin\0",
            Some(_) => b"",
            None => {
                reply.error(Errno::ENOENT);
                return;
            }
        };
        xattr_reply(reply, names, size);
    }

    fn opendir(&self, _req: &Request, _ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        metrics::global().fuse(FuseOp::Opendir);
        // Directories are stateless here (readdir works from the offset alone), so the
        // kernel need not ask: ENOSYS makes it stop sending OPENDIR and RELEASEDIR for
        // the life of the mount (Linux 5.1+, FUSE_NO_OPENDIR_SUPPORT) and open every
        // directory as if answered FOPEN_CACHE_DIR | FOPEN_KEEP_CACHE: the entries stay in
        // its page cache across opens, and a tree update invalidates the directory's inode
        // (see `mount::apply_invalidations`). A walk of a cached tree costs no request.
        reply.error(Errno::ENOSYS);
    }

    fn releasedir(&self, _req: &Request, _ino: INodeNo, _fh: FileHandle, _flags: OpenFlags, reply: ReplyEmpty) {
        metrics::global().fuse(FuseOp::Releasedir);
        reply.ok();
    }

    fn readdirplus(&self, _req: &Request, ino: INodeNo, _fh: FileHandle, offset: u64, mut reply: ReplyDirectoryPlus) {
        metrics::global().fuse(FuseOp::Readdirplus);
        // Entries with their attributes: a walk that stats every entry, and one that
        // descends into every directory, need no lookup per entry. An entry whose size
        // is not known yet (a synthesized file not planned) is not kept by the kernel.
        let res = self.core.readdir_plus_from(ino.0, offset, 2048, |i, a, name, certain| {
            let ttl = if certain { &TTL } else { &Duration::ZERO };
            reply.add(INodeNo(a.ino), i + 1, name, ttl, &self.attr(&a), fuser::Generation(0))
        });
        match res {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn readdir(&self, _req: &Request, ino: INodeNo, _fh: FileHandle, offset: u64, mut reply: ReplyDirectory) {
        metrics::global().fuse(FuseOp::Readdir);
        // Offsets: 1 = ".", 2 = "..", 3.. = the children in name order.
        let res = self.core.readdir_from(ino.0, offset, |i, a, name| {
            let kind = if a.kind.is_dir() { FileType::Directory } else { FileType::RegularFile };
            reply.add(INodeNo(a.ino), i + 1, kind, name)
        });
        match res {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(&e)),
        }
    }
}

//! The serving core: everything a mount does, testable without FUSE.
//!
//! `open` resolves a tree node to its catalog row, opens the original through its
//! origin plugin, checks the stamp (size, mtime, ETag) against the catalog, and asks the
//! format plugin for the layout plan once. `read` only splices the plan's segments:
//! literal bytes are copied, origin ranges are read with `read_at` into the reply
//! buffer. A plan whose size differs from the size announced in `getattr`, a changed or
//! vanished original, or a short read is an error (EIO at the FUSE edge), never wrong
//! bytes.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use abi_stable::std_types::{RSliceMut, RVec};
use musefs_plugin_api::{
    AudioProps, CallCtx, ErrorKind, FormatBox, HandleBox, OriginBox, PlanMode, PlanRequest, Segment, SegmentKind,
    TrackInfo,
};

use crate::catalog::{Catalog, CatalogError, FileRow};
use crate::manifest::Mode;
use crate::tree::{AttrKind, NodeAttr, Tree};

/// An error serving a request.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// No such inode or handle.
    #[error("no such file or directory")]
    NotFound,
    /// A directory where a file was expected.
    #[error("is a directory")]
    IsDir,
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
}

impl ServeError {
    /// The errno reported to the kernel.
    pub fn errno(&self) -> i32 {
        match self {
            Self::NotFound => libc::ENOENT,
            Self::IsDir => libc::EISDIR,
            Self::Plugin { source, .. } if source.kind == ErrorKind::TIMED_OUT => libc::ETIMEDOUT,
            _ => libc::EIO,
        }
    }
}

/// An open file: its handle on the original and its plan.
pub struct OpenFile {
    /// The inode.
    pub ino: u64,
    /// The catalog row.
    pub row: FileRow,
    handle: HandleBox,
    /// The context of this file's origin calls (one per open, not one per read).
    ctx: CallCtx,
    /// `(start offset in the served file, segment)`, in order.
    segments: Vec<(u64, Segment)>,
    /// The served size.
    pub size: u64,
    /// For kernel passthrough: a local path holding exactly the served bytes.
    pub direct_path: Option<String>,
}

/// Counters for tests and `stats`.
#[derive(Debug, Default)]
pub struct Counters {
    /// Files opened.
    pub opens: AtomicU64,
    /// Bytes served through the daemon.
    pub bytes_read: AtomicU64,
}

/// The serving core.
pub struct Core {
    tree: RwLock<Arc<Tree>>,
    catalog: Mutex<Catalog>,
    origins: HashMap<String, OriginBox>,
    formats: HashMap<String, FormatBox>,
    mode: Mode,
    timeout: Duration,
    handles: RwLock<HashMap<u64, Arc<OpenFile>>>,
    next_fh: AtomicU64,
    /// Counters.
    pub counters: Counters,
}

impl Core {
    /// A core over a built tree, the catalog it came from, and the plugins' objects.
    pub fn new(
        tree: Tree,
        catalog: Catalog,
        origins: HashMap<String, OriginBox>,
        formats: HashMap<String, FormatBox>,
        mode: Mode,
        timeout: Duration,
    ) -> Self {
        Self {
            tree: RwLock::new(Arc::new(tree)),
            catalog: Mutex::new(catalog),
            origins,
            formats,
            mode,
            timeout,
            handles: RwLock::new(HashMap::new()),
            next_fh: AtomicU64::new(1),
            counters: Counters::default(),
        }
    }

    /// The current tree.
    pub fn tree(&self) -> Arc<Tree> {
        self.tree.read().expect("tree lock").clone()
    }

    /// A node's attributes by inode.
    pub fn node(&self, ino: u64) -> Option<NodeAttr> {
        self.tree.read().expect("tree lock").get(ino).map(|n| n.attr())
    }

    /// The attributes of the child `name` of `parent`.
    pub fn lookup(&self, parent: u64, name: &str) -> Option<NodeAttr> {
        self.tree.read().expect("tree lock").lookup(parent, name).map(|n| n.attr())
    }

    /// A directory's own attributes and its children (attributes and names), in name order.
    ///
    /// # Errors
    /// [`ServeError::NotFound`] if `ino` is not a directory.
    pub fn readdir(&self, ino: u64) -> Result<(NodeAttr, Vec<(NodeAttr, String)>), ServeError> {
        let tree = self.tree();
        let dir = tree.get(ino).map(|n| n.attr()).ok_or(ServeError::NotFound)?;
        if dir.kind != AttrKind::Dir {
            return Err(ServeError::NotFound);
        }
        Ok((dir, tree.children(ino).into_iter().map(|n| (n.attr(), n.name.clone())).collect()))
    }

    fn ctx(&self) -> CallCtx {
        CallCtx::with_timeout(self.timeout)
    }

    /// Opens a file: original opened and stamp-checked, plan computed and validated.
    ///
    /// # Errors
    /// [`ServeError`]; every error is also logged once with the file's name.
    pub fn open(&self, ino: u64) -> Result<(u64, Arc<OpenFile>), ServeError> {
        let node = self.node(ino).ok_or(ServeError::NotFound)?;
        let AttrKind::File { file_id, size, .. } = node.kind else { return Err(ServeError::IsDir) };
        let row = self.catalog.lock().expect("catalog lock").file(file_id)?.ok_or(ServeError::Gone(file_id))?;
        let what = format!("{}:{}", row.origin, row.path);
        let res = self.open_row(ino, row, size);
        if let Err(e) = &res {
            tracing::warn!("open {what}: {e}");
        }
        let file = Arc::new(res?);
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        self.handles.write().expect("handles lock").insert(fh, file.clone());
        self.counters.opens.fetch_add(1, Ordering::Relaxed);
        Ok((fh, file))
    }

    fn open_row(&self, ino: u64, row: FileRow, announced: u64) -> Result<OpenFile, ServeError> {
        let plugin_err = |source| ServeError::Plugin { origin: row.origin.clone(), path: row.path.clone(), source };
        let origin = self.origins.get(&row.origin).ok_or_else(|| ServeError::BadPlan {
            origin: row.origin.clone(),
            path: row.path.clone(),
            what: "its origin is not in the manifest any more".into(),
        })?;
        let ctx = self.ctx();
        let handle = origin.open(&ctx, row.path.as_str().into()).into_result().map_err(|e| {
            if e.kind == ErrorKind::NOT_FOUND {
                ServeError::Changed { origin: row.origin.clone(), path: row.path.clone(), what: "it is gone".into() }
            } else {
                plugin_err(e)
            }
        })?;
        let stat = handle.stat();
        let mut diffs = Vec::new();
        if stat.size != row.size {
            diffs.push(format!("size {} -> {}", row.size, stat.size));
        }
        if row.mtime_ns.is_some() && stat.mtime_ns.clone().into_option() != row.mtime_ns {
            diffs.push("mtime differs".to_owned());
        }
        if row.etag.is_some() && stat.etag.as_ref().map(|e| e.to_string()).into_option() != row.etag {
            diffs.push("ETag differs".to_owned());
        }
        if !diffs.is_empty() {
            return Err(ServeError::Changed {
                origin: row.origin.clone(),
                path: row.path.clone(),
                what: diffs.join(", "),
            });
        }
        let format = self.formats.get(&row.plugin).ok_or_else(|| ServeError::BadPlan {
            origin: row.origin.clone(),
            path: row.path.clone(),
            what: format!("format plugin `{}` is not loaded", row.plugin),
        })?;
        let req = PlanRequest {
            mode: match self.mode {
                Mode::Passthrough => PlanMode::PASSTHROUGH,
                Mode::Synthesis => PlanMode::SYNTHESIS,
            },
            info: TrackInfo {
                format: "".into(),
                extension: row.extension.as_str().into(),
                tags: RVec::new(),
                pictures: RVec::new(),
                props: AudioProps::default(),
                audio_offset: 0,
                audio_len: row.size,
                regions: RVec::new(),
                extra: RVec::new(),
            },
            tags: RVec::new(),
            pictures: RVec::new(),
            options: "{}".into(),
            extra: RVec::new(),
        };
        let plan = format.plan(&ctx, &handle, &req).into_result().map_err(plugin_err)?;
        let bad = |what: String| ServeError::BadPlan { origin: row.origin.clone(), path: row.path.clone(), what };
        let mut segments = Vec::with_capacity(plan.segments.len());
        let mut at = 0u64;
        for s in plan.segments.into_iter() {
            match s.kind {
                SegmentKind::LITERAL if s.bytes.len() as u64 == s.len => {}
                SegmentKind::ORIGIN if s.offset.checked_add(s.len).is_some_and(|end| end <= stat.size) => {}
                k => return Err(bad(format!("plan segment {k:?} at {at} is inconsistent"))),
            }
            let len = s.len;
            if len > 0 {
                segments.push((at, s));
            }
            at = at.checked_add(len).ok_or_else(|| bad("plan size overflows".into()))?;
        }
        let size: u64 = segments.iter().map(|(_, s)| s.len).sum();
        if size != announced {
            return Err(bad(format!("the plan is {size} bytes but {announced} were announced")));
        }
        let direct_path = match segments.as_slice() {
            [(0, s)] if s.kind == SegmentKind::ORIGIN && s.offset == 0 && s.len == stat.size => {
                handle.local_path().into_option().map(|p| p.into_string())
            }
            _ => None,
        };
        Ok(OpenFile { ino, row, handle, ctx, segments, size, direct_path })
    }

    /// The open file behind `fh`.
    pub fn handle(&self, fh: u64) -> Option<Arc<OpenFile>> {
        self.handles.read().expect("handles lock").get(&fh).cloned()
    }

    /// Reads up to `size` bytes at `offset` (fewer only at the end of the file).
    ///
    /// # Errors
    /// [`ServeError`] if the handle is unknown or the origin fails or comes up short.
    pub fn read(&self, fh: u64, offset: u64, size: u32) -> Result<Vec<u8>, ServeError> {
        let file = self.handle(fh).ok_or(ServeError::NotFound)?;
        let out = self.read_file(&file, offset, size)?;
        self.counters.bytes_read.fetch_add(out.len() as u64, Ordering::Relaxed);
        Ok(out)
    }

    /// [`read`](Self::read) on an [`OpenFile`].
    ///
    /// # Errors
    /// As for `read`.
    pub fn read_file(&self, file: &OpenFile, offset: u64, size: u32) -> Result<Vec<u8>, ServeError> {
        if offset >= file.size {
            return Ok(Vec::new());
        }
        let end = (offset + u64::from(size)).min(file.size);
        let mut out = vec![0u8; (end - offset) as usize];
        // The first segment that ends after `offset`.
        let first = file.segments.partition_point(|(start, s)| start + s.len <= offset);
        for (start, seg) in &file.segments[first..] {
            if *start >= end {
                break;
            }
            let from = offset.max(*start);
            let to = end.min(start + seg.len);
            let dst = &mut out[(from - offset) as usize..(to - offset) as usize];
            let within = from - start;
            match seg.kind {
                SegmentKind::LITERAL => dst.copy_from_slice(&seg.bytes[within as usize..(within as usize + dst.len())]),
                _ => Self::read_origin(file, seg.offset + within, dst)?,
            }
        }
        Ok(out)
    }

    fn read_origin(file: &OpenFile, mut pos: u64, mut dst: &mut [u8]) -> Result<(), ServeError> {
        while !dst.is_empty() {
            let n = file.handle.read_at(&file.ctx, pos, RSliceMut::from_mut_slice(dst)).into_result().map_err(
                |source| ServeError::Plugin { origin: file.row.origin.clone(), path: file.row.path.clone(), source },
            )?;
            if n == 0 {
                let e = ServeError::Changed {
                    origin: file.row.origin.clone(),
                    path: file.row.path.clone(),
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

    /// Forgets a handle.
    pub fn release(&self, fh: u64) {
        self.handles.write().expect("handles lock").remove(&fh);
    }

    /// Number of open handles.
    pub fn open_handles(&self) -> usize {
        self.handles.read().expect("handles lock").len()
    }
}

//! musefs origin plugin `local`: a directory tree on a local filesystem.
//!
//! Manifest keys: `root` (required, an existing directory), `follow_symlinks`
//! (default `true`). Symbolic links are followed; a link back to a directory already on
//! the walk's path (a loop) is skipped. Reads use `pread`, and handles expose their
//! local path so the host can serve them with kernel FUSE passthrough.

use std::collections::HashSet;
use std::fs::{self, File};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use musefs_plugin_api::{
    path_from_bytes, CallCtx, Entry, EntryKind, ErrorKind, Handle, ListRequest, Lister, Origin, OriginCaps,
    PluginError, PluginResult, Stat,
};
use serde::Deserialize;

/// The plugin's configuration: its `[[origin]]` table.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The origin's name (used by the host).
    #[serde(default)]
    pub name: Option<String>,
    /// The plugin name (`local`).
    #[serde(default)]
    pub kind: Option<String>,
    /// The directory holding the music.
    pub root: PathBuf,
    /// Whether to follow symbolic links while walking.
    #[serde(default = "yes")]
    pub follow_symlinks: bool,
}

fn yes() -> bool {
    true
}

/// A local directory origin.
pub struct LocalOrigin {
    root: PathBuf,
    follow_symlinks: bool,
}

impl LocalOrigin {
    /// Builds an origin from its JSON configuration.
    ///
    /// # Errors
    /// `INVALID_INPUT` naming the key for unknown keys or a bad `root`.
    pub fn from_config(json: &str) -> PluginResult<Self> {
        let cfg: Config =
            serde_json::from_str(json).map_err(|e| PluginError::invalid_input(format!("origin `local`: {e}")))?;
        let meta = fs::metadata(&cfg.root).map_err(|e| {
            PluginError::invalid_input(format!("origin `local`: `root` = {:?}: {e}", cfg.root.display().to_string()))
        })?;
        if !meta.is_dir() {
            return Err(PluginError::invalid_input(format!(
                "origin `local`: `root` = {:?} is not a directory",
                cfg.root.display().to_string()
            )));
        }
        Ok(Self { root: cfg.root, follow_symlinks: cfg.follow_symlinks })
    }

    /// The absolute path of an origin-relative path, refusing anything that escapes the root.
    fn resolve(&self, rel: &str) -> PluginResult<PathBuf> {
        musefs_plugin_api::check_path(rel)?;
        Ok(self.root.join(std::ffi::OsStr::from_bytes(&musefs_plugin_api::path_bytes(rel))))
    }
}

fn stat_of(meta: &fs::Metadata) -> Stat {
    let kind = if meta.is_dir() { EntryKind::DIR } else { EntryKind::FILE };
    let mtime_ns = meta.mtime().saturating_mul(1_000_000_000).saturating_add(meta.mtime_nsec());
    Stat {
        kind,
        size: if meta.is_dir() { 0 } else { meta.len() },
        mtime_ns: abi_stable::std_types::ROption::RSome(mtime_ns),
        etag: abi_stable::std_types::ROption::RNone,
    }
}

impl Origin for LocalOrigin {
    fn list(&self, ctx: &CallCtx, req: &ListRequest) -> PluginResult<Box<dyn Lister>> {
        ctx.check(Instant::now())?;
        let dir = if req.dir.is_empty() { self.root.clone() } else { self.resolve(req.dir.as_str())? };
        let meta = fs::metadata(&dir).map_err(|e| PluginError::from_io(&e, &dir.display().to_string()))?;
        if !meta.is_dir() {
            return Err(PluginError::new(ErrorKind::NOT_FOUND, format!("{} is not a directory", dir.display())));
        }
        let dir_bytes = musefs_plugin_api::path_bytes(req.dir.as_str());
        let start = dir_bytes.iter().position(|&b| b != b'/').unwrap_or(dir_bytes.len());
        let end = dir_bytes.iter().rposition(|&b| b != b'/').map_or(start, |i| i + 1);
        let prefix = dir_bytes[start..end.max(start)].to_vec();
        Ok(Box::new(LocalLister {
            stack: vec![Pending { path: dir, rel: prefix, ancestors: vec![(meta.dev(), meta.ino())] }],
            recursive: req.recursive,
            follow_symlinks: self.follow_symlinks,
            seen_loops: HashSet::new(),
            overflow: Vec::new(),
        }))
    }

    fn stat(&self, ctx: &CallCtx, path: &str) -> PluginResult<Stat> {
        ctx.check(Instant::now())?;
        let abs = self.resolve(path)?;
        let meta = fs::metadata(&abs).map_err(|e| PluginError::from_io(&e, path))?;
        Ok(stat_of(&meta))
    }

    fn open(&self, ctx: &CallCtx, path: &str) -> PluginResult<Arc<dyn Handle>> {
        ctx.check(Instant::now())?;
        let abs = self.resolve(path)?;
        let file = File::open(&abs).map_err(|e| PluginError::from_io(&e, path))?;
        let meta = file.metadata().map_err(|e| PluginError::from_io(&e, path))?;
        if meta.is_dir() {
            return Err(PluginError::invalid_input(format!("{path} is a directory")));
        }
        Ok(Arc::new(LocalHandle { stat: stat_of(&meta), file, path: abs }))
    }

    fn caps(&self) -> OriginCaps {
        OriginCaps::LOCAL | OriginCaps::LOCAL_PATHS
    }
}

struct Pending {
    path: PathBuf,
    /// The origin-relative path, as bytes (Unix names need not be UTF-8).
    rel: Vec<u8>,
    /// (dev, ino) of every directory from the walk's root to this one: a symlink to any
    /// of them would loop.
    ancestors: Vec<(u64, u64)>,
}

struct LocalLister {
    stack: Vec<Pending>,
    recursive: bool,
    follow_symlinks: bool,
    seen_loops: HashSet<(u64, u64)>,
    /// Entries of a directory read past the last page's `max`, returned first.
    overflow: Vec<Entry>,
}

impl Lister for LocalLister {
    fn next_page(&mut self, ctx: &CallCtx, max: usize) -> PluginResult<Vec<Entry>> {
        let start = Instant::now();
        let mut out = std::mem::take(&mut self.overflow);
        while out.len() < max {
            let Some(dir) = self.stack.pop() else { break };
            ctx.check(start)?;
            let read = match fs::read_dir(&dir.path) {
                Ok(r) => r,
                // The root must be readable; a subdirectory that is not is reported as
                // unlisted (the host then prunes nothing below it).
                Err(e) if !dir.rel.is_empty() || dir.ancestors.len() > 1 => {
                    musefs_plugin_api::host::warn(format!("unreadable directory {}: {e}", dir.path.display()));
                    let none = abi_stable::std_types::ROption::RNone;
                    let stat = Stat {
                        kind: EntryKind::UNLISTED,
                        size: 0,
                        mtime_ns: none,
                        etag: abi_stable::std_types::ROption::RNone,
                    };
                    out.push(Entry { path: path_from_bytes(&dir.rel).into(), stat });
                    continue;
                }
                Err(e) => return Err(PluginError::from_io(&e, &dir.path.display().to_string())),
            };
            let mut names: Vec<_> = read.filter_map(Result::ok).collect();
            // Sorted so listings are deterministic; the stack is LIFO, so push in reverse.
            names.sort_by_key(|e| e.file_name());
            let mut subdirs = Vec::new();
            for de in names {
                // A name that is not UTF-8 (Latin-1 from an old system) is served too: its
                // path string stands for its bytes (see `path_from_bytes`).
                let name = de.file_name();
                let name = name.as_bytes();
                let path = de.path();
                let ft = match de.file_type() {
                    Ok(t) => t,
                    Err(_) => continue,
                };
                if ft.is_symlink() && !self.follow_symlinks {
                    continue;
                }
                // metadata() follows symlinks; a dangling link is skipped.
                let Ok(meta) = fs::metadata(&path) else { continue };
                let rel = if dir.rel.is_empty() { name.to_vec() } else { [&dir.rel[..], b"/", name].concat() };
                if meta.is_dir() {
                    let id = (meta.dev(), meta.ino());
                    if dir.ancestors.contains(&id) {
                        if self.seen_loops.insert(id) {
                            musefs_plugin_api::host::warn(format!("symlink loop at {} skipped", path.display()));
                        }
                        continue;
                    }
                    if self.recursive {
                        let mut ancestors = dir.ancestors.clone();
                        ancestors.push(id);
                        subdirs.push(Pending { path, rel, ancestors });
                    } else {
                        out.push(Entry { path: path_from_bytes(&rel).into(), stat: stat_of(&meta) });
                    }
                } else if meta.is_file() {
                    out.push(Entry { path: path_from_bytes(&rel).into(), stat: stat_of(&meta) });
                }
            }
            self.stack.extend(subdirs.into_iter().rev());
        }
        // A page never holds more than `max` entries; the rest wait for the next one.
        if out.len() > max {
            self.overflow = out.split_off(max);
        }
        Ok(out)
    }
}

struct LocalHandle {
    file: File,
    stat: Stat,
    path: PathBuf,
}

impl Handle for LocalHandle {
    fn len(&self) -> u64 {
        self.stat.size
    }

    fn stat(&self) -> Stat {
        self.stat.clone()
    }

    fn read_at(&self, ctx: &CallCtx, offset: u64, buf: &mut [u8]) -> PluginResult<usize> {
        if ctx.is_cancelled() {
            return Err(PluginError::new(ErrorKind::CANCELLED, "read cancelled"));
        }
        // The handle is pinned to the size seen at open: never read past it, even if the
        // file grew since.
        let avail = self.stat.size.saturating_sub(offset);
        let want = buf.len().min(usize::try_from(avail).unwrap_or(usize::MAX));
        if want == 0 {
            return Ok(0);
        }
        loop {
            match self.file.read_at(&mut buf[..want], offset) {
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(PluginError::from_io(&e, &self.path.display().to_string())),
            }
        }
    }

    fn local_path(&self) -> Option<String> {
        self.path.to_str().map(str::to_owned)
    }
}

musefs_plugin_api::export_plugin! {
    name: "local",
    version: env!("CARGO_PKG_VERSION"),
    description: "A directory on a local filesystem (pread, kernel passthrough)",
    origin: LocalOrigin::from_config,
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn origin(root: &Path) -> LocalOrigin {
        LocalOrigin::from_config(&serde_json::json!({ "name": "t", "kind": "local", "root": root }).to_string())
            .unwrap()
    }

    fn walk(o: &LocalOrigin, recursive: bool) -> Vec<String> {
        let ctx = CallCtx::unlimited();
        let mut l = o.list(&ctx, &ListRequest { dir: "".into(), recursive }).unwrap();
        let mut all = Vec::new();
        loop {
            let page = l.next_page(&ctx, 2).unwrap();
            if page.is_empty() {
                break;
            }
            all.extend(page.into_iter().map(|e| e.path.into_string()));
        }
        all.sort();
        all
    }

    #[test]
    fn walks_paged_and_survives_symlink_loops() {
        let t = tempfile::tempdir().unwrap();
        fs::create_dir_all(t.path().join("a/b")).unwrap();
        fs::write(t.path().join("a/b/x.flac"), b"1").unwrap();
        fs::write(t.path().join("a/y.mp3"), b"22").unwrap();
        fs::write(t.path().join("z.ogg"), b"333").unwrap();
        std::os::unix::fs::symlink(t.path().join("a"), t.path().join("a/b/loop")).unwrap();
        std::os::unix::fs::symlink(t.path().join("nowhere"), t.path().join("dangling")).unwrap();
        let o = origin(t.path());
        assert_eq!(walk(&o, true), vec!["a/b/x.flac", "a/y.mp3", "z.ogg"]);
        assert_eq!(walk(&o, false), vec!["a", "z.ogg"]);
    }

    #[test]
    fn reads_with_pread_and_pins_size() {
        let t = tempfile::tempdir().unwrap();
        fs::write(t.path().join("f"), b"hello world").unwrap();
        let o = origin(t.path());
        let ctx = CallCtx::unlimited();
        let h = o.open(&ctx, "f").unwrap();
        let mut buf = [0u8; 5];
        assert_eq!(h.read_at(&ctx, 6, &mut buf).unwrap(), 5);
        assert_eq!(&buf, b"world");
        assert_eq!(h.read_at(&ctx, 11, &mut buf).unwrap(), 0);
        assert!(h.local_path().unwrap().ends_with("/f"));
    }

    #[test]
    fn refuses_paths_outside_the_root_and_bad_config() {
        let t = tempfile::tempdir().unwrap();
        let o = origin(t.path());
        let ctx = CallCtx::unlimited();
        for bad in ["../etc/passwd", "/etc/passwd", "a/../../x"] {
            let e = o.open(&ctx, bad).err().unwrap();
            assert_eq!(e.kind, ErrorKind::INVALID_INPUT, "{bad}");
        }
        let e = LocalOrigin::from_config(r#"{"root":"/nonexistent/x"}"#).err().unwrap();
        assert!(e.message.contains("`root`"), "{e}");
        let e = LocalOrigin::from_config(r#"{"root":"/tmp","rooot":1}"#).err().unwrap();
        assert!(e.message.contains("rooot"), "{e}");
    }
}

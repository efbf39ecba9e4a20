//! The tree snapshot: the rendered tree saved beside the catalog, so a mount loads it in
//! one read instead of rendering every file's template again.
//!
//! A snapshot is valid for one catalog (its [`Catalog::catalog_id`]), one rendering
//! configuration (views, render options, cover name, template keys and this musefs
//! version: [`config_key`]) and one position in the catalog's change log. A mount loads
//! it and then applies the changes logged after that position, exactly as a running
//! mount does; a snapshot that does not match, fails its checksum or does not parse is
//! ignored (with a log line) and the tree is built from the catalog, so the snapshot can
//! make a mount faster but never different from what the catalog says.
//!
//! Format (little-endian): magic `MUSEFSTS`, format version `u32`, catalog id (`u16`
//! length + bytes), config key (32 bytes), change-log position `i64`, view roots
//! (`u32` count + `u64`s), node count `u64`, the nodes, then the BLAKE3 hash of
//! everything before it. A node is `ino u64, parent u64, kind u8, name (u16 + bytes)`
//! followed by, for a directory, its path (`u32` + bytes) and time (`i64` ns); for a file `file_id i64,
//! size u64, mtime_ns i64, gen i64, cover u8`; for a cover sidecar its directory `u64`.
//!
//! [`Catalog::catalog_id`]: crate::catalog::Catalog::catalog_id

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

use super::{InoMap, Node, NodeKind, Tree, NAME_MAX, ROOT};
use crate::manifest::View;
use crate::template::RenderOptions;

const MAGIC: &[u8; 8] = b"MUSEFSTS";
/// The snapshot format version (2: inodes below 2^63; 3: directory times; 4: sidecars).
pub const VERSION: u32 = 4;

/// Why a snapshot was not used.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// No snapshot file.
    #[error("no snapshot")]
    Missing,
    /// Reading or writing the file failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// Written for another catalog, configuration or musefs version.
    #[error("it was written for {0}")]
    Stale(&'static str),
    /// Truncated, corrupt or inconsistent.
    #[error("it is corrupt ({0})")]
    Corrupt(&'static str),
}

/// The key of a rendering configuration: what the tree depends on besides the catalog.
pub fn config_key(views: &[View], opts: &RenderOptions, cover_name: Option<&str>, keys: &[String]) -> [u8; 32] {
    let mut h = blake3::Hasher::new();
    let mut field = |b: &[u8]| {
        h.update(&(b.len() as u64).to_le_bytes());
        h.update(b);
    };
    field(env!("CARGO_PKG_VERSION").as_bytes());
    field(&VERSION.to_le_bytes());
    field(&crate::template::RENDER_VERSION.to_le_bytes());
    for v in views {
        field(v.name.as_deref().unwrap_or("\0").as_bytes());
        field(v.template.source().as_bytes());
    }
    field(&(opts.track_digits as u64).to_le_bytes());
    field(&(opts.disc_digits as u64).to_le_bytes());
    field(opts.slash_replacement.as_bytes());
    field(&[u8::from(opts.case_insensitive)]);
    field(cover_name.unwrap_or("\0").as_bytes());
    for k in keys {
        field(k.as_bytes());
    }
    *h.finalize().as_bytes()
}

impl Tree {
    /// The tree as snapshot bytes, valid for `catalog_id`, `key` and change-log `position`.
    pub fn to_snapshot(&self, catalog_id: &str, key: &[u8; 32], position: i64) -> Vec<u8> {
        let mut b = Vec::with_capacity(64 + self.nodes.len() * 64);
        b.extend_from_slice(MAGIC);
        b.extend_from_slice(&VERSION.to_le_bytes());
        put_str16(&mut b, catalog_id);
        b.extend_from_slice(key);
        b.extend_from_slice(&position.to_le_bytes());
        b.extend_from_slice(&(self.view_roots.len() as u32).to_le_bytes());
        for r in &self.view_roots {
            b.extend_from_slice(&r.to_le_bytes());
        }
        b.extend_from_slice(&(self.nodes.len() as u64).to_le_bytes());
        for n in self.nodes.values() {
            b.extend_from_slice(&n.ino.to_le_bytes());
            b.extend_from_slice(&n.parent.to_le_bytes());
            match &n.kind {
                NodeKind::Dir(_) => {
                    b.push(0);
                    put_str16(&mut b, &n.name);
                    let path = self.dir_paths.get(&n.ino).map_or("", String::as_str);
                    b.extend_from_slice(&(path.len() as u32).to_le_bytes());
                    b.extend_from_slice(path.as_bytes());
                    b.extend_from_slice(&self.dir_mtime(n.ino).to_le_bytes());
                }
                NodeKind::File { file_id, size, mtime_ns, gen, cover } => {
                    b.push(1);
                    put_str16(&mut b, &n.name);
                    b.extend_from_slice(&file_id.to_le_bytes());
                    b.extend_from_slice(&size.to_le_bytes());
                    b.extend_from_slice(&mtime_ns.to_le_bytes());
                    b.extend_from_slice(&gen.to_le_bytes());
                    b.push(u8::from(*cover));
                }
                NodeKind::Cover { dir } => {
                    b.push(2);
                    put_str16(&mut b, &n.name);
                    b.extend_from_slice(&dir.to_le_bytes());
                }
                NodeKind::Sidecar { file_id, size, mtime_ns, gen } => {
                    b.push(3);
                    put_str16(&mut b, &n.name);
                    b.extend_from_slice(&file_id.to_le_bytes());
                    b.extend_from_slice(&size.to_le_bytes());
                    b.extend_from_slice(&mtime_ns.to_le_bytes());
                    b.extend_from_slice(&gen.to_le_bytes());
                }
            }
        }
        let sum = blake3::hash(&b);
        b.extend_from_slice(sum.as_bytes());
        b
    }

    /// The tree in `bytes` and its change-log position, if they were written for
    /// `catalog_id` and `key`; `views`, `opts` and `cover_name` are the configuration
    /// `key` was computed from.
    ///
    /// # Errors
    /// [`SnapshotError::Stale`] or [`SnapshotError::Corrupt`].
    pub fn from_snapshot(
        bytes: &[u8],
        catalog_id: &str,
        key: &[u8; 32],
        views: &[View],
        opts: &RenderOptions,
        cover_name: Option<&str>,
    ) -> Result<(Tree, i64), SnapshotError> {
        if bytes.len() < MAGIC.len() + 4 + 32 || &bytes[..8] != MAGIC {
            return Err(SnapshotError::Corrupt("not a musefs tree snapshot"));
        }
        let (body, sum) = bytes.split_at(bytes.len() - 32);
        if blake3::hash(body).as_bytes() != sum {
            return Err(SnapshotError::Corrupt("checksum mismatch"));
        }
        let mut r = Reader { b: body, pos: 8 };
        if r.u32()? != VERSION {
            return Err(SnapshotError::Stale("another snapshot format"));
        }
        if r.str16()? != catalog_id {
            return Err(SnapshotError::Stale("another catalog"));
        }
        if r.take(32)? != key {
            return Err(SnapshotError::Stale("other templates, options or musefs version"));
        }
        let position = r.u64()? as i64;
        let roots = r.u32()? as usize;
        if roots != views.len() {
            return Err(SnapshotError::Corrupt("view count"));
        }
        let view_roots = (0..roots).map(|_| r.u64()).collect::<Result<Vec<_>, _>>()?;
        let count = usize::try_from(r.u64()?).map_err(|_| SnapshotError::Corrupt("node count"))?;
        if count > body.len() / 20 {
            return Err(SnapshotError::Corrupt("node count"));
        }
        let mut nodes: InoMap<Node> = InoMap::with_capacity_and_hasher(count + 64, Default::default());
        let mut dir_paths = InoMap::default();
        let mut dir_mtimes = InoMap::default();
        for _ in 0..count {
            let ino = r.u64()?;
            let parent = r.u64()?;
            let tag = r.u8()?;
            let name = r.str16()?.to_owned();
            let kind = match tag {
                0 => {
                    let len = r.u32()? as usize;
                    let path = std::str::from_utf8(r.take(len)?).map_err(|_| SnapshotError::Corrupt("path"))?;
                    dir_paths.insert(ino, path.to_owned());
                    dir_mtimes.insert(ino, r.u64()? as i64);
                    NodeKind::Dir(BTreeMap::new())
                }
                1 => NodeKind::File {
                    file_id: r.u64()? as i64,
                    size: r.u64()?,
                    mtime_ns: r.u64()? as i64,
                    gen: r.u64()? as i64,
                    cover: r.u8()? != 0,
                },
                2 => NodeKind::Cover { dir: r.u64()? },
                3 => NodeKind::Sidecar {
                    file_id: r.u64()? as i64,
                    size: r.u64()?,
                    mtime_ns: r.u64()? as i64,
                    gen: r.u64()? as i64,
                },
                _ => return Err(SnapshotError::Corrupt("node kind")),
            };
            let valid_name = if ino == ROOT {
                name.is_empty() && parent == ROOT
            } else {
                !name.is_empty() && name.len() <= NAME_MAX && name != "." && name != ".." && !name.contains(['/', '\0'])
            };
            if !valid_name || nodes.insert(ino, Node { ino, parent, name, kind }).is_some() {
                return Err(SnapshotError::Corrupt("node"));
            }
        }
        if r.pos != body.len() {
            return Err(SnapshotError::Corrupt("trailing bytes"));
        }
        // Link children to parents: every parent must be a directory, every name unique.
        let links: Vec<(u64, u64)> = nodes.values().filter(|n| n.ino != ROOT).map(|n| (n.parent, n.ino)).collect();
        for (parent, ino) in links {
            let name = nodes[&ino].name.clone();
            match nodes.get_mut(&parent).map(|p| &mut p.kind) {
                Some(NodeKind::Dir(children)) => {
                    if children.insert(name, ino).is_some() {
                        return Err(SnapshotError::Corrupt("duplicate name"));
                    }
                }
                _ => return Err(SnapshotError::Corrupt("parent is not a directory")),
            }
        }
        if !matches!(nodes.get(&ROOT).map(|n| &n.kind), Some(NodeKind::Dir(_)))
            || view_roots.iter().any(|r| !matches!(nodes.get(r).map(|n| &n.kind), Some(NodeKind::Dir(_))))
        {
            return Err(SnapshotError::Corrupt("root"));
        }
        let tree = Tree {
            nodes,
            dir_paths,
            views: views.to_vec(),
            view_roots,
            opts: opts.clone(),
            cover_name: cover_name.map(str::to_owned),
            created: Vec::new(),
            dir_mtimes,
            touched: Vec::new(),
            folded: None,
            sidecar_nodes: std::collections::HashMap::new(),
        };
        let mut tree = tree;
        tree.reindex();
        Ok((tree, position))
    }
}

/// Reads the snapshot file at `path`.
///
/// # Errors
/// [`SnapshotError::Missing`] when there is none; I/O errors.
pub fn read(path: &Path) -> Result<Vec<u8>, SnapshotError> {
    std::fs::read(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => SnapshotError::Missing,
        _ => SnapshotError::Io(e),
    })
}

/// Writes `bytes` to `path` atomically (a temporary file, fsynced, renamed over it): a
/// crash leaves the old snapshot or the new one, never a torn one.
///
/// # Errors
/// I/O errors (the old snapshot is left as it was).
pub fn write(path: &Path, bytes: &[u8]) -> Result<(), SnapshotError> {
    let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
    let res = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_data()?;
        std::fs::rename(&tmp, path)
    })();
    if res.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    Ok(res?)
}

fn put_str16(b: &mut Vec<u8>, s: &str) {
    let s = &s.as_bytes()[..s.len().min(u16::MAX as usize)];
    b.extend_from_slice(&(s.len() as u16).to_le_bytes());
    b.extend_from_slice(s);
}

struct Reader<'a> {
    b: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], SnapshotError> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.b.len()).ok_or(SnapshotError::Corrupt("truncated"))?;
        let s = &self.b[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    fn u8(&mut self) -> Result<u8, SnapshotError> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, SnapshotError> {
        Ok(u16::from_le_bytes(self.take(2)?.try_into().expect("2 bytes")))
    }
    fn u32(&mut self) -> Result<u32, SnapshotError> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().expect("4 bytes")))
    }
    fn u64(&mut self) -> Result<u64, SnapshotError> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().expect("8 bytes")))
    }
    fn str16(&mut self) -> Result<&'a str, SnapshotError> {
        let n = self.u16()? as usize;
        std::str::from_utf8(self.take(n)?).map_err(|_| SnapshotError::Corrupt("name"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::template::Template;
    use crate::tree::tests::file;

    fn views() -> Vec<View> {
        vec![
            View { name: None, template: Template::parse("$artist/$title").unwrap() },
            View { name: Some("By title".into()), template: Template::parse("$title").unwrap() },
        ]
    }

    fn sample() -> Tree {
        let files = vec![
            file(1, &[("artist", "A"), ("title", "one")]),
            file(2, &[("artist", "A"), ("title", "one")]),
            file(3, &[("artist", "B/C"), ("title", "三")]),
            file(4, &[("title", "..")]),
        ];
        Tree::build(&files, &views(), &RenderOptions::default(), Some("cover.jpg"))
    }

    fn key() -> [u8; 32] {
        config_key(&views(), &RenderOptions::default(), Some("cover.jpg"), &["artist".into(), "title".into()])
    }

    #[test]
    fn round_trips_every_node_and_stays_updatable() {
        let t = sample();
        let bytes = t.to_snapshot("cat1", &key(), 42);
        let (mut back, pos) =
            Tree::from_snapshot(&bytes, "cat1", &key(), &views(), &RenderOptions::default(), Some("cover.jpg"))
                .unwrap();
        assert_eq!(pos, 42);
        assert_eq!(back.len(), t.len());
        assert_eq!(back.paths(), t.paths());
        for n in t.nodes.values() {
            let m = back.get(n.ino).unwrap();
            assert_eq!((m.parent, &m.name, m.attr()), (n.parent, &n.name, n.attr()));
            assert_eq!(back.children(n.ino).len(), t.children(n.ino).len());
        }
        // Updates work on a loaded tree exactly as on a built one.
        let mut built = sample();
        let moved = file(1, &[("artist", "Z"), ("title", "uno")]);
        assert_eq!(back.upsert_file(&moved), built.upsert_file(&moved));
        assert_eq!(back.remove_file(3), built.remove_file(3));
        assert_eq!(back.paths(), built.paths());
    }

    #[test]
    fn another_catalog_configuration_or_corruption_is_refused() {
        let t = sample();
        let bytes = t.to_snapshot("cat1", &key(), 7);
        let load = |b: &[u8], id: &str, k: &[u8; 32]| {
            Tree::from_snapshot(b, id, k, &views(), &RenderOptions::default(), Some("cover.jpg")).map(|_| ())
        };
        assert!(matches!(load(&bytes, "cat2", &key()), Err(SnapshotError::Stale(_))));
        let other = config_key(&views(), &RenderOptions::default(), None, &["artist".into(), "title".into()]);
        assert_ne!(other, key());
        assert!(matches!(load(&bytes, "cat1", &other), Err(SnapshotError::Stale(_))));
        let opts = RenderOptions { track_digits: 3, ..RenderOptions::default() };
        assert_ne!(config_key(&views(), &opts, Some("cover.jpg"), &["artist".into(), "title".into()]), key());
        for cut in [0, 8, 20, bytes.len() / 2, bytes.len() - 1] {
            assert!(matches!(load(&bytes[..cut], "cat1", &key()), Err(SnapshotError::Corrupt(_))), "cut {cut}");
        }
        for i in [9, 60, bytes.len() / 2, bytes.len() - 40] {
            let mut bad = bytes.clone();
            bad[i] ^= 0x10;
            assert!(matches!(load(&bad, "cat1", &key()), Err(SnapshotError::Corrupt(_))), "flip {i}");
        }
    }

    #[test]
    fn a_well_formed_but_inconsistent_snapshot_is_refused() {
        // A node whose parent is a file, and a name with a slash: the checksum is right
        // (written by a buggy writer, say), the structure is not.
        let mut t = sample();
        let f = *t.nodes.keys().find(|&&i| matches!(t.nodes[&i].kind, NodeKind::File { .. })).unwrap();
        let mut orphan = t.nodes[&f].clone();
        orphan.ino = 999_999;
        orphan.parent = f;
        t.nodes.insert(orphan.ino, orphan);
        let bytes = t.to_snapshot("c", &key(), 1);
        let e = Tree::from_snapshot(&bytes, "c", &key(), &views(), &RenderOptions::default(), Some("cover.jpg"))
            .err()
            .unwrap();
        assert!(e.to_string().contains("not a directory"), "{e}");
        let mut t = sample();
        t.nodes.get_mut(&f).unwrap().name = "a/b".into();
        let bytes = t.to_snapshot("c", &key(), 1);
        assert!(
            Tree::from_snapshot(&bytes, "c", &key(), &views(), &RenderOptions::default(), Some("cover.jpg")).is_err()
        );
    }

    #[test]
    fn writes_are_atomic_and_leave_no_temporary_file() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("tree.snapshot");
        assert!(matches!(read(&p), Err(SnapshotError::Missing)));
        write(&p, b"first").unwrap();
        write(&p, b"second").unwrap();
        assert_eq!(read(&p).unwrap(), b"second");
        let names: Vec<_> = std::fs::read_dir(d.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, vec![std::ffi::OsString::from("tree.snapshot")]);
    }
}

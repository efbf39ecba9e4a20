//! The virtual tree rendered from the catalog by the templates.
//!
//! Inode numbers are stable across remounts: a file's inode is derived from its
//! catalog id and its view, a directory's from a hash of its view and path. Names are
//! sanitised component by component and collisions are disambiguated deterministically
//! (files are placed in origin/path order; later ones get ` (2)`, ` (3)`, ...).
//!
//! The tree is updated in place when the catalog changes ([`Tree::upsert_file`],
//! [`Tree::remove_file`]): a file keeps its inode wherever its tags move it, directories
//! left empty are removed, and each update returns the kernel cache entries it made
//! stale ([`Inval`]). A directory holding a file with a picture gets a virtual cover
//! file (its inode derived from the directory's).

pub mod load;
pub mod snapshot;

use std::collections::BTreeMap;

use crate::catalog::TreeFile;
use crate::manifest::View;
use crate::template::{sanitize_component, sanitize_into, truncate_utf8, Fields, RenderOptions};
use crate::util::InoMap;

/// The root directory's inode.
pub const ROOT: u64 = 1;
// Inode layout, all below 2^63 (inodes are `ino_t`, and tools that store them signed
// must not see negative ones): directories have bit 62 (the rest a hash of their path),
// cover sidecars their directory's inode with bit 61, files `view << 40 | file id` with
// the low 13 bits of their generation at bits 48-60 (see [`public_ino`]); the root is 1.
const DIR_BIT: u64 = 1 << 62;
/// Longest name component in bytes.
pub const NAME_MAX: usize = 255;

/// What a node is.
#[derive(Debug, Clone)]
pub enum NodeKind {
    /// A directory: children by name.
    Dir(BTreeMap<String, u64>),
    /// A file.
    File {
        /// Catalog file id.
        file_id: i64,
        /// The original's size (the served size in passthrough mode).
        size: u64,
        /// Modification time, ns since the epoch.
        mtime_ns: i64,
        /// The catalog generation the node was built from.
        gen: i64,
        /// Whether the file has a picture (for the cover sidecar).
        cover: bool,
    },
    /// The virtual cover image of directory `dir` (from its first file with a picture).
    Cover {
        /// The directory.
        dir: u64,
    },
    /// A sidecar (cue sheet, log, lyrics, booklet, image) served unchanged, placed in
    /// the directories of the tracks that sit next to it in its origin.
    Sidecar {
        /// Catalog file id (the sidecar's row).
        file_id: i64,
        /// Its size.
        size: u64,
        /// The original's modification time, ns since the epoch.
        mtime_ns: i64,
        /// The catalog generation the node was built from.
        gen: i64,
    },
}

/// One node of the tree.
#[derive(Debug, Clone)]
pub struct Node {
    /// Its inode.
    pub ino: u64,
    /// Its parent's inode (the root is its own parent).
    pub parent: u64,
    /// Its name.
    pub name: String,
    /// Directory or file.
    pub kind: NodeKind,
}

/// What a node is, without its children: cheap to copy on the getattr/lookup path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttrKind {
    /// A directory.
    Dir {
        /// How many of its entries are directories (its link count is 2 more).
        subdirs: u32,
    },
    /// A file.
    File {
        /// Catalog file id.
        file_id: i64,
        /// The original's size.
        size: u64,
        /// Modification time, ns since the epoch.
        mtime_ns: i64,
        /// The catalog generation.
        gen: i64,
    },
    /// A cover sidecar of directory `dir`.
    Cover {
        /// The directory.
        dir: u64,
        /// The image size (0 until the serving core fills it in).
        size: u64,
    },
}

impl AttrKind {
    /// Whether this is a directory.
    pub fn is_dir(&self) -> bool {
        matches!(self, Self::Dir { .. })
    }
}

/// A node's attributes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeAttr {
    /// Its inode.
    pub ino: u64,
    /// Its parent's inode.
    pub parent: u64,
    /// Directory or file.
    pub kind: AttrKind,
    /// Modification time, ns since the epoch: a file's is the later of its original's
    /// and its last edit; a directory's the latest change of an entry at or below it;
    /// a cover sidecar's its directory's. (0 from [`Node::attr`], which cannot see the
    /// tree: use [`Tree::attr`].)
    pub mtime_ns: i64,
}

impl Node {
    /// The node's attributes (no children).
    pub fn attr(&self) -> NodeAttr {
        let kind = match self.kind {
            NodeKind::Dir(ref children) => AttrKind::Dir {
                subdirs: u32::try_from(children.values().filter(|&&i| is_dir_ino(i)).count()).unwrap_or(u32::MAX),
            },
            NodeKind::File { file_id, size, mtime_ns, gen, .. }
            | NodeKind::Sidecar { file_id, size, mtime_ns, gen } => AttrKind::File { file_id, size, mtime_ns, gen },
            NodeKind::Cover { dir } => AttrKind::Cover { dir, size: 0 },
        };
        let mtime_ns = match self.kind {
            NodeKind::File { mtime_ns, .. } | NodeKind::Sidecar { mtime_ns, .. } => mtime_ns,
            _ => 0,
        };
        NodeAttr { ino: self.public_ino(), parent: self.parent, kind, mtime_ns }
    }

    /// The inode the kernel sees ([`public_ino`] for files, the node's own otherwise).
    pub fn public_ino(&self) -> u64 {
        match self.kind {
            NodeKind::File { gen, .. } => public_ino(self.ino, gen),
            _ => self.ino,
        }
    }
}

/// A kernel cache entry made stale by a tree update.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inval {
    /// The name `name` in directory `parent` appeared, vanished or changed.
    Entry {
        /// The directory.
        parent: u64,
        /// The name.
        name: String,
    },
    /// The attributes or contents of an inode changed.
    Inode(u64),
}

/// The whole tree.
#[derive(Debug, Default)]
pub struct Tree {
    nodes: InoMap<Node>,
    dir_paths: InoMap<String>,
    views: Vec<View>,
    view_roots: Vec<u64>,
    opts: RenderOptions,
    cover_name: Option<String>,
    /// Directories created by the update in progress (reported by `upsert_file`).
    created: Vec<Inval>,
    /// Each directory's modification time (ns): the latest change of an entry at or
    /// below it (see [`Tree::touch`]).
    dir_mtimes: InoMap<i64>,
    /// Directories whose time the update in progress moved (their cached attributes go).
    touched: Vec<u64>,
    /// With `case_insensitive`: every entry by `(parent, case-folded name)`.
    folded: Option<std::collections::HashMap<(u64, String), u64>>,
    /// The nodes of each placed sidecar (one per directory it is shown in).
    sidecar_nodes: std::collections::HashMap<i64, Vec<u64>>,
}

/// A name as case-insensitive mode compares it.
fn fold(name: &str) -> String {
    name.to_lowercase()
}

/// A file's tag values, and the fields that come from where the original lies:
/// `$filename` (its name without the extension), `$dirname` (its folder's name, empty at
/// the origin's root) and `$origin` (the origin's name).
struct TagFields<'a>(&'a TreeFile);

impl Fields for TagFields<'_> {
    fn values(&self, field: &str) -> Vec<String> {
        // A path standing for non-UTF-8 bytes renders lossily (U+FFFD), deterministically.
        let path = || musefs_plugin_api::display_path(&self.0.file.path);
        let one = |s: &str| if s.is_empty() { Vec::new() } else { vec![s.to_owned()] };
        match field {
            "filename" => {
                let path = path();
                let name = path.rsplit('/').next().unwrap_or("");
                // `.hidden` keeps its dot; `a.b.flac` loses only `.flac`.
                let stem = match name.rfind('.') {
                    Some(i) if i > 0 => &name[..i],
                    _ => name,
                };
                one(stem)
            }
            "dirname" => {
                let path = path();
                one(path.rsplit('/').nth(1).unwrap_or(""))
            }
            "origin" => one(&self.0.file.origin),
            _ => self.0.tags.iter().filter(|(k, _)| k == field).map(|(_, v)| v.clone()).collect(),
        }
    }
}

/// File `f`'s path in `view` as its template renders it, appended to `out`: sanitised
/// components (never empty, never holding `/`) joined by `/`, the last one the name
/// (without extension).
fn render_path(out: &mut String, view: &View, opts: &RenderOptions, f: &TreeFile) {
    let rendered = view.template.render(&TagFields(f), opts);
    for (i, c) in rendered.split('/').enumerate() {
        if i > 0 {
            out.push('/');
        }
        sanitize_into(out, c, NAME_MAX);
    }
}

/// The rendered paths of a run of files, in one buffer (a chunk crosses threads as two
/// allocations, not one per file).
#[derive(Default)]
struct Paths {
    text: String,
    ends: Vec<usize>,
}

impl Paths {
    fn render(view: &View, opts: &RenderOptions, files: &[&TreeFile]) -> Self {
        let mut p = Paths { text: String::with_capacity(files.len() * 48), ends: Vec::with_capacity(files.len()) };
        for f in files {
            render_path(&mut p.text, view, opts, f);
            p.ends.push(p.text.len());
        }
        p
    }

    fn iter(&self) -> impl Iterator<Item = &str> {
        let starts = std::iter::once(0).chain(self.ends.iter().copied());
        starts.zip(self.ends.iter().copied()).map(|(a, b)| &self.text[a..b])
    }
}

/// Files rendered per chunk handed from a renderer thread to the placing one.
const RENDER_CHUNK: usize = 4096;

/// How many threads render paths while this one places files: the other cores, for a
/// tree large enough to be worth it.
fn renderers_for(files: usize) -> usize {
    let cores = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    if files < 4 * RENDER_CHUNK {
        0
    } else {
        (cores - 1).min(7)
    }
}

/// Calls `place` with every file of `files` and its rendered path ([`render_path`]), in
/// order; the paths are rendered ahead by `renderers` threads (a few chunks in flight;
/// none: here).
fn render_each<'f>(
    view: &View,
    opts: &RenderOptions,
    files: &[&'f TreeFile],
    renderers: usize,
    mut place: impl FnMut(&'f TreeFile, &str),
) {
    const CHUNK: usize = RENDER_CHUNK;
    if renderers == 0 {
        let paths = Paths::render(view, opts, files);
        for (f, p) in files.iter().zip(paths.iter()) {
            place(f, p);
        }
        return;
    }
    std::thread::scope(|s| {
        // Renderer `r` renders chunks r, r + renderers, ...; each sends them in order on
        // its own channel, so taking them round-robin gives every chunk in order.
        let channels: Vec<_> = (0..renderers)
            .map(|r| {
                let (tx, rx) = std::sync::mpsc::sync_channel::<Paths>(4);
                s.spawn(move || {
                    for chunk in files.chunks(CHUNK).skip(r).step_by(renderers) {
                        if tx.send(Paths::render(view, opts, chunk)).is_err() {
                            return;
                        }
                    }
                });
                rx
            })
            .collect();
        for (i, chunk) in files.chunks(CHUNK).enumerate() {
            let Ok(paths) = channels[i % renderers].recv() else {
                // A renderer stopped early (it panicked): the scope re-raises its panic.
                return;
            };
            for (f, p) in chunk.iter().zip(paths.iter()) {
                place(f, p);
            }
        }
    });
}

fn dir_ino(view: usize, path: &str, taken: &InoMap<Node>) -> u64 {
    let mut h = blake3::Hasher::new();
    h.update(&(view as u64).to_le_bytes());
    h.update(path.as_bytes());
    let b = h.finalize();
    let hash = u64::from_le_bytes(b.as_bytes()[..8].try_into().expect("8 bytes"));
    let mut ino = ((hash & (COVER_BIT - 1)) | DIR_BIT) & !1;
    while taken.contains_key(&ino) || taken.contains_key(&cover_ino(ino)) || ino == ROOT {
        ino = (ino.wrapping_add(2) & (COVER_BIT - 1)) | DIR_BIT;
    }
    ino
}

/// A file's slot in a view: its inode without the generation bits (the key of its node).
pub fn file_ino(view: usize, file_id: i64) -> u64 {
    ((view as u64 + 1) << 40) + file_id as u64
}

const GEN_SHIFT: u32 = 48;
const GEN_BITS: u64 = 0x1fff;

/// The inode the kernel sees for a file: its slot plus the low bits of its generation.
/// An edit makes a new inode, as an editor's save-by-rename would: handles opened before
/// it keep their inode with its own size (the kernel caches attributes per inode), new
/// opens get the new one.
pub fn public_ino(slot: u64, gen: i64) -> u64 {
    slot | ((gen as u64 & GEN_BITS) << GEN_SHIFT)
}

/// A file inode's slot and generation bits; `None` for directories, covers and the root.
fn file_slot(ino: u64) -> Option<(u64, u64)> {
    (ino & (DIR_BIT | COVER_BIT) == 0 && ino >= 1 << 40)
        .then_some((ino & !(GEN_BITS << GEN_SHIFT), (ino >> GEN_SHIFT) & GEN_BITS))
}

/// Whether `ino` is a directory's (the root's included), from the number alone.
pub fn is_dir_ino(ino: u64) -> bool {
    ino == ROOT || (ino & DIR_BIT != 0 && ino & COVER_BIT == 0)
}

/// The inode of a directory's cover sidecar.
pub fn cover_ino(dir: u64) -> u64 {
    dir ^ COVER_BIT
}

const COVER_BIT: u64 = 1 << 61;

/// A name for which `taken` is false: `stem ext`, else `stem (2) ext`, ...; all within NAME_MAX.
fn unique_name(taken: impl Fn(&str) -> bool, stem: &str, ext: &str) -> String {
    let fit = |suffix: &str| {
        let mut s = String::with_capacity(stem.len() + suffix.len() + ext.len());
        s.push_str(stem);
        truncate_utf8(&mut s, NAME_MAX.saturating_sub(suffix.len() + ext.len()));
        s.push_str(suffix);
        s.push_str(ext);
        s
    };
    let first = fit("");
    if !taken(&first) {
        return first;
    }
    (2..).map(|n| fit(&format!(" ({n})"))).find(|c| !taken(c)).expect("unbounded")
}

impl Tree {
    /// Builds the tree of `views` over `files` (which must be in a stable order), with a
    /// cover sidecar named `cover_name` in every directory holding a file with a picture.
    pub fn build(files: &[TreeFile], views: &[View], opts: &RenderOptions, cover_name: Option<&str>) -> Self {
        let mut t = Tree {
            nodes: InoMap::with_capacity_and_hasher(files.len() * views.len() + 64, Default::default()),
            dir_paths: InoMap::default(),
            views: views.to_vec(),
            view_roots: Vec::new(),
            opts: opts.clone(),
            cover_name: cover_name.map(str::to_owned),
            created: Vec::new(),
            dir_mtimes: InoMap::default(),
            touched: Vec::new(),
            folded: opts.case_insensitive.then(std::collections::HashMap::new),
            sidecar_nodes: std::collections::HashMap::new(),
        };
        t.nodes
            .insert(ROOT, Node { ino: ROOT, parent: ROOT, name: String::new(), kind: NodeKind::Dir(BTreeMap::new()) });
        t.dir_paths.insert(ROOT, String::new());
        let mut cover_dirs = Vec::new();
        for (vi, view) in views.iter().enumerate() {
            let view_root = match &view.name {
                None => ROOT,
                Some(name) => t.mkdir(vi, ROOT, &sanitize_component(name, NAME_MAX)),
            };
            t.view_roots.push(view_root);
            let tracks: Vec<&TreeFile> = files.iter().filter(|f| !f.file.is_sidecar()).collect();
            // The templates are rendered on the other cores (half the time of a large
            // tree) while this thread places the files in order, so collisions resolve
            // as they always do.
            let (view, opts) = (t.views[vi].clone(), t.opts.clone());
            let mut last = None;
            render_each(&view, &opts, &tracks, renderers_for(tracks.len()), |f, path| {
                let (dir, _) = t.place_at(vi, f, path, &mut last);
                if f.has_picture {
                    cover_dirs.push(dir);
                }
            });
        }
        // Each origin folder holding sidecars: its files, placed beside its tracks.
        let folders: std::collections::BTreeSet<(&str, &str)> = files
            .iter()
            .filter(|f| f.file.is_sidecar())
            .map(|f| (f.file.origin.as_str(), crate::catalog::parent_dir(&f.file.path)))
            .collect();
        if !folders.is_empty() {
            let mut by_folder: BTreeMap<(&str, &str), Vec<&TreeFile>> = BTreeMap::new();
            for f in files {
                let key = (f.file.origin.as_str(), crate::catalog::parent_dir(&f.file.path));
                if folders.contains(&key) {
                    by_folder.entry(key).or_default().push(f);
                }
            }
            for group in by_folder.values() {
                t.place_folder(group, &mut Vec::new());
            }
        }
        if t.cover_name.is_some() {
            // A new tree has no cover yet: a directory holding a file with a picture gets
            // one (sidecars never move a track).
            let mut dirs = cover_dirs;
            dirs.sort_unstable();
            dirs.dedup();
            for d in dirs {
                t.refresh_cover(d, &mut Vec::new());
            }
        }
        t.created.clear();
        t.touched = Vec::new();
        t
    }

    /// A new tree over `files` with this tree's views and options.
    pub fn rebuild(&self, files: &[TreeFile]) -> Tree {
        let mut t = Tree::build(files, &self.views, &self.opts, self.cover_name.as_deref());
        // Directory times never go back: a removal seen by this tree stays seen.
        for (dir, m) in t.dir_mtimes.iter_mut() {
            *m = (*m).max(self.dir_mtime(*dir));
        }
        t
    }

    /// Places file `f` in view `vi`; returns its parent directory and name.
    fn place(&mut self, vi: usize, f: &TreeFile) -> (u64, String) {
        let mut path = String::new();
        render_path(&mut path, &self.views[vi], &self.opts, f);
        self.place_at(vi, f, &path, &mut None)
    }

    /// Places file `f` in view `vi` at `path` (its rendered path); `last` remembers the
    /// directory of the previous file placed (files in path order mostly share it).
    fn place_at(&mut self, vi: usize, f: &TreeFile, path: &str, last: &mut Option<(String, u64)>) -> (u64, String) {
        let (dirs, leaf) = path.rsplit_once('/').unwrap_or(("", path));
        let dir = match last {
            Some((prev, dir)) if prev == dirs => *dir,
            _ => {
                let mut dir = self.view_roots[vi];
                for c in dirs.split('/').filter(|c| !c.is_empty()) {
                    dir = self.mkdir(vi, dir, c);
                }
                *last = Some((dirs.to_owned(), dir));
                dir
            }
        };
        let ext = if f.file.extension.is_empty() { String::new() } else { format!(".{}", f.file.extension) };
        let ino = file_ino(vi, f.file.id);
        let name = unique_name(|n| self.child_ino(dir, n).is_some(), leaf, &ext);
        self.attach(dir, &name, ino);
        self.nodes.insert(
            ino,
            Node {
                ino,
                parent: dir,
                name: name.clone(),
                kind: NodeKind::File {
                    file_id: f.file.id,
                    size: f.file.size,
                    // An edit changes the bytes served: size+mtime scanners must see it.
                    mtime_ns: f.file.mtime_ns.unwrap_or(0).max(f.file.edited_ns),
                    gen: f.file.gen,
                    cover: f.has_picture,
                },
            },
        );
        self.touch(dir, f.file.placed_ns);
        (dir, name)
    }

    /// Records a change at time `t` (ns) in directory `dir`: its time and its ancestors'
    /// become at least `t`. (Media servers rescan the folders whose time changed; an
    /// ancestor's time moving too only makes them look one level higher.)
    fn touch(&mut self, mut dir: u64, t: i64) {
        loop {
            let e = self.dir_mtimes.entry(dir).or_insert(0);
            if *e >= t {
                return;
            }
            *e = t;
            self.touched.push(dir);
            match self.nodes.get(&dir) {
                Some(n) if n.parent != dir && dir != ROOT => dir = n.parent,
                _ => return,
            }
        }
    }

    /// A node's attributes with its modification time (see [`NodeAttr::mtime_ns`]).
    pub fn attr(&self, n: &Node) -> NodeAttr {
        let mut a = n.attr();
        a.mtime_ns = match n.kind {
            NodeKind::Dir(_) => self.dir_mtimes.get(&n.ino).copied().unwrap_or(0),
            NodeKind::Cover { dir } => self.dir_mtimes.get(&dir).copied().unwrap_or(0),
            NodeKind::File { .. } | NodeKind::Sidecar { .. } => a.mtime_ns,
        };
        a
    }

    /// A directory's modification time (ns), for the snapshot.
    pub(crate) fn dir_mtime(&self, dir: u64) -> i64 {
        self.dir_mtimes.get(&dir).copied().unwrap_or(0)
    }

    fn attach(&mut self, parent: u64, name: &str, ino: u64) {
        if let Some(Node { kind: NodeKind::Dir(children), .. }) = self.nodes.get_mut(&parent) {
            children.insert(name.to_owned(), ino);
            if let Some(f) = &mut self.folded {
                f.entry((parent, fold(name))).or_insert(ino);
            }
        }
    }

    fn detach(&mut self, parent: u64, name: &str) {
        if let Some(Node { kind: NodeKind::Dir(children), .. }) = self.nodes.get_mut(&parent) {
            let gone = children.remove(name);
            if let (Some(f), Some(ino)) = (&mut self.folded, gone) {
                let key = (parent, fold(name));
                if f.get(&key) == Some(&ino) {
                    f.remove(&key);
                }
            }
        }
    }

    /// The entry `name` of `parent`: by its exact name, or (case-insensitive mode) by
    /// the name folded.
    fn child_ino(&self, parent: u64, name: &str) -> Option<u64> {
        let NodeKind::Dir(children) = &self.nodes.get(&parent)?.kind else { return None };
        children.get(name).copied().or_else(|| self.folded.as_ref()?.get(&(parent, fold(name))).copied())
    }

    /// Rebuilds the derived indexes (after loading a snapshot): sidecar nodes, and the
    /// case-folded names.
    pub(crate) fn reindex(&mut self) {
        self.sidecar_nodes.clear();
        for n in self.nodes.values() {
            if let NodeKind::Sidecar { file_id, .. } = n.kind {
                self.sidecar_nodes.entry(file_id).or_default().push(n.ino);
            }
        }
        if !self.opts.case_insensitive {
            self.folded = None;
            return;
        }
        let mut f = std::collections::HashMap::with_capacity(self.nodes.len());
        for n in self.nodes.values() {
            if let NodeKind::Dir(children) = &n.kind {
                for (name, &ino) in children {
                    f.entry((n.ino, fold(name))).or_insert(ino);
                }
            }
        }
        self.folded = Some(f);
    }

    /// The directory `name` in `parent`, created if needed; a file already holding the
    /// name makes the directory take a ` (2)` suffix.
    fn mkdir(&mut self, view: usize, parent: u64, name: &str) -> u64 {
        let mut candidate = name.to_owned();
        let mut n = 1;
        loop {
            // (Case-insensitive mode: `Abba` joins an existing `ABBA`.)
            match self.child_ino(parent, &candidate) {
                Some(ino) if matches!(self.nodes[&ino].kind, NodeKind::Dir(_)) => return ino,
                Some(_) => {
                    n += 1;
                    let suffix = format!(" ({n})");
                    let mut s = name.to_owned();
                    truncate_utf8(&mut s, NAME_MAX - suffix.len());
                    candidate = format!("{s}{suffix}");
                }
                None => break,
            }
        }
        let parent_path = self.dir_paths.get(&parent).cloned().unwrap_or_default();
        let path = format!("{parent_path}/{candidate}");
        let path = if parent == ROOT && self.views.get(view).is_some_and(|v| v.name.is_some()) {
            candidate.clone()
        } else {
            path
        };
        let ino = dir_ino(view, &path, &self.nodes);
        self.nodes.insert(ino, Node { ino, parent, name: candidate.clone(), kind: NodeKind::Dir(BTreeMap::new()) });
        self.dir_paths.insert(ino, path);
        self.attach(parent, &candidate, ino);
        self.created.push(Inval::Entry { parent, name: candidate });
        ino
    }

    /// Adds or removes directory `dir`'s cover sidecar as its files say.
    fn refresh_cover(&mut self, dir: u64, inval: &mut Vec<Inval>) {
        let Some(name) = self.cover_name.clone() else { return };
        let Some(NodeKind::Dir(children)) = self.nodes.get(&dir).map(|n| &n.kind) else { return };
        let ino = cover_ino(dir);
        let wanted = children
            .values()
            .any(|c| matches!(self.nodes.get(c).map(|n| &n.kind), Some(NodeKind::File { cover: true, .. })));
        let has = children.get(&name) == Some(&ino);
        let free = self.child_ino(dir, &name).is_none();
        if wanted && free && !self.nodes.contains_key(&ino) {
            self.nodes.insert(ino, Node { ino, parent: dir, name: name.clone(), kind: NodeKind::Cover { dir } });
            self.attach(dir, &name, ino);
            inval.push(Inval::Entry { parent: dir, name });
        } else if has && !wanted {
            self.detach(dir, &name);
            self.nodes.remove(&ino);
            inval.push(Inval::Entry { parent: dir, name });
        } else if has {
            inval.push(Inval::Inode(ino)); // its content may come from another file now
        }
    }

    /// Removes an empty directory and, going up, every parent it leaves empty.
    fn prune(&mut self, mut dir: u64, inval: &mut Vec<Inval>) {
        loop {
            if dir == ROOT || self.view_roots.contains(&dir) {
                return;
            }
            let Some(node) = self.nodes.get(&dir) else { return };
            let NodeKind::Dir(children) = &node.kind else { return };
            if !children.is_empty() {
                return;
            }
            let (parent, name) = (node.parent, node.name.clone());
            self.nodes.remove(&dir);
            self.dir_paths.remove(&dir);
            self.dir_mtimes.remove(&dir);
            self.detach(parent, &name);
            inval.push(Inval::Entry { parent, name });
            dir = parent;
        }
    }

    /// Removes file `file_id` from every view.
    pub fn remove_file(&mut self, file_id: i64) -> Vec<Inval> {
        let mut inval = Vec::new();
        if self.sidecar_nodes.contains_key(&file_id) {
            self.unplace_sidecar(file_id, &mut inval);
            self.drain_touched(&mut inval);
            return inval;
        }
        for vi in 0..self.views.len() {
            let ino = file_ino(vi, file_id);
            let Some(node) = self.nodes.remove(&ino) else { continue };
            self.detach(node.parent, &node.name);
            self.touch(node.parent, crate::util::now_ns());
            inval.push(Inval::Inode(node.public_ino()));
            inval.push(Inval::Entry { parent: node.parent, name: node.name });
            self.refresh_cover(node.parent, &mut inval);
            self.prune(node.parent, &mut inval);
        }
        self.drain_touched(&mut inval);
        inval
    }

    /// The directories whose time moved: the kernel forgets their attributes.
    fn drain_touched(&mut self, inval: &mut Vec<Inval>) {
        let mut dirs = std::mem::take(&mut self.touched);
        dirs.sort_unstable();
        dirs.dedup();
        inval.extend(dirs.into_iter().filter(|d| self.nodes.contains_key(d)).map(Inval::Inode));
    }

    /// Puts `f` where its (possibly changed) tags place it now, in every view, keeping its
    /// slots (its inodes change with its generation, see [`public_ino`]); returns what the
    /// kernel must forget.
    pub fn upsert_file(&mut self, f: &TreeFile) -> Vec<Inval> {
        let mut inval = Vec::new();
        if f.file.is_sidecar() {
            // Placed again with its folder ([`Tree::update_folder`]).
            self.unplace_sidecar(f.file.id, &mut inval);
            self.drain_touched(&mut inval);
            return inval;
        }
        for vi in 0..self.views.len() {
            let ino = file_ino(vi, f.file.id);
            let old = self.nodes.remove(&ino);
            if let Some(n) = &old {
                self.detach(n.parent, &n.name);
                // The entry leaves (or changes in) its directory now.
                self.touch(n.parent, f.file.placed_ns.max(crate::util::now_ns()));
            }
            let (dir, name) = self.place(vi, f);
            let same_ino = old.as_ref().is_some_and(|n| n.public_ino() == public_ino(ino, f.file.gen));
            // A retired inode keeps its attributes: they are right for the handles still
            // open on it.
            if same_ino || old.is_none() {
                inval.push(Inval::Inode(public_ino(ino, f.file.gen)));
            }
            match old {
                // Same place, same inode: the kernel's entry still holds.
                Some(n) if n.parent == dir && n.name == name && same_ino => {}
                // Same place, new inode (an edit): the name must be looked up again.
                Some(n) if n.parent == dir && n.name == name => inval.push(Inval::Entry { parent: dir, name }),
                Some(n) => {
                    inval.push(Inval::Entry { parent: n.parent, name: n.name.clone() });
                    inval.push(Inval::Entry { parent: dir, name });
                    self.refresh_cover(n.parent, &mut inval);
                    self.prune(n.parent, &mut inval);
                }
                None => inval.push(Inval::Entry { parent: dir, name }),
            }
            self.refresh_cover(dir, &mut inval);
        }
        // New directories on the way: the kernel may hold a cached listing of their
        // parents, or a negative entry for their names.
        inval.append(&mut self.created);
        self.drain_touched(&mut inval);
        inval
    }

    /// The inode of sidecar `file_id` shown in directory `dir` (bit 61 alone: neither a
    /// file's, a directory's nor a cover's), stable across rebuilds.
    fn sidecar_ino(&self, file_id: i64, dir: u64) -> u64 {
        let mut h = blake3::Hasher::new();
        h.update(&file_id.to_le_bytes());
        h.update(&dir.to_le_bytes());
        let hash = u64::from_le_bytes(h.finalize().as_bytes()[..8].try_into().expect("8 bytes"));
        let mut ino = (hash & (COVER_BIT - 1)) | COVER_BIT;
        while self.nodes.contains_key(&ino) {
            ino = ((ino + 1) & (COVER_BIT - 1)) | COVER_BIT;
        }
        ino
    }

    /// Removes every node of sidecar `file_id`; their directories get their virtual
    /// cover back if it was the sidecar that held its name, and go if left empty.
    fn unplace_sidecar(&mut self, file_id: i64, inval: &mut Vec<Inval>) {
        let Some(inos) = self.sidecar_nodes.remove(&file_id) else { return };
        let mut dirs = Vec::new();
        for ino in inos {
            let Some(node) = self.nodes.remove(&ino) else { continue };
            self.detach(node.parent, &node.name);
            self.touch(node.parent, crate::util::now_ns());
            inval.push(Inval::Inode(ino));
            inval.push(Inval::Entry { parent: node.parent, name: node.name });
            dirs.push(node.parent);
        }
        for d in dirs {
            self.refresh_cover(d, inval);
            self.prune(d, inval);
        }
    }

    /// Shows sidecar `s` in directory `dir` as `want` (` (2)` if a track holds the name;
    /// a real file beats the virtual cover to its name).
    fn place_sidecar_at(&mut self, dir: u64, want: &str, s: &TreeFile, inval: &mut Vec<Inval>) {
        let cover = cover_ino(dir);
        if self.cover_name.as_deref() == Some(want) && self.child_ino(dir, want) == Some(cover) {
            self.detach(dir, want);
            self.nodes.remove(&cover);
            inval.push(Inval::Inode(cover));
            inval.push(Inval::Entry { parent: dir, name: want.to_owned() });
        }
        let (stem, ext) = match want.rfind('.') {
            Some(i) if i > 0 => (&want[..i], &want[i..]),
            _ => (want, ""),
        };
        let name = unique_name(|n| self.child_ino(dir, n).is_some(), stem, ext);
        let ino = self.sidecar_ino(s.file.id, dir);
        let kind = NodeKind::Sidecar {
            file_id: s.file.id,
            size: s.file.size,
            mtime_ns: s.file.mtime_ns.unwrap_or(0),
            gen: s.file.gen,
        };
        self.nodes.insert(ino, Node { ino, parent: dir, name: name.clone(), kind });
        self.attach(dir, &name, ino);
        self.sidecar_nodes.entry(s.file.id).or_default().push(ino);
        self.touch(dir, s.file.placed_ns);
        inval.push(Inval::Entry { parent: dir, name });
    }

    /// Places the sidecars among `files` (every file of one origin folder) in the
    /// directories of that folder's tracks, in every view: an `.lrc` whose name is a
    /// track's goes beside that track under the track's name; any other sidecar goes in
    /// each directory holding a track of the folder. A folder without tracks shows none.
    fn place_folder(&mut self, files: &[&TreeFile], inval: &mut Vec<Inval>) {
        let stem = |path: &str| {
            let name = path.rsplit('/').next().unwrap_or(path).to_owned();
            match name.rfind('.') {
                Some(i) if i > 0 => name[..i].to_owned(),
                _ => name,
            }
        };
        let (sidecars, tracks): (Vec<&TreeFile>, Vec<&TreeFile>) = files.iter().partition(|f| f.file.is_sidecar());
        for s in &sidecars {
            self.unplace_sidecar(s.file.id, inval);
        }
        for vi in 0..self.views.len() {
            let placed: Vec<(&TreeFile, u64, String)> = tracks
                .iter()
                .filter_map(|t| self.nodes.get(&file_ino(vi, t.file.id)).map(|n| (*t, n.parent, n.name.clone())))
                .collect();
            let dirs: std::collections::BTreeSet<u64> = placed.iter().map(|(_, d, _)| *d).collect();
            for s in &sidecars {
                let shown = musefs_plugin_api::display_path(&s.file.path);
                let own = sanitize_component(shown.rsplit('/').next().unwrap_or(""), NAME_MAX);
                let lyrics_of = (s.file.extension == "lrc")
                    .then(|| placed.iter().find(|(t, _, _)| stem(&t.file.path) == stem(&s.file.path)))
                    .flatten();
                match lyrics_of {
                    Some((_, dir, track_name)) => {
                        let base = match track_name.rfind('.') {
                            Some(i) if i > 0 => &track_name[..i],
                            _ => track_name.as_str(),
                        };
                        let mut want = base.to_owned();
                        truncate_utf8(&mut want, NAME_MAX - 4);
                        self.place_sidecar_at(*dir, &format!("{want}.lrc"), s, inval);
                    }
                    None => {
                        for &dir in &dirs {
                            self.place_sidecar_at(dir, &own, s, inval);
                        }
                    }
                }
            }
        }
    }

    /// Places the sidecars of one origin folder again, given every file now in it (from
    /// the catalog); returns what the kernel must forget.
    pub fn update_folder(&mut self, files: &[TreeFile]) -> Vec<Inval> {
        let mut inval = Vec::new();
        let refs: Vec<&TreeFile> = files.iter().collect();
        self.place_folder(&refs, &mut inval);
        inval.append(&mut self.created);
        self.drain_touched(&mut inval);
        inval
    }

    /// The sidecars to place again when file `file_id` changes: those shown in the
    /// directories that hold it now, and itself if it is one.
    pub fn sidecars_near(&self, file_id: i64) -> Vec<i64> {
        let mut out = Vec::new();
        if self.sidecar_nodes.contains_key(&file_id) {
            out.push(file_id);
        }
        for vi in 0..self.views.len() {
            let Some(n) = self.nodes.get(&file_ino(vi, file_id)) else { continue };
            let Some(NodeKind::Dir(children)) = self.nodes.get(&n.parent).map(|p| &p.kind) else { continue };
            for c in children.values() {
                if let Some(NodeKind::Sidecar { file_id, .. }) = self.nodes.get(c).map(|n| &n.kind) {
                    out.push(*file_id);
                }
            }
        }
        out.sort_unstable();
        out.dedup();
        out
    }

    /// A node by the inode the kernel sees; a file inode of an older generation is gone.
    pub fn get(&self, ino: u64) -> Option<&Node> {
        match file_slot(ino) {
            Some((slot, bits)) => {
                let n = self.nodes.get(&slot)?;
                matches!(n.kind, NodeKind::File { gen, .. } if gen as u64 & GEN_BITS == bits).then_some(n)
            }
            None => self.nodes.get(&ino),
        }
    }

    /// The node of file inode `ino`'s file as it is now, whatever generation `ino` is of.
    pub fn current(&self, ino: u64) -> Option<&Node> {
        match file_slot(ino) {
            Some((slot, _)) => self.nodes.get(&slot),
            None => self.nodes.get(&ino),
        }
    }

    /// Whether `ino` is a file inode of a generation before the file's current one.
    pub fn retired(&self, ino: u64) -> bool {
        file_slot(ino).is_some_and(|(slot, _)| self.nodes.contains_key(&slot)) && self.get(ino).is_none()
    }

    /// The child `name` of directory `parent`.
    pub fn lookup(&self, parent: u64, name: &str) -> Option<&Node> {
        self.child_ino(parent, name).and_then(|i| self.nodes.get(&i))
    }

    /// The children of a directory, in name order.
    pub fn children(&self, ino: u64) -> Vec<&Node> {
        match self.nodes.get(&ino).map(|n| &n.kind) {
            Some(NodeKind::Dir(children)) => children.values().filter_map(|i| self.nodes.get(i)).collect(),
            _ => Vec::new(),
        }
    }

    /// The files of directory `dir` that have a picture, in name order.
    pub fn cover_sources(&self, dir: u64) -> Vec<i64> {
        self.children(dir)
            .into_iter()
            .filter_map(|n| match n.kind {
                NodeKind::File { file_id, cover: true, .. } => Some(file_id),
                _ => None,
            })
            .collect()
    }

    /// The inodes of every node, as the kernel sees them.
    pub fn inodes(&self) -> Vec<u64> {
        self.nodes.values().map(Node::public_ino).collect()
    }

    /// File nodes and the sum of their sizes (the originals' sizes), for `statfs`.
    pub fn totals(&self) -> (u64, u64) {
        self.nodes.values().fold((0, 0), |(n, bytes), node| match node.kind {
            NodeKind::File { size, .. } | NodeKind::Sidecar { size, .. } => (n + 1, bytes + size),
            _ => (n, bytes),
        })
    }

    /// Number of nodes.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether the tree holds only the root.
    pub fn is_empty(&self) -> bool {
        self.nodes.len() <= 1
    }

    /// The path of a node, relative to the root.
    pub fn path_of(&self, mut ino: u64) -> Option<String> {
        let mut parts = Vec::new();
        while ino != ROOT {
            let n = self.nodes.get(&ino)?;
            parts.push(n.name.as_str());
            ino = n.parent;
        }
        parts.reverse();
        Some(parts.join("/"))
    }

    /// The node at a relative `/`-separated path (`""` is the root).
    pub fn resolve(&self, path: &str) -> Option<&Node> {
        let mut node = self.nodes.get(&ROOT)?;
        for c in path.split('/').filter(|c| !c.is_empty() && *c != ".") {
            node = self.lookup(node.ino, c)?;
        }
        Some(node)
    }

    /// The file ids at or below a node.
    pub fn files_under(&self, ino: u64) -> Vec<i64> {
        let mut out = Vec::new();
        let mut stack = vec![ino];
        while let Some(i) = stack.pop() {
            match self.nodes.get(&i).map(|n| &n.kind) {
                Some(NodeKind::File { file_id, .. }) => out.push(*file_id),
                Some(NodeKind::Dir(children)) => stack.extend(children.values()),
                _ => {}
            }
        }
        out.sort_unstable();
        out.dedup();
        out
    }

    /// Every file path (relative, `/`-separated) with its file id, depth first in name order.
    pub fn paths(&self) -> Vec<(String, i64)> {
        let mut out = Vec::new();
        let mut stack = vec![(ROOT, String::new())];
        while let Some((ino, prefix)) = stack.pop() {
            let mut kids = self.children(ino);
            kids.reverse();
            for n in kids {
                let p = if prefix.is_empty() { n.name.clone() } else { format!("{prefix}/{}", n.name) };
                match n.kind {
                    NodeKind::Dir(_) => stack.push((n.ino, p)),
                    NodeKind::File { file_id, .. } | NodeKind::Sidecar { file_id, .. } => out.push((p, file_id)),
                    NodeKind::Cover { .. } => {}
                }
            }
        }
        out.sort();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::FileRow;
    use crate::template::Template;

    pub(super) fn file(id: i64, tags: &[(&str, &str)]) -> TreeFile {
        TreeFile {
            file: FileRow {
                id,
                origin: "o".into(),
                path: format!("{id}.flac"),
                size: 10,
                mtime_ns: Some(0),
                etag: None,
                plugin: "flac".into(),
                extension: "flac".into(),
                gen: 0,
                audio_offset: 0,
                placed_ns: 0,
                edited_ns: 0,
            },
            tags: tags.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect(),
            has_picture: id % 2 == 0,
        }
    }

    fn view(t: &str) -> Vec<View> {
        vec![View { name: None, template: Template::parse(t).unwrap() }]
    }

    fn at(mut f: TreeFile, path: &str) -> TreeFile {
        f.file.path = path.into();
        f.file.extension = path.rsplit('.').next().unwrap().into();
        if !f.file.extension.ends_with("flac") {
            f.file.plugin = crate::catalog::SIDECAR_PLUGIN.into();
            f.has_picture = false;
        }
        f
    }

    fn names(t: &Tree, dir: &str) -> Vec<(String, &'static str)> {
        let d = t.resolve(dir).unwrap();
        t.children(d.ino)
            .into_iter()
            .map(|n| {
                let kind = match n.kind {
                    NodeKind::File { .. } => "track",
                    NodeKind::Sidecar { .. } => "sidecar",
                    NodeKind::Cover { .. } => "cover",
                    NodeKind::Dir(_) => "dir",
                };
                (n.name.clone(), kind)
            })
            .collect()
    }

    #[test]
    fn sidecars_sit_beside_their_tracks_lyrics_take_the_track_name_and_a_real_cover_wins() {
        let tags = [("albumartist", "X"), ("album", "Y")];
        let mut files = vec![
            at(file(2, &[tags[0], tags[1], ("title", "One"), ("track", "1")]), "A/01.flac"),
            at(file(4, &[tags[0], tags[1], ("title", "Two"), ("track", "2")]), "A/02.flac"),
            at(file(5, &[]), "A/01.lrc"),
            at(file(7, &[]), "A/album.cue"),
            at(file(9, &[]), "A/cover.jpg"),
            at(file(11, &[]), "B/notes.pdf"),
        ];
        let tpl = view("$albumartist/$album/$track $title");
        let t = Tree::build(&files, &tpl, &RenderOptions::default(), Some("cover.jpg"));
        assert_eq!(
            names(&t, "X/Y"),
            [
                ("01 One.flac".to_owned(), "track"),
                ("01 One.lrc".to_owned(), "sidecar"),
                ("02 Two.flac".to_owned(), "track"),
                ("album.cue".to_owned(), "sidecar"),
                ("cover.jpg".to_owned(), "sidecar"),
            ],
            "the lyrics under the track's name; the real cover.jpg instead of the virtual one"
        );
        assert_eq!(t.paths().len(), 5, "a folder without tracks shows no sidecars: {:?}", t.paths());
        assert!(t.files_under(t.resolve("X").unwrap().ino) == vec![2, 4], "tag targets are tracks only");
        // Snapshots keep them, and the index of their nodes.
        let key = [1u8; 32];
        let (mut back, _) = Tree::from_snapshot(
            &t.to_snapshot("c", &key, 1),
            "c",
            &key,
            &tpl,
            &RenderOptions::default(),
            Some("cover.jpg"),
        )
        .unwrap();
        assert_eq!(names(&back, "X/Y"), names(&t, "X/Y"));
        // The real cover goes: the virtual one comes back (as the mount does it: the
        // file's removal, then its folder placed again).
        assert_eq!(back.sidecars_near(2), vec![5, 7, 9]);
        back.remove_file(9);
        files.retain(|f| f.file.id != 9);
        back.update_folder(&files[..4]);
        assert!(names(&back, "X/Y").contains(&("cover.jpg".to_owned(), "cover")), "{:?}", names(&back, "X/Y"));
        // A retag moves the album: its sidecars follow.
        files[0].tags[1].1 = "Z".into();
        files[1].tags[1].1 = "Z".into();
        for f in &files[..2] {
            back.upsert_file(f);
        }
        back.update_folder(&files[..4]);
        assert!(back.resolve("X/Y").is_none(), "the old album directory is gone with its sidecars");
        assert!(back.resolve("X/Z/01 One.lrc").is_some() && back.resolve("X/Z/album.cue").is_some());
        // Every track goes: nothing is left of the album.
        back.remove_file(2);
        back.remove_file(4);
        back.update_folder(&files[2..4]);
        assert!(back.resolve("X").is_none(), "{:?}", back.paths());
    }

    #[test]
    fn case_insensitive_mode_merges_directories_numbers_files_and_ignores_case_in_lookups() {
        let files = [
            file(1, &[("albumartist", "ABBA"), ("album", "Gold"), ("title", "Waterloo")]),
            file(2, &[("albumartist", "Abba"), ("album", "gold"), ("title", "waterloo")]),
            file(3, &[("albumartist", "abba"), ("album", "Arrival"), ("title", "Dancing Queen")]),
        ];
        let tpl = view("$albumartist/$album/$title");
        let sensitive = Tree::build(&files, &tpl, &RenderOptions::default(), None);
        let mut paths: Vec<String> = sensitive.paths().into_iter().map(|(p, _)| p).collect();
        paths.sort();
        assert_eq!(paths, ["ABBA/Gold/Waterloo.flac", "Abba/gold/waterloo.flac", "abba/Arrival/Dancing Queen.flac"]);
        assert!(sensitive.resolve("abba/gold/Waterloo.flac").is_none());

        let opts = RenderOptions { case_insensitive: true, ..RenderOptions::default() };
        let mut t = Tree::build(&files, &tpl, &opts, None);
        let mut paths: Vec<String> = t.paths().into_iter().map(|(p, _)| p).collect();
        paths.sort();
        assert_eq!(
            paths,
            ["ABBA/Arrival/Dancing Queen.flac", "ABBA/Gold/Waterloo.flac", "ABBA/Gold/waterloo (2).flac"]
        );
        let n = t.resolve("abba/GOLD/WATERLOO.FLAC").expect("found whatever the case");
        assert!(matches!(n.kind, NodeKind::File { file_id: 1, .. }));
        assert!(t.resolve("Abba/gold/Waterloo (2).flac").is_some());
        // The snapshot of the tree answers the same (the folded index is rebuilt).
        let key = [7u8; 32];
        let bytes = t.to_snapshot("c", &key, 1);
        let (back, _) = Tree::from_snapshot(&bytes, "c", &key, &tpl, &opts, None).unwrap();
        assert!(back.resolve("abba/gold/waterloo.flac").is_some());
        // The first spelling leaves: the other files keep their names and are found.
        t.remove_file(1);
        assert!(t.resolve("abba/gold/waterloo.flac").is_none(), "no file of that name now");
        assert!(t.resolve("ABBA/GOLD/WATERLOO (2).FLAC").is_some());
        t.remove_file(2);
        assert!(t.resolve("abba/gold").is_none(), "the emptied album is gone");
        assert!(t.resolve("abba/arrival/dancing queen.flac").is_some());
    }

    /// Regression (issue 14, item 6): untagged files rendered as `_/_/_.flac`,
    /// `_/_/_ (2).flac`, ...; the default template now falls back to where the original
    /// lies, so each keeps a recognisable name.
    #[test]
    fn untagged_files_keep_their_file_and_folder_names() {
        let mut a = file(1, &[]);
        a.file.path = "Some Folder/My Song.v2.flac".into();
        let mut b = file(2, &[]);
        b.file.path = "Some Folder/.hidden".into();
        let mut c = file(3, &[("artist", "Solo")]);
        c.file.path = "loose.flac".into();
        let d = file(4, &[("albumartist", "AC/DC"), ("album", "Back"), ("track", "3/12"), ("title", "Hells")]);
        let tpl = crate::manifest::DEFAULT_TEMPLATE;
        let t = Tree::build(&[a, b, c, d], &view(tpl), &RenderOptions::default(), None);
        let mut paths: Vec<String> = t.paths().into_iter().map(|(p, _)| p).collect();
        paths.sort();
        assert_eq!(
            paths,
            [
                "AC_DC/Back/03 Hells.flac",
                "Solo/Unknown Album/loose.flac",
                "Unknown Artist/Some Folder/My Song.v2.flac",
                "Unknown Artist/Some Folder/_hidden.flac",
            ]
        );
        // The fields by themselves.
        let mut e = file(5, &[]);
        e.file.path = "x/y/z.ogg".into();
        let t = Tree::build(&[e], &view("$origin/$dirname/$filename"), &RenderOptions::default(), None);
        assert_eq!(t.paths()[0].0, "o/y/z.flac");
    }

    #[test]
    fn collisions_hostile_values_and_stable_inodes() {
        let files = vec![
            file(1, &[("artist", "AC/DC"), ("title", "T")]),
            file(2, &[("artist", "AC/DC"), ("title", "T")]),
            file(3, &[("artist", ".."), ("title", "../../etc")]),
            file(4, &[("title", "x")]),
        ];
        let t = Tree::build(&files, &view("$artist/$title"), &RenderOptions::default(), None);
        let paths: Vec<_> = t.paths().into_iter().map(|(p, _)| p).collect();
        assert_eq!(paths, vec!["AC_DC/T (2).flac", "AC_DC/T.flac", "_/x.flac", "__/_._.._etc.flac"]);
        let again = Tree::build(&files, &view("$artist/$title"), &RenderOptions::default(), None);
        let a = t.lookup(ROOT, "AC_DC").unwrap().ino;
        assert_eq!(a, again.lookup(ROOT, "AC_DC").unwrap().ino);
        assert_eq!(t.lookup(a, "T.flac").unwrap().ino, again.lookup(a, "T.flac").unwrap().ino);
    }

    #[test]
    fn long_names_stay_within_name_max() {
        let long = "é".repeat(300);
        let files = vec![file(1, &[("title", &long)]), file(2, &[("title", &long)])];
        let t = Tree::build(&files, &view("$title"), &RenderOptions::default(), None);
        for n in t.children(ROOT) {
            assert!(n.name.len() <= NAME_MAX, "{}", n.name.len());
            assert!(n.name.ends_with(".flac"));
        }
        assert_eq!(t.children(ROOT).len(), 2);
    }

    #[test]
    fn a_file_and_a_directory_with_one_name() {
        let files = vec![file(1, &[("a", "X"), ("b", "")]), file(2, &[("a", "X.flac"), ("b", "y")])];
        let t = Tree::build(&files, &view("$a[/$b]"), &RenderOptions::default(), None);
        let paths: Vec<_> = t.paths().into_iter().map(|(p, _)| p).collect();
        assert_eq!(paths, vec!["X.flac", "X.flac (2)/y.flac"]);
    }
}

#[cfg(test)]
mod update_tests {
    use super::*;
    use crate::template::Template;

    fn file(id: i64, artist: &str, title: &str, pic: bool) -> TreeFile {
        let mut f = super::tests::file(id, &[("artist", artist), ("title", title)]);
        f.has_picture = pic;
        f
    }

    #[test]
    fn a_large_tree_rendered_on_other_threads_is_the_tree_placed_one_file_at_a_time() {
        // Enough files for the threaded path (several chunks per renderer), with name
        // collisions inside and across chunks, hostile values, pictures in some folders.
        let views = vec![View { name: None, template: Template::parse("$artist/$album/$title").unwrap() }];
        let files: Vec<TreeFile> = (1..=50_000i64)
            .map(|id| {
                let title = match id % 11 {
                    0 => String::new(),
                    1 => format!("a/b {}", id % 5),
                    2 => format!(".hidden {}", id % 3),
                    n => format!("t{}", n % 4),
                };
                let (artist, album) = (format!("Artist {}", id % 97), format!("Album {}", id % 13));
                super::tests::file(id, &[("artist", &artist), ("album", &album), ("title", &title)])
            })
            .collect();
        let built = Tree::build(&files, &views, &RenderOptions::default(), Some("cover.jpg"));
        let mut one_by_one = Tree::build(&[], &views, &RenderOptions::default(), Some("cover.jpg"));
        for f in &files {
            one_by_one.upsert_file(f);
        }
        assert_eq!(built.len(), one_by_one.len());
        assert_eq!(built.paths(), one_by_one.paths());
        assert!(built.paths().iter().any(|(p, _)| p.ends_with(" (2).flac")));
    }

    #[test]
    fn paths_rendered_by_several_threads_come_in_the_files_order() {
        let view = View { name: None, template: Template::parse("$artist/$title").unwrap() };
        let files: Vec<TreeFile> = (1..=3 * RENDER_CHUNK as i64 + 17)
            .map(|id| super::tests::file(id, &[("artist", &format!("a{}", id % 5)), ("title", &id.to_string())]))
            .collect();
        let refs: Vec<&TreeFile> = files.iter().collect();
        let opts = RenderOptions::default();
        let mut serial = Vec::new();
        render_each(&view, &opts, &refs, 0, |f, p| serial.push((f.file.id, p.to_owned())));
        assert_eq!(serial.len(), files.len());
        assert_eq!(serial[41], (42, "a2/42".to_owned()));
        for renderers in [1, 2, 3] {
            let mut threaded = Vec::new();
            render_each(&view, &opts, &refs, renderers, |f, p| threaded.push((f.file.id, p.to_owned())));
            assert_eq!(threaded, serial, "{renderers} renderer(s)");
        }
    }

    #[test]
    fn moves_keep_inodes_prune_empty_dirs_and_track_covers() {
        let views = vec![View { name: None, template: Template::parse("$artist/$title").unwrap() }];
        let files = vec![file(1, "A", "one", true), file(2, "B", "two", false)];
        let mut t = Tree::build(&files, &views, &RenderOptions::default(), Some("cover.jpg"));
        let a = t.lookup(ROOT, "A").unwrap().ino;
        assert!(t.lookup(a, "cover.jpg").is_some());
        assert!(t.lookup(t.lookup(ROOT, "B").unwrap().ino, "cover.jpg").is_none());
        let ino = t.lookup(a, "one.flac").unwrap().ino;
        // Retag file 1 to artist B: same inode, A (now empty) is gone, B gains the cover.
        let inval = t.upsert_file(&file(1, "B", "uno", true));
        let b = t.lookup(ROOT, "B").unwrap().ino;
        assert_eq!(t.lookup(b, "uno.flac").unwrap().ino, ino);
        assert!(t.lookup(ROOT, "A").is_none() && t.get(a).is_none());
        assert!(t.lookup(b, "cover.jpg").is_some());
        for want in [
            Inval::Entry { parent: a, name: "one.flac".into() },
            Inval::Entry { parent: b, name: "uno.flac".into() },
            Inval::Entry { parent: ROOT, name: "A".into() },
            Inval::Inode(ino),
        ] {
            assert!(inval.contains(&want), "{want:?} in {inval:?}");
        }
        // The same tree as a fresh build of the new catalog state.
        let fresh = Tree::build(
            &[file(1, "B", "uno", true), file(2, "B", "two", false)],
            &views,
            &RenderOptions::default(),
            Some("cover.jpg"),
        );
        assert_eq!(t.paths(), fresh.paths());
        assert_eq!(t.lookup(ROOT, "B").unwrap().ino, fresh.lookup(ROOT, "B").unwrap().ino);
        // Removing the only file with a picture removes the sidecar; the last file, the dir.
        t.remove_file(1);
        assert!(t.lookup(b, "cover.jpg").is_none());
        t.remove_file(2);
        assert!(t.lookup(ROOT, "B").is_none());
        assert!(t.is_empty());
    }

    #[test]
    fn a_file_in_new_directories_reports_every_directory_created() {
        // Regression: directories made on the way were not reported, so the kernel kept
        // its cached listing of the root (and a negative entry) and never showed them.
        let views = vec![View { name: None, template: Template::parse("$artist/$album/$title").unwrap() }];
        let mut t = Tree::build(&[file(1, "A", "one", false)], &views, &RenderOptions::default(), None);
        let mut f = super::tests::file(2, &[("artist", "New"), ("album", "Disc"), ("title", "x")]);
        f.has_picture = false;
        let inval = t.upsert_file(&f);
        let new = t.lookup(ROOT, "New").unwrap().ino;
        for want in
            [Inval::Entry { parent: ROOT, name: "New".into() }, Inval::Entry { parent: new, name: "Disc".into() }]
        {
            assert!(inval.contains(&want), "{want:?} in {inval:?}");
        }
        // An existing directory is not reported again.
        let inval = t.upsert_file(&super::tests::file(3, &[("artist", "New"), ("album", "Disc"), ("title", "y")]));
        assert!(!inval.contains(&Inval::Entry { parent: ROOT, name: "New".into() }), "{inval:?}");
    }
}

//! The virtual tree rendered from the catalog by the templates.
//!
//! Inode numbers are stable across remounts: a file's inode is derived from its
//! catalog id and its view, a directory's from a hash of its view and path. Names are
//! sanitised component by component and collisions are disambiguated deterministically
//! (files are placed in origin/path order; later ones get ` (2)`, ` (3)`, ...).

use std::collections::{BTreeMap, HashMap};

use crate::catalog::TreeFile;
use crate::manifest::View;
use crate::template::{sanitize_component, truncate_utf8, Fields, RenderOptions};

/// The root directory's inode.
pub const ROOT: u64 = 1;
const DIR_BIT: u64 = 1 << 63;
/// Longest name component in bytes.
pub const NAME_MAX: usize = 255;

/// What a node is.
#[derive(Debug, Clone)]
pub enum NodeKind {
    /// A directory: children by name.
    Dir(BTreeMap<String, u64>),
    /// A file: its catalog id, size and mtime.
    File {
        /// Catalog file id.
        file_id: i64,
        /// Served size.
        size: u64,
        /// Modification time, ns since the epoch.
        mtime_ns: i64,
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
    Dir,
    /// A file.
    File {
        /// Catalog file id.
        file_id: i64,
        /// Served size.
        size: u64,
        /// Modification time, ns since the epoch.
        mtime_ns: i64,
    },
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
}

impl Node {
    /// The node's attributes (no children).
    pub fn attr(&self) -> NodeAttr {
        let kind = match self.kind {
            NodeKind::Dir(_) => AttrKind::Dir,
            NodeKind::File { file_id, size, mtime_ns } => AttrKind::File { file_id, size, mtime_ns },
        };
        NodeAttr { ino: self.ino, parent: self.parent, kind }
    }
}

/// The whole tree.
#[derive(Debug, Default)]
pub struct Tree {
    nodes: HashMap<u64, Node>,
}

struct TagFields<'a>(&'a [(String, String)]);

impl Fields for TagFields<'_> {
    fn values(&self, field: &str) -> Vec<String> {
        self.0.iter().filter(|(k, _)| k == field).map(|(_, v)| v.clone()).collect()
    }
}

fn dir_ino(view: usize, path: &str, taken: &HashMap<u64, Node>) -> u64 {
    let mut h = blake3::Hasher::new();
    h.update(&(view as u64).to_le_bytes());
    h.update(path.as_bytes());
    let b = h.finalize();
    let mut ino = (u64::from_le_bytes(b.as_bytes()[..8].try_into().expect("8 bytes")) | DIR_BIT) & !1;
    while taken.contains_key(&ino) || ino == ROOT {
        ino = ino.wrapping_add(2) | DIR_BIT;
    }
    ino
}

fn file_ino(view: usize, file_id: i64) -> u64 {
    ((view as u64 + 1) << 40) + file_id as u64
}

/// A name not yet used in `children`: `stem ext`, else `stem (2) ext`, ...; all within NAME_MAX.
fn unique_name(children: &BTreeMap<String, u64>, stem: &str, ext: &str) -> String {
    let fit = |suffix: &str| {
        let mut s = stem.to_owned();
        truncate_utf8(&mut s, NAME_MAX.saturating_sub(suffix.len() + ext.len()));
        format!("{s}{suffix}{ext}")
    };
    let first = fit("");
    if !children.contains_key(&first) {
        return first;
    }
    (2..).map(|n| fit(&format!(" ({n})"))).find(|c| !children.contains_key(c)).expect("unbounded")
}

impl Tree {
    /// Builds the tree of `views` over `files` (which must be in a stable order).
    pub fn build(files: &[TreeFile], views: &[View], opts: &RenderOptions) -> Self {
        let mut t = Tree { nodes: HashMap::with_capacity(files.len() * views.len() + 64) };
        t.nodes
            .insert(ROOT, Node { ino: ROOT, parent: ROOT, name: String::new(), kind: NodeKind::Dir(BTreeMap::new()) });
        for (vi, view) in views.iter().enumerate() {
            let view_root = match &view.name {
                None => ROOT,
                Some(name) => t.mkdir(vi, ROOT, "", &sanitize_component(name, NAME_MAX)).0,
            };
            let view_path = view.name.clone().unwrap_or_default();
            let mut dir_paths: HashMap<u64, String> = HashMap::new();
            dir_paths.insert(view_root, view_path);
            for f in files {
                let rendered = view.template.render(&TagFields(&f.tags), opts);
                let mut comps: Vec<String> = rendered.split('/').map(|c| sanitize_component(c, NAME_MAX)).collect();
                let leaf = comps.pop().unwrap_or_else(|| "_".into());
                let mut dir = view_root;
                for c in comps {
                    let parent_path = dir_paths.get(&dir).cloned().unwrap_or_default();
                    let (ino, path) = t.mkdir(vi, dir, &parent_path, &c);
                    dir_paths.entry(ino).or_insert(path);
                    dir = ino;
                }
                let ext = if f.file.extension.is_empty() { String::new() } else { format!(".{}", f.file.extension) };
                let ino = file_ino(vi, f.file.id);
                let NodeKind::Dir(children) = &t.nodes[&dir].kind else { unreachable!("parents are directories") };
                let name = unique_name(children, &leaf, &ext);
                t.attach(dir, &name, ino);
                t.nodes.insert(
                    ino,
                    Node {
                        ino,
                        parent: dir,
                        name,
                        kind: NodeKind::File {
                            file_id: f.file.id,
                            size: f.file.size,
                            mtime_ns: f.file.mtime_ns.unwrap_or(0),
                        },
                    },
                );
            }
        }
        t
    }

    fn attach(&mut self, parent: u64, name: &str, ino: u64) {
        if let Some(Node { kind: NodeKind::Dir(children), .. }) = self.nodes.get_mut(&parent) {
            children.insert(name.to_owned(), ino);
        }
    }

    /// The directory `name` in `parent`, created if needed; a file already holding the
    /// name makes the directory take a ` (2)` suffix.
    fn mkdir(&mut self, view: usize, parent: u64, parent_path: &str, name: &str) -> (u64, String) {
        let NodeKind::Dir(children) = &self.nodes[&parent].kind else { unreachable!("parents are directories") };
        let mut candidate = name.to_owned();
        let mut n = 1;
        loop {
            match children.get(&candidate) {
                Some(&ino) if matches!(self.nodes[&ino].kind, NodeKind::Dir(_)) => {
                    return (ino, format!("{parent_path}/{candidate}"));
                }
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
        let path = format!("{parent_path}/{candidate}");
        let ino = dir_ino(view, &path, &self.nodes);
        self.nodes.insert(ino, Node { ino, parent, name: candidate.clone(), kind: NodeKind::Dir(BTreeMap::new()) });
        self.attach(parent, &candidate, ino);
        (ino, path)
    }

    /// A node by inode.
    pub fn get(&self, ino: u64) -> Option<&Node> {
        self.nodes.get(&ino)
    }

    /// The child `name` of directory `parent`.
    pub fn lookup(&self, parent: u64, name: &str) -> Option<&Node> {
        match &self.nodes.get(&parent)?.kind {
            NodeKind::Dir(children) => children.get(name).and_then(|i| self.nodes.get(i)),
            NodeKind::File { .. } => None,
        }
    }

    /// The children of a directory, in name order.
    pub fn children(&self, ino: u64) -> Vec<&Node> {
        match self.nodes.get(&ino).map(|n| &n.kind) {
            Some(NodeKind::Dir(children)) => children.values().filter_map(|i| self.nodes.get(i)).collect(),
            _ => Vec::new(),
        }
    }

    /// Number of nodes.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether the tree holds only the root.
    pub fn is_empty(&self) -> bool {
        self.nodes.len() <= 1
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
                    NodeKind::File { file_id, .. } => out.push((p, file_id)),
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

    fn file(id: i64, tags: &[(&str, &str)]) -> TreeFile {
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
            },
            tags: tags.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect(),
        }
    }

    fn view(t: &str) -> Vec<View> {
        vec![View { name: None, template: Template::parse(t).unwrap() }]
    }

    #[test]
    fn collisions_hostile_values_and_stable_inodes() {
        let files = vec![
            file(1, &[("artist", "AC/DC"), ("title", "T")]),
            file(2, &[("artist", "AC/DC"), ("title", "T")]),
            file(3, &[("artist", ".."), ("title", "../../etc")]),
            file(4, &[("title", "x")]),
        ];
        let t = Tree::build(&files, &view("$artist/$title"), &RenderOptions::default());
        let paths: Vec<_> = t.paths().into_iter().map(|(p, _)| p).collect();
        assert_eq!(paths, vec!["AC_DC/T (2).flac", "AC_DC/T.flac", "_/x.flac", "__/.._.._etc.flac"]);
        let again = Tree::build(&files, &view("$artist/$title"), &RenderOptions::default());
        let a = t.lookup(ROOT, "AC_DC").unwrap().ino;
        assert_eq!(a, again.lookup(ROOT, "AC_DC").unwrap().ino);
        assert_eq!(t.lookup(a, "T.flac").unwrap().ino, again.lookup(a, "T.flac").unwrap().ino);
    }

    #[test]
    fn long_names_stay_within_name_max() {
        let long = "é".repeat(300);
        let files = vec![file(1, &[("title", &long)]), file(2, &[("title", &long)])];
        let t = Tree::build(&files, &view("$title"), &RenderOptions::default());
        for n in t.children(ROOT) {
            assert!(n.name.len() <= NAME_MAX, "{}", n.name.len());
            assert!(n.name.ends_with(".flac"));
        }
        assert_eq!(t.children(ROOT).len(), 2);
    }

    #[test]
    fn a_file_and_a_directory_with_one_name() {
        let files = vec![file(1, &[("a", "X"), ("b", "")]), file(2, &[("a", "X.flac"), ("b", "y")])];
        let t = Tree::build(&files, &view("$a[/$b]"), &RenderOptions::default());
        let paths: Vec<_> = t.paths().into_iter().map(|(p, _)| p).collect();
        assert_eq!(paths, vec!["X.flac", "X.flac (2)/y.flac"]);
    }
}

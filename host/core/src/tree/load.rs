//! Loading the rendered tree: from the tree snapshot plus the change log since it was
//! written when the snapshot matches this catalog and configuration, else rendered from
//! the catalog. Never scans.

use std::time::Instant;

use crate::catalog::{Catalog, CatalogError};
use crate::manifest::Manifest;
use crate::tree::{snapshot, Tree};

/// Builds the tree from the catalog (never scanning).
///
/// # Errors
/// Catalog errors.
pub fn build_tree(manifest: &Manifest, catalog: &Catalog) -> Result<Tree, CatalogError> {
    Ok(load_tree(manifest, catalog)?.tree)
}

/// Where a loaded tree came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TreeSource {
    /// The snapshot, with this many changed files applied since it was written.
    Snapshot {
        /// Files changed since the snapshot.
        applied: usize,
    },
    /// Rendered from the catalog (no usable snapshot).
    Built,
}

/// A tree and the catalog change-log position it reflects.
pub struct LoadedTree {
    /// The tree.
    pub tree: Tree,
    /// The change-log position: changes after it are not in the tree yet.
    pub position: i64,
    /// Where it came from.
    pub source: TreeSource,
}

/// Where a mount keeps its tree snapshot, and what it must match.
#[derive(Debug, Clone)]
pub struct SnapshotTarget {
    /// The file.
    pub path: std::path::PathBuf,
    /// The catalog's identity.
    pub catalog_id: String,
    /// The rendering configuration's key.
    pub key: [u8; 32],
}

impl SnapshotTarget {
    /// The snapshot target of `manifest` over `catalog`.
    ///
    /// # Errors
    /// Catalog errors.
    pub fn of(manifest: &Manifest, catalog: &Catalog) -> Result<Self, CatalogError> {
        let key = snapshot::config_key(
            &manifest.views,
            &manifest.render,
            manifest.cover_name.as_deref(),
            &template_keys(manifest),
        );
        Ok(Self { path: manifest.snapshot_path(), catalog_id: catalog.catalog_id()?, key })
    }

    /// Writes `tree` (at change-log `position`) as the snapshot.
    ///
    /// # Errors
    /// I/O errors (the previous snapshot is left as it was).
    pub fn save(&self, tree: &Tree, position: i64) -> Result<(), snapshot::SnapshotError> {
        snapshot::write(&self.path, &tree.to_snapshot(&self.catalog_id, &self.key, position))
    }
}

/// Loads the tree: from the snapshot plus the changes logged since it was written when
/// the snapshot matches this catalog and configuration, else rendered from the catalog.
/// Never scans.
///
/// # Errors
/// Catalog errors (a bad snapshot is not an error: it is logged and ignored).
pub fn load_tree(manifest: &Manifest, catalog: &Catalog) -> Result<LoadedTree, CatalogError> {
    let started = Instant::now();
    let keys = template_keys(manifest);
    let target = SnapshotTarget::of(manifest, catalog)?;
    let loaded = snapshot::read(&target.path).and_then(|bytes| {
        Tree::from_snapshot(
            &bytes,
            &target.catalog_id,
            &target.key,
            &manifest.views,
            &manifest.render,
            manifest.cover_name.as_deref(),
        )
    });
    match loaded {
        Ok((mut tree, position)) => {
            let changes = catalog.changes_since(position)?;
            if changes.gap {
                tracing::info!("the tree snapshot is older than the catalog's change log: rendering the tree");
            } else {
                for id in &changes.files {
                    match catalog.tree_file(*id, &keys)? {
                        Some(f) => tree.upsert_file(&f),
                        None => tree.remove_file(*id),
                    };
                }
                tracing::info!(
                    "tree of {} nodes loaded from its snapshot ({} changed file(s) applied) in {:.2?}",
                    tree.len(),
                    changes.files.len(),
                    started.elapsed()
                );
                let source = TreeSource::Snapshot { applied: changes.files.len() };
                return Ok(LoadedTree { tree, position: changes.last, source });
            }
        }
        Err(snapshot::SnapshotError::Missing) => {}
        Err(e) => {
            tracing::info!("not using the tree snapshot {}: {e}; rendering the tree", target.path.display());
        }
    }
    let path = manifest.catalog_path();
    std::thread::spawn(move || read_ahead(&path));
    // The position first: a change landing while the files load is applied again later.
    let position = catalog.last_change()?;
    let files = catalog.tree_files(&keys)?;
    let read = started.elapsed();
    let tree = Tree::build(&files, &manifest.views, &manifest.render, manifest.cover_name.as_deref());
    tracing::debug!(
        "tree: {} files read from the catalog in {read:.2?}, rendered in {:.2?}",
        files.len(),
        started.elapsed() - read
    );
    tracing::info!("tree of {} nodes rendered from the catalog in {:.2?}", tree.len(), started.elapsed());
    // Freeing a large catalog's rows takes a noticeable time; the mount need not wait.
    if files.len() > 10_000 {
        std::thread::spawn(move || {
            drop(files);
            crate::sys::release_free_memory();
        });
    }
    Ok(LoadedTree { tree, position, source: TreeSource::Built })
}

/// Asks the kernel to read the catalog file into the page cache, sequentially, when it
/// fits in a quarter of the available memory: a catalog not cached (after a boot) is
/// otherwise read page by page in b-tree order, half again as slow as from memory.
fn read_ahead(path: &std::path::Path) {
    let Ok(f) = std::fs::File::open(path) else { return };
    let size = f.metadata().map_or(0, |m| m.len());
    if size > crate::sys::mem_available().unwrap_or(0) / 4 {
        return;
    }
    crate::sys::will_need(&f);
}

/// Brings the snapshot of `manifest`'s state directory up to date with the catalog (run
/// by the owner after a scan, so the next mount starts from it).
///
/// # Errors
/// Catalog errors; snapshot write errors are logged, not returned.
pub fn refresh_snapshot(manifest: &Manifest, catalog: &Catalog) -> Result<(), CatalogError> {
    let loaded = load_tree(manifest, catalog)?;
    if loaded.source == (TreeSource::Snapshot { applied: 0 }) {
        return Ok(());
    }
    let target = SnapshotTarget::of(manifest, catalog)?;
    if let Err(e) = target.save(&loaded.tree, loaded.position) {
        tracing::warn!("writing the tree snapshot {}: {e}", target.path.display());
    }
    Ok(())
}

/// The tag keys the manifest's templates use.
pub fn template_keys(manifest: &Manifest) -> Vec<String> {
    let mut keys: Vec<String> = manifest.views.iter().flat_map(|v| v.template.fields()).collect();
    keys.sort();
    keys.dedup();
    keys
}

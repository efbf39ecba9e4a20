//! Building the serving core from a manifest, and mounting it.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::catalog::{Catalog, CatalogError};
use crate::manifest::{Manifest, Mode};
use crate::plugins::{PluginError, Plugins};
use crate::serve::{Core, Settings};
use crate::tree::{snapshot, Inval, Tree};
use std::ffi::OsStr;

/// An error building or mounting.
#[derive(Debug, thiserror::Error)]
pub enum MountError {
    /// The catalog failed.
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    /// A plugin failed.
    #[error(transparent)]
    Plugin(#[from] PluginError),
    /// The chunk cache failed.
    #[error(transparent)]
    Cache(crate::cache::store::CacheError),
    /// The mountpoint is unusable.
    #[error("mountpoint {path}: {message}")]
    Mountpoint {
        /// The mountpoint.
        path: String,
        /// What is wrong.
        message: String,
    },
    /// FUSE refused.
    #[error("mounting at {path} failed: {source} (is fuse3 installed and /dev/fuse accessible?)")]
    Fuse {
        /// The mountpoint.
        path: String,
        /// The error.
        source: std::io::Error,
    },
}

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
    // The position first: a change landing while the files load is applied again later.
    let position = catalog.last_change()?;
    let files = catalog.tree_files(&keys)?;
    let tree = Tree::build(&files, &manifest.views, &manifest.render, manifest.cover_name.as_deref());
    tracing::info!("tree of {} nodes rendered from the catalog in {:.2?}", tree.len(), started.elapsed());
    Ok(LoadedTree { tree, position, source: TreeSource::Built })
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

/// Builds the serving core: plugins' origins and formats, the catalog and the tree.
///
/// # Errors
/// Catalog and plugin errors.
pub fn build_core(manifest: &Manifest, plugins: &Plugins) -> Result<Core, MountError> {
    Ok(build_core_loaded(manifest, plugins)?.0)
}

/// [`build_core`], also saying where the tree came from.
///
/// # Errors
/// Catalog and plugin errors.
pub fn build_core_loaded(manifest: &Manifest, plugins: &Plugins) -> Result<(Core, TreeSource), MountError> {
    let catalog = Catalog::open(&manifest.catalog_path())?;
    let LoadedTree { tree, position, source } = load_tree(manifest, &catalog)?;
    let mut origins = HashMap::new();
    for o in &manifest.origins {
        origins.insert(o.name.clone(), plugins.new_origin(&o.kind, &o.config_json)?);
    }
    let formats = plugins.formats()?.into_iter().collect();
    let any_remote = origins.values().any(|o: &musefs_plugin_api::OriginBox| !o.caps().local);
    let core = Core::new(tree, position, catalog, origins, formats, settings(manifest));
    if any_remote && manifest.cache.enabled {
        let cache = open_cache(manifest)?;
        let s = cache.store().stats().map_err(MountError::Cache)?;
        tracing::info!(
            "chunk cache {}: {} chunk(s), {} of {} bytes used",
            manifest.cache_dir().display(),
            s.chunks,
            s.bytes,
            s.max_size
        );
        return Ok((core.with_cache(cache), source));
    }
    Ok((core, source))
}

/// Opens the chunk cache of a manifest's state directory.
///
/// # Errors
/// [`MountError::Cache`].
pub fn open_cache(manifest: &Manifest) -> Result<Arc<crate::cache::ChunkCache>, MountError> {
    // The catalog must exist and be migrated before the cache opens its own connection.
    drop(Catalog::open(&manifest.catalog_path())?);
    crate::cache::ChunkCache::open(manifest.cache_dir(), &manifest.catalog_path(), manifest.cache.clone())
        .map_err(MountError::Cache)
}

/// The serving settings a manifest asks for.
pub fn settings(manifest: &Manifest) -> Settings {
    Settings {
        mode: manifest.mode,
        timeout: manifest.read_timeout,
        format_options: manifest.format_options.clone(),
        header_cache_bytes: manifest.header_cache_bytes,
        keys: template_keys(manifest),
    }
}

/// The tag keys the manifest's templates use.
pub fn template_keys(manifest: &Manifest) -> Vec<String> {
    let mut keys: Vec<String> = manifest.views.iter().flat_map(|v| v.template.fields()).collect();
    keys.sort();
    keys.dedup();
    keys
}

/// Checks that `path` can be mounted on.
///
/// # Errors
/// [`MountError::Mountpoint`] saying what is wrong.
pub fn check_mountpoint(path: &Path) -> Result<(), MountError> {
    let err = |message: &str| MountError::Mountpoint { path: path.display().to_string(), message: message.to_owned() };
    let meta = std::fs::metadata(path).map_err(|e| err(&format!("{e} (create the directory first)")))?;
    if !meta.is_dir() {
        return Err(err("not a directory"));
    }
    if let Ok(mounts) = std::fs::read_to_string("/proc/self/mounts") {
        let canon = path.canonicalize().unwrap_or_else(|_| path.to_owned());
        let escaped = canon.to_string_lossy().replace(' ', "\\040");
        if mounts.lines().any(|l| l.split(' ').nth(1) == Some(escaped.as_str()) && l.contains("fuse")) {
            return Err(err("a FUSE filesystem is already mounted there (unmount it with `fusermount3 -u`)"));
        }
    }
    Ok(())
}

/// Mount options.
#[derive(Debug, Clone, Default)]
pub struct MountOptions {
    /// Let other users access the mount (`allow_other`).
    pub allow_other: bool,
    /// Never use kernel passthrough (serve every read through the daemon).
    pub no_kernel_passthrough: bool,
    /// How often to poll the catalog for changes (`None`: never).
    pub refresh_interval: Option<Duration>,
    /// Where to keep the tree snapshot (`None`: never write one).
    pub snapshot: Option<SnapshotTarget>,
    /// The position of the snapshot already on disk, if it matches the tree mounted.
    pub snapshot_saved: Option<i64>,
}

/// How often a mount rewrites its tree snapshot while the tree changes.
pub const SNAPSHOT_EVERY: Duration = Duration::from_secs(60);

/// Writes the snapshot if the tree moved since `saved`.
fn save_snapshot(core: &Core, target: Option<&SnapshotTarget>, saved: &mut Option<i64>) {
    let Some(target) = target else { return };
    if *saved == Some(core.position()) {
        return;
    }
    let started = Instant::now();
    match core.save_snapshot(target) {
        Ok(p) => {
            *saved = Some(p);
            tracing::debug!("tree snapshot written in {:.2?}", started.elapsed());
        }
        Err(e) => tracing::warn!("writing the tree snapshot {}: {e}", target.path.display()),
    }
}

/// Tells the kernel to forget stale entries and inodes (errors for entries it never
/// looked up are expected and ignored).
fn apply_invalidations(notifier: &fuser::Notifier, inval: &[Inval]) {
    // A directory whose entries changed: its cached listing (FOPEN_CACHE_DIR) goes too.
    let mut dirs: Vec<Inval> = inval
        .iter()
        .filter_map(|i| if let Inval::Entry { parent, .. } = i { Some(Inval::Inode(*parent)) } else { None })
        .collect();
    dirs.sort_by_key(|i| if let Inval::Inode(d) = i { *d } else { 0 });
    dirs.dedup();
    for i in inval.iter().chain(dirs.iter()) {
        let res = match i {
            Inval::Entry { parent, name } => notifier.inval_entry(fuser::INodeNo(*parent), OsStr::new(name)),
            Inval::Inode(ino) => notifier.inval_inode(fuser::INodeNo(*ino), 0, 0),
        };
        if let Err(e) = res {
            if e.raw_os_error() != Some(libc::ENOENT) {
                tracing::debug!("invalidating {i:?}: {e}");
            }
        }
    }
}

/// Mounts `core` at `mountpoint` and serves until SIGINT/SIGTERM or an external unmount.
///
/// # Errors
/// Mountpoint and FUSE errors.
pub fn run(
    core: Arc<Core>,
    mode: Mode,
    mountpoint: &Path,
    opts: &MountOptions,
    syncer: Option<crate::sync::Syncer>,
) -> Result<(), MountError> {
    check_mountpoint(mountpoint)?;
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        // A second signal while shutting down exits at once.
        signal_hook::flag::register_conditional_shutdown(sig, 1, stop.clone()).ok();
        signal_hook::flag::register(sig, stop.clone()).ok();
    }
    // SIGUSR1: sync every origin now.
    let sync_now = Arc::new(AtomicBool::new(false));
    signal_hook::flag::register(signal_hook::consts::SIGUSR1, sync_now.clone()).ok();
    let mut cfg = fuser::Config::default();
    cfg.mount_options = vec![
        fuser::MountOption::RO,
        fuser::MountOption::FSName("musefs".into()),
        fuser::MountOption::Subtype("musefs".into()),
        fuser::MountOption::NoDev,
        fuser::MountOption::NoSuid,
    ];
    if opts.allow_other {
        cfg.acl = fuser::SessionACL::All;
    }
    cfg.n_threads = Some(std::thread::available_parallelism().map_or(2, |n| n.get()).max(2) * 2);
    let passthrough = mode == Mode::Passthrough && !opts.no_kernel_passthrough;
    let fs = crate::fuse::MuseFs::new(core.clone(), passthrough);
    let session = fuser::spawn_mount(fs, mountpoint, &cfg)
        .map_err(|source| MountError::Fuse { path: mountpoint.display().to_string(), source })?;
    tracing::info!("mounted at {} ({:?} mode); Ctrl-C or `fusermount3 -u` to unmount", mountpoint.display(), mode);
    let notifier = session.notifier();
    let mut next_refresh = Instant::now();
    // A tree rendered at mount is saved at once, so the next mount loads it.
    let mut saved = opts.snapshot_saved;
    save_snapshot(&core, opts.snapshot.as_ref(), &mut saved);
    let mut next_save = Instant::now() + SNAPSHOT_EVERY;
    while !stop.load(Ordering::Relaxed) && !session.guard.is_finished() {
        if Instant::now() >= next_save {
            next_save = Instant::now() + SNAPSHOT_EVERY;
            save_snapshot(&core, opts.snapshot.as_ref(), &mut saved);
        }
        if sync_now.swap(false, Ordering::Relaxed) {
            match &syncer {
                Some(s) => s.sync_now(),
                None => tracing::info!("SIGUSR1: background sync is off (sync_interval = \"off\", watch = false)"),
            }
        }
        if syncer.as_ref().is_some_and(crate::sync::Syncer::take_changed) {
            next_refresh = Instant::now(); // a sync just wrote: show it now, not at the next poll
        }
        if let Some(every) = opts.refresh_interval {
            if Instant::now() >= next_refresh {
                next_refresh = Instant::now() + every;
                match core.refresh() {
                    Ok(inval) => apply_invalidations(&notifier, &inval),
                    Err(e) => tracing::warn!("refreshing from the catalog: {e}"),
                }
            }
        }
        std::thread::sleep(Duration::from_millis(50).min(opts.refresh_interval.unwrap_or(Duration::MAX)));
    }
    // Orderly shutdown: stop syncing first (a sync in progress stops between files),
    // then unmount (reads in flight finish; each is bounded by the read timeout).
    if let Some(s) = syncer {
        s.stop(Duration::from_secs(10));
    }
    if session.guard.is_finished() {
        tracing::info!("unmounted externally");
        let _ = session.join();
    } else {
        tracing::info!("signal received: unmounting");
        if let Err(e) = session.umount_and_join() {
            tracing::warn!("unmount: {e}");
        }
    }
    // The last sync's changes into the tree, then the tree into the snapshot.
    if opts.refresh_interval.is_some() {
        if let Err(e) = core.refresh() {
            tracing::warn!("refreshing from the catalog: {e}");
        }
    }
    save_snapshot(&core, opts.snapshot.as_ref(), &mut saved);
    if let Some(cache) = core.cache() {
        cache.flush();
        tracing::info!("chunk cache: {}", cache.counters.summary());
    }
    Ok(())
}

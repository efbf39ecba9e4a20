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
use crate::tree::{Inval, Tree};
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
    let files = catalog.tree_files(&template_keys(manifest))?;
    Ok(Tree::build(&files, &manifest.views, &manifest.render, manifest.cover_name.as_deref()))
}

/// Builds the serving core: plugins' origins and formats, the catalog and the tree.
///
/// # Errors
/// Catalog and plugin errors.
pub fn build_core(manifest: &Manifest, plugins: &Plugins) -> Result<Core, MountError> {
    let catalog = Catalog::open(&manifest.catalog_path())?;
    let started = Instant::now();
    let tree = build_tree(manifest, &catalog)?;
    tracing::info!("tree of {} nodes built from the catalog in {:.2?}", tree.len(), started.elapsed());
    let mut origins = HashMap::new();
    for o in &manifest.origins {
        origins.insert(o.name.clone(), plugins.new_origin(&o.kind, &o.config_json)?);
    }
    let formats = plugins.formats()?.into_iter().collect();
    let any_remote = origins.values().any(|o: &musefs_plugin_api::OriginBox| !o.caps().local);
    let core = Core::new(tree, catalog, origins, formats, settings(manifest));
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
        return Ok(core.with_cache(cache));
    }
    Ok(core)
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
}

/// Tells the kernel to forget stale entries and inodes (errors for entries it never
/// looked up are expected and ignored).
fn apply_invalidations(notifier: &fuser::Notifier, inval: &[Inval]) {
    for i in inval {
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
    while !stop.load(Ordering::Relaxed) && !session.guard.is_finished() {
        if sync_now.swap(false, Ordering::Relaxed) {
            match &syncer {
                Some(s) => s.sync_now(),
                None => tracing::info!("SIGUSR1: background sync is off (sync_interval = \"off\", watch = false)"),
            }
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
    if let Some(cache) = core.cache() {
        cache.flush();
        tracing::info!("chunk cache: {}", cache.counters.summary());
    }
    Ok(())
}

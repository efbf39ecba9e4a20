//! Assembling a serving core from a manifest: the plugins' origins and formats, the
//! catalog, the loaded tree and (for remote origins) the chunk cache. The top of the
//! core's layers: the FUSE adapter and the commands start here.

use std::collections::HashMap;
use std::sync::Arc;

use crate::cache::{store::CacheError, ChunkCache};
use crate::catalog::{Catalog, CatalogError};
use crate::manifest::Manifest;
use crate::plugins::{Plugins, PluginsError};
use crate::serve::{Core, Settings};
use crate::tree::load::{load_tree, template_keys, LoadedTree, TreeSource};

/// An error assembling the serving core.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The catalog failed.
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    /// A plugin failed.
    #[error(transparent)]
    Plugin(#[from] PluginsError),
    /// The chunk cache failed.
    #[error(transparent)]
    Cache(CacheError),
    /// The directory of write sessions (`writable = true`) is unusable.
    #[error("{path}: {source} (the scratch files of saves through the mount live there)")]
    Writes {
        /// The directory.
        path: String,
        /// The error.
        source: std::io::Error,
    },
}

/// Builds the serving core: plugins' origins and formats, the catalog and the tree.
///
/// # Errors
/// Catalog and plugin errors.
pub fn build_core(manifest: &Manifest, plugins: &Plugins) -> Result<Core, BuildError> {
    Ok(build_core_loaded(manifest, plugins)?.0)
}

/// [`build_core`], also saying where the tree came from.
///
/// # Errors
/// Catalog and plugin errors.
pub fn build_core_loaded(manifest: &Manifest, plugins: &Plugins) -> Result<(Core, TreeSource), BuildError> {
    plugins.check_format_options(&manifest.format_options)?;
    let catalog = Catalog::open_for(manifest)?;
    let LoadedTree { tree, position, source } = load_tree(manifest, &catalog)?;
    let mut origins = HashMap::new();
    for o in &manifest.origins {
        origins.insert(o.name.clone(), plugins.origin(o)?);
    }
    let formats = plugins.formats()?.into_iter().collect();
    let any_remote = origins
        .values()
        .any(|o: &musefs_plugin_api::OriginBox| !o.caps().contains(musefs_plugin_api::OriginCaps::LOCAL));
    let mut core = Core::new(tree, position, catalog, origins, formats, settings(manifest));
    if manifest.writable {
        let dir = manifest.writes_dir();
        core =
            core.with_writes(&dir).map_err(|source| BuildError::Writes { path: dir.display().to_string(), source })?;
    }
    if any_remote && manifest.cache.enabled {
        let cache = open_cache(manifest)?;
        let s = cache.store().stats().map_err(BuildError::Cache)?;
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
/// [`BuildError::Cache`].
pub fn open_cache(manifest: &Manifest) -> Result<Arc<ChunkCache>, BuildError> {
    ChunkCache::open(manifest.cache_dir(), &manifest.catalog_path(), manifest.cache.clone()).map_err(BuildError::Cache)
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

//! `musefs cache`: statistics, prefetch, verification and clearing of the chunk cache.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use musefs_core::util::lock;
use musefs_plugin_api::{OriginBox, OriginCaps};

use musefs_core::cache::ChunkCache;
use musefs_core::catalog::{Catalog, CatalogError};
use musefs_core::manifest::Manifest;
use musefs_core::plugins::Plugins;

/// An error of a cache command.
#[derive(Debug, thiserror::Error)]
pub enum CacheCmdError {
    /// The catalog failed.
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    /// A plugin failed to load or create its origin.
    #[error(transparent)]
    Plugin(#[from] musefs_core::plugins::PluginsError),
    /// Fetching failed.
    #[error("{0}")]
    Fetch(String),
    /// Nothing matched.
    #[error("nothing matches {0:?}: give a path as `musefs ls` prints it, ORIGIN:PATH, or a tag query KEY=VALUE")]
    NoMatch(String),
}

/// The files a prefetch target names: a tree path, `ORIGIN:PATH`, a path under a local
/// root (as for `musefs tag`), or a tag query `KEY=VALUE` (case-insensitive, the user's
/// overlay applied).
///
/// # Errors
/// [`CacheCmdError::NoMatch`].
pub fn resolve(manifest: &Manifest, catalog: &Catalog, target: &str) -> Result<Vec<i64>, CacheCmdError> {
    if let Ok(ids) = crate::tag::resolve(manifest, catalog, target) {
        return Ok(ids);
    }
    if let Some((key, value)) = target.split_once('=') {
        let key = key.trim().to_lowercase();
        let files = catalog.tree_files(std::slice::from_ref(&key))?;
        let ids: Vec<i64> = files
            .iter()
            .filter(|f| f.tags.iter().any(|(k, v)| *k == key && v.eq_ignore_ascii_case(value.trim())))
            .map(|f| f.file.id)
            .collect();
        if !ids.is_empty() {
            return Ok(ids);
        }
    }
    Err(CacheCmdError::NoMatch(target.to_owned()))
}

/// What a prefetch did.
#[derive(Debug, Default)]
pub struct PrefetchSummary {
    /// Files now fully (or, for headers, partly) cached.
    pub files: u64,
    /// Files of local origins, skipped (they are not cached).
    pub local: u64,
    /// Bytes fetched.
    pub bytes: u64,
    /// Files that failed, with the reason.
    pub failed: Vec<String>,
}

/// Fetches the files `ids` (or their headers) into the cache, `parallel` files at a
/// time (each file in order, so a streaming origin serves it with one request).
///
/// # Errors
/// Catalog and plugin errors; a file that cannot be fetched is reported in the summary.
#[allow(clippy::too_many_arguments)]
pub fn prefetch(
    manifest: &Manifest,
    plugins: &Plugins,
    cache: &Arc<ChunkCache>,
    catalog: &Catalog,
    ids: &[i64],
    headers_only: bool,
    parallel: usize,
    progress: impl FnMut(u64, &str) + Send,
) -> Result<PrefetchSummary, CacheCmdError> {
    let mut origins: HashMap<String, Option<Arc<OriginBox>>> = HashMap::new();
    let mut sum = PrefetchSummary::default();
    let mut todo = Vec::new();
    for &id in ids {
        let Some(row) = catalog.file(id)? else { continue };
        if !origins.contains_key(&row.origin) {
            let spec = manifest.origins.iter().find(|o| o.name == row.origin);
            let o = match spec {
                Some(spec) => Some(plugins.origin(spec)?),
                None => None,
            };
            origins.insert(row.origin.clone(), o.filter(|o| !o.caps().contains(OriginCaps::LOCAL)).map(Arc::new));
        }
        let Some(origin) = origins[&row.origin].clone() else {
            sum.local += 1;
            continue;
        };
        let label = format!("{}:{}", row.origin, row.path);
        let pin = if manifest.cache.pin_headers || headers_only { row.audio_offset.max(1) } else { 0 };
        let file =
            cache.file(&row, origin, pin, manifest.read_timeout).map_err(|e| CacheCmdError::Fetch(e.to_string()))?;
        todo.push((label, file));
    }
    let next = std::sync::atomic::AtomicUsize::new(0);
    let shared = Mutex::new((sum, progress));
    std::thread::scope(|s| {
        for _ in 0..parallel.clamp(1, todo.len().max(1)) {
            s.spawn(|| loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some((label, file)) = todo.get(i) else { break };
                {
                    let mut g = lock(&shared);
                    let done = g.0.files;
                    (g.1)(done, label);
                }
                let res = file.prefetch(headers_only);
                let mut g = lock(&shared);
                match res {
                    Ok(n) => {
                        g.0.bytes += n;
                        g.0.files += 1;
                    }
                    Err(e) => g.0.failed.push(format!("{label}: {e}")),
                }
            });
        }
    });
    drop(todo);
    cache.flush();
    Ok(shared.into_inner().unwrap_or_else(std::sync::PoisonError::into_inner).0)
}

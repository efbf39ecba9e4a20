//! Scanning origins into the catalog.
//!
//! Per origin: list every file whose extension a format plugin claims; skip those
//! whose size and mtime (and ETag) match the catalog; read the rest in parallel on all
//! cores (each worker opens the file, probes the formats with the head bytes and lets
//! the best one read it); write results in batched transactions from one writer;
//! prune files that are gone. A file that cannot be read is skipped with one warning
//! naming it and the reason. If an origin cannot be listed completely, nothing of it is
//! pruned: an unreachable server never empties the catalog.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use musefs_plugin_api::{
    CallCtx, Entry, EntryKind, FormatBox, ListRequest, OriginBox, Stat, TrackInfo, PROBE_HEAD_LEN,
};

use crate::catalog::{fingerprint_of, Catalog, CatalogError, Scanned, FINGERPRINT_SPAN};
use crate::manifest::{Manifest, OriginSpec};
use crate::plugins::{Plugins, PluginsError};
use crate::progress::Progress;

/// How many files one catalog transaction holds at most.
const BATCH: usize = 500;
/// The longest read files wait for their commit.
const COMMIT_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// What a scan did.
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Summary {
    /// New files.
    pub added: u64,
    /// Changed files, read again.
    pub updated: u64,
    /// Files found at a new path (moved or renamed inside their origin): same id, edits
    /// and inode.
    pub moved: u64,
    /// Files whose stamp was unchanged.
    pub unchanged: u64,
    /// Files gone from their origin, removed from the catalog.
    pub removed: u64,
    /// Files that could not be read (each was warned about).
    pub failed: u64,
    /// Origins that could not be listed (nothing of them was pruned).
    pub failed_origins: u64,
    /// Directories that could not be read (nothing below them was pruned).
    pub unlisted_dirs: u64,
    /// Files whose names are not UTF-8 (served under lossy names).
    pub lossy_names: u64,
    /// Refused files by reason (numbers in the reason replaced by `N`, so one kind of
    /// damage is one line).
    pub refused: std::collections::BTreeMap<String, u64>,
}

impl Summary {
    /// The refused files by reason, most common first: `  N × reason` lines.
    pub fn refusals(&self) -> String {
        let mut v: Vec<(&String, &u64)> = self.refused.iter().collect();
        v.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
        v.iter().map(|(r, n)| format!("  {n} × {r}\n")).collect()
    }
}

/// A refusal reason with its numbers (offsets, sizes) replaced by `N`.
fn reason_class(reason: &str) -> String {
    let mut out = String::with_capacity(reason.len());
    // `ID3v2`, `mp3`: digits that follow a letter are part of a word.
    let (mut in_word, mut in_num) = (false, false);
    for c in reason.chars() {
        if c.is_ascii_digit() && !in_word {
            if !in_num {
                out.push('N');
            }
            in_num = true;
            continue;
        }
        in_num = false;
        in_word = c.is_alphanumeric() && (c.is_alphabetic() || in_word);
        out.push(c);
    }
    out
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "added {} / updated {} / unchanged {} / removed {} / failed {}",
            self.added, self.updated, self.unchanged, self.removed, self.failed
        )?;
        if self.moved > 0 {
            write!(f, " / moved {}", self.moved)?;
        }
        if self.failed_origins > 0 {
            write!(f, " ({} origin(s) could not be listed)", self.failed_origins)?;
        }
        if self.lossy_names > 0 {
            write!(f, " ({} non-UTF-8 name(s) shown lossily)", self.lossy_names)?;
        }
        if self.unlisted_dirs > 0 {
            write!(f, " ({} unreadable director(ies): nothing below pruned)", self.unlisted_dirs)?;
        }
        Ok(())
    }
}

/// A scan error that stops the scan.
#[derive(Debug, thiserror::Error)]
pub enum ScanError {
    /// The catalog failed.
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    /// A plugin could not be created.
    #[error(transparent)]
    Plugin(#[from] PluginsError),
}

/// Options for a scan.
#[derive(Debug, Clone)]
pub struct Options {
    /// Worker threads (default: all cores).
    pub threads: usize,
    /// Where progress is reported (default: nowhere).
    pub progress: Arc<dyn Progress>,
    /// Only these origins (default: all).
    pub only: Option<Vec<String>>,
    /// Raised to stop the scan early (orderly shutdown): what was read is kept,
    /// nothing is pruned.
    pub stop: Option<Arc<AtomicBool>>,
    /// Per origin name, the only paths (origin-relative files or directories, with
    /// everything below them) to reconcile; an origin not in the map is scanned whole.
    /// Files under a listed path that are gone are removed; nothing else is touched.
    /// (The background sync passes the paths inotify reported.)
    pub scope: HashMap<String, Vec<String>>,
    /// Prune however many files a listing lost (the manifest's `prune_limit` is off):
    /// for a library that really shrank.
    pub allow_prune: bool,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            threads: std::thread::available_parallelism().map_or(2, |n| n.get()),
            progress: crate::progress::silent(),
            only: None,
            stop: None,
            scope: HashMap::new(),
            allow_prune: false,
        }
    }
}

/// `paths` without duplicates and without paths below another one of them; `None` if
/// one of them is the root (scan everything).
pub fn minimal_paths(paths: &[String]) -> Option<Vec<String>> {
    let set: HashSet<&str> = paths.iter().map(|p| p.trim_matches('/')).collect();
    if set.contains("") {
        return None;
    }
    let covered = |p: &str| p.match_indices('/').any(|(i, _)| set.contains(&p[..i]));
    let mut out: Vec<String> = set.iter().filter(|p| !covered(p)).map(|p| (*p).to_owned()).collect();
    out.sort();
    Some(out)
}

impl Options {
    fn stopped(&self) -> bool {
        self.stop.as_ref().is_some_and(|s| s.load(Ordering::Relaxed))
    }
}

impl Summary {
    fn add(&mut self, o: &Summary) {
        self.added += o.added;
        self.updated += o.updated;
        self.unchanged += o.unchanged;
        self.removed += o.removed;
        self.moved += o.moved;
        self.unlisted_dirs += o.unlisted_dirs;
        self.lossy_names += o.lossy_names;
        for (r, n) in &o.refused {
            *self.refused.entry(r.clone()).or_default() += n;
        }
        self.failed += o.failed;
        self.failed_origins += o.failed_origins;
    }

    /// Whether the scan changed the catalog.
    pub fn changed(&self) -> bool {
        self.added + self.updated + self.removed + self.moved > 0
    }
}

use crate::util::{lock, now_ms};

fn same_stamp(known: &crate::catalog::KnownFile, s: &Stat) -> bool {
    known.size == s.size
        && known.mtime_ns == s.mtime_ns.into_option()
        && known.etag.as_deref() == s.etag.as_ref().map(|e| e.as_str()).into_option()
}

/// Scans every origin of the manifest.
///
/// # Errors
/// Catalog failures and plugins that cannot be created; per-file problems are counted
/// in the summary instead.
pub fn scan(
    manifest: &Manifest,
    plugins: &Plugins,
    catalog: &mut Catalog,
    opts: &Options,
) -> Result<Summary, ScanError> {
    plugins.check_format_options(&manifest.format_options)?;
    let formats = plugins.formats()?;
    let mut claimed = HashSet::new();
    for (_, f) in &formats {
        claimed.extend(f.extensions().into_iter().map(|e| e.into_string().to_ascii_lowercase()));
    }
    let mut total = Summary::default();
    for spec in &manifest.origins {
        if opts.only.as_ref().is_some_and(|only| !only.contains(&spec.name)) {
            continue;
        }
        if opts.stopped() {
            break;
        }
        catalog.sync_started(&spec.name, now_ms())?;
        let mut one = Summary::default();
        let res = plugins
            .origin(spec)
            .map_err(ScanError::from)
            .and_then(|origin| scan_origin(manifest, spec, &origin, &formats, &claimed, catalog, opts, &mut one));
        let error = match &res {
            Ok(None) if opts.stopped() => Some("interrupted (shutting down); nothing was pruned".to_owned()),
            Ok(None) => None,
            Ok(Some(e)) => Some(e.clone()),
            Err(e) => Some(e.to_string()),
        };
        catalog.sync_finished(&spec.name, now_ms(), &one.to_string(), error.as_deref())?;
        total.add(&one);
        res?;
    }
    Ok(total)
}

fn extension_of(path: &str) -> String {
    let name = path.rsplit('/').next().unwrap_or(path);
    name.rsplit_once('.').map(|(_, e)| e.to_ascii_lowercase()).unwrap_or_default()
}

fn list_all(origin: &OriginBox, manifest: &Manifest, dir: &str) -> Result<Vec<Entry>, musefs_plugin_api::PluginError> {
    let ctx = CallCtx::with_timeout(manifest.read_timeout);
    let mut lister = origin.list(&ctx, &ListRequest { dir: dir.into(), recursive: true }).into_result()?;
    let mut out = Vec::new();
    loop {
        let page = lister.next_page(&ctx, 1000).into_result()?;
        if page.is_empty() {
            return Ok(out);
        }
        out.extend(page);
    }
}

/// The files at or below each of `paths`: a file is stat'ed, a directory (or, on an
/// object store, a prefix) listed; a path that does not exist contributes nothing.
fn list_paths(
    origin: &OriginBox,
    manifest: &Manifest,
    paths: &[String],
) -> Result<Vec<Entry>, musefs_plugin_api::PluginError> {
    use musefs_plugin_api::ErrorKind;
    let mut out = Vec::new();
    for p in paths {
        let ctx = CallCtx::with_timeout(manifest.read_timeout);
        match origin.stat(&ctx, p.as_str().into()).into_result() {
            Ok(stat) if stat.kind == EntryKind::FILE => out.push(Entry { path: p.as_str().into(), stat }),
            Ok(_) => out.extend(list_all(origin, manifest, p)?),
            Err(e) if e.kind == ErrorKind::NOT_FOUND => match list_all(origin, manifest, p) {
                Ok(v) => out.extend(v),
                Err(e) if e.kind == ErrorKind::NOT_FOUND => {}
                Err(e) => return Err(e),
            },
            Err(e) => return Err(e),
        }
    }
    Ok(out)
}

#[allow(clippy::too_many_arguments)]
fn scan_origin(
    manifest: &Manifest,
    spec: &OriginSpec,
    origin: &OriginBox,
    formats: &[(String, FormatBox)],
    claimed: &HashSet<String>,
    catalog: &mut Catalog,
    opts: &Options,
    total: &mut Summary,
) -> Result<Option<String>, ScanError> {
    let started = Instant::now();
    let origin_id = catalog.origin_id(&spec.name, &spec.kind)?;
    let scope = opts.scope.get(&spec.name).and_then(|p| minimal_paths(p));
    let (known, listed) = match &scope {
        Some(paths) => (catalog.known_files_under(origin_id, paths)?, list_paths(origin, manifest, paths)),
        None => (catalog.known_files(origin_id)?, list_all(origin, manifest, "")),
    };
    let entries = match listed {
        Ok(e) => e,
        Err(e) => {
            tracing::error!("origin `{}`: listing failed, nothing of it is updated or pruned: {e}", spec.name);
            total.failed_origins += 1;
            return Ok(Some(format!("listing failed: {e}")));
        }
    };
    let adopted = if scope.is_none() { adopt_renamed_origin(spec, catalog, &known, &entries)? } else { None };
    let (origin_id, known) = match adopted {
        Some(adopted) => adopted,
        None => (origin_id, known),
    };
    let mut seen = HashSet::with_capacity(entries.len());
    let mut work = Vec::new();
    // Non-audio files matching `sidecars`: recorded with the listing's stamp (no origin
    // call), served unchanged.
    let mut sidecars: HashMap<String, Stat> = HashMap::new();
    // Directories the origin could not read: nothing below them is known to be gone.
    let mut unlisted: Vec<String> = Vec::new();
    // Files whose names are not UTF-8: served, under lossy names.
    let mut lossy: Vec<String> = Vec::new();
    for e in entries {
        if e.stat.kind == EntryKind::UNLISTED {
            unlisted.push(e.path.into_string());
            continue;
        }
        let track = claimed.contains(&extension_of(&e.path));
        let sidecar = !track && {
            let shown = musefs_plugin_api::display_path(&e.path);
            manifest.is_sidecar(shown.rsplit('/').next().unwrap_or(""))
        };
        if !track && !sidecar {
            continue;
        }
        let path = e.path.into_string();
        if sidecar {
            sidecars.insert(path.clone(), e.stat.clone());
        }
        if path.starts_with(musefs_plugin_api::BYTES_MARKER) {
            lossy.push(path.clone());
        }
        match known.get(&path) {
            Some(k) if same_stamp(k, &e.stat) => total.unchanged += 1,
            _ => work.push(path.clone()),
        }
        seen.insert(path);
    }
    // A file read by a format plugin that is not loaded now (missing, or failed to load
    // after an upgrade) is not gone: it is kept as it is, and counted as failed.
    let mut loaded: HashSet<&str> = formats.iter().map(|(n, _)| n.as_str()).collect();
    loaded.insert(crate::catalog::SIDECAR_PLUGIN);
    let mut orphans: Vec<&str> = Vec::new();
    let mut below_unlisted: HashMap<&str, usize> = HashMap::new();
    let mut gone: HashSet<i64> = known
        .iter()
        .filter(|(p, _)| !seen.contains(*p))
        .filter(|(p, _)| {
            let under = unlisted
                .iter()
                .find(|d| d.is_empty() || (p.starts_with(d.as_str()) && p.as_bytes().get(d.len()) == Some(&b'/')));
            if let Some(d) = under {
                *below_unlisted.entry(d.as_str()).or_default() += 1;
            }
            under.is_none()
        })
        .filter(|(_, k)| {
            let kept = !loaded.contains(k.plugin.as_str());
            if kept {
                orphans.push(k.plugin.as_str());
            }
            !kept
        })
        .map(|(_, k)| k.id)
        .collect();
    if !orphans.is_empty() {
        orphans.sort_unstable();
        let n = orphans.len();
        orphans.dedup();
        tracing::warn!(
            "origin `{}`: {n} file(s) read by format plugin(s) {} that did not load are kept as they were \
             (install the plugin to serve them again)",
            spec.name,
            orphans.iter().map(|p| format!("`{p}`")).collect::<Vec<_>>().join(", ")
        );
        total.failed += n as u64;
    }
    for d in &unlisted {
        let n = below_unlisted.get(d.as_str()).copied().unwrap_or(0);
        tracing::warn!(
            "origin `{}`: directory `{d}` could not be read; {n} cataloged file(s) below it kept as they were \
             (fix its permissions to sync it)",
            spec.name
        );
    }
    total.unlisted_dirs += unlisted.len() as u64;
    if !lossy.is_empty() {
        let shown: Vec<String> =
            lossy.iter().take(3).map(|p| format!("`{}`", musefs_plugin_api::display_path(p))).collect();
        tracing::warn!(
            "origin `{}`: {} file(s) with names that are not UTF-8 are served under lossy names (invalid bytes as \
             U+FFFD; templates' $filename and $dirname show them so), e.g. {}",
            spec.name,
            lossy.len(),
            shown.join(", ")
        );
    }
    total.lossy_names += lossy.len() as u64;
    if let Some(why) = shrink_guard(
        known.len() - below_unlisted.values().sum::<usize>(),
        seen.len(),
        gone.len(),
        manifest.prune_limit,
        scope.is_some() || opts.allow_prune,
    ) {
        tracing::error!("origin `{}`: {why}", spec.name);
        total.failed_origins += 1;
        return Ok(Some(why));
    }

    // Files gone from their paths, by size and fingerprint: a new path holding the same
    // audio is the same file, moved (it keeps its id, edits and inode).
    let mut gone_by_fp: HashMap<(u64, Vec<u8>), Vec<i64>> = HashMap::new();
    for k in known.values().filter(|k| gone.contains(&k.id)) {
        if let Some(fp) = &k.fingerprint {
            gone_by_fp.entry((k.size, fp.clone())).or_default().push(k.id);
        }
    }
    let mut reattached = Vec::new();
    let bar = &opts.progress;
    bar.start(&format!("scanning {}", spec.name), work.len() as u64);

    let queue = Mutex::new(work.into_iter());
    let (tx, rx) = mpsc::sync_channel::<(String, Result<ReadFile, String>)>(BATCH * 2);
    let threads = opts.threads.max(1);
    let mut write_err = None;
    std::thread::scope(|s| {
        for _ in 0..threads {
            let tx = tx.clone();
            let queue = &queue;
            let sidecars = &sidecars;
            s.spawn(move || loop {
                if opts.stopped() {
                    break;
                }
                let next = lock(queue).next();
                let Some(path) = next else { break };
                let res = if let Some(stat) = sidecars.get(&path) {
                    Ok(sidecar(&path, stat))
                } else {
                    read_file(manifest, origin, formats, &path)
                };
                if tx.send((path, res)).is_err() {
                    break;
                }
            });
        }
        drop(tx);
        let mut batch = Vec::with_capacity(BATCH);
        let mut last_commit = Instant::now();
        for (path, res) in rx {
            bar.advance(1);
            match res {
                Ok((stat, plugin, info, fingerprint)) => {
                    // What the format read past (damage it tolerated), once per read.
                    for w in info.extra.iter().filter(|kv| kv.key == "warning") {
                        bar.suspend(&mut || tracing::warn!("{}:{path}: {}", spec.name, w.value));
                    }
                    // A new path with the audio of a file gone from its old one: moved.
                    let moved_from = if known.contains_key(&path) {
                        total.updated += 1;
                        None
                    } else {
                        let key = fingerprint.clone().map(|f| (stat.size, f));
                        match key.and_then(|k| gone_by_fp.get_mut(&k)).and_then(Vec::pop) {
                            Some(id) => {
                                gone.remove(&id);
                                total.moved += 1;
                                Some(id)
                            }
                            None => {
                                total.added += 1;
                                None
                            }
                        }
                    };
                    batch.push(Scanned { path, stat, plugin, info, fingerprint, moved_from });
                    // Commit every BATCH files or every COMMIT_EVERY: a scan that is
                    // killed resumes from its last commit, not from zero.
                    if (batch.len() >= BATCH || last_commit.elapsed() >= COMMIT_EVERY) && write_err.is_none() {
                        match catalog.write_scanned(origin_id, &batch) {
                            Ok(w) => reattached.extend(w.reattached),
                            Err(e) => write_err = Some(e),
                        }
                        batch.clear();
                        last_commit = Instant::now();
                    }
                }
                Err(reason) => {
                    total.failed += 1;
                    *total.refused.entry(reason_class(&reason)).or_default() += 1;
                    bar.suspend(&mut || tracing::warn!("skipping {}:{path}: {reason}", spec.name));
                }
            }
        }
        if !batch.is_empty() && write_err.is_none() {
            match catalog.write_scanned(origin_id, &batch) {
                Ok(w) => reattached.extend(w.reattached),
                Err(e) => write_err = Some(e),
            }
        }
    });
    bar.finish();
    if let Some(e) = write_err {
        return Err(e.into());
    }
    if opts.stopped() {
        tracing::info!("origin `{}`: scan interrupted; what was read is kept", spec.name);
        return Ok(None);
    }
    for (path, from) in &reattached {
        if path == from {
            tracing::info!("{}:{path}: back again, with the edits it had", spec.name);
        } else {
            tracing::info!("{}:{path}: found again (moved from {from}), with the edits it had", spec.name);
        }
    }
    let gone: Vec<i64> = gone.into_iter().collect();
    catalog.remove_files(&gone)?;
    total.removed += gone.len() as u64;
    // The change log only needs to cover what a running mount has not polled yet; a
    // mount that lagged longer rebuilds its tree.
    catalog.prune_changes(CHANGE_LOG_RETENTION_SECS)?;
    match &scope {
        Some(paths) => tracing::info!(
            "origin `{}`: {} changed path(s) synced in {:.2?}: {total}",
            spec.name,
            paths.len(),
            started.elapsed()
        ),
        None => tracing::info!("origin `{}` scanned in {:.2?}: {total}", spec.name, started.elapsed()),
    }
    Ok(None)
}

/// An origin's cataloged files by path.
type KnownFiles = HashMap<String, crate::catalog::KnownFile>;

/// An origin renamed in the manifest: a new origin (nothing cataloged under its name)
/// whose listing matches the files of an origin no longer in the manifest (9 in 10 of
/// the smaller side by path and size) takes that origin's catalog entries over, ids and
/// edits included, instead of adding every file again beside stale copies. Returns the
/// origin's id and known files after the adoption.
fn adopt_renamed_origin(
    spec: &OriginSpec,
    catalog: &mut Catalog,
    known: &KnownFiles,
    entries: &[Entry],
) -> Result<Option<(i64, KnownFiles)>, ScanError> {
    let files: Vec<&Entry> = entries.iter().filter(|e| e.stat.kind == EntryKind::FILE).collect();
    if !known.is_empty() || files.is_empty() {
        return Ok(None);
    }
    for (old, count, _) in catalog.inactive_origins()? {
        if count == 0 {
            continue;
        }
        let sizes = catalog.origin_sizes(&old)?;
        let matching = files.iter().filter(|e| sizes.get(e.path.as_str()) == Some(&e.stat.size)).count();
        let smaller = files.len().min(sizes.len());
        if matching * 10 >= smaller * 9 {
            catalog.rename_origin(&old, &spec.name)?;
            tracing::warn!(
                "origin `{}` holds the files of origin `{old}`, no longer in the manifest ({matching} of {} match): \
                 renamed in the catalog, edits kept",
                spec.name,
                files.len()
            );
            let id = catalog.origin_id(&spec.name, &spec.kind)?;
            return Ok(Some((id, catalog.known_files(id)?)));
        }
    }
    Ok(None)
}

/// Why a whole-origin listing must not be trusted to prune (`None`: it may): it lists
/// nothing of a cataloged origin (an unmounted NAS, an emptied bucket prefix), or more
/// than `limit` fewer files than the catalog has. A listing as long as before whose
/// paths all changed (a renamed top folder) is not a shrink: its files are found again
/// as moves. Scoped syncs (paths inotify named) and `allow_prune` are exempt.
fn shrink_guard(known: usize, seen: usize, gone: usize, limit: f64, exempt: bool) -> Option<String> {
    if exempt || gone == 0 || known == 0 {
        return None;
    }
    let shrink = known.saturating_sub(seen) as f64 / known as f64;
    if seen > 0 && shrink <= limit {
        return None;
    }
    Some(format!(
        "its listing has {seen} file(s) but the catalog has {known} ({:.0}% fewer): {gone} would be removed, more \
         than prune_limit = {limit} allows; treated as unavailable, nothing pruned (is it mounted?). If the files \
         are really gone: musefs scan --allow-prune",
        shrink * 100.0
    ))
}

/// What reading one file gives: its stamp, the plugin that read it, what it read, and
/// the audio fingerprint.
type ReadFile = (Stat, String, TrackInfo, Option<Vec<u8>>);

/// How long change log entries are kept (a week).
pub const CHANGE_LOG_RETENTION_SECS: i64 = 7 * 24 * 3600;

/// A sidecar's entry: the listing's stamp; no format reads it, its "audio" is the whole
/// file.
fn sidecar(path: &str, stat: &Stat) -> ReadFile {
    let info = TrackInfo {
        format: crate::catalog::SIDECAR_PLUGIN.into(),
        extension: extension_of(path).as_str().into(),
        tags: Default::default(),
        pictures: Default::default(),
        props: Default::default(),
        audio_offset: 0,
        audio_len: stat.size,
        regions: Default::default(),
        extra: Default::default(),
    };
    (stat.clone(), crate::catalog::SIDECAR_PLUGIN.to_owned(), info, None)
}

/// Opens, probes and reads one file. `Err` is the reason it is skipped.
fn read_file(
    manifest: &Manifest,
    origin: &OriginBox,
    formats: &[(String, FormatBox)],
    path: &str,
) -> Result<ReadFile, String> {
    let ctx = CallCtx::with_timeout(manifest.read_timeout);
    let handle = origin.open(&ctx, path.into()).into_result().map_err(|e| e.to_string())?;
    let len = handle.len();
    if len == 0 {
        return Err("empty file".into());
    }
    let mut head = vec![0u8; PROBE_HEAD_LEN.min(len as usize)];
    let mut done = 0;
    while done < head.len() {
        let n = handle
            .read_at(&ctx, done as u64, abi_stable::std_types::RSliceMut::from_mut_slice(&mut head[done..]))
            .into_result()
            .map_err(|e| e.to_string())?;
        if n == 0 {
            break;
        }
        done += n;
    }
    head.truncate(done);
    let ext = extension_of(path);
    // The plugins that claim the file, most sure first: when the best one cannot read
    // it (a damaged header that looks like another format's: a bit flip in the ID3 tag
    // glued before a FLAC stream makes it look like an MP3), the next one tries; then
    // the plugins whose extension it has, whatever their probe said. A file is refused
    // only when none reads it, with the most sure plugin's reason.
    let mut claims: Vec<(u32, usize)> = formats
        .iter()
        .enumerate()
        .map(|(i, (_, f))| (f.probe(head.as_slice().into(), ext.as_str().into()), i))
        .filter(|(score, _)| *score > 0)
        .collect();
    claims.sort_by_key(|&(score, i)| (std::cmp::Reverse(score), i));
    let mut order: Vec<usize> = claims.iter().map(|&(_, i)| i).collect();
    let by_ext: Vec<usize> = (0..formats.len())
        .filter(|i| !order.contains(i) && formats[*i].1.extensions().iter().any(|e| e.as_str() == ext))
        .collect();
    order.extend(by_ext);
    if order.is_empty() {
        return Err("not a recognised audio file (no format plugin claims it)".into());
    }
    let mut first_err = None;
    let mut found = None;
    for i in order {
        let (name, format) = (&formats[i].0, &formats[i].1);
        match format.read(&ctx, &handle).into_result() {
            Ok(info) => {
                found = Some((name, info));
                break;
            }
            Err(e) => {
                first_err.get_or_insert(format!("{name}: {e}"));
            }
        }
    }
    let Some((name, mut info)) = found else {
        return Err(first_err.unwrap_or_default());
    };
    // An empty extension: the format serves the file under its own (`.m4a`, `.m4b`).
    if info.extension.is_empty() {
        info.extension = ext.as_str().into();
    }
    if info.audio_offset + info.audio_len > len {
        return Err(format!(
            "{name}: audio range {}+{} lies past the end ({len} bytes)",
            info.audio_offset, info.audio_len
        ));
    }
    let fp = fingerprint(&ctx, &handle, info.audio_offset, info.audio_len);
    Ok((handle.stat(), name.clone(), info, fp))
}

/// The audio fingerprint of a file (see [`fingerprint_of`]); `None` if the ends cannot be
/// read (the file is served all the same, only a move of it goes unrecognised).
fn fingerprint(ctx: &CallCtx, handle: &musefs_plugin_api::HandleBox, offset: u64, len: u64) -> Option<Vec<u8>> {
    let span = FINGERPRINT_SPAN.min(len);
    let read = |at: u64| -> Option<Vec<u8>> {
        let mut buf = vec![0u8; span as usize];
        let mut done = 0;
        while done < buf.len() {
            let n = handle
                .read_at(ctx, at + done as u64, abi_stable::std_types::RSliceMut::from_mut_slice(&mut buf[done..]))
                .into_result()
                .ok()?;
            if n == 0 {
                return None;
            }
            done += n;
        }
        Some(buf)
    };
    let head = read(offset)?;
    let tail = if len > span { read(offset + len - span)? } else { Vec::new() };
    Some(fingerprint_of(len, &head, &tail))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(p: &[&str]) -> Vec<String> {
        p.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn refusal_reasons_group_by_kind_of_damage() {
        assert_eq!(
            reason_class("mp3: truncated: ID3v2 tag at offset 0 claims 4096 bytes but the file has 512"),
            "mp3: truncated: ID3v2 tag at offset N claims N bytes but the file has N"
        );
        assert_eq!(reason_class("flac: block of type 6 at 1234"), "flac: block of type N at N");
    }

    #[test]
    fn changed_paths_are_reduced_to_the_topmost_ones() {
        assert_eq!(
            minimal_paths(&v(&["a/x.flac", "a", "a b/c", "a/y/z", "b/c.flac", "b/c.flac", "bb"])),
            Some(v(&["a", "a b/c", "b/c.flac", "bb"]))
        );
        assert_eq!(minimal_paths(&v(&["x/", "/x/y"])), Some(v(&["x"])));
        assert_eq!(minimal_paths(&v(&["a", ""])), None, "the root means everything");
        assert_eq!(minimal_paths(&[]), Some(Vec::new()));
    }

    #[test]
    fn known_files_under_a_path_are_its_subtree_only() {
        use musefs_plugin_api::{EntryKind, Stat, TrackInfo};
        let d = tempfile::tempdir().unwrap();
        let mut c = Catalog::open(&d.path().join("c.db")).unwrap();
        let o = c.origin_id("o", "local").unwrap();
        let stat = Stat { kind: EntryKind::FILE, size: 1, mtime_ns: Some(1).into(), etag: None.into() };
        let info = TrackInfo {
            format: "flac".into(),
            extension: "flac".into(),
            tags: Vec::new().into(),
            pictures: Vec::new().into(),
            props: Default::default(),
            audio_offset: 0,
            audio_len: 1,
            regions: Vec::new().into(),
            extra: Vec::new().into(),
        };
        let paths = ["a/1.flac", "a/b/2.flac", "a b/3.flac", "a.flac", "ab/4.flac", "a0/5.flac", "z/a/6.flac"];
        let batch: Vec<_> =
            paths.iter().map(|p| ((*p).to_owned(), stat.clone(), "flac".to_owned(), info.clone())).collect();
        c.write_batch(o, &batch).unwrap();
        let mut got: Vec<String> = c.known_files_under(o, &v(&["a"])).unwrap().into_keys().collect();
        got.sort();
        assert_eq!(got, v(&["a/1.flac", "a/b/2.flac"]));
        let mut got: Vec<String> = c.known_files_under(o, &v(&["a.flac", "z"])).unwrap().into_keys().collect();
        got.sort();
        assert_eq!(got, v(&["a.flac", "z/a/6.flac"]));
        assert!(c.known_files_under(o, &v(&["nothing"])).unwrap().is_empty());
    }

    #[test]
    fn a_listing_that_lost_too_much_is_not_trusted_to_prune() {
        assert!(shrink_guard(100, 0, 100, 0.5, false).is_some(), "an empty listing of a cataloged origin");
        assert!(shrink_guard(100, 0, 100, 1.0, false).is_some(), "empty even with prune_limit = 1");
        assert!(shrink_guard(100, 40, 60, 0.5, false).is_some(), "60% gone");
        assert!(shrink_guard(100, 60, 40, 0.5, false).is_none(), "40% gone");
        assert!(shrink_guard(100, 0, 100, 0.5, true).is_none(), "--allow-prune or a scoped sync");
        assert!(shrink_guard(0, 0, 0, 0.5, false).is_none(), "a new origin");
        assert!(shrink_guard(100, 100, 100, 0.5, false).is_none(), "a renamed top folder: as many files, all moved");
        assert!(shrink_guard(100, 70, 100, 0.5, false).is_none(), "30% fewer");
        let why = shrink_guard(10, 1, 9, 0.5, false).unwrap();
        assert!(
            why.contains("(90% fewer)") && why.contains("9 would be removed") && why.contains("--allow-prune"),
            "{why}"
        );
    }
}

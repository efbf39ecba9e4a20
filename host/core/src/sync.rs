//! Background delta sync of a running mount.
//!
//! One thread per mount reconciles the origins into the catalog with the scanner (which
//! reads only what is new or whose size/mtime/ETag stamp changed, and prunes what is
//! gone): right after the mount, then every `sync_interval`, and, for local origins,
//! shortly after the filesystem reports a change (inotify through `notify`, debounced:
//! a burst of events costs one sync). The mount's refresh loop picks the catalog's
//! change log up and updates the live tree; file ids (and so inode numbers) are kept
//! across syncs.
//!
//! A sync uses its own catalog connection (WAL: readers are never blocked) and never
//! blocks reads. An origin whose sync fails is retried with exponential backoff
//! (5 s, 10 s, ... up to the interval) and the failure is recorded for `musefs status`;
//! it is never fatal. Stopping (orderly shutdown) interrupts a sync between files;
//! nothing is pruned by an interrupted sync.

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use notify::Watcher;

use crate::catalog::Catalog;
use crate::manifest::Manifest;
use crate::plugins::Plugins;
use crate::scanner;

/// Quiet time after the last filesystem event before a sync starts.
pub const DEBOUNCE: Duration = Duration::from_millis(700);
/// The longest a burst of events delays its sync.
pub const DEBOUNCE_MAX: Duration = Duration::from_secs(5);
const FIRST_RETRY: Duration = Duration::from_secs(5);

/// The most changed paths one origin collects before its next sync becomes a full one.
pub const MAX_PATHS: usize = 2000;

enum Msg {
    /// Something changed under a watched origin: at this origin-relative path (a file
    /// or a directory), or anywhere (`None`: the event did not say, or the kernel's
    /// event queue overflowed).
    Changed(String, Option<String>),
    /// Sync everything now (SIGUSR1).
    Now,
}

/// Origins with pending filesystem events: when the first and the last came, and the
/// paths they named (`None`: sync the whole origin).
type Dirty = HashMap<String, (Instant, Instant, Option<BTreeSet<String>>)>;

fn mark(dirty: &mut Dirty, origin: String, path: Option<String>) {
    let t = Instant::now();
    let e = dirty.entry(origin).or_insert_with(|| (t, t, Some(BTreeSet::new())));
    e.1 = t;
    match (path, &mut e.2) {
        (Some(p), Some(set)) => {
            set.insert(p);
            if set.len() > MAX_PATHS {
                e.2 = None;
            }
        }
        (None, _) => e.2 = None,
        (Some(_), None) => {}
    }
}

/// How long an origin that failed `failures` times in a row waits before its next
/// sync: 5 s, doubling, capped (the sync interval caps it further).
fn backoff(failures: u32) -> Duration {
    FIRST_RETRY.saturating_mul(2u32.saturating_pow(failures.saturating_sub(1).min(16)))
}

/// The background syncer of one mount.
pub struct Syncer {
    stop: Arc<AtomicBool>,
    /// Raised after a sync changed the catalog (the mount then refreshes at once).
    changed: Arc<AtomicBool>,
    tx: Sender<Msg>,
    thread: Option<JoinHandle<()>>,
    _watcher: Option<notify::RecommendedWatcher>,
}

/// The root directory of a `local` origin, from its configuration.
fn local_root(kind: &str, config_json: &str) -> Option<PathBuf> {
    if kind != "local" {
        return None;
    }
    let v: serde_json::Value = serde_json::from_str(config_json).ok()?;
    v.get("root")?.as_str().map(PathBuf::from)
}

impl Syncer {
    /// Starts the syncer (a no-op thread if the manifest turns syncing and watching off).
    pub fn start(manifest: Arc<Manifest>, plugins: Arc<Plugins>) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let changed = Arc::new(AtomicBool::new(false));
        let (tx, rx) = channel();
        let watcher = if manifest.watch { watch(&manifest, tx.clone()) } else { None };
        let thread = {
            let (stop, changed) = (stop.clone(), changed.clone());
            std::thread::Builder::new()
                .name("musefs-sync".into())
                .spawn(move || run(&manifest, &plugins, &rx, &stop, &changed))
                .ok()
        };
        Self { stop, changed, tx, thread, _watcher: watcher }
    }

    /// Whether a sync changed the catalog since the last call.
    pub fn take_changed(&self) -> bool {
        self.changed.swap(false, Ordering::Relaxed)
    }

    /// Asks for a sync of every origin now.
    pub fn sync_now(&self) {
        let _ = self.tx.send(Msg::Now);
    }

    /// Stops the syncer: a sync in progress is interrupted between files. Waits at most
    /// `bound` for the thread.
    pub fn stop(mut self, bound: Duration) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.tx.send(Msg::Now);
        if let Some(t) = self.thread.take() {
            let started = Instant::now();
            while !t.is_finished() && started.elapsed() < bound {
                std::thread::sleep(Duration::from_millis(20));
            }
            if t.is_finished() {
                let _ = t.join();
            } else {
                tracing::warn!("background sync did not stop within {bound:?}; leaving it");
            }
        }
    }
}

/// Watches every local origin's root (recursively).
fn watch(manifest: &Manifest, tx: Sender<Msg>) -> Option<notify::RecommendedWatcher> {
    let roots: Vec<(String, PathBuf)> = manifest
        .origins
        .iter()
        .filter_map(|o| local_root(&o.kind, &o.config_json).map(|r| (o.name.clone(), r)))
        .collect();
    if roots.is_empty() {
        return None;
    }
    let owners = roots.clone();
    let handler = move |res: notify::Result<notify::Event>| {
        let ev = match res {
            Ok(ev) => ev,
            Err(e) => {
                // An error (e.g. a watch that could not be added): resync everything.
                tracing::debug!("watch error: {e}");
                for (name, _) in &owners {
                    let _ = tx.send(Msg::Changed(name.clone(), None));
                }
                return;
            }
        };
        if matches!(ev.kind, notify::EventKind::Access(_)) {
            return;
        }
        for (name, root) in &owners {
            if ev.need_rescan() {
                let _ = tx.send(Msg::Changed(name.clone(), None));
                continue;
            }
            for p in &ev.paths {
                let Ok(rel) = p.strip_prefix(root) else { continue };
                // A path that is not UTF-8 cannot be in the catalog: sync the origin.
                let rel = rel.to_str().map(|r| r.to_owned()).filter(|r| !r.is_empty());
                let _ = tx.send(Msg::Changed(name.clone(), rel));
            }
        }
    };
    let mut w = match notify::recommended_watcher(handler) {
        Ok(w) => w,
        Err(e) => {
            tracing::warn!("cannot watch local origins for changes ({e}); relying on sync_interval");
            return None;
        }
    };
    for (name, root) in &roots {
        match w.watch(root, notify::RecursiveMode::Recursive) {
            Ok(()) => tracing::info!("watching origin `{name}` ({}) for changes", root.display()),
            Err(e) => tracing::warn!(
                "cannot watch origin `{name}` ({}): {e}; relying on sync_interval \
                 (raise fs.inotify.max_user_watches for large trees)",
                root.display()
            ),
        }
    }
    Some(w)
}

fn run(manifest: &Manifest, plugins: &Plugins, rx: &Receiver<Msg>, stop: &Arc<AtomicBool>, changed: &AtomicBool) {
    let mut catalog = match Catalog::open_for(manifest) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!("background sync disabled: {e}");
            return;
        }
    };
    let names: Vec<String> = manifest.origins.iter().map(|o| o.name.clone()).collect();
    let now = Instant::now();
    // When each origin is due, and its failures in a row.
    let mut due: HashMap<String, Instant> = HashMap::new();
    let mut failures: HashMap<String, u32> = HashMap::new();
    if manifest.sync_interval.is_some() {
        for n in &names {
            due.insert(n.clone(), now);
        }
    }
    let mut dirty = Dirty::new();
    loop {
        if stop.load(Ordering::Relaxed) {
            return;
        }
        let now = Instant::now();
        let mut ready: Vec<String> = due.iter().filter(|(_, t)| **t <= now).map(|(n, _)| n.clone()).collect();
        ready.extend(
            dirty
                .iter()
                .filter(|(_, (first, last, _))| now >= *last + DEBOUNCE || now >= *first + DEBOUNCE_MAX)
                .map(|(n, _)| n.clone()),
        );
        ready.sort();
        ready.dedup();
        if !ready.is_empty() {
            // An origin due (interval, SIGUSR1) is synced whole; one with only events
            // just at the paths they named.
            let mut scope = HashMap::new();
            for n in &ready {
                if let Some((_, _, Some(paths))) = dirty.remove(n) {
                    if due.get(n).is_none_or(|t| *t > now) {
                        scope.insert(n.clone(), paths.into_iter().collect());
                    }
                }
            }
            let opts = scanner::Options {
                threads: std::thread::available_parallelism().map_or(2, |n| n.get()),
                progress: crate::progress::silent(),
                only: Some(ready.clone()),
                stop: Some(stop.clone()),
                scope,
                allow_prune: false,
            };
            let started = Instant::now();
            let outcome = scanner::scan(manifest, plugins, &mut catalog, &opts);
            let took = started.elapsed();
            let records = catalog.sync_records().unwrap_or_default();
            let interval = manifest.sync_interval;
            for n in &ready {
                let ok = outcome.is_ok() && records.iter().any(|r| &r.origin == n && r.ok);
                // The origins due together are scanned in one run: each gets its duration.
                crate::metrics::global().synced(n, took, ok);
                let next = if ok {
                    failures.remove(n);
                    interval
                } else {
                    let f = failures.entry(n.clone()).or_insert(0);
                    *f += 1;
                    let backoff = backoff(*f);
                    let why = records.iter().find(|r| &r.origin == n).and_then(|r| r.error.clone());
                    let why = match &outcome {
                        Err(e) => Some(e.to_string()),
                        Ok(_) => why,
                    };
                    if !stop.load(Ordering::Relaxed) {
                        tracing::warn!(
                            "background sync of origin `{n}` failed ({} in a row): {}; retrying in {backoff:?}",
                            f,
                            why.unwrap_or_else(|| "unknown error".into())
                        );
                    }
                    Some(interval.map_or(backoff, |i| backoff.min(i)))
                };
                match next {
                    Some(d) => due.insert(n.clone(), Instant::now() + d),
                    None => due.remove(n),
                };
            }
            if let Ok(sum) = &outcome {
                if sum.changed() {
                    changed.store(true, Ordering::Relaxed);
                    tracing::info!("background sync of {}: {sum}", ready.join(", "));
                }
            }
            continue;
        }
        // Sleep until the next due time or the next event.
        let next_due = due.values().min().copied();
        let next_dirty = dirty.values().map(|(first, last, _)| (*last + DEBOUNCE).min(*first + DEBOUNCE_MAX)).min();
        let wake = [next_due, next_dirty].into_iter().flatten().min();
        let wait = wake.map_or(Duration::from_secs(3600), |w| w.saturating_duration_since(Instant::now()));
        match rx.recv_timeout(wait.max(Duration::from_millis(10))) {
            Ok(Msg::Changed(name, path)) => mark(&mut dirty, name, path),
            Ok(Msg::Now) => {
                for n in &names {
                    due.insert(n.clone(), Instant::now());
                }
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_collect_paths_until_too_many_or_unspecific() {
        let mut d = Dirty::new();
        mark(&mut d, "a".into(), Some("x/1.flac".into()));
        mark(&mut d, "a".into(), Some("x/1.flac".into()));
        mark(&mut d, "a".into(), Some("y".into()));
        assert_eq!(d["a"].2.as_ref().unwrap().iter().collect::<Vec<_>>(), ["x/1.flac", "y"]);
        mark(&mut d, "b".into(), None);
        mark(&mut d, "b".into(), Some("z".into()));
        assert!(d["b"].2.is_none(), "an event without a path means the whole origin, for good");
        for i in 0..=MAX_PATHS {
            mark(&mut d, "c".into(), Some(format!("{i}")));
        }
        assert!(d["c"].2.is_none(), "more than MAX_PATHS paths: the whole origin");
        assert!(d["a"].0 <= d["a"].1, "first and last event times");
    }

    #[test]
    fn failures_back_off_doubling_from_five_seconds() {
        assert_eq!(backoff(1), Duration::from_secs(5));
        assert_eq!(backoff(2), Duration::from_secs(10));
        assert_eq!(backoff(4), Duration::from_secs(40));
        assert!(backoff(u32::MAX) >= backoff(17), "no overflow, no shrinking");
    }

    #[test]
    fn only_local_origins_have_a_root_to_watch() {
        assert_eq!(local_root("local", r#"{"root":"/music"}"#), Some(PathBuf::from("/music")));
        assert_eq!(local_root("s3", r#"{"root":"/music"}"#), None);
        assert_eq!(local_root("local", "not json"), None);
    }
}

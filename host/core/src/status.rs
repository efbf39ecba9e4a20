//! `musefs status`: who owns the state directory, the catalog, the last sync of each
//! origin, the chunk cache.

use std::fmt::Write as _;

use crate::catalog::{Catalog, CatalogError};
use crate::manifest::Manifest;
use crate::state::{pid_alive, OwnerState, StateDir, StateError};

/// An error gathering the status.
#[derive(Debug, thiserror::Error)]
pub enum StatusError {
    /// The catalog failed.
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    /// The owner file failed.
    #[error(transparent)]
    State(#[from] StateError),
}

use crate::util::now_ms;

fn ago(ms: i64) -> String {
    let d = (now_ms() - ms).max(0) / 1000;
    match d {
        0..=119 => format!("{d} s ago"),
        120..=7199 => format!("{} min ago", d / 60),
        _ => format!("{} h ago", d / 3600),
    }
}

/// Who owns the state directory.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum Owner {
    /// Nobody ever did.
    None,
    /// A live process: a mount (`mountpoint`) or a scan (no mountpoint).
    Active {
        /// Its process id.
        pid: u32,
        /// Where it is mounted (`None`: a scan).
        mountpoint: Option<String>,
        /// The ownership generation.
        generation: u64,
        /// Its last heartbeat (ms since the epoch).
        heartbeat_ms: u64,
        /// Processes reading beside it.
        readers: u32,
    },
    /// A process that died without shutting down (the next mount or scan recovers).
    Died {
        /// Its process id.
        pid: u32,
        /// The ownership generation.
        generation: u64,
    },
    /// Released cleanly.
    Released {
        /// When (ms since the epoch).
        at_ms: u64,
        /// The ownership generation.
        generation: u64,
    },
}

/// The last sync of one origin.
#[derive(Debug, Clone, serde::Serialize)]
pub struct OriginStatus {
    /// The origin's name.
    pub name: String,
    /// Whether it is in the manifest (an origin only in the catalog keeps its files
    /// and edits but serves nothing).
    pub in_manifest: bool,
    /// When the last sync started (ms since the epoch; `None`: never synced).
    pub started_ms: Option<i64>,
    /// When it finished (`None`: never, or did not finish).
    pub finished_ms: Option<i64>,
    /// Its summary (when it succeeded).
    pub summary: Option<String>,
    /// Its error (when it failed).
    pub error: Option<String>,
    /// Failures in a row.
    pub failures: i64,
    /// Files of an origin not in the manifest kept in the catalog.
    pub files: Option<u64>,
    /// Of those, files with edits.
    pub edited: Option<u64>,
}

/// The status of a state directory (`musefs status`, `--json` for scripts).
#[derive(Debug, Clone, serde::Serialize)]
pub struct Status {
    /// The state directory.
    pub state_dir: String,
    /// Its owner.
    pub owner: Owner,
    /// The catalog file.
    pub catalog: String,
    /// The catalog's schema version.
    pub schema: i64,
    /// Files in the catalog.
    pub files: u64,
    /// The background sync interval in seconds (`None`: off).
    pub sync_interval_secs: Option<u64>,
    /// Whether local origins are watched.
    pub watch: bool,
    /// Each origin's last sync.
    pub origins: Vec<OriginStatus>,
}

/// Gathers the status.
///
/// # Errors
/// Catalog and owner-file errors.
pub fn gather(manifest: &Manifest) -> Result<Status, StatusError> {
    let dir = StateDir::new(&manifest.state_dir);
    let owner = match dir.read_record()? {
        None => Owner::None,
        Some(r) if r.state == OwnerState::Active && pid_alive(r.pid) => Owner::Active {
            pid: r.pid,
            mountpoint: (!r.mountpoint.is_empty()).then(|| r.mountpoint.clone()),
            generation: r.generation,
            heartbeat_ms: r.heartbeat_ms,
            readers: r.readers.saturating_sub(1),
        },
        Some(r) if r.state == OwnerState::Active => Owner::Died { pid: r.pid, generation: r.generation },
        Some(r) => Owner::Released { at_ms: r.heartbeat_ms, generation: r.generation },
    };
    let catalog = Catalog::open_for(manifest)?;
    let (files, _, _) = catalog.counts()?;
    let records = catalog.sync_records()?;
    let mut origins: Vec<OriginStatus> = manifest
        .origins
        .iter()
        .map(|o| {
            let r = records.iter().find(|r| r.origin == o.name);
            OriginStatus {
                name: o.name.clone(),
                in_manifest: true,
                started_ms: r.map(|r| r.started_at),
                finished_ms: r.and_then(|r| r.finished_at),
                summary: r.filter(|r| r.error.is_none()).map(|r| r.summary.clone()),
                error: r.and_then(|r| r.error.clone()),
                failures: r.map_or(0, |r| r.failures),
                files: None,
                edited: None,
            }
        })
        .collect();
    for (name, files, edited) in catalog.inactive_origins()? {
        origins.push(OriginStatus {
            name,
            in_manifest: false,
            started_ms: None,
            finished_ms: None,
            summary: None,
            error: None,
            failures: 0,
            files: Some(files),
            edited: Some(edited),
        });
    }
    Ok(Status {
        state_dir: manifest.state_dir.display().to_string(),
        owner,
        catalog: catalog.path().display().to_string(),
        schema: catalog.schema_version()?,
        files,
        sync_interval_secs: manifest.sync_interval.map(|d| d.as_secs()),
        watch: manifest.watch,
        origins,
    })
}

/// The status report, as text.
///
/// # Errors
/// Catalog and owner-file errors.
pub fn render(manifest: &Manifest) -> Result<String, StatusError> {
    Ok(text(&gather(manifest)?))
}

/// `status` as the text `musefs status` prints.
pub fn text(status: &Status) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "state_dir: {}", status.state_dir);
    match &status.owner {
        Owner::None => {
            let _ = writeln!(out, "owner:     none");
        }
        Owner::Active { pid, mountpoint, generation, heartbeat_ms, readers } => {
            let what = mountpoint.as_ref().map_or_else(|| "scanning".to_owned(), |m| format!("mounted at {m}"));
            let _ = writeln!(
                out,
                "owner:     pid {pid} ({what}), generation {generation}, heartbeat {}",
                ago(*heartbeat_ms as i64)
            );
            let _ = writeln!(out, "readers:   {readers}");
        }
        Owner::Died { pid, generation } => {
            let _ = writeln!(
                out,
                "owner:     none (pid {pid} died without shutting down; the next mount or scan recovers), generation \
                 {generation}"
            );
        }
        Owner::Released { at_ms, generation } => {
            let _ = writeln!(out, "owner:     none (released cleanly {}), generation {generation}", ago(*at_ms as i64));
        }
    }
    let _ = writeln!(out, "catalog:   {} (schema {}), {} file(s)", status.catalog, status.schema, status.files);
    let interval = status.sync_interval_secs.map_or_else(|| "off".to_owned(), |s| format!("every {s} s"));
    let _ = writeln!(out, "sync:      {interval}{}", if status.watch { ", local origins watched" } else { "" });
    for o in &status.origins {
        let name = &o.name;
        if !o.in_manifest {
            let _ = writeln!(
                out,
                "  origin {name}: not in the manifest: {} file(s) ({} edited) kept in the catalog, not in the \
                 tree (an origin of the manifest that lists the same files takes them over, edits included, at its \
                 next scan)",
                o.files.unwrap_or(0),
                o.edited.unwrap_or(0)
            );
            continue;
        }
        let Some(started) = o.started_ms else {
            let _ = writeln!(out, "  origin {name}: never synced");
            continue;
        };
        let when = match o.finished_ms {
            None => format!("started {} and did not finish", ago(started)),
            Some(f) => ago(f),
        };
        let result = match (&o.error, &o.summary) {
            (Some(e), _) => format!("FAILED ({} in a row): {e}", o.failures),
            (None, s) => format!("ok: {}", s.as_deref().unwrap_or("")),
        };
        let _ = writeln!(out, "  origin {name}: last sync {when}, {result}");
    }
    out
}

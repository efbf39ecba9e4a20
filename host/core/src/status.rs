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

/// The status report, as text.
///
/// # Errors
/// Catalog and owner-file errors.
pub fn render(manifest: &Manifest) -> Result<String, StatusError> {
    let mut out = String::new();
    let dir = StateDir::new(&manifest.state_dir);
    let _ = writeln!(out, "state_dir: {}", manifest.state_dir.display());
    match dir.read_record()? {
        None => {
            let _ = writeln!(out, "owner:     none");
        }
        Some(r) if r.state == OwnerState::Active && pid_alive(r.pid) => {
            let what =
                if r.mountpoint.is_empty() { "scanning".to_owned() } else { format!("mounted at {}", r.mountpoint) };
            let _ = writeln!(
                out,
                "owner:     pid {} ({what}), generation {}, heartbeat {}",
                r.pid,
                r.generation,
                ago(r.heartbeat_ms as i64)
            );
            let _ = writeln!(out, "readers:   {}", r.readers.saturating_sub(1));
        }
        Some(r) if r.state == OwnerState::Active => {
            let _ = writeln!(
                out,
                "owner:     none (pid {} died without shutting down; the next mount or scan recovers), generation {}",
                r.pid, r.generation
            );
        }
        Some(r) => {
            let _ = writeln!(
                out,
                "owner:     none (released cleanly {}), generation {}",
                ago(r.heartbeat_ms as i64),
                r.generation
            );
        }
    }
    let catalog = Catalog::open_for(manifest)?;
    let (files, _, _) = catalog.counts()?;
    let _ = writeln!(
        out,
        "catalog:   {} (schema {}), {files} file(s)",
        catalog.path().display(),
        catalog.schema_version()?
    );
    let interval = manifest.sync_interval.map_or_else(|| "off".to_owned(), |d| format!("every {} s", d.as_secs()));
    let _ = writeln!(out, "sync:      {interval}{}", if manifest.watch { ", local origins watched" } else { "" });
    let records = catalog.sync_records()?;
    for o in &manifest.origins {
        match records.iter().find(|r| r.origin == o.name) {
            None => {
                let _ = writeln!(out, "  origin {}: never synced", o.name);
            }
            Some(r) => {
                let when = match r.finished_at {
                    None => format!("started {} and did not finish", ago(r.started_at)),
                    Some(f) => ago(f),
                };
                let result = match &r.error {
                    None => format!("ok: {}", r.summary),
                    Some(e) => format!("FAILED ({} in a row): {e}", r.failures),
                };
                let _ = writeln!(out, "  origin {}: last sync {when}, {result}", o.name);
            }
        }
    }
    for (name, files, edited) in catalog.inactive_origins()? {
        let _ = writeln!(
            out,
            "  origin {name}: not in the manifest: {files} file(s) ({edited} edited) kept in the catalog, not in the \
             tree (an origin of the manifest that lists the same files takes them over, edits included, at its \
             next scan)"
        );
    }
    Ok(out)
}

//! The change log: every write that changes what a file serves (scan, edit, removal)
//! appends the file's id in the same transaction; a mount applies the entries after its
//! position to its tree, and a position older than the oldest entry kept is a gap (the
//! mount rebuilds its tree).

use rusqlite::{params, Transaction};

use super::{Catalog, Result};
use crate::util::now_secs;

/// A batch of changed file ids from the change log.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Changes {
    /// Changed files (added, rewritten, edited or removed), each once.
    pub files: Vec<i64>,
    /// The sequence number to ask from next time.
    pub last: i64,
    /// Log entries after the asked-for point were pruned: rebuild everything.
    pub gap: bool,
}

impl Catalog {
    /// The newest change log sequence number (0 if none).
    ///
    /// # Errors
    /// SQLite errors.
    pub fn last_change(&self) -> Result<i64> {
        // The log's AUTOINCREMENT counter, not max(seq): it survives a prune that
        // emptied the log, so a position taken before the prune is never mistaken for
        // the current one.
        self.conn
            .query_row(
                "SELECT max(coalesce((SELECT seq FROM sqlite_sequence WHERE name = 'changes'), 0),
                            coalesce((SELECT max(seq) FROM changes), 0))",
                [],
                |r| r.get(0),
            )
            .map_err(self.err())
    }

    /// Files changed after sequence number `after`.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn changes_since(&self, after: i64) -> Result<Changes> {
        let min: Option<i64> =
            self.conn.query_row("SELECT min(seq) FROM changes", [], |r| r.get(0)).map_err(self.err())?;
        let max = self.last_change()?;
        if max <= after {
            return Ok(Changes { files: Vec::new(), last: after.max(max), gap: false });
        }
        // Entries after `after` were pruned: the log no longer says what changed.
        let gap = min.is_none_or(|m| m > after + 1);
        let mut st = self
            .conn
            .prepare_cached("SELECT DISTINCT file_id FROM changes WHERE seq > ?1 AND seq <= ?2")
            .map_err(self.err())?;
        let files = st
            .query_map(params![after, max], |r| r.get(0))
            .map_err(self.err())?
            .collect::<std::result::Result<Vec<i64>, _>>()
            .map_err(self.err())?;
        Ok(Changes { files, last: max, gap })
    }

    /// Drops change log entries older than `age_secs` (a mount that lagged that far
    /// rebuilds its tree instead; see [`Changes::gap`]).
    ///
    /// # Errors
    /// SQLite errors.
    pub fn prune_changes(&self, age_secs: i64) -> Result<usize> {
        self.conn.execute("DELETE FROM changes WHERE at < ?1", [now_secs() - age_secs]).map_err(self.err())
    }
}

/// Appends `file_id` to the change log inside `tx`.
pub(crate) fn log_change(tx: &Transaction<'_>, file_id: i64) -> rusqlite::Result<()> {
    tx.prepare_cached("INSERT INTO changes (file_id, at) VALUES (?1, ?2)")?.execute(params![file_id, now_secs()])?;
    Ok(())
}

//! The SQLite catalog: origins, files, tags, pictures, audio properties.
//!
//! One database per state directory (`catalog.db`, WAL mode). The schema is versioned
//! with `PRAGMA user_version` and upgraded by the migrations in [`MIGRATIONS`]; a
//! catalog written by a newer musefs is refused with a clear error, never touched.
//!
//! File rows keep their id across rescans (an update is an upsert on
//! `(origin, path)`), so inode numbers derived from them are stable. Tags carry a
//! `source`: [`SOURCE_FILE`] for what the file says, [`SOURCE_USER`] for the user's
//! overlay; a rescan replaces only the former.
//!
//! The overlay (see [`overlay`]) works key by key: a key listed in `overrides` for a file
//! takes its values from the user's rows only (none = the key is removed); pictures
//! likewise, all at once, through `art_overrides`. Every change to what a file serves
//! (a scan that rewrote it, an edit, a removal) bumps the file's `gen` and appends its id
//! to the `changes` log, which a running mount polls to refresh its tree incrementally.

pub mod changelog;
pub mod chunks;
pub mod journal;
pub mod overlay;
pub use overlay::PictureRef;

use changelog::log_change;
pub use changelog::Changes;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use musefs_plugin_api::{Stat, TrackInfo};
use rusqlite::{params, Connection, OptionalExtension, Transaction};

use crate::util::now_secs;

/// Tags read from the file.
pub const SOURCE_FILE: i64 = 0;
/// Tags set by the user (an overlay that wins over the file's own values per key).
pub const SOURCE_USER: i64 = 1;

/// The migrations; `MIGRATIONS[i]` upgrades schema version `i` to `i + 1`.
pub const MIGRATIONS: &[&str] = &[
    r"
CREATE TABLE origins (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    kind TEXT NOT NULL
);
CREATE TABLE files (
    id INTEGER PRIMARY KEY,
    origin_id INTEGER NOT NULL REFERENCES origins(id) ON DELETE CASCADE,
    path TEXT NOT NULL,
    size INTEGER NOT NULL,
    mtime_ns INTEGER,
    etag TEXT,
    plugin TEXT NOT NULL,
    format TEXT NOT NULL,
    extension TEXT NOT NULL,
    audio_offset INTEGER NOT NULL,
    audio_len INTEGER NOT NULL,
    codec TEXT NOT NULL,
    duration_ms INTEGER NOT NULL,
    sample_rate INTEGER NOT NULL,
    channels INTEGER NOT NULL,
    bits_per_sample INTEGER NOT NULL,
    bitrate INTEGER NOT NULL,
    regions TEXT NOT NULL,
    extra TEXT NOT NULL,
    scanned_at INTEGER NOT NULL,
    UNIQUE (origin_id, path)
);
CREATE TABLE tags (
    file_id INTEGER NOT NULL REFERENCES files(id) ON DELETE CASCADE,
    source INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    key TEXT NOT NULL,
    native TEXT NOT NULL,
    value TEXT NOT NULL,
    data BLOB,
    PRIMARY KEY (file_id, source, seq)
) WITHOUT ROWID;
CREATE INDEX tags_by_key ON tags(key, file_id);
CREATE TABLE pictures (
    id INTEGER PRIMARY KEY,
    hash BLOB NOT NULL UNIQUE,
    mime TEXT NOT NULL,
    width INTEGER NOT NULL,
    height INTEGER NOT NULL,
    depth INTEGER NOT NULL,
    colors INTEGER NOT NULL,
    data BLOB NOT NULL
);
CREATE TABLE file_pictures (
    file_id INTEGER NOT NULL REFERENCES files(id) ON DELETE CASCADE,
    source INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    picture_id INTEGER NOT NULL REFERENCES pictures(id),
    picture_type INTEGER NOT NULL,
    description TEXT NOT NULL,
    PRIMARY KEY (file_id, source, seq)
) WITHOUT ROWID;
CREATE INDEX file_pictures_by_picture ON file_pictures(picture_id);
",
    r"
ALTER TABLE files ADD COLUMN gen INTEGER NOT NULL DEFAULT 0;
CREATE TABLE overrides (
    file_id INTEGER NOT NULL REFERENCES files(id) ON DELETE CASCADE,
    key TEXT NOT NULL,
    PRIMARY KEY (file_id, key)
) WITHOUT ROWID;
CREATE TABLE art_overrides (
    file_id INTEGER PRIMARY KEY REFERENCES files(id) ON DELETE CASCADE
);
CREATE TABLE changes (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    file_id INTEGER NOT NULL,
    at INTEGER NOT NULL
);
",
    r"
CREATE TABLE cache_chunks (
    hash BLOB PRIMARY KEY,
    size INTEGER NOT NULL,
    last_used INTEGER NOT NULL,
    pinned INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;
CREATE TABLE cache_manifest (
    file_id INTEGER NOT NULL REFERENCES files(id) ON DELETE CASCADE,
    idx INTEGER NOT NULL,
    stamp TEXT NOT NULL,
    chunk_size INTEGER NOT NULL,
    hash BLOB NOT NULL,
    PRIMARY KEY (file_id, idx)
) WITHOUT ROWID;
CREATE INDEX cache_manifest_by_hash ON cache_manifest(hash);
",
    r"
CREATE TABLE origin_sync (
    origin TEXT PRIMARY KEY,
    started_at INTEGER NOT NULL,
    finished_at INTEGER,
    ok INTEGER NOT NULL,
    summary TEXT NOT NULL,
    error TEXT,
    failures INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;
",
    r"
CREATE TABLE meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
) WITHOUT ROWID;
INSERT INTO meta (key, value) VALUES ('catalog_id', lower(hex(randomblob(16))));
",
    // v6: a picture block's fields belong to the file's block, not to the image bytes
    // shared by every file with the same image (they were taken from whichever file a
    // scan met first). Existing rows keep what they had.
    r"
ALTER TABLE file_pictures ADD COLUMN mime TEXT;
ALTER TABLE file_pictures ADD COLUMN width INTEGER;
ALTER TABLE file_pictures ADD COLUMN height INTEGER;
ALTER TABLE file_pictures ADD COLUMN depth INTEGER;
ALTER TABLE file_pictures ADD COLUMN colors INTEGER;
UPDATE file_pictures SET
    mime = (SELECT mime FROM pictures p WHERE p.id = picture_id),
    width = (SELECT width FROM pictures p WHERE p.id = picture_id),
    height = (SELECT height FROM pictures p WHERE p.id = picture_id),
    depth = (SELECT depth FROM pictures p WHERE p.id = picture_id),
    colors = (SELECT colors FROM pictures p WHERE p.id = picture_id);
",
    // v7: a user's edits survive their file's row. `fingerprint` (the audio's length and
    // its first and last 16 KiB, hashed) finds a file that moved inside its origin; the
    // overlay of a removed file waits in `kept_edits` (as the edits that recreate it) for
    // the file to come back, at its path or, moved, by its fingerprint. `origins.active`:
    // an origin no longer in the manifest keeps its rows (and edits) but leaves the tree.
    r"
ALTER TABLE files ADD COLUMN fingerprint BLOB;
CREATE TABLE kept_edits (
    id INTEGER PRIMARY KEY,
    origin TEXT NOT NULL,
    path TEXT NOT NULL,
    size INTEGER NOT NULL,
    fingerprint BLOB,
    removed_at INTEGER NOT NULL,
    record TEXT NOT NULL
);
CREATE INDEX kept_edits_by_path ON kept_edits(origin, path);
CREATE INDEX kept_edits_by_fingerprint ON kept_edits(fingerprint) WHERE fingerprint IS NOT NULL;
ALTER TABLE origins ADD COLUMN active INTEGER NOT NULL DEFAULT 1;
",
    // v8: when a file's entry last changed (added, rescanned, edited, moved) and when the
    // user last edited it, in ns: the tree's file and directory times.
    r"
ALTER TABLE files ADD COLUMN placed_ns INTEGER NOT NULL DEFAULT 0;
ALTER TABLE files ADD COLUMN edited_ns INTEGER NOT NULL DEFAULT 0;
UPDATE files SET placed_ns = scanned_at * 1000000000;
",
];

/// The last sync (scan) of one origin, as `musefs status` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncRecord {
    /// The origin's name.
    pub origin: String,
    /// When the last sync started (ms since the epoch).
    pub started_at: i64,
    /// When it finished (`None`: running, or the process died during it).
    pub finished_at: Option<i64>,
    /// Whether it succeeded.
    pub ok: bool,
    /// What it did (`added 3 / updated 0 / ...`).
    pub summary: String,
    /// Why it failed.
    pub error: Option<String>,
    /// Failures in a row.
    pub failures: i64,
}

/// The schema version this build writes.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// A catalog error.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    /// SQLite failed.
    #[error("catalog {path}: {source}")]
    Sqlite {
        /// The database file.
        path: PathBuf,
        /// The SQLite error.
        source: rusqlite::Error,
    },
    /// The edits were committed, but their journal record could not be written.
    #[error(
        "the edit was saved in the catalog, but its record could not be written to the edit journal {path} \
         ({source}): it would not survive a rebuild of the catalog"
    )]
    Journal {
        /// The journal.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// `PRAGMA integrity_check` found problems.
    #[error("catalog {path} is damaged: {problems}")]
    Corrupt {
        /// The database file.
        path: PathBuf,
        /// What SQLite reported.
        problems: String,
    },
    /// The catalog was written by a newer musefs.
    #[error(
        "catalog {path} has schema version {found}, but this musefs knows only up to {known}: \
         it was written by a newer musefs; upgrade musefs or point `state_dir` elsewhere"
    )]
    TooNew {
        /// The database file.
        path: PathBuf,
        /// Its schema version.
        found: i64,
        /// The newest this build knows.
        known: i64,
    },
    /// An edit was refused (bad key or value); nothing was written.
    #[error("{0}")]
    InvalidEdit(String),
    /// The state directory cannot be created.
    #[error("cannot create state directory {path}: {source}")]
    StateDir {
        /// The directory.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// A catalog result.
pub type Result<T> = std::result::Result<T, CatalogError>;

/// The catalog's view of one file, as the scanner compares it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KnownFile {
    /// The file id.
    pub id: i64,
    /// Size at the last scan.
    pub size: u64,
    /// Modification time at the last scan.
    pub mtime_ns: Option<i64>,
    /// ETag at the last scan.
    pub etag: Option<String>,
    /// The format plugin that read it.
    pub plugin: String,
    /// Its audio fingerprint, if the scan that read it took one.
    pub fingerprint: Option<Vec<u8>>,
}

/// A file a scan read, to be written to the catalog.
#[derive(Debug, Clone)]
pub struct Scanned {
    /// Its path in the origin.
    pub path: String,
    /// Its stamp.
    pub stat: Stat,
    /// The format plugin that read it.
    pub plugin: String,
    /// What the plugin read.
    pub info: TrackInfo,
    /// Its audio fingerprint (see [`fingerprint_of`]).
    pub fingerprint: Option<Vec<u8>>,
    /// The id of a cataloged file it is (moved here from another path): that row takes
    /// this path and keeps its id, edits and inode.
    pub moved_from: Option<i64>,
}

/// How many bytes of each end of the audio a fingerprint covers.
pub const FINGERPRINT_SPAN: u64 = 16 * 1024;

/// A fingerprint of audio of `len` bytes whose first and last [`FINGERPRINT_SPAN`] bytes
/// (or fewer) are `head` and `tail`: 16 bytes of BLAKE3.
pub fn fingerprint_of(len: u64, head: &[u8], tail: &[u8]) -> Vec<u8> {
    let mut h = blake3::Hasher::new();
    h.update(b"musefs-audio-fp-1");
    h.update(&len.to_le_bytes());
    h.update(head);
    h.update(tail);
    h.finalize().as_bytes()[..16].to_vec()
}

/// A moved file's row before the move: path, size, mtime, ETag, generation.
type PrevRow = (String, i64, Option<i64>, Option<String>, i64);

/// What [`Catalog::write_scanned`] did besides writing.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Written {
    /// The file ids, in the batch's order.
    pub ids: Vec<i64>,
    /// Files that came back and got their kept edits again: `(origin path, kept at path)`.
    pub reattached: Vec<(String, String)>,
}

/// One file as the serving core needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileRow {
    /// The file id.
    pub id: i64,
    /// Its origin's name.
    pub origin: String,
    /// Its path in the origin.
    pub path: String,
    /// Size at the last scan.
    pub size: u64,
    /// Modification time at the last scan.
    pub mtime_ns: Option<i64>,
    /// ETag at the last scan.
    pub etag: Option<String>,
    /// The format plugin that read it.
    pub plugin: String,
    /// The extension to serve it with.
    pub extension: String,
    /// Bumped each time what the file serves may change (rescan, edit).
    pub gen: i64,
    /// Where the audio starts (the header, art included, lies before).
    pub audio_offset: u64,
    /// When its entry last changed (added, rescanned, edited, moved), ns since the epoch.
    pub placed_ns: i64,
    /// When the user last edited its tags or pictures (0: never), ns since the epoch.
    pub edited_ns: i64,
}

/// The `plugin` of a sidecar's row: a non-audio file (cue sheet, log, lyrics, booklet,
/// image) served unchanged beside the tracks it sits next to; no format plugin reads it.
pub const SIDECAR_PLUGIN: &str = "sidecar";

impl FileRow {
    /// Whether this row is a sidecar (see [`SIDECAR_PLUGIN`]).
    pub fn is_sidecar(&self) -> bool {
        self.plugin == SIDECAR_PLUGIN
    }
}

/// The directory part of an origin path (`""` at the origin's root).
pub fn parent_dir(path: &str) -> &str {
    path.rfind('/').map_or("", |i| &path[..i])
}

/// A file with the tag values a tree build needs.
#[derive(Debug, Clone)]
pub struct TreeFile {
    /// The file row.
    pub file: FileRow,
    /// `(key, value)` pairs, the user's overlay applied, in order.
    pub tags: Vec<(String, String)>,
    /// Whether the file serves at least one picture.
    pub has_picture: bool,
}

/// One stored tag row: `(source, key, native, value, is_binary)`.
pub type StoredTag = (i64, String, String, String, bool);

/// The catalog.
pub struct Catalog {
    pub(crate) conn: Connection,
    path: PathBuf,
    /// Where a running mount listens for changes (see [`crate::wake`]).
    wake: Option<PathBuf>,
}

/// The version stamp of a file as one string (size, mtime, ETag): what the chunk cache's
/// manifests are valid for.
pub fn stamp_string(size: u64, mtime_ns: Option<i64>, etag: Option<&str>) -> String {
    format!("{size}:{}:{}", mtime_ns.map_or_else(|| "-".to_owned(), |m| m.to_string()), etag.unwrap_or("-"))
}

/// A `(path, KnownFile)` from a row `id, path, size, mtime_ns, etag, plugin`.
fn known_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<(String, KnownFile)> {
    Ok((
        r.get(1)?,
        KnownFile {
            id: r.get(0)?,
            size: r.get::<_, i64>(2)? as u64,
            mtime_ns: r.get(3)?,
            etag: r.get(4)?,
            plugin: r.get(5)?,
            fingerprint: r.get(6)?,
        },
    ))
}

/// Whether a SQLite error says the database file is damaged.
pub fn is_corruption(e: &rusqlite::Error) -> bool {
    matches!(e, rusqlite::Error::SqliteFailure(f, _)
        if matches!(f.code, rusqlite::ErrorCode::DatabaseCorrupt | rusqlite::ErrorCode::NotADatabase))
}

impl CatalogError {
    /// Whether the catalog file is damaged (rebuild it: `musefs scan --rebuild-catalog`).
    pub fn is_corruption(&self) -> bool {
        match self {
            Self::Corrupt { .. } => true,
            Self::Sqlite { source, .. } => is_corruption(source),
            _ => false,
        }
    }
}

/// Opens a connection to the catalog at `path` set up as every catalog connection is:
/// WAL, `synchronous = NORMAL`, foreign keys on, a 10 s busy timeout (the chunk index's
/// connection is one too).
pub(crate) fn connect(path: &Path) -> Result<Connection> {
    let e = |source| CatalogError::Sqlite { path: path.to_owned(), source };
    let mut conn = Connection::open(path).map_err(e)?;
    conn.busy_timeout(std::time::Duration::from_secs(10)).map_err(e)?;
    // Every transaction here writes: it takes the write lock when it begins, waiting
    // for another writer (the busy timeout). Begun deferred, its first read would pin a
    // snapshot, and meeting another writer's commit before its first write SQLite
    // answers "database is locked" at once, without waiting.
    conn.set_transaction_behavior(rusqlite::TransactionBehavior::Immediate);
    // Switching a new database to WAL takes its lock without the busy wait: another
    // process creating it at the same moment makes it "database is locked"; try again.
    let mut tries = 0;
    loop {
        match conn.query_row("PRAGMA journal_mode=WAL", [], |_| Ok(())) {
            Ok(()) => break,
            Err(rusqlite::Error::SqliteFailure(f, _)) if f.code == rusqlite::ErrorCode::DatabaseBusy && tries < 500 => {
                tries += 1;
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            Err(err) => return Err(e(err)),
        }
    }
    conn.execute_batch("PRAGMA synchronous=NORMAL; PRAGMA foreign_keys=ON;").map_err(e)?;
    Ok(conn)
}

impl Catalog {
    /// Opens (creating if needed) the catalog at `path` and brings its schema up to date.
    ///
    /// # Errors
    /// [`CatalogError::TooNew`] for a catalog from a newer musefs; SQLite errors.
    pub fn open(path: &Path) -> Result<Self> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|source| CatalogError::StateDir { path: dir.to_owned(), source })?;
        }
        let conn = connect(path)?;
        let mut cat = Self { conn, path: path.to_owned(), wake: None };
        cat.setup()?;
        Ok(cat)
    }

    pub(crate) fn err(&self) -> impl Fn(rusqlite::Error) -> CatalogError + '_ {
        move |source| CatalogError::Sqlite { path: self.path.clone(), source }
    }

    fn setup(&mut self) -> Result<()> {
        let path = self.path.clone();
        let e = move |source| CatalogError::Sqlite { path: path.clone(), source };
        let version: i64 = self.conn.query_row("PRAGMA user_version", [], |r| r.get(0)).map_err(&e)?;
        if version > SCHEMA_VERSION {
            return Err(CatalogError::TooNew { path: self.path.clone(), found: version, known: SCHEMA_VERSION });
        }
        for v in version..SCHEMA_VERSION {
            let tx = self.conn.transaction().map_err(&e)?;
            // Another process may have migrated since the version was read (two
            // commands creating a new state dir at once): under the write lock, again.
            let now: i64 = tx.query_row("PRAGMA user_version", [], |r| r.get(0)).map_err(&e)?;
            if now > v {
                continue;
            }
            tx.execute_batch(MIGRATIONS[v as usize]).map_err(&e)?;
            tx.pragma_update(None, "user_version", v + 1).map_err(&e)?;
            tx.commit().map_err(&e)?;
        }
        Ok(())
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The schema version of the open database.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn schema_version(&self) -> Result<i64> {
        self.conn.query_row("PRAGMA user_version", [], |r| r.get(0)).map_err(self.err())
    }

    /// This catalog's identity: random, fixed when the catalog was created (or upgraded
    /// to schema 5). Files derived from the catalog (the tree snapshot) carry it, so a
    /// catalog deleted and rebuilt never matches what was derived from the old one.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn catalog_id(&self) -> Result<String> {
        self.conn.query_row("SELECT value FROM meta WHERE key = 'catalog_id'", [], |r| r.get(0)).map_err(self.err())
    }

    /// Records that a sync of `origin` started.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn sync_started(&self, origin: &str, at_ms: i64) -> Result<()> {
        self.conn
            .execute(
                "INSERT INTO origin_sync(origin, started_at, finished_at, ok, summary, error, failures)
                 VALUES (?1, ?2, NULL, 0, 'running', NULL, 0)
                 ON CONFLICT(origin) DO UPDATE SET started_at = excluded.started_at, finished_at = NULL",
                params![origin, at_ms],
            )
            .map_err(self.err())?;
        Ok(())
    }

    /// Records how a sync of `origin` ended (`error`: `None` if it succeeded).
    ///
    /// # Errors
    /// SQLite errors.
    pub fn sync_finished(&self, origin: &str, at_ms: i64, summary: &str, error: Option<&str>) -> Result<()> {
        self.conn
            .execute(
                "UPDATE origin_sync SET finished_at = ?2, ok = ?3, summary = ?4, error = ?5,
                 failures = CASE WHEN ?3 THEN 0 ELSE failures + 1 END WHERE origin = ?1",
                params![origin, at_ms, error.is_none(), summary, error],
            )
            .map_err(self.err())?;
        Ok(())
    }

    /// The last sync of every origin.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn sync_records(&self) -> Result<Vec<SyncRecord>> {
        let mut st = self
            .conn
            .prepare(
                "SELECT origin, started_at, finished_at, ok, summary, error, failures FROM origin_sync ORDER BY origin",
            )
            .map_err(self.err())?;
        let rows = st
            .query_map([], |r| {
                Ok(SyncRecord {
                    origin: r.get(0)?,
                    started_at: r.get(1)?,
                    finished_at: r.get(2)?,
                    ok: r.get(3)?,
                    summary: r.get(4)?,
                    error: r.get(5)?,
                    failures: r.get(6)?,
                })
            })
            .map_err(self.err())?;
        rows.collect::<std::result::Result<_, _>>().map_err(self.err())
    }

    /// Checkpoints the WAL into the database and truncates it (at orderly shutdown).
    ///
    /// # Errors
    /// SQLite errors.
    pub fn checkpoint(&self) -> Result<()> {
        self.conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(())).map_err(self.err())
    }

    /// `PRAGMA quick_check` within `budget`: `Ok(true)` when it found nothing wrong,
    /// `Ok(false)` when it ran out of time first (a very large catalog: not checked
    /// further), [`CatalogError::Corrupt`] naming the problems.
    ///
    /// # Errors
    /// [`CatalogError::Corrupt`]; other SQLite errors.
    pub fn quick_check(&self, budget: std::time::Duration) -> Result<bool> {
        // A watchdog interrupts the check when the budget runs out.
        let handle = self.conn.get_interrupt_handle();
        let (done, wait) = std::sync::mpsc::channel::<()>();
        let watchdog = std::thread::spawn(move || {
            if wait.recv_timeout(budget) == Err(std::sync::mpsc::RecvTimeoutError::Timeout) {
                handle.interrupt();
            }
        });
        let res: rusqlite::Result<Vec<String>> = (|| {
            let mut st = self.conn.prepare("PRAGMA quick_check")?;
            let rows = st.query_map([], |r| r.get(0))?;
            rows.collect()
        })();
        drop(done);
        let _ = watchdog.join();
        match res {
            Ok(msgs) if msgs == ["ok"] => Ok(true),
            Ok(msgs) => Err(CatalogError::Corrupt { path: self.path.clone(), problems: msgs.join("; ") }),
            Err(rusqlite::Error::SqliteFailure(e, _)) if e.code == rusqlite::ErrorCode::OperationInterrupted => {
                Ok(false)
            }
            Err(e) if is_corruption(&e) => {
                Err(CatalogError::Corrupt { path: self.path.clone(), problems: e.to_string() })
            }
            Err(e) => Err(self.err()(e)),
        }
    }

    /// `PRAGMA integrity_check`: `Ok(())` or the problems found.
    ///
    /// # Errors
    /// SQLite errors; [`CatalogError::Corrupt`] listing the problems.
    pub fn integrity_check(&self) -> Result<()> {
        let mut st = self.conn.prepare("PRAGMA integrity_check").map_err(self.err())?;
        let msgs: Vec<String> = st
            .query_map([], |r| r.get(0))
            .map_err(self.err())?
            .collect::<std::result::Result<_, _>>()
            .map_err(self.err())?;
        if msgs == ["ok"] {
            Ok(())
        } else {
            Err(CatalogError::Corrupt { path: self.path.clone(), problems: msgs.join("; ") })
        }
    }

    /// Tells a running mount that the change log grew (see [`crate::wake`]).
    pub(crate) fn woke(&self) {
        if let Some(p) = &self.wake {
            crate::wake::notify(p);
        }
    }

    /// Opens the catalog of `manifest` with its origins marked active (see
    /// [`set_active_origins`](Self::set_active_origins)).
    ///
    /// # Errors
    /// As for [`open`](Self::open).
    pub fn open_for(manifest: &crate::manifest::Manifest) -> Result<Self> {
        let mut c = Self::open(&manifest.catalog_path())?;
        c.wake = Some(manifest.state_dir.join(crate::wake::SOCKET));
        let names: Vec<&str> = manifest.origins.iter().map(|o| o.name.as_str()).collect();
        c.set_active_origins(&names)?;
        Ok(c)
    }

    /// Marks the origins named in `names` active and every other inactive: the files of
    /// an origin no longer in the manifest (removed or renamed there) leave the tree but
    /// keep their rows and edits (`musefs status` lists them). Every file of an origin
    /// that changes state goes into the change log, so running mounts and tree snapshots
    /// follow. Returns the origins that became inactive.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn set_active_origins(&mut self, names: &[&str]) -> Result<Vec<String>> {
        let path = self.path.clone();
        let e = move |source| CatalogError::Sqlite { path: path.clone(), source };
        let tx = self.conn.transaction().map_err(&e)?;
        let all: Vec<(i64, String, bool)> = {
            let mut st = tx.prepare("SELECT id, name, active FROM origins").map_err(&e)?;
            let rows = st.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?))).map_err(&e)?;
            rows.collect::<rusqlite::Result<_>>().map_err(&e)?
        };
        let mut retired = Vec::new();
        let mut changed = false;
        for (id, name, active) in all {
            let want = names.contains(&name.as_str());
            if want == active {
                continue;
            }
            tx.execute("UPDATE origins SET active = ?1 WHERE id = ?2", params![want, id]).map_err(&e)?;
            tx.execute(
                "INSERT INTO changes (file_id, at) SELECT id, ?1 FROM files WHERE origin_id = ?2",
                params![now_secs(), id],
            )
            .map_err(&e)?;
            if !want {
                retired.push(name);
            }
            changed = true;
        }
        tx.commit().map_err(&e)?;
        if changed {
            self.woke();
        }
        Ok(retired)
    }

    /// Origins in the catalog but not in the manifest, with their file counts and how
    /// many of those files carry edits.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn inactive_origins(&self) -> Result<Vec<(String, u64, u64)>> {
        let mut st = self
            .conn
            .prepare(
                "SELECT o.name, count(f.id),
                        count(DISTINCT CASE WHEN EXISTS (SELECT 1 FROM overrides v WHERE v.file_id = f.id)
                                              OR EXISTS (SELECT 1 FROM art_overrides a WHERE a.file_id = f.id)
                                            THEN f.id END)
                 FROM origins o LEFT JOIN files f ON f.origin_id = o.id WHERE NOT o.active GROUP BY o.id ORDER BY o.name",
            )
            .map_err(self.err())?;
        let rows = st
            .query_map([], |r| Ok((r.get(0)?, r.get::<_, i64>(1)? as u64, r.get::<_, i64>(2)? as u64)))
            .map_err(self.err())?;
        rows.collect::<std::result::Result<_, _>>().map_err(self.err())
    }

    /// Renames origin `from` (not in the manifest any more) to `to`, taking over its
    /// files, ids and edits; an empty catalog entry named `to` is dropped first.
    ///
    /// # Errors
    /// SQLite errors; [`CatalogError::InvalidEdit`] if `to` already has files.
    pub fn rename_origin(&mut self, from: &str, to: &str) -> Result<()> {
        let path = self.path.clone();
        let e = move |source| CatalogError::Sqlite { path: path.clone(), source };
        let tx = self.conn.transaction().map_err(&e)?;
        let taken: i64 = tx
            .query_row(
                "SELECT count(*) FROM files f JOIN origins o ON o.id = f.origin_id WHERE o.name = ?1",
                [to],
                |r| r.get(0),
            )
            .map_err(&e)?;
        if taken > 0 {
            return Err(CatalogError::InvalidEdit(format!("origin `{to}` already has {taken} file(s) in the catalog")));
        }
        tx.execute("DELETE FROM origins WHERE name = ?1", [to]).map_err(&e)?;
        tx.execute("UPDATE origins SET name = ?1, active = 1 WHERE name = ?2", params![to, from]).map_err(&e)?;
        tx.execute(
            "INSERT INTO changes (file_id, at) SELECT f.id, ?1 FROM files f JOIN origins o ON o.id = f.origin_id WHERE o.name = ?2",
            params![now_secs(), to],
        )
        .map_err(&e)?;
        tx.execute("UPDATE kept_edits SET origin = ?1 WHERE origin = ?2", params![to, from]).map_err(&e)?;
        tx.commit().map_err(&e)?;
        self.woke();
        Ok(())
    }

    /// `(path, size)` of the files of origin `name`.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn origin_sizes(&self, name: &str) -> Result<HashMap<String, u64>> {
        let mut st = self
            .conn
            .prepare("SELECT f.path, f.size FROM files f JOIN origins o ON o.id = f.origin_id WHERE o.name = ?1")
            .map_err(self.err())?;
        let rows = st.query_map([name], |r| Ok((r.get(0)?, r.get::<_, i64>(1)? as u64))).map_err(self.err())?;
        rows.collect::<std::result::Result<_, _>>().map_err(self.err())
    }

    /// The id of origin `name`, registering it if new.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn origin_id(&self, name: &str, kind: &str) -> Result<i64> {
        self.conn
            .execute(
                "INSERT INTO origins(name, kind) VALUES (?1, ?2) ON CONFLICT(name) DO UPDATE SET kind = excluded.kind",
                params![name, kind],
            )
            .map_err(self.err())?;
        self.conn.query_row("SELECT id FROM origins WHERE name = ?1", [name], |r| r.get(0)).map_err(self.err())
    }

    /// The files of an origin at or below `paths` (origin-relative) with their stamps.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn known_files_under(&self, origin_id: i64, paths: &[String]) -> Result<HashMap<String, KnownFile>> {
        // `path = p` or `p/` <= path < `p0` ('0' follows '/'): an index range per path.
        let mut st = self
            .conn
            .prepare_cached(
                "SELECT id, path, size, mtime_ns, etag, plugin, fingerprint FROM files
                 WHERE origin_id = ?1 AND (path = ?2 OR (path >= ?2 || '/' AND path < ?2 || '0'))",
            )
            .map_err(self.err())?;
        let mut out = HashMap::new();
        for p in paths {
            let rows = st.query_map(params![origin_id, p], known_row).map_err(self.err())?;
            for row in rows {
                let (path, k) = row.map_err(self.err())?;
                out.insert(path, k);
            }
        }
        Ok(out)
    }

    /// Every file of an origin, by path.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn known_files(&self, origin_id: i64) -> Result<HashMap<String, KnownFile>> {
        let mut st = self
            .conn
            .prepare("SELECT id, path, size, mtime_ns, etag, plugin, fingerprint FROM files WHERE origin_id = ?1")
            .map_err(self.err())?;
        let rows = st.query_map([origin_id], known_row).map_err(self.err())?;
        rows.collect::<std::result::Result<_, _>>().map_err(self.err())
    }

    /// Writes a batch of scanned files in one transaction (insert or update; the user's
    /// overlay is kept). Returns the file ids.
    ///
    /// # Errors
    /// SQLite errors; the whole batch is rolled back.
    pub fn write_batch(&mut self, origin_id: i64, batch: &[(String, Stat, String, TrackInfo)]) -> Result<Vec<i64>> {
        let batch: Vec<Scanned> = batch
            .iter()
            .map(|(path, stat, plugin, info)| Scanned {
                path: path.clone(),
                stat: stat.clone(),
                plugin: plugin.clone(),
                info: info.clone(),
                fingerprint: None,
                moved_from: None,
            })
            .collect();
        Ok(self.write_scanned(origin_id, &batch)?.ids)
    }

    /// Writes a batch of scanned files in one transaction: moved files take their new
    /// path (keeping id and edits); a new file that a removed file's kept edits wait for
    /// (same path, or same size and fingerprint) gets them back, in the same transaction.
    /// Moves are recorded in the edit journal, so a rebuild follows them.
    ///
    /// # Errors
    /// SQLite errors (the whole batch is rolled back); [`CatalogError::Journal`] if the
    /// batch committed but its moves could not be journaled.
    pub fn write_scanned(&mut self, origin_id: i64, batch: &[Scanned]) -> Result<Written> {
        let path = self.path.clone();
        let e = move |source| CatalogError::Sqlite { path: path.clone(), source };
        let tx = self.conn.transaction().map_err(&e)?;
        let origin: String =
            tx.query_row("SELECT name FROM origins WHERE id = ?1", [origin_id], |r| r.get(0)).map_err(&e)?;
        let mut out = Written::default();
        let mut moves = Vec::new();
        for f in batch {
            // A pure move (`mv` keeps size and mtime) serves the same bytes: its
            // generation, hence its inode, stays.
            let mut keep_gen = None;
            if let Some(old) = f.moved_from {
                let prev: Option<PrevRow> = tx
                    .query_row("SELECT path, size, mtime_ns, etag, gen FROM files WHERE id = ?1", [old], |r| {
                        Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
                    })
                    .optional()
                    .map_err(&e)?;
                if let Some((from, size, mtime, etag, gen)) = prev {
                    tx.execute(
                        "UPDATE files SET path = ?1, placed_ns = ?3 WHERE id = ?2",
                        params![f.path, old, crate::util::now_ns()],
                    )
                    .map_err(&e)?;
                    moves.push((origin.clone(), from, f.path.clone()));
                    let same = size == f.stat.size as i64
                        && mtime == f.stat.mtime_ns.into_option()
                        && etag == f.stat.etag.clone().into_option().map(|s| s.into_string());
                    if same {
                        keep_gen = Some(gen);
                    }
                }
            }
            let existed: Option<i64> = tx
                .prepare_cached("SELECT id FROM files WHERE origin_id = ?1 AND path = ?2")
                .and_then(|mut st| st.query_row(params![origin_id, f.path], |r| r.get(0)).optional())
                .map_err(&e)?;
            let id = write_one(&tx, origin_id, &f.path, &f.stat, &f.plugin, &f.info).map_err(&e)?;
            tx.prepare_cached("UPDATE files SET fingerprint = ?1, gen = coalesce(?3, gen) WHERE id = ?2")
                .and_then(|mut st| st.execute(params![f.fingerprint, id, keep_gen]))
                .map_err(&e)?;
            out.ids.push(id);
            if existed.is_some() {
                continue;
            }
            // A new file: do edits of a removed file wait for it?
            let kept: Option<(i64, String, String)> = tx
                .query_row(
                    "SELECT id, path, record FROM kept_edits
                     WHERE origin = ?1 AND (path = ?2 OR (fingerprint = ?3 AND size = ?4))
                     ORDER BY path = ?2 DESC, removed_at DESC LIMIT 1",
                    params![origin, f.path, f.fingerprint, f.stat.size as i64],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
                )
                .optional()
                .map_err(&e)?;
            let Some((kept_id, kept_path, record)) = kept else { continue };
            tx.execute("DELETE FROM kept_edits WHERE id = ?1", [kept_id]).map_err(&e)?;
            let Some((edits, art)) = journal::parse_state(&record) else {
                tracing::warn!("{origin}:{}: the kept edits of {kept_path} do not parse; dropped", f.path);
                continue;
            };
            overlay::apply_checked(&tx, &[(id, edits, &art)], false, &self.path)?;
            if kept_path != f.path {
                moves.push((origin.clone(), kept_path.clone(), f.path.clone()));
            }
            out.reattached.push((f.path.clone(), kept_path));
        }
        tx.commit().map_err(&e)?;
        self.woke();
        if !moves.is_empty() {
            let path = journal::journal_path(&self.path);
            journal::append(&path, &journal::moves_record(&moves))
                .map_err(|source| CatalogError::Journal { path, source })?;
        }
        Ok(out)
    }

    /// Removes files by id (their tags and picture links go with them) and pictures no
    /// file uses any more. The user's edits of a removed file are kept (`kept_edits`) and
    /// given back when a scan finds the file again (see [`write_scanned`](Self::write_scanned)).
    ///
    /// # Errors
    /// SQLite errors; nothing is removed then.
    pub fn remove_files(&mut self, ids: &[i64]) -> Result<()> {
        let path = self.path.clone();
        let e = move |source| CatalogError::Sqlite { path: path.clone(), source };
        let tx = self.conn.transaction().map_err(&e)?;
        {
            // A user's edits outlive the row: kept until the file comes back.
            for id in ids {
                if let Some((edits, art)) = overlay::overlay_state(&tx, *id).map_err(&e)? {
                    let (origin, rel, size, fp): (String, String, i64, Option<Vec<u8>>) = tx
                        .query_row(
                            "SELECT o.name, f.path, f.size, f.fingerprint FROM files f JOIN origins o ON o.id = f.origin_id
                             WHERE f.id = ?1",
                            [id],
                            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
                        )
                        .map_err(&e)?;
                    let record = journal::state_record(&origin, &rel, &edits, &art);
                    tx.execute(
                        "INSERT INTO kept_edits (origin, path, size, fingerprint, removed_at, record)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                        params![origin, rel, size, fp, crate::util::now_ms(), record],
                    )
                    .map_err(&e)?;
                }
            }
            let mut st = tx.prepare("DELETE FROM files WHERE id = ?1").map_err(&e)?;
            for id in ids {
                st.execute([id]).map_err(&e)?;
                log_change(&tx, *id).map_err(&e)?;
            }
        }
        tx.execute("DELETE FROM pictures WHERE id NOT IN (SELECT picture_id FROM file_pictures)", []).map_err(&e)?;
        tx.commit().map_err(&e)?;
        self.woke();
        Ok(())
    }

    /// One file by id.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn file(&self, id: i64) -> Result<Option<FileRow>> {
        // On every open: a cached statement.
        self.conn
            .prepare_cached(
                "SELECT f.id, o.name, f.path, f.size, f.mtime_ns, f.etag, f.plugin, f.extension, f.gen, f.audio_offset,
                        f.placed_ns, f.edited_ns
                 FROM files f JOIN origins o ON o.id = f.origin_id WHERE f.id = ?1",
            )
            .and_then(|mut st| st.query_row([id], file_row).optional())
            .map_err(self.err())
    }

    /// The files (all, or just `only`) that serve at least one picture, the overlay applied.
    fn files_with_pictures(&self, only: Option<i64>) -> Result<Vec<i64>> {
        const SERVED: &str = "fp.source = CASE WHEN EXISTS (SELECT 1 FROM art_overrides a WHERE a.file_id = fp.file_id)
                              THEN 1 ELSE 0 END";
        // Two statements, not `?1 IS NULL OR file_id = ?1`: with the OR, SQLite scans the
        // whole table even for one file, which made every changed file of a sync cost a
        // full scan of `file_pictures`.
        let (sql, arg) = match only {
            Some(id) => {
                (format!("SELECT DISTINCT fp.file_id FROM file_pictures fp WHERE fp.file_id = ?1 AND {SERVED}"), id)
            }
            None => (format!("SELECT DISTINCT fp.file_id FROM file_pictures fp WHERE ?1 = 0 AND {SERVED}"), 0),
        };
        let mut st = self.conn.prepare_cached(&sql).map_err(self.err())?;
        let rows = st.query_map([arg], |r| r.get(0)).map_err(self.err())?;
        rows.collect::<std::result::Result<_, _>>().map_err(self.err())
    }

    /// One file as the tree needs it (`None` if it is not in the catalog).
    ///
    /// # Errors
    /// SQLite errors.
    pub fn tree_file(&self, id: i64, keys: &[String]) -> Result<Option<TreeFile>> {
        let Some(file) = self.file(id)? else { return Ok(None) };
        let active: bool = self
            .conn
            .prepare_cached("SELECT o.active FROM files f JOIN origins o ON o.id = f.origin_id WHERE f.id = ?1")
            .and_then(|mut st| st.query_row([id], |r| r.get(0)))
            .map_err(self.err())?;
        if !active {
            return Ok(None);
        }
        let has_picture = !self.files_with_pictures(Some(id))?.is_empty();
        let mut tags = Vec::new();
        for t in self.effective_tags(id)? {
            if t.data.is_empty() && keys.iter().any(|k| k == t.key.as_str()) {
                tags.push((t.key.into_string(), t.value.into_string()));
            }
        }
        Ok(Some(TreeFile { file, tags, has_picture }))
    }

    /// Every file directly in directory `dir` of origin `origin` (tracks and sidecars),
    /// as the tree needs them: what places the sidecars of one folder. Empty when the
    /// folder has no sidecar (nothing to place: the common case, answered cheaply).
    ///
    /// # Errors
    /// SQLite errors.
    pub fn tree_files_in_dir(&self, origin: &str, dir: &str, keys: &[String]) -> Result<Vec<TreeFile>> {
        // `dir/` .. `dir0` ('0' follows '/'): the paths below `dir`, through the index.
        let (lo, hi) = if dir.is_empty() {
            (String::new(), "\u{10ffff}".to_owned())
        } else {
            (format!("{dir}/"), format!("{dir}0"))
        };
        let mut st = self
            .conn
            .prepare_cached(
                "SELECT f.id, f.path, f.plugin FROM files f JOIN origins o ON o.id = f.origin_id
                 WHERE o.name = ?1 AND f.path >= ?2 AND f.path < ?3 ORDER BY f.path",
            )
            .map_err(self.err())?;
        let rows: Vec<(i64, String, String)> = st
            .query_map(params![origin, lo, hi], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .map_err(self.err())?
            .collect::<std::result::Result<_, _>>()
            .map_err(self.err())?;
        let direct: Vec<&(i64, String, String)> = rows.iter().filter(|(_, p, _)| parent_dir(p) == dir).collect();
        if !direct.iter().any(|(_, _, plugin)| plugin == SIDECAR_PLUGIN) {
            return Ok(Vec::new());
        }
        let mut out = Vec::with_capacity(direct.len());
        for (id, _, _) in direct {
            if let Some(f) = self.tree_file(*id, keys)? {
                out.push(f);
            }
        }
        Ok(out)
    }

    /// Every file with the values of `keys` (the user's overlay replacing the file's own
    /// values key by key), ordered by origin name and path.
    ///
    /// The tags are read on a second (read-only) connection while this one reads the
    /// files: the two are the bulk of a first mount's time. They may see the catalog at
    /// two moments; a caller that needs one state reads the change-log position first and
    /// applies the changes after it (as the tree loader does): a file
    /// changed in between is in the log.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn tree_files(&self, keys: &[String]) -> Result<Vec<TreeFile>> {
        let path = &self.path;
        // Two halves of the id range, each on its own connection.
        let (lo, hi): (i64, i64) = self
            .conn
            .query_row("SELECT coalesce(min(id), 0), coalesce(max(id), 0) FROM files", [], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .map_err(self.err())?;
        let mid = lo + (hi - lo) / 2 + 1;
        std::thread::scope(|s| {
            let read = |from: i64, to: i64| {
                s.spawn(move || -> Result<Vec<FileTags>> {
                    let e = |source| CatalogError::Sqlite { path: path.clone(), source };
                    let conn = Connection::open_with_flags(
                        path,
                        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
                    )
                    .map_err(e)?;
                    conn.busy_timeout(std::time::Duration::from_secs(10)).map_err(e)?;
                    template_tags(&conn, keys, from, to).map_err(e)
                })
            };
            let readers = (!keys.is_empty()).then(|| [read(i64::MIN, mid), read(mid, i64::MAX)]);
            let mut files = self.tree_file_rows()?;
            let mut tags = Vec::new();
            for t in readers.into_iter().flatten() {
                tags.push(t.join().unwrap_or_else(|p| std::panic::resume_unwind(p))?);
            }
            if files.is_empty() {
                return Ok(files);
            }
            let index: crate::util::InoMap<usize> =
                files.iter().enumerate().map(|(i, f)| (f.file.id as u64, i)).collect();
            for id in self.files_with_pictures(None)? {
                if let Some(&i) = index.get(&(id as u64)) {
                    files[i].has_picture = true;
                }
            }
            for (id, t) in tags.into_iter().flatten() {
                if let Some(&i) = index.get(&(id as u64)) {
                    files[i].tags = t;
                }
            }
            Ok(files)
        })
    }

    /// Every active file's row, ordered by origin name and path (no tags yet).
    fn tree_file_rows(&self) -> Result<Vec<TreeFile>> {
        let mut st = self
            .conn
            .prepare(
                "SELECT f.id, o.name, f.path, f.size, f.mtime_ns, f.etag, f.plugin, f.extension, f.gen, f.audio_offset,
                        f.placed_ns, f.edited_ns
                 FROM files f JOIN origins o ON o.id = f.origin_id WHERE o.active ORDER BY o.name, f.path",
            )
            .map_err(self.err())?;
        let files = st
            .query_map([], |r| Ok(TreeFile { file: file_row(r)?, tags: Vec::new(), has_picture: false }))
            .map_err(self.err())?
            .collect::<std::result::Result<_, _>>()
            .map_err(self.err())?;
        Ok(files)
    }

    /// Counts of files, tags and pictures.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn counts(&self) -> Result<(u64, u64, u64)> {
        let q = |sql: &str| self.conn.query_row(sql, [], |r| r.get::<_, i64>(0)).map(|n| n as u64).map_err(self.err());
        Ok((q("SELECT count(*) FROM files")?, q("SELECT count(*) FROM tags")?, q("SELECT count(*) FROM pictures")?))
    }

    /// The tags of one file as stored.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn file_tags(&self, id: i64) -> Result<Vec<StoredTag>> {
        let mut st = self
            .conn
            .prepare(
                "SELECT source, key, native, value, data IS NOT NULL FROM tags WHERE file_id = ?1 ORDER BY source, seq",
            )
            .map_err(self.err())?;
        let rows =
            st.query_map([id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))).map_err(self.err())?;
        rows.collect::<std::result::Result<_, _>>().map_err(self.err())
    }
}

/// Replaces the pictures of `file_id` from `source` with `pics` (image bytes stored once
/// by their BLAKE3 hash), in the caller's transaction.
pub(crate) fn link_pictures(
    tx: &Transaction<'_>,
    file_id: i64,
    source: i64,
    pics: &[musefs_plugin_api::Picture],
) -> rusqlite::Result<()> {
    tx.prepare_cached("DELETE FROM file_pictures WHERE file_id = ?1 AND source = ?2")?
        .execute(params![file_id, source])?;
    for (seq, pic) in pics.iter().enumerate() {
        let hash = blake3::hash(pic.data.as_slice());
        tx.prepare_cached(
            "INSERT INTO pictures (hash, mime, width, height, depth, colors, data) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
             ON CONFLICT (hash) DO NOTHING",
        )?
        .execute(params![
            hash.as_bytes().as_slice(),
            pic.mime.as_str(),
            pic.width,
            pic.height,
            pic.depth,
            pic.colors,
            pic.data.as_slice()
        ])?;
        let pid: i64 = tx
            .prepare_cached("SELECT id FROM pictures WHERE hash = ?1")?
            .query_row([hash.as_bytes().as_slice()], |r| r.get(0))?;
        tx.prepare_cached(
            "INSERT INTO file_pictures
                (file_id, source, seq, picture_id, picture_type, description, mime, width, height, depth, colors)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
        )?
        .execute(params![
            file_id,
            source,
            seq as i64,
            pid,
            pic.picture_type,
            pic.description.as_str(),
            pic.mime.as_str(),
            pic.width,
            pic.height,
            pic.depth,
            pic.colors
        ])?;
    }
    Ok(())
}

/// Appends `file_id` to the change log (in the caller's transaction).
/// A file's id and its tags (key, value).
type FileTags = (i64, Vec<(String, String)>);

/// The text values of `keys` of every file with an id in `from..to`, by file id
/// (ascending): the user's overlay
/// replacing the file's own values key by key (what [`Catalog::tree_files`] renders).
fn template_tags(conn: &Connection, keys: &[String], from: i64, to: i64) -> rusqlite::Result<Vec<FileTags>> {
    // Every `(file id, key)` the user's overlay controls (few: only edited files).
    let overridden: std::collections::HashSet<(i64, String)> = {
        let mut st = conn.prepare("SELECT file_id, key FROM overrides")?;
        let rows = st.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
        rows.collect::<rusqlite::Result<_>>()?
    };
    // The table in its primary-key order (file, source, seq), not through the key index
    // (which sorts every row: half the time at 100k files); the keys are picked here,
    // not by `key IN (...)`, which costs SQLite a search per row.
    let mut st = conn.prepare(
        "SELECT file_id, source, key, value FROM tags
         WHERE file_id >= ?1 AND file_id < ?2 AND data IS NULL ORDER BY file_id, source, seq",
    )?;
    let mut rows = st.query(params![from, to])?;
    let mut out: Vec<FileTags> = Vec::new();
    // Per file, the file's rows come first, then the user's: once a key has user
    // values the file's values for it are dropped; so are those of a key the user
    // removed (listed in `overrides` with no user rows).
    let mut current = -1i64;
    let (mut own, mut user) = (Vec::<(String, String)>::new(), Vec::<(String, String)>::new());
    let mut flush = |id: i64, own: &mut Vec<(String, String)>, user: &mut Vec<(String, String)>| {
        if id < 0 {
            return;
        }
        let mut tags = Vec::with_capacity(own.len() + user.len());
        for (k, v) in own.drain(..) {
            let replaced = user.iter().any(|(uk, _)| *uk == k);
            if !replaced && (overridden.is_empty() || !overridden.contains(&(id, k.clone()))) {
                tags.push((k, v));
            }
        }
        tags.append(user);
        out.push((id, tags));
    };
    while let Some(r) = rows.next()? {
        let Some(key) = r.get_ref(2)?.as_str().ok().and_then(|k| keys.iter().find(|w| *w == k)) else { continue };
        let key = key.clone();
        let id: i64 = r.get(0)?;
        let source: i64 = r.get(1)?;
        let value: String = r.get(3)?;
        if id != current {
            flush(current, &mut own, &mut user);
            current = id;
        }
        if source == SOURCE_USER {
            user.push((key, value));
        } else {
            own.push((key, value));
        }
    }
    flush(current, &mut own, &mut user);
    Ok(out)
}

pub(crate) fn file_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<FileRow> {
    Ok(FileRow {
        id: r.get(0)?,
        origin: r.get(1)?,
        path: r.get(2)?,
        size: r.get::<_, i64>(3)? as u64,
        mtime_ns: r.get(4)?,
        etag: r.get(5)?,
        plugin: r.get(6)?,
        extension: r.get(7)?,
        gen: r.get(8)?,
        audio_offset: r.get::<_, i64>(9)? as u64,
        placed_ns: r.get(10)?,
        edited_ns: r.get(11)?,
    })
}

fn write_one(
    tx: &Transaction<'_>,
    origin_id: i64,
    rel: &str,
    stat: &Stat,
    plugin: &str,
    info: &TrackInfo,
) -> rusqlite::Result<i64> {
    let regions: Vec<serde_json::Value> = info
        .regions
        .iter()
        .map(|r| serde_json::json!({ "kind": r.kind.as_str(), "offset": r.offset, "len": r.len }))
        .collect();
    let extra: serde_json::Map<String, serde_json::Value> =
        info.extra.iter().map(|kv| (kv.key.to_string(), kv.value.as_str().into())).collect();
    let p = &info.props;
    // Cached statements: this runs once per scanned file.
    let id: i64 = tx.prepare_cached(
        "INSERT INTO files (origin_id, path, size, mtime_ns, etag, plugin, format, extension, audio_offset, audio_len,
                            codec, duration_ms, sample_rate, channels, bits_per_sample, bitrate, regions, extra, scanned_at,
                            placed_ns)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20)
         ON CONFLICT (origin_id, path) DO UPDATE SET
            size = excluded.size, mtime_ns = excluded.mtime_ns, etag = excluded.etag, plugin = excluded.plugin,
            format = excluded.format, extension = excluded.extension, audio_offset = excluded.audio_offset,
            audio_len = excluded.audio_len, codec = excluded.codec, duration_ms = excluded.duration_ms,
            sample_rate = excluded.sample_rate, channels = excluded.channels,
            bits_per_sample = excluded.bits_per_sample, bitrate = excluded.bitrate, regions = excluded.regions,
            extra = excluded.extra, scanned_at = excluded.scanned_at, gen = files.gen + 1,
            placed_ns = excluded.placed_ns
         RETURNING id",
    )?.query_row(
        params![
            origin_id,
            rel,
            stat.size as i64,
            stat.mtime_ns.into_option(),
            stat.etag.clone().into_option().map(|s| s.into_string()),
            plugin,
            info.format.as_str(),
            info.extension.as_str(),
            info.audio_offset as i64,
            info.audio_len as i64,
            p.codec.as_str(),
            p.duration_ms as i64,
            p.sample_rate,
            p.channels,
            p.bits_per_sample,
            p.bitrate,
            serde_json::Value::Array(regions).to_string(),
            serde_json::Value::Object(extra).to_string(),
            now_secs(),
            crate::util::now_ns(),
        ],
        |r| r.get(0),
    )?;
    log_change(tx, id)?;
    // Cached chunks of another version of this file are stale (evicted first).
    let stamp =
        stamp_string(stat.size, stat.mtime_ns.into_option(), stat.etag.as_ref().map(|e| e.as_str()).into_option());
    tx.prepare_cached("DELETE FROM cache_manifest WHERE file_id = ?1 AND stamp != ?2")?.execute(params![id, stamp])?;
    tx.prepare_cached("DELETE FROM tags WHERE file_id = ?1 AND source = ?2")?.execute(params![id, SOURCE_FILE])?;
    {
        let mut st = tx.prepare_cached(
            "INSERT INTO tags (file_id, source, seq, key, native, value, data) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        )?;
        for (seq, t) in info.tags.iter().enumerate() {
            let data: Option<&[u8]> = if t.data.is_empty() { None } else { Some(t.data.as_slice()) };
            st.execute(params![
                id,
                SOURCE_FILE,
                seq as i64,
                t.key.as_str(),
                t.native.as_str(),
                t.value.as_str(),
                data
            ])?;
        }
    }
    link_pictures(tx, id, SOURCE_FILE, &info.pictures)?;
    Ok(id)
}

#[cfg(test)]
mod tests {
    use musefs_plugin_api::{AudioProps, EntryKind, Picture, Tag};

    use super::*;

    fn info(title: &str, cover: &[u8]) -> TrackInfo {
        TrackInfo {
            format: "flac".into(),
            extension: "flac".into(),
            tags: vec![
                Tag::text("title", "TITLE", title),
                Tag::text("artist", "ARTIST", "A"),
                Tag::text("artist", "ARTIST", "B"),
            ]
            .into(),
            pictures: vec![Picture {
                picture_type: 3,
                mime: "image/png".into(),
                description: "".into(),
                width: 1,
                height: 1,
                depth: 24,
                colors: 0,
                data: cover.to_vec().into(),
            }]
            .into(),
            props: AudioProps {
                codec: "flac".into(),
                duration_ms: 1000,
                sample_rate: 44100,
                channels: 2,
                bits_per_sample: 16,
                bitrate: 1,
            },
            audio_offset: 10,
            audio_len: 100,
            regions: Vec::new().into(),
            extra: Vec::new().into(),
        }
    }

    fn stat(size: u64) -> Stat {
        Stat { kind: EntryKind::FILE, size, mtime_ns: Some(5).into(), etag: None.into() }
    }

    #[test]
    fn upsert_keeps_ids_dedups_pictures_and_overlay_wins() {
        let d = tempfile::tempdir().unwrap();
        let mut c = Catalog::open(&d.path().join("c.db")).unwrap();
        let o = c.origin_id("main", "local").unwrap();
        let ids = c
            .write_batch(
                o,
                &[
                    ("a.flac".into(), stat(110), "flac".into(), info("One", b"img")),
                    ("b.flac".into(), stat(110), "flac".into(), info("Two", b"img")),
                ],
            )
            .unwrap();
        assert_eq!(c.counts().unwrap(), (2, 6, 1), "one picture row for two files");
        let again = c.write_batch(o, &[("a.flac".into(), stat(111), "flac".into(), info("Uno", b"img2"))]).unwrap();
        assert_eq!(again[0], ids[0], "an update keeps the file id");
        c.conn.execute("INSERT INTO tags VALUES (?1, 1, 0, 'title', 'TITLE', 'Edited', NULL)", [ids[1]]).unwrap();
        let files = c.tree_files(&["title".into(), "artist".into()]).unwrap();
        let titles: Vec<Vec<_>> = files
            .iter()
            .map(|f| f.tags.iter().filter(|(k, _)| k == "title").map(|(_, v)| v.clone()).collect())
            .collect();
        assert_eq!(titles, vec![vec!["Uno".to_owned()], vec!["Edited".to_owned()]]);
        assert_eq!(files[0].tags.iter().filter(|(k, _)| k == "artist").count(), 2);
        c.remove_files(&[ids[0]]).unwrap();
        assert_eq!(c.counts().unwrap(), (1, 4, 1), "the unused picture is gone");
    }

    /// Regression: one image in a Vorbis picture (depth 32), a FLAC PICTURE block (depth
    /// 24) and an MP3 APIC (no dimensions) was served with the fields of whichever file a
    /// scan met first. Each file's block keeps its own fields, in any scan order.
    #[test]
    fn picture_fields_belong_to_each_files_block_not_to_the_image() {
        let block = |depth, width, mime: &str, description: &str| {
            let mut i = info("T", b"same image bytes");
            let p = &mut i.pictures.as_mut_slice()[0];
            (p.depth, p.width, p.height, p.mime, p.description) =
                (depth, width, width, mime.into(), description.into());
            i
        };
        let variants =
            [block(32, 2, "image/png", "vorbis"), block(24, 2, "image/png", "flac"), block(0, 0, "image/x-png", "")];
        for order in [[0, 1, 2], [2, 1, 0], [1, 2, 0]] {
            let d = tempfile::tempdir().unwrap();
            let mut c = Catalog::open(&d.path().join("c.db")).unwrap();
            let o = c.origin_id("main", "local").unwrap();
            let batch: Vec<_> =
                order.iter().map(|&k| (format!("{k}.x"), stat(110), "flac".to_owned(), variants[k].clone())).collect();
            let ids = c.write_batch(o, &batch).unwrap();
            assert_eq!(c.counts().unwrap().2, 1, "the image is stored once");
            for (id, &k) in ids.iter().zip(&order) {
                let got = c.effective_pictures(*id).unwrap();
                assert_eq!(got[0], variants[k].pictures[0], "order {order:?}, file {k}");
            }
        }
    }

    #[test]
    fn every_earlier_schema_version_migrates_to_the_current_one() {
        for from in 0..SCHEMA_VERSION {
            let t = tempfile::tempdir().unwrap();
            let path = t.path().join("catalog.db");
            {
                // A catalog as version `from` of musefs left it, with data in it.
                let conn = Connection::open(&path).unwrap();
                conn.execute_batch("PRAGMA journal_mode=WAL;").unwrap();
                for m in &MIGRATIONS[..from as usize] {
                    conn.execute_batch(m).unwrap();
                }
                conn.pragma_update(None, "user_version", from).unwrap();
                if from >= 1 {
                    conn.execute("INSERT INTO origins(name, kind) VALUES ('music', 'local')", []).unwrap();
                }
            }
            let cat = Catalog::open(&path).unwrap_or_else(|e| panic!("from version {from}: {e}"));
            assert_eq!(cat.schema_version().unwrap(), SCHEMA_VERSION, "from version {from}");
            cat.integrity_check().unwrap();
            if from >= 1 {
                assert_eq!(cat.origin_id("music", "local").unwrap(), 1, "data kept from version {from}");
            }
            // Every table of the current schema is usable.
            cat.sync_started("music", 1).unwrap();
            cat.sync_finished("music", 2, "added 0", None).unwrap();
            assert_eq!(cat.sync_records().unwrap().len(), 1);
            cat.counts().unwrap();
            assert_eq!(cat.catalog_id().unwrap().len(), 32, "from version {from}");
        }
    }

    /// Regression: two processes creating one new catalog at once both ran the first
    /// migration ("table origins already exists"): the version read before the write
    /// lock was stale for the second.
    #[test]
    fn commands_creating_one_catalog_at_once_all_open_it_regression() {
        for _ in 0..10 {
            let d = tempfile::tempdir().unwrap();
            let path = d.path().join("c.db");
            let start = std::sync::Arc::new(std::sync::Barrier::new(4));
            let opens: Vec<_> = (0..4)
                .map(|_| {
                    let (path, start) = (path.clone(), start.clone());
                    std::thread::spawn(move || {
                        start.wait();
                        Catalog::open(&path).map(|_| ()).map_err(|e| e.to_string())
                    })
                })
                .collect();
            for o in opens {
                assert_eq!(o.join().unwrap(), Ok(()));
            }
            assert_eq!(Catalog::open(&path).unwrap().schema_version().unwrap(), SCHEMA_VERSION);
        }
    }

    #[test]
    fn a_newer_catalog_is_refused_and_left_alone() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("c.db");
        drop(Catalog::open(&p).unwrap());
        let conn = Connection::open(&p).unwrap();
        conn.pragma_update(None, "user_version", SCHEMA_VERSION + 1).unwrap();
        drop(conn);
        let e = Catalog::open(&p).err().unwrap();
        assert!(matches!(e, CatalogError::TooNew { .. }), "{e}");
        assert!(e.to_string().contains("newer musefs"));
        let conn = Connection::open(&p).unwrap();
        let v: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0)).unwrap();
        assert_eq!(v, SCHEMA_VERSION + 1);
    }
}

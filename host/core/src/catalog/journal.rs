//! The edit journal: an append-only file beside the catalog (`edits.journal`), one line
//! per committed batch of user edits, written and fsync'd right after the batch commits
//! (so a crash between the two loses the record, never applies an edit twice).
//! A catalog lost or damaged beyond repair is rebuilt by a rescan of the origins, and
//! the journal, replayed in order, restores every edit the user made.
//!
//! Records name files by origin and path (ids do not survive a rebuild). Each line is a
//! JSON object `{"v": 1, "at": MS, "blobs": [images], "files": [{"origin", "path",
//! "edits": [...], "art": [...]}]}`; a line that does not parse (a torn last write) is
//! skipped and reported.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use musefs_plugin_api::Picture;
use rusqlite::{OptionalExtension, Transaction};
use serde::{Deserialize, Serialize};

use super::overlay::{ArtEdit, Edit};
use super::{Catalog, CatalogError, Result};

/// The journal of the catalog at `catalog`.
pub fn journal_path(catalog: &Path) -> PathBuf {
    catalog.with_file_name("edits.journal")
}

#[derive(Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "lowercase")]
enum JEdit {
    Set { key: String, values: Vec<String> },
    Add { key: String, values: Vec<String> },
    Remove { key: String, value: Option<String> },
    Reset { key: Option<String> },
}

#[derive(Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "lowercase")]
enum JArt {
    Set {
        picture_type: u32,
        mime: String,
        description: String,
        width: u32,
        height: u32,
        depth: u32,
        colors: u32,
        /// Index of the image bytes in the record's `blobs` (an album's art set is
        /// stored once, not once per file).
        blob: usize,
        /// Appended after the pictures there are (`ArtEdit::Append`), not replacing
        /// those of its type.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        append: bool,
    },
    Remove {
        picture_type: Option<u32>,
    },
}

#[derive(Serialize, Deserialize)]
struct JFile {
    origin: String,
    path: String,
    edits: Vec<JEdit>,
    art: Vec<JArt>,
}

/// A file that moved inside its origin (its id and edits went with it): replaying
/// follows it, so the edits recorded under the old path reach the file at the new one.
#[derive(Serialize, Deserialize)]
struct JMove {
    origin: String,
    from: String,
    to: String,
}

#[derive(Serialize, Deserialize)]
struct Record {
    v: u32,
    at: i64,
    blobs: Vec<Vec<u8>>,
    files: Vec<JFile>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    moves: Vec<JMove>,
}

fn to_j(e: &Edit) -> JEdit {
    match e.clone() {
        Edit::Set { key, values } => JEdit::Set { key, values },
        Edit::Add { key, values } => JEdit::Add { key, values },
        Edit::Remove { key, value } => JEdit::Remove { key, value },
        Edit::Reset { key } => JEdit::Reset { key },
    }
}

fn from_j(e: JEdit) -> Edit {
    match e {
        JEdit::Set { key, values } => Edit::Set { key, values },
        JEdit::Add { key, values } => Edit::Add { key, values },
        JEdit::Remove { key, value } => Edit::Remove { key, value },
        JEdit::Reset { key } => Edit::Reset { key },
    }
}

fn art_to_j(a: &ArtEdit, blobs: &mut Vec<Vec<u8>>) -> JArt {
    match a {
        ArtEdit::Set(p) | ArtEdit::Append(p) => JArt::Set {
            append: matches!(a, ArtEdit::Append(_)),
            picture_type: p.picture_type,
            mime: p.mime.to_string(),
            description: p.description.to_string(),
            width: p.width,
            height: p.height,
            depth: p.depth,
            colors: p.colors,
            blob: match blobs.iter().position(|b| b.as_slice() == p.data.as_slice()) {
                Some(i) => i,
                None => {
                    blobs.push(p.data.to_vec());
                    blobs.len() - 1
                }
            },
        },
        ArtEdit::Remove(t) => JArt::Remove { picture_type: *t },
    }
}

fn art_from_j(a: JArt, blobs: &[Vec<u8>]) -> Option<ArtEdit> {
    Some(match a {
        JArt::Set { picture_type, mime, description, width, height, depth, colors, blob, append } => {
            let p = Picture {
                picture_type,
                mime: mime.into(),
                description: description.into(),
                width,
                height,
                depth,
                colors,
                data: blobs.get(blob)?.clone().into(),
            };
            if append {
                ArtEdit::Append(p)
            } else {
                ArtEdit::Set(p)
            }
        }
        JArt::Remove { picture_type } => ArtEdit::Remove(picture_type),
    })
}

/// Builds the record of a batch inside its transaction (the files' origin and path).
pub(crate) fn record(tx: &Transaction<'_>, batch: &[(i64, Vec<Edit>, &Vec<ArtEdit>)]) -> rusqlite::Result<String> {
    let mut files = Vec::with_capacity(batch.len());
    let mut blobs = Vec::new();
    for (id, edits, art) in batch {
        let (origin, path): (String, String) = tx.query_row(
            "SELECT o.name, f.path FROM files f JOIN origins o ON o.id = f.origin_id WHERE f.id = ?1",
            [id],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        let art = art.iter().map(|a| art_to_j(a, &mut blobs)).collect();
        files.push(JFile { origin, path, edits: edits.iter().map(to_j).collect(), art });
    }
    let rec = Record { v: 1, at: crate::util::now_ms(), blobs, files, moves: Vec::new() };
    Ok(serde_json::to_string(&rec).expect("a journal record serialises"))
}

/// The record of files that moved: `(origin, from, to)`.
pub(crate) fn moves_record(moves: &[(String, String, String)]) -> String {
    let moves =
        moves.iter().map(|(origin, from, to)| JMove { origin: origin.clone(), from: from.clone(), to: to.clone() });
    let rec = Record { v: 1, at: crate::util::now_ms(), blobs: Vec::new(), files: Vec::new(), moves: moves.collect() };
    serde_json::to_string(&rec).expect("a journal record serialises")
}

/// A file's whole overlay as edits that recreate it (kept while the file is gone, see
/// `kept_edits`), in the journal's record format.
pub(crate) fn state_record(origin: &str, path: &str, edits: &[Edit], art: &[ArtEdit]) -> String {
    let mut blobs = Vec::new();
    let art = art.iter().map(|a| art_to_j(a, &mut blobs)).collect();
    let files =
        vec![JFile { origin: origin.to_owned(), path: path.to_owned(), edits: edits.iter().map(to_j).collect(), art }];
    let rec = Record { v: 1, at: crate::util::now_ms(), blobs, files, moves: Vec::new() };
    serde_json::to_string(&rec).expect("a journal record serialises")
}

/// The edits of a [`state_record`] (`None` if it does not parse).
pub(crate) fn parse_state(record: &str) -> Option<(Vec<Edit>, Vec<ArtEdit>)> {
    let rec: Record = serde_json::from_str(record).ok()?;
    let f = rec.files.into_iter().next()?;
    let art = f.art.into_iter().filter_map(|a| art_from_j(a, &rec.blobs)).collect();
    Some((f.edits.into_iter().map(from_j).collect(), art))
}

/// Appends one record line and syncs it to disk.
pub(crate) fn append(journal: &Path, line: &str) -> std::io::Result<()> {
    let mut f = OpenOptions::new().create(true).append(true).open(journal)?;
    let mut buf = Vec::with_capacity(line.len() + 1);
    buf.extend_from_slice(line.as_bytes());
    buf.push(b'\n');
    f.write_all(&buf)?;
    f.sync_data()
}

/// What replaying a journal did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Replayed {
    /// Records applied.
    pub records: u64,
    /// File edits applied.
    pub files: u64,
    /// File edits whose file is not in the catalog (gone from its origin), skipped.
    pub missing: u64,
    /// Lines that did not parse (a torn write), skipped.
    pub unreadable: u64,
}

impl Catalog {
    /// Replays the edit journal `journal` into this catalog (after a rebuild), in order,
    /// without journaling it again. A missing journal replays nothing.
    ///
    /// # Errors
    /// Reading the journal; catalog errors.
    pub fn replay_journal(&mut self, journal: &Path) -> Result<Replayed> {
        let mut out = Replayed::default();
        let open = || match File::open(journal) {
            Ok(f) => Ok(Some(f)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(CatalogError::StateDir { path: journal.to_owned(), source }),
        };
        let read_err = |source| CatalogError::StateDir { path: journal.to_owned(), source };
        let Some(file) = open()? else { return Ok(out) };
        // First pass: the moves, by line. Edits recorded under a path belong to the file
        // that later moves away from it: where it lies after every later move.
        let mut moves: Vec<(usize, JMove)> = Vec::new();
        for (n, line) in BufReader::new(file).lines().enumerate() {
            let line = line.map_err(read_err)?;
            if line.contains("\"moves\"") {
                if let Ok(rec) = serde_json::from_str::<Record>(&line) {
                    moves.extend(rec.moves.into_iter().map(|m| (n, m)));
                }
            }
        }
        let Some(file) = open()? else { return Ok(out) };
        for (n, line) in BufReader::new(file).lines().enumerate() {
            let line = line.map_err(read_err)?;
            if line.trim().is_empty() {
                continue;
            }
            let Ok(rec) = serde_json::from_str::<Record>(&line) else {
                out.unreadable += 1;
                continue;
            };
            let mut batch = Vec::new();
            for f in rec.files {
                let mut path = f.path.clone();
                for (_, m) in moves.iter().filter(|(at, _)| *at > n) {
                    if m.origin == f.origin && m.from == path {
                        path.clone_from(&m.to);
                    }
                }
                let id: Option<i64> = self
                    .conn
                    .query_row(
                        "SELECT f.id FROM files f JOIN origins o ON o.id = f.origin_id WHERE o.name = ?1 AND f.path = ?2",
                        [&f.origin, &path],
                        |r| r.get(0),
                    )
                    .optional()
                    .map_err(self.err())?;
                match id {
                    Some(id) => batch.push((
                        id,
                        f.edits.into_iter().map(from_j).collect::<Vec<_>>(),
                        f.art.into_iter().filter_map(|a| art_from_j(a, &rec.blobs)).collect::<Vec<_>>(),
                    )),
                    None => out.missing += 1,
                }
            }
            out.files += batch.len() as u64;
            self.apply_batch_unjournaled(&batch)?;
            out.records += 1;
        }
        Ok(out)
    }
}

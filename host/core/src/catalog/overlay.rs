//! The user's overlay: edits applied over a file's own tags and pictures.
//!
//! Tag edits work key by key (canonical keys, as templates use them). Once a key is
//! edited, its values come from the user's rows only, in the user's order, placed where
//! the file's first value of that key was (keeping the format's native name for it, so
//! `TXXX:MY FIELD` or `ALBUM ARTIST` stay as the file wrote them); a removed key is an
//! override with no values. Pictures are overridden as a whole list. `reset` drops the
//! override and the file's own values show again: they are never modified.

use std::collections::{HashMap, HashSet};

use musefs_plugin_api::{AudioProps, KeyValue, Picture, Region, Tag, TrackInfo};
use rusqlite::{params, OptionalExtension, Transaction};

use super::{link_pictures, log_change, Catalog, CatalogError, Result, SOURCE_FILE, SOURCE_USER};

/// Longest accepted key, in bytes.
pub const MAX_KEY: usize = 64;
/// Longest accepted value, in bytes.
pub const MAX_VALUE: usize = 1 << 20;

/// One tag edit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Edit {
    /// Replace every value of `key` with `values` (the user's order).
    Set {
        /// The key.
        key: String,
        /// Its new values.
        values: Vec<String>,
    },
    /// Append `values` to the current values of `key`.
    Add {
        /// The key.
        key: String,
        /// The values to append.
        values: Vec<String>,
    },
    /// Remove `key` entirely, or only the given value of it.
    Remove {
        /// The key.
        key: String,
        /// Only this value, if given.
        value: Option<String>,
    },
    /// Back to the file's own values: of `key`, or of every key and the pictures.
    Reset {
        /// The key, or everything.
        key: Option<String>,
    },
}

/// One picture edit.
#[derive(Debug, Clone, PartialEq)]
pub enum ArtEdit {
    /// Replace the pictures of `picture.picture_type` with `picture` (placed first for a front cover).
    Set(Picture),
    /// Remove the pictures of a type, or all.
    Remove(Option<u32>),
    /// Add `picture` after the pictures there are, whatever its type (an imported list
    /// of pictures is `Remove(None)` then one `Append` each, in order).
    Append(Picture),
}

/// Checks and normalises (lower-cases) a tag key.
///
/// # Errors
/// [`CatalogError::InvalidEdit`] naming what is wrong.
pub fn normalize_key(key: &str) -> Result<String> {
    let k = key.trim().to_ascii_lowercase();
    let bad = |why: &str| CatalogError::InvalidEdit(format!("invalid tag key `{key}`: {why}"));
    if k.is_empty() {
        return Err(bad("it is empty"));
    }
    if k.len() > MAX_KEY {
        return Err(bad(&format!("longer than {MAX_KEY} bytes")));
    }
    if let Some(c) = k.chars().find(|c| !(' '..='}').contains(c) || *c == '=' || *c == ':') {
        return Err(bad(&format!(
            "character {c:?} is not allowed (keys are printable ASCII without `=` or `:`, e.g. `title`, `albumartist`, `replaygain_track_gain`)"
        )));
    }
    Ok(k)
}

/// Checks a tag value.
///
/// # Errors
/// [`CatalogError::InvalidEdit`] naming the key and what is wrong.
pub fn check_value(key: &str, value: &str) -> Result<()> {
    if value.len() > MAX_VALUE {
        return Err(CatalogError::InvalidEdit(format!("value of `{key}` is longer than {MAX_VALUE} bytes")));
    }
    if value.contains('\0') {
        return Err(CatalogError::InvalidEdit(format!("value of `{key}` contains a NUL character")));
    }
    Ok(())
}

fn normalize_edit(e: &Edit) -> Result<Edit> {
    Ok(match e {
        Edit::Set { key, values } | Edit::Add { key, values } => {
            let k = normalize_key(key)?;
            for v in values {
                check_value(&k, v)?;
            }
            if matches!(e, Edit::Set { .. }) {
                Edit::Set { key: k, values: values.clone() }
            } else {
                Edit::Add { key: k, values: values.clone() }
            }
        }
        Edit::Remove { key, value } => Edit::Remove { key: normalize_key(key)?, value: value.clone() },
        Edit::Reset { key } => Edit::Reset { key: key.as_deref().map(normalize_key).transpose()? },
    })
}

struct Row {
    key: String,
    native: String,
    value: String,
    data: Option<Vec<u8>>,
}

impl Row {
    fn tag(&self) -> Tag {
        Tag {
            key: self.key.as_str().into(),
            native: self.native.as_str().into(),
            value: self.value.as_str().into(),
            data: self.data.clone().unwrap_or_default().into(),
        }
    }
}

fn rows(tx: &rusqlite::Connection, file_id: i64, source: i64) -> rusqlite::Result<Vec<Row>> {
    let mut st =
        tx.prepare_cached("SELECT key, native, value, data FROM tags WHERE file_id = ?1 AND source = ?2 ORDER BY seq")?;
    let it = st.query_map(params![file_id, source], |r| {
        Ok(Row { key: r.get(0)?, native: r.get(1)?, value: r.get(2)?, data: r.get(3)? })
    })?;
    it.collect()
}

fn overrides(conn: &rusqlite::Connection, file_id: i64) -> rusqlite::Result<HashSet<String>> {
    let mut st = conn.prepare_cached("SELECT key FROM overrides WHERE file_id = ?1")?;
    let it = st.query_map([file_id], |r| r.get(0))?;
    it.collect()
}

fn effective(conn: &rusqlite::Connection, file_id: i64) -> rusqlite::Result<Vec<Tag>> {
    let own = rows(conn, file_id, SOURCE_FILE)?;
    let over = overrides(conn, file_id)?;
    if over.is_empty() {
        return Ok(own.iter().map(Row::tag).collect());
    }
    let user = rows(conn, file_id, SOURCE_USER)?;
    let mut out = Vec::with_capacity(own.len() + user.len());
    let mut placed: HashSet<&str> = HashSet::new();
    for r in &own {
        if !over.contains(&r.key) {
            out.push(r.tag());
            continue;
        }
        if placed.insert(r.key.as_str()) {
            for u in user.iter().filter(|u| u.key == r.key) {
                let mut t = u.tag();
                if t.native.is_empty() && r.data.is_none() {
                    t.native = r.native.as_str().into();
                }
                out.push(t);
            }
        }
    }
    for u in &user {
        if !placed.contains(u.key.as_str()) && over.contains(&u.key) {
            out.push(u.tag());
        }
    }
    Ok(out)
}

fn pictures(conn: &rusqlite::Connection, file_id: i64, source: i64) -> rusqlite::Result<Vec<Picture>> {
    Ok(picture_rows(conn, file_id, source, true)?.into_iter().map(|r| r.picture).collect())
}

/// A file's pictures of `source`, in order, with their bytes' hash, and their bytes when
/// `data` (else `data` is empty and SQLite does not read the blob).
fn picture_rows(
    conn: &rusqlite::Connection,
    file_id: i64,
    source: i64,
    data: bool,
) -> rusqlite::Result<Vec<PictureRef>> {
    let mut st = conn.prepare_cached(
        "SELECT fp.picture_type, coalesce(fp.mime, p.mime), fp.description, coalesce(fp.width, p.width),
                coalesce(fp.height, p.height), coalesce(fp.depth, p.depth), coalesce(fp.colors, p.colors),
                CASE WHEN ?3 THEN p.data ELSE x'' END, p.hash
         FROM file_pictures fp JOIN pictures p ON p.id = fp.picture_id
         WHERE fp.file_id = ?1 AND fp.source = ?2 ORDER BY fp.seq",
    )?;
    let it = st.query_map(params![file_id, source, data], |r| {
        Ok(PictureRef {
            picture: Picture {
                picture_type: r.get(0)?,
                mime: r.get::<_, String>(1)?.into(),
                description: r.get::<_, String>(2)?.into(),
                width: r.get(3)?,
                height: r.get(4)?,
                depth: r.get(5)?,
                colors: r.get(6)?,
                data: r.get::<_, Vec<u8>>(7)?.into(),
            },
            hash: r.get(8)?,
        })
    })?;
    it.collect()
}

fn art_overridden(conn: &rusqlite::Connection, file_id: i64) -> rusqlite::Result<bool> {
    conn.prepare_cached("SELECT 1 FROM art_overrides WHERE file_id = ?1")?
        .query_row([file_id], |_| Ok(()))
        .optional()
        .map(|o| o.is_some())
}

fn effective_pictures(conn: &rusqlite::Connection, file_id: i64) -> rusqlite::Result<Vec<Picture>> {
    let source = if art_overridden(conn, file_id)? { SOURCE_USER } else { SOURCE_FILE };
    pictures(conn, file_id, source)
}

/// A picture a file serves, with the BLAKE3 hash of its bytes (the catalog keeps each
/// distinct picture once, under that hash).
#[derive(Debug, Clone)]
pub struct PictureRef {
    /// BLAKE3 of the picture's bytes.
    pub hash: [u8; 32],
    /// The picture; `data` is empty when it was listed without its bytes.
    pub picture: Picture,
}

/// Stores `pics` as the user's picture list of a file (deduplicated by hash).
fn write_user_pictures(tx: &Transaction<'_>, file_id: i64, pics: &[Picture]) -> rusqlite::Result<()> {
    tx.execute("INSERT OR IGNORE INTO art_overrides (file_id) VALUES (?1)", [file_id])?;
    link_pictures(tx, file_id, SOURCE_USER, pics)
}

/// Replaces the user's values of `key` (making it overridden).
fn write_key(tx: &Transaction<'_>, file_id: i64, key: &str, values: &[String]) -> rusqlite::Result<()> {
    tx.execute("DELETE FROM tags WHERE file_id = ?1 AND source = ?2 AND key = ?3", params![file_id, SOURCE_USER, key])?;
    tx.execute("INSERT OR IGNORE INTO overrides (file_id, key) VALUES (?1, ?2)", params![file_id, key])?;
    let next: i64 = tx.query_row(
        "SELECT coalesce(max(seq), -1) + 1 FROM tags WHERE file_id = ?1 AND source = ?2",
        params![file_id, SOURCE_USER],
        |r| r.get(0),
    )?;
    for (i, v) in values.iter().enumerate() {
        tx.execute(
            "INSERT INTO tags (file_id, source, seq, key, native, value, data) VALUES (?1, ?2, ?3, ?4, '', ?5, NULL)",
            params![file_id, SOURCE_USER, next + i as i64, key, v],
        )?;
    }
    Ok(())
}

fn reset(tx: &Transaction<'_>, file_id: i64, key: Option<&str>) -> rusqlite::Result<()> {
    match key {
        Some(k) => {
            tx.execute(
                "DELETE FROM tags WHERE file_id = ?1 AND source = ?2 AND key = ?3",
                params![file_id, SOURCE_USER, k],
            )?;
            tx.execute("DELETE FROM overrides WHERE file_id = ?1 AND key = ?2", params![file_id, k])?;
        }
        None => {
            tx.execute("DELETE FROM tags WHERE file_id = ?1 AND source = ?2", params![file_id, SOURCE_USER])?;
            tx.execute("DELETE FROM overrides WHERE file_id = ?1", [file_id])?;
            tx.execute("DELETE FROM file_pictures WHERE file_id = ?1 AND source = ?2", params![file_id, SOURCE_USER])?;
            tx.execute("DELETE FROM art_overrides WHERE file_id = ?1", [file_id])?;
        }
    }
    Ok(())
}

impl Catalog {
    /// The tags a file serves: its own with the user's overlay applied, in order.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn effective_tags(&self, file_id: i64) -> Result<Vec<Tag>> {
        effective(&self.conn, file_id).map_err(self.err())
    }

    /// The pictures a file serves (the user's list if art was edited).
    ///
    /// # Errors
    /// SQLite errors.
    pub fn effective_pictures(&self, file_id: i64) -> Result<Vec<Picture>> {
        effective_pictures(&self.conn, file_id).map_err(self.err())
    }

    /// The pictures a file serves, as [`effective_pictures`](Self::effective_pictures),
    /// without their bytes: each names its bytes by hash, for [`picture_data`](Self::picture_data)
    /// (a server that holds the bytes already need not read them again).
    ///
    /// # Errors
    /// SQLite errors.
    pub fn effective_picture_refs(&self, file_id: i64) -> Result<Vec<PictureRef>> {
        let f = || -> rusqlite::Result<Vec<PictureRef>> {
            let source = if art_overridden(&self.conn, file_id)? { SOURCE_USER } else { SOURCE_FILE };
            picture_rows(&self.conn, file_id, source, false)
        };
        f().map_err(self.err())
    }

    /// The bytes of the picture whose BLAKE3 hash is `hash`, if the catalog still has it.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn picture_data(&self, hash: &[u8; 32]) -> Result<Option<Vec<u8>>> {
        self.conn
            .prepare_cached("SELECT data FROM pictures WHERE hash = ?1")
            .and_then(|mut st| st.query_row([hash.as_slice()], |r| r.get(0)).optional())
            .map_err(self.err())
    }

    /// The keys the user's overlay controls for a file, and whether its art is overridden.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn edited(&self, file_id: i64) -> Result<(Vec<String>, bool)> {
        let conn = &self.conn;
        let f = || -> rusqlite::Result<(Vec<String>, bool)> {
            let mut keys: Vec<String> = overrides(conn, file_id)?.into_iter().collect();
            keys.sort();
            Ok((keys, art_overridden(conn, file_id)?))
        };
        f().map_err(self.err())
    }

    /// Files of origin `origin` (or any origin) whose path is `path` or lies below it.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn find_files(&self, origin: Option<&str>, path: &str) -> Result<Vec<i64>> {
        let path = path.trim_matches('/');
        let prefix = format!("{path}/");
        let mut st = self
            .conn
            .prepare_cached(
                "SELECT f.id FROM files f JOIN origins o ON o.id = f.origin_id
                 WHERE (?1 IS NULL OR o.name = ?1)
                   AND (f.path = ?2 OR ?2 = '' OR substr(f.path, 1, length(?3)) = ?3)
                 ORDER BY o.name, f.path",
            )
            .map_err(self.err())?;
        let rows = st.query_map(params![origin, path, prefix], |r| r.get(0)).map_err(self.err())?;
        rows.collect::<std::result::Result<_, _>>().map_err(self.err())
    }

    /// Whether the file has any user edit (tags or art).
    ///
    /// # Errors
    /// SQLite errors.
    pub fn is_edited(&self, file_id: i64) -> Result<bool> {
        let conn = &self.conn;
        let f = || -> rusqlite::Result<bool> {
            Ok(!overrides(conn, file_id)?.is_empty() || art_overridden(conn, file_id)?)
        };
        f().map_err(self.err())
    }

    /// The scan's record of a file (format, audio range, regions, props, extra), without
    /// tags and pictures; `None` if the file is not in the catalog.
    ///
    /// # Errors
    /// SQLite errors, or a corrupt regions/extra column.
    pub fn track_info(&self, file_id: i64) -> Result<Option<TrackInfo>> {
        let row = self
            .conn
            .prepare_cached(
                "SELECT format, extension, audio_offset, audio_len, codec, duration_ms, sample_rate, channels,
                        bits_per_sample, bitrate, regions, extra FROM files WHERE id = ?1",
            )
            .and_then(|mut st| {
                st.query_row([file_id], |r| {
                    Ok((
                        (r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get::<_, i64>(2)?, r.get::<_, i64>(3)?),
                        AudioProps {
                            codec: r.get::<_, String>(4)?.into(),
                            duration_ms: r.get::<_, i64>(5)? as u64,
                            sample_rate: r.get(6)?,
                            channels: r.get(7)?,
                            bits_per_sample: r.get(8)?,
                            bitrate: r.get(9)?,
                        },
                        r.get::<_, String>(10)?,
                        r.get::<_, String>(11)?,
                    ))
                })
                .optional()
            })
            .map_err(self.err())?;
        let Some(((format, extension, audio_offset, audio_len), props, regions, extra)) = row else {
            return Ok(None);
        };
        let corrupt = |what: &str| CatalogError::InvalidEdit(format!("catalog row of file {file_id}: corrupt {what}"));
        let regions: Vec<serde_json::Value> = serde_json::from_str(&regions).map_err(|_| corrupt("regions"))?;
        let regions = regions
            .iter()
            .map(|r| {
                Some(Region {
                    kind: r.get("kind")?.as_str()?.into(),
                    offset: r.get("offset")?.as_u64()?,
                    len: r.get("len")?.as_u64()?,
                })
            })
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| corrupt("regions"))?;
        let extra: serde_json::Map<String, serde_json::Value> =
            serde_json::from_str(&extra).map_err(|_| corrupt("extra"))?;
        let extra = extra
            .iter()
            .map(|(k, v)| KeyValue { key: k.as_str().into(), value: v.as_str().unwrap_or_default().into() })
            .collect::<Vec<_>>();
        Ok(Some(TrackInfo {
            format: format.into(),
            extension: extension.into(),
            tags: Vec::new().into(),
            pictures: Vec::new().into(),
            props,
            audio_offset: audio_offset as u64,
            audio_len: audio_len as u64,
            regions: regions.into(),
            extra: extra.into(),
        }))
    }

    /// Applies tag and picture edits to every file of `files`, all in one transaction:
    /// either every file gets every edit, or nothing is written. Each edited file's
    /// generation is bumped and logged as changed.
    ///
    /// # Errors
    /// [`CatalogError::InvalidEdit`] for a bad key or value (checked before anything is
    /// written) or an unknown file; SQLite errors.
    pub fn apply_edits(&mut self, files: &[i64], edits: &[Edit], art: &[ArtEdit]) -> Result<()> {
        let batch: Vec<(i64, Vec<Edit>, Vec<ArtEdit>)> =
            files.iter().map(|&f| (f, edits.to_vec(), art.to_vec())).collect();
        self.apply_batch(&batch)
    }

    /// Applies per-file edits `(file id, tag edits, picture edits)` in one transaction,
    /// then appends them to the edit journal (see [`journal`](super::journal)), so a
    /// rebuilt catalog gets them back.
    ///
    /// # Errors
    /// As for [`apply_edits`](Self::apply_edits); [`CatalogError::Journal`] if the
    /// edits were committed but their journal record could not be written.
    pub fn apply_batch(&mut self, batch: &[(i64, Vec<Edit>, Vec<ArtEdit>)]) -> Result<()> {
        self.apply_batch_with(batch, true)
    }

    /// [`apply_batch`](Self::apply_batch) without a journal record (replaying the
    /// journal itself).
    pub(crate) fn apply_batch_unjournaled(&mut self, batch: &[(i64, Vec<Edit>, Vec<ArtEdit>)]) -> Result<()> {
        self.apply_batch_with(batch, false)
    }

    fn apply_batch_with(&mut self, batch: &[(i64, Vec<Edit>, Vec<ArtEdit>)], journal: bool) -> Result<()> {
        let mut checked = Vec::with_capacity(batch.len());
        for (file_id, edits, art) in batch {
            let mut norm = Vec::with_capacity(edits.len());
            for e in edits {
                norm.push(normalize_edit(e)?);
            }
            checked.push((*file_id, norm, art));
        }
        let path = self.path.clone();
        let e = move |source| CatalogError::Sqlite { path: path.clone(), source };
        let tx = self.conn.transaction().map_err(&e)?;
        let record = apply_checked(&tx, &checked, journal, &self.path)?;
        tx.commit().map_err(&e)?;
        self.woke();
        if let Some(line) = record {
            let path = super::journal::journal_path(&self.path);
            super::journal::append(&path, &line).map_err(|source| CatalogError::Journal { path, source })?;
        }
        Ok(())
    }

    /// The edits that make file `file_id`'s text tags exactly `tags` (a key not listed is
    /// removed) and, when given, its pictures exactly `pictures` (in order; a picture is
    /// the same when its type, description and image are): what `musefs tag import` and
    /// a save through a writable mount store. Binary tags are left as they are. Both
    /// lists are empty when nothing differs.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn edits_to_match(
        &self,
        file_id: i64,
        tags: &std::collections::BTreeMap<String, Vec<String>>,
        pictures: Option<&[Picture]>,
    ) -> Result<(Vec<Edit>, Vec<ArtEdit>)> {
        let current = self.effective_text(file_id)?;
        let mut edits: Vec<Edit> = current
            .keys()
            .filter(|k| !tags.contains_key(*k))
            .map(|k| Edit::Remove { key: k.clone(), value: None })
            .collect();
        for (k, v) in tags {
            if current.get(k) != Some(v) {
                edits.push(Edit::Set { key: k.clone(), values: v.clone() });
            }
        }
        let mut art = Vec::new();
        if let Some(want) = pictures {
            let key = |p: &Picture| (p.picture_type, p.description.to_string(), p.data.to_vec());
            if self.effective_pictures(file_id)?.iter().map(key).ne(want.iter().map(key)) {
                art.push(ArtEdit::Remove(None));
                art.extend(want.iter().cloned().map(ArtEdit::Append));
            }
        }
        Ok((edits, art))
    }

    /// The tag values (text only) of one file by key, the overlay applied: `key -> values`.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn effective_text(&self, file_id: i64) -> Result<HashMap<String, Vec<String>>> {
        let mut m: HashMap<String, Vec<String>> = HashMap::new();
        for t in self.effective_tags(file_id)? {
            if t.data.is_empty() && !t.key.is_empty() {
                m.entry(t.key.into_string()).or_default().push(t.value.into_string());
            }
        }
        Ok(m)
    }
}

/// A file's overlay as the edits that recreate it on a file with no overlay (`None`: the
/// file has none): `Set` (or `Remove`) per key the user controls, the user's pictures.
pub(crate) fn overlay_state(
    conn: &rusqlite::Connection,
    file_id: i64,
) -> rusqlite::Result<Option<(Vec<Edit>, Vec<ArtEdit>)>> {
    let mut keys: Vec<String> = overrides(conn, file_id)?.into_iter().collect();
    let art = art_overridden(conn, file_id)?;
    if keys.is_empty() && !art {
        return Ok(None);
    }
    keys.sort();
    let user = rows(conn, file_id, SOURCE_USER)?;
    let edits = keys
        .into_iter()
        .map(|key| {
            let values: Vec<String> = user.iter().filter(|r| r.key == key).map(|r| r.value.clone()).collect();
            if values.is_empty() {
                Edit::Remove { key, value: None }
            } else {
                Edit::Set { key, values }
            }
        })
        .collect();
    let mut pics = Vec::new();
    if art {
        pics.push(ArtEdit::Remove(None));
        // Exactly the pictures there are, in order (several of one type included).
        pics.extend(pictures(conn, file_id, SOURCE_USER)?.into_iter().map(ArtEdit::Append));
    }
    Ok(Some((edits, pics)))
}

/// Applies checked edits in `tx` (the catalog at `path`, for error messages); returns the
/// journal record of them if `journal`.
pub(crate) fn apply_checked(
    tx: &Transaction<'_>,
    checked: &[(i64, Vec<Edit>, &Vec<ArtEdit>)],
    journal: bool,
    path: &std::path::Path,
) -> Result<Option<String>> {
    let e = |source| CatalogError::Sqlite { path: path.to_owned(), source };
    for (file_id, norm, art) in checked {
        let file_id = *file_id;
        let exists: Option<i64> =
            tx.query_row("SELECT id FROM files WHERE id = ?1", [file_id], |r| r.get(0)).optional().map_err(&e)?;
        if exists.is_none() {
            return Err(CatalogError::InvalidEdit(format!("file {file_id} is not in the catalog")));
        }
        for edit in norm {
            let current = |tx: &Transaction<'_>, key: &str| -> rusqlite::Result<Vec<String>> {
                Ok(effective(tx, file_id)?
                    .into_iter()
                    .filter(|t| t.key.as_str() == key && t.data.is_empty())
                    .map(|t| t.value.into_string())
                    .collect())
            };
            match edit {
                Edit::Set { key, values } => write_key(tx, file_id, key, values).map_err(&e)?,
                Edit::Add { key, values } => {
                    let mut all = current(tx, key).map_err(&e)?;
                    all.extend(values.iter().cloned());
                    write_key(tx, file_id, key, &all).map_err(&e)?;
                }
                Edit::Remove { key, value } => {
                    let mut all = current(tx, key).map_err(&e)?;
                    match value {
                        Some(v) => all.retain(|x| x != v),
                        None => all.clear(),
                    }
                    write_key(tx, file_id, key, &all).map_err(&e)?;
                }
                Edit::Reset { key } => reset(tx, file_id, key.as_deref()).map_err(&e)?,
            }
        }
        if !art.is_empty() {
            let mut pics = effective_pictures(tx, file_id).map_err(&e)?;
            for a in art.iter() {
                match a {
                    ArtEdit::Set(p) => {
                        pics.retain(|q| q.picture_type != p.picture_type);
                        if p.picture_type == 3 {
                            pics.insert(0, p.clone());
                        } else {
                            pics.push(p.clone());
                        }
                    }
                    ArtEdit::Append(p) => pics.push(p.clone()),
                    ArtEdit::Remove(None) => pics.clear(),
                    ArtEdit::Remove(Some(t)) => pics.retain(|q| q.picture_type != *t),
                }
            }
            write_user_pictures(tx, file_id, &pics).map_err(&e)?;
        }
        let now = crate::util::now_ns();
        tx.execute(
            "UPDATE files SET gen = gen + 1, placed_ns = ?2, edited_ns = ?2 WHERE id = ?1",
            params![file_id, now],
        )
        .map_err(&e)?;
        log_change(tx, file_id).map_err(&e)?;
    }
    tx.execute("DELETE FROM pictures WHERE id NOT IN (SELECT picture_id FROM file_pictures)", []).map_err(&e)?;
    let record = if journal {
        let batch: Vec<(i64, Vec<Edit>, &Vec<ArtEdit>)> =
            checked.iter().map(|(id, norm, art)| (*id, norm.clone(), *art)).collect();
        Some(super::journal::record(tx, &batch).map_err(&e)?)
    } else {
        None
    };
    Ok(record)
}

#[cfg(test)]
mod tests {
    use musefs_plugin_api::{AudioProps, EntryKind, Stat};

    use super::*;

    fn info(tags: Vec<Tag>, pics: usize) -> TrackInfo {
        TrackInfo {
            format: "mp3".into(),
            extension: "mp3".into(),
            tags: tags.into(),
            pictures: (0..pics)
                .map(|i| Picture {
                    picture_type: 3 + i as u32,
                    mime: "image/png".into(),
                    data: vec![i as u8; 4].into(),
                    ..Picture::default()
                })
                .collect::<Vec<_>>()
                .into(),
            props: AudioProps::default(),
            audio_offset: 0,
            audio_len: 1,
            regions: Vec::new().into(),
            extra: Vec::new().into(),
        }
    }

    fn setup() -> (tempfile::TempDir, Catalog, i64) {
        let d = tempfile::tempdir().unwrap();
        let mut c = Catalog::open(&d.path().join("c.db")).unwrap();
        let o = c.origin_id("o", "local").unwrap();
        let tags = vec![
            Tag::text("title", "TIT2", "T"),
            Tag::text("my_field", "TXXX:MY FIELD", "x"),
            Tag::text("artist", "TPE1", "A"),
            Tag::binary("", "PRIV", "3 bytes", vec![1, 2, 3]),
        ];
        let stat = Stat { kind: EntryKind::FILE, size: 1, mtime_ns: Some(1).into(), etag: None.into() };
        let id = c.write_batch(o, &[("a.mp3".into(), stat, "mp3".into(), info(tags, 2))]).unwrap()[0];
        (d, c, id)
    }

    fn view(c: &Catalog, id: i64) -> Vec<(String, String, String)> {
        c.effective_tags(id)
            .unwrap()
            .iter()
            .map(|t| (t.key.to_string(), t.native.to_string(), t.value.to_string()))
            .collect()
    }

    #[test]
    fn edits_replace_in_place_keep_native_names_and_reset() {
        let (_d, mut c, id) = setup();
        let gen0 = c.file(id).unwrap().unwrap().gen;
        c.apply_edits(
            &[id],
            &[
                Edit::Set { key: "My_Field".into(), values: vec!["y".into(), "z".into()] },
                Edit::Add { key: "artist".into(), values: vec!["B".into()] },
                Edit::Set { key: "mood".into(), values: vec!["calm".into()] },
                Edit::Remove { key: "title".into(), value: None },
            ],
            &[ArtEdit::Remove(Some(4))],
        )
        .unwrap();
        let v = view(&c, id);
        let s = |a: &str, b: &str, x: &str| (a.to_owned(), b.to_owned(), x.to_owned());
        assert_eq!(
            v,
            vec![
                s("my_field", "TXXX:MY FIELD", "y"),
                s("my_field", "TXXX:MY FIELD", "z"),
                s("artist", "TPE1", "A"),
                s("artist", "TPE1", "B"),
                s("", "PRIV", "3 bytes"),
                s("mood", "", "calm"),
            ],
            "values in place, native names kept, a removed key gone, new keys appended"
        );
        assert_eq!(c.effective_pictures(id).unwrap().len(), 1);
        assert!(c.file(id).unwrap().unwrap().gen > gen0, "an edit bumps the generation");
        let (keys, art) = c.edited(id).unwrap();
        assert_eq!(keys, vec!["artist", "mood", "my_field", "title"]);
        assert!(art);
        // The file's own tags are still recorded: reset brings them back.
        c.apply_edits(&[id], &[Edit::Reset { key: None }], &[]).unwrap();
        assert_eq!(view(&c, id).len(), 4);
        assert_eq!(c.effective_pictures(id).unwrap().len(), 2);
        assert!(!c.is_edited(id).unwrap());
    }

    /// Regression: a write transaction began deferred (a read first) and met another
    /// writer's commit: SQLite answers that at once with "database is locked", without
    /// waiting, so `musefs tag set` failed beside a mount's sync (seen in CI).
    #[test]
    fn two_writers_at_once_wait_for_each_other_instead_of_database_is_locked_regression() {
        let (d, mut c, id) = setup();
        let path = d.path().join("c.db");
        let other = std::thread::spawn(move || {
            let mut c2 = Catalog::open(&path).unwrap();
            for i in 0..150 {
                c2.apply_edits(&[id], &[Edit::Set { key: "artist".into(), values: vec![format!("a{i}")] }], &[])
                    .unwrap();
            }
        });
        for i in 0..150 {
            c.apply_edits(&[id], &[Edit::Set { key: "title".into(), values: vec![format!("t{i}")] }], &[]).unwrap();
        }
        other.join().unwrap();
        let tags = view(&c, id);
        assert!(tags.contains(&("title".into(), "TIT2".into(), "t149".into())), "{tags:?}");
        assert!(tags.contains(&("artist".into(), "TPE1".into(), "a149".into())), "{tags:?}");
    }

    #[test]
    fn invalid_edits_write_nothing() {
        let (_d, mut c, id) = setup();
        let before = c.last_change().unwrap();
        for bad in ["", "a=b", "ti:tle", "x\u{1}"] {
            let e = c.apply_edits(&[id], &[Edit::Set { key: bad.into(), values: vec!["v".into()] }], &[]).unwrap_err();
            assert!(e.to_string().contains("invalid tag key"), "{e}");
        }
        let e = c
            .apply_edits(
                &[id],
                &[
                    Edit::Set { key: "title".into(), values: vec!["ok".into()] },
                    Edit::Set { key: "comment".into(), values: vec!["a\0b".into()] },
                ],
                &[],
            )
            .unwrap_err();
        assert!(e.to_string().contains("NUL"), "{e}");
        assert!(c.apply_edits(&[id, 999], &[Edit::Set { key: "title".into(), values: vec![] }], &[]).is_err());
        assert_eq!(view(&c, id)[0].2, "T", "the batch was rolled back");
        assert_eq!(c.last_change().unwrap(), before);
    }

    #[test]
    fn the_change_log_lists_each_file_once_and_reports_gaps() {
        let (_d, mut c, id) = setup();
        let start = c.last_change().unwrap();
        assert!(start > 0, "the scan logged the file");
        c.apply_edits(&[id], &[Edit::Set { key: "title".into(), values: vec!["1".into()] }], &[]).unwrap();
        c.apply_edits(&[id], &[Edit::Set { key: "title".into(), values: vec!["2".into()] }], &[]).unwrap();
        let ch = c.changes_since(start).unwrap();
        assert_eq!((ch.files.clone(), ch.gap), (vec![id], false));
        assert_eq!(c.changes_since(ch.last).unwrap().files, Vec::<i64>::new());
        c.remove_files(&[id]).unwrap();
        assert_eq!(c.changes_since(ch.last).unwrap().files, vec![id], "removals are logged");
        c.conn.execute("UPDATE changes SET at = 0 WHERE seq <= ?1", [ch.last]).unwrap();
        c.prune_changes(3600).unwrap();
        assert!(c.changes_since(start).unwrap().gap, "a pruned log is reported as a gap");
    }

    #[test]
    fn the_bulk_tree_load_agrees_with_the_per_file_one_under_edits() {
        // tree_files (mount, one pass over every tag) and tree_file (refresh, one file)
        // must resolve the overlay identically, key by key.
        let (_d, mut c, a) = setup();
        let o = c.origin_id("o", "local").unwrap();
        let stat = Stat { kind: EntryKind::FILE, size: 1, mtime_ns: Some(1).into(), etag: None.into() };
        let tags =
            vec![Tag::text("title", "TIT2", "U"), Tag::text("artist", "TPE1", "X"), Tag::text("artist", "TPE1", "Y")];
        let ids = c
            .write_batch(
                o,
                &[
                    ("b.mp3".into(), stat.clone(), "mp3".into(), info(tags.clone(), 2)),
                    ("c.mp3".into(), stat, "mp3".into(), info(tags, 2)),
                ],
            )
            .unwrap();
        let (b, untouched) = (ids[0], ids[1]);
        c.apply_edits(&[a], &[Edit::Set { key: "artist".into(), values: vec!["New".into(), "Two".into()] }], &[])
            .unwrap();
        c.apply_edits(&[b], &[Edit::Remove { key: "artist".into(), value: None }], &[]).unwrap();
        c.apply_edits(&[b], &[Edit::Add { key: "title".into(), values: vec!["Also".into()] }], &[]).unwrap();
        let keys: Vec<String> = vec!["artist".into(), "title".into()];
        let sorted = |mut v: Vec<(String, String)>| {
            v.sort();
            v
        };
        let bulk = c.tree_files(&keys).unwrap();
        assert_eq!(bulk.len(), 3);
        for f in &bulk {
            let one = c.tree_file(f.file.id, &keys).unwrap().unwrap();
            assert_eq!(sorted(f.tags.clone()), sorted(one.tags.clone()), "file {}", f.file.id);
        }
        let get = |id: i64| sorted(bulk.iter().find(|f| f.file.id == id).unwrap().tags.clone());
        let pair = |k: &str, v: &str| (k.to_owned(), v.to_owned());
        assert_eq!(get(a), vec![pair("artist", "New"), pair("artist", "Two"), pair("title", "T")]);
        assert_eq!(get(b), vec![pair("title", "Also"), pair("title", "U")]);
        assert_eq!(get(untouched), vec![pair("artist", "X"), pair("artist", "Y"), pair("title", "U")]);
    }

    #[test]
    fn a_log_pruned_to_empty_still_reports_the_gap() {
        // Regression: the position came from max(seq), so once a prune emptied the log a
        // tree snapshot taken before the changes looked up to date.
        let (_d, mut c, id) = setup();
        let snapshot_at = c.last_change().unwrap();
        c.apply_edits(&[id], &[Edit::Set { key: "title".into(), values: vec!["later".into()] }], &[]).unwrap();
        let now = c.last_change().unwrap();
        assert!(now > snapshot_at);
        c.conn.execute("UPDATE changes SET at = 0", []).unwrap();
        c.prune_changes(3600).unwrap();
        assert_eq!(c.last_change().unwrap(), now, "the position survives the prune");
        let ch = c.changes_since(snapshot_at).unwrap();
        assert!(ch.gap && ch.last == now, "{ch:?}");
        let ch = c.changes_since(now).unwrap();
        assert!(!ch.gap && ch.files.is_empty(), "{ch:?}");
    }
}

//! `musefs tag`: the user's tag and art edits, as an overlay in the catalog.
//!
//! Targets are named by a path in the mounted tree (as `musefs ls` prints it; a
//! directory means every file below it), by `ORIGIN:PATH` (a file or directory in an
//! origin), or by a path under a local origin's root. Edits never touch the originals;
//! a running mount picks them up from the catalog's change log.

use std::collections::BTreeMap;
use std::path::Path;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use musefs_plugin_api::Picture;
use serde::{Deserialize, Serialize};

use musefs_core::catalog::overlay::{ArtEdit, Edit};
use musefs_core::catalog::{Catalog, CatalogError};
use musefs_core::manifest::Manifest;

/// A tag command error.
#[derive(Debug, thiserror::Error)]
pub enum TagError {
    /// The catalog refused or failed.
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    /// Nothing matches the given path.
    #[error(
        "no file matches `{0}`: give a path in the mounted tree (as `musefs ls` prints it), \
         ORIGIN:PATH, or a file under a local origin's root"
    )]
    NoMatch(String),
    /// An argument is malformed.
    #[error("{0}")]
    Usage(String),
    /// An image or JSON file cannot be used.
    #[error("{path}: {message}")]
    File {
        /// The file.
        path: String,
        /// What is wrong.
        message: String,
    },
}

/// A result of this module.
pub type Result<T> = std::result::Result<T, TagError>;

/// Whether `target` names the root of the tree, i.e. every file of the library (a path
/// inside the running mount names the root only when it is the mountpoint).
pub fn names_whole_library(manifest: &Manifest, target: &str) -> bool {
    match inside_mount(manifest, target) {
        Some(rel) => rel.is_empty(),
        None => matches!(target.trim().trim_matches('/'), "" | "."),
    }
}

/// The files `target` names.
///
/// # Errors
/// [`TagError::NoMatch`] if none.
pub fn resolve(manifest: &Manifest, catalog: &Catalog, target: &str) -> Result<Vec<i64>> {
    let tree = musefs_core::tree::load::build_tree(manifest, catalog)?;
    let in_tree = |path: &str| {
        let ids = tree.resolve(path.trim_start_matches('/')).map(|n| tree.files_under(n.ino)).unwrap_or_default();
        (!ids.is_empty()).then_some(ids)
    };
    // A path inside the running mount (`/srv/music/Artist/Album`, or relative to a
    // working directory in it) is its path in the tree.
    if let Some(rel) = inside_mount(manifest, target) {
        if let Some(ids) = in_tree(&rel) {
            return Ok(ids);
        }
    }
    if let Some(ids) = in_tree(target) {
        return Ok(ids);
    }
    if let Some((origin, path)) = target.split_once(':') {
        if manifest.origins.iter().any(|o| o.name == origin) {
            let ids = not_sidecars(catalog, catalog.find_files(Some(origin), path)?)?;
            if !ids.is_empty() {
                return Ok(ids);
            }
        }
    }
    let abs = Path::new(target).canonicalize().ok();
    if let Some(abs) = abs {
        for o in &manifest.origins {
            let cfg: serde_json::Value = serde_json::from_str(&o.config_json).unwrap_or_default();
            let Some(root) = cfg.get("root").and_then(|r| r.as_str()) else { continue };
            let Ok(root) = Path::new(root).canonicalize() else { continue };
            if let Ok(rel) = abs.strip_prefix(&root) {
                let ids = not_sidecars(catalog, catalog.find_files(Some(&o.name), &rel.to_string_lossy())?)?;
                if !ids.is_empty() {
                    return Ok(ids);
                }
            }
        }
    }
    Err(TagError::NoMatch(target.to_owned()))
}

/// `ids` without the sidecars (they have no tags to edit).
fn not_sidecars(catalog: &Catalog, ids: Vec<i64>) -> Result<Vec<i64>> {
    let mut out = Vec::with_capacity(ids.len());
    for id in ids {
        if catalog.file(id)?.is_some_and(|r| !r.is_sidecar()) {
            out.push(id);
        }
    }
    Ok(out)
}

/// `target`'s path in the tree when it lies inside the mountpoint of the mount running
/// on `manifest`'s state directory (lexically: the mount is not asked).
fn inside_mount(manifest: &Manifest, target: &str) -> Option<String> {
    let record = musefs_core::state::StateDir::new(&manifest.state_dir).read_record().ok()??;
    if record.mountpoint.is_empty() {
        return None;
    }
    let abs = std::env::current_dir().ok()?.join(target);
    // `.` and `..` resolved by hand: the mount itself is not stat-ed.
    let mut parts: Vec<std::path::Component<'_>> = Vec::new();
    for c in abs.components() {
        match c {
            std::path::Component::CurDir => {}
            std::path::Component::ParentDir => {
                parts.pop();
            }
            c => parts.push(c),
        }
    }
    let abs: std::path::PathBuf = parts.iter().collect();
    let rel = abs.strip_prefix(&record.mountpoint).ok()?;
    Some(rel.to_string_lossy().into_owned())
}

/// Parses `KEY=VALUE` arguments; `allow_bare` also accepts a bare `KEY` (value `None`).
///
/// # Errors
/// [`TagError::Usage`] naming the argument.
pub fn parse_assignments(args: &[String], allow_bare: bool) -> Result<Vec<(String, Option<String>)>> {
    args.iter()
        .map(|a| match a.split_once('=') {
            Some((k, v)) => Ok((k.to_owned(), Some(v.to_owned()))),
            None if allow_bare => Ok((a.clone(), None)),
            None => Err(TagError::Usage(format!("`{a}`: expected KEY=VALUE (e.g. title=\"New Title\")"))),
        })
        .collect()
}

/// `set` edits: values grouped by key, in argument order (`artist=A artist=B` sets two values).
pub fn set_edits(pairs: &[(String, Option<String>)], add: bool) -> Vec<Edit> {
    let mut by_key: Vec<(String, Vec<String>)> = Vec::new();
    for (k, v) in pairs {
        let k = k.trim().to_ascii_lowercase();
        let v = v.clone().unwrap_or_default();
        match by_key.iter_mut().find(|(x, _)| *x == k) {
            Some((_, vals)) => vals.push(v),
            None => by_key.push((k, vec![v])),
        }
    }
    by_key
        .into_iter()
        .map(|(key, values)| if add { Edit::Add { key, values } } else { Edit::Set { key, values } })
        .collect()
}

/// One file in the JSON export format.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ExportedFile {
    /// The origin's name.
    pub origin: String,
    /// The path in the origin.
    pub path: String,
    /// Text tags by canonical key, the overlay applied.
    pub tags: BTreeMap<String, Vec<String>>,
    /// The keys the user edited (informational).
    #[serde(default)]
    pub edited: Vec<String>,
    /// The pictures, in order. Absent in a document: the pictures are left as they are
    /// on import; present (even empty): they become exactly these.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pictures: Option<Vec<ExportedPicture>>,
}

/// One picture in the JSON export format.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ExportedPicture {
    /// The picture type (ID3/FLAC numbering: 3 = front cover).
    #[serde(rename = "type")]
    pub picture_type: u32,
    /// Its MIME type (informational: taken from the image on import).
    #[serde(default)]
    pub mime: String,
    /// Its description.
    #[serde(default)]
    pub description: String,
    /// The image, base64.
    pub data: String,
}

/// The JSON export document.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Export {
    /// Format version (1).
    pub version: u32,
    /// The files.
    pub files: Vec<ExportedFile>,
}

/// The export document for `ids`.
///
/// # Errors
/// Catalog errors.
pub fn export(catalog: &Catalog, ids: &[i64]) -> Result<Export> {
    let mut files = Vec::with_capacity(ids.len());
    for &id in ids {
        let Some(row) = catalog.file(id)? else { continue };
        let tags = catalog.effective_text(id)?.into_iter().collect();
        let pictures = catalog
            .effective_pictures(id)?
            .into_iter()
            .map(|p| ExportedPicture {
                picture_type: p.picture_type,
                mime: p.mime.to_string(),
                description: p.description.to_string(),
                data: BASE64.encode(p.data.as_slice()),
            })
            .collect();
        files.push(ExportedFile {
            origin: row.origin,
            path: row.path,
            tags,
            edited: catalog.edited(id)?.0,
            pictures: Some(pictures),
        });
    }
    Ok(Export { version: 1, files })
}

/// Applies an export document: each listed file's text tags become exactly the
/// document's (keys it does not list are removed; binary frames are left alone), and
/// its pictures too when the document lists them. All files or none.
///
/// # Errors
/// [`TagError::File`] for an unknown version or a file not in the catalog; edit errors.
pub fn import(catalog: &mut Catalog, doc: &Export, source: &str) -> Result<usize> {
    if doc.version != 1 {
        return Err(TagError::File { path: source.into(), message: format!("unknown version {}", doc.version) });
    }
    let bad = |message: String| TagError::File { path: source.into(), message };
    let mut batch = Vec::with_capacity(doc.files.len());
    for f in &doc.files {
        let ids = catalog.find_files(Some(&f.origin), &f.path)?;
        let Some(&id) = ids.iter().find(|&&id| catalog.file(id).ok().flatten().is_some_and(|r| r.path == f.path))
        else {
            return Err(TagError::File {
                path: source.into(),
                message: format!("{}:{} is not in the catalog (scan first?)", f.origin, f.path),
            });
        };
        let pictures = match &f.pictures {
            // A picture the file has already (same type, description and image) is taken
            // as it is, whatever its image (a file's own damaged JPEG round-trips); a new
            // one is checked as `art set` checks it.
            Some(pics) => {
                let current = catalog.effective_pictures(id)?;
                let want = pics
                    .iter()
                    .enumerate()
                    .map(|(i, p)| {
                        picture_from_export(p, &current)
                            .map_err(|m| bad(format!("{}:{}: picture {}: {m}", f.origin, f.path, i + 1)))
                    })
                    .collect::<Result<Vec<_>>>()?;
                Some(want)
            }
            None => None,
        };
        let (edits, art) = catalog.edits_to_match(id, &f.tags, pictures.as_deref())?;
        if !edits.is_empty() || !art.is_empty() {
            batch.push((id, edits, art));
        }
    }
    let n = batch.len();
    catalog.apply_batch(&batch)?;
    Ok(n)
}

/// A picture of an export document: one of `current` (the file's) when it is the same,
/// else a new one, its image checked as for `art set`.
fn picture_from_export(p: &ExportedPicture, current: &[Picture]) -> std::result::Result<Picture, String> {
    let data = BASE64.decode(p.data.trim()).map_err(|e| format!("`data` is not base64: {e}"))?;
    let same = |c: &&Picture| {
        c.picture_type == p.picture_type && c.description.as_str() == p.description && c.data.as_slice() == data
    };
    if let Some(c) = current.iter().find(same) {
        return Ok(c.clone());
    }
    picture_from_bytes(data, p.picture_type, &p.description)
}

/// Reads an image file into a picture (JPEG, PNG, GIF or WebP; dimensions from the header).
///
/// # Errors
/// [`TagError::File`] for an unreadable, unknown or oversized image.
pub fn picture_from_file(path: &Path, picture_type: u32, description: &str) -> Result<Picture> {
    let err = |message: String| TagError::File { path: path.display().to_string(), message };
    let data = std::fs::read(path).map_err(|e| err(e.to_string()))?;
    if picture_type > 20 {
        return Err(TagError::Usage(format!("picture type {picture_type}: expected 0-20 (3 = front cover)")));
    }
    picture_from_bytes(data, picture_type, description).map_err(err)
}

/// An image's bytes as a picture (JPEG, PNG, GIF or WebP; dimensions from the header).
fn picture_from_bytes(data: Vec<u8>, picture_type: u32, description: &str) -> std::result::Result<Picture, String> {
    if data.len() > 16 * 1024 * 1024 - 1024 {
        return Err("larger than 16 MiB, the FLAC picture limit".into());
    }
    if picture_type > 20 {
        return Err(format!("picture type {picture_type}: expected 0-20 (3 = front cover)"));
    }
    let facts = musefs_core::image::inspect(&data)?;
    Ok(Picture {
        picture_type,
        mime: facts.mime.into(),
        description: description.into(),
        width: facts.width,
        height: facts.height,
        depth: facts.depth,
        colors: facts.colors,
        data: data.into(),
    })
}

/// Applies `art` edits to `ids`.
///
/// # Errors
/// Catalog errors.
pub fn edit_art(catalog: &mut Catalog, ids: &[i64], art: ArtEdit) -> Result<()> {
    catalog.apply_edits(ids, &[], &[art])?;
    Ok(())
}

/// A human-readable listing of one file's tags and pictures.
///
/// # Errors
/// Catalog errors.
pub fn show(catalog: &Catalog, id: i64) -> Result<String> {
    use std::fmt::Write;
    let mut s = String::new();
    let Some(row) = catalog.file(id)? else { return Ok(s) };
    let (edited, art_edited) = catalog.edited(id)?;
    let _ = writeln!(s, "{}:{}", row.origin, row.path);
    for t in catalog.effective_tags(id)? {
        let key = if t.key.is_empty() { format!("({})", t.native) } else { t.key.to_string() };
        let mark = if edited.iter().any(|k| k == t.key.as_str()) { "  [edited]" } else { "" };
        if t.data.is_empty() {
            let _ = writeln!(s, "  {key} = {}{mark}", t.value);
        } else {
            let _ = writeln!(s, "  {key} : {} [{} bytes binary]{mark}", t.value, t.data.len());
        }
    }
    for k in &edited {
        if !catalog.effective_tags(id)?.iter().any(|t| t.key.as_str() == k) {
            let _ = writeln!(s, "  {k} (removed)  [edited]");
        }
    }
    let pics = catalog.effective_pictures(id)?;
    let mark = if art_edited { "  [edited]" } else { "" };
    for p in &pics {
        let _ = writeln!(
            s,
            "  picture type {} {} {}x{} {} bytes{}{mark}",
            p.picture_type,
            p.mime,
            p.width,
            p.height,
            p.data.len(),
            if p.description.is_empty() { String::new() } else { format!(" \"{}\"", p.description) }
        );
    }
    if pics.is_empty() && art_edited {
        let _ = writeln!(s, "  (pictures removed){mark}");
    }
    // Chapters the format read (MP4: chapter tracks, Nero `chpl`), one line each.
    if let Some(info) = catalog.track_info(id)? {
        if let Some(ch) = info.extra.iter().find(|kv| kv.key.as_str() == "chapters") {
            for line in ch.value.as_str().lines() {
                let _ = writeln!(s, "  chapter {line}");
            }
        }
    }
    Ok(s)
}

//! iTunes-style metadata: the items of `moov/udta/meta/ilst`, read into tags and
//! pictures and written back from them.
//!
//! An item is an atom named by its key (`©nam`, `trkn`, `covr`, `----`, ...) holding
//! `data` atoms: `type u32 BE` (1 UTF-8, 2 UTF-16, 13 JPEG, 14 PNG, 21 integer, 0
//! implicit), `locale u32`, then the payload. Freeform items (`----`) name themselves
//! with a `mean` (`com.apple.iTunes`) and a `name`. Items this module does not know are
//! kept as binary tags (native = the item's key, data = its body) and written back
//! byte for byte.

use musefs_plugin_api::{Picture, Tag};

use crate::atom::{build, children};

/// `(4cc, canonical key)` of the text items.
const TEXT: &[(&[u8; 4], &str)] = &[
    (b"\xa9nam", "title"),
    (b"\xa9ART", "artist"),
    (b"aART", "albumartist"),
    (b"\xa9alb", "album"),
    (b"\xa9day", "date"),
    (b"\xa9gen", "genre"),
    (b"\xa9wrt", "composer"),
    (b"\xa9cmt", "comment"),
    (b"\xa9lyr", "lyrics"),
    (b"\xa9grp", "grouping"),
    (b"\xa9too", "encodedby"),
    (b"cprt", "copyright"),
    (b"desc", "description"),
    (b"soal", "albumsort"),
    (b"soar", "artistsort"),
    (b"soaa", "albumartistsort"),
    (b"sonm", "titlesort"),
    (b"soco", "composersort"),
];

/// A 4cc as text (`©` is byte 0xA9, Latin-1).
pub fn fourcc_str(k: &[u8; 4]) -> String {
    k.iter().map(|&b| char::from(b)).collect()
}

/// A 4cc from text, if it is four Latin-1 characters.
pub fn fourcc_of(s: &str) -> Option<[u8; 4]> {
    let bytes: Vec<u8> = s.chars().map(|c| u8::try_from(u32::from(c)).ok()).collect::<Option<_>>()?;
    bytes.try_into().ok()
}

/// The `(type, payload)` of each `data` atom in an item body (other children skipped).
fn data_atoms(body: &[u8]) -> Option<Vec<(u32, &[u8])>> {
    let mut out = Vec::new();
    for a in children(body, 0).ok()? {
        if &a.kind == b"data" {
            let d = &body[a.body() as usize..a.end() as usize];
            if d.len() < 8 {
                return None;
            }
            out.push((u32::from_be_bytes(d[..4].try_into().ok()?) & 0x00ff_ffff, &d[8..]));
        }
    }
    Some(out)
}

fn text_of(kind: u32, payload: &[u8]) -> Option<String> {
    match kind {
        1 => std::str::from_utf8(payload).ok().map(str::to_owned),
        2 => {
            let units: Vec<u16> = payload.chunks_exact(2).map(|c| u16::from_be_bytes([c[0], c[1]])).collect();
            String::from_utf16(&units).ok()
        }
        _ => None,
    }
}

fn int_of(payload: &[u8]) -> Option<i64> {
    match payload.len() {
        1 => Some(i64::from(payload[0] as i8)),
        2 => Some(i64::from(i16::from_be_bytes([payload[0], payload[1]]))),
        4 => Some(i64::from(i32::from_be_bytes(payload.try_into().ok()?))),
        8 => Some(i64::from_be_bytes(payload.try_into().ok()?)),
        _ => None,
    }
}

fn mime_of(kind: u32, data: &[u8]) -> &'static str {
    match kind {
        13 => "image/jpeg",
        14 => "image/png",
        27 => "image/bmp",
        _ if data.starts_with(b"\x89PNG") => "image/png",
        _ if data.starts_with(b"\xff\xd8") => "image/jpeg",
        _ => "application/octet-stream",
    }
}

/// Reads the items of an `ilst` body. Returns the tags, the pictures, and warnings for
/// what could not be read (an item whose structure is broken is kept as binary).
pub fn read(body: &[u8]) -> (Vec<Tag>, Vec<Picture>, Vec<String>) {
    let (mut tags, mut pics, mut warnings) = (Vec::new(), Vec::new(), Vec::new());
    let items = match children(body, 0) {
        Ok(items) => items,
        Err(e) => {
            warnings.push(format!("the ilst atom is damaged ({e}); its items are not read"));
            return (tags, pics, warnings);
        }
    };
    for it in items {
        let kind = it.kind;
        let item = &body[it.body() as usize..it.end() as usize];
        let native = fourcc_str(&kind);
        let binary = |tags: &mut Vec<Tag>| {
            tags.push(Tag {
                key: "".into(),
                native: native.as_str().into(),
                value: format!("{native} item").into(),
                data: item.to_vec().into(),
            });
        };
        let Some(data) = data_atoms(item) else {
            warnings.push(format!("ilst item `{native}` is damaged; kept as it is"));
            binary(&mut tags);
            continue;
        };
        if &kind == b"----" {
            let mut mean = String::new();
            let mut name = String::new();
            for a in children(item, 0).unwrap_or_default() {
                let b = &item[a.body() as usize..a.end() as usize];
                let s = b.get(4..).map(|x| String::from_utf8_lossy(x).into_owned()).unwrap_or_default();
                match &a.kind {
                    b"mean" => mean = s,
                    b"name" => name = s,
                    _ => {}
                }
            }
            let texts: Option<Vec<String>> = data.iter().map(|(k, p)| text_of(*k, p)).collect();
            match texts {
                Some(vs) if !name.is_empty() && !vs.is_empty() => {
                    let native = format!("----:{mean}:{name}");
                    for v in vs {
                        tags.push(Tag::text(&musefs_format_util::names::freeform_key(&name), &native, &v));
                    }
                }
                _ => binary(&mut tags),
            }
            continue;
        }
        match &kind {
            b"covr" => {
                for (k, p) in &data {
                    pics.push(Picture {
                        picture_type: 3,
                        mime: mime_of(*k, p).into(),
                        description: "".into(),
                        width: 0,
                        height: 0,
                        depth: 0,
                        colors: 0,
                        data: p.to_vec().into(),
                    });
                }
            }
            b"trkn" | b"disk" => match data.first() {
                Some((_, p)) if p.len() >= 6 => {
                    let n = u16::from_be_bytes([p[2], p[3]]);
                    let total = u16::from_be_bytes([p[4], p[5]]);
                    let v = if total > 0 { format!("{n}/{total}") } else { n.to_string() };
                    let key = if &kind == b"trkn" { "track" } else { "disc" };
                    tags.push(Tag::text(key, &native, &v));
                }
                _ => binary(&mut tags),
            },
            b"cpil" | b"tmpo" => match data.first().and_then(|(_, p)| int_of(p)) {
                Some(n) => {
                    tags.push(Tag::text(if &kind == b"cpil" { "compilation" } else { "bpm" }, &native, &n.to_string()))
                }
                None => binary(&mut tags),
            },
            b"gnre" => match data.first().and_then(|(_, p)| int_of(p)) {
                Some(n) if n >= 1 && (n as usize) <= musefs_format_util::id3::GENRES.len() => {
                    tags.push(Tag::text("genre", &native, musefs_format_util::id3::GENRES[n as usize - 1]));
                }
                _ => binary(&mut tags),
            },
            _ => {
                let key = TEXT.iter().find(|(k, _)| **k == kind).map(|(_, key)| *key);
                let texts: Option<Vec<String>> = data.iter().map(|(k, p)| text_of(*k, p)).collect();
                match (key, texts) {
                    (Some(key), Some(vs)) if !vs.is_empty() => {
                        for v in vs {
                            tags.push(Tag::text(key, &native, &v));
                        }
                    }
                    _ => binary(&mut tags),
                }
            }
        }
    }
    (tags, pics, warnings)
}

fn data_atom(kind: u32, payload: &[u8]) -> Vec<u8> {
    let mut body = Vec::with_capacity(payload.len() + 8);
    body.extend_from_slice(&kind.to_be_bytes());
    body.extend_from_slice(&0u32.to_be_bytes());
    body.extend_from_slice(payload);
    build(b"data", &body)
}

fn full_box(kind: &[u8; 4], payload: &[u8]) -> Vec<u8> {
    let mut body = vec![0u8; 4];
    body.extend_from_slice(payload);
    build(kind, &body)
}

/// Where a text tag goes: a 4cc, or a freeform `(mean, name)`.
enum Slot {
    Item([u8; 4]),
    Free(String, String),
}

fn slot_of(t: &Tag) -> Slot {
    let native = t.native.as_str();
    if let Some(rest) = native.strip_prefix("----:") {
        if let Some((mean, name)) = rest.split_once(':') {
            return Slot::Free(mean.to_owned(), name.to_owned());
        }
    }
    if let Some(k) = fourcc_of(native) {
        if &k != b"gnre" {
            return Slot::Item(k);
        }
    }
    let key = t.key.as_str();
    match key {
        "track" => Slot::Item(*b"trkn"),
        "disc" => Slot::Item(*b"disk"),
        "compilation" => Slot::Item(*b"cpil"),
        "bpm" => Slot::Item(*b"tmpo"),
        _ => match TEXT.iter().find(|(_, k)| *k == key) {
            Some((k, _)) => Slot::Item(**k),
            None => Slot::Free("com.apple.iTunes".into(), musefs_format_util::names::freeform_name(key)),
        },
    }
}

fn number_pair(v: &str) -> (u16, u16) {
    let (n, t) = v.split_once('/').unwrap_or((v, "0"));
    (n.trim().parse().unwrap_or(0), t.trim().parse().unwrap_or(0))
}

/// An `ilst` atom holding `tags` (text grouped by item, in order of first appearance;
/// binary items as they were) and `pictures` (one `covr` item).
pub fn write(tags: &[Tag], pictures: &[Picture]) -> Vec<u8> {
    enum Item {
        Text(Vec<u8>, Vec<String>),
        Free(String, String, Vec<String>),
        Raw([u8; 4], Vec<u8>),
    }
    let mut items: Vec<Item> = Vec::new();
    for t in tags {
        if !t.data.is_empty() {
            if let Some(k) = fourcc_of(t.native.as_str()) {
                items.push(Item::Raw(k, t.data.to_vec()));
            }
            continue;
        }
        if t.key.is_empty() && t.native.is_empty() {
            continue;
        }
        let v = t.value.to_string();
        match slot_of(t) {
            Slot::Item(k) => match items.iter_mut().find(|i| matches!(i, Item::Text(n, _) if n[..] == k[..])) {
                Some(Item::Text(_, vs)) => vs.push(v),
                _ => items.push(Item::Text(k.to_vec(), vec![v])),
            },
            Slot::Free(mean, name) => {
                match items.iter_mut().find(|i| matches!(i, Item::Free(m, n, _) if *m == mean && *n == name)) {
                    Some(Item::Free(_, _, vs)) => vs.push(v),
                    _ => items.push(Item::Free(mean, name, vec![v])),
                }
            }
        }
    }
    let mut body = Vec::new();
    for it in &items {
        match it {
            Item::Raw(k, data) => body.extend(build(k, data)),
            Item::Free(mean, name, vs) => {
                let mut b = full_box(b"mean", mean.as_bytes());
                b.extend(full_box(b"name", name.as_bytes()));
                for v in vs {
                    b.extend(data_atom(1, v.as_bytes()));
                }
                body.extend(build(b"----", &b));
            }
            Item::Text(k, vs) => {
                let k: [u8; 4] = k[..].try_into().expect("4 bytes");
                let payload = match &k {
                    b"trkn" => {
                        let (n, t) = number_pair(&vs[0]);
                        let mut p = vec![0, 0];
                        p.extend(n.to_be_bytes());
                        p.extend(t.to_be_bytes());
                        p.extend([0, 0]);
                        Some(data_atom(0, &p))
                    }
                    b"disk" => {
                        let (n, t) = number_pair(&vs[0]);
                        let mut p = vec![0, 0];
                        p.extend(n.to_be_bytes());
                        p.extend(t.to_be_bytes());
                        Some(data_atom(0, &p))
                    }
                    b"cpil" => Some(data_atom(21, &[u8::from(vs[0].trim() != "0" && !vs[0].trim().is_empty())])),
                    b"tmpo" => Some(data_atom(21, &vs[0].trim().parse::<u16>().unwrap_or(0).to_be_bytes())),
                    _ => None,
                };
                match payload {
                    Some(p) => body.extend(build(&k, &p)),
                    None => {
                        let mut b = Vec::new();
                        for v in vs {
                            b.extend(data_atom(1, v.as_bytes()));
                        }
                        body.extend(build(&k, &b));
                    }
                }
            }
        }
    }
    if !pictures.is_empty() {
        let mut b = Vec::new();
        for p in pictures {
            let kind = match p.mime.as_str() {
                "image/png" => 14,
                "image/bmp" => 27,
                _ => 13,
            };
            b.extend(data_atom(kind, &p.data));
        }
        body.extend(build(b"covr", &b));
    }
    build(b"ilst", &body)
}

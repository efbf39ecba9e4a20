//! Writing a fresh ID3v2.4 (or 2.3) tag, and the ID3v1 / APEv2 trailers, from the catalog.
//!
//! Every tag the catalog holds is carried: text frames under their own frame id (several
//! values of one id become one frame, NUL-separated in 2.4, `/`-joined in 2.3), `TXXX`
//! under their description, and binary frames (PRIV, UFID, GEOB, COMM, USLT, ...) with their
//! payload as read. Frames of other versions are translated (2.2 ids to 2.3/2.4 ids, `TYER`
//! to `TDRC` and back, `TORY`/`TDOR`); frames that cannot be (compressed or encrypted
//! ones, 2.2 binary frames without a modern equivalent) are left out rather than
//! written wrongly. Tags the user added (no native name) get the frame for their
//! canonical key, or `TXXX:KEY`.

use musefs_plugin_api::{Picture, Tag};

use crate::id3v2::{canonical, GENRES};

/// The ID3v2 minor version to write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    /// ID3v2.3 (UTF-16 text, plain frame sizes).
    V23,
    /// ID3v2.4 (UTF-8 text, synchsafe sizes).
    V24,
}

fn synchsafe(n: u32) -> [u8; 4] {
    [(n >> 21) as u8 & 0x7F, (n >> 14) as u8 & 0x7F, (n >> 7) as u8 & 0x7F, n as u8 & 0x7F]
}

/// The frame id for a canonical key (the inverse of [`canonical`]).
pub fn frame_for_key(key: &str) -> Option<&'static str> {
    Some(match key {
        "title" => "TIT2",
        "artist" => "TPE1",
        "album" => "TALB",
        "albumartist" => "TPE2",
        "track" => "TRCK",
        "disc" => "TPOS",
        "date" => "TDRC",
        "originaldate" => "TDOR",
        "genre" => "TCON",
        "composer" => "TCOM",
        "grouping" => "TIT1",
        "subtitle" => "TIT3",
        "conductor" => "TPE3",
        "lyricist" => "TEXT",
        "bpm" => "TBPM",
        "isrc" => "TSRC",
        "label" => "TPUB",
        "copyright" => "TCOP",
        "encodedby" => "TENC",
        "encoder" => "TSSE",
        "language" => "TLAN",
        "initialkey" => "TKEY",
        "mood" => "TMOO",
        "albumsort" => "TSOA",
        "artistsort" => "TSOP",
        "albumartistsort" => "TSO2",
        "titlesort" => "TSOT",
        "compilation" => "TCMP",
        "comment" => "COMM",
        "lyrics" => "USLT",
        _ => return None,
    })
}

/// ID3v2.2 three-character ids of binary frames with a modern equivalent of the same body layout.
fn v22_binary(id: &str) -> Option<&'static str> {
    Some(match id {
        "UFI" => "UFID",
        "COM" => "COMM",
        "ULT" => "USLT",
        "GEO" => "GEOB",
        "CNT" => "PCNT",
        "POP" => "POPM",
        "MCI" => "MCDI",
        "WXX" => "WXXX",
        _ => return None,
    })
}

/// The frame id to write a text tag under, translated to `v`; `None` to leave it out.
fn text_frame_id(t: &Tag, v: Version) -> Option<String> {
    let native = t.native.as_str();
    if let Some(desc) = native.strip_prefix("TXXX:") {
        return Some(format!("TXXX:{desc}"));
    }
    let id = if native.len() == 4
        && native.starts_with('T')
        && native.bytes().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
    {
        native.to_owned()
    } else if native.len() == 3 && native.starts_with('T') && !canonical(native).is_empty() {
        frame_for_key(canonical(native))?.to_owned()
    } else if native == "COMM" || native == "USLT" || native == "COM" || native == "ULT" {
        if native.starts_with('C') {
            "COMM".to_owned()
        } else {
            "USLT".to_owned()
        }
    } else if !t.key.is_empty() {
        // A user-added tag, or one from an ID3v1/APE trailer.
        match frame_for_key(&t.key) {
            Some(f) => f.to_owned(),
            None => format!("TXXX:{}", crate::names::freeform_name(&t.key)),
        }
    } else {
        return None;
    };
    Some(match (v, id.as_str()) {
        (Version::V24, "TYER") => "TDRC".into(),
        (Version::V24, "TORY") => "TDOR".into(),
        (Version::V24, "TDAT" | "TIME" | "TRDA" | "TSIZ") => return None,
        (Version::V23, "TDRC") => "TYER".into(),
        (Version::V23, "TDOR") => "TORY".into(),
        (Version::V23, "TDRL" | "TDEN" | "TDTG" | "TSST" | "TMOO" | "TPRO" | "TIPL" | "TMCL") => return None,
        _ => id,
    })
}

/// Encodes `s` for a frame: returns the encoding byte and the bytes (no terminator).
fn encode(s: &str, v: Version) -> (u8, Vec<u8>) {
    if s.chars().all(|c| (c as u32) < 0x80) {
        return (0, s.as_bytes().to_vec());
    }
    match v {
        Version::V24 => (3, s.as_bytes().to_vec()),
        Version::V23 if s.chars().all(|c| (c as u32) < 0x100) => (0, s.chars().map(|c| c as u8).collect()),
        Version::V23 => {
            let mut b = vec![0xFF, 0xFE];
            for u in s.encode_utf16() {
                b.extend(u.to_le_bytes());
            }
            (1, b)
        }
    }
}

fn terminator(enc: u8) -> &'static [u8] {
    if enc == 1 || enc == 2 {
        &[0, 0]
    } else {
        &[0]
    }
}

/// Encodes several strings with one common encoding.
fn encode_all(parts: &[&str], v: Version) -> (u8, Vec<Vec<u8>>) {
    let joined = parts.concat();
    let (enc, _) = encode(&joined, v);
    let out = parts
        .iter()
        .map(|p| match enc {
            0 => p.chars().map(|c| c as u8).collect(),
            3 => p.as_bytes().to_vec(),
            _ => {
                let mut b = vec![0xFF, 0xFE];
                for u in p.encode_utf16() {
                    b.extend(u.to_le_bytes());
                }
                b
            }
        })
        .collect();
    (enc, out)
}

fn frame(out: &mut Vec<u8>, id: &str, body: &[u8], v: Version) {
    let Ok(n) = u32::try_from(body.len()) else { return };
    if n >= 1 << 28 {
        return;
    }
    out.extend(id.as_bytes());
    match v {
        Version::V24 => out.extend(synchsafe(n)),
        Version::V23 => out.extend(n.to_be_bytes()),
    }
    out.extend([0, 0]);
    out.extend(body);
}

fn text_body(values: &[&str], v: Version) -> Vec<u8> {
    let sep = match v {
        Version::V24 => "\0",
        Version::V23 => "/",
    };
    let joined = values.join(sep);
    let (enc, bytes) = encode(&joined, v);
    let mut b = vec![enc];
    b.extend(bytes);
    b
}

fn described_body(desc: &str, values: &[&str], v: Version, lang: Option<&[u8]>) -> Vec<u8> {
    let sep = match v {
        Version::V24 => "\0",
        Version::V23 => "/",
    };
    let value = values.join(sep);
    let (enc, parts) = encode_all(&[desc, &value], v);
    let mut b = vec![enc];
    if let Some(l) = lang {
        b.extend(l);
    }
    b.extend(&parts[0]);
    b.extend(terminator(enc));
    b.extend(&parts[1]);
    b
}

/// The COMM/USLT language and description from a payload as read (`enc lang desc\0 text`).
fn comm_parts(data: &[u8]) -> Option<([u8; 3], String)> {
    if data.len() < 4 {
        return None;
    }
    let enc = data[0];
    let lang = [data[1], data[2], data[3]];
    let rest = &data[4..];
    let desc_bytes = if enc == 1 || enc == 2 {
        let mut i = 0;
        loop {
            if i + 1 >= rest.len() {
                break rest;
            }
            if rest[i] == 0 && rest[i + 1] == 0 {
                break &rest[..i];
            }
            i += 2;
        }
    } else {
        rest.split(|&b| b == 0).next().unwrap_or(&[])
    };
    let desc = match enc {
        0 => desc_bytes.iter().map(|&b| char::from(b)).collect(),
        3 => String::from_utf8_lossy(desc_bytes).into_owned(),
        _ => {
            let (be, d) = match desc_bytes {
                [0xFE, 0xFF, r @ ..] => (true, r),
                [0xFF, 0xFE, r @ ..] => (false, r),
                r => (enc == 2, r),
            };
            let u: Vec<u16> = d
                .chunks_exact(2)
                .map(|c| if be { u16::from_be_bytes([c[0], c[1]]) } else { u16::from_le_bytes([c[0], c[1]]) })
                .collect();
            String::from_utf16_lossy(&u)
        }
    };
    Some((lang, desc))
}

fn apic_body(p: &Picture, v: Version) -> Vec<u8> {
    let (enc, parts) = encode_all(&[p.description.as_str()], v);
    let mut b = vec![enc];
    b.extend(p.mime.as_bytes());
    b.push(0);
    b.push(p.picture_type.min(255) as u8);
    b.extend(&parts[0]);
    b.extend(terminator(enc));
    b.extend(p.data.iter());
    b
}

/// The frames (without the tag header) for `tags` and `pictures`.
pub fn frames(tags: &[Tag], pictures: &[Picture], v: Version) -> Vec<u8> {
    // Text values grouped by frame id, in the order ids first appear; binary frames in place.
    enum Item {
        Text(String, Vec<String>),
        Binary(String, Vec<u8>),
    }
    let mut items: Vec<Item> = Vec::new();
    for t in tags {
        let native = t.native.as_str();
        if !t.data.is_empty() {
            if t.value.as_str() == "compressed or encrypted frame" || native.starts_with("APE:") {
                continue;
            }
            let id = if native.len() == 3 { v22_binary(native).map(str::to_owned) } else { Some(native.to_owned()) };
            let Some(id) = id.filter(|i| i.len() == 4) else { continue };
            let mut data = t.data.to_vec();
            if matches!(id.as_str(), "COMM" | "USLT") {
                // Re-encode when the text was edited, or when its encoding is not valid in `v`.
                let wrong_enc = v == Version::V23 && data.first().is_some_and(|&e| e >= 2);
                if wrong_enc {
                    if let Some((lang, desc)) = comm_parts(&data) {
                        data = described_body(&desc, &[t.value.as_str()], v, Some(&lang));
                    }
                }
            }
            items.push(Item::Binary(id, data));
            continue;
        }
        if native.starts_with("ID3v1:") && t.key.is_empty() {
            continue; // an ID3v1 value that the ID3v2 tag already has
        }
        if native.starts_with("APE:") && t.key.is_empty() {
            continue;
        }
        let Some(id) = text_frame_id(t, v) else { continue };
        if let Some(Item::Text(_, vals)) = items.iter_mut().find(|i| matches!(i, Item::Text(n, _) if *n == id)) {
            vals.push(t.value.to_string());
        } else {
            items.push(Item::Text(id, vec![t.value.to_string()]));
        }
    }
    let mut out = Vec::new();
    for it in &items {
        match it {
            Item::Binary(id, data) => frame(&mut out, id, data, v),
            Item::Text(id, vals) => {
                let vals: Vec<&str> = vals.iter().map(String::as_str).collect();
                if let Some(desc) = id.strip_prefix("TXXX:") {
                    frame(&mut out, "TXXX", &described_body(desc, &vals, v, None), v);
                } else if id == "COMM" || id == "USLT" {
                    for val in vals {
                        frame(&mut out, id, &described_body("", &[val], v, Some(b"eng")), v);
                    }
                } else if id == "TCON" {
                    // A genre that starts with `(` would read as an ID3v1 reference
                    // (`(17)`); `((` is the escape for a literal `(`.
                    let escaped: Vec<String> = vals
                        .iter()
                        .map(|g| if g.starts_with('(') { format!("({g}") } else { (*g).to_owned() })
                        .collect();
                    let escaped: Vec<&str> = escaped.iter().map(String::as_str).collect();
                    frame(&mut out, id, &text_body(&escaped, v), v);
                } else {
                    frame(&mut out, id, &text_body(&vals, v), v);
                }
            }
        }
    }
    for p in pictures {
        frame(&mut out, "APIC", &apic_body(p, v), v);
    }
    out
}

/// A whole tag: header, `frames`, and `padding` zero bytes.
pub fn tag(frames: &[u8], padding: usize, v: Version) -> Vec<u8> {
    let body = frames.len() + padding;
    let mut out = Vec::with_capacity(10 + body);
    out.extend(b"ID3");
    out.push(match v {
        Version::V23 => 3,
        Version::V24 => 4,
    });
    out.extend([0, 0]);
    out.extend(synchsafe(body as u32));
    out.extend(frames);
    out.resize(10 + body, 0);
    out
}

fn first<'a>(tags: &'a [Tag], key: &str) -> &'a str {
    tags.iter().find(|t| t.key.as_str() == key && t.data.is_empty()).map_or("", |t| t.value.as_str())
}

fn latin1_field(s: &str, n: usize) -> Vec<u8> {
    let mut b: Vec<u8> = s.chars().map(|c| if (c as u32) < 0x100 { c as u8 } else { b'?' }).take(n).collect();
    b.resize(n, 0);
    b
}

/// A 128-byte ID3v1.1 tag from the canonical values (Latin-1, cut to the field sizes).
pub fn id3v1(tags: &[Tag]) -> Vec<u8> {
    let mut b = b"TAG".to_vec();
    b.extend(latin1_field(first(tags, "title"), 30));
    b.extend(latin1_field(first(tags, "artist"), 30));
    b.extend(latin1_field(first(tags, "album"), 30));
    b.extend(latin1_field(first(tags, "date"), 4));
    b.extend(latin1_field(first(tags, "comment"), 28));
    b.push(0);
    let track = first(tags, "track").split('/').next().unwrap_or("").trim().parse::<u8>().unwrap_or(0);
    b.push(track);
    let genre = first(tags, "genre");
    b.push(GENRES.iter().position(|g| g.eq_ignore_ascii_case(genre)).map_or(255, |i| i as u8));
    b
}

/// An APEv2 tag (header, items, footer) from the text tags under their canonical keys.
pub fn apev2(tags: &[Tag]) -> Vec<u8> {
    let mut items: Vec<(String, Vec<String>)> = Vec::new();
    for t in tags.iter().filter(|t| t.data.is_empty() && !t.key.is_empty()) {
        let key = match t.key.as_str() {
            "albumartist" => "Album Artist".to_owned(),
            "date" => "Year".to_owned(),
            k => {
                let mut c = k.chars();
                c.next().map(|f| f.to_ascii_uppercase().to_string() + c.as_str()).unwrap_or_default()
            }
        };
        if !(2..=255).contains(&key.len()) || !key.bytes().all(|b| (0x20..=0x7E).contains(&b)) {
            continue;
        }
        match items.iter_mut().find(|(k, _)| *k == key) {
            Some((_, v)) => v.push(t.value.to_string()),
            None => items.push((key, vec![t.value.to_string()])),
        }
    }
    let mut body = Vec::new();
    for (k, vals) in &items {
        let v = vals.join("\0");
        body.extend((v.len() as u32).to_le_bytes());
        body.extend(0u32.to_le_bytes());
        body.extend(k.as_bytes());
        body.push(0);
        body.extend(v.as_bytes());
    }
    let size = (body.len() + 32) as u32;
    let hf = |is_header: bool| {
        let mut h = b"APETAGEX".to_vec();
        h.extend(2000u32.to_le_bytes());
        h.extend(size.to_le_bytes());
        h.extend((items.len() as u32).to_le_bytes());
        h.extend((0x8000_0000u32 | if is_header { 0x2000_0000 } else { 0 }).to_le_bytes());
        h.extend([0u8; 8]);
        h
    };
    let mut out = hf(true);
    out.extend(body);
    out.extend(hf(false));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id3v2;

    #[test]
    fn written_tags_parse_back_with_binary_frames_and_multi_values() {
        let tags = vec![
            Tag::text("title", "TIT2", "Tïtle"),
            Tag::text("artist", "TPE1", "A"),
            Tag::text("artist", "TPE1", "B"),
            Tag::text("date", "TYER", "1999"),
            Tag::text("my_field", "TXXX:MY FIELD", "v"),
            Tag::binary("", "PRIV", "3 bytes", b"own\x00\x01".to_vec()),
            Tag::text("mood", "", "calm"),
            Tag::text("", "ID3v1:title", "dup"),
        ];
        let pics = vec![Picture {
            picture_type: 3,
            mime: "image/png".into(),
            description: "d".into(),
            data: vec![1, 2, 3].into(),
            ..Picture::default()
        }];
        for v in [Version::V24, Version::V23] {
            let t = tag(&frames(&tags, &pics, v), 100, v);
            let back = id3v2::parse(&t).unwrap();
            let got: Vec<(String, String)> =
                back.tags.iter().map(|t| (t.native.to_string(), t.value.to_string())).collect();
            let date = if v == Version::V24 { "TDRC" } else { "TYER" };
            let mut want =
                vec![("TIT2", "Tïtle"), ("TPE1", "A"), ("TPE1", "B"), (date, "1999"), ("TXXX:MY FIELD", "v")];
            want.push(("PRIV", "5 bytes"));
            if v == Version::V24 {
                want.push(("TMOO", "calm"));
            }
            let want: Vec<(String, String)> = want.iter().map(|(a, b)| ((*a).to_owned(), (*b).to_owned())).collect();
            if v == Version::V24 {
                assert_eq!(got, want);
            } else {
                // 2.3 joins multiple values with '/'.
                assert_eq!(got[1], ("TPE1".to_owned(), "A/B".to_owned()));
            }
            assert_eq!(back.pictures[0].data.as_slice(), &[1, 2, 3]);
            assert_eq!(t.len(), 10 + frames(&tags, &pics, v).len() + 100);
        }
    }

    #[test]
    fn id3v1_and_ape_layouts() {
        let tags = vec![
            Tag::text("title", "TIT2", "T"),
            Tag::text("track", "TRCK", "3/10"),
            Tag::text("genre", "TCON", "Rock"),
        ];
        let v1 = id3v1(&tags);
        assert_eq!((v1.len(), v1[126], v1[127]), (128, 3, 17));
        let ape = apev2(&tags);
        assert_eq!(&ape[..8], b"APETAGEX");
        assert_eq!(&ape[ape.len() - 32..ape.len() - 24], b"APETAGEX");
    }
}

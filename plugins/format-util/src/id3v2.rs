//! ID3v2.2, 2.3 and 2.4 tags.
//!
//! Frame sizes: v2.2 uses 3-byte plain integers, v2.3 4-byte plain integers, v2.4
//! 4-byte *synchsafe* integers (7 bits per byte). Some v2.4 writers wrongly wrote plain
//! sizes; like other readers we fall back to the plain size when the synchsafe one does
//! not land on a valid frame. Tag-level unsynchronisation (v2.3) and frame-level
//! unsynchronisation and data-length indicators (v2.4) are undone before decoding.

pub use crate::id3::{header_len, synchsafe, GENRES};
use musefs_plugin_api::{Picture, PluginError, PluginResult, Tag};

/// A parsed ID3v2 tag.
#[derive(Debug, Default)]
pub struct Id3v2 {
    /// Major version (2, 3 or 4).
    pub version: u8,
    /// Total size including header and footer.
    pub total_len: u64,
    /// Text and binary frames, in order.
    pub tags: Vec<Tag>,
    /// APIC / PIC frames.
    pub pictures: Vec<Picture>,
}

fn undo_unsync(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len());
    let mut i = 0;
    while i < data.len() {
        out.push(data[i]);
        if data[i] == 0xFF && data.get(i + 1) == Some(&0x00) {
            i += 1;
        }
        i += 1;
    }
    out
}

fn valid_frame_id(id: &[u8]) -> bool {
    !id.is_empty() && id.iter().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
}

/// Parses a whole tag (`data` starts with the `ID3` header).
///
/// # Errors
/// `INVALID_DATA` if the header is malformed; frames that are cut short end the parse
/// (what was read is kept), as every tolerant reader does.
pub fn parse(data: &[u8]) -> PluginResult<Id3v2> {
    let (version, total_len) = header_len(data).ok_or_else(|| PluginError::invalid_data("malformed ID3v2 header"))?;
    let flags = data[5];
    let body_end = (10 + synchsafe(&data[6..10]) as usize).min(data.len());
    let mut body: Vec<u8> = data[10..body_end].to_vec();
    if flags & 0x80 != 0 && version < 4 {
        body = undo_unsync(&body);
    }
    let mut pos = 0usize;
    if flags & 0x40 != 0 && version >= 3 {
        // Extended header: v2.3 size excludes its own 4 bytes, v2.4 is synchsafe and includes them.
        if body.len() < 4 {
            return Err(PluginError::invalid_data("ID3v2 extended header is truncated"));
        }
        pos = if version == 3 {
            4 + u32::from_be_bytes([body[0], body[1], body[2], body[3]]) as usize
        } else {
            synchsafe(&body[..4]) as usize
        };
    }
    let mut tag = Id3v2 { version, total_len, ..Id3v2::default() };
    let (id_len, hdr_len) = if version == 2 { (3, 6) } else { (4, 10) };
    while pos + hdr_len <= body.len() {
        let id = &body[pos..pos + id_len];
        if id[0] == 0 {
            break; // padding
        }
        if !valid_frame_id(id) {
            break;
        }
        let id = String::from_utf8_lossy(id).into_owned();
        let size = match version {
            2 => u32::from_be_bytes([0, body[pos + 3], body[pos + 4], body[pos + 5]]) as usize,
            3 => u32::from_be_bytes([body[pos + 4], body[pos + 5], body[pos + 6], body[pos + 7]]) as usize,
            _ => {
                let raw = &body[pos + 4..pos + 8];
                let safe = synchsafe(raw) as usize;
                let plain = u32::from_be_bytes([raw[0], raw[1], raw[2], raw[3]]) as usize;
                if safe == plain || frame_fits(&body, pos + hdr_len + safe) {
                    safe
                } else if frame_fits(&body, pos + hdr_len + plain) {
                    plain
                } else {
                    safe
                }
            }
        };
        let fflags = if version == 2 { 0 } else { u16::from_be_bytes([body[pos + 8], body[pos + 9]]) };
        let start = pos + hdr_len;
        if start + size > body.len() {
            break; // a cut-off frame ends the tag
        }
        let mut payload = body[start..start + size].to_vec();
        pos = start + size;
        if version == 4 {
            if fflags & 0x0002 != 0 {
                payload = undo_unsync(&payload);
            }
            if fflags & 0x0001 != 0 && payload.len() >= 4 {
                payload.drain(..4); // data length indicator
            }
        }
        let compressed_or_encrypted = match version {
            3 => fflags & 0x00C0 != 0,
            4 => fflags & 0x000C != 0,
            _ => false,
        };
        if compressed_or_encrypted {
            tag.tags.push(Tag::binary("", &id, "compressed or encrypted frame", payload));
            continue;
        }
        decode_frame(&mut tag, version, &id, payload);
    }
    Ok(tag)
}

fn frame_fits(body: &[u8], next: usize) -> bool {
    next == body.len()
        || body.get(next).is_some_and(|b| *b == 0)
        || body.get(next..next + 4).is_some_and(valid_frame_id)
}

fn decode_text(enc: u8, data: &[u8]) -> String {
    match enc {
        0 => data.iter().map(|&b| char::from(b)).collect(),
        1 | 2 => {
            let (mut be, mut d) = (enc == 2, data);
            if d.len() >= 2 && enc == 1 {
                match (d[0], d[1]) {
                    (0xFF, 0xFE) => {
                        be = false;
                        d = &d[2..];
                    }
                    (0xFE, 0xFF) => {
                        be = true;
                        d = &d[2..];
                    }
                    // No BOM (a buggy writer): ASCII-range text says which byte order.
                    (0, b) if b != 0 => be = true,
                    _ => {}
                }
            }
            let units: Vec<u16> = d
                .chunks_exact(2)
                .map(|c| if be { u16::from_be_bytes([c[0], c[1]]) } else { u16::from_le_bytes([c[0], c[1]]) })
                .collect();
            String::from_utf16_lossy(&units)
        }
        _ => String::from_utf8_lossy(data).into_owned(),
    }
}

/// Splits at the first string terminator of `enc` (1 NUL for Latin-1/UTF-8, 2 aligned NULs for UTF-16).
fn split_terminated(enc: u8, data: &[u8]) -> (&[u8], &[u8]) {
    if enc == 1 || enc == 2 {
        let mut i = 0;
        while i + 1 < data.len() {
            if data[i] == 0 && data[i + 1] == 0 {
                return (&data[..i], &data[i + 2..]);
            }
            i += 2;
        }
        (data, &[])
    } else {
        match data.iter().position(|&b| b == 0) {
            Some(i) => (&data[..i], &data[i + 1..]),
            None => (data, &[]),
        }
    }
}

fn text_values(enc: u8, data: &[u8]) -> Vec<String> {
    let s = decode_text(enc, data);
    let s = s.trim_end_matches('\0');
    s.split('\0').map(str::to_owned).collect()
}

/// The canonical field for a text frame id.
pub fn canonical(id: &str) -> &'static str {
    match id {
        "TIT2" | "TT2" => "title",
        "TPE1" | "TP1" => "artist",
        "TALB" | "TAL" => "album",
        "TPE2" | "TP2" => "albumartist",
        "TRCK" | "TRK" => "track",
        "TPOS" | "TPA" => "disc",
        "TDRC" | "TYER" | "TYE" => "date",
        "TDOR" | "TORY" | "TOR" => "originaldate",
        "TCON" | "TCO" => "genre",
        "TCOM" | "TCM" => "composer",
        "TIT1" | "TT1" => "grouping",
        "TIT3" | "TT3" => "subtitle",
        "TPE3" | "TP3" => "conductor",
        "TEXT" | "TXT" => "lyricist",
        "TBPM" | "TBP" => "bpm",
        "TSRC" | "TRC" => "isrc",
        "TPUB" | "TPB" => "label",
        "TCOP" | "TCR" => "copyright",
        "TENC" | "TEN" => "encodedby",
        "TSSE" | "TSS" => "encoder",
        "TLAN" | "TLA" => "language",
        "TKEY" | "TKE" => "initialkey",
        "TMOO" => "mood",
        "TSOA" => "albumsort",
        "TSOP" => "artistsort",
        "TSO2" => "albumartistsort",
        "TSOT" => "titlesort",
        "TCMP" | "TCP" => "compilation",
        _ => "",
    }
}

/// `"(17)"`, `"17"` or `"(17)Rock"` to a genre name, `"((text"` to `"(text"` (the
/// escape of a literal `(`); anything else unchanged.
pub fn genre_name(v: &str) -> String {
    let t = v.trim();
    // The escape keeps the value as it is (trailing spaces included).
    if let Some(rest) = v.trim_start().strip_prefix("((") {
        return format!("({rest}");
    }
    let num =
        t.strip_prefix('(').and_then(|r| r.split_once(')')).map_or(t, |(n, rest)| if rest.is_empty() { n } else { "" });
    // Digits only: `parse` also takes a sign (`+0`), which is text to every reader.
    match num.parse::<usize>() {
        Ok(n) if n < GENRES.len() && num.bytes().all(|b| b.is_ascii_digit()) => GENRES[n].to_owned(),
        _ => match t.strip_prefix('(').and_then(|r| r.split_once(')')) {
            Some((_, rest)) if !rest.is_empty() => rest.to_owned(),
            _ => v.to_owned(),
        },
    }
}

fn decode_frame(tag: &mut Id3v2, version: u8, id: &str, payload: Vec<u8>) {
    // An empty frame carries nothing to keep (and a binary tag without bytes would be
    // taken for text: its summary must never be served as a value).
    if payload.is_empty() {
        return;
    }
    let is_text = id.starts_with('T') && id != "TXXX" && id != "TXX";
    if is_text {
        let enc = payload[0];
        // Decoded by the declared encoding; an empty value (a lone BOM, a lone NUL) is
        // no value at all.
        for v in text_values(enc, &payload[1..]).into_iter().filter(|v| !v.is_empty()) {
            let key = canonical(id);
            let v = if key == "genre" { genre_name(&v) } else { v };
            tag.tags.push(Tag::text(key, id, &v));
        }
        return;
    }
    match id {
        "TXXX" | "TXX" if !payload.is_empty() => {
            let enc = payload[0];
            let (desc, value) = split_terminated(enc, &payload[1..]);
            let desc = decode_text(enc, desc);
            let key = txxx_key(&desc);
            for v in text_values(enc, value).into_iter().filter(|v| !v.is_empty()) {
                tag.tags.push(Tag::text(&key, &format!("TXXX:{desc}"), &v));
            }
        }
        "COMM" | "COM" | "USLT" | "ULT" if payload.len() >= 4 => {
            let enc = payload[0];
            let (desc, text) = split_terminated(enc, &payload[4..]);
            let desc = decode_text(enc, desc);
            let text = decode_text(enc, text).trim_end_matches('\0').to_owned();
            let lyrics = id == "USLT" || id == "ULT";
            let key = match (lyrics, desc.is_empty()) {
                (true, _) => "lyrics".to_owned(),
                (false, true) => "comment".to_owned(),
                // iTunes and others store machine data in described comments.
                (false, false) => String::new(),
            };
            tag.tags.push(Tag { key: key.into(), native: id.into(), value: text.into(), data: payload.into() });
        }
        "APIC" if payload.len() > 2 => {
            let enc = payload[0];
            let (mime, rest) = split_terminated(0, &payload[1..]);
            if rest.is_empty() {
                tag.tags.push(Tag::binary("", id, "malformed APIC", payload.clone()));
                return;
            }
            let ptype = rest[0];
            let (desc, data) = split_terminated(enc, &rest[1..]);
            tag.pictures.push(picture(ptype, &String::from_utf8_lossy(mime), &decode_text(enc, desc), data));
        }
        "PIC" if payload.len() > 5 => {
            let enc = payload[0];
            let fmt = String::from_utf8_lossy(&payload[1..4]).to_ascii_lowercase();
            let mime = match fmt.as_str() {
                "jpg" => "image/jpeg".to_owned(),
                "png" => "image/png".to_owned(),
                other => format!("image/{other}"),
            };
            let (desc, data) = split_terminated(enc, &payload[5..]);
            tag.pictures.push(picture(payload[4], &mime, &decode_text(enc, desc), data));
        }
        _ => {
            let summary = format!("{} bytes", payload.len());
            let _ = version;
            tag.tags.push(Tag::binary("", id, &summary, payload));
        }
    }
}

fn txxx_key(desc: &str) -> String {
    crate::names::freeform_key(desc)
}

fn picture(ptype: u8, mime: &str, desc: &str, data: &[u8]) -> Picture {
    Picture {
        picture_type: u32::from(ptype),
        mime: mime.into(),
        description: desc.into(),
        width: 0,
        height: 0,
        depth: 0,
        colors: 0,
        data: data.to_vec().into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame23(id: &str, body: &[u8]) -> Vec<u8> {
        let mut v = id.as_bytes().to_vec();
        v.extend((body.len() as u32).to_be_bytes());
        v.extend([0, 0]);
        v.extend(body);
        v
    }

    fn ss(n: u32) -> [u8; 4] {
        [(n >> 21) as u8 & 0x7F, (n >> 14) as u8 & 0x7F, (n >> 7) as u8 & 0x7F, n as u8 & 0x7F]
    }

    fn tag(version: u8, frames: &[u8]) -> Vec<u8> {
        let mut v = b"ID3".to_vec();
        v.extend([version, 0, 0]);
        v.extend(ss(frames.len() as u32 + 20));
        v.extend(frames);
        v.extend([0u8; 20]);
        v
    }

    /// Regression (real-world, Windows Media Player files): empty TENC/TCOP/TOPE frames
    /// were kept as binary tags whose summary `0 bytes` was served back as their text.
    #[test]
    fn empty_text_frames_are_dropped_not_turned_into_0_bytes() {
        let mut f = frame23("TENC", b"");
        f.extend(frame23("TCOP", b""));
        f.extend(frame23("TOPE", b"\x00"));
        f.extend(frame23("TIT2", b"\x00Kept"));
        f.extend(frame23("PRIV", b""));
        let t = parse(&tag(3, &f)).unwrap();
        let got: Vec<(&str, &str)> = t.tags.iter().map(|t| (t.native.as_str(), t.value.as_str())).collect();
        assert_eq!(got, [("TIT2", "Kept")]);
    }

    /// Regression: a TYER frame declaring UTF-16 whose payload is only a BOM was
    /// cataloged as the Latin-1 of the BOM and served as an empty date.
    #[test]
    fn a_utf16_frame_holding_only_a_bom_is_an_empty_value_dropped() {
        for body in [&b"\x01\xFF\xFE"[..], b"\x01\xFE\xFF", b"\x01\xFF\xFE\x00\x00", b"\x02", b"\x01"] {
            let t = parse(&tag(3, &frame23("TYER", body))).unwrap();
            assert!(t.tags.is_empty(), "{body:?} gave {:?}", t.tags);
        }
        // A BOM-less UTF-16 payload is decoded as UTF-16 (big endian by default), not Latin-1.
        let t = parse(&tag(3, &frame23("TYER", b"\x01\x00\x31\x00\x39\x00\x39\x00\x39"))).unwrap();
        assert_eq!(t.tags[0].value.as_str(), "1999");
    }

    #[test]
    fn v24_uses_synchsafe_sizes_and_v23_plain() {
        // A 200-byte text frame: synchsafe 200 = 0x00000148, plain 200 = 0x000000C8.
        let text: Vec<u8> = std::iter::once(3u8).chain(std::iter::repeat_n(b'a', 199)).collect();
        let mut f24 = b"TIT2".to_vec();
        f24.extend(ss(200));
        f24.extend([0, 0]);
        f24.extend(&text);
        f24.extend(frame23("TPE1", b"\x03Artist"));
        let t = parse(&tag(4, &f24)).unwrap();
        assert_eq!(t.tags[0].value.len(), 199);
        assert_eq!(t.tags[1].value.as_str(), "Artist");
        let mut f23 = frame23("TIT2", &text);
        f23.extend(frame23("TPE1", b"\x00Artist"));
        let t = parse(&tag(3, &f23)).unwrap();
        assert_eq!(t.tags[1].key.as_str(), "artist");
    }

    #[test]
    fn v24_with_plain_sizes_is_recovered() {
        let text: Vec<u8> = std::iter::once(3u8).chain(std::iter::repeat_n(b'b', 199)).collect();
        let mut f = frame23("TIT2", &text); // plain size in a v2.4 tag: the iTunes bug
        f.extend(frame23("TALB", b"\x03Album"));
        let t = parse(&tag(4, &f)).unwrap();
        assert_eq!(t.tags.len(), 2);
        assert_eq!(t.tags[1].value.as_str(), "Album");
    }

    #[test]
    fn utf16_multi_values_txxx_and_binary_frames() {
        let mut body = vec![1u8, 0xFF, 0xFE];
        for c in "A\0B".encode_utf16() {
            body.extend(c.to_le_bytes());
        }
        let mut f = frame23("TPE1", &body);
        f.extend(frame23("TXXX", b"\x03MY FIELD\x00v1"));
        f.extend(frame23("PRIV", b"owner\x00\x01\x02\x03"));
        f.extend(frame23("TCON", b"\x00(17)"));
        let t = parse(&tag(3, &f)).unwrap();
        let vals: Vec<_> = t.tags.iter().map(|t| (t.key.as_str(), t.native.as_str(), t.value.as_str())).collect();
        assert_eq!(vals[0], ("artist", "TPE1", "A"));
        assert_eq!(vals[1], ("artist", "TPE1", "B"));
        assert_eq!(vals[2], ("my_field", "TXXX:MY FIELD", "v1"));
        assert_eq!(t.tags[3].native.as_str(), "PRIV");
        assert_eq!(t.tags[3].data.as_slice(), b"owner\x00\x01\x02\x03");
        assert_eq!(vals[4], ("genre", "TCON", "Rock"));
        // Regression (found by the synthesis property test): a genre starting with `(`
        // was written as is and read back as an ID3v1 reference (`()!` became `!`).
        assert_eq!(genre_name("((jazz)"), "(jazz)");
        assert_eq!(genre_name("()!"), "!");
    }

    /// Regression (found by the synthesis property test): an escaped genre (`((...`)
    /// lost its trailing spaces (`"(\u{e}/A "` came back as `"(\u{e}/A"`).
    #[test]
    fn an_escaped_genre_keeps_its_trailing_spaces_regression() {
        assert_eq!(genre_name("((\u{e}/A "), "(\u{e}/A ");
        assert_eq!(genre_name("((x  "), "(x  ");
        assert_eq!(genre_name(" (17) "), "Rock", "a reference is still read with spaces around it");
    }

    /// Found by `mp3_id3v24_synthesis_round_trips`: the genre `+0` was read as genre
    /// number 0 (Blues), as Rust's integer parsing takes a sign; mutagen and players
    /// read it as text.
    #[test]
    fn a_genre_with_a_sign_is_text_not_a_genre_number_regression() {
        assert_eq!(genre_name("+0"), "+0");
        assert_eq!(genre_name("(+17)"), "(+17)");
        assert_eq!(genre_name("(+17)Rock"), "Rock");
        assert_eq!(genre_name("0"), "Blues");
        assert_eq!(genre_name("(17)"), "Rock");
    }

    #[test]
    fn truncated_tags_never_panic() {
        let mut f = frame23("TIT2", b"\x03Title");
        f.extend(frame23("APIC", b"\x00image/png\x00\x03desc\x00\x89PNG"));
        let full = tag(3, &f);
        for cut in 0..full.len() {
            let _ = parse(&full[..cut]);
        }
    }

    #[test]
    fn v22_frames_and_pic() {
        let mut f = b"TT2".to_vec();
        f.extend([0, 0, 6]);
        f.extend(b"\x00Title");
        f.extend(b"PIC");
        f.extend([0, 0, 10]);
        f.extend(b"\x00JPG\x03d\x00\xFF\xD8\xFF");
        let t = parse(&tag(2, &f)).unwrap();
        assert_eq!(t.tags[0].key.as_str(), "title");
        assert_eq!(t.pictures[0].mime.as_str(), "image/jpeg");
        assert_eq!(t.pictures[0].data.as_slice(), b"\xFF\xD8\xFF");
    }
}

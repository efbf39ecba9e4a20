//! Text tags: RIFF `LIST`/`INFO` items and AIFF `NAME`/`AUTH`/`ANNO`/`(c) ` chunks.
//!
//! Both hold one string per id, NUL-terminated or not, in an unspecified 8-bit encoding:
//! read as UTF-8 when valid, Latin-1 otherwise, written as UTF-8. Their natives are
//! `INFO:ID` and `AIFF:ID`.

use musefs_plugin_api::Tag;

/// INFO ids and their canonical keys (ffmpeg's table; `ITRK` read as `track` too).
pub const INFO_KEYS: [(&[u8; 4], &str); 13] = [
    (b"INAM", "title"),
    (b"IART", "artist"),
    (b"IPRD", "album"),
    (b"IPRT", "track"),
    (b"ITRK", "track"),
    (b"ICRD", "date"),
    (b"IGNR", "genre"),
    (b"ICMT", "comment"),
    (b"ICOP", "copyright"),
    (b"ISFT", "encoder"),
    (b"ITCH", "encodedby"),
    (b"ILNG", "language"),
    (b"ICMS", "commissioned"),
];

/// AIFF text chunks and their canonical keys.
pub const AIFF_KEYS: [(&[u8; 4], &str); 4] =
    [(b"NAME", "title"), (b"AUTH", "artist"), (b"ANNO", "comment"), (b"(c) ", "copyright")];

/// Decodes an 8-bit string: up to the first NUL, UTF-8 if valid, else Latin-1.
pub fn decode(raw: &[u8]) -> String {
    let raw = &raw[..raw.iter().position(|&b| b == 0).unwrap_or(raw.len())];
    match std::str::from_utf8(raw) {
        Ok(s) => s.to_owned(),
        Err(_) => raw.iter().map(|&b| char::from(b)).collect(),
    }
}

/// The tag for one text item (`prefix` is `INFO` or `AIFF`).
pub fn tag(prefix: &str, id: &[u8; 4], raw: &[u8], keys: &[(&[u8; 4], &str)]) -> Option<Tag> {
    let value = decode(raw);
    if value.is_empty() {
        return None;
    }
    let key = keys.iter().find(|(k, _)| *k == id).map_or("", |(_, v)| *v);
    let native = format!("{prefix}:{}", String::from_utf8_lossy(id));
    Some(Tag::text(key, &native, &value))
}

/// The items of a `LIST` chunk body of type `INFO`.
pub fn info_tags(body: &[u8]) -> Vec<Tag> {
    let mut tags = Vec::new();
    let mut i = 4; // after "INFO"
    while i + 8 <= body.len() {
        let id = [body[i], body[i + 1], body[i + 2], body[i + 3]];
        let n = u32::from_le_bytes([body[i + 4], body[i + 5], body[i + 6], body[i + 7]]) as usize;
        // An item cut short by a bad size: what is there is read.
        let raw = &body[i + 8..(i + 8).saturating_add(n).min(body.len())];
        tags.extend(tag("INFO", &id, raw, &INFO_KEYS));
        i = i.saturating_add(8 + n + (n & 1));
    }
    tags
}

/// The text id a tag is written under: its canonical key's, or its own raw id when it
/// has no key (an item read from the file that musefs has no name for).
fn id_for(t: &Tag, prefix: &str, keys: &[(&[u8; 4], &str)]) -> Option<([u8; 4], bool)> {
    if !t.data.is_empty() {
        return None;
    }
    if !t.key.is_empty() {
        return keys.iter().find(|(_, k)| *k == t.key.as_str()).map(|(id, _)| (**id, true));
    }
    let raw = t.native.as_str().strip_prefix(prefix)?.strip_prefix(':')?.as_bytes();
    (raw.len() == 4).then(|| ([raw[0], raw[1], raw[2], raw[3]], false))
}

/// The text items for `tags`: one value per id, a canonical key winning over a raw item
/// of the same id; in the order ids first appear.
pub fn items(tags: &[Tag], prefix: &str, keys: &[(&[u8; 4], &str)]) -> Vec<([u8; 4], String)> {
    let mut out: Vec<([u8; 4], String, bool)> = Vec::new();
    for t in tags {
        let Some((id, keyed)) = id_for(t, prefix, keys) else { continue };
        match out.iter_mut().find(|(i, _, _)| *i == id) {
            Some(slot) if keyed && !slot.2 => *slot = (id, t.value.to_string(), true),
            Some(_) => {}
            None => out.push((id, t.value.to_string(), keyed)),
        }
    }
    out.into_iter().map(|(id, v, _)| (id, v)).collect()
}

/// Whether every text tag fits the text items (one value per id, an id for its key):
/// when not, an ID3 chunk is needed so nothing is lost.
pub fn all_fit(tags: &[Tag], prefix: &str, keys: &[(&[u8; 4], &str)]) -> bool {
    let mut seen: Vec<[u8; 4]> = Vec::new();
    for t in tags {
        if !t.data.is_empty() {
            return false;
        }
        match id_for(t, prefix, keys) {
            Some((id, true)) => {
                if seen.contains(&id) {
                    return false;
                }
                seen.push(id);
            }
            Some((_, false)) => {}
            None => return false,
        }
    }
    true
}

/// One chunk (`id`, size, body, pad byte); `be` for AIFF's big-endian size.
pub fn chunk(id: &[u8; 4], body: &[u8], be: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + 9);
    out.extend(id);
    let n = body.len() as u32;
    out.extend(if be { n.to_be_bytes() } else { n.to_le_bytes() });
    out.extend(body);
    if body.len() & 1 == 1 {
        out.push(0);
    }
    out
}

/// A `LIST`/`INFO` chunk for `items`, or nothing when there are none.
pub fn info_chunk(items: &[([u8; 4], String)]) -> Vec<u8> {
    if items.is_empty() {
        return Vec::new();
    }
    let mut body = b"INFO".to_vec();
    for (id, v) in items {
        let mut text = v.as_bytes().to_vec();
        text.push(0);
        body.extend(chunk(id, &text, false));
    }
    chunk(b"LIST", &body, false)
}

/// The AIFF text chunks for `items`.
pub fn aiff_chunks(items: &[([u8; 4], String)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (id, v) in items {
        out.extend(chunk(id, v.as_bytes(), true));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn info_round_trip_and_encodings() {
        let tags = vec![
            Tag::text("title", "", "Tïtle"),
            Tag::text("", "INFO:IENG", "Someone"),
            Tag::text("track", "INFO:ITRK", "3"),
            Tag::text("title", "", "second value"),
        ];
        let items = items(&tags, "INFO", &INFO_KEYS);
        assert_eq!(items.len(), 3);
        let c = info_chunk(&items);
        assert_eq!(&c[..4], b"LIST");
        let back = info_tags(&c[8..]);
        let got: Vec<_> = back.iter().map(|t| (t.key.as_str(), t.native.as_str(), t.value.as_str())).collect();
        assert_eq!(got, [("title", "INFO:INAM", "Tïtle"), ("", "INFO:IENG", "Someone"), ("track", "INFO:IPRT", "3")]);
        assert_eq!(decode(b"Caf\xe9\0junk"), "Café");
        assert!(!all_fit(&tags, "INFO", &INFO_KEYS), "two titles need ID3");
        assert!(all_fit(&tags[..3], "INFO", &INFO_KEYS));
        assert!(!all_fit(&[Tag::text("albumartist", "", "x")], "INFO", &INFO_KEYS));
    }

    #[test]
    fn a_raw_item_gives_way_to_a_keyed_one() {
        let tags = vec![Tag::text("", "AIFF:NAME", "old"), Tag::text("title", "", "new")];
        assert_eq!(items(&tags, "AIFF", &AIFF_KEYS), [(*b"NAME", "new".to_owned())]);
    }

    #[test]
    fn a_cut_item_reads_what_is_there() {
        let mut body = b"INFO".to_vec();
        body.extend(b"INAM\x40\0\0\0Short");
        assert_eq!(info_tags(&body)[0].value.as_str(), "Short");
    }
}

//! Vorbis comments: `vendor` + `FIELD=value` pairs, little-endian lengths.

use musefs_plugin_api::{PluginResult, Tag};

use crate::Cursor;

/// A parsed Vorbis comment block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Comments {
    /// The vendor string.
    pub vendor: String,
    /// `(FIELD, value)` in file order, field names as written.
    pub fields: Vec<(String, String)>,
    /// Bytes of the block consumed (the rest, e.g. Opus padding, follows).
    pub consumed: usize,
}

/// Parses a Vorbis comment block (without any packet-type prefix).
///
/// # Errors
/// `INVALID_DATA` if a length points past the end of the block.
pub fn parse(data: &[u8]) -> PluginResult<Comments> {
    let mut c = Cursor::new(data, "Vorbis comment block");
    let vendor_len = c.u32_le()? as usize;
    let vendor = String::from_utf8_lossy(c.take(vendor_len)?).into_owned();
    let count = c.u32_le()? as usize;
    // Each field needs at least 4 bytes: a hostile count cannot make us allocate much.
    let mut fields = Vec::with_capacity(count.min(c.remaining() / 4));
    for _ in 0..count {
        let len = c.u32_le()? as usize;
        let raw = c.take(len)?;
        let text = String::from_utf8_lossy(raw);
        let (name, value) = match text.split_once('=') {
            Some((n, v)) => (n.to_owned(), v.to_owned()),
            None => (text.into_owned(), String::new()),
        };
        fields.push((name, value));
    }
    Ok(Comments { vendor, fields, consumed: c.pos() })
}

/// Like [`parse`], for a comment list that claims more than `data` holds (a known
/// tagger bug: the block header's length is shorter than its content): the fields that
/// fit, and whether some were cut off. A vendor string or count cut short (a bit flip in
/// its length) gives no fields, reported as cut.
///
/// # Errors
/// None today; the `Result` is kept for the readers' `?`.
pub fn parse_lenient(data: &[u8]) -> PluginResult<(Comments, bool)> {
    let mut c = Cursor::new(data, "Vorbis comment block");
    // A vendor string or count that is cut short (a bit flip in its length): no fields,
    // reported as cut; the file is read all the same.
    let nothing = |vendor: String, pos: usize| Ok((Comments { vendor, fields: Vec::new(), consumed: pos }, true));
    let Ok(vendor_len) = c.u32_le() else { return nothing(String::new(), 0) };
    let Ok(vendor) = c.take(vendor_len as usize).map(|v| String::from_utf8_lossy(v).into_owned()) else {
        return nothing(String::new(), 4);
    };
    let Ok(count) = c.u32_le().map(|n| n as usize) else { return nothing(vendor, c.pos()) };
    let mut fields = Vec::with_capacity(count.min(c.remaining() / 4));
    let mut cut = false;
    for _ in 0..count {
        let Ok(len) = c.u32_le() else {
            cut = true;
            break;
        };
        let Ok(raw) = c.take(len as usize) else {
            cut = true;
            break;
        };
        let text = String::from_utf8_lossy(raw);
        let (name, value) = match text.split_once('=') {
            Some((n, v)) => (n.to_owned(), v.to_owned()),
            None => (text.into_owned(), String::new()),
        };
        fields.push((name, value));
    }
    Ok((Comments { vendor, fields, consumed: c.pos() }, cut))
}

/// The canonical template field for a Vorbis comment name (case-insensitive).
///
/// Well-known names map to the shared vocabulary (`TRACKNUMBER` is `track`,
/// `ALBUM ARTIST` is `albumartist`, ...); any other name maps to itself in lower case,
/// so every field is usable in templates.
pub fn canonical_key(field: &str) -> String {
    let upper = field.to_ascii_uppercase();
    let known = match upper.as_str() {
        "TRACKNUMBER" => "track",
        "TRACKTOTAL" | "TOTALTRACKS" => "tracktotal",
        "DISCNUMBER" => "disc",
        "DISCTOTAL" | "TOTALDISCS" => "disctotal",
        "ALBUMARTIST" | "ALBUM ARTIST" | "ALBUM_ARTIST" => "albumartist",
        "DESCRIPTION" => "comment",
        "UNSYNCEDLYRICS" => "lyrics",
        "YEAR" => "date",
        _ => "",
    };
    if known.is_empty() {
        upper.to_ascii_lowercase()
    } else {
        known.to_owned()
    }
}

/// Turns parsed comments into tags; `METADATA_BLOCK_PICTURE` fields are left to the caller
/// (they are pictures) and returned separately as their base64 text.
pub fn to_tags(comments: &Comments) -> (Vec<Tag>, Vec<String>) {
    let mut tags = Vec::with_capacity(comments.fields.len());
    let mut pictures = Vec::new();
    for (name, value) in &comments.fields {
        if name.eq_ignore_ascii_case("METADATA_BLOCK_PICTURE") {
            pictures.push(value.clone());
        } else {
            tags.push(Tag::text(&canonical_key(name), name, value));
        }
    }
    (tags, pictures)
}

/// The Vorbis comment field name for a canonical key (the inverse of [`canonical_key`]
/// for the well-known names; any other key upper-cased).
pub fn native_name(key: &str) -> String {
    match key {
        "track" => "TRACKNUMBER".into(),
        "tracktotal" => "TRACKTOTAL".into(),
        "disc" => "DISCNUMBER".into(),
        "disctotal" => "DISCTOTAL".into(),
        "albumartist" => "ALBUMARTIST".into(),
        "comment" => "COMMENT".into(),
        "lyrics" => "LYRICS".into(),
        other => other.to_ascii_uppercase(),
    }
}

/// A field name is valid Vorbis if it is printable ASCII 0x20-0x7D without `=`.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(|b| (0x20..=0x7D).contains(&b) && b != b'=')
}

/// The `(FIELD, value)` pairs for a list of tags: text tags under their native name
/// when it is a valid Vorbis name, else under the name for their canonical key; binary
/// tags (another format's frames) are skipped, as are tags with neither name.
pub fn fields_from_tags(tags: &[musefs_plugin_api::Tag]) -> Vec<(String, String)> {
    tags.iter()
        .filter(|t| t.data.is_empty())
        .filter_map(|t| {
            let name = if valid_name(&t.native) && !t.native.contains(':') {
                t.native.to_string()
            } else if !t.key.is_empty() {
                native_name(&t.key)
            } else {
                return None;
            };
            valid_name(&name).then(|| (name, t.value.to_string()))
        })
        .collect()
}

/// Serialises a comment block (without any packet-type prefix or framing bit).
pub fn write(vendor: &str, fields: &[(String, String)]) -> Vec<u8> {
    let mut v = Vec::with_capacity(8 + vendor.len() + fields.iter().map(|(n, x)| 5 + n.len() + x.len()).sum::<usize>());
    v.extend((vendor.len() as u32).to_le_bytes());
    v.extend(vendor.as_bytes());
    v.extend((fields.len() as u32).to_le_bytes());
    for (n, x) in fields {
        v.extend(((n.len() + 1 + x.len()) as u32).to_le_bytes());
        v.extend(n.as_bytes());
        v.push(b'=');
        v.extend(x.as_bytes());
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block(vendor: &str, fields: &[&str]) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend((vendor.len() as u32).to_le_bytes());
        v.extend(vendor.as_bytes());
        v.extend((fields.len() as u32).to_le_bytes());
        for f in fields {
            v.extend((f.len() as u32).to_le_bytes());
            v.extend(f.as_bytes());
        }
        v
    }

    #[test]
    fn parses_fields_in_order_with_multi_values() {
        let b = block("ref", &["TITLE=Hello", "ARTIST=A", "ARTIST=B", "Weird=x=y"]);
        let c = parse(&b).unwrap();
        assert_eq!(c.vendor, "ref");
        assert_eq!(c.fields[2], ("ARTIST".to_owned(), "B".to_owned()));
        assert_eq!(c.fields[3], ("Weird".to_owned(), "x=y".to_owned()));
        assert_eq!(c.consumed, b.len());
    }

    #[test]
    fn truncated_block_is_an_error_not_a_panic() {
        let b = block("ref", &["TITLE=Hello"]);
        for cut in 0..b.len() {
            assert!(parse(&b[..cut]).is_err(), "cut at {cut}");
        }
    }

    #[test]
    fn hostile_count_does_not_allocate() {
        let mut b = block("v", &[]);
        let n = b.len();
        b[n - 4..].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(parse(&b).is_err());
    }

    #[test]
    fn write_parses_back_and_names_map_both_ways() {
        let f = vec![("TITLE".to_owned(), "é".to_owned()), ("ARTIST".to_owned(), "".to_owned())];
        let b = write("v", &f);
        let c = parse(&b).unwrap();
        assert_eq!((c.vendor.as_str(), c.fields.clone(), c.consumed), ("v", f, b.len()));
        for k in ["track", "disc", "albumartist", "tracktotal", "title"] {
            assert_eq!(canonical_key(&native_name(k)), k);
        }
        let tags = vec![
            musefs_plugin_api::Tag::text("title", "Title", "x"),
            musefs_plugin_api::Tag::text("track", "", "3"),
            musefs_plugin_api::Tag::text("mood", "TXXX:MOOD", "calm"),
            musefs_plugin_api::Tag::binary("", "PRIV", "1 byte", vec![1]),
        ];
        let got = fields_from_tags(&tags);
        assert_eq!(
            got,
            vec![("Title".into(), "x".into()), ("TRACKNUMBER".into(), "3".into()), ("MOOD".into(), "calm".into())]
        );
    }

    /// Regression (the damaged corpus, `0337_0.flac`): a bit flip in the vendor length
    /// refused a FLAC file ffmpeg plays.
    #[test]
    fn a_damaged_vendor_length_gives_no_fields_not_an_error() {
        let mut b = write("vendor", &[("TITLE".into(), "x".into())]);
        b[3] ^= 0x80;
        let (c, cut) = parse_lenient(&b).unwrap();
        assert!(cut && c.fields.is_empty());
        assert!(parse_lenient(&[1, 0]).unwrap().1);
    }

    #[test]
    fn canonical_names() {
        assert_eq!(canonical_key("TrackNumber"), "track");
        assert_eq!(canonical_key("ALBUM ARTIST"), "albumartist");
        assert_eq!(canonical_key("REPLAYGAIN_TRACK_GAIN"), "replaygain_track_gain");
    }
}

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
    fn canonical_names() {
        assert_eq!(canonical_key("TrackNumber"), "track");
        assert_eq!(canonical_key("ALBUM ARTIST"), "albumartist");
        assert_eq!(canonical_key("REPLAYGAIN_TRACK_GAIN"), "replaygain_track_gain");
    }
}

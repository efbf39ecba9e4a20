//! Tags at the end of an MP3: APEv2, Lyrics3v2 and ID3v1 (in that order before EOF).

use musefs_plugin_api::{PluginResult, Region, Source, Tag};

/// Returns where the audio ends, the trailer tags, and their regions. Canonical keys
/// already present in `leading` (the ID3v2 tag) are not repeated: the trailer values
/// are kept under their native names only.
pub fn read(src: &Source, audio_start: u64, leading: &[Tag]) -> PluginResult<(u64, Vec<Tag>, Vec<Region>)> {
    let len = src.len();
    let mut end = len;
    let mut tags = Vec::new();
    let mut regions = Vec::new();
    // Raw (canonical key, tag) pairs; keys are settled at the end by precedence.
    let mut v1out: Vec<(String, Tag)> = Vec::new();
    let mut ape: Vec<(String, Tag)> = Vec::new();

    // Trailers appear in any order (mutagen, for one, appends APEv2 after ID3v1): peel
    // them off the end until none matches.
    loop {
        let before = end;
        if end >= audio_start + 128 && v1out.is_empty() {
            let v1 = src.read_vec(end - 128, 128)?;
            if musefs_format_util::id3::is_v1(&v1) {
                end -= 128;
                regions.push(Region { kind: "id3v1".into(), offset: end, len: 128 });
                let v1tags = musefs_format_util::id3::v1_fields(&v1);
                for (k, v) in v1tags {
                    if !v.is_empty() {
                        v1out.push((k.to_owned(), Tag::text("", &format!("ID3v1:{k}"), &v)));
                    }
                }
            }
        }

        if end >= audio_start + 15 {
            let l3 = src.read_vec(end - 15, 15)?;
            if &l3[6..] == b"LYRICS200" {
                if let Ok(size) = std::str::from_utf8(&l3[..6]).unwrap_or("x").parse::<u64>() {
                    let total = size + 15;
                    if end >= audio_start + total {
                        end -= total;
                        regions.push(Region { kind: "lyrics3v2".into(), offset: end, len: total });
                    }
                }
            }
        }

        if end >= audio_start + 32 && !regions.iter().any(|r: &Region| r.kind == "apev2") {
            let footer = src.read_vec(end - 32, 32)?;
            if &footer[..8] == b"APETAGEX" {
                let size = u64::from(u32::from_le_bytes([footer[12], footer[13], footer[14], footer[15]]));
                let count = u32::from_le_bytes([footer[16], footer[17], footer[18], footer[19]]);
                let flags = u32::from_le_bytes([footer[20], footer[21], footer[22], footer[23]]);
                let header = if flags & 0x8000_0000 != 0 { 32 } else { 0 };
                if size >= 32 && end >= audio_start + size + header {
                    let start = end - size - header;
                    let items = src.read_vec(end - size, (size - 32) as usize)?;
                    parse_ape_items(&items, count, &mut |key, value, data| {
                        let canon = ape_key(key);
                        match data {
                            Some(bytes) => {
                                ape.push((String::new(), Tag::binary("", &format!("APE:{key}"), "binary item", bytes)))
                            }
                            None => {
                                for v in value.split('\0') {
                                    ape.push((canon.clone(), Tag::text("", &format!("APE:{key}"), v)));
                                }
                            }
                        }
                    });
                    regions.push(Region { kind: "apev2".into(), offset: start, len: end - start });
                    end = start;
                }
            }
        }
        if end == before {
            break;
        }
    }

    // Precedence for canonical keys: ID3v2, then APEv2, then ID3v1. A trailer value for
    // a key a stronger tag already has is kept under its native name only.
    let mut have: std::collections::HashSet<String> =
        leading.iter().filter(|t| !t.key.is_empty()).map(|t| t.key.to_string()).collect();
    for group in [ape, v1out] {
        let mut added = Vec::new();
        for (key, mut tag) in group {
            if !key.is_empty() && !have.contains(&key) {
                tag.key = key.as_str().into();
                added.push(key);
            }
            tags.push(tag);
        }
        have.extend(added);
    }
    Ok((end, tags, regions))
}

/// Receives one APE item: key, text value, binary value.
type ItemSink<'a> = &'a mut dyn FnMut(&str, String, Option<Vec<u8>>);

fn parse_ape_items(data: &[u8], count: u32, f: ItemSink<'_>) {
    let mut pos = 0usize;
    for _ in 0..count {
        if pos + 8 > data.len() {
            return;
        }
        let vlen = u32::from_le_bytes([data[pos], data[pos + 1], data[pos + 2], data[pos + 3]]) as usize;
        let flags = u32::from_le_bytes([data[pos + 4], data[pos + 5], data[pos + 6], data[pos + 7]]);
        pos += 8;
        let Some(klen) = data[pos..].iter().position(|&b| b == 0) else {
            return;
        };
        let key = String::from_utf8_lossy(&data[pos..pos + klen]).into_owned();
        pos += klen + 1;
        let Some(value) = data.get(pos..pos.saturating_add(vlen)) else {
            return;
        };
        pos += vlen;
        if (flags >> 1) & 3 == 0 {
            f(&key, String::from_utf8_lossy(value).into_owned(), None);
        } else {
            f(&key, String::new(), Some(value.to_vec()));
        }
    }
}

fn ape_key(key: &str) -> String {
    match key.to_ascii_lowercase().as_str() {
        "album artist" | "albumartist" => "albumartist".to_owned(),
        "year" => "date".to_owned(),
        "track" => "track".to_owned(),
        "disc" => "disc".to_owned(),
        other => other.replace(' ', "_"),
    }
}

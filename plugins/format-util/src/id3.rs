//! ID3 primitives shared by the format plugins: the ID3v2 header (an MP3's leading
//! tag, and the one some taggers glue in front of a FLAC file) and the ID3v1 trailer
//! (128 bytes at the end of MP3 and FLAC files), with the ID3v1 genre list.

/// Synchsafe 28-bit integer.
pub fn synchsafe(b: &[u8]) -> u32 {
    (u32::from(b[0] & 0x7F) << 21)
        | (u32::from(b[1] & 0x7F) << 14)
        | (u32::from(b[2] & 0x7F) << 7)
        | u32::from(b[3] & 0x7F)
}

/// The header's claimed total size (10-byte header + body + optional footer), if `head`
/// starts with a plausible ID3v2 header.
pub fn header_len(head: &[u8]) -> Option<(u8, u64)> {
    if head.len() < 10 || &head[..3] != b"ID3" || !(2..=4).contains(&head[3]) || head[4] == 0xFF {
        return None;
    }
    if head[6..10].iter().any(|b| b & 0x80 != 0) {
        return None;
    }
    let footer = if head[3] == 4 && head[5] & 0x10 != 0 { 10 } else { 0 };
    Some((head[3], 10 + u64::from(synchsafe(&head[6..10])) + footer))
}

/// The total size of an ID3v2 tag at the start of `head` whatever its version (header,
/// body and footer), for skipping one: `None` if `head` does not start with a plausible
/// ID3v2 header.
pub fn skip_len(head: &[u8]) -> Option<u64> {
    if head.len() < 10 || &head[..3] != b"ID3" || head[3] == 0xFF || head[4] == 0xFF {
        return None;
    }
    if head[6..10].iter().any(|b| b & 0x80 != 0) {
        return None;
    }
    let footer = if head[3] == 4 && head[5] & 0x10 != 0 { 10 } else { 0 };
    Some(10 + u64::from(synchsafe(&head[6..10])) + footer)
}

/// Whether `tail` (the last 128 bytes of a file) is an ID3v1 tag.
pub fn is_v1(tail: &[u8]) -> bool {
    tail.len() == 128 && &tail[..3] == b"TAG"
}

/// The fields of a 128-byte ID3v1 (or v1.1) tag as `(canonical key, value)`, empty
/// values left out; Latin-1 text, trailing NULs and spaces trimmed.
pub fn v1_fields(v1: &[u8]) -> Vec<(&'static str, String)> {
    if !is_v1(v1) {
        return Vec::new();
    }
    let field = |a: usize, b: usize| -> String {
        let s: String = v1[a..b].iter().take_while(|&&c| c != 0).map(|&c| char::from(c)).collect();
        s.trim_end().to_owned()
    };
    let mut out =
        vec![("title", field(3, 33)), ("artist", field(33, 63)), ("album", field(63, 93)), ("date", field(93, 97))];
    if v1[125] == 0 && v1[126] != 0 {
        out.push(("comment", field(97, 125)));
        out.push(("track", v1[126].to_string()));
    } else {
        out.push(("comment", field(97, 127)));
    }
    if let Some(g) = GENRES.get(v1[127] as usize) {
        out.push(("genre", (*g).to_owned()));
    }
    out.retain(|(_, v)| !v.is_empty());
    out
}

/// ID3v1 genre names (the 80 of the original list).
pub const GENRES: [&str; 80] = [
    "Blues",
    "Classic Rock",
    "Country",
    "Dance",
    "Disco",
    "Funk",
    "Grunge",
    "Hip-Hop",
    "Jazz",
    "Metal",
    "New Age",
    "Oldies",
    "Other",
    "Pop",
    "R&B",
    "Rap",
    "Reggae",
    "Rock",
    "Techno",
    "Industrial",
    "Alternative",
    "Ska",
    "Death Metal",
    "Pranks",
    "Soundtrack",
    "Euro-Techno",
    "Ambient",
    "Trip-Hop",
    "Vocal",
    "Jazz+Funk",
    "Fusion",
    "Trance",
    "Classical",
    "Instrumental",
    "Acid",
    "House",
    "Game",
    "Sound Clip",
    "Gospel",
    "Noise",
    "AlternRock",
    "Bass",
    "Soul",
    "Punk",
    "Space",
    "Meditative",
    "Instrumental Pop",
    "Instrumental Rock",
    "Ethnic",
    "Gothic",
    "Darkwave",
    "Techno-Industrial",
    "Electronic",
    "Pop-Folk",
    "Eurodance",
    "Dream",
    "Southern Rock",
    "Comedy",
    "Cult",
    "Gangsta",
    "Top 40",
    "Christian Rap",
    "Pop/Funk",
    "Jungle",
    "Native American",
    "Cabaret",
    "New Wave",
    "Psychadelic",
    "Rave",
    "Showtunes",
    "Trailer",
    "Lo-Fi",
    "Tribal",
    "Acid Punk",
    "Acid Jazz",
    "Polka",
    "Retro",
    "Musical",
    "Rock & Roll",
    "Hard Rock",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v2_headers_sizes_and_versions() {
        let mut h = b"ID3\x03\x00\x00\x00\x00\x02\x01".to_vec();
        assert_eq!(header_len(&h), Some((3, 10 + 257)));
        assert_eq!(skip_len(&h), Some(10 + 257));
        h[3] = 5; // an unknown version: skipped, not parsed
        assert_eq!((header_len(&h), skip_len(&h)), (None, Some(267)));
        h[6] = 0x80; // not synchsafe
        assert_eq!(skip_len(&h), None);
        assert_eq!(skip_len(b"ID3"), None);
    }

    #[test]
    fn v1_and_v1_1_fields() {
        let mut v1 = vec![0u8; 128];
        v1[..3].copy_from_slice(b"TAG");
        v1[3..8].copy_from_slice(b"Title");
        v1[33..36].copy_from_slice(b"Art");
        v1[126] = 7;
        v1[127] = 17;
        let f = v1_fields(&v1);
        assert_eq!(
            f,
            [
                ("title", "Title".to_owned()),
                ("artist", "Art".to_owned()),
                ("track", "7".to_owned()),
                ("genre", "Rock".to_owned())
            ]
        );
        assert!(v1_fields(&v1[..100]).is_empty());
    }
}

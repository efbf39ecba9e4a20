//! Free-form field names shared across tag formats.
//!
//! Vorbis comments name every field (`MUSICBRAINZ_ALBUMID`); ID3v2 carries the same
//! fields as `TXXX` frames and MP4 as `----:com.apple.iTunes:NAME` atoms, both under the
//! descriptions MusicBrainz Picard writes (`MusicBrainz Album Id`). [`freeform_key`]
//! maps such a description to the canonical key the Vorbis name gives, so
//! `$musicbrainz_albumid` is one field whatever the file's format, and
//! [`freeform_name`] is the way back when a tag is written.

/// Canonical key and the description Picard writes in ID3 `TXXX` and MP4 freeform atoms.
const PICARD: [(&str, &str); 22] = [
    ("musicbrainz_albumid", "MusicBrainz Album Id"),
    ("musicbrainz_artistid", "MusicBrainz Artist Id"),
    ("musicbrainz_albumartistid", "MusicBrainz Album Artist Id"),
    ("musicbrainz_releasegroupid", "MusicBrainz Release Group Id"),
    ("musicbrainz_releasetrackid", "MusicBrainz Release Track Id"),
    ("musicbrainz_trackid", "MusicBrainz Track Id"),
    ("musicbrainz_workid", "MusicBrainz Work Id"),
    ("musicbrainz_discid", "MusicBrainz Disc Id"),
    ("musicbrainz_originalalbumid", "MusicBrainz Original Album Id"),
    ("musicbrainz_originalartistid", "MusicBrainz Original Artist Id"),
    ("musicbrainz_trmid", "MusicBrainz TRM Id"),
    ("releasestatus", "MusicBrainz Album Status"),
    ("releasetype", "MusicBrainz Album Type"),
    ("releasecountry", "MusicBrainz Album Release Country"),
    ("acoustid_id", "Acoustid Id"),
    ("acoustid_fingerprint", "Acoustid Fingerprint"),
    ("musicip_puid", "MusicIP PUID"),
    ("asin", "ASIN"),
    ("barcode", "BARCODE"),
    ("catalognumber", "CATALOGNUMBER"),
    ("script", "SCRIPT"),
    ("albumartist", "ALBUM ARTIST"),
];

/// The canonical key of a free-form field description (ID3 `TXXX`, MP4 `----` name):
/// Picard's descriptions map to the Vorbis names' keys, anything else to itself in lower
/// case with spaces as `_`.
pub fn freeform_key(desc: &str) -> String {
    let d = desc.trim();
    if d.eq_ignore_ascii_case("ALBUMARTIST") {
        return "albumartist".into();
    }
    if let Some((key, _)) = PICARD.iter().find(|(_, name)| name.eq_ignore_ascii_case(d)) {
        return (*key).to_owned();
    }
    d.to_lowercase().replace(' ', "_")
}

/// The free-form description to write for a canonical key: Picard's for the keys it
/// names, the key upper-cased otherwise.
pub fn freeform_name(key: &str) -> String {
    match PICARD.iter().find(|(k, _)| *k == key) {
        Some((_, name)) => (*name).to_owned(),
        None => key.to_uppercase(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picard_names_map_both_ways() {
        assert_eq!(freeform_key("MusicBrainz Album Id"), "musicbrainz_albumid");
        assert_eq!(freeform_key("MUSICBRAINZ ALBUM ID"), "musicbrainz_albumid");
        assert_eq!(freeform_key("Acoustid Id"), "acoustid_id");
        assert_eq!(freeform_key("My Field"), "my_field");
        assert_eq!(freeform_key("REPLAYGAIN_TRACK_GAIN"), "replaygain_track_gain");
        assert_eq!(freeform_name("musicbrainz_releasegroupid"), "MusicBrainz Release Group Id");
        assert_eq!(freeform_name("replaygain_track_gain"), "REPLAYGAIN_TRACK_GAIN");
        for (k, n) in PICARD {
            assert_eq!(freeform_key(n), k);
        }
    }
}

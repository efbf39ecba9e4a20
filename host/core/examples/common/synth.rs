//! A synthetic catalog for benchmarks: `n` tracks in albums of 10, 100 albums per
//! artist, eight text tags each, every other album with a front cover.

use musefs_core::catalog::Catalog;
use musefs_plugin_api::{AudioProps, EntryKind, Picture, Stat, Tag, TrackInfo};

/// Writes `n` synthetic tracks of origin `origin` (kind `local`) into `cat`.
pub fn fill(cat: &mut Catalog, origin: &str, n: usize) {
    let origin = cat.origin_id(origin, "local").unwrap();
    let cover = Picture {
        picture_type: 3,
        mime: "image/png".into(),
        description: "".into(),
        width: 1,
        height: 1,
        depth: 24,
        colors: 0,
        data: vec![0x89, b'P', b'N', b'G', 1, 2, 3, 4].into(),
    };
    let mut batch = Vec::with_capacity(1000);
    for i in 0..n {
        let (artist, album, track) = (i / 1000, (i / 10) % 100, i % 10 + 1);
        let tags = vec![
            Tag::text("albumartist", "ALBUMARTIST", &format!("Artist {artist}")),
            Tag::text("artist", "ARTIST", &format!("Artist {artist}")),
            Tag::text("album", "ALBUM", &format!("Album {album}")),
            Tag::text("title", "TITLE", &format!("Title {i}")),
            Tag::text("track", "TRACKNUMBER", &track.to_string()),
            Tag::text("date", "DATE", "2001"),
            Tag::text("genre", "GENRE", "Rock"),
            Tag::text("comment", "COMMENT", "a comment"),
        ];
        let pictures = if album % 2 == 0 { vec![cover.clone()] } else { Vec::new() };
        let info = TrackInfo {
            format: "flac".into(),
            extension: "flac".into(),
            tags: tags.into(),
            pictures: pictures.into(),
            props: AudioProps::default(),
            audio_offset: 100,
            audio_len: 1000,
            regions: Vec::new().into(),
            extra: Vec::new().into(),
        };
        let stat = Stat { kind: EntryKind::FILE, size: 1100, mtime_ns: Some(1).into(), etag: None.into() };
        batch.push((format!("a{artist}/b{album}/{i}.flac"), stat, "flac".to_owned(), info));
        if batch.len() == 1000 {
            cat.write_batch(origin, &batch).unwrap();
            batch.clear();
        }
    }
    cat.write_batch(origin, &batch).unwrap();
}

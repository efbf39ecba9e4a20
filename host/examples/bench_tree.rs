//! Benchmark: build the tree from a synthetic catalog of N tracks.
//! Usage: cargo run --release -p musefs --example bench_tree -- 100000

use std::time::Instant;

use musefs::catalog::Catalog;
use musefs::manifest::View;
use musefs::template::{RenderOptions, Template};
use musefs::tree::Tree;
use musefs_plugin_api::{AudioProps, EntryKind, Stat, Tag, TrackInfo};

fn main() {
    let n: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(100_000);
    let dir = tempfile::tempdir().unwrap();
    let mut cat = Catalog::open(&dir.path().join("catalog.db")).unwrap();
    let origin = cat.origin_id("main", "local").unwrap();
    let t0 = Instant::now();
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
        let info = TrackInfo {
            format: "flac".into(),
            extension: "flac".into(),
            tags: tags.into(),
            pictures: Vec::new().into(),
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
    eprintln!("synthetic catalog of {n} tracks written in {:.2?}", t0.elapsed());
    let views =
        vec![View { name: None, template: Template::parse("$albumartist/$album/[$disc-]$track $title").unwrap() }];
    let mut keys = views[0].template.fields();
    keys.sort();
    for round in 0..3 {
        let t = Instant::now();
        let files = cat.tree_files(&keys).unwrap();
        let load = t.elapsed();
        let tree = Tree::build(&files, &views, &RenderOptions::default(), Some("cover.jpg"));
        let total = t.elapsed();
        println!(
            "tree_build tracks={n} round={round} load_ms={:.1} build_ms={:.1} total_ms={:.1} nodes={}",
            load.as_secs_f64() * 1e3,
            (total - load).as_secs_f64() * 1e3,
            total.as_secs_f64() * 1e3,
            tree.len()
        );
    }
}

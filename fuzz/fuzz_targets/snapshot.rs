//! Fuzzes the tree snapshot loader. The input is the snapshot body after its header
//! (which the target writes for a fixed catalog id and configuration key) and gets a
//! valid checksum, so the node records themselves are fuzzed. A snapshot either loads
//! or is refused, never panics; a loaded tree answers lookups of every path it lists,
//! takes an update, and saves to a snapshot that loads back with the same paths.
#![no_main]

use musefs_core::catalog::{FileRow, TreeFile};
use musefs_core::manifest::{View, DEFAULT_TEMPLATE};
use musefs_core::template::{RenderOptions, Template};
use musefs_core::tree::Tree;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let views = vec![View { name: None, template: Template::parse(DEFAULT_TEMPLATE).expect("the default parses") }];
    let opts = RenderOptions::default();
    let key = [7u8; 32];
    let mut b = Vec::with_capacity(data.len() + 96);
    b.extend_from_slice(b"MUSEFSTS");
    b.extend_from_slice(&musefs_core::tree::snapshot::VERSION.to_le_bytes());
    b.extend_from_slice(&3u16.to_le_bytes());
    b.extend_from_slice(b"cid");
    b.extend_from_slice(&key);
    b.extend_from_slice(data);
    let sum = blake3::hash(&b);
    b.extend_from_slice(sum.as_bytes());
    let _ = Tree::from_snapshot(data, "cid", &key, &views, &opts, None);
    let Ok((mut tree, position)) = Tree::from_snapshot(&b, "cid", &key, &views, &opts, Some("cover.jpg")) else { return };
    let paths = tree.paths();
    for (p, _) in &paths {
        assert!(tree.resolve(p).is_some(), "a listed path resolves: {p:?}");
    }
    let saved = tree.to_snapshot("cid", &key, position);
    let (back, _) = Tree::from_snapshot(&saved, "cid", &key, &views, &opts, Some("cover.jpg")).expect("a saved tree loads");
    assert_eq!(back.paths(), paths);
    let file = FileRow {
        id: 1,
        origin: "o".into(),
        path: "a/b.flac".into(),
        size: 1,
        mtime_ns: None,
        etag: None,
        plugin: "flac".into(),
        extension: "flac".into(),
        gen: 2,
        audio_offset: 0,
        placed_ns: 5,
        edited_ns: 0,
    };
    let _ = tree.upsert_file(&TreeFile { file, tags: vec![("title".into(), "t".into())], has_picture: true });
});

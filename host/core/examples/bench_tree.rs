//! Benchmark: build the tree from a synthetic catalog of N tracks.
//! Usage: cargo run --release -p musefs --example bench_tree -- 100000

use std::time::Instant;

#[path = "common/synth.rs"]
mod synth;

use musefs_core::catalog::Catalog;
use musefs_core::manifest::View;
use musefs_core::template::{RenderOptions, Template};
use musefs_core::tree::Tree;

fn main() {
    let n: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(100_000);
    let dir = tempfile::tempdir().unwrap();
    let mut cat = Catalog::open(&dir.path().join("catalog.db")).unwrap();
    let t0 = Instant::now();
    synth::fill(&mut cat, "main", n);
    eprintln!("synthetic catalog of {n} tracks written in {:.2?}", t0.elapsed());
    let views =
        vec![View { name: None, template: Template::parse("$albumartist/$album/[$disc-]$track $title").unwrap() }];
    let mut keys = views[0].template.fields();
    keys.sort();
    let mut last = None;
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
        last = Some(tree);
    }
    // The snapshot a remount loads instead of rendering.
    let tree = last.expect("three rounds");
    let key = musefs_core::tree::snapshot::config_key(&views, &RenderOptions::default(), Some("cover.jpg"), &keys);
    let id = cat.catalog_id().unwrap();
    let path = dir.path().join("tree.snapshot");
    for round in 0..3 {
        let t = Instant::now();
        let bytes = tree.to_snapshot(&id, &key, 1);
        musefs_core::tree::snapshot::write(&path, &bytes).unwrap();
        let save = t.elapsed();
        let t = Instant::now();
        let bytes = musefs_core::tree::snapshot::read(&path).unwrap();
        let (back, _) =
            Tree::from_snapshot(&bytes, &id, &key, &views, &RenderOptions::default(), Some("cover.jpg")).unwrap();
        let load = t.elapsed();
        assert_eq!(back.len(), tree.len());
        println!(
            "tree_snapshot tracks={n} round={round} bytes={} save_ms={:.1} load_ms={:.1}",
            bytes.len(),
            save.as_secs_f64() * 1e3,
            load.as_secs_f64() * 1e3
        );
    }
}

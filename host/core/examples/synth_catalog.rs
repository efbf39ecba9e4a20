//! Writes a synthetic catalog (for the mount-time benchmark in `bench/state.sh`).
//! Usage: synth_catalog STATE_DIR N [ORIGIN]   (origin name default `bench`)

use std::time::Instant;

#[path = "common/synth.rs"]
mod synth;

fn main() {
    let mut args = std::env::args().skip(1);
    let (Some(dir), Some(n)) = (args.next(), args.next().and_then(|n| n.parse::<usize>().ok())) else {
        eprintln!("usage: synth_catalog STATE_DIR N [ORIGIN]");
        std::process::exit(2);
    };
    let origin = args.next().unwrap_or_else(|| "bench".into());
    let t = Instant::now();
    let mut cat = musefs_core::catalog::Catalog::open(&std::path::Path::new(&dir).join("catalog.db")).unwrap();
    synth::fill(&mut cat, &origin, n);
    cat.checkpoint().unwrap();
    eprintln!("synthetic catalog of {n} tracks written in {:.2?}", t.elapsed());
}

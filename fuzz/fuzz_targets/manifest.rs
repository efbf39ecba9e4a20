//! Fuzzes the manifest loader (TOML through the `config` crate, then validation): any
//! bytes load or give a `ManifestError`, never a panic.
#![no_main]

use std::sync::OnceLock;

use musefs_core::manifest::Manifest;

static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let dir = DIR.get_or_init(|| tempfile::tempdir().expect("a temporary directory"));
    let path = dir.path().join("musefs.toml");
    std::fs::write(&path, data).expect("write the manifest");
    if let Ok(m) = Manifest::load(&path) {
        assert!(!m.origins.is_empty(), "a manifest that loads has an origin");
        let _ = m.catalog_path();
    }
});

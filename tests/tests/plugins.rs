//! Plugin loading: every bundled plugin loads through the ABI; a file that is not a
//! plugin and a duplicate name are reported by path while the others still load.

use std::fs;

use musefs_core::plugins::Plugins;
use musefs_tests::{musefs, target_dir};

#[test]
fn bundled_plugins_load_and_list() {
    let out = musefs(&["plugins", "list"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    for name in ["local", "flac", "mp3", "ogg"] {
        assert!(text.lines().any(|l| l.starts_with(name)), "{name} missing: {text}");
    }
}

#[test]
fn bad_files_are_reported_and_the_rest_still_load() {
    let t = tempfile::tempdir().unwrap();
    let flac = target_dir().join("libmusefs_format_flac.so");
    fs::copy(&flac, t.path().join("a_flac.so")).unwrap();
    fs::copy(&flac, t.path().join("b_flac_again.so")).unwrap();
    fs::write(t.path().join("garbage.so"), b"not an ELF file").unwrap();
    // A real shared library that is not a musefs plugin.
    let libc_so = ["/lib/x86_64-linux-gnu/libz.so.1", "/usr/lib/x86_64-linux-gnu/libz.so.1"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists());
    if let Some(p) = libc_so {
        fs::copy(p, t.path().join("libz.so")).unwrap();
    }
    let p = Plugins::load_dir(t.path()).unwrap();
    assert_eq!(p.loaded.iter().map(|l| l.name.as_str()).collect::<Vec<_>>(), vec!["flac"]);
    let errs: Vec<String> = p.errors.iter().map(ToString::to_string).collect();
    assert!(errs.iter().any(|e| e.contains("b_flac_again.so") && e.contains("already loaded")), "{errs:?}");
    assert!(errs.iter().any(|e| e.contains("garbage.so")), "{errs:?}");
    if libc_so.is_some() {
        assert!(errs.iter().any(|e| e.contains("libz.so") && e.contains("not a musefs plugin")), "{errs:?}");
    }
    let e = p.new_origin("local", "{}").err().expect("no origin plugin").to_string();
    assert!(e.contains("no origin plugin named `local`") && e.contains("garbage.so"), "{e}");
    let out = musefs(&["plugins", "list", "--plugin-dir", t.path().to_str().unwrap()]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && text.contains("error: plugin") && text.contains("garbage.so"), "{text}");
}

/// Builds the fixture plugin (`layout`: with the layout feature) and returns its path.
fn build_bad_plugin(layout: bool) -> std::path::PathBuf {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let target = root.join("../target/fixtures");
    let mut cmd = std::process::Command::new(env!("CARGO"));
    cmd.arg("build").arg("--quiet").arg("--manifest-path").arg(root.join("fixtures/bad-plugin/Cargo.toml"));
    cmd.arg("--target-dir").arg(&target);
    if layout {
        cmd.args(["--features", "layout"]);
    }
    let out = cmd.output().expect("cargo");
    assert!(out.status.success(), "building the fixture failed: {}", String::from_utf8_lossy(&out.stderr));
    let built = target.join("debug/libmusefs_bad_plugin.so");
    let keep = target.join(if layout { "layout.so" } else { "generation.so" });
    fs::copy(built, &keep).unwrap();
    keep
}

#[test]
fn incompatible_abi_generation_and_layout_are_refused_by_name() {
    let generation = build_bad_plugin(false);
    let layout = build_bad_plugin(true);
    let t = tempfile::tempdir().unwrap();
    fs::copy(&generation, t.path().join("future_gen.so")).unwrap();
    fs::copy(&layout, t.path().join("skewed_layout.so")).unwrap();
    fs::copy(target_dir().join("libmusefs_format_ogg.so"), t.path().join("ogg.so")).unwrap();
    let p = Plugins::load_dir(t.path()).unwrap();
    assert_eq!(p.loaded.iter().map(|l| l.name.as_str()).collect::<Vec<_>>(), vec!["ogg"], "the good one still loads");
    let errs: Vec<String> = p.errors.iter().map(ToString::to_string).collect();
    let gen_err = errs.iter().find(|e| e.contains("future_gen.so")).unwrap_or_else(|| panic!("{errs:?}"));
    assert!(gen_err.contains("ABI version 2") && gen_err.contains("version 1"), "{gen_err}");
    let layout_err = errs.iter().find(|e| e.contains("skewed_layout.so")).unwrap_or_else(|| panic!("{errs:?}"));
    assert!(
        layout_err.contains("incompatible") && layout_err.contains("layout mismatch") && layout_err.len() < 600,
        "{layout_err}"
    );
}

//! Plugin loading: every bundled plugin loads through the ABI; a file that is not a
//! plugin and a duplicate name are reported by path while the others still load.

use std::fs;

use musefs::plugins::Plugins;
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

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
    // Exit 2: some plugins loaded, some did not.
    assert!(out.status.code() == Some(2) && text.contains("error: plugin") && text.contains("garbage.so"), "{text}");
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
    assert!(gen_err.contains("ABI version 3") && gen_err.contains("version 2"), "{gen_err}");
    let layout_err = errs.iter().find(|e| e.contains("skewed_layout.so")).unwrap_or_else(|| panic!("{errs:?}"));
    assert!(
        layout_err.contains("incompatible") && layout_err.contains("layout mismatch") && layout_err.len() < 600,
        "{layout_err}"
    );
}

/// A copy of `plugin-api` as it was at ABI 2.`minor`: every `// abi-since 2.X {...}`
/// fence of a later minor removed, and every line carrying a `// abi-2.MINOR: REPLACEMENT`
/// marker for `minor` replaced (a line may carry one marker per older minor; the
/// markers of other minors are dropped). Returns its folder.
fn plugin_api_as_of(out: &std::path::Path, minor: u32) -> std::path::PathBuf {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../plugin-api");
    let dir = out.join(format!("plugin-api-2.{minor}"));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(dir.join("src")).unwrap();
    let fence = |t: &str, end: &str| {
        t.strip_prefix("// abi-since 2.").and_then(|r| r.strip_suffix(end)).and_then(|m| m.parse::<u32>().ok())
    };
    for e in fs::read_dir(root.join("src")).unwrap() {
        let p = e.unwrap().path();
        let text = fs::read_to_string(&p).unwrap();
        let mut kept = Vec::new();
        let mut skipping: Option<u32> = None;
        for line in text.lines() {
            let t = line.trim();
            if let Some(m) = fence(t, " {") {
                if skipping.is_none() && m > minor {
                    skipping = Some(m);
                }
            } else if let Some(m) = fence(t, " }") {
                if skipping == Some(m) {
                    skipping = None;
                }
            } else if skipping.is_some() {
            } else if let Some((code, markers)) = line.split_once("// abi-2.") {
                // `code // abi-2.1: r1 // abi-2.0: r0`
                let mut chosen = None;
                for m in std::iter::once(markers).chain(markers.split("// abi-2.").skip(1)) {
                    if let Some((v, repl)) = m.split_once(':') {
                        if v.trim().parse::<u32>().ok() == Some(minor) {
                            chosen = Some(repl.split("// abi-2.").next().unwrap().trim().to_owned());
                        }
                    }
                }
                let line = chosen.unwrap_or_else(|| code.trim_end().to_owned());
                if !line.trim().is_empty() {
                    kept.push(line);
                }
            } else {
                kept.push(line.to_owned());
            }
        }
        assert!(skipping.is_none(), "{}: an unclosed abi-since fence", p.display());
        fs::write(dir.join("src").join(p.file_name().unwrap()), kept.join("\n") + "\n").unwrap();
    }
    fs::write(
        dir.join("Cargo.toml"),
        "[package]\nname = \"musefs-plugin-api\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\n\
         [dependencies]\nabi_stable = { version = \"0.11.3\", default-features = false }\n\n\
         [features]\ntesting = []\n\n[workspace]\n",
    )
    .unwrap();
    dir
}

/// Builds tests/fixtures/old-minor-plugin against the copy of ABI 2.`minor`; returns
/// the library.
fn build_old_minor_plugin(minor: u32) -> std::path::PathBuf {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = root.join("../target/fixtures");
    let api = plugin_api_as_of(&out, minor);
    let root_rs = fs::read_to_string(api.join("src/root.rs")).unwrap();
    assert!(root_rs.contains(&format!("\"2.{minor}.0\"")), "the copy is not of ABI 2.{minor}:\n{root_rs}");
    assert_eq!(root_rs.contains("pub set_host"), minor >= 1, "the copy's root module");
    let format_rs = fs::read_to_string(api.join("src/format.rs")).unwrap();
    assert!(!format_rs.contains("fn same_audio"), "the copy still has 2.2 items");
    let name = format!("musefs-old-minor-plugin-2-{minor}");
    let krate = out.join(&name);
    fs::create_dir_all(&krate).unwrap();
    fs::write(
        krate.join("Cargo.toml"),
        format!(
            "[package]\nname = \"{name}\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\n\
             [lib]\ncrate-type = [\"cdylib\"]\npath = {:?}\n\n\
             [dependencies]\nmusefs-plugin-api = {{ path = {:?}, features = [\"testing\"] }}\n\
             abi_stable = {{ version = \"0.11.3\", default-features = false }}\n\n\
             [profile.dev.package.\"*\"]\nopt-level = 1\n\n[workspace]\n",
            root.join("fixtures/old-minor-plugin/src/lib.rs").canonicalize().unwrap().display().to_string(),
            api.canonicalize().unwrap().display().to_string()
        ),
    )
    .unwrap();
    // One target folder for every minor: abi_stable is built once.
    let out_dir = out.join("old-minor-target");
    let built = std::process::Command::new(env!("CARGO"))
        .args(["build", "--quiet", "--manifest-path"])
        .arg(krate.join("Cargo.toml"))
        .arg("--target-dir")
        .arg(&out_dir)
        .output()
        .expect("cargo");
    assert!(
        built.status.success(),
        "building the 2.{minor} fixture failed: {}",
        String::from_utf8_lossy(&built.stderr)
    );
    out_dir.join(format!("debug/lib{}.so", name.replace('-', "_")))
}

/// A plugin built for ABI 2.`minor` loads (its missing features named), serves in
/// synthesis mode and takes an edit.
fn an_older_minor_plugin_loads_and_serves(minor: u32) {
    use musefs_plugin_api::testing::toy_file;
    let lib = build_old_minor_plugin(minor);
    let t = tempfile::tempdir().unwrap();
    let plugins = t.path().join("plugins");
    fs::create_dir_all(&plugins).unwrap();
    fs::copy(&lib, plugins.join("libmusefs_toy.so")).unwrap();
    fs::copy(target_dir().join("libmusefs_origin_local.so"), plugins.join("libmusefs_origin_local.so")).unwrap();
    fs::copy(target_dir().join("libmusefs_format_flac.so"), plugins.join("libmusefs_format_flac.so")).unwrap();

    // The loader: it loads, as 2.`minor`, and what it lacks is named.
    let p = Plugins::load_dir(&plugins).unwrap();
    assert!(p.errors.is_empty(), "{:?}", p.errors.iter().map(ToString::to_string).collect::<Vec<_>>());
    let toy = p.loaded.iter().find(|l| l.name == "toy").expect("the older plugin loads");
    assert_eq!((toy.abi_version, toy.abi_minor), (2, minor));
    let lacks = toy.unsupported();
    assert_eq!(lacks.iter().any(|u| u.contains("options")), minor == 0, "{lacks:?}");
    assert!(lacks.iter().any(|u| u.contains("audio comparison")), "{lacks:?}");
    let flac = p.loaded.iter().find(|l| l.name == "flac").unwrap();
    assert_eq!((flac.abi_minor, flac.unsupported().len()), (musefs_plugin_api::ABI_MINOR, 0));
    let out = musefs(&["plugins", "list", "--plugin-dir", plugins.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.lines().any(|l| l.starts_with("toy") && l.contains(&format!(" 2.{minor} "))), "{text}");
    assert!(text.contains(&format!("note: toy was built for plugin ABI 2.{minor}; unsupported:")), "{text}");
    assert!(!text.contains("note: flac"), "{text}");

    // It works: scanned, mounted, served in synthesis mode, edited.
    let music = t.path().join("music");
    fs::create_dir_all(&music).unwrap();
    let audio: Vec<u8> = (0..50_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let original = toy_file(&[("TITLE", "Old Song"), ("ARTIST", "Old Band")], &audio);
    fs::write(music.join("a.toy"), &original).unwrap();
    let options = if minor == 0 { "[format.toy]\nanything = 1\n" } else { "" };
    let manifest = musefs_tests::write_manifest(
        t.path(),
        &music,
        &format!(
            "mode = \"synthesis\"\nrefresh_interval_ms = 100\nplugin_dir = {:?}\ntemplate = \"$artist/$title\"\n{options}",
            plugins.display().to_string()
        ),
    );
    let bin = musefs_tests::musefs_bin();
    let scan = std::process::Command::new(&bin).args(["scan", "--manifest"]).arg(&manifest).output().unwrap();
    let scan_text = format!("{}{}", String::from_utf8_lossy(&scan.stdout), String::from_utf8_lossy(&scan.stderr));
    assert!(scan.status.success() && scan_text.contains("added 1 /"), "{scan_text}");
    if minor == 0 {
        assert!(scan_text.contains("plugin toy (ABI 2.0) cannot check its [format.toy] options"), "{scan_text}");
    }
    let mnt = t.path().join("mnt");
    let m = musefs_tests::Mount::start(&manifest, &mnt, &[]);
    let served = mnt.join("Old Band/Old Song.toy");
    assert!(musefs_tests::wait_for(10, || served.exists()), "{}", m.log_text());
    assert_eq!(fs::read(&served).unwrap(), original, "synthesis with unedited tags gives the original bytes");
    let edit = std::process::Command::new(&bin)
        .args(["tag", "set", "--manifest"])
        .arg(&manifest)
        .args(["Old Band/Old Song.toy", "title=New Song"])
        .output()
        .unwrap();
    assert!(edit.status.success(), "{}", String::from_utf8_lossy(&edit.stderr));
    let edited = mnt.join("Old Band/New Song.toy");
    assert!(musefs_tests::wait_for(10, || edited.exists()), "{}", m.log_text());
    let bytes = fs::read(&edited).unwrap();
    assert_eq!(bytes, toy_file(&[("TITLE", "New Song"), ("ARTIST", "Old Band")], &audio));
    assert_eq!(m.stop(), Some(0));
}

#[test]
fn a_plugin_built_for_abi_2_0_loads_and_serves() {
    an_older_minor_plugin_loads_and_serves(0);
}

#[test]
fn a_plugin_built_for_abi_2_1_loads_and_serves() {
    an_older_minor_plugin_loads_and_serves(1);
}

#[test]
fn format_options_are_checked_by_their_plugin_when_the_manifest_loads() {
    let t = tempfile::tempdir().unwrap();
    let music = t.path().join("music");
    fs::create_dir_all(&music).unwrap();
    let bin = musefs_tests::musefs_bin();
    let scan = |extra: &str| {
        let dir = tempfile::tempdir_in(t.path()).unwrap().keep();
        let m = musefs_tests::write_manifest(&dir, &music, extra);
        let out = std::process::Command::new(&bin).args(["scan", "--manifest"]).arg(&m).output().unwrap();
        (out.status.success(), String::from_utf8_lossy(&out.stderr).into_owned())
    };
    let (ok, err) = scan("[format.flac]\nmin_paddin = 10\n");
    assert!(!ok && err.contains("[format.flac]") && err.contains("min_paddin"), "{err}");
    let (ok, err) = scan("[format.mp3]\nid3v2_version = \"2.5\"\n");
    assert!(!ok && err.contains("id3v2_version") && err.contains("2.3, 2.4"), "{err}");
    let (ok, err) = scan("[format.nosuch]\nx = 1\n");
    assert!(!ok && err.contains("no format plugin named `nosuch`"), "{err}");
    let (ok, err) = scan("[format.flac]\nmin_padding = 4096\n[format.ogg]\n");
    assert!(ok, "valid options (and an empty section for a format without options) pass: {err}");
}

#[test]
fn plugin_log_lines_reach_the_hosts_log_with_the_plugins_name() {
    // The local origin meets a symlink loop while listing: it logs through the host
    // (since plugin ABI 2.1), not to stderr on its own.
    let t = tempfile::tempdir().unwrap();
    let music = t.path().join("music");
    fs::create_dir_all(music.join("a")).unwrap();
    std::os::unix::fs::symlink(&music, music.join("a/loop")).unwrap();
    let m = musefs_tests::write_manifest(t.path(), &music, "");
    let out = std::process::Command::new(musefs_tests::musefs_bin())
        .args(["scan", "--manifest"])
        .arg(&m)
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    let line = err.lines().find(|l| l.contains("symlink loop")).unwrap_or_else(|| panic!("no loop line: {err}"));
    assert!(line.contains("WARN") && line.contains("plugin local: symlink loop at"), "{line}");
    assert!(!err.contains("musefs plugin warn"), "the stderr fallback was used: {err}");
}

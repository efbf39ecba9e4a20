//! The command line as scripts and new users meet it (issue 16, item 8): JSON output,
//! exit codes, `-` for standard input and output, tag targets inside the mountpoint,
//! the default manifest locations, errors that say things once, completions and the
//! man page.

use std::fs;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use musefs_tests::{ls_long, make_library, musefs, musefs_bin, scan, write_manifest, Mount};

fn text(out: &Output) -> (String, String) {
    (String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

fn json(out: &Output) -> serde_json::Value {
    let (so, se) = text(out);
    serde_json::from_str(&so).unwrap_or_else(|e| panic!("not JSON ({e}): {so}\n{se}"))
}

/// `musefs ARGS` with `input` on standard input.
fn musefs_with_stdin(args: &[&str], input: &[u8]) -> Output {
    let mut child = Command::new(musefs_bin())
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(input).unwrap();
    child.wait_with_output().unwrap()
}

#[test]
fn json_output_and_exit_codes_for_scripts() {
    let t = tempfile::tempdir().unwrap();
    let lib = t.path().join("lib");
    make_library(&lib, true);
    let manifest = write_manifest(t.path(), &lib, "");
    let m = manifest.to_str().unwrap();
    // A library with files nothing can read: the scan is done in part, exit 2.
    let out = musefs(&["scan", "--json", "--manifest", m]);
    assert_eq!(out.status.code(), Some(2), "{:?}", text(&out));
    let v = json(&out);
    assert_eq!(v["added"], 14, "13 tracks and a sidecar (broken/cover.jpg): {v}");
    assert!(v["failed"].as_u64().unwrap() >= 1 && v["refused"].is_object() && v["seconds"].is_f64(), "{v}");
    // A second scan finds nothing new and still says what failed.
    let v = json(&musefs(&["scan", "--json", "--manifest", m]));
    assert_eq!((v["added"].as_u64(), v["unchanged"].as_u64()), (Some(0), Some(14)), "{v}");

    let listed = ls_long(&manifest);
    let v = json(&musefs(&["ls", "--json", "--manifest", m]));
    let items = v.as_array().unwrap();
    assert_eq!(items.len(), listed.len());
    for (item, (path, origin_path)) in items.iter().zip(&listed) {
        assert_eq!(
            (item["path"].as_str(), item["origin_path"].as_str()),
            (Some(path.as_str()), Some(origin_path.as_str()))
        );
        assert_eq!(item["origin"], "main");
        assert_eq!(item["size"].as_u64(), Some(fs::metadata(lib.join(origin_path)).unwrap().len()));
    }

    let out = musefs(&["plugins", "list", "--json", "--plugin-dir", musefs_tests::target_dir().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{:?}", text(&out));
    let v = json(&out);
    let names: Vec<&str> = v["plugins"].as_array().unwrap().iter().map(|p| p["name"].as_str().unwrap()).collect();
    for want in ["flac", "mp3", "ogg", "local"] {
        assert!(names.contains(&want), "{names:?}");
    }
    assert!(v["plugins"][0]["abi"].as_str().unwrap().contains('.'), "{v}");

    // Usage errors are failures (1), like every other error; --help is not one.
    assert_eq!(musefs(&["scan", "--no-such-flag"]).status.code(), Some(1));
    assert_eq!(musefs(&["--help"]).status.code(), Some(0));
    assert_eq!(musefs(&["ls", "--manifest", "/nonexistent/m.toml"]).status.code(), Some(1));
}

#[test]
fn tag_export_carries_pictures_and_import_reads_standard_input() {
    let t = tempfile::tempdir().unwrap();
    let lib = t.path().join("lib");
    make_library(&lib, false);
    let manifest = write_manifest(t.path(), &lib, "mode = \"synthesis\"\n");
    let m = manifest.to_str().unwrap();
    scan(&manifest);
    // hires.flac has several pictures.
    let out = musefs(&["tag", "export", "--manifest", m, "-o", "-", "main:alpha/hires.flac"]);
    assert!(out.status.success(), "{:?}", text(&out));
    let mut doc = json(&out);
    // The whole library as exported changes nothing when imported (no tag or art edit
    // recorded: pictures whose stored fields differ from what the image says included).
    let whole = musefs(&["tag", "export", "--manifest", m, "/"]).stdout;
    let out = musefs_with_stdin(&["tag", "import", "--manifest", m, "-"], &whole);
    assert!(out.status.success() && text(&out).1.contains("imported: 0 file(s) changed"), "{:?}", text(&out));
    let pics = doc["files"][0]["pictures"].as_array().unwrap().clone();
    assert!(pics.len() >= 2, "{doc}");
    let png = fs::read(lib.join("alpha/hires.flac")).unwrap();
    let first = base64_decode(pics[0]["data"].as_str().unwrap());
    assert!(first.starts_with(b"\x89PNG") && png.windows(first.len()).any(|w| w == first), "the image bytes");
    // Keep only the last picture, twice (two of one type stay two), and a new title.
    let last = pics.last().unwrap().clone();
    doc["files"][0]["pictures"] = serde_json::json!([last, last]);
    doc["files"][0]["tags"]["title"] = serde_json::json!(["From Stdin"]);
    let out = musefs_with_stdin(&["tag", "import", "--manifest", m, "-"], doc.to_string().as_bytes());
    assert!(out.status.success(), "{:?}", text(&out));
    let shown = text(&musefs(&["tag", "show", "--manifest", m, "main:alpha/hires.flac"])).0;
    assert!(shown.contains("title = From Stdin"), "{shown}");
    assert_eq!(shown.matches("  picture type").count(), 2, "{shown}");
    let again = json(&musefs(&["tag", "export", "--manifest", m, "main:alpha/hires.flac"]));
    assert_eq!(again["files"][0]["pictures"], serde_json::json!([last, last]), "exactly the imported pictures");
    // A document without `pictures` leaves them alone.
    doc["files"][0].as_object_mut().unwrap().remove("pictures");
    doc["files"][0]["tags"]["title"] = serde_json::json!(["Tags Only"]);
    let out = musefs_with_stdin(&["tag", "import", "--manifest", m, "-"], doc.to_string().as_bytes());
    assert!(out.status.success(), "{:?}", text(&out));
    let shown = text(&musefs(&["tag", "show", "--manifest", m, "main:alpha/hires.flac"])).0;
    assert!(shown.contains("title = Tags Only") && shown.matches("  picture type").count() == 2, "{shown}");
    // A picture that is not an image is refused by name, nothing stored.
    doc["files"][0]["pictures"] = serde_json::json!([{"type": 3, "data": "bm90IGFuIGltYWdl"}]);
    let out = musefs_with_stdin(&["tag", "import", "--manifest", m, "-"], doc.to_string().as_bytes());
    let (_, se) = text(&out);
    assert!(!out.status.success() && se.contains("main:alpha/hires.flac: picture 1"), "{se}");
}

fn base64_decode(s: &str) -> Vec<u8> {
    let out = Command::new("base64").arg("-d").stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().unwrap();
    let mut child = out;
    child.stdin.take().unwrap().write_all(s.as_bytes()).unwrap();
    child.wait_with_output().unwrap().stdout
}

#[test]
fn tag_targets_may_be_paths_inside_the_mountpoint() {
    let t = tempfile::tempdir().unwrap();
    let lib = t.path().join("lib");
    make_library(&lib, false);
    let manifest =
        write_manifest(t.path(), &lib, "mode = \"synthesis\"\nsync_interval = \"off\"\nrefresh_interval_ms = 100\n");
    let m = manifest.to_str().unwrap();
    scan(&manifest);
    let mnt = t.path().join("mnt");
    let mount = Mount::start(&manifest, &mnt, &[]);
    let album = mnt.join("Alpha/First");
    // An absolute path of a file in the mount.
    let out = musefs(&["tag", "set", "--manifest", m, album.join("01 Plain.flac").to_str().unwrap(), "genre=Ambient"]);
    assert!(out.status.success(), "{:?}", text(&out));
    // A path relative to a working directory inside the mount: the whole album.
    let out = Command::new(musefs_bin())
        .current_dir(&album)
        .args(["tag", "set", "--manifest", m, ".", "comment=whole album"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{:?}", text(&out));
    let shown = text(&musefs(&["tag", "show", "--manifest", m, "main:alpha/plain.flac"])).0;
    assert!(shown.contains("genre = Ambient") && shown.contains("comment = whole album"), "{shown}");
    let shown = text(&musefs(&["tag", "show", "--manifest", m, "main:alpha/hires.flac"])).0;
    assert!(shown.contains("comment = whole album") && !shown.contains("Ambient"), "{shown}");
    assert_eq!(mount.stop(), Some(0));
}

#[test]
fn the_manifest_comes_from_the_environment_or_the_default_places() {
    let t = tempfile::tempdir().unwrap();
    let lib = t.path().join("lib");
    make_library(&lib, false);
    let manifest = write_manifest(t.path(), &lib, "");
    scan(&manifest);
    let ls = |envs: &[(&str, &Path)]| {
        let mut c = Command::new(musefs_bin());
        c.arg("ls").env_remove("MUSEFS_MANIFEST").env("HOME", t.path()).env_remove("XDG_CONFIG_HOME");
        for (k, v) in envs {
            c.env(k, v);
        }
        c.output().unwrap()
    };
    let out = ls(&[("MUSEFS_MANIFEST", &manifest)]);
    assert!(out.status.success() && text(&out).0.contains("Alpha/First/01 Plain.flac"), "{:?}", text(&out));
    let xdg = t.path().join("xdg");
    fs::create_dir_all(xdg.join("musefs")).unwrap();
    fs::copy(&manifest, xdg.join("musefs/musefs.toml")).unwrap();
    let out = ls(&[("XDG_CONFIG_HOME", &xdg)]);
    assert!(out.status.success() && text(&out).0.contains("Alpha/First/01 Plain.flac"), "{:?}", text(&out));
    // Nowhere: says where it looked (unless this machine has /etc/musefs/musefs.toml).
    if !Path::new("/etc/musefs/musefs.toml").exists() {
        let out = ls(&[]);
        let (_, se) = text(&out);
        assert!(
            !out.status.success() && se.contains("--manifest") && se.contains(".config/musefs/musefs.toml"),
            "{se}"
        );
        assert!(se.contains("/etc/musefs/musefs.toml") && se.contains("MUSEFS_MANIFEST"), "{se}");
    }
}

#[test]
fn errors_say_each_thing_once_and_list_valid_values() {
    let t = tempfile::tempdir().unwrap();
    let lib = t.path().join("lib");
    fs::create_dir_all(&lib).unwrap();
    let err = |extra: &str| {
        let m = write_manifest(t.path(), &lib, extra);
        let out = musefs(&["ls", "--manifest", m.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(1));
        text(&out).1
    };
    let e = err("template = \"$artist/%nope{x}\"");
    assert_eq!(e.matches("unknown function `%nope`").count(), 1, "{e}");
    assert_eq!(e.matches('^').count(), 1, "one caret: {e}");
    let e = err("mode = \"synth\"");
    assert!(e.contains("`passthrough`") && e.contains("`synthesis`"), "{e}");
    let m = t.path().join("bad-state.toml");
    fs::write(
        &m,
        format!(
            "state_dir = \"/proc/1/no/such/dir\"\n[[origin]]\nname = \"main\"\nkind = \"local\"\nroot = {:?}\n",
            lib.display().to_string()
        ),
    )
    .unwrap();
    let out = musefs(&["scan", "--manifest", m.to_str().unwrap()]);
    let e = text(&out).1;
    assert!(!out.status.success() && e.contains("/proc/1/no/such/dir"), "{e}");
    assert_eq!(e.matches("No such file or directory").count(), 1, "{e}");
}

#[test]
fn completions_and_man_pages_come_from_the_command_definitions() {
    let out = musefs(&["completions", "bash"]);
    let (so, _) = text(&out);
    assert!(out.status.success() && so.contains("complete -F") && so.contains("--manifest"), "{so}");
    let out = musefs(&["completions", "zsh"]);
    assert!(out.status.success() && text(&out).0.contains("#compdef musefs"));
    let out = musefs(&["manpage"]);
    let (so, _) = text(&out);
    assert!(out.status.success() && so.contains(".TH musefs 1") && so.contains("scan"), "{so}");
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("man1");
    let out = musefs(&["manpage", "--dir", dir.to_str().unwrap()]);
    assert!(out.status.success(), "{:?}", text(&out));
    let page = fs::read_to_string(dir.join("musefs-scan.1")).unwrap();
    assert!(page.contains("allow\\-prune"), "{page}");
    // man(1) renders it without complaint.
    if Path::new("/usr/bin/man").exists() {
        let out = Command::new("man").arg("-l").arg(dir.join("musefs.1")).env("MANPAGER", "cat").output().unwrap();
        assert!(out.status.success() && String::from_utf8_lossy(&out.stdout).contains("musefs"), "{out:?}");
    }
}

//! A matrix of hostile inputs, one test each: every one gives a clear error (one line,
//! naming the file, key or path) or is served correctly, and nothing is lost: truncated
//! and zero-length files, a file growing during a scan, a state dir on a read-only
//! filesystem, a full disk under the chunk cache, a catalog from a newer musefs, a
//! snapshot from another catalog, and a manifest with each key wrong in turn.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use musefs_tests::servers::S3Server;
use musefs_tests::{ls_long, make_library, musefs, scan, sha256, write_manifest, Mount};

/// The error line of a failed command (the binary prints `musefs: error: ...` last).
fn error_line(out: &std::process::Output) -> String {
    assert!(!out.status.success(), "expected a failure: {}", String::from_utf8_lossy(&out.stdout));
    let err = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = err.lines().filter(|l| l.starts_with("musefs: error:")).collect();
    assert_eq!(lines.len(), 1, "one error line: {err}");
    lines[0].to_owned()
}

fn lib(dir: &Path) -> (PathBuf, PathBuf) {
    let lib = dir.join("lib");
    make_library(&lib, false);
    let m = write_manifest(dir, &lib, "mode = \"synthesis\"\n");
    (lib, m)
}

/// A tmpfs mounted for the test, unmounted when dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(at: &Path, opts: &str) -> Self {
        fs::create_dir_all(at).unwrap();
        let ok = Command::new("mount").args(["-t", "tmpfs", "-o", opts, "tmpfs"]).arg(at).status().unwrap();
        assert!(ok.success(), "mount tmpfs at {}", at.display());
        Self(at.to_owned())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[test]
fn zero_length_and_truncated_files_are_refused_by_name_and_the_rest_served() {
    let t = tempfile::tempdir().unwrap();
    let (lib, m) = lib(t.path());
    fs::write(lib.join("empty.flac"), b"").unwrap();
    let whole = fs::read(lib.join("alpha/plain.flac")).unwrap();
    fs::write(lib.join("cut.flac"), &whole[..20]).unwrap();
    fs::write(lib.join("cut.mp3"), &fs::read(lib.join("beta/mp3s/v24.mp3")).unwrap()[..9]).unwrap();
    let out = musefs(&["scan", "--manifest", m.to_str().unwrap()]);
    let (so, se) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.code() == Some(2) && so.contains("added 13") && so.contains("failed 3"), "{so}{se}");
    for name in ["empty.flac", "cut.flac", "cut.mp3"] {
        let line = se.lines().find(|l| l.contains(&format!("main:{name}:"))).unwrap_or_else(|| panic!("{se}"));
        assert!(line.contains("skipping"), "{line}");
    }
    assert!(se.contains("empty file"), "{se}");
    assert!(so.contains("refused (3 file(s)"), "{so}");
    assert_eq!(ls_long(&m).len(), 13);
}

#[test]
fn a_file_growing_during_the_scan_is_cataloged_consistently() {
    let t = tempfile::tempdir().unwrap();
    let (lib, m) = lib(t.path());
    let grow = lib.join("growing.flac");
    let base = fs::read(lib.join("alpha/plain.flac")).unwrap();
    fs::write(&grow, &base).unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (grow, stop) = (grow.clone(), stop.clone());
        std::thread::spawn(move || {
            use std::io::Write;
            let mut f = fs::OpenOptions::new().append(true).open(&grow).unwrap();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                f.write_all(&[0u8; 4096]).unwrap();
                std::thread::sleep(std::time::Duration::from_micros(200));
            }
        })
    };
    for _ in 0..5 {
        let out = musefs(&["scan", "--manifest", m.to_str().unwrap()]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    writer.join().unwrap();
    // Once it stops changing, a scan catalogs what is there, and the mount serves it.
    scan(&m);
    let mnt = t.path().join("mnt");
    let mount = Mount::start(&m, &mnt, &[]);
    for (tree, _) in ls_long(&m) {
        let p = mnt.join(&tree);
        let bytes = fs::read(&p).unwrap_or_else(|e| panic!("{tree}: {e}: {}", mount.log_text()));
        assert_eq!(bytes.len() as u64, fs::metadata(&p).unwrap().len(), "{tree}");
    }
    assert_eq!(mount.stop(), Some(0));
}

#[test]
fn a_state_dir_on_a_read_only_filesystem_is_a_one_line_error() {
    let t = tempfile::tempdir().unwrap();
    let lib = t.path().join("lib");
    make_library(&lib, false);
    let ro = t.path().join("ro");
    let _guard = Tmpfs::mount(&ro, "ro,size=1m");
    let m = t.path().join("m.toml");
    fs::write(
        &m,
        format!(
            "state_dir = {:?}\n[[origin]]\nname = \"main\"\nkind = \"local\"\nroot = {:?}\n",
            ro.join("state"),
            lib
        ),
    )
    .unwrap();
    for cmd in ["scan", "status"] {
        let line = error_line(&musefs(&[cmd, "--manifest", m.to_str().unwrap()]));
        assert!(line.contains(&ro.display().to_string()) && line.to_lowercase().contains("read-only"), "{cmd}: {line}");
    }
}

#[test]
fn a_full_disk_under_the_chunk_cache_still_serves_exact_bytes() {
    let t = tempfile::tempdir().unwrap();
    let lib = t.path().join("lib");
    make_library(&lib, false);
    let server = S3Server::start(t.path(), None);
    server.put_dir("music", "lib", &lib);
    let m = t.path().join("m.toml");
    fs::write(
        &m,
        format!(
            "state_dir = {:?}\nread_timeout_ms = 3000\nsync_interval = \"off\"\nwatch = false\n[cache]\nchunk_size = \"64KiB\"\nmax_size = \"1GiB\"\n\
             [[origin]]\nname = \"main\"\nkind = \"s3\"\nbucket = \"music\"\nprefix = \"lib\"\nendpoint = {:?}\n\
             allow_http = true\naccess_key_id = \"musefs-test\"\nsecret_access_key = \"musefs-test-secret\"\n",
            t.path().join("state"),
            server.endpoint()
        ),
    )
    .unwrap();
    scan(&m);
    // 256 KiB for chunks: the library is several MiB.
    let _full = Tmpfs::mount(&t.path().join("state/chunks"), "size=256k");
    let mnt = t.path().join("mnt");
    let mount = Mount::start(&m, &mnt, &[]);
    for (tree, origin) in ls_long(&m) {
        let served = mnt.join(&tree);
        let got = fs::read(&served).unwrap_or_else(|e| panic!("{tree}: {e}: {}", mount.log_text()));
        // Passthrough (the default mode): the served bytes are the original's.
        assert_eq!(sha256_bytes(&got), sha256(&lib.join(&origin)), "{tree}");
    }
    let log = mount.log_text();
    assert!(log.contains("No space left") || log.contains("no space"), "the full disk is reported: {log}");
    assert_eq!(mount.stop(), Some(0));
}

fn sha256_bytes(b: &[u8]) -> String {
    let p = std::env::temp_dir().join(format!("musefs-sha-{}", std::process::id()));
    fs::write(&p, b).unwrap();
    let s = sha256(&p);
    let _ = fs::remove_file(&p);
    s
}

#[test]
fn a_catalog_from_a_newer_musefs_is_refused_and_left_untouched() {
    let t = tempfile::tempdir().unwrap();
    let (_, m) = lib(t.path());
    scan(&m);
    let db = t.path().join("state/catalog.db");
    let status = Command::new("python3")
        .args([
            "-c",
            "import sqlite3,sys; c=sqlite3.connect(sys.argv[1]); c.execute('PRAGMA user_version = 99'); c.commit()",
        ])
        .arg(&db)
        .status()
        .unwrap();
    assert!(status.success());
    let before = sha256(&db);
    for cmd in ["scan", "ls", "status"] {
        let line = error_line(&musefs(&[cmd, "--manifest", m.to_str().unwrap()]));
        assert!(line.contains("newer") && line.contains("catalog.db"), "{cmd}: {line}");
    }
    assert_eq!(sha256(&db), before, "the newer catalog is left as it was");
}

#[test]
fn a_snapshot_from_another_catalog_is_ignored() {
    let t = tempfile::tempdir().unwrap();
    let (_, m) = lib(t.path());
    scan(&m);
    let other = t.path().join("other");
    fs::create_dir_all(&other).unwrap();
    let lib2 = other.join("lib");
    make_library(&lib2, false);
    fs::remove_file(lib2.join("alpha/plain.flac")).unwrap();
    let m2 = write_manifest(&other, &lib2, "mode = \"synthesis\"\n");
    scan(&m2);
    let snap = |dir: &Path| {
        fs::read_dir(dir.join("state"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p.file_name().unwrap().to_string_lossy().contains("snapshot"))
    };
    let theirs = snap(&other).expect("the other state dir has a snapshot");
    let ours = t.path().join("state").join(theirs.file_name().unwrap());
    fs::copy(&theirs, &ours).unwrap();
    let mnt = t.path().join("mnt");
    let mount = Mount::start(&m, &mnt, &[]);
    assert!(mnt.join("Alpha/First/01 Plain.flac").exists(), "the tree is this catalog's: {}", mount.log_text());
    assert!(mount.log_text().contains("another catalog"), "{}", mount.log_text());
    assert_eq!(mount.stop(), Some(0));
}

#[test]
fn every_manifest_key_wrong_in_turn_is_a_one_line_error_naming_it() {
    let t = tempfile::tempdir().unwrap();
    let lib = t.path().join("lib");
    fs::create_dir_all(&lib).unwrap();
    let good = format!(
        "state_dir = \"state\"\nmode = \"synthesis\"\ntemplate = \"$artist/$title\"\ntrack_digits = 2\n\
         disc_digits = 0\nslash_replacement = \"_\"\nread_timeout_ms = 1000\ncover_name = \"cover.jpg\"\n\
         refresh_interval_ms = 500\nsync_interval = \"15m\"\nwatch = true\nheader_cache_mb = 64\nprune_limit = 0.5\n\
         [cache]\nmax_size = \"1GiB\"\nchunk_size = \"1MiB\"\n[[origin]]\nname = \"main\"\nkind = \"local\"\n\
         root = {lib:?}\n"
    );
    let m = t.path().join("m.toml");
    fs::write(&m, &good).unwrap();
    let out = musefs(&["scan", "--manifest", m.to_str().unwrap()]);
    assert!(out.status.success(), "the good manifest loads: {}", String::from_utf8_lossy(&out.stderr));
    let wrong = [
        ("state_dir = \"state\"", "state_dir = [1]", "state_dir"),
        ("mode = \"synthesis\"", "mode = \"fancy\"", "fancy"),
        ("template = \"$artist/$title\"", "template = \"%nope{x}\"", "template"),
        ("track_digits = 2", "track_digits = \"two\"", "track_digits"),
        ("disc_digits = 0", "disc_digits = -1", "disc_digits"),
        ("slash_replacement = \"_\"", "slash_replacement = \"/\"", "slash_replacement"),
        ("read_timeout_ms = 1000", "read_timeout_ms = \"soon\"", "read_timeout_ms"),
        ("cover_name = \"cover.jpg\"", "cover_name = \"a/b.jpg\"", "cover_name"),
        ("refresh_interval_ms = 500", "refresh_interval_ms = true", "refresh_interval_ms"),
        ("sync_interval = \"15m\"", "sync_interval = \"sometimes\"", "sync_interval"),
        ("watch = true", "watch = \"maybe\"", "watch"),
        ("header_cache_mb = 64", "header_cache_mb = -5", "header_cache_mb"),
        ("prune_limit = 0.5", "prune_limit = 7", "prune_limit"),
        ("max_size = \"1GiB\"", "max_size = \"lots\"", "max_size"),
        ("chunk_size = \"1MiB\"", "chunk_size = \"3KiB\"", "chunk_size"),
        ("kind = \"local\"", "kind = \"ftp\"", "ftp"),
        ("name = \"main\"", "name = \"\"", "name"),
        ("root = ", "rooot = ", "root"),
    ];
    let (mut accepted, mut unclear) = (Vec::new(), Vec::new());
    for (from, to, named) in wrong {
        assert!(good.contains(from), "{from}");
        fs::write(&m, good.replacen(from, to, 1)).unwrap();
        let out = musefs(&["scan", "--manifest", m.to_str().unwrap()]);
        if out.status.success() {
            accepted.push(to);
            continue;
        }
        let line = error_line(&out);
        if !(line.contains(named) && line.contains("m.toml")) {
            unclear.push(format!("`{to}`: {line}"));
        }
    }
    assert!(accepted.is_empty() && unclear.is_empty(), "accepted: {accepted:?}\nunclear: {unclear:#?}");
}

//! End-to-end: fixtures from real encoders, `musefs scan`, a real FUSE mount, byte
//! comparison of every served file, ffprobe on every file, clean unmount.

use std::fs;
use std::process::Command;

use musefs_tests::{assert_random_preads, is_fuse_mounted, ls_long, make_library, musefs, scan, write_manifest, Mount};

fn check_mount(extra_args: &[&str]) {
    let t = tempfile::tempdir().unwrap();
    let lib = t.path().join("lib");
    make_library(&lib, true);
    let manifest = write_manifest(t.path(), &lib, "mode = \"passthrough\"");
    let (out, err) = scan(&manifest);
    // 13 tracks and broken/cover.jpg, a sidecar (cataloged; shown only beside tracks,
    // and its folder has none).
    assert!(out.contains("added 14 /") && out.contains("failed 3"), "{out}");
    for broken in ["broken/truncated.flac", "broken/empty.mp3", "broken/notes.mp3"] {
        assert_eq!(err.matches(broken).count(), 1, "one warning naming {broken}: {err}");
    }
    assert!(!err.contains("cover.jpg"), "non-audio extensions are ignored silently: {err}");

    let files = ls_long(&manifest);
    assert_eq!(files.len(), 13);
    let mnt = t.path().join("mnt");
    let m = Mount::start(&manifest, &mnt, extra_args);
    let mut seed = 42;
    for (served, original) in &files {
        let sp = mnt.join(served);
        let op = lib.join(original);
        let a = fs::read(&sp).unwrap_or_else(|e| panic!("read {}: {e}", sp.display()));
        let b = fs::read(&op).unwrap();
        assert!(a == b, "{served} differs from {original}");
        assert_eq!(fs::metadata(&sp).unwrap().len(), b.len() as u64, "exact size before any read: {served}");
        // Random preads equal the same ranges of the original.
        assert_random_preads(&sp, &b, &mut seed, 50);
        let probe = Command::new("ffprobe")
            .args(["-v", "error", "-show_entries", "format=duration", "-of", "csv=p=0"])
            .arg(&sp)
            .output()
            .unwrap();
        let dur: f64 = String::from_utf8_lossy(&probe.stdout).trim().parse().unwrap_or(0.0);
        assert!(probe.status.success() && (1.5..2.5).contains(&dur), "ffprobe {served}: {dur} {:?}", probe);
    }
    // Hostile tag values stay inside the mount; `cp -r` of the whole tree works.
    let copy = t.path().join("copy");
    let st = Command::new("cp").arg("-r").arg(&mnt).arg(&copy).status().unwrap();
    assert!(st.success());
    let mut count = 0;
    let mut stack = vec![copy.clone()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let name = e.file_name().into_string().unwrap();
            assert!(
                name != "." && name != ".." && !name.contains('/') && !name.chars().any(char::is_control),
                "{name:?}"
            );
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
            } else if name != "cover.jpg" {
                count += 1;
            }
        }
    }
    assert_eq!(count, 13);
    // The hostile tracks sit where the path rules put them, inside the mount:
    // artist `../..` → `_._..` (no hidden names), album `..` → `__`, title `../x` → `.._x`; `/` in values → `_`,
    // the control character in `Back\x01In/Black` removed.
    for p in ["_._../__/01 .._x.flac", "AC_DC/_etc_passwd/01 BackIn_Black.flac"] {
        let meta = fs::metadata(mnt.join(p)).unwrap_or_else(|e| panic!("{p}: {e}"));
        assert!(meta.is_file(), "{p}");
    }
    assert!(fs::write(mnt.join("new-file"), b"x").is_err(), "the mount is read-only");
    let code = m.stop();
    assert_eq!(code, Some(0), "SIGTERM unmounts cleanly");
    assert!(!is_fuse_mounted(&mnt));
}

#[test]
fn passthrough_mount_with_kernel_passthrough_serves_originals() {
    check_mount(&[]);
}

#[test]
fn passthrough_mount_through_the_daemon_serves_originals() {
    check_mount(&["--no-kernel-passthrough"]);
}

#[test]
fn rescan_is_incremental_and_prunes_removed_files() {
    let t = tempfile::tempdir().unwrap();
    let lib = t.path().join("lib");
    make_library(&lib, false);
    let manifest = write_manifest(t.path(), &lib, "");
    let (out, _) = scan(&manifest);
    assert!(out.contains("added 13 /"), "{out}");
    let (out, _) = scan(&manifest);
    assert!(out.contains("added 0 / updated 0 / unchanged 13 / removed 0"), "{out}");
    fs::remove_file(lib.join("ogg/vorbis.ogg")).unwrap();
    let f = fs::OpenOptions::new().write(true).open(lib.join("alpha/plain.flac")).unwrap();
    f.set_modified(std::time::SystemTime::now() + std::time::Duration::from_secs(5)).unwrap();
    drop(f);
    let (out, _) = scan(&manifest);
    assert!(out.contains("added 0 / updated 1 / unchanged 11 / removed 1"), "{out}");
    assert_eq!(ls_long(&manifest).len(), 12);
}

#[test]
fn a_file_changed_after_the_scan_gives_eio_not_wrong_bytes() {
    let t = tempfile::tempdir().unwrap();
    let lib = t.path().join("lib");
    make_library(&lib, false);
    // No background sync: the mount must serve from the (now stale) catalog.
    let manifest = write_manifest(t.path(), &lib, "sync_interval = \"off\"\nwatch = false");
    scan(&manifest);
    let target = ls_long(&manifest).into_iter().find(|(_, o)| o == "alpha/plain.flac").unwrap().0;
    // Change the original (same size, new bytes and mtime) after the scan.
    let p = lib.join("alpha/plain.flac");
    let mut data = fs::read(&p).unwrap();
    let n = data.len();
    data[n - 10] ^= 0xFF;
    std::thread::sleep(std::time::Duration::from_millis(20));
    fs::write(&p, &data).unwrap();
    let mnt = t.path().join("mnt");
    let m = Mount::start(&manifest, &mnt, &[]);
    let err = fs::read(mnt.join(&target)).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EIO), "{err}");
    drop(m);
}

#[test]
fn bad_manifest_and_bad_mountpoint_are_clear_errors() {
    let t = tempfile::tempdir().unwrap();
    let m = t.path().join("m.toml");
    fs::write(&m, "state_dir = 's'\ntempalte = '$title'\n[[origin]]\nname='a'\nkind='local'\nroot='/'\n").unwrap();
    let out = musefs(&["ls", "--manifest", m.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("tempalte") && err.contains("m.toml"), "{err}");

    let lib = t.path().join("lib");
    fs::create_dir_all(&lib).unwrap();
    let manifest = write_manifest(t.path(), &lib, "");
    let out = musefs(&["mount", "--manifest", manifest.to_str().unwrap(), "/nonexistent/mnt"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("/nonexistent/mnt"), "{err}");

    let bad_origin = write_manifest(t.path(), &t.path().join("missing-dir"), "");
    let out = musefs(&["scan", "--manifest", bad_origin.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("`root`") && err.contains("missing-dir"), "{err}");

    // Regression: a pad width over 65535 panicked (exit 101) in `ls` and `scan`.
    let huge = write_manifest(t.path(), &lib, "template = \"%pad{$track,70000} $title\"");
    for cmd in ["ls", "scan"] {
        let out = musefs(&[cmd, "--manifest", huge.to_str().unwrap()]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{cmd}: {err}");
        assert!(err.contains("%pad") && err.contains("70000"), "{cmd}: {err}");
    }
}

//! Persistent state and crash safety (issue 5), end to end with real mounts:
//! live add/change/remove in a local origin shows up without a remount (inotify +
//! background sync, stable inodes); a second owner is refused naming the live pid while
//! readers attach; an orderly stop checkpoints the WAL and releases ownership; `kill -9`
//! of a mount (at seeded random moments, under reads) and of a scan leaves a catalog
//! that passes `integrity_check`, the next run recovers (cleaning the stale mount) and a
//! killed scan resumes instead of starting over.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use musefs_core::catalog::Catalog;
use musefs_tests::{
    all_files, is_fuse_mounted, lcg, ls_long, make_library, musefs, musefs_bin, scan, wait_for, write_manifest, Mount,
    Unmount,
};

fn set_title(src: &Path, dst: &Path, title: &str) {
    // Edit a copy outside the origin, then rename it in: a watcher never sees a half file.
    let tmp = dst.with_extension("tmp-edit");
    fs::copy(src, &tmp).unwrap();
    let ok =
        Command::new("metaflac").arg("--remove-tag=TITLE").arg(format!("--set-tag=TITLE={title}")).arg(&tmp).status();
    assert!(ok.unwrap().success());
    let out = tmp.with_file_name(format!(".{}", dst.file_name().unwrap().to_string_lossy()));
    fs::rename(&tmp, &out).unwrap();
    fs::rename(&out, dst).unwrap();
}

/// A demo library in a temp dir, with a default manifest (background sync on), scanned.
fn scanned_library() -> (tempfile::TempDir, PathBuf, PathBuf) {
    let t = tempfile::tempdir().unwrap();
    let lib = t.path().join("lib");
    make_library(&lib, false);
    let manifest = write_manifest(t.path(), &lib, "");
    scan(&manifest);
    (t, lib, manifest)
}

/// The demo library plus `n` hard links to its FLAC files: large enough for a scan or
/// sync to commit several batches (and for a batch edit to take a while).
fn bulk_library(n: usize) -> (tempfile::TempDir, PathBuf) {
    let t = tempfile::tempdir().unwrap();
    let lib = t.path().join("lib");
    make_library(&lib, false);
    let src: Vec<PathBuf> =
        all_files(&lib).into_iter().filter(|p| p.extension().is_some_and(|e| e == "flac")).collect();
    for i in 0..n {
        let s = &src[i % src.len()];
        let d = lib.join(format!("bulk/{:02}/{i}.flac", i / 100));
        fs::create_dir_all(d.parent().unwrap()).unwrap();
        fs::hard_link(s, &d).unwrap();
    }
    (t, lib)
}

fn integrity(manifest_dir: &Path) {
    let cat = Catalog::open(&manifest_dir.join("state/catalog.db")).unwrap();
    cat.integrity_check().unwrap();
}

#[test]
fn live_add_change_remove_show_up_without_remount() {
    let (t, lib, manifest) = scanned_library();
    let before = ls_long(&manifest);
    let mnt = t.path().join("mnt");
    let m = Mount::start(&manifest, &mnt, &[]);
    let (kept_tree, _) = before.iter().find(|(_, o)| o == "alpha/hires.flac").unwrap().clone();
    let kept_ino = fs::metadata(mnt.join(&kept_tree)).unwrap().ino();
    let find = |needle: &str| all_files(&mnt).into_iter().find(|p| p.to_string_lossy().contains(needle));

    // Added.
    fs::create_dir_all(lib.join("new")).unwrap();
    set_title(&lib.join("alpha/plain.flac"), &lib.join("new/added.flac"), "Live Added Song");
    assert!(wait_for(15, || find("Live Added Song").is_some()), "added file never appeared: {}", m.log_text());
    let added = find("Live Added Song").unwrap();
    let want = fs::read(lib.join("new/added.flac")).unwrap();
    assert!(fs::read(&added).unwrap() == want, "the added file's bytes");

    // Changed (a new title: its tree path changes).
    set_title(&lib.join("new/added.flac"), &lib.join("new/added.flac"), "Live Renamed Song");
    assert!(
        wait_for(15, || find("Live Renamed Song").is_some() && find("Live Added Song").is_none()),
        "changed file not reflected: {}",
        m.log_text()
    );

    // Removed.
    fs::remove_file(lib.join("new/added.flac")).unwrap();
    assert!(wait_for(15, || find("Live Renamed Song").is_none()), "removed file still there: {}", m.log_text());

    // Untouched files keep their inode numbers across syncs.
    assert_eq!(fs::metadata(mnt.join(&kept_tree)).unwrap().ino(), kept_ino);
    let st = musefs(&["status", "--manifest", manifest.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&st.stdout);
    assert!(st.status.success() && text.contains(&format!("pid {}", m.pid())), "{text}");
    assert!(text.contains("origin main: last sync") && text.contains("ok:"), "{text}");
    assert_eq!(m.stop(), Some(0));
}

#[test]
fn a_second_owner_is_refused_readers_attach_and_a_stop_is_orderly() {
    let (t, _lib, manifest) = scanned_library();
    let m = Mount::start(&manifest, &t.path().join("mnt"), &[]);
    let mf = manifest.to_str().unwrap();
    let other = t.path().join("mnt2");
    fs::create_dir_all(&other).unwrap();
    for args in [vec!["mount", "--manifest", mf, other.to_str().unwrap()], vec!["scan", "--manifest", mf]] {
        let out = musefs(&args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} succeeded beside a live owner");
        assert!(err.contains(&format!("pid {}", m.pid())) && err.contains("in use"), "{args:?}: {err}");
    }
    assert!(!is_fuse_mounted(&other));
    // Readers attach beside the owner.
    let ls = musefs(&["ls", "--manifest", mf]);
    assert!(ls.status.success() && !ls.stdout.is_empty());
    let first = ls_long(&manifest)[0].0.clone();
    let tag = musefs(&["tag", "show", "--manifest", mf, &first]);
    assert!(tag.status.success(), "{}", String::from_utf8_lossy(&tag.stderr));
    let st = musefs(&["status", "--manifest", mf]);
    let text = String::from_utf8_lossy(&st.stdout).into_owned();
    assert!(text.contains(&format!("pid {}", m.pid())) && text.contains("mounted at"), "{text}");

    // Orderly stop: exit 0, WAL checkpointed and truncated, ownership released.
    assert_eq!(m.stop(), Some(0));
    let wal = t.path().join("state/catalog.db-wal");
    assert!(fs::metadata(&wal).map_or(0, |m| m.len()) == 0, "WAL not truncated");
    let st = musefs(&["status", "--manifest", mf]);
    let text = String::from_utf8_lossy(&st.stdout).into_owned();
    assert!(text.contains("released cleanly"), "{text}");
    // Now a scan may own it.
    scan(&manifest);
}

#[test]
fn kill_9_of_a_mount_under_reads_is_recovered() {
    let (t, lib, manifest) = scanned_library();
    let files = ls_long(&manifest);
    let mnt = t.path().join("mnt");
    // If an assertion fails between a kill and the next mount, the dead mount must not
    // outlive the test.
    let _guard = Unmount(mnt.clone());
    let mut seed = 0x9e37_79b9_u64;
    for round in 0..4 {
        let m = Mount::start(&manifest, &mnt, &[]);
        if round > 0 {
            assert!(m.log_text().contains("did not shut down cleanly"), "round {round}: {}", m.log_text());
        }
        // Readers busy while the kill lands; some tag edits through the catalog too.
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let reader = {
            let (stop, mnt, files) = (stop.clone(), mnt.clone(), files.clone());
            std::thread::spawn(move || {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    for (tree, _) in &files {
                        let _ = fs::read(mnt.join(tree));
                    }
                }
            })
        };
        let mf = manifest.to_str().unwrap().to_owned();
        let _ = musefs(&["tag", "set", "--manifest", &mf, &files[0].0, &format!("comment=round {round}")]);
        std::thread::sleep(Duration::from_millis(50 + lcg(&mut seed) % 700));
        m.kill9();
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let _ = reader.join();
        integrity(t.path());
        let st = musefs(&["status", "--manifest", &mf]);
        assert!(String::from_utf8_lossy(&st.stdout).contains("died without shutting down"));
    }
    // The last recovery: the stale mount is cleaned up and every file reads correctly.
    let m = Mount::start(&manifest, &mnt, &[]);
    assert!(m.log_text().contains("did not shut down cleanly"), "{}", m.log_text());
    // Passthrough mode: every file is its original, byte for byte (tag edits live in
    // the catalog only).
    for (tree, orig) in &files {
        let got = fs::read(mnt.join(tree)).unwrap();
        assert!(got == fs::read(lib.join(orig)).unwrap(), "{tree} differs from {orig}");
    }
    assert_eq!(m.stop(), Some(0));
    integrity(t.path());
}

#[test]
fn kill_9_during_a_scan_leaves_a_sound_catalog_and_the_next_scan_resumes() {
    let (t, lib) = bulk_library(1500);
    let total = all_files(&lib).len();
    let manifest = write_manifest(t.path(), &lib, "");
    let mut seed = 7u64;
    let mut resumed = false;
    for round in 0..4 {
        let mut child = Command::new(musefs_bin())
            .args(["scan", "--threads", "1", "--manifest"])
            .arg(&manifest)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(300 + lcg(&mut seed) % 1200));
        let _ = child.kill();
        let _ = child.wait();
        integrity(t.path());
        let cat = Catalog::open(&t.path().join("state/catalog.db")).unwrap();
        let (n, _, _) = cat.counts().unwrap();
        eprintln!("round {round}: {n} file(s) in the catalog after kill -9");
        resumed |= n > 0;
    }
    let (out, _) = scan(&manifest);
    // What earlier, killed scans committed is not read again.
    assert!(resumed, "no batch was ever committed before the kill");
    let unchanged: u64 = out.split("unchanged ").nth(1).unwrap().split(' ').next().unwrap().parse().unwrap();
    assert!(unchanged > 0, "the final scan started from zero: {out}");
    let listed = ls_long(&manifest).len();
    assert!(listed > 1000 && listed <= total, "{listed} of {total}: {out}");
    integrity(t.path());
}

/// The files of a mounted tree, relative and sorted (cover sidecars left out).
fn mounted_paths(mnt: &Path) -> Vec<String> {
    let mut v: Vec<String> = all_files(mnt)
        .into_iter()
        .map(|p| p.strip_prefix(mnt).unwrap().to_string_lossy().into_owned())
        .filter(|p| !p.ends_with("cover.jpg"))
        .collect();
    v.sort();
    v
}

/// The tree rendered from the catalog alone: `musefs ls` with the snapshot moved aside.
fn rendered_paths(manifest_dir: &Path, manifest: &Path) -> Vec<String> {
    let snap = manifest_dir.join("state/tree.snapshot");
    let aside = manifest_dir.join("snapshot.aside");
    let had = fs::rename(&snap, &aside).is_ok();
    let mut v: Vec<String> = ls_long(manifest).into_iter().map(|(p, _)| p).collect();
    if had {
        fs::rename(&aside, &snap).unwrap();
    }
    v.sort();
    v
}

#[test]
fn remount_loads_the_tree_snapshot_and_catches_up_with_the_catalog() {
    let t = tempfile::tempdir().unwrap();
    let lib = t.path().join("lib");
    make_library(&lib, false);
    let quiet = "sync_interval = \"off\"\nwatch = false";
    let manifest = write_manifest(t.path(), &lib, quiet);
    scan(&manifest);
    let snap = t.path().join("state/tree.snapshot");
    assert!(snap.exists(), "the scan writes the tree snapshot");
    let mnt = t.path().join("mnt");

    // 1. A remount after the scan loads the snapshot; the tree is the rendered one.
    let m = Mount::start(&manifest, &mnt, &[]);
    assert!(m.log_text().contains("loaded from its snapshot (0 changed"), "{}", m.log_text());
    assert_eq!(mounted_paths(&mnt), rendered_paths(t.path(), &manifest));
    assert_eq!(m.stop(), Some(0));

    // 2. An edit while unmounted: the snapshot is older than the catalog; the mount
    //    applies the change logged since.
    let (tree_path, _) = ls_long(&manifest).into_iter().find(|(_, o)| o == "alpha/plain.flac").unwrap();
    let out = musefs(&["tag", "set", "--manifest", manifest.to_str().unwrap(), &tree_path, "title=Edited Offline"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let m = Mount::start(&manifest, &mnt, &[]);
    assert!(m.log_text().contains("loaded from its snapshot (1 changed file(s) applied)"), "{}", m.log_text());
    let paths = mounted_paths(&mnt);
    assert!(paths.iter().any(|p| p.contains("Edited Offline")), "{paths:?}");
    assert_eq!(paths, rendered_paths(t.path(), &manifest));
    assert_eq!(m.stop(), Some(0));

    // 3. A corrupt snapshot is not trusted: the tree is rendered, the snapshot rewritten.
    let mut bytes = fs::read(&snap).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x55;
    fs::write(&snap, &bytes).unwrap();
    let m = Mount::start(&manifest, &mnt, &[]);
    let log = m.log_text();
    assert!(log.contains("not using the tree snapshot") && log.contains("corrupt"), "{log}");
    assert!(log.contains("rendered from the catalog"), "{log}");
    assert_eq!(mounted_paths(&mnt), rendered_paths(t.path(), &manifest));
    assert_eq!(m.stop(), Some(0));
    let m = Mount::start(&manifest, &mnt, &[]);
    assert!(m.log_text().contains("loaded from its snapshot (0 changed"), "rewritten: {}", m.log_text());
    assert_eq!(m.stop(), Some(0));

    // 4. Another template: the snapshot is for the old one.
    let manifest = write_manifest(t.path(), &lib, &format!("{quiet}\ntemplate = \"$artist - $title\""));
    let m = Mount::start(&manifest, &mnt, &[]);
    assert!(m.log_text().contains("written for other templates"), "{}", m.log_text());
    let paths = mounted_paths(&mnt);
    assert!(paths.iter().all(|p| !p.contains('/')), "flat tree of the new template: {paths:?}");
    assert_eq!(paths, rendered_paths(t.path(), &manifest));
    assert_eq!(m.stop(), Some(0));

    // 5. A catalog deleted and rebuilt never matches the old snapshot (same change-log
    //    positions, another catalog).
    let stale = fs::read(&snap).unwrap();
    fs::remove_file(t.path().join("state/catalog.db")).unwrap();
    let _ = fs::remove_file(t.path().join("state/catalog.db-wal"));
    let _ = fs::remove_file(t.path().join("state/catalog.db-shm"));
    let manifest = write_manifest(t.path(), &lib, quiet);
    scan(&manifest);
    fs::write(&snap, &stale).unwrap();
    let m = Mount::start(&manifest, &mnt, &[]);
    assert!(m.log_text().contains("written for another catalog"), "{}", m.log_text());
    assert_eq!(mounted_paths(&mnt), rendered_paths(t.path(), &manifest));
    assert_eq!(m.stop(), Some(0));
}

#[test]
fn inotify_syncs_only_the_changed_paths_directory_moves_included() {
    let (t, lib, manifest) = scanned_library();
    let mnt = t.path().join("mnt");
    let m = Mount::start(&manifest, &mnt, &[]);
    // The sync at mount is a whole-origin one.
    assert!(wait_for(15, || m.log_text().contains("origin `main` scanned in")), "{}", m.log_text());
    let before = mounted_paths(&mnt);
    let alpha: Vec<String> =
        ls_long(&manifest).into_iter().filter(|(_, o)| o.starts_with("alpha/")).map(|(p, _)| p).collect();
    assert_eq!(alpha.len(), 3, "{alpha:?}");
    let gone = |paths: &[String]| alpha.iter().all(|a| !paths.contains(a));

    // A directory moved out of the origin: no event names its files, only the directory.
    let outside = t.path().join("outside");
    fs::rename(lib.join("alpha"), &outside).unwrap();
    assert!(wait_for(15, || gone(&mounted_paths(&mnt))), "moved-out files still there: {}", m.log_text());
    let after_out = mounted_paths(&mnt);
    assert_eq!(after_out.len(), before.len() - 3, "only alpha's files went");

    // Moved back in under another name: its files are listed from the directory event.
    fs::rename(&outside, lib.join("alpha-again")).unwrap();
    assert!(
        wait_for(15, || mounted_paths(&mnt) == before),
        "moved-in files missing: {:?} vs {before:?} {}",
        mounted_paths(&mnt),
        m.log_text()
    );
    let origins: Vec<String> = ls_long(&manifest).into_iter().map(|(_, o)| o).collect();
    assert!(origins.iter().filter(|o| o.starts_with("alpha-again/")).count() == 3, "{origins:?}");

    // A file edited in place in a nested directory.
    set_title(&lib.join("hostile/acdc.flac"), &lib.join("hostile/acdc.flac"), "Edited In Place");
    assert!(
        wait_for(15, || mounted_paths(&mnt).iter().any(|p| p.contains("Edited In Place"))),
        "in-place edit missing: {}",
        m.log_text()
    );

    // Every one of those was a per-path sync, never a rescan of the whole origin.
    let log = m.log_text();
    assert_eq!(log.matches("scanned in").count(), 1, "{log}");
    assert!(log.matches("changed path(s) synced").count() >= 3, "{log}");
    assert_eq!(m.stop(), Some(0));
    integrity(t.path());
}

#[test]
fn kill_9_during_a_background_sync_is_recovered_and_the_next_mount_converges() {
    // No scan first: the mount's own first sync fills the catalog, and is killed.
    let (t, lib) = bulk_library(4000);
    let manifest = write_manifest(t.path(), &lib, "");
    let mnt = t.path().join("mnt");
    let _guard = Unmount(mnt.clone());
    let mut seed = 0x51ce_u64;
    let mut partial = Vec::new();
    for round in 0..3u64 {
        let m = Mount::start(&manifest, &mnt, &[]);
        // Kill once the sync has committed past a seeded point (commits come every 500
        // files or every second), each round further in.
        let target = (round + 1) * 1000 + lcg(&mut seed) % 500;
        // Polled every 2 ms on one connection: a sync of these small files commits its
        // last batches tens of milliseconds apart, and a 50 ms poll could miss them all.
        let catalog = Catalog::open(&t.path().join("state/catalog.db")).unwrap();
        let start = std::time::Instant::now();
        while catalog.counts().map_or(0, |c| c.0) < target && !m.log_text().contains("scanned in") {
            assert!(start.elapsed() < std::time::Duration::from_secs(120), "{}", m.log_text());
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        drop(catalog);
        let finished = m.log_text().contains("scanned in");
        m.kill9();
        integrity(t.path());
        let (n, _, _) = Catalog::open(&t.path().join("state/catalog.db")).unwrap().counts().unwrap();
        eprintln!("round {round}: {n} file(s) in the catalog after kill -9 (sync finished: {finished})");
        partial.push((n, finished));
    }
    // The last mount recovers, its sync completes what the killed ones began, and the
    // live tree is exactly the tree of the catalog.
    let m = Mount::start(&manifest, &mnt, &[]);
    assert!(m.log_text().contains("did not shut down cleanly"), "{}", m.log_text());
    assert!(wait_for(120, || m.log_text().contains("origin `main` scanned in")), "{}", m.log_text());
    let (total, _, _) = Catalog::open(&t.path().join("state/catalog.db")).unwrap().counts().unwrap();
    assert!(total > 4000, "{total}");
    assert!(
        partial.iter().any(|(n, finished)| !finished && *n > 0 && *n < total),
        "no kill landed inside a sync that had committed something: {partial:?}"
    );
    assert!(wait_for(15, || mounted_paths(&mnt) == rendered_paths(t.path(), &manifest)), "{}", m.log_text());
    assert_eq!(mounted_paths(&mnt).len() as u64, total);
    assert_eq!(m.stop(), Some(0));
    integrity(t.path());
}

#[test]
fn kill_9_during_tag_edits_keeps_every_edit_whole() {
    let (t, lib) = bulk_library(1500);
    let manifest = write_manifest(t.path(), &lib, "sync_interval = \"off\"\nwatch = false");
    scan(&manifest);
    let comments = || -> std::collections::BTreeSet<String> {
        let cat = Catalog::open(&t.path().join("state/catalog.db")).unwrap();
        cat.tree_files(&["comment".to_owned()])
            .unwrap()
            .into_iter()
            .map(|f| f.tags.into_iter().map(|(_, v)| v).collect::<Vec<_>>().join("|"))
            .collect()
    };
    // Every file starts with the same value, so any partial edit would show as two.
    let out = musefs(&["tag", "set", "--manifest", manifest.to_str().unwrap(), "--all", "/", "comment=start"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(comments().len(), 1);
    let mut seed = 0xed17_u64;
    let mut outcomes = Vec::new();
    for round in 0..5 {
        // One command edits every file of the tree in one transaction.
        let mut child = Command::new(musefs_bin())
            .args(["tag", "set", "--manifest"])
            .arg(&manifest)
            .args(["--all", "/", &format!("comment=round {round}")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(20 + lcg(&mut seed) % 400));
        let _ = child.kill();
        let status = child.wait().unwrap();
        integrity(t.path());
        let seen = comments();
        eprintln!("round {round}: exit {status}, comment values now {seen:?}");
        assert_eq!(seen.len(), 1, "round {round}: an edit was applied to some files only: {seen:?}");
        outcomes.push(seen.into_iter().next().unwrap());
    }
    // The tree follows whatever was committed; a final, unkilled edit applies whole.
    let out = musefs(&["tag", "set", "--manifest", manifest.to_str().unwrap(), "--all", "/", "comment=final"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(comments().into_iter().collect::<Vec<_>>(), vec!["final".to_owned()]);
    eprintln!("outcomes: {outcomes:?}");
    integrity(t.path());
}

#[test]
fn a_corrupt_owner_file_is_rebuilt_not_trusted() {
    let (t, lib, manifest) = scanned_library();
    let owner = t.path().join("state/owner");
    let files = ls_long(&manifest);
    let mf = manifest.to_str().unwrap();
    // Garbage of the right size, then a truncated file: neither is trusted.
    for garbage in [vec![0xA5u8; 512], b"MUSEFSOW".to_vec()] {
        fs::write(&owner, &garbage).unwrap();
        let st = musefs(&["status", "--manifest", mf]);
        assert!(st.status.success(), "status reads a damaged owner file: {}", String::from_utf8_lossy(&st.stderr));
        let m = Mount::start(&manifest, &t.path().join("mnt"), &[]);
        assert!(m.log_text().contains("owner file was not valid; rebuilt it"), "{}", m.log_text());
        let (tree, orig) = &files[0];
        assert!(fs::read(m.path.join(tree)).unwrap() == fs::read(lib.join(orig)).unwrap());
        let st = musefs(&["status", "--manifest", mf]);
        let text = String::from_utf8_lossy(&st.stdout).into_owned();
        assert!(text.contains(&format!("pid {}", m.pid())), "the rebuilt record names the new owner: {text}");
        assert_eq!(m.stop(), Some(0));
        let st = musefs(&["status", "--manifest", mf]);
        assert!(String::from_utf8_lossy(&st.stdout).contains("released cleanly"));
    }
    integrity(t.path());
}

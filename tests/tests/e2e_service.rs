//! Running beside media servers (issue 16): ownership and modes other users see through
//! `allow_other` (the kernel enforcing them), filesystem facts (`df`, inode numbers,
//! link counts, extended attributes, the mount type), and the check that
//! `allow_other` can work before a non-root user mounts.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Command;

use musefs_tests::servers::free_port;
use musefs_tests::{curl, ls_long, make_library, metric, musefs_bin, scan, wait_for, write_manifest, Mount};

/// `cat` of `path` as user `nobody` (group `nogroup`, no supplementary groups).
fn cat_as_nobody(path: &Path) -> std::process::Output {
    Command::new("setpriv")
        .args(["--reuid=nobody", "--regid=nogroup", "--clear-groups", "cat"])
        .arg(path)
        .output()
        .unwrap()
}

#[test]
fn nobody_reads_through_allow_other_only_what_the_modes_allow() {
    let t = tempfile::tempdir().unwrap();
    fs::set_permissions(t.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let lib = t.path().join("lib");
    make_library(&lib, false);
    let manifest = write_manifest(t.path(), &lib, "allow_other = true\nuid = \"nobody\"\nfile_mode = \"0444\"\n");
    scan(&manifest);
    let mnt = t.path().join("mnt");
    let m = Mount::start(&manifest, &mnt, &[]);
    let (tree, origin) = ls_long(&manifest).into_iter().find(|(_, o)| o.ends_with("plain.flac")).unwrap();
    let served = mnt.join(&tree);
    let meta = fs::metadata(&served).unwrap();
    assert_eq!((meta.mode() & 0o7777, meta.uid()), (0o444, 65534), "file_mode and uid = \"nobody\"");
    assert_eq!(fs::metadata(mnt.join(&tree).parent().unwrap()).unwrap().mode() & 0o7777, 0o555);
    let out = cat_as_nobody(&served);
    assert!(out.status.success(), "nobody reads with allow_other: {}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.stdout.len() as u64, meta.len());
    assert_eq!(m.stop(), Some(0));

    // Modes the kernel enforces (default_permissions): 0440 owned by root's group.
    fs::write(
        &manifest,
        fs::read_to_string(&manifest)
            .unwrap()
            .replace("uid = \"nobody\"\nfile_mode = \"0444\"", "file_mode = \"0440\"\ndir_mode = 0o550"),
    )
    .unwrap();
    let m = Mount::start(&manifest, &mnt, &[]);
    let out = cat_as_nobody(&served);
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("Permission denied"), "{out:?}");
    assert_eq!(fs::metadata(&served).unwrap().mode() & 0o7777, 0o440);
    assert_eq!(m.stop(), Some(0));
    assert!(lib.join(origin).exists());
}

#[test]
fn df_inodes_link_counts_xattrs_and_the_mount_type_are_what_tools_expect() {
    let t = tempfile::tempdir().unwrap();
    let lib = t.path().join("lib");
    make_library(&lib, false);
    let manifest = write_manifest(t.path(), &lib, "");
    scan(&manifest);
    let mnt = t.path().join("mnt");
    let m = Mount::start(&manifest, &mnt, &[]);
    let files = ls_long(&manifest);
    // df: used space is the files' size, nothing free; the name limit is 255.
    let out = Command::new("stat").args(["-f", "-c", "%S %b %f %l %c"]).arg(&mnt).output().unwrap();
    let f: Vec<u64> = String::from_utf8_lossy(&out.stdout).split_whitespace().map(|x| x.parse().unwrap()).collect();
    let total: u64 = files.iter().map(|(_, o)| fs::metadata(lib.join(o)).unwrap().len()).sum();
    assert_eq!((f[2], f[3]), (0, 255), "no free blocks, NAME_MAX 255: {f:?}");
    assert!(f[0] * f[1] >= total && f[0] * f[1] < total + f[0] * files.len() as u64, "used {f:?} vs {total}");
    assert!(f[4] as usize >= files.len(), "inodes: {f:?}");
    let df = Command::new("df").args(["-B1", "--output=used"]).arg(&mnt).output().unwrap();
    let used: u64 = String::from_utf8_lossy(&df.stdout).lines().nth(1).unwrap().trim().parse().unwrap();
    assert!(used >= total, "df shows the used space: {used} < {total}");
    // /proc/mounts: type fuse.musefs.
    let mounts = fs::read_to_string("/proc/self/mounts").unwrap();
    let canon = mnt.canonicalize().unwrap();
    assert!(
        mounts.lines().any(|l| l.split(' ').nth(1) == canon.to_str() && l.split(' ').nth(2) == Some("fuse.musefs")),
        "{mounts}"
    );
    // Inodes below 2^63, the same after a remount; directories link 2 + their subdirectories.
    let walk = |root: &Path| -> BTreeMap<String, (u64, u64, bool)> {
        let mut out = BTreeMap::new();
        let mut stack = vec![root.to_owned()];
        while let Some(d) = stack.pop() {
            let meta = fs::metadata(&d).unwrap();
            let subdirs =
                fs::read_dir(&d).unwrap().filter(|e| e.as_ref().unwrap().file_type().unwrap().is_dir()).count();
            assert_eq!(meta.nlink(), 2 + subdirs as u64, "{}", d.display());
            out.insert(d.display().to_string(), (meta.ino(), meta.nlink(), true));
            for e in fs::read_dir(&d).unwrap() {
                let e = e.unwrap();
                if e.file_type().unwrap().is_dir() {
                    stack.push(e.path());
                } else {
                    let meta = e.metadata().unwrap();
                    out.insert(e.path().display().to_string(), (meta.ino(), meta.nlink(), false));
                }
            }
        }
        out
    };
    let before = walk(&mnt);
    assert!(before.values().all(|(ino, _, _)| *ino < 1 << 63), "{before:?}");
    assert!(before.len() > files.len());
    // Extended attributes: the original of a file; none on directories; no errors.
    let xattr = |p: &Path| {
        let script = "import os,sys\np=sys.argv[1]\nprint(os.listxattr(p))\n\
                      print(os.getxattr(p,'user.musefs.origin').decode() if os.listxattr(p) else '')";
        let out = Command::new("python3").args(["-c", script]).arg(p).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    };
    let (tree, origin) = &files[0];
    assert_eq!(xattr(&mnt.join(tree)), format!("['user.musefs.origin']\nmain:{origin}\n"));
    assert_eq!(xattr(&mnt), "[]\n\n");
    assert_eq!(m.stop(), Some(0));
    let m = Mount::start(&manifest, &mnt, &[]);
    assert_eq!(walk(&mnt), before, "inodes stable across a remount");
    assert_eq!(m.stop(), Some(0));
}

#[test]
fn allow_other_without_user_allow_other_is_refused_before_mounting() {
    let conf = fs::read_to_string("/etc/fuse.conf").unwrap_or_default();
    if conf.lines().any(|l| l.trim() == "user_allow_other") {
        eprintln!("skipped: /etc/fuse.conf has user_allow_other");
        return;
    }
    let t = tempfile::tempdir().unwrap();
    fs::set_permissions(t.path(), fs::Permissions::from_mode(0o777)).unwrap();
    let lib = t.path().join("lib");
    make_library(&lib, false);
    let manifest = write_manifest(t.path(), &lib, "allow_other = true");
    scan(&manifest);
    Command::new("chown").args(["-R", "nobody"]).arg(t.path()).status().unwrap();
    let mnt = t.path().join("mnt");
    fs::create_dir(&mnt).unwrap();
    Command::new("chown").arg("nobody").arg(&mnt).status().unwrap();
    let out = Command::new("setpriv")
        .args(["--reuid=nobody", "--regid=nogroup", "--clear-groups"])
        .arg(musefs_bin())
        .args(["mount", "--manifest"])
        .arg(&manifest)
        .arg(&mnt)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("user_allow_other") && err.contains("/etc/fuse.conf"), "{err}");
    assert!(!musefs_tests::is_fuse_mounted(&mnt));
}

/// Times media servers can use: a file's mtime is its original's until an edit, then the
/// edit's; the album directory's time moves with every change of its entries; nothing
/// moves on a remount.
#[test]
fn an_edit_bumps_the_file_and_album_times_and_a_remount_changes_none() {
    let t = tempfile::tempdir().unwrap();
    let lib = t.path().join("lib");
    make_library(&lib, false);
    let manifest = write_manifest(t.path(), &lib, "mode = \"synthesis\"\nrefresh_interval_ms = 100\n");
    scan(&manifest);
    let mnt = t.path().join("mnt");
    let m = Mount::start(&manifest, &mnt, &[]);
    let (tree, origin) = ls_long(&manifest).into_iter().find(|(_, o)| o.ends_with("plain.flac")).unwrap();
    let file = mnt.join(&tree);
    let album = file.parent().unwrap().to_owned();
    let mtime = |p: &Path| {
        fs::metadata(p).unwrap().mtime_nsec() as i128 + fs::metadata(p).unwrap().mtime() as i128 * 1_000_000_000
    };
    let orig = mtime(&lib.join(&origin));
    assert_eq!(mtime(&file), orig, "an unedited file has its original's mtime");
    let (album0, root0) = (mtime(&album), mtime(&mnt));
    assert!(album0 > 0 && root0 >= album0);
    // Remount: the same times.
    assert_eq!(m.stop(), Some(0));
    let m = Mount::start(&manifest, &mnt, &[]);
    assert_eq!((mtime(&file), mtime(&album), mtime(&mnt)), (orig, album0, root0), "a remount moves no time");
    // An edit that keeps the name: the file's and the album's times move past it.
    std::thread::sleep(std::time::Duration::from_millis(20));
    let before = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as i128;
    let out = musefs_tests::musefs(&[
        "tag",
        "set",
        "--manifest",
        manifest.to_str().unwrap(),
        &format!("main:{origin}"),
        "genre=Edited",
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(musefs_tests::wait_for(5, || mtime(&file) >= before), "file mtime after the edit: {}", m.log_text());
    assert!(mtime(&album) >= before && mtime(&mnt) >= before, "the album's time moved");
    let (f1, a1) = (mtime(&file), mtime(&album));
    assert_eq!(m.stop(), Some(0));
    let m = Mount::start(&manifest, &mnt, &[]);
    assert_eq!((mtime(&file), mtime(&album)), (f1, a1), "edit times persist across a remount");
    // A file removed from the album (the mount's watch syncs it): the album's time moves.
    let sibling = ls_long(&manifest)
        .into_iter()
        .find(|(t, o)| o != &origin && Path::new(t).parent() == Path::new(&tree).parent())
        .unwrap();
    fs::remove_file(lib.join(&sibling.1)).unwrap(); // (the mount watches the origin)
    assert!(musefs_tests::wait_for(5, || !mnt.join(&sibling.0).exists() && mtime(&album) > a1), "{}", m.log_text());
    assert_eq!(m.stop(), Some(0));
}

/// systemd `Type=notify`: READY=1 arrives once the mount is up (the tree is there when
/// it does), STOPPING=1 on SIGTERM; SIGHUP unmounts cleanly like SIGTERM; `musefs sync`
/// asks the running mount to sync (and says there is none when there is not).
#[test]
fn ready_arrives_once_mounted_sighup_unmounts_and_sync_reaches_the_mount() {
    use std::os::unix::net::UnixDatagram;
    let t = tempfile::tempdir().unwrap();
    let lib = t.path().join("lib");
    make_library(&lib, false);
    let manifest = write_manifest(t.path(), &lib, "sync_interval = \"off\"\nwatch = false\n");
    scan(&manifest);
    let m = manifest.to_str().unwrap();
    let out = musefs_tests::musefs(&["sync", "--manifest", m]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("no musefs mount is running") && err.contains("musefs scan"),
        "{err}"
    );
    let mnt = t.path().join("mnt");
    fs::create_dir_all(&mnt).unwrap();
    let sock_path = t.path().join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(std::time::Duration::from_secs(20))).unwrap();
    let log_path = t.path().join("mount.log");
    for sig in ["TERM", "HUP"] {
        let log = fs::File::create(&log_path).unwrap();
        let mut child = Command::new(musefs_bin())
            .args(["mount", "--manifest", m])
            .arg(&mnt)
            .env("NOTIFY_SOCKET", &sock_path)
            .stderr(log)
            .spawn()
            .unwrap();
        let mut buf = [0u8; 512];
        let n = sock.recv(&mut buf).expect("READY=1 within 20 s");
        let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
        assert!(msg.starts_with("READY=1\nSTATUS=serving 13 files"), "{msg}");
        assert!(musefs_tests::is_fuse_mounted(&mnt), "READY=1 came before the mount was up");
        assert!(fs::read_dir(&mnt).unwrap().count() > 0, "the tree is there when READY=1 arrives");
        if sig == "TERM" {
            let out = musefs_tests::musefs(&["sync", "--manifest", m]);
            let so = String::from_utf8_lossy(&out.stdout);
            assert!(out.status.success() && so.contains("to sync now") && so.contains(&child.id().to_string()), "{so}");
            let got = || fs::read_to_string(&log_path).unwrap().contains("SIGUSR1: background sync is off");
            assert!(musefs_tests::wait_for(5, got), "the mount got the sync request");
        }
        assert!(Command::new("kill").args([&format!("-{sig}"), &child.id().to_string()]).status().unwrap().success());
        let n = sock.recv(&mut buf).expect("STOPPING=1");
        assert_eq!(&buf[..n], b"STOPPING=1");
        let status = child.wait().unwrap();
        assert_eq!(status.code(), Some(0), "SIG{sig} unmounts cleanly");
        assert!(!musefs_tests::is_fuse_mounted(&mnt), "SIG{sig} left a mount behind");
    }
}

/// The systemd units in `contrib/systemd` are valid (`systemd-analyze verify`, with the
/// binary path pointed at the one built here) and run the commands this build has.
#[test]
fn the_systemd_units_verify() {
    let t = tempfile::tempdir().unwrap();
    let contrib = Path::new(env!("CARGO_MANIFEST_DIR")).join("../contrib/systemd");
    let bin = musefs_bin();
    let mut units = Vec::new();
    for (file, instance) in [
        ("musefs@.service", "musefs@music.service"),
        ("musefs-scan@.service", "musefs-scan@music.service"),
        ("musefs-scan@.timer", "musefs-scan@music.timer"),
    ] {
        let text =
            fs::read_to_string(contrib.join(file)).unwrap().replace("/usr/local/bin/musefs", bin.to_str().unwrap());
        fs::write(t.path().join(instance), text).unwrap();
        units.push(t.path().join(instance));
    }
    let unit = fs::read_to_string(contrib.join("musefs@.service")).unwrap();
    assert!(unit.contains("Type=notify") && unit.contains("WatchdogSec="), "{unit}");
    let out = Command::new("systemd-analyze").arg("verify").args(&units).output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    let bad: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(out.status.success() && bad.is_empty(), "{text}");
    // Every command the units run is one this binary has.
    for cmd in ["mount", "sync", "scan"] {
        let out = Command::new(&bin).args([cmd, "--help"]).output().unwrap();
        assert!(out.status.success(), "musefs {cmd}");
    }
}

/// Plain commands print their result on stdout and nothing on stderr unless something
/// is wrong; `-v` adds what they do. (Before: `ls` and `tag show` logged INFO lines and
/// `scan` printed its summary twice.)
#[test]
fn plain_commands_are_quiet_unless_asked() {
    let t = tempfile::tempdir().unwrap();
    let lib = t.path().join("lib");
    make_library(&lib, false);
    let manifest = write_manifest(t.path(), &lib, "");
    let m = manifest.to_str().unwrap();
    for args in [
        vec!["scan", "--manifest", m],
        vec!["ls", "--manifest", m],
        vec!["tag", "show", "--manifest", m, "main:alpha/plain.flac"],
        vec!["status", "--manifest", m],
        vec!["scan", "--manifest", m],
    ] {
        let out = musefs_tests::musefs(&args);
        let (so, se) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success() && !so.is_empty() && se.is_empty(), "{args:?}: stdout {so}\nstderr {se}");
        if args[0] == "scan" {
            assert_eq!(so.matches("scan:").count(), 1, "one summary: {so}");
        }
    }
    let out = musefs_tests::musefs(&["ls", "-v", "--manifest", m]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("INFO"), "-v shows what it does");
}

/// `mount -t fuse.musefs MANIFEST MOUNTPOINT -o allow_other` (what an `/etc/fstab` line
/// does): fuse3's `mount.fuse3` runs `musefs MANIFEST MOUNTPOINT -o ...` from the
/// system's PATH, which starts the mount in the background and returns once it is up.
#[test]
fn mount_t_fuse_musefs_mounts_through_the_helper() {
    struct Unlink(Option<&'static Path>);
    impl Drop for Unlink {
        fn drop(&mut self) {
            if let Some(p) = self.0 {
                let _ = fs::remove_file(p);
            }
        }
    }
    // mount(8) runs helpers with a fixed PATH: put this build there for the test.
    let link = Path::new("/usr/local/bin/musefs");
    let _unlink = match fs::symlink_metadata(link) {
        Err(_) => {
            std::os::unix::fs::symlink(musefs_bin(), link).unwrap();
            Unlink(Some(link))
        }
        Ok(_) if fs::canonicalize(link).ok() == fs::canonicalize(musefs_bin()).ok() => Unlink(None),
        Ok(_) => {
            eprintln!("skipped: {} is another musefs", link.display());
            return;
        }
    };
    let t = tempfile::tempdir().unwrap();
    let lib = t.path().join("lib");
    make_library(&lib, false);
    let manifest = write_manifest(t.path(), &lib, "");
    scan(&manifest);
    let mnt = t.path().join("mnt");
    fs::create_dir_all(&mnt).unwrap();
    let out = Command::new("mount")
        .args(["-t", "fuse.musefs"])
        .arg(&manifest)
        .arg(&mnt)
        .args(["-o", "bogus"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("unknown mount option `bogus`"), "{err}");
    let out = Command::new("mount")
        .args(["-t", "fuse.musefs"])
        .arg(&manifest)
        .arg(&mnt)
        .args(["-o", "allow_other,nofail,_netdev"])
        .output()
        .unwrap();
    assert!(out.status.success(), "mount -t fuse.musefs: {}", String::from_utf8_lossy(&out.stderr));
    let canon = mnt.canonicalize().unwrap();
    let mounts = fs::read_to_string("/proc/self/mounts").unwrap();
    let line = mounts.lines().find(|l| l.split(' ').nth(1) == canon.to_str()).unwrap_or_else(|| panic!("{mounts}"));
    assert!(line.contains(" fuse.musefs ") && line.contains("allow_other"), "{line}");
    let (tree, _) = ls_long(&manifest).into_iter().next().unwrap();
    assert!(mnt.join(&tree).exists());
    let out = cat_as_nobody(&mnt.join(&tree));
    assert!(out.status.success(), "allow_other from -o: {}", String::from_utf8_lossy(&out.stderr));
    // An external unmount ends the background mount.
    assert!(Command::new("umount").arg(&mnt).status().unwrap().success());
    let status = || musefs_tests::musefs(&["status", "--manifest", manifest.to_str().unwrap()]);
    assert!(
        musefs_tests::wait_for(10, || !String::from_utf8_lossy(&status().stdout).contains("mounted at")),
        "the background mount ended: {}",
        String::from_utf8_lossy(&status().stdout)
    );
    let log = fs::read_to_string(t.path().join("state/mount.log")).unwrap();
    assert!(log.contains("unmounted externally"), "{log}");
}

/// A mountpoint that is not empty is refused (mounting would hide what is there)
/// unless `--nonempty` asks for it.
#[test]
fn a_non_empty_mountpoint_is_refused_unless_asked() {
    let t = tempfile::tempdir().unwrap();
    let lib = t.path().join("lib");
    make_library(&lib, false);
    let manifest = write_manifest(t.path(), &lib, "");
    scan(&manifest);
    let mnt = t.path().join("mnt");
    fs::create_dir_all(&mnt).unwrap();
    fs::write(mnt.join("precious.txt"), b"x").unwrap();
    let out = musefs_tests::musefs(&["mount", "--manifest", manifest.to_str().unwrap(), mnt.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("not empty") && err.contains("--nonempty"), "{err}");
    assert!(!musefs_tests::is_fuse_mounted(&mnt));
    let m = Mount::start(&manifest, &mnt, &["--nonempty"]);
    assert!(!mnt.join("precious.txt").exists() && fs::read_dir(&mnt).unwrap().count() > 0);
    assert_eq!(m.stop(), Some(0));
    assert!(mnt.join("precious.txt").exists(), "uncovered again");
}

/// An installed musefs (`PREFIX/bin/musefs`) finds its plugins in `PREFIX/lib/musefs`;
/// `MUSEFS_PLUGIN_DIR` points elsewhere; "no plugins loaded" says where it looked.
#[test]
fn an_installed_binary_finds_its_plugins_in_lib_musefs() {
    let t = tempfile::tempdir().unwrap();
    let (bin, lib) = (t.path().join("prefix/bin"), t.path().join("prefix/lib/musefs"));
    fs::create_dir_all(&bin).unwrap();
    fs::create_dir_all(&lib).unwrap();
    fs::copy(musefs_bin(), bin.join("musefs")).unwrap();
    for e in fs::read_dir(musefs_tests::target_dir()).unwrap() {
        let p = e.unwrap().path();
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        if name.starts_with("libmusefs_") && name.ends_with(".so") {
            fs::copy(&p, lib.join(&name)).unwrap();
        }
    }
    let out = Command::new(bin.join("musefs")).args(["plugins", "list"]).output().unwrap();
    let so = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && so.contains("riff") && so.contains(lib.to_str().unwrap()), "{so}");
    let empty = t.path().join("empty");
    fs::create_dir_all(&empty).unwrap();
    let out =
        Command::new(bin.join("musefs")).args(["plugins", "list"]).env("MUSEFS_PLUGIN_DIR", &empty).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("no plugins loaded from") && err.contains("--plugin-dir"), "{err}");
    assert!(err.contains(empty.to_str().unwrap()) && err.contains("lib/musefs"), "{err}");
}

/// The demo library scanned, under a manifest with `extra` and a metrics endpoint on a
/// free port: (its folder, the manifest, the port, the endpoint's URL).
fn metered_library(extra: &str) -> (tempfile::TempDir, std::path::PathBuf, u16, String) {
    let t = tempfile::tempdir().unwrap();
    let lib = t.path().join("lib");
    make_library(&lib, false);
    let port = free_port();
    let manifest = write_manifest(t.path(), &lib, &format!("{extra}\nmetrics_addr = \"127.0.0.1:{port}\"\n"));
    scan(&manifest);
    (t, manifest, port, format!("http://127.0.0.1:{port}/metrics"))
}

#[test]
fn the_metrics_endpoint_counts_what_is_read_and_status_json_names_the_mount() {
    let (t, manifest, port, url) = metered_library("mode = \"synthesis\"");
    let mnt = t.path().join("mnt");
    let m = Mount::start(&manifest, &mnt, &[]);
    let before = curl(&url);
    let files = ls_long(&manifest);
    assert_eq!(metric(&before, "musefs_tree_files") as usize, files.len(), "{before}");
    assert!(metric(&before, "process_resident_memory_bytes") > 1e6, "{before}");
    let opens = metric(&before, "musefs_opens_total{mode=\"synthesis\"}");
    let bytes = metric(&before, "musefs_read_bytes_total{mode=\"synthesis\"}");
    let mut read = 0u64;
    for (tree, _) in &files {
        read += fs::read(mnt.join(tree)).unwrap().len() as u64;
    }
    let after = curl(&url);
    assert!(metric(&after, "musefs_opens_total{mode=\"synthesis\"}") >= opens + files.len() as f64, "{after}");
    let served = metric(&after, "musefs_read_bytes_total{mode=\"synthesis\"}") - bytes;
    assert!(served >= read as f64, "{served} bytes counted, {read} read: {after}");
    assert!(metric(&after, "musefs_header_cache_misses_total") >= 1.0, "{after}");
    // The kernel's requests, by operation: an open and a release per file read.
    let fuse = |page: &str, op: &str| metric(page, &format!("musefs_fuse_requests_total{{op=\"{op}\"}}"));
    assert!(fuse(&after, "open") - fuse(&before, "open") >= files.len() as f64, "{after}");
    assert!(fuse(&after, "lookup") > 0.0 && fuse(&after, "read") > 0.0, "{after}");
    assert!(wait_for(5, || fuse(&curl(&url), "release") - fuse(&before, "release") >= files.len() as f64));
    assert!(after.contains("musefs_origin_request_seconds_bucket{"), "origin latency histogram: {after}");
    assert!(
        after.contains("musefs_syncs_total{origin=\"main\",result=\"ok\"}"),
        "the mount's first background sync: {after}"
    );
    // Anything but /metrics is not found.
    let out = Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-w", "%{http_code}"])
        .arg(format!("http://127.0.0.1:{port}/"))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "404");

    // status --json: the running mount, for scripts.
    let out = Command::new(musefs_bin()).args(["status", "--json", "--manifest"]).arg(&manifest).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["owner"]["state"], "active", "{v}");
    assert_eq!(v["owner"]["pid"], m.pid(), "{v}");
    assert_eq!(v["owner"]["mountpoint"], mnt.to_str().unwrap(), "{v}");
    assert_eq!(v["files"].as_u64(), Some(files.len() as u64), "{v}");
    assert_eq!(v["origins"][0]["name"], "main", "{v}");

    // A port in use is refused before mounting, naming the key.
    let busy = std::net::TcpListener::bind(("127.0.0.1", 0)).unwrap();
    let busy_port = busy.local_addr().unwrap().port();
    let other = t.path().join("m2.toml");
    assert_eq!(m.stop(), Some(0));
    fs::write(
        &other,
        fs::read_to_string(&manifest).unwrap().replace(&format!("127.0.0.1:{port}"), &format!("127.0.0.1:{busy_port}")),
    )
    .unwrap();
    let out = Command::new(musefs_bin()).args(["mount", "--manifest"]).arg(&other).arg(&mnt).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("metrics_addr") && err.contains(&busy_port.to_string()), "{err}");
    assert!(!musefs_tests::is_fuse_mounted(&mnt), "nothing mounted");
}

/// `case_insensitive = true` (for SMB re-exports and macOS clients): an album whose
/// tags spell its artist two ways is one directory, and any spelling of a path opens
/// the file.
#[test]
fn case_insensitive_mode_merges_spellings_and_finds_any_case() {
    let t = tempfile::tempdir().unwrap();
    let lib = t.path().join("lib");
    make_library(&lib, false);
    let manifest = write_manifest(t.path(), &lib, "case_insensitive = true\nsync_interval = \"off\"\n");
    let m = manifest.to_str().unwrap();
    scan(&manifest);
    let out = musefs_tests::musefs(&[
        "tag",
        "set",
        "--manifest",
        m,
        "main:alpha/plain.flac",
        "albumartist=ALPHA",
        "album=FIRST",
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let files: Vec<String> = ls_long(&manifest).into_iter().map(|(p, _)| p).collect();
    let albums: std::collections::BTreeSet<&str> =
        files.iter().filter(|p| p.to_lowercase().starts_with("alpha/")).map(|p| &p[..p.rfind('/').unwrap()]).collect();
    assert_eq!(albums.len(), 1, "one album directory: {files:?}");
    let mnt = t.path().join("mnt");
    let mnt_guard = Mount::start(&manifest, &mnt, &[]);
    let dirs: Vec<String> =
        fs::read_dir(&mnt).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    assert_eq!(dirs.iter().filter(|d| d.eq_ignore_ascii_case("alpha")).count(), 1, "{dirs:?}");
    let album = albums.iter().next().unwrap();
    assert_eq!(
        fs::read_dir(mnt.join(album))
            .unwrap()
            .filter(|e| e.as_ref().unwrap().path().extension().is_some_and(|x| x == "flac"))
            .count(),
        3
    );
    // Any spelling opens the file, with the same bytes.
    let plain = files.iter().find(|p| p.ends_with("01 Plain.flac")).unwrap();
    let want = fs::read(mnt.join(plain)).unwrap();
    assert!(fs::read(mnt.join(plain.to_uppercase())).unwrap() == want);
    assert!(fs::read(mnt.join(plain.to_lowercase())).unwrap() == want);
    // Listing shows each name once, in its own spelling.
    assert!(!fs::read_dir(mnt.join(album)).unwrap().any(|e| e.unwrap().file_name() == "01 PLAIN.FLAC"));
    assert_eq!(mnt_guard.stop(), Some(0));
}

/// Every entry under `dir` (recursively) with its size: what a media server's scan reads.
fn walk_stat(dir: &Path, out: &mut BTreeMap<String, u64>) {
    for e in fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        let md = fs::symlink_metadata(e.path()).unwrap();
        out.insert(e.path().display().to_string(), md.len());
        if md.is_dir() {
            walk_stat(&e.path(), out);
        }
    }
}

#[test]
fn a_second_walk_of_the_tree_costs_no_request_and_an_edit_still_shows() {
    let (t, manifest, _, url) = metered_library("");
    let mnt = t.path().join("mnt");
    let m = Mount::start(&manifest, &mnt, &[]);
    let total = |page: &str| -> f64 {
        page.lines()
            .filter(|l| l.starts_with("musefs_fuse_requests_total{"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    let mut first = BTreeMap::new();
    walk_stat(&mnt, &mut first);
    let files = ls_long(&manifest);
    assert!(first.len() >= files.len(), "{first:?}");
    std::thread::sleep(std::time::Duration::from_millis(300)); // releases are asynchronous
    let before = curl(&url);
    let mut again = BTreeMap::new();
    walk_stat(&mnt, &mut again);
    let after = curl(&url);
    assert_eq!(again, first);
    // Entries, attributes and listings are all kept by the kernel (no OPENDIR either).
    assert_eq!(total(&after) - total(&before), 0.0, "requests during the second walk:\n{after}");

    // An edit still reaches the kernel's cached listing at once (the cache is invalidated).
    let (old, _) = files.iter().find(|(p, _)| p.ends_with(".flac")).unwrap().clone();
    let out =
        musefs_tests::musefs(&["tag", "set", "--manifest", manifest.to_str().unwrap(), &old, "title=Walked Again"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let dir = mnt.join(Path::new(&old).parent().unwrap());
    let names = || -> Vec<String> {
        fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect()
    };
    assert!(wait_for(5, || names().iter().any(|n| n.contains("Walked Again"))), "{:?}", names());
    let old_name = Path::new(&old).file_name().unwrap().to_string_lossy().into_owned();
    assert!(!names().contains(&old_name), "{:?}", names());
    assert_eq!(m.stop(), Some(0));
}

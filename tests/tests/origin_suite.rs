//! The behaviour suite every origin plugin must pass, in the spirit of OpenDAL's
//! behaviour tests: one set of checks, run through the real ABI against each bundled
//! origin plugin backed by a real store: `local` (a temp dir), `s3` (a moto server on
//! loopback), `sftp` (a private sshd on loopback).
//!
//! Checks: recursive listing in small pages finds exactly the fixture (sizes, non-ASCII
//! and nested names, an empty file) and a finished lister stays finished; a one-level
//! listing shows top-level files and directories only; stat sizes and stamps; a missing
//! path is NOT_FOUND (not retryable); hostile paths are INVALID_INPUT; reads: whole
//! files in large and in small sequential reads, a seek back and forward in the middle
//! of a sequential run, seeded random preads, reads at and past the end; a cancelled
//! call is CANCELLED; an object replaced after open never yields bytes of the new
//! version (remote origins: CHANGED); remote origins, with the server stopped, fail
//! with a retryable error within the call's timeout.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use musefs_core::plugins::Plugins;
use musefs_plugin_api::abi_stable::std_types::RSliceMut;
use musefs_plugin_api::{CallCtx, EntryKind, ErrorKind, HandleBox, ListRequest, OriginBox, PluginError};
use musefs_tests::servers::{make_world_readable, S3Server, Sshd};
use musefs_tests::{lcg, target_dir};

/// The fixture: relative path → content.
fn fixture() -> BTreeMap<String, Vec<u8>> {
    let mut seed = 0x5eed_u64;
    let mut bytes = |n: usize| (0..n).map(|_| (lcg(&mut seed) >> 24) as u8).collect::<Vec<u8>>();
    let mut m = BTreeMap::new();
    m.insert("top.bin".to_owned(), bytes(1024 * 1024 + 17));
    m.insert("big.bin".to_owned(), bytes(3 * 1024 * 1024 + 4321));
    m.insert("empty.bin".to_owned(), Vec::new());
    m.insert("Artist/Album/01 space name.bin".to_owned(), bytes(70_000));
    m.insert("Artist/Album/02 日本語 ÄÖ.bin".to_owned(), bytes(1234));
    m.insert("d1/d2/d3/deep.bin".to_owned(), bytes(10));
    m
}

fn write_fixture(root: &Path, f: &BTreeMap<String, Vec<u8>>) {
    for (p, data) in f {
        let abs = root.join(p);
        std::fs::create_dir_all(abs.parent().unwrap()).unwrap();
        std::fs::write(abs, data).unwrap();
    }
}

/// One origin under test.
struct Service {
    name: &'static str,
    origin: OriginBox,
    /// Replaces the object at a path with new bytes (a new version, new size).
    replace: Replace,
    /// Makes the store unreachable (remote origins).
    stop: Option<Box<dyn FnMut()>>,
}

fn plugins() -> Plugins {
    let p = Plugins::load_dir(&target_dir()).unwrap();
    assert!(p.errors.is_empty(), "{:?}", p.errors.iter().map(ToString::to_string).collect::<Vec<_>>());
    p
}

fn ctx() -> CallCtx {
    CallCtx::with_timeout(Duration::from_secs(20))
}

fn read_exact(h: &HandleBox, offset: u64, n: usize) -> Result<Vec<u8>, PluginError> {
    let mut buf = vec![0u8; n];
    let mut done = 0;
    while done < n {
        let got = h.read_at(&ctx(), offset + done as u64, RSliceMut::from_mut_slice(&mut buf[done..])).into_result()?;
        assert!(got > 0, "a read returned 0 before the end ({} of {n} at {offset})", done);
        done += got;
    }
    Ok(buf)
}

fn list_all(o: &OriginBox, dir: &str, recursive: bool, page: u32) -> Vec<(String, EntryKind, u64)> {
    let req = ListRequest { dir: dir.into(), recursive };
    let mut l = o.list(&ctx(), &req).into_result().unwrap();
    let mut out = Vec::new();
    loop {
        let p = l.next_page(&ctx(), page).into_result().unwrap();
        assert!(p.len() <= page as usize, "a page of {} entries for max {page}", p.len());
        if p.is_empty() {
            break;
        }
        out.extend(p.into_iter().map(|e| (e.path.into_string(), e.stat.kind, e.stat.size)));
    }
    // A finished lister stays finished (and never panics when asked again).
    assert!(l.next_page(&ctx(), page).into_result().unwrap().is_empty());
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

fn run_suite(mut s: Service) {
    let f = fixture();
    let o = &s.origin;
    let name = s.name;

    // Listing.
    let files: Vec<(String, u64)> =
        list_all(o, "", true, 2).into_iter().filter(|e| e.1 == EntryKind::FILE).map(|e| (e.0, e.2)).collect();
    let want: Vec<(String, u64)> = f.iter().map(|(p, d)| (p.clone(), d.len() as u64)).collect();
    assert_eq!(files, want, "{name}: recursive listing");
    let top = list_all(o, "", false, 100);
    let top_files: Vec<&str> = top.iter().filter(|e| e.1 == EntryKind::FILE).map(|e| e.0.as_str()).collect();
    let top_dirs: Vec<&str> = top.iter().filter(|e| e.1 == EntryKind::DIR).map(|e| e.0.as_str()).collect();
    assert_eq!(top_files, ["big.bin", "empty.bin", "top.bin"], "{name}: one-level listing {top:?}");
    assert_eq!(top_dirs, ["Artist", "d1"], "{name}: one-level listing {top:?}");
    let sub = list_all(o, "Artist", true, 100);
    assert_eq!(sub.len(), 2, "{name}: listing a subdirectory {sub:?}");
    assert!(sub.iter().all(|e| e.0.starts_with("Artist/Album/")), "{name}: {sub:?}");

    // Stat.
    for (p, d) in &f {
        let st = o.stat(&ctx(), p.as_str().into()).into_result().unwrap_or_else(|e| panic!("{name}: stat {p}: {e}"));
        assert_eq!((st.kind, st.size), (EntryKind::FILE, d.len() as u64), "{name}: stat {p}");
        assert!(st.mtime_ns.is_some() || st.etag.is_some(), "{name}: {p} has no stamp");
    }
    let e = o.stat(&ctx(), "no/such/file.bin".into()).into_result().unwrap_err();
    assert_eq!((e.kind, e.retryable), (ErrorKind::NOT_FOUND, false), "{name}: missing file: {e}");
    let e = o.open(&ctx(), "nope.bin".into()).into_result().err().expect("opening a missing file");
    assert_eq!(e.kind, ErrorKind::NOT_FOUND, "{name}: {e}");
    for bad in ["../x", "/etc/passwd", "a/../../b", "a//b", "./top.bin", ""] {
        let e = o.stat(&ctx(), bad.into()).into_result().unwrap_err();
        assert_eq!(e.kind, ErrorKind::INVALID_INPUT, "{name}: stat {bad:?}: {e}");
        let e = o.open(&ctx(), bad.into()).into_result().err().unwrap_or_else(|| panic!("{name}: opened {bad:?}"));
        assert_eq!(e.kind, ErrorKind::INVALID_INPUT, "{name}: open {bad:?}: {e}");
    }

    // Reads.
    for (p, d) in &f {
        let h = o.open(&ctx(), p.as_str().into()).into_result().unwrap();
        assert_eq!(h.len(), d.len() as u64, "{name}: {p}");
        // Large sequential reads (what the chunk cache does).
        let mut got = Vec::new();
        let mut off = 0;
        while off < d.len() {
            let n = (1 << 20).min(d.len() - off);
            got.extend(read_exact(&h, off as u64, n).unwrap());
            off += n;
        }
        assert!(got == *d, "{name}: {p}: large sequential reads differ");
        // At and past the end.
        let mut b = [0u8; 16];
        for at in [d.len() as u64, d.len() as u64 + 1, u64::MAX / 2] {
            let n = h.read_at(&ctx(), at, RSliceMut::from_mut_slice(&mut b)).into_result().unwrap();
            assert_eq!(n, 0, "{name}: {p}: read at {at}");
        }
    }
    let big = &f["big.bin"];
    let h = o.open(&ctx(), "big.bin".into()).into_result().unwrap();
    // Small sequential reads (a format plugin parsing a header).
    let mut got = Vec::new();
    while got.len() < 400_000 {
        got.extend(read_exact(&h, got.len() as u64, 1000).unwrap());
    }
    assert!(got == big[..got.len()], "{name}: small sequential reads differ");
    // A sequential run broken by seeks back and forward.
    let mb = 1 << 20;
    for (at, n) in [(0, mb), (mb, mb), (mb / 2, mb), (2 * mb, mb), (3 * mb, big.len() - 3 * mb), (mb, 4096)] {
        assert!(read_exact(&h, at as u64, n).unwrap() == big[at..at + n], "{name}: read {n} at {at}");
    }
    let mut seed = 42;
    for _ in 0..40 {
        let at = (lcg(&mut seed) % big.len() as u64) as usize;
        let n = ((lcg(&mut seed) % 200_000) as usize).min(big.len() - at).max(1);
        assert!(read_exact(&h, at as u64, n).unwrap() == big[at..at + n], "{name}: random read {n} at {at}");
    }
    // Cancelled.
    let c = ctx();
    c.cancel();
    let mut b = vec![0u8; 4096];
    let e = h.read_at(&c, 12345, RSliceMut::from_mut_slice(&mut b)).into_result().unwrap_err();
    assert_eq!(e.kind, ErrorKind::CANCELLED, "{name}: {e}");
    let e = o.stat(&c, "top.bin".into()).into_result().unwrap_err();
    assert_eq!(e.kind, ErrorKind::CANCELLED, "{name}: {e}");

    // Replaced after open: never bytes of the new version.
    let old = &f["top.bin"];
    let h = o.open(&ctx(), "top.bin".into()).into_result().unwrap();
    read_exact(&h, 0, 100).unwrap();
    let new: Vec<u8> = old.iter().map(|b| !b).chain([1, 2, 3]).collect();
    (s.replace)("top.bin", &new);
    let at = old.len() / 2;
    match read_exact(&h, at as u64, 64 * 1024) {
        Ok(got) => {
            assert!(s.stop.is_none(), "{name}: a remote origin served a read after its object was replaced");
            assert!(got == old[at..at + 64 * 1024], "{name}: bytes of the new version after open");
        }
        Err(e) => assert_eq!(e.kind, ErrorKind::CHANGED, "{name}: {e}"),
    }
    let h = o.open(&ctx(), "top.bin".into()).into_result().unwrap();
    assert_eq!(h.len(), new.len() as u64, "{name}: a new open sees the new version");
    assert!(read_exact(&h, 0, new.len()).unwrap() == new, "{name}: the new version");

    // Unreachable.
    if let Some(stop) = s.stop.as_mut() {
        stop();
        let c = CallCtx::with_timeout(Duration::from_secs(3));
        let t = Instant::now();
        let e = o.stat(&c, "big.bin".into()).into_result().unwrap_err();
        assert!(e.retryable, "{name}: an unreachable origin is retryable: {e}");
        assert!(t.elapsed() < Duration::from_secs(8), "{name}: {:?}", t.elapsed());
        let t = Instant::now();
        let mut b = vec![0u8; 1 << 20];
        let e = h.read_at(&c, 0, RSliceMut::from_mut_slice(&mut b)).into_result().unwrap_err();
        assert!(e.retryable || e.kind == ErrorKind::CHANGED, "{name}: {e}");
        assert!(t.elapsed() < Duration::from_secs(8), "{name}: {:?}", t.elapsed());
    }
}

/// Replaces the object at a path with new bytes.
type Replace = Box<dyn Fn(&str, &[u8])>;

fn replace_file(root: PathBuf) -> Replace {
    Box::new(move |p, data| {
        // A new file renamed over the old one, as a tagger or a sync tool would.
        let tmp = root.join(".replace.tmp");
        std::fs::write(&tmp, data).unwrap();
        std::fs::rename(&tmp, root.join(p)).unwrap();
        make_world_readable(&root);
        // A later mtime even on filesystems with coarse timestamps.
        let later = std::time::SystemTime::now() + Duration::from_secs(5);
        std::fs::File::options().write(true).open(root.join(p)).unwrap().set_modified(later).unwrap();
    })
}

#[test]
fn local_origin_behaviour() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("root");
    write_fixture(&root, &fixture());
    let p = plugins();
    let origin = p.new_origin("local", &format!("{{\"root\":{:?}}}", root.display().to_string())).unwrap();
    run_suite(Service { name: "local", origin, replace: replace_file(root), stop: None });
}

#[test]
fn s3_origin_behaviour() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("root");
    write_fixture(&root, &fixture());
    let server = S3Server::start(t.path(), None);
    server.put_dir("suite", "in/here", &root);
    let p = plugins();
    let cfg = format!(
        "{{\"bucket\":\"suite\",\"prefix\":\"in/here\",\"endpoint\":{:?},\"allow_http\":true,\
         \"access_key_id\":\"k\",\"secret_access_key\":\"s\",\"retries\":2}}",
        server.endpoint()
    );
    let origin = p.new_origin("s3", &cfg).unwrap();
    let server = std::rc::Rc::new(std::cell::RefCell::new(server));
    let (s1, s2) = (server.clone(), server.clone());
    let dir = t.path().to_owned();
    run_suite(Service {
        name: "s3",
        origin,
        replace: Box::new(move |p, data| {
            let f = dir.join("replacement");
            std::fs::write(&f, data).unwrap();
            s1.borrow().put_file("suite", &format!("in/here/{p}"), &f);
        }),
        stop: Some(Box::new(move || s2.borrow_mut().stop())),
    });
}

#[test]
fn sftp_origin_behaviour() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("root");
    write_fixture(&root, &fixture());
    make_world_readable(&root);
    let sshd = Sshd::start(t.path());
    let p = plugins();
    let cfg = format!(
        "{{\"endpoint\":{:?},\"key\":{:?},\"known_hosts_strategy\":\"accept\",\"root\":{:?},\"retries\":2}}",
        sshd.endpoint(),
        sshd.key.display().to_string(),
        root.display().to_string()
    );
    let origin = p.new_origin("sftp", &cfg).unwrap();
    let sshd = std::rc::Rc::new(std::cell::RefCell::new(sshd));
    let s2 = sshd.clone();
    run_suite(Service {
        name: "sftp",
        origin,
        replace: replace_file(root),
        stop: Some(Box::new(move || s2.borrow_mut().stop())),
    });
}

//! Remote origins end to end against real servers on loopback: S3 (moto) and SFTP (a
//! private OpenSSH sshd). Scan reads heads only, mounts serve every file byte for byte
//! through the chunk cache, synthesis output passes the validators, a remount refetches
//! nothing (the server is down by then), uncached reads fail fast while the origin is
//! down and work again once it is back, corrupt chunks are replaced, and a replaced
//! object invalidates its cached chunks on the next scan.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use musefs_tests::servers::{make_world_readable, S3Server, Sshd};
use musefs_tests::{assert_random_preads, audio_md5, ls_long, make_library, musefs, scan, validate, wait_for, Mount};

const CACHE: &str = "[cache]\nchunk_size = \"64KiB\"\nreadahead = 4\nmax_size = \"1GiB\"\n";

fn write_manifest(dir: &Path, origin: &str, extra: &str) -> PathBuf {
    let m = dir.join("musefs.toml");
    std::fs::write(
        &m,
        format!(
            "state_dir = {:?}\nread_timeout_ms = 3000\n{extra}\n{CACHE}\n[[origin]]\nname = \"main\"\n{origin}\n",
            dir.join("state").display().to_string()
        ),
    )
    .unwrap();
    m
}

/// The manifest lines of an S3 origin on `server` (bucket `music`, prefix `lib`), with the
/// test credentials or without any (they must then come from elsewhere).
fn s3_origin(server: &S3Server, keys: bool) -> String {
    let mut o = format!(
        "kind = \"s3\"\nbucket = \"music\"\nprefix = \"lib\"\nendpoint = {:?}\nallow_http = true\n",
        server.endpoint()
    );
    if keys {
        o.push_str("access_key_id = \"musefs-test\"\nsecret_access_key = \"musefs-test-secret\"\n");
    }
    o
}

/// `(tree path, path in the origin)` of every file, and the local original of each.
fn files(manifest: &Path, lib: &Path) -> Vec<(String, PathBuf)> {
    let out = ls_long(manifest);
    assert!(out.len() >= 13, "{out:?}");
    out.into_iter().map(|(tree, origin)| (tree, lib.join(origin))).collect()
}

fn summary_line(log: &str) -> String {
    log.lines().rev().find(|l| l.contains("chunk cache:") && l.contains("fetched")).unwrap_or_default().to_owned()
}

fn fetched(log: &str) -> u64 {
    let line = summary_line(log);
    let after = line.split("chunk cache: ").nth(1).unwrap_or_else(|| panic!("no cache summary in: {log}"));
    after.split(' ').next().unwrap().parse().unwrap()
}

fn stats(manifest: &Path) -> serde_json_lite::Value {
    let out = musefs(&["cache", "stats", "--json", "--manifest", manifest.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json_lite::parse(&String::from_utf8_lossy(&out.stdout))
}

/// Minimal JSON access for `cache stats --json` (numbers only).
mod serde_json_lite {
    pub struct Value(pub String);
    pub fn parse(s: &str) -> Value {
        Value(s.to_owned())
    }
    impl Value {
        pub fn num(&self, key: &str) -> u64 {
            let at = self.0.find(&format!("\"{key}\":")).unwrap_or_else(|| panic!("{key} in {}", self.0));
            let rest = self.0[at + key.len() + 3..].trim_start();
            rest.chars().take_while(char::is_ascii_digit).collect::<String>().parse().unwrap()
        }
    }
}

/// Reads every file through `m`, comparing with the originals; returns per-file bytes read.
fn compare_all(m: &Mount, files: &[(String, PathBuf)], skip: Option<&str>) {
    let mut seed = 7;
    for (tree, orig) in files {
        if Some(tree.as_str()) == skip {
            continue;
        }
        let want = std::fs::read(orig).unwrap();
        let got = std::fs::read(m.path.join(tree)).unwrap_or_else(|e| panic!("{tree}: {e}\n{}", m.log_text()));
        assert!(got == want, "{tree}: bytes differ from {}", orig.display());
        assert_random_preads(&m.path.join(tree), &want, &mut seed, 10);
    }
}

/// The shared scenario. `stop`/`start` take the origin down and bring it back.
fn remote_scenario(dir: &Path, lib: &Path, origin: &str, mut stop: impl FnMut(), mut start: impl FnMut()) {
    // No background sync: a restarted moto server is empty until the files are uploaded
    // again, and a sync meeting a half-uploaded bucket would rightly prune what is not
    // there yet (seen as the held-back file vanishing: ENOENT after recovery). This
    // scenario is about reads; e2e_state tests the sync against a failing origin.
    let manifest = write_manifest(dir, origin, "sync_interval = \"off\"\nwatch = false");
    let (out, err) = scan(&manifest);
    // 13 tracks, and the sidecars the caller added.
    assert!(out.contains("added 1") && out.contains("failed 0"), "{out}\n{err}");
    let files = files(&manifest, lib);
    // Held back: never read while the origin is up, to show uncached reads fail fast.
    let held = files.iter().find(|(t, _)| t.ends_with(".flac")).unwrap().0.clone();

    // 1. Passthrough: every byte equal; the cache fills.
    let m = Mount::start(&manifest, &dir.join("mnt"), &[]);
    compare_all(&m, &files, Some(&held));
    assert_eq!(m.stop(), Some(0));
    let log = std::fs::read_to_string(dir.join("mnt.log")).unwrap();
    assert!(fetched(&log) > 0, "{log}");
    let s = stats(&manifest);
    assert!(s.num("chunks") > 0 && s.num("bytes") > 0, "{}", s.0);

    // 2. Synthesis on the same cache: validators pass, audio identical.
    std::env::set_var("MUSEFS_MODE", "synthesis");
    let m = Mount::start(&manifest, &dir.join("mnt"), &[]);
    std::env::remove_var("MUSEFS_MODE");
    for (tree, orig) in files.iter().filter(|(t, _)| *t != held) {
        let served = m.path.join(tree);
        if tree.ends_with(".cue") || tree.ends_with(".log") {
            // A sidecar: served unchanged in synthesis too.
            assert!(std::fs::read(&served).unwrap() == std::fs::read(orig).unwrap(), "{tree}");
            continue;
        }
        validate(&served).unwrap_or_else(|e| panic!("{tree}: {e}"));
        // The junk-prefixed MP3's original hides a LAME frame that ffmpeg counts as a
        // packet; e2e_synthesis compares that file packet by packet instead.
        if !tree.contains("Junk") {
            assert_eq!(audio_md5(&served), audio_md5(orig), "{tree}: audio differs");
        }
    }
    assert_eq!(m.stop(), Some(0));

    // 3. Origin down: a remount starts, every cached file reads byte for byte (so nothing
    //    can have been refetched), the held-back file fails fast with EIO.
    stop();
    let m = Mount::start(&manifest, &dir.join("mnt"), &[]);
    compare_all(&m, &files, Some(&held));
    let t = Instant::now();
    let e = std::fs::read(m.path.join(&held)).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EIO), "{e}");
    assert!(t.elapsed() < Duration::from_secs(15), "uncached read took {:?}", t.elapsed());

    // 4. Origin back: the same mount recovers by itself.
    start();
    let want = std::fs::read(files.iter().find(|(t, _)| *t == held).unwrap().1.clone()).unwrap();
    let got =
        std::fs::read(m.path.join(&held)).unwrap_or_else(|e| panic!("{held} after recovery: {e}\n{}", m.log_text()));
    assert!(got == want, "{held}: bytes differ after recovery");
    assert_eq!(m.stop(), Some(0));
    let log = std::fs::read_to_string(dir.join("mnt.log")).unwrap();
    let line = summary_line(&log);
    // Only the held-back file's chunks came from the origin.
    let held_chunks = want.len().div_ceil(64 << 10) as u64;
    assert!(fetched(&log) <= held_chunks, "more than the held-back file was fetched: {line}");

    // 5. A corrupt chunk on disk is detected, removed and fetched again.
    let chunk =
        walk(&dir.join("state/chunks")).into_iter().find(|p| !p.starts_with(dir.join("state/chunks/tmp"))).unwrap();
    let mut bytes = std::fs::read(&chunk).unwrap();
    bytes[0] ^= 0xff;
    std::fs::write(&chunk, &bytes).unwrap();
    let out = musefs(&["cache", "verify", "--manifest", manifest.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && text.contains("1 corrupt removed"), "{text}");
    let m = Mount::start(&manifest, &dir.join("mnt"), &[]);
    compare_all(&m, &files, None);
    assert_eq!(m.stop(), Some(0));
}

fn walk(d: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(d).unwrap().flatten() {
        if e.path().is_dir() {
            out.extend(walk(&e.path()));
        } else {
            out.push(e.path());
        }
    }
    out.sort();
    out
}

#[test]
fn s3_bucket_scans_mounts_caches_and_plays_offline() {
    let t = tempfile::tempdir().unwrap();
    let lib = t.path().join("music");
    make_library(&lib, false);
    // Sidecars: served through the chunk cache like the audio (compared byte for byte,
    // offline too, with the rest).
    std::fs::write(lib.join("alpha/album.cue"), "FILE \"plain.flac\" WAVE\n".repeat(5000)).unwrap();
    std::fs::write(lib.join("beta/mp3s/rip.log"), "AccurateRip: OK\n").unwrap();
    let server = S3Server::start(t.path(), None);
    server.put_dir("music", "lib", &lib);
    let port = server.port;
    let origin = s3_origin(&server, true);
    let server = std::cell::RefCell::new(server);
    remote_scenario(
        t.path(),
        &lib,
        &origin,
        || server.borrow_mut().stop(),
        || {
            // moto keeps objects in memory: the same bytes again (same ETags).
            let s = S3Server::start(t.path(), Some(port));
            s.put_dir("music", "lib", &lib);
            *server.borrow_mut() = s;
        },
    );
    let server = server.into_inner();
    // musefs reads objects with ranged GETs only (206), never whole (200). The log covers
    // what happened since the restart: recovery reads of the held-back file.
    let log = server.log_text();
    let gets: Vec<&str> = log.lines().filter(|l| l.contains("\"GET /music/lib/")).collect();
    assert!(!gets.is_empty(), "{log}");
    assert!(gets.iter().all(|l| l.contains("\" 206 ")), "a whole-object GET: {gets:?}");

    // A replaced object: the next scan drops its cached chunks; the mount serves the new bytes.
    let manifest = t.path().join("musefs.toml");
    let listed = ls_long(&manifest);
    assert!(["album.cue", "rip.log"].iter().all(|s| listed.iter().any(|(p, _)| p.ends_with(s))), "{listed:?}");
    let before = stats(&manifest).num("bytes");
    let files = files(&manifest, &lib);
    let (tree, orig) = files.iter().find(|(p, _)| p.ends_with(".mp3")).unwrap();
    let mut other = std::fs::read(orig).unwrap();
    let n = other.len();
    other[n - 200] ^= 0x55; // inside the audio: still a valid MP3 for the scanner
    let changed = t.path().join("changed.mp3");
    std::fs::write(&changed, &other).unwrap();
    let rel = ls_long(&manifest).into_iter().find(|(p, _)| p == tree).unwrap().1;
    server.put_file("music", &format!("lib/{rel}"), &changed);
    scan(&manifest);
    assert!(stats(&manifest).num("logical_bytes") < before + 1);
    // With the metrics endpoint on: the chunk cache's misses and the origin's reads show.
    let port = musefs_tests::servers::free_port();
    let text = std::fs::read_to_string(&manifest).unwrap();
    std::fs::write(&manifest, format!("metrics_addr = \"127.0.0.1:{port}\"\n{text}")).unwrap();
    let m = Mount::start(&manifest, &t.path().join("mnt"), &[]);
    let url = format!("http://127.0.0.1:{port}/metrics");
    let page = musefs_tests::curl(&url);
    let misses = musefs_tests::metric(&page, "musefs_chunk_cache_misses_total");
    let tree = ls_long(&manifest).into_iter().find(|(_, o)| *o == rel).unwrap().0;
    assert!(std::fs::read(m.path.join(&tree)).unwrap() == other, "the replaced object's new bytes are served");
    let page = musefs_tests::curl(&url);
    assert!(musefs_tests::metric(&page, "musefs_chunk_cache_misses_total") > misses, "{page}");
    assert!(musefs_tests::metric(&page, "musefs_chunk_cache_fetched_bytes_total") >= other.len() as f64, "{page}");
    let reads = "musefs_origin_request_seconds_count{origin=\"main\",call=\"read\"}";
    assert!(musefs_tests::metric(&page, reads) >= 1.0, "{page}");
    assert_eq!(m.stop(), Some(0));
}

#[test]
fn sftp_tree_scans_mounts_caches_and_plays_offline() {
    let t = tempfile::tempdir().unwrap();
    let lib = t.path().join("music");
    make_library(&lib, false);
    make_world_readable(&lib);
    let sshd = std::cell::RefCell::new(Sshd::start(t.path()));
    let origin = format!(
        "kind = \"sftp\"\nendpoint = {:?}\nkey = {:?}\nknown_hosts_strategy = \"accept\"\nroot = {:?}\n",
        sshd.borrow().endpoint(),
        sshd.borrow().key.display().to_string(),
        lib.display().to_string()
    );
    let dir = t.path().to_owned();
    remote_scenario(
        t.path(),
        &lib,
        &origin,
        || sshd.borrow_mut().stop(),
        || {
            let port = sshd.borrow().port;
            *sshd.borrow_mut() = Sshd::start_on(&dir, Some(port));
        },
    );
}

/// `lib/noise.flac`: `secs` of stereo white noise (~170 KB a second: noise does not
/// compress), made with sox and flac.
fn noise_flac(dir: &Path, lib: &Path, secs: u32) -> PathBuf {
    std::fs::create_dir_all(lib).unwrap();
    let wav = dir.join("noise.wav");
    let big = lib.join("noise.flac");
    let ok = std::process::Command::new("sox")
        .args(["-n", "-r", "44100", "-b", "16", "-c", "2"])
        .arg(&wav)
        .args(["synth", &secs.to_string(), "whitenoise", "vol", "0.5"])
        .status()
        .unwrap();
    assert!(ok.success());
    let ok = std::process::Command::new("flac")
        .args(["-s", "-0", "-T", "TITLE=Noise", "-T", "ARTIST=Fill", "-T", "ALBUM=Kill", "-o"])
        .arg(&big)
        .arg(&wav)
        .status()
        .unwrap();
    assert!(ok.success());
    std::fs::remove_file(&wav).unwrap();
    big
}

/// Where a FLAC stream's audio frames start: after the last metadata block.
fn flac_audio_start(b: &[u8]) -> u64 {
    assert_eq!(&b[..4], b"fLaC");
    let mut at = 4;
    loop {
        let last = b[at] & 0x80 != 0;
        at += 4 + (usize::from(b[at + 1]) << 16 | usize::from(b[at + 2]) << 8 | usize::from(b[at + 3]));
        if last {
            return at as u64;
        }
    }
}

/// The byte ranges of a served FLAC file that are the original's bytes in synthesis: the
/// bodies of the blocks copied through (STREAMINFO, SEEKTABLE, APPLICATION, CUESHEET) and
/// the audio. Everything else (the marker, block headers, tags, pictures, padding) is
/// built by musefs.
fn flac_origin_ranges(b: &[u8]) -> Vec<std::ops::Range<u64>> {
    assert_eq!(&b[..4], b"fLaC");
    let mut at = 4;
    let mut out = Vec::new();
    loop {
        let kind = b[at] & 0x7f;
        let last = b[at] & 0x80 != 0;
        let body = usize::from(b[at + 1]) << 16 | usize::from(b[at + 2]) << 8 | usize::from(b[at + 3]);
        if !matches!(kind, 1 | 4 | 6) {
            out.push((at + 4) as u64..(at + 4 + body) as u64);
        }
        at += 4 + body;
        if last {
            out.push(at as u64..b.len() as u64);
            return out;
        }
    }
}

/// The serving core on a cached S3 file: a read inside one chunk is answered with the
/// chunk itself (no copy), a read across chunks or across the synthesized header is
/// assembled; both give the same bytes at every boundary. A sequential stream drops the
/// chunks it has passed from memory, so it does not flush the memory cache.
#[test]
fn cached_reads_are_exact_at_every_chunk_boundary_and_streams_drop_behind() {
    use musefs_core::serve::ReadData;
    let t = tempfile::tempdir().unwrap();
    let lib = t.path().join("music");
    let want = std::fs::read(noise_flac(t.path(), &lib, 10)).unwrap();
    let server = S3Server::start(t.path(), None);
    server.put_dir("music", "lib", &lib);
    let manifest = write_manifest(t.path(), &s3_origin(&server, true), "sync_interval = \"off\"\nwatch = false");
    scan(&manifest);
    let tree = ls_long(&manifest)[0].0.clone();
    let plugins = musefs_core::plugins::Plugins::load_dir(&musefs_tests::target_dir()).unwrap();
    let cs: u64 = 64 << 10;
    let len = want.len() as u64;
    assert!(len > 20 * cs, "the file should span many chunks: {len}");
    let mut seed = 0x5eed_u64;
    for mode in [musefs_core::manifest::Mode::Passthrough, musefs_core::manifest::Mode::Synthesis] {
        let mut m = musefs_core::manifest::Manifest::load(&manifest).unwrap();
        m.mode = mode;
        let core = musefs_core::assemble::build_core(&m, &plugins).unwrap();
        let ino = core.with_tree(|t| t.resolve(&tree).map(|n| n.ino)).expect("in the tree");
        let (fh, of) = core.open(ino).unwrap();
        // The reference: the whole file in one read (always assembled).
        let whole = core.read(fh, 0, u32::try_from(of.size).unwrap()).unwrap().into_vec();
        assert_eq!(whole.len() as u64, of.size);
        if mode == musefs_core::manifest::Mode::Passthrough {
            assert!(whole == want, "passthrough bytes differ from the original");
        }
        // Where the original's bytes are in the served file: all of it in passthrough;
        // in synthesis the copied block bodies and the audio, after a header of another
        // size (checked against the original's audio length).
        let origin_ranges = if mode == musefs_core::manifest::Mode::Passthrough {
            std::iter::once(0..of.size).collect()
        } else {
            let r = flac_origin_ranges(&whole);
            assert_eq!(r.last().unwrap().end - r.last().unwrap().start, len - flac_audio_start(&want));
            r
        };
        // 10 and 59 lie in copied STREAMINFO/SEEKTABLE bodies in synthesis (59 came up
        // at random in a CI run, where the test wrongly thought only audio was copied).
        let mut offsets = vec![0, 1, 10, 59, cs - 1, cs, cs + 1, 5 * cs - 7, of.size - 1];
        offsets.extend((0..40).map(|_| musefs_tests::lcg(&mut seed) % of.size));
        let mut shared = 0;
        for &off in &offsets {
            for size in [1u32, 4096, 65_535, 65_536, 65_537, 131_072, 200_000] {
                let got = core.read(fh, off, size).unwrap();
                let end = (off + u64::from(size)).min(of.size);
                assert!(got[..] == whole[off as usize..end as usize], "{mode:?}: read {size} at {off} differs");
                if let ReadData::Shared(..) = got {
                    shared += 1;
                    // Only a range of the origin's bytes (inside one chunk) may come
                    // shared: never one touching a byte musefs built.
                    assert!(
                        origin_ranges.iter().any(|r| r.start <= off && end <= r.end),
                        "{mode:?}: a read of {size} at {off} touching built bytes came shared"
                    );
                }
            }
        }
        assert!(shared > 0, "{mode:?}: no read was served without a copy");
        core.release(fh);
        // A fresh stream of small sequential reads: memory keeps only the chunks near
        // the reader, not the 20+ it passed.
        let (fh, of) = core.open(ino).unwrap();
        let mut pos = 0;
        while pos < of.size {
            let got = core.read(fh, pos, 16 << 10).unwrap();
            assert!(got[..] == whole[pos as usize..pos as usize + got.len()], "{mode:?}: stream at {pos}");
            pos += got.len() as u64;
        }
        core.release(fh);
        let cache = core.cache().expect("a chunk cache");
        cache.flush();
        let held = cache.memory_chunks();
        assert!(held <= 4 + 3, "{mode:?}: {held} chunks still in memory after a stream of {}", len.div_ceil(cs));
    }
}

#[test]
fn kill_9_during_a_cache_fill_never_leaves_a_torn_chunk() {
    let t = tempfile::tempdir().unwrap();
    let lib = t.path().join("music");
    // ~10 MB of FLAC: ~160 chunks of 64 KiB to fill.
    let big = noise_flac(t.path(), &lib, 60);
    let want = std::fs::read(&big).unwrap();
    let server = S3Server::start(t.path(), None);
    server.put_dir("music", "lib", &lib);
    let origin = s3_origin(&server, true);
    let manifest = write_manifest(t.path(), &origin, "sync_interval = \"off\"\nwatch = false");
    scan(&manifest);
    let tree = ls_long(&manifest)[0].0.clone();
    let mnt = t.path().join("mnt");
    let _guard = musefs_tests::Unmount(mnt.clone());
    let mf = manifest.to_str().unwrap().to_owned();
    let mut seed = 0xf111_u64;
    let mut cached = Vec::new();
    for round in 0..4 {
        let m = Mount::start(&manifest, &mnt, &[]);
        let reader = {
            let p = mnt.join(&tree);
            std::thread::spawn(move || {
                let _ = std::fs::read(p);
            })
        };
        std::thread::sleep(Duration::from_millis(30 + musefs_tests::lcg(&mut seed) % 500));
        m.kill9();
        let _ = reader.join();
        // The catalog is sound and every chunk the index knows is whole.
        let cat = musefs_core::catalog::Catalog::open(&t.path().join("state/catalog.db")).unwrap();
        cat.integrity_check().unwrap();
        drop(cat);
        let out = musefs(&["cache", "verify", "--manifest", &mf]);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        // A chunk written but not yet indexed when the kill landed is whole (and removed
        // as unindexed); none is torn.
        assert!(out.status.success() && text.contains(" 0 corrupt removed"), "round {round}: {text}");
        let chunks = stats(&manifest).num("chunks");
        eprintln!("round {round}: {text}; {chunks} chunk(s) cached");
        cached.push(chunks);
    }
    // The next owner cleans the dead one's temporary chunk files; the file then reads
    // whole and right, from what was cached plus what is fetched now.
    let m = Mount::start(&manifest, &mnt, &[]);
    assert!(m.log_text().contains("did not shut down cleanly"), "{}", m.log_text());
    let tmp: Vec<_> = walk(&t.path().join("state/chunks/tmp"));
    assert!(tmp.is_empty(), "temporary chunk files left: {tmp:?}");
    let got = std::fs::read(mnt.join(&tree)).unwrap();
    assert!(got == want, "the file read after the kills differs from its original");
    assert_eq!(m.stop(), Some(0));
    let full = want.len().div_ceil(64 << 10) as u64;
    assert!(
        cached.iter().any(|&c| c > 0 && c < full),
        "no kill landed in the middle of the fill: chunks cached per round {cached:?} of {full}"
    );
    let out = musefs(&["cache", "verify", "--manifest", &mf]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains(" 0 corrupt removed") && text.contains(" 0 unindexed removed"), "{text}");
}

#[test]
fn a_failing_origin_is_retried_with_backoff_reported_and_never_pruned() {
    let t = tempfile::tempdir().unwrap();
    let lib = t.path().join("music");
    make_library(&lib, false);
    let mut server = S3Server::start(t.path(), None);
    server.put_dir("music", "lib", &lib);
    let port = server.port;
    let origin = s3_origin(&server, true);
    // A sync at mount, then hourly: every retry seen here comes from the backoff.
    let manifest = write_manifest(t.path(), &origin, "sync_interval = \"1h\"");
    scan(&manifest);
    let before = ls_long(&manifest);
    let mf = manifest.to_str().unwrap().to_owned();
    server.stop();

    let m = Mount::start(&manifest, &t.path().join("mnt"), &[]);
    assert!(
        wait_for(60, || m.log_text().contains("failed (2 in a row)")),
        "no retry of the failed sync: {}",
        m.log_text()
    );
    let log = m.log_text();
    assert!(log.contains("retrying in 5s") && log.contains("retrying in 10s"), "backoff doubles: {log}");
    let st = String::from_utf8_lossy(&musefs(&["status", "--manifest", &mf]).stdout).into_owned();
    assert!(st.contains("origin main: last sync") && st.contains("FAILED (2 in a row)"), "{st}");
    // Nothing was pruned; the mount lists and serves what the catalog holds.
    assert_eq!(ls_long(&manifest), before);
    let listed = walk(&m.path).into_iter().filter(|p| !p.ends_with("cover.jpg")).count();
    assert_eq!(listed, before.len(), "{}", m.log_text());

    // The origin comes back: the next sync (now, on SIGUSR1) succeeds and is reported.
    let server = S3Server::start(t.path(), Some(port));
    server.put_dir("music", "lib", &lib);
    musefs_tests::signal(m.pid(), "USR1");
    assert!(
        wait_for(60, || {
            let st = String::from_utf8_lossy(&musefs(&["status", "--manifest", &mf]).stdout).into_owned();
            st.contains("origin main: last sync") && st.contains("ok:")
        }),
        "the origin's recovery is not reported: {}",
        m.log_text()
    );
    assert_eq!(ls_long(&manifest), before);
    assert_eq!(m.stop(), Some(0));
}

#[test]
fn s3_credentials_come_from_a_shared_credentials_profile() {
    let t = tempfile::tempdir().unwrap();
    let lib = t.path().join("music");
    make_library(&lib, false);
    let server = S3Server::start(t.path(), None);
    server.put_dir("music", "lib", &lib);
    let creds = t.path().join("credentials");
    std::fs::write(
        &creds,
        "[default]\n# no keys here\nregion = us-east-1\n\n[musefs]\naws_access_key_id = musefs-test\n\
         aws_secret_access_key = musefs-test-secret\n",
    )
    .unwrap();
    let base = s3_origin(&server, false);
    // No keys in the manifest or the environment: only the profile can supply them.
    let run_scan = |manifest: &Path, profile_env: Option<&str>| {
        let mut c = std::process::Command::new(musefs_tests::musefs_bin());
        c.args(["scan", "--manifest"]).arg(manifest);
        for v in ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"] {
            c.env_remove(v);
        }
        c.env("AWS_SHARED_CREDENTIALS_FILE", &creds);
        if let Some(p) = profile_env {
            c.env("AWS_PROFILE", p);
        }
        c.output().unwrap()
    };
    let manifest = write_manifest(t.path(), &format!("{base}profile = \"musefs\"\n"), "");
    let out = run_scan(&manifest, None);
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success() && text.contains("added 13"), "manifest profile: {text}");

    // AWS_PROFILE chooses the profile when the manifest does not.
    std::fs::remove_dir_all(t.path().join("state")).unwrap();
    let manifest = write_manifest(t.path(), &base, "");
    let out = run_scan(&manifest, Some("musefs"));
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success() && text.contains("added 13"), "AWS_PROFILE: {text}");

    // A named profile without keys is a clear error naming it, not a hang or a guess.
    let manifest = write_manifest(t.path(), &format!("{base}profile = \"nokeys\"\n"), "");
    let out = run_scan(&manifest, None);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("\"nokeys\"") && err.contains("shared credentials file"), "{err}");
    assert!(!err.contains("musefs-test-secret"), "a secret in an error: {err}");
}

/// Regression: `Sshd::stop` ran `pkill -u musefs-sftp`, killing the sessions of every
/// other test's sshd too (the tests run in parallel processes, all as that user): seen
/// as `origin::sftp::lists_one_level_with_directories` failing with "the remote process
/// has terminated" once the suite ran one check per process.
#[test]
fn stopping_one_sshd_keeps_the_sessions_of_another() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("root");
    std::fs::create_dir_all(&root).unwrap();
    std::fs::write(root.join("f.bin"), b"still here").unwrap();
    make_world_readable(&root);
    let plugins = musefs_core::plugins::Plugins::load_dir(&musefs_tests::target_dir()).unwrap();
    let origin_of = |sshd: &Sshd| {
        let cfg = format!(
            "{{\"endpoint\":{:?},\"key\":{:?},\"known_hosts_strategy\":\"accept\",\"root\":{:?},\"retries\":1}}",
            sshd.endpoint(),
            sshd.key.display().to_string(),
            root.display().to_string()
        );
        plugins.new_origin("sftp", &cfg).unwrap()
    };
    let mut first = Sshd::start(&t.path().join("a"));
    let second = Sshd::start(&t.path().join("b"));
    let (o1, o2) = (origin_of(&first), origin_of(&second));
    let ctx = musefs_plugin_api::CallCtx::with_timeout(Duration::from_secs(10));
    assert!(o1.stat(&ctx, "f.bin".into()).into_result().is_ok());
    let h2 = o2.open(&ctx, "f.bin".into()).into_result().unwrap();
    let sessions = second.sessions();
    assert!(!sessions.is_empty(), "the second sshd has a session");
    first.stop();
    assert_eq!(second.sessions(), sessions, "stopping one sshd killed another's sessions");
    let mut buf = [0u8; 10];
    let n = h2.read_at(&ctx, 0, musefs_plugin_api::abi_stable::std_types::RSliceMut::from_mut_slice(&mut buf));
    assert_eq!(n.into_result().unwrap(), 10, "the other sshd's session was killed");
    assert_eq!(&buf, b"still here");
    assert!(o2.stat(&ctx, "f.bin".into()).into_result().is_ok());
    assert!(o1.stat(&ctx, "f.bin".into()).into_result().is_err(), "the stopped one is down");
}

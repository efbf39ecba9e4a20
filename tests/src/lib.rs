//! Helpers for the end-to-end tests: the built binary and plugins, fixture libraries
//! made by real encoders, and a mount guard that always unmounts.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// `target/debug` (or whichever profile built the tests): the binary and plugins live there.
pub fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/<test-binary>
    exe.parent().and_then(Path::parent).expect("target dir").to_owned()
}

/// The `musefs` binary.
pub fn musefs_bin() -> PathBuf {
    let p = target_dir().join("musefs");
    assert!(p.exists(), "{} is missing: run `cargo build --workspace` before the tests", p.display());
    p
}

/// Runs `musefs` with `args`.
pub fn musefs(args: &[&str]) -> Output {
    Command::new(musefs_bin()).args(args).env_remove("RUST_LOG").output().expect("run musefs")
}

/// Writes a fixture library into `dir` with `examples/demo/make_library.py`.
pub fn make_library(dir: &Path, broken: bool) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/demo/make_library.py");
    let mut cmd = Command::new("python3");
    cmd.arg(script).arg(dir);
    if broken {
        cmd.arg("--broken");
    }
    let out = cmd.output().expect("python3");
    assert!(out.status.success(), "make_library.py failed: {}", String::from_utf8_lossy(&out.stderr));
}

/// Writes a manifest for one local origin.
pub fn write_manifest(dir: &Path, root: &Path, extra: &str) -> PathBuf {
    let m = dir.join("musefs.toml");
    std::fs::write(
        &m,
        format!(
            "state_dir = {state:?}\n{extra}\n[[origin]]\nname = \"main\"\nkind = \"local\"\nroot = {root:?}\n",
            state = dir.join("state").display().to_string(),
            root = root.display().to_string()
        ),
    )
    .unwrap();
    m
}

/// Whether `path` is a mountpoint of a FUSE filesystem now.
pub fn is_fuse_mounted(path: &Path) -> bool {
    let canon = path.canonicalize().unwrap_or_else(|_| path.to_owned());
    let want = canon.to_string_lossy().replace(' ', "\\040");
    std::fs::read_to_string("/proc/self/mounts")
        .unwrap_or_default()
        .lines()
        .any(|l| l.split(' ').nth(1) == Some(want.as_str()) && l.contains("fuse"))
}

/// A running `musefs mount`; dropping it unmounts and kills the process by PID.
pub struct Mount {
    /// The mountpoint.
    pub path: PathBuf,
    child: Option<Child>,
    log: PathBuf,
}

impl Mount {
    /// Starts `musefs mount` and waits until the mount is up.
    pub fn start(manifest: &Path, mountpoint: &Path, extra_args: &[&str]) -> Self {
        // (A dead mount left by a killed daemon fails with EEXIST; musefs cleans it up.)
        let _ = std::fs::create_dir_all(mountpoint);
        let log = mountpoint.with_extension("log");
        let child = Command::new(musefs_bin())
            .arg("mount")
            .arg("--manifest")
            .arg(manifest)
            .args(extra_args)
            .arg(mountpoint)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("spawn musefs mount");
        let mut m = Self { path: mountpoint.to_owned(), child: Some(child), log };
        let start = Instant::now();
        // (The daemon logs "mounted at" once it serves; a stale mount of a killed daemon
        // may still be listed at the same place until the new one cleans it up.)
        while !(is_fuse_mounted(mountpoint) && m.log_text().contains("mounted at")) {
            if let Some(status) = m.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("musefs mount exited early ({status}): {}", m.log_text());
            }
            assert!(start.elapsed() < Duration::from_secs(20), "mount did not come up: {}", m.log_text());
            std::thread::sleep(Duration::from_millis(50));
        }
        m
    }

    /// The daemon's log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The daemon's pid.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    /// Kills the daemon with SIGKILL (no cleanup at all) and waits for it; the dead
    /// FUSE mount stays behind (the next owner of the state dir must clean it up).
    pub fn kill9(mut self) {
        let mut child = self.child.take().unwrap();
        let _ = child.kill();
        let _ = child.wait();
        // Dropping `self` would unmount: keep the stale mount for the test.
        std::mem::forget(self);
    }

    /// Sends SIGTERM and waits for a clean exit; returns the exit status code.
    pub fn stop(mut self) -> Option<i32> {
        let mut child = self.child.take().unwrap();
        signal(child.id(), "TERM");
        let start = Instant::now();
        loop {
            if let Some(s) = child.try_wait().unwrap() {
                return s.code();
            }
            if start.elapsed() > Duration::from_secs(20) {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        if is_fuse_mounted(&self.path) {
            let _ = Command::new("fusermount3").arg("-u").arg("-z").arg(&self.path).status();
        }
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Unmounts (lazily) whatever FUSE mount is left at a path when dropped: the guard for a
/// dead mount left by a killed daemon if a test fails before the next mount cleans it.
pub struct Unmount(pub PathBuf);

impl Drop for Unmount {
    fn drop(&mut self) {
        if is_fuse_mounted(&self.0) {
            let _ = Command::new("fusermount3").arg("-u").arg("-z").arg(&self.0).status();
        }
    }
}

/// `(path in the mount, path in its origin)` for every file, from `musefs ls -l`.
pub fn ls_long(manifest: &Path) -> Vec<(String, String)> {
    let out = musefs(&["ls", "-l", "--manifest", manifest.to_str().unwrap()]);
    assert!(out.status.success(), "musefs ls failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            let (p, o) = l.split_once('\t').expect("tab");
            (p.to_owned(), o.split_once(':').expect("origin:path").1.to_owned())
        })
        .collect()
}

/// Runs `musefs scan` and returns (stdout, stderr); panics on failure.
pub fn scan(manifest: &Path) -> (String, String) {
    let out = musefs(&["scan", "--manifest", manifest.to_str().unwrap()]);
    let (so, se) =
        (String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned());
    // 2: done, but some files could not be read (a library with broken files).
    assert!(matches!(out.status.code(), Some(0 | 2)), "scan failed: {so}{se}");
    (so, se)
}

/// Tags and pictures of each file as mutagen reads them (normalised JSON, one per file).
pub fn mutagen_tags(paths: &[&Path]) -> Vec<String> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/tags.py");
    let out = Command::new("python3").arg(script).args(paths).output().expect("python3");
    assert!(out.status.success(), "tags.py failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().lines().map(str::to_owned).collect()
}

/// Whether ffmpeg decodes the first audio stream of `path` to the end without giving up
/// (its exit status; what "a file a player can play" means in the tests).
pub fn ffmpeg_plays(path: &Path) -> bool {
    // At least one decoded frame: a file whose audio is cut off entirely opens, decodes
    // nothing, and exits 0; nothing plays it.
    let out = Command::new("ffmpeg")
        .args(["-nostdin", "-v", "quiet", "-i"])
        .arg(path)
        .args(["-map", "0:a:0", "-f", "framecrc", "-"])
        .output()
        .expect("ffmpeg");
    out.status.success() && String::from_utf8_lossy(&out.stdout).lines().any(|l| !l.starts_with('#'))
}

/// MD5 of the audio packets (`ffmpeg -map 0:a -c copy -f md5`): equal for equal audio.
pub fn audio_md5(path: &Path) -> String {
    let out = Command::new("ffmpeg")
        .args(["-v", "error", "-i"])
        .arg(path)
        .args(["-map", "0:a", "-c", "copy", "-f", "md5", "-"])
        .output()
        .expect("ffmpeg");
    assert!(out.status.success(), "ffmpeg on {}: {}", path.display(), String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// The audio packets' bytes, concatenated (`ffmpeg -map 0:a -c copy -f data`).
pub fn audio_data(path: &Path) -> Vec<u8> {
    let out = Command::new("ffmpeg")
        .args(["-v", "error", "-i"])
        .arg(path)
        .args(["-map", "0:a", "-c", "copy", "-f", "data", "-"])
        .output()
        .expect("ffmpeg");
    assert!(out.status.success(), "ffmpeg on {}: {}", path.display(), String::from_utf8_lossy(&out.stderr));
    out.stdout
}

/// SHA-256 of a file (through Python's hashlib).
pub fn sha256(path: &Path) -> String {
    let out = Command::new("python3")
        .args(["-c", "import hashlib,sys; print(hashlib.sha256(open(sys.argv[1],'rb').read()).hexdigest())"])
        .arg(path)
        .output()
        .expect("python3");
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// Runs a format's own validator on `path`; `Err` with its output if it complains.
/// FLAC: `flac -t -w` and `metaflac --list`; Ogg: `ogginfo`/`opusinfo` (no warnings or
/// errors); MP3: `mp3val`, whose WARNING lines are returned for comparison.
pub fn validate(path: &Path) -> Result<Vec<String>, String> {
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("").to_ascii_lowercase();
    let run = |prog: &str, args: &[&str]| -> Output {
        Command::new(prog).args(args).arg(path).output().unwrap_or_else(|e| panic!("{prog}: {e}"))
    };
    let text = |o: &Output| format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    match ext.as_str() {
        "flac" => {
            for (prog, args) in [("flac", &["-t", "-w", "-s"][..]), ("metaflac", &["--list"][..])] {
                let o = run(prog, args);
                if !o.status.success() {
                    return Err(format!("{prog}: {}", text(&o)));
                }
            }
            Ok(Vec::new())
        }
        "ogg" | "opus" => {
            let prog = if ext == "ogg" { "ogginfo" } else { "opusinfo" };
            let o = run(prog, &[]);
            let t = text(&o);
            let bad: Vec<&str> =
                t.lines().filter(|l| l.contains("WARNING") || l.contains("ERROR") || l.contains("Error")).collect();
            if !o.status.success() || !bad.is_empty() {
                return Err(format!("{prog}: {t}"));
            }
            Ok(Vec::new())
        }
        "mp3" => {
            let o = run("mp3val", &[]);
            let t = text(&o);
            // The file name varies between original and served file: keep what follows it.
            Ok(t.lines()
                .filter(|l| l.starts_with("WARNING") || l.starts_with("ERROR"))
                .map(|l| l.rsplit_once("\": ").map_or(l, |(_, w)| w).to_owned())
                .collect())
        }
        "oga" | "spx" => {
            // Page structure and stream headers; Ogg FLAC also decoded by flac.
            // (ogginfo's warnings are returned: ffmpeg's Ogg FLAC has a zero-size packet.)
            let o = run("ogginfo", &[]);
            let t = text(&o);
            let warnings: Vec<String> = t.lines().filter(|l| l.starts_with("WARNING")).map(str::to_owned).collect();
            // (ogginfo exits 1 on warnings too.)
            if (!o.status.success() && warnings.is_empty()) || t.lines().any(|l| l.contains("ERROR")) {
                return Err(format!("ogginfo: {t}"));
            }
            if ext == "oga" {
                let o = run("flac", &["--ogg", "-t", "-s"]);
                if !o.status.success() {
                    return Err(format!("flac: {}", text(&o)));
                }
            }
            Ok(warnings)
        }
        "wav" | "aif" | "aiff" | "aifc" => {
            // sox parses the chunks strictly; ffprobe must read it without complaint.
            let o = run("sox", &["--i"]);
            if !o.status.success() {
                return Err(format!("sox: {}", text(&o)));
            }
            let o = run("ffprobe", &["-v", "error"]);
            if !o.status.success() || !o.stderr.is_empty() {
                return Err(format!("ffprobe: {}", text(&o)));
            }
            Ok(Vec::new())
        }
        "m4a" | "m4b" | "mp4" => {
            // AtomicParsley wants the file first.
            let o2 = Command::new("AtomicParsley").arg(path).arg("-T").output().expect("AtomicParsley");
            let t = text(&o2);
            if !o2.status.success() || !t.contains("Atom moov") {
                return Err(format!("AtomicParsley -T: {t}"));
            }
            let o = run("ffprobe", &["-v", "error"]);
            if !o.status.success() || !o.stderr.is_empty() {
                return Err(format!("ffprobe: {}", text(&o)));
            }
            Ok(Vec::new())
        }
        _ => Err(format!("no validator for {}", path.display())),
    }
}

/// Polls `cond` every 50 ms for up to `secs` seconds.
pub fn wait_for(secs: u64, mut cond: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(secs) {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    cond()
}

/// The seed of a randomized test: `MUSEFS_TEST_SEED` when it is set (`tests/soak.sh`
/// sets a new one each run, to look for rare failures), else `default`, so that the test
/// command and CI are repeatable. A randomized test names its seed when it fails.
///
/// # Panics
/// When `MUSEFS_TEST_SEED` is set but is not a number.
pub fn test_seed(default: u64) -> u64 {
    match std::env::var("MUSEFS_TEST_SEED") {
        Ok(s) => s.trim().parse().unwrap_or_else(|_| panic!("MUSEFS_TEST_SEED={s:?} is not a number")),
        Err(_) => default,
    }
}

/// A deterministic pseudo-random sequence (no external crate needed).
pub fn lcg(seed: &mut u64) -> u64 {
    *seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    *seed >> 33
}

/// A damaged copy of `data` for the damaged-file corpora: `kind` 0 flips 1-8 random
/// bits, 1 truncates at a random length, 2 inserts 1-64 random bytes at a random place.
pub fn damaged_copy(data: &[u8], kind: usize, seed: &mut u64) -> Vec<u8> {
    let mut b = data.to_vec();
    let mut r = || lcg(seed) as usize;
    match kind {
        0 => {
            for _ in 0..1 + r() % 8 {
                let p = r() % b.len();
                b[p] ^= 1 << (r() % 8);
            }
        }
        1 => b.truncate(r() % b.len()),
        _ => {
            let p = r() % b.len();
            let junk: Vec<u8> = (0..1 + r() % 64).map(|_| r() as u8).collect();
            b.splice(p..p, junk);
        }
    }
    b
}

/// `n` random `pread`s of `path` (offsets up to 10 bytes past the end, lengths up to
/// 70,000) must equal the same ranges of `expected`.
pub fn assert_random_preads(path: &Path, expected: &[u8], seed: &mut u64, n: usize) {
    use std::os::unix::fs::FileExt;
    let f = std::fs::File::open(path).unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    for _ in 0..n {
        let off = lcg(seed) % (expected.len() as u64 + 10);
        let len = (lcg(seed) % 70_000) as usize;
        let mut buf = vec![0u8; len];
        let got = f.read_at(&mut buf, off).unwrap_or_else(|e| panic!("{} at {off}+{len}: {e}", path.display()));
        let start = (off as usize).min(expected.len());
        let end = (off as usize + len).min(expected.len());
        assert_eq!(&buf[..got], &expected[start..end], "{} at {off}+{len}", path.display());
    }
}
pub mod servers;

/// Sends signal `name` (`TERM`, `USR1`, ...) to process `pid` with kill(1).
pub fn signal(pid: u32, name: &str) {
    let ok = Command::new("kill").arg(format!("-{name}")).arg(pid.to_string()).status().is_ok_and(|s| s.success());
    assert!(ok, "kill -{name} {pid} failed");
}

/// Writes a valid 1x1 RGB PNG to `path` (made by Python's zlib, so it decodes).
pub fn write_png(path: &Path) {
    let script = "import sys,zlib,struct\n\
def c(k,d): return struct.pack('>I',len(d))+k+d+struct.pack('>I',zlib.crc32(k+d))\n\
open(sys.argv[1],'wb').write(b'\\x89PNG\\r\\n\\x1a\\n'+c(b'IHDR',struct.pack('>IIBBBBB',1,1,8,2,0,0,0))\
+c(b'IDAT',zlib.compress(b'\\x00\\xff\\x00\\x00'))+c(b'IEND',b''))";
    let ok = Command::new("python3").args(["-c", script]).arg(path).status().is_ok_and(|s| s.success());
    assert!(ok, "writing a PNG failed");
}

/// One sample of a Prometheus text page: the value of series `name{labels}` (0 if absent).
pub fn metric(page: &str, series: &str) -> f64 {
    page.lines()
        .find(|l| !l.starts_with('#') && l.rsplit_once(' ').is_some_and(|(s, _)| s == series))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0.0)
}

/// The body `curl` gets from `url` (the test fails on a connection error).
pub fn curl(url: &str) -> String {
    let out = Command::new("curl").args(["-sS", "--max-time", "10", url]).output().unwrap();
    assert!(out.status.success(), "curl {url}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// The files a `musefs scan` of origin `main` refused, with the reason, from its log
/// (`skipping main:<path>: <why>`).
pub fn refused_by_scan(scan_log: &str) -> Vec<(String, String)> {
    scan_log
        .lines()
        .filter_map(|l| l.split_once("skipping main:"))
        .filter_map(|(_, rest)| rest.split_once(": ").map(|(p, why)| (p.to_owned(), why.to_owned())))
        .collect()
}

/// Of the files of `dir` a scan `refused`, those ffmpeg plays (each a file that should
/// have been served), copied away by [`keep_failures`]; and where the copies are.
pub fn playable_refusals(dir: &Path, refused: &[(String, String)]) -> (Vec<(String, String)>, String) {
    let playable: Vec<(String, String)> = refused.iter().filter(|(p, _)| ffmpeg_plays(&dir.join(p))).cloned().collect();
    let kept = keep_failures(dir, playable.iter().map(|(p, _)| p.as_str()));
    (playable, kept)
}

/// Copies the files `names` of `dir` (inputs a randomized test failed on) to
/// `target/damaged-failures/`, where they outlive the test's temporary directory and
/// can become regression tests; returns that directory.
pub fn keep_failures<'a>(dir: &Path, names: impl Iterator<Item = &'a str>) -> String {
    let keep = target_dir().join("damaged-failures");
    for n in names {
        let _ = std::fs::create_dir_all(&keep);
        let _ = std::fs::copy(dir.join(n), keep.join(n));
    }
    keep.display().to_string()
}

/// Every file below `root` (directories followed, not listed), sorted.
pub fn all_files(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_owned()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

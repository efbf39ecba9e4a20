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
        std::fs::create_dir_all(mountpoint).unwrap();
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
        while !is_fuse_mounted(mountpoint) {
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

    /// Sends SIGTERM and waits for a clean exit; returns the exit status code.
    pub fn stop(mut self) -> Option<i32> {
        let mut child = self.child.take().unwrap();
        // SAFETY: sending a signal to our own child process by its PID.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
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

/// `(path in the mount, path in the origin)` for every file, from `musefs ls -l`.
pub fn ls_long(manifest: &Path) -> Vec<(String, String)> {
    let out = musefs(&["ls", "-l", "--manifest", manifest.to_str().unwrap()]);
    assert!(out.status.success(), "musefs ls failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            let (p, o) = l.split_once('\t').expect("tab");
            (p.to_owned(), o.strip_prefix("main:").expect("origin main").to_owned())
        })
        .collect()
}

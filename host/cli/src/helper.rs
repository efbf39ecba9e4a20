//! `musefs` as a mount helper: `mount -t fuse.musefs MANIFEST MOUNTPOINT -o OPTIONS` (and
//! the `/etc/fstab` line `MANIFEST MOUNTPOINT fuse.musefs OPTIONS 0 0`). fuse3's
//! `mount.fuse3` runs `musefs MANIFEST MOUNTPOINT -o OPTIONS` and waits for it to exit, so
//! this starts `musefs mount` in the background (its own process group, its log appended
//! to `STATE_DIR/mount.log`), waits until it reports the mount up (`READY=1` on a
//! private notify socket, as under systemd), and exits 0; or prints why it failed and
//! exits 1.

use std::os::unix::net::UnixDatagram;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use musefs_core::manifest::Manifest;

/// The helper's arguments, if `args` (without the program name) are a helper call:
/// `MANIFEST MOUNTPOINT [-o OPTIONS]...`, the manifest an existing file.
pub fn parse(args: &[String]) -> Option<(PathBuf, PathBuf, Vec<String>)> {
    let (source, target) = (args.first()?, args.get(1)?);
    if source.starts_with('-') || !Path::new(source).is_file() {
        return None;
    }
    let mut opts = Vec::new();
    let mut rest = args[2..].iter();
    while let Some(a) = rest.next() {
        match a.as_str() {
            "-o" => opts.extend(rest.next()?.split(',').map(str::to_owned)),
            o if o.starts_with("-o") => opts.extend(o[2..].split(',').map(str::to_owned)),
            // mount.fuse3 passes nothing else; `-n`/`-f`/`-s`/`-v` from mount(8) are harmless.
            "-n" | "-f" | "-s" | "-v" => {}
            _ => return None,
        }
    }
    Some((PathBuf::from(source), PathBuf::from(target), opts))
}

/// Runs the helper (see the module docs).
pub fn run(manifest: &Path, mountpoint: &Path, opts: &[String]) -> ExitCode {
    match start(manifest, mountpoint, opts) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("musefs: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn start(manifest: &Path, mountpoint: &Path, opts: &[String]) -> anyhow::Result<()> {
    let m = Manifest::load(manifest)?;
    let mut args: Vec<String> = vec!["mount".into(), "--manifest".into(), manifest.display().to_string()];
    for o in opts.iter().filter(|o| !o.is_empty()) {
        match o.as_str() {
            "allow_other" => args.push("--allow-other".into()),
            "no_kernel_passthrough" => args.push("--no-kernel-passthrough".into()),
            "nonempty" => args.push("--nonempty".into()),
            // Generic options mount(8) and fstab use; musefs is read-only, nodev, nosuid.
            "rw"
            | "ro"
            | "dev"
            | "nodev"
            | "suid"
            | "nosuid"
            | "exec"
            | "noexec"
            | "atime"
            | "noatime"
            | "relatime"
            | "defaults"
            | "auto"
            | "noauto"
            | "nofail"
            | "_netdev"
            | "user"
            | "users"
            | "nouser"
            | "default_permissions" => {}
            o if o.starts_with("x-") || o.starts_with("comment=") => {}
            other => anyhow::bail!(
                "unknown mount option `{other}` (musefs takes allow_other, no_kernel_passthrough and nonempty; \
                 set the rest in the manifest)"
            ),
        }
    }
    args.push(mountpoint.display().to_string());
    std::fs::create_dir_all(&m.state_dir)?;
    let log_path = m.state_dir.join("mount.log");
    let log = std::fs::OpenOptions::new().create(true).append(true).open(&log_path)?;
    let log_start = log.metadata()?.len();
    let sock_path = std::env::temp_dir().join(format!("musefs-helper-{}.sock", std::process::id()));
    let _ = std::fs::remove_file(&sock_path);
    let sock = UnixDatagram::bind(&sock_path)?;
    let _cleanup = Remove(sock_path.clone());
    let exe = std::env::current_exe()?;
    let mut child = Command::new(exe)
        .args(&args)
        .env("NOTIFY_SOCKET", &sock_path)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        // Its own process group: a closing terminal's SIGHUP is not for it.
        .process_group(0)
        .spawn()?;
    sock.set_read_timeout(Some(Duration::from_millis(200)))?;
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut buf = [0u8; 512];
    loop {
        if let Ok(n) = sock.recv(&mut buf) {
            if buf[..n].starts_with(b"READY=1") {
                return Ok(()); // the child keeps serving; it is not waited for
            }
        }
        if let Some(status) = child.try_wait()? {
            let text = std::fs::read(&log_path).unwrap_or_default();
            let tail = String::from_utf8_lossy(&text[(log_start as usize).min(text.len())..]).into_owned();
            anyhow::bail!("musefs mount exited ({status}) before the mount was up:\n{}", tail.trim_end());
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            anyhow::bail!("musefs mount did not come up within 120 s (see {})", log_path.display());
        }
    }
}

struct Remove(PathBuf);

impl Drop for Remove {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn helper_arguments() {
        let d = tempfile::tempdir().unwrap();
        let m = d.path().join("m.toml");
        std::fs::write(&m, "").unwrap();
        let s = |v: &[&str]| v.iter().map(|x| (*x).to_owned()).collect::<Vec<_>>();
        let ms = m.to_str().unwrap();
        let (_, t, o) = parse(&s(&[ms, "/mnt/x", "-o", "allow_other,nofail"])).unwrap();
        assert_eq!((t, o), (PathBuf::from("/mnt/x"), s(&["allow_other", "nofail"])));
        assert!(parse(&s(&["scan", "--manifest", ms])).is_none(), "a subcommand");
        assert!(parse(&s(&["/nonexistent.toml", "/mnt/x"])).is_none());
        assert!(parse(&s(&[ms, "/mnt/x", "--bogus"])).is_none());
    }
}

//! Real servers for the remote-origin tests, on loopback only, started and stopped by
//! the tests (guards kill them by PID).

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A free TCP port on 127.0.0.1.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn wait_port(port: u16, child: &mut Child, what: &str, log: &Path) {
    let start = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        if let Some(s) = child.try_wait().unwrap() {
            panic!("{what} exited early ({s}): {}", std::fs::read_to_string(log).unwrap_or_default());
        }
        assert!(start.elapsed() < Duration::from_secs(30), "{what} did not start on port {port}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn kill(child: &mut Option<Child>) {
    if let Some(mut c) = child.take() {
        let _ = c.kill();
        let _ = c.wait();
    }
}

/// A moto S3 server (`python3 -m moto.server`), in memory.
pub struct S3Server {
    /// Its port.
    pub port: u16,
    child: Option<Child>,
    log: PathBuf,
}

impl S3Server {
    /// Starts moto on a free port (or `port`).
    pub fn start(dir: &Path, port: Option<u16>) -> Self {
        let port = port.unwrap_or_else(free_port);
        let log = dir.join(format!("moto-{port}.log"));
        let mut child = Command::new("python3")
            .args(["-m", "moto.server", "-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("python3 -m moto.server (pip install 'moto[server]')");
        wait_port(port, &mut child, "moto", &log);
        Self { port, child: Some(child), log }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn s3py(&self, args: &[&str], path: &Path) {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/s3.py");
        let out = Command::new("python3").arg(script).args(args).arg(path).output().unwrap();
        assert!(out.status.success(), "s3.py {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }

    /// Uploads `dir` under `prefix` of `bucket` (creating it).
    pub fn put_dir(&self, bucket: &str, prefix: &str, dir: &Path) {
        self.s3py(&["put", &self.endpoint(), bucket, prefix], dir);
    }

    /// `KEY ETAG LAST-MODIFIED SIZE` of every object under `prefix` of `bucket`.
    pub fn stamps(&self, bucket: &str, prefix: &str) -> String {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/s3.py");
        let out =
            Command::new("python3").arg(script).args(["stamps", &self.endpoint(), bucket, prefix]).output().unwrap();
        assert!(out.status.success(), "s3.py stamps: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    }

    /// Uploads one file as `key`.
    pub fn put_file(&self, bucket: &str, key: &str, file: &Path) {
        self.s3py(&["putfile", &self.endpoint(), bucket, key], file);
    }

    /// The server's request log since it (re)started: one line per request with its status.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Stops it (its data is gone: moto keeps it in memory).
    pub fn stop(&mut self) {
        kill(&mut self.child);
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        kill(&mut self.child);
    }
}

/// The unprivileged account the SFTP tests log in as.
pub const SFTP_USER: &str = "musefs-sftp";

/// A private OpenSSH `sshd` on 127.0.0.1 with its own config, host key and client key.
pub struct Sshd {
    /// Its port.
    pub port: u16,
    /// The client's private key.
    pub key: PathBuf,
    child: Option<Child>,
}

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(out.status.success(), "{cmd:?}: {}", String::from_utf8_lossy(&out.stderr));
}

impl Sshd {
    /// Starts sshd on a free port (creating the test user if needed: needs root).
    pub fn start(dir: &Path) -> Self {
        Self::start_on(dir, None)
    }

    /// Starts sshd on `port` (or a free one).
    pub fn start_on(dir: &Path, port: Option<u16>) -> Self {
        let dir = dir.join("sshd");
        std::fs::create_dir_all(&dir).unwrap();
        let exists = || Command::new("id").arg(SFTP_USER).output().unwrap().status.success();
        if !exists() {
            // Tests start sshds in parallel processes: another may create the user first.
            let out =
                Command::new("useradd").args(["--create-home", "--shell", "/bin/sh", SFTP_USER]).output().unwrap();
            assert!(out.status.success() || exists(), "useradd: {}", String::from_utf8_lossy(&out.stderr));
        }
        // A locked account is refused with UsePAM no; '*' is "no password" but not locked.
        run(Command::new("usermod").args(["-p", "*", SFTP_USER]));
        std::fs::create_dir_all("/run/sshd").unwrap();
        let host_key = dir.join("host_ed25519");
        let key = dir.join("client_ed25519");
        for k in [&host_key, &key] {
            if !k.exists() {
                run(Command::new("ssh-keygen").args(["-q", "-t", "ed25519", "-N", "", "-f"]).arg(k));
            }
        }
        let auth = dir.join("authorized_keys");
        std::fs::copy(key.with_extension("pub"), &auth).unwrap();
        use std::os::unix::fs::PermissionsExt;
        // Read as the target user.
        for p in [&dir, &auth] {
            let mode = if p.is_dir() { 0o755 } else { 0o644 };
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
        }
        let mut a = dir.as_path();
        while let Some(parent) = a.parent() {
            // Every ancestor must be traversable by the test user.
            let m = std::fs::metadata(parent).unwrap().permissions().mode();
            if m & 0o005 != 0o005 {
                std::fs::set_permissions(parent, std::fs::Permissions::from_mode(m | 0o005)).unwrap();
            }
            a = parent;
        }
        let port = port.unwrap_or_else(free_port);
        let config = dir.join("sshd_config");
        std::fs::write(
            &config,
            format!(
                "Port {port}\nListenAddress 127.0.0.1\nHostKey {hk}\nPidFile {pid}\nAuthorizedKeysFile {auth}\n\
                 PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\n\
                 PermitRootLogin no\nAllowUsers {SFTP_USER}\nSubsystem sftp internal-sftp\nLogLevel ERROR\n",
                hk = host_key.display(),
                pid = dir.join("sshd.pid").display(),
                auth = auth.display()
            ),
        )
        .unwrap();
        let log = dir.join("sshd.log");
        let mut child = Command::new("/usr/sbin/sshd")
            .args(["-D", "-e", "-f"])
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("/usr/sbin/sshd (apt-get install openssh-server)");
        wait_port(port, &mut child, "sshd", &log);
        Self { port, key, child: Some(child) }
    }

    /// `ssh://USER@127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("ssh://{SFTP_USER}@127.0.0.1:{}", self.port)
    }

    /// The processes of the sessions it accepted (below its listener).
    pub fn sessions(&self) -> Vec<u32> {
        self.child.as_ref().map(|c| descendants(c.id())).unwrap_or_default()
    }

    /// Stops it and the sessions it accepted (processes of its own below it; never the
    /// sessions of another test's sshd, which run as the same user).
    pub fn stop(&mut self) {
        if let Some(c) = &self.child {
            let tree = descendants(c.id());
            for pid in tree.iter().rev() {
                let _ = Command::new("kill").args(["-KILL", &pid.to_string()]).status();
            }
        }
        kill(&mut self.child);
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The processes below `pid` (children first listed before theirs), from `pgrep -P`.
fn descendants(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    let mut queue = vec![pid];
    while let Some(p) = queue.pop() {
        let list = Command::new("pgrep").arg("-P").arg(p.to_string()).output();
        let text = list.map(|o| String::from_utf8_lossy(&o.stdout).into_owned()).unwrap_or_default();
        for c in text.split_whitespace().filter_map(|t| t.parse::<u32>().ok()) {
            out.push(c);
            queue.push(c);
        }
    }
    out
}

/// Makes `dir` and everything below it readable (and its ancestors traversable) by all.
pub fn make_world_readable(dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let _ = Command::new("chmod").args(["-R", "a+rX"]).arg(dir).status();
    let mut a = dir;
    while let Some(parent) = a.parent() {
        let m = std::fs::metadata(parent).unwrap().permissions().mode();
        if m & 0o005 != 0o005 {
            std::fs::set_permissions(parent, std::fs::Permissions::from_mode(m | 0o005)).unwrap();
        }
        a = parent;
    }
}

/// A private MPD (`mpd --no-daemon`) on 127.0.0.1 indexing `music_directory`, playing to
/// its `null` output (in real time); stopped by PID when dropped.
pub struct Mpd {
    /// Its port.
    pub port: u16,
    /// Its log file.
    pub log: PathBuf,
    child: Option<Child>,
}

impl Mpd {
    /// Starts MPD with its own database, state and log under `dir/mpd`.
    pub fn start(dir: &Path, music: &Path) -> Self {
        let dir = dir.join("mpd");
        std::fs::create_dir_all(&dir).unwrap();
        let port = free_port();
        let log = dir.join("mpd.log");
        let config = dir.join("mpd.conf");
        std::fs::write(
            &config,
            format!(
                "music_directory {music:?}\ndb_file {db:?}\nlog_file {log:?}\nstate_file {state:?}\n\
                 bind_to_address \"127.0.0.1\"\nport \"{port}\"\nauto_update \"no\"\nzeroconf_enabled \"no\"\n\
                 audio_output {{\n    type \"null\"\n    name \"null\"\n}}\n",
                music = music.display().to_string(),
                db = dir.join("mpd.db").display().to_string(),
                log = log.display().to_string(),
                state = dir.join("mpd.state").display().to_string(),
            ),
        )
        .unwrap();
        let stderr = dir.join("mpd.stderr");
        let mut child = Command::new("mpd")
            .arg("--no-daemon")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&stderr).unwrap())
            .spawn()
            .expect("mpd (apt-get install mpd)");
        wait_port(port, &mut child, "mpd", &stderr);
        Self { port, log, child: Some(child) }
    }

    /// Runs `mpc -p PORT ARGS` (the test fails if mpc does).
    pub fn mpc(&self, args: &[&str]) -> String {
        let out = Command::new("mpc")
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args(args)
            .output()
            .expect("mpc (apt-get install mpc)");
        assert!(out.status.success(), "mpc {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Sends one protocol command and returns the `key: value` lines of its answer
    /// (the test fails on an `ACK` error).
    pub fn command(&self, cmd: &str) -> Vec<(String, String)> {
        use std::io::{BufRead, BufReader, Write};
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let mut r = BufReader::new(s.try_clone().unwrap());
        let mut line = String::new();
        r.read_line(&mut line).unwrap();
        assert!(line.starts_with("OK MPD"), "greeting: {line}");
        writeln!(s, "{cmd}").unwrap();
        let mut out = Vec::new();
        loop {
            line.clear();
            assert!(r.read_line(&mut line).unwrap() > 0, "mpd closed the connection during {cmd}");
            let l = line.trim_end_matches('\n');
            if l == "OK" {
                return out;
            }
            assert!(!l.starts_with("ACK"), "{cmd}: {l}");
            if let Some((k, v)) = l.split_once(": ") {
                out.push((k.to_owned(), v.to_owned()));
            }
        }
    }

    /// The log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Mpd {
    fn drop(&mut self) {
        kill(&mut self.child);
    }
}

/// beets with its own configuration and library in a folder (`BEETSDIR`): imports
/// leave files where they are and write nothing (`beet write` does, when asked).
pub struct Beets {
    dir: PathBuf,
}

impl Beets {
    /// A beets home in `dir` (created).
    pub fn new(dir: &Path) -> Self {
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(
            dir.join("config.yaml"),
            format!(
                "directory: {music:?}\nlibrary: {db:?}\nimport:\n  copy: no\n  move: no\n  write: no\n  autotag: no\n  \
                 log: {log:?}\nplugins: []\n",
                music = dir.join("music").display().to_string(),
                db = dir.join("library.db").display().to_string(),
                log = dir.join("import.log").display().to_string(),
            ),
        )
        .unwrap();
        Self { dir: dir.to_owned() }
    }

    /// Runs `beet ARGS`; its standard output (the test fails if it fails).
    pub fn run(&self, args: &[&str]) -> String {
        let out =
            Command::new("beet").env("BEETSDIR", &self.dir).args(args).output().expect("beet (pip install beets)");
        assert!(out.status.success(), "beet {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    }
}

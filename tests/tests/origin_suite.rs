//! The origin behaviour suite (`musefs-plugin-suite`) on every bundled origin plugin,
//! loaded from its `.so` through the real ABI and backed by a real store: `local` (a
//! temp dir), `s3` (a moto server on loopback), `sftp` (a private sshd on loopback).
//! One check per test (`origin::NAME::CHECK`); checks an origin cannot pass by design
//! are listed as ignored.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use musefs_core::plugins::Plugins;
use musefs_plugin_api::OriginBox;
use musefs_plugin_suite::{origin_trials, Arguments, OriginStore, OriginUnderTest, SuiteOriginCaps};
use musefs_tests::servers::{make_world_readable, S3Server, Sshd};
use musefs_tests::target_dir;

fn plugins() -> Plugins {
    let p = Plugins::load_dir(&target_dir()).unwrap();
    assert!(p.errors.is_empty(), "{:?}", p.errors.iter().map(ToString::to_string).collect::<Vec<_>>());
    p
}

fn write_fixture(root: &Path, f: &BTreeMap<String, Vec<u8>>) {
    for (p, data) in f {
        let abs = root.join(p);
        std::fs::create_dir_all(abs.parent().unwrap()).unwrap();
        std::fs::write(abs, data).unwrap();
    }
}

/// A new file renamed over the old one, as a tagger or a sync tool would, with a later
/// mtime even on filesystems with coarse timestamps.
fn replace_file(root: &Path, p: &str, data: &[u8]) {
    let tmp = root.join(".replace.tmp");
    std::fs::write(&tmp, data).unwrap();
    std::fs::rename(&tmp, root.join(p)).unwrap();
    make_world_readable(root);
    let later = std::time::SystemTime::now() + Duration::from_secs(5);
    std::fs::File::options().write(true).open(root.join(p)).unwrap().set_modified(later).unwrap();
}

struct LocalStore {
    _dir: tempfile::TempDir,
    root: PathBuf,
    origin: OriginBox,
}

impl OriginStore for LocalStore {
    fn origin(&self) -> &OriginBox {
        &self.origin
    }
    fn replace(&self, path: &str, data: &[u8]) {
        replace_file(&self.root, path, data);
    }
}

struct S3Store {
    dir: tempfile::TempDir,
    server: Mutex<S3Server>,
    origin: OriginBox,
}

impl OriginStore for S3Store {
    fn origin(&self) -> &OriginBox {
        &self.origin
    }
    fn replace(&self, path: &str, data: &[u8]) {
        let f = self.dir.path().join("replacement");
        std::fs::write(&f, data).unwrap();
        self.server.lock().unwrap().put_file("suite", &format!("in/here/{path}"), &f);
    }
    fn stop(&self) {
        self.server.lock().unwrap().stop();
    }
}

struct SftpStore {
    _dir: tempfile::TempDir,
    root: PathBuf,
    sshd: Mutex<Sshd>,
    origin: OriginBox,
}

impl OriginStore for SftpStore {
    fn origin(&self) -> &OriginBox {
        &self.origin
    }
    fn replace(&self, path: &str, data: &[u8]) {
        replace_file(&self.root, path, data);
    }
    fn stop(&self) {
        self.sshd.lock().unwrap().stop();
    }
}

fn local() -> OriginUnderTest {
    OriginUnderTest::new("local", SuiteOriginCaps::default(), |files| {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        write_fixture(&root, files);
        let cfg = format!("{{\"root\":{:?}}}", root.display().to_string());
        let origin = plugins().new_origin("local", &cfg).unwrap();
        Box::new(LocalStore { _dir: dir, root, origin })
    })
}

fn s3() -> OriginUnderTest {
    let caps = SuiteOriginCaps { stoppable: true, pins_versions: true };
    OriginUnderTest::new("s3", caps, |files| {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        write_fixture(&root, files);
        let server = S3Server::start(dir.path(), None);
        server.put_dir("suite", "in/here", &root);
        let cfg = format!(
            "{{\"bucket\":\"suite\",\"prefix\":\"in/here\",\"endpoint\":{:?},\"allow_http\":true,\
             \"access_key_id\":\"k\",\"secret_access_key\":\"s\",\"retries\":2}}",
            server.endpoint()
        );
        let origin = plugins().new_origin("s3", &cfg).unwrap();
        Box::new(S3Store { dir, server: Mutex::new(server), origin })
    })
}

fn sftp() -> OriginUnderTest {
    let caps = SuiteOriginCaps { stoppable: true, pins_versions: true };
    OriginUnderTest::new("sftp", caps, |files| {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        write_fixture(&root, files);
        make_world_readable(&root);
        let sshd = Sshd::start(dir.path());
        let cfg = format!(
            "{{\"endpoint\":{:?},\"key\":{:?},\"known_hosts_strategy\":\"accept\",\"root\":{:?},\"retries\":2}}",
            sshd.endpoint(),
            sshd.key.display().to_string(),
            root.display().to_string()
        );
        let origin = plugins().new_origin("sftp", &cfg).unwrap();
        Box::new(SftpStore { _dir: dir, root, sshd: Mutex::new(sshd), origin })
    })
}

fn main() {
    let args = Arguments::from_args();
    let mut trials = Vec::new();
    for o in [local(), s3(), sftp()] {
        trials.extend(origin_trials(o));
    }
    musefs_plugin_suite::run(&args, trials).exit();
}

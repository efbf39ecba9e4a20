//! The example third-party plugin (`examples/format-wav`), built on its own against
//! `plugin-api` only, loaded through `--plugin-dir` next to the bundled local origin:
//! scanned, mounted, served in synthesis mode, edited.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use musefs_tests::{audio_md5, target_dir, wait_for, Mount};

/// Builds the example crate like its author would (its own Cargo.toml, outside the
/// workspace) and returns a plugin directory holding it and the local origin plugin.
fn plugin_dir(dir: &Path) -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let target = root.join("target/fixtures");
    let out = Command::new(env!("CARGO"))
        .args(["build", "--quiet", "--manifest-path"])
        .arg(root.join("examples/format-wav/Cargo.toml"))
        .arg("--target-dir")
        .arg(&target)
        .output()
        .expect("cargo");
    assert!(out.status.success(), "building examples/format-wav failed: {}", String::from_utf8_lossy(&out.stderr));
    let plugins = dir.join("plugins");
    fs::create_dir_all(&plugins).unwrap();
    fs::copy(target.join("debug/libmusefs_format_wav.so"), plugins.join("libmusefs_format_wav.so")).unwrap();
    fs::copy(target_dir().join("libmusefs_origin_local.so"), plugins.join("libmusefs_origin_local.so")).unwrap();
    plugins
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{cmd:?}: {text}");
    text
}

fn ffprobe_tag(path: &Path, tag: &str) -> String {
    let out = Command::new("ffprobe")
        .args(["-v", "error", "-show_entries", &format!("format_tags={tag}"), "-of", "csv=p=0"])
        .arg(path)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

#[test]
fn an_out_of_tree_wav_plugin_scans_mounts_and_synthesizes() {
    let t = tempfile::tempdir().unwrap();
    let plugins = plugin_dir(t.path());
    let lib = t.path().join("lib");
    fs::create_dir_all(&lib).unwrap();
    let raw = t.path().join("raw.wav");
    run(Command::new("sox")
        .args(["-n", "-r", "44100", "-b", "16", "-c", "2"])
        .arg(&raw)
        .args(["synth", "1", "sine", "440"]));
    let wav = lib.join("tone.wav");
    run(Command::new("ffmpeg")
        .args(["-v", "error", "-i"])
        .arg(&raw)
        .args([
            "-metadata",
            "title=Wave Title",
            "-metadata",
            "artist=Wave Artist",
            "-metadata",
            "album=Wave Album",
            "-metadata",
            "track=4",
            "-c",
            "copy",
        ])
        .arg(&wav));
    let manifest = musefs_tests::write_manifest(
        t.path(),
        &lib,
        &format!("mode = \"synthesis\"\nrefresh_interval_ms = 100\nplugin_dir = {:?}\ntemplate = \"$artist/$album/$track $title\"", plugins.display().to_string()),
    );
    let bin = musefs_tests::musefs_bin();
    let list = run(Command::new(&bin).args(["plugins", "list", "--plugin-dir"]).arg(&plugins));
    assert!(list.lines().any(|l| l.starts_with("wav") && l.contains("format")), "{list}");
    let scan = run(Command::new(&bin).args(["scan", "--manifest"]).arg(&manifest));
    assert!(scan.contains("added 1 /"), "{scan}");
    let mnt = t.path().join("mnt");
    let m = Mount::start(&manifest, &mnt, &[]);
    let served = mnt.join("Wave Artist/Wave Album/04 Wave Title.wav");
    assert!(served.exists(), "{}", m.log_text());
    assert_eq!(ffprobe_tag(&served, "title"), "Wave Title");
    assert_eq!(audio_md5(&served), audio_md5(&wav));
    run(Command::new(&bin).args(["tag", "set", "--manifest"]).arg(&manifest).args([
        "Wave Artist/Wave Album/04 Wave Title.wav",
        "title=Edited Wave",
        "genre=Test",
    ]));
    let edited = mnt.join("Wave Artist/Wave Album/04 Edited Wave.wav");
    assert!(wait_for(5, || edited.exists()), "{}", m.log_text());
    assert_eq!(ffprobe_tag(&edited, "title"), "Edited Wave");
    assert_eq!(ffprobe_tag(&edited, "genre"), "Test");
    assert_eq!(audio_md5(&edited), audio_md5(&wav), "audio untouched");
    let len = fs::metadata(&edited).unwrap().len();
    let bytes = fs::read(&edited).unwrap();
    assert_eq!(bytes.len() as u64, len);
    assert_eq!(u64::from(u32::from_le_bytes(bytes[4..8].try_into().unwrap())) + 8, len, "RIFF size is right");
    assert_eq!(m.stop(), Some(0));
}

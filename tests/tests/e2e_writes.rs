//! Saving tags through a writable mount (issue 17): real tag editors (mutagen, metaflac,
//! id3v2, eyeD3, vorbiscomment, AtomicParsley, beets) save served files; each save
//! becomes a catalog edit, the served file passes its validator with the original's
//! audio packets, and no original is ever written (bytes and mtimes checked after every
//! scenario). Saves that change the audio are refused at close, and the file reads as
//! before.

use std::collections::BTreeMap;
use std::fs;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use musefs_tests::{audio_md5, ls_long, musefs, scan, validate, wait_for, write_manifest, write_png, Mount};

fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// A library of one file per format, made by the real encoders, each with artist,
/// album, title and track: `(origin path, format)`.
fn library(lib: &Path) -> Vec<(&'static str, &'static str)> {
    fs::create_dir_all(lib).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let wav = tmp.path().join("tone.wav");
    run(Command::new("sox")
        .args(["-n", "-r", "44100", "-c", "2", "-b", "16"])
        .arg(&wav)
        .args(["synth", "4", "sine", "440", "sine", "660"]));
    let p = |n: &str| lib.join(n);
    run(Command::new("flac")
        .args(["-s", "-f", "--padding=512", "-T", "ARTIST=Ann", "-T", "ALBUM=Alpha"])
        .args(["-T", "TITLE=One", "-T", "TRACKNUMBER=1"])
        .arg(&wav)
        .arg("-o")
        .arg(p("a.flac")));
    for (name, title, n) in [("b.mp3", "Two", "2"), ("c.mp3", "Three", "3")] {
        run(Command::new("lame")
            .args(["--quiet", "-b", "128", "--tt", title, "--ta", "Ann", "--tl", "Alpha", "--tn", n])
            .arg(&wav)
            .arg(p(name)));
    }
    run(Command::new("oggenc")
        .args(["-Q", "-t", "Four", "-a", "Bea", "-l", "Beta", "-N", "4"])
        .arg(&wav)
        .arg("-o")
        .arg(p("d.ogg")));
    run(Command::new("opusenc")
        .args(["--quiet", "--title", "Five", "--artist", "Bea", "--album", "Beta", "--tracknumber", "5"])
        .arg(&wav)
        .arg(p("e.opus")));
    for (name, title, n, codec) in [("f.m4a", "Six", "6", "aac"), ("g.wav", "Seven", "7", "pcm_s16le")] {
        run(Command::new("ffmpeg")
            .args(["-v", "error", "-i"])
            .arg(&wav)
            .args(["-c:a", codec, "-metadata", &format!("title={title}"), "-metadata", "artist=Cy"])
            .args(["-metadata", "album=Gamma", "-metadata", &format!("track={n}")])
            .arg(p(name)));
    }
    library_files()
}

/// [`library`]'s files: `(origin path, format)`.
fn library_files() -> Vec<(&'static str, &'static str)> {
    vec![
        ("a.flac", "flac"),
        ("b.mp3", "mp3"),
        ("c.mp3", "mp3 (saved as ID3v2.3)"),
        ("d.ogg", "ogg vorbis"),
        ("e.opus", "opus"),
        ("f.m4a", "m4a"),
        ("g.wav", "wav"),
    ]
}

/// Every original's bytes and mtime.
fn originals(lib: &Path) -> BTreeMap<String, (Vec<u8>, i64)> {
    fs::read_dir(lib)
        .unwrap()
        .map(|e| {
            let p = e.unwrap().path();
            let m = fs::metadata(&p).unwrap();
            (
                p.file_name().unwrap().to_string_lossy().into_owned(),
                (fs::read(&p).unwrap(), m.mtime_nsec() + m.mtime() * 1_000_000_000),
            )
        })
        .collect()
}

fn assert_originals_unchanged(lib: &Path, before: &BTreeMap<String, (Vec<u8>, i64)>, after: &str) {
    let now = originals(lib);
    assert_eq!(now.keys().collect::<Vec<_>>(), before.keys().collect::<Vec<_>>(), "{after}: the originals' folder");
    for (name, (bytes, mtime)) in before {
        assert!(now[name].0 == *bytes, "{after}: original {name} was modified");
        assert_eq!(now[name].1, *mtime, "{after}: original {name}'s mtime moved");
    }
}

/// The tree path serving origin path `origin`, from the catalog.
fn served(manifest: &Path, origin: &str) -> String {
    ls_long(manifest).into_iter().find(|(_, o)| o == origin).unwrap_or_else(|| panic!("{origin} is not served")).0
}

/// The export document of one file: `(tags, pictures)`.
fn exported(manifest: &Path, origin: &str) -> (BTreeMap<String, Vec<String>>, Vec<serde_json::Value>) {
    let out =
        musefs(&["tag", "export", "--manifest", manifest.to_str().unwrap(), "-o", "-", &format!("main:{origin}")]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let file = &doc["files"][0];
    let tags = serde_json::from_value(file["tags"].clone()).unwrap();
    let pictures = file["pictures"].as_array().cloned().unwrap_or_default();
    (tags, pictures)
}

fn first(tags: &BTreeMap<String, Vec<String>>, key: &str) -> String {
    tags.get(key).and_then(|v| v.first()).cloned().unwrap_or_default()
}

fn script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts").join(name)
}

/// Runs `mutagen_save.py` on a served file.
fn mutagen_save(path: &Path, args: &[&str]) -> Output {
    Command::new("python3").arg(script("mutagen_save.py")).arg(args[0]).arg(path).args(&args[1..]).output().unwrap()
}

/// Waits for the tree to show `origin` at a path for which `want` holds; returns it.
fn wait_served(manifest: &Path, mnt: &Path, origin: &str, want: impl Fn(&str) -> bool) -> PathBuf {
    let mut path = String::new();
    let ok = wait_for(10, || {
        path = served(manifest, origin);
        want(&path) && mnt.join(&path).exists()
    });
    assert!(ok, "{origin} is served as {path}");
    mnt.join(path)
}

/// What a served file must be after a save: valid for its own validator (the same MP3
/// warnings as the original), with the original's audio packets.
fn assert_sound(served: &Path, original: &Path, what: &str) {
    let (got, want) = (validate(served), validate(original));
    assert!(got.is_ok(), "{what}: {} fails its validator: {got:?}", served.display());
    assert_eq!(got, want, "{what}: validator warnings of {}", served.display());
    assert_eq!(audio_md5(served), audio_md5(original), "{what}: the audio packets of {}", served.display());
}

/// A JPEG of about 1.9 MB (ffmpeg, noise): a picture no padding holds.
fn big_jpeg(dir: &Path) -> PathBuf {
    let p = dir.join("big.jpg");
    run(Command::new("ffmpeg")
        .args(["-v", "error", "-y", "-f", "lavfi", "-i", "color=c=gray:s=1600x1200,noise=alls=100:allf=t"])
        .args(["-frames:v", "1", "-q:v", "1"])
        .arg(&p));
    assert!(fs::metadata(&p).unwrap().len() > 1_000_000);
    p
}

fn writable_manifest(dir: &Path, lib: &Path, extra: &str) -> PathBuf {
    write_manifest(
        dir,
        lib,
        &format!(
            "mode = \"synthesis\"\nwritable = true\nsync_interval = \"off\"\nrefresh_interval_ms = 200\n\
             template = \"$artist/$album/$track $title\"\n{extra}"
        ),
    )
}

/// A writable library of [`library`]'s files, scanned: its folder, the original's
/// state before anything, and where to mount it.
struct Lib {
    t: tempfile::TempDir,
    lib: PathBuf,
    manifest: PathBuf,
    before: BTreeMap<String, (Vec<u8>, i64)>,
    mnt: PathBuf,
}

fn writable_library(extra: &str) -> Lib {
    let t = tempfile::tempdir().unwrap();
    let lib = t.path().join("lib");
    library(&lib);
    let manifest = writable_manifest(t.path(), &lib, extra);
    scan(&manifest);
    let before = originals(&lib);
    let mnt = t.path().join("mnt");
    Lib { t, lib, manifest, before, mnt }
}

#[test]
fn mutagen_saves_in_place_and_with_a_big_picture_become_edits_for_every_format() {
    let Lib { t, lib, manifest, before, mnt } = writable_library("");
    let files = library_files();
    let jpeg = &big_jpeg(t.path()).display().to_string();
    let m = Mount::start(&manifest, &mnt, &[]);
    for (origin, format) in files {
        let v23: &[&str] = if format.contains("v2.3") { &["--id3v23"] } else { &[] };
        let path = mnt.join(served(&manifest, origin));
        let (tags, _) = exported(&manifest, origin);
        let title = format!("{} (small edit)", first(&tags, "title"));

        // A small edit: within the padding (mutagen rewrites the header in place).
        let out = mutagen_save(&path, &[&["small", &title][..], v23].concat());
        assert!(out.status.success(), "{format}: mutagen: {}", String::from_utf8_lossy(&out.stderr));
        let path = wait_served(&manifest, &mnt, origin, |p| p.ends_with(&format!("{title}.{}", ext(origin))));
        let (tags, _) = exported(&manifest, origin);
        assert_eq!(first(&tags, "title"), title, "{format}: {tags:?}");
        assert_eq!(first(&tags, "genre"), "Edited", "{format}: {tags:?}");
        assert_eq!(first(&tags, "artist"), first(&exported(&manifest, origin).0, "artist"));
        assert!(!first(&tags, "artist").is_empty(), "{format}: the other tags stay: {tags:?}");
        assert_sound(&path, &lib.join(origin), &format!("{format}, small edit"));

        // A 1.9 MB picture: the header outgrows the padding and mutagen moves every byte
        // after it (the audio shifts by megabytes in the saved image).
        let out = mutagen_save(&path, &[&["picture", jpeg, "Bigger Album"][..], v23].concat());
        assert!(out.status.success(), "{format}: mutagen: {}", String::from_utf8_lossy(&out.stderr));
        let path = wait_served(&manifest, &mnt, origin, |p| p.contains("/Bigger Album/"));
        let (tags, pictures) = exported(&manifest, origin);
        assert_eq!(first(&tags, "album"), "Bigger Album", "{format}");
        assert_eq!(first(&tags, "title"), title, "{format}: the earlier edit stays");
        assert_eq!(pictures.len(), 1, "{format}: {pictures:?}");
        assert!(fs::metadata(&path).unwrap().len() > 1_000_000, "{format}: the served file carries the picture");
        assert_sound(&path, &lib.join(origin), &format!("{format}, 1 MB picture"));
        assert_originals_unchanged(&lib, &before, format);
    }
    assert!(m.log_text().matches("saved through the mount").count() >= 14, "{}", m.log_text());
    assert_eq!(m.stop(), Some(0));
    assert_eq!(fs::read_dir(t.path().join("state/writes")).unwrap().count(), 0, "no scratch file is left");
    assert_originals_unchanged(&lib, &before, "the end");
}

fn ext(origin: &str) -> &str {
    origin.rsplit_once('.').unwrap().1
}

#[test]
fn command_line_editors_save_in_place_or_by_temp_file_and_rename() {
    // id3lib (the `id3v2` tool) reads ID3v2.3 only: the mount serves that version.
    let Lib { t, lib, manifest, before, mnt } = writable_library("[format.mp3]\nid3v2_version = \"2.3\"\n");
    let m = Mount::start(&manifest, &mnt, &[]);
    let png = t.path().join("cover.png");
    write_png(&png);

    // metaflac: a tag (in place, within the padding), then a picture (larger than the
    // padding: metaflac writes a temporary file beside it and renames it over).
    let flac = mnt.join(served(&manifest, "a.flac"));
    run(Command::new("metaflac").arg("--set-tag=GENRE=Chamber").arg(&flac));
    assert_eq!(first(&exported(&manifest, "a.flac").0, "genre"), "Chamber");
    run(Command::new("metaflac").arg(format!("--import-picture-from={}", png.display())).arg(&flac));
    let (tags, pictures) = exported(&manifest, "a.flac");
    assert_eq!((first(&tags, "genre").as_str(), pictures.len()), ("Chamber", 1), "{tags:?}");
    assert_sound(&flac, &lib.join("a.flac"), "metaflac");

    // id3v2 (id3lib): renders the tag into a temporary file and renames it over.
    let mp3 = mnt.join(served(&manifest, "b.mp3"));
    run(Command::new("id3v2").args(["--TCON", "Baroque", "--TCOM", "Someone"]).arg(&mp3));
    let (tags, _) = exported(&manifest, "b.mp3");
    assert_eq!((first(&tags, "genre").as_str(), first(&tags, "composer").as_str()), ("Baroque", "Someone"), "{tags:?}");
    assert_eq!(first(&tags, "title"), "Two", "id3v2 keeps the tags it read: {tags:?}");
    assert_sound(&mp3, &lib.join("b.mp3"), "id3v2");

    // eyeD3: a new title (the file is renamed by it).
    let mp3 = mnt.join(served(&manifest, "c.mp3"));
    let out =
        Command::new("eyeD3").args(["-Q", "--title", "Three by eyeD3", "--album", "Alpha"]).arg(&mp3).output().unwrap();
    assert!(out.status.success(), "eyeD3: {}", String::from_utf8_lossy(&out.stderr));
    let mp3 = wait_served(&manifest, &mnt, "c.mp3", |p| p.ends_with("03 Three by eyeD3.mp3"));
    assert_eq!(first(&exported(&manifest, "c.mp3").0, "title"), "Three by eyeD3");
    assert_sound(&mp3, &lib.join("c.mp3"), "eyeD3");

    // vorbiscomment -w: the comments listed, one changed, written back (a temporary
    // file renamed over the served file).
    let ogg = mnt.join(served(&manifest, "d.ogg"));
    let listed = String::from_utf8(run(Command::new("vorbiscomment").arg("-l").arg(&ogg)).stdout).unwrap();
    let edited: String = listed
        .lines()
        .map(|l| {
            if l.to_ascii_uppercase().starts_with("TITLE=") {
                "TITLE=Four, vorbiscomment\n".to_owned()
            } else {
                format!("{l}\n")
            }
        })
        .collect();
    let comments = t.path().join("comments.txt");
    fs::write(&comments, edited).unwrap();
    run(Command::new("vorbiscomment").arg("-w").arg("-c").arg(&comments).arg(&ogg));
    let ogg = wait_served(&manifest, &mnt, "d.ogg", |p| p.ends_with("04 Four, vorbiscomment.ogg"));
    let (tags, _) = exported(&manifest, "d.ogg");
    assert_eq!((first(&tags, "artist").as_str(), first(&tags, "album").as_str()), ("Bea", "Beta"), "{tags:?}");
    assert_sound(&ogg, &lib.join("d.ogg"), "vorbiscomment");

    // AtomicParsley --overWrite: a complete new file written beside it, renamed over.
    let m4a = mnt.join(served(&manifest, "f.m4a"));
    let out = Command::new("AtomicParsley")
        .arg(&m4a)
        .args(["--genre", "Fado", "--artwork"])
        .arg(&png)
        .arg("--overWrite")
        .output()
        .unwrap();
    assert!(out.status.success(), "AtomicParsley: {}", String::from_utf8_lossy(&out.stderr));
    let (tags, pictures) = exported(&manifest, "f.m4a");
    assert_eq!((first(&tags, "genre").as_str(), pictures.len()), ("Fado", 1), "{tags:?}");
    assert_sound(&m4a, &lib.join("f.m4a"), "AtomicParsley");

    // None of their temporary files is left in the tree.
    let listed: Vec<String> = walk(&mnt);
    assert!(listed.iter().all(|p| !p.contains("tmp") && !p.contains("temp")), "{listed:?}");
    assert_originals_unchanged(&lib, &before, "the command-line editors");
    assert_eq!(m.stop(), Some(0));
}

/// Every file under `dir`, relative.
fn walk(dir: &Path) -> Vec<String> {
    musefs_tests::all_files(dir).iter().map(|p| p.strip_prefix(dir).unwrap().display().to_string()).collect()
}

#[test]
fn a_save_that_changes_the_audio_is_refused_at_close_and_the_file_reads_as_before() {
    let port = musefs_tests::servers::free_port();
    let Lib { t, lib, manifest, before, mnt } = writable_library(&format!("metrics_addr = \"127.0.0.1:{port}\"\n"));
    let m = Mount::start(&manifest, &mnt, &[]);
    let flac = mnt.join(served(&manifest, "a.flac"));
    let served_before = fs::read(&flac).unwrap();
    let tags_before = exported(&manifest, "a.flac");

    // dd into the middle of the audio: close reports EPERM.
    let out = Command::new("dd")
        .args(["if=/dev/zero", "bs=1", "count=64", "conv=notrunc", &format!("seek={}", served_before.len() / 2)])
        .arg(format!("of={}", flac.display()))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("Operation not permitted"), "dd: {err}");
    assert!(fs::read(&flac).unwrap() == served_before, "the file reads as before");
    assert_eq!(exported(&manifest, "a.flac"), tags_before, "nothing was stored");
    assert!(
        m.log_text().contains("refused a save through the mount: main:a.flac: its audio changed"),
        "{}",
        m.log_text()
    );

    // A re-encode copied over it (cp: O_TRUNC, write, close): EPERM too.
    let reencoded = t.path().join("re.flac");
    run(Command::new("sox").arg(&flac).arg("-C").arg("0").arg(&reencoded).args(["gain", "-1"]));
    let out = Command::new("cp").arg(&reencoded).arg(&flac).output().unwrap();
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("Operation not permitted"));
    assert!(fs::read(&flac).unwrap() == served_before, "the file reads as before");

    // Bytes that are no FLAC at all: EIO (Python reports the error of close).
    let out = Command::new("python3")
        .args(["-c", "import sys; f = open(sys.argv[1], 'wb'); f.write(b'not audio'); f.close()"])
        .arg(&flac)
        .output()
        .unwrap();
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("Input/output error"), "{out:?}");
    assert!(fs::read(&flac).unwrap() == served_before, "the file reads as before");
    assert!(m.log_text().contains("does not read as flac"), "{}", m.log_text());

    // `truncate` of a path is a save of its own: refused.
    let out = Command::new("truncate").args(["-s", "1000"]).arg(&flac).output().unwrap();
    assert!(!out.status.success(), "truncate: {out:?}");
    assert!(fs::read(&flac).unwrap() == served_before, "the file reads as before");
    assert_eq!(exported(&manifest, "a.flac"), tags_before, "nothing was stored");
    // The metrics count each refusal by its reason.
    let page = musefs_tests::curl(&format!("http://127.0.0.1:{port}/metrics"));
    let saves = |r: &str| musefs_tests::metric(&page, &format!("musefs_saves_total{{result=\"{r}\"}}"));
    assert!(saves("refused_audio_changed") >= 3.0, "{page}");
    assert!(saves("refused_unreadable") >= 1.0, "{page}");
    assert_eq!(saves("stored"), 0.0, "{page}");
    assert_eq!(m.stop(), Some(0));
    assert_originals_unchanged(&lib, &before, "refused saves");
}

#[test]
fn a_reader_streaming_during_a_save_sees_the_old_version_or_the_new_one_never_a_mix() {
    let Lib { t, lib, manifest, before, mnt } = writable_library("");
    let m = Mount::start(&manifest, &mnt, &[]);
    let jpeg = &big_jpeg(t.path()).display().to_string();
    for origin in ["a.flac", "d.ogg", "f.m4a"] {
        let path = mnt.join(served(&manifest, origin));
        let old = fs::read(&path).unwrap();
        // A reader half way through the file...
        let mut reader = fs::File::open(&path).unwrap();
        let mut got = vec![0u8; old.len() / 2];
        reader.read_exact(&mut got).unwrap();
        // ...while an editor grows the header by a megabyte and saves.
        let out = mutagen_save(&path, &["picture", jpeg, "During A Read"]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let new_path = wait_served(&manifest, &mnt, origin, |p| p.contains("/During A Read/"));
        // The reader goes on to the end: the old version, whole.
        reader.read_to_end(&mut got).unwrap();
        assert!(got == old, "{origin}: the streaming reader sees the version it opened, whole");
        reader.seek(SeekFrom::Start(0)).unwrap();
        let mut again = Vec::new();
        reader.read_to_end(&mut again).unwrap();
        assert!(again == old, "{origin}: and keeps seeing it");
        // A reader opening now sees the new version, whole and sound.
        let new = fs::read(&new_path).unwrap();
        assert!(new.len() > old.len() + 1_000_000 - 1, "{origin}: the new version carries the picture");
        assert_sound(&new_path, &lib.join(origin), origin);
    }
    assert_eq!(m.stop(), Some(0));
    assert_originals_unchanged(&lib, &before, "saves during reads");
}

#[test]
fn scratch_files_come_and_go_and_a_killed_session_is_discarded_at_the_next_mount() {
    let Lib { t, lib, manifest, before, mnt } = writable_library("");
    let m = Mount::start(&manifest, &mnt, &[]);
    let flac = mnt.join(served(&manifest, "a.flac"));
    let dir = flac.parent().unwrap().to_owned();

    // A temporary file written beside it, renamed over it: the save of a temp-file editor.
    let tmp = dir.join(".a.flac.tmp-1234");
    fs::copy(&flac, &tmp).unwrap();
    assert!(walk(&mnt).iter().any(|p| p.ends_with(".a.flac.tmp-1234")), "a scratch file is listed in its directory");
    run(Command::new("metaflac").arg("--set-tag=COMMENT=via rename").arg(&tmp));
    fs::rename(&tmp, &flac).unwrap();
    assert_eq!(first(&exported(&manifest, "a.flac").0, "comment"), "via rename");
    assert!(!tmp.exists(), "the scratch file is gone once renamed over");
    assert_sound(&flac, &lib.join("a.flac"), "rename");

    // Scratch files: created, renamed among themselves, unlinked; one is left behind.
    fs::write(dir.join("backup.bak"), b"a backup copy").unwrap();
    fs::rename(dir.join("backup.bak"), dir.join("backup.old")).unwrap();
    assert_eq!(fs::read(dir.join("backup.old")).unwrap(), b"a backup copy");
    fs::remove_file(dir.join("backup.old")).unwrap();
    assert!(!dir.join("backup.old").exists());
    fs::write(dir.join("left-behind.tmp"), b"never renamed").unwrap();
    // Served files are not deleted or moved, and directories are the catalog's.
    let e = fs::remove_file(&flac).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EPERM), "{e}");
    let e = fs::rename(&flac, dir.join("elsewhere.flac")).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EPERM), "{e}");

    // A session cut short by kill -9: half a header written, never closed.
    let mp3 = mnt.join(served(&manifest, "b.mp3"));
    let served_mp3 = fs::read(&mp3).unwrap();
    let tags_mp3 = exported(&manifest, "b.mp3");
    let mut w = fs::OpenOptions::new().write(true).open(&mp3).unwrap();
    std::io::Write::write_all(&mut w, b"ID3\x04\x00\x00\x00\x00\x10\x00TIT2").unwrap();
    assert_eq!(fs::read_dir(t.path().join("state/writes")).unwrap().count(), 2, "the session's and a scratch file's");
    m.kill9();
    drop(w);
    let _guard = musefs_tests::Unmount(mnt.clone());

    let m = Mount::start(&manifest, &mnt, &[]);
    assert!(m.log_text().contains("discarded 2 unfinished write session(s)"), "{}", m.log_text());
    assert_eq!(exported(&manifest, "b.mp3"), tags_mp3, "nothing of the killed session was stored");
    assert!(fs::read(mnt.join(served(&manifest, "b.mp3"))).unwrap() == served_mp3, "the file reads as before");
    assert!(!dir.join("left-behind.tmp").exists(), "scratch files do not outlive their mount");
    assert!(walk(&mnt).iter().all(|p| !p.ends_with(".tmp")), "{:?}", walk(&mnt));
    assert_eq!(m.stop(), Some(0));
    assert_originals_unchanged(&lib, &before, "scratch files and a killed session");
}

#[test]
fn a_read_only_mount_answers_erofs_and_a_writable_one_follows_the_modes() {
    let t = tempfile::tempdir().unwrap();
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(t.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let lib = t.path().join("lib");
    library(&lib);
    let ro = write_manifest(t.path(), &lib, "mode = \"synthesis\"\nsync_interval = \"off\"\n");
    scan(&ro);
    let mnt = t.path().join("mnt");
    let m = Mount::start(&ro, &mnt, &[]);
    let flac = mnt.join(served(&ro, "a.flac"));
    let e = fs::OpenOptions::new().write(true).open(&flac).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EROFS), "{e}");
    let e = fs::write(flac.parent().unwrap().join("new.tmp"), b"x").unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EROFS), "{e}");
    assert_eq!(m.stop(), Some(0));

    // Writable, other users allowed in: the owner (root here) writes, `nobody` reads
    // (0644) but may not write or create (0755 directories).
    let rw = t.path().join("rw.toml");
    fs::write(
        &rw,
        fs::read_to_string(&ro)
            .unwrap()
            .replace("mode = \"synthesis\"", "mode = \"synthesis\"\nwritable = true\nallow_other = true"),
    )
    .unwrap();
    let m = Mount::start(&rw, &mnt, &[]);
    let as_nobody = |script: &str| {
        Command::new("setpriv")
            .args(["--reuid=nobody", "--regid=nogroup", "--clear-groups", "sh", "-c", script, "sh"])
            .arg(&flac)
            .output()
            .unwrap()
    };
    let out = as_nobody("head -c 4 \"$1\"");
    assert!(out.status.success() && out.stdout == b"fLaC", "{out:?}");
    let out = as_nobody("printf x >> \"$1\"");
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("Permission denied"), "{out:?}");
    let out = as_nobody("touch \"$(dirname \"$1\")/by-nobody.tmp\"");
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("Permission denied"), "{out:?}");
    assert_eq!(m.stop(), Some(0));
}

#[test]
fn beets_writes_its_tags_through_the_mount() {
    let Lib { t, lib, manifest, before, mnt } = writable_library("");
    let m = Mount::start(&manifest, &mnt, &[]);
    let beets = musefs_tests::servers::Beets::new(&t.path().join("beets"));
    let beet = |args: &[&str]| beets.run(args);
    beet(&["import", "-A", "-q", mnt.to_str().unwrap()]);
    // Every track of album Beta (Vorbis and Opus) gets a new genre and comment.
    beet(&["modify", "-y", "-M", "album:Beta", "genre=Shoegaze", "comments=tagged by beets"]);
    beet(&["write", "album:Beta"]);
    for origin in ["d.ogg", "e.opus"] {
        let (tags, _) = exported(&manifest, origin);
        assert_eq!(first(&tags, "genre"), "Shoegaze", "{origin}: {tags:?}");
        assert_eq!(first(&tags, "album"), "Beta", "{origin}: {tags:?}");
        assert_sound(&mnt.join(served(&manifest, origin)), &lib.join(origin), origin);
    }
    assert_eq!(first(&exported(&manifest, "a.flac").0, "genre"), "", "other albums untouched");
    assert_eq!(m.stop(), Some(0));
    assert_originals_unchanged(&lib, &before, "beet write");
}

#[test]
fn a_library_in_s3_takes_saves_through_the_mount_and_the_bucket_is_untouched() {
    use musefs_tests::servers::S3Server;
    let t = tempfile::tempdir().unwrap();
    let lib = t.path().join("lib");
    library(&lib);
    let server = S3Server::start(t.path(), None);
    server.put_dir("music", "lib", &lib);
    let stamps = server.stamps("music", "lib/");
    assert_eq!(stamps.lines().count(), 7, "{stamps}");
    let manifest = t.path().join("musefs.toml");
    fs::write(
        &manifest,
        format!(
            "state_dir = {:?}\nmode = \"synthesis\"\nwritable = true\nsync_interval = \"off\"\n\
             refresh_interval_ms = 200\ntemplate = \"$artist/$album/$track $title\"\n\
             [cache]\nchunk_size = \"64KiB\"\n\
             [[origin]]\nname = \"main\"\nkind = \"s3\"\nbucket = \"music\"\nprefix = \"lib\"\nendpoint = {:?}\n\
             allow_http = true\naccess_key_id = \"musefs-test\"\nsecret_access_key = \"musefs-test-secret\"\n",
            t.path().join("state").display().to_string(),
            server.endpoint()
        ),
    )
    .unwrap();
    scan(&manifest);
    let uploaded = server.log_text().len();
    let mnt = t.path().join("mnt");
    let m = Mount::start(&manifest, &mnt, &[]);
    let jpeg = &big_jpeg(t.path()).display().to_string();
    for origin in ["a.flac", "d.ogg", "f.m4a"] {
        let path = mnt.join(served(&manifest, origin));
        let out = mutagen_save(&path, &["small", "Saved Over S3"]);
        assert!(out.status.success(), "{origin}: {}", String::from_utf8_lossy(&out.stderr));
        let path = wait_served(&manifest, &mnt, origin, |p| p.contains("Saved Over S3"));
        let out = mutagen_save(&path, &["picture", jpeg, "S3 Album"]);
        assert!(out.status.success(), "{origin}: {}", String::from_utf8_lossy(&out.stderr));
        let path = wait_served(&manifest, &mnt, origin, |p| p.contains("/S3 Album/"));
        let (tags, pictures) = exported(&manifest, origin);
        assert_eq!((first(&tags, "title").as_str(), pictures.len()), ("Saved Over S3", 1), "{origin}: {tags:?}");
        // The audio compared with the original's was read through the chunk cache.
        assert_sound(&path, &lib.join(origin), origin);
    }
    assert_eq!(m.stop(), Some(0));
    assert_eq!(server.stamps("music", "lib/"), stamps, "no object was written");
    let requests = server.log_text()[uploaded..].to_owned();
    assert!(requests.contains("\"GET /music/lib"), "{requests}");
    for verb in ["PUT", "POST", "DELETE"] {
        assert!(!requests.contains(&format!("\"{verb} /music/")), "no {verb} reached an object: {requests}");
    }
}

/// Unmounts a tmpfs when dropped.
struct Tmpfs(PathBuf);

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[test]
fn a_full_state_disk_fails_the_save_with_enospc_and_stores_nothing() {
    let t = tempfile::tempdir().unwrap();
    let lib = t.path().join("lib");
    library(&lib);
    let manifest = writable_manifest(t.path(), &lib, "");
    scan(&manifest);
    // The scratch files' directory is a 512 KiB tmpfs: a 1.9 MB picture does not fit.
    let writes = t.path().join("state/writes");
    fs::create_dir_all(&writes).unwrap();
    run(Command::new("mount").args(["-t", "tmpfs", "-o", "size=512k", "tmpfs"]).arg(&writes));
    let _tmpfs = Tmpfs(writes.clone());
    let mnt = t.path().join("mnt");
    let m = Mount::start(&manifest, &mnt, &[]);
    let jpeg = &big_jpeg(t.path()).display().to_string();
    let flac = mnt.join(served(&manifest, "a.flac"));
    let served_before = fs::read(&flac).unwrap();
    let tags_before = exported(&manifest, "a.flac");
    let out = mutagen_save(&flac, &["picture", jpeg, "Too Big"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("No space left on device"), "mutagen: {err}");
    assert!(fs::read(&flac).unwrap() == served_before, "the file reads as before");
    assert_eq!(exported(&manifest, "a.flac"), tags_before, "nothing was stored");
    // A small save still fits, and works.
    let out = mutagen_save(&flac, &["small", "Fits"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(first(&exported(&manifest, "a.flac").0, "title"), "Fits");
    assert_eq!(m.stop(), Some(0));
    assert_eq!(fs::read_dir(&writes).unwrap().count(), 0, "no scratch file is left");
}

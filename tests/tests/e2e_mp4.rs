//! MP4 end to end (issue 15, part 1): M4A (AAC and ALAC, with and without faststart) and
//! an M4B with chapters, made by ffmpeg and tagged by mutagen, scanned and mounted in
//! synthesis mode: every file under its tags, audio packets equal the original's,
//! mutagen reads the same tags and cover, `ffprobe` and `AtomicParsley -T` accept the
//! served files; a `musefs tag` edit (a long comment and a big cover, which outgrow the
//! `moov` and shift every chunk offset of a faststart file) shows up live and the files
//! stay valid, with the same audio.

use std::fs;
use std::path::Path;
use std::process::Command;

use musefs_tests::{audio_md5, ls_long, musefs, scan, sha256, wait_for, write_manifest, Mount};

/// The tags mutagen reads from an MP4 file, as one comparable string.
fn mp4_tags(p: &Path) -> String {
    let script = "import sys\nfrom mutagen.mp4 import MP4\nt = MP4(sys.argv[1]).tags or {}\n\
                  print(sorted((k, repr(v)) for k, v in t.items()))";
    let out = Command::new("python3").args(["-c", script]).arg(p).output().unwrap();
    assert!(out.status.success(), "mutagen: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

fn valid(p: &Path) {
    let out = Command::new("ffprobe").args(["-v", "error", "-show_chapters", "-show_format"]).arg(p).output().unwrap();
    assert!(out.status.success(), "ffprobe {}: {}", p.display(), String::from_utf8_lossy(&out.stderr));
    let out = Command::new("AtomicParsley").arg(p).arg("-T").output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && text.contains("Atom moov"), "AtomicParsley -T {}: {text}", p.display());
}

#[test]
fn mp4_files_are_served_with_their_tags_and_edits_show_up_live() {
    let t = tempfile::tempdir().unwrap();
    let lib = t.path().join("lib");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/mp4_fixtures.py");
    let out = Command::new("python3").arg(script).arg(&lib).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let manifest = write_manifest(t.path(), &lib, "mode = \"synthesis\"\nrefresh_interval_ms = 100\n");
    let (so, _) = scan(&manifest);
    assert!(so.contains("added 5") && so.contains("failed 0"), "{so}");
    let files = ls_long(&manifest);
    let names: Vec<&str> = files.iter().map(|(t, _)| t.as_str()).collect();
    assert!(names.contains(&"MP4 Album Artist/Books/1-05 MP4 book.m4b"), "the M4B keeps its extension: {names:?}");
    assert!(names.contains(&"MP4 Album Artist/MP4 Album/1-03 MP4 alac.m4a"), "{names:?}");
    let mnt = t.path().join("mnt");
    let m = Mount::start(&manifest, &mnt, &[]);
    let originals: Vec<(String, String)> = files.iter().map(|(_, o)| (o.clone(), sha256(&lib.join(o)))).collect();
    for (tree, origin) in &files {
        let (sp, op) = (mnt.join(tree), lib.join(origin));
        assert_eq!(mp4_tags(&sp), mp4_tags(&op), "{tree}: tags");
        assert_eq!(audio_md5(&sp), audio_md5(&op), "{tree}: audio packets");
        valid(&sp);
    }
    // Chapters survive (the chapter track and its chunk offsets).
    let chapters = |p: &Path| {
        let out = Command::new("ffprobe").args(["-v", "error", "-show_chapters"]).arg(p).output().unwrap();
        String::from_utf8_lossy(&out.stdout).matches("[CHAPTER]").count()
    };
    let book = mnt.join("MP4 Album Artist/Books/1-05 MP4 book.m4b");
    assert_eq!(chapters(&book), 2);

    // A live edit that outgrows the moov: a long comment and a 200 KB cover.
    let img = t.path().join("big.png");
    let png = "import sys,zlib,struct\n\
def c(k,d): return struct.pack('>I',len(d))+k+d+struct.pack('>I',zlib.crc32(k+d))\n\
open(sys.argv[1],'wb').write(b'\\x89PNG\\r\\n\\x1a\\n'+c(b'IHDR',struct.pack('>IIBBBBB',8,8,8,2,0,0,0))+c(b'tEXt',b'x'*200000)+c(b'IDAT',zlib.compress(bytes(8*25)))+c(b'IEND',b''))";
    assert!(Command::new("python3").args(["-c", png]).arg(&img).status().unwrap().success());
    let m_path = manifest.to_str().unwrap();
    let comment = format!("comment={}", "a long comment ".repeat(300));
    let ok = |args: &[&str]| {
        let out = musefs(args);
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    };
    ok(&["tag", "set", "--manifest", m_path, "--all", "/", &comment, "genre=Edited"]);
    ok(&["tag", "art", "set", "--manifest", m_path, "--all", "/", img.to_str().unwrap()]);
    ok(&["tag", "set", "--manifest", m_path, "main:alac-faststart.m4a", "title=Renamed ALAC"]);
    let renamed = mnt.join("MP4 Album Artist/MP4 Album/1-04 Renamed ALAC.m4a");
    assert!(wait_for(5, || renamed.exists()), "{}", m.log_text());
    for (tree, origin) in ls_long(&manifest) {
        let (sp, op) = (mnt.join(&tree), lib.join(&origin));
        let tags = mp4_tags(&sp);
        assert!(tags.contains("Edited") && tags.contains("a long comment"), "{tree}: {tags}");
        assert!(fs::metadata(&sp).unwrap().len() > 200_000, "{tree}: the cover is in");
        assert_eq!(audio_md5(&sp), audio_md5(&op), "{tree}: audio packets after the moov grew");
        valid(&sp);
    }
    assert_eq!(chapters(&book), 2);
    assert_eq!(m.stop(), Some(0));
    for (o, sum) in &originals {
        assert_eq!(&sha256(&lib.join(o)), sum, "{o} was modified");
    }
}

/// One fixture of `mp4_fixtures.py`, damaged by `damage` (which returns the range of
/// the damaged atom that must be served as it is): ffmpeg plays the damaged file; it must
/// be scanned without a failure and served with the original's audio packets and that
/// range as it is, and ffmpeg must play the served file. Returns the `tag show` output.
fn damaged_fixture_is_served(name: &str, damage: impl FnOnce(&mut Vec<u8>) -> std::ops::Range<usize>) -> String {
    let t = tempfile::tempdir().unwrap();
    let lib = t.path().join("lib");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/mp4_fixtures.py");
    let out = Command::new("python3").arg(script).arg(&lib).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    for other in fs::read_dir(&lib).unwrap().map(|e| e.unwrap().path()) {
        if !other.ends_with(name) {
            fs::remove_file(other).unwrap();
        }
    }
    let p = lib.join(name);
    let mut data = fs::read(&p).unwrap();
    let clean = data.clone();
    let kept = damage(&mut data);
    assert_ne!(data, clean, "the file is damaged");
    fs::write(&p, &data).unwrap();
    assert!(musefs_tests::ffmpeg_plays(&p), "ffmpeg plays the damaged file");
    let manifest = write_manifest(t.path(), &lib, "mode = \"synthesis\"\n");
    let (so, se) = scan(&manifest);
    assert!(so.contains("added 1") && so.contains("failed 0"), "{so}{se}");
    let files = ls_long(&manifest);
    assert_eq!(files.len(), 1, "{files:?}");
    let mnt = t.path().join("mnt");
    let m = Mount::start(&manifest, &mnt, &[]);
    let sp = mnt.join(&files[0].0);
    let served = fs::read(&sp).unwrap();
    let kept = &data[kept];
    assert!(served.windows(kept.len()).any(|w| w == kept), "the damaged atom is served as it is");
    assert!(musefs_tests::ffmpeg_plays(&sp), "ffmpeg plays the served file: {}", m.log_text());
    let ext = Path::new(name).extension().unwrap().to_str().unwrap();
    let undamaged = t.path().join(format!("clean.{ext}"));
    fs::write(&undamaged, &clean).unwrap();
    assert_eq!(audio_md5(&sp), audio_md5(&undamaged), "the audio packets are the original's");
    assert_eq!(m.stop(), Some(0));
    let out = musefs(&["tag", "show", "--manifest", manifest.to_str().unwrap(), &format!("main:{name}")]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// Regression (found by `damaged_mp4_riff_and_ogg_flac_files_are_refused_only_when_ffmpeg_cannot_play_them`):
/// a faststart M4A whose `mdat` header, after the `moov`, is garbage (a size past the end,
/// an unknown type) was refused, though ffmpeg plays it through the chunk offsets. It is
/// served: the audio packets are the original's and the damaged atom comes through as it is.
#[test]
fn an_m4a_whose_mdat_header_is_garbage_is_served_regression() {
    damaged_fixture_is_served("aac-faststart.m4a", |data| {
        let at = data.windows(4).position(|w| w == b"mdat").expect("an mdat atom") - 4;
        data[at..at + 8].copy_from_slice(b"\x66\x87\xa5\x2d\x12\x99\x38\xf2");
        at..data.len()
    });
}

/// Regression (found by the same test, in CI): an M4B whose sound track's `edts` claims
/// 1 GiB (one bit flipped in its size) was refused with "no sound track in the moov atom":
/// cut at the track's end, the `edts` swallowed the `mdia` after it. ffmpeg reads the
/// atoms inside any plain container, finds the `mdia` and plays the file; musefs reads it
/// the same way, with its tags, and serves it as it is.
#[test]
fn an_m4b_whose_edts_size_is_damaged_is_served_with_its_tags_regression() {
    let shown = damaged_fixture_is_served("book.m4b", |data| {
        let at = data.windows(4).position(|w| w == b"edts").expect("an edts atom") - 4;
        data[at] ^= 0x40;
        at..at + 16
    });
    assert!(shown.contains("MP4 book"), "the tags are read: {shown}");
}

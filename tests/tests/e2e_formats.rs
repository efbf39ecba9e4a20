//! Issue 15's bar: a mixed library (FLAC, MP3, Ogg Vorbis/Opus/FLAC/Speex, M4A AAC and
//! ALAC with and without faststart, an M4B with chapters and art, WAV with ID3 and INFO,
//! RF64, AIFF/AIFC, and WAV files as buggy writers leave them), made by real encoders and
//! taggers, scanned and mounted in synthesis mode: every file appears under its tags,
//! its audio packets equal the original's, mutagen reads the same tags and pictures, and
//! the served file passes its validators; `musefs tag set` edits show up live in an
//! M4A, a WAV, an AIFF and an Ogg FLAC file, which stay valid; originals untouched.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use musefs_tests::{
    audio_md5, ls_long, make_library, musefs, mutagen_tags, scan, sha256, validate, wait_for, write_manifest, Mount,
};

fn fixtures(lib: &Path) {
    make_library(lib, false);
    format_fixtures(lib);
}

/// The fixtures of issue 15's formats: `mp4/`, `riff/` and `oggx/` under `dir`.
fn format_fixtures(dir: &Path) {
    let scripts = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts");
    for (script, sub) in [("mp4_fixtures.py", "mp4"), ("riff_fixtures.py", "riff"), ("ogg_fixtures.py", "oggx")] {
        let out = Command::new("python3").arg(scripts.join(script)).arg(dir.join(sub)).output().unwrap();
        assert!(out.status.success(), "{script}: {}", String::from_utf8_lossy(&out.stderr));
    }
}

/// Every file of the library (relative paths), hidden files aside.
fn walk(root: &Path) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut stack = vec![root.to_owned()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(d).unwrap() {
            let p = e.unwrap().path();
            if p.file_name().unwrap().to_string_lossy().starts_with('.') {
                continue;
            }
            if p.is_dir() {
                stack.push(p);
            } else {
                out.insert(p.strip_prefix(root).unwrap().to_string_lossy().into_owned());
            }
        }
    }
    out
}

fn ffprobe_tag(p: &Path, tag: &str) -> String {
    let out = Command::new("ffprobe")
        .args(["-v", "error", "-show_entries", &format!("format_tags={tag}:stream_tags={tag}"), "-of", "csv=p=0"])
        .arg(p)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).lines().map(str::trim).filter(|l| !l.is_empty()).collect::<Vec<_>>().join("|")
}

#[test]
fn a_mixed_library_is_served_in_synthesis_with_every_file_tagged_and_valid() {
    let t = tempfile::tempdir().unwrap();
    let lib = t.path().join("lib");
    fixtures(&lib);
    let manifest = write_manifest(t.path(), &lib, "mode = \"synthesis\"\nrefresh_interval_ms = 100\n");
    let all = walk(&lib);
    let audio: BTreeSet<String> =
        all.iter().filter(|p| !p.ends_with(".jpg") && !p.ends_with(".png") && !p.ends_with(".txt")).cloned().collect();
    let (so, _) = scan(&manifest);
    assert!(so.contains(&format!("added {}", audio.len())) && so.contains("failed 0"), "{so}\n{audio:?}");
    let files = ls_long(&manifest);
    let origins: BTreeSet<String> = files.iter().map(|(_, o)| o.clone()).collect();
    assert_eq!(origins, audio, "every audio file of the library is in the tree");
    let names: BTreeSet<&str> = files.iter().map(|(t, _)| t.as_str()).collect();
    for want in [
        "WAV Album Artist/WAV Album/1-02 WAV Title 2.wav",
        "INFO Artist/INFO Album/01 INFO Title 1.wav",
        "RF64 Artist/RF64 Album/04 RF64 Title 4.wav",
        "AIFF Album Artist/AIFF Album/1-07 AIFF Title 7.aiff",
        "AIFF Artist/riff/AIFF Title 6.aiff",
        "Ogg Artist/Ogg Album/01 Ogg FLAC 1.oga",
        "Ogg Album Artist/Ogg Album/02 Ogg FLAC 2.oga",
        "Ogg Artist/Ogg Album/03 Speex 3.spx",
        "MP4 Album Artist/Books/1-05 MP4 book.m4b",
    ] {
        assert!(names.contains(want), "{want} missing from {names:?}");
    }
    // MP4 chapters are read into the catalog.
    let out = musefs(&["tag", "show", "--manifest", manifest.to_str().unwrap(), "main:mp4/book.m4b"]);
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(shown.contains("chapter 00:00:00.000 One\n  chapter 00:00:01.500 Two"), "{shown}");
    let originals: Vec<(PathBuf, String)> = all.iter().map(|p| (lib.join(p), sha256(&lib.join(p)))).collect();

    let mnt = t.path().join("mnt");
    let m = Mount::start(&manifest, &mnt, &[]);
    for (tree, origin) in &files {
        let (sp, op) = (mnt.join(tree), lib.join(origin));
        if origin.ends_with("nopad.wav") {
            // ffmpeg cannot read the original (no pad byte after an odd chunk); the
            // served file has it, and ends with the same samples.
            let (s, o) = (fs::read(&sp).unwrap(), fs::read(&op).unwrap());
            assert_eq!(s[s.len() - 8000..], o[o.len() - 8000..], "{tree}: samples");
        } else if !origin.ends_with("junk.mp3") {
            // (junk.mp3: ffmpeg reads the original's junk as audio; e2e_synthesis
            // compares its frames.)
            assert_eq!(audio_md5(&sp), audio_md5(&op), "{tree}: audio packets");
        }
        let tags = mutagen_tags(&[&op, &sp]);
        if origin.ends_with("rf64.wav") {
            // mutagen reads no RF64 file: it refuses both alike (ffprobe reads the tags below).
            assert_eq!(tags[0], tags[1], "{tree}");
        } else if tags[0].contains("\"error\"") {
            // A file mutagen refuses (a missing pad byte, an unset data size): the
            // served one, with the real sizes, is read.
            assert!(!tags[1].contains("\"error\""), "{tree}: {}", tags[1]);
        } else if !origin.ends_with("v23-trailers.mp3") {
            assert_eq!(tags[0], tags[1], "{tree}: tags and pictures as mutagen reads them");
        }
        // The validators find nothing in the served file they do not find in the
        // original, and nothing at all where the original fails them (buggy writers).
        let served = validate(&sp).unwrap_or_else(|e| panic!("{tree}: {e}"));
        match validate(&op) {
            Ok(own) => assert!(served.iter().all(|w| own.contains(w)), "{tree}: {served:?} vs {own:?}"),
            Err(_) => assert!(served.is_empty(), "{tree}: {served:?}"),
        }
    }
    // Text chunks: what ffprobe reads from the served WAV/AIFF files.
    assert_eq!(ffprobe_tag(&mnt.join("INFO Artist/INFO Album/01 INFO Title 1.wav"), "title"), "INFO Title 1");
    assert_eq!(ffprobe_tag(&mnt.join("AIFF Artist/riff/AIFF Title 6.aiff"), "comment"), "An annotation");
    assert_eq!(ffprobe_tag(&mnt.join("RF64 Artist/RF64 Album/04 RF64 Title 4.wav"), "album"), "RF64 Album");

    // Live edits: a WAV with INFO only gets a field INFO cannot hold (an ID3 chunk is
    // added, with every field), an AIFF, an M4A and an Ogg FLAC file get a new title
    // and a 100 KB cover (the Ogg header pages grow: the later pages are renumbered).
    let img = t.path().join("big.png");
    let png = "import sys,zlib,struct\n\
def c(k,d): return struct.pack('>I',len(d))+k+d+struct.pack('>I',zlib.crc32(k+d))\n\
open(sys.argv[1],'wb').write(b'\\x89PNG\\r\\n\\x1a\\n'+c(b'IHDR',struct.pack('>IIBBBBB',8,8,8,2,0,0,0))+c(b'tEXt',b'x'*100000)+c(b'IDAT',zlib.compress(bytes(8*25)))+c(b'IEND',b''))";
    assert!(Command::new("python3").args(["-c", png]).arg(&img).status().unwrap().success());
    let m_path = manifest.to_str().unwrap();
    let ok = |args: &[&str]| {
        let out = musefs(args);
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    };
    ok(&["tag", "set", "--manifest", m_path, "main:riff/info.wav", "title=Edited WAV", "albumartist=Wave People"]);
    for (origin, title) in
        [("riff/text.aiff", "Edited AIFF"), ("mp4/aac-faststart.m4a", "Edited M4A"), ("oggx/flac.oga", "Edited Ogg")]
    {
        ok(&["tag", "set", "--manifest", m_path, &format!("main:{origin}"), &format!("title={title}")]);
        ok(&["tag", "art", "set", "--manifest", m_path, &format!("main:{origin}"), img.to_str().unwrap()]);
    }
    let edited = [
        ("Wave People/INFO Album/01 Edited WAV.wav", "riff/info.wav", "Edited WAV"),
        ("AIFF Artist/riff/Edited AIFF.aiff", "riff/text.aiff", "Edited AIFF"),
        ("MP4 Album Artist/MP4 Album/1-02 Edited M4A.m4a", "mp4/aac-faststart.m4a", "Edited M4A"),
        ("Ogg Artist/Ogg Album/01 Edited Ogg.oga", "oggx/flac.oga", "Edited Ogg"),
    ];
    for (tree, origin, title) in edited {
        let sp = mnt.join(tree);
        assert!(wait_for(5, || sp.exists()), "{tree} is not in the mount: {}", m.log_text());
        assert_eq!(audio_md5(&sp), audio_md5(&lib.join(origin)), "{tree}: audio after the edit");
        let own = validate(&lib.join(origin)).unwrap();
        let served = validate(&sp).unwrap_or_else(|e| panic!("{tree} after the edit: {e}"));
        assert!(served.iter().all(|w| own.contains(w)), "{tree} after the edit: {served:?}");
        let tags = mutagen_tags(&[&sp]).remove(0);
        assert!(tags.contains(title), "{tree}: mutagen reads the new title: {tags}");
        if !origin.ends_with(".wav") {
            assert!(tags.contains(&sha256(&img)), "{tree}: the new cover: {tags}");
        }
    }
    let wav = mnt.join("Wave People/INFO Album/01 Edited WAV.wav");
    let tags = mutagen_tags(&[&wav]).remove(0);
    assert!(tags.contains("Wave People") && tags.contains("INFO Artist"), "the ID3 chunk has every field: {tags}");
    assert_eq!(ffprobe_tag(&mnt.join("AIFF Artist/riff/Edited AIFF.aiff"), "title"), "Edited AIFF");
    assert_eq!(m.stop(), Some(0));
    for (p, sum) in &originals {
        assert_eq!(&sha256(p), sum, "{} was modified", p.display());
    }
}

/// Issue 14's damaged-file rule for the formats of issue 15: copies of the M4A/M4B,
/// WAV/AIFF and Ogg FLAC/Speex fixtures with bit flips, truncations and inserted
/// garbage. A file is refused only when ffmpeg cannot play it either; every accepted
/// file is served whole in synthesis mode.
#[test]
fn damaged_mp4_riff_and_ogg_flac_files_are_refused_only_when_ffmpeg_cannot_play_them() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    format_fixtures(&src);
    let lib = t.path().join("lib");
    fs::create_dir_all(&lib).unwrap();
    let first_seed = musefs_tests::test_seed(15);
    let mut seed = first_seed;
    let mut n = 0;
    for o in walk(&src) {
        let data = fs::read(src.join(&o)).unwrap();
        let ext = Path::new(&o).extension().unwrap().to_str().unwrap().to_owned();
        for i in 0..30 {
            let b = musefs_tests::damaged_copy(&data, i % 3, &mut seed);
            fs::write(lib.join(format!("{n:04}_{}.{ext}", i % 3)), b).unwrap();
            n += 1;
        }
    }
    let manifest = write_manifest(t.path(), &lib, "mode = \"synthesis\"\n");
    let out = musefs(&["scan", "--manifest", manifest.to_str().unwrap()]);
    let (so, se) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    // Exit 2 when some files could not be read, 0 when all could.
    assert_eq!(out.status.code(), Some(if so.contains("failed 0") { 0 } else { 2 }), "{so}{se}");
    let refused = musefs_tests::refused_by_scan(&se);
    let (playable, kept) = musefs_tests::playable_refusals(&lib, &refused);
    assert!(
        playable.is_empty(),
        "{} refused although ffmpeg plays them (MUSEFS_TEST_SEED={first_seed}; copies in {kept}): {playable:#?}",
        playable.len()
    );
    let mnt = t.path().join("mnt");
    let m = Mount::start(&manifest, &mnt, &[]);
    let mut served = 0;
    let mut unplayable = Vec::new();
    for (i, (tree_path, origin)) in ls_long(&manifest).into_iter().enumerate() {
        let p = mnt.join(&tree_path);
        let announced = fs::metadata(&p).unwrap().len();
        let bytes = fs::read(&p).unwrap_or_else(|e| panic!("{tree_path}: {e}: {}", m.log_text()));
        assert_eq!(bytes.len() as u64, announced, "{tree_path}");
        served += 1;
        // One file in three: what ffmpeg plays from the original, it plays from the
        // served file (a salvaged or rewritten header must not make it worse).
        if i % 3 == 0 && musefs_tests::ffmpeg_plays(&lib.join(&origin)) && !musefs_tests::ffmpeg_plays(&p) {
            unplayable.push(origin);
        }
    }
    assert!(
        unplayable.is_empty(),
        "ffmpeg plays the original but not the served file (MUSEFS_TEST_SEED={first_seed}): {unplayable:?}"
    );
    assert_eq!(served + refused.len(), n, "every file is either served or refused");
    assert_eq!(m.stop(), Some(0));
}

/// Regression (found by flipping, one at a time, every bit of the first bytes of each
/// fixture, then every bit of the chunk and atom headers, after `tests/soak.sh` found a
/// damaged FLAC marker): single-bit flips that ffmpeg plays through but musefs refused,
/// or served wrong —
/// - a WAV/AIFF chunk id with a high bit flipped (players skip a chunk they do not know by
///   its size; musefs refused it as a damaged header), also before a `data` chunk whose
///   size was never set;
/// - an AIFC `FVER` size (ffmpeg reads its 4 bytes whatever the size says);
/// - a faststart M4A's `moov` size made larger: past the end of the file it was refused
///   ("no mdat atom"); inside the file the rewritten `moov` took the place of the `mdat`
///   header and the start of the audio (wrong bytes). Its children lead to the `mdat`
///   now, where it ends; and the size of the `free` atom after it (the rest of the file
///   is read as the `mdat`);
/// - an Ogg page's version byte (the page's CRC fails: read like any damaged page);
/// - an MP3 whose damaged ID3 header hides a 300 KB tag (the first frame lies past the
///   first search window; ffmpeg finds it anywhere);
/// - and the other way round, an RF64 file whose `ds64` id is damaged was accepted by the
///   scan and failed every read with EIO: nothing plays it, and the scan refuses it now.
///
/// Every flip of those bytes: refused only when ffmpeg cannot play it; every file
/// accepted is served whole, and plays when the damaged original plays.
#[test]
fn single_bit_flips_in_chunk_and_atom_headers_are_refused_only_when_ffmpeg_cannot_play_them_regression() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    format_fixtures(&src);
    // An MP3 with a 300 KB ID3v2.3 tag (a big cover) in front of its frames.
    let mp3 = src.join("tagged.mp3");
    let script = "import sys, random, subprocess\n\
from mutagen.id3 import ID3, APIC, TIT2\n\
wav = sys.argv[1] + '.wav'\n\
subprocess.run(['sox', '-R', '-n', '-r', '44100', '-b', '16', '-c', '2', wav, 'synth', '2', 'sine', '440'], check=True)\n\
subprocess.run(['lame', '--quiet', '-b', '128', wav, sys.argv[1]], check=True)\n\
t = ID3()\n\
t.add(TIT2(encoding=3, text=['Big Tag']))\n\
t.add(APIC(encoding=0, mime='image/jpeg', type=3, desc='', data=b'\\xff\\xd8\\xff' + random.Random(7).randbytes(300000)))\n\
t.save(sys.argv[1], v2_version=3)";
    let out = Command::new("python3").args(["-c", script]).arg(&mp3).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    /// Where the `nth` (from 0) `what` starts in `d`.
    fn find(d: &[u8], what: &[u8], nth: usize) -> usize {
        d.windows(what.len()).enumerate().filter(|(_, w)| *w == what).nth(nth).map(|(i, _)| i).expect("found")
    }
    fn moov_end(d: &[u8]) -> usize {
        let at = find(d, b"moov", 0) - 4;
        at + u32::from_be_bytes(d[at..at + 4].try_into().unwrap()) as usize
    }
    // (fixture, the bytes whose every bit is flipped)
    type Bytes = fn(&[u8]) -> Vec<usize>;
    let targets: Vec<(&str, Bytes)> = vec![
        ("mp4/aac-faststart.m4a", |d| {
            let (moov, after) = (find(d, b"moov", 0) - 4, moov_end(d));
            (moov..moov + 8).chain(after..after + 8).collect()
        }),
        ("riff/text.aiff", |_| (12..16).chain(32..36).collect()),
        ("riff/sowt.aifc", |_| (12..24).collect()),
        ("riff/info.wav", |_| (36..40).collect()),
        ("riff/unset.wav", |_| (36..40).collect()),
        ("riff/rf64.wav", |_| (12..16).collect()),
        ("oggx/flac.oga", |d| (find(d, b"OggS", 1)..find(d, b"OggS", 1) + 6).collect()),
        ("oggx/speech.spx", |d| (find(d, b"OggS", 1)..find(d, b"OggS", 1) + 6).collect()),
        ("tagged.mp3", |_| (0..10).collect()),
    ];
    let lib = t.path().join("lib");
    fs::create_dir_all(&lib).unwrap();
    let mut n = 0;
    for (fixture, bytes) in &targets {
        let data = fs::read(src.join(fixture)).unwrap();
        let ext = Path::new(fixture).extension().unwrap().to_str().unwrap();
        let stem = Path::new(fixture).file_stem().unwrap().to_str().unwrap();
        for i in bytes(&data) {
            for bit in 0..8 {
                let mut x = data.clone();
                x[i] ^= 1 << bit;
                fs::write(lib.join(format!("{stem}-{i}_{bit}.{ext}")), &x).unwrap();
                n += 1;
            }
        }
    }
    let manifest = write_manifest(t.path(), &lib, "mode = \"synthesis\"\n");
    let out = musefs(&["scan", "--manifest", manifest.to_str().unwrap()]);
    let se = String::from_utf8_lossy(&out.stderr);
    let refused = musefs_tests::refused_by_scan(&se);
    let (playable, kept) = musefs_tests::playable_refusals(&lib, &refused);
    assert!(playable.is_empty(), "refused although ffmpeg plays them (copies in {kept}): {playable:#?}");
    let mnt = t.path().join("mnt");
    let m = Mount::start(&manifest, &mnt, &[]);
    let files = ls_long(&manifest);
    let mut unplayable = Vec::new();
    for (tree_path, origin) in &files {
        let p = mnt.join(tree_path);
        let bytes = fs::read(&p).unwrap_or_else(|e| panic!("{origin} served as {tree_path}: {e}: {}", m.log_text()));
        assert_eq!(bytes.len() as u64, fs::metadata(&p).unwrap().len(), "{tree_path}");
        // (The served file first: when it plays, the original need not be tried.)
        if !musefs_tests::ffmpeg_plays(&p) && musefs_tests::ffmpeg_plays(&lib.join(origin)) {
            unplayable.push(origin.clone());
        }
    }
    let kept = musefs_tests::keep_failures(&lib, unplayable.iter().map(String::as_str));
    assert!(
        unplayable.is_empty(),
        "ffmpeg plays the original but not the served file (copies in {kept}): {unplayable:?}"
    );
    assert_eq!(files.len() + refused.len(), n, "every file is either served or refused");
    assert!(files.len() > n / 2, "most flips are served: {} of {n}", files.len());
    assert_eq!(m.stop(), Some(0));
}

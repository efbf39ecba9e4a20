//! The bar of issue 14: a library of real-world oddities (the demo library's hostile
//! files plus `tests/scripts/oddities.py`: empty and BOM-only ID3 frames, one image in
//! three picture blocks with different fields, a field under two names, multi-valued and
//! multi-language frames, untagged files of every format, a non-CD-DA cue sheet, an Ogg
//! page failing its CRC in the audio, a Latin-1 file name, ID3v1 only), scanned and
//! mounted in synthesis and in passthrough mode. Every file ffmpeg can read appears;
//! served audio packets equal the original's; the tags and pictures mutagen reads equal
//! the original's; the validators say nothing new; passthrough serves the original bytes.

use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use musefs_tests::{
    audio_data, audio_md5, ls_long, make_library, musefs, mutagen_tags, sha256, validate, write_manifest, Mount,
};

fn audio_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| ["flac", "mp3", "ogg", "opus"].contains(&x.to_str().unwrap_or("")))
            {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

#[test]
fn a_library_of_real_world_oddities_is_served_faithfully_in_both_modes() {
    let t = tempfile::tempdir().unwrap();
    let lib = t.path().join("lib");
    make_library(&lib, false);
    let odd = lib.join("oddities");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/oddities.py");
    let out = Command::new("python3").arg(script).arg(&odd).output().unwrap();
    assert!(out.status.success(), "oddities.py: {}", String::from_utf8_lossy(&out.stderr));
    let manifest = write_manifest(t.path(), &lib, "mode = \"synthesis\"\nsync_interval = \"off\"\nwatch = false\n");
    let out = musefs(&["scan", "--manifest", manifest.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    // Every file ffmpeg reads appears (by its origin path, as bytes).
    let listed = ls_long(&manifest);
    let original = |origin: &str| lib.join(OsStr::from_bytes(&musefs_plugin_api::path_bytes(origin)));
    let served_originals: Vec<PathBuf> = listed.iter().map(|(_, o)| original(o)).collect();
    for f in audio_files(&lib) {
        if musefs_tests::ffmpeg_plays(&f) {
            assert!(served_originals.contains(&f), "ffmpeg reads {} but it is not served", f.display());
        }
    }
    assert_eq!(listed.len(), 13 + 14, "{:#?}", listed.iter().map(|(_, o)| o).collect::<Vec<_>>());

    // Synthesis mode.
    let mnt = t.path().join("mnt");
    let m = Mount::start(&manifest, &mnt, &[]);
    let mut problems = Vec::new();
    for (tree, origin) in &listed {
        let (sp, op) = (mnt.join(tree), original(origin));
        let mut tags = mutagen_tags(&[&op, &sp]);
        if origin.ends_with("id3v1-only.mp3") {
            // mutagen shows an ID3v1 comment as a COMM frame described "ID3v1 Comment";
            // served as ID3v2, it is the plain comment (no description).
            tags[0] = tags[0].replace("\"ID3v1 Comment\"", "\"\"");
        }
        // The APEv2 trailer is folded into the ID3v2 tag (checked by e2e_synthesis).
        let known_rewrites = origin.ends_with("v23-trailers.mp3");
        if tags[0] != tags[1] && !known_rewrites {
            problems.push(format!("{origin}: tags differ:\n  original {}\n  served   {}", tags[0], tags[1]));
        }
        let same_audio = if origin.ends_with("junk.mp3") {
            let (o, s) = (audio_data(&op), audio_data(&sp));
            o.ends_with(&s)
        } else {
            audio_md5(&op) == audio_md5(&sp)
        };
        if !same_audio {
            problems.push(format!("{origin}: audio packets differ"));
        }
        let want = validate(&op).unwrap_or_default();
        match validate(&sp) {
            Ok(have) => {
                for w in have.iter().filter(|w| !want.contains(w)) {
                    problems.push(format!("{origin}: new validator warning {w:?}"));
                }
            }
            Err(e) if validate(&op).is_ok() => {
                problems.push(format!("{origin}: the served file fails its validator: {e}"))
            }
            Err(_) => {}
        }
    }
    assert_eq!(m.stop(), Some(0));
    assert!(problems.is_empty(), "{}", problems.join("\n"));

    // Passthrough mode: the original bytes, every one.
    let text = fs::read_to_string(&manifest).unwrap().replace("mode = \"synthesis\"", "mode = \"passthrough\"");
    fs::write(&manifest, text).unwrap();
    let m = Mount::start(&manifest, &mnt, &[]);
    for (tree, origin) in ls_long(&manifest) {
        assert_eq!(sha256(&mnt.join(&tree)), sha256(&original(&origin)), "{tree}");
    }
    assert_eq!(m.stop(), Some(0));
}

//! Real clients over the mount (issue 16): MPD (`mpd` + `mpc`, Debian packages) indexes
//! the mounted tree with the tags mutagen reads from the served files, plays served
//! files to its `null` output to the end, and picks a retag up at the next `mpc update`
//! (the directory's mtime moved); beets (`beet import -A`, from PyPI, with its own
//! config in a temporary directory) imports the mount with the same tags.
//!
//! MPD turns control characters in tag values into spaces; the comparison does the
//! same for it, nothing else.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use musefs_tests::servers::Mpd;
use musefs_tests::{ls_long, make_library, musefs, scan, wait_for, write_manifest, Mount};

/// mutagen's "easy" tags of each file (artist, album, title, tracknumber, ...).
fn easy_tags(paths: &[PathBuf]) -> Vec<BTreeMap<String, Vec<String>>> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/easy_tags.py");
    let out = Command::new("python3").arg(script).args(paths).output().unwrap();
    assert!(out.status.success(), "easy_tags.py: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

/// The number a track or disc field starts with (`"1/3"` and `"01"` are 1).
fn number(s: &str) -> Option<u32> {
    s.split('/').next()?.trim().parse().ok()
}

/// `s` with control characters replaced by `with` (what MPD does with them).
fn sanitized(s: &str, with: &str) -> String {
    s.chars().map(|c| if c.is_control() { with.to_owned() } else { c.to_string() }).collect()
}

/// The songs of `listallinfo`: file → tag → values (in order).
fn mpd_songs(mpd: &Mpd) -> BTreeMap<String, BTreeMap<String, Vec<String>>> {
    let mut songs: BTreeMap<String, BTreeMap<String, Vec<String>>> = BTreeMap::new();
    let mut current = None;
    for (k, v) in mpd.command("listallinfo") {
        match k.as_str() {
            "file" => {
                songs.entry(v.clone()).or_default();
                current = Some(v);
            }
            "directory" | "playlist" => current = None,
            _ => {
                if let Some(f) = &current {
                    songs.get_mut(f).unwrap().entry(k).or_default().push(v);
                }
            }
        }
    }
    songs
}

fn library(dir: &Path) -> (PathBuf, PathBuf) {
    let lib = dir.join("lib");
    make_library(&lib, false);
    let manifest =
        write_manifest(dir, &lib, "mode = \"synthesis\"\nsync_interval = \"off\"\nrefresh_interval_ms = 200\n");
    scan(&manifest);
    (lib, manifest)
}

#[test]
fn mpd_indexes_the_served_tags_plays_to_the_end_and_follows_a_retag() {
    let t = tempfile::tempdir().unwrap();
    let (_, manifest) = library(t.path());
    let mnt = t.path().join("mnt");
    let m = Mount::start(&manifest, &mnt, &[]);
    let mpd = Mpd::start(t.path(), &mnt);
    mpd.mpc(&["update", "--wait"]);
    let songs = mpd_songs(&mpd);
    let files: Vec<String> = ls_long(&manifest).into_iter().map(|(p, _)| p).collect();
    assert_eq!(songs.keys().cloned().collect::<Vec<_>>(), files, "MPD indexes every served file, nothing else");
    let want = easy_tags(&files.iter().map(|f| mnt.join(f)).collect::<Vec<_>>());
    for (file, want) in files.iter().zip(&want) {
        let got = &songs[file];
        let values = |tag: &str| got.get(tag).cloned().unwrap_or_default();
        let expect = |key: &str| -> Vec<String> {
            want.get(key).map(|v| v.iter().map(|s| sanitized(s, " ")).collect()).unwrap_or_default()
        };
        for (mpd_tag, key) in
            [("Artist", "artist"), ("Album", "album"), ("Title", "title"), ("AlbumArtist", "albumartist")]
        {
            assert_eq!(values(mpd_tag), expect(key), "{file}: {mpd_tag}");
        }
        assert_eq!(values("Genre"), expect("genre"), "{file}: Genre");
        assert_eq!(
            values("Track").first().and_then(|s| number(s)),
            expect("tracknumber").first().and_then(|s| number(s)),
            "{file}: Track"
        );
        assert_eq!(
            values("Date").first().map(|d| d[..4].to_owned()),
            expect("date").first().map(|d| d[..4].to_owned()),
            "{file}: Date"
        );
        assert!(got.get("Time").is_some_and(|t| t[0] != "0"), "{file}: MPD read a duration: {got:?}");
    }

    // Plays one file of each format to its null output, to the end.
    let mut played = Vec::new();
    for ext in ["flac", "mp3", "ogg", "opus"] {
        let f = files.iter().find(|f| f.ends_with(&format!(".{ext}"))).unwrap();
        mpd.mpc(&["add", f]);
        played.push(f.clone());
    }
    mpd.mpc(&["play"]);
    assert!(
        wait_for(60, || mpd.command("status").iter().any(|(k, v)| k == "state" && v == "stop")),
        "MPD did not finish playing: {:?}",
        mpd.command("status")
    );
    let status = mpd.command("status");
    assert!(!status.iter().any(|(k, _)| k == "error"), "MPD reported an error: {status:?}");
    let log = mpd.log_text();
    for f in &played {
        assert!(log.contains(&format!("player: played \"{f}\"")), "{f} not played to the end: {log}");
    }
    assert!(!log.contains("Failed to decode") && !log.contains("decoder"), "{log}");

    // A retag renames the file; the next update finds the directory changed.
    let old = files.iter().find(|f| f.ends_with("01 Plain.flac")).unwrap().clone();
    let out = musefs(&["tag", "set", "--manifest", manifest.to_str().unwrap(), &old, "title=Plain Again"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let new = old.replace("01 Plain.flac", "01 Plain Again.flac");
    assert!(wait_for(10, || mnt.join(&new).exists()), "the mount shows the renamed file");
    mpd.mpc(&["update", "--wait"]);
    let songs = mpd_songs(&mpd);
    assert!(!songs.contains_key(&old), "the old name is gone from MPD");
    assert_eq!(songs.get(&new).and_then(|s| s.get("Title")), Some(&vec!["Plain Again".to_owned()]), "{songs:?}");
    drop(mpd);
    assert_eq!(m.stop(), Some(0));
}

#[test]
fn beets_imports_the_mount_with_the_served_tags() {
    let t = tempfile::tempdir().unwrap();
    let (_, manifest) = library(t.path());
    let mnt = t.path().join("mnt");
    let m = Mount::start(&manifest, &mnt, &[]);
    let beets = musefs_tests::servers::Beets::new(&t.path().join("beets"));
    let beet = |args: &[&str]| beets.run(args);
    beet(&["import", "-A", "-q", mnt.to_str().unwrap()]);
    let listed = beet(&["ls", "-f", "$path\t$artist\t$album\t$title\t$track\t$albumartist"]);
    let mut got: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for l in listed.lines() {
        let mut f = l.split('\t');
        let path = f.next().unwrap().strip_prefix(&format!("{}/", mnt.display())).unwrap().to_owned();
        got.insert(path, f.map(str::to_owned).collect());
    }
    let files: Vec<String> = ls_long(&manifest).into_iter().map(|(p, _)| p).collect();
    assert_eq!(got.keys().cloned().collect::<Vec<_>>(), files, "beets imported every served file");
    let want = easy_tags(&files.iter().map(|f| mnt.join(f)).collect::<Vec<_>>());
    for (file, want) in files.iter().zip(&want) {
        // beets keeps the first of several values in these fields.
        let first = |k: &str| want.get(k).and_then(|v| v.first()).cloned().unwrap_or_default();
        let g = &got[file];
        // beets fills a missing artist from the album artist on import.
        let artist = Some(first("artist")).filter(|a| !a.is_empty()).unwrap_or_else(|| first("albumartist"));
        assert_eq!(
            [&g[0], &g[1], &g[2], &g[4]],
            [&artist, &first("album"), &first("title"), &first("albumartist")],
            "{file}"
        );
        assert_eq!(number(&g[3]).unwrap_or(0), number(&first("tracknumber")).unwrap_or(0), "{file}: track");
    }
    assert_eq!(m.stop(), Some(0));
}

//! Sidecar files (issue 16, item 7): cue sheets, rip logs, lyrics, booklets and images
//! next to the audio in an origin appear, unchanged, in the album directory of the
//! tracks beside them; an `.lrc` takes its track's name; a real `cover.jpg` beats the
//! virtual one; they follow their album when a retag moves it, and come and go live.
//! (Remote origins serve them through the chunk cache: e2e_remote's S3 library has
//! some.)

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use musefs_tests::{ls_long, make_library, musefs, scan, wait_for, write_manifest, write_png, Mount};

/// The extra files of the test library, beside `alpha/plain.flac` and its album.
fn add_sidecars(lib: &Path) {
    fs::write(lib.join("alpha/album.cue"), "FILE \"plain.flac\" WAVE\n  TRACK 01 AUDIO\n").unwrap();
    fs::write(lib.join("alpha/rip.log"), "Exact Audio Copy V1.6\nAccurateRip: OK\n").unwrap();
    fs::write(lib.join("alpha/plain.lrc"), "[00:00.00]Plain lyrics\n").unwrap();
    fs::write(lib.join("alpha/booklet.pdf"), b"%PDF-1.4\n%%EOF\n").unwrap();
    write_png(&lib.join("alpha/cover.jpg"));
    fs::write(lib.join("alpha/notes.txt"), "not a sidecar by default\n").unwrap();
    fs::create_dir_all(lib.join("scans")).unwrap();
    write_png(&lib.join("scans/back.png"));
}

#[test]
fn sidecars_sit_beside_their_tracks_and_follow_them_live() {
    let t = tempfile::tempdir().unwrap();
    let lib = t.path().join("lib");
    make_library(&lib, false);
    add_sidecars(&lib);
    let manifest = write_manifest(t.path(), &lib, "mode = \"synthesis\"\nrefresh_interval_ms = 100\n");
    let m_path = manifest.to_str().unwrap();
    scan(&manifest);
    let listed = ls_long(&manifest);
    let album = listed.iter().find(|(_, o)| o == "alpha/plain.flac").unwrap().0.rsplit_once('/').unwrap().0.to_owned();
    let in_album: Vec<(String, String)> = listed
        .iter()
        .filter(|(p, _)| p.rsplit_once('/').unwrap().0 == album)
        .map(|(p, o)| (p.rsplit_once('/').unwrap().1.to_owned(), o.clone()))
        .collect();
    for (name, origin) in [
        ("album.cue", "alpha/album.cue"),
        ("rip.log", "alpha/rip.log"),
        ("01 Plain.lrc", "alpha/plain.lrc"),
        ("booklet.pdf", "alpha/booklet.pdf"),
        ("cover.jpg", "alpha/cover.jpg"),
    ] {
        assert!(in_album.contains(&(name.to_owned(), origin.to_owned())), "{name} from {origin}: {in_album:?}");
    }
    assert!(!listed.iter().any(|(_, o)| o.ends_with("notes.txt") || o.starts_with("scans/")), "{listed:?}");

    let mnt = t.path().join("mnt");
    let m = Mount::start(&manifest, &mnt, &[]);
    let dir = mnt.join(&album);
    for (name, origin) in
        [("album.cue", "alpha/album.cue"), ("01 Plain.lrc", "alpha/plain.lrc"), ("cover.jpg", "alpha/cover.jpg")]
    {
        let served = dir.join(name);
        assert!(fs::read(&served).unwrap() == fs::read(lib.join(origin)).unwrap(), "{name}: the original's bytes");
        let (a, b) = (fs::metadata(&served).unwrap(), fs::metadata(lib.join(origin)).unwrap());
        assert_eq!((a.len(), a.mtime()), (b.len(), b.mtime()), "{name}: size and mtime of the original");
    }
    // Only one cover.jpg: the real one.
    let names: Vec<String> =
        fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    assert_eq!(names.iter().filter(|n| *n == "cover.jpg").count(), 1, "{names:?}");

    // The real cover goes (inotify syncs it): the virtual one, a picture of a track, is back.
    let real = fs::read(lib.join("alpha/cover.jpg")).unwrap();
    fs::remove_file(lib.join("alpha/cover.jpg")).unwrap();
    assert!(
        wait_for(15, || fs::read(dir.join("cover.jpg")).is_ok_and(|b| b != real && !b.is_empty())),
        "the virtual cover did not come back: {}",
        m.log_text()
    );
    // A new log appears live.
    fs::write(lib.join("alpha/second.log"), "second rip\n").unwrap();
    assert!(wait_for(15, || dir.join("second.log").exists()), "a new sidecar did not appear: {}", m.log_text());

    // A retag moves the album: its sidecars go with it, the old directory is gone.
    let out = musefs(&["tag", "set", "--manifest", m_path, &album, "album=Moved Album"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let moved = dir.parent().unwrap().join("Moved Album");
    assert!(
        wait_for(15, || moved.join("01 Plain.lrc").exists() && moved.join("album.cue").exists() && !dir.exists()),
        "sidecars did not follow the album: {:?}",
        fs::read_dir(dir.parent().unwrap()).unwrap().map(|e| e.unwrap().file_name()).collect::<Vec<_>>()
    );
    // Sidecars are not tag targets: an album edit touched tracks only.
    let shown = String::from_utf8_lossy(&musefs(&["tag", "show", "--manifest", m_path, "main:alpha/album.cue"]).stderr)
        .into_owned();
    assert!(shown.contains("no file matches"), "{shown}");
    assert_eq!(m.stop(), Some(0));

    // `sidecars = []` turns them off.
    let text = fs::read_to_string(&manifest).unwrap();
    fs::write(&manifest, format!("sidecars = []\n{text}")).unwrap();
    scan(&manifest);
    assert!(!ls_long(&manifest).iter().any(|(_, o)| o.ends_with(".cue") || o.ends_with(".lrc")));
}

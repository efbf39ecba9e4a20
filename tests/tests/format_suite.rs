//! The behaviour suite every format plugin must pass, run through the real ABI against
//! each loaded format plugin and every fixture whose extension it claims.
//!
//! For each plugin and each of its fixtures: it probes its own files highest; `read`
//! gives a sane audio range, audio properties and (for tagged fixtures) a title; the
//! passthrough plan is the whole file; truncated copies and garbage never panic and
//! never yield an audio range past the end; an empty file is an error.

use std::path::Path;
use std::sync::Arc;

use musefs_core::plugins::Plugins;
use musefs_plugin_api::{
    handle_into_ffi, CallCtx, EntryKind, ErrorKind, FormatBox, Handle, PlanMode, PlanRequest, PluginResult, Stat,
    TrackInfo,
};
use musefs_tests::{make_library, target_dir};

struct Mem(Vec<u8>);

impl Handle for Mem {
    fn len(&self) -> u64 {
        self.0.len() as u64
    }
    fn stat(&self) -> Stat {
        Stat { kind: EntryKind::FILE, size: self.0.len() as u64, mtime_ns: None.into(), etag: None.into() }
    }
    fn read_at(&self, _ctx: &CallCtx, offset: u64, buf: &mut [u8]) -> PluginResult<usize> {
        let start = (offset as usize).min(self.0.len());
        let n = buf.len().min(self.0.len() - start);
        buf[..n].copy_from_slice(&self.0[start..start + n]);
        Ok(n)
    }
}

fn read(f: &FormatBox, data: &[u8]) -> PluginResult<TrackInfo> {
    f.read(&CallCtx::unlimited(), &handle_into_ffi(Arc::new(Mem(data.to_vec())))).into_result()
}

fn files_with_ext(dir: &Path, exts: &[String]) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| exts.iter().any(|e| e == x.to_str().unwrap())) {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

#[test]
fn every_format_plugin_passes_the_behaviour_suite() {
    let t = tempfile::tempdir().unwrap();
    make_library(t.path(), false);
    let plugins = Plugins::load_dir(&target_dir()).unwrap();
    let formats = plugins.formats().unwrap();
    assert!(formats.len() >= 3, "flac, mp3 and ogg must load");
    for (name, f) in &formats {
        let exts: Vec<String> = f.extensions().into_iter().map(|e| e.into_string()).collect();
        let fixtures = files_with_ext(t.path(), &exts);
        assert!(!fixtures.is_empty(), "{name}: no fixtures for {exts:?}");
        for path in fixtures {
            let data = std::fs::read(&path).unwrap();
            let what = format!("{name} on {}", path.display());
            let ext = path.extension().unwrap().to_str().unwrap();
            let head = &data[..data.len().min(musefs_plugin_api::PROBE_HEAD_LEN)];
            let mine = f.probe(head.into(), ext.into());
            assert!(mine > 0, "{what}: does not recognise its own file");
            for (other, g) in &formats {
                if other != name {
                    assert!(g.probe(head.into(), ext.into()) < mine, "{what}: {other} probes higher");
                }
            }
            let info = read(f, &data).unwrap_or_else(|e| panic!("{what}: {e}"));
            assert!(
                info.audio_len > 0 && info.audio_offset + info.audio_len <= data.len() as u64,
                "{what}: audio range"
            );
            assert!((1500..2500).contains(&info.props.duration_ms), "{what}: duration {}", info.props.duration_ms);
            assert!(info.props.sample_rate > 0 && info.props.channels == 2, "{what}: {:?}", info.props);
            if !path.ends_with("untagged.flac") {
                assert!(info.tags.iter().any(|t| t.key == "title"), "{what}: no title in {:?}", info.tags);
            }
            let req = PlanRequest {
                mode: PlanMode::PASSTHROUGH,
                info: info.clone(),
                tags: Vec::new().into(),
                pictures: Vec::new().into(),
                options: "{}".into(),
                extra: Vec::new().into(),
            };
            let plan = f
                .plan(&CallCtx::unlimited(), &handle_into_ffi(Arc::new(Mem(data.clone()))), &req)
                .into_result()
                .unwrap();
            assert_eq!(plan.len(), data.len() as u64, "{what}: passthrough plan length");
            // Truncations: never a panic, never a range past the end.
            for cut in [0, 1, 4, 10, 64, 200, data.len() / 10, data.len() / 2, data.len() - 1] {
                match read(f, &data[..cut]) {
                    Ok(i) => assert!(i.audio_offset + i.audio_len <= cut as u64, "{what} cut at {cut}"),
                    Err(e) => assert_ne!(e.kind, ErrorKind::PANIC, "{what} cut at {cut}: {e}"),
                }
            }
            // Corrupted header bytes: never a panic.
            let mut seed = 7u64;
            for _ in 0..20 {
                let mut bad = data.clone();
                for _ in 0..8 {
                    seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
                    let i = (seed >> 33) as usize % data.len().min(4096);
                    bad[i] ^= (seed >> 20) as u8 | 1;
                }
                if let Err(e) = read(f, &bad) {
                    assert_ne!(e.kind, ErrorKind::PANIC, "{what}: {e}");
                }
            }
        }
        let e = read(f, &[]).expect_err("empty file");
        assert_ne!(e.kind, ErrorKind::PANIC);
        let e = read(f, &[0x5Au8; 100_000]).expect_err("garbage");
        assert_ne!(e.kind, ErrorKind::PANIC);
    }
}

#[test]
fn mp3_keeps_binary_frames_trailers_and_big_pictures() {
    let t = tempfile::tempdir().unwrap();
    make_library(t.path(), false);
    let plugins = Plugins::load_dir(&target_dir()).unwrap();
    let mp3 = plugins.formats().unwrap().into_iter().find(|(n, _)| n == "mp3").unwrap().1;
    let v24 = read(&mp3, &std::fs::read(t.path().join("beta/mp3s/v24.mp3")).unwrap()).unwrap();
    let natives: Vec<&str> = v24.tags.iter().map(|t| t.native.as_str()).collect();
    for n in ["PRIV", "UFID", "COMM", "TXXX:MY FIELD"] {
        assert!(natives.contains(&n), "{n} missing from {natives:?}");
    }
    let priv_ = v24.tags.iter().find(|t| t.native == "PRIV").unwrap();
    assert_eq!(priv_.data.as_slice(), b"musefs\x00\x00\xffbinary");
    assert_eq!(
        v24.tags.iter().filter(|t| t.key == "artist").map(|t| t.value.as_str()).collect::<Vec<_>>(),
        ["Beta", "Gamma"]
    );
    let v23 = read(&mp3, &std::fs::read(t.path().join("beta/mp3s/v23-trailers.mp3")).unwrap()).unwrap();
    assert!(v23.pictures[0].data.len() > 300 * 1024);
    let kinds: Vec<&str> = v23.regions.iter().map(|r| r.kind.as_str()).collect();
    assert!(kinds.contains(&"id3v2.3") && kinds.contains(&"apev2") && kinds.contains(&"id3v1"), "{kinds:?}");
    // ID3v2 wins for the canonical title; the trailers' titles keep their native names.
    let titles: Vec<_> = v23.tags.iter().filter(|t| t.key == "title").map(|t| t.value.as_str()).collect();
    assert_eq!(titles, ["Three ünïcödé"]);
    assert!(v23.tags.iter().any(|t| t.native == "APE:Catalog" && t.value == "CAT-001"));
    let junk = read(&mp3, &std::fs::read(t.path().join("beta/mp3s/junk.mp3")).unwrap()).unwrap();
    assert!(junk.regions.iter().any(|r| r.kind == "junk" && r.len == 16), "{:?}", junk.regions);
}

#[test]
fn flac_and_ogg_read_pictures_prefixes_and_hires_props() {
    let t = tempfile::tempdir().unwrap();
    make_library(t.path(), false);
    let plugins = Plugins::load_dir(&target_dir()).unwrap();
    let formats = plugins.formats().unwrap();
    let get = |n: &str| &formats.iter().find(|(m, _)| m == n).unwrap().1;
    let flac = get("flac");
    let hires = read(flac, &std::fs::read(t.path().join("alpha/hires.flac")).unwrap()).unwrap();
    assert_eq!((hires.props.sample_rate, hires.props.bits_per_sample), (96000, 24));
    assert_eq!(hires.pictures.iter().map(|p| p.picture_type).collect::<Vec<_>>(), [3, 4]);
    let pre = read(flac, &std::fs::read(t.path().join("alpha/id3-prefixed.flac")).unwrap()).unwrap();
    assert_eq!(pre.regions[0].kind.as_str(), "id3v2");
    let ogg = get("ogg");
    let opus = read(ogg, &std::fs::read(t.path().join("ogg/opus.opus")).unwrap()).unwrap();
    assert_eq!(opus.format.as_str(), "ogg-opus");
    assert_eq!(opus.pictures.len(), 1);
    assert!(opus.tags.iter().any(|t| t.key == "r128_track_gain" && t.value == "-512"));
    let vorbis = read(ogg, &std::fs::read(t.path().join("ogg/vorbis.ogg")).unwrap()).unwrap();
    assert_eq!((vorbis.format.as_str(), vorbis.pictures.len()), ("ogg-vorbis", 1));
}

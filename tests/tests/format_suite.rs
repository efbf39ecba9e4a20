//! The format behaviour suite (`musefs-plugin-suite`) on every bundled format plugin,
//! loaded from its `.so` through the real ABI, over the demo library's real encoded
//! files (each plugin's fixtures are the files with an extension it claims; every other
//! format is a rival that must probe them lower). One check per test
//! (`format::PLUGIN::FIXTURE::CHECK`), plus format-specific checks.

use std::path::Path;
use std::sync::Arc;

use musefs_core::plugins::Plugins;
use musefs_plugin_api::{handle_into_ffi, testing::MemHandle, CallCtx, FormatBox, PluginResult, TrackInfo};
use musefs_plugin_suite::{check, format_trials, Arguments, Failed, Fixture, FormatUnderTest, Trial};
use musefs_tests::{make_library, target_dir};

fn read(f: &FormatBox, data: &[u8]) -> PluginResult<TrackInfo> {
    f.read(&CallCtx::unlimited(), &handle_into_ffi(Arc::new(MemHandle::new(data.to_vec())))).into_result()
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

/// The format-specific checks (beyond the shared suite), each a trial.
fn specific(lib: Arc<tempfile::TempDir>, formats: Arc<Vec<(String, Arc<FormatBox>)>>) -> Vec<Trial> {
    let get = move |n: &str| formats.iter().find(|(m, _)| m == n).map(|(_, f)| f.clone()).expect("format loaded");
    let file = move |p: &str| std::fs::read(lib.path().join(p)).unwrap();
    let (g1, f1) = (get.clone(), file.clone());
    let (g2, f2) = (get.clone(), file.clone());
    let (g3, f3) = (get, file);
    vec![
        Trial::test("format::mp3::keeps_binary_frames_trailers_and_big_pictures", move || -> Result<(), Failed> {
            let mp3 = g1("mp3");
            let v24 = read(&mp3, &f1("beta/mp3s/v24.mp3"))?;
            let natives: Vec<&str> = v24.tags.iter().map(|t| t.native.as_str()).collect();
            for n in ["PRIV", "UFID", "COMM", "TXXX:MY FIELD"] {
                check(natives.contains(&n), || format!("{n} missing from {natives:?}"))?;
            }
            let priv_ = v24.tags.iter().find(|t| t.native == "PRIV").ok_or("no PRIV")?;
            check(priv_.data.as_slice() == b"musefs\x00\x00\xffbinary", || "PRIV payload".into())?;
            let artists: Vec<&str> = v24.tags.iter().filter(|t| t.key == "artist").map(|t| t.value.as_str()).collect();
            check(artists == ["Beta", "Gamma"], || format!("{artists:?}"))?;
            let v23 = read(&mp3, &f1("beta/mp3s/v23-trailers.mp3"))?;
            check(v23.pictures[0].data.len() > 300 * 1024, || "the big picture".into())?;
            let kinds: Vec<&str> = v23.regions.iter().map(|r| r.kind.as_str()).collect();
            check(kinds.contains(&"id3v2.3") && kinds.contains(&"apev2") && kinds.contains(&"id3v1"), || {
                format!("{kinds:?}")
            })?;
            // ID3v2 wins for the canonical title; the trailers' titles keep their native names.
            let titles: Vec<_> = v23.tags.iter().filter(|t| t.key == "title").map(|t| t.value.as_str()).collect();
            check(titles == ["Three ünïcödé"], || format!("{titles:?}"))?;
            check(v23.tags.iter().any(|t| t.native == "APE:Catalog" && t.value == "CAT-001"), || "APE tag".into())?;
            let junk = read(&mp3, &f1("beta/mp3s/junk.mp3"))?;
            check(junk.regions.iter().any(|r| r.kind == "junk" && r.len == 16), || format!("{:?}", junk.regions))
        }),
        Trial::test("format::flac::reads_pictures_id3_prefixes_and_hires_props", move || -> Result<(), Failed> {
            let flac = g2("flac");
            let hires = read(&flac, &f2("alpha/hires.flac"))?;
            check((hires.props.sample_rate, hires.props.bits_per_sample) == (96000, 24), || {
                format!("{:?}", hires.props)
            })?;
            let types: Vec<u32> = hires.pictures.iter().map(|p| p.picture_type).collect();
            check(types == [3, 4], || format!("{types:?}"))?;
            let pre = read(&flac, &f2("alpha/id3-prefixed.flac"))?;
            check(pre.regions[0].kind.as_str() == "id3v2", || format!("{:?}", pre.regions))
        }),
        Trial::test("format::ogg::reads_opus_and_vorbis_pictures_and_gains", move || -> Result<(), Failed> {
            let ogg = g3("ogg");
            let opus = read(&ogg, &f3("ogg/opus.opus"))?;
            check(opus.format.as_str() == "ogg-opus" && opus.pictures.len() == 1, || format!("{}", opus.format))?;
            check(opus.tags.iter().any(|t| t.key == "r128_track_gain" && t.value == "-512"), || "R128 gain".into())?;
            let vorbis = read(&ogg, &f3("ogg/vorbis.ogg"))?;
            check((vorbis.format.as_str(), vorbis.pictures.len()) == ("ogg-vorbis", 1), || format!("{}", vorbis.format))
        }),
    ]
}

fn main() {
    let args = Arguments::from_args();
    let lib = Arc::new(tempfile::tempdir().unwrap());
    make_library(lib.path(), false);
    // MP4 fixtures: ffmpeg (AAC, ALAC, faststart or not, an M4B) tagged by mutagen.
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/mp4_fixtures.py");
    let out = std::process::Command::new("python3").arg(script).arg(lib.path().join("mp4")).output().unwrap();
    assert!(out.status.success(), "mp4_fixtures.py: {}", String::from_utf8_lossy(&out.stderr));
    let plugins = Plugins::load_dir(&target_dir()).unwrap();
    let formats: Vec<(String, Arc<FormatBox>)> =
        plugins.formats().unwrap().into_iter().map(|(n, f)| (n, Arc::new(f))).collect();
    let mut trials = vec![Trial::test("format::bundled_formats_load", {
        let names: Vec<String> = formats.iter().map(|(n, _)| n.clone()).collect();
        move || {
            check(["flac", "mp3", "ogg", "mp4"].iter().all(|n| names.iter().any(|m| m == n)), || format!("{names:?}"))
        }
    })];
    for (name, f) in &formats {
        let exts: Vec<String> = f.extensions().into_iter().map(|e| e.into_string()).collect();
        let mut under = FormatUnderTest::new(name, f.clone());
        for (other, g) in &formats {
            if other != name {
                under = under.rival(other, g.clone());
            }
        }
        for path in files_with_ext(lib.path(), &exts) {
            let rel = path.strip_prefix(lib.path()).unwrap().to_string_lossy().into_owned();
            let data = std::fs::read(&path).unwrap();
            under = under.fixture(if rel.ends_with("untagged.flac") {
                Fixture::untagged(&rel, data)
            } else {
                Fixture::tagged(&rel, data)
            });
        }
        trials.extend(format_trials(under));
    }
    trials.extend(specific(lib.clone(), Arc::new(formats)));
    musefs_plugin_suite::run(&args, trials).exit();
}

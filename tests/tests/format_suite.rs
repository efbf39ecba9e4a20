//! The format behaviour suite (`musefs-plugin-suite`) on every bundled format plugin,
//! loaded from its `.so` through the real ABI, over the demo library's real encoded
//! files (each plugin's fixtures are the files with an extension it claims; every other
//! format is a rival that must probe them lower). One check per test
//! (`format::PLUGIN::FIXTURE::CHECK`), plus format-specific checks.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
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
fn specific(lib: Arc<PathBuf>, formats: Arc<Vec<(String, Arc<FormatBox>)>>) -> Vec<Trial> {
    let get = move |n: &str| formats.iter().find(|(m, _)| m == n).map(|(_, f)| f.clone()).expect("format loaded");
    let file = move |p: &str| std::fs::read(lib.join(p)).unwrap();
    let (g1, f1) = (get.clone(), file.clone());
    let (g2, f2) = (get.clone(), file.clone());
    let (g3, f3) = (get.clone(), file.clone());
    let (g4, f4) = (get.clone(), file.clone());
    let (g5, f5) = (get, file);
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
            check((vorbis.format.as_str(), vorbis.pictures.len()) == ("ogg-vorbis", 1), || {
                format!("{}", vorbis.format)
            })?;
            // FLAC in Ogg: flac's (PICTURE block, header count) and ffmpeg's; Speex.
            let title = |i: &TrackInfo| i.tags.iter().find(|t| t.key == "title").map(|t| t.value.to_string());
            let fl = read(&ogg, &f3("oggx/flac.oga"))?;
            check((fl.format.as_str(), fl.pictures.len(), fl.extension.as_str()) == ("ogg-flac", 1, ""), || {
                format!("{fl:?}")
            })?;
            check(title(&fl).as_deref() == Some("Ogg FLAC 1"), || format!("{:?}", fl.tags))?;
            check(fl.tags.iter().any(|t| t.key == "musicbrainz_albumid"), || format!("{:?}", fl.tags))?;
            let p = &fl.props;
            check((p.sample_rate, p.channels, p.bits_per_sample, p.duration_ms) == (44100, 2, 16, 3000), || {
                format!("{p:?}")
            })?;
            let ff = read(&ogg, &f3("oggx/ffmpeg-flac.oga"))?;
            check(ff.tags.iter().any(|t| t.key == "albumartist" && t.value == "Ogg Album Artist"), || {
                format!("{:?}", ff.tags)
            })?;
            let spx = read(&ogg, &f3("oggx/speech.spx"))?;
            check(spx.format.as_str() == "ogg-speex" && title(&spx).as_deref() == Some("Speex 3"), || {
                format!("{spx:?}")
            })?;
            check((spx.props.sample_rate, spx.props.channels) == (16000, 1) && spx.props.duration_ms > 2900, || {
                format!("{:?}", spx.props)
            })
        }),
        Trial::test(
            "format::riff::reads_id3_info_aiff_text_and_tolerates_buggy_writers",
            move || -> Result<(), Failed> {
                let riff = g4("riff");
                let key = |i: &TrackInfo, k: &str| -> Vec<String> {
                    i.tags.iter().filter(|t| t.key == k).map(|t| t.value.to_string()).collect()
                };
                let id3 = read(&riff, &f4("riff/id3.wav"))?;
                check(key(&id3, "albumartist") == ["WAV Album Artist"], || format!("{:?}", id3.tags))?;
                check(key(&id3, "musicbrainz_albumid").len() == 1 && id3.pictures.len() == 1, || {
                    format!("{:?}", id3.tags)
                })?;
                let p = &id3.props;
                check((p.sample_rate, p.channels, p.bits_per_sample, p.duration_ms) == (44100, 2, 16, 3000), || {
                    format!("{p:?}")
                })?;
                // Both chunks: the ID3 value is the field, the INFO item stays under its native name.
                let both = read(&riff, &f4("riff/both.wav"))?;
                check(key(&both, "title") == ["WAV Title 3"], || format!("{:?}", both.tags))?;
                check(both.tags.iter().any(|t| t.native == "INFO:INAM" && t.key.is_empty()), || {
                    format!("{:?}", both.tags)
                })?;
                let info = read(&riff, &f4("riff/info.wav"))?;
                check(key(&info, "title") == ["INFO Title 1"] && key(&info, "track") == ["1"], || {
                    format!("{:?}", info.tags)
                })?;
                let rf = read(&riff, &f4("riff/rf64.wav"))?;
                check(rf.format.as_str() == "rf64" && rf.audio_len == 3 * 44100 * 4, || {
                    format!("{} {}", rf.format, rf.audio_len)
                })?;
                let sur = read(&riff, &f4("riff/surround.wav"))?;
                check(
                    (sur.props.channels, sur.props.bits_per_sample, sur.props.codec.as_str()) == (6, 24, "pcm"),
                    || format!("{:?}", sur.props),
                )?;
                let aiff = read(&riff, &f4("riff/text.aiff"))?;
                check(key(&aiff, "title") == ["AIFF Title 6"] && key(&aiff, "artist") == ["AIFF Artist"], || {
                    format!("{:?}", aiff.tags)
                })?;
                check(key(&aiff, "comment") == ["An annotation"] && aiff.props.sample_rate == 44100, || {
                    format!("{:?}", aiff.props)
                })?;
                let aid3 = read(&riff, &f4("riff/id3.aiff"))?;
                check(key(&aid3, "artist") == ["AIFF Ärtist"] && aid3.pictures.len() == 1, || {
                    format!("{:?}", aid3.tags)
                })?;
                let sowt = read(&riff, &f4("riff/sowt.aifc"))?;
                check((sowt.format.as_str(), sowt.props.codec.as_str()) == ("aifc", "pcm"), || {
                    format!("{:?}", sowt.props)
                })?;
                // Buggy writers: a missing pad byte, an unset data size, chunks after the audio.
                let nopad = read(&riff, &f4("riff/nopad.wav"))?;
                check(key(&nopad, "title") == ["No Pad 9"] && nopad.audio_len == 8000, || format!("{:?}", nopad.tags))?;
                let unset = read(&riff, &f4("riff/unset.wav"))?;
                check(unset.audio_len == 8000 && unset.extra.iter().any(|w| w.value.contains("unset")), || {
                    format!("{:?}", unset.extra)
                })?;
                let odd = read(&riff, &f4("riff/odd-after.wav"))?;
                check(odd.audio_len == 8001 && key(&odd, "title") == ["Odd Title 8"], || format!("{:?}", odd.tags))
            },
        ),
        Trial::test("format::mp4::reads_chapters_and_musicbrainz_freeform_keys", move || -> Result<(), Failed> {
            let mp4 = g5("mp4");
            let book = read(&mp4, &f5("mp4/book.m4b"))?;
            let ch = book.extra.iter().find(|kv| kv.key == "chapters").map(|kv| kv.value.to_string());
            check(ch.as_deref() == Some("00:00:00.000 One\n00:00:01.500 Two"), || format!("{ch:?}"))?;
            // Picard's `MusicBrainz Album Id` is the same key as Vorbis' MUSICBRAINZ_ALBUMID.
            check(book.tags.iter().any(|t| t.key == "musicbrainz_albumid"), || format!("{:?}", book.tags))
        }),
    ]
}

/// The fixture library: the demo library, MP4 fixtures (ffmpeg AAC/ALAC, faststart or
/// not, an M4B, tagged by mutagen) and WAV/AIFF fixtures (ffmpeg, mutagen, sox and
/// hand-made files as buggy writers leave them). Made once per version of the scripts
/// and shared by the test processes (nextest runs each trial in its own): built in a
/// temporary directory, then renamed into place, so a half-made library is never used.
fn fixtures() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let scripts = [
        root.join("../examples/demo/make_library.py"),
        root.join("scripts/mp4_fixtures.py"),
        root.join("scripts/riff_fixtures.py"),
        root.join("scripts/ogg_fixtures.py"),
    ];
    let mut h = std::collections::hash_map::DefaultHasher::new();
    for s in &scripts {
        std::fs::read(s).unwrap().hash(&mut h);
    }
    let dir = target_dir().join(format!("format-suite-fixtures-{:016x}", h.finish()));
    if dir.join(".complete").exists() {
        return dir;
    }
    let tmp = tempfile::tempdir_in(target_dir()).unwrap();
    make_library(tmp.path(), false);
    for (script, sub) in [(&scripts[1], "mp4"), (&scripts[2], "riff"), (&scripts[3], "oggx")] {
        let out = std::process::Command::new("python3").arg(script).arg(tmp.path().join(sub)).output().unwrap();
        assert!(out.status.success(), "{}: {}", script.display(), String::from_utf8_lossy(&out.stderr));
    }
    std::fs::write(tmp.path().join(".complete"), b"").unwrap();
    let tmp = tmp.keep();
    if std::fs::rename(&tmp, &dir).is_err() {
        // Another test process finished first: use its library.
        let _ = std::fs::remove_dir_all(&tmp);
    }
    assert!(dir.join(".complete").exists(), "fixture library {} missing", dir.display());
    dir
}

fn main() {
    let args = Arguments::from_args();
    let lib = Arc::new(fixtures());
    let plugins = Plugins::load_dir(&target_dir()).unwrap();
    let formats: Vec<(String, Arc<FormatBox>)> =
        plugins.formats().unwrap().into_iter().map(|(n, f)| (n, Arc::new(f))).collect();
    let mut trials = vec![Trial::test("format::bundled_formats_load", {
        let names: Vec<String> = formats.iter().map(|(n, _)| n.clone()).collect();
        move || {
            check(["flac", "mp3", "ogg", "mp4", "riff"].iter().all(|n| names.iter().any(|m| m == n)), || {
                format!("{names:?}")
            })
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
        for path in files_with_ext(&lib, &exts) {
            let rel = path.strip_prefix(lib.as_path()).unwrap().to_string_lossy().into_owned();
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

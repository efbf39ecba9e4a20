//! Damaged files that ffmpeg plays and the MP4 reader once refused, each test named
//! after its bug. `data/tiny.m4a` is 0.3 s of AAC from ffmpeg (`-fflags +bitexact`);
//! each test damages a copy the way the damaged-file corpus of the end-to-end tests
//! did when it found the bug.

use std::sync::Arc;

use musefs_format_mp4::Mp4;
use musefs_plugin_api::testing::MemHandle;
use musefs_plugin_api::{handle_into_ffi, CallCtx, Format, PlanRequest, Source};

const TINY: &[u8] = include_bytes!("data/tiny.m4a");

fn source(data: &[u8]) -> Source {
    Source::new(handle_into_ffi(Arc::new(MemHandle::new(data.to_vec()))), CallCtx::unlimited())
}

/// `data` with one bit flipped in the first occurrence of `marker` (its byte `at`).
fn flipped(marker: &[u8], at: usize) -> Vec<u8> {
    let mut d = TINY.to_vec();
    let i = d.windows(marker.len()).position(|w| w == marker).expect("marker in the fixture");
    d[i + at] ^= 0x04;
    d
}

/// Reads `data` and plans its synthesis: an AAC track, served whole.
fn reads_and_plans(data: &[u8]) {
    let info = Mp4.read(&source(data)).expect("a file ffmpeg plays is read");
    assert_eq!(info.props.codec.as_str(), "aac");
    assert!(info.props.duration_ms > 200 && info.audio_len > 0, "{:?}", info.props);
    let req = PlanRequest::synthesis_of(&info);
    Mp4.plan(&source(data), &req).expect("a plan");
}

#[test]
fn the_fixture_reads() {
    reads_and_plans(TINY);
}

/// Found by the damaged corpus (e2e_formats): a bit flip in the `ftyp` atom's type
/// (`ftyt`) made the reader refuse the file ("no ftyp atom first"); ffmpeg does not
/// need `ftyp` and plays it. A file whose first atom is not `ftyp` is read when it has
/// `moov` and `mdat`, with a warning.
#[test]
fn a_damaged_ftyp_type_is_read_with_a_warning() {
    let d = flipped(b"ftyp", 3);
    reads_and_plans(&d);
    let info = Mp4.read(&source(&d)).unwrap();
    assert!(info.extra.iter().any(|kv| kv.key.as_str() == "warning" && kv.value.as_str().contains("ftyp")));
}

/// Found by the damaged corpus (e2e_formats): a bit flip in the sound track's handler
/// type (`soun` → `sou` + 1 bit) made the reader find "no sound track"; ffmpeg takes the
/// track's kind from its sample entry (`mp4a`) and plays it. A track whose sample entry
/// is an audio codec is a sound track whatever its handler says.
#[test]
fn a_damaged_sound_handler_is_read_from_the_sample_entry() {
    reads_and_plans(&flipped(b"soun", 3));
}

/// Not audio: a file with only a text track is still refused.
#[test]
fn a_file_without_an_audio_sample_entry_is_refused() {
    let mut d = flipped(b"soun", 3);
    let i = d.windows(4).position(|w| w == b"mp4a").unwrap();
    d[i..i + 4].copy_from_slice(b"text");
    assert!(Mp4.read(&source(&d)).is_err());
}

/// Found by the damaged corpus (e2e_formats): a bit flip in the `mdat` atom's type
/// ("no mdat atom"); ffmpeg reads the audio through the chunk offsets and plays it. The
/// largest atom of no known type is taken for `mdat`, with a warning.
#[test]
fn a_damaged_mdat_type_is_found_by_elimination() {
    let mut d = TINY.to_vec();
    let i = d.windows(4).position(|w| w == b"mdat").unwrap();
    d[i + 2] ^= 0x80;
    reads_and_plans(&d);
    let info = Mp4.read(&source(&d)).unwrap();
    assert_eq!(info.audio_offset, i as u64 + 4, "the audio is the damaged atom's body");
}

/// Found by the damaged corpus (e2e_formats): a bit flip in the size of the sound
/// track's `mdia` atom (claiming 128 KiB more than its `trak` holds) hid the track
/// ("no sound track"); ffmpeg cuts such a child at its parent's end and plays the file.
/// The reader does the same.
#[test]
fn an_oversized_child_atom_is_cut_at_its_parent_end() {
    let mut d = TINY.to_vec();
    let i = d.windows(4).position(|w| w == b"mdia").unwrap();
    d[i - 3] ^= 0x02;
    reads_and_plans(&d);
}

/// Found by `fuzz/run.sh` (format_mp4) in a clean-clone CI run: a chapter track whose
/// `stco` claims billions of entries made the chapter reader allocate 32 GiB (and an
/// `stts` count as large would loop for minutes). Entry counts are bounded by the bytes
/// the tables hold.
#[test]
fn fuzz_chapters_huge_stco_count_reads_in_bounded_memory() {
    let data = include_bytes!("data/fuzz-chapters-huge-stco-count.m4a");
    let got = std::panic::catch_unwind(|| Mp4.read(&source(data)).map(|i| i.extra.len()));
    assert!(got.is_ok(), "no panic");
}

/// Found by `fuzz/run.sh` (format_mp4): a `meta` atom shorter than its 4 bytes of
/// version and flags made the tag rewrite slice past its end (a panic). Such a `meta`
/// has no children.
#[test]
fn fuzz_short_meta_atom_does_not_panic() {
    let data = include_bytes!("data/fuzz-short-meta-atom.m4a");
    let got = std::panic::catch_unwind(|| {
        if let Ok(info) = Mp4.read(&source(data)) {
            let _ = Mp4.plan(&source(data), &PlanRequest::synthesis_of(&info));
        }
    });
    assert!(got.is_ok(), "no panic");
}

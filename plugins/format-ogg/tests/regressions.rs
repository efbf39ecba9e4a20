//! Inputs that once broke the Ogg reader, each test named after its bug.

use std::sync::Arc;

use musefs_format_ogg::Ogg;
use musefs_plugin_api::testing::MemHandle;
use musefs_plugin_api::{handle_into_ffi, CallCtx, Format, PlanRequest, Source};

fn source(data: &[u8]) -> Source {
    Source::new(handle_into_ffi(Arc::new(MemHandle::new(data.to_vec()))), CallCtx::unlimited())
}

/// Found by `fuzz/run.sh` (format_ogg): symphonia's Ogg demuxer, which the reader used
/// for audio properties, panicked seeking while it scanned for the stream's end. The
/// properties now come from the headers and the last granule position.
#[test]
fn fuzz_symphonia_seek_panic_is_read_from_the_headers() {
    let data = include_bytes!("data/fuzz-symphonia-seek-panic.ogg");
    let got = std::panic::catch_unwind(|| Ogg.read(&source(data)).map(|i| i.props));
    let props = got.expect("no panic").expect("an Opus file ffmpeg would play: read");
    assert_eq!((props.codec.as_str(), props.sample_rate, props.channels), ("opus", 48000, 2));
    assert!(props.duration_ms > 0);
}

/// Found by `fuzz/run.sh` (format_ogg): an Ogg FLAC stream with an empty header packet
/// (ffmpeg's muxer writes one) made synthesis index into the empty packet to set the
/// last-block flag. Empty packets are no metadata block and are left out.
#[test]
fn fuzz_ogg_flac_empty_header_packet_plans_without_panicking() {
    let data = include_bytes!("data/fuzz-ogg-flac-empty-header-packet.ogg");
    let info = Ogg.read(&source(data)).expect("read");
    let req = PlanRequest::synthesis_of(&info);
    let plan = std::panic::catch_unwind(|| Ogg.plan(&source(data), &req)).expect("no panic").expect("a plan");
    assert!(plan.segments.iter().map(|s| s.len).sum::<u64>() > 0);
}

/// Found by the damaged corpus (e2e_formats): a bit flip in the capture pattern of an
/// Ogg FLAC stream's second page (its VORBIS_COMMENT block) made the resync skip that
/// page and the reader refuse the file ("the second Ogg packet is not a comment
/// header"); ffmpeg plays it. The headers end where the first audio frame is found; the
/// file is read without tags, with a warning, and its synthesis serves it as it is.
/// (`data/tiny-flac.oga`: 0.3 s from ffmpeg, `-fflags +bitexact`.)
#[test]
fn a_lost_ogg_flac_comment_page_reads_without_tags() {
    let mut data = include_bytes!("data/tiny-flac.oga").to_vec();
    let second = data.windows(4).skip(4).position(|w| w == b"OggS").unwrap() + 4;
    data[second] ^= 0x04;
    let info = Ogg.read(&source(&data)).expect("a file ffmpeg plays is read");
    assert!(info.tags.is_empty());
    assert_eq!((info.props.codec.as_str(), info.props.sample_rate), ("flac", 44100));
    assert!(info.extra.iter().any(|kv| kv.key.as_str() == "warning" && kv.value.as_str().contains("audio frame")));
    // The audio starts at the first audio page (the damaged one before it is skipped).
    let third = data.windows(4).skip(second + 1).position(|w| w == b"OggS").unwrap() + second + 1;
    assert_eq!(info.audio_offset, third as u64);
    let req = PlanRequest::synthesis_of(&info);
    let plan = Ogg.plan(&source(&data), &req).expect("a plan");
    let size: u64 = plan.segments.iter().map(|s| s.len).sum();
    assert_eq!(size, data.len() as u64, "served as it is");
}

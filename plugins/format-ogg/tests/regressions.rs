//! Inputs that once broke the Ogg reader, each test named after its bug.

use std::sync::Arc;

use musefs_format_ogg::Ogg;
use musefs_plugin_api::testing::MemHandle;
use musefs_plugin_api::{handle_into_ffi, CallCtx, Format, Source};

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

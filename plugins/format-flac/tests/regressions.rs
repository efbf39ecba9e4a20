//! Damaged files that ffmpeg plays and the FLAC reader once refused, each test named
//! after its bug. `data/tiny-picture.flac`: 0.2 s from `flac`, a 1x1 PNG front cover
//! added by `metaflac --import-picture-from`.

use std::sync::Arc;

use musefs_format_flac::Flac;
use musefs_plugin_api::testing::MemHandle;
use musefs_plugin_api::{handle_into_ffi, CallCtx, Format, Source};

const TINY: &[u8] = include_bytes!("data/tiny-picture.flac");

fn source(data: &[u8]) -> Source {
    Source::new(handle_into_ffi(Arc::new(MemHandle::new(data.to_vec()))), CallCtx::unlimited())
}

#[test]
fn the_fixture_reads_with_its_picture() {
    let info = Flac.read(&source(TINY)).unwrap();
    assert_eq!(info.pictures.len(), 1);
}

/// Found by the damaged corpus (e2e_synthesis): a bit flip in a PICTURE block's image
/// length ("picture block is truncated: 4194383 bytes needed") refused the whole file;
/// ffmpeg plays it. The damaged picture is skipped with a warning; the file is read.
#[test]
fn a_damaged_picture_length_skips_the_picture_not_the_file() {
    let mut d = TINY.to_vec();
    // PICTURE body: type, MIME length, MIME, description length, description, four
    // numbers, then the image length: right before the PNG signature.
    let png = d.windows(4).position(|w| w == b"\x89PNG").unwrap();
    d[png - 2] ^= 0x40;
    let info = Flac.read(&source(&d)).expect("a file ffmpeg plays is read");
    assert!(info.pictures.is_empty());
    assert!(info.audio_len > 0 && info.props.sample_rate == 44100);
    let warned = info.extra.iter().any(|kv| kv.key.as_str() == "warning" && kv.value.as_str().contains("PICTURE"));
    assert!(warned, "{:?}", info.extra);
}

//! The musefs format behaviour suite, run on this plugin by its own crate, as any
//! third-party plugin can: `cargo test` runs every check of `musefs-plugin-suite` on the
//! plugin's format through the real ABI object (`format_into_ffi`), one trial per check.

use musefs_format_wav::Wav;
use musefs_plugin_api::format_into_ffi;
use musefs_plugin_suite::{format_trials, Arguments, Fixture, FormatUnderTest};

/// A small 16-bit stereo PCM WAV: `fmt `, an optional `LIST`/`INFO` with `tags`, `data`.
fn wav(tags: &[(&[u8; 4], &str)], seconds: u32) -> Vec<u8> {
    let rate = 8000u32;
    let mut body = b"WAVE".to_vec();
    body.extend(b"fmt ");
    body.extend(16u32.to_le_bytes());
    body.extend(1u16.to_le_bytes()); // PCM
    body.extend(2u16.to_le_bytes()); // stereo
    body.extend(rate.to_le_bytes());
    body.extend((rate * 4).to_le_bytes());
    body.extend(4u16.to_le_bytes());
    body.extend(16u16.to_le_bytes());
    if !tags.is_empty() {
        let mut info = b"INFO".to_vec();
        for (id, value) in tags {
            let mut v = value.as_bytes().to_vec();
            v.push(0);
            info.extend(*id);
            info.extend((v.len() as u32).to_le_bytes());
            if v.len() % 2 == 1 {
                v.push(0);
            }
            info.extend(v);
        }
        body.extend(b"LIST");
        body.extend((info.len() as u32).to_le_bytes());
        body.extend(info);
    }
    let samples = (rate * seconds * 2) as usize;
    body.extend(b"data");
    body.extend(((samples * 2) as u32).to_le_bytes());
    body.extend((0..samples).flat_map(|i| ((i * 37 % 2000) as i16 - 1000).to_le_bytes()));
    let mut out = b"RIFF".to_vec();
    out.extend((body.len() as u32).to_le_bytes());
    out.extend(body);
    out
}

fn main() {
    let args = Arguments::from_args();
    let under = FormatUnderTest::new("wav", format_into_ffi(Wav))
        .fixture(Fixture::tagged("tagged.wav", wav(&[(b"INAM", "A Title"), (b"IART", "An Artist")], 2)))
        .fixture(Fixture::untagged("plain.wav", wav(&[], 1)));
    musefs_plugin_suite::run(&args, format_trials(under)).exit();
}

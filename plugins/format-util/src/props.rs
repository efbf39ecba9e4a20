//! Audio properties through symphonia's demuxers.

use std::io;

use musefs_plugin_api::{AudioProps, PluginError, PluginResult, Source, SourceReader};
use symphonia::core::formats::FormatOptions;
use symphonia::core::io::{MediaSource, MediaSourceStream, MediaSourceStreamOptions};
use symphonia::core::meta::{Limit, MetadataOptions};
use symphonia::core::probe::Hint;

/// A symphonia `MediaSource` over a plugin [`Source`].
struct Media(SourceReader);

impl io::Read for Media {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.read(buf)
    }
}

impl io::Seek for Media {
    fn seek(&mut self, pos: io::SeekFrom) -> io::Result<u64> {
        self.0.seek(pos)
    }
}

impl MediaSource for Media {
    fn is_seekable(&self) -> bool {
        true
    }

    fn byte_len(&self) -> Option<u64> {
        Some(self.0.len())
    }
}

/// Probes `src` with symphonia and returns the default track's properties.
///
/// `codec` is what the caller already knows the stream to be; `audio_len` (the bytes
/// of audio, without tags) is used for the average bit rate.
///
/// # Errors
/// `INVALID_DATA` naming symphonia's complaint if the stream cannot be demuxed.
pub fn audio_props(src: &Source, extension: &str, codec: &str, audio_len: u64) -> PluginResult<AudioProps> {
    let mss = MediaSourceStream::new(Box::new(Media(src.reader())), MediaSourceStreamOptions { buffer_len: 64 * 1024 });
    let mut hint = Hint::new();
    hint.with_extension(extension);
    let meta = MetadataOptions { limit_metadata_bytes: Limit::Maximum(0), limit_visual_bytes: Limit::Maximum(0) };
    let probed = symphonia::default::get_probe()
        .format(&hint, mss, &FormatOptions::default(), &meta)
        .map_err(|e| PluginError::invalid_data(format!("cannot read the {codec} stream: {e}")))?;
    let track = probed
        .format
        .default_track()
        .ok_or_else(|| PluginError::invalid_data(format!("no {codec} audio track found")))?;
    let p = &track.codec_params;
    let sample_rate = p.sample_rate.unwrap_or(0);
    let duration_ms = match (p.n_frames, p.time_base) {
        (Some(n), Some(tb)) => {
            let t = tb.calc_time(n);
            t.seconds * 1000 + (t.frac * 1000.0) as u64
        }
        (Some(n), None) if sample_rate > 0 => n * 1000 / u64::from(sample_rate),
        _ => 0,
    };
    let bitrate =
        audio_len.saturating_mul(8000).checked_div(duration_ms).map_or(0, |b| b.min(u64::from(u32::MAX)) as u32);
    Ok(AudioProps {
        codec: codec.into(),
        duration_ms,
        sample_rate,
        channels: p.channels.map_or(0, |c| c.count() as u32),
        bits_per_sample: p.bits_per_sample.unwrap_or(0),
        bitrate,
    })
}

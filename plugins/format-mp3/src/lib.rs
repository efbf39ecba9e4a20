//! musefs format plugin `mp3`.
//!
//! Layout of an MP3 file as this plugin sees it:
//!
//! ```text
//! [ID3v2 tag(s)] [junk] [MPEG frames: Xing/LAME frame, audio ...] [APEv2] [Lyrics3v2] [ID3v1]
//! ```
//!
//! The audio range starts at the first frame sync confirmed by a second frame header
//! right after it (so junk that happens to contain `0xFFE` is not taken for audio) and
//! ends at the first trailer. Only the head (the ID3v2 tag and a search window) and the
//! tail (trailers) are read.
//!
//! ## Synthesis
//! A fresh ID3v2 tag (see [`writer`]; `id3v2_version = "2.4"` by default, `"2.3"`
//! selectable), then the audio from the first confirmed frame sync (the Xing/LAME frame
//! included) to the first trailer, as one origin range; junk before the first frame is
//! dropped. Trailers: `id3v1 = "drop" | "write"` and `apev2 = "drop" | "write"` (both
//! `drop` by default; `write` regenerates them from the catalog). The tag's padding keeps
//! the served file the size of the original's leading tags when the new tag fits, else
//! rounds up to 4 KiB with at least `min_padding` (default 1024) spare.

pub use musefs_format_util::id3v2;
mod trailers;
pub use musefs_format_util::id3write as writer;

use musefs_format_util::{options::Options, padding_for, props};
use musefs_plugin_api::{
    AudioProps, Format, KeyValue, Plan, PlanRequest, PluginError, PluginResult, Region, Segment, Source, TrackInfo,
};

/// The largest ID3v2 tag we accept (covers with several large pictures fit well within).
const MAX_TAG: u64 = 64 * 1024 * 1024;
/// The window after the tags in which the first frame is looked for first.
const SYNC_WINDOW: usize = 256 * 1024;
/// How far after the tags the first frame is looked for, window after window.
const FAR_SYNC_SEARCH: u64 = 64 * 1024 * 1024;
/// How much consecutive windows overlap (more than the longest frame).
const SYNC_OVERLAP: usize = 16 * 1024;

/// The MP3 format.
pub struct Mp3;

/// An MPEG audio frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    /// 1 = MPEG-1, 2 = MPEG-2, 25 = MPEG-2.5.
    pub version: u8,
    /// 1, 2 or 3.
    pub layer: u8,
    /// Bit rate in kbit/s.
    pub bitrate: u32,
    /// Sample rate in Hz.
    pub sample_rate: u32,
    /// Channels (1 or 2).
    pub channels: u32,
    /// The frame's length in bytes.
    pub len: usize,
}

const BITRATES: [[u32; 15]; 5] = [
    [0, 32, 64, 96, 128, 160, 192, 224, 256, 288, 320, 352, 384, 416, 448], // V1 L1
    [0, 32, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320, 384],    // V1 L2
    [0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320],     // V1 L3
    [0, 32, 48, 56, 64, 80, 96, 112, 128, 144, 160, 176, 192, 224, 256],    // V2 L1
    [0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160],         // V2 L2/L3
];

/// Decodes a frame header, `None` if `b` does not start with a valid one.
pub fn frame_header(b: &[u8]) -> Option<FrameHeader> {
    if b.len() < 4 || b[0] != 0xFF || b[1] & 0xE0 != 0xE0 {
        return None;
    }
    let version = match (b[1] >> 3) & 3 {
        0 => 25,
        2 => 2,
        3 => 1,
        _ => return None,
    };
    let layer = match (b[1] >> 1) & 3 {
        1 => 3,
        2 => 2,
        3 => 1,
        _ => return None,
    };
    let br_idx = (b[2] >> 4) as usize;
    let sr_idx = ((b[2] >> 2) & 3) as usize;
    if br_idx == 0 || br_idx == 15 || sr_idx == 3 {
        return None; // free format is not supported; reserved values are invalid
    }
    let table = match (version, layer) {
        (1, 1) => 0,
        (1, 2) => 1,
        (1, _) => 2,
        (_, 1) => 3,
        _ => 4,
    };
    let bitrate = BITRATES[table][br_idx];
    let sample_rate = [44100, 48000, 32000][sr_idx]
        / match version {
            1 => 1,
            2 => 2,
            _ => 4,
        };
    let pad = u32::from((b[2] >> 1) & 1);
    let len = match layer {
        1 => (12 * bitrate * 1000 / sample_rate + pad) * 4,
        3 if version != 1 => 72 * bitrate * 1000 / sample_rate + pad,
        _ => 144 * bitrate * 1000 / sample_rate + pad,
    } as usize;
    let channels = if b[3] >> 6 == 3 { 1 } else { 2 };
    Some(FrameHeader { version, layer, bitrate, sample_rate, channels, len })
}

/// The offset in `window` of the first frame header confirmed by the next one (or by the
/// end of the audio), with its header.
pub fn find_first_frame(window: &[u8], window_is_all: bool) -> Option<(usize, FrameHeader)> {
    let mut i = 0;
    while i + 4 <= window.len() {
        if let Some(h) = frame_header(&window[i..]) {
            let next = i + h.len;
            let confirmed = match window.get(next..) {
                Some(rest) if rest.len() >= 4 => frame_header(rest)
                    .is_some_and(|n| n.version == h.version && n.layer == h.layer && n.sample_rate == h.sample_rate),
                // The next header lies beyond what we read: accept only if this is the whole file's end.
                _ => window_is_all && next <= window.len(),
            };
            if confirmed {
                return Some((i, h));
            }
        }
        i += 1;
    }
    None
}

impl Format for Mp3 {
    fn check_options(&self, options: &str) -> PluginResult<()> {
        settings(options).map(|_| ())
    }

    fn extensions(&self) -> Vec<String> {
        vec!["mp3".into()]
    }

    fn probe(&self, head: &[u8], extension: &str) -> u32 {
        if let Some((_, n)) = id3v2::header_len(head) {
            // An ID3v2 tag: MP3 unless the bytes after it say otherwise (e.g. fLaC).
            let after = usize::try_from(n).unwrap_or(usize::MAX);
            return match head.get(after..after.saturating_add(4)) {
                Some(b"fLaC") | Some(b"OggS") => 0,
                Some(b) if frame_header(b).is_some() => 90,
                _ if extension == "mp3" => 70,
                _ => 30,
            };
        }
        if find_first_frame(&head[..head.len().min(8192)], false).is_some_and(|(at, _)| at == 0) {
            return if extension == "mp3" { 90 } else { 40 };
        }
        if extension == "mp3" && find_first_frame(head, false).is_some() {
            60
        } else {
            0
        }
    }

    fn read(&self, src: &Source) -> PluginResult<TrackInfo> {
        let len = src.len();
        if len == 0 {
            return Err(PluginError::invalid_data("empty file"));
        }
        let mut regions = Vec::new();
        let mut tags = Vec::new();
        let mut pictures = Vec::new();
        let mut pos = 0u64;
        // One or more ID3v2 tags (some tools prepend a second one).
        loop {
            let head = src.read_vec(pos, 10)?;
            let Some((_, n)) = id3v2::header_len(&head) else {
                break;
            };
            if n > MAX_TAG {
                return Err(PluginError::invalid_data(format!(
                    "ID3v2 tag at offset {pos} claims {n} bytes: too large"
                )));
            }
            if pos + n > len {
                return Err(PluginError::invalid_data(format!(
                    "truncated: ID3v2 tag at offset {pos} claims {n} bytes but the file has {len}"
                )));
            }
            let data = src.read_vec(pos, n as usize)?;
            let t = id3v2::parse(&data)?;
            regions.push(Region { kind: format!("id3v2.{}", t.version).into(), offset: pos, len: n });
            tags.extend(t.tags);
            pictures.extend(t.pictures);
            pos += n;
        }
        let (audio_end, trailer_tags, trailer_regions) = trailers::read(src, pos, &tags)?;
        regions.extend(trailer_regions);
        tags.extend(trailer_tags);
        if audio_end <= pos {
            return Err(PluginError::invalid_data("no audio: the file holds only tags"));
        }
        // The first frame: in the first window after the tags, else further on (a damaged
        // tag header hides where the audio starts; ffmpeg finds the frames anywhere).
        let mut start = pos;
        let mut extra = Vec::new();
        let (skip, first) = loop {
            let window_len = (audio_end - start).min(SYNC_WINDOW as u64) as usize;
            let window = src.read_vec(start, window_len)?;
            let whole = start + window_len as u64 == audio_end;
            if let Some((i, h)) = find_first_frame(&window, whole) {
                break (start - pos + i as u64, h);
            }
            if whole || start + window_len as u64 - pos >= FAR_SYNC_SEARCH {
                return Err(PluginError::invalid_data(format!(
                    "no MPEG audio frame found in the {} bytes after the tags",
                    start + window_len as u64 - pos
                )));
            }
            // Windows overlap by more than a frame, so none is missed at a seam.
            start += (window_len - SYNC_OVERLAP) as u64;
        };
        if skip >= SYNC_WINDOW as u64 {
            extra.push(KeyValue {
                key: "warning".into(),
                value: format!("{skip} bytes after the tags hold no MPEG frame (a damaged tag?): skipped").into(),
            });
        }
        if skip > 0 {
            regions.push(Region { kind: "junk".into(), offset: pos, len: skip });
        }
        let audio_offset = pos + skip;
        let audio_len = audio_end - audio_offset;
        let props = match props::audio_props(src, "mp3", "mp3", audio_len) {
            Ok(p) if p.duration_ms > 0 => p,
            // symphonia could not estimate (e.g. junk it does not skip): a CBR estimate from the first frame.
            _ => AudioProps {
                codec: "mp3".into(),
                duration_ms: audio_len * 8 / u64::from(first.bitrate.max(1)),
                sample_rate: first.sample_rate,
                channels: first.channels,
                bits_per_sample: 0,
                bitrate: first.bitrate * 1000,
            },
        };
        Ok(TrackInfo {
            format: "mp3".into(),
            extension: "mp3".into(),
            tags: tags.into(),
            pictures: pictures.into(),
            props,
            audio_offset,
            audio_len,
            regions: regions.into(),
            extra: extra.into(),
        })
    }

    fn plan(&self, src: &Source, req: &PlanRequest) -> PluginResult<Plan> {
        synthesize(src.len(), req)
    }
}

/// The `[format.mp3]` options.
struct Settings {
    version: writer::Version,
    id3v1: bool,
    apev2: bool,
    min_pad: u64,
}

/// Parses the `[format.mp3]` options.
///
/// # Errors
/// `INVALID_INPUT` naming a bad or unknown option.
fn settings(options: &str) -> PluginResult<Settings> {
    let opts = Options::parse(options, "mp3", &["id3v2_version", "id3v1", "apev2", "min_padding"])?;
    let version = match opts.choice("id3v2_version", &["2.3", "2.4"], "2.4")?.as_str() {
        "2.3" => writer::Version::V23,
        _ => writer::Version::V24,
    };
    Ok(Settings {
        version,
        id3v1: opts.choice("id3v1", &["drop", "write"], "drop")? == "write",
        apev2: opts.choice("apev2", &["drop", "write"], "drop")? == "write",
        min_pad: opts.uint("min_padding", 1 << 20, 1024)?,
    })
}

/// The synthesis layout (see the crate docs).
///
/// # Errors
/// `INVALID_INPUT` for a bad option; `INVALID_DATA` if the catalog's audio range is
/// outside the file.
pub fn synthesize(len: u64, req: &PlanRequest) -> PluginResult<Plan> {
    let Settings { version: v, id3v1, apev2, min_pad } = settings(&req.options)?;
    let info = &req.info;
    if info.audio_len == 0 || info.audio_offset + info.audio_len > len {
        return Err(PluginError::invalid_data("the catalog's audio range is outside the file: rescan it"));
    }
    let frames = writer::frames(&req.tags, &req.pictures, v);
    // The original's leading tags (and junk): the room a same-size header has.
    let original = info.audio_offset;
    let pad = padding_for(original, frames.len() as u64, 10, min_pad);
    let tag = writer::tag(&frames, pad as usize, v);
    let mut segs = vec![Segment::literal(tag), Segment::origin(info.audio_offset, info.audio_len)];
    if apev2 {
        segs.push(Segment::literal(writer::apev2(&req.tags)));
    }
    if id3v1 {
        segs.push(Segment::literal(writer::id3v1(&req.tags)));
    }
    Ok(Plan { segments: segs.into() })
}

musefs_plugin_api::export_plugin! {
    name: "mp3",
    version: env!("CARGO_PKG_VERSION"),
    description: "MP3: ID3v2.2/2.3/2.4 (binary frames kept), ID3v1, APEv2, junk before the first frame",
    format: |_config: &str| Ok(Mp3),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_header_lengths() {
        // MPEG-1 Layer III, 128 kbit/s, 44.1 kHz, no padding: 417 bytes.
        let h = frame_header(&[0xFF, 0xFB, 0x90, 0x64]).unwrap();
        assert_eq!((h.version, h.layer, h.bitrate, h.sample_rate, h.len), (1, 3, 128, 44100, 417));
        assert!(frame_header(&[0xFF, 0xFB, 0xF0, 0x64]).is_none()); // bad bitrate index
    }

    #[test]
    fn junk_with_false_sync_is_skipped() {
        let frame = {
            let mut f = vec![0u8; 417];
            f[..4].copy_from_slice(&[0xFF, 0xFB, 0x90, 0x64]);
            f
        };
        let mut data = vec![0x12, 0xFF, 0xFB, 0x90, 0x64, 0x00, 0x00]; // a lone false sync
        data.extend(&frame);
        data.extend(&frame);
        let (at, _) = find_first_frame(&data, true).unwrap();
        assert_eq!(at, 7);
    }
}

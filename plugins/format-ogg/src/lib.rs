//! musefs format plugin `ogg`: Ogg Vorbis, Opus, FLAC (the `\x7fFLAC` mapping) and Speex.
//!
//! Reads the header pages of the first logical stream: the identification packet, the
//! comment packet (`\x03vorbis` / `OpusTags` + a Vorbis comment block, pictures in
//! `METADATA_BLOCK_PICTURE`; FLAC: a `VORBIS_COMMENT` metadata block, pictures in
//! `PICTURE` blocks; Speex: a bare Vorbis comment block) and the codec's other header
//! packets (the Vorbis setup packet, FLAC's further metadata blocks, Speex's extra
//! headers). Audio starts at the first
//! page after the header packets (both specs require audio to begin on a fresh page).
//! Every header page's CRC is checked. Chained streams and other serials are not read.

pub mod page;
pub mod synth;

use base64::Engine;
use musefs_format_util::{picture, vorbis};
use musefs_plugin_api::{
    AudioProps, Format, KeyValue, Plan, PlanRequest, PluginError, PluginResult, Region, Source, Tag, TrackInfo,
};

/// Header packets larger than this are refused (covers are a few MiB at most).
const MAX_HEADER_BYTES: usize = 64 * 1024 * 1024;

/// The Ogg format.
pub struct Ogg;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Codec {
    Vorbis,
    Opus,
    Flac,
    Speex,
}

fn codec_of(first_packet: &[u8]) -> Option<Codec> {
    if first_packet.starts_with(b"\x01vorbis") {
        Some(Codec::Vorbis)
    } else if first_packet.starts_with(b"OpusHead") {
        Some(Codec::Opus)
    } else if first_packet.starts_with(b"\x7fFLAC") {
        Some(Codec::Flac)
    } else if first_packet.starts_with(b"Speex   ") {
        Some(Codec::Speex)
    } else {
        None
    }
}

/// The FLAC metadata block type of a header packet (low 7 bits of its first byte), and
/// whether it is the last one.
/// Whether a packet of a FLAC stream is an audio frame (its sync code), not a header.
fn is_flac_frame(p: &[u8]) -> bool {
    p.len() >= 2 && p[0] == 0xFF && p[1] & 0xFE == 0xF8
}

fn flac_block(packet: &[u8]) -> Option<(u8, bool)> {
    packet.first().map(|b| (b & 0x7f, b & 0x80 != 0))
}

/// How many header packets a stream has, once its first packet (and, for FLAC without a
/// count, the packets so far) are known; `None` while that is still open.
fn header_packets(codec: Codec, packets: &[Vec<u8>]) -> Option<usize> {
    match codec {
        Codec::Vorbis => Some(3),
        Codec::Opus => Some(2),
        Codec::Speex => {
            // extra_headers at offset 68 of the 80-byte Speex header.
            let extra = packets[0].get(68..72).map_or(0, |b| u32::from_le_bytes(b.try_into().expect("4")));
            Some(2 + extra.min(16) as usize)
        }
        Codec::Flac => {
            let n = packets[0].get(7..9).map_or(0, |b| u16::from_be_bytes([b[0], b[1]]));
            if n > 0 {
                Some(1 + n as usize)
            } else {
                // No count: up to the block flagged last.
                packets[1..].iter().position(|p| flac_block(p).is_some_and(|(_, last)| last)).map(|i| i + 2)
            }
        }
    }
}

impl Format for Ogg {
    fn extensions(&self) -> Vec<String> {
        vec!["ogg".into(), "oga".into(), "opus".into(), "spx".into()]
    }

    fn probe(&self, head: &[u8], _extension: &str) -> u32 {
        if head.len() >= 28 && &head[..4] == b"OggS" {
            let body = 27 + head[26] as usize;
            match head.get(body..).and_then(codec_of) {
                Some(_) => 100,
                None => 20, // Ogg, but not a codec we read (e.g. Theora video)
            }
        } else {
            0
        }
    }

    fn read(&self, src: &Source) -> PluginResult<TrackInfo> {
        let len = src.len();
        let mut pos = 0u64;
        let mut serial = None;
        let mut packets: Vec<Vec<u8>> = Vec::new();
        let mut partial: Vec<u8> = Vec::new();
        let mut codec = None;
        let mut total = 0usize;
        let mut header_end;
        let mut warnings: Vec<String> = Vec::new();
        loop {
            let page::Read { at, page, bytes: whole, crc_ok, skipped } = page::read_at(src, pos)?;
            if skipped > 0 {
                warnings.push(format!(
                    "{skipped} byte(s) of garbage at offset {pos} skipped (the next Ogg page is at {at})"
                ));
            }
            if !crc_ok {
                // ffmpeg and the other players do not check Ogg CRCs: read it, say so.
                warnings.push(format!("Ogg page at offset {at} fails its CRC check; read anyway"));
            }
            pos = at;
            pos += page.len();
            header_end = pos;
            let s = *serial.get_or_insert(page.serial);
            if page.serial != s {
                continue; // another multiplexed stream
            }
            let before = packets.len();
            let mut at = page.header_len;
            for &l in &page.lacing {
                partial.extend_from_slice(&whole[at..at + l as usize]);
                at += l as usize;
                total += l as usize;
                if l < 255 {
                    packets.push(std::mem::take(&mut partial));
                }
            }
            if total > MAX_HEADER_BYTES {
                return Err(PluginError::invalid_data("Ogg header packets are implausibly large"));
            }
            // FLAC: an audio frame where a header packet was due (a header page lost to
            // damage, skipped by the resync): the headers end before this page, and
            // the audio is served from here, as ffmpeg plays it.
            if codec == Some(Codec::Flac) && before >= 1 && packets.get(before).is_some_and(|p| is_flac_frame(p)) {
                let lost = header_packets(Codec::Flac, &packets[..before]).map_or(0, |n| n.saturating_sub(before));
                let page_start = pos - page.len();
                warnings.push(format!(
                    "an audio frame at offset {page_start} where header packets were due ({lost} lost to damage): \
                     the headers read before it are kept"
                ));
                packets.truncate(before);
                partial.clear();
                header_end = page_start;
                break;
            }
            if codec.is_none() {
                if let Some(first) = packets.first() {
                    codec = Some(codec_of(first).ok_or_else(|| {
                        PluginError::invalid_data("the Ogg stream is not Vorbis, Opus, FLAC or Speex")
                    })?);
                }
            }
            let needed = codec.and_then(|c| header_packets(c, &packets)).unwrap_or(usize::MAX);
            if packets.len() >= needed {
                break;
            }
            if pos >= len {
                return Err(PluginError::invalid_data("truncated: the file ends inside the Ogg header packets"));
            }
        }
        let codec = codec.expect("set once a packet is complete");
        // FLAC and Speex are served under the original's extension (`.oga`, `.ogg`, `.spx`).
        let (name, ext, prefix): (&str, &str, &[u8]) = match codec {
            Codec::Vorbis => ("vorbis", "ogg", b"\x03vorbis"),
            Codec::Opus => ("opus", "opus", b"OpusTags"),
            Codec::Flac => ("flac", "", b""),
            Codec::Speex => ("speex", "", b""),
        };
        let comment = match codec {
            // A FLAC stream's comment block may be lost to damage: no tags then.
            Codec::Flac => match packets.get(1).and_then(|p| flac_block(p)) {
                Some((4, _)) => packets[1].get(4..),
                _ => {
                    warnings.push("no VORBIS_COMMENT block after the identification header: no tags".into());
                    Some(&[0u8; 8][..])
                }
            },
            _ => packets[1].strip_prefix(prefix),
        }
        .ok_or_else(|| PluginError::invalid_data("the second Ogg packet is not a comment header"))?;
        // A comment packet shorter than its fields claim (damage, a buggy tagger) is read
        // as far as it goes, as mutagen and ffmpeg do; the fields lost are reported.
        let (parsed, cut) = vorbis::parse_lenient(comment)?;
        if cut {
            warnings.push(format!(
                "the comment header is cut short: {} field(s) read, the rest ignored",
                parsed.fields.len()
            ));
        }
        let (mut tags, pics) = vorbis::to_tags(&parsed);
        let mut pictures = Vec::new();
        for b64 in pics {
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(b64.trim())
                .ok()
                .and_then(|raw| picture::parse_flac_picture(&raw).ok());
            match decoded {
                Some(p) => pictures.push(p),
                // Keep an undecodable picture as data rather than losing it.
                None => tags.push(Tag::text("", "METADATA_BLOCK_PICTURE", &b64)),
            }
        }
        if codec == Codec::Flac {
            // PICTURE metadata blocks, each its own header packet.
            for p in packets.get(2..).unwrap_or_default() {
                if flac_block(p).is_some_and(|(t, _)| t == 6) {
                    match picture::parse_flac_picture(p.get(4..).unwrap_or_default()) {
                        Ok(pic) => pictures.push(pic),
                        Err(e) => warnings.push(format!("a damaged PICTURE block ignored: {e}")),
                    }
                }
            }
        }
        let mut extra = vec![KeyValue { key: "vendor".into(), value: parsed.vendor.as_str().into() }];
        if codec == Codec::Opus {
            let id = &packets[0];
            if id.len() >= 19 {
                let pre_skip = u16::from_le_bytes([id[10], id[11]]);
                let gain = i16::from_le_bytes([id[16], id[17]]);
                extra.push(KeyValue { key: "opus_pre_skip".into(), value: pre_skip.to_string().into() });
                extra.push(KeyValue { key: "opus_output_gain".into(), value: gain.to_string().into() });
            }
            let rest = comment.len() - parsed.consumed;
            if rest > 0 {
                extra.push(KeyValue { key: "opus_padding_bytes".into(), value: rest.to_string().into() });
            }
        }
        let audio_offset = header_end;
        let audio_len = len - audio_offset;
        if audio_len == 0 {
            return Err(PluginError::invalid_data("truncated: no audio pages after the headers"));
        }
        // Audio properties from the identification header (rate, channels; FLAC's
        // STREAMINFO) and the granule position of the stream's last page (duration),
        // which is what a demuxer computes too: no audio page is decoded, and damage deep
        // in the audio (a page failing its CRC, which ffmpeg plays through) vetoes nothing.
        let props = header_props(src, codec, &packets[0], serial.unwrap_or(0), audio_offset)
            .ok_or_else(|| PluginError::invalid_data("no audio page with a granule position after the headers"))?;
        extra.extend(warnings.into_iter().map(|w| KeyValue { key: "warning".into(), value: w.into() }));
        Ok(TrackInfo {
            format: format!("ogg-{name}").into(),
            extension: ext.into(),
            tags: tags.into(),
            pictures: pictures.into(),
            props,
            audio_offset,
            audio_len,
            regions: vec![Region { kind: "ogg-headers".into(), offset: 0, len: header_end }].into(),
            extra: extra.into(),
        })
    }

    fn plan(&self, src: &Source, req: &PlanRequest) -> PluginResult<Plan> {
        synth::synthesize(src, req)
    }

    fn same_audio(&self, a: &Source, a_info: &TrackInfo, b: &Source, b_info: &TrackInfo) -> PluginResult<bool> {
        page::same_pages(a, (a_info.audio_offset, a_info.audio_len), b, (b_info.audio_offset, b_info.audio_len))
    }
}

/// Audio properties from the identification header (rate, channels) and the granule
/// position of the stream's last page (duration); `None` if there is no audio page.
fn header_props(src: &Source, codec: Codec, id: &[u8], serial: u32, audio_offset: u64) -> Option<AudioProps> {
    let mut bits = 0;
    let (rate, channels, pre_skip) = match codec {
        Codec::Vorbis if id.len() >= 16 => (u32::from_le_bytes(id[12..16].try_into().ok()?), u32::from(id[11]), 0u64),
        // Opus always decodes at 48 kHz; the header's rate is the input's.
        Codec::Opus if id.len() >= 12 => (48_000, u32::from(id[9]), u64::from(u16::from_le_bytes([id[10], id[11]]))),
        // `\x7fFLAC`, version, count, `fLaC`, then the STREAMINFO block (4-byte header).
        Codec::Flac if id.len() >= 13 + 4 + 18 => {
            let si = &id[17..];
            let rate = (u32::from(si[10]) << 12) | (u32::from(si[11]) << 4) | (u32::from(si[12]) >> 4);
            bits = (u32::from(si[12] & 1) << 4 | u32::from(si[13]) >> 4) + 1;
            (rate, u32::from((si[12] >> 1) & 7) + 1, 0)
        }
        Codec::Speex if id.len() >= 52 => (
            u32::from_le_bytes(id[36..40].try_into().ok()?),
            u32::from_le_bytes(id[48..52].try_into().ok()?).min(255),
            0,
        ),
        _ => return None,
    };
    if rate == 0 {
        return None;
    }
    // The last page of our stream: search back from the end, a window at a time.
    let len = src.len();
    let mut end = len;
    let mut granule = None;
    while end > audio_offset && granule.is_none() {
        let start = end.saturating_sub(64 * 1024).max(audio_offset);
        let buf = src.read_vec(start, (end - start) as usize).ok()?;
        let mut i = buf.len().saturating_sub(27);
        loop {
            if buf[i..].starts_with(b"OggS") && buf.len() - i >= 27 {
                let s = u32::from_le_bytes(buf[i + 14..i + 18].try_into().ok()?);
                let g = u64::from_le_bytes(buf[i + 6..i + 14].try_into().ok()?);
                if s == serial && g != u64::MAX {
                    granule = Some(g);
                    break;
                }
            }
            if i == 0 {
                break;
            }
            i -= 1;
        }
        // Overlap by a header so a page split across windows is found.
        end = if start == audio_offset { audio_offset } else { start + 27 };
    }
    let samples = granule?.saturating_sub(pre_skip);
    let duration_ms = samples.saturating_mul(1000) / u64::from(rate);
    let audio_len = len - audio_offset;
    let bitrate =
        audio_len.saturating_mul(8000).checked_div(duration_ms).map_or(0, |b| b.min(u64::from(u32::MAX)) as u32);
    Some(AudioProps {
        codec: match codec {
            Codec::Vorbis => "vorbis",
            Codec::Opus => "opus",
            Codec::Flac => "flac",
            Codec::Speex => "speex",
        }
        .into(),
        duration_ms,
        sample_rate: rate,
        channels,
        bits_per_sample: bits,
        bitrate,
    })
}

musefs_plugin_api::export_plugin! {
    name: "ogg",
    version: env!("CARGO_PKG_VERSION"),
    description: "Ogg Vorbis, Opus, FLAC and Speex: comment headers, METADATA_BLOCK_PICTURE, FLAC PICTURE blocks",
    format: |_config: &str| Ok(Ogg),
}

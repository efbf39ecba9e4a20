//! musefs format plugin `flac`.
//!
//! Reads the metadata blocks that follow the `fLaC` marker (an ID3v2 tag glued in front
//! of the marker, as some taggers write, is recognised and recorded as a region), the
//! Vorbis comment and every PICTURE block, and an ID3v1 trailer if one was appended.
//! Only the metadata blocks are read: the audio frames are never touched.

use musefs_format_util::{picture, props, vorbis};
use musefs_plugin_api::{Format, KeyValue, PluginError, PluginResult, Region, Source, Tag, TrackInfo};

/// FLAC metadata block types.
mod block {
    pub const STREAMINFO: u8 = 0;
    pub const VORBIS_COMMENT: u8 = 4;
    pub const PICTURE: u8 = 6;
}

/// Largest metadata block we accept (the format allows 16 MiB).
const MAX_BLOCK: u32 = 16 * 1024 * 1024;

/// The FLAC format.
pub struct Flac;

/// The size of an ID3v2 tag at the start of `head`, if there is one.
pub fn id3v2_len(head: &[u8]) -> Option<u64> {
    if head.len() < 10 || &head[..3] != b"ID3" || head[3] == 0xFF || head[4] == 0xFF {
        return None;
    }
    let s = &head[6..10];
    if s.iter().any(|b| b & 0x80 != 0) {
        return None;
    }
    let size = (u64::from(s[0]) << 21) | (u64::from(s[1]) << 14) | (u64::from(s[2]) << 7) | u64::from(s[3]);
    let footer = if head[3] == 4 && head[5] & 0x10 != 0 { 10 } else { 0 };
    Some(10 + size + footer)
}

impl Format for Flac {
    fn extensions(&self) -> Vec<String> {
        vec!["flac".into()]
    }

    fn probe(&self, head: &[u8], extension: &str) -> u32 {
        let start = id3v2_len(head).unwrap_or(0) as usize;
        if head.get(start..start + 4) == Some(b"fLaC") {
            100
        } else if extension == "flac" && start > 0 && start >= head.len() {
            // A huge ID3 prefix hides the marker from the probe window.
            50
        } else {
            0
        }
    }

    fn read(&self, src: &Source) -> PluginResult<TrackInfo> {
        let len = src.len();
        let mut regions = Vec::new();
        let head = src.read_vec(0, 10)?;
        let mut pos = 0u64;
        if let Some(n) = id3v2_len(&head) {
            regions.push(Region { kind: "id3v2".into(), offset: 0, len: n });
            pos = n;
        }
        let mut marker = [0u8; 4];
        src.read_exact_at(pos, &mut marker)
            .map_err(|_| PluginError::invalid_data("file ends before the fLaC marker"))?;
        if &marker != b"fLaC" {
            return Err(PluginError::invalid_data(format!("no fLaC marker at offset {pos}: not a FLAC file")));
        }
        let meta_start = pos;
        pos += 4;
        let mut tags = Vec::new();
        let mut pictures = Vec::new();
        let mut extra = Vec::new();
        let mut saw_streaminfo = false;
        loop {
            let mut h = [0u8; 4];
            src.read_exact_at(pos, &mut h).map_err(|_| {
                PluginError::invalid_data(format!("truncated: metadata block header at offset {pos} is cut off"))
            })?;
            let last = h[0] & 0x80 != 0;
            let kind = h[0] & 0x7F;
            let size = u32::from_be_bytes([0, h[1], h[2], h[3]]);
            let body_at = pos + 4;
            if body_at + u64::from(size) > len {
                return Err(PluginError::invalid_data(format!(
                    "truncated: metadata block of type {kind} at offset {pos} claims {size} bytes past the end of the file"
                )));
            }
            if kind == 127 || size > MAX_BLOCK {
                return Err(PluginError::invalid_data(format!("invalid metadata block (type {kind}) at offset {pos}")));
            }
            if !saw_streaminfo && kind != block::STREAMINFO {
                return Err(PluginError::invalid_data("the first metadata block is not STREAMINFO"));
            }
            match kind {
                block::STREAMINFO => saw_streaminfo = true,
                block::VORBIS_COMMENT => {
                    let body = src.read_vec(body_at, size as usize)?;
                    let c = vorbis::parse(&body)?;
                    let (t, pics) = vorbis::to_tags(&c);
                    tags.extend(t);
                    extra.push(KeyValue { key: "vendor".into(), value: c.vendor.as_str().into() });
                    // A METADATA_BLOCK_PICTURE comment in FLAC is unusual but valid data.
                    for p in pics {
                        tags.push(Tag::text("", "METADATA_BLOCK_PICTURE", &p));
                    }
                }
                block::PICTURE => {
                    let body = src.read_vec(body_at, size as usize)?;
                    pictures.push(picture::parse_flac_picture(&body)?);
                }
                _ => {}
            }
            regions.push(Region { kind: format!("flac-block-{kind}").into(), offset: pos, len: 4 + u64::from(size) });
            pos = body_at + u64::from(size);
            if last {
                break;
            }
        }
        regions.push(Region { kind: "flac-metadata".into(), offset: meta_start, len: pos - meta_start });
        let audio_offset = pos;
        let mut audio_end = len;
        if len >= audio_offset + 128 {
            let tail = src.read_vec(len - 128, 3)?;
            if tail == b"TAG" {
                audio_end = len - 128;
                regions.push(Region { kind: "id3v1".into(), offset: audio_end, len: 128 });
            }
        }
        let mut sync = [0u8; 2];
        src.read_exact_at(audio_offset, &mut sync)
            .map_err(|_| PluginError::invalid_data("truncated: no audio frames after the metadata"))?;
        if sync[0] != 0xFF || sync[1] & 0xFE != 0xF8 {
            return Err(PluginError::invalid_data(format!(
                "no FLAC frame sync at offset {audio_offset} after the metadata"
            )));
        }
        let audio_len = audio_end - audio_offset;
        let props = props::audio_props(src, "flac", "flac", audio_len)?;
        Ok(TrackInfo {
            format: "flac".into(),
            extension: "flac".into(),
            tags: tags.into(),
            pictures: pictures.into(),
            props,
            audio_offset,
            audio_len,
            regions: regions.into(),
            extra: extra.into(),
        })
    }
}

musefs_plugin_api::export_plugin! {
    name: "flac",
    version: env!("CARGO_PKG_VERSION"),
    description: "FLAC: Vorbis comments, pictures, ID3v2 prefix and ID3v1 trailer",
    format: |_config: &str| Ok(Flac),
}

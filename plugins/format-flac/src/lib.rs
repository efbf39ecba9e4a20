//! musefs format plugin `flac`.
//!
//! Reads the metadata blocks that follow the `fLaC` marker (an ID3v2 tag glued in front
//! of the marker, as some taggers write, is recognised and recorded as a region), the
//! Vorbis comment and every PICTURE block, and an ID3v1 trailer if one was appended.
//! Only the metadata blocks are read: the audio frames are never touched.
//!
//! ## Synthesis
//! The served file is `fLaC`, then STREAMINFO and every SEEKTABLE, CUESHEET, APPLICATION
//! (and unknown) block *verbatim* (a fresh 4-byte header, the body as an origin range),
//! then a VORBIS_COMMENT and PICTURE blocks built from the catalog, then PADDING, then the
//! audio frames as one origin range. An ID3v2 tag glued in front of `fLaC` and an ID3v1
//! trailer are dropped. Padding keeps the metadata exactly as large as the original's when
//! the new blocks fit (so small edits do not change the file size), otherwise rounds it up
//! to a multiple of 4 KiB with at least `min_padding` spare (option, default 1024).

use musefs_format_util::{id3, options::Options, padding_for, picture, props, vorbis};
use musefs_plugin_api::{
    Format, KeyValue, Plan, PlanRequest, PluginError, PluginResult, Region, Segment, Source, Tag, TrackInfo,
};

/// FLAC metadata block types.
mod block {
    pub const STREAMINFO: u8 = 0;
    pub const PADDING: u8 = 1;
    pub const VORBIS_COMMENT: u8 = 4;
    pub const PICTURE: u8 = 6;
}

/// Largest metadata block we accept (the format allows 16 MiB).
const MAX_BLOCK: u32 = 16 * 1024 * 1024;

/// The FLAC format.
pub struct Flac;

impl Format for Flac {
    fn check_options(&self, options: &str) -> PluginResult<()> {
        min_padding(options).map(|_| ())
    }

    fn extensions(&self) -> Vec<String> {
        vec!["flac".into()]
    }

    fn probe(&self, head: &[u8], extension: &str) -> u32 {
        let start = id3::skip_len(head).unwrap_or(0) as usize;
        if head.get(start..start + 4) == Some(b"fLaC") {
            100
        } else if start > 0 && head.get(start..).is_some_and(|h| h.windows(4).any(|w| w == b"fLaC")) {
            // A damaged ID3 prefix (its size wrong): the marker a little further on.
            90
        } else if extension == "flac" && head.windows(4).any(|w| w == b"fLaC") {
            // A damaged ID3 header (not recognised as one, or its size too large) before
            // the marker.
            80
        } else if extension == "flac" && head.get(start + 4..start + 8).is_some_and(is_streaminfo_header) {
            // A damaged marker before an intact STREAMINFO header (see `read`).
            70
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
        if let Some(n) = id3::skip_len(&head) {
            regions.push(Region { kind: "id3v2".into(), offset: 0, len: n });
            pos = n;
        }
        let mut marker = [0u8; 4];
        if pos + 4 > len {
            // An ID3 size claiming more than the file: searched for from the start below.
            if len < 4 {
                return Err(PluginError::invalid_data("file ends before the fLaC marker"));
            }
        } else {
            src.read_exact_at(pos, &mut marker)?;
        }
        let mut early_warnings = Vec::new();
        if &marker != b"fLaC" {
            // A damaged ID3 prefix (its size wrong, bytes inserted): the marker within
            // the next 64 KiB, as ffmpeg finds it.
            let window = if pos > 0 { src.read_vec(pos, SYNC_SEARCH as usize)? } else { Vec::new() };
            let mut found = window.windows(4).position(|w| w == b"fLaC");
            if found.is_none() {
                // An ID3 header damaged past recognition, or claiming more than it has:
                // the marker searched from the start, as ffmpeg does.
                let from_start = src.read_vec(0, (pos + SYNC_SEARCH) as usize)?;
                if let Some(k) = from_start.windows(4).position(|w| w == b"fLaC") {
                    pos = 0;
                    found = Some(k);
                }
            }
            match found {
                Some(k) => {
                    early_warnings
                        .push(format!("{k} byte(s) before the fLaC marker at offset {} skipped", pos + k as u64));
                    pos += k as u64;
                }
                // A damaged marker (a flipped bit) in front of an intact STREAMINFO block
                // header: ffmpeg plays such a file (it reads the frames without the
                // marker); the metadata is read all the same, and a served file gets a
                // whole marker.
                None if streaminfo_follows(src, pos)? => early_warnings.push(format!(
                    "the fLaC marker at offset {pos} is damaged (`{}`); read all the same",
                    marker.escape_ascii()
                )),
                None => {
                    return Err(PluginError::invalid_data(format!("no fLaC marker at offset {pos}: not a FLAC file")))
                }
            }
        }
        let meta_start = pos;
        pos += 4;
        let mut tags = Vec::new();
        let mut pictures = Vec::new();
        let mut extra = Vec::new();
        let mut saw_streaminfo = false;
        let mut streaminfo = Vec::new();
        let mut warnings = early_warnings;
        let mut damaged_meta = false;
        loop {
            let mut h = [0u8; 4];
            src.read_exact_at(pos, &mut h).map_err(|_| {
                PluginError::invalid_data(format!("truncated: metadata block header at offset {pos} is cut off"))
            })?;
            let last = h[0] & 0x80 != 0;
            let kind = h[0] & 0x7F;
            let size = u32::from_be_bytes([0, h[1], h[2], h[3]]);
            let body_at = pos + 4;
            let past_end = body_at + u64::from(size) > len;
            if past_end || kind == 127 || size > MAX_BLOCK {
                if saw_streaminfo {
                    // A damaged block header after STREAMINFO: the metadata ends here and
                    // the audio starts at the first valid frame after it (ffmpeg plays
                    // such files). The blocks read so far are kept.
                    warnings.push(format!(
                        "metadata block header at offset {pos} is damaged (type {kind}, {size} bytes): the metadata \
                         is read up to it"
                    ));
                    damaged_meta = true;
                    break;
                }
                if past_end {
                    return Err(PluginError::invalid_data(format!(
                        "truncated: metadata block of type {kind} at offset {pos} claims {size} bytes past the end of the file"
                    )));
                }
                return Err(PluginError::invalid_data(format!("invalid metadata block (type {kind}) at offset {pos}")));
            }
            if !saw_streaminfo && kind != block::STREAMINFO {
                return Err(PluginError::invalid_data("the first metadata block is not STREAMINFO"));
            }
            match kind {
                block::STREAMINFO => {
                    saw_streaminfo = true;
                    streaminfo = src.read_vec(body_at, (size as usize).min(34))?;
                }
                block::VORBIS_COMMENT => {
                    let body = src.read_vec(body_at, size as usize)?;
                    // A comment list longer than its block (a tagger bug): keep what is
                    // there, as mutagen and ffmpeg do.
                    let (c, cut) = vorbis::parse_lenient(&body)?;
                    if cut {
                        warnings.push(format!(
                            "the VORBIS_COMMENT block at offset {pos} is shorter than its comment list claims: \
                             kept the {} whole comment(s)",
                            c.fields.len()
                        ));
                    }
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
                    // A damaged picture block (its inner lengths wrong) loses the
                    // picture, not the file: players skip it too.
                    match picture::parse_flac_picture(&body) {
                        Ok(p) => pictures.push(p),
                        Err(e) => warnings.push(format!("the PICTURE block at offset {pos} is damaged ({e}): skipped")),
                    }
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
            let tail = src.read_vec(len - 128, 128)?;
            if musefs_format_util::id3::is_v1(&tail) {
                audio_end = len - 128;
                regions.push(Region { kind: "id3v1".into(), offset: audio_end, len: 128 });
            }
        }
        // After damaged metadata the first frame may lie past what remains of a big block.
        let search = if damaged_meta { DAMAGED_SYNC_SEARCH } else { SYNC_SEARCH };
        let window = src.read_vec(audio_offset, search.min(audio_end.saturating_sub(audio_offset)) as usize)?;
        if window.len() < 2 {
            return Err(PluginError::invalid_data("truncated: no audio frames after the metadata"));
        }
        // Garbage between the metadata and the first frame ("overwritten metadata"):
        // the audio starts at the first valid frame header, as ffmpeg finds it.
        let skip = first_frame(&window).ok_or_else(|| {
            PluginError::invalid_data(format!(
                "no FLAC frame within {} KiB after the metadata (offset {audio_offset})",
                search / 1024
            ))
        })?;
        if skip > 0 {
            regions.push(Region { kind: "junk".into(), offset: audio_offset, len: skip as u64 });
            warnings.push(format!("{skip} byte(s) of garbage before the first frame were skipped"));
        }
        let audio_offset = audio_offset + skip as u64;
        let audio_len = audio_end - audio_offset;
        // The properties probe never vetoes a file (symphonia refuses, e.g., cue sheets
        // that break CD-DA rules): STREAMINFO says the same.
        let props = match props::audio_props(src, "flac", "flac", audio_len) {
            Ok(p) => p,
            Err(e) => {
                musefs_plugin_api::host::debug(format!("audio properties from STREAMINFO (the probe said: {e})"));
                streaminfo_props(&streaminfo, audio_len)
                    .ok_or_else(|| PluginError::invalid_data(format!("no usable STREAMINFO ({e})")))?
            }
        };
        extra.extend(warnings.into_iter().map(|w| KeyValue { key: "warning".into(), value: w.into() }));
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

    fn plan(&self, src: &Source, req: &PlanRequest) -> PluginResult<Plan> {
        synthesize(src.len(), req)
    }
}

/// Whether a STREAMINFO block header (type 0, 34 bytes) follows the four bytes at `pos`
/// where the `fLaC` marker belongs.
fn streaminfo_follows(src: &Source, pos: u64) -> PluginResult<bool> {
    if pos + 8 + 34 > src.len() {
        return Ok(false);
    }
    Ok(is_streaminfo_header(&src.read_vec(pos + 4, 4)?))
}

/// Whether `h` (4 bytes) is a STREAMINFO block header: type 0 (last or not), 34 bytes.
fn is_streaminfo_header(h: &[u8]) -> bool {
    h.len() == 4 && h[0] & 0x7F == block::STREAMINFO && h[1..4] == [0, 0, 34]
}

/// How far after the metadata the first frame is looked for.
const SYNC_SEARCH: u64 = 64 * 1024;
/// How far the first frame is looked for after a damaged metadata block header.
const DAMAGED_SYNC_SEARCH: u64 = 16 * 1024 * 1024;

/// The CRC-8 of FLAC frame headers (polynomial 0x07).
fn crc8(bytes: &[u8]) -> u8 {
    let mut c = 0u8;
    for &b in bytes {
        c ^= b;
        for _ in 0..8 {
            c = if c & 0x80 != 0 { (c << 1) ^ 0x07 } else { c << 1 };
        }
    }
    c
}

/// The length of a valid frame header at the start of `b` (sync code, no reserved
/// values, the UTF-8 coded number, the optional fields and a matching CRC-8).
fn frame_header_len(b: &[u8]) -> Option<usize> {
    if b.len() < 6 || b[0] != 0xFF || b[1] & 0xFE != 0xF8 {
        return None;
    }
    let (block, rate) = (b[2] >> 4, b[2] & 0x0F);
    let (chan, bits) = (b[3] >> 4, (b[3] >> 1) & 0x07);
    if block == 0 || rate == 0x0F || chan > 10 || bits == 3 || bits == 7 || b[3] & 1 != 0 {
        return None;
    }
    // The frame or sample number, UTF-8 style: 1 to 7 bytes.
    let lead = b[4];
    let extra = match lead.leading_ones() {
        0 => 0,
        n @ 2..=7 => n as usize - 1,
        _ => return None,
    };
    let mut n = 5 + extra;
    if b.get(5..n)?.iter().any(|c| c & 0xC0 != 0x80) {
        return None;
    }
    n += match block {
        6 => 1,
        7 => 2,
        _ => 0,
    };
    n += match rate {
        12 => 1,
        13 | 14 => 2,
        _ => 0,
    };
    (crc8(b.get(..n)?) == *b.get(n)?).then_some(n + 1)
}

/// The offset of the first valid frame header in `w`.
fn first_frame(w: &[u8]) -> Option<usize> {
    (0..w.len().saturating_sub(1)).find(|&i| frame_header_len(&w[i..]).is_some())
}

/// Audio properties from a STREAMINFO body.
fn streaminfo_props(si: &[u8], audio_len: u64) -> Option<musefs_plugin_api::AudioProps> {
    if si.len() < 18 {
        return None;
    }
    let rate = (u32::from(si[10]) << 12) | (u32::from(si[11]) << 4) | (u32::from(si[12]) >> 4);
    let channels = u32::from((si[12] >> 1) & 0x07) + 1;
    let bits = ((u32::from(si[12] & 1) << 4) | (u32::from(si[13]) >> 4)) + 1;
    let samples = (u64::from(si[13] & 0x0F) << 32) | u64::from(u32::from_be_bytes([si[14], si[15], si[16], si[17]]));
    if rate == 0 {
        return None;
    }
    let duration_ms = samples * 1000 / u64::from(rate);
    let bitrate = (audio_len * 8 * 1000).checked_div(duration_ms).map_or(0, |b| b.min(u64::from(u32::MAX)) as u32);
    Some(musefs_plugin_api::AudioProps {
        codec: "flac".into(),
        duration_ms,
        sample_rate: rate,
        channels,
        bits_per_sample: bits,
        bitrate,
    })
}

fn block_header(kind: u8, last: bool, len: usize) -> PluginResult<[u8; 4]> {
    if len >= 1 << 24 {
        return Err(PluginError::invalid_input(format!(
            "a FLAC metadata block of type {kind} would be {len} bytes: the limit is 16 MiB"
        )));
    }
    let n = (len as u32).to_be_bytes();
    Ok([kind | if last { 0x80 } else { 0 }, n[1], n[2], n[3]])
}

/// The `min_padding` of `[format.flac]` options (the only one).
///
/// # Errors
/// `INVALID_INPUT` naming a bad or unknown option.
fn min_padding(options: &str) -> PluginResult<u64> {
    Options::parse(options, "flac", &["min_padding"])?.uint("min_padding", 1 << 20, 1024)
}

/// The synthesis layout (see the crate docs).
///
/// # Errors
/// `INVALID_DATA` if the catalog's regions do not describe a FLAC file; `INVALID_INPUT`
/// for a bad option or a block over the format's 16 MiB limit.
pub fn synthesize(len: u64, req: &PlanRequest) -> PluginResult<Plan> {
    let min_pad = min_padding(&req.options)?;
    let info = &req.info;
    let meta =
        info.regions.iter().find(|r| r.kind.as_str() == "flac-metadata").ok_or_else(|| {
            PluginError::invalid_data("the catalog has no FLAC metadata region for this file: rescan it")
        })?;
    let mut segs = vec![Segment::literal(b"fLaC".to_vec())];
    let mut content = 4u64;
    let mut saw_streaminfo = false;
    for r in info.regions.iter() {
        let Some(kind) = r.kind.as_str().strip_prefix("flac-block-").and_then(|k| k.parse::<u8>().ok()) else {
            continue;
        };
        if matches!(kind, block::PADDING | block::VORBIS_COMMENT | block::PICTURE) {
            continue;
        }
        if r.len < 4 || r.offset + r.len > len {
            return Err(PluginError::invalid_data(format!("block region at {} is out of range: rescan", r.offset)));
        }
        saw_streaminfo |= kind == block::STREAMINFO;
        segs.push(Segment::literal(block_header(kind, false, (r.len - 4) as usize)?.to_vec()));
        segs.push(Segment::origin(r.offset + 4, r.len - 4));
        content += r.len;
    }
    if !saw_streaminfo {
        return Err(PluginError::invalid_data("the catalog has no STREAMINFO region for this file: rescan it"));
    }
    let vendor = info.extra.iter().find(|kv| kv.key.as_str() == "vendor").map_or("musefs", |kv| kv.value.as_str());
    let comment = vorbis::write(vendor, &vorbis::fields_from_tags(&req.tags));
    let mut meta_bytes = Vec::with_capacity(comment.len() + 4);
    meta_bytes.extend(block_header(block::VORBIS_COMMENT, false, comment.len())?);
    meta_bytes.extend(comment);
    for p in req.pictures.iter() {
        let body = picture::write_flac_picture(p);
        meta_bytes.extend(block_header(block::PICTURE, false, body.len())?);
        meta_bytes.extend(body);
    }
    content += meta_bytes.len() as u64;
    let pad = padding_for(meta.len, content, 4, min_pad).min((1 << 24) - 1);
    meta_bytes.extend(block_header(block::PADDING, true, pad as usize)?);
    meta_bytes.resize(meta_bytes.len() + pad as usize, 0);
    segs.push(Segment::literal(meta_bytes));
    if info.audio_offset + info.audio_len > len || info.audio_len == 0 {
        return Err(PluginError::invalid_data("the catalog's audio range is outside the file: rescan it"));
    }
    segs.push(Segment::origin(info.audio_offset, info.audio_len));
    Ok(Plan { segments: segs.into() })
}

musefs_plugin_api::export_plugin! {
    name: "flac",
    version: env!("CARGO_PKG_VERSION"),
    description: "FLAC: Vorbis comments, pictures, ID3v2 prefix and ID3v1 trailer",
    format: |_config: &str| Ok(Flac),
}

//! musefs format plugin `riff`: WAV (RIFF, RF64/BW64) and AIFF/AIFC.
//!
//! ```text
//! RIFF size WAVE | fmt  | [LIST INFO] | [id3 ] | data | [other chunks]
//! FORM size AIFF | COMM | [NAME AUTH ANNO (c) ] | [ID3 ] | SSND | [other chunks]
//! ```
//!
//! ## Read
//! Tags from the `id3 `/`ID3 ` chunk (a whole ID3v2 tag: every frame, pictures) and the
//! text items (`LIST`/`INFO` in WAV, `NAME`/`AUTH`/`ANNO`/`(c) ` in AIFF). When both carry
//! a field, the ID3 value is the field and the text item is kept under its native name
//! only (`INFO:INAM`), so templates see one value. Audio properties from `fmt ` / `COMM`;
//! the audio range is the `data` chunk's body, or the samples of `SSND` after its
//! offset/block-size header. What the chunk walk tolerates is listed in [`chunks`].
//!
//! ## Synthesis
//! Every chunk is served as it is (an origin range) except the tag chunks, which are
//! left out wherever they were, and the header, rebuilt with the new form size. New
//! tag chunks go just before the audio chunk: the text items for the fields they can
//! hold, then, when the original had one or a field or picture would otherwise be lost,
//! an ID3v2 chunk (`id3v2_version = "2.4"` by default, `"2.3"`
//! selectable; padded like MP3's tag, `min_padding` default 1024). A field with an ID3
//! value is written to the text items too; an ID3 chunk musefs adds to a file that had
//! none carries every field, one the file had keeps its own fields. An RF64 file gets
//! its `ds64` form size patched; an audio chunk whose size was unset or too large gets
//! a header with its real size. The audio bytes are never read.

pub mod chunks;
pub mod text;

use chunks::{walk, Container, Layout};
use musefs_format_util::id3write::{self, Version};
use musefs_format_util::{id3v2, options::Options, padding_for};
use musefs_plugin_api::{
    AudioProps, Format, KeyValue, Picture, Plan, PlanRequest, PluginError, PluginResult, Region, Segment, Source, Tag,
    TrackInfo,
};

/// The largest tag chunk read (an ID3 tag with several large covers fits well within).
const MAX_TAG: u64 = 64 * 1024 * 1024;

/// The WAV/AIFF format.
pub struct Riff;

fn is_id3(id: &[u8; 4]) -> bool {
    id.eq_ignore_ascii_case(b"id3 ")
}

/// Whether a chunk is one of the tag chunks synthesis replaces.
fn is_tag_chunk(layout: &Layout, c: &chunks::Chunk) -> bool {
    is_id3(&c.id)
        || if layout.container.is_wav() {
            &c.id == b"LIST" && c.list_type == Some(*b"INFO")
        } else {
            text::AIFF_KEYS.iter().any(|(id, _)| **id == c.id)
        }
}

fn le16(b: &[u8], i: usize) -> u16 {
    b.get(i..i + 2).map_or(0, |x| u16::from_le_bytes([x[0], x[1]]))
}

fn le32(b: &[u8], i: usize) -> u32 {
    b.get(i..i + 4).map_or(0, |x| u32::from_le_bytes([x[0], x[1], x[2], x[3]]))
}

fn be16(b: &[u8], i: usize) -> u16 {
    b.get(i..i + 2).map_or(0, |x| u16::from_be_bytes([x[0], x[1]]))
}

fn be32(b: &[u8], i: usize) -> u32 {
    b.get(i..i + 4).map_or(0, |x| u32::from_be_bytes([x[0], x[1], x[2], x[3]]))
}

/// An 80-bit IEEE 754 extended float (AIFF's sample rate) as an integer, 0 if invalid.
pub fn ext80(b: &[u8]) -> u32 {
    if b.len() < 10 {
        return 0;
    }
    let exp = i32::from(u16::from_be_bytes([b[0], b[1]]) & 0x7fff);
    let mant = u64::from_be_bytes(b[2..10].try_into().expect("8"));
    if b[0] & 0x80 != 0 || mant == 0 {
        return 0;
    }
    let v = mant as f64 * 2f64.powi(exp - 16383 - 63);
    if v.is_finite() && v >= 0.0 && v <= f64::from(u32::MAX) {
        v.round() as u32
    } else {
        0
    }
}

/// The WAV codec name for a `fmt ` format tag.
fn wav_codec(tag: u16) -> String {
    match tag {
        1 => "pcm".into(),
        3 => "pcm-float".into(),
        2 => "adpcm-ms".into(),
        6 => "alaw".into(),
        7 => "mulaw".into(),
        0x11 => "adpcm-ima".into(),
        0x50 | 0x55 => "mp3".into(),
        t => format!("wav-0x{t:04x}"),
    }
}

/// The AIFC codec name for a compression type.
fn aifc_codec(kind: &[u8]) -> String {
    match kind {
        b"NONE" | b"twos" | b"sowt" | b"raw " | b"in24" | b"in32" | b"23ni" | b"42ni" => "pcm".into(),
        b"fl32" | b"FL32" | b"fl64" | b"FL64" => "pcm-float".into(),
        b"ulaw" | b"ULAW" => "mulaw".into(),
        b"alaw" | b"ALAW" => "alaw".into(),
        b"ima4" => "adpcm-ima".into(),
        k => String::from_utf8_lossy(k).trim().to_lowercase(),
    }
}

/// Audio properties, audio offset and length.
fn audio(src: &Source, layout: &Layout) -> PluginResult<(AudioProps, u64, u64)> {
    let a = layout.audio().ok_or_else(|| {
        PluginError::invalid_data(format!(
            "no {} chunk: no audio",
            String::from_utf8_lossy(layout.container.audio_id()).trim()
        ))
    })?;
    let mut p = AudioProps::default();
    if layout.container.is_wav() {
        let fmt = layout
            .find(b"fmt ")
            .ok_or_else(|| PluginError::invalid_data("no fmt chunk: the audio format is unknown"))?;
        let f = src.read_vec(fmt.body(), fmt.len.min(40) as usize)?;
        if f.len() < 16 {
            return Err(PluginError::invalid_data(format!("the fmt chunk is too short ({} bytes)", f.len())));
        }
        let mut tag = le16(&f, 0);
        if tag == 0xFFFE && f.len() >= 26 {
            tag = le16(&f, 24); // WAVE_FORMAT_EXTENSIBLE: the sub-format GUID's first two bytes
        }
        p.codec = wav_codec(tag).into();
        p.channels = u32::from(le16(&f, 2));
        p.sample_rate = le32(&f, 4);
        let byte_rate = u64::from(le32(&f, 8));
        p.bits_per_sample = if matches!(tag, 1 | 3) { u32::from(le16(&f, 14)) } else { 0 };
        p.bitrate = (byte_rate * 8).min(u64::from(u32::MAX)) as u32;
        p.duration_ms = (a.len * 1000).checked_div(byte_rate).unwrap_or(0);
        if p.sample_rate == 0 || p.channels == 0 {
            return Err(PluginError::invalid_data("the fmt chunk has no sample rate or no channels"));
        }
        Ok((p, a.body(), a.len))
    } else {
        let comm = layout
            .find(b"COMM")
            .ok_or_else(|| PluginError::invalid_data("no COMM chunk: the audio format is unknown"))?;
        let c = src.read_vec(comm.body(), comm.len.min(64) as usize)?;
        if c.len() < 18 {
            return Err(PluginError::invalid_data(format!("the COMM chunk is too short ({} bytes)", c.len())));
        }
        p.channels = u32::from(be16(&c, 0));
        let frames = u64::from(be32(&c, 2));
        p.bits_per_sample = u32::from(be16(&c, 6));
        p.sample_rate = ext80(&c[8..18]);
        p.codec = if layout.container == Container::Aifc && c.len() >= 22 {
            aifc_codec(&c[18..22]).into()
        } else {
            "pcm".into()
        };
        if p.codec.as_str() != "pcm" && p.codec.as_str() != "pcm-float" {
            p.bits_per_sample = 0;
        }
        if p.sample_rate == 0 || p.channels == 0 {
            return Err(PluginError::invalid_data("the COMM chunk has no sample rate or no channels"));
        }
        p.duration_ms = frames * 1000 / u64::from(p.sample_rate);
        // SSND: offset, block size, then the samples (from `offset` on).
        let h = src.read_vec(a.body(), 8)?;
        let skip = 8 + u64::from(be32(&h, 0));
        if h.len() < 8 || skip > a.len {
            return Err(PluginError::invalid_data("the SSND chunk is too short for its offset"));
        }
        let len = a.len - skip;
        p.bitrate = (len * 8000).checked_div(p.duration_ms).map_or(0, |b| b.min(u64::from(u32::MAX)) as u32);
        Ok((p, a.body() + skip, len))
    }
}

/// The tags and pictures of a walked file, and what was tolerated.
fn tags(src: &Source, layout: &Layout) -> PluginResult<(Vec<Tag>, Vec<Picture>, Vec<String>)> {
    let (prefix, keys): (&str, &[(&[u8; 4], &str)]) =
        if layout.container.is_wav() { ("INFO", &text::INFO_KEYS) } else { ("AIFF", &text::AIFF_KEYS) };
    let mut id3_tags = Vec::new();
    let mut pictures = Vec::new();
    let mut texts = Vec::new();
    let mut warnings = Vec::new();
    for c in &layout.chunks {
        if is_id3(&c.id) {
            if c.len > MAX_TAG {
                warnings.push(format!("an ID3 chunk of {} bytes is implausibly large: ignored", c.len));
                continue;
            }
            let body = src.read_vec(c.body(), c.len as usize)?;
            match id3v2::header_len(&body).map(|_| id3v2::parse(&body)) {
                Some(Ok(t)) => {
                    id3_tags.extend(t.tags);
                    pictures.extend(t.pictures);
                }
                Some(Err(e)) => warnings.push(format!("the ID3 chunk is damaged ({e}): ignored")),
                None => warnings.push("an ID3 chunk without an ID3v2 tag: ignored".to_owned()),
            }
        } else if is_tag_chunk(layout, c) {
            let body = src.read_vec(c.body(), c.len.min(MAX_TAG) as usize)?;
            if layout.container.is_wav() {
                texts.extend(text::info_tags(&body));
            } else {
                texts.extend(text::tag(prefix, &c.id, &body, keys));
            }
        }
    }
    // A field the ID3 tag has: the text item stays, under its native name only.
    for t in &mut texts {
        if !t.key.is_empty() && id3_tags.iter().any(|i: &Tag| i.key == t.key) {
            t.key = "".into();
        }
    }
    id3_tags.extend(texts);
    Ok((id3_tags, pictures, warnings))
}

impl Format for Riff {
    fn check_options(&self, options: &str) -> PluginResult<()> {
        settings(options).map(|_| ())
    }

    fn extensions(&self) -> Vec<String> {
        ["wav", "wave", "rf64", "bw64", "aif", "aiff", "aifc"].iter().map(|e| (*e).into()).collect()
    }

    fn probe(&self, head: &[u8], extension: &str) -> u32 {
        match Container::of(head) {
            Some(_) if self.extensions().iter().any(|e| e == extension) => 100,
            Some(_) => 90,
            None => 0,
        }
    }

    fn read(&self, src: &Source) -> PluginResult<TrackInfo> {
        let layout = walk(src)?;
        let (props, audio_offset, audio_len) = audio(src, &layout)?;
        let (tags, pictures, more) = tags(src, &layout)?;
        let regions = layout
            .chunks
            .iter()
            .map(|c| {
                let kind = match c.list_type {
                    Some(t) => format!("riff:LIST/{}", String::from_utf8_lossy(&t).trim_end()),
                    None => format!("riff:{}", c.name().trim_end()),
                };
                Region { kind: kind.into(), offset: c.offset, len: c.span() }
            })
            .collect::<Vec<_>>();
        let extra: Vec<KeyValue> = layout
            .warnings
            .iter()
            .chain(&more)
            .map(|w| KeyValue { key: "warning".into(), value: w.as_str().into() })
            .collect();
        let format = match layout.container {
            Container::Riff => "wav",
            Container::Rf64 => "rf64",
            Container::Aiff => "aiff",
            Container::Aifc => "aifc",
        };
        Ok(TrackInfo {
            format: format.into(),
            // Served under the original's extension (`.wav`, `.aif`, `.aiff`, ...).
            extension: "".into(),
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
        let s = settings(&req.options)?;
        let layout = walk(src)?;
        let c = layout.container;
        let be = c.big_endian();
        let audio = layout.audio().ok_or_else(|| PluginError::invalid_data("no audio chunk: rescan the file"))?;
        let (prefix, keys): (&str, &[(&[u8; 4], &str)]) =
            if c.is_wav() { ("INFO", &text::INFO_KEYS) } else { ("AIFF", &text::AIFF_KEYS) };
        // Fields that have an ID3 value and a (shadowed) raw text item: the text item
        // follows the field, so it is written from the keyed tag.
        let items = text::items(&req.tags, prefix, keys);
        let mut new_tags = if c.is_wav() { text::info_chunk(&items) } else { text::aiff_chunks(&items) };
        let had_id3 = layout.chunks.iter().any(|x| is_id3(&x.id));
        if had_id3 || !req.pictures.is_empty() || !text::all_fit(&req.tags, prefix, keys) {
            // A file that had an ID3 chunk keeps its text items' fields in the text
            // chunk only (as it was); an ID3 chunk musefs adds carries every field, for
            // the readers that look at ID3 alone. Raw items with no key stay text-only.
            let text_native = format!("{prefix}:");
            let for_id3: Vec<Tag> = req
                .tags
                .iter()
                .filter(|t| !(t.native.as_str().starts_with(&text_native) && (had_id3 || t.key.is_empty())))
                .cloned()
                .collect();
            let frames = id3write::frames(&for_id3, &req.pictures, s.version);
            let room: u64 = layout.chunks.iter().filter(|x| is_tag_chunk(&layout, x)).map(|x| x.span()).sum();
            let content = new_tags.len() as u64 + 8 + 10 + frames.len() as u64;
            let mut pad = padding_for(room, content, 0, s.min_pad);
            if (10 + frames.len() as u64 + pad) % 2 == 1 {
                pad += 1;
            }
            let tag = id3write::tag(&frames, pad as usize, s.version);
            new_tags.extend(text::chunk(if be { b"ID3 " } else { b"id3 " }, &tag, be));
        }
        let mut segs: Vec<Segment> = Vec::new();
        let mut total = 4u64; // the form type
        let mut ds64_at = None;
        for x in &layout.chunks {
            if is_tag_chunk(&layout, x) {
                continue;
            }
            if x.offset == audio.offset && !new_tags.is_empty() {
                total += new_tags.len() as u64;
                segs.push(Segment::literal(std::mem::take(&mut new_tags)));
            }
            if x.offset == audio.offset && x.claimed.is_some() {
                // The real size in the header of an audio chunk whose size was wrong.
                let n = u32::try_from(x.len)
                    .map_err(|_| PluginError::invalid_data("the audio chunk is over 4 GiB: it needs RF64"))?;
                let mut h = x.id.to_vec();
                h.extend(if be { n.to_be_bytes() } else { n.to_le_bytes() });
                segs.push(Segment::literal(h));
                segs.push(Segment::origin(x.body(), x.len));
            } else if &x.id == b"ds64" && c == Container::Rf64 && x.len >= 8 {
                ds64_at = Some(segs.len());
                segs.push(Segment::literal(Vec::new())); // filled in once the size is known
            } else {
                segs.push(Segment::origin(x.offset, x.span()));
            }
            total += x.span();
            if x.len & 1 == 1 && !x.padded {
                // A pad byte the writer left out.
                segs.push(Segment::literal(vec![0]));
                total += 1;
            }
        }
        if !new_tags.is_empty() {
            return Err(PluginError::invalid_data("no audio chunk: rescan the file"));
        }
        let mut head = Vec::with_capacity(12);
        match c {
            Container::Rf64 => {
                head.extend(b"RF64");
                head.extend(u32::MAX.to_le_bytes());
                head.extend(b"WAVE");
                // The ds64 chunk with the new form size (the data size is unchanged).
                let (ds, at) = layout
                    .find(b"ds64")
                    .zip(ds64_at)
                    .ok_or_else(|| PluginError::invalid_data("an RF64 file without a ds64 chunk"))?;
                let mut body = src.read_vec(ds.body(), ds.len as usize)?;
                body[0..8].copy_from_slice(&total.to_le_bytes());
                let mut lit = ds.id.to_vec();
                lit.extend((ds.len as u32).to_le_bytes());
                lit.extend(body);
                if ds.padded {
                    lit.push(0);
                }
                segs[at] = Segment::literal(lit);
            }
            _ => {
                let size = u32::try_from(total).map_err(|_| {
                    PluginError::invalid_data("the served file would exceed 4 GiB (the RIFF/AIFF limit)")
                })?;
                head.extend(if be { b"FORM" } else { b"RIFF" });
                head.extend(if be { size.to_be_bytes() } else { size.to_le_bytes() });
                head.extend(match c {
                    Container::Aiff => b"AIFF",
                    Container::Aifc => b"AIFC",
                    _ => b"WAVE",
                });
            }
        }
        segs.insert(0, Segment::literal(head));
        Ok(Plan { segments: segs.into() })
    }
}

/// The `[format.riff]` options.
struct Settings {
    version: Version,
    min_pad: u64,
}

fn settings(options: &str) -> PluginResult<Settings> {
    let opts = Options::parse(options, "riff", &["id3v2_version", "min_padding"])?;
    let version = match opts.choice("id3v2_version", &["2.3", "2.4"], "2.4")?.as_str() {
        "2.3" => Version::V23,
        _ => Version::V24,
    };
    Ok(Settings { version, min_pad: opts.uint("min_padding", 1 << 20, 1024)? })
}

musefs_plugin_api::export_plugin! {
    name: "riff",
    version: env!("CARGO_PKG_VERSION"),
    description: "WAV (RIFF, RF64) and AIFF/AIFC: ID3 chunks, LIST/INFO, AIFF text chunks",
    format: |_config: &str| Ok(Riff),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extended_floats() {
        // 44100 Hz and 48000 Hz as AIFF writes them.
        assert_eq!(ext80(&[0x40, 0x0E, 0xAC, 0x44, 0, 0, 0, 0, 0, 0]), 44100);
        assert_eq!(ext80(&[0x40, 0x0E, 0xBB, 0x80, 0, 0, 0, 0, 0, 0]), 48000);
        assert_eq!(ext80(&[0x7F, 0xFF, 0xFF, 0, 0, 0, 0, 0, 0, 0]), 0);
        assert_eq!(ext80(&[0; 10]), 0);
    }
}

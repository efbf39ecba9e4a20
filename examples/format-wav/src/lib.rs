//! An example musefs format plugin: WAV files with RIFF `LIST`/`INFO` tags.
//!
//! It shows the whole contract a format plugin has with musefs:
//!
//! 1. [`Format::probe`] looks at the first bytes and says how sure it is (0-100);
//! 2. [`Format::read`] parses the file through a [`Source`] (random-access reads on the
//!    origin, local or remote) and returns a [`TrackInfo`]: tags, audio properties, where
//!    the audio bytes are, and the regions it will need for synthesis;
//! 3. [`Format::plan`] returns the layout of the served file: literal bytes (the new
//!    header) and ranges of the original (the untouched audio). It is called once per
//!    open and must not read the audio.
//!
//! Every entry point is wrapped by `export_plugin!`, which catches panics and turns
//! them into errors; still, a plugin must never panic on bad input: every length read
//! from the file is checked before it is used.

use musefs_plugin_api::{
    AudioProps, Format, Plan, PlanRequest, PluginError, PluginResult, Region, Segment, Source, Tag, TrackInfo,
};

/// RIFF INFO ids and the canonical keys musefs templates use.
const INFO_KEYS: [(&[u8; 4], &str); 8] = [
    (b"INAM", "title"),
    (b"IART", "artist"),
    (b"IPRD", "album"),
    (b"IPRT", "track"),
    (b"ITRK", "track"),
    (b"ICRD", "date"),
    (b"IGNR", "genre"),
    (b"ICMT", "comment"),
];

/// One chunk of the RIFF file: its id, where its header starts, its body length.
#[derive(Debug, Clone)]
struct Chunk {
    id: [u8; 4],
    offset: u64,
    len: u64,
}

impl Chunk {
    /// The whole chunk on disk: 8-byte header, body, pad byte to an even length.
    fn span(&self) -> u64 {
        8 + self.len + (self.len & 1)
    }
}

/// The WAV format.
pub struct Wav;

/// Walks the chunks after the 12-byte RIFF header.
fn chunks(src: &Source) -> PluginResult<Vec<Chunk>> {
    let len = src.len();
    let mut head = [0u8; 12];
    src.read_exact_at(0, &mut head)?;
    if &head[..4] != b"RIFF" || &head[8..12] != b"WAVE" {
        return Err(PluginError::invalid_data("not a RIFF/WAVE file"));
    }
    let mut out = Vec::new();
    let mut pos = 12u64;
    while pos + 8 <= len {
        let mut h = [0u8; 8];
        src.read_exact_at(pos, &mut h)?;
        let id = [h[0], h[1], h[2], h[3]];
        let body = u64::from(u32::from_le_bytes([h[4], h[5], h[6], h[7]]));
        if pos + 8 + body > len {
            return Err(PluginError::invalid_data(format!(
                "truncated: chunk {:?} at offset {pos} claims {body} bytes past the end of the file",
                String::from_utf8_lossy(&id)
            )));
        }
        let c = Chunk { id, offset: pos, len: body };
        pos += c.span();
        out.push(c);
    }
    Ok(out)
}

/// Parses the sub-chunks of a `LIST` chunk of type `INFO` into tags.
fn info_tags(body: &[u8]) -> Vec<Tag> {
    let mut tags = Vec::new();
    let mut i = 4; // after "INFO"
    while i + 8 <= body.len() {
        let id: [u8; 4] = [body[i], body[i + 1], body[i + 2], body[i + 3]];
        let n = u32::from_le_bytes([body[i + 4], body[i + 5], body[i + 6], body[i + 7]]) as usize;
        let Some(raw) = body.get(i + 8..i + 8 + n) else { break };
        let text = String::from_utf8_lossy(raw).trim_end_matches('\0').to_owned();
        let key = INFO_KEYS.iter().find(|(k, _)| **k == id).map_or("", |(_, v)| *v);
        tags.push(Tag::text(key, &String::from_utf8_lossy(&id), &text));
        i += 8 + n + (n & 1);
    }
    tags
}

/// Builds a `LIST`/`INFO` chunk from tags: known keys under their INFO id, native INFO
/// ids kept; anything else has no INFO equivalent and is left out.
fn info_chunk(tags: &[Tag]) -> Vec<u8> {
    let mut body = b"INFO".to_vec();
    for t in tags.iter().filter(|t| t.data.is_empty()) {
        let id: [u8; 4] = match t.native.as_bytes() {
            n if n.len() == 4 && n[0] == b'I' && n.iter().all(u8::is_ascii_alphanumeric) => [n[0], n[1], n[2], n[3]],
            _ => match INFO_KEYS.iter().find(|(_, k)| *k == t.key.as_str()) {
                Some((id, _)) => **id,
                None => continue,
            },
        };
        let mut text = t.value.as_bytes().to_vec();
        text.push(0);
        body.extend(id);
        body.extend((text.len() as u32).to_le_bytes());
        body.extend(&text);
        if text.len() & 1 == 1 {
            body.push(0);
        }
    }
    let mut chunk = b"LIST".to_vec();
    chunk.extend((body.len() as u32).to_le_bytes());
    chunk.extend(body);
    chunk
}

impl Format for Wav {
    fn extensions(&self) -> Vec<String> {
        vec!["wav".into()]
    }

    fn probe(&self, head: &[u8], _extension: &str) -> u32 {
        if head.len() >= 12 && &head[..4] == b"RIFF" && &head[8..12] == b"WAVE" {
            100
        } else {
            0
        }
    }

    fn read(&self, src: &Source) -> PluginResult<TrackInfo> {
        let mut tags = Vec::new();
        let mut regions = Vec::new();
        let mut props = AudioProps { codec: "pcm".into(), ..AudioProps::default() };
        let mut data = None;
        for c in chunks(src)? {
            regions.push(Region {
                kind: format!("wav-chunk-{}", String::from_utf8_lossy(&c.id)).into(),
                offset: c.offset,
                len: c.span().min(src.len() - c.offset),
            });
            match &c.id {
                b"fmt " if c.len >= 16 => {
                    let f = src.read_vec(c.offset + 8, 16)?;
                    props.channels = u32::from(u16::from_le_bytes([f[2], f[3]]));
                    props.sample_rate = u32::from_le_bytes([f[4], f[5], f[6], f[7]]);
                    props.bitrate = u32::from_le_bytes([f[8], f[9], f[10], f[11]]).saturating_mul(8);
                    props.bits_per_sample = u32::from(u16::from_le_bytes([f[14], f[15]]));
                }
                b"LIST" if c.len >= 4 && c.len <= 1 << 20 => {
                    let body = src.read_vec(c.offset + 8, c.len as usize)?;
                    if body.starts_with(b"INFO") {
                        tags.extend(info_tags(&body));
                    }
                }
                b"data" => data = Some(c.clone()),
                _ => {}
            }
        }
        let data = data.ok_or_else(|| PluginError::invalid_data("no data chunk: not a playable WAV file"))?;
        if props.sample_rate == 0 || props.bitrate == 0 {
            return Err(PluginError::invalid_data("no valid fmt chunk before the audio"));
        }
        props.duration_ms = data.len * 8000 / u64::from(props.bitrate);
        Ok(TrackInfo {
            format: "wav".into(),
            extension: "wav".into(),
            tags: tags.into(),
            pictures: Vec::new().into(),
            props,
            audio_offset: data.offset + 8,
            audio_len: data.len,
            regions: regions.into(),
            extra: Vec::new().into(),
        })
    }

    fn plan(&self, src: &Source, req: &PlanRequest) -> PluginResult<Plan> {
        // Only synthesis requests arrive here (passthrough is answered by the export layer).
        // Every chunk is kept as a range of the original, except the old INFO list, which
        // is replaced by one built from the catalog's tags, just before `data`. The layout
        // comes from the regions recorded at scan time; the only read is the 4-byte type
        // of each LIST chunk. The audio is never read.
        let mut middle = Vec::new();
        let mut total = 4u64; // "WAVE"
        let info = info_chunk(&req.tags);
        for r in req.info.regions.iter() {
            let Some(id) = r.kind.as_str().strip_prefix("wav-chunk-") else { continue };
            if r.offset + r.len > src.len() {
                return Err(PluginError::invalid_data("the catalog's chunk regions are outside the file: rescan it"));
            }
            if id == "LIST" {
                let mut kind = [0u8; 4];
                src.read_exact_at(r.offset + 8, &mut kind)?;
                if &kind == b"INFO" {
                    continue;
                }
            }
            if id == "data" {
                total += info.len() as u64;
                middle.push(Segment::literal(info.clone()));
            }
            total += r.len;
            middle.push(Segment::origin(r.offset, r.len));
        }
        let size = u32::try_from(total)
            .map_err(|_| PluginError::invalid_data("the served file would exceed the 4 GiB RIFF limit"))?;
        let mut head = b"RIFF".to_vec();
        head.extend(size.to_le_bytes());
        head.extend(b"WAVE");
        let mut segments = vec![Segment::literal(head)];
        segments.extend(middle);
        Ok(Plan { segments: segments.into() })
    }
}

musefs_plugin_api::export_plugin! {
    name: "wav",
    version: env!("CARGO_PKG_VERSION"),
    description: "Example third-party plugin: WAV with RIFF INFO tags",
    format: |_config: &str| Ok(Wav),
}

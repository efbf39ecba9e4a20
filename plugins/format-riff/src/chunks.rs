//! The chunk walk shared by read and plan.
//!
//! RIFF (little-endian sizes) and FORM (big-endian) files are a 12-byte header and a list
//! of chunks: a 4-byte id, a 4-byte body size, the body, and a pad byte when the size is
//! odd. Real files break the rules in a few well-known ways, all of which players
//! tolerate, so this walk does too (each with a warning):
//! - an audio chunk (`data`, `SSND`) whose size is unset (`0xFFFFFFFF`, or 0 from a
//!   recorder that never finalised the file) or larger than the file: the audio runs
//!   to the end of the file;
//! - an odd-sized chunk without its pad byte (the next chunk id follows at once);
//! - garbage or a damaged chunk after the audio: left out.
//!
//! A damaged chunk *before* the audio is an error: nothing can find the audio then.

use musefs_plugin_api::{PluginError, PluginResult, Source};

/// The container kind, from the first 12 bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Container {
    /// `RIFF....WAVE`.
    Riff,
    /// `RF64` or `BW64` `....WAVE`: 64-bit sizes in a `ds64` chunk.
    Rf64,
    /// `FORM....AIFF`.
    Aiff,
    /// `FORM....AIFC`.
    Aifc,
}

impl Container {
    /// The container of a file starting with `head`, if it is one of ours.
    pub fn of(head: &[u8]) -> Option<Self> {
        if head.len() < 12 {
            return None;
        }
        match (&head[0..4], &head[8..12]) {
            (b"RIFF", b"WAVE") => Some(Self::Riff),
            (b"RF64" | b"BW64", b"WAVE") => Some(Self::Rf64),
            (b"FORM", b"AIFF") => Some(Self::Aiff),
            (b"FORM", b"AIFC") => Some(Self::Aifc),
            _ => None,
        }
    }

    /// Whether sizes are big-endian (AIFF).
    pub fn big_endian(self) -> bool {
        matches!(self, Self::Aiff | Self::Aifc)
    }

    /// The id of the chunk holding the audio.
    pub fn audio_id(self) -> &'static [u8; 4] {
        if self.big_endian() {
            b"SSND"
        } else {
            b"data"
        }
    }

    /// Whether this is a WAV flavour.
    pub fn is_wav(self) -> bool {
        !self.big_endian()
    }
}

/// One chunk as found in the file.
#[derive(Debug, Clone)]
pub struct Chunk {
    /// The chunk id.
    pub id: [u8; 4],
    /// Offset of its 8-byte header.
    pub offset: u64,
    /// Body length as present in the file (a claim past the end is cut to it).
    pub len: u64,
    /// The size field as written, when it differs from `len` (unset or too large).
    pub claimed: Option<u32>,
    /// Whether the file has the pad byte after an odd-sized body.
    pub padded: bool,
    /// A `LIST` chunk's type (`INFO`, `adtl`, ...).
    pub list_type: Option<[u8; 4]>,
}

impl Chunk {
    /// Offset of the body.
    pub fn body(&self) -> u64 {
        self.offset + 8
    }

    /// Bytes the chunk takes in the file: header, body, pad byte if present.
    pub fn span(&self) -> u64 {
        8 + self.len + u64::from(self.padded)
    }

    /// The id for messages (`LIST`, `id3 `).
    pub fn name(&self) -> String {
        String::from_utf8_lossy(&self.id).into_owned()
    }
}

/// The `ds64` sizes of an RF64 file.
#[derive(Debug, Clone, Copy)]
pub struct Ds64 {
    /// Size of the RIFF form (file length - 8).
    pub riff_size: u64,
    /// Size of the `data` chunk's body.
    pub data_size: u64,
}

/// A walked file.
#[derive(Debug)]
pub struct Layout {
    /// The container.
    pub container: Container,
    /// The chunks in file order.
    pub chunks: Vec<Chunk>,
    /// What was tolerated, for the catalog's warnings.
    pub warnings: Vec<String>,
    /// RF64 sizes.
    pub ds64: Option<Ds64>,
}

impl Layout {
    /// The audio chunk.
    pub fn audio(&self) -> Option<&Chunk> {
        self.chunks.iter().find(|c| &c.id == self.container.audio_id())
    }

    /// The first chunk with this id.
    pub fn find(&self, id: &[u8; 4]) -> Option<&Chunk> {
        self.chunks.iter().find(|c| &c.id == id)
    }
}

/// A chunk id made of printable ASCII, as every real one is.
fn plausible(id: &[u8]) -> bool {
    id.len() == 4 && id.iter().all(|b| (0x20..=0x7e).contains(b)) && id[0] != b' '
}

/// Walks the chunks of `src`.
///
/// # Errors
/// `INVALID_DATA` if the file is not RIFF/WAVE, RF64 or AIFF/AIFC, or a chunk before
/// the audio is damaged or cut short; the origin's error if a read fails.
pub fn walk(src: &Source) -> PluginResult<Layout> {
    let len = src.len();
    let head = src.read_vec(0, 12)?;
    let container = Container::of(&head).ok_or_else(|| PluginError::invalid_data("not a WAV or AIFF file"))?;
    let be = container.big_endian();
    let size = |b: &[u8]| {
        let a = [b[0], b[1], b[2], b[3]];
        if be {
            u32::from_be_bytes(a)
        } else {
            u32::from_le_bytes(a)
        }
    };
    let audio_id = container.audio_id();
    let mut chunks: Vec<Chunk> = Vec::new();
    let mut warnings = Vec::new();
    let mut ds64 = None;
    let mut pos = 12u64;
    let mut seen_audio = false;
    while pos + 8 <= len {
        let h = src.read_vec(pos, 12)?;
        let id = [h[0], h[1], h[2], h[3]];
        if !plausible(&id) {
            if seen_audio {
                warnings
                    .push(format!("{} bytes of unreadable data after the audio (offset {pos}): left out", len - pos));
                break;
            }
            // A damaged id (a flipped bit) on a chunk whose size still leads to the next
            // chunk, or to the end: players skip a chunk they do not know by its size,
            // and so does this walk (the chunk is kept as it is).
            if !sized_right(src, pos, size(&h[4..8]), len, be)? {
                return Err(PluginError::invalid_data(format!(
                    "damaged chunk header at offset {pos}, before the audio"
                )));
            }
            warnings.push(format!(
                "the chunk at offset {pos} has a damaged id ({:?}): kept as an unknown chunk",
                String::from_utf8_lossy(&id)
            ));
        }
        let mut raw = size(&h[4..8]);
        // An AIFC `FVER` chunk is always 4 bytes (ffmpeg reads 4 whatever its size says):
        // a damaged size that leads nowhere, where 4 leads to the next chunk, is read as 4.
        if &id == b"FVER" && raw != 4 && !sized_right(src, pos, raw, len, be)? && sized_right(src, pos, 4, len, be)? {
            warnings.push(format!("the FVER chunk at offset {pos} claims {raw} bytes (damaged): read as 4"));
            raw = 4;
        }
        let avail = len - pos - 8;
        let mut body = u64::from(raw);
        let mut claimed = None;
        if &id == b"ds64" && container == Container::Rf64 && body >= 16 && body <= avail {
            let d = src.read_vec(pos + 8, 16)?;
            ds64 = Some(Ds64 {
                riff_size: u64::from_le_bytes(d[0..8].try_into().expect("8")),
                data_size: u64::from_le_bytes(d[8..16].try_into().expect("8")),
            });
        }
        if &id == audio_id {
            seen_audio = true;
            // An RF64 file without its ds64 chunk (its id damaged): nothing knows the
            // sizes (ffmpeg and sox refuse it) and it could not be served rewritten.
            if container == Container::Rf64 && ds64.is_none() {
                return Err(PluginError::invalid_data("an RF64 file without a ds64 chunk before its audio"));
            }
            if container == Container::Rf64 && raw == u32::MAX {
                body = ds64.map_or(avail, |d| d.data_size);
            } else if raw == u32::MAX || (raw == 0 && avail > 0 && !next_is_chunk(src, pos + 8)?) {
                warnings.push(format!(
                    "the {} chunk's size is unset (a recording never finalised): the audio runs to the end of the file",
                    String::from_utf8_lossy(&id)
                ));
                claimed = Some(raw);
                body = avail;
            }
            if body > avail {
                warnings.push(format!(
                    "truncated: the {} chunk claims {body} bytes, the file has {avail}; the audio runs to the end of the file",
                    String::from_utf8_lossy(&id)
                ));
                if container != Container::Rf64 {
                    claimed = Some(raw);
                }
                body = avail;
            }
        } else if body > avail {
            if seen_audio {
                warnings.push(format!(
                    "a damaged {} chunk after the audio (offset {pos}, claims {body} bytes): left out",
                    String::from_utf8_lossy(&id)
                ));
                break;
            }
            return Err(PluginError::invalid_data(format!(
                "truncated: chunk {:?} at offset {pos} claims {body} bytes, only {avail} follow",
                String::from_utf8_lossy(&id)
            )));
        }
        let end = pos + 8 + body;
        let mut padded = false;
        if body & 1 == 1 && end < len {
            padded = true;
            // A writer that left the pad byte out: the next chunk id starts at once
            // (pad bytes are zero, chunk ids are printable).
            if end + 8 <= len {
                let b = src.read_vec(end, 4)?;
                if b[0] != 0 && plausible(&b) {
                    padded = false;
                }
            }
        }
        let list_type = (&id == b"LIST" && body >= 4 && h.len() >= 12).then(|| [h[8], h[9], h[10], h[11]]);
        let c = Chunk { id, offset: pos, len: body, claimed, padded, list_type };
        pos = c.offset + c.span();
        chunks.push(c);
    }
    Ok(Layout { container, chunks, warnings, ds64 })
}

/// Whether a chunk at `pos` whose body is `body` bytes ends where another plausible chunk
/// header starts (its pad byte skipped; a printable id, a size that fits the file or the
/// audio chunk's), or at the end of the file.
fn sized_right(src: &Source, pos: u64, body: u32, len: u64, be: bool) -> PluginResult<bool> {
    let end = pos + 8 + u64::from(body);
    if end > len {
        return Ok(false);
    }
    let next = end + u64::from(body & 1);
    if end == len || next == len {
        return Ok(true);
    }
    if next + 8 > len {
        return Ok(false);
    }
    let b = src.read_vec(next, 8)?;
    let size = [b[4], b[5], b[6], b[7]];
    let size = if be { u32::from_be_bytes(size) } else { u32::from_le_bytes(size) };
    // (The audio chunk's size may be unset: a recording never finalised.)
    Ok(plausible(&b[..4]) && (u64::from(size) <= len - next - 8 || matches!(&b[..4], b"data" | b"SSND")))
}

/// Whether a plausible chunk header starts at `at` (used to tell a zero-sized `data`
/// chunk from one whose size was never written).
fn next_is_chunk(src: &Source, at: u64) -> PluginResult<bool> {
    let b = src.read_vec(at, 8)?;
    Ok(b.len() == 8 && plausible(&b[..4]))
}

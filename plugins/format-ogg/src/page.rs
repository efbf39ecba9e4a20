//! Ogg pages: header parsing and the page CRC.

use musefs_plugin_api::{PluginError, PluginResult, Source};

/// The Ogg CRC-32 (polynomial 0x04C11DB7, no reflection, initial value 0).
pub fn crc32(data: &[u8]) -> u32 {
    crc32_update(0, data)
}

/// Continues a CRC over more bytes.
pub fn crc32_update(crc: u32, data: &[u8]) -> u32 {
    static TABLE: std::sync::OnceLock<[u32; 256]> = std::sync::OnceLock::new();
    let table = TABLE.get_or_init(|| {
        let mut t = [0u32; 256];
        for (i, slot) in t.iter_mut().enumerate() {
            let mut r = (i as u32) << 24;
            for _ in 0..8 {
                r = if r & 0x8000_0000 != 0 { (r << 1) ^ 0x04C1_1DB7 } else { r << 1 };
            }
            *slot = r;
        }
        t
    });
    data.iter().fold(crc, |crc, &b| (crc << 8) ^ table[((crc >> 24) as u8 ^ b) as usize])
}

/// A parsed page header.
#[derive(Debug, Clone)]
pub struct Page {
    /// Offset of `OggS` in the file.
    pub offset: u64,
    /// Header type flags (1 = continued, 2 = BOS, 4 = EOS).
    pub flags: u8,
    /// Granule position.
    pub granule: u64,
    /// Bitstream serial number.
    pub serial: u32,
    /// Page sequence number.
    pub sequence: u32,
    /// The lacing values.
    pub lacing: Vec<u8>,
    /// Header length (27 + segments).
    pub header_len: usize,
    /// Body length.
    pub body_len: usize,
}

impl Page {
    /// Total page length.
    pub fn len(&self) -> u64 {
        (self.header_len + self.body_len) as u64
    }

    /// Whether the page is empty (never: a header is at least 27 bytes).
    pub fn is_empty(&self) -> bool {
        false
    }
}

/// Parses the page whose header starts `data` (which must hold the whole page) and
/// checks its CRC.
///
/// # Errors
/// `INVALID_DATA` naming the offset for a missing capture pattern, truncation or a bad CRC.
pub fn parse(data: &[u8], offset: u64) -> PluginResult<Page> {
    let (page, crc_ok) = parse_lenient(data, offset)?;
    if !crc_ok {
        return Err(PluginError::invalid_data(format!("Ogg page at offset {offset} fails its CRC check (corrupt)")));
    }
    Ok(page)
}

/// [`parse`] without the CRC verdict: the page and whether its CRC checks. Players
/// (ffmpeg among them) do not check Ogg CRCs, so a page whose CRC fails is still read.
///
/// # Errors
/// `INVALID_DATA` naming the offset for a missing capture pattern or truncation.
pub fn parse_lenient(data: &[u8], offset: u64) -> PluginResult<(Page, bool)> {
    if data.len() < 27 || &data[..4] != b"OggS" {
        return Err(PluginError::invalid_data(format!("no Ogg page at offset {offset}")));
    }
    if data[4] != 0 {
        return Err(PluginError::invalid_data(format!("unknown Ogg version {} at offset {offset}", data[4])));
    }
    let nseg = data[26] as usize;
    let header_len = 27 + nseg;
    if data.len() < header_len {
        return Err(PluginError::invalid_data(format!("truncated Ogg page header at offset {offset}")));
    }
    let lacing = data[27..header_len].to_vec();
    let body_len: usize = lacing.iter().map(|&l| l as usize).sum();
    if data.len() < header_len + body_len {
        return Err(PluginError::invalid_data(format!("truncated Ogg page at offset {offset}")));
    }
    let stored = u32::from_le_bytes([data[22], data[23], data[24], data[25]]);
    let mut copy = data[..header_len + body_len].to_vec();
    copy[22..26].fill(0);
    let crc_ok = crc32(&copy) == stored;
    let page = Page {
        offset,
        flags: data[5],
        granule: u64::from_le_bytes(data[6..14].try_into().expect("8 bytes")),
        serial: u32::from_le_bytes(data[14..18].try_into().expect("4 bytes")),
        sequence: u32::from_le_bytes(data[18..22].try_into().expect("4 bytes")),
        lacing,
        header_len,
        body_len,
    };
    Ok((page, crc_ok))
}

/// How far past a missing page the next capture pattern is looked for.
pub const RESYNC_WINDOW: u64 = 64 * 1024;

/// A page read from a file: where it starts, the page, its bytes, whether its CRC checks,
/// and how many bytes of garbage before it were skipped.
pub struct Read {
    /// Where the page starts.
    pub at: u64,
    /// The page.
    pub page: Page,
    /// Its bytes (header and body).
    pub bytes: Vec<u8>,
    /// Whether its CRC checks.
    pub crc_ok: bool,
    /// Bytes skipped before it (0: it was where expected).
    pub skipped: u64,
}

/// Reads the page expected at `pos`. Where there is none (bytes inserted by damage),
/// the next capture pattern within [`RESYNC_WINDOW`] that starts a page whose CRC checks
/// is taken instead, as ffmpeg resynchronises.
///
/// # Errors
/// `INVALID_DATA` naming the offset when no page is found; read errors.
pub fn read_at(src: &Source, pos: u64) -> PluginResult<Read> {
    let one = |at: u64| -> PluginResult<Option<(Page, Vec<u8>, bool)>> {
        let head = src.read_vec(at, 27 + 255)?;
        if head.len() < 27 || &head[..4] != b"OggS" {
            return Ok(None);
        }
        let hl = 27 + head[26] as usize;
        let body: usize = head.get(27..hl).map_or(0, |l| l.iter().map(|&b| b as usize).sum());
        let whole = src.read_vec(at, hl + body)?;
        match parse_lenient(&whole, at) {
            Ok((p, ok)) => Ok(Some((p, whole, ok))),
            Err(_) => Ok(None),
        }
    };
    let head = src.read_vec(pos, 27)?;
    if head.len() < 27 {
        return Err(PluginError::invalid_data(format!("truncated: the header pages end at offset {pos}")));
    }
    if &head[..4] == b"OggS" {
        // A page is here: its own errors (truncation) are the answer.
        let hl = 27 + head[26] as usize;
        let lacing = src.read_vec(pos + 27, hl - 27)?;
        let body: usize = lacing.iter().map(|&b| b as usize).sum();
        let bytes = src.read_vec(pos, hl + body)?;
        let (page, crc_ok) = parse_lenient(&bytes, pos)?;
        return Ok(Read { at: pos, page, bytes, crc_ok, skipped: 0 });
    }
    let window = src.read_vec(pos, RESYNC_WINDOW as usize)?;
    let mut i = 1;
    while let Some(k) = window.get(i..).and_then(|w| w.windows(4).position(|x| x == b"OggS")) {
        let at = pos + (i + k) as u64;
        if let Some((page, bytes, true)) = one(at)? {
            return Ok(Read { at, page, bytes, crc_ok: true, skipped: at - pos });
        }
        i += k + 1;
    }
    Err(PluginError::invalid_data(format!("no Ogg page at offset {pos}: not an Ogg file or corrupt")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc_matches_reference_value() {
        // The Ogg CRC of "123456789" (CRC-32/MPEG-2 style without final xor, init 0).
        assert_eq!(crc32(b"123456789"), 0x89A1_897F);
    }
}

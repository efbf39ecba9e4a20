//! Ogg pages: header parsing and the page CRC.

use musefs_plugin_api::{PluginError, PluginResult};

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
    if crc32(&copy) != stored {
        return Err(PluginError::invalid_data(format!("Ogg page at offset {offset} fails its CRC check (corrupt)")));
    }
    Ok(Page {
        offset,
        flags: data[5],
        granule: u64::from_le_bytes(data[6..14].try_into().expect("8 bytes")),
        serial: u32::from_le_bytes(data[14..18].try_into().expect("4 bytes")),
        sequence: u32::from_le_bytes(data[18..22].try_into().expect("4 bytes")),
        lacing,
        header_len,
        body_len,
    })
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

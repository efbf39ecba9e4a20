//! MP4 atoms (ISO BMFF boxes): `size u32 BE, type 4cc`, a 64-bit size after the type
//! when `size` is 1, "to the end" when it is 0.

use musefs_plugin_api::{PluginError, PluginResult};

/// One atom in a byte slice or a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Atom {
    /// Its type.
    pub kind: [u8; 4],
    /// Where it starts (its header).
    pub start: u64,
    /// Its header's length (8 or 16).
    pub header: u64,
    /// Its whole length.
    pub len: u64,
}

impl Atom {
    /// Where its body starts.
    pub fn body(&self) -> u64 {
        self.start + self.header
    }

    /// Where it ends.
    pub fn end(&self) -> u64 {
        self.start + self.len
    }
}

/// The atom whose header starts `head` (at least 16 bytes unless the data ends) at
/// `start`, inside a parent ending at `limit`.
///
/// # Errors
/// `INVALID_DATA` naming the offset for a header that does not fit its parent.
pub fn parse_header(head: &[u8], start: u64, limit: u64) -> PluginResult<Atom> {
    if head.len() < 8 || limit < start + 8 {
        return Err(PluginError::invalid_data(format!("truncated MP4 atom header at offset {start}")));
    }
    let size = u64::from(u32::from_be_bytes(head[..4].try_into().expect("4 bytes")));
    let kind: [u8; 4] = head[4..8].try_into().expect("4 bytes");
    let (header, len) = match size {
        0 => (8, limit - start),
        1 => {
            let big = head
                .get(8..16)
                .ok_or_else(|| PluginError::invalid_data(format!("truncated 64-bit atom size at offset {start}")))?;
            (16, u64::from_be_bytes(big.try_into().expect("8 bytes")))
        }
        n => (8, n),
    };
    if len < header || start.checked_add(len).is_none_or(|e| e > limit) {
        return Err(PluginError::invalid_data(format!(
            "MP4 atom `{}` at offset {start} claims {len} bytes, past its parent's end at {limit}",
            String::from_utf8_lossy(&kind)
        )));
    }
    Ok(Atom { kind, start, header, len })
}

/// The child atoms of the bytes `data` (which start at file offset `base`).
///
/// # Errors
/// As for [`parse_header`].
pub fn children(data: &[u8], base: u64) -> PluginResult<Vec<Atom>> {
    let mut out = Vec::new();
    let mut pos = 0usize;
    let limit = base + data.len() as u64;
    while pos + 8 <= data.len() {
        let a = parse_header(&data[pos..], base + pos as u64, limit)?;
        pos += a.len as usize;
        out.push(a);
    }
    Ok(out)
}

/// The child atoms of `data` as a player reads them: a child claiming more bytes than
/// its parent has is cut at the parent's end (ffmpeg does the same), and the walk stops
/// at the first header that cannot be read at all. For reading only: a rewrite needs
/// [`children`]' exact view.
pub fn children_lenient(data: &[u8], base: u64) -> Vec<Atom> {
    let mut out = Vec::new();
    let mut pos = 0usize;
    let limit = base + data.len() as u64;
    while pos + 8 <= data.len() {
        let a = match parse_header(&data[pos..], base + pos as u64, limit) {
            Ok(a) => a,
            Err(_) => match parse_header(&data[pos..], base + pos as u64, u64::MAX) {
                Ok(mut a) if (data.len() - pos) as u64 >= a.header => {
                    a.len = (data.len() - pos) as u64;
                    a
                }
                _ => break,
            },
        };
        pos += a.len as usize;
        out.push(a);
    }
    out
}

/// An atom's bytes: header and `body`.
pub fn build(kind: &[u8; 4], body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + 16);
    let len = body.len() as u64 + 8;
    if let Ok(n) = u32::try_from(len) {
        out.extend_from_slice(&n.to_be_bytes());
        out.extend_from_slice(kind);
    } else {
        out.extend_from_slice(&1u32.to_be_bytes());
        out.extend_from_slice(kind);
        out.extend_from_slice(&(len + 8).to_be_bytes());
    }
    out.extend_from_slice(body);
    out
}

//! Ogg pages: header parsing and the page CRC.

use musefs_plugin_api::{PluginError, PluginResult, Source};

/// The Ogg CRC-32 (polynomial 0x04C11DB7, no reflection, initial value 0).
pub fn crc32(data: &[u8]) -> u32 {
    crc32_update(0, data)
}

/// Continues a CRC over more bytes (slicing by 8: eight bytes a step through eight tables).
pub fn crc32_update(mut crc: u32, data: &[u8]) -> u32 {
    static TABLES: std::sync::OnceLock<[[u32; 256]; 8]> = std::sync::OnceLock::new();
    let t = TABLES.get_or_init(|| {
        let mut t = [[0u32; 256]; 8];
        for (i, slot) in t[0].iter_mut().enumerate() {
            let mut r = (i as u32) << 24;
            for _ in 0..8 {
                r = if r & 0x8000_0000 != 0 { (r << 1) ^ 0x04C1_1DB7 } else { r << 1 };
            }
            *slot = r;
        }
        for k in 1..8 {
            for i in 0..256 {
                let prev = t[k - 1][i];
                t[k][i] = (prev << 8) ^ t[0][(prev >> 24) as usize];
            }
        }
        t
    });
    let mut chunks = data.chunks_exact(8);
    for c in &mut chunks {
        let x = crc ^ u32::from_be_bytes([c[0], c[1], c[2], c[3]]);
        crc = t[7][(x >> 24) as usize]
            ^ t[6][((x >> 16) & 0xff) as usize]
            ^ t[5][((x >> 8) & 0xff) as usize]
            ^ t[4][(x & 0xff) as usize]
            ^ t[3][c[4] as usize]
            ^ t[2][c[5] as usize]
            ^ t[1][c[6] as usize]
            ^ t[0][c[7] as usize];
    }
    chunks.remainder().iter().fold(crc, |crc, &b| (crc << 8) ^ t[0][((crc >> 24) as u8 ^ b) as usize])
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
/// (ffmpeg among them) do not check Ogg CRCs, so a page whose CRC fails is still read
/// (a nonzero version byte included, when the CRC says it is damage).
///
/// # Errors
/// `INVALID_DATA` naming the offset for a missing capture pattern or truncation.
pub fn parse_lenient(data: &[u8], offset: u64) -> PluginResult<(Page, bool)> {
    if data.len() < 27 || &data[..4] != b"OggS" {
        return Err(PluginError::invalid_data(format!("no Ogg page at offset {offset}")));
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
    // The CRC is computed with its own field zeroed.
    let crc = crc32_update(crc32_update(crc32(&data[..22]), &[0; 4]), &data[26..header_len + body_len]);
    let crc_ok = crc == stored;
    // A version other than 0 whose CRC checks is a format this reader does not know; one
    // whose CRC fails is a damaged byte of a version 0 page (the CRC covers it), read as
    // such like any other page with a bad CRC.
    if data[4] != 0 && crc_ok {
        return Err(PluginError::invalid_data(format!("unknown Ogg version {} at offset {offset}", data[4])));
    }
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

/// A window of a file read a megabyte at a time.
struct Window<'a> {
    src: &'a Source,
    start: u64,
    buf: Vec<u8>,
}

impl Window<'_> {
    const SIZE: usize = 1 << 20;

    /// `len` bytes at `pos` (fewer at the end of the file).
    fn get(&mut self, pos: u64, len: usize) -> PluginResult<&[u8]> {
        let have = pos >= self.start && pos + len as u64 <= self.start + self.buf.len() as u64;
        if !have {
            self.buf = self.src.read_vec(pos, Self::SIZE.max(len))?;
            self.start = pos;
        }
        let from = (pos - self.start) as usize;
        Ok(&self.buf[from..(from + len).min(self.buf.len())])
    }
}

/// Whether two audio ranges `(offset, len)` of Ogg files hold the same pages but for
/// their sequence numbers and checksums (what an editor that grew the header pages
/// rewrites): capture pattern, version, flags, granule position, serial number, lacing
/// and body of every page equal. Bytes that are not a page (junk at the end) must be
/// equal as they are.
///
/// # Errors
/// Read errors of either file.
pub fn same_pages(a: &Source, a_range: (u64, u64), b: &Source, b_range: (u64, u64)) -> PluginResult<bool> {
    if a_range.1 != b_range.1 {
        return Ok(false);
    }
    let len = a_range.1;
    let (mut wa, mut wb) = (Window { src: a, start: 0, buf: Vec::new() }, Window { src: b, start: 0, buf: Vec::new() });
    let mut pos = 0u64;
    while pos < len {
        let left = (len - pos) as usize;
        let ha = wa.get(a_range.0 + pos, 27.min(left))?.to_vec();
        let hb = wb.get(b_range.0 + pos, 27.min(left))?;
        let page_len = |h: &[u8], w: &mut Window<'_>, at: u64| -> PluginResult<Option<usize>> {
            if h.len() < 27 || &h[..4] != b"OggS" {
                return Ok(None);
            }
            let nseg = h[26] as usize;
            let lacing = w.get(at + 27, nseg)?;
            Ok((lacing.len() == nseg).then(|| 27 + nseg + lacing.iter().map(|&l| l as usize).sum::<usize>()))
        };
        let hb = hb.to_vec();
        let na = page_len(&ha, &mut wa, a_range.0 + pos)?;
        let nb = page_len(&hb, &mut wb, b_range.0 + pos)?;
        match (na, nb) {
            (Some(n), Some(m)) if n == m && n <= left => {
                let pa = wa.get(a_range.0 + pos, n)?.to_vec();
                let pb = wb.get(b_range.0 + pos, n)?;
                if pa.len() != n || pb.len() != n || pa[..18] != pb[..18] || pa[26..] != pb[26..] {
                    return Ok(false);
                }
                pos += n as u64;
            }
            _ => {
                // Not a page pair (junk, a page cut off by the range's end): the rest
                // must be the same bytes.
                while pos < len {
                    let n = Window::SIZE.min((len - pos) as usize);
                    let x = wa.get(a_range.0 + pos, n)?.to_vec();
                    if x != wb.get(b_range.0 + pos, n)? || x.len() != n {
                        return Ok(false);
                    }
                    pos += n as u64;
                }
            }
        }
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc_matches_reference_value() {
        // The Ogg CRC of "123456789" (CRC-32/MPEG-2 style without final xor, init 0).
        assert_eq!(crc32(b"123456789"), 0x89A1_897F);
    }

    #[test]
    fn the_sliced_crc_equals_the_bytewise_one_at_every_length_and_split() {
        let bytewise = |crc: u32, d: &[u8]| {
            d.iter().fold(crc, |mut c, &b| {
                c ^= u32::from(b) << 24;
                for _ in 0..8 {
                    c = if c & 0x8000_0000 != 0 { (c << 1) ^ 0x04C1_1DB7 } else { c << 1 };
                }
                c
            })
        };
        let mut x = 1u32;
        let data: Vec<u8> = (0..1000)
            .map(|_| {
                x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
                (x >> 16) as u8
            })
            .collect();
        for n in [0, 1, 7, 8, 9, 15, 16, 17, 63, 64, 65, 999, 1000] {
            assert_eq!(crc32(&data[..n]), bytewise(0, &data[..n]), "{n} bytes");
            let (a, b) = data[..n].split_at(n / 3);
            assert_eq!(crc32_update(crc32(a), b), bytewise(0, &data[..n]), "{n} bytes in two parts");
        }
    }

    /// A page of `body` with the given sequence number and granule, CRC set.
    fn page(seq: u32, granule: u64, body: &[u8]) -> Vec<u8> {
        let mut p = b"OggS\0\0".to_vec();
        p.extend(granule.to_le_bytes());
        p.extend(7u32.to_le_bytes());
        p.extend(seq.to_le_bytes());
        p.extend([0; 4]);
        let mut lacing = vec![255u8; body.len() / 255];
        lacing.push((body.len() % 255) as u8);
        p.push(lacing.len() as u8);
        p.extend(lacing);
        p.extend(body);
        let crc = crc32(&p);
        p[22..26].copy_from_slice(&crc.to_le_bytes());
        p
    }

    fn source(bytes: Vec<u8>) -> Source {
        Source::new(
            musefs_plugin_api::handle_into_ffi(std::sync::Arc::new(musefs_plugin_api::testing::MemHandle::new(bytes))),
            musefs_plugin_api::CallCtx::with_timeout(std::time::Duration::from_secs(5)),
        )
    }

    /// Pages of audio starting with sequence number `first`, after `head` header bytes.
    fn stream(head: usize, first: u32, bodies: &[Vec<u8>]) -> (Vec<u8>, (u64, u64)) {
        let mut out = vec![0x55; head];
        for (i, b) in bodies.iter().enumerate() {
            out.extend(page(first + i as u32, 1000 * i as u64, b));
        }
        let len = (out.len() - head) as u64;
        (out, (head as u64, len))
    }

    #[test]
    fn renumbered_pages_are_the_same_audio_and_a_changed_byte_is_not() {
        let bodies: Vec<Vec<u8>> =
            (0..40u32).map(|i| (0..300 + i * 97).map(|j| (i * 31 + j) as u8).collect()).collect();
        let (a, ra) = stream(100, 2, &bodies);
        let (b, rb) = stream(5000, 9, &bodies);
        assert_ne!(a[100..], b[5000..], "the renumbered pages differ as bytes");
        assert!(same_pages(&source(a.clone()), ra, &source(b.clone()), rb).unwrap());
        // One audio byte changed (the CRC fixed as an editor would): not the same.
        let mut changed = bodies.clone();
        changed[17][5] ^= 1;
        let (c, rc) = stream(5000, 9, &changed);
        assert!(!same_pages(&source(a.clone()), ra, &source(c), rc).unwrap());
        // A granule position changed: not the same either.
        let mut d = b.clone();
        let at = 5000 + page(9, 0, &bodies[0]).len() + 6;
        d[at] ^= 1;
        assert!(!same_pages(&source(a.clone()), ra, &source(d), rb).unwrap());
        // A page missing (lengths differ) or trailing junk that differs.
        let (e, re) = stream(100, 2, &bodies[..39]);
        assert!(!same_pages(&source(a.clone()), ra, &source(e), re).unwrap());
        let (mut f, mut rf) = stream(100, 2, &bodies);
        let (mut g, mut rg) = (a.clone(), ra);
        f.extend(b"TAGjunk");
        g.extend(b"TAGjunk");
        rf.1 += 7;
        rg.1 += 7;
        assert!(same_pages(&source(f.clone()), rf, &source(g.clone()), rg).unwrap());
        *g.last_mut().unwrap() ^= 1;
        assert!(!same_pages(&source(f), rf, &source(g), rg).unwrap());
    }
}

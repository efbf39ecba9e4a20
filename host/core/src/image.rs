//! Checking a cover image before it is stored: its format, its dimensions, colour depth
//! and palette size, and that its structure is whole (a truncated or damaged file is
//! refused, not served as a cover). Structural checks only: chunk/segment framing, the
//! PNG CRCs, the end markers; the pixels are not decoded.

/// What an image says about itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImageFacts {
    /// `image/png`, `image/jpeg`, `image/gif` or `image/webp`.
    pub mime: &'static str,
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// Bits per pixel.
    pub depth: u32,
    /// Palette colours (indexed images), else 0.
    pub colors: u32,
}

/// Checks `data` and returns its facts.
///
/// # Errors
/// A message saying what is wrong (unknown format, truncated, bad CRC, no dimensions).
pub fn inspect(data: &[u8]) -> Result<ImageFacts, String> {
    let facts = if data.starts_with(b"\x89PNG\r\n\x1a\n") {
        png(data)?
    } else if data.starts_with(&[0xFF, 0xD8, 0xFF]) {
        jpeg(data)?
    } else if data.starts_with(b"GIF87a") || data.starts_with(b"GIF89a") {
        gif(data)?
    } else if data.len() >= 12 && &data[..4] == b"RIFF" && &data[8..12] == b"WEBP" {
        webp(data)?
    } else {
        return Err("not a JPEG, PNG, GIF or WebP image".into());
    };
    if facts.width == 0 || facts.height == 0 {
        return Err(format!("{}: the image has no size ({}x{})", facts.mime, facts.width, facts.height));
    }
    Ok(facts)
}

fn be32(d: &[u8], i: usize) -> Option<u32> {
    d.get(i..i + 4).map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
}

fn crc32(bytes: &[u8]) -> u32 {
    let mut c = !0u32;
    for &b in bytes {
        c ^= u32::from(b);
        for _ in 0..8 {
            c = if c & 1 != 0 { 0xEDB8_8320 ^ (c >> 1) } else { c >> 1 };
        }
    }
    !c
}

fn png(d: &[u8]) -> Result<ImageFacts, String> {
    let cut = |what: &str| format!("PNG truncated or damaged ({what})");
    let mut i = 8;
    let (mut facts, mut idat, mut end) = (None, false, false);
    while i < d.len() {
        let len = be32(d, i).ok_or_else(|| cut("chunk header"))? as usize;
        let kind = d.get(i + 4..i + 8).ok_or_else(|| cut("chunk header"))?;
        let body_end =
            (i + 8).checked_add(len).filter(|e| e + 4 <= d.len()).ok_or_else(|| cut("chunk runs past the end"))?;
        let crc = be32(d, body_end).ok_or_else(|| cut("CRC"))?;
        if crc32(&d[i + 4..body_end]) != crc {
            return Err(format!("PNG chunk {} has a bad CRC (damaged)", String::from_utf8_lossy(kind)));
        }
        let body = &d[i + 8..body_end];
        match kind {
            b"IHDR" if body.len() == 13 => {
                let channels = match body[9] {
                    0 | 3 => 1,
                    4 => 2,
                    2 => 3,
                    6 => 4,
                    t => return Err(format!("PNG colour type {t} is not valid")),
                };
                facts = Some(ImageFacts {
                    mime: "image/png",
                    width: be32(body, 0).unwrap_or(0),
                    height: be32(body, 4).unwrap_or(0),
                    depth: u32::from(body[8]) * channels,
                    colors: 0,
                });
            }
            b"PLTE" => {
                if let Some(f) = facts.as_mut() {
                    f.colors = (body.len() / 3) as u32;
                }
            }
            b"IDAT" => idat = true,
            b"IEND" => {
                end = true;
                break;
            }
            _ => {}
        }
        if facts.is_none() {
            return Err(cut("no IHDR first"));
        }
        i = body_end + 4;
    }
    if !idat || !end {
        return Err(cut(if idat { "no IEND" } else { "no image data" }));
    }
    facts.ok_or_else(|| cut("no IHDR"))
}

fn jpeg(d: &[u8]) -> Result<ImageFacts, String> {
    let cut = |what: &str| format!("JPEG truncated or damaged ({what})");
    let mut i = 2;
    let mut facts = None;
    loop {
        // Fill bytes before a marker are allowed.
        while d.get(i) == Some(&0xFF) && d.get(i + 1) == Some(&0xFF) {
            i += 1;
        }
        let (Some(0xFF), Some(&marker)) = (d.get(i), d.get(i + 1)) else { return Err(cut("bad segment")) };
        if marker == 0xDA {
            break; // start of scan: entropy-coded data follows
        }
        let len =
            d.get(i + 2..i + 4).map(|b| usize::from(u16::from_be_bytes([b[0], b[1]]))).ok_or_else(|| cut("segment"))?;
        if len < 2 || i + 2 + len > d.len() {
            return Err(cut("segment runs past the end"));
        }
        if (0xC0..=0xCF).contains(&marker) && !matches!(marker, 0xC4 | 0xC8 | 0xCC) && len >= 8 {
            let s = &d[i + 4..i + 2 + len];
            facts = Some(ImageFacts {
                mime: "image/jpeg",
                height: u32::from(u16::from_be_bytes([s[1], s[2]])),
                width: u32::from(u16::from_be_bytes([s[3], s[4]])),
                depth: u32::from(s[0]) * u32::from(s[5]),
                colors: 0,
            });
        }
        i += 2 + len;
    }
    let facts = facts.ok_or_else(|| cut("no frame header before the scan"))?;
    // The image ends with EOI; some writers append a few bytes after it.
    let tail = &d[d.len().saturating_sub(4096).max(i)..];
    if !tail.windows(2).any(|w| w == [0xFF, 0xD9]) {
        return Err(cut("no end-of-image marker"));
    }
    Ok(facts)
}

fn gif(d: &[u8]) -> Result<ImageFacts, String> {
    if d.len() < 14 || d.last() != Some(&0x3B) {
        return Err("GIF truncated or damaged (no trailer)".into());
    }
    let packed = d[10];
    let bits = u32::from(packed & 7) + 1;
    Ok(ImageFacts {
        mime: "image/gif",
        width: u32::from(u16::from_le_bytes([d[6], d[7]])),
        height: u32::from(u16::from_le_bytes([d[8], d[9]])),
        depth: bits,
        colors: if packed & 0x80 != 0 { 1 << bits } else { 0 },
    })
}

fn webp(d: &[u8]) -> Result<ImageFacts, String> {
    let cut = |what: &str| format!("WebP truncated or damaged ({what})");
    let riff = u32::from_le_bytes([d[4], d[5], d[6], d[7]]) as usize;
    if riff + 8 > d.len() || d.len() < 30 {
        return Err(cut("shorter than its RIFF size"));
    }
    let le24 = |i: usize| u32::from(d[i]) | u32::from(d[i + 1]) << 8 | u32::from(d[i + 2]) << 16;
    let (width, height, depth) = match &d[12..16] {
        b"VP8X" => (le24(24) + 1, le24(27) + 1, if d[20] & 0x10 != 0 { 32 } else { 24 }),
        b"VP8L" if d[20] == 0x2F => {
            let b = u32::from_le_bytes([d[21], d[22], d[23], d[24]]);
            ((b & 0x3FFF) + 1, ((b >> 14) & 0x3FFF) + 1, if (b >> 28) & 1 != 0 { 32 } else { 24 })
        }
        b"VP8 " if d[23..26] == [0x9D, 0x01, 0x2A] => (
            u32::from(u16::from_le_bytes([d[26], d[27]]) & 0x3FFF),
            u32::from(u16::from_le_bytes([d[28], d[29]]) & 0x3FFF),
            24,
        ),
        _ => return Err(cut("no VP8/VP8L/VP8X header")),
    };
    Ok(ImageFacts { mime: "image/webp", width, height, depth, colors: 0 })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(kind: &[u8], body: &[u8]) -> Vec<u8> {
        let mut v = (body.len() as u32).to_be_bytes().to_vec();
        v.extend(kind);
        v.extend(body);
        let mut k = kind.to_vec();
        k.extend(body);
        v.extend(crc32(&k).to_be_bytes());
        v
    }

    fn png_bytes(w: u32, h: u32, color: u8) -> Vec<u8> {
        let mut d = b"\x89PNG\r\n\x1a\n".to_vec();
        let mut ihdr = w.to_be_bytes().to_vec();
        ihdr.extend(h.to_be_bytes());
        ihdr.extend([8, color, 0, 0, 0]);
        d.extend(chunk(b"IHDR", &ihdr));
        if color == 3 {
            d.extend(chunk(b"PLTE", &[0; 12]));
        }
        d.extend(chunk(b"IDAT", b"x\x9c"));
        d.extend(chunk(b"IEND", b""));
        d
    }

    #[test]
    fn the_crc_is_the_png_one() {
        assert_eq!(crc32(b"IEND"), 0xAE42_6082);
    }

    #[test]
    fn a_whole_png_gives_its_facts() {
        let f = inspect(&png_bytes(2, 3, 6)).unwrap();
        assert_eq!((f.mime, f.width, f.height, f.depth, f.colors), ("image/png", 2, 3, 32, 0));
        let f = inspect(&png_bytes(4, 4, 3)).unwrap();
        assert_eq!((f.depth, f.colors), (8, 4));
    }

    /// Regression: `art set` accepted a truncated PNG (30 bytes) and served it as the
    /// album's cover.
    #[test]
    fn truncated_or_damaged_images_are_refused() {
        let good = png_bytes(2, 3, 2);
        for cut in [30, 40, good.len() - 12, good.len() - 1] {
            let e = inspect(&good[..cut]).unwrap_err();
            assert!(e.contains("truncated"), "{cut}: {e}");
        }
        let mut bad = good.clone();
        bad[20] ^= 1;
        assert!(inspect(&bad).unwrap_err().contains("CRC"));
        assert!(inspect(&png_bytes(0, 3, 2)).unwrap_err().contains("no size"));
        assert!(inspect(b"hello").unwrap_err().contains("not a JPEG"));
        // JPEG: a frame header, a scan, the end marker.
        let mut jpg = vec![0xFF, 0xD8, 0xFF, 0xC0, 0, 11, 8, 0, 5, 0, 7, 1, 1, 0x11, 0];
        jpg.extend([0xFF, 0xDA, 0, 2, 1, 2, 3, 0xFF, 0xD9]);
        let f = inspect(&jpg).unwrap();
        assert_eq!((f.width, f.height, f.depth), (7, 5, 8));
        assert!(inspect(&jpg[..jpg.len() - 2]).unwrap_err().contains("end-of-image"));
        assert!(inspect(&jpg[..10]).is_err());
        let gif = [b"GIF89a".as_slice(), &[3, 0, 2, 0, 0x80, 0, 0], &[0; 6], &[0x3B]].concat();
        assert_eq!(inspect(&gif).unwrap().width, 3);
        assert!(inspect(&gif[..gif.len() - 1]).is_err());
    }

    /// Hostile input: seeded truncations, bit flips and inserted bytes of every format
    /// never panic, and whatever is accepted has a size.
    #[test]
    fn mutated_images_never_panic() {
        let mut jpg = vec![0xFF, 0xD8, 0xFF, 0xC0, 0, 11, 8, 0, 5, 0, 7, 1, 1, 0x11, 0];
        jpg.extend([0xFF, 0xDA, 0, 2, 1, 2, 3, 0xFF, 0xD9]);
        let gif = [b"GIF89a".as_slice(), &[3, 0, 2, 0, 0x80, 0, 0], &[0; 6], &[0x3B]].concat();
        let mut webp = b"RIFF\x16\x00\x00\x00WEBPVP8X\x0a\x00\x00\x00".to_vec();
        webp.extend([0x10, 0, 0, 0, 1, 0, 0, 2, 0, 0]);
        let seeds = [png_bytes(3, 2, 6), png_bytes(4, 4, 3), jpg, gif, webp];
        let mut x = 0x1234_5678_u64;
        let mut next = || {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (x >> 33) as usize
        };
        for seed in &seeds {
            for _ in 0..3000 {
                let mut d = seed.clone();
                match next() % 3 {
                    0 => d.truncate(next() % (d.len() + 1)),
                    1 => {
                        let i = next() % d.len();
                        d[i] ^= 1 << (next() % 8);
                    }
                    _ => {
                        let i = next() % (d.len() + 1);
                        d.insert(i, next() as u8);
                    }
                }
                if let Ok(f) = inspect(&d) {
                    assert!(f.width > 0 && f.height > 0, "{f:?}");
                }
            }
        }
    }
}

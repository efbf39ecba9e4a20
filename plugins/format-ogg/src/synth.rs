//! Synthesis for Ogg Vorbis, Opus, FLAC and Speex: a regenerated comment packet, re-laced
//! header pages. (FLAC: the comment is a `VORBIS_COMMENT` metadata block and pictures are
//! `PICTURE` blocks, one a packet, the last one flagged; the identification packet's count
//! of header packets is patched when it states one.)
//!
//! The identification page is served verbatim. The comment packet is rebuilt (Vorbis
//! comment block, pictures as `METADATA_BLOCK_PICTURE`, the Vorbis framing bit, or the
//! original Opus padding data), and laced with the Vorbis setup packet into as many pages
//! as the original used, so every later page is served byte-identical. When the packets
//! need more pages than that, the later pages of this stream are renumbered: each one's
//! header is served patched (sequence number, and a CRC corrected through the CRC's
//! linearity, which needs only the header and the page length, never the body) in front
//! of its untouched body. Pages of other serials and anything after this stream's end
//! (chained streams) are served unchanged. A header region shared with another serial
//! is served unchanged (passthrough).

use base64::Engine;
use musefs_format_util::{picture, vorbis};
use musefs_plugin_api::{Plan, PlanRequest, PluginError, PluginResult, Segment, Source};

use crate::page::{self, crc32};

/// Most segments a page holds.
const MAX_SEGS: usize = 255;

struct HeaderPages {
    serial: u32,
    /// `(offset, len)` of the first page.
    first: (u64, u64),
    /// The header packets of our serial.
    packets: Vec<Vec<u8>>,
    /// Pages of our serial holding the packets after the first.
    rest_pages: usize,
    /// Whether another serial's page sits in the header region.
    mixed: bool,
}

fn read_headers(src: &Source, header_end: u64) -> PluginResult<HeaderPages> {
    let mut pos = 0u64;
    let mut serial = None;
    let mut out = HeaderPages { serial: 0, first: (0, 0), packets: Vec::new(), rest_pages: 0, mixed: false };
    let mut partial = Vec::new();
    while pos < header_end {
        // As the reader does: garbage before a page is skipped (it is not served: the
        // header region is rewritten), a header page whose CRC fails is rewritten anyway.
        let page::Read { at, page: p, bytes: whole, .. } = page::read_at(src, pos)?;
        if at >= header_end {
            // Damage before the audio, skipped by the resync (the reader ended the
            // headers there).
            pos = header_end;
            break;
        }
        pos = at;
        let s = *serial.get_or_insert(p.serial);
        if p.serial != s {
            out.mixed = true;
        } else {
            if p.sequence == 0 || out.first.1 == 0 {
                out.first = (pos, p.len());
            } else {
                out.rest_pages += 1;
            }
            let mut at = p.header_len;
            for &l in &p.lacing {
                partial.extend_from_slice(&whole[at..at + l as usize]);
                at += l as usize;
                if l < 255 {
                    out.packets.push(std::mem::take(&mut partial));
                }
            }
        }
        pos += p.len();
    }
    if pos != header_end {
        return Err(PluginError::invalid_data("the catalog's Ogg header region does not end on a page: rescan it"));
    }
    out.serial = serial.unwrap_or(0);
    Ok(out)
}

/// A FLAC metadata block (the last-block flag is set by the caller).
fn flac_block(kind: u8, body: Vec<u8>) -> PluginResult<Vec<u8>> {
    let n = u32::try_from(body.len())
        .ok()
        .filter(|&n| n < 1 << 24)
        .ok_or_else(|| PluginError::invalid_data("a FLAC metadata block over 16 MiB (a picture too large for FLAC)"))?;
    let mut out = Vec::with_capacity(4 + body.len());
    out.push(kind);
    out.extend(&n.to_be_bytes()[1..]);
    out.extend(body);
    Ok(out)
}

/// Lacing values of one packet.
fn lacing(len: usize) -> impl Iterator<Item = u8> {
    std::iter::repeat_n(255u8, len / 255).chain(std::iter::once((len % 255) as u8))
}

/// Builds `pages` pages (sequence numbers from 1) holding `packets`, or `None` if they
/// need more; `packets` must need at least `pages` segments.
fn lay_out(serial: u32, packets: &[Vec<u8>], pages: usize) -> Vec<Vec<u8>> {
    let segs: Vec<u8> = packets.iter().flat_map(|p| lacing(p.len())).collect();
    let data: Vec<u8> = packets.concat();
    let mut out = Vec::with_capacity(pages);
    let (mut si, mut di) = (0usize, 0usize);
    let mut continued = false;
    for i in 0..pages {
        let left_pages = pages - i - 1;
        let take = (segs.len() - si - left_pages).min(MAX_SEGS);
        let lace = &segs[si..si + take];
        let body_len: usize = lace.iter().map(|&l| l as usize).sum();
        let mut p = Vec::with_capacity(27 + take + body_len);
        p.extend(b"OggS");
        p.push(0);
        p.push(if continued { 1 } else { 0 });
        p.extend(0u64.to_le_bytes());
        p.extend(serial.to_le_bytes());
        p.extend((i as u32 + 1).to_le_bytes());
        p.extend([0u8; 4]);
        p.push(take as u8);
        p.extend(lace);
        p.extend(&data[di..di + body_len]);
        let crc = crc32(&p);
        p[22..26].copy_from_slice(&crc.to_le_bytes());
        out.push(p);
        continued = lace.last().is_some_and(|&l| l == 255);
        si += take;
        di += body_len;
    }
    out
}

/// The CRC of `d` followed by `zeros` zero bytes (init 0, no final xor, as Ogg's).
fn crc_shifted(d: &[u8; 4], zeros: usize) -> u32 {
    // crc32 is linear over GF(2) with a zero initial value, so the CRC of a message that
    // differs from another only in `d` changes by exactly this value.
    let mut c = crc32(d);
    let zeros_block = [0u8; 4096];
    let mut left = zeros;
    while left > 0 {
        let n = left.min(zeros_block.len());
        c = page::crc32_update(c, &zeros_block[..n]);
        left -= n;
    }
    c
}

/// A page header with its sequence number changed to `seq` and its CRC patched.
pub fn renumber(header: &[u8], body_len: usize, seq: u32) -> Vec<u8> {
    let mut h = header.to_vec();
    let old: [u8; 4] = h[18..22].try_into().expect("4 bytes");
    let new = seq.to_le_bytes();
    let diff = [old[0] ^ new[0], old[1] ^ new[1], old[2] ^ new[2], old[3] ^ new[3]];
    let zeros = h.len() - 22 + body_len;
    let crc = u32::from_le_bytes(h[22..26].try_into().expect("4 bytes")) ^ crc_shifted(&diff, zeros);
    h[18..22].copy_from_slice(&new);
    h[22..26].copy_from_slice(&crc.to_le_bytes());
    h
}

fn push_origin(segs: &mut Vec<Segment>, offset: u64, len: u64) {
    if let Some(last) = segs.last_mut() {
        if last.kind == musefs_plugin_api::SegmentKind::ORIGIN && last.offset + last.len == offset {
            last.len += len;
            return;
        }
    }
    segs.push(Segment::origin(offset, len));
}

/// The synthesis layout (see the module docs).
///
/// # Errors
/// `INVALID_DATA` if the file no longer matches the catalog's header region.
pub fn synthesize(src: &Source, req: &PlanRequest) -> PluginResult<Plan> {
    let info = &req.info;
    let len = src.len();
    let header_end =
        info.regions.iter().find(|r| r.kind.as_str() == "ogg-headers").map(|r| r.offset + r.len).ok_or_else(|| {
            PluginError::invalid_data("the catalog has no Ogg header region for this file: rescan it")
        })?;
    if header_end > len || header_end != info.audio_offset {
        return Err(PluginError::invalid_data("the catalog's Ogg header region is outside the file: rescan it"));
    }
    let h = read_headers(src, header_end)?;
    let format = info.format.as_str();
    let (opus, flac, speex) = (format == "ogg-opus", format == "ogg-flac", format == "ogg-speex");
    let needed = match format {
        "ogg-opus" => 2,
        "ogg-vorbis" => 3,
        _ => h.packets.len().max(2),
    };
    let flac_ok = !flac
        || (h.packets.first().is_some_and(|p| p.starts_with(b"\x7fFLAC") && p.len() >= 9)
            && h.packets.get(1).and_then(|p| p.first()).map(|b| b & 0x7f) == Some(4));
    if h.mixed || h.packets.len() != needed || h.rest_pages == 0 || !flac_ok {
        // Multiplexed headers (or an unusual packet split): served as they are.
        return Ok(Plan::passthrough(len));
    }
    let vendor = info.extra.iter().find(|kv| kv.key.as_str() == "vendor").map_or("musefs", |kv| kv.value.as_str());
    let mut fields = vorbis::fields_from_tags(&req.tags);
    if !flac {
        for p in req.pictures.iter() {
            let b64 = base64::engine::general_purpose::STANDARD.encode(picture::write_flac_picture(p));
            fields.push(("METADATA_BLOCK_PICTURE".into(), b64));
        }
    }
    let mut packets = Vec::new();
    if flac {
        // One metadata block a packet: the new VORBIS_COMMENT, the original's other
        // blocks (not its comments, pictures or padding), the pictures as PICTURE blocks.
        packets.push(flac_block(4, vorbis::write(vendor, &fields))?);
        for p in &h.packets[2..] {
            // (Empty packets, which ffmpeg's muxer leaves, are no metadata block.)
            if !matches!(p.first().map(|b| b & 0x7f), None | Some(1 | 4 | 6)) {
                packets.push(p.clone());
            }
        }
        for p in req.pictures.iter() {
            packets.push(flac_block(6, picture::write_flac_picture(p))?);
        }
    } else {
        let mut comment = match (opus, speex) {
            (true, _) => b"OpusTags".to_vec(),
            (_, true) => Vec::new(),
            _ => b"\x03vorbis".to_vec(),
        };
        comment.extend(vorbis::write(vendor, &fields));
        let old_comment = &h.packets[1];
        if opus {
            // Keep the original padding data (after the comment block) as it was.
            let prefix = 8;
            let consumed =
                vorbis::parse(&old_comment[prefix..]).map(|c| c.consumed).unwrap_or(old_comment.len() - prefix);
            comment.extend(&old_comment[prefix + consumed..]);
        } else if !speex {
            comment.push(1); // framing bit
        }
        packets.push(comment);
        packets.extend(h.packets[2..].iter().cloned());
    }
    let segs_needed = |ps: &[Vec<u8>]| ps.iter().map(|p| p.len() / 255 + 1).sum::<usize>();
    let mut pages = h.rest_pages;
    let k = segs_needed(&packets);
    if k < pages {
        if flac {
            // Fewer segments than pages: a PADDING block of `pages - k` segments.
            packets.push(flac_block(1, vec![0; (pages - k - 1) * 255])?);
        } else {
            // Fewer segments than pages: pad the comment packet (ignored trailing bytes).
            let n = packets[0].len();
            packets[0].resize(n + (pages - k) * 255, 0);
        }
    } else if k > pages * MAX_SEGS {
        pages = k.div_ceil(MAX_SEGS);
    }
    let mut segs = vec![Segment::origin(h.first.0, h.first.1)];
    if flac {
        // The last block carries the last-metadata flag; the identification packet's
        // count of header packets (when it states one) follows the new list.
        let n = packets.len();
        for (i, p) in packets.iter_mut().enumerate() {
            p[0] = (p[0] & 0x7f) | if i + 1 == n { 0x80 } else { 0 };
        }
        let first = src.read_vec(h.first.0, h.first.1 as usize)?;
        // (A first page failing its CRC is read anyway, as the reader did; rewritten,
        // it gets a good one.)
        let (fp, _) = page::parse_lenient(&first, 0)
            .map_err(|_| PluginError::invalid_data("the first Ogg page changed: rescan it"))?;
        let at = fp.header_len + 7;
        let count = first.get(at..at + 2).map_or(0, |b| u16::from_be_bytes([b[0], b[1]]));
        if count != 0 {
            let new = u16::try_from(n).map_err(|_| PluginError::invalid_data("too many FLAC metadata blocks"))?;
            let mut page = first.clone();
            page[at..at + 2].copy_from_slice(&new.to_be_bytes());
            page[22..26].copy_from_slice(&[0; 4]);
            let crc = crc32(&page);
            page[22..26].copy_from_slice(&crc.to_le_bytes());
            segs[0] = Segment::literal(page);
        }
    }
    let delta = pages as i64 - h.rest_pages as i64;
    segs.push(Segment::literal(lay_out(h.serial, &packets, pages).concat()));
    if delta == 0 {
        segs.push(Segment::origin(header_end, len - header_end));
        return Ok(Plan { segments: segs.into() });
    }
    // Renumber the later pages of this stream.
    let mut pos = header_end;
    while pos < len {
        let head = src.read_vec(pos, 27 + 255)?;
        if head.len() < 27 || &head[..4] != b"OggS" {
            return Err(PluginError::invalid_data(format!(
                "no Ogg page at offset {pos}: cannot renumber the pages after the grown header"
            )));
        }
        let hl = 27 + head[26] as usize;
        if head.len() < hl {
            return Err(PluginError::invalid_data(format!("truncated Ogg page header at offset {pos}")));
        }
        let body: usize = head[27..hl].iter().map(|&b| b as usize).sum();
        let total = (hl + body) as u64;
        if pos + total > len {
            return Err(PluginError::invalid_data(format!("truncated Ogg page at offset {pos}")));
        }
        let serial = u32::from_le_bytes(head[14..18].try_into().expect("4 bytes"));
        if serial != h.serial {
            push_origin(&mut segs, pos, total);
        } else {
            let seq = u32::from_le_bytes(head[18..22].try_into().expect("4 bytes"));
            let new_seq = (i64::from(seq) + delta) as u32;
            segs.push(Segment::literal(renumber(&head[..hl], body, new_seq)));
            segs.push(Segment::origin(pos + hl as u64, body as u64));
            if head[5] & 4 != 0 {
                // End of this stream: what follows (a chained stream) is served as it is.
                pos += total;
                push_origin(&mut segs, pos, len - pos);
                break;
            }
        }
        pos += total;
    }
    segs.retain(|s| s.len > 0);
    Ok(Plan { segments: segs.into() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renumbered_crc_equals_a_full_recompute() {
        let packets = vec![vec![7u8; 1000], vec![9u8; 300]];
        let pages = lay_out(0x1234, &packets, 2);
        for p in &pages {
            let parsed = page::parse(p, 0).unwrap();
            let patched = renumber(&p[..parsed.header_len], parsed.body_len, 77);
            let mut whole = patched.clone();
            whole.extend(&p[parsed.header_len..]);
            let again = page::parse(&whole, 0).expect("CRC must check");
            assert_eq!(again.sequence, 77);
        }
    }

    #[test]
    fn lay_out_spreads_packets_over_the_asked_pages() {
        let packets = vec![vec![1u8; 600], vec![2u8; 10]];
        let pages = lay_out(5, &packets, 3);
        assert_eq!(pages.len(), 3);
        let mut data: Vec<u8> = Vec::new();
        let mut prev_open = false;
        for (i, p) in pages.iter().enumerate() {
            let parsed = page::parse(p, 0).unwrap();
            assert_eq!(parsed.sequence, i as u32 + 1);
            assert_eq!(parsed.flags & 1 != 0, prev_open, "continued flag of page {i}");
            prev_open = parsed.lacing.last() == Some(&255);
            data.extend(&p[parsed.header_len..]);
        }
        assert_eq!(data, packets.concat());
    }
}

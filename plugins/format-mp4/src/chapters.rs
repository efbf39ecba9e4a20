//! Chapters: QuickTime chapter tracks (a `text` track whose samples are the titles, what
//! ffmpeg, iTunes and most audiobook tools write) and Nero `chpl` atoms in `moov/udta`.
//! Both are kept byte for byte in synthesis; this module only reads them, for the
//! catalog (`musefs tag show` lists them).

use musefs_plugin_api::{PluginResult, Source};

use crate::atom::{children, Atom};

/// Most chapters read (a damaged table must not make the scan read millions of samples).
const MAX_CHAPTERS: usize = 4096;

/// One chapter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chapter {
    /// Start, in milliseconds.
    pub start_ms: u64,
    /// Title.
    pub title: String,
}

/// `HH:MM:SS.mmm Title`, one line a chapter.
pub fn render(chapters: &[Chapter]) -> String {
    chapters
        .iter()
        .map(|c| {
            let ms = c.start_ms;
            format!("{:02}:{:02}:{:02}.{:03} {}", ms / 3_600_000, ms / 60_000 % 60, ms / 1000 % 60, ms % 1000, c.title)
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn be32(b: &[u8], i: usize) -> u32 {
    b.get(i..i + 4).map_or(0, |x| u32::from_be_bytes([x[0], x[1], x[2], x[3]]))
}

fn be64(b: &[u8], i: usize) -> u64 {
    b.get(i..i + 8).map_or(0, |x| u64::from_be_bytes(x.try_into().expect("8")))
}

fn body<'a>(data: &'a [u8], base: u64, a: &Atom) -> &'a [u8] {
    let (s, e) = ((a.body() - base) as usize, (a.end() - base) as usize);
    data.get(s..e).unwrap_or_default()
}

fn child<'a>(data: &'a [u8], base: u64, kind: &[u8; 4]) -> Option<(&'a [u8], u64)> {
    let a = children(data, base).ok()?.into_iter().find(|a| &a.kind == kind)?;
    Some((body(data, base, &a), a.body()))
}

/// Chapters of a Nero `chpl` atom body.
pub fn nero(chpl: &[u8]) -> Vec<Chapter> {
    let mut out = Vec::new();
    let Some(&version) = chpl.first() else { return out };
    let mut i = if version >= 1 { 8 } else { 4 };
    let Some(&count) = chpl.get(i) else { return out };
    i += 1;
    for _ in 0..count {
        let (Some(start), Some(&n)) = (chpl.get(i..i + 8), chpl.get(i + 8)) else { break };
        let start = u64::from_be_bytes(start.try_into().expect("8"));
        let Some(t) = chpl.get(i + 9..i + 9 + n as usize) else { break };
        out.push(Chapter { start_ms: start / 10_000, title: String::from_utf8_lossy(t).into_owned() });
        i += 9 + n as usize;
    }
    out
}

/// A chapter title sample: a 16-bit length and the text (UTF-8, or UTF-16 with a BOM).
fn title_of(sample: &[u8]) -> String {
    let n = sample.get(..2).map_or(0, |b| u16::from_be_bytes([b[0], b[1]]) as usize);
    let t = sample.get(2..2 + n).unwrap_or_else(|| sample.get(2..).unwrap_or_default());
    if t.starts_with(&[0xFE, 0xFF]) {
        let units: Vec<u16> = t[2..].chunks_exact(2).map(|c| u16::from_be_bytes([c[0], c[1]])).collect();
        String::from_utf16_lossy(&units)
    } else {
        String::from_utf8_lossy(t).into_owned()
    }
}

/// Chapters from the first `text` track of a `moov` (its bytes at file offset `start`),
/// reading the title samples through `src`.
///
/// # Errors
/// The origin's error if a sample cannot be read; a damaged table gives no chapters.
pub fn text_track(moov: &[u8], start: u64, src: &Source) -> PluginResult<Vec<Chapter>> {
    let Some(body_all) = moov.get(8..) else { return Ok(Vec::new()) };
    let Ok(traks) = children(body_all, start + 8) else { return Ok(Vec::new()) };
    for trak in traks.iter().filter(|a| &a.kind == b"trak") {
        let tb = body(moov, start, trak);
        let Some((mdia, mb)) = child(tb, trak.body(), b"mdia") else { continue };
        let Some((hdlr, _)) = child(mdia, mb, b"hdlr") else { continue };
        if hdlr.get(8..12) != Some(b"text") {
            continue;
        }
        let Some((mdhd, _)) = child(mdia, mb, b"mdhd") else { continue };
        let timescale = u64::from(if mdhd.first() == Some(&1) { be32(mdhd, 20) } else { be32(mdhd, 12) });
        let Some((stbl, sb)) = child(mdia, mb, b"minf").and_then(|(minf, nb)| child(minf, nb, b"stbl")) else {
            continue;
        };
        let table = |k: &[u8; 4]| child(stbl, sb, k).map(|(b, _)| b);
        let (Some(stts), Some(stsz), Some(stsc)) = (table(b"stts"), table(b"stsz"), table(b"stsc")) else { continue };
        // Entry counts are bounded by what the tables hold (a damaged count claims
        // billions) and by MAX_CHAPTERS.
        let entries = |t: &[u8], width: usize| (be32(t, 4) as usize).min(t.len().saturating_sub(8) / width);
        let offsets: Vec<u64> = match (table(b"stco"), table(b"co64")) {
            (Some(t), _) => (0..entries(t, 4).min(MAX_CHAPTERS)).map(|i| u64::from(be32(t, 8 + 4 * i))).collect(),
            (None, Some(t)) => (0..entries(t, 8).min(MAX_CHAPTERS)).map(|i| be64(t, 8 + 8 * i)).collect(),
            _ => continue,
        };
        // Sample sizes.
        let fixed = be32(stsz, 4);
        let count = (be32(stsz, 8) as usize).min(MAX_CHAPTERS);
        let size = |i: usize| if fixed != 0 { fixed } else { be32(stsz, 12 + 4 * i) };
        // Sample offsets: chunk by chunk, `samples_per_chunk` from the stsc run it is in.
        let runs: Vec<(u32, u32)> = (0..entries(stsc, 12))
            .map(|i| (be32(stsc, 8 + 12 * i), be32(stsc, 12 + 12 * i)))
            .take(MAX_CHAPTERS)
            .collect();
        let mut sample_at = Vec::with_capacity(count);
        for (ci, &off) in offsets.iter().enumerate().take(MAX_CHAPTERS) {
            let per = runs.iter().rev().find(|(first, _)| *first as usize <= ci + 1).map_or(1, |r| r.1);
            let mut o = off;
            for _ in 0..per {
                if sample_at.len() == count {
                    break;
                }
                let n = size(sample_at.len());
                sample_at.push((o, n));
                o += u64::from(n);
            }
        }
        // Start times from the sample durations.
        let mut starts = Vec::with_capacity(count);
        let mut t = 0u64;
        'runs: for i in 0..entries(stts, 8) {
            let (n, delta) = (be32(stts, 8 + 8 * i), u64::from(be32(stts, 12 + 8 * i)));
            for _ in 0..n {
                if starts.len() == count {
                    break 'runs;
                }
                starts.push(t);
                t = t.saturating_add(delta);
            }
        }
        let mut out = Vec::new();
        for ((o, n), s) in sample_at.into_iter().zip(starts) {
            if o.saturating_add(u64::from(n)) > src.len() || n > 64 * 1024 {
                break;
            }
            let sample = src.read_vec(o, n as usize)?;
            let start_ms = s.saturating_mul(1000).checked_div(timescale).unwrap_or(0);
            out.push(Chapter { start_ms, title: title_of(&sample) });
        }
        return Ok(out);
    }
    Ok(Vec::new())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nero_chapters_and_rendering() {
        let mut chpl = vec![1, 0, 0, 0, 0, 0, 0, 0, 2];
        for (start, t) in [(0u64, "Intro"), (15_000_000_000u64, "Part Two")] {
            chpl.extend(start.to_be_bytes());
            chpl.push(t.len() as u8);
            chpl.extend(t.as_bytes());
        }
        let ch = nero(&chpl);
        assert_eq!(render(&ch), "00:00:00.000 Intro\n00:25:00.000 Part Two");
        assert!(nero(&chpl[..12]).is_empty(), "a cut table gives what is whole");
    }

    #[test]
    fn titles_in_utf8_and_utf16() {
        assert_eq!(title_of(b"\x00\x03One"), "One");
        assert_eq!(title_of(b"\x00\x06\xfe\xff\x00T\x00w"), "Tw");
        assert_eq!(title_of(b"\x00\x09cut"), "cut");
    }
}

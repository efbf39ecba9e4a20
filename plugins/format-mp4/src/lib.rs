//! musefs format plugin `mp4`: M4A, M4B and MP4 audio (AAC, ALAC).
//!
//! Layout of an MP4 file as this plugin sees it (top-level atoms, any order after `ftyp`):
//!
//! ```text
//! ftyp | moov { mvhd, trak { .. stbl { stsd, stco | co64, .. } }, udta { meta { hdlr, ilst } } } | free | mdat
//! ```
//!
//! ## Read
//! The `ilst` items (see [`ilst`]); audio properties from the sound track's `mdhd`
//! (duration) and `stsd` entry (`mp4a` or `alac`: channels, sample rate; ALAC's bit
//! depth from its magic cookie); chapters (see [`chapters`]) into the catalog's extra
//! `chapters`; the audio range is the first `mdat`'s payload.
//!
//! ## Synthesis
//! A new `moov`: every atom verbatim but `udta/meta/ilst`, rebuilt from the catalog
//! (created with its `meta`/`hdlr` when missing). When the new `moov` is shorter by 8
//! bytes or more, a `free` atom takes up the difference, so nothing after it moves;
//! otherwise, if `mdat` follows `moov`, every chunk offset (`stco`/`co64`) pointing past
//! the old `moov` is shifted by the size difference. Served: the bytes before `moov`
//! and after it as origin ranges, the new `moov` as a literal. Fragmented files (`moof`)
//! and files with more than one sound track are served as they are (a warning says so).

pub mod atom;
pub mod chapters;
pub mod ilst;

use musefs_format_util::options::Options;
use musefs_plugin_api::{
    AudioProps, Format, KeyValue, Plan, PlanRequest, PluginError, PluginResult, Region, Segment, Source, TrackInfo,
};

use atom::{build, children, parse_header, Atom};

/// The largest `moov` read (long audiobooks have large sample tables).
const MAX_MOOV: u64 = 256 * 1024 * 1024;

/// The MP4 format.
pub struct Mp4;

/// The top-level atoms of a file, and what was tolerated.
///
/// A file cut short (a download or copy that stopped) ends inside its last atom: when
/// that is `mdat`, the audio runs to the end of the file, as players read it; when it
/// is `moov` (written after the audio), the atoms of it that are whole are read (the
/// tags, at its end, are what a cut usually loses).
fn top_level(src: &Source) -> PluginResult<Vec<Atom>> {
    Ok(top_level_warned(src)?.0)
}

fn top_level_warned(src: &Source) -> PluginResult<(Vec<Atom>, Vec<String>)> {
    let len = src.len();
    let mut out = Vec::new();
    let mut warnings = Vec::new();
    let mut pos = 0u64;
    while pos + 8 <= len {
        let head = src.read_vec(pos, 16)?;
        let a = match parse_header(&head, pos, len) {
            // A `moov` whose size is damaged and too large (see `end_moov_at_mdat`).
            Ok(mut a) if &a.kind == b"moov" => {
                end_moov_at_mdat(src, &mut a, len, &mut warnings)?;
                a
            }
            Ok(a) => a,
            Err(e) if matches!(&head[4..8], b"mdat" | b"moov") && parse_header(&head, pos, u64::MAX).is_ok() => {
                let mut a = parse_header(&head, pos, u64::MAX).map_err(|_| e)?;
                // A `moov` claiming more than the file has, whose children reach the `mdat`.
                if &a.kind == b"moov" && end_moov_at_mdat(src, &mut a, len, &mut warnings)? {
                    pos = a.end();
                    out.push(a);
                    continue;
                }
                warnings.push(format!(
                    "truncated: the {} atom claims {} bytes, the file has {}; read up to the end",
                    String::from_utf8_lossy(&a.kind),
                    a.len,
                    len - pos
                ));
                a.len = len - pos;
                if a.len < a.header {
                    break;
                }
                a
            }
            // Trailing junk after the last atom (a tagger's leftover): ignored, as
            // players do, once the atoms that matter were seen.
            Err(_)
                if out.iter().any(|a: &Atom| &a.kind == b"moov") && out.iter().any(|a: &Atom| &a.kind == b"mdat") =>
            {
                break
            }
            // A header past the `moov` that cannot be read, and no `mdat` yet: the damaged
            // header of the `mdat`, or of an atom before it (ffmpeg plays such a file
            // through the chunk offsets). The rest of the file is read as the `mdat`
            // (its type here is what it is read as), served as it is.
            Err(e) if out.iter().any(|a: &Atom| &a.kind == b"moov") => {
                warnings.push(format!(
                    "damaged: the header of the `{}` atom at offset {pos} cannot be read ({e}); the rest of the file \
                     is taken for the audio",
                    String::from_utf8_lossy(&head[4..8]).escape_debug()
                ));
                out.push(Atom { kind: *b"mdat", start: pos, header: 8, len: len - pos });
                break;
            }
            Err(e) => return Err(e),
        };
        pos = a.end();
        out.push(a);
    }
    Ok((out, warnings))
}

/// Containers whose children a player reads whatever they are (ffmpeg walks them all
/// with one table of atom types, not per parent).
const PLAIN_CONTAINERS: &[&[u8; 4]] = &[b"dinf", b"edts", b"mdia", b"minf", b"mvex", b"stbl", b"tref", b"udta"];

/// Ends `moov` where its children reach an `mdat` atom before the end it claims (its size
/// damaged, a flipped bit, to claim more: ffmpeg reads its children up to the `mdat` the
/// same way), with a warning; whether it did.
fn end_moov_at_mdat(src: &Source, moov: &mut Atom, len: u64, warnings: &mut Vec<String>) -> PluginResult<bool> {
    let mut pos = moov.body();
    while pos + 8 <= len.min(moov.end()) {
        let head = src.read_vec(pos, 16)?;
        let Ok(a) = parse_header(&head, pos, len) else { return Ok(false) };
        if &a.kind == b"mdat" {
            warnings.push(format!(
                "damaged: the moov atom claims {} bytes; its atoms end at the mdat atom at offset {pos}: read as \
                 ending there",
                moov.len
            ));
            moov.len = pos - moov.start;
            return Ok(true);
        }
        pos = a.end();
    }
    Ok(false)
}

/// A child atom of `data` (an atom body at file offset `base`) by type, read as players
/// do (see [`atom::children_lenient`]).
///
/// When the last child claims more bytes than its parent has (a damaged size: it is cut
/// at the parent's end) and is a plain container, the siblings that followed it now sit
/// inside it: ffmpeg, which reads any atom in any plain container, still finds them, so
/// they are looked for in there too (a track whose `edts` size is damaged keeps its
/// `mdia`).
fn child(data: &[u8], base: u64, kind: &[u8; 4]) -> Option<Atom> {
    let (mut data, mut base) = (data, base);
    loop {
        let kids = atom::children_lenient(data, base);
        if let Some(a) = kids.iter().find(|a| &a.kind == kind) {
            return Some(*a);
        }
        let last = kids.last()?;
        let rel = (last.start - base) as usize;
        let cut = parse_header(&data[rel..], last.start, base + data.len() as u64).is_err();
        if !cut || !PLAIN_CONTAINERS.contains(&&last.kind) {
            return None;
        }
        data = &data[(last.body() - base) as usize..];
        base = last.body();
    }
}

fn slice<'a>(moov: &'a [u8], moov_start: u64, a: &Atom) -> &'a [u8] {
    &moov[(a.body() - moov_start) as usize..(a.end() - moov_start) as usize]
}

/// The body of a `meta` atom's children: after its version/flags when it is a full box
/// (Apple), at once when it is not (older QuickTime files).
fn meta_children_offset(meta_body: &[u8]) -> usize {
    if meta_body.len() >= 12 && &meta_body[4..8] == b"hdlr" {
        0
    } else {
        // (A `meta` too short for its version/flags has no children.)
        4.min(meta_body.len())
    }
}

struct Sound {
    timescale: u32,
    duration: u64,
    codec: String,
    channels: u32,
    sample_rate: u32,
    bits: u32,
}

/// Top-level atom types that are not the media data.
const KNOWN_TOP_LEVEL: &[&[u8; 4]] =
    &[b"ftyp", b"moov", b"free", b"skip", b"wide", b"uuid", b"udta", b"meta", b"pdin", b"moof", b"mfra", b"sidx"];

/// Sample entry types of audio codecs: a track with one is a sound track whatever its
/// handler says (a damaged `hdlr` does not stop ffmpeg either).
const AUDIO_ENTRIES: &[&[u8; 4]] =
    &[b"mp4a", b"alac", b"ac-3", b"ec-3", b"Opus", b"fLaC", b".mp3", b"samr", b"sowt", b"twos", b"lpcm", b"ipcm"];

/// The sample table (`mdia/minf/stbl`) of a `trak` of a `moov` (its bytes at `start`).
fn stbl_of(moov: &[u8], start: u64, trak: &Atom) -> Option<Atom> {
    child(slice(moov, start, trak), trak.body(), b"mdia")
        .and_then(|mdia| child(slice(moov, start, &mdia), mdia.body(), b"minf"))
        .and_then(|minf| child(slice(moov, start, &minf), minf.body(), b"stbl"))
}

/// The smallest first chunk offset of the tracks of a `moov` (its bytes at `start`):
/// where the media data starts.
fn first_chunk_offset(moov: &[u8], start: u64) -> Option<u64> {
    let body = &moov[8.min(moov.len())..];
    let mut first: Option<u64> = None;
    for trak in atom::children_lenient(body, start + 8).iter().filter(|a| &a.kind == b"trak") {
        let Some(stbl) = stbl_of(moov, start, trak) else { continue };
        let sb = slice(moov, start, &stbl);
        let offset = if let Some(t) = child(sb, stbl.body(), b"stco") {
            slice(moov, start, &t).get(8..12).map(|b| u64::from(u32::from_be_bytes(b.try_into().expect("4"))))
        } else {
            child(sb, stbl.body(), b"co64")
                .and_then(|t| slice(moov, start, &t).get(8..16).map(|b| u64::from_be_bytes(b.try_into().expect("8"))))
        };
        if let Some(o) = offset {
            first = Some(first.map_or(o, |f| f.min(o)));
        }
    }
    first
}

/// The sound tracks of a `moov` (its bytes at `start`).
fn sound_tracks(moov: &[u8], start: u64) -> Vec<Sound> {
    let mut out = Vec::new();
    let body = &moov[8.min(moov.len())..];
    let traks = atom::children_lenient(body, start + 8);
    for trak in traks.iter().filter(|a| &a.kind == b"trak") {
        let tb = slice(moov, start, trak);
        let Some(mdia) = child(tb, trak.body(), b"mdia") else { continue };
        let mb = slice(moov, start, &mdia);
        let handler_says_sound =
            child(mb, mdia.body(), b"hdlr").is_some_and(|h| slice(moov, start, &h).get(8..12) == Some(b"soun"));
        let mut s = Sound { timescale: 0, duration: 0, codec: String::new(), channels: 0, sample_rate: 0, bits: 0 };
        if let Some(mdhd) = child(mb, mdia.body(), b"mdhd") {
            let d = slice(moov, start, &mdhd);
            let be32 = |i: usize| d.get(i..i + 4).map_or(0, |b| u32::from_be_bytes(b.try_into().expect("4")));
            if d.first() == Some(&1) {
                s.timescale = be32(20);
                s.duration = d.get(24..32).map_or(0, |b| u64::from_be_bytes(b.try_into().expect("8")));
            } else {
                s.timescale = be32(12);
                s.duration = u64::from(be32(16));
            }
        }
        let stsd = stbl_of(moov, start, trak).and_then(|stbl| child(slice(moov, start, &stbl), stbl.body(), b"stsd"));
        if let Some(stsd) = stsd {
            let d = slice(moov, start, &stsd);
            // version/flags, entry count, then the first sample entry.
            if let Some(entry) = d.get(8..).and_then(|e| parse_header(e, 0, e.len() as u64).ok()) {
                if !handler_says_sound && !AUDIO_ENTRIES.contains(&&entry.kind) {
                    continue;
                }
                let e = &d[8..8 + entry.len as usize];
                s.codec = match &entry.kind {
                    b"mp4a" => "aac".into(),
                    b"alac" => "alac".into(),
                    k => String::from_utf8_lossy(k).into_owned(),
                };
                let be16 = |i: usize| e.get(i..i + 2).map_or(0, |b| u16::from_be_bytes([b[0], b[1]]));
                s.channels = u32::from(be16(24));
                s.bits = u32::from(be16(26));
                s.sample_rate = u32::from(be16(32));
                if &entry.kind == b"alac" {
                    // The magic cookie (an `alac` atom inside the entry): bit depth at +5.
                    if let Some(c) = e.get(36..).and_then(|x| child(x, 0, b"alac")) {
                        let cb = &e[36 + c.body() as usize..36 + c.end() as usize];
                        if let Some(&b) = cb.get(4 + 5) {
                            s.bits = u32::from(b);
                        }
                        if let Some(r) = cb.get(4 + 20..4 + 24) {
                            s.sample_rate = u32::from_be_bytes(r.try_into().expect("4"));
                        }
                    }
                } else {
                    s.bits = 0; // AAC has no bit depth
                }
            }
        }
        if !handler_says_sound && s.codec.is_empty() {
            continue; // neither the handler nor a sample entry says audio
        }
        out.push(s);
    }
    out
}

/// The `ilst` body of a `moov`, if any.
fn ilst_of(moov: &[u8], start: u64) -> Option<Vec<u8>> {
    let body = &moov[8..];
    let udta = child(body, start + 8, b"udta")?;
    let ub = slice(moov, start, &udta);
    let meta = child(ub, udta.body(), b"meta")?;
    let mb = slice(moov, start, &meta);
    let off = meta_children_offset(mb);
    let ilst = child(&mb[off..], meta.body() + off as u64, b"ilst")?;
    Some(slice(moov, start, &ilst).to_vec())
}

/// The bytes of `moov`, normalised, and whether they are all of it.
///
/// A synthesized `moov` takes the place of every byte the atom spans; when some of them
/// are not in its whole children (a size damaged to claim more than its children fill)
/// those bytes would be lost, so such a `moov` is not rewritten unless it runs to the
/// end of a file cut short (where the last child is cut, and dropping it is the point).
fn read_moov(src: &Source, moov: &Atom) -> PluginResult<(Vec<u8>, bool)> {
    if moov.len > MAX_MOOV {
        return Err(PluginError::invalid_data(format!("the moov atom is implausibly large ({} bytes)", moov.len)));
    }
    let mut b = src.read_vec(moov.start, moov.len as usize)?;
    // Normalise to an 8-byte header so offsets inside are body-relative + 8, keeping
    // only whole children (a `moov` cut short by a truncated file loses its last ones).
    let body = b.split_off(moov.header as usize);
    let kept = salvage(&body);
    let whole = kept.len() == body.len() || moov.end() >= src.len();
    Ok((build(b"moov", &kept), whole))
}

/// The body of a container atom cut short: its whole children verbatim, and the cut
/// last one, when it is a container too, salvaged the same way with its size corrected
/// (players read such files: what they need is usually whole); a whole body comes back
/// unchanged.
fn salvage(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len());
    let mut pos = 0usize;
    while pos + 8 <= body.len() {
        let rest = &body[pos..];
        match parse_header(rest, 0, rest.len() as u64) {
            Ok(a) => {
                out.extend_from_slice(&rest[..a.len as usize]);
                pos += a.len as usize;
            }
            Err(_) => {
                let kind: [u8; 4] = rest[4..8].try_into().expect("4 bytes");
                if matches!(&kind, b"trak" | b"mdia" | b"minf" | b"stbl" | b"dinf" | b"edts" | b"udta") {
                    let inner = salvage(&rest[8..]);
                    if !inner.is_empty() {
                        out.extend(build(&kind, &inner));
                    }
                }
                break;
            }
        }
    }
    out
}

impl Format for Mp4 {
    fn check_options(&self, options: &str) -> PluginResult<()> {
        Options::parse(options, "mp4", &[]).map(|_| ())
    }

    fn extensions(&self) -> Vec<String> {
        vec!["m4a".into(), "m4b".into(), "mp4".into()]
    }

    fn probe(&self, head: &[u8], extension: &str) -> u32 {
        if head.len() >= 12 && &head[4..8] == b"ftyp" {
            if ["m4a", "m4b", "mp4"].contains(&extension) {
                100
            } else {
                60
            }
        } else {
            0
        }
    }

    fn read(&self, src: &Source) -> PluginResult<TrackInfo> {
        let (atoms, mut cut) = top_level_warned(src)?;
        let has_moov = atoms.iter().any(|a| &a.kind == b"moov");
        match atoms.first() {
            Some(a) if &a.kind == b"ftyp" => {}
            // A damaged `ftyp` (ffmpeg does not need it): read all the same.
            Some(a) if has_moov => cut.push(format!(
                "damaged: the first atom is `{}`, not ftyp; read all the same",
                String::from_utf8_lossy(&a.kind).escape_debug()
            )),
            _ => return Err(PluginError::invalid_data("not an MP4 file (no ftyp atom first, no moov atom)")),
        }
        let moov =
            atoms.iter().find(|a| &a.kind == b"moov").ok_or_else(|| PluginError::invalid_data("no moov atom"))?;
        let (bytes, whole) = read_moov(src, moov)?;
        let mdat = match atoms.iter().find(|a| &a.kind == b"mdat") {
            Some(m) => m,
            // A damaged `mdat` type, or a damaged size of an atom before it that now runs
            // over it: the atom the chunk offsets point into holds the audio (ffmpeg
            // plays it through them), else the largest atom of no known type.
            None => {
                let first = first_chunk_offset(&bytes, moov.start);
                let m = atoms
                    .iter()
                    .find(|a| {
                        !matches!(&a.kind, b"ftyp" | b"moov") && first.is_some_and(|o| o >= a.body() && o < a.end())
                    })
                    .or_else(|| atoms.iter().filter(|a| !KNOWN_TOP_LEVEL.contains(&&a.kind)).max_by_key(|a| a.len))
                    .ok_or_else(|| PluginError::invalid_data("no mdat atom"))?;
                cut.push(format!(
                    "damaged: no mdat atom; the `{}` atom at offset {} is taken for it",
                    String::from_utf8_lossy(&m.kind).escape_debug(),
                    m.start
                ));
                m
            }
        };
        let sounds = sound_tracks(&bytes, moov.start);
        let s = sounds.first().ok_or_else(|| PluginError::invalid_data("no sound track in the moov atom"))?;
        let mut warnings = cut;
        if !whole {
            warnings.push(
                "the moov atom's children do not fill it (a damaged size): served as it is, tags not rewritten"
                    .to_owned(),
            );
        }
        if atoms.iter().any(|a| &a.kind == b"moof") {
            warnings.push("a fragmented MP4 (moof): served as it is, tags not rewritten".to_owned());
        }
        if sounds.len() > 1 {
            warnings.push(format!("{} sound tracks: served as it is, tags not rewritten", sounds.len()));
        }
        if let Err(e) = rebuild_moov(&bytes, moov.start, &[]) {
            warnings.push(format!("the moov atom is damaged ({e}): served as it is, tags not rewritten"));
        }
        let (tags, pictures, w) = match ilst_of(&bytes, moov.start) {
            Some(body) => ilst::read(&body),
            None => (Vec::new(), Vec::new(), Vec::new()),
        };
        warnings.extend(w);
        let duration_ms = if s.timescale > 0 { s.duration.saturating_mul(1000) / u64::from(s.timescale) } else { 0 };
        let audio_len = mdat.len - mdat.header;
        let bitrate =
            audio_len.saturating_mul(8000).checked_div(duration_ms).map_or(0, |b| b.min(u64::from(u32::MAX)) as u32);
        let mut extra: Vec<KeyValue> =
            warnings.into_iter().map(|w| KeyValue { key: "warning".into(), value: w.into() }).collect();
        // Chapters: a QuickTime chapter track, else a Nero `chpl` list.
        let mut chapters = chapters::text_track(&bytes, moov.start, src)?;
        if chapters.is_empty() {
            let body = &bytes[8..];
            if let Some(udta) = child(body, moov.start + 8, b"udta") {
                if let Some(chpl) = child(slice(&bytes, moov.start, &udta), udta.body(), b"chpl") {
                    chapters = chapters::nero(slice(&bytes, moov.start, &chpl));
                }
            }
        }
        if !chapters.is_empty() {
            extra.push(KeyValue { key: "chapters".into(), value: chapters::render(&chapters).into() });
        }
        extra.push(KeyValue {
            key: "brand".into(),
            value: String::from_utf8_lossy(&src.read_vec(8, 4)?).into_owned().into(),
        });
        // The file's own extension (`.m4a`, `.m4b`, `.mp4`: the brand does not tell an
        // audiobook made by ffmpeg from a song).
        let ext = "";
        Ok(TrackInfo {
            format: format!("mp4-{}", s.codec).into(),
            extension: ext.into(),
            tags: tags.into(),
            pictures: pictures.into(),
            props: AudioProps {
                codec: s.codec.as_str().into(),
                duration_ms,
                sample_rate: s.sample_rate,
                channels: s.channels,
                bits_per_sample: s.bits,
                bitrate,
            },
            audio_offset: mdat.body(),
            audio_len,
            regions: vec![
                Region { kind: "mp4-moov".into(), offset: moov.start, len: moov.len },
                Region { kind: "mp4-mdat".into(), offset: mdat.start, len: mdat.len },
            ]
            .into(),
            extra: extra.into(),
        })
    }

    fn plan(&self, src: &Source, req: &PlanRequest) -> PluginResult<Plan> {
        let len = src.len();
        let atoms = top_level(src)?;
        let moov =
            *atoms.iter().find(|a| &a.kind == b"moov").ok_or_else(|| PluginError::invalid_data("no moov atom"))?;
        let (bytes, whole) = read_moov(src, &moov)?;
        if !whole || atoms.iter().any(|a| &a.kind == b"moof") || sound_tracks(&bytes, moov.start).len() != 1 {
            return Ok(Plan::passthrough(len));
        }
        let new_ilst = ilst::write(&req.tags, &req.pictures);
        // A `moov` too damaged to rebuild (read warned so): served as it is.
        let Ok(mut body) = rebuild_moov(&bytes, moov.start, &new_ilst) else {
            return Ok(Plan::passthrough(len));
        };
        let old_len = moov.len;
        let mut new_len = body.len() as u64 + 8;
        if new_len < old_len && old_len - new_len >= 8 {
            // A `free` atom takes up the difference: nothing after the moov moves.
            body.extend(build(b"free", &vec![0u8; (old_len - new_len - 8) as usize]));
            new_len = old_len;
        }
        let delta = new_len as i64 - old_len as i64;
        if delta != 0 {
            // A damaged chunk offset table (or offsets pushed past 32 bits in `stco`):
            // served as it is rather than with offsets that point at the wrong bytes.
            if patch_offsets(&mut body, moov.end(), delta).is_err() {
                return Ok(Plan::passthrough(len));
            }
        }
        let new_moov = build(b"moov", &body);
        let mut segs = Vec::new();
        if moov.start > 0 {
            segs.push(Segment::origin(0, moov.start));
        }
        segs.push(Segment::literal(new_moov));
        if moov.end() < len {
            segs.push(Segment::origin(moov.end(), len - moov.end()));
        }
        Ok(Plan { segments: segs.into() })
    }
}

/// The body of a new `moov` (its bytes `moov` at file offset `start`) with `udta/meta/ilst`
/// replaced by `ilst` (created as needed); every other atom verbatim.
fn rebuild_moov(moov: &[u8], start: u64, ilst: &[u8]) -> PluginResult<Vec<u8>> {
    let body = &moov[8..];
    let kids = children(body, start + 8)?;
    let mut out = Vec::with_capacity(moov.len() + ilst.len());
    let mut had_udta = false;
    for a in &kids {
        let whole = &moov[(a.start - start) as usize..(a.end() - start) as usize];
        if &a.kind == b"udta" {
            had_udta = true;
            out.extend(build(b"udta", &rebuild_udta(slice(moov, start, a), a.body(), ilst)?));
        } else {
            out.extend_from_slice(whole);
        }
    }
    if !had_udta {
        out.extend(build(b"udta", &new_meta(ilst)));
    }
    Ok(out)
}

fn new_meta(ilst: &[u8]) -> Vec<u8> {
    // hdlr: version/flags, pre_defined, handler `mdir`, reserved (`appl`, 0, 0), name "".
    let mut hdlr = vec![0u8; 8];
    hdlr.extend_from_slice(b"mdir");
    hdlr.extend_from_slice(b"appl");
    hdlr.extend_from_slice(&[0u8; 8]);
    hdlr.push(0);
    let mut meta = vec![0u8; 4];
    meta.extend(build(b"hdlr", &hdlr));
    meta.extend_from_slice(ilst);
    build(b"meta", &meta)
}

fn rebuild_udta(udta: &[u8], base: u64, ilst: &[u8]) -> PluginResult<Vec<u8>> {
    let mut out = Vec::with_capacity(udta.len() + ilst.len());
    let mut had_meta = false;
    for a in children(udta, base)? {
        let whole = &udta[(a.start - base) as usize..(a.end() - base) as usize];
        if &a.kind == b"meta" && !had_meta {
            had_meta = true;
            let mb = &whole[a.header as usize..];
            let off = meta_children_offset(mb);
            let mut meta = mb[..off].to_vec();
            let mut had_ilst = false;
            for c in children(&mb[off..], 0)? {
                let cw = &mb[off + c.start as usize..off + c.end() as usize];
                match &c.kind {
                    b"ilst" => {
                        had_ilst = true;
                        meta.extend_from_slice(ilst);
                    }
                    b"free" => {} // the old tag's padding
                    _ => meta.extend_from_slice(cw),
                }
            }
            if !had_ilst {
                meta.extend_from_slice(ilst);
            }
            out.extend(build(b"meta", &meta));
        } else {
            out.extend_from_slice(whole);
        }
    }
    if !had_meta {
        out.extend(new_meta(ilst));
    }
    Ok(out)
}

/// Shifts every chunk offset (`stco`, `co64`) in the sample tables of a `moov` body that
/// points at or past `after` by `delta`.
fn patch_offsets(body: &mut [u8], after: u64, delta: i64) -> PluginResult<()> {
    fn walk(data: &mut [u8], after: u64, delta: i64) -> PluginResult<()> {
        let kids = children(data, 0)?;
        for a in kids {
            let (b, e) = (a.body() as usize, a.end() as usize);
            match &a.kind {
                b"trak" | b"mdia" | b"minf" | b"stbl" => walk(&mut data[b..e], after, delta)?,
                b"stco" | b"co64" => {
                    let t = &mut data[b..e];
                    let n = t.get(4..8).map_or(0, |c| u32::from_be_bytes(c.try_into().expect("4"))) as usize;
                    let w = if &a.kind == b"stco" { 4 } else { 8 };
                    if t.len() < 8 + n * w {
                        return Err(PluginError::invalid_data("a chunk offset table is shorter than its count"));
                    }
                    for i in 0..n {
                        let at = 8 + i * w;
                        let old = if w == 4 {
                            u64::from(u32::from_be_bytes(t[at..at + 4].try_into().expect("4")))
                        } else {
                            u64::from_be_bytes(t[at..at + 8].try_into().expect("8"))
                        };
                        if old < after {
                            continue;
                        }
                        let new = old
                            .checked_add_signed(delta)
                            .ok_or_else(|| PluginError::invalid_data("chunk offset out of range"))?;
                        if w == 4 {
                            let v = u32::try_from(new).map_err(|_| {
                                PluginError::invalid_data("a shifted chunk offset does not fit stco (32 bits)")
                            })?;
                            t[at..at + 4].copy_from_slice(&v.to_be_bytes());
                        } else {
                            t[at..at + 8].copy_from_slice(&new.to_be_bytes());
                        }
                    }
                }
                _ => {}
            }
        }
        Ok(())
    }
    walk(body, after, delta)
}

musefs_plugin_api::export_plugin! {
    name: "mp4",
    version: env!("CARGO_PKG_VERSION"),
    description: "MP4/M4A/M4B audio (AAC, ALAC): iTunes ilst tags and cover art",
    format: |_config: &str| Ok(Mp4),
}

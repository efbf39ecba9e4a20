//! Layouts, the header cache and the pictures they share.
//!
//! A layout is a served file's bytes as pieces: bytes of its own (the synthesized
//! header), bytes shared with other layouts, and ranges of the original. A picture is
//! the big part of most headers, and the same picture is in every track of an album: the
//! header a format plugin plans embeds it verbatim (a FLAC PICTURE block, an ID3 APIC
//! frame, an MP4 `covr` atom), so the serving core cuts it out of the literal bytes into
//! a shared piece that points at one copy of the picture ([`SharedBytes`], by the
//! catalog's hash of its bytes). Long runs of literal bytes left (a picture a format encodes: base64
//! in a Vorbis comment, cut by Ogg page headers every 64 KB) are cut into content-defined
//! chunks, shared by hash the same way: the same run of bytes is cut the same way wherever
//! it sits in a header. The header cache counts each shared picture once against its
//! budget, however many layouts hold it: a library whose headers carry 300 KB pictures
//! keeps every layout of an album for the price of one picture, instead of planning every
//! open again (reading the picture out of SQLite each time).

use std::collections::HashMap;
use std::sync::{Arc, Weak};

/// Pictures shorter than this stay in the literal bytes around them.
pub(super) const MIN_SHARED: usize = 4096;

/// One piece of a served file.
#[derive(Debug, Clone)]
pub enum Piece {
    /// Bytes of this layout alone (a synthesized header).
    Literal(Box<[u8]>),
    /// Bytes held once for every layout that serves them (a picture, a chunk of a run).
    Shared(Arc<[u8]>),
    /// `len` bytes of the original object from `offset`.
    Origin {
        /// Offset in the original object.
        offset: u64,
        /// Number of bytes.
        len: u64,
    },
}

impl Piece {
    /// Number of bytes this piece serves.
    pub fn len(&self) -> u64 {
        match self {
            Self::Literal(b) => b.len() as u64,
            Self::Shared(b) => b.len() as u64,
            Self::Origin { len, .. } => *len,
        }
    }

    /// The piece serves no byte.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The bytes of a literal or shared piece (`None` for a range of the original).
    pub fn bytes(&self) -> Option<&[u8]> {
        match self {
            Self::Literal(b) => Some(b),
            Self::Shared(b) => Some(b),
            Self::Origin { .. } => None,
        }
    }
}

/// A computed layout: the pieces with their start offsets, shared between the header
/// cache and every open handle.
#[derive(Debug)]
pub struct Layout {
    /// `(start offset in the served file, piece)`, in order, none empty.
    pub segments: Vec<(u64, Piece)>,
    /// The served size.
    pub size: u64,
    /// The layout is the whole original, unchanged.
    pub unchanged: bool,
    /// Bytes it holds alone (shared pieces not counted), plus a little per piece.
    bytes: usize,
}

impl Layout {
    /// A layout of `pieces` in order (empty ones dropped).
    pub(crate) fn new(pieces: impl IntoIterator<Item = Piece>) -> Self {
        let mut segments = Vec::new();
        let mut at = 0u64;
        let mut bytes = 64;
        for p in pieces {
            if p.is_empty() {
                continue;
            }
            bytes += 64 + if let Piece::Literal(b) = &p { b.len() } else { 0 };
            let len = p.len();
            segments.push((at, p));
            at += len;
        }
        let unchanged = false;
        Self { segments, size: at, unchanged, bytes }
    }

    /// The whole original of `size` bytes, unchanged.
    pub(crate) fn original(size: u64) -> Self {
        let mut l = Self::new([Piece::Origin { offset: 0, len: size }]);
        l.unchanged = true;
        l
    }

    /// Marks the layout as the original served unchanged.
    pub(crate) fn with_unchanged(mut self, unchanged: bool) -> Self {
        self.unchanged = unchanged;
        self
    }

    fn shared(&self) -> impl Iterator<Item = &Arc<[u8]>> {
        self.segments.iter().filter_map(|(_, p)| if let Piece::Shared(b) = p { Some(b) } else { None })
    }
}

/// The header cache: layouts by `(file id, generation)`, least recently used evicted
/// beyond a byte budget, in which each shared picture counts once.
pub(super) struct PlanCache {
    map: HashMap<(i64, i64), (Arc<Layout>, u64)>,
    /// Shared pieces held by cached layouts: `(references, length)` by address.
    shared: HashMap<usize, (usize, usize)>,
    bytes: usize,
    budget: usize,
    tick: u64,
}

impl PlanCache {
    pub(super) fn new(budget: usize) -> Self {
        Self { map: HashMap::new(), shared: HashMap::new(), bytes: 0, budget, tick: 0 }
    }

    pub(super) fn get(&mut self, key: (i64, i64)) -> Option<Arc<Layout>> {
        self.tick += 1;
        let tick = self.tick;
        self.map.get_mut(&key).map(|(l, t)| {
            *t = tick;
            l.clone()
        })
    }

    pub(super) fn put(&mut self, key: (i64, i64), layout: Arc<Layout>) {
        if layout.bytes > self.budget {
            return;
        }
        self.tick += 1;
        self.hold(&layout);
        if let Some((old, _)) = self.map.insert(key, (layout, self.tick)) {
            self.let_go(&old);
        }
        while self.bytes > self.budget {
            let Some((&k, _)) = self.map.iter().min_by_key(|(_, (_, t))| *t) else { break };
            if let Some((old, _)) = self.map.remove(&k) {
                self.let_go(&old);
            }
        }
    }

    pub(super) fn forget(&mut self, file_id: i64) {
        let keys: Vec<_> = self.map.keys().filter(|(id, _)| *id == file_id).copied().collect();
        for k in keys {
            if let Some((old, _)) = self.map.remove(&k) {
                self.let_go(&old);
            }
        }
    }

    /// Bytes the cached layouts hold (each shared piece once).
    #[cfg(test)]
    pub(super) fn bytes(&self) -> usize {
        self.bytes
    }

    fn hold(&mut self, layout: &Layout) {
        self.bytes += layout.bytes;
        for b in layout.shared() {
            let (refs, len) = self.shared.entry(Arc::as_ptr(b).cast::<u8>() as usize).or_insert((0, b.len()));
            *refs += 1;
            if *refs == 1 {
                self.bytes += *len;
            }
        }
    }

    fn let_go(&mut self, layout: &Layout) {
        self.bytes -= layout.bytes;
        for b in layout.shared() {
            let at = Arc::as_ptr(b).cast::<u8>() as usize;
            if let Some((refs, len)) = self.shared.get_mut(&at) {
                *refs -= 1;
                if *refs == 0 {
                    self.bytes -= *len;
                    self.shared.remove(&at);
                }
            }
        }
    }
}

/// Shared bytes by their BLAKE3 hash (the catalog's hash of a picture is the same),
/// held while some layout, cover or plan uses them: every layout of an album points at
/// one copy of its cover.
#[derive(Default)]
pub(super) struct SharedBytes {
    map: HashMap<[u8; 32], Weak<[u8]>>,
    /// Entries when the dead ones were last dropped.
    swept: usize,
}

impl SharedBytes {
    /// The bytes hashed `hash`, if something holds them.
    pub(super) fn get(&self, hash: &[u8; 32]) -> Option<Arc<[u8]>> {
        self.map.get(hash).and_then(Weak::upgrade)
    }

    /// The copy every user shares of the bytes hashed `hash`: the one held already, else
    /// `data` (made only then), held from now on.
    pub(super) fn insert<D: Into<Arc<[u8]>>>(&mut self, hash: [u8; 32], data: impl FnOnce() -> D) -> Arc<[u8]> {
        if let Some(b) = self.get(&hash) {
            return b;
        }
        if self.map.len() >= 2 * self.swept.max(512) {
            self.map.retain(|_, w| w.strong_count() > 0);
            self.swept = self.map.len();
        }
        let b: Arc<[u8]> = data().into();
        self.map.insert(hash, Arc::downgrade(&b));
        b
    }
}

/// `bytes` as pieces: each occurrence of one of `pictures` (of at least
/// [`MIN_SHARED`] bytes) becomes a shared piece of that picture, the rest stays literal.
pub(super) fn share_pictures(bytes: Vec<u8>, pictures: &[Arc<[u8]>], out: &mut Vec<Piece>) {
    // Found by their first bytes, then compared whole: a finder built on the whole
    // picture costs as much as a search.
    let finders: Vec<_> = pictures
        .iter()
        .filter(|p| p.len() >= MIN_SHARED && p.len() <= bytes.len())
        .map(|p| (memchr::memmem::Finder::new(&p[..PREFIX]), p))
        .collect();
    if finders.is_empty() {
        if !bytes.is_empty() {
            out.push(Piece::Literal(bytes.into()));
        }
        return;
    }
    let find = |f: &memchr::memmem::Finder<'_>, p: &[u8], mut from: usize| -> Option<usize> {
        while let Some(i) = f.find(&bytes[from..]) {
            let at = from + i;
            if bytes.get(at..at + p.len()) == Some(p) {
                return Some(at);
            }
            from = at + 1;
        }
        None
    };
    let mut from = 0;
    loop {
        // The first picture found from `from` on.
        let next = finders
            .iter()
            .filter_map(|(f, p)| find(f, p, from).map(|i| (i, p)))
            .min_by_key(|(i, p)| (*i, std::cmp::Reverse(p.len())));
        let Some((at, picture)) = next else { break };
        if at > from {
            out.push(Piece::Literal(bytes[from..at].into()));
        }
        out.push(Piece::Shared(Arc::clone(picture)));
        from = at + picture.len();
    }
    if from == 0 {
        out.push(Piece::Literal(bytes.into()));
    } else if from < bytes.len() {
        out.push(Piece::Literal(bytes[from..].into()));
    }
}

/// How many first bytes of a picture its search looks for.
const PREFIX: usize = 64;

/// Literal runs at least this long are cut into shared content-defined chunks.
pub(super) const CHUNKED_RUN: usize = 32 * 1024;
const CHUNK_MIN: usize = 2 * 1024;
const CHUNK_MAX: usize = 32 * 1024;
/// A cut where these bits of the rolling hash are clear: 8 KiB past the minimum on average.
const CUT_MASK: u64 = ((1 << 13) - 1) << 51;

/// The gear table: 256 fixed pseudo-random words (splitmix64).
const GEAR: [u64; 256] = {
    let mut t = [0u64; 256];
    let mut x: u64 = 0x6d75_7365_6673_2121;
    let mut i = 0;
    while i < 256 {
        x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = x;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        t[i] = z ^ (z >> 31);
        i += 1;
    }
    t
};

/// The ends of `bytes`'s content-defined chunks (a gear hash over the last 64 bytes, as
/// FastCDC): a cut depends only on the bytes just before it, so a run of bytes is cut the
/// same way wherever it sits; chunks are `CHUNK_MIN..=CHUNK_MAX` bytes but the last.
fn cuts(bytes: &[u8]) -> Vec<usize> {
    let mut out = Vec::with_capacity(bytes.len() / 8192 + 1);
    let mut start = 0;
    while start < bytes.len() {
        let end = (start + CHUNK_MAX).min(bytes.len());
        let mut cut = end;
        if start + CHUNK_MIN < end {
            let mut h = 0u64;
            // The hash forgets a byte after 64 shifts: start it 64 bytes early.
            for (j, &b) in bytes.iter().enumerate().take(end).skip(start + CHUNK_MIN - 64) {
                h = (h << 1).wrapping_add(GEAR[b as usize]);
                if j >= start + CHUNK_MIN && h & CUT_MASK == 0 {
                    cut = j + 1;
                    break;
                }
            }
        }
        out.push(cut);
        start = cut;
    }
    out
}

/// Cuts every literal piece of at least [`CHUNKED_RUN`] bytes of `pieces` into
/// content-defined chunks shared through `store`.
pub(super) fn share_runs(pieces: Vec<Piece>, store: &std::sync::Mutex<SharedBytes>) -> Vec<Piece> {
    if !pieces.iter().any(|p| matches!(p, Piece::Literal(b) if b.len() >= CHUNKED_RUN)) {
        return pieces;
    }
    let mut out = Vec::with_capacity(pieces.len());
    for p in pieces {
        match p {
            Piece::Literal(b) if b.len() >= CHUNKED_RUN => {
                // Hashed outside the lock.
                let mut from = 0;
                let chunks: Vec<_> = cuts(&b)
                    .into_iter()
                    .map(|to| {
                        let c = &b[from..to];
                        from = to;
                        (*blake3::hash(c).as_bytes(), c)
                    })
                    .collect();
                let mut store = crate::util::lock(store);
                out.extend(chunks.into_iter().map(|(h, c)| Piece::Shared(store.insert(h, || c))));
            }
            p => out.push(p),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn picture(seed: u8, len: usize) -> Arc<[u8]> {
        (0..len).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect::<Vec<_>>().into()
    }

    /// Bytes without a period (a picture's compressed data is like that).
    fn noise(seed: u64, len: usize) -> Vec<u8> {
        let mut x = seed;
        (0..len)
            .map(|_| {
                x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                (x >> 56) as u8
            })
            .collect()
    }

    fn served(pieces: &[Piece]) -> Vec<u8> {
        pieces.iter().flat_map(|p| p.bytes().unwrap().to_vec()).collect()
    }

    #[test]
    fn a_picture_embedded_in_a_header_becomes_a_shared_piece_and_the_bytes_stay_the_same() {
        let (front, back) = (picture(1, 10_000), picture(2, 5_000));
        let mut header = b"fLaC\0\0\0\x22".to_vec();
        header.extend_from_slice(&back);
        header.extend_from_slice(&front[..PREFIX + 10]); // starts like the front cover, is not it
        header.extend_from_slice(b"between");
        header.extend_from_slice(&front);
        header.extend_from_slice(&front);
        header.extend_from_slice(b"tail");
        let mut out = Vec::new();
        share_pictures(header.clone(), &[front.clone(), back.clone()], &mut out);
        assert_eq!(served(&out), header);
        let kinds: Vec<_> = out
            .iter()
            .map(|p| match p {
                Piece::Literal(b) => format!("literal {}", b.len()),
                Piece::Shared(b) if Arc::ptr_eq(b, &front) => "front".into(),
                Piece::Shared(b) if Arc::ptr_eq(b, &back) => "back".into(),
                other => format!("{other:?}"),
            })
            .collect();
        assert_eq!(kinds, ["literal 8", "back", "literal 81", "front", "front", "literal 4"]);
    }

    #[test]
    fn small_pictures_and_pictures_not_found_stay_literal() {
        let small = picture(3, MIN_SHARED - 1);
        let absent = picture(4, 8_000);
        let mut header = vec![7u8; 100];
        header.extend_from_slice(&small);
        let mut out = Vec::new();
        share_pictures(header.clone(), &[small, absent], &mut out);
        assert!(matches!(out.as_slice(), [Piece::Literal(b)] if b[..] == header[..]));
    }

    #[test]
    fn the_header_cache_counts_a_picture_shared_by_many_layouts_once() {
        let pic = picture(5, 100_000);
        let layout = |n: u8| {
            Arc::new(Layout::new([
                Piece::Literal(vec![n; 1000].into()),
                Piece::Shared(pic.clone()),
                Piece::Origin { offset: 0, len: 5_000_000 },
            ]))
        };
        // Room for the picture once and ten headers, not for ten pictures.
        let mut cache = PlanCache::new(100_000 + 10 * (1000 + 4 * 64));
        for id in 0..10 {
            cache.put((id, 0), layout(id as u8));
        }
        assert!((0..10).all(|id| cache.get((id, 0)).is_some()), "a layout was evicted");
        assert_eq!(cache.bytes(), 100_000 + 10 * (1000 + 4 * 64));
        for id in 0..10 {
            cache.forget(id);
        }
        assert_eq!(cache.bytes(), 0);
        assert!(cache.shared.is_empty());
    }

    #[test]
    fn pictures_are_held_once_while_used_and_dropped_after() {
        let mut pics = SharedBytes::default();
        let a = pics.insert([1; 32], || vec![1, 2, 3]);
        let again = pics.insert([1; 32], || -> Vec<u8> { unreachable!("held already: not made again") });
        assert!(Arc::ptr_eq(&a, &again));
        drop((a, again));
        assert!(pics.get(&[1; 32]).is_none());
    }

    #[test]
    fn a_run_of_bytes_is_cut_the_same_way_wherever_it_sits() {
        let run = noise(9, 200_000);
        let c = cuts(&run);
        assert_eq!(c.last(), Some(&run.len()));
        let mut prev = 0;
        for &e in &c[..c.len() - 1] {
            assert!((CHUNK_MIN..=CHUNK_MAX).contains(&(e - prev)), "chunk of {} bytes", e - prev);
            prev = e;
        }
        assert!(c.len() > 200_000 / CHUNK_MAX, "{} chunks", c.len());
        // Behind a different prefix, every cut but the first few lands at the same place.
        let mut shifted = vec![1u8; 12_345];
        shifted.extend_from_slice(&run);
        let moved: std::collections::HashSet<usize> =
            cuts(&shifted).into_iter().map(|e| e.wrapping_sub(12_345)).collect();
        let same = c.iter().filter(|e| moved.contains(e)).count();
        assert!(same + 2 >= c.len(), "{same} of {} cuts kept", c.len());
    }

    #[test]
    fn long_literal_runs_are_shared_between_layouts_and_serve_the_same_bytes() {
        let store = std::sync::Mutex::new(SharedBytes::default());
        let body = noise(11, 150_000);
        let header = |title: &[u8]| {
            let mut h = title.to_vec();
            h.extend_from_slice(&body);
            h.extend_from_slice(b"end");
            h
        };
        let (a, b) = (header(b"Title A"), header(b"A much longer title B"));
        let pa = share_runs(vec![Piece::Literal(a.clone().into()), Piece::Origin { offset: 0, len: 9 }], &store);
        let pb = share_runs(vec![Piece::Literal(b.clone().into())], &store);
        assert_eq!(served(&pa[..pa.len() - 1]), a);
        assert!(matches!(pa.last(), Some(Piece::Origin { offset: 0, len: 9 })));
        assert_eq!(served(&pb), b);
        let ptrs = |v: &[Piece]| -> std::collections::HashSet<usize> {
            v.iter()
                .filter_map(
                    |p| if let Piece::Shared(x) = p { Some(Arc::as_ptr(x).cast::<u8>() as usize) } else { None },
                )
                .collect()
        };
        let common = ptrs(&pa).intersection(&ptrs(&pb)).count();
        assert!(common + 3 >= ptrs(&pb).len(), "{common} of {} chunks shared", ptrs(&pb).len());
        // Short literals are left alone.
        let short = share_runs(vec![Piece::Literal(vec![0; CHUNKED_RUN - 1].into())], &store);
        assert!(matches!(short.as_slice(), [Piece::Literal(_)]));
    }

    /// Whatever the header and the pictures (embedded whole, cut short, repeated, next to
    /// each other, absent, overlapping), the pieces serve exactly the header's bytes.
    #[test]
    fn the_pieces_of_any_header_serve_its_bytes_exactly() {
        let store = std::sync::Mutex::new(SharedBytes::default());
        let mut x = 0x5eed_u64;
        let mut next = |n: u64| {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (x >> 33) % n
        };
        for round in 0..300 {
            let pics: Vec<Arc<[u8]>> = (0..next(4))
                .map(|i| {
                    let len = [10, MIN_SHARED - 1, MIN_SHARED, 5000, 70_000][next(5) as usize];
                    noise(round * 10 + i, len).into()
                })
                .collect();
            let mut header = Vec::new();
            for _ in 0..next(8) {
                match next(4) {
                    0 => header.extend(noise(next(1000), next(50_000) as usize)),
                    1 => header.extend(std::iter::repeat_n(0, next(70_000) as usize)),
                    _ if !pics.is_empty() => {
                        let p = &pics[next(pics.len() as u64) as usize];
                        // Whole, or cut short (a prefix match that is not the picture).
                        let take = if next(3) == 0 { next(p.len() as u64) as usize } else { p.len() };
                        header.extend_from_slice(&p[..take]);
                    }
                    _ => header.push(next(256) as u8),
                }
            }
            let mut pieces = Vec::new();
            share_pictures(header.clone(), &pics, &mut pieces);
            let pieces = share_runs(pieces, &store);
            assert!(pieces.iter().all(|p| !p.is_empty()), "round {round}: an empty piece");
            assert!(served(&pieces) == header, "round {round}: the pieces serve other bytes");
        }
    }
}

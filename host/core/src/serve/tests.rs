//! The serving core's invariants, tested without FUSE, encoders or a network: an
//! in-memory origin and the toy format of `musefs-plugin-api`'s `testing` feature over
//! a real (temporary) catalog.

use std::collections::HashMap;
use std::sync::Arc;

use musefs_plugin_api::testing::{toy_file, MemOrigin, ScriptedFormat};
use musefs_plugin_api::{format_into_ffi, origin_into_ffi, CallCtx, FormatBox, OriginCaps, Plan, Segment};

use super::*;
use crate::catalog::overlay::Edit;
use crate::manifest::{CacheSettings, View};
use crate::template::{RenderOptions, Template};
use crate::tree::ROOT;

const ORIGIN: &str = "mem";

/// A temporary catalog over an in-memory origin holding toy files.
struct Fixture {
    dir: tempfile::TempDir,
    origin: MemOrigin,
    catalog: Catalog,
}

/// `n` pseudo-random bytes (no period: every chunk of them differs).
fn audio(n: usize, seed: u8) -> Vec<u8> {
    let mut x = u64::from(seed) + 1;
    (0..n)
        .map(|_| {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (x >> 56) as u8
        })
        .collect()
}

impl Fixture {
    fn new(caps: OriginCaps) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let catalog = Catalog::open(&dir.path().join("catalog.db")).unwrap();
        Self { dir, origin: MemOrigin::new(caps), catalog }
    }

    /// Puts a toy file in the origin and catalogs it (as a scan would: through the
    /// format's own reader, over the ABI); returns its file id.
    fn add(&mut self, path: &str, artist: &str, title: &str, audio: &[u8]) -> i64 {
        self.origin.put(path, toy_file(&[("ARTIST", artist), ("TITLE", title)], audio));
        self.catalog_file(path)
    }

    fn catalog_file(&mut self, path: &str) -> i64 {
        let ctx = CallCtx::unlimited();
        let o = origin_into_ffi(self.origin.clone());
        let stat = o.stat(&ctx, path.into()).into_result().unwrap();
        let h = o.open(&ctx, path.into()).into_result().unwrap();
        let f = format_into_ffi(ScriptedFormat::new());
        let info = f.read(&ctx, &h).into_result().unwrap();
        let oid = self.catalog.origin_id(ORIGIN, "mem").unwrap();
        self.catalog.write_batch(oid, &[(path.to_owned(), stat, "toy".to_owned(), info)]).unwrap()[0]
    }

    fn core_with(&self, format: ScriptedFormat, settings: Settings) -> Core {
        let keys = vec!["artist".to_owned(), "title".to_owned()];
        let cat = Catalog::open(&self.dir.path().join("catalog.db")).unwrap();
        let files = cat.tree_files(&keys).unwrap();
        let views = vec![View { name: None, template: Template::parse("$artist/$title").unwrap() }];
        let tree = Tree::build(&files, &views, &RenderOptions::default(), None);
        let position = cat.last_change().unwrap();
        let origins = HashMap::from([(ORIGIN.to_owned(), origin_into_ffi(self.origin.clone()))]);
        let formats: HashMap<String, FormatBox> = HashMap::from([("toy".to_owned(), format_into_ffi(format))]);
        Core::new(tree, position, cat, origins, formats, Settings { keys, ..settings })
    }

    fn core(&self, mode: Mode) -> Core {
        self.core_with(ScriptedFormat::new(), Settings { mode, ..Settings::default() })
    }
}

fn synthesis() -> Settings {
    Settings { mode: Mode::Synthesis, ..Settings::default() }
}

/// The inode at `path` (`/`-separated) in the core's tree.
fn ino(core: &Core, path: &str) -> u64 {
    let mut at = ROOT;
    for name in path.split('/') {
        at = core.lookup(at, name).unwrap_or_else(|| panic!("{path}: no {name}")).ino;
    }
    at
}

fn size(core: &Core, ino: u64) -> u64 {
    match core.node(ino).unwrap().kind {
        AttrKind::File { size, .. } => size,
        k => panic!("not a file: {k:?}"),
    }
}

/// Reads `len` bytes at `offset` through handle `fh` in reads of `step` bytes.
fn read_all(core: &Core, fh: u64, len: u64, step: u32) -> Vec<u8> {
    let mut out = Vec::new();
    while (out.len() as u64) < len {
        let got = core.read(fh, out.len() as u64, step).unwrap();
        assert!(!got.is_empty(), "a read returned nothing before the end");
        out.extend_from_slice(&got);
    }
    assert!(core.read(fh, len, step).unwrap().is_empty(), "bytes past the end");
    out
}

#[test]
fn synthesis_serves_the_planned_bytes_at_the_announced_size() {
    let mut f = Fixture::new(OriginCaps::LOCAL);
    let a = audio(70_000, 1);
    f.add("a.toy", "Band", "Song", &a);
    let core = f.core(Mode::Synthesis);
    let file = ino(&core, "Band/Song.toy");
    let want = toy_file(&[("ARTIST", "Band"), ("TITLE", "Song")], &a);
    assert_eq!(size(&core, file), want.len() as u64);
    let (fh, _) = core.open(file).unwrap();
    assert_eq!(read_all(&core, fh, want.len() as u64, 4096), want);
    assert_eq!(read_all(&core, fh, want.len() as u64, 7), want, "odd-sized reads splice the same bytes");
}

#[test]
fn a_plan_whose_size_differs_from_the_announced_one_is_eio_not_wrong_bytes() {
    let mut f = Fixture::new(OriginCaps::LOCAL);
    f.add("a.toy", "Band", "Song", &audio(5_000, 2));
    // A nondeterministic plugin: every plan is one byte longer than the last.
    let n = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let script = ScriptedFormat::new().with_plan(move |_src, req| {
        let extra = n.fetch_add(1, Ordering::Relaxed) as usize;
        let mut plan = ScriptedFormat::toy_plan(req);
        plan.segments.insert(0, Segment::literal(vec![b'x'; extra]));
        Ok(plan)
    });
    // No header cache: every open plans again.
    let core = f.core_with(script, Settings { header_cache_bytes: 0, ..synthesis() });
    let file = ino(&core, "Band/Song.toy");
    let announced = size(&core, file);
    let err = core.open(file).err().expect("a plan of another size must not be served");
    assert!(matches!(err, ServeError::BadPlan { .. }), "{err}");
    assert_eq!(err.errno(), libc::EIO);
    assert!(err.to_string().contains(&format!("{announced} were announced")), "{err}");
}

#[test]
fn a_plan_reaching_past_the_original_is_refused() {
    let mut f = Fixture::new(OriginCaps::LOCAL);
    f.add("a.toy", "Band", "Song", &audio(1_000, 3));
    let script = ScriptedFormat::new()
        .with_plan(|src, _req| Ok(Plan { segments: vec![Segment::origin(0, src.len() + 1)].into() }));
    let core = f.core_with(script, synthesis());
    let err = core.open(ino(&core, "Band/Song.toy")).err().unwrap();
    assert!(matches!(err, ServeError::BadPlan { .. }) && err.errno() == libc::EIO, "{err}");
}

#[test]
fn a_changed_original_is_eio_at_open_and_mid_read() {
    let mut f = Fixture::new(OriginCaps::LOCAL);
    let a = audio(50_000, 4);
    f.add("a.toy", "Band", "Song", &a);
    f.add("b.toy", "Band", "Other", &a);
    let core = f.core(Mode::Passthrough);
    let (fh, _) = core.open(ino(&core, "Band/Song.toy")).unwrap();
    assert_eq!(core.read(fh, 0, 100).unwrap().len(), 100);
    // Replaced after the scan: same size, new bytes.
    f.origin.put("a.toy", toy_file(&[("ARTIST", "Band"), ("TITLE", "Song")], &audio(50_000, 99)));
    let mid = core.read(fh, 1000, 100).expect_err("bytes of a replaced original");
    assert_eq!(mid.errno(), libc::EIO);
    let again = core.open(ino(&core, "Band/Song.toy")).err().expect("a changed original opens");
    assert!(matches!(again, ServeError::Changed { .. }) && again.errno() == libc::EIO, "{again}");
    // Gone: the same.
    f.origin.remove("b.toy");
    let gone = core.open(ino(&core, "Band/Other.toy")).err().unwrap();
    assert!(gone.to_string().contains("gone"), "{gone}");
}

#[test]
fn short_reads_from_the_origin_are_completed() {
    let mut f = Fixture::new(OriginCaps::LOCAL);
    let a = audio(30_000, 5);
    f.add("a.toy", "Band", "Song", &a);
    f.origin.max_read(7);
    let core = f.core(Mode::Synthesis);
    let (fh, file) = core.open(ino(&core, "Band/Song.toy")).unwrap();
    let before = f.origin.reads();
    let got = core.read(fh, 0, 20_000).unwrap();
    assert_eq!(got.len(), 20_000, "a short origin read made a short reply");
    assert_eq!(&got[..], &toy_file(&[("ARTIST", "Band"), ("TITLE", "Song")], &a)[..20_000]);
    assert!(f.origin.reads() - before > 1000, "the origin really answered short");
    assert_eq!(file.size, 30_000 + 8 + "ARTIST=Band\nTITLE=Song\n".len() as u64);
}

#[test]
fn the_header_cache_keeps_its_budget_and_evicts_the_least_recently_used() {
    // A layout of one literal piece counts its bytes and 128 for itself and the piece.
    let layout = |n: usize| Arc::new(Layout::new([Piece::Literal(vec![0; n - 128].into())]));
    let mut c = PlanCache::new(750);
    c.put((1, 0), layout(300));
    c.put((2, 0), layout(300));
    assert!(c.get((1, 0)).is_some()); // 1 is now more recent than 2
    c.put((3, 0), layout(300));
    assert!(c.bytes() <= 750);
    assert!(c.get((2, 0)).is_none(), "the least recently used layout stays");
    assert!(c.get((1, 0)).is_some() && c.get((3, 0)).is_some());
    c.put((4, 0), layout(800));
    assert!(c.get((4, 0)).is_none(), "a layout over the whole budget is not cached");
    c.forget(1);
    assert!(c.get((1, 0)).is_none() && c.bytes() == 300);

    // Through the core: a second open of the same generation plans nothing.
    let mut f = Fixture::new(OriginCaps::LOCAL);
    f.add("a.toy", "Band", "Song", &audio(1_000, 6));
    let format = ScriptedFormat::new();
    let core = f.core_with(format.clone(), synthesis());
    let file = ino(&core, "Band/Song.toy");
    core.open(file).unwrap();
    core.open(file).unwrap();
    assert_eq!(format.plans(), 1);
    assert!(core.counters.plan_hits.load(Ordering::Relaxed) >= 1);
}

#[test]
fn readdir_offsets_resume_where_the_kernel_stopped() {
    let mut f = Fixture::new(OriginCaps::LOCAL);
    for i in 0..25 {
        f.add(&format!("{i}.toy"), "Band", &format!("Song {i:02}"), &audio(10, i as u8));
    }
    let core = f.core(Mode::Passthrough);
    let dir = ino(&core, "Band");
    let mut all = Vec::new();
    core.readdir_from(dir, 0, |i, _, name| {
        all.push((i, name.to_owned()));
        false
    })
    .unwrap();
    assert_eq!(all.len(), 27);
    assert_eq!((all[0].1.as_str(), all[1].1.as_str()), (".", ".."));
    assert!(all.iter().enumerate().all(|(n, (i, _))| *i == n as u64), "offsets are indices");
    // The kernel's buffer holds 4 entries at a time: it resumes after the last it kept.
    let mut paged = Vec::new();
    let mut next = 0;
    loop {
        let mut page = Vec::new();
        core.readdir_from(dir, next, |i, _, name| {
            if page.len() == 4 {
                return true;
            }
            page.push((i, name.to_owned()));
            false
        })
        .unwrap();
        let Some(last) = page.last() else { break };
        next = last.0 + 1;
        paged.extend(page);
    }
    assert_eq!(paged, all);
    assert!(core.readdir_from(ino(&core, "Band/Song 00.toy"), 0, |_, _, _| false).is_err());
}

#[test]
fn a_refresh_during_an_open_handle_keeps_the_handles_layout() {
    let mut f = Fixture::new(OriginCaps::LOCAL);
    let a = audio(40_000, 7);
    let id = f.add("a.toy", "Band", "Song", &a);
    let core = f.core(Mode::Synthesis);
    let (old_fh, old) = core.open(ino(&core, "Band/Song.toy")).unwrap();
    f.catalog
        .apply_edits(&[id], &[Edit::Set { key: "title".into(), values: vec!["A Much Longer Title".into()] }], &[])
        .unwrap();
    let inval = core.refresh().unwrap();
    assert!(!inval.is_empty(), "the rename is reported to the kernel");
    assert!(core.lookup(ino(&core, "Band"), "Song.toy").is_none());
    let new_ino = ino(&core, "Band/A Much Longer Title.toy");
    let want_new = toy_file(&[("ARTIST", "Band"), ("TITLE", "A Much Longer Title")], &a);
    assert_eq!(size(&core, new_ino), want_new.len() as u64, "the new size is announced at once");
    let (new_fh, _) = core.open(new_ino).unwrap();
    assert_eq!(read_all(&core, new_fh, want_new.len() as u64, 4096), want_new);
    // The handle opened before the edit serves its own snapshot, whole and consistent.
    let want_old = toy_file(&[("ARTIST", "Band"), ("TITLE", "Song")], &a);
    assert_eq!(old.size, want_old.len() as u64);
    assert_eq!(read_all(&core, old_fh, old.size, 4096), want_old);
}

/// Regression (issue 14, item 8): an open between an edit and the mount's refresh served
/// the new bytes under the old size the kernel held for the inode. An edit now gives the
/// file a new inode: the old one answers ESTALE (the kernel looks the name up again), keeps
/// answering with its own size while a handle of it is open, and the new one announces
/// exactly what its handles read.
#[test]
fn an_edit_gives_a_new_inode_and_the_old_one_is_stale_not_resized() {
    let mut f = Fixture::new(OriginCaps::LOCAL);
    let a = audio(30_000, 11);
    let id = f.add("a.toy", "Band", "Song", &a);
    let core = f.core(Mode::Synthesis);
    let old_ino = ino(&core, "Band/Song.toy");
    let (old_fh, old) = core.open(old_ino).unwrap();
    f.catalog
        .apply_edits(
            &[id],
            &[Edit::Set { key: "comment".into(), values: vec!["a comment that grows the header".into()] }],
            &[],
        )
        .unwrap();
    // Not refreshed yet: the open of the (now old) inode refreshes and says ESTALE.
    assert!(matches!(core.open(old_ino), Err(ServeError::Stale)));
    assert_eq!(ServeError::Stale.errno(), libc::ESTALE);
    assert!(core.has_pending(), "the open's refresh owes the kernel its invalidations");
    let new_ino = ino(&core, "Band/Song.toy");
    assert_ne!(new_ino, old_ino, "same name, new inode");
    assert!(core.is_retired(old_ino));
    // The old inode still answers, as its open handle serves it.
    assert_eq!(core.node(old_ino).map(|n| n.ino), Some(old_ino));
    assert_eq!(size(&core, old_ino), old.size);
    let (new_fh, new) = core.open(new_ino).unwrap();
    assert_eq!(size(&core, new_ino), new.size);
    assert!(new.size > old.size);
    assert_eq!(read_all(&core, new_fh, new.size, 4096).len() as u64, new.size);
    assert_eq!(read_all(&core, old_fh, old.size, 4096), toy_file(&[("ARTIST", "Band"), ("TITLE", "Song")], &a));
    let inval = core.refresh().unwrap();
    assert!(inval.contains(&Inval::Entry { parent: ino(&core, "Band"), name: "Song.toy".into() }), "{inval:?}");
    core.invalidated(&inval);
    assert!(!core.has_pending());
    // Once its handle is closed, the old inode is simply stale.
    core.release(old_fh);
    assert!(core.node(old_ino).is_none() && core.is_retired(old_ino));
}

#[test]
fn a_change_log_gap_rebuilds_the_tree() {
    let mut f = Fixture::new(OriginCaps::LOCAL);
    let id = f.add("a.toy", "Band", "Song", &audio(100, 8));
    let core = f.core(Mode::Passthrough);
    let band = ino(&core, "Band");
    f.catalog.apply_edits(&[id], &[Edit::Set { key: "artist".into(), values: vec!["Renamed".into()] }], &[]).unwrap();
    f.add("b.toy", "Newcomer", "Hit", &audio(100, 9));
    // The log is pruned past the core's position: it no longer says what changed.
    f.catalog.prune_changes(-3600).unwrap();
    let inval = core.refresh().unwrap();
    assert!(inval.contains(&Inval::Inode(band)), "every old directory listing is invalidated: {inval:?}");
    assert!(core.lookup(ROOT, "Band").is_none());
    ino(&core, "Renamed/Song.toy");
    ino(&core, "Newcomer/Hit.toy");
    assert_eq!(core.position(), f.catalog.last_change().unwrap());
}

#[test]
fn cached_reads_are_exact_at_every_chunk_boundary() {
    let mut f = Fixture::new(OriginCaps::NONE);
    let chunk = 64 * 1024u64;
    let a = audio(5 * chunk as usize + 1234, 10);
    f.add("a.toy", "Band", "Song", &a);
    // Unedited, the synthesized file is the original: chunk boundaries of the original
    // are the same offsets in both modes, where a read spans an origin chunk edge.
    let want = toy_file(&[("ARTIST", "Band"), ("TITLE", "Song")], &a);
    let settings = CacheSettings { chunk_size: chunk, readahead: 2, ..CacheSettings::default() };
    let cache = crate::cache::ChunkCache::open(f.dir.path().join("chunks"), &f.dir.path().join("catalog.db"), settings)
        .unwrap();
    for mode in [Mode::Passthrough, Mode::Synthesis] {
        let core = f.core(mode).with_cache(cache.clone());
        let (fh, file) = core.open(ino(&core, "Band/Song.toy")).unwrap();
        assert_eq!(file.size, want.len() as u64);
        for k in 0..=5u64 {
            for delta in [-4097i64, -1, 0, 1, 4096] {
                let Ok(off) = u64::try_from((k * chunk) as i64 + delta) else { continue };
                if off >= file.size {
                    continue;
                }
                for len in [1u32, 4096, 65_536, 131_072] {
                    let got = core.read(fh, off, len).unwrap();
                    let end = (off + u64::from(len)).min(file.size) as usize;
                    assert_eq!(&got[..], &want[off as usize..end], "{mode:?}: read of {len} at {off}");
                }
            }
        }
        assert_eq!(read_all(&core, fh, file.size, 128 * 1024), want, "{mode:?}: a sequential stream");
    }
    cache.flush();
    let st = cache.store().stats().unwrap();
    assert_eq!((st.chunks, st.files_with_chunks), (6, 1), "every chunk was cached: {st:?}");
}

#[test]
fn a_cached_file_reads_offline_and_an_uncached_range_fails_instead_of_zeros() {
    let mut f = Fixture::new(OriginCaps::NONE);
    let chunk = 64 * 1024u64;
    let a = audio(4 * chunk as usize, 11);
    f.add("a.toy", "Band", "Song", &a);
    let want = toy_file(&[("ARTIST", "Band"), ("TITLE", "Song")], &a);
    let settings = CacheSettings { chunk_size: chunk, readahead: 0, ..CacheSettings::default() };
    let cache = crate::cache::ChunkCache::open(f.dir.path().join("chunks"), &f.dir.path().join("catalog.db"), settings)
        .unwrap();
    {
        let core = f.core(Mode::Synthesis).with_cache(cache.clone());
        let (fh, _) = core.open(ino(&core, "Band/Song.toy")).unwrap();
        assert_eq!(&core.read(fh, 0, 4096).unwrap()[..], &want[..4096]);
    }
    cache.flush();
    f.origin.fail_with(Some(
        musefs_plugin_api::PluginError::new(musefs_plugin_api::ErrorKind::UNAVAILABLE, "server down").retryable(),
    ));
    let core = f.core(Mode::Synthesis).with_cache(cache.clone());
    let (fh, _) = core.open(ino(&core, "Band/Song.toy")).expect("a cached file opens with its origin down");
    assert_eq!(&core.read(fh, 0, 4096).unwrap()[..], &want[..4096], "the cached chunk reads offline");
    let far = 3 * chunk + 100;
    let err = core.read(fh, far, 4096).expect_err("an uncached range with the origin down");
    assert_eq!(err.errno(), libc::EIO);
    assert!(err.to_string().contains("server down"), "{err}");
    f.origin.fail_with(None);
    assert_eq!(&core.read(fh, far, 4096).unwrap()[..], &want[far as usize..far as usize + 4096], "it recovers");
}

/// A writable synthesis core over `f`; its scratch files in `f`'s `writes/`.
fn writable(f: &Fixture) -> Core {
    f.core_with(ScriptedFormat::new(), synthesis()).with_writes(&f.dir.path().join("writes")).unwrap()
}

/// The bytes of `path` in the fixture's origin.
fn origin_bytes(f: &Fixture, path: &str) -> Vec<u8> {
    let ctx = CallCtx::unlimited();
    let h = origin_into_ffi(f.origin.clone()).open(&ctx, path.into()).into_result().unwrap();
    musefs_plugin_api::Source::new(h, ctx).read_vec(0, usize::MAX >> 8).unwrap()
}

fn scratch_files(f: &Fixture) -> usize {
    std::fs::read_dir(f.dir.path().join("writes")).unwrap().count()
}

#[test]
fn a_save_through_a_write_session_becomes_an_edit_and_readers_see_old_or_new() {
    let mut f = Fixture::new(OriginCaps::LOCAL);
    let a = audio(50_000, 3);
    let id = f.add("a.toy", "Band", "Song", &a);
    let original = origin_bytes(&f, "a.toy");
    let core = writable(&f);
    let file = ino(&core, "Band/Song.toy");
    let old = toy_file(&[("ARTIST", "Band"), ("TITLE", "Song")], &a);
    let (before, _) = core.open(file).unwrap();
    // The editor rewrites the whole file with a longer header (the audio shifts).
    let new = toy_file(&[("ARTIST", "Band"), ("TITLE", "A Much Longer Title"), ("GENRE", "Jazz")], &a);
    let (w, _) = core.open_write(file, true).unwrap();
    assert_eq!(scratch_files(&f), 1);
    for (i, chunk) in new.chunks(7000).enumerate() {
        core.write(w, (i * 7000) as u64, chunk).unwrap();
    }
    // A reader opened during the session reads what was written; one opened before
    // reads the old file; `getattr` says the written size.
    let (during, _) = core.open(file).unwrap();
    assert_eq!(read_all(&core, during, new.len() as u64, 4096), new);
    assert_eq!(read_all(&core, before, old.len() as u64, 4096), old);
    assert_eq!(size(&core, file), new.len() as u64);
    core.flush(w).unwrap();
    let text = lock(&core.catalog).effective_text(id).unwrap();
    assert_eq!(text["title"], ["A Much Longer Title"]);
    assert_eq!(text["genre"], ["Jazz"]);
    core.release(w);
    core.release(during);
    assert_eq!(scratch_files(&f), 0, "the scratch file goes with the session");
    // The tree moved: the new name serves the catalog's synthesis of the edit.
    let edited = ino(&core, "Band/A Much Longer Title.toy");
    let (fh, _) = core.open(edited).unwrap();
    let served = read_all(&core, fh, size(&core, edited), 4096);
    assert!(served.ends_with(&a) && served.windows(4).any(|w| w == b"Jazz"));
    assert_eq!(read_all(&core, before, old.len() as u64, 4096), old, "an old handle keeps its version");
    assert_eq!(origin_bytes(&f, "a.toy"), original, "the original is untouched");
}

#[test]
fn a_save_that_changes_the_audio_or_does_not_read_is_refused_and_nothing_is_stored() {
    let mut f = Fixture::new(OriginCaps::LOCAL);
    let a = audio(20_000, 4);
    let id = f.add("a.toy", "Band", "Song", &a);
    let core = writable(&f);
    let file = ino(&core, "Band/Song.toy");
    let before = lock(&core.catalog).effective_text(id).unwrap();
    let mut changed = a.clone();
    changed[10_000] ^= 1;
    let (w, _) = core.open_write(file, true).unwrap();
    core.write(w, 0, &toy_file(&[("ARTIST", "Band"), ("TITLE", "Other")], &changed)).unwrap();
    let e = core.flush(w).unwrap_err();
    assert_eq!(e.errno(), libc::EPERM, "{e}");
    assert!(e.to_string().contains("a.toy") && e.to_string().contains("audio changed"), "{e}");
    // Not a toy file at all: EIO.
    core.truncate(file, 0).unwrap();
    core.write(w, 0, b"garbage").unwrap();
    let e = core.fsync(w).unwrap_err();
    assert_eq!(e.errno(), libc::EIO, "{e}");
    // Nothing written since the last refusal: closing commits nothing more.
    core.flush(w).unwrap();
    core.release(w);
    assert_eq!(lock(&core.catalog).effective_text(id).unwrap(), before, "nothing was stored");
    let (fh, _) = core.open(file).unwrap();
    assert_eq!(read_all(&core, fh, size(&core, file), 4096), toy_file(&[("ARTIST", "Band"), ("TITLE", "Song")], &a));
    assert_eq!(scratch_files(&f), 0);
}

#[test]
fn a_scratch_file_renamed_over_a_served_file_commits_and_its_inode_serves_the_file() {
    let mut f = Fixture::new(OriginCaps::LOCAL);
    let a = audio(30_000, 5);
    let id = f.add("a.toy", "Band", "Song", &a);
    let core = writable(&f);
    let dir = ino(&core, "Band");
    let (attr, w, _) = core.create(dir, ".Song.toy.tmp").unwrap();
    assert!(is_scratch_ino(attr.ino));
    assert_eq!(ino(&core, "Band/.Song.toy.tmp"), attr.ino, "a scratch file is looked up by name");
    let (_, names) = core.readdir(dir).unwrap();
    assert!(names.iter().any(|(_, n)| n == ".Song.toy.tmp"), "and listed");
    core.write(w, 0, &toy_file(&[("ARTIST", "Band"), ("TITLE", "Song"), ("COMMENT", "renamed")], &a)).unwrap();
    core.flush(w).unwrap();
    assert!(!lock(&core.catalog).effective_text(id).unwrap().contains_key("comment"), "a scratch file commits nothing");
    core.release(w);
    assert_eq!(core.create(dir, ".Song.toy.tmp").err().unwrap().errno(), libc::EEXIST, "it lives on, closed");
    core.rename(dir, ".Song.toy.tmp", dir, "Song.toy", false).unwrap();
    assert_eq!(lock(&core.catalog).effective_text(id).unwrap()["comment"], ["renamed"]);
    assert!(core.lookup(dir, ".Song.toy.tmp").is_none());
    // The kernel now knows the name by the scratch inode: it serves the file.
    let served = core.node(attr.ino).unwrap();
    assert_eq!(served.ino, attr.ino);
    let (fh, _) = core.open(attr.ino).unwrap();
    let bytes = read_all(&core, fh, size(&core, attr.ino), 4096);
    assert!(bytes.ends_with(&a) && bytes.windows(7).any(|w| w == b"renamed"));
    // Served files are not moved or deleted; unknown names are not found.
    assert_eq!(core.unlink(dir, "Song.toy").unwrap_err().errno(), libc::EPERM);
    assert_eq!(core.rename(dir, "Song.toy", dir, "x.toy", false).unwrap_err().errno(), libc::EPERM);
    assert_eq!(core.unlink(dir, "nothing").unwrap_err().errno(), libc::ENOENT);
    assert_eq!(scratch_files(&f), 0);
}

#[test]
fn a_read_only_core_answers_erofs() {
    let mut f = Fixture::new(OriginCaps::LOCAL);
    f.add("a.toy", "Band", "Song", &audio(1000, 6));
    let core = f.core(Mode::Synthesis);
    let file = ino(&core, "Band/Song.toy");
    assert_eq!(core.open_write(file, false).err().unwrap().errno(), libc::EROFS);
    assert_eq!(core.create(ino(&core, "Band"), "x").err().unwrap().errno(), libc::EROFS);
    assert_eq!(core.truncate(file, 0).unwrap_err().errno(), libc::EROFS);
}

/// Regression: `node` (a getattr) held the tree's lock while sizing took the catalog's,
/// and a refresh takes the catalog's, then the tree's: a getattr of a synthesized file
/// whose size was not known yet, during a refresh, deadlocked the mount (found by
/// `size_equals_bytes_after_ogg_edits_under_load` once edits woke the mount at once).
#[test]
fn getattr_during_a_refresh_does_not_deadlock_regression() {
    use std::sync::atomic::AtomicBool;
    let mut f = Fixture::new(OriginCaps::LOCAL);
    let ids: Vec<i64> =
        (0..4).map(|i| f.add(&format!("{i}.toy"), "Band", &format!("Song {i}"), &audio(5000, i))).collect();
    let core = Arc::new(f.core(Mode::Synthesis));
    let path = f.dir.path().join("catalog.db");
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    let worker = {
        let core = core.clone();
        std::thread::spawn(move || {
            let stop = Arc::new(AtomicBool::new(false));
            let getters: Vec<_> = (0..4)
                .map(|_| {
                    let (core, stop) = (core.clone(), stop.clone());
                    std::thread::spawn(move || {
                        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                            let (_, entries) = core.readdir(ino(&core, "Band")).unwrap();
                            for (a, _) in entries {
                                let _ = core.node(a.ino);
                            }
                        }
                    })
                })
                .collect();
            let mut writer = Catalog::open(&path).unwrap();
            for round in 0..150 {
                let id = ids[round % ids.len()];
                let edit = Edit::Set { key: "comment".into(), values: vec!["x".repeat(round)] };
                writer.apply_edits(&[id], &[edit], &[]).unwrap();
                core.refresh().unwrap();
            }
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
            for g in getters {
                g.join().unwrap();
            }
            done_tx.send(()).unwrap();
        })
    };
    assert!(
        done_rx.recv_timeout(std::time::Duration::from_secs(60)).is_ok(),
        "getattrs and refreshes deadlocked (the test process must be killed)"
    );
    worker.join().unwrap();
}

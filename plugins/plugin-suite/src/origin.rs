//! The origin behaviour suite: each check is one trial named `origin::NAME::CHECK`.
//!
//! Read-only checks share one store (created on first use); checks that change or stop
//! the store (`a_replaced_object_...`, `an_unreachable_origin_...`) get a store of
//! their own, so trials can run in parallel in any order.

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use libtest_mimic::{Failed, Trial};
use musefs_plugin_api::abi_stable::std_types::RSliceMut;
use musefs_plugin_api::{CallCtx, EntryKind, ErrorKind, HandleBox, ListRequest, OriginBox, PluginError};

use crate::{check, lcg};

/// A store holding the fixture, with an origin over it.
pub trait OriginStore: Send + Sync {
    /// The origin under test.
    fn origin(&self) -> &OriginBox;
    /// Replaces the object at `path` with `data` (a new version, a new size).
    fn replace(&self, path: &str, data: &[u8]);
    /// Makes the store unreachable (a remote server stopped).
    fn stop(&self) {}
}

/// What an origin can do; a check needing a capability it lacks is ignored.
#[derive(Debug, Clone, Copy, Default)]
pub struct OriginCaps {
    /// [`OriginStore::stop`] makes it unreachable (remote origins).
    pub stoppable: bool,
    /// A handle of a replaced object fails with `CHANGED` (remote origins pin a
    /// version); a local origin may instead keep serving the old bytes.
    pub pins_versions: bool,
}

/// Builds a store holding `files` (path → bytes).
pub type MakeStore = dyn Fn(&BTreeMap<String, Vec<u8>>) -> Box<dyn OriginStore> + Send + Sync;

/// An origin plugin under test.
pub struct OriginUnderTest {
    name: String,
    make: Box<MakeStore>,
    caps: OriginCaps,
    shared: OnceLock<Box<dyn OriginStore>>,
}

impl OriginUnderTest {
    /// The origin `name`, whose stores `make` builds.
    pub fn new(
        name: &str,
        caps: OriginCaps,
        make: impl Fn(&BTreeMap<String, Vec<u8>>) -> Box<dyn OriginStore> + Send + Sync + 'static,
    ) -> Self {
        Self { name: name.to_owned(), make: Box::new(make), caps, shared: OnceLock::new() }
    }

    fn shared(&self) -> &dyn OriginStore {
        self.shared.get_or_init(|| (self.make)(&fixture())).as_ref()
    }
}

/// The fixture every store holds: relative path → content (sizes around 1 MiB chunk
/// edges, an empty file, nested and non-ASCII names).
pub fn fixture() -> BTreeMap<String, Vec<u8>> {
    let mut seed = 0x5eed_u64;
    let mut bytes = |n: usize| (0..n).map(|_| (lcg(&mut seed) >> 24) as u8).collect::<Vec<u8>>();
    let mut m = BTreeMap::new();
    m.insert("top.bin".to_owned(), bytes(1024 * 1024 + 17));
    m.insert("big.bin".to_owned(), bytes(3 * 1024 * 1024 + 4321));
    m.insert("empty.bin".to_owned(), Vec::new());
    m.insert("Artist/Album/01 space name.bin".to_owned(), bytes(70_000));
    m.insert("Artist/Album/02 日本語 ÄÖ.bin".to_owned(), bytes(1234));
    m.insert("d1/d2/d3/deep.bin".to_owned(), bytes(10));
    m
}

fn ctx() -> CallCtx {
    CallCtx::with_timeout(Duration::from_secs(20))
}

fn read_exact(h: &HandleBox, offset: u64, n: usize) -> Result<Vec<u8>, PluginError> {
    let mut buf = vec![0u8; n];
    let mut done = 0;
    while done < n {
        let got = h.read_at(&ctx(), offset + done as u64, RSliceMut::from_mut_slice(&mut buf[done..])).into_result()?;
        if got == 0 {
            return Err(PluginError::new(
                ErrorKind::UNEXPECTED_EOF,
                format!("a read returned 0 before the end ({done} of {n} at {offset})"),
            ));
        }
        done += got;
    }
    Ok(buf)
}

fn list_all(o: &OriginBox, dir: &str, recursive: bool, page: u32) -> Result<Vec<(String, EntryKind, u64)>, Failed> {
    let req = ListRequest { dir: dir.into(), recursive };
    let mut l = o.list(&ctx(), &req).into_result()?;
    let mut out = Vec::new();
    loop {
        let p = l.next_page(&ctx(), page).into_result()?;
        check(p.len() <= page as usize, || format!("a page of {} entries for max {page}", p.len()))?;
        if p.is_empty() {
            break;
        }
        out.extend(p.into_iter().map(|e| (e.path.into_string(), e.stat.kind, e.stat.size)));
    }
    check(l.next_page(&ctx(), page).into_result()?.is_empty(), || "a finished listing returned more".into())?;
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

type Check = fn(&OriginUnderTest) -> Result<(), Failed>;

/// The trials of the origin suite for `o`.
pub fn origin_trials(o: OriginUnderTest) -> Vec<Trial> {
    let o = Arc::new(o);
    let caps = o.caps;
    let checks: Vec<(&str, bool, Check)> = vec![
        ("lists_every_file_recursively_in_small_pages", false, |o| {
            let files: Vec<(String, u64)> = list_all(o.shared().origin(), "", true, 2)?
                .into_iter()
                .filter(|e| e.1 == EntryKind::FILE)
                .map(|e| (e.0, e.2))
                .collect();
            let want: Vec<(String, u64)> = fixture().iter().map(|(p, d)| (p.clone(), d.len() as u64)).collect();
            check(files == want, || format!("{files:?}"))
        }),
        ("lists_one_level_with_directories", false, |o| {
            let top = list_all(o.shared().origin(), "", false, 100)?;
            let files: Vec<&str> = top.iter().filter(|e| e.1 == EntryKind::FILE).map(|e| e.0.as_str()).collect();
            let dirs: Vec<&str> = top.iter().filter(|e| e.1 == EntryKind::DIR).map(|e| e.0.as_str()).collect();
            check(files == ["big.bin", "empty.bin", "top.bin"] && dirs == ["Artist", "d1"], || format!("{top:?}"))
        }),
        ("lists_a_subdirectory", false, |o| {
            let sub = list_all(o.shared().origin(), "Artist", true, 100)?;
            check(sub.len() == 2 && sub.iter().all(|e| e.0.starts_with("Artist/Album/")), || format!("{sub:?}"))
        }),
        ("stats_sizes_and_stamps", false, |o| {
            for (p, d) in &fixture() {
                let st = o.shared().origin().stat(&ctx(), p.as_str().into()).into_result()?;
                check(st.kind == EntryKind::FILE && st.size == d.len() as u64, || format!("{p}: {st:?}"))?;
                check(st.mtime_ns.is_some() || st.etag.is_some(), || format!("{p} has no stamp"))?;
            }
            Ok(())
        }),
        ("a_missing_path_is_not_found", false, |o| {
            let e = o.shared().origin().stat(&ctx(), "no/such/file.bin".into()).into_result().unwrap_err();
            check(e.kind == ErrorKind::NOT_FOUND && !e.retryable, || format!("stat: {e}"))?;
            match o.shared().origin().open(&ctx(), "nope.bin".into()).into_result() {
                Ok(_) => Err("opened a missing file".into()),
                Err(e) => check(e.kind == ErrorKind::NOT_FOUND, || format!("open: {e}")),
            }
        }),
        ("hostile_paths_are_invalid_input", false, |o| {
            for bad in ["../x", "/etc/passwd", "a/../../b", "a//b", "./top.bin", ""] {
                let e = o.shared().origin().stat(&ctx(), bad.into()).into_result().unwrap_err();
                check(e.kind == ErrorKind::INVALID_INPUT, || format!("stat {bad:?}: {e}"))?;
                match o.shared().origin().open(&ctx(), bad.into()).into_result() {
                    Ok(_) => return Err(format!("opened {bad:?}").into()),
                    Err(e) => check(e.kind == ErrorKind::INVALID_INPUT, || format!("open {bad:?}: {e}"))?,
                }
            }
            Ok(())
        }),
        ("reads_whole_files_in_large_reads", false, |o| {
            for (p, d) in &fixture() {
                let h = o.shared().origin().open(&ctx(), p.as_str().into()).into_result()?;
                check(h.len() == d.len() as u64, || format!("{p}: len {}", h.len()))?;
                let mut got = Vec::new();
                while got.len() < d.len() {
                    let n = (1 << 20).min(d.len() - got.len());
                    got.extend(read_exact(&h, got.len() as u64, n)?);
                }
                check(got == *d, || format!("{p}: bytes differ"))?;
            }
            Ok(())
        }),
        ("reads_at_and_past_the_end_return_nothing", false, |o| {
            for (p, d) in &fixture() {
                let h = o.shared().origin().open(&ctx(), p.as_str().into()).into_result()?;
                let mut b = [0u8; 16];
                for at in [d.len() as u64, d.len() as u64 + 1, u64::MAX / 2] {
                    let n = h.read_at(&ctx(), at, RSliceMut::from_mut_slice(&mut b)).into_result()?;
                    check(n == 0, || format!("{p}: {n} bytes at {at}"))?;
                }
            }
            Ok(())
        }),
        ("small_sequential_reads", false, |o| {
            let big = &fixture()["big.bin"];
            let h = o.shared().origin().open(&ctx(), "big.bin".into()).into_result()?;
            let mut got = Vec::new();
            while got.len() < 400_000 {
                got.extend(read_exact(&h, got.len() as u64, 1000)?);
            }
            check(got == big[..got.len()], || "small sequential reads differ".into())
        }),
        ("seeks_back_and_forward_in_a_sequential_run", false, |o| {
            let big = &fixture()["big.bin"];
            let h = o.shared().origin().open(&ctx(), "big.bin".into()).into_result()?;
            let mb = 1 << 20;
            for (at, n) in [(0, mb), (mb, mb), (mb / 2, mb), (2 * mb, mb), (3 * mb, big.len() - 3 * mb), (mb, 4096)] {
                check(read_exact(&h, at as u64, n)? == big[at..at + n], || format!("read {n} at {at}"))?;
            }
            Ok(())
        }),
        ("seeded_random_reads", false, |o| {
            let big = &fixture()["big.bin"];
            let h = o.shared().origin().open(&ctx(), "big.bin".into()).into_result()?;
            let mut seed = 42;
            for _ in 0..40 {
                let at = (lcg(&mut seed) % big.len() as u64) as usize;
                let n = ((lcg(&mut seed) % 200_000) as usize).min(big.len() - at).max(1);
                check(read_exact(&h, at as u64, n)? == big[at..at + n], || format!("random read {n} at {at}"))?;
            }
            Ok(())
        }),
        ("a_cancelled_call_is_cancelled", false, |o| {
            let h = o.shared().origin().open(&ctx(), "big.bin".into()).into_result()?;
            let c = ctx();
            c.cancel();
            let mut b = vec![0u8; 4096];
            let e = h.read_at(&c, 12345, RSliceMut::from_mut_slice(&mut b)).into_result().unwrap_err();
            check(e.kind == ErrorKind::CANCELLED, || format!("read: {e}"))?;
            let e = o.shared().origin().stat(&c, "top.bin".into()).into_result().unwrap_err();
            check(e.kind == ErrorKind::CANCELLED, || format!("stat: {e}"))
        }),
        ("a_replaced_object_never_yields_new_bytes_to_an_old_handle", false, |o| {
            let store = (o.make)(&fixture());
            let old = &fixture()["top.bin"];
            let h = store.origin().open(&ctx(), "top.bin".into()).into_result()?;
            read_exact(&h, 0, 100)?;
            let new: Vec<u8> = old.iter().map(|b| !b).chain([1, 2, 3]).collect();
            store.replace("top.bin", &new);
            let at = old.len() / 2;
            match read_exact(&h, at as u64, 64 * 1024) {
                Ok(got) => {
                    check(!o.caps.pins_versions, || "a read after the object was replaced was served".into())?;
                    check(got == old[at..at + 64 * 1024], || "bytes of the new version after open".into())?;
                }
                Err(e) => check(e.kind == ErrorKind::CHANGED, || format!("{e}"))?,
            }
            let h = store.origin().open(&ctx(), "top.bin".into()).into_result()?;
            check(h.len() == new.len() as u64, || "a new open does not see the new version".into())?;
            check(read_exact(&h, 0, new.len())? == new, || "the new version's bytes".into())
        }),
        ("an_unreachable_origin_fails_retryable_within_the_timeout", !caps.stoppable, |o| {
            let store = (o.make)(&fixture());
            let h = store.origin().open(&ctx(), "big.bin".into()).into_result()?;
            store.stop();
            let c = CallCtx::with_timeout(Duration::from_secs(3));
            let t = Instant::now();
            let e = store.origin().stat(&c, "big.bin".into()).into_result().unwrap_err();
            check(e.retryable, || format!("not retryable: {e}"))?;
            check(t.elapsed() < Duration::from_secs(8), || format!("stat took {:?}", t.elapsed()))?;
            let t = Instant::now();
            let mut b = vec![0u8; 1 << 20];
            let e = h.read_at(&c, 0, RSliceMut::from_mut_slice(&mut b)).into_result().unwrap_err();
            check(e.retryable || e.kind == ErrorKind::CHANGED, || format!("read: {e}"))?;
            check(t.elapsed() < Duration::from_secs(8), || format!("read took {:?}", t.elapsed()))
        }),
    ];
    checks
        .into_iter()
        .map(|(name, ignored, run)| {
            let o = o.clone();
            Trial::test(format!("origin::{}::{name}", o.name), move || run(&o)).with_ignored_flag(ignored)
        })
        .collect()
}

//! In-memory fakes for tests (feature `testing`): an [`Origin`] over a map
//! ([`MemOrigin`]), a [`Handle`] over bytes ([`MemHandle`]), and a small but real
//! format ([`ScriptedFormat`]: the "toy" container below) whose plan can be scripted to
//! misbehave. Plugin authors use them to test a format without files or a server; the
//! host uses them to test its serving core without plugins, encoders or FUSE.
//!
//! The toy container: `TOY1`, a little-endian `u32` header length, the header (lines
//! `key=value\n`), then the audio bytes.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use crate::error::{ErrorKind, PluginError, PluginResult};
use crate::format::{Format, Source};
use crate::origin::{check_path, Handle, Lister, Origin};
use crate::types::{
    AudioProps, CallCtx, Entry, EntryKind, ListRequest, OriginCaps, Plan, PlanRequest, Region, Segment, Stat, Tag,
    TrackInfo,
};

#[derive(Clone)]
struct Object {
    data: Arc<Vec<u8>>,
    mtime_ns: i64,
}

type Store = Arc<RwLock<BTreeMap<String, Object>>>;

fn read_store(s: &Store) -> std::sync::RwLockReadGuard<'_, BTreeMap<String, Object>> {
    s.read().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// An origin over an in-memory map of path → bytes. Cloning shares the map, so a test
/// keeps a clone to change objects while the host holds the origin.
#[derive(Clone)]
pub struct MemOrigin {
    store: Store,
    caps: OriginCaps,
    clock: Arc<AtomicU64>,
    fail: Arc<Mutex<Option<PluginError>>>,
    fail_next: Arc<Mutex<(u32, Option<PluginError>)>>,
    calls: Arc<AtomicU64>,
    reads: Arc<AtomicU64>,
    max_read: Arc<AtomicU64>,
}

impl MemOrigin {
    /// An empty origin with capabilities `caps` ([`OriginCaps::LOCAL`] for one the
    /// host serves directly, [`OriginCaps::NONE`] for a "remote" one it caches).
    pub fn new(caps: OriginCaps) -> Self {
        Self {
            store: Store::default(),
            caps,
            clock: Arc::new(AtomicU64::new(1_000_000_000)),
            fail: Arc::default(),
            fail_next: Arc::default(),
            calls: Arc::default(),
            reads: Arc::default(),
            max_read: Arc::new(AtomicU64::new(u64::MAX)),
        }
    }

    /// Creates or replaces the object at `path` (a new version: a new mtime).
    pub fn put(&self, path: &str, data: Vec<u8>) {
        let mtime_ns = self.clock.fetch_add(1_000, Ordering::Relaxed) as i64;
        let mut s = self.store.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        s.insert(path.to_owned(), Object { data: Arc::new(data), mtime_ns });
    }

    /// Removes the object at `path`.
    pub fn remove(&self, path: &str) {
        self.store.write().unwrap_or_else(std::sync::PoisonError::into_inner).remove(path);
    }

    /// From now on every call fails with `err` (`None`: works again), as an unreachable
    /// server would.
    pub fn fail_with(&self, err: Option<PluginError>) {
        *self.fail.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = err;
    }

    /// The next `n` calls (stat, open, list, read) fail with `err`, then calls work
    /// again: a transient failure.
    pub fn fail_next(&self, n: u32, err: PluginError) {
        *self.fail_next.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = (n, Some(err));
    }

    /// How many calls (stat, open, list, read) reached this origin.
    pub fn calls(&self) -> u64 {
        self.calls.load(Ordering::Relaxed)
    }

    /// Handles return at most `n` bytes per `read_at` (short reads).
    pub fn max_read(&self, n: usize) {
        self.max_read.store(n as u64, Ordering::Relaxed);
    }

    /// How many `read_at` calls handles of this origin answered.
    pub fn reads(&self) -> u64 {
        self.reads.load(Ordering::Relaxed)
    }

    fn check(&self) -> PluginResult<()> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        {
            let mut next = self.fail_next.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            if next.0 > 0 {
                next.0 -= 1;
                if let Some(e) = &next.1 {
                    return Err(e.clone());
                }
            }
        }
        match &*self.fail.lock().unwrap_or_else(std::sync::PoisonError::into_inner) {
            Some(e) => Err(e.clone()),
            None => Ok(()),
        }
    }

    fn stat_of(o: &Object) -> Stat {
        Stat { kind: EntryKind::FILE, size: o.data.len() as u64, mtime_ns: Some(o.mtime_ns).into(), etag: None.into() }
    }
}

impl Origin for MemOrigin {
    fn list(&self, _ctx: &CallCtx, req: &ListRequest) -> PluginResult<Box<dyn Lister>> {
        self.check()?;
        let dir = req.dir.as_str().trim_matches('/');
        let prefix = if dir.is_empty() { String::new() } else { format!("{dir}/") };
        let mut entries = Vec::new();
        let mut dirs = std::collections::BTreeSet::new();
        for (p, o) in read_store(&self.store).iter() {
            let Some(rest) = p.strip_prefix(&prefix) else { continue };
            match rest.split_once('/') {
                Some((d, _)) if !req.recursive => {
                    dirs.insert(format!("{prefix}{d}"));
                }
                _ => entries.push(Entry { path: p.as_str().into(), stat: Self::stat_of(o) }),
            }
        }
        entries.extend(dirs.into_iter().map(|d| Entry {
            path: d.into(),
            stat: Stat { kind: EntryKind::DIR, size: 0, mtime_ns: None.into(), etag: None.into() },
        }));
        if entries.is_empty() && !dir.is_empty() {
            return Err(PluginError::new(ErrorKind::NOT_FOUND, format!("{dir}: no such directory")));
        }
        Ok(Box::new(MemLister(entries.into_iter())))
    }

    fn stat(&self, _ctx: &CallCtx, path: &str) -> PluginResult<Stat> {
        check_path(path)?;
        self.check()?;
        read_store(&self.store)
            .get(path)
            .map(Self::stat_of)
            .ok_or_else(|| PluginError::new(ErrorKind::NOT_FOUND, format!("{path}: not found")))
    }

    fn open(&self, _ctx: &CallCtx, path: &str) -> PluginResult<Arc<dyn Handle>> {
        check_path(path)?;
        self.check()?;
        let o = read_store(&self.store)
            .get(path)
            .cloned()
            .ok_or_else(|| PluginError::new(ErrorKind::NOT_FOUND, format!("{path}: not found")))?;
        Ok(Arc::new(MemHandle { stat: Self::stat_of(&o), data: o.data, pinned: Some((self.clone(), path.to_owned())) }))
    }

    fn caps(&self) -> OriginCaps {
        self.caps
    }
}

struct MemLister(std::vec::IntoIter<Entry>);

impl Lister for MemLister {
    fn next_page(&mut self, _ctx: &CallCtx, max: usize) -> PluginResult<Vec<Entry>> {
        Ok(self.0.by_ref().take(max).collect())
    }
}

/// A handle over bytes. One opened by a [`MemOrigin`] is pinned to the version it
/// opened: once the object is replaced or removed its reads fail with
/// [`CHANGED`](ErrorKind::CHANGED), as a remote origin's do.
pub struct MemHandle {
    data: Arc<Vec<u8>>,
    stat: Stat,
    pinned: Option<(MemOrigin, String)>,
}

impl MemHandle {
    /// A handle over `data` alone.
    pub fn new(data: Vec<u8>) -> Self {
        let stat = Stat { kind: EntryKind::FILE, size: data.len() as u64, mtime_ns: Some(0).into(), etag: None.into() };
        Self { data: Arc::new(data), stat, pinned: None }
    }
}

impl Handle for MemHandle {
    fn len(&self) -> u64 {
        self.data.len() as u64
    }

    fn stat(&self) -> Stat {
        self.stat.clone()
    }

    fn read_at(&self, _ctx: &CallCtx, offset: u64, buf: &mut [u8]) -> PluginResult<usize> {
        let mut max = buf.len();
        if let Some((origin, path)) = &self.pinned {
            origin.check()?;
            origin.reads.fetch_add(1, Ordering::Relaxed);
            let same = read_store(&origin.store).get(path).is_some_and(|o| Arc::ptr_eq(&o.data, &self.data));
            if !same {
                return Err(PluginError::new(ErrorKind::CHANGED, format!("{path} changed since it was opened")));
            }
            max = max.min(usize::try_from(origin.max_read.load(Ordering::Relaxed)).unwrap_or(usize::MAX));
        }
        let start = usize::try_from(offset).unwrap_or(usize::MAX).min(self.data.len());
        let n = max.min(self.data.len() - start);
        buf[..n].copy_from_slice(&self.data[start..start + n]);
        Ok(n)
    }
}

/// The bytes of a toy file with `tags` (`key=value` header lines) and `audio`.
pub fn toy_file(tags: &[(&str, &str)], audio: &[u8]) -> Vec<u8> {
    let header: String = tags.iter().map(|(k, v)| format!("{k}={v}\n")).collect();
    let mut out = b"TOY1".to_vec();
    out.extend_from_slice(&(header.len() as u32).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(audio);
    out
}

/// A scripted plan: replaces the toy format's own synthesis.
pub type PlanScript = dyn Fn(&Source, &PlanRequest) -> PluginResult<Plan> + Send + Sync;

/// The toy format (extension `toy`): reads and synthesizes the toy container for real;
/// [`with_plan`](Self::with_plan) scripts a misbehaving plan instead.
#[derive(Clone, Default)]
pub struct ScriptedFormat {
    plan: Option<Arc<PlanScript>>,
    plans: Arc<AtomicU64>,
}

impl ScriptedFormat {
    /// The toy format, behaving.
    pub fn new() -> Self {
        Self::default()
    }

    /// The same format with `plan` answering synthesis requests.
    #[must_use]
    pub fn with_plan(
        mut self,
        plan: impl Fn(&Source, &PlanRequest) -> PluginResult<Plan> + Send + Sync + 'static,
    ) -> Self {
        self.plan = Some(Arc::new(plan));
        self
    }

    /// How many plans were asked for.
    pub fn plans(&self) -> u64 {
        self.plans.load(Ordering::Relaxed)
    }

    /// The toy synthesis: a header from `req.tags` (text tags), then the audio range.
    pub fn toy_plan(req: &PlanRequest) -> Plan {
        let tags: Vec<(&str, &str)> =
            req.tags.iter().filter(|t| !t.is_binary()).map(|t| (t.native.as_str(), t.value.as_str())).collect();
        let head = toy_file(&tags, &[]);
        Plan {
            segments: vec![Segment::literal(head), Segment::origin(req.info.audio_offset, req.info.audio_len)].into(),
        }
    }
}

impl Format for ScriptedFormat {
    fn extensions(&self) -> Vec<String> {
        vec!["toy".to_owned()]
    }

    fn probe(&self, head: &[u8], _extension: &str) -> u32 {
        if head.starts_with(b"TOY1") {
            100
        } else {
            0
        }
    }

    fn read(&self, src: &Source) -> PluginResult<TrackInfo> {
        let head = src.read_vec(0, 8)?;
        if head.len() < 8 || &head[..4] != b"TOY1" {
            return Err(PluginError::invalid_data("not a toy file (no TOY1 magic)"));
        }
        let hlen = u64::from(u32::from_le_bytes([head[4], head[5], head[6], head[7]]));
        let audio_offset = 8 + hlen;
        if audio_offset > src.len() {
            return Err(PluginError::invalid_data(format!("the toy header of {hlen} bytes runs past the end")));
        }
        let header = src.read_vec(8, hlen as usize)?;
        let text = String::from_utf8_lossy(&header);
        let tags = text
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| Tag::text(&k.to_ascii_lowercase(), k, v))
            .collect::<Vec<_>>();
        Ok(TrackInfo {
            format: "toy".into(),
            extension: "toy".into(),
            tags: tags.into(),
            pictures: Vec::new().into(),
            props: AudioProps {
                codec: "toy".into(),
                duration_ms: 1000,
                sample_rate: 8000,
                channels: 1,
                ..AudioProps::default()
            },
            audio_offset,
            audio_len: src.len() - audio_offset,
            regions: vec![Region { kind: "toy-header".into(), offset: 0, len: audio_offset }].into(),
            extra: Vec::new().into(),
        })
    }

    fn plan(&self, src: &Source, req: &PlanRequest) -> PluginResult<Plan> {
        self.plans.fetch_add(1, Ordering::Relaxed);
        match &self.plan {
            Some(script) => script(src, req),
            None => Ok(Self::toy_plan(req)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{format_into_ffi, handle_into_ffi, origin_into_ffi, PlanMode};

    #[test]
    fn the_toy_format_reads_what_it_synthesizes_through_the_abi() {
        let f = format_into_ffi(ScriptedFormat::new());
        let data = toy_file(&[("TITLE", "A"), ("ARTIST", "B")], b"audio bytes");
        let h = handle_into_ffi(Arc::new(MemHandle::new(data.clone())));
        let info = f.read(&CallCtx::unlimited(), &h).into_result().unwrap();
        assert_eq!(
            info.tags.iter().map(|t| (t.key.as_str(), t.value.as_str())).collect::<Vec<_>>(),
            [("title", "A"), ("artist", "B")]
        );
        assert_eq!(&data[info.audio_offset as usize..], b"audio bytes");
        let mut tags = info.tags.to_vec();
        tags[0] = Tag::text("title", "TITLE", "Longer title");
        let req = PlanRequest {
            mode: PlanMode::SYNTHESIS,
            info: info.clone(),
            tags: tags.into(),
            pictures: Vec::new().into(),
            options: "{}".into(),
            extra: Vec::new().into(),
        };
        let plan = f.plan(&CallCtx::unlimited(), &h, &req).into_result().unwrap();
        assert_eq!(plan.len(), data.len() as u64 + 11);
    }

    #[test]
    fn a_mem_origin_lists_pins_versions_and_fails_on_demand() {
        let o = MemOrigin::new(OriginCaps::NONE);
        o.put("a/b.toy", vec![1, 2, 3]);
        o.put("c.toy", vec![4]);
        let ffi = origin_into_ffi(o.clone());
        let ctx = CallCtx::unlimited();
        let top = ffi.list(&ctx, &ListRequest { dir: "".into(), recursive: false }).into_result().unwrap();
        let mut top = top;
        let names: Vec<String> =
            top.next_page(&ctx, 10).into_result().unwrap().iter().map(|e| e.path.to_string()).collect();
        assert_eq!(names, ["c.toy", "a"]);
        let h = ffi.open(&ctx, "a/b.toy".into()).into_result().unwrap();
        let mut buf = [0u8; 3];
        assert_eq!(h.read_at(&ctx, 0, (&mut buf[..]).into()).into_result().unwrap(), 3);
        o.put("a/b.toy", vec![9]);
        assert_eq!(h.read_at(&ctx, 0, (&mut buf[..]).into()).into_result().unwrap_err().kind, ErrorKind::CHANGED);
        o.fail_with(Some(PluginError::new(ErrorKind::UNAVAILABLE, "down").retryable()));
        assert_eq!(ffi.stat(&ctx, "c.toy".into()).into_result().unwrap_err().kind, ErrorKind::UNAVAILABLE);
    }
}

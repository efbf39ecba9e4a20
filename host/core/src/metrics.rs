//! Process metrics in the Prometheus text format, for the opt-in `metrics_addr`
//! endpoint of a mount.
//!
//! Counters and histograms live in one process-wide [`Metrics`] (atomics: recording
//! costs an atomic add, so it is always on; only the endpoint is opt-in). Layers record
//! where the event happens: the serving core (opens, reads, bytes by mode, the header
//! cache), the origin layer (request latency and errors per origin and call), the
//! background syncer (runs and durations per origin). Values that already exist
//! elsewhere (the chunk cache's counters, the tree's size, open handles, the resident
//! memory) are read at scrape time from the [`Source`] the mount attaches, so nothing
//! is counted twice.
//!
//! The endpoint ([`serve`]) is a small blocking listener on its own thread answering
//! `GET /metrics` (anything else: 404); it is meant for a loopback address.

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, LazyLock, RwLock, Weak};
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// What a served file is: its serving mode, or a virtual cover image. (The order indexes
/// the counters resolved per mode.)
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum Served {
    /// The original's bytes.
    Passthrough,
    /// A header built from the catalog before the original's audio.
    Synthesis,
    /// A directory's virtual cover image.
    Cover,
}

impl Served {
    fn as_str(self) -> &'static str {
        match self {
            Self::Passthrough => "passthrough",
            Self::Synthesis => "synthesis",
            Self::Cover => "cover",
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ModeLabel {
    mode: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OriginCall {
    origin: String,
    call: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OriginResult {
    origin: String,
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OpLabel {
    op: &'static str,
}

/// The kernel requests the FUSE adapter counts (`musefs_fuse_requests_total{op}`): how
/// many round trips a walk or a read costs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[allow(missing_docs, reason = "the FUSE operations of the same names")]
pub enum FuseOp {
    Lookup,
    Getattr,
    Setattr,
    Open,
    Read,
    Write,
    Flush,
    Fsync,
    Release,
    Opendir,
    Readdir,
    Readdirplus,
    Releasedir,
    Statfs,
    Getxattr,
    Listxattr,
    Create,
    Unlink,
    Rename,
}

impl FuseOp {
    const ALL: [FuseOp; 19] = [
        Self::Lookup,
        Self::Getattr,
        Self::Setattr,
        Self::Open,
        Self::Read,
        Self::Write,
        Self::Flush,
        Self::Fsync,
        Self::Release,
        Self::Opendir,
        Self::Readdir,
        Self::Readdirplus,
        Self::Releasedir,
        Self::Statfs,
        Self::Getxattr,
        Self::Listxattr,
        Self::Create,
        Self::Unlink,
        Self::Rename,
    ];

    fn as_str(self) -> &'static str {
        match self {
            Self::Lookup => "lookup",
            Self::Getattr => "getattr",
            Self::Setattr => "setattr",
            Self::Open => "open",
            Self::Read => "read",
            Self::Write => "write",
            Self::Flush => "flush",
            Self::Fsync => "fsync",
            Self::Release => "release",
            Self::Opendir => "opendir",
            Self::Readdir => "readdir",
            Self::Readdirplus => "readdirplus",
            Self::Releasedir => "releasedir",
            Self::Statfs => "statfs",
            Self::Getxattr => "getxattr",
            Self::Listxattr => "listxattr",
            Self::Create => "create",
            Self::Unlink => "unlink",
            Self::Rename => "rename",
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SaveResult {
    result: &'static str,
}

/// How a save through a writable mount ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Saved {
    /// The saved tags became an edit.
    Stored,
    /// The saved file had the tags the file had: nothing to store.
    Unchanged,
    /// Refused: the audio changed (`EPERM`).
    AudioChanged,
    /// Refused: the saved file does not read as its format (`EIO`).
    Unreadable,
    /// Failed otherwise (the original could not be read to compare, the catalog).
    Failed,
}

impl Saved {
    fn as_str(self) -> &'static str {
        match self {
            Self::Stored => "stored",
            Self::Unchanged => "unchanged",
            Self::AudioChanged => "refused_audio_changed",
            Self::Unreadable => "refused_unreadable",
            Self::Failed => "failed",
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OriginLabel {
    origin: String,
}

/// Values read at scrape time from a running mount.
#[derive(Clone, Copy, Debug, Default)]
pub struct Snapshot {
    /// Files in the tree.
    pub files: u64,
    /// Nodes in the tree (files, directories, covers).
    pub nodes: u64,
    /// The sum of the served originals' sizes.
    pub bytes: u64,
    /// Open file handles.
    pub handles: u64,
    /// The chunk cache's counters (remote origins only).
    pub cache: Option<CacheSnapshot>,
}

/// The chunk cache's counters (see `cache::CacheCounters`).
#[derive(Clone, Copy, Debug, Default)]
#[allow(missing_docs, reason = "the fields mirror cache::CacheCounters, documented there")]
pub struct CacheSnapshot {
    pub mem_hits: u64,
    pub disk_hits: u64,
    pub fetched: u64,
    pub fetched_bytes: u64,
    pub prefetched: u64,
    pub corrupt: u64,
    pub evicted: u64,
    pub disk_bytes: u64,
}

/// Where scrape-time values come from (the serving core of a mount).
pub trait Source: Send + Sync {
    /// The current values.
    fn snapshot(&self) -> Snapshot;
}

/// The counters of one serving mode, resolved once: the read path adds to them without
/// looking a label up.
#[derive(Clone, Default)]
struct ModeCounters {
    opens: Counter,
    reads: Counter,
    bytes: Counter,
    errors: Counter,
}

/// The process's metrics.
pub struct Metrics {
    registry: Registry,
    /// By [`Served`]: passthrough, synthesis, cover.
    by_mode: [ModeCounters; 3],
    header_hits: Counter,
    header_misses: Counter,
    origin_seconds: Family<OriginCall, Histogram>,
    origin_errors: Family<OriginCall, Counter>,
    syncs: Family<OriginResult, Counter>,
    sync_seconds: Family<OriginLabel, Histogram>,
    saves: Family<SaveResult, Counter>,
    /// By [`FuseOp`], in `FuseOp::ALL`'s order.
    fuse: Vec<Counter>,
    source: Arc<RwLock<Option<Weak<dyn Source>>>>,
}

static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);

/// The process's metrics.
pub fn global() -> &'static Metrics {
    &METRICS
}

/// The scrape-time values, encoded at each scrape.
#[derive(Debug)]
struct Live(Arc<RwLock<Option<Weak<dyn Source>>>>);

impl std::fmt::Debug for dyn Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("metrics source")
    }
}

fn counter(enc: &mut DescriptorEncoder<'_>, name: &str, help: &str, v: u64) -> std::fmt::Result {
    let c = ConstCounter::new(v);
    c.encode(enc.encode_descriptor(name, help, None, c.metric_type())?)
}

fn gauge(enc: &mut DescriptorEncoder<'_>, name: &str, help: &str, v: u64) -> std::fmt::Result {
    let g = ConstGauge::new(i64::try_from(v).unwrap_or(i64::MAX));
    g.encode(enc.encode_descriptor(name, help, None, g.metric_type())?)
}

/// The resident set of this process, from `/proc/self/statm`.
fn rss_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * crate::sys::page_size())
}

impl Collector for Live {
    fn encode(&self, mut enc: DescriptorEncoder<'_>) -> std::fmt::Result {
        if let Some(rss) = rss_bytes() {
            gauge(&mut enc, "process_resident_memory_bytes", "Resident memory of the musefs process.", rss)?;
        }
        let source = self.0.read().unwrap_or_else(std::sync::PoisonError::into_inner).as_ref().and_then(Weak::upgrade);
        let Some(source) = source else { return Ok(()) };
        let s = source.snapshot();
        gauge(&mut enc, "musefs_tree_files", "Files in the mounted tree.", s.files)?;
        gauge(&mut enc, "musefs_tree_nodes", "Nodes in the mounted tree (files, directories, covers).", s.nodes)?;
        gauge(&mut enc, "musefs_tree_bytes", "The sum of the served originals' sizes.", s.bytes)?;
        gauge(&mut enc, "musefs_open_handles", "Open file handles.", s.handles)?;
        if let Some(c) = s.cache {
            let hits = "Chunks served by the chunk cache without contacting the origin (memory, or disk).";
            counter(&mut enc, "musefs_chunk_cache_memory_hits", hits, c.mem_hits)?;
            counter(&mut enc, "musefs_chunk_cache_disk_hits", hits, c.disk_hits)?;
            counter(&mut enc, "musefs_chunk_cache_misses", "Chunks fetched from an origin.", c.fetched)?;
            counter(&mut enc, "musefs_chunk_cache_fetched_bytes", "Bytes fetched from origins.", c.fetched_bytes)?;
            counter(&mut enc, "musefs_chunk_cache_prefetched", "Chunks fetched ahead of the reader.", c.prefetched)?;
            counter(&mut enc, "musefs_chunk_cache_evictions", "Chunks evicted for the size budget.", c.evicted)?;
            counter(&mut enc, "musefs_chunk_cache_corrupt", "Chunks on disk whose hash did not match.", c.corrupt)?;
            gauge(&mut enc, "musefs_chunk_cache_disk_bytes", "Bytes of chunks on disk.", c.disk_bytes)?;
        }
        Ok(())
    }
}

impl Metrics {
    fn new() -> Self {
        let mut registry = Registry::default();
        let source: Arc<RwLock<Option<Weak<dyn Source>>>> = Arc::new(RwLock::new(None));
        registry.register_collector(Box::new(Live(source.clone())));
        let families: [Family<ModeLabel, Counter>; 4] = Default::default();
        let [opens, reads, bytes, errors] = &families;
        let by_mode = [Served::Passthrough, Served::Synthesis, Served::Cover].map(|m| {
            let l = ModeLabel { mode: m.as_str() };
            ModeCounters {
                opens: opens.get_or_create(&l).clone(),
                reads: reads.get_or_create(&l).clone(),
                bytes: bytes.get_or_create(&l).clone(),
                errors: errors.get_or_create(&l).clone(),
            }
        });
        registry.register("musefs_opens", "Files opened, by serving mode", opens.clone());
        registry.register("musefs_reads", "Reads answered, by serving mode", reads.clone());
        registry.register("musefs_read_bytes", "Bytes served, by serving mode", bytes.clone());
        registry.register("musefs_read_errors", "Reads answered with an error, by serving mode", errors.clone());
        let (header_hits, header_misses) = (Counter::default(), Counter::default());
        registry.register(
            "musefs_header_cache_hits",
            "Opens whose layout was in the header cache",
            header_hits.clone(),
        );
        registry.register("musefs_header_cache_misses", "Opens that planned their layout", header_misses.clone());
        // 100 µs .. ~26 s.
        let origin_seconds: Family<OriginCall, Histogram> =
            Family::new_with_constructor(|| Histogram::new(exponential_buckets(0.0001, 4.0, 10)));
        registry.register(
            "musefs_origin_request_seconds",
            "Latency of origin calls (stat, open, list, read), retries included, by origin",
            origin_seconds.clone(),
        );
        let origin_errors = Family::<OriginCall, Counter>::default();
        registry.register(
            "musefs_origin_errors",
            "Origin calls that failed after retries, by origin",
            origin_errors.clone(),
        );
        let syncs = Family::<OriginResult, Counter>::default();
        registry.register("musefs_syncs", "Background sync runs, by origin and result", syncs.clone());
        // 10 ms .. ~11 min.
        let sync_seconds: Family<OriginLabel, Histogram> =
            Family::new_with_constructor(|| Histogram::new(exponential_buckets(0.01, 4.0, 9)));
        registry.register("musefs_sync_seconds", "Duration of background sync runs, by origin", sync_seconds.clone());
        let saves = Family::<SaveResult, Counter>::default();
        registry.register(
            "musefs_saves",
            "Saves through a writable mount (a last close, fsync, or a rename over a file), by result",
            saves.clone(),
        );
        let requests = Family::<OpLabel, Counter>::default();
        let fuse = FuseOp::ALL.iter().map(|op| requests.get_or_create(&OpLabel { op: op.as_str() }).clone()).collect();
        registry.register("musefs_fuse_requests", "Kernel requests answered, by FUSE operation", requests);
        Self {
            fuse,
            saves,
            registry,
            by_mode,
            header_hits,
            header_misses,
            origin_seconds,
            origin_errors,
            syncs,
            sync_seconds,
            source,
        }
    }

    /// Attaches the source of scrape-time values (held weakly: a dropped core stops
    /// reporting them).
    pub fn attach(&self, source: Weak<dyn Source>) {
        *self.source.write().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(source);
    }

    /// A file opened.
    pub fn opened(&self, mode: Served) {
        self.by_mode[mode as usize].opens.inc();
    }

    /// A read answered with `bytes` bytes, or failed (`None`).
    pub fn read(&self, mode: Served, bytes: Option<usize>) {
        let c = &self.by_mode[mode as usize];
        match bytes {
            Some(n) => {
                c.reads.inc();
                c.bytes.inc_by(n as u64);
            }
            None => {
                c.errors.inc();
            }
        }
    }

    /// An open found its layout in the header cache (`true`) or planned it.
    pub fn header_cache(&self, hit: bool) {
        if hit { &self.header_hits } else { &self.header_misses }.inc();
    }

    /// An origin call (`stat`, `open`, `list`, `read`) took `elapsed` and succeeded or not.
    pub fn origin_call(&self, origin: &str, call: &'static str, elapsed: Duration, ok: bool) {
        let l = OriginCall { origin: origin.to_owned(), call };
        self.origin_seconds.get_or_create(&l).observe(elapsed.as_secs_f64());
        if !ok {
            self.origin_errors.get_or_create(&l).inc();
        }
    }

    /// A background sync of `origin` ran for `elapsed`.
    pub fn synced(&self, origin: &str, elapsed: Duration, ok: bool) {
        let result = if ok { "ok" } else { "failed" };
        self.syncs.get_or_create(&OriginResult { origin: origin.to_owned(), result }).inc();
        self.sync_seconds.get_or_create(&OriginLabel { origin: origin.to_owned() }).observe(elapsed.as_secs_f64());
    }

    /// The FUSE adapter answers a request.
    pub fn fuse(&self, op: FuseOp) {
        self.fuse[op as usize].inc();
    }

    /// A save through a writable mount ended so.
    pub fn saved(&self, how: Saved) {
        self.saves.get_or_create(&SaveResult { result: how.as_str() }).inc();
    }

    /// Everything, in the Prometheus text exposition format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            tracing::warn!("metrics: encoding failed: {e}");
        }
        out
    }
}

/// A running metrics endpoint; dropping it stops it.
pub struct Server {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Server {
    /// The address it listens on (the port chosen when asked for port 0).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Wake the accept.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_millis(200));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Serves [`global`] metrics at `http://ADDR/metrics` on a thread of its own.
///
/// # Errors
/// The bind error (address in use, not an address of this machine), with the address.
pub fn serve(addr: SocketAddr) -> std::io::Result<Server> {
    serve_these(addr, global())
}

/// [`serve`] for the given metrics.
fn serve_these(addr: SocketAddr, metrics: &'static Metrics) -> std::io::Result<Server> {
    let listener = TcpListener::bind(addr)
        .map_err(|e| std::io::Error::new(e.kind(), format!("metrics_addr {addr}: cannot listen: {e}")))?;
    let addr = listener.local_addr()?;
    if !addr.ip().is_loopback() {
        tracing::warn!("metrics_addr {addr} is not a loopback address: anyone who can reach it reads the metrics");
    }
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let thread = std::thread::Builder::new().name("musefs-metrics".into()).spawn(move || {
        for conn in listener.incoming() {
            if flag.load(Ordering::Relaxed) {
                return;
            }
            match conn {
                Ok(c) => {
                    if let Err(e) = answer(c, metrics) {
                        tracing::debug!("metrics: a request failed: {e}");
                    }
                }
                Err(e) => tracing::debug!("metrics: accept failed: {e}"),
            }
        }
    })?;
    tracing::info!("metrics at http://{addr}/metrics");
    Ok(Server { addr, stop, thread: Some(thread) })
}

/// Answers one HTTP/1.x request (then closes the connection).
fn answer(conn: TcpStream, metrics: &Metrics) -> std::io::Result<()> {
    conn.set_read_timeout(Some(Duration::from_secs(5)))?;
    conn.set_write_timeout(Some(Duration::from_secs(5)))?;
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut line = String::new();
    reader.by_ref().take(8192).read_line(&mut line)?;
    // Skip the headers (bounded).
    let mut header = String::new();
    for _ in 0..100 {
        header.clear();
        if reader.by_ref().take(8192).read_line(&mut header)? == 0 || header.trim().is_empty() {
            break;
        }
    }
    let mut parts = line.split_whitespace();
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let path = target.split('?').next().unwrap_or("");
    let (status, body, kind) = match (method, path) {
        ("GET" | "HEAD", "/metrics") => ("200 OK", metrics.render(), "text/plain; version=0.0.4; charset=utf-8"),
        ("GET" | "HEAD", _) => ("404 Not Found", "musefs serves /metrics only\n".to_owned(), "text/plain"),
        _ => ("405 Method Not Allowed", String::new(), "text/plain"),
    };
    let mut conn = conn;
    write!(
        conn,
        "HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )?;
    if method != "HEAD" {
        conn.write_all(body.as_bytes())?;
    }
    conn.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(addr: SocketAddr, path: &str) -> String {
        let mut c = TcpStream::connect(addr).unwrap();
        write!(c, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        let mut s = String::new();
        c.read_to_string(&mut s).unwrap();
        s
    }

    struct Fixed;
    impl Source for Fixed {
        fn snapshot(&self) -> Snapshot {
            Snapshot {
                files: 7,
                nodes: 12,
                bytes: 1000,
                handles: 1,
                cache: Some(CacheSnapshot { fetched: 3, ..Default::default() }),
            }
        }
    }

    #[test]
    fn the_endpoint_serves_counters_that_move_and_404s_elsewhere() {
        // Metrics of this test's own (the serving core's tests record into `global`).
        let m: &'static Metrics = Box::leak(Box::new(Metrics::new()));
        let server = serve_these("127.0.0.1:0".parse().unwrap(), m).unwrap();
        let src: Arc<dyn Source> = Arc::new(Fixed);
        m.attach(Arc::downgrade(&src));
        m.read(Served::Synthesis, Some(4096));
        let a = get(server.addr(), "/metrics");
        assert!(a.starts_with("HTTP/1.1 200 OK\r\n"), "{a}");
        assert!(a.contains("# TYPE musefs_reads counter"), "{a}");
        assert!(a.contains("musefs_tree_files 7"), "{a}");
        assert!(a.contains("musefs_chunk_cache_misses_total 3"), "{a}");
        assert!(a.contains("process_resident_memory_bytes") || !std::path::Path::new("/proc/self/statm").exists());
        let value = |text: &str| -> u64 {
            let line = text.lines().find(|l| l.starts_with("musefs_read_bytes_total{mode=\"synthesis\"}")).unwrap();
            line.rsplit(' ').next().unwrap().parse().unwrap()
        };
        let before = value(&a);
        m.read(Served::Synthesis, Some(10));
        assert_eq!(value(&get(server.addr(), "/metrics")), before + 10);
        assert!(get(server.addr(), "/other").starts_with("HTTP/1.1 404"));
        drop(src);
        assert!(!get(server.addr(), "/metrics").contains("musefs_tree_files"), "a dropped source reports nothing");
        drop(server);
    }

    #[test]
    fn an_address_in_use_is_named() {
        let a = serve("127.0.0.1:0".parse().unwrap()).unwrap();
        let e = serve(a.addr()).err().expect("the port is taken");
        assert!(e.to_string().contains(&a.addr().to_string()), "{e}");
    }
}

//! musefs origin plugin `s3`: an S3 bucket, on AWS or any S3-compatible endpoint
//! (MinIO, Ceph, moto, ...), through `object_store`.
//!
//! Manifest keys (`[[origin]]` with `kind = "s3"`):
//!
//! | key | default | meaning |
//! |---|---|---|
//! | `bucket` | required | the bucket |
//! | `prefix` | `""` | only keys below this prefix; paths are relative to it |
//! | `region` | `AWS_REGION`, else `us-east-1` | the region |
//! | `endpoint` | AWS | e.g. `http://127.0.0.1:9000` for a local server |
//! | `allow_http` | `false` | allow a plain-HTTP endpoint |
//! | `addressing` | `"path"` with an endpoint, else `"virtual"` | path-style or virtual-hosted requests |
//! | `access_key_id`, `secret_access_key`, `session_token` | the chain below | credentials |
//! | `profile` | `AWS_PROFILE`, else `default` | the shared-credentials profile |
//! | `threads` | `2` | the plugin's own runtime threads |
//! | `retries` | `4` | attempts per request, transient errors only (stat, open and reads are retried by the musefs host's origin layer, listing pages by the plugin) |
//! | `read_ahead_kb` | `256` | the least a small read fetches |
//!
//! Credentials: the manifest's keys, else the standard AWS environment
//! (`AWS_ACCESS_KEY_ID`, ...), else the profile in the shared credentials file
//! (`AWS_SHARED_CREDENTIALS_FILE` or `~/.aws/credentials`), else the instance/container
//! metadata service. They never appear in logs or errors.
//!
//! The stamp of an object is its ETag (Last-Modified only without one); every request of
//! a handle carries `If-Match` with the ETag seen at open, so an object replaced
//! mid-stream gives [`ErrorKind::CHANGED`], never a mix of two versions.
//!
//! Reads: small reads (a format plugin parsing a header during a scan) fetch at least
//! `read_ahead_kb`; large sequential reads (the host's chunk cache filling a file in
//! order) are served from one open-ended streaming `GET` per handle, so a cold stream
//! costs one request, not one per chunk; other reads are bounded ranged `GET`s.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use musefs_origin_util::{check_path, ReadAhead, Remote, RetryPolicy};
use musefs_plugin_api::{
    CallCtx, Entry, EntryKind, ErrorKind, Handle, ListRequest, Lister, Origin, OriginCaps, PluginError, PluginResult,
    Stat,
};
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path as ObjPath;
use object_store::{ClientOptions, GetOptions, GetRange, ObjectMeta, ObjectStore, ObjectStoreExt, RetryConfig};
use serde::Deserialize;

/// The plugin's configuration: its `[[origin]]` table.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The origin's name (used by the host).
    #[serde(default)]
    pub name: Option<String>,
    /// The plugin name (`s3`).
    #[serde(default)]
    pub kind: Option<String>,
    /// The bucket.
    pub bucket: String,
    /// Key prefix.
    #[serde(default)]
    pub prefix: String,
    /// Region.
    pub region: Option<String>,
    /// Endpoint URL.
    pub endpoint: Option<String>,
    /// Allow plain HTTP.
    #[serde(default)]
    pub allow_http: bool,
    /// `path` or `virtual`.
    pub addressing: Option<String>,
    /// Access key id.
    pub access_key_id: Option<String>,
    /// Secret access key.
    pub secret_access_key: Option<String>,
    /// Session token.
    pub session_token: Option<String>,
    /// Shared-credentials profile.
    pub profile: Option<String>,
    /// Runtime threads.
    pub threads: Option<usize>,
    /// Attempts per request.
    pub retries: Option<u32>,
    /// Read-ahead of small reads, KiB.
    pub read_ahead_kb: Option<usize>,
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print credentials.
        f.debug_struct("Config")
            .field("bucket", &self.bucket)
            .field("prefix", &self.prefix)
            .field("endpoint", &self.endpoint)
            .finish_non_exhaustive()
    }
}

/// An S3 origin.
pub struct S3Origin {
    remote: Arc<Remote>,
    store: Arc<AmazonS3>,
    prefix: String,
    bucket: String,
    read_ahead: usize,
}

fn invalid(msg: impl std::fmt::Display) -> PluginError {
    PluginError::invalid_input(format!("origin `s3`: {msg}"))
}

/// Reads `[profile]` from an AWS shared credentials file: `(key id, secret, token)`.
fn profile_credentials(profile: &str) -> Option<(String, String, Option<String>)> {
    let file = std::env::var_os("AWS_SHARED_CREDENTIALS_FILE")
        .map(std::path::PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| std::path::Path::new(&h).join(".aws/credentials")))?;
    let text = std::fs::read_to_string(file).ok()?;
    let (mut id, mut secret, mut token) = (None, None, None);
    let mut inside = false;
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('[') && line.ends_with(']') {
            inside = line[1..line.len() - 1].trim() == profile;
            continue;
        }
        if !inside {
            continue;
        }
        if let Some((k, v)) = line.split_once('=') {
            let v = v.trim().to_owned();
            match k.trim() {
                "aws_access_key_id" => id = Some(v),
                "aws_secret_access_key" => secret = Some(v),
                "aws_session_token" => token = Some(v),
                _ => {}
            }
        }
    }
    Some((id?, secret?, token))
}

/// Maps an `object_store` error to the plugin error policy. The message names the
/// operation and the key only.
fn map_err(op: &str, key: &str, e: object_store::Error) -> PluginError {
    use object_store::Error as E;
    match e {
        E::NotFound { .. } => PluginError::new(ErrorKind::NOT_FOUND, format!("s3 {op} {key}: no such object")),
        E::Precondition { .. } => PluginError::new(
            ErrorKind::CHANGED,
            format!("s3 {op} {key}: the object was replaced since it was opened (ETag differs)"),
        ),
        E::PermissionDenied { .. } | E::Unauthenticated { .. } => PluginError::new(
            ErrorKind::PERMISSION_DENIED,
            format!("s3 {op} {key}: access denied (check the credentials and the bucket policy)"),
        ),
        E::InvalidPath { .. } => PluginError::invalid_input(format!("s3 {op} {key}: invalid key")),
        E::NotSupported { source } => PluginError::unsupported(format!("s3 {op} {key}: {source}")),
        other => {
            // Transport errors, 5xx, throttling: worth another try. The error text names
            // the URL (endpoint, bucket, key); credentials travel in headers only.
            let text = scrub(&other.to_string());
            PluginError::new(ErrorKind::UNAVAILABLE, format!("s3 {op} {key}: {text}")).retryable()
        }
    }
}

/// Removes anything that looks like a query-string credential from an error text.
fn scrub(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for word in s.split_inclusive(' ') {
        if word.contains("X-Amz-Signature") || word.contains("X-Amz-Credential") || word.contains("Signature=") {
            out.push_str("[redacted] ");
        } else {
            out.push_str(word);
        }
    }
    out
}

/// The ETag is the version stamp; Last-Modified only stands in for a server without ETags
/// (it changes when identical bytes are uploaded again, the ETag does not).
/// The object path of a key, as it is (`ObjPath::from` would percent-encode non-ASCII
/// characters a second time).
fn obj_path(key: &str) -> PluginResult<ObjPath> {
    ObjPath::parse(key).map_err(|e| PluginError::invalid_input(format!("s3 key {key:?}: {e}")))
}

fn stat_of(meta: &ObjectMeta) -> Stat {
    let ns = if meta.e_tag.is_some() { None } else { meta.last_modified.timestamp_nanos_opt() };
    Stat {
        kind: EntryKind::FILE,
        size: meta.size,
        mtime_ns: ns.into(),
        etag: meta.e_tag.clone().map(Into::into).into(),
    }
}

impl S3Origin {
    /// Builds an origin from its JSON configuration (the runtime is started here).
    ///
    /// # Errors
    /// `INVALID_INPUT` naming the key for unknown keys or bad values.
    pub fn from_config(json: &str) -> PluginResult<Self> {
        let cfg: Config = serde_json::from_str(json).map_err(invalid)?;
        if cfg.bucket.trim().is_empty() {
            return Err(invalid("`bucket` is empty"));
        }
        // Several plugins may try; the first install wins and later ones are no-ops.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut b = AmazonS3Builder::from_env().with_bucket_name(&cfg.bucket);
        let region = cfg
            .region
            .clone()
            .or_else(|| std::env::var("AWS_REGION").ok())
            .or_else(|| std::env::var("AWS_DEFAULT_REGION").ok())
            .unwrap_or_else(|| "us-east-1".to_owned());
        b = b.with_region(region);
        if let Some(ep) = &cfg.endpoint {
            if !(ep.starts_with("http://") || ep.starts_with("https://")) {
                return Err(invalid(format!("`endpoint` = {ep:?} must start with http:// or https://")));
            }
            if ep.starts_with("http://") && !cfg.allow_http {
                return Err(invalid(format!(
                    "`endpoint` = {ep:?} is plain HTTP: set `allow_http = true` to allow it (local servers only)"
                )));
            }
            b = b.with_endpoint(ep);
        }
        let virtual_hosted = match cfg.addressing.as_deref() {
            None => cfg.endpoint.is_none(),
            Some("path") => false,
            Some("virtual") => true,
            Some(other) => return Err(invalid(format!("`addressing` = {other:?}: use \"path\" or \"virtual\""))),
        };
        b = b.with_virtual_hosted_style_request(virtual_hosted).with_allow_http(cfg.allow_http);
        match (&cfg.access_key_id, &cfg.secret_access_key) {
            (Some(id), Some(secret)) => {
                b = b.with_access_key_id(id).with_secret_access_key(secret);
                if let Some(t) = &cfg.session_token {
                    b = b.with_token(t);
                }
            }
            (None, None) => {
                if std::env::var_os("AWS_ACCESS_KEY_ID").is_none() {
                    let profile = cfg
                        .profile
                        .clone()
                        .or_else(|| std::env::var("AWS_PROFILE").ok())
                        .unwrap_or_else(|| "default".to_owned());
                    if let Some((id, secret, token)) = profile_credentials(&profile) {
                        b = b.with_access_key_id(id).with_secret_access_key(secret);
                        if let Some(t) = token {
                            b = b.with_token(t);
                        }
                    } else if cfg.profile.is_some() {
                        return Err(invalid(format!(
                            "`profile` = {profile:?} has no aws_access_key_id/aws_secret_access_key in the shared credentials file"
                        )));
                    }
                }
            }
            _ => return Err(invalid("set both `access_key_id` and `secret_access_key`, or neither")),
        }
        // Retries are ours (bounded, deadline-aware); object_store makes one attempt.
        b = b.with_retry(RetryConfig { max_retries: 0, ..RetryConfig::default() }).with_client_options(
            ClientOptions::new()
                .with_allow_http(cfg.allow_http)
                .with_connect_timeout(Duration::from_secs(5))
                .with_timeout_disabled(),
        );
        let threads = cfg.threads.unwrap_or(2).clamp(1, 64);
        let retry = RetryPolicy { attempts: cfg.retries.unwrap_or(4).clamp(1, 20), ..RetryPolicy::default() };
        let remote = Remote::new("s3", threads, retry)?;
        // The HTTP client is built inside the runtime it will run on.
        let store = remote
            .runtime()
            .block_on(async { b.build() })
            .map_err(|e| invalid(format!("bucket {:?}: {}", cfg.bucket, scrub(&e.to_string()))))?;
        let prefix = cfg.prefix.trim_matches('/').to_owned();
        Ok(Self {
            remote: Arc::new(remote),
            store: Arc::new(store),
            prefix,
            bucket: cfg.bucket,
            read_ahead: cfg.read_ahead_kb.unwrap_or(256).clamp(4, 16 * 1024) * 1024,
        })
    }

    fn key(&self, rel: &str) -> String {
        if self.prefix.is_empty() {
            rel.to_owned()
        } else if rel.is_empty() {
            self.prefix.clone()
        } else {
            format!("{}/{rel}", self.prefix)
        }
    }

    #[cfg(test)]
    fn rel<'a>(&self, key: &'a str) -> Option<&'a str> {
        if self.prefix.is_empty() {
            Some(key)
        } else {
            key.strip_prefix(self.prefix.as_str())?.strip_prefix('/')
        }
    }

    fn head(&self, ctx: &CallCtx, path: &str) -> PluginResult<ObjectMeta> {
        check_path(path)?;
        let key = self.key(path);
        let loc = obj_path(&key)?;
        let shown = format!("s3://{}/{key}", self.bucket);
        self.remote.attempt(ctx, "HEAD", || {
            let store = self.store.clone();
            let loc = loc.clone();
            let shown = shown.clone();
            async move { store.head(&loc).await.map_err(|e| map_err("HEAD", &shown, e)) }
        })
    }
}

impl Origin for S3Origin {
    fn list(&self, _ctx: &CallCtx, req: &ListRequest) -> PluginResult<Box<dyn Lister>> {
        let dir = req.dir.as_str().trim_matches('/');
        if !dir.is_empty() {
            check_path(dir)?;
        }
        let key = self.key(dir);
        let prefix = if key.is_empty() { None } else { Some(obj_path(&key)?) };
        let shown = format!("s3://{}/{key}", self.bucket);
        let state = if req.recursive {
            // object_store pages through ListObjectsV2 lazily.
            let _guard = self.remote.runtime().enter();
            ListState::Stream(self.store.list(prefix.as_ref()))
        } else {
            ListState::Delimited { prefix, done: false }
        };
        Ok(Box::new(S3Lister {
            remote: self.remote.clone(),
            store: self.store.clone(),
            origin_prefix: self.prefix.clone(),
            shown,
            state,
            finished: false,
        }))
    }

    fn stat(&self, ctx: &CallCtx, path: &str) -> PluginResult<Stat> {
        Ok(stat_of(&self.head(ctx, path)?))
    }

    fn open(&self, ctx: &CallCtx, path: &str) -> PluginResult<Arc<dyn Handle>> {
        let meta = self.head(ctx, path)?;
        let key = self.key(path);
        Ok(Arc::new(S3Handle {
            remote: self.remote.clone(),
            store: self.store.clone(),
            shown: format!("s3://{}/{key}", self.bucket),
            loc: obj_path(&key)?,
            stat: stat_of(&meta),
            etag: meta.e_tag.clone(),
            ahead: ReadAhead::new(self.read_ahead),
            stream: Mutex::new(BodyStream { last_end: u64::MAX, ..BodyStream::default() }),
        }))
    }

    fn caps(&self) -> OriginCaps {
        OriginCaps::NONE
    }
}

enum ListState {
    Stream(futures_util::stream::BoxStream<'static, object_store::Result<ObjectMeta>>),
    Delimited { prefix: Option<ObjPath>, done: bool },
}

struct S3Lister {
    remote: Arc<Remote>,
    store: Arc<AmazonS3>,
    origin_prefix: String,
    shown: String,
    state: ListState,
    finished: bool,
}

impl S3Lister {
    fn entry(&self, key: &str, stat: Stat) -> Option<Entry> {
        let rel = if self.origin_prefix.is_empty() {
            key
        } else {
            key.strip_prefix(self.origin_prefix.as_str())?.strip_prefix('/')?
        };
        // Directory markers and keys that are not plain paths (`a//b`, `../x`) are skipped.
        check_path(rel).ok()?;
        Some(Entry { path: rel.into(), stat })
    }
}

impl Lister for S3Lister {
    fn next_page(&mut self, ctx: &CallCtx, max: usize) -> PluginResult<Vec<Entry>> {
        let shown = self.shown.clone();
        match &mut self.state {
            ListState::Stream(_) if self.finished => Ok(Vec::new()),
            ListState::Stream(stream) => {
                let start = std::time::Instant::now();
                let finished = &mut self.finished;
                let mut metas = Vec::new();
                // One attempt per page: a stream cannot be rewound, so a failed page fails
                // the listing (the scanner retries the origin).
                let res = self.remote.runtime().block_on(async {
                    while metas.len() < max {
                        let next = tokio::select! {
                            n = stream.next() => n,
                            () = tokio::time::sleep(Duration::from_millis(25)) => {
                                ctx.check(start)?;
                                continue;
                            }
                        };
                        match next {
                            None => {
                                // A finished stream must not be polled again.
                                *finished = true;
                                break;
                            }
                            Some(Ok(m)) => metas.push(m),
                            Some(Err(e)) => return Err(map_err("LIST", &shown, e)),
                        }
                    }
                    Ok(())
                });
                res?;
                Ok(metas.iter().filter_map(|m| self.entry(m.location.as_ref(), stat_of(m))).collect())
            }
            ListState::Delimited { prefix, done } => {
                if *done {
                    return Ok(Vec::new());
                }
                let prefix = prefix.clone();
                let store = self.store.clone();
                let listed =
                    self.remote.call(ctx, "LIST", || {
                        let store = store.clone();
                        let prefix = prefix.clone();
                        let shown = shown.clone();
                        async move {
                            store.list_with_delimiter(prefix.as_ref()).await.map_err(|e| map_err("LIST", &shown, e))
                        }
                    })?;
                if let ListState::Delimited { done, .. } = &mut self.state {
                    *done = true;
                }
                let mut out: Vec<Entry> = listed
                    .common_prefixes
                    .iter()
                    .filter_map(|p| {
                        let dir = Stat { kind: EntryKind::DIR, size: 0, mtime_ns: None.into(), etag: None.into() };
                        self.entry(p.as_ref(), dir)
                    })
                    .collect();
                out.extend(listed.objects.iter().filter_map(|m| self.entry(m.location.as_ref(), stat_of(m))));
                Ok(out)
            }
        }
    }
}

struct S3Handle {
    remote: Arc<Remote>,
    store: Arc<AmazonS3>,
    shown: String,
    loc: ObjPath,
    stat: Stat,
    etag: Option<String>,
    ahead: ReadAhead,
    /// The open-ended GET serving sequential reads, and where the last large read ended.
    stream: Mutex<BodyStream>,
}

/// A response body being consumed in order: sequential reads of a handle are served
/// from one open-ended `GET` (`Range: bytes=pos-`, `If-Match`) instead of one request
/// each, like a plain download. A read elsewhere uses its own ranged `GET` and leaves
/// the stream where it is; a stream error drops it (the read falls back to a ranged GET).
#[derive(Default)]
struct BodyStream {
    body: Option<futures_util::stream::BoxStream<'static, object_store::Result<bytes::Bytes>>>,
    /// The object offset of the next byte of `body` (`pending` first).
    pos: u64,
    /// Bytes received and not yet handed out.
    pending: bytes::Bytes,
    /// Where the last large read ended (`u64::MAX`: none yet).
    last_end: u64,
}

impl S3Handle {
    fn get(&self, ctx: &CallCtx, offset: u64, n: usize) -> PluginResult<Vec<u8>> {
        let end = offset + n as u64;
        let bytes = self.remote.attempt(ctx, "GET", || {
            let store = self.store.clone();
            let loc = self.loc.clone();
            let shown = self.shown.clone();
            let opts = GetOptions {
                range: Some(GetRange::Bounded(offset..end)),
                if_match: self.etag.clone(),
                ..GetOptions::default()
            };
            async move {
                let r = store.get_opts(&loc, opts).await.map_err(|e| map_err("GET", &shown, e))?;
                r.bytes().await.map_err(|e| map_err("GET", &shown, e))
            }
        })?;
        if bytes.len() as u64 != n as u64 {
            return Err(PluginError::new(
                ErrorKind::CHANGED,
                format!("{}: asked for {n} bytes at {offset}, got {} (object changed?)", self.shown, bytes.len()),
            ));
        }
        Ok(bytes.to_vec())
    }

    /// Serves `out` at `offset` from the body stream if the read continues the previous
    /// one (opening the stream if needed). `Ok(None)`: not sequential, or the stream
    /// failed and was dropped; the caller uses a ranged GET.
    fn read_streamed(&self, ctx: &CallCtx, offset: u64, out: &mut [u8]) -> PluginResult<Option<usize>> {
        let mut st = self.stream.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let want = out.len().min(usize::try_from(self.stat.size - offset).unwrap_or(usize::MAX));
        let continues = st.body.is_some() && st.pos == offset;
        let sequential = st.last_end == offset || (offset == 0 && st.last_end == u64::MAX);
        st.last_end = offset + want as u64;
        if !continues {
            if !sequential {
                return Ok(None);
            }
            // A new stream from here to the end of the object, pinned to the ETag.
            let opts = GetOptions {
                range: Some(GetRange::Offset(offset)),
                if_match: self.etag.clone(),
                ..GetOptions::default()
            };
            let body = self.remote.attempt(ctx, "GET", || {
                let store = self.store.clone();
                let loc = self.loc.clone();
                let shown = self.shown.clone();
                let opts = opts.clone();
                async move {
                    let r = store.get_opts(&loc, opts).await.map_err(|e| map_err("GET", &shown, e))?;
                    Ok(r.into_stream())
                }
            })?;
            *st = BodyStream { body: Some(body), pos: offset, pending: bytes::Bytes::new(), last_end: st.last_end };
        }
        let mut done = 0;
        while done < want {
            if st.pending.is_empty() {
                let shown = self.shown.clone();
                let Some(body) = st.body.as_mut() else { break };
                let next = self.remote.once(ctx, "GET", async {
                    match body.next().await {
                        None => Ok(None),
                        Some(Ok(b)) => Ok(Some(b)),
                        Some(Err(e)) => Err(map_err("GET", &shown, e)),
                    }
                });
                match next {
                    Ok(Some(b)) => st.pending = b,
                    Ok(None) | Err(_) if done > 0 => {
                        // A short read; the next one opens a fresh stream.
                        st.body = None;
                        break;
                    }
                    Ok(None) => {
                        st.body = None;
                        return Err(PluginError::new(
                            ErrorKind::CHANGED,
                            format!("{}: the object ends before byte {offset} (object changed?)", self.shown),
                        ));
                    }
                    Err(e) if e.kind == ErrorKind::CANCELLED => {
                        st.body = None;
                        return Err(e);
                    }
                    Err(_) => {
                        // A broken stream: drop it; the read is retried as a ranged GET.
                        st.body = None;
                        return Ok(None);
                    }
                }
                continue;
            }
            let n = st.pending.len().min(want - done);
            out[done..done + n].copy_from_slice(&st.pending[..n]);
            let _ = st.pending.split_to(n);
            st.pos += n as u64;
            done += n;
        }
        if done == 0 {
            st.body = None;
            return Ok(None);
        }
        Ok(Some(done))
    }
}

impl Handle for S3Handle {
    fn len(&self) -> u64 {
        self.stat.size
    }

    fn stat(&self) -> Stat {
        self.stat.clone()
    }

    fn read_at(&self, ctx: &CallCtx, offset: u64, buf: &mut [u8]) -> PluginResult<usize> {
        if offset >= self.stat.size || buf.is_empty() {
            return Ok(0);
        }
        // Small reads (a format plugin parsing a header) go through the read-ahead buffer;
        // large ones (whole cache chunks) stream when sequential.
        if buf.len() < self.ahead.min() {
            return self.ahead.read(offset, self.stat.size, buf, |o, n| self.get(ctx, o, n));
        }
        if let Some(n) = self.read_streamed(ctx, offset, buf)? {
            return Ok(n);
        }
        let n = buf.len().min(usize::try_from(self.stat.size - offset).unwrap_or(usize::MAX));
        let data = self.get(ctx, offset, n)?;
        buf[..n].copy_from_slice(&data);
        Ok(n)
    }
}

musefs_plugin_api::export_plugin! {
    name: "s3",
    version: env!("CARGO_PKG_VERSION"),
    description: "An S3 bucket (AWS or S3-compatible) through object_store; ETag-pinned ranged reads",
    origin: S3Origin::from_config,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_configs_name_the_key_and_never_the_secret() {
        let e = S3Origin::from_config(r#"{"bucket":"b","endpoint":"http://127.0.0.1:1"}"#).err().unwrap();
        assert!(e.message.contains("allow_http"), "{e}");
        let e = S3Origin::from_config(r#"{"bucket":"b","addressing":"sideways"}"#).err().unwrap();
        assert!(e.message.contains("addressing"), "{e}");
        let e = S3Origin::from_config(r#"{"bucket":"b","bukket":1}"#).err().unwrap();
        assert!(e.message.contains("bukket"), "{e}");
        let e = S3Origin::from_config(r#"{"bucket":"b","access_key_id":"AKIDSECRETVALUE"}"#).err().unwrap();
        assert!(e.message.contains("secret_access_key") && !e.message.contains("AKIDSECRETVALUE"), "{e}");
        let cfg: Config =
            serde_json::from_str(r#"{"bucket":"b","access_key_id":"AKID","secret_access_key":"TOPSECRET"}"#).unwrap();
        assert!(!format!("{cfg:?}").contains("TOPSECRET"));
    }

    #[test]
    fn keys_and_relative_paths_round_trip_under_a_prefix() {
        let o = S3Origin::from_config(
            r#"{"bucket":"b","prefix":"/music/","endpoint":"http://127.0.0.1:1","allow_http":true,
                "access_key_id":"a","secret_access_key":"s"}"#,
        )
        .unwrap();
        assert_eq!(o.key("A/b.flac"), "music/A/b.flac");
        assert_eq!(o.rel("music/A/b.flac"), Some("A/b.flac"));
        assert_eq!(o.rel("musicx/A"), None);
        assert_eq!(o.head(&CallCtx::unlimited(), "../x").unwrap_err().kind, ErrorKind::INVALID_INPUT);
    }

    #[test]
    fn an_unreachable_endpoint_is_a_retryable_error_within_the_deadline() {
        // Port 1 on loopback: connection refused at once.
        let o = S3Origin::from_config(
            r#"{"bucket":"b","endpoint":"http://127.0.0.1:1","allow_http":true,"retries":2,
                "access_key_id":"a","secret_access_key":"s"}"#,
        )
        .unwrap();
        let t = std::time::Instant::now();
        let e = o.stat(&CallCtx::with_timeout(Duration::from_secs(5)), "x.flac").unwrap_err();
        assert!(e.retryable && e.kind == ErrorKind::UNAVAILABLE, "{e:?}");
        assert!(t.elapsed() < Duration::from_secs(5));
        assert!(!e.message.contains("\"s\""));
    }
}

//! musefs origin plugin `sftp`: a directory on an SFTP server, through opendal's
//! `services-sftp`.
//!
//! **The SFTP service shells out to the system `ssh` client** (OpenSSH, through the
//! `openssh` crate, with a multiplexed control connection): `ssh` must be installed, and
//! everything it reads applies (`~/.ssh/config`, agents, `known_hosts`).
//!
//! Manifest keys (`[[origin]]` with `kind = "sftp"`):
//!
//! | key | default | meaning |
//! |---|---|---|
//! | `endpoint` | required | `ssh://user@host:port` (the port belongs inside the endpoint) |
//! | `user` | from the endpoint | the login |
//! | `key` | ssh's defaults | a private key file |
//! | `known_hosts_strategy` | `"strict"` | `strict` (only `~/.ssh/known_hosts`), `add` (trust on first use), `accept` (no check: tests only) |
//! | `root` | the login directory | the directory holding the music |
//! | `threads` | `2` | the plugin's own runtime threads |
//! | `retries` | `4` | attempts per request, transient errors only (stat, open and reads are retried by the musefs host's origin layer, listing pages by the plugin) |
//! | `read_ahead_kb` | `256` | the least a small read fetches |
//!
//! SFTP has no ETag: the stamp is size and modification time (whole seconds on most
//! servers). A handle checks the stamp again after every read and fails with
//! [`ErrorKind::CHANGED`] if it moved, so a file replaced mid-stream is an error, never a
//! mix of two versions (a replacement with the same size within the same second is not
//! detectable through SFTP).

use std::sync::Arc;
use std::time::{Duration, Instant, UNIX_EPOCH};

use futures_util::StreamExt;
use musefs_origin_util::{check_path, ReadAhead, Remote, RetryPolicy};
use musefs_plugin_api::{
    CallCtx, Entry, EntryKind, ErrorKind, Handle, ListRequest, Lister, Origin, OriginCaps, PluginError, PluginResult,
    Stat,
};
use opendal::{Metadata, Operator};
use serde::Deserialize;

/// The plugin's configuration: its `[[origin]]` table.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The origin's name (used by the host).
    #[serde(default)]
    pub name: Option<String>,
    /// The plugin name (`sftp`).
    #[serde(default)]
    pub kind: Option<String>,
    /// `ssh://user@host:port`.
    pub endpoint: String,
    /// Login.
    pub user: Option<String>,
    /// Private key file.
    pub key: Option<String>,
    /// `strict`, `add` or `accept`.
    pub known_hosts_strategy: Option<String>,
    /// Remote directory.
    pub root: Option<String>,
    /// Runtime threads.
    pub threads: Option<usize>,
    /// Attempts per request.
    pub retries: Option<u32>,
    /// Read-ahead of small reads, KiB.
    pub read_ahead_kb: Option<usize>,
}

/// An SFTP origin.
pub struct SftpOrigin {
    remote: Arc<Remote>,
    op: Operator,
    endpoint: String,
    read_ahead: usize,
}

fn invalid(msg: impl std::fmt::Display) -> PluginError {
    PluginError::invalid_input(format!("origin `sftp`: {msg}"))
}

fn map_err(op: &str, what: &str, e: &opendal::Error) -> PluginError {
    use opendal::ErrorKind as K;
    let text = format!("sftp {op} {what}: {e}");
    match e.kind() {
        K::NotFound => PluginError::new(ErrorKind::NOT_FOUND, text),
        K::PermissionDenied => PluginError::new(ErrorKind::PERMISSION_DENIED, text),
        K::ConfigInvalid => PluginError::new(ErrorKind::INVALID_INPUT, text),
        K::Unsupported => PluginError::new(ErrorKind::UNSUPPORTED, text),
        K::IsADirectory | K::NotADirectory => PluginError::new(ErrorKind::INVALID_INPUT, text),
        // Connection failures, a dropped session, server errors: worth another try.
        _ => PluginError::new(ErrorKind::UNAVAILABLE, text).retryable(),
    }
}

fn stat_of(m: &Metadata) -> Stat {
    let mtime_ns = m.last_modified().and_then(|t| {
        let st: std::time::SystemTime = t.into();
        st.duration_since(UNIX_EPOCH).ok().and_then(|d| i64::try_from(d.as_nanos()).ok())
    });
    Stat {
        kind: if m.is_dir() { EntryKind::DIR } else { EntryKind::FILE },
        size: if m.is_dir() { 0 } else { m.content_length() },
        mtime_ns: mtime_ns.into(),
        etag: None.into(),
    }
}

impl SftpOrigin {
    /// Builds an origin from its JSON configuration (the runtime is started here; the
    /// SSH connection is made on first use).
    ///
    /// # Errors
    /// `INVALID_INPUT` naming the key for unknown keys or bad values.
    pub fn from_config(json: &str) -> PluginResult<Self> {
        let cfg: Config = serde_json::from_str(json).map_err(invalid)?;
        let Some(hostpart) = cfg.endpoint.strip_prefix("ssh://") else {
            return Err(invalid(format!("`endpoint` = {:?} must look like ssh://user@host:port", cfg.endpoint)));
        };
        if hostpart.is_empty() || hostpart.contains('/') {
            return Err(invalid(format!("`endpoint` = {:?} must look like ssh://user@host:port", cfg.endpoint)));
        }
        let strategy = cfg.known_hosts_strategy.clone().unwrap_or_else(|| "strict".to_owned()).to_lowercase();
        if !["strict", "add", "accept"].contains(&strategy.as_str()) {
            return Err(invalid(format!(
                "`known_hosts_strategy` = {strategy:?}: use \"strict\", \"add\" or \"accept\""
            )));
        }
        if let Some(k) = &cfg.key {
            if !std::path::Path::new(k).is_file() {
                return Err(invalid(format!("`key` = {k:?} is not a readable file")));
            }
        }
        let mut b = opendal::services::Sftp::default().endpoint(&cfg.endpoint).known_hosts_strategy(&strategy);
        if let Some(u) = &cfg.user {
            b = b.user(u);
        }
        if let Some(k) = &cfg.key {
            b = b.key(k);
        }
        if let Some(r) = &cfg.root {
            b = b.root(r);
        }
        let threads = cfg.threads.unwrap_or(2).clamp(1, 64);
        let retry = RetryPolicy { attempts: cfg.retries.unwrap_or(4).clamp(1, 20), ..RetryPolicy::default() };
        let remote = Remote::new("sftp", threads, retry)?;
        let op = {
            let _g = remote.runtime().enter();
            Operator::new(b).map_err(|e| invalid(e.to_string()))?
        };
        Ok(Self {
            remote: Arc::new(remote),
            op,
            endpoint: cfg.endpoint,
            read_ahead: cfg.read_ahead_kb.unwrap_or(256).clamp(4, 16 * 1024) * 1024,
        })
    }

    fn stat_path(&self, ctx: &CallCtx, path: &str) -> PluginResult<Metadata> {
        check_path(path)?;
        let shown = format!("{}/{path}", self.endpoint);
        self.remote.attempt(ctx, "STAT", || {
            let op = self.op.clone();
            let path = path.to_owned();
            let shown = shown.clone();
            async move { op.stat(&path).await.map_err(|e| map_err("STAT", &shown, &e)) }
        })
    }
}

impl Origin for SftpOrigin {
    fn list(&self, ctx: &CallCtx, req: &ListRequest) -> PluginResult<Box<dyn Lister>> {
        let dir = req.dir.as_str().trim_matches('/').to_owned();
        if !dir.is_empty() {
            check_path(&dir)?;
        }
        let listed = if dir.is_empty() { "/".to_owned() } else { format!("{dir}/") };
        let shown = format!("{}/{dir}", self.endpoint);
        let recursive = req.recursive;
        let lister = self.remote.call(ctx, "LIST", || {
            let op = self.op.clone();
            let listed = listed.clone();
            let shown = shown.clone();
            async move { op.lister_with(&listed).recursive(recursive).await.map_err(|e| map_err("LIST", &shown, &e)) }
        })?;
        Ok(Box::new(SftpLister { remote: self.remote.clone(), lister, shown, recursive, finished: false }))
    }

    fn stat(&self, ctx: &CallCtx, path: &str) -> PluginResult<Stat> {
        Ok(stat_of(&self.stat_path(ctx, path)?))
    }

    fn open(&self, ctx: &CallCtx, path: &str) -> PluginResult<Arc<dyn Handle>> {
        let meta = self.stat_path(ctx, path)?;
        if meta.is_dir() {
            return Err(PluginError::invalid_input(format!("{}/{path} is a directory", self.endpoint)));
        }
        Ok(Arc::new(SftpHandle {
            remote: self.remote.clone(),
            op: self.op.clone(),
            path: path.to_owned(),
            shown: format!("{}/{path}", self.endpoint),
            stat: stat_of(&meta),
            ahead: ReadAhead::new(self.read_ahead),
        }))
    }

    fn caps(&self) -> OriginCaps {
        OriginCaps::NONE
    }
}

struct SftpLister {
    remote: Arc<Remote>,
    lister: opendal::Lister,
    shown: String,
    recursive: bool,
    finished: bool,
}

impl Lister for SftpLister {
    fn next_page(&mut self, ctx: &CallCtx, max: usize) -> PluginResult<Vec<Entry>> {
        if self.finished {
            return Ok(Vec::new());
        }
        let start = Instant::now();
        let mut out = Vec::new();
        let finished = &mut self.finished;
        let shown = self.shown.clone();
        let recursive = self.recursive;
        let lister = &mut self.lister;
        // One attempt per page: a listing cannot be rewound (the scanner retries the origin).
        self.remote.runtime().block_on(async {
            while out.len() < max {
                let next = tokio::select! {
                    n = lister.next() => n,
                    () = tokio::time::sleep(Duration::from_millis(25)) => {
                        ctx.check(start)?;
                        continue;
                    }
                };
                let e = match next {
                    None => {
                        // A finished lister must not be polled again.
                        *finished = true;
                        break;
                    }
                    Some(Ok(e)) => e,
                    Some(Err(e)) => return Err(map_err("LIST", &shown, &e)),
                };
                let path = e.path().trim_matches('/');
                let meta = e.metadata();
                if path.is_empty() || check_path(path).is_err() || (recursive && meta.is_dir()) {
                    continue;
                }
                if !meta.is_dir() && !meta.is_file() {
                    continue;
                }
                out.push(Entry { path: path.into(), stat: stat_of(meta) });
            }
            Ok(())
        })?;
        Ok(out)
    }
}

struct SftpHandle {
    remote: Arc<Remote>,
    op: Operator,
    path: String,
    shown: String,
    stat: Stat,
    ahead: ReadAhead,
}

impl SftpHandle {
    fn get(&self, ctx: &CallCtx, offset: u64, n: usize) -> PluginResult<Vec<u8>> {
        let end = offset + n as u64;
        let (data, now) = self.remote.attempt(ctx, "READ", || {
            let op = self.op.clone();
            let path = self.path.clone();
            let shown = self.shown.clone();
            async move {
                let buf = op.read_with(&path).range(offset..end).await.map_err(|e| map_err("READ", &shown, &e))?;
                // SFTP has no If-Match: check the stamp after reading instead.
                let meta = op.stat(&path).await.map_err(|e| map_err("STAT", &shown, &e))?;
                Ok((buf.to_vec(), stat_of(&meta)))
            }
        })?;
        if now.size != self.stat.size || now.mtime_ns != self.stat.mtime_ns {
            return Err(PluginError::new(
                ErrorKind::CHANGED,
                format!("{}: the file was replaced since it was opened (size or mtime differ)", self.shown),
            ));
        }
        if data.len() != n {
            return Err(PluginError::new(
                ErrorKind::CHANGED,
                format!("{}: asked for {n} bytes at {offset}, got {}", self.shown, data.len()),
            ));
        }
        Ok(data)
    }
}

impl Handle for SftpHandle {
    fn len(&self) -> u64 {
        self.stat.size
    }

    fn stat(&self) -> Stat {
        self.stat.clone()
    }

    fn read_at(&self, ctx: &CallCtx, offset: u64, buf: &mut [u8]) -> PluginResult<usize> {
        self.ahead.read(offset, self.stat.size, buf, |o, n| self.get(ctx, o, n))
    }
}

musefs_plugin_api::export_plugin! {
    name: "sftp",
    version: env!("CARGO_PKG_VERSION"),
    description: "A directory on an SFTP server through opendal (uses the system ssh client)",
    origin: SftpOrigin::from_config,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_configs_name_the_key() {
        let e = SftpOrigin::from_config(r#"{"endpoint":"host:22"}"#).err().unwrap();
        assert!(e.message.contains("`endpoint`"), "{e}");
        let e = SftpOrigin::from_config(r#"{"endpoint":"ssh://u@h:22","known_hosts_strategy":"yolo"}"#).err().unwrap();
        assert!(e.message.contains("known_hosts_strategy"), "{e}");
        let e = SftpOrigin::from_config(r#"{"endpoint":"ssh://u@h:22","key":"/nonexistent/id"}"#).err().unwrap();
        assert!(e.message.contains("`key`"), "{e}");
        let e = SftpOrigin::from_config(r#"{"endpoint":"ssh://u@h:22","rooot":"/x"}"#).err().unwrap();
        assert!(e.message.contains("rooot"), "{e}");
    }

    #[test]
    fn an_unreachable_server_is_a_retryable_error_within_the_deadline() {
        let o = SftpOrigin::from_config(
            r#"{"endpoint":"ssh://nobody@127.0.0.1:1","known_hosts_strategy":"accept","retries":2}"#,
        )
        .unwrap();
        let t = Instant::now();
        let e = o.stat(&CallCtx::with_timeout(Duration::from_secs(10)), "x.flac").unwrap_err();
        assert!(e.retryable && e.kind == ErrorKind::UNAVAILABLE, "{e:?}");
        assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
        assert_eq!(o.stat(&CallCtx::unlimited(), "../x").unwrap_err().kind, ErrorKind::INVALID_INPUT);
    }
}

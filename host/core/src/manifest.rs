//! The TOML manifest: origins, template(s), mode, state directory.
//!
//! Read with the `config` crate, so any top-level key can be overridden from the
//! environment as `MUSEFS_<KEY>` (e.g. `MUSEFS_MODE=synthesis`, `MUSEFS_STATE_DIR=...`).
//! Unknown keys and bad values are errors naming the key and the file. Relative
//! `state_dir`, `plugin_dir` and a local origin's `root` are taken relative to the
//! manifest's directory.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::template::{RenderOptions, Template, TemplateError};

/// The default template.
pub const DEFAULT_TEMPLATE: &str =
    "${albumartist|artist|\"Unknown Artist\"}/${album|dirname|\"Unknown Album\"}/[$disc-][$track ]${title|filename}";

/// A manifest error.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// The file cannot be read or parsed, or a key is unknown or has a bad value.
    #[error("manifest {path}: {message}")]
    Invalid {
        /// The manifest file.
        path: PathBuf,
        /// What is wrong, naming the key.
        message: String,
    },
    /// A template does not parse.
    #[error("manifest {path}: `{key}`: {source}")]
    Template {
        /// The manifest file.
        path: PathBuf,
        /// The key holding the template.
        key: String,
        /// The parse error.
        source: TemplateError,
    },
}

/// How files are served.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// The original bytes.
    #[default]
    Passthrough,
    /// A header built from the catalog in front of the original audio.
    Synthesis,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawManifest {
    state_dir: PathBuf,
    plugin_dir: Option<PathBuf>,
    #[serde(default)]
    mode: Mode,
    template: Option<String>,
    #[serde(default)]
    view: Vec<RawView>,
    #[serde(default)]
    origin: Vec<RawOrigin>,
    track_digits: Option<usize>,
    disc_digits: Option<usize>,
    slash_replacement: Option<String>,
    read_timeout_ms: Option<u64>,
    cover_name: Option<String>,
    refresh_interval_ms: Option<u64>,
    sync_interval: Option<RawInterval>,
    watch: Option<bool>,
    header_cache_mb: Option<u64>,
    prune_limit: Option<f64>,
    #[serde(default)]
    format: std::collections::HashMap<String, serde_json::Map<String, serde_json::Value>>,
    cache: Option<RawCache>,
    uid: Option<RawId>,
    gid: Option<RawId>,
    file_mode: Option<RawMode>,
    dir_mode: Option<RawMode>,
    allow_other: Option<bool>,
    metrics_addr: Option<String>,
    case_insensitive: Option<bool>,
    sidecars: Option<Vec<String>>,
    writable: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum RawInterval {
    Secs(u64),
    Text(String),
}

/// Parses `sync_interval`: seconds, `"90s"`, `"15m"`, `"2h"`, or `"off"`/`0` (no
/// background sync). `None` means off.
///
/// # Errors
/// A message naming the bad value.
/// A TOML error as one line: `line N: `key`: message`.
fn toml_error(text: &str, e: &toml::de::Error) -> String {
    let msg = e.message().trim().replace('\n', " ");
    let Some(span) = e.span() else { return msg };
    let line_no = text[..span.start.min(text.len())].matches('\n').count() + 1;
    let line = text.lines().nth(line_no - 1).unwrap_or("");
    match line.split_once('=') {
        Some((key, _)) if !msg.contains(key.trim()) => format!("line {line_no}: `{}`: {msg}", key.trim()),
        _ => format!("line {line_no}: {msg}"),
    }
}

fn parse_interval(raw: Option<RawInterval>) -> Result<Option<Duration>, String> {
    let secs = match raw {
        None => return Ok(Some(Duration::from_secs(15 * 60))),
        Some(RawInterval::Secs(n)) => n,
        Some(RawInterval::Text(t)) => {
            let t = t.trim().to_ascii_lowercase();
            if t == "off" || t == "never" {
                return Ok(None);
            }
            let (num, mult) = match t.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
                None => (t.as_str(), 1),
                Some((i, _)) => {
                    let m = match t[i..].trim() {
                        "s" => 1,
                        "m" | "min" => 60,
                        "h" => 3600,
                        _ => {
                            return Err(format!(
                                "`sync_interval` = {t:?}: use seconds, \"90s\", \"15m\", \"2h\" or \"off\""
                            ))
                        }
                    };
                    (&t[..i], m)
                }
            };
            num.parse::<u64>()
                .map_err(|_| format!("`sync_interval` = {t:?}: use seconds, \"90s\", \"15m\", \"2h\" or \"off\""))?
                * mult
        }
    };
    Ok((secs > 0).then(|| Duration::from_secs(secs.max(5))))
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum RawSize {
    Int(u64),
    Text(String),
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum RawId {
    Num(u32),
    Name(String),
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum RawMode {
    Num(u32),
    Text(String),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCache {
    enabled: Option<bool>,
    max_size: Option<RawSize>,
    chunk_size: Option<RawSize>,
    memory: Option<RawSize>,
    readahead: Option<usize>,
    fetch_threads: Option<usize>,
    pin_headers: Option<bool>,
    write_behind: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawView {
    name: String,
    template: String,
}

#[derive(Debug, Deserialize)]
struct RawOrigin {
    name: String,
    kind: String,
    #[serde(flatten)]
    rest: serde_json::Map<String, serde_json::Value>,
}

/// A view: a template, mounted at the root or as a named top-level directory.
#[derive(Debug, Clone)]
pub struct View {
    /// The directory name (`None`: the single unnamed view at the root).
    pub name: Option<String>,
    /// The template.
    pub template: Template,
}

/// One origin of the manifest.
#[derive(Debug, Clone)]
pub struct OriginSpec {
    /// Its unique name.
    pub name: String,
    /// The origin plugin's name.
    pub kind: String,
    /// Its whole table as JSON, passed to the plugin.
    pub config_json: String,
    /// The manifest it comes from (for error messages).
    pub manifest: PathBuf,
}

/// A validated manifest.
#[derive(Debug, Clone)]
pub struct Manifest {
    /// The manifest file.
    pub path: PathBuf,
    /// Where the catalog and cache live.
    pub state_dir: PathBuf,
    /// Where plugins are loaded from (overridden by `--plugin-dir`).
    pub plugin_dir: Option<PathBuf>,
    /// Passthrough or synthesis.
    pub mode: Mode,
    /// The views (at least one).
    pub views: Vec<View>,
    /// The origins (at least one).
    pub origins: Vec<OriginSpec>,
    /// Rendering options.
    pub render: RenderOptions,
    /// How long one origin call may take.
    pub read_timeout: Duration,
    /// The name of the virtual cover file in each album directory (`None`: off).
    pub cover_name: Option<String>,
    /// How often a running mount polls the catalog for changes.
    pub refresh_interval: Duration,
    /// How often a mount syncs its origins in the background (`None`: never, not even
    /// at mount).
    pub sync_interval: Option<Duration>,
    /// Whether a mount watches local origins for changes (inotify).
    pub watch: bool,
    /// The header (plan) cache budget in bytes.
    pub header_cache_bytes: u64,
    /// Per-format-plugin options (`[format.NAME]`), as JSON objects.
    pub format_options: std::collections::HashMap<String, String>,
    /// The chunk cache of remote origins (`[cache]`).
    pub cache: CacheSettings,
    /// The largest share (0 to 1) of an origin's cataloged files one scan may remove: a
    /// listing that lost more (an unmounted NAS lists as empty) is treated as an
    /// unavailable origin, and nothing of it is pruned.
    pub prune_limit: f64,
    /// Who owns the mounted files and their modes, and who may use the mount.
    pub access: Access,
    /// Where a mount serves Prometheus metrics (`metrics_addr`; `None`: nowhere).
    pub metrics_addr: Option<std::net::SocketAddr>,
    /// Globs of the non-audio files served beside the tracks they sit next to
    /// (`sidecars`; empty: none).
    pub sidecars: Vec<String>,
    /// Whether tag editors may save files through the mount (`writable`, synthesis
    /// only): a saved file becomes a catalog edit; originals are never written.
    pub writable: bool,
}

/// The default `sidecars`: cue sheets, rip logs, lyrics, booklets and images.
pub const DEFAULT_SIDECARS: &[&str] =
    &["*.cue", "*.log", "*.lrc", "*.pdf", "*.jpg", "*.jpeg", "*.png", "*.gif", "*.webp"];

impl Manifest {
    /// Whether a file named `name` (not claimed by a format plugin) is a sidecar.
    pub fn is_sidecar(&self, name: &str) -> bool {
        self.sidecars.iter().any(|g| crate::util::glob_match(g, name))
    }
}

/// Ownership and permissions of the mounted tree (the originals' own permissions are
/// not carried over: every served file has `file_mode`, every directory `dir_mode`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Access {
    /// Owner of every node (default: the user running the mount).
    pub uid: Option<u32>,
    /// Group of every node (default: the user's primary group, or `uid`'s when given by name).
    pub gid: Option<u32>,
    /// Permission bits of files (default `0o444`; `0o644` on a writable mount).
    pub file_mode: u32,
    /// Permission bits of directories (default `0o555`; `0o755` on a writable mount).
    pub dir_mode: u32,
    /// Whether other users may use the mount (`allow_other`; the kernel then checks
    /// the modes above: `default_permissions`).
    pub allow_other: bool,
}

impl Default for Access {
    fn default() -> Self {
        Self { uid: None, gid: None, file_mode: 0o444, dir_mode: 0o555, allow_other: false }
    }
}

/// The top-level keys a `MUSEFS_<KEY>` variable overrides (`MUSEFS_CACHE__MAX_SIZE`
/// reaches into `[cache]`).
const ENV_KEYS: &[&str] = &[
    "state_dir",
    "plugin_dir",
    "mode",
    "template",
    "track_digits",
    "disc_digits",
    "slash_replacement",
    "read_timeout_ms",
    "cover_name",
    "refresh_interval_ms",
    "sync_interval",
    "watch",
    "header_cache_mb",
    "prune_limit",
    "uid",
    "gid",
    "file_mode",
    "dir_mode",
    "allow_other",
    "metrics_addr",
    "case_insensitive",
    "sidecars",
    "writable",
    "cache",
    "format",
];

/// `MUSEFS_*` variables that are not manifest keys but mean something to musefs or its
/// scripts: passed over without a word.
const OTHER_VARS: &[&str] = &["MUSEFS_MANIFEST", "MUSEFS_PLUGIN_DIR", "MUSEFS_FUZZ_SECS", "MUSEFS_LOG"];

/// The `MUSEFS_*` variables that override manifest keys. Any other one (`MUSEFS_LOG=debug`
/// set for something else) is left out with a warning naming it, instead of failing
/// every command with "unknown field `log`".
fn manifest_env() -> config::Map<String, String> {
    let mut env = config::Map::new();
    for (k, v) in std::env::vars() {
        let Some(rest) = k.strip_prefix("MUSEFS_") else { continue };
        let key = rest.to_ascii_lowercase();
        let top = key.split("__").next().unwrap_or_default();
        if ENV_KEYS.contains(&top) {
            env.insert(k, v);
        } else if !OTHER_VARS.contains(&k.as_str()) {
            tracing::warn!(
                "environment variable {k} is not a manifest key and is ignored \
                 (MUSEFS_<KEY> overrides a top-level manifest key, e.g. MUSEFS_MODE)"
            );
        }
    }
    env
}

fn parse_mode(key: &str, v: RawMode) -> Result<u32, String> {
    let n = match v {
        RawMode::Num(n) => n,
        RawMode::Text(t) => {
            let t = t.trim();
            let digits = t.strip_prefix("0o").unwrap_or(t);
            u32::from_str_radix(digits, 8)
                .map_err(|_| format!("`{key}` = {t:?}: expected an octal mode such as \"0444\""))?
        }
    };
    if n > 0o777 {
        return Err(format!("`{key}` = {n:o}: only permission bits (at most 0777) are allowed"));
    }
    Ok(n)
}

fn access(
    uid: Option<RawId>,
    gid: Option<RawId>,
    file_mode: Option<RawMode>,
    dir_mode: Option<RawMode>,
    allow_other: Option<bool>,
    writable: bool,
) -> Result<Access, String> {
    let mut a = Access { allow_other: allow_other.unwrap_or(false), ..Access::default() };
    if writable {
        // The owner may write (a tag editor saving) and create (its temporary files).
        (a.file_mode, a.dir_mode) = (0o644, 0o755);
    }
    match uid {
        Some(RawId::Num(n)) => a.uid = Some(n),
        Some(RawId::Name(name)) => {
            let (u, g) = crate::sys::user_by_name(&name).ok_or_else(|| format!("`uid` = {name:?}: no such user"))?;
            a.uid = Some(u);
            a.gid = Some(g);
        }
        None => {}
    }
    match gid {
        Some(RawId::Num(n)) => a.gid = Some(n),
        Some(RawId::Name(name)) => {
            a.gid = Some(crate::sys::group_by_name(&name).ok_or_else(|| format!("`gid` = {name:?}: no such group"))?);
        }
        None => {}
    }
    if let Some(m) = file_mode {
        a.file_mode = parse_mode("file_mode", m)?;
    }
    if let Some(m) = dir_mode {
        a.dir_mode = parse_mode("dir_mode", m)?;
    }
    Ok(a)
}

impl Manifest {
    /// Loads and validates a manifest, applying `MUSEFS_*` environment overrides.
    ///
    /// # Errors
    /// A [`ManifestError`] naming the file and the key.
    pub fn load(path: &Path) -> Result<Self, ManifestError> {
        let invalid = |message: String| ManifestError::Invalid { path: path.to_owned(), message };
        if !path.is_file() {
            return Err(invalid("no such file".into()));
        }
        // The file's own types first, strictly (the `config` crate coerces `true` to 1
        // and "7" to 7): a wrong type names its key and line. Missing keys may still come
        // from `MUSEFS_*` variables, so those are left to the merged check below.
        let text = std::fs::read_to_string(path).map_err(|e| invalid(e.to_string()))?;
        if let Err(e) = toml::from_str::<RawManifest>(&text) {
            if !e.message().starts_with("missing field") {
                return Err(invalid(toml_error(&text, &e)));
            }
        }
        let cfg = config::Config::builder()
            .add_source(config::File::from(path).format(config::FileFormat::Toml))
            .add_source(
                config::Environment::with_prefix("MUSEFS")
                    .prefix_separator("_")
                    .separator("__")
                    .try_parsing(true)
                    .source(Some(manifest_env())),
            )
            .build()
            .map_err(|e| invalid(e.to_string()))?;
        let raw: RawManifest = cfg.try_deserialize().map_err(|e| invalid(e.to_string()))?;
        let base = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
        let resolve = |p: PathBuf| if p.is_relative() { base.join(p) } else { p };

        let template_err = |key: String, source| ManifestError::Template { path: path.to_owned(), key, source };
        let views = match (raw.template, raw.view.is_empty()) {
            (Some(_), false) => {
                return Err(invalid(
                    "`template` and `[[view]]` cannot both be set: move the template into a `[[view]]` table".into(),
                ))
            }
            (t, true) => {
                let src = t.unwrap_or_else(|| DEFAULT_TEMPLATE.to_owned());
                vec![View {
                    name: None,
                    template: Template::parse(&src).map_err(|e| template_err("template".into(), e))?,
                }]
            }
            (None, false) => {
                let mut seen = HashSet::new();
                let mut views = Vec::new();
                for (i, v) in raw.view.into_iter().enumerate() {
                    let name = v.name.trim().to_owned();
                    if name.is_empty() || name.contains('/') || name == "." || name == ".." || name.contains('\0') {
                        return Err(invalid(format!("`view[{i}].name` = {:?} is not a valid directory name", v.name)));
                    }
                    if !seen.insert(name.clone()) {
                        return Err(invalid(format!("`view[{i}].name` = {name:?} is used twice")));
                    }
                    let template =
                        Template::parse(&v.template).map_err(|e| template_err(format!("view[{i}].template"), e))?;
                    views.push(View { name: Some(name), template });
                }
                views
            }
        };

        if raw.origin.is_empty() {
            return Err(invalid("no `[[origin]]` table: at least one origin is required".into()));
        }
        let mut names = HashSet::new();
        let mut origins = Vec::new();
        for (i, o) in raw.origin.into_iter().enumerate() {
            if o.name.trim().is_empty() {
                return Err(invalid(format!("`origin[{i}].name` is empty")));
            }
            if !names.insert(o.name.clone()) {
                return Err(invalid(format!("`origin[{i}].name` = {:?} is used twice", o.name)));
            }
            if o.kind.trim().is_empty() {
                return Err(invalid(format!("`origin[{i}].kind` is empty")));
            }
            let mut table = o.rest;
            // A local origin's relative `root` is relative to the manifest, like
            // `state_dir` (not to wherever the command happens to run).
            if o.kind == "local" {
                if let Some(serde_json::Value::String(root)) = table.get("root") {
                    let p = PathBuf::from(root);
                    if p.is_relative() {
                        let abs = std::path::absolute(base.join(&p)).unwrap_or_else(|_| base.join(&p));
                        table.insert("root".into(), abs.display().to_string().into());
                    }
                }
            }
            table.insert("name".into(), o.name.clone().into());
            table.insert("kind".into(), o.kind.clone().into());
            origins.push(OriginSpec {
                name: o.name,
                kind: o.kind,
                config_json: serde_json::Value::Object(table).to_string(),
                manifest: path.to_owned(),
            });
        }
        let mut render =
            RenderOptions { case_insensitive: raw.case_insensitive.unwrap_or(false), ..RenderOptions::default() };
        if let Some(d) = raw.track_digits {
            render.track_digits = d.min(10);
        }
        if let Some(d) = raw.disc_digits {
            render.disc_digits = d.min(10);
        }
        if let Some(s) = raw.slash_replacement {
            if s.contains('/') || s.contains('\0') {
                return Err(invalid("`slash_replacement` must not contain `/` or NUL".into()));
            }
            render.slash_replacement = s;
        }
        let cover_name = match raw.cover_name {
            None => Some("cover.jpg".to_owned()),
            Some(n) if n.is_empty() => None,
            Some(n) => {
                if n.contains('/') || n.contains('\0') || n == "." || n == ".." || n.len() > 255 {
                    return Err(invalid(format!(
                        "`cover_name` = {n:?} is not a valid file name (use \"\" to turn it off)"
                    )));
                }
                Some(n)
            }
        };
        let cache = cache_settings(raw.cache).map_err(invalid)?;
        // A mode from the environment is octal text (`MUSEFS_FILE_MODE=0440`), which the
        // `config` crate would have parsed as the decimal number 440.
        let env_mode = |var: &str, v: Option<RawMode>| std::env::var(var).ok().map(RawMode::Text).or(v);
        let (file_mode, dir_mode) =
            (env_mode("MUSEFS_FILE_MODE", raw.file_mode), env_mode("MUSEFS_DIR_MODE", raw.dir_mode));
        let writable = raw.writable.unwrap_or(false);
        if writable && raw.mode != Mode::Synthesis {
            return Err(invalid(
                "`writable = true` needs `mode = \"synthesis\"`: a saved file becomes a catalog edit, \
                 which only synthesis serves"
                    .into(),
            ));
        }
        let access = access(raw.uid, raw.gid, file_mode, dir_mode, raw.allow_other, writable).map_err(invalid)?;
        let sync_interval = parse_interval(raw.sync_interval).map_err(invalid)?;
        let metrics_addr = match raw.metrics_addr.as_deref().map(str::trim) {
            None | Some("" | "off") => None,
            Some(a) => Some(a.parse().map_err(|_| {
                invalid(format!(
                    "`metrics_addr` = {a:?}: expected an IP address and port such as \"127.0.0.1:9477\" (or \"off\")"
                ))
            })?),
        };
        let format_options =
            raw.format.into_iter().map(|(k, v)| (k, serde_json::Value::Object(v).to_string())).collect();
        let sidecars = match raw.sidecars {
            None => DEFAULT_SIDECARS.iter().map(|s| (*s).to_owned()).collect(),
            Some(globs) => {
                for g in &globs {
                    if g.is_empty() || g.contains('/') {
                        return Err(invalid(format!(
                            "`sidecars`: {g:?} is not a file-name glob (e.g. \"*.cue\"; no `/`)"
                        )));
                    }
                }
                globs
            }
        };
        Ok(Self {
            access,
            writable,
            sidecars,
            metrics_addr,
            cache,
            cover_name,
            refresh_interval: Duration::from_millis(raw.refresh_interval_ms.unwrap_or(1000).clamp(50, 3_600_000)),
            sync_interval,
            watch: raw.watch.unwrap_or(true),
            header_cache_bytes: raw.header_cache_mb.unwrap_or(64).max(1) * 1024 * 1024,
            prune_limit: match raw.prune_limit {
                None => 0.5,
                Some(f) if (0.0..=1.0).contains(&f) => f,
                Some(f) => {
                    return Err(invalid(format!("`prune_limit` = {f}: expected a share from 0.0 to 1.0 (default 0.5)")))
                }
            },
            format_options,
            path: path.to_owned(),
            state_dir: resolve(raw.state_dir),
            plugin_dir: raw.plugin_dir.map(resolve),
            mode: raw.mode,
            views,
            origins,
            render,
            read_timeout: Duration::from_millis(raw.read_timeout_ms.unwrap_or(30_000).max(1)),
        })
    }

    /// The chunk cache directory.
    pub fn cache_dir(&self) -> PathBuf {
        self.state_dir.join("chunks")
    }

    /// Where saves through a writable mount keep their scratch files.
    pub fn writes_dir(&self) -> PathBuf {
        self.state_dir.join("writes")
    }

    /// The catalog database path.
    pub fn catalog_path(&self) -> PathBuf {
        self.state_dir.join("catalog.db")
    }

    /// The tree snapshot path (written and read by the tree layer's `snapshot` module).
    pub fn snapshot_path(&self) -> PathBuf {
        self.state_dir.join("tree.snapshot")
    }
}

fn cache_settings(raw: Option<RawCache>) -> Result<CacheSettings, String> {
    let mut c = CacheSettings::default();
    let Some(raw) = raw else { return Ok(c) };
    let size = |key: &str, v: RawSize| match v {
        RawSize::Int(n) => Ok(n),
        RawSize::Text(t) => parse_size(&t).map_err(|e| format!("`cache.{key}`: {e}")),
    };
    if let Some(v) = raw.enabled {
        c.enabled = v;
    }
    if let Some(v) = raw.max_size {
        c.max_size = size("max_size", v)?;
    }
    if let Some(v) = raw.chunk_size {
        let n = size("chunk_size", v)?;
        if !(64 << 10..=64 << 20).contains(&n) || n % 4096 != 0 {
            return Err(format!("`cache.chunk_size` = {n}: use a multiple of 4 KiB between 64KiB and 64MiB"));
        }
        c.chunk_size = n;
    }
    if let Some(v) = raw.memory {
        c.memory_bytes = size("memory", v)?.max(c.chunk_size * 2);
    }
    if let Some(v) = raw.readahead {
        c.readahead = v.min(64);
    }
    if let Some(v) = raw.fetch_threads {
        c.fetch_threads = v.clamp(1, 64);
    }
    if let Some(v) = raw.pin_headers {
        c.pin_headers = v;
    }
    if let Some(v) = raw.write_behind {
        c.write_behind = v;
    }
    if c.max_size < c.chunk_size * 4 {
        return Err(format!("`cache.max_size` = {} is smaller than four chunks", c.max_size));
    }
    Ok(c)
}

/// `[cache]` settings.
#[derive(Debug, Clone)]
pub struct CacheSettings {
    /// Whether remote origins are cached at all.
    pub enabled: bool,
    /// Chunk size in bytes.
    pub chunk_size: u64,
    /// Disk budget in bytes.
    pub max_size: u64,
    /// Memory budget of verified chunks in bytes.
    pub memory_bytes: u64,
    /// Chunks fetched ahead of a sequential reader.
    pub readahead: usize,
    /// Fetch threads for read-ahead.
    pub fetch_threads: usize,
    /// Pin the chunks holding headers and art.
    pub pin_headers: bool,
    /// Bound dirty page-cache data with `sync_file_range`.
    pub write_behind: bool,
}

impl Default for CacheSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            chunk_size: 1 << 20,
            max_size: 20 << 30,
            memory_bytes: 64 << 20,
            readahead: 4,
            fetch_threads: 4,
            pin_headers: true,
            write_behind: true,
        }
    }
}

/// Parses a size: `1048576`, `512KiB`, `20GiB`, `1.5G`, `100MB` (decimal `KB`/`MB`/`GB`/`TB`,
/// binary `K`/`KiB`/`M`/`MiB`/...).
///
/// # Errors
/// A message naming the value.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num.parse().map_err(|_| format!("{s:?} is not a size (e.g. \"20GiB\", \"512MiB\", \"1048576\")"))?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kib" => 1 << 10,
        "m" | "mib" => 1 << 20,
        "g" | "gib" => 1 << 30,
        "t" | "tib" => 1 << 40,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        "tb" => 1_000_000_000_000,
        u => return Err(format!("{s:?}: unknown unit {u:?} (use B, KiB, MiB, GiB, TiB, KB, MB, GB, TB)")),
    };
    let v = n * mult as f64;
    if !v.is_finite() || v < 0.0 || v > u64::MAX as f64 {
        return Err(format!("{s:?} is out of range"));
    }
    Ok(v as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> Result<Manifest, ManifestError> {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("m.toml");
        std::fs::write(&p, text).unwrap();
        Manifest::load(&p)
    }

    const OK: &str = r#"
state_dir = "state"
mode = "passthrough"
template = "$albumartist/$album/[$disc-]$track $title"
[[origin]]
name = "main"
kind = "local"
root = "/srv/music"
"#;

    #[test]
    fn documented_keys_load() {
        let m = load(OK).unwrap();
        assert!(m.state_dir.ends_with("state") && m.state_dir.is_absolute());
        assert_eq!(m.origins[0].kind, "local");
        let cfg: serde_json::Value = serde_json::from_str(&m.origins[0].config_json).unwrap();
        assert_eq!(cfg["root"], "/srv/music");
        assert_eq!(m.views.len(), 1);
    }

    /// Regression: a relative `root` resolved against the current directory while
    /// `state_dir` resolved against the manifest (a scan from `/tmp` of
    /// `root = "../lib"` walked the system's `/lib`).
    #[test]
    fn a_relative_root_is_relative_to_the_manifest_like_state_dir() {
        let m = load(&OK.replace("/srv/music", "../lib")).unwrap();
        let cfg: serde_json::Value = serde_json::from_str(&m.origins[0].config_json).unwrap();
        let root = PathBuf::from(cfg["root"].as_str().unwrap());
        assert!(root.is_absolute(), "{root:?}");
        assert_eq!(root.parent().unwrap().parent(), m.state_dir.parent(), "{root:?} vs {:?}", m.state_dir);
        assert!(root.ends_with("../lib"), "{root:?}");
    }

    #[test]
    fn writable_needs_synthesis_and_opens_the_default_modes_to_the_owner() {
        let m = load(OK).unwrap();
        assert!(!m.writable);
        assert_eq!((m.access.file_mode, m.access.dir_mode), (0o444, 0o555));
        let e = load(&format!("writable = true\n{OK}")).unwrap_err().to_string();
        assert!(e.contains("writable") && e.contains("synthesis") && e.contains("m.toml"), "{e}");
        let synth = OK.replace("passthrough", "synthesis");
        let m = load(&format!("writable = true\n{synth}")).unwrap();
        assert!(m.writable);
        assert_eq!((m.access.file_mode, m.access.dir_mode), (0o644, 0o755));
        let m = load(&format!("writable = true\nfile_mode = \"0640\"\n{synth}")).unwrap();
        assert_eq!((m.access.file_mode, m.access.dir_mode), (0o640, 0o755), "a mode given is kept");
    }

    #[test]
    fn metrics_addr_is_an_address_and_port_or_off() {
        assert_eq!(load(OK).unwrap().metrics_addr, None);
        let m = load(&format!("metrics_addr = \"127.0.0.1:9477\"\n{OK}")).unwrap();
        assert_eq!(m.metrics_addr, Some("127.0.0.1:9477".parse().unwrap()));
        assert_eq!(load(&format!("metrics_addr = \"off\"\n{OK}")).unwrap().metrics_addr, None);
        let e = load(&format!("metrics_addr = \"localhost\"\n{OK}")).unwrap_err().to_string();
        assert!(e.contains("metrics_addr") && e.contains("127.0.0.1:9477") && e.contains("m.toml"), "{e}");
    }

    #[test]
    fn ownership_and_modes_by_number_name_and_octal() {
        let m =
            load(&format!("uid = \"root\"\ngid = 7\nfile_mode = \"0440\"\ndir_mode = 0o550\nallow_other = true\n{OK}"))
                .unwrap();
        let a = m.access;
        assert_eq!((a.uid, a.gid, a.file_mode, a.dir_mode, a.allow_other), (Some(0), Some(7), 0o440, 0o550, true));
        let d = load(OK).unwrap().access;
        assert_eq!((d.uid, d.gid, d.file_mode, d.dir_mode, d.allow_other), (None, None, 0o444, 0o555, false));
        for (bad, says) in [
            ("file_mode = \"0999\"", "octal"),
            ("dir_mode = 0o7777", "permission bits"),
            ("uid = \"no-such-user-musefs\"", "no such user"),
            ("gid = \"no-such-group-musefs\"", "no such group"),
        ] {
            let e = load(&format!("{bad}\n{OK}")).unwrap_err().to_string();
            assert!(e.contains(says) && e.contains("m.toml"), "{bad}: {e}");
        }
    }

    /// Regression (issue 16): an unrelated `MUSEFS_*` variable failed every command with
    /// "unknown field". Now it is left out (with a warning naming it).
    #[test]
    fn an_unrelated_musefs_variable_does_not_break_loading() {
        std::env::set_var("MUSEFS_UNRELATED_FOR_A_TEST", "1");
        let m = load(OK);
        std::env::remove_var("MUSEFS_UNRELATED_FOR_A_TEST");
        assert!(m.is_ok(), "{m:?}");
    }

    #[test]
    fn errors_name_the_key_and_file() {
        let e = load(&OK.replace("template =", "tempalte =")).unwrap_err().to_string();
        assert!(e.contains("tempalte") && e.contains("m.toml"), "{e}");
        let e = load(&OK.replace("\"passthrough\"", "\"bogus\"")).unwrap_err().to_string();
        assert!(e.contains("bogus") && e.contains("m.toml"), "{e}");
        let e = load(&OK.replace("$album/", "$album/%oops{x}/")).unwrap_err().to_string();
        assert!(e.contains("`template`") && e.contains("column"), "{e}");
        let e = load("state_dir = 's'\n").unwrap_err().to_string();
        assert!(e.contains("[[origin]]"), "{e}");
        let e = load(&format!("{OK}\n[[view]]\nname='a'\ntemplate='$a'\n")).unwrap_err().to_string();
        assert!(e.contains("cannot both"), "{e}");
        let e = load("state_dir = [1]\n").unwrap_err().to_string();
        assert!(e.contains("state_dir"), "{e}");
    }

    #[test]
    fn cache_section_parses_sizes_and_names_bad_keys() {
        let m = load(&format!("{OK}\n[cache]\nmax_size = \"2GiB\"\nchunk_size = \"256KiB\"\nreadahead = 8\n")).unwrap();
        assert_eq!((m.cache.max_size, m.cache.chunk_size, m.cache.readahead), (2 << 30, 256 << 10, 8));
        let e = load(&format!("{OK}\n[cache]\nmax_size = \"2 furlongs\"\n")).unwrap_err().to_string();
        assert!(e.contains("cache.max_size") && e.contains("furlongs"), "{e}");
        let e = load(&format!("{OK}\n[cache]\nchunk_size = 1000\n")).unwrap_err().to_string();
        assert!(e.contains("cache.chunk_size"), "{e}");
        let e = load(&format!("{OK}\n[cache]\nmax_sise = 1\n")).unwrap_err().to_string();
        assert!(e.contains("max_sise"), "{e}");
    }

    #[test]
    fn environment_overrides_manifest_keys() {
        // A key no other test looks at, so tests running in parallel threads are unaffected.
        std::env::set_var("MUSEFS_TRACK_DIGITS", "3");
        let m = load(OK);
        std::env::remove_var("MUSEFS_TRACK_DIGITS");
        assert_eq!(m.unwrap().render.track_digits, 3);
    }

    #[test]
    fn views_become_named_directories() {
        let text = OK.replace("template = \"$albumartist/$album/[$disc-]$track $title\"\n", "")
            + "[[view]]\nname = \"By Artist\"\ntemplate = \"$artist/$title\"\n[[view]]\nname = \"By Genre\"\ntemplate = \"$genre/$title\"\n";
        let m = load(&text).unwrap();
        assert_eq!(m.views.iter().map(|v| v.name.clone().unwrap()).collect::<Vec<_>>(), vec!["By Artist", "By Genre"]);
    }

    #[test]
    fn sizes_parse_with_units_and_errors_name_the_value() {
        assert_eq!(parse_size("20GiB").unwrap(), 20 << 30);
        assert_eq!(parse_size("1MiB").unwrap(), 1 << 20);
        assert_eq!(parse_size("512k").unwrap(), 512 << 10);
        assert_eq!(parse_size("100MB").unwrap(), 100_000_000);
        assert_eq!(parse_size("1048576").unwrap(), 1 << 20);
        assert_eq!(parse_size("1.5G").unwrap(), 3 << 29);
        assert!(parse_size("20 parsecs").unwrap_err().contains("parsecs"));
        assert!(parse_size("lots").unwrap_err().contains("lots"));
    }
}

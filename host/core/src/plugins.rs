//! Loading plugins from a directory.
//!
//! Every `*.so` file in the directory is tried with
//! `abi_stable::library::lib_header_from_path` (not `RootModule::load_from_file`, which
//! caches one module per interface type and so would load only one plugin). A file that
//! is not a plugin, was built for another ABI generation or with a mismatched layout, or
//! repeats a name already loaded is reported with its path; the others still load.
#![allow(
    unsafe_code,
    reason = "FFI: a plugin of an older ABI minor is initialised after checking it against that minor's frozen layout"
)]

use std::path::{Path, PathBuf};

use musefs_plugin_api::{
    host_into_ffi, FormatBox, Host, LogLevel, OriginBox, PluginKinds, PluginModRef, ABI_MINOR, ABI_VERSION,
};

/// A plugin that loaded.
#[derive(Clone)]
pub struct LoadedPlugin {
    /// Its name.
    pub name: String,
    /// Its own version.
    pub version: String,
    /// What it provides.
    pub kinds: PluginKinds,
    /// One line about it.
    pub description: String,
    /// The ABI generation it was built for.
    pub abi_version: u32,
    /// The ABI minor version it was built for (what it has of the generation's additions).
    pub abi_minor: u32,
    /// Where it was loaded from.
    pub path: PathBuf,
    module: PluginModRef,
    /// Whether "cannot check its options" was logged already.
    options_warned: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl std::fmt::Debug for LoadedPlugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedPlugin").field("name", &self.name).field("path", &self.path).finish()
    }
}

/// A file that did not load, and why.
#[derive(Debug, Clone)]
pub struct LoadError {
    /// The file.
    pub path: PathBuf,
    /// Why.
    pub message: String,
}

impl std::fmt::Display for LoadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "plugin {}: {}", self.path.display(), self.message)
    }
}

/// An error creating an origin or a format.
#[derive(Debug, thiserror::Error)]
pub enum PluginsError {
    /// The plugin directory is missing or unreadable.
    #[error("plugin directory {path}: {source}")]
    Dir {
        /// The directory.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// No loaded plugin has that name and kind.
    #[error("no {kind} plugin named `{name}` in {dir} (loaded: {loaded}){hint}")]
    Missing {
        /// `origin` or `format`.
        kind: &'static str,
        /// The requested name.
        name: String,
        /// The plugin directory.
        dir: String,
        /// What did load.
        loaded: String,
        /// Load errors that might explain it.
        hint: String,
    },
    /// A format plugin refused its `[format.NAME]` options.
    #[error("manifest [format.{name}]: {error}")]
    Options {
        /// The plugin name.
        name: String,
        /// Its error, naming the option (in the message: not a separate cause, which
        /// would print it twice).
        error: musefs_plugin_api::PluginError,
    },
    /// The plugin's factory refused.
    #[error("plugin `{name}` ({path}): {error}")]
    Factory {
        /// The plugin name.
        name: String,
        /// Its file.
        path: PathBuf,
        /// Its error.
        error: musefs_plugin_api::PluginError,
    },
    /// An `[[origin]]` of the manifest could not be created.
    #[error("{manifest}: [[origin]] `{origin}` (kind `{kind}`): {error}")]
    Origin {
        /// The manifest file.
        manifest: PathBuf,
        /// The origin's name.
        origin: String,
        /// Its kind.
        kind: String,
        /// Why.
        error: Box<PluginsError>,
    },
}

/// The plugins of one directory.
#[derive(Debug, Default)]
pub struct Plugins {
    /// The directory.
    pub dir: PathBuf,
    /// What loaded, in file-name order.
    pub loaded: Vec<LoadedPlugin>,
    /// What did not.
    pub errors: Vec<LoadError>,
}

/// The default plugin directory: `$MUSEFS_PLUGIN_DIR`; else `lib/musefs` beside the
/// binary's `bin/` directory when it holds plugins (an installed musefs:
/// `/usr/local/bin/musefs` loads `/usr/local/lib/musefs/`); else the binary's own
/// directory, where cargo puts the plugin libraries it builds alongside it.
pub fn default_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("MUSEFS_PLUGIN_DIR").filter(|d| !d.is_empty()) {
        return PathBuf::from(d);
    }
    let bin_dir = std::env::current_exe()
        .ok()
        .and_then(|p| p.canonicalize().ok())
        .and_then(|p| p.parent().map(Path::to_owned))
        .unwrap_or_else(|| PathBuf::from("."));
    let installed = bin_dir.parent().map(|prefix| prefix.join("lib/musefs"));
    match installed {
        Some(lib) if bin_dir.file_name().is_some_and(|n| n == "bin") && has_plugins(&lib) => lib,
        _ => bin_dir,
    }
}

/// Where [`default_dir`] looks, in order, for messages ("no plugins loaded from ...").
pub fn default_dir_hint() -> String {
    "--plugin-dir, the manifest's `plugin_dir`, $MUSEFS_PLUGIN_DIR, PREFIX/lib/musefs beside \
     PREFIX/bin/musefs, then the binary's own directory"
        .to_owned()
}

fn has_plugins(dir: &Path) -> bool {
    std::fs::read_dir(dir)
        .is_ok_and(|mut d| d.any(|e| e.is_ok_and(|e| e.file_name().to_string_lossy().starts_with("libmusefs_"))))
}

fn load_one(path: &Path) -> Result<LoadedPlugin, String> {
    let header = abi_stable::library::lib_header_from_path(path).map_err(|e| {
        let text = e.to_string();
        if text.contains("symbol") || text.contains("undefined") || text.contains("Could not find") {
            format!("not a musefs plugin (no abi_stable root module): {}", text.lines().next().unwrap_or(""))
        } else {
            format!("cannot load: {}", text.trim())
        }
    })?;
    let abi_minor = abi_stable::sabi_types::VersionNumber::new(header.version_strings()).map_or(0, |v| v.minor);
    let incompatible = |e: abi_stable::library::LibraryError| {
        let full = e.to_string();
        tracing::debug!("plugin {}: full layout report:\n{full}", path.display());
        format!("incompatible with this musefs (plugin ABI generation {ABI_VERSION}): {}", summarize(&full))
    };
    let module = if abi_minor < ABI_MINOR {
        // A plugin of an older minor: checked against that minor's frozen shapes
        // (abi_stable's check wants a library's prefix types to have at least the
        // host's fields), then used through the current types, whose prefix metadata is
        // read at run time.
        match abi_minor {
            0 => header.ensure_layout::<musefs_plugin_api::compat::v2_0::PluginModRef>(),
            _ => header.ensure_layout::<musefs_plugin_api::compat::v2_1::PluginModRef>(),
        }
        .map_err(incompatible)?;
        // SAFETY: the layout was just checked equal to that minor's root module, and
        // later minors only append fields after `#[sabi(last_prefix_field)]` (and only
        // append methods, with default bodies, to the format vtable): every access the
        // host makes beyond the plugin's minor goes through prefix-type accessors that
        // consult the plugin's own field count at run time (`set_host()` is `None` for
        // 2.0, `check_options` and `same_audio` run their defaults).
        unsafe { header.init_root_module_with_unchecked_layout::<PluginModRef>() }.map_err(incompatible)?
    } else {
        header.init_root_module::<PluginModRef>().map_err(incompatible)?
    };
    let abi = module.abi_version();
    if abi != ABI_VERSION {
        return Err(format!(
            "built for plugin ABI version {abi}, this musefs speaks version {ABI_VERSION}: rebuild it"
        ));
    }
    let info = (module.info())();
    let name = info.name.to_string();
    // Since 2.1: the plugin's log lines reach our log, with its name.
    if let Some(set_host) = module.set_host() {
        set_host(host_into_ffi(PluginLog { plugin: name.clone() }));
    }
    Ok(LoadedPlugin {
        abi_minor,
        name: info.name.into_string(),
        version: info.version.into_string(),
        kinds: info.kinds,
        description: info.description.into_string(),
        abi_version: abi,
        path: path.to_owned(),
        module,
        options_warned: std::sync::Arc::default(),
    })
}

/// What a plugin logs, routed into `tracing` with the plugin's name.
struct PluginLog {
    plugin: String,
}

impl Host for PluginLog {
    fn log(&self, level: LogLevel, message: &str) {
        let p = &self.plugin;
        match level {
            LogLevel::ERROR => tracing::error!("plugin {p}: {message}"),
            LogLevel::WARN => tracing::warn!("plugin {p}: {message}"),
            LogLevel::DEBUG => tracing::debug!("plugin {p}: {message}"),
            LogLevel::TRACE => tracing::trace!("plugin {p}: {message}"),
            _ => tracing::info!("plugin {p}: {message}"),
        }
    }
}

impl LoadedPlugin {
    /// What this plugin lacks of the host's ABI minor (empty when it is current): the
    /// features the host reports as unsupported for it.
    pub fn unsupported(&self) -> Vec<&'static str> {
        let mut out = Vec::new();
        if self.abi_minor < 1 {
            out.push("host logging (messages go to stderr)");
            if self.kinds.contains(PluginKinds::FORMAT) {
                out.push("checking its [format] options when the manifest loads");
            }
        }
        if self.abi_minor < 2 && self.kinds.contains(PluginKinds::FORMAT) {
            out.push("its own audio comparison for saves through a writable mount (bytes are compared)");
        }
        out
    }
}

/// abi_stable's layout reports run to hundreds of lines; its verdict is the text after
/// the last `Error:`. Collapse that to one line (the full report is logged at debug).
fn summarize(report: &str) -> String {
    let tail = report.rsplit_once("Error:").map_or(report, |(_, t)| t);
    let line = tail.split_whitespace().collect::<Vec<_>>().join(" ");
    let line = if line.is_empty() { report.lines().next().unwrap_or("").to_owned() } else { line };
    let mut short: String = line.chars().take(300).collect();
    if short.len() < line.len() {
        short.push_str("...");
    }
    format!("type layout mismatch: {short} (run with -v for the full report)")
}

impl Plugins {
    /// Loads every `*.so` file in `dir`.
    ///
    /// # Errors
    /// [`PluginsError::Dir`] if the directory cannot be read; individual files that fail
    /// are collected in [`errors`](Self::errors).
    pub fn load_dir(dir: &Path) -> Result<Self, PluginsError> {
        let read = std::fs::read_dir(dir).map_err(|source| PluginsError::Dir { path: dir.to_owned(), source })?;
        let mut files: Vec<PathBuf> = read
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "so") && p.is_file())
            .collect();
        files.sort();
        let mut me = Self { dir: dir.to_owned(), ..Self::default() };
        for path in files {
            match load_one(&path) {
                Ok(p) => {
                    if let Some(first) = me.loaded.iter().find(|q| q.name == p.name) {
                        me.errors.push(LoadError {
                            path: path.clone(),
                            message: format!(
                                "a plugin named `{}` is already loaded from {}; this one is ignored",
                                p.name,
                                first.path.display()
                            ),
                        });
                    } else {
                        me.loaded.push(p);
                    }
                }
                Err(message) => me.errors.push(LoadError { path, message }),
            }
        }
        for e in &me.errors {
            tracing::warn!("{e}");
        }
        Ok(me)
    }

    fn find(&self, name: &str, kind: PluginKinds, what: &'static str) -> Result<&LoadedPlugin, PluginsError> {
        self.loaded.iter().find(|p| p.name == name && p.kinds.contains(kind)).ok_or_else(|| {
            let loaded: Vec<_> = self.loaded.iter().map(|p| format!("{} ({})", p.name, p.kinds.describe())).collect();
            let hint = if self.errors.is_empty() {
                String::new()
            } else {
                format!(
                    "; files that failed to load: {}",
                    self.errors.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")
                )
            };
            PluginsError::Missing {
                kind: what,
                name: name.to_owned(),
                dir: self.dir.display().to_string(),
                loaded: if loaded.is_empty() { "none".into() } else { loaded.join(", ") },
                hint,
            }
        })
    }

    /// Creates an origin with plugin `kind` from its JSON configuration.
    ///
    /// # Errors
    /// [`PluginsError::Missing`] or the plugin's own refusal.
    pub fn new_origin(&self, kind: &str, config_json: &str) -> Result<OriginBox, PluginsError> {
        let p = self.find(kind, PluginKinds::ORIGIN, "origin")?;
        (p.module.new_origin())(config_json.into()).into_result().map_err(|error| PluginsError::Factory {
            name: p.name.clone(),
            path: p.path.clone(),
            error,
        })
    }

    /// Creates every format plugin's format, `(plugin name, format)`.
    ///
    /// # Errors
    /// A plugin's refusal.
    pub fn formats(&self) -> Result<Vec<(String, FormatBox)>, PluginsError> {
        let mut out = Vec::new();
        for p in self.loaded.iter().filter(|p| p.kinds.contains(PluginKinds::FORMAT)) {
            let f = (p.module.new_format())("{}".into()).into_result().map_err(|error| PluginsError::Factory {
                name: p.name.clone(),
                path: p.path.clone(),
                error,
            })?;
            out.push((p.name.clone(), f));
        }
        Ok(out)
    }

    /// Checks the manifest's `[format.NAME]` options (`NAME` → JSON object) with each
    /// format plugin's own [`check_options`](musefs_plugin_api::Format::check_options),
    /// so a typo fails when the manifest is loaded, not at every open. A plugin built
    /// for ABI 2.0 cannot check: that is logged once and its options are checked when
    /// files are opened.
    ///
    /// # Errors
    /// [`PluginsError::Missing`] for a section naming no format plugin;
    /// [`PluginsError::Options`] with the plugin's message for a bad option.
    pub fn check_format_options(
        &self,
        options: &std::collections::HashMap<String, String>,
    ) -> Result<(), PluginsError> {
        let mut names: Vec<&String> = options.keys().collect();
        names.sort();
        for name in names {
            let p = self.find(name, PluginKinds::FORMAT, "format")?;
            let f = (p.module.new_format())("{}".into()).into_result().map_err(|error| PluginsError::Factory {
                name: p.name.clone(),
                path: p.path.clone(),
                error,
            })?;
            match f.check_options(options[name].as_str().into()).into_result() {
                Ok(()) => {}
                Err(e) if e.kind == musefs_plugin_api::ErrorKind::UNSUPPORTED => {
                    if p.options_warned.swap(true, std::sync::atomic::Ordering::Relaxed) {
                        continue;
                    }
                    tracing::warn!(
                    "plugin {name} (ABI {}.{}) cannot check its [format.{name}] options; they are checked when a file is opened",
                    p.abi_version,
                    p.abi_minor
                    );
                }
                Err(error) => return Err(PluginsError::Options { name: name.clone(), error }),
            }
        }
        Ok(())
    }

    /// Creates the origin of a manifest entry, behind the host's origin layer (retries
    /// of transient failures: see [`crate::origin_layer`]). Every origin the host serves
    /// or scans is created here.
    ///
    /// # Errors
    /// As for [`new_origin`](Self::new_origin).
    pub fn origin(&self, spec: &crate::manifest::OriginSpec) -> Result<OriginBox, PluginsError> {
        let origin = self.new_origin(&spec.kind, &spec.config_json).map_err(|e| PluginsError::Origin {
            manifest: spec.manifest.clone(),
            origin: spec.name.clone(),
            kind: spec.kind.clone(),
            error: Box::new(e),
        })?;
        let policy = crate::origin_layer::policy_of_config(&spec.config_json);
        Ok(crate::origin_layer::layered(&spec.name, origin, policy))
    }
}

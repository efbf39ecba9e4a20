//! The `musefs` command line.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use musefs_core::assemble;
use musefs_core::catalog::overlay::{ArtEdit, Edit};
use musefs_core::catalog::Catalog;
use musefs_core::manifest::Manifest;
use musefs_core::plugins::{self, Plugins};
use musefs_core::scanner;
use musefs_core::state;
use musefs_core::tree::load::{self as tree_load, SnapshotTarget, TreeSource};
use musefs_fuse::MountOptions;

mod cache;
mod helper;
mod progress;
mod tag;

/// musefs: a tag-driven, read-only view of your music library.
///
/// Scan origins (local directories, and remote stores through plugins) into a catalog,
/// then mount a tree rendered from tags by a template, e.g.
/// `Artist/Album/01 Title.flac`. The original files are never modified.
#[derive(Parser)]
#[command(name = "musefs", version, about, long_about)]
struct Cli {
    /// More log output (-v: what a command does, -vv: debug, -vvv: trace; `mount` logs
    /// what it does by default). RUST_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Args)]
struct Common {
    /// The manifest (TOML): origins, template(s), mode, state_dir. Default:
    /// $MUSEFS_MANIFEST, else $XDG_CONFIG_HOME/musefs/musefs.toml (~/.config/...), else
    /// /etc/musefs/musefs.toml, the first that exists.
    #[arg(long, short = 'm', value_name = "FILE")]
    manifest: Option<PathBuf>,
    /// Load plugins from DIR (default: the manifest's `plugin_dir`, else the directory
    /// of the musefs binary).
    #[arg(long, value_name = "DIR")]
    plugin_dir: Option<PathBuf>,
}

/// Whether an edit may name the whole library.
#[derive(clap::Args, Clone, Copy)]
struct Scope {
    /// Allow PATH to be the whole library (`/` or `""`); without it such an edit is refused.
    #[arg(long)]
    all: bool,
}

#[derive(Subcommand)]
enum Command {
    /// Scan the manifest's origins into the catalog (incremental: unchanged files are skipped).
    Scan {
        #[command(flatten)]
        common: Common,
        /// Worker threads (default: all cores).
        #[arg(long)]
        threads: Option<usize>,
        /// Remove however many files the origins lost since the last scan (by default a
        /// listing that lost more than `prune_limit` of an origin, or all of it, is
        /// treated as an unavailable origin and nothing is pruned).
        #[arg(long)]
        allow_prune: bool,
        /// Set the catalog aside (kept as `catalog.db.damaged-TIME`), rescan the origins
        /// into a new one and replay your edits from the edit journal: the recovery from
        /// a damaged or lost catalog.
        #[arg(long)]
        rebuild_catalog: bool,
        /// Print the summary as JSON (for scripts) instead.
        #[arg(long)]
        json: bool,
    },
    /// Mount the rendered tree read-only at MOUNTPOINT; serve until Ctrl-C, SIGTERM or unmount.
    Mount {
        #[command(flatten)]
        common: Common,
        /// Allow other users to access the mount (needs `user_allow_other` in /etc/fuse.conf unless root).
        #[arg(long)]
        allow_other: bool,
        /// Serve every read through musefs even where the kernel could pass local files through.
        #[arg(long)]
        no_kernel_passthrough: bool,
        /// Mount even if MOUNTPOINT is not empty (what is there is hidden while mounted).
        #[arg(long)]
        nonempty: bool,
        /// An existing, empty directory.
        mountpoint: PathBuf,
    },
    /// Ask the mount running on this manifest to sync its origins now (what SIGUSR1
    /// does); without a running mount, `musefs scan` is the command.
    Sync {
        #[command(flatten)]
        common: Common,
    },
    /// Show the state directory: its owner (a running mount or scan), readers, the
    /// catalog, the last sync of each origin, the chunk cache.
    Status {
        #[command(flatten)]
        common: Common,
        /// Print JSON (for scripts) instead.
        #[arg(long)]
        json: bool,
    },
    /// Print the rendered tree without mounting.
    Ls {
        #[command(flatten)]
        common: Common,
        /// Also print each file's origin and path.
        #[arg(long, short = 'l')]
        long: bool,
        /// Print JSON (for scripts): an array of {path, origin, origin_path, size}.
        #[arg(long)]
        json: bool,
    },
    /// Edit tags and art (an overlay in the catalog; the originals are never touched).
    ///
    /// PATH is a path in the mounted tree as `musefs ls` prints it (a directory means
    /// every file below it), ORIGIN:PATH, or a file under a local origin's root. A running
    /// mount shows the change within its `refresh_interval_ms`.
    Tag {
        #[command(subcommand)]
        command: TagCommand,
    },
    /// The chunk cache of remote origins: stats, prefetch, verify, clear.
    Cache {
        #[command(subcommand)]
        command: CacheCommand,
    },
    /// Inspect plugins.
    Plugins {
        #[command(subcommand)]
        command: PluginsCommand,
    },
    /// Print a shell completion script: `musefs completions bash > /etc/bash_completion.d/musefs`.
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Print the man page (musefs.1), or write one page per command into DIR.
    Manpage {
        /// Write musefs.1, musefs-scan.1, ... into this directory instead.
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum TagCommand {
    /// Print the tags and pictures a file serves (edited keys are marked).
    Show {
        #[command(flatten)]
        common: Common,
        /// Print JSON (the `export` format) instead.
        #[arg(long)]
        json: bool,
        path: String,
    },
    /// Replace the values of keys: `title="New Title" artist=A artist=B`.
    Set {
        #[command(flatten)]
        common: Common,
        #[command(flatten)]
        scope: Scope,
        path: String,
        /// KEY=VALUE, repeat a key for several values.
        #[arg(required = true)]
        assignments: Vec<String>,
    },
    /// Append values to keys: `genre=Jazz`.
    Add {
        #[command(flatten)]
        common: Common,
        #[command(flatten)]
        scope: Scope,
        path: String,
        #[arg(required = true)]
        assignments: Vec<String>,
    },
    /// Remove keys (`comment`) or single values (`artist=Beta`).
    Rm {
        #[command(flatten)]
        common: Common,
        #[command(flatten)]
        scope: Scope,
        path: String,
        #[arg(required = true)]
        keys: Vec<String>,
    },
    /// Back to the file's own tags: the given keys, or everything (tags and art).
    Reset {
        #[command(flatten)]
        common: Common,
        #[command(flatten)]
        scope: Scope,
        path: String,
        keys: Vec<String>,
    },
    /// Write the tags and pictures (base64) of the files under PATH as JSON (to stdout,
    /// or --output).
    Export {
        #[command(flatten)]
        common: Common,
        path: String,
        /// Write to FILE (`-`: standard output, the default).
        #[arg(long, short = 'o', value_name = "FILE")]
        output: Option<PathBuf>,
    },
    /// Apply a JSON document from `export`: each listed file's text tags become exactly
    /// its, and its pictures too where the document lists them.
    Import {
        #[command(flatten)]
        common: Common,
        /// The document (`-`: standard input).
        file: PathBuf,
    },
    /// Cover art.
    Art {
        #[command(subcommand)]
        command: ArtCommand,
    },
}

#[derive(Subcommand)]
enum ArtCommand {
    /// Set a picture (replacing pictures of its type) from a JPEG/PNG/GIF/WebP file.
    Set {
        #[command(flatten)]
        common: Common,
        #[command(flatten)]
        scope: Scope,
        path: String,
        image: PathBuf,
        /// Picture type (3 = front cover, 4 = back cover, ...).
        #[arg(long = "type", default_value_t = 3)]
        picture_type: u32,
        #[arg(long, default_value = "")]
        description: String,
    },
    /// Remove pictures (of one type, or all).
    Rm {
        #[command(flatten)]
        common: Common,
        #[command(flatten)]
        scope: Scope,
        path: String,
        #[arg(long = "type")]
        picture_type: Option<u32>,
    },
}

#[derive(Subcommand)]
enum CacheCommand {
    /// Chunks and bytes on disk, the budget, dedup, and how many files are fully cached.
    Stats {
        #[command(flatten)]
        common: Common,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Fetch files into the cache so they play offline: tree paths, ORIGIN:PATH, or
    /// tag queries KEY=VALUE (e.g. `album="Kind of Blue"`).
    Prefetch {
        #[command(flatten)]
        common: Common,
        /// Only the chunks holding headers and art (pinned: every file opens instantly).
        #[arg(long)]
        headers: bool,
        /// Files fetched at once (each file in order).
        #[arg(long, default_value_t = 4)]
        parallel: usize,
        /// What to fetch (default: everything).
        targets: Vec<String>,
    },
    /// Hash every chunk on disk; remove corrupt or unindexed ones (they are fetched again).
    Verify {
        #[command(flatten)]
        common: Common,
    },
    /// Remove every cached chunk and manifest.
    Clear {
        #[command(flatten)]
        common: Common,
    },
}

#[derive(Subcommand)]
enum PluginsCommand {
    /// List the plugins in a directory: name, kind, version, ABI version, path.
    List {
        /// The directory (default: the directory of the musefs binary).
        #[arg(long, value_name = "DIR")]
        plugin_dir: Option<PathBuf>,
        /// Print JSON (for scripts) instead.
        #[arg(long)]
        json: bool,
    },
}

impl Common {
    /// The manifest's path: `--manifest`, else the default locations.
    fn manifest(&self) -> Result<PathBuf> {
        match &self.manifest {
            Some(m) => Ok(m.clone()),
            None => default_manifest(),
        }
    }
}

/// The manifest when `--manifest` is not given: `$MUSEFS_MANIFEST`, else
/// `$XDG_CONFIG_HOME/musefs/musefs.toml` (`~/.config` when unset), else
/// `/etc/musefs/musefs.toml`, the first that exists.
fn default_manifest() -> Result<PathBuf> {
    if let Some(m) = std::env::var_os("MUSEFS_MANIFEST").filter(|m| !m.is_empty()) {
        return Ok(PathBuf::from(m));
    }
    let config = std::env::var_os("XDG_CONFIG_HOME")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")));
    let candidates: Vec<PathBuf> = config
        .map(|c| c.join("musefs/musefs.toml"))
        .into_iter()
        .chain(std::iter::once(PathBuf::from("/etc/musefs/musefs.toml")))
        .collect();
    if let Some(found) = candidates.iter().find(|c| c.is_file()) {
        return Ok(found.clone());
    }
    let looked: Vec<String> = candidates.iter().map(|c| c.display().to_string()).collect();
    anyhow::bail!("no manifest: give --manifest FILE, set MUSEFS_MANIFEST, or create one of: {}", looked.join(", "))
}

fn plugin_dir(cli: Option<&Path>, manifest: Option<&Manifest>) -> PathBuf {
    cli.map(Path::to_owned).or_else(|| manifest.and_then(|m| m.plugin_dir.clone())).unwrap_or_else(plugins::default_dir)
}

fn load(common: &Common) -> Result<(Manifest, Plugins)> {
    let manifest = Manifest::load(&common.manifest()?)?;
    let dir = plugin_dir(common.plugin_dir.as_deref(), Some(&manifest));
    let plugins = Plugins::load_dir(&dir)?;
    Ok((manifest, plugins))
}

/// The manifest of a command that attaches to the state directory as a reader.
fn reader_manifest(command: &Command) -> Option<PathBuf> {
    fn m(c: &Common) -> Option<PathBuf> {
        c.manifest().ok()
    }
    match command {
        Command::Ls { common, .. } | Command::Status { common, .. } => m(common),
        Command::Tag { command } => match command {
            TagCommand::Show { common, .. }
            | TagCommand::Set { common, .. }
            | TagCommand::Add { common, .. }
            | TagCommand::Rm { common, .. }
            | TagCommand::Reset { common, .. }
            | TagCommand::Export { common, .. }
            | TagCommand::Import { common, .. }
            | TagCommand::Art { command: ArtCommand::Set { common, .. } | ArtCommand::Rm { common, .. } } => m(common),
        },
        Command::Cache { command } => match command {
            CacheCommand::Stats { common, .. }
            | CacheCommand::Prefetch { common, .. }
            | CacheCommand::Verify { common }
            | CacheCommand::Clear { common } => m(common),
        },
        _ => None,
    }
}

/// Refuses a damaged catalog with the command that recovers it (`PRAGMA quick_check`,
/// at most 10 s: a larger catalog is checked only that far).
fn check_catalog(manifest: &Manifest) -> Result<()> {
    let hint = recovery_hint(manifest);
    let res = Catalog::open(&manifest.catalog_path()).and_then(|c| c.quick_check(std::time::Duration::from_secs(10)));
    match res {
        Ok(true) => Ok(()),
        Ok(false) => {
            tracing::info!("catalog check stopped after 10 s (a large catalog); not checked further");
            Ok(())
        }
        Err(e) if e.is_corruption() => anyhow::bail!("{e}\n{hint}"),
        Err(e) => Err(e.into()),
    }
}

/// How to recover a damaged catalog.
fn recovery_hint(manifest: &Manifest) -> String {
    format!(
        "Recover with: musefs scan --rebuild-catalog --manifest {} (rescans the origins into a new catalog and \
         replays your edits from the edit journal; the damaged file is kept beside it)",
        manifest.path.display()
    )
}

/// Whether `e` comes from a damaged catalog (whatever layer reported it).
fn is_catalog_damage(e: &anyhow::Error) -> bool {
    use musefs_core::assemble::BuildError;
    use musefs_core::catalog::CatalogError;
    let build = |b: &BuildError| matches!(b, BuildError::Catalog(c) if c.is_corruption());
    e.downcast_ref::<CatalogError>().is_some_and(CatalogError::is_corruption)
        || e.downcast_ref::<BuildError>().is_some_and(build)
        || e.downcast_ref::<musefs_fuse::MountError>()
            .is_some_and(|m| matches!(m, musefs_fuse::MountError::Build(b) if build(b)))
}

/// Moves the catalog (and its WAL) aside and drops the tree snapshot, for a rebuild.
fn set_catalog_aside(manifest: &Manifest) -> Result<()> {
    let db = manifest.catalog_path();
    let stamp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    for suffix in ["", "-wal", "-shm"] {
        let from = PathBuf::from(format!("{}{suffix}", db.display()));
        if from.exists() {
            let to = PathBuf::from(format!("{}.damaged-{stamp}{suffix}", db.display()));
            std::fs::rename(&from, &to).with_context(|| format!("moving {} aside", from.display()))?;
            if suffix.is_empty() {
                eprintln!("the old catalog is kept as {}", to.display());
            }
        }
    }
    match std::fs::remove_file(manifest.snapshot_path()) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(e).with_context(|| format!("removing {}", manifest.snapshot_path().display()))
        }
        _ => Ok(()),
    }
}

/// Takes ownership of the manifest's state directory (mount, scan).
fn own(manifest: &Manifest, mountpoint: Option<&Path>) -> Result<state::Owner> {
    let (owner, _) = state::StateDir::new(&manifest.state_dir).own(mountpoint)?;
    owner.start_heartbeat();
    Ok(owner)
}

/// Runs a command; `Ok(true)` when it did its work only in part (some files of a scan
/// could not be read, some plugins did not load): exit status 2.
fn run(cli: Cli) -> Result<bool> {
    let mut partial = false;
    // Read-only and editing commands attach beside a running owner.
    let _reader = match reader_manifest(&cli.command) {
        Some(path) => Some(state::StateDir::new(&Manifest::load(&path)?.state_dir).attach()?),
        None => None,
    };
    match cli.command {
        Command::Scan { common, threads, allow_prune, rebuild_catalog, json } => {
            let (manifest, plugins) = load(&common)?;
            let owner = own(&manifest, None)?;
            if rebuild_catalog {
                set_catalog_aside(&manifest)?;
            } else {
                check_catalog(&manifest)?;
            }
            let mut catalog = Catalog::open_for(&manifest)?;
            let mut opts = scanner::Options { progress: progress::bar(), allow_prune, ..scanner::Options::default() };
            if let Some(t) = threads {
                opts.threads = t.max(1);
            }
            let started = std::time::Instant::now();
            let summary = scanner::scan(&manifest, &plugins, &mut catalog, &opts)?;
            if json {
                let mut v = serde_json::to_value(&summary)?;
                v["seconds"] = serde_json::json!(started.elapsed().as_secs_f64());
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                println!("scan: {summary} in {:.2?}", started.elapsed());
                if !summary.refused.is_empty() {
                    println!(
                        "refused ({} file(s), each named in the log above):",
                        summary.refused.values().sum::<u64>()
                    );
                    print!("{}", summary.refusals());
                }
            }
            partial = summary.failed > 0;
            if rebuild_catalog {
                let journal = musefs_core::catalog::journal::journal_path(&manifest.catalog_path());
                let r = catalog.replay_journal(&journal)?;
                println!(
                    "rebuild: {} edit record(s) replayed from {} ({} file edit(s); {} for files no longer in their \
                     origin; {} unreadable line(s))",
                    r.records,
                    journal.display(),
                    r.files,
                    r.missing,
                    r.unreadable
                );
            }
            // The next mount starts from the tree snapshot instead of rendering the tree.
            tree_load::refresh_snapshot(&manifest, &catalog)?;
            catalog.checkpoint()?;
            drop(catalog);
            owner.release()?;
            if summary.failed_origins > 0 {
                anyhow::bail!("{} origin(s) could not be listed; see the errors above", summary.failed_origins);
            }
        }
        Command::Mount { common, allow_other, no_kernel_passthrough, nonempty, mountpoint } => {
            let (manifest, plugins) = load(&common)?;
            let abs = std::path::absolute(&mountpoint).unwrap_or_else(|_| mountpoint.clone());
            let owner = own(&manifest, Some(&abs))?;
            musefs_fuse::check_mountpoint(&mountpoint, nonempty)?;
            let mut access = manifest.access.clone();
            access.allow_other |= allow_other;
            musefs_fuse::check_allow_other(&access)?;

            let (core, source) = assemble::build_core_loaded(&manifest, &plugins).map_err(|e| {
                let e = anyhow::Error::from(e);
                if is_catalog_damage(&e) {
                    e.context(format!("the catalog is damaged. {}", recovery_hint(&manifest)))
                } else {
                    e
                }
            })?;
            let core = Arc::new(core);
            let snapshot = {
                let catalog = Catalog::open(&manifest.catalog_path())?;
                SnapshotTarget::of(&manifest, &catalog)?
            };
            let snapshot_saved = (source == TreeSource::Snapshot { applied: 0 }).then(|| core.position());
            // The catalog is checked beside the mount, once the core has opened (and, for
            // a new state dir, created) it: a full check of a large catalog takes seconds,
            // and the mount comes up from the snapshot meanwhile. A damaged catalog stops
            // the mount with the recovery command; anything else the check meets is only
            // logged. (Started before the core, its connection raced the core's creation
            // of a new catalog: "database is locked" while switching it to WAL.)
            let fatal = Arc::new(std::sync::Mutex::new(None));
            {
                let (m, slot) = (manifest.clone(), fatal.clone());
                std::thread::spawn(move || {
                    let budget = std::time::Duration::from_secs(10);
                    match Catalog::open(&m.catalog_path()).and_then(|c| c.quick_check(budget)) {
                        Ok(true) => {}
                        Ok(false) => tracing::info!("catalog check stopped after 10 s (a large catalog)"),
                        Err(e) if e.is_corruption() => {
                            *musefs_core::util::lock(&slot) = Some(format!("{e}\n{}", recovery_hint(&m)));
                        }
                        Err(e) => tracing::warn!("the catalog could not be checked: {e}"),
                    }
                });
            }
            if core.with_tree(|t| t.is_empty()) && manifest.sync_interval.is_none() {
                tracing::warn!("the catalog is empty: run `musefs scan --manifest {}` first", manifest.path.display());
            }
            let manifest = Arc::new(manifest);
            let syncer = (manifest.sync_interval.is_some() || manifest.watch)
                .then(|| musefs_core::sync::Syncer::start(manifest.clone(), Arc::new(plugins)));
            musefs_fuse::run(
                core,
                manifest.mode,
                &mountpoint,
                &MountOptions {
                    access,
                    no_kernel_passthrough,
                    nonempty,
                    refresh_interval: Some(manifest.refresh_interval),
                    snapshot: Some(snapshot),
                    snapshot_saved,
                    fatal,
                    metrics_addr: manifest.metrics_addr,
                    wake: Some(manifest.state_dir.join(musefs_core::wake::SOCKET)),
                },
                syncer,
            )?;
            // Orderly shutdown: the WAL folded into the database, ownership released.
            let catalog = Catalog::open(&manifest.catalog_path())?;
            if let Err(e) = catalog.checkpoint() {
                tracing::warn!("checkpointing the catalog: {e}");
            }
            drop(catalog);
            owner.release()?;
            tracing::info!("stopped cleanly");
        }
        Command::Sync { common } => {
            let manifest = Manifest::load(&common.manifest()?)?;
            let rec = state::StateDir::new(&manifest.state_dir).read_record()?;
            match rec {
                Some(r)
                    if r.state == state::OwnerState::Active
                        && !r.mountpoint.is_empty()
                        && musefs_core::sys::pid_alive(r.pid) =>
                {
                    musefs_core::sys::signal_usr1(r.pid)
                        .with_context(|| format!("signalling the mount (pid {})", r.pid))?;
                    println!("asked the mount at {} (pid {}) to sync now", r.mountpoint, r.pid);
                }
                _ => anyhow::bail!(
                    "no musefs mount is running on {} (state_dir {}): `musefs scan --manifest {}` syncs the catalog",
                    manifest.path.display(),
                    manifest.state_dir.display(),
                    manifest.path.display()
                ),
            }
        }
        Command::Status { common, json } => {
            let manifest = Manifest::load(&common.manifest()?)?;
            let status = musefs_core::status::gather(&manifest)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&status)?);
            } else {
                print!("{}", musefs_core::status::text(&status));
            }
        }
        Command::Ls { common, long, json } => {
            let manifest = Manifest::load(&common.manifest()?)?;
            let catalog = Catalog::open_for(&manifest)?;
            let tree = tree_load::build_tree(&manifest, &catalog)?;
            let mut out = std::io::BufWriter::new(std::io::stdout().lock());
            if json {
                use std::io::Write;
                let mut items = Vec::new();
                for (path, id) in tree.paths() {
                    let row = catalog.file(id)?.context("catalog changed while listing")?;
                    items.push(serde_json::json!({
                        "path": path, "origin": row.origin, "origin_path": row.path, "size": row.size,
                    }));
                }
                serde_json::to_writer_pretty(&mut out, &items)?;
                writeln!(out)?;
                return Ok(false);
            }
            for (path, id) in tree.paths() {
                use std::io::Write;
                if long {
                    let row = catalog.file(id)?.context("catalog changed while listing")?;
                    writeln!(out, "{path}\t{}:{}", row.origin, row.path)?;
                } else {
                    writeln!(out, "{path}")?;
                }
            }
        }
        Command::Tag { command } => tag(command)?,
        Command::Cache { command } => cache(command)?,
        Command::Plugins { command: PluginsCommand::List { plugin_dir: dir, json } } => {
            let dir = plugin_dir(dir.as_deref(), None);
            let p = Plugins::load_dir(&dir)?;
            if json {
                let plugins: Vec<serde_json::Value> = p
                    .loaded
                    .iter()
                    .map(|l| {
                        serde_json::json!({
                            "name": l.name, "kind": l.kinds.describe(), "version": l.version,
                            "abi": format!("{}.{}", l.abi_version, l.abi_minor), "path": l.path,
                            "description": l.description, "unsupported": l.unsupported(),
                        })
                    })
                    .collect();
                let errors: Vec<String> = p.errors.iter().map(ToString::to_string).collect();
                let doc = serde_json::json!({ "dir": dir, "plugins": plugins, "errors": errors });
                println!("{}", serde_json::to_string_pretty(&doc)?);
                return Ok(p.loaded.is_empty() || !p.errors.is_empty());
            }
            println!("{:<12} {:<14} {:<9} {:<4} PATH", "NAME", "KIND", "VERSION", "ABI");
            for l in &p.loaded {
                println!(
                    "{:<12} {:<14} {:<9} {:<4} {}",
                    l.name,
                    l.kinds.describe(),
                    l.version,
                    format!("{}.{}", l.abi_version, l.abi_minor),
                    l.path.display()
                );
            }
            for l in &p.loaded {
                let lacks = l.unsupported();
                if !lacks.is_empty() {
                    println!(
                        "note: {} was built for plugin ABI {}.{}; unsupported: {}",
                        l.name,
                        l.abi_version,
                        l.abi_minor,
                        lacks.join("; ")
                    );
                }
            }
            for e in &p.errors {
                println!("error: {e}");
            }
            if p.loaded.is_empty() {
                anyhow::bail!(
                    "no plugins loaded from {} (looked at, in order: {}; point elsewhere with --plugin-dir DIR)",
                    dir.display(),
                    plugins::default_dir_hint()
                );
            }
            partial = !p.errors.is_empty();
        }
        Command::Completions { shell } => {
            clap_complete::generate(
                shell,
                &mut <Cli as clap::CommandFactory>::command(),
                "musefs",
                &mut std::io::stdout(),
            );
        }
        Command::Manpage { dir } => {
            let cmd = <Cli as clap::CommandFactory>::command();
            match dir {
                Some(d) => {
                    std::fs::create_dir_all(&d).with_context(|| format!("creating {}", d.display()))?;
                    clap_mangen::generate_to(cmd, &d)
                        .with_context(|| format!("writing man pages into {}", d.display()))?;
                }
                None => clap_mangen::Man::new(cmd).render(&mut std::io::stdout())?,
            }
        }
    }
    Ok(partial)
}

fn cache(command: CacheCommand) -> Result<()> {
    match command {
        CacheCommand::Stats { common, json } => {
            let manifest = Manifest::load(&common.manifest()?)?;
            let cache = assemble::open_cache(&manifest)?;
            let s = cache.store().stats()?;
            if json {
                println!("{}", serde_json::to_string_pretty(&s)?);
            } else {
                let mib = |b: u64| b as f64 / 1048576.0;
                println!("directory:   {}", manifest.cache_dir().display());
                println!(
                    "chunks:      {} ({:.1} MiB of {:.1} MiB budget, {:.1} MiB pinned)",
                    s.chunks,
                    mib(s.bytes),
                    mib(s.max_size),
                    mib(s.pinned_bytes)
                );
                println!(
                    "files:       {} with cached chunks ({:.1} MiB of file data, dedup {:.2}x)",
                    s.files_with_chunks,
                    mib(s.logical_bytes),
                    if s.bytes == 0 { 1.0 } else { s.logical_bytes as f64 / s.bytes as f64 }
                );
                for (name, cached, total) in &s.per_origin {
                    println!("origin {name}: {cached} of {total} file(s) fully cached");
                }
            }
        }
        CacheCommand::Prefetch { common, headers, parallel, targets } => {
            let (manifest, plugins) = load(&common)?;
            let catalog = Catalog::open_for(&manifest)?;
            let cache = assemble::open_cache(&manifest)?;
            let mut ids = Vec::new();
            if targets.is_empty() {
                ids = catalog.find_files(None, "")?;
            }
            for t in &targets {
                ids.extend(cache::resolve(&manifest, &catalog, t)?);
            }
            ids.sort_unstable();
            ids.dedup();
            let bar = indicatif::ProgressBar::new(ids.len() as u64);
            if !std::io::IsTerminal::is_terminal(&std::io::stderr()) {
                bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
            }
            let started = std::time::Instant::now();
            let sum = cache::prefetch(&manifest, &plugins, &cache, &catalog, &ids, headers, parallel, |n, what| {
                bar.set_position(n);
                bar.set_message(what.to_owned());
            })?;
            bar.finish_and_clear();
            let secs = started.elapsed().as_secs_f64();
            println!(
                "prefetch: {} file(s) cached, {:.1} MiB fetched in {secs:.1} s ({:.1} MiB/s), {} local file(s) skipped",
                sum.files,
                sum.bytes as f64 / 1048576.0,
                sum.bytes as f64 / 1048576.0 / secs.max(1e-9),
                sum.local
            );
            for f in &sum.failed {
                eprintln!("failed: {f}");
            }
            if !sum.failed.is_empty() {
                anyhow::bail!("{} file(s) could not be fetched", sum.failed.len());
            }
        }
        CacheCommand::Verify { common } => {
            let manifest = Manifest::load(&common.manifest()?)?;
            let cache = assemble::open_cache(&manifest)?;
            let v = cache.store().verify(|_| {})?;
            for r in &v.corrupt {
                println!("corrupt, removed: {r}");
            }
            for r in &v.unindexed {
                println!("not indexed (left by an interrupted write), removed: {r}");
            }
            println!(
                "verify: {} chunk(s) checked, {} corrupt removed (fetched again when needed), {} unindexed removed",
                v.checked,
                v.corrupt.len(),
                v.unindexed.len()
            );
        }
        CacheCommand::Clear { common } => {
            let manifest = Manifest::load(&common.manifest()?)?;
            let cache = assemble::open_cache(&manifest)?;
            let freed = cache.store().clear()?;
            println!("clear: {:.1} MiB freed", freed as f64 / 1048576.0);
        }
    }
    Ok(())
}

fn open_for_tags(common: &Common) -> Result<(Manifest, Catalog)> {
    let manifest = Manifest::load(&common.manifest()?)?;
    let catalog = Catalog::open_for(&manifest)?;
    Ok((manifest, catalog))
}

/// The files an edit of `path` touches; the whole library only with `--all`.
fn edit_targets(manifest: &Manifest, catalog: &Catalog, path: &str, scope: Scope) -> Result<Vec<i64>> {
    if tag::names_whole_library(manifest, path) && !scope.all {
        anyhow::bail!("`{path}` names every file of the library; to edit them all, repeat the command with --all");
    }
    if manifest.mode == musefs_core::manifest::Mode::Passthrough {
        tracing::warn!(
            "{} is in passthrough mode: the edit changes names in the tree, but the files keep serving their \
             original tags (set mode = \"synthesis\" to serve edited tags)",
            manifest.path.display()
        );
    }
    Ok(tag::resolve(manifest, catalog, path)?)
}

fn edit(common: &Common, scope: Scope, path: &str, edits: Vec<Edit>) -> Result<()> {
    let (manifest, mut catalog) = open_for_tags(common)?;
    let ids = edit_targets(&manifest, &catalog, path, scope)?;
    catalog.apply_edits(&ids, &edits, &[])?;
    eprintln!("edited {} file(s)", ids.len());
    Ok(())
}

fn tag(command: TagCommand) -> Result<()> {
    match command {
        TagCommand::Show { common, json, path } => {
            let (manifest, catalog) = open_for_tags(&common)?;
            let ids = tag::resolve(&manifest, &catalog, &path)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&tag::export(&catalog, &ids)?)?);
            } else {
                for id in ids {
                    print!("{}", tag::show(&catalog, id)?);
                }
            }
        }
        TagCommand::Set { common, scope, path, assignments } => {
            let pairs = tag::parse_assignments(&assignments, false)?;
            edit(&common, scope, &path, tag::set_edits(&pairs, false))?;
        }
        TagCommand::Add { common, scope, path, assignments } => {
            let pairs = tag::parse_assignments(&assignments, false)?;
            edit(&common, scope, &path, tag::set_edits(&pairs, true))?;
        }
        TagCommand::Rm { common, scope, path, keys } => {
            let pairs = tag::parse_assignments(&keys, true)?;
            edit(&common, scope, &path, pairs.into_iter().map(|(key, value)| Edit::Remove { key, value }).collect())?;
        }
        TagCommand::Reset { common, scope, path, keys } => {
            let edits = if keys.is_empty() {
                vec![Edit::Reset { key: None }]
            } else {
                keys.into_iter().map(|k| Edit::Reset { key: Some(k) }).collect()
            };
            edit(&common, scope, &path, edits)?;
        }
        TagCommand::Export { common, path, output } => {
            let (manifest, catalog) = open_for_tags(&common)?;
            let ids = tag::resolve(&manifest, &catalog, &path)?;
            let text = serde_json::to_string_pretty(&tag::export(&catalog, &ids)?)?;
            match output {
                Some(o) if o.as_os_str() != "-" => {
                    std::fs::write(&o, text + "\n").with_context(|| format!("writing {}", o.display()))?;
                }
                _ => println!("{text}"),
            }
        }
        TagCommand::Import { common, file } => {
            let (_, mut catalog) = open_for_tags(&common)?;
            let text = if file.as_os_str() == "-" {
                std::io::read_to_string(std::io::stdin()).context("reading the document from standard input")?
            } else {
                std::fs::read_to_string(&file).with_context(|| format!("reading {}", file.display()))?
            };
            let file = if file.as_os_str() == "-" { PathBuf::from("(standard input)") } else { file };
            let doc: tag::Export =
                serde_json::from_str(&text).with_context(|| format!("{}: not a musefs tag export", file.display()))?;
            let n = tag::import(&mut catalog, &doc, &file.display().to_string())?;
            eprintln!("imported: {n} file(s) changed");
        }
        TagCommand::Art { command: ArtCommand::Set { common, scope, path, image, picture_type, description } } => {
            let (manifest, mut catalog) = open_for_tags(&common)?;
            let ids = edit_targets(&manifest, &catalog, &path, scope)?;
            let pic = tag::picture_from_file(&image, picture_type, &description)?;
            tag::edit_art(&mut catalog, &ids, ArtEdit::Set(pic))?;
            eprintln!("art set on {} file(s)", ids.len());
        }
        TagCommand::Art { command: ArtCommand::Rm { common, scope, path, picture_type } } => {
            let (manifest, mut catalog) = open_for_tags(&common)?;
            let ids = edit_targets(&manifest, &catalog, &path, scope)?;
            tag::edit_art(&mut catalog, &ids, ArtEdit::Remove(picture_type))?;
            eprintln!("art removed from {} file(s)", ids.len());
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    // `mount -t fuse.musefs MANIFEST MOUNTPOINT -o ...` runs `musefs MANIFEST MOUNTPOINT -o ...`.
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let Some((manifest, mountpoint, opts)) = helper::parse(&args) {
        return helper::run(&manifest, &mountpoint, &opts);
    }
    // A usage error exits with 1 like every other error (2 means "done in part").
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() { ExitCode::FAILURE } else { ExitCode::SUCCESS };
        }
    };
    // A mount is a service: it logs what it does. Every other command prints its result
    // on stdout and only warnings and errors on stderr; `-v` adds what it does (info),
    // `-vv` debug, `-vvv` trace.
    let levels = if matches!(cli.command, Command::Mount { .. }) {
        ["info", "debug", "trace", "trace"]
    } else {
        ["warn", "info", "debug", "trace"]
    };
    let default = levels[usize::from(cli.verbose).min(3)];
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(format!("{default},fuser=warn")));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .init();
    match run(cli) {
        Ok(false) => ExitCode::SUCCESS,
        Ok(true) => ExitCode::from(2),
        Err(e) => {
            eprintln!("musefs: error: {}", describe(&e));
            ExitCode::FAILURE
        }
    }
}

/// An error and its causes on one line, `a: b: c`, leaving out a cause whose text is
/// already there (an error that prints its source would otherwise say it twice).
fn describe(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if out.contains(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    out
}

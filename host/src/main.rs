//! The `musefs` command line.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use musefs::catalog::Catalog;
use musefs::manifest::Manifest;
use musefs::mount::{self, MountOptions};
use musefs::plugins::{self, Plugins};
use musefs::scanner;

/// musefs: a tag-driven, read-only view of your music library.
///
/// Scan origins (local directories, and remote stores through plugins) into a catalog,
/// then mount a tree rendered from tags by a template, e.g.
/// `Artist/Album/01 Title.flac`. The original files are never modified.
#[derive(Parser)]
#[command(name = "musefs", version, about, long_about)]
struct Cli {
    /// More log output (-v: debug, -vv: trace). RUST_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Args)]
struct Common {
    /// The manifest (TOML): origins, template(s), mode, state_dir.
    #[arg(long, short = 'm', value_name = "FILE")]
    manifest: PathBuf,
    /// Load plugins from DIR (default: the manifest's `plugin_dir`, else the directory
    /// of the musefs binary).
    #[arg(long, value_name = "DIR")]
    plugin_dir: Option<PathBuf>,
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
        /// An existing, empty directory.
        mountpoint: PathBuf,
    },
    /// Print the rendered tree without mounting.
    Ls {
        #[command(flatten)]
        common: Common,
        /// Also print each file's origin and path.
        #[arg(long, short = 'l')]
        long: bool,
    },
    /// Inspect plugins.
    Plugins {
        #[command(subcommand)]
        command: PluginsCommand,
    },
}

#[derive(Subcommand)]
enum PluginsCommand {
    /// List the plugins in a directory: name, kind, version, ABI version, path.
    List {
        /// The directory (default: the directory of the musefs binary).
        #[arg(long, value_name = "DIR")]
        plugin_dir: Option<PathBuf>,
    },
}

fn plugin_dir(cli: Option<&Path>, manifest: Option<&Manifest>) -> PathBuf {
    cli.map(Path::to_owned).or_else(|| manifest.and_then(|m| m.plugin_dir.clone())).unwrap_or_else(plugins::default_dir)
}

fn load(common: &Common) -> Result<(Manifest, Plugins)> {
    let manifest = Manifest::load(&common.manifest)?;
    let dir = plugin_dir(common.plugin_dir.as_deref(), Some(&manifest));
    let plugins = Plugins::load_dir(&dir)?;
    Ok((manifest, plugins))
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Scan { common, threads } => {
            let (manifest, plugins) = load(&common)?;
            let mut catalog = Catalog::open(&manifest.catalog_path())?;
            let mut opts = scanner::Options::default();
            if let Some(t) = threads {
                opts.threads = t.max(1);
            }
            let started = std::time::Instant::now();
            let summary = scanner::scan(&manifest, &plugins, &mut catalog, &opts)?;
            println!("scan: {summary} in {:.2?}", started.elapsed());
            if summary.failed_origins > 0 {
                anyhow::bail!("{} origin(s) could not be listed; see the errors above", summary.failed_origins);
            }
        }
        Command::Mount { common, allow_other, no_kernel_passthrough, mountpoint } => {
            let (manifest, plugins) = load(&common)?;
            mount::check_mountpoint(&mountpoint)?;
            let core = Arc::new(mount::build_core(&manifest, &plugins)?);
            if core.tree().is_empty() {
                tracing::warn!("the catalog is empty: run `musefs scan --manifest {}` first", manifest.path.display());
            }
            mount::run(core, manifest.mode, &mountpoint, &MountOptions { allow_other, no_kernel_passthrough })?;
        }
        Command::Ls { common, long } => {
            let manifest = Manifest::load(&common.manifest)?;
            let catalog = Catalog::open(&manifest.catalog_path())?;
            let tree = mount::build_tree(&manifest, &catalog)?;
            let mut out = std::io::BufWriter::new(std::io::stdout().lock());
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
        Command::Plugins { command: PluginsCommand::List { plugin_dir: dir } } => {
            let dir = plugin_dir(dir.as_deref(), None);
            let p = Plugins::load_dir(&dir)?;
            println!("{:<12} {:<14} {:<9} {:<4} PATH", "NAME", "KIND", "VERSION", "ABI");
            for l in &p.loaded {
                println!(
                    "{:<12} {:<14} {:<9} {:<4} {}",
                    l.name,
                    l.kinds.describe(),
                    l.version,
                    l.abi_version,
                    l.path.display()
                );
            }
            for e in &p.errors {
                println!("error: {e}");
            }
            if p.loaded.is_empty() {
                anyhow::bail!("no plugins loaded from {}", dir.display());
            }
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let default = match cli.verbose {
        0 => "info",
        1 => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(format!("{default},fuser=warn")));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .init();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("musefs: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

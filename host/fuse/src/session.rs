//! Mounting a serving core: the FUSE session, signals (SIGINT/SIGTERM/SIGHUP unmount,
//! SIGUSR1 syncs now), the refresh loop that applies catalog changes and tells the
//! kernel what to forget, and the periodic tree snapshot.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use std::ffi::OsStr;

use musefs_core::assemble::BuildError;
use musefs_core::manifest::{Access, Mode};
use musefs_core::serve::Core;
use musefs_core::sync::Syncer;
use musefs_core::tree::load::SnapshotTarget;
use musefs_core::tree::Inval;
use musefs_core::util::lock;

/// An error building or mounting.
#[derive(Debug, thiserror::Error)]
pub enum MountError {
    /// Assembling the serving core failed (catalog, plugins, chunk cache).
    #[error(transparent)]
    Build(#[from] BuildError),
    /// A check beside the mount found it must stop (see [`MountOptions::fatal`]).
    #[error("{0}")]
    Fatal(String),
    /// The mountpoint is unusable.
    #[error("mountpoint {path}: {message}")]
    Mountpoint {
        /// The mountpoint.
        path: String,
        /// What is wrong.
        message: String,
    },
    /// The metrics endpoint cannot listen (the message names `metrics_addr`).
    #[error("{0}")]
    Metrics(std::io::Error),
    /// FUSE refused.
    #[error("mounting at {path} failed: {source} (is fuse3 installed and /dev/fuse accessible?)")]
    Fuse {
        /// The mountpoint.
        path: String,
        /// The error.
        source: std::io::Error,
    },
}

/// Checks that `path` can be mounted on.
///
/// # Errors
/// [`MountError::Mountpoint`] saying what is wrong.
pub fn check_mountpoint(path: &Path, nonempty: bool) -> Result<(), MountError> {
    let err = |message: &str| MountError::Mountpoint { path: path.display().to_string(), message: message.to_owned() };
    let meta = std::fs::metadata(path).map_err(|e| err(&format!("{e} (create the directory first)")))?;
    if !meta.is_dir() {
        return Err(err("not a directory"));
    }
    // Mounting over files hides them (a typo'd mountpoint over a real directory);
    // asked for explicitly, it is allowed.
    if !nonempty && std::fs::read_dir(path).is_ok_and(|mut d| d.next().is_some()) {
        return Err(err("not empty: mounting would hide what is there (use --nonempty to mount over it anyway)"));
    }
    if let Ok(mounts) = std::fs::read_to_string("/proc/self/mounts") {
        let canon = path.canonicalize().unwrap_or_else(|_| path.to_owned());
        let escaped = canon.to_string_lossy().replace(' ', "\\040");
        if mounts.lines().any(|l| l.split(' ').nth(1) == Some(escaped.as_str()) && l.contains("fuse")) {
            return Err(err("a FUSE filesystem is already mounted there (unmount it with `fusermount3 -u`)"));
        }
    }
    Ok(())
}

/// Checks, before mounting, that `allow_other` can work: as root it always does; as
/// another user `/etc/fuse.conf` must have `user_allow_other`.
///
/// # Errors
/// [`MountError::Fatal`] saying what to change.
pub fn check_allow_other(access: &Access) -> Result<(), MountError> {
    if !access.allow_other || musefs_core::sys::user_ids().0 == 0 {
        return Ok(());
    }
    let conf = std::fs::read_to_string("/etc/fuse.conf").unwrap_or_default();
    if conf.lines().any(|l| l.trim() == "user_allow_other") {
        return Ok(());
    }
    Err(MountError::Fatal(
        "`allow_other` is set but /etc/fuse.conf does not allow it for users other than root: \
         add (or uncomment) the line `user_allow_other` there (as root), or mount as root"
            .into(),
    ))
}

/// Mount options.
#[derive(Debug, Clone, Default)]
pub struct MountOptions {
    /// Owner, modes, and whether other users may use the mount (`allow_other`).
    pub access: Access,
    /// Never use kernel passthrough (serve every read through the daemon).
    pub no_kernel_passthrough: bool,
    /// Mount over a directory that is not empty.
    pub nonempty: bool,
    /// How often to poll the catalog for changes (`None`: never).
    pub refresh_interval: Option<Duration>,
    /// Where to keep the tree snapshot (`None`: never write one).
    pub snapshot: Option<SnapshotTarget>,
    /// The position of the snapshot already on disk, if it matches the tree mounted.
    pub snapshot_saved: Option<i64>,
    /// A check running beside the mount writes a message here when the mount must not
    /// go on (a damaged catalog): the mount then stops and [`run`] returns
    /// [`MountError::Fatal`] with it.
    pub fatal: Arc<Mutex<Option<String>>>,
    /// Serve Prometheus metrics here while mounted (`metrics_addr`).
    pub metrics_addr: Option<std::net::SocketAddr>,
    /// Listen here for catalog writers' wake-ups (`state_dir/wake.sock`): their
    /// changes show at once rather than at the next poll.
    pub wake: Option<std::path::PathBuf>,
}

/// How often a mount rewrites its tree snapshot while the tree changes.
pub const SNAPSHOT_EVERY: Duration = Duration::from_secs(60);

/// Writes the snapshot if the tree moved since `saved`.
fn save_snapshot(core: &Core, target: Option<&SnapshotTarget>, saved: &mut Option<i64>) {
    let Some(target) = target else { return };
    if *saved == Some(core.position()) {
        return;
    }
    let started = Instant::now();
    match core.save_snapshot(target) {
        Ok(p) => {
            *saved = Some(p);
            tracing::debug!("tree snapshot written in {:.2?}", started.elapsed());
        }
        Err(e) => tracing::warn!("writing the tree snapshot {}: {e}", target.path.display()),
    }
}

/// Tells the kernel to forget stale entries and inodes (errors for entries it never
/// looked up are expected and ignored).
pub(crate) fn apply_invalidations(notifier: &fuser::Notifier, inval: &[Inval]) {
    // A directory whose entries changed: its cached listing (FOPEN_CACHE_DIR) goes too.
    let mut dirs: Vec<Inval> = inval
        .iter()
        .filter_map(|i| if let Inval::Entry { parent, .. } = i { Some(Inval::Inode(*parent)) } else { None })
        .collect();
    dirs.sort_by_key(|i| if let Inval::Inode(d) = i { *d } else { 0 });
    dirs.dedup();
    for i in inval.iter().chain(dirs.iter()) {
        let res = match i {
            Inval::Entry { parent, name } => notifier.inval_entry(fuser::INodeNo(*parent), OsStr::new(name)),
            Inval::Inode(ino) => notifier.inval_inode(fuser::INodeNo(*ino), 0, 0),
        };
        if let Err(e) = res {
            if e.raw_os_error() != Some(libc::ENOENT) {
                tracing::debug!("invalidating {i:?}: {e}");
            }
        }
    }
}

/// A mounted session, and the mountpoint when this process mounted it itself (as root).
struct Mounted {
    session: Option<fuser::BackgroundSession>,
    self_mounted: Option<std::path::PathBuf>,
}

impl Mounted {
    fn notifier(&self) -> fuser::Notifier {
        self.session.as_ref().expect("live session").notifier()
    }

    fn finished(&self) -> bool {
        self.session.as_ref().is_none_or(|s| s.guard.is_finished())
    }

    fn join(mut self) -> std::io::Result<()> {
        self.self_mounted = None;
        self.session.take().map_or(Ok(()), fuser::BackgroundSession::join)
    }

    fn umount_and_join(mut self) -> std::io::Result<()> {
        let session = self.session.take().expect("live session");
        match self.self_mounted.take() {
            Some(path) => match musefs_core::sys::unmount(&path, false) {
                // The kernel closes the connection once unmounted; the session thread ends.
                Ok(()) => session.join(),
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
                    // Files still open: detach the mount from the namespace now (nothing
                    // dead is left behind); the connection ends with this process.
                    musefs_core::sys::unmount(&path, true)?;
                    let deadline = Instant::now() + Duration::from_secs(2);
                    while !session.guard.is_finished() && Instant::now() < deadline {
                        std::thread::sleep(Duration::from_millis(20));
                    }
                    tracing::info!("unmounted lazily: files were still open");
                    Ok(())
                }
                Err(e) => Err(e),
            },
            None => session.umount_and_join(),
        }
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        // Unwinding with the mount up: never leave a dead mount behind.
        if let Some(path) = self.self_mounted.take() {
            let _ = musefs_core::sys::unmount(&path, true);
        }
    }
}

/// Mounts `fs`. As root, musefs mounts itself, as filesystem type `fuse.musefs` (what
/// `/proc/mounts`, `df -t` and `mount -t` see; fuser's own mount would say `fuse`);
/// as another user, through `fusermount3`, which names the type the same way.
fn mount(
    fs: crate::fs::MuseFs,
    mountpoint: &Path,
    cfg: &fuser::Config,
    access: &Access,
    writable: bool,
) -> std::io::Result<Mounted> {
    use std::os::fd::{AsRawFd, OwnedFd};
    use std::os::unix::fs::MetadataExt;
    if musefs_core::sys::user_ids().0 != 0 {
        let session = fuser::spawn_mount(fs, mountpoint, cfg)?;
        return Ok(Mounted { session: Some(session), self_mounted: None });
    }
    let dev = std::fs::OpenOptions::new().read(true).write(true).open("/dev/fuse")?;
    let rootmode = std::fs::metadata(mountpoint)?.mode() & libc::S_IFMT;
    let (uid, gid) = musefs_core::sys::user_ids();
    let mut data =
        format!("fd={},rootmode={rootmode:o},user_id={uid},group_id={gid},default_permissions", dev.as_raw_fd());
    if access.allow_other {
        data.push_str(",allow_other");
    }
    let mut flags = libc::MS_NOSUID | libc::MS_NODEV;
    if !writable {
        flags |= libc::MS_RDONLY;
    }
    musefs_core::sys::mount_fuse("musefs", mountpoint, "fuse.musefs", flags, &data)?;
    let path = std::path::absolute(mountpoint).unwrap_or_else(|_| mountpoint.to_owned());
    let mut mounted = Mounted { session: None, self_mounted: Some(path) };
    let session = fuser::Session::from_fd(fs, OwnedFd::from(dev), cfg.acl, cfg.clone())?;
    mounted.session = Some(session.spawn()?);
    Ok(mounted)
}

/// Mounts `core` at `mountpoint` and serves until SIGINT/SIGTERM or an external unmount.
///
/// # Errors
/// Mountpoint and FUSE errors.
pub fn run(
    core: Arc<Core>,
    mode: Mode,
    mountpoint: &Path,
    opts: &MountOptions,
    syncer: Option<Syncer>,
) -> Result<(), MountError> {
    check_mountpoint(mountpoint, opts.nonempty)?;
    // Listening first: a port in use fails before anything is mounted.
    let _metrics = opts.metrics_addr.map(musefs_core::metrics::serve).transpose().map_err(MountError::Metrics)?;
    let source: Arc<dyn musefs_core::metrics::Source> = core.clone();
    musefs_core::metrics::global().attach(Arc::downgrade(&source));
    let stop = Arc::new(AtomicBool::new(false));
    // SIGHUP (the SSH session that started a foreground mount closed) unmounts cleanly
    // too, instead of killing the process and leaving a dead mount.
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM, signal_hook::consts::SIGHUP] {
        // A second signal while shutting down exits at once.
        signal_hook::flag::register_conditional_shutdown(sig, 1, stop.clone()).ok();
        signal_hook::flag::register(sig, stop.clone()).ok();
    }
    // SIGUSR1: sync every origin now.
    let sync_now = Arc::new(AtomicBool::new(false));
    signal_hook::flag::register(signal_hook::consts::SIGUSR1, sync_now.clone()).ok();
    let mut cfg = fuser::Config::default();
    let writable = core.writable();
    cfg.mount_options = vec![
        if writable { fuser::MountOption::RW } else { fuser::MountOption::RO },
        fuser::MountOption::FSName("musefs".into()),
        fuser::MountOption::Subtype("musefs".into()),
        fuser::MountOption::NoDev,
        fuser::MountOption::NoSuid,
    ];
    if opts.access.allow_other {
        cfg.acl = fuser::SessionACL::All;
    }
    // The kernel checks the modes (other users read what `file_mode` lets them).
    cfg.mount_options.push(fuser::MountOption::DefaultPermissions);
    cfg.n_threads = Some(std::thread::available_parallelism().map_or(2, |n| n.get()).max(2) * 2);
    let passthrough = mode == Mode::Passthrough && !opts.no_kernel_passthrough;
    let fs = crate::fs::MuseFs::new(core.clone(), passthrough, &opts.access);
    let fs_notifier = fs.notifier_slot();
    let session = mount(fs, mountpoint, &cfg, &opts.access, writable)
        .map_err(|source| MountError::Fuse { path: mountpoint.display().to_string(), source })?;
    let _ = fs_notifier.set(session.notifier());
    tracing::info!("mounted at {} ({:?} mode); Ctrl-C or `fusermount3 -u` to unmount", mountpoint.display(), mode);
    let notifier = session.notifier();
    let mut next_refresh = Instant::now();
    // A tree rendered at mount is saved at once, so the next mount loads it.
    let mut saved = opts.snapshot_saved;
    save_snapshot(&core, opts.snapshot.as_ref(), &mut saved);
    let mut next_save = Instant::now() + SNAPSHOT_EVERY;
    let mut fatal = None;
    // systemd (`Type=notify`): ready once the mount is up; a watchdog ping when the unit
    // asks for one; a status line after each sync that changed something.
    let sd = crate::notify::Notifier::from_env();
    let files = |core: &Core| core.totals().0;
    sd.notify(&format!("READY=1\nSTATUS=serving {} files at {}", files(&core), mountpoint.display()));
    let mut next_ping = Instant::now();
    let wake = opts.wake.as_deref().and_then(|p| match musefs_core::wake::Listener::bind(p) {
        Ok(l) => Some(l),
        Err(e) => {
            tracing::info!(
                "catalog changes show at the next poll (every {:?}): cannot listen at {}: {e}",
                opts.refresh_interval.unwrap_or_default(),
                p.display()
            );
            None
        }
    });
    let mut woken = false;
    while !stop.load(Ordering::Relaxed) && !session.finished() {
        if let Some(msg) = lock(&opts.fatal).take() {
            tracing::error!("{msg}");
            fatal = Some(msg);
            break;
        }
        if Instant::now() >= next_save {
            next_save = Instant::now() + SNAPSHOT_EVERY;
            save_snapshot(&core, opts.snapshot.as_ref(), &mut saved);
        }
        if sync_now.swap(false, Ordering::Relaxed) {
            match &syncer {
                Some(s) => s.sync_now(),
                None => tracing::info!("SIGUSR1: background sync is off (sync_interval = \"off\", watch = false)"),
            }
        }
        if syncer.as_ref().is_some_and(Syncer::take_changed) {
            next_refresh = Instant::now(); // a sync just wrote: show it now, not at the next poll
            let t = musefs_core::util::now_secs();
            let (h, m, sec) = (t / 3600 % 24, t / 60 % 60, t % 60);
            sd.notify(&format!(
                "STATUS=serving {} files; last sync changed the catalog at {h:02}:{m:02}:{sec:02} UTC",
                files(&core)
            ));
        }
        if let Some(every) = sd.watchdog {
            if Instant::now() >= next_ping {
                sd.notify("WATCHDOG=1");
                next_ping = Instant::now() + every;
            }
        }
        // An open that brought the tree forward owes the kernel its invalidations now,
        // polling or not.
        let polled = opts.refresh_interval.is_some_and(|_| Instant::now() >= next_refresh);
        if polled || woken || core.has_pending() {
            woken = false;
            if let Some(every) = opts.refresh_interval {
                next_refresh = Instant::now() + every;
            }
            match core.refresh() {
                Ok(inval) => {
                    apply_invalidations(&notifier, &inval);
                    core.invalidated(&inval);
                }
                Err(e) => tracing::warn!("refreshing from the catalog: {e}"),
            }
        }
        // Signals and the other checks are looked at every 50 ms; a catalog writer's
        // wake-up ends the wait at once.
        let tick = Duration::from_millis(50).min(opts.refresh_interval.unwrap_or(Duration::MAX));
        match &wake {
            Some(l) => woken = l.wait(tick),
            None => std::thread::sleep(tick),
        }
    }
    sd.notify("STOPPING=1");
    // Orderly shutdown: stop syncing first (a sync in progress stops between files),
    // then unmount (reads in flight finish; each is bounded by the read timeout).
    if let Some(s) = syncer {
        s.stop(Duration::from_secs(10));
    }
    if session.finished() {
        tracing::info!("unmounted externally");
        let _ = session.join();
    } else {
        tracing::info!("signal received: unmounting");
        if let Err(e) = session.umount_and_join() {
            tracing::warn!("unmount: {e}");
        }
    }
    // The last sync's changes into the tree, then the tree into the snapshot.
    if opts.refresh_interval.is_some() {
        if let Err(e) = core.refresh() {
            tracing::warn!("refreshing from the catalog: {e}");
        }
    }
    save_snapshot(&core, opts.snapshot.as_ref(), &mut saved);
    if let Some(cache) = core.cache() {
        cache.flush();
        tracing::info!("chunk cache: {}", cache.counters.summary());
    }
    match fatal {
        Some(msg) => Err(MountError::Fatal(msg)),
        None => Ok(()),
    }
}

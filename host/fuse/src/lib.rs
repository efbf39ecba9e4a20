//! # musefs-fuse
//!
//! The FUSE adapter of musefs, kept thin: [`fs::MuseFs`] translates kernel requests into
//! calls on the serving core ([`musefs_core::serve::Core`]) and errors into `errno`s;
//! [`session`] mounts it, handles signals, applies catalog changes to the tree and tells
//! the kernel what to forget. Everything a read means (plans, stamps, the chunk cache)
//! lives in `musefs-core`, where it is tested without a mount.
//!
//! Layers: `musefs` (the binary) → `musefs-fuse` (this crate) → `musefs-core`.

pub mod fs;
pub mod session;

pub mod notify;
pub use session::{check_allow_other, check_mountpoint, run, MountError, MountOptions};

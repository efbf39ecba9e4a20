//! # musefs-core
//!
//! The core of musefs: everything between the manifest and a served byte, with no FUSE
//! and no command line in it. The FUSE adapter (`musefs-fuse`) and the `musefs` binary
//! sit on top of this crate; this crate depends on neither (the compiler enforces it:
//! neither is a dependency here).
//!
//! ## Layers
//!
//! Modules form one-way layers: a module uses only modules of the layers *below* it.
//! The test `layers::modules_only_use_lower_layers` reads every source file and fails on
//! an upward `crate::` reference, so a cycle cannot creep back in.
//!
//! ```text
//!  9  assemble                      manifest + plugins -> a serving Core (the top)
//!  8  serve                         open -> plan once -> splice on read
//!  7  sync   status                 background delta sync; the status report
//!  6  scanner                       origins -> catalog
//!  5  state  plugins                state-dir ownership; loading plugins over the ABI
//!  4  cache  origin_layer           content-addressed chunk cache (index SQL in catalog);
//!     overlay                       the host's retry layer around every origin; the
//!                                  copy-on-write image of a file being written
//!  3  tree                          the rendered tree, its snapshot, loading it
//!  2  catalog                       all SQL: files, tags, overlay, change log, chunk index
//!  1  manifest  metrics             the TOML manifest; process metrics (Prometheus)
//!  0  util  sys  template          clocks, InoMap, the lock helpers, libc calls; the
//!     progress  image  wake         template language; the progress trait the binary
//!                                  draws; cover image checks; the mount's wake-up socket
//! ```
//!
//! ## Error policy
//! Library modules return `thiserror` enums that name the file, key or path concerned;
//! only the binary uses `anyhow`. On the read path any doubt (a changed original, a plan
//! that disagrees with the announced size, a short read) is an error (`EIO` at the FUSE
//! edge), logged once with the file's name; wrong bytes are never served. Progress of
//! long operations is reported through [`progress::Progress`], which the binary draws.

pub mod assemble;
pub mod cache;
pub mod catalog;
pub mod image;
pub mod manifest;
pub mod metrics;
pub mod origin_layer;
pub mod overlay;
pub mod plugins;
pub mod progress;
pub mod scanner;
pub mod serve;
pub mod state;
pub mod status;
pub mod sync;
pub mod sys;
pub mod template;
pub mod tree;
pub mod util;
pub mod wake;

#[cfg(test)]
mod layers;

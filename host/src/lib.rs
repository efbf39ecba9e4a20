//! # musefs
//!
//! A read-only FUSE filesystem that shows a music library as a tag-driven tree without
//! modifying the original files.
//!
//! The pieces, in the order data flows:
//! - [`manifest`]: the TOML manifest (origins, templates, mode, state directory);
//! - [`plugins`]: loading origin and format plugins through the stable ABI of
//!   `musefs-plugin-api`;
//! - [`scanner`] into the [`catalog`] (SQLite): tags, pictures, audio properties and the
//!   byte range of the audio of every file;
//! - [`template`] and [`tree`]: the virtual tree rendered from the catalog;
//! - [`serve`]: the serving core (open → plan once → splice on read), with no FUSE in it;
//! - [`fuse`]: the thin FUSE adapter; [`mount`]: mounting and clean shutdown.
//!
//! ## Error policy
//! Library modules return `thiserror` enums that name the file, key or path concerned;
//! only the binary uses `anyhow`. On the read path any doubt (a changed original, a plan
//! that disagrees with the announced size, a short read) is an error (`EIO`), logged once
//! with the file's name; wrong bytes are never served.

pub mod cache;
pub mod cachecmd;
pub mod catalog;
pub mod fuse;
pub mod manifest;
pub mod mount;
pub mod plugins;
pub mod scanner;
pub mod serve;
pub mod state;
pub mod status;
pub mod sync;
pub mod tagcmd;
pub mod template;
pub mod tree;

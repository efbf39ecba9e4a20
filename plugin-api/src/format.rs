//! Formats: how to read tags and lay out a served file for one audio container.
#![allow(unsafe_code, reason = "FFI: `#[sabi_trait]` expands to the unsafe vtable glue of the plugin boundary")]

use std::io;

use abi_stable::{
    sabi_trait,
    sabi_trait::prelude::TD_Opaque,
    std_types::{RBox, RResult, RSlice, RSliceMut, RStr, RString, RVec},
};

use crate::error::{ErrorKind, PluginError, PluginResult};
use crate::guard::{guard, guard_or};
use crate::origin::HandleBox;
use crate::types::{CallCtx, Plan, PlanRequest, TrackInfo};

/// The FFI-safe format trait object (see [`Format`] for the meaning of each method).
#[sabi_trait]
pub trait FfiFormat: Send + Sync {
    /// See [`Format::extensions`].
    fn extensions(&self) -> RVec<RString>;
    /// See [`Format::probe`].
    fn probe(&self, head: RSlice<'_, u8>, extension: RStr<'_>) -> u32;
    /// See [`Format::read`].
    fn read(&self, ctx: &CallCtx, file: &HandleBox) -> RResult<TrackInfo, PluginError>;
    /// See [`Format::plan`].
    #[sabi(last_prefix_field)]
    fn plan(&self, ctx: &CallCtx, file: &HandleBox, req: &PlanRequest) -> RResult<Plan, PluginError>;
    // abi-since 2.1 {
    /// Since 2.1: see [`Format::check_options`]. The default body is what a host gets
    /// from a plugin built for 2.0: [`UNSUPPORTED`](ErrorKind::UNSUPPORTED).
    fn check_options(&self, options: RStr<'_>) -> RResult<(), PluginError> {
        let _ = options;
        RResult::RErr(PluginError::unsupported("this plugin was built for plugin ABI 2.0: it cannot check its options"))
    }
    // abi-since 2.1 }
    // abi-since 2.2 {
    /// Since 2.2: see [`Format::same_audio`]. The default body is what a host gets from
    /// a plugin built before 2.2: [`UNSUPPORTED`](ErrorKind::UNSUPPORTED) (the host then
    /// compares the audio bytes itself).
    fn same_audio(
        &self,
        ctx: &CallCtx,
        a: &HandleBox,
        a_info: &TrackInfo,
        b: &HandleBox,
        b_info: &TrackInfo,
    ) -> RResult<bool, PluginError> {
        let _ = (ctx, a, a_info, b, b_info);
        RResult::RErr(PluginError::unsupported("this plugin was built before plugin ABI 2.2: it cannot compare audio"))
    }
    // abi-since 2.2 }
}

/// A boxed format as it crosses the boundary.
pub type FormatBox = FfiFormat_TO<'static, RBox<()>>;

/// How many head bytes the host passes to [`Format::probe`] (fewer if the file is shorter).
pub const PROBE_HEAD_LEN: usize = 64 * 1024;

/// A format plugin: recognises files, reads their tags, lays out served files.
pub trait Format: Send + Sync + 'static {
    /// The lower-case file extensions (without dot) this format claims; the scanner only
    /// considers files with one of these.
    fn extensions(&self) -> Vec<String>;

    /// How sure this format is that the file is its own, from the first bytes
    /// ([`PROBE_HEAD_LEN`] at most) and the lower-case extension: 0 (no) to 100 (certain).
    fn probe(&self, head: &[u8], extension: &str) -> u32;

    /// Reads tags, pictures, audio properties and the exact audio byte range.
    ///
    /// Reads only what it needs (the head, and the tail where trailers live), never the
    /// whole file.
    ///
    /// # Errors
    /// [`INVALID_DATA`](crate::ErrorKind::INVALID_DATA) for corrupt, truncated or foreign
    /// files, with a message saying what is wrong; transport errors from the origin.
    fn read(&self, src: &Source) -> PluginResult<TrackInfo>;

    /// The layout of the served file in synthesis mode, computed once per open: literal
    /// segments (the header built from `req.tags` and `req.pictures`) and ranges of the
    /// original (the audio). Passthrough requests never reach it: the export adapter
    /// answers them with [`Plan::passthrough`]. The default serves the original bytes
    /// unchanged (a format without synthesis).
    ///
    /// # Errors
    /// As for [`read`](Format::read).
    fn plan(&self, src: &Source, req: &PlanRequest) -> PluginResult<Plan> {
        let _ = req;
        Ok(Plan::passthrough(src.len()))
    }
    // abi-since 2.1 {

    /// Checks the manifest's `[format.NAME]` options (a JSON object, `{}` when there are
    /// none) when the manifest is loaded, so a typo is an error at once rather than a
    /// failure of every open later. The same options then arrive in every
    /// [`PlanRequest`]. The default accepts only no options.
    ///
    /// # Errors
    /// [`INVALID_INPUT`](crate::ErrorKind::INVALID_INPUT) naming the bad option.
    fn check_options(&self, options: &str) -> PluginResult<()> {
        let t = options.trim();
        if t.is_empty() || t.trim_start_matches('{').trim_end_matches('}').trim().is_empty() {
            return Ok(());
        }
        Err(PluginError::invalid_input(format!("this format takes no options (got {t})")))
    }
    // abi-since 2.1 }
    // abi-since 2.2 {

    /// Whether `a` and `b` (each with what [`read`](Format::read) found in it) hold the
    /// same audio: what the host asks before it takes a file a tag editor saved through
    /// a writable mount as a tag edit of the original (`a` is the original, `b` the
    /// saved file). Only tags and pictures may differ. The default compares the two
    /// audio byte ranges ([`same_audio_bytes`]); a container whose editors rewrite
    /// bytes inside the audio range without changing the audio (Ogg renumbers its pages
    /// after a grown header) compares what the audio is.
    ///
    /// # Errors
    /// Read errors of either file.
    fn same_audio(&self, a: &Source, a_info: &TrackInfo, b: &Source, b_info: &TrackInfo) -> PluginResult<bool> {
        same_audio_bytes(a, a_info, b, b_info)
    }
    // abi-since 2.2 }
}

// abi-since 2.2 {
/// Whether the audio byte ranges of `a` and `b` (`audio_offset`, `audio_len` of their
/// infos) are equal, read a megabyte at a time: [`Format::same_audio`]'s default.
///
/// # Errors
/// Read errors of either file.
pub fn same_audio_bytes(a: &Source, a_info: &TrackInfo, b: &Source, b_info: &TrackInfo) -> PluginResult<bool> {
    const CHUNK: usize = 1 << 20;
    if a_info.audio_len != b_info.audio_len {
        return Ok(false);
    }
    let len = a_info.audio_len;
    let (mut x, mut y) = (vec![0u8; CHUNK], vec![0u8; CHUNK]);
    let mut pos = 0u64;
    while pos < len {
        let n = CHUNK.min((len - pos) as usize);
        a.read_exact_at(a_info.audio_offset + pos, &mut x[..n])?;
        b.read_exact_at(b_info.audio_offset + pos, &mut y[..n])?;
        if x[..n] != y[..n] {
            return Ok(false);
        }
        pos += n as u64;
    }
    Ok(true)
}
// abi-since 2.2 }

/// Wraps a Rust [`Format`] into its FFI form. Used by [`export_plugin!`](crate::export_plugin).
pub fn format_into_ffi<T: Format>(format: T) -> FormatBox {
    FfiFormat_TO::from_value(FormatAdapter(format), TD_Opaque)
}

struct FormatAdapter<T>(T);

impl<T: Format> FfiFormat for FormatAdapter<T> {
    fn extensions(&self) -> RVec<RString> {
        guard_or("Format::extensions", RVec::new(), || self.0.extensions().into_iter().map(RString::from).collect())
    }

    fn probe(&self, head: RSlice<'_, u8>, extension: RStr<'_>) -> u32 {
        guard_or("Format::probe", 0, || self.0.probe(head.as_slice(), extension.as_str()).min(100))
    }

    fn read(&self, ctx: &CallCtx, file: &HandleBox) -> RResult<TrackInfo, PluginError> {
        guard(|| self.0.read(&Source::new(file.clone(), ctx.clone())))
    }

    fn plan(&self, ctx: &CallCtx, file: &HandleBox, req: &PlanRequest) -> RResult<Plan, PluginError> {
        if req.mode == crate::types::PlanMode::PASSTHROUGH {
            return RResult::ROk(Plan::passthrough(file.len()));
        }
        guard(|| self.0.plan(&Source::new(file.clone(), ctx.clone()), req))
    }
    // abi-since 2.1 {

    fn check_options(&self, options: RStr<'_>) -> RResult<(), PluginError> {
        guard(|| self.0.check_options(options.as_str()))
    }
    // abi-since 2.1 }
    // abi-since 2.2 {

    fn same_audio(
        &self,
        ctx: &CallCtx,
        a: &HandleBox,
        a_info: &TrackInfo,
        b: &HandleBox,
        b_info: &TrackInfo,
    ) -> RResult<bool, PluginError> {
        guard(|| {
            let (a, b) = (Source::new(a.clone(), ctx.clone()), Source::new(b.clone(), ctx.clone()));
            self.0.same_audio(&a, a_info, &b, b_info)
        })
    }
    // abi-since 2.2 }
}

/// A file as a format plugin sees it: random-access reads with the call's context.
///
/// Cloning is cheap (the handle is shared).
#[derive(Clone)]
pub struct Source {
    handle: HandleBox,
    ctx: CallCtx,
    len: u64,
}

impl Source {
    /// Wraps an FFI handle with the context its reads will use.
    pub fn new(handle: HandleBox, ctx: CallCtx) -> Self {
        let len = handle.len();
        Self { handle, ctx, len }
    }

    /// The file's length.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether the file is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The context reads use.
    pub fn ctx(&self) -> &CallCtx {
        &self.ctx
    }

    /// The underlying handle.
    pub fn handle(&self) -> &HandleBox {
        &self.handle
    }

    /// One read of up to `buf.len()` bytes at `offset` (short reads possible).
    ///
    /// # Errors
    /// The origin's error.
    pub fn read_at(&self, offset: u64, buf: &mut [u8]) -> PluginResult<usize> {
        self.handle.read_at(&self.ctx, offset, RSliceMut::from_mut_slice(buf)).into_result()
    }

    /// Fills `buf` from `offset`.
    ///
    /// # Errors
    /// [`UNEXPECTED_EOF`](ErrorKind::UNEXPECTED_EOF) if the file ends first; the origin's error.
    pub fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> PluginResult<()> {
        let mut done = 0;
        while done < buf.len() {
            let n = self.read_at(offset + done as u64, &mut buf[done..])?;
            if n == 0 {
                return Err(PluginError::new(
                    ErrorKind::UNEXPECTED_EOF,
                    format!(
                        "file ends at byte {} but {} bytes were needed at offset {offset}",
                        offset + done as u64,
                        buf.len()
                    ),
                ));
            }
            done += n;
        }
        Ok(())
    }

    /// Up to `len` bytes from `offset`, fewer only where the file ends.
    ///
    /// # Errors
    /// The origin's error.
    pub fn read_vec(&self, offset: u64, len: usize) -> PluginResult<Vec<u8>> {
        let avail = self.len.saturating_sub(offset).min(len as u64) as usize;
        let mut buf = vec![0; avail];
        self.read_exact_at(offset, &mut buf)?;
        Ok(buf)
    }

    /// A `std::io::Read + Seek` view from offset 0, for parsers that want a stream
    /// (e.g. symphonia).
    pub fn reader(&self) -> SourceReader {
        SourceReader { src: self.clone(), pos: 0 }
    }
}

/// A seekable stream over a [`Source`]; see [`Source::reader`].
#[derive(Clone)]
pub struct SourceReader {
    src: Source,
    pos: u64,
}

impl SourceReader {
    /// The file's length.
    pub fn len(&self) -> u64 {
        self.src.len
    }

    /// Whether the file is empty.
    pub fn is_empty(&self) -> bool {
        self.src.len == 0
    }
}

impl io::Read for SourceReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.pos >= self.src.len || buf.is_empty() {
            return Ok(0);
        }
        let n = self.src.read_at(self.pos, buf).map_err(|e| {
            let kind =
                if e.kind == ErrorKind::UNEXPECTED_EOF { io::ErrorKind::UnexpectedEof } else { io::ErrorKind::Other };
            io::Error::new(kind, e)
        })?;
        self.pos += n as u64;
        Ok(n)
    }
}

impl io::Seek for SourceReader {
    fn seek(&mut self, pos: io::SeekFrom) -> io::Result<u64> {
        let target = match pos {
            io::SeekFrom::Start(p) => Some(p),
            io::SeekFrom::End(d) => self.src.len.checked_add_signed(d),
            io::SeekFrom::Current(d) => self.pos.checked_add_signed(d),
        };
        let target =
            target.ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "seek before the start of the file"))?;
        self.pos = target;
        Ok(target)
    }
}

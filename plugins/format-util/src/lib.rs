//! Helpers shared by the musefs format plugins.
//!
//! - [`vorbis`]: Vorbis comment blocks (FLAC `VORBIS_COMMENT`, Ogg Vorbis and Opus tags)
//!   and the canonical field names templates use;
//! - [`picture`]: the FLAC `PICTURE` structure (also Ogg's `METADATA_BLOCK_PICTURE`);
//! - [`props`]: audio properties through symphonia, reading only what the demuxer needs;
//! - [`Cursor`]: a bounds-checked reader over a byte slice, so a truncated or hostile
//!   structure gives an error naming what was cut short, never a panic.

pub mod picture;
pub mod props;
pub mod vorbis;

use musefs_plugin_api::{PluginError, PluginResult};

/// A bounds-checked big/little-endian reader over a byte slice.
pub struct Cursor<'a> {
    data: &'a [u8],
    pos: usize,
    what: &'static str,
}

impl<'a> Cursor<'a> {
    /// A cursor over `data`; `what` names the structure in error messages.
    pub fn new(data: &'a [u8], what: &'static str) -> Self {
        Self { data, pos: 0, what }
    }

    /// The current position.
    pub fn pos(&self) -> usize {
        self.pos
    }

    /// Bytes left.
    pub fn remaining(&self) -> usize {
        self.data.len() - self.pos
    }

    /// The next `n` bytes.
    ///
    /// # Errors
    /// `INVALID_DATA` if fewer than `n` bytes are left.
    pub fn take(&mut self, n: usize) -> PluginResult<&'a [u8]> {
        if n > self.remaining() {
            return Err(PluginError::invalid_data(format!(
                "{} is truncated: {n} bytes needed at offset {}, {} left",
                self.what,
                self.pos,
                self.remaining()
            )));
        }
        let s = &self.data[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    /// A big-endian u32.
    ///
    /// # Errors
    /// As for [`take`](Self::take).
    pub fn u32_be(&mut self) -> PluginResult<u32> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// A little-endian u32.
    ///
    /// # Errors
    /// As for [`take`](Self::take).
    pub fn u32_le(&mut self) -> PluginResult<u32> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// A length-prefixed (u32) string, lossily decoded as UTF-8.
    ///
    /// # Errors
    /// As for [`take`](Self::take).
    pub fn string_be(&mut self) -> PluginResult<String> {
        let n = self.u32_be()? as usize;
        Ok(String::from_utf8_lossy(self.take(n)?).into_owned())
    }
}

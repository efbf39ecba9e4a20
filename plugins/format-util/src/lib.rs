//! Helpers shared by the musefs format plugins.
//!
//! - [`id3`]: the ID3v2 header and the ID3v1 trailer (MP3, and FLAC files with ID3 tags);
//! - [`vorbis`]: Vorbis comment blocks (FLAC `VORBIS_COMMENT`, Ogg Vorbis and Opus tags)
//!   and the canonical field names templates use;
//! - [`picture`]: the FLAC `PICTURE` structure (also Ogg's `METADATA_BLOCK_PICTURE`);
//! - [`id3v2`] / [`id3write`]: reading and writing ID3v2 tags (MP3, WAV/AIFF `ID3 ` chunks);
//! - [`names`]: free-form field names (`TXXX`, MP4 `----`) mapped to the Vorbis keys;
//! - [`options`]: the per-format options of the manifest (`[format.NAME]`), typed and checked;
//! - [`props`]: audio properties through symphonia, reading only what the demuxer needs;
//! - [`Cursor`]: a bounds-checked reader over a byte slice, so a truncated or hostile
//!   structure gives an error naming what was cut short, never a panic.

pub mod id3;
pub mod id3v2;
pub mod id3write;
pub mod names;
pub mod options;
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

/// Padding that keeps a regenerated header the same size as the original's when the new
/// content fits (`original` bytes available, `content` needed, `overhead` for the
/// padding structure itself), and otherwise leaves room so the next small edits keep
/// the size: the total is rounded up to a multiple of 4 KiB with at least `min_pad` spare.
pub fn padding_for(original: u64, content: u64, overhead: u64, min_pad: u64) -> u64 {
    if content + overhead <= original {
        return original - content - overhead;
    }
    let total = (content + overhead + min_pad).div_ceil(4096) * 4096;
    total - content - overhead
}

#[cfg(test)]
mod padding_tests {
    use super::padding_for;

    #[test]
    fn keeps_the_original_size_or_rounds_up() {
        assert_eq!(padding_for(5000, 1000, 4, 1024), 3996);
        assert_eq!(padding_for(1000, 1000, 4, 1024), 4096 - 1004);
        let p = padding_for(0, 5000, 4, 1024);
        assert_eq!((5004 + p) % 4096, 0);
        assert!(p >= 1024);
    }
}

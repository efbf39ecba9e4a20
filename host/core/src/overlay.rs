//! The copy-on-write image of a served file that a tag editor is writing (issue 17).
//!
//! An [`Overlay`] holds what was written to one file through the mount: the written
//! extents in a sparse scratch file under the state directory (same offsets as the
//! image, never in memory), a map of which ranges were written, and the image's logical
//! size. Every other byte comes from the file as it is served (the base), read through
//! a caller's function, except where a truncation cut the base away: bytes there read
//! as zeros, as they would in a real file truncated and extended again.
//!
//! The overlay knows nothing about formats: the serving core parses the finished image
//! with the format plugin, compares its audio with the original's and turns the result
//! into a catalog edit, or refuses it.

use std::collections::BTreeMap;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// A written image of one served file.
#[derive(Debug)]
pub struct Overlay {
    scratch: File,
    path: PathBuf,
    /// Written ranges, `start -> end`, disjoint and not touching (merged).
    extents: BTreeMap<u64, u64>,
    /// The image's size now.
    size: u64,
    /// The served size when the session began.
    base_size: u64,
    /// Base bytes at and past this offset were cut away by a truncation: unwritten bytes
    /// there read as zeros.
    base_cut: u64,
}

impl Overlay {
    /// A new overlay over a served file of `base_size` bytes, its scratch file created in
    /// `dir` (named `name`; removed when the overlay is dropped).
    ///
    /// # Errors
    /// Creating the directory or the scratch file.
    pub fn create(dir: &Path, name: &str, base_size: u64) -> io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join(name);
        let scratch = std::fs::OpenOptions::new().read(true).write(true).create_new(true).open(&path)?;
        Ok(Self { scratch, path, extents: BTreeMap::new(), size: base_size, base_size, base_cut: base_size })
    }

    /// The image's size.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The scratch file (for messages).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether a byte of `range` may differ from the base's byte at the same offset: it
    /// was written, or a truncation (or the base's end) cut the base away there. An
    /// untouched range is the base's bytes, unchanged (no need to compare them).
    pub fn touched(&self, range: std::ops::Range<u64>) -> bool {
        if range.end > self.base_cut.min(self.base_size) {
            return true;
        }
        self.extents.range(..range.end).next_back().is_some_and(|(_, &end)| end > range.start)
    }

    /// Writes `data` at `offset` (past the end grows the image; a gap reads as zeros).
    ///
    /// # Errors
    /// The scratch file's write error (a full disk: the caller answers `ENOSPC`).
    pub fn write(&mut self, offset: u64, data: &[u8]) -> io::Result<()> {
        if data.is_empty() {
            return Ok(());
        }
        let end = offset.checked_add(data.len() as u64).ok_or_else(|| io::Error::from(io::ErrorKind::InvalidInput))?;
        self.scratch.write_all_at(data, offset)?;
        if offset > self.size {
            // Bytes between the old end and this write were never the base's.
            self.base_cut = self.base_cut.min(self.size);
        }
        self.add_extent(offset, end);
        self.size = self.size.max(end);
        Ok(())
    }

    fn add_extent(&mut self, mut start: u64, mut end: u64) {
        // Merge with every extent that overlaps or touches [start, end).
        let overlapping: Vec<(u64, u64)> =
            self.extents.range(..=end).filter(|(_, &e)| e >= start).map(|(&s, &e)| (s, e)).collect();
        for (s, e) in overlapping {
            self.extents.remove(&s);
            start = start.min(s);
            end = end.max(e);
        }
        self.extents.insert(start, end);
    }

    /// Sets the image's size (`truncate`/`ftruncate`).
    ///
    /// # Errors
    /// The scratch file's error.
    pub fn truncate(&mut self, size: u64) -> io::Result<()> {
        if size < self.size {
            let cut: Vec<(u64, u64)> =
                self.extents.range(..).filter(|(_, &e)| e > size).map(|(&s, &e)| (s, e)).collect();
            for (s, _) in &cut {
                self.extents.remove(s);
            }
            for (s, _) in cut {
                if s < size {
                    self.extents.insert(s, size);
                }
            }
            self.base_cut = self.base_cut.min(size);
            self.scratch.set_len(size)?;
        }
        self.size = size;
        Ok(())
    }

    /// Reads up to `len` bytes of the image at `offset` (fewer at its end): written
    /// bytes from the scratch file, the others from `base` (called with an offset of
    /// the served file and a buffer to fill wholly) or zeros where the base was cut.
    ///
    /// # Errors
    /// The scratch file's or `base`'s error.
    pub fn read(
        &self,
        offset: u64,
        len: usize,
        mut base: impl FnMut(u64, &mut [u8]) -> io::Result<()>,
    ) -> io::Result<Vec<u8>> {
        let end = offset.saturating_add(len as u64).min(self.size);
        if offset >= end {
            return Ok(Vec::new());
        }
        let mut out = vec![0u8; (end - offset) as usize];
        let mut pos = offset;
        while pos < end {
            // The written extent holding `pos`, or the next one.
            let holding = self.extents.range(..=pos).next_back().filter(|(_, &e)| e > pos).map(|(&s, &e)| (s, e));
            let (chunk_end, written) = match holding {
                Some((_, e)) => (e.min(end), true),
                None => (self.extents.range(pos..).next().map_or(end, |(&s, _)| s.min(end)), false),
            };
            let dst = &mut out[(pos - offset) as usize..(chunk_end - offset) as usize];
            if written {
                self.scratch.read_exact_at(dst, pos)?;
            } else {
                // From the base up to where it was cut (or ends); zeros after.
                let from_base = chunk_end.min(self.base_cut).min(self.base_size);
                if from_base > pos {
                    base(pos, &mut dst[..(from_base - pos) as usize])?;
                }
            }
            pos = chunk_end;
        }
        Ok(out)
    }
}

impl Drop for Overlay {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_file(&self.path) {
            if e.kind() != io::ErrorKind::NotFound {
                tracing::warn!("removing the scratch file {}: {e}", self.path.display());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lcg(s: &mut u64) -> u64 {
        *s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        *s >> 33
    }

    /// Random writes, truncations and reads against a plain vector doing the same.
    #[test]
    fn reads_equal_a_model_file_after_random_writes_and_truncations() {
        let dir = tempfile::tempdir().unwrap();
        for round in 0..40u64 {
            let mut seed = 0x5eed + round;
            let base: Vec<u8> = (0..5000 + lcg(&mut seed) % 20_000).map(|i| (i % 251) as u8).collect();
            let mut model = base.clone();
            let mut o = Overlay::create(dir.path(), &format!("r{round}"), base.len() as u64).unwrap();
            let read_base = |at: u64, buf: &mut [u8]| {
                buf.copy_from_slice(&base[at as usize..at as usize + buf.len()]);
                Ok(())
            };
            for _ in 0..60 {
                match lcg(&mut seed) % 10 {
                    0 => {
                        let n = lcg(&mut seed) % 30_000;
                        o.truncate(n).unwrap();
                        model.resize(n as usize, 0);
                    }
                    1..=5 => {
                        let at = lcg(&mut seed) % 32_000;
                        let data: Vec<u8> = (0..1 + lcg(&mut seed) % 3000).map(|_| lcg(&mut seed) as u8).collect();
                        o.write(at, &data).unwrap();
                        if model.len() < at as usize + data.len() {
                            model.resize(at as usize + data.len(), 0);
                        }
                        model[at as usize..at as usize + data.len()].copy_from_slice(&data);
                    }
                    _ => {
                        let at = lcg(&mut seed) % 33_000;
                        let len = (lcg(&mut seed) % 9000) as usize;
                        let got = o.read(at, len, read_base).unwrap();
                        let from = (at as usize).min(model.len());
                        let to = (at as usize + len).min(model.len());
                        assert!(got == model[from..to], "round {round}: read {len} at {at}");
                    }
                }
                assert_eq!(o.size(), model.len() as u64);
            }
            let whole = o.read(0, model.len(), read_base).unwrap();
            assert!(whole == model, "round {round}: the whole image");
            let path = o.path().to_owned();
            drop(o);
            assert!(!path.exists(), "the scratch file goes with the overlay");
        }
    }

    #[test]
    fn touched_says_whether_a_range_may_differ_from_the_base() {
        let dir = tempfile::tempdir().unwrap();
        let mut o = Overlay::create(dir.path(), "t", 1000).unwrap();
        assert!(!o.touched(0..1000));
        o.write(100, b"abc").unwrap();
        assert!(o.touched(90..101) && o.touched(102..200) && !o.touched(103..1000) && !o.touched(0..100));
        o.truncate(1000).unwrap();
        assert!(!o.touched(500..1000), "a truncation to the same size changes nothing");
        o.truncate(800).unwrap();
        assert!(o.touched(500..900) && !o.touched(0..10), "only what the truncation cut away changed");
        o.truncate(1200).unwrap();
        assert!(o.touched(799..801), "cut away, then zeros");
    }
}

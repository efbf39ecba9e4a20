//! Plain data that crosses the plugin boundary.
//!
//! These structs are `#[repr(C)]` and checked by `abi_stable` when a plugin loads. They
//! cannot grow: a later version adds data through new trait methods (see the crate docs,
//! "Evolving the ABI"), or through the `extra` key/value lists some of them carry.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use abi_stable::{
    std_types::{RArc, ROption, RString, RVec},
    StableAbi,
};

use crate::error::{ErrorKind, PluginError};

/// The context every potentially slow call receives: a timeout and a cancel flag.
///
/// A plugin must give up with [`ErrorKind::TIMED_OUT`] once `timeout_ms` has passed since
/// the call started, and with [`ErrorKind::CANCELLED`] soon after `cancel` is raised.
#[repr(C)]
#[derive(StableAbi, Clone)]
pub struct CallCtx {
    /// The budget of this call in milliseconds; `0` means no limit.
    pub timeout_ms: u64,
    /// Raised by the host when the caller no longer wants the result.
    pub cancel: RArc<AtomicBool>,
}

impl CallCtx {
    /// A context with the given timeout and a fresh, lowered cancel flag.
    pub fn with_timeout(timeout: Duration) -> Self {
        let ms = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX).max(1);
        Self { timeout_ms: ms, cancel: RArc::new(AtomicBool::new(false)) }
    }

    /// A context without a time limit.
    pub fn unlimited() -> Self {
        Self { timeout_ms: 0, cancel: RArc::new(AtomicBool::new(false)) }
    }

    /// The timeout as a [`Duration`], `None` if unlimited.
    pub fn timeout(&self) -> Option<Duration> {
        (self.timeout_ms != 0).then(|| Duration::from_millis(self.timeout_ms))
    }

    /// The deadline of a call that started at `start`, `None` if unlimited.
    pub fn deadline_from(&self, start: Instant) -> Option<Instant> {
        self.timeout().map(|t| start + t)
    }

    /// Whether the cancel flag is raised.
    pub fn is_cancelled(&self) -> bool {
        self.cancel.load(Ordering::Relaxed)
    }

    /// Raises the cancel flag (seen by every clone of this context).
    pub fn cancel(&self) {
        self.cancel.store(true, Ordering::Relaxed);
    }

    /// `Err` if the call was cancelled or its deadline (counted from `start`) has passed.
    ///
    /// # Errors
    /// [`ErrorKind::CANCELLED`] or [`ErrorKind::TIMED_OUT`] (the latter retryable).
    pub fn check(&self, start: Instant) -> Result<(), PluginError> {
        if self.is_cancelled() {
            return Err(PluginError::new(ErrorKind::CANCELLED, "call cancelled"));
        }
        if let Some(deadline) = self.deadline_from(start) {
            if Instant::now() >= deadline {
                return Err(PluginError::new(
                    ErrorKind::TIMED_OUT,
                    format!("call timed out after {} ms", self.timeout_ms),
                )
                .retryable());
            }
        }
        Ok(())
    }
}

/// Whether an origin entry is a file or a directory.
#[repr(transparent)]
#[derive(StableAbi, Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct EntryKind(pub u32);

impl EntryKind {
    /// A regular file (symlinks are followed).
    pub const FILE: Self = Self(0);
    /// A directory.
    pub const DIR: Self = Self(1);
    // abi-since 2.1 {
    /// A directory of a recursive listing that could not be read (permissions, an I/O
    /// error): nothing below it is known, so the host prunes nothing below it. A host
    /// older than 2.1 ignores the entry (it has no audio extension).
    pub const UNLISTED: Self = Self(2);
    // abi-since 2.1 }
}

/// What an origin knows about one object without reading it.
#[repr(C)]
#[derive(StableAbi, Clone, Debug, PartialEq, Eq)]
pub struct Stat {
    /// File or directory.
    pub kind: EntryKind,
    /// Size in bytes (0 for directories).
    pub size: u64,
    /// Modification time in nanoseconds since the Unix epoch, if the origin has one.
    pub mtime_ns: ROption<i64>,
    /// An opaque version stamp (S3 ETag, ...), if the origin has one.
    pub etag: ROption<RString>,
}

/// One entry of a listing: a path relative to the origin's root, `/`-separated, no
/// leading `/`, and its [`Stat`].
#[repr(C)]
#[derive(StableAbi, Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// The path relative to the origin root, `/`-separated.
    pub path: RString,
    /// Its metadata.
    pub stat: Stat,
}

/// What to list.
#[repr(C)]
#[derive(StableAbi, Clone, Debug)]
pub struct ListRequest {
    /// The directory to list, relative to the origin root (`""` for the root).
    pub dir: RString,
    /// `true`: walk every file below `dir` (directories are not returned);
    /// `false`: the direct children of `dir`, files and directories.
    pub recursive: bool,
}

/// Capabilities an origin declares once (bit flags; unknown bits are ignored, so later
/// versions can add capabilities without breaking older hosts or plugins).
#[repr(transparent)]
#[derive(StableAbi, Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct OriginCaps(pub u32);

impl OriginCaps {
    /// No capability.
    pub const NONE: Self = Self(0);
    /// Reads are local and fast (a local disk): the host serves them directly, without
    /// its chunk cache.
    pub const LOCAL: Self = Self(1);
    /// Handles may return a local path for zero-copy (kernel passthrough) serving.
    pub const LOCAL_PATHS: Self = Self(2);

    /// Whether all bits of `other` are set.
    pub fn contains(self, other: Self) -> bool {
        self.0 & other.0 == other.0
    }

    /// The names of the known capabilities set, `+`-joined (`local+local_paths`, `none`).
    pub fn describe(self) -> String {
        let names: Vec<&str> = [(Self::LOCAL, "local"), (Self::LOCAL_PATHS, "local_paths")]
            .into_iter()
            .filter(|(c, _)| self.contains(*c))
            .map(|(_, n)| n)
            .collect();
        if names.is_empty() {
            "none".to_owned()
        } else {
            names.join("+")
        }
    }
}

impl std::ops::BitOr for OriginCaps {
    type Output = Self;
    fn bitor(self, rhs: Self) -> Self {
        Self(self.0 | rhs.0)
    }
}

/// One tag value, in the file's own order.
///
/// A key that appears several times is multi-valued; the order is kept.
#[repr(C)]
#[derive(StableAbi, Clone, Debug, PartialEq, Eq)]
pub struct Tag {
    /// The canonical field name templates use (`title`, `artist`, `albumartist`,
    /// `album`, `track`, `disc`, `date`, `genre`, ...), lower case; empty if this tag
    /// has no canonical meaning (it is still kept and reproduced).
    pub key: RString,
    /// The format's own identifier: a Vorbis comment field name as written, an ID3v2
    /// frame id (`TIT2`, `TXXX:MY FIELD`, `PRIV`, ...), an APE item key.
    pub native: RString,
    /// The text value (for binary frames a short human-readable description).
    pub value: RString,
    /// For binary tags, the raw payload (the whole frame body); empty for text.
    pub data: RVec<u8>,
}

impl Tag {
    /// A text tag.
    pub fn text(key: &str, native: &str, value: &str) -> Self {
        Self { key: key.into(), native: native.into(), value: value.into(), data: RVec::new() }
    }

    /// A binary tag with its raw payload.
    pub fn binary(key: &str, native: &str, summary: &str, data: Vec<u8>) -> Self {
        Self { key: key.into(), native: native.into(), value: summary.into(), data: data.into() }
    }

    /// Whether this tag carries a binary payload.
    pub fn is_binary(&self) -> bool {
        !self.data.is_empty()
    }
}

/// An embedded picture (cover art and others), as in the FLAC PICTURE block.
#[repr(C)]
#[derive(StableAbi, Clone, Debug, Default, PartialEq, Eq)]
pub struct Picture {
    /// The ID3v2 / FLAC picture type (3 = front cover).
    pub picture_type: u32,
    /// MIME type, e.g. `image/jpeg`.
    pub mime: RString,
    /// Free-text description.
    pub description: RString,
    /// Width in pixels, 0 if unknown.
    pub width: u32,
    /// Height in pixels, 0 if unknown.
    pub height: u32,
    /// Colour depth in bits per pixel, 0 if unknown.
    pub depth: u32,
    /// Number of palette colours, 0 if not indexed.
    pub colors: u32,
    /// The image bytes.
    pub data: RVec<u8>,
}

/// Audio properties. Zero means unknown.
#[repr(C)]
#[derive(StableAbi, Clone, Debug, Default, PartialEq, Eq)]
pub struct AudioProps {
    /// The codec, lower case (`flac`, `mp3`, `vorbis`, `opus`).
    pub codec: RString,
    /// Duration in milliseconds.
    pub duration_ms: u64,
    /// Sample rate in Hz.
    pub sample_rate: u32,
    /// Number of channels.
    pub channels: u32,
    /// Bits per sample (lossless formats).
    pub bits_per_sample: u32,
    /// Average bit rate in bits per second.
    pub bitrate: u32,
}

/// A byte region of the original file holding a structure the format knows
/// (`id3v2`, `flac-metadata`, `ogg-comment`, `id3v1`, `apev2`, ...), for synthesis.
#[repr(C)]
#[derive(StableAbi, Clone, Debug, PartialEq, Eq)]
pub struct Region {
    /// What the region holds.
    pub kind: RString,
    /// Offset of its first byte.
    pub offset: u64,
    /// Its length in bytes.
    pub len: u64,
}

/// A key/value pair for forward-compatible additions.
#[repr(C)]
#[derive(StableAbi, Clone, Debug, PartialEq, Eq)]
pub struct KeyValue {
    /// The key.
    pub key: RString,
    /// The value.
    pub value: RString,
}

/// Everything a format plugin reads from one file.
#[repr(C)]
#[derive(StableAbi, Clone, Debug, PartialEq, Eq)]
pub struct TrackInfo {
    /// The container/codec family this plugin recognised (`flac`, `mp3`, `ogg-vorbis`, `ogg-opus`).
    pub format: RString,
    /// The file extension to serve the file with, without the dot (`flac`, `mp3`, `ogg`, `opus`);
    /// empty: the original's own extension (since 2.1: a host before it serves it without one).
    pub extension: RString,
    /// Every tag, in file order, text and binary alike.
    pub tags: RVec<Tag>,
    /// Every embedded picture, in file order.
    pub pictures: RVec<Picture>,
    /// Audio properties.
    pub props: AudioProps,
    /// Offset of the first audio byte (after all leading tag structures).
    pub audio_offset: u64,
    /// Length of the audio bytes (up to the first trailing tag structure).
    pub audio_len: u64,
    /// Where the tag structures are, for synthesis.
    pub regions: RVec<Region>,
    /// Forward-compatible extra facts. Keys the host knows: `vendor` (the encoder's
    /// vendor string) and `warning` (one per problem the format read past, e.g. damage
    /// it tolerated; the host logs each with the file's name).
    pub extra: RVec<KeyValue>,
}

/// What a [`Segment`] contains.
#[repr(transparent)]
#[derive(StableAbi, Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SegmentKind(pub u32);

impl SegmentKind {
    /// `bytes` literally.
    pub const LITERAL: Self = Self(0);
    /// `len` bytes of the original object starting at `offset`.
    pub const ORIGIN: Self = Self(1);
}

/// One piece of a served file.
#[repr(C)]
#[derive(StableAbi, Clone, Debug, PartialEq, Eq)]
pub struct Segment {
    /// What this segment contains.
    pub kind: SegmentKind,
    /// For [`SegmentKind::ORIGIN`]: the offset in the original object.
    pub offset: u64,
    /// The number of bytes this segment contributes.
    pub len: u64,
    /// For [`SegmentKind::LITERAL`]: the bytes (`len` of them).
    pub bytes: RVec<u8>,
    /// A kind-specific parameter (0 when unused).
    pub param: u64,
}

impl Segment {
    /// A literal segment.
    pub fn literal(bytes: Vec<u8>) -> Self {
        Self { kind: SegmentKind::LITERAL, offset: 0, len: bytes.len() as u64, bytes: bytes.into(), param: 0 }
    }

    /// A range of the original object.
    pub fn origin(offset: u64, len: u64) -> Self {
        Self { kind: SegmentKind::ORIGIN, offset, len, bytes: RVec::new(), param: 0 }
    }
}

/// The layout of a served file: its bytes are the segments, in order.
#[repr(C)]
#[derive(StableAbi, Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    /// The segments, in order.
    pub segments: RVec<Segment>,
}

impl Plan {
    /// The plan that serves the original object unchanged.
    pub fn passthrough(len: u64) -> Self {
        Self { segments: vec![Segment::origin(0, len)].into() }
    }

    /// The total size of the served file.
    pub fn len(&self) -> u64 {
        self.segments.iter().map(|s| s.len).sum()
    }

    /// Whether the served file is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// How a file is to be served.
#[repr(transparent)]
#[derive(StableAbi, Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PlanMode(pub u32);

impl PlanMode {
    /// The original bytes, unchanged.
    pub const PASSTHROUGH: Self = Self(0);
    /// A header built from `tags` and `pictures`, followed by the untouched audio.
    pub const SYNTHESIS: Self = Self(1);
}

/// What the host asks a format plugin to lay out.
#[repr(C)]
#[derive(StableAbi, Clone, Debug)]
pub struct PlanRequest {
    /// Passthrough or synthesis.
    pub mode: PlanMode,
    /// The scan's view of the file (stamps and regions as recorded in the catalog).
    pub info: TrackInfo,
    /// The tags to write (the file's own with the user's edits applied), for synthesis.
    pub tags: RVec<Tag>,
    /// The pictures to write, for synthesis.
    pub pictures: RVec<Picture>,
    /// Format options from the manifest, as a JSON object (may be `{}`).
    pub options: RString,
    /// Forward-compatible extra parameters.
    pub extra: RVec<KeyValue>,
}

impl PlanRequest {
    /// The synthesis request of a file nobody edited: its own tags and pictures, as
    /// `info` has them, with no options (what the host asks for an unedited file; handy
    /// in a plugin's tests).
    pub fn synthesis_of(info: &TrackInfo) -> Self {
        Self {
            mode: PlanMode::SYNTHESIS,
            tags: info.tags.clone(),
            pictures: info.pictures.clone(),
            info: info.clone(),
            options: "{}".into(),
            extra: RVec::new(),
        }
    }
}

/// Which kinds of object a plugin provides (bit flags).
#[repr(transparent)]
#[derive(StableAbi, Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PluginKinds(pub u32);

impl PluginKinds {
    /// Provides origins through `new_origin`.
    pub const ORIGIN: Self = Self(1);
    /// Provides formats through `new_format`.
    pub const FORMAT: Self = Self(2);

    /// Whether all bits of `other` are set.
    pub fn contains(self, other: Self) -> bool {
        self.0 & other.0 == other.0
    }

    /// `origin`, `format` or `origin+format`.
    pub fn describe(self) -> String {
        let mut parts = Vec::new();
        if self.contains(Self::ORIGIN) {
            parts.push("origin");
        }
        if self.contains(Self::FORMAT) {
            parts.push("format");
        }
        if parts.is_empty() {
            "none".to_owned()
        } else {
            parts.join("+")
        }
    }
}

impl std::ops::BitOr for PluginKinds {
    type Output = Self;
    fn bitor(self, rhs: Self) -> Self {
        Self(self.0 | rhs.0)
    }
}

/// What a plugin says about itself.
#[repr(C)]
#[derive(StableAbi, Clone, Debug)]
pub struct PluginInfo {
    /// The unique name: the manifest's origin `kind`, or the format's name.
    pub name: RString,
    /// The plugin's own version.
    pub version: RString,
    /// Which kinds it provides.
    pub kinds: PluginKinds,
    /// One line for `musefs plugins list`.
    pub description: RString,
}

//! The checks every format target runs on one input: probe, read, and (if the read
//! succeeds) plan in synthesis mode, straight through the `Format` trait (not the FFI
//! wrapper, whose panic guard would hide a panic from the fuzzer). Beyond "no panic":
//! a plan's origin ranges lie inside the file and literal segments hold what they claim.

use std::sync::Arc;

use musefs_plugin_api::testing::MemHandle;
use musefs_plugin_api::{handle_into_ffi, CallCtx, Format, PlanRequest, SegmentKind, Source, PROBE_HEAD_LEN};

pub fn run<F: Format>(f: &F, data: &[u8]) {
    let head = &data[..data.len().min(PROBE_HEAD_LEN)];
    for ext in f.extensions() {
        let _ = f.probe(head, &ext);
    }
    let source = || Source::new(handle_into_ffi(Arc::new(MemHandle::new(data.to_vec()))), CallCtx::unlimited());
    let Ok(info) = f.read(&source()) else { return };
    let len = data.len() as u64;
    // A file holds the same audio as itself (what the host asks before it takes a save
    // through a writable mount), and a copy with one audio byte changed must not panic.
    assert!(f.same_audio(&source(), &info, &source(), &info).unwrap(), "a file's audio differs from itself");
    if info.audio_len > 0 && info.audio_offset.checked_add(info.audio_len).is_some_and(|e| e <= len) {
        let mut changed = data.to_vec();
        changed[(info.audio_offset + info.audio_len / 2) as usize] ^= 0x20;
        let other = Source::new(handle_into_ffi(Arc::new(MemHandle::new(changed))), CallCtx::unlimited());
        let _ = f.same_audio(&source(), &info, &other, &info);
    }
    // The host passes the file's own tags and pictures (as cataloged) when nothing is
    // edited. (Passthrough plans are the FFI wrapper's, not the plugin's.)
    let req = PlanRequest::synthesis_of(&info);
    let Ok(plan) = f.plan(&source(), &req) else { return };
    for s in plan.segments.iter() {
        if s.kind == SegmentKind::LITERAL {
            assert_eq!(s.bytes.len() as u64, s.len, "a literal segment holds `len` bytes");
        } else {
            // Origin ranges (and kinds derived from them) lie inside the original.
            let end = s.offset.checked_add(s.len);
            assert!(end.is_some_and(|e| e <= len), "range {}+{} past the end ({len})", s.offset, s.len);
        }
    }
}

//! Fuzzes the mp4 format plugin: probe, read, plan (see `format_common.rs`).
#![no_main]

#[path = "format_common.rs"]
mod format_common;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    format_common::run(&musefs_format_mp4::Mp4, data);
});

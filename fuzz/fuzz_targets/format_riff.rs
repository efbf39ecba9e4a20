//! Fuzzes the riff format plugin: probe, read, plan (see `format_common.rs`).
#![no_main]

#[path = "format_common.rs"]
mod format_common;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    format_common::run(&musefs_format_riff::Riff, data);
});

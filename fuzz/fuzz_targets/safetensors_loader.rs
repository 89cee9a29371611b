//! Fuzz target `safetensors_loader`.
//!
//! The model crate's safetensors loader on arbitrary bytes (raw files, or structured headers
//! and sharded indexes): a typed error, or every tensor's shape, byte length and values exactly as
//! its header and data say; a single file opens iff the `safetensors` crate accepts it.
//!
//! The decoding and the checks live in `axpo_fuzz::targets::safetensors_loader` (documented there), so that
//! `cargo test` replays the seeds and regressions through the same code.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| axpo_fuzz::targets::safetensors_loader::run(data));

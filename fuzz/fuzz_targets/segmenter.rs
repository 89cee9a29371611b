//! Fuzz target `segmenter`.
//!
//! The segmenter on arbitrary token streams: `Ok` spans cover the stream exactly (contiguous,
//! non-empty, roles consistent with `roles()`, prompt first, padding absorbing, causal); `Err`
//! (`InvalidSpans`) exactly when the prompt length exceeds the stream.
//!
//! The decoding and the checks live in `axpo_fuzz::targets::segmenter` (documented there), so that
//! `cargo test` replays the seeds and regressions through the same code.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| axpo_fuzz::targets::segmenter::run(data));

//! Fuzz target `logprob`.
//!
//! The CPU backend's `token_stats` / `linear_token_stats` and their backward passes on
//! arbitrary small shapes and values: typed errors for bad shapes, targets and dtypes; finite
//! statistics for finite logits (`log p <= 0`, `0 <= H <= ln V`) matching a naive softmax; the
//! fused head equals the unfused ops.
//!
//! The decoding and the checks live in `axpo_fuzz::targets::logprob` (documented there), so that
//! `cargo test` replays the seeds and regressions through the same code.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| axpo_fuzz::targets::logprob::run(data));

//! Fuzz target `objective`.
//!
//! The objective on arbitrary f32/f64 inputs (NaN, infinities, huge and tiny values) with any
//! configuration: errors are typed and deserved; `Ok` outputs are finite; finite inputs never give
//! NaN; sane inputs always succeed; the surrogate loss equals the loss.
//!
//! The decoding and the checks live in `axpo_fuzz::targets::objective` (documented there), so that
//! `cargo test` replays the seeds and regressions through the same code.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| axpo_fuzz::targets::objective::run(data));

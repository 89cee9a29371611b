//! Fuzz target `trajectory`.
//!
//! Building and validating trajectories, groups and batches from arbitrary input: each
//! constructor is `Ok` exactly when an independent oracle says the input is valid, fails with the
//! documented variant otherwise, and `Ok` values keep their invariants (one log-prob per policy
//! token, finite values, consistent role lookups, distinct ids).
//!
//! The decoding and the checks live in `axpo_fuzz::targets::trajectory` (documented there), so that
//! `cargo test` replays the seeds and regressions through the same code.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| axpo_fuzz::targets::trajectory::run(data));

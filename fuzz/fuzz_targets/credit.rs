//! Fuzz target `credit`.
//!
//! Credit assignment with every estimator and credit mode on arbitrary valid batches with
//! branches: finite advantages, zero mean in every normalising set, consistent `TrainingTokens`
//! and micro-batches, a finite on-policy objective, diagnostics in range, exact Pass@k.
//!
//! The decoding and the checks live in `axpo_fuzz::targets::credit` (documented there), so that
//! `cargo test` replays the seeds and regressions through the same code.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| axpo_fuzz::targets::credit::run(data));

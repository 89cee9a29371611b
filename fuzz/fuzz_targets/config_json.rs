//! Fuzz target `config_json`.
//!
//! The model crate's `config.json` parser on arbitrary bytes (raw, or the tiny checkpoint's
//! config with hostile fields): a typed error, or a config that satisfies every documented
//! constraint and whose derived sizes fit in `usize`.
//!
//! The decoding and the checks live in `axpo_fuzz::targets::config_json` (documented there), so that
//! `cargo test` replays the seeds and regressions through the same code.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| axpo_fuzz::targets::config_json::run(data));

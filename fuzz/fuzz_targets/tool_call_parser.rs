//! Fuzz target `tool_call_parser`.
//!
//! The demo's tool-call parser (grammar cursor, `policy_contexts`, `Episode::continue_from`)
//! on arbitrary token streams: a refused token leaves the cursor unchanged with a precise error; a
//! parsed call's zoom window is inside the grid and its crop valid; the grammar and the core's
//! segmenter agree on the policy tokens.
//!
//! The decoding and the checks live in `axpo_fuzz::targets::tool_call_parser` (documented there), so that
//! `cargo test` replays the seeds and regressions through the same code.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| axpo_fuzz::targets::tool_call_parser::run(data));

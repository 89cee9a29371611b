//! Fuzz target `planner`.
//!
//! The resample planner and the merge of returned branches over several rounds: plans are
//! deterministic, within budget (`resample_count <= budget - branches present`), only for
//! all-wrong tool subgroups in round 1 and still-all-wrong sibling sets later; hostile answers are
//! refused with the batch unchanged, valid ones merged with every branch carrying its parent's
//! exact prefix.
//!
//! The decoding and the checks live in `axpo_fuzz::targets::planner` (documented there), so that
//! `cargo test` replays the seeds and regressions through the same code.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| axpo_fuzz::targets::planner::run(data));

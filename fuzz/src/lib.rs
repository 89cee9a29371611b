//! The fuzz targets of axpo, as a library: each module of [`targets`] has a `run(&[u8])` that
//! decodes the bytes into an input, calls the code under test and **checks a property** of the
//! result (a typed error of an allowed variant, or an output that satisfies the documented
//! invariants). A violated property panics, which libFuzzer reports as a crash.
//!
//! The binaries in `fuzz_targets/` are one-line wrappers around these functions, so the same
//! checks also run under `cargo test` (see `tests/replay.rs`, which replays every committed seed
//! and regression input).
//!
//! Inputs are built with [`arbitrary::Unstructured`] by the generators of [`build`]: valid inputs
//! by construction (so that deep code is reached), hostile ones by mutation, and floats drawn
//! to hit NaN, infinities, signed zeros, subnormals and the extremes of the range.

pub mod build;
pub mod targets;

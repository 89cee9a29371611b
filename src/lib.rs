#![doc = include_str!("../README.md")]
//!
//! ## This crate
//!
//! The facade re-exports [`axpo_core`] (also as `axpo::core`) and, behind features, the GPU
//! backends and the Qwen3-VL model; it hosts the `axpo demo` task ([`demo`]) and the `axpo`
//! command-line tool.
//!
//! | feature | what it adds |
//! |---|---|
//! | `cuda` | `axpo::cuda`: the CUDA backend (cudarc, NVRTC kernels) |
//! | `wgpu` | `axpo::wgpu`: the WGSL compute backend |
//! | `qwen3vl` | `axpo::qwen3vl`: the Qwen3-VL forward pass and `axpo score` |
#![doc(test(attr(deny(warnings))))]

pub use axpo_core as core;
pub use axpo_core::*;

pub mod demo;

#[cfg(feature = "cuda")]
pub use axpo_backend_cuda as cuda;
#[cfg(feature = "wgpu")]
pub use axpo_backend_wgpu as wgpu;
#[cfg(feature = "qwen3vl")]
pub use axpo_model_qwen3vl as qwen3vl;

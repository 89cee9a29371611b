//! # axpo-backend-cuda
//!
//! The CUDA backend of AXPO: every op of [`axpo_core::backend::Backend`] on an NVIDIA GPU,
//! through [cudarc](https://docs.rs/cudarc) with dynamic loading (the crate builds and its
//! device-free tests run on machines without a driver or toolkit), kernels compiled at run time
//! by NVRTC for the device's architecture (cached per process), and cuBLAS for every GEMM
//! (bf16/f16/f32 inputs, f32 accumulation).
//!
//! | op family | kernels (`kernels/<family>.cu`) |
//! |---|---|
//! | buffers | strided row copies with type conversion (KV-cache append), 16-byte fast path |
//! | matmul | cuBLAS `GemmEx` on strided views; transposes and row strides become leading dims |
//! | elementwise | add, mul, bias, SiLU / both GELUs, fused SwiGLU, fused bias + activation |
//! | norm, rotary | RMSNorm, LayerNorm, rotate-half rotary, fused per-head RMSNorm + rotary |
//! | attention | masked softmax; exact flash kernel (f32), tensor-core flash kernel (bf16/f16, GQA, causal/segments), split-KV decoding against a KV cache |
//! | embedding | row gather, row scatter (replace/add) |
//! | logprob | one-pass online-softmax `token_stats` with 16-byte loads; fold/finish/backward; the fused output head |
//! | objective | the training step ([`ObjectiveOps::linear_objective`](axpo_core::backend::ObjectiveOps::linear_objective)): output head, statistics, the objective's per-token loss and gradient ([`Cuda::objective_tokens`]) and the head's backward fused in three GEMMs per chunk of tokens, memory bounded by a workspace budget ([`Cuda::with_head_workspace`]) whatever the batch size |
//!
//! Without a driver, [`Cuda::new`] returns a `DeviceUnavailable` backend error (never a
//! panic). All `unsafe` code is in the private `launch` module.
//!
//! ## Requirements at run time
//! An NVIDIA driver for CUDA 13 (R580 or newer), `libnvrtc.so.13` and `libcublas.so.13`
//! (a CUDA 13 toolkit, or the `nvidia-cuda-nvrtc` / `nvidia-cublas` wheels) on the library
//! path.

#![deny(unsafe_op_in_unsafe_fn)]
#![deny(clippy::undocumented_unsafe_blocks)]
#![warn(missing_docs)]

mod buffer;
mod device;
mod error;
mod head;
pub mod kernels;
mod launch;
mod objective;
mod ops;
pub mod plan;

pub use buffer::CudaBuffer;
pub use device::{Cuda, DEFAULT_HEAD_WORKSPACE, Precision};
pub use error::CudaError;
pub use launch::{Libraries, libraries_present, nvrtc_compile};
pub use objective::{ObjectiveParams, TokenObjectiveBuffers, token_weights};

impl axpo_core::backend::BackendTypes for Cuda {
    type Buffer = CudaBuffer;
}

/// Whether a CUDA device can be used here: the driver, NVRTC and cuBLAS libraries load and
/// device 0 opens. Tests and benches use it to skip cleanly.
#[must_use]
pub fn device_available() -> bool {
    Cuda::new(0).is_ok()
}

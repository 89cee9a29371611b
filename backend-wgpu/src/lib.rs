//! The wgpu backend of AXPO: every op of the `Backend` trait as a WGSL compute shader, on any
//! adapter wgpu drives (Vulkan, Metal, DX12) — in CI, Mesa's lavapipe (software Vulkan).
//!
//! ```no_run
//! use axpo_backend_wgpu::Wgpu;
//! use axpo_core::backend::{BufferOps, LogprobOps, MatRef};
//!
//! # fn main() -> Result<(), axpo_core::Error> {
//! let gpu = Wgpu::new()?; // a clear error, never a panic, when there is no adapter
//! let logits = gpu.upload_f32(&[0.5, -1.0, 2.0, 0.25, 1.5, -0.5])?;
//! let stats = gpu.token_stats(MatRef::new(&logits, 2, 3)?, &[2, 0])?;
//! let logp = gpu.download_f32(&stats.logp)?;
//! # Ok(()) }
//! ```
//!
//! # Design
//! - **Buffers** are storage buffers of 32-bit words; f16/bf16 data is packed two per word and
//!   unpacked in the shaders by bit manipulation (WGSL has no bf16, and this way f16 needs no
//!   adapter feature). Everything the backend writes is f32, as on the CPU backend.
//! - **Kernels** live in `shaders/<family>.wgsl`, one file per op family; each float input is
//!   read through a generated accessor typed by the pipeline's specialisation, and pipelines are
//!   cached by (family, entry point, specialisation).
//! - **Limits**: every binding is a window onto the part of a buffer an op touches; ops whose
//!   operands exceed `max_storage_buffer_binding_size` (128 MiB on lavapipe) are split into
//!   several dispatches (rows, matmul m/n/k, vocabulary chunks, table blocks) and refuse with
//!   `BackendErrorKind::LimitExceeded` only when a single row does not fit. Grids above 65535
//!   workgroups are folded into two dimensions.
//! - **Fused kernels**: `token_stats` (one pass, online softmax, one workgroup per row),
//!   `linear_token_stats` (tiled matmul + fold per vocabulary chunk; memory `N x chunk`),
//!   its backward (the logit gradient computed in the matmul's epilogue, then `d hidden` and
//!   `d W` products per chunk), `swiglu`, `bias_activation`, `rms_norm_rotary`.
//! - **Errors**: no adapter is `BackendErrorKind::DeviceUnavailable`; device validation errors
//!   are captured (never the default panicking handler) and returned by the op that caused them.

#![forbid(unsafe_code)]

mod context;
pub mod kernels;
mod ops;

use std::sync::Arc;

use axpo_core::Result;
use axpo_core::backend::BackendTypes;

pub use context::{WgpuBuffer, WgpuOptions};

/// The wgpu backend: a cheap handle (an `Arc`) on one device and its pipeline cache.
#[derive(Debug, Clone)]
pub struct Wgpu {
    inner: Arc<context::Inner>,
}

impl Wgpu {
    /// Opens the best compute-capable adapter (see [`WgpuOptions::adapter_name`]; honours
    /// `WGPU_BACKEND` and `WGPU_ADAPTER_NAME`).
    ///
    /// # Errors
    /// `Error::Backend` with `BackendErrorKind::DeviceUnavailable` when no adapter is found or
    /// the adapter refuses a device; the message lists the adapters that were found.
    pub fn new() -> Result<Self> {
        Self::with_options(WgpuOptions::default())
    }

    /// Opens an adapter with explicit options.
    ///
    /// # Errors
    /// As [`Wgpu::new`].
    pub fn with_options(options: WgpuOptions) -> Result<Self> {
        Ok(Self {
            inner: Arc::new(context::Inner::new(&options)?),
        })
    }

    /// The adapter's name, e.g. `"llvmpipe (LLVM 15.0.6, 256 bits)"`.
    #[must_use]
    pub fn adapter_name(&self) -> &str {
        &self.inner.info.name
    }

    /// The graphics API in use, e.g. `"Vulkan"`.
    #[must_use]
    pub fn api(&self) -> String {
        format!("{:?}", self.inner.info.backend)
    }

    /// The largest storage binding the backend uses, in bytes.
    #[must_use]
    pub fn max_binding_bytes(&self) -> u64 {
        self.inner.limits.max_binding
    }
}

impl BackendTypes for Wgpu {
    type Buffer = WgpuBuffer;
}

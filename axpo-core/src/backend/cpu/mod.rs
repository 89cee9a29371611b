//! The reference CPU backend: f32 storage (f16/bf16 accepted and widened on read), f64
//! accumulation in every reduction (softmax statistics, norms), single-threaded and `no_std`.
//!
//! Matrix products go through a [`CpuGemm`] kernel: [`ReferenceGemm`] here (portable, blocked,
//! f32), or a faster one supplied by a crate that may use threads and SIMD (the model crate plugs
//! in the `gemm` crate this way).

mod attention;
mod buffer;
mod elementwise;
mod embedding;
mod logprob;
mod matmul;
mod norm;
mod rotary;

pub use buffer::CpuBuffer;
pub use matmul::{CpuGemm, ReferenceGemm, Strided};

/// The reference CPU backend, generic over its matrix-product kernel.
#[derive(Debug, Clone, Default)]
pub struct Cpu<G = ReferenceGemm> {
    gemm: G,
}

impl Cpu<ReferenceGemm> {
    /// The reference backend with the portable kernel.
    #[must_use]
    pub fn new() -> Self {
        Self {
            gemm: ReferenceGemm,
        }
    }
}

impl<G: CpuGemm> Cpu<G> {
    /// The reference backend with another matrix-product kernel.
    #[must_use]
    pub fn with_gemm(gemm: G) -> Self {
        Self { gemm }
    }

    /// The matrix-product kernel.
    #[must_use]
    pub fn gemm(&self) -> &G {
        &self.gemm
    }
}

impl<G: CpuGemm> super::BackendTypes for Cpu<G> {
    type Buffer = CpuBuffer;
}

/// The training step from primitives ([`linear_objective_by_blocks`](super::linear_objective_by_blocks)).
impl<G: CpuGemm> super::ObjectiveOps for Cpu<G> {}

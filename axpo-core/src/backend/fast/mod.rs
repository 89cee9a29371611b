//! The fast CPU backend: [`FastCpu`], the reference [`Cpu`] backend with `faer`'s matrix
//! product as its kernel ([`GemmKernel`]), a blocked multithreaded attention, f32 SiLU/SwiGLU,
//! and the fused training step of [`ObjectiveOps`](crate::backend::ObjectiveOps). Every other op
//! is the reference one. Needs the `fast-cpu` feature (and so `std`: rayon's threads).

mod attention;
mod gemm;
#[cfg(test)]
mod tests;

use alloc::vec;
use alloc::vec::Vec;

use rayon::prelude::*;

pub use gemm::GemmKernel;

use crate::backend::{
    Activation, BackendTypes, BufferOps, Cpu, CpuBuffer, DType, DeviceBuffer, ElementwiseOps,
    EmbeddingOps, Epilogue, HostData, Layout, LogprobOps, MatMut, MatRef, MatmulOps, NormOps, Rope,
    RotaryOps, ScatterMode, StatsGrad, TokenStats,
};
use crate::error::Error;

/// The reference CPU backend with the `gemm` crate kernel.
pub type GemmCpu = Cpu<GemmKernel>;

/// The fast CPU backend: [`GemmCpu`] with a blocked multithreaded attention and f32 SiLU/SwiGLU.
/// Results agree with the reference backend to f32 rounding.
#[derive(Debug, Clone, Default)]
pub struct FastCpu {
    inner: GemmCpu,
}

impl FastCpu {
    /// A backend using all threads of the rayon pool.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// A backend whose matrix products use `threads` threads (`0`: all).
    #[must_use]
    pub fn with_threads(threads: usize) -> Self {
        Self {
            inner: Cpu::with_gemm(GemmKernel::new(threads)),
        }
    }

    /// The wrapped reference backend.
    #[must_use]
    pub fn inner(&self) -> &GemmCpu {
        &self.inner
    }
}

use crate::error::Result as R;

impl BackendTypes for FastCpu {
    type Buffer = CpuBuffer;
}

impl BufferOps for FastCpu {
    fn name(&self) -> &'static str {
        "cpu-fast"
    }
    fn upload(&self, data: HostData<'_>) -> R<CpuBuffer> {
        self.inner.upload(data)
    }
    fn zeros(&self, dtype: DType, len: usize) -> R<CpuBuffer> {
        self.inner.zeros(dtype, len)
    }
    fn download_f32(&self, buffer: &CpuBuffer) -> R<Vec<f32>> {
        self.inner.download_f32(buffer)
    }
    fn download_u32(&self, buffer: &CpuBuffer) -> R<Vec<u32>> {
        self.inner.download_u32(buffer)
    }
    fn copy_rows(&self, src: MatRef<'_, CpuBuffer>, dst: MatMut<'_, CpuBuffer>) -> R<()> {
        self.inner.copy_rows(src, dst)
    }
}

impl MatmulOps for FastCpu {
    fn matmul(
        &self,
        a: MatRef<'_, CpuBuffer>,
        a_layout: Layout,
        b: MatRef<'_, CpuBuffer>,
        b_layout: Layout,
        out: MatMut<'_, CpuBuffer>,
        epilogue: Epilogue,
    ) -> R<()> {
        self.inner.matmul(a, a_layout, b, b_layout, out, epilogue)
    }
}

fn silu(x: f32) -> f32 {
    x / (1.0 + (-x).exp())
}

const CHUNK: usize = 1 << 14;

impl ElementwiseOps for FastCpu {
    fn add_assign(&self, dst: &mut CpuBuffer, src: &CpuBuffer) -> R<()> {
        self.inner.add_assign(dst, src)
    }
    fn mul(&self, a: &CpuBuffer, b: &CpuBuffer) -> R<CpuBuffer> {
        self.inner.mul(a, b)
    }
    fn add_bias(&self, x: &mut CpuBuffer, bias: &CpuBuffer) -> R<()> {
        self.inner.add_bias(x, bias)
    }
    fn activation(&self, x: &CpuBuffer, act: Activation) -> R<CpuBuffer> {
        if act != Activation::Silu {
            return self.inner.activation(x, act);
        }
        let xs = x.f32s("activation")?;
        let mut out = vec![0.0f32; xs.len()];
        out.par_chunks_mut(CHUNK)
            .zip(xs.par_chunks(CHUNK))
            .for_each(|(o, i)| {
                for (o, &v) in o.iter_mut().zip(i) {
                    *o = silu(v);
                }
            });
        Ok(CpuBuffer::F32(out))
    }
    fn swiglu(&self, gate: &CpuBuffer, up: &CpuBuffer) -> R<CpuBuffer> {
        if gate.len() != up.len() {
            return Err(Error::LengthMismatch {
                what: "swiglu operands",
                expected: gate.len(),
                got: up.len(),
            });
        }
        let (g, u) = (gate.f32s("swiglu")?, up.f32s("swiglu")?);
        let mut out = vec![0.0f32; g.len()];
        out.par_chunks_mut(CHUNK)
            .zip(g.par_chunks(CHUNK).zip(u.par_chunks(CHUNK)))
            .for_each(|(o, (g, u))| {
                for ((o, &gv), &uv) in o.iter_mut().zip(g).zip(u) {
                    *o = silu(gv) * uv;
                }
            });
        Ok(CpuBuffer::F32(out))
    }
}

impl NormOps for FastCpu {
    fn rms_norm(&self, x: &CpuBuffer, weight: &CpuBuffer, eps: f32) -> R<CpuBuffer> {
        self.inner.rms_norm(x, weight, eps)
    }
    fn layer_norm(
        &self,
        x: &CpuBuffer,
        weight: &CpuBuffer,
        bias: &CpuBuffer,
        eps: f32,
    ) -> R<CpuBuffer> {
        self.inner.layer_norm(x, weight, bias, eps)
    }
}

impl RotaryOps for FastCpu {
    fn rotary(&self, x: &mut CpuBuffer, rope: Rope<'_, CpuBuffer>) -> R<()> {
        self.inner.rotary(x, rope)
    }
}

impl EmbeddingOps for FastCpu {
    fn gather_rows(&self, table: MatRef<'_, CpuBuffer>, ids: &[u32]) -> R<CpuBuffer> {
        self.inner.gather_rows(table, ids)
    }
    fn scatter_rows(
        &self,
        dst: MatMut<'_, CpuBuffer>,
        rows: &[u32],
        src: MatRef<'_, CpuBuffer>,
        mode: ScatterMode,
    ) -> R<()> {
        self.inner.scatter_rows(dst, rows, src, mode)
    }
}

impl LogprobOps for FastCpu {
    fn stats_fold(
        &self,
        logits: MatRef<'_, CpuBuffer>,
        vocab_offset: usize,
        targets: &CpuBuffer,
        state: &mut CpuBuffer,
    ) -> R<()> {
        self.inner.stats_fold(logits, vocab_offset, targets, state)
    }
    fn stats_finish(&self, state: &CpuBuffer, rows: usize) -> R<TokenStats<CpuBuffer>> {
        self.inner.stats_finish(state, rows)
    }
    fn stats_backward(
        &self,
        logits: MatRef<'_, CpuBuffer>,
        vocab_offset: usize,
        targets: &CpuBuffer,
        stats: &TokenStats<CpuBuffer>,
        grad: StatsGrad<'_, CpuBuffer>,
        out: MatMut<'_, CpuBuffer>,
    ) -> R<()> {
        self.inner
            .stats_backward(logits, vocab_offset, targets, stats, grad, out)
    }
}

impl crate::backend::ObjectiveOps for FastCpu {}

//! The objective's op family: the online-softmax primitives, the one-pass `token_stats`, and
//! the fused output head `linear_token_stats` (+ backward), which tiles the logits in chunks
//! planned against a workspace budget so that memory stays flat in the number of tokens.

use axpo_core::Result;
use axpo_core::backend::{
    BufferOps, DType, DeviceBuffer, Epilogue, HeadGrads, Layout, LogprobOps, MatMut, MatRef,
    STATE_WIDTH, StatsGrad, TokenStats, VocabChunk, check_head, check_targets,
};
use axpo_core::check_len;

use crate::buffer::{CudaBuffer, DevPtr};
use crate::device::{Cuda, Precision};
use crate::plan::HeadPlan;

/// Four new per-row f32 buffers.
fn stats_buffers(cuda: &Cuda, rows: usize) -> Result<TokenStats<CudaBuffer>> {
    Ok(TokenStats {
        logp: cuda.zeros(DType::F32, rows)?,
        entropy: cuda.zeros(DType::F32, rows)?,
        sum_p2: cuda.zeros(DType::F32, rows)?,
        lse: cuda.zeros(DType::F32, rows)?,
    })
}

/// Pointers to row `r0` of each statistics buffer.
pub(crate) fn stats_ptrs(
    cuda: &Cuda,
    s: &TokenStats<CudaBuffer>,
    r0: usize,
) -> Result<[DevPtr; 4]> {
    Ok([
        s.logp.dev(cuda, r0)?,
        s.entropy.dev(cuda, r0)?,
        s.sum_p2.dev(cuda, r0)?,
        s.lse.dev(cuda, r0)?,
    ])
}

/// The element type of the gradient of the logits fed to the two backward GEMMs.
#[must_use]
pub(crate) fn grad_dtype(weight: DType, hidden: DType, precision: Precision) -> DType {
    match (precision, weight, hidden) {
        (Precision::Exact, _, _) => DType::F32,
        (_, w @ (DType::Bf16 | DType::F16), h) if h == w => w,
        _ => DType::F32,
    }
}

impl Cuda {
    /// The chunk plan of the output head for `n` rows, `v` vocabulary rows and
    /// `bytes_per_elem` bytes of workspace per logit.
    pub(crate) fn head_plan(
        &self,
        n: usize,
        v: usize,
        bytes_per_elem: usize,
        chunk: VocabChunk,
    ) -> HeadPlan {
        self.head_plan_within(n, v, bytes_per_elem, self.head_workspace, chunk)
    }

    /// [`Cuda::head_plan`] under a budget of `budget` bytes.
    pub(crate) fn head_plan_within(
        &self,
        n: usize,
        v: usize,
        bytes_per_elem: usize,
        budget: usize,
        chunk: VocabChunk,
    ) -> HeadPlan {
        HeadPlan::new(n, v, bytes_per_elem, budget, chunk.0)
    }

    /// `logits[r0..r1, v0..v1] = hidden[r0..r1] · W[v0..v1]ᵀ` into a dense scratch view.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn head_logits(
        &self,
        hidden: &MatRef<'_, CudaBuffer>,
        weight: &MatRef<'_, CudaBuffer>,
        r0: usize,
        r1: usize,
        v0: usize,
        v1: usize,
        scratch: &mut CudaBuffer,
    ) -> Result<()> {
        let h = hidden.rows_range(r0, r1)?;
        let w = weight.rows_range(v0, v1)?;
        let out = MatMut::strided(scratch, 0, r1 - r0, v1 - v0, v1 - v0)?;
        self.gemm_views(
            &h,
            Layout::AsStored,
            &w,
            Layout::Transposed,
            CudaBuffer::dev_view_mut(&out, self)?,
            v1 - v0,
            Epilogue::OVERWRITE,
        )
    }
}

impl LogprobOps for Cuda {
    fn stats_fold(
        &self,
        logits: MatRef<'_, CudaBuffer>,
        vocab_offset: usize,
        targets: &CudaBuffer,
        state: &mut CudaBuffer,
    ) -> Result<()> {
        let rows = logits.rows();
        check_len("stats_fold targets", rows, targets.len())?;
        check_len("stats_fold state", rows * STATE_WIDTH, state.len())?;
        self.k_stats_fold(
            CudaBuffer::dev_view(&logits, self)?,
            rows,
            logits.cols(),
            logits.row_stride(),
            targets.dev(self, 0)?,
            vocab_offset,
            state.dev(self, 0)?,
        )
    }

    fn stats_finish(&self, state: &CudaBuffer, rows: usize) -> Result<TokenStats<CudaBuffer>> {
        check_len("stats_finish state", rows * STATE_WIDTH, state.len())?;
        let out = stats_buffers(self, rows)?;
        self.k_stats_finish(state.dev(self, 0)?, rows, stats_ptrs(self, &out, 0)?)?;
        Ok(out)
    }

    fn stats_backward(
        &self,
        logits: MatRef<'_, CudaBuffer>,
        vocab_offset: usize,
        targets: &CudaBuffer,
        stats: &TokenStats<CudaBuffer>,
        grad: StatsGrad<'_, CudaBuffer>,
        out: MatMut<'_, CudaBuffer>,
    ) -> Result<()> {
        axpo_core::backend::check_stats_backward(&logits, targets, stats, &grad, &out)?;
        let (rows, cols) = (logits.rows(), logits.cols());
        self.k_stats_backward(
            CudaBuffer::dev_view(&logits, self)?,
            rows,
            cols,
            logits.row_stride(),
            targets.dev(self, 0)?,
            vocab_offset,
            [
                stats.lse.dev(self, 0)?,
                stats.entropy.dev(self, 0)?,
                grad.d_logp.dev(self, 0)?,
            ],
            grad.d_entropy.map(|b| b.dev(self, 0)).transpose()?,
            CudaBuffer::dev_view_mut(&out, self)?,
            out.row_stride(),
        )
    }

    fn stats_init(&self, rows: usize) -> Result<CudaBuffer> {
        let s = self.zeros(DType::F32, rows * STATE_WIDTH)?;
        if rows > 0 {
            self.k_stats_init(s.dev(self, 0)?, rows)?;
        }
        Ok(s)
    }

    fn token_stats(
        &self,
        logits: MatRef<'_, CudaBuffer>,
        targets: &[u32],
    ) -> Result<TokenStats<CudaBuffer>> {
        check_len("targets vs logits rows", logits.rows(), targets.len())?;
        check_targets(targets, logits.cols())?;
        let rows = logits.rows();
        let out = stats_buffers(self, rows)?;
        let t = self.upload_u32(targets)?;
        self.k_token_stats(
            CudaBuffer::dev_view(&logits, self)?,
            rows,
            logits.cols(),
            logits.row_stride(),
            t.dev(self, 0)?,
            stats_ptrs(self, &out, 0)?,
        )?;
        Ok(out)
    }

    fn linear_token_stats(
        &self,
        hidden: MatRef<'_, CudaBuffer>,
        weight: MatRef<'_, CudaBuffer>,
        targets: &[u32],
        chunk: VocabChunk,
    ) -> Result<TokenStats<CudaBuffer>> {
        check_head(&hidden, &weight, targets, chunk)?;
        let (n, v) = (hidden.rows(), weight.rows());
        let out = stats_buffers(self, n)?;
        if n == 0 {
            return Ok(out);
        }
        let t = self.upload_u32(targets)?;
        // f32 logits: the statistics see exactly the f32-accumulated products.
        let plan = self.head_plan(n, v, 4, chunk);
        let mut scratch = self.zeros(DType::F32, plan.chunk_elems())?;
        let state = if plan.whole_rows(v) {
            None
        } else {
            Some(self.stats_init(n)?)
        };
        let mut r0 = 0;
        while r0 < n {
            let r1 = (r0 + plan.row_chunk).min(n);
            let rows = r1 - r0;
            let mut v0 = 0;
            while v0 < v {
                let v1 = (v0 + plan.vocab_chunk).min(v);
                self.head_logits(&hidden, &weight, r0, r1, v0, v1, &mut scratch)?;
                let lg = scratch.dev(self, 0)?;
                match &state {
                    None => self.k_token_stats(
                        lg,
                        rows,
                        v,
                        v,
                        t.dev(self, r0)?,
                        stats_ptrs(self, &out, r0)?,
                    )?,
                    Some(st) => self.k_stats_fold(
                        lg,
                        rows,
                        v1 - v0,
                        v1 - v0,
                        t.dev(self, r0)?,
                        v0,
                        st.dev(self, r0 * STATE_WIDTH)?,
                    )?,
                }
                v0 = v1;
            }
            r0 = r1;
        }
        if let Some(st) = &state {
            self.k_stats_finish(st.dev(self, 0)?, n, stats_ptrs(self, &out, 0)?)?;
        }
        Ok(out)
    }

    fn linear_token_stats_backward(
        &self,
        hidden: MatRef<'_, CudaBuffer>,
        weight: MatRef<'_, CudaBuffer>,
        targets: &[u32],
        stats: &TokenStats<CudaBuffer>,
        grad: StatsGrad<'_, CudaBuffer>,
        chunk: VocabChunk,
    ) -> Result<HeadGrads<CudaBuffer>> {
        check_head(&hidden, &weight, targets, chunk)?;
        let (n, v, h) = (hidden.rows(), weight.rows(), hidden.cols());
        for (what, len) in [
            ("linear backward lse", stats.lse.len()),
            ("linear backward entropy", stats.entropy.len()),
            ("linear backward d_logp", grad.d_logp.len()),
        ] {
            check_len(what, n, len)?;
        }
        if let Some(de) = grad.d_entropy {
            check_len("linear backward d_entropy", n, de.len())?;
        }
        let mut d_hidden = self.zeros(DType::F32, n * h)?;
        let mut d_weight = self.zeros(DType::F32, v * h)?;
        if n == 0 || v == 0 || h == 0 {
            return Ok(HeadGrads { d_hidden, d_weight });
        }
        let t = self.upload_u32(targets)?;
        let dz_type = grad_dtype(
            weight.buffer().dtype(),
            hidden.buffer().dtype(),
            self.precision,
        );
        let plan = self.head_plan(n, v, 4 + dz_type.size(), chunk);
        let mut logits = self.zeros(DType::F32, plan.chunk_elems())?;
        let dz = self.zeros(dz_type, plan.chunk_elems())?;
        let mut r0 = 0;
        while r0 < n {
            let r1 = (r0 + plan.row_chunk).min(n);
            let rows = r1 - r0;
            let hid = hidden.rows_range(r0, r1)?;
            let mut v0 = 0;
            while v0 < v {
                let v1 = (v0 + plan.vocab_chunk).min(v);
                let vc = v1 - v0;
                self.head_logits(&hidden, &weight, r0, r1, v0, v1, &mut logits)?;
                self.k_stats_backward(
                    logits.dev(self, 0)?,
                    rows,
                    vc,
                    vc,
                    t.dev(self, r0)?,
                    v0,
                    [
                        stats.lse.dev(self, r0)?,
                        stats.entropy.dev(self, r0)?,
                        grad.d_logp.dev(self, r0)?,
                    ],
                    grad.d_entropy.map(|b| b.dev(self, r0)).transpose()?,
                    dz.dev(self, 0)?,
                    vc,
                )?;
                let dzv = MatRef::strided(&dz, 0, rows, vc, vc)?;
                let w = weight.rows_range(v0, v1)?;
                // d hidden[r0..r1] (=|+=) dZ · W[v0..v1]
                let dh = MatMut::strided(&mut d_hidden, r0 * h, rows, h, h)?;
                self.gemm_views(
                    &dzv,
                    Layout::AsStored,
                    &w,
                    Layout::AsStored,
                    CudaBuffer::dev_view_mut(&dh, self)?,
                    h,
                    if v0 == 0 {
                        Epilogue::OVERWRITE
                    } else {
                        Epilogue::ADD
                    },
                )?;
                // d W[v0..v1] (=|+=) dZᵀ · hidden[r0..r1]
                let dw = MatMut::strided(&mut d_weight, v0 * h, vc, h, h)?;
                self.gemm_views(
                    &dzv,
                    Layout::Transposed,
                    &hid,
                    Layout::AsStored,
                    CudaBuffer::dev_view_mut(&dw, self)?,
                    h,
                    if r0 == 0 {
                        Epilogue::OVERWRITE
                    } else {
                        Epilogue::ADD
                    },
                )?;
                v0 = v1;
            }
            r0 = r1;
        }
        // The scratch buffers are freed in stream order after the last GEMM that reads them.
        drop((logits, dz));
        Ok(HeadGrads { d_hidden, d_weight })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gradient_type_follows_policy() {
        use DType::*;
        assert_eq!(grad_dtype(Bf16, Bf16, Precision::Exact), F32);
        assert_eq!(grad_dtype(Bf16, Bf16, Precision::Bf16), Bf16);
        assert_eq!(grad_dtype(Bf16, F32, Precision::Bf16), F32);
        assert_eq!(grad_dtype(F32, F32, Precision::Bf16), F32);
    }
}

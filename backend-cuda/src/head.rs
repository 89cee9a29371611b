//! The fused linear objective: output head, token statistics, the objective's per-token loss
//! and gradient, and the head's backward, in three GEMMs per chunk of tokens (the floor of
//! `logits = H Wᵀ`, `dH = dZ W`, `dW = dZᵀ H`); only the per-token log-probs and entropies
//! (`2 N` floats) come back to the host, for the core's loss and metrics.
//!
//! Per chunk of whole vocabulary rows: one GEMM writes the chunk's logits; one kernel per row
//! (`head_objective_*`) computes the online-softmax statistics, the objective's per-token loss
//! and `d logp`/`d entropy`, then `dZ` (in place over the logits when they share a type); two
//! GEMMs write `dH` for the chunk's rows and accumulate `dW`. The workspace is bounded by the
//! step's head-workspace budget, so memory does not grow with the number of tokens.

use axpo_core::Result;
use axpo_core::backend::{
    BufferOps, DType, DeviceBuffer, Epilogue, HeadGrads, HeadWorkspace, Layout, MatMut, MatRef,
    ObjectiveOps, StepOutput, StepTokens, TokenStats, VocabChunk, check_step,
    linear_objective_by_blocks,
};
use axpo_core::objective::{BlockValues, ObjectiveConfig};

use crate::buffer::CudaBuffer;
use crate::device::{Cuda, Precision};
use crate::objective::{ObjectiveParams, TokenObjectiveBuffers, token_weights};
use crate::ops::logprob::{grad_dtype, stats_ptrs};

impl ObjectiveOps for Cuda {
    /// The fused step as the module docs say. Under [`Precision::Bf16`] with half inputs the
    /// logits chunk is kept in the input type and overwritten by its gradient (as PyTorch and
    /// Liger do); otherwise f32 logits and a separate gradient buffer. The workspace is
    /// `workspace`'s budget, or the handle's ([`Cuda::with_head_workspace`]) by default.
    ///
    /// Configurations the per-token kernel does not cover (GSPO, sequence-level TIS), and
    /// budgets in which not even 64 whole vocabulary rows fit, take the core's default path
    /// ([`linear_objective_by_blocks`]) on this backend's primitives. The loss, its terms and
    /// the metrics are the core's ([`ObjectiveAccumulator`](axpo_core::objective::ObjectiveAccumulator)), from the device's log-probs and
    /// entropies.
    fn linear_objective(
        &self,
        hidden: MatRef<'_, CudaBuffer>,
        weight: MatRef<'_, CudaBuffer>,
        tokens: &StepTokens<'_>,
        config: &ObjectiveConfig,
        workspace: HeadWorkspace,
    ) -> Result<StepOutput<CudaBuffer>> {
        let mut acc = check_step(&hidden, &weight, tokens, config)?;
        let Ok(params) = ObjectiveParams::from_config(config) else {
            return linear_objective_by_blocks(self, hidden, weight, tokens, config, workspace);
        };
        let (n, v, h) = (hidden.rows(), weight.rows(), hidden.cols());
        let (ht, wt) = (hidden.buffer().dtype(), weight.buffer().dtype());
        let dz_type = grad_dtype(wt, ht, self.precision);
        let in_place = self.precision == Precision::Bf16 && dz_type == wt && wt == ht;
        let logits_type = if in_place { wt } else { DType::F32 };
        let per_elem = logits_type.size() + if in_place { 0 } else { dz_type.size() };
        let budget = workspace.bytes_or(self.head_workspace);
        let plan = self.head_plan_within(n, v, per_elem, budget, VocabChunk::default());
        if !plan.whole_rows(v) {
            return linear_objective_by_blocks(self, hidden, weight, tokens, config, workspace);
        }
        let ot = tokens.objective;
        let weights = token_weights(config.aggregation, ot.seq_offsets, n);
        let t = self.upload_u32(tokens.targets)?;
        let old = self.upload_f32(ot.old_logp)?;
        let adv = self.upload_f32(ot.advantages)?;
        let w = self.upload_f32(&weights)?;
        let rollout = ot.rollout_logp.map(|r| self.upload_f32(r)).transpose()?;
        let reference = ot.ref_logp.map(|r| self.upload_f32(r)).transpose()?;
        let stats = TokenStats {
            logp: self.zeros(DType::F32, n)?,
            entropy: self.zeros(DType::F32, n)?,
            sum_p2: self.zeros(DType::F32, n)?,
            lse: self.zeros(DType::F32, n)?,
        };
        let tok = TokenObjectiveBuffers {
            loss: self.zeros(DType::F32, n)?,
            d_logp: self.zeros(DType::F32, n)?,
            d_entropy: self.zeros(DType::F32, n)?,
        };
        let mut d_hidden = self.zeros(DType::F32, n * h)?;
        let mut d_weight = self.zeros(DType::F32, v * h)?;
        let mut logits = self.zeros(logits_type, plan.chunk_elems())?;
        let separate = if in_place {
            None
        } else {
            Some(self.zeros(dz_type, plan.chunk_elems())?)
        };
        let mut r0 = 0;
        while r0 < n {
            let r1 = (r0 + plan.row_chunk).min(n);
            let rows = r1 - r0;
            self.head_logits(&hidden, &weight, r0, r1, 0, v, &mut logits)?;
            let lg = logits.dev(self, 0)?;
            let dz = match &separate {
                Some(b) => b.dev(self, 0)?,
                None => lg,
            };
            let [lp, en, sp, ls] = stats_ptrs(self, &stats, r0)?;
            self.k_head_objective(
                lg,
                rows,
                v,
                v,
                t.dev(self, r0)?,
                params,
                [old.dev(self, r0)?, adv.dev(self, r0)?, w.dev(self, r0)?],
                rollout.as_ref().map(|b| b.dev(self, r0)).transpose()?,
                reference.as_ref().map(|b| b.dev(self, r0)).transpose()?,
                [
                    lp,
                    en,
                    sp,
                    ls,
                    tok.loss.dev(self, r0)?,
                    tok.d_logp.dev(self, r0)?,
                    tok.d_entropy.dev(self, r0)?,
                ],
                dz,
                v,
            )?;
            let dz_buf = separate.as_ref().unwrap_or(&logits);
            let dzv = MatRef::strided(dz_buf, 0, rows, v, v)?;
            let hid = hidden.rows_range(r0, r1)?;
            let dh = MatMut::strided(&mut d_hidden, r0 * h, rows, h, h)?;
            self.gemm_views(
                &dzv,
                Layout::AsStored,
                &weight,
                Layout::AsStored,
                CudaBuffer::dev_view_mut(&dh, self)?,
                h,
                Epilogue::OVERWRITE,
            )?;
            let dw = MatMut::new(&mut d_weight, v, h)?;
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
            r0 = r1;
        }
        drop(tok);
        let logp = self.download_f32(&stats.logp)?;
        let entropy = self.download_f32(&stats.entropy)?;
        let (mut d_logp, mut d_entropy) = (vec![0.0f32; n], vec![0.0f32; n]);
        acc.block(
            BlockValues::new(&logp, Some(&entropy)),
            &mut d_logp,
            &mut d_entropy,
        )?;
        Ok(StepOutput::new(
            acc.finish()?,
            logp,
            entropy,
            HeadGrads { d_hidden, d_weight },
        ))
    }
}

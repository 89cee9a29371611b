//! The fused linear objective: output head, token statistics, the objective's per-token loss
//! and gradient, and the head's backward, in three GEMMs per chunk of tokens and without any
//! device-to-host round trip (the floor of `logits = H Wᵀ`, `dH = dZ W`, `dW = dZᵀ H`).
//!
//! Per chunk of whole vocabulary rows: one GEMM writes the chunk's logits; one kernel per row
//! (`head_objective_*`) computes the online-softmax statistics, the objective's per-token loss
//! and `d logp`/`d entropy`, then `dZ` (in place over the logits when they share a type); two
//! GEMMs write `dH` for the chunk's rows and accumulate `dW`. The workspace is bounded by the
//! handle's head-workspace budget, so memory does not grow with the number of tokens.

use axpo_core::backend::{
    BufferOps, DType, DeviceBuffer, Epilogue, HeadGrads, Layout, LogprobOps, MatMut, MatRef,
    StatsGrad, TokenStats, VocabChunk, check_head,
};
use axpo_core::objective::ObjectiveConfig;
use axpo_core::{Error, Result};

use crate::buffer::CudaBuffer;
use crate::device::{Cuda, Precision};
use crate::objective::{ObjectiveParams, ObjectiveTokens, TokenObjectiveBuffers, token_weights};
use crate::ops::logprob::{grad_dtype, stats_ptrs};

/// What [`Cuda::linear_objective`] returns.
#[derive(Debug)]
pub struct LinearObjective {
    /// The loss (sum of the per-token contributions, in f64 on the host).
    pub loss: f64,
    /// The per-token statistics.
    pub stats: TokenStats<CudaBuffer>,
    /// Per-token loss contributions and gradients.
    pub tokens: TokenObjectiveBuffers,
    /// `d loss / d hidden` and `d loss / d W` (f32).
    pub grads: HeadGrads<CudaBuffer>,
}

impl Cuda {
    /// Loss and gradients of the objective on the output head `logits = hidden · weightᵀ`
    /// (`hidden`: `N x H`, `weight`: `V x H`), fused as the module docs say. Under
    /// [`Precision::Bf16`] with half inputs the logits chunk is kept in the input type and
    /// overwritten by its gradient (as PyTorch and Liger do); otherwise f32 logits and a
    /// separate gradient buffer.
    ///
    /// When not even 64 whole vocabulary rows fit the workspace, it falls back to
    /// `linear_token_stats`, [`Cuda::objective_tokens`] and `linear_token_stats_backward`
    /// (four GEMMs, still without a host round trip).
    ///
    /// # Errors
    /// As `linear_token_stats` and [`Cuda::objective_tokens`].
    pub fn linear_objective(
        &self,
        hidden: MatRef<'_, CudaBuffer>,
        weight: MatRef<'_, CudaBuffer>,
        targets: &[u32],
        config: &ObjectiveConfig,
        tokens: &ObjectiveTokens<'_>,
        chunk: VocabChunk,
    ) -> Result<LinearObjective> {
        check_head(&hidden, &weight, targets, chunk)?;
        let params = ObjectiveParams::from_config(config)?;
        let (n, v, h) = (hidden.rows(), weight.rows(), hidden.cols());
        tokens.check(n, config)?;
        if n == 0 {
            return Err(Error::NoTrainedTokens);
        }
        let (ht, wt) = (hidden.buffer().dtype(), weight.buffer().dtype());
        let dz_type = grad_dtype(wt, ht, self.precision);
        let in_place = self.precision == Precision::Bf16 && dz_type == wt && wt == ht;
        let logits_type = if in_place { wt } else { DType::F32 };
        let per_elem = logits_type.size() + if in_place { 0 } else { dz_type.size() };
        let plan = self.head_plan(n, v, per_elem, chunk);
        if !plan.whole_rows(v) {
            return self.linear_objective_unfused(hidden, weight, targets, config, tokens, chunk);
        }
        let weights = token_weights(config.aggregation, tokens.seq_offsets, n)?;
        let t = self.upload_u32(targets)?;
        let old = self.upload_f32(tokens.old_logp)?;
        let adv = self.upload_f32(tokens.advantages)?;
        let w = self.upload_f32(&weights)?;
        let rollout = tokens
            .rollout_logp
            .map(|r| self.upload_f32(r))
            .transpose()?;
        let reference = tokens.ref_logp.map(|r| self.upload_f32(r)).transpose()?;
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
        self.linear_objective_result(stats, tok, HeadGrads { d_hidden, d_weight })
    }

    /// The result of either path: the per-token losses are summed on the host in f64.
    fn linear_objective_result(
        &self,
        stats: TokenStats<CudaBuffer>,
        tokens: TokenObjectiveBuffers,
        grads: HeadGrads<CudaBuffer>,
    ) -> Result<LinearObjective> {
        let loss = self
            .download_f32(&tokens.loss)?
            .iter()
            .map(|&x| f64::from(x))
            .sum();
        Ok(LinearObjective {
            loss,
            stats,
            tokens,
            grads,
        })
    }

    /// The four-GEMM path: forward statistics, the objective on the device, the backward.
    fn linear_objective_unfused(
        &self,
        hidden: MatRef<'_, CudaBuffer>,
        weight: MatRef<'_, CudaBuffer>,
        targets: &[u32],
        config: &ObjectiveConfig,
        tokens: &ObjectiveTokens<'_>,
        chunk: VocabChunk,
    ) -> Result<LinearObjective> {
        let stats = self.linear_token_stats(hidden, weight, targets, chunk)?;
        let tok = self.objective_tokens(config, &stats.logp, Some(&stats.entropy), tokens)?;
        let grads = self.linear_token_stats_backward(
            hidden,
            weight,
            targets,
            &stats,
            StatsGrad {
                d_logp: &tok.d_logp,
                d_entropy: if config.entropy_coef != 0.0 {
                    Some(&tok.d_entropy)
                } else {
                    None
                },
            },
            chunk,
        )?;
        self.linear_objective_result(stats, tok, grads)
    }
}

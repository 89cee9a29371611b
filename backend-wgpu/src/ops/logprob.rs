//! Per-token statistics and their backward: the one-pass `token_stats` kernel, the
//! `stats_*` primitives, and the chunked output-head ops built from the tiled matmul, the fold
//! kernel and the matmul's fused logit-gradient epilogue.

use axpo_core::backend::{
    DType, Epilogue, HeadGrads, Layout, LogprobOps, MatMut, MatRef, STATE_WIDTH, StatsGrad,
    TokenStats, VocabChunk, check_head, check_targets,
};
use axpo_core::check_len;
use axpo_core::{Error, Result};

use crate::Wgpu;
use crate::context::{Job, WgpuBuffer, Window, dtype_err, f32_out, float, u};
use crate::kernels::Family;
use crate::ops::buffer::{row_blocks, span};
use crate::ops::matmul::{Epi, Out};

fn u32_buf(op: &'static str, b: &WgpuBuffer) -> Result<()> {
    if b.dtype == DType::U32 {
        Ok(())
    } else {
        Err(dtype_err(op, b.dtype))
    }
}

impl Wgpu {
    fn stats_outputs(&self, rows: usize) -> Result<TokenStats<WgpuBuffer>> {
        Ok(TokenStats {
            logp: self.inner.zeros(DType::F32, rows)?,
            entropy: self.inner.zeros(DType::F32, rows)?,
            sum_p2: self.inner.zeros(DType::F32, rows)?,
            lse: self.inner.zeros(DType::F32, rows)?,
        })
    }

    /// Jobs folding `logits` into `state` (one workgroup per row).
    fn fold_jobs<'a>(
        &self,
        logits: MatRef<'a, WgpuBuffer>,
        vocab_offset: usize,
        targets: &'a WgpuBuffer,
        state: &'a WgpuBuffer,
        jobs: &mut Vec<Job<'a>>,
    ) -> Result<()> {
        let (rows, cols, zs) = (logits.rows(), logits.cols(), logits.row_stride());
        let zd = logits.buffer().dtype;
        for (r0, r1) in row_blocks(
            self,
            rows,
            &[(zd, zs), (DType::F32, STATE_WIDTH)],
            "stats_fold",
        )? {
            let (z0, z1) = span(logits.offset(), zs, cols, r0, r1);
            let (zw, zbase) = self.inner.window(logits.buffer(), z0, z1)?;
            let (tw, tbase) = self.inner.window(targets, r0, r1)?;
            let (sw, sbase) = self
                .inner
                .window(state, r0 * STATE_WIDTH, r1 * STATE_WIDTH)?;
            jobs.push(
                Job::new(Family::Logprob, "stats_fold", r1 - r0)
                    .dtype("z", zd)
                    .bind(1, zw)
                    .bind(2, tw)
                    .bind(3, sw)
                    .params(&[
                        u(r1 - r0)?,
                        u(cols)?,
                        u(z0)? - zbase,
                        u(zs)?,
                        u(vocab_offset)?,
                        u(r0)? - tbase,
                        u(r0 * STATE_WIDTH)? - sbase,
                        0,
                    ]),
            );
        }
        Ok(())
    }

    /// Jobs turning `state` into the four statistics (one thread per row).
    fn finish_jobs<'a>(
        &self,
        state: &'a WgpuBuffer,
        rows: usize,
        out: &'a TokenStats<WgpuBuffer>,
        jobs: &mut Vec<Job<'a>>,
    ) -> Result<()> {
        for (r0, r1) in row_blocks(self, rows, &[(DType::F32, STATE_WIDTH)], "stats_finish")? {
            let (sw, sbase) = self
                .inner
                .window(state, r0 * STATE_WIDTH, r1 * STATE_WIDTH)?;
            let (w4, b4) = self.inner.window(&out.logp, r0, r1)?;
            let (w5, _) = self.inner.window(&out.entropy, r0, r1)?;
            let (w6, _) = self.inner.window(&out.sum_p2, r0, r1)?;
            let (w7, _) = self.inner.window(&out.lse, r0, r1)?;
            jobs.push(
                Job::new(Family::Logprob, "stats_finish", (r1 - r0).div_ceil(256))
                    .bind(3, sw)
                    .bind(4, w4)
                    .bind(5, w5)
                    .bind(6, w6)
                    .bind(7, w7)
                    .params(&[
                        u(r1 - r0)?,
                        0,
                        0,
                        0,
                        0,
                        0,
                        u(r0 * STATE_WIDTH)? - sbase,
                        u(r0)? - b4,
                    ]),
            );
        }
        Ok(())
    }

    /// Rows `r0..r1` of the backward's four per-row inputs, bound at 8..=11 by both kernels
    /// that read them: `lse`, `entropy`, `d log p`, and `d entropy` (or `d log p` again when
    /// there is no entropy gradient); the element index each binding begins at; and the flag
    /// (1 or 0) saying whether the entropy gradient is present.
    fn grad_rows<'a>(
        &self,
        stats: &'a TokenStats<WgpuBuffer>,
        grad: StatsGrad<'a, WgpuBuffer>,
        r0: usize,
        r1: usize,
    ) -> Result<([Window<'a>; 4], [u32; 4], u32)> {
        let (lw, lb) = self.inner.window(&stats.lse, r0, r1)?;
        let (ew, eb) = self.inner.window(&stats.entropy, r0, r1)?;
        let (gw, gb) = self.inner.window(grad.d_logp, r0, r1)?;
        let (hw, hb, has) = match grad.d_entropy {
            Some(e) => {
                let (w, b) = self.inner.window(e, r0, r1)?;
                (w, b, 1)
            }
            None => (gw, gb, 0),
        };
        Ok(([lw, ew, gw, hw], [lb, eb, gb, hb], has))
    }

    /// Jobs writing `[lse, entropy, g_logp, g_entropy]` per row into `rowp`.
    fn pack_jobs<'a>(
        &self,
        stats: &'a TokenStats<WgpuBuffer>,
        grad: StatsGrad<'a, WgpuBuffer>,
        rows: usize,
        rowp: &'a WgpuBuffer,
        jobs: &mut Vec<Job<'a>>,
    ) -> Result<()> {
        for (r0, r1) in row_blocks(self, rows, &[(DType::F32, 4)], "pack_rows")? {
            let ([lw, ew, gw, hw], [lb, eb, gb, hb], has) = self.grad_rows(stats, grad, r0, r1)?;
            let (ow, ob) = self.inner.window(rowp, 4 * r0, 4 * r1)?;
            let r = u(r0)?;
            jobs.push(
                Job::new(Family::Logprob, "pack_rows", (r1 - r0).div_ceil(256))
                    .bind(8, lw)
                    .bind(9, ew)
                    .bind(10, gw)
                    .bind(11, hw)
                    .bind(12, ow)
                    .params(&[
                        u(r1 - r0)?,
                        0,
                        0,
                        0,
                        0,
                        0,
                        r - lb,
                        r - eb,
                        r - gb,
                        r - hb,
                        has,
                        u(4 * r0)? - ob,
                        0,
                        1,
                    ]),
            );
        }
        Ok(())
    }

    fn check_grad(
        stats: &TokenStats<WgpuBuffer>,
        grad: &StatsGrad<'_, WgpuBuffer>,
        rows: usize,
    ) -> Result<()> {
        axpo_core::backend::check_stats_grad(stats, grad, rows)?;
        f32_out("stats_backward", &stats.lse)?;
        f32_out("stats_backward", &stats.entropy)?;
        f32_out("stats_backward", grad.d_logp)?;
        if let Some(de) = grad.d_entropy {
            f32_out("stats_backward", de)?;
        }
        Ok(())
    }
}

impl LogprobOps for Wgpu {
    fn stats_fold(
        &self,
        logits: MatRef<'_, WgpuBuffer>,
        vocab_offset: usize,
        targets: &WgpuBuffer,
        state: &mut WgpuBuffer,
    ) -> Result<()> {
        let rows = logits.rows();
        check_len("stats_fold targets", rows, targets.len)?;
        check_len("stats_fold state", rows * STATE_WIDTH, state.len)?;
        u32_buf("stats_fold", targets)?;
        f32_out("stats_fold", state)?;
        float("stats_fold", logits.buffer().dtype)?;
        if rows == 0 || logits.cols() == 0 {
            return Ok(());
        }
        let state: &WgpuBuffer = state;
        let mut jobs = Vec::new();
        self.fold_jobs(logits, vocab_offset, targets, state, &mut jobs)?;
        self.inner.submit(&jobs, "stats_fold")
    }

    fn stats_finish(&self, state: &WgpuBuffer, rows: usize) -> Result<TokenStats<WgpuBuffer>> {
        check_len("stats_finish state", rows * STATE_WIDTH, state.len)?;
        f32_out("stats_finish", state)?;
        let out = self.stats_outputs(rows)?;
        let mut jobs = Vec::new();
        self.finish_jobs(state, rows, &out, &mut jobs)?;
        self.inner.submit(&jobs, "stats_finish")?;
        Ok(out)
    }

    fn stats_backward(
        &self,
        logits: MatRef<'_, WgpuBuffer>,
        vocab_offset: usize,
        targets: &WgpuBuffer,
        stats: &TokenStats<WgpuBuffer>,
        grad: StatsGrad<'_, WgpuBuffer>,
        mut out: MatMut<'_, WgpuBuffer>,
    ) -> Result<()> {
        let (rows, cols) = (logits.rows(), logits.cols());
        if out.rows() != rows || out.cols() != cols {
            return Err(Error::Shape {
                op: "stats_backward",
                reason: "output shape differs from the logits chunk",
            });
        }
        check_len("stats_backward targets", rows, targets.len)?;
        u32_buf("stats_backward", targets)?;
        Self::check_grad(stats, &grad, rows)?;
        let zd = float("stats_backward", logits.buffer().dtype)?;
        f32_out("stats_backward", out.buffer())?;
        if rows == 0 || cols == 0 {
            return Ok(());
        }
        let (zs, os, o_off) = (logits.row_stride(), out.row_stride(), out.offset());
        let out_buf: &WgpuBuffer = out.buffer_mut();
        let mut jobs = Vec::new();
        for (r0, r1) in row_blocks(self, rows, &[(zd, zs), (DType::F32, os)], "stats_backward")? {
            let (z0, z1) = span(logits.offset(), zs, cols, r0, r1);
            let (zw, zb) = self.inner.window(logits.buffer(), z0, z1)?;
            let (d0, d1) = span(o_off, os, cols, r0, r1);
            let (ow, ob) = self.inner.window(out_buf, d0, d1)?;
            let (tw, tb) = self.inner.window(targets, r0, r1)?;
            let ([lw, ew, gw, hw], [lb, eb, gb, hb], has) = self.grad_rows(stats, grad, r0, r1)?;
            let r = u(r0)?;
            jobs.push(
                Job::new(
                    Family::Logprob,
                    "stats_backward",
                    (r1 - r0) * cols.div_ceil(1024),
                )
                .dtype("z", zd)
                .bind(1, zw)
                .bind(2, tw)
                .bind(8, lw)
                .bind(9, ew)
                .bind(10, gw)
                .bind(11, hw)
                .bind(12, ow)
                .params(&[
                    u(r1 - r0)?,
                    u(cols)?,
                    u(z0)? - zb,
                    u(zs)?,
                    u(vocab_offset)?,
                    r - tb,
                    r - lb,
                    r - eb,
                    r - gb,
                    r - hb,
                    has,
                    u(d0)? - ob,
                    u(os)?,
                    u(cols.div_ceil(1024))?,
                ]),
            );
        }
        self.inner.submit(&jobs, "stats_backward")
    }

    fn token_stats(
        &self,
        logits: MatRef<'_, WgpuBuffer>,
        targets: &[u32],
    ) -> Result<TokenStats<WgpuBuffer>> {
        check_len("targets vs logits rows", logits.rows(), targets.len())?;
        check_targets(targets, logits.cols())?;
        let zd = float("token_stats", logits.buffer().dtype)?;
        let (rows, cols, zs) = (logits.rows(), logits.cols(), logits.row_stride());
        let out = self.stats_outputs(rows)?;
        if rows == 0 {
            return Ok(out);
        }
        let t = self
            .inner
            .upload(axpo_core::backend::HostData::U32(targets))?;
        let mut jobs = Vec::new();
        for (r0, r1) in row_blocks(self, rows, &[(zd, zs)], "token_stats")? {
            let (z0, z1) = span(logits.offset(), zs, cols, r0, r1);
            let (zw, zb) = self.inner.window(logits.buffer(), z0, z1)?;
            let (tw, tb) = self.inner.window(&t, r0, r1)?;
            let (w4, b4) = self.inner.window(&out.logp, r0, r1)?;
            let (w5, _) = self.inner.window(&out.entropy, r0, r1)?;
            let (w6, _) = self.inner.window(&out.sum_p2, r0, r1)?;
            let (w7, _) = self.inner.window(&out.lse, r0, r1)?;
            jobs.push(
                Job::new(Family::Logprob, "token_stats", r1 - r0)
                    .dtype("z", zd)
                    .bind(1, zw)
                    .bind(2, tw)
                    .bind(4, w4)
                    .bind(5, w5)
                    .bind(6, w6)
                    .bind(7, w7)
                    .params(&[
                        u(r1 - r0)?,
                        u(cols)?,
                        u(z0)? - zb,
                        u(zs)?,
                        0,
                        u(r0)? - tb,
                        0,
                        u(r0)? - b4,
                    ]),
            );
        }
        self.inner.submit(&jobs, "token_stats")?;
        Ok(out)
    }

    fn linear_token_stats(
        &self,
        hidden: MatRef<'_, WgpuBuffer>,
        weight: MatRef<'_, WgpuBuffer>,
        targets: &[u32],
        chunk: VocabChunk,
    ) -> Result<TokenStats<WgpuBuffer>> {
        check_head(&hidden, &weight, targets, chunk)?;
        float("linear_token_stats", hidden.buffer().dtype)?;
        float("linear_token_stats", weight.buffer().dtype)?;
        let (n, v) = (hidden.rows(), weight.rows());
        let t = self
            .inner
            .upload(axpo_core::backend::HostData::U32(targets))?;
        let state = self.stats_init(n)?;
        let out = self.stats_outputs(n)?;
        if n == 0 {
            return Ok(out);
        }
        let c = chunk.0.min(v.max(1));
        let logits = self.inner.zeros(DType::F32, n * c)?;
        let mut v0 = 0;
        while v0 < v {
            let v1 = (v0 + c).min(v);
            let w = weight.rows_range(v0, v1)?;
            let mut jobs = Vec::new();
            self.plan_matmul(
                hidden,
                Layout::AsStored,
                w,
                Layout::Transposed,
                Out {
                    buf: &logits,
                    off: 0,
                    stride: c,
                    m: n,
                    n: v1 - v0,
                },
                Epi::Plain(Epilogue::OVERWRITE),
                &mut jobs,
            )?;
            let view = MatRef::strided(&logits, 0, n, v1 - v0, c)?;
            self.fold_jobs(view, v0, &t, &state, &mut jobs)?;
            self.inner.submit(&jobs, "linear_token_stats")?;
            v0 = v1;
        }
        let mut jobs = Vec::new();
        self.finish_jobs(&state, n, &out, &mut jobs)?;
        self.inner.submit(&jobs, "linear_token_stats")?;
        Ok(out)
    }

    fn linear_token_stats_backward(
        &self,
        hidden: MatRef<'_, WgpuBuffer>,
        weight: MatRef<'_, WgpuBuffer>,
        targets: &[u32],
        stats: &TokenStats<WgpuBuffer>,
        grad: StatsGrad<'_, WgpuBuffer>,
        chunk: VocabChunk,
    ) -> Result<HeadGrads<WgpuBuffer>> {
        check_head(&hidden, &weight, targets, chunk)?;
        float("linear_token_stats_backward", hidden.buffer().dtype)?;
        float("linear_token_stats_backward", weight.buffer().dtype)?;
        let (n, v, h) = (hidden.rows(), weight.rows(), hidden.cols());
        Self::check_grad(stats, &grad, n)?;
        let d_hidden = self.inner.zeros(DType::F32, n * h)?;
        let d_weight = self.inner.zeros(DType::F32, v * h)?;
        if n == 0 || v == 0 || h == 0 {
            return Ok(HeadGrads { d_hidden, d_weight });
        }
        let t = self
            .inner
            .upload(axpo_core::backend::HostData::U32(targets))?;
        let rowp = self.inner.zeros(DType::F32, 4 * n)?;
        let mut jobs = Vec::new();
        self.pack_jobs(stats, grad, n, &rowp, &mut jobs)?;
        self.inner.submit(&jobs, "linear_token_stats_backward")?;
        let c = chunk.0.min(v);
        let dz = self.inner.zeros(DType::F32, n * c)?;
        let mut v0 = 0;
        while v0 < v {
            let v1 = (v0 + c).min(v);
            let w = weight.rows_range(v0, v1)?;
            let cw = v1 - v0;
            let mut jobs = Vec::new();
            // 1. The chunk's logits, turned into d loss / d logits in the epilogue.
            self.plan_matmul(
                hidden,
                Layout::AsStored,
                w,
                Layout::Transposed,
                Out {
                    buf: &dz,
                    off: 0,
                    stride: c,
                    m: n,
                    n: cw,
                },
                Epi::LogitGrad {
                    targets: &t,
                    rowp: &rowp,
                    row0: 0,
                    vocab0: v0,
                },
                &mut jobs,
            )?;
            let dzv = MatRef::strided(&dz, 0, n, cw, c)?;
            // 2. d hidden += dZ W_chunk.
            self.plan_matmul(
                dzv,
                Layout::AsStored,
                w,
                Layout::AsStored,
                Out {
                    buf: &d_hidden,
                    off: 0,
                    stride: h,
                    m: n,
                    n: h,
                },
                Epi::Plain(Epilogue::ADD),
                &mut jobs,
            )?;
            // 3. d W[chunk] = dZᵀ hidden.
            self.plan_matmul(
                dzv,
                Layout::Transposed,
                hidden,
                Layout::AsStored,
                Out {
                    buf: &d_weight,
                    off: v0 * h,
                    stride: h,
                    m: cw,
                    n: h,
                },
                Epi::Plain(Epilogue::OVERWRITE),
                &mut jobs,
            )?;
            self.inner.submit(&jobs, "linear_token_stats_backward")?;
            v0 = v1;
        }
        Ok(HeadGrads { d_hidden, d_weight })
    }
}

/// The training step: the core's default (`linear_objective_by_blocks`) on the WGSL
/// primitives above.
impl axpo_core::backend::ObjectiveOps for Wgpu {}

//! The online-softmax statistics and their backward on the CPU (f64 arithmetic per chunk).

use alloc::vec::Vec;

use super::{Cpu, CpuBuffer, CpuGemm};
use crate::backend::{
    DeviceBuffer, LogprobOps, MatMut, MatRef, STATE_WIDTH, StatsGrad, StatsState, TokenStats,
    check_stats_backward, logit_grad,
};
use crate::error::{Error, Result, check_len};

impl<G: CpuGemm> LogprobOps for Cpu<G> {
    fn stats_fold(
        &self,
        logits: MatRef<'_, CpuBuffer>,
        vocab_offset: usize,
        targets: &CpuBuffer,
        state: &mut CpuBuffer,
    ) -> Result<()> {
        let rows = logits.rows();
        check_len("stats_fold targets", rows, targets.len())?;
        check_len("stats_fold state", rows * STATE_WIDTH, state.len())?;
        let t = targets.u32s("stats_fold")?;
        let z = CpuBuffer::dense_f32(&logits, "stats_fold")?;
        let cols = logits.cols();
        let st = state.f32s_mut("stats_fold")?;
        for r in 0..rows {
            let row = &z[r * cols..(r + 1) * cols];
            let target = (t[r] as usize)
                .checked_sub(vocab_offset)
                .filter(|&i| i < cols);
            let chunk = StatsState::<f64>::from_chunk(row.iter().map(|&v| f64::from(v)), target);
            let cur = &mut st[r * STATE_WIDTH..(r + 1) * STATE_WIDTH];
            let s = StatsState::from_array([cur[0], cur[1], cur[2], cur[3], cur[4]]);
            let mut wide = StatsState {
                max: f64::from(s.max),
                sum: f64::from(s.sum),
                weighted: f64::from(s.weighted),
                square: f64::from(s.square),
                target: f64::from(s.target),
            };
            wide.merge(&chunk);
            if target.is_some() {
                wide.target = chunk.target;
            }
            cur.copy_from_slice(&[
                wide.max as f32,
                wide.sum as f32,
                wide.weighted as f32,
                wide.square as f32,
                wide.target as f32,
            ]);
        }
        Ok(())
    }

    fn stats_finish(&self, state: &CpuBuffer, rows: usize) -> Result<TokenStats<CpuBuffer>> {
        check_len("stats_finish state", rows * STATE_WIDTH, state.len())?;
        let st = state.f32s("stats_finish")?;
        let mut out = [
            Vec::with_capacity(rows),
            Vec::with_capacity(rows),
            Vec::with_capacity(rows),
            Vec::with_capacity(rows),
        ];
        for r in 0..rows {
            let c = &st[r * STATE_WIDTH..(r + 1) * STATE_WIDTH];
            let wide = StatsState {
                max: f64::from(c[0]),
                sum: f64::from(c[1]),
                weighted: f64::from(c[2]),
                square: f64::from(c[3]),
                target: f64::from(c[4]),
            };
            let f = wide.finish();
            let vals = [
                f.logp as f32,
                f.entropy as f32,
                f.sum_p2 as f32,
                f.lse as f32,
            ];
            // A masked target (`z_y = -inf`) has `log p = -inf` by definition; any other
            // infinity or NaN means the row had no finite logit or overflowed f32.
            let masked_target = c[4] == f32::NEG_INFINITY && vals[0] == f32::NEG_INFINITY;
            let bad_logp = !vals[0].is_finite() && !masked_target;
            if bad_logp || vals[1..].iter().any(|v| !v.is_finite()) {
                return Err(Error::NonFinite {
                    what: "token statistics (a row without a finite logit, or logits spanning \
                           more than the f32 range)",
                    index: r,
                });
            }
            out[0].push(f.logp as f32);
            out[1].push(f.entropy as f32);
            out[2].push(f.sum_p2 as f32);
            out[3].push(f.lse as f32);
        }
        let [logp, entropy, sum_p2, lse] = out;
        Ok(TokenStats {
            logp: CpuBuffer::F32(logp),
            entropy: CpuBuffer::F32(entropy),
            sum_p2: CpuBuffer::F32(sum_p2),
            lse: CpuBuffer::F32(lse),
        })
    }

    fn stats_backward(
        &self,
        logits: MatRef<'_, CpuBuffer>,
        vocab_offset: usize,
        targets: &CpuBuffer,
        stats: &TokenStats<CpuBuffer>,
        grad: StatsGrad<'_, CpuBuffer>,
        mut out: MatMut<'_, CpuBuffer>,
    ) -> Result<()> {
        check_stats_backward(&logits, targets, stats, &grad, &out)?;
        let (rows, cols) = (logits.rows(), logits.cols());
        let t = targets.u32s("stats_backward")?;
        let z = CpuBuffer::dense_f32(&logits, "stats_backward")?;
        let lse = stats.lse.f32s("stats_backward")?;
        let ent = stats.entropy.f32s("stats_backward")?;
        let gl = grad.d_logp.f32s("stats_backward")?;
        let ge = match grad.d_entropy {
            Some(b) => Some(b.f32s("stats_backward")?),
            None => None,
        };
        let (off, stride) = (out.offset(), out.row_stride());
        let o = out.buffer_mut().f32s_mut("stats_backward")?;
        for r in 0..rows {
            let g_e = ge.as_ref().map_or(0.0, |g| f64::from(g[r]));
            for c in 0..cols {
                let v = vocab_offset + c;
                o[off + r * stride + c] = logit_grad(
                    f64::from(z[r * cols + c]),
                    v == t[r] as usize,
                    f64::from(lse[r]),
                    f64::from(ent[r]),
                    f64::from(gl[r]),
                    g_e,
                ) as f32;
            }
        }
        Ok(())
    }
}

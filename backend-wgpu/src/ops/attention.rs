//! Masked softmax (rows split into binding-sized blocks) and fused flash-style attention
//! (scores stay in workgroup memory). Attention falls back to the trait's default composition
//! (tiled matmuls and the masked softmax, which split themselves) when a head is wider than 128
//! or an operand does not fit one storage binding.

use axpo_core::backend::{
    AttentionMask, AttentionOps, AttentionSpec, DType, MatRef, check_attention, check_mask,
};
use axpo_core::{Error, Result};

use crate::Wgpu;
use crate::context::{Job, WgpuBuffer, f, f32_out, float, u};
use crate::kernels::Family;
use crate::ops::buffer::row_blocks;

/// The mask as `(kind, past, bounds)` for the shaders.
fn mask_words(mask: AttentionMask<'_>) -> Result<(u32, usize, Vec<u32>)> {
    Ok(match mask {
        AttentionMask::Full => (0, 0, Vec::new()),
        AttentionMask::Causal { past } => (1, past, Vec::new()),
        AttentionMask::Segments(b) => {
            (2, 0, b.iter().map(|&v| u(v)).collect::<Result<Vec<u32>>>()?)
        }
        _ => {
            return Err(Error::Shape {
                op: "attention mask",
                reason: "mask kind not supported by the wgpu backend",
            });
        }
    })
}

/// Widest head the fused kernel stages in workgroup memory.
const HD_MAX: usize = 128;
/// Query rows per workgroup.
const BR: usize = 16;
/// Workgroup memory the fused kernel declares: q, k, v tiles of BR x HD_MAX, a BR x BR score
/// tile and two words.
const WORKGROUP_BYTES: u32 = (3 * BR * HD_MAX * 4 + BR * BR * 4 + 8) as u32;

fn view_span(x: &MatRef<'_, WgpuBuffer>) -> (usize, usize) {
    if x.rows() == 0 {
        (x.offset(), x.offset())
    } else {
        (
            x.offset(),
            x.offset() + (x.rows() - 1) * x.row_stride() + x.cols(),
        )
    }
}

impl Wgpu {
    /// The default composition of the trait (per head: matmul, masked softmax, matmul).
    fn attention_composed(
        &self,
        q: MatRef<'_, WgpuBuffer>,
        k: MatRef<'_, WgpuBuffer>,
        v: MatRef<'_, WgpuBuffer>,
        spec: AttentionSpec<'_>,
    ) -> Result<WgpuBuffer> {
        let mut out = self
            .inner
            .zeros(DType::F32, q.rows() * spec.heads * spec.head_dim)?;
        axpo_core::backend::attention_by_matmul(self, q, k, v, spec, &mut out)?;
        Ok(out)
    }
}

impl AttentionOps for Wgpu {
    fn attention(
        &self,
        q: MatRef<'_, WgpuBuffer>,
        k: MatRef<'_, WgpuBuffer>,
        v: MatRef<'_, WgpuBuffer>,
        spec: AttentionSpec<'_>,
    ) -> Result<WgpuBuffer> {
        check_attention(&q, &k, &v, &spec)?;
        for x in [&q, &k, &v] {
            float("attention", x.buffer().dtype)?;
        }
        let (n, kv, hd) = (q.rows(), k.rows(), spec.head_dim);
        let width = spec.heads * hd;
        let fits = |x: &MatRef<'_, WgpuBuffer>| {
            let (s, e) = view_span(x);
            ((e - s) * x.buffer().dtype.size()) as u64 + self.inner.limits.align + 4
                <= self.inner.limits.max_binding
        };
        let out_fits = (n * width * 4) as u64 + 4 <= self.inner.limits.max_binding;
        if hd > HD_MAX
            || self.inner.limits.workgroup_storage < WORKGROUP_BYTES
            || !fits(&q)
            || !fits(&k)
            || !fits(&v)
            || !out_fits
        {
            return self.attention_composed(q, k, v, spec);
        }
        let out = self.inner.zeros(DType::F32, n * width)?;
        if n == 0 {
            return Ok(out);
        }
        let (kind, past, bounds) = mask_words(spec.mask)?;
        let bounds_buf = self
            .inner
            .upload(axpo_core::backend::HostData::U32(&bounds))?;
        let (bw, _) = self.inner.window(&bounds_buf, 0, bounds.len().max(1))?;
        let (qs, qe) = view_span(&q);
        let (ks, ke) = view_span(&k);
        let (vs, ve) = view_span(&v);
        let (qw, qb) = self.inner.window(q.buffer(), qs, qe)?;
        let (kw, kb) = self.inner.window(k.buffer(), ks, ke)?;
        let (vw, vb) = self.inner.window(v.buffer(), vs, ve)?;
        let (ow, _) = self.inner.window(&out, 0, n * width)?;
        let job = Job::new(Family::Attention, "attention", n.div_ceil(BR) * spec.heads)
            .dtype("q", q.buffer().dtype)
            .dtype("k", k.buffer().dtype)
            .dtype("v", v.buffer().dtype)
            .bind(2, bw)
            .bind(3, qw)
            .bind(4, kw)
            .bind(5, vw)
            .bind(6, ow)
            .params(&[
                u(n)?,
                u(kv)?,
                u(spec.heads)?,
                u(spec.heads / spec.kv_heads)?,
                u(hd)?,
                u(qs)? - qb,
                u(q.row_stride())?,
                u(ks)? - kb,
                u(k.row_stride())?,
                u(vs)? - vb,
                u(v.row_stride())?,
                0,
                kind,
                u(past)?,
                f(spec.scale),
                u(bounds.len())?,
            ]);
        self.inner.submit(&[job], "attention")?;
        Ok(out)
    }

    fn masked_softmax(
        &self,
        scores: &mut WgpuBuffer,
        rows: usize,
        cols: usize,
        mask: AttentionMask<'_>,
        scale: f32,
    ) -> Result<()> {
        if rows.checked_mul(cols) != Some(scores.len) {
            return Err(Error::LengthMismatch {
                what: "masked_softmax scores",
                expected: rows.saturating_mul(cols),
                got: scores.len,
            });
        }
        check_mask(rows, cols, mask)?;
        f32_out("masked_softmax", scores)?;
        if rows == 0 || cols == 0 {
            return Ok(());
        }
        let (kind, past, bounds): (u32, usize, Vec<u32>) = match mask {
            AttentionMask::Full => (0, 0, Vec::new()),
            AttentionMask::Causal { past } => (1, past, Vec::new()),
            AttentionMask::Segments(b) => {
                (2, 0, b.iter().map(|&v| u(v)).collect::<Result<Vec<u32>>>()?)
            }
            _ => {
                return Err(Error::Shape {
                    op: "masked_softmax",
                    reason: "mask kind not supported by the wgpu backend",
                });
            }
        };
        let bounds_buf = self
            .inner
            .upload(axpo_core::backend::HostData::U32(&bounds))?;
        let (bw, _) = self.inner.window(&bounds_buf, 0, bounds.len().max(1))?;
        let scores: &WgpuBuffer = scores;
        let mut jobs = Vec::new();
        for (r0, r1) in row_blocks(self, rows, &[(DType::F32, cols)], "masked_softmax")? {
            let (sw, sbase) = self.inner.window(scores, r0 * cols, r1 * cols)?;
            jobs.push(
                Job::new(Family::Attention, "masked_softmax", r1 - r0)
                    .bind(1, sw)
                    .bind(2, bw)
                    .params(&[
                        u(r1 - r0)?,
                        u(cols)?,
                        u(r0 * cols)? - sbase,
                        u(r0)?,
                        kind,
                        u(past)?,
                        f(scale),
                        u(bounds.len())?,
                    ]),
            );
        }
        self.inner.submit(&jobs, "masked_softmax")
    }
}

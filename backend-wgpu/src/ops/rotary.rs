//! Rotary embeddings, and the fused q/k RMSNorm + rotary.

use axpo_core::backend::{DType, Rope, RotaryOps};
use axpo_core::{Error, Result};

use crate::Wgpu;
use crate::context::{Job, WgpuBuffer, f, f32_out, float, u};
use crate::kernels::Family;
use crate::ops::buffer::row_blocks;
use crate::ops::norm::round_mode;

/// Checks a rotary call and returns the number of rows of `len` elements.
fn rope_rows(len: usize, rope: &Rope<'_, WgpuBuffer>) -> Result<usize> {
    let bad = |reason| {
        Err(Error::Shape {
            op: "rotary",
            reason,
        })
    };
    if rope.head_dim == 0 || !rope.head_dim.is_multiple_of(2) || rope.heads == 0 {
        return bad("head_dim must be even and positive, heads positive");
    }
    let width = rope.heads * rope.head_dim;
    if !len.is_multiple_of(width) {
        return bad("length is not a multiple of heads * head_dim");
    }
    let rows = len / width;
    if rope.cos.len != rows * rope.head_dim || rope.sin.len != rows * rope.head_dim {
        return bad("cos/sin tables must be rows x head_dim");
    }
    float("rotary", rope.cos.dtype)?;
    float("rotary", rope.sin.dtype)?;
    Ok(rows)
}

impl RotaryOps for Wgpu {
    fn rotary(&self, x: &mut WgpuBuffer, rope: Rope<'_, WgpuBuffer>) -> Result<()> {
        let rows = rope_rows(x.len, &rope)?;
        f32_out("rotary", x)?;
        let (heads, hd) = (rope.heads, rope.head_dim);
        let width = heads * hd;
        let x: &WgpuBuffer = x;
        let mut jobs = Vec::new();
        let blocks = row_blocks(
            self,
            rows,
            &[
                (DType::F32, width),
                (rope.cos.dtype, hd),
                (rope.sin.dtype, hd),
            ],
            "rotary",
        )?;
        for (r0, r1) in blocks {
            let (xw, xbase) = self.inner.window(x, r0 * width, r1 * width)?;
            let (cw, cbase) = self.inner.window(rope.cos, r0 * hd, r1 * hd)?;
            let (sw, sbase) = self.inner.window(rope.sin, r0 * hd, r1 * hd)?;
            let pairs = (r1 - r0) * heads * (hd / 2);
            jobs.push(
                Job::new(Family::Rotary, "rotary", pairs.div_ceil(256))
                    .dtype("cs", rope.cos.dtype)
                    .dtype("sn", rope.sin.dtype)
                    .bind(1, cw)
                    .bind(2, sw)
                    .bind(3, xw)
                    .params(&[
                        u(r1 - r0)?,
                        u(heads)?,
                        u(hd)?,
                        u(r0 * width)? - xbase,
                        u(r0 * hd)? - cbase,
                        u(r0 * hd)? - sbase,
                    ]),
            );
        }
        self.inner.submit(&jobs, "rotary")
    }

    fn rms_norm_rotary(
        &self,
        x: &WgpuBuffer,
        weight: &WgpuBuffer,
        eps: f32,
        rope: Rope<'_, WgpuBuffer>,
    ) -> Result<WgpuBuffer> {
        let rows = rope_rows(x.len, &rope)?;
        let (heads, hd) = (rope.heads, rope.head_dim);
        if weight.len != hd {
            return Err(Error::Shape {
                op: "rms_norm_rotary",
                reason: "the weight must be head_dim wide",
            });
        }
        if hd > 1024 {
            let mut y = self.rms_norm(x, weight, eps)?;
            self.rotary(&mut y, rope)?;
            return Ok(y);
        }
        use axpo_core::backend::NormOps as _;
        float("rms_norm_rotary", x.dtype)?;
        float("rms_norm_rotary", weight.dtype)?;
        let width = heads * hd;
        let out = self.inner.zeros(DType::F32, x.len)?;
        let (ww, _) = self.inner.window(weight, 0, hd)?;
        let blocks = row_blocks(
            self,
            rows,
            &[
                (x.dtype, width),
                (DType::F32, width),
                (rope.cos.dtype, hd),
                (rope.sin.dtype, hd),
            ],
            "rms_norm_rotary",
        )?;
        let mut jobs = Vec::new();
        for (r0, r1) in blocks {
            let (xw, xbase) = self.inner.window(x, r0 * width, r1 * width)?;
            let (ow, obase) = self.inner.window(&out, r0 * width, r1 * width)?;
            let (cw, cbase) = self.inner.window(rope.cos, r0 * hd, r1 * hd)?;
            let (sw, sbase) = self.inner.window(rope.sin, r0 * hd, r1 * hd)?;
            jobs.push(
                Job::new(Family::Norm, "rms_norm_rotary", (r1 - r0) * heads)
                    .dtype("x", x.dtype)
                    .dtype("w", weight.dtype)
                    .dtype("cs", rope.cos.dtype)
                    .dtype("sn", rope.sin.dtype)
                    .bind(1, xw)
                    .bind(2, ww)
                    .bind(4, ow)
                    .bind(5, cw)
                    .bind(6, sw)
                    .params(&[
                        u((r1 - r0) * heads)?,
                        u(hd)?,
                        u(r0 * width)? - xbase,
                        u(r0 * width)? - obase,
                        0,
                        0,
                        f(eps),
                        round_mode(x.dtype),
                        u(heads)?,
                        u(r0 * hd)? - cbase,
                        u(r0 * hd)? - sbase,
                    ]),
            );
        }
        self.inner.submit(&jobs, "rms_norm_rotary")?;
        Ok(out)
    }
}

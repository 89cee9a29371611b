//! RMSNorm and LayerNorm: one workgroup per row, rows split into binding-sized blocks.

use axpo_core::backend::{DType, NormOps};
use axpo_core::{Error, Result};

use crate::Wgpu;
use crate::context::{Job, WgpuBuffer, f, float, u};
use crate::kernels::Family;
use crate::ops::buffer::row_blocks;

/// The rounding mode of the normalised value for an input type.
pub(crate) fn round_mode(dtype: DType) -> u32 {
    match dtype {
        DType::Bf16 => 1,
        DType::F16 => 2,
        _ => 0,
    }
}

/// Checks a normalisation's widths and returns the number of rows.
pub(crate) fn norm_rows(x: &WgpuBuffer, d: usize, op: &'static str) -> Result<usize> {
    if d == 0 || !x.len.is_multiple_of(d) {
        return Err(Error::Shape {
            op,
            reason: "length is not a multiple of the weight width",
        });
    }
    Ok(x.len / d)
}

impl Wgpu {
    fn norm(
        &self,
        entry: &'static str,
        x: &WgpuBuffer,
        w: &WgpuBuffer,
        bias: Option<&WgpuBuffer>,
        eps: f32,
    ) -> Result<WgpuBuffer> {
        let d = w.len;
        let rows = norm_rows(x, d, entry)?;
        float(entry, x.dtype)?;
        float(entry, w.dtype)?;
        let out = self.inner.zeros(DType::F32, x.len)?;
        if rows == 0 {
            return Ok(out);
        }
        // Windows starting at element 0 begin at the binding's start.
        let (ww, _) = self.inner.window(w, 0, d)?;
        let bw = match bias {
            Some(b) => Some(self.inner.window(b, 0, d)?),
            None => None,
        };
        let mut jobs = Vec::new();
        for (r0, r1) in row_blocks(self, rows, &[(x.dtype, d), (DType::F32, d)], entry)? {
            let (xw, xbase) = self.inner.window(x, r0 * d, r1 * d)?;
            let (ow, obase) = self.inner.window(&out, r0 * d, r1 * d)?;
            let mut job = Job::new(Family::Norm, entry, r1 - r0)
                .dtype("x", x.dtype)
                .dtype("w", w.dtype)
                .bind(1, xw)
                .bind(2, ww)
                .bind(4, ow);
            if let (Some(b), Some((bwin, _))) = (bias, bw) {
                job = job.dtype("bias", b.dtype).bind(3, bwin);
            }
            jobs.push(job.params(&[
                u(r1 - r0)?,
                u(d)?,
                u(r0 * d)? - xbase,
                u(r0 * d)? - obase,
                0,
                0,
                f(eps),
                round_mode(x.dtype),
                1,
                0,
                0,
            ]));
        }
        self.inner.submit(&jobs, entry)?;
        Ok(out)
    }
}

impl NormOps for Wgpu {
    fn rms_norm(&self, x: &WgpuBuffer, weight: &WgpuBuffer, eps: f32) -> Result<WgpuBuffer> {
        self.norm("rms_norm", x, weight, None, eps)
    }

    fn layer_norm(
        &self,
        x: &WgpuBuffer,
        weight: &WgpuBuffer,
        bias: &WgpuBuffer,
        eps: f32,
    ) -> Result<WgpuBuffer> {
        if weight.len != bias.len {
            return Err(Error::LengthMismatch {
                what: "layer_norm weight vs bias",
                expected: weight.len,
                got: bias.len,
            });
        }
        float("layer_norm", bias.dtype)?;
        self.norm("layer_norm", x, weight, Some(bias), eps)
    }
}

//! RMSNorm and LayerNorm (one block per row), and the fused per-head RMSNorm + rotary.

use axpo_core::backend::{BufferOps, DType, DeviceBuffer, NormOps, Rope, RotaryOps};
use axpo_core::{Error, Result};

use crate::buffer::CudaBuffer;
use crate::device::Cuda;

fn rows_of(x: &CudaBuffer, width: usize, op: &'static str) -> Result<usize> {
    if width == 0 || !x.len().is_multiple_of(width) {
        return Err(Error::Shape {
            op,
            reason: "length is not a multiple of the weight width",
        });
    }
    Ok(x.len() / width)
}

/// Validates a rotary call and returns the number of rows.
pub(crate) fn rope_rows(x_len: usize, rope: &Rope<'_, CudaBuffer>) -> Result<usize> {
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
    if !x_len.is_multiple_of(width) {
        return bad("length is not a multiple of heads * head_dim");
    }
    let rows = x_len / width;
    if rope.cos.len() != rows * rope.head_dim || rope.sin.len() != rows * rope.head_dim {
        return bad("cos/sin tables must be rows x head_dim");
    }
    Ok(rows)
}

impl NormOps for Cuda {
    fn rms_norm(&self, x: &CudaBuffer, weight: &CudaBuffer, eps: f32) -> Result<CudaBuffer> {
        let d = weight.len();
        let rows = rows_of(x, d, "rms_norm")?;
        let out = self.zeros(DType::F32, x.len())?;
        self.k_norm(
            x.dev(self, 0)?,
            weight.dev(self, 0)?,
            None,
            out.dev(self, 0)?,
            rows,
            d,
            eps,
        )?;
        Ok(out)
    }

    fn layer_norm(
        &self,
        x: &CudaBuffer,
        weight: &CudaBuffer,
        bias: &CudaBuffer,
        eps: f32,
    ) -> Result<CudaBuffer> {
        let d = weight.len();
        if bias.len() != d {
            return Err(Error::LengthMismatch {
                what: "layer_norm weight vs bias",
                expected: d,
                got: bias.len(),
            });
        }
        let rows = rows_of(x, d, "layer_norm")?;
        let out = self.zeros(DType::F32, x.len())?;
        self.k_norm(
            x.dev(self, 0)?,
            weight.dev(self, 0)?,
            Some(bias.dev(self, 0)?),
            out.dev(self, 0)?,
            rows,
            d,
            eps,
        )?;
        Ok(out)
    }
}

impl RotaryOps for Cuda {
    fn rotary(&self, x: &mut CudaBuffer, rope: Rope<'_, CudaBuffer>) -> Result<()> {
        let rows = rope_rows(x.len(), &rope)?;
        if rows == 0 {
            return Ok(());
        }
        self.k_rotary(
            x.dev(self, 0)?,
            rope.cos.dev(self, 0)?,
            rope.sin.dev(self, 0)?,
            rows,
            rope.heads,
            rope.head_dim,
        )
    }

    fn rms_norm_rotary(
        &self,
        x: &CudaBuffer,
        weight: &CudaBuffer,
        eps: f32,
        rope: Rope<'_, CudaBuffer>,
    ) -> Result<CudaBuffer> {
        if weight.len() != rope.head_dim || rope.head_dim > 256 {
            // Outside the fused kernel's shape: the two ops.
            let mut y = self.rms_norm(x, weight, eps)?;
            self.rotary(&mut y, rope)?;
            return Ok(y);
        }
        let rows = rope_rows(x.len(), &rope)?;
        let out = self.zeros(DType::F32, x.len())?;
        self.k_rms_norm_rotary(
            x.dev(self, 0)?,
            weight.dev(self, 0)?,
            eps,
            rope.cos.dev(self, 0)?,
            rope.sin.dev(self, 0)?,
            rows,
            rope.heads,
            rope.head_dim,
            out.dev(self, 0)?,
        )?;
        Ok(out)
    }
}

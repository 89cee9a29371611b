//! RMSNorm and LayerNorm on the CPU (f64 statistics).

use alloc::vec::Vec;

use half::{bf16, f16};

use super::{Cpu, CpuBuffer, CpuGemm};
use crate::backend::{DType, DeviceBuffer, NormOps};
use crate::error::{Error, Result, check_len};

fn width(x: &CpuBuffer, w: usize, op: &'static str) -> Result<()> {
    if w == 0 || !x.len().is_multiple_of(w) {
        return Err(Error::Shape {
            op,
            reason: "length is not a multiple of the weight width",
        });
    }
    Ok(())
}

/// Rounds a normalised value to the input's precision, as PyTorch does before the weight multiply.
fn round_to(dtype: DType, v: f32) -> f32 {
    match dtype {
        DType::Bf16 => bf16::from_f32(v).to_f32(),
        DType::F16 => f16::from_f32(v).to_f32(),
        _ => v,
    }
}

impl<G: CpuGemm> NormOps for Cpu<G> {
    fn rms_norm(&self, x: &CpuBuffer, weight: &CpuBuffer, eps: f32) -> Result<CpuBuffer> {
        let d = weight.len();
        width(x, d, "rms_norm")?;
        let (xs, w) = (x.f32s("rms_norm")?, weight.f32s("rms_norm")?);
        let mut out = Vec::with_capacity(xs.len());
        for row in xs.chunks_exact(d) {
            let ms = row
                .iter()
                .map(|&v| f64::from(v) * f64::from(v))
                .sum::<f64>()
                / d as f64;
            let inv = (1.0 / libm::sqrt(ms + f64::from(eps))) as f32;
            for (v, wv) in row.iter().zip(w.iter()) {
                out.push(round_to(x.dtype(), v * inv) * wv);
            }
        }
        Ok(CpuBuffer::F32(out))
    }

    fn layer_norm(
        &self,
        x: &CpuBuffer,
        weight: &CpuBuffer,
        bias: &CpuBuffer,
        eps: f32,
    ) -> Result<CpuBuffer> {
        let d = weight.len();
        check_len("layer_norm weight vs bias", d, bias.len())?;
        width(x, d, "layer_norm")?;
        let (xs, w, b) = (
            x.f32s("layer_norm")?,
            weight.f32s("layer_norm")?,
            bias.f32s("layer_norm")?,
        );
        let mut out = Vec::with_capacity(xs.len());
        for row in xs.chunks_exact(d) {
            let mean = row.iter().map(|&v| f64::from(v)).sum::<f64>() / d as f64;
            let var = row
                .iter()
                .map(|&v| (f64::from(v) - mean) * (f64::from(v) - mean))
                .sum::<f64>()
                / d as f64;
            let inv = 1.0 / libm::sqrt(var + f64::from(eps));
            for ((v, wv), bv) in row.iter().zip(w.iter()).zip(b.iter()) {
                let nrm = ((f64::from(*v) - mean) * inv) as f32;
                out.push(round_to(x.dtype(), nrm) * wv + bv);
            }
        }
        Ok(CpuBuffer::F32(out))
    }
}

//! Elementwise arithmetic and activations on the CPU.

use alloc::vec::Vec;

use super::{Cpu, CpuBuffer, CpuGemm};
use crate::backend::{Activation, DeviceBuffer, ElementwiseOps};
use crate::error::{Error, Result, check_len};

/// `act(x)`, evaluated in f64 and rounded to f32.
#[must_use]
pub fn activate(x: f32, act: Activation) -> f32 {
    let x = f64::from(x);
    let y = match act {
        Activation::Silu => x / (1.0 + libm::exp(-x)),
        Activation::GeluTanh => {
            let c = libm::sqrt(2.0 / core::f64::consts::PI);
            0.5 * x * (1.0 + libm::tanh(c * (x + 0.044_715 * x * x * x)))
        }
        Activation::GeluErf => 0.5 * x * (1.0 + libm::erf(x / core::f64::consts::SQRT_2)),
    };
    y as f32
}

impl<G: CpuGemm> ElementwiseOps for Cpu<G> {
    fn add_assign(&self, dst: &mut CpuBuffer, src: &CpuBuffer) -> Result<()> {
        check_len("add_assign operands", dst.len(), src.len())?;
        let s = src.f32s("add_assign")?;
        let d = dst.f32s_mut("add_assign")?;
        for (d, s) in d.iter_mut().zip(s.iter()) {
            *d += s;
        }
        Ok(())
    }

    fn mul(&self, a: &CpuBuffer, b: &CpuBuffer) -> Result<CpuBuffer> {
        check_len("mul operands", a.len(), b.len())?;
        let (a, b) = (a.f32s("mul")?, b.f32s("mul")?);
        Ok(CpuBuffer::F32(
            a.iter().zip(b.iter()).map(|(x, y)| x * y).collect(),
        ))
    }

    fn add_bias(&self, x: &mut CpuBuffer, bias: &CpuBuffer) -> Result<()> {
        let cols = bias.len();
        if cols == 0 || !x.len().is_multiple_of(cols) {
            return Err(Error::Shape {
                op: "add_bias",
                reason: "length is not a multiple of the bias width",
            });
        }
        let b = bias.f32s("add_bias")?;
        let xs = x.f32s_mut("add_bias")?;
        for row in xs.chunks_exact_mut(cols) {
            for (v, bv) in row.iter_mut().zip(b.iter()) {
                *v += bv;
            }
        }
        Ok(())
    }

    fn activation(&self, x: &CpuBuffer, act: Activation) -> Result<CpuBuffer> {
        let xs = x.f32s("activation")?;
        Ok(CpuBuffer::F32(
            xs.iter().map(|&v| activate(v, act)).collect::<Vec<_>>(),
        ))
    }
}

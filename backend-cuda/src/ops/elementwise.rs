//! Elementwise arithmetic and activations, with the fused SwiGLU and bias + activation.

use axpo_core::backend::{Activation, BufferOps, DType, DeviceBuffer, ElementwiseOps};
use axpo_core::{Error, Result};

use crate::buffer::CudaBuffer;
use crate::device::Cuda;
use crate::launch::ActCode;

fn act_code(act: Activation) -> Result<ActCode> {
    Ok(match act {
        Activation::Silu => ActCode::Silu,
        Activation::GeluTanh => ActCode::GeluTanh,
        Activation::GeluErf => ActCode::GeluErf,
        _ => {
            return Err(Error::InvalidConfig {
                field: "activation",
                reason: "not supported by the CUDA backend",
            });
        }
    })
}

fn same_len(what: &'static str, a: usize, b: usize) -> Result<()> {
    if a == b {
        Ok(())
    } else {
        Err(Error::LengthMismatch {
            what,
            expected: a,
            got: b,
        })
    }
}

impl ElementwiseOps for Cuda {
    fn add_assign(&self, dst: &mut CudaBuffer, src: &CudaBuffer) -> Result<()> {
        same_len("add_assign operands", dst.len(), src.len())?;
        if dst.is_empty() {
            return Ok(());
        }
        self.k_add_assign(dst.dev(self, 0)?, src.dev(self, 0)?, dst.len())
    }

    fn mul(&self, a: &CudaBuffer, b: &CudaBuffer) -> Result<CudaBuffer> {
        same_len("mul operands", a.len(), b.len())?;
        let out = self.zeros(DType::F32, a.len())?;
        if !a.is_empty() {
            self.k_binary(
                "mul",
                a.dev(self, 0)?,
                b.dev(self, 0)?,
                out.dev(self, 0)?,
                a.len(),
            )?;
        }
        Ok(out)
    }

    fn add_bias(&self, x: &mut CudaBuffer, bias: &CudaBuffer) -> Result<()> {
        let cols = bias.len();
        if cols == 0 || !x.len().is_multiple_of(cols) {
            return Err(Error::Shape {
                op: "add_bias",
                reason: "length is not a multiple of the bias width",
            });
        }
        if x.is_empty() {
            return Ok(());
        }
        self.k_add_bias(x.dev(self, 0)?, bias.dev(self, 0)?, x.len(), cols)
    }

    fn activation(&self, x: &CudaBuffer, act: Activation) -> Result<CudaBuffer> {
        let code = act_code(act)?;
        let out = self.zeros(DType::F32, x.len())?;
        if !x.is_empty() {
            self.k_activation(x.dev(self, 0)?, out.dev(self, 0)?, x.len(), code)?;
        }
        Ok(out)
    }

    fn swiglu(&self, gate: &CudaBuffer, up: &CudaBuffer) -> Result<CudaBuffer> {
        same_len("swiglu operands", gate.len(), up.len())?;
        let out = self.zeros(DType::F32, gate.len())?;
        if !gate.is_empty() {
            self.k_binary(
                "swiglu",
                gate.dev(self, 0)?,
                up.dev(self, 0)?,
                out.dev(self, 0)?,
                gate.len(),
            )?;
        }
        Ok(out)
    }

    fn bias_activation(
        &self,
        x: CudaBuffer,
        bias: &CudaBuffer,
        act: Activation,
    ) -> Result<CudaBuffer> {
        let code = act_code(act)?;
        let cols = bias.len();
        if cols == 0 || !x.len().is_multiple_of(cols) {
            return Err(Error::Shape {
                op: "bias_activation",
                reason: "length is not a multiple of the bias width",
            });
        }
        if x.is_empty() {
            return Ok(x);
        }
        // An f32 input is transformed in place (it is consumed); others get a new f32 buffer.
        let out = if x.dtype() == DType::F32 {
            None
        } else {
            Some(self.zeros(DType::F32, x.len())?)
        };
        let o = match &out {
            Some(o) => o.dev(self, 0)?,
            None => x.dev(self, 0)?,
        };
        self.k_bias_activation(x.dev(self, 0)?, bias.dev(self, 0)?, o, x.len(), cols, code)?;
        Ok(out.unwrap_or(x))
    }
}

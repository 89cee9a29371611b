//! The two layer types every module is built from, as thin wrappers over backend ops.

use axpo_core::backend::{Backend, DType, Epilogue, Layout, MatMut, MatRef};

use crate::error::Result;
use crate::weights::Weights;

/// `y = x Wᵀ (+ b)` with `W` stored `[out, in]` as in PyTorch.
#[derive(Debug)]
pub struct Linear<B: Backend> {
    weight: B::Buffer,
    bias: Option<B::Buffer>,
    inp: usize,
    out: usize,
}

impl<B: Backend> Linear<B> {
    /// Loads `{prefix}.weight` (`[out, in]`) and, when `bias`, `{prefix}.bias` (`[out]`).
    ///
    /// # Errors
    /// Missing tensors, wrong shapes, upload failures.
    pub fn load(
        w: &Weights<'_, B>,
        prefix: &str,
        inp: usize,
        out: usize,
        bias: bool,
    ) -> Result<Self> {
        let weight = w.get(&format!("{prefix}.weight"), &[out, inp])?;
        let bias = if bias {
            Some(w.get(&format!("{prefix}.bias"), &[out])?)
        } else {
            None
        };
        Ok(Self {
            weight,
            bias,
            inp,
            out,
        })
    }

    /// A layer from already uploaded buffers.
    #[must_use]
    pub fn from_parts(weight: B::Buffer, bias: Option<B::Buffer>, inp: usize, out: usize) -> Self {
        Self {
            weight,
            bias,
            inp,
            out,
        }
    }

    /// The weight as a `[out, in]` matrix view.
    ///
    /// # Errors
    /// A shape error if the buffer does not hold `out * in` elements.
    pub fn weight(&self) -> Result<MatRef<'_, B::Buffer>> {
        Ok(MatRef::new(&self.weight, self.out, self.inp)?)
    }

    /// Output width.
    #[must_use]
    pub fn out_features(&self) -> usize {
        self.out
    }

    /// `x Wᵀ + b` for `rows` rows of `x` into a new f32 buffer.
    ///
    /// # Errors
    /// Backend shape errors.
    pub fn forward(&self, b: &B, x: &B::Buffer, rows: usize) -> Result<B::Buffer> {
        let mut y = b.zeros(DType::F32, rows * self.out)?;
        b.matmul(
            MatRef::new(x, rows, self.inp)?,
            Layout::AsStored,
            self.weight()?,
            Layout::Transposed,
            MatMut::new(&mut y, rows, self.out)?,
            Epilogue::OVERWRITE,
        )?;
        if let Some(bias) = &self.bias {
            b.add_bias(&mut y, bias)?;
        }
        Ok(y)
    }

    /// `dst += x Wᵀ + b` (the residual add fused into the product's epilogue).
    ///
    /// # Errors
    /// Backend shape errors.
    pub fn forward_add(
        &self,
        b: &B,
        x: &B::Buffer,
        rows: usize,
        dst: &mut B::Buffer,
    ) -> Result<()> {
        b.matmul(
            MatRef::new(x, rows, self.inp)?,
            Layout::AsStored,
            self.weight()?,
            Layout::Transposed,
            MatMut::new(dst, rows, self.out)?,
            Epilogue::ADD,
        )?;
        if let Some(bias) = &self.bias {
            b.add_bias(dst, bias)?;
        }
        Ok(())
    }
}

/// A normalisation over the last dimension: Qwen's RMSNorm or LayerNorm with bias.
#[derive(Debug)]
pub enum Norm<B: Backend> {
    /// `x / rms(x) * w`.
    Rms {
        /// Weight.
        weight: B::Buffer,
        /// Epsilon.
        eps: f32,
    },
    /// `(x - mean) / std * w + b`.
    Layer {
        /// Weight.
        weight: B::Buffer,
        /// Bias.
        bias: B::Buffer,
        /// Epsilon.
        eps: f32,
    },
}

impl<B: Backend> Norm<B> {
    /// Loads an RMSNorm weight `{prefix}.weight` of width `dim`.
    ///
    /// # Errors
    /// Missing tensor, wrong shape, upload failure.
    pub fn rms(w: &Weights<'_, B>, prefix: &str, dim: usize, eps: f32) -> Result<Self> {
        Ok(Self::Rms {
            weight: w.get(&format!("{prefix}.weight"), &[dim])?,
            eps,
        })
    }

    /// Loads a LayerNorm `{prefix}.{weight,bias}` of width `dim`.
    ///
    /// # Errors
    /// Missing tensor, wrong shape, upload failure.
    pub fn layer(w: &Weights<'_, B>, prefix: &str, dim: usize, eps: f32) -> Result<Self> {
        Ok(Self::Layer {
            weight: w.get(&format!("{prefix}.weight"), &[dim])?,
            bias: w.get(&format!("{prefix}.bias"), &[dim])?,
            eps,
        })
    }

    /// Normalises every row (row width = the weight's length).
    ///
    /// # Errors
    /// Backend shape errors.
    pub fn forward(&self, b: &B, x: &B::Buffer) -> Result<B::Buffer> {
        Ok(match self {
            Self::Rms { weight, eps } => b.rms_norm(x, weight, *eps)?,
            Self::Layer { weight, bias, eps } => b.layer_norm(x, weight, bias, *eps)?,
        })
    }

    /// The RMSNorm weight (for the fused norm + rotary op).
    #[must_use]
    pub fn rms_weight(&self) -> Option<(&B::Buffer, f32)> {
        match self {
            Self::Rms { weight, eps } => Some((weight, *eps)),
            Self::Layer { .. } => None,
        }
    }
}

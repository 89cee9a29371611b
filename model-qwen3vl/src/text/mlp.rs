//! The SwiGLU MLP: `down(silu(gate(x)) * up(x))`, no biases.

use axpo_core::backend::Backend;

use crate::config::TextConfig;
use crate::error::Result;
use crate::nn::Linear;
use crate::weights::Weights;

/// `model.language_model.layers.{i}.mlp`.
#[derive(Debug)]
pub struct Mlp<B: Backend> {
    gate: Linear<B>,
    up: Linear<B>,
    down: Linear<B>,
}

impl<B: Backend> Mlp<B> {
    /// Loads `{prefix}.{gate,up,down}_proj`.
    ///
    /// # Errors
    /// Missing tensors, wrong shapes, upload failures.
    pub fn load(w: &Weights<'_, B>, prefix: &str, cfg: &TextConfig) -> Result<Self> {
        let (d, i) = (cfg.hidden_size, cfg.intermediate_size);
        Ok(Self {
            gate: Linear::load(w, &format!("{prefix}.gate_proj"), d, i, false)?,
            up: Linear::load(w, &format!("{prefix}.up_proj"), d, i, false)?,
            down: Linear::load(w, &format!("{prefix}.down_proj"), i, d, false)?,
        })
    }

    /// Adds the MLP of `x` (`rows x D`) to the residual `h`.
    ///
    /// # Errors
    /// Backend errors.
    pub fn forward_add(&self, b: &B, x: &B::Buffer, rows: usize, h: &mut B::Buffer) -> Result<()> {
        let g = self.gate.forward(b, x, rows)?;
        let u = self.up.forward(b, x, rows)?;
        let a = b.swiglu(&g, &u)?;
        self.down.forward_add(b, &a, rows, h)
    }
}

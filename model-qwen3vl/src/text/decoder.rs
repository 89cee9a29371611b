//! One decoder layer: `h += attn(rms(h)); h += mlp(rms(h))`.

use axpo_core::backend::Backend;

use crate::config::TextConfig;
use crate::error::Result;
use crate::generate::LayerKv;
use crate::nn::Norm;
use crate::text::{Mlp, TextAttention};
use crate::weights::Weights;

/// `model.language_model.layers.{i}`.
#[derive(Debug)]
pub struct DecoderLayer<B: Backend> {
    input_norm: Norm<B>,
    attn: TextAttention<B>,
    post_norm: Norm<B>,
    mlp: Mlp<B>,
}

impl<B: Backend> DecoderLayer<B> {
    /// Loads layer `prefix`.
    ///
    /// # Errors
    /// Missing tensors, wrong shapes, upload failures.
    pub fn load(w: &Weights<'_, B>, prefix: &str, cfg: &TextConfig) -> Result<Self> {
        let (d, eps) = (cfg.hidden_size, cfg.rms_norm_eps);
        Ok(Self {
            input_norm: Norm::rms(w, &format!("{prefix}.input_layernorm"), d, eps)?,
            attn: TextAttention::load(w, &format!("{prefix}.self_attn"), cfg)?,
            post_norm: Norm::rms(w, &format!("{prefix}.post_attention_layernorm"), d, eps)?,
            mlp: Mlp::load(w, &format!("{prefix}.mlp"), cfg)?,
        })
    }

    /// Runs the layer in place on `h` (`rows x D`).
    ///
    /// # Errors
    /// Backend errors.
    pub fn forward(
        &self,
        b: &B,
        h: &mut B::Buffer,
        rows: usize,
        cos: &B::Buffer,
        sin: &B::Buffer,
        cache: Option<(&mut LayerKv<B>, usize)>,
    ) -> Result<()> {
        let x = self.input_norm.forward(b, h)?;
        self.attn.forward_add(b, &x, rows, cos, sin, cache, h)?;
        let x = self.post_norm.forward(b, h)?;
        self.mlp.forward_add(b, &x, rows, h)
    }
}

//! One vision block: pre-LayerNorm attention (2D rotary, per-image segments, biases) and a
//! tanh-GELU MLP, both residual.

use axpo_core::backend::{Activation, AttentionMask, AttentionSpec, Backend, MatRef, Rope};

use crate::config::VisionConfig;
use crate::error::Result;
use crate::nn::{Linear, Norm};
use crate::weights::Weights;

/// `model.visual.blocks.{i}`.
#[derive(Debug)]
pub struct VisionBlock<B: Backend> {
    norm1: Norm<B>,
    norm2: Norm<B>,
    q: Linear<B>,
    k: Linear<B>,
    v: Linear<B>,
    proj: Linear<B>,
    fc1: Linear<B>,
    fc2: Linear<B>,
    heads: usize,
    head_dim: usize,
    dim: usize,
}

impl<B: Backend> VisionBlock<B> {
    /// Loads block `prefix` (`model.visual.blocks.{i}`); the fused `attn.qkv` is split into its
    /// q, k and v rows on the host.
    ///
    /// # Errors
    /// Missing tensors, wrong shapes, upload failures.
    pub fn load(w: &Weights<'_, B>, prefix: &str, cfg: &VisionConfig) -> Result<Self> {
        let d = cfg.hidden_size;
        let qkv_w = w.host(&format!("{prefix}.attn.qkv.weight"), &[3 * d, d])?;
        let qkv_b = w.host(&format!("{prefix}.attn.qkv.bias"), &[3 * d])?;
        let part = |i: usize| -> Result<Linear<B>> {
            let weight = w.upload(&qkv_w.slice(i * d * d, (i + 1) * d * d))?;
            let bias = w.upload(&qkv_b.slice(i * d, (i + 1) * d))?;
            Ok(Linear::from_parts(weight, Some(bias), d, d))
        };
        Ok(Self {
            norm1: Norm::layer(w, &format!("{prefix}.norm1"), d, 1e-6)?,
            norm2: Norm::layer(w, &format!("{prefix}.norm2"), d, 1e-6)?,
            q: part(0)?,
            k: part(1)?,
            v: part(2)?,
            proj: Linear::load(w, &format!("{prefix}.attn.proj"), d, d, true)?,
            fc1: Linear::load(
                w,
                &format!("{prefix}.mlp.linear_fc1"),
                d,
                cfg.intermediate_size,
                true,
            )?,
            fc2: Linear::load(
                w,
                &format!("{prefix}.mlp.linear_fc2"),
                cfg.intermediate_size,
                d,
                true,
            )?,
            heads: cfg.num_heads,
            head_dim: cfg.head_dim(),
            dim: d,
        })
    }

    /// Runs the block in place on `x` (`rows x Dv`).
    ///
    /// # Errors
    /// Backend errors.
    pub fn forward(
        &self,
        b: &B,
        x: &mut B::Buffer,
        rows: usize,
        cos: &B::Buffer,
        sin: &B::Buffer,
        segments: &[usize],
    ) -> Result<()> {
        let rope = Rope {
            cos,
            sin,
            heads: self.heads,
            head_dim: self.head_dim,
        };
        let y = self.norm1.forward(b, x)?;
        let mut q = self.q.forward(b, &y, rows)?;
        let mut k = self.k.forward(b, &y, rows)?;
        let v = self.v.forward(b, &y, rows)?;
        b.rotary(&mut q, rope)?;
        b.rotary(&mut k, rope)?;
        let spec = AttentionSpec {
            heads: self.heads,
            kv_heads: self.heads,
            head_dim: self.head_dim,
            scale: 1.0 / (self.head_dim as f32).sqrt(),
            mask: AttentionMask::Segments(segments),
        };
        let a = b.attention(
            MatRef::new(&q, rows, self.dim)?,
            MatRef::new(&k, rows, self.dim)?,
            MatRef::new(&v, rows, self.dim)?,
            spec,
        )?;
        self.proj.forward_add(b, &a, rows, x)?;
        let y = self.norm2.forward(b, x)?;
        let h = self.fc1.forward(b, &y, rows)?;
        let h = b.activation(&h, Activation::GeluTanh)?;
        self.fc2.forward_add(b, &h, rows, x)
    }
}

//! Text self-attention: q/k/v projections without bias, per-head q/k RMSNorm, interleaved MRoPE,
//! grouped-query causal attention (optionally over a KV cache), output projection.

use axpo_core::backend::{AttentionMask, AttentionSpec, Backend, MatMut, MatRef, Rope};

use crate::config::TextConfig;
use crate::error::Result;
use crate::generate::LayerKv;
use crate::nn::{Linear, Norm};
use crate::weights::Weights;

/// `model.language_model.layers.{i}.self_attn`.
#[derive(Debug)]
pub struct TextAttention<B: Backend> {
    q: Linear<B>,
    k: Linear<B>,
    v: Linear<B>,
    o: Linear<B>,
    q_norm: Norm<B>,
    k_norm: Norm<B>,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
}

impl<B: Backend> TextAttention<B> {
    /// Loads `{prefix}.{q,k,v,o}_proj` and `{prefix}.{q,k}_norm`.
    ///
    /// # Errors
    /// Missing tensors, wrong shapes, upload failures.
    pub fn load(w: &Weights<'_, B>, prefix: &str, cfg: &TextConfig) -> Result<Self> {
        let (d, hd) = (cfg.hidden_size, cfg.head_dim);
        let (qw, kvw) = (cfg.num_attention_heads * hd, cfg.num_key_value_heads * hd);
        Ok(Self {
            q: Linear::load(w, &format!("{prefix}.q_proj"), d, qw, false)?,
            k: Linear::load(w, &format!("{prefix}.k_proj"), d, kvw, false)?,
            v: Linear::load(w, &format!("{prefix}.v_proj"), d, kvw, false)?,
            o: Linear::load(w, &format!("{prefix}.o_proj"), qw, d, false)?,
            q_norm: Norm::rms(w, &format!("{prefix}.q_norm"), hd, cfg.rms_norm_eps)?,
            k_norm: Norm::rms(w, &format!("{prefix}.k_norm"), hd, cfg.rms_norm_eps)?,
            heads: cfg.num_attention_heads,
            kv_heads: cfg.num_key_value_heads,
            head_dim: hd,
        })
    }

    /// Adds `o_proj(attention(x))` to the residual `h` (`rows x D`). With a cache, the new keys
    /// and values are appended at row `past` (the cache must have room) and attention runs over
    /// the whole cache.
    ///
    /// # Errors
    /// Backend errors.
    #[allow(clippy::too_many_arguments)]
    pub fn forward_add(
        &self,
        b: &B,
        x: &B::Buffer,
        rows: usize,
        cos: &B::Buffer,
        sin: &B::Buffer,
        cache: Option<(&mut LayerKv<B>, usize)>,
        h: &mut B::Buffer,
    ) -> Result<()> {
        let hd = self.head_dim;
        let rope = |heads| Rope {
            cos,
            sin,
            heads,
            head_dim: hd,
        };
        let q = self.q.forward(b, x, rows)?;
        let k = self.k.forward(b, x, rows)?;
        let v = self.v.forward(b, x, rows)?;
        let (qn, qe) = rms_parts(&self.q_norm)?;
        let (kn, ke) = rms_parts(&self.k_norm)?;
        let q = b.rms_norm_rotary(&q, qn, qe, rope(self.heads))?;
        let k = b.rms_norm_rotary(&k, kn, ke, rope(self.kv_heads))?;
        let (qw, kvw) = (self.heads * hd, self.kv_heads * hd);
        let spec = |past| AttentionSpec {
            heads: self.heads,
            kv_heads: self.kv_heads,
            head_dim: hd,
            scale: 1.0 / (hd as f32).sqrt(),
            mask: AttentionMask::Causal { past },
        };
        let a = match cache {
            None => b.attention(
                MatRef::new(&q, rows, qw)?,
                MatRef::new(&k, rows, kvw)?,
                MatRef::new(&v, rows, kvw)?,
                spec(0),
            )?,
            Some((kv, past)) => {
                b.copy_rows(
                    MatRef::new(&k, rows, kvw)?,
                    MatMut::strided(&mut kv.k, past * kvw, rows, kvw, kvw)?,
                )?;
                b.copy_rows(
                    MatRef::new(&v, rows, kvw)?,
                    MatMut::strided(&mut kv.v, past * kvw, rows, kvw, kvw)?,
                )?;
                let total = past + rows;
                b.attention(
                    MatRef::new(&q, rows, qw)?,
                    MatRef::strided(&kv.k, 0, total, kvw, kvw)?,
                    MatRef::strided(&kv.v, 0, total, kvw, kvw)?,
                    spec(past),
                )?
            }
        };
        self.o.forward_add(b, &a, rows, h)
    }
}

fn rms_parts<B: Backend>(n: &Norm<B>) -> Result<(&B::Buffer, f32)> {
    n.rms_weight()
        .ok_or_else(|| crate::error::ModelError::config("q_norm/k_norm", "must be an RMSNorm"))
}

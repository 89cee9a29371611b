//! The text decoder: embeddings, Qwen3 decoder layers with interleaved MRoPE, DeepStack
//! injection after the first layers, final RMSNorm, and the (possibly tied) head.

mod attention;
mod decoder;
mod mlp;

pub use attention::TextAttention;
pub use decoder::DecoderLayer;
pub use mlp::Mlp;

use axpo_core::backend::{Backend, MatMut, MatRef, ScatterMode};

use crate::config::TextConfig;
use crate::error::{ModelError, Result};
use crate::generate::KvCache;
use crate::mrope::text_rope_tables;
use crate::nn::Norm;
use crate::tap::Tap;
use crate::weights::Weights;

/// DeepStack features to add after the first decoder layers: `rows` are the prompt rows of the
/// visual tokens, `features[k]` (`rows.len() x D`) is added after layer `k`.
#[derive(Debug)]
pub struct DeepStack<'a, B: Backend> {
    /// Prompt rows of the visual tokens.
    pub rows: &'a [u32],
    /// One feature matrix per injected layer.
    pub features: &'a [B::Buffer],
}

/// `model.language_model` plus `lm_head`.
#[derive(Debug)]
pub struct TextModel<B: Backend> {
    embed: B::Buffer,
    layers: Vec<DecoderLayer<B>>,
    norm: Norm<B>,
    lm_head: Option<B::Buffer>,
    cfg: TextConfig,
}

impl<B: Backend> TextModel<B> {
    /// Loads the decoder. The head is `lm_head.weight` when the checkpoint has it, else the
    /// embedding (tied).
    ///
    /// # Errors
    /// Missing tensors, wrong shapes, upload failures.
    pub fn load(w: &Weights<'_, B>, cfg: &TextConfig) -> Result<Self> {
        let (v, d) = (cfg.vocab_size, cfg.hidden_size);
        let p = "model.language_model";
        let layers = (0..cfg.num_hidden_layers)
            .map(|i| DecoderLayer::load(w, &format!("{p}.layers.{i}"), cfg))
            .collect::<Result<Vec<_>>>()?;
        let lm_head = if w.store().contains("lm_head.weight") {
            Some(w.get("lm_head.weight", &[v, d])?)
        } else {
            None
        };
        Ok(Self {
            embed: w.get(&format!("{p}.embed_tokens.weight"), &[v, d])?,
            layers,
            norm: Norm::rms(w, &format!("{p}.norm"), d, cfg.rms_norm_eps)?,
            lm_head,
            cfg: cfg.clone(),
        })
    }

    /// Whether the head is the embedding matrix.
    #[must_use]
    pub fn is_tied(&self) -> bool {
        self.lm_head.is_none()
    }

    /// The head matrix `[vocab, D]`.
    ///
    /// # Errors
    /// A shape error if the buffer has the wrong size (never for a loaded model).
    pub fn head(&self) -> Result<MatRef<'_, B::Buffer>> {
        let w = self.lm_head.as_ref().unwrap_or(&self.embed);
        Ok(MatRef::new(w, self.cfg.vocab_size, self.cfg.hidden_size)?)
    }

    /// Embeds token ids (`ids.len() x D`).
    ///
    /// # Errors
    /// [`ModelError::InvalidInput`] for an id outside the vocabulary.
    pub fn embed(&self, b: &B, ids: &[u32]) -> Result<B::Buffer> {
        if let Some(bad) = ids.iter().find(|&&t| t as usize >= self.cfg.vocab_size) {
            return Err(ModelError::input(format!(
                "token id {bad} is outside the vocabulary ({})",
                self.cfg.vocab_size
            )));
        }
        let table = MatRef::new(&self.embed, self.cfg.vocab_size, self.cfg.hidden_size)?;
        Ok(b.gather_rows(table, ids)?)
    }

    /// Runs the decoder on `h` (`rows x D`, consumed) at 3D `positions`, returning the final
    /// normed hidden states. With a cache, keys and values are appended after its current length
    /// (which then grows by `rows`).
    ///
    /// # Errors
    /// Backend errors; [`ModelError::InvalidInput`] if `positions` does not have `rows` entries
    /// or a DeepStack feature does not match its rows.
    pub fn run(
        &self,
        b: &B,
        mut h: B::Buffer,
        positions: &[[i64; 3]],
        mut cache: Option<&mut KvCache<B>>,
        deepstack: Option<DeepStack<'_, B>>,
        tap: &mut dyn Tap<B>,
    ) -> Result<B::Buffer> {
        let rows = positions.len();
        let (d, hd) = (self.cfg.hidden_size, self.cfg.head_dim);
        let (cos, sin) =
            text_rope_tables(positions, hd, self.cfg.rope_theta, self.cfg.mrope_section);
        tap.host("text.rotary.cos", &[rows, hd], &cos);
        tap.host("text.rotary.sin", &[rows, hd], &sin);
        let (cos, sin) = (b.upload_f32(&cos)?, b.upload_f32(&sin)?);
        let past = match cache.as_deref_mut() {
            Some(c) => {
                c.reserve(b, rows)?;
                c.len()
            }
            None => 0,
        };
        for (i, layer) in self.layers.iter().enumerate() {
            tap.device(b, &format!("text.layers.{i}.in"), &[rows, d], &h)?;
            let kv = match cache.as_deref_mut() {
                Some(c) => Some((c.layer_mut(i)?, past)),
                None => None,
            };
            layer.forward(b, &mut h, rows, &cos, &sin, kv)?;
            tap.device(b, &format!("text.layers.{i}.out"), &[rows, d], &h)?;
            if let Some(ds) = deepstack.as_ref()
                && let Some(f) = ds.features.get(i)
            {
                b.scatter_rows(
                    MatMut::new(&mut h, rows, d)?,
                    ds.rows,
                    MatRef::new(f, ds.rows.len(), d)?,
                    ScatterMode::Add,
                )?;
            }
        }
        if let Some(c) = cache {
            c.advance(rows);
        }
        tap.device(b, "text.norm.in", &[rows, d], &h)?;
        let out = self.norm.forward(b, &h)?;
        tap.device(b, "text.norm.out", &[rows, d], &out)?;
        Ok(out)
    }

    /// The configuration.
    #[must_use]
    pub fn config(&self) -> &TextConfig {
        &self.cfg
    }
}

//! Patch mergers: the main merger (LayerNorm per patch, then group `merge²` patches) and the
//! DeepStack mergers (group first, then LayerNorm over the grouped width); both then
//! `fc2(erf-GELU(fc1(x)))`.

use axpo_core::backend::{Activation, Backend};

use crate::config::VisionConfig;
use crate::error::Result;
use crate::nn::{Linear, Norm};
use crate::weights::Weights;

/// Where a merger normalises.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MergerKind {
    /// `model.visual.merger`: LayerNorm over `Dv` before grouping.
    Main,
    /// `model.visual.deepstack_merger_list.{k}`: LayerNorm over `merge²·Dv` after grouping.
    PostShuffle,
}

/// A patch merger.
#[derive(Debug)]
pub struct Merger<B: Backend> {
    norm: Norm<B>,
    fc1: Linear<B>,
    fc2: Linear<B>,
    group: usize,
}

impl<B: Backend> Merger<B> {
    /// Loads the merger at `prefix`.
    ///
    /// # Errors
    /// Missing tensors, wrong shapes, upload failures.
    pub fn load(
        w: &Weights<'_, B>,
        prefix: &str,
        cfg: &VisionConfig,
        kind: MergerKind,
    ) -> Result<Self> {
        let group = cfg.spatial_merge_size * cfg.spatial_merge_size;
        let wide = cfg.hidden_size * group;
        let norm_dim = match kind {
            MergerKind::Main => cfg.hidden_size,
            MergerKind::PostShuffle => wide,
        };
        Ok(Self {
            norm: Norm::layer(w, &format!("{prefix}.norm"), norm_dim, 1e-6)?,
            fc1: Linear::load(w, &format!("{prefix}.linear_fc1"), wide, wide, true)?,
            fc2: Linear::load(
                w,
                &format!("{prefix}.linear_fc2"),
                wide,
                cfg.out_hidden_size,
                true,
            )?,
            group,
        })
    }

    /// Merges `patches` rows of `x` into `patches / merge²` tokens of the text width. Grouping is
    /// a reinterpretation of the row-major buffer, so both norm placements are one op.
    ///
    /// # Errors
    /// Backend errors.
    pub fn forward(&self, b: &B, x: &B::Buffer, patches: usize) -> Result<B::Buffer> {
        let tokens = patches / self.group.max(1);
        let y = self.norm.forward(b, x)?;
        let h = self.fc1.forward(b, &y, tokens)?;
        let h = b.activation(&h, Activation::GeluErf)?;
        self.fc2.forward(b, &h, tokens)
    }
}

//! Patch embedding (a Conv3d whose stride equals its kernel, i.e. a dense layer on each
//! `C·T·P·P` pixel row) and the bilinearly interpolated learned position table.

use axpo_core::backend::{Backend, MatRef};

use crate::config::VisionConfig;
use crate::error::Result;
use crate::mrope::{Grid, pos_embed_taps};
use crate::nn::Linear;
use crate::weights::Weights;

/// `model.visual.patch_embed.proj` as a `[Dv, C·T·P·P]` matrix, and `model.visual.pos_embed`.
#[derive(Debug)]
pub struct PatchEmbed<B: Backend> {
    proj: Linear<B>,
    pos_table: B::Buffer,
    side: usize,
    merge: usize,
    dim: usize,
}

impl<B: Backend> PatchEmbed<B> {
    /// Loads the conv weight `[Dv, C, T, P, P]` (flattened in C order), its bias and the table.
    ///
    /// # Errors
    /// Missing tensors, wrong shapes, upload failures.
    pub fn load(w: &Weights<'_, B>, cfg: &VisionConfig) -> Result<Self> {
        let dv = cfg.hidden_size;
        let (c, t, p) = (cfg.in_channels, cfg.temporal_patch_size, cfg.patch_size);
        let weight = w.get("model.visual.patch_embed.proj.weight", &[dv, c, t, p, p])?;
        let bias = w.get("model.visual.patch_embed.proj.bias", &[dv])?;
        let pos_table = w.get(
            "model.visual.pos_embed.weight",
            &[cfg.num_position_embeddings, dv],
        )?;
        Ok(Self {
            proj: Linear::from_parts(weight, Some(bias), cfg.patch_dim(), dv),
            pos_table,
            side: cfg.pos_side(),
            merge: cfg.spatial_merge_size,
            dim: dv,
        })
    }

    /// Embeds `patches` pixel rows.
    ///
    /// # Errors
    /// Backend errors.
    pub fn embed(&self, b: &B, pixels: &B::Buffer, patches: usize) -> Result<B::Buffer> {
        self.proj.forward(b, pixels, patches)
    }

    /// The interpolated position embedding of every patch (`patches x Dv`):
    /// `Σ_k w_k · table[idx_k]` over the four bilinear taps, summed in tap order.
    ///
    /// # Errors
    /// Backend errors.
    pub fn positions(&self, b: &B, grids: &[Grid]) -> Result<B::Buffer> {
        let (idx, wts) = pos_embed_taps(grids, self.merge, self.side);
        let table = MatRef::new(&self.pos_table, self.side * self.side, self.dim)?;
        let mut acc: Option<B::Buffer> = None;
        for k in 0..4 {
            let ids: Vec<u32> = idx.iter().map(|i4| i4[k]).collect();
            let rows = b.gather_rows(table, &ids)?;
            let mut wk = Vec::with_capacity(ids.len() * self.dim);
            for w4 in &wts {
                wk.extend(std::iter::repeat_n(w4[k], self.dim));
            }
            let wk = b.upload_f32(&wk)?;
            let term = b.mul(&rows, &wk)?;
            match &mut acc {
                None => acc = Some(term),
                Some(a) => b.add_assign(a, &term)?,
            }
        }
        match acc {
            Some(a) => Ok(a),
            None => Ok(b.upload_f32(&[])?),
        }
    }
}

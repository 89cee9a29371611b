//! The vision tower: patch embedding + interpolated positions, 2D-rotary blocks attending within
//! each image, DeepStack taps with their mergers, and the main merger.

mod block;
mod merger;
mod patch_embed;

pub use block::VisionBlock;
pub use merger::{Merger, MergerKind};
pub use patch_embed::PatchEmbed;

use axpo_core::backend::Backend;

use crate::config::VisionConfig;
use crate::error::{ModelError, Result};
use crate::mrope::{Grid, vision_coords, vision_rope_tables, vision_segments};
use crate::tap::Tap;
use crate::weights::Weights;

/// What the tower gives the text decoder.
#[derive(Debug)]
pub struct VisionOutput<B: Backend> {
    /// Merged image tokens, `tokens x D` (image order).
    pub embeds: B::Buffer,
    /// One `tokens x D` feature per DeepStack merger, in `deepstack_visual_indexes` order.
    pub deepstack: Vec<B::Buffer>,
    /// Merged tokens.
    pub tokens: usize,
}

/// `model.visual`.
#[derive(Debug)]
pub struct VisionTower<B: Backend> {
    patch_embed: PatchEmbed<B>,
    blocks: Vec<VisionBlock<B>>,
    merger: Merger<B>,
    deepstack: Vec<Merger<B>>,
    cfg: VisionConfig,
}

impl<B: Backend> VisionTower<B> {
    /// Loads `model.visual.*`.
    ///
    /// # Errors
    /// Missing tensors, wrong shapes, upload failures.
    pub fn load(w: &Weights<'_, B>, cfg: &VisionConfig) -> Result<Self> {
        let blocks = (0..cfg.depth)
            .map(|i| VisionBlock::load(w, &format!("model.visual.blocks.{i}"), cfg))
            .collect::<Result<Vec<_>>>()?;
        let deepstack = (0..cfg.deepstack_visual_indexes.len())
            .map(|k| {
                Merger::load(
                    w,
                    &format!("model.visual.deepstack_merger_list.{k}"),
                    cfg,
                    MergerKind::PostShuffle,
                )
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            patch_embed: PatchEmbed::load(w, cfg)?,
            blocks,
            merger: Merger::load(w, "model.visual.merger", cfg, MergerKind::Main)?,
            deepstack,
            cfg: cfg.clone(),
        })
    }

    /// Encodes all images at once: `pixels` holds `Σ t·h·w` rows of `C·T·P·P` values in
    /// merge-block order (the processor's `pixel_values`), `grids` one entry per image.
    ///
    /// # Errors
    /// [`ModelError::InvalidInput`] if the pixel rows do not match the grids; backend errors.
    pub fn forward(
        &self,
        b: &B,
        pixels: &[f32],
        grids: &[Grid],
        tap: &mut dyn Tap<B>,
    ) -> Result<VisionOutput<B>> {
        let merge = self.cfg.spatial_merge_size;
        let mut patches = 0usize;
        for g in grids {
            g.check(merge)?;
            patches = patches
                .checked_add(g.patches())
                .ok_or_else(|| ModelError::input("image grids are too large"))?;
        }
        let dim = self.cfg.patch_dim();
        if patches.checked_mul(dim) != Some(pixels.len()) {
            return Err(ModelError::TensorShape {
                name: "pixel_values".into(),
                expected: vec![patches, dim],
                got: vec![pixels.len() / dim.max(1), dim],
            });
        }
        let dv = self.cfg.hidden_size;
        let px = b.upload_f32(pixels)?;
        let mut x = self.patch_embed.embed(b, &px, patches)?;
        tap.device(b, "vision.patch_embed.out", &[patches, dv], &x)?;
        let pos = self.patch_embed.positions(b, grids)?;
        tap.device(b, "vision.pos_embed.out", &[patches, dv], &pos)?;
        b.add_assign(&mut x, &pos)?;
        let coords = vision_coords(grids, merge);
        let hd = self.cfg.head_dim();
        let (cos, sin) = vision_rope_tables(&coords, hd, self.cfg.rope_theta);
        tap.host("vision.rotary.cos", &[patches, hd], &cos);
        tap.host("vision.rotary.sin", &[patches, hd], &sin);
        let (cos, sin) = (b.upload_f32(&cos)?, b.upload_f32(&sin)?);
        let segments = vision_segments(grids);
        let mut deepstack = Vec::with_capacity(self.deepstack.len());
        for (i, blk) in self.blocks.iter().enumerate() {
            tap.device(b, &format!("vision.blocks.{i}.in"), &[patches, dv], &x)?;
            blk.forward(b, &mut x, patches, &cos, &sin, &segments)?;
            tap.device(b, &format!("vision.blocks.{i}.out"), &[patches, dv], &x)?;
            for (k, _) in self
                .cfg
                .deepstack_visual_indexes
                .iter()
                .enumerate()
                .filter(|(_, idx)| **idx == i)
            {
                if let Some(m) = self.deepstack.get(k) {
                    let f = m.forward(b, &x, patches)?;
                    let tokens = patches / (merge * merge);
                    tap.device(
                        b,
                        &format!("vision.deepstack.{k}.out"),
                        &[tokens, self.cfg.out_hidden_size],
                        &f,
                    )?;
                    deepstack.push((k, f));
                }
            }
        }
        deepstack.sort_by_key(|(k, _)| *k);
        let tokens = patches / (merge * merge);
        let embeds = self.merger.forward(b, &x, patches)?;
        tap.device(
            b,
            "vision.merger.out",
            &[tokens, self.cfg.out_hidden_size],
            &embeds,
        )?;
        Ok(VisionOutput {
            embeds,
            deepstack: deepstack.into_iter().map(|(_, f)| f).collect(),
            tokens,
        })
    }
}

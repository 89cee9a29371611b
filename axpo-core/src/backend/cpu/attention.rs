//! Masked softmax on the CPU (the attention default composes it with matmuls).

use super::{Cpu, CpuBuffer, CpuGemm};
use crate::backend::{AttentionMask, AttentionOps, DeviceBuffer, check_mask};
use crate::error::{Result, check_len};

/// Whether query `i` may attend to key `j` under `mask`.
#[must_use]
pub fn visible(mask: AttentionMask<'_>, i: usize, j: usize) -> bool {
    match mask {
        AttentionMask::Full => true,
        AttentionMask::Causal { past } => j <= past + i,
        AttentionMask::Segments(bounds) => {
            // Segment of a row: the last bound <= row (bounds are sorted).
            let seg = |r: usize| bounds.partition_point(|&b| b <= r);
            seg(i) == seg(j)
        }
    }
}

impl<G: CpuGemm> AttentionOps for Cpu<G> {
    fn masked_softmax(
        &self,
        scores: &mut CpuBuffer,
        rows: usize,
        cols: usize,
        mask: AttentionMask<'_>,
        scale: f32,
    ) -> Result<()> {
        check_len("masked_softmax scores", rows * cols, scores.len())?;
        check_mask(rows, cols, mask)?;
        let s = scores.f32s_mut("masked_softmax")?;
        for i in 0..rows {
            let row = &mut s[i * cols..(i + 1) * cols];
            let mut max = f64::NEG_INFINITY;
            for (j, v) in row.iter().enumerate() {
                if visible(mask, i, j) {
                    max = max.max(f64::from(*v) * f64::from(scale));
                }
            }
            if max == f64::NEG_INFINITY {
                row.fill(0.0);
                continue;
            }
            let mut sum = 0.0f64;
            for (j, v) in row.iter().enumerate() {
                if visible(mask, i, j) {
                    sum += libm::exp(f64::from(*v) * f64::from(scale) - max);
                }
            }
            for (j, v) in row.iter_mut().enumerate() {
                *v = if visible(mask, i, j) {
                    (libm::exp(f64::from(*v) * f64::from(scale) - max) / sum) as f32
                } else {
                    0.0
                };
            }
        }
        Ok(())
    }
}

//! Host-side position tables: the text decoder's 3D MRoPE position ids (`get_rope_index`) and
//! interleaved cos/sin tables, the vision tower's 2D rotary tables, the bilinear taps of the
//! learned vision position table, and the per-image attention segments.
//!
//! Everything rotary is computed in f32 as PyTorch does (`inv_freq = 1 / theta^(2i/d)`,
//! `angle = f32(position) * inv_freq`).

use crate::error::{ModelError, Result};

/// The grid of one image in patches (`image_grid_thw` row): `t` temporal patches of `h x w`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Grid {
    /// Temporal patches.
    pub t: usize,
    /// Patch rows.
    pub h: usize,
    /// Patch columns.
    pub w: usize,
}

impl Grid {
    /// Patches (rows of `pixel_values`).
    #[must_use]
    pub fn patches(&self) -> usize {
        self.t * self.h * self.w
    }

    /// Merged tokens (image-pad tokens in the prompt) for a merge size.
    #[must_use]
    pub fn tokens(&self, merge: usize) -> usize {
        self.patches() / (merge * merge).max(1)
    }

    /// Checks that the grid is non-empty and divisible by the merge size.
    ///
    /// # Errors
    /// [`ModelError::InvalidInput`].
    pub fn check(&self, merge: usize) -> Result<()> {
        if self.t == 0 || self.h == 0 || self.w == 0 {
            return Err(ModelError::input(format!("empty image grid {self:?}")));
        }
        if !self.h.is_multiple_of(merge) || !self.w.is_multiple_of(merge) {
            return Err(ModelError::input(format!(
                "image grid {self:?} is not a multiple of the merge size {merge}"
            )));
        }
        if self
            .t
            .checked_mul(self.h)
            .and_then(|v| v.checked_mul(self.w))
            .is_none()
            || self.h > 1 << 20
            || self.w > 1 << 20
            || self.t > 1 << 20
        {
            return Err(ModelError::input(format!(
                "image grid {self:?} is too large"
            )));
        }
        Ok(())
    }
}

/// `1 / theta^(2i / dim)` for `i < dim / 2`, in f32 as PyTorch computes it.
#[must_use]
pub fn inv_freq(theta: f32, dim: usize) -> Vec<f32> {
    (0..dim / 2)
        .map(|i| 1.0f32 / theta.powf((2 * i) as f32 / dim as f32))
        .collect()
}

/// The 3D (t, h, w) MRoPE position of every token and the rope delta
/// (`max position + 1 - tokens`), as `get_rope_index`. Each run of `grid.tokens(merge)` image
/// tokens takes the next grid; text tokens get `(p, p, p)`; after an image the cursor moves to
/// `start + max(h, w) / merge`.
///
/// # Errors
/// [`ModelError::ImageTokenMismatch`] if the image tokens do not add up to the grids;
/// [`ModelError::InvalidInput`] for bad grids.
pub fn rope_index(
    ids: &[u32],
    grids: &[Grid],
    image_token: u32,
    merge: usize,
) -> Result<(Vec<[i64; 3]>, i64)> {
    let mut need = 0usize;
    for g in grids {
        g.check(merge)?;
        need = need.saturating_add(g.tokens(merge));
    }
    let got = ids.iter().filter(|&&t| t == image_token).count();
    if got != need {
        return Err(ModelError::ImageTokenMismatch {
            expected: need,
            got,
        });
    }
    let mut pos = Vec::with_capacity(ids.len());
    let mut cursor: i64 = 0;
    let mut max_pos: i64 = -1;
    let mut next = grids.iter();
    let mut i = 0;
    while i < ids.len() {
        if ids.get(i) == Some(&image_token) {
            let g = next.next().ok_or(ModelError::ImageTokenMismatch {
                expected: need,
                got,
            })?;
            let n = g.tokens(merge);
            let run = ids.get(i..i + n).ok_or(ModelError::ImageTokenMismatch {
                expected: need,
                got,
            })?;
            if run.iter().any(|&t| t != image_token) {
                return Err(ModelError::input(format!(
                    "image tokens at position {i} are not one contiguous run of {n} (grid {g:?})"
                )));
            }
            let (hh, ww) = (g.h / merge, g.w / merge);
            for ti in 0..g.t {
                for hi in 0..hh {
                    for wi in 0..ww {
                        let p = [cursor + ti as i64, cursor + hi as i64, cursor + wi as i64];
                        max_pos = max_pos.max(p[0]).max(p[1]).max(p[2]);
                        pos.push(p);
                    }
                }
            }
            cursor += hh.max(ww) as i64;
            i += n;
        } else {
            pos.push([cursor; 3]);
            max_pos = max_pos.max(cursor);
            cursor += 1;
            i += 1;
        }
    }
    let delta = max_pos + 1 - ids.len() as i64;
    Ok((pos, delta))
}

/// The text decoder's cos/sin tables (`rows x head_dim` each) for 3D positions, interleaved
/// MRoPE: frequency `j` follows H if `j % 3 == 1 && j < 3 * section[1]`, W if
/// `j % 3 == 2 && j < 3 * section[2]`, else T; the table row is `[angles, angles]`.
#[must_use]
pub fn text_rope_tables(
    positions: &[[i64; 3]],
    head_dim: usize,
    theta: f32,
    section: [usize; 3],
) -> (Vec<f32>, Vec<f32>) {
    let inv = inv_freq(theta, head_dim);
    let half = head_dim / 2;
    let axis: Vec<usize> = (0..half)
        .map(|j| {
            if j % 3 == 1 && j < 3 * section[1] {
                1
            } else if j % 3 == 2 && j < 3 * section[2] {
                2
            } else {
                0
            }
        })
        .collect();
    let mut cos = vec![0.0f32; positions.len() * head_dim];
    let mut sin = vec![0.0f32; positions.len() * head_dim];
    for (r, p) in positions.iter().enumerate() {
        let base = r * head_dim;
        for (j, (&f, &a)) in inv.iter().zip(&axis).enumerate() {
            let angle = p[a] as f32 * f;
            let (s, c) = angle.sin_cos();
            cos[base + j] = c;
            cos[base + half + j] = c;
            sin[base + j] = s;
            sin[base + half + j] = s;
        }
    }
    (cos, sin)
}

/// Full-resolution `(row, col)` patch coordinates of every patch, in spatial-merge-block order
/// (block row, block col, in-row, in-col), repeated for every temporal slice.
#[must_use]
pub fn vision_coords(grids: &[Grid], merge: usize) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    for g in grids {
        for _ in 0..g.t {
            for br in 0..g.h / merge {
                for bc in 0..g.w / merge {
                    for ir in 0..merge {
                        for ic in 0..merge {
                            out.push((br * merge + ir, bc * merge + ic));
                        }
                    }
                }
            }
        }
    }
    out
}

/// The vision tower's 2D rotary tables (`patches x head_dim` each): frequencies
/// `1/theta^(2j/(head_dim/2))` for `j < head_dim/4`, angles `[row·f, col·f]`, row `[angles, angles]`.
#[must_use]
pub fn vision_rope_tables(
    coords: &[(usize, usize)],
    head_dim: usize,
    theta: f32,
) -> (Vec<f32>, Vec<f32>) {
    let inv = inv_freq(theta, head_dim / 2);
    let q = inv.len();
    let half = head_dim / 2;
    let mut cos = vec![0.0f32; coords.len() * head_dim];
    let mut sin = vec![0.0f32; coords.len() * head_dim];
    for (r, &(row, col)) in coords.iter().enumerate() {
        let base = r * head_dim;
        for (j, &f) in inv.iter().enumerate() {
            for (k, p) in [(j, row), (q + j, col)] {
                let (s, c) = (p as f32 * f).sin_cos();
                cos[base + k] = c;
                cos[base + half + k] = c;
                sin[base + k] = s;
                sin[base + half + k] = s;
            }
        }
    }
    (cos, sin)
}

/// One axis of the align-corners bilinear resampling: taps `floor, floor + 1` (clamped) and
/// their weights, for target index `i` of `size` into a table side of `side`.
fn axis_taps(i: usize, size: usize, side: usize) -> ([usize; 2], [f32; 2]) {
    let src = (i as f32 * (side - 1) as f32) / (size.saturating_sub(1).max(1)) as f32;
    let fl = src.floor();
    let mut taps = [0usize; 2];
    let mut w = [0.0f32; 2];
    for o in 0..2 {
        let raw = fl as i64 + o as i64;
        taps[o] = raw.clamp(0, side as i64 - 1) as usize;
        let dist = (src - fl - o as f32).abs();
        w[o] = (1.0 - dist).max(0.0);
    }
    (taps, w)
}

/// The four bilinear taps (table rows) and weights of every patch, in the order of
/// [`vision_coords`]: `F.interpolate(bilinear, align_corners=True)` of the `side x side` table,
/// taps ordered `(y0,x0), (y0,x1), (y1,x0), (y1,x1)`.
#[must_use]
pub fn pos_embed_taps(grids: &[Grid], merge: usize, side: usize) -> (Vec<[u32; 4]>, Vec<[f32; 4]>) {
    let mut idx = Vec::new();
    let mut wts = Vec::new();
    for g in grids {
        let coords = vision_coords(std::slice::from_ref(g), merge);
        for (row, col) in coords {
            let (ht, hw) = axis_taps(row, g.h, side);
            let (wt, ww) = axis_taps(col, g.w, side);
            let mut i4 = [0u32; 4];
            let mut w4 = [0.0f32; 4];
            for a in 0..2 {
                for b in 0..2 {
                    i4[a * 2 + b] = (ht[a] * side + wt[b]) as u32;
                    w4[a * 2 + b] = hw[a] * ww[b];
                }
            }
            idx.push(i4);
            wts.push(w4);
        }
    }
    (idx, wts)
}

/// Cumulative patch boundaries of the vision attention segments: one per image and temporal slice.
#[must_use]
pub fn vision_segments(grids: &[Grid]) -> Vec<usize> {
    let mut cu = vec![0usize];
    let mut acc = 0usize;
    for g in grids {
        for _ in 0..g.t {
            acc += g.h * g.w;
            cu.push(acc);
        }
    }
    cu
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rope_index_matches_the_hf_example() {
        // 6 text tokens, one 4x6 grid (6 merged tokens), 8 text tokens (hf-reference example).
        let mut ids = vec![1u32; 6];
        ids.extend([9u32; 6]);
        ids.extend([1u32; 8]);
        let (pos, delta) = rope_index(&ids, &[Grid { t: 1, h: 4, w: 6 }], 9, 2).unwrap();
        let t: Vec<i64> = pos.iter().map(|p| p[0]).collect();
        let h: Vec<i64> = pos.iter().map(|p| p[1]).collect();
        let w: Vec<i64> = pos.iter().map(|p| p[2]).collect();
        assert_eq!(&t[..13], &[0, 1, 2, 3, 4, 5, 6, 6, 6, 6, 6, 6, 9]);
        assert_eq!(&h[6..12], &[6, 6, 6, 7, 7, 7]);
        assert_eq!(&w[6..12], &[6, 7, 8, 6, 7, 8]);
        assert_eq!(delta, -3);
    }

    #[test]
    fn rope_index_rejects_count_mismatch() {
        let ids = vec![9u32; 5];
        let err = rope_index(&ids, &[Grid { t: 1, h: 4, w: 6 }], 9, 2).unwrap_err();
        assert!(matches!(
            err,
            ModelError::ImageTokenMismatch {
                expected: 6,
                got: 5
            }
        ));
    }

    #[test]
    fn bilinear_weights_sum_to_one() {
        let (_, w) = pos_embed_taps(&[Grid { t: 1, h: 6, w: 4 }], 2, 8);
        for w4 in w {
            assert!((w4.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        }
    }
}

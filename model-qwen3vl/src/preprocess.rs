//! Image preprocessing as the Hugging Face Qwen2-VL/Qwen3-VL image processor (PIL backend):
//! `smart_resize` to multiples of `patch · merge` within the pixel budget, PIL's bicubic resize
//! (antialiased, fixed-point, horizontal pass then vertical), `x / 127.5 - 1` normalisation
//! (mean = std = 0.5), temporal duplication and patchify into merge-block order.

use std::path::Path;

use crate::error::{ModelError, Result};
use crate::model::ImageInput;
use crate::mrope::Grid;

/// Processor settings (`preprocessor_config.json`).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct ImageProcessorConfig {
    /// Minimum pixels after resizing (`size.shortest_edge`).
    pub min_pixels: usize,
    /// Maximum pixels after resizing (`size.longest_edge`).
    pub max_pixels: usize,
    /// Patch side.
    pub patch_size: usize,
    /// Frames per temporal patch (a still image is repeated this many times).
    pub temporal_patch_size: usize,
    /// Merge side.
    pub merge_size: usize,
    /// Per-channel mean (in `[0, 1]` units).
    pub image_mean: [f32; 3],
    /// Per-channel standard deviation.
    pub image_std: [f32; 3],
}

impl Default for ImageProcessorConfig {
    /// The Qwen3-VL checkpoints' values.
    fn default() -> Self {
        Self {
            min_pixels: 65_536,
            max_pixels: 16_777_216,
            patch_size: 16,
            temporal_patch_size: 2,
            merge_size: 2,
            image_mean: [0.5; 3],
            image_std: [0.5; 3],
        }
    }
}

impl ImageProcessorConfig {
    /// Sets the pixel budget.
    #[must_use]
    pub fn with_pixels(mut self, min_pixels: usize, max_pixels: usize) -> Self {
        self.min_pixels = min_pixels;
        self.max_pixels = max_pixels;
        self
    }

    /// Reads `preprocessor_config.json` (missing keys keep their defaults).
    ///
    /// # Errors
    /// [`ModelError::Io`], [`ModelError::Json`].
    pub fn from_file(path: &Path) -> Result<Self> {
        #[derive(serde::Deserialize, Default)]
        struct Size {
            shortest_edge: Option<usize>,
            longest_edge: Option<usize>,
        }
        #[derive(serde::Deserialize)]
        struct Raw {
            size: Option<Size>,
            min_pixels: Option<usize>,
            max_pixels: Option<usize>,
            patch_size: Option<usize>,
            temporal_patch_size: Option<usize>,
            merge_size: Option<usize>,
            image_mean: Option<[f32; 3]>,
            image_std: Option<[f32; 3]>,
        }
        let text = std::fs::read_to_string(path).map_err(|source| ModelError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let raw: Raw = serde_json::from_str(&text).map_err(|source| ModelError::Json {
            path: path.to_path_buf(),
            source,
        })?;
        let d = Self::default();
        let size = raw.size.unwrap_or_default();
        Ok(Self {
            min_pixels: size
                .shortest_edge
                .or(raw.min_pixels)
                .unwrap_or(d.min_pixels),
            max_pixels: size.longest_edge.or(raw.max_pixels).unwrap_or(d.max_pixels),
            patch_size: raw.patch_size.unwrap_or(d.patch_size),
            temporal_patch_size: raw.temporal_patch_size.unwrap_or(d.temporal_patch_size),
            merge_size: raw.merge_size.unwrap_or(d.merge_size),
            image_mean: raw.image_mean.unwrap_or(d.image_mean),
            image_std: raw.image_std.unwrap_or(d.image_std),
        })
    }
}

/// An 8-bit RGB image, row-major `height x width x 3`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RgbImage {
    width: usize,
    height: usize,
    data: Vec<u8>,
}

impl RgbImage {
    /// Wraps a buffer.
    ///
    /// # Errors
    /// [`ModelError::Image`] if `data.len() != width * height * 3` or a side is zero.
    pub fn new(width: usize, height: usize, data: Vec<u8>) -> Result<Self> {
        if width == 0
            || height == 0
            || width.checked_mul(height).and_then(|p| p.checked_mul(3)) != Some(data.len())
        {
            return Err(ModelError::Image {
                reason: format!(
                    "{width}x{height} RGB needs {} bytes, got {}",
                    width.saturating_mul(height).saturating_mul(3),
                    data.len()
                ),
            });
        }
        Ok(Self {
            width,
            height,
            data,
        })
    }

    /// Decodes a PNG or JPEG file and converts it to RGB (alpha dropped, as PIL's `convert("RGB")`).
    ///
    /// # Errors
    /// [`ModelError::Image`] if the file cannot be read or decoded.
    pub fn open(path: &Path) -> Result<Self> {
        let img = image::open(path).map_err(|e| ModelError::Image {
            reason: format!("{}: {e}", path.display()),
        })?;
        let rgb = img.to_rgb8();
        let (w, h) = (rgb.width() as usize, rgb.height() as usize);
        Self::new(w, h, rgb.into_raw())
    }

    /// Width in pixels.
    #[must_use]
    pub fn width(&self) -> usize {
        self.width
    }

    /// Height in pixels.
    #[must_use]
    pub fn height(&self) -> usize {
        self.height
    }

    /// The pixels.
    #[must_use]
    pub fn data(&self) -> &[u8] {
        &self.data
    }
}

/// The target size `(height, width)` of `smart_resize`: multiples of `factor`, aspect ratio kept,
/// pixel count within `[min_pixels, max_pixels]` (Python's round-half-to-even for the first
/// rounding, as the reference).
///
/// # Errors
/// [`ModelError::Image`] for an aspect ratio above 200 or a zero side.
pub fn smart_resize(
    height: usize,
    width: usize,
    factor: usize,
    min_pixels: usize,
    max_pixels: usize,
) -> Result<(usize, usize)> {
    if height == 0 || width == 0 || factor == 0 {
        return Err(ModelError::Image {
            reason: "zero image side".into(),
        });
    }
    let (h, w, f) = (height as f64, width as f64, factor as f64);
    if h.max(w) / h.min(w) > 200.0 {
        return Err(ModelError::Image {
            reason: format!("aspect ratio of {width}x{height} is above 200"),
        });
    }
    let mut hb = (h / f).round_ties_even() * f;
    let mut wb = (w / f).round_ties_even() * f;
    if hb * wb > max_pixels as f64 {
        let beta = (h * w / max_pixels as f64).sqrt();
        hb = f.max((h / beta / f).floor() * f);
        wb = f.max((w / beta / f).floor() * f);
    } else if hb * wb < min_pixels as f64 {
        let beta = (min_pixels as f64 / (h * w)).sqrt();
        hb = (h * beta / f).ceil() * f;
        wb = (w * beta / f).ceil() * f;
    }
    // A side that rounds to zero (only possible with min_pixels = 0) becomes one factor.
    Ok(((hb as usize).max(factor), (wb as usize).max(factor)))
}

const PRECISION_BITS: u32 = 32 - 8 - 2;

fn bicubic(x: f64) -> f64 {
    let a = -0.5;
    let x = x.abs();
    if x < 1.0 {
        ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0
    } else if x < 2.0 {
        (((x - 5.0) * x + 8.0) * x - 4.0) * a
    } else {
        0.0
    }
}

/// PIL's per-output-pixel source window and fixed-point weights for one axis.
fn coeffs(in_size: usize, out_size: usize) -> (Vec<(usize, usize)>, Vec<i32>, usize) {
    let scale = in_size as f64 / out_size as f64;
    let filterscale = scale.max(1.0);
    let support = 2.0 * filterscale;
    let ksize = support.ceil() as usize * 2 + 1;
    let mut bounds = Vec::with_capacity(out_size);
    let mut kk = vec![0i32; out_size * ksize];
    for xx in 0..out_size {
        let center = (xx as f64 + 0.5) * scale;
        let ss = 1.0 / filterscale;
        let xmin = ((center - support + 0.5) as i64).max(0) as usize;
        let xmax = ((center + support + 0.5) as i64).clamp(0, in_size as i64) as usize;
        let n = xmax.saturating_sub(xmin).min(ksize);
        let mut w = vec![0.0f64; n];
        let mut total = 0.0;
        for (x, wv) in w.iter_mut().enumerate() {
            *wv = bicubic((x as f64 + xmin as f64 - center + 0.5) * ss);
            total += *wv;
        }
        for (x, wv) in w.iter().enumerate() {
            let v = if total != 0.0 { wv / total } else { *wv };
            let fixed = v * f64::from(1u32 << PRECISION_BITS);
            kk[xx * ksize + x] = if v < 0.0 {
                (fixed - 0.5) as i32
            } else {
                (fixed + 0.5) as i32
            };
        }
        bounds.push((xmin, n));
    }
    (bounds, kk, ksize)
}

fn clip8(v: i64) -> u8 {
    (v >> PRECISION_BITS).clamp(0, 255) as u8
}

/// PIL's `Image.resize((w, h), BICUBIC)` of an 8-bit RGB image: separable, antialiased
/// (the kernel widens by the downscale factor), 22-bit fixed-point weights, horizontal pass
/// (rounded to 8 bits) then vertical pass.
///
/// # Errors
/// [`ModelError::Image`] if a target side is zero.
pub fn resize_bicubic(img: &RgbImage, out_w: usize, out_h: usize) -> Result<RgbImage> {
    if out_w == 0 || out_h == 0 {
        return Err(ModelError::Image {
            reason: format!("cannot resize to {out_w}x{out_h}"),
        });
    }
    let (in_w, in_h) = (img.width, img.height);
    let src = &img.data;
    // Horizontal pass over the source rows the vertical pass needs.
    let (vb, vk, vks) = coeffs(in_h, out_h);
    let (first, last) = match (vb.first(), vb.last()) {
        (Some(f), Some(l)) => (f.0, l.0 + l.1),
        _ => (0, 0),
    };
    let need_h = out_w != in_w;
    let need_v = out_h != in_h;
    let (tmp, tmp_w, row0) = if need_h {
        let (hb, hk, hks) = coeffs(in_w, out_w);
        let rows = last.saturating_sub(first);
        let mut tmp = vec![0u8; rows * out_w * 3];
        for y in 0..rows {
            let sy = first + y;
            for (xx, &(xmin, n)) in hb.iter().enumerate() {
                let k = &hk[xx * hks..xx * hks + n];
                let mut acc = [1i64 << (PRECISION_BITS - 1); 3];
                for (x, &kv) in k.iter().enumerate() {
                    let at = (sy * in_w + xmin + x) * 3;
                    for (c, a) in acc.iter_mut().enumerate() {
                        *a += i64::from(src.get(at + c).copied().unwrap_or(0)) * i64::from(kv);
                    }
                }
                for (c, a) in acc.iter().enumerate() {
                    tmp[(y * out_w + xx) * 3 + c] = clip8(*a);
                }
            }
        }
        (tmp, out_w, first)
    } else {
        (src.clone(), in_w, 0)
    };
    if !need_v {
        // No vertical change: the horizontal result (or the source) is the output.
        let rows = if need_h { last - first } else { in_h };
        let mut data = tmp;
        data.truncate(rows * tmp_w * 3);
        return Ok(RgbImage {
            width: tmp_w,
            height: rows,
            data,
        });
    }
    let mut out = vec![0u8; out_h * tmp_w * 3];
    for (yy, &(ymin, n)) in vb.iter().enumerate() {
        let k = &vk[yy * vks..yy * vks + n];
        for xx in 0..tmp_w {
            let mut acc = [1i64 << (PRECISION_BITS - 1); 3];
            for (y, &kv) in k.iter().enumerate() {
                let sy = ymin + y - row0;
                let at = (sy * tmp_w + xx) * 3;
                for (c, a) in acc.iter_mut().enumerate() {
                    *a += i64::from(tmp.get(at + c).copied().unwrap_or(0)) * i64::from(kv);
                }
            }
            for (c, a) in acc.iter().enumerate() {
                out[(yy * tmp_w + xx) * 3 + c] = clip8(*a);
            }
        }
    }
    Ok(RgbImage {
        width: tmp_w,
        height: out_h,
        data: out,
    })
}

/// Normalises and patchifies an image whose sides are multiples of `patch · merge`, appending
/// its rows to `out`: rows in (block row, block col, in-row, in-col) order, each row
/// `(channel, temporal, y, x)` with the frame repeated `temporal_patch_size` times.
///
/// # Errors
/// [`ModelError::Image`] if the sides are not multiples of `patch · merge`.
pub fn patchify(img: &RgbImage, cfg: &ImageProcessorConfig, out: &mut Vec<f32>) -> Result<Grid> {
    let (p, m, tp) = (cfg.patch_size, cfg.merge_size, cfg.temporal_patch_size);
    let f = p * m;
    if f == 0 || !img.width.is_multiple_of(f) || !img.height.is_multiple_of(f) {
        return Err(ModelError::Image {
            reason: format!(
                "{}x{} is not a multiple of patch_size * merge_size = {f}",
                img.width, img.height
            ),
        });
    }
    let (gh, gw) = (img.height / p, img.width / p);
    let (mean, std) = (cfg.image_mean, cfg.image_std);
    out.reserve(gh * gw * 3 * tp * p * p);
    for br in 0..gh / m {
        for bc in 0..gw / m {
            for ir in 0..m {
                for ic in 0..m {
                    let (pr, pc) = (br * m + ir, bc * m + ic);
                    for c in 0..3 {
                        for _ in 0..tp {
                            for y in 0..p {
                                let row = (pr * p + y) * img.width;
                                for x in 0..p {
                                    let v = img
                                        .data
                                        .get((row + pc * p + x) * 3 + c)
                                        .copied()
                                        .unwrap_or(0);
                                    out.push((f32::from(v) / 255.0 - mean[c]) / std[c]);
                                }
                            }
                        }
                    }
                }
            }
        }
    }
    Ok(Grid { t: 1, h: gh, w: gw })
}

/// The processor's full pipeline for a list of images: `pixel_values` and one grid per image.
///
/// # Errors
/// [`ModelError::Image`] for degenerate images.
pub fn preprocess(images: &[RgbImage], cfg: &ImageProcessorConfig) -> Result<ImageInput> {
    let mut pixel_values = Vec::new();
    let mut grids = Vec::with_capacity(images.len());
    for img in images {
        let (h, w) = smart_resize(
            img.height,
            img.width,
            cfg.patch_size * cfg.merge_size,
            cfg.min_pixels,
            cfg.max_pixels,
        )?;
        let grid = if (h, w) == (img.height, img.width) {
            patchify(img, cfg, &mut pixel_values)?
        } else {
            patchify(&resize_bicubic(img, w, h)?, cfg, &mut pixel_values)?
        };
        grids.push(grid);
    }
    Ok(ImageInput {
        pixel_values,
        grids,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn smart_resize_examples() {
        assert_eq!(smart_resize(64, 96, 32, 1024, 1 << 24).unwrap(), (64, 96));
        // Round half to even: 48/32 = 1.5 -> 2, 80/32 = 2.5 -> 2.
        assert_eq!(smart_resize(48, 80, 32, 1024, 1 << 24).unwrap(), (64, 64));
        assert!(smart_resize(1, 300, 32, 1024, 1 << 24).is_err());
    }

    #[test]
    fn identity_resize_keeps_pixels() {
        let img = RgbImage::new(4, 3, (0..36).map(|v| v as u8 * 7).collect()).unwrap();
        assert_eq!(resize_bicubic(&img, 4, 3).unwrap(), img);
        assert!(resize_bicubic(&img, 0, 3).is_err());
        assert_eq!(smart_resize(5, 5, 32, 0, 1 << 24).unwrap(), (32, 32));
    }
}

//! The naive f64 oracle: textbook formulas, evaluated in double precision on dense host
//! matrices, independent of every backend (including the reference CPU backend).
//!
//! Every oracle returns the exact value (up to f64 rounding) and, where the check's tolerance is
//! relative to something other than the value itself, a per-element *scale* (documented on each
//! function) that [`crate::tolerance`] multiplies by its relative tolerance.

use axpo_core::backend::{Activation, AttentionMask, Layout};

/// A dense row-major f64 matrix.
#[derive(Debug, Clone, PartialEq)]
pub struct Dense {
    /// Rows.
    pub rows: usize,
    /// Columns.
    pub cols: usize,
    /// `rows * cols` values.
    pub data: Vec<f64>,
}

impl Dense {
    /// Element `(r, c)`.
    #[must_use]
    pub fn at(&self, r: usize, c: usize) -> f64 {
        self.data[r * self.cols + c]
    }

    /// The view `(offset, rows, cols, row_stride)` of a flat buffer, as a dense matrix.
    #[must_use]
    pub fn from_view(flat: &[f64], offset: usize, rows: usize, cols: usize, stride: usize) -> Self {
        let mut data = Vec::with_capacity(rows * cols);
        for r in 0..rows {
            data.extend_from_slice(&flat[offset + r * stride..offset + r * stride + cols]);
        }
        Self { rows, cols, data }
    }

    /// `op(self)` as a dense matrix.
    #[must_use]
    pub fn apply(&self, layout: Layout) -> Self {
        match layout {
            Layout::AsStored => self.clone(),
            Layout::Transposed => {
                let mut data = Vec::with_capacity(self.data.len());
                for c in 0..self.cols {
                    for r in 0..self.rows {
                        data.push(self.at(r, c));
                    }
                }
                Self {
                    rows: self.cols,
                    cols: self.rows,
                    data,
                }
            }
        }
    }
}

/// `op(a) op(b)`: the product and, as scale, `sum_p |a_ip b_pj|` per element.
#[must_use]
pub fn matmul(a: &Dense, a_layout: Layout, b: &Dense, b_layout: Layout) -> (Dense, Vec<f64>) {
    let (a, b) = (a.apply(a_layout), b.apply(b_layout));
    let (m, k, n) = (a.rows, a.cols, b.cols);
    let mut out = Vec::with_capacity(m * n);
    let mut scale = Vec::with_capacity(m * n);
    for i in 0..m {
        for j in 0..n {
            let (mut s, mut t) = (0.0, 0.0);
            for p in 0..k {
                let v = a.at(i, p) * b.at(p, j);
                s += v;
                t += v.abs();
            }
            out.push(s);
            scale.push(t);
        }
    }
    (
        Dense {
            rows: m,
            cols: n,
            data: out,
        },
        scale,
    )
}

/// The Gauss error function, to f64 precision (Abramowitz–Stegun 7.1.28 is too coarse; this is
/// the series for |x| < 3 and the continued fraction beyond).
#[must_use]
pub fn erf(x: f64) -> f64 {
    let ax = x.abs();
    let r = if ax < 3.0 {
        // erf x = 2/sqrt(pi) * sum_n (-1)^n x^(2n+1) / (n! (2n+1))
        let mut term = ax;
        let mut sum = ax;
        let x2 = ax * ax;
        let mut n = 0.0;
        loop {
            n += 1.0;
            term *= -x2 / n;
            let add = term / (2.0 * n + 1.0);
            sum += add;
            if add.abs() < 1e-17 * sum.abs() {
                break;
            }
        }
        sum * 2.0 / core::f64::consts::PI.sqrt()
    } else {
        // erfc x = exp(-x^2)/sqrt(pi) * 1/(x + 1/2/(x + 1/(x + 3/2/(x + ...)))) (Lentz, 60 terms)
        let mut f = ax;
        for k in (1..60).rev() {
            f = ax + (f64::from(k) / 2.0) / f;
        }
        1.0 - (-ax * ax).exp() / (core::f64::consts::PI.sqrt() * f)
    };
    if x < 0.0 { -r } else { r }
}

/// `act(x)`.
#[must_use]
pub fn activation(x: f64, act: Activation) -> f64 {
    match act {
        Activation::Silu => x / (1.0 + (-x).exp()),
        Activation::GeluTanh => {
            let c = (2.0 / core::f64::consts::PI).sqrt();
            0.5 * x * (1.0 + (c * (x + 0.044_715 * x * x * x)).tanh())
        }
        Activation::GeluErf => 0.5 * x * (1.0 + erf(x / core::f64::consts::SQRT_2)),
        _ => f64::NAN,
    }
}

/// Rounds to the precision of bf16 (`Some(true)`), f16 (`Some(false)`) or not at all.
#[must_use]
pub fn round_half(v: f64, bf16: Option<bool>) -> f64 {
    match bf16 {
        Some(true) => f64::from(half::bf16::from_f64(v).to_f32()),
        Some(false) => f64::from(half::f16::from_f64(v).to_f32()),
        None => v,
    }
}

/// RMSNorm of each `width`-wide row: `x / sqrt(mean(x^2) + eps) * w`, the normalised value
/// rounded to the input precision first (`round`, see [`round_half`]). Scale: `|x * inv * w|`
/// before rounding.
#[must_use]
pub fn rms_norm(x: &[f64], w: &[f64], eps: f64, round: Option<bool>) -> (Vec<f64>, Vec<f64>) {
    let d = w.len();
    let (mut out, mut scale) = (Vec::new(), Vec::new());
    for row in x.chunks_exact(d) {
        let ms = row.iter().map(|v| v * v).sum::<f64>() / d as f64;
        let inv = 1.0 / (ms + eps).sqrt();
        for (v, wv) in row.iter().zip(w) {
            out.push(round_half(v * inv, round) * wv);
            scale.push((v * inv * wv).abs());
        }
    }
    (out, scale)
}

/// LayerNorm of each row with biased variance. Scale: `|norm * w| + |b|`.
#[must_use]
pub fn layer_norm(
    x: &[f64],
    w: &[f64],
    b: &[f64],
    eps: f64,
    round: Option<bool>,
) -> (Vec<f64>, Vec<f64>) {
    let d = w.len();
    let (mut out, mut scale) = (Vec::new(), Vec::new());
    for row in x.chunks_exact(d) {
        let mean = row.iter().sum::<f64>() / d as f64;
        let var = row.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / d as f64;
        let inv = 1.0 / (var + eps).sqrt();
        for ((v, wv), bv) in row.iter().zip(w).zip(b) {
            let n = (v - mean) * inv;
            out.push(round_half(n, round) * wv + bv);
            scale.push((n * wv).abs() + bv.abs() + (mean * inv * wv).abs());
        }
    }
    (out, scale)
}

/// Rotate-half rotary embedding of `rows x heads*head_dim` values with per-row tables
/// (`rows x head_dim`). Scale: `|a cos| + |b sin|` of the two terms of each output.
#[must_use]
pub fn rotary(
    x: &[f64],
    cos: &[f64],
    sin: &[f64],
    heads: usize,
    head_dim: usize,
) -> (Vec<f64>, Vec<f64>) {
    let width = heads * head_dim;
    let half = head_dim / 2;
    let mut out = x.to_vec();
    let mut scale = vec![0.0; x.len()];
    for r in 0..x.len() / width {
        for h in 0..heads {
            let base = r * width + h * head_dim;
            for i in 0..half {
                let (a, b) = (x[base + i], x[base + i + half]);
                let (c1, s1) = (cos[r * head_dim + i], sin[r * head_dim + i]);
                let (c2, s2) = (cos[r * head_dim + i + half], sin[r * head_dim + i + half]);
                out[base + i] = a * c1 - b * s1;
                out[base + i + half] = b * c2 + a * s2;
                scale[base + i] = (a * c1).abs() + (b * s1).abs();
                scale[base + i + half] = (b * c2).abs() + (a * s2).abs();
            }
        }
    }
    (out, scale)
}

/// Whether query `i` sees key `j` (written from the mask's documentation, independently of any
/// backend).
#[must_use]
pub fn visible(mask: AttentionMask<'_>, i: usize, j: usize) -> bool {
    match mask {
        AttentionMask::Full => true,
        AttentionMask::Causal { past } => j <= past + i,
        AttentionMask::Segments(bounds) => {
            let seg = |r: usize| bounds.windows(2).position(|w| w[0] <= r && r < w[1]);
            seg(i).is_some() && seg(i) == seg(j)
        }
        _ => false,
    }
}

/// Masked row softmax of `scale * scores`; all-masked rows are zeros. The scale is the value.
#[must_use]
pub fn masked_softmax(
    scores: &[f64],
    rows: usize,
    cols: usize,
    mask: AttentionMask<'_>,
    scale: f64,
) -> Vec<f64> {
    let mut out = vec![0.0; rows * cols];
    for i in 0..rows {
        let vis: Vec<usize> = (0..cols).filter(|&j| visible(mask, i, j)).collect();
        let Some(max) = vis
            .iter()
            .map(|&j| scale * scores[i * cols + j])
            .reduce(f64::max)
        else {
            continue;
        };
        let sum: f64 = vis
            .iter()
            .map(|&j| (scale * scores[i * cols + j] - max).exp())
            .sum();
        for &j in &vis {
            out[i * cols + j] = (scale * scores[i * cols + j] - max).exp() / sum;
        }
    }
    out
}

/// Multi-head attention with grouped key/value heads. Scale: `sum_j p_ij |v_j|` per output,
/// plus `|out|`.
#[must_use]
#[allow(clippy::too_many_arguments)]
pub fn attention(
    q: &Dense,
    k: &Dense,
    v: &Dense,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
    scale: f64,
    mask: AttentionMask<'_>,
) -> (Vec<f64>, Vec<f64>) {
    let (n, kv) = (q.rows, k.rows);
    let group = heads / kv_heads;
    let width = heads * head_dim;
    let mut out = vec![0.0; n * width];
    let mut mag = vec![0.0; n * width];
    for h in 0..heads {
        let g = h / group;
        let mut scores = vec![0.0; n * kv];
        for i in 0..n {
            for j in 0..kv {
                scores[i * kv + j] = (0..head_dim)
                    .map(|d| q.at(i, h * head_dim + d) * k.at(j, g * head_dim + d))
                    .sum();
            }
        }
        let p = masked_softmax(&scores, n, kv, mask, scale);
        for i in 0..n {
            for d in 0..head_dim {
                let (mut s, mut t) = (0.0, 0.0);
                for j in 0..kv {
                    let x = p[i * kv + j] * v.at(j, g * head_dim + d);
                    s += x;
                    t += x.abs();
                }
                out[i * width + h * head_dim + d] = s;
                mag[i * width + h * head_dim + d] = t + s.abs();
            }
        }
    }
    (out, mag)
}

/// The per-token statistics of one row of logits, two-pass in f64.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RowStats {
    /// `log p(target)`.
    pub logp: f64,
    /// Entropy.
    pub entropy: f64,
    /// `sum p^2`.
    pub sum_p2: f64,
    /// Log-sum-exp.
    pub lse: f64,
    /// The running maximum (first slot of the online-softmax state).
    pub max: f64,
    /// `sum exp(z - max)`.
    pub sum: f64,
    /// `sum exp(z - max) (z - max)`.
    pub weighted: f64,
    /// `sum exp(2 (z - max))`.
    pub square: f64,
}

/// Statistics of one row of logits (`-inf` entries allowed; at least one finite).
#[must_use]
pub fn row_stats(z: &[f64], target: usize) -> RowStats {
    let max = z.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let (mut sum, mut weighted, mut square) = (0.0, 0.0, 0.0);
    for &v in z {
        if v == f64::NEG_INFINITY {
            continue;
        }
        let e = (v - max).exp();
        sum += e;
        weighted += e * (v - max);
        square += e * e;
    }
    let lse = max + sum.ln();
    let entropy = -z
        .iter()
        .filter(|v| **v != f64::NEG_INFINITY)
        .map(|&v| {
            let lp = v - lse;
            lp.exp() * lp
        })
        .sum::<f64>();
    RowStats {
        logp: z[target] - lse,
        entropy,
        sum_p2: square / (sum * sum),
        lse,
        max,
        sum,
        weighted,
        square,
    }
}

/// `d loss / d z` for one row, `loss = g_logp logp + g_entropy H`:
/// `g_logp (1[v = y] - p_v) - g_entropy p_v (ln p_v + H)`. Scale: the sum of the absolute
/// values of the terms, `|g_logp| (1[v = y] + p_v) + |g_entropy| p_v (|ln p_v| + H + 1)`.
#[must_use]
pub fn row_grad(
    z: &[f64],
    target: usize,
    lse: f64,
    entropy: f64,
    g_logp: f64,
    g_entropy: f64,
) -> (Vec<f64>, Vec<f64>) {
    let mut out = Vec::with_capacity(z.len());
    let mut scale = Vec::with_capacity(z.len());
    for (v, &zv) in z.iter().enumerate() {
        let onehot = if v == target { 1.0 } else { 0.0 };
        if zv == f64::NEG_INFINITY {
            out.push(g_logp * onehot);
            scale.push(g_logp.abs() * onehot);
            continue;
        }
        let lp = zv - lse;
        let p = lp.exp();
        out.push(g_logp * (onehot - p) - g_entropy * p * (lp + entropy));
        scale.push(g_logp.abs() * (onehot + p) + g_entropy.abs() * p * (lp.abs() + entropy + 1.0));
    }
    (out, scale)
}

/// The scalar loss `g_logp logp + g_entropy H` of one row, for finite differences.
#[must_use]
pub fn row_loss(z: &[f64], target: usize, g_logp: f64, g_entropy: f64) -> f64 {
    let s = row_stats(z, target);
    g_logp * s.logp + g_entropy * s.entropy
}

/// Central finite difference `(f(x + h) - f(x - h)) / 2h` of `f` along coordinate `i` of `x`.
pub fn central_difference(x: &mut [f64], i: usize, h: f64, f: impl Fn(&[f64]) -> f64) -> f64 {
    let x0 = x[i];
    x[i] = x0 + h;
    let up = f(x);
    x[i] = x0 - h;
    let down = f(x);
    x[i] = x0;
    (up - down) / (2.0 * h)
}

/// Logits `hidden · weightᵀ` (`N x V`) and, per logit, `sum_j |h_ij w_vj|`.
#[must_use]
pub fn head_logits(hidden: &Dense, weight: &Dense) -> (Dense, Vec<f64>) {
    matmul(hidden, Layout::AsStored, weight, Layout::Transposed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn erf_matches_known_values() {
        // erf(0.5), erf(1), erf(2), erf(3.5) to 15 digits (Abramowitz–Stegun table 7.1).
        for (x, want) in [
            (0.5, 0.520_499_877_813_047),
            (1.0, 0.842_700_792_949_715),
            (2.0, 0.995_322_265_018_953),
            (3.5, 0.999_999_256_901_628),
        ] {
            assert!((erf(x) - want).abs() < 1e-13, "erf({x}) = {}", erf(x));
            assert!((erf(-x) + want).abs() < 1e-13);
        }
    }

    #[test]
    fn the_analytic_gradient_is_the_derivative_of_the_loss() {
        let z = [0.3, -1.2, 2.5, f64::NEG_INFINITY, 0.7, -0.1];
        let (t, gl, ge) = (2, 0.8, -0.35);
        let s = row_stats(&z, t);
        let (grad, _) = row_grad(&z, t, s.lse, s.entropy, gl, ge);
        let mut x = z.to_vec();
        for (i, g) in grad.iter().enumerate() {
            if z[i] == f64::NEG_INFINITY {
                assert_eq!(*g, 0.0);
                continue;
            }
            let fd = central_difference(&mut x, i, 1e-5, |x| row_loss(x, t, gl, ge));
            assert!((fd - g).abs() < 1e-8, "d/dz{i}: analytic {g}, fd {fd}");
        }
    }

    #[test]
    fn row_stats_agree_with_their_definitions() {
        let z = [1.0, 2.0, 3.0];
        let s = row_stats(&z, 0);
        let sum: f64 = z.iter().map(|v| v.exp()).sum();
        let p: Vec<f64> = z.iter().map(|v| v.exp() / sum).collect();
        assert!((s.lse - sum.ln()).abs() < 1e-14);
        assert!((s.logp - p[0].ln()).abs() < 1e-14);
        let h: f64 = -p.iter().map(|q| q * q.ln()).sum::<f64>();
        assert!((s.entropy - h).abs() < 1e-14);
        let p2: f64 = p.iter().map(|q| q * q).sum();
        assert!((s.sum_p2 - p2).abs() < 1e-14);
    }
}

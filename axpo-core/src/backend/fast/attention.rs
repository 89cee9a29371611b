//! The fast CPU backend's attention: tiles of (head, query rows, visible keys), each a score
//! product, an f32 softmax compiled for the machine's vector width and a value product, run in
//! parallel.

use alloc::borrow::Cow;
use alloc::vec;
use alloc::vec::Vec;

use rayon::prelude::*;

use super::FastCpu;
use super::gemm::sgemm;
use crate::backend::{
    AttentionMask, AttentionOps, AttentionSpec, CpuBuffer, Epilogue, MatRef, Strided,
    check_attention,
};
use crate::error::{Error, Result as R};

/// A dense f32 copy (or borrow) of a view, with its row stride.
fn view_f32<'a>(x: &MatRef<'a, CpuBuffer>) -> R<(Cow<'a, [f32]>, usize)> {
    let span = if x.rows() == 0 {
        0
    } else {
        (x.rows() - 1) * x.row_stride() + x.cols()
    };
    let data = x
        .buffer()
        .f32_range(x.offset(), x.offset() + span, "attention")?;
    Ok((data, x.row_stride()))
}

/// One unit of attention work: head `h`, query rows `r0..r1`, keys `k0..k1`.
#[derive(Debug, Clone, Copy)]
struct Tile {
    h: usize,
    r0: usize,
    r1: usize,
    k0: usize,
    k1: usize,
}

const QUERY_BLOCK: usize = 64;

/// `softmax(scale * row)` in place, in f32, compiled for the machine's vector width by
/// `pulp`'s runtime dispatch (the reductions keep `LANES` partial results so that they
/// vectorise too). An empty row stays empty; a row whose sum is 0 (all `-inf`) becomes zeros.
struct SoftmaxRow<'a> {
    row: &'a mut [f32],
    scale: f32,
}

impl pulp::WithSimd for SoftmaxRow<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _simd: S) {
        const LANES: usize = 16;
        let Self { row, scale } = self;
        let mut lanes = [f32::NEG_INFINITY; LANES];
        let mut chunks = row.chunks_exact(LANES);
        for c in &mut chunks {
            for (m, &x) in lanes.iter_mut().zip(c) {
                *m = m.max(x * scale);
            }
        }
        let max = chunks
            .remainder()
            .iter()
            .fold(f32::NEG_INFINITY, |a, &x| a.max(x * scale));
        let max = lanes.iter().fold(max, |a, &m| a.max(m));
        for x in row.iter_mut() {
            *x = exp_nonpositive(*x * scale - max);
        }
        let mut sums = [0.0f32; LANES];
        let mut chunks = row.chunks_exact(LANES);
        for c in &mut chunks {
            for (s, &x) in sums.iter_mut().zip(c) {
                *s += x;
            }
        }
        let sum = chunks.remainder().iter().sum::<f32>() + sums.iter().sum::<f32>();
        let inv = if sum > 0.0 { 1.0 / sum } else { 0.0 };
        for x in row.iter_mut() {
            *x *= inv;
        }
    }
}

/// `e^x` for `x <= 0` (a softmax argument after subtracting the row maximum), written without
/// branches or calls so that the softmax loop vectorises (libm's `expf` is a scalar call and
/// took over half of a long-context prefill). `x = n ln 2 + r` with `n` rounded to nearest by
/// the 1.5 * 2^23 trick and `|r| <= ln 2 / 2` (ln 2 split in two parts, Cody-Waite), then a
/// degree-6 Taylor polynomial of `e^r` (truncation `|r|^7 / 7! < 1.2e-7` relative) times `2^n`
/// built in the exponent bits. Relative error below 4e-7 down to `x = -87` (checked against f64
/// in the tests); below that (and for `-inf`) the result is 0 instead of a subnormal.
#[inline(always)]
pub(super) fn exp_nonpositive(x: f32) -> f32 {
    const MAGIC: f32 = 12_582_912.0; // 1.5 * 2^23
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    let xc = x.clamp(-87.0, 0.0);
    let t = xc * core::f32::consts::LOG2_E + MAGIC;
    let n = t - MAGIC;
    let r = xc - n * LN2_HI - n * LN2_LO;
    let p = 1.0
        + r * (1.0
            + r * (0.5
                + r * (1.0 / 6.0 + r * (1.0 / 24.0 + r * (1.0 / 120.0 + r * (1.0 / 720.0))))));
    // t's low mantissa bits hold n (in [-126, 0]) offset by MAGIC's: the exponent of 2^n.
    let ni = (t.to_bits() as i32).wrapping_sub(MAGIC.to_bits() as i32);
    let scale = f32::from_bits((ni.wrapping_add(127) as u32) << 23);
    if x < -87.0 { 0.0 } else { p * scale }
}

impl AttentionOps for FastCpu {
    fn masked_softmax(
        &self,
        scores: &mut CpuBuffer,
        rows: usize,
        cols: usize,
        mask: AttentionMask<'_>,
        scale: f32,
    ) -> R<()> {
        self.inner.masked_softmax(scores, rows, cols, mask, scale)
    }

    /// Tiles of (head, 64 query rows, visible keys), each a score product, an f32 softmax and a
    /// value product, run in parallel.
    fn attention(
        &self,
        q: MatRef<'_, CpuBuffer>,
        k: MatRef<'_, CpuBuffer>,
        v: MatRef<'_, CpuBuffer>,
        spec: AttentionSpec<'_>,
    ) -> R<CpuBuffer> {
        check_attention(&q, &k, &v, &spec)?;
        let (rows, hd, heads) = (q.rows(), spec.head_dim, spec.heads);
        let group = heads / spec.kv_heads;
        let width = heads * hd;
        let (qd, qs) = view_f32(&q)?;
        let (kd, ks) = view_f32(&k)?;
        let (vd, vs) = view_f32(&v)?;
        // Row blocks with the key range each may see.
        let mut blocks: Vec<(usize, usize, usize, usize)> = Vec::new();
        match spec.mask {
            AttentionMask::Causal { past } => {
                for r0 in (0..rows).step_by(QUERY_BLOCK) {
                    let r1 = (r0 + QUERY_BLOCK).min(rows);
                    blocks.push((r0, r1, 0, past + r1));
                }
            }
            AttentionMask::Segments(bounds) => {
                for w in bounds.windows(2) {
                    let (s0, s1) = (w[0], w[1]);
                    for r0 in (s0..s1).step_by(QUERY_BLOCK) {
                        blocks.push((r0, (r0 + QUERY_BLOCK).min(s1), s0, s1));
                    }
                }
            }
            _ => {
                for r0 in (0..rows).step_by(QUERY_BLOCK) {
                    blocks.push((r0, (r0 + QUERY_BLOCK).min(rows), 0, k.rows()));
                }
            }
        }
        let tiles: Vec<Tile> = blocks
            .iter()
            .flat_map(|&(r0, r1, k0, k1)| (0..heads).map(move |h| Tile { h, r0, r1, k0, k1 }))
            .collect();
        let causal_past = match spec.mask {
            AttentionMask::Causal { past } => Some(past),
            _ => None,
        };
        let arch = pulp::Arch::new();
        let results: Vec<Option<Vec<f32>>> = tiles
            .par_iter()
            .map(|t| {
                let (m, n) = (t.r1 - t.r0, t.k1 - t.k0);
                let g = t.h / group;
                let mut s = vec![0.0f32; m * n];
                let qa = Strided {
                    data: qd.get(t.r0 * qs + t.h * hd..)?,
                    rs: qs,
                    cs: 1,
                };
                let kt = Strided {
                    data: kd.get(t.k0 * ks + g * hd..)?,
                    rs: 1,
                    cs: ks,
                };
                let ok = sgemm(m, n, hd, qa, kt, &mut s, n, Epilogue::OVERWRITE, None);
                if !ok {
                    return None;
                }
                for (i, row) in s.chunks_exact_mut(n.max(1)).enumerate() {
                    let visible = match causal_past {
                        Some(past) => (past + t.r0 + i + 1).saturating_sub(t.k0).min(n),
                        None => n,
                    };
                    let (vis, hidden) = row.split_at_mut(visible);
                    arch.dispatch(SoftmaxRow {
                        row: vis,
                        scale: spec.scale,
                    });
                    hidden.fill(0.0);
                }
                let mut o = vec![0.0f32; m * hd];
                let vb = Strided {
                    data: vd.get(t.k0 * vs + g * hd..)?,
                    rs: vs,
                    cs: 1,
                };
                let pa = Strided {
                    data: &s,
                    rs: n,
                    cs: 1,
                };
                sgemm(m, hd, n, pa, vb, &mut o, hd, Epilogue::OVERWRITE, None).then_some(o)
            })
            .collect();
        let mut out = vec![0.0f32; rows * width];
        for (t, res) in tiles.iter().zip(results) {
            let Some(o) = res else {
                return Err(Error::Shape {
                    op: "attention",
                    reason: "operand views do not fit their buffers",
                });
            };
            for (i, src) in o.chunks_exact(hd).enumerate() {
                let at = (t.r0 + i) * width + t.h * hd;
                if let Some(dst) = out.get_mut(at..at + hd) {
                    dst.copy_from_slice(src);
                }
            }
        }
        Ok(CpuBuffer::F32(out))
    }
}

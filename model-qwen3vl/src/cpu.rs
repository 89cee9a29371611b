//! The fast CPU path: a [`CpuGemm`] kernel backed by the `gemm` crate (SIMD, multithreaded
//! through rayon), and [`FastCpu`], the reference [`Cpu`] backend with that kernel plus a
//! blocked, multithreaded attention and f32 SwiGLU/SiLU. Every other op is the reference one.
//!
//! Matrix products go through `faer`'s safe matrix-product API (the `gemm` crate's SIMD
//! kernels underneath); every operand is bounds-checked before a view is made.

use std::borrow::Cow;

use axpo_core::backend::{
    Accumulate, Activation, AttentionMask, AttentionOps, AttentionSpec, BackendTypes, BufferOps,
    Cpu, CpuBuffer, CpuGemm, DType, DeviceBuffer, ElementwiseOps, EmbeddingOps, Epilogue, HostData,
    LogprobOps, MatMut, MatRef, MatmulOps, NormOps, ReferenceGemm, Rope, RotaryOps, ScatterMode,
    StatsGrad, Strided, TokenStats, check_attention,
};
use rayon::prelude::*;

/// Below this many multiply-adds a product runs on one thread.
const PARALLEL_MIN_FLOPS: usize = 1 << 18;

/// `faer`'s matrix product (the `gemm` crate's kernels) as the CPU backend's matrix kernel.
#[derive(Debug, Clone, Copy)]
pub struct GemmKernel {
    threads: usize,
}

impl Default for GemmKernel {
    fn default() -> Self {
        Self::new(0)
    }
}

impl GemmKernel {
    /// A kernel using `threads` threads of the rayon pool (`0`: all of them).
    #[must_use]
    pub fn new(threads: usize) -> Self {
        Self { threads }
    }
}

/// Whether a strided operand `rows x cols` with strides `(rs, cs)` lies inside `len` elements.
fn fits(len: usize, rows: usize, cols: usize, rs: usize, cs: usize) -> bool {
    if rows == 0 || cols == 0 {
        return true;
    }
    (rows - 1)
        .checked_mul(rs)
        .and_then(|a| (cols - 1).checked_mul(cs).and_then(|b| a.checked_add(b)))
        .is_some_and(|last| last < len)
}

/// A strided operand as a `faer` view: row-major (`cs == 1`) or column-major (`rs == 1`);
/// `None` for other stride patterns.
fn view(x: Strided<'_>, rows: usize, cols: usize) -> Option<faer::MatRef<'_, f32>> {
    if x.cs == 1 && (x.rs >= cols || rows <= 1) {
        Some(faer::MatRef::from_row_major_slice_with_stride(
            x.data,
            rows,
            cols,
            x.rs.max(cols),
        ))
    } else if x.rs == 1 && (x.cs >= rows || cols <= 1) {
        Some(faer::MatRef::from_column_major_slice_with_stride(
            x.data,
            rows,
            cols,
            x.cs.max(rows),
        ))
    } else {
        None
    }
}

/// `c (=|+=) alpha · a b` with bounds-checked strided operands, through `faer`'s matrix
/// product (the `gemm` crate's kernels, through a safe API). Returns `false` (doing nothing) if
/// an operand does not fit its slice or has a stride pattern `faer` views cannot express.
#[allow(clippy::too_many_arguments)]
fn sgemm(
    m: usize,
    n: usize,
    k: usize,
    a: Strided<'_>,
    b: Strided<'_>,
    c: &mut [f32],
    ldc: usize,
    epilogue: Epilogue,
    threads: Option<usize>,
) -> bool {
    if m == 0 || n == 0 {
        return true;
    }
    if !(fits(a.data.len(), m, k, a.rs, a.cs)
        && fits(b.data.len(), k, n, b.rs, b.cs)
        && fits(c.len(), m, n, ldc, 1)
        && (ldc >= n || m == 1))
    {
        return false;
    }
    if k == 0 {
        if epilogue.accumulate == Accumulate::Overwrite {
            for i in 0..m {
                if let Some(row) = c.get_mut(i * ldc..i * ldc + n) {
                    row.fill(0.0);
                }
            }
        }
        return true;
    }
    let (Some(av), Some(bv)) = (view(a, m, k), view(b, k, n)) else {
        return false;
    };
    // The output as the transpose of a column-major n x m view (row stride ldc).
    let cv =
        faer::MatMut::from_column_major_slice_with_stride_mut(c, n, m, ldc.max(n)).transpose_mut();
    let accum = match epilogue.accumulate {
        Accumulate::Overwrite => faer::Accum::Replace,
        Accumulate::Add => faer::Accum::Add,
    };
    let par = match threads {
        Some(t) if m.saturating_mul(n).saturating_mul(k) >= PARALLEL_MIN_FLOPS => {
            faer::Par::rayon(if t == 0 {
                rayon::current_num_threads()
            } else {
                t
            })
        }
        _ => faer::Par::Seq,
    };
    faer::linalg::matmul::matmul(cv, accum, av, bv, epilogue.alpha, par);
    true
}

impl CpuGemm for GemmKernel {
    fn gemm(
        &self,
        m: usize,
        n: usize,
        k: usize,
        a: Strided<'_>,
        b: Strided<'_>,
        c: &mut [f32],
        ldc: usize,
        epilogue: Epilogue,
    ) {
        if !sgemm(m, n, k, a, b, c, ldc, epilogue, Some(self.threads)) {
            // Operands that do not fit their slices: the portable kernel, whose indexing is
            // checked by Rust, handles (and reports) them.
            ReferenceGemm.gemm(m, n, k, a, b, c, ldc, epilogue);
        }
    }
}

/// The reference CPU backend with the `gemm` crate kernel.
pub type GemmCpu = Cpu<GemmKernel>;

/// The fast CPU backend: [`GemmCpu`] with a blocked multithreaded attention and f32 SiLU/SwiGLU.
/// Results agree with the reference backend to f32 rounding.
#[derive(Debug, Clone, Default)]
pub struct FastCpu {
    inner: GemmCpu,
}

impl FastCpu {
    /// A backend using all threads of the rayon pool.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// A backend whose matrix products use `threads` threads (`0`: all).
    #[must_use]
    pub fn with_threads(threads: usize) -> Self {
        Self {
            inner: Cpu::with_gemm(GemmKernel::new(threads)),
        }
    }

    /// The wrapped reference backend.
    #[must_use]
    pub fn inner(&self) -> &GemmCpu {
        &self.inner
    }
}

type R<T> = axpo_core::Result<T>;

impl BackendTypes for FastCpu {
    type Buffer = CpuBuffer;
}

impl BufferOps for FastCpu {
    fn name(&self) -> &'static str {
        "cpu-fast"
    }
    fn upload(&self, data: HostData<'_>) -> R<CpuBuffer> {
        self.inner.upload(data)
    }
    fn zeros(&self, dtype: DType, len: usize) -> R<CpuBuffer> {
        self.inner.zeros(dtype, len)
    }
    fn download_f32(&self, buffer: &CpuBuffer) -> R<Vec<f32>> {
        self.inner.download_f32(buffer)
    }
    fn download_u32(&self, buffer: &CpuBuffer) -> R<Vec<u32>> {
        self.inner.download_u32(buffer)
    }
    fn copy_rows(&self, src: MatRef<'_, CpuBuffer>, dst: MatMut<'_, CpuBuffer>) -> R<()> {
        self.inner.copy_rows(src, dst)
    }
}

impl MatmulOps for FastCpu {
    fn matmul(
        &self,
        a: MatRef<'_, CpuBuffer>,
        a_layout: axpo_core::backend::Layout,
        b: MatRef<'_, CpuBuffer>,
        b_layout: axpo_core::backend::Layout,
        out: MatMut<'_, CpuBuffer>,
        epilogue: Epilogue,
    ) -> R<()> {
        self.inner.matmul(a, a_layout, b, b_layout, out, epilogue)
    }
}

fn silu(x: f32) -> f32 {
    x / (1.0 + (-x).exp())
}

const CHUNK: usize = 1 << 14;

impl ElementwiseOps for FastCpu {
    fn add_assign(&self, dst: &mut CpuBuffer, src: &CpuBuffer) -> R<()> {
        self.inner.add_assign(dst, src)
    }
    fn mul(&self, a: &CpuBuffer, b: &CpuBuffer) -> R<CpuBuffer> {
        self.inner.mul(a, b)
    }
    fn add_bias(&self, x: &mut CpuBuffer, bias: &CpuBuffer) -> R<()> {
        self.inner.add_bias(x, bias)
    }
    fn activation(&self, x: &CpuBuffer, act: Activation) -> R<CpuBuffer> {
        if act != Activation::Silu {
            return self.inner.activation(x, act);
        }
        let xs = x.f32s("activation")?;
        let mut out = vec![0.0f32; xs.len()];
        out.par_chunks_mut(CHUNK)
            .zip(xs.par_chunks(CHUNK))
            .for_each(|(o, i)| {
                for (o, &v) in o.iter_mut().zip(i) {
                    *o = silu(v);
                }
            });
        Ok(CpuBuffer::F32(out))
    }
    fn swiglu(&self, gate: &CpuBuffer, up: &CpuBuffer) -> R<CpuBuffer> {
        if gate.len() != up.len() {
            return Err(axpo_core::Error::LengthMismatch {
                what: "swiglu operands",
                expected: gate.len(),
                got: up.len(),
            });
        }
        let (g, u) = (gate.f32s("swiglu")?, up.f32s("swiglu")?);
        let mut out = vec![0.0f32; g.len()];
        out.par_chunks_mut(CHUNK)
            .zip(g.par_chunks(CHUNK).zip(u.par_chunks(CHUNK)))
            .for_each(|(o, (g, u))| {
                for ((o, &gv), &uv) in o.iter_mut().zip(g).zip(u) {
                    *o = silu(gv) * uv;
                }
            });
        Ok(CpuBuffer::F32(out))
    }
}

impl NormOps for FastCpu {
    fn rms_norm(&self, x: &CpuBuffer, weight: &CpuBuffer, eps: f32) -> R<CpuBuffer> {
        self.inner.rms_norm(x, weight, eps)
    }
    fn layer_norm(
        &self,
        x: &CpuBuffer,
        weight: &CpuBuffer,
        bias: &CpuBuffer,
        eps: f32,
    ) -> R<CpuBuffer> {
        self.inner.layer_norm(x, weight, bias, eps)
    }
}

impl RotaryOps for FastCpu {
    fn rotary(&self, x: &mut CpuBuffer, rope: Rope<'_, CpuBuffer>) -> R<()> {
        self.inner.rotary(x, rope)
    }
}

impl EmbeddingOps for FastCpu {
    fn gather_rows(&self, table: MatRef<'_, CpuBuffer>, ids: &[u32]) -> R<CpuBuffer> {
        self.inner.gather_rows(table, ids)
    }
    fn scatter_rows(
        &self,
        dst: MatMut<'_, CpuBuffer>,
        rows: &[u32],
        src: MatRef<'_, CpuBuffer>,
        mode: ScatterMode,
    ) -> R<()> {
        self.inner.scatter_rows(dst, rows, src, mode)
    }
}

impl LogprobOps for FastCpu {
    fn stats_fold(
        &self,
        logits: MatRef<'_, CpuBuffer>,
        vocab_offset: usize,
        targets: &CpuBuffer,
        state: &mut CpuBuffer,
    ) -> R<()> {
        self.inner.stats_fold(logits, vocab_offset, targets, state)
    }
    fn stats_finish(&self, state: &CpuBuffer, rows: usize) -> R<TokenStats<CpuBuffer>> {
        self.inner.stats_finish(state, rows)
    }
    fn stats_backward(
        &self,
        logits: MatRef<'_, CpuBuffer>,
        vocab_offset: usize,
        targets: &CpuBuffer,
        stats: &TokenStats<CpuBuffer>,
        grad: StatsGrad<'_, CpuBuffer>,
        out: MatMut<'_, CpuBuffer>,
    ) -> R<()> {
        self.inner
            .stats_backward(logits, vocab_offset, targets, stats, grad, out)
    }
}

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
fn exp_nonpositive(x: f32) -> f32 {
    const MAGIC: f32 = 12_582_912.0; // 1.5 * 2^23
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    let xc = x.clamp(-87.0, 0.0);
    let t = xc * std::f32::consts::LOG2_E + MAGIC;
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
                return Err(axpo_core::Error::Shape {
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

#[cfg(test)]
mod tests {
    use super::*;
    use axpo_core::backend::{Layout, MatMut};

    fn pseudo(n: usize, seed: u32) -> Vec<f32> {
        (0..n)
            .map(|i| {
                let x = (i as u32)
                    .wrapping_mul(2_654_435_761)
                    .wrapping_add(seed.wrapping_mul(40_503));
                ((x >> 8) % 2001) as f32 / 1000.0 - 1.0
            })
            .collect()
    }

    /// The softmax's exponential against f64 over `[-100, 0]`: relative error below 4e-7 (the
    /// polynomial's 1.2e-7 truncation plus a few f32 roundings of the reduction and Horner
    /// steps) down to -87, and exactly 0 below it (where `e^x < 1.7e-38`).
    #[test]
    fn exp_nonpositive_matches_f64() {
        let mut worst = 0.0f64;
        for i in 0..=200_000u32 {
            let x = -100.0 * f64::from(i) / 200_000.0 + 1e-7 * f64::from(i % 7);
            let x = x.min(0.0) as f32;
            let got = f64::from(exp_nonpositive(x));
            let want = f64::from(x).exp();
            if x < -87.0 {
                assert_eq!(got, 0.0, "x = {x}");
            } else {
                worst = worst.max((got - want).abs() / want);
            }
        }
        eprintln!("exp_nonpositive: worst relative error {worst:e}");
        assert!(worst < 4e-7, "worst relative error {worst:e}");
        assert_eq!(exp_nonpositive(0.0), 1.0);
        assert_eq!(exp_nonpositive(f32::NEG_INFINITY), 0.0);
    }

    fn max_abs(a: &[f32], b: &[f32]) -> f32 {
        assert_eq!(a.len(), b.len());
        a.iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0, f32::max)
    }

    #[test]
    fn gemm_kernel_matches_the_reference_kernel() {
        let fast = FastCpu::new();
        let reference = Cpu::new();
        for &(m, k, n) in &[
            (1, 1, 1),
            (3, 5, 7),
            (1, 64, 300),
            (70, 33, 129),
            (128, 256, 96),
            (5, 0, 4),
        ] {
            for (al, bl) in [
                (Layout::AsStored, Layout::AsStored),
                (Layout::AsStored, Layout::Transposed),
                (Layout::Transposed, Layout::AsStored),
                (Layout::Transposed, Layout::Transposed),
            ] {
                for ep in [
                    Epilogue::OVERWRITE,
                    Epilogue {
                        alpha: 0.5,
                        accumulate: Accumulate::Add,
                    },
                ] {
                    let a_shape = if al == Layout::AsStored {
                        (m, k)
                    } else {
                        (k, m)
                    };
                    let b_shape = if bl == Layout::AsStored {
                        (k, n)
                    } else {
                        (n, k)
                    };
                    // Strided operands: one spare column each.
                    let a = CpuBuffer::F32(pseudo(a_shape.0 * (a_shape.1 + 1), 1));
                    let b = CpuBuffer::F32(pseudo(b_shape.0 * (b_shape.1 + 1), 2));
                    let av = MatRef::strided(&a, 0, a_shape.0, a_shape.1, a_shape.1 + 1).unwrap();
                    let bv = MatRef::strided(&b, 0, b_shape.0, b_shape.1, b_shape.1 + 1).unwrap();
                    let mut outs = Vec::new();
                    for backend in [0, 1] {
                        let mut c = CpuBuffer::F32(pseudo(m * (n + 2), 3));
                        let cv = MatMut::strided(&mut c, 1, m, n, n + 2).unwrap();
                        if backend == 0 {
                            fast.matmul(av, al, bv, bl, cv, ep).unwrap();
                        } else {
                            reference.matmul(av, al, bv, bl, cv, ep).unwrap();
                        }
                        outs.push(c.f32s("t").unwrap().into_owned());
                    }
                    let d = max_abs(&outs[0], &outs[1]);
                    assert!(
                        d <= 1e-5 * (k as f32 + 1.0),
                        "{m}x{k}x{n} {al:?} {bl:?}: {d}"
                    );
                }
            }
        }
    }

    #[test]
    fn fast_attention_matches_the_reference() {
        let fast = FastCpu::new();
        let reference = Cpu::new();
        let bounds = [0usize, 40, 41, 100];
        let cases: Vec<(usize, usize, usize, usize, AttentionMask<'_>)> = vec![
            // (q_rows, kv_rows, heads, kv_heads, mask)
            (100, 100, 4, 2, AttentionMask::Causal { past: 0 }),
            (1, 77, 4, 1, AttentionMask::Causal { past: 76 }),
            (5, 135, 2, 2, AttentionMask::Causal { past: 130 }),
            (100, 100, 2, 2, AttentionMask::Segments(&bounds)),
            (30, 50, 4, 4, AttentionMask::Full),
        ];
        for (qr, kr, heads, kvh, mask) in cases {
            let hd = 16;
            let q = CpuBuffer::F32(pseudo(qr * heads * hd, 4));
            let k = CpuBuffer::F32(pseudo(kr * kvh * hd, 5));
            let v = CpuBuffer::F32(pseudo(kr * kvh * hd, 6));
            let spec = AttentionSpec {
                heads,
                kv_heads: kvh,
                head_dim: hd,
                scale: 0.7,
                mask,
            };
            let args = || {
                (
                    MatRef::new(&q, qr, heads * hd).unwrap(),
                    MatRef::new(&k, kr, kvh * hd).unwrap(),
                    MatRef::new(&v, kr, kvh * hd).unwrap(),
                )
            };
            let (a, b, c) = args();
            let got = fast.attention(a, b, c, spec).unwrap();
            let (a, b, c) = args();
            let want = reference.attention(a, b, c, spec).unwrap();
            let d = max_abs(&got.f32s("t").unwrap(), &want.f32s("t").unwrap());
            assert!(d <= 1e-5, "{mask:?}: {d}");
        }
        // Shape errors come back as errors.
        let q = CpuBuffer::F32(vec![0.0; 32]);
        let spec = AttentionSpec {
            heads: 3,
            kv_heads: 2,
            head_dim: 16,
            scale: 1.0,
            mask: AttentionMask::Full,
        };
        let m = MatRef::new(&q, 1, 32).unwrap();
        assert!(fast.attention(m, m, m, spec).is_err());
    }

    #[test]
    fn f32_silu_and_swiglu_match_the_reference() {
        let fast = FastCpu::new();
        let reference = Cpu::new();
        let g = CpuBuffer::F32(pseudo(40_000, 7).iter().map(|x| x * 12.0).collect());
        let u = CpuBuffer::F32(pseudo(40_000, 8));
        let a = fast.activation(&g, Activation::Silu).unwrap();
        let b = reference.activation(&g, Activation::Silu).unwrap();
        assert!(max_abs(&a.f32s("t").unwrap(), &b.f32s("t").unwrap()) <= 1e-5);
        let a = fast.swiglu(&g, &u).unwrap();
        let b = reference.swiglu(&g, &u).unwrap();
        assert!(max_abs(&a.f32s("t").unwrap(), &b.f32s("t").unwrap()) <= 1e-5);
        assert!(fast.swiglu(&g, &CpuBuffer::F32(vec![0.0; 3])).is_err());
    }
}

//! The `Backend` trait, split by op family, and the reference CPU backend.
//!
//! A backend is a cheap handle (`Clone`) that owns device buffers. Ops take `&self`, read
//! buffers through [`MatRef`] views and return [`Result`]. The trait is a bundle of op-family
//! traits; within each family the *primitives* must be implemented and the *composite* ops have
//! default bodies built from primitives, which a backend overrides with fused kernels:
//!
//! | family | primitives | composites (default provided) |
//! |---|---|---|
//! | [`BufferOps`] | `upload`, `zeros`, `download_f32`, `download_u32`, `copy_rows` | `upload_f32`, `upload_u32` |
//! | [`MatmulOps`] | `matmul` | `matmul_new` |
//! | [`ElementwiseOps`] | `add_assign`, `mul`, `add_bias`, `activation` | `swiglu`, `bias_activation` |
//! | [`NormOps`] | `rms_norm`, `layer_norm` | |
//! | [`RotaryOps`] | `rotary` | `rms_norm_rotary` |
//! | [`AttentionOps`] | `masked_softmax` | `attention` |
//! | [`EmbeddingOps`] | `gather_rows`, `scatter_rows` | |
//! | [`LogprobOps`] | `stats_fold`, `stats_finish`, `stats_backward` | `token_stats`, `linear_token_stats`, `token_stats_backward`, `linear_token_stats_backward` |
//! | [`ObjectiveOps`] | | `linear_objective` (the training step: loss, metrics, `d hidden`, `d W`) |
//!
//! [`Op::ALL`] lists every op; the conformance suite checks that each has a test.

mod cpu;
#[cfg(feature = "fast-cpu")]
mod fast;
mod stats;
mod step;
mod tensor;

use alloc::vec::Vec;

pub use cpu::{Cpu, CpuBuffer, CpuGemm, ReferenceGemm, Strided};
#[cfg(feature = "fast-cpu")]
pub use fast::{FastCpu, GemmCpu, GemmKernel};
pub use stats::{FinishedStats, STATE_WIDTH, StatsState, logit_grad};
pub use step::{
    HeadWorkspace, ObjectiveOps, StepOutput, StepTokens, check_step, linear_objective_by_blocks,
    token_blocks,
};
pub use tensor::{
    Accumulate, Activation, AttentionMask, AttentionSpec, DType, DeviceBuffer, Epilogue, HostData,
    Layout, MatMut, MatRef, ScatterMode,
};

use crate::error::{Error, Result};

/// Every op of the [`Backend`] trait, for the conformance coverage test.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Op {
    /// [`BufferOps::upload`] / downloads round trip.
    Upload,
    /// [`BufferOps::copy_rows`].
    CopyRows,
    /// [`MatmulOps::matmul`].
    Matmul,
    /// [`ElementwiseOps::add_assign`].
    AddAssign,
    /// [`ElementwiseOps::mul`].
    Mul,
    /// [`ElementwiseOps::add_bias`].
    AddBias,
    /// [`ElementwiseOps::activation`].
    Activation,
    /// [`ElementwiseOps::swiglu`].
    Swiglu,
    /// [`ElementwiseOps::bias_activation`].
    BiasActivation,
    /// [`NormOps::rms_norm`].
    RmsNorm,
    /// [`NormOps::layer_norm`].
    LayerNorm,
    /// [`RotaryOps::rotary`].
    Rotary,
    /// [`RotaryOps::rms_norm_rotary`].
    RmsNormRotary,
    /// [`AttentionOps::masked_softmax`].
    MaskedSoftmax,
    /// [`AttentionOps::attention`].
    Attention,
    /// [`EmbeddingOps::gather_rows`].
    GatherRows,
    /// [`EmbeddingOps::scatter_rows`].
    ScatterRows,
    /// [`LogprobOps::token_stats`] (and the `stats_fold` / `stats_finish` primitives).
    TokenStats,
    /// [`LogprobOps::linear_token_stats`].
    LinearTokenStats,
    /// [`LogprobOps::token_stats_backward`] (and the `stats_backward` primitive).
    TokenStatsBackward,
    /// [`LogprobOps::linear_token_stats_backward`].
    LinearTokenStatsBackward,
    /// [`ObjectiveOps::linear_objective`].
    LinearObjective,
}

impl Op {
    /// Every op, in declaration order.
    pub const ALL: &'static [Op] = &[
        Op::Upload,
        Op::CopyRows,
        Op::Matmul,
        Op::AddAssign,
        Op::Mul,
        Op::AddBias,
        Op::Activation,
        Op::Swiglu,
        Op::BiasActivation,
        Op::RmsNorm,
        Op::LayerNorm,
        Op::Rotary,
        Op::RmsNormRotary,
        Op::MaskedSoftmax,
        Op::Attention,
        Op::GatherRows,
        Op::ScatterRows,
        Op::TokenStats,
        Op::LinearTokenStats,
        Op::TokenStatsBackward,
        Op::LinearTokenStatsBackward,
        Op::LinearObjective,
    ];
}

/// The associated types of a backend.
pub trait BackendTypes {
    /// A device buffer.
    type Buffer: DeviceBuffer;
}

/// Buffers: allocation, transfer, row copies.
pub trait BufferOps: BackendTypes {
    /// Short backend name (`"cpu"`, `"cuda"`, `"wgpu"`).
    fn name(&self) -> &'static str;

    /// Copies host data into a new buffer.
    ///
    /// # Errors
    /// A backend error if allocation or transfer fails.
    fn upload(&self, data: HostData<'_>) -> Result<Self::Buffer>;

    /// A new zero-filled buffer.
    ///
    /// # Errors
    /// A backend error if allocation fails.
    fn zeros(&self, dtype: DType, len: usize) -> Result<Self::Buffer>;

    /// Reads a float buffer back as f32 (converting from f16/bf16).
    ///
    /// # Errors
    /// [`Error::UnsupportedDType`] for integer buffers; a backend error if the transfer fails.
    fn download_f32(&self, buffer: &Self::Buffer) -> Result<Vec<f32>>;

    /// Reads a u32 buffer back.
    ///
    /// # Errors
    /// [`Error::UnsupportedDType`] for float buffers; a backend error if the transfer fails.
    fn download_u32(&self, buffer: &Self::Buffer) -> Result<Vec<u32>>;

    /// Copies the rows of `src` into `dst` (same shape; element types may differ among floats).
    ///
    /// # Errors
    /// [`Error::Shape`] if the shapes differ.
    fn copy_rows(&self, src: MatRef<'_, Self::Buffer>, dst: MatMut<'_, Self::Buffer>)
    -> Result<()>;

    /// Waits for all queued work to finish (a no-op on synchronous backends).
    ///
    /// # Errors
    /// A backend error if queued work failed.
    fn synchronize(&self) -> Result<()> {
        Ok(())
    }

    /// Uploads f32 values.
    ///
    /// # Errors
    /// As [`BufferOps::upload`].
    fn upload_f32(&self, data: &[f32]) -> Result<Self::Buffer> {
        self.upload(HostData::F32(data))
    }

    /// Uploads u32 values.
    ///
    /// # Errors
    /// As [`BufferOps::upload`].
    fn upload_u32(&self, data: &[u32]) -> Result<Self::Buffer> {
        self.upload(HostData::U32(data))
    }
}

/// Matrix multiplication.
pub trait MatmulOps: BufferOps {
    /// `out (=|+=) alpha * op(a) op(b)` with `op` chosen by each [`Layout`]; `op(a)` is `m x k`,
    /// `op(b)` is `k x n`, `out` is `m x n`. Accumulation is at least f32. Every backend accepts
    /// an f32 `out`; half-precision outputs are optional (a backend may answer
    /// [`Error::UnsupportedDType`]).
    ///
    /// # Errors
    /// [`Error::Shape`] on inconsistent shapes, [`Error::UnsupportedDType`] on element types the
    /// backend cannot multiply.
    fn matmul(
        &self,
        a: MatRef<'_, Self::Buffer>,
        a_layout: Layout,
        b: MatRef<'_, Self::Buffer>,
        b_layout: Layout,
        out: MatMut<'_, Self::Buffer>,
        epilogue: Epilogue,
    ) -> Result<()>;

    /// `op(a) op(b)` into a new f32 buffer.
    ///
    /// # Errors
    /// As [`MatmulOps::matmul`].
    fn matmul_new(
        &self,
        a: MatRef<'_, Self::Buffer>,
        a_layout: Layout,
        b: MatRef<'_, Self::Buffer>,
        b_layout: Layout,
    ) -> Result<Self::Buffer> {
        let m = logical_rows(&a, a_layout);
        let n = logical_cols(&b, b_layout);
        let mut out = self.zeros(DType::F32, m * n)?;
        self.matmul(
            a,
            a_layout,
            b,
            b_layout,
            MatMut::new(&mut out, m, n)?,
            Epilogue::OVERWRITE,
        )?;
        Ok(out)
    }
}

/// Rows of `op(x)`.
#[must_use]
pub fn logical_rows<B: ?Sized>(x: &MatRef<'_, B>, layout: Layout) -> usize {
    match layout {
        Layout::AsStored => x.rows(),
        Layout::Transposed => x.cols(),
    }
}

/// Columns of `op(x)`.
#[must_use]
pub fn logical_cols<B: ?Sized>(x: &MatRef<'_, B>, layout: Layout) -> usize {
    match layout {
        Layout::AsStored => x.cols(),
        Layout::Transposed => x.rows(),
    }
}

/// Elementwise arithmetic and activations. Buffers are flat; shapes only matter for broadcasts.
pub trait ElementwiseOps: BufferOps {
    /// `dst += src` (same length).
    ///
    /// # Errors
    /// [`Error::LengthMismatch`] if the lengths differ.
    fn add_assign(&self, dst: &mut Self::Buffer, src: &Self::Buffer) -> Result<()>;

    /// `a * b` elementwise into a new buffer.
    ///
    /// # Errors
    /// [`Error::LengthMismatch`] if the lengths differ.
    fn mul(&self, a: &Self::Buffer, b: &Self::Buffer) -> Result<Self::Buffer>;

    /// `x[r, c] += bias[c]` for a row-major `x` with `bias.len()` columns.
    ///
    /// # Errors
    /// [`Error::Shape`] if `x.len()` is not a multiple of `bias.len()`.
    fn add_bias(&self, x: &mut Self::Buffer, bias: &Self::Buffer) -> Result<()>;

    /// `act(x)` elementwise into a new buffer.
    ///
    /// # Errors
    /// A backend error.
    fn activation(&self, x: &Self::Buffer, act: Activation) -> Result<Self::Buffer>;

    /// SwiGLU: `silu(gate) * up`.
    ///
    /// # Errors
    /// [`Error::LengthMismatch`] if the lengths differ.
    fn swiglu(&self, gate: &Self::Buffer, up: &Self::Buffer) -> Result<Self::Buffer> {
        let g = self.activation(gate, Activation::Silu)?;
        self.mul(&g, up)
    }

    /// `act(x + bias)` with `bias` broadcast over rows (`x` is consumed).
    ///
    /// # Errors
    /// As [`ElementwiseOps::add_bias`].
    fn bias_activation(
        &self,
        mut x: Self::Buffer,
        bias: &Self::Buffer,
        act: Activation,
    ) -> Result<Self::Buffer> {
        self.add_bias(&mut x, bias)?;
        self.activation(&x, act)
    }
}

/// Normalisations over the last dimension of a row-major buffer.
pub trait NormOps: BufferOps {
    /// RMSNorm as in Qwen3: `y = (x / sqrt(mean(x^2) + eps))` computed in f32, then `* weight`.
    /// `weight.len()` is the row width.
    ///
    /// # Errors
    /// [`Error::Shape`] if `x.len()` is not a multiple of the width.
    fn rms_norm(&self, x: &Self::Buffer, weight: &Self::Buffer, eps: f32) -> Result<Self::Buffer>;

    /// LayerNorm with weight and bias: `(x - mean) / sqrt(var + eps) * weight + bias`
    /// (biased variance, as PyTorch).
    ///
    /// # Errors
    /// [`Error::Shape`] if `x.len()` is not a multiple of the width or weight and bias differ.
    fn layer_norm(
        &self,
        x: &Self::Buffer,
        weight: &Self::Buffer,
        bias: &Self::Buffer,
        eps: f32,
    ) -> Result<Self::Buffer>;
}

/// The per-row rotation tables of a rotary op: `cos` and `sin` are `rows x head_dim` f32 tables
/// in the `[angles, angles]` form, applied to every one of `heads` heads of width `head_dim`.
#[derive(Debug)]
pub struct Rope<'a, B> {
    /// Cosines.
    pub cos: &'a B,
    /// Sines.
    pub sin: &'a B,
    /// Heads per row.
    pub heads: usize,
    /// Width of a head (even).
    pub head_dim: usize,
}

impl<B> Clone for Rope<'_, B> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<B> Copy for Rope<'_, B> {}

/// Rotary position embeddings (rotate-half convention).
pub trait RotaryOps: NormOps {
    /// Rotates, in place, every head of every row of `x` (`rows x heads*head_dim`) by the row's
    /// angles: `x' = x cos + rotate_half(x) sin`, `rotate_half([a, b]) = [-b, a]`. One op serves
    /// the text decoder's interleaved MRoPE and the vision tower's 2D rotary alike: the tables
    /// carry the positions.
    ///
    /// # Errors
    /// [`Error::Shape`] on inconsistent sizes.
    fn rotary(&self, x: &mut Self::Buffer, rope: Rope<'_, Self::Buffer>) -> Result<()>;

    /// Per-head RMSNorm (weight of width `head_dim`) followed by [`RotaryOps::rotary`]:
    /// Qwen3's q/k norm then rope.
    ///
    /// # Errors
    /// As the two ops.
    fn rms_norm_rotary(
        &self,
        x: &Self::Buffer,
        weight: &Self::Buffer,
        eps: f32,
        rope: Rope<'_, Self::Buffer>,
    ) -> Result<Self::Buffer> {
        let mut y = self.rms_norm(x, weight, eps)?;
        self.rotary(&mut y, rope)?;
        Ok(y)
    }
}

/// Scaled dot-product attention.
pub trait AttentionOps: MatmulOps {
    /// Row softmax of `scale * scores` in place, over a `rows x cols` score matrix, with masked
    /// entries set to probability zero. Row `i` is query `i`, column `j` key `j`. A row with
    /// every entry masked becomes all zeros.
    ///
    /// # Errors
    /// [`Error::Shape`] on inconsistent sizes or a mask that does not fit.
    fn masked_softmax(
        &self,
        scores: &mut Self::Buffer,
        rows: usize,
        cols: usize,
        mask: AttentionMask<'_>,
        scale: f32,
    ) -> Result<()>;

    /// Multi-head attention with grouped key/value heads; returns `q_rows x heads*head_dim`.
    /// The default runs, per head, a matmul for the scores, [`AttentionOps::masked_softmax`] and a
    /// matmul with the values.
    ///
    /// # Errors
    /// [`Error::Shape`] on inconsistent shapes or head counts.
    fn attention(
        &self,
        q: MatRef<'_, Self::Buffer>,
        k: MatRef<'_, Self::Buffer>,
        v: MatRef<'_, Self::Buffer>,
        spec: AttentionSpec<'_>,
    ) -> Result<Self::Buffer> {
        check_attention(&q, &k, &v, &spec)?;
        let mut out = self.zeros(DType::F32, q.rows() * spec.heads * spec.head_dim)?;
        attention_by_matmul(self, q, k, v, spec, &mut out)?;
        Ok(out)
    }
}

/// The default attention, built from primitives, writing into `out` (`q_rows x heads*head_dim`,
/// any element type the backend's matmul can write): per head, a matmul for the scores,
/// [`AttentionOps::masked_softmax`], and a matmul with the values. Backends that override
/// [`AttentionOps::attention`] call it for the shapes their fused kernel does not cover.
///
/// # Errors
/// [`Error::Shape`] on inconsistent shapes, head counts or an `out` of the wrong length; the
/// primitives' errors.
pub fn attention_by_matmul<B: AttentionOps + ?Sized>(
    backend: &B,
    q: MatRef<'_, B::Buffer>,
    k: MatRef<'_, B::Buffer>,
    v: MatRef<'_, B::Buffer>,
    spec: AttentionSpec<'_>,
    out: &mut B::Buffer,
) -> Result<()> {
    check_attention(&q, &k, &v, &spec)?;
    let (q_rows, kv_rows, hd) = (q.rows(), k.rows(), spec.head_dim);
    crate::error::check_len("attention output", q_rows * spec.heads * hd, out.len())?;
    if q_rows == 0 {
        return Ok(());
    }
    let group = spec.heads / spec.kv_heads;
    let mut scores = backend.zeros(DType::F32, q_rows * kv_rows)?;
    for h in 0..spec.heads {
        let g = h / group;
        let qh = q.cols_range(h * hd, (h + 1) * hd)?;
        let kh = k.cols_range(g * hd, (g + 1) * hd)?;
        let vh = v.cols_range(g * hd, (g + 1) * hd)?;
        backend.matmul(
            qh,
            Layout::AsStored,
            kh,
            Layout::Transposed,
            MatMut::new(&mut scores, q_rows, kv_rows)?,
            Epilogue::OVERWRITE,
        )?;
        backend.masked_softmax(&mut scores, q_rows, kv_rows, spec.mask, spec.scale)?;
        backend.matmul(
            MatRef::new(&scores, q_rows, kv_rows)?,
            Layout::AsStored,
            vh,
            Layout::AsStored,
            MatMut::strided(out, h * hd, q_rows, hd, spec.heads * hd)?,
            Epilogue::OVERWRITE,
        )?;
    }
    Ok(())
}

/// Checks the shapes of an attention call.
///
/// # Errors
/// [`Error::Shape`].
pub fn check_attention<B: ?Sized>(
    q: &MatRef<'_, B>,
    k: &MatRef<'_, B>,
    v: &MatRef<'_, B>,
    spec: &AttentionSpec<'_>,
) -> Result<()> {
    let bad = |reason| {
        Err(Error::Shape {
            op: "attention",
            reason,
        })
    };
    if spec.kv_heads == 0 || spec.heads == 0 || spec.head_dim == 0 {
        return bad("head counts and head_dim must be positive");
    }
    if !spec.heads.is_multiple_of(spec.kv_heads) {
        return bad("heads must be a multiple of kv_heads");
    }
    if q.cols() != spec.heads * spec.head_dim {
        return bad("query width differs from heads * head_dim");
    }
    if k.cols() != spec.kv_heads * spec.head_dim || v.cols() != k.cols() {
        return bad("key/value width differs from kv_heads * head_dim");
    }
    if k.rows() != v.rows() {
        return bad("keys and values have different row counts");
    }
    check_mask(q.rows(), k.rows(), spec.mask)
}

/// Checks that a mask fits a `rows x cols` score matrix.
///
/// # Errors
/// [`Error::Shape`].
pub fn check_mask(rows: usize, cols: usize, mask: AttentionMask<'_>) -> Result<()> {
    let bad = |reason| {
        Err(Error::Shape {
            op: "attention mask",
            reason,
        })
    };
    match mask {
        AttentionMask::Full => Ok(()),
        AttentionMask::Causal { past } => {
            if past.checked_add(rows) == Some(cols) {
                Ok(())
            } else {
                bad("causal mask needs kv_rows == past + q_rows")
            }
        }
        AttentionMask::Segments(bounds) => {
            if rows != cols {
                return bad("segment mask needs as many keys as queries");
            }
            if bounds.first() != Some(&0) || bounds.last() != Some(&rows) {
                return bad("segment bounds must start at 0 and end at the row count");
            }
            if bounds.windows(2).any(|w| w[0] > w[1]) {
                return bad("segment bounds must be non-decreasing");
            }
            Ok(())
        }
    }
}

/// Row gathers and scatters (embedding lookup, image-embedding merge, DeepStack injection).
pub trait EmbeddingOps: BufferOps {
    /// `out[i] = table[ids[i]]`, a new `ids.len() x table.cols()` f32 buffer.
    ///
    /// # Errors
    /// [`Error::TargetOutOfRange`] if an id is not a row of the table.
    fn gather_rows(&self, table: MatRef<'_, Self::Buffer>, ids: &[u32]) -> Result<Self::Buffer>;

    /// `dst[rows[i]] (=|+=) src[i]` for every `i`, in order: with repeated rows, `Replace` keeps
    /// the last source row and `Add` sums them.
    ///
    /// # Errors
    /// [`Error::Shape`] if widths differ or `rows.len() != src.rows()`;
    /// [`Error::TargetOutOfRange`] if a row index is outside `dst`.
    fn scatter_rows(
        &self,
        dst: MatMut<'_, Self::Buffer>,
        rows: &[u32],
        src: MatRef<'_, Self::Buffer>,
        mode: ScatterMode,
    ) -> Result<()>;
}

/// The per-token outputs of `token_stats`: each an f32 buffer with one value per row.
#[derive(Debug)]
pub struct TokenStats<B> {
    /// Log-probability of each row's target.
    pub logp: B,
    /// Entropy of each row's distribution.
    pub entropy: B,
    /// Sum of squared probabilities of each row.
    pub sum_p2: B,
    /// Log-sum-exp of each row (kept for the backward pass).
    pub lse: B,
}

/// Upstream gradients for the backward of `token_stats`: one f32 value per row each.
#[derive(Debug)]
pub struct StatsGrad<'a, B> {
    /// `d loss / d logp`.
    pub d_logp: &'a B,
    /// `d loss / d entropy`, when the loss uses the entropy.
    pub d_entropy: Option<&'a B>,
}

impl<B> Clone for StatsGrad<'_, B> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<B> Copy for StatsGrad<'_, B> {}

/// Gradients of the fused output head: `d hidden` (`N x H`) and `d W` (`V x H`), both f32.
#[derive(Debug)]
pub struct HeadGrads<B> {
    /// Gradient with respect to the hidden states.
    pub d_hidden: B,
    /// Gradient with respect to the head matrix.
    pub d_weight: B,
}

/// How many vocabulary rows `linear_token_stats` processes at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VocabChunk(pub usize);

impl Default for VocabChunk {
    fn default() -> Self {
        Self(4096)
    }
}

/// Validates targets against a vocabulary size.
///
/// # Errors
/// [`Error::TargetOutOfRange`] for the first bad target.
pub fn check_targets(targets: &[u32], vocab: usize) -> Result<()> {
    match targets.iter().position(|&t| t as usize >= vocab) {
        Some(row) => Err(Error::TargetOutOfRange {
            row,
            target: targets[row],
            vocab,
        }),
        None => Ok(()),
    }
}

/// Per-token log-probabilities, entropies and collision probabilities from logits, and their
/// backward: the objective's op family.
pub trait LogprobOps: MatmulOps {
    /// Folds one vocabulary chunk of logits (`rows x chunk`, columns `vocab_offset..`) into the
    /// online-softmax `state` (`rows x` [`STATE_WIDTH`] f32, see [`StatsState`]). `targets` is a
    /// u32 buffer with one id per row, already validated against the vocabulary.
    ///
    /// # Errors
    /// [`Error::Shape`] on inconsistent sizes.
    fn stats_fold(
        &self,
        logits: MatRef<'_, Self::Buffer>,
        vocab_offset: usize,
        targets: &Self::Buffer,
        state: &mut Self::Buffer,
    ) -> Result<()>;

    /// Turns a complete state into [`TokenStats`].
    ///
    /// # Errors
    /// [`Error::Shape`] if the state is not `rows x STATE_WIDTH`.
    fn stats_finish(&self, state: &Self::Buffer, rows: usize) -> Result<TokenStats<Self::Buffer>>;

    /// Writes `d loss / d logits` for one vocabulary chunk (`rows x chunk`, columns
    /// `vocab_offset..`) into `out` (same shape), given the forward's `lse` and `entropy`
    /// (see [`logit_grad`]).
    ///
    /// # Errors
    /// [`Error::Shape`] on inconsistent sizes.
    #[allow(clippy::too_many_arguments)]
    fn stats_backward(
        &self,
        logits: MatRef<'_, Self::Buffer>,
        vocab_offset: usize,
        targets: &Self::Buffer,
        stats: &TokenStats<Self::Buffer>,
        grad: StatsGrad<'_, Self::Buffer>,
        out: MatMut<'_, Self::Buffer>,
    ) -> Result<()>;

    /// A fresh online-softmax state for `rows` rows.
    ///
    /// # Errors
    /// A backend error.
    fn stats_init(&self, rows: usize) -> Result<Self::Buffer> {
        let init = StatsState::INIT.to_array();
        let host: Vec<f32> = (0..rows).flat_map(|_| init).collect();
        self.upload_f32(&host)
    }

    /// `log p(target)`, entropy, `sum p^2` and log-sum-exp of each row of `logits`
    /// (`rows x vocab`), in one pass with an online softmax.
    ///
    /// # Errors
    /// [`Error::LengthMismatch`] if `targets.len() != logits.rows()`,
    /// [`Error::TargetOutOfRange`] for a target outside the vocabulary.
    fn token_stats(
        &self,
        logits: MatRef<'_, Self::Buffer>,
        targets: &[u32],
    ) -> Result<TokenStats<Self::Buffer>> {
        crate::error::check_len("targets vs logits rows", logits.rows(), targets.len())?;
        check_targets(targets, logits.cols())?;
        let t = self.upload_u32(targets)?;
        let mut state = self.stats_init(logits.rows())?;
        self.stats_fold(logits, 0, &t, &mut state)?;
        self.stats_finish(&state, logits.rows())
    }

    /// The same statistics for `logits = hidden · weightᵀ` (`hidden`: `N x H`, `weight`: `V x H`)
    /// without materialising the logits: vocabulary chunks of `chunk` rows are multiplied and
    /// folded one at a time, so extra memory is `N x chunk`, independent of `V`.
    ///
    /// # Errors
    /// As [`LogprobOps::token_stats`], plus [`Error::Shape`] if the widths differ or `chunk` is 0.
    fn linear_token_stats(
        &self,
        hidden: MatRef<'_, Self::Buffer>,
        weight: MatRef<'_, Self::Buffer>,
        targets: &[u32],
        chunk: VocabChunk,
    ) -> Result<TokenStats<Self::Buffer>> {
        check_head(&hidden, &weight, targets, chunk)?;
        let (n, v) = (hidden.rows(), weight.rows());
        let t = self.upload_u32(targets)?;
        let mut state = self.stats_init(n)?;
        let c = chunk.0.min(v.max(1));
        let mut logits = self.zeros(DType::F32, n * c)?;
        let mut v0 = 0;
        while v0 < v {
            let v1 = (v0 + c).min(v);
            let w = weight.rows_range(v0, v1)?;
            self.matmul(
                hidden,
                Layout::AsStored,
                w,
                Layout::Transposed,
                MatMut::strided(&mut logits, 0, n, v1 - v0, c)?,
                Epilogue::OVERWRITE,
            )?;
            let view = MatRef::strided(&logits, 0, n, v1 - v0, c)?;
            self.stats_fold(view, v0, &t, &mut state)?;
            v0 = v1;
        }
        self.stats_finish(&state, n)
    }

    /// `d loss / d logits` (`rows x vocab`, f32) for upstream gradients on the per-token log-prob
    /// and entropy.
    ///
    /// # Errors
    /// As [`LogprobOps::token_stats`].
    fn token_stats_backward(
        &self,
        logits: MatRef<'_, Self::Buffer>,
        targets: &[u32],
        stats: &TokenStats<Self::Buffer>,
        grad: StatsGrad<'_, Self::Buffer>,
    ) -> Result<Self::Buffer> {
        crate::error::check_len("targets vs logits rows", logits.rows(), targets.len())?;
        check_targets(targets, logits.cols())?;
        let t = self.upload_u32(targets)?;
        let (rows, cols) = (logits.rows(), logits.cols());
        let mut out = self.zeros(DType::F32, rows * cols)?;
        self.stats_backward(
            logits,
            0,
            &t,
            stats,
            grad,
            MatMut::new(&mut out, rows, cols)?,
        )?;
        Ok(out)
    }

    /// The fused backward of [`LogprobOps::linear_token_stats`]: `d hidden = dZ · W` and
    /// `d W = dZᵀ · hidden`, computed chunk by chunk (the logits of a chunk are recomputed), so
    /// that neither the logits nor their gradient is ever held for the whole vocabulary.
    ///
    /// # Errors
    /// As [`LogprobOps::linear_token_stats`].
    fn linear_token_stats_backward(
        &self,
        hidden: MatRef<'_, Self::Buffer>,
        weight: MatRef<'_, Self::Buffer>,
        targets: &[u32],
        stats: &TokenStats<Self::Buffer>,
        grad: StatsGrad<'_, Self::Buffer>,
        chunk: VocabChunk,
    ) -> Result<HeadGrads<Self::Buffer>> {
        check_head(&hidden, &weight, targets, chunk)?;
        let (n, v, h) = (hidden.rows(), weight.rows(), hidden.cols());
        let t = self.upload_u32(targets)?;
        let c = chunk.0.min(v.max(1));
        let mut logits = self.zeros(DType::F32, n * c)?;
        let mut d_logits = self.zeros(DType::F32, n * c)?;
        let mut d_hidden = self.zeros(DType::F32, n * h)?;
        let mut d_weight = self.zeros(DType::F32, v * h)?;
        let mut v0 = 0;
        while v0 < v {
            let v1 = (v0 + c).min(v);
            let w = weight.rows_range(v0, v1)?;
            self.matmul(
                hidden,
                Layout::AsStored,
                w,
                Layout::Transposed,
                MatMut::strided(&mut logits, 0, n, v1 - v0, c)?,
                Epilogue::OVERWRITE,
            )?;
            self.stats_backward(
                MatRef::strided(&logits, 0, n, v1 - v0, c)?,
                v0,
                &t,
                stats,
                grad,
                MatMut::strided(&mut d_logits, 0, n, v1 - v0, c)?,
            )?;
            let dz = MatRef::strided(&d_logits, 0, n, v1 - v0, c)?;
            self.matmul(
                dz,
                Layout::AsStored,
                w,
                Layout::AsStored,
                MatMut::new(&mut d_hidden, n, h)?,
                Epilogue::ADD,
            )?;
            self.matmul(
                dz,
                Layout::Transposed,
                hidden,
                Layout::AsStored,
                MatMut::strided(&mut d_weight, v0 * h, v1 - v0, h, h)?,
                Epilogue::OVERWRITE,
            )?;
            v0 = v1;
        }
        Ok(HeadGrads { d_hidden, d_weight })
    }
}

/// Checks the operands of [`LogprobOps::stats_backward`]: `out` has the logits chunk's shape and
/// every per-row buffer (targets, `lse`, entropy, upstream gradients) has one value per row.
///
/// # Errors
/// [`Error::Shape`], [`Error::LengthMismatch`].
pub fn check_stats_backward<B: DeviceBuffer>(
    logits: &MatRef<'_, B>,
    targets: &B,
    stats: &TokenStats<B>,
    grad: &StatsGrad<'_, B>,
    out: &MatMut<'_, B>,
) -> Result<()> {
    let rows = logits.rows();
    if out.rows() != rows || out.cols() != logits.cols() {
        return Err(Error::Shape {
            op: "stats_backward",
            reason: "output shape differs from the logits chunk",
        });
    }
    check_stats_grad(stats, grad, rows)?;
    crate::error::check_len("stats_backward targets", rows, targets.len())
}

/// Checks that the forward statistics and upstream gradients of a backward hold one value per
/// row.
///
/// # Errors
/// [`Error::LengthMismatch`].
pub fn check_stats_grad<B: DeviceBuffer>(
    stats: &TokenStats<B>,
    grad: &StatsGrad<'_, B>,
    rows: usize,
) -> Result<()> {
    let check = crate::error::check_len;
    check("stats_backward lse", rows, stats.lse.len())?;
    check("stats_backward entropy", rows, stats.entropy.len())?;
    check("stats_backward d_logp", rows, grad.d_logp.len())?;
    if let Some(de) = grad.d_entropy {
        check("stats_backward d_entropy", rows, de.len())?;
    }
    Ok(())
}

/// Checks the operands of the fused output-head ops.
///
/// # Errors
/// [`Error::Shape`], [`Error::LengthMismatch`], [`Error::TargetOutOfRange`].
pub fn check_head<B: ?Sized>(
    hidden: &MatRef<'_, B>,
    weight: &MatRef<'_, B>,
    targets: &[u32],
    chunk: VocabChunk,
) -> Result<()> {
    if hidden.cols() != weight.cols() {
        return Err(Error::Shape {
            op: "linear_token_stats",
            reason: "hidden width differs from the head matrix width",
        });
    }
    if chunk.0 == 0 {
        return Err(Error::InvalidConfig {
            field: "VocabChunk",
            reason: "must be at least 1",
        });
    }
    crate::error::check_len("targets vs hidden rows", hidden.rows(), targets.len())?;
    check_targets(targets, weight.rows())
}

/// A complete backend: every op family. Implemented automatically for any type that implements
/// them all.
pub trait Backend:
    BufferOps
    + MatmulOps
    + ElementwiseOps
    + NormOps
    + RotaryOps
    + AttentionOps
    + EmbeddingOps
    + LogprobOps
    + ObjectiveOps
    + Clone
    + core::fmt::Debug
    + Send
    + Sync
{
}

impl<T> Backend for T where
    T: BufferOps
        + MatmulOps
        + ElementwiseOps
        + NormOps
        + RotaryOps
        + AttentionOps
        + EmbeddingOps
        + LogprobOps
        + ObjectiveOps
        + Clone
        + core::fmt::Debug
        + Send
        + Sync
{
}

/// Downloads the four buffers of a [`TokenStats`] as host vectors `(logp, entropy, sum_p2, lse)`.
///
/// # Errors
/// A backend error if a transfer fails.
pub fn download_stats<B: BufferOps>(
    backend: &B,
    stats: &TokenStats<B::Buffer>,
) -> Result<[Vec<f32>; 4]> {
    Ok([
        backend.download_f32(&stats.logp)?,
        backend.download_f32(&stats.entropy)?,
        backend.download_f32(&stats.sum_p2)?,
        backend.download_f32(&stats.lse)?,
    ])
}

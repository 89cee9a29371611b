//! The tolerance table: how far a backend's f32 result may sit from the f64 oracle, per op and
//! per input element type. One table for every backend; each number carries its derivation.
//!
//! A result `got` passes against the oracle value `want` when
//!
//! ```text
//! |got - want| <= abs + (rel + per_term * terms) * scale + slack
//! ```
//!
//! where `scale` is the per-element magnitude documented on the oracle function (for most ops
//! `|want|`, for reductions the sum of the absolute values of the summed terms), `terms` is the
//! length of the reduction a check passes (k of a matmul, a row width...) and `slack` is an
//! extra absolute allowance some checks derive from an upstream error (the logits of
//! `linear_token_stats`). `U = 2^-24` is the unit roundoff of f32.
//!
//! Ground rules behind the numbers:
//! - inputs are drawn as exactly representable values of their element type, so bf16/f16
//!   inputs add no error of their own: the oracle sees the same values the backend does;
//! - accumulation is f32 (the trait's contract) in any order; a sum of `n` terms then errs by
//!   at most `n U sum |terms|` (Higham, *Accuracy and Stability*, eq. 3.5 with gamma_n);
//! - transcendental functions may be as loose as the loosest target: Vulkan/SPIR-V `exp` is
//!   accurate to `3 + 2|x|` ulp, `log` to 3 ulp outside [0.5, 2] (absolute 2^-21 inside), CUDA's
//!   `expf`/`logf` to 2 and 1 ulp; inputs of the checks keep `|x| <= 30`, so 64 ulp (`64 U`)
//!   covers every `exp`/`log` we call;
//! - a rounding to bf16 (f16) of a value that carries any f32 error may land on either
//!   neighbour: one ulp of the half type, `2^-7` (`2^-10`) relative.

use axpo_core::backend::{DType, Op};

/// The unit roundoff of f32, `2^-24`.
pub const U: f64 = 1.0 / 16_777_216.0;

/// An allowance; see the module docs for how it is applied.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Tol {
    /// Absolute part.
    pub abs: f64,
    /// Relative part, times the oracle's scale.
    pub rel: f64,
    /// Relative part per reduced term, times `terms` and the scale.
    pub per_term: f64,
}

impl Tol {
    /// Bit-exact.
    pub const EXACT: Self = Self {
        abs: 0.0,
        rel: 0.0,
        per_term: 0.0,
    };

    const fn rel(rel: f64) -> Self {
        Self {
            abs: 0.0,
            rel,
            per_term: 0.0,
        }
    }

    /// The allowed deviation for one element.
    #[must_use]
    pub fn allowed(&self, scale: f64, terms: usize) -> f64 {
        self.abs + (self.rel + self.per_term * terms as f64) * scale
    }
}

/// One ulp of a half type at the value's magnitude, relative: bf16 has 8 significant bits,
/// f16 11 (normal range).
#[must_use]
pub const fn half_ulp(dtype: DType) -> f64 {
    match dtype {
        DType::Bf16 => 1.0 / 128.0,
        DType::F16 => 1.0 / 1024.0,
        _ => 0.0,
    }
}

/// The table. `dtype` is the element type of the op's (float) inputs, except for
/// [`Op::CopyRows`], where it is the destination's.
#[must_use]
pub fn tol(op: Op, dtype: DType) -> Tol {
    match op {
        // Transfers and widening conversions are exact: every bf16/f16 value is an f32 value.
        Op::Upload | Op::GatherRows => Tol::EXACT,
        // Into f32 (or u32): exact. Into bf16: one rounding of an exact value, round to nearest
        // (half an ulp, 2^-8); into f16: WGSL's pack2x16float may round either way, one ulp
        // (2^-10); the CPU rounds to nearest.
        Op::CopyRows => match dtype {
            DType::Bf16 => Tol::rel(1.0 / 256.0),
            DType::F16 => Tol {
                abs: 6.0e-8, // f16's smallest subnormal, for values that land below the normal range
                rel: 1.0 / 1024.0,
                per_term: 0.0,
            },
            _ => Tol::EXACT,
        },
        // gamma_k per term (k = inner dimension) on sum |a||b|, plus three roundings: the
        // product by alpha, the addition to the old output (Accumulate::Add; the check adds
        // |old| to the scale) and the final store. Half inputs widen exactly.
        Op::Matmul => Tol {
            abs: 0.0,
            rel: 3.0 * U,
            per_term: U,
        },
        // One f32 addition/multiplication: half an ulp (U), doubled to allow a faithful
        // (non-nearest) rounding. Scratch `scatter_rows(Add)` is the same single addition;
        // `Replace` is a copy and passes a fortiori.
        Op::AddAssign | Op::Mul | Op::AddBias | Op::ScatterRows => Tol::rel(2.0 * U),
        // Scale |x| + |act(x)| (+ |x * up| for SwiGLU, + |bias| for bias_activation).
        // SiLU: exp (64 U, see module docs) then a divide (3 ulp) and an add: 70 U.
        // GELU-tanh: tanh built from exp: 1 - e^{-2|t|} loses up to 64 U of the sum, absolute,
        // times 0.5|x|: within 64 U of the scale. GELU-erf: erf has no WGSL builtin; a
        // polynomial fit with |error| <= 1.5e-7 (Abramowitz–Stegun 7.1.26; the wgpu backend
        // uses the Numerical Recipes erfc fit, 1.2e-7) times 0.5|x| is 0.75e-7 |x| ~ 1.3 U |x|.
        // The loosest, plus the multiplication of SwiGLU, is 80 U.
        Op::Activation | Op::Swiglu | Op::BiasActivation => Tol::rel(80.0 * U),
        // Scale |x * inv * w| (see oracle::rms_norm). mean(x^2) is a sum of d terms: d U
        // relative; inverse square root halves it (per_term U / 2 with terms = d) and adds
        // 2 ulp; the two products add 2 more: 8 U. Half inputs: the normalised value is rounded
        // to the input type before the weight (as PyTorch does), one half-type ulp.
        Op::RmsNorm => Tol {
            abs: 0.0,
            rel: 8.0 * U + half_ulp(dtype),
            per_term: 0.5 * U,
        },
        // Scale |n w| + |b| + |mean inv w|. The mean (d terms) enters the centred values
        // absolutely (scale term |mean inv w|); the variance is another d-term sum (halved by
        // the square root). per_term 2 U covers both; 8 U for the remaining operations.
        Op::LayerNorm => Tol {
            abs: 0.0,
            rel: 8.0 * U + half_ulp(dtype),
            per_term: 2.0 * U,
        },
        // Scale |a cos| + |b sin|: two products and one addition (or two FMAs): 3 U, 4 U with
        // margin.
        Op::Rotary => Tol::rel(4.0 * U),
        // RMSNorm then rotary: the RMSNorm allowance (the rotation is an isometry, it carries
        // relative errors through) plus the rotary's 4 U.
        Op::RmsNormRotary => Tol {
            abs: 0.0,
            rel: 12.0 * U + half_ulp(dtype),
            per_term: 0.5 * U,
        },
        // Scale p. Each p is exp(s - max) / sum: exp 64 U (|s - max| <= 30), the subtraction
        // rounds s (|s| <= 30: 30 U absolute in the exponent, i.e. relative in p), the divide
        // 3 U; the normaliser is a sum of `cols` terms (per_term U).
        Op::MaskedSoftmax => Tol {
            abs: 0.0,
            rel: 100.0 * U,
            per_term: U,
        },
        // Scale sum_j p_j |v_j| + |out|. A score is a head_dim-term dot product; with the
        // checks' inputs (q, k ~ N(0, 1), scale 1/sqrt(head_dim), head_dim <= 64) its absolute
        // error is at most (hd + 2) U sum |q k| / sqrt(hd) <= 66 U * 0.8 * 8 ~ 420 U, which
        // moves each p (and the normaliser) by as much relative: 2 * 420 U; the softmax itself
        // 100 U; the value sum per_term U (terms = kv rows).
        Op::Attention => Tol {
            abs: 0.0,
            rel: 1000.0 * U,
            per_term: U,
        },
        // Scales: logp 1 + |z_y| + |lse|; entropy 1 + ln s + |u / s|; sum p^2: 3 sum p^2;
        // lse: 1 + |lse| (see checks::logprob). Each sum s, u, q has `terms` = stats_terms(V)
        // (below) rounding errors of its own size, and each of its terms an exp (64 U); the log
        // and the divides add a few more ulp: 128 U. The errors of s enter logp, H and lse
        // absolutely (d ln s = ds / s), hence the constant 1 in those scales.
        Op::TokenStats | Op::LinearTokenStats => Tol {
            abs: 0.0,
            rel: 128.0 * U,
            per_term: U,
        },
        // Scale |g_logp| (1[v = y] + p) + |g_H| p (|ln p| + H + 1) (oracle::row_grad), the
        // statistics being given: ln p = z - lse (one rounding of |lse| <= 30), p = exp (64 U),
        // the products and the sum: 128 U. The linear backward's d hidden and d W are then
        // sums over V (resp. N) products of such values: per_term U, terms = V (resp. N).
        Op::TokenStatsBackward | Op::LinearTokenStatsBackward => Tol {
            abs: 0.0,
            rel: 128.0 * U,
            per_term: U,
        },
        // The training step's d hidden and d W: the backward's allowance (the same products
        // of the same dZ, whose upstream gradients come from the core's per-token math at the
        // backend's own statistics; the statistics' allowance is charged as slack by the
        // check). Its statistics are checked with the `LinearTokenStats` allowance and its loss
        // and metrics with `HOST_F64`.
        Op::LinearObjective => Tol {
            abs: 0.0,
            rel: 128.0 * U,
            per_term: U,
        },
        _ => Tol::rel(f64::INFINITY),
    }
}

/// The loss, terms and metrics of a training step against `evaluate::<f64>` at the backend's
/// own statistics: both sum the same per-token f64 terms of the core on the host (in the same
/// token order), so they agree to f64 rounding; 1e-9 relative (plus 1e-9 absolute) leaves room
/// for a backend that sums blocks in another order.
pub const HOST_F64: f64 = 1e-9;

/// The number of terms charged for an online-softmax sum over a vocabulary of `v`: f32 sums in
/// the blocked/tree orders every backend uses err like a random walk, `~sqrt(v) U`; `8 sqrt(v)`
/// keeps a wide margin while staying far below the worst case `v U` that a sequential sum could
/// reach (and that no backend's order approaches).
#[must_use]
pub fn stats_terms(v: usize) -> usize {
    8 * (v as f64).sqrt().ceil() as usize + 8
}

/// The absolute slack `linear_token_stats` adds to every statistic: the logits come out of an
/// f32 product of `h` terms, each off by at most `delta = (h + 2) U max_dot` where `max_dot` is
/// the largest `sum_j |h_ij w_vj|`. A shift of every logit by at most delta moves lse and
/// log p by at most 2 delta, the entropy by at most `2 (1 + ln V) delta` (its gradient
/// `p (ln p + H)` sums to at most `2 (1 + ln V)` in absolute value), and sum p^2 by at most
/// `4 delta` relative; `(4 + 2 ln V) delta` bounds them all for sum p^2 <= 1.
#[must_use]
pub fn logit_slack(h: usize, max_dot: f64, vocab: usize) -> f64 {
    let delta = (h as f64 + 2.0) * U * max_dot;
    (4.0 + 2.0 * (vocab.max(1) as f64).ln()) * delta
}

/// Finite differences of the oracle against a backend's analytic gradient: f64 central
/// differences with step `FD_STEP` have truncation error `h^2 |f'''| / 6 < 1e-9` for the
/// checks' logits and round-off `~1e-16 |f| / h < 1e-11`; what remains is the backend's own
/// f32 error (its forward statistics feed its backward), below 1e-5 of the scale. The
/// allowance is 1e-4 of the scale plus 1e-6 absolute: loose enough for any backend, tight
/// enough to catch a wrong sign, a missing term or a misplaced index (errors of order 1).
pub const FD: Tol = Tol {
    abs: 1e-6,
    rel: 1e-4,
    per_term: 0.0,
};

/// The finite-difference step (in logit / hidden / weight units).
pub const FD_STEP: f64 = 1e-4;

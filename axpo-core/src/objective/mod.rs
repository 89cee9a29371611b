//! The objective (spec section 9): loss, exact `d loss / d logp` and `d loss / d entropy` per
//! token, and metrics.
//!
//! Every term is a sum over trained tokens `t` of `w_t * term_t`, where the weight `w_t` comes
//! from the [`Aggregation`] and its explicit global normalizer, so a micro-batch's loss and
//! gradient are exactly its share of the whole batch's (sequences must not be split across
//! micro-batches). The per-token loss is
//!
//! `w_t * (tis_t * policy_t + beta * kl_t - entropy_coef * H_t)`.
//!
//! The per-token math has one source, [`token_terms`] (with [`Aggregation::weight`]): the host
//! [`evaluate`], the [`ObjectiveAccumulator`] that fused training steps feed block by block, and
//! (through the conformance suite) the CUDA and WGSL kernels all agree with it.
//!
//! Stop-gradient quantities (GSPO's sequence ratio, CISPO's weight, the TIS weight) are
//! evaluated at the given log-probs; [`surrogate_loss`] exposes the loss as a function of *live*
//! log-probs with those held fixed, so that its finite differences are exactly the returned
//! gradient (autograd semantics without autograd).
//!
//! Numerical hygiene: every log-ratio (`logp - logp_old`, GSPO's mean log-ratio, the TIS
//! log-ratio, k3's `-u`) is clamped to `[-log_ratio_clamp, log_ratio_clamp]` (default 20) before
//! `exp`, and k3 is capped at 10; a clamped term has zero gradient (for GSPO: every token of a
//! sequence whose mean log-ratio lies beyond the clamp gets zero policy gradient). This is
//! axpo's own convention; verl, for comparison, clamps GSPO's combined per-token log-ratio
//! from above only, at 10. Finite inputs therefore give
//! finite outputs unless they are astronomically large (|A| near `f32::MAX / e^20`), in which case
//! [`evaluate`] reports [`Error::NonFinite`] rather than returning an infinity or NaN.

mod accumulate;
mod config;
mod token;
mod tokens;

use alloc::vec;
use alloc::vec::Vec;

pub use accumulate::{BlockValues, ObjectiveAccumulator, ObjectiveSummary, ObjectiveTokens};
pub use config::{
    Aggregation, CispoBounds, KlEstimator, KlPenalty, ObjectiveConfig, PolicyLoss, TisLevel,
    TruncatedIs,
};
pub use token::{
    ClampedRatio, ClipSide, SequenceTerms, TokenInput, TokenTerms, clamped_exp, token_terms,
};
pub use tokens::{TokenRef, TrainingTokens};

use crate::error::{Error, Result, check_finite, check_len};

/// The float types the objective runs in (f32 in production, f64 for gradient checks).
pub trait Real: num_traits::Float + core::fmt::Debug + Send + Sync + 'static {
    /// Converts from f64 (rounding for f32).
    fn of(x: f64) -> Self;
    /// Converts to f64.
    fn to_f64(self) -> f64;
}

impl Real for f32 {
    fn of(x: f64) -> Self {
        x as f32
    }
    fn to_f64(self) -> f64 {
        f64::from(self)
    }
}

impl Real for f64 {
    fn of(x: f64) -> Self {
        x
    }
    fn to_f64(self) -> f64 {
        self
    }
}

/// The per-token inputs of one micro-batch, flattened over its sequences.
#[derive(Debug, Clone, Copy)]
pub struct ObjectiveInputs<'a, F> {
    /// Current policy log-prob of each trained token.
    pub logp: &'a [F],
    /// The behaviour policy's log-prob (the anchor of the ratio).
    pub old_logp: &'a [F],
    /// Advantage of each token.
    pub advantages: &'a [F],
    /// Sequence boundaries: sequence `i` is tokens `seq_offsets[i]..seq_offsets[i + 1]`;
    /// starts at 0, ends at the token count, non-decreasing.
    pub seq_offsets: &'a [usize],
    /// The rollout engine's log-probs (needed by truncated importance sampling).
    pub rollout_logp: Option<&'a [F]>,
    /// The reference policy's log-probs (needed by the KL penalty).
    pub ref_logp: Option<&'a [F]>,
    /// The current policy's entropy per token (needed by the entropy bonus).
    pub entropy: Option<&'a [F]>,
}

impl<'a, F> ObjectiveInputs<'a, F> {
    /// The inputs other than the current policy's log-probs and entropies.
    #[must_use]
    pub fn tokens(&self) -> ObjectiveTokens<'a, F> {
        ObjectiveTokens {
            old_logp: self.old_logp,
            advantages: self.advantages,
            seq_offsets: self.seq_offsets,
            rollout_logp: self.rollout_logp,
            ref_logp: self.ref_logp,
        }
    }
}

/// The loss split into its three terms (`total = policy + kl + entropy`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LossTerms<F> {
    /// The (TIS-weighted) policy term.
    pub policy: F,
    /// `beta * agg(kl)`.
    pub kl: F,
    /// `-entropy_coef * agg(H)`.
    pub entropy: F,
}

/// Diagnostics of one micro-batch, as means over its tokens (counts are exact).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct ObjectiveMetrics {
    /// Number of tokens.
    pub tokens: usize,
    /// Tokens whose clipped branch is active below (`A < 0`, ratio `< 1 - eps_low`).
    pub clipped_low: usize,
    /// Tokens whose clipped branch is active above (`A > 0`, ratio `> 1 + eps_high`).
    pub clipped_high: usize,
    /// Tokens capped by the dual clip.
    pub dual_clipped: usize,
    /// Tokens whose TIS weight hit the cap.
    pub tis_truncated: usize,
    /// Mean `(rho - 1) - ln rho`, an estimate of `KL(old || current)`.
    pub approx_kl: f64,
    /// Mean ratio.
    pub ratio_mean: f64,
    /// Smallest ratio.
    pub ratio_min: f64,
    /// Largest ratio.
    pub ratio_max: f64,
    /// Mean KL estimate to the reference, when configured.
    pub kl_mean: f64,
    /// Mean entropy, when given.
    pub entropy_mean: f64,
}

impl ObjectiveMetrics {
    /// Fraction of tokens clipped (low or high).
    #[must_use]
    pub fn clip_fraction(&self) -> f64 {
        if self.tokens == 0 {
            0.0
        } else {
            (self.clipped_low + self.clipped_high) as f64 / self.tokens as f64
        }
    }
}

/// What [`evaluate`] returns.
#[derive(Debug, Clone, PartialEq)]
pub struct ObjectiveOutput<F> {
    /// The loss (this micro-batch's share of the whole batch's).
    pub loss: F,
    /// Its terms.
    pub terms: LossTerms<F>,
    /// `d loss / d logp` per token (exact).
    pub d_logp: Vec<F>,
    /// `d loss / d entropy` per token (all zero without an entropy bonus).
    pub d_entropy: Vec<F>,
    /// Diagnostics.
    pub metrics: ObjectiveMetrics,
}

/// The core: loss at `live` log-probs (and `live_entropy`), gradients at the given ones.
fn compute<F: Real>(
    config: &ObjectiveConfig,
    inp: &ObjectiveInputs<'_, F>,
    live: &[F],
    live_entropy: Option<&[F]>,
) -> Result<ObjectiveOutput<F>> {
    config.validate()?;
    let n = inp.logp.len();
    if n == 0 {
        return Err(Error::NoTrainedTokens);
    }
    check_len("live log-probs", n, live.len())?;
    check_len("old log-probs", n, inp.old_logp.len())?;
    let mut acc = ObjectiveAccumulator::new(config, inp.tokens())?;
    let mut d_logp = vec![F::zero(); n];
    let mut d_entropy = vec![F::zero(); n];
    // `evaluate` passes the same slices as live and detached.
    let values = BlockValues {
        logp: inp.logp,
        entropy: inp.entropy,
        live_logp: (!core::ptr::eq(live, inp.logp)).then_some(live),
        live_entropy,
    };
    acc.block(values, &mut d_logp, &mut d_entropy)?;
    let s = acc.finish()?;
    let out = ObjectiveOutput {
        loss: F::of(s.loss),
        terms: LossTerms {
            policy: F::of(s.terms.policy),
            kl: F::of(s.terms.kl),
            entropy: F::of(s.terms.entropy),
        },
        d_logp,
        d_entropy,
        metrics: s.metrics,
    };
    let terms = [out.loss, out.terms.policy, out.terms.kl, out.terms.entropy];
    check_finite("objective loss (overflow)", &terms)?;
    Ok(out)
}

/// Loss, exact gradients and metrics of one micro-batch.
///
/// # Errors
/// [`Error::InvalidConfig`] for a bad configuration or a missing input it needs;
/// [`Error::NoTrainedTokens`] for no tokens; [`Error::LengthMismatch`], [`Error::Shape`] for
/// inconsistent inputs; [`Error::NonFinite`] for a NaN or infinite input, or an overflowing
/// result.
pub fn evaluate<F: Real>(
    config: &ObjectiveConfig,
    inputs: &ObjectiveInputs<'_, F>,
) -> Result<ObjectiveOutput<F>> {
    compute(config, inputs, inputs.logp, inputs.entropy)
}

/// The loss as a function of `live` log-probs and entropies, with every stop-gradient
/// quantity held at `inputs.logp`. At `live == inputs.logp` it equals [`evaluate`]'s loss, and its
/// partial derivatives are [`evaluate`]'s `d_logp` and `d_entropy`.
///
/// # Errors
/// As [`evaluate`].
pub fn surrogate_loss<F: Real>(
    config: &ObjectiveConfig,
    inputs: &ObjectiveInputs<'_, F>,
    live: &[F],
    live_entropy: Option<&[F]>,
) -> Result<F> {
    if let Some(h) = live_entropy {
        check_len("live entropy", inputs.logp.len(), h.len())?;
        check_finite("live entropy", h)?;
    }
    Ok(compute(config, inputs, live, live_entropy)?.loss)
}

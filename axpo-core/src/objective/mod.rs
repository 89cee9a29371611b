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
//! Stop-gradient quantities (GSPO's sequence ratio, CISPO's weight, the TIS weight) are
//! evaluated at the given log-probs; [`surrogate_loss`] exposes the loss as a function of *live*
//! log-probs with those held fixed, so that its finite differences are exactly the returned
//! gradient (autograd semantics without autograd).
//!
//! Numerical hygiene: every log-ratio (`logp - logp_old`, GSPO's mean log-ratio, the TIS
//! log-ratio, k3's `-u`) is clamped to `[-log_ratio_clamp, log_ratio_clamp]` (default 20) before
//! `exp`, and k3 is capped at 10; a clamped term has zero gradient. Finite inputs therefore give
//! finite outputs unless they are astronomically large (|A| near `f32::MAX / e^20`), in which case
//! [`evaluate`] reports [`Error::NonFinite`] rather than returning an infinity or NaN.

mod config;
mod tokens;

use alloc::vec;
use alloc::vec::Vec;

pub use config::{
    Aggregation, CispoBounds, KlEstimator, KlPenalty, ObjectiveConfig, PolicyLoss, TisLevel,
    TruncatedIs,
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

/// Which branch of a clipped objective is active.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Clip {
    None,
    Low,
    High,
    Dual,
}

/// PPO-clip value and gradient for ratio `rho` with derivative `drho` (w.r.t. logp).
fn ppo_token(rho: f64, drho: f64, a: f64, lo: f64, hi: f64, dual: Option<f64>) -> (f64, f64, Clip) {
    let unclipped = -a * rho;
    let clipped = -a * rho.clamp(lo, hi);
    let (mut value, mut grad, mut clip) = if clipped > unclipped {
        let side = if rho < lo { Clip::Low } else { Clip::High };
        (clipped, 0.0, side)
    } else {
        (unclipped, -a * drho, Clip::None)
    };
    if let Some(c) = dual
        && a < 0.0
        && value > -c * a
    {
        value = -c * a;
        grad = 0.0;
        clip = Clip::Dual;
    }
    (value, grad, clip)
}

/// `exp(clamp(x))` and whether `x` was inside the clamp.
fn clamped_exp(x: f64, c: f64) -> (f64, bool) {
    if x > c {
        (num_traits::Float::exp(c), false)
    } else if x < -c {
        (num_traits::Float::exp(-c), false)
    } else {
        (num_traits::Float::exp(x), true)
    }
}

/// KL estimate and its derivative w.r.t. logp, for `u = logp - logp_ref`.
fn kl_token(est: KlEstimator, u: f64, c: f64) -> (f64, f64) {
    match est {
        KlEstimator::K1 => (u, 1.0),
        KlEstimator::K2 => (0.5 * u * u, u),
        KlEstimator::K3 => {
            let (e, inside) = clamped_exp(-u, c);
            let x = (-u).clamp(-c, c);
            let k = e - 1.0 - x;
            if k > 10.0 {
                (10.0, 0.0)
            } else if inside {
                (k, 1.0 - e)
            } else {
                (k, 0.0)
            }
        }
    }
}

fn validate<F: Real>(
    config: &ObjectiveConfig,
    inp: &ObjectiveInputs<'_, F>,
    live: &[F],
) -> Result<()> {
    config.validate()?;
    let n = inp.logp.len();
    if n == 0 {
        return Err(Error::NoTrainedTokens);
    }
    check_len("live log-probs", n, live.len())?;
    check_len("old log-probs", n, inp.old_logp.len())?;
    check_len("advantages", n, inp.advantages.len())?;
    check_finite("log-prob", inp.logp)?;
    check_finite("live log-prob", live)?;
    check_finite("old log-prob", inp.old_logp)?;
    check_finite("advantage", inp.advantages)?;
    let offs = inp.seq_offsets;
    if offs.first() != Some(&0) || offs.last() != Some(&n) || offs.windows(2).any(|w| w[0] > w[1]) {
        return Err(Error::Shape {
            op: "objective",
            reason: "seq_offsets must start at 0, end at the token count and not decrease",
        });
    }
    // Every optional input that is given is checked, used or not (the metrics read them).
    for (what, x) in [
        ("rollout log-prob", inp.rollout_logp),
        ("reference log-prob", inp.ref_logp),
        ("entropy", inp.entropy),
    ] {
        if let Some(v) = x {
            check_len(what, n, v.len())?;
            check_finite(what, v)?;
        }
    }
    let need = |what, x: Option<&[F]>| -> Result<()> {
        match x {
            Some(_) => Ok(()),
            None => Err(Error::InvalidConfig {
                field: what,
                reason: "required by the configuration but not given",
            }),
        }
    };
    if config.tis.is_some() {
        need("rollout log-prob", inp.rollout_logp)?;
    }
    if config.kl.is_some() {
        need("reference log-prob", inp.ref_logp)?;
    }
    if config.entropy_coef != 0.0 {
        need("entropy", inp.entropy)?;
    }
    Ok(())
}

/// The core: loss at `live` log-probs (and `live_entropy`), gradients at the given ones.
fn compute<F: Real>(
    config: &ObjectiveConfig,
    inp: &ObjectiveInputs<'_, F>,
    live: &[F],
    live_entropy: Option<&[F]>,
) -> Result<ObjectiveOutput<F>> {
    validate(config, inp, live)?;
    let n = inp.logp.len();
    let c = config.log_ratio_clamp;
    let f = |x: F| x.to_f64();
    // `evaluate` passes the same slice as live and detached: skip the second evaluation.
    let same = core::ptr::eq(live, inp.logp);
    // Metrics are means accumulated as sums of `x / n`, which cannot overflow.
    let inv_n = 1.0 / n as f64;
    let mut d_logp = vec![F::zero(); n];
    let mut d_entropy = vec![F::zero(); n];
    let (mut pol, mut klt, mut ent) = (0.0f64, 0.0f64, 0.0f64);
    let mut m = ObjectiveMetrics {
        tokens: n,
        ratio_min: f64::INFINITY,
        ratio_max: f64::NEG_INFINITY,
        ..ObjectiveMetrics::default()
    };
    for s in 0..inp.seq_offsets.len() - 1 {
        let (a0, a1) = (inp.seq_offsets[s], inp.seq_offsets[s + 1]);
        let len = a1 - a0;
        if len == 0 {
            continue;
        }
        let w = match config.aggregation {
            Aggregation::TokenMean { tokens } => 1.0 / tokens as f64,
            Aggregation::SeqMeanTokenMean { sequences } => 1.0 / (sequences as f64 * len as f64),
            Aggregation::SeqMeanTokenSum { sequences } => 1.0 / sequences as f64,
            Aggregation::Constant { normalizer } => 1.0 / normalizer,
        };
        let seq_tis = match (config.tis, inp.rollout_logp) {
            (
                Some(TruncatedIs {
                    level: TisLevel::Sequence,
                    cap,
                }),
                Some(r),
            ) => {
                let lr: f64 = (a0..a1).map(|t| f(inp.old_logp[t]) - f(r[t])).sum();
                Some(clamped_exp(lr, c).0.min(cap))
            }
            _ => None,
        };
        let seq_ratio = match config.loss {
            PolicyLoss::Gspo { .. } => {
                let mean_lr = (a0..a1)
                    .map(|t| f(inp.logp[t]) - f(inp.old_logp[t]))
                    .sum::<f64>()
                    / len as f64;
                clamped_exp(mean_lr, c).0
            }
            _ => 1.0,
        };
        for t in a0..a1 {
            let (det, old, a) = (f(inp.logp[t]), f(inp.old_logp[t]), f(inp.advantages[t]));
            let lv = f(live[t]);
            let (rho_det, inside_det) = clamped_exp(det - old, c);
            let drho = if inside_det { rho_det } else { 0.0 };
            m.approx_kl += (rho_det - 1.0 - (det - old).clamp(-c, c)) * inv_n;
            m.ratio_mean += rho_det * inv_n;
            m.ratio_min = m.ratio_min.min(rho_det);
            m.ratio_max = m.ratio_max.max(rho_det);
            let (value, grad, clip) = match config.loss {
                PolicyLoss::PpoClip {
                    eps_low,
                    eps_high,
                    dual_clip,
                } => {
                    let (_, g, clip) =
                        ppo_token(rho_det, drho, a, 1.0 - eps_low, 1.0 + eps_high, dual_clip);
                    let rho_live = clamped_exp(lv - old, c).0;
                    let (v, _, _) =
                        ppo_token(rho_live, 0.0, a, 1.0 - eps_low, 1.0 + eps_high, dual_clip);
                    (v, g, clip)
                }
                PolicyLoss::Gspo { eps_low, eps_high } => {
                    let (lo, hi) = (1.0 - eps_low, 1.0 + eps_high);
                    let (v, g, clip) = ppo_token(seq_ratio, seq_ratio, a, lo, hi, None);
                    if same {
                        (v, g, clip)
                    } else {
                        let s_live = seq_ratio * clamped_exp(lv - det, c).0;
                        (ppo_token(s_live, 0.0, a, lo, hi, None).0, g, clip)
                    }
                }
                PolicyLoss::Cispo { bounds } => {
                    let wgt = match bounds {
                        CispoBounds::Relative { eps_low, eps_high } => {
                            rho_det.clamp(1.0 - eps_low, 1.0 + eps_high)
                        }
                        CispoBounds::UpperOnly { max } => rho_det.min(max),
                    };
                    let clip = if wgt < rho_det {
                        Clip::High
                    } else if wgt > rho_det {
                        Clip::Low
                    } else {
                        Clip::None
                    };
                    (-wgt * a * lv, -wgt * a, clip)
                }
                PolicyLoss::PolicyGradient => (-a * lv, -a, Clip::None),
            };
            match clip {
                Clip::None => {}
                Clip::Low => m.clipped_low += 1,
                Clip::High => m.clipped_high += 1,
                Clip::Dual => m.dual_clipped += 1,
            }
            let tis = match (config.tis, inp.rollout_logp) {
                (
                    Some(TruncatedIs {
                        level: TisLevel::Token,
                        cap,
                    }),
                    Some(r),
                ) => {
                    let x = clamped_exp(old - f(r[t]), c).0;
                    if x >= cap {
                        m.tis_truncated += 1;
                    }
                    x.min(cap)
                }
                (
                    Some(TruncatedIs {
                        level: TisLevel::Sequence,
                        cap,
                    }),
                    _,
                ) => {
                    let x = seq_tis.unwrap_or(1.0);
                    if x >= cap {
                        m.tis_truncated += 1;
                    }
                    x
                }
                _ => 1.0,
            };
            pol += w * tis * value;
            let mut g = w * tis * grad;
            if let (Some(kl), Some(r)) = (config.kl, inp.ref_logp) {
                let (k_det, dk) = kl_token(kl.estimator, det - f(r[t]), c);
                let k_live = if same {
                    k_det
                } else {
                    kl_token(kl.estimator, lv - f(r[t]), c).0
                };
                m.kl_mean += k_det * inv_n;
                klt += w * kl.beta * k_live;
                g += w * kl.beta * dk;
            }
            if let Some(h) = inp.entropy {
                m.entropy_mean += f(h[t]) * inv_n;
            }
            if config.entropy_coef != 0.0 {
                let h = live_entropy.or(inp.entropy).map_or(0.0, |h| f(h[t]));
                ent -= w * config.entropy_coef * h;
                d_entropy[t] = F::of(-w * config.entropy_coef);
            }
            d_logp[t] = F::of(g);
        }
    }
    let loss = pol + klt + ent;
    let out = ObjectiveOutput {
        loss: F::of(loss),
        terms: LossTerms {
            policy: F::of(pol),
            kl: F::of(klt),
            entropy: F::of(ent),
        },
        d_logp,
        d_entropy,
        metrics: m,
    };
    let terms = [out.loss, out.terms.policy, out.terms.kl, out.terms.entropy];
    check_finite("objective loss (overflow)", &terms)?;
    check_finite("objective gradient (overflow)", &out.d_logp)?;
    check_finite("objective entropy gradient (overflow)", &out.d_entropy)?;
    let metrics = [
        m.approx_kl,
        m.ratio_mean,
        m.ratio_min,
        m.ratio_max,
        m.kl_mean,
        m.entropy_mean,
    ];
    check_finite("objective metrics (overflow)", &metrics)?;
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

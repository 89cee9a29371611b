//! The per-token objective: the one source of its math. [`token_terms`] gives one token's loss
//! terms, exact gradients and diagnostics; [`Aggregation::weight`] gives its weight. Every path
//! that computes the objective (the host [`evaluate`](super::evaluate), the fused training step
//! of every backend) calls these, and the device kernels (CUDA, WGSL) are checked against them
//! by the conformance suite.

use super::config::{
    Aggregation, CispoBounds, KlEstimator, ObjectiveConfig, PolicyLoss, TisLevel, TruncatedIs,
};

impl Aggregation {
    /// The weight `w_t` of each token of a sequence of `len` tokens: the loss is
    /// `sum_t w_t l_t`.
    #[must_use]
    pub fn weight(&self, len: usize) -> f64 {
        match *self {
            Aggregation::TokenMean { tokens } => 1.0 / tokens as f64,
            Aggregation::SeqMeanTokenMean { sequences } => 1.0 / (sequences as f64 * len as f64),
            Aggregation::SeqMeanTokenSum { sequences } => 1.0 / sequences as f64,
            Aggregation::Constant { normalizer } => 1.0 / normalizer,
        }
    }
}

/// `exp(clamp(x, -c, c))`, and whether `x` was inside the clamp (outside it the value is
/// constant: zero gradient).
#[must_use]
pub fn clamped_exp(x: f64, c: f64) -> ClampedRatio {
    if x > c {
        ClampedRatio {
            value: num_traits::Float::exp(c),
            inside: false,
        }
    } else if x < -c {
        ClampedRatio {
            value: num_traits::Float::exp(-c),
            inside: false,
        }
    } else {
        ClampedRatio {
            value: num_traits::Float::exp(x),
            inside: true,
        }
    }
}

/// A ratio `exp(clamp(log_ratio))` and whether the log-ratio lay inside the clamp.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ClampedRatio {
    /// The (clamped) ratio.
    pub value: f64,
    /// Whether the log-ratio was inside `[-clamp, clamp]`.
    pub inside: bool,
}

/// The quantities of a token's sequence that its terms depend on.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SequenceTerms {
    /// The token weight `w_t` of the sequence ([`Aggregation::weight`]).
    pub weight: f64,
    /// GSPO's sequence ratio `exp(clamp(mean_t (logp - logp_old)))` at the detached log-probs.
    pub gspo_ratio: Option<ClampedRatio>,
    /// The sequence-level TIS weight `min(exp(clamp(sum_t (logp_old - logp_rollout))), cap)`.
    pub sequence_tis: Option<f64>,
}

impl SequenceTerms {
    /// The terms of a sequence under `config`: `len` tokens, `log_ratio_sum` the sum of
    /// `logp - logp_old` (read for GSPO only) and `rollout_log_ratio_sum` the sum of
    /// `logp_old - logp_rollout` (read for sequence-level TIS only).
    #[must_use]
    pub fn new(
        config: &ObjectiveConfig,
        len: usize,
        log_ratio_sum: f64,
        rollout_log_ratio_sum: Option<f64>,
    ) -> Self {
        let c = config.log_ratio_clamp;
        let gspo_ratio = match config.loss {
            PolicyLoss::Gspo { .. } if len > 0 => Some(clamped_exp(log_ratio_sum / len as f64, c)),
            _ => None,
        };
        let sequence_tis = match (config.tis, rollout_log_ratio_sum) {
            (
                Some(TruncatedIs {
                    level: TisLevel::Sequence,
                    cap,
                }),
                Some(lr),
            ) => Some(clamped_exp(lr, c).value.min(cap)),
            _ => None,
        };
        Self {
            weight: config.aggregation.weight(len),
            gspo_ratio,
            sequence_tis,
        }
    }
}

/// One token's inputs, in f64. The gradient is taken at `logp` / `entropy` (the detached
/// values); the loss value at `live_logp` / `live_entropy`, which equal them except in
/// finite-difference checks of the surrogate loss.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TokenInput {
    /// Current log-prob (the gradient point).
    pub logp: f64,
    /// Current log-prob where the value is taken.
    pub live_logp: f64,
    /// Behaviour log-prob.
    pub old_logp: f64,
    /// Advantage.
    pub advantage: f64,
    /// Rollout log-prob (token-level TIS).
    pub rollout_logp: Option<f64>,
    /// Reference log-prob (KL penalty).
    pub ref_logp: Option<f64>,
    /// Current entropy where the value is taken (entropy bonus).
    pub live_entropy: Option<f64>,
}

/// Which branch of a clipped objective is active for a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ClipSide {
    /// No clip.
    None,
    /// The lower clip (`A < 0`, ratio below `1 - eps_low`; CISPO: weight raised).
    Low,
    /// The upper clip (`A > 0`, ratio above `1 + eps_high`; CISPO: weight lowered).
    High,
    /// The dual clip.
    Dual,
}

/// One token's weighted loss terms, exact gradients and diagnostics.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TokenTerms {
    /// `w * tis * policy_value`.
    pub policy: f64,
    /// `w * beta * kl` (0 without a KL penalty).
    pub kl: f64,
    /// `-w * entropy_coef * H` (0 without an entropy bonus).
    pub entropy: f64,
    /// `d loss / d logp`.
    pub d_logp: f64,
    /// `d loss / d entropy`.
    pub d_entropy: f64,
    /// The active clip branch.
    pub clip: ClipSide,
    /// Whether the TIS weight hit its cap.
    pub tis_truncated: bool,
    /// The token ratio `exp(clamp(logp - logp_old))` at the detached log-prob.
    pub ratio: f64,
    /// `(rho - 1) - clamp(logp - logp_old)`, the token's estimate of `KL(old || current)`.
    pub approx_kl: f64,
    /// The KL estimate to the reference at the detached log-prob, when configured.
    pub kl_estimate: Option<f64>,
}

/// PPO-clip value and gradient for ratio `rho` with derivative `drho` (w.r.t. logp).
fn ppo(rho: f64, drho: f64, a: f64, lo: f64, hi: f64, dual: Option<f64>) -> (f64, f64, ClipSide) {
    let unclipped = -a * rho;
    let clipped = -a * rho.clamp(lo, hi);
    let (mut value, mut grad, mut clip) = if clipped > unclipped {
        let side = if rho < lo {
            ClipSide::Low
        } else {
            ClipSide::High
        };
        (clipped, 0.0, side)
    } else {
        (unclipped, -a * drho, ClipSide::None)
    };
    if let Some(c) = dual
        && a < 0.0
        && value > -c * a
    {
        value = -c * a;
        grad = 0.0;
        clip = ClipSide::Dual;
    }
    (value, grad, clip)
}

/// KL estimate and its derivative w.r.t. logp, for `u = logp - logp_ref`.
fn kl(est: KlEstimator, u: f64, c: f64) -> (f64, f64) {
    match est {
        KlEstimator::K1 => (u, 1.0),
        KlEstimator::K2 => (0.5 * u * u, u),
        KlEstimator::K3 => {
            let e = clamped_exp(-u, c);
            let k = e.value - 1.0 - (-u).clamp(-c, c);
            if k > 10.0 {
                (10.0, 0.0)
            } else if e.inside {
                (k, 1.0 - e.value)
            } else {
                (k, 0.0)
            }
        }
    }
}

/// One token's terms (spec section 9). `config` must be valid
/// ([`ObjectiveConfig::validate`]); inputs a configuration needs that are absent count as
/// neutral (no TIS weight, no KL, no entropy), which callers rule out by validating first.
///
/// Every log-ratio is clamped to `[-log_ratio_clamp, log_ratio_clamp]` before `exp`, and a
/// clamped term is constant, so its gradient is zero: the token ratio, GSPO's sequence ratio
/// (for a sequence whose mean log-ratio lies beyond the clamp every token's policy gradient is
/// zero), the TIS log-ratio (a detached weight anyway) and k3's `-u`; k3 is capped at 10.
#[must_use]
pub fn token_terms(config: &ObjectiveConfig, seq: &SequenceTerms, t: &TokenInput) -> TokenTerms {
    let c = config.log_ratio_clamp;
    let (det, old, a, lv) = (t.logp, t.old_logp, t.advantage, t.live_logp);
    let rho = clamped_exp(det - old, c);
    let drho = if rho.inside { rho.value } else { 0.0 };
    let (value, grad, clip) = match config.loss {
        PolicyLoss::PpoClip {
            eps_low,
            eps_high,
            dual_clip,
        } => {
            let (lo, hi) = (1.0 - eps_low, 1.0 + eps_high);
            let (_, g, clip) = ppo(rho.value, drho, a, lo, hi, dual_clip);
            let rho_live = clamped_exp(lv - old, c).value;
            (ppo(rho_live, 0.0, a, lo, hi, dual_clip).0, g, clip)
        }
        PolicyLoss::Gspo { eps_low, eps_high } => {
            let (lo, hi) = (1.0 - eps_low, 1.0 + eps_high);
            // The token surrogate sg(s) exp(logp - sg(logp)): value s, derivative s, unless
            // the sequence's mean log-ratio was clamped (then s is constant).
            let s = seq.gspo_ratio.unwrap_or(ClampedRatio {
                value: 1.0,
                inside: false,
            });
            let ds = if s.inside { s.value } else { 0.0 };
            let (_, g, clip) = ppo(s.value, ds, a, lo, hi, None);
            let s_live = if s.inside {
                s.value * clamped_exp(lv - det, c).value
            } else {
                s.value
            };
            (ppo(s_live, 0.0, a, lo, hi, None).0, g, clip)
        }
        PolicyLoss::Cispo { bounds } => {
            let wgt = match bounds {
                CispoBounds::Relative { eps_low, eps_high } => {
                    rho.value.clamp(1.0 - eps_low, 1.0 + eps_high)
                }
                CispoBounds::UpperOnly { max } => rho.value.min(max),
            };
            let clip = if wgt < rho.value {
                ClipSide::High
            } else if wgt > rho.value {
                ClipSide::Low
            } else {
                ClipSide::None
            };
            (-wgt * a * lv, -wgt * a, clip)
        }
        PolicyLoss::PolicyGradient => (-a * lv, -a, ClipSide::None),
    };
    let (tis, tis_truncated) = match config.tis {
        Some(TruncatedIs {
            level: TisLevel::Token,
            cap,
        }) => match t.rollout_logp {
            Some(r) => {
                let x = clamped_exp(old - r, c).value;
                (x.min(cap), x >= cap)
            }
            None => (1.0, false),
        },
        Some(TruncatedIs {
            level: TisLevel::Sequence,
            cap,
        }) => {
            let x = seq.sequence_tis.unwrap_or(1.0);
            (x, x >= cap)
        }
        None => (1.0, false),
    };
    let w = seq.weight;
    let mut out = TokenTerms {
        policy: w * tis * value,
        kl: 0.0,
        entropy: 0.0,
        d_logp: w * tis * grad,
        d_entropy: 0.0,
        clip,
        tis_truncated,
        ratio: rho.value,
        approx_kl: rho.value - 1.0 - (det - old).clamp(-c, c),
        kl_estimate: None,
    };
    if let (Some(penalty), Some(r)) = (config.kl, t.ref_logp) {
        let (k_det, dk) = kl(penalty.estimator, det - r, c);
        let k_live = kl(penalty.estimator, lv - r, c).0;
        out.kl_estimate = Some(k_det);
        out.kl = w * penalty.beta * k_live;
        out.d_logp += w * penalty.beta * dk;
    }
    if config.entropy_coef != 0.0 {
        out.entropy = -w * config.entropy_coef * t.live_entropy.unwrap_or(0.0);
        out.d_entropy = -w * config.entropy_coef;
    }
    out
}

//! The objective's configuration: loss variant, KL penalty, entropy bonus, truncated importance
//! sampling, aggregation with its explicit normalizer.

use crate::error::{Error, Result};

/// Bounds of CISPO's detached importance weight.
#[derive(Debug, Clone, Copy, PartialEq)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub enum CispoBounds {
    /// `clip(rho, 1 - eps_low, 1 + eps_high)` (verl's convention).
    Relative {
        /// Lower margin.
        eps_low: f64,
        /// Upper margin.
        eps_high: f64,
    },
    /// `min(rho, max)` (TRL's and Liger's convention; ScaleRL suggests 5.0).
    UpperOnly {
        /// Absolute upper bound.
        max: f64,
    },
}

/// The policy-loss variant. Per token, with ratio `rho = exp(logp - logp_old)` and advantage `A`.
#[derive(Debug, Clone, Copy, PartialEq)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub enum PolicyLoss {
    /// PPO clip, `max(-A rho, -A clip(rho, 1 - eps_low, 1 + eps_high))`, with an optional dual
    /// clip `min(., -c A)` for `A < 0` (`c > 1`).
    PpoClip {
        /// Lower clip margin.
        eps_low: f64,
        /// Upper clip margin (DAPO's clip-higher when above `eps_low`).
        eps_high: f64,
        /// Dual-clip bound `c`, if any.
        dual_clip: Option<f64>,
    },
    /// GSPO: the PPO-clip form on the sequence ratio `s = exp(mean_t (logp - logp_old))`, through
    /// the token surrogate `sg(s) exp(logp - sg(logp))` (value `s`, gradient `s` per token).
    Gspo {
        /// Lower clip margin.
        eps_low: f64,
        /// Upper clip margin.
        eps_high: f64,
    },
    /// CISPO: `-sg(clip(rho)) A logp`.
    Cispo {
        /// Clip bounds of the detached weight.
        bounds: CispoBounds,
    },
    /// Plain policy gradient, `-A logp`.
    PolicyGradient,
}

impl Default for PolicyLoss {
    fn default() -> Self {
        Self::PpoClip {
            eps_low: 0.2,
            eps_high: 0.2,
            dual_clip: None,
        }
    }
}

/// KL estimators of `KL(pi || pi_ref)` per token, with `u = logp - logp_ref`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub enum KlEstimator {
    /// `k1 = u`.
    K1,
    /// `k2 = u^2 / 2`.
    K2,
    /// `k3 = exp(-u) - 1 + u` (low variance; `-u` clamped to the log-ratio clamp and the value
    /// to at most 10, as verl).
    K3,
}

/// A KL penalty to a reference policy, added to the loss as `beta * agg(k)`.
#[derive(Debug, Clone, Copy, PartialEq)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct KlPenalty {
    /// The estimator.
    pub estimator: KlEstimator,
    /// The coefficient `beta >= 0`.
    pub beta: f64,
}

/// Truncated importance sampling: the level of the rollout-correction weight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub enum TisLevel {
    /// One weight per token.
    Token,
    /// One weight per sequence, from the summed log-ratio.
    Sequence,
}

/// Off-policy correction from rollout log-probs: the policy loss of each token is multiplied by
/// the detached weight `min(exp(logp_old - logp_rollout), cap)` (token level) or by the
/// sequence's `min(exp(sum_t (logp_old - logp_rollout)), cap)`.
#[derive(Debug, Clone, Copy, PartialEq)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct TruncatedIs {
    /// Token or sequence level.
    pub level: TisLevel,
    /// The cap `C > 0`.
    pub cap: f64,
}

/// How per-token terms are summed into the loss, with the normalizer given explicitly (global
/// over all micro-batches and data-parallel ranks), so that loss and gradient do not depend on
/// how a batch is split.
#[derive(Debug, Clone, Copy, PartialEq)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub enum Aggregation {
    /// `sum_t l_t / tokens` (DAPO's token-mean).
    TokenMean {
        /// Global number of trained tokens.
        tokens: usize,
    },
    /// `sum_i (1 / L_i) sum_t l_it / sequences` (the original GRPO).
    SeqMeanTokenMean {
        /// Global number of sequences.
        sequences: usize,
    },
    /// `sum_i sum_t l_it / sequences`.
    SeqMeanTokenSum {
        /// Global number of sequences.
        sequences: usize,
    },
    /// `sum_t l_t / normalizer` (Dr.GRPO's constant).
    Constant {
        /// The constant, `> 0`.
        normalizer: f64,
    },
}

/// The whole objective. Build with [`ObjectiveConfig::new`] and the `with_*` methods.
#[derive(Debug, Clone, Copy, PartialEq)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[non_exhaustive]
pub struct ObjectiveConfig {
    /// The policy loss.
    pub loss: PolicyLoss,
    /// The aggregation and its normalizer.
    pub aggregation: Aggregation,
    /// KL penalty, if any.
    pub kl: Option<KlPenalty>,
    /// Entropy bonus coefficient: the loss gets `- coef * agg(H)` (0 disables it).
    pub entropy_coef: f64,
    /// Truncated importance sampling, if any.
    pub tis: Option<TruncatedIs>,
    /// Log-ratios are clamped to `[-clamp, clamp]` before every `exp` (default 20, as verl), so
    /// finite inputs never overflow; beyond the clamp the term is constant (zero gradient).
    pub log_ratio_clamp: f64,
}

impl ObjectiveConfig {
    /// A configuration with a loss and an aggregation; no KL, no entropy bonus, no TIS.
    #[must_use]
    pub fn new(loss: PolicyLoss, aggregation: Aggregation) -> Self {
        Self {
            loss,
            aggregation,
            kl: None,
            entropy_coef: 0.0,
            tis: None,
            log_ratio_clamp: 20.0,
        }
    }
    /// Adds a KL penalty.
    #[must_use]
    pub fn with_kl(mut self, kl: KlPenalty) -> Self {
        self.kl = Some(kl);
        self
    }
    /// Sets the entropy bonus coefficient.
    #[must_use]
    pub fn with_entropy_coef(mut self, coef: f64) -> Self {
        self.entropy_coef = coef;
        self
    }
    /// Adds truncated importance sampling.
    #[must_use]
    pub fn with_tis(mut self, tis: TruncatedIs) -> Self {
        self.tis = Some(tis);
        self
    }
    /// Sets the log-ratio clamp.
    #[must_use]
    pub fn with_log_ratio_clamp(mut self, clamp: f64) -> Self {
        self.log_ratio_clamp = clamp;
        self
    }

    /// Checks every field.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] naming the first bad field.
    pub fn validate(&self) -> Result<()> {
        let bad = |field, reason| Err(Error::InvalidConfig { field, reason });
        let margin = |x: f64| x.is_finite() && x >= 0.0;
        match self.loss {
            PolicyLoss::PpoClip {
                eps_low,
                eps_high,
                dual_clip,
            } => {
                if !(margin(eps_low) && margin(eps_high) && eps_low < 1.0) {
                    return bad(
                        "clip margins",
                        "need 0 <= eps_low < 1 and eps_high >= 0, finite",
                    );
                }
                if let Some(c) = dual_clip
                    && !(c.is_finite() && c > 1.0)
                {
                    return bad("dual_clip", "must be finite and > 1");
                }
            }
            PolicyLoss::Gspo { eps_low, eps_high } => {
                if !(margin(eps_low) && margin(eps_high) && eps_low < 1.0) {
                    return bad(
                        "clip margins",
                        "need 0 <= eps_low < 1 and eps_high >= 0, finite",
                    );
                }
            }
            PolicyLoss::Cispo { bounds } => match bounds {
                CispoBounds::Relative { eps_low, eps_high } => {
                    if !(margin(eps_low) && margin(eps_high) && eps_low < 1.0) {
                        return bad(
                            "CISPO margins",
                            "need 0 <= eps_low < 1 and eps_high >= 0, finite",
                        );
                    }
                }
                CispoBounds::UpperOnly { max } => {
                    if !(max.is_finite() && max > 0.0) {
                        return bad("CISPO max", "must be finite and positive");
                    }
                }
            },
            PolicyLoss::PolicyGradient => {}
        }
        match self.aggregation {
            Aggregation::TokenMean { tokens: 0 } => return Err(Error::NoTrainedTokens),
            Aggregation::SeqMeanTokenMean { sequences: 0 }
            | Aggregation::SeqMeanTokenSum { sequences: 0 } => {
                return bad("aggregation sequences", "must be at least 1");
            }
            Aggregation::Constant { normalizer }
                if !(normalizer.is_finite() && normalizer > 0.0) =>
            {
                return bad("aggregation normalizer", "must be finite and positive");
            }
            _ => {}
        }
        if let Some(kl) = self.kl
            && !margin(kl.beta)
        {
            return bad("KL beta", "must be finite and non-negative");
        }
        if !self.entropy_coef.is_finite() {
            return bad("entropy_coef", "must be finite");
        }
        if let Some(tis) = self.tis
            && !(tis.cap.is_finite() && tis.cap > 0.0)
        {
            return bad("TIS cap", "must be finite and positive");
        }
        if !(self.log_ratio_clamp.is_finite()
            && self.log_ratio_clamp > 0.0
            && self.log_ratio_clamp <= 80.0)
        {
            return bad("log_ratio_clamp", "must be in (0, 80]");
        }
        Ok(())
    }
}

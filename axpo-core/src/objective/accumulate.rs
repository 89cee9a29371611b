//! The objective over blocks of tokens: [`ObjectiveAccumulator`] validates the trained tokens
//! once, turns each block of current log-probs (and entropies) into per-token gradients as soon
//! as the block's statistics exist, and sums the loss and metrics in token order, so that a
//! fused training step gets exactly [`evaluate`](super::evaluate)'s numbers.

use super::config::{ObjectiveConfig, PolicyLoss, TisLevel};
use super::token::{ClipSide, SequenceTerms, TokenInput, token_terms};
use super::{LossTerms, ObjectiveMetrics, Real};
use crate::error::{Error, Result, check_finite, check_len};

/// What the objective needs of each trained token besides the current policy's log-prob and
/// entropy, flattened over the sequences of one micro-batch.
#[derive(Debug, Clone, Copy)]
pub struct ObjectiveTokens<'a, F> {
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
}

impl<F: Real> ObjectiveTokens<'_, F> {
    /// Number of tokens.
    #[must_use]
    pub fn len(&self) -> usize {
        self.old_logp.len()
    }

    /// Whether there are no tokens.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.old_logp.is_empty()
    }

    /// Checks the configuration and these inputs against it: the one validation of the
    /// objective's inputs, shared by [`evaluate`](super::evaluate) and every backend's
    /// training step.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] for a bad configuration or a missing input it needs;
    /// [`Error::NoTrainedTokens`] for no tokens; [`Error::LengthMismatch`], [`Error::Shape`]
    /// for inconsistent inputs; [`Error::NonFinite`] for a NaN or infinite input.
    pub fn check(&self, config: &ObjectiveConfig) -> Result<()> {
        config.validate()?;
        let n = self.len();
        if n == 0 {
            return Err(Error::NoTrainedTokens);
        }
        check_len("advantages", n, self.advantages.len())?;
        check_finite("old log-prob", self.old_logp)?;
        check_finite("advantage", self.advantages)?;
        let offs = self.seq_offsets;
        if offs.first() != Some(&0)
            || offs.last() != Some(&n)
            || offs.windows(2).any(|w| w[0] > w[1])
        {
            return Err(Error::Shape {
                op: "objective",
                reason: "seq_offsets must start at 0, end at the token count and not decrease",
            });
        }
        // Every optional input that is given is checked, used or not.
        for (what, x) in [
            ("rollout log-prob", self.rollout_logp),
            ("reference log-prob", self.ref_logp),
        ] {
            if let Some(v) = x {
                check_len(what, n, v.len())?;
                check_finite(what, v)?;
            }
        }
        if config.tis.is_some() && self.rollout_logp.is_none() {
            return Err(missing("rollout log-prob"));
        }
        if config.kl.is_some() && self.ref_logp.is_none() {
            return Err(missing("reference log-prob"));
        }
        Ok(())
    }
}

fn missing(field: &'static str) -> Error {
    Error::InvalidConfig {
        field,
        reason: "required by the configuration but not given",
    }
}

/// The current policy's values for one block of consecutive tokens.
#[derive(Debug, Clone, Copy)]
pub struct BlockValues<'b, F> {
    /// Current log-prob of each token of the block (the gradient point).
    pub logp: &'b [F],
    /// Current entropy of each token (required by an entropy bonus; read by the metrics).
    pub entropy: Option<&'b [F]>,
    /// Where the loss value is taken, when it differs from `logp` (finite-difference checks of
    /// the surrogate loss); `None` in training.
    pub live_logp: Option<&'b [F]>,
    /// Where the entropy term's value is taken, when it differs from `entropy`.
    pub live_entropy: Option<&'b [F]>,
}

impl<'b, F> BlockValues<'b, F> {
    /// The values of a training step: log-probs and (optionally) entropies.
    #[must_use]
    pub fn new(logp: &'b [F], entropy: Option<&'b [F]>) -> Self {
        Self {
            logp,
            entropy,
            live_logp: None,
            live_entropy: None,
        }
    }
}

/// The loss, its terms and the metrics of a whole micro-batch.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ObjectiveSummary {
    /// The loss (this micro-batch's share of the whole batch's).
    pub loss: f64,
    /// Its terms.
    pub terms: LossTerms<f64>,
    /// Diagnostics.
    pub metrics: ObjectiveMetrics,
}

/// The objective of one micro-batch, block by block: build with [`ObjectiveAccumulator::new`],
/// feed consecutive blocks of tokens in order with [`ObjectiveAccumulator::block`] (each gives
/// its tokens' gradients at once), then [`ObjectiveAccumulator::finish`]. Under GSPO a block
/// must hold whole sequences ([`ObjectiveAccumulator::needs_whole_sequences`]).
#[derive(Debug, Clone)]
pub struct ObjectiveAccumulator<'a, F> {
    config: ObjectiveConfig,
    tokens: ObjectiveTokens<'a, F>,
    inv_n: f64,
    next: usize,
    policy: f64,
    kl: f64,
    entropy: f64,
    metrics: ObjectiveMetrics,
}

impl<'a, F: Real> ObjectiveAccumulator<'a, F> {
    /// Validates `config` and `tokens` ([`ObjectiveTokens::check`]).
    ///
    /// # Errors
    /// As [`ObjectiveTokens::check`].
    pub fn new(config: &ObjectiveConfig, tokens: ObjectiveTokens<'a, F>) -> Result<Self> {
        tokens.check(config)?;
        let n = tokens.len();
        Ok(Self {
            config: *config,
            tokens,
            inv_n: 1.0 / n as f64,
            next: 0,
            policy: 0.0,
            kl: 0.0,
            entropy: 0.0,
            metrics: ObjectiveMetrics {
                tokens: n,
                ratio_min: f64::INFINITY,
                ratio_max: f64::NEG_INFINITY,
                ..ObjectiveMetrics::default()
            },
        })
    }

    /// Whether every block must hold whole sequences (GSPO's sequence ratio needs the current
    /// log-probs of the whole sequence).
    #[must_use]
    pub fn needs_whole_sequences(&self) -> bool {
        matches!(self.config.loss, PolicyLoss::Gspo { .. })
    }

    /// The tokens not yet fed.
    #[must_use]
    pub fn remaining(&self) -> usize {
        self.tokens.len() - self.next
    }

    /// Feeds the next `values.logp.len()` tokens and writes their `d loss / d logp` and
    /// `d loss / d entropy` into `d_logp` and `d_entropy` (same length).
    ///
    /// # Errors
    /// [`Error::LengthMismatch`] for a block beyond the tokens or outputs of another length;
    /// [`Error::NonFinite`] for a NaN or infinite value, or an overflowing gradient;
    /// [`Error::InvalidConfig`] if an entropy bonus gets no entropies; [`Error::Shape`] if a
    /// GSPO block splits a sequence.
    pub fn block(
        &mut self,
        values: BlockValues<'_, F>,
        d_logp: &mut [F],
        d_entropy: &mut [F],
    ) -> Result<()> {
        let (r0, len) = (self.next, values.logp.len());
        if len > self.remaining() {
            return Err(Error::LengthMismatch {
                what: "objective block vs remaining tokens",
                expected: self.remaining(),
                got: len,
            });
        }
        check_len("block d_logp", len, d_logp.len())?;
        check_len("block d_entropy", len, d_entropy.len())?;
        check_finite("log-prob", values.logp)?;
        if let Some(live) = values.live_logp {
            check_len("live log-probs", len, live.len())?;
            check_finite("live log-prob", live)?;
        }
        for (what, x) in [
            ("entropy", values.entropy),
            ("live entropy", values.live_entropy),
        ] {
            if let Some(v) = x {
                check_len(what, len, v.len())?;
                check_finite(what, v)?;
            }
        }
        let c = self.config;
        if c.entropy_coef != 0.0 && values.entropy.is_none() {
            return Err(missing("entropy"));
        }
        let r1 = r0 + len;
        let tk = self.tokens;
        let offs = tk.seq_offsets;
        let f = |x: F| x.to_f64();
        let at = |v: &[F], t: usize| f(v[t - r0]);
        let gspo = self.needs_whole_sequences();
        let seq_tis = matches!(c.tis, Some(t) if t.level == TisLevel::Sequence);
        // The sequence holding token r0 (empty sequences before it are skipped by the loop).
        let mut s = offs.partition_point(|&o| o <= r0).saturating_sub(1);
        while s + 1 < offs.len() && offs[s] < r1 {
            let (a0, a1) = (offs[s], offs[s + 1]);
            s += 1;
            let (lo, hi) = (a0.max(r0), a1.min(r1));
            if lo >= hi {
                continue;
            }
            let mut lr_sum = 0.0;
            if gspo {
                if a0 < r0 || a1 > r1 {
                    return Err(Error::Shape {
                        op: "objective",
                        reason: "a GSPO block must hold whole sequences",
                    });
                }
                lr_sum = (a0..a1)
                    .map(|t| at(values.logp, t) - f(tk.old_logp[t]))
                    .sum();
            }
            let rollout_sum = match (seq_tis, tk.rollout_logp) {
                (true, Some(r)) => Some((a0..a1).map(|t| f(tk.old_logp[t]) - f(r[t])).sum::<f64>()),
                _ => None,
            };
            let seq = SequenceTerms::new(&c, a1 - a0, lr_sum, rollout_sum);
            for t in lo..hi {
                let logp = at(values.logp, t);
                let entropy = values.entropy.map(|h| at(h, t));
                let input = TokenInput {
                    logp,
                    live_logp: values.live_logp.map_or(logp, |v| at(v, t)),
                    old_logp: f(tk.old_logp[t]),
                    advantage: f(tk.advantages[t]),
                    rollout_logp: tk.rollout_logp.map(|r| f(r[t])),
                    ref_logp: tk.ref_logp.map(|r| f(r[t])),
                    live_entropy: values.live_entropy.map(|h| at(h, t)).or(entropy),
                };
                let terms = token_terms(&c, &seq, &input);
                let m = &mut self.metrics;
                m.approx_kl += terms.approx_kl * self.inv_n;
                m.ratio_mean += terms.ratio * self.inv_n;
                m.ratio_min = m.ratio_min.min(terms.ratio);
                m.ratio_max = m.ratio_max.max(terms.ratio);
                match terms.clip {
                    ClipSide::None => {}
                    ClipSide::Low => m.clipped_low += 1,
                    ClipSide::High => m.clipped_high += 1,
                    ClipSide::Dual => m.dual_clipped += 1,
                }
                m.tis_truncated += usize::from(terms.tis_truncated);
                if let Some(k) = terms.kl_estimate {
                    m.kl_mean += k * self.inv_n;
                }
                if let Some(h) = entropy {
                    m.entropy_mean += h * self.inv_n;
                }
                self.policy += terms.policy;
                self.kl += terms.kl;
                self.entropy += terms.entropy;
                d_logp[t - r0] = F::of(terms.d_logp);
                d_entropy[t - r0] = F::of(terms.d_entropy);
            }
        }
        check_finite("objective gradient (overflow)", d_logp)?;
        check_finite("objective entropy gradient (overflow)", d_entropy)?;
        self.next = r1;
        Ok(())
    }

    /// The loss, its terms and the metrics, once every token has been fed.
    ///
    /// # Errors
    /// [`Error::LengthMismatch`] if tokens remain; [`Error::NonFinite`] if the loss or a
    /// metric overflowed.
    pub fn finish(self) -> Result<ObjectiveSummary> {
        check_len("objective tokens fed", self.tokens.len(), self.next)?;
        let loss = self.policy + self.kl + self.entropy;
        check_finite(
            "objective loss (overflow)",
            &[loss, self.policy, self.kl, self.entropy],
        )?;
        let m = self.metrics;
        check_finite(
            "objective metrics (overflow)",
            &[
                m.approx_kl,
                m.ratio_mean,
                m.ratio_min,
                m.ratio_max,
                m.kl_mean,
                m.entropy_mean,
            ],
        )?;
        Ok(ObjectiveSummary {
            loss,
            terms: LossTerms {
                policy: self.policy,
                kl: self.kl,
                entropy: self.entropy,
            },
            metrics: m,
        })
    }
}

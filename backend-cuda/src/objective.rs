//! The objective's per-token loss and gradient on the device (`objective.cu`), its parameters,
//! the per-token weights of an aggregation, and a host reference of the kernel's arithmetic.
//!
//! The device kernel covers every configuration whose per-token gradient needs no reduction
//! over a sequence: PPO-clip (with or without dual clip), CISPO (both bounds), plain policy
//! gradient, token-level truncated importance sampling, a KL penalty (k1, k2, k3) and an
//! entropy bonus, with any [`Aggregation`] (the aggregation becomes a per-token weight). GSPO
//! and sequence-level TIS need a sequence reduction first; they are refused with
//! [`Error::InvalidConfig`] and stay on the host ([`axpo_core::objective::evaluate`]).

use axpo_core::backend::{BufferOps, DType, DeviceBuffer};
use axpo_core::objective::{
    Aggregation, CispoBounds, KlEstimator, ObjectiveConfig, PolicyLoss, TisLevel,
};
use axpo_core::{Error, Result};

use crate::buffer::CudaBuffer;
use crate::device::Cuda;

/// The kernel parameters (`ObjectiveParams` of kernels/common.cuh, field for field).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ObjectiveParams {
    /// 0 PPO-clip, 1 CISPO relative, 2 CISPO upper-only, 3 policy gradient.
    pub loss: u32,
    /// 0 none, 1 k1, 2 k2, 3 k3.
    pub kl: u32,
    /// PPO dual clip present.
    pub has_dual: u32,
    /// Token-level TIS present.
    pub tis: u32,
    /// Lower margin.
    pub eps_low: f64,
    /// Upper margin.
    pub eps_high: f64,
    /// Dual-clip bound.
    pub dual_clip: f64,
    /// CISPO upper bound.
    pub cispo_max: f64,
    /// KL coefficient.
    pub kl_beta: f64,
    /// Entropy bonus coefficient.
    pub entropy_coef: f64,
    /// TIS cap.
    pub tis_cap: f64,
    /// Log-ratio clamp.
    pub clamp: f64,
}

impl ObjectiveParams {
    /// The kernel parameters of a configuration.
    ///
    /// # Errors
    /// The configuration's own validation errors; [`Error::InvalidConfig`] for GSPO and
    /// sequence-level TIS, which need a reduction over each sequence.
    pub fn from_config(config: &ObjectiveConfig) -> Result<Self> {
        config.validate()?;
        let mut p = Self {
            loss: 0,
            kl: 0,
            has_dual: 0,
            tis: 0,
            eps_low: 0.0,
            eps_high: 0.0,
            dual_clip: 0.0,
            cispo_max: 0.0,
            kl_beta: 0.0,
            entropy_coef: config.entropy_coef,
            tis_cap: 0.0,
            clamp: config.log_ratio_clamp,
        };
        match config.loss {
            PolicyLoss::PpoClip {
                eps_low,
                eps_high,
                dual_clip,
            } => {
                p.loss = 0;
                p.eps_low = eps_low;
                p.eps_high = eps_high;
                if let Some(c) = dual_clip {
                    p.has_dual = 1;
                    p.dual_clip = c;
                }
            }
            PolicyLoss::Cispo {
                bounds: CispoBounds::Relative { eps_low, eps_high },
            } => {
                p.loss = 1;
                p.eps_low = eps_low;
                p.eps_high = eps_high;
            }
            PolicyLoss::Cispo {
                bounds: CispoBounds::UpperOnly { max },
            } => {
                p.loss = 2;
                p.cispo_max = max;
            }
            PolicyLoss::PolicyGradient => p.loss = 3,
            PolicyLoss::Gspo { .. } => {
                return Err(Error::InvalidConfig {
                    field: "loss",
                    reason: "GSPO needs a per-sequence ratio: evaluate it on the host",
                });
            }
        }
        if let Some(kl) = config.kl {
            p.kl = match kl.estimator {
                KlEstimator::K1 => 1,
                KlEstimator::K2 => 2,
                KlEstimator::K3 => 3,
            };
            p.kl_beta = kl.beta;
        }
        if let Some(tis) = config.tis {
            if tis.level == TisLevel::Sequence {
                return Err(Error::InvalidConfig {
                    field: "tis",
                    reason: "sequence-level TIS needs a per-sequence weight: evaluate it on \
                             the host",
                });
            }
            p.tis = 1;
            p.tis_cap = tis.cap;
        }
        Ok(p)
    }
}

/// The weight `w_t` of every token under an aggregation (the loss is `sum_t w_t l_t`).
///
/// # Errors
/// [`Error::Shape`] if `seq_offsets` does not start at 0, end at `tokens` and stay
/// non-decreasing.
pub fn token_weights(
    aggregation: Aggregation,
    seq_offsets: &[usize],
    tokens: usize,
) -> Result<Vec<f32>> {
    if seq_offsets.first() != Some(&0)
        || seq_offsets.last() != Some(&tokens)
        || seq_offsets.windows(2).any(|w| w[0] > w[1])
    {
        return Err(Error::Shape {
            op: "objective",
            reason: "seq_offsets must start at 0, end at the token count and not decrease",
        });
    }
    let mut w = vec![0.0f32; tokens];
    for s in seq_offsets.windows(2) {
        let len = s[1] - s[0];
        if len == 0 {
            continue;
        }
        let wt = match aggregation {
            Aggregation::TokenMean { tokens } => 1.0 / tokens as f64,
            Aggregation::SeqMeanTokenMean { sequences } => 1.0 / (sequences as f64 * len as f64),
            Aggregation::SeqMeanTokenSum { sequences } => 1.0 / sequences as f64,
            Aggregation::Constant { normalizer } => 1.0 / normalizer,
        };
        w[s[0]..s[1]].fill(wt as f32);
    }
    Ok(w)
}

/// One token's result: weighted loss contribution, `d loss / d logp`, `d loss / d entropy`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TokenResult {
    /// The token's contribution to the loss.
    pub loss: f64,
    /// `d loss / d logp`.
    pub d_logp: f64,
    /// `d loss / d entropy`.
    pub d_entropy: f64,
}

/// The per-token inputs of one token.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TokenInputs {
    /// Current log-prob.
    pub logp: f64,
    /// Behaviour log-prob.
    pub old_logp: f64,
    /// Advantage.
    pub advantage: f64,
    /// Aggregation weight.
    pub weight: f64,
    /// Rollout log-prob (TIS), 0 if unused.
    pub rollout_logp: f64,
    /// Reference log-prob (KL), 0 if unused.
    pub ref_logp: f64,
    /// Entropy (entropy bonus), 0 if unused.
    pub entropy: f64,
}

fn clamped_exp(x: f64, c: f64) -> (f64, bool) {
    if x > c {
        (c.exp(), false)
    } else if x < -c {
        ((-c).exp(), false)
    } else {
        (x.exp(), true)
    }
}

/// The host mirror of `token_objective` in kernels/common.cuh, statement for statement, so
/// that the kernel's arithmetic is checked against `axpo_core::objective::evaluate` without a
/// device.
#[must_use]
pub fn token_reference(p: &ObjectiveParams, t: &TokenInputs) -> TokenResult {
    let c = p.clamp;
    let (rho, inside) = clamped_exp(t.logp - t.old_logp, c);
    let drho = if inside { rho } else { 0.0 };
    let a = t.advantage;
    let (value, grad) = match p.loss {
        0 => {
            let (lo, hi) = (1.0 - p.eps_low, 1.0 + p.eps_high);
            let unclipped = -a * rho;
            let clipped = -a * rho.clamp(lo, hi);
            let (mut v, mut gf) = if clipped > unclipped {
                (clipped, 0.0)
            } else {
                (unclipped, 1.0)
            };
            if p.has_dual != 0 && a < 0.0 && v > -p.dual_clip * a {
                v = -p.dual_clip * a;
                gf = 0.0;
            }
            (v, if gf > 0.0 { -a * drho } else { 0.0 })
        }
        1 | 2 => {
            let w = if p.loss == 1 {
                rho.clamp(1.0 - p.eps_low, 1.0 + p.eps_high)
            } else {
                rho.min(p.cispo_max)
            };
            (-w * a * t.logp, -w * a)
        }
        _ => (-a * t.logp, -a),
    };
    let tis = if p.tis != 0 {
        clamped_exp(t.old_logp - t.rollout_logp, c).0.min(p.tis_cap)
    } else {
        1.0
    };
    let mut out = TokenResult {
        loss: t.weight * tis * value,
        d_logp: t.weight * tis * grad,
        d_entropy: 0.0,
    };
    if p.kl != 0 {
        let u = t.logp - t.ref_logp;
        let (k, dk) = match p.kl {
            1 => (u, 1.0),
            2 => (0.5 * u * u, u),
            _ => {
                let (e, in3) = clamped_exp(-u, c);
                let x = (-u).clamp(-c, c);
                let k = e - 1.0 - x;
                if k > 10.0 {
                    (10.0, 0.0)
                } else {
                    (k, if in3 { 1.0 - e } else { 0.0 })
                }
            }
        };
        out.loss += t.weight * p.kl_beta * k;
        out.d_logp += t.weight * p.kl_beta * dk;
    }
    if p.entropy_coef != 0.0 {
        out.loss -= t.weight * p.entropy_coef * t.entropy;
        out.d_entropy = -t.weight * p.entropy_coef;
    }
    out
}

/// Per-token objective inputs held on the host (uploaded by the device methods).
#[derive(Debug, Clone, Copy)]
pub struct ObjectiveTokens<'a> {
    /// Behaviour log-probs.
    pub old_logp: &'a [f32],
    /// Advantages.
    pub advantages: &'a [f32],
    /// Sequence boundaries (`[0, ..., tokens]`).
    pub seq_offsets: &'a [usize],
    /// Rollout log-probs, for truncated importance sampling.
    pub rollout_logp: Option<&'a [f32]>,
    /// Reference log-probs, for a KL penalty.
    pub ref_logp: Option<&'a [f32]>,
}

impl ObjectiveTokens<'_> {
    /// Checks lengths against `n` tokens and the configuration's needs.
    ///
    /// # Errors
    /// [`Error::LengthMismatch`], [`Error::InvalidConfig`] for a missing optional input.
    pub fn check(&self, n: usize, config: &ObjectiveConfig) -> Result<()> {
        let len = |what, got: usize| {
            if got == n {
                Ok(())
            } else {
                Err(Error::LengthMismatch {
                    what,
                    expected: n,
                    got,
                })
            }
        };
        len("old log-probs", self.old_logp.len())?;
        len("advantages", self.advantages.len())?;
        if let Some(r) = self.rollout_logp {
            len("rollout log-probs", r.len())?;
        } else if config.tis.is_some() {
            return Err(Error::InvalidConfig {
                field: "rollout log-prob",
                reason: "required by the configuration but not given",
            });
        }
        if let Some(r) = self.ref_logp {
            len("reference log-probs", r.len())?;
        } else if config.kl.is_some() {
            return Err(Error::InvalidConfig {
                field: "reference log-prob",
                reason: "required by the configuration but not given",
            });
        }
        Ok(())
    }
}

/// What [`Cuda::objective_tokens`] returns: per-token f32 device buffers.
#[derive(Debug)]
pub struct TokenObjectiveBuffers {
    /// Each token's weighted contribution to the loss.
    pub loss: CudaBuffer,
    /// `d loss / d logp`.
    pub d_logp: CudaBuffer,
    /// `d loss / d entropy`.
    pub d_entropy: CudaBuffer,
}

impl Cuda {
    /// The objective's per-token loss and gradients on the device, from the current log-probs
    /// (and entropies) already there, e.g. the outputs of `token_stats`.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] for GSPO or sequence-level TIS (host only) or a missing input,
    /// [`Error::LengthMismatch`] / [`Error::Shape`] for inconsistent inputs, a backend error if
    /// a transfer or launch fails.
    pub fn objective_tokens(
        &self,
        config: &ObjectiveConfig,
        logp: &CudaBuffer,
        entropy: Option<&CudaBuffer>,
        tokens: &ObjectiveTokens<'_>,
    ) -> Result<TokenObjectiveBuffers> {
        let params = ObjectiveParams::from_config(config)?;
        let n = logp.len();
        if logp.dtype() != DType::F32 {
            return Err(Error::UnsupportedDType {
                op: "objective",
                dtype: logp.dtype(),
                backend: "cuda",
            });
        }
        tokens.check(n, config)?;
        if config.entropy_coef != 0.0 && entropy.is_none() {
            return Err(Error::InvalidConfig {
                field: "entropy",
                reason: "required by the configuration but not given",
            });
        }
        let weights = token_weights(config.aggregation, tokens.seq_offsets, n)?;
        let old = self.upload_f32(tokens.old_logp)?;
        let adv = self.upload_f32(tokens.advantages)?;
        let w = self.upload_f32(&weights)?;
        let rollout = tokens
            .rollout_logp
            .map(|r| self.upload_f32(r))
            .transpose()?;
        let reference = tokens.ref_logp.map(|r| self.upload_f32(r)).transpose()?;
        let out = TokenObjectiveBuffers {
            loss: self.zeros(DType::F32, n)?,
            d_logp: self.zeros(DType::F32, n)?,
            d_entropy: self.zeros(DType::F32, n)?,
        };
        let d = |b: &CudaBuffer| b.dev(self, 0);
        self.k_objective_tokens(
            n,
            params,
            [d(logp)?, d(&old)?, d(&adv)?, d(&w)?],
            rollout.as_ref().map(d).transpose()?,
            reference.as_ref().map(d).transpose()?,
            entropy.map(d).transpose()?,
            [d(&out.loss)?, d(&out.d_logp)?, d(&out.d_entropy)?],
        )?;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axpo_core::objective::{KlPenalty, ObjectiveInputs, TruncatedIs, evaluate};

    /// A small deterministic generator (no external crates needed for these tests).
    struct Lcg(u64);
    impl Lcg {
        fn next(&mut self) -> f64 {
            self.0 = self
                .0
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            ((self.0 >> 11) as f64) / ((1u64 << 53) as f64)
        }
        fn range(&mut self, lo: f64, hi: f64) -> f64 {
            lo + (hi - lo) * self.next()
        }
    }

    fn configs() -> Vec<ObjectiveConfig> {
        let agg = [
            Aggregation::TokenMean { tokens: 40 },
            Aggregation::SeqMeanTokenMean { sequences: 5 },
            Aggregation::SeqMeanTokenSum { sequences: 3 },
            Aggregation::Constant { normalizer: 7.5 },
        ];
        let losses = [
            PolicyLoss::default(),
            PolicyLoss::PpoClip {
                eps_low: 0.2,
                eps_high: 0.28,
                dual_clip: Some(3.0),
            },
            PolicyLoss::Cispo {
                bounds: CispoBounds::Relative {
                    eps_low: 0.3,
                    eps_high: 0.2,
                },
            },
            PolicyLoss::Cispo {
                bounds: CispoBounds::UpperOnly { max: 5.0 },
            },
            PolicyLoss::PolicyGradient,
        ];
        let mut out = Vec::new();
        for (i, l) in losses.iter().enumerate() {
            let a = agg[i % agg.len()];
            out.push(ObjectiveConfig::new(*l, a));
            out.push(
                ObjectiveConfig::new(*l, a)
                    .with_kl(KlPenalty {
                        estimator: [KlEstimator::K1, KlEstimator::K2, KlEstimator::K3][i % 3],
                        beta: 0.05,
                    })
                    .with_entropy_coef(0.01)
                    .with_tis(TruncatedIs {
                        level: TisLevel::Token,
                        cap: 2.0,
                    }),
            );
        }
        out
    }

    #[test]
    fn host_reference_of_the_kernel_matches_evaluate() {
        let mut rng = Lcg(7);
        let offsets = [0usize, 7, 7, 19, 30, 40];
        let n = 40;
        for config in configs() {
            let p = ObjectiveParams::from_config(&config).expect("supported");
            for _round in 0..5 {
                let logp: Vec<f64> = (0..n).map(|_| rng.range(-6.0, -0.01)).collect();
                let old: Vec<f64> = logp.iter().map(|l| l + rng.range(-0.6, 0.6)).collect();
                let adv: Vec<f64> = (0..n).map(|_| rng.range(-2.0, 2.0)).collect();
                let roll: Vec<f64> = old.iter().map(|l| l + rng.range(-1.0, 1.0)).collect();
                let reference: Vec<f64> = logp.iter().map(|l| l + rng.range(-1.5, 1.5)).collect();
                let ent: Vec<f64> = (0..n).map(|_| rng.range(0.0, 3.0)).collect();
                let inputs = ObjectiveInputs {
                    logp: &logp,
                    old_logp: &old,
                    advantages: &adv,
                    seq_offsets: &offsets,
                    rollout_logp: Some(&roll),
                    ref_logp: Some(&reference),
                    entropy: Some(&ent),
                };
                let want = evaluate(&config, &inputs).expect("valid inputs");
                let w = token_weights(config.aggregation, &offsets, n).expect("offsets");
                let mut loss = 0.0;
                for t in 0..n {
                    let r = token_reference(
                        &p,
                        &TokenInputs {
                            logp: logp[t],
                            old_logp: old[t],
                            advantage: adv[t],
                            weight: f64::from(w[t]),
                            rollout_logp: roll[t],
                            ref_logp: reference[t],
                            entropy: ent[t],
                        },
                    );
                    loss += r.loss;
                    let tol = 1e-6 * (1.0 + want.d_logp[t].abs());
                    assert!(
                        (r.d_logp - want.d_logp[t]).abs() <= tol,
                        "{config:?} token {t}: {} vs {}",
                        r.d_logp,
                        want.d_logp[t]
                    );
                    assert!((r.d_entropy - want.d_entropy[t]).abs() <= 1e-6);
                }
                assert!(
                    (loss - want.loss).abs() <= 1e-6 * (1.0 + want.loss.abs()),
                    "{config:?}: loss {loss} vs {}",
                    want.loss
                );
            }
        }
    }

    #[test]
    fn sequence_level_configurations_are_refused() {
        let gspo = ObjectiveConfig::new(
            PolicyLoss::Gspo {
                eps_low: 0.2,
                eps_high: 0.2,
            },
            Aggregation::TokenMean { tokens: 4 },
        );
        assert!(matches!(
            ObjectiveParams::from_config(&gspo),
            Err(Error::InvalidConfig { field: "loss", .. })
        ));
        let seq_tis =
            ObjectiveConfig::new(PolicyLoss::default(), Aggregation::TokenMean { tokens: 4 })
                .with_tis(TruncatedIs {
                    level: TisLevel::Sequence,
                    cap: 2.0,
                });
        assert!(matches!(
            ObjectiveParams::from_config(&seq_tis),
            Err(Error::InvalidConfig { field: "tis", .. })
        ));
    }

    #[test]
    fn token_weights_follow_the_aggregation() {
        let offs = [0usize, 2, 2, 6];
        let w =
            token_weights(Aggregation::SeqMeanTokenMean { sequences: 3 }, &offs, 6).expect("valid");
        assert!((w[0] - 1.0 / 6.0).abs() < 1e-7);
        assert!((w[5] - 1.0 / 12.0).abs() < 1e-7);
        let w = token_weights(Aggregation::TokenMean { tokens: 10 }, &offs, 6).expect("valid");
        assert!(w.iter().all(|&x| (x - 0.1).abs() < 1e-7));
        assert!(token_weights(Aggregation::TokenMean { tokens: 1 }, &[0, 3], 4).is_err());
        assert!(token_weights(Aggregation::TokenMean { tokens: 1 }, &[1, 4], 4).is_err());
    }

    #[test]
    fn params_layout_matches_the_header() {
        assert_eq!(core::mem::size_of::<ObjectiveParams>(), 80);
        assert_eq!(core::mem::align_of::<ObjectiveParams>(), 8);
        let h = crate::kernels::COMMON_HEADER;
        let start = h
            .find("struct ObjectiveParams {")
            .expect("struct in header");
        let body = &h[start..start + h[start..].find("};").expect("end")];
        let fields: Vec<&str> = body
            .lines()
            .skip(1)
            .filter_map(|l| l.trim().split(';').next())
            .filter(|l| !l.is_empty())
            .map(|l| l.split_whitespace().last().unwrap_or(""))
            .collect();
        assert_eq!(
            fields,
            [
                "loss",
                "kl",
                "has_dual",
                "tis",
                "eps_low",
                "eps_high",
                "dual_clip",
                "cispo_max",
                "kl_beta",
                "entropy_coef",
                "tis_cap",
                "clamp"
            ]
        );
    }
}

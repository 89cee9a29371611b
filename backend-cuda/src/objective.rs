//! The objective's per-token loss and gradient on the device (`objective.cu`), its parameters and
//! the per-token weights of an aggregation. The kernel mirrors the core's one source of the
//! per-token math (`axpo_core::objective::token_terms`); the conformance suite checks the
//! training step built on it against the f64 oracle, which calls the core.
//!
//! The device kernel covers every configuration whose per-token gradient needs no reduction
//! over a sequence: PPO-clip (with or without dual clip), CISPO (both bounds), plain policy
//! gradient, token-level truncated importance sampling, a KL penalty (k1, k2, k3) and an
//! entropy bonus, with any [`Aggregation`] (the aggregation becomes a per-token weight). GSPO
//! and sequence-level TIS need a sequence reduction first; they are refused with
//! [`Error::InvalidConfig`]; the training step then takes the core's default path.

use axpo_core::backend::{BufferOps, DType, DeviceBuffer};
use axpo_core::objective::{
    Aggregation, CispoBounds, KlEstimator, ObjectiveConfig, ObjectiveTokens, PolicyLoss, TisLevel,
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

/// The weight `w_t` of every token under an aggregation ([`Aggregation::weight`], the core's
/// one source), as the f32 vector the kernels read. `seq_offsets` must already be checked
/// ([`ObjectiveTokens::check`]).
#[must_use]
pub fn token_weights(aggregation: Aggregation, seq_offsets: &[usize], tokens: usize) -> Vec<f32> {
    let mut w = vec![0.0f32; tokens];
    for s in seq_offsets.windows(2) {
        if let Some(dst) = w.get_mut(s[0]..s[1]) {
            dst.fill(aggregation.weight(s[1] - s[0]) as f32);
        }
    }
    w
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
        tokens: &ObjectiveTokens<'_, f32>,
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
        tokens.check(config)?;
        axpo_core::check_len("objective log-probs", tokens.len(), n)?;
        if config.entropy_coef != 0.0 && entropy.is_none() {
            return Err(Error::InvalidConfig {
                field: "entropy",
                reason: "required by the configuration but not given",
            });
        }
        let weights = token_weights(config.aggregation, tokens.seq_offsets, n);
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
    use axpo_core::objective::TruncatedIs;

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
        let w = token_weights(Aggregation::SeqMeanTokenMean { sequences: 3 }, &offs, 6);
        assert!((w[0] - 1.0 / 6.0).abs() < 1e-7);
        assert!((w[5] - 1.0 / 12.0).abs() < 1e-7);
        let w = token_weights(Aggregation::TokenMean { tokens: 10 }, &offs, 6);
        assert!(w.iter().all(|&x| (x - 0.1).abs() < 1e-7));
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

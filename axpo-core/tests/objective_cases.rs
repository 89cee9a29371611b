//! Hand-computed cases for every loss variant, KL estimator, aggregation, the entropy bonus and
//! truncated importance sampling. Each expected value is worked out in the comment beside it.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use axpo_core::objective::{
    Aggregation, CispoBounds, KlEstimator, KlPenalty, ObjectiveConfig, ObjectiveInputs, PolicyLoss,
    TisLevel, TruncatedIs, evaluate,
};

const TOL: f64 = 1e-12;

fn close(a: f64, b: f64) {
    assert!((a - b).abs() <= TOL * (1.0 + b.abs()), "{a} != {b}");
}

fn inputs<'a>(
    logp: &'a [f64],
    old: &'a [f64],
    adv: &'a [f64],
    offsets: &'a [usize],
) -> ObjectiveInputs<'a, f64> {
    ObjectiveInputs {
        logp,
        old_logp: old,
        advantages: adv,
        seq_offsets: offsets,
        rollout_logp: None,
        ref_logp: None,
        entropy: None,
    }
}

const PPO: PolicyLoss = PolicyLoss::PpoClip {
    eps_low: 0.2,
    eps_high: 0.2,
    dual_clip: None,
};
const ONE: Aggregation = Aggregation::TokenMean { tokens: 1 };

/// One token with ratio `rho` and advantage `a` under `loss`: (loss, d logp, metrics).
fn one(loss: PolicyLoss, rho: f64, a: f64) -> axpo_core::ObjectiveOutput<f64> {
    let old = [-1.0];
    let logp = [-1.0 + rho.ln()];
    evaluate(
        &ObjectiveConfig::new(loss, ONE),
        &inputs(&logp, &old, &[a], &[0, 1]),
    )
    .unwrap()
}

#[test]
fn ppo_clip_above_with_positive_advantage_is_clipped() {
    // rho = 1.5, A = 1: unclipped -1.5, clipped -1.2; max = -1.2, gradient 0.
    let o = one(PPO, 1.5, 1.0);
    close(o.loss, -1.2);
    close(o.d_logp[0], 0.0);
    assert_eq!(o.metrics.clipped_high, 1);
}

#[test]
fn ppo_clip_above_with_negative_advantage_is_unclipped() {
    // rho = 1.5, A = -1: unclipped 1.5, clipped 1.2; max = 1.5, gradient -A rho = 1.5.
    let o = one(PPO, 1.5, -1.0);
    close(o.loss, 1.5);
    close(o.d_logp[0], 1.5);
    assert_eq!(o.metrics.clipped_high + o.metrics.clipped_low, 0);
}

#[test]
fn ppo_clip_below() {
    // rho = 0.5, A = -1: unclipped 0.5, clipped 0.8; max = 0.8, gradient 0.
    let o = one(PPO, 0.5, -1.0);
    close(o.loss, 0.8);
    close(o.d_logp[0], 0.0);
    assert_eq!(o.metrics.clipped_low, 1);
    // rho = 0.5, A = 1: unclipped -0.5, clipped -0.8; max = -0.5, gradient -0.5.
    let o = one(PPO, 0.5, 1.0);
    close(o.loss, -0.5);
    close(o.d_logp[0], -0.5);
}

#[test]
fn ppo_asymmetric_clip_higher() {
    // eps_high = 0.28: rho = 1.25, A = 1 is inside the range: loss -1.25, gradient -1.25.
    let loss = PolicyLoss::PpoClip {
        eps_low: 0.2,
        eps_high: 0.28,
        dual_clip: None,
    };
    let o = one(loss, 1.25, 1.0);
    close(o.loss, -1.25);
    close(o.d_logp[0], -1.25);
    // rho = 1.3 > 1.28: clipped to -1.28.
    let o = one(loss, 1.3, 1.0);
    close(o.loss, -1.28);
    close(o.d_logp[0], 0.0);
}

#[test]
fn ppo_dual_clip_caps_negative_advantages() {
    // rho = 1.5, A = -1, c = 1.4: PPO gives 1.5; dual clip min(1.5, -c A = 1.4) = 1.4, gradient 0.
    let loss = PolicyLoss::PpoClip {
        eps_low: 0.2,
        eps_high: 0.2,
        dual_clip: Some(1.4),
    };
    let o = one(loss, 1.5, -1.0);
    close(o.loss, 1.4);
    close(o.d_logp[0], 0.0);
    assert_eq!(o.metrics.dual_clipped, 1);
    // Positive advantages are untouched: rho = 1.1, A = 1 -> -1.1.
    close(one(loss, 1.1, 1.0).loss, -1.1);
}

#[test]
fn gspo_uses_the_sequence_ratio() {
    // Two tokens with log-ratios ln 1.2 and 0: s = exp(ln(1.2) / 2) = sqrt(1.2).
    // A = 1, inside the clip range: each token's loss is -s; seq-mean-token-mean over one
    // sequence: loss = -s; gradient per token = (1/2) * (-A s).
    let s = 1.2f64.sqrt();
    let old = [-1.0, -2.0];
    let logp = [-1.0 + 1.2f64.ln(), -2.0];
    let cfg = ObjectiveConfig::new(
        PolicyLoss::Gspo {
            eps_low: 0.2,
            eps_high: 0.2,
        },
        Aggregation::SeqMeanTokenMean { sequences: 1 },
    );
    let o = evaluate(&cfg, &inputs(&logp, &old, &[1.0, 1.0], &[0, 2])).unwrap();
    close(o.loss, -s);
    close(o.d_logp[0], -s / 2.0);
    close(o.d_logp[1], -s / 2.0);
}

#[test]
fn gspo_clips_the_sequence_ratio() {
    // Log-ratios ln 2 and ln 2: s = 2 > 1.2, A = 1: loss -1.2 per token, gradient 0.
    let old = [-1.0, -1.0];
    let logp = [-1.0 + 2f64.ln(), -1.0 + 2f64.ln()];
    let cfg = ObjectiveConfig::new(
        PolicyLoss::Gspo {
            eps_low: 0.2,
            eps_high: 0.2,
        },
        Aggregation::TokenMean { tokens: 2 },
    );
    let o = evaluate(&cfg, &inputs(&logp, &old, &[1.0, 1.0], &[0, 2])).unwrap();
    close(o.loss, -1.2);
    close(o.d_logp[0], 0.0);
}

/// Issue 15's probe: a 2-token sequence whose mean log-ratio (25) lies beyond the log-ratio
/// clamp (20) with A = -1. The sequence ratio is clamped to e^20, so the term is constant and
/// its gradient is 0 (before the fix it was w * (-A) * s = 0.5 * e^20, about 2.4e8, per token);
/// the value stays the clamped one, -A * e^20 * w * 2 = e^20.
#[test]
fn gspo_beyond_the_clamp_has_zero_gradient() {
    let config = ObjectiveConfig::new(
        PolicyLoss::Gspo {
            eps_low: 0.2,
            eps_high: 0.2,
        },
        Aggregation::TokenMean { tokens: 2 },
    );
    let (old, logp) = ([-30.0, -30.0], [-5.0, -5.0]);
    let o = evaluate(&config, &inputs(&logp, &old, &[-1.0, -1.0], &[0, 2])).unwrap();
    assert_eq!(o.d_logp, vec![0.0, 0.0]);
    close(o.loss, 20.0f64.exp());
    // Just inside the clamp the gradient is the sequence ratio's: w * (-A) * s per token.
    let logp = [-10.5, -10.5]; // mean log-ratio 19.5
    let o = evaluate(&config, &inputs(&logp, &old, &[-1.0, -1.0], &[0, 2])).unwrap();
    close(o.d_logp[0], 0.5 * 19.5f64.exp());
    // The surrogate agrees: beyond the clamp, moving the live log-probs leaves the loss fixed.
    let (logp, live) = ([-5.0, -5.0], [-4.0, -6.5]);
    let inp = inputs(&logp, &old, &[-1.0, -1.0], &[0, 2]);
    let at = axpo_core::objective::surrogate_loss(&config, &inp, &live, None).unwrap();
    close(at, 20.0f64.exp());
}

#[test]
fn cispo_relative_and_upper_only() {
    // rho = 1.5, A = 2, logp = -0.5. Relative(0.2, 0.2): w = 1.2, loss = -w A logp = 1.2,
    // gradient -w A = -2.4.
    let old = [-0.5 - 1.5f64.ln()];
    let logp = [-0.5];
    let rel = ObjectiveConfig::new(
        PolicyLoss::Cispo {
            bounds: CispoBounds::Relative {
                eps_low: 0.2,
                eps_high: 0.2,
            },
        },
        ONE,
    );
    let o = evaluate(&rel, &inputs(&logp, &old, &[2.0], &[0, 1])).unwrap();
    close(o.loss, 1.2);
    close(o.d_logp[0], -2.4);
    // UpperOnly(1.3): w = min(1.5, 1.3) = 1.3: loss 1.3, gradient -2.6.
    let up = ObjectiveConfig::new(
        PolicyLoss::Cispo {
            bounds: CispoBounds::UpperOnly { max: 1.3 },
        },
        ONE,
    );
    let o = evaluate(&up, &inputs(&logp, &old, &[2.0], &[0, 1])).unwrap();
    close(o.loss, 1.3);
    close(o.d_logp[0], -2.6);
}

#[test]
fn plain_policy_gradient() {
    // loss = -A logp = -2 * -0.5 = 1, gradient -A = -2 (the ratio plays no part).
    let cfg = ObjectiveConfig::new(PolicyLoss::PolicyGradient, ONE);
    let o = evaluate(&cfg, &inputs(&[-0.5], &[-3.0], &[2.0], &[0, 1])).unwrap();
    close(o.loss, 1.0);
    close(o.d_logp[0], -2.0);
}

#[test]
fn kl_estimators() {
    // u = logp - ref = 0.5; A = 0 so only the KL term counts; beta = 2.
    // k1 = 0.5 (grad 1); k2 = 0.125 (grad 0.5); k3 = e^-0.5 - 1 + 0.5 (grad 1 - e^-0.5).
    let e = (-0.5f64).exp();
    for (est, k, g) in [
        (KlEstimator::K1, 0.5, 1.0),
        (KlEstimator::K2, 0.125, 0.5),
        (KlEstimator::K3, e - 0.5, 1.0 - e),
    ] {
        let cfg = ObjectiveConfig::new(PPO, ONE).with_kl(KlPenalty {
            estimator: est,
            beta: 2.0,
        });
        let mut inp = inputs(&[-1.0], &[-1.0], &[0.0], &[0, 1]);
        inp.ref_logp = Some(&[-1.5]);
        let o = evaluate(&cfg, &inp).unwrap();
        close(o.terms.kl, 2.0 * k);
        close(o.loss, 2.0 * k);
        close(o.d_logp[0], 2.0 * g);
        close(o.metrics.kl_mean, k);
    }
}

#[test]
fn k3_is_capped_at_ten() {
    // u = -12: k3 = e^12 - 1 - 12 > 10, so the value is 10 and the gradient 0.
    let cfg = ObjectiveConfig::new(PPO, ONE).with_kl(KlPenalty {
        estimator: KlEstimator::K3,
        beta: 1.0,
    });
    let mut inp = inputs(&[-13.0], &[-13.0], &[0.0], &[0, 1]);
    inp.ref_logp = Some(&[-1.0]);
    let o = evaluate(&cfg, &inp).unwrap();
    close(o.loss, 10.0);
    close(o.d_logp[0], 0.0);
}

/// Two sequences of lengths 1 and 3 under plain policy gradient with logp = -1, so each token's
/// loss is its advantage: [1] and [1, 2, 3].
fn aggregate(agg: Aggregation) -> axpo_core::ObjectiveOutput<f64> {
    let lp = [-1.0; 4];
    let cfg = ObjectiveConfig::new(PolicyLoss::PolicyGradient, agg);
    evaluate(&cfg, &inputs(&lp, &lp, &[1.0, 1.0, 2.0, 3.0], &[0, 1, 4])).unwrap()
}

#[test]
fn aggregation_modes() {
    // token-mean over 4 tokens: 7 / 4; gradient -A / 4.
    let o = aggregate(Aggregation::TokenMean { tokens: 4 });
    close(o.loss, 1.75);
    close(o.d_logp[3], -3.0 / 4.0);
    // seq-mean-token-mean over 2 sequences: (1 + 6/3) / 2 = 1.5; gradient -A / (2 L_i).
    let o = aggregate(Aggregation::SeqMeanTokenMean { sequences: 2 });
    close(o.loss, 1.5);
    close(o.d_logp[0], -1.0 / 2.0);
    close(o.d_logp[3], -3.0 / 6.0);
    // seq-mean-token-sum over 2 sequences: (1 + 6) / 2 = 3.5; gradient -A / 2.
    let o = aggregate(Aggregation::SeqMeanTokenSum { sequences: 2 });
    close(o.loss, 3.5);
    close(o.d_logp[2], -1.0);
    // constant 10: 7 / 10; gradient -A / 10.
    let o = aggregate(Aggregation::Constant { normalizer: 10.0 });
    close(o.loss, 0.7);
    close(o.d_logp[1], -0.1);
    // The global normalizer, not the micro-batch's size, divides: token-mean over 8 tokens.
    let o = aggregate(Aggregation::TokenMean { tokens: 8 });
    close(o.loss, 7.0 / 8.0);
}

#[test]
fn entropy_bonus() {
    // coef 0.1, H = 2, token-mean over 1 token: entropy term -0.2, d loss / d H = -0.1.
    let cfg = ObjectiveConfig::new(PPO, ONE).with_entropy_coef(0.1);
    let mut inp = inputs(&[-1.0], &[-1.0], &[0.0], &[0, 1]);
    inp.entropy = Some(&[2.0]);
    let o = evaluate(&cfg, &inp).unwrap();
    close(o.terms.entropy, -0.2);
    close(o.loss, -0.2);
    close(o.d_entropy[0], -0.1);
    close(o.metrics.entropy_mean, 2.0);
}

#[test]
fn truncated_importance_sampling() {
    // Token level: old - rollout = ln 3, cap 2: weight min(3, 2) = 2. On-policy PPO with A = 1:
    // policy term -1 * 2 = -2, gradient -A rho * 2 = -2.
    let cfg = ObjectiveConfig::new(PPO, ONE).with_tis(TruncatedIs {
        level: TisLevel::Token,
        cap: 2.0,
    });
    let mut inp = inputs(&[-1.0], &[-1.0], &[1.0], &[0, 1]);
    let roll = [-1.0 - 3f64.ln()];
    inp.rollout_logp = Some(&roll);
    let o = evaluate(&cfg, &inp).unwrap();
    close(o.loss, -2.0);
    close(o.d_logp[0], -2.0);
    assert_eq!(o.metrics.tis_truncated, 1);
    // Sequence level: two tokens with old - rollout = ln 1.5 each: weight min(2.25, 2) = 2 on
    // both; with a cap of 3 the weight is 2.25.
    for (cap, w) in [(2.0, 2.0), (3.0, 2.25)] {
        let cfg =
            ObjectiveConfig::new(PPO, Aggregation::TokenMean { tokens: 2 }).with_tis(TruncatedIs {
                level: TisLevel::Sequence,
                cap,
            });
        let lp = [-1.0, -1.0];
        let roll = [-1.0 - 1.5f64.ln(), -1.0 - 1.5f64.ln()];
        let mut inp = inputs(&lp, &lp, &[1.0, 1.0], &[0, 2]);
        inp.rollout_logp = Some(&roll);
        let o = evaluate(&cfg, &inp).unwrap();
        close(o.loss, -w);
        close(o.d_logp[1], -w / 2.0);
    }
}

#[test]
fn metrics_on_policy() {
    // logp == old: ratio 1 everywhere, approx KL 0, no clipping.
    let lp = [-0.3, -2.0, -1.1];
    let o = evaluate(
        &ObjectiveConfig::new(PPO, Aggregation::TokenMean { tokens: 3 }),
        &inputs(&lp, &lp, &[1.0, -1.0, 0.5], &[0, 3]),
    )
    .unwrap();
    close(o.metrics.ratio_mean, 1.0);
    close(o.metrics.approx_kl, 0.0);
    assert_eq!(o.metrics.clip_fraction(), 0.0);
}

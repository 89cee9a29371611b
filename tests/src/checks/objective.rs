//! The training step's op family: `linear_objective` (hidden states + head matrix + trained
//! tokens in; loss, metrics, per-token statistics, `d hidden`, `d W` out) against the naive f64
//! oracle, which is the core's one source of the per-token math (`axpo_core::objective`) on
//! f64 logits.
//!
//! Per case the check compares, on the backend under test:
//! - the per-token log-probs and entropies with the oracle's statistics (the `linear_token_stats`
//!   allowance);
//! - the loss, its terms and the metrics with `evaluate::<f64>` at the backend's own
//!   statistics (both are f64 host sums of the same per-token terms: 1e-9 relative);
//! - `d hidden` and `d W` with the oracle's chain (`dZ` from the per-token gradients at the
//!   backend's statistics, then the two products in f64), within the backward's allowance;
//! - a sample of `d hidden` and `d W` entries with central finite differences of the whole f64
//!   objective (the surrogate loss with its stop-gradient quantities held, through the logits),
//!   which checks the oracle's chain too.
//!
//! Cases sweep one token, odd sizes, a vocabulary above 4096, bf16/f16 heads, an empty
//! sequence, every loss (GSPO with blocks of whole sequences and, with a tiny workspace, the
//! two-pass path), every aggregation, KL k1/k2/k3, the entropy bonus, token and sequence TIS,
//! and workspaces from the backend's default down to a few rows per block.

use axpo_core::backend::{Backend, DType, HeadWorkspace, MatRef, Op, StepTokens};
use axpo_core::objective::{
    Aggregation, CispoBounds, KlEstimator, KlPenalty, ObjectiveConfig, ObjectiveInputs,
    ObjectiveOutput, PolicyLoss, TisLevel, TruncatedIs, evaluate, surrogate_loss,
};

use super::logprob::{head, oracle_grad};
use crate::r#gen::{Gen, wide};
use crate::oracle::{self, Dense, RowStats};
use crate::suite::{CheckResult, Compare, Context, expect_err, fail, is_out_of_range, is_shape};
use crate::tolerance::{FD, FD_STEP, HOST_F64, U, logit_slack, stats_terms, tol};

/// `(tokens, hidden width, vocabulary, head element type)`.
const CASES: [(usize, usize, usize, DType); 5] = [
    (1, 1, 1, DType::F32),
    (7, 5, 13, DType::F32),
    (40, 16, 300, DType::Bf16),
    (33, 24, 4099, DType::F32),
    (20, 8, 517, DType::F16),
];

/// Every loss with a different aggregation and extra terms.
fn configs(tokens: usize, sequences: usize) -> Vec<(&'static str, ObjectiveConfig)> {
    let seqs = sequences.max(1);
    let ppo = PolicyLoss::PpoClip {
        eps_low: 0.2,
        eps_high: 0.28,
        dual_clip: None,
    };
    vec![
        (
            "ppo token-mean",
            ObjectiveConfig::new(ppo, Aggregation::TokenMean { tokens }),
        ),
        (
            "ppo dual-clip seq-mean-token-mean k3 entropy token-TIS",
            ObjectiveConfig::new(
                PolicyLoss::PpoClip {
                    eps_low: 0.2,
                    eps_high: 0.2,
                    dual_clip: Some(3.0),
                },
                Aggregation::SeqMeanTokenMean { sequences: seqs },
            )
            .with_kl(KlPenalty {
                estimator: KlEstimator::K3,
                beta: 0.1,
            })
            .with_entropy_coef(0.02)
            .with_tis(TruncatedIs {
                level: TisLevel::Token,
                cap: 1.5,
            }),
        ),
        (
            "cispo relative seq-mean-token-sum k2",
            ObjectiveConfig::new(
                PolicyLoss::Cispo {
                    bounds: CispoBounds::Relative {
                        eps_low: 0.3,
                        eps_high: 0.2,
                    },
                },
                Aggregation::SeqMeanTokenSum { sequences: seqs },
            )
            .with_kl(KlPenalty {
                estimator: KlEstimator::K2,
                beta: 0.05,
            }),
        ),
        (
            "cispo upper-only constant",
            ObjectiveConfig::new(
                PolicyLoss::Cispo {
                    bounds: CispoBounds::UpperOnly { max: 1.1 },
                },
                Aggregation::Constant { normalizer: 37.5 },
            ),
        ),
        (
            "pg token-mean k1 entropy",
            ObjectiveConfig::new(
                PolicyLoss::PolicyGradient,
                Aggregation::TokenMean { tokens },
            )
            .with_kl(KlPenalty {
                estimator: KlEstimator::K1,
                beta: 0.2,
            })
            .with_entropy_coef(-0.01),
        ),
        (
            "gspo seq-mean-token-mean",
            ObjectiveConfig::new(
                PolicyLoss::Gspo {
                    eps_low: 0.05,
                    eps_high: 0.05,
                },
                Aggregation::SeqMeanTokenMean { sequences: seqs },
            ),
        ),
        (
            "ppo sequence-TIS token-mean",
            ObjectiveConfig::new(ppo, Aggregation::TokenMean { tokens }).with_tis(TruncatedIs {
                level: TisLevel::Sequence,
                cap: 2.0,
            }),
        ),
    ]
}

/// Sequence offsets over `n` tokens: up to four sequences, one of them empty when `n >= 2`.
fn offsets(g: &mut Gen, n: usize) -> Vec<usize> {
    if n < 2 {
        return vec![0, n];
    }
    let mut cuts: Vec<usize> = (0..2).map(|_| 1 + g.below(n - 1)).collect();
    cuts.sort_unstable();
    vec![0, cuts[0], cuts[0], cuts[1], n]
}

/// The per-token inputs beside the statistics, drawn around the oracle's log-probs so that
/// ratios sit near 1 with some tokens clipped.
struct Tokens {
    targets: Vec<u32>,
    old: Vec<f32>,
    adv: Vec<f32>,
    rollout: Vec<f32>,
    reference: Vec<f32>,
    offsets: Vec<usize>,
}

impl Tokens {
    fn step(&self) -> StepTokens<'_> {
        StepTokens::new(&self.targets, &self.old, &self.adv, &self.offsets)
            .with_rollout_logp(&self.rollout)
            .with_ref_logp(&self.reference)
    }

    fn inputs<'a>(
        &'a self,
        logp: &'a [f64],
        entropy: &'a [f64],
        wide: &'a Wide,
    ) -> ObjectiveInputs<'a, f64> {
        ObjectiveInputs {
            logp,
            old_logp: &wide.old,
            advantages: &wide.adv,
            seq_offsets: &self.offsets,
            rollout_logp: Some(&wide.rollout),
            ref_logp: Some(&wide.reference),
            entropy: Some(entropy),
        }
    }
}

/// The token inputs widened to f64.
struct Wide {
    old: Vec<f64>,
    adv: Vec<f64>,
    rollout: Vec<f64>,
    reference: Vec<f64>,
}

fn draw_tokens(g: &mut Gen, stats: &[RowStats], targets: Vec<u32>) -> (Tokens, Wide) {
    let n = targets.len();
    let near = |g: &mut Gen, x: f64, r: f64| (x + (2.0 * g.unit() - 1.0) * r) as f32;
    let old: Vec<f32> = stats.iter().map(|s| near(g, s.logp, 0.4)).collect();
    let rollout: Vec<f32> = old.iter().map(|&o| near(g, f64::from(o), 0.5)).collect();
    let reference: Vec<f32> = stats.iter().map(|s| near(g, s.logp, 0.5)).collect();
    let adv = g.f32s(n, 1.0);
    let offsets = offsets(g, n);
    let wide_t = Wide {
        old: wide(&old),
        adv: wide(&adv),
        rollout: wide(&rollout),
        reference: wide(&reference),
    };
    (
        Tokens {
            targets,
            old,
            adv,
            rollout,
            reference,
            offsets,
        },
        wide_t,
    )
}

/// The objective of the f64 oracle as a function of the hidden states and head matrix: logits,
/// statistics, then the core's surrogate loss with its stop-gradient quantities held at
/// `detached`.
fn oracle_loss(
    config: &ObjectiveConfig,
    tokens: &Tokens,
    wt: &Wide,
    detached: (&[f64], &[f64]),
    logits: &Dense,
) -> f64 {
    let (mut lp, mut en) = (Vec::new(), Vec::new());
    for r in 0..logits.rows {
        let s = oracle::row_stats(
            &logits.data[r * logits.cols..(r + 1) * logits.cols],
            tokens.targets[r] as usize,
        );
        lp.push(s.logp);
        en.push(s.entropy);
    }
    let inputs = tokens.inputs(detached.0, detached.1, wt);
    surrogate_loss(config, &inputs, &lp, Some(&en)).unwrap_or(f64::NAN)
}

fn close_f64(case: &str, what: &str, got: f64, want: f64) -> CheckResult {
    if (got - want).abs() <= HOST_F64 * (1.0 + want.abs()) {
        Ok(())
    } else {
        fail(case, format!("{what}: got {got:e}, oracle {want:e}"))
    }
}

/// The loss, terms and metrics of the backend against `evaluate` at its own statistics.
fn compare_summary(
    case: &str,
    got: &axpo_core::backend::StepOutput<impl Sized>,
    want: &ObjectiveOutput<f64>,
) -> CheckResult {
    close_f64(case, "loss", got.loss, want.loss)?;
    close_f64(case, "policy term", got.terms.policy, want.terms.policy)?;
    close_f64(case, "kl term", got.terms.kl, want.terms.kl)?;
    close_f64(case, "entropy term", got.terms.entropy, want.terms.entropy)?;
    let (m, w) = (&got.metrics, &want.metrics);
    let counts = [
        (m.tokens, w.tokens),
        (m.clipped_low, w.clipped_low),
        (m.clipped_high, w.clipped_high),
        (m.dual_clipped, w.dual_clipped),
        (m.tis_truncated, w.tis_truncated),
    ];
    if counts.iter().any(|(a, b)| a != b) {
        return fail(case, format!("metric counts differ: {m:?} vs {w:?}"));
    }
    for (what, a, b) in [
        ("approx_kl", m.approx_kl, w.approx_kl),
        ("ratio_mean", m.ratio_mean, w.ratio_mean),
        ("ratio_min", m.ratio_min, w.ratio_min),
        ("ratio_max", m.ratio_max, w.ratio_max),
        ("kl_mean", m.kl_mean, w.kl_mean),
        ("entropy_mean", m.entropy_mean, w.entropy_mean),
    ] {
        close_f64(case, what, a, b)?;
    }
    Ok(())
}

/// The step against the oracle on every case, configuration and workspace (see the module
/// docs).
///
/// # Errors
/// A [`crate::suite::Mismatch`] describing the worst element.
#[allow(clippy::too_many_lines)]
pub fn linear_objective<B: Backend>(b: &B) -> CheckResult {
    let mut g = Gen::for_check("linear_objective");
    for (n, hd, v, dtype) in CASES {
        let base = format!("n={n} h={hd} v={v} w={dtype:?}");
        let hm = head(b, &mut g, n, hd, v, dtype, &base)?;
        let targets = g.ids(n, v);
        let ostats: Vec<RowStats> = (0..n)
            .map(|r| oracle::row_stats(&hm.logits.data[r * v..(r + 1) * v], targets[r] as usize))
            .collect();
        let (tokens, wt) = draw_tokens(&mut g, &ostats, targets);
        let seqs = tokens.offsets.len() - 1;
        let hidden = MatRef::strided(&hm.hidden, 2, n, hd, hd + 1).case(&base)?;
        let weight = MatRef::new(&hm.weight, v, hd).case(&base)?;
        let o_logp: Vec<f64> = ostats.iter().map(|s| s.logp).collect();
        let o_ent: Vec<f64> = ostats.iter().map(|s| s.entropy).collect();
        // A few rows per block on the CPU backends (3 rows of f32 logits and gradients), and a
        // budget below one row, which every backend must still serve.
        let workspaces = [
            HeadWorkspace::BackendDefault,
            HeadWorkspace::Bytes(3 * v * 8),
            HeadWorkspace::Bytes(1),
        ];
        for (name, config) in configs(n, seqs) {
            for ws in workspaces {
                let case = format!("{base} {name} {ws:?}");
                let out = b
                    .linear_objective(hidden, weight, &tokens.step(), &config, ws)
                    .case(&case)?;
                // Statistics.
                let slack = logit_slack(hd, hm.max_dot, v);
                let t_stats = tol(Op::LinearTokenStats, dtype);
                let lp_scale: Vec<f64> = ostats
                    .iter()
                    .map(|s| 1.0 + s.logp.abs().max(s.lse.abs()) + s.lse.abs())
                    .collect();
                Compare::new(&case, "logp")
                    .tol(t_stats)
                    .terms(stats_terms(v))
                    .scale(&lp_scale)
                    .slack(slack)
                    .run(&out.logp, &o_logp)?;
                let ent_scale: Vec<f64> = ostats
                    .iter()
                    .map(|s| 1.0 + s.sum.ln().abs() + (s.weighted / s.sum).abs())
                    .collect();
                Compare::new(&case, "entropy")
                    .tol(t_stats)
                    .terms(stats_terms(v))
                    .scale(&ent_scale)
                    .slack(slack)
                    .run(&out.entropy, &o_ent)?;
                // Loss, terms and metrics: the core's, at the backend's statistics.
                let (b_logp, b_ent) = (wide(&out.logp), wide(&out.entropy));
                let want = evaluate(&config, &tokens.inputs(&b_logp, &b_ent, &wt)).case(&case)?;
                compare_summary(&case, &out, &want)?;
                // d hidden and d W through the oracle's chain at the backend's statistics.
                let gl: Vec<f32> = want.d_logp.iter().map(|&x| x as f32).collect();
                let ge: Vec<f32> = want.d_entropy.iter().map(|&x| x as f32).collect();
                let o_lse: Vec<f64> = ostats.iter().map(|s| s.lse).collect();
                let (dz, dz_scale) =
                    oracle_grad(&hm.logits, &tokens.targets, &o_lse, &b_ent, &gl, Some(&ge));
                // The backend's logits differ from the oracle's by at most delta each and its
                // lse by the statistics' allowance e: dZ moves by at most (2 delta + e) per unit
                // of its scale (plus delta for the probability term).
                let delta = (hd as f64 + 2.0) * U * hm.max_dot;
                let e_lse: Vec<f64> = ostats
                    .iter()
                    .map(|s| t_stats.allowed(1.0 + s.lse.abs(), stats_terms(v)) + slack)
                    .collect();
                let mut dh = vec![0.0; n * hd];
                let mut dh_scale = vec![0.0; n * hd];
                let mut dh_slack = vec![0.0; n * hd];
                let mut dw = vec![0.0; v * hd];
                let mut dw_scale = vec![0.0; v * hd];
                let mut dw_slack = vec![0.0; v * hd];
                for i in 0..n {
                    for vv in 0..v {
                        let k = i * v + vv;
                        let (d, s) = (dz[k], dz_scale[k]);
                        let e = (2.0 * delta + e_lse[i]) * (s + 1.0);
                        for j in 0..hd {
                            let (w, h) = (hm.w.at(vv, j), hm.h.at(i, j));
                            dh[i * hd + j] += d * w;
                            dh_scale[i * hd + j] += (s + d.abs()) * w.abs();
                            dh_slack[i * hd + j] += e * w.abs();
                            dw[vv * hd + j] += d * h;
                            dw_scale[vv * hd + j] += (s + d.abs()) * h.abs();
                            dw_slack[vv * hd + j] += e * h.abs();
                        }
                    }
                }
                let t = tol(Op::LinearObjective, dtype);
                let got_dh = b.download_f32(&out.grads.d_hidden).case(&case)?;
                let got_dw = b.download_f32(&out.grads.d_weight).case(&case)?;
                Compare::new(&case, "d_hidden")
                    .tol(t)
                    .terms(v)
                    .scale(&dh_scale)
                    .slack_each(&dh_slack)
                    .run(&got_dh, &dh)?;
                Compare::new(&case, "d_weight")
                    .tol(t)
                    .terms(n)
                    .scale(&dw_scale)
                    .slack_each(&dw_slack)
                    .run(&got_dw, &dw)?;
                // Finite differences of the whole f64 objective at the oracle's point.
                if ws != HeadWorkspace::BackendDefault {
                    continue; // once per configuration is enough
                }
                let od = evaluate(&config, &tokens.inputs(&o_logp, &o_ent, &wt)).case(&case)?;
                let ogl: Vec<f32> = od.d_logp.iter().map(|&x| x as f32).collect();
                let oge: Vec<f32> = od.d_entropy.iter().map(|&x| x as f32).collect();
                let (odz, _) = oracle_grad(
                    &hm.logits,
                    &tokens.targets,
                    &o_lse,
                    &o_ent,
                    &ogl,
                    Some(&oge),
                );
                let detached = (o_logp.as_slice(), o_ent.as_slice());
                let (mut fd_got, mut fd_want, mut fd_scale) = (Vec::new(), Vec::new(), Vec::new());
                for _ in 0..4.min(n * hd) {
                    let (i, j) = (g.below(n), g.below(hd));
                    let mut hrow: Vec<f64> = (0..hd).map(|c| hm.h.at(i, c)).collect();
                    let fd = oracle::central_difference(&mut hrow, j, FD_STEP, |x| {
                        let mut z = hm.logits.clone();
                        for vv in 0..v {
                            z.data[i * v + vv] = (0..hd).map(|c| x[c] * hm.w.at(vv, c)).sum();
                        }
                        oracle_loss(&config, &tokens, &wt, detached, &z)
                    });
                    let chain: f64 = (0..v).map(|vv| odz[i * v + vv] * hm.w.at(vv, j)).sum();
                    fd_got.push(got_dh[i * hd + j]);
                    fd_got.push(chain as f32);
                    fd_want.extend([fd, fd]);
                    fd_scale.extend([dh_scale[i * hd + j], dh_scale[i * hd + j]]);
                }
                for _ in 0..4.min(v * hd) {
                    let (vv, j) = (g.below(v), g.below(hd));
                    let mut wrow: Vec<f64> = (0..hd).map(|c| hm.w.at(vv, c)).collect();
                    let fd = oracle::central_difference(&mut wrow, j, FD_STEP, |x| {
                        let mut z = hm.logits.clone();
                        for i in 0..n {
                            z.data[i * v + vv] = (0..hd).map(|c| hm.h.at(i, c) * x[c]).sum();
                        }
                        oracle_loss(&config, &tokens, &wt, detached, &z)
                    });
                    let chain: f64 = (0..n).map(|i| odz[i * v + vv] * hm.h.at(i, j)).sum();
                    fd_got.push(got_dw[vv * hd + j]);
                    fd_got.push(chain as f32);
                    fd_want.extend([fd, fd]);
                    fd_scale.extend([dw_scale[vv * hd + j], dw_scale[vv * hd + j]]);
                }
                Compare::new(
                    &case,
                    "d_hidden/d_weight and the oracle's chain (finite differences)",
                )
                .tol(FD)
                .scale(&fd_scale)
                .run(&fd_got, &fd_want)?;
            }
        }
    }
    Ok(())
}

/// Widths that differ, token lists of the wrong length, hidden rows that are not the tokens,
/// targets outside the vocabulary, NaN log-probs, bad offsets and a configuration that needs an
/// input it does not get are errors.
///
/// # Errors
/// A [`crate::suite::Mismatch`] if bad input is accepted.
pub fn objective_rejects_bad_input<B: Backend>(b: &B) -> CheckResult {
    let h = b
        .upload_f32(&[0.5, -0.25, 0.125, 1.0, -1.0, 0.75])
        .case("setup")?;
    let hv = MatRef::new(&h, 3, 2).case("view")?;
    let w = b
        .upload_f32(&[0.25, -0.5, 0.5, 0.1, -0.3, 0.2, 0.7, -0.1, 0.05, 0.4])
        .case("setup")?;
    let w5x2 = MatRef::new(&w, 5, 2).case("view")?;
    let w2x5 = MatRef::new(&w, 2, 5).case("view")?;
    let (old, adv, offs) = ([-1.0f32, -2.0, -1.5], [0.5f32, -0.5, 1.0], [0usize, 2, 3]);
    let config = ObjectiveConfig::new(PolicyLoss::default(), Aggregation::TokenMean { tokens: 3 });
    let ok = StepTokens::new(&[0, 1, 4], &old, &adv, &offs);
    let ws = HeadWorkspace::BackendDefault;
    let run =
        |hid, wt, t: &StepTokens<'_>, c: &ObjectiveConfig| b.linear_objective(hid, wt, t, c, ws);
    // The valid call succeeds (so the errors below are the bad input's).
    run(hv, w5x2, &ok, &config).case("valid input")?;
    expect_err(
        "hidden width 2 vs head width 5",
        run(hv, w2x5, &ok, &config),
        is_shape,
    )?;
    let short = StepTokens::new(&[0, 1], &old, &adv, &offs);
    expect_err(
        "2 targets for 3 tokens",
        run(hv, w5x2, &short, &config),
        is_shape,
    )?;
    let two = hv.rows_range(0, 2).case("view")?;
    expect_err(
        "2 hidden rows for 3 tokens",
        run(two, w5x2, &ok, &config),
        is_shape,
    )?;
    let far = StepTokens::new(&[0, 5, 1], &old, &adv, &offs);
    expect_err(
        "target 5 of vocab 5",
        run(hv, w5x2, &far, &config),
        is_out_of_range,
    )?;
    let nan = [-1.0f32, f32::NAN, -1.5];
    let bad_old = StepTokens::new(&[0, 1, 4], &nan, &adv, &offs);
    expect_err("NaN old log-prob", run(hv, w5x2, &bad_old, &config), |e| {
        matches!(e, axpo_core::Error::NonFinite { .. })
    })?;
    let bad_offs = StepTokens::new(&[0, 1, 4], &old, &adv, &[0, 3, 2]);
    expect_err(
        "decreasing offsets",
        run(hv, w5x2, &bad_offs, &config),
        is_shape,
    )?;
    let kl = config.with_kl(KlPenalty {
        estimator: KlEstimator::K3,
        beta: 0.1,
    });
    expect_err(
        "KL without reference log-probs",
        run(hv, w5x2, &ok, &kl),
        is_shape,
    )?;
    let empty = StepTokens::new(&[], &[], &[], &[0]);
    let none = hv.rows_range(0, 0).case("view")?;
    expect_err("no tokens", run(none, w5x2, &empty, &config), |e| {
        matches!(e, axpo_core::Error::NoTrainedTokens)
    })
}

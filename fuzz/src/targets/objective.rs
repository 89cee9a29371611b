//! The objective on arbitrary floats with any configuration, in f32 and f64.
//!
//! Input: a configuration (every policy loss, aggregation, KL estimator, TIS level; margins,
//! caps, coefficients, normalizers and the log-ratio clamp either in a sane range or from the
//! edge-case floats: NaN, infinities, signed zeros, extremes, subnormals; or, one time in
//! sixteen, any bit patterns through axpo-core's `Arbitrary` impl); up to 24 tokens
//! whose log-probs, old log-probs, advantages, rollout and reference log-probs and entropies
//! are sane or edge-case values, with lengths that match or are off by one; sequence offsets
//! that partition the tokens (empty sequences included) or are broken.
//!
//! Properties:
//! - Errors are typed, and exactly when an independent check of the input says so: an invalid
//!   configuration gives `InvalidConfig` (or `NoTrainedTokens` for a zero token count), no
//!   tokens `NoTrainedTokens`, mismatched lengths `LengthMismatch` (optional inputs included,
//!   used or not), a non-finite input `NonFinite`, bad offsets `Shape`, a missing input the
//!   configuration needs `InvalidConfig`. The only other error is `NonFinite` for an overflowing
//!   result, and never for sane input.
//! - An `Ok` output is finite: loss, the three terms, `d_logp`, `d_entropy` and the metrics.
//!   Finite inputs never give NaN.
//! - `loss = policy + kl + entropy` (to rounding); `d_entropy` is zero without an entropy bonus;
//!   the metrics count at most one event per token, and the ratio statistics lie inside
//!   `[exp(-clamp), exp(clamp)]` with `min <= mean <= max`.
//! - `surrogate_loss` at the same log-probs (a copy, so the live path runs) equals the loss.

use arbitrary::{Result, Unstructured};

use axpo_core::Error;
use axpo_core::objective::{
    Aggregation, CispoBounds, KlEstimator, KlPenalty, ObjectiveConfig, ObjectiveInputs,
    ObjectiveOutput, PolicyLoss, Real, TisLevel, TruncatedIs, evaluate, surrogate_loss,
};

use crate::build;

/// A parameter: from `lo..=hi` when `sane`, otherwise an edge-case f64 half of the time.
fn param(u: &mut Unstructured<'_>, sane: &mut bool, lo: f64, hi: f64) -> Result<f64> {
    if u.ratio(3u8, 4)? {
        build::moderate(u, lo, hi)
    } else {
        let v = build::f64_any(u)?;
        if !(lo..=hi).contains(&v) {
            *sane = false;
        }
        Ok(v)
    }
}

fn config(u: &mut Unstructured<'_>, sane: &mut bool) -> Result<ObjectiveConfig> {
    if u.ratio(1u8, 16)? {
        // Any configuration at all (axpo-core's `Arbitrary` impl: any bit patterns).
        *sane = false;
        return u.arbitrary::<ObjectiveConfig>();
    }
    let loss = match u.int_in_range(0u8..=4)? {
        0 => PolicyLoss::PpoClip {
            eps_low: param(u, sane, 0.0, 0.9)?,
            eps_high: param(u, sane, 0.0, 5.0)?,
            dual_clip: if u.arbitrary()? {
                Some(param(u, sane, 1.01, 10.0)?)
            } else {
                None
            },
        },
        1 => PolicyLoss::Gspo {
            eps_low: param(u, sane, 0.0, 0.9)?,
            eps_high: param(u, sane, 0.0, 5.0)?,
        },
        2 => PolicyLoss::Cispo {
            bounds: CispoBounds::Relative {
                eps_low: param(u, sane, 0.0, 0.9)?,
                eps_high: param(u, sane, 0.0, 5.0)?,
            },
        },
        3 => PolicyLoss::Cispo {
            bounds: CispoBounds::UpperOnly {
                max: param(u, sane, 0.01, 10.0)?,
            },
        },
        _ => PolicyLoss::PolicyGradient,
    };
    let count = |u: &mut Unstructured<'_>, sane: &mut bool| -> Result<usize> {
        Ok(match u.int_in_range(0u8..=9)? {
            0 => {
                *sane = false;
                0
            }
            1 => u.arbitrary::<usize>()?.max(1),
            _ => u.int_in_range(1..=64)?,
        })
    };
    let aggregation = match u.int_in_range(0u8..=3)? {
        0 => Aggregation::TokenMean {
            tokens: count(u, sane)?,
        },
        1 => Aggregation::SeqMeanTokenMean {
            sequences: count(u, sane)?,
        },
        2 => Aggregation::SeqMeanTokenSum {
            sequences: count(u, sane)?,
        },
        _ => Aggregation::Constant {
            normalizer: param(u, sane, 1e-3, 1e3)?,
        },
    };
    let mut c = ObjectiveConfig::new(loss, aggregation);
    if u.arbitrary()? {
        c = c.with_kl(KlPenalty {
            estimator: *u.choose(&[KlEstimator::K1, KlEstimator::K2, KlEstimator::K3])?,
            beta: param(u, sane, 0.0, 10.0)?,
        });
    }
    if u.arbitrary()? {
        c = c.with_entropy_coef(param(u, sane, -10.0, 10.0)?);
    }
    if u.arbitrary()? {
        c = c.with_tis(TruncatedIs {
            level: if u.arbitrary()? {
                TisLevel::Token
            } else {
                TisLevel::Sequence
            },
            cap: param(u, sane, 0.1, 100.0)?,
        });
    }
    if u.arbitrary()? {
        c = c.with_log_ratio_clamp(param(u, sane, 0.01, 20.0)?);
    }
    Ok(c)
}

/// One per-token input: `n` values (or one more or fewer), sane or edge-case.
fn values<F: Real>(
    u: &mut Unstructured<'_>,
    n: usize,
    sane: &mut bool,
    wide: bool,
) -> Result<Vec<F>> {
    let m = match u.int_in_range(0u8..=15)? {
        0 => n + 1,
        1 => n.saturating_sub(1),
        _ => n,
    };
    let edgy = u.ratio(1u8, 3)?;
    let mut v = Vec::with_capacity(m);
    for _ in 0..m {
        let x = if edgy && u.arbitrary()? {
            if wide {
                build::f64_any(u)?
            } else {
                f64::from(build::f32_any(u)?)
            }
        } else {
            build::moderate(u, -50.0, 50.0)?
        };
        if x.is_nan() || x.abs() > 50.0 {
            *sane = false;
        }
        v.push(F::of(x));
    }
    Ok(v)
}

fn offsets(u: &mut Unstructured<'_>, n: usize) -> Result<Vec<usize>> {
    let mut o = vec![0];
    while *o.last().expect("non-empty") < n {
        let last = *o.last().expect("non-empty");
        let step = u.int_in_range(0..=(n - last).min(8))?;
        // Give up on empty steps after a few, so that the loop ends on exhausted input.
        o.push(if o.len() > 2 * n + 2 { n } else { last + step });
    }
    if n == 0 && u.arbitrary()? {
        o.push(0);
    }
    if u.ratio(1u8, 8)? {
        match u.int_in_range(0u8..=3)? {
            0 => o[0] = 1,
            1 => *o.last_mut().expect("non-empty") += 1,
            2 if o.len() > 2 => o.swap(1, 2),
            _ => o.clear(),
        }
    }
    Ok(o)
}

struct Case<F> {
    logp: Vec<F>,
    old: Vec<F>,
    adv: Vec<F>,
    offsets: Vec<usize>,
    rollout: Option<Vec<F>>,
    reference: Option<Vec<F>>,
    entropy: Option<Vec<F>>,
}

fn case<F: Real>(u: &mut Unstructured<'_>, sane: &mut bool, wide: bool) -> Result<Case<F>> {
    let n = u.int_in_range(0..=24)?;
    let opt = |u: &mut Unstructured<'_>, sane: &mut bool| -> Result<Option<Vec<F>>> {
        Ok(if u.ratio(3u8, 4)? {
            Some(values(u, n, sane, wide)?)
        } else {
            None
        })
    };
    Ok(Case {
        logp: values(u, n, sane, wide)?,
        old: values(u, n, sane, wide)?,
        adv: values(u, n, sane, wide)?,
        offsets: offsets(u, n)?,
        rollout: opt(u, sane)?,
        reference: opt(u, sane)?,
        entropy: opt(u, sane)?,
    })
}

/// Every error the input deserves, by name (empty: the input is valid).
fn violations<F: Real>(cfg: &ObjectiveConfig, c: &Case<F>) -> Vec<&'static str> {
    let mut v = Vec::new();
    if let Err(e) = cfg.validate() {
        v.push(if matches!(e, Error::NoTrainedTokens) {
            "NoTrainedTokens"
        } else {
            "InvalidConfig"
        });
    }
    let n = c.logp.len();
    if n == 0 {
        v.push("NoTrainedTokens");
    }
    if c.old.len() != n || c.adv.len() != n {
        v.push("LengthMismatch");
    }
    let finite = |x: &[F]| x.iter().all(|y| y.is_finite());
    if !finite(&c.logp) || !finite(&c.old) || !finite(&c.adv) {
        v.push("NonFinite");
    }
    let o = &c.offsets;
    if o.first() != Some(&0) || o.last() != Some(&n) || o.windows(2).any(|w| w[0] > w[1]) {
        v.push("Shape");
    }
    // An optional input is checked whenever it is given (finding F11, fixed), and must be
    // given when the configuration uses it.
    for (x, used) in [
        (&c.rollout, cfg.tis.is_some()),
        (&c.reference, cfg.kl.is_some()),
        (&c.entropy, cfg.entropy_coef != 0.0),
    ] {
        match x {
            None if used => v.push("InvalidConfig"),
            None => {}
            Some(x) if x.len() != n => v.push("LengthMismatch"),
            Some(x) if !finite(x) => v.push("NonFinite"),
            Some(_) => {}
        }
    }
    v
}

fn name(e: &Error) -> &'static str {
    match e {
        Error::InvalidConfig { .. } => "InvalidConfig",
        Error::NoTrainedTokens => "NoTrainedTokens",
        Error::LengthMismatch { .. } => "LengthMismatch",
        Error::NonFinite { .. } => "NonFinite",
        Error::Shape { .. } => "Shape",
        _ => "other",
    }
}

fn f64of<F: Real>(x: F) -> f64 {
    Real::to_f64(x)
}

/// Runs one input.
pub fn run(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let wide = u.arbitrary::<bool>().unwrap_or(false);
    if wide {
        check::<f64>(&mut u, true);
    } else {
        check::<f32>(&mut u, false);
    }
}

fn check<F: Real>(u: &mut Unstructured<'_>, wide: bool) {
    let mut sane = true;
    let Ok(cfg) = config(u, &mut sane) else {
        return;
    };
    let Ok(c) = case::<F>(u, &mut sane, wide) else {
        return;
    };
    let inputs = ObjectiveInputs {
        logp: &c.logp,
        old_logp: &c.old,
        advantages: &c.adv,
        seq_offsets: &c.offsets,
        rollout_logp: c.rollout.as_deref(),
        ref_logp: c.reference.as_deref(),
        entropy: c.entropy.as_deref(),
    };
    let bad = violations(&cfg, &c);
    let out = match evaluate(&cfg, &inputs) {
        Err(e) => {
            let n = name(&e);
            if bad.is_empty() {
                assert!(
                    n == "NonFinite" && !sane,
                    "evaluate refused a valid{} input: {e:?}",
                    if sane { ", sane" } else { "" }
                );
            } else {
                assert!(bad.contains(&n), "evaluate: {e:?}, expected one of {bad:?}");
            }
            return;
        }
        Ok(out) => out,
    };
    assert!(bad.is_empty(), "evaluate accepted an input with {bad:?}");
    let n = c.logp.len();
    assert_eq!(out.d_logp.len(), n);
    assert_eq!(out.d_entropy.len(), n);
    assert!(out.loss.is_finite(), "Ok with a non-finite loss");
    assert!(
        out.d_logp.iter().all(|g| g.is_finite()),
        "Ok with a non-finite d_logp"
    );
    let terms = [out.terms.policy, out.terms.kl, out.terms.entropy];
    assert!(
        terms.iter().all(|t| t.is_finite()),
        "Ok with a non-finite loss term: {terms:?}"
    );
    assert!(
        out.d_entropy.iter().all(|g| g.is_finite()),
        "Ok with a non-finite d_entropy: {:?}",
        out.d_entropy
    );
    if cfg.entropy_coef == 0.0 {
        assert!(
            out.d_entropy.iter().all(|g| g.is_zero()),
            "d_entropy without a bonus"
        );
    }
    let sum = terms.iter().map(|&t| f64of(t)).sum::<f64>();
    let scale = terms.iter().map(|&t| f64of(t).abs()).fold(1e-30, f64::max);
    let rel = if wide { 1e-12 } else { 1e-6 };
    assert!(
        (f64of(out.loss) - sum).abs() <= rel * scale * 4.0,
        "loss {:?} != sum of terms {terms:?}",
        out.loss
    );
    check_metrics(&cfg, &c, &out);
    // The live path at the same log-probs gives the same loss.
    let live = c.logp.clone();
    match surrogate_loss(&cfg, &inputs, &live, c.entropy.as_deref()) {
        Ok(l) => assert!(
            (f64of(l) - f64of(out.loss)).abs() <= 1e-12 * f64of(out.loss).abs().max(1.0),
            "surrogate_loss {l:?} != evaluate's loss {:?}",
            out.loss
        ),
        Err(e) => panic!("surrogate_loss failed where evaluate succeeded: {e:?}"),
    }
}

fn check_metrics<F: Real>(cfg: &ObjectiveConfig, c: &Case<F>, out: &ObjectiveOutput<F>) {
    let m = &out.metrics;
    let n = c.logp.len();
    assert_eq!(m.tokens, n);
    assert!(
        m.clipped_low + m.clipped_high + m.dual_clipped <= n,
        "{m:?}"
    );
    assert!(m.tis_truncated <= n);
    let all = [
        m.approx_kl,
        m.ratio_mean,
        m.ratio_min,
        m.ratio_max,
        m.kl_mean,
        m.entropy_mean,
    ];
    assert!(
        all.iter().all(|x| x.is_finite()),
        "Ok with non-finite metrics: {m:?}"
    );
    let (lo, hi) = (
        (-cfg.log_ratio_clamp).exp() * (1.0 - 1e-12),
        cfg.log_ratio_clamp.exp() * (1.0 + 1e-12),
    );
    assert!(
        lo <= m.ratio_min && m.ratio_max <= hi,
        "ratio outside the clamp: {m:?}"
    );
    let tol = 1e-9 * m.ratio_max;
    assert!(
        m.ratio_min <= m.ratio_mean + tol && m.ratio_mean <= m.ratio_max + tol,
        "{m:?}"
    );
    assert!(m.approx_kl >= -1e-9 * m.ratio_max, "approx_kl < 0: {m:?}");
}

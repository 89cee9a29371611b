//! Credit assignment, the flattened training tokens, the diagnostics and Pass@k on arbitrary
//! valid batches (branches included).
//!
//! Input: a valid batch (see the planner target), grown by up to three rounds of planning and
//! merging valid answers; an `eps` from the edge-case floats; a micro-batch size; Pass@k counts.
//!
//! Properties, for every estimator (GRPO with group, batch or no std; RLOO) and every credit
//! mode (tree, flat, tail-only):
//! - `assign` fails iff `eps` is negative or not finite, with `InvalidConfig`.
//! - One entry per trajectory, in batch order; roots train from their first policy token;
//!   branches train from their prefix under tree and tail-only credit, from 0 under flat.
//! - Every advantage is finite (the rewards are), or `assign` fails with `NonFinite`, only for
//!   RLOO or GRPO without std division over rewards near `f32::MAX` (finding F2, fixed).
//! - In every normalising set the scored members' advantages sum to zero (to rounding), the
//!   unscored members' are zero, and a set with fewer than two scored members is all zero.
//!   GRPO advantages obey Samuelson's bound: at most `(n - 1) / sqrt(n)` with the set's std, at
//!   most `sqrt(2 (N - 1))` with the std of all `N` scored rewards of the batch (finding F10,
//!   fixed).
//!   Each token's advantage is its set's value: under tree credit a parent's prefix tokens carry
//!   its group advantage and its tail tokens its sibling advantage.
//! - `TrainingTokens::new` fails only with `NoTrainedTokens`, exactly when nothing is trained;
//!   otherwise rows, targets, old log-probs and advantages line up with the batch, sequence
//!   offsets start at 0, end at the token count and strictly increase, and micro-batches
//!   partition the sequences within the token limit (or hold a single longer sequence).
//! - The on-policy objective on those tokens is finite.
//! - `diagnose` gives counts that match the batch and rates in `[0, 1]`.
//! - `pass_at_k` fails iff `k == 0`, `k > n` or `c > n`; otherwise it equals the exact
//!   `1 - C(n - c, k) / C(n, k)`, in `[0, 1]`.

use arbitrary::Unstructured;

use axpo_core::advantage::{SetKind, TrajectoryAdvantage};
use axpo_core::objective::{Aggregation, ObjectiveConfig, ObjectiveInputs, PolicyLoss, evaluate};
use axpo_core::subgroup::Correctness;
use axpo_core::{
    AdvantageConfig, Batch, Credit, Credited, Error, Estimator, Origin, PlanConfig, StdMode,
    TrainingTokens, TrajectoryId, UncertaintyScore, assign, diagnose, mean_pass_at_k, pass_at_k,
    plan,
};

use crate::build;

/// A valid batch with branches: a generated batch grown by up to three rounds of planning (a
/// generous budget, the surprisal score) and merging valid answers.
pub fn batch_with_branches(u: &mut Unstructured<'_>) -> arbitrary::Result<Batch> {
    let mut batch = build::batch(u)?;
    let cfg = PlanConfig::default()
        .with_score(UncertaintyScore::Surprisal)
        .with_resamples_per_prefix(u.int_in_range(1..=4)?)
        .with_prefixes_per_subgroup(u.int_in_range(1..=3)?)
        .with_max_resample_fraction(*u.choose(&[0.25f32, 1.0, 4.0])?)
        .with_max_rounds(u.int_in_range(1..=3)?);
    for _ in 0..u.int_in_range(0..=3)? {
        let Ok(p) = plan(&batch, &cfg, 1) else { break };
        let answers = build::answers(u, &p, &batch)?;
        if p.merge(&mut batch, answers).is_err() {
            break;
        }
    }
    Ok(batch)
}

const ESTIMATORS: [Estimator; 4] = [
    Estimator::Grpo {
        std: StdMode::Group,
    },
    Estimator::Grpo {
        std: StdMode::Batch,
    },
    Estimator::Grpo { std: StdMode::None },
    Estimator::Rloo,
];

const CREDITS: [Credit; 3] = [Credit::Tree, Credit::Flat, Credit::TailOnly];

/// Runs one input.
pub fn run(data: &[u8]) {
    let mut u = Unstructured::new(data);
    pass_at_k_checks(&mut u);
    let Ok(batch) = batch_with_branches(&mut u) else {
        return;
    };
    let eps = match u.int_in_range(0u8..=3).unwrap_or(0) {
        0 => build::f32_any(&mut u).unwrap_or(0.0),
        1 => 0.0,
        _ => 1e-6,
    };
    let max_tokens = u.int_in_range(0..=40usize).unwrap_or(0);
    for estimator in ESTIMATORS {
        for credit in CREDITS {
            let cfg = AdvantageConfig::default()
                .with_estimator(estimator)
                .with_credit(credit)
                .with_eps(eps);
            match assign(&batch, &cfg) {
                Err(Error::NonFinite { .. }) => {
                    // Only an advantage beyond f32 (finding F2, fixed): no division, rewards
                    // near f32::MAX.
                    assert!(eps.is_finite() && eps >= 0.0);
                    assert!(
                        matches!(
                            estimator,
                            Estimator::Rloo | Estimator::Grpo { std: StdMode::None }
                        ) && batch
                            .trajectories()
                            .any(|t| t.reward().score().is_some_and(|r| r.abs() > 1e30)),
                        "{estimator:?}/{credit:?}: NonFinite from moderate rewards"
                    );
                }
                Err(e) => {
                    assert!(
                        !(eps.is_finite() && eps >= 0.0),
                        "assign refused eps = {eps}: {e:?}"
                    );
                    assert!(matches!(e, Error::InvalidConfig { .. }), "{e:?}");
                }
                Ok(c) => {
                    assert!(eps.is_finite() && eps >= 0.0, "assign accepted eps = {eps}");
                    check_credited(&batch, &cfg, &c);
                    check_tokens(&batch, &c, max_tokens);
                    check_diagnostics(&batch, &c);
                }
            }
        }
    }
}

/// Checks the credited batch.
fn check_credited(batch: &Batch, cfg: &AdvantageConfig, c: &Credited) {
    let ts: Vec<_> = batch.trajectories().collect();
    assert_eq!(c.trajectories.len(), ts.len(), "one entry per trajectory");
    for (t, a) in ts.iter().zip(&c.trajectories) {
        assert_eq!(a.trajectory, t.id(), "entries in batch order");
        let n = t.logprobs().len();
        let first = match (cfg.credit, t.origin()) {
            (Credit::Flat, _) | (_, Origin::Root) => 0,
            (_, Origin::Branch { prefix_len, .. }) => t.policy_index(prefix_len),
        };
        assert_eq!(a.first_trained, first, "{}: first trained token", t.id());
        assert_eq!(a.advantages.len(), n - first, "{}: advantage count", t.id());
        assert!(
            a.advantages.iter().all(|x| x.is_finite()),
            "{}: non-finite advantage under {:?}",
            t.id(),
            cfg.estimator
        );
    }
    // Every scored reward of the batch: the values behind the batch std.
    let all_scored = ts.iter().filter(|t| t.reward().score().is_some()).count();
    for set in &c.sets {
        assert!(
            set.members.iter().all(|m| m.1.is_finite()),
            "{:?}: non-finite advantage in {:?}",
            cfg.estimator,
            set
        );
        for m in &set.members {
            if !m.2 {
                assert_eq!(m.1, 0.0, "an unscored member has an advantage");
            }
        }
        let scored: Vec<f64> = set.members.iter().filter(|m| m.2).map(|m| m.1).collect();
        if scored.len() < 2 {
            assert!(
                scored.iter().all(|&a| a == 0.0),
                "a set of one has an advantage"
            );
        }
        // The deviations of nearly equal values lose their digits to rounding (the std can be
        // a few ulps of the values), so the bounds and the zero sum are checked on
        // well-conditioned sets only: spread at least 1e-6 of the magnitude.
        let values: Vec<f64> = set
            .members
            .iter()
            .filter(|m| m.2)
            .map(|m| set_value(batch, set.kind, cfg.credit, m.0))
            .collect();
        let lo = values.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let scale = lo.abs().max(hi.abs());
        if !(values.len() >= 2 && hi - lo >= 1e-6 * scale) {
            continue;
        }
        // Bounds on |A| (Samuelson): a value is at most (n - 1) / sqrt(n) of its set's std from
        // the set's mean, and at most sqrt(2 (N - 1)) of the std of all N scored rewards.
        let n = scored.len() as f64;
        let bound = match cfg.estimator {
            Estimator::Grpo {
                std: StdMode::Group,
            } => (n - 1.0) / n.sqrt(),
            Estimator::Grpo {
                std: StdMode::Batch,
            } => (2.0 * (all_scored as f64 - 1.0)).max(0.0).sqrt(),
            _ => f64::INFINITY,
        };
        if let Some(a) = scored.iter().find(|a| a.abs() > bound * (1.0 + 1e-6)) {
            panic!(
                "{:?}/{:?}, {:?}: |advantage| {a} over the bound {bound}",
                cfg.estimator, cfg.credit, set.kind
            );
        }
        let sum: f64 = scored.iter().sum();
        let mag: f64 = scored.iter().map(|a| a.abs()).sum();
        assert!(
            sum.abs() <= 1e-6 * mag.max(1e-300),
            "{:?}: advantages sum to {sum} (magnitude {mag})",
            set.kind
        );
    }
    for set in &c.sets {
        // Each member's tokens carry the set's value.
        for &(id, adv, _) in &set.members {
            let (_, t) = batch.find(id).expect("member exists");
            let entry = c.get(id).expect("member has an entry");
            let tokens = tokens_of_set(batch, t, entry, set.kind, cfg.credit);
            assert!(
                tokens.iter().all(|&x| x == adv as f32),
                "{id}: tokens of {:?} do not carry its advantage {adv}",
                set.kind
            );
        }
    }
}

/// The value a member enters its set with: its reward, or under tree credit a parent's sibling
/// mean in the group set.
fn set_value(batch: &Batch, kind: SetKind, credit: Credit, id: TrajectoryId) -> f64 {
    let (g, t) = batch.find(id).expect("member exists");
    let reward = |t: &axpo_core::Trajectory| t.reward().score().map(f64::from);
    if kind == SetKind::Group && credit == Credit::Tree && t.is_root() {
        let s: Vec<f64> = std::iter::once(t)
            .chain(g.branches_of(id))
            .filter_map(reward)
            .collect();
        if g.branches_of(id).next().is_some() {
            return s.iter().sum::<f64>() / s.len() as f64;
        }
    }
    reward(t).expect("a scored member")
}

/// The advantages of `t`'s tokens that come from a set of this kind.
fn tokens_of_set<'a>(
    batch: &Batch,
    t: &axpo_core::Trajectory,
    entry: &'a TrajectoryAdvantage,
    kind: SetKind,
    credit: Credit,
) -> &'a [f32] {
    let a = &entry.advantages[..];
    let cut = || {
        let (g, _) = batch.find(t.id()).expect("trajectory in the batch");
        g.branches_of(t.id()).find_map(|b| match b.origin() {
            Origin::Branch { prefix_len, .. } => Some(t.policy_index(prefix_len)),
            Origin::Root => None,
        })
    };
    match (kind, credit, t.origin()) {
        // A parent's prefix tokens carry its group advantage, its tail its sibling advantage.
        (SetKind::Group, Credit::Tree, Origin::Root) => &a[..cut().unwrap_or(a.len())],
        (SetKind::Siblings { .. }, Credit::Tree, Origin::Root) => {
            &a[cut().expect("a parent has branches")..]
        }
        // Under tail-only credit a root trains on its group advantage only.
        (SetKind::Siblings { .. }, Credit::TailOnly, Origin::Root) => &[],
        _ => a,
    }
}

fn check_tokens(batch: &Batch, c: &Credited, max_tokens: usize) {
    let trained: usize = c.trajectories.iter().map(|a| a.advantages.len()).sum();
    let tt = match TrainingTokens::new(batch, c) {
        Ok(tt) => tt,
        Err(e) => {
            assert!(matches!(e, Error::NoTrainedTokens), "TrainingTokens: {e:?}");
            assert_eq!(trained, 0, "NoTrainedTokens with {trained} trained tokens");
            return;
        }
    };
    let n = tt.token_count();
    assert_eq!(n, trained);
    assert_eq!(tt.targets.len(), n);
    assert_eq!(tt.old_logp.len(), n);
    assert_eq!(tt.advantages.len(), n);
    assert_eq!(tt.seq_offsets.len(), tt.sequences.len() + 1);
    assert_eq!(tt.seq_offsets.first(), Some(&0));
    assert_eq!(tt.seq_offsets.last(), Some(&n));
    assert!(
        tt.seq_offsets.windows(2).all(|w| w[0] < w[1]),
        "empty sequence"
    );
    for s in 0..tt.sequence_count() {
        let id = tt.sequences[s];
        let (_, t) = batch.find(id).expect("sequence trajectory");
        let entry = c.get(id).expect("entry");
        let positions: Vec<usize> = t.policy_positions().skip(entry.first_trained).collect();
        let range = tt.seq_offsets[s]..tt.seq_offsets[s + 1];
        assert_eq!(range.len(), positions.len());
        for (k, i) in range.enumerate() {
            assert_eq!(tt.rows[i].trajectory, id);
            assert_eq!(tt.rows[i].position, positions[k]);
            assert_eq!(tt.targets[i], t.tokens()[positions[k]]);
            assert_eq!(
                tt.old_logp[i].to_bits(),
                t.logprobs()[entry.first_trained + k].to_bits()
            );
            assert_eq!(tt.advantages[i].to_bits(), entry.advantages[k].to_bits());
        }
    }
    // Micro-batches partition the sequences within the limit.
    let mbs = tt.micro_batches(max_tokens);
    let mut next = 0;
    for r in &mbs {
        assert_eq!(r.start, next, "micro-batches are not consecutive");
        assert!(r.end > r.start, "empty micro-batch");
        let tokens = tt.token_range(r.clone());
        assert!(
            tokens.len() <= max_tokens || r.len() == 1,
            "micro-batch of {} tokens over {max_tokens}",
            tokens.len()
        );
        let local = tt.local_offsets(r.clone());
        assert_eq!(local.first(), Some(&0));
        assert_eq!(local.last(), Some(&tokens.len()));
        next = r.end;
    }
    assert_eq!(
        next,
        tt.sequence_count(),
        "micro-batches do not cover every sequence"
    );
    // On-policy objective.
    let cfg = ObjectiveConfig::new(PolicyLoss::default(), Aggregation::TokenMean { tokens: n });
    let inputs = ObjectiveInputs {
        logp: &tt.old_logp,
        old_logp: &tt.old_logp,
        advantages: &tt.advantages,
        seq_offsets: &tt.seq_offsets,
        rollout_logp: None,
        ref_logp: None,
        entropy: None,
    };
    let huge = tt.advantages.iter().any(|a| a.abs() > 1e30);
    match evaluate(&cfg, &inputs) {
        Ok(out) => {
            assert!(out.loss.is_finite() && out.d_logp.iter().all(|g| g.is_finite()));
            // On policy: the ratio is 1, nothing is clipped.
            assert_eq!(out.metrics.clipped_low + out.metrics.clipped_high, 0);
        }
        Err(e) => assert!(
            huge && matches!(e, Error::NonFinite { .. }),
            "on-policy objective failed on moderate advantages: {e:?}"
        ),
    }
}

fn check_diagnostics(batch: &Batch, c: &Credited) {
    let d = diagnose(batch, &Correctness::default(), Some(c))
        .unwrap_or_else(|e| panic!("diagnose failed: {e:?}"));
    assert_eq!(d.rollouts, batch.root_count());
    assert_eq!(d.groups, batch.groups().len());
    for (name, r) in [
        ("tool_call_rate", d.tool_call_rate),
        ("all_wrong", d.all_wrong_tool_subgroup_rate),
        ("zero_variance", d.zero_variance_group_rate),
        ("accuracy", d.accuracy),
        ("tool_call_signal", d.tool_call_signal),
        ("tool_call_positive", d.tool_call_positive),
    ] {
        assert!((0.0..=1.0).contains(&r), "{name} = {r}");
    }
    assert!(d.tool_call_positive <= d.tool_call_signal);
    assert!(d.mean_reward.is_finite());
}

fn choose(n: u64, k: u64) -> u128 {
    if k > n {
        return 0;
    }
    let mut r: u128 = 1;
    for i in 0..k.min(n - k) {
        r = r * u128::from(n - i) / u128::from(i + 1);
    }
    r
}

fn pass_at_k_checks(u: &mut Unstructured<'_>) {
    let Ok(m) = u.int_in_range(0..=3usize) else {
        return;
    };
    let mut qs = Vec::new();
    let k = u.int_in_range(0..=66usize).unwrap_or(0);
    for _ in 0..m {
        let n = u.int_in_range(0..=64usize).unwrap_or(0);
        let c = u.int_in_range(0..=66usize).unwrap_or(0);
        qs.push((n, c));
        let valid = k >= 1 && k <= n && c <= n;
        match pass_at_k(n, c, k) {
            Err(e) => {
                assert!(!valid, "pass_at_k({n}, {c}, {k}) failed: {e:?}");
                assert!(matches!(e, Error::InvalidConfig { .. }));
            }
            Ok(p) => {
                assert!(valid, "pass_at_k({n}, {c}, {k}) accepted");
                let exact = 1.0
                    - choose(n as u64 - c as u64, k as u64) as f64
                        / choose(n as u64, k as u64) as f64;
                assert!((0.0..=1.0).contains(&p), "pass@k = {p}");
                assert!(
                    (p - exact).abs() <= 1e-9,
                    "pass_at_k({n}, {c}, {k}) = {p}, exact {exact}"
                );
            }
        }
    }
    match mean_pass_at_k(&qs, k) {
        Ok(p) => assert!((0.0..=1.0).contains(&p)),
        Err(e) => assert!(matches!(e, Error::EmptyBatch | Error::InvalidConfig { .. })),
    }
}

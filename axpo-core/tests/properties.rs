//! Property tests of the planner, credit, objective and backend invariants.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod batchgen;

use axpo_core::advantage::{AdvantageConfig, Credit, Estimator, StdMode, assign};
use axpo_core::backend::{
    BufferOps, Cpu, DType, DeviceBuffer, LogprobOps, MatRef, MatmulOps, StatsGrad, VocabChunk,
    download_stats,
};
use axpo_core::objective::{
    Aggregation, CispoBounds, KlEstimator, KlPenalty, ObjectiveConfig, ObjectiveInputs, PolicyLoss,
    TisLevel, TruncatedIs, evaluate, surrogate_loss,
};
use axpo_core::prefix::{CallChoice, CutPoint, SelectionStrategy, UncertaintyScore};
use axpo_core::rng::Rng;
use axpo_core::subgroup::{Correctness, tool_subgroups};
use axpo_core::{Batch, PlanConfig, Reward, TrainingTokens, pass_at_k, plan};
use batchgen::Shape;
use proptest::prelude::*;

const CREDITS: [Credit; 3] = [Credit::Tree, Credit::Flat, Credit::TailOnly];
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

fn shape() -> impl Strategy<Value = Shape> {
    (1usize..6, 1usize..7, 0.0f64..1.0, 0.0f64..1.0, 0.0f64..0.2).prop_map(
        |(groups, group_size, tool_rate, accuracy, unscorable)| Shape {
            groups,
            group_size,
            tool_rate,
            accuracy,
            unscorable,
        },
    )
}

fn plan_config() -> impl Strategy<Value = PlanConfig> {
    (
        prop_oneof![Just(CutPoint::AfterCallOpen), Just(CutPoint::BeforeCall)],
        prop_oneof![
            Just(CallChoice::First),
            Just(CallChoice::Last),
            Just(CallChoice::All)
        ],
        prop_oneof![
            Just(UncertaintyScore::CallEntropy),
            Just(UncertaintyScore::DecisionEntropy),
            (1usize..5).prop_map(|window| UncertaintyScore::PrefixEntropy { window }),
            Just(UncertaintyScore::Surprisal),
        ],
        prop_oneof![
            Just(SelectionStrategy::TopK),
            Just(SelectionStrategy::Uniform),
            (0.1f32..3.0).prop_map(|temperature| SelectionStrategy::Proportional { temperature }),
        ],
        1usize..6,
        1usize..3,
        0.0f32..1.5,
        1u32..4,
    )
        .prop_map(|(cut, calls, score, strategy, k, per, frac, rounds)| {
            PlanConfig::default()
                .with_cut(cut)
                .with_calls(calls)
                .with_score(score)
                .with_strategy(strategy)
                .with_resamples_per_prefix(k)
                .with_prefixes_per_subgroup(per)
                .with_max_resample_fraction(frac)
                .with_max_rounds(rounds)
        })
}

/// Runs every planning round with synthetic answers; returns the final batch.
fn run_rounds(batch: &Batch, cfg: &PlanConfig, seed: u64, shape: &Shape) -> Batch {
    let mut b = batch.clone();
    loop {
        let p = plan(&b, cfg, seed).expect("plan");
        if p.is_empty() {
            return b;
        }
        let answers = batchgen::answer(&p, &b, seed ^ u64::from(p.round()), shape);
        p.merge(&mut b, answers).expect("merge");
    }
}

/// Plain GRPO (or RLOO), written independently of the crate.
fn naive(rewards: &[Option<f64>], est: Estimator, eps: f64, batch_std: f64) -> Vec<f64> {
    let s: Vec<f64> = rewards.iter().flatten().copied().collect();
    let n = s.len() as f64;
    if s.len() < 2 {
        return vec![0.0; rewards.len()];
    }
    let mean = s.iter().sum::<f64>() / n;
    let std = (s.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0)).sqrt();
    rewards
        .iter()
        .map(|r| match (r, est) {
            (None, _) => 0.0,
            (Some(r), Estimator::Rloo) => r - (s.iter().sum::<f64>() - r) / (n - 1.0),
            (
                Some(r),
                Estimator::Grpo {
                    std: StdMode::Group,
                },
            ) => (r - mean) / (std + eps),
            (
                Some(r),
                Estimator::Grpo {
                    std: StdMode::Batch,
                },
            ) => (r - mean) / (batch_std + eps),
            (Some(r), _) => r - mean,
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    #[test]
    fn no_branches_every_credit_mode_is_plain_grpo(seed in any::<u64>(), shape in shape()) {
        let b = batchgen::batch(seed, &shape);
        let all: Vec<f64> = b.trajectories().filter_map(|t| t.reward().score()).map(f64::from).collect();
        let n = all.len() as f64;
        let batch_std = if all.len() < 2 { 0.0 } else {
            let m = all.iter().sum::<f64>() / n;
            (all.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (n - 1.0)).sqrt()
        };
        for est in ESTIMATORS {
            let base = assign(&b, &AdvantageConfig::default().with_estimator(est)).unwrap();
            for credit in CREDITS {
                let c = assign(&b, &AdvantageConfig::default().with_estimator(est).with_credit(credit)).unwrap();
                prop_assert_eq!(&c.trajectories, &base.trajectories);
            }
            for g in b.groups() {
                let r: Vec<Option<f64>> = g.rollouts().iter().map(|t| t.reward().score().map(f64::from)).collect();
                let want = naive(&r, est, 1e-6, batch_std);
                for (t, w) in g.rollouts().iter().zip(want) {
                    let got = base.get(t.id()).unwrap();
                    prop_assert_eq!(got.first_trained, 0);
                    prop_assert_eq!(got.advantages.len(), t.logprobs().len());
                    for a in &got.advantages {
                        prop_assert!((f64::from(*a) - w).abs() <= 1e-5 * (1.0 + w.abs()), "{} vs {}", a, w);
                    }
                }
            }
        }
    }

    #[test]
    fn advantages_are_zero_mean_in_every_normalising_set(
        seed in any::<u64>(), shape in shape(), cfg in plan_config()
    ) {
        let b = run_rounds(&batchgen::batch(seed, &shape), &cfg, seed, &shape);
        for est in ESTIMATORS {
            for credit in CREDITS {
                let c = assign(&b, &AdvantageConfig::default().with_estimator(est).with_credit(credit)).unwrap();
                for set in &c.sets {
                    let scored: Vec<f64> = set.members.iter().filter(|m| m.2).map(|m| m.1).collect();
                    let sum: f64 = scored.iter().sum();
                    let scale: f64 = scored.iter().map(|a| a.abs()).fold(1.0, f64::max);
                    prop_assert!(sum.abs() <= 1e-9 * scale * scored.len() as f64, "{:?} sums to {}", set, sum);
                    for m in set.members.iter().filter(|m| !m.2) {
                        prop_assert_eq!(m.1, 0.0);
                    }
                }
            }
        }
    }

    #[test]
    fn subgroup_partition_is_total_and_disjoint(seed in any::<u64>(), shape in shape(), cfg in plan_config()) {
        let b = run_rounds(&batchgen::batch(seed, &shape), &cfg, seed, &shape);
        for (g, s) in b.groups().iter().zip(tool_subgroups(&b, &Correctness::default())) {
            let mut ids: Vec<_> = s.members.iter().chain(&s.thinking_only).copied().collect();
            ids.sort();
            let mut roots: Vec<_> = g.roots().map(|t| t.id()).collect();
            roots.sort();
            prop_assert_eq!(ids, roots);
            prop_assert!(s.members.iter().all(|m| !s.thinking_only.contains(m)));
            prop_assert!(s.members.iter().all(|m| g.get(*m).unwrap().uses_tools()));
        }
    }

    #[test]
    fn plan_is_pure_and_within_budget(seed in any::<u64>(), shape in shape(), cfg in plan_config()) {
        let b0 = batchgen::batch(seed, &shape);
        let mut b = b0.clone();
        let budget = cfg.budget(b0.root_count());
        loop {
            let p = plan(&b, &cfg, seed).unwrap();
            prop_assert_eq!(&p, &plan(&b, &cfg, seed).unwrap());
            prop_assert!(b.branch_count() + p.resample_count() <= budget);
            prop_assert!(p.requests().iter().all(|r| r.count >= 1 && r.count <= cfg.resamples_per_prefix));
            if p.round() == 1 {
                // Every request comes from an all-wrong tool subgroup.
                let subs = tool_subgroups(&b, &cfg.correctness);
                for r in p.requests() {
                    prop_assert!(subs.iter().any(|s| s.is_all_wrong() && s.members.contains(&r.parent)));
                }
            }
            if p.is_empty() { break; }
            let answers = batchgen::answer(&p, &b, seed ^ 7, &shape);
            p.merge(&mut b, answers).unwrap();
            prop_assert!(b.last_round() <= cfg.max_rounds);
        }
        // Every branch shares its parent's exact prefix.
        for t in b.trajectories() {
            if let axpo_core::Origin::Branch { parent, prefix_len, .. } = t.origin() {
                let (_, p) = b.find(parent).unwrap();
                prop_assert_eq!(&t.tokens()[..prefix_len], &p.tokens()[..prefix_len]);
                let head = p.policy_index(prefix_len);
                prop_assert_eq!(&t.logprobs()[..head], &p.logprobs()[..head]);
            }
        }
    }

    #[test]
    fn masked_tokens_change_nothing(seed in any::<u64>(), shape in shape(), cfg in plan_config(), salt in any::<u32>()) {
        let b = run_rounds(&batchgen::batch(seed, &shape), &cfg, seed, &shape);
        // Rebuild the batch with every environment token id replaced (branches get the same
        // replacement in their parent's prefix, so prefixes still match).
        let remap = |t: &axpo_core::Trajectory| -> Vec<u32> {
            t.tokens().iter().enumerate().map(|(p, &x)| {
                if t.role_at(p).is_some_and(|r| !r.is_policy()) { x ^ salt.wrapping_add(p as u32) | 0x8000_0000 } else { x }
            }).collect()
        };
        let mut groups = Vec::new();
        for g in b.groups() {
            let roots: Vec<_> = g.roots().map(|t| {
                axpo_core::Trajectory::new(t.id(), remap(t), t.spans().to_vec(), t.logprobs().to_vec(), t.reward())
                    .and_then(|x| x.with_entropies(t.entropies().unwrap().to_vec())).unwrap()
            }).collect();
            groups.push(axpo_core::Group::new(g.id(), roots).unwrap());
        }
        let roots_only = Batch::new(groups).unwrap();
        let b2 = run_rounds(&roots_only, &cfg, seed, &shape);
        for credit in CREDITS {
            let acfg = AdvantageConfig::default().with_credit(credit);
            let t1 = TrainingTokens::new(&b, &assign(&b, &acfg).unwrap());
            let t2 = TrainingTokens::new(&b2, &assign(&b2, &acfg).unwrap());
            match (t1, t2) {
                (Ok(t1), Ok(t2)) => {
                    prop_assert_eq!(&t1.old_logp, &t2.old_logp);
                    prop_assert_eq!(&t1.advantages, &t2.advantages);
                    prop_assert_eq!(&t1.targets, &t2.targets);
                    prop_assert_eq!(&t1.seq_offsets, &t2.seq_offsets);
                }
                (Err(_), Err(_)) => {}
                _ => prop_assert!(false, "one side has trained tokens, the other not"),
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Objective properties.

#[derive(Debug, Clone)]
struct Case {
    logp: Vec<f64>,
    old: Vec<f64>,
    adv: Vec<f64>,
    roll: Vec<f64>,
    refp: Vec<f64>,
    ent: Vec<f64>,
    offsets: Vec<usize>,
}

impl Case {
    fn inputs(&self) -> ObjectiveInputs<'_, f64> {
        ObjectiveInputs {
            logp: &self.logp,
            old_logp: &self.old,
            advantages: &self.adv,
            seq_offsets: &self.offsets,
            rollout_logp: Some(&self.roll),
            ref_logp: Some(&self.refp),
            entropy: Some(&self.ent),
        }
    }
}

fn case() -> impl Strategy<Value = Case> {
    (any::<u64>(), 1usize..6, prop_oneof![Just(0.0), Just(1.0)]).prop_map(
        |(seed, seqs, on_policy)| {
            let mut rng = Rng::new(seed, 3);
            let mut offsets = vec![0];
            for _ in 0..seqs {
                let len = rng.below(6);
                offsets.push(offsets.last().unwrap() + len);
            }
            if *offsets.last().unwrap() == 0 {
                *offsets.last_mut().unwrap() = 1;
            }
            let n = *offsets.last().unwrap();
            let mut u = |lo: f64, hi: f64| lo + (hi - lo) * rng.next_f64();
            let old: Vec<f64> = (0..n).map(|_| u(-4.0, -0.05)).collect();
            let logp: Vec<f64> = old
                .iter()
                .map(|o| o + (1.0 - on_policy) * u(-0.6, 0.6))
                .collect();
            let adv = (0..n).map(|_| u(-2.0, 2.0)).collect();
            let roll = old.iter().map(|o| o + u(-0.8, 0.8)).collect();
            let refp = logp.iter().map(|l| l + u(-1.5, 1.5)).collect();
            let ent = (0..n).map(|_| u(0.0, 3.0)).collect();
            Case {
                logp,
                old,
                adv,
                roll,
                refp,
                ent,
                offsets,
            }
        },
    )
}

fn losses() -> Vec<PolicyLoss> {
    vec![
        PolicyLoss::PpoClip {
            eps_low: 0.2,
            eps_high: 0.28,
            dual_clip: None,
        },
        PolicyLoss::PpoClip {
            eps_low: 0.2,
            eps_high: 0.2,
            dual_clip: Some(3.0),
        },
        PolicyLoss::Gspo {
            eps_low: 0.0003,
            eps_high: 0.0004,
        },
        PolicyLoss::Gspo {
            eps_low: 0.2,
            eps_high: 0.2,
        },
        PolicyLoss::Cispo {
            bounds: CispoBounds::Relative {
                eps_low: 0.2,
                eps_high: 0.2,
            },
        },
        PolicyLoss::Cispo {
            bounds: CispoBounds::UpperOnly { max: 1.5 },
        },
        PolicyLoss::PolicyGradient,
    ]
}

fn aggregations(c: &Case) -> Vec<Aggregation> {
    let n = c.logp.len();
    let s = c.offsets.len() - 1;
    vec![
        Aggregation::TokenMean { tokens: n + 3 },
        Aggregation::SeqMeanTokenMean { sequences: s + 1 },
        Aggregation::SeqMeanTokenSum { sequences: s },
        Aggregation::Constant { normalizer: 7.5 },
    ]
}

fn kls() -> Vec<Option<KlPenalty>> {
    let mut v = vec![None];
    for estimator in [KlEstimator::K1, KlEstimator::K2, KlEstimator::K3] {
        v.push(Some(KlPenalty {
            estimator,
            beta: 0.3,
        }));
    }
    v
}

fn configs(c: &Case) -> Vec<ObjectiveConfig> {
    let mut out = Vec::new();
    for loss in losses() {
        for agg in aggregations(c) {
            for kl in kls() {
                for (ent, tis) in [
                    (0.0, None),
                    (
                        0.05,
                        Some(TruncatedIs {
                            level: TisLevel::Token,
                            cap: 1.3,
                        }),
                    ),
                    (
                        0.0,
                        Some(TruncatedIs {
                            level: TisLevel::Sequence,
                            cap: 2.0,
                        }),
                    ),
                ] {
                    let mut cfg = ObjectiveConfig::new(loss, agg).with_entropy_coef(ent);
                    if let Some(kl) = kl {
                        cfg = cfg.with_kl(kl);
                    }
                    if let Some(t) = tis {
                        cfg = cfg.with_tis(t);
                    }
                    out.push(cfg);
                }
            }
        }
    }
    out
}

/// Whether a token's ratio sits within `h`-reach of a clip boundary (finite differences are not
/// defined at kinks).
fn near_kink(c: &Case, cfg: &ObjectiveConfig) -> bool {
    let r: Vec<f64> = c
        .logp
        .iter()
        .zip(&c.old)
        .map(|(l, o)| (l - o).exp())
        .collect();
    let bounds: Vec<f64> = match cfg.loss {
        PolicyLoss::PpoClip {
            eps_low, eps_high, ..
        } => vec![1.0 - eps_low, 1.0 + eps_high],
        _ => vec![],
    };
    let gspo_near = match cfg.loss {
        PolicyLoss::Gspo { eps_low, eps_high } => (0..c.offsets.len() - 1).any(|s| {
            let (a, b) = (c.offsets[s], c.offsets[s + 1]);
            if a == b {
                return false;
            }
            let m = (a..b).map(|t| c.logp[t] - c.old[t]).sum::<f64>() / (b - a) as f64;
            let sr = m.exp();
            (sr - (1.0 - eps_low)).abs() < 1e-4 || (sr - (1.0 + eps_high)).abs() < 1e-4
        }),
        _ => false,
    };
    gspo_near
        || r.iter()
            .any(|x| bounds.iter().any(|b| (x - b).abs() < 1e-4))
        || c.adv.iter().any(|a| a.abs() < 1e-6)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn gradient_matches_central_finite_differences(c in case()) {
        let h = 1e-6;
        for cfg in configs(&c) {
            if near_kink(&c, &cfg) { continue; }
            let inp = c.inputs();
            let out = evaluate(&cfg, &inp).unwrap();
            let f0 = surrogate_loss(&cfg, &inp, &c.logp, Some(&c.ent)).unwrap();
            prop_assert!((f0 - out.loss).abs() <= 1e-12 * (1.0 + out.loss.abs()));
            for t in 0..c.logp.len() {
                let mut up = c.logp.clone();
                let mut dn = c.logp.clone();
                up[t] += h;
                dn[t] -= h;
                let fd = (surrogate_loss(&cfg, &inp, &up, Some(&c.ent)).unwrap()
                    - surrogate_loss(&cfg, &inp, &dn, Some(&c.ent)).unwrap()) / (2.0 * h);
                prop_assert!((fd - out.d_logp[t]).abs() <= 1e-6 * (1.0 + fd.abs()),
                    "{:?} token {}: fd {} vs analytic {}", cfg, t, fd, out.d_logp[t]);
                let mut eu = c.ent.clone();
                let mut ed = c.ent.clone();
                eu[t] += h;
                ed[t] -= h;
                let fde = (surrogate_loss(&cfg, &inp, &c.logp, Some(&eu)).unwrap()
                    - surrogate_loss(&cfg, &inp, &c.logp, Some(&ed)).unwrap()) / (2.0 * h);
                prop_assert!((fde - out.d_entropy[t]).abs() <= 1e-6 * (1.0 + fde.abs()));
            }
        }
    }

    #[test]
    fn micro_batch_split_changes_nothing(c in case(), cut_seed in any::<u64>()) {
        let seqs = c.offsets.len() - 1;
        let mut rng = Rng::new(cut_seed, 5);
        // Random cut points between sequences.
        let mut cuts: Vec<usize> = (1..seqs).filter(|_| rng.below(2) == 0).collect();
        cuts.insert(0, 0);
        cuts.push(seqs);
        for cfg in configs(&c) {
            let whole = evaluate(&cfg, &c.inputs()).unwrap();
            let (mut loss, mut grad, mut dent) = (0.0, Vec::new(), Vec::new());
            for w in cuts.windows(2) {
                let (a, b) = (c.offsets[w[0]], c.offsets[w[1]]);
                if a == b { continue; }
                let offs: Vec<usize> = c.offsets[w[0]..=w[1]].iter().map(|o| o - a).collect();
                let part = ObjectiveInputs {
                    logp: &c.logp[a..b], old_logp: &c.old[a..b], advantages: &c.adv[a..b],
                    seq_offsets: &offs, rollout_logp: Some(&c.roll[a..b]),
                    ref_logp: Some(&c.refp[a..b]), entropy: Some(&c.ent[a..b]),
                };
                let o = evaluate(&cfg, &part).unwrap();
                loss += o.loss;
                grad.extend(o.d_logp);
                dent.extend(o.d_entropy);
            }
            prop_assert!((loss - whole.loss).abs() <= 1e-12 * (1.0 + whole.loss.abs()));
            prop_assert_eq!(&grad, &whole.d_logp);
            prop_assert_eq!(&dent, &whole.d_entropy);
        }
    }

    #[test]
    fn on_policy_clipping_is_inactive(mut c in case()) {
        c.logp = c.old.clone();
        for cfg in configs(&c) {
            let o = evaluate(&cfg, &c.inputs()).unwrap();
            prop_assert_eq!(o.metrics.clipped_low + o.metrics.clipped_high + o.metrics.dual_clipped, 0);
            prop_assert!(o.metrics.approx_kl.abs() < 1e-15);
            if cfg.kl.is_none() && cfg.tis.is_none() {
                // Every loss's gradient is then the plain policy gradient -A * w.
                let plain = evaluate(&ObjectiveConfig::new(PolicyLoss::PolicyGradient, cfg.aggregation), &c.inputs()).unwrap();
                for (a, b) in o.d_logp.iter().zip(&plain.d_logp) {
                    prop_assert!((a - b).abs() <= 1e-12 * (1.0 + b.abs()));
                }
            }
        }
    }

    #[test]
    fn pass_at_k_matches_enumeration(n in 1usize..11, c_frac in 0.0f64..=1.0, k_frac in 0.0f64..=1.0) {
        let c = ((n as f64) * c_frac).floor() as usize;
        let k = 1 + (((n - 1) as f64) * k_frac).floor() as usize;
        // Enumerate every k-subset of n samples (the first c correct) as a bitmask.
        let (mut hit, mut total) = (0u64, 0u64);
        for mask in 0u32..(1u32 << n) {
            if mask.count_ones() as usize != k { continue; }
            total += 1;
            if mask & ((1u32 << c) - 1) != 0 { hit += 1; }
        }
        let want = hit as f64 / total as f64;
        prop_assert!((pass_at_k(n, c, k).unwrap() - want).abs() < 1e-12);
    }
}

// ---------------------------------------------------------------------------------------------
// Backend statistics against a naive f64 softmax.

fn naive_stats(z: &[f64], target: usize) -> (f64, f64, f64, f64) {
    let m = z.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let s: f64 = z.iter().map(|v| (v - m).exp()).sum();
    let lse = m + s.ln();
    let p: Vec<f64> = z.iter().map(|v| (v - lse).exp()).collect();
    let ent = -p
        .iter()
        .zip(z)
        .filter(|(p, _)| **p > 0.0)
        .map(|(p, v)| p * (v - lse))
        .sum::<f64>();
    (z[target] - lse, ent, p.iter().map(|x| x * x).sum(), lse)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    #[test]
    fn token_stats_match_naive_softmax(seed in any::<u64>(), rows in 0usize..6, vocab in 1usize..300, chunk in 1usize..97) {
        let mut rng = Rng::new(seed, 11);
        let cpu = Cpu::new();
        let h = 1 + rng.below(17);
        let hidden: Vec<f32> = (0..rows * h).map(|_| (rng.next_f64() * 2.0 - 1.0) as f32).collect();
        let w: Vec<f32> = (0..vocab * h).map(|_| (rng.next_f64() * 4.0 - 2.0) as f32).collect();
        let targets: Vec<u32> = (0..rows).map(|_| rng.below(vocab) as u32).collect();
        // Logits materialised in f64 for the oracle, and in f32 for token_stats, with a few -inf
        // entries (never the target) to exercise grammar masks.
        let mut logits64 = vec![0.0f64; rows * vocab];
        for r in 0..rows { for v in 0..vocab {
            logits64[r * vocab + v] = (0..h).map(|k| f64::from(hidden[r * h + k]) * f64::from(w[v * h + k])).sum();
        }}
        let mut masked = logits64.clone();
        for r in 0..rows { for v in 0..vocab {
            if v as u32 != targets[r] && rng.below(7) == 0 { masked[r * vocab + v] = f64::NEG_INFINITY; }
        }}
        let logits32: Vec<f32> = masked.iter().map(|&x| x as f32).collect();
        let lb = cpu.upload_f32(&logits32).unwrap();
        let st = cpu.token_stats(MatRef::new(&lb, rows, vocab).unwrap(), &targets).unwrap();
        let [lp, en, sp, lse] = download_stats(&cpu, &st).unwrap();
        let hb = cpu.upload_f32(&hidden).unwrap();
        let wb = cpu.upload_f32(&w).unwrap();
        let lst = cpu.linear_token_stats(
            MatRef::new(&hb, rows, h).unwrap(), MatRef::new(&wb, vocab, h).unwrap(), &targets, VocabChunk(chunk),
        ).unwrap();
        let [llp, len, lsp, _] = download_stats(&cpu, &lst).unwrap();
        for r in 0..rows {
            let row: Vec<f64> = masked[r * vocab..(r + 1) * vocab].iter().map(|&x| if x.is_finite() { f64::from(x as f32) } else { x }).collect();
            let (e_lp, e_en, e_sp, e_lse) = naive_stats(&row, targets[r] as usize);
            // f32 outputs of f64 arithmetic: a few ulps of the magnitudes involved.
            let tol = |x: f64| 1e-5 * (1.0 + x.abs());
            prop_assert!((f64::from(lp[r]) - e_lp).abs() <= tol(e_lse));
            prop_assert!((f64::from(en[r]) - e_en).abs() <= tol(e_lse));
            prop_assert!((f64::from(sp[r]) - e_sp).abs() <= 1e-6);
            prop_assert!((f64::from(lse[r]) - e_lse).abs() <= tol(e_lse));
            let full: Vec<f64> = logits64[r * vocab..(r + 1) * vocab].to_vec();
            let (f_lp, f_en, f_sp, f_lse) = naive_stats(&full, targets[r] as usize);
            // The fused path multiplies in f32 (k <= 17 terms of magnitude <= 2): error ~ k * eps.
            let tol2 = |x: f64| 5e-5 * (1.0 + x.abs());
            prop_assert!((f64::from(llp[r]) - f_lp).abs() <= tol2(f_lse));
            prop_assert!((f64::from(len[r]) - f_en).abs() <= tol2(f_lse));
            prop_assert!((f64::from(lsp[r]) - f_sp).abs() <= 1e-5);
        }
    }

    #[test]
    fn fused_backward_matches_naive_and_finite_differences(seed in any::<u64>(), rows in 1usize..5, vocab in 2usize..60, chunk in 1usize..23) {
        let mut rng = Rng::new(seed, 13);
        let cpu = Cpu::new();
        let h = 1 + rng.below(9);
        let hidden: Vec<f32> = (0..rows * h).map(|_| (rng.next_f64() * 2.0 - 1.0) as f32).collect();
        let w: Vec<f32> = (0..vocab * h).map(|_| (rng.next_f64() * 2.0 - 1.0) as f32).collect();
        let targets: Vec<u32> = (0..rows).map(|_| rng.below(vocab) as u32).collect();
        let g_lp: Vec<f32> = (0..rows).map(|_| (rng.next_f64() * 2.0 - 1.0) as f32).collect();
        let g_en: Vec<f32> = (0..rows).map(|_| (rng.next_f64() * 2.0 - 1.0) as f32).collect();
        let hb = cpu.upload_f32(&hidden).unwrap();
        let wb = cpu.upload_f32(&w).unwrap();
        let (hm, wm) = (MatRef::new(&hb, rows, h).unwrap(), MatRef::new(&wb, vocab, h).unwrap());
        let st = cpu.linear_token_stats(hm, wm, &targets, VocabChunk(chunk)).unwrap();
        let (glb, geb) = (cpu.upload_f32(&g_lp).unwrap(), cpu.upload_f32(&g_en).unwrap());
        let grads = cpu.linear_token_stats_backward(
            hm, wm, &targets, &st, StatsGrad { d_logp: &glb, d_entropy: Some(&geb) }, VocabChunk(chunk),
        ).unwrap();
        let dh = cpu.download_f32(&grads.d_hidden).unwrap();
        let dw = cpu.download_f32(&grads.d_weight).unwrap();
        // Oracle: L = sum_r g_lp[r] logp_r + g_en[r] H_r, in f64, differentiated numerically.
        let objective = |hd: &[f64], wd: &[f64]| -> f64 {
            (0..rows).map(|r| {
                let z: Vec<f64> = (0..vocab).map(|v| (0..h).map(|k| hd[r * h + k] * wd[v * h + k]).sum()).collect();
                let (lp, en, _, _) = naive_stats(&z, targets[r] as usize);
                f64::from(g_lp[r]) * lp + f64::from(g_en[r]) * en
            }).sum()
        };
        let hd: Vec<f64> = hidden.iter().map(|&x| f64::from(x)).collect();
        let wd: Vec<f64> = w.iter().map(|&x| f64::from(x)).collect();
        let eps = 1e-6;
        for i in 0..hd.len() {
            let (mut a, mut b) = (hd.clone(), hd.clone());
            a[i] += eps; b[i] -= eps;
            let fd = (objective(&a, &wd) - objective(&b, &wd)) / (2.0 * eps);
            prop_assert!((fd - f64::from(dh[i])).abs() <= 2e-5 * (1.0 + fd.abs()), "dh[{}]: {} vs {}", i, fd, dh[i]);
        }
        for i in 0..wd.len() {
            let (mut a, mut b) = (wd.clone(), wd.clone());
            a[i] += eps; b[i] -= eps;
            let fd = (objective(&hd, &a) - objective(&hd, &b)) / (2.0 * eps);
            prop_assert!((fd - f64::from(dw[i])).abs() <= 2e-5 * (1.0 + fd.abs()), "dw[{}]: {} vs {}", i, fd, dw[i]);
        }
        // The unfused backward from materialised logits agrees with the fused one.
        let logits = cpu.matmul_new(hm, axpo_core::backend::Layout::AsStored, wm, axpo_core::backend::Layout::Transposed).unwrap();
        let dz = cpu.token_stats_backward(MatRef::new(&logits, rows, vocab).unwrap(), &targets, &st,
            StatsGrad { d_logp: &glb, d_entropy: Some(&geb) }).unwrap();
        let dz = cpu.download_f32(&dz).unwrap();
        let dh2: Vec<f64> = (0..rows * h).map(|i| {
            let (r, k) = (i / h, i % h);
            (0..vocab).map(|v| f64::from(dz[r * vocab + v]) * f64::from(w[v * h + k])).sum()
        }).collect();
        for (a, b) in dh.iter().zip(&dh2) {
            prop_assert!((f64::from(*a) - b).abs() <= 1e-5 * (1.0 + b.abs()));
        }
        prop_assert_eq!(cpu.zeros(DType::F32, 3).unwrap().len(), 3);
    }
}

#[test]
fn rewards_none_vs_nan() {
    // The lenient constructor maps non-finite scores to Unscorable.
    assert_eq!(Reward::from_score_lenient(f32::NAN), Reward::Unscorable);
    assert_eq!(Reward::from_score_lenient(0.5), Reward::Scored(0.5));
}

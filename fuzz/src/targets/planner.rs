//! The resample planner and the merge of returned branches, over several rounds.
//!
//! Input: a valid batch (1 to 4 groups of 1 to 6 rollouts with thinking, tool calls, responses
//! and answers; log-probs, entropies on all, some or none; rewards mostly 0 or 1, sometimes
//! unscorable or extreme; ids up to `u32::MAX`), a plan configuration (valid or not: K,
//! prefixes per subgroup and rounds from 0, budget fractions and temperatures including NaN and
//! infinities), a seed; then, round after round, hostile and valid engine answers.
//!
//! Properties, each round:
//! - `plan` is a pure function: the same call twice gives equal results.
//! - It fails only with `InvalidConfig` (iff `PlanConfig::validate` fails) or
//!   `MissingEntropies` (naming a trajectory without entropies, for a score that needs them).
//! - The plan respects its budget: `resample_count <= budget - branches already present`; each
//!   request's count is `min(K, budget left)` in order (only the last may be short); the
//!   budget is `floor(fraction * roots)`.
//! - Round 1 requests only roots of all-wrong tool subgroups, at the configured cut of one of
//!   their tool calls, at most `prefixes_per_subgroup` per group and one per rollout; if budget
//!   is left over, every such subgroup got all the prefixes it could. Later rounds retry only
//!   prefixes whose sibling set is still all wrong. Nothing after `max_rounds`.
//! - Requests come most uncertain first, with the prefix behind each.
//! - Merging hostile answers either fails with a typed error and leaves the batch unchanged,
//!   or succeeds with every invariant below; merging valid answers succeeds.
//! - After a merge: the old rollouts are untouched; each new branch has a fresh id, the plan's
//!   round, its parent's exact prefix (tokens, roles, and log-probs), the returned tail, and no
//!   request receives more than its count; every group still validates.

use std::collections::{BTreeMap, BTreeSet};

use arbitrary::Unstructured;

use axpo_core::plan::ResamplePlan;
use axpo_core::prefix::rank_order;
use axpo_core::subgroup::Correctness;
use axpo_core::{
    Batch, BranchRollout, CallChoice, CutPoint, Error, Group, Origin, PlanConfig, Reward, Role,
    Trajectory, TrajectoryId, plan,
};

use crate::build;

/// Runs one input.
pub fn run(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let Ok(mut batch) = build::batch(&mut u) else {
        return;
    };
    let Ok(cfg) = build::plan_config(&mut u) else {
        return;
    };
    let seed: u64 = u.arbitrary().unwrap_or(0);
    for _ in 0..5 {
        let Some(p) = plan_checked(&batch, &cfg, seed) else {
            return;
        };
        if p.is_empty() {
            return;
        }
        if u.ratio(1u8, 3).unwrap_or(false) {
            let Ok(bad) = build::hostile_answers(&mut u, &p, &batch) else {
                return;
            };
            let mut b = batch.clone();
            match p.merge(&mut b, bad.clone()) {
                Ok(()) => check_merged(&batch, &b, &p, &bad),
                Err(e) => {
                    assert_eq!(b, batch, "a failed merge changed the batch ({e:?})");
                    assert!(
                        matches!(
                            e,
                            Error::UnplannedBranch { .. }
                                | Error::UnknownParent { .. }
                                | Error::PrefixMismatch { .. }
                                | Error::PrefixOutOfRange { .. }
                                | Error::ConflictingPrefixes { .. }
                                | Error::InvalidSpans { .. }
                                | Error::LengthMismatch { .. }
                                | Error::NonFinite { .. }
                                | Error::OutOfRange { .. }
                                | Error::NonFiniteReward { .. }
                                | Error::InvalidConfig { .. }
                        ),
                        "merge: unexpected error {e:?}"
                    );
                }
            }
        }
        let Ok(good) = build::answers(&mut u, &p, &batch) else {
            return;
        };
        let mut b = batch.clone();
        match p.merge(&mut b, good.clone()) {
            Ok(()) => check_merged(&batch, &b, &p, &good),
            Err(e) => {
                assert_eq!(b, batch, "a failed merge changed the batch ({e:?})");
                // Valid answers fail only when their fresh ids would pass u32::MAX (finding
                // F5, fixed: the last id is usable).
                let max = batch.trajectories().map(|t| u64::from(t.id().0)).max();
                let last = max.unwrap_or(0) + good.len() as u64;
                assert!(
                    matches!(e, Error::InvalidConfig { .. }) && last > u64::from(u32::MAX),
                    "merging valid answers failed: {e:?}"
                );
                return;
            }
        }
        batch = b;
    }
}

/// Plans twice, checks the plan; `None` when planning failed (correctly).
pub fn plan_checked(batch: &Batch, cfg: &PlanConfig, seed: u64) -> Option<ResamplePlan> {
    let r1 = plan(batch, cfg, seed);
    let r2 = plan(batch, cfg, seed);
    match (&r1, &r2) {
        (Ok(a), Ok(b)) => assert_eq!(a, b, "plan is not deterministic"),
        (Err(a), Err(b)) => assert_eq!(format!("{a:?}"), format!("{b:?}")),
        _ => panic!("plan is not deterministic: {r1:?} vs {r2:?}"),
    }
    let valid = cfg.validate();
    match r1 {
        Err(e) => {
            match &e {
                Error::InvalidConfig { .. } => {
                    assert!(
                        valid.is_err(),
                        "plan: InvalidConfig for a valid configuration"
                    )
                }
                Error::MissingEntropies { trajectory } => {
                    assert!(valid.is_ok() && cfg.score.needs_entropies());
                    let (_, t) = batch.find(*trajectory).expect("named trajectory exists");
                    assert!(t.entropies().is_none(), "MissingEntropies for {trajectory}");
                }
                _ => panic!("plan: unexpected error {e:?}"),
            }
            None
        }
        Ok(p) => {
            assert!(valid.is_ok(), "plan accepted an invalid configuration");
            check_plan(batch, cfg, &p);
            Some(p)
        }
    }
}

fn all_wrong(c: &Correctness, rewards: impl IntoIterator<Item = Reward>) -> bool {
    let mut scored = false;
    for r in rewards {
        if let Reward::Scored(s) = r {
            if s >= c.threshold() {
                return false;
            }
            scored = true;
        }
    }
    scored
}

/// Starts of the tool-call spans of `t` that `calls` picks.
fn call_starts(t: &Trajectory, calls: CallChoice) -> Vec<usize> {
    let all: Vec<usize> = t.tool_calls().map(|s| s.start).collect();
    match calls {
        CallChoice::All => all,
        CallChoice::First => all.first().copied().into_iter().collect(),
        CallChoice::Last => all.last().copied().into_iter().collect(),
    }
}

fn cut_of(start: usize, cut: CutPoint) -> usize {
    match cut {
        CutPoint::AfterCallOpen => start + 1,
        CutPoint::BeforeCall => start,
    }
}

fn check_plan(batch: &Batch, cfg: &PlanConfig, p: &ResamplePlan) {
    let round = batch.last_round().saturating_add(1);
    assert_eq!(p.round(), round);
    assert_eq!(p.budget(), cfg.budget(batch.root_count()));
    let expected_budget = f64::from(cfg.max_resample_fraction) * batch.root_count() as f64;
    if expected_budget >= usize::MAX as f64 {
        assert_eq!(p.budget(), usize::MAX, "a budget beyond usize saturates");
    } else {
        let b = p.budget() as f64;
        assert!(
            b <= expected_budget + 1e-6 && (b + 1.0 > expected_budget || b == expected_budget),
            "budget {b} is not floor({expected_budget})"
        );
    }
    assert_eq!(p.spent_before(), batch.branch_count());
    let mut left = p.budget().saturating_sub(p.spent_before());
    assert!(p.resample_count() <= left, "plan exceeds its budget");
    assert_eq!(p.prefixes().len(), p.requests().len());
    if round > cfg.max_rounds {
        assert!(p.is_empty(), "requests after max_rounds");
    }
    for (r, x) in p.requests().iter().zip(p.prefixes()) {
        assert_eq!(
            r.count,
            cfg.resamples_per_prefix.min(left),
            "greedy budget split"
        );
        assert!(r.count >= 1);
        left -= r.count;
        assert_eq!((x.trajectory, x.prefix_len), (r.parent, r.prefix_len));
        let (g, t) = batch
            .find(r.parent)
            .expect("a request names a trajectory of the batch");
        assert_eq!(x.group, g.id());
        assert!(t.is_root(), "a request's parent is a branch");
        assert!(
            r.prefix_len < t.len(),
            "a prefix leaves nothing to resample"
        );
    }
    assert!(
        p.prefixes().is_sorted_by(|a, b| rank_order(a, b).is_le()),
        "requests are not in rank order"
    );
    let parents: BTreeSet<TrajectoryId> = p.requests().iter().map(|r| r.parent).collect();
    assert_eq!(
        parents.len(),
        p.requests().len(),
        "two requests share a parent"
    );
    if p.requests().is_empty() && round > cfg.max_rounds {
        return;
    }
    if round == 1 {
        let mut per_group: BTreeMap<u32, usize> = BTreeMap::new();
        for r in p.requests() {
            let (g, t) = batch.find(r.parent).expect("parent");
            let members: Vec<&Trajectory> = g.roots().filter(|t| t.uses_tools()).collect();
            assert!(
                t.uses_tools(),
                "round 1 request for a rollout without tool calls"
            );
            assert!(
                all_wrong(&cfg.correctness, members.iter().map(|m| m.reward())),
                "round 1 request for a tool subgroup that is not all wrong"
            );
            let cuts: Vec<usize> = call_starts(t, cfg.calls)
                .into_iter()
                .map(|s| cut_of(s, cfg.cut))
                .collect();
            assert!(
                cuts.contains(&r.prefix_len),
                "prefix {} is not a configured cut of {:?}",
                r.prefix_len,
                t.id()
            );
            *per_group.entry(g.id().0).or_default() += 1;
        }
        for (g, n) in &per_group {
            assert!(*n <= cfg.prefixes_per_subgroup, "group {g}: {n} prefixes");
        }
        if left > 0 {
            // Budget left over: every all-wrong subgroup got every prefix it could.
            for g in batch.groups() {
                let members: Vec<&Trajectory> = g.roots().filter(|t| t.uses_tools()).collect();
                if !all_wrong(&cfg.correctness, members.iter().map(|m| m.reward())) {
                    continue;
                }
                let eligible = members
                    .iter()
                    .filter(|t| {
                        call_starts(t, cfg.calls)
                            .into_iter()
                            .any(|s| cut_of(s, cfg.cut) < t.len())
                    })
                    .count();
                let got = per_group.get(&g.id().0).copied().unwrap_or(0);
                assert_eq!(
                    got,
                    eligible.min(cfg.prefixes_per_subgroup),
                    "budget left but {:?} got {got} of {eligible} prefixes",
                    g.id()
                );
            }
        }
    } else {
        for r in p.requests() {
            let (g, t) = batch.find(r.parent).expect("parent");
            let branches: Vec<&Trajectory> = g.branches_of(t.id()).collect();
            assert!(!branches.is_empty(), "a retry of a prefix never resampled");
            for b in &branches {
                let Origin::Branch { prefix_len, .. } = b.origin() else {
                    unreachable!()
                };
                assert_eq!(prefix_len, r.prefix_len, "a retry moved the prefix");
            }
            assert!(
                all_wrong(
                    &cfg.correctness,
                    std::iter::once(t.reward()).chain(branches.iter().map(|b| b.reward()))
                ),
                "a retry of a sibling set that is not all wrong"
            );
        }
        if left > 0 && round <= cfg.max_rounds {
            // Budget left over: every sibling set that is still all wrong is retried.
            for g in batch.groups() {
                for t in g.roots() {
                    let branches: Vec<&Trajectory> = g.branches_of(t.id()).collect();
                    let rewards =
                        std::iter::once(t.reward()).chain(branches.iter().map(|b| b.reward()));
                    if !branches.is_empty() && all_wrong(&cfg.correctness, rewards) {
                        assert!(
                            parents.contains(&t.id()),
                            "budget left but {} not retried",
                            t.id()
                        );
                    }
                }
            }
        }
    }
}

fn check_merged(before: &Batch, after: &Batch, p: &ResamplePlan, returned: &[BranchRollout]) {
    assert_eq!(after.groups().len(), before.groups().len());
    assert_eq!(
        after.branch_count(),
        before.branch_count() + returned.len(),
        "a merge lost or invented branches"
    );
    Batch::new(after.groups().to_vec())
        .unwrap_or_else(|e| panic!("a merged batch no longer validates: {e:?}"));
    let old: BTreeSet<TrajectoryId> = before.trajectories().map(Trajectory::id).collect();
    let mut fresh = Vec::new();
    for (ga, gb) in after.groups().iter().zip(before.groups()) {
        assert_eq!(ga.id(), gb.id());
        let n = gb.rollouts().len();
        assert_eq!(
            &ga.rollouts()[..n],
            gb.rollouts(),
            "a merge changed old rollouts"
        );
        Group::new(ga.id(), ga.rollouts().to_vec())
            .unwrap_or_else(|e| panic!("a merged group no longer validates: {e:?}"));
        fresh.extend(ga.rollouts()[n..].iter().map(|t| (ga, t)));
    }
    fresh.sort_by_key(|(_, t)| t.id());
    assert_eq!(fresh.len(), returned.len());
    let mut used: BTreeMap<(TrajectoryId, usize), usize> = BTreeMap::new();
    for ((g, t), r) in fresh.iter().zip(returned) {
        assert!(!old.contains(&t.id()), "a branch reuses an id");
        let Origin::Branch {
            parent,
            prefix_len,
            round,
        } = t.origin()
        else {
            panic!("a merged trajectory is not a branch")
        };
        assert_eq!(round, p.round());
        assert_eq!((parent, prefix_len), (r.parent, r.prefix_len));
        *used.entry((parent, prefix_len)).or_default() += 1;
        let par = g.get(parent).expect("the parent is in the branch's group");
        assert!(par.is_root());
        assert!(prefix_len < t.len() && prefix_len <= par.len());
        assert_eq!(t.tokens(), &r.tokens[..]);
        assert_eq!(t.reward(), r.reward);
        assert_eq!(
            t.tokens()[..prefix_len],
            par.tokens()[..prefix_len],
            "prefix tokens differ from the parent's"
        );
        let roles: Vec<Role> = build::roles_of(t, prefix_len);
        assert_eq!(
            roles,
            build::roles_of(par, prefix_len),
            "prefix roles differ"
        );
        let head = par.policy_index(prefix_len);
        assert_eq!(t.policy_index(prefix_len), head);
        assert_eq!(
            t.logprobs()[..head]
                .iter()
                .map(|x| x.to_bits())
                .collect::<Vec<_>>(),
            par.logprobs()[..head]
                .iter()
                .map(|x| x.to_bits())
                .collect::<Vec<_>>(),
            "prefix log-probs are not the parent's"
        );
        assert_eq!(&t.logprobs()[head..], &r.tail_logprobs[..]);
    }
    for ((parent, prefix_len), n) in used {
        let planned: usize = p
            .requests()
            .iter()
            .filter(|r| r.parent == parent && r.prefix_len == prefix_len)
            .map(|r| r.count)
            .sum();
        assert!(
            n <= planned,
            "{parent}: {n} branches for {planned} requested"
        );
    }
}

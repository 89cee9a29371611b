//! Building and validating trajectories, groups and batches from arbitrary input.
//!
//! Input: up to 5 groups of up to 5 candidate trajectories, each with up to 40 tokens, spans
//! that are valid or carry one defect (gap, overlap, empty span, wrong end) or are arbitrary,
//! log-prob counts that match the policy tokens or are off by one, log-probs, entropies and
//! rewards from the edge-case floats (NaN, infinities, positive log-probs...); ids that repeat
//! sometimes.
//!
//! Properties (an independent oracle decides validity):
//! - `Trajectory::new` is `Ok` iff the spans cover `0..len` contiguously with non-empty spans,
//!   there is one log-prob per policy token, every log-prob is finite and `<= MAX_LOGPROB`,
//!   and a scored reward is finite; otherwise the error is the first failing check's variant
//!   (`InvalidSpans`, `LengthMismatch`, `NonFinite`, `OutOfRange`, `NonFiniteReward`).
//! - An `Ok` trajectory keeps its inputs and answers consistently: `role_at` agrees with the
//!   spans, `policy_positions` has one entry per log-prob, `policy_index(len)` is the log-prob
//!   count, `uses_tools` iff a tool-call span exists.
//! - `with_entropies` is `Ok` iff the count matches and all are finite and `>= 0`;
//!   `with_reward` iff the reward is finite or unscorable.
//! - `Group::new` is `Ok` iff non-empty with distinct ids; `Batch::new` iff non-empty with
//!   distinct group ids and distinct trajectory ids across groups; the batch's counts agree.

use std::collections::BTreeSet;

use arbitrary::{Result, Unstructured};

use axpo_core::trajectory::{MAX_LOGPROB, spans_from_roles};
use axpo_core::{Batch, Error, Group, GroupId, Reward, Role, Span, Trajectory, TrajectoryId};

use crate::build::{self, ROLES};

struct Input {
    id: TrajectoryId,
    tokens: Vec<u32>,
    spans: Vec<Span>,
    logprobs: Vec<f32>,
    reward: Reward,
    entropies: Option<Vec<f32>>,
    new_reward: Option<Reward>,
}

fn input(u: &mut Unstructured<'_>) -> Result<Input> {
    let id = TrajectoryId(u.int_in_range(0..=40)?);
    let len = u.int_in_range(0..=40)?;
    let tokens: Vec<u32> = (0..len)
        .map(|_| u.int_in_range(0..=9))
        .collect::<Result<_>>()?;
    let spans = if u.ratio(3u8, 4)? {
        let mut roles = Vec::with_capacity(len);
        for _ in 0..len {
            roles.push(*u.choose(&ROLES)?);
        }
        spans_from_roles(&roles)
    } else {
        build::arbitrary_spans(u, len)?
    };
    let policy: usize = spans
        .iter()
        .filter(|s| s.role.is_policy())
        .map(|s| s.end.min(len).saturating_sub(s.start))
        .sum();
    let n = match u.int_in_range(0u8..=7)? {
        0 => policy + 1,
        1 => policy.saturating_sub(1),
        _ => policy,
    };
    let mut logprobs = Vec::with_capacity(n);
    for _ in 0..n {
        logprobs.push(if u.ratio(7u8, 8)? {
            build::logprob(u)?
        } else {
            build::f32_any(u)?
        });
    }
    let reward = if u.ratio(7u8, 8)? {
        build::reward(u)?
    } else {
        Reward::Scored(build::f32_any(u)?)
    };
    let entropies = if u.arbitrary()? {
        let m = match u.int_in_range(0u8..=7)? {
            0 => n + 1,
            1 => n.saturating_sub(1),
            _ => n,
        };
        let mut e = Vec::with_capacity(m);
        for _ in 0..m {
            e.push(if u.ratio(7u8, 8)? {
                build::entropy(u)?
            } else {
                build::f32_any(u)?
            });
        }
        Some(e)
    } else {
        None
    };
    let new_reward = if u.ratio(1u8, 4)? {
        Some(Reward::Scored(build::f32_any(u)?))
    } else {
        None
    };
    Ok(Input {
        id,
        tokens,
        spans,
        logprobs,
        reward,
        entropies,
        new_reward,
    })
}

/// What `Trajectory::new` must answer: `None` for `Ok`, else the expected error's name.
fn oracle(i: &Input) -> Option<&'static str> {
    let mut at = 0;
    for s in &i.spans {
        if s.start != at || s.end <= s.start {
            return Some("InvalidSpans");
        }
        at = s.end;
    }
    if at != i.tokens.len() {
        return Some("InvalidSpans");
    }
    let policy: usize = i
        .spans
        .iter()
        .filter(|s| s.role.is_policy())
        .map(|s| s.end - s.start)
        .sum();
    if policy != i.logprobs.len() {
        return Some("LengthMismatch");
    }
    if i.logprobs.iter().any(|l| !l.is_finite()) {
        return Some("NonFinite");
    }
    if i.logprobs.iter().any(|&l| l > MAX_LOGPROB) {
        return Some("OutOfRange");
    }
    if let Reward::Scored(r) = i.reward
        && !r.is_finite()
    {
        return Some("NonFiniteReward");
    }
    None
}

fn name(e: &Error) -> &'static str {
    match e {
        Error::InvalidSpans { .. } => "InvalidSpans",
        Error::LengthMismatch { .. } => "LengthMismatch",
        Error::NonFinite { .. } => "NonFinite",
        Error::OutOfRange { .. } => "OutOfRange",
        Error::NonFiniteReward { .. } => "NonFiniteReward",
        Error::EmptyGroup { .. } => "EmptyGroup",
        Error::EmptyBatch => "EmptyBatch",
        Error::DuplicateTrajectory { .. } => "DuplicateTrajectory",
        Error::DuplicateGroup { .. } => "DuplicateGroup",
        _ => "other",
    }
}

fn check_trajectory(t: &Trajectory, i: &Input) {
    assert_eq!(t.id(), i.id);
    assert!(t.is_root());
    assert_eq!(t.tokens(), &i.tokens[..]);
    assert_eq!(t.spans(), &i.spans[..]);
    assert_eq!(t.logprobs(), &i.logprobs[..]);
    assert_eq!(t.len(), i.tokens.len());
    let mut policy = Vec::new();
    for s in &i.spans {
        for p in s.start..s.end {
            assert_eq!(t.role_at(p), Some(s.role), "role_at({p})");
            assert_eq!(t.policy_index(p), policy.len(), "policy_index({p})");
            if s.role.is_policy() {
                policy.push(p);
            }
        }
    }
    assert_eq!(t.role_at(i.tokens.len()), None, "role_at(len)");
    assert_eq!(t.policy_positions().collect::<Vec<_>>(), policy);
    assert_eq!(t.policy_index(t.len()), t.logprobs().len());
    assert_eq!(
        t.uses_tools(),
        i.spans.iter().any(|s| s.role == Role::ToolCall)
    );
}

/// Runs one input.
pub fn run(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let groups = u.int_in_range(0..=5usize).unwrap_or(0);
    let mut built: Vec<Group> = Vec::new();
    let mut expect_batch_ok = groups > 0;
    let mut gids = BTreeSet::new();
    let mut tids = BTreeSet::new();
    for _ in 0..groups {
        let Ok(n) = u.int_in_range(0..=5usize) else {
            return;
        };
        let mut rollouts = Vec::new();
        for _ in 0..n {
            let Ok(i) = input(&mut u) else { return };
            let made = Trajectory::new(
                i.id,
                i.tokens.clone(),
                i.spans.clone(),
                i.logprobs.clone(),
                i.reward,
            );
            let t = match (made, oracle(&i)) {
                (Ok(t), None) => t,
                (Err(e), Some(want)) => {
                    assert_eq!(name(&e), want, "Trajectory::new: wrong error {e:?}");
                    continue;
                }
                (Ok(_), Some(want)) => panic!("Trajectory::new accepted an input with {want}"),
                (Err(e), None) => panic!("Trajectory::new refused a valid input: {e:?}"),
            };
            check_trajectory(&t, &i);
            let t = match &i.entropies {
                Some(e) => {
                    let valid = e.len() == t.logprobs().len()
                        && e.iter().all(|x| x.is_finite() && *x >= 0.0);
                    match t.clone().with_entropies(e.clone()) {
                        Ok(t2) => {
                            assert!(valid, "with_entropies accepted {e:?}");
                            assert_eq!(t2.entropies(), Some(&e[..]));
                            t2
                        }
                        Err(err) => {
                            assert!(!valid, "with_entropies refused valid entropies: {err:?}");
                            assert!(
                                matches!(
                                    err,
                                    Error::LengthMismatch { .. }
                                        | Error::NonFinite { .. }
                                        | Error::OutOfRange { .. }
                                ),
                                "with_entropies: wrong error {err:?}"
                            );
                            t
                        }
                    }
                }
                None => t,
            };
            let t = match i.new_reward {
                Some(r) => {
                    let valid = r.score().is_none_or(f32::is_finite);
                    match t.clone().with_reward(r) {
                        Ok(t2) => {
                            assert!(valid);
                            assert_eq!(t2.reward(), r);
                            t2
                        }
                        Err(err) => {
                            assert!(!valid, "with_reward refused {r:?}");
                            assert!(matches!(err, Error::NonFiniteReward { .. }), "{err:?}");
                            t
                        }
                    }
                }
                None => t,
            };
            rollouts.push(t);
        }
        let gid = GroupId(u.int_in_range(0..=5).unwrap_or(0));
        let ids: BTreeSet<TrajectoryId> = rollouts.iter().map(Trajectory::id).collect();
        let distinct = ids.len() == rollouts.len();
        match Group::new(gid, rollouts.clone()) {
            Ok(g) => {
                assert!(
                    !rollouts.is_empty() && distinct,
                    "Group::new accepted a bad group"
                );
                assert_eq!(g.rollouts(), &rollouts[..]);
                assert_eq!(g.roots().count(), rollouts.len());
                if !gids.insert(gid) {
                    expect_batch_ok = false;
                }
                for id in ids {
                    if !tids.insert(id) {
                        expect_batch_ok = false;
                    }
                }
                built.push(g);
            }
            Err(e) => {
                let want = if rollouts.is_empty() {
                    "EmptyGroup"
                } else {
                    "DuplicateTrajectory"
                };
                assert!(
                    rollouts.is_empty() || !distinct,
                    "Group::new refused a valid group: {e:?}"
                );
                assert_eq!(name(&e), want, "Group::new: wrong error {e:?}");
            }
        }
    }
    if built.is_empty() {
        expect_batch_ok = false;
    }
    let total: usize = built.iter().map(|g| g.rollouts().len()).sum();
    match Batch::new(built.clone()) {
        Ok(b) => {
            assert!(
                expect_batch_ok,
                "Batch::new accepted repeated ids or no groups"
            );
            assert_eq!(b.groups(), &built[..]);
            assert_eq!(b.root_count(), total);
            assert_eq!(b.branch_count(), 0);
            assert_eq!(b.last_round(), 0);
            let max = b.trajectories().map(|t| t.id().0).max().unwrap_or(0);
            assert_eq!(b.next_id(), max.checked_add(1).map(TrajectoryId));
            for t in b.trajectories() {
                let (g, found) = b.find(t.id()).expect("find every trajectory");
                assert_eq!(found, t);
                assert!(g.get(t.id()).is_some());
            }
        }
        Err(e) => {
            assert!(!expect_batch_ok, "Batch::new refused a valid batch: {e:?}");
            assert!(
                matches!(
                    e,
                    Error::EmptyBatch
                        | Error::DuplicateGroup { .. }
                        | Error::DuplicateTrajectory { .. }
                ),
                "Batch::new: wrong error {e:?}"
            );
        }
    }
}

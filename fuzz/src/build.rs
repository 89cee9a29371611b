//! Generators: fuzz bytes to floats that hit the edge cases, and to valid trajectories,
//! batches, plan configurations and engine answers (plus hostile variants of them).
//!
//! Every generator takes an [`Unstructured`] and returns `arbitrary::Result`; when the bytes run
//! out, `Unstructured` yields the smallest choice, so any byte string decodes to *some* input.
//! Generators of valid inputs panic if the library rejects what they built: that is a finding
//! (a valid input refused), not a bad input.

use arbitrary::{Result, Unstructured};

use axpo_core::plan::ResamplePlan;
use axpo_core::subgroup::Correctness;
use axpo_core::trajectory::spans_from_roles;
use axpo_core::{
    Batch, BranchRollout, CallChoice, CutPoint, Group, GroupId, PlanConfig, Reward, Role,
    SelectionStrategy, Span, Trajectory, TrajectoryId, UncertaintyScore,
};

/// The token that opens every generated tool call (the core does not read token ids, but a
/// distinct id makes prefix mismatches visible).
pub const CALL_OPEN: u32 = 900;

/// An f32 drawn to hit edge cases: NaN, infinities, signed zeros, the extremes, subnormals, or
/// a moderate value, or any bit pattern.
pub fn f32_any(u: &mut Unstructured<'_>) -> Result<f32> {
    Ok(match u.int_in_range(0u8..=19)? {
        0 => f32::NAN,
        1 => f32::INFINITY,
        2 => f32::NEG_INFINITY,
        3 => f32::from_bits(u.arbitrary()?),
        _ => f32_finite(u)?,
    })
}

/// A finite f32 drawn to hit edge cases (signed zeros, the extremes, subnormals, powers of ten
/// across the range) or a moderate value.
pub fn f32_finite(u: &mut Unstructured<'_>) -> Result<f32> {
    let sign = if u.arbitrary::<bool>()? { -1.0 } else { 1.0 };
    Ok(match u.int_in_range(0u8..=15)? {
        0 => 0.0,
        1 => -0.0,
        2 => sign * f32::MAX,
        3 => sign * f32::MIN_POSITIVE,
        4 => sign * f32::from_bits(1), // the smallest subnormal
        5 => sign * 10f32.powi(u.int_in_range(-45..=38)?),
        6 => {
            let v = f32::from_bits(u.arbitrary()?);
            if v.is_finite() { v } else { 1.0 }
        }
        _ => moderate(u, -30.0, 30.0)? as f32,
    })
}

/// An f64 drawn to hit edge cases (see [`f32_any`]).
pub fn f64_any(u: &mut Unstructured<'_>) -> Result<f64> {
    Ok(match u.int_in_range(0u8..=19)? {
        0 => f64::NAN,
        1 => f64::INFINITY,
        2 => f64::NEG_INFINITY,
        3 => f64::from_bits(u.arbitrary()?),
        _ => f64_finite(u)?,
    })
}

/// A finite f64 drawn to hit edge cases (see [`f32_finite`]).
pub fn f64_finite(u: &mut Unstructured<'_>) -> Result<f64> {
    let sign = if u.arbitrary::<bool>()? { -1.0 } else { 1.0 };
    Ok(match u.int_in_range(0u8..=15)? {
        0 => 0.0,
        1 => -0.0,
        2 => sign * f64::MAX,
        3 => sign * f64::MIN_POSITIVE,
        4 => sign * f64::from_bits(1),
        5 => sign * 10f64.powi(u.int_in_range(-320..=308)?),
        6 => f64::from(f32_finite(u)?),
        7 => {
            let v = f64::from_bits(u.arbitrary()?);
            if v.is_finite() { v } else { 1.0 }
        }
        _ => moderate(u, -30.0, 30.0)?,
    })
}

/// A value in `[lo, hi]` on a grid of 65536 steps.
pub fn moderate(u: &mut Unstructured<'_>, lo: f64, hi: f64) -> Result<f64> {
    let t = f64::from(u.arbitrary::<u16>()?) / f64::from(u16::MAX);
    Ok(lo + (hi - lo) * t)
}

/// A valid rollout log-prob: at most [`axpo_core::trajectory::MAX_LOGPROB`], finite.
pub fn logprob(u: &mut Unstructured<'_>) -> Result<f32> {
    Ok(match u.int_in_range(0u8..=11)? {
        0 => 0.0,
        1 => -0.0,
        2 => axpo_core::trajectory::MAX_LOGPROB,
        3 => -f32::MAX,
        4 => -f32::from_bits(1),
        5 => -10f32.powi(u.int_in_range(-45..=38)?),
        _ => -moderate(u, 0.0, 12.0)? as f32,
    })
}

/// A valid entropy: finite and not negative.
pub fn entropy(u: &mut Unstructured<'_>) -> Result<f32> {
    Ok(match u.int_in_range(0u8..=9)? {
        0 => 0.0,
        1 => -0.0,
        2 => f32::MAX,
        3 => 10f32.powi(u.int_in_range(-45..=38)?),
        _ => moderate(u, 0.0, 8.0)? as f32,
    })
}

/// A reward: mostly 0 (wrong) and 1 (correct) so that all-wrong subgroups are common, sometimes
/// unscorable, sometimes any finite value (huge and tiny included).
pub fn reward(u: &mut Unstructured<'_>) -> Result<Reward> {
    Ok(match u.int_in_range(0u8..=15)? {
        0..=6 => Reward::Scored(0.0),
        7..=10 => Reward::Scored(1.0),
        11 | 12 => Reward::Unscorable,
        13 => Reward::Scored(0.5),
        _ => Reward::Scored(f32_finite(u)?),
    })
}

fn push(roles: &mut Vec<Role>, role: Role, n: usize) {
    roles.extend(std::iter::repeat_n(role, n));
}

/// The role layout of a root rollout: prompt, thinking, tool calls each followed by a tool
/// response and more thinking, an answer, padding; each part possibly empty. One time in
/// sixteen, any sequence of roles instead.
pub fn root_roles(u: &mut Unstructured<'_>) -> Result<Vec<Role>> {
    let mut r = Vec::new();
    if u.ratio(1u8, 16)? {
        let n = u.int_in_range(0..=12)?;
        for _ in 0..n {
            r.push(*u.choose(&ROLES)?);
        }
        return Ok(r);
    }
    push(&mut r, Role::Prompt, u.int_in_range(0..=3)?);
    push(&mut r, Role::Think, u.int_in_range(0..=4)?);
    for _ in 0..u.int_in_range(0..=3)? {
        push(&mut r, Role::ToolCall, u.int_in_range(1..=4)?);
        push(&mut r, Role::ToolResponse, u.int_in_range(0..=3)?);
        push(&mut r, Role::Think, u.int_in_range(0..=2)?);
    }
    push(&mut r, Role::Answer, u.int_in_range(0..=3)?);
    if u.ratio(1u8, 4)? {
        push(&mut r, Role::Pad, u.int_in_range(1..=2)?);
    }
    Ok(r)
}

/// Every role.
pub const ROLES: [Role; 6] = [
    Role::Prompt,
    Role::Think,
    Role::ToolCall,
    Role::Answer,
    Role::ToolResponse,
    Role::Pad,
];

/// Token ids for a role layout: [`CALL_OPEN`] where a tool-call span starts, small ids
/// elsewhere (so that equal tokens are common).
pub fn tokens_for(u: &mut Unstructured<'_>, roles: &[Role]) -> Result<Vec<u32>> {
    let mut t = Vec::with_capacity(roles.len());
    for (i, &role) in roles.iter().enumerate() {
        let opens_call = role == Role::ToolCall && (i == 0 || roles[i - 1] != Role::ToolCall);
        t.push(if opens_call {
            CALL_OPEN
        } else {
            u.int_in_range(0..=15)?
        });
    }
    Ok(t)
}

/// Log-probs and (optionally) entropies for `n` policy tokens.
pub fn token_stats(
    u: &mut Unstructured<'_>,
    n: usize,
    with_entropies: bool,
) -> Result<(Vec<f32>, Option<Vec<f32>>)> {
    let mut lp = Vec::with_capacity(n);
    for _ in 0..n {
        lp.push(logprob(u)?);
    }
    let en = if with_entropies {
        let mut e = Vec::with_capacity(n);
        for _ in 0..n {
            e.push(entropy(u)?);
        }
        Some(e)
    } else {
        None
    };
    Ok((lp, en))
}

/// A valid root trajectory.
///
/// # Panics
/// If the core rejects it (a valid input refused).
pub fn root(
    u: &mut Unstructured<'_>,
    id: TrajectoryId,
    with_entropies: bool,
) -> Result<Trajectory> {
    let roles = root_roles(u)?;
    let tokens = tokens_for(u, &roles)?;
    let spans = spans_from_roles(&roles);
    let n = roles.iter().filter(|r| r.is_policy()).count();
    let (lp, en) = token_stats(u, n, with_entropies)?;
    let t = Trajectory::new(id, tokens, spans, lp, reward(u)?)
        .unwrap_or_else(|e| panic!("a valid root trajectory was refused: {e:?}"));
    Ok(match en {
        Some(e) => t
            .with_entropies(e)
            .unwrap_or_else(|e| panic!("valid entropies were refused: {e:?}")),
        None => t,
    })
}

/// A valid batch of root rollouts: 1 to 4 groups of 1 to 6 rollouts. Ids are consecutive from
/// 0, from a random base, or up to `u32::MAX`; entropies are attached to all, none or some.
///
/// # Panics
/// If the core rejects it.
pub fn batch(u: &mut Unstructured<'_>) -> Result<Batch> {
    let groups = u.int_in_range(1..=4usize)?;
    let sizes: Vec<usize> = (0..groups)
        .map(|_| u.int_in_range(1..=6usize))
        .collect::<Result<_>>()?;
    let total = sizes.iter().sum::<usize>() as u32;
    let base = match u.int_in_range(0u8..=7)? {
        0 => u32::MAX - total + 1,                      // the last id is u32::MAX
        1 => u32::MAX - total - u.int_in_range(0..=3)?, // just below it
        2 => u.arbitrary::<u32>()?.min(u32::MAX - total),
        _ => 0,
    };
    let entropy_mode = u.int_in_range(0u8..=3)?;
    let mut id = base;
    let mut out = Vec::with_capacity(groups);
    for (g, &size) in sizes.iter().enumerate() {
        let mut rollouts = Vec::with_capacity(size);
        for _ in 0..size {
            let with_entropies = match entropy_mode {
                0 => false,
                1 => u.arbitrary()?,
                _ => true,
            };
            rollouts.push(root(u, TrajectoryId(id), with_entropies)?);
            id = id.wrapping_add(1);
        }
        let gid = GroupId(if u.ratio(1u8, 8)? {
            u.arbitrary()?
        } else {
            g as u32
        });
        out.push(
            Group::new(gid, rollouts)
                .unwrap_or_else(|e| panic!("a valid group was refused: {e:?}")),
        );
    }
    let ids: std::collections::BTreeSet<u32> = out.iter().map(|g| g.id().0).collect();
    if ids.len() != out.len() {
        // Repeated random group ids: the batch must be refused, with the right error.
        let e = Batch::new(out).expect_err("a batch with repeated group ids was accepted");
        assert!(
            matches!(e, axpo_core::Error::DuplicateGroup { .. }),
            "repeated group ids: wrong error {e:?}"
        );
        return Err(arbitrary::Error::IncorrectFormat);
    }
    Ok(Batch::new(out).unwrap_or_else(|e| panic!("a valid batch was refused: {e:?}")))
}

/// A plan configuration, valid or not: every cut, call choice, score, strategy; K, prefixes per
/// subgroup and rounds from 0; budget fractions and temperatures from [`f32_any`].
pub fn plan_config(u: &mut Unstructured<'_>) -> Result<PlanConfig> {
    let cut = if u.arbitrary()? {
        CutPoint::AfterCallOpen
    } else {
        CutPoint::BeforeCall
    };
    let calls = *u.choose(&[CallChoice::All, CallChoice::First, CallChoice::Last])?;
    let score = match u.int_in_range(0u8..=3)? {
        0 => UncertaintyScore::CallEntropy,
        1 => UncertaintyScore::DecisionEntropy,
        2 => UncertaintyScore::PrefixEntropy {
            window: if u.ratio(1u8, 8)? {
                u.arbitrary()?
            } else {
                u.int_in_range(0..=6)?
            },
        },
        _ => UncertaintyScore::Surprisal,
    };
    let strategy = match u.int_in_range(0u8..=2)? {
        0 => SelectionStrategy::TopK,
        1 => SelectionStrategy::Uniform,
        _ => SelectionStrategy::Proportional {
            temperature: if u.ratio(1u8, 2)? {
                moderate(u, 0.05, 4.0)? as f32
            } else {
                f32_any(u)?
            },
        },
    };
    let fraction = match u.int_in_range(0u8..=7)? {
        0 => f32_any(u)?,
        1 => 0.0,
        2 => moderate(u, 0.0, 8.0)? as f32,
        _ => *u.choose(&[0.25f32, 0.5, 1.0, 2.0])?,
    };
    let threshold = match u.int_in_range(0u8..=7)? {
        0 => f32_any(u)?,
        1 => 0.5,
        _ => 1.0,
    };
    let correctness = match Correctness::new(threshold) {
        Ok(c) => c,
        Err(e) => {
            assert!(
                !threshold.is_finite() && matches!(e, axpo_core::Error::InvalidConfig { .. }),
                "Correctness::new({threshold}) refused a finite threshold or with {e:?}"
            );
            Correctness::default()
        }
    };
    Ok(PlanConfig::default()
        .with_cut(cut)
        .with_calls(calls)
        .with_score(score)
        .with_strategy(strategy)
        .with_resamples_per_prefix(u.int_in_range(0..=5)?)
        .with_prefixes_per_subgroup(u.int_in_range(0..=3)?)
        .with_max_resample_fraction(fraction)
        .with_max_rounds(u.int_in_range(0..=4)?)
        .with_correctness(correctness))
}

/// The roles of a trajectory's first `n` positions.
pub fn roles_of(t: &Trajectory, n: usize) -> Vec<Role> {
    (0..n)
        .map(|p| t.role_at(p).expect("position inside the trajectory"))
        .collect()
}

/// A valid engine answer to one request: the parent's exact prefix (tokens and roles) and a
/// non-empty random tail, with tail log-probs (and maybe entropies) and a reward.
pub fn branch(
    u: &mut Unstructured<'_>,
    parent: &Trajectory,
    prefix_len: usize,
) -> Result<BranchRollout> {
    let mut roles = roles_of(parent, prefix_len);
    let mut tail = root_roles(u)?;
    if tail.is_empty() {
        tail.push(Role::Answer);
    }
    roles.extend_from_slice(&tail);
    let mut tokens = parent.tokens()[..prefix_len].to_vec();
    tokens.extend(tokens_for(u, &tail)?);
    let spans = spans_from_roles(&roles);
    let n = tail.iter().filter(|r| r.is_policy()).count();
    let with_entropies = u.int_in_range(0u8..=3)? != 0;
    let (lp, en) = token_stats(u, n, with_entropies)?;
    Ok(BranchRollout {
        parent: parent.id(),
        prefix_len,
        tokens,
        spans,
        tail_logprobs: lp,
        tail_entropies: en,
        reward: reward(u)?,
    })
}

/// Valid answers to a plan: between 0 and `count` branches for each request, in request order.
pub fn answers(
    u: &mut Unstructured<'_>,
    plan: &ResamplePlan,
    batch: &Batch,
) -> Result<Vec<BranchRollout>> {
    let mut out = Vec::new();
    for r in plan.requests() {
        let (_, parent) = batch
            .find(r.parent)
            .expect("a planned parent is in the batch");
        let n = if u.ratio(3u8, 4)? {
            r.count
        } else {
            u.int_in_range(0..=r.count)?
        };
        for _ in 0..n {
            out.push(branch(u, parent, r.prefix_len)?);
        }
    }
    Ok(out)
}

/// Answers with one hostile change (or entirely random branches): a token or role changed inside
/// the prefix, an unknown or non-root parent, a shifted prefix length, one branch too many, a
/// log-prob count off by one, NaN or positive log-probs, a non-finite reward, no tail, spans
/// with a gap, bad entropies. The result may still be acceptable (the change may be a no-op).
pub fn hostile_answers(
    u: &mut Unstructured<'_>,
    plan: &ResamplePlan,
    batch: &Batch,
) -> Result<Vec<BranchRollout>> {
    let mut out = answers(u, plan, batch)?;
    if out.is_empty() || u.ratio(1u8, 8)? {
        for _ in 0..u.int_in_range(1..=3)? {
            out.push(random_branch(u, batch)?);
        }
        return Ok(out);
    }
    let i = u.choose_index(out.len())?;
    let b = &mut out[i];
    match u.int_in_range(0u8..=13)? {
        0 if b.prefix_len > 0 => {
            let p = u.choose_index(b.prefix_len)?;
            b.tokens[p] = b.tokens[p].wrapping_add(1);
        }
        1 if b.prefix_len > 0 => {
            // Change the role of one prefix position and rebuild the spans.
            let (_, parent) = batch.find(b.parent).expect("parent");
            let mut roles = roles_of(parent, b.prefix_len);
            let tail: Vec<Role> = (b.prefix_len..b.tokens.len())
                .map(|p| role_in(&b.spans, p))
                .collect();
            let p = u.choose_index(b.prefix_len)?;
            roles[p] = *u.choose(&ROLES)?;
            roles.extend(tail);
            b.spans = spans_from_roles(&roles);
        }
        2 => b.parent = TrajectoryId(u.arbitrary()?),
        3 => {
            // Another trajectory of the batch (maybe a branch, maybe in another group).
            let all: Vec<TrajectoryId> = batch.trajectories().map(|t| t.id()).collect();
            b.parent = *u.choose(&all)?;
        }
        4 => b.prefix_len = b.prefix_len.wrapping_add(1),
        5 => b.prefix_len = b.prefix_len.wrapping_sub(1),
        6 => {
            let extra = b.clone();
            out.push(extra);
        }
        7 => {
            if u.arbitrary()? {
                b.tail_logprobs.push(-1.0);
            } else {
                b.tail_logprobs.pop();
            }
        }
        8 if !b.tail_logprobs.is_empty() => {
            let k = u.choose_index(b.tail_logprobs.len())?;
            b.tail_logprobs[k] = *u.choose(&[f32::NAN, f32::INFINITY, 0.5, f32::MAX])?;
        }
        9 => b.reward = Reward::Scored(*u.choose(&[f32::NAN, f32::INFINITY, f32::NEG_INFINITY])?),
        10 => {
            b.tokens.truncate(b.prefix_len);
            let len = b.tokens.len();
            b.spans.retain(|s| s.start < len);
            if let Some(last) = b.spans.last_mut() {
                last.end = len;
            }
        }
        11 if b.spans.len() > 1 => {
            let k = u.choose_index(b.spans.len() - 1)?;
            b.spans[k].end -= 1;
        }
        12 => {
            let n = b.tail_logprobs.len();
            b.tail_entropies = Some(match u.int_in_range(0u8..=2)? {
                0 => vec![1.0; n + 1],
                1 => vec![-1.0; n],
                _ => vec![f32::NAN; n],
            });
        }
        _ => {
            let extra = random_branch(u, batch)?;
            out.push(extra);
        }
    }
    Ok(out)
}

fn role_in(spans: &[Span], p: usize) -> Role {
    spans
        .iter()
        .find(|s| s.start <= p && p < s.end)
        .map_or(Role::Pad, |s| s.role)
}

/// A random branch: any parent id of the batch (or not), any prefix length, any tokens and
/// spans (valid or not), any log-probs.
pub fn random_branch(u: &mut Unstructured<'_>, batch: &Batch) -> Result<BranchRollout> {
    let all: Vec<TrajectoryId> = batch.trajectories().map(|t| t.id()).collect();
    let parent = if u.ratio(7u8, 8)? {
        *u.choose(&all)?
    } else {
        TrajectoryId(u.arbitrary()?)
    };
    let roles = root_roles(u)?;
    let tokens = tokens_for(u, &roles)?;
    let mut spans = spans_from_roles(&roles);
    if u.ratio(1u8, 4)? {
        spans = arbitrary_spans(u, tokens.len())?;
    }
    let n = u.int_in_range(0..=roles.len() + 1)?;
    let mut lp = Vec::with_capacity(n);
    for _ in 0..n {
        lp.push(if u.ratio(7u8, 8)? {
            logprob(u)?
        } else {
            f32_any(u)?
        });
    }
    Ok(BranchRollout {
        parent,
        prefix_len: u.int_in_range(0..=tokens.len() + 1)?,
        tokens,
        spans,
        tail_logprobs: lp,
        tail_entropies: None,
        reward: reward(u)?,
    })
}

/// Spans over `len` tokens that are often almost valid: contiguous runs with a random defect
/// (a gap, an overlap, an empty span, a short or long end) or any values at all.
pub fn arbitrary_spans(u: &mut Unstructured<'_>, len: usize) -> Result<Vec<Span>> {
    if u.ratio(1u8, 4)? {
        let n = u.int_in_range(0..=6)?;
        let mut v = Vec::with_capacity(n);
        for _ in 0..n {
            let start = small_or_any(u)?;
            let end = small_or_any(u)?;
            v.push(Span {
                role: *u.choose(&ROLES)?,
                start,
                end,
            });
        }
        return Ok(v);
    }
    let mut roles = Vec::with_capacity(len);
    for _ in 0..len {
        roles.push(*u.choose(&ROLES)?);
    }
    let mut spans = spans_from_roles(&roles);
    if !spans.is_empty() && u.arbitrary()? {
        let k = u.choose_index(spans.len())?;
        match u.int_in_range(0u8..=5)? {
            0 => spans[k].start = spans[k].start.wrapping_add(1),
            1 => spans[k].start = spans[k].start.wrapping_sub(1),
            2 => spans[k].end = spans[k].end.wrapping_add(1),
            3 => spans[k].end = spans[k].end.wrapping_sub(1),
            4 => spans[k].end = spans[k].start,
            _ => {
                spans.remove(k);
            }
        }
    } else if u.ratio(1u8, 8)? {
        let at = spans.last().map_or(0, |s| s.end);
        spans.push(Span {
            role: *u.choose(&ROLES)?,
            start: at,
            end: at,
        });
    }
    Ok(spans)
}

fn small_or_any(u: &mut Unstructured<'_>) -> Result<usize> {
    if u.ratio(7u8, 8)? {
        u.int_in_range(0..=20)
    } else {
        u.arbitrary()
    }
}

//! Thinking prefixes: where to cut a failed tool-using rollout, how uncertain each cut is, and
//! how to choose among them (spec sections 5 and 6).

use alloc::vec::Vec;

use crate::error::{Error, Result};
use crate::rng::Rng;
use crate::trajectory::{GroupId, Role, Span, Trajectory, TrajectoryId};

/// Where the frozen prefix ends relative to a tool call starting at position `c`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub enum CutPoint {
    /// Freeze `0..=c`, the call's opening token included: the policy must act, and resamples the
    /// call's content and everything after it.
    #[default]
    AfterCallOpen,
    /// Freeze `0..c`: the decision to act is resampled too.
    BeforeCall,
}

/// Which tool calls of a trajectory are candidates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub enum CallChoice {
    /// The first call only.
    First,
    /// The last call only.
    Last,
    /// Every call; the most uncertain one of the trajectory is kept.
    #[default]
    All,
}

/// The uncertainty score of a candidate prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub enum UncertaintyScore {
    /// Mean entropy over the call tokens that would be resampled. A near-deterministic failed
    /// call resamples into the same failure; an uncertain one yields different calls.
    #[default]
    CallEntropy,
    /// Entropy at the position that opens the call (the decision to act).
    DecisionEntropy,
    /// Mean entropy of the last `window` thinking tokens before the call.
    PrefixEntropy {
        /// Number of thinking tokens averaged (at least 1).
        window: usize,
    },
    /// Mean surprisal `-log p` of the sampled call tokens that would be resampled (needs no
    /// entropies).
    Surprisal,
}

impl UncertaintyScore {
    /// Whether the score reads per-token entropies.
    #[must_use]
    pub fn needs_entropies(&self) -> bool {
        !matches!(self, Self::Surprisal)
    }
}

/// How prefixes are chosen among candidates.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub enum SelectionStrategy {
    /// The most uncertain, deterministically.
    #[default]
    TopK,
    /// Seeded sampling without replacement with probability proportional to `u^(1/temperature)`
    /// (uniform when every score is zero).
    Proportional {
        /// Sharpness: below 1 favours the most uncertain, above 1 flattens.
        temperature: f32,
    },
    /// Seeded uniform sampling without replacement (the ablation baseline).
    Uniform,
}

/// A candidate cut of a failed tool-using rollout: the frozen thinking prefix and its score.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ThinkingPrefix {
    /// The rollout.
    pub trajectory: TrajectoryId,
    /// Its group.
    pub group: GroupId,
    /// Index of the tool call among the rollout's calls.
    pub call_index: usize,
    /// Position of the call's opening token.
    pub call_start: usize,
    /// Number of frozen tokens.
    pub prefix_len: usize,
    /// The uncertainty score (higher = more uncertain).
    pub uncertainty: f32,
}

/// Ranking order: more uncertain first, then lower trajectory id, then earlier position.
#[must_use]
pub fn rank_order(a: &ThinkingPrefix, b: &ThinkingPrefix) -> core::cmp::Ordering {
    b.uncertainty
        .total_cmp(&a.uncertainty)
        .then(a.trajectory.cmp(&b.trajectory))
        .then(a.prefix_len.cmp(&b.prefix_len))
}

/// Mean of `values`, or 0 for none.
fn mean(values: impl Iterator<Item = f32>) -> f32 {
    let (mut s, mut n) = (0.0f64, 0usize);
    for v in values {
        s += f64::from(v);
        n += 1;
    }
    if n == 0 { 0.0 } else { (s / n as f64) as f32 }
}

/// The score of cutting `trajectory` at the call `span`.
///
/// # Errors
/// [`Error::MissingEntropies`] if the score needs entropies the trajectory lacks.
pub fn score(
    trajectory: &Trajectory,
    call: &Span,
    cut: CutPoint,
    score: UncertaintyScore,
) -> Result<f32> {
    let entropies = || {
        trajectory.entropies().ok_or(Error::MissingEntropies {
            trajectory: trajectory.id(),
        })
    };
    // Policy-token indices of the call tokens that would be resampled.
    let first = match cut {
        CutPoint::AfterCallOpen => call.start + 1,
        CutPoint::BeforeCall => call.start,
    };
    let resampled = trajectory.policy_index(first)..trajectory.policy_index(call.end);
    Ok(match score {
        UncertaintyScore::CallEntropy => {
            let e = entropies()?;
            mean(e[resampled].iter().copied())
        }
        UncertaintyScore::DecisionEntropy => {
            let e = entropies()?;
            e.get(trajectory.policy_index(call.start))
                .copied()
                .unwrap_or(0.0)
        }
        UncertaintyScore::PrefixEntropy { window } => {
            let e = entropies()?;
            let think: Vec<usize> = trajectory
                .spans()
                .iter()
                .filter(|s| s.role == Role::Think && s.start < call.start)
                .flat_map(|s| s.start..s.end.min(call.start))
                .collect();
            let from = think.len().saturating_sub(window);
            mean(think[from..].iter().map(|&p| e[trajectory.policy_index(p)]))
        }
        UncertaintyScore::Surprisal => mean(trajectory.logprobs()[resampled].iter().map(|&l| -l)),
    })
}

/// The candidate prefixes of one rollout, one per chosen call, scored.
///
/// # Errors
/// [`Error::MissingEntropies`].
pub fn candidates(
    trajectory: &Trajectory,
    group: GroupId,
    cut: CutPoint,
    calls: CallChoice,
    uncertainty: UncertaintyScore,
) -> Result<Vec<ThinkingPrefix>> {
    let all: Vec<&Span> = trajectory.tool_calls().collect();
    let chosen: Vec<(usize, &Span)> = match calls {
        CallChoice::First => all.first().map(|s| (0, *s)).into_iter().collect(),
        CallChoice::Last => all
            .last()
            .map(|s| (all.len() - 1, *s))
            .into_iter()
            .collect(),
        CallChoice::All => all.iter().copied().enumerate().collect(),
    };
    let mut out = Vec::with_capacity(chosen.len());
    for (call_index, span) in chosen {
        let prefix_len = match cut {
            CutPoint::AfterCallOpen => span.start + 1,
            CutPoint::BeforeCall => span.start,
        };
        out.push(ThinkingPrefix {
            trajectory: trajectory.id(),
            group,
            call_index,
            call_start: span.start,
            prefix_len,
            uncertainty: score(trajectory, span, cut, uncertainty)?,
        });
    }
    Ok(out)
}

/// Chooses up to `k` of `candidates` by `strategy`, in rank order for `TopK` and draw order
/// otherwise. Deterministic given the generator's state.
///
/// # Errors
/// [`Error::InvalidConfig`] for a non-positive or non-finite temperature.
pub fn select(
    mut candidates: Vec<ThinkingPrefix>,
    k: usize,
    strategy: SelectionStrategy,
    rng: &mut Rng,
) -> Result<Vec<ThinkingPrefix>> {
    candidates.sort_by(rank_order);
    let k = k.min(candidates.len());
    match strategy {
        SelectionStrategy::TopK => {
            candidates.truncate(k);
            Ok(candidates)
        }
        SelectionStrategy::Uniform => {
            let mut out = Vec::with_capacity(k);
            for _ in 0..k {
                let i = rng.below(candidates.len());
                out.push(candidates.remove(i));
            }
            Ok(out)
        }
        SelectionStrategy::Proportional { temperature } => {
            if !(temperature.is_finite() && temperature > 0.0) {
                return Err(Error::InvalidConfig {
                    field: "Proportional temperature",
                    reason: "must be finite and positive",
                });
            }
            let inv_t = 1.0 / f64::from(temperature);
            let mut out = Vec::with_capacity(k);
            for _ in 0..k {
                let w: Vec<f64> = candidates
                    .iter()
                    .map(|c| libm::pow(f64::from(c.uncertainty.max(0.0)), inv_t))
                    .collect();
                let total: f64 = w.iter().sum();
                let i = if total > 0.0 && total.is_finite() {
                    let mut x = rng.next_f64() * total;
                    let mut pick = w.len() - 1;
                    for (j, wj) in w.iter().enumerate() {
                        if x < *wj {
                            pick = j;
                            break;
                        }
                        x -= wj;
                    }
                    pick
                } else {
                    rng.below(candidates.len())
                };
                out.push(candidates.remove(i));
            }
            Ok(out)
        }
    }
}

//! Advantages: GRPO (std modes group, batch, none) and RLOO, and the three ways of crediting
//! resampled branches (spec section 8).
//!
//! Statistics are computed in f64 over *scored* rollouts only; an unscorable rollout gets
//! advantage 0 and does not enter any mean or standard deviation. Standard deviations are
//! Bessel-corrected (as `torch.std`); a set with a single scored member has advantage 0.

use alloc::vec;
use alloc::vec::Vec;

use crate::error::{Error, Result};
use crate::trajectory::{Batch, Group, GroupId, Origin, Trajectory, TrajectoryId};

/// Which standard deviation divides GRPO's centred rewards.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub enum StdMode {
    /// The normalising set's own std (GRPO).
    #[default]
    Group,
    /// One std over every scored reward of the batch, roots and branches (TRL's
    /// `scale_rewards="batch"`), dividing every normalising set.
    Batch,
    /// No division (Dr.GRPO).
    None,
}

/// The baseline estimator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub enum Estimator {
    /// `A_i = (r_i - mean) / (std + eps)` (or `r_i - mean` with [`StdMode::None`]).
    Grpo {
        /// Which std.
        std: StdMode,
    },
    /// Leave-one-out: `A_i = r_i - mean_{j != i} r_j`.
    Rloo,
}

impl Default for Estimator {
    fn default() -> Self {
        Self::Grpo {
            std: StdMode::Group,
        }
    }
}

/// How resampled branches are credited.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub enum Credit {
    /// Let `S` be a parent and its branches (siblings sharing the frozen prefix), `V` the mean
    /// reward of `S`. Tail tokens (at or after the prefix) of each member of `S` get the
    /// sibling-relative advantage; the group's statistics use `V` in place of the parent's
    /// reward, which gives the parent's prefix tokens their advantage; other rollouts of the
    /// group get theirs from the same statistics; branches' prefix tokens are not trained
    /// (each prefix token is trained once, in its parent).
    #[default]
    Tree,
    /// Branches join the group as full members, prefix included; one GRPO over all of them.
    Flat,
    /// The group is plain GRPO over its roots; branches train their tails only, relative to
    /// their sibling set.
    TailOnly,
}

/// Configuration of [`assign`].
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub struct AdvantageConfig {
    /// The estimator (default GRPO with group std).
    pub estimator: Estimator,
    /// The epsilon added to the std (default 1e-6, as verl).
    pub eps: f32,
    /// The credit mode (default [`Credit::Tree`]).
    pub credit: Credit,
}

impl Default for AdvantageConfig {
    fn default() -> Self {
        Self {
            estimator: Estimator::default(),
            eps: 1e-6,
            credit: Credit::default(),
        }
    }
}

impl AdvantageConfig {
    /// Sets the estimator.
    #[must_use]
    pub fn with_estimator(mut self, e: Estimator) -> Self {
        self.estimator = e;
        self
    }
    /// Sets eps.
    #[must_use]
    pub fn with_eps(mut self, eps: f32) -> Self {
        self.eps = eps;
        self
    }
    /// Sets the credit mode.
    #[must_use]
    pub fn with_credit(mut self, c: Credit) -> Self {
        self.credit = c;
        self
    }

    /// Checks the fields.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] if `eps` is negative or not finite.
    pub fn validate(&self) -> Result<()> {
        if !(self.eps.is_finite() && self.eps >= 0.0) {
            return Err(Error::InvalidConfig {
                field: "eps",
                reason: "must be finite and non-negative",
            });
        }
        Ok(())
    }
}

/// The advantages of one trajectory's trained tokens.
#[derive(Debug, Clone, PartialEq)]
pub struct TrajectoryAdvantage {
    /// The trajectory.
    pub trajectory: TrajectoryId,
    /// Policy-token index of the first trained token; earlier policy tokens are not trained.
    pub first_trained: usize,
    /// One advantage per trained policy token (policy tokens `first_trained..`).
    pub advantages: Vec<f32>,
}

/// What a normalising set is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetKind {
    /// A group's members (roots, or everything under [`Credit::Flat`]).
    Group,
    /// A parent and its branches.
    Siblings {
        /// The parent.
        parent: TrajectoryId,
    },
}

/// A set of rollouts normalised together, with each member's advantage in that set (0 for
/// unscorable members). For GRPO and RLOO the scored members' advantages sum to zero.
#[derive(Debug, Clone, PartialEq)]
pub struct NormalizingSet {
    /// What the set is.
    pub kind: SetKind,
    /// Its group.
    pub group: GroupId,
    /// `(member, advantage, scored)` for every member.
    pub members: Vec<(TrajectoryId, f64, bool)>,
}

/// The result of [`assign`]: per-trajectory token advantages (batch order) and the normalising
/// sets they came from.
#[derive(Debug, Clone, PartialEq)]
pub struct Credited {
    /// One entry per trajectory of the batch, in [`Batch::trajectories`] order.
    pub trajectories: Vec<TrajectoryAdvantage>,
    /// Every normalising set.
    pub sets: Vec<NormalizingSet>,
}

impl Credited {
    /// The entry of one trajectory.
    #[must_use]
    pub fn get(&self, id: TrajectoryId) -> Option<&TrajectoryAdvantage> {
        self.trajectories.iter().find(|t| t.trajectory == id)
    }
}

/// Bessel-corrected standard deviation of `v` (0 for fewer than two values).
#[must_use]
pub fn std_dev(v: &[f64]) -> f64 {
    if v.len() < 2 {
        return 0.0;
    }
    let m = v.iter().sum::<f64>() / v.len() as f64;
    let ss: f64 = v.iter().map(|x| (x - m) * (x - m)).sum();
    libm::sqrt(ss / (v.len() - 1) as f64)
}

/// Advantages of one normalising set: `values[i]` is `None` for unscorable members.
#[must_use]
pub fn normalize(
    values: &[Option<f64>],
    estimator: Estimator,
    eps: f64,
    batch_std: f64,
) -> Vec<f64> {
    let scored: Vec<f64> = values.iter().flatten().copied().collect();
    let n = scored.len();
    let mut out = vec![0.0; values.len()];
    if n < 2 {
        return out;
    }
    let sum: f64 = scored.iter().sum();
    let mean = sum / n as f64;
    let denom = match estimator {
        Estimator::Grpo {
            std: StdMode::Group,
        } => std_dev(&scored) + eps,
        Estimator::Grpo {
            std: StdMode::Batch,
        } => batch_std + eps,
        Estimator::Grpo { std: StdMode::None } | Estimator::Rloo => 1.0,
    };
    for (o, v) in out.iter_mut().zip(values) {
        if let Some(r) = v {
            *o = match estimator {
                Estimator::Rloo => r - (sum - r) / (n - 1) as f64,
                Estimator::Grpo { .. } => {
                    let c = r - mean;
                    if c == 0.0 { 0.0 } else { c / denom }
                }
            };
        }
    }
    out
}

fn score(t: &Trajectory) -> Option<f64> {
    t.reward().score().map(f64::from)
}

/// One group's plan of normalising sets, before the batch std is known.
struct GroupSets<'a> {
    group: &'a Group,
    /// Members of the group-level set and their values.
    members: Vec<(&'a Trajectory, Option<f64>)>,
    /// Sibling sets.
    siblings: Vec<SiblingSet<'a>>,
}

/// A parent, the length of its frozen prefix, and its members (parent first) with rewards.
struct SiblingSet<'a> {
    parent: &'a Trajectory,
    prefix_len: usize,
    members: Vec<(&'a Trajectory, Option<f64>)>,
}

/// A sibling set's advantages: parent, prefix length, `(member, advantage)`.
struct SiblingAdvantages {
    parent: TrajectoryId,
    prefix_len: usize,
    members: Vec<(TrajectoryId, f64)>,
}

fn sibling_sets(group: &Group) -> Vec<SiblingSet<'_>> {
    let mut out = Vec::new();
    for p in group.roots() {
        let branches: Vec<&Trajectory> = group.branches_of(p.id()).collect();
        let Some(prefix_len) = branches.iter().find_map(|b| match b.origin() {
            Origin::Branch { prefix_len, .. } => Some(prefix_len),
            Origin::Root => None,
        }) else {
            continue;
        };
        let mut members = vec![(p, score(p))];
        members.extend(branches.iter().map(|b| (*b, score(b))));
        out.push(SiblingSet {
            parent: p,
            prefix_len,
            members,
        });
    }
    out
}

fn mean_scored(members: &[(&Trajectory, Option<f64>)]) -> Option<f64> {
    let s: Vec<f64> = members.iter().filter_map(|m| m.1).collect();
    if s.is_empty() {
        None
    } else {
        Some(s.iter().sum::<f64>() / s.len() as f64)
    }
}

/// Assigns token advantages to every trajectory of the batch.
///
/// # Errors
/// [`Error::InvalidConfig`] for a bad configuration; [`Error::NonFinite`] if an advantage does
/// not fit f32 (rewards near `f32::MAX`).
pub fn assign(batch: &Batch, config: &AdvantageConfig) -> Result<Credited> {
    config.validate()?;
    let eps = f64::from(config.eps);
    let plans: Vec<GroupSets<'_>> = batch
        .groups()
        .iter()
        .map(|group| {
            let siblings = sibling_sets(group);
            let members = match config.credit {
                Credit::Flat => group.rollouts().iter().map(|t| (t, score(t))).collect(),
                Credit::TailOnly => group.roots().map(|t| (t, score(t))).collect(),
                Credit::Tree => group
                    .roots()
                    .map(|t| {
                        let v = siblings
                            .iter()
                            .find(|s| s.parent.id() == t.id())
                            .map_or(score(t), |s| mean_scored(&s.members));
                        (t, v)
                    })
                    .collect(),
            };
            GroupSets {
                group,
                members,
                siblings,
            }
        })
        .collect();
    let all_rewards: Vec<f64> = batch.trajectories().filter_map(score).collect();
    let batch_std = std_dev(&all_rewards);

    let mut per: Vec<TrajectoryAdvantage> = Vec::new();
    let mut sets = Vec::new();
    for p in &plans {
        let values: Vec<Option<f64>> = p.members.iter().map(|m| m.1).collect();
        let group_adv = normalize(&values, config.estimator, eps, batch_std);
        fits_f32(&group_adv)?;
        sets.push(NormalizingSet {
            kind: SetKind::Group,
            group: p.group.id(),
            members: p
                .members
                .iter()
                .zip(&group_adv)
                .map(|(m, a)| (m.0.id(), *a, m.1.is_some()))
                .collect(),
        });
        let mut sibling_adv: Vec<SiblingAdvantages> = Vec::new();
        if config.credit != Credit::Flat {
            for SiblingSet {
                parent,
                prefix_len,
                members,
            } in &p.siblings
            {
                let v: Vec<Option<f64>> = members.iter().map(|m| m.1).collect();
                let a = normalize(&v, config.estimator, eps, batch_std);
                fits_f32(&a)?;
                sets.push(NormalizingSet {
                    kind: SetKind::Siblings {
                        parent: parent.id(),
                    },
                    group: p.group.id(),
                    members: members
                        .iter()
                        .zip(&a)
                        .map(|(m, x)| (m.0.id(), *x, m.1.is_some()))
                        .collect(),
                });
                sibling_adv.push(SiblingAdvantages {
                    parent: parent.id(),
                    prefix_len: *prefix_len,
                    members: members.iter().zip(a).map(|(m, x)| (m.0.id(), x)).collect(),
                });
            }
        }
        let group_of = |id: TrajectoryId| {
            p.members
                .iter()
                .zip(&group_adv)
                .find(|(m, _)| m.0.id() == id)
                .map_or(0.0, |(_, a)| *a)
        };
        for t in p.group.rollouts() {
            let n = t.logprobs().len();
            let entry = match (config.credit, t.origin()) {
                (Credit::Flat, _) => uniform(t.id(), 0, n, group_of(t.id())),
                (Credit::TailOnly, Origin::Root) => uniform(t.id(), 0, n, group_of(t.id())),
                (Credit::Tree, Origin::Root) => {
                    let a_prefix = group_of(t.id());
                    match sibling_adv.iter().find(|s| s.parent == t.id()) {
                        None => uniform(t.id(), 0, n, a_prefix),
                        Some(s) => {
                            let head = t.policy_index(s.prefix_len);
                            let a_tail = s
                                .members
                                .iter()
                                .find(|m| m.0 == t.id())
                                .map_or(0.0, |m| m.1);
                            let mut adv = vec![a_prefix as f32; head];
                            adv.resize(n, a_tail as f32);
                            TrajectoryAdvantage {
                                trajectory: t.id(),
                                first_trained: 0,
                                advantages: adv,
                            }
                        }
                    }
                }
                (
                    Credit::Tree | Credit::TailOnly,
                    Origin::Branch {
                        parent, prefix_len, ..
                    },
                ) => {
                    let a = sibling_adv
                        .iter()
                        .find(|s| s.parent == parent)
                        .and_then(|s| s.members.iter().find(|m| m.0 == t.id()))
                        .map_or(0.0, |m| m.1);
                    let head = t.policy_index(prefix_len);
                    uniform(t.id(), head, n, a)
                }
            };
            per.push(entry);
        }
    }
    Ok(Credited {
        trajectories: per,
        sets,
    })
}

/// Finite rewards can still give advantages beyond f32 (RLOO or Dr.GRPO near `f32::MAX`); every
/// token advantage is one of a normalising set's values, so checking the sets checks them all.
fn fits_f32(set: &[f64]) -> Result<()> {
    match set.iter().position(|a| !(*a as f32).is_finite()) {
        Some(index) => Err(Error::NonFinite {
            what: "advantage (overflows f32; index in its normalising set)",
            index,
        }),
        None => Ok(()),
    }
}

fn uniform(id: TrajectoryId, first: usize, n: usize, a: f64) -> TrajectoryAdvantage {
    TrajectoryAdvantage {
        trajectory: id,
        first_trained: first,
        advantages: vec![a as f32; n.saturating_sub(first)],
    }
}

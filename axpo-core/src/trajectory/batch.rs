//! Groups and batches, and the returned branches that the planner merges into them.

use alloc::collections::BTreeMap;
use alloc::collections::BTreeSet;
use alloc::vec::Vec;

use super::{GroupId, Origin, Reward, Span, Trajectory, TrajectoryId, span_roles, validate_spans};
use crate::error::{Error, Result, check_len};

/// The rollouts of one question: roots, and branches of those roots.
#[derive(Debug, Clone, PartialEq)]
pub struct Group {
    id: GroupId,
    rollouts: Vec<Trajectory>,
}

impl Group {
    /// A group of root rollouts.
    ///
    /// # Errors
    /// [`Error::EmptyGroup`] if `rollouts` is empty; [`Error::DuplicateTrajectory`] if two share
    /// an id.
    pub fn new(id: GroupId, rollouts: Vec<Trajectory>) -> Result<Self> {
        if rollouts.is_empty() {
            return Err(Error::EmptyGroup { group: id });
        }
        let g = Self { id, rollouts };
        g.validate()?;
        Ok(g)
    }

    /// Checks ids, and every branch against its parent.
    fn validate(&self) -> Result<()> {
        if self.rollouts.is_empty() {
            return Err(Error::EmptyGroup { group: self.id });
        }
        let mut seen = BTreeSet::new();
        for t in &self.rollouts {
            if !seen.insert(t.id()) {
                return Err(Error::DuplicateTrajectory { id: t.id() });
            }
        }
        let mut cut: BTreeMap<TrajectoryId, usize> = BTreeMap::new();
        for t in &self.rollouts {
            if let Origin::Branch {
                parent, prefix_len, ..
            } = t.origin()
            {
                let p = self.get(parent).ok_or(Error::UnknownParent {
                    branch: t.id(),
                    parent,
                })?;
                if !p.is_root() {
                    return Err(Error::ParentNotRoot {
                        branch: t.id(),
                        parent,
                    });
                }
                check_prefix(p, t.id(), t.tokens(), t.spans(), prefix_len)?;
                if *cut.entry(parent).or_insert(prefix_len) != prefix_len {
                    return Err(Error::ConflictingPrefixes { parent });
                }
            }
        }
        Ok(())
    }

    /// The group id.
    #[must_use]
    pub fn id(&self) -> GroupId {
        self.id
    }

    /// All rollouts, roots and branches, in insertion order.
    #[must_use]
    pub fn rollouts(&self) -> &[Trajectory] {
        &self.rollouts
    }

    /// The root rollouts.
    pub fn roots(&self) -> impl Iterator<Item = &Trajectory> + '_ {
        self.rollouts.iter().filter(|t| t.is_root())
    }

    /// The branches of `parent`.
    pub fn branches_of(&self, parent: TrajectoryId) -> impl Iterator<Item = &Trajectory> + '_ {
        self.rollouts
            .iter()
            .filter(move |t| matches!(t.origin(), Origin::Branch { parent: p, .. } if p == parent))
    }

    /// The rollout with this id.
    #[must_use]
    pub fn get(&self, id: TrajectoryId) -> Option<&Trajectory> {
        self.rollouts.iter().find(|t| t.id() == id)
    }

    pub(crate) fn push(&mut self, t: Trajectory) {
        self.rollouts.push(t);
    }
}

/// Checks that `tokens` (with role layout `spans`) carries `parent`'s exact first `prefix_len`
/// tokens and roles.
fn check_prefix(
    parent: &Trajectory,
    branch: TrajectoryId,
    tokens: &[u32],
    spans: &[Span],
    prefix_len: usize,
) -> Result<()> {
    if prefix_len > parent.len() || prefix_len > tokens.len() {
        return Err(Error::PrefixOutOfRange {
            trajectory: parent.id(),
            prefix_len,
            len: parent.len(),
        });
    }
    if let Some(position) = (0..prefix_len).find(|&i| tokens[i] != parent.tokens()[i]) {
        return Err(Error::PrefixMismatch {
            branch,
            parent: parent.id(),
            position,
        });
    }
    if let Some(position) = span_roles(parent.spans(), prefix_len)
        .zip(span_roles(spans, prefix_len))
        .position(|(a, b)| a != b)
    {
        return Err(Error::PrefixMismatch {
            branch,
            parent: parent.id(),
            position,
        });
    }
    Ok(())
}

/// A batch: the groups of one training step.
#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    groups: Vec<Group>,
}

impl Batch {
    /// A batch of groups.
    ///
    /// # Errors
    /// [`Error::EmptyBatch`], [`Error::DuplicateGroup`], or [`Error::DuplicateTrajectory`] if a
    /// trajectory id repeats across groups.
    pub fn new(groups: Vec<Group>) -> Result<Self> {
        if groups.is_empty() {
            return Err(Error::EmptyBatch);
        }
        let mut gids = BTreeSet::new();
        let mut tids = BTreeSet::new();
        for g in &groups {
            if !gids.insert(g.id()) {
                return Err(Error::DuplicateGroup { group: g.id() });
            }
            for t in g.rollouts() {
                if !tids.insert(t.id()) {
                    return Err(Error::DuplicateTrajectory { id: t.id() });
                }
            }
        }
        Ok(Self { groups })
    }

    /// The groups, in order.
    #[must_use]
    pub fn groups(&self) -> &[Group] {
        &self.groups
    }

    /// Every trajectory, group by group.
    pub fn trajectories(&self) -> impl Iterator<Item = &Trajectory> + '_ {
        self.groups.iter().flat_map(|g| g.rollouts().iter())
    }

    /// Number of root rollouts (the base rollouts the resample budget is a fraction of).
    #[must_use]
    pub fn root_count(&self) -> usize {
        self.groups.iter().map(|g| g.roots().count()).sum()
    }

    /// Number of branches.
    #[must_use]
    pub fn branch_count(&self) -> usize {
        self.trajectories().filter(|t| !t.is_root()).count()
    }

    /// The highest planning round among branches (0 when there are none).
    #[must_use]
    pub fn last_round(&self) -> u32 {
        self.trajectories()
            .filter_map(|t| match t.origin() {
                Origin::Branch { round, .. } => Some(round),
                Origin::Root => None,
            })
            .max()
            .unwrap_or(0)
    }

    /// The trajectory with this id and its group.
    #[must_use]
    pub fn find(&self, id: TrajectoryId) -> Option<(&Group, &Trajectory)> {
        self.groups.iter().find_map(|g| g.get(id).map(|t| (g, t)))
    }

    /// The next unused trajectory id (one past the largest), or `None` when the largest id is
    /// `u32::MAX`.
    #[must_use]
    pub fn next_id(&self) -> Option<TrajectoryId> {
        u32::try_from(self.next_raw_id()).ok().map(TrajectoryId)
    }

    /// One past the largest id, widened so that it cannot overflow.
    pub(crate) fn next_raw_id(&self) -> u64 {
        self.trajectories()
            .map(|t| u64::from(t.id().0) + 1)
            .max()
            .unwrap_or(0)
    }

    /// Adds branches that were each built against their parent by
    /// [`BranchRollout::into_trajectory`]: checks that a parent's branches keep one prefix
    /// length, then appends each to its parent's group. On error the batch is unchanged.
    pub(crate) fn insert_branches(&mut self, branches: Vec<Trajectory>) -> Result<()> {
        let mut placed = Vec::with_capacity(branches.len());
        let mut cut: BTreeMap<TrajectoryId, usize> = BTreeMap::new();
        for b in &branches {
            let Origin::Branch {
                parent, prefix_len, ..
            } = b.origin()
            else {
                return Err(Error::InvalidConfig {
                    field: "branch origin",
                    reason: "a root cannot be inserted as a branch",
                });
            };
            let gi = self
                .groups
                .iter()
                .position(|g| g.get(parent).is_some())
                .ok_or(Error::UnknownParent {
                    branch: b.id(),
                    parent,
                })?;
            let existing = self.groups[gi]
                .branches_of(parent)
                .find_map(|x| match x.origin() {
                    Origin::Branch { prefix_len, .. } => Some(prefix_len),
                    Origin::Root => None,
                });
            let want = *cut.entry(parent).or_insert(existing.unwrap_or(prefix_len));
            if want != prefix_len {
                return Err(Error::ConflictingPrefixes { parent });
            }
            placed.push(gi);
        }
        for (b, gi) in branches.into_iter().zip(placed) {
            self.groups[gi].push(b);
        }
        Ok(())
    }
}

/// A resampled continuation returned by the rollout engine for a
/// [`BranchRequest`](crate::plan::BranchRequest): the whole token stream (frozen prefix plus new
/// tail) with its role spans, the rollout log-probs of the policy tokens *in the tail only* (the
/// prefix's are the parent's), optionally their entropies, and the reward.
#[derive(Debug, Clone, PartialEq)]
pub struct BranchRollout {
    /// The parent it continues.
    pub parent: TrajectoryId,
    /// Length of the frozen prefix it was sampled from.
    pub prefix_len: usize,
    /// All tokens, prefix included.
    pub tokens: Vec<u32>,
    /// Role spans over all tokens.
    pub spans: Vec<Span>,
    /// Rollout log-probs of the policy tokens at positions `>= prefix_len`.
    pub tail_logprobs: Vec<f32>,
    /// Entropies of the same tokens, if the engine reports them.
    pub tail_entropies: Option<Vec<f32>>,
    /// The reward.
    pub reward: Reward,
}

impl BranchRollout {
    /// Builds the full branch trajectory against its parent: checks the prefix, and prepends the
    /// parent's prefix log-probs (and entropies) to the tail's.
    ///
    /// # Errors
    /// [`Error::PrefixOutOfRange`] if the prefix does not fit or leaves no tail;
    /// [`Error::PrefixMismatch`] if tokens or roles differ inside the prefix; the validation
    /// errors of [`Trajectory::new`].
    pub(crate) fn into_trajectory(
        self,
        parent: &Trajectory,
        id: TrajectoryId,
        round: u32,
    ) -> Result<Trajectory> {
        if self.prefix_len >= self.tokens.len() {
            return Err(Error::PrefixOutOfRange {
                trajectory: parent.id(),
                prefix_len: self.prefix_len,
                len: self.tokens.len(),
            });
        }
        validate_spans(Some(id), &self.spans, self.tokens.len())?;
        check_prefix(parent, id, &self.tokens, &self.spans, self.prefix_len)?;
        let head = parent.policy_index(self.prefix_len);
        let mut logprobs = parent.logprobs()[..head].to_vec();
        logprobs.extend_from_slice(&self.tail_logprobs);
        let mut t = Trajectory::new(id, self.tokens, self.spans, logprobs, self.reward)?;
        match (self.tail_entropies, parent.entropies()) {
            (Some(tail), Some(pe)) => {
                let mut e = pe[..head].to_vec();
                e.extend_from_slice(&tail);
                t = t.with_entropies(e)?;
            }
            (Some(tail), None) => {
                check_len(
                    "branch tail entropies",
                    t.logprobs().len() - head,
                    tail.len(),
                )?;
            }
            (None, _) => {}
        }
        t.set_origin(
            id,
            Origin::Branch {
                parent: parent.id(),
                prefix_len: self.prefix_len,
                round,
            },
        );
        Ok(t)
    }
}

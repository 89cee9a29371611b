//! Tool subgroups: the partition of a group's root rollouts into tool-using and thinking-only,
//! and the all-wrong test.

use alloc::vec::Vec;

use crate::error::{Error, Result};
use crate::trajectory::{Batch, Group, GroupId, Reward, Trajectory, TrajectoryId};

/// Whether a reward counts as correct: `reward >= threshold` (default 1.0, for binary rewards).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Correctness {
    threshold: f32,
}

impl Default for Correctness {
    fn default() -> Self {
        Self { threshold: 1.0 }
    }
}

/// The verdict on one rollout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Scored at or above the threshold.
    Correct,
    /// Scored below the threshold.
    Wrong,
    /// Not scored.
    Unscorable,
}

impl Correctness {
    /// A threshold.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] if it is not finite.
    pub fn new(threshold: f32) -> Result<Self> {
        if !threshold.is_finite() {
            return Err(Error::InvalidConfig {
                field: "correctness threshold",
                reason: "must be finite",
            });
        }
        Ok(Self { threshold })
    }

    /// The threshold.
    #[must_use]
    pub fn threshold(&self) -> f32 {
        self.threshold
    }

    /// The verdict on a reward.
    #[must_use]
    pub fn verdict(&self, reward: Reward) -> Verdict {
        match reward {
            Reward::Scored(r) if r >= self.threshold => Verdict::Correct,
            Reward::Scored(_) => Verdict::Wrong,
            Reward::Unscorable => Verdict::Unscorable,
        }
    }
}

/// How a set of rollouts fared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// No members.
    Empty,
    /// At least one scored member, none correct: the case AXPO repairs.
    AllWrong,
    /// At least one correct member.
    SomeCorrect,
    /// Members exist but none is scored.
    Unscored,
}

/// The outcome of a set of rewards.
#[must_use]
pub fn outcome(correctness: &Correctness, rewards: impl IntoIterator<Item = Reward>) -> Outcome {
    let (mut any, mut scored) = (false, false);
    for r in rewards {
        any = true;
        match correctness.verdict(r) {
            Verdict::Correct => return Outcome::SomeCorrect,
            Verdict::Wrong => scored = true,
            Verdict::Unscorable => {}
        }
    }
    match (any, scored) {
        (false, _) => Outcome::Empty,
        (true, true) => Outcome::AllWrong,
        (true, false) => Outcome::Unscored,
    }
}

/// The tool-using root rollouts of one group (`T_g`), with their outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolSubgroup {
    /// The group.
    pub group: GroupId,
    /// Root rollouts with at least one tool call.
    pub members: Vec<TrajectoryId>,
    /// Root rollouts without a tool call (the rest of the partition).
    pub thinking_only: Vec<TrajectoryId>,
    /// The outcome of `members`.
    pub outcome: Outcome,
}

impl ToolSubgroup {
    /// Partitions a group's roots (branches are ignored) and judges the tool-using part.
    #[must_use]
    pub fn of(group: &Group, correctness: &Correctness) -> Self {
        let (tool, thinking): (Vec<&Trajectory>, Vec<&Trajectory>) =
            group.roots().partition(|t| t.uses_tools());
        Self {
            group: group.id(),
            outcome: outcome(correctness, tool.iter().map(|t| t.reward())),
            members: tool.iter().map(|t| t.id()).collect(),
            thinking_only: thinking.iter().map(|t| t.id()).collect(),
        }
    }

    /// Whether the subgroup is non-empty and all wrong.
    #[must_use]
    pub fn is_all_wrong(&self) -> bool {
        self.outcome == Outcome::AllWrong
    }
}

/// The tool subgroup of every group of a batch, in group order.
#[must_use]
pub fn tool_subgroups(batch: &Batch, correctness: &Correctness) -> Vec<ToolSubgroup> {
    batch
        .groups()
        .iter()
        .map(|g| ToolSubgroup::of(g, correctness))
        .collect()
}

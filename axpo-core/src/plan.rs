//! Resample plans: which frozen prefixes to resample, how many times, within the budget; and the
//! merge of returned branches (spec section 7).

use alloc::collections::BTreeMap;
use alloc::vec::Vec;

use crate::error::{Error, Result};
use crate::prefix::{
    CallChoice, CutPoint, SelectionStrategy, ThinkingPrefix, UncertaintyScore, candidates,
    rank_order, select,
};
use crate::rng::Rng;
use crate::subgroup::{Correctness, Outcome, ToolSubgroup, outcome};
use crate::trajectory::{Batch, BranchRollout, Origin, TrajectoryId};

/// Everything the planner needs to know. Build with [`PlanConfig::default`] and the `with_*`
/// methods; [`PlanConfig::validate`] runs inside [`plan`].
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct PlanConfig {
    /// Where the prefix ends (default [`CutPoint::AfterCallOpen`]).
    pub cut: CutPoint,
    /// Which calls are candidates (default [`CallChoice::All`]).
    pub calls: CallChoice,
    /// The uncertainty score (default [`UncertaintyScore::CallEntropy`]).
    pub score: UncertaintyScore,
    /// How prefixes are chosen within a subgroup (default [`SelectionStrategy::TopK`]).
    pub strategy: SelectionStrategy,
    /// Resamples per chosen prefix, K (default 4).
    pub resamples_per_prefix: usize,
    /// Prefixes per all-wrong subgroup, each from a different rollout (default 1).
    pub prefixes_per_subgroup: usize,
    /// Budget: total resamples over all rounds at most this fraction of the batch's root
    /// rollouts, rounded down (default 0.25).
    pub max_resample_fraction: f32,
    /// Rounds: a prefix whose resamples all fail is retried in the next round while the round
    /// number is at most this (default 1: no retry).
    pub max_rounds: u32,
    /// What counts as correct (default reward >= 1.0).
    pub correctness: Correctness,
}

impl Default for PlanConfig {
    fn default() -> Self {
        Self {
            cut: CutPoint::default(),
            calls: CallChoice::default(),
            score: UncertaintyScore::default(),
            strategy: SelectionStrategy::default(),
            resamples_per_prefix: 4,
            prefixes_per_subgroup: 1,
            max_resample_fraction: 0.25,
            max_rounds: 1,
            correctness: Correctness::default(),
        }
    }
}

impl PlanConfig {
    /// Sets the cut point.
    #[must_use]
    pub fn with_cut(mut self, cut: CutPoint) -> Self {
        self.cut = cut;
        self
    }
    /// Sets the call choice.
    #[must_use]
    pub fn with_calls(mut self, calls: CallChoice) -> Self {
        self.calls = calls;
        self
    }
    /// Sets the uncertainty score.
    #[must_use]
    pub fn with_score(mut self, score: UncertaintyScore) -> Self {
        self.score = score;
        self
    }
    /// Sets the selection strategy.
    #[must_use]
    pub fn with_strategy(mut self, strategy: SelectionStrategy) -> Self {
        self.strategy = strategy;
        self
    }
    /// Sets K.
    #[must_use]
    pub fn with_resamples_per_prefix(mut self, k: usize) -> Self {
        self.resamples_per_prefix = k;
        self
    }
    /// Sets the prefixes per subgroup.
    #[must_use]
    pub fn with_prefixes_per_subgroup(mut self, n: usize) -> Self {
        self.prefixes_per_subgroup = n;
        self
    }
    /// Sets the budget fraction.
    #[must_use]
    pub fn with_max_resample_fraction(mut self, f: f32) -> Self {
        self.max_resample_fraction = f;
        self
    }
    /// Sets the number of rounds.
    #[must_use]
    pub fn with_max_rounds(mut self, r: u32) -> Self {
        self.max_rounds = r;
        self
    }
    /// Sets the correctness threshold.
    #[must_use]
    pub fn with_correctness(mut self, c: Correctness) -> Self {
        self.correctness = c;
        self
    }

    /// Checks every field.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] naming the first bad field.
    pub fn validate(&self) -> Result<()> {
        let bad = |field, reason| Err(Error::InvalidConfig { field, reason });
        if self.resamples_per_prefix == 0 {
            return bad("resamples_per_prefix", "must be at least 1");
        }
        if self.prefixes_per_subgroup == 0 {
            return bad("prefixes_per_subgroup", "must be at least 1");
        }
        if !(self.max_resample_fraction.is_finite() && self.max_resample_fraction >= 0.0) {
            return bad("max_resample_fraction", "must be finite and non-negative");
        }
        if self.max_rounds == 0 {
            return bad("max_rounds", "must be at least 1");
        }
        if let UncertaintyScore::PrefixEntropy { window: 0 } = self.score {
            return bad("PrefixEntropy window", "must be at least 1");
        }
        if let SelectionStrategy::Proportional { temperature } = self.strategy
            && !(temperature.is_finite() && temperature > 0.0)
        {
            return bad("Proportional temperature", "must be finite and positive");
        }
        Ok(())
    }

    /// The total resample budget for a batch with `roots` root rollouts.
    #[must_use]
    pub fn budget(&self, roots: usize) -> usize {
        let b = f64::from(self.max_resample_fraction) * roots as f64;
        if b >= usize::MAX as f64 {
            usize::MAX
        } else {
            // Round down; the epsilon absorbs f32 representation error (0.25 * 8 = 2, not 1.99..).
            libm::floor(b + 1e-9) as usize
        }
    }
}

/// One request to the rollout engine: continue `parent`'s first `prefix_len` tokens `count`
/// times.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BranchRequest {
    /// The root rollout whose prefix is frozen.
    pub parent: TrajectoryId,
    /// Number of frozen tokens.
    pub prefix_len: usize,
    /// Number of continuations to sample.
    pub count: usize,
}

/// A resample plan: the requests of one round, with the prefixes they came from.
#[derive(Debug, Clone, PartialEq)]
pub struct ResamplePlan {
    round: u32,
    requests: Vec<BranchRequest>,
    prefixes: Vec<ThinkingPrefix>,
    budget: usize,
    spent_before: usize,
}

impl ResamplePlan {
    /// The planning round (1-based).
    #[must_use]
    pub fn round(&self) -> u32 {
        self.round
    }
    /// The requests, most uncertain first.
    #[must_use]
    pub fn requests(&self) -> &[BranchRequest] {
        &self.requests
    }
    /// The prefix behind each request (same order).
    #[must_use]
    pub fn prefixes(&self) -> &[ThinkingPrefix] {
        &self.prefixes
    }
    /// Total resamples this plan asks for.
    #[must_use]
    pub fn resample_count(&self) -> usize {
        self.requests.iter().map(|r| r.count).sum()
    }
    /// The batch's total budget over all rounds.
    #[must_use]
    pub fn budget(&self) -> usize {
        self.budget
    }
    /// Resamples spent by earlier rounds.
    #[must_use]
    pub fn spent_before(&self) -> usize {
        self.spent_before
    }
    /// Whether there is nothing to resample.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.requests.is_empty()
    }

    /// Adds the engine's returned branches to the batch as [`Origin::Branch`] trajectories of
    /// this round, with fresh ids in return order. Each branch must answer a request of the
    /// plan, no request may receive more than its count, and each branch must carry its parent's
    /// exact prefix (tokens and roles); the prefix's log-probs are the parent's. Returning fewer
    /// branches than requested is allowed (the engine may drop failures). Every branch is
    /// checked before any is added: on error the batch is unchanged.
    ///
    /// # Errors
    /// [`Error::UnplannedBranch`], [`Error::UnknownParent`], [`Error::PrefixMismatch`],
    /// [`Error::PrefixOutOfRange`], [`Error::ConflictingPrefixes`], or a validation error of the
    /// branch.
    pub fn merge(&self, batch: &mut Batch, returned: Vec<BranchRollout>) -> Result<()> {
        let mut left: BTreeMap<(TrajectoryId, usize), usize> = BTreeMap::new();
        for r in &self.requests {
            *left.entry((r.parent, r.prefix_len)).or_insert(0) += r.count;
        }
        let mut built = Vec::with_capacity(returned.len());
        for (next, b) in (batch.next_raw_id()..).zip(returned) {
            let id = TrajectoryId(u32::try_from(next).map_err(|_| Error::InvalidConfig {
                field: "trajectory ids",
                reason: "exhausted the u32 id space",
            })?);
            let slot = left
                .get_mut(&(b.parent, b.prefix_len))
                .filter(|n| **n > 0)
                .ok_or(Error::UnplannedBranch { branch: id })?;
            *slot -= 1;
            let (_, parent) = batch.find(b.parent).ok_or(Error::UnknownParent {
                branch: id,
                parent: b.parent,
            })?;
            built.push(b.into_trajectory(parent, id, self.round)?);
        }
        batch.insert_branches(built)
    }
}

/// Plans the next round for `batch`: a pure function of `(batch, config, seed)`.
///
/// - **Round 1** (no branches yet): for each group whose tool-using subgroup is all wrong,
///   score every candidate prefix of its members ([`candidates`]), keep each member's best
///   prefix, choose `prefixes_per_subgroup` of them by the strategy, then, across the batch,
///   keep the most uncertain requests that fit the budget (the last one may get fewer than K).
/// - **Round r > 1**: retry each existing prefix whose sibling set (parent and its branches) is
///   still all wrong, most uncertain first, within what is left of the budget; nothing once
///   `r > max_rounds`.
///
/// Ties break by trajectory id, then position.
///
/// # Errors
/// [`Error::InvalidConfig`]; [`Error::MissingEntropies`] if the score needs entropies a
/// candidate lacks.
pub fn plan(batch: &Batch, config: &PlanConfig, seed: u64) -> Result<ResamplePlan> {
    config.validate()?;
    let round = batch.last_round().saturating_add(1);
    let budget = config.budget(batch.root_count());
    let spent_before = batch.branch_count();
    let mut plan = ResamplePlan {
        round,
        requests: Vec::new(),
        prefixes: Vec::new(),
        budget,
        spent_before,
    };
    if round > config.max_rounds {
        return Ok(plan);
    }
    let mut rng = Rng::new(seed, u64::from(round));
    let mut chosen: Vec<ThinkingPrefix> = Vec::new();
    if round == 1 {
        for group in batch.groups() {
            let sub = ToolSubgroup::of(group, &config.correctness);
            if !sub.is_all_wrong() {
                continue;
            }
            let mut best: Vec<ThinkingPrefix> = Vec::new();
            for id in &sub.members {
                let Some(t) = group.get(*id) else { continue };
                let mut c = candidates(t, group.id(), config.cut, config.calls, config.score)?;
                c.retain(|p| p.prefix_len < t.len());
                c.sort_by(rank_order);
                if let Some(top) = c.first() {
                    best.push(*top);
                }
            }
            chosen.extend(select(
                best,
                config.prefixes_per_subgroup,
                config.strategy,
                &mut rng,
            )?);
        }
    } else {
        for group in batch.groups() {
            for parent in group.roots() {
                let Some(prefix_len) =
                    group
                        .branches_of(parent.id())
                        .find_map(|b| match b.origin() {
                            Origin::Branch { prefix_len, .. } => Some(prefix_len),
                            Origin::Root => None,
                        })
                else {
                    continue;
                };
                let rewards = core::iter::once(parent.reward())
                    .chain(group.branches_of(parent.id()).map(|b| b.reward()));
                if outcome(&config.correctness, rewards) != Outcome::AllWrong {
                    continue;
                }
                let c = candidates(
                    parent,
                    group.id(),
                    config.cut,
                    CallChoice::All,
                    config.score,
                )?;
                // The retried prefix keeps its length even if the cut configuration changed.
                let found = c.into_iter().find(|p| p.prefix_len == prefix_len);
                chosen.push(found.unwrap_or(ThinkingPrefix {
                    trajectory: parent.id(),
                    group: group.id(),
                    call_index: 0,
                    call_start: prefix_len,
                    prefix_len,
                    uncertainty: 0.0,
                }));
            }
        }
    }
    // Budget across the batch: most uncertain first.
    chosen.sort_by(rank_order);
    let mut left = budget.saturating_sub(spent_before);
    for p in chosen {
        if left == 0 {
            break;
        }
        let count = config.resamples_per_prefix.min(left);
        left -= count;
        plan.requests.push(BranchRequest {
            parent: p.trajectory,
            prefix_len: p.prefix_len,
            count,
        });
        plan.prefixes.push(p);
    }
    Ok(plan)
}

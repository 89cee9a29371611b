//! The batch diagnostics of spec section 4: tool-call rate, all-wrong tool-subgroup rate,
//! zero-variance group rate, and the tool-call signal.

use crate::advantage::Credited;
use crate::error::Result;
use crate::subgroup::{Correctness, tool_subgroups};
use crate::trajectory::{Batch, Reward, Role};

/// Diagnostics of one batch. Rates are over root rollouts and groups; the signal is over the
/// tool-call tokens of every trained trajectory (branches included).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Diagnostics {
    /// Root rollouts.
    pub rollouts: usize,
    /// Groups.
    pub groups: usize,
    /// Share of root rollouts with at least one tool call.
    pub tool_call_rate: f64,
    /// Groups whose tool-using subgroup is non-empty.
    pub groups_with_tool_use: usize,
    /// Groups whose tool-using subgroup is all wrong.
    pub all_wrong_tool_subgroups: usize,
    /// Share of the groups with tool use whose tool-using subgroup is all wrong (0 when no group
    /// uses tools: read it with `groups_with_tool_use`).
    pub all_wrong_tool_subgroup_rate: f64,
    /// Share of groups whose scored root rewards are all exactly equal (no GRPO signal).
    pub zero_variance_group_rate: f64,
    /// Root rollouts without a score.
    pub unscorable: usize,
    /// Mean root reward over scored rollouts.
    pub mean_reward: f64,
    /// Share of correct root rollouts among scored ones.
    pub accuracy: f64,
    /// Trained tool-call tokens.
    pub tool_call_tokens: usize,
    /// Share of trained tool-call tokens with a non-zero advantage.
    pub tool_call_signal: f64,
    /// Share of trained tool-call tokens with a positive advantage.
    pub tool_call_positive: f64,
}

fn ratio(a: usize, b: usize) -> f64 {
    if b == 0 { 0.0 } else { a as f64 / b as f64 }
}

/// Computes the diagnostics of `batch`; the tool-call signal needs its advantages.
///
/// # Errors
/// Never fails today; returns `Result` so that future checks do not break callers.
pub fn diagnose(
    batch: &Batch,
    correctness: &Correctness,
    credited: Option<&Credited>,
) -> Result<Diagnostics> {
    let subs = tool_subgroups(batch, correctness);
    let mut d = Diagnostics {
        rollouts: batch.root_count(),
        groups: batch.groups().len(),
        ..Diagnostics::default()
    };
    let tool_users: usize = subs.iter().map(|s| s.members.len()).sum();
    d.tool_call_rate = ratio(tool_users, d.rollouts);
    d.groups_with_tool_use = subs.iter().filter(|s| !s.members.is_empty()).count();
    d.all_wrong_tool_subgroups = subs.iter().filter(|s| s.is_all_wrong()).count();
    d.all_wrong_tool_subgroup_rate = ratio(d.all_wrong_tool_subgroups, d.groups_with_tool_use);
    let mut zero_var = 0;
    let (mut scored, mut sum, mut correct) = (0usize, 0.0f64, 0usize);
    for g in batch.groups() {
        let rewards: alloc::vec::Vec<f32> = g.roots().filter_map(|t| t.reward().score()).collect();
        if rewards.windows(2).all(|w| w[0] == w[1]) {
            zero_var += 1;
        }
        for t in g.roots() {
            match t.reward() {
                Reward::Scored(r) => {
                    scored += 1;
                    sum += f64::from(r);
                    if r >= correctness.threshold() {
                        correct += 1;
                    }
                }
                Reward::Unscorable => d.unscorable += 1,
            }
        }
    }
    d.zero_variance_group_rate = ratio(zero_var, d.groups);
    d.mean_reward = if scored == 0 {
        0.0
    } else {
        sum / scored as f64
    };
    d.accuracy = ratio(correct, scored);
    if let Some(c) = credited {
        let (mut total, mut nonzero, mut positive) = (0usize, 0usize, 0usize);
        for (t, a) in batch.trajectories().zip(&c.trajectories) {
            for (k, pos) in t.policy_positions().enumerate().skip(a.first_trained) {
                if t.role_at(pos) != Some(Role::ToolCall) {
                    continue;
                }
                let adv = a
                    .advantages
                    .get(k - a.first_trained)
                    .copied()
                    .unwrap_or(0.0);
                total += 1;
                if adv != 0.0 {
                    nonzero += 1;
                }
                if adv > 0.0 {
                    positive += 1;
                }
            }
        }
        d.tool_call_tokens = total;
        d.tool_call_signal = ratio(nonzero, total);
        d.tool_call_positive = ratio(positive, total);
    }
    Ok(d)
}

//! Seeded random batches for the core's tests: groups of rollouts with thinking, tool calls, tool
//! responses and answers, rollout log-probs, entropies and rewards; and synthetic branches that
//! continue a plan's frozen prefixes.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#![allow(dead_code)]

use axpo_core::plan::ResamplePlan;
use axpo_core::rng::Rng;
use axpo_core::trajectory::spans_from_roles;
use axpo_core::{Batch, BranchRollout, Group, GroupId, Reward, Role, Trajectory, TrajectoryId};

/// Token ids used by generated trajectories (small, so collisions are common on purpose).
pub const THINK: u32 = 900;
pub const CALL: u32 = 901;

/// Knobs for a generated batch.
#[derive(Debug, Clone, Copy)]
pub struct Shape {
    pub groups: usize,
    pub group_size: usize,
    /// Probability that a rollout uses a tool.
    pub tool_rate: f64,
    /// Probability that a rollout is correct.
    pub accuracy: f64,
    /// Probability that a rollout is unscorable.
    pub unscorable: f64,
}

impl Default for Shape {
    fn default() -> Self {
        Self {
            groups: 4,
            group_size: 4,
            tool_rate: 0.5,
            accuracy: 0.4,
            unscorable: 0.05,
        }
    }
}

fn push(roles: &mut Vec<Role>, tokens: &mut Vec<u32>, role: Role, n: usize, rng: &mut Rng) {
    for _ in 0..n {
        roles.push(role);
        tokens.push(rng.below(50) as u32);
    }
}

/// Roles and tokens of a policy continuation (after a prefix), ending in an answer.
pub fn tail(rng: &mut Rng, tool: bool, roles: &mut Vec<Role>, tokens: &mut Vec<u32>) {
    push(roles, tokens, Role::Think, 1 + rng.below(5), rng);
    if tool {
        let calls = 1 + rng.below(2);
        for _ in 0..calls {
            roles.push(Role::ToolCall);
            tokens.push(CALL);
            push(roles, tokens, Role::ToolCall, 1 + rng.below(4), rng);
            push(roles, tokens, Role::ToolResponse, 1 + rng.below(6), rng);
            push(roles, tokens, Role::Think, 1 + rng.below(4), rng);
        }
    }
    push(roles, tokens, Role::Answer, 1 + rng.below(3), rng);
}

/// A random reward under `shape`.
pub fn reward(rng: &mut Rng, shape: &Shape) -> Reward {
    if rng.next_f64() < shape.unscorable {
        Reward::Unscorable
    } else if rng.next_f64() < shape.accuracy {
        Reward::Scored(1.0)
    } else {
        Reward::Scored(0.0)
    }
}

/// Log-probs and entropies for `n` policy tokens.
pub fn token_stats(rng: &mut Rng, n: usize) -> (Vec<f32>, Vec<f32>) {
    let lp = (0..n)
        .map(|_| -(rng.next_f64() * 3.0 + 0.01) as f32)
        .collect();
    let en = (0..n).map(|_| (rng.next_f64() * 2.0) as f32).collect();
    (lp, en)
}

/// A random root trajectory.
pub fn trajectory(rng: &mut Rng, id: u32, shape: &Shape) -> Trajectory {
    let mut roles = Vec::new();
    let mut tokens = Vec::new();
    push(&mut roles, &mut tokens, Role::Prompt, 1 + rng.below(4), rng);
    let tool = rng.next_f64() < shape.tool_rate;
    tail(rng, tool, &mut roles, &mut tokens);
    if rng.below(4) == 0 {
        push(&mut roles, &mut tokens, Role::Pad, 1 + rng.below(3), rng);
    }
    let spans = spans_from_roles(&roles);
    let n = roles.iter().filter(|r| r.is_policy()).count();
    let (lp, en) = token_stats(rng, n);
    Trajectory::new(TrajectoryId(id), tokens, spans, lp, reward(rng, shape))
        .and_then(|t| t.with_entropies(en))
        .expect("generated trajectory is valid")
}

/// A random batch of root rollouts.
pub fn batch(seed: u64, shape: &Shape) -> Batch {
    let mut rng = Rng::new(seed, 0);
    let mut id = 0;
    let groups = (0..shape.groups)
        .map(|g| {
            let rollouts = (0..shape.group_size)
                .map(|_| {
                    id += 1;
                    trajectory(&mut rng, id - 1, shape)
                })
                .collect();
            Group::new(GroupId(g as u32), rollouts).expect("non-empty group")
        })
        .collect();
    Batch::new(groups).expect("valid batch")
}

/// Synthetic engine answers to a plan: each request gets `count` continuations of its parent's
/// exact prefix with a random tail (which keeps the prefix's open span going) and random reward.
pub fn answer(plan: &ResamplePlan, batch: &Batch, seed: u64, shape: &Shape) -> Vec<BranchRollout> {
    let mut rng = Rng::new(seed, 99);
    let mut out = Vec::new();
    for r in plan.requests() {
        let (_, parent) = batch.find(r.parent).expect("parent exists");
        for _ in 0..r.count {
            let mut tokens = parent.tokens()[..r.prefix_len].to_vec();
            let mut roles: Vec<Role> = (0..r.prefix_len)
                .map(|p| parent.role_at(p).expect("in range"))
                .collect();
            // Finish the call that the prefix opened, then continue freely.
            push(
                &mut roles,
                &mut tokens,
                Role::ToolCall,
                1 + rng.below(3),
                &mut rng,
            );
            push(
                &mut roles,
                &mut tokens,
                Role::ToolResponse,
                1 + rng.below(4),
                &mut rng,
            );
            let tool = rng.below(2) == 0;
            tail(&mut rng, tool, &mut roles, &mut tokens);
            let spans = spans_from_roles(&roles);
            let head = parent.policy_index(r.prefix_len);
            let n = roles.iter().filter(|x| x.is_policy()).count() - head;
            let (lp, en) = token_stats(&mut rng, n);
            out.push(BranchRollout {
                parent: r.parent,
                prefix_len: r.prefix_len,
                tokens,
                spans,
                tail_logprobs: lp,
                tail_entropies: Some(en),
                reward: reward(&mut rng, shape),
            });
        }
    }
    out
}

//! Bench: plan + advantages + objective with gradient on a batch of about 1,000,000 tokens in
//! 4,096 trajectories (64 groups of 64), on the CPU. Reports tokens per second per stage and the
//! share of the planner and advantages relative to the objective.
//!
//! `cargo bench -p axpo-core --bench pipeline`

// A bench harness fails loudly on a broken setup; that is its job.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::hint::black_box;
use std::time::Instant;

use axpo_core::objective::{Aggregation, ObjectiveInputs, evaluate};
use axpo_core::rng::Rng;
use axpo_core::trajectory::spans_from_roles;
use axpo_core::{
    AdvantageConfig, Batch, BranchRollout, Group, GroupId, ObjectiveConfig, PlanConfig, PolicyLoss,
    Reward, Role, TrainingTokens, Trajectory, TrajectoryId, assign, plan,
};

const GROUPS: usize = 64;
const GROUP_SIZE: usize = 64;
const TOKENS_PER_TRAJECTORY: usize = 244; // 4096 * 244 = 999,424 tokens

fn trajectory(rng: &mut Rng, id: u32) -> Trajectory {
    // prompt 40 | think 100 | call 12 | response 30 | think 40 | answer 22 (tool users), or
    // prompt 40 | think 182 | answer 22.
    let tool = rng.below(10) < 3;
    let mut roles = vec![Role::Prompt; 40];
    if tool {
        roles.extend([Role::Think; 100]);
        roles.extend([Role::ToolCall; 12]);
        roles.extend([Role::ToolResponse; 30]);
        roles.extend([Role::Think; 40]);
    } else {
        roles.extend([Role::Think; 182]);
    }
    roles.extend([Role::Answer; 22]);
    assert_eq!(roles.len(), TOKENS_PER_TRAJECTORY);
    let n = roles.iter().filter(|r| r.is_policy()).count();
    let lp = (0..n).map(|_| -(rng.next_f64() * 2.0) as f32).collect();
    let en = (0..n).map(|_| (rng.next_f64() * 3.0) as f32).collect();
    // Tool use is rare and high-variance: tool users are right 5% of the time, others 50%, so
    // about a third of the groups have an all-wrong tool subgroup for the planner to repair.
    let p_right = if tool { 5 } else { 50 };
    let reward = if rng.below(100) < p_right { 1.0 } else { 0.0 };
    Trajectory::new(
        TrajectoryId(id),
        (0..roles.len() as u32).collect(),
        spans_from_roles(&roles),
        lp,
        Reward::Scored(reward),
    )
    .and_then(|t| t.with_entropies(en))
    .expect("valid trajectory")
}

fn time<T>(f: impl FnOnce() -> T) -> (T, f64) {
    let t = Instant::now();
    let out = f();
    (out, t.elapsed().as_secs_f64())
}

fn main() {
    let mut rng = Rng::new(2026, 0);
    let mut id = 0;
    let groups: Vec<Group> = (0..GROUPS)
        .map(|g| {
            let rs = (0..GROUP_SIZE)
                .map(|_| {
                    id += 1;
                    trajectory(&mut rng, id - 1)
                })
                .collect();
            Group::new(GroupId(g as u32), rs).expect("group")
        })
        .collect();
    let batch = Batch::new(groups).expect("batch");
    let total_tokens: usize = batch.trajectories().map(|t| t.len()).sum();
    let cfg = PlanConfig::default();

    let reps = 5;
    let mut best = [f64::INFINITY; 5];
    let mut trained = 0;
    let mut requests = 0;
    for _ in 0..reps {
        let (p, t_plan) = time(|| plan(&batch, &cfg, 7).expect("plan"));
        requests = p.requests().len();
        // Synthetic engine answers: each branch repeats its parent (the merge still checks it).
        let answers: Vec<BranchRollout> = p
            .requests()
            .iter()
            .flat_map(|r| {
                let (_, parent) = batch.find(r.parent).expect("parent");
                let head = parent.policy_index(r.prefix_len);
                (0..r.count).map(move |k| BranchRollout {
                    parent: r.parent,
                    prefix_len: r.prefix_len,
                    tokens: parent.tokens().to_vec(),
                    spans: parent.spans().to_vec(),
                    tail_logprobs: parent.logprobs()[head..].to_vec(),
                    tail_entropies: parent.entropies().map(|e| e[head..].to_vec()),
                    reward: Reward::Scored((k % 2) as f32),
                })
            })
            .collect();
        let mut merged = batch.clone();
        let ((), t_merge) = time(|| p.merge(&mut merged, answers).expect("merge"));
        let (credited, t_adv) =
            time(|| assign(&merged, &AdvantageConfig::default()).expect("assign"));
        let (tokens, t_flat) = time(|| TrainingTokens::new(&merged, &credited).expect("tokens"));
        trained = tokens.token_count();
        let logp: Vec<f32> = tokens.old_logp.iter().map(|l| l + 0.01).collect();
        let ocfg = ObjectiveConfig::new(
            PolicyLoss::default(),
            Aggregation::TokenMean {
                tokens: tokens.token_count(),
            },
        );
        let inputs = ObjectiveInputs {
            logp: &logp,
            old_logp: &tokens.old_logp,
            advantages: &tokens.advantages,
            seq_offsets: &tokens.seq_offsets,
            rollout_logp: None,
            ref_logp: None,
            entropy: None,
        };
        let (out, t_obj) = time(|| evaluate(&ocfg, &inputs).expect("objective"));
        black_box(out);
        for (b, t) in best.iter_mut().zip([t_plan, t_merge, t_adv, t_flat, t_obj]) {
            *b = b.min(t);
        }
    }
    let [t_plan, t_merge, t_adv, t_flat, t_obj] = best;
    println!(
        "pipeline bench: {total_tokens} tokens in {} trajectories, {requests} resample requests, {trained} trained tokens (best of {reps})",
        GROUPS * GROUP_SIZE
    );
    println!("| stage | time (ms) | tokens/s |");
    println!("|---|---|---|");
    for (name, t) in [
        ("plan", t_plan),
        ("merge branches", t_merge),
        ("advantages (Tree credit)", t_adv),
        ("flatten trained tokens", t_flat),
        ("objective + gradient", t_obj),
    ] {
        println!(
            "| {name} | {:.2} | {:.3e} |",
            t * 1e3,
            total_tokens as f64 / t
        );
    }
    let all = t_plan + t_merge + t_adv + t_flat + t_obj;
    println!(
        "| total | {:.2} | {:.3e} |",
        all * 1e3,
        total_tokens as f64 / all
    );
    println!(
        "planner + advantages / objective = {:.1}%",
        100.0 * (t_plan + t_adv) / t_obj
    );
    println!(
        "{{\"bench\":\"pipeline\",\"tokens\":{total_tokens},\"plan_ms\":{:.3},\"merge_ms\":{:.3},\"advantages_ms\":{:.3},\"flatten_ms\":{:.3},\"objective_ms\":{:.3}}}",
        t_plan * 1e3,
        t_merge * 1e3,
        t_adv * 1e3,
        t_flat * 1e3,
        t_obj * 1e3
    );
}

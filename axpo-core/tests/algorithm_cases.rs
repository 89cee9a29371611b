//! Hand-computed cases for the segmenter, the estimators, the credit modes, subgroups, the
//! planner and Pass@k.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use axpo_core::advantage::{AdvantageConfig, Credit, Estimator, StdMode, assign};
use axpo_core::trajectory::spans_from_roles;
use axpo_core::{
    Batch, BranchRollout, CutPoint, Group, GroupId, Origin, PlanConfig, Reward, Role, Segmenter,
    SelectionStrategy, SpecialTokens, ToolSubgroup, Trajectory, TrajectoryId, UncertaintyScore,
    pass_at_k, plan,
};

const SP: SpecialTokens = SpecialTokens::QWEN3_VL;

fn close(a: f64, b: f64, tol: f64) {
    assert!((a - b).abs() <= tol, "{a} != {b}");
}

#[test]
fn segmenter_on_a_qwen3_vl_agent_trajectory() {
    // Prompt (ends with the Thinking generation prompt "<|im_start|>assistant\n<think>\n"),
    // then: think text </think> \n\n <tool_call> {..} </tool_call> <|im_end|>
    // env: \n <|im_start|> user \n <tool_response> <image_pad>x2 </tool_response> <|im_end|> \n
    //      <|im_start|> assistant \n <think> \n
    // policy: more thinking </think> answer <|im_end|>, then padding.
    let (a, nl) = (77_091, 198);
    let mut s = vec![
        SP.im_start,
        8948,
        nl,
        5,
        SP.im_end,
        nl,
        SP.im_start,
        872,
        nl,
    ];
    s.extend([
        SP.image_pad,
        SP.image_pad,
        7,
        SP.im_end,
        nl,
        SP.im_start,
        a,
        nl,
        SP.think_open,
        nl,
    ]);
    let prompt_len = s.len();
    s.extend([11, 12, SP.think_close, 271]); // think + "\n\n" (an Answer token)
    s.extend([SP.tool_call_open, 20, 21, SP.tool_call_close, SP.im_end]);
    let env_start = s.len();
    s.extend([
        nl,
        SP.im_start,
        872,
        nl,
        SP.tool_response_open,
        SP.image_pad,
        SP.image_pad,
    ]);
    s.extend([
        SP.tool_response_close,
        SP.im_end,
        nl,
        SP.im_start,
        a,
        nl,
        SP.think_open,
        nl,
    ]);
    let resume = s.len();
    s.extend([
        13,
        SP.think_close,
        42,
        SP.im_end,
        SP.end_of_text,
        SP.end_of_text,
    ]);
    let seg = Segmenter::default().with_generation_prompt(&[SP.think_open, nl]);
    let roles = seg.roles(&s, prompt_len).unwrap();
    let mut want = vec![Role::Prompt; prompt_len];
    want.extend([Role::Think, Role::Think, Role::Think, Role::Answer]);
    want.extend([Role::ToolCall; 5]);
    want.extend(vec![Role::ToolResponse; resume - env_start]);
    want.extend([
        Role::Think,
        Role::Think,
        Role::Answer,
        Role::Answer,
        Role::Pad,
        Role::Pad,
    ]);
    assert_eq!(roles, want);
    let spans = seg.segment(&s, prompt_len).unwrap();
    assert_eq!(spans.iter().filter(|x| x.role == Role::ToolCall).count(), 1);
    // Without the generation prompt configured, the environment's "<think>\n" after the header
    // still opens a think span, now as policy tokens: the role of "<think>" becomes Think.
    let roles2 = Segmenter::default().roles(&s, prompt_len).unwrap();
    assert_eq!(roles2[resume - 2], Role::Think);
}

#[test]
fn segmenter_handles_truncation_and_bad_prompt_length() {
    // An unclosed tool call runs to the end.
    let s = [1, 2, SP.tool_call_open, 5, 6];
    let roles = Segmenter::default().roles(&s, 2).unwrap();
    assert_eq!(roles[2..], [Role::ToolCall; 3]);
    assert!(Segmenter::default().roles(&s, 6).is_err());
    // Empty generation.
    assert_eq!(
        Segmenter::default().roles(&s, 5).unwrap(),
        vec![Role::Prompt; 5]
    );
}

/// A trajectory with `prompt` prompt tokens, an optional tool call of `call` tokens after one
/// think token, and one answer token; log-probs -0.5, entropies 1.0.
fn traj(id: u32, tool: bool, reward: f32) -> Trajectory {
    let mut roles = vec![Role::Prompt, Role::Prompt, Role::Think];
    if tool {
        roles.extend([Role::ToolCall; 3]);
        roles.extend([Role::ToolResponse; 2]);
    }
    roles.push(Role::Answer);
    let tokens: Vec<u32> = (0..roles.len() as u32).map(|i| i + 10).collect();
    let n = roles.iter().filter(|r| r.is_policy()).count();
    Trajectory::new(
        TrajectoryId(id),
        tokens,
        spans_from_roles(&roles),
        vec![-0.5; n],
        Reward::Scored(reward),
    )
    .unwrap()
    .with_entropies(vec![1.0; n])
    .unwrap()
}

fn adv(c: &axpo_core::Credited, id: u32) -> Vec<f32> {
    c.get(TrajectoryId(id)).unwrap().advantages.clone()
}

#[test]
fn grpo_rloo_and_std_modes() {
    // Rewards [1, 0, 0, 0]: mean 0.25, Bessel std sqrt((0.5625 + 3 * 0.0625) / 3) = 0.5.
    let g = Group::new(
        GroupId(0),
        vec![
            traj(0, false, 1.0),
            traj(1, false, 0.0),
            traj(2, true, 0.0),
            traj(3, false, 0.0),
        ],
    )
    .unwrap();
    let b = Batch::new(vec![g]).unwrap();
    let eps = 1e-6f64;
    let c = assign(&b, &AdvantageConfig::default()).unwrap();
    close(f64::from(adv(&c, 0)[0]), 0.75 / (0.5 + eps), 1e-6);
    close(f64::from(adv(&c, 1)[0]), -0.25 / (0.5 + eps), 1e-6);
    // Dr.GRPO: no division.
    let cfg = AdvantageConfig::default().with_estimator(Estimator::Grpo { std: StdMode::None });
    let c = assign(&b, &cfg).unwrap();
    close(f64::from(adv(&c, 0)[0]), 0.75, 1e-7);
    close(f64::from(adv(&c, 3)[1]), -0.25, 1e-7);
    // RLOO: 1 - 0 = 1; 0 - 1/3.
    let c = assign(
        &b,
        &AdvantageConfig::default().with_estimator(Estimator::Rloo),
    )
    .unwrap();
    close(f64::from(adv(&c, 0)[0]), 1.0, 1e-7);
    close(f64::from(adv(&c, 2)[0]), -1.0 / 3.0, 1e-7);
}

#[test]
fn batch_std_mode() {
    // Groups [1, 0] and [1, 1, 1, 0]: batch std over all six values (mean 4/6):
    // ss = 4 * (1/3)^2 + 2 * (2/3)^2 = 4/9 + 8/9 = 4/3; var = (4/3) / 5; std = sqrt(4/15).
    let g0 = Group::new(GroupId(0), vec![traj(0, false, 1.0), traj(1, false, 0.0)]).unwrap();
    let g1 = Group::new(
        GroupId(1),
        vec![
            traj(2, false, 1.0),
            traj(3, false, 1.0),
            traj(4, false, 1.0),
            traj(5, false, 0.0),
        ],
    )
    .unwrap();
    let b = Batch::new(vec![g0, g1]).unwrap();
    let cfg = AdvantageConfig::default().with_estimator(Estimator::Grpo {
        std: StdMode::Batch,
    });
    let c = assign(&b, &cfg).unwrap();
    let s = (4.0f64 / 15.0).sqrt() + 1e-6;
    close(f64::from(adv(&c, 0)[0]), 0.5 / s, 1e-6);
    close(f64::from(adv(&c, 5)[0]), -0.75 / s, 1e-6);
}

/// Group: roots 0 (tool, wrong; the parent), 1 (no tool, right), 2 (tool, wrong), 3 (no tool,
/// right); three branches of root 0 cut after its call opens (prefix 4 tokens: P P T <call>),
/// rewards 1, 0, 1.
fn branched() -> Batch {
    let g = Group::new(
        GroupId(0),
        vec![
            traj(0, true, 0.0),
            traj(1, false, 1.0),
            traj(2, true, 0.0),
            traj(3, false, 1.0),
        ],
    )
    .unwrap();
    let b = Batch::new(vec![g]).unwrap();
    let cfg = PlanConfig::default()
        .with_max_resample_fraction(1.0)
        .with_resamples_per_prefix(3)
        .with_score(UncertaintyScore::Surprisal);
    let p = plan(&b, &cfg, 1).unwrap();
    // One all-wrong subgroup {0, 2}: both score the same; the tie breaks by id, so root 0.
    assert_eq!(p.requests().len(), 1);
    assert_eq!(p.requests()[0].parent, TrajectoryId(0));
    assert_eq!(p.requests()[0].prefix_len, 4);
    let parent = b.find(TrajectoryId(0)).unwrap().1.clone();
    let returned = [1.0, 0.0, 1.0]
        .iter()
        .map(|&r| {
            let mut roles: Vec<Role> = (0..4).map(|i| parent.role_at(i).unwrap()).collect();
            roles.extend([
                Role::ToolCall,
                Role::ToolCall,
                Role::ToolResponse,
                Role::Answer,
            ]);
            let mut tokens = parent.tokens()[..4].to_vec();
            tokens.extend([70, 71, 72, 73]);
            BranchRollout {
                parent: TrajectoryId(0),
                prefix_len: 4,
                tokens,
                spans: spans_from_roles(&roles),
                tail_logprobs: vec![-0.25; 3],
                tail_entropies: Some(vec![0.5; 3]),
                reward: Reward::Scored(r),
            }
        })
        .collect();
    let mut b = b;
    p.merge(&mut b, returned).unwrap();
    b
}

#[test]
fn tree_credit() {
    let b = branched();
    let eps = 1e-6;
    let c = assign(&b, &AdvantageConfig::default()).unwrap();
    // S = {root 0: 0, branches: 1, 0, 1}: mean 0.5, std sqrt(4 * 0.25 / 3) = sqrt(1/3).
    let s = (1.0f64 / 3.0).sqrt() + eps;
    // Group values with V = 0.5 for root 0: [0.5, 1, 0, 1], mean 0.625,
    // ss = 0.015625 + 0.140625 + 0.390625 + 0.140625 = 0.6875, std sqrt(0.6875 / 3).
    let g = (0.6875f64 / 3.0).sqrt() + eps;
    let a0 = adv(&c, 0);
    // Root 0 has policy tokens: think (prefix), call open (prefix), 2 call tokens, answer (tail).
    assert_eq!(a0.len(), 5);
    close(f64::from(a0[0]), -0.125 / g, 1e-6);
    close(f64::from(a0[1]), -0.125 / g, 1e-6);
    close(f64::from(a0[2]), -0.5 / s, 1e-6);
    close(f64::from(a0[4]), -0.5 / s, 1e-6);
    close(f64::from(adv(&c, 1)[0]), 0.375 / g, 1e-6);
    close(f64::from(adv(&c, 2)[0]), -0.625 / g, 1e-6);
    // Branches (ids 4, 5, 6): prefix masked, tails sibling-relative.
    let e4 = c.get(TrajectoryId(4)).unwrap();
    assert_eq!(e4.first_trained, 2);
    assert_eq!(e4.advantages.len(), 3);
    close(f64::from(e4.advantages[0]), 0.5 / s, 1e-6);
    close(f64::from(adv(&c, 5)[0]), -0.5 / s, 1e-6);
    // The frozen thinking prefix of the parent turned positive relative to plain GRPO, where
    // root 0 (reward 0 in [0, 1, 0, 1]) would get -0.5 / std([0,1,0,1]) < -0.125 / g.
    assert!(a0[0] > -0.5 / ((1.0f32 / 3.0).sqrt() * 2.0_f32.sqrt()));
}

#[test]
fn flat_and_tail_only_credit() {
    let b = branched();
    // Flat: seven members [0, 1, 0, 1, 1, 0, 1], mean 4/7, every policy token of every member.
    let c = assign(&b, &AdvantageConfig::default().with_credit(Credit::Flat)).unwrap();
    let v = [0.0, 1.0, 0.0, 1.0, 1.0, 0.0, 1.0];
    let m = 4.0 / 7.0;
    let sd = (v.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / 6.0).sqrt() + 1e-6;
    let e4 = c.get(TrajectoryId(4)).unwrap();
    assert_eq!(e4.first_trained, 0);
    assert_eq!(e4.advantages.len(), 5);
    close(f64::from(e4.advantages[0]), (1.0 - m) / sd, 1e-6);
    close(f64::from(adv(&c, 0)[0]), -m / sd, 1e-6);
    // TailOnly: roots plain GRPO over [0, 1, 0, 1] (std sqrt(1/3)); branches' tails
    // sibling-relative.
    let c = assign(
        &b,
        &AdvantageConfig::default().with_credit(Credit::TailOnly),
    )
    .unwrap();
    let s = (1.0f64 / 3.0).sqrt() + 1e-6;
    assert!(
        adv(&c, 0)
            .iter()
            .all(|&a| (f64::from(a) + 0.5 / s).abs() < 1e-6)
    );
    let e5 = c.get(TrajectoryId(5)).unwrap();
    assert_eq!(e5.first_trained, 2);
    close(f64::from(e5.advantages[0]), -0.5 / s, 1e-6);
}

#[test]
fn unscorable_rollouts_get_zero_and_stay_out_of_statistics() {
    let mut ts = vec![traj(0, false, 1.0), traj(1, false, 0.0)];
    ts.push(traj(2, false, 0.0).with_reward(Reward::Unscorable).unwrap());
    let b = Batch::new(vec![Group::new(GroupId(0), ts).unwrap()]).unwrap();
    let c = assign(&b, &AdvantageConfig::default()).unwrap();
    // Scored [1, 0]: mean 0.5, std sqrt(0.5).
    let s = 0.5f64.sqrt() + 1e-6;
    close(f64::from(adv(&c, 0)[0]), 0.5 / s, 1e-6);
    assert!(adv(&c, 2).iter().all(|&a| a == 0.0));
}

#[test]
fn tool_subgroups_and_all_wrong() {
    let g = Group::new(
        GroupId(3),
        vec![traj(0, true, 0.0), traj(1, false, 1.0), traj(2, true, 0.0)],
    )
    .unwrap();
    let sub = ToolSubgroup::of(&g, &axpo_core::Correctness::default());
    assert_eq!(sub.members, vec![TrajectoryId(0), TrajectoryId(2)]);
    assert_eq!(sub.thinking_only, vec![TrajectoryId(1)]);
    assert!(sub.is_all_wrong());
    let g = Group::new(GroupId(3), vec![traj(0, true, 1.0), traj(1, true, 0.0)]).unwrap();
    assert!(!ToolSubgroup::of(&g, &axpo_core::Correctness::default()).is_all_wrong());
    let g = Group::new(GroupId(3), vec![traj(0, false, 0.0)]).unwrap();
    assert!(!ToolSubgroup::of(&g, &axpo_core::Correctness::default()).is_all_wrong());
}

#[test]
fn planner_cut_points_scores_and_budget() {
    let g = Group::new(
        GroupId(0),
        vec![
            traj(0, true, 0.0),
            traj(1, true, 0.0),
            traj(2, false, 0.0),
            traj(3, false, 1.0),
        ],
    )
    .unwrap();
    // Give root 1 a more uncertain call: entropies of its call tokens 3.0.
    let g = {
        let mut rs: Vec<Trajectory> = g.rollouts().to_vec();
        rs[1] = rs[1]
            .clone()
            .with_entropies(vec![1.0, 1.0, 3.0, 3.0, 1.0])
            .unwrap();
        Group::new(GroupId(0), rs).unwrap()
    };
    let b = Batch::new(vec![g]).unwrap();
    // Budget 0.25 * 4 = 1: one request with count 1 (K = 4 is cut to what is left).
    let p = plan(&b, &PlanConfig::default(), 0).unwrap();
    assert_eq!(p.requests().len(), 1);
    assert_eq!(p.requests()[0].parent, TrajectoryId(1));
    assert_eq!(p.requests()[0].count, 1);
    assert_eq!(p.requests()[0].prefix_len, 4);
    close(f64::from(p.prefixes()[0].uncertainty), 3.0, 1e-6);
    // BeforeCall cuts before the call; its call entropy includes the opening token (1.0).
    let cfg = PlanConfig::default()
        .with_cut(CutPoint::BeforeCall)
        .with_max_resample_fraction(2.0);
    let p = plan(&b, &cfg, 0).unwrap();
    assert_eq!(p.requests()[0].prefix_len, 3);
    assert_eq!(p.requests()[0].count, 4);
    close(f64::from(p.prefixes()[0].uncertainty), 7.0 / 3.0, 1e-6);
    // Two prefixes per subgroup, budget 8: both tool users, most uncertain first.
    let cfg = PlanConfig::default()
        .with_prefixes_per_subgroup(2)
        .with_max_resample_fraction(2.0);
    let p = plan(&b, &cfg, 0).unwrap();
    let parents: Vec<_> = p.requests().iter().map(|r| r.parent.0).collect();
    assert_eq!(parents, vec![1, 0]);
    assert_eq!(p.resample_count(), 8);
    // Decision entropy reads the entropy at the opening token.
    let cfg = PlanConfig::default().with_score(UncertaintyScore::DecisionEntropy);
    let p = plan(&b, &cfg, 0).unwrap();
    close(f64::from(p.prefixes()[0].uncertainty), 1.0, 1e-6);
    // Seeded strategies are deterministic.
    for strategy in [
        SelectionStrategy::Uniform,
        SelectionStrategy::Proportional { temperature: 0.5 },
    ] {
        let cfg = PlanConfig::default().with_strategy(strategy);
        assert_eq!(plan(&b, &cfg, 42).unwrap(), plan(&b, &cfg, 42).unwrap());
    }
}

#[test]
fn second_round_retries_failed_prefixes_only() {
    let b = branched();
    let cfg = PlanConfig::default()
        .with_max_resample_fraction(4.0)
        .with_resamples_per_prefix(3)
        .with_max_rounds(2)
        .with_score(UncertaintyScore::Surprisal);
    // Root 0's sibling set has successes: nothing to retry.
    let p = plan(&b, &cfg, 1).unwrap();
    assert_eq!(p.round(), 2);
    assert!(p.is_empty());
    // With max_rounds 1 there is no second round at all.
    assert!(
        plan(&b, &cfg.clone().with_max_rounds(1), 1)
            .unwrap()
            .is_empty()
    );
    // Origins are recorded.
    let (_, t) = b.find(TrajectoryId(4)).unwrap();
    assert_eq!(
        t.origin(),
        Origin::Branch {
            parent: TrajectoryId(0),
            prefix_len: 4,
            round: 1
        }
    );
}

#[test]
fn pass_at_k_cases() {
    close(pass_at_k(4, 1, 1).unwrap(), 0.25, 1e-12);
    close(pass_at_k(4, 1, 4).unwrap(), 1.0, 1e-12);
    close(pass_at_k(4, 0, 4).unwrap(), 0.0, 1e-12);
    // 1 - C(3, 2) / C(5, 2) = 1 - 3 / 10.
    close(pass_at_k(5, 2, 2).unwrap(), 0.7, 1e-12);
    assert!(pass_at_k(4, 5, 1).is_err());
    assert!(pass_at_k(4, 1, 0).is_err());
    assert!(pass_at_k(4, 1, 5).is_err());
}

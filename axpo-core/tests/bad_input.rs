//! Bad input gets a typed error, never a panic, and loses nothing.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use axpo_core::backend::{BufferOps, Cpu, LogprobOps, MatRef, VocabChunk};
use axpo_core::objective::{Aggregation, ObjectiveConfig, ObjectiveInputs, PolicyLoss, evaluate};
use axpo_core::trajectory::spans_from_roles;
use axpo_core::{
    AdvantageConfig, Batch, BranchRollout, Error, Group, GroupId, PlanConfig, Reward, Role, Span,
    TrainingTokens, Trajectory, TrajectoryId, UncertaintyScore, assign, plan,
};

fn roles() -> Vec<Role> {
    vec![
        Role::Prompt,
        Role::Think,
        Role::ToolCall,
        Role::ToolCall,
        Role::ToolResponse,
        Role::Answer,
    ]
}

fn traj(id: u32, reward: f32) -> Result<Trajectory, Error> {
    let r = roles();
    Trajectory::new(
        TrajectoryId(id),
        (0..6).collect(),
        spans_from_roles(&r),
        vec![-1.0; 4],
        Reward::Scored(reward),
    )
}

#[test]
fn trajectory_validation() {
    let r = roles();
    let spans = spans_from_roles(&r);
    // Log-prob count differs from the policy-token count.
    assert!(matches!(
        Trajectory::new(
            TrajectoryId(0),
            (0..6).collect(),
            spans.clone(),
            vec![-1.0; 5],
            Reward::Scored(0.0)
        ),
        Err(Error::LengthMismatch {
            expected: 4,
            got: 5,
            ..
        })
    ));
    // NaN and infinite log-probs; positive log-probs.
    for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
        let lp = vec![-1.0, bad, -1.0, -1.0];
        assert!(matches!(
            Trajectory::new(
                TrajectoryId(0),
                (0..6).collect(),
                spans.clone(),
                lp,
                Reward::Scored(0.0)
            ),
            Err(Error::NonFinite { index: 1, .. })
        ));
    }
    assert!(matches!(
        Trajectory::new(
            TrajectoryId(0),
            (0..6).collect(),
            spans.clone(),
            vec![-1.0, 0.5, -1.0, -1.0],
            Reward::Scored(0.0)
        ),
        Err(Error::OutOfRange { index: 1, .. })
    ));
    // NaN and infinite rewards.
    for bad in [f32::NAN, f32::INFINITY] {
        assert!(matches!(
            Trajectory::new(
                TrajectoryId(0),
                (0..6).collect(),
                spans.clone(),
                vec![-1.0; 4],
                Reward::Scored(bad)
            ),
            Err(Error::NonFiniteReward { .. })
        ));
        assert!(
            traj(0, 0.0)
                .unwrap()
                .with_reward(Reward::Scored(bad))
                .is_err()
        );
    }
    // Spans: gap, overlap, empty, not covering the tokens.
    let gap = vec![
        Span {
            role: Role::Prompt,
            start: 0,
            end: 2,
        },
        Span {
            role: Role::Answer,
            start: 3,
            end: 6,
        },
    ];
    let empty = vec![
        Span {
            role: Role::Prompt,
            start: 0,
            end: 0,
        },
        Span {
            role: Role::Answer,
            start: 0,
            end: 6,
        },
    ];
    let short = vec![Span {
        role: Role::Answer,
        start: 0,
        end: 5,
    }];
    for s in [gap, empty, short] {
        assert!(matches!(
            Trajectory::new(
                TrajectoryId(0),
                (0..6).collect(),
                s,
                vec![-1.0; 4],
                Reward::Scored(0.0)
            ),
            Err(Error::InvalidSpans { .. }) | Err(Error::LengthMismatch { .. })
        ));
    }
    // Entropies: wrong length, NaN, negative.
    let t = traj(0, 0.0).unwrap();
    assert!(t.clone().with_entropies(vec![1.0; 3]).is_err());
    assert!(
        t.clone()
            .with_entropies(vec![1.0, f32::NAN, 1.0, 1.0])
            .is_err()
    );
    assert!(t.with_entropies(vec![1.0, -0.5, 1.0, 1.0]).is_err());
}

#[test]
fn groups_and_batches() {
    assert!(matches!(
        Group::new(GroupId(4), vec![]),
        Err(Error::EmptyGroup { group: GroupId(4) })
    ));
    assert!(matches!(Batch::new(vec![]), Err(Error::EmptyBatch)));
    assert!(matches!(
        Group::new(
            GroupId(0),
            vec![traj(1, 0.0).unwrap(), traj(1, 1.0).unwrap()]
        ),
        Err(Error::DuplicateTrajectory { .. })
    ));
    let g0 = Group::new(GroupId(0), vec![traj(1, 0.0).unwrap()]).unwrap();
    let g1 = Group::new(GroupId(0), vec![traj(2, 0.0).unwrap()]).unwrap();
    assert!(matches!(
        Batch::new(vec![g0.clone(), g1]),
        Err(Error::DuplicateGroup { .. })
    ));
    let g2 = Group::new(GroupId(1), vec![traj(1, 0.0).unwrap()]).unwrap();
    assert!(matches!(
        Batch::new(vec![g0, g2]),
        Err(Error::DuplicateTrajectory { .. })
    ));
}

fn branch_batch() -> (Batch, axpo_core::ResamplePlan) {
    let g = Group::new(
        GroupId(0),
        vec![traj(0, 0.0).unwrap(), traj(1, 0.0).unwrap()],
    )
    .unwrap();
    let b = Batch::new(vec![g]).unwrap();
    let p = plan(
        &b,
        &PlanConfig::default()
            .with_max_resample_fraction(2.0)
            .with_score(UncertaintyScore::Surprisal),
        0,
    )
    .unwrap();
    assert_eq!(p.requests()[0].prefix_len, 3);
    (b, p)
}

fn branch(tokens: Vec<u32>, prefix_len: usize) -> BranchRollout {
    let r = roles();
    BranchRollout {
        parent: TrajectoryId(0),
        prefix_len,
        tokens,
        spans: spans_from_roles(&r),
        tail_logprobs: vec![-1.0; 2],
        tail_entropies: None,
        reward: Reward::Scored(1.0),
    }
}

#[test]
fn branch_merging_checks_the_prefix() {
    let (mut b, p) = branch_batch();
    // A branch whose frozen prefix differs from its parent's.
    let bad = branch(vec![0, 1, 99, 3, 4, 5], 3);
    assert!(matches!(
        p.merge(&mut b, vec![bad]),
        Err(Error::PrefixMismatch { position: 2, .. })
    ));
    // A branch at a prefix the plan never asked for.
    assert!(matches!(
        p.merge(&mut b, vec![branch((0..6).collect(), 2)]),
        Err(Error::UnplannedBranch { .. })
    ));
    // More branches than requested.
    let k = p.requests()[0].count;
    let too_many = (0..=k).map(|_| branch((0..6).collect(), 3)).collect();
    assert!(matches!(
        p.merge(&mut b, too_many),
        Err(Error::UnplannedBranch { .. })
    ));
    // Wrong tail log-prob count.
    let mut wrong = branch((0..6).collect(), 3);
    wrong.tail_logprobs.push(-1.0);
    assert!(matches!(
        p.merge(&mut b, vec![wrong]),
        Err(Error::LengthMismatch { .. })
    ));
    // Roles differing inside the prefix.
    let mut roles_bad = branch((0..6).collect(), 3);
    roles_bad.spans = spans_from_roles(&[
        Role::Prompt,
        Role::Answer,
        Role::ToolCall,
        Role::ToolCall,
        Role::ToolResponse,
        Role::Answer,
    ]);
    assert!(matches!(
        p.merge(&mut b, vec![roles_bad]),
        Err(Error::PrefixMismatch { position: 1, .. })
    ));
    // A good branch merges.
    // The batch is unchanged after every failure above, even the one whose first branch was good.
    assert_eq!(b.branch_count(), 0);
    p.merge(&mut b, vec![branch((0..6).collect(), 3)]).unwrap();
    assert_eq!(b.branch_count(), 1);
}

#[test]
fn missing_entropies_and_bad_plan_config() {
    let (b, _) = branch_batch();
    assert!(matches!(
        plan(&b, &PlanConfig::default(), 0),
        Err(Error::MissingEntropies { .. })
    ));
    for cfg in [
        PlanConfig::default().with_resamples_per_prefix(0),
        PlanConfig::default().with_prefixes_per_subgroup(0),
        PlanConfig::default().with_max_resample_fraction(f32::NAN),
        PlanConfig::default().with_max_resample_fraction(-1.0),
        PlanConfig::default().with_max_rounds(0),
        PlanConfig::default().with_score(UncertaintyScore::PrefixEntropy { window: 0 }),
        PlanConfig::default()
            .with_strategy(axpo_core::SelectionStrategy::Proportional { temperature: 0.0 }),
    ] {
        assert!(
            matches!(plan(&b, &cfg, 0), Err(Error::InvalidConfig { .. })),
            "{cfg:?}"
        );
    }
    assert!(assign(&b, &AdvantageConfig::default().with_eps(f32::NAN)).is_err());
}

#[test]
fn objective_inputs() {
    let cfg = ObjectiveConfig::new(PolicyLoss::default(), Aggregation::TokenMean { tokens: 2 });
    let lp = [-1.0f32, -2.0];
    let good = ObjectiveInputs {
        logp: &lp,
        old_logp: &lp,
        advantages: &[1.0, -1.0],
        seq_offsets: &[0, 2],
        rollout_logp: None,
        ref_logp: None,
        entropy: None,
    };
    assert!(evaluate(&cfg, &good).is_ok());
    // Length mismatch.
    assert!(matches!(
        evaluate(
            &cfg,
            &ObjectiveInputs {
                advantages: &[1.0],
                ..good
            }
        ),
        Err(Error::LengthMismatch { .. })
    ));
    // NaN and infinite log-probs and advantages.
    for bad in [f32::NAN, f32::INFINITY] {
        assert!(matches!(
            evaluate(
                &cfg,
                &ObjectiveInputs {
                    logp: &[-1.0, bad],
                    ..good
                }
            ),
            Err(Error::NonFinite { .. })
        ));
        assert!(matches!(
            evaluate(
                &cfg,
                &ObjectiveInputs {
                    advantages: &[bad, 0.0],
                    ..good
                }
            ),
            Err(Error::NonFinite { .. })
        ));
    }
    // Bad offsets.
    assert!(matches!(
        evaluate(
            &cfg,
            &ObjectiveInputs {
                seq_offsets: &[0, 1],
                ..good
            }
        ),
        Err(Error::Shape { .. })
    ));
    // Zero trained tokens.
    let empty = ObjectiveInputs {
        logp: &[],
        old_logp: &[],
        advantages: &[],
        seq_offsets: &[0],
        ..good
    };
    assert!(matches!(
        evaluate(&cfg, &empty),
        Err(Error::NoTrainedTokens)
    ));
    let zero = ObjectiveConfig::new(PolicyLoss::default(), Aggregation::TokenMean { tokens: 0 });
    assert!(matches!(
        evaluate(&zero, &good),
        Err(Error::NoTrainedTokens)
    ));
    // A configuration that needs an input that is missing.
    let kl = cfg.with_kl(axpo_core::objective::KlPenalty {
        estimator: axpo_core::objective::KlEstimator::K3,
        beta: 0.1,
    });
    assert!(matches!(
        evaluate(&kl, &good),
        Err(Error::InvalidConfig { .. })
    ));
    // Bad configuration values.
    let bad_clip = ObjectiveConfig::new(
        PolicyLoss::PpoClip {
            eps_low: 1.5,
            eps_high: 0.2,
            dual_clip: None,
        },
        Aggregation::TokenMean { tokens: 2 },
    );
    assert!(matches!(
        evaluate(&bad_clip, &good),
        Err(Error::InvalidConfig { .. })
    ));
    let bad_dual = ObjectiveConfig::new(
        PolicyLoss::PpoClip {
            eps_low: 0.2,
            eps_high: 0.2,
            dual_clip: Some(0.5),
        },
        Aggregation::TokenMean { tokens: 2 },
    );
    assert!(matches!(
        evaluate(&bad_dual, &good),
        Err(Error::InvalidConfig { .. })
    ));
    // Overflow is reported, not returned as infinity: advantages near f32::MAX times e^20.
    let big = ObjectiveInputs {
        logp: &[-1.0 + 20.0, -2.0],
        advantages: &[-3.0e38, 0.0],
        ..good
    };
    assert!(matches!(evaluate(&cfg, &big), Err(Error::NonFinite { .. })));
}

#[test]
fn no_trained_tokens_in_a_batch() {
    // A batch whose only trajectory has no policy tokens.
    let t = Trajectory::new(
        TrajectoryId(0),
        vec![1, 2],
        spans_from_roles(&[Role::Prompt, Role::Prompt]),
        vec![],
        Reward::Scored(0.0),
    )
    .unwrap();
    let b = Batch::new(vec![Group::new(GroupId(0), vec![t]).unwrap()]).unwrap();
    let c = assign(&b, &AdvantageConfig::default()).unwrap();
    assert!(matches!(
        TrainingTokens::new(&b, &c),
        Err(Error::NoTrainedTokens)
    ));
}

#[test]
fn backend_ops_reject_bad_shapes() {
    let cpu = Cpu::new();
    let x = cpu.upload_f32(&[0.5, -1.0, 2.0, 0.25, 1.5, -0.75]).unwrap();
    assert!(MatRef::new(&x, 4, 2).is_err());
    assert!(MatRef::strided(&x, 5, 1, 2, 2).is_err());
    let m = MatRef::new(&x, 2, 3).unwrap();
    assert!(matches!(
        cpu.token_stats(m, &[0]),
        Err(Error::LengthMismatch { .. })
    ));
    assert!(matches!(
        cpu.token_stats(m, &[0, 3]),
        Err(Error::TargetOutOfRange {
            row: 1,
            target: 3,
            ..
        })
    ));
    let w = cpu.upload_f32(&[1.0, 2.0, 3.0, 4.0]).unwrap();
    assert!(matches!(
        cpu.linear_token_stats(m, MatRef::new(&w, 2, 2).unwrap(), &[0, 1], VocabChunk(2)),
        Err(Error::Shape { .. })
    ));
    assert!(
        cpu.linear_token_stats(
            MatRef::new(&x, 3, 2).unwrap(),
            MatRef::new(&w, 2, 2).unwrap(),
            &[0, 1, 0],
            VocabChunk(0)
        )
        .is_err()
    );
}

// Regressions found by the fuzz targets (ids as in fuzz/README.md).

#[test]
fn f2_advantages_beyond_f32_are_an_error() {
    // RLOO over finite rewards near f32::MAX: r - mean(others) = 2 * 3e38 does not fit f32.
    let g = Group::new(
        GroupId(0),
        vec![traj(0, 3.0e38).unwrap(), traj(1, -3.0e38).unwrap()],
    )
    .unwrap();
    let b = Batch::new(vec![g]).unwrap();
    let cfg = AdvantageConfig::default().with_estimator(axpo_core::Estimator::Rloo);
    assert!(matches!(assign(&b, &cfg), Err(Error::NonFinite { .. })));
}

#[test]
fn f3_f4_f11_objective_outputs_and_optional_inputs_are_checked() {
    let lp = [-1.0f32, -2.0];
    let base = ObjectiveInputs {
        logp: &lp,
        old_logp: &lp,
        advantages: &[1.0, -1.0],
        seq_offsets: &[0, 2],
        rollout_logp: None,
        ref_logp: None,
        entropy: None,
    };
    let cfg = ObjectiveConfig::new(PolicyLoss::default(), Aggregation::TokenMean { tokens: 2 });
    // F11: entropies given (for the metrics) but too few: a typed error, not an index panic.
    let short = ObjectiveInputs {
        entropy: Some(&[1.0]),
        ..base
    };
    assert!(matches!(
        evaluate(&cfg, &short),
        Err(Error::LengthMismatch { .. })
    ));
    // F4: a NaN in an unused optional input is still rejected.
    let nan_ref = ObjectiveInputs {
        ref_logp: Some(&[f32::NAN, 0.0]),
        ..base
    };
    assert!(matches!(
        evaluate(&cfg, &nan_ref),
        Err(Error::NonFinite { .. })
    ));
    // F3: an entropy gradient that overflows f32 is reported.
    let huge = cfg.with_entropy_coef(1e300);
    let with_h = ObjectiveInputs {
        entropy: Some(&[1.0, 2.0]),
        ..base
    };
    assert!(matches!(
        evaluate(&huge, &with_h),
        Err(Error::NonFinite { .. })
    ));
}

#[test]
fn f5_merge_may_use_the_last_id() {
    let r = roles();
    let t = |id| {
        Trajectory::new(
            TrajectoryId(id),
            (0..6).collect(),
            spans_from_roles(&r),
            vec![-1.0; 4],
            Reward::Scored(0.0),
        )
        .unwrap()
    };
    let g = Group::new(GroupId(0), vec![t(u32::MAX - 2), t(u32::MAX - 1)]).unwrap();
    let mut b = Batch::new(vec![g]).unwrap();
    let cfg = PlanConfig::default()
        .with_max_resample_fraction(2.0)
        .with_score(UncertaintyScore::Surprisal);
    let p = plan(&b, &cfg, 0).unwrap();
    let parent = p.requests()[0].parent;
    let mk = || BranchRollout {
        parent,
        ..branch((0..6).collect(), 3)
    };
    // One branch takes id u32::MAX, the last one there is.
    p.merge(&mut b, vec![mk()]).unwrap();
    assert!(b.find(TrajectoryId(u32::MAX)).is_some());
    assert_eq!(b.next_id(), None);
    // No id is left for another: an error, and the batch is unchanged.
    assert!(p.merge(&mut b, vec![mk()]).is_err());
    assert_eq!(b.branch_count(), 1);
}

#[test]
fn f6_logits_spanning_more_than_f32_are_an_error() {
    let cpu = Cpu::new();
    let x = cpu.upload_f32(&[-3.0e38, 3.0e38, 1.0]).unwrap();
    let m = MatRef::new(&x, 1, 3).unwrap();
    assert!(matches!(
        cpu.token_stats(m, &[0]),
        Err(Error::NonFinite { .. })
    ));
    // A row with no finite logit is reported the same way.
    let y = cpu.upload_f32(&[f32::NEG_INFINITY; 3]).unwrap();
    assert!(matches!(
        cpu.token_stats(MatRef::new(&y, 1, 3).unwrap(), &[1]),
        Err(Error::NonFinite { .. })
    ));
}

#[test]
fn f10_batch_std_covers_sibling_sets() {
    // One root per group: the group-level values cannot vary, but the sibling set can. The batch
    // std is taken over every reward (roots and branches), so sibling advantages stay moderate.
    let g = Group::new(GroupId(0), vec![traj(0, 0.0).unwrap()]).unwrap();
    let mut b = Batch::new(vec![g]).unwrap();
    let cfg = PlanConfig::default()
        .with_max_resample_fraction(4.0)
        .with_resamples_per_prefix(3)
        .with_score(UncertaintyScore::Surprisal);
    let p = plan(&b, &cfg, 0).unwrap();
    let answers = [1.0, 0.0, 1.0]
        .iter()
        .map(|&r| BranchRollout {
            parent: TrajectoryId(0),
            reward: Reward::Scored(r),
            ..branch((0..6).collect(), 3)
        })
        .collect();
    p.merge(&mut b, answers).unwrap();
    let acfg = AdvantageConfig::default().with_estimator(axpo_core::Estimator::Grpo {
        std: axpo_core::StdMode::Batch,
    });
    let c = assign(&b, &acfg).unwrap();
    // Rewards [0, 1, 0, 1]: std sqrt(1/3); each tail advantage is +-0.5 / (sqrt(1/3) + 1e-6).
    let want = 0.5 / ((1.0f64 / 3.0).sqrt() + 1e-6);
    for t in &c.trajectories {
        for a in &t.advantages {
            assert!(f64::from(a.abs()) <= want + 1e-5, "{a}");
        }
    }
}

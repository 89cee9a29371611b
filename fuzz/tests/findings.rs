//! The findings of the fuzz targets (README, "Findings") as small, readable tests of the
//! behaviour they must have: each failed before its fix. F13 is open and ignored until it is
//! fixed (`cargo test --release -- --ignored` runs it).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use axpo_core::backend::{BufferOps, Cpu, LogprobOps, MatRef, download_stats};
use axpo_core::objective::{Aggregation, ObjectiveConfig, ObjectiveInputs, PolicyLoss, evaluate};
use axpo_core::prelude::*;
use axpo_core::{Error, pass_at_k};

/// `prompt (3) | <tool_call> a b </tool_call> <|im_end|>`: 5 policy tokens, one tool call.
fn tool_rollout() -> (Vec<u32>, Vec<Span>) {
    let sp = SpecialTokens::QWEN3_VL;
    let tokens = vec![
        1,
        2,
        3,
        sp.tool_call_open,
        10,
        11,
        sp.tool_call_close,
        sp.im_end,
    ];
    let spans = Segmenter::default().segment(&tokens, 3).unwrap();
    (tokens, spans)
}

fn root(id: u32, reward: f32) -> Trajectory {
    let (tokens, spans) = tool_rollout();
    Trajectory::new(
        TrajectoryId(id),
        tokens,
        spans,
        vec![-0.5; 5],
        Reward::Scored(reward),
    )
    .unwrap()
}

/// A branch continuing `parent` after its call-opening token.
fn branch(batch: &Batch, r: &BranchRequest, reward: f32) -> BranchRollout {
    let sp = SpecialTokens::QWEN3_VL;
    let (_, parent) = batch.find(r.parent).unwrap();
    let mut tokens = parent.tokens()[..r.prefix_len].to_vec();
    tokens.extend([20, sp.tool_call_close, sp.im_end]);
    let spans = Segmenter::default().segment(&tokens, 3).unwrap();
    BranchRollout {
        parent: r.parent,
        prefix_len: r.prefix_len,
        tokens,
        spans,
        tail_logprobs: vec![-0.1; 3],
        tail_entropies: None,
        reward: Reward::Scored(reward),
    }
}

fn surprisal() -> PlanConfig {
    PlanConfig::default().with_score(UncertaintyScore::Surprisal)
}

#[test]
fn f2_advantages_never_overflow_f32() {
    let batch = Batch::new(vec![
        Group::new(GroupId(0), vec![root(0, f32::MAX), root(1, -f32::MAX)]).unwrap(),
    ])
    .unwrap();
    let cfg = AdvantageConfig::default().with_estimator(Estimator::Rloo);
    match assign(&batch, &cfg) {
        Ok(c) => assert!(
            c.trajectories
                .iter()
                .flat_map(|t| &t.advantages)
                .all(|a| a.is_finite()),
            "infinite advantage from finite rewards"
        ),
        Err(e) => assert!(matches!(e, Error::NonFinite { .. }), "{e:?}"),
    }
}

#[test]
fn f3_an_ok_objective_has_a_finite_entropy_gradient() {
    let cfg = ObjectiveConfig::new(
        PolicyLoss::default(),
        Aggregation::Constant { normalizer: 1e-300 },
    )
    .with_entropy_coef(1.0);
    let inputs = ObjectiveInputs {
        logp: &[-1.0f32],
        old_logp: &[-1.0],
        advantages: &[0.0],
        seq_offsets: &[0, 1],
        rollout_logp: None,
        ref_logp: None,
        entropy: Some(&[0.0]),
    };
    match evaluate(&cfg, &inputs) {
        Ok(out) => assert!(out.d_entropy.iter().all(|g| g.is_finite()), "{out:?}"),
        Err(e) => assert!(matches!(e, Error::NonFinite { .. }), "{e:?}"),
    }
}

#[test]
fn f4_objective_metrics_are_finite() {
    let cfg = ObjectiveConfig::new(PolicyLoss::default(), Aggregation::TokenMean { tokens: 2 });
    let inputs = |h: &'static [f64]| ObjectiveInputs {
        logp: &[-1.0f64, -1.0],
        old_logp: &[-1.0, -1.0],
        advantages: &[1.0, -1.0],
        seq_offsets: &[0, 2],
        rollout_logp: None,
        ref_logp: None,
        entropy: Some(h),
    };
    for h in [&[1e308, 1e308][..], &[f64::NAN, 0.0][..]] {
        if let Ok(out) = evaluate(&cfg, &inputs(h)) {
            assert!(
                out.metrics.entropy_mean.is_finite(),
                "entropies {h:?}: {:?}",
                out.metrics
            );
        }
    }
}

#[test]
fn f5_merge_may_use_the_last_id() {
    let roots = (0..4).map(|i| root(u32::MAX - 4 + i, 0.0)).collect();
    let mut batch = Batch::new(vec![Group::new(GroupId(0), roots).unwrap()]).unwrap();
    let p = plan(&batch, &surprisal(), 7).unwrap();
    assert_eq!(p.resample_count(), 1);
    let b = branch(&batch, &p.requests()[0], 1.0);
    // The highest id is u32::MAX - 1: the branch fits as u32::MAX.
    p.merge(&mut batch, vec![b]).unwrap();
    assert_eq!(batch.branch_count(), 1);
}

#[test]
fn f6_token_stats_are_finite_for_finite_logits() {
    let cpu = Cpu::new();
    let logits = cpu.upload_f32(&[f32::MAX, -f32::MAX]).unwrap();
    // log p = -2 f32::MAX does not fit f32: an error, never an infinity.
    match cpu.token_stats(MatRef::new(&logits, 1, 2).unwrap(), &[1]) {
        Ok(st) => {
            let [logp, ..] = download_stats(&cpu, &st).unwrap();
            assert!(logp[0].is_finite(), "log p = {}", logp[0]);
        }
        Err(e) => assert!(matches!(e, Error::NonFinite { .. }), "{e:?}"),
    }
}

#[test]
fn f10_batch_std_covers_the_sibling_sets() {
    // One root per group, so the group-level values never vary; its branches do.
    let mut batch = Batch::new(vec![Group::new(GroupId(0), vec![root(0, 0.0)]).unwrap()]).unwrap();
    let cfg = surprisal().with_max_resample_fraction(4.0);
    let p = plan(&batch, &cfg, 7).unwrap();
    let r = p.requests()[0];
    assert_eq!(r.count, 4);
    let answers = [1.0, 0.0, 0.0, 0.0].map(|x| branch(&batch, &r, x)).to_vec();
    p.merge(&mut batch, answers).unwrap();
    for eps in [1e-6, 0.0] {
        let adv = AdvantageConfig::default()
            .with_estimator(Estimator::Grpo {
                std: StdMode::Batch,
            })
            .with_eps(eps);
        let c = assign(&batch, &adv).unwrap();
        // Five scored rewards in the batch: |A| <= sqrt(2 * 4) for a std over all of them.
        let max = c
            .trajectories
            .iter()
            .flat_map(|t| &t.advantages)
            .fold(0.0f32, |m, a| m.max(a.abs()));
        assert!(max <= 8f32.sqrt(), "eps {eps}: |advantage| up to {max}");
    }
}

#[test]
fn f11_short_entropies_are_an_error_not_a_panic() {
    let cfg = ObjectiveConfig::new(PolicyLoss::default(), Aggregation::TokenMean { tokens: 1 });
    let inputs = ObjectiveInputs {
        logp: &[-1.0f32],
        old_logp: &[-1.0],
        advantages: &[1.0],
        seq_offsets: &[0, 1],
        rollout_logp: None,
        ref_logp: None,
        entropy: Some(&[]),
    };
    let r = std::panic::catch_unwind(|| evaluate(&cfg, &inputs).map(|o| o.loss));
    let r = r.expect("evaluate panicked");
    assert!(matches!(r, Err(Error::LengthMismatch { .. })), "{r:?}");
}

#[test]
fn f13_pass_at_k_does_not_loop_over_the_correct_count() {
    // With the old loop over `c` this call ran 2^40 iterations (hours); the product now has
    // min(c, k) = 1 factor. C(1, 1) / C(n, 1) = 1 / n.
    let n = 1usize << 40;
    let p = pass_at_k(n, n - 1, 1).unwrap();
    assert!((p - (1.0 - 1.0 / n as f64)).abs() < 1e-12, "pass@1 = {p}");
    // Both counts huge: a typed error rather than a multi-second loop.
    assert!(pass_at_k(n, n / 2, n / 4).is_err());
}

fn config_with(edit: impl Fn(&mut serde_json::Value)) -> String {
    let mut v: serde_json::Value =
        serde_json::from_str(axpo_fuzz::targets::config_json::BASE).unwrap();
    edit(&mut v);
    v.to_string()
}

#[test]
fn f7_mrope_sections_that_wrap_are_refused() {
    let text = config_with(|v| {
        v["text_config"]["rope_scaling"]["mrope_section"] = serde_json::json!([u64::MAX, 9, 0]);
    });
    let r = std::panic::catch_unwind(|| axpo_model_qwen3vl::Config::from_json_str(&text).is_ok());
    assert_eq!(r.ok(), Some(false), "accepted, or panicked");
}

#[test]
fn f8_a_huge_vision_depth_is_refused_without_allocating() {
    // u64::MAX panics (capacity overflow); 2^40 would abort the test process instead.
    let text = config_with(|v| v["vision_config"]["depth"] = serde_json::json!(u64::MAX));
    let r = std::panic::catch_unwind(|| axpo_model_qwen3vl::Config::from_json_str(&text).is_ok());
    assert_eq!(r.ok(), Some(false), "accepted, or panicked");
}

#[test]
fn f12_sizes_whose_products_overflow_are_refused() {
    let text = config_with(|v| v["vision_config"]["patch_size"] = serde_json::json!(1u64 << 32));
    if let Ok(c) = axpo_model_qwen3vl::Config::from_json_str(&text) {
        let r = std::panic::catch_unwind(|| c.vision.patch_dim());
        panic!("accepted; patch_dim() = {r:?}");
    }
}

#[test]
fn f9_sub_byte_tensors_open() {
    let header = br#"{"x":{"dtype":"F4","shape":[2],"data_offsets":[0,1]}}"#;
    let mut file = (header.len() as u64).to_le_bytes().to_vec();
    file.extend_from_slice(header);
    file.push(0x21);
    assert!(safetensors::SafeTensors::deserialize(&file).is_ok());
    let dir = std::env::temp_dir().join(format!("axpo-fuzz-f9-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("model.safetensors");
    std::fs::write(&path, &file).unwrap();
    let r = axpo_model_qwen3vl::SafetensorsStore::open_files(std::slice::from_ref(&path));
    let _ = std::fs::remove_dir_all(&dir);
    let store = r.expect("a valid file with an F4 tensor");
    assert_eq!(store.shape("x").unwrap(), &[2]);
}

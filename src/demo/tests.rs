//! End-to-end tests: a few steps of every arm on tiny sizes, checking the invariants the demo
//! promises (branches share their parent's prefix, budgets hold, logs are well formed, runs are
//! reproducible for a seed).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use axpo_core::backend::Cpu;
use axpo_core::rng::Rng;
use axpo_core::{CutPoint, Origin, PlanConfig};
use serde_json::Value;

use super::arm::{ArmKind, resample};
use super::config::DemoConfig;
use super::config::tests::parse;
use super::env::{Question, Split, TaskConfig};
use super::experiment::{Progress, run_experiment};
use super::log::read_jsonl;
use super::policy::{Policy, PolicyShape, feature_width};
use super::rollout::{root_batch, sample_fresh};
use super::vocab::{TOOL_CALL_OPEN, segmenter};
use super::{chart, report};

/// A fresh scratch directory under the system's temporary directory.
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("axpo-demo-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn tiny(out: &Path, extra: &[&str]) -> DemoConfig {
    let out = out.to_string_lossy().into_owned();
    let mut flags = vec![
        "--out",
        out.as_str(),
        "--seed",
        "3",
        "--steps",
        "4",
        "--groups",
        "6",
        "--group-size",
        "4",
        "--budget",
        "0.5",
        "-k",
        "2",
        "--sft-demos",
        "120",
        "--sft-steps",
        "15",
        "--sft-batch",
        "16",
        "--sft-tool-share",
        "0.6",
        "--hidden",
        "16",
        "--eval-every",
        "2",
        "--eval-questions",
        "6",
        "--global-size",
        "6",
    ];
    flags.extend_from_slice(extra);
    DemoConfig::from_args(&parse(&flags).unwrap()).unwrap()
}

/// The records of a log, without the wall-clock `"arm"` records.
fn reproducible(records: &[Value]) -> Vec<Value> {
    records
        .iter()
        .filter(|r| r["type"] != "arm")
        .cloned()
        .collect()
}

#[test]
fn every_arm_runs_and_the_invariants_hold() {
    let dir = scratch("e2e");
    let config = tiny(&dir, &[]);
    let exp = run_experiment(&Cpu::new(), &config, Progress::Hidden).unwrap();
    assert_eq!(exp.seeds.len(), 1);
    let run = &exp.seeds[0];
    let kinds: Vec<ArmKind> = run.arms.iter().map(|a| a.kind).collect();
    assert_eq!(kinds, ArmKind::ALL.to_vec());
    let roots = config.rl.groups * config.rl.group_size;
    let budget = config.plan.budget(roots);
    assert_eq!(budget, 12);
    let (grpo, axpo, matched) = (&run.arms[0], &run.arms[1], &run.arms[2]);
    for a in &run.arms {
        assert_eq!(a.steps.len(), 4);
        // Evaluations after SFT (0 steps), every 2 steps, and at the end.
        let at: Vec<usize> = a.evals.iter().map(|e| e.0).collect();
        assert_eq!(at, vec![0, 2, 4]);
        assert_eq!(a.evals[0].1, run.sft_eval);
    }
    for ((g, x), m) in grpo.steps.iter().zip(&axpo.steps).zip(&matched.steps) {
        // Budgets hold, and only AXPO resamples.
        assert!(x.resamples <= budget && x.budget == budget, "{x:?}");
        assert!(x.resamples <= x.prefixes * config.plan.resamples_per_prefix);
        assert_eq!((g.resamples, m.resamples), (0, 0));
        // Compute matching: the matched arm's extra roots are AXPO's resamples, step by step.
        assert_eq!(g.roots, roots);
        assert_eq!(m.roots, roots + x.resamples);
        for s in [g, x, m] {
            let d = &s.diagnostics;
            assert!((0.0..=1.0).contains(&d.tool_call_rate));
            assert!((0.0..=1.0).contains(&d.all_wrong_tool_subgroup_rate));
            assert!(s.all_wrong_tool_subgroups <= d.groups_with_tool_use);
            assert!(s.loss.is_finite() && s.grad_norm.is_finite());
        }
    }
    assert!(
        axpo.resamples().iter().sum::<usize>() > 0,
        "the tiny run should resample at least once"
    );
    assert_eq!(matched.rollouts(), axpo.rollouts());

    // Logs: every line JSON with a type and the seed; one step record per arm and step in
    // order; evaluations where the run says.
    let records = read_jsonl(&exp.log_path).unwrap();
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for r in &records {
        assert_eq!(r["seed"], 3, "{r}");
        *counts
            .entry(r["type"].as_str().unwrap().to_owned())
            .or_default() += 1;
    }
    assert_eq!(counts["sft"], config.sft.steps);
    assert_eq!(counts["sft_done"], 1);
    assert_eq!(counts["step"], 3 * 4);
    assert_eq!(counts["eval"], 3 * 3);
    assert_eq!(counts["arm"], 3);
    for kind in ArmKind::ALL {
        let steps: Vec<u64> = records
            .iter()
            .filter(|r| r["type"] == "step" && r["arm"] == kind.name())
            .map(|r| r["step"].as_u64().unwrap())
            .collect();
        assert_eq!(steps, vec![0, 1, 2, 3]);
        let step_fields = records
            .iter()
            .find(|r| r["type"] == "step" && r["arm"] == kind.name())
            .unwrap();
        for field in [
            "tool_call_rate",
            "all_wrong_tool_subgroup_rate",
            "tool_call_signal",
            "resamples",
            "budget",
            "accuracy",
            "loss",
        ] {
            assert!(step_fields[field].is_number(), "{field} in {step_fields}");
        }
    }

    // The chart and the table.
    let svg = chart::render(&exp);
    assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
    assert_eq!(svg.matches("<polyline").count(), 6 * 3);
    let table = report::table(&exp);
    for kind in ArmKind::ALL {
        assert!(table.contains(&format!("| {} |", kind.name())), "{table}");
    }

    // Reproducible for a seed, whatever the number of worker threads.
    let dir2 = scratch("e2e-again");
    let config2 = tiny(&dir2, &["--jobs", "1"]);
    let exp2 = run_experiment(&Cpu::new(), &config2, Progress::Hidden).unwrap();
    let again = read_jsonl(&exp2.log_path).unwrap();
    assert_eq!(reproducible(&records), reproducible(&again));
    assert_eq!(exp.seeds[0].arms[1].steps, exp2.seeds[0].arms[1].steps);
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_dir_all(&dir2);
}

#[test]
fn resampled_branches_share_their_parents_prefix() {
    let task = TaskConfig {
        global_size: 6,
        ..TaskConfig::default()
    };
    let shape = PolicyShape {
        input: feature_width(task.global_size),
        hidden: 8,
    };
    // An untrained policy: uniform choices, so calls are rare and usually wrong.
    let policy = Policy::new(shape, &mut Rng::new(1, 0));
    let questions: Vec<Question> = (0..16)
        .map(|i| Question::generate(&task, 1, Split::Train, i))
        .collect();
    for (cut, k, fraction) in [
        (CutPoint::AfterCallOpen, 4, 0.25),
        (CutPoint::BeforeCall, 3, 1.0),
    ] {
        let config = PlanConfig::default()
            .with_cut(cut)
            .with_resamples_per_prefix(k)
            .with_max_resample_fraction(fraction);
        let groups = sample_fresh(
            &policy,
            &questions,
            &[8; 16],
            &mut Rng::new(2, 2),
            &segmenter(),
        )
        .unwrap();
        let mut batch = root_batch(&groups).unwrap();
        let r = resample(
            &policy,
            &mut batch,
            &questions,
            &config,
            9,
            &mut Rng::new(3, 3),
        )
        .unwrap();
        assert!(
            r.resamples > 0,
            "{cut:?}: no all-wrong tool subgroup to resample"
        );
        assert_eq!(r.budget, config.budget(128));
        assert!(r.resamples <= r.budget);
        assert_eq!(batch.branch_count(), r.resamples);
        let mut per_parent: BTreeMap<u32, usize> = BTreeMap::new();
        for t in batch.trajectories() {
            let Origin::Branch {
                parent, prefix_len, ..
            } = t.origin()
            else {
                continue;
            };
            *per_parent.entry(parent.0).or_default() += 1;
            let (_, p) = batch.find(parent).unwrap();
            assert_eq!(&t.tokens()[..prefix_len], &p.tokens()[..prefix_len]);
            assert_eq!(
                &t.logprobs()[..p.policy_index(prefix_len)],
                &p.logprobs()[..p.policy_index(prefix_len)]
            );
            assert!(p.uses_tools() && p.reward().score() == Some(0.0));
            match cut {
                // The frozen prefix ends with the call's opening token: the branch acts.
                CutPoint::AfterCallOpen => {
                    assert_eq!(t.tokens()[prefix_len - 1], TOOL_CALL_OPEN);
                    assert!(t.uses_tools());
                }
                CutPoint::BeforeCall => assert_eq!(p.tokens()[prefix_len], TOOL_CALL_OPEN),
            }
        }
        assert!(per_parent.values().all(|&n| n <= k));
    }
}

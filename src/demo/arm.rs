//! The three RL arms, from the same SFT start and seeds:
//!
//! - **GRPO**: `G` rollouts per question, group-relative advantages.
//! - **AXPO**: GRPO's rollouts, then the core's planner picks all-wrong tool subgroups and
//!   their most uncertain thinking prefixes; the policy continues each frozen prefix `K` times
//!   (within the budget); the core merges the branches and credits them.
//! - **GRPO, compute-matched**: GRPO given, at every step, as many *extra* root rollouts as AXPO
//!   resampled at that step for the same seed (spread round-robin over the step's questions),
//!   so that both sample the same number of rollouts step by step.

use std::time::Instant;

use axpo_core::backend::Backend;
use axpo_core::rng::Rng;
use axpo_core::subgroup::tool_subgroups;
use axpo_core::{
    Aggregation, Batch, Diagnostics, ObjectiveConfig, ObjectiveInputs, PlanConfig, PolicyLoss,
    TrainingTokens, assign, diagnose, evaluate, plan,
};

use super::config::DemoConfig;
use super::env::{Question, Split};
use super::error::{DemoError, DemoResult};
use super::eval::{EvalResult, eval_rng, evaluate_policy};
use super::policy::{Adam, Policy};
use super::rollout::{Finished, root_batch, sample_branches, sample_fresh, training_rows};
use super::vocab::segmenter;

/// An RL arm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, clap::ValueEnum)]
pub enum ArmKind {
    /// Plain GRPO.
    Grpo,
    /// AXPO: GRPO plus targeted resampling of all-wrong tool subgroups.
    Axpo,
    /// GRPO with extra rollouts equal to AXPO's resample count at each step.
    GrpoMatched,
}

impl ArmKind {
    /// Every arm, in canonical order.
    pub const ALL: [Self; 3] = [Self::Grpo, Self::Axpo, Self::GrpoMatched];

    /// The arm's name in logs and tables.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::Grpo => "grpo",
            Self::Axpo => "axpo",
            Self::GrpoMatched => "grpo-matched",
        }
    }
}

/// What one RL step did.
#[derive(Debug, Clone, PartialEq)]
pub struct StepStats {
    /// Step index (0-based).
    pub step: usize,
    /// Root rollouts sampled.
    pub roots: usize,
    /// Branches sampled (AXPO's resamples).
    pub resamples: usize,
    /// The step's resample budget (AXPO only; 0 otherwise).
    pub budget: usize,
    /// Prefixes resampled.
    pub prefixes: usize,
    /// Share of branches that are correct.
    pub branch_accuracy: f64,
    /// The core's batch diagnostics (rates over root rollouts; signal over trained tokens).
    pub diagnostics: Diagnostics,
    /// Groups whose tool-using subgroup is all wrong.
    pub all_wrong_tool_subgroups: usize,
    /// Accuracy of the tool-using roots.
    pub tool_accuracy: f64,
    /// Accuracy of the thinking-only roots.
    pub thinking_accuracy: f64,
    /// Share of the roots' tool calls that zoom on the target's cell.
    pub target_zoom_rate: f64,
    /// Loss of the first optimizer step.
    pub loss: f64,
    /// Clip fraction of the last optimizer step.
    pub clip_fraction: f64,
    /// Approximate KL of the last optimizer step.
    pub approx_kl: f64,
    /// Mean entropy of the trained tokens.
    pub entropy: f64,
    /// Gradient norm of the first optimizer step.
    pub grad_norm: f64,
    /// Trained tokens.
    pub trained_tokens: usize,
}

/// One arm's run over all steps.
#[derive(Debug, Clone, PartialEq)]
pub struct ArmRun {
    /// The arm.
    pub kind: ArmKind,
    /// The seed.
    pub seed: u64,
    /// Every step.
    pub steps: Vec<StepStats>,
    /// Evaluations as `(steps done, result)`; the first is the SFT start (0 steps).
    pub evals: Vec<(usize, EvalResult)>,
    /// Wall time of the arm in seconds.
    pub wall_s: f64,
}

impl ArmRun {
    /// AXPO's resamples per step (what the compute-matched arm adds).
    #[must_use]
    pub fn resamples(&self) -> Vec<usize> {
        self.steps.iter().map(|s| s.resamples).collect()
    }

    /// Rollouts sampled over the run (roots and branches).
    #[must_use]
    pub fn rollouts(&self) -> usize {
        self.steps.iter().map(|s| s.roots + s.resamples).sum()
    }

    /// The last evaluation.
    #[must_use]
    pub fn final_eval(&self) -> Option<&EvalResult> {
        self.evals.last().map(|e| &e.1)
    }
}

/// The random stream of one purpose at one step.
fn step_rng(seed: u64, purpose: u64, step: usize) -> Rng {
    Rng::new(seed, (purpose << 32) ^ step as u64)
}

/// The questions of RL step `step` (the same in every arm).
#[must_use]
pub fn step_questions(config: &DemoConfig, seed: u64, step: usize) -> Vec<Question> {
    (0..config.rl.groups)
        .map(|g| {
            Question::generate(
                &config.task,
                seed,
                Split::Train,
                (step * config.rl.groups + g) as u64,
            )
        })
        .collect()
}

fn ratio(a: usize, b: usize) -> f64 {
    if b == 0 { 0.0 } else { a as f64 / b as f64 }
}

/// Everything an arm needs besides its kind.
#[derive(Debug, Clone, Copy)]
pub struct ArmInputs<'a, B> {
    /// The backend.
    pub backend: &'a B,
    /// The configuration.
    pub config: &'a DemoConfig,
    /// The seed.
    pub seed: u64,
    /// The SFT policy every arm starts from.
    pub start: &'a Policy,
    /// The held-out questions.
    pub eval_set: &'a [Question],
    /// The evaluation of the SFT policy (step 0, shared by the arms).
    pub start_eval: &'a EvalResult,
}

/// Runs one arm. `matched` holds AXPO's resamples per step (required for
/// [`ArmKind::GrpoMatched`]). `on_step` sees every step and, when there is one, its evaluation.
///
/// # Errors
/// A core, backend or rollout error; [`DemoError::Internal`] if the compute-matched arm gets
/// no resample counts.
pub fn run_arm<B: Backend>(
    inputs: &ArmInputs<'_, B>,
    kind: ArmKind,
    matched: Option<&[usize]>,
    mut on_step: impl FnMut(&StepStats, Option<&EvalResult>) -> DemoResult<()>,
) -> DemoResult<ArmRun> {
    let t0 = Instant::now();
    let ArmInputs {
        backend,
        config,
        seed,
        start,
        eval_set,
        start_eval,
    } = *inputs;
    let rl = &config.rl;
    if kind == ArmKind::GrpoMatched && matched.is_none_or(|m| m.len() < rl.steps) {
        return Err(DemoError::Internal(
            "the compute-matched arm needs AXPO's resample count for every step".into(),
        ));
    }
    let seg = segmenter();
    let mut policy = start.clone();
    let mut adam = Adam::new(policy.params().len(), rl.lr, rl.max_grad_norm);
    let mut run = ArmRun {
        kind,
        seed,
        steps: Vec::with_capacity(rl.steps),
        evals: vec![(0, *start_eval)],
        wall_s: 0.0,
    };
    for step in 0..rl.steps {
        let questions = step_questions(config, seed, step);
        let extra = match (kind, matched) {
            (ArmKind::GrpoMatched, Some(m)) => m.get(step).copied().unwrap_or(0),
            _ => 0,
        };
        let sizes: Vec<usize> = (0..rl.groups)
            .map(|g| rl.group_size + extra / rl.groups + usize::from(g < extra % rl.groups))
            .collect();
        let groups = sample_fresh(
            &policy,
            &questions,
            &sizes,
            &mut step_rng(seed, 1, step),
            &seg,
        )?;
        let mut batch = root_batch(&groups)?;
        let mut stats = root_stats(step, &groups);
        if kind == ArmKind::Axpo {
            let r = resample(
                &policy,
                &mut batch,
                &questions,
                &config.plan,
                seed ^ ((step as u64) << 20),
                &mut step_rng(seed, 2, step),
            )?;
            stats.budget = r.budget;
            stats.prefixes = r.prefixes;
            stats.resamples = r.resamples;
            stats.branch_accuracy = ratio(r.correct, r.resamples);
        }
        let correctness = config.plan.correctness;
        let credited = assign(&batch, &config.advantage)?;
        stats.diagnostics = diagnose(&batch, &correctness, Some(&credited))?;
        stats.all_wrong_tool_subgroups = tool_subgroups(&batch, &correctness)
            .iter()
            .filter(|s| s.is_all_wrong())
            .count();
        let tokens = TrainingTokens::new(&batch, &credited)?;
        let rows = training_rows(&batch, &tokens, &questions)?;
        let n = tokens.token_count();
        stats.trained_tokens = n;
        let objective = ObjectiveConfig::new(
            PolicyLoss::PpoClip {
                eps_low: rl.clip,
                eps_high: rl.clip,
                dual_clip: None,
            },
            Aggregation::TokenMean { tokens: n },
        )
        .with_entropy_coef(rl.entropy_coef);
        for epoch in 0..rl.ppo_epochs {
            let pass = policy.head_pass(backend, &rows)?;
            let out = evaluate(
                &objective,
                &ObjectiveInputs {
                    logp: &pass.logp,
                    old_logp: &tokens.old_logp,
                    advantages: &tokens.advantages,
                    seq_offsets: &tokens.seq_offsets,
                    rollout_logp: None,
                    ref_logp: None,
                    entropy: Some(&pass.entropy),
                },
            )?;
            let d_entropy = (rl.entropy_coef != 0.0).then_some(out.d_entropy.as_slice());
            let grads = policy.gradients(backend, &rows, &pass, &out.d_logp, d_entropy)?;
            let norm = adam.step(policy.params_mut(), &grads)?;
            if epoch == 0 {
                stats.loss = f64::from(out.loss);
                stats.grad_norm = f64::from(norm);
                stats.entropy = out.metrics.entropy_mean;
            }
            stats.clip_fraction = out.metrics.clip_fraction();
            stats.approx_kl = out.metrics.approx_kl;
        }
        let done = step + 1;
        let eval = if done % config.eval.every == 0 || done == rl.steps {
            let e = evaluate_policy(
                &policy,
                eval_set,
                config.eval.samples,
                &mut eval_rng(seed, done),
                &seg,
            )?;
            run.evals.push((done, e));
            Some(e)
        } else {
            None
        };
        on_step(&stats, eval.as_ref())?;
        run.steps.push(stats);
    }
    run.wall_s = t0.elapsed().as_secs_f64();
    Ok(run)
}

/// What AXPO's resampling did in one step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resampled {
    /// The step's resample budget.
    pub budget: usize,
    /// Prefixes resampled (over all rounds).
    pub prefixes: usize,
    /// Branches sampled and merged.
    pub resamples: usize,
    /// Correct branches.
    pub correct: usize,
}

/// AXPO's resampling: round after round, the core plans which frozen thinking prefixes of
/// all-wrong tool subgroups to resample, the policy continues each `count` times from its
/// prefix, and the core checks and merges the branches into `batch`. The question of
/// `GroupId(g)` is `questions[g]`.
///
/// # Errors
/// A core error from planning or merging (a branch that does not carry its parent's prefix is
/// refused there); a rollout error.
pub fn resample(
    policy: &Policy,
    batch: &mut Batch,
    questions: &[Question],
    config: &PlanConfig,
    plan_seed: u64,
    rng: &mut Rng,
) -> DemoResult<Resampled> {
    let seg = segmenter();
    let mut out = Resampled {
        budget: config.budget(batch.root_count()),
        prefixes: 0,
        resamples: 0,
        correct: 0,
    };
    loop {
        let p = plan(batch, config, plan_seed)?;
        out.budget = p.budget();
        if p.is_empty() {
            return Ok(out);
        }
        let branches = sample_branches(policy, batch, questions, p.requests(), rng, &seg)?;
        out.prefixes += p.requests().len();
        out.resamples += branches.len();
        out.correct += branches.iter().filter(|(_, f)| f.reward >= 1.0).count();
        p.merge(
            batch,
            branches
                .into_iter()
                .map(|(parent, f)| f.into_branch(parent))
                .collect(),
        )?;
    }
}

/// The statistics of the root rollouts that the core's diagnostics do not cover.
fn root_stats(step: usize, groups: &[Vec<Finished>]) -> StepStats {
    let (mut calls, mut on_target, mut tool_ok, mut think, mut think_ok) = (0, 0, 0, 0, 0);
    for f in groups.iter().flatten() {
        let ok = usize::from(f.reward >= 1.0);
        if f.used_tool() {
            calls += 1;
            on_target += usize::from(f.zoomed_on_target());
            tool_ok += ok;
        } else {
            think += 1;
            think_ok += ok;
        }
    }
    StepStats {
        step,
        roots: calls + think,
        resamples: 0,
        budget: 0,
        prefixes: 0,
        branch_accuracy: 0.0,
        diagnostics: Diagnostics::default(),
        all_wrong_tool_subgroups: 0,
        tool_accuracy: ratio(tool_ok, calls),
        thinking_accuracy: ratio(think_ok, think),
        target_zoom_rate: ratio(on_target, calls),
        loss: 0.0,
        clip_fraction: 0.0,
        approx_kl: 0.0,
        entropy: 0.0,
        grad_norm: 0.0,
        trained_tokens: 0,
    }
}

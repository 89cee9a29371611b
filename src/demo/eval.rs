//! Held-out evaluation: n samples per question, Pass@1 and Pass@4 by the core's unbiased
//! estimator, and the tool use of the samples.

use axpo_core::rng::Rng;
use axpo_core::{Segmenter, pass_at_k};

use super::env::Question;
use super::error::DemoResult;
use super::policy::Policy;
use super::rollout::sample_fresh;

/// The result of one evaluation.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EvalResult {
    /// Mean Pass@1 over questions.
    pub pass1: f64,
    /// Mean Pass@4 over questions.
    pub pass4: f64,
    /// Share of samples that call the tool.
    pub tool_call_rate: f64,
    /// Share of tool calls that zoom on the target's cell.
    pub target_zoom_rate: f64,
    /// Accuracy of the samples that call the tool.
    pub tool_accuracy: f64,
    /// Share of samples whose thinking names the target's cell.
    pub think_target_rate: f64,
    /// Accuracy of the samples that answer without the tool.
    pub thinking_accuracy: f64,
}

fn ratio(a: usize, b: usize) -> f64 {
    if b == 0 { 0.0 } else { a as f64 / b as f64 }
}

/// Samples `samples` rollouts of each question (temperature 1) and scores them.
///
/// # Errors
/// A rollout error, or a core error if `samples < 4`.
pub fn evaluate_policy(
    policy: &Policy,
    questions: &[Question],
    samples: usize,
    rng: &mut Rng,
    segmenter: &Segmenter,
) -> DemoResult<EvalResult> {
    let sizes = vec![samples; questions.len()];
    let groups = sample_fresh(policy, questions, &sizes, rng, segmenter)?;
    let (mut p1, mut p4) = (0.0, 0.0);
    let (mut calls, mut on_target, mut tool_ok, mut think, mut think_ok) = (0, 0, 0, 0, 0);
    let mut think_target = 0;
    for g in &groups {
        let c = g.iter().filter(|f| f.reward >= 1.0).count();
        p1 += pass_at_k(samples, c, 1)?;
        p4 += pass_at_k(samples, c, 4)?;
        for f in g {
            let ok = usize::from(f.reward >= 1.0);
            think_target += usize::from(f.thought_of_target());
            if f.used_tool() {
                calls += 1;
                on_target += usize::from(f.zoomed_on_target());
                tool_ok += ok;
            } else {
                think += 1;
                think_ok += ok;
            }
        }
    }
    let q = questions.len().max(1) as f64;
    Ok(EvalResult {
        pass1: p1 / q,
        pass4: p4 / q,
        tool_call_rate: ratio(calls, calls + think),
        target_zoom_rate: ratio(on_target, calls),
        tool_accuracy: ratio(tool_ok, calls),
        think_target_rate: ratio(think_target, calls + think),
        thinking_accuracy: ratio(think_ok, think),
    })
}

/// The evaluation sampler after `steps` RL steps: the same stream in every arm, so that arms
/// are compared on common random numbers.
#[must_use]
pub fn eval_rng(seed: u64, steps: usize) -> Rng {
    Rng::new(seed, (3u64 << 32) ^ steps as u64)
}

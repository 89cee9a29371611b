//! The SFT warm start: demonstrations from a scripted, imperfect teacher in which tool use is
//! a minority behaviour, and supervised training through the same backend path as RL.
//!
//! The teacher, per question: its thinking names the target's cell with probability
//! `think_accuracy` (else another cell); it zooms with probability `tool_share`, on the window
//! that shows the target with probability `region_accuracy` (else on one of the 24 other
//! windows, uniformly), and then answers the digit it sees whole in the crop (a distractor's,
//! after a wrong zoom; a random digit if it sees none); otherwise it answers the target digit
//! directly. Demonstrations are not filtered for correctness.

use axpo_core::backend::Backend;
use axpo_core::rng::Rng;
use axpo_core::{Aggregation, ObjectiveConfig, ObjectiveInputs, PolicyLoss, evaluate};

use super::env::{Question, Split, TaskConfig, WINDOWS_PER_AXIS, Window};
use super::error::{DemoError, DemoResult};
use super::grammar::policy_contexts;
use super::policy::{Adam, Policy, Rows, features};
use super::vocab::{
    DIGITS, IM_END, PROMPT, REGIONS, THINK_CLOSE, THINK_OPEN, TOOL_CALL_CLOSE, TOOL_CALL_OPEN,
    TOOL_RESPONSE, ZOOM, coord_token, digit_token, region_token,
};

/// SFT settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SftConfig {
    /// Number of demonstrations.
    pub demos: usize,
    /// Optimizer steps.
    pub steps: usize,
    /// Demonstrations per step.
    pub batch: usize,
    /// Adam learning rate.
    pub lr: f32,
    /// Share of demonstrations that zoom.
    pub tool_share: f32,
    /// Share of zooms on the target's cell.
    pub region_accuracy: f32,
    /// Share of thinking that names the target's cell.
    pub think_accuracy: f32,
}

/// A window other than `avoid`, uniformly.
fn other_window(rng: &mut Rng, avoid: Window) -> Window {
    let n = WINDOWS_PER_AXIS;
    let a = usize::from(avoid.y) * n + usize::from(avoid.x);
    let k = (a + 1 + rng.below(n * n - 1)) % (n * n);
    Window {
        x: (k % n) as u8,
        y: (k / n) as u8,
    }
}

/// A cell other than `avoid`, uniformly.
fn other_region(rng: &mut Rng, avoid: u8) -> u8 {
    ((usize::from(avoid) + 1 + rng.below(REGIONS - 1)) % REGIONS) as u8
}

/// The teacher's demonstration for `question` (prompt included).
#[must_use]
pub fn demonstration(question: &Question, config: &SftConfig, rng: &mut Rng) -> Vec<u32> {
    let chance = |rng: &mut Rng, p: f32| rng.next_f64() < f64::from(p);
    let think = if chance(rng, config.think_accuracy) {
        question.target
    } else {
        other_region(rng, question.target)
    };
    let mut t = PROMPT.to_vec();
    t.extend([THINK_OPEN, region_token(think), THINK_CLOSE]);
    if chance(rng, config.tool_share) {
        let window = if chance(rng, config.region_accuracy) {
            question.target_window()
        } else {
            other_window(rng, question.target_window())
        };
        let answer = question
            .window_digit(window)
            .unwrap_or_else(|| rng.below(DIGITS) as u8);
        t.extend([
            TOOL_CALL_OPEN,
            ZOOM,
            coord_token(window.x),
            coord_token(window.y),
            TOOL_CALL_CLOSE,
            IM_END,
        ]);
        t.extend(TOOL_RESPONSE);
        t.extend([digit_token(answer), IM_END]);
    } else {
        t.extend([digit_token(question.digit), IM_END]);
    }
    t
}

/// What SFT did.
#[derive(Debug, Clone, PartialEq)]
pub struct SftSummary {
    /// Mean negative log-likelihood per trained token, per step.
    pub losses: Vec<f64>,
    /// Share of demonstrations that zoom.
    pub demo_tool_share: f64,
    /// Share of zooming demonstrations that zoom on the target's window.
    pub demo_region_accuracy: f64,
    /// Share of demonstrations whose answer is correct.
    pub demo_accuracy: f64,
}

/// Supervised warm start of `policy` on teacher demonstrations of the SFT split; `on_step`
/// gets `(step, loss)` after every step.
///
/// # Errors
/// A backend, core or grammar error.
pub fn train_sft<B: Backend>(
    backend: &B,
    policy: &mut Policy,
    config: &SftConfig,
    task: &TaskConfig,
    seed: u64,
    mut on_step: impl FnMut(usize, f64) -> DemoResult<()>,
) -> DemoResult<SftSummary> {
    let mut rng = Rng::new(seed, 0x5F7);
    let (mut tools, mut on_target, mut correct) = (0usize, 0usize, 0usize);
    // Per demonstration: its rows (non-forced positions only: forced ones have no gradient).
    let mut demos: Vec<Rows> = Vec::with_capacity(config.demos);
    let mut buf = Vec::new();
    for i in 0..config.demos {
        let q = Question::generate(task, seed, Split::Sft, i as u64);
        let tokens = demonstration(&q, config, &mut rng);
        let mut rows = Rows::default();
        let mut answer = None;
        for (pos, ctx) in policy_contexts(&tokens, PROMPT.len())? {
            let token = tokens[pos];
            if ctx.state.forced().is_some() {
                continue;
            }
            if ctx.state == super::grammar::State::CallY {
                tools += 1;
                let window = ctx.call_x.zip(super::vocab::token_coord(token));
                on_target +=
                    usize::from(window == Some((q.target_window().x, q.target_window().y)));
            }
            if let Some(d) = super::vocab::token_digit(token) {
                answer = Some(d);
            }
            let obs = ctx.observed.map(|r| q.zoom(r));
            features(&q, &ctx, obs.as_ref(), &mut buf);
            rows.features.extend_from_slice(&buf);
            rows.states.push(ctx.state);
            rows.targets.push(token);
        }
        correct += usize::from(q.score(answer) > 0.0);
        demos.push(rows);
    }
    let mut adam = Adam::new(policy.params().len(), config.lr, 1.0);
    let mut order: Vec<usize> = (0..demos.len()).collect();
    let mut cursor = order.len();
    let mut losses = Vec::with_capacity(config.steps);
    for step in 0..config.steps {
        let mut batch = Rows::default();
        for _ in 0..config.batch.min(demos.len()) {
            if cursor == order.len() {
                // A new epoch: Fisher-Yates shuffle.
                for i in (1..order.len()).rev() {
                    order.swap(i, rng.below(i + 1));
                }
                cursor = 0;
            }
            let d = &demos[order[cursor]];
            cursor += 1;
            batch.features.extend_from_slice(&d.features);
            batch.states.extend_from_slice(&d.states);
            batch.targets.extend_from_slice(&d.targets);
        }
        let n = batch.len();
        if n == 0 {
            return Err(DemoError::Internal("an SFT batch without rows".into()));
        }
        let pass = policy.head_pass(backend, &batch)?;
        // Negative log-likelihood as the core's plain policy gradient with advantage 1.
        let ones = vec![1.0f32; n];
        let offsets = [0, n];
        let objective = ObjectiveConfig::new(
            PolicyLoss::PolicyGradient,
            Aggregation::TokenMean { tokens: n },
        );
        let out = evaluate(
            &objective,
            &ObjectiveInputs {
                logp: &pass.logp,
                old_logp: &pass.logp,
                advantages: &ones,
                seq_offsets: &offsets,
                rollout_logp: None,
                ref_logp: None,
                entropy: None,
            },
        )?;
        let grads = policy.gradients(backend, &batch, &pass, &out.d_logp, None)?;
        adam.step(policy.params_mut(), &grads)?;
        let loss = f64::from(out.loss);
        losses.push(loss);
        on_step(step, loss)?;
    }
    let ratio = |a: usize, b: usize| if b == 0 { 0.0 } else { a as f64 / b as f64 };
    Ok(SftSummary {
        losses,
        demo_tool_share: ratio(tools, config.demos),
        demo_region_accuracy: ratio(on_target, tools),
        demo_accuracy: ratio(correct, config.demos),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::demo::vocab::TOOL_CALL_OPEN;

    #[test]
    fn demonstrations_follow_the_teacher_and_the_grammar() {
        let task = TaskConfig::default();
        let config = SftConfig {
            demos: 0,
            steps: 0,
            batch: 1,
            lr: 0.01,
            tool_share: 0.3,
            region_accuracy: 0.2,
            think_accuracy: 0.6,
        };
        let mut rng = Rng::new(5, 5);
        let (mut tools, mut on_target, mut think_ok, mut correct_direct, mut direct) =
            (0, 0, 0, 0, 0);
        let n = 3000;
        for i in 0..n {
            let q = Question::generate(&task, 5, Split::Sft, i);
            let t = demonstration(&q, &config, &mut rng);
            let ctx = policy_contexts(&t, PROMPT.len()).unwrap();
            assert!(!ctx.is_empty());
            think_ok += usize::from(t[PROMPT.len() + 1] == region_token(q.target));
            if t.contains(&TOOL_CALL_OPEN) {
                tools += 1;
                let w = q.target_window();
                let call = &t[PROMPT.len() + 5..PROMPT.len() + 7];
                on_target += usize::from(call == [coord_token(w.x), coord_token(w.y)]);
            } else {
                direct += 1;
                correct_direct += usize::from(t[t.len() - 2] == digit_token(q.digit));
            }
        }
        let share = |a: usize, b: usize| a as f64 / b as f64;
        assert!((share(tools, n as usize) - 0.3).abs() < 0.03);
        assert!((share(on_target, tools) - 0.2).abs() < 0.05);
        assert!((share(think_ok, n as usize) - 0.6).abs() < 0.03);
        assert_eq!(correct_direct, direct);
    }
}

//! The final table: per arm, mean ± standard deviation over seeds.
//!
//! Evaluation columns come from the last evaluation (held-out questions, n samples each).
//! Training diagnostics are averaged over a window of the first and of the last 10% of steps
//! (at least one step); the all-wrong tool-subgroup rate is pooled over the window (all-wrong
//! subgroups / groups with tool use), so steps without tool use do not count as zeros.

use std::fmt::Write as _;

use super::arm::{ArmKind, ArmRun, StepStats};
use super::experiment::Experiment;

/// Mean, sample standard deviation, min and max of per-seed values (NaN values skipped).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Stat {
    /// Mean.
    pub mean: f64,
    /// Sample standard deviation (0 for one value).
    pub sd: f64,
    /// Number of values.
    pub n: usize,
}

impl Stat {
    /// The statistics of `values`, NaN skipped.
    #[must_use]
    pub fn of(values: impl IntoIterator<Item = f64>) -> Self {
        let v: Vec<f64> = values.into_iter().filter(|x| !x.is_nan()).collect();
        let n = v.len();
        if n == 0 {
            return Self {
                mean: f64::NAN,
                sd: f64::NAN,
                n,
            };
        }
        let mean = v.iter().sum::<f64>() / n as f64;
        let sd = if n < 2 {
            0.0
        } else {
            (v.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / (n - 1) as f64).sqrt()
        };
        Self { mean, sd, n }
    }

    /// `mean ± sd` with `digits` decimals, or `n/a`.
    #[must_use]
    pub fn show(&self, digits: usize) -> String {
        if self.mean.is_nan() {
            "n/a".into()
        } else {
            format!("{:.digits$} ± {:.digits$}", self.mean, self.sd)
        }
    }
}

/// The steps of the first and of the last 10% of a run (at least one step each).
#[must_use]
pub fn windows(steps: &[StepStats]) -> (&[StepStats], &[StepStats]) {
    let w = (steps.len() / 10).max(1).min(steps.len());
    (&steps[..w], &steps[steps.len() - w..])
}

/// Mean tool-call rate over steps.
#[must_use]
pub fn tool_rate(steps: &[StepStats]) -> f64 {
    Stat::of(steps.iter().map(|s| s.diagnostics.tool_call_rate)).mean
}

/// Pooled all-wrong tool-subgroup rate over steps (NaN without tool use).
#[must_use]
pub fn all_wrong_rate(steps: &[StepStats]) -> f64 {
    let aw: usize = steps.iter().map(|s| s.all_wrong_tool_subgroups).sum();
    let g: usize = steps
        .iter()
        .map(|s| s.diagnostics.groups_with_tool_use)
        .sum();
    if g == 0 {
        f64::NAN
    } else {
        aw as f64 / g as f64
    }
}

/// Mean tool-call signal over steps with tool-call tokens (NaN without).
#[must_use]
pub fn tool_signal(steps: &[StepStats]) -> f64 {
    Stat::of(
        steps
            .iter()
            .filter(|s| s.diagnostics.tool_call_tokens > 0)
            .map(|s| s.diagnostics.tool_call_signal),
    )
    .mean
}

/// One arm's summary over seeds.
#[derive(Debug, Clone, PartialEq)]
pub struct ArmSummary {
    /// The arm.
    pub kind: ArmKind,
    /// Final eval Pass@1.
    pub pass1: Stat,
    /// Final eval Pass@4.
    pub pass4: Stat,
    /// Final eval tool-call rate.
    pub eval_tool_rate: Stat,
    /// Final eval share of calls on the target's cell.
    pub eval_target_zoom: Stat,
    /// Training tool-call rate, first window.
    pub tool_rate_first: Stat,
    /// Training tool-call rate, last window.
    pub tool_rate_last: Stat,
    /// All-wrong tool-subgroup rate, first window.
    pub all_wrong_first: Stat,
    /// All-wrong tool-subgroup rate, last window.
    pub all_wrong_last: Stat,
    /// Tool-call signal, last window.
    pub signal_last: Stat,
    /// Resamples per seed.
    pub resamples: Stat,
    /// Rollouts per seed.
    pub rollouts: Stat,
    /// Wall time per seed.
    pub wall_s: Stat,
}

/// Summaries of every arm that ran, in canonical order.
#[must_use]
pub fn summarize(exp: &Experiment) -> Vec<ArmSummary> {
    ArmKind::ALL
        .into_iter()
        .filter_map(|kind| {
            let runs: Vec<&ArmRun> = exp
                .seeds
                .iter()
                .flat_map(|s| s.arms.iter().filter(move |a| a.kind == kind))
                .collect();
            if runs.is_empty() {
                return None;
            }
            let stat = |f: &dyn Fn(&ArmRun) -> f64| Stat::of(runs.iter().map(|r| f(r)));
            let fin = |f: &dyn Fn(&super::eval::EvalResult) -> f64| {
                stat(&|r: &ArmRun| r.final_eval().map_or(f64::NAN, f))
            };
            Some(ArmSummary {
                kind,
                pass1: fin(&|e| e.pass1),
                pass4: fin(&|e| e.pass4),
                eval_tool_rate: fin(&|e| e.tool_call_rate),
                eval_target_zoom: fin(&|e| e.target_zoom_rate),
                tool_rate_first: stat(&|r| tool_rate(windows(&r.steps).0)),
                tool_rate_last: stat(&|r| tool_rate(windows(&r.steps).1)),
                all_wrong_first: stat(&|r| all_wrong_rate(windows(&r.steps).0)),
                all_wrong_last: stat(&|r| all_wrong_rate(windows(&r.steps).1)),
                signal_last: stat(&|r| tool_signal(windows(&r.steps).1)),
                resamples: stat(&|r| r.resamples().iter().sum::<usize>() as f64),
                rollouts: stat(&|r| r.rollouts() as f64),
                wall_s: stat(&|r| r.wall_s),
            })
        })
        .collect()
}

/// The results as Markdown tables (also readable in a terminal).
#[must_use]
pub fn table(exp: &Experiment) -> String {
    let n = exp.seeds.len();
    let sft = |f: &dyn Fn(&super::eval::EvalResult) -> f64| {
        Stat::of(exp.seeds.iter().map(|s| f(&s.sft_eval)))
    };
    let mut out = String::new();
    let _ = writeln!(
        out,
        "Final evaluation (held-out questions; mean ± sd over {n} seed{}):\n",
        if n == 1 { "" } else { "s" }
    );
    let _ = writeln!(
        out,
        "| arm | Pass@1 | Pass@4 | tool-call rate | zooms on target | resamples | rollouts | wall s |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|---|---|");
    let _ = writeln!(
        out,
        "| SFT start | {} | {} | {} | {} | | | |",
        sft(&|e| e.pass1).show(3),
        sft(&|e| e.pass4).show(3),
        sft(&|e| e.tool_call_rate).show(2),
        sft(&|e| e.target_zoom_rate).show(2),
    );
    let summaries = summarize(exp);
    for s in &summaries {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} | {} |",
            s.kind.name(),
            s.pass1.show(3),
            s.pass4.show(3),
            s.eval_tool_rate.show(2),
            s.eval_target_zoom.show(2),
            s.resamples.show(0),
            s.rollouts.show(0),
            s.wall_s.show(1),
        );
    }
    let _ = writeln!(
        out,
        "\nTraining diagnostics (root rollouts; first → last 10% of steps):\n"
    );
    let _ = writeln!(
        out,
        "| arm | tool-call rate | all-wrong tool-subgroup rate | tool-call signal (last) |"
    );
    let _ = writeln!(out, "|---|---|---|---|");
    for s in &summaries {
        let _ = writeln!(
            out,
            "| {} | {} → {} | {} → {} | {} |",
            s.kind.name(),
            s.tool_rate_first.show(2),
            s.tool_rate_last.show(2),
            s.all_wrong_first.show(2),
            s.all_wrong_last.show(2),
            s.signal_last.show(2),
        );
    }
    out
}

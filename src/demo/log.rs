//! JSON-lines logs: one record per SFT step, RL step, evaluation and finished arm.
//!
//! Every record has a `"type"` (`"sft"`, `"sft_done"`, `"step"`, `"eval"`, `"arm"`) and a
//! `"seed"`; RL records also have an `"arm"`. Only `"arm"` records carry wall-clock time, so
//! everything else is reproducible bit for bit for a given seed.

use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use super::arm::{ArmKind, ArmRun, StepStats};
use super::error::{DemoError, DemoResult};
use super::eval::EvalResult;
use super::sft::SftSummary;

/// A JSON-lines file being written.
#[derive(Debug)]
pub struct JsonlWriter {
    path: PathBuf,
    file: BufWriter<File>,
}

impl JsonlWriter {
    /// Creates (truncates) the file.
    ///
    /// # Errors
    /// [`DemoError::Io`].
    pub fn create(path: &Path) -> DemoResult<Self> {
        let file = File::create(path).map_err(|source| DemoError::Io {
            path: path.to_owned(),
            source,
        })?;
        Ok(Self {
            path: path.to_owned(),
            file: BufWriter::new(file),
        })
    }

    /// Appends one record.
    ///
    /// # Errors
    /// [`DemoError::Io`].
    pub fn write(&mut self, record: &Value) -> DemoResult<()> {
        writeln!(self.file, "{record}").map_err(|source| DemoError::Io {
            path: self.path.clone(),
            source,
        })
    }

    /// Flushes to disk.
    ///
    /// # Errors
    /// [`DemoError::Io`].
    pub fn flush(&mut self) -> DemoResult<()> {
        self.file.flush().map_err(|source| DemoError::Io {
            path: self.path.clone(),
            source,
        })
    }
}

/// Reads every record of a JSON-lines file.
///
/// # Errors
/// [`DemoError::Io`], or [`DemoError::Internal`] for a line that is not JSON.
pub fn read_jsonl(path: &Path) -> DemoResult<Vec<Value>> {
    let io = |source| DemoError::Io {
        path: path.to_owned(),
        source,
    };
    let file = File::open(path).map_err(io)?;
    let mut out = Vec::new();
    for (i, line) in BufReader::new(file).lines().enumerate() {
        let line = line.map_err(io)?;
        let v = serde_json::from_str(&line).map_err(|e| {
            DemoError::Internal(format!("{}:{}: not JSON: {e}", path.display(), i + 1))
        })?;
        out.push(v);
    }
    Ok(out)
}

/// An SFT step.
#[must_use]
pub fn sft_record(seed: u64, step: usize, loss: f64) -> Value {
    json!({"type": "sft", "seed": seed, "step": step, "loss": loss})
}

/// The end of SFT, with the demonstration statistics and the SFT policy's evaluation.
#[must_use]
pub fn sft_done_record(seed: u64, summary: &SftSummary, eval: &EvalResult) -> Value {
    json!({
        "type": "sft_done",
        "seed": seed,
        "demo_tool_share": summary.demo_tool_share,
        "demo_region_accuracy": summary.demo_region_accuracy,
        "demo_accuracy": summary.demo_accuracy,
        "final_loss": summary.losses.last().copied().unwrap_or(f64::NAN),
        "eval": eval_fields(eval),
    })
}

fn eval_fields(e: &EvalResult) -> Value {
    json!({
        "pass1": e.pass1,
        "pass4": e.pass4,
        "tool_call_rate": e.tool_call_rate,
        "target_zoom_rate": e.target_zoom_rate,
        "tool_accuracy": e.tool_accuracy,
        "thinking_accuracy": e.thinking_accuracy,
        "think_target_rate": e.think_target_rate,
    })
}

/// An RL step.
#[must_use]
pub fn step_record(seed: u64, arm: ArmKind, s: &StepStats) -> Value {
    let d = &s.diagnostics;
    json!({
        "type": "step",
        "seed": seed,
        "arm": arm.name(),
        "step": s.step,
        "roots": s.roots,
        "resamples": s.resamples,
        "budget": s.budget,
        "prefixes": s.prefixes,
        "branch_accuracy": s.branch_accuracy,
        "accuracy": d.accuracy,
        "tool_call_rate": d.tool_call_rate,
        "groups_with_tool_use": d.groups_with_tool_use,
        "all_wrong_tool_subgroups": s.all_wrong_tool_subgroups,
        "all_wrong_tool_subgroup_rate": d.all_wrong_tool_subgroup_rate,
        "zero_variance_group_rate": d.zero_variance_group_rate,
        "tool_call_tokens": d.tool_call_tokens,
        "tool_call_signal": d.tool_call_signal,
        "tool_call_positive": d.tool_call_positive,
        "tool_accuracy": s.tool_accuracy,
        "thinking_accuracy": s.thinking_accuracy,
        "target_zoom_rate": s.target_zoom_rate,
        "loss": s.loss,
        "clip_fraction": s.clip_fraction,
        "approx_kl": s.approx_kl,
        "entropy": s.entropy,
        "grad_norm": s.grad_norm,
        "trained_tokens": s.trained_tokens,
    })
}

/// An evaluation after `steps` RL steps.
#[must_use]
pub fn eval_record(seed: u64, arm: ArmKind, steps: usize, e: &EvalResult) -> Value {
    let mut v = eval_fields(e);
    if let Some(o) = v.as_object_mut() {
        o.insert("type".into(), json!("eval"));
        o.insert("seed".into(), json!(seed));
        o.insert("arm".into(), json!(arm.name()));
        o.insert("step".into(), json!(steps));
    }
    v
}

/// A finished arm (the only record with wall-clock time).
#[must_use]
pub fn arm_record(run: &ArmRun) -> Value {
    json!({
        "type": "arm",
        "seed": run.seed,
        "arm": run.kind.name(),
        "steps": run.steps.len(),
        "rollouts": run.rollouts(),
        "resamples": run.resamples().iter().sum::<usize>(),
        "final_eval": run.final_eval().map(eval_fields),
        "wall_s": run.wall_s,
    })
}

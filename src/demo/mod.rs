//! The `axpo demo` task: a miniature of the paper's experiment on a built-in multimodal
//! tool-use task, where GRPO can show the Thinking-Acting Gap and AXPO can close it.
//!
//! `cargo run --release -- demo` runs, for one seed, an SFT warm start and three RL arms from
//! it (GRPO, AXPO, and GRPO given AXPO's resample count as extra rollouts), then prints a table
//! and writes JSON-lines logs and an SVG chart under `out/demo/`. See `src/demo/README.md` for
//! the task, the policy, the arms, the configuration and results over seeds.
//!
//! Modules, by concept:
//!
//! | module | what |
//! |---|---|
//! | [`env`](mod@env) | images, questions, the zoom tool, scoring |
//! | [`vocab`], [`grammar`] | tokens, special tokens for the core's segmenter, the grammar |
//! | [`policy`] | features, MLP, the output head through the backend, Adam |
//! | [`rollout`] | sampling, groups, continuing a frozen prefix |
//! | [`sft`] | teacher demonstrations and the SFT warm start |
//! | [`arm`] | the three RL arms |
//! | [`eval`] | held-out Pass@1 / Pass@4 |
//! | [`experiment`] | seeds, threads, progress bars |
//! | [`log`], [`chart`], [`report`] | JSON lines, SVG, the table |

pub mod arm;
pub mod chart;
pub mod config;
pub mod env;
pub mod error;
pub mod eval;
pub mod experiment;
pub mod grammar;
pub mod log;
pub mod policy;
pub mod report;
pub mod rollout;
pub mod sft;
pub mod vocab;

#[cfg(test)]
mod tests;

use std::fs;

use axpo_core::backend::Backend;

pub use config::{BackendKind, DemoArgs, DemoConfig};
pub use error::{DemoError, DemoResult};

use experiment::{Progress, run_experiment};

/// Runs the demo.
///
/// # Errors
/// A configuration error (bad flag combination, unavailable backend), an I/O error writing the
/// outputs, or a failure of the core or the backend.
pub fn run(args: &DemoArgs) -> Result<(), Box<dyn std::error::Error>> {
    let config = DemoConfig::from_args(args)?;
    match config.backend {
        BackendKind::Cpu => run_with(&axpo_core::backend::Cpu::new(), &config)?,
        BackendKind::Wgpu => run_wgpu(&config)?,
        BackendKind::Cuda => run_cuda(&config)?,
    }
    Ok(())
}

#[cfg(feature = "wgpu")]
fn run_wgpu(config: &DemoConfig) -> DemoResult<()> {
    run_with(&crate::wgpu::Wgpu::new()?, config)
}

#[cfg(not(feature = "wgpu"))]
fn run_wgpu(_: &DemoConfig) -> DemoResult<()> {
    Err(DemoError::BackendUnavailable(
        "--backend wgpu: this build of axpo has no wgpu backend; rebuild with `--features wgpu` \
         (or use --backend cpu)"
            .into(),
    ))
}

#[cfg(feature = "cuda")]
fn run_cuda(config: &DemoConfig) -> DemoResult<()> {
    run_with(&crate::cuda::Cuda::new(0)?, config)
}

#[cfg(not(feature = "cuda"))]
fn run_cuda(_: &DemoConfig) -> DemoResult<()> {
    Err(DemoError::BackendUnavailable(
        "--backend cuda: this build of axpo has no cuda backend; rebuild with `--features cuda` \
         (or use --backend cpu)"
            .into(),
    ))
}

fn run_with<B: Backend>(backend: &B, config: &DemoConfig) -> DemoResult<()> {
    let arms: Vec<&str> = config.arms.iter().map(|a| a.name()).collect();
    println!(
        "axpo demo: seeds {:?}, arms {}, {} steps x {} questions x {} rollouts, K={}, budget {}, \
         backend {}",
        config.seeds,
        arms.join(", "),
        config.rl.steps,
        config.rl.groups,
        config.rl.group_size,
        config.plan.resamples_per_prefix,
        config.plan.max_resample_fraction,
        backend.name()
    );
    let exp = run_experiment(backend, config, Progress::Bars)?;
    let table = report::table(&exp);
    let chart_path = config.out.join("chart.svg");
    fs::write(&chart_path, chart::render(&exp)).map_err(|source| DemoError::Io {
        path: chart_path.clone(),
        source,
    })?;
    let results_path = config.out.join("results.md");
    fs::write(&results_path, &table).map_err(|source| DemoError::Io {
        path: results_path.clone(),
        source,
    })?;
    println!("\n{table}");
    println!(
        "wall time {:.1} s; log {}, chart {}, table {}",
        exp.wall_s,
        exp.log_path.display(),
        chart_path.display(),
        results_path.display()
    );
    Ok(())
}

//! One experiment: for each seed, SFT then the arms; worker threads; progress bars; logs.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Instant;

use axpo_core::backend::Backend;
use axpo_core::rng::Rng;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::arm::{ArmInputs, ArmKind, ArmRun, run_arm};
use super::config::DemoConfig;
use super::env::{Question, Split};
use super::error::{DemoError, DemoResult};
use super::eval::{EvalResult, eval_rng, evaluate_policy};
use super::log::{JsonlWriter, arm_record, eval_record, sft_done_record, sft_record, step_record};
use super::policy::{Policy, PolicyShape, feature_width};
use super::sft::{SftSummary, train_sft};
use super::vocab::segmenter;

/// Whether to draw progress bars.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    /// One bar per SFT run and per arm, on stderr (hidden when it is not a terminal).
    Bars,
    /// Nothing.
    Hidden,
}

/// One seed's runs.
#[derive(Debug, Clone, PartialEq)]
pub struct SeedRun {
    /// The seed.
    pub seed: u64,
    /// The SFT warm start.
    pub sft: SftSummary,
    /// The SFT policy's evaluation.
    pub sft_eval: EvalResult,
    /// The arms, in canonical order.
    pub arms: Vec<ArmRun>,
}

/// A whole experiment.
#[derive(Debug, Clone, PartialEq)]
pub struct Experiment {
    /// Per seed, in the configuration's order.
    pub seeds: Vec<SeedRun>,
    /// Wall time in seconds.
    pub wall_s: f64,
    /// The combined JSON-lines log.
    pub log_path: PathBuf,
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> DemoError + '_ {
    move |source| DemoError::Io {
        path: path.to_owned(),
        source,
    }
}

fn run_file(out: &Path, seed: u64, what: &str) -> PathBuf {
    out.join("runs").join(format!("seed-{seed}-{what}.jsonl"))
}

struct Bars {
    multi: MultiProgress,
    style: ProgressStyle,
}

impl Bars {
    fn new(mode: Progress) -> DemoResult<Self> {
        let multi = match mode {
            Progress::Bars => MultiProgress::new(),
            Progress::Hidden => MultiProgress::with_draw_target(ProgressDrawTarget::hidden()),
        };
        let style = ProgressStyle::with_template(
            "{prefix:>20} [{bar:30}] {pos:>4}/{len:<4} {elapsed:>4} {msg}",
        )
        .map_err(|e| DemoError::Internal(format!("progress template: {e}")))?
        .progress_chars("=> ");
        Ok(Self { multi, style })
    }

    fn bar(&self, len: usize, prefix: String) -> ProgressBar {
        let b = self
            .multi
            .add(ProgressBar::new(len as u64).with_style(self.style.clone()));
        b.set_prefix(prefix);
        b
    }
}

/// Runs the experiment and writes its logs under `config.out`.
///
/// # Errors
/// [`DemoError::Config`] for an invalid configuration; the first error of any seed.
pub fn run_experiment<B: Backend>(
    backend: &B,
    config: &DemoConfig,
    progress: Progress,
) -> DemoResult<Experiment> {
    config.validate()?;
    let t0 = Instant::now();
    let runs_dir = config.out.join("runs");
    fs::create_dir_all(&runs_dir).map_err(io_err(&runs_dir))?;
    let bars = Bars::new(progress)?;
    let n = config.seeds.len();
    let workers = config.jobs.min(n).max(1);
    let parallel_arms = config.jobs >= 2 * workers;
    let next = AtomicUsize::new(0);
    let abort = AtomicBool::new(false);
    let results: Mutex<Vec<Option<DemoResult<SeedRun>>>> =
        Mutex::new((0..n).map(|_| None).collect());
    std::thread::scope(|s| {
        for _ in 0..workers {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    if i >= n || abort.load(Ordering::SeqCst) {
                        break;
                    }
                    let r = run_seed(backend, config, config.seeds[i], &bars, parallel_arms);
                    if r.is_err() {
                        abort.store(true, Ordering::SeqCst);
                    }
                    if let Ok(mut v) = results.lock() {
                        v[i] = Some(r);
                    }
                }
            });
        }
    });
    let results = results
        .into_inner()
        .map_err(|_| DemoError::WorkerPanicked)?;
    let mut seeds = Vec::with_capacity(n);
    for r in results {
        match r {
            Some(r) => seeds.push(r?),
            None => return Err(DemoError::WorkerPanicked),
        }
    }
    // The combined log: per seed, SFT then the arms in canonical order.
    let log_path = config.out.join("log.jsonl");
    let mut all = Vec::new();
    for s in &seeds {
        let mut parts = vec![run_file(&config.out, s.seed, "sft")];
        parts.extend(
            s.arms
                .iter()
                .map(|a| run_file(&config.out, s.seed, a.kind.name())),
        );
        for p in parts {
            all.extend(fs::read(&p).map_err(io_err(&p))?);
        }
    }
    fs::write(&log_path, all).map_err(io_err(&log_path))?;
    Ok(Experiment {
        seeds,
        wall_s: t0.elapsed().as_secs_f64(),
        log_path,
    })
}

/// The held-out questions of a seed.
#[must_use]
pub fn eval_questions(config: &DemoConfig, seed: u64) -> Vec<Question> {
    (0..config.eval.questions as u64)
        .map(|i| Question::generate(&config.task, seed, Split::Eval, i))
        .collect()
}

/// The SFT warm start of a seed: a fresh policy trained on the seed's demonstrations.
///
/// # Errors
/// A backend or core error; or what `on_step` returns.
pub fn sft_policy<B: Backend>(
    backend: &B,
    config: &DemoConfig,
    seed: u64,
    on_step: impl FnMut(usize, f64) -> DemoResult<()>,
) -> DemoResult<(Policy, SftSummary)> {
    let shape = PolicyShape {
        input: feature_width(config.task.global_size),
        hidden: config.hidden,
    };
    let mut policy = Policy::new(shape, &mut Rng::new(seed, 0x1_0000_0000));
    let summary = train_sft(
        backend,
        &mut policy,
        &config.sft,
        &config.task,
        seed,
        on_step,
    )?;
    Ok((policy, summary))
}

fn run_seed<B: Backend>(
    backend: &B,
    config: &DemoConfig,
    seed: u64,
    bars: &Bars,
    parallel_arms: bool,
) -> DemoResult<SeedRun> {
    let out = &config.out;
    let mut sft_log = JsonlWriter::create(&run_file(out, seed, "sft"))?;
    let bar = bars.bar(config.sft.steps, format!("seed {seed} sft"));
    let (policy, sft) = sft_policy(backend, config, seed, |step, loss| {
        bar.inc(1);
        if step % 25 == 0 {
            bar.set_message(format!("nll {loss:.3}"));
        }
        sft_log.write(&sft_record(seed, step, loss))
    })?;
    let eval_set = eval_questions(config, seed);
    let sft_eval = evaluate_policy(
        &policy,
        &eval_set,
        config.eval.samples,
        &mut eval_rng(seed, 0),
        &segmenter(),
    )?;
    sft_log.write(&sft_done_record(seed, &sft, &sft_eval))?;
    sft_log.flush()?;
    bar.finish_with_message(format!(
        "P@1 {:.3} P@4 {:.3} tool {:.2}",
        sft_eval.pass1, sft_eval.pass4, sft_eval.tool_call_rate
    ));
    let inputs = ArmInputs {
        backend,
        config,
        seed,
        start: &policy,
        eval_set: &eval_set,
        start_eval: &sft_eval,
    };
    let want = |k: ArmKind| config.arms.contains(&k);
    let arm = |kind: ArmKind, matched: Option<&[usize]>| -> DemoResult<ArmRun> {
        let path = run_file(out, seed, kind.name());
        let mut log = JsonlWriter::create(&path)?;
        let bar = bars.bar(config.rl.steps, format!("seed {seed} {}", kind.name()));
        log.write(&eval_record(seed, kind, 0, &sft_eval))?;
        let run = run_arm(&inputs, kind, matched, |s, e| {
            bar.inc(1);
            bar.set_message(format!(
                "tool {:.2} all-wrong {:.2} acc {:.2}",
                s.diagnostics.tool_call_rate,
                s.diagnostics.all_wrong_tool_subgroup_rate,
                s.diagnostics.accuracy
            ));
            log.write(&step_record(seed, kind, s))?;
            if let Some(e) = e {
                log.write(&eval_record(seed, kind, s.step + 1, e))?;
            }
            Ok(())
        })?;
        log.write(&arm_record(&run))?;
        log.flush()?;
        if let Some(e) = run.final_eval() {
            bar.finish_with_message(format!(
                "P@1 {:.3} P@4 {:.3} tool {:.2}",
                e.pass1, e.pass4, e.tool_call_rate
            ));
        }
        Ok(run)
    };
    let (grpo, axpo) = if parallel_arms && want(ArmKind::Grpo) && want(ArmKind::Axpo) {
        std::thread::scope(|s| {
            let h = s.spawn(|| arm(ArmKind::Grpo, None));
            let axpo = arm(ArmKind::Axpo, None);
            let grpo = h.join().map_err(|_| DemoError::WorkerPanicked);
            (grpo.and_then(|g| g.map(Some)), axpo.map(Some))
        })
    } else {
        let grpo = want(ArmKind::Grpo)
            .then(|| arm(ArmKind::Grpo, None))
            .transpose();
        let axpo = want(ArmKind::Axpo)
            .then(|| arm(ArmKind::Axpo, None))
            .transpose();
        (grpo, axpo)
    };
    let (grpo, axpo) = (grpo?, axpo?);
    let matched = match (&axpo, want(ArmKind::GrpoMatched)) {
        (Some(a), true) => Some(arm(ArmKind::GrpoMatched, Some(&a.resamples()))?),
        _ => None,
    };
    Ok(SeedRun {
        seed,
        sft,
        sft_eval,
        arms: [grpo, axpo, matched].into_iter().flatten().collect(),
    })
}

//! The `axpo demo` flags and their validation into a [`DemoConfig`].

use std::path::PathBuf;

use axpo_core::{
    AdvantageConfig, CallChoice, Credit, CutPoint, PlanConfig, SelectionStrategy, UncertaintyScore,
};

use super::arm::ArmKind;
use super::env::TaskConfig;
use super::error::{DemoError, DemoResult};
use super::sft::SftConfig;

/// Which backend computes the output head's log-probs, entropies and gradients.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum BackendKind {
    /// The core's reference CPU backend.
    #[default]
    Cpu,
    /// The WGSL compute backend (needs the `wgpu` feature).
    Wgpu,
    /// The CUDA backend (needs the `cuda` feature).
    Cuda,
}

/// How resampled branches are credited (the core's [`Credit`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum CreditMode {
    /// Sibling-relative tails; the parent's prefix gets the sibling mean in the group's GRPO.
    #[default]
    Tree,
    /// Branches join the group as full members.
    Flat,
    /// Plain GRPO over the roots; branches train their tails only.
    TailOnly,
}

impl From<CreditMode> for Credit {
    fn from(c: CreditMode) -> Self {
        match c {
            CreditMode::Tree => Self::Tree,
            CreditMode::Flat => Self::Flat,
            CreditMode::TailOnly => Self::TailOnly,
        }
    }
}

/// The uncertainty score that ranks candidate prefixes (the core's [`UncertaintyScore`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum ScoreKind {
    /// Mean entropy of the call tokens that would be resampled.
    #[default]
    CallEntropy,
    /// Entropy at the position that opens the call.
    DecisionEntropy,
    /// Mean entropy of the last `--prefix-window` thinking tokens before the call.
    PrefixEntropy,
    /// Mean surprisal of the sampled call tokens.
    Surprisal,
}

/// How prefixes are chosen among candidates (the core's [`SelectionStrategy`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum StrategyKind {
    /// The most uncertain, deterministically.
    #[default]
    TopK,
    /// Seeded sampling proportional to `u^(1/--temperature)`.
    Proportional,
    /// Seeded uniform sampling (the ablation baseline).
    Uniform,
}

/// Where the frozen prefix ends (the core's [`CutPoint`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum CutKind {
    /// Freeze the call's opening token: the continuation must act.
    #[default]
    AfterCallOpen,
    /// Freeze up to the call: the decision to act is resampled too.
    BeforeCall,
}

/// Which calls of a rollout are candidates (the core's [`CallChoice`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum CallsKind {
    /// The first call.
    First,
    /// The last call.
    Last,
    /// Every call, the most uncertain kept.
    #[default]
    All,
}

fn count(s: &str) -> Result<usize, String> {
    let v: usize = s
        .parse()
        .map_err(|_| format!("`{s}` is not a non-negative integer"))?;
    if v == 0 {
        return Err("must be at least 1".into());
    }
    Ok(v)
}

fn count_u32(s: &str) -> Result<u32, String> {
    let v = count(s)?;
    u32::try_from(v).map_err(|_| format!("`{s}` is too large"))
}

fn at_least_two(s: &str) -> Result<usize, String> {
    match count(s)? {
        1 => Err("must be at least 2 (GRPO needs two rollouts to compare)".into()),
        v => Ok(v),
    }
}

fn at_least_four(s: &str) -> Result<usize, String> {
    match count(s)? {
        v if v < 4 => Err("must be at least 4 (Pass@4 needs n >= 4 samples)".into()),
        v => Ok(v),
    }
}

fn float(s: &str) -> Result<f64, String> {
    let v: f64 = s.parse().map_err(|_| format!("`{s}` is not a number"))?;
    if !v.is_finite() {
        return Err(format!("`{s}` is not finite"));
    }
    Ok(v)
}

fn fraction(s: &str) -> Result<f32, String> {
    let v = float(s)?;
    if !(0.0..=1.0).contains(&v) {
        return Err(format!("must be in [0, 1], got {v}"));
    }
    Ok(v as f32)
}

fn positive(s: &str) -> Result<f32, String> {
    let v = float(s)?;
    if v <= 0.0 {
        return Err(format!("must be positive, got {v}"));
    }
    Ok(v as f32)
}

fn non_negative(s: &str) -> Result<f64, String> {
    let v = float(s)?;
    if v < 0.0 {
        return Err(format!("must be non-negative, got {v}"));
    }
    Ok(v)
}

fn clip_margin(s: &str) -> Result<f64, String> {
    let v = float(s)?;
    if !(0.0..1.0).contains(&v) {
        return Err(format!("must be in [0, 1), got {v}"));
    }
    Ok(v)
}

fn global_size(s: &str) -> Result<usize, String> {
    let (grid, side) = (super::env::GRID, super::env::IMAGE_SIZE);
    match count(s)? {
        v if v > side || !v.is_multiple_of(grid) => Err(format!(
            "must be a multiple of {grid} (the grid) between {grid} and {side} (the image side), got {v}"
        )),
        v => Ok(v),
    }
}

fn decoys(s: &str) -> Result<usize, String> {
    let v: usize = s
        .parse()
        .map_err(|_| format!("`{s}` is not a non-negative integer"))?;
    if v > 8 {
        return Err(format!("must be at most 8 (the distractor cells), got {v}"));
    }
    Ok(v)
}

/// Arguments of `axpo demo`: train GRPO, AXPO and compute-matched GRPO from the same SFT
/// start on the built-in zoom-in task, and compare them.
#[derive(Debug, Clone, clap::Args)]
pub struct DemoArgs {
    /// First seed (everything, from the images to the sampling, derives from it).
    #[arg(long, default_value_t = 0, help_heading = "Runs")]
    pub seed: u64,
    /// Number of consecutive seeds to run, starting at --seed.
    #[arg(long, default_value = "1", value_parser = count, help_heading = "Runs")]
    pub seeds: usize,
    /// Explicit comma-separated seeds (instead of --seed/--seeds).
    #[arg(long, value_delimiter = ',', conflicts_with_all = ["seed", "seeds"], help_heading = "Runs")]
    pub seed_list: Vec<u64>,
    /// Arms to run, comma separated; grpo-matched needs axpo (it matches AXPO's resample count).
    #[arg(long, value_enum, value_delimiter = ',',
          default_values_t = [ArmKind::Grpo, ArmKind::Axpo, ArmKind::GrpoMatched],
          help_heading = "Runs")]
    pub arms: Vec<ArmKind>,
    /// Output directory (JSON-lines logs, chart, results table).
    #[arg(long, default_value = "out/demo", help_heading = "Runs")]
    pub out: PathBuf,
    /// Backend for the output head's log-probs, entropies and gradients.
    #[arg(long, value_enum, default_value_t = BackendKind::Cpu, help_heading = "Runs")]
    pub backend: BackendKind,
    /// Worker threads: seeds run in parallel, and with a spare thread GRPO and AXPO of a seed
    /// run side by side. Results do not depend on it.
    #[arg(long, default_value = "2", value_parser = count, help_heading = "Runs")]
    pub jobs: usize,

    /// RL steps per arm.
    #[arg(long, default_value = "150", value_parser = count, help_heading = "RL")]
    pub steps: usize,
    /// Questions (groups) per step.
    #[arg(long, default_value = "16", value_parser = count, help_heading = "RL")]
    pub groups: usize,
    /// Rollouts per question, G.
    #[arg(long, default_value = "8", value_parser = at_least_two, help_heading = "RL")]
    pub group_size: usize,
    /// Adam learning rate of the RL steps.
    #[arg(long, default_value = "0.002", value_parser = positive, allow_negative_numbers = true, help_heading = "RL")]
    pub lr: f32,
    /// PPO clip margin (symmetric).
    #[arg(long, default_value = "0.2", value_parser = clip_margin, allow_negative_numbers = true, help_heading = "RL")]
    pub clip: f64,
    /// Entropy bonus coefficient.
    #[arg(long, default_value = "0", value_parser = non_negative, allow_negative_numbers = true, help_heading = "RL")]
    pub entropy_coef: f64,
    /// Optimizer steps per batch (the first is on-policy; later ones are clipped).
    #[arg(long, default_value = "2", value_parser = count, help_heading = "RL")]
    pub ppo_epochs: usize,

    /// Resamples per chosen prefix, K.
    #[arg(short = 'k', long = "k", default_value = "4", value_parser = count, help_heading = "AXPO")]
    pub k: usize,
    /// Resample budget: at most this fraction of the step's root rollouts, in [0, 1].
    #[arg(long, default_value = "0.25", value_parser = fraction, allow_negative_numbers = true, help_heading = "AXPO")]
    pub budget: f32,
    /// Prefixes resampled per all-wrong tool subgroup.
    #[arg(long, default_value = "1", value_parser = count, help_heading = "AXPO")]
    pub prefixes_per_subgroup: usize,
    /// Planning rounds (a prefix whose resamples all fail is retried while budget lasts).
    #[arg(long, default_value = "1", value_parser = count_u32, help_heading = "AXPO")]
    pub rounds: u32,
    /// Credit assignment for resampled branches.
    #[arg(long, value_enum, default_value_t = CreditMode::Tree, help_heading = "AXPO")]
    pub credit: CreditMode,
    /// Uncertainty score ranking the candidate prefixes.
    #[arg(long, value_enum, default_value_t = ScoreKind::CallEntropy, help_heading = "AXPO")]
    pub score: ScoreKind,
    /// Thinking tokens averaged by --score prefix-entropy.
    #[arg(long, default_value = "2", value_parser = count, help_heading = "AXPO")]
    pub prefix_window: usize,
    /// How prefixes are chosen among candidates.
    #[arg(long, value_enum, default_value_t = StrategyKind::TopK, help_heading = "AXPO")]
    pub strategy: StrategyKind,
    /// Temperature of --strategy proportional.
    #[arg(long, default_value = "1", value_parser = positive, allow_negative_numbers = true, help_heading = "AXPO")]
    pub temperature: f32,
    /// Where the frozen prefix ends.
    #[arg(long, value_enum, default_value_t = CutKind::AfterCallOpen, help_heading = "AXPO")]
    pub cut: CutKind,
    /// Which tool calls of a rollout are candidates.
    #[arg(long, value_enum, default_value_t = CallsKind::All, help_heading = "AXPO")]
    pub calls: CallsKind,

    /// SFT demonstrations.
    #[arg(long, default_value = "10000", value_parser = count, help_heading = "SFT warm start")]
    pub sft_demos: usize,
    /// SFT optimizer steps.
    #[arg(long, default_value = "2000", value_parser = count, help_heading = "SFT warm start")]
    pub sft_steps: usize,
    /// Demonstrations per SFT step.
    #[arg(long, default_value = "64", value_parser = count, help_heading = "SFT warm start")]
    pub sft_batch: usize,
    /// Adam learning rate of SFT.
    #[arg(long, default_value = "0.01", value_parser = positive, allow_negative_numbers = true, help_heading = "SFT warm start")]
    pub sft_lr: f32,
    /// Share of demonstrations that use the tool, in [0, 1].
    #[arg(long, default_value = "0.3", value_parser = fraction, allow_negative_numbers = true, help_heading = "SFT warm start")]
    pub sft_tool_share: f32,
    /// Share of tool-using demonstrations that zoom on the target's cell, in [0, 1].
    #[arg(long, default_value = "0.2", value_parser = fraction, allow_negative_numbers = true, help_heading = "SFT warm start")]
    pub sft_region_accuracy: f32,
    /// Share of demonstrations whose thinking names the target's cell, in [0, 1].
    #[arg(long, default_value = "0.6", value_parser = fraction, allow_negative_numbers = true, help_heading = "SFT warm start")]
    pub sft_think_accuracy: f32,

    /// Side of the global view in pixels: a multiple of 3 up to 24, the image's side (smaller is blurrier).
    #[arg(long, default_value = "15", value_parser = global_size, help_heading = "Task")]
    pub global_size: usize,
    /// Amplitude of the uniform pixel noise, in [0, 1].
    #[arg(long, default_value = "0.2", value_parser = fraction, allow_negative_numbers = true, help_heading = "Task")]
    pub noise: f32,
    /// Distractor cells with a dashed decoy frame (0..=8).
    #[arg(long, default_value = "0", value_parser = decoys, help_heading = "Task")]
    pub decoys: usize,

    /// Hidden width of the policy's MLP.
    #[arg(long, default_value = "128", value_parser = count, help_heading = "Policy")]
    pub hidden: usize,

    /// Evaluate every this many steps (and at the last step).
    #[arg(long, default_value = "10", value_parser = count, help_heading = "Evaluation")]
    pub eval_every: usize,
    /// Held-out evaluation questions.
    #[arg(long, default_value = "200", value_parser = count, help_heading = "Evaluation")]
    pub eval_questions: usize,
    /// Samples per evaluation question, n (Pass@1 and Pass@4 from n samples; n >= 4).
    #[arg(long, default_value = "4", value_parser = at_least_four, help_heading = "Evaluation")]
    pub eval_samples: usize,
}

/// RL settings shared by the arms.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RlConfig {
    /// Steps per arm.
    pub steps: usize,
    /// Questions per step.
    pub groups: usize,
    /// Rollouts per question.
    pub group_size: usize,
    /// Adam learning rate.
    pub lr: f32,
    /// Gradient clipping norm.
    pub max_grad_norm: f32,
    /// PPO clip margin.
    pub clip: f64,
    /// Entropy bonus coefficient.
    pub entropy_coef: f64,
    /// Optimizer steps per batch.
    pub ppo_epochs: usize,
}

/// Evaluation settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EvalConfig {
    /// Evaluate every this many steps.
    pub every: usize,
    /// Held-out questions.
    pub questions: usize,
    /// Samples per question.
    pub samples: usize,
}

/// A validated demo configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct DemoConfig {
    /// Seeds, in order.
    pub seeds: Vec<u64>,
    /// Arms, in canonical order, without repeats.
    pub arms: Vec<ArmKind>,
    /// Output directory.
    pub out: PathBuf,
    /// Backend.
    pub backend: BackendKind,
    /// Worker threads.
    pub jobs: usize,
    /// RL settings.
    pub rl: RlConfig,
    /// The planner's settings (AXPO).
    pub plan: PlanConfig,
    /// Credit assignment.
    pub advantage: AdvantageConfig,
    /// SFT warm start.
    pub sft: SftConfig,
    /// The task.
    pub task: TaskConfig,
    /// Hidden width.
    pub hidden: usize,
    /// Evaluation.
    pub eval: EvalConfig,
}

impl DemoConfig {
    /// Validates the flags.
    ///
    /// # Errors
    /// [`DemoError::Config`] naming the offending flag.
    pub fn from_args(a: &DemoArgs) -> DemoResult<Self> {
        let seeds: Vec<u64> = if a.seed_list.is_empty() {
            (0..a.seeds as u64)
                .map(|i| a.seed.checked_add(i))
                .collect::<Option<_>>()
                .ok_or_else(|| DemoError::Config("--seed + --seeds overflows u64".into()))?
        } else {
            a.seed_list.clone()
        };
        let mut unique = seeds.clone();
        unique.sort_unstable();
        unique.dedup();
        if unique.len() != seeds.len() {
            return Err(DemoError::Config("--seed-list repeats a seed".into()));
        }
        let mut arms: Vec<ArmKind> = ArmKind::ALL
            .into_iter()
            .filter(|k| a.arms.contains(k))
            .collect();
        arms.dedup();
        if arms.contains(&ArmKind::GrpoMatched) && !arms.contains(&ArmKind::Axpo) {
            return Err(DemoError::Config(
                "--arms grpo-matched needs the axpo arm too: it gets AXPO's resample count \
                 step by step; add axpo to --arms"
                    .into(),
            ));
        }
        let score = match a.score {
            ScoreKind::CallEntropy => UncertaintyScore::CallEntropy,
            ScoreKind::DecisionEntropy => UncertaintyScore::DecisionEntropy,
            ScoreKind::PrefixEntropy => UncertaintyScore::PrefixEntropy {
                window: a.prefix_window,
            },
            ScoreKind::Surprisal => UncertaintyScore::Surprisal,
        };
        let strategy = match a.strategy {
            StrategyKind::TopK => SelectionStrategy::TopK,
            StrategyKind::Proportional => SelectionStrategy::Proportional {
                temperature: a.temperature,
            },
            StrategyKind::Uniform => SelectionStrategy::Uniform,
        };
        let plan = PlanConfig::default()
            .with_cut(match a.cut {
                CutKind::AfterCallOpen => CutPoint::AfterCallOpen,
                CutKind::BeforeCall => CutPoint::BeforeCall,
            })
            .with_calls(match a.calls {
                CallsKind::First => CallChoice::First,
                CallsKind::Last => CallChoice::Last,
                CallsKind::All => CallChoice::All,
            })
            .with_score(score)
            .with_strategy(strategy)
            .with_resamples_per_prefix(a.k)
            .with_prefixes_per_subgroup(a.prefixes_per_subgroup)
            .with_max_resample_fraction(a.budget)
            .with_max_rounds(a.rounds);
        plan.validate()
            .map_err(|e| DemoError::Config(format!("AXPO planner: {e}")))?;
        let advantage = AdvantageConfig::default().with_credit(a.credit.into());
        let task = TaskConfig {
            global_size: a.global_size,
            noise: a.noise,
            decoys: a.decoys,
            ..TaskConfig::default()
        };
        task.validate()?;
        let sft = SftConfig {
            demos: a.sft_demos,
            steps: a.sft_steps,
            batch: a.sft_batch,
            lr: a.sft_lr,
            tool_share: a.sft_tool_share,
            region_accuracy: a.sft_region_accuracy,
            think_accuracy: a.sft_think_accuracy,
        };
        let config = Self {
            seeds,
            arms,
            out: a.out.clone(),
            backend: a.backend,
            jobs: a.jobs,
            rl: RlConfig {
                steps: a.steps,
                groups: a.groups,
                group_size: a.group_size,
                lr: a.lr,
                max_grad_norm: 1.0,
                clip: a.clip,
                entropy_coef: a.entropy_coef,
                ppo_epochs: a.ppo_epochs,
            },
            plan,
            advantage,
            sft,
            task,
            hidden: a.hidden,
            eval: EvalConfig {
                every: a.eval_every,
                questions: a.eval_questions,
                samples: a.eval_samples,
            },
        };
        config.validate()?;
        Ok(config)
    }

    /// Checks the invariants the flags' parsers guarantee, for configurations built in code.
    ///
    /// # Errors
    /// [`DemoError::Config`] naming the first bad field.
    pub fn validate(&self) -> DemoResult<()> {
        let bad = |m: &str| Err(DemoError::Config(m.into()));
        let rl = &self.rl;
        if self.seeds.is_empty() || self.arms.is_empty() || self.jobs == 0 {
            return bad("seeds, arms and jobs must not be empty or zero");
        }
        if rl.steps == 0 || rl.groups == 0 || rl.group_size < 2 || rl.ppo_epochs == 0 {
            return bad(
                "steps, groups and PPO epochs must be at least 1, the group size at least 2",
            );
        }
        if !(rl.lr > 0.0 && rl.lr.is_finite() && rl.max_grad_norm > 0.0) {
            return bad("the learning rate and the gradient-clipping norm must be positive");
        }
        if !((0.0..1.0).contains(&rl.clip) && rl.entropy_coef.is_finite()) {
            return bad("the clip margin must be in [0, 1) and the entropy coefficient finite");
        }
        if self.eval.every == 0 || self.eval.questions == 0 || self.eval.samples < 4 {
            return bad("evaluation needs every >= 1, questions >= 1 and samples >= 4");
        }
        let s = &self.sft;
        if s.demos == 0 || s.steps == 0 || s.batch == 0 || !(s.lr > 0.0 && s.lr.is_finite()) {
            return bad("SFT needs demos, steps and batch >= 1 and a positive learning rate");
        }
        if ![s.tool_share, s.region_accuracy, s.think_accuracy]
            .iter()
            .all(|p| (0.0..=1.0).contains(p))
        {
            return bad("SFT shares must be in [0, 1]");
        }
        if self.hidden == 0 {
            return bad("the hidden width must be at least 1");
        }
        if self.arms.contains(&ArmKind::GrpoMatched) && !self.arms.contains(&ArmKind::Axpo) {
            return bad("the compute-matched arm needs the axpo arm");
        }
        self.task.validate()?;
        self.plan
            .validate()
            .map_err(|e| DemoError::Config(format!("AXPO planner: {e}")))?;
        self.advantage
            .validate()
            .map_err(|e| DemoError::Config(format!("credit: {e}")))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        args: DemoArgs,
    }

    /// Parses `demo` flags.
    pub(crate) fn parse(flags: &[&str]) -> Result<DemoArgs, clap::Error> {
        Cli::try_parse_from(std::iter::once("demo").chain(flags.iter().copied())).map(|c| c.args)
    }

    fn rejected(flags: &[&str], needle: &str) {
        let e = parse(flags).unwrap_err().to_string();
        assert!(e.contains(needle), "{flags:?}: {e}");
    }

    #[test]
    fn defaults_validate() {
        let c = DemoConfig::from_args(&parse(&[]).unwrap()).unwrap();
        assert_eq!(c.seeds, vec![0]);
        assert_eq!(c.arms, ArmKind::ALL.to_vec());
        assert_eq!(c.plan.resamples_per_prefix, 4);
        assert_eq!(c.plan.max_resample_fraction, 0.25);
        assert_eq!(c.advantage.credit, Credit::Tree);
        assert_eq!(c.plan.score, UncertaintyScore::CallEntropy);
        assert_eq!(c.backend, BackendKind::Cpu);
    }

    #[test]
    fn bad_flags_get_clear_errors() {
        rejected(&["--k", "0"], "must be at least 1");
        rejected(&["-k", "x"], "not a non-negative integer");
        rejected(&["--budget", "1.5"], "must be in [0, 1]");
        rejected(&["--budget", "-0.1"], "must be in [0, 1]");
        rejected(&["--budget", "nan"], "not finite");
        rejected(
            &["--credit", "fancy"],
            "possible values: tree, flat, tail-only",
        );
        rejected(&["--score", "vibes"], "call-entropy");
        rejected(&["--backend", "tpu"], "cpu");
        rejected(&["--group-size", "1"], "at least 2");
        rejected(&["--eval-samples", "3"], "Pass@4");
        rejected(&["--global-size", "10"], "multiple of 3");
        rejected(&["--lr", "0"], "must be positive");
        rejected(&["--clip", "1"], "[0, 1)");
        rejected(&["--decoys", "9"], "at most 8");
        rejected(&["--arms", "grpo,ppo"], "possible values");
        rejected(
            &["--seeds", "3", "--seed-list", "1,2"],
            "cannot be used with",
        );
    }

    #[test]
    fn flag_combinations_are_checked() {
        let e = DemoConfig::from_args(&parse(&["--arms", "grpo,grpo-matched"]).unwrap())
            .unwrap_err()
            .to_string();
        assert!(e.contains("needs the axpo arm"), "{e}");
        let e = DemoConfig::from_args(&parse(&["--seed-list", "1,2,1"]).unwrap())
            .unwrap_err()
            .to_string();
        assert!(e.contains("repeats"), "{e}");
        let c = DemoConfig::from_args(
            &parse(&[
                "--seed-list",
                "4,2",
                "--arms",
                "grpo-matched,axpo",
                "--score",
                "prefix-entropy",
                "--prefix-window",
                "3",
                "--strategy",
                "proportional",
                "--temperature",
                "0.5",
                "--credit",
                "tail-only",
                "--cut",
                "before-call",
            ])
            .unwrap(),
        )
        .unwrap();
        assert_eq!(c.seeds, vec![4, 2]);
        assert_eq!(c.arms, vec![ArmKind::Axpo, ArmKind::GrpoMatched]);
        assert_eq!(c.plan.score, UncertaintyScore::PrefixEntropy { window: 3 });
        assert_eq!(
            c.plan.strategy,
            SelectionStrategy::Proportional { temperature: 0.5 }
        );
        assert_eq!(c.advantage.credit, Credit::TailOnly);
        assert_eq!(c.plan.cut, CutPoint::BeforeCall);
        let c = DemoConfig::from_args(&parse(&["--seed", "7", "--seeds", "3"]).unwrap()).unwrap();
        assert_eq!(c.seeds, vec![7, 8, 9]);
        // Configurations built in code are checked too.
        let mut bad = c.clone();
        bad.rl.groups = 0;
        assert!(bad.validate().is_err());
        let mut bad = c.clone();
        bad.eval.every = 0;
        assert!(bad.validate().is_err());
        let mut bad = c;
        bad.arms = vec![ArmKind::GrpoMatched];
        assert!(bad.validate().is_err());
    }
}

//! The `axpo` command-line tool.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[cfg(feature = "qwen3vl")]
mod score;

/// AXPO: Agent eXplorative Policy Optimization.
#[derive(Debug, Parser)]
#[command(name = "axpo", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Train GRPO, AXPO and compute-matched GRPO on the built-in zoom-in task and compare them.
    Demo(axpo::demo::DemoArgs),
    /// Score a token sequence with a Qwen3-VL checkpoint: logits and next-token log-probs.
    #[cfg(feature = "qwen3vl")]
    Score(score::ScoreArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match &cli.command {
        Command::Demo(args) => axpo::demo::run(args),
        #[cfg(feature = "qwen3vl")]
        Command::Score(args) => score::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}

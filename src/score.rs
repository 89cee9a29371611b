//! `axpo score` (placeholder until the model issue lands).

/// Arguments of `axpo score`.
#[derive(Debug, Clone, clap::Args)]
pub struct ScoreArgs {}

/// Runs `axpo score`.
pub fn run(_args: &ScoreArgs) -> Result<(), Box<dyn std::error::Error>> {
    Err("axpo score is not implemented yet".into())
}

//! `axpo score`: logits and next-token log-probs of a prompt with a Qwen3-VL checkpoint
//! (a thin wrapper over `axpo_model_qwen3vl::score`).

use std::path::PathBuf;

use axpo::demo::BackendKind;
use axpo::qwen3vl::score;
#[cfg(any(feature = "wgpu", feature = "cuda"))]
use axpo::qwen3vl::weights::{LoadOptions, WeightDType};

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

/// Arguments of `axpo score`.
#[derive(Debug, Clone, clap::Args)]
pub struct ScoreArgs {
    /// Hugging Face model folder (config.json, model*.safetensors).
    #[arg(long)]
    pub model: PathBuf,
    /// Inputs: `input_ids`, optionally `pixel_values` and `image_grid_thw` (HF names and layout).
    #[arg(long)]
    pub inputs: PathBuf,
    /// Output file: `logits` (f32 [tokens, vocab]) and `next_token_logprobs` (f32 [tokens - 1]).
    #[arg(long)]
    pub out: PathBuf,
    /// Raw image (PNG/JPEG) to preprocess, in prompt order; repeat for several images.
    #[arg(long = "image")]
    pub images: Vec<PathBuf>,
    /// Minimum pixels after resizing (overrides preprocessor_config.json).
    #[arg(long)]
    pub min_pixels: Option<usize>,
    /// Maximum pixels after resizing (overrides preprocessor_config.json).
    #[arg(long)]
    pub max_pixels: Option<usize>,
    /// Backend for the forward pass (`cpu`: the multithreaded CPU path; `wgpu` and `cuda` need
    /// the matching cargo feature and keep the weights in bf16).
    #[arg(long, value_enum, default_value_t = BackendKind::Cpu)]
    pub backend: BackendKind,
}

/// Runs `axpo score`.
pub fn run(args: &ScoreArgs) -> Result<()> {
    let opts = score::ScoreOptions::new(args.model.clone(), args.inputs.clone(), args.out.clone())
        .with_images(args.images.clone())
        .with_pixels(args.min_pixels, args.max_pixels);
    let summary = match args.backend {
        BackendKind::Cpu => score::run(&opts)?,
        BackendKind::Wgpu => run_wgpu(&opts)?,
        BackendKind::Cuda => run_cuda(&opts)?,
    };
    println!(
        "scored {} tokens ({} images, vocab {}): sum of next-token log-probs {:.4}; wrote {}",
        summary.tokens,
        summary.images,
        summary.vocab,
        summary.total_logprob,
        args.out.display()
    );
    Ok(())
}

#[cfg(feature = "wgpu")]
fn run_wgpu(opts: &score::ScoreOptions) -> Result<score::ScoreSummary> {
    let load = LoadOptions::default().with_weight_dtype(WeightDType::AsStored);
    Ok(score::run_on(axpo::wgpu::Wgpu::new()?, &load, opts)?)
}

#[cfg(not(feature = "wgpu"))]
fn run_wgpu(_: &score::ScoreOptions) -> Result<score::ScoreSummary> {
    Err(
        "--backend wgpu: this build of axpo has no wgpu backend; rebuild with `--features wgpu`"
            .into(),
    )
}

#[cfg(feature = "cuda")]
fn run_cuda(opts: &score::ScoreOptions) -> Result<score::ScoreSummary> {
    let load = LoadOptions::default().with_weight_dtype(WeightDType::AsStored);
    Ok(score::run_on(axpo::cuda::Cuda::new(0)?, &load, opts)?)
}

#[cfg(not(feature = "cuda"))]
fn run_cuda(_: &score::ScoreOptions) -> Result<score::ScoreSummary> {
    Err(
        "--backend cuda: this build of axpo has no cuda backend; rebuild with `--features cuda`"
            .into(),
    )
}

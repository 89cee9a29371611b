//! `axpo score`: logits and next-token log-probs of a prompt, read from and written to
//! safetensors files with Hugging Face names.
//!
//! Inputs file: `input_ids` (integer, `[1, S]` or `[S]`), optionally `pixel_values`
//! (`[patches, C·T·P·P]`, any float type) and `image_grid_thw` (integer `[images, 3]`); other
//! tensors are ignored. Raw images can be given instead of `pixel_values`; they go through
//! [`crate::preprocess`]. Output file: `logits` (f32 `[S, vocab]`) and `next_token_logprobs`
//! (f32 `[S - 1]`, computed through the fused `linear_token_stats`).

use std::path::{Path, PathBuf};

use axpo_core::backend::{Backend, VocabChunk};
use safetensors::Dtype;
use safetensors::tensor::TensorView;

use crate::error::{ModelError, Result};
use crate::model::{ImageInput, ModelInput, Qwen3VL};
use crate::mrope::Grid;
use crate::preprocess::{ImageProcessorConfig, RgbImage, preprocess};
use crate::weights::{LoadOptions, SafetensorsStore};
use axpo_core::backend::FastCpu;

/// What to score.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct ScoreOptions {
    /// The model folder.
    pub model_dir: PathBuf,
    /// The inputs safetensors file.
    pub inputs: PathBuf,
    /// Where to write the outputs.
    pub out: PathBuf,
    /// Raw images (PNG/JPEG), in prompt order.
    pub images: Vec<PathBuf>,
    /// Overrides the processor's minimum pixel budget.
    pub min_pixels: Option<usize>,
    /// Overrides the processor's maximum pixel budget.
    pub max_pixels: Option<usize>,
}

impl ScoreOptions {
    /// Options for a model folder, an inputs file and an output file.
    #[must_use]
    pub fn new(model_dir: PathBuf, inputs: PathBuf, out: PathBuf) -> Self {
        Self {
            model_dir,
            inputs,
            out,
            ..Self::default()
        }
    }

    /// Adds raw images.
    #[must_use]
    pub fn with_images(mut self, images: Vec<PathBuf>) -> Self {
        self.images = images;
        self
    }

    /// Overrides the pixel budget of the preprocessing.
    #[must_use]
    pub fn with_pixels(mut self, min_pixels: Option<usize>, max_pixels: Option<usize>) -> Self {
        self.min_pixels = min_pixels;
        self.max_pixels = max_pixels;
        self
    }
}

/// What was scored.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct ScoreSummary {
    /// Tokens scored.
    pub tokens: usize,
    /// Vocabulary size.
    pub vocab: usize,
    /// Images in the prompt.
    pub images: usize,
    /// Sum of the next-token log-probs.
    pub total_logprob: f64,
}

fn to_u32_ids(shape: &[usize], ids: &[i64]) -> Result<Vec<u32>> {
    match shape {
        [_] | [1, _] => {}
        _ => {
            return Err(ModelError::TensorShape {
                name: "input_ids".into(),
                expected: vec![1, ids.len()],
                got: shape.to_vec(),
            });
        }
    }
    ids.iter()
        .map(|&v| {
            u32::try_from(v)
                .map_err(|_| ModelError::input(format!("negative or huge token id {v}")))
        })
        .collect()
}

/// Reads the prompt of an inputs file (see the module docs), preprocessing `images` if given.
///
/// # Errors
/// [`ModelError::MissingTensor`] without `input_ids`, [`ModelError::TensorShape`] for malformed
/// tensors, [`ModelError::InvalidInput`] if both `pixel_values` and raw images are given, image
/// errors, [`ModelError::ImageTokenMismatch`] when raw images do not match the placeholders.
pub fn read_inputs(
    path: &Path,
    images: &[RgbImage],
    processor: &ImageProcessorConfig,
    image_token: u32,
) -> Result<ModelInput> {
    let store = SafetensorsStore::open_files(&[path.to_path_buf()])?;
    let (shape, ids) = store.int_tensor("input_ids")?;
    let mut input_ids = to_u32_ids(&shape, &ids)?;
    let has_pixels = store.contains("pixel_values");
    if has_pixels && !images.is_empty() {
        return Err(ModelError::input(
            "give either pixel_values in the inputs file or raw images, not both",
        ));
    }
    let images = if has_pixels {
        let (pshape, pixel_values) = store.f32_tensor("pixel_values")?;
        if pshape.len() != 2 {
            return Err(ModelError::TensorShape {
                name: "pixel_values".into(),
                expected: vec![pshape.first().copied().unwrap_or(0), 0],
                got: pshape,
            });
        }
        let (gshape, g) = store.int_tensor("image_grid_thw")?;
        if gshape.len() != 2 || gshape.get(1) != Some(&3) {
            return Err(ModelError::TensorShape {
                name: "image_grid_thw".into(),
                expected: vec![gshape.first().copied().unwrap_or(0), 3],
                got: gshape,
            });
        }
        let grids = g
            .chunks_exact(3)
            .map(|c| {
                let u = |v: i64| usize::try_from(v).map_err(|_| ModelError::input("negative grid"));
                Ok(Grid {
                    t: u(c[0])?,
                    h: u(c[1])?,
                    w: u(c[2])?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Some(ImageInput {
            pixel_values,
            grids,
        })
    } else if !images.is_empty() {
        let pre = preprocess(images, processor)?;
        input_ids = expand_placeholders(&input_ids, &pre.grids, image_token, processor.merge_size)?;
        Some(pre)
    } else {
        None
    };
    Ok(ModelInput { input_ids, images })
}

/// Expands one `<|image_pad|>` placeholder per image into the grid's token count (what the
/// processor does to the chat template's output). Prompts that already carry the full counts are
/// returned unchanged.
///
/// # Errors
/// [`ModelError::ImageTokenMismatch`] if the placeholders match neither form.
pub fn expand_placeholders(
    ids: &[u32],
    grids: &[Grid],
    image_token: u32,
    merge: usize,
) -> Result<Vec<u32>> {
    let found = ids.iter().filter(|&&t| t == image_token).count();
    let full: usize = grids.iter().map(|g| g.tokens(merge)).sum();
    if found == full {
        return Ok(ids.to_vec());
    }
    if found != grids.len() {
        return Err(ModelError::ImageTokenMismatch {
            expected: full,
            got: found,
        });
    }
    let mut out = Vec::with_capacity(ids.len() + full);
    let mut next = grids.iter();
    for &t in ids {
        if t == image_token {
            let n = next.next().map_or(0, |g| g.tokens(merge));
            out.extend(std::iter::repeat_n(image_token, n));
        } else {
            out.push(t);
        }
    }
    Ok(out)
}

/// Scores a prompt with a loaded model: logits `[S, vocab]` and next-token log-probs `[S - 1]`.
///
/// # Errors
/// As [`Qwen3VL::forward`].
pub fn score<B: Backend>(model: &Qwen3VL<B>, input: &ModelInput) -> Result<(Vec<f32>, Vec<f32>)> {
    let hidden = model.forward(input)?;
    let b = model.backend();
    let logits = b.download_f32(&model.logits(&hidden)?)?;
    let targets = input.input_ids.get(1..).unwrap_or(&[]);
    let logp = if targets.is_empty() {
        Vec::new()
    } else {
        let stats = model.token_stats(&hidden, 0, targets, VocabChunk::default())?;
        b.download_f32(&stats.logp)?
    };
    Ok((logits, logp))
}

/// Writes f32 tensors to a safetensors file.
///
/// # Errors
/// [`ModelError::Io`] / [`ModelError::Safetensors`] if the file cannot be written.
pub fn write_f32_tensors(path: &Path, tensors: &[(&str, Vec<usize>, &[f32])]) -> Result<()> {
    let bytes: Vec<Vec<u8>> = tensors
        .iter()
        .map(|(_, _, d)| d.iter().flat_map(|v| v.to_le_bytes()).collect())
        .collect();
    let views = tensors
        .iter()
        .zip(&bytes)
        .map(|((name, shape, _), b)| {
            TensorView::new(Dtype::F32, shape.clone(), b)
                .map(|v| ((*name).to_string(), v))
                .map_err(|e| ModelError::Safetensors {
                    path: path.to_path_buf(),
                    reason: e.to_string(),
                })
        })
        .collect::<Result<Vec<_>>>()?;
    safetensors::serialize_to_file(views, None, path).map_err(|e| ModelError::Safetensors {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })
}

/// Runs `axpo score` on the fast CPU backend.
///
/// # Errors
/// Any load, input, forward or write error.
pub fn run(opts: &ScoreOptions) -> Result<ScoreSummary> {
    run_on(FastCpu::new(), &LoadOptions::default(), opts)
}

/// Runs `axpo score` on any backend, loading the weights with `load` (GPU backends keep bf16
/// weights with [`WeightDType::AsStored`](crate::weights::WeightDType::AsStored)).
///
/// # Errors
/// Any load, input, forward or write error.
pub fn run_on<B: Backend>(
    backend: B,
    load: &LoadOptions,
    opts: &ScoreOptions,
) -> Result<ScoreSummary> {
    let model = Qwen3VL::load(backend, &opts.model_dir, load)?;
    let pre_path = opts.model_dir.join("preprocessor_config.json");
    let mut processor = if pre_path.exists() {
        ImageProcessorConfig::from_file(&pre_path)?
    } else {
        ImageProcessorConfig::default()
    };
    processor.min_pixels = opts.min_pixels.unwrap_or(processor.min_pixels);
    processor.max_pixels = opts.max_pixels.unwrap_or(processor.max_pixels);
    let images = opts
        .images
        .iter()
        .map(|p| RgbImage::open(p))
        .collect::<Result<Vec<_>>>()?;
    let input = read_inputs(
        &opts.inputs,
        &images,
        &processor,
        model.config().image_token_id,
    )?;
    let (logits, logp) = score(&model, &input)?;
    let (s, v) = (input.input_ids.len(), model.config().text.vocab_size);
    write_f32_tensors(
        &opts.out,
        &[
            ("logits", vec![s, v], &logits),
            ("next_token_logprobs", vec![s.saturating_sub(1)], &logp),
        ],
    )?;
    Ok(ScoreSummary {
        tokens: s,
        vocab: v,
        images: input.images.as_ref().map_or(0, |i| i.grids.len()),
        total_logprob: logp.iter().map(|&x| f64::from(x)).sum(),
    })
}

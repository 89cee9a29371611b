//! `config.json` of a Qwen3-VL checkpoint, in both forms: the hub files (`rope_theta` +
//! `rope_scaling`, vision `model_type: "qwen3_vl"`) and what transformers 5 writes
//! (`rope_parameters`, vision `model_type: "qwen3_vl_vision"`). Parsed leniently (unknown keys are
//! ignored), then validated; the MoE variants are rejected.

use std::path::Path;

use serde::Deserialize;
use serde_json::Value;

use crate::error::{ModelError, Result};

/// The text decoder's configuration.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct TextConfig {
    /// Vocabulary size (rows of the embedding and the head).
    pub vocab_size: usize,
    /// Hidden width `D`.
    pub hidden_size: usize,
    /// SwiGLU inner width.
    pub intermediate_size: usize,
    /// Decoder layers.
    pub num_hidden_layers: usize,
    /// Query heads.
    pub num_attention_heads: usize,
    /// Key/value heads.
    pub num_key_value_heads: usize,
    /// Width of one head (explicit in Qwen3; not always `D / heads`).
    pub head_dim: usize,
    /// RMSNorm epsilon.
    pub rms_norm_eps: f32,
    /// Rotary base.
    pub rope_theta: f32,
    /// Interleaved MRoPE section sizes `[t, h, w]` (sum `head_dim / 2`).
    pub mrope_section: [usize; 3],
}

/// The vision tower's configuration.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct VisionConfig {
    /// Blocks.
    pub depth: usize,
    /// Hidden width `Dv`.
    pub hidden_size: usize,
    /// MLP inner width.
    pub intermediate_size: usize,
    /// Attention heads.
    pub num_heads: usize,
    /// Patch side in pixels.
    pub patch_size: usize,
    /// Frames per temporal patch.
    pub temporal_patch_size: usize,
    /// Side of the square of patches merged into one token.
    pub spatial_merge_size: usize,
    /// Image channels.
    pub in_channels: usize,
    /// Width of the merged tokens (the text hidden width).
    pub out_hidden_size: usize,
    /// Rows of the learned position table (a square number).
    pub num_position_embeddings: usize,
    /// Blocks whose outputs feed the DeepStack mergers, in merger order.
    pub deepstack_visual_indexes: Vec<usize>,
    /// Rotary base of the 2D vision rotary.
    pub rope_theta: f32,
}

impl VisionConfig {
    /// Width of one pixel row of `pixel_values`: `in_channels * temporal_patch_size * patch_size²`.
    #[must_use]
    pub fn patch_dim(&self) -> usize {
        self.in_channels * self.temporal_patch_size * self.patch_size * self.patch_size
    }

    /// Width of one attention head.
    #[must_use]
    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_heads.max(1)
    }

    /// Side of the learned position grid.
    #[must_use]
    pub fn pos_side(&self) -> usize {
        self.num_position_embeddings.isqrt()
    }
}

/// A whole Qwen3-VL configuration.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Config {
    /// The text decoder.
    pub text: TextConfig,
    /// The vision tower.
    pub vision: VisionConfig,
    /// `<|image_pad|>`.
    pub image_token_id: u32,
    /// `<|video_pad|>`.
    pub video_token_id: u32,
    /// `<|vision_start|>`.
    pub vision_start_token_id: u32,
    /// `<|vision_end|>`.
    pub vision_end_token_id: u32,
    /// Whether the config declares a tied head. The loader itself follows the checkpoint: it uses
    /// `lm_head.weight` when present and the embedding otherwise.
    pub tie_word_embeddings: bool,
}

#[derive(Deserialize)]
struct RawRope {
    rope_type: Option<String>,
    #[serde(rename = "type")]
    kind: Option<String>,
    rope_theta: Option<f64>,
    mrope_section: Option<Vec<usize>>,
}

#[derive(Deserialize)]
struct RawText {
    model_type: Option<String>,
    vocab_size: Option<usize>,
    hidden_size: Option<usize>,
    intermediate_size: Option<usize>,
    num_hidden_layers: Option<usize>,
    num_attention_heads: Option<usize>,
    num_key_value_heads: Option<usize>,
    head_dim: Option<usize>,
    hidden_act: Option<String>,
    rms_norm_eps: Option<f64>,
    rope_theta: Option<f64>,
    rope_scaling: Option<RawRope>,
    rope_parameters: Option<RawRope>,
    attention_bias: Option<bool>,
    tie_word_embeddings: Option<bool>,
    num_experts: Option<usize>,
}

#[derive(Deserialize)]
struct RawVision {
    depth: Option<usize>,
    hidden_size: Option<usize>,
    intermediate_size: Option<usize>,
    num_heads: Option<usize>,
    patch_size: Option<usize>,
    temporal_patch_size: Option<usize>,
    spatial_merge_size: Option<usize>,
    #[serde(alias = "in_chans")]
    in_channels: Option<usize>,
    out_hidden_size: Option<usize>,
    num_position_embeddings: Option<usize>,
    deepstack_visual_indexes: Option<Vec<usize>>,
    hidden_act: Option<String>,
    rope_parameters: Option<RawRope>,
    rope_theta: Option<f64>,
}

#[derive(Deserialize)]
struct RawConfig {
    model_type: Option<String>,
    architectures: Option<Vec<String>>,
    text_config: Option<RawText>,
    vision_config: Option<RawVision>,
    image_token_id: Option<u32>,
    video_token_id: Option<u32>,
    vision_start_token_id: Option<u32>,
    vision_end_token_id: Option<u32>,
    tie_word_embeddings: Option<bool>,
}

fn need<T>(v: Option<T>, field: &str) -> Result<T> {
    v.ok_or_else(|| ModelError::config(field, "missing"))
}

fn positive(v: Option<usize>, field: &str) -> Result<usize> {
    match need(v, field)? {
        0 => Err(ModelError::config(field, "must be positive")),
        n => Ok(n),
    }
}

impl Config {
    /// Reads and validates `config.json`.
    ///
    /// # Errors
    /// [`ModelError::Io`] if the file cannot be read, [`ModelError::Json`] if it is not valid
    /// JSON, [`ModelError::InvalidConfig`] / [`ModelError::Unsupported`] as
    /// [`Config::from_json_str`].
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|source| ModelError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let value: Value = serde_json::from_str(&text).map_err(|source| ModelError::Json {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_value(value, path)
    }

    /// Parses and validates a `config.json` held in a string.
    ///
    /// # Errors
    /// [`ModelError::Json`] if it is not valid JSON or a field has the wrong JSON type,
    /// [`ModelError::Unsupported`] for MoE checkpoints and other model types,
    /// [`ModelError::InvalidConfig`] for missing or inconsistent values.
    pub fn from_json_str(text: &str) -> Result<Self> {
        let path = Path::new("<string>");
        let value: Value = serde_json::from_str(text).map_err(|source| ModelError::Json {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_value(value, path)
    }

    fn from_value(value: Value, path: &Path) -> Result<Self> {
        let raw: RawConfig = serde_json::from_value(value).map_err(|source| ModelError::Json {
            path: path.to_path_buf(),
            source,
        })?;
        let model_type = raw.model_type.as_deref().unwrap_or("");
        let moe_arch = raw
            .architectures
            .iter()
            .flatten()
            .any(|a| a.contains("Moe"));
        let text = need(raw.text_config, "text_config")?;
        if model_type.contains("moe")
            || moe_arch
            || text.num_experts.is_some()
            || text
                .model_type
                .as_deref()
                .is_some_and(|t| t.contains("moe"))
        {
            return Err(ModelError::Unsupported {
                what:
                    "Qwen3-VL MoE checkpoints (qwen3_vl_moe); only the dense models are implemented"
                        .into(),
            });
        }
        if !model_type.is_empty() && model_type != "qwen3_vl" {
            return Err(ModelError::Unsupported {
                what: format!("model_type `{model_type}` (expected `qwen3_vl`)"),
            });
        }
        let vision = need(raw.vision_config, "vision_config")?;
        let text_tie = text.tie_word_embeddings;
        let text = parse_text(text)?;
        let vision = parse_vision(vision)?;
        let tie = raw.tie_word_embeddings.or(text_tie).unwrap_or(false);
        let cfg = Self {
            image_token_id: raw.image_token_id.unwrap_or(151_655),
            video_token_id: raw.video_token_id.unwrap_or(151_656),
            vision_start_token_id: raw.vision_start_token_id.unwrap_or(151_652),
            vision_end_token_id: raw.vision_end_token_id.unwrap_or(151_653),
            tie_word_embeddings: tie,
            text,
            vision,
        };
        cfg.validate()?;
        Ok(cfg)
    }

    /// Checks the cross-field constraints (called by the parsers).
    ///
    /// # Errors
    /// [`ModelError::InvalidConfig`] naming the first inconsistent field.
    pub fn validate(&self) -> Result<()> {
        let t = &self.text;
        let v = &self.vision;
        if !t.num_attention_heads.is_multiple_of(t.num_key_value_heads) {
            return Err(ModelError::config(
                "text_config.num_key_value_heads",
                "must divide num_attention_heads",
            ));
        }
        if !t.head_dim.is_multiple_of(2) {
            return Err(ModelError::config("text_config.head_dim", "must be even"));
        }
        let section_sum = t
            .mrope_section
            .iter()
            .try_fold(0usize, |acc, &x| acc.checked_add(x));
        if section_sum != Some(t.head_dim / 2) {
            return Err(ModelError::config(
                "text_config.rope_scaling.mrope_section",
                format!("must sum to head_dim / 2 = {}", t.head_dim / 2),
            ));
        }
        if !(t.rms_norm_eps.is_finite() && t.rms_norm_eps > 0.0) {
            return Err(ModelError::config(
                "text_config.rms_norm_eps",
                "must be positive",
            ));
        }
        if !(t.rope_theta.is_finite() && t.rope_theta > 1.0) {
            return Err(ModelError::config("text_config.rope_theta", "must be > 1"));
        }
        if !v.hidden_size.is_multiple_of(v.num_heads) || !v.head_dim().is_multiple_of(4) {
            return Err(ModelError::config(
                "vision_config.num_heads",
                "hidden_size / num_heads must be a multiple of 4",
            ));
        }
        let side = v.pos_side();
        if side * side != v.num_position_embeddings {
            return Err(ModelError::config(
                "vision_config.num_position_embeddings",
                "must be a perfect square",
            ));
        }
        if v.out_hidden_size != t.hidden_size {
            return Err(ModelError::config(
                "vision_config.out_hidden_size",
                "must equal text_config.hidden_size",
            ));
        }
        let mut seen = std::collections::BTreeSet::new();
        for &i in &v.deepstack_visual_indexes {
            if i >= v.depth {
                return Err(ModelError::config(
                    "vision_config.deepstack_visual_indexes",
                    "index not below depth",
                ));
            }
            if !seen.insert(i) {
                return Err(ModelError::config(
                    "vision_config.deepstack_visual_indexes",
                    "repeated index",
                ));
            }
        }
        // Every weight's element count (and the layer counts that multiply them) must fit usize:
        // the loader and the forward pass compute these products.
        let products: [(&'static str, &[usize]); 9] = [
            ("text_config.vocab_size", &[t.vocab_size, t.hidden_size]),
            (
                "text_config.intermediate_size",
                &[t.intermediate_size, t.hidden_size, 3],
            ),
            (
                "text_config.num_attention_heads",
                &[t.num_attention_heads, t.head_dim, t.hidden_size],
            ),
            (
                "text_config.num_key_value_heads",
                &[t.num_key_value_heads, t.head_dim, t.hidden_size],
            ),
            (
                "vision_config.patch_size",
                &[
                    v.in_channels,
                    v.temporal_patch_size,
                    v.patch_size,
                    v.patch_size,
                    v.hidden_size,
                ],
            ),
            (
                "vision_config.intermediate_size",
                &[v.intermediate_size, v.hidden_size],
            ),
            (
                "vision_config.num_position_embeddings",
                &[v.num_position_embeddings, v.hidden_size],
            ),
            (
                "vision_config.spatial_merge_size",
                &[
                    v.spatial_merge_size,
                    v.spatial_merge_size,
                    v.hidden_size,
                    v.spatial_merge_size,
                    v.spatial_merge_size,
                    v.hidden_size,
                ],
            ),
            (
                "text_config.num_hidden_layers",
                &[t.num_hidden_layers, t.hidden_size, t.hidden_size, v.depth],
            ),
        ];
        for (field, factors) in products {
            if factors
                .iter()
                .try_fold(1usize, |acc, &x| acc.checked_mul(x))
                .is_none()
            {
                return Err(ModelError::config(field, "sizes whose product overflows"));
            }
        }
        if !(v.rope_theta.is_finite() && v.rope_theta > 1.0) {
            return Err(ModelError::config(
                "vision_config.rope_theta",
                "must be > 1",
            ));
        }
        let vocab = t.vocab_size;
        for (name, id) in [
            ("image_token_id", self.image_token_id),
            ("vision_start_token_id", self.vision_start_token_id),
            ("vision_end_token_id", self.vision_end_token_id),
        ] {
            if id as usize >= vocab {
                return Err(ModelError::config(name, "not inside the vocabulary"));
            }
        }
        Ok(())
    }
}

fn rope_type_ok(rope: &RawRope, field: &str) -> Result<()> {
    let kind = rope.rope_type.as_deref().or(rope.kind.as_deref());
    match kind {
        None | Some("default" | "mrope") => Ok(()),
        Some(other) => Err(ModelError::Unsupported {
            what: format!("{field}.rope_type `{other}` (only `default` is implemented)"),
        }),
    }
}

fn parse_text(t: RawText) -> Result<TextConfig> {
    let hidden = positive(t.hidden_size, "text_config.hidden_size")?;
    let heads = positive(t.num_attention_heads, "text_config.num_attention_heads")?;
    let kv = match t.num_key_value_heads {
        Some(0) => {
            return Err(ModelError::config(
                "text_config.num_key_value_heads",
                "must be positive",
            ));
        }
        Some(n) => n,
        None => heads,
    };
    let head_dim = match t.head_dim {
        Some(0) => {
            return Err(ModelError::config(
                "text_config.head_dim",
                "must be positive",
            ));
        }
        Some(d) => d,
        None => hidden / heads,
    };
    if let Some(act) = t.hidden_act.as_deref()
        && act != "silu"
    {
        return Err(ModelError::Unsupported {
            what: format!("text_config.hidden_act `{act}` (only silu)"),
        });
    }
    if t.attention_bias == Some(true) {
        return Err(ModelError::Unsupported {
            what: "text_config.attention_bias = true".into(),
        });
    }
    // transformers 5: rope_parameters{rope_theta, mrope_section}; hub files: rope_theta + rope_scaling.
    let (rope, field) = match (t.rope_parameters, t.rope_scaling) {
        (Some(p), _) => (p, "text_config.rope_parameters"),
        (None, Some(s)) => (s, "text_config.rope_scaling"),
        (None, None) => {
            return Err(ModelError::config(
                "text_config.rope_scaling",
                "missing (neither rope_scaling nor rope_parameters)",
            ));
        }
    };
    rope_type_ok(&rope, field)?;
    let theta = rope.rope_theta.or(t.rope_theta).unwrap_or(5_000_000.0);
    let section = need(rope.mrope_section, &format!("{field}.mrope_section"))?;
    let mrope_section: [usize; 3] = section.try_into().map_err(|_| {
        ModelError::config(format!("{field}.mrope_section"), "must have three entries")
    })?;
    Ok(TextConfig {
        vocab_size: positive(t.vocab_size, "text_config.vocab_size")?,
        hidden_size: hidden,
        intermediate_size: positive(t.intermediate_size, "text_config.intermediate_size")?,
        num_hidden_layers: need(t.num_hidden_layers, "text_config.num_hidden_layers")?,
        num_attention_heads: heads,
        num_key_value_heads: kv,
        head_dim,
        rms_norm_eps: t.rms_norm_eps.unwrap_or(1e-6) as f32,
        rope_theta: theta as f32,
        mrope_section,
    })
}

fn parse_vision(v: RawVision) -> Result<VisionConfig> {
    if let Some(act) = v.hidden_act.as_deref()
        && act != "gelu_pytorch_tanh"
    {
        return Err(ModelError::Unsupported {
            what: format!("vision_config.hidden_act `{act}` (only gelu_pytorch_tanh)"),
        });
    }
    let theta = v
        .rope_parameters
        .as_ref()
        .and_then(|r| r.rope_theta)
        .or(v.rope_theta)
        .unwrap_or(10_000.0);
    Ok(VisionConfig {
        depth: positive(v.depth, "vision_config.depth")?,
        hidden_size: positive(v.hidden_size, "vision_config.hidden_size")?,
        intermediate_size: positive(v.intermediate_size, "vision_config.intermediate_size")?,
        num_heads: positive(v.num_heads, "vision_config.num_heads")?,
        patch_size: positive(v.patch_size, "vision_config.patch_size")?,
        temporal_patch_size: positive(v.temporal_patch_size, "vision_config.temporal_patch_size")?,
        spatial_merge_size: positive(v.spatial_merge_size, "vision_config.spatial_merge_size")?,
        in_channels: positive(v.in_channels.or(Some(3)), "vision_config.in_channels")?,
        out_hidden_size: positive(v.out_hidden_size, "vision_config.out_hidden_size")?,
        num_position_embeddings: positive(
            v.num_position_embeddings,
            "vision_config.num_position_embeddings",
        )?,
        deepstack_visual_indexes: v.deepstack_visual_indexes.unwrap_or_default(),
        rope_theta: theta as f32,
    })
}

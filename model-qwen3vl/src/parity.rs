//! Parity with Hugging Face: runs a committed fixture case on any backend and compares the
//! logits, log-probs, KV-cache decode steps and every named intermediate with the reference.
//! The crate's tests use it on the CPU backends; a GPU backend's tests can call
//! [`check_case`] with their own backend and tolerance.
//!
//! # Tolerance
//! [`TOLERANCE`] = 5e-5, absolute, on every compared tensor. Derivation: the fixtures run
//! PyTorch in f32 on bf16-exact weights, so both sides compute the same real numbers and differ
//! only by f32 rounding order (summation order of the products, f64 vs f32 statistics in the
//! norms, `exp`/`cos` ulps). A product of width `k` with O(1) terms carries a relative error of
//! about `sqrt(k)·2⁻²⁴ ≈ 1e-6` for the widths here (≤ 1536); it compounds over the chain of
//! products (eight in the vision tower, ten more in the two text layers and the head) and scales
//! with the logits' standard deviation (1 and 2 in the fixtures), so a few 1e-6 up to ~2e-5 are
//! expected; measured worst: 1.8e-5, on the logits of the tied model. 5e-5 keeps a margin of
//! about 3x over that and stays 10x below the subtlest porting bug measured on these fixtures
//! (tanh instead of erf GELU in the mergers: 1.1e-3 on the logits, 4e-4 at `text.inputs_embeds`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use axpo_core::backend::Backend;

use crate::error::{ModelError, Result};
use crate::model::{ImageInput, ModelInput, Qwen3VL};
use crate::mrope::{Grid, pos_embed_taps, rope_index, vision_coords};
use crate::tap::Recorder;
use crate::weights::{LoadOptions, SafetensorsStore};

/// Maximum absolute difference accepted on every compared tensor (see the module docs).
pub const TOLERANCE: f32 = 5e-5;

/// The crate's committed fixtures folder, or `$AXPO_QWEN3VL_FIXTURES` when set (test binaries
/// carried to another machine, where the build-time path does not exist).
#[must_use]
pub fn fixtures_dir() -> PathBuf {
    std::env::var_os("AXPO_QWEN3VL_FIXTURES").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures"),
        PathBuf::from,
    )
}

/// One fixture case: its prompt and the expected tensors.
#[derive(Debug)]
pub struct Case {
    /// The prompt (ids, pixel values and grids as the HF processor made them).
    pub input: ModelInput,
    /// `expected.safetensors`.
    pub expected: SafetensorsStore,
    /// `inputs.safetensors`.
    pub inputs: SafetensorsStore,
}

/// Loads `fixtures/<model>/<case>`.
///
/// # Errors
/// File and tensor errors.
pub fn load_case(model_dir: &Path, case: &str) -> Result<Case> {
    let dir = model_dir.join(case);
    let inputs = SafetensorsStore::open_files(&[dir.join("inputs.safetensors")])?;
    let expected = SafetensorsStore::open_files(&[dir.join("expected.safetensors")])?;
    let (_, ids) = inputs.int_tensor("input_ids")?;
    let input_ids = ids
        .iter()
        .map(|&v| u32::try_from(v).map_err(|_| ModelError::input("bad id")))
        .collect::<Result<Vec<_>>>()?;
    let images = if inputs.contains("pixel_values") {
        let (_, pixel_values) = inputs.f32_tensor("pixel_values")?;
        let (_, g) = inputs.int_tensor("image_grid_thw")?;
        let grids = g
            .chunks_exact(3)
            .map(|c| Grid {
                t: c[0] as usize,
                h: c[1] as usize,
                w: c[2] as usize,
            })
            .collect();
        Some(ImageInput {
            pixel_values,
            grids,
        })
    } else {
        None
    };
    Ok(Case {
        input: ModelInput { input_ids, images },
        expected,
        inputs,
    })
}

/// The comparisons of one case: name → maximum absolute difference.
#[derive(Debug, Clone, Default)]
pub struct ParityReport {
    /// Maximum absolute difference per compared tensor.
    pub diffs: BTreeMap<String, f32>,
    /// Expected tensors that were not compared (nothing produced them).
    pub uncompared: Vec<String>,
}

impl ParityReport {
    /// The tensors whose difference exceeds `tol` (or is NaN).
    #[must_use]
    pub fn failures(&self, tol: f32) -> Vec<(String, f32)> {
        self.diffs
            .iter()
            .filter(|(_, d)| d.is_nan() || **d > tol)
            .map(|(n, d)| (n.clone(), *d))
            .collect()
    }

    /// The verdict every parity test gives: no tensor over `tol` (or NaN), no expected tensor
    /// left uncompared, and each of `must_have` compared.
    ///
    /// # Errors
    /// A message naming the first of these that does not hold, prefixed by `label`.
    pub fn verdict(&self, label: &str, tol: f32, must_have: &[&str]) -> Result<(), String> {
        let over = self.failures(tol);
        if !over.is_empty() {
            return Err(format!("{label}: over tolerance: {over:?}"));
        }
        if !self.uncompared.is_empty() {
            return Err(format!(
                "{label}: expected tensors not compared: {:?}",
                self.uncompared
            ));
        }
        match must_have.iter().find(|n| !self.diffs.contains_key(**n)) {
            Some(name) => Err(format!("{label}: {name} was not compared")),
            None => Ok(()),
        }
    }

    /// The largest difference.
    #[must_use]
    pub fn worst(&self) -> f32 {
        self.diffs.values().fold(0.0f32, |a, &b| a.max(b))
    }
}

/// Maximum absolute difference of two equally long slices (`INFINITY` if the lengths differ,
/// NaN if either holds NaN).
#[must_use]
pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    if a.len() != b.len() {
        return f32::INFINITY;
    }
    a.iter().zip(b).fold(0.0f32, |m, (x, y)| {
        let d = (x - y).abs();
        if d.is_nan() || m.is_nan() {
            f32::NAN
        } else {
            m.max(d)
        }
    })
}

/// Runs a fixture case on `backend` and compares everything it has with the reference:
/// position ids and rope delta, the pos-embed taps, every recorded intermediate, the logits, the
/// next-token log-probs (through `linear_token_stats`) and, when the case has them, the KV-cache
/// decode steps.
///
/// # Errors
/// Load and forward errors.
pub fn check_case<B: Backend>(backend: B, model_dir: &Path, case: &str) -> Result<ParityReport> {
    check_case_with(backend, model_dir, case, &LoadOptions::default())
}

/// [`check_case`] with load options (e.g. bf16 weights kept as stored on a GPU backend).
///
/// # Errors
/// Load and forward errors.
pub fn check_case_with<B: Backend>(
    backend: B,
    model_dir: &Path,
    case: &str,
    options: &LoadOptions,
) -> Result<ParityReport> {
    let model = Qwen3VL::load(backend, model_dir, options)?;
    check_loaded(&model, model_dir, case)
}

/// Every committed fixture case, as `(model folder name, case)`.
pub const CASES: &[(&str, &str)] = &[
    ("qwen3vl-tiny-a", "image1"),
    ("qwen3vl-tiny-a", "text_only"),
    ("qwen3vl-tiny-b", "image2"),
];

/// [`check_case`] with a loaded model.
///
/// # Errors
/// Load and forward errors.
pub fn check_loaded<B: Backend>(
    model: &Qwen3VL<B>,
    model_dir: &Path,
    case: &str,
) -> Result<ParityReport> {
    let c = load_case(model_dir, case)?;
    let cfg = model.config();
    let b = model.backend();
    let mut report = ParityReport::default();
    let mut rec = Recorder::default();
    let hidden = model.forward_traced(&c.input, &mut rec)?;
    let grids = c.input.images.as_ref().map_or(&[][..], |i| &i.grids[..]);
    // Positions.
    let (pos, delta) = rope_index(
        &c.input.input_ids,
        grids,
        cfg.image_token_id,
        cfg.vision.spatial_merge_size,
    )?;
    let (_, exp_pos) = c.expected.int_tensor("position_ids")?;
    let ours: Vec<i64> = (0..3).flat_map(|a| pos.iter().map(move |p| p[a])).collect();
    report.diffs.insert(
        "position_ids".into(),
        if ours == exp_pos { 0.0 } else { f32::INFINITY },
    );
    let (_, exp_delta) = c.expected.int_tensor("rope_deltas")?;
    report.diffs.insert(
        "rope_deltas".into(),
        if exp_delta == [delta] {
            0.0
        } else {
            f32::INFINITY
        },
    );
    if !grids.is_empty() {
        let side = cfg.vision.pos_side();
        let (idx, w) = pos_embed_taps(grids, cfg.vision.spatial_merge_size, side);
        let (_, exp_idx) = c.expected.int_tensor("vision.pos_embed.indices")?;
        let ours_idx: Vec<i64> = idx.iter().flatten().map(|&v| i64::from(v)).collect();
        report.diffs.insert(
            "vision.pos_embed.indices".into(),
            if ours_idx == exp_idx {
                0.0
            } else {
                f32::INFINITY
            },
        );
        let (_, exp_w) = c.expected.f32_tensor("vision.pos_embed.weights")?;
        let ours_w: Vec<f32> = w.iter().flatten().copied().collect();
        let coords = vision_coords(grids, cfg.vision.spatial_merge_size);
        let ours_rc: Vec<i64> = coords
            .iter()
            .flat_map(|&(r, c)| [r as i64, c as i64])
            .collect();
        let (_, exp_rc) = c.expected.int_tensor("vision.rotary.position_ids")?;
        report.diffs.insert(
            "vision.rotary.position_ids".into(),
            if ours_rc == exp_rc {
                0.0
            } else {
                f32::INFINITY
            },
        );
        report.diffs.insert(
            "vision.pos_embed.weights".into(),
            max_abs_diff(&ours_w, &exp_w),
        );
    }
    for (name, (_, data)) in &rec.tensors {
        if c.expected.contains(name) {
            let (_, exp) = c.expected.f32_tensor(name)?;
            report.diffs.insert(name.clone(), max_abs_diff(data, &exp));
        }
    }
    let logits = b.download_f32(&model.logits(&hidden)?)?;
    let (_, exp_logits) = c.expected.f32_tensor("logits")?;
    report
        .diffs
        .insert("logits".into(), max_abs_diff(&logits, &exp_logits));
    let targets = c.input.input_ids.get(1..).unwrap_or(&[]);
    let stats = model.token_stats(&hidden, 0, targets, axpo_core::backend::VocabChunk(333))?;
    let logp = b.download_f32(&stats.logp)?;
    let (_, exp_logp) = c.expected.f32_tensor("next_token_logprobs")?;
    report
        .diffs
        .insert("next_token_logprobs".into(), max_abs_diff(&logp, &exp_logp));
    if c.expected.contains("decode.logits") {
        let (_, steps) = c.expected.int_tensor("decode.input_ids")?;
        let (_, exp) = c.expected.f32_tensor("decode.logits")?;
        let mut cache = model.new_cache();
        model.prefill(&c.input, &mut cache)?;
        let mut got = Vec::with_capacity(exp.len());
        for &t in &steps {
            let t = u32::try_from(t).map_err(|_| ModelError::input("bad decode id"))?;
            let h = model.decode(&[t], &mut cache)?;
            got.extend(model.last_logits(&h)?);
        }
        report
            .diffs
            .insert("decode.logits".into(), max_abs_diff(&got, &exp));
    }
    let compared: Vec<&str> = report.diffs.keys().map(String::as_str).collect();
    // log_softmax is covered by logits; the decode ids are inputs.
    let skip = ["log_softmax", "decode.input_ids"];
    report.uncompared = c
        .expected
        .names()
        .filter(|n| !compared.contains(n) && !skip.contains(n))
        .map(str::to_string)
        .collect();
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::ParityReport;

    #[test]
    fn verdict_names_what_failed() {
        let mut r = ParityReport::default();
        r.diffs.insert("logits".into(), 1e-6);
        assert_eq!(r.verdict("x", 5e-5, &["logits"]), Ok(()));
        assert_eq!(
            r.verdict("x", 5e-5, &["decode.logits"]),
            Err("x: decode.logits was not compared".into())
        );
        r.uncompared.push("text.norm.out".into());
        assert!(
            r.verdict("x", 5e-5, &[])
                .is_err_and(|e| e.contains("not compared"))
        );
        r.uncompared.clear();
        r.diffs.insert("lse".into(), f32::NAN);
        assert!(
            r.verdict("x", 5e-5, &[])
                .is_err_and(|e| e.contains("over tolerance"))
        );
        r.diffs.insert("lse".into(), 1e-3);
        assert!(
            r.verdict("x", 5e-5, &[])
                .is_err_and(|e| e.contains("over tolerance"))
        );
    }
}

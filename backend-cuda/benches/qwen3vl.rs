//! Qwen3-VL on this backend against transformers, on the same random-weight checkpoint and
//! prompt: prefill and decode tokens per second, the prefill logits' distance from
//! transformers', and AXPO resampling (continuations of one frozen prefix sharing its KV cache,
//! against recomputing the prefix for each).
//!
//! The folders come from `scripts/bench_transformers_qwen3vl.py --save-dir DIR`: per model,
//! `DIR/<name>/` with the checkpoint and `bench_inputs.safetensors` (`input_ids`,
//! `pixel_values`, `image_grid_thw`, `hf_last_logits`, `resample_prefix`). One JSON object per
//! line.
//!
//! Environment: `AXPO_QWEN3VL_BENCH_DIR` (required), `AXPO_QWEN3VL_BENCH_MODELS` (`2B,8B`),
//! `AXPO_QWEN3VL_BENCH_BACKEND` (`cuda`, or `cpu` to check the harness without a GPU),
//! `AXPO_BENCH_DECODE` (decode steps, 128), `AXPO_BENCH_REPS` (timed prefills, median, 3),
//! `AXPO_BENCH_BRANCHES` (8; 0 skips resampling), `AXPO_BENCH_BRANCH_TOKENS` (256).

#![allow(clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::time::Instant;

use axpo_backend_cuda::{Cuda, Precision};
use axpo_core::backend::Backend;
use axpo_model_qwen3vl::generate::argmax;
use axpo_model_qwen3vl::score::read_inputs;
use axpo_model_qwen3vl::{
    FastCpu, ImageProcessorConfig, LoadOptions, ModelInput, Qwen3VL, SafetensorsStore, Sampling,
    WeightDType, sample_from_prefix, sample_recomputing_prefix,
};

type Res<T> = Result<T, Box<dyn std::error::Error>>;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn esc(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', " ")
}

fn main() {
    let Some(dir) = std::env::var_os("AXPO_QWEN3VL_BENCH_DIR").map(PathBuf::from) else {
        println!("{{\"bench\":\"qwen3vl\",\"skipped\":\"AXPO_QWEN3VL_BENCH_DIR is not set\"}}");
        return;
    };
    let models = std::env::var("AXPO_QWEN3VL_BENCH_MODELS").unwrap_or_else(|_| "2B,8B".into());
    let backend = std::env::var("AXPO_QWEN3VL_BENCH_BACKEND").unwrap_or_else(|_| "cuda".into());
    let mut failed = false;
    for name in models.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let folder = dir.join(name);
        let result = match backend.as_str() {
            "cpu" => Qwen3VL::load(FastCpu::new(), &folder, &LoadOptions::default())
                .map_err(Into::into)
                .and_then(|m| run(name, "cpu", &m, &folder)),
            _ => Cuda::new(0)
                .map_err(Into::into)
                .and_then(|c| {
                    let load = LoadOptions::default().with_weight_dtype(WeightDType::AsStored);
                    let cuda = c.with_precision(Precision::Bf16);
                    Qwen3VL::load(cuda, &folder, &load).map_err(Into::into)
                })
                .and_then(|m| run(name, "cuda", &m, &folder)),
        };
        if let Err(e) = result {
            failed = true;
            println!(
                "{{\"bench\":\"qwen3vl\",\"model\":\"{name}\",\"error\":\"{}\"}}",
                esc(&e.to_string())
            );
        }
    }
    if failed {
        std::process::exit(1);
    }
}

/// The median of `reps` timings after one warm-up.
fn median_s(reps: usize, mut f: impl FnMut() -> Res<()>) -> Res<f64> {
    f()?;
    let mut t = Vec::with_capacity(reps.max(1));
    for _ in 0..reps.max(1) {
        let start = Instant::now();
        f()?;
        t.push(start.elapsed().as_secs_f64());
    }
    t.sort_by(f64::total_cmp);
    Ok(t[t.len() / 2])
}

fn run<B: Backend>(name: &str, backend: &str, model: &Qwen3VL<B>, folder: &Path) -> Res<()> {
    let inputs = folder.join("bench_inputs.safetensors");
    let input = read_inputs(
        &inputs,
        &[],
        &ImageProcessorConfig::default(),
        model.config().image_token_id,
    )?;
    let store = SafetensorsStore::open_files(&[inputs])?;
    let (_, hf_logits) = store.f32_tensor("hf_last_logits")?;
    let (_, prefix) = store.int_tensor("resample_prefix")?;
    let prefix: Vec<u32> = prefix.iter().map(|&t| t as u32).collect();
    let prompt = input.input_ids.len();
    let tag = format!("\"model\":\"{name}\",\"backend\":\"{backend}\"");

    // Prefill: the KV cache of the whole prompt (image included) and the last logits, which
    // reach the host (so the time includes the device's work).
    let mut last = Vec::new();
    let prefill = median_s(env_usize("AXPO_BENCH_REPS", 3), || {
        let mut cache = model.new_cache();
        let h = model.prefill(&input, &mut cache)?;
        last = model.last_logits(&h)?;
        Ok(())
    })?;
    let (max_diff, rel) = distance(&last, &hf_logits);
    let same_argmax = argmax(&last) == argmax(&hf_logits);
    println!(
        "{{\"bench\":\"axpo_prefill\",{tag},\"prompt_tokens\":{prompt},\"s\":{prefill:.4},\"tokens_per_s\":{:.1},\"hf_logits_max_abs_diff\":{max_diff:.4e},\"hf_logits_rel_rms\":{rel:.4e},\"same_argmax\":{same_argmax}}}",
        prompt as f64 / prefill
    );

    // Decode: greedy, one token per step, each step's logits on the host.
    let steps = env_usize("AXPO_BENCH_DECODE", 128);
    let mut cache = model.new_cache();
    let h = model.prefill(&input, &mut cache)?;
    let mut next = argmax(&model.last_logits(&h)?);
    let start = Instant::now();
    for _ in 0..steps {
        let h = model.decode(&[next], &mut cache)?;
        next = argmax(&model.last_logits(&h)?);
    }
    let decode = start.elapsed().as_secs_f64();
    println!(
        "{{\"bench\":\"axpo_decode\",{tag},\"prompt_tokens\":{prompt},\"new_tokens\":{steps},\"s\":{decode:.4},\"tokens_per_s\":{:.1}}}",
        steps as f64 / decode
    );
    drop(cache);

    // AXPO resampling: branches from one frozen text prefix.
    let branches = env_usize("AXPO_BENCH_BRANCHES", 8);
    let branch_tokens = env_usize("AXPO_BENCH_BRANCH_TOKENS", 256);
    if branches > 0 {
        let sampling = Sampling::Temperature {
            temperature: 1.0,
            seed: 3,
        };
        let frozen = ModelInput::text(prefix);
        let start = Instant::now();
        let shared = sample_from_prefix(model, &frozen, branches, branch_tokens, &[], sampling)?;
        let shared_s = start.elapsed().as_secs_f64();
        let start = Instant::now();
        let mut identical = true;
        for (i, s) in shared.iter().enumerate() {
            let c = sample_recomputing_prefix(model, &frozen, i, branch_tokens, &[], sampling)?;
            identical &= c.tokens == s.tokens;
        }
        let recompute_s = start.elapsed().as_secs_f64();
        println!(
            "{{\"bench\":\"axpo_resample\",{tag},\"prefix\":{},\"branches\":{branches},\"branch_tokens\":{branch_tokens},\"shared_prefix_s\":{shared_s:.3},\"regenerate_prefix_s\":{recompute_s:.3},\"speedup\":{:.2},\"identical_tokens\":{identical}}}",
            frozen.input_ids.len(),
            recompute_s / shared_s
        );
    }
    Ok(())
}

/// The largest absolute difference, and the RMS difference over the RMS of `want`.
fn distance(got: &[f32], want: &[f32]) -> (f64, f64) {
    if got.len() != want.len() || want.is_empty() {
        return (f64::INFINITY, f64::INFINITY);
    }
    let (mut max, mut d2, mut w2) = (0f64, 0f64, 0f64);
    for (g, w) in got.iter().zip(want) {
        let d = f64::from(*g) - f64::from(*w);
        max = max.max(d.abs());
        d2 += d * d;
        w2 += f64::from(*w) * f64::from(*w);
    }
    (max, (d2 / w2.max(f64::MIN_POSITIVE)).sqrt())
}

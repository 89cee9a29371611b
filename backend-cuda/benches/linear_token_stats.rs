//! The fused output head with the GRPO/AXPO objective, forward + backward, bf16, H=4096,
//! V=151936, N in {2048, 4096, 8192, 16384}: time and peak device memory of
//! - `fused_bf16`: `ObjectiveOps::linear_objective` on CUDA under `Precision::Bf16` (bf16 logits chunk,
//!   gradient in place; three GEMMs per chunk of tokens),
//! - `fused_exact`: the same under `Precision::Exact` (f32 logits chunk),
//! - `trait_bf16`: `linear_token_stats` + `objective_tokens` + `linear_token_stats_backward`
//!   (four GEMMs),
//!
//! and the cuBLAS time of the three GEMMs alone at full size (logits = H Wᵀ in bf16,
//! dH = dZ W, dW = dZᵀ H in f32): the floor. Prints one JSON object per line. Sizes:
//! `AXPO_BENCH_N` (comma-separated), `AXPO_BENCH_H`, `AXPO_BENCH_V`.

#[path = "common.rs"]
mod common;

use axpo_backend_cuda::{Cuda, Precision};
use axpo_core::backend::{
    BufferOps, DType, Epilogue, Layout, LogprobOps, MatMut, MatRef, MatmulOps, StatsGrad,
    VocabChunk,
};
use axpo_core::backend::{HeadWorkspace, ObjectiveOps, StepTokens};
use axpo_core::objective::ObjectiveTokens;
use axpo_core::objective::{Aggregation, ObjectiveConfig, PolicyLoss};
use common::{Rng, device, median_ms, random_matrix, sizes};

fn main() {
    if let Err(e) = run() {
        println!(
            "{{\"bench\":\"linear_token_stats\",\"error\":\"{}\"}}",
            common::esc(&e.to_string())
        );
        std::process::exit(1);
    }
}

fn run() -> axpo_core::Result<()> {
    let Some(cuda) = device("linear_token_stats") else {
        return Ok(());
    };
    let h = sizes("H", &[4096])[0];
    let v = sizes("V", &[151_936])[0];
    let ns = sizes("N", &[2048, 4096, 8192, 16_384]);
    let weight = random_matrix(&cuda, DType::Bf16, v, h, 0.02, 3)?;
    let wv = MatRef::new(&weight, v, h)?;
    for &n in &ns {
        let hidden = random_matrix(&cuda, DType::Bf16, n, h, 1.0, 4 + n as u64)?;
        let hv = MatRef::new(&hidden, n, h)?;
        let mut rng = Rng(n as u64);
        let targets: Vec<u32> = (0..n)
            .map(|_| ((rng.f() * v as f32) as usize).min(v - 1) as u32)
            .collect();
        let old: Vec<f32> = (0..n).map(|_| -12.0 + rng.f()).collect();
        let adv: Vec<f32> = (0..n).map(|_| 2.0 * rng.f() - 1.0).collect();
        // 16 sequences per batch (GRPO group), token-mean aggregation, DAPO clip-higher.
        let offsets: Vec<usize> = (0..=16).map(|i| i * n / 16).collect();
        let config = ObjectiveConfig::new(
            PolicyLoss::PpoClip {
                eps_low: 0.2,
                eps_high: 0.28,
                dual_clip: None,
            },
            Aggregation::TokenMean { tokens: n },
        );
        let step = StepTokens::new(&targets, &old, &adv, &offsets);
        let tokens: ObjectiveTokens<'_, f32> = step.objective;
        let reps = if n >= 8192 { 5 } else { 10 };
        for (name, precision) in [
            ("fused_bf16", Precision::Bf16),
            ("fused_exact", Precision::Exact),
        ] {
            let c = cuda.clone().with_precision(precision);
            let run = || {
                c.linear_objective(hv, wv, &step, &config, HeadWorkspace::BackendDefault)
                    .map(|_| ())
            };
            let ms = median_ms(&c, 1, reps, run)?;
            c.synchronize()?;
            c.reset_pool_peak()?;
            let base = c.pool_peak_bytes()?;
            c.linear_objective(hv, wv, &step, &config, HeadWorkspace::BackendDefault)?;
            c.synchronize()?;
            let peak = c.pool_peak_bytes()?;
            report(name, n, h, v, ms, peak.saturating_sub(base));
        }
        {
            let c = cuda.clone().with_precision(Precision::Bf16);
            let run = || -> axpo_core::Result<()> {
                let stats = c.linear_token_stats(hv, wv, &targets, VocabChunk::default())?;
                let tok =
                    c.objective_tokens(&config, &stats.logp, Some(&stats.entropy), &tokens)?;
                c.linear_token_stats_backward(
                    hv,
                    wv,
                    &targets,
                    &stats,
                    StatsGrad {
                        d_logp: &tok.d_logp,
                        d_entropy: None,
                    },
                    VocabChunk::default(),
                )?;
                Ok(())
            };
            let ms = median_ms(&c, 1, reps, run)?;
            c.synchronize()?;
            c.reset_pool_peak()?;
            let base = c.pool_peak_bytes()?;
            run()?;
            c.synchronize()?;
            let peak = c.pool_peak_bytes()?;
            report("trait_bf16", n, h, v, ms, peak.saturating_sub(base));
        }
        floor(&cuda, &hidden, &weight, n, h, v, reps)?;
    }
    Ok(())
}

fn report(name: &str, n: usize, h: usize, v: usize, ms: f64, peak: u64) {
    let flops = 6.0 * n as f64 * h as f64 * v as f64;
    println!(
        "{{\"bench\":\"linear_objective\",\"variant\":\"{name}\",\"n\":{n},\"h\":{h},\"v\":{v},\"ms\":{ms:.3},\"tflops_3gemm\":{:.1},\"peak_bytes_above_inputs\":{peak}}}",
        flops / (ms * 1e-3) / 1e12
    );
}

/// The three GEMMs alone, through the same cuBLAS calls, at full size.
fn floor(
    cuda: &Cuda,
    hidden: &axpo_backend_cuda::CudaBuffer,
    weight: &axpo_backend_cuda::CudaBuffer,
    n: usize,
    h: usize,
    v: usize,
    reps: usize,
) -> axpo_core::Result<()> {
    let c = cuda.clone().with_precision(Precision::Bf16);
    let hv = MatRef::new(hidden, n, h)?;
    let wv = MatRef::new(weight, v, h)?;
    let mut logits = c.zeros(DType::Bf16, n * v)?;
    let dz = random_matrix(&c, DType::Bf16, n, v, 1e-4, 9)?;
    let mut dh = c.zeros(DType::F32, n * h)?;
    let mut dw = c.zeros(DType::F32, v * h)?;
    let mut t = [0.0f64; 3];
    t[0] = median_ms(&c, 1, reps, || {
        c.matmul(
            hv,
            Layout::AsStored,
            wv,
            Layout::Transposed,
            MatMut::new(&mut logits, n, v)?,
            Epilogue::OVERWRITE,
        )
    })?;
    let dzv = MatRef::new(&dz, n, v)?;
    t[1] = median_ms(&c, 1, reps, || {
        c.matmul(
            dzv,
            Layout::AsStored,
            wv,
            Layout::AsStored,
            MatMut::new(&mut dh, n, h)?,
            Epilogue::OVERWRITE,
        )
    })?;
    t[2] = median_ms(&c, 1, reps, || {
        c.matmul(
            dzv,
            Layout::Transposed,
            hv,
            Layout::AsStored,
            MatMut::new(&mut dw, v, h)?,
            Epilogue::OVERWRITE,
        )
    })?;
    let flop = 2.0 * n as f64 * h as f64 * v as f64;
    let total: f64 = t.iter().sum();
    println!(
        "{{\"bench\":\"cublas_floor\",\"n\":{n},\"h\":{h},\"v\":{v},\"logits_ms\":{:.3},\"d_hidden_ms\":{:.3},\"d_weight_ms\":{:.3},\"total_ms\":{total:.3},\"tflops\":[{:.1},{:.1},{:.1}]}}",
        t[0],
        t[1],
        t[2],
        flop / (t[0] * 1e-3) / 1e12,
        flop / (t[1] * 1e-3) / 1e12,
        flop / (t[2] * 1e-3) / 1e12
    );
    Ok(())
}

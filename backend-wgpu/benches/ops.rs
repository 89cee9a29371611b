//! WGPU against the reference CPU backend on the objective's ops (token_stats and
//! linear_token_stats, forward and backward), a matmul, and the Qwen3-VL forward of the model
//! crate's tiny fixture. Prints one table; run with
//! `WGPU_BACKEND=vulkan cargo bench -p axpo-backend-wgpu --bench ops`.
//!
//! Each line is the median of several timed runs after a warm-up (pipelines compiled, caches
//! hot); every run ends with `synchronize`, so GPU work is fully counted.

use std::error::Error;
use std::time::Instant;

use axpo_backend_wgpu::Wgpu;
use axpo_core::backend::{
    Backend, Cpu, DType, Epilogue, HostData, Layout, MatMut, MatRef, StatsGrad, VocabChunk,
};
use axpo_model_qwen3vl::parity::{fixtures_dir, load_case};
use axpo_model_qwen3vl::{FastCpu, LoadOptions, Qwen3VL};

type Res<T> = Result<T, Box<dyn Error>>;

/// Median seconds of `iters` runs of `f` after one warm-up run.
fn time(iters: usize, mut f: impl FnMut() -> Res<()>) -> Res<f64> {
    f()?;
    let mut t = Vec::with_capacity(iters);
    for _ in 0..iters {
        let s = Instant::now();
        f()?;
        t.push(s.elapsed().as_secs_f64());
    }
    t.sort_by(f64::total_cmp);
    Ok(t[t.len() / 2])
}

/// Deterministic pseudo-random values in [-scale, scale).
fn values(n: usize, seed: u64, scale: f32) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            ((s >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * scale
        })
        .collect()
}

/// One benchmark's timings on both backends.
struct Line {
    name: String,
    work: String,
    cpu: f64,
    gpu: f64,
    rate: Option<(f64, &'static str)>,
}

fn token_stats<B: Backend>(b: &B, rows: usize, vocab: usize, iters: usize) -> Res<(f64, f64)> {
    let z = b.upload_f32(&values(rows * vocab, 1, 8.0))?;
    let targets: Vec<u32> = (0..rows).map(|r| (r * 7919 % vocab) as u32).collect();
    let view = MatRef::new(&z, rows, vocab)?;
    let fwd = time(iters, || {
        let s = b.token_stats(view, &targets)?;
        b.synchronize()?;
        drop(s);
        Ok(())
    })?;
    let stats = b.token_stats(view, &targets)?;
    let gl = b.upload_f32(&values(rows, 2, 1.0))?;
    let ge = b.upload_f32(&values(rows, 3, 0.1))?;
    let bwd = time(iters, || {
        let g = StatsGrad {
            d_logp: &gl,
            d_entropy: Some(&ge),
        };
        let d = b.token_stats_backward(view, &targets, &stats, g)?;
        b.synchronize()?;
        drop(d);
        Ok(())
    })?;
    Ok((fwd, bwd))
}

fn linear<B: Backend>(b: &B, n: usize, h: usize, v: usize, iters: usize) -> Res<(f64, f64)> {
    let hidden = b.upload_f32(&values(n * h, 4, 1.0))?;
    let wv: Vec<half::bf16> = values(v * h, 5, 0.1)
        .into_iter()
        .map(half::bf16::from_f32)
        .collect();
    let weight = b.upload(HostData::Bf16(&wv))?;
    let targets: Vec<u32> = (0..n).map(|r| (r * 7919 % v) as u32).collect();
    let (hv, wv) = (MatRef::new(&hidden, n, h)?, MatRef::new(&weight, v, h)?);
    let chunk = VocabChunk::default();
    let fwd = time(iters, || {
        let s = b.linear_token_stats(hv, wv, &targets, chunk)?;
        b.synchronize()?;
        drop(s);
        Ok(())
    })?;
    let stats = b.linear_token_stats(hv, wv, &targets, chunk)?;
    let gl = b.upload_f32(&values(n, 6, 1.0))?;
    let ge = b.upload_f32(&values(n, 7, 0.1))?;
    let bwd = time(iters, || {
        let g = StatsGrad {
            d_logp: &gl,
            d_entropy: Some(&ge),
        };
        let d = b.linear_token_stats_backward(hv, wv, &targets, &stats, g, chunk)?;
        b.synchronize()?;
        drop(d);
        Ok(())
    })?;
    Ok((fwd, bwd))
}

fn matmul<B: Backend>(b: &B, m: usize, n: usize, k: usize, iters: usize) -> Res<f64> {
    let a = b.upload_f32(&values(m * k, 8, 1.0))?;
    let w = b.upload_f32(&values(n * k, 9, 1.0))?;
    let mut out = b.zeros(DType::F32, m * n)?;
    time(iters, || {
        b.matmul(
            MatRef::new(&a, m, k)?,
            Layout::AsStored,
            MatRef::new(&w, n, k)?,
            Layout::Transposed,
            MatMut::new(&mut out, m, n)?,
            Epilogue::OVERWRITE,
        )?;
        b.synchronize()?;
        Ok(())
    })
}

fn model_forward<B: Backend>(b: B, iters: usize) -> Res<f64> {
    let dir = fixtures_dir().join("qwen3vl-tiny-a");
    let model = Qwen3VL::load(b, &dir, &LoadOptions::default())?;
    let case = load_case(&dir, "image1")?;
    time(iters, || {
        let h = model.forward(&case.input)?;
        model.backend().synchronize()?;
        drop(h);
        Ok(())
    })
}

fn main() -> Res<()> {
    let gpu = Wgpu::new()?;
    let cpu = Cpu::new();
    println!(
        "wgpu adapter: {} ({}); CPU: axpo_core::backend::Cpu::new() (reference, single thread)",
        gpu.adapter_name(),
        gpu.api()
    );
    let mut lines = Vec::new();
    let (rows, vocab) = (64, 32_768);
    let (cf, cb) = token_stats(&cpu, rows, vocab, 3)?;
    let (gf, gb) = token_stats(&gpu, rows, vocab, 5)?;
    let bytes = (rows * vocab * 4) as f64;
    lines.push(Line {
        name: "token_stats fwd".into(),
        work: format!("{rows}x{vocab} f32"),
        cpu: cf,
        gpu: gf,
        rate: Some((bytes / gf / 1e9, "GB/s")),
    });
    lines.push(Line {
        name: "token_stats bwd".into(),
        work: format!("{rows}x{vocab} f32"),
        cpu: cb,
        gpu: gb,
        rate: Some((2.0 * bytes / gb / 1e9, "GB/s")),
    });
    let (n, h, v) = (64, 512, 16_384);
    let (cf, cb) = linear(&cpu, n, h, v, 2)?;
    let (gf, gb) = linear(&gpu, n, h, v, 3)?;
    let flops = 2.0 * (n * h * v) as f64;
    lines.push(Line {
        name: "linear_token_stats fwd".into(),
        work: format!("N={n} H={h} V={v} bf16 W, chunk 4096"),
        cpu: cf,
        gpu: gf,
        rate: Some((flops / gf / 1e9, "GFLOP/s")),
    });
    lines.push(Line {
        name: "linear_token_stats bwd".into(),
        work: format!("N={n} H={h} V={v} bf16 W, chunk 4096"),
        cpu: cb,
        gpu: gb,
        rate: Some((3.0 * flops / gb / 1e9, "GFLOP/s")),
    });
    let (m, nn, k) = (256, 1024, 512);
    let cm = matmul(&cpu, m, nn, k, 3)?;
    let gm = matmul(&gpu, m, nn, k, 5)?;
    lines.push(Line {
        name: "matmul".into(),
        work: format!("{m}x{k} . ({nn}x{k})^T f32"),
        cpu: cm,
        gpu: gm,
        rate: Some((2.0 * (m * nn * k) as f64 / gm / 1e9, "GFLOP/s")),
    });
    let cf = model_forward(cpu.clone(), 3)?;
    let ff = model_forward(FastCpu::new(), 3)?;
    let gf = model_forward(gpu.clone(), 3)?;
    lines.push(Line {
        name: "qwen3vl forward (vs Cpu)".into(),
        work: "tiny fixture a, 1 image".into(),
        cpu: cf,
        gpu: gf,
        rate: None,
    });
    lines.push(Line {
        name: "qwen3vl forward (vs FastCpu)".into(),
        work: "tiny fixture a, 1 image".into(),
        cpu: ff,
        gpu: gf,
        rate: None,
    });
    println!(
        "\n| op | size | cpu ms | wgpu ms | cpu/wgpu | wgpu rate |\n|---|---|---:|---:|---:|---:|"
    );
    for l in &lines {
        let rate = l
            .rate
            .map_or(String::from("-"), |(r, unit)| format!("{r:.2} {unit}"));
        println!(
            "| {} | {} | {:.2} | {:.2} | {:.2}x | {} |",
            l.name,
            l.work,
            l.cpu * 1e3,
            l.gpu * 1e3,
            l.cpu / l.gpu,
            rate
        );
    }
    Ok(())
}

//! Shared helpers of the benches (included with `#[path]`): device, random fills, medians,
//! JSON lines.

use axpo_backend_cuda::{Cuda, CudaBuffer};
use axpo_core::backend::{BufferOps, DType, HostData, MatMut, MatRef};
use half::bf16;

/// Opens device 0, or prints a JSON "skipped" line (a failure under `AXPO_REQUIRE_CUDA`).
pub fn device(bench: &str) -> Option<Cuda> {
    match Cuda::new(0) {
        Ok(c) => Some(c),
        Err(e) => {
            println!(
                "{{\"bench\":\"{bench}\",\"skipped\":\"{}\"}}",
                esc(&e.to_string())
            );
            if std::env::var_os("AXPO_REQUIRE_CUDA").is_some() {
                std::process::exit(1);
            }
            None
        }
    }
}

/// Escapes a string for a JSON value.
pub fn esc(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', " ")
}

/// A deterministic generator.
pub struct Rng(pub u64);
impl Rng {
    /// Uniform in [0, 1).
    pub fn f(&mut self) -> f32 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        ((self.0 >> 40) as f32) / ((1u64 << 24) as f32)
    }
}

/// A `rows x cols` buffer of `dtype` filled with uniform values in `[-scale, scale)`: a random
/// block of at most 64 Mi elements is uploaded and tiled on the device (random data, not
/// zeros, as the timing method requires; the tile period is far larger than the L2).
pub fn random_matrix(
    cuda: &Cuda,
    dtype: DType,
    rows: usize,
    cols: usize,
    scale: f32,
    seed: u64,
) -> axpo_core::Result<CudaBuffer> {
    let mut rng = Rng(seed);
    let block_rows = rows.min((64 << 20) / cols.max(1)).max(1);
    let host: Vec<f32> = (0..block_rows * cols)
        .map(|_| (2.0 * rng.f() - 1.0) * scale)
        .collect();
    let block = match dtype {
        DType::Bf16 => {
            let h: Vec<bf16> = host.iter().map(|&x| bf16::from_f32(x)).collect();
            cuda.upload(HostData::Bf16(&h))?
        }
        _ => cuda.upload_f32(&host)?,
    };
    let mut out = cuda.zeros(dtype, rows * cols)?;
    let mut r0 = 0;
    while r0 < rows {
        let r1 = (r0 + block_rows).min(rows);
        cuda.copy_rows(
            MatRef::strided(&block, 0, r1 - r0, cols, cols)?,
            MatMut::strided(&mut out, r0 * cols, r1 - r0, cols, cols)?,
        )?;
        r0 = r1;
    }
    Ok(out)
}

/// Median of device times over `reps` runs after `warmup` runs.
pub fn median_ms(
    cuda: &Cuda,
    warmup: usize,
    reps: usize,
    mut f: impl FnMut() -> axpo_core::Result<()>,
) -> axpo_core::Result<f64> {
    for _ in 0..warmup {
        cuda.time_ms(&mut f)?;
    }
    let mut t: Vec<f64> = Vec::with_capacity(reps);
    for _ in 0..reps {
        t.push(f64::from(cuda.time_ms(&mut f)?));
    }
    t.sort_by(f64::total_cmp);
    Ok(t[t.len() / 2])
}

/// `AXPO_BENCH_<NAME>` as a list of sizes, or the default.
pub fn sizes(name: &str, default: &[usize]) -> Vec<usize> {
    std::env::var(format!("AXPO_BENCH_{name}"))
        .ok()
        .map(|s| {
            s.split(',')
                .filter_map(|x| x.trim().parse().ok())
                .collect::<Vec<usize>>()
        })
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| default.to_vec())
}

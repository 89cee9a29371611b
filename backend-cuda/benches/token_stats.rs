//! `token_stats` on bf16 (and f32) logits, N=16384 x V=151936 by default, against the
//! device-to-device copy bandwidth measured in the same binary. Prints one JSON object per
//! line. Sizes: `AXPO_BENCH_N`, `AXPO_BENCH_V`.

#[path = "common.rs"]
mod common;

use axpo_core::backend::{BufferOps, DType, LogprobOps, MatRef};
use common::{Rng, device, median_ms, random_matrix, sizes};

fn main() {
    if let Err(e) = run() {
        println!(
            "{{\"bench\":\"token_stats\",\"error\":\"{}\"}}",
            common::esc(&e.to_string())
        );
        std::process::exit(1);
    }
}

fn run() -> axpo_core::Result<()> {
    let Some(cuda) = device("token_stats") else {
        return Ok(());
    };
    let n = sizes("N", &[16_384])[0];
    let v = sizes("V", &[151_936])[0];
    println!(
        "{{\"bench\":\"device\",\"name\":\"{}\",\"arch\":{},\"sms\":{}}}",
        common::esc(cuda.device_name()),
        cuda.arch(),
        cuda.sm_count()
    );
    // Device-to-device copy bandwidth: 2 GiB through cuMemcpyDtoDAsync, bytes read + written.
    let copy_elems = 1usize << 30;
    let src = random_matrix(&cuda, DType::Bf16, 1 << 15, copy_elems >> 15, 1.0, 11)?;
    let mut dst = cuda.zeros(DType::Bf16, copy_elems)?;
    let copy_ms = median_ms(&cuda, 3, 20, || src.copy_to(&cuda, &mut dst))?;
    let copy_bytes = 2.0 * (copy_elems * 2) as f64;
    let copy_gbs = copy_bytes / (copy_ms * 1e-3) / 1e9;
    println!(
        "{{\"bench\":\"d2d_copy\",\"bytes_read_plus_written\":{copy_bytes},\"ms\":{copy_ms:.4},\"gb_per_s\":{copy_gbs:.1}}}"
    );
    drop((src, dst));
    let mut rng = Rng(5);
    let targets: Vec<u32> = (0..n)
        .map(|_| ((rng.f() * v as f32) as usize).min(v - 1) as u32)
        .collect();
    for dtype in [DType::Bf16, DType::F32] {
        let logits = random_matrix(&cuda, dtype, n, v, 8.0, 7)?;
        let view = MatRef::new(&logits, n, v)?;
        // Targets are uploaded inside token_stats (16384 x 4 bytes); that copy is timed too.
        let ms = median_ms(&cuda, 3, 20, || {
            cuda.token_stats(view, &targets).map(|_| ())
        })?;
        let bytes = (n * v * dtype.size()) as f64;
        let gbs = bytes / (ms * 1e-3) / 1e9;
        println!(
            "{{\"bench\":\"token_stats\",\"dtype\":\"{dtype:?}\",\"n\":{n},\"v\":{v},\"ms\":{ms:.4},\"bytes_read\":{bytes},\"gb_per_s\":{gbs:.1},\"fraction_of_d2d_copy\":{:.3}}}",
            gbs / copy_gbs
        );
        cuda.synchronize()?;
    }
    Ok(())
}

//! Bench: `linear_token_stats` (hidden · Wᵀ folded chunk by chunk, never materialising the
//! logits) against the naive path (materialise the N x V logits with one matmul, then the
//! log-softmax statistics), on the reference CPU backend, at N=2048, H=1024, V=32768; and the
//! fused backward (d hidden, d W) against the naive one.
//!
//! Each case runs in a fresh child process of this binary, which reports its time and its peak
//! resident memory above the level after the inputs were built (Linux `VmHWM` - `VmRSS`), so
//! that freed memory of an earlier case cannot hide or inflate a later one.
//!
//! `cargo bench -p axpo-core --bench linear_token_stats` (env `AXPO_BENCH_SMALL=1` for a quick
//! run at smaller sizes).

// A bench harness fails loudly on a broken setup; that is its job.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::process::Command;
use std::time::Instant;

use axpo_core::backend::{
    BufferOps, Cpu, Layout, LogprobOps, MatRef, MatmulOps, StatsGrad, VocabChunk,
};
use axpo_core::rng::Rng;

/// Reads a `kB` field of `/proc/self/status`, in bytes.
fn status_bytes(field: &str) -> usize {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<usize>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

fn sizes() -> (usize, usize, usize) {
    if std::env::var("AXPO_BENCH_SMALL").is_ok() {
        (512, 256, 8192)
    } else {
        (2048, 1024, 32768)
    }
}

/// Runs one case in this process and prints `seconds peak_bytes max_abs_logp_check`.
fn run_case(case: &str) {
    let (n, h, v_full) = sizes();
    let v = if case == "fused_quarter" {
        v_full / 4
    } else {
        v_full
    };
    let mut rng = Rng::new(42, 0);
    let mut draw = |len: usize, scale: f64| -> Vec<f32> {
        (0..len)
            .map(|_| ((rng.next_f64() * 2.0 - 1.0) * scale) as f32)
            .collect()
    };
    let hidden = draw(n * h, 1.0);
    let weight = draw(v * h, 0.05);
    let targets: Vec<u32> = (0..n).map(|i| ((i * 7919) % v) as u32).collect();
    let g: Vec<f32> = (0..n)
        .map(|i| if i % 2 == 0 { 0.5 } else { -0.25 })
        .collect();
    let cpu = Cpu::new();
    let hb = cpu.upload_f32(&hidden).expect("upload");
    let wb = cpu.upload_f32(&weight).expect("upload");
    let gb = cpu.upload_f32(&g).expect("upload");
    let hm = MatRef::new(&hb, n, h).expect("view");
    let wm = MatRef::new(&wb, v, h).expect("view");
    let chunk = VocabChunk(4096);
    let grad = StatsGrad {
        d_logp: &gb,
        d_entropy: Some(&gb),
    };
    // The backward cases need the forward statistics: computed before the measurement.
    let stats = if case.ends_with("backward") {
        Some(
            cpu.linear_token_stats(hm, wm, &targets, chunk)
                .expect("stats"),
        )
    } else {
        None
    };
    let base = status_bytes("VmRSS:");
    let t = Instant::now();
    let logp0 = match (case, &stats) {
        ("fused" | "fused_quarter", _) => {
            let st = cpu
                .linear_token_stats(hm, wm, &targets, chunk)
                .expect("fused");
            cpu.download_f32(&st.logp).expect("dl")[0]
        }
        ("naive", _) => {
            let logits = cpu
                .matmul_new(hm, Layout::AsStored, wm, Layout::Transposed)
                .expect("matmul");
            let st = cpu
                .token_stats(MatRef::new(&logits, n, v).expect("view"), &targets)
                .expect("stats");
            cpu.download_f32(&st.logp).expect("dl")[0]
        }
        ("fused_backward", Some(st)) => {
            let g = cpu
                .linear_token_stats_backward(hm, wm, &targets, st, grad, chunk)
                .expect("backward");
            cpu.download_f32(&g.d_hidden).expect("dl")[0]
        }
        ("naive_backward", Some(st)) => {
            let logits = cpu
                .matmul_new(hm, Layout::AsStored, wm, Layout::Transposed)
                .expect("matmul");
            let lm = MatRef::new(&logits, n, v).expect("view");
            let dz = cpu
                .token_stats_backward(lm, &targets, st, grad)
                .expect("dz");
            let dzm = MatRef::new(&dz, n, v).expect("view");
            let dh = cpu
                .matmul_new(dzm, Layout::AsStored, wm, Layout::AsStored)
                .expect("dh");
            let _dw = cpu
                .matmul_new(dzm, Layout::Transposed, hm, Layout::AsStored)
                .expect("dw");
            cpu.download_f32(&dh).expect("dl")[0]
        }
        _ => panic!("unknown case {case}"),
    };
    let secs = t.elapsed().as_secs_f64();
    let peak = status_bytes("VmHWM:").saturating_sub(base);
    println!("{secs} {peak} {logp0}");
}

fn main() {
    let mut args = std::env::args().skip_while(|a| a != "--case");
    if args.next().is_some() {
        run_case(&args.next().expect("a case name"));
        return;
    }
    let (n, h, v) = sizes();
    let exe = std::env::current_exe().expect("own path");
    let mut results = Vec::new();
    for case in [
        "fused",
        "naive",
        "fused_quarter",
        "fused_backward",
        "naive_backward",
    ] {
        let out = Command::new(&exe)
            .args(["--case", case])
            .output()
            .expect("child runs");
        let text = String::from_utf8_lossy(&out.stdout);
        let mut it = text.split_whitespace();
        let secs: f64 = it.next().and_then(|s| s.parse().ok()).expect("seconds");
        let peak: usize = it.next().and_then(|s| s.parse().ok()).expect("peak");
        let first: f32 = it.next().and_then(|s| s.parse().ok()).expect("check value");
        results.push((case, secs, peak, first));
    }
    let mib = |b: usize| b as f64 / (1024.0 * 1024.0);
    let out_mib = mib((v * h + n * h) * 4);
    println!("linear_token_stats bench, reference CPU backend, N={n} H={h} V={v}, chunk 4096");
    println!("| case | time (s) | peak extra resident memory (MiB) |");
    println!("|---|---|---|");
    for (case, secs, peak, _) in &results {
        println!("| {case} | {secs:.3} | {:.1} |", mib(*peak));
    }
    let get = |name: &str| results.iter().find(|r| r.0 == name).expect("case ran");
    println!(
        "forward: naive / fused time = {:.2}; fused memory at V vs V/4: {:.1} vs {:.1} MiB; naive {:.1} MiB",
        get("naive").1 / get("fused").1,
        mib(get("fused").2),
        mib(get("fused_quarter").2),
        mib(get("naive").2)
    );
    println!(
        "backward: naive / fused time = {:.2}; (both include the {out_mib:.1} MiB of d W and d hidden outputs)",
        get("naive_backward").1 / get("fused_backward").1
    );
    println!(
        "check: logp[0] fused {} vs naive {}",
        get("fused").3,
        get("naive").3
    );
    println!(
        "{{\"bench\":\"linear_token_stats\",\"n\":{n},\"h\":{h},\"v\":{v},\"fused_s\":{:.4},\"naive_s\":{:.4},\"fused_peak_mib\":{:.2},\"fused_quarter_v_peak_mib\":{:.2},\"naive_peak_mib\":{:.2},\"fused_bwd_s\":{:.4},\"naive_bwd_s\":{:.4},\"fused_bwd_peak_mib\":{:.2},\"naive_bwd_peak_mib\":{:.2}}}",
        get("fused").1,
        get("naive").1,
        mib(get("fused").2),
        mib(get("fused_quarter").2),
        mib(get("naive").2),
        get("fused_backward").1,
        get("naive_backward").1,
        mib(get("fused_backward").2),
        mib(get("naive_backward").2)
    );
}

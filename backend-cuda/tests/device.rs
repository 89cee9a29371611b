//! Device tests: every op of the CUDA backend against the reference CPU backend (f64
//! statistics) on fresh random inputs, plus the fused paths beyond the trait. They are ignored
//! by a plain `cargo test` (no GPU here or in CI); `--include-ignored` runs them, and then a
//! missing device fails unless `AXPO_REQUIRE_CUDA` is unset, in which case each test prints
//! SKIP.

// Test helpers outside #[test] functions may fail loudly too.
#![allow(clippy::expect_used, clippy::too_many_arguments)]

use axpo_backend_cuda::{Cuda, CudaBuffer, Precision};
use axpo_core::backend::{
    Activation, AttentionMask, AttentionOps, AttentionSpec, BufferOps, Cpu, CpuBuffer, DType,
    ElementwiseOps, EmbeddingOps, Epilogue, HostData, Layout, LogprobOps, MatMut, MatRef,
    MatmulOps, NormOps, Rope, RotaryOps, ScatterMode, StatsGrad, VocabChunk, download_stats,
};
use axpo_core::backend::{HeadWorkspace, ObjectiveOps, StepTokens};
use axpo_core::objective::ObjectiveTokens;
use axpo_core::objective::{
    Aggregation, KlEstimator, KlPenalty, ObjectiveConfig, ObjectiveInputs, PolicyLoss, evaluate,
};
use half::{bf16, f16};

fn device() -> Option<Cuda> {
    match Cuda::new(0) {
        Ok(c) => Some(c),
        Err(e) => {
            assert!(
                std::env::var_os("AXPO_REQUIRE_CUDA").is_none(),
                "AXPO_REQUIRE_CUDA is set but no CUDA device opens: {e}"
            );
            eprintln!("SKIP: no CUDA device ({e})");
            None
        }
    }
}

struct Rng(u64);
impl Rng {
    fn f(&mut self) -> f32 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        ((self.0 >> 40) as f32) / ((1u64 << 24) as f32)
    }
    fn vec(&mut self, n: usize, lo: f32, hi: f32) -> Vec<f32> {
        (0..n).map(|_| lo + (hi - lo) * self.f()).collect()
    }
    fn ids(&mut self, n: usize, below: usize) -> Vec<u32> {
        (0..n)
            .map(|_| ((self.f() * below as f32) as usize).min(below - 1) as u32)
            .collect()
    }
}

/// Relative L2 error `|a - b| / |b|` (with a floor on the norm); NaN never passes.
fn rel(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len(), "lengths");
    let (mut num, mut den) = (0.0f64, 0.0f64);
    for (x, y) in a.iter().zip(b) {
        assert!(
            x.is_finite() == y.is_finite(),
            "finiteness differs: {x} vs {y}"
        );
        if y.is_finite() {
            num += (f64::from(*x) - f64::from(*y)).powi(2);
            den += f64::from(*y).powi(2);
        }
    }
    (num / den.max(1e-30)).sqrt()
}

fn close(what: &str, got: &[f32], want: &[f32], tol: f64) {
    let e = rel(got, want);
    assert!(e <= tol, "{what}: relative error {e:.3e} > {tol:.1e}");
    println!("{what}: rel err {e:.2e}");
}

/// The same host data on both backends.
fn both(cuda: &Cuda, cpu: &Cpu, data: &[f32], dtype: DType) -> (CudaBuffer, CpuBuffer) {
    match dtype {
        DType::Bf16 => {
            let h: Vec<bf16> = data.iter().map(|&x| bf16::from_f32(x)).collect();
            (
                cuda.upload(HostData::Bf16(&h)).expect("upload"),
                cpu.upload(HostData::Bf16(&h)).expect("upload"),
            )
        }
        DType::F16 => {
            let h: Vec<f16> = data.iter().map(|&x| f16::from_f32(x)).collect();
            (
                cuda.upload(HostData::F16(&h)).expect("upload"),
                cpu.upload(HostData::F16(&h)).expect("upload"),
            )
        }
        _ => (
            cuda.upload_f32(data).expect("upload"),
            cpu.upload_f32(data).expect("upload"),
        ),
    }
}

fn tol_for(dtype: DType) -> f64 {
    match dtype {
        DType::F32 => 2e-5,
        _ => 1e-2,
    }
}

#[test]
#[ignore = "needs a CUDA device (device_run.sh runs it with --include-ignored)"]
fn buffers_round_trip_and_copy_rows_convert() {
    let Some(cuda) = device() else { return };
    let mut rng = Rng(1);
    let x = rng.vec(1000, -3.0, 3.0);
    for dt in [DType::F32, DType::Bf16, DType::F16] {
        let cpu = Cpu::new();
        let (g, c) = both(&cuda, &cpu, &x, dt);
        assert_eq!(
            cuda.download_f32(&g).expect("download"),
            cpu.download_f32(&c).expect("download")
        );
    }
    let ids: Vec<u32> = (0..77).collect();
    let u = cuda.upload_u32(&ids).expect("upload");
    assert_eq!(cuda.download_u32(&u).expect("download"), ids);
    assert!(cuda.download_f32(&u).is_err());
    // Strided copy with conversion, and the 16-byte path (same type, aligned).
    for (sd, dd, cols, stride) in [
        (DType::F32, DType::Bf16, 37usize, 41usize),
        (DType::Bf16, DType::Bf16, 64, 128),
        (DType::Bf16, DType::F32, 64, 64),
        (DType::F16, DType::F16, 24, 40),
    ] {
        let cpu = Cpu::new();
        let rows = 9;
        let src = rng.vec(rows * stride, -2.0, 2.0);
        let (gs, cs) = both(&cuda, &cpu, &src, sd);
        let poison = vec![f32::NAN; rows * cols * 2];
        let (mut gd, _) = both(&cuda, &cpu, &poison, dd);
        cuda.copy_rows(
            MatRef::strided(&gs, 0, rows, cols, stride).expect("view"),
            MatMut::strided(&mut gd, cols, rows, cols, cols).expect("view"),
        )
        .expect("copy");
        let got = cuda.download_f32(&gd).expect("download");
        let want = cpu.download_f32(&cs).expect("download");
        for r in 0..rows {
            for c in 0..cols {
                let w = want[r * stride + c];
                let w = match dd {
                    DType::Bf16 => bf16::from_f32(w).to_f32(),
                    DType::F16 => f16::from_f32(w).to_f32(),
                    _ => w,
                };
                assert_eq!(got[cols + r * cols + c], w, "copy {sd:?}->{dd:?} ({r},{c})");
            }
        }
        assert!(
            got[..cols].iter().all(|v| v.is_nan()),
            "rows outside the view untouched"
        );
    }
}

#[test]
#[ignore = "needs a CUDA device (device_run.sh runs it with --include-ignored)"]
fn matmul_matches_the_reference_for_layouts_views_and_types() {
    let Some(cuda) = device() else { return };
    let cpu = Cpu::new();
    let mut rng = Rng(2);
    for (m, n, k) in [
        (1usize, 1usize, 1usize),
        (7, 5, 3),
        (64, 48, 96),
        (33, 130, 257),
    ] {
        for (da, db) in [
            (DType::F32, DType::F32),
            (DType::Bf16, DType::Bf16),
            (DType::F32, DType::Bf16),
            (DType::F16, DType::F16),
        ] {
            for (la, lb) in [
                (Layout::AsStored, Layout::AsStored),
                (Layout::AsStored, Layout::Transposed),
                (Layout::Transposed, Layout::AsStored),
                (Layout::Transposed, Layout::Transposed),
            ] {
                let (ar, ac) = if la == Layout::AsStored {
                    (m, k)
                } else {
                    (k, m)
                };
                let (br, bc) = if lb == Layout::AsStored {
                    (k, n)
                } else {
                    (n, k)
                };
                // Strided operands: 3 extra columns per row, offset 2.
                let a = rng.vec(2 + ar * (ac + 3), -1.0, 1.0);
                let b = rng.vec(2 + br * (bc + 3), -1.0, 1.0);
                let (ga, ca) = both(&cuda, &cpu, &a, da);
                let (gb, cb) = both(&cuda, &cpu, &b, db);
                let init = rng.vec(m * n, -1.0, 1.0);
                let mut go = cuda.upload_f32(&init).expect("upload");
                let mut co = cpu.upload_f32(&init).expect("upload");
                let ep = Epilogue {
                    alpha: 0.5,
                    accumulate: axpo_core::backend::Accumulate::Add,
                };
                cuda.matmul(
                    MatRef::strided(&ga, 2, ar, ac, ac + 3).expect("view"),
                    la,
                    MatRef::strided(&gb, 2, br, bc, bc + 3).expect("view"),
                    lb,
                    MatMut::new(&mut go, m, n).expect("view"),
                    ep,
                )
                .expect("cuda matmul");
                cpu.matmul(
                    MatRef::strided(&ca, 2, ar, ac, ac + 3).expect("view"),
                    la,
                    MatRef::strided(&cb, 2, br, bc, bc + 3).expect("view"),
                    lb,
                    MatMut::new(&mut co, m, n).expect("view"),
                    ep,
                )
                .expect("cpu matmul");
                let tol = if da == DType::F32 && db == DType::F32 {
                    1e-5
                } else {
                    1e-2
                };
                close(
                    &format!("matmul {m}x{n}x{k} {da:?}x{db:?} {la:?}/{lb:?}"),
                    &cuda.download_f32(&go).expect("download"),
                    &cpu.download_f32(&co).expect("download"),
                    tol,
                );
            }
        }
    }
    // A bf16 output and k = 0.
    let a = cuda.upload_f32(&rng.vec(12, -1.0, 1.0)).expect("upload");
    let b = cuda.upload_f32(&rng.vec(0, -1.0, 1.0)).expect("upload");
    let mut out = cuda.upload_f32(&[f32::NAN; 12]).expect("upload");
    let empty_a = MatRef::strided(&a, 0, 12, 0, 0).expect("view");
    cuda.matmul(
        empty_a,
        Layout::AsStored,
        MatRef::strided(&b, 0, 0, 1, 1).expect("view"),
        Layout::AsStored,
        MatMut::new(&mut out, 12, 1).expect("view"),
        Epilogue::OVERWRITE,
    )
    .expect("k = 0");
    assert!(
        cuda.download_f32(&out)
            .expect("download")
            .iter()
            .all(|&v| v == 0.0)
    );
}

#[test]
#[ignore = "needs a CUDA device (device_run.sh runs it with --include-ignored)"]
fn elementwise_norms_and_rotary_match() {
    let Some(cuda) = device() else { return };
    let cpu = Cpu::new();
    let mut rng = Rng(3);
    let (rows, heads, hd) = (13usize, 4usize, 64usize);
    let width = heads * hd;
    for dt in [DType::F32, DType::Bf16] {
        let tol = tol_for(dt);
        let x = rng.vec(rows * width, -3.0, 3.0);
        let y = rng.vec(rows * width, -3.0, 3.0);
        let (gx, cx) = both(&cuda, &cpu, &x, dt);
        let (gy, cy) = both(&cuda, &cpu, &y, dt);
        let (gw, cw) = both(&cuda, &cpu, &rng.vec(width, 0.5, 1.5), dt);
        let (gb, cb) = both(&cuda, &cpu, &rng.vec(width, -0.5, 0.5), dt);
        let d = |b: &CudaBuffer| cuda.download_f32(b).expect("download");
        let c = |b: &CpuBuffer| cpu.download_f32(b).expect("download");
        close(
            "mul",
            &d(&cuda.mul(&gx, &gy).expect("op")),
            &c(&cpu.mul(&cx, &cy).expect("op")),
            tol,
        );
        for act in [Activation::Silu, Activation::GeluTanh, Activation::GeluErf] {
            close(
                &format!("{act:?}"),
                &d(&cuda.activation(&gx, act).expect("op")),
                &c(&cpu.activation(&cx, act).expect("op")),
                tol,
            );
            let gxx = cuda.upload_f32(&d(&gx)).expect("upload");
            let cxx = cpu.upload_f32(&c(&cx)).expect("upload");
            close(
                &format!("bias+{act:?}"),
                &d(&cuda.bias_activation(gxx, &gb, act).expect("op")),
                &c(&cpu.bias_activation(cxx, &cb, act).expect("op")),
                tol,
            );
        }
        close(
            "swiglu",
            &d(&cuda.swiglu(&gx, &gy).expect("op")),
            &c(&cpu.swiglu(&cx, &cy).expect("op")),
            tol,
        );
        let mut ga = cuda.upload_f32(&x).expect("upload");
        let mut ca = cpu.upload_f32(&x).expect("upload");
        cuda.add_assign(&mut ga, &gy).expect("op");
        cpu.add_assign(&mut ca, &cy).expect("op");
        cuda.add_bias(&mut ga, &gb).expect("op");
        cpu.add_bias(&mut ca, &cb).expect("op");
        close("add_assign+add_bias", &d(&ga), &c(&ca), tol);
        close(
            "rms_norm",
            &d(&cuda.rms_norm(&gx, &gw, 1e-6).expect("op")),
            &c(&cpu.rms_norm(&cx, &cw, 1e-6).expect("op")),
            tol,
        );
        close(
            "layer_norm",
            &d(&cuda.layer_norm(&gx, &gw, &gb, 1e-5).expect("op")),
            &c(&cpu.layer_norm(&cx, &cw, &cb, 1e-5).expect("op")),
            tol,
        );
        let angles = rng.vec(rows * hd / 2, -3.0, 3.0);
        let mut cos = Vec::new();
        let mut sin = Vec::new();
        for r in 0..rows {
            for rep in 0..2 {
                let _ = rep;
                for i in 0..hd / 2 {
                    cos.push(angles[r * hd / 2 + i].cos());
                    sin.push(angles[r * hd / 2 + i].sin());
                }
            }
        }
        let (gc, cc) = (
            cuda.upload_f32(&cos).expect("up"),
            cpu.upload_f32(&cos).expect("up"),
        );
        let (gs, cs) = (
            cuda.upload_f32(&sin).expect("up"),
            cpu.upload_f32(&sin).expect("up"),
        );
        let rope_g = Rope {
            cos: &gc,
            sin: &gs,
            heads,
            head_dim: hd,
        };
        let rope_c = Rope {
            cos: &cc,
            sin: &cs,
            heads,
            head_dim: hd,
        };
        let mut gr = cuda.upload_f32(&x).expect("upload");
        let mut cr = cpu.upload_f32(&x).expect("upload");
        cuda.rotary(&mut gr, rope_g).expect("op");
        cpu.rotary(&mut cr, rope_c).expect("op");
        close("rotary", &d(&gr), &c(&cr), 2e-5);
        let (ghw, chw) = both(&cuda, &cpu, &rng.vec(hd, 0.5, 1.5), dt);
        close(
            "rms_norm_rotary",
            &d(&cuda.rms_norm_rotary(&gx, &ghw, 1e-6, rope_g).expect("op")),
            &c(&cpu.rms_norm_rotary(&cx, &chw, 1e-6, rope_c).expect("op")),
            tol,
        );
    }
}

fn attention_case(
    cuda: &Cuda,
    dt: DType,
    q_rows: usize,
    kv_rows: usize,
    heads: usize,
    kv_heads: usize,
    hd: usize,
    mask: AttentionMask<'_>,
    tol: f64,
) {
    let cpu = Cpu::new();
    let mut rng = Rng((q_rows * 31 + kv_rows * 7 + hd) as u64);
    let q = rng.vec(q_rows * heads * hd, -1.0, 1.0);
    let k = rng.vec(kv_rows * kv_heads * hd, -1.0, 1.0);
    let v = rng.vec(kv_rows * kv_heads * hd, -1.0, 1.0);
    let (gq, cq) = both(cuda, &cpu, &q, dt);
    let (gk, ck) = both(cuda, &cpu, &k, dt);
    let (gv, cv) = both(cuda, &cpu, &v, dt);
    let spec = AttentionSpec {
        heads,
        kv_heads,
        head_dim: hd,
        scale: 1.0 / (hd as f32).sqrt(),
        mask,
    };
    let g = cuda
        .attention(
            MatRef::new(&gq, q_rows, heads * hd).expect("view"),
            MatRef::new(&gk, kv_rows, kv_heads * hd).expect("view"),
            MatRef::new(&gv, kv_rows, kv_heads * hd).expect("view"),
            spec,
        )
        .expect("cuda attention");
    let c = cpu
        .attention(
            MatRef::new(&cq, q_rows, heads * hd).expect("view"),
            MatRef::new(&ck, kv_rows, kv_heads * hd).expect("view"),
            MatRef::new(&cv, kv_rows, kv_heads * hd).expect("view"),
            spec,
        )
        .expect("cpu attention");
    close(
        &format!("attention {dt:?} q{q_rows} kv{kv_rows} h{heads}/{kv_heads} d{hd} {mask:?}"),
        &cuda.download_f32(&g).expect("download"),
        &cpu.download_f32(&c).expect("download"),
        tol,
    );
}

#[test]
#[ignore = "needs a CUDA device (device_run.sh runs it with --include-ignored)"]
fn attention_kernels_match_the_composite_reference() {
    let Some(cuda) = device() else { return };
    // Exact CUDA-core kernel (f32), causal prefill with GQA, and full.
    attention_case(
        &cuda,
        DType::F32,
        100,
        100,
        8,
        2,
        64,
        AttentionMask::Causal { past: 0 },
        1e-5,
    );
    attention_case(
        &cuda,
        DType::F32,
        37,
        37,
        4,
        4,
        72,
        AttentionMask::Full,
        1e-5,
    );
    // Tensor-core kernel: Qwen3 text (hd 128, GQA) and the vision tower (hd 72, segments).
    attention_case(
        &cuda,
        DType::Bf16,
        300,
        300,
        16,
        8,
        128,
        AttentionMask::Causal { past: 0 },
        1e-2,
    );
    attention_case(
        &cuda,
        DType::F16,
        70,
        200,
        8,
        8,
        64,
        AttentionMask::Causal { past: 130 },
        5e-3,
    );
    let bounds = [0usize, 50, 51, 200];
    attention_case(
        &cuda,
        DType::Bf16,
        200,
        200,
        16,
        16,
        72,
        AttentionMask::Segments(&bounds),
        1e-2,
    );
    attention_case(
        &cuda,
        DType::F32,
        200,
        200,
        4,
        4,
        72,
        AttentionMask::Segments(&bounds),
        1e-5,
    );
    // Split-KV decoding against a long cache (exact arithmetic), f32 and bf16 inputs.
    attention_case(
        &cuda,
        DType::F32,
        1,
        3000,
        32,
        8,
        128,
        AttentionMask::Causal { past: 2999 },
        1e-5,
    );
    attention_case(
        &cuda,
        DType::Bf16,
        4,
        2000,
        16,
        2,
        128,
        AttentionMask::Causal { past: 1996 },
        1e-2,
    );
    attention_case(
        &cuda,
        DType::F32,
        2,
        500,
        8,
        8,
        256,
        AttentionMask::Full,
        1e-5,
    );
    // Masked softmax alone.
    let cpu = Cpu::new();
    let mut rng = Rng(9);
    let s = rng.vec(40 * 50, -4.0, 4.0);
    let mut g = cuda.upload_f32(&s).expect("upload");
    let mut c = cpu.upload_f32(&s).expect("upload");
    cuda.masked_softmax(&mut g, 40, 50, AttentionMask::Causal { past: 10 }, 0.7)
        .expect("softmax");
    cpu.masked_softmax(&mut c, 40, 50, AttentionMask::Causal { past: 10 }, 0.7)
        .expect("softmax");
    close(
        "masked_softmax",
        &cuda.download_f32(&g).expect("download"),
        &cpu.download_f32(&c).expect("download"),
        1e-5,
    );
}

#[test]
#[ignore = "needs a CUDA device (device_run.sh runs it with --include-ignored)"]
fn gather_and_scatter_rows_match_with_repeats() {
    let Some(cuda) = device() else { return };
    let cpu = Cpu::new();
    let mut rng = Rng(4);
    let table = rng.vec(50 * 24, -1.0, 1.0);
    let (gt, ct) = both(&cuda, &cpu, &table, DType::Bf16);
    let ids = rng.ids(33, 50);
    let g = cuda
        .gather_rows(MatRef::new(&gt, 50, 24).expect("view"), &ids)
        .expect("gather");
    let c = cpu
        .gather_rows(MatRef::new(&ct, 50, 24).expect("view"), &ids)
        .expect("gather");
    close(
        "gather_rows",
        &cuda.download_f32(&g).expect("d"),
        &cpu.download_f32(&c).expect("d"),
        0.0,
    );
    assert!(
        cuda.gather_rows(MatRef::new(&gt, 50, 24).expect("view"), &[50])
            .is_err()
    );
    for mode in [ScatterMode::Replace, ScatterMode::Add] {
        let dst = rng.vec(20 * 24, -1.0, 1.0);
        let mut gd = cuda.upload_f32(&dst).expect("upload");
        let mut cd = cpu.upload_f32(&dst).expect("upload");
        let rows = [3u32, 7, 3, 0, 19, 7, 3];
        let src = rng.vec(rows.len() * 24, -1.0, 1.0);
        let (gs, cs) = both(&cuda, &cpu, &src, DType::F32);
        cuda.scatter_rows(
            MatMut::new(&mut gd, 20, 24).expect("view"),
            &rows,
            MatRef::new(&gs, rows.len(), 24).expect("view"),
            mode,
        )
        .expect("scatter");
        cpu.scatter_rows(
            MatMut::new(&mut cd, 20, 24).expect("view"),
            &rows,
            MatRef::new(&cs, rows.len(), 24).expect("view"),
            mode,
        )
        .expect("scatter");
        close(
            &format!("scatter_rows {mode:?}"),
            &cuda.download_f32(&gd).expect("d"),
            &cpu.download_f32(&cd).expect("d"),
            1e-6,
        );
    }
}

#[test]
#[ignore = "needs a CUDA device (device_run.sh runs it with --include-ignored)"]
fn token_stats_fold_and_backward_match() {
    let Some(cuda) = device() else { return };
    let cpu = Cpu::new();
    let mut rng = Rng(5);
    for (rows, vocab, stride, dt) in [
        (17usize, 1000usize, 1003usize, DType::Bf16),
        (8, 4099, 4099, DType::F32),
        (5, 33, 40, DType::F16),
        (64, 151_936, 151_936, DType::Bf16),
    ] {
        let mut z = rng.vec(rows * stride, -8.0, 8.0);
        // A grammar mask: some -inf logits (never the target).
        let targets = rng.ids(rows, vocab);
        for r in 0..rows {
            for c in (0..vocab).step_by(7) {
                if c as u32 != targets[r] {
                    z[r * stride + c] = f32::NEG_INFINITY;
                }
            }
        }
        let (gz, cz) = both(&cuda, &cpu, &z, dt);
        let gv = MatRef::strided(&gz, 0, rows, vocab, stride).expect("view");
        let cv = MatRef::strided(&cz, 0, rows, vocab, stride).expect("view");
        let gs = cuda.token_stats(gv, &targets).expect("stats");
        let cs = cpu.token_stats(cv, &targets).expect("stats");
        let [gl, ge, gp, gx] = download_stats(&cuda, &gs).expect("download");
        let [cl, ce, cp, cx] = download_stats(&cpu, &cs).expect("download");
        let what = format!("token_stats {rows}x{vocab} {dt:?}");
        close(&format!("{what} logp"), &gl, &cl, 1e-5);
        close(&format!("{what} entropy"), &ge, &ce, 1e-5);
        close(&format!("{what} sum_p2"), &gp, &cp, 1e-5);
        close(&format!("{what} lse"), &gx, &cx, 1e-6);
        // The primitives in three chunks.
        let t = cuda.upload_u32(&targets).expect("upload");
        let mut state = cuda.stats_init(rows).expect("init");
        let cuts = [0, vocab / 3, vocab / 2, vocab];
        for w in cuts.windows(2) {
            let view = MatRef::strided(&gz, w[0], rows, w[1] - w[0], stride).expect("view");
            cuda.stats_fold(view, w[0], &t, &mut state).expect("fold");
        }
        let fs = cuda.stats_finish(&state, rows).expect("finish");
        let [fl, fe, _, _] = download_stats(&cuda, &fs).expect("download");
        close(&format!("{what} folded logp"), &fl, &cl, 1e-5);
        close(&format!("{what} folded entropy"), &fe, &ce, 1e-5);
        // Backward.
        let gl_up = rng.vec(rows, -1.0, 1.0);
        let ge_up = rng.vec(rows, -0.1, 0.1);
        let (g_dl, c_dl) = (
            cuda.upload_f32(&gl_up).expect("u"),
            cpu.upload_f32(&gl_up).expect("u"),
        );
        let (g_de, c_de) = (
            cuda.upload_f32(&ge_up).expect("u"),
            cpu.upload_f32(&ge_up).expect("u"),
        );
        let gb = cuda
            .token_stats_backward(
                gv,
                &targets,
                &gs,
                StatsGrad {
                    d_logp: &g_dl,
                    d_entropy: Some(&g_de),
                },
            )
            .expect("backward");
        let cb = cpu
            .token_stats_backward(
                cv,
                &targets,
                &cs,
                StatsGrad {
                    d_logp: &c_dl,
                    d_entropy: Some(&c_de),
                },
            )
            .expect("backward");
        close(
            &format!("{what} backward"),
            &cuda.download_f32(&gb).expect("d"),
            &cpu.download_f32(&cb).expect("d"),
            1e-4,
        );
    }
}

#[test]
#[ignore = "needs a CUDA device (device_run.sh runs it with --include-ignored)"]
fn linear_token_stats_and_backward_match_in_chunks() {
    let Some(cuda) = device() else { return };
    let cpu = Cpu::new();
    let mut rng = Rng(6);
    let (n, v, h) = (150usize, 1000usize, 64usize);
    for (dt, chunk, budget) in [
        (DType::F32, 128usize, 1usize << 30),
        (DType::Bf16, 300, 1 << 30),
        // A workspace of 1 MiB forces row and vocabulary chunks.
        (DType::Bf16, 256, 1 << 20),
    ] {
        let cuda = cuda.clone().with_head_workspace(budget);
        let hid = rng.vec(n * h, -1.0, 1.0);
        let w = rng.vec(v * h, -0.5, 0.5);
        let targets = rng.ids(n, v);
        let (gh, ch) = both(&cuda, &cpu, &hid, dt);
        let (gw, cw) = both(&cuda, &cpu, &w, dt);
        let ghv = MatRef::new(&gh, n, h).expect("view");
        let gwv = MatRef::new(&gw, v, h).expect("view");
        let chv = MatRef::new(&ch, n, h).expect("view");
        let cwv = MatRef::new(&cw, v, h).expect("view");
        let gs = cuda
            .linear_token_stats(ghv, gwv, &targets, VocabChunk(chunk))
            .expect("fwd");
        let cs = cpu
            .linear_token_stats(chv, cwv, &targets, VocabChunk(chunk))
            .expect("fwd");
        let [gl, ge, _, _] = download_stats(&cuda, &gs).expect("d");
        let [cl, ce, _, _] = download_stats(&cpu, &cs).expect("d");
        let what = format!("linear {dt:?} budget {budget}");
        close(&format!("{what} logp"), &gl, &cl, 1e-4);
        close(&format!("{what} entropy"), &ge, &ce, 1e-4);
        let up = rng.vec(n, -1.0, 1.0);
        let (gu, cu) = (
            cuda.upload_f32(&up).expect("u"),
            cpu.upload_f32(&up).expect("u"),
        );
        let gg = cuda
            .linear_token_stats_backward(
                ghv,
                gwv,
                &targets,
                &gs,
                StatsGrad {
                    d_logp: &gu,
                    d_entropy: None,
                },
                VocabChunk(chunk),
            )
            .expect("bwd");
        let cg = cpu
            .linear_token_stats_backward(
                chv,
                cwv,
                &targets,
                &cs,
                StatsGrad {
                    d_logp: &cu,
                    d_entropy: None,
                },
                VocabChunk(chunk),
            )
            .expect("bwd");
        close(
            &format!("{what} d_hidden"),
            &cuda.download_f32(&gg.d_hidden).expect("d"),
            &cpu.download_f32(&cg.d_hidden).expect("d"),
            1e-4,
        );
        close(
            &format!("{what} d_weight"),
            &cuda.download_f32(&gg.d_weight).expect("d"),
            &cpu.download_f32(&cg.d_weight).expect("d"),
            1e-4,
        );
    }
}

fn grpo_config(n: usize) -> ObjectiveConfig {
    ObjectiveConfig::new(PolicyLoss::default(), Aggregation::TokenMean { tokens: n })
        .with_kl(KlPenalty {
            estimator: KlEstimator::K3,
            beta: 0.04,
        })
        .with_entropy_coef(0.001)
}

#[test]
#[ignore = "needs a CUDA device (device_run.sh runs it with --include-ignored)"]
fn objective_kernel_matches_evaluate() {
    let Some(cuda) = device() else { return };
    let mut rng = Rng(7);
    let n = 500;
    let offsets = [0usize, 100, 260, 500];
    let logp = rng.vec(n, -5.0, -0.01);
    let old: Vec<f32> = logp.iter().map(|l| l + rng.f() * 0.8 - 0.4).collect();
    let adv = rng.vec(n, -2.0, 2.0);
    let refl: Vec<f32> = logp.iter().map(|l| l + rng.f() - 0.5).collect();
    let ent = rng.vec(n, 0.0, 3.0);
    let config = grpo_config(n);
    let want = evaluate(
        &config,
        &ObjectiveInputs {
            logp: &logp,
            old_logp: &old,
            advantages: &adv,
            seq_offsets: &offsets,
            rollout_logp: None,
            ref_logp: Some(&refl),
            entropy: Some(&ent),
        },
    )
    .expect("evaluate");
    let gl = cuda.upload_f32(&logp).expect("upload");
    let ge = cuda.upload_f32(&ent).expect("upload");
    let out = cuda
        .objective_tokens(
            &config,
            &gl,
            Some(&ge),
            &ObjectiveTokens {
                old_logp: &old,
                advantages: &adv,
                seq_offsets: &offsets,
                rollout_logp: None,
                ref_logp: Some(&refl),
            },
        )
        .expect("objective");
    let loss: f64 = cuda
        .download_f32(&out.loss)
        .expect("d")
        .iter()
        .map(|&x| f64::from(x))
        .sum();
    assert!(
        (loss - f64::from(want.loss)).abs() <= 1e-5 * (1.0 + f64::from(want.loss).abs()),
        "loss {loss} vs {}",
        want.loss
    );
    close(
        "objective d_logp",
        &cuda.download_f32(&out.d_logp).expect("d"),
        &want.d_logp,
        1e-5,
    );
    close(
        "objective d_entropy",
        &cuda.download_f32(&out.d_entropy).expect("d"),
        &want.d_entropy,
        1e-5,
    );
}

#[test]
#[ignore = "needs a CUDA device (device_run.sh runs it with --include-ignored)"]
fn fused_linear_objective_matches_the_unfused_reference() {
    let Some(cuda) = device() else { return };
    let cpu = Cpu::new();
    let mut rng = Rng(8);
    let (n, v, h) = (200usize, 3000usize, 128usize);
    let offsets = [0usize, 64, 130, 200];
    for (dt, precision, tol) in [
        (DType::F32, Precision::Exact, 1e-4),
        (DType::Bf16, Precision::Exact, 1e-4),
        (DType::Bf16, Precision::Bf16, 3e-2),
    ] {
        let cuda = cuda.clone().with_precision(precision);
        let hid = rng.vec(n * h, -1.0, 1.0);
        let w = rng.vec(v * h, -0.3, 0.3);
        let targets = rng.ids(n, v);
        let old = rng.vec(n, -9.0, -6.0);
        let adv = rng.vec(n, -1.0, 1.0);
        let refl = rng.vec(n, -9.0, -6.0);
        let config = grpo_config(n);
        let (gh, ch) = both(&cuda, &cpu, &hid, dt);
        let (gw, cw) = both(&cuda, &cpu, &w, dt);
        let fused = cuda
            .linear_objective(
                MatRef::new(&gh, n, h).expect("view"),
                MatRef::new(&gw, v, h).expect("view"),
                &StepTokens::new(&targets, &old, &adv, &offsets).with_ref_logp(&refl),
                &config,
                HeadWorkspace::BackendDefault,
            )
            .expect("fused");
        // Reference: CPU statistics, host objective, CPU backward.
        let chv = MatRef::new(&ch, n, h).expect("view");
        let cwv = MatRef::new(&cw, v, h).expect("view");
        let cs = cpu
            .linear_token_stats(chv, cwv, &targets, VocabChunk(512))
            .expect("fwd");
        let [cl, ce, _, _] = download_stats(&cpu, &cs).expect("d");
        let want = evaluate(
            &config,
            &ObjectiveInputs {
                logp: &cl,
                old_logp: &old,
                advantages: &adv,
                seq_offsets: &offsets,
                rollout_logp: None,
                ref_logp: Some(&refl),
                entropy: Some(&ce),
            },
        )
        .expect("evaluate");
        let dl = cpu.upload_f32(&want.d_logp).expect("u");
        let de = cpu.upload_f32(&want.d_entropy).expect("u");
        let cg = cpu
            .linear_token_stats_backward(
                chv,
                cwv,
                &targets,
                &cs,
                StatsGrad {
                    d_logp: &dl,
                    d_entropy: Some(&de),
                },
                VocabChunk(512),
            )
            .expect("bwd");
        let what = format!("linear objective {dt:?} {precision:?}");
        assert!(
            (fused.loss - f64::from(want.loss)).abs() <= tol * (1e-3 + f64::from(want.loss).abs()),
            "{what}: loss {} vs {}",
            fused.loss,
            want.loss
        );
        close(&format!("{what} logp"), &fused.logp, &cl, tol);
        close(
            &format!("{what} d_hidden"),
            &cuda.download_f32(&fused.grads.d_hidden).expect("d"),
            &cpu.download_f32(&cg.d_hidden).expect("d"),
            tol,
        );
        close(
            &format!("{what} d_weight"),
            &cuda.download_f32(&fused.grads.d_weight).expect("d"),
            &cpu.download_f32(&cg.d_weight).expect("d"),
            tol,
        );
    }
}

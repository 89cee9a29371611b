use std::eprintln;

use alloc::vec;
use alloc::vec::Vec;

use super::attention::exp_nonpositive;
use super::*;
use crate::backend::{Accumulate, AttentionMask, AttentionOps, AttentionSpec, Layout, MatMut};
fn pseudo(n: usize, seed: u32) -> Vec<f32> {
    (0..n)
        .map(|i| {
            let x = (i as u32)
                .wrapping_mul(2_654_435_761)
                .wrapping_add(seed.wrapping_mul(40_503));
            ((x >> 8) % 2001) as f32 / 1000.0 - 1.0
        })
        .collect()
}

/// The softmax's exponential against f64 over `[-100, 0]`: relative error below 4e-7 (the
/// polynomial's 1.2e-7 truncation plus a few f32 roundings of the reduction and Horner
/// steps) down to -87, and exactly 0 below it (where `e^x < 1.7e-38`).
#[test]
fn exp_nonpositive_matches_f64() {
    let mut worst = 0.0f64;
    for i in 0..=200_000u32 {
        let x = -100.0 * f64::from(i) / 200_000.0 + 1e-7 * f64::from(i % 7);
        let x = x.min(0.0) as f32;
        let got = f64::from(exp_nonpositive(x));
        let want = f64::from(x).exp();
        if x < -87.0 {
            assert_eq!(got, 0.0, "x = {x}");
        } else {
            worst = worst.max((got - want).abs() / want);
        }
    }
    eprintln!("exp_nonpositive: worst relative error {worst:e}");
    assert!(worst < 4e-7, "worst relative error {worst:e}");
    assert_eq!(exp_nonpositive(0.0), 1.0);
    assert_eq!(exp_nonpositive(f32::NEG_INFINITY), 0.0);
}

fn max_abs(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

#[test]
fn gemm_kernel_matches_the_reference_kernel() {
    let fast = FastCpu::new();
    let reference = Cpu::new();
    for &(m, k, n) in &[
        (1, 1, 1),
        (3, 5, 7),
        (1, 64, 300),
        (70, 33, 129),
        (128, 256, 96),
        (5, 0, 4),
    ] {
        for (al, bl) in [
            (Layout::AsStored, Layout::AsStored),
            (Layout::AsStored, Layout::Transposed),
            (Layout::Transposed, Layout::AsStored),
            (Layout::Transposed, Layout::Transposed),
        ] {
            for ep in [
                Epilogue::OVERWRITE,
                Epilogue {
                    alpha: 0.5,
                    accumulate: Accumulate::Add,
                },
            ] {
                let a_shape = if al == Layout::AsStored {
                    (m, k)
                } else {
                    (k, m)
                };
                let b_shape = if bl == Layout::AsStored {
                    (k, n)
                } else {
                    (n, k)
                };
                // Strided operands: one spare column each.
                let a = CpuBuffer::F32(pseudo(a_shape.0 * (a_shape.1 + 1), 1));
                let b = CpuBuffer::F32(pseudo(b_shape.0 * (b_shape.1 + 1), 2));
                let av = MatRef::strided(&a, 0, a_shape.0, a_shape.1, a_shape.1 + 1).unwrap();
                let bv = MatRef::strided(&b, 0, b_shape.0, b_shape.1, b_shape.1 + 1).unwrap();
                let mut outs = Vec::new();
                for backend in [0, 1] {
                    let mut c = CpuBuffer::F32(pseudo(m * (n + 2), 3));
                    let cv = MatMut::strided(&mut c, 1, m, n, n + 2).unwrap();
                    if backend == 0 {
                        fast.matmul(av, al, bv, bl, cv, ep).unwrap();
                    } else {
                        reference.matmul(av, al, bv, bl, cv, ep).unwrap();
                    }
                    outs.push(c.f32s("t").unwrap().into_owned());
                }
                let d = max_abs(&outs[0], &outs[1]);
                assert!(
                    d <= 1e-5 * (k as f32 + 1.0),
                    "{m}x{k}x{n} {al:?} {bl:?}: {d}"
                );
            }
        }
    }
}

#[test]
fn fast_attention_matches_the_reference() {
    let fast = FastCpu::new();
    let reference = Cpu::new();
    let bounds = [0usize, 40, 41, 100];
    let cases: Vec<(usize, usize, usize, usize, AttentionMask<'_>)> = vec![
        // (q_rows, kv_rows, heads, kv_heads, mask)
        (100, 100, 4, 2, AttentionMask::Causal { past: 0 }),
        (1, 77, 4, 1, AttentionMask::Causal { past: 76 }),
        (5, 135, 2, 2, AttentionMask::Causal { past: 130 }),
        (100, 100, 2, 2, AttentionMask::Segments(&bounds)),
        (30, 50, 4, 4, AttentionMask::Full),
    ];
    for (qr, kr, heads, kvh, mask) in cases {
        let hd = 16;
        let q = CpuBuffer::F32(pseudo(qr * heads * hd, 4));
        let k = CpuBuffer::F32(pseudo(kr * kvh * hd, 5));
        let v = CpuBuffer::F32(pseudo(kr * kvh * hd, 6));
        let spec = AttentionSpec {
            heads,
            kv_heads: kvh,
            head_dim: hd,
            scale: 0.7,
            mask,
        };
        let args = || {
            (
                MatRef::new(&q, qr, heads * hd).unwrap(),
                MatRef::new(&k, kr, kvh * hd).unwrap(),
                MatRef::new(&v, kr, kvh * hd).unwrap(),
            )
        };
        let (a, b, c) = args();
        let got = fast.attention(a, b, c, spec).unwrap();
        let (a, b, c) = args();
        let want = reference.attention(a, b, c, spec).unwrap();
        let d = max_abs(&got.f32s("t").unwrap(), &want.f32s("t").unwrap());
        assert!(d <= 1e-5, "{mask:?}: {d}");
    }
    // Shape errors come back as errors.
    let q = CpuBuffer::F32(vec![0.0; 32]);
    let spec = AttentionSpec {
        heads: 3,
        kv_heads: 2,
        head_dim: 16,
        scale: 1.0,
        mask: AttentionMask::Full,
    };
    let m = MatRef::new(&q, 1, 32).unwrap();
    assert!(fast.attention(m, m, m, spec).is_err());
}

#[test]
fn f32_silu_and_swiglu_match_the_reference() {
    let fast = FastCpu::new();
    let reference = Cpu::new();
    let g = CpuBuffer::F32(pseudo(40_000, 7).iter().map(|x| x * 12.0).collect());
    let u = CpuBuffer::F32(pseudo(40_000, 8));
    let a = fast.activation(&g, Activation::Silu).unwrap();
    let b = reference.activation(&g, Activation::Silu).unwrap();
    assert!(max_abs(&a.f32s("t").unwrap(), &b.f32s("t").unwrap()) <= 1e-5);
    let a = fast.swiglu(&g, &u).unwrap();
    let b = reference.swiglu(&g, &u).unwrap();
    assert!(max_abs(&a.f32s("t").unwrap(), &b.f32s("t").unwrap()) <= 1e-5);
    assert!(fast.swiglu(&g, &CpuBuffer::F32(vec![0.0; 3])).is_err());
}

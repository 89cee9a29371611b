//! The CPU backend's per-token statistics (`token_stats`, `linear_token_stats`) and their
//! backward passes on arbitrary small shapes and values.
//!
//! Input: up to 5 rows of up to 12 logits, stored as f32, f16, bf16 or (wrongly) u32, dense or
//! strided; values sane (|z| <= 30), or edge cases (NaN, infinities, masked `-inf`, extremes,
//! subnormals); targets inside or outside the vocabulary, one per row or not; upstream
//! gradients; for the fused head, hidden states and a head matrix of width up to 5 and a
//! vocabulary chunk from 0.
//!
//! Properties:
//! - Errors are typed and deserved: `Shape` for a view that does not fit its buffer,
//!   `LengthMismatch` for a target count that is not the row count, `TargetOutOfRange` for a
//!   target outside the vocabulary, `UnsupportedDType` for integer logits, `InvalidConfig` for a
//!   zero chunk. Nothing else fails.
//! - Rows of finite logits (masked `-inf` ones allowed around a finite target) within the f32
//!   range always succeed; other rows may give `NonFinite`, never a non-finite statistic
//!   (except `log p = -inf` for a masked target, as documented and conformance-checked). The
//!   statistics satisfy `log p <= 0`, `0 <= H <= ln V`, `1/V <= sum p^2 <= 1`, and match a
//!   naive f64 softmax. Masked logits contribute nothing.
//! - The backward of finite rows is finite and each row of `d logits` sums to zero.
//! - The fused head equals `token_stats` and its backward on the explicit logits
//!   `hidden · weightᵀ` (sane values), whatever the chunk size.

use arbitrary::{Result, Unstructured};

use axpo_core::Error;
use axpo_core::backend::{
    BufferOps, Cpu, CpuBuffer, DType, HostData, Layout, LogprobOps, MatRef, MatmulOps, StatsGrad,
    VocabChunk, download_stats,
};
use half::{bf16, f16};

use crate::build;

fn value(u: &mut Unstructured<'_>, edgy: bool) -> Result<f32> {
    if edgy && u.ratio(1u8, 2)? {
        build::f32_any(u)
    } else {
        Ok(build::moderate(u, -30.0, 30.0)? as f32)
    }
}

/// A buffer of `values` in a random float type (or u32), and the values it actually holds.
fn buffer(u: &mut Unstructured<'_>, values: &[f32]) -> Result<(CpuBuffer, Vec<f32>, DType)> {
    Ok(match u.int_in_range(0u8..=15)? {
        0 => {
            let h: Vec<f16> = values.iter().map(|&x| f16::from_f32(x)).collect();
            let back = h.iter().map(|x| x.to_f32()).collect();
            (
                Cpu::new().upload(HostData::F16(&h)).expect("upload"),
                back,
                DType::F16,
            )
        }
        1 => {
            let h: Vec<bf16> = values.iter().map(|&x| bf16::from_f32(x)).collect();
            let back = h.iter().map(|x| x.to_f32()).collect();
            (
                Cpu::new().upload(HostData::Bf16(&h)).expect("upload"),
                back,
                DType::Bf16,
            )
        }
        2 => {
            let ints: Vec<u32> = values.iter().map(|x| x.to_bits()).collect();
            (
                Cpu::new().upload_u32(&ints).expect("upload"),
                vec![],
                DType::U32,
            )
        }
        _ => (
            Cpu::new().upload_f32(values).expect("upload"),
            values.to_vec(),
            DType::F32,
        ),
    })
}

/// Naive f64 statistics of one row: (logp, entropy, sum p², lse).
fn naive(z: &[f64], y: usize) -> (f64, f64, f64, f64) {
    let m = z.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let s: f64 = z.iter().map(|v| (v - m).exp()).sum();
    let lse = m + s.ln();
    let mut h = 0.0;
    let mut q = 0.0;
    for &v in z {
        let p = (v - lse).exp();
        if p > 0.0 {
            h -= p * (v - lse);
            q += p * p;
        }
    }
    (z[y] - lse, h, q, lse)
}

fn close(a: f64, b: f64, scale: f64, what: &str) {
    assert!(
        (a - b).abs() <= 1e-4 * (1.0 + scale),
        "{what}: {a} vs naive {b} (scale {scale})"
    );
}

/// Runs one input.
pub fn run(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let _ = stats(&mut u);
    let _ = head(&mut u);
}

fn stats(u: &mut Unstructured<'_>) -> Result<()> {
    let cpu = Cpu::new();
    let rows = u.int_in_range(0..=5usize)?;
    let cols = u.int_in_range(0..=12usize)?;
    let edgy = u.ratio(1u8, 2)?;
    let (offset, stride) = if u.ratio(1u8, 4)? {
        (
            u.int_in_range(0..=3usize)?,
            cols + u.int_in_range(0..=3usize)?,
        )
    } else {
        (0, cols)
    };
    let mut len = offset + rows * stride;
    if u.ratio(1u8, 16)? {
        len = len.saturating_sub(1);
    }
    let mut raw = Vec::with_capacity(len);
    for _ in 0..len {
        raw.push(value(u, edgy)?);
    }
    let (buf, held, dtype) = buffer(u, &raw)?;
    let view = if offset == 0 && stride == cols && u.arbitrary()? {
        MatRef::new(&buf, rows, cols)
    } else {
        MatRef::strided(&buf, offset, rows, cols, stride)
    };
    let view = match view {
        Ok(v) => v,
        Err(e) => {
            assert!(matches!(e, Error::Shape { .. }), "matrix view: {e:?}");
            assert!(offset + rows.saturating_sub(1) * stride + cols > len || rows * cols == 0);
            return Ok(());
        }
    };
    let n_targets = match u.int_in_range(0u8..=15)? {
        0 => rows + 1,
        1 => rows.saturating_sub(1),
        _ => rows,
    };
    let mut targets = Vec::with_capacity(n_targets);
    for _ in 0..n_targets {
        targets.push(match u.int_in_range(0u8..=15)? {
            0 => u.arbitrary()?,
            1 => cols as u32,
            _ => u.int_in_range(0..=cols.saturating_sub(1) as u32)?,
        });
    }
    let mut bad = Vec::new();
    if targets.len() != rows {
        bad.push("LengthMismatch");
    }
    if targets.iter().any(|&t| t as usize >= cols) {
        bad.push("TargetOutOfRange");
    }
    if dtype == DType::U32 {
        bad.push("UnsupportedDType");
    }
    let row = |r: usize| -> Vec<f64> {
        (0..cols)
            .map(|c| f64::from(held[offset + r * stride + c]))
            .collect()
    };
    // A clean row: finite logits, or masked (-inf) ones around a finite target, all within a
    // range whose log-probs fit f32. Anything else may give `NonFinite` (finding F6, fixed:
    // the statistics are checked instead of returned as infinities or NaN).
    let zmax = |z: &[f64]| {
        z.iter()
            .copied()
            .filter(|v| v.is_finite())
            .fold(0.0, |a: f64, b| a.max(b.abs()))
    };
    let clean = |r: usize| {
        let z = row(r);
        let y = targets[r] as usize;
        z.iter().all(|v| v.is_finite() || *v == f64::NEG_INFINITY)
            && z[y].is_finite()
            && zmax(&z) <= 1e37
    };
    let st = match cpu.token_stats(view, &targets) {
        Err(e) => {
            if bad.is_empty() {
                assert!(
                    matches!(e, Error::NonFinite { .. }) && !(0..rows).all(clean),
                    "token_stats failed on clean rows: {e:?}"
                );
            } else {
                assert!(
                    bad.contains(&name(&e)),
                    "token_stats: {e:?}, expected one of {bad:?}"
                );
            }
            return Ok(());
        }
        Ok(st) => {
            assert!(bad.is_empty(), "token_stats accepted {bad:?}");
            st
        }
    };
    let [logp, ent, sp2, lse] = download_stats(&cpu, &st).expect("download");
    for v in [&logp, &ent, &sp2, &lse] {
        assert_eq!(v.len(), rows);
    }
    for r in 0..rows {
        // A masked target has `log p = -inf` by definition; nothing else may be infinite.
        let masked_target = row(r)[targets[r] as usize] == f64::NEG_INFINITY;
        assert!(
            logp[r].is_finite() || (masked_target && logp[r] == f32::NEG_INFINITY),
            "row {r}: Ok with log p = {}",
            logp[r]
        );
        assert!(
            ent[r].is_finite() && sp2[r].is_finite() && lse[r].is_finite(),
            "row {r}: Ok with non-finite statistics"
        );
    }
    let mut finite_rows = vec![false; rows];
    for r in 0..rows {
        if !clean(r) {
            continue;
        }
        let z = row(r);
        let y = targets[r] as usize;
        let zmax = zmax(&z);
        finite_rows[r] = z.iter().all(|v| v.is_finite());
        let (nl, nh, nq, nlse) = naive(&z, y);
        let v = cols as f64;
        let tol = 1e-4 * (1.0 + zmax);
        assert!(
            f64::from(logp[r]) <= tol,
            "row {r}: log p = {} > 0",
            logp[r]
        );
        assert!(
            ent[r] >= 0.0 && f64::from(ent[r]) <= v.ln() + 1e-4,
            "row {r}: H = {}",
            ent[r]
        );
        let finite_count = z.iter().filter(|x| x.is_finite()).count() as f64;
        assert!(
            f64::from(sp2[r]) >= 1.0 / finite_count - 1e-4 && sp2[r] <= 1.0 + 1e-4,
            "row {r}: sum p^2 = {}",
            sp2[r]
        );
        if zmax <= 1e6 {
            close(f64::from(logp[r]), nl, zmax, "log p");
            close(f64::from(ent[r]), nh, 1.0, "entropy");
            close(f64::from(sp2[r]), nq, 1.0, "sum p^2");
            close(f64::from(lse[r]), nlse, zmax, "lse");
        }
    }
    // Backward.
    let mut gl = Vec::with_capacity(rows);
    let mut ge = Vec::with_capacity(rows);
    for _ in 0..rows {
        gl.push(build::moderate(u, -5.0, 5.0)? as f32);
        ge.push(build::moderate(u, -5.0, 5.0)? as f32);
    }
    let short = u.ratio(1u8, 16)?;
    if short {
        gl.pop();
    }
    let gl_buf = cpu.upload_f32(&gl).expect("upload");
    let ge_buf = cpu.upload_f32(&ge).expect("upload");
    let with_entropy: bool = u.arbitrary()?;
    let grad = StatsGrad {
        d_logp: &gl_buf,
        d_entropy: with_entropy.then_some(&ge_buf),
    };
    match cpu.token_stats_backward(view, &targets, &st, grad) {
        Err(e) => assert!(
            short && rows > 0 && matches!(e, Error::LengthMismatch { .. }),
            "token_stats_backward: {e:?}"
        ),
        Ok(d) => {
            assert!(
                !short || rows == 0,
                "token_stats_backward accepted short gradients"
            );
            let d = cpu.download_f32(&d).expect("download");
            assert_eq!(d.len(), rows * cols);
            for r in 0..rows {
                if !finite_rows[r] {
                    continue;
                }
                let z = row(r);
                let zmax = z.iter().fold(0.0, |a: f64, b| a.max(b.abs()));
                if zmax > 1e3 {
                    // lse is kept in f32: its rounding (relative 6e-8) shifts every p by
                    // exp(6e-8 |lse|), so the row sum is only approximately zero beyond this.
                    continue;
                }
                let dz = &d[r * cols..(r + 1) * cols];
                assert!(
                    dz.iter().all(|x| x.is_finite()),
                    "row {r}: non-finite d logits"
                );
                let sum: f64 = dz.iter().map(|&x| f64::from(x)).sum();
                let g = f64::from(gl[r].abs())
                    + if with_entropy {
                        f64::from(ge[r].abs()) * (1.0 + (cols as f64).ln() + 2.0 * zmax)
                    } else {
                        0.0
                    };
                assert!(
                    sum.abs() <= 1e-4 * (1.0 + g),
                    "row {r}: d logits sum to {sum}"
                );
            }
        }
    }
    Ok(())
}

fn name(e: &Error) -> &'static str {
    match e {
        Error::Shape { .. } => "Shape",
        Error::LengthMismatch { .. } => "LengthMismatch",
        Error::TargetOutOfRange { .. } => "TargetOutOfRange",
        Error::UnsupportedDType { .. } => "UnsupportedDType",
        Error::InvalidConfig { .. } => "InvalidConfig",
        _ => "other",
    }
}

fn head(u: &mut Unstructured<'_>) -> Result<()> {
    let cpu = Cpu::new();
    let n = u.int_in_range(0..=4usize)?;
    let h = u.int_in_range(0..=5usize)?;
    let v = u.int_in_range(0..=9usize)?;
    let h2 = if u.ratio(1u8, 16)? { h + 1 } else { h };
    let mut hidden = Vec::with_capacity(n * h);
    for _ in 0..n * h {
        hidden.push(build::moderate(u, -3.0, 3.0)? as f32);
    }
    let mut weight = Vec::with_capacity(v * h2);
    for _ in 0..v * h2 {
        weight.push(build::moderate(u, -3.0, 3.0)? as f32);
    }
    let mut targets = Vec::with_capacity(n);
    for _ in 0..n {
        targets.push(if u.ratio(1u8, 16)? {
            v as u32
        } else {
            u.int_in_range(0..=v.saturating_sub(1) as u32)?
        });
    }
    let chunk = VocabChunk(u.int_in_range(0..=5usize)?);
    let hb = cpu.upload_f32(&hidden).expect("upload");
    let wb = cpu.upload_f32(&weight).expect("upload");
    let hv = MatRef::new(&hb, n, h).expect("dense view");
    let wv = MatRef::new(&wb, v, h2).expect("dense view");
    let mut bad = Vec::new();
    if h != h2 {
        bad.push("Shape");
    }
    if chunk.0 == 0 {
        bad.push("InvalidConfig");
    }
    if targets.iter().any(|&t| t as usize >= v) {
        bad.push("TargetOutOfRange");
    }
    let st = match cpu.linear_token_stats(hv, wv, &targets, chunk) {
        Err(e) => {
            assert!(
                bad.contains(&name(&e)),
                "linear_token_stats: {e:?}, expected {bad:?}"
            );
            return Ok(());
        }
        Ok(st) => {
            assert!(bad.is_empty(), "linear_token_stats accepted {bad:?}");
            st
        }
    };
    // The explicit logits, and the unfused statistics on them.
    let logits = cpu
        .matmul_new(hv, Layout::AsStored, wv, Layout::Transposed)
        .expect("matmul");
    let lv = MatRef::new(&logits, n, v).expect("logits view");
    let reference = cpu
        .token_stats(lv, &targets)
        .expect("token_stats on the explicit logits");
    let fused = download_stats(&cpu, &st).expect("download");
    let plain = download_stats(&cpu, &reference).expect("download");
    for (k, (a, b)) in fused.iter().zip(&plain).enumerate() {
        for (x, y) in a.iter().zip(b) {
            assert!(x.is_finite(), "fused statistic {k} is not finite");
            close(
                f64::from(*x),
                f64::from(*y),
                f64::from(y.abs()),
                "fused vs unfused",
            );
        }
    }
    // Backward: fused vs explicit.
    let mut gl = Vec::with_capacity(n);
    let mut ge = Vec::with_capacity(n);
    for _ in 0..n {
        gl.push(build::moderate(u, -2.0, 2.0)? as f32);
        ge.push(build::moderate(u, -2.0, 2.0)? as f32);
    }
    let glb = cpu.upload_f32(&gl).expect("upload");
    let geb = cpu.upload_f32(&ge).expect("upload");
    let grad = StatsGrad {
        d_logp: &glb,
        d_entropy: u.arbitrary::<bool>()?.then_some(&geb),
    };
    let g = cpu
        .linear_token_stats_backward(hv, wv, &targets, &st, grad, chunk)
        .unwrap_or_else(|e| panic!("fused backward failed on valid input: {e:?}"));
    let dz = cpu
        .token_stats_backward(lv, &targets, &reference, grad)
        .expect("unfused backward");
    let dzv = MatRef::new(&dz, n, v).expect("view");
    let dh = cpu
        .matmul_new(dzv, Layout::AsStored, wv, Layout::AsStored)
        .expect("matmul");
    let dw = cpu
        .matmul_new(dzv, Layout::Transposed, hv, Layout::AsStored)
        .expect("matmul");
    for (fused, explicit, what) in [
        (&g.d_hidden, &dh, "d hidden"),
        (&g.d_weight, &dw, "d weight"),
    ] {
        let a = cpu.download_f32(fused).expect("download");
        let b = cpu.download_f32(explicit).expect("download");
        assert_eq!(a.len(), b.len(), "{what} size");
        for (x, y) in a.iter().zip(&b) {
            assert!(x.is_finite(), "{what} is not finite");
            close(f64::from(*x), f64::from(*y), 10.0, what);
        }
    }
    Ok(())
}

//! Rotary embeddings (rotate-half, per-row tables: interleaved MRoPE and the vision 2D rotary
//! alike) and the fused q/k norm + rotary.

use axpo_core::backend::{Backend, DType, Op, Rope};

use crate::checks::norm::rounding;
use crate::r#gen::Gen;
use crate::oracle;
use crate::suite::{CheckResult, Compare, Context, expect_err, is_shape, upload_as};
use crate::tolerance::tol;

/// `(rows, heads, head_dim)` cases.
const CASES: [(usize, usize, usize); 6] = [
    (0, 2, 4),
    (1, 1, 2),
    (5, 3, 6),
    (33, 4, 64),
    (7, 2, 130),
    (129, 16, 8),
];

/// Per-row tables whose two halves differ (so a swapped index shows), angles of the size MRoPE
/// produces (positions up to a few thousand times frequencies in (0, 1]).
fn tables(g: &mut Gen, rows: usize, head_dim: usize) -> (Vec<f32>, Vec<f32>) {
    let angles = g.uniform_f32s(rows * head_dim, -3000.0, 3000.0);
    (
        angles.iter().map(|a| a.cos()).collect(),
        angles.iter().map(|a| a.sin()).collect(),
    )
}

/// In-place rotation of every head of every row.
///
/// # Errors
/// A [`crate::suite::Mismatch`] describing the worst element.
pub fn rotary<B: Backend>(b: &B) -> CheckResult {
    let mut g = Gen::for_check("rotary");
    for (rows, heads, hd) in CASES {
        let case = format!("rows={rows} heads={heads} head_dim={hd}");
        let xs = g.f32s(rows * heads * hd, 2.0);
        let (c, s) = tables(&mut g, rows, hd);
        let mut x = b.upload_f32(&xs).case(&case)?;
        let (cos, cw) = upload_as(b, DType::F32, &c, &case)?;
        let (sin, sw) = upload_as(b, DType::F32, &s, &case)?;
        let rope = Rope {
            cos: &cos,
            sin: &sin,
            heads,
            head_dim: hd,
        };
        b.rotary(&mut x, rope).case(&case)?;
        let (want, scale) = oracle::rotary(&crate::r#gen::wide(&xs), &cw, &sw, heads, hd);
        Compare::new(&case, "x")
            .tol(tol(Op::Rotary, DType::F32))
            .scale(&scale)
            .run(&b.download_f32(&x).case(&case)?, &want)?;
    }
    Ok(())
}

/// Per-head RMSNorm then rotary (Qwen3's q/k norm), f32 and bf16 inputs.
///
/// # Errors
/// A [`crate::suite::Mismatch`] describing the worst element.
pub fn rms_norm_rotary<B: Backend>(b: &B) -> CheckResult {
    let mut g = Gen::for_check("rms_norm_rotary");
    for (rows, heads, hd) in CASES {
        for dtype in [DType::F32, DType::Bf16] {
            let case = format!("rows={rows} heads={heads} head_dim={hd} x={dtype:?}");
            let (x, xw) = upload_as(b, dtype, &g.f32s(rows * heads * hd, 2.0), &case)?;
            let (w, ww) = upload_as(b, DType::F32, &g.f32s(hd, 1.0), &case)?;
            let (c, s) = tables(&mut g, rows, hd);
            let (cos, cw) = upload_as(b, DType::F32, &c, &case)?;
            let (sin, sw) = upload_as(b, DType::F32, &s, &case)?;
            let eps = 1e-6;
            let rope = Rope {
                cos: &cos,
                sin: &sin,
                heads,
                head_dim: hd,
            };
            let out = b.rms_norm_rotary(&x, &w, eps, rope).case(&case)?;
            let (normed, _) = oracle::rms_norm(&xw, &ww, f64::from(eps), rounding(dtype));
            let (want, scale) = oracle::rotary(&normed, &cw, &sw, heads, hd);
            Compare::new(&case, "y")
                .tol(tol(Op::RmsNormRotary, dtype))
                .terms(hd)
                .scale(&scale)
                .run(&b.download_f32(&out).case(&case)?, &want)?;
        }
    }
    Ok(())
}

/// Odd head widths, tables of the wrong size and lengths that are not whole rows are errors.
///
/// # Errors
/// A [`crate::suite::Mismatch`] if bad input is accepted.
pub fn rotary_rejects_bad_tables<B: Backend>(b: &B) -> CheckResult {
    let mut x = b.upload_f32(&[1.0; 24]).case("setup")?;
    let t12 = b.upload_f32(&[0.5; 12]).case("setup")?;
    let t8 = b.upload_f32(&[0.5; 8]).case("setup")?;
    let w = b.upload_f32(&[1.0; 4]).case("setup")?;
    let rope = |cos, sin, heads, head_dim| Rope {
        cos,
        sin,
        heads,
        head_dim,
    };
    // 24 = 3 rows x 2 heads x 4: tables must be 3 x 4 = 12.
    expect_err(
        "tables 8, need 12",
        b.rotary(&mut x, rope(&t8, &t8, 2, 4)),
        is_shape,
    )?;
    expect_err(
        "odd head_dim",
        b.rotary(&mut x, rope(&t12, &t12, 8, 3)),
        is_shape,
    )?;
    expect_err(
        "24 not a multiple of 5x4",
        b.rotary(&mut x, rope(&t12, &t12, 5, 4)),
        is_shape,
    )?;
    expect_err(
        "fused: tables 8, need 12",
        b.rms_norm_rotary(&x, &w, 1e-6, rope(&t12, &t8, 2, 4)),
        is_shape,
    )
}

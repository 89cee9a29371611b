//! RMSNorm and LayerNorm over the last dimension.

use axpo_core::backend::{Backend, DType, Op};

use crate::r#gen::Gen;
use crate::oracle;
use crate::suite::{CheckResult, Compare, Context, FLOAT_DTYPES, expect_err, is_shape, upload_as};
use crate::tolerance::tol;

/// `(rows, width)` cases: empty, one, odd, a head width, wider than any workgroup.
pub const NORM_CASES: [(usize, usize); 6] =
    [(0, 8), (1, 1), (3, 7), (37, 128), (2, 4099), (257, 5)];

/// Which half type the oracle rounds the normalised value to.
#[must_use]
pub fn rounding(dtype: DType) -> Option<bool> {
    match dtype {
        DType::Bf16 => Some(true),
        DType::F16 => Some(false),
        _ => None,
    }
}

/// RMSNorm with f32/bf16/f16 inputs and f32/bf16 weights.
///
/// # Errors
/// A [`crate::suite::Mismatch`] describing the worst element.
pub fn rms_norm<B: Backend>(b: &B) -> CheckResult {
    let mut g = Gen::for_check("rms_norm");
    for (rows, d) in NORM_CASES {
        for dtype in FLOAT_DTYPES {
            for w_dtype in [DType::F32, DType::Bf16] {
                let case = format!("rows={rows} d={d} x={dtype:?} w={w_dtype:?}");
                let (x, xw) = upload_as(b, dtype, &g.f32s(rows * d, 2.0), &case)?;
                let (w, ww) = upload_as(b, w_dtype, &g.f32s(d, 1.0), &case)?;
                let eps = 1e-6;
                let out = b.rms_norm(&x, &w, eps).case(&case)?;
                let (want, scale) = oracle::rms_norm(&xw, &ww, f64::from(eps), rounding(dtype));
                Compare::new(&case, "y")
                    .tol(tol(Op::RmsNorm, dtype))
                    .terms(d)
                    .scale(&scale)
                    .run(&b.download_f32(&out).case(&case)?, &want)?;
            }
        }
    }
    Ok(())
}

/// LayerNorm with an offset mean (centering matters), f32/bf16/f16 inputs.
///
/// # Errors
/// A [`crate::suite::Mismatch`] describing the worst element.
pub fn layer_norm<B: Backend>(b: &B) -> CheckResult {
    let mut g = Gen::for_check("layer_norm");
    for (rows, d) in NORM_CASES {
        for dtype in FLOAT_DTYPES {
            let case = format!("rows={rows} d={d} x={dtype:?}");
            let xs: Vec<f32> = g.f32s(rows * d, 2.0).iter().map(|v| v + 3.0).collect();
            let (x, xw) = upload_as(b, dtype, &xs, &case)?;
            let (w, ww) = upload_as(b, DType::F32, &g.f32s(d, 1.0), &case)?;
            let (bias, bw) = upload_as(b, dtype, &g.f32s(d, 1.0), &case)?;
            let eps = 1e-5;
            let out = b.layer_norm(&x, &w, &bias, eps).case(&case)?;
            let (want, scale) = oracle::layer_norm(&xw, &ww, &bw, f64::from(eps), rounding(dtype));
            Compare::new(&case, "y")
                .tol(tol(Op::LayerNorm, dtype))
                .terms(d)
                .scale(&scale)
                .run(&b.download_f32(&out).case(&case)?, &want)?;
        }
    }
    Ok(())
}

/// Lengths that are not a multiple of the weight width, empty weights, and weight/bias
/// mismatches are errors.
///
/// # Errors
/// A [`crate::suite::Mismatch`] if bad input is accepted.
pub fn norm_rejects_bad_widths<B: Backend>(b: &B) -> CheckResult {
    let x = b.upload_f32(&[1.0; 10]).case("setup")?;
    let w3 = b.upload_f32(&[1.0; 3]).case("setup")?;
    let w5 = b.upload_f32(&[1.0; 5]).case("setup")?;
    let b2 = b.upload_f32(&[1.0; 2]).case("setup")?;
    let empty = b.upload_f32(&[]).case("setup")?;
    expect_err("rms_norm 10 by 3", b.rms_norm(&x, &w3, 1e-6), is_shape)?;
    expect_err(
        "rms_norm empty weight",
        b.rms_norm(&x, &empty, 1e-6),
        is_shape,
    )?;
    expect_err(
        "layer_norm 10 by 3",
        b.layer_norm(&x, &w3, &w3, 1e-5),
        is_shape,
    )?;
    expect_err(
        "layer_norm weight 5, bias 2",
        b.layer_norm(&x, &w5, &b2, 1e-5),
        is_shape,
    )
}

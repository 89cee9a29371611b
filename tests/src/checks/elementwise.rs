//! Elementwise arithmetic and activations.

use axpo_core::backend::{Activation, Backend, DType, Op};

use crate::checks::buffer::LENGTHS;
use crate::r#gen::{Gen, wide};
use crate::oracle;
use crate::suite::{CheckResult, Compare, Context, FLOAT_DTYPES, expect_err, is_shape, upload_as};
use crate::tolerance::tol;

/// Every activation.
pub const ACTIVATIONS: [Activation; 3] =
    [Activation::Silu, Activation::GeluTanh, Activation::GeluErf];

/// `dst += src` for f32 destinations and f32/bf16/f16 sources.
///
/// # Errors
/// A [`crate::suite::Mismatch`] describing the worst element.
pub fn add_assign<B: Backend>(b: &B) -> CheckResult {
    let mut g = Gen::for_check("add_assign");
    for n in LENGTHS {
        for dtype in FLOAT_DTYPES {
            let case = format!("n={n} src={dtype:?}");
            let d0 = g.f32s(n, 3.0);
            let mut dst = b.upload_f32(&d0).case(&case)?;
            let (src, s) = upload_as(b, dtype, &g.f32s(n, 3.0), &case)?;
            b.add_assign(&mut dst, &src).case(&case)?;
            let want: Vec<f64> = wide(&d0).iter().zip(&s).map(|(x, y)| x + y).collect();
            Compare::new(&case, "dst")
                .tol(tol(Op::AddAssign, dtype))
                .run(&b.download_f32(&dst).case(&case)?, &want)?;
        }
    }
    Ok(())
}

/// `a * b` with mixed input types.
///
/// # Errors
/// A [`crate::suite::Mismatch`] describing the worst element.
pub fn mul<B: Backend>(b: &B) -> CheckResult {
    let mut g = Gen::for_check("mul");
    for n in LENGTHS {
        for dtype in FLOAT_DTYPES {
            let case = format!("n={n} b={dtype:?}");
            let (x, xw) = upload_as(b, DType::F32, &g.f32s(n, 3.0), &case)?;
            let (y, yw) = upload_as(b, dtype, &g.f32s(n, 3.0), &case)?;
            let out = b.mul(&x, &y).case(&case)?;
            let want: Vec<f64> = xw.iter().zip(&yw).map(|(p, q)| p * q).collect();
            Compare::new(&case, "out")
                .tol(tol(Op::Mul, dtype))
                .run(&b.download_f32(&out).case(&case)?, &want)?;
        }
    }
    Ok(())
}

/// Row broadcast of a bias over row counts 0, 1, odd and large and widths 1, odd, large.
///
/// # Errors
/// A [`crate::suite::Mismatch`] describing the worst element.
pub fn add_bias<B: Backend>(b: &B) -> CheckResult {
    let mut g = Gen::for_check("add_bias");
    for (rows, cols) in [(0, 3), (1, 1), (5, 7), (129, 33), (3, 4099)] {
        for dtype in FLOAT_DTYPES {
            let case = format!("rows={rows} cols={cols} bias={dtype:?}");
            let x0 = g.f32s(rows * cols, 3.0);
            let mut x = b.upload_f32(&x0).case(&case)?;
            let (bias, bw) = upload_as(b, dtype, &g.f32s(cols, 3.0), &case)?;
            b.add_bias(&mut x, &bias).case(&case)?;
            let want: Vec<f64> = wide(&x0)
                .iter()
                .enumerate()
                .map(|(i, v)| v + bw[i % cols])
                .collect();
            Compare::new(&case, "x")
                .tol(tol(Op::AddBias, dtype))
                .run(&b.download_f32(&x).case(&case)?, &want)?;
        }
    }
    Ok(())
}

/// SiLU, GELU (tanh) and GELU (erf) over `[-8, 8]`, f32/bf16/f16 inputs.
///
/// # Errors
/// A [`crate::suite::Mismatch`] describing the worst element.
pub fn activation<B: Backend>(b: &B) -> CheckResult {
    let mut g = Gen::for_check("activation");
    for n in LENGTHS {
        for dtype in FLOAT_DTYPES {
            for act in ACTIVATIONS {
                let case = format!("n={n} {dtype:?} {act:?}");
                let (x, xw) = upload_as(b, dtype, &g.uniform_f32s(n, -8.0, 8.0), &case)?;
                let out = b.activation(&x, act).case(&case)?;
                let want: Vec<f64> = xw.iter().map(|&v| oracle::activation(v, act)).collect();
                let scale: Vec<f64> = xw
                    .iter()
                    .zip(&want)
                    .map(|(x, y)| x.abs() + y.abs())
                    .collect();
                Compare::new(&case, "act")
                    .tol(tol(Op::Activation, dtype))
                    .scale(&scale)
                    .run(&b.download_f32(&out).case(&case)?, &want)?;
            }
        }
    }
    Ok(())
}

/// `silu(gate) * up`.
///
/// # Errors
/// A [`crate::suite::Mismatch`] describing the worst element.
pub fn swiglu<B: Backend>(b: &B) -> CheckResult {
    let mut g = Gen::for_check("swiglu");
    for n in LENGTHS {
        for dtype in FLOAT_DTYPES {
            let case = format!("n={n} {dtype:?}");
            let (gate, gw) = upload_as(b, dtype, &g.uniform_f32s(n, -8.0, 8.0), &case)?;
            let (up, uw) = upload_as(b, dtype, &g.f32s(n, 2.0), &case)?;
            let out = b.swiglu(&gate, &up).case(&case)?;
            let mut want = Vec::with_capacity(n);
            let mut scale = Vec::with_capacity(n);
            for (x, u) in gw.iter().zip(&uw) {
                let s = oracle::activation(*x, Activation::Silu);
                want.push(s * u);
                scale.push((s * u).abs() + (x * u).abs());
            }
            Compare::new(&case, "out")
                .tol(tol(Op::Swiglu, dtype))
                .scale(&scale)
                .run(&b.download_f32(&out).case(&case)?, &want)?;
        }
    }
    Ok(())
}

/// `act(x + bias)`, every activation, bias broadcast over rows.
///
/// # Errors
/// A [`crate::suite::Mismatch`] describing the worst element.
pub fn bias_activation<B: Backend>(b: &B) -> CheckResult {
    let mut g = Gen::for_check("bias_activation");
    for (rows, cols) in [(0, 3), (1, 1), (5, 7), (129, 33), (2, 4099)] {
        for dtype in FLOAT_DTYPES {
            for act in ACTIVATIONS {
                let case = format!("rows={rows} cols={cols} bias={dtype:?} {act:?}");
                let x0 = g.uniform_f32s(rows * cols, -6.0, 6.0);
                let x = b.upload_f32(&x0).case(&case)?;
                let (bias, bw) = upload_as(b, dtype, &g.uniform_f32s(cols, -2.0, 2.0), &case)?;
                let out = b.bias_activation(x, &bias, act).case(&case)?;
                let mut want = Vec::with_capacity(x0.len());
                let mut scale = Vec::with_capacity(x0.len());
                for (i, v) in wide(&x0).iter().enumerate() {
                    let t = v + bw[i % cols];
                    let y = oracle::activation(t, act);
                    want.push(y);
                    scale.push(v.abs() + bw[i % cols].abs() + y.abs());
                }
                Compare::new(&case, "out")
                    .tol(tol(Op::BiasActivation, dtype))
                    .scale(&scale)
                    .run(&b.download_f32(&out).case(&case)?, &want)?;
            }
        }
    }
    Ok(())
}

/// Operands of different lengths, and biases that do not divide the length, are errors.
///
/// # Errors
/// A [`crate::suite::Mismatch`] if bad input is accepted.
pub fn elementwise_rejects_bad_lengths<B: Backend>(b: &B) -> CheckResult {
    let five = b.upload_f32(&[1.0; 5]).case("setup")?;
    let mut six = b.upload_f32(&[1.0; 6]).case("setup")?;
    let four = b.upload_f32(&[1.0; 4]).case("setup")?;
    expect_err("add_assign 6 += 5", b.add_assign(&mut six, &five), is_shape)?;
    expect_err("mul 5 * 6", b.mul(&five, &six), is_shape)?;
    expect_err("add_bias 6 by 4", b.add_bias(&mut six, &four), is_shape)?;
    expect_err("swiglu 5, 6", b.swiglu(&five, &six), is_shape)?;
    let x = b.upload_f32(&[1.0; 6]).case("setup")?;
    expect_err(
        "bias_activation 6 by 4",
        b.bias_activation(x, &four, Activation::Silu),
        is_shape,
    )
}

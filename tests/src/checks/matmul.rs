//! Matrix products: every layout pair, strided operands, alpha and accumulation, half inputs.

use axpo_core::backend::{Accumulate, Backend, DType, Epilogue, Layout, MatMut, MatRef, Op};

use crate::r#gen::{Gen, wide};
use crate::oracle::{self, Dense};
use crate::suite::{CheckResult, Compare, Context, expect_err, is_shape, upload_as};
use crate::tolerance::tol;

const LAYOUTS: [Layout; 2] = [Layout::AsStored, Layout::Transposed];

/// Stored shape of an operand whose logical shape is `rows x cols` under `layout`.
fn stored(rows: usize, cols: usize, layout: Layout) -> (usize, usize) {
    match layout {
        Layout::AsStored => (rows, cols),
        Layout::Transposed => (cols, rows),
    }
}

/// A product case: the operands, padding and epilogue.
struct Case {
    m: usize,
    n: usize,
    k: usize,
    a_layout: Layout,
    b_layout: Layout,
    a_dtype: DType,
    b_dtype: DType,
    /// Extra columns of padding per row (row stride = cols + pad) and leading offset, for
    /// a, b and out.
    pad: usize,
    offset: usize,
    epilogue: Epilogue,
}

fn run_case<B: Backend>(b: &B, g: &mut Gen, c: &Case) -> CheckResult {
    let name = format!(
        "m={} n={} k={} a={:?}/{:?} b={:?}/{:?} pad={} off={} {:?}",
        c.m, c.n, c.k, c.a_layout, c.a_dtype, c.b_layout, c.b_dtype, c.pad, c.offset, c.epilogue
    );
    let (ar, ac) = stored(c.m, c.k, c.a_layout);
    let (br, bc) = stored(c.k, c.n, c.b_layout);
    let (a_stride, b_stride, o_stride) = (ac + c.pad, bc + c.pad, c.n + c.pad);
    let a_len = c.offset + ar * a_stride;
    let b_len = c.offset + br * b_stride;
    let o_len = c.offset + c.m * o_stride;
    let (a_buf, a_w) = upload_as(b, c.a_dtype, &g.f32s(a_len, 1.0), &name)?;
    let (b_buf, b_w) = upload_as(b, c.b_dtype, &g.f32s(b_len, 1.0), &name)?;
    let out_init = g.f32s(o_len, 1.0);
    let mut out = b.upload_f32(&out_init).case(&name)?;
    let a_view = MatRef::strided(&a_buf, c.offset, ar, ac, a_stride).case(&name)?;
    let b_view = MatRef::strided(&b_buf, c.offset, br, bc, b_stride).case(&name)?;
    b.matmul(
        a_view,
        c.a_layout,
        b_view,
        c.b_layout,
        MatMut::strided(&mut out, c.offset, c.m, c.n, o_stride).case(&name)?,
        c.epilogue,
    )
    .case(&name)?;
    let a_d = Dense::from_view(&a_w, c.offset, ar, ac, a_stride);
    let b_d = Dense::from_view(&b_w, c.offset, br, bc, b_stride);
    let (prod, mag) = oracle::matmul(&a_d, c.a_layout, &b_d, c.b_layout);
    let alpha = f64::from(c.epilogue.alpha);
    let mut want = wide(&out_init);
    let mut scale: Vec<f64> = want.iter().map(|v| v.abs()).collect();
    for i in 0..c.m {
        for j in 0..c.n {
            let o = c.offset + i * o_stride + j;
            let p = alpha * prod.at(i, j);
            let s = alpha.abs() * mag[i * c.n + j];
            match c.epilogue.accumulate {
                Accumulate::Overwrite => {
                    want[o] = p;
                    scale[o] = s;
                }
                Accumulate::Add => {
                    scale[o] = s + want[o].abs();
                    want[o] += p;
                }
            }
        }
    }
    Compare::new(&name, "out")
        .tol(tol(Op::Matmul, c.a_dtype))
        .terms(c.k)
        .scale(&scale)
        .run(&b.download_f32(&out).case(&name)?, &want)?;
    if c.offset == 0 && c.pad == 0 && c.epilogue == Epilogue::OVERWRITE {
        let fresh = b
            .matmul_new(a_view, c.a_layout, b_view, c.b_layout)
            .case(&name)?;
        Compare::new(&name, "matmul_new")
            .tol(tol(Op::Matmul, c.a_dtype))
            .terms(c.k)
            .scale(&mag)
            .run(&b.download_f32(&fresh).case(&name)?, &prod.data)?;
    }
    Ok(())
}

fn dense(m: usize, n: usize, k: usize, a_layout: Layout, b_layout: Layout) -> Case {
    Case {
        m,
        n,
        k,
        a_layout,
        b_layout,
        a_dtype: DType::F32,
        b_dtype: DType::F32,
        pad: 0,
        offset: 0,
        epilogue: Epilogue::OVERWRITE,
    }
}

/// Every layout pair over sizes 1, odd, tile-sized and large-odd.
///
/// # Errors
/// A [`crate::suite::Mismatch`] describing the worst element.
pub fn matmul_layouts<B: Backend>(b: &B) -> CheckResult {
    let mut g = Gen::for_check("matmul_layouts");
    for (m, n, k) in [
        (1, 1, 1),
        (3, 5, 7),
        (17, 33, 65),
        (64, 64, 64),
        (130, 67, 257),
    ] {
        for a_layout in LAYOUTS {
            for b_layout in LAYOUTS {
                run_case(b, &mut g, &dense(m, n, k, a_layout, b_layout))?;
            }
        }
    }
    Ok(())
}

/// Strided views with offsets for all three operands, alpha != 1, overwrite and accumulate.
///
/// # Errors
/// A [`crate::suite::Mismatch`] describing the worst element.
pub fn matmul_strided_epilogue<B: Backend>(b: &B) -> CheckResult {
    let mut g = Gen::for_check("matmul_strided_epilogue");
    for (m, n, k) in [(1, 1, 1), (5, 9, 13), (67, 33, 129)] {
        for a_layout in LAYOUTS {
            for b_layout in LAYOUTS {
                for epilogue in [
                    Epilogue::ADD,
                    Epilogue {
                        alpha: -0.75,
                        accumulate: Accumulate::Overwrite,
                    },
                    Epilogue {
                        alpha: 1.5,
                        accumulate: Accumulate::Add,
                    },
                ] {
                    let mut c = dense(m, n, k, a_layout, b_layout);
                    c.pad = 3;
                    c.offset = 5;
                    c.epilogue = epilogue;
                    run_case(b, &mut g, &c)?;
                }
            }
        }
    }
    Ok(())
}

/// bf16 and f16 operands (weights are stored in half precision), f32 output.
///
/// # Errors
/// A [`crate::suite::Mismatch`] describing the worst element.
pub fn matmul_half_inputs<B: Backend>(b: &B) -> CheckResult {
    let mut g = Gen::for_check("matmul_half_inputs");
    for (m, n, k) in [(1, 1, 1), (7, 13, 33), (33, 65, 129)] {
        for (a_dtype, b_dtype) in [
            (DType::F32, DType::Bf16),
            (DType::F32, DType::F16),
            (DType::Bf16, DType::Bf16),
            (DType::F16, DType::F32),
        ] {
            for b_layout in LAYOUTS {
                let mut c = dense(m, n, k, Layout::AsStored, b_layout);
                c.a_dtype = a_dtype;
                c.b_dtype = b_dtype;
                c.offset = 1;
                c.pad = 1;
                run_case(b, &mut g, &c)?;
            }
        }
    }
    Ok(())
}

/// Empty dimensions: `m = 0` and `n = 0` leave the output alone; `k = 0` writes zeros
/// (overwrite) or leaves it alone (accumulate).
///
/// # Errors
/// A [`crate::suite::Mismatch`] describing the worst element.
pub fn matmul_empty_dims<B: Backend>(b: &B) -> CheckResult {
    let mut g = Gen::for_check("matmul_empty_dims");
    for (m, n, k) in [(0, 5, 3), (4, 0, 3), (4, 5, 0), (0, 0, 0)] {
        for epilogue in [Epilogue::OVERWRITE, Epilogue::ADD] {
            let mut c = dense(m, n, k, Layout::AsStored, Layout::Transposed);
            c.epilogue = epilogue;
            c.pad = 1;
            run_case(b, &mut g, &c)?;
        }
    }
    Ok(())
}

/// Inner dimensions that differ and outputs of the wrong shape are errors.
///
/// # Errors
/// A [`crate::suite::Mismatch`] if bad input is accepted.
pub fn matmul_rejects_bad_shapes<B: Backend>(b: &B) -> CheckResult {
    let a = b.upload_f32(&[1.0; 6]).case("setup")?;
    let x = b.upload_f32(&[1.0; 12]).case("setup")?;
    let mut out = b.upload_f32(&[0.0; 8]).case("setup")?;
    expect_err(
        "2x3 times 4x3",
        b.matmul(
            MatRef::new(&a, 2, 3).case("view")?,
            Layout::AsStored,
            MatRef::new(&x, 4, 3).case("view")?,
            Layout::AsStored,
            MatMut::new(&mut out, 2, 4).case("view")?,
            Epilogue::OVERWRITE,
        ),
        is_shape,
    )?;
    expect_err(
        "2x3 times (4x3)^T into 4x2",
        b.matmul(
            MatRef::new(&a, 2, 3).case("view")?,
            Layout::AsStored,
            MatRef::new(&x, 4, 3).case("view")?,
            Layout::Transposed,
            MatMut::new(&mut out, 4, 2).case("view")?,
            Epilogue::OVERWRITE,
        ),
        is_shape,
    )
}

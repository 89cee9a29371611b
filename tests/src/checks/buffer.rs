//! Buffers: uploads, downloads, zero-filled allocation, row copies.

use axpo_core::backend::{Backend, DType, DeviceBuffer, HostData, MatMut, MatRef};
use half::{bf16, f16};

use crate::r#gen::Gen;
use crate::suite::{
    CheckResult, Compare, Context, FLOAT_DTYPES, expect_err, fail, is_dtype, is_shape, upload_as,
};
use crate::tolerance::tol;
use axpo_core::backend::Op;

/// Lengths every buffer check sweeps: empty, one, odd, above any workgroup, and large.
pub const LENGTHS: [usize; 5] = [0, 1, 7, 4099, 70_001];

fn check_meta<B: Backend>(buf: &B::Buffer, dtype: DType, len: usize, case: &str) -> CheckResult {
    if buf.dtype() != dtype || buf.len() != len {
        return fail(
            case,
            format!(
                "buffer reports {:?} x {}, expected {dtype:?} x {len}",
                buf.dtype(),
                buf.len()
            ),
        );
    }
    Ok(())
}

/// f32 and u32 uploads read back bit-exactly; `zeros` of every type reads back zeros.
///
/// # Errors
/// A [`crate::suite::Mismatch`] describing the first difference.
pub fn upload_roundtrip<B: Backend>(b: &B) -> CheckResult {
    let mut g = Gen::for_check("upload_roundtrip");
    for n in LENGTHS {
        let case = format!("n={n}");
        let v = g.f32s(n, 10.0);
        let buf = b.upload_f32(&v).case(&case)?;
        check_meta::<B>(&buf, DType::F32, n, &case)?;
        let back = b.download_f32(&buf).case(&case)?;
        if back
            .iter()
            .map(|x| x.to_bits())
            .ne(v.iter().map(|x| x.to_bits()))
        {
            return fail(&case, "f32 upload/download is not bit-exact");
        }
        let u = g.u32s(n);
        let buf = b.upload_u32(&u).case(&case)?;
        check_meta::<B>(&buf, DType::U32, n, &case)?;
        if b.download_u32(&buf).case(&case)? != u {
            return fail(&case, "u32 upload/download differs");
        }
        for dtype in [DType::F32, DType::F16, DType::Bf16] {
            let z = b.zeros(dtype, n).case(&case)?;
            check_meta::<B>(&z, dtype, n, &case)?;
            if b.download_f32(&z).case(&case)?.iter().any(|&x| x != 0.0) {
                return fail(&case, format!("zeros({dtype:?}) holds a non-zero value"));
            }
        }
        let z = b.zeros(DType::U32, n).case(&case)?;
        check_meta::<B>(&z, DType::U32, n, &case)?;
        if b.download_u32(&z).case(&case)?.iter().any(|&x| x != 0) {
            return fail(&case, "zeros(U32) holds a non-zero value");
        }
    }
    Ok(())
}

/// bf16 and f16 uploads read back as exactly their f32 values (odd lengths included: two
/// halves share a 32-bit word on GPUs).
///
/// # Errors
/// A [`crate::suite::Mismatch`] describing the first difference.
pub fn upload_half_types<B: Backend>(b: &B) -> CheckResult {
    let mut g = Gen::for_check("upload_half_types");
    for n in LENGTHS {
        let case = format!("n={n}");
        let h: Vec<bf16> = g.bf16s(n, 100.0);
        let buf = b.upload(HostData::Bf16(&h)).case(&case)?;
        check_meta::<B>(&buf, DType::Bf16, n, &case)?;
        let want: Vec<f64> = h.iter().map(|x| f64::from(x.to_f32())).collect();
        Compare::new(&case, "bf16").run(&b.download_f32(&buf).case(&case)?, &want)?;
        let h: Vec<f16> = g.f16s(n, 100.0);
        let buf = b.upload(HostData::F16(&h)).case(&case)?;
        check_meta::<B>(&buf, DType::F16, n, &case)?;
        let want: Vec<f64> = h.iter().map(|x| f64::from(x.to_f32())).collect();
        Compare::new(&case, "f16").run(&b.download_f32(&buf).case(&case)?, &want)?;
    }
    Ok(())
}

/// Downloading a float buffer as u32, or a u32 buffer as f32, is an error.
///
/// # Errors
/// A [`crate::suite::Mismatch`] if a download succeeds or panics.
pub fn download_rejects_wrong_dtype<B: Backend>(b: &B) -> CheckResult {
    let f = b.upload_f32(&[1.5, 2.5, 3.5]).case("setup")?;
    expect_err("download_u32(f32)", b.download_u32(&f), is_dtype)?;
    let u = b.upload_u32(&[1, 2, 3]).case("setup")?;
    expect_err("download_f32(u32)", b.download_f32(&u), is_dtype)
}

/// A strided copy case: `(rows, cols, src offset, src stride, dst offset, dst stride)`.
const COPY_CASES: [(usize, usize, usize, usize, usize, usize); 6] = [
    (0, 5, 0, 5, 0, 5),
    (1, 1, 0, 1, 0, 1),
    (3, 7, 2, 9, 1, 8),
    (4, 6, 1, 6, 3, 6),
    (257, 33, 5, 40, 3, 35),
    (2, 4099, 1, 4100, 7, 4111),
];

fn span(off: usize, rows: usize, cols: usize, stride: usize) -> usize {
    if rows == 0 {
        off
    } else {
        off + (rows - 1) * stride + cols
    }
}

/// The destination after copying the view of `src` into the view of `dst`.
fn expected_copy(
    src: &[f64],
    dst: &[f64],
    (rows, cols, so, ss, d_off, ds): (usize, usize, usize, usize, usize, usize),
) -> Vec<f64> {
    let mut out = dst.to_vec();
    for r in 0..rows {
        for c in 0..cols {
            out[d_off + r * ds + c] = src[so + r * ss + c];
        }
    }
    out
}

/// Strided copies between f32 destinations and f32/bf16/f16 sources, and between u32
/// buffers; elements outside the destination view are untouched.
///
/// # Errors
/// A [`crate::suite::Mismatch`] describing the first difference.
pub fn copy_rows_strided<B: Backend>(b: &B) -> CheckResult {
    let mut g = Gen::for_check("copy_rows_strided");
    for shape in COPY_CASES {
        let (rows, cols, so, ss, d_off, ds) = shape;
        for dtype in FLOAT_DTYPES {
            let case =
                format!("rows={rows} cols={cols} src=({so},{ss}) dst=({d_off},{ds}) {dtype:?}");
            let (src, src_w) =
                upload_as(b, dtype, &g.f32s(span(so, rows, cols, ss) + 2, 4.0), &case)?;
            let dst_v = g.f32s(span(d_off, rows, cols, ds) + 3, 4.0);
            let mut dst = b.upload_f32(&dst_v).case(&case)?;
            b.copy_rows(
                MatRef::strided(&src, so, rows, cols, ss).case(&case)?,
                MatMut::strided(&mut dst, d_off, rows, cols, ds).case(&case)?,
            )
            .case(&case)?;
            let want = expected_copy(&src_w, &crate::r#gen::wide(&dst_v), shape);
            Compare::new(&case, "dst").run(&b.download_f32(&dst).case(&case)?, &want)?;
        }
        let case = format!("rows={rows} cols={cols} u32");
        let src_v = g.u32s(span(so, rows, cols, ss) + 1);
        let dst_v = g.u32s(span(d_off, rows, cols, ds) + 1);
        let src = b.upload_u32(&src_v).case(&case)?;
        let mut dst = b.upload_u32(&dst_v).case(&case)?;
        b.copy_rows(
            MatRef::strided(&src, so, rows, cols, ss).case(&case)?,
            MatMut::strided(&mut dst, d_off, rows, cols, ds).case(&case)?,
        )
        .case(&case)?;
        let mut want = dst_v.clone();
        for r in 0..rows {
            for c in 0..cols {
                want[d_off + r * ds + c] = src_v[so + r * ss + c];
            }
        }
        if b.download_u32(&dst).case(&case)? != want {
            return fail(&case, "u32 copy differs");
        }
    }
    Ok(())
}

/// Strided copies from f32 into bf16 and f16 destinations (rounding once), neighbours of the
/// view untouched (two halves share a word on GPUs: odd offsets and strides matter).
///
/// # Errors
/// A [`crate::suite::Mismatch`] describing the first difference.
pub fn copy_rows_to_half<B: Backend>(b: &B) -> CheckResult {
    let mut g = Gen::for_check("copy_rows_to_half");
    for shape in COPY_CASES {
        let (rows, cols, so, ss, d_off, ds) = shape;
        for dtype in [DType::Bf16, DType::F16] {
            let case =
                format!("rows={rows} cols={cols} src=({so},{ss}) dst=({d_off},{ds}) -> {dtype:?}");
            let src_v = g.f32s(span(so, rows, cols, ss) + 1, 4.0);
            let src = b.upload_f32(&src_v).case(&case)?;
            let (mut dst, dst_w) = upload_as(
                b,
                dtype,
                &g.f32s(span(d_off, rows, cols, ds) + 3, 4.0),
                &case,
            )?;
            b.copy_rows(
                MatRef::strided(&src, so, rows, cols, ss).case(&case)?,
                MatMut::strided(&mut dst, d_off, rows, cols, ds).case(&case)?,
            )
            .case(&case)?;
            let want = expected_copy(&crate::r#gen::wide(&src_v), &dst_w, shape);
            Compare::new(&case, "dst")
                .tol(tol(Op::CopyRows, dtype))
                .run(&b.download_f32(&dst).case(&case)?, &want)?;
        }
    }
    Ok(())
}

/// Shape mismatches and integer/float mixes are errors.
///
/// # Errors
/// A [`crate::suite::Mismatch`] if bad input is accepted.
pub fn copy_rows_rejects_bad_input<B: Backend>(b: &B) -> CheckResult {
    let src = b.upload_f32(&[1.0; 12]).case("setup")?;
    let mut dst = b.upload_f32(&[2.0; 12]).case("setup")?;
    expect_err(
        "3x4 into 4x3",
        b.copy_rows(
            MatRef::new(&src, 3, 4).case("view")?,
            MatMut::new(&mut dst, 4, 3).case("view")?,
        ),
        is_shape,
    )?;
    let u = b.upload_u32(&[1; 12]).case("setup")?;
    expect_err(
        "u32 into f32",
        b.copy_rows(
            MatRef::new(&u, 3, 4).case("view")?,
            MatMut::new(&mut dst, 3, 4).case("view")?,
        ),
        is_dtype,
    )?;
    let mut du = b.upload_u32(&[1; 12]).case("setup")?;
    expect_err(
        "f32 into u32",
        b.copy_rows(
            MatRef::new(&src, 3, 4).case("view")?,
            MatMut::new(&mut du, 3, 4).case("view")?,
        ),
        is_dtype,
    )
}

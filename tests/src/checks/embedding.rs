//! Row gathers (embedding lookup) and scatters (image-embedding merge, DeepStack injection).

use axpo_core::backend::{Backend, DType, MatMut, MatRef, Op, ScatterMode};

use crate::r#gen::{Gen, wide};
use crate::suite::{
    CheckResult, Compare, Context, FLOAT_DTYPES, expect_err, is_out_of_range, is_shape, upload_as,
};
use crate::tolerance::tol;

/// `out[i] = table[ids[i]]` from strided f32/bf16/f16 tables, ids with repeats, the first and
/// the last row.
///
/// # Errors
/// A [`crate::suite::Mismatch`] describing the first difference.
pub fn gather_rows<B: Backend>(b: &B) -> CheckResult {
    let mut g = Gen::for_check("gather_rows");
    for (rows, cols, n) in [
        (1, 1, 0),
        (1, 1, 1),
        (7, 5, 9),
        (4099, 33, 1000),
        (3, 2051, 5),
    ] {
        for dtype in FLOAT_DTYPES {
            let case = format!("table={rows}x{cols} ids={n} {dtype:?}");
            let (stride, off) = (cols + 3, 2);
            let (t, tw) = upload_as(b, dtype, &g.f32s(off + rows * stride, 2.0), &case)?;
            let mut ids = g.ids(n, rows);
            if n >= 2 {
                ids[0] = (rows - 1) as u32;
                ids[1] = 0;
            }
            let out = b
                .gather_rows(
                    MatRef::strided(&t, off, rows, cols, stride).case(&case)?,
                    &ids,
                )
                .case(&case)?;
            let want: Vec<f64> = ids
                .iter()
                .flat_map(|&i| {
                    let s = off + i as usize * stride;
                    tw[s..s + cols].to_vec()
                })
                .collect();
            Compare::new(&case, "out")
                .tol(tol(Op::GatherRows, dtype))
                .run(&b.download_f32(&out).case(&case)?, &want)?;
        }
    }
    Ok(())
}

/// `dst[rows[i]] (=|+=) src[i]` into a strided f32 destination; `Replace` with distinct rows,
/// `Add` with repeated rows (their contributions sum).
///
/// # Errors
/// A [`crate::suite::Mismatch`] describing the worst element.
pub fn scatter_rows<B: Backend>(b: &B) -> CheckResult {
    let mut g = Gen::for_check("scatter_rows");
    for (dst_rows, cols, n) in [
        (1, 1, 0),
        (1, 1, 1),
        (9, 5, 4),
        (1031, 17, 300),
        (4, 2049, 3),
    ] {
        for mode in [ScatterMode::Replace, ScatterMode::Add] {
            for dtype in [DType::F32, DType::Bf16] {
                let case = format!("dst={dst_rows}x{cols} n={n} {mode:?} src={dtype:?}");
                let (stride, off) = (cols + 2, 1);
                let d0 = g.f32s(off + dst_rows * stride, 2.0);
                let mut dst = b.upload_f32(&d0).case(&case)?;
                let (src, sw) = upload_as(b, dtype, &g.f32s(n * cols, 2.0), &case)?;
                let rows: Vec<u32> = match mode {
                    ScatterMode::Replace => {
                        // Distinct rows: a seeded shuffle of 0..dst_rows, first n.
                        let mut all: Vec<u32> = (0..dst_rows as u32).collect();
                        for i in (1..all.len()).rev() {
                            all.swap(i, g.below(i + 1));
                        }
                        all.truncate(n);
                        all
                    }
                    ScatterMode::Add => g.ids(n, dst_rows.div_ceil(3).max(1)),
                };
                b.scatter_rows(
                    MatMut::strided(&mut dst, off, dst_rows, cols, stride).case(&case)?,
                    &rows,
                    MatRef::new(&src, n, cols).case(&case)?,
                    mode,
                )
                .case(&case)?;
                let mut want = wide(&d0);
                let mut scale: Vec<f64> = want.iter().map(|v| v.abs()).collect();
                let mut multiplicity = vec![0usize; dst_rows];
                for (i, &r) in rows.iter().enumerate() {
                    multiplicity[r as usize] += 1;
                    for c in 0..cols {
                        let o = off + r as usize * stride + c;
                        let s = sw[i * cols + c];
                        match mode {
                            ScatterMode::Replace => {
                                want[o] = s;
                                scale[o] = s.abs();
                            }
                            _ => {
                                want[o] += s;
                                scale[o] += s.abs();
                            }
                        }
                    }
                }
                let terms = multiplicity.iter().copied().max().unwrap_or(0);
                Compare::new(&case, "dst")
                    .tol(tol(Op::ScatterRows, dtype))
                    .terms(terms)
                    .scale(&scale)
                    .run(&b.download_f32(&dst).case(&case)?, &want)?;
            }
        }
    }
    Ok(())
}

/// Ids outside the table and rows outside the destination are `TargetOutOfRange`; a width
/// mismatch is a shape error.
///
/// # Errors
/// A [`crate::suite::Mismatch`] if bad input is accepted.
pub fn embedding_rejects_out_of_range<B: Backend>(b: &B) -> CheckResult {
    let t = b.upload_f32(&[1.0; 12]).case("setup")?;
    let tv = MatRef::new(&t, 4, 3).case("view")?;
    expect_err(
        "gather id 4 of 4 rows",
        b.gather_rows(tv, &[0, 4]),
        is_out_of_range,
    )?;
    let mut d = b.upload_f32(&[1.0; 12]).case("setup")?;
    let src = b.upload_f32(&[2.0; 6]).case("setup")?;
    expect_err(
        "scatter row 4 of 4",
        b.scatter_rows(
            MatMut::new(&mut d, 4, 3).case("view")?,
            &[1, 4],
            MatRef::new(&src, 2, 3).case("view")?,
            ScatterMode::Replace,
        ),
        is_out_of_range,
    )?;
    expect_err(
        "scatter 3 rows listed, 2 given",
        b.scatter_rows(
            MatMut::new(&mut d, 4, 3).case("view")?,
            &[1, 2, 3],
            MatRef::new(&src, 2, 3).case("view")?,
            ScatterMode::Add,
        ),
        is_shape,
    )?;
    expect_err(
        "scatter width 2 into width 3",
        b.scatter_rows(
            MatMut::new(&mut d, 4, 3).case("view")?,
            &[1, 2, 3],
            MatRef::new(&src, 3, 2).case("view")?,
            ScatterMode::Add,
        ),
        is_shape,
    )
}

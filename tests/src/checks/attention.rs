//! Masked softmax and multi-head attention (full, causal with and without a cache, per-image
//! segments, grouped key/value heads).

use axpo_core::backend::{AttentionMask, AttentionSpec, Backend, DType, MatRef, Op};

use crate::r#gen::{Gen, wide};
use crate::oracle::{self, Dense};
use crate::suite::{CheckResult, Compare, Context, expect_err, is_shape, upload_as};
use crate::tolerance::tol;

/// Row softmax under every mask, with widths above any workgroup and empty segments.
///
/// # Errors
/// A [`crate::suite::Mismatch`] describing the worst element.
pub fn masked_softmax<B: Backend>(b: &B) -> CheckResult {
    let mut g = Gen::for_check("masked_softmax");
    let seg_small: &[usize] = &[0, 3, 3, 8];
    let seg_big: &[usize] = &[0, 1, 40, 41, 300, 301];
    let cases: [(usize, usize, AttentionMask<'_>); 9] = [
        (0, 5, AttentionMask::Full),
        (1, 1, AttentionMask::Full),
        (3, 5, AttentionMask::Full),
        (33, 1025, AttentionMask::Full),
        (7, 7, AttentionMask::Causal { past: 0 }),
        (5, 9, AttentionMask::Causal { past: 4 }),
        (17, 117, AttentionMask::Causal { past: 100 }),
        (8, 8, AttentionMask::Segments(seg_small)),
        (301, 301, AttentionMask::Segments(seg_big)),
    ];
    for (rows, cols, mask) in cases {
        let case = format!("rows={rows} cols={cols} {mask:?}");
        let s0 = g.f32s(rows * cols, 4.0);
        let mut s = b.upload_f32(&s0).case(&case)?;
        let scale = 0.35f32;
        b.masked_softmax(&mut s, rows, cols, mask, scale)
            .case(&case)?;
        let want = oracle::masked_softmax(&wide(&s0), rows, cols, mask, f64::from(scale));
        Compare::new(&case, "p")
            .tol(tol(Op::MaskedSoftmax, DType::F32))
            .terms(cols)
            .run(&b.download_f32(&s).case(&case)?, &want)?;
    }
    Ok(())
}

/// An attention case.
struct Case<'a> {
    n: usize,
    kv: usize,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
    mask: AttentionMask<'a>,
    dtype: DType,
}

/// Full, causal (with a cache), segment masks; grouped heads; q/k/v as column slices of one
/// fused projection (strided views); f32 and bf16 inputs.
///
/// # Errors
/// A [`crate::suite::Mismatch`] describing the worst element.
pub fn attention<B: Backend>(b: &B) -> CheckResult {
    let mut g = Gen::for_check("attention");
    let segs: &[usize] = &[0, 4, 4, 9];
    let segs_big: &[usize] = &[0, 17, 70];
    let cases = [
        Case {
            n: 0,
            kv: 3,
            heads: 2,
            kv_heads: 1,
            head_dim: 4,
            mask: AttentionMask::Full,
            dtype: DType::F32,
        },
        Case {
            n: 1,
            kv: 1,
            heads: 1,
            kv_heads: 1,
            head_dim: 2,
            mask: AttentionMask::Full,
            dtype: DType::F32,
        },
        Case {
            n: 5,
            kv: 7,
            heads: 3,
            kv_heads: 3,
            head_dim: 6,
            mask: AttentionMask::Full,
            dtype: DType::F32,
        },
        Case {
            n: 5,
            kv: 5,
            heads: 2,
            kv_heads: 1,
            head_dim: 8,
            mask: AttentionMask::Causal { past: 0 },
            dtype: DType::F32,
        },
        Case {
            n: 4,
            kv: 9,
            heads: 4,
            kv_heads: 2,
            head_dim: 16,
            mask: AttentionMask::Causal { past: 5 },
            dtype: DType::F32,
        },
        Case {
            n: 9,
            kv: 9,
            heads: 3,
            kv_heads: 3,
            head_dim: 10,
            mask: AttentionMask::Segments(segs),
            dtype: DType::F32,
        },
        Case {
            n: 37,
            kv: 37,
            heads: 4,
            kv_heads: 1,
            head_dim: 64,
            mask: AttentionMask::Causal { past: 0 },
            dtype: DType::F32,
        },
        Case {
            n: 70,
            kv: 70,
            heads: 2,
            kv_heads: 2,
            head_dim: 24,
            mask: AttentionMask::Segments(segs_big),
            dtype: DType::Bf16,
        },
        Case {
            n: 3,
            kv: 131,
            heads: 8,
            kv_heads: 2,
            head_dim: 32,
            mask: AttentionMask::Causal { past: 128 },
            dtype: DType::Bf16,
        },
    ];
    for c in cases {
        let case = format!(
            "n={} kv={} heads={}/{} head_dim={} {:?} {:?}",
            c.n, c.kv, c.heads, c.kv_heads, c.head_dim, c.mask, c.dtype
        );
        let (qw, kw) = (c.heads * c.head_dim, c.kv_heads * c.head_dim);
        // Queries: a column slice at offset 3 of a wider matrix; keys and values: two column
        // slices of one fused k|v projection.
        let q_stride = qw + 5;
        let kv_stride = 2 * kw + 1;
        let (qb, q_all) = upload_as(b, c.dtype, &g.f32s(3 + c.n * q_stride, 1.0), &case)?;
        let (kvb, kv_all) = upload_as(b, c.dtype, &g.f32s(c.kv * kv_stride, 1.0), &case)?;
        let q = MatRef::strided(&qb, 3, c.n, qw, q_stride).case(&case)?;
        let k = MatRef::strided(&kvb, 0, c.kv, kw, kv_stride).case(&case)?;
        let v = MatRef::strided(&kvb, kw, c.kv, kw, kv_stride).case(&case)?;
        let scale = 1.0 / (c.head_dim as f32).sqrt();
        let spec = AttentionSpec {
            heads: c.heads,
            kv_heads: c.kv_heads,
            head_dim: c.head_dim,
            scale,
            mask: c.mask,
        };
        let out = b.attention(q, k, v, spec).case(&case)?;
        let (want, mag) = oracle::attention(
            &Dense::from_view(&q_all, 3, c.n, qw, q_stride),
            &Dense::from_view(&kv_all, 0, c.kv, kw, kv_stride),
            &Dense::from_view(&kv_all, kw, c.kv, kw, kv_stride),
            c.heads,
            c.kv_heads,
            c.head_dim,
            f64::from(scale),
            c.mask,
        );
        Compare::new(&case, "out")
            .tol(tol(Op::Attention, c.dtype))
            .terms(c.kv)
            .scale(&mag)
            .run(&b.download_f32(&out).case(&case)?, &want)?;
    }
    Ok(())
}

/// Head counts that do not divide, widths that do not match, and masks that do not fit are
/// errors.
///
/// # Errors
/// A [`crate::suite::Mismatch`] if bad input is accepted.
pub fn attention_rejects_bad_shapes<B: Backend>(b: &B) -> CheckResult {
    let q = b.upload_f32(&[0.5; 4 * 12]).case("setup")?;
    let kv = b.upload_f32(&[0.5; 6 * 8]).case("setup")?;
    let qv = MatRef::new(&q, 4, 12).case("view")?;
    let kvv = MatRef::new(&kv, 6, 8).case("view")?;
    let spec = |heads, kv_heads, head_dim, mask| AttentionSpec {
        heads,
        kv_heads,
        head_dim,
        scale: 0.5,
        mask,
    };
    expect_err(
        "3 heads over 2 kv heads",
        b.attention(qv, kvv, kvv, spec(3, 2, 4, AttentionMask::Full)),
        is_shape,
    )?;
    expect_err(
        "query width 12 vs 2 x 4",
        b.attention(qv, kvv, kvv, spec(2, 2, 4, AttentionMask::Full)),
        is_shape,
    )?;
    expect_err(
        "causal: 6 keys for 4 queries with past 0",
        b.attention(
            qv,
            kvv,
            kvv,
            spec(3, 1, 4, AttentionMask::Causal { past: 0 }),
        ),
        is_shape,
    )?;
    expect_err(
        "segments over 6 keys, 4 queries",
        b.attention(
            qv,
            kvv,
            kvv,
            spec(3, 1, 4, AttentionMask::Segments(&[0, 2, 4])),
        ),
        is_shape,
    )?;
    let mut s = b.upload_f32(&[0.5; 16]).case("setup")?;
    expect_err(
        "masked_softmax 16 values as 3x5",
        b.masked_softmax(&mut s, 3, 5, AttentionMask::Full, 1.0),
        is_shape,
    )?;
    expect_err(
        "segments not ending at the row count",
        b.masked_softmax(&mut s, 4, 4, AttentionMask::Segments(&[0, 2, 3]), 1.0),
        is_shape,
    )?;
    expect_err(
        "decreasing segment bounds",
        b.masked_softmax(&mut s, 4, 4, AttentionMask::Segments(&[0, 3, 2, 4]), 1.0),
        is_shape,
    )
}

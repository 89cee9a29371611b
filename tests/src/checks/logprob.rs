//! The objective's op family: per-token statistics from logits (one pass, online softmax),
//! from hidden states and the head matrix (chunked over the vocabulary), and their backward.

use axpo_core::backend::{
    Backend, BackendTypes, DType, HostData, MatMut, MatRef, Op, STATE_WIDTH, StatsGrad, StatsState,
    TokenStats, VocabChunk, download_stats,
};

use crate::r#gen::{Gen, wide};
use crate::oracle::{self, Dense, RowStats};
use crate::suite::{
    CheckResult, Compare, Context, Mismatch, expect_err, fail, is_out_of_range, is_shape, upload_as,
};
use crate::tolerance::{FD, FD_STEP, logit_slack, stats_terms, tol};

/// Random logits `3 N(0, 1)`; in rows `r % 3 == 1` about 30% of the entries are `-inf` (a
/// grammar mask), never the target; if `masked_target_row` names a row, its target is `-inf`
/// too (its log-probability is then `-inf`). Every row keeps at least one finite logit.
fn logits(
    g: &mut Gen,
    rows: usize,
    vocab: usize,
    targets: &[u32],
    masked_target_row: Option<usize>,
) -> Vec<f32> {
    let mut z = g.f32s(rows * vocab, 3.0);
    for r in 0..rows {
        let t = targets[r] as usize;
        if r % 3 == 1 {
            for v in 0..vocab {
                if v != t && g.unit() < 0.3 {
                    z[r * vocab + v] = f32::NEG_INFINITY;
                }
            }
        }
        if masked_target_row == Some(r) && vocab > 1 {
            z[r * vocab + t] = f32::NEG_INFINITY;
            let other = (t + 1) % vocab;
            if z[r * vocab + other] == f32::NEG_INFINITY {
                z[r * vocab + other] = 1.0;
            }
        }
    }
    z
}

/// The oracle's statistics of every row of a dense matrix of logits.
fn oracle_stats(z: &Dense, targets: &[u32]) -> Vec<RowStats> {
    (0..z.rows)
        .map(|r| oracle::row_stats(&z.data[r * z.cols..(r + 1) * z.cols], targets[r] as usize))
        .collect()
}

/// Compares the four outputs with their scales (see `tolerance::tol(Op::TokenStats, ..)`).
fn compare_stats(
    case: &str,
    got: &[Vec<f32>; 4],
    want: &[RowStats],
    op: Op,
    dtype: DType,
    vocab: usize,
    slack: f64,
) -> CheckResult {
    let t = tol(op, dtype);
    let terms = stats_terms(vocab);
    let col = |f: fn(&RowStats) -> f64| want.iter().map(f).collect::<Vec<f64>>();
    let logp = col(|s| s.logp);
    let logp_scale = col(|s| 1.0 + (s.logp + s.lse).abs() + s.lse.abs());
    let ent = col(|s| s.entropy);
    let ent_scale = col(|s| 1.0 + s.sum.ln().abs() + (s.weighted / s.sum).abs());
    let p2 = col(|s| s.sum_p2);
    let p2_scale = col(|s| 3.0 * s.sum_p2);
    let lse = col(|s| s.lse);
    let lse_scale = col(|s| 1.0 + s.lse.abs());
    let cmp = |what, scale| {
        Compare::new(case, what)
            .tol(t)
            .terms(terms)
            .slack(slack)
            .scale(scale)
    };
    cmp("logp", &logp_scale).run(&got[0], &logp)?;
    cmp("entropy", &ent_scale).run(&got[1], &ent)?;
    cmp("sum_p2", &p2_scale).run(&got[2], &p2)?;
    cmp("lse", &lse_scale).run(&got[3], &lse)
}

/// A `token_stats` case: rows, vocabulary, logits type, strided view, masked-target row.
const STATS_CASES: [(usize, usize, DType, bool, Option<usize>); 9] = [
    (0, 5, DType::F32, false, None),
    (1, 1, DType::F32, false, None),
    (3, 7, DType::F32, true, None),
    (3, 7, DType::Bf16, false, None),
    (5, 4099, DType::F32, true, Some(2)),
    (5, 4099, DType::F16, true, None),
    (4, 4099, DType::Bf16, false, None),
    (2, 10_007, DType::F32, false, None),
    (129, 33, DType::F32, false, Some(5)),
];

/// Uploads logits as a view (dense, or at offset 1 with two padding columns).
fn upload_logits<B: Backend>(
    b: &B,
    dtype: DType,
    z: &[f32],
    rows: usize,
    vocab: usize,
    strided: bool,
    case: &str,
) -> Result<(B::Buffer, usize, usize, Dense), Mismatch> {
    let (off, stride) = if strided { (1, vocab + 2) } else { (0, vocab) };
    let mut flat = vec![0.5f32; off + rows * stride];
    for r in 0..rows {
        flat[off + r * stride..off + r * stride + vocab]
            .copy_from_slice(&z[r * vocab..(r + 1) * vocab]);
    }
    let (buf, w) = upload_as(b, dtype, &flat, case)?;
    let dense = Dense::from_view(&w, off, rows, vocab, stride);
    Ok((buf, off, stride, dense))
}

/// `token_stats` over empty, single, odd and large vocabularies, masked (`-inf`) logits,
/// strided views, f32/bf16/f16 logits.
///
/// # Errors
/// A [`crate::suite::Mismatch`] describing the worst element.
pub fn token_stats<B: Backend>(b: &B) -> CheckResult {
    let mut g = Gen::for_check("token_stats");
    for (rows, vocab, dtype, strided, masked) in STATS_CASES {
        let case = format!("rows={rows} vocab={vocab} {dtype:?} strided={strided}");
        let targets = g.ids(rows, vocab);
        let z = logits(&mut g, rows, vocab, &targets, masked);
        let (buf, off, stride, dense) = upload_logits(b, dtype, &z, rows, vocab, strided, &case)?;
        let view = MatRef::strided(&buf, off, rows, vocab, stride).case(&case)?;
        let stats = b.token_stats(view, &targets).case(&case)?;
        let got = download_stats(b, &stats).case(&case)?;
        compare_stats(
            &case,
            &got,
            &oracle_stats(&dense, &targets),
            Op::TokenStats,
            dtype,
            vocab,
            0.0,
        )?;
    }
    Ok(())
}

/// The online-softmax state contract: `stats_init` stores [`StatsState::INIT`]; folding the
/// vocabulary in uneven chunks (one of them all `-inf` for some rows) leaves the documented
/// state (max, sum, weighted, square, target) and `stats_finish` the statistics.
///
/// # Errors
/// A [`crate::suite::Mismatch`] describing the worst element.
pub fn stats_fold_chunks<B: Backend>(b: &B) -> CheckResult {
    let mut g = Gen::for_check("stats_fold_chunks");
    let (rows, vocab) = (7usize, 4099usize);
    let bounds = [0usize, 1000, 1001, 4099];
    for dtype in [DType::F32, DType::Bf16] {
        let case = format!("rows={rows} vocab={vocab} chunks={bounds:?} {dtype:?}");
        let targets: Vec<u32> = (0..rows)
            .map(|r| if r == 0 { 1000 } else { g.below(vocab) as u32 })
            .collect();
        let mut z = logits(&mut g, rows, vocab, &targets, None);
        for r in (1..rows).step_by(2) {
            if targets[r] != 1000 {
                z[r * vocab + 1000] = f32::NEG_INFINITY;
            }
        }
        let (buf, off, stride, dense) = upload_logits(b, dtype, &z, rows, vocab, true, &case)?;
        let t = b.upload_u32(&targets).case(&case)?;
        let mut state = b.stats_init(rows).case(&case)?;
        let init = b.download_f32(&state).case(&case)?;
        if init
            .chunks(STATE_WIDTH)
            .any(|c| c != StatsState::INIT.to_array().as_slice())
            || init.len() != rows * STATE_WIDTH
        {
            return fail(
                &case,
                format!("stats_init stored {init:?}, not INIT per row"),
            );
        }
        for w in bounds.windows(2) {
            let view = MatRef::strided(&buf, off + w[0], rows, w[1] - w[0], stride).case(&case)?;
            b.stats_fold(view, w[0], &t, &mut state).case(&case)?;
        }
        let want = oracle_stats(&dense, &targets);
        let st = b.download_f32(&state).case(&case)?;
        let slot = |k: usize| {
            st.iter()
                .skip(k)
                .step_by(STATE_WIDTH)
                .copied()
                .collect::<Vec<f32>>()
        };
        let terms = stats_terms(vocab);
        let tl = tol(Op::TokenStats, dtype);
        Compare::new(&case, "state.max")
            .run(&slot(0), &want.iter().map(|s| s.max).collect::<Vec<_>>())?;
        for (k, what, f) in [
            (
                1,
                "state.sum",
                (|s: &RowStats| s.sum) as fn(&RowStats) -> f64,
            ),
            (2, "state.weighted", |s: &RowStats| s.weighted),
            (3, "state.square", |s: &RowStats| s.square),
        ] {
            let w: Vec<f64> = want.iter().map(f).collect();
            Compare::new(&case, what)
                .tol(tl)
                .terms(terms)
                .run(&slot(k), &w)?;
        }
        let tz: Vec<f64> = (0..rows)
            .map(|r| dense.at(r, targets[r] as usize))
            .collect();
        Compare::new(&case, "state.target").run(&slot(4), &tz)?;
        let fin = b.stats_finish(&state, rows).case(&case)?;
        let got = download_stats(b, &fin).case(&case)?;
        compare_stats(&case, &got, &want, Op::TokenStats, dtype, vocab, 0.0)?;
    }
    Ok(())
}

/// A linear-head case: rows, hidden width, vocabulary, chunk, weight type.
const LINEAR_CASES: [(usize, usize, usize, usize, DType); 6] = [
    (0, 4, 9, 4, DType::F32),
    (1, 1, 1, 1, DType::F32),
    (3, 7, 13, 5, DType::F32),
    (5, 33, 4099, 1000, DType::Bf16),
    (17, 64, 517, 4096, DType::F32),
    (4, 16, 300, 7, DType::F16),
];

/// Hidden states (a strided view: offset 2, one padding column) and the head matrix.
pub(crate) struct Head<B: Backend> {
    pub(crate) hidden: B::Buffer,
    pub(crate) weight: B::Buffer,
    pub(crate) h: Dense,
    pub(crate) w: Dense,
    pub(crate) logits: Dense,
    pub(crate) max_dot: f64,
}

pub(crate) fn head<B: Backend>(
    b: &B,
    g: &mut Gen,
    n: usize,
    hd: usize,
    v: usize,
    dtype: DType,
    case: &str,
) -> Result<Head<B>, Mismatch> {
    let (hidden, hw) = upload_as(b, DType::F32, &g.f32s(2 + n * (hd + 1), 1.0), case)?;
    let scale = 2.0 / (hd as f64).sqrt();
    let (weight, ww) = upload_as(b, dtype, &g.f32s(v * hd, scale), case)?;
    let h = Dense::from_view(&hw, 2, n, hd, hd + 1);
    let w = Dense::from_view(&ww, 0, v, hd, hd);
    let (logits, mag) = oracle::head_logits(&h, &w);
    let max_dot = mag.iter().copied().fold(0.0, f64::max);
    Ok(Head {
        hidden,
        weight,
        h,
        w,
        logits,
        max_dot,
    })
}

/// `linear_token_stats` with chunks that do not divide the vocabulary, chunks larger than it,
/// a vocabulary above 4096, half-precision head matrices.
///
/// # Errors
/// A [`crate::suite::Mismatch`] describing the worst element.
pub fn linear_token_stats<B: Backend>(b: &B) -> CheckResult {
    let mut g = Gen::for_check("linear_token_stats");
    for (n, hd, v, chunk, dtype) in LINEAR_CASES {
        let case = format!("n={n} h={hd} v={v} chunk={chunk} w={dtype:?}");
        let hm = head(b, &mut g, n, hd, v, dtype, &case)?;
        let targets = g.ids(n, v);
        let stats = b
            .linear_token_stats(
                MatRef::strided(&hm.hidden, 2, n, hd, hd + 1).case(&case)?,
                MatRef::new(&hm.weight, v, hd).case(&case)?,
                &targets,
                VocabChunk(chunk),
            )
            .case(&case)?;
        let got = download_stats(b, &stats).case(&case)?;
        let slack = logit_slack(hd, hm.max_dot, v);
        compare_stats(
            &case,
            &got,
            &oracle_stats(&hm.logits, &targets),
            Op::LinearTokenStats,
            dtype,
            v,
            slack,
        )?;
    }
    Ok(())
}

/// Upstream gradients: `d_logp` random, `d_entropy` random or absent.
fn upstream(g: &mut Gen, rows: usize, with_entropy: bool) -> (Vec<f32>, Option<Vec<f32>>) {
    (g.f32s(rows, 1.0), with_entropy.then(|| g.f32s(rows, 0.5)))
}

/// Statistics uploaded for a backward check, with the rounded `lse` and `entropy`.
type GivenStats<B> = (TokenStats<<B as BackendTypes>::Buffer>, Vec<f64>, Vec<f64>);

/// Uploads the oracle's statistics (rounded to f32) as a [`TokenStats`], and returns the
/// rounded `lse` and `entropy` the backward sees.
fn upload_stats<B: Backend>(
    b: &B,
    want: &[RowStats],
    case: &str,
) -> Result<GivenStats<B>, Mismatch> {
    let f = |k: fn(&RowStats) -> f64| want.iter().map(|s| k(s) as f32).collect::<Vec<f32>>();
    let (lse, ent) = (f(|s| s.lse), f(|s| s.entropy));
    let stats = TokenStats {
        logp: b.upload_f32(&f(|s| s.logp)).case(case)?,
        entropy: b.upload_f32(&ent).case(case)?,
        sum_p2: b.upload_f32(&f(|s| s.sum_p2)).case(case)?,
        lse: b.upload_f32(&lse).case(case)?,
    };
    Ok((stats, wide(&lse), wide(&ent)))
}

/// The oracle's `d loss / d logits` for all rows, given `lse` and `entropy`.
pub(crate) fn oracle_grad(
    z: &Dense,
    targets: &[u32],
    lse: &[f64],
    ent: &[f64],
    gl: &[f32],
    ge: Option<&[f32]>,
) -> (Vec<f64>, Vec<f64>) {
    let (mut out, mut scale) = (Vec::new(), Vec::new());
    for r in 0..z.rows {
        let (o, s) = oracle::row_grad(
            &z.data[r * z.cols..(r + 1) * z.cols],
            targets[r] as usize,
            lse[r],
            ent[r],
            f64::from(gl[r]),
            ge.map_or(0.0, |e| f64::from(e[r])),
        );
        out.extend(o);
        scale.extend(s);
    }
    (out, scale)
}

/// Up to `count` sampled `(row, column)` positions, always including each sampled row's
/// target.
fn sample(
    g: &mut Gen,
    rows: usize,
    cols: usize,
    targets: &[u32],
    count: usize,
) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    if rows == 0 || cols == 0 {
        return out;
    }
    while out.len() < count {
        let r = g.below(rows);
        out.push((r, targets[r] as usize));
        out.push((r, g.below(cols)));
    }
    out
}

/// `token_stats_backward` with and without the entropy term: against the analytic oracle
/// (statistics given), then end to end (the backend's own statistics) against finite
/// differences of the forward oracle.
///
/// # Errors
/// A [`crate::suite::Mismatch`] describing the worst element.
pub fn token_stats_backward<B: Backend>(b: &B) -> CheckResult {
    let mut g = Gen::for_check("token_stats_backward");
    for (rows, vocab, dtype, strided, masked) in STATS_CASES {
        for with_entropy in [false, true] {
            let case = format!(
                "rows={rows} vocab={vocab} {dtype:?} strided={strided} d_entropy={with_entropy}"
            );
            let targets = g.ids(rows, vocab);
            let z = logits(&mut g, rows, vocab, &targets, masked);
            let (buf, off, stride, dense) =
                upload_logits(b, dtype, &z, rows, vocab, strided, &case)?;
            let view = MatRef::strided(&buf, off, rows, vocab, stride).case(&case)?;
            let (gl, ge) = upstream(&mut g, rows, with_entropy);
            let d_logp = b.upload_f32(&gl).case(&case)?;
            let d_ent = match &ge {
                Some(e) => Some(b.upload_f32(e).case(&case)?),
                None => None,
            };
            let grad = StatsGrad {
                d_logp: &d_logp,
                d_entropy: d_ent.as_ref(),
            };
            // 1. Analytic, with the oracle's statistics.
            let want = oracle_stats(&dense, &targets);
            let (stats, lse, ent) = upload_stats(b, &want, &case)?;
            let dz = b
                .token_stats_backward(view, &targets, &stats, grad)
                .case(&case)?;
            let (wg, scale) = oracle_grad(&dense, &targets, &lse, &ent, &gl, ge.as_deref());
            let got = b.download_f32(&dz).case(&case)?;
            Compare::new(&case, "dz (analytic)")
                .tol(tol(Op::TokenStatsBackward, dtype))
                .scale(&scale)
                .run(&got, &wg)?;
            // 2. End to end against finite differences of the oracle's loss.
            let own = b.token_stats(view, &targets).case(&case)?;
            let dz = b
                .token_stats_backward(view, &targets, &own, grad)
                .case(&case)?;
            let got = b.download_f32(&dz).case(&case)?;
            let mut fd_got = Vec::new();
            let mut fd_want = Vec::new();
            let mut fd_scale = Vec::new();
            for (r, c) in sample(&mut g, rows, vocab, &targets, 12) {
                let mut row = dense.data[r * vocab..(r + 1) * vocab].to_vec();
                // A masked logit has no derivative; a masked target makes the loss -inf.
                if row[c] == f64::NEG_INFINITY || row[targets[r] as usize] == f64::NEG_INFINITY {
                    continue;
                }
                let (t, l, e) = (
                    targets[r] as usize,
                    f64::from(gl[r]),
                    ge.as_ref().map_or(0.0, |e| f64::from(e[r])),
                );
                fd_want.push(oracle::central_difference(&mut row, c, FD_STEP, |x| {
                    oracle::row_loss(x, t, l, e)
                }));
                fd_got.push(got[r * vocab + c]);
                fd_scale.push(scale[r * vocab + c]);
            }
            Compare::new(&case, "dz (finite differences)")
                .tol(FD)
                .scale(&fd_scale)
                .run(&fd_got, &fd_want)?;
        }
    }
    Ok(())
}

/// The `stats_backward` primitive on one vocabulary chunk (`vocab_offset > 0`, the target
/// inside the chunk for some rows and outside for others) into a strided output; the
/// output's other elements untouched.
///
/// # Errors
/// A [`crate::suite::Mismatch`] describing the worst element.
pub fn stats_backward_chunk<B: Backend>(b: &B) -> CheckResult {
    let mut g = Gen::for_check("stats_backward_chunk");
    let (rows, vocab, v0, v1) = (9usize, 4099usize, 1500usize, 3001usize);
    for with_entropy in [false, true] {
        let case = format!("rows={rows} vocab={vocab} chunk={v0}..{v1} d_entropy={with_entropy}");
        let targets: Vec<u32> = (0..rows)
            .map(|r| {
                if r % 2 == 0 {
                    (v0 + g.below(v1 - v0)) as u32
                } else {
                    g.below(vocab) as u32
                }
            })
            .collect();
        let z = logits(&mut g, rows, vocab, &targets, None);
        let (buf, off, stride, dense) = upload_logits(b, DType::F32, &z, rows, vocab, true, &case)?;
        let want = oracle_stats(&dense, &targets);
        let (stats, lse, ent) = upload_stats(b, &want, &case)?;
        let (gl, ge) = upstream(&mut g, rows, with_entropy);
        let d_logp = b.upload_f32(&gl).case(&case)?;
        let d_ent = match &ge {
            Some(e) => Some(b.upload_f32(e).case(&case)?),
            None => None,
        };
        let t = b.upload_u32(&targets).case(&case)?;
        let w = v1 - v0;
        let (o_off, o_stride) = (3, w + 4);
        let out0 = g.f32s(o_off + rows * o_stride, 1.0);
        let mut out = b.upload_f32(&out0).case(&case)?;
        b.stats_backward(
            MatRef::strided(&buf, off + v0, rows, w, stride).case(&case)?,
            v0,
            &t,
            &stats,
            StatsGrad {
                d_logp: &d_logp,
                d_entropy: d_ent.as_ref(),
            },
            MatMut::strided(&mut out, o_off, rows, w, o_stride).case(&case)?,
        )
        .case(&case)?;
        let (full, full_scale) = oracle_grad(&dense, &targets, &lse, &ent, &gl, ge.as_deref());
        let mut want_out = wide(&out0);
        let mut scale: Vec<f64> = want_out.iter().map(|x| x.abs()).collect();
        for r in 0..rows {
            for c in 0..w {
                want_out[o_off + r * o_stride + c] = full[r * vocab + v0 + c];
                scale[o_off + r * o_stride + c] = full_scale[r * vocab + v0 + c];
            }
        }
        Compare::new(&case, "dz chunk")
            .tol(tol(Op::TokenStatsBackward, DType::F32))
            .scale(&scale)
            .run(&b.download_f32(&out).case(&case)?, &want_out)?;
    }
    Ok(())
}

/// The fused head backward: `d hidden` and `d W` against the analytic oracle (given the
/// backend's statistics) and against finite differences of the forward oracle.
///
/// # Errors
/// A [`crate::suite::Mismatch`] describing the worst element.
pub fn linear_token_stats_backward<B: Backend>(b: &B) -> CheckResult {
    let mut g = Gen::for_check("linear_token_stats_backward");
    for (n, hd, v, chunk, dtype) in LINEAR_CASES {
        for with_entropy in [false, true] {
            let case =
                format!("n={n} h={hd} v={v} chunk={chunk} w={dtype:?} d_entropy={with_entropy}");
            let hm = head(b, &mut g, n, hd, v, dtype, &case)?;
            let targets = g.ids(n, v);
            let hidden = MatRef::strided(&hm.hidden, 2, n, hd, hd + 1).case(&case)?;
            let weight = MatRef::new(&hm.weight, v, hd).case(&case)?;
            let stats = b
                .linear_token_stats(hidden, weight, &targets, VocabChunk(chunk))
                .case(&case)?;
            let (gl, ge) = upstream(&mut g, n, with_entropy);
            let d_logp = b.upload_f32(&gl).case(&case)?;
            let d_ent = match &ge {
                Some(e) => Some(b.upload_f32(e).case(&case)?),
                None => None,
            };
            let grads = b
                .linear_token_stats_backward(
                    hidden,
                    weight,
                    &targets,
                    &stats,
                    StatsGrad {
                        d_logp: &d_logp,
                        d_entropy: d_ent.as_ref(),
                    },
                    VocabChunk(chunk),
                )
                .case(&case)?;
            let lse = wide(&b.download_f32(&stats.lse).case(&case)?);
            let ent = wide(&b.download_f32(&stats.entropy).case(&case)?);
            let (dz, dz_scale) = oracle_grad(&hm.logits, &targets, &lse, &ent, &gl, ge.as_deref());
            // The backend's logits differ from the oracle's by at most delta each; the
            // gradient moves by at most 2 delta p (|g_logp| + |g_H| (|ln p| + H + 2)) <=
            // 2 delta * dz_scale (+ |g_logp| delta for the probability term).
            let delta = (hd as f64 + 2.0) * crate::tolerance::U * hm.max_dot;
            let dz_err: Vec<f64> = dz_scale.iter().map(|s| 2.0 * delta * (s + 1.0)).collect();
            let mut dh = vec![0.0; n * hd];
            let mut dh_scale = vec![0.0; n * hd];
            let mut dh_slack = vec![0.0; n * hd];
            let mut dw = vec![0.0; v * hd];
            let mut dw_scale = vec![0.0; v * hd];
            let mut dw_slack = vec![0.0; v * hd];
            for i in 0..n {
                for vv in 0..v {
                    let (d, s, e) = (dz[i * v + vv], dz_scale[i * v + vv], dz_err[i * v + vv]);
                    for j in 0..hd {
                        let (w, h) = (hm.w.at(vv, j), hm.h.at(i, j));
                        dh[i * hd + j] += d * w;
                        dh_scale[i * hd + j] += (s + d.abs()) * w.abs();
                        dh_slack[i * hd + j] += e * w.abs();
                        dw[vv * hd + j] += d * h;
                        dw_scale[vv * hd + j] += (s + d.abs()) * h.abs();
                        dw_slack[vv * hd + j] += e * h.abs();
                    }
                }
            }
            let t = tol(Op::LinearTokenStatsBackward, dtype);
            let got_dh = b.download_f32(&grads.d_hidden).case(&case)?;
            let got_dw = b.download_f32(&grads.d_weight).case(&case)?;
            Compare::new(&case, "d_hidden")
                .tol(t)
                .terms(v)
                .scale(&dh_scale)
                .slack_each(&dh_slack)
                .run(&got_dh, &dh)?;
            Compare::new(&case, "d_weight")
                .tol(t)
                .terms(n)
                .scale(&dw_scale)
                .slack_each(&dw_slack)
                .run(&got_dw, &dw)?;
            // Finite differences of L = sum_r g_logp logp_r + g_H H_r through the logits.
            let gl64: Vec<f64> = wide(&gl);
            let ge64: Vec<f64> = ge.as_deref().map_or(vec![0.0; n], wide);
            let loss_row = |r: usize, row: &[f64]| {
                oracle::row_loss(row, targets[r] as usize, gl64[r], ge64[r])
            };
            let (mut fg, mut fw, mut fs) = (Vec::new(), Vec::new(), Vec::new());
            for _ in 0..6.min(n * hd) {
                let (i, j) = (g.below(n), g.below(hd));
                let mut hrow: Vec<f64> = (0..hd).map(|c| hm.h.at(i, c)).collect();
                let fd = oracle::central_difference(&mut hrow, j, FD_STEP, |x| {
                    let z: Vec<f64> = (0..v)
                        .map(|vv| (0..hd).map(|c| x[c] * hm.w.at(vv, c)).sum())
                        .collect();
                    loss_row(i, &z)
                });
                fg.push(got_dh[i * hd + j]);
                fw.push(fd);
                fs.push(dh_scale[i * hd + j]);
            }
            for _ in 0..6.min(v * hd) {
                let (vv, j) = (g.below(v), g.below(hd));
                let mut wrow: Vec<f64> = (0..hd).map(|c| hm.w.at(vv, c)).collect();
                let fd = oracle::central_difference(&mut wrow, j, FD_STEP, |x| {
                    (0..n)
                        .map(|i| {
                            let mut z = hm.logits.data[i * v..(i + 1) * v].to_vec();
                            z[vv] = (0..hd).map(|c| hm.h.at(i, c) * x[c]).sum();
                            loss_row(i, &z)
                        })
                        .sum()
                });
                fg.push(got_dw[vv * hd + j]);
                fw.push(fd);
                fs.push(dw_scale[vv * hd + j]);
            }
            Compare::new(&case, "d_hidden/d_weight (finite differences)")
                .tol(FD)
                .scale(&fs)
                .run(&fg, &fw)?;
        }
    }
    Ok(())
}

/// Target lists of the wrong length, targets outside the vocabulary, head widths that differ
/// and empty chunks are errors.
///
/// # Errors
/// A [`crate::suite::Mismatch`] if bad input is accepted.
pub fn logprob_rejects_bad_input<B: Backend>(b: &B) -> CheckResult {
    let z = b.upload_f32(&[0.5; 12]).case("setup")?;
    let zv = MatRef::new(&z, 3, 4).case("view")?;
    expect_err("2 targets for 3 rows", b.token_stats(zv, &[0, 1]), is_shape)?;
    expect_err(
        "target 4 of vocab 4",
        b.token_stats(zv, &[0, 4, 1]),
        is_out_of_range,
    )?;
    let h = b.upload_f32(&[0.5; 6]).case("setup")?;
    let hv = MatRef::new(&h, 3, 2).case("view")?;
    let w = b.upload(HostData::F32(&[0.25; 15])).case("setup")?;
    let w5x3 = MatRef::new(&w, 5, 3).case("view")?;
    let wh = b.upload_f32(&[0.25; 10]).case("setup")?;
    let w5x2 = MatRef::new(&wh, 5, 2).case("view")?;
    expect_err(
        "hidden width 2 vs head width 3",
        b.linear_token_stats(hv, w5x3, &[0, 1, 2], VocabChunk::default()),
        is_shape,
    )?;
    expect_err(
        "chunk 0",
        b.linear_token_stats(hv, w5x2, &[0, 1, 2], VocabChunk(0)),
        is_shape,
    )?;
    expect_err(
        "target 5 of vocab 5",
        b.linear_token_stats(hv, w5x2, &[0, 5, 2], VocabChunk(2)),
        is_out_of_range,
    )?;
    let stats = b.token_stats(zv, &[0, 1, 2]).case("setup")?;
    let gl = b.upload_f32(&[1.0; 3]).case("setup")?;
    let grad = StatsGrad {
        d_logp: &gl,
        d_entropy: None,
    };
    expect_err(
        "backward: target 7 of vocab 4",
        b.token_stats_backward(zv, &[0, 7, 1], &stats, grad),
        is_out_of_range,
    )?;
    expect_err(
        "backward: 2 targets for 3 rows",
        b.token_stats_backward(zv, &[0, 1], &stats, grad),
        is_shape,
    )?;
    expect_err(
        "linear backward: chunk 0",
        b.linear_token_stats_backward(hv, w5x2, &[0, 1, 2], &stats, grad, VocabChunk(0)),
        is_shape,
    )?;
    expect_err(
        "linear backward: target 9 of vocab 5",
        b.linear_token_stats_backward(hv, w5x2, &[0, 9, 2], &stats, grad, VocabChunk(2)),
        is_out_of_range,
    )
}

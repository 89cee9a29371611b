//! Matrix products: one tiled kernel for every layout and view; operands larger than a
//! storage binding are split along m, n or k until every window fits.

use axpo_core::backend::{
    Accumulate, DType, Epilogue, Layout, MatMut, MatRef, MatmulOps, logical_cols, logical_rows,
};
use axpo_core::{BackendErrorKind, Error, Result};

use crate::Wgpu;
use crate::context::{Job, WgpuBuffer, err, f, f32_out, float, u};
use crate::kernels::Family;

/// Output tile of the kernel.
const TILE: usize = 64;

/// A writable strided f32 matrix (the kernel's output).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Out<'a> {
    pub buf: &'a WgpuBuffer,
    pub off: usize,
    pub stride: usize,
    pub m: usize,
    pub n: usize,
}

/// What the kernel does with each accumulated value.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Epi<'a> {
    /// `out (=|+=) alpha * acc`.
    Plain(Epilogue),
    /// `out = d loss / d logit` (fused head backward): per-row targets and
    /// `[lse, entropy, g_logp, g_entropy]` records, starting at row `row0`; column 0 is
    /// vocabulary id `vocab0`.
    LogitGrad {
        targets: &'a WgpuBuffer,
        rowp: &'a WgpuBuffer,
        row0: usize,
        vocab0: usize,
    },
}

/// Element span of a stored view.
fn span_of(x: &MatRef<'_, WgpuBuffer>) -> (usize, usize) {
    if x.rows() == 0 || x.cols() == 0 {
        (x.offset(), x.offset())
    } else {
        (
            x.offset(),
            x.offset() + (x.rows() - 1) * x.row_stride() + x.cols(),
        )
    }
}

/// Rows `r0..r1` of `op(x)`.
fn op_rows<'a>(
    x: MatRef<'a, WgpuBuffer>,
    layout: Layout,
    r0: usize,
    r1: usize,
) -> Result<MatRef<'a, WgpuBuffer>> {
    match layout {
        Layout::AsStored => x.rows_range(r0, r1),
        Layout::Transposed => x.cols_range(r0, r1),
    }
}

/// Columns `c0..c1` of `op(x)`.
fn op_cols<'a>(
    x: MatRef<'a, WgpuBuffer>,
    layout: Layout,
    c0: usize,
    c1: usize,
) -> Result<MatRef<'a, WgpuBuffer>> {
    match layout {
        Layout::AsStored => x.cols_range(c0, c1),
        Layout::Transposed => x.rows_range(c0, c1),
    }
}

#[derive(Debug, Clone, Copy)]
enum Split {
    M,
    N,
    K,
}

impl Wgpu {
    fn fits(&self, dtype: DType, (s, e): (usize, usize)) -> bool {
        let bytes = ((e - s) * dtype.size()) as u64;
        bytes + self.inner.limits.align + 4 <= self.inner.limits.max_binding
    }

    /// Appends the jobs of `out (=|+=) alpha op(a) op(b)` (or the logit-gradient epilogue),
    /// splitting until every operand window fits a binding.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn plan_matmul<'a>(
        &self,
        a: MatRef<'a, WgpuBuffer>,
        al: Layout,
        b: MatRef<'a, WgpuBuffer>,
        bl: Layout,
        out: Out<'a>,
        epi: Epi<'a>,
        jobs: &mut Vec<Job<'a>>,
    ) -> Result<()> {
        let (m, n, k) = (out.m, out.n, logical_cols(&a, al));
        if m == 0 || n == 0 {
            return Ok(());
        }
        let (ad, bd) = (a.buffer().dtype, b.buffer().dtype);
        let out_span = (out.off, out.off + (m - 1) * out.stride + n);
        let split = if !self.fits(DType::F32, out_span) {
            Some(Split::M)
        } else if !self.fits(ad, span_of(&a)) {
            Some(if al == Layout::AsStored {
                Split::M
            } else {
                Split::K
            })
        } else if !self.fits(bd, span_of(&b)) {
            Some(if bl == Layout::AsStored {
                Split::K
            } else {
                Split::N
            })
        } else {
            None
        };
        let too_big = || {
            err(
                BackendErrorKind::LimitExceeded,
                format!(
                    "matmul: an operand row does not fit the {}-byte storage binding limit",
                    self.inner.limits.max_binding
                ),
            )
        };
        match split {
            Some(Split::M) => {
                if m < 2 {
                    return Err(too_big());
                }
                let h = (m / 2).div_ceil(TILE) * TILE;
                let h = if h >= m { m / 2 } else { h };
                for (r0, r1) in [(0, h), (h, m)] {
                    let o = Out {
                        off: out.off + r0 * out.stride,
                        m: r1 - r0,
                        ..out
                    };
                    let e = match epi {
                        Epi::LogitGrad {
                            targets,
                            rowp,
                            row0,
                            vocab0,
                        } => Epi::LogitGrad {
                            targets,
                            rowp,
                            row0: row0 + r0,
                            vocab0,
                        },
                        plain => plain,
                    };
                    self.plan_matmul(op_rows(a, al, r0, r1)?, al, b, bl, o, e, jobs)?;
                }
                Ok(())
            }
            Some(Split::N) => {
                if n < 2 {
                    return Err(too_big());
                }
                let h = n / 2;
                for (c0, c1) in [(0, h), (h, n)] {
                    let o = Out {
                        off: out.off + c0,
                        n: c1 - c0,
                        ..out
                    };
                    let e = match epi {
                        Epi::LogitGrad {
                            targets,
                            rowp,
                            row0,
                            vocab0,
                        } => Epi::LogitGrad {
                            targets,
                            rowp,
                            row0,
                            vocab0: vocab0 + c0,
                        },
                        plain => plain,
                    };
                    self.plan_matmul(a, al, op_cols(b, bl, c0, c1)?, bl, o, e, jobs)?;
                }
                Ok(())
            }
            Some(Split::K) => {
                let Epi::Plain(ep) = epi else {
                    return Err(too_big());
                };
                if k < 2 {
                    return Err(too_big());
                }
                let h = k / 2;
                let second = Epilogue {
                    alpha: ep.alpha,
                    accumulate: Accumulate::Add,
                };
                self.plan_matmul(
                    op_cols(a, al, 0, h)?,
                    al,
                    op_rows(b, bl, 0, h)?,
                    bl,
                    out,
                    Epi::Plain(ep),
                    jobs,
                )?;
                self.plan_matmul(
                    op_cols(a, al, h, k)?,
                    al,
                    op_rows(b, bl, h, k)?,
                    bl,
                    out,
                    Epi::Plain(second),
                    jobs,
                )
            }
            None => {
                let (a0, a1) = span_of(&a);
                let (b0, b1) = span_of(&b);
                let (aw, abase) = self.inner.window(a.buffer(), a0, a1)?;
                let (bw, bbase) = self.inner.window(b.buffer(), b0, b1)?;
                let (ow, obase) = self.inner.window(out.buf, out_span.0, out_span.1)?;
                let (ars, acs) = match al {
                    Layout::AsStored => (a.row_stride(), 1),
                    Layout::Transposed => (1, a.row_stride()),
                };
                let (brs, bcs) = match bl {
                    Layout::AsStored => (b.row_stride(), 1),
                    Layout::Transposed => (1, b.row_stride()),
                };
                let tiles_n = n.div_ceil(TILE);
                let groups = m.div_ceil(TILE) * tiles_n;
                let (entry, accumulate, alpha) = match epi {
                    Epi::Plain(e) => (
                        "matmul",
                        u32::from(e.accumulate == Accumulate::Add),
                        e.alpha,
                    ),
                    Epi::LogitGrad { .. } => ("matmul_logit_grad", 0, 1.0),
                };
                let mut job = Job::new(Family::Matmul, entry, groups)
                    .dtype("a", ad)
                    .dtype("b", bd)
                    .bind(1, aw)
                    .bind(2, bw)
                    .bind(3, ow);
                let mut words = vec![
                    u(m)?,
                    u(n)?,
                    u(k)?,
                    u(a0)? - abase,
                    u(ars)?,
                    u(acs)?,
                    u(b0)? - bbase,
                    u(brs)?,
                    u(bcs)?,
                    u(out_span.0)? - obase,
                    u(out.stride)?,
                    accumulate,
                    f(alpha),
                    u(tiles_n)?,
                ];
                if let Epi::LogitGrad {
                    targets,
                    rowp,
                    row0,
                    vocab0,
                } = epi
                {
                    let (tw, tbase) = self.inner.window(targets, row0, row0 + m)?;
                    let (rw, rbase) = self.inner.window(rowp, 4 * row0, 4 * (row0 + m))?;
                    words.extend([u(vocab0)?, u(row0)? - tbase, u(4 * row0)? - rbase]);
                    job = job.bind(4, tw).bind(5, rw);
                } else {
                    words.extend([0, 0, 0]);
                }
                jobs.push(job.params(&words));
                Ok(())
            }
        }
    }
}

/// Checks a product's shapes and returns `(m, n, k)`.
pub(crate) fn dims(
    a: &MatRef<'_, WgpuBuffer>,
    al: Layout,
    b: &MatRef<'_, WgpuBuffer>,
    bl: Layout,
    out_rows: usize,
    out_cols: usize,
) -> Result<(usize, usize, usize)> {
    let (m, k) = (logical_rows(a, al), logical_cols(a, al));
    let (k2, n) = (logical_rows(b, bl), logical_cols(b, bl));
    if k != k2 {
        return Err(Error::Shape {
            op: "matmul",
            reason: "inner dimensions differ",
        });
    }
    if out_rows != m || out_cols != n {
        return Err(Error::Shape {
            op: "matmul",
            reason: "output shape differs from m x n",
        });
    }
    Ok((m, n, k))
}

impl MatmulOps for Wgpu {
    fn matmul(
        &self,
        a: MatRef<'_, WgpuBuffer>,
        a_layout: Layout,
        b: MatRef<'_, WgpuBuffer>,
        b_layout: Layout,
        mut out: MatMut<'_, WgpuBuffer>,
        epilogue: Epilogue,
    ) -> Result<()> {
        let (m, n, _) = dims(&a, a_layout, &b, b_layout, out.rows(), out.cols())?;
        float("matmul", a.buffer().dtype)?;
        float("matmul", b.buffer().dtype)?;
        f32_out("matmul", out.buffer())?;
        let (off, stride) = (out.offset(), out.row_stride());
        let buf: &WgpuBuffer = out.buffer_mut();
        let mut jobs = Vec::new();
        self.plan_matmul(
            a,
            a_layout,
            b,
            b_layout,
            Out {
                buf,
                off,
                stride,
                m,
                n,
            },
            Epi::Plain(epilogue),
            &mut jobs,
        )?;
        self.inner.submit(&jobs, "matmul")
    }
}

//! Matrix products on the CPU: the [`CpuGemm`] kernel trait and the portable reference kernel.

use alloc::vec;
use alloc::vec::Vec;

use super::{Cpu, CpuBuffer};
use crate::backend::{
    Accumulate, Epilogue, Layout, MatMut, MatRef, MatmulOps, logical_cols, logical_rows,
};
use crate::error::{Error, Result};

/// A strided f32 operand: element `(i, p)` of the logical matrix is `data[i * rs + p * cs]`.
#[derive(Debug, Clone, Copy)]
pub struct Strided<'a> {
    /// The elements.
    pub data: &'a [f32],
    /// Distance between logical rows.
    pub rs: usize,
    /// Distance between logical columns.
    pub cs: usize,
}

/// A single-precision matrix-product kernel for the CPU backend.
pub trait CpuGemm: Clone + core::fmt::Debug + Send + Sync + 'static {
    /// `c[i * ldc + j] (=|+=) alpha * sum_p a(i, p) b(p, j)` for `i < m`, `j < n`, `p < k`.
    /// Implementations must handle `k == 0` (the product is zero).
    #[allow(clippy::too_many_arguments)]
    fn gemm(
        &self,
        m: usize,
        n: usize,
        k: usize,
        a: Strided<'_>,
        b: Strided<'_>,
        c: &mut [f32],
        ldc: usize,
        epilogue: Epilogue,
    );
}

/// The portable kernel: packs both operands densely and runs a blocked, 4-row register-tiled
/// loop that the compiler vectorises. f32 accumulation.
#[derive(Debug, Clone, Copy, Default)]
pub struct ReferenceGemm;

const NB: usize = 256;
const KB: usize = 256;

impl CpuGemm for ReferenceGemm {
    fn gemm(
        &self,
        m: usize,
        n: usize,
        k: usize,
        a: Strided<'_>,
        b: Strided<'_>,
        c: &mut [f32],
        ldc: usize,
        epilogue: Epilogue,
    ) {
        if m == 0 || n == 0 {
            return;
        }
        // Pack alpha * op(A) as m x k and op(B) as k x n, both dense row-major, then accumulate
        // straight into the output rows (zeroed first when overwriting): no m x n temporary.
        let mut ap = vec![0.0f32; m * k];
        for i in 0..m {
            for p in 0..k {
                ap[i * k + p] = epilogue.alpha * a.data[i * a.rs + p * a.cs];
            }
        }
        let mut bp = vec![0.0f32; k * n];
        for p in 0..k {
            for j in 0..n {
                bp[p * n + j] = b.data[p * b.rs + j * b.cs];
            }
        }
        if epilogue.accumulate == Accumulate::Overwrite {
            for i in 0..m {
                c[i * ldc..i * ldc + n].fill(0.0);
            }
        }
        for jb in (0..n).step_by(NB) {
            let je = (jb + NB).min(n);
            for pb in (0..k).step_by(KB) {
                let pe = (pb + KB).min(k);
                let mut i = 0;
                while i + 4 <= m {
                    let (r0, rest) = c[i * ldc..].split_at_mut(ldc);
                    let (r1, rest) = rest.split_at_mut(ldc);
                    let (r2, r3) = rest.split_at_mut(ldc);
                    let (r0, r1, r2, r3) = (
                        &mut r0[jb..je],
                        &mut r1[jb..je],
                        &mut r2[jb..je],
                        &mut r3[jb..je],
                    );
                    for p in pb..pe {
                        let (a0, a1, a2, a3) = (
                            ap[i * k + p],
                            ap[(i + 1) * k + p],
                            ap[(i + 2) * k + p],
                            ap[(i + 3) * k + p],
                        );
                        let brow = &bp[p * n + jb..p * n + je];
                        for (j, &bv) in brow.iter().enumerate() {
                            r0[j] += a0 * bv;
                            r1[j] += a1 * bv;
                            r2[j] += a2 * bv;
                            r3[j] += a3 * bv;
                        }
                    }
                    i += 4;
                }
                while i < m {
                    let row = &mut c[i * ldc + jb..i * ldc + je];
                    for p in pb..pe {
                        let av = ap[i * k + p];
                        let brow = &bp[p * n + jb..p * n + je];
                        for (r, &bv) in row.iter_mut().zip(brow) {
                            *r += av * bv;
                        }
                    }
                    i += 1;
                }
            }
        }
    }
}

/// Checks the shapes of a matmul and returns `(m, n, k)`.
///
/// # Errors
/// [`Error::Shape`].
pub(crate) fn matmul_dims<B: ?Sized, C: ?Sized>(
    a: &MatRef<'_, B>,
    a_layout: Layout,
    b: &MatRef<'_, B>,
    b_layout: Layout,
    out: &MatMut<'_, C>,
) -> Result<(usize, usize, usize)> {
    let (m, k) = (logical_rows(a, a_layout), logical_cols(a, a_layout));
    let (k2, n) = (logical_rows(b, b_layout), logical_cols(b, b_layout));
    if k != k2 {
        return Err(Error::Shape {
            op: "matmul",
            reason: "inner dimensions differ",
        });
    }
    if out.rows() != m || out.cols() != n {
        return Err(Error::Shape {
            op: "matmul",
            reason: "output shape differs from m x n",
        });
    }
    Ok((m, n, k))
}

/// The elements spanned by a view, as f32, and the view's strides relative to them.
fn operand<'a>(
    x: &MatRef<'a, CpuBuffer>,
    layout: Layout,
) -> Result<(alloc::borrow::Cow<'a, [f32]>, usize, usize)> {
    let span = if x.rows() == 0 || x.cols() == 0 {
        0
    } else {
        (x.rows() - 1) * x.row_stride() + x.cols()
    };
    let data = x
        .buffer()
        .f32_range(x.offset(), x.offset() + span, "matmul")?;
    let (rs, cs) = match layout {
        Layout::AsStored => (x.row_stride(), 1),
        Layout::Transposed => (1, x.row_stride()),
    };
    Ok((data, rs, cs))
}

impl<G: CpuGemm> MatmulOps for Cpu<G> {
    fn matmul(
        &self,
        a: MatRef<'_, CpuBuffer>,
        a_layout: Layout,
        b: MatRef<'_, CpuBuffer>,
        b_layout: Layout,
        mut out: MatMut<'_, CpuBuffer>,
        epilogue: Epilogue,
    ) -> Result<()> {
        let (m, n, k) = matmul_dims(&a, a_layout, &b, b_layout, &out)?;
        if m == 0 || n == 0 {
            return Ok(());
        }
        let (ad, ars, acs) = operand(&a, a_layout)?;
        let (bd, brs, bcs) = operand(&b, b_layout)?;
        let (off, ldc) = (out.offset(), out.row_stride());
        let span = (m - 1) * ldc + n;
        match out.buffer_mut() {
            CpuBuffer::F32(c) => {
                if k == 0 {
                    if epilogue.accumulate == Accumulate::Overwrite {
                        for i in 0..m {
                            c[off + i * ldc..off + i * ldc + n].fill(0.0);
                        }
                    }
                    return Ok(());
                }
                self.gemm.gemm(
                    m,
                    n,
                    k,
                    Strided {
                        data: &ad,
                        rs: ars,
                        cs: acs,
                    },
                    Strided {
                        data: &bd,
                        rs: brs,
                        cs: bcs,
                    },
                    &mut c[off..off + span],
                    ldc,
                    epilogue,
                );
                Ok(())
            }
            other => {
                // Half-precision outputs: compute in f32, round once at the end.
                let dtype = crate::backend::DeviceBuffer::dtype(&*other);
                let mut tmp: Vec<f32> = match epilogue.accumulate {
                    Accumulate::Add => {
                        let cur = other.f32_range(off, off + span, "matmul")?;
                        cur.into_owned()
                    }
                    Accumulate::Overwrite => vec![0.0; span],
                };
                if k > 0 {
                    self.gemm.gemm(
                        m,
                        n,
                        k,
                        Strided {
                            data: &ad,
                            rs: ars,
                            cs: acs,
                        },
                        Strided {
                            data: &bd,
                            rs: brs,
                            cs: bcs,
                        },
                        &mut tmp,
                        ldc,
                        epilogue,
                    );
                }
                match other {
                    CpuBuffer::F16(d) => {
                        for i in 0..m {
                            for j in 0..n {
                                d[off + i * ldc + j] = half::f16::from_f32(tmp[i * ldc + j]);
                            }
                        }
                    }
                    CpuBuffer::Bf16(d) => {
                        for i in 0..m {
                            for j in 0..n {
                                d[off + i * ldc + j] = half::bf16::from_f32(tmp[i * ldc + j]);
                            }
                        }
                    }
                    _ => {
                        return Err(Error::UnsupportedDType {
                            op: "matmul",
                            dtype,
                            backend: "cpu",
                        });
                    }
                }
                Ok(())
            }
        }
    }
}

//! The matrix kernel of the fast CPU backend: `faer`'s matrix product (the `gemm` crate's SIMD
//! kernels, multithreaded through rayon) behind the [`CpuGemm`] interface, with every operand
//! bounds-checked before a view is made.

use crate::backend::{Accumulate, CpuGemm, Epilogue, ReferenceGemm, Strided};

/// Below this many multiply-adds a product runs on one thread.
const PARALLEL_MIN_FLOPS: usize = 1 << 18;

/// `faer`'s matrix product (the `gemm` crate's kernels) as the CPU backend's matrix kernel.
#[derive(Debug, Clone, Copy)]
pub struct GemmKernel {
    threads: usize,
}

impl Default for GemmKernel {
    fn default() -> Self {
        Self::new(0)
    }
}

impl GemmKernel {
    /// A kernel using `threads` threads of the rayon pool (`0`: all of them).
    #[must_use]
    pub fn new(threads: usize) -> Self {
        Self { threads }
    }
}

/// Whether a strided operand `rows x cols` with strides `(rs, cs)` lies inside `len` elements.
fn fits(len: usize, rows: usize, cols: usize, rs: usize, cs: usize) -> bool {
    if rows == 0 || cols == 0 {
        return true;
    }
    (rows - 1)
        .checked_mul(rs)
        .and_then(|a| (cols - 1).checked_mul(cs).and_then(|b| a.checked_add(b)))
        .is_some_and(|last| last < len)
}

/// A strided operand as a `faer` view: row-major (`cs == 1`) or column-major (`rs == 1`);
/// `None` for other stride patterns.
fn view(x: Strided<'_>, rows: usize, cols: usize) -> Option<faer::MatRef<'_, f32>> {
    if x.cs == 1 && (x.rs >= cols || rows <= 1) {
        Some(faer::MatRef::from_row_major_slice_with_stride(
            x.data,
            rows,
            cols,
            x.rs.max(cols),
        ))
    } else if x.rs == 1 && (x.cs >= rows || cols <= 1) {
        Some(faer::MatRef::from_column_major_slice_with_stride(
            x.data,
            rows,
            cols,
            x.cs.max(rows),
        ))
    } else {
        None
    }
}

/// `c (=|+=) alpha · a b` with bounds-checked strided operands, through `faer`'s matrix
/// product (the `gemm` crate's kernels, through a safe API). Returns `false` (doing nothing) if
/// an operand does not fit its slice or has a stride pattern `faer` views cannot express.
#[allow(clippy::too_many_arguments)]
pub(super) fn sgemm(
    m: usize,
    n: usize,
    k: usize,
    a: Strided<'_>,
    b: Strided<'_>,
    c: &mut [f32],
    ldc: usize,
    epilogue: Epilogue,
    threads: Option<usize>,
) -> bool {
    if m == 0 || n == 0 {
        return true;
    }
    if !(fits(a.data.len(), m, k, a.rs, a.cs)
        && fits(b.data.len(), k, n, b.rs, b.cs)
        && fits(c.len(), m, n, ldc, 1)
        && (ldc >= n || m == 1))
    {
        return false;
    }
    if k == 0 {
        if epilogue.accumulate == Accumulate::Overwrite {
            for i in 0..m {
                if let Some(row) = c.get_mut(i * ldc..i * ldc + n) {
                    row.fill(0.0);
                }
            }
        }
        return true;
    }
    let (Some(av), Some(bv)) = (view(a, m, k), view(b, k, n)) else {
        return false;
    };
    // The output as the transpose of a column-major n x m view (row stride ldc).
    let cv =
        faer::MatMut::from_column_major_slice_with_stride_mut(c, n, m, ldc.max(n)).transpose_mut();
    let accum = match epilogue.accumulate {
        Accumulate::Overwrite => faer::Accum::Replace,
        Accumulate::Add => faer::Accum::Add,
    };
    let par = match threads {
        Some(t) if m.saturating_mul(n).saturating_mul(k) >= PARALLEL_MIN_FLOPS => {
            faer::Par::rayon(if t == 0 {
                rayon::current_num_threads()
            } else {
                t
            })
        }
        _ => faer::Par::Seq,
    };
    faer::linalg::matmul::matmul(cv, accum, av, bv, epilogue.alpha, par);
    true
}

impl CpuGemm for GemmKernel {
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
        if !sgemm(m, n, k, a, b, c, ldc, epilogue, Some(self.threads)) {
            // Operands that do not fit their slices: the portable kernel, whose indexing is
            // checked by Rust, handles (and reports) them.
            ReferenceGemm.gemm(m, n, k, a, b, c, ldc, epilogue);
        }
    }
}

//! GEMM through cuBLAS (`cublasGemmEx`, f32 accumulation) on strided row-major views.

use axpo_core::backend::{
    Accumulate, BufferOps, DType, DeviceBuffer, Epilogue, Layout, MatMut, MatRef, MatmulOps,
    logical_cols, logical_rows,
};
use axpo_core::{Error, Result};

use crate::buffer::{CudaBuffer, DevPtr};
use crate::device::{Cuda, Precision};
use crate::launch::GemmCall;

/// The element type both operands are brought to, or `None` when the pair cannot be
/// multiplied (bf16 with f16).
#[must_use]
pub(crate) fn common_operand_type(a: DType, b: DType, precision: Precision) -> Option<DType> {
    match (a, b) {
        (x, y) if x == y && x.is_float() => Some(x),
        (DType::F32, h @ (DType::Bf16 | DType::F16))
        | (h @ (DType::Bf16 | DType::F16), DType::F32) => Some(match precision {
            Precision::Exact => DType::F32,
            _ => h,
        }),
        _ => None,
    }
}

/// A row-major operand as cuBLAS sees it: pointer, type, row stride.
struct Operand {
    ptr: DevPtr,
    stride: usize,
    _scratch: Option<CudaBuffer>,
}

impl Cuda {
    /// Brings a view to `dtype`: as is when it already has it, else a dense converted copy.
    fn operand(&self, view: &MatRef<'_, CudaBuffer>, dtype: DType) -> Result<Operand> {
        if view.buffer().dtype() == dtype {
            return Ok(Operand {
                ptr: CudaBuffer::dev_view(view, self)?,
                stride: view.row_stride(),
                _scratch: None,
            });
        }
        let (rows, cols) = (view.rows(), view.cols());
        let scratch = self.zeros(dtype, rows * cols)?;
        self.k_copy_rows(
            CudaBuffer::dev_view(view, self)?,
            view.row_stride(),
            scratch.dev(self, 0)?,
            cols,
            rows,
            cols,
        )?;
        Ok(Operand {
            ptr: scratch.dev(self, 0)?,
            stride: cols.max(1),
            _scratch: Some(scratch),
        })
    }

    /// `out (=|+=) alpha op(a) op(b)` where every view is already checked; `out` is given as
    /// pointer + row stride.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn gemm_views(
        &self,
        a: &MatRef<'_, CudaBuffer>,
        a_layout: Layout,
        b: &MatRef<'_, CudaBuffer>,
        b_layout: Layout,
        out: DevPtr,
        out_stride: usize,
        epilogue: Epilogue,
    ) -> Result<()> {
        let (m, k) = (logical_rows(a, a_layout), logical_cols(a, a_layout));
        let n = logical_cols(b, b_layout);
        if m == 0 || n == 0 {
            return Ok(());
        }
        let ty = common_operand_type(a.buffer().dtype(), b.buffer().dtype(), self.precision)
            .ok_or(Error::UnsupportedDType {
                op: "matmul",
                dtype: b.buffer().dtype(),
                backend: "cuda",
            })?;
        let add = epilogue.accumulate == Accumulate::Add;
        let direct = out.dtype == DType::F32 || out.dtype == ty;
        if !direct || k == 0 {
            // Compute into an f32 temporary (holding the current values when accumulating),
            // then convert into the output.
            let tmp = self.zeros(DType::F32, m * n)?;
            if add {
                self.k_copy_rows(out, out_stride, tmp.dev(self, 0)?, n, m, n)?;
            }
            if k > 0 {
                let t = tmp.dev(self, 0)?;
                self.gemm_views(a, a_layout, b, b_layout, t, n, epilogue)?;
            } else if !add {
                self.k_fill_f32(tmp.dev(self, 0)?, m * n, 0.0)?;
            }
            let src = tmp.dev(self, 0)?;
            self.k_copy_rows(src, n, out, out_stride, m, n)?;
            return Ok(());
        }
        let ao = self.operand(a, ty)?;
        let bo = self.operand(b, ty)?;
        // Row-major C = op(A) op(B) is column-major C^T = op(B)^T op(A)^T.
        self.gemm(&GemmCall {
            trans_a: b_layout == Layout::Transposed,
            trans_b: a_layout == Layout::Transposed,
            m: n,
            n: m,
            k,
            a: bo.ptr,
            lda: bo.stride,
            b: ao.ptr,
            ldb: ao.stride,
            c: out,
            ldc: out_stride,
            alpha: epilogue.alpha,
            beta: if add { 1.0 } else { 0.0 },
            tf32: self.precision == Precision::Bf16,
        })
    }
}

impl MatmulOps for Cuda {
    fn matmul(
        &self,
        a: MatRef<'_, CudaBuffer>,
        a_layout: Layout,
        b: MatRef<'_, CudaBuffer>,
        b_layout: Layout,
        out: MatMut<'_, CudaBuffer>,
        epilogue: Epilogue,
    ) -> Result<()> {
        let (m, k) = (logical_rows(&a, a_layout), logical_cols(&a, a_layout));
        let (k2, n) = (logical_rows(&b, b_layout), logical_cols(&b, b_layout));
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
        if !out.buffer().dtype().is_float() {
            return Err(Error::UnsupportedDType {
                op: "matmul",
                dtype: out.buffer().dtype(),
                backend: "cuda",
            });
        }
        let o = CudaBuffer::dev_view_mut(&out, self)?;
        self.gemm_views(&a, a_layout, &b, b_layout, o, out.row_stride(), epilogue)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operand_types_unify_by_policy() {
        use DType::*;
        assert_eq!(
            common_operand_type(Bf16, Bf16, Precision::Exact),
            Some(Bf16)
        );
        assert_eq!(common_operand_type(F32, Bf16, Precision::Exact), Some(F32));
        assert_eq!(common_operand_type(F32, Bf16, Precision::Bf16), Some(Bf16));
        assert_eq!(common_operand_type(F16, F32, Precision::Bf16), Some(F16));
        assert_eq!(common_operand_type(Bf16, F16, Precision::Exact), None);
        assert_eq!(common_operand_type(U32, U32, Precision::Exact), None);
    }
}

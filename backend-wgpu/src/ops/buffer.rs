//! Buffers: allocation, transfers, and strided row copies with conversion.

use axpo_core::backend::{BufferOps, DType, HostData, MatMut, MatRef};
use axpo_core::{BackendErrorKind, Error, Result};

use crate::Wgpu;
use crate::context::{Job, WgpuBuffer, dtype_err, err, u};
use crate::kernels::Family;

/// The element span `[start, end)` of rows `r0..r1` of a view.
pub(crate) fn span(
    offset: usize,
    stride: usize,
    cols: usize,
    r0: usize,
    r1: usize,
) -> (usize, usize) {
    (offset + r0 * stride, offset + (r1 - 1) * stride + cols)
}

/// Splits `rows` into blocks that fit a binding of each (dtype, stride) pair.
///
/// # Errors
/// [`BackendErrorKind::LimitExceeded`] if a single row does not fit.
pub(crate) fn row_blocks(
    b: &Wgpu,
    rows: usize,
    operands: &[(DType, usize)],
    op: &str,
) -> Result<Vec<(usize, usize)>> {
    let per = operands
        .iter()
        .map(|&(d, s)| b.inner.rows_per_binding(d, s))
        .min()
        .unwrap_or(usize::MAX)
        .min(1 << 24);
    if per == 0 {
        return Err(err(
            BackendErrorKind::LimitExceeded,
            format!(
                "{op}: one row is larger than the {}-byte storage binding limit",
                b.inner.limits.max_binding
            ),
        ));
    }
    Ok((0..rows)
        .step_by(per)
        .map(|r0| (r0, (r0 + per).min(rows)))
        .collect())
}

impl BufferOps for Wgpu {
    fn name(&self) -> &'static str {
        "wgpu"
    }

    fn upload(&self, data: HostData<'_>) -> Result<WgpuBuffer> {
        self.inner.upload(data)
    }

    fn zeros(&self, dtype: DType, len: usize) -> Result<WgpuBuffer> {
        self.inner.zeros(dtype, len)
    }

    fn download_f32(&self, buffer: &WgpuBuffer) -> Result<Vec<f32>> {
        self.inner.download_f32(buffer)
    }

    fn download_u32(&self, buffer: &WgpuBuffer) -> Result<Vec<u32>> {
        self.inner.download_u32(buffer)
    }

    fn synchronize(&self) -> Result<()> {
        self.inner.wait()
    }

    fn copy_rows(
        &self,
        src: MatRef<'_, WgpuBuffer>,
        mut dst: MatMut<'_, WgpuBuffer>,
    ) -> Result<()> {
        if src.rows() != dst.rows() || src.cols() != dst.cols() {
            return Err(Error::Shape {
                op: "copy_rows",
                reason: "source and destination shapes differ",
            });
        }
        let (sd, dd) = (src.buffer().dtype, dst.buffer().dtype);
        let (entry, mode) = match (sd, dd) {
            (DType::U32, DType::U32) => ("copy_u32", 0),
            (DType::U32, _) => return Err(dtype_err("copy_rows", DType::U32)),
            (_, DType::U32) => return Err(dtype_err("copy_rows", DType::U32)),
            (_, DType::F32) => ("copy_f32", 0),
            (_, DType::Bf16) => ("copy_half", 1),
            (_, _) => ("copy_half", 2),
        };
        let (rows, cols) = (src.rows(), src.cols());
        if rows == 0 || cols == 0 {
            return Ok(());
        }
        let (ss, ds) = (src.row_stride(), dst.row_stride());
        let (so, d_off) = (src.offset(), dst.offset());
        let row_groups = row_blocks(self, rows, &[(sd, ss), (dd, ds)], "copy_rows")?;
        let blocks = cols.div_ceil(1024);
        let dst_buf: &WgpuBuffer = dst.buffer_mut();
        let mut jobs = Vec::with_capacity(row_groups.len());
        for (r0, r1) in row_groups {
            let (s0, s1) = span(so, ss, cols, r0, r1);
            let (d0, d1) = span(d_off, ds, cols, r0, r1);
            let (sw, sbase) = self.inner.window(src.buffer(), s0, s1)?;
            let (dw, dbase) = self.inner.window(dst_buf, d0, d1)?;
            let words = (dw.size / 4) as usize;
            let groups = if entry == "copy_half" {
                words.div_ceil(256)
            } else {
                (r1 - r0) * blocks
            };
            let binding = if entry == "copy_f32" { 2 } else { 3 };
            jobs.push(
                Job::new(Family::Buffer, entry, groups)
                    .dtype("src", sd)
                    .params(&[
                        u(r1 - r0)?,
                        u(cols)?,
                        u(s0)? - sbase,
                        u(ss)?,
                        u(d0)? - dbase,
                        u(ds)?,
                        u(words)?,
                        mode,
                        u(blocks)?,
                    ])
                    .bind(1, sw)
                    .bind(binding, dw),
            );
        }
        self.inner.submit(&jobs, "copy_rows")
    }
}

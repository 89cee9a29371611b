//! Row gathers and scatters on the CPU.

use alloc::vec::Vec;

use super::{Cpu, CpuBuffer, CpuGemm};
use crate::backend::{EmbeddingOps, MatMut, MatRef, ScatterMode};
use crate::error::{Error, Result};

impl<G: CpuGemm> EmbeddingOps for Cpu<G> {
    fn gather_rows(&self, table: MatRef<'_, CpuBuffer>, ids: &[u32]) -> Result<CpuBuffer> {
        let cols = table.cols();
        let mut out = Vec::with_capacity(ids.len() * cols);
        for (row, &id) in ids.iter().enumerate() {
            if id as usize >= table.rows() {
                return Err(Error::TargetOutOfRange {
                    row,
                    target: id,
                    vocab: table.rows(),
                });
            }
            let start = table.offset() + id as usize * table.row_stride();
            out.extend_from_slice(
                &table
                    .buffer()
                    .f32_range(start, start + cols, "gather_rows")?,
            );
        }
        Ok(CpuBuffer::F32(out))
    }

    fn scatter_rows(
        &self,
        mut dst: MatMut<'_, CpuBuffer>,
        rows: &[u32],
        src: MatRef<'_, CpuBuffer>,
        mode: ScatterMode,
    ) -> Result<()> {
        if src.cols() != dst.cols() || src.rows() != rows.len() {
            return Err(Error::Shape {
                op: "scatter_rows",
                reason: "source must be rows.len() x dst.cols()",
            });
        }
        let (cols, off, stride, n) = (dst.cols(), dst.offset(), dst.row_stride(), dst.rows());
        let data = CpuBuffer::dense_f32(&src, "scatter_rows")?;
        if let Some(i) = rows.iter().position(|&r| r as usize >= n) {
            return Err(Error::TargetOutOfRange {
                row: i,
                target: rows[i],
                vocab: n,
            });
        }
        let d = dst.buffer_mut().f32s_mut("scatter_rows")?;
        for (i, &r) in rows.iter().enumerate() {
            let o = off + r as usize * stride;
            let s = &data[i * cols..(i + 1) * cols];
            match mode {
                ScatterMode::Replace => d[o..o + cols].copy_from_slice(s),
                ScatterMode::Add => {
                    for (dv, sv) in d[o..o + cols].iter_mut().zip(s) {
                        *dv += sv;
                    }
                }
            }
        }
        Ok(())
    }
}

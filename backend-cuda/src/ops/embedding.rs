//! Row gathers and scatters.

use axpo_core::backend::{
    BufferOps, DType, DeviceBuffer, EmbeddingOps, MatMut, MatRef, ScatterMode,
};
use axpo_core::{Error, Result};

use crate::buffer::CudaBuffer;
use crate::device::Cuda;

/// Splits scatter indices into rounds in which no destination row repeats, keeping the order
/// of repeated rows (round `r` holds each row's `r`-th occurrence), so that the rounds,
/// launched in order, give the sequential result. Returns `(dst_rows, src_rows)` per round.
#[must_use]
pub(crate) fn scatter_rounds(rows: &[u32]) -> Vec<(Vec<u32>, Vec<u32>)> {
    let mut seen: std::collections::HashMap<u32, usize> = std::collections::HashMap::new();
    let mut rounds: Vec<(Vec<u32>, Vec<u32>)> = Vec::new();
    for (i, &r) in rows.iter().enumerate() {
        let k = seen.entry(r).or_insert(0);
        if rounds.len() <= *k {
            rounds.push((Vec::new(), Vec::new()));
        }
        rounds[*k].0.push(r);
        rounds[*k].1.push(u32::try_from(i).unwrap_or(u32::MAX));
        *k += 1;
    }
    rounds
}

impl EmbeddingOps for Cuda {
    fn gather_rows(&self, table: MatRef<'_, CudaBuffer>, ids: &[u32]) -> Result<CudaBuffer> {
        if let Some(row) = ids.iter().position(|&i| i as usize >= table.rows()) {
            return Err(Error::TargetOutOfRange {
                row,
                target: ids[row],
                vocab: table.rows(),
            });
        }
        let cols = table.cols();
        let out = self.zeros(DType::F32, ids.len() * cols)?;
        if ids.is_empty() || cols == 0 {
            return Ok(out);
        }
        let dev_ids = self.upload_u32(ids)?;
        self.k_gather_rows(
            CudaBuffer::dev_view(&table, self)?,
            table.row_stride(),
            table.rows(),
            dev_ids.dev(self, 0)?,
            ids.len(),
            cols,
            out.dev(self, 0)?,
        )?;
        Ok(out)
    }

    fn scatter_rows(
        &self,
        dst: MatMut<'_, CudaBuffer>,
        rows: &[u32],
        src: MatRef<'_, CudaBuffer>,
        mode: ScatterMode,
    ) -> Result<()> {
        if src.cols() != dst.cols() || src.rows() != rows.len() {
            return Err(Error::Shape {
                op: "scatter_rows",
                reason: "source must be rows.len() x dst.cols()",
            });
        }
        if let Some(i) = rows.iter().position(|&r| r as usize >= dst.rows()) {
            return Err(Error::TargetOutOfRange {
                row: i,
                target: rows[i],
                vocab: dst.rows(),
            });
        }
        if !dst.buffer().dtype().is_float() {
            return Err(Error::UnsupportedDType {
                op: "scatter_rows",
                dtype: dst.buffer().dtype(),
                backend: "cuda",
            });
        }
        if rows.is_empty() || dst.cols() == 0 {
            return Ok(());
        }
        let d = CudaBuffer::dev_view_mut(&dst, self)?;
        let s = CudaBuffer::dev_view(&src, self)?;
        for (dst_rows, src_rows) in scatter_rounds(rows) {
            let dr = self.upload_u32(&dst_rows)?;
            let sr = self.upload_u32(&src_rows)?;
            self.k_scatter_rows(
                d,
                dst.row_stride(),
                dst.rows(),
                dr.dev(self, 0)?,
                sr.dev(self, 0)?,
                dst_rows.len(),
                s,
                src.row_stride(),
                src.rows(),
                dst.cols(),
                mode == ScatterMode::Add,
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounds_hold_each_row_once_and_keep_order() {
        let rounds = scatter_rounds(&[3, 1, 3, 3, 0, 1]);
        assert_eq!(rounds.len(), 3);
        assert_eq!(rounds[0], (vec![3, 1, 0], vec![0, 1, 4]));
        assert_eq!(rounds[1], (vec![3, 1], vec![2, 5]));
        assert_eq!(rounds[2], (vec![3], vec![3]));
        assert!(scatter_rounds(&[]).is_empty());
    }
}

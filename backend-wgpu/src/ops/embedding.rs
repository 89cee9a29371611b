//! Row gathers and scatters. Tables larger than a binding are read in row blocks (one
//! dispatch per block, each thread skipping ids outside it); scatters group their sources by
//! destination row on the host so that repeated rows never race.

use axpo_core::backend::{DType, EmbeddingOps, HostData, MatMut, MatRef, ScatterMode};
use axpo_core::{Error, Result};

use crate::Wgpu;
use crate::context::{Job, WgpuBuffer, f32_out, float, u};
use crate::kernels::Family;
use crate::ops::buffer::{row_blocks, span};

impl EmbeddingOps for Wgpu {
    fn gather_rows(&self, table: MatRef<'_, WgpuBuffer>, ids: &[u32]) -> Result<WgpuBuffer> {
        let (rows, cols) = (table.rows(), table.cols());
        if let Some(row) = ids.iter().position(|&i| i as usize >= rows) {
            return Err(Error::TargetOutOfRange {
                row,
                target: ids[row],
                vocab: rows,
            });
        }
        let td = float("gather_rows", table.buffer().dtype)?;
        let out = self.inner.zeros(DType::F32, ids.len() * cols)?;
        if ids.is_empty() || cols == 0 {
            return Ok(out);
        }
        let idb = self.inner.upload(HostData::U32(ids))?;
        let (ts, toff) = (table.row_stride(), table.offset());
        let table_blocks = row_blocks(self, rows, &[(td, ts)], "gather_rows")?;
        let out_blocks = row_blocks(self, ids.len(), &[(DType::F32, cols)], "gather_rows")?;
        let mut jobs = Vec::new();
        for &(i0, i1) in &out_blocks {
            let (ow, obase) = self.inner.window(&out, i0 * cols, i1 * cols)?;
            let (iw, ibase) = self.inner.window(&idb, i0, i1)?;
            for &(r0, r1) in &table_blocks {
                let (t0, t1) = span(toff, ts, cols, r0, r1);
                let (tw, tbase) = self.inner.window(table.buffer(), t0, t1)?;
                jobs.push(
                    Job::new(
                        Family::Embedding,
                        "gather_rows",
                        ((i1 - i0) * cols).div_ceil(256),
                    )
                    .dtype("table", td)
                    .bind(1, tw)
                    .bind(2, iw)
                    .bind(3, ow)
                    .params(&[
                        u(i1 - i0)?,
                        u(cols)?,
                        u(t0)? - tbase,
                        u(ts)?,
                        u(r0)?,
                        u(r1)?,
                        u(i0)? - ibase,
                        u(i0 * cols)? - obase,
                    ]),
                );
            }
        }
        self.inner.submit(&jobs, "gather_rows")?;
        Ok(out)
    }

    fn scatter_rows(
        &self,
        mut dst: MatMut<'_, WgpuBuffer>,
        rows: &[u32],
        src: MatRef<'_, WgpuBuffer>,
        mode: ScatterMode,
    ) -> Result<()> {
        if src.cols() != dst.cols() || src.rows() != rows.len() {
            return Err(Error::Shape {
                op: "scatter_rows",
                reason: "source must be rows.len() x dst.cols()",
            });
        }
        let n = dst.rows();
        if let Some(i) = rows.iter().position(|&r| r as usize >= n) {
            return Err(Error::TargetOutOfRange {
                row: i,
                target: rows[i],
                vocab: n,
            });
        }
        let sd = float("scatter_rows", src.buffer().dtype)?;
        f32_out("scatter_rows", dst.buffer())?;
        let cols = dst.cols();
        if rows.is_empty() || cols == 0 {
            return Ok(());
        }
        // Group sources by destination row, keeping their order (CSR).
        let mut order: Vec<u32> = (0..rows.len()).map(u).collect::<Result<_>>()?;
        order.sort_by_key(|&i| rows[i as usize]);
        let mut uniq = Vec::new();
        let mut starts = Vec::new();
        for (k, &i) in order.iter().enumerate() {
            let r = rows[i as usize];
            if uniq.last() != Some(&r) {
                uniq.push(r);
                starts.push(u(k)?);
            }
        }
        starts.push(u(order.len())?);
        let ub = self.inner.upload(HostData::U32(&uniq))?;
        let sb = self.inner.upload(HostData::U32(&starts))?;
        let ob = self.inner.upload(HostData::U32(&order))?;
        let (uw, _) = self.inner.window(&ub, 0, uniq.len())?;
        let (stw, _) = self.inner.window(&sb, 0, starts.len())?;
        let (orw, _) = self.inner.window(&ob, 0, order.len())?;
        let (s0, s1) = span(src.offset(), src.row_stride(), cols, 0, src.rows());
        let (srw, sbase) = self.inner.window(src.buffer(), s0, s1)?;
        let (d_off, ds) = (dst.offset(), dst.row_stride());
        let dst_buf: &WgpuBuffer = dst.buffer_mut();
        let mut jobs = Vec::new();
        for (r0, r1) in row_blocks(self, n, &[(DType::F32, ds)], "scatter_rows")? {
            let g0 = uniq.partition_point(|&r| (r as usize) < r0);
            let g1 = uniq.partition_point(|&r| (r as usize) < r1);
            if g0 == g1 {
                continue;
            }
            let (d0, d1) = span(d_off, ds, cols, r0, r1);
            let (dw, dbase) = self.inner.window(dst_buf, d0, d1)?;
            jobs.push(
                Job::new(
                    Family::Embedding,
                    "scatter_rows",
                    ((g1 - g0) * cols).div_ceil(256),
                )
                .dtype("src", sd)
                .bind(3, dw)
                .bind(4, srw)
                .bind(5, uw)
                .bind(6, stw)
                .bind(7, orw)
                .params(&[
                    u(g1 - g0)?,
                    u(cols)?,
                    u(d0)? - dbase,
                    u(ds)?,
                    u(s0)? - sbase,
                    u(src.row_stride())?,
                    u32::from(mode == ScatterMode::Add),
                    u(r0)?,
                    u(g0)?,
                ]),
            );
        }
        self.inner.submit(&jobs, "scatter_rows")
    }
}

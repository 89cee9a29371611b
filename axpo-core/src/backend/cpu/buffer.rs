//! CPU buffers and the buffer op family.

use alloc::borrow::Cow;
use alloc::vec;
use alloc::vec::Vec;

use half::{bf16, f16};

use super::{Cpu, CpuGemm};
use crate::backend::{BufferOps, DType, DeviceBuffer, HostData, MatMut, MatRef};
use crate::error::{Error, Result};

/// A host-memory buffer of the CPU backend.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum CpuBuffer {
    /// f32 elements.
    F32(Vec<f32>),
    /// f16 elements.
    F16(Vec<f16>),
    /// bf16 elements.
    Bf16(Vec<bf16>),
    /// u32 elements.
    U32(Vec<u32>),
}

impl DeviceBuffer for CpuBuffer {
    fn dtype(&self) -> DType {
        match self {
            Self::F32(_) => DType::F32,
            Self::F16(_) => DType::F16,
            Self::Bf16(_) => DType::Bf16,
            Self::U32(_) => DType::U32,
        }
    }

    fn len(&self) -> usize {
        match self {
            Self::F32(v) => v.len(),
            Self::F16(v) => v.len(),
            Self::Bf16(v) => v.len(),
            Self::U32(v) => v.len(),
        }
    }
}

impl CpuBuffer {
    /// The elements `range` as f32, borrowed when the buffer already holds f32.
    ///
    /// # Errors
    /// [`Error::UnsupportedDType`] for u32 buffers; [`Error::Shape`] if the range is out of bounds.
    pub fn f32_range(&self, start: usize, end: usize, op: &'static str) -> Result<Cow<'_, [f32]>> {
        if start > end || end > self.len() {
            return Err(Error::Shape {
                op,
                reason: "range outside the buffer",
            });
        }
        Ok(match self {
            Self::F32(v) => Cow::Borrowed(&v[start..end]),
            Self::F16(v) => Cow::Owned(v[start..end].iter().map(|x| x.to_f32()).collect()),
            Self::Bf16(v) => Cow::Owned(v[start..end].iter().map(|x| x.to_f32()).collect()),
            Self::U32(_) => {
                return Err(Error::UnsupportedDType {
                    op,
                    dtype: DType::U32,
                    backend: "cpu",
                });
            }
        })
    }

    /// All elements as f32.
    ///
    /// # Errors
    /// [`Error::UnsupportedDType`] for u32 buffers.
    pub fn f32s(&self, op: &'static str) -> Result<Cow<'_, [f32]>> {
        self.f32_range(0, self.len(), op)
    }

    /// The f32 elements, mutably.
    ///
    /// # Errors
    /// [`Error::UnsupportedDType`] unless the buffer holds f32 (outputs of the CPU backend
    /// always do).
    pub fn f32s_mut(&mut self, op: &'static str) -> Result<&mut [f32]> {
        match self {
            Self::F32(v) => Ok(v),
            other => Err(Error::UnsupportedDType {
                op,
                dtype: other.dtype(),
                backend: "cpu",
            }),
        }
    }

    /// The u32 elements.
    ///
    /// # Errors
    /// [`Error::UnsupportedDType`] unless the buffer holds u32.
    pub fn u32s(&self, op: &'static str) -> Result<&[u32]> {
        match self {
            Self::U32(v) => Ok(v),
            other => Err(Error::UnsupportedDType {
                op,
                dtype: other.dtype(),
                backend: "cpu",
            }),
        }
    }

    /// Reads a strided matrix view as a dense row-major f32 matrix.
    pub(crate) fn dense_f32<'a>(
        view: &MatRef<'a, Self>,
        op: &'static str,
    ) -> Result<Cow<'a, [f32]>> {
        let (rows, cols, stride, off) =
            (view.rows(), view.cols(), view.row_stride(), view.offset());
        if view.is_dense() {
            return view.buffer().f32_range(off, off + rows * cols, op);
        }
        let mut out = Vec::with_capacity(rows * cols);
        for r in 0..rows {
            let start = off + r * stride;
            out.extend_from_slice(&view.buffer().f32_range(start, start + cols, op)?);
        }
        Ok(Cow::Owned(out))
    }
}

impl<G: CpuGemm> BufferOps for Cpu<G> {
    fn name(&self) -> &'static str {
        "cpu"
    }

    fn upload(&self, data: HostData<'_>) -> Result<CpuBuffer> {
        Ok(match data {
            HostData::F32(s) => CpuBuffer::F32(s.to_vec()),
            HostData::F16(s) => CpuBuffer::F16(s.to_vec()),
            HostData::Bf16(s) => CpuBuffer::Bf16(s.to_vec()),
            HostData::U32(s) => CpuBuffer::U32(s.to_vec()),
        })
    }

    fn zeros(&self, dtype: DType, len: usize) -> Result<CpuBuffer> {
        Ok(match dtype {
            DType::F32 => CpuBuffer::F32(vec![0.0; len]),
            DType::F16 => CpuBuffer::F16(vec![f16::ZERO; len]),
            DType::Bf16 => CpuBuffer::Bf16(vec![bf16::ZERO; len]),
            DType::U32 => CpuBuffer::U32(vec![0; len]),
        })
    }

    fn download_f32(&self, buffer: &CpuBuffer) -> Result<Vec<f32>> {
        Ok(buffer.f32s("download_f32")?.into_owned())
    }

    fn download_u32(&self, buffer: &CpuBuffer) -> Result<Vec<u32>> {
        Ok(buffer.u32s("download_u32")?.to_vec())
    }

    fn copy_rows(&self, src: MatRef<'_, CpuBuffer>, mut dst: MatMut<'_, CpuBuffer>) -> Result<()> {
        if src.rows() != dst.rows() || src.cols() != dst.cols() {
            return Err(Error::Shape {
                op: "copy_rows",
                reason: "source and destination shapes differ",
            });
        }
        let (rows, cols, d_off, d_stride) =
            (dst.rows(), dst.cols(), dst.offset(), dst.row_stride());
        if let (CpuBuffer::U32(s), CpuBuffer::U32(d)) = (src.buffer(), dst.buffer_mut()) {
            for r in 0..rows {
                let so = src.offset() + r * src.row_stride();
                let dof = d_off + r * d_stride;
                d[dof..dof + cols].copy_from_slice(&s[so..so + cols]);
            }
            return Ok(());
        }
        let data = CpuBuffer::dense_f32(&src, "copy_rows")?;
        let write = |r: usize, c: usize| d_off + r * d_stride + c;
        match dst.buffer_mut() {
            CpuBuffer::F32(d) => {
                for r in 0..rows {
                    d[write(r, 0)..write(r, cols)].copy_from_slice(&data[r * cols..(r + 1) * cols]);
                }
            }
            CpuBuffer::F16(d) => {
                for r in 0..rows {
                    for c in 0..cols {
                        d[write(r, c)] = f16::from_f32(data[r * cols + c]);
                    }
                }
            }
            CpuBuffer::Bf16(d) => {
                for r in 0..rows {
                    for c in 0..cols {
                        d[write(r, c)] = bf16::from_f32(data[r * cols + c]);
                    }
                }
            }
            CpuBuffer::U32(_) => {
                return Err(Error::UnsupportedDType {
                    op: "copy_rows",
                    dtype: DType::U32,
                    backend: "cpu",
                });
            }
        }
        Ok(())
    }
}

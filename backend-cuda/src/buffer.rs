//! Device buffers and the buffer op family.

use axpo_core::backend::{BufferOps, DType, DeviceBuffer, HostData, MatMut, MatRef};
use axpo_core::{Error, Result};
use cudarc::driver::{CudaSlice, DevicePtr};
use half::{bf16, f16};

use crate::device::Cuda;
use crate::error::drv;

/// A buffer in device memory: raw bytes with an element type.
#[derive(Debug)]
pub struct CudaBuffer {
    dtype: DType,
    len: usize,
    data: Option<CudaSlice<u8>>,
}

impl DeviceBuffer for CudaBuffer {
    fn dtype(&self) -> DType {
        self.dtype
    }
    fn len(&self) -> usize {
        self.len
    }
}

/// The element-type code the kernels take (`DT_*` in the common header).
#[must_use]
pub(crate) const fn dt_code(dtype: DType) -> u32 {
    match dtype {
        DType::F32 => 0,
        DType::F16 => 1,
        DType::Bf16 => 2,
        _ => 3,
    }
}

/// The suffix of kernel instantiations for an element type.
#[must_use]
pub(crate) const fn dt_suffix(dtype: DType) -> &'static str {
    match dtype {
        DType::F32 => "f32",
        DType::F16 => "f16",
        DType::Bf16 => "bf16",
        _ => "u32",
    }
}

/// A device pointer into a buffer, with the number of elements from it to the buffer's end:
/// what the launch wrappers check every access against.
#[derive(Debug, Clone, Copy)]
pub(crate) struct DevPtr {
    pub(crate) ptr: u64,
    pub(crate) avail: usize,
    pub(crate) dtype: DType,
}

impl DevPtr {
    /// Checks that `n` elements from the pointer are inside the buffer.
    pub(crate) fn need(&self, n: usize, op: &'static str) -> Result<()> {
        if n <= self.avail {
            Ok(())
        } else {
            Err(Error::Shape {
                op,
                reason: "an operand is shorter than the op needs",
            })
        }
    }

    /// Checks that a `rows x cols` view with row stride `stride` is inside the buffer.
    pub(crate) fn need_view(
        &self,
        rows: usize,
        cols: usize,
        stride: usize,
        op: &'static str,
    ) -> Result<()> {
        self.need(view_extent(rows, cols, stride), op)
    }
}

/// Elements spanned by a `rows x cols` view with row stride `stride` (0 when empty).
#[must_use]
pub(crate) fn view_extent(rows: usize, cols: usize, stride: usize) -> usize {
    if rows == 0 || cols == 0 {
        0
    } else {
        (rows - 1).saturating_mul(stride).saturating_add(cols)
    }
}

impl CudaBuffer {
    /// The device pointer of element `offset`.
    pub(crate) fn dev(&self, cuda: &Cuda, offset: usize) -> Result<DevPtr> {
        if offset > self.len {
            return Err(Error::Shape {
                op: "device pointer",
                reason: "offset past the end of the buffer",
            });
        }
        let base = match &self.data {
            Some(s) => {
                let (p, _sync) = s.device_ptr(cuda.stream());
                p
            }
            None => 0,
        };
        Ok(DevPtr {
            ptr: base + (offset * self.dtype.size()) as u64,
            avail: self.len - offset,
            dtype: self.dtype,
        })
    }

    /// The device pointer of a view's first element.
    pub(crate) fn dev_view(view: &MatRef<'_, CudaBuffer>, cuda: &Cuda) -> Result<DevPtr> {
        view.buffer().dev(cuda, view.offset())
    }

    /// The device pointer of a mutable view's first element.
    pub(crate) fn dev_view_mut(view: &MatMut<'_, CudaBuffer>, cuda: &Cuda) -> Result<DevPtr> {
        view.buffer().dev(cuda, view.offset())
    }

    /// A new uninitialised-free (zeroed) buffer.
    pub(crate) fn alloc(cuda: &Cuda, dtype: DType, len: usize) -> Result<Self> {
        let bytes = len
            .checked_mul(dtype.size())
            .ok_or_else(|| crate::error::limit("buffer size"))?;
        let data = if bytes == 0 {
            None
        } else {
            Some(cuda.stream().alloc_zeros::<u8>(bytes).map_err(drv)?)
        };
        Ok(Self { dtype, len, data })
    }

    /// Copies all bytes of `self` into `dst` with the driver's device-to-device copy
    /// (`cuMemcpyDtoDAsync`), the reference for the device's copy bandwidth.
    ///
    /// # Errors
    /// [`Error::Shape`] if the two buffers differ in byte size; a backend error if the copy
    /// fails.
    pub fn copy_to(&self, cuda: &Cuda, dst: &mut CudaBuffer) -> Result<()> {
        if self.len * self.dtype.size() != dst.len * dst.dtype.size() {
            return Err(Error::Shape {
                op: "copy_to",
                reason: "buffers differ in byte size",
            });
        }
        match (&self.data, &mut dst.data) {
            (Some(s), Some(d)) => cuda.stream().memcpy_dtod(s, d).map_err(drv),
            _ => Ok(()),
        }
    }

    fn bytes(&self, cuda: &Cuda) -> Result<Vec<u8>> {
        match &self.data {
            Some(s) => cuda.stream().clone_dtoh(s).map_err(drv),
            None => Ok(Vec::new()),
        }
    }
}

/// Converts little-endian element bytes to f32.
#[must_use]
pub(crate) fn bytes_to_f32(dtype: DType, bytes: &[u8]) -> Vec<f32> {
    match dtype {
        DType::F32 => bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
        DType::F16 => bytes
            .chunks_exact(2)
            .map(|c| f16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        DType::Bf16 => bytes
            .chunks_exact(2)
            .map(|c| bf16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        _ => Vec::new(),
    }
}

impl BufferOps for Cuda {
    fn name(&self) -> &'static str {
        "cuda"
    }

    fn upload(&self, data: HostData<'_>) -> Result<CudaBuffer> {
        let bytes = data.as_bytes();
        let slice = if bytes.is_empty() {
            None
        } else {
            Some(self.stream().clone_htod(bytes).map_err(drv)?)
        };
        Ok(CudaBuffer {
            dtype: data.dtype(),
            len: data.len(),
            data: slice,
        })
    }

    fn zeros(&self, dtype: DType, len: usize) -> Result<CudaBuffer> {
        CudaBuffer::alloc(self, dtype, len)
    }

    fn download_f32(&self, buffer: &CudaBuffer) -> Result<Vec<f32>> {
        if !buffer.dtype.is_float() {
            return Err(Error::UnsupportedDType {
                op: "download_f32",
                dtype: buffer.dtype,
                backend: "cuda",
            });
        }
        Ok(bytes_to_f32(buffer.dtype, &buffer.bytes(self)?))
    }

    fn download_u32(&self, buffer: &CudaBuffer) -> Result<Vec<u32>> {
        if buffer.dtype != DType::U32 {
            return Err(Error::UnsupportedDType {
                op: "download_u32",
                dtype: buffer.dtype,
                backend: "cuda",
            });
        }
        Ok(buffer
            .bytes(self)?
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect())
    }

    fn copy_rows(&self, src: MatRef<'_, CudaBuffer>, dst: MatMut<'_, CudaBuffer>) -> Result<()> {
        if src.rows() != dst.rows() || src.cols() != dst.cols() {
            return Err(Error::Shape {
                op: "copy_rows",
                reason: "source and destination shapes differ",
            });
        }
        let (sd, dd) = (src.buffer().dtype(), dst.buffer().dtype());
        if (sd == DType::U32) != (dd == DType::U32) {
            return Err(Error::UnsupportedDType {
                op: "copy_rows",
                dtype: if sd == DType::U32 { dd } else { sd },
                backend: "cuda",
            });
        }
        if src.rows() == 0 || src.cols() == 0 {
            return Ok(());
        }
        let s = CudaBuffer::dev_view(&src, self)?;
        let d = CudaBuffer::dev_view_mut(&dst, self)?;
        self.k_copy_rows(
            s,
            src.row_stride(),
            d,
            dst.row_stride(),
            src.rows(),
            src.cols(),
        )
    }

    fn synchronize(&self) -> Result<()> {
        self.stream().synchronize().map_err(drv)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_convert_for_every_float_type() {
        let v = [1.5f32, -2.0, 0.25];
        let b: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
        assert_eq!(bytes_to_f32(DType::F32, &b), v);
        let h: Vec<u8> = v
            .iter()
            .flat_map(|x| bf16::from_f32(*x).to_le_bytes())
            .collect();
        assert_eq!(bytes_to_f32(DType::Bf16, &h), v);
        let h: Vec<u8> = v
            .iter()
            .flat_map(|x| f16::from_f32(*x).to_le_bytes())
            .collect();
        assert_eq!(bytes_to_f32(DType::F16, &h), v);
    }

    #[test]
    fn view_extents() {
        assert_eq!(view_extent(0, 5, 7), 0);
        assert_eq!(view_extent(3, 0, 7), 0);
        assert_eq!(view_extent(1, 5, 7), 5);
        assert_eq!(view_extent(3, 5, 7), 19);
        let p = DevPtr {
            ptr: 0,
            avail: 19,
            dtype: DType::F32,
        };
        assert!(p.need_view(3, 5, 7, "t").is_ok());
        assert!(p.need_view(3, 6, 7, "t").is_err());
    }

    #[test]
    fn dtype_codes_match_the_header() {
        let header = crate::kernels::COMMON_HEADER;
        for (dt, code) in [
            (DType::F32, "DT_F32 0u"),
            (DType::F16, "DT_F16 1u"),
            (DType::Bf16, "DT_BF16 2u"),
            (DType::U32, "DT_U32 3u"),
        ] {
            assert!(header.contains(code));
            assert_eq!(
                format!("{}u", dt_code(dt)),
                code.split(' ').nth(1).unwrap_or("")
            );
        }
    }
}

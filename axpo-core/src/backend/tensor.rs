//! Element types, host data, and the strided matrix views every backend op takes.

use half::{bf16, f16};

use crate::error::{Error, Result};

/// Element type of a device buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DType {
    /// IEEE binary32.
    F32,
    /// IEEE binary16.
    F16,
    /// bfloat16 (8-bit exponent, 7-bit mantissa).
    Bf16,
    /// Unsigned 32-bit integer (token ids, indices).
    U32,
}

impl DType {
    /// Size of one element in bytes.
    #[must_use]
    pub const fn size(self) -> usize {
        match self {
            Self::F32 | Self::U32 => 4,
            Self::F16 | Self::Bf16 => 2,
        }
    }

    /// Whether the type is a floating-point type.
    #[must_use]
    pub const fn is_float(self) -> bool {
        !matches!(self, Self::U32)
    }
}

/// Borrowed host data to upload.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub enum HostData<'a> {
    /// f32 values.
    F32(&'a [f32]),
    /// f16 values.
    F16(&'a [f16]),
    /// bf16 values.
    Bf16(&'a [bf16]),
    /// u32 values.
    U32(&'a [u32]),
}

impl HostData<'_> {
    /// The element type.
    #[must_use]
    pub const fn dtype(&self) -> DType {
        match self {
            Self::F32(_) => DType::F32,
            Self::F16(_) => DType::F16,
            Self::Bf16(_) => DType::Bf16,
            Self::U32(_) => DType::U32,
        }
    }

    /// Number of elements.
    #[must_use]
    pub const fn len(&self) -> usize {
        match self {
            Self::F32(s) => s.len(),
            Self::F16(s) => s.len(),
            Self::Bf16(s) => s.len(),
            Self::U32(s) => s.len(),
        }
    }

    /// Whether there are no elements.
    #[must_use]
    pub const fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The raw bytes, little-endian as in memory.
    #[must_use]
    pub fn as_bytes(&self) -> &[u8] {
        match self {
            Self::F32(s) => bytemuck::cast_slice(s),
            Self::F16(s) => bytemuck::cast_slice(s),
            Self::Bf16(s) => bytemuck::cast_slice(s),
            Self::U32(s) => bytemuck::cast_slice(s),
        }
    }
}

/// What every backend buffer reports about itself.
pub trait DeviceBuffer: core::fmt::Debug + Send + Sync {
    /// Element type.
    fn dtype(&self) -> DType;
    /// Number of elements.
    fn len(&self) -> usize;
    /// Whether the buffer holds no elements.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Whether an operand is used as stored or transposed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// Use the matrix as stored (row-major).
    AsStored,
    /// Use its transpose.
    Transposed,
}

/// Whether an op overwrites its output or adds to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accumulate {
    /// `out = result`.
    Overwrite,
    /// `out += result`.
    Add,
}

/// Where a matrix view sits in its buffer: `rows x cols` elements starting at `offset`,
/// consecutive rows `row_stride` elements apart. Shared by [`MatRef`] and [`MatMut`].
#[derive(Debug, Clone, Copy)]
struct ViewShape {
    offset: usize,
    rows: usize,
    cols: usize,
    row_stride: usize,
}

impl ViewShape {
    /// A whole buffer of `len` elements as a dense `rows x cols` matrix.
    fn dense(len: usize, rows: usize, cols: usize) -> Result<Self> {
        if rows.checked_mul(cols) != Some(len) {
            return Err(Error::Shape {
                op: "matrix view",
                reason: "rows * cols differs from the buffer length",
            });
        }
        Ok(Self {
            offset: 0,
            rows,
            cols,
            row_stride: cols,
        })
    }

    /// A strided view that must fit in a buffer of `len` elements.
    fn strided(len: usize, offset: usize, rows: usize, cols: usize, stride: usize) -> Result<Self> {
        if stride < cols {
            return Err(Error::Shape {
                op: "matrix view",
                reason: "row stride is smaller than the number of columns",
            });
        }
        let shape = Self {
            offset,
            rows,
            cols,
            row_stride: stride,
        };
        if rows == 0 || cols == 0 {
            return if offset <= len {
                Ok(shape)
            } else {
                Err(Error::Shape {
                    op: "matrix view",
                    reason: "offset is past the end of the buffer",
                })
            };
        }
        let end = (rows - 1)
            .checked_mul(stride)
            .and_then(|v| v.checked_add(cols))
            .and_then(|v| v.checked_add(offset));
        match end {
            Some(end) if end <= len => Ok(shape),
            _ => Err(Error::Shape {
                op: "matrix view",
                reason: "the view extends past the end of the buffer",
            }),
        }
    }

    fn rows_range(self, start: usize, end: usize) -> Result<Self> {
        if start > end || end > self.rows {
            return Err(Error::Shape {
                op: "matrix view",
                reason: "row range outside the view",
            });
        }
        Ok(Self {
            offset: self.offset + start * self.row_stride,
            rows: end - start,
            ..self
        })
    }

    fn cols_range(self, start: usize, end: usize) -> Result<Self> {
        if start > end || end > self.cols {
            return Err(Error::Shape {
                op: "matrix view",
                reason: "column range outside the view",
            });
        }
        Ok(Self {
            offset: self.offset + start,
            cols: end - start,
            ..self
        })
    }
}

/// A read-only row-major matrix inside a buffer: `rows x cols` elements starting at `offset`,
/// consecutive rows `row_stride` elements apart (`row_stride >= cols`).
#[derive(Debug)]
pub struct MatRef<'a, B: ?Sized> {
    buffer: &'a B,
    shape: ViewShape,
}

impl<B: ?Sized> Clone for MatRef<'_, B> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<B: ?Sized> Copy for MatRef<'_, B> {}

impl<'a, B: DeviceBuffer + ?Sized> MatRef<'a, B> {
    /// The whole buffer as a dense `rows x cols` matrix.
    ///
    /// # Errors
    /// [`Error::Shape`] if `rows * cols` differs from the buffer's length.
    pub fn new(buffer: &'a B, rows: usize, cols: usize) -> Result<Self> {
        let shape = ViewShape::dense(buffer.len(), rows, cols)?;
        Ok(Self { buffer, shape })
    }

    /// A strided view.
    ///
    /// # Errors
    /// [`Error::Shape`] if the view does not fit in the buffer or `row_stride < cols`.
    pub fn strided(
        buffer: &'a B,
        offset: usize,
        rows: usize,
        cols: usize,
        row_stride: usize,
    ) -> Result<Self> {
        let shape = ViewShape::strided(buffer.len(), offset, rows, cols, row_stride)?;
        Ok(Self { buffer, shape })
    }

    /// Rows `start..end` of this view.
    ///
    /// # Errors
    /// [`Error::Shape`] if the range is not inside the view.
    pub fn rows_range(self, start: usize, end: usize) -> Result<Self> {
        let shape = self.shape.rows_range(start, end)?;
        Ok(Self { shape, ..self })
    }

    /// Columns `start..end` of this view.
    ///
    /// # Errors
    /// [`Error::Shape`] if the range is not inside the view.
    pub fn cols_range(self, start: usize, end: usize) -> Result<Self> {
        let shape = self.shape.cols_range(start, end)?;
        Ok(Self { shape, ..self })
    }
}

impl<'a, B: ?Sized> MatRef<'a, B> {
    /// The underlying buffer.
    #[must_use]
    pub fn buffer(&self) -> &'a B {
        self.buffer
    }
    /// Element offset of the first element.
    #[must_use]
    pub fn offset(&self) -> usize {
        self.shape.offset
    }
    /// Number of rows.
    #[must_use]
    pub fn rows(&self) -> usize {
        self.shape.rows
    }
    /// Number of columns.
    #[must_use]
    pub fn cols(&self) -> usize {
        self.shape.cols
    }
    /// Distance between consecutive rows, in elements.
    #[must_use]
    pub fn row_stride(&self) -> usize {
        self.shape.row_stride
    }
    /// Whether rows are contiguous (`row_stride == cols`).
    #[must_use]
    pub fn is_dense(&self) -> bool {
        self.shape.row_stride == self.shape.cols || self.shape.rows <= 1
    }
}

/// A writable row-major matrix inside a buffer; see [`MatRef`].
#[derive(Debug)]
pub struct MatMut<'a, B: ?Sized> {
    buffer: &'a mut B,
    shape: ViewShape,
}

impl<'a, B: DeviceBuffer + ?Sized> MatMut<'a, B> {
    /// The whole buffer as a dense `rows x cols` matrix.
    ///
    /// # Errors
    /// [`Error::Shape`] if `rows * cols` differs from the buffer's length.
    pub fn new(buffer: &'a mut B, rows: usize, cols: usize) -> Result<Self> {
        let shape = ViewShape::dense(buffer.len(), rows, cols)?;
        Ok(Self { buffer, shape })
    }

    /// A strided view.
    ///
    /// # Errors
    /// [`Error::Shape`] if the view does not fit in the buffer or `row_stride < cols`.
    pub fn strided(
        buffer: &'a mut B,
        offset: usize,
        rows: usize,
        cols: usize,
        row_stride: usize,
    ) -> Result<Self> {
        let shape = ViewShape::strided(buffer.len(), offset, rows, cols, row_stride)?;
        Ok(Self { buffer, shape })
    }
}

impl<'a, B: ?Sized> MatMut<'a, B> {
    /// Rows `start..end` of this view.
    ///
    /// # Errors
    /// [`Error::Shape`] if the range is not inside the view.
    pub fn rows_range(self, start: usize, end: usize) -> Result<Self> {
        let shape = self.shape.rows_range(start, end)?;
        Ok(Self { shape, ..self })
    }

    /// Columns `start..end` of this view.
    ///
    /// # Errors
    /// [`Error::Shape`] if the range is not inside the view.
    pub fn cols_range(self, start: usize, end: usize) -> Result<Self> {
        let shape = self.shape.cols_range(start, end)?;
        Ok(Self { shape, ..self })
    }

    /// The underlying buffer.
    pub fn buffer_mut(&mut self) -> &mut B {
        self.buffer
    }
    /// The underlying buffer, read-only.
    #[must_use]
    pub fn buffer(&self) -> &B {
        self.buffer
    }
    /// Element offset of the first element.
    #[must_use]
    pub fn offset(&self) -> usize {
        self.shape.offset
    }
    /// Number of rows.
    #[must_use]
    pub fn rows(&self) -> usize {
        self.shape.rows
    }
    /// Number of columns.
    #[must_use]
    pub fn cols(&self) -> usize {
        self.shape.cols
    }
    /// Distance between consecutive rows, in elements.
    #[must_use]
    pub fn row_stride(&self) -> usize {
        self.shape.row_stride
    }
    /// A shorter-lived view of the same matrix.
    pub fn reborrow(&mut self) -> MatMut<'_, B> {
        MatMut {
            buffer: &mut *self.buffer,
            shape: self.shape,
        }
    }
}

/// How `matmul` finishes: `out = alpha * op(A) op(B)` or `out += alpha * op(A) op(B)`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Epilogue {
    /// Scale applied to the product.
    pub alpha: f32,
    /// Overwrite or accumulate.
    pub accumulate: Accumulate,
}

impl Epilogue {
    /// `out = op(A) op(B)`.
    pub const OVERWRITE: Self = Self {
        alpha: 1.0,
        accumulate: Accumulate::Overwrite,
    };
    /// `out += op(A) op(B)`.
    pub const ADD: Self = Self {
        alpha: 1.0,
        accumulate: Accumulate::Add,
    };
}

/// Elementwise activation functions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Activation {
    /// `x * sigmoid(x)`.
    Silu,
    /// `0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))` (PyTorch `gelu_pytorch_tanh`).
    GeluTanh,
    /// `0.5 x (1 + erf(x / sqrt 2))` (PyTorch `nn.GELU()`).
    GeluErf,
}

/// Which keys each query may attend to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum AttentionMask<'a> {
    /// Every query sees every key.
    Full,
    /// Query `i` sits at absolute position `past + i` and sees keys `0..=past + i`
    /// (text decoding; `past` is the number of cached positions before the first query).
    Causal {
        /// Cached positions before the first query row.
        past: usize,
    },
    /// Block-diagonal: `bounds` are cumulative segment boundaries `[0, b1, ..., n]` over both
    /// queries and keys (which must be the same rows); a row attends only within its segment
    /// (the vision tower's per-image attention).
    Segments(&'a [usize]),
}

/// Shape and mask of an attention call. Queries are `q_rows x (heads * head_dim)`, keys and values
/// `kv_rows x (kv_heads * head_dim)`; query head `h` uses key/value head `h / (heads / kv_heads)`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AttentionSpec<'a> {
    /// Query heads.
    pub heads: usize,
    /// Key/value heads (divides `heads`).
    pub kv_heads: usize,
    /// Width of one head.
    pub head_dim: usize,
    /// Score scale, usually `1 / sqrt(head_dim)`.
    pub scale: f32,
    /// Mask.
    pub mask: AttentionMask<'a>,
}

/// Whether a scatter replaces destination rows or adds to them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScatterMode {
    /// `dst[row] = src`.
    Replace,
    /// `dst[row] += src`.
    Add,
}

//! The crate's error type, and its conversion into `axpo_core::Error::Backend`.

use core::fmt;

use axpo_core::{BackendError, BackendErrorKind, Error};

/// What can go wrong in the CUDA backend. Every public function converts it into
/// [`axpo_core::Error::Backend`] (the value is kept as the error's source).
#[derive(Debug)]
#[non_exhaustive]
pub enum CudaError {
    /// A CUDA shared library (`libcuda`, `libnvrtc`, `libcublas`) could not be loaded.
    LibraryMissing {
        /// The library, e.g. `"libcuda (the NVIDIA driver)"`.
        library: &'static str,
    },
    /// A driver call failed.
    Driver(cudarc::driver::DriverError),
    /// A cuBLAS call failed.
    Cublas(cudarc::cublas::result::CublasError),
    /// NVRTC failed to create, compile or emit a program.
    Nvrtc {
        /// The kernel family (file name without `.cu`).
        family: &'static str,
        /// The NVRTC status.
        status: cudarc::nvrtc::result::NvrtcError,
        /// The compile log.
        log: String,
    },
    /// A kernel the crate expects is missing from its compiled family.
    MissingKernel {
        /// The kernel name.
        name: &'static str,
    },
    /// A size does not fit a kernel's index type or a launch dimension.
    Limit {
        /// What overflowed.
        what: &'static str,
    },
    /// A lock of the backend was poisoned by a panic in another thread.
    Poisoned,
}

impl CudaError {
    /// The [`BackendErrorKind`] this error maps to.
    #[must_use]
    pub fn kind(&self) -> BackendErrorKind {
        use cudarc::driver::sys::cudaError_enum as E;
        match self {
            Self::LibraryMissing { .. } => BackendErrorKind::DeviceUnavailable,
            Self::Driver(e) => match e.0 {
                E::CUDA_ERROR_OUT_OF_MEMORY => BackendErrorKind::OutOfMemory,
                E::CUDA_ERROR_NO_DEVICE
                | E::CUDA_ERROR_INVALID_DEVICE
                | E::CUDA_ERROR_NOT_INITIALIZED
                | E::CUDA_ERROR_DEINITIALIZED
                | E::CUDA_ERROR_SYSTEM_DRIVER_MISMATCH
                | E::CUDA_ERROR_COMPAT_NOT_SUPPORTED_ON_DEVICE => {
                    BackendErrorKind::DeviceUnavailable
                }
                E::CUDA_ERROR_INVALID_PTX
                | E::CUDA_ERROR_INVALID_IMAGE
                | E::CUDA_ERROR_NO_BINARY_FOR_GPU
                | E::CUDA_ERROR_UNSUPPORTED_PTX_VERSION => BackendErrorKind::KernelCompile,
                E::CUDA_ERROR_LAUNCH_FAILED
                | E::CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES
                | E::CUDA_ERROR_ILLEGAL_ADDRESS
                | E::CUDA_ERROR_INVALID_VALUE
                | E::CUDA_ERROR_NOT_FOUND => BackendErrorKind::Launch,
                _ => BackendErrorKind::Other,
            },
            Self::Cublas(_) => BackendErrorKind::Launch,
            Self::Nvrtc { .. } | Self::MissingKernel { .. } => BackendErrorKind::KernelCompile,
            Self::Limit { .. } => BackendErrorKind::LimitExceeded,
            Self::Poisoned => BackendErrorKind::Other,
        }
    }
}

impl fmt::Display for CudaError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::LibraryMissing { library } => write!(
                f,
                "{library} could not be loaded (no NVIDIA driver or CUDA library on this machine, \
                 or it is not on LD_LIBRARY_PATH)"
            ),
            Self::Driver(e) => write!(f, "CUDA driver: {e}"),
            Self::Cublas(e) => write!(f, "cuBLAS: {e:?}"),
            Self::Nvrtc {
                family,
                status,
                log,
            } => write!(f, "NVRTC failed on {family}.cu ({status:?}):\n{log}"),
            Self::MissingKernel { name } => write!(f, "kernel `{name}` is missing"),
            Self::Limit { what } => write!(f, "size limit exceeded: {what}"),
            Self::Poisoned => f.write_str("a lock of the CUDA backend was poisoned"),
        }
    }
}

impl std::error::Error for CudaError {}

impl From<cudarc::driver::DriverError> for CudaError {
    fn from(e: cudarc::driver::DriverError) -> Self {
        Self::Driver(e)
    }
}

impl From<cudarc::cublas::result::CublasError> for CudaError {
    fn from(e: cudarc::cublas::result::CublasError) -> Self {
        Self::Cublas(e)
    }
}

impl From<CudaError> for Error {
    fn from(e: CudaError) -> Self {
        let message = e.to_string();
        Error::Backend(BackendError::new("cuda", e.kind(), message).with_source(e))
    }
}

/// Shorthand: a driver error as a core error.
pub(crate) fn drv(e: cudarc::driver::DriverError) -> Error {
    CudaError::Driver(e).into()
}

/// Shorthand: a limit error as a core error.
pub(crate) fn limit(what: &'static str) -> Error {
    CudaError::Limit { what }.into()
}

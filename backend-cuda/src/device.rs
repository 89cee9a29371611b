//! The backend handle: one CUDA context, one stream, one cuBLAS handle, and the compiled kernel
//! modules of this device.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};

use axpo_core::Result;
use cudarc::cublas::CudaBlas;
use cudarc::driver::{CudaContext, CudaFunction, CudaModule, CudaStream};

use crate::error::{CudaError, drv};
use crate::kernels::{Family, compile_family};
use crate::launch;

/// How operands in f32 are multiplied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Precision {
    /// Every op computes on the values it is given in f32 (half inputs are widened); GEMMs with
    /// an f32 operand run as f32 SGEMM, attention on f32 inputs runs the exact CUDA-core
    /// kernel. bf16 x bf16 GEMMs and bf16 attention still use the tensor cores (products of
    /// bf16 values are exact in f32). The default, and what the conformance suite checks.
    #[default]
    Exact,
    /// f32 operands of GEMMs and of prefill attention are rounded to bf16 so that every
    /// product runs on the tensor cores, as PyTorch's bf16 autocast does. For model
    /// inference.
    Bf16,
}

/// Default device-memory budget of the logits workspace of the fused output-head ops.
pub const DEFAULT_HEAD_WORKSPACE: usize = 2 << 30;

pub(crate) struct Inner {
    pub(crate) ctx: Arc<CudaContext>,
    pub(crate) stream: Arc<CudaStream>,
    pub(crate) blas: Mutex<CudaBlas>,
    pub(crate) arch: u32,
    pub(crate) sm_count: u32,
    pub(crate) name: String,
    modules: Mutex<HashMap<Family, Arc<CudaModule>>>,
    functions: Mutex<HashMap<String, CudaFunction>>,
}

/// The CUDA backend: a cheap handle (`Clone`) on one device.
///
/// Every op is queued on the handle's one stream, so ops run in the order they are called;
/// downloads wait for the queue. Kernels are compiled by NVRTC for the device's architecture on
/// first use and cached for the process.
#[derive(Clone)]
pub struct Cuda {
    pub(crate) inner: Arc<Inner>,
    pub(crate) precision: Precision,
    pub(crate) head_workspace: usize,
}

impl fmt::Debug for Cuda {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cuda")
            .field("device", &self.inner.name)
            .field("ordinal", &self.inner.ctx.ordinal())
            .field("arch", &self.inner.arch)
            .field("precision", &self.precision)
            .finish()
    }
}

impl Cuda {
    /// Opens device `ordinal`.
    ///
    /// # Errors
    /// [`axpo_core::Error::Backend`] of kind `DeviceUnavailable` when the driver library, NVRTC
    /// or cuBLAS cannot be loaded or no such device exists (never a panic); another backend
    /// error if the context, stream or cuBLAS handle cannot be created.
    pub fn new(ordinal: usize) -> Result<Self> {
        let present = launch::libraries_present();
        if !present.driver {
            return Err(CudaError::LibraryMissing {
                library: "libcuda (the NVIDIA driver)",
            }
            .into());
        }
        if !present.nvrtc {
            return Err(CudaError::LibraryMissing {
                library: "libnvrtc (CUDA 13 NVRTC)",
            }
            .into());
        }
        if !present.cublas {
            return Err(CudaError::LibraryMissing {
                library: "libcublas (CUDA 13 cuBLAS)",
            }
            .into());
        }
        let ctx = CudaContext::new(ordinal).map_err(drv)?;
        launch::single_stream_mode(&ctx);
        let (major, minor) = ctx.compute_capability().map_err(drv)?;
        let arch = u32::try_from(major * 10 + minor).map_err(|_| crate::error::limit("arch"))?;
        let sm_count = ctx
            .attribute(
                cudarc::driver::sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT,
            )
            .map_err(drv)?;
        let name = ctx.name().map_err(drv)?;
        let stream = ctx.default_stream();
        let blas = CudaBlas::new(Arc::clone(&stream)).map_err(CudaError::from)?;
        Ok(Self {
            inner: Arc::new(Inner {
                ctx,
                stream,
                blas: Mutex::new(blas),
                arch,
                sm_count: u32::try_from(sm_count.max(1)).unwrap_or(1),
                name,
                modules: Mutex::new(HashMap::new()),
                functions: Mutex::new(HashMap::new()),
            }),
            precision: Precision::Exact,
            head_workspace: DEFAULT_HEAD_WORKSPACE,
        })
    }

    /// The same device with another [`Precision`] policy (the handle is shared).
    #[must_use]
    pub fn with_precision(mut self, precision: Precision) -> Self {
        self.precision = precision;
        self
    }

    /// The same device with another workspace budget (bytes) for the logits chunks of the
    /// fused output-head ops; memory use of those ops is bounded by it, whatever the batch.
    #[must_use]
    pub fn with_head_workspace(mut self, bytes: usize) -> Self {
        self.head_workspace = bytes.max(1 << 20);
        self
    }

    /// The precision policy.
    #[must_use]
    pub fn precision(&self) -> Precision {
        self.precision
    }

    /// The device's name, e.g. `"NVIDIA H100 80GB HBM3"`.
    #[must_use]
    pub fn device_name(&self) -> &str {
        &self.inner.name
    }

    /// The compute capability as `major * 10 + minor` (90 for Hopper).
    #[must_use]
    pub fn arch(&self) -> u32 {
        self.inner.arch
    }

    /// Number of streaming multiprocessors.
    #[must_use]
    pub fn sm_count(&self) -> u32 {
        self.inner.sm_count
    }

    /// Free and total device memory in bytes.
    ///
    /// # Errors
    /// A backend error if the driver call fails.
    pub fn memory_info(&self) -> Result<(usize, usize)> {
        self.inner.ctx.mem_get_info().map_err(drv)
    }

    /// Compiles and loads every kernel family now (otherwise each is compiled on first use).
    ///
    /// # Errors
    /// A `KernelCompile` backend error with the NVRTC log.
    pub fn warm_up(&self) -> Result<()> {
        for &f in Family::ALL {
            self.module(f)?;
        }
        Ok(())
    }

    /// Device time of the work `f` queues, in milliseconds, measured with CUDA events on this
    /// handle's stream (waits for the work to finish).
    ///
    /// # Errors
    /// The first error of `f`, or a backend error from the event calls.
    pub fn time_ms(&self, mut f: impl FnMut() -> Result<()>) -> Result<f32> {
        let flags = Some(cudarc::driver::sys::CUevent_flags::CU_EVENT_DEFAULT);
        let start = self.inner.ctx.new_event(flags).map_err(drv)?;
        let stop = self.inner.ctx.new_event(flags).map_err(drv)?;
        start.record(self.stream()).map_err(drv)?;
        f()?;
        stop.record(self.stream()).map_err(drv)?;
        stop.synchronize().map_err(drv)?;
        start.elapsed_ms(&stop).map_err(drv)
    }

    pub(crate) fn stream(&self) -> &Arc<CudaStream> {
        &self.inner.stream
    }

    fn module(&self, family: Family) -> Result<Arc<CudaModule>> {
        let mut modules = self.inner.modules.lock().map_err(|_| CudaError::Poisoned)?;
        if let Some(m) = modules.get(&family) {
            return Ok(Arc::clone(m));
        }
        let image = compile_family(family, self.inner.arch)?;
        let module = self
            .inner
            .ctx
            .load_module(cudarc::nvrtc::Ptx::from_binary(image.cubin.clone()))
            .map_err(drv)?;
        modules.insert(family, Arc::clone(&module));
        Ok(module)
    }

    /// The kernel `name` of `family`, loaded on first use.
    pub(crate) fn function(&self, family: Family, name: &str) -> Result<CudaFunction> {
        {
            let fns = self
                .inner
                .functions
                .lock()
                .map_err(|_| CudaError::Poisoned)?;
            if let Some(f) = fns.get(name) {
                return Ok(f.clone());
            }
        }
        let module = self.module(family)?;
        let f = module.load_function(name).map_err(drv)?;
        let mut fns = self
            .inner
            .functions
            .lock()
            .map_err(|_| CudaError::Poisoned)?;
        fns.insert(name.to_string(), f.clone());
        Ok(f)
    }
}

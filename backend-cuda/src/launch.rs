//! Every `unsafe` of the crate: library probes, NVRTC, kernel launches and cuBLAS calls.
//!
//! Each launch wrapper checks, before its `unsafe` block, that every pointer it passes covers
//! every element the kernel touches (`DevPtr::need*`, which counts elements from the pointer to
//! the end of its buffer), that element types match the kernel instantiation, and that sizes
//! fit the kernel's index types. Ordering: a [`Cuda`] handle owns one stream, every upload,
//! launch, cuBLAS call, download and free of its buffers is queued on it, so a kernel runs
//! after the work that wrote its inputs and before any later read of its outputs, and a buffer
//! dropped while a kernel that uses it is queued is freed in stream order (`cuMemFreeAsync`
//! on the same stream, or after a stream synchronisation).

// The wrappers mirror the kernels' C signatures, which take many scalars.
#![allow(clippy::too_many_arguments)]

use std::ffi::{CString, c_char};

use axpo_core::backend::DType;
use axpo_core::{Error, Result};
use cudarc::cublas::sys as cublas_sys;
use cudarc::driver::{CudaContext, DeviceRepr, LaunchArgs, LaunchConfig, PushKernelArg};
use cudarc::nvrtc::result as nvrtc;

use crate::buffer::{DevPtr, dt_code, dt_suffix};
use crate::device::Cuda;
use crate::error::{CudaError, drv, limit};
use crate::kernels::{Compiled, Family};
use crate::objective::ObjectiveParams;
use crate::plan::{self, Dims, u32_of};

/// Which CUDA libraries can be loaded on this machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Libraries {
    /// `libcuda` (the driver).
    pub driver: bool,
    /// `libnvrtc`.
    pub nvrtc: bool,
    /// `libcublas`.
    pub cublas: bool,
}

/// Probes the CUDA libraries without touching a device (never panics).
#[must_use]
pub fn libraries_present() -> Libraries {
    // SAFETY: `is_culib_present` only dlopen()s the library by cudarc's candidate names and
    // closes it again; loading NVIDIA's libraries runs no code of ours and is what every CUDA
    // program does at start. No function of the library is called.
    let driver = unsafe { cudarc::driver::sys::is_culib_present() };
    // SAFETY: as above, for libnvrtc.
    let nvrtc = unsafe { cudarc::nvrtc::sys::is_culib_present() };
    // SAFETY: as above, for libcublas.
    let cublas = unsafe { cudarc::cublas::sys::is_culib_present() };
    Libraries {
        driver,
        nvrtc,
        cublas,
    }
}

/// Puts a fresh context in single-stream mode: no per-allocation events.
pub(crate) fn single_stream_mode(ctx: &CudaContext) {
    // SAFETY: the contract of `disable_event_tracking` is that the caller orders work across
    // streams itself. This crate queues all work of a context on one stream (module docs), so
    // there is no cross-stream use to order; slices created before this call (none: the
    // context was just created) would keep their events.
    unsafe { ctx.disable_event_tracking() };
}

/// Compiles one translation unit to a CUBIN with NVRTC and returns it with its log.
///
/// # Errors
/// [`CudaError::LibraryMissing`] without libnvrtc; [`CudaError::Nvrtc`] with the log when the
/// source does not compile.
pub fn nvrtc_compile(
    family: &'static str,
    source: &str,
    options: &[String],
) -> std::result::Result<Compiled, CudaError> {
    // SAFETY: see `libraries_present`.
    if !unsafe { cudarc::nvrtc::sys::is_culib_present() } {
        return Err(CudaError::LibraryMissing {
            library: "libnvrtc (CUDA 13 NVRTC)",
        });
    }
    let src = CString::new(source).map_err(|_| CudaError::Limit {
        what: "kernel source contains a NUL byte",
    })?;
    let name = CString::new(format!("{family}.cu")).map_err(|_| CudaError::Limit {
        what: "kernel family name contains a NUL byte",
    })?;
    let prog = nvrtc::create_program(&src, Some(&name)).map_err(|status| CudaError::Nvrtc {
        family,
        status,
        log: String::new(),
    })?;
    struct Program(cudarc::nvrtc::sys::nvrtcProgram);
    impl Drop for Program {
        fn drop(&mut self) {
            // SAFETY: the program was created by `create_program` above and is destroyed only
            // here, once; `src` and `name` outlive it (declared before the guard).
            let _ = unsafe { nvrtc::destroy_program(self.0) };
        }
    }
    let prog = Program(prog);
    // SAFETY: `prog.0` is a live program (guard above); the options are plain ASCII strings
    // without NUL bytes (built by `compile_options`).
    let compiled = unsafe { nvrtc::compile_program(prog.0, options) };
    // SAFETY: `prog.0` is live; the log is read after compilation, as NVRTC requires.
    let log_raw = unsafe { nvrtc::get_program_log(prog.0) }.unwrap_or_default();
    let log = c_chars_to_string(&log_raw);
    if let Err(status) = compiled {
        return Err(CudaError::Nvrtc {
            family,
            status,
            log,
        });
    }
    let mut size = 0usize;
    // SAFETY: `prog.0` is live and compiled; `size` is a valid out-pointer.
    let st = unsafe { cudarc::nvrtc::sys::nvrtcGetCUBINSize(prog.0, &mut size) };
    nvrtc_status(st, family, &log)?;
    let mut cubin = vec![0u8; size];
    // SAFETY: `cubin` holds exactly the `size` bytes NVRTC reported for this program.
    let st =
        unsafe { cudarc::nvrtc::sys::nvrtcGetCUBIN(prog.0, cubin.as_mut_ptr().cast::<c_char>()) };
    nvrtc_status(st, family, &log)?;
    Ok(Compiled { cubin, log })
}

fn nvrtc_status(
    st: cudarc::nvrtc::sys::nvrtcResult,
    family: &'static str,
    log: &str,
) -> std::result::Result<(), CudaError> {
    st.result().map_err(|status| CudaError::Nvrtc {
        family,
        status,
        log: log.to_string(),
    })
}

fn c_chars_to_string(raw: &[c_char]) -> String {
    let bytes: Vec<u8> = raw
        .iter()
        .take_while(|&&c| c != 0)
        .map(|&c| c as u8)
        .collect();
    String::from_utf8_lossy(&bytes).trim().to_string()
}

// SAFETY: `ObjectiveParams` is `#[repr(C)]`, holds only `u32` and `f64` fields (no padding
// between the four u32 and the eight f64, 80 bytes, alignment 8) and is `Copy`; its layout is
// the `ObjectiveParams` struct of kernels/common.cuh field for field.
unsafe impl DeviceRepr for ObjectiveParams {}

/// A kernel argument, held by value until the launch.
#[derive(Debug, Clone, Copy)]
enum Arg {
    P(u64),
    U32(u32),
    U64(u64),
    F32(f32),
    Obj(ObjectiveParams),
}

fn push_args<'a>(b: &mut LaunchArgs<'a>, args: &'a [Arg]) {
    for a in args {
        match a {
            Arg::P(v) | Arg::U64(v) => b.arg(v),
            Arg::U32(v) => b.arg(v),
            Arg::F32(v) => b.arg(v),
            Arg::Obj(v) => b.arg(v),
        };
    }
}

fn cfg(d: Dims) -> LaunchConfig {
    LaunchConfig {
        grid_dim: d.grid,
        block_dim: d.block,
        shared_mem_bytes: 0,
    }
}

fn ptr_or_null(p: Option<DevPtr>) -> u64 {
    p.map_or(0, |p| p.ptr)
}

fn float_only(p: &DevPtr, op: &'static str) -> Result<()> {
    if p.dtype.is_float() {
        Ok(())
    } else {
        Err(Error::UnsupportedDType {
            op,
            dtype: p.dtype,
            backend: "cuda",
        })
    }
}

fn f32_only(p: &DevPtr, op: &'static str) -> Result<()> {
    if p.dtype == DType::F32 {
        Ok(())
    } else {
        Err(Error::UnsupportedDType {
            op,
            dtype: p.dtype,
            backend: "cuda",
        })
    }
}

fn u32_only(p: &DevPtr, op: &'static str) -> Result<()> {
    if p.dtype == DType::U32 {
        Ok(())
    } else {
        Err(Error::UnsupportedDType {
            op,
            dtype: p.dtype,
            backend: "cuda",
        })
    }
}

/// The activation codes of elementwise.cu.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ActCode {
    Silu = 0,
    GeluTanh = 1,
    GeluErf = 2,
}

/// The mask of an attention launch: kind code, `past`, and the segment bounds on the device.
#[derive(Debug, Clone, Copy)]
pub(crate) struct MaskArg {
    pub(crate) kind: u32,
    pub(crate) past: u32,
    pub(crate) bounds: Option<DevPtr>,
    pub(crate) nb: u32,
}

/// The operands of one attention launch.
#[derive(Debug, Clone, Copy)]
pub(crate) struct AttnArgs {
    pub(crate) q: DevPtr,
    pub(crate) qs: usize,
    pub(crate) k: DevPtr,
    pub(crate) ks: usize,
    pub(crate) v: DevPtr,
    pub(crate) vs: usize,
    pub(crate) q_rows: usize,
    pub(crate) kv_rows: usize,
    pub(crate) heads: usize,
    pub(crate) kv_heads: usize,
    pub(crate) head_dim: usize,
    pub(crate) scale: f32,
    pub(crate) mask: MaskArg,
}

impl AttnArgs {
    fn check(&self, out: &DevPtr, os: usize) -> Result<()> {
        let op = "attention";
        self.q
            .need_view(self.q_rows, self.heads * self.head_dim, self.qs, op)?;
        self.k
            .need_view(self.kv_rows, self.kv_heads * self.head_dim, self.ks, op)?;
        self.v
            .need_view(self.kv_rows, self.kv_heads * self.head_dim, self.vs, op)?;
        out.need_view(self.q_rows, self.heads * self.head_dim, os, op)?;
        f32_only(out, op)?;
        if self.kv_heads == 0 || !self.heads.is_multiple_of(self.kv_heads) {
            return Err(Error::Shape {
                op,
                reason: "heads must be a multiple of kv_heads",
            });
        }
        if let Some(b) = self.mask.bounds {
            b.need(self.mask.nb as usize, op)?;
            u32_only(&b, op)?;
        }
        u32_of(self.q_rows, "attention rows")?;
        u32_of(self.kv_rows, "attention keys")?;
        Ok(())
    }
}

/// One cuBLAS GEMM in cuBLAS's column-major terms: `C = alpha op(A) op(B) + beta C`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct GemmCall {
    pub(crate) trans_a: bool,
    pub(crate) trans_b: bool,
    pub(crate) m: usize,
    pub(crate) n: usize,
    pub(crate) k: usize,
    pub(crate) a: DevPtr,
    pub(crate) lda: usize,
    pub(crate) b: DevPtr,
    pub(crate) ldb: usize,
    pub(crate) c: DevPtr,
    pub(crate) ldc: usize,
    pub(crate) alpha: f32,
    pub(crate) beta: f32,
    pub(crate) tf32: bool,
}

fn cuda_dtype(d: DType) -> Result<cublas_sys::cudaDataType> {
    Ok(match d {
        DType::F32 => cublas_sys::cudaDataType::CUDA_R_32F,
        DType::F16 => cublas_sys::cudaDataType::CUDA_R_16F,
        DType::Bf16 => cublas_sys::cudaDataType::CUDA_R_16BF,
        other => {
            return Err(Error::UnsupportedDType {
                op: "matmul",
                dtype: other,
                backend: "cuda",
            });
        }
    })
}

impl Cuda {
    /// Launches kernel `name` of `family` on this handle's stream.
    ///
    /// # Safety
    /// `args` must match the kernel's C signature in count, order and type, and every pointer
    /// in it must cover every element the kernel reads or writes for the sizes in `args` and
    /// `dims` (see the module docs for ordering).
    unsafe fn launch(&self, family: Family, name: &str, dims: Dims, args: &[Arg]) -> Result<()> {
        let f = self.function(family, name)?;
        let mut b = self.stream().launch_builder(&f);
        push_args(&mut b, args);
        // SAFETY: forwarded from this function's contract: the caller matched the signature
        // and checked the extents; the launch is queued on this handle's only stream.
        unsafe { b.launch(cfg(dims)) }.map_err(drv)?;
        Ok(())
    }

    /// `copy_rows(const void* src, u32 sdt, u64 ss, void* dst, u32 ddt, u64 ds, u32 rows,
    /// u32 cols)` or, for same-type 16-byte-aligned rows, `copy_rows_vec16(const uint4* src,
    /// u64 ss16, uint4* dst, u64 ds16, u32 rows, u32 cols16)`.
    pub(crate) fn k_copy_rows(
        &self,
        src: DevPtr,
        ss: usize,
        dst: DevPtr,
        ds: usize,
        rows: usize,
        cols: usize,
    ) -> Result<()> {
        let op = "copy_rows";
        src.need_view(rows, cols, ss, op)?;
        dst.need_view(rows, cols, ds, op)?;
        let rows32 = u32_of(rows, "copy_rows rows")?;
        let es = src.dtype.size();
        let aligned = src.dtype == dst.dtype
            && src.ptr.is_multiple_of(16)
            && dst.ptr.is_multiple_of(16)
            && (cols * es).is_multiple_of(16)
            && (ss * es).is_multiple_of(16)
            && (ds * es).is_multiple_of(16);
        if aligned {
            let per = 16 / es;
            let cols16 = u32_of(cols / per, "copy_rows cols")?;
            let dims = plan::copy_dims(rows, cols / per);
            // SAFETY: the argument list follows the C signature of `copy_rows_vec16` (buffer.cu)
            // quoted in this function's docs, in order and type; every pointer was checked above
            // (`need`/`need_view`) to cover the elements the kernel touches at these sizes; the
            // launch is queued on this handle's only stream (module docs).
            return unsafe {
                self.launch(
                    Family::Buffer,
                    "copy_rows_vec16",
                    dims,
                    &[
                        Arg::P(src.ptr),
                        Arg::U64((ss / per) as u64),
                        Arg::P(dst.ptr),
                        Arg::U64((ds / per) as u64),
                        Arg::U32(rows32),
                        Arg::U32(cols16),
                    ],
                )
            };
        }
        let cols32 = u32_of(cols, "copy_rows cols")?;
        // SAFETY: the argument list follows the C signature of `copy_rows` (buffer.cu)
        // quoted in this function's docs, in order and type; every pointer was checked above
        // (`need`/`need_view`) to cover the elements the kernel touches at these sizes; the
        // launch is queued on this handle's only stream (module docs).
        unsafe {
            self.launch(
                Family::Buffer,
                "copy_rows",
                plan::copy_dims(rows, cols),
                &[
                    Arg::P(src.ptr),
                    Arg::U32(dt_code(src.dtype)),
                    Arg::U64(ss as u64),
                    Arg::P(dst.ptr),
                    Arg::U32(dt_code(dst.dtype)),
                    Arg::U64(ds as u64),
                    Arg::U32(rows32),
                    Arg::U32(cols32),
                ],
            )
        }
    }

    /// `fill_f32(float* p, u64 n, float value)`.
    pub(crate) fn k_fill_f32(&self, dst: DevPtr, n: usize, value: f32) -> Result<()> {
        let op = "fill";
        f32_only(&dst, op)?;
        dst.need(n, op)?;
        // SAFETY: the argument list follows the C signature of `fill_f32` (buffer.cu)
        // quoted in this function's docs, in order and type; every pointer was checked above
        // (`need`/`need_view`) to cover the elements the kernel touches at these sizes; the
        // launch is queued on this handle's only stream (module docs).
        unsafe {
            self.launch(
                Family::Buffer,
                "fill_f32",
                plan::grid_stride(n as u64, 256, self.sm_count()),
                &[Arg::P(dst.ptr), Arg::U64(n as u64), Arg::F32(value)],
            )
        }
    }

    /// `stats_init(float* state, u32 rows)`.
    pub(crate) fn k_stats_init(&self, state: DevPtr, rows: usize) -> Result<()> {
        let op = "stats_init";
        f32_only(&state, op)?;
        state.need(rows * 5, op)?;
        let r = u32_of(rows, "stats rows")?;
        // SAFETY: the argument list follows the C signature of `stats_init` (buffer.cu)
        // quoted in this function's docs, in order and type; every pointer was checked above
        // (`need`/`need_view`) to cover the elements the kernel touches at these sizes; the
        // launch is queued on this handle's only stream (module docs).
        unsafe {
            self.launch(
                Family::Buffer,
                "stats_init",
                Dims::linear((rows as u64).div_ceil(256), 256)?,
                &[Arg::P(state.ptr), Arg::U32(r)],
            )
        }
    }

    /// `add_assign(void* dst, u32 ddt, const void* src, u32 sdt, u64 n)`.
    pub(crate) fn k_add_assign(&self, dst: DevPtr, src: DevPtr, n: usize) -> Result<()> {
        let op = "add_assign";
        float_only(&dst, op)?;
        float_only(&src, op)?;
        dst.need(n, op)?;
        src.need(n, op)?;
        // SAFETY: the argument list follows the C signature of `add_assign` (elementwise.cu)
        // quoted in this function's docs, in order and type; every pointer was checked above
        // (`need`/`need_view`) to cover the elements the kernel touches at these sizes; the
        // launch is queued on this handle's only stream (module docs).
        unsafe {
            self.launch(
                Family::Elementwise,
                "add_assign",
                plan::grid_stride(n as u64, 256, self.sm_count()),
                &[
                    Arg::P(dst.ptr),
                    Arg::U32(dt_code(dst.dtype)),
                    Arg::P(src.ptr),
                    Arg::U32(dt_code(src.dtype)),
                    Arg::U64(n as u64),
                ],
            )
        }
    }

    /// `mul(const void* a, u32 adt, const void* b, u32 bdt, float* out, u64 n)` and
    /// `swiglu(const void* gate, u32 gdt, const void* up, u32 udt, float* out, u64 n)`.
    pub(crate) fn k_binary(
        &self,
        name: &'static str,
        a: DevPtr,
        b: DevPtr,
        out: DevPtr,
        n: usize,
    ) -> Result<()> {
        float_only(&a, name)?;
        float_only(&b, name)?;
        f32_only(&out, name)?;
        a.need(n, name)?;
        b.need(n, name)?;
        out.need(n, name)?;
        if name != "mul" && name != "swiglu" {
            return Err(CudaError::MissingKernel { name }.into());
        }
        // SAFETY: the argument list follows the C signature of `name` (elementwise.cu)
        // quoted in this function's docs, in order and type; every pointer was checked above
        // (`need`/`need_view`) to cover the elements the kernel touches at these sizes; the
        // launch is queued on this handle's only stream (module docs).
        unsafe {
            self.launch(
                Family::Elementwise,
                name,
                plan::grid_stride(n as u64, 256, self.sm_count()),
                &[
                    Arg::P(a.ptr),
                    Arg::U32(dt_code(a.dtype)),
                    Arg::P(b.ptr),
                    Arg::U32(dt_code(b.dtype)),
                    Arg::P(out.ptr),
                    Arg::U64(n as u64),
                ],
            )
        }
    }

    /// `add_bias(void* x, u32 xdt, const void* bias, u32 bdt, u64 n, u32 cols)`.
    pub(crate) fn k_add_bias(&self, x: DevPtr, bias: DevPtr, n: usize, cols: usize) -> Result<()> {
        let op = "add_bias";
        float_only(&x, op)?;
        float_only(&bias, op)?;
        x.need(n, op)?;
        bias.need(cols, op)?;
        if cols == 0 {
            return Err(Error::Shape {
                op,
                reason: "empty bias",
            });
        }
        // SAFETY: the argument list follows the C signature of `add_bias` (elementwise.cu)
        // quoted in this function's docs, in order and type; every pointer was checked above
        // (`need`/`need_view`) to cover the elements the kernel touches at these sizes; the
        // launch is queued on this handle's only stream (module docs).
        unsafe {
            self.launch(
                Family::Elementwise,
                "add_bias",
                plan::grid_stride(n as u64, 256, self.sm_count()),
                &[
                    Arg::P(x.ptr),
                    Arg::U32(dt_code(x.dtype)),
                    Arg::P(bias.ptr),
                    Arg::U32(dt_code(bias.dtype)),
                    Arg::U64(n as u64),
                    Arg::U32(u32_of(cols, "bias width")?),
                ],
            )
        }
    }

    /// `activation(const void* x, u32 xdt, float* out, u64 n, u32 act)`.
    pub(crate) fn k_activation(
        &self,
        x: DevPtr,
        out: DevPtr,
        n: usize,
        act: ActCode,
    ) -> Result<()> {
        let op = "activation";
        float_only(&x, op)?;
        f32_only(&out, op)?;
        x.need(n, op)?;
        out.need(n, op)?;
        // SAFETY: the argument list follows the C signature of `activation` (elementwise.cu)
        // quoted in this function's docs, in order and type; every pointer was checked above
        // (`need`/`need_view`) to cover the elements the kernel touches at these sizes; the
        // launch is queued on this handle's only stream (module docs).
        unsafe {
            self.launch(
                Family::Elementwise,
                "activation",
                plan::grid_stride(n as u64, 256, self.sm_count()),
                &[
                    Arg::P(x.ptr),
                    Arg::U32(dt_code(x.dtype)),
                    Arg::P(out.ptr),
                    Arg::U64(n as u64),
                    Arg::U32(act as u32),
                ],
            )
        }
    }

    /// `bias_activation(const void* x, u32 xdt, const void* bias, u32 bdt, float* out, u64 n,
    /// u32 cols, u32 act)`; `out` may be `x` (each element is read before it is written by the
    /// same thread).
    pub(crate) fn k_bias_activation(
        &self,
        x: DevPtr,
        bias: DevPtr,
        out: DevPtr,
        n: usize,
        cols: usize,
        act: ActCode,
    ) -> Result<()> {
        let op = "bias_activation";
        float_only(&x, op)?;
        float_only(&bias, op)?;
        f32_only(&out, op)?;
        x.need(n, op)?;
        out.need(n, op)?;
        bias.need(cols, op)?;
        if cols == 0 {
            return Err(Error::Shape {
                op,
                reason: "empty bias",
            });
        }
        // SAFETY: the argument list follows the C signature of `bias_activation` (elementwise.cu)
        // quoted in this function's docs, in order and type; every pointer was checked above
        // (`need`/`need_view`) to cover the elements the kernel touches at these sizes; the
        // launch is queued on this handle's only stream (module docs).
        unsafe {
            self.launch(
                Family::Elementwise,
                "bias_activation",
                plan::grid_stride(n as u64, 256, self.sm_count()),
                &[
                    Arg::P(x.ptr),
                    Arg::U32(dt_code(x.dtype)),
                    Arg::P(bias.ptr),
                    Arg::U32(dt_code(bias.dtype)),
                    Arg::P(out.ptr),
                    Arg::U64(n as u64),
                    Arg::U32(u32_of(cols, "bias width")?),
                    Arg::U32(act as u32),
                ],
            )
        }
    }

    /// `rms_norm(const void* x, u32 xdt, const void* w, u32 wdt, float* out, u32 d, float eps)`
    /// and `layer_norm(const void* x, u32 xdt, const void* w, u32 wdt, const void* b, u32 bdt,
    /// float* out, u32 d, float eps)`; one block per row.
    pub(crate) fn k_norm(
        &self,
        x: DevPtr,
        w: DevPtr,
        b: Option<DevPtr>,
        out: DevPtr,
        rows: usize,
        d: usize,
        eps: f32,
    ) -> Result<()> {
        let op = if b.is_some() {
            "layer_norm"
        } else {
            "rms_norm"
        };
        float_only(&x, op)?;
        float_only(&w, op)?;
        f32_only(&out, op)?;
        x.need(rows * d, op)?;
        out.need(rows * d, op)?;
        w.need(d, op)?;
        let d32 = u32_of(d, "norm width")?;
        let dims = plan::per_row(rows, plan::row_threads(d, 4, 1024))?;
        let mut args = vec![
            Arg::P(x.ptr),
            Arg::U32(dt_code(x.dtype)),
            Arg::P(w.ptr),
            Arg::U32(dt_code(w.dtype)),
        ];
        if let Some(b) = b {
            float_only(&b, op)?;
            b.need(d, op)?;
            args.push(Arg::P(b.ptr));
            args.push(Arg::U32(dt_code(b.dtype)));
        }
        args.extend([Arg::P(out.ptr), Arg::U32(d32), Arg::F32(eps)]);
        if rows == 0 {
            return Ok(());
        }
        // SAFETY: `args` follows the C signature of `rms_norm` or `layer_norm` (norm.cu, quoted
        // in this function's docs) in order and type, the bias pair present exactly for
        // layer_norm; x and out were checked for rows * d elements, w (and b) for d; the launch
        // is queued on this handle's only stream (module docs).
        unsafe { self.launch(Family::Norm, op, dims, &args) }
    }

    /// `rms_norm_rotary(const void* x, u32 xdt, const void* w, u32 wdt, float eps,
    /// const void* cos, u32 cdt, const void* sin, u32 sdt, u32 rows, u32 heads, u32 hd,
    /// float* out)`; 4 (row, head) pairs per block, hd <= 256 (shared-memory tile).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn k_rms_norm_rotary(
        &self,
        x: DevPtr,
        w: DevPtr,
        eps: f32,
        cos: DevPtr,
        sin: DevPtr,
        rows: usize,
        heads: usize,
        hd: usize,
        out: DevPtr,
    ) -> Result<()> {
        let op = "rms_norm_rotary";
        for p in [&x, &w, &cos, &sin] {
            float_only(p, op)?;
        }
        f32_only(&out, op)?;
        if hd > 256 || hd == 0 || !hd.is_multiple_of(2) {
            return Err(Error::Shape {
                op,
                reason: "head_dim must be even, positive and at most 256",
            });
        }
        x.need(rows * heads * hd, op)?;
        out.need(rows * heads * hd, op)?;
        w.need(hd, op)?;
        cos.need(rows * hd, op)?;
        sin.need(rows * hd, op)?;
        let pairs = (rows * heads) as u64;
        if pairs == 0 {
            return Ok(());
        }
        // SAFETY: the argument list follows the C signature of `rms_norm_rotary` (norm.cu)
        // quoted in this function's docs, in order and type; every pointer was checked above
        // (`need`/`need_view`) to cover the elements the kernel touches at these sizes; the
        // launch is queued on this handle's only stream (module docs).
        unsafe {
            self.launch(
                Family::Norm,
                "rms_norm_rotary",
                Dims::linear(pairs.div_ceil(4), 128)?,
                &[
                    Arg::P(x.ptr),
                    Arg::U32(dt_code(x.dtype)),
                    Arg::P(w.ptr),
                    Arg::U32(dt_code(w.dtype)),
                    Arg::F32(eps),
                    Arg::P(cos.ptr),
                    Arg::U32(dt_code(cos.dtype)),
                    Arg::P(sin.ptr),
                    Arg::U32(dt_code(sin.dtype)),
                    Arg::U32(u32_of(rows, "rotary rows")?),
                    Arg::U32(u32_of(heads, "rotary heads")?),
                    Arg::U32(u32_of(hd, "head_dim")?),
                    Arg::P(out.ptr),
                ],
            )
        }
    }

    /// `rotary(void* x, u32 xdt, const void* cos, u32 cdt, const void* sin, u32 sdt, u32 rows,
    /// u32 heads, u32 hd)`, in place; each element pair is read and written by one thread.
    pub(crate) fn k_rotary(
        &self,
        x: DevPtr,
        cos: DevPtr,
        sin: DevPtr,
        rows: usize,
        heads: usize,
        hd: usize,
    ) -> Result<()> {
        let op = "rotary";
        for p in [&x, &cos, &sin] {
            float_only(p, op)?;
        }
        x.need(rows * heads * hd, op)?;
        cos.need(rows * hd, op)?;
        sin.need(rows * hd, op)?;
        let n = (rows * heads * (hd / 2)) as u64;
        // SAFETY: the argument list follows the C signature of `rotary` (rotary.cu)
        // quoted in this function's docs, in order and type; every pointer was checked above
        // (`need`/`need_view`) to cover the elements the kernel touches at these sizes; the
        // launch is queued on this handle's only stream (module docs).
        unsafe {
            self.launch(
                Family::Rotary,
                "rotary",
                plan::grid_stride(n, 256, self.sm_count()),
                &[
                    Arg::P(x.ptr),
                    Arg::U32(dt_code(x.dtype)),
                    Arg::P(cos.ptr),
                    Arg::U32(dt_code(cos.dtype)),
                    Arg::P(sin.ptr),
                    Arg::U32(dt_code(sin.dtype)),
                    Arg::U32(u32_of(rows, "rotary rows")?),
                    Arg::U32(u32_of(heads, "rotary heads")?),
                    Arg::U32(u32_of(hd, "head_dim")?),
                ],
            )
        }
    }

    /// `gather_rows(const void* table, u32 tdt, u64 ts, const u32* ids, u32 n, u32 cols,
    /// float* out)`. Ids were validated against the table's rows by the caller (`rows`).
    pub(crate) fn k_gather_rows(
        &self,
        table: DevPtr,
        ts: usize,
        table_rows: usize,
        ids: DevPtr,
        n: usize,
        cols: usize,
        out: DevPtr,
    ) -> Result<()> {
        let op = "gather_rows";
        float_only(&table, op)?;
        u32_only(&ids, op)?;
        f32_only(&out, op)?;
        table.need_view(table_rows, cols, ts, op)?;
        ids.need(n, op)?;
        out.need(n * cols, op)?;
        // SAFETY: the argument list follows the C signature of `gather_rows` (embedding.cu)
        // quoted in this function's docs, in order and type; every pointer was checked above
        // (`need`/`need_view`) to cover the elements the kernel touches at these sizes; the
        // launch is queued on this handle's only stream (module docs).
        unsafe {
            self.launch(
                Family::Embedding,
                "gather_rows",
                plan::grid_stride((n * cols) as u64, 256, self.sm_count()),
                &[
                    Arg::P(table.ptr),
                    Arg::U32(dt_code(table.dtype)),
                    Arg::U64(ts as u64),
                    Arg::P(ids.ptr),
                    Arg::U32(u32_of(n, "gather count")?),
                    Arg::U32(u32_of(cols, "gather width")?),
                    Arg::P(out.ptr),
                ],
            )
        }
    }

    /// `scatter_rows(void* dst, u32 ddt, u64 ds, const u32* rows, const u32* src_rows, u32 n,
    /// const void* src, u32 sdt, u64 ss, u32 cols, u32 add)`. The caller validated the row
    /// indices (< `dst_rows`, `src_rows` < `src_n`) and that no destination row repeats within
    /// this launch (no two threads write one element).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn k_scatter_rows(
        &self,
        dst: DevPtr,
        ds: usize,
        dst_rows: usize,
        rows: DevPtr,
        src_rows: DevPtr,
        n: usize,
        src: DevPtr,
        ss: usize,
        src_n: usize,
        cols: usize,
        add: bool,
    ) -> Result<()> {
        let op = "scatter_rows";
        float_only(&dst, op)?;
        float_only(&src, op)?;
        u32_only(&rows, op)?;
        u32_only(&src_rows, op)?;
        dst.need_view(dst_rows, cols, ds, op)?;
        src.need_view(src_n, cols, ss, op)?;
        rows.need(n, op)?;
        src_rows.need(n, op)?;
        // SAFETY: the argument list follows the C signature of `scatter_rows` (embedding.cu)
        // quoted in this function's docs, in order and type; every pointer was checked above
        // (`need`/`need_view`) to cover the elements the kernel touches at these sizes; the
        // launch is queued on this handle's only stream (module docs).
        unsafe {
            self.launch(
                Family::Embedding,
                "scatter_rows",
                plan::grid_stride((n * cols) as u64, 256, self.sm_count()),
                &[
                    Arg::P(dst.ptr),
                    Arg::U32(dt_code(dst.dtype)),
                    Arg::U64(ds as u64),
                    Arg::P(rows.ptr),
                    Arg::P(src_rows.ptr),
                    Arg::U32(u32_of(n, "scatter count")?),
                    Arg::P(src.ptr),
                    Arg::U32(dt_code(src.dtype)),
                    Arg::U64(ss as u64),
                    Arg::U32(u32_of(cols, "scatter width")?),
                    Arg::U32(u32::from(add)),
                ],
            )
        }
    }

    /// `masked_softmax(float* scores, u32 rows, u32 cols, u32 mask, u32 past,
    /// const u32* bounds, u32 nb, float scale)`; one block per row.
    pub(crate) fn k_masked_softmax(
        &self,
        scores: DevPtr,
        rows: usize,
        cols: usize,
        mask: MaskArg,
        scale: f32,
    ) -> Result<()> {
        let op = "masked_softmax";
        f32_only(&scores, op)?;
        scores.need(rows * cols, op)?;
        if let Some(b) = mask.bounds {
            u32_only(&b, op)?;
            b.need(mask.nb as usize, op)?;
        }
        if rows == 0 {
            return Ok(());
        }
        // SAFETY: the argument list follows the C signature of `masked_softmax` (attention.cu)
        // quoted in this function's docs, in order and type; every pointer was checked above
        // (`need`/`need_view`) to cover the elements the kernel touches at these sizes; the
        // launch is queued on this handle's only stream (module docs).
        unsafe {
            self.launch(
                Family::Attention,
                "masked_softmax",
                plan::per_row(rows, plan::row_threads(cols, 4, 1024))?,
                &[
                    Arg::P(scores.ptr),
                    Arg::U32(u32_of(rows, "softmax rows")?),
                    Arg::U32(u32_of(cols, "softmax cols")?),
                    Arg::U32(mask.kind),
                    Arg::U32(mask.past),
                    Arg::P(ptr_or_null(mask.bounds)),
                    Arg::U32(mask.nb),
                    Arg::F32(scale),
                ],
            )
        }
    }

    /// The exact kernels `attn_core_<HD>(const void* q, u32 qdt, u64 qs, const void* k,
    /// u32 kdt, u64 ks, const void* v, u32 vdt, u64 vs, float* out, u64 os, u32 q_rows,
    /// u32 kv_rows, u32 heads, u32 kv_heads, u32 hd, float scale, u32 mask, u32 past,
    /// const u32* bounds, u32 nb)`; grid (ceil(q_rows / 32), heads), 128 threads.
    pub(crate) fn k_attn_core(&self, a: &AttnArgs, out: DevPtr, os: usize) -> Result<()> {
        a.check(&out, os)?;
        for p in [&a.q, &a.k, &a.v] {
            float_only(p, "attention")?;
        }
        let hd = plan::core_head_dim(a.head_dim).ok_or(Error::Shape {
            op: "attention",
            reason: "head_dim above 256",
        })?;
        let name = format!("attn_core_{hd}");
        let gx = (a.q_rows as u64).div_ceil(32);
        if gx == 0 {
            return Ok(());
        }
        let dims = Dims {
            grid: (
                u32::try_from(gx).map_err(|_| limit("attention rows"))?,
                u32_of(a.heads, "attention heads")?,
                1,
            ),
            block: (128, 1, 1),
        };
        if a.heads as u64 > plan::MAX_GRID_YZ {
            return Err(limit("attention heads"));
        }
        // SAFETY: the argument list follows the C signature of the instantiation named by `name` (attention.cu)
        // quoted in this function's docs, in order and type; every pointer was checked above
        // (`need`/`need_view`) to cover the elements the kernel touches at these sizes; the
        // launch is queued on this handle's only stream (module docs).
        unsafe {
            self.launch(
                Family::Attention,
                &name,
                dims,
                &[
                    Arg::P(a.q.ptr),
                    Arg::U32(dt_code(a.q.dtype)),
                    Arg::U64(a.qs as u64),
                    Arg::P(a.k.ptr),
                    Arg::U32(dt_code(a.k.dtype)),
                    Arg::U64(a.ks as u64),
                    Arg::P(a.v.ptr),
                    Arg::U32(dt_code(a.v.dtype)),
                    Arg::U64(a.vs as u64),
                    Arg::P(out.ptr),
                    Arg::U64(os as u64),
                    Arg::U32(u32_of(a.q_rows, "attention rows")?),
                    Arg::U32(u32_of(a.kv_rows, "attention keys")?),
                    Arg::U32(u32_of(a.heads, "attention heads")?),
                    Arg::U32(u32_of(a.kv_heads, "attention kv heads")?),
                    Arg::U32(u32_of(a.head_dim, "head_dim")?),
                    Arg::F32(a.scale),
                    Arg::U32(a.mask.kind),
                    Arg::U32(a.mask.past),
                    Arg::P(ptr_or_null(a.mask.bounds)),
                    Arg::U32(a.mask.nb),
                ],
            )
        }
    }

    /// The tensor-core kernels `attn_mma_<T>_<HDP>(const T* q, u64 qs, const T* k, u64 ks,
    /// const T* v, u64 vs, float* out, u64 os, u32 q_rows, u32 kv_rows, u32 heads,
    /// u32 kv_heads, u32 hd, float scale, u32 mask, u32 past, const u32* bounds, u32 nb)`;
    /// q, k, v all of type T (bf16 or f16); grid (ceil(q_rows / 64), heads), 128 threads.
    pub(crate) fn k_attn_mma(&self, a: &AttnArgs, out: DevPtr, os: usize) -> Result<()> {
        a.check(&out, os)?;
        let t = a.q.dtype;
        if !matches!(t, DType::Bf16 | DType::F16) || a.k.dtype != t || a.v.dtype != t {
            return Err(Error::UnsupportedDType {
                op: "attention (tensor cores)",
                dtype: t,
                backend: "cuda",
            });
        }
        let hdp = plan::mma_head_dim(a.head_dim).ok_or(Error::Shape {
            op: "attention",
            reason: "head_dim above 128 for the tensor-core kernel",
        })?;
        if a.heads as u64 > plan::MAX_GRID_YZ {
            return Err(limit("attention heads"));
        }
        let gx = (a.q_rows as u64).div_ceil(64);
        if gx == 0 {
            return Ok(());
        }
        let name = format!("attn_mma_{}_{hdp}", dt_suffix(t));
        let dims = Dims {
            grid: (
                u32::try_from(gx).map_err(|_| limit("attention rows"))?,
                u32_of(a.heads, "attention heads")?,
                1,
            ),
            block: (128, 1, 1),
        };
        // SAFETY: the argument list follows the C signature of the instantiation named by `name` (attention.cu)
        // quoted in this function's docs, in order and type; every pointer was checked above
        // (`need`/`need_view`) to cover the elements the kernel touches at these sizes; the
        // launch is queued on this handle's only stream (module docs).
        unsafe {
            self.launch(
                Family::Attention,
                &name,
                dims,
                &[
                    Arg::P(a.q.ptr),
                    Arg::U64(a.qs as u64),
                    Arg::P(a.k.ptr),
                    Arg::U64(a.ks as u64),
                    Arg::P(a.v.ptr),
                    Arg::U64(a.vs as u64),
                    Arg::P(out.ptr),
                    Arg::U64(os as u64),
                    Arg::U32(u32_of(a.q_rows, "attention rows")?),
                    Arg::U32(u32_of(a.kv_rows, "attention keys")?),
                    Arg::U32(u32_of(a.heads, "attention heads")?),
                    Arg::U32(u32_of(a.kv_heads, "attention kv heads")?),
                    Arg::U32(u32_of(a.head_dim, "head_dim")?),
                    Arg::F32(a.scale),
                    Arg::U32(a.mask.kind),
                    Arg::U32(a.mask.past),
                    Arg::P(ptr_or_null(a.mask.bounds)),
                    Arg::U32(a.mask.nb),
                ],
            )
        }
    }

    /// Split-KV decoding: `attn_decode_<HD>(const void* q, u32 qdt, u64 qs, const void* k,
    /// u32 kdt, u64 ks, const void* v, u32 vdt, u64 vs, u32 q_rows, u32 kv_rows, u32 heads,
    /// u32 kv_heads, u32 hd, float scale, u32 mask, u32 past, u32 split_len, float* part_acc,
    /// float* part_ml)` on grid (kv_heads, splits, q_rows), then `attn_decode_combine(const
    /// float* part_acc, const float* part_ml, u32 splits, u32 q_rows, u32 heads, u32 hd,
    /// float* out, u64 os)` on q_rows * heads blocks. Full or causal masks only; at most 8
    /// (hd <= 128) or 4 (hd <= 256) query heads per KV head.
    pub(crate) fn k_attn_decode(
        &self,
        a: &AttnArgs,
        out: DevPtr,
        os: usize,
        part_acc: DevPtr,
        part_ml: DevPtr,
        splits: u32,
        split_len: u32,
    ) -> Result<()> {
        a.check(&out, os)?;
        for p in [&a.q, &a.k, &a.v] {
            float_only(p, "attention")?;
        }
        if a.mask.kind == 2 {
            return Err(Error::Shape {
                op: "attention (decode)",
                reason: "segment masks are not served by the decode kernel",
            });
        }
        let hd = plan::core_head_dim(a.head_dim).ok_or(Error::Shape {
            op: "attention",
            reason: "head_dim above 256",
        })?;
        let gmax = if hd <= 128 { 8 } else { 4 };
        if a.heads / a.kv_heads > gmax {
            return Err(Error::Shape {
                op: "attention (decode)",
                reason: "too many query heads per KV head for the decode kernel",
            });
        }
        if u64::from(splits) * u64::from(split_len) < a.kv_rows as u64
            || u64::from(splits) > plan::MAX_GRID_YZ
            || a.q_rows as u64 > plan::MAX_GRID_YZ
        {
            return Err(limit("decode split"));
        }
        let slots = splits as usize * a.q_rows * a.heads;
        f32_only(&part_acc, "attention")?;
        f32_only(&part_ml, "attention")?;
        part_acc.need(slots * a.head_dim, "attention")?;
        part_ml.need(slots * 2, "attention")?;
        if a.q_rows == 0 {
            return Ok(());
        }
        let name = format!("attn_decode_{hd}");
        // SAFETY: the argument list follows the C signature of the instantiation named by `name` (attention.cu)
        // quoted in this function's docs, in order and type; every pointer was checked above
        // (`need`/`need_view`) to cover the elements the kernel touches at these sizes; the
        // launch is queued on this handle's only stream (module docs).
        unsafe {
            self.launch(
                Family::Attention,
                &name,
                Dims {
                    grid: (
                        u32_of(a.kv_heads, "kv heads")?,
                        splits,
                        u32_of(a.q_rows, "decode rows")?,
                    ),
                    block: (128, 1, 1),
                },
                &[
                    Arg::P(a.q.ptr),
                    Arg::U32(dt_code(a.q.dtype)),
                    Arg::U64(a.qs as u64),
                    Arg::P(a.k.ptr),
                    Arg::U32(dt_code(a.k.dtype)),
                    Arg::U64(a.ks as u64),
                    Arg::P(a.v.ptr),
                    Arg::U32(dt_code(a.v.dtype)),
                    Arg::U64(a.vs as u64),
                    Arg::U32(u32_of(a.q_rows, "decode rows")?),
                    Arg::U32(u32_of(a.kv_rows, "decode keys")?),
                    Arg::U32(u32_of(a.heads, "heads")?),
                    Arg::U32(u32_of(a.kv_heads, "kv heads")?),
                    Arg::U32(u32_of(a.head_dim, "head_dim")?),
                    Arg::F32(a.scale),
                    Arg::U32(a.mask.kind),
                    Arg::U32(a.mask.past),
                    Arg::U32(split_len),
                    Arg::P(part_acc.ptr),
                    Arg::P(part_ml.ptr),
                ],
            )
        }?;
        // SAFETY: the argument list follows the C signature of `attn_decode_combine` (attention.cu)
        // quoted in this function's docs, in order and type; every pointer was checked above
        // (`need`/`need_view`) to cover the elements the kernel touches at these sizes; the
        // launch is queued on this handle's only stream (module docs).
        unsafe {
            self.launch(
                Family::Attention,
                "attn_decode_combine",
                Dims::linear((a.q_rows * a.heads) as u64, 128)?,
                &[
                    Arg::P(part_acc.ptr),
                    Arg::P(part_ml.ptr),
                    Arg::U32(splits),
                    Arg::U32(u32_of(a.q_rows, "decode rows")?),
                    Arg::U32(u32_of(a.heads, "heads")?),
                    Arg::U32(u32_of(a.head_dim, "head_dim")?),
                    Arg::P(out.ptr),
                    Arg::U64(os as u64),
                ],
            )
        }
    }

    /// `stats_fold_<T>(const T* logits, u32 cols, u64 stride, const u32* targets,
    /// u32 vocab_offset, float* state)`; one block per row. Targets were validated by the
    /// caller; the kernel reads `logits[t - vocab_offset]` only when it is inside the chunk.
    pub(crate) fn k_stats_fold(
        &self,
        logits: DevPtr,
        rows: usize,
        cols: usize,
        stride: usize,
        targets: DevPtr,
        vocab_offset: usize,
        state: DevPtr,
    ) -> Result<()> {
        let op = "stats_fold";
        float_only(&logits, op)?;
        u32_only(&targets, op)?;
        f32_only(&state, op)?;
        logits.need_view(rows, cols, stride, op)?;
        targets.need(rows, op)?;
        state.need(rows * 5, op)?;
        if rows == 0 || cols == 0 {
            return Ok(());
        }
        let name = format!("stats_fold_{}", dt_suffix(logits.dtype));
        // SAFETY: the argument list follows the C signature of the instantiation named by `name` (logprob.cu)
        // quoted in this function's docs, in order and type; every pointer was checked above
        // (`need`/`need_view`) to cover the elements the kernel touches at these sizes; the
        // launch is queued on this handle's only stream (module docs).
        unsafe {
            self.launch(
                Family::Logprob,
                &name,
                plan::per_row(rows, plan::row_threads(cols, 16, 512))?,
                &[
                    Arg::P(logits.ptr),
                    Arg::U32(u32_of(cols, "vocabulary chunk")?),
                    Arg::U64(stride as u64),
                    Arg::P(targets.ptr),
                    Arg::U32(u32_of(vocab_offset, "vocabulary offset")?),
                    Arg::P(state.ptr),
                ],
            )
        }
    }

    /// `token_stats_<T>(const T* logits, u32 cols, u64 stride, const u32* targets,
    /// float* logp, float* entropy, float* sum_p2, float* lse)`; one block per whole row;
    /// targets were validated (< cols) by the caller.
    pub(crate) fn k_token_stats(
        &self,
        logits: DevPtr,
        rows: usize,
        cols: usize,
        stride: usize,
        targets: DevPtr,
        outs: [DevPtr; 4],
    ) -> Result<()> {
        let op = "token_stats";
        float_only(&logits, op)?;
        u32_only(&targets, op)?;
        logits.need_view(rows, cols, stride, op)?;
        targets.need(rows, op)?;
        for o in &outs {
            f32_only(o, op)?;
            o.need(rows, op)?;
        }
        if rows == 0 || cols == 0 {
            return Ok(());
        }
        let name = format!("token_stats_{}", dt_suffix(logits.dtype));
        // SAFETY: the argument list follows the C signature of the instantiation named by `name` (logprob.cu)
        // quoted in this function's docs, in order and type; every pointer was checked above
        // (`need`/`need_view`) to cover the elements the kernel touches at these sizes; the
        // launch is queued on this handle's only stream (module docs).
        unsafe {
            self.launch(
                Family::Logprob,
                &name,
                plan::per_row(rows, plan::row_threads(cols, 16, 512))?,
                &[
                    Arg::P(logits.ptr),
                    Arg::U32(u32_of(cols, "vocabulary")?),
                    Arg::U64(stride as u64),
                    Arg::P(targets.ptr),
                    Arg::P(outs[0].ptr),
                    Arg::P(outs[1].ptr),
                    Arg::P(outs[2].ptr),
                    Arg::P(outs[3].ptr),
                ],
            )
        }
    }

    /// `stats_finish(const float* state, u32 rows, float* logp, float* entropy,
    /// float* sum_p2, float* lse)`.
    pub(crate) fn k_stats_finish(
        &self,
        state: DevPtr,
        rows: usize,
        outs: [DevPtr; 4],
    ) -> Result<()> {
        let op = "stats_finish";
        f32_only(&state, op)?;
        state.need(rows * 5, op)?;
        for o in &outs {
            f32_only(o, op)?;
            o.need(rows, op)?;
        }
        if rows == 0 {
            return Ok(());
        }
        // SAFETY: the argument list follows the C signature of `stats_finish` (logprob.cu)
        // quoted in this function's docs, in order and type; every pointer was checked above
        // (`need`/`need_view`) to cover the elements the kernel touches at these sizes; the
        // launch is queued on this handle's only stream (module docs).
        unsafe {
            self.launch(
                Family::Logprob,
                "stats_finish",
                Dims::linear((rows as u64).div_ceil(256), 256)?,
                &[
                    Arg::P(state.ptr),
                    Arg::U32(u32_of(rows, "rows")?),
                    Arg::P(outs[0].ptr),
                    Arg::P(outs[1].ptr),
                    Arg::P(outs[2].ptr),
                    Arg::P(outs[3].ptr),
                ],
            )
        }
    }

    /// `stats_backward_<T>_<O>(const T* logits, u32 cols, u64 stride, const u32* targets,
    /// u32 vocab_offset, const float* lse, const float* entropy, const float* d_logp,
    /// const float* d_entropy, O* out, u64 out_stride)`; one block per row; `d_entropy` may be
    /// null.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn k_stats_backward(
        &self,
        logits: DevPtr,
        rows: usize,
        cols: usize,
        stride: usize,
        targets: DevPtr,
        vocab_offset: usize,
        per_row: [DevPtr; 3],
        d_entropy: Option<DevPtr>,
        out: DevPtr,
        out_stride: usize,
    ) -> Result<()> {
        let op = "stats_backward";
        float_only(&logits, op)?;
        float_only(&out, op)?;
        u32_only(&targets, op)?;
        logits.need_view(rows, cols, stride, op)?;
        out.need_view(rows, cols, out_stride, op)?;
        targets.need(rows, op)?;
        for p in per_row.iter().chain(d_entropy.iter()) {
            f32_only(p, op)?;
            p.need(rows, op)?;
        }
        if rows == 0 || cols == 0 {
            return Ok(());
        }
        let name = format!(
            "stats_backward_{}_{}",
            dt_suffix(logits.dtype),
            dt_suffix(out.dtype)
        );
        // SAFETY: the argument list follows the C signature of the instantiation named by `name` (logprob.cu)
        // quoted in this function's docs, in order and type; every pointer was checked above
        // (`need`/`need_view`) to cover the elements the kernel touches at these sizes; the
        // launch is queued on this handle's only stream (module docs).
        unsafe {
            self.launch(
                Family::Logprob,
                &name,
                plan::per_row(rows, plan::row_threads(cols, 8, 512))?,
                &[
                    Arg::P(logits.ptr),
                    Arg::U32(u32_of(cols, "vocabulary chunk")?),
                    Arg::U64(stride as u64),
                    Arg::P(targets.ptr),
                    Arg::U32(u32_of(vocab_offset, "vocabulary offset")?),
                    Arg::P(per_row[0].ptr),
                    Arg::P(per_row[1].ptr),
                    Arg::P(per_row[2].ptr),
                    Arg::P(ptr_or_null(d_entropy)),
                    Arg::P(out.ptr),
                    Arg::U64(out_stride as u64),
                ],
            )
        }
    }

    /// `head_objective_<T>_<O>(const T* logits, u32 cols, u64 stride, const u32* targets,
    /// ObjectiveParams p, const float* old_logp, const float* adv, const float* weight,
    /// const float* rollout_logp, const float* ref_logp, float* logp, float* entropy,
    /// float* sum_p2, float* lse, float* loss, float* d_logp, float* d_entropy, O* dz,
    /// u64 dz_stride)`; one block per whole row (targets < cols, validated by the caller);
    /// `dz` may alias `logits` with the same type and stride (each element is read before the
    /// same thread overwrites it, after the block-wide statistics are complete).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn k_head_objective(
        &self,
        logits: DevPtr,
        rows: usize,
        cols: usize,
        stride: usize,
        targets: DevPtr,
        params: ObjectiveParams,
        inputs: [DevPtr; 3],
        rollout: Option<DevPtr>,
        reference: Option<DevPtr>,
        outs: [DevPtr; 7],
        dz: DevPtr,
        dz_stride: usize,
    ) -> Result<()> {
        let op = "linear objective";
        float_only(&logits, op)?;
        float_only(&dz, op)?;
        u32_only(&targets, op)?;
        logits.need_view(rows, cols, stride, op)?;
        dz.need_view(rows, cols, dz_stride, op)?;
        targets.need(rows, op)?;
        for p in inputs
            .iter()
            .chain(rollout.iter())
            .chain(reference.iter())
            .chain(outs.iter())
        {
            f32_only(p, op)?;
            p.need(rows, op)?;
        }
        if dz.ptr == logits.ptr && (dz.dtype != logits.dtype || dz_stride != stride) {
            return Err(Error::Shape {
                op,
                reason: "an in-place gradient must have the logits' type and stride",
            });
        }
        if rows == 0 || cols == 0 {
            return Ok(());
        }
        let name = format!(
            "head_objective_{}_{}",
            dt_suffix(logits.dtype),
            dt_suffix(dz.dtype)
        );
        let mut args = vec![
            Arg::P(logits.ptr),
            Arg::U32(u32_of(cols, "vocabulary")?),
            Arg::U64(stride as u64),
            Arg::P(targets.ptr),
            Arg::Obj(params),
            Arg::P(inputs[0].ptr),
            Arg::P(inputs[1].ptr),
            Arg::P(inputs[2].ptr),
            Arg::P(ptr_or_null(rollout)),
            Arg::P(ptr_or_null(reference)),
        ];
        args.extend(outs.iter().map(|o| Arg::P(o.ptr)));
        args.extend([Arg::P(dz.ptr), Arg::U64(dz_stride as u64)]);
        // SAFETY: the argument list follows the C signature of the instantiation named by `name` (logprob.cu)
        // quoted in this function's docs, in order and type; every pointer was checked above
        // (`need`/`need_view`) to cover the elements the kernel touches at these sizes; the
        // launch is queued on this handle's only stream (module docs).
        unsafe {
            self.launch(
                Family::Logprob,
                &name,
                plan::per_row(rows, plan::row_threads(cols, 16, 512))?,
                &args,
            )
        }
    }

    /// `objective_tokens(u32 n, ObjectiveParams p, const float* logp, const float* old_logp,
    /// const float* adv, const float* weight, const float* rollout_logp,
    /// const float* ref_logp, const float* entropy, float* loss, float* d_logp,
    /// float* d_entropy)`; optional inputs may be null.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn k_objective_tokens(
        &self,
        n: usize,
        params: ObjectiveParams,
        inputs: [DevPtr; 4],
        rollout: Option<DevPtr>,
        reference: Option<DevPtr>,
        entropy: Option<DevPtr>,
        outs: [DevPtr; 3],
    ) -> Result<()> {
        let op = "objective";
        for p in inputs
            .iter()
            .chain(rollout.iter())
            .chain(reference.iter())
            .chain(entropy.iter())
            .chain(outs.iter())
        {
            f32_only(p, op)?;
            p.need(n, op)?;
        }
        if n == 0 {
            return Ok(());
        }
        // SAFETY: the argument list follows the C signature of `objective_tokens` (objective.cu)
        // quoted in this function's docs, in order and type; every pointer was checked above
        // (`need`/`need_view`) to cover the elements the kernel touches at these sizes; the
        // launch is queued on this handle's only stream (module docs).
        unsafe {
            self.launch(
                Family::Objective,
                "objective_tokens",
                Dims::linear((n as u64).div_ceil(256), 256)?,
                &[
                    Arg::U32(u32_of(n, "tokens")?),
                    Arg::Obj(params),
                    Arg::P(inputs[0].ptr),
                    Arg::P(inputs[1].ptr),
                    Arg::P(inputs[2].ptr),
                    Arg::P(inputs[3].ptr),
                    Arg::P(ptr_or_null(rollout)),
                    Arg::P(ptr_or_null(reference)),
                    Arg::P(ptr_or_null(entropy)),
                    Arg::P(outs[0].ptr),
                    Arg::P(outs[1].ptr),
                    Arg::P(outs[2].ptr),
                ],
            )
        }
    }

    /// One `cublasGemmEx` (f32 compute) on this handle's stream.
    pub(crate) fn gemm(&self, g: &GemmCall) -> Result<()> {
        let op = "matmul";
        // Column-major extents: op(A) is m x k, stored (trans ? k x m : m x k) with leading
        // dimension lda >= stored rows; likewise B (k x n) and C (m x n).
        let (a_rows, a_cols) = if g.trans_a { (g.k, g.m) } else { (g.m, g.k) };
        let (b_rows, b_cols) = if g.trans_b { (g.n, g.k) } else { (g.k, g.n) };
        if g.m == 0 || g.n == 0 || g.k == 0 {
            return Err(Error::Shape {
                op,
                reason: "empty GEMM reached cuBLAS",
            });
        }
        if g.lda < a_rows.max(1) || g.ldb < b_rows.max(1) || g.ldc < g.m.max(1) {
            return Err(Error::Shape {
                op,
                reason: "leading dimension smaller than the stored rows",
            });
        }
        // A column-major matrix with `cols` columns and leading dimension ld spans
        // (cols - 1) * ld + rows elements.
        g.a.need(crate::buffer::view_extent(a_cols, a_rows, g.lda), op)?;
        g.b.need(crate::buffer::view_extent(b_cols, b_rows, g.ldb), op)?;
        g.c.need(crate::buffer::view_extent(g.n, g.m, g.ldc), op)?;
        if g.a.dtype != g.b.dtype {
            return Err(Error::UnsupportedDType {
                op,
                dtype: g.b.dtype,
                backend: "cuda",
            });
        }
        let (at, bt, ct) = (
            cuda_dtype(g.a.dtype)?,
            cuda_dtype(g.b.dtype)?,
            cuda_dtype(g.c.dtype)?,
        );
        if g.c.dtype != DType::F32 && g.c.dtype != g.a.dtype {
            return Err(Error::UnsupportedDType {
                op,
                dtype: g.c.dtype,
                backend: "cuda",
            });
        }
        let i = |x: usize, what| i32::try_from(x).map_err(|_| limit(what));
        let (m, n, k) = (i(g.m, "GEMM m")?, i(g.n, "GEMM n")?, i(g.k, "GEMM k")?);
        let (lda, ldb, ldc) = (
            i(g.lda, "GEMM lda")?,
            i(g.ldb, "GEMM ldb")?,
            i(g.ldc, "GEMM ldc")?,
        );
        let t = |x: bool| {
            if x {
                cublas_sys::cublasOperation_t::CUBLAS_OP_T
            } else {
                cublas_sys::cublasOperation_t::CUBLAS_OP_N
            }
        };
        let compute = if g.tf32 && g.a.dtype == DType::F32 {
            cublas_sys::cublasComputeType_t::CUBLAS_COMPUTE_32F_FAST_TF32
        } else {
            cublas_sys::cublasComputeType_t::CUBLAS_COMPUTE_32F
        };
        let blas = self.inner.blas.lock().map_err(|_| CudaError::Poisoned)?;
        let alpha = g.alpha;
        let beta = g.beta;
        // SAFETY: cublasGemmEx(handle, transa, transb, m, n, k, alpha, A, Atype, lda, B, Btype,
        // ldb, beta, C, Ctype, ldc, computeType, algo). The extents checked above are exactly
        // the column-major spans cuBLAS reads (A, B) and writes (C) for these m, n, k and
        // leading dimensions; element types are the buffers' own; alpha and beta are f32 host
        // scalars as CUBLAS_COMPUTE_32F(_FAST_TF32) requires (default host pointer mode), alive
        // for the call. The handle is bound to this handle's stream (`CudaBlas::new`) and used
        // under its mutex, so the GEMM is ordered with every other op of this handle.
        unsafe {
            cudarc::cublas::result::gemm_ex(
                *blas.handle(),
                t(g.trans_a),
                t(g.trans_b),
                m,
                n,
                k,
                (&raw const alpha).cast(),
                g.a.ptr as *const std::ffi::c_void,
                at,
                lda,
                g.b.ptr as *const std::ffi::c_void,
                bt,
                ldb,
                (&raw const beta).cast(),
                g.c.ptr as *mut std::ffi::c_void,
                ct,
                ldc,
                compute,
                cublas_sys::cublasGemmAlgo_t::CUBLAS_GEMM_DEFAULT,
            )
        }
        .map_err(CudaError::from)?;
        Ok(())
    }
}

impl Cuda {
    fn default_pool(&self) -> Result<cudarc::driver::sys::CUmemoryPool> {
        let mut pool: cudarc::driver::sys::CUmemoryPool = std::ptr::null_mut();
        self.inner.ctx.bind_to_thread().map_err(drv)?;
        // SAFETY: cuDeviceGetDefaultMemPool(CUmemoryPool* pool_out, CUdevice dev): `pool` is a
        // valid out-pointer and the device handle comes from this handle's live context.
        unsafe {
            cudarc::driver::sys::cuDeviceGetDefaultMemPool(&mut pool, self.inner.ctx.cu_device())
        }
        .result()
        .map_err(drv)?;
        Ok(pool)
    }

    /// The most bytes in use at once in the device's default memory pool (where this backend
    /// allocates) since the last [`Cuda::reset_pool_peak`]: the peak memory of the ops run in
    /// between, as `torch.cuda.max_memory_allocated` reports for PyTorch.
    ///
    /// # Errors
    /// A backend error if the driver calls fail.
    pub fn pool_peak_bytes(&self) -> Result<u64> {
        let pool = self.default_pool()?;
        let mut value: u64 = 0;
        // SAFETY: cuMemPoolGetAttribute(CUmemoryPool, CUmemPool_attribute, void* value): for
        // CU_MEMPOOL_ATTR_USED_MEM_HIGH the value is a cuuint64_t, and `value` is a u64.
        unsafe {
            cudarc::driver::sys::cuMemPoolGetAttribute(
                pool,
                cudarc::driver::sys::CUmemPool_attribute::CU_MEMPOOL_ATTR_USED_MEM_HIGH,
                (&raw mut value).cast(),
            )
        }
        .result()
        .map_err(drv)?;
        Ok(value)
    }

    /// Resets the peak of [`Cuda::pool_peak_bytes`] to the bytes in use now.
    ///
    /// # Errors
    /// A backend error if the driver calls fail.
    pub fn reset_pool_peak(&self) -> Result<()> {
        let pool = self.default_pool()?;
        let mut zero: u64 = 0;
        // SAFETY: cuMemPoolSetAttribute(CUmemoryPool, CUmemPool_attribute, void* value): the
        // driver accepts only 0 for CU_MEMPOOL_ATTR_USED_MEM_HIGH, passed as a cuuint64_t.
        unsafe {
            cudarc::driver::sys::cuMemPoolSetAttribute(
                pool,
                cudarc::driver::sys::CUmemPool_attribute::CU_MEMPOOL_ATTR_USED_MEM_HIGH,
                (&raw mut zero).cast(),
            )
        }
        .result()
        .map_err(drv)?;
        Ok(())
    }
}

//! The device, buffers, windows onto buffers, the pipeline cache and dispatch.

use std::collections::HashMap;
use std::sync::mpsc;
use std::sync::{Arc, Mutex, PoisonError};

use axpo_core::backend::{DType, DeviceBuffer, HostData};
use axpo_core::{BackendError, BackendErrorKind, Error, Result};
use half::{bf16, f16};

use crate::kernels::{self, Family};

/// The backend's name in errors.
pub(crate) const NAME: &str = "wgpu";

/// A backend error of `kind`.
pub(crate) fn err(kind: BackendErrorKind, message: impl Into<String>) -> Error {
    Error::Backend(BackendError::new(NAME, kind, message))
}

/// Options of [`crate::Wgpu::with_options`].
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct WgpuOptions {
    /// Use the first adapter whose name contains this text (case-insensitive). Defaults to
    /// the `WGPU_ADAPTER_NAME` environment variable; without either, the best adapter (discrete
    /// GPU, then integrated, virtual, CPU).
    pub adapter_name: Option<String>,
    /// Caps the size of one storage binding below the adapter's
    /// `max_storage_buffer_binding_size` (tests use this to force every op to split its work).
    pub max_binding_bytes: Option<u64>,
}

impl WgpuOptions {
    /// Sets [`WgpuOptions::adapter_name`].
    #[must_use]
    pub fn adapter_name(mut self, name: impl Into<String>) -> Self {
        self.adapter_name = Some(name.into());
        self
    }

    /// Sets [`WgpuOptions::max_binding_bytes`] (at least 256 bytes are used).
    #[must_use]
    pub fn max_binding_bytes(mut self, bytes: u64) -> Self {
        self.max_binding_bytes = Some(bytes);
        self
    }
}

/// A device buffer of the wgpu backend: a storage buffer, its element type and length.
#[derive(Debug)]
pub struct WgpuBuffer {
    pub(crate) buffer: wgpu::Buffer,
    pub(crate) dtype: DType,
    pub(crate) len: usize,
}

impl DeviceBuffer for WgpuBuffer {
    fn dtype(&self) -> DType {
        self.dtype
    }
    fn len(&self) -> usize {
        self.len
    }
}

/// The limits the backend works within.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    /// Largest storage binding, bytes.
    pub max_binding: u64,
    /// Storage binding offsets must be multiples of this.
    pub align: u64,
    /// Largest buffer, bytes.
    pub max_buffer: u64,
    /// Workgroups per grid dimension.
    pub max_groups: u32,
    /// Workgroup memory, bytes.
    pub workgroup_storage: u32,
}

type PipelineKey = (Family, &'static str, String);

/// Everything behind the cheap [`crate::Wgpu`] handle.
pub(crate) struct Inner {
    pub device: wgpu::Device,
    pub queue: wgpu::Queue,
    pub info: wgpu::AdapterInfo,
    pub limits: Limits,
    pipelines: Mutex<HashMap<PipelineKey, Arc<wgpu::ComputePipeline>>>,
    modules: Mutex<HashMap<(Family, String), wgpu::ShaderModule>>,
    error: Arc<Mutex<Option<String>>>,
    /// The uniform parameters of one submission, one 256-byte slot per dispatch; the lock
    /// serialises submissions that reuse it (a later `write_buffer` is ordered after the
    /// earlier submissions on the queue).
    params: Mutex<wgpu::Buffer>,
}

/// Bytes of one parameter slot (the largest `min_uniform_buffer_offset_alignment` in practice).
const SLOT: u64 = 256;
/// Slots in the parameter buffer: dispatches per submission.
const SLOTS: usize = 256;

impl core::fmt::Debug for Inner {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Wgpu")
            .field("adapter", &self.info.name)
            .field("backend", &self.info.backend)
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

fn rank(t: wgpu::DeviceType) -> u8 {
    match t {
        wgpu::DeviceType::DiscreteGpu => 0,
        wgpu::DeviceType::IntegratedGpu => 1,
        wgpu::DeviceType::VirtualGpu => 2,
        wgpu::DeviceType::Cpu => 3,
        wgpu::DeviceType::Other => 4,
    }
}

impl Inner {
    /// Picks an adapter and opens a device, without any helper that panics.
    pub fn new(options: &WgpuOptions) -> Result<Self> {
        let instance =
            wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle_from_env());
        let backends = wgpu::Backends::from_env().unwrap_or(wgpu::Backends::all());
        let adapters = pollster::block_on(instance.enumerate_adapters(backends));
        let listed: Vec<String> = adapters
            .iter()
            .map(|a| {
                let i = a.get_info();
                format!("{} ({:?}, {:?})", i.name, i.backend, i.device_type)
            })
            .collect();
        let wanted = options
            .adapter_name
            .clone()
            .or_else(|| std::env::var("WGPU_ADAPTER_NAME").ok())
            .map(|s| s.to_lowercase());
        let mut candidates: Vec<wgpu::Adapter> = adapters
            .into_iter()
            .filter(|a| {
                wanted
                    .as_ref()
                    .is_none_or(|w| a.get_info().name.to_lowercase().contains(w.as_str()))
            })
            .filter(|a| {
                a.get_downlevel_capabilities()
                    .flags
                    .contains(wgpu::DownlevelFlags::COMPUTE_SHADERS)
            })
            .collect();
        candidates.sort_by_key(|a| rank(a.get_info().device_type));
        let Some(adapter) = candidates.into_iter().next() else {
            let hint = "install a Vulkan driver (on CPU-only Linux: `apt-get install \
                        mesa-vulkan-drivers libvulkan1`) and set WGPU_BACKEND=vulkan";
            return Err(err(
                BackendErrorKind::DeviceUnavailable,
                match wanted {
                    Some(w) => format!(
                        "no compute-capable adapter named like {w:?}; adapters found: {listed:?}"
                    ),
                    None => {
                        format!("no compute-capable adapter; adapters found: {listed:?}; {hint}")
                    }
                },
            ));
        };
        let info = adapter.get_info();
        let al = adapter.limits();
        let desc = wgpu::DeviceDescriptor {
            label: Some("axpo"),
            required_features: wgpu::Features::empty(),
            required_limits: al.clone(),
            experimental_features: wgpu::ExperimentalFeatures::disabled(),
            memory_hints: wgpu::MemoryHints::Performance,
            trace: wgpu::Trace::Off,
        };
        let (device, queue) = pollster::block_on(adapter.request_device(&desc)).map_err(|e| {
            Error::Backend(
                BackendError::new(
                    NAME,
                    BackendErrorKind::DeviceUnavailable,
                    format!("adapter {} refused a device: {e}", info.name),
                )
                .with_source(e),
            )
        })?;
        let error = Arc::new(Mutex::new(None::<String>));
        let slot = Arc::clone(&error);
        device.on_uncaptured_error(Arc::new(move |e: wgpu::Error| {
            let mut s = slot.lock().unwrap_or_else(PoisonError::into_inner);
            if s.is_none() {
                *s = Some(e.to_string());
            }
        }));
        let mut max_binding = al.max_storage_buffer_binding_size.min(al.max_buffer_size);
        if let Some(cap) = options.max_binding_bytes {
            max_binding = max_binding.min(cap.max(256));
        }
        let limits = Limits {
            max_binding,
            align: u64::from(al.min_storage_buffer_offset_alignment.max(4)),
            max_buffer: al.max_buffer_size,
            max_groups: al.max_compute_workgroups_per_dimension.max(1),
            workgroup_storage: al.max_compute_workgroup_storage_size,
        };
        let params = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("params"),
            size: SLOT * SLOTS as u64,
            usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        Ok(Self {
            device,
            queue,
            info,
            limits,
            pipelines: Mutex::new(HashMap::new()),
            modules: Mutex::new(HashMap::new()),
            error,
            params: Mutex::new(params),
        })
    }

    /// Returns (and clears) an error the device reported since the last check.
    pub fn check(&self, what: &str) -> Result<()> {
        let taken = self
            .error
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        match taken {
            None => Ok(()),
            Some(msg) => {
                let kind = if msg.contains("memory") || msg.contains("Memory") {
                    BackendErrorKind::OutOfMemory
                } else {
                    BackendErrorKind::Launch
                };
                Err(err(kind, format!("{what}: {msg}")))
            }
        }
    }

    /// Bytes a buffer of `len` elements of `dtype` occupies on the device (a multiple of 4,
    /// at least 4: storage bindings are made of 32-bit words).
    pub fn bytes_of(dtype: DType, len: usize) -> Result<u64> {
        let raw = len
            .checked_mul(dtype.size())
            .ok_or_else(|| err(BackendErrorKind::LimitExceeded, "buffer size overflows"))?;
        Ok((raw as u64).div_ceil(4).max(1) * 4)
    }

    fn new_buffer(&self, bytes: u64, label: &str) -> Result<wgpu::Buffer> {
        if bytes > self.limits.max_buffer {
            return Err(err(
                BackendErrorKind::LimitExceeded,
                format!(
                    "{label}: {bytes} bytes exceed the adapter's max_buffer_size of {}",
                    self.limits.max_buffer
                ),
            ));
        }
        let buffer = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(label),
            size: bytes,
            usage: wgpu::BufferUsages::STORAGE
                | wgpu::BufferUsages::COPY_SRC
                | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        self.check(label)?;
        Ok(buffer)
    }

    /// A zero-filled buffer (wgpu zero-initialises every buffer).
    pub fn zeros(&self, dtype: DType, len: usize) -> Result<WgpuBuffer> {
        let buffer = self.new_buffer(Self::bytes_of(dtype, len)?, "zeros")?;
        Ok(WgpuBuffer { buffer, dtype, len })
    }

    /// Copies host data into a new buffer.
    pub fn upload(&self, data: HostData<'_>) -> Result<WgpuBuffer> {
        let (dtype, len) = (data.dtype(), data.len());
        let bytes = Self::bytes_of(dtype, len)?;
        let buffer = self.new_buffer(bytes, "upload")?;
        let raw = data.as_bytes();
        if !raw.is_empty() {
            if raw.len().is_multiple_of(4) {
                self.queue.write_buffer(&buffer, 0, raw);
            } else {
                let mut padded = raw.to_vec();
                padded.resize(raw.len().div_ceil(4) * 4, 0);
                self.queue.write_buffer(&buffer, 0, &padded);
            }
        }
        self.check("upload")?;
        Ok(WgpuBuffer { buffer, dtype, len })
    }

    /// Reads a whole buffer back as bytes (its padded size).
    pub fn read_bytes(&self, src: &WgpuBuffer) -> Result<Vec<u8>> {
        let bytes = src.buffer.size();
        let staging = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("download"),
            size: bytes,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let mut enc = self
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                label: Some("download"),
            });
        enc.copy_buffer_to_buffer(&src.buffer, 0, &staging, 0, bytes);
        self.queue.submit([enc.finish()]);
        self.check("download")?;
        let (tx, rx) = mpsc::channel();
        staging.map_async(wgpu::MapMode::Read, .., move |r| {
            let _ = tx.send(r);
        });
        self.device
            .poll(wgpu::PollType::wait_indefinitely())
            .map_err(|e| {
                Error::Backend(
                    BackendError::new(NAME, BackendErrorKind::Transfer, "waiting for a download")
                        .with_source(e),
                )
            })?;
        let mapped = rx
            .recv()
            .map_err(|_| err(BackendErrorKind::Transfer, "the map callback never ran"))?;
        mapped.map_err(|e| {
            Error::Backend(
                BackendError::new(NAME, BackendErrorKind::Transfer, "mapping a download")
                    .with_source(e),
            )
        })?;
        let out = {
            let view = staging.get_mapped_range(..).map_err(|e| {
                err(
                    BackendErrorKind::Transfer,
                    format!("reading a mapped download: {e}"),
                )
            })?;
            view.to_vec()
        };
        staging.unmap();
        self.check("download")?;
        Ok(out)
    }

    /// Reads a float buffer back as f32.
    pub fn download_f32(&self, src: &WgpuBuffer) -> Result<Vec<f32>> {
        if src.len == 0 {
            return match src.dtype {
                DType::U32 => Err(dtype_err("download_f32", DType::U32)),
                _ => Ok(Vec::new()),
            };
        }
        let raw = self.read_bytes(src)?;
        let n = src.len;
        Ok(match src.dtype {
            DType::F32 => raw
                .chunks_exact(4)
                .take(n)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
            DType::Bf16 => raw
                .chunks_exact(2)
                .take(n)
                .map(|c| bf16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
            DType::F16 => raw
                .chunks_exact(2)
                .take(n)
                .map(|c| f16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
            other => return Err(dtype_err("download_f32", other)),
        })
    }

    /// Reads a u32 buffer back.
    pub fn download_u32(&self, src: &WgpuBuffer) -> Result<Vec<u32>> {
        if src.dtype != DType::U32 {
            return Err(dtype_err("download_u32", src.dtype));
        }
        if src.len == 0 {
            return Ok(Vec::new());
        }
        let raw = self.read_bytes(src)?;
        Ok(raw
            .chunks_exact(4)
            .take(src.len)
            .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect())
    }

    /// The window of `buf` covering elements `start..end`: the binding (aligned start, size a
    /// multiple of 4) and the element index at which the binding begins.
    ///
    /// # Errors
    /// [`BackendErrorKind::LimitExceeded`] if the window exceeds the binding limit.
    pub fn window<'a>(
        &self,
        buf: &'a WgpuBuffer,
        start: usize,
        end: usize,
    ) -> Result<(Window<'a>, u32)> {
        if end <= start {
            // Nothing is read or written through an empty window; bind one word.
            return Ok((
                Window {
                    buffer: &buf.buffer,
                    offset: 0,
                    size: 4,
                },
                0,
            ));
        }
        let es = buf.dtype.size() as u64;
        let start_b = start as u64 * es;
        let end_b = end as u64 * es;
        let base_b = start_b / self.limits.align * self.limits.align;
        let size = (end_b - base_b).div_ceil(4) * 4;
        let size = size.min(buf.buffer.size() - base_b);
        if size > self.limits.max_binding {
            return Err(err(
                BackendErrorKind::LimitExceeded,
                format!(
                    "a {size}-byte window does not fit the {}-byte storage binding limit",
                    self.limits.max_binding
                ),
            ));
        }
        let base_elem = base_b / es;
        let base = u32::try_from(base_elem).map_err(|_| too_big("window start"))?;
        Ok((
            Window {
                buffer: &buf.buffer,
                offset: base_b,
                size,
            },
            base,
        ))
    }

    /// How many rows of `stride` elements of `dtype` fit one binding, at least counting the
    /// alignment slack.
    pub fn rows_per_binding(&self, dtype: DType, stride: usize) -> usize {
        let usable = self
            .limits
            .max_binding
            .saturating_sub(self.limits.align + 4);
        let row = (stride.max(1) * dtype.size()) as u64;
        (usable / row) as usize
    }

    fn module(&self, family: Family, dtypes: &[(&str, DType)]) -> Result<wgpu::ShaderModule> {
        let key = (family, kernels::tag(dtypes));
        let mut modules = self.modules.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(m) = modules.get(&key) {
            return Ok(m.clone());
        }
        let source = kernels::specialise(family, dtypes);
        let module = self
            .device
            .create_shader_module(wgpu::ShaderModuleDescriptor {
                label: Some(family.name()),
                source: wgpu::ShaderSource::Wgsl(source.into()),
            });
        self.check(family.name()).map_err(|e| {
            err(
                BackendErrorKind::KernelCompile,
                format!("{}.wgsl ({}): {e}", family.name(), key.1),
            )
        })?;
        modules.insert(key, module.clone());
        Ok(module)
    }

    /// The cached pipeline of `entry` in `family` specialised to `dtypes`.
    pub fn pipeline(
        &self,
        family: Family,
        entry: &'static str,
        dtypes: &[(&str, DType)],
    ) -> Result<Arc<wgpu::ComputePipeline>> {
        let key = (family, entry, kernels::tag(dtypes));
        if let Some(p) = self
            .pipelines
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&key)
        {
            return Ok(Arc::clone(p));
        }
        let module = self.module(family, dtypes)?;
        let pipeline = self
            .device
            .create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                label: Some(entry),
                layout: None,
                module: &module,
                entry_point: Some(entry),
                compilation_options: wgpu::PipelineCompilationOptions::default(),
                cache: None,
            });
        self.check(entry).map_err(|e| {
            err(
                BackendErrorKind::KernelCompile,
                format!("{}.wgsl entry {entry}: {e}", family.name()),
            )
        })?;
        let pipeline = Arc::new(pipeline);
        self.pipelines
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(key, Arc::clone(&pipeline));
        Ok(pipeline)
    }

    /// The 2D grid for `groups` workgroups (each dimension within the adapter's limit).
    pub fn grid(&self, groups: usize) -> Result<(u32, u32)> {
        let max = self.limits.max_groups as usize;
        if groups <= max {
            return Ok((groups as u32, 1));
        }
        let y = groups.div_ceil(max);
        if y > max {
            return Err(err(
                BackendErrorKind::LimitExceeded,
                format!("{groups} workgroups exceed the adapter's grid"),
            ));
        }
        Ok((max as u32, y as u32))
    }

    /// Encodes and submits `jobs` in order (one compute pass per group of at most `SLOTS`
    /// dispatches; wgpu orders the dispatches' reads after earlier writes).
    pub fn submit(&self, jobs: &[Job<'_>], what: &str) -> Result<()> {
        let live: Vec<&Job<'_>> = jobs.iter().filter(|j| j.groups > 0).collect();
        for group in live.chunks(SLOTS) {
            self.submit_group(group, what)?;
        }
        Ok(())
    }

    fn submit_group(&self, jobs: &[&Job<'_>], what: &str) -> Result<()> {
        if jobs.is_empty() {
            return Ok(());
        }
        let params = self.params.lock().unwrap_or_else(PoisonError::into_inner);
        let mut words = vec![0u32; jobs.len() * (SLOT as usize / 4)];
        let mut prepared = Vec::with_capacity(jobs.len());
        for (slot, job) in jobs.iter().enumerate() {
            if job.params.len() * 4 > SLOT as usize {
                return Err(err(
                    BackendErrorKind::Other,
                    "kernel parameters exceed a slot",
                ));
            }
            let base = slot * (SLOT as usize / 4);
            words[base..base + job.params.len()].copy_from_slice(&job.params);
            let pipeline = self.pipeline(job.family, job.entry, &job.dtypes)?;
            let mut entries = vec![wgpu::BindGroupEntry {
                binding: 0,
                resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                    buffer: &params,
                    offset: slot as u64 * SLOT,
                    size: core::num::NonZeroU64::new(SLOT),
                }),
            }];
            for (binding, w) in &job.bindings {
                entries.push(wgpu::BindGroupEntry {
                    binding: *binding,
                    resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                        buffer: w.buffer,
                        offset: w.offset,
                        size: core::num::NonZeroU64::new(w.size),
                    }),
                });
            }
            let group = self.device.create_bind_group(&wgpu::BindGroupDescriptor {
                label: Some(job.entry),
                layout: &pipeline.get_bind_group_layout(0),
                entries: &entries,
            });
            let grid = self.grid(job.groups)?;
            prepared.push((pipeline, group, grid));
        }
        self.queue
            .write_buffer(&params, 0, bytemuck::cast_slice(&words));
        self.check(what)?;
        let mut enc = self
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some(what) });
        {
            let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: Some(what),
                timestamp_writes: None,
            });
            for (pipeline, group, (x, y)) in &prepared {
                pass.set_pipeline(pipeline);
                pass.set_bind_group(0, group, &[]);
                pass.dispatch_workgroups(*x, *y, 1);
            }
        }
        self.queue.submit([enc.finish()]);
        drop(params);
        self.check(what)
    }

    /// Waits for the queue to drain.
    pub fn wait(&self) -> Result<()> {
        self.device
            .poll(wgpu::PollType::wait_indefinitely())
            .map_err(|e| {
                Error::Backend(
                    BackendError::new(NAME, BackendErrorKind::Launch, "waiting for the queue")
                        .with_source(e),
                )
            })?;
        self.check("synchronize")
    }
}

/// A binding window onto a buffer.
#[derive(Debug, Clone, Copy)]
pub struct Window<'a> {
    pub(crate) buffer: &'a wgpu::Buffer,
    pub(crate) offset: u64,
    pub(crate) size: u64,
}

/// One dispatch: the kernel, its specialisation, its uniform parameters (32-bit words, in the
/// order of the WGSL `struct`), its storage bindings and its workgroup count.
#[derive(Debug)]
pub struct Job<'a> {
    pub(crate) family: Family,
    pub(crate) entry: &'static str,
    pub(crate) dtypes: Vec<(&'static str, DType)>,
    pub(crate) params: Vec<u32>,
    pub(crate) bindings: Vec<(u32, Window<'a>)>,
    pub(crate) groups: usize,
}

impl<'a> Job<'a> {
    /// A job of `entry` in `family` with `groups` workgroups.
    pub fn new(family: Family, entry: &'static str, groups: usize) -> Self {
        Self {
            family,
            entry,
            dtypes: Vec::new(),
            params: Vec::new(),
            bindings: Vec::new(),
            groups,
        }
    }

    /// Types a float input.
    #[must_use]
    pub fn dtype(mut self, name: &'static str, dtype: DType) -> Self {
        self.dtypes.push((name, dtype));
        self
    }

    /// Appends uniform words.
    #[must_use]
    pub fn params(mut self, words: &[u32]) -> Self {
        self.params.extend_from_slice(words);
        self
    }

    /// Binds a window at `binding`.
    #[must_use]
    pub fn bind(mut self, binding: u32, w: Window<'a>) -> Self {
        self.bindings.push((binding, w));
        self
    }
}

/// An [`Error::UnsupportedDType`] of this backend.
pub(crate) fn dtype_err(op: &'static str, dtype: DType) -> Error {
    Error::UnsupportedDType {
        op,
        dtype,
        backend: NAME,
    }
}

/// A [`BackendErrorKind::LimitExceeded`] for a value that does not fit the shaders' 32-bit
/// indices.
pub(crate) fn too_big(what: &str) -> Error {
    err(
        BackendErrorKind::LimitExceeded,
        format!("{what} does not fit a 32-bit shader index"),
    )
}

/// `v` as a 32-bit shader word.
pub(crate) fn u(v: usize) -> Result<u32> {
    u32::try_from(v).map_err(|_| too_big("a size or offset"))
}

/// `v` as the bits of an f32 shader word.
pub(crate) fn f(v: f32) -> u32 {
    v.to_bits()
}

/// Requires a float element type.
pub(crate) fn float(op: &'static str, dtype: DType) -> Result<DType> {
    if dtype.is_float() {
        Ok(dtype)
    } else {
        Err(dtype_err(op, dtype))
    }
}

/// Requires an f32 buffer (every buffer the backend writes is f32, as on the CPU backend).
pub(crate) fn f32_out(op: &'static str, buf: &WgpuBuffer) -> Result<()> {
    if buf.dtype == DType::F32 {
        Ok(())
    } else {
        Err(dtype_err(op, buf.dtype))
    }
}

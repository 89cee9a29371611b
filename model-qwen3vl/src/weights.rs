//! Checkpoint tensors: memory-mapped `model*.safetensors` files (single or sharded with
//! `model.safetensors.index.json`), read by name and uploaded to a backend.
//!
//! Headers are parsed and every tensor's byte range is checked against its file up front, so a
//! truncated or corrupt file is a [`ModelError::Safetensors`] at open time, never a panic later.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use axpo_core::backend::{Backend, HostData};
use half::{bf16, f16};
use memmap2::Mmap;
use rayon::prelude::*;
use safetensors::Dtype;

use crate::error::{ModelError, Result};

/// The element type weights are uploaded in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum WeightDType {
    /// Widen every float tensor to f32 at load time (the CPU path: products then run on f32
    /// operands without per-call conversion).
    #[default]
    F32,
    /// Keep the checkpoint's element type (bf16/f16/f32), for backends that multiply half
    /// precision natively.
    AsStored,
}

/// Options of [`crate::Qwen3VL::load`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct LoadOptions {
    /// Element type of the uploaded weights.
    pub weight_dtype: WeightDType,
}

impl LoadOptions {
    /// Sets the weight element type.
    #[must_use]
    pub fn with_weight_dtype(mut self, weight_dtype: WeightDType) -> Self {
        self.weight_dtype = weight_dtype;
        self
    }
}

/// One tensor's metadata inside a shard.
#[derive(Debug, Clone)]
struct Entry {
    shard: usize,
    dtype: Dtype,
    shape: Vec<usize>,
    start: usize,
    end: usize,
}

#[derive(Debug)]
struct Shard {
    path: PathBuf,
    map: Mmap,
    data_start: usize,
}

/// Host-side tensor data widened to f32, or kept as stored.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum HostTensor {
    /// f32 elements.
    F32(Vec<f32>),
    /// f16 elements.
    F16(Vec<f16>),
    /// bf16 elements.
    Bf16(Vec<bf16>),
}

impl HostTensor {
    /// Borrowed upload data.
    #[must_use]
    pub fn as_host_data(&self) -> HostData<'_> {
        match self {
            Self::F32(v) => HostData::F32(v),
            Self::F16(v) => HostData::F16(v),
            Self::Bf16(v) => HostData::Bf16(v),
        }
    }

    /// Elements `start..end` (clamped to the length).
    #[must_use]
    pub fn slice(&self, start: usize, end: usize) -> Self {
        fn cut<T: Clone>(v: &[T], s: usize, e: usize) -> Vec<T> {
            let e = e.min(v.len());
            v.get(s.min(e)..e).unwrap_or(&[]).to_vec()
        }
        match self {
            Self::F32(v) => Self::F32(cut(v, start, end)),
            Self::F16(v) => Self::F16(cut(v, start, end)),
            Self::Bf16(v) => Self::Bf16(cut(v, start, end)),
        }
    }

    /// The elements as f32.
    #[must_use]
    pub fn to_f32(&self) -> Vec<f32> {
        match self {
            Self::F32(v) => v.clone(),
            Self::F16(v) => v.iter().map(|x| x.to_f32()).collect(),
            Self::Bf16(v) => v.iter().map(|x| x.to_f32()).collect(),
        }
    }
}

/// The tensors of a checkpoint (or any set of safetensors files), memory-mapped.
#[derive(Debug)]
pub struct SafetensorsStore {
    shards: Vec<Shard>,
    entries: BTreeMap<String, Entry>,
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> ModelError + '_ {
    move |source| ModelError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn corrupt(path: &Path, reason: impl Into<String>) -> ModelError {
    ModelError::Safetensors {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

impl SafetensorsStore {
    /// Opens the weights of a Hugging Face model folder: `model.safetensors.index.json` and its
    /// shards when the index exists, else `model.safetensors`.
    ///
    /// # Errors
    /// [`ModelError::Io`] for unreadable files, [`ModelError::Json`] for a bad index,
    /// [`ModelError::Safetensors`] for truncated or corrupt files, or an index that names a
    /// tensor its shard lacks.
    pub fn open_dir(dir: &Path) -> Result<Self> {
        let index = dir.join("model.safetensors.index.json");
        if index.exists() {
            let text = std::fs::read_to_string(&index).map_err(io_err(&index))?;
            #[derive(serde::Deserialize)]
            struct Index {
                weight_map: BTreeMap<String, String>,
            }
            let idx: Index = serde_json::from_str(&text).map_err(|source| ModelError::Json {
                path: index.clone(),
                source,
            })?;
            let mut files: Vec<&String> = idx.weight_map.values().collect();
            files.sort();
            files.dedup();
            for f in &files {
                if f.contains('/') || f.contains('\\') || f.starts_with('.') {
                    return Err(corrupt(
                        &index,
                        format!("shard name `{f}` is not a plain file"),
                    ));
                }
            }
            let paths: Vec<PathBuf> = files.iter().map(|f| dir.join(f.as_str())).collect();
            let store = Self::open_files(&paths)?;
            for (name, file) in &idx.weight_map {
                let Some(e) = store.entries.get(name) else {
                    return Err(corrupt(
                        &dir.join(file),
                        format!("the index lists `{name}` but the shard does not hold it"),
                    ));
                };
                let held_by = store.shards.get(e.shard).map(|s| s.path.as_path());
                if held_by != Some(dir.join(file).as_path()) {
                    return Err(corrupt(
                        &index,
                        format!("`{name}` is not in the shard the index names"),
                    ));
                }
            }
            Ok(store)
        } else {
            Self::open_files(&[dir.join("model.safetensors")])
        }
    }

    /// Opens one or more safetensors files as one store (a tensor name may appear only once).
    ///
    /// # Errors
    /// As [`SafetensorsStore::open_dir`].
    pub fn open_files(paths: &[PathBuf]) -> Result<Self> {
        let mut shards = Vec::with_capacity(paths.len());
        let mut entries = BTreeMap::new();
        for (i, path) in paths.iter().enumerate() {
            let file = File::open(path).map_err(io_err(path))?;
            // SAFETY: the map is read-only and private to this store. The usual memory-map caveat
            // applies: if another process truncates or rewrites the file while it is mapped, reads
            // may see the new bytes (or fault); checkpoints are not modified while loaded.
            #[allow(unsafe_code)]
            let map = unsafe { Mmap::map(&file) }.map_err(io_err(path))?;
            let (header_len, meta) = safetensors::SafeTensors::read_metadata(&map[..])
                .map_err(|e| corrupt(path, e.to_string()))?;
            let data_start = header_len
                .checked_add(8)
                .ok_or_else(|| corrupt(path, "header size overflows"))?;
            let data_len = map
                .len()
                .checked_sub(data_start)
                .ok_or_else(|| corrupt(path, "file shorter than its header"))?;
            for (name, info) in meta.tensors() {
                let (start, end) = info.data_offsets;
                let numel = info
                    .shape
                    .iter()
                    .try_fold(1usize, |a, &d| a.checked_mul(d))
                    .ok_or_else(|| corrupt(path, format!("`{name}`: shape overflows")))?;
                // Bits, then whole bytes rounded up: sub-byte types (F4, F6...) are sized right
                // (reading one is an unsupported-dtype error, holding one is not corrupt).
                let bytes = numel
                    .checked_mul(info.dtype.bitsize())
                    .map(|bits| bits.div_ceil(8));
                if start > end || end > data_len || bytes != Some(end - start) {
                    return Err(corrupt(
                        path,
                        format!("`{name}`: data range {start}..{end} does not fit the file"),
                    ));
                }
                let entry = Entry {
                    shard: i,
                    dtype: info.dtype,
                    shape: info.shape.clone(),
                    start: data_start + start,
                    end: data_start + end,
                };
                if entries.insert(name.clone(), entry).is_some() {
                    return Err(corrupt(path, format!("`{name}` appears in two files")));
                }
            }
            shards.push(Shard {
                path: path.clone(),
                map,
                data_start,
            });
        }
        Ok(Self { shards, entries })
    }

    /// Whether a tensor exists.
    #[must_use]
    pub fn contains(&self, name: &str) -> bool {
        self.entries.contains_key(name)
    }

    /// Tensor names, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.entries.keys().map(String::as_str)
    }

    /// The shape of a tensor.
    ///
    /// # Errors
    /// [`ModelError::MissingTensor`].
    pub fn shape(&self, name: &str) -> Result<&[usize]> {
        self.entry(name).map(|e| e.shape.as_slice())
    }

    fn entry(&self, name: &str) -> Result<&Entry> {
        self.entries
            .get(name)
            .ok_or_else(|| ModelError::MissingTensor { name: name.into() })
    }

    fn bytes(&self, e: &Entry) -> &[u8] {
        self.shards
            .get(e.shard)
            .and_then(|s| s.map.get(e.start..e.end))
            .unwrap_or(&[])
    }

    /// Reads a float tensor, checking its shape (`expected`; `None` accepts any shape).
    ///
    /// # Errors
    /// [`ModelError::MissingTensor`], [`ModelError::TensorShape`], [`ModelError::TensorDType`]
    /// for non-float tensors.
    pub fn float(
        &self,
        name: &str,
        expected: Option<&[usize]>,
        dtype: WeightDType,
    ) -> Result<HostTensor> {
        let e = self.entry(name)?;
        if let Some(shape) = expected
            && shape != e.shape.as_slice()
        {
            return Err(ModelError::TensorShape {
                name: name.into(),
                expected: shape.to_vec(),
                got: e.shape.clone(),
            });
        }
        let b = self.bytes(e);
        let halves = || b.chunks_exact(2).map(|c| u16::from_le_bytes([c[0], c[1]]));
        Ok(match (e.dtype, dtype) {
            (Dtype::F32, _) => HostTensor::F32(
                b.chunks_exact(4)
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .collect(),
            ),
            // Widening runs on all cores: it is most of the load time of a large checkpoint.
            (Dtype::BF16, WeightDType::F32) => HostTensor::F32(
                b.par_chunks_exact(2)
                    .map(|c| bf16::from_le_bytes([c[0], c[1]]).to_f32())
                    .collect(),
            ),
            (Dtype::F16, WeightDType::F32) => HostTensor::F32(
                b.par_chunks_exact(2)
                    .map(|c| f16::from_le_bytes([c[0], c[1]]).to_f32())
                    .collect(),
            ),
            (Dtype::BF16, _) => HostTensor::Bf16(halves().map(bf16::from_bits).collect()),
            (Dtype::F16, _) => HostTensor::F16(halves().map(f16::from_bits).collect()),
            (other, _) => {
                return Err(ModelError::TensorDType {
                    name: name.into(),
                    dtype: format!("{other:?}"),
                });
            }
        })
    }

    /// Reads a float tensor as f32 with its shape.
    ///
    /// # Errors
    /// As [`SafetensorsStore::float`].
    pub fn f32_tensor(&self, name: &str) -> Result<(Vec<usize>, Vec<f32>)> {
        let shape = self.shape(name)?.to_vec();
        let data = self.float(name, None, WeightDType::F32)?.to_f32();
        Ok((shape, data))
    }

    /// Reads an integer tensor (i64, i32, u32, u8...) as i64 with its shape.
    ///
    /// # Errors
    /// [`ModelError::MissingTensor`], [`ModelError::TensorDType`] for float tensors.
    pub fn int_tensor(&self, name: &str) -> Result<(Vec<usize>, Vec<i64>)> {
        let e = self.entry(name)?;
        let b = self.bytes(e);
        let data: Vec<i64> = match e.dtype {
            Dtype::I64 => b
                .chunks_exact(8)
                .map(|c| i64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
                .collect(),
            Dtype::I32 => b
                .chunks_exact(4)
                .map(|c| i64::from(i32::from_le_bytes([c[0], c[1], c[2], c[3]])))
                .collect(),
            Dtype::U32 => b
                .chunks_exact(4)
                .map(|c| i64::from(u32::from_le_bytes([c[0], c[1], c[2], c[3]])))
                .collect(),
            Dtype::I16 => b
                .chunks_exact(2)
                .map(|c| i64::from(i16::from_le_bytes([c[0], c[1]])))
                .collect(),
            Dtype::U8 => b.iter().map(|&v| i64::from(v)).collect(),
            Dtype::I8 => b.iter().map(|&v| i64::from(v as i8)).collect(),
            other => {
                return Err(ModelError::TensorDType {
                    name: name.into(),
                    dtype: format!("{other:?}"),
                });
            }
        };
        Ok((e.shape.clone(), data))
    }

    /// Reads a `u8` tensor (raw images) with its shape.
    ///
    /// # Errors
    /// [`ModelError::MissingTensor`], [`ModelError::TensorDType`] unless the tensor is `U8`.
    pub fn u8_tensor(&self, name: &str) -> Result<(Vec<usize>, Vec<u8>)> {
        let e = self.entry(name)?;
        if e.dtype != Dtype::U8 {
            return Err(ModelError::TensorDType {
                name: name.into(),
                dtype: format!("{:?}", e.dtype),
            });
        }
        Ok((e.shape.clone(), self.bytes(e).to_vec()))
    }

    /// Where the data section of each file begins (for diagnostics).
    #[must_use]
    pub fn data_offsets(&self) -> Vec<(PathBuf, usize)> {
        self.shards
            .iter()
            .map(|s| (s.path.clone(), s.data_start))
            .collect()
    }
}

/// A path into the checkpoint that mirrors its key names: `root.pp("model").pp("visual")`.
#[derive(Debug, Clone, Copy)]
pub struct Weights<'a, B: Backend> {
    store: &'a SafetensorsStore,
    backend: &'a B,
    dtype: WeightDType,
}

impl<'a, B: Backend> Weights<'a, B> {
    /// Weights read from `store` and uploaded to `backend`.
    #[must_use]
    pub fn new(store: &'a SafetensorsStore, backend: &'a B, dtype: WeightDType) -> Self {
        Self {
            store,
            backend,
            dtype,
        }
    }

    /// The store.
    #[must_use]
    pub fn store(&self) -> &'a SafetensorsStore {
        self.store
    }

    /// The backend.
    #[must_use]
    pub fn backend(&self) -> &'a B {
        self.backend
    }

    /// Uploads tensor `name` after checking its shape.
    ///
    /// # Errors
    /// As [`SafetensorsStore::float`], plus backend upload errors.
    pub fn get(&self, name: &str, shape: &[usize]) -> Result<B::Buffer> {
        let host = self.store.float(name, Some(shape), self.dtype)?;
        Ok(self.backend.upload(host.as_host_data())?)
    }

    /// Reads tensor `name` to the host as f32 after checking its shape.
    ///
    /// # Errors
    /// As [`SafetensorsStore::float`].
    pub fn host(&self, name: &str, shape: &[usize]) -> Result<HostTensor> {
        self.store.float(name, Some(shape), self.dtype)
    }

    /// Uploads host data in this store's weight element type.
    ///
    /// # Errors
    /// Backend upload errors.
    pub fn upload(&self, host: &HostTensor) -> Result<B::Buffer> {
        Ok(self.backend.upload(host.as_host_data())?)
    }
}

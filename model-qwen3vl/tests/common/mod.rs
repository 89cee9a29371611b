//! Shared test helpers: temporary copies of the fixture models, rewritten.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use axpo_model_qwen3vl::parity::fixtures_dir;
use safetensors::{Dtype, SafeTensors};

/// A fresh temporary directory (removed on drop).
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Self {
        static N: AtomicUsize = AtomicUsize::new(0);
        let p = std::env::temp_dir().join(format!(
            "axpo-qwen3vl-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        Self(p)
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub fn model_dir(variant: &str) -> PathBuf {
    fixtures_dir().join(format!("qwen3vl-tiny-{variant}"))
}

/// One tensor: name, dtype, shape, little-endian bytes.
pub type Tensor = (String, Dtype, Vec<usize>, Vec<u8>);

pub fn read_tensors(path: &Path) -> Vec<Tensor> {
    let bytes = std::fs::read(path).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let mut out: Vec<Tensor> = st
        .tensors()
        .into_iter()
        .map(|(n, v)| (n, v.dtype(), v.shape().to_vec(), v.data().to_vec()))
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

pub fn write_tensors(path: &Path, tensors: &[Tensor]) {
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = tensors
        .iter()
        .map(|(n, d, s, b)| {
            (
                n.clone(),
                safetensors::tensor::TensorView::new(*d, s.clone(), b).unwrap(),
            )
        })
        .collect();
    safetensors::serialize_to_file(views, None, path).unwrap();
}

/// Copies a fixture model (config + weights) into a temp dir, passing every tensor through `f`
/// (return `None` to drop it).
pub fn rewritten(variant: &str, f: impl Fn(Tensor) -> Option<Tensor>) -> TempDir {
    let dir = TempDir::new(variant);
    let src = model_dir(variant);
    std::fs::copy(src.join("config.json"), dir.path().join("config.json")).unwrap();
    let tensors: Vec<Tensor> = read_tensors(&src.join("model.safetensors"))
        .into_iter()
        .filter_map(f)
        .collect();
    write_tensors(&dir.path().join("model.safetensors"), &tensors);
    dir
}

pub fn bf16_to_f32_bytes(b: &[u8]) -> Vec<u8> {
    b.chunks_exact(2)
        .flat_map(|c| {
            half::bf16::from_le_bytes([c[0], c[1]])
                .to_f32()
                .to_le_bytes()
        })
        .collect()
}

pub fn bf16_to_f16_bytes(b: &[u8]) -> Vec<u8> {
    b.chunks_exact(2)
        .flat_map(|c| {
            half::f16::from_f32(half::bf16::from_le_bytes([c[0], c[1]]).to_f32()).to_le_bytes()
        })
        .collect()
}

pub fn max_abs(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

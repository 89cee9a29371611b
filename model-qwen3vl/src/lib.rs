#![doc = include_str!("../README.md")]
//!
//! ## Errors, panics, unsafe
//!
//! Every fallible function returns [`ModelError`]; no input (file, config, prompt, image) makes
//! the library panic. `unsafe` is denied except at one audited call site: the memory map of
//! checkpoint files ([`weights`]), which the issue asks for and which no safe API can provide
//! (another process could truncate a mapped file).
#![deny(unsafe_code)]
#![doc(test(attr(deny(warnings))))]

pub mod config;
mod error;
pub mod generate;
pub mod model;
pub mod mrope;
pub mod nn;
pub mod parity;
pub mod preprocess;
pub mod score;
pub mod tap;
pub mod text;
pub mod vision;
pub mod weights;

/// The fast CPU backend the model runs on by default (it lives in `axpo-core`, feature `fast-cpu`).
pub use axpo_core::backend::{FastCpu, GemmCpu, GemmKernel};
pub use config::{Config, TextConfig, VisionConfig};
pub use error::{ModelError, Result};
pub use generate::{
    Continuation, KvCache, Sampling, generate_greedy, sample_from_prefix, sample_recomputing_prefix,
};
pub use model::{ContinuationStats, Hidden, ImageInput, ModelInput, Qwen3VL};
pub use mrope::Grid;
pub use preprocess::{ImageProcessorConfig, RgbImage};
pub use tap::{NoTap, Recorder, Tap};
pub use weights::{LoadOptions, SafetensorsStore, WeightDType, Weights};

#[cfg(test)]
mod tests {
    fn send_sync<T: Send + Sync>() {}

    #[test]
    fn public_types_are_send_and_sync() {
        send_sync::<crate::ModelError>();
        send_sync::<crate::Qwen3VL<crate::FastCpu>>();
        send_sync::<crate::KvCache<crate::FastCpu>>();
        send_sync::<crate::SafetensorsStore>();
        let e = crate::ModelError::MissingTensor { name: "x".into() };
        assert_eq!(e.to_string(), "missing tensor `x`");
    }
}

//! Named intermediates: a forward pass reports its intermediate tensors to a [`Tap`], which the
//! parity tests use to compare every stage with the Hugging Face fixtures. [`NoTap`] costs nothing.

use std::collections::BTreeMap;

use axpo_core::backend::Backend;

use crate::error::Result;

/// Receives named intermediate tensors (names as in the fixtures, e.g. `text.layers.0.out`).
pub trait Tap<B: Backend> {
    /// Whether anything is recorded (when false the forward pass skips the downloads).
    fn enabled(&self) -> bool;

    /// Records a host tensor.
    fn host(&mut self, name: &str, shape: &[usize], data: &[f32]);

    /// Records a device buffer (downloaded only when [`Tap::enabled`]).
    ///
    /// # Errors
    /// Backend transfer errors.
    fn device(&mut self, backend: &B, name: &str, shape: &[usize], buf: &B::Buffer) -> Result<()> {
        if self.enabled() {
            let data = backend.download_f32(buf)?;
            self.host(name, shape, &data);
        }
        Ok(())
    }
}

/// Records nothing.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoTap;

impl<B: Backend> Tap<B> for NoTap {
    fn enabled(&self) -> bool {
        false
    }
    fn host(&mut self, _name: &str, _shape: &[usize], _data: &[f32]) {}
}

/// Records everything, by name: `(shape, values)`.
#[derive(Debug, Clone, Default)]
pub struct Recorder {
    /// The recorded tensors.
    pub tensors: BTreeMap<String, (Vec<usize>, Vec<f32>)>,
}

impl<B: Backend> Tap<B> for Recorder {
    fn enabled(&self) -> bool {
        true
    }
    fn host(&mut self, name: &str, shape: &[usize], data: &[f32]) {
        self.tensors
            .insert(name.to_string(), (shape.to_vec(), data.to_vec()));
    }
}

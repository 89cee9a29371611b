//! The KV cache and incremental decoding: [`crate::Qwen3VL::prefill`] fills the cache from a
//! prompt (images included) and records the MRoPE delta; [`crate::Qwen3VL::decode`] appends
//! tokens at position `cache length + delta`. [`generate_greedy`] strings them together.

use axpo_core::backend::{Backend, DType, MatMut, MatRef};

use crate::error::{ModelError, Result};
use crate::model::{ModelInput, Qwen3VL};

/// Keys and values of one layer: `capacity x (kv_heads * head_dim)` f32 buffers.
#[derive(Debug)]
pub struct LayerKv<B: Backend> {
    /// Keys (after q/k norm and rotary).
    pub k: B::Buffer,
    /// Values.
    pub v: B::Buffer,
}

/// The decoder's KV cache. Grows by doubling; rows past [`KvCache::len`] are scratch.
#[derive(Debug)]
pub struct KvCache<B: Backend> {
    layers: Vec<LayerKv<B>>,
    n_layers: usize,
    len: usize,
    capacity: usize,
    width: usize,
    rope_delta: i64,
}

impl<B: Backend> KvCache<B> {
    /// An empty cache for `layers` layers of `width = kv_heads * head_dim` columns (memory is
    /// allocated on first use).
    #[must_use]
    pub fn new(layers: usize, width: usize) -> Self {
        Self {
            layers: Vec::new(),
            n_layers: layers,
            len: 0,
            capacity: 0,
            width,
            rope_delta: 0,
        }
    }

    /// Cached positions.
    #[must_use]
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing is cached.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The MRoPE delta of the prompt (`max position + 1 - prompt tokens`).
    #[must_use]
    pub fn rope_delta(&self) -> i64 {
        self.rope_delta
    }

    /// Empties the cache (keeps its memory) and sets the delta for the next prompt.
    pub fn reset(&mut self, rope_delta: i64) {
        self.len = 0;
        self.rope_delta = rope_delta;
    }

    /// Makes room for `extra` more rows.
    ///
    /// # Errors
    /// Backend allocation errors; [`ModelError::InvalidInput`] on size overflow.
    pub fn reserve(&mut self, b: &B, extra: usize) -> Result<()> {
        let need = self
            .len
            .checked_add(extra)
            .ok_or_else(|| ModelError::input("KV cache length overflows"))?;
        if need <= self.capacity && self.layers.len() == self.n_layers {
            return Ok(());
        }
        let cap = need.max(self.capacity.saturating_mul(2)).max(64);
        let elems = cap
            .checked_mul(self.width)
            .ok_or_else(|| ModelError::input("KV cache size overflows"))?;
        let w = self.width;
        let mut grown = Vec::with_capacity(self.n_layers);
        for i in 0..self.n_layers {
            let mut k = b.zeros(DType::F32, elems)?;
            let mut v = b.zeros(DType::F32, elems)?;
            if let Some(old) = self.layers.get(i)
                && self.len > 0
            {
                b.copy_rows(
                    MatRef::strided(&old.k, 0, self.len, w, w)?,
                    MatMut::strided(&mut k, 0, self.len, w, w)?,
                )?;
                b.copy_rows(
                    MatRef::strided(&old.v, 0, self.len, w, w)?,
                    MatMut::strided(&mut v, 0, self.len, w, w)?,
                )?;
            }
            grown.push(LayerKv { k, v });
        }
        self.layers = grown;
        self.capacity = cap;
        Ok(())
    }

    /// The buffers of layer `i`.
    ///
    /// # Errors
    /// [`ModelError::InvalidInput`] if the layer does not exist.
    pub fn layer_mut(&mut self, i: usize) -> Result<&mut LayerKv<B>> {
        self.layers
            .get_mut(i)
            .ok_or_else(|| ModelError::input(format!("KV cache has no layer {i}")))
    }

    /// Marks `rows` more positions as filled (after every layer appended them).
    pub(crate) fn advance(&mut self, rows: usize) {
        self.len = (self.len + rows).min(self.capacity);
    }
}

/// Greedy decoding: prefills `input`, then appends the arg-max token until `max_new` tokens or
/// one of `stop` is produced. Returns the new tokens (including a final stop token).
///
/// # Errors
/// As [`Qwen3VL::prefill`] and [`Qwen3VL::decode`].
pub fn generate_greedy<B: Backend>(
    model: &Qwen3VL<B>,
    input: &ModelInput,
    max_new: usize,
    stop: &[u32],
) -> Result<Vec<u32>> {
    let mut cache = model.new_cache();
    let mut hidden = model.prefill(input, &mut cache)?;
    let mut out = Vec::with_capacity(max_new);
    for _ in 0..max_new {
        let logits = model.last_logits(&hidden)?;
        let next = argmax(&logits);
        out.push(next);
        if stop.contains(&next) {
            break;
        }
        hidden = model.decode(&[next], &mut cache)?;
    }
    Ok(out)
}

/// Index of the largest value (the first on ties; 0 for an empty slice).
#[must_use]
pub fn argmax(v: &[f32]) -> u32 {
    let mut best = 0usize;
    for (i, x) in v.iter().enumerate() {
        if v.get(best).is_some_and(|b| x > b) {
            best = i;
        }
    }
    best as u32
}

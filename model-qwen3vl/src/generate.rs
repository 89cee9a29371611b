//! The KV cache and incremental decoding: [`crate::Qwen3VL::prefill`] fills the cache from a
//! prompt (images included) and records the MRoPE delta; [`crate::Qwen3VL::decode`] appends
//! tokens at position `cache length + delta`. [`generate_greedy`] strings them together.
//!
//! AXPO resamples a tool call and its continuation many times from one frozen thinking prefix.
//! [`sample_from_prefix`] prefills the prefix once and gives every continuation a
//! [`KvCache::fork`] of its cache (a device-side copy of the prefix rows), so the prefix is
//! never recomputed; each continuation reports the log-prob and entropy of every sampled token,
//! which is what the core's `BranchRollout` needs.

use axpo_core::backend::{Backend, DType, MatMut, MatRef};
use axpo_core::rng::Rng;

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

    /// A copy of this cache sharing nothing with it: the filled rows are copied on the device
    /// (`copy_rows`), with room for `extra` more rows, so that a continuation can decode from a
    /// frozen prefix without recomputing it and without disturbing other continuations.
    ///
    /// # Errors
    /// Backend allocation or copy errors; [`ModelError::InvalidInput`] on size overflow.
    pub fn fork(&self, b: &B, extra: usize) -> Result<Self> {
        let mut out = Self::new(self.n_layers, self.width);
        out.rope_delta = self.rope_delta;
        if self.len == 0 {
            out.reserve(b, extra)?;
            return Ok(out);
        }
        let cap = self
            .len
            .checked_add(extra)
            .ok_or_else(|| ModelError::input("KV cache length overflows"))?;
        let elems = cap
            .checked_mul(self.width)
            .ok_or_else(|| ModelError::input("KV cache size overflows"))?;
        let w = self.width;
        for old in &self.layers {
            let mut k = b.zeros(DType::F32, elems)?;
            let mut v = b.zeros(DType::F32, elems)?;
            b.copy_rows(
                MatRef::strided(&old.k, 0, self.len, w, w)?,
                MatMut::strided(&mut k, 0, self.len, w, w)?,
            )?;
            b.copy_rows(
                MatRef::strided(&old.v, 0, self.len, w, w)?,
                MatMut::strided(&mut v, 0, self.len, w, w)?,
            )?;
            out.layers.push(LayerKv { k, v });
        }
        out.len = self.len;
        out.capacity = cap;
        Ok(out)
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

/// How the next token is chosen.
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub enum Sampling {
    /// The arg-max token.
    Greedy,
    /// A draw from `softmax(logits / temperature)` (temperature `> 0`), seeded.
    Temperature {
        /// Softmax temperature.
        temperature: f32,
        /// Seed of the continuation's generator (continuation `i` uses stream `i`).
        seed: u64,
    },
}

impl Sampling {
    /// # Errors
    /// [`ModelError::InvalidInput`] for a non-positive or non-finite temperature.
    fn validate(self) -> Result<()> {
        match self {
            Self::Temperature { temperature, .. }
                if !(temperature.is_finite() && temperature > 0.0) =>
            {
                Err(ModelError::input(
                    "sampling temperature must be finite and positive",
                ))
            }
            _ => Ok(()),
        }
    }
}

/// One sampled continuation: its tokens, and the log-prob and entropy of the distribution each
/// was drawn from (at temperature 1, the policy's own distribution, as the objective needs).
#[derive(Debug, Clone, PartialEq)]
pub struct Continuation {
    /// Sampled tokens (including a final stop token).
    pub tokens: Vec<u32>,
    /// `log p(token)` under the model (temperature 1).
    pub logprobs: Vec<f32>,
    /// Entropy of the model's next-token distribution at each step (temperature 1).
    pub entropies: Vec<f32>,
}

/// Log-softmax statistics of one row of logits in f64: `(log p(target), entropy)`.
fn token_logp_entropy(logits: &[f32], target: usize) -> (f32, f32) {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let m = f64::from(max);
    let sum: f64 = logits.iter().map(|&z| (f64::from(z) - m).exp()).sum();
    let lse = m + sum.ln();
    let ent: f64 = logits
        .iter()
        .map(|&z| {
            let lp = f64::from(z) - lse;
            let p = lp.exp();
            if p > 0.0 { -p * lp } else { 0.0 }
        })
        .sum();
    let lp = logits
        .get(target)
        .map_or(f64::NEG_INFINITY, |&z| f64::from(z) - lse);
    (lp as f32, ent.max(0.0) as f32)
}

/// Draws a token from `logits` under `sampling`.
fn choose(logits: &[f32], sampling: Sampling, rng: &mut Rng) -> u32 {
    match sampling {
        Sampling::Greedy => argmax(logits),
        Sampling::Temperature { temperature, .. } => {
            let t = f64::from(temperature);
            let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let w: Vec<f64> = logits
                .iter()
                .map(|&z| ((f64::from(z) - f64::from(max)) / t).exp())
                .collect();
            let total: f64 = w.iter().sum();
            let mut x = rng.next_f64() * total;
            for (i, wi) in w.iter().enumerate() {
                if x < *wi {
                    return i as u32;
                }
                x -= wi;
            }
            argmax(logits)
        }
    }
}

/// `count` continuations of one frozen prefix, sharing its KV cache: the prefix (`input`,
/// images included) is prefilled once, and each continuation decodes from a
/// [`KvCache::fork`] of it until `max_new` tokens or a token of `stop`. Continuation `i` draws
/// from its own generator stream, so its tokens do not depend on `count` or on the other
/// continuations: they equal what a fresh prefill of the prefix followed by the same decoding
/// would give.
///
/// # Errors
/// [`ModelError::InvalidInput`] for a non-positive or non-finite temperature; the errors of
/// [`Qwen3VL::prefill`] and [`Qwen3VL::decode`].
pub fn sample_from_prefix<B: Backend>(
    model: &Qwen3VL<B>,
    input: &ModelInput,
    count: usize,
    max_new: usize,
    stop: &[u32],
    sampling: Sampling,
) -> Result<Vec<Continuation>> {
    sampling.validate()?;
    let mut prefix = model.new_cache();
    let hidden = model.prefill(input, &mut prefix)?;
    let first = model.last_logits(&hidden)?;
    (0..count)
        .map(|i| {
            let mut cache = prefix.fork(model.backend(), max_new)?;
            continue_from(model, &mut cache, first.clone(), max_new, stop, sampling, i)
        })
        .collect()
}

/// Decodes one continuation from a cache whose next-token logits are `logits`.
fn continue_from<B: Backend>(
    model: &Qwen3VL<B>,
    cache: &mut KvCache<B>,
    mut logits: Vec<f32>,
    max_new: usize,
    stop: &[u32],
    sampling: Sampling,
    stream: usize,
) -> Result<Continuation> {
    let seed = match sampling {
        Sampling::Temperature { seed, .. } => seed,
        Sampling::Greedy => 0,
    };
    let mut rng = Rng::new(seed, stream as u64);
    let mut out = Continuation {
        tokens: Vec::with_capacity(max_new),
        logprobs: Vec::with_capacity(max_new),
        entropies: Vec::with_capacity(max_new),
    };
    for step in 0..max_new {
        let next = choose(&logits, sampling, &mut rng);
        let (lp, ent) = token_logp_entropy(&logits, next as usize);
        out.tokens.push(next);
        out.logprobs.push(lp);
        out.entropies.push(ent);
        if stop.contains(&next) || step + 1 == max_new {
            break;
        }
        let hidden = model.decode(&[next], cache)?;
        logits = model.last_logits(&hidden)?;
    }
    Ok(out)
}

/// The same continuation as [`sample_from_prefix`]'s `stream`-th, computed the slow way: a fresh
/// prefill of the prefix, then decoding. For tests and benchmarks of prefix sharing.
///
/// # Errors
/// As [`sample_from_prefix`].
pub fn sample_recomputing_prefix<B: Backend>(
    model: &Qwen3VL<B>,
    input: &ModelInput,
    stream: usize,
    max_new: usize,
    stop: &[u32],
    sampling: Sampling,
) -> Result<Continuation> {
    sampling.validate()?;
    let mut cache = model.new_cache();
    let hidden = model.prefill(input, &mut cache)?;
    let first = model.last_logits(&hidden)?;
    continue_from(model, &mut cache, first, max_new, stop, sampling, stream)
}

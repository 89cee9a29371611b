//! The policy: features of the context, a one-hidden-layer MLP on the host, and an output head
//! whose log-probs, entropies and gradients go through the backend's fused
//! [`linear_token_stats`](axpo_core::backend::LogprobOps::linear_token_stats) /
//! [`linear_token_stats_backward`](axpo_core::backend::LogprobOps::linear_token_stats_backward) (the path an
//! LM head takes), plus Adam.
//!
//! **Features** (`31 + g² + (g/3)² + 64` values for a `g x g` global view): the grammar state
//! (one-hot), the cell named in the thinking and the zoom window's two coordinates (one-hot each,
//! zero before they are emitted), whether a crop has been returned, the global view's pixels,
//! the *focus*: the global view's pixels of the cell named in the thinking (where the policy
//! said it would look; zero before it names one), and the returned crop's pixels (zero before
//! any tool response).
//!
//! **Network**: `h = tanh(W1 x + b1)`; the head's input row is `[h, 1, onehot(state)]` and its
//! matrix `W` is `V x (H + 1 + S)`: the first `H + 1` columns are trained (weights and bias),
//! the last `S` columns are a fixed grammar mask, 0 where a token is valid in the state and
//! [`MASKED_LOGIT`] where it is not. So `logits = W · [h, 1, onehot(state)]` carries the grammar
//! mask inside the same matrix product, exactly as the backend computes it, and invalid tokens
//! get probability zero (the online softmax underflows them to exactly 0).

use axpo_core::backend::{Backend, MatRef, StatsGrad, TokenStats, VocabChunk, download_stats};
use axpo_core::rng::Rng;

use super::env::{CELL, GRID, Image, Question};
use super::error::{DemoError, DemoResult};
use super::grammar::{Context, State};
use super::vocab::{COORDS, REGIONS, VOCAB_SIZE};

/// The logit offset of a token the grammar forbids: finite (so that `0 · MASKED_LOGIT` stays
/// 0 in the matrix product) and far enough below any real logit that `exp` underflows to 0.
pub const MASKED_LOGIT: f32 = -1.0e4;

/// Width of the features for a `global_size x global_size` global view.
#[must_use]
pub fn feature_width(global_size: usize) -> usize {
    let f = global_size / GRID;
    State::COUNT + REGIONS + 2 * COORDS + 1 + global_size * global_size + f * f + CELL * CELL
}

/// Writes the features of one policy position into `out` (cleared first).
pub fn features(
    question: &Question,
    ctx: &Context,
    observation: Option<&Image>,
    out: &mut Vec<f32>,
) {
    out.clear();
    let mut one_hot = |n: usize, k: Option<usize>| {
        out.extend((0..n).map(|i| if Some(i) == k { 1.0 } else { 0.0 }));
    };
    one_hot(State::COUNT, Some(ctx.state.index()));
    one_hot(REGIONS, ctx.think_region.map(usize::from));
    one_hot(COORDS, ctx.call_x.map(usize::from));
    one_hot(COORDS, ctx.call_y.map(usize::from));
    out.push(if observation.is_some() { 1.0 } else { 0.0 });
    out.extend_from_slice(question.global.pixels());
    let g = question.global.side();
    let f = g / GRID;
    match ctx.think_region {
        Some(r) => {
            let (x0, y0) = (usize::from(r) % GRID * f, usize::from(r) / GRID * f);
            for y in 0..f {
                for x in 0..f {
                    out.push(question.global.get(x0 + x, y0 + y));
                }
            }
        }
        None => out.extend(std::iter::repeat_n(0.0, f * f)),
    }
    match observation {
        Some(img) => out.extend_from_slice(img.pixels()),
        None => out.extend(std::iter::repeat_n(0.0, CELL * CELL)),
    }
}

/// Sizes of the policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PolicyShape {
    /// Feature width `D`.
    pub input: usize,
    /// Hidden width `H`.
    pub hidden: usize,
}

impl PolicyShape {
    /// Width of the head's input rows, `H + 1 + S`.
    #[must_use]
    pub fn head_width(&self) -> usize {
        self.hidden + 1 + State::COUNT
    }
    fn w1(&self) -> std::ops::Range<usize> {
        0..self.hidden * self.input
    }
    fn b1(&self) -> std::ops::Range<usize> {
        let s = self.hidden * self.input;
        s..s + self.hidden
    }
    fn head(&self) -> std::ops::Range<usize> {
        let s = self.hidden * self.input + self.hidden;
        s..s + VOCAB_SIZE * (self.hidden + 1)
    }
    /// Number of trained parameters.
    #[must_use]
    pub fn parameter_count(&self) -> usize {
        self.head().end
    }
}

/// A standard normal draw (Box-Muller).
fn gaussian(rng: &mut Rng) -> f32 {
    let u1 = rng.next_f64().max(1e-300);
    let u2 = rng.next_f64();
    ((-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()) as f32
}

/// The sampling distribution at one position: valid tokens and their probabilities.
#[derive(Debug, Clone, PartialEq)]
pub struct Distribution {
    /// The valid tokens.
    pub tokens: &'static [u32],
    /// Their log-probabilities.
    pub logp: Vec<f32>,
    /// Entropy (nats) of the distribution.
    pub entropy: f32,
}

impl Distribution {
    /// Draws a token: `(index into tokens, token)`.
    pub fn sample(&self, rng: &mut Rng) -> (usize, u32) {
        let mut x = rng.next_f64();
        for (i, &lp) in self.logp.iter().enumerate() {
            x -= f64::from(lp).exp();
            if x < 0.0 {
                return (i, self.tokens[i]);
            }
        }
        let last = self.tokens.len().saturating_sub(1);
        (last, self.tokens.get(last).copied().unwrap_or(0))
    }
}

/// Rows to score: features `N x D`, grammar states and target tokens.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Rows {
    /// Features, row-major.
    pub features: Vec<f32>,
    /// The grammar state of each row.
    pub states: Vec<State>,
    /// The target token of each row.
    pub targets: Vec<u32>,
}

impl Rows {
    /// Number of rows.
    #[must_use]
    pub fn len(&self) -> usize {
        self.states.len()
    }
    /// Whether there are no rows.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.states.is_empty()
    }
}

/// The forward pass of a batch of rows, kept for the backward.
#[derive(Debug)]
pub struct HeadPass<B: Backend> {
    hidden: Vec<f32>,
    head_in: B::Buffer,
    head_w: B::Buffer,
    stats: TokenStats<B::Buffer>,
    /// `log p(target)` per row, from the backend.
    pub logp: Vec<f32>,
    /// Entropy per row, from the backend.
    pub entropy: Vec<f32>,
}

/// The policy's parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    shape: PolicyShape,
    params: Vec<f32>,
}

impl Policy {
    /// A freshly initialised policy (`W1` scaled normal, `b1` zero, head zero: uniform over
    /// the valid tokens).
    #[must_use]
    pub fn new(shape: PolicyShape, rng: &mut Rng) -> Self {
        let mut params = vec![0.0; shape.parameter_count()];
        let scale = 1.0 / (shape.input as f32).sqrt();
        for w in &mut params[shape.w1()] {
            *w = gaussian(rng) * scale;
        }
        Self { shape, params }
    }

    /// The shape.
    #[must_use]
    pub fn shape(&self) -> PolicyShape {
        self.shape
    }

    /// The trained parameters, flat.
    #[must_use]
    pub fn params(&self) -> &[f32] {
        &self.params
    }

    /// The trained parameters, flat and writable (for the optimizer).
    pub fn params_mut(&mut self) -> &mut [f32] {
        &mut self.params
    }

    /// `tanh(W1 x + b1)` for every row of `features` (`N x D`), as `N x H`.
    #[must_use]
    pub fn hidden(&self, features: &[f32]) -> Vec<f32> {
        let (d, h) = (self.shape.input, self.shape.hidden);
        let n = features.len() / d.max(1);
        let w1 = &self.params[self.shape.w1()];
        let b1 = &self.params[self.shape.b1()];
        let mut out = vec![0.0f32; n * h];
        for (x, o) in features.chunks_exact(d).zip(out.chunks_exact_mut(h)) {
            for (j, oj) in o.iter_mut().enumerate() {
                let w = &w1[j * d..(j + 1) * d];
                let s: f32 = x.iter().zip(w).map(|(a, b)| a * b).sum();
                *oj = (s + b1[j]).tanh();
            }
        }
        out
    }

    /// The sampling distributions of rows with these features and states, computed on the host
    /// (the rollout engine's side; the trainer recomputes log-probs through the backend).
    #[must_use]
    pub fn distributions(&self, features: &[f32], states: &[State]) -> Vec<Distribution> {
        let hd = self.shape.hidden;
        let hidden = self.hidden(features);
        let head = &self.params[self.shape.head()];
        states
            .iter()
            .zip(hidden.chunks_exact(hd))
            .map(|(&state, h)| {
                let tokens = state.valid();
                let logits: Vec<f32> = tokens
                    .iter()
                    .map(|&t| {
                        let row = &head[t as usize * (hd + 1)..(t as usize + 1) * (hd + 1)];
                        row[..hd].iter().zip(h).map(|(a, b)| a * b).sum::<f32>() + row[hd]
                    })
                    .collect();
                let m = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                let s: f32 = logits.iter().map(|z| (z - m).exp()).sum();
                let lse = m + s.ln();
                let logp: Vec<f32> = logits.iter().map(|z| (z - lse).min(0.0)).collect();
                let entropy = logp.iter().map(|&lp| -lp.exp() * lp).sum::<f32>().max(0.0);
                Distribution {
                    tokens,
                    logp,
                    entropy,
                }
            })
            .collect()
    }

    /// The head matrix as the backend sees it: `V x (H + 1 + S)`, trained columns then the fixed
    /// grammar-mask columns.
    #[must_use]
    pub fn head_matrix(&self) -> Vec<f32> {
        let hd = self.shape.hidden;
        let w = self.shape.head_width();
        let head = &self.params[self.shape.head()];
        let mut out = vec![0.0f32; VOCAB_SIZE * w];
        for v in 0..VOCAB_SIZE {
            out[v * w..v * w + hd + 1].copy_from_slice(&head[v * (hd + 1)..(v + 1) * (hd + 1)]);
            for s in State::ALL {
                if !s.allows(v as u32) {
                    out[v * w + hd + 1 + s.index()] = MASKED_LOGIT;
                }
            }
        }
        out
    }

    /// Current log-probs and entropies of `rows` through the backend's fused output head.
    ///
    /// # Errors
    /// A backend or shape error.
    pub fn head_pass<B: Backend>(&self, backend: &B, rows: &Rows) -> DemoResult<HeadPass<B>> {
        let n = rows.len();
        let (hd, w) = (self.shape.hidden, self.shape.head_width());
        if rows.features.len() != n * self.shape.input || rows.targets.len() != n {
            return Err(DemoError::Internal(
                "row batch with inconsistent sizes".into(),
            ));
        }
        let hidden = self.hidden(&rows.features);
        let mut head_in = vec![0.0f32; n * w];
        for ((row, h), s) in head_in
            .chunks_exact_mut(w)
            .zip(hidden.chunks_exact(hd))
            .zip(&rows.states)
        {
            row[..hd].copy_from_slice(h);
            row[hd] = 1.0;
            row[hd + 1 + s.index()] = 1.0;
        }
        let head_in = backend.upload_f32(&head_in)?;
        let head_w = backend.upload_f32(&self.head_matrix())?;
        let stats = backend.linear_token_stats(
            MatRef::new(&head_in, n, w)?,
            MatRef::new(&head_w, VOCAB_SIZE, w)?,
            &rows.targets,
            VocabChunk(VOCAB_SIZE),
        )?;
        let [logp, entropy, _, _] = download_stats(backend, &stats)?;
        Ok(HeadPass {
            hidden,
            head_in,
            head_w,
            stats,
            logp,
            entropy,
        })
    }

    /// Gradients of the loss with respect to every trained parameter, given
    /// `d loss / d logp` (and optionally `d loss / d entropy`) per row: the backend's fused
    /// backward gives `d hidden` and `d W`; the host backpropagates `d hidden` through the MLP.
    ///
    /// # Errors
    /// A backend or shape error.
    pub fn gradients<B: Backend>(
        &self,
        backend: &B,
        rows: &Rows,
        pass: &HeadPass<B>,
        d_logp: &[f32],
        d_entropy: Option<&[f32]>,
    ) -> DemoResult<Vec<f32>> {
        let n = rows.len();
        let (d, hd, w) = (self.shape.input, self.shape.hidden, self.shape.head_width());
        let g_logp = backend.upload_f32(d_logp)?;
        let g_entropy = d_entropy.map(|g| backend.upload_f32(g)).transpose()?;
        let grads = backend.linear_token_stats_backward(
            MatRef::new(&pass.head_in, n, w)?,
            MatRef::new(&pass.head_w, VOCAB_SIZE, w)?,
            &rows.targets,
            &pass.stats,
            StatsGrad {
                d_logp: &g_logp,
                d_entropy: g_entropy.as_ref(),
            },
            VocabChunk(VOCAB_SIZE),
        )?;
        let d_hidden = backend.download_f32(&grads.d_hidden)?;
        let d_weight = backend.download_f32(&grads.d_weight)?;
        let mut out = vec![0.0f32; self.params.len()];
        // Head: the trained columns only (the mask columns are fixed).
        let head = self.shape.head();
        for v in 0..VOCAB_SIZE {
            out[head.start + v * (hd + 1)..head.start + (v + 1) * (hd + 1)]
                .copy_from_slice(&d_weight[v * w..v * w + hd + 1]);
        }
        // MLP: d pre = d h * (1 - h^2); d W1 = d preᵀ x; d b1 = sum d pre.
        let (w1, b1) = (self.shape.w1(), self.shape.b1());
        for ((x, h), dh) in rows
            .features
            .chunks_exact(d)
            .zip(pass.hidden.chunks_exact(hd))
            .zip(d_hidden.chunks_exact(w))
        {
            for j in 0..hd {
                let g = dh[j] * (1.0 - h[j] * h[j]);
                if g == 0.0 {
                    continue;
                }
                out[b1.start + j] += g;
                let row = &mut out[w1.start + j * d..w1.start + (j + 1) * d];
                for (o, xi) in row.iter_mut().zip(x) {
                    *o += g * xi;
                }
            }
        }
        Ok(out)
    }
}

/// Adam with global-norm gradient clipping.
#[derive(Debug, Clone, PartialEq)]
pub struct Adam {
    lr: f32,
    beta1: f32,
    beta2: f32,
    eps: f32,
    max_grad_norm: f32,
    m: Vec<f32>,
    v: Vec<f32>,
    t: i32,
}

impl Adam {
    /// Adam for `n` parameters with learning rate `lr`, betas (0.9, 0.999), eps 1e-8, and the
    /// gradient clipped to global norm `max_grad_norm`.
    #[must_use]
    pub fn new(n: usize, lr: f32, max_grad_norm: f32) -> Self {
        Self {
            lr,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            max_grad_norm,
            m: vec![0.0; n],
            v: vec![0.0; n],
            t: 0,
        }
    }

    /// One update; returns the gradient's global norm before clipping.
    ///
    /// # Errors
    /// [`DemoError::Internal`] on a size mismatch or a non-finite gradient.
    pub fn step(&mut self, params: &mut [f32], grads: &[f32]) -> DemoResult<f32> {
        if params.len() != self.m.len() || grads.len() != self.m.len() {
            return Err(DemoError::Internal("optimizer size mismatch".into()));
        }
        let norm = grads.iter().map(|g| g * g).sum::<f32>().sqrt();
        if !norm.is_finite() {
            return Err(DemoError::Internal("non-finite gradient".into()));
        }
        let clip = if norm > self.max_grad_norm {
            self.max_grad_norm / norm
        } else {
            1.0
        };
        self.t += 1;
        let c1 = 1.0 - self.beta1.powi(self.t);
        let c2 = 1.0 - self.beta2.powi(self.t);
        for (((p, g), m), v) in params
            .iter_mut()
            .zip(grads)
            .zip(&mut self.m)
            .zip(&mut self.v)
        {
            let g = g * clip;
            *m = self.beta1 * *m + (1.0 - self.beta1) * g;
            *v = self.beta2 * *v + (1.0 - self.beta2) * g * g;
            *p -= self.lr * (*m / c1) / ((*v / c2).sqrt() + self.eps);
        }
        Ok(norm)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::demo::env::{Split, TaskConfig, Window};
    use crate::demo::grammar::Context;
    use axpo_core::backend::Cpu;

    /// Rows at a few grammar states of a few questions, with valid targets.
    fn rows(global_size: usize) -> Rows {
        let task = TaskConfig {
            global_size,
            ..TaskConfig::default()
        };
        let mut rows = Rows::default();
        let mut buf = Vec::new();
        let states = [
            (State::ThinkRegion, 27, None),
            (State::Decide, 4, None),
            (State::CallX, 35, None),
            (State::Answer, 18, Some(Window { x: 2, y: 0 })),
            (State::Decide, 15, None),
            (State::ThinkClose, 3, None),
        ];
        for (i, (state, target, observed)) in states.into_iter().enumerate() {
            let q = Question::generate(&task, 1, Split::Train, i as u64);
            let ctx = Context {
                state,
                think_region: (state != State::ThinkRegion).then_some(4),
                call_x: observed.map(|w: Window| w.x),
                call_y: observed.map(|w: Window| w.y),
                observed,
            };
            let obs = observed.map(|w| q.zoom(w));
            features(&q, &ctx, obs.as_ref(), &mut buf);
            rows.features.extend_from_slice(&buf);
            rows.states.push(state);
            rows.targets.push(target);
        }
        rows
    }

    fn policy(global_size: usize, seed: u64) -> Policy {
        let shape = PolicyShape {
            input: feature_width(global_size),
            hidden: 8,
        };
        let mut p = Policy::new(shape, &mut Rng::new(seed, 0));
        // A non-trivial head.
        let mut rng = Rng::new(seed, 1);
        let head = p.shape.head();
        for w in &mut p.params_mut()[head] {
            *w = gaussian(&mut rng) * 0.5;
        }
        p
    }

    #[test]
    fn features_have_the_documented_width() {
        for g in [3, 12, 15, 24] {
            let r = rows(g);
            assert_eq!(r.features.len(), r.len() * feature_width(g));
        }
    }

    #[test]
    fn host_sampling_and_backend_agree_and_the_mask_holds() {
        let r = rows(15);
        let p = policy(15, 3);
        let pass = p.head_pass(&Cpu::new(), &r).unwrap();
        let dists = p.distributions(&r.features, &r.states);
        for (i, d) in dists.iter().enumerate() {
            let k = d.tokens.iter().position(|&t| t == r.targets[i]).unwrap();
            assert!((d.logp[k] - pass.logp[i]).abs() < 1e-4, "row {i}");
            assert!((d.entropy - pass.entropy[i]).abs() < 1e-4, "row {i}");
            let total: f32 = d.logp.iter().map(|l| l.exp()).sum();
            assert!((total - 1.0).abs() < 1e-5);
        }
        // A forced state's only token has log-prob 0 and entropy 0 through the backend.
        assert_eq!(pass.logp[5], 0.0);
        assert_eq!(pass.entropy[5], 0.0);
        // A token the grammar forbids has log-prob far below any real one.
        let mut bad = r.clone();
        bad.targets[0] = 4; // <tool_call> while thinking
        let pass = p.head_pass(&Cpu::new(), &bad).unwrap();
        assert!(pass.logp[0] < -1000.0);
    }

    #[test]
    fn gradients_match_finite_differences() {
        let r = rows(6);
        let mut p = policy(6, 5);
        let backend = Cpu::new();
        // L = sum_i a_i logp_i + b_i H_i.
        let a = [0.7f32, -1.3, 0.4, 1.1, -0.2, 0.5];
        let b = [0.3f32, 0.2, -0.6, 0.1, 0.4, -0.3];
        let loss = |p: &Policy| -> f64 {
            let pass = p.head_pass(&backend, &r).unwrap();
            (0..r.len())
                .map(|i| f64::from(a[i] * pass.logp[i] + b[i] * pass.entropy[i]))
                .sum()
        };
        let pass = p.head_pass(&backend, &r).unwrap();
        let g = p.gradients(&backend, &r, &pass, &a, Some(&b)).unwrap();
        let shape = p.shape();
        let mut rng = Rng::new(11, 0);
        let mut checked = 0;
        let mut picks: Vec<usize> = (0..12).map(|_| rng.below(shape.w1().end)).collect();
        picks.extend(shape.b1().take(4));
        picks.extend((0..12).map(|_| shape.head().start + rng.below(shape.head().len())));
        for i in picks {
            let h = 1e-2f32;
            let orig = p.params()[i];
            p.params_mut()[i] = orig + h;
            let up = loss(&p);
            p.params_mut()[i] = orig - h;
            let down = loss(&p);
            p.params_mut()[i] = orig;
            let fd = (up - down) / (2.0 * f64::from(h));
            let an = f64::from(g[i]);
            assert!(
                (fd - an).abs() <= 2e-3 + 2e-2 * an.abs().max(fd.abs()),
                "param {i}: finite difference {fd}, gradient {an}"
            );
            checked += 1;
        }
        assert_eq!(checked, 28);
        // The mask columns are not parameters: the head's gradient has H + 1 columns per token.
        assert_eq!(g.len(), shape.parameter_count());
    }

    #[test]
    fn adam_descends_and_clips() {
        // Minimise sum (x - 3)^2 from 0.
        let mut x = vec![0.0f32; 4];
        let mut adam = Adam::new(4, 0.1, 1.0);
        let mut first = None;
        for _ in 0..300 {
            let g: Vec<f32> = x.iter().map(|v| 2.0 * (v - 3.0)).collect();
            let n = adam.step(&mut x, &g).unwrap();
            first.get_or_insert(n);
        }
        assert!(x.iter().all(|v| (v - 3.0).abs() < 0.05), "{x:?}");
        assert!((first.unwrap() - 12.0).abs() < 1e-5);
        assert!(adam.step(&mut x, &[f32::NAN; 4]).is_err());
        assert!(adam.step(&mut x, &[0.0; 3]).is_err());
    }
}

//! The online-softmax state behind `token_stats` and `linear_token_stats`, and its math.
//!
//! One pass over a row of logits `z` (in any number of vocabulary chunks) keeps, per row,
//!
//! | slot | name | meaning |
//! |---|---|---|
//! | 0 | `max` | running maximum `m` |
//! | 1 | `sum` | `s = sum_v exp(z_v - m)` |
//! | 2 | `weighted` | `u = sum_v exp(z_v - m) (z_v - m)` |
//! | 3 | `square` | `q = sum_v exp(2 (z_v - m))` |
//! | 4 | `target` | the target's logit `z_y` |
//!
//! When the maximum moves from `m` to `m'` the sums are rescaled: `s' = a s`,
//! `u' = a (u + (m - m') s)`, `q' = a^2 q` with `a = exp(m - m')`. At the end
//! `lse = m + ln s`, `log p_y = z_y - lse`, entropy `H = ln s - u / s`, `sum p^2 = q / s^2`.
//! Every backend stores this state as [`STATE_WIDTH`] f32 values per row, in this slot order,
//! initialised by [`StatsState::INIT`]; the initial maximum is the lowest finite f32 so that no
//! infinity enters the arithmetic. Logits of `-inf` (a grammar mask) are allowed and contribute
//! nothing; a chunk whose logits are all `-inf` leaves the state unchanged. A row must keep at
//! least one finite logit: for an all-`-inf` row there is no distribution, and its statistics
//! are unspecified (the reference backend reports [`crate::Error::NonFinite`], as it does when
//! finite logits span more than the f32 range and `log p` does not fit f32). A masked target
//! (`z_y = -inf`) in a row with finite logits is valid: its `log p` is `-inf`, the other
//! statistics are finite.
//!
//! The backward of the per-token statistics with respect to the logits, for upstream gradients
//! `g_logp` and `g_entropy`, is
//! `d z_v = g_logp (1[v = y] - p_v) - g_entropy p_v (ln p_v + H)`.

use num_traits::Float;

/// Number of f32 values per row of the online-softmax state.
pub const STATE_WIDTH: usize = 5;

/// One row's online-softmax state (see the module docs for the meaning of each field).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StatsState<F> {
    /// Running maximum.
    pub max: F,
    /// Sum of `exp(z - max)`.
    pub sum: F,
    /// Sum of `exp(z - max) (z - max)`.
    pub weighted: F,
    /// Sum of `exp(2 (z - max))`.
    pub square: F,
    /// The target's logit.
    pub target: F,
}

impl StatsState<f32> {
    /// The initial state, as stored by every backend.
    pub const INIT: Self = Self {
        max: f32::MIN,
        sum: 0.0,
        weighted: 0.0,
        square: 0.0,
        target: 0.0,
    };

    /// The state as its [`STATE_WIDTH`] stored values.
    #[must_use]
    pub fn to_array(self) -> [f32; STATE_WIDTH] {
        [self.max, self.sum, self.weighted, self.square, self.target]
    }

    /// The state from its stored values.
    #[must_use]
    pub fn from_array(a: [f32; STATE_WIDTH]) -> Self {
        Self {
            max: a[0],
            sum: a[1],
            weighted: a[2],
            square: a[3],
            target: a[4],
        }
    }
}

impl<F: Float> StatsState<F> {
    /// Merges the statistics of one chunk (already reduced relative to its own maximum) into
    /// this state.
    pub fn merge(&mut self, chunk: &Self) {
        if chunk.sum <= F::zero() {
            return;
        }
        if self.sum <= F::zero() {
            let target = self.target;
            *self = *chunk;
            self.target = target;
            return;
        }
        let new_max = self.max.max(chunk.max);
        let rescale = |st: &Self| -> (F, F, F) {
            let d = st.max - new_max;
            let a = d.exp();
            (
                a * st.sum,
                a * (st.weighted + d * st.sum),
                a * a * st.square,
            )
        };
        let (s1, u1, q1) = rescale(self);
        let (s2, u2, q2) = rescale(chunk);
        self.max = new_max;
        self.sum = s1 + s2;
        self.weighted = u1 + u2;
        self.square = q1 + q2;
    }

    /// Reduces one chunk of logits to a state relative to the chunk's own maximum.
    /// `target` is the target's index within the chunk, if the chunk holds it.
    #[must_use]
    pub fn from_chunk(logits: impl Iterator<Item = F> + Clone, target: Option<usize>) -> Self {
        let mut max = F::neg_infinity();
        let mut target_logit = F::zero();
        for (i, z) in logits.clone().enumerate() {
            if z > max {
                max = z;
            }
            if Some(i) == target {
                target_logit = z;
            }
        }
        let mut st = Self {
            max,
            sum: F::zero(),
            weighted: F::zero(),
            square: F::zero(),
            target: target_logit,
        };
        if max == F::neg_infinity() {
            return st;
        }
        for z in logits {
            let d = z - max;
            let e = d.exp();
            if e > F::zero() {
                st.sum = st.sum + e;
                st.weighted = st.weighted + e * d;
                st.square = st.square + e * e;
            }
        }
        st
    }

    /// Final per-token statistics from a complete state.
    #[must_use]
    pub fn finish(&self) -> FinishedStats<F> {
        let ln_s = self.sum.ln();
        let lse = self.max + ln_s;
        FinishedStats {
            logp: self.target - lse,
            entropy: (ln_s - self.weighted / self.sum).max(F::zero()),
            sum_p2: self.square / (self.sum * self.sum),
            lse,
        }
    }
}

/// The four per-token outputs of `token_stats`, for one row.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FinishedStats<F> {
    /// Log-probability of the target.
    pub logp: F,
    /// Entropy of the row's distribution (nats).
    pub entropy: F,
    /// Sum of squared probabilities (collision probability).
    pub sum_p2: F,
    /// Log-sum-exp of the logits, kept for the backward pass.
    pub lse: F,
}

/// Gradient with respect to one logit: `g_logp (1[v = y] - p) - g_entropy p (ln p + H)`.
#[must_use]
#[inline]
pub fn logit_grad<F: Float>(
    z: F,
    is_target: bool,
    lse: F,
    entropy: F,
    g_logp: F,
    g_entropy: F,
) -> F {
    let lnp = z - lse;
    let p = lnp.exp();
    if p <= F::zero() {
        return if is_target { g_logp } else { F::zero() };
    }
    let onehot = if is_target { F::one() } else { F::zero() };
    g_logp * (onehot - p) - g_entropy * p * (lnp + entropy)
}

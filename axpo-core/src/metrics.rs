//! Evaluation metrics: the unbiased Pass@k estimator (spec section 10).

use crate::error::{Error, Result};

/// Largest `min(c, k)` for which [`pass_at_k`] multiplies term by term (about 50 ms).
pub const PASS_AT_K_MAX_TERMS: usize = 1 << 24;

/// Unbiased Pass@k from `n` samples of which `c` are correct: `1 - C(n - c, k) / C(n, k)`.
/// The ratio is a product of `min(c, k)` factors in `[0, 1]`, computed term by term (stable, no
/// factorials): `prod_{i = n - c + 1}^{n} (1 - k / i)` when `c <= k`, otherwise
/// `prod_{i = 0}^{k - 1} (n - c - i) / (n - i)`.
///
/// # Errors
/// [`Error::InvalidConfig`] if `k == 0`, `k > n`, `c > n`, or `min(c, k)` exceeds
/// [`PASS_AT_K_MAX_TERMS`].
pub fn pass_at_k(n: usize, c: usize, k: usize) -> Result<f64> {
    if k == 0 || k > n {
        return Err(Error::InvalidConfig {
            field: "pass@k k",
            reason: "must satisfy 1 <= k <= n",
        });
    }
    if c > n {
        return Err(Error::InvalidConfig {
            field: "pass@k c",
            reason: "correct count exceeds the sample count",
        });
    }
    if n - c < k {
        return Ok(1.0);
    }
    if c.min(k) > PASS_AT_K_MAX_TERMS {
        return Err(Error::InvalidConfig {
            field: "pass@k counts",
            reason: "min(c, k) is too large for the exact estimator",
        });
    }
    let mut miss = 1.0f64;
    if c <= k {
        for i in (n - c + 1)..=n {
            miss *= 1.0 - k as f64 / i as f64;
        }
    } else {
        for i in 0..k {
            miss *= (n - c - i) as f64 / (n - i) as f64;
        }
    }
    Ok(1.0 - miss)
}

/// Mean Pass@k over questions, each given as `(n, c)`.
///
/// # Errors
/// As [`pass_at_k`]; [`Error::EmptyBatch`] for no questions.
pub fn mean_pass_at_k(questions: &[(usize, usize)], k: usize) -> Result<f64> {
    if questions.is_empty() {
        return Err(Error::EmptyBatch);
    }
    let mut s = 0.0;
    for &(n, c) in questions {
        s += pass_at_k(n, c, k)?;
    }
    Ok(s / questions.len() as f64)
}

//! The harness: the one list of checks, the [`Mismatch`] a failing check returns, the
//! comparison against the oracle, and the runner the generated `#[test]`s call.

use core::fmt;

use axpo_core::Error;
use axpo_core::backend::{Backend, DType, HostData, Op};
use half::{bf16, f16};

use crate::tolerance::Tol;

/// Why a check failed: the case (sizes, dtype, layout...) and what differed.
#[derive(Debug, Clone, PartialEq)]
pub struct Mismatch {
    /// The case being checked, e.g. `"m=17 n=33 k=65 a=AsStored b=Transposed"`.
    pub case: String,
    /// What went wrong.
    pub detail: String,
}

impl fmt::Display for Mismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{}] {}", self.case, self.detail)
    }
}

impl From<Error> for Mismatch {
    fn from(e: Error) -> Self {
        Self {
            case: String::from("?"),
            detail: format!("the backend returned an error: {e}"),
        }
    }
}

/// What every check returns.
pub type CheckResult = Result<(), Mismatch>;

/// Attaches a case description to a backend error.
pub trait Context<T> {
    /// `Err(e)` becomes a [`Mismatch`] naming `case`.
    ///
    /// # Errors
    /// The mismatch.
    fn case(self, case: &str) -> Result<T, Mismatch>;
}

impl<T> Context<T> for Result<T, Error> {
    fn case(self, case: &str) -> Result<T, Mismatch> {
        self.map_err(|e| Mismatch {
            case: case.to_owned(),
            detail: format!("the backend returned an error: {e}"),
        })
    }
}

/// A failed check.
///
/// # Errors
/// Always.
pub fn fail<T>(case: &str, detail: impl Into<String>) -> Result<T, Mismatch> {
    Err(Mismatch {
        case: case.to_owned(),
        detail: detail.into(),
    })
}

/// Compares `got` (the backend) with `want` (the oracle) element by element.
#[derive(Debug, Clone, Copy)]
pub struct Compare<'a> {
    case: &'a str,
    what: &'a str,
    tol: Tol,
    terms: usize,
    slack: f64,
    scale: Option<&'a [f64]>,
    slack_each: Option<&'a [f64]>,
}

impl<'a> Compare<'a> {
    /// A comparison of output `what` in `case`, exact until a tolerance is given.
    #[must_use]
    pub fn new(case: &'a str, what: &'a str) -> Self {
        Self {
            case,
            what,
            tol: Tol::EXACT,
            terms: 0,
            slack: 0.0,
            scale: None,
            slack_each: None,
        }
    }

    /// The tolerance (from [`crate::tolerance::tol`]).
    #[must_use]
    pub fn tol(mut self, tol: Tol) -> Self {
        self.tol = tol;
        self
    }

    /// The reduction length charged by `per_term`.
    #[must_use]
    pub fn terms(mut self, terms: usize) -> Self {
        self.terms = terms;
        self
    }

    /// An extra absolute allowance.
    #[must_use]
    pub fn slack(mut self, slack: f64) -> Self {
        self.slack = slack;
        self
    }

    /// Per-element scales (default `|want|`).
    #[must_use]
    pub fn scale(mut self, scale: &'a [f64]) -> Self {
        self.scale = Some(scale);
        self
    }

    /// Per-element extra absolute allowances (added to the scalar slack).
    #[must_use]
    pub fn slack_each(mut self, slack: &'a [f64]) -> Self {
        self.slack_each = Some(slack);
        self
    }

    fn allowed(&self, i: usize, want: f64) -> f64 {
        let scale = self.scale.map_or(want.abs(), |s| s[i]);
        self.tol.allowed(scale, self.terms) + self.slack + self.slack_each.map_or(0.0, |s| s[i])
    }

    /// Runs the comparison.
    ///
    /// # Errors
    /// A [`Mismatch`] naming the worst element if any is outside its allowance, or if the
    /// lengths differ.
    pub fn run(&self, got: &[f32], want: &[f64]) -> CheckResult {
        if got.len() != want.len() {
            return fail(
                self.case,
                format!(
                    "{}: length {} but the oracle has {}",
                    self.what,
                    got.len(),
                    want.len()
                ),
            );
        }
        let mut worst: Option<(usize, f64, f64)> = None;
        for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
            let g = f64::from(g);
            let ok = if w.is_infinite() || w.is_nan() {
                g == w || (w.is_nan() && g.is_nan())
            } else {
                (g - w).abs() <= self.allowed(i, w)
            };
            if !ok {
                let excess = if g.is_finite() {
                    (g - w).abs() / self.allowed(i, w).max(f64::MIN_POSITIVE)
                } else {
                    f64::INFINITY
                };
                if worst.is_none_or(|(_, e, _)| excess > e) {
                    worst = Some((i, excess, g));
                }
            }
        }
        match worst {
            None => Ok(()),
            Some((i, excess, g)) => {
                let bad = got
                    .iter()
                    .zip(want)
                    .filter(|(g, w)| f64::from(**g) != **w)
                    .count();
                fail(
                    self.case,
                    format!(
                        "{}[{i}]: got {g:e}, oracle {:e} (diff {:e}, allowed {:e}, {excess:.1}x; \
                         {bad} of {} elements differ at all)",
                        self.what,
                        want[i],
                        (g - want[i]).abs(),
                        self.allowed(i, want[i]),
                        got.len()
                    ),
                )
            }
        }
    }
}

/// Checks that `result` is an error (and not a panic, which fails the test anyway).
///
/// # Errors
/// A [`Mismatch`] if the op succeeded or failed with an error `accept` rejects.
pub fn expect_err<T>(
    case: &str,
    result: Result<T, Error>,
    accept: impl Fn(&Error) -> bool,
) -> CheckResult {
    match result {
        Ok(_) => fail(case, "bad input was accepted: expected an error"),
        Err(e) if accept(&e) => Ok(()),
        Err(e) => fail(case, format!("bad input returned the wrong error: {e}")),
    }
}

/// Whether an error is a shape or length error.
#[must_use]
pub fn is_shape(e: &Error) -> bool {
    matches!(
        e,
        Error::Shape { .. } | Error::LengthMismatch { .. } | Error::InvalidConfig { .. }
    )
}

/// Whether an error is an out-of-range target or row index.
#[must_use]
pub fn is_out_of_range(e: &Error) -> bool {
    matches!(e, Error::TargetOutOfRange { .. })
}

/// Whether an error is an unsupported element type.
#[must_use]
pub fn is_dtype(e: &Error) -> bool {
    matches!(e, Error::UnsupportedDType { .. })
}

/// Uploads `values` rounded to `dtype` (a float type) and returns the buffer with the exact
/// values it holds, widened to f64.
///
/// # Errors
/// A [`Mismatch`] if the upload fails or `dtype` is not a float type.
pub fn upload_as<B: Backend>(
    b: &B,
    dtype: DType,
    values: &[f32],
    case: &str,
) -> Result<(B::Buffer, Vec<f64>), Mismatch> {
    match dtype {
        DType::F32 => Ok((
            b.upload(HostData::F32(values)).case(case)?,
            values.iter().map(|&v| f64::from(v)).collect(),
        )),
        DType::Bf16 => {
            let h: Vec<bf16> = values.iter().map(|&v| bf16::from_f32(v)).collect();
            Ok((
                b.upload(HostData::Bf16(&h)).case(case)?,
                h.iter().map(|v| f64::from(v.to_f32())).collect(),
            ))
        }
        DType::F16 => {
            let h: Vec<f16> = values.iter().map(|&v| f16::from_f32(v)).collect();
            Ok((
                b.upload(HostData::F16(&h)).case(case)?,
                h.iter().map(|v| f64::from(v.to_f32())).collect(),
            ))
        }
        other => fail(case, format!("upload_as: {other:?} is not a float type")),
    }
}

/// The float element types every float input is checked with.
pub const FLOAT_DTYPES: [DType; 3] = [DType::F32, DType::Bf16, DType::F16];

/// One entry of the list of checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CheckInfo {
    /// The op family (a module of [`crate::checks`], named like the backend's op family).
    pub family: &'static str,
    /// The check's name (its function, and the generated test's name).
    pub name: &'static str,
    /// The ops it exercises.
    pub ops: &'static [Op],
}

/// The op family an op belongs to (the trait it is declared in), for the coverage test.
#[must_use]
pub fn family_of(op: Op) -> &'static str {
    match op {
        Op::Upload | Op::CopyRows => "buffer",
        Op::Matmul => "matmul",
        Op::AddAssign
        | Op::Mul
        | Op::AddBias
        | Op::Activation
        | Op::Swiglu
        | Op::BiasActivation => "elementwise",
        Op::RmsNorm | Op::LayerNorm => "norm",
        Op::Rotary | Op::RmsNormRotary => "rotary",
        Op::MaskedSoftmax | Op::Attention => "attention",
        Op::GatherRows | Op::ScatterRows => "embedding",
        Op::TokenStats
        | Op::LinearTokenStats
        | Op::TokenStatsBackward
        | Op::LinearTokenStatsBackward => "logprob",
        Op::LinearObjective => "objective",
        _ => "unknown",
    }
}

/// The list of checks: `family::check [Op, ...];` — the single source both the test generator
/// ([`crate::conformance_suite!`]) and [`CHECKS`] (the coverage test) expand from.
#[doc(hidden)]
#[macro_export]
macro_rules! __for_each_check {
    ($callback:ident ! $args:tt) => {
        $crate::$callback! { $args
            buffer::upload_roundtrip [Upload];
            buffer::upload_half_types [Upload];
            buffer::download_rejects_wrong_dtype [Upload];
            buffer::copy_rows_strided [CopyRows];
            buffer::copy_rows_to_half [CopyRows];
            buffer::copy_rows_rejects_bad_input [CopyRows];
            matmul::matmul_layouts [Matmul];
            matmul::matmul_strided_epilogue [Matmul];
            matmul::matmul_half_inputs [Matmul];
            matmul::matmul_empty_dims [Matmul];
            matmul::matmul_rejects_bad_shapes [Matmul];
            elementwise::add_assign [AddAssign];
            elementwise::mul [Mul];
            elementwise::add_bias [AddBias];
            elementwise::activation [Activation];
            elementwise::swiglu [Swiglu];
            elementwise::bias_activation [BiasActivation];
            elementwise::elementwise_rejects_bad_lengths [AddAssign, Mul, AddBias, Swiglu, BiasActivation];
            norm::rms_norm [RmsNorm];
            norm::layer_norm [LayerNorm];
            norm::norm_rejects_bad_widths [RmsNorm, LayerNorm];
            rotary::rotary [Rotary];
            rotary::rms_norm_rotary [RmsNormRotary];
            rotary::rotary_rejects_bad_tables [Rotary, RmsNormRotary];
            attention::masked_softmax [MaskedSoftmax];
            attention::attention [Attention];
            attention::attention_rejects_bad_shapes [Attention, MaskedSoftmax];
            embedding::gather_rows [GatherRows];
            embedding::scatter_rows [ScatterRows];
            embedding::embedding_rejects_out_of_range [GatherRows, ScatterRows];
            logprob::token_stats [TokenStats];
            logprob::stats_fold_chunks [TokenStats];
            logprob::linear_token_stats [LinearTokenStats];
            logprob::token_stats_backward [TokenStatsBackward];
            logprob::stats_backward_chunk [TokenStatsBackward];
            logprob::linear_token_stats_backward [LinearTokenStatsBackward];
            logprob::logprob_rejects_bad_input [TokenStats, LinearTokenStats, TokenStatsBackward, LinearTokenStatsBackward];
            objective::linear_objective [LinearObjective];
            objective::objective_rejects_bad_input [LinearObjective];
        }
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __check_table {
    (() $($family:ident :: $check:ident [$($op:ident),+];)*) => {
        /// Every check of the suite, with the ops it exercises.
        pub const CHECKS: &[CheckInfo] = &[$(
            CheckInfo {
                family: stringify!($family),
                name: stringify!($check),
                ops: &[$(Op::$op),+],
            }
        ),*];
    };
}

crate::__for_each_check!(__check_table!());

/// Runs one check on a backend and turns a [`Mismatch`] into a test failure.
///
/// # Panics
/// When the check fails: this is how the generated `#[test]` reports it.
#[allow(clippy::panic)]
pub fn run<B: Backend>(family: &str, name: &str, backend: &B, check: fn(&B) -> CheckResult) {
    if let Err(m) = check(backend) {
        panic!(
            "conformance check {family}::{name} failed on the {} backend: {m}",
            backend.name()
        );
    }
}

/// Unwraps the result of a backend constructor for the generated tests.
///
/// # Panics
/// When `backend` is an error: a backend that cannot be created fails every check (a missing
/// device is a failure, never a skip).
#[allow(clippy::panic)]
pub fn require<B, E: fmt::Display>(backend: Result<B, E>, what: &str) -> B {
    match backend {
        Ok(b) => b,
        Err(e) => panic!("cannot create the {what} backend for the conformance suite: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compare_accepts_within_and_rejects_outside_the_allowance() {
        let tol = Tol {
            abs: 0.0,
            rel: 1e-3,
            per_term: 0.0,
        };
        let c = Compare::new("case", "x").tol(tol);
        assert!(c.run(&[1.0005], &[1.0]).is_ok());
        let m = c.run(&[1.0, 1.01], &[1.0, 1.0]).unwrap_err();
        assert!(m.detail.contains("x[1]"), "{m}");
        assert!(c.run(&[1.0], &[1.0, 2.0]).is_err(), "length mismatch");
    }

    #[test]
    fn compare_needs_infinities_to_match_exactly_and_never_accepts_nan() {
        let c = Compare::new("case", "logp").tol(Tol {
            abs: 1.0,
            rel: 1.0,
            per_term: 0.0,
        });
        assert!(c.run(&[f32::NEG_INFINITY], &[f64::NEG_INFINITY]).is_ok());
        assert!(c.run(&[-1e30], &[f64::NEG_INFINITY]).is_err());
        assert!(c.run(&[f32::NAN], &[0.0]).is_err());
    }

    #[test]
    fn per_element_scale_terms_and_slack_add_up() {
        let tol = Tol {
            abs: 0.0,
            rel: 0.0,
            per_term: 0.5,
        };
        let scale = [1.0];
        let slack = [0.25];
        let c = Compare::new("case", "x")
            .tol(tol)
            .terms(2)
            .scale(&scale)
            .slack_each(&slack);
        assert!(c.run(&[2.2], &[1.0]).is_ok(), "1.2 <= 0.5 * 2 * 1 + 0.25");
        assert!(c.run(&[2.3], &[1.0]).is_err(), "1.3 > 1.25");
    }

    #[test]
    fn every_check_is_listed_once_with_at_least_one_op() {
        assert!(CHECKS.iter().all(|c| !c.ops.is_empty()));
        let mut names: Vec<&str> = CHECKS.iter().map(|c| c.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), CHECKS.len());
    }
}

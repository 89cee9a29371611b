//! The backend conformance suite: one list of checks, run against every backend.
//!
//! Each check (in [`checks`], one module per op family, named like the `Backend` trait's op
//! families and like the kernel files of the GPU backends) is a generic function
//! `fn check<B: Backend>(b: &B) -> CheckResult` that draws seeded random inputs (module `gen`),
//! runs an op on `B`, and compares the result with a naive f64 [`oracle`] within the allowance
//! of the single [`tolerance`] table. Sizes sweep 0, 1, odd and large (vocabularies above 4096,
//! row counts that are not multiples of any workgroup size), strided views, both layouts,
//! accumulation, every mask, every activation, f32 and bf16/f16 inputs; backward checks compare
//! with the analytic oracle and with finite differences of the forward oracle; bad input must
//! come back as an `Err`, never a panic.
//!
//! # Running it on a backend
//!
//! A test target of this crate invokes [`conformance_suite!`] once, with an expression that
//! makes the backend; the macro expands to one `#[test]` per check (named after the check):
//!
//! ```ignore
//! // tests/conformance_cpu.rs
//! axpo_tests::conformance_suite!(axpo_core::backend::Cpu::new());
//!
//! // tests/conformance_cuda.rs (a missing device must fail, not skip)
//! axpo_tests::conformance_suite!(axpo_tests::suite::require(
//!     axpo_backend_cuda::Cuda::new(0),
//!     "cuda",
//! ));
//! ```
//!
//! The expression is evaluated once per test; make it cheap (a shared handle cloned from a
//! `OnceLock` works well for GPU backends). [`suite::CHECKS`] lists every check with the ops it
//! exercises; `tests/coverage.rs` fails when an op of `Op::ALL` has no check.

pub mod checks;
pub mod r#gen;
pub mod oracle;
pub mod suite;
pub mod tolerance;

/// Expands to one `#[test]` per conformance check, each running the check on the backend that
/// `$make` evaluates to (any type implementing `axpo_core::backend::Backend`). See the crate
/// docs for examples.
#[macro_export]
macro_rules! conformance_suite {
    ($make:expr $(,)?) => {
        $crate::__for_each_check!(__conformance_tests!(($make)));
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __conformance_tests {
    (($make:expr) $($family:ident :: $check:ident [$($op:ident),+];)*) => {
        $(
            #[test]
            fn $check() {
                let backend = $make;
                $crate::suite::run(
                    stringify!($family),
                    stringify!($check),
                    &backend,
                    $crate::checks::$family::$check,
                );
            }
        )*
    };
}

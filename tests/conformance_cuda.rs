//! The conformance suite on the CUDA backend (`--features cuda`, on a GPU machine): every op
//! against the naive f64 oracle. A missing device fails every test; it never skips.

use std::sync::OnceLock;

use axpo_backend_cuda::Cuda;

/// One device shared by every test of this binary (the handle is a cheap clone).
fn backend() -> Cuda {
    static BACKEND: OnceLock<Result<Cuda, String>> = OnceLock::new();
    let made = BACKEND.get_or_init(|| Cuda::new(0).map_err(|e| e.to_string()));
    axpo_tests::suite::require(made.clone(), "cuda")
}

axpo_tests::conformance_suite!(backend());

/// The same checks with a 1 MiB workspace for the fused output head, so that
/// `linear_token_stats` and its backward run in row and vocabulary chunks.
mod small_head_workspace {
    use super::*;

    fn backend() -> Cuda {
        super::backend().with_head_workspace(1 << 20)
    }

    axpo_tests::conformance_suite!(backend());
}

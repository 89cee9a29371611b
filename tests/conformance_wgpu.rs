//! The conformance suite on the wgpu backend (Mesa lavapipe in CI: run with
//! `WGPU_BACKEND=vulkan`). A missing adapter fails every test; it never skips.

use std::sync::OnceLock;

use axpo_backend_wgpu::Wgpu;

/// One device shared by every test of this binary (the handle is a cheap clone).
fn backend() -> Wgpu {
    static BACKEND: OnceLock<Result<Wgpu, String>> = OnceLock::new();
    let made = BACKEND.get_or_init(|| Wgpu::new().map_err(|e| e.to_string()));
    axpo_tests::suite::require(made.clone(), "wgpu")
}

axpo_tests::conformance_suite!(backend());

/// The same checks with a 64 KiB storage-binding limit (rows of up to 16 K f32 still fit):
/// every op whose operands exceed it must split its work into windows, never read or write
/// past a binding.
mod small_bindings {
    use super::*;

    fn backend() -> Wgpu {
        static BACKEND: OnceLock<Result<Wgpu, String>> = OnceLock::new();
        let made = BACKEND.get_or_init(|| {
            Wgpu::with_options(
                axpo_backend_wgpu::WgpuOptions::default().max_binding_bytes(64 << 10),
            )
            .map_err(|e| e.to_string())
        });
        axpo_tests::suite::require(made.clone(), "wgpu (64 KiB bindings)")
    }

    axpo_tests::conformance_suite!(backend());
}

//! Adapter selection and device limits: a missing adapter is an error (never a panic), and
//! operands larger than a storage binding are split into windows or refused with
//! `LimitExceeded`, never read or written out of bounds. Run with `WGPU_BACKEND=vulkan`.

use axpo_backend_wgpu::{Wgpu, WgpuOptions};
use axpo_core::backend::{
    BufferOps, Cpu, DType, Epilogue, Layout, LogprobOps, MatMut, MatRef, MatmulOps, NormOps,
};
use axpo_core::{BackendErrorKind, Error};

fn kind(e: &Error) -> Option<BackendErrorKind> {
    match e {
        Error::Backend(b) => Some(b.kind),
        _ => None,
    }
}

fn values(n: usize, seed: u32) -> Vec<f32> {
    (0..n)
        .map(|i| {
            ((i as u32).wrapping_mul(2_654_435_761).wrapping_add(seed) >> 8) as f32 / 16_777_216.0
                - 0.5
        })
        .collect()
}

#[test]
fn an_adapter_that_does_not_exist_is_device_unavailable() {
    let err = Wgpu::with_options(WgpuOptions::default().adapter_name("no-such-adapter-0xdead"))
        .expect_err("a made-up adapter name must not open a device");
    assert_eq!(
        kind(&err),
        Some(BackendErrorKind::DeviceUnavailable),
        "{err}"
    );
    assert!(err.to_string().contains("no-such-adapter"), "{err}");
}

#[test]
fn a_buffer_above_max_buffer_size_is_limit_exceeded() {
    let gpu = Wgpu::new().unwrap();
    let err = gpu.zeros(DType::F32, 1 << 40).expect_err("a 4 TiB buffer");
    assert_eq!(kind(&err), Some(BackendErrorKind::LimitExceeded), "{err}");
}

#[test]
fn a_row_wider_than_a_binding_is_limit_exceeded() {
    let gpu = Wgpu::with_options(WgpuOptions::default().max_binding_bytes(1024)).unwrap();
    assert!(gpu.max_binding_bytes() <= 1024);
    let x = gpu.upload_f32(&values(2 * 1000, 1)).unwrap();
    let w = gpu.upload_f32(&values(1000, 2)).unwrap();
    let err = gpu.rms_norm(&x, &w, 1e-6).expect_err("a 4000-byte row");
    assert_eq!(kind(&err), Some(BackendErrorKind::LimitExceeded), "{err}");
    let err = gpu
        .token_stats(MatRef::new(&x, 2, 1000).unwrap(), &[1, 2])
        .expect_err("a 4000-byte row of logits");
    assert_eq!(kind(&err), Some(BackendErrorKind::LimitExceeded), "{err}");
}

#[test]
fn a_matmul_larger_than_a_binding_is_split_in_m_n_and_k() {
    let gpu = Wgpu::with_options(WgpuOptions::default().max_binding_bytes(1024)).unwrap();
    let cpu = Cpu::new();
    let (m, n, k) = (40, 50, 70);
    let a = values(m * k, 3);
    let b = values(k * n, 4);
    for (al, bl) in [
        (Layout::AsStored, Layout::AsStored),
        (Layout::Transposed, Layout::Transposed),
    ] {
        let (ar, ac) = if al == Layout::AsStored {
            (m, k)
        } else {
            (k, m)
        };
        let (br, bc) = if bl == Layout::AsStored {
            (k, n)
        } else {
            (n, k)
        };
        let mut got = Vec::new();
        let mut want = Vec::new();
        {
            let ab = gpu.upload_f32(&a).unwrap();
            let bb = gpu.upload_f32(&b).unwrap();
            let mut out = gpu.upload_f32(&values(m * n, 5)).unwrap();
            gpu.matmul(
                MatRef::new(&ab, ar, ac).unwrap(),
                al,
                MatRef::new(&bb, br, bc).unwrap(),
                bl,
                MatMut::new(&mut out, m, n).unwrap(),
                Epilogue::ADD,
            )
            .unwrap();
            got.extend(gpu.download_f32(&out).unwrap());
        }
        {
            let ab = cpu.upload_f32(&a).unwrap();
            let bb = cpu.upload_f32(&b).unwrap();
            let mut out = cpu.upload_f32(&values(m * n, 5)).unwrap();
            cpu.matmul(
                MatRef::new(&ab, ar, ac).unwrap(),
                al,
                MatRef::new(&bb, br, bc).unwrap(),
                bl,
                MatMut::new(&mut out, m, n).unwrap(),
                Epilogue::ADD,
            )
            .unwrap();
            want.extend(cpu.download_f32(&out).unwrap());
        }
        // k = 70 terms of |a b| <= 0.25: f32 error well below 1e-4.
        let worst = got
            .iter()
            .zip(&want)
            .map(|(g, w)| (g - w).abs())
            .fold(0.0f32, f32::max);
        assert!(worst < 1e-4, "{al:?}/{bl:?}: worst difference {worst}");
    }
}

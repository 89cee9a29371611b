//! Without a usable CUDA device, opening the backend is an error of kind `DeviceUnavailable`
//! (or another backend error), never a panic. On a machine with a GPU this checks instead that
//! a device that does not exist is refused.

use axpo_backend_cuda::{Cuda, libraries_present};
use axpo_core::{BackendErrorKind, Error};

#[test]
fn opening_without_a_driver_is_a_typed_error() {
    let libs = libraries_present();
    let result = std::panic::catch_unwind(|| Cuda::new(0).map(|_| ()));
    let Ok(result) = result else {
        unreachable!("Cuda::new panicked");
    };
    if !libs.driver {
        match result {
            Err(Error::Backend(e)) => {
                assert_eq!(e.kind, BackendErrorKind::DeviceUnavailable, "{e}");
                assert_eq!(e.backend, "cuda");
                assert!(e.message.contains("libcuda"), "{}", e.message);
            }
            other => unreachable!("expected DeviceUnavailable, got {other:?}"),
        }
    } else {
        eprintln!("a CUDA driver is present: checking an out-of-range ordinal instead");
    }
}

#[test]
fn a_missing_ordinal_is_an_error_not_a_panic() {
    let result = std::panic::catch_unwind(|| Cuda::new(4096).map(|_| ()));
    match result {
        Ok(Err(Error::Backend(e))) => {
            assert_eq!(e.backend, "cuda");
            assert!(
                matches!(
                    e.kind,
                    BackendErrorKind::DeviceUnavailable | BackendErrorKind::Launch
                ),
                "{e}"
            );
        }
        Ok(other) => unreachable!("ordinal 4096 must not open: {other:?}"),
        Err(_) => unreachable!("Cuda::new(4096) panicked"),
    }
}

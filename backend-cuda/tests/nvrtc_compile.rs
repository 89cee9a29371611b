//! Compiles every kernel family through NVRTC for sm_90 (Hopper) and sm_80, and checks that
//! the compile log is clean and that every `extern "C"` kernel is in the CUBIN. Needs only
//! libnvrtc (no driver, no GPU). Skips with a message when libnvrtc cannot be loaded, unless
//! `AXPO_REQUIRE_NVRTC` is set (CI sets it), in which case a missing libnvrtc fails.

use axpo_backend_cuda::kernels::{Family, compile_options};
use axpo_backend_cuda::{libraries_present, nvrtc_compile};

fn nvrtc_or_skip() -> bool {
    if libraries_present().nvrtc {
        return true;
    }
    assert!(
        std::env::var_os("AXPO_REQUIRE_NVRTC").is_none(),
        "AXPO_REQUIRE_NVRTC is set but libnvrtc.so.13 cannot be loaded: install \
         nvidia-cuda-nvrtc==13.0.* and put its nvidia/cu13/lib on LD_LIBRARY_PATH"
    );
    eprintln!(
        "SKIP: libnvrtc (CUDA 13) not found; set LD_LIBRARY_PATH to a CUDA 13 NVRTC \
         (pip install nvidia-cuda-nvrtc==13.0.*) and AXPO_REQUIRE_NVRTC=1 to make this a failure"
    );
    false
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

fn compile_all(arch: u32) {
    let mut failures = Vec::new();
    for &family in Family::ALL {
        match nvrtc_compile(
            family.name(),
            &family.translation_unit(),
            &compile_options(arch),
        ) {
            Ok(c) => {
                println!(
                    "sm_{arch} {}.cu: {} bytes of CUBIN, log: {}",
                    family.name(),
                    c.cubin.len(),
                    if c.log.is_empty() { "clean" } else { &c.log }
                );
                if !c.log.is_empty() {
                    failures.push(format!(
                        "{}.cu compiled with a log:\n{}",
                        family.name(),
                        c.log
                    ));
                }
                assert!(c.cubin.starts_with(b"\x7fELF"), "CUBIN is an ELF image");
                for k in family.declared_kernels() {
                    if !contains(&c.cubin, k.as_bytes()) {
                        failures.push(format!(
                            "{}.cu: kernel {k} missing from the CUBIN",
                            family.name()
                        ));
                    }
                }
            }
            Err(e) => failures.push(format!("{e}")),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn every_family_compiles_cleanly_for_hopper() {
    if nvrtc_or_skip() {
        compile_all(90);
    }
}

#[test]
fn every_family_compiles_cleanly_for_ampere() {
    if nvrtc_or_skip() {
        compile_all(80);
    }
}

#[test]
fn a_broken_kernel_reports_its_log() {
    if !nvrtc_or_skip() {
        return;
    }
    let err = nvrtc_compile(
        "broken",
        "extern \"C\" __global__ void k(float* p) { p[0] = undefined_symbol; }",
        &compile_options(90),
    )
    .expect_err("must not compile");
    let msg = err.to_string();
    assert!(
        msg.contains("undefined_symbol"),
        "log names the error: {msg}"
    );
}

//! The Qwen3-VL forward pass end to end on the wgpu backend, against the model crate's Hugging
//! Face fixtures (logits, next-token log-probs through `linear_token_stats`, KV-cache decode
//! steps and every named intermediate), within the model crate's own tolerance
//! (`parity::TOLERANCE`). Needs an adapter (lavapipe in CI: `WGPU_BACKEND=vulkan`); a missing
//! adapter fails the test.

use axpo_backend_wgpu::Wgpu;
use axpo_model_qwen3vl::parity::{TOLERANCE, check_case, fixtures_dir};

fn check(model: &str, case: &str, must_have: &[&str]) -> Result<(), Box<dyn std::error::Error>> {
    let backend = Wgpu::new()?;
    let dir = fixtures_dir().join(model);
    let report = check_case(backend, &dir, case)?;
    for (name, d) in &report.diffs {
        eprintln!("{model}/{case} {name}: {d:.3e}");
    }
    report.verdict(&format!("{model}/{case}"), TOLERANCE, must_have)?;
    Ok(())
}

const NAMES: &[&str] = &[
    "logits",
    "next_token_logprobs",
    "decode.logits",
    "vision.blocks.0.out",
    "vision.merger.out",
    "vision.deepstack.0.out",
    "text.layers.0.out",
    "text.norm.out",
];

#[test]
fn variant_a_one_image() {
    check("qwen3vl-tiny-a", "image1", NAMES).unwrap();
}

#[test]
fn variant_a_text_only() {
    check(
        "qwen3vl-tiny-a",
        "text_only",
        &["logits", "next_token_logprobs", "decode.logits"],
    )
    .unwrap();
}

#[test]
fn variant_b_two_images() {
    check("qwen3vl-tiny-b", "image2", NAMES).unwrap();
}

/// bf16 weights kept as stored and unpacked in the shaders (the GPU configuration), at the same
/// tolerance: the fixtures' weights are bf16 values, so keeping them loses nothing.
#[test]
fn variant_b_bf16_weights_unpacked_in_shaders() {
    use axpo_model_qwen3vl::parity::check_case_with;
    use axpo_model_qwen3vl::weights::{LoadOptions, WeightDType};
    let backend = Wgpu::new().unwrap();
    let options = LoadOptions::default().with_weight_dtype(WeightDType::AsStored);
    let dir = fixtures_dir().join("qwen3vl-tiny-b");
    let report = check_case_with(backend, &dir, "image2", &options).unwrap();
    assert!(
        report.failures(TOLERANCE).is_empty(),
        "over tolerance: {:?}",
        report.failures(TOLERANCE)
    );
    assert!(report.diffs.contains_key("logits"));
}

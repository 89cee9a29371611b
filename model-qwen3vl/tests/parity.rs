//! Logits, log-probs, KV-cache decode steps and every named intermediate against the Hugging Face
//! fixtures (`fixtures/`, made by `scripts/gen_fixtures.py`), on the reference CPU backend and on
//! the fast CPU backend. Tolerance: `parity::TOLERANCE` (5e-5 absolute; derivation in its docs).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use axpo_core::backend::Cpu;
use axpo_model_qwen3vl::parity::{TOLERANCE, check_case, fixtures_dir};
use axpo_model_qwen3vl::{FastCpu, GemmCpu, GemmKernel};

fn check<B: axpo_core::backend::Backend>(backend: B, model: &str, case: &str, must_have: &[&str]) {
    let dir = fixtures_dir().join(model);
    let report = check_case(backend, &dir, case).unwrap();
    for (name, d) in &report.diffs {
        eprintln!("{model}/{case} {name}: {d:.3e}");
    }
    if let Err(e) = report.verdict(&format!("{model}/{case}"), TOLERANCE, must_have) {
        panic!("{e}");
    }
}

const IMAGE_NAMES: &[&str] = &[
    "logits",
    "next_token_logprobs",
    "decode.logits",
    "position_ids",
    "rope_deltas",
    "vision.patch_embed.out",
    "vision.pos_embed.out",
    "vision.pos_embed.weights",
    "vision.rotary.cos",
    "vision.blocks.0.out",
    "vision.blocks.1.out",
    "vision.merger.out",
    "vision.deepstack.0.out",
    "text.inputs_embeds",
    "text.rotary.cos",
    "text.layers.0.out",
    "text.layers.1.in",
    "text.norm.out",
];

#[test]
fn variant_a_one_image_untied_deepstack_0_1() {
    check(FastCpu::new(), "qwen3vl-tiny-a", "image1", IMAGE_NAMES);
}

#[test]
fn variant_a_text_only() {
    check(
        FastCpu::new(),
        "qwen3vl-tiny-a",
        "text_only",
        &[
            "logits",
            "next_token_logprobs",
            "decode.logits",
            "text.layers.1.out",
        ],
    );
}

#[test]
fn variant_b_two_images_tied_deepstack_1() {
    check(FastCpu::new(), "qwen3vl-tiny-b", "image2", IMAGE_NAMES);
}

#[test]
fn reference_cpu_backend_matches_too() {
    check(Cpu::new(), "qwen3vl-tiny-b", "image2", IMAGE_NAMES);
    let gemm: GemmCpu = Cpu::with_gemm(GemmKernel::new(1));
    check(gemm, "qwen3vl-tiny-a", "image1", IMAGE_NAMES);
}

/// The GPU-style load (bf16 weights kept as stored) on the reference backend, every case.
#[test]
fn every_case_with_bf16_weights_as_stored() {
    use axpo_model_qwen3vl::parity::{CASES, check_case_with};
    use axpo_model_qwen3vl::{LoadOptions, WeightDType};
    let opts = LoadOptions::default().with_weight_dtype(WeightDType::AsStored);
    for (model, case) in CASES {
        let report = check_case_with(Cpu::new(), &fixtures_dir().join(model), case, &opts).unwrap();
        assert!(
            report.failures(TOLERANCE).is_empty(),
            "{model}/{case}: {:?}",
            report.failures(TOLERANCE)
        );
        assert!(report.diffs.len() > 5);
    }
}

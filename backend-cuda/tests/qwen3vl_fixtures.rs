//! The Qwen3-VL forward pass end to end on the CUDA backend, against the model crate's Hugging
//! Face fixtures (logits, next-token log-probs through `linear_token_stats`, KV-cache decode
//! steps and every named intermediate), within the model crate's tolerance, with f32 weights and
//! with bf16 weights kept as stored (the GPU configuration; compared at the same tolerance,
//! since the fixtures' weights are bf16 values). Ignored without a GPU; the device run passes
//! `--include-ignored` and sets `AXPO_QWEN3VL_FIXTURES` to the fixtures folder.

use axpo_backend_cuda::Cuda;
use axpo_model_qwen3vl::parity::{TOLERANCE, check_case_with, fixtures_dir};
use axpo_model_qwen3vl::weights::{LoadOptions, WeightDType};

fn check(model: &str, case: &str, dtype: WeightDType) -> Result<(), Box<dyn std::error::Error>> {
    let backend = Cuda::new(0)?;
    let dir = fixtures_dir().join(model);
    let options = LoadOptions::default().with_weight_dtype(dtype);
    let report = check_case_with(backend, &dir, case, &options)?;
    for (name, d) in &report.diffs {
        eprintln!("{model}/{case} {dtype:?} {name}: {d:.3e}");
    }
    report.verdict(&format!("{model}/{case} {dtype:?}"), TOLERANCE, &["logits"])?;
    Ok(())
}

#[test]
#[ignore = "needs a CUDA device (device_run.sh runs it with --include-ignored)"]
fn fixtures_match_with_f32_and_bf16_weights() {
    for dtype in [WeightDType::F32, WeightDType::AsStored] {
        check("qwen3vl-tiny-a", "image1", dtype).unwrap();
        check("qwen3vl-tiny-a", "text_only", dtype).unwrap();
        check("qwen3vl-tiny-b", "image2", dtype).unwrap();
    }
}

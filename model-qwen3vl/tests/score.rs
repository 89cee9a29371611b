//! `axpo score` as a library call: inputs file in, logits and next-token log-probs out.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use axpo_model_qwen3vl::parity::{TOLERANCE, load_case};
use axpo_model_qwen3vl::score::{ScoreOptions, run};
use axpo_model_qwen3vl::{ModelError, SafetensorsStore};
use common::{TempDir, max_abs, model_dir, read_tensors, write_tensors};
use safetensors::Dtype;

fn check_outputs(out: &std::path::Path, variant: &str, case: &str) {
    let c = load_case(&model_dir(variant), case).unwrap();
    let got = SafetensorsStore::open_files(&[out.to_path_buf()]).unwrap();
    let (shape, logits) = got.f32_tensor("logits").unwrap();
    let (eshape, want) = c.expected.f32_tensor("logits").unwrap();
    assert_eq!(shape, eshape);
    assert!(max_abs(&logits, &want) <= TOLERANCE);
    let (lshape, logp) = got.f32_tensor("next_token_logprobs").unwrap();
    let (_, want) = c.expected.f32_tensor("next_token_logprobs").unwrap();
    assert_eq!(lshape, vec![shape[0] - 1]);
    assert!(max_abs(&logp, &want) <= TOLERANCE);
}

#[test]
fn scores_an_inputs_file_with_pixel_values() {
    let tmp = TempDir::new("score");
    let out = tmp.path().join("out.safetensors");
    let inputs = model_dir("b").join("image2/inputs.safetensors");
    let summary = run(&ScoreOptions::new(model_dir("b"), inputs, out.clone())).unwrap();
    assert_eq!(summary.images, 2);
    check_outputs(&out, "b", "image2");
}

#[test]
fn scores_raw_images_through_the_preprocessing() {
    let tmp = TempDir::new("score-img");
    // Keep only input_ids, with one placeholder per image (as the chat template renders it).
    let c = load_case(&model_dir("a"), "image1").unwrap();
    let mut ids: Vec<i64> = Vec::new();
    for &t in &c.input.input_ids {
        if t != 995 || ids.last() != Some(&995) {
            ids.push(i64::from(t));
        }
    }
    let bytes: Vec<u8> = ids.iter().flat_map(|v| v.to_le_bytes()).collect();
    let inputs = tmp.path().join("in.safetensors");
    write_tensors(
        &inputs,
        &[("input_ids".into(), Dtype::I64, vec![1, ids.len()], bytes)],
    );
    let (shape, px) = c.inputs.u8_tensor("images_u8_0").unwrap();
    let png = tmp.path().join("img.png");
    image::RgbImage::from_raw(shape[1] as u32, shape[0] as u32, px)
        .unwrap()
        .save(&png)
        .unwrap();
    let out = tmp.path().join("out.safetensors");
    let opts = ScoreOptions::new(model_dir("a"), inputs.clone(), out.clone())
        .with_images(vec![png.clone()])
        .with_pixels(Some(1024), None);
    run(&opts).unwrap();
    check_outputs(&out, "a", "image1");

    // Raw images and pixel_values together are refused; so is a missing input_ids.
    let with_pixels = model_dir("a").join("image1/inputs.safetensors");
    let opts = ScoreOptions::new(model_dir("a"), with_pixels, out.clone()).with_images(vec![png]);
    assert!(matches!(run(&opts), Err(ModelError::InvalidInput { .. })));
    let no_ids = tmp.path().join("none.safetensors");
    let t = read_tensors(&inputs)
        .into_iter()
        .map(|(_, d, s, b)| ("other".to_string(), d, s, b))
        .collect::<Vec<_>>();
    write_tensors(&no_ids, &t);
    let opts = ScoreOptions::new(model_dir("a"), no_ids, out);
    assert!(matches!(run(&opts), Err(ModelError::MissingTensor { .. })));
}

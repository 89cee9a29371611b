//! Incremental decoding with the KV cache gives the logits of a full forward pass, with and
//! without images; continuation log-probs/entropies through `linear_token_stats` match
//! `log_softmax` of the reference logits; bad prompts are typed errors.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use axpo_core::backend::BufferOps;
use axpo_model_qwen3vl::parity::{TOLERANCE, load_case};
use axpo_model_qwen3vl::{
    FastCpu, Grid, ImageInput, LoadOptions, ModelError, ModelInput, Qwen3VL, generate_greedy,
};
use common::{max_abs, model_dir};

fn model(variant: &str) -> Qwen3VL<FastCpu> {
    Qwen3VL::load(FastCpu::new(), &model_dir(variant), &LoadOptions::default()).unwrap()
}

fn full_logits(m: &Qwen3VL<FastCpu>, input: &ModelInput) -> Vec<f32> {
    let h = m.forward(input).unwrap();
    m.backend().download_f32(&m.logits(&h).unwrap()).unwrap()
}

/// Prefill `prompt_len` tokens, then feed the rest in chunks of `step`; every row's logits must
/// equal the full pass.
fn incremental_equals_full(variant: &str, case: &str, extra: &[u32], steps: &[usize]) {
    let m = model(variant);
    let vocab = m.config().text.vocab_size;
    let c = load_case(&model_dir(variant), case).unwrap();
    let prompt_len = c.input.input_ids.len();
    let mut full_input = c.input.clone();
    full_input.input_ids.extend_from_slice(extra);
    let full = full_logits(&m, &full_input);
    for &step in steps {
        let mut cache = m.new_cache();
        let h = m.prefill(&c.input, &mut cache).unwrap();
        let mut got = m.backend().download_f32(&m.logits(&h).unwrap()).unwrap();
        for chunk in extra.chunks(step) {
            let h = m.decode(chunk, &mut cache).unwrap();
            got.extend(m.backend().download_f32(&m.logits(&h).unwrap()).unwrap());
        }
        assert_eq!(cache.len(), prompt_len + extra.len());
        assert_eq!(got.len(), full.len());
        let d = max_abs(&got, &full);
        assert!(d <= 1e-5, "{variant}/{case} step {step}: {d}");
    }
    let _ = vocab;
}

#[test]
fn kv_cache_decode_equals_full_forward_text() {
    // 70 extra tokens also crosses the cache's first growth (capacity 64 -> 128).
    let extra: Vec<u32> = (0..70).map(|i| (i * 37 % 990) as u32).collect();
    incremental_equals_full("a", "text_only", &extra, &[1, 5, 70]);
}

#[test]
fn kv_cache_decode_equals_full_forward_with_images() {
    let extra = [17u32, 250, 731, 4, 4, 900];
    incremental_equals_full("a", "image1", &extra, &[1, 4]);
    incremental_equals_full("b", "image2", &extra, &[1, 6]);
}

#[test]
fn greedy_generation_runs_and_is_deterministic() {
    let m = model("b");
    let c = load_case(&model_dir("b"), "image2").unwrap();
    let a = generate_greedy(&m, &c.input, 5, &[]).unwrap();
    let b = generate_greedy(&m, &c.input, 5, &[]).unwrap();
    assert_eq!(a.len(), 5);
    assert_eq!(a, b);
    // The first token is the arg-max of the last reference logits row.
    let (shape, logits) = c.expected.f32_tensor("logits").unwrap();
    let last = &logits[(shape[0] - 1) * shape[1]..];
    let best = last
        .iter()
        .enumerate()
        .max_by(|x, y| x.1.total_cmp(y.1))
        .unwrap()
        .0;
    assert_eq!(a[0] as usize, best);
    let stop = generate_greedy(&m, &c.input, 5, &[a[0]]).unwrap();
    assert_eq!(stop, vec![a[0]]);
}

#[test]
fn continuation_logprobs_and_entropy_match_log_softmax() {
    for (variant, case) in [("a", "image1"), ("b", "image2"), ("a", "text_only")] {
        let m = model(variant);
        let c = load_case(&model_dir(variant), case).unwrap();
        let ids = &c.input.input_ids;
        let h = m.forward(&c.input).unwrap();
        let prompt_len = 4;
        let stats = m.continuation_stats(&h, ids, prompt_len).unwrap();
        let (shape, logits) = c.expected.f32_tensor("logits").unwrap();
        let v = shape[1];
        let mut want_logp = Vec::new();
        let mut want_ent = Vec::new();
        for (row, &target) in (prompt_len - 1..ids.len() - 1).zip(&ids[prompt_len..]) {
            let z: Vec<f64> = logits[row * v..(row + 1) * v]
                .iter()
                .map(|&x| f64::from(x))
                .collect();
            let max = z.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let lse = max + z.iter().map(|x| (x - max).exp()).sum::<f64>().ln();
            want_logp.push((z[target as usize] - lse) as f32);
            want_ent.push(-z.iter().map(|x| (x - lse).exp() * (x - lse)).sum::<f64>() as f32);
        }
        assert_eq!(stats.logp.len(), ids.len() - prompt_len);
        assert!(
            max_abs(&stats.logp, &want_logp) <= TOLERANCE,
            "{variant}/{case} logp"
        );
        assert!(
            max_abs(&stats.entropy, &want_ent) <= TOLERANCE,
            "{variant}/{case} entropy"
        );
    }
}

#[test]
fn bad_prompts_are_typed_errors() {
    let m = model("a");
    let c = load_case(&model_dir("a"), "image1").unwrap();
    // One image token too few.
    let mut input = c.input.clone();
    let pos = input.input_ids.iter().position(|&t| t == 995).unwrap();
    input.input_ids.remove(pos);
    assert!(matches!(
        m.forward(&input),
        Err(ModelError::ImageTokenMismatch {
            expected: 6,
            got: 5
        })
    ));
    // Image tokens without pixels.
    let text = ModelInput::text(c.input.input_ids.clone());
    assert!(matches!(
        m.forward(&text),
        Err(ModelError::ImageTokenMismatch {
            expected: 0,
            got: 6
        })
    ));
    // Pixel rows that do not match the grid.
    let mut input = c.input.clone();
    if let Some(img) = input.images.as_mut() {
        img.pixel_values.truncate(100);
    }
    assert!(matches!(
        m.forward(&input),
        Err(ModelError::TensorShape { .. })
    ));
    // A grid that is not a multiple of the merge size.
    let input = ModelInput::with_images(
        vec![1, 995, 2],
        ImageInput {
            pixel_values: vec![0.0; 3 * 1536],
            grids: vec![Grid { t: 1, h: 1, w: 3 }],
        },
    );
    assert!(matches!(
        m.forward(&input),
        Err(ModelError::InvalidInput { .. })
    ));
    // Out-of-vocabulary ids, empty prompts, empty decode.
    assert!(matches!(
        m.forward(&ModelInput::text(vec![1, 5000])),
        Err(ModelError::InvalidInput { .. })
    ));
    assert!(matches!(
        m.forward(&ModelInput::text(vec![])),
        Err(ModelError::InvalidInput { .. })
    ));
    let mut cache = m.new_cache();
    assert!(matches!(
        m.decode(&[], &mut cache),
        Err(ModelError::InvalidInput { .. })
    ));
    assert!(matches!(
        m.decode(&[995], &mut cache),
        Err(ModelError::InvalidInput { .. })
    ));
    let h = m.forward(&ModelInput::text(vec![1, 2, 3])).unwrap();
    assert!(matches!(
        m.continuation_stats(&h, &[1, 2, 3], 0),
        Err(ModelError::InvalidInput { .. })
    ));
}

/// Prefix-shared sampling (one prefill, one KV-cache fork per continuation) gives exactly what
/// recomputing the prefix for every continuation gives: tokens, log-probs and entropies, with
/// images in the prefix; the continuations differ from one another (each has its own stream);
/// and the reported log-probs are those of the full forward pass over prefix + continuation.
#[test]
fn prefix_shared_sampling_equals_recomputing_the_prefix() {
    use axpo_model_qwen3vl::{Sampling, sample_from_prefix, sample_recomputing_prefix};
    let m = model("b");
    let c = load_case(&model_dir("b"), "image2").unwrap();
    let sampling = Sampling::Temperature {
        temperature: 1.0,
        seed: 11,
    };
    let shared = sample_from_prefix(&m, &c.input, 4, 12, &[], sampling).unwrap();
    assert_eq!(shared.len(), 4);
    for (i, s) in shared.iter().enumerate() {
        let slow = sample_recomputing_prefix(&m, &c.input, i, 12, &[], sampling).unwrap();
        assert_eq!(s.tokens, slow.tokens, "continuation {i}");
        assert_eq!(s.tokens.len(), 12);
        for (a, b) in s.logprobs.iter().zip(&slow.logprobs) {
            assert!((a - b).abs() <= 1e-5, "continuation {i}: {a} vs {b}");
        }
        for (a, b) in s.entropies.iter().zip(&slow.entropies) {
            assert!((a - b).abs() <= 1e-5, "continuation {i}: {a} vs {b}");
        }
        assert!(s.entropies.iter().all(|e| *e > 0.0));
    }
    assert!(shared.windows(2).any(|w| w[0].tokens != w[1].tokens));
    // Log-probs against a full forward pass over the prefix and the sampled tokens.
    let s = &shared[2];
    let mut full = c.input.clone();
    full.input_ids.extend_from_slice(&s.tokens);
    let logits = full_logits(&m, &full);
    let vocab = m.config().text.vocab_size;
    let p = c.input.input_ids.len();
    for (j, &tok) in s.tokens.iter().enumerate() {
        let row = &logits[(p - 1 + j) * vocab..(p + j) * vocab];
        let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let lse = f64::from(max)
            + row
                .iter()
                .map(|&z| (f64::from(z) - f64::from(max)).exp())
                .sum::<f64>()
                .ln();
        let want = f64::from(row[tok as usize]) - lse;
        assert!((f64::from(s.logprobs[j]) - want).abs() <= 2e-5, "token {j}");
    }
    // Greedy continuations are all equal to the greedy generation.
    let greedy = sample_from_prefix(&m, &c.input, 2, 6, &[], Sampling::Greedy).unwrap();
    let want = generate_greedy(&m, &c.input, 6, &[]).unwrap();
    assert_eq!(greedy[0].tokens, want);
    assert_eq!(greedy[1].tokens, want);
    // A bad temperature is a typed error.
    let bad = Sampling::Temperature {
        temperature: 0.0,
        seed: 1,
    };
    assert!(matches!(
        sample_from_prefix(&m, &c.input, 1, 3, &[], bad),
        Err(ModelError::InvalidInput { .. })
    ));
}

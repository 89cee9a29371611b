//! CPU forward throughput of a ~0.5B Qwen3-VL text decoder with random bf16 weights
//! (real architecture ratios: hidden 1024, 24 layers, 16 query / 8 KV heads of 128, SwiGLU 3072,
//! vocab 151936, tied head; a small vision tower, unused by the text-only prompt).
//!
//! `cargo bench -p axpo-model-qwen3vl --bench forward` (harness = false). The model folder is
//! written once (1 GB, BF16) to `$AXPO_BENCH_DIR` (default: the system temp dir) and reused;
//! `scripts/bench_transformers.py` loads the same folder into transformers, and
//! `scripts/bench_cpu.sh` runs both and prints the ratio.
//!
//! Environment: `AXPO_BENCH_TOKENS` (prompt length, 512), `AXPO_BENCH_DECODE` (decode steps, 64),
//! `AXPO_BENCH_REPS` (timed repetitions, best taken, 3).
//!
//! Then AXPO's resampling pattern: `AXPO_BENCH_BRANCHES` (8) continuations of
//! `AXPO_BENCH_BRANCH_TOKENS` (32) tokens from the same prompt used as a frozen prefix, with the
//! prefix's KV cache shared (one prefill, a cache fork per continuation) against recomputing the
//! prefix for every continuation. Set `AXPO_BENCH_BRANCHES=0` to skip it.

#![allow(clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::time::Instant;

use axpo_model_qwen3vl::{FastCpu, LoadOptions, ModelInput, Qwen3VL};
use safetensors::Dtype;
use safetensors::tensor::TensorView;

const HIDDEN: usize = 1024;
const LAYERS: usize = 24;
const HEADS: usize = 16;
const KV_HEADS: usize = 8;
const HEAD_DIM: usize = 128;
const INTER: usize = 3072;
const VOCAB: usize = 151_936;
const V_HIDDEN: usize = 256;
const V_INTER: usize = 512;
const V_DEPTH: usize = 2;

fn config_json() -> serde_json::Value {
    serde_json::json!({
        "architectures": ["Qwen3VLForConditionalGeneration"], "model_type": "qwen3_vl",
        "image_token_id": 151655, "video_token_id": 151656,
        "vision_start_token_id": 151652, "vision_end_token_id": 151653,
        "tie_word_embeddings": true,
        "text_config": {"model_type": "qwen3_vl_text", "vocab_size": VOCAB, "hidden_size": HIDDEN,
            "intermediate_size": INTER, "num_hidden_layers": LAYERS, "num_attention_heads": HEADS,
            "num_key_value_heads": KV_HEADS, "head_dim": HEAD_DIM, "hidden_act": "silu",
            "rms_norm_eps": 1e-6, "rope_theta": 5000000, "attention_bias": false,
            "max_position_embeddings": 262144, "tie_word_embeddings": true,
            "rope_scaling": {"rope_type": "default", "mrope_section": [24, 20, 20],
                             "mrope_interleaved": true}},
        "vision_config": {"model_type": "qwen3_vl", "depth": V_DEPTH, "hidden_size": V_HIDDEN,
            "intermediate_size": V_INTER, "num_heads": 4, "patch_size": 16,
            "temporal_patch_size": 2, "spatial_merge_size": 2, "in_channels": 3,
            "out_hidden_size": HIDDEN, "num_position_embeddings": 2304,
            "deepstack_visual_indexes": [1], "hidden_act": "gelu_pytorch_tanh"}
    })
}

/// Every tensor of the checkpoint with its shape and the std of its random values
/// (`None`: a norm weight around 1).
fn tensors() -> Vec<(String, Vec<usize>, Option<f32>)> {
    let mut t = Vec::new();
    let lin =
        |n: &str, o: usize, i: usize| (n.to_string(), vec![o, i], Some(1.0 / (i as f32).sqrt()));
    let norm = |n: &str, d: usize| (n.to_string(), vec![d], None);
    let bias = |n: &str, d: usize| (n.to_string(), vec![d], Some(0.02));
    let p = "model.language_model";
    t.push((
        format!("{p}.embed_tokens.weight"),
        vec![VOCAB, HIDDEN],
        Some(0.05),
    ));
    t.push(norm(&format!("{p}.norm.weight"), HIDDEN));
    for l in 0..LAYERS {
        let q = format!("{p}.layers.{l}");
        t.push(norm(&format!("{q}.input_layernorm.weight"), HIDDEN));
        t.push(norm(
            &format!("{q}.post_attention_layernorm.weight"),
            HIDDEN,
        ));
        t.push(lin(
            &format!("{q}.self_attn.q_proj.weight"),
            HEADS * HEAD_DIM,
            HIDDEN,
        ));
        t.push(lin(
            &format!("{q}.self_attn.k_proj.weight"),
            KV_HEADS * HEAD_DIM,
            HIDDEN,
        ));
        t.push(lin(
            &format!("{q}.self_attn.v_proj.weight"),
            KV_HEADS * HEAD_DIM,
            HIDDEN,
        ));
        t.push(lin(
            &format!("{q}.self_attn.o_proj.weight"),
            HIDDEN,
            HEADS * HEAD_DIM,
        ));
        t.push(norm(&format!("{q}.self_attn.q_norm.weight"), HEAD_DIM));
        t.push(norm(&format!("{q}.self_attn.k_norm.weight"), HEAD_DIM));
        t.push(lin(&format!("{q}.mlp.gate_proj.weight"), INTER, HIDDEN));
        t.push(lin(&format!("{q}.mlp.up_proj.weight"), INTER, HIDDEN));
        t.push(lin(&format!("{q}.mlp.down_proj.weight"), HIDDEN, INTER));
    }
    let v = "model.visual";
    t.push((
        format!("{v}.patch_embed.proj.weight"),
        vec![V_HIDDEN, 3, 2, 16, 16],
        Some(0.02),
    ));
    t.push(bias(&format!("{v}.patch_embed.proj.bias"), V_HIDDEN));
    t.push((
        format!("{v}.pos_embed.weight"),
        vec![2304, V_HIDDEN],
        Some(0.02),
    ));
    for b in 0..V_DEPTH {
        let q = format!("{v}.blocks.{b}");
        for n in ["norm1", "norm2"] {
            t.push(norm(&format!("{q}.{n}.weight"), V_HIDDEN));
            t.push(bias(&format!("{q}.{n}.bias"), V_HIDDEN));
        }
        t.push(lin(&format!("{q}.attn.qkv.weight"), 3 * V_HIDDEN, V_HIDDEN));
        t.push(bias(&format!("{q}.attn.qkv.bias"), 3 * V_HIDDEN));
        t.push(lin(&format!("{q}.attn.proj.weight"), V_HIDDEN, V_HIDDEN));
        t.push(bias(&format!("{q}.attn.proj.bias"), V_HIDDEN));
        t.push(lin(
            &format!("{q}.mlp.linear_fc1.weight"),
            V_INTER,
            V_HIDDEN,
        ));
        t.push(bias(&format!("{q}.mlp.linear_fc1.bias"), V_INTER));
        t.push(lin(
            &format!("{q}.mlp.linear_fc2.weight"),
            V_HIDDEN,
            V_INTER,
        ));
        t.push(bias(&format!("{q}.mlp.linear_fc2.bias"), V_HIDDEN));
    }
    let wide = 4 * V_HIDDEN;
    for (m, nd) in [
        ("merger".to_string(), V_HIDDEN),
        ("deepstack_merger_list.0".to_string(), wide),
    ] {
        t.push(norm(&format!("{v}.{m}.norm.weight"), nd));
        t.push(bias(&format!("{v}.{m}.norm.bias"), nd));
        t.push(lin(&format!("{v}.{m}.linear_fc1.weight"), wide, wide));
        t.push(bias(&format!("{v}.{m}.linear_fc1.bias"), wide));
        t.push(lin(&format!("{v}.{m}.linear_fc2.weight"), HIDDEN, wide));
        t.push(bias(&format!("{v}.{m}.linear_fc2.bias"), HIDDEN));
    }
    t
}

/// splitmix64, for reproducible weights without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in [-1, 1).
    fn uniform(&mut self) -> f32 {
        ((self.next() >> 40) as f32 / (1u64 << 23) as f32) - 1.0
    }
}

fn write_model(dir: &Path) {
    std::fs::create_dir_all(dir).expect("create the bench model folder");
    let mut rng = Rng(0x5eed);
    let specs = tensors();
    let params: usize = specs
        .iter()
        .map(|(_, s, _)| s.iter().product::<usize>())
        .sum();
    eprintln!(
        "writing a {:.3}B-parameter BF16 checkpoint to {}",
        params as f64 / 1e9,
        dir.display()
    );
    let data: Vec<Vec<u8>> = specs
        .iter()
        .map(|(_, shape, std)| {
            let n: usize = shape.iter().product();
            (0..n)
                .flat_map(|_| {
                    // Uniform with the requested std: a = std * sqrt(3).
                    let v = match std {
                        Some(s) => rng.uniform() * s * 3f32.sqrt(),
                        None => 1.0 + 0.1 * rng.uniform(),
                    };
                    half::bf16::from_f32(v).to_le_bytes()
                })
                .collect()
        })
        .collect();
    let views: Vec<(String, TensorView<'_>)> = specs
        .iter()
        .zip(&data)
        .map(|((n, s, _), b)| {
            (
                n.clone(),
                TensorView::new(Dtype::BF16, s.clone(), b).expect("view"),
            )
        })
        .collect();
    safetensors::serialize_to_file(views, None, &dir.join("model.safetensors"))
        .expect("write weights");
    std::fs::write(
        dir.join("config.json"),
        serde_json::to_string_pretty(&config_json()).expect("json"),
    )
    .expect("write config");
}

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn best<F: FnMut()>(reps: usize, mut f: F) -> f64 {
    f(); // warm-up
    (0..reps)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64()
        })
        .fold(f64::INFINITY, f64::min)
}

fn main() {
    let tokens = env_usize("AXPO_BENCH_TOKENS", 512);
    let steps = env_usize("AXPO_BENCH_DECODE", 64);
    let reps = env_usize("AXPO_BENCH_REPS", 3);
    let dir: PathBuf = std::env::var_os("AXPO_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| std::env::temp_dir().join("axpo-qwen3vl-bench-0.5b"));
    let marker = dir.join("config.json");
    let fresh = std::fs::read_to_string(&marker)
        .ok()
        .and_then(|s| serde_json::from_str::<serde_json::Value>(&s).ok())
        != Some(config_json());
    if fresh {
        write_model(&dir);
    }
    let t = Instant::now();
    let model = Qwen3VL::load(FastCpu::new(), &dir, &LoadOptions::default()).expect("load");
    let load_s = t.elapsed().as_secs_f64();
    let threads = rayon::current_num_threads();
    let mut rng = Rng(7);
    let ids: Vec<u32> = (0..tokens).map(|_| (rng.next() % 150_000) as u32).collect();
    let input = ModelInput::text(ids.clone());

    let score_s = best(reps, || {
        let h = model.forward(&input).expect("forward");
        // The logits stay where the backend keeps them (host memory here), as in PyTorch.
        let logits = model.logits(&h).expect("logits");
        std::hint::black_box(axpo_core::backend::DeviceBuffer::len(&logits));
    });
    let prefill_s = best(reps, || {
        let mut cache = model.new_cache();
        let h = model.prefill(&input, &mut cache).expect("prefill");
        std::hint::black_box(model.last_logits(&h).expect("logits"));
    });
    let mut cache = model.new_cache();
    let mut decode_s = f64::INFINITY;
    for _ in 0..reps.min(2) {
        let h = model.prefill(&input, &mut cache).expect("prefill");
        let mut next =
            axpo_model_qwen3vl::generate::argmax(&model.last_logits(&h).expect("logits"));
        let t = Instant::now();
        for _ in 0..steps {
            let h = model.decode(&[next], &mut cache).expect("decode");
            next = axpo_model_qwen3vl::generate::argmax(&model.last_logits(&h).expect("logits"));
        }
        decode_s = decode_s.min(t.elapsed().as_secs_f64());
    }
    println!();
    println!(
        "axpo-model-qwen3vl FastCpu, {threads} threads, f32 compute (bf16 checkpoint widened at load), load {load_s:.1} s"
    );
    println!("| phase | tokens | seconds | tokens/s |");
    println!("|---|---|---|---|");
    println!(
        "| score (full forward, logits of every position) | {tokens} | {score_s:.3} | {:.1} |",
        tokens as f64 / score_s
    );
    println!(
        "| prefill (fill KV cache, last logits) | {tokens} | {prefill_s:.3} | {:.1} |",
        tokens as f64 / prefill_s
    );
    println!(
        "| decode (1 token/step after the prompt) | {steps} | {decode_s:.3} | {:.2} |",
        steps as f64 / decode_s
    );
    println!(
        "RESULT rust score_tps={:.3} prefill_tps={:.3} decode_tps={:.3}",
        tokens as f64 / score_s,
        tokens as f64 / prefill_s,
        steps as f64 / decode_s
    );

    let branches = env_usize("AXPO_BENCH_BRANCHES", 8);
    let branch_tokens = env_usize("AXPO_BENCH_BRANCH_TOKENS", 32);
    if branches > 0 {
        use axpo_model_qwen3vl::{Sampling, sample_from_prefix, sample_recomputing_prefix};
        let sampling = Sampling::Temperature {
            temperature: 1.0,
            seed: 3,
        };
        let t = Instant::now();
        let shared = sample_from_prefix(&model, &input, branches, branch_tokens, &[], sampling)
            .expect("shared");
        let shared_s = t.elapsed().as_secs_f64();
        let t = Instant::now();
        let slow: Vec<_> = (0..branches)
            .map(|i| {
                sample_recomputing_prefix(&model, &input, i, branch_tokens, &[], sampling)
                    .expect("recompute")
            })
            .collect();
        let slow_s = t.elapsed().as_secs_f64();
        let same = shared.iter().zip(&slow).all(|(a, b)| a.tokens == b.tokens);
        println!();
        println!(
            "AXPO resampling: {branches} continuations of {branch_tokens} tokens from a {tokens}-token prefix"
        );
        println!("| path | seconds |");
        println!("|---|---|");
        println!("| shared prefix KV cache (1 prefill + forks) | {shared_s:.3} |");
        println!("| recompute the prefix per continuation | {slow_s:.3} |");
        println!(
            "speed-up {:.2}x; identical continuations: {same}",
            slow_s / shared_s
        );
        println!(
            "RESULT rust_resample shared_s={shared_s:.4} recompute_s={slow_s:.4} identical={same}"
        );
    }
}

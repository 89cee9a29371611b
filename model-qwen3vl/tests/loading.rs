//! Checkpoint loading: sharded index, f32/f16/bf16 weights, and typed errors for broken files.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use axpo_core::backend::{BufferOps, Cpu};
use axpo_model_qwen3vl::parity::{TOLERANCE, load_case};
use axpo_model_qwen3vl::{FastCpu, LoadOptions, ModelError, Qwen3VL, WeightDType};
use common::*;
use safetensors::Dtype;

fn logits_of(dir: &std::path::Path, case_model: &str, case: &str, opts: LoadOptions) -> Vec<f32> {
    let model = Qwen3VL::load(FastCpu::new(), dir, &opts).unwrap();
    let c = load_case(&model_dir(case_model), case).unwrap();
    let h = model.forward(&c.input).unwrap();
    model
        .backend()
        .download_f32(&model.logits(&h).unwrap())
        .unwrap()
}

fn reference_logits(variant: &str, case: &str) -> Vec<f32> {
    let c = load_case(&model_dir(variant), case).unwrap();
    c.expected.f32_tensor("logits").unwrap().1
}

#[test]
fn sharded_checkpoint_with_index_loads() {
    let dir = TempDir::new("sharded");
    let src = model_dir("a");
    std::fs::copy(src.join("config.json"), dir.path().join("config.json")).unwrap();
    let tensors = read_tensors(&src.join("model.safetensors"));
    let (first, second) = tensors.split_at(tensors.len() / 2);
    let names = [
        "model-00001-of-00002.safetensors",
        "model-00002-of-00002.safetensors",
    ];
    write_tensors(&dir.path().join(names[0]), first);
    write_tensors(&dir.path().join(names[1]), second);
    let mut map = serde_json::Map::new();
    for (part, file) in [(first, names[0]), (second, names[1])] {
        for t in part {
            map.insert(t.0.clone(), serde_json::Value::String(file.into()));
        }
    }
    let index = serde_json::json!({"metadata": {"total_size": 0}, "weight_map": map});
    std::fs::write(
        dir.path().join("model.safetensors.index.json"),
        serde_json::to_string(&index).unwrap(),
    )
    .unwrap();
    let got = logits_of(dir.path(), "a", "image1", LoadOptions::default());
    assert!(max_abs(&got, &reference_logits("a", "image1")) <= TOLERANCE);

    // An index naming a shard that does not exist is an I/O error, not a panic.
    std::fs::remove_file(dir.path().join(names[1])).unwrap();
    let err = Qwen3VL::load(FastCpu::new(), dir.path(), &LoadOptions::default()).unwrap_err();
    assert!(matches!(err, ModelError::Io { .. }), "{err}");
}

#[test]
fn f32_and_f16_checkpoints_load() {
    let f32_dir = rewritten("b", |(n, d, s, b)| {
        assert_eq!(d, Dtype::BF16);
        Some((n, Dtype::F32, s, bf16_to_f32_bytes(&b)))
    });
    let got = logits_of(f32_dir.path(), "b", "image2", LoadOptions::default());
    assert!(max_abs(&got, &reference_logits("b", "image2")) <= TOLERANCE);

    // f16 cannot hold every bf16 value exactly (range, subnormals): close, not equal.
    let f16_dir = rewritten("b", |(n, _, s, b)| {
        Some((n, Dtype::F16, s, bf16_to_f16_bytes(&b)))
    });
    let got = logits_of(f16_dir.path(), "b", "image2", LoadOptions::default());
    let d = max_abs(&got, &reference_logits("b", "image2"));
    assert!(d <= 2e-2, "f16 weights: {d}");
}

#[test]
fn weights_kept_as_bf16_give_the_same_logits() {
    let opts = LoadOptions::default().with_weight_dtype(WeightDType::AsStored);
    let model = Qwen3VL::load(Cpu::new(), &model_dir("a"), &opts).unwrap();
    let c = load_case(&model_dir("a"), "text_only").unwrap();
    let h = model.forward(&c.input).unwrap();
    let got = model
        .backend()
        .download_f32(&model.logits(&h).unwrap())
        .unwrap();
    assert!(max_abs(&got, &reference_logits("a", "text_only")) <= TOLERANCE);
}

#[test]
fn missing_tensor_is_a_typed_error() {
    let dir = rewritten("a", |t| {
        (t.0 != "model.language_model.layers.1.mlp.up_proj.weight").then_some(t)
    });
    let err = Qwen3VL::load(FastCpu::new(), dir.path(), &LoadOptions::default()).unwrap_err();
    match err {
        ModelError::MissingTensor { name } => {
            assert_eq!(name, "model.language_model.layers.1.mlp.up_proj.weight")
        }
        other => panic!("{other}"),
    }
}

#[test]
fn wrong_shape_is_a_typed_error() {
    let dir = rewritten("a", |(n, d, s, b)| {
        if n == "model.visual.blocks.0.attn.qkv.weight" {
            // [96, 32] stored as [32, 96]: same bytes, wrong shape.
            Some((n, d, vec![s[1], s[0]], b))
        } else {
            Some((n, d, s, b))
        }
    });
    let err = Qwen3VL::load(FastCpu::new(), dir.path(), &LoadOptions::default()).unwrap_err();
    match err {
        ModelError::TensorShape {
            name,
            expected,
            got,
        } => {
            assert_eq!(name, "model.visual.blocks.0.attn.qkv.weight");
            assert_eq!(expected, vec![96, 32]);
            assert_eq!(got, vec![32, 96]);
        }
        other => panic!("{other}"),
    }
}

#[test]
fn integer_weight_is_a_typed_error() {
    let dir = rewritten("a", |(n, d, s, b)| {
        if n == "model.language_model.norm.weight" {
            Some((n, Dtype::I16, s, b))
        } else {
            Some((n, d, s, b))
        }
    });
    let err = Qwen3VL::load(FastCpu::new(), dir.path(), &LoadOptions::default()).unwrap_err();
    assert!(matches!(err, ModelError::TensorDType { .. }), "{err}");
}

#[test]
fn truncated_and_corrupt_files_are_typed_errors() {
    let src = model_dir("a").join("model.safetensors");
    let bytes = std::fs::read(&src).unwrap();
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("truncated data", bytes[..bytes.len() - 1000].to_vec()),
        ("truncated header", bytes[..100].to_vec()),
        ("four bytes", bytes[..4].to_vec()),
        ("empty", Vec::new()),
        ("garbage header", {
            let mut b = bytes.clone();
            for v in b.iter_mut().skip(8).take(64) {
                *v = b'#';
            }
            b
        }),
        ("huge header length", {
            let mut b = bytes.clone();
            b[..8].copy_from_slice(&u64::MAX.to_le_bytes());
            b
        }),
    ];
    for (what, data) in cases {
        let dir = TempDir::new("corrupt");
        std::fs::copy(
            model_dir("a").join("config.json"),
            dir.path().join("config.json"),
        )
        .unwrap();
        std::fs::write(dir.path().join("model.safetensors"), data).unwrap();
        let err = Qwen3VL::load(FastCpu::new(), dir.path(), &LoadOptions::default()).unwrap_err();
        assert!(
            matches!(err, ModelError::Safetensors { .. }),
            "{what}: {err}"
        );
    }
}

#[test]
fn missing_files_are_io_errors() {
    let dir = TempDir::new("empty");
    let err = Qwen3VL::load(FastCpu::new(), dir.path(), &LoadOptions::default()).unwrap_err();
    assert!(matches!(err, ModelError::Io { .. }), "{err}");
}

#[test]
fn bad_config_is_a_typed_error() {
    let dir = rewritten("a", Some);
    let cfg = std::fs::read_to_string(dir.path().join("config.json")).unwrap();
    let bad = cfg.replace(
        "\"mrope_section\": [\n        4,",
        "\"mrope_section\": [\n        5,",
    );
    assert_ne!(cfg, bad);
    std::fs::write(dir.path().join("config.json"), bad).unwrap();
    let err = Qwen3VL::load(FastCpu::new(), dir.path(), &LoadOptions::default()).unwrap_err();
    assert!(matches!(err, ModelError::InvalidConfig { .. }), "{err}");
    std::fs::write(dir.path().join("config.json"), "{ not json").unwrap();
    let err = Qwen3VL::load(FastCpu::new(), dir.path(), &LoadOptions::default()).unwrap_err();
    assert!(matches!(err, ModelError::Json { .. }), "{err}");
}

/// Byte flips in the header and truncations at many lengths: always `Ok` or a typed error.
#[test]
fn damaged_files_never_panic() {
    let src = model_dir("a").join("model.safetensors");
    let bytes = std::fs::read(&src).unwrap();
    let header = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize + 8;
    let dir = TempDir::new("fuzz");
    std::fs::copy(
        model_dir("a").join("config.json"),
        dir.path().join("config.json"),
    )
    .unwrap();
    let mut state = 0x1234_5678u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut errors = 0;
    for i in 0..150 {
        let mut data = bytes.clone();
        if i % 3 == 0 {
            data.truncate((next() as usize) % bytes.len());
        } else {
            for _ in 0..1 + i % 4 {
                let at = (next() as usize) % header;
                data[at] = next() as u8;
            }
        }
        std::fs::write(dir.path().join("model.safetensors"), &data).unwrap();
        if Qwen3VL::load(FastCpu::new(), dir.path(), &LoadOptions::default()).is_err() {
            errors += 1;
        }
    }
    assert!(
        errors > 50,
        "only {errors} of 150 damaged files were rejected"
    );
}

/// Fuzz finding F9: a file holding a sub-byte tensor (F4: 4 bits per element) next to ordinary
/// ones opens; its size is counted in bits, and reading it is a typed error.
#[test]
fn sub_byte_tensors_do_not_make_a_file_corrupt() {
    use axpo_model_qwen3vl::weights::SafetensorsStore;
    let dir = TempDir::new("subbyte");
    let header = r#"{"packed":{"dtype":"F4","shape":[6],"data_offsets":[0,3]},"w":{"dtype":"F32","shape":[2],"data_offsets":[3,11]}}"#;
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(header.as_bytes());
    bytes.extend_from_slice(&[0x12, 0x34, 0x56]);
    bytes.extend_from_slice(&1.5f32.to_le_bytes());
    bytes.extend_from_slice(&(-2.0f32).to_le_bytes());
    let path = dir.path().join("model.safetensors");
    std::fs::write(&path, bytes).unwrap();
    let store = SafetensorsStore::open_files(&[path]).unwrap();
    assert_eq!(store.f32_tensor("w").unwrap().1, vec![1.5, -2.0]);
    assert!(store.f32_tensor("packed").is_err());
}

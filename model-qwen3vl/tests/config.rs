//! `config.json` in both forms, MoE rejection, and bad configs.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use axpo_model_qwen3vl::{Config, ModelError};
use common::model_dir;
use serde_json::{Value, json};

fn hub(variant: &str) -> Value {
    serde_json::from_str(&std::fs::read_to_string(model_dir(variant).join("config.json")).unwrap())
        .unwrap()
}

fn parse(v: &Value) -> Result<Config, ModelError> {
    Config::from_json_str(&v.to_string())
}

#[test]
fn both_forms_parse_to_the_same_config() {
    for v in ["a", "b"] {
        let dir = model_dir(v);
        let old = Config::from_file(&dir.join("config.json")).unwrap();
        let new = Config::from_file(&dir.join("config.saved_by_transformers5.json")).unwrap();
        assert_eq!(old, new, "variant {v}");
        assert_eq!(old.text.rope_theta, 100.0);
        assert_eq!(old.text.mrope_section, [4, 2, 2]);
        assert_eq!(old.text.head_dim, 16);
        assert_eq!(old.vision.rope_theta, 10_000.0);
        assert_eq!(old.image_token_id, 995);
    }
    assert_eq!(
        Config::from_file(&model_dir("a").join("config.json"))
            .unwrap()
            .vision
            .deepstack_visual_indexes,
        vec![0, 1]
    );
    let b = Config::from_file(&model_dir("b").join("config.json")).unwrap();
    assert_eq!(b.vision.deepstack_visual_indexes, vec![1]);
    assert!(b.tie_word_embeddings);
}

/// The published 8B config's shape: untied, no `tie_word_embeddings` in text_config, 4.57 keys.
#[test]
fn a_real_sized_hub_config_parses() {
    let cfg = json!({
        "architectures": ["Qwen3VLForConditionalGeneration"], "model_type": "qwen3_vl",
        "image_token_id": 151655, "video_token_id": 151656,
        "vision_start_token_id": 151652, "vision_end_token_id": 151653,
        "tie_word_embeddings": false,
        "text_config": {"model_type": "qwen3_vl_text", "vocab_size": 151936, "hidden_size": 4096,
            "intermediate_size": 12288, "num_hidden_layers": 36, "num_attention_heads": 32,
            "num_key_value_heads": 8, "head_dim": 128, "hidden_act": "silu", "rms_norm_eps": 1e-6,
            "rope_theta": 5000000, "attention_bias": false, "max_position_embeddings": 262144,
            "rope_scaling": {"rope_type": "default", "mrope_section": [24, 20, 20], "mrope_interleaved": true}},
        "vision_config": {"model_type": "qwen3_vl", "depth": 27, "hidden_size": 1152,
            "intermediate_size": 4304, "num_heads": 16, "patch_size": 16, "temporal_patch_size": 2,
            "spatial_merge_size": 2, "in_channels": 3, "out_hidden_size": 4096,
            "num_position_embeddings": 2304, "deepstack_visual_indexes": [8, 16, 24],
            "hidden_act": "gelu_pytorch_tanh"}
    });
    let c = parse(&cfg).unwrap();
    assert_eq!(c.text.rope_theta, 5_000_000.0);
    assert_eq!(c.vision.head_dim(), 72);
    assert_eq!(c.vision.pos_side(), 48);
    assert_eq!(c.vision.patch_dim(), 1536);
    assert!(!c.tie_word_embeddings);
}

#[test]
fn moe_checkpoints_are_rejected() {
    let mut cfg = hub("a");
    cfg["model_type"] = json!("qwen3_vl_moe");
    assert!(matches!(parse(&cfg), Err(ModelError::Unsupported { .. })));
    let mut cfg = hub("a");
    cfg["architectures"] = json!(["Qwen3VLMoeForConditionalGeneration"]);
    assert!(matches!(parse(&cfg), Err(ModelError::Unsupported { .. })));
    let mut cfg = hub("a");
    cfg["text_config"]["num_experts"] = json!(128);
    assert!(matches!(parse(&cfg), Err(ModelError::Unsupported { .. })));
}

#[test]
fn bad_configs_are_rejected_with_the_field() {
    type Edit = fn(&mut Value);
    let cases: Vec<(&str, Edit)> = vec![
        ("text_config.hidden_size", |c| {
            c["text_config"]
                .as_object_mut()
                .unwrap()
                .remove("hidden_size");
        }),
        ("text_config.hidden_size", |c| {
            c["text_config"]["hidden_size"] = json!(0)
        }),
        ("text_config.num_key_value_heads", |c| {
            c["text_config"]["num_key_value_heads"] = json!(3)
        }),
        ("text_config.rope_scaling.mrope_section", |c| {
            c["text_config"]["rope_scaling"]["mrope_section"] = json!([4, 2, 3])
        }),
        ("text_config.rope_scaling.mrope_section", |c| {
            c["text_config"]["rope_scaling"]["mrope_section"] = json!([4, 4])
        }),
        ("text_config.rope_scaling", |c| {
            c["text_config"]
                .as_object_mut()
                .unwrap()
                .remove("rope_scaling");
        }),
        ("vision_config.deepstack_visual_indexes", |c| {
            c["vision_config"]["deepstack_visual_indexes"] = json!([0, 2])
        }),
        ("vision_config.deepstack_visual_indexes", |c| {
            c["vision_config"]["deepstack_visual_indexes"] = json!([1, 1])
        }),
        ("vision_config.num_position_embeddings", |c| {
            c["vision_config"]["num_position_embeddings"] = json!(60)
        }),
        ("vision_config.out_hidden_size", |c| {
            c["vision_config"]["out_hidden_size"] = json!(32)
        }),
        ("vision_config", |c| {
            c.as_object_mut().unwrap().remove("vision_config");
        }),
        ("image_token_id", |c| c["image_token_id"] = json!(5000)),
        // Fuzz findings F7, F8, F12: a section sum that wraps, a huge depth (which must not be
        // allocated for), sizes whose products overflow.
        ("text_config.rope_scaling.mrope_section", |c| {
            c["text_config"]["rope_scaling"]["mrope_section"] = json!([u64::MAX, u64::MAX, 10u64])
        }),
        ("vision_config.deepstack_visual_indexes", |c| {
            c["vision_config"]["depth"] = json!(u64::MAX);
            c["vision_config"]["deepstack_visual_indexes"] = json!([u64::MAX])
        }),
        ("text_config.vocab_size", |c| {
            c["text_config"]["vocab_size"] = json!(u64::MAX / 2)
        }),
        ("vision_config.patch_size", |c| {
            c["vision_config"]["patch_size"] = json!(1u64 << 33)
        }),
    ];
    for (field, edit) in cases {
        let mut cfg = hub("a");
        edit(&mut cfg);
        match parse(&cfg) {
            Err(ModelError::InvalidConfig { field: f, .. }) => assert_eq!(f, field),
            other => panic!("{field}: {other:?}"),
        }
    }
    // Wrong JSON types and unknown rope types.
    let mut cfg = hub("a");
    cfg["text_config"]["hidden_size"] = json!("sixty-four");
    assert!(matches!(parse(&cfg), Err(ModelError::Json { .. })));
    let mut cfg = hub("a");
    cfg["text_config"]["rope_scaling"]["rope_type"] = json!("yarn");
    assert!(matches!(parse(&cfg), Err(ModelError::Unsupported { .. })));
    assert!(matches!(
        Config::from_json_str("[]"),
        Err(ModelError::Json { .. })
    ));
}

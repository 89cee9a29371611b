//! The model crate's `config.json` parser (`Config::from_json_str`) on arbitrary bytes.
//!
//! Input, two forms:
//! - **raw** (any input not starting with `AXFZ`): the bytes, as UTF-8 (lossily), are the file.
//! - **structured** (`AXFZ` then bytes for `Unstructured`): the tiny test checkpoint's
//!   config (`seeds/config_json/tiny-a.json`) with 1 to 4 fields set to hostile JSON values
//!   (0, -1, 2^32, 2^63, `u64::MAX`, 1e300, NaN-free extremes, wrong types, null, arrays such as
//!   an `mrope_section` whose sum wraps) or removed; deep fields are reachable this way, which
//!   byte mutations of JSON text rarely manage.
//!
//! Properties:
//! - Parsing fails only with `Json`, `InvalidConfig` or `Unsupported`.
//! - An accepted config satisfies every documented constraint, recomputed here with checked
//!   arithmetic: positive sizes, `num_key_value_heads` divides `num_attention_heads`, an even
//!   `head_dim`, `mrope_section` summing to `head_dim / 2`, a positive finite `rms_norm_eps`,
//!   rotary bases above 1, a vision head width that is a multiple of 4, a square position
//!   table, `out_hidden_size == hidden_size`, distinct DeepStack indexes below the depth, and
//!   the image and vision token ids inside the vocabulary. `validate` accepts it again.
//! - The sizes the model derives from an accepted config (`patch_dim`, heads × head width,
//!   merge group widths, embedding and MLP element counts) fit in `usize`.
//! - Nothing panics or aborts: sums and products of sizes are checked, and no allocation is
//!   sized by a config value (findings F7, F8, F12, fixed).

use arbitrary::{Result, Unstructured};
use serde_json::{Value, json};

use axpo_model_qwen3vl::{Config, ModelError};

/// The prefix that selects the structured form.
pub const STRUCTURED: &[u8] = b"AXFZ";

/// The base config of the structured form.
pub const BASE: &str = include_str!("../../seeds/config_json/tiny-a.json");

const TEXT_KEYS: [&str; 17] = [
    "vocab_size",
    "hidden_size",
    "intermediate_size",
    "num_hidden_layers",
    "num_attention_heads",
    "num_key_value_heads",
    "head_dim",
    "hidden_act",
    "rms_norm_eps",
    "rope_theta",
    "rope_scaling",
    "rope_parameters",
    "attention_bias",
    "tie_word_embeddings",
    "num_experts",
    "model_type",
    "mrope_section",
];

const VISION_KEYS: [&str; 15] = [
    "depth",
    "hidden_size",
    "intermediate_size",
    "num_heads",
    "patch_size",
    "temporal_patch_size",
    "spatial_merge_size",
    "in_channels",
    "in_chans",
    "out_hidden_size",
    "num_position_embeddings",
    "deepstack_visual_indexes",
    "hidden_act",
    "rope_theta",
    "rope_parameters",
];

const TOP_KEYS: [&str; 9] = [
    "model_type",
    "architectures",
    "text_config",
    "vision_config",
    "image_token_id",
    "video_token_id",
    "vision_start_token_id",
    "vision_end_token_id",
    "tie_word_embeddings",
];

fn hostile(u: &mut Unstructured<'_>) -> Result<Value> {
    Ok(match u.int_in_range(0u8..=40)? {
        0 => json!(0),
        1 => json!(1),
        2 => json!(2),
        3 => json!(3),
        4 => json!(4),
        5 => json!(8),
        6 => json!(16),
        7 => json!(64),
        8 => json!(1u64 << 31),
        9 => json!(1u64 << 32),
        10 => json!(1u64 << 53),
        11 => json!(1u64 << 63),
        12 => json!(u64::MAX),
        13 => json!(-1),
        14 => json!(0.5),
        15 => json!(1e-300),
        16 => json!(1e300),
        17 => json!(1e39),
        18 => json!(-0.0),
        19 => json!("silu"),
        20 => json!("gelu_pytorch_tanh"),
        21 => json!("default"),
        22 => json!("yarn"),
        23 => json!("qwen3_vl_moe"),
        24 => json!(""),
        25 => Value::Null,
        26 => json!(true),
        27 => json!([]),
        28 => json!([4, 2, 2]),
        29 => json!([8, 0, 0]),
        30 => json!([u64::MAX, 9, 0]),            // wraps to 8
        31 => json!([1u64 << 63, 1u64 << 63, 8]), // wraps to 8
        32 => json!([0, 1]),
        33 => json!([0, 0]),
        34 => json!({}),
        35 => json!({"rope_type": "default", "mrope_section": [4, 2, 2], "rope_theta": 100.0}),
        36 => json!(["Qwen3VLMoeForConditionalGeneration"]),
        37 => json!(u.int_in_range(0..=70_000u64)?),
        38 => json!(1u64 << u.int_in_range(0..=63u32)?),
        39 => json!(f64::from(u.arbitrary::<f32>()?).clamp(-1e300, 1e300)),
        _ => json!(u.arbitrary::<u64>()?),
    })
}

fn mutate(u: &mut Unstructured<'_>, v: &mut Value) -> Result<()> {
    let (obj, key): (&mut Value, &str) = match u.int_in_range(0u8..=2)? {
        0 => (&mut v["text_config"], u.choose(&TEXT_KEYS)?),
        1 => (&mut v["vision_config"], u.choose(&VISION_KEYS)?),
        _ => (v, u.choose(&TOP_KEYS)?),
    };
    let Value::Object(map) = obj else {
        return Ok(());
    };
    let (target, key) = if key == "mrope_section" {
        match map.get_mut("rope_scaling") {
            Some(Value::Object(r)) => (r, "mrope_section"),
            _ => return Ok(()),
        }
    } else {
        (map, key)
    };
    if u.ratio(1u8, 8)? {
        target.remove(key);
    } else {
        target.insert(key.to_owned(), hostile(u)?);
    }
    Ok(())
}

/// Runs one input.
pub fn run(data: &[u8]) {
    if let Some(rest) = data.strip_prefix(STRUCTURED) {
        let mut u = Unstructured::new(rest);
        let mut v: Value = serde_json::from_str(BASE).expect("the base config is JSON");
        for _ in 0..u.int_in_range(1..=4u8).unwrap_or(1) {
            if mutate(&mut u, &mut v).is_err() {
                break;
            }
        }
        check(&v.to_string());
    } else {
        check(&String::from_utf8_lossy(data));
    }
}

fn check(text: &str) {
    let cfg = match Config::from_json_str(text) {
        Ok(c) => c,
        Err(
            ModelError::Json { .. }
            | ModelError::InvalidConfig { .. }
            | ModelError::Unsupported { .. },
        ) => {
            return;
        }
        Err(e) => panic!("from_json_str: unexpected error {e:?}"),
    };
    cfg.validate()
        .unwrap_or_else(|e| panic!("an accepted config fails validate: {e:?}"));
    let t = &cfg.text;
    let v = &cfg.vision;
    for (name, x) in [
        ("vocab_size", t.vocab_size),
        ("hidden_size", t.hidden_size),
        ("intermediate_size", t.intermediate_size),
        ("num_attention_heads", t.num_attention_heads),
        ("num_key_value_heads", t.num_key_value_heads),
        ("head_dim", t.head_dim),
        ("vision depth", v.depth),
        ("vision hidden_size", v.hidden_size),
        ("vision intermediate_size", v.intermediate_size),
        ("vision num_heads", v.num_heads),
        ("patch_size", v.patch_size),
        ("temporal_patch_size", v.temporal_patch_size),
        ("spatial_merge_size", v.spatial_merge_size),
        ("in_channels", v.in_channels),
        ("out_hidden_size", v.out_hidden_size),
        ("num_position_embeddings", v.num_position_embeddings),
    ] {
        assert!(x > 0, "accepted config with {name} = 0");
    }
    assert!(t.num_attention_heads.is_multiple_of(t.num_key_value_heads));
    assert!(t.head_dim.is_multiple_of(2));
    let sum = t
        .mrope_section
        .iter()
        .try_fold(0usize, |a, &x| a.checked_add(x));
    assert_eq!(
        sum,
        Some(t.head_dim / 2),
        "mrope_section {:?} accepted",
        t.mrope_section
    );
    assert!(t.rms_norm_eps.is_finite() && t.rms_norm_eps > 0.0);
    assert!(t.rope_theta.is_finite() && t.rope_theta > 1.0);
    assert!(v.rope_theta.is_finite() && v.rope_theta > 1.0);
    assert!(v.hidden_size.is_multiple_of(v.num_heads));
    assert!((v.hidden_size / v.num_heads).is_multiple_of(4));
    assert_eq!(v.head_dim(), v.hidden_size / v.num_heads);
    assert_eq!(v.pos_side() * v.pos_side(), v.num_position_embeddings);
    assert_eq!(v.out_hidden_size, t.hidden_size);
    let mut seen = std::collections::BTreeSet::new();
    for &i in &v.deepstack_visual_indexes {
        assert!(i < v.depth, "DeepStack index {i} >= depth {}", v.depth);
        assert!(seen.insert(i), "repeated DeepStack index {i}");
    }
    for id in [
        cfg.image_token_id,
        cfg.vision_start_token_id,
        cfg.vision_end_token_id,
    ] {
        assert!(
            (id as usize) < t.vocab_size,
            "token id {id} outside the vocabulary"
        );
    }
    // Derived sizes.
    let m = |a: usize, b: usize| a.checked_mul(b);
    let derived = [
        (
            "patch_dim",
            m(v.in_channels, v.temporal_patch_size)
                .and_then(|x| m(x, v.patch_size))
                .and_then(|x| m(x, v.patch_size)),
        ),
        ("heads x head_dim", m(t.num_attention_heads, t.head_dim)),
        ("kv heads x head_dim", m(t.num_key_value_heads, t.head_dim)),
        (
            "merge group width",
            m(v.spatial_merge_size, v.spatial_merge_size).and_then(|g| m(g, v.hidden_size)),
        ),
        ("embedding elements", m(t.vocab_size, t.hidden_size)),
        ("MLP elements", m(t.intermediate_size, t.hidden_size)),
        ("vision MLP elements", m(v.intermediate_size, v.hidden_size)),
        (
            "position table elements",
            m(v.num_position_embeddings, v.hidden_size),
        ),
    ];
    for (what, x) in derived {
        assert!(x.is_some(), "{what} overflows usize in an accepted config");
    }
    // `patch_dim` itself must not panic now.
    let _ = v.patch_dim();
}

//! The model crate's safetensors loader (`SafetensorsStore`) on arbitrary bytes.
//!
//! The loader reads files, so each input is written to a per-process temporary directory.
//!
//! Input, two forms:
//! - **raw** (any input not starting with `AXFZ`): the bytes are `model.safetensors`, opened
//!   with `open_files` and `open_dir`.
//! - **structured** (`AXFZ` then bytes for `Unstructured`): one or two shards built from a
//!   header of up to 5 tensors (names that collide or look like paths, every safetensors dtype
//!   and an unknown one, shapes with zero or huge dimensions, data offsets that are consistent
//!   or off by a little or a lot, a `__metadata__` entry), a header length that is right or not,
//!   data that is complete, short or long; and sometimes a `model.safetensors.index.json` whose
//!   weight map is right, names the wrong shard, names tensors no shard holds, or names shards
//!   like `../x`, `a/b` or `.hidden`. Opened with `open_dir`.
//!
//! Properties:
//! - Opening fails only with `Safetensors`, `Json` (bad index) or `Io` (a shard the index names
//!   does not exist); a single file opens iff the `safetensors` crate itself accepts it.
//! - An opened store reads back exactly what its files' headers say: every tensor's shape
//!   matches its header, its element count is the product of the shape, its byte length is
//!   dtype size × shape, and every value equals the file's bytes (f32, f16, bf16 as stored or
//!   widened to f32; integers widened to i64; u8). Reading a tensor with a dtype the call does
//!   not support gives `TensorDType`, with a wrong expected shape `TensorShape`, an unknown
//!   name `MissingTensor`.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use arbitrary::{Result, Unstructured};
use half::{bf16, f16};
use serde_json::{Map, Value, json};

use axpo_model_qwen3vl::weights::HostTensor;
use axpo_model_qwen3vl::{ModelError, SafetensorsStore, WeightDType};

/// The prefix that selects the structured form.
pub const STRUCTURED: &[u8] = b"AXFZ";

const DTYPES: [(&str, usize); 22] = [
    ("F32", 32),
    ("F16", 16),
    ("BF16", 16),
    ("F64", 64),
    ("I64", 64),
    ("U64", 64),
    ("I32", 32),
    ("U32", 32),
    ("I16", 16),
    ("U16", 16),
    ("I8", 8),
    ("U8", 8),
    ("BOOL", 8),
    ("F8_E4M3", 8),
    ("F8_E5M2", 8),
    ("F8_E8M0", 8),
    ("C64", 64),
    ("F4", 4),
    ("F6_E2M3", 6),
    ("F6_E3M2", 6),
    ("F8_E4M3FNUZ", 8),
    ("X9", 8),
];

const NAMES: [&str; 8] = [
    "a",
    "b",
    "model.language_model.embed_tokens.weight",
    "lm_head.weight",
    "",
    "../a",
    "__metadata__",
    "ü",
];

/// The scratch directory of this process: in `/dev/shm` when it exists (memory, fast), else in
/// the temporary directory. Each run removes its files when it is done, so only the empty
/// directory is left behind.
fn scratch() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let shm = Path::new("/dev/shm");
        let base = if shm.is_dir() {
            shm.to_path_buf()
        } else {
            std::env::temp_dir()
        };
        let d = base.join(format!("axpo-fuzz-safetensors-{}", std::process::id()));
        fs::create_dir_all(&d).expect("create the scratch directory");
        d
    })
}

const FILES: [&str; 4] = [
    "model.safetensors",
    "model.safetensors.index.json",
    "model-00001-of-00002.safetensors",
    "model-00002-of-00002.safetensors",
];

fn clear(dir: &Path) {
    for f in FILES {
        let _ = fs::remove_file(dir.join(f));
    }
}

fn fresh_dir() -> PathBuf {
    let d = scratch().to_path_buf();
    clear(&d);
    d
}

/// One shard: its bytes, and whether it was built consistent.
fn shard(u: &mut Unstructured<'_>, names: &mut Vec<String>) -> Result<Vec<u8>> {
    let mut header = Map::new();
    let mut offset = 0usize;
    let mut data = Vec::new();
    for _ in 0..u.int_in_range(0..=5)? {
        let name = if u.ratio(1u8, 4)? {
            format!("t{}", u.int_in_range(0..=9u8)?)
        } else {
            (*u.choose(&NAMES)?).to_owned()
        };
        let (dtype, bits) = *u.choose(&DTYPES)?;
        let rank = u.int_in_range(0..=3)?;
        let mut shape = Vec::with_capacity(rank);
        for _ in 0..rank {
            shape.push(match u.int_in_range(0u8..=15)? {
                0 => json!(u.arbitrary::<u64>()?),
                1 => json!(1u64 << 32),
                2 => json!(-1),
                _ => json!(u.int_in_range(0..=4u64)?),
            });
        }
        let numel: u64 = shape
            .iter()
            .map(|d| d.as_u64().unwrap_or(1))
            .fold(1u64, u64::saturating_mul);
        let bytes = (numel.saturating_mul(bits as u64) / 8).min(64) as usize;
        let (mut start, mut end) = (offset, offset + bytes);
        match u.int_in_range(0u8..=15)? {
            0 => end += 1,
            1 => start += 1,
            2 => std::mem::swap(&mut start, &mut end),
            3 => end = usize::MAX,
            _ => {}
        }
        offset = offset.max(end.min(offset + 64));
        header.insert(
            name.clone(),
            json!({"dtype": dtype, "shape": shape, "data_offsets": [start, end]}),
        );
        names.push(name);
        for _ in 0..bytes {
            data.push(u.arbitrary::<u8>()?);
        }
    }
    if u.ratio(1u8, 4)? {
        let meta = if u.arbitrary()? {
            json!({"format": "pt"})
        } else {
            json!({"format": 1})
        };
        header.insert("__metadata__".into(), meta);
    }
    let mut text = Value::Object(header).to_string();
    if u.arbitrary()? {
        while !text.len().is_multiple_of(8) {
            text.push(' ');
        }
    }
    let mut n = text.len() as u64;
    match u.int_in_range(0u8..=15)? {
        0 => n += 1,
        1 => n = n.saturating_sub(1),
        2 => n = u.arbitrary()?,
        _ => {}
    }
    let mut out = n.to_le_bytes().to_vec();
    out.extend_from_slice(text.as_bytes());
    out.extend_from_slice(&data);
    match u.int_in_range(0u8..=15)? {
        0 => {
            out.pop();
        }
        1 => out.push(0),
        _ => {}
    }
    Ok(out)
}

/// Runs one input.
pub fn run(data: &[u8]) {
    if let Some(rest) = data.strip_prefix(STRUCTURED) {
        let _ = structured(&mut Unstructured::new(rest));
    } else {
        raw(data);
    }
    clear(scratch());
}

fn raw(bytes: &[u8]) {
    let dir = fresh_dir();
    let path = dir.join("model.safetensors");
    fs::write(&path, bytes).expect("write the input");
    let reference = safetensors::SafeTensors::deserialize(bytes);
    let files = SafetensorsStore::open_files(std::slice::from_ref(&path));
    let by_dir = SafetensorsStore::open_dir(&dir);
    assert_eq!(
        files.is_ok(),
        by_dir.is_ok(),
        "open_files and open_dir disagree"
    );
    check_single(bytes, &reference, files, &path);
}

fn check_single(
    bytes: &[u8],
    reference: &std::result::Result<safetensors::SafeTensors<'_>, safetensors::SafeTensorError>,
    opened: std::result::Result<SafetensorsStore, ModelError>,
    path: &Path,
) {
    match opened {
        Ok(store) => {
            assert!(
                reference.is_ok(),
                "the store opened a file the safetensors crate refuses: {reference:?}"
            );
            check_store(&store, &[(path.to_path_buf(), bytes.to_vec())]);
        }
        Err(ModelError::Safetensors { reason, .. }) => {
            // Sub-byte tensors (F4, F6) included (finding F9, fixed).
            assert!(
                reference.is_err(),
                "the store refused a valid file: {reason}"
            );
        }
        Err(e) => panic!("opening one file: unexpected error {e:?}"),
    }
}

fn structured(u: &mut Unstructured<'_>) -> Result<()> {
    let dir = fresh_dir();
    let mut names0 = Vec::new();
    let first = shard(u, &mut names0)?;
    if !u.ratio(1u8, 3)? {
        let path = dir.join("model.safetensors");
        fs::write(&path, &first).expect("write");
        let reference = safetensors::SafeTensors::deserialize(&first);
        let opened = SafetensorsStore::open_dir(&dir);
        check_single(&first, &reference, opened, &path);
        return Ok(());
    }
    // Sharded, with an index.
    let mut names1 = Vec::new();
    let second = shard(u, &mut names1)?;
    let files = [
        "model-00001-of-00002.safetensors",
        "model-00002-of-00002.safetensors",
    ];
    fs::write(dir.join(files[0]), &first).expect("write");
    fs::write(dir.join(files[1]), &second).expect("write");
    let mut map = Map::new();
    for (names, file) in [(&names0, files[0]), (&names1, files[1])] {
        for n in names {
            let f = match u.int_in_range(0u8..=15)? {
                0 => files[0],
                1 => "missing.safetensors",
                2 => "../model-00001-of-00002.safetensors",
                3 => "sub/x.safetensors",
                4 => ".hidden",
                _ => file,
            };
            map.insert(n.clone(), json!(f));
        }
    }
    if u.ratio(1u8, 4)? {
        map.insert("not.in.any.shard".into(), json!(files[0]));
    }
    let index = match u.int_in_range(0u8..=15)? {
        0 => "{".to_owned(),
        1 => json!({"weight_map": 3}).to_string(),
        2 => json!({"metadata": {}}).to_string(),
        _ => json!({"metadata": {"total_size": 0}, "weight_map": map}).to_string(),
    };
    fs::write(dir.join("model.safetensors.index.json"), index).expect("write");
    match SafetensorsStore::open_dir(&dir) {
        Ok(store) => {
            let shards = vec![(dir.join(files[0]), first), (dir.join(files[1]), second)];
            // Only the shards the index names are opened.
            let named: Vec<(PathBuf, Vec<u8>)> = shards
                .into_iter()
                .filter(|(p, _)| {
                    map.values()
                        .any(|v| dir.join(v.as_str().unwrap_or("")) == *p)
                })
                .collect();
            check_store(&store, &named);
            for (name, file) in &map {
                assert!(
                    store.contains(name),
                    "the index lists {name} but the store lacks it"
                );
                let _ = file;
            }
        }
        Err(ModelError::Safetensors { .. } | ModelError::Json { .. } | ModelError::Io { .. }) => {}
        Err(e) => panic!("open_dir: unexpected error {e:?}"),
    }
    Ok(())
}

/// Parses a file's header the way the format defines it.
fn header(bytes: &[u8]) -> (usize, Map<String, Value>) {
    let n = u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes")) as usize;
    let text = std::str::from_utf8(&bytes[8..8 + n]).expect("an opened file has a UTF-8 header");
    let v: Value = serde_json::from_str(text).expect("an opened file has a JSON header");
    let Value::Object(map) = v else {
        panic!("an opened file's header is not an object")
    };
    (8 + n, map)
}

fn check_store(store: &SafetensorsStore, files: &[(PathBuf, Vec<u8>)]) {
    let mut expected = 0;
    for (_, bytes) in files {
        let (data_start, map) = header(bytes);
        for (name, info) in &map {
            if name == "__metadata__" {
                continue;
            }
            expected += 1;
            check_tensor(store, name, info, &bytes[data_start..]);
        }
    }
    assert_eq!(
        store.names().count(),
        expected,
        "the store holds other tensors"
    );
    assert!(store.names().is_sorted(), "names are not sorted");
    assert!(matches!(
        store.shape("no such tensor \u{0}"),
        Err(ModelError::MissingTensor { .. })
    ));
}

fn check_tensor(store: &SafetensorsStore, name: &str, info: &Value, data: &[u8]) {
    let shape: Vec<usize> = info["shape"]
        .as_array()
        .expect("shape")
        .iter()
        .map(|d| d.as_u64().expect("dimension") as usize)
        .collect();
    let dtype = info["dtype"].as_str().expect("dtype");
    let offs = info["data_offsets"].as_array().expect("offsets");
    let (s, e) = (
        offs[0].as_u64().expect("start") as usize,
        offs[1].as_u64().expect("end") as usize,
    );
    let raw = &data[s..e];
    assert!(store.contains(name));
    assert_eq!(
        store.shape(name).expect("shape"),
        &shape[..],
        "{name}: shape"
    );
    let numel = shape
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .expect("an accepted shape has a representable element count");
    let size = DTYPES
        .iter()
        .find(|(d, _)| *d == dtype)
        .map(|(_, b)| *b)
        .expect("a known dtype");
    assert_eq!(
        raw.len() * 8,
        numel * size,
        "{name}: byte length is not dtype x shape"
    );
    let wrong: Vec<usize> = shape.iter().map(|d| d.wrapping_add(1)).chain([1]).collect();
    assert!(
        matches!(
            store.float(name, Some(&wrong), WeightDType::F32),
            Err(ModelError::TensorShape { .. })
        ),
        "{name}: a wrong expected shape was not refused"
    );
    let halves = || {
        raw.chunks_exact(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
    };
    let bits32 = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    let same_f32 = |got: &[f32], want: &[f32]| {
        got.len() == want.len()
            && got
                .iter()
                .zip(want)
                .all(|(a, b)| a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan()))
    };
    match dtype {
        "F32" | "F16" | "BF16" => {
            let want: Vec<f32> = match dtype {
                "F32" => raw
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .collect(),
                "F16" => halves().map(|h| f16::from_bits(h).to_f32()).collect(),
                _ => halves().map(|h| bf16::from_bits(h).to_f32()).collect(),
            };
            assert_eq!(want.len(), numel);
            let wide = store
                .float(name, Some(&shape), WeightDType::F32)
                .expect("float");
            let HostTensor::F32(got) = &wide else {
                panic!("{name}: widening did not give f32")
            };
            assert!(same_f32(got, &want), "{name}: values differ from the file");
            let (sh, v) = store.f32_tensor(name).expect("f32_tensor");
            assert_eq!(sh, shape);
            assert!(same_f32(&v, &want));
            let stored = store
                .float(name, None, WeightDType::AsStored)
                .expect("float");
            match (dtype, &stored) {
                ("F32", HostTensor::F32(v)) => assert_eq!(bits32(v), bits32(&want)),
                ("F16", HostTensor::F16(v)) => {
                    assert!(
                        v.iter().map(|x| x.to_bits()).eq(halves()),
                        "{name}: f16 bits"
                    )
                }
                ("BF16", HostTensor::Bf16(v)) => {
                    assert!(
                        v.iter().map(|x| x.to_bits()).eq(halves()),
                        "{name}: bf16 bits"
                    )
                }
                _ => panic!("{name}: kept as stored in another type"),
            }
            assert!(matches!(
                store.int_tensor(name),
                Err(ModelError::TensorDType { .. })
            ));
        }
        "I64" | "I32" | "U32" | "I16" | "U8" | "I8" => {
            let want: Vec<i64> = match dtype {
                "I64" => raw
                    .chunks_exact(8)
                    .map(|c| i64::from_le_bytes(c.try_into().expect("8")))
                    .collect(),
                "I32" => raw
                    .chunks_exact(4)
                    .map(|c| i64::from(i32::from_le_bytes(c.try_into().expect("4"))))
                    .collect(),
                "U32" => raw
                    .chunks_exact(4)
                    .map(|c| i64::from(u32::from_le_bytes(c.try_into().expect("4"))))
                    .collect(),
                "I16" => halves().map(|h| i64::from(h as i16)).collect(),
                "U8" => raw.iter().map(|&b| i64::from(b)).collect(),
                _ => raw.iter().map(|&b| i64::from(b as i8)).collect(),
            };
            assert_eq!(want.len(), numel);
            let (sh, got) = store.int_tensor(name).expect("int_tensor");
            assert_eq!(sh, shape);
            assert_eq!(got, want, "{name}: integers differ from the file");
            assert!(matches!(
                store.float(name, None, WeightDType::F32),
                Err(ModelError::TensorDType { .. })
            ));
            if dtype == "U8" {
                let (sh, b) = store.u8_tensor(name).expect("u8_tensor");
                assert_eq!(sh, shape);
                assert_eq!(b, raw);
            } else {
                assert!(matches!(
                    store.u8_tensor(name),
                    Err(ModelError::TensorDType { .. })
                ));
            }
        }
        _ => {
            assert!(
                matches!(
                    store.float(name, None, WeightDType::F32),
                    Err(ModelError::TensorDType { .. })
                ),
                "{name}: {dtype} read as float"
            );
            assert!(
                matches!(store.int_tensor(name), Err(ModelError::TensorDType { .. })),
                "{name}: {dtype} read as integers"
            );
        }
    }
}

//! The WGSL sources, one file per op family, and the specialisation prelude that gives each
//! float input its element type.
//!
//! WGSL has no bf16 and no generics. Every float input is therefore bound as raw 32-bit words
//! (`array<u32>`) and read through a generated accessor `NAME_at(i) -> f32`: f32 words are
//! bit-cast, bf16 halves are shifted into the high half of an f32, f16 halves are widened by
//! bit manipulation (so f16 needs neither `enable f16`, nor the SHADER_F16 feature, nor the
//! capability naga demands for `unpack2x16float`). The prelude is part of the pipeline-cache key.

use core::fmt::Write as _;

use axpo_core::backend::DType;

/// The op families: one WGSL file each, named like the `Backend` op families and like the CUDA
/// backend's kernel files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Family {
    /// Row copies and conversions.
    Buffer,
    /// Tiled matrix products (and the fused logit-gradient epilogue).
    Matmul,
    /// Elementwise arithmetic and activations.
    Elementwise,
    /// RMSNorm, LayerNorm, fused q/k norm + rotary.
    Norm,
    /// Rotary embeddings.
    Rotary,
    /// Masked softmax and fused attention.
    Attention,
    /// Row gathers and scatters.
    Embedding,
    /// Online-softmax statistics and their backward.
    Logprob,
}

/// Code every module starts with.
pub const COMMON: &str = include_str!("../shaders/common.wgsl");

impl Family {
    /// Every family.
    pub const ALL: [Family; 8] = [
        Family::Buffer,
        Family::Matmul,
        Family::Elementwise,
        Family::Norm,
        Family::Rotary,
        Family::Attention,
        Family::Embedding,
        Family::Logprob,
    ];

    /// The family's file name (without `.wgsl`).
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Self::Buffer => "buffer",
            Self::Matmul => "matmul",
            Self::Elementwise => "elementwise",
            Self::Norm => "norm",
            Self::Rotary => "rotary",
            Self::Attention => "attention",
            Self::Embedding => "embedding",
            Self::Logprob => "logprob",
        }
    }

    /// The WGSL source of the family.
    #[must_use]
    pub const fn source(self) -> &'static str {
        match self {
            Self::Buffer => include_str!("../shaders/buffer.wgsl"),
            Self::Matmul => include_str!("../shaders/matmul.wgsl"),
            Self::Elementwise => include_str!("../shaders/elementwise.wgsl"),
            Self::Norm => include_str!("../shaders/norm.wgsl"),
            Self::Rotary => include_str!("../shaders/rotary.wgsl"),
            Self::Attention => include_str!("../shaders/attention.wgsl"),
            Self::Embedding => include_str!("../shaders/embedding.wgsl"),
            Self::Logprob => include_str!("../shaders/logprob.wgsl"),
        }
    }

    /// The float inputs the family's file declares as `array<u32>` and reads through
    /// `NAME_at`.
    #[must_use]
    pub const fn float_inputs(self) -> &'static [&'static str] {
        match self {
            Self::Buffer => &["src"],
            Self::Matmul => &["a", "b"],
            Self::Elementwise => &["x", "y"],
            Self::Norm => &["x", "w", "bias", "cs", "sn"],
            Self::Rotary => &["cs", "sn"],
            Self::Attention => &["q", "k", "v"],
            Self::Embedding => &["table", "src"],
            Self::Logprob => &["z"],
        }
    }
}

/// The accessor of one float input.
fn accessor(out: &mut String, name: &str, dtype: DType) {
    let body = match dtype {
        DType::Bf16 => format!(
            "let w = {name}[i >> 1u]; return bitcast<f32>(select(w << 16u, w & 0xffff0000u, (i & 1u) == 1u));"
        ),
        DType::F16 => {
            format!("return f16_to_f32(({name}[i >> 1u] >> (16u * (i & 1u))) & 0xffffu);")
        }
        _ => format!("return bitcast<f32>({name}[i]);"),
    };
    let _ = writeln!(out, "fn {name}_at(i: u32) -> f32 {{ {body} }}");
}

/// The full source of `family` with the float inputs typed as `dtypes` (inputs not named are
/// f32).
#[must_use]
pub fn specialise(family: Family, dtypes: &[(&str, DType)]) -> String {
    let mut out = String::from(COMMON);
    for name in family.float_inputs() {
        let dtype = dtypes
            .iter()
            .find(|(n, _)| n == name)
            .map_or(DType::F32, |(_, d)| *d);
        accessor(&mut out, name, dtype);
    }
    out.push_str(family.source());
    out
}

/// A short tag of a specialisation, for the cache key and labels: `"a=Bf16,b=F32"`.
#[must_use]
pub fn tag(dtypes: &[(&str, DType)]) -> String {
    let mut s = String::new();
    for (n, d) in dtypes {
        let _ = write!(s, "{n}={d:?},");
    }
    s
}

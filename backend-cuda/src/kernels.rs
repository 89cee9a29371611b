//! The kernel sources: one `.cu` file per op family, embedded at build time, each compiled by
//! NVRTC with the common header prepended, once per device architecture and process.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use crate::error::CudaError;

/// The common header prepended to every family.
pub const COMMON_HEADER: &str = include_str!("../kernels/common.cuh");

/// A kernel family: one `.cu` file, compiled and loaded as one module.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Family {
    /// Row copies, conversions, fills.
    Buffer,
    /// Elementwise arithmetic and activations.
    Elementwise,
    /// RMSNorm, LayerNorm, fused per-head RMSNorm + rotary.
    Norm,
    /// Rotary embeddings.
    Rotary,
    /// Masked softmax and the fused attention kernels.
    Attention,
    /// Row gathers and scatters.
    Embedding,
    /// Online-softmax statistics, their backward, the fused linear-objective row kernel.
    Logprob,
    /// The objective's per-token loss and gradient.
    Objective,
}

impl Family {
    /// Every family.
    pub const ALL: &'static [Family] = &[
        Family::Buffer,
        Family::Elementwise,
        Family::Norm,
        Family::Rotary,
        Family::Attention,
        Family::Embedding,
        Family::Logprob,
        Family::Objective,
    ];

    /// The file name without `.cu` (the same names as the WGSL shader families).
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Self::Buffer => "buffer",
            Self::Elementwise => "elementwise",
            Self::Norm => "norm",
            Self::Rotary => "rotary",
            Self::Attention => "attention",
            Self::Embedding => "embedding",
            Self::Logprob => "logprob",
            Self::Objective => "objective",
        }
    }

    /// The family's own source (without the common header).
    #[must_use]
    pub const fn source(self) -> &'static str {
        match self {
            Self::Buffer => include_str!("../kernels/buffer.cu"),
            Self::Elementwise => include_str!("../kernels/elementwise.cu"),
            Self::Norm => include_str!("../kernels/norm.cu"),
            Self::Rotary => include_str!("../kernels/rotary.cu"),
            Self::Attention => include_str!("../kernels/attention.cu"),
            Self::Embedding => include_str!("../kernels/embedding.cu"),
            Self::Logprob => include_str!("../kernels/logprob.cu"),
            Self::Objective => include_str!("../kernels/objective.cu"),
        }
    }

    /// The complete translation unit handed to NVRTC: the common header, then the family,
    /// with `#line` markers so that compile logs name the right file and line.
    #[must_use]
    pub fn translation_unit(self) -> String {
        format!(
            "#line 1 \"common.cuh\"\n{COMMON_HEADER}\n#line 1 \"{}.cu\"\n{}",
            self.name(),
            self.source()
        )
    }

    /// The `extern "C"` kernels the family defines (parsed from its source), in order.
    #[must_use]
    pub fn declared_kernels(self) -> Vec<String> {
        declared_kernels(self.source())
    }

    /// The family that defines a kernel, by name.
    #[must_use]
    pub fn of_kernel(name: &str) -> Option<Family> {
        Family::ALL
            .iter()
            .copied()
            .find(|f| f.declared_kernels().iter().any(|k| k == name))
    }
}

/// Names of the `extern "C" __global__` functions of a source, expanding the family-local
/// `#define NAME(...)` instantiation macros that the sources use (`LOGPROB_T(bf16, bf16)`...).
#[must_use]
pub fn declared_kernels(source: &str) -> Vec<String> {
    let mut out = Vec::new();
    // Macros: name -> (parameter names, body).
    let mut macros: Vec<(String, Vec<String>, String)> = Vec::new();
    let lines: Vec<&str> = source.lines().collect();
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i].trim_start();
        if let Some(rest) = line.strip_prefix("#define ")
            && let Some(open) = rest.find('(')
            && !rest[..open].contains(' ')
        {
            let name = rest[..open].to_string();
            let close = rest.find(')').unwrap_or(rest.len());
            let params = rest[open + 1..close.max(open + 1)]
                .split(',')
                .map(|p| p.trim().to_string())
                .filter(|p| !p.is_empty())
                .collect::<Vec<_>>();
            let mut body = String::from(&rest[close.min(rest.len())..]);
            while body.trim_end().ends_with('\\') && i + 1 < lines.len() {
                i += 1;
                body.push('\n');
                body.push_str(lines[i]);
            }
            macros.push((name, params, body));
        } else {
            collect_globals(lines[i], &mut out);
            // Macro invocations at the start of a line.
            for (name, params, body) in &macros {
                if let Some(args) = line
                    .strip_prefix(name.as_str())
                    .and_then(|r| r.strip_prefix('('))
                    .and_then(|r| r.split(')').next())
                {
                    let args: Vec<&str> = args.split(',').map(str::trim).collect();
                    if args.len() == params.len() {
                        let mut text = body.clone();
                        for (p, a) in params.iter().zip(&args) {
                            text = text.replace(&format!("##{p}##"), a);
                            text = text.replace(&format!("{p}##"), a);
                            text = text.replace(&format!("##{p}"), a);
                        }
                        for l in text.lines() {
                            collect_globals(l, &mut out);
                        }
                    }
                }
            }
        }
        i += 1;
    }
    out
}

fn collect_globals(line: &str, out: &mut Vec<String>) {
    let mut rest = line;
    while let Some(pos) = rest.find("__global__") {
        let after = &rest[pos + "__global__".len()..];
        // Drop a `__launch_bounds__(...)` qualifier between the return type and the name.
        let cleaned;
        let decl_src = if let Some(lb) = after.find("__launch_bounds__(") {
            let close = after[lb..].find(')').map_or(after.len(), |c| lb + c + 1);
            cleaned = format!("{}{}", &after[..lb], &after[close..]);
            cleaned.as_str()
        } else {
            after
        };
        if let Some(paren) = decl_src.find('(') {
            let after = decl_src;
            let decl = after[..paren].trim();
            if let Some(name) = decl.split_whitespace().last()
                && !name.is_empty()
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                && rest[..pos].contains("extern \"C\"")
            {
                out.push(name.to_string());
            }
        }
        rest = after;
    }
}

/// NVRTC options for a real architecture `sm_<arch>` (e.g. 90 for Hopper): CUBIN output, so
/// the driver loads machine code without a PTX JIT (which would need a driver at least as new
/// as NVRTC).
#[must_use]
pub fn compile_options(arch: u32) -> Vec<String> {
    vec![
        format!("--gpu-architecture=sm_{arch}"),
        "--std=c++17".to_string(),
        "--fmad=true".to_string(),
        "--device-as-default-execution-space".to_string(),
    ]
}

/// What NVRTC produced for one family.
#[derive(Debug, Clone)]
pub struct Compiled {
    /// The CUBIN image.
    pub cubin: Vec<u8>,
    /// The compile log (empty when the compile was clean).
    pub log: String,
}

type ImageCache = Mutex<HashMap<(Family, u32), Arc<Compiled>>>;

fn image_cache() -> &'static ImageCache {
    static CACHE: OnceLock<ImageCache> = OnceLock::new();
    CACHE.get_or_init(|| Mutex::new(HashMap::new()))
}

/// Compiles a family for `sm_<arch>`, or returns the image compiled earlier in this process.
///
/// # Errors
/// [`CudaError::LibraryMissing`] without libnvrtc, [`CudaError::Nvrtc`] with the log when the
/// source does not compile.
pub fn compile_family(family: Family, arch: u32) -> Result<Arc<Compiled>, CudaError> {
    {
        let cache = image_cache().lock().map_err(|_| CudaError::Poisoned)?;
        if let Some(c) = cache.get(&(family, arch)) {
            return Ok(Arc::clone(c));
        }
    }
    let compiled = Arc::new(crate::launch::nvrtc_compile(
        family.name(),
        &family.translation_unit(),
        &compile_options(arch),
    )?);
    let mut cache = image_cache().lock().map_err(|_| CudaError::Poisoned)?;
    Ok(Arc::clone(cache.entry((family, arch)).or_insert(compiled)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_family_declares_kernels_and_names_are_unique() {
        let mut all = Vec::new();
        for f in Family::ALL {
            let k = f.declared_kernels();
            assert!(!k.is_empty(), "{} declares no kernel", f.name());
            all.extend(k);
        }
        let n = all.len();
        all.sort();
        all.dedup();
        assert_eq!(all.len(), n, "kernel names must be unique across families");
    }

    #[test]
    fn macro_instantiations_are_expanded() {
        let k = Family::Logprob.declared_kernels();
        for name in [
            "stats_fold_bf16",
            "token_stats_f32",
            "stats_backward_bf16_f32",
            "head_objective_f16_f16",
            "stats_finish",
        ] {
            assert!(k.iter().any(|x| x == name), "{name} missing from {k:?}");
        }
        let a = Family::Attention.declared_kernels();
        for name in [
            "attn_mma_bf16_128",
            "attn_core_256",
            "attn_decode_128",
            "masked_softmax",
        ] {
            assert!(a.iter().any(|x| x == name), "{name} missing from {a:?}");
        }
        assert_eq!(Family::of_kernel("copy_rows"), Some(Family::Buffer));
        assert_eq!(Family::of_kernel("nope"), None);
    }

    #[test]
    fn translation_unit_starts_with_the_header() {
        let tu = Family::Norm.translation_unit();
        assert!(tu.starts_with("#line 1 \"common.cuh\""));
        assert!(tu.contains("#line 1 \"norm.cu\""));
        assert!(tu.contains("struct Online"));
    }

    #[test]
    fn options_target_a_real_architecture() {
        let o = compile_options(90);
        assert!(o.iter().any(|x| x == "--gpu-architecture=sm_90"));
    }
}

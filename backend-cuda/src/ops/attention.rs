//! Masked softmax and the fused attention: split-KV decoding for a few queries against a long
//! KV cache, tensor-core flash attention for bf16/f16, the exact CUDA-core kernel otherwise.

use axpo_core::backend::{
    AttentionMask, AttentionOps, AttentionSpec, BufferOps, DType, DeviceBuffer, MatRef,
    check_attention, check_mask,
};
use axpo_core::{Error, Result};

use crate::buffer::CudaBuffer;
use crate::device::{Cuda, Precision};
use crate::launch::{AttnArgs, MaskArg};
use crate::plan;

/// Which kernel serves an attention call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AttnPath {
    /// Split-KV decoding (exact f32 arithmetic).
    Decode,
    /// Tensor cores on the inputs as they are (bf16 or f16).
    Mma,
    /// Tensor cores after rounding f32 inputs to bf16 ([`Precision::Bf16`]).
    MmaRounded,
    /// The exact CUDA-core kernel.
    Core,
    /// Per-head matmul + masked softmax (head_dim above 256).
    Composite,
}

/// Chooses the kernel for a call (pure; unit-tested).
#[must_use]
pub(crate) fn choose_path(
    q: DType,
    k: DType,
    v: DType,
    q_rows: usize,
    kv_rows: usize,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
    segments: bool,
    precision: Precision,
) -> AttnPath {
    let group = heads / kv_heads.max(1);
    let core = plan::core_head_dim(head_dim);
    let gmax = if head_dim <= 128 { 8 } else { 4 };
    if !segments && plan::use_decode(q_rows, kv_rows) && core.is_some() && group <= gmax {
        return AttnPath::Decode;
    }
    let mma = plan::mma_head_dim(head_dim).is_some();
    if mma && q == k && k == v && matches!(q, DType::Bf16 | DType::F16) {
        return AttnPath::Mma;
    }
    if mma && precision == Precision::Bf16 {
        return AttnPath::MmaRounded;
    }
    if core.is_some() {
        AttnPath::Core
    } else {
        AttnPath::Composite
    }
}

impl Cuda {
    fn mask_arg(&self, mask: AttentionMask<'_>) -> Result<(MaskArg, Option<CudaBuffer>)> {
        Ok(match mask {
            AttentionMask::Causal { past } => (
                MaskArg {
                    kind: 1,
                    past: plan::u32_of(past, "causal past")?,
                    bounds: None,
                    nb: 0,
                },
                None,
            ),
            AttentionMask::Segments(bounds) => {
                let b: Vec<u32> = bounds
                    .iter()
                    .map(|&x| plan::u32_of(x, "segment bound"))
                    .collect::<Result<_>>()?;
                let buf = self.upload_u32(&b)?;
                (
                    MaskArg {
                        kind: 2,
                        past: 0,
                        bounds: Some(buf.dev(self, 0)?),
                        nb: plan::u32_of(b.len(), "segment count")?,
                    },
                    Some(buf),
                )
            }
            _ => (
                MaskArg {
                    kind: 0,
                    past: 0,
                    bounds: None,
                    nb: 0,
                },
                None,
            ),
        })
    }

    fn dense_bf16(&self, x: &MatRef<'_, CudaBuffer>) -> Result<CudaBuffer> {
        let out = self.zeros(DType::Bf16, x.rows() * x.cols())?;
        self.k_copy_rows(
            CudaBuffer::dev_view(x, self)?,
            x.row_stride(),
            out.dev(self, 0)?,
            x.cols(),
            x.rows(),
            x.cols(),
        )?;
        Ok(out)
    }

    fn attention_composite(
        &self,
        q: MatRef<'_, CudaBuffer>,
        k: MatRef<'_, CudaBuffer>,
        v: MatRef<'_, CudaBuffer>,
        spec: AttentionSpec<'_>,
        out: &mut CudaBuffer,
    ) -> Result<()> {
        axpo_core::backend::attention_by_matmul(self, q, k, v, spec, out)
    }
}

impl AttentionOps for Cuda {
    fn masked_softmax(
        &self,
        scores: &mut CudaBuffer,
        rows: usize,
        cols: usize,
        mask: AttentionMask<'_>,
        scale: f32,
    ) -> Result<()> {
        if rows * cols != scores.len() {
            return Err(Error::LengthMismatch {
                what: "masked_softmax scores",
                expected: rows * cols,
                got: scores.len(),
            });
        }
        check_mask(rows, cols, mask)?;
        if scores.dtype() != DType::F32 {
            return Err(Error::UnsupportedDType {
                op: "masked_softmax",
                dtype: scores.dtype(),
                backend: "cuda",
            });
        }
        let (m, _keep) = self.mask_arg(mask)?;
        self.k_masked_softmax(scores.dev(self, 0)?, rows, cols, m, scale)
    }

    fn attention(
        &self,
        q: MatRef<'_, CudaBuffer>,
        k: MatRef<'_, CudaBuffer>,
        v: MatRef<'_, CudaBuffer>,
        spec: AttentionSpec<'_>,
    ) -> Result<CudaBuffer> {
        check_attention(&q, &k, &v, &spec)?;
        let (q_rows, kv_rows, hd) = (q.rows(), k.rows(), spec.head_dim);
        let width = spec.heads * hd;
        let mut out = self.zeros(DType::F32, q_rows * width)?;
        if q_rows == 0 || kv_rows == 0 {
            return Ok(out);
        }
        let (mask, _bounds) = self.mask_arg(spec.mask)?;
        let path = choose_path(
            q.buffer().dtype(),
            k.buffer().dtype(),
            v.buffer().dtype(),
            q_rows,
            kv_rows,
            spec.heads,
            spec.kv_heads,
            hd,
            mask.kind == 2,
            self.precision,
        );
        let args = |q: &MatRef<'_, CudaBuffer>,
                    k: &MatRef<'_, CudaBuffer>,
                    v: &MatRef<'_, CudaBuffer>|
         -> Result<AttnArgs> {
            Ok(AttnArgs {
                q: CudaBuffer::dev_view(q, self)?,
                qs: q.row_stride(),
                k: CudaBuffer::dev_view(k, self)?,
                ks: k.row_stride(),
                v: CudaBuffer::dev_view(v, self)?,
                vs: v.row_stride(),
                q_rows,
                kv_rows,
                heads: spec.heads,
                kv_heads: spec.kv_heads,
                head_dim: hd,
                scale: spec.scale,
                mask,
            })
        };
        match path {
            AttnPath::Decode => {
                let (splits, len) =
                    plan::decode_split(kv_rows, spec.kv_heads, q_rows, self.sm_count());
                let slots = splits as usize * q_rows * spec.heads;
                let part_acc = self.zeros(DType::F32, slots * hd)?;
                let part_ml = self.zeros(DType::F32, slots * 2)?;
                self.k_attn_decode(
                    &args(&q, &k, &v)?,
                    out.dev(self, 0)?,
                    width,
                    part_acc.dev(self, 0)?,
                    part_ml.dev(self, 0)?,
                    splits,
                    len,
                )?;
            }
            AttnPath::Mma => self.k_attn_mma(&args(&q, &k, &v)?, out.dev(self, 0)?, width)?,
            AttnPath::MmaRounded => {
                let (qb, kb, vb) = (
                    self.dense_bf16(&q)?,
                    self.dense_bf16(&k)?,
                    self.dense_bf16(&v)?,
                );
                let qv = MatRef::new(&qb, q_rows, q.cols())?;
                let kv = MatRef::new(&kb, kv_rows, k.cols())?;
                let vv = MatRef::new(&vb, kv_rows, v.cols())?;
                self.k_attn_mma(&args(&qv, &kv, &vv)?, out.dev(self, 0)?, width)?;
            }
            AttnPath::Core => self.k_attn_core(&args(&q, &k, &v)?, out.dev(self, 0)?, width)?,
            AttnPath::Composite => self.attention_composite(q, k, v, spec, &mut out)?,
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_follow_shapes_types_and_policy() {
        use DType::*;
        let p = |q, rows, kv, heads, kvh, hd, seg, prec| {
            choose_path(q, q, q, rows, kv, heads, kvh, hd, seg, prec)
        };
        assert_eq!(
            p(Bf16, 1, 4096, 32, 8, 128, false, Precision::Exact),
            AttnPath::Decode
        );
        assert_eq!(
            p(F32, 1, 4096, 32, 8, 128, false, Precision::Exact),
            AttnPath::Decode
        );
        assert_eq!(
            p(Bf16, 2048, 2048, 32, 8, 128, false, Precision::Exact),
            AttnPath::Mma
        );
        assert_eq!(
            p(Bf16, 1, 4096, 16, 16, 72, true, Precision::Exact),
            AttnPath::Mma
        );
        assert_eq!(
            p(F32, 2048, 2048, 32, 8, 128, false, Precision::Exact),
            AttnPath::Core
        );
        assert_eq!(
            p(F32, 2048, 2048, 32, 8, 128, false, Precision::Bf16),
            AttnPath::MmaRounded
        );
        assert_eq!(
            p(F32, 64, 64, 4, 4, 200, false, Precision::Exact),
            AttnPath::Core
        );
        assert_eq!(
            p(F32, 64, 64, 4, 4, 512, false, Precision::Exact),
            AttnPath::Composite
        );
        // Too many query heads per KV head for the decode kernel.
        assert_eq!(
            p(F32, 1, 4096, 32, 2, 128, false, Precision::Exact),
            AttnPath::Core
        );
        assert_eq!(
            choose_path(Bf16, F32, Bf16, 100, 100, 2, 2, 64, false, Precision::Exact),
            AttnPath::Core
        );
    }
}

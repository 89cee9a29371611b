//! Rotary position embeddings on the CPU (rotate-half convention).

use super::{Cpu, CpuBuffer, CpuGemm};
use crate::backend::{DeviceBuffer, Rope, RotaryOps};
use crate::error::{Error, Result};

impl<G: CpuGemm> RotaryOps for Cpu<G> {
    fn rotary(&self, x: &mut CpuBuffer, rope: Rope<'_, CpuBuffer>) -> Result<()> {
        let Rope {
            cos,
            sin,
            heads,
            head_dim,
        } = rope;
        let bad = |reason| {
            Err(Error::Shape {
                op: "rotary",
                reason,
            })
        };
        if head_dim == 0 || !head_dim.is_multiple_of(2) || heads == 0 {
            return bad("head_dim must be even and positive, heads positive");
        }
        let width = heads * head_dim;
        if !x.len().is_multiple_of(width) {
            return bad("length is not a multiple of heads * head_dim");
        }
        let rows = x.len() / width;
        if cos.len() != rows * head_dim || sin.len() != rows * head_dim {
            return bad("cos/sin tables must be rows x head_dim");
        }
        let (c, s) = (cos.f32s("rotary")?, sin.f32s("rotary")?);
        let xs = x.f32s_mut("rotary")?;
        let half = head_dim / 2;
        for r in 0..rows {
            let (cr, sr) = (
                &c[r * head_dim..(r + 1) * head_dim],
                &s[r * head_dim..(r + 1) * head_dim],
            );
            for h in 0..heads {
                let v = &mut xs[r * width + h * head_dim..r * width + (h + 1) * head_dim];
                for i in 0..half {
                    let (a, b) = (v[i], v[i + half]);
                    v[i] = a * cr[i] - b * sr[i];
                    v[i + half] = b * cr[i + half] + a * sr[i + half];
                }
            }
        }
        Ok(())
    }
}

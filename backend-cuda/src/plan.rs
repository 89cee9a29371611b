//! Host-side planning: launch dimensions, the chunking of the fused output-head ops, and the
//! split of decode attention. Pure functions, unit-tested without a device.

use axpo_core::Result;

use crate::error::limit;

/// Largest grid x dimension.
pub const MAX_GRID_X: u64 = (1 << 31) - 1;
/// Largest grid y and z dimension.
pub const MAX_GRID_YZ: u64 = 65_535;

/// Grid and block dimensions of a launch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dims {
    /// Blocks.
    pub grid: (u32, u32, u32),
    /// Threads per block.
    pub block: (u32, u32, u32),
}

impl Dims {
    /// A 1-D launch of `blocks` blocks of `threads` threads.
    ///
    /// # Errors
    /// A `LimitExceeded` backend error if `blocks` exceeds the grid limit.
    pub fn linear(blocks: u64, threads: u32) -> Result<Self> {
        if blocks > MAX_GRID_X {
            return Err(limit("grid x dimension"));
        }
        Ok(Self {
            grid: (
                u32::try_from(blocks.max(1)).map_err(|_| limit("grid"))?,
                1,
                1,
            ),
            block: (threads, 1, 1),
        })
    }
}

/// A grid-stride launch over `n` elements: at most 32 blocks per multiprocessor of `threads`
/// threads (the kernels loop over the rest).
#[must_use]
pub fn grid_stride(n: u64, threads: u32, sm_count: u32) -> Dims {
    let blocks = n.div_ceil(u64::from(threads.max(1)));
    let cap = u64::from(sm_count.max(1)) * 32;
    let blocks = blocks.clamp(1, cap.min(MAX_GRID_X));
    Dims {
        grid: (u32::try_from(blocks).unwrap_or(1), 1, 1),
        block: (threads, 1, 1),
    }
}

/// One block per row: the block width for rows of `cols` elements when each thread should get
/// at least `per_thread` of them (a power of two in `[32, max]`).
#[must_use]
pub fn row_threads(cols: usize, per_thread: usize, max: u32) -> u32 {
    let want = cols.div_ceil(per_thread.max(1)).max(1);
    let p = want.next_power_of_two().min(max as usize).max(32);
    u32::try_from(p).unwrap_or(32)
}

/// One block per row for `rows` rows.
///
/// # Errors
/// A `LimitExceeded` backend error for more rows than the grid allows.
pub fn per_row(rows: usize, threads: u32) -> Result<Dims> {
    Dims::linear(rows as u64, threads)
}

/// A 2-D copy: x over columns (256 threads), y over rows (the kernel strides past 65535).
#[must_use]
pub fn copy_dims(rows: usize, cols: usize) -> Dims {
    let x = (cols as u64).div_ceil(256).clamp(1, MAX_GRID_X);
    let y = (rows as u64).clamp(1, MAX_GRID_YZ);
    Dims {
        grid: (
            u32::try_from(x).unwrap_or(1),
            u32::try_from(y).unwrap_or(1),
            1,
        ),
        block: (256, 1, 1),
    }
}

/// How the fused output-head ops tile `logits = hidden · Wᵀ` (`n x v`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeadPlan {
    /// Hidden rows per chunk.
    pub row_chunk: usize,
    /// Vocabulary rows per chunk (`v` when whole rows fit, which lets the objective and the
    /// logits' gradient be computed in the same pass).
    pub vocab_chunk: usize,
}

impl HeadPlan {
    /// Plans the tiles so that the chunk workspace (`row_chunk x vocab_chunk` elements of
    /// `bytes_per_elem` bytes, counting the logits and a separate gradient buffer if any)
    /// stays within `budget` bytes, independent of `n`. Whole vocabulary rows are preferred; a
    /// row chunk is a multiple of 64 rows when it holds at least 64 (GEMM-friendly). When not
    /// even 64 whole rows fit, vocabulary chunks of at most `vocab_hint` columns are used.
    #[must_use]
    pub fn new(
        n: usize,
        v: usize,
        bytes_per_elem: usize,
        budget: usize,
        vocab_hint: usize,
    ) -> Self {
        let n = n.max(1);
        let v = v.max(1);
        let per_row = v.saturating_mul(bytes_per_elem.max(1));
        let fit = budget / per_row;
        if fit >= n.min(64) {
            let rows = fit.min(n);
            let rows = if rows >= 64 { rows - rows % 64 } else { rows };
            return Self {
                row_chunk: rows.max(1),
                vocab_chunk: v,
            };
        }
        let vc = vocab_hint.clamp(1, v);
        let rows = (budget / vc.saturating_mul(bytes_per_elem.max(1))).clamp(1, n);
        let rows = if rows >= 64 { rows - rows % 64 } else { rows };
        Self {
            row_chunk: rows.max(1),
            vocab_chunk: vc,
        }
    }

    /// Whether every chunk holds whole vocabulary rows.
    #[must_use]
    pub fn whole_rows(&self, v: usize) -> bool {
        self.vocab_chunk >= v
    }

    /// Workspace elements of one chunk.
    #[must_use]
    pub fn chunk_elems(&self) -> usize {
        self.row_chunk * self.vocab_chunk
    }
}

/// Whether decode attention (split-KV) serves a call: few query rows against many keys.
#[must_use]
pub fn use_decode(q_rows: usize, kv_rows: usize) -> bool {
    q_rows <= 8 && kv_rows >= 128
}

/// The split of decode attention: `(splits, keys per split)` so that `kv_heads * q_rows *
/// splits` blocks cover the multiprocessors about four times, with at least 64 keys per split.
#[must_use]
pub fn decode_split(kv_rows: usize, kv_heads: usize, q_rows: usize, sm_count: u32) -> (u32, u32) {
    let base = (kv_heads * q_rows).max(1);
    let want = (4 * sm_count as usize).div_ceil(base).max(1);
    let max_by_len = kv_rows.div_ceil(64).max(1);
    let splits = want.min(max_by_len).min(1024);
    let len = kv_rows.div_ceil(splits).max(1);
    let splits = kv_rows.div_ceil(len).max(1);
    (
        u32::try_from(splits).unwrap_or(1),
        u32::try_from(len).unwrap_or(u32::MAX),
    )
}

/// The padded head width of the tensor-core attention kernel for `head_dim`, if it has one.
#[must_use]
pub fn mma_head_dim(head_dim: usize) -> Option<usize> {
    [64usize, 80, 96, 128].into_iter().find(|&p| head_dim <= p)
}

/// The register-tile width of the exact attention kernels for `head_dim`, if any.
#[must_use]
pub fn core_head_dim(head_dim: usize) -> Option<usize> {
    [64usize, 128, 256].into_iter().find(|&p| head_dim <= p)
}

/// Casts a size to the `u32` a kernel takes.
///
/// # Errors
/// A `LimitExceeded` backend error naming `what`.
pub fn u32_of(x: usize, what: &'static str) -> Result<u32> {
    u32::try_from(x).map_err(|_| limit(what))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grid_stride_is_capped_and_nonempty() {
        let d = grid_stride(0, 256, 132);
        assert_eq!(d.grid.0, 1);
        let d = grid_stride(1 << 40, 256, 132);
        assert_eq!(d.grid.0, 132 * 32);
        let d = grid_stride(1000, 256, 132);
        assert_eq!(d.grid.0, 4);
    }

    #[test]
    fn row_threads_are_powers_of_two_in_range() {
        assert_eq!(row_threads(1, 16, 512), 32);
        assert_eq!(row_threads(151_936, 16, 512), 512);
        assert_eq!(row_threads(2048, 16, 512), 128);
        for c in [3usize, 100, 1000, 5000] {
            let t = row_threads(c, 8, 1024);
            assert!(t.is_power_of_two() && (32..=1024).contains(&t));
        }
    }

    #[test]
    fn copy_dims_cover_columns_and_cap_rows() {
        let d = copy_dims(100_000, 1000);
        assert_eq!(d.grid.0, 4);
        assert_eq!(u64::from(d.grid.1), MAX_GRID_YZ);
        assert!(Dims::linear(MAX_GRID_X + 1, 32).is_err());
    }

    #[test]
    fn head_plan_prefers_whole_rows_and_is_flat_in_n() {
        let v = 151_936;
        let budget = 2usize << 30;
        let a = HeadPlan::new(16_384, v, 2, budget, 4096);
        let b = HeadPlan::new(65_536, v, 2, budget, 4096);
        assert!(a.whole_rows(v));
        assert_eq!(a, b, "the plan must not grow with n once n exceeds a chunk");
        assert_eq!(a.row_chunk % 64, 0);
        assert!(a.chunk_elems() * 2 <= budget);
        // Small n: one chunk of all rows.
        let c = HeadPlan::new(10, 1000, 4, budget, 4096);
        assert_eq!((c.row_chunk, c.vocab_chunk), (10, 1000));
    }

    #[test]
    fn head_plan_falls_back_to_vocab_chunks() {
        let p = HeadPlan::new(4096, 1_000_000, 4, 16 << 20, 4096);
        assert!(!p.whole_rows(1_000_000));
        assert_eq!(p.vocab_chunk, 4096);
        assert!(p.chunk_elems() * 4 <= 16 << 20);
        assert!(p.row_chunk >= 1);
    }

    #[test]
    fn decode_split_covers_keys() {
        for (kv, heads, q) in [(4352usize, 8usize, 1usize), (100, 8, 1), (1 << 20, 2, 4)] {
            let (s, len) = decode_split(kv, heads, q, 132);
            assert!(s >= 1 && len >= 1);
            assert!((s as usize) * (len as usize) >= kv);
            assert!(((s as usize) - 1) * (len as usize) < kv.max(1));
        }
        assert!(use_decode(1, 4096));
        assert!(!use_decode(64, 4096));
    }

    #[test]
    fn head_dims_pick_the_smallest_tile() {
        assert_eq!(mma_head_dim(128), Some(128));
        assert_eq!(mma_head_dim(72), Some(80));
        assert_eq!(mma_head_dim(40), Some(64));
        assert_eq!(mma_head_dim(256), None);
        assert_eq!(core_head_dim(72), Some(128));
        assert_eq!(core_head_dim(300), None);
    }
}

//! The trained tokens of a credited batch, flattened for the objective and the backend.

use alloc::vec::Vec;
use core::ops::Range;

use crate::advantage::Credited;
use crate::error::{Error, Result, check_len};
use crate::trajectory::{Batch, TrajectoryId};

/// One trained token: which trajectory, which position.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenRef {
    /// The trajectory.
    pub trajectory: TrajectoryId,
    /// The token's position in it (the model predicts it from positions `0..position`).
    pub position: usize,
}

/// Every trained token of a batch, one sequence per trajectory with at least one trained token,
/// in batch order: where each token is, its id (the target of the log-prob), its rollout
/// log-prob (the default `logp_old`) and its advantage.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainingTokens {
    /// Where each token is.
    pub rows: Vec<TokenRef>,
    /// Token ids.
    pub targets: Vec<u32>,
    /// Rollout log-probs.
    pub old_logp: Vec<f32>,
    /// Advantages.
    pub advantages: Vec<f32>,
    /// Sequence boundaries (`sequences.len() + 1` entries).
    pub seq_offsets: Vec<usize>,
    /// The trajectory of each sequence.
    pub sequences: Vec<TrajectoryId>,
}

impl TrainingTokens {
    /// Flattens the trained tokens of `batch` under `credited` (from
    /// [`assign`](crate::advantage::assign) on the same batch).
    ///
    /// # Errors
    /// [`Error::LengthMismatch`] if `credited` does not belong to `batch`;
    /// [`Error::NoTrainedTokens`] if nothing is trained.
    pub fn new(batch: &Batch, credited: &Credited) -> Result<Self> {
        let trajectories: Vec<_> = batch.trajectories().collect();
        check_len(
            "credited trajectories vs batch",
            trajectories.len(),
            credited.trajectories.len(),
        )?;
        let n: usize = credited
            .trajectories
            .iter()
            .map(|c| c.advantages.len())
            .sum();
        let mut out = Self {
            rows: Vec::with_capacity(n),
            targets: Vec::with_capacity(n),
            old_logp: Vec::with_capacity(n),
            advantages: Vec::with_capacity(n),
            seq_offsets: Vec::with_capacity(trajectories.len() + 1),
            sequences: Vec::with_capacity(trajectories.len()),
        };
        out.seq_offsets.push(0);
        for (t, c) in trajectories.iter().zip(&credited.trajectories) {
            if t.id() != c.trajectory {
                return Err(Error::LengthMismatch {
                    what: "credited trajectory order vs batch",
                    expected: t.id().0 as usize,
                    got: c.trajectory.0 as usize,
                });
            }
            let n = t.logprobs().len();
            check_len(
                "advantages vs trained tokens",
                n.saturating_sub(c.first_trained),
                c.advantages.len(),
            )?;
            if c.advantages.is_empty() {
                continue;
            }
            let positions = t.policy_positions().skip(c.first_trained);
            out.rows.extend(positions.clone().map(|position| TokenRef {
                trajectory: t.id(),
                position,
            }));
            out.targets.extend(positions.map(|p| t.tokens()[p]));
            out.old_logp
                .extend_from_slice(&t.logprobs()[c.first_trained..]);
            out.advantages.extend_from_slice(&c.advantages);
            out.sequences.push(t.id());
            out.seq_offsets.push(out.rows.len());
        }
        if out.rows.is_empty() {
            return Err(Error::NoTrainedTokens);
        }
        Ok(out)
    }

    /// Number of trained tokens.
    #[must_use]
    pub fn token_count(&self) -> usize {
        self.rows.len()
    }

    /// Number of sequences.
    #[must_use]
    pub fn sequence_count(&self) -> usize {
        self.sequences.len()
    }

    /// Splits the sequences into consecutive micro-batches of at most `max_tokens` tokens each
    /// (a longer sequence gets a micro-batch of its own). Returns ranges of sequence indices.
    #[must_use]
    pub fn micro_batches(&self, max_tokens: usize) -> Vec<Range<usize>> {
        let mut out = Vec::new();
        let mut start = 0;
        for s in 0..self.sequences.len() {
            let tokens = self.seq_offsets[s + 1] - self.seq_offsets[start];
            if s > start && tokens > max_tokens {
                out.push(start..s);
                start = s;
            }
        }
        if start < self.sequences.len() {
            out.push(start..self.sequences.len());
        }
        out
    }

    /// Token range of a range of sequences.
    #[must_use]
    pub fn token_range(&self, sequences: Range<usize>) -> Range<usize> {
        self.seq_offsets[sequences.start]..self.seq_offsets[sequences.end]
    }

    /// Sequence offsets of a range of sequences, rebased to start at 0.
    #[must_use]
    pub fn local_offsets(&self, sequences: Range<usize>) -> Vec<usize> {
        let base = self.seq_offsets[sequences.start];
        self.seq_offsets[sequences.start..=sequences.end]
            .iter()
            .map(|o| o - base)
            .collect()
    }
}

//! The training step's op family: the objective on the output head, fused. Hidden states,
//! the head matrix and the trained tokens in; loss and terms, metrics, per-token log-probs and
//! entropies, `d hidden` and `d W` out.
//!
//! The default ([`linear_objective_by_blocks`]) is built from the primitives of
//! [`MatmulOps`] and [`LogprobOps`] in one pass with three matrix products per block of tokens:
//! the logits of a block (`Z = H Wᵀ`, whole vocabulary rows), their statistics, the tokens'
//! gradients from the [`ObjectiveAccumulator`] (the one source of the per-token math: for
//! token-local losses a token's `d loss / d logp` needs only its own statistics, and the
//! normalizer is explicit), `dZ`, then `d hidden = dZ W` for the block's rows and
//! `d W += dZᵀ H`. The logits are never recomputed, and the scratch memory is the
//! [`HeadWorkspace`] budget, independent of the token count and (but for one row) of the
//! vocabulary: blocks hold as many rows as fit. GSPO's sequence ratio needs a sequence's
//! whole log-probs: blocks then hold whole sequences, and when a sequence is longer than a
//! block the step takes a second pass (statistics first, then the backward with the logits
//! recomputed: four products).

use alloc::vec;
use alloc::vec::Vec;
use core::ops::Range;

use super::{
    DType, Epilogue, HeadGrads, Layout, LogprobOps, MatMut, MatRef, StatsGrad, TokenStats,
    check_targets,
};
use crate::error::{Error, Result, check_len};
use crate::objective::{
    BlockValues, LossTerms, ObjectiveAccumulator, ObjectiveConfig, ObjectiveMetrics,
    ObjectiveSummary, ObjectiveTokens, TrainingTokens,
};

/// The trained tokens of one micro-batch as a training step takes them: each token's target id
/// (the head row whose log-prob is trained) and what the objective needs besides the current
/// policy's statistics.
#[derive(Debug, Clone, Copy)]
pub struct StepTokens<'a> {
    /// Target id of each token.
    pub targets: &'a [u32],
    /// Old log-probs, advantages, sequence offsets, optional rollout and reference log-probs.
    pub objective: ObjectiveTokens<'a, f32>,
}

impl<'a> StepTokens<'a> {
    /// Tokens with their targets, behaviour log-probs, advantages and sequence offsets.
    #[must_use]
    pub fn new(
        targets: &'a [u32],
        old_logp: &'a [f32],
        advantages: &'a [f32],
        seq_offsets: &'a [usize],
    ) -> Self {
        Self {
            targets,
            objective: ObjectiveTokens {
                old_logp,
                advantages,
                seq_offsets,
                rollout_logp: None,
                ref_logp: None,
            },
        }
    }

    /// Adds the rollout engine's log-probs (for truncated importance sampling).
    #[must_use]
    pub fn with_rollout_logp(mut self, rollout_logp: &'a [f32]) -> Self {
        self.objective.rollout_logp = Some(rollout_logp);
        self
    }

    /// Adds the reference policy's log-probs (for a KL penalty).
    #[must_use]
    pub fn with_ref_logp(mut self, ref_logp: &'a [f32]) -> Self {
        self.objective.ref_logp = Some(ref_logp);
        self
    }

    /// Number of tokens.
    #[must_use]
    pub fn len(&self) -> usize {
        self.targets.len()
    }

    /// Whether there are no tokens.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.targets.is_empty()
    }
}

impl<'a> From<&'a TrainingTokens> for StepTokens<'a> {
    fn from(t: &'a TrainingTokens) -> Self {
        Self::new(&t.targets, &t.old_logp, &t.advantages, &t.seq_offsets)
    }
}

/// The scratch budget of a training step for a block's logits and their gradient. Blocks hold
/// as many whole vocabulary rows as fit (at least one), so memory does not grow with the number
/// of tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum HeadWorkspace {
    /// The backend's own budget ([`HeadWorkspace::CPU_DEFAULT`] on the CPU backends; the CUDA
    /// handle's head workspace there).
    #[default]
    BackendDefault,
    /// At most this many bytes.
    Bytes(usize),
}

impl HeadWorkspace {
    /// The CPU backends' budget: 64 MiB.
    pub const CPU_DEFAULT: usize = 64 << 20;

    /// The budget in bytes, with `default` standing for [`HeadWorkspace::BackendDefault`].
    #[must_use]
    pub fn bytes_or(self, default: usize) -> usize {
        match self {
            Self::BackendDefault => default,
            Self::Bytes(b) => b,
        }
    }

    /// Rows per block for a vocabulary of `vocab` logits of `bytes_per_logit` scratch bytes
    /// each under a budget of `bytes`: at least 1 and at most `tokens`.
    #[must_use]
    pub fn block_rows(bytes: usize, vocab: usize, bytes_per_logit: usize, tokens: usize) -> usize {
        let per_row = vocab.saturating_mul(bytes_per_logit).max(1);
        (bytes / per_row).clamp(1, tokens.max(1))
    }
}

/// What a training step returns.
#[derive(Debug)]
pub struct StepOutput<B> {
    /// The loss (this micro-batch's share of the whole batch's), summed in f64.
    pub loss: f64,
    /// Its terms.
    pub terms: LossTerms<f64>,
    /// Diagnostics.
    pub metrics: ObjectiveMetrics,
    /// Current log-prob of each token.
    pub logp: Vec<f32>,
    /// Current entropy of each token.
    pub entropy: Vec<f32>,
    /// `d loss / d hidden` (`N x H`) and `d loss / d W` (`V x H`), f32.
    pub grads: HeadGrads<B>,
}

impl<B> StepOutput<B> {
    /// The output from a finished accumulator, the statistics and the gradients.
    #[must_use]
    pub fn new(
        summary: ObjectiveSummary,
        logp: Vec<f32>,
        entropy: Vec<f32>,
        grads: HeadGrads<B>,
    ) -> Self {
        Self {
            loss: summary.loss,
            terms: summary.terms,
            metrics: summary.metrics,
            logp,
            entropy,
            grads,
        }
    }
}

/// The training step on the output head.
pub trait ObjectiveOps: LogprobOps {
    /// Loss, metrics, per-token statistics and the head's gradients of the objective on
    /// `logits = hidden · weightᵀ` (`hidden`: `N x H`, `weight`: `V x H`, one hidden row per
    /// trained token), fused as the module docs say. The default is
    /// [`linear_objective_by_blocks`]; backends override it with fused kernels.
    ///
    /// # Errors
    /// [`Error::Shape`] if the widths differ, [`Error::LengthMismatch`] if the token count
    /// differs from the hidden rows, [`Error::TargetOutOfRange`] for a target outside the
    /// vocabulary, the objective's errors ([`ObjectiveTokens::check`]), [`Error::NonFinite`]
    /// for statistics or gradients that are not finite, a backend error.
    fn linear_objective(
        &self,
        hidden: MatRef<'_, Self::Buffer>,
        weight: MatRef<'_, Self::Buffer>,
        tokens: &StepTokens<'_>,
        config: &ObjectiveConfig,
        workspace: HeadWorkspace,
    ) -> Result<StepOutput<Self::Buffer>> {
        linear_objective_by_blocks(self, hidden, weight, tokens, config, workspace)
    }
}

/// Checks the operands of a training step and starts its accumulator.
///
/// # Errors
/// As [`ObjectiveOps::linear_objective`].
pub fn check_step<'a, B: ?Sized>(
    hidden: &MatRef<'_, B>,
    weight: &MatRef<'_, B>,
    tokens: &StepTokens<'a>,
    config: &ObjectiveConfig,
) -> Result<ObjectiveAccumulator<'a, f32>> {
    if hidden.cols() != weight.cols() {
        return Err(Error::Shape {
            op: "linear_objective",
            reason: "hidden width differs from the head matrix width",
        });
    }
    let acc = ObjectiveAccumulator::new(config, tokens.objective)?;
    check_len(
        "targets vs trained tokens",
        tokens.objective.len(),
        tokens.targets.len(),
    )?;
    check_len("hidden rows vs trained tokens", tokens.len(), hidden.rows())?;
    check_targets(tokens.targets, weight.rows())?;
    Ok(acc)
}

/// Token blocks of at most `rows` rows each, in order. With `whole_sequences` every block holds
/// whole sequences (several when they fit); `None` if a sequence is longer than `rows`.
#[must_use]
pub fn token_blocks(
    seq_offsets: &[usize],
    tokens: usize,
    rows: usize,
    whole_sequences: bool,
) -> Option<Vec<Range<usize>>> {
    let rows = rows.max(1);
    let mut out = Vec::new();
    if !whole_sequences {
        let mut r0 = 0;
        while r0 < tokens {
            let r1 = r0.saturating_add(rows).min(tokens);
            out.push(r0..r1);
            r0 = r1;
        }
        return Some(out);
    }
    let mut start = 0;
    for w in seq_offsets.windows(2) {
        let (a0, a1) = (w[0], w[1]);
        if a1 - a0 > rows {
            return None;
        }
        if a1 - start > rows {
            out.push(start..a0);
            start = a0;
        }
    }
    if start < tokens {
        out.push(start..tokens);
    }
    Some(out)
}

/// The logits of token rows `rows` (`Z = H[rows] Wᵀ`, into the first rows of `logits`) and
/// their statistics.
fn block_stats<B: LogprobOps + ?Sized>(
    backend: &B,
    hidden: &MatRef<'_, B::Buffer>,
    weight: &MatRef<'_, B::Buffer>,
    targets: &B::Buffer,
    rows: Range<usize>,
    logits: &mut B::Buffer,
) -> Result<TokenStats<B::Buffer>> {
    let (n, v) = (rows.len(), weight.rows());
    backend.matmul(
        hidden.rows_range(rows.start, rows.end)?,
        Layout::AsStored,
        *weight,
        Layout::Transposed,
        MatMut::strided(logits, 0, n, v, v)?,
        Epilogue::OVERWRITE,
    )?;
    let mut state = backend.stats_init(n)?;
    backend.stats_fold(MatRef::strided(logits, 0, n, v, v)?, 0, targets, &mut state)?;
    backend.stats_finish(&state, n)
}

/// The scratch and outputs of the default step.
struct Scratch<B> {
    logits: B,
    d_logits: B,
    d_hidden: B,
    d_weight: B,
}

/// `dZ` of a block from its logits and upstream gradients, then `d hidden` of its rows and
/// `d W += dZᵀ H[rows]` (`first`: overwrite `d W` instead).
#[allow(clippy::too_many_arguments)]
fn block_backward<B: LogprobOps + ?Sized>(
    backend: &B,
    hidden: &MatRef<'_, B::Buffer>,
    weight: &MatRef<'_, B::Buffer>,
    targets: &B::Buffer,
    rows: Range<usize>,
    stats: &TokenStats<B::Buffer>,
    grad: (&[f32], Option<&[f32]>),
    first: bool,
    s: &mut Scratch<B::Buffer>,
) -> Result<()> {
    let (n, v, h) = (rows.len(), weight.rows(), hidden.cols());
    let g_logp = backend.upload_f32(grad.0)?;
    let g_entropy = grad.1.map(|g| backend.upload_f32(g)).transpose()?;
    backend.stats_backward(
        MatRef::strided(&s.logits, 0, n, v, v)?,
        0,
        targets,
        stats,
        StatsGrad {
            d_logp: &g_logp,
            d_entropy: g_entropy.as_ref(),
        },
        MatMut::strided(&mut s.d_logits, 0, n, v, v)?,
    )?;
    let dz = MatRef::strided(&s.d_logits, 0, n, v, v)?;
    backend.matmul(
        dz,
        Layout::AsStored,
        *weight,
        Layout::AsStored,
        MatMut::strided(&mut s.d_hidden, rows.start * h, n, h, h)?,
        Epilogue::OVERWRITE,
    )?;
    backend.matmul(
        dz,
        Layout::Transposed,
        hidden.rows_range(rows.start, rows.end)?,
        Layout::AsStored,
        MatMut::new(&mut s.d_weight, v, h)?,
        if first {
            Epilogue::OVERWRITE
        } else {
            Epilogue::ADD
        },
    )
}

/// The default training step, from primitives (see the module docs): one pass of three matrix
/// products per token block, or, under GSPO with a sequence longer than a block, two passes.
/// Scratch: two `rows x V` f32 buffers within `workspace`.
///
/// # Errors
/// As [`ObjectiveOps::linear_objective`].
pub fn linear_objective_by_blocks<B: LogprobOps + ?Sized>(
    backend: &B,
    hidden: MatRef<'_, B::Buffer>,
    weight: MatRef<'_, B::Buffer>,
    tokens: &StepTokens<'_>,
    config: &ObjectiveConfig,
    workspace: HeadWorkspace,
) -> Result<StepOutput<B::Buffer>> {
    let mut acc = check_step(&hidden, &weight, tokens, config)?;
    let (n, v, h) = (hidden.rows(), weight.rows(), hidden.cols());
    let budget = workspace.bytes_or(HeadWorkspace::CPU_DEFAULT);
    let rows = HeadWorkspace::block_rows(budget, v, 2 * DType::F32.size(), n);
    let offsets = tokens.objective.seq_offsets;
    let whole = acc.needs_whole_sequences();
    let (blocks, one_pass) = match token_blocks(offsets, n, rows, whole) {
        Some(b) => (b, true),
        None => (
            token_blocks(offsets, n, rows, false).unwrap_or_default(),
            false,
        ),
    };
    let scratch_len = rows.saturating_mul(v);
    let mut s = Scratch {
        logits: backend.zeros(DType::F32, scratch_len)?,
        d_logits: backend.zeros(DType::F32, scratch_len)?,
        d_hidden: backend.zeros(DType::F32, n * h)?,
        d_weight: backend.zeros(DType::F32, v * h)?,
    };
    let mut logp = vec![0.0f32; n];
    let mut entropy = vec![0.0f32; n];
    let mut d_logp = vec![0.0f32; n];
    let mut d_entropy = vec![0.0f32; n];
    let uses_entropy = config.entropy_coef != 0.0;
    if !one_pass {
        // Pass 1: every token's statistics; then the objective over whole sequences.
        for r in &blocks {
            let t = backend.upload_u32(&tokens.targets[r.clone()])?;
            let stats = block_stats(backend, &hidden, &weight, &t, r.clone(), &mut s.logits)?;
            logp[r.clone()].copy_from_slice(&backend.download_f32(&stats.logp)?);
            entropy[r.clone()].copy_from_slice(&backend.download_f32(&stats.entropy)?);
        }
        acc.block(
            BlockValues::new(&logp, Some(&entropy)),
            &mut d_logp,
            &mut d_entropy,
        )?;
    }
    for (i, r) in blocks.iter().enumerate() {
        let t = backend.upload_u32(&tokens.targets[r.clone()])?;
        let stats = block_stats(backend, &hidden, &weight, &t, r.clone(), &mut s.logits)?;
        if one_pass {
            logp[r.clone()].copy_from_slice(&backend.download_f32(&stats.logp)?);
            entropy[r.clone()].copy_from_slice(&backend.download_f32(&stats.entropy)?);
            acc.block(
                BlockValues::new(&logp[r.clone()], Some(&entropy[r.clone()])),
                &mut d_logp[r.clone()],
                &mut d_entropy[r.clone()],
            )?;
        }
        let grad = (
            &d_logp[r.clone()],
            uses_entropy.then_some(&d_entropy[r.clone()]),
        );
        block_backward(
            backend,
            &hidden,
            &weight,
            &t,
            r.clone(),
            &stats,
            grad,
            i == 0,
            &mut s,
        )?;
    }
    let summary = acc.finish()?;
    Ok(StepOutput::new(
        summary,
        logp,
        entropy,
        HeadGrads {
            d_hidden: s.d_hidden,
            d_weight: s.d_weight,
        },
    ))
}

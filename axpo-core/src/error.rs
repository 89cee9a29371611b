//! The one error type of `axpo-core`, and the boxed backend error that GPU crates convert into.

use alloc::boxed::Box;
use core::fmt;

use crate::trajectory::{GroupId, TrajectoryId};

/// Result alias used throughout the crate.
pub type Result<T, E = Error> = core::result::Result<T, E>;

/// Everything that can go wrong in `axpo-core`: bad input, bad configuration, or a backend failure.
///
/// Every fallible public function returns this type; nothing in the library panics on input.
/// Variants carry enough context (what, where) to find the offending value without a debugger.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// Two inputs that must have the same length do not.
    LengthMismatch {
        /// What was being compared, e.g. `"rollout log-probs vs policy tokens"`.
        what: &'static str,
        /// The length that was required.
        expected: usize,
        /// The length that was given.
        got: usize,
    },
    /// A value that must be finite is NaN or infinite.
    NonFinite {
        /// Which input, e.g. `"reward"` or `"old log-prob"`.
        what: &'static str,
        /// Index of the first offending element within that input.
        index: usize,
    },
    /// A scored reward is NaN or infinite (mark unscorable rollouts with `Reward::Unscorable`).
    NonFiniteReward {
        /// The trajectory.
        trajectory: TrajectoryId,
    },
    /// A value is outside its allowed range (for example a log-probability above zero).
    OutOfRange {
        /// Which input.
        what: &'static str,
        /// Index of the first offending element.
        index: usize,
    },
    /// A trajectory's role spans are malformed (gaps, overlaps, empty spans, not covering the tokens).
    InvalidSpans {
        /// The trajectory, when known.
        trajectory: Option<TrajectoryId>,
        /// What is wrong.
        reason: &'static str,
        /// Token position where the problem was found.
        position: usize,
    },
    /// A batch holds no groups, or a computation received no rows.
    EmptyBatch,
    /// A group holds no rollouts.
    EmptyGroup {
        /// The empty group.
        group: GroupId,
    },
    /// Two trajectories of a batch share an id.
    DuplicateTrajectory {
        /// The repeated id.
        id: TrajectoryId,
    },
    /// Two groups of a batch share an id.
    DuplicateGroup {
        /// The repeated id.
        group: GroupId,
    },
    /// A branch names a parent that is not in its group.
    UnknownParent {
        /// The branch.
        branch: TrajectoryId,
        /// The parent it names.
        parent: TrajectoryId,
    },
    /// A branch's parent is itself a branch; AXPO resamples from root rollouts only.
    ParentNotRoot {
        /// The branch.
        branch: TrajectoryId,
        /// The parent it names.
        parent: TrajectoryId,
    },
    /// A branch does not carry its parent's exact frozen prefix.
    PrefixMismatch {
        /// The branch.
        branch: TrajectoryId,
        /// Its parent.
        parent: TrajectoryId,
        /// First position where token ids or roles differ.
        position: usize,
    },
    /// A prefix length does not fit its trajectory, or leaves nothing to resample.
    PrefixOutOfRange {
        /// The trajectory the prefix belongs to.
        trajectory: TrajectoryId,
        /// The prefix length asked for.
        prefix_len: usize,
        /// The trajectory's length.
        len: usize,
    },
    /// Branches of one parent were cut at different prefix lengths; each parent may own one
    /// sibling set (the planner never produces more).
    ConflictingPrefixes {
        /// The parent.
        parent: TrajectoryId,
    },
    /// A returned branch does not answer any request of the plan, or exceeds its request's count.
    UnplannedBranch {
        /// The branch.
        branch: TrajectoryId,
    },
    /// The objective received no trained tokens (after masking).
    NoTrainedTokens,
    /// An uncertainty score needs per-token entropies that the trajectory does not carry.
    MissingEntropies {
        /// The trajectory without entropies.
        trajectory: TrajectoryId,
    },
    /// A configuration value is invalid.
    InvalidConfig {
        /// The field.
        field: &'static str,
        /// Why it is invalid.
        reason: &'static str,
    },
    /// A target token id is outside the vocabulary.
    TargetOutOfRange {
        /// Row of the offending target.
        row: usize,
        /// The target id.
        target: u32,
        /// The vocabulary size.
        vocab: usize,
    },
    /// Operands of a backend op do not have the shapes the op needs.
    Shape {
        /// The op.
        op: &'static str,
        /// What is wrong.
        reason: &'static str,
    },
    /// A backend does not support an element type for an op.
    UnsupportedDType {
        /// The op.
        op: &'static str,
        /// The element type given.
        dtype: crate::backend::DType,
        /// The backend's name.
        backend: &'static str,
    },
    /// A backend failed (device missing, out of memory, kernel compile or launch error...).
    Backend(BackendError),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::LengthMismatch {
                what,
                expected,
                got,
            } => write!(
                f,
                "length mismatch in {what}: expected {expected}, got {got}"
            ),
            Self::NonFinite { what, index } => write!(f, "{what}[{index}] is not finite"),
            Self::NonFiniteReward { trajectory } => {
                write!(
                    f,
                    "the reward of {trajectory} is not finite (use Reward::Unscorable)"
                )
            }
            Self::OutOfRange { what, index } => write!(f, "{what}[{index}] is out of range"),
            Self::InvalidSpans {
                trajectory,
                reason,
                position,
            } => match trajectory {
                Some(id) => write!(
                    f,
                    "invalid role spans in {id} at token {position}: {reason}"
                ),
                None => write!(f, "invalid role spans at token {position}: {reason}"),
            },
            Self::EmptyBatch => f.write_str("the batch is empty"),
            Self::EmptyGroup { group } => write!(f, "{group} has no rollouts"),
            Self::DuplicateTrajectory { id } => write!(f, "trajectory id {id} appears twice"),
            Self::DuplicateGroup { group } => write!(f, "group id {group} appears twice"),
            Self::UnknownParent { branch, parent } => {
                write!(
                    f,
                    "branch {branch} names parent {parent}, which is not in its group"
                )
            }
            Self::ParentNotRoot { branch, parent } => {
                write!(
                    f,
                    "branch {branch} names parent {parent}, which is itself a branch"
                )
            }
            Self::PrefixMismatch {
                branch,
                parent,
                position,
            } => write!(
                f,
                "branch {branch} differs from its parent {parent} at token {position}, inside the frozen prefix"
            ),
            Self::PrefixOutOfRange {
                trajectory,
                prefix_len,
                len,
            } => write!(
                f,
                "prefix length {prefix_len} does not fit {trajectory} of length {len}"
            ),
            Self::ConflictingPrefixes { parent } => write!(
                f,
                "branches of {parent} were cut at different prefix lengths"
            ),
            Self::UnplannedBranch { branch } => {
                write!(f, "branch {branch} does not answer a request of the plan")
            }
            Self::NoTrainedTokens => f.write_str("no trained tokens: every token is masked"),
            Self::MissingEntropies { trajectory } => write!(
                f,
                "{trajectory} carries no per-token entropies, which the uncertainty score needs"
            ),
            Self::InvalidConfig { field, reason } => write!(f, "invalid {field}: {reason}"),
            Self::TargetOutOfRange { row, target, vocab } => write!(
                f,
                "target {target} of row {row} is outside the vocabulary of {vocab}"
            ),
            Self::Shape { op, reason } => write!(f, "{op}: {reason}"),
            Self::UnsupportedDType { op, dtype, backend } => {
                write!(f, "{backend} backend: {op} does not support {dtype:?}")
            }
            Self::Backend(e) => write!(f, "{e}"),
        }
    }
}

impl core::error::Error for Error {
    fn source(&self) -> Option<&(dyn core::error::Error + 'static)> {
        match self {
            Self::Backend(e) => e.source.as_deref().map(|s| s as _),
            _ => None,
        }
    }
}

/// What kind of failure a backend reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum BackendErrorKind {
    /// No device, driver or adapter is available.
    DeviceUnavailable,
    /// The device ran out of memory.
    OutOfMemory,
    /// A kernel or shader failed to compile.
    KernelCompile,
    /// A kernel launch or dispatch failed.
    Launch,
    /// A host/device transfer failed.
    Transfer,
    /// A size exceeds a device limit (binding size, grid dimension...).
    LimitExceeded,
    /// Anything else.
    Other,
}

/// A backend failure: the backend's name, a kind, a message, and the backend's own error boxed,
/// so that `axpo-core` never names cudarc or wgpu types.
#[derive(Debug)]
pub struct BackendError {
    /// Name of the backend that failed.
    pub backend: &'static str,
    /// What kind of failure.
    pub kind: BackendErrorKind,
    /// Human-readable detail (an NVRTC log, the adapter list...).
    pub message: alloc::string::String,
    /// The backend's own error, if any.
    pub source: Option<Box<dyn core::error::Error + Send + Sync + 'static>>,
}

impl BackendError {
    /// A backend error without a source.
    #[must_use]
    pub fn new(
        backend: &'static str,
        kind: BackendErrorKind,
        message: impl Into<alloc::string::String>,
    ) -> Self {
        Self {
            backend,
            kind,
            message: message.into(),
            source: None,
        }
    }

    /// Attaches the backend's own error.
    #[must_use]
    pub fn with_source(mut self, source: impl core::error::Error + Send + Sync + 'static) -> Self {
        self.source = Some(Box::new(source));
        self
    }
}

impl fmt::Display for BackendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} backend: {:?}: {}",
            self.backend, self.kind, self.message
        )
    }
}

impl From<BackendError> for Error {
    fn from(e: BackendError) -> Self {
        Self::Backend(e)
    }
}

/// Checks that a slice holds only finite values.
///
/// # Errors
/// [`Error::NonFinite`] naming `what` and the first bad index.
pub fn check_finite<F: num_traits::Float>(what: &'static str, values: &[F]) -> Result<()> {
    match values.iter().position(|v| !v.is_finite()) {
        Some(index) => Err(Error::NonFinite { what, index }),
        None => Ok(()),
    }
}

/// Checks that two lengths agree.
///
/// # Errors
/// [`Error::LengthMismatch`].
pub fn check_len(what: &'static str, expected: usize, got: usize) -> Result<()> {
    if expected == got {
        Ok(())
    } else {
        Err(Error::LengthMismatch {
            what,
            expected,
            got,
        })
    }
}

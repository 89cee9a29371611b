//! # axpo-core
//!
//! The whole AXPO algorithm (Agent eXplorative Policy Optimization) on the CPU, `no_std` with
//! `alloc`: trajectories and their roles, tool subgroups and the all-wrong test, thinking-prefix
//! candidates scored by uncertainty, resample plans within a budget, credit assignment for
//! resampled branches, the clipped objective with its exact gradient, Pass@k, and the
//! [`Backend`](backend::Backend) trait with a reference CPU backend.
//!
//! One training step:
//!
//! 1. Build a [`Batch`] of [`Group`]s of root [`Trajectory`]s (tokens, role spans from the
//!    [`Segmenter`], rollout log-probs of policy tokens, per-token entropies, rewards).
//! 2. [`plan()`] finds each group whose tool-using subgroup is all wrong and chooses which thinking
//!    prefixes to resample, by uncertainty, within the budget. The rollout engine continues each
//!    [`BranchRequest`] `count` times from the frozen prefix; [`ResamplePlan::merge`] checks and
//!    adds the returned branches.
//! 3. [`assign`] credits the branches and computes every trained token's advantage;
//!    [`TrainingTokens`] flattens them.
//! 4. A backend computes the current log-probs ([`LogprobOps::linear_token_stats`](backend::LogprobOps::linear_token_stats));
//!    [`evaluate`] gives the loss and `d loss / d logp`; the backend's fused backward turns
//!    that into `d hidden` and `d W` of the output head.
//!
//! ```
//! use axpo_core::prelude::*;
//!
//! # fn main() -> Result<(), axpo_core::Error> {
//! let seg = Segmenter::default();
//! let sp = SpecialTokens::QWEN3_VL;
//! // prompt (3 tokens) | <tool_call> a b </tool_call> <|im_end|>
//! let tokens = vec![1, 2, 3, sp.tool_call_open, 10, 11, sp.tool_call_close, sp.im_end];
//! let spans = seg.segment(&tokens, 3)?;
//! let traj = |id, reward| Trajectory::new(TrajectoryId(id), tokens.clone(), spans.clone(),
//!     vec![-0.5; 5], Reward::Scored(reward));
//! let roots: Vec<Trajectory> = (0..4).map(|i| traj(i, 0.0)).collect::<Result<_, _>>()?;
//! let batch = Batch::new(vec![Group::new(GroupId(0), roots)?])?;
//! let plan = plan(&batch, &PlanConfig::default().with_score(UncertaintyScore::Surprisal), 7)?;
//! assert_eq!(plan.requests().len(), 1); // one all-wrong subgroup, budget 0.25 * 4 = 1 resample
//! # Ok(()) }
//! ```
//!
//! ## Features
//!
//! | feature | default | what it does |
//! |---|---|---|
//! | `std` | yes | Enables `std` in `num-traits` and `half`. Without it the crate is `no_std` + `alloc`. |
//! | `arbitrary` | no | `arbitrary::Arbitrary` for the plain input types, for fuzzing (implies `std`). |
//! | `fast-cpu` | no | [`FastCpu`](backend::FastCpu), the fast CPU backend: `faer`'s SIMD matrix products on rayon's threads, a blocked multithreaded attention, the fused training step (implies `std`; adds `faer`, `rayon`, `pulp`). The reference [`Cpu`](backend::Cpu) backend stays the oracle. |
//!
//! ## Errors and panics
//!
//! Every fallible function returns [`Result`] with the crate's [`Error`]; no input makes the
//! library panic.
#![no_std]
#![forbid(unsafe_code)]
#![doc(test(attr(deny(warnings))))]

extern crate alloc;
// The `arbitrary` derive (which implies `std`) names `::std`.
#[cfg(feature = "std")]
extern crate std;

pub mod advantage;
pub mod backend;
pub mod diagnostics;
mod error;
pub mod metrics;
pub mod objective;
pub mod plan;
pub mod prefix;
pub mod rng;
pub mod subgroup;
pub mod trajectory;

pub use advantage::{AdvantageConfig, Credit, Credited, Estimator, StdMode, assign};
pub use diagnostics::{Diagnostics, diagnose};
pub use error::{BackendError, BackendErrorKind, Error, Result, check_finite, check_len};
pub use metrics::{mean_pass_at_k, pass_at_k};
pub use objective::{
    Aggregation, ObjectiveConfig, ObjectiveInputs, ObjectiveOutput, PolicyLoss, TrainingTokens,
    evaluate,
};
pub use plan::{BranchRequest, PlanConfig, ResamplePlan, plan};
pub use prefix::{CallChoice, CutPoint, SelectionStrategy, ThinkingPrefix, UncertaintyScore};
pub use subgroup::{Correctness, ToolSubgroup};
pub use trajectory::{
    Batch, BranchRollout, Group, GroupId, Origin, Reward, Role, Segmenter, Span, SpecialTokens,
    Trajectory, TrajectoryId,
};

/// The common imports.
pub mod prelude {
    pub use crate::backend::{Backend, Cpu, LogprobOps};
    pub use crate::{
        AdvantageConfig, Aggregation, Batch, BranchRequest, BranchRollout, CallChoice, Credit,
        CutPoint, Estimator, Group, GroupId, ObjectiveConfig, ObjectiveInputs, PlanConfig,
        PolicyLoss, ResamplePlan, Reward, Role, Segmenter, SelectionStrategy, Span, SpecialTokens,
        StdMode, TrainingTokens, Trajectory, TrajectoryId, UncertaintyScore, assign, evaluate,
        plan,
    };
}

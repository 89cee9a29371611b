//! Trajectories, roles, groups, origins and batches, with validation.
//!
//! A [`Trajectory`] is a token-id sequence split into role [`Span`]s. Policy roles
//! ([`Role::Think`], [`Role::ToolCall`], [`Role::Answer`]) are sampled by the policy and carry one
//! rollout log-probability per token; environment roles ([`Role::Prompt`],
//! [`Role::ToolResponse`], [`Role::Pad`]) carry none. The log-probabilities are stored only for
//! policy tokens, so a masked token has no log-prob slot at all: a placeholder value can never
//! reach a ratio.

mod batch;
mod segment;

use alloc::vec::Vec;
use core::fmt;

pub use batch::{Batch, BranchRollout, Group};
pub use segment::{Segmenter, SpecialTokens};

use crate::error::{Error, Result, check_len};

/// Identifies a trajectory within a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct TrajectoryId(pub u32);

impl fmt::Display for TrajectoryId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "trajectory #{}", self.0)
    }
}

/// Identifies a group (the rollouts of one question).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct GroupId(pub u32);

impl fmt::Display for GroupId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "group #{}", self.0)
    }
}

/// Who produced a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Source {
    /// Sampled by the policy: trained, has a log-prob.
    Policy,
    /// Written by the prompt or the environment: never trained, has no log-prob.
    Environment,
}

/// The role of a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub enum Role {
    /// The question, images and chat scaffolding before generation.
    Prompt,
    /// Policy reasoning (`<think> ... </think>`).
    Think,
    /// A policy tool call (`<tool_call> ... </tool_call>`).
    ToolCall,
    /// Any other policy text: the visible reply and the answer.
    Answer,
    /// Environment output (tool results, chat scaffolding between turns).
    ToolResponse,
    /// Padding after the end of the trajectory.
    Pad,
}

impl Role {
    /// Who produces tokens of this role.
    #[must_use]
    pub const fn source(self) -> Source {
        match self {
            Self::Think | Self::ToolCall | Self::Answer => Source::Policy,
            Self::Prompt | Self::ToolResponse | Self::Pad => Source::Environment,
        }
    }

    /// Whether the policy samples tokens of this role.
    #[must_use]
    pub const fn is_policy(self) -> bool {
        matches!(self.source(), Source::Policy)
    }
}

/// A run of tokens with one role: positions `start..end`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct Span {
    /// The role.
    pub role: Role,
    /// First position.
    pub start: usize,
    /// One past the last position.
    pub end: usize,
}

impl Span {
    /// Number of tokens.
    #[must_use]
    pub const fn len(&self) -> usize {
        self.end - self.start
    }

    /// Whether the span is empty (never true in a valid trajectory).
    #[must_use]
    pub const fn is_empty(&self) -> bool {
        self.end <= self.start
    }
}

/// Where a trajectory came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Origin {
    /// A rollout sampled from the question.
    Root,
    /// A resample that continues a root's frozen thinking prefix.
    Branch {
        /// The root it continues.
        parent: TrajectoryId,
        /// Length of the frozen prefix (tokens `0..prefix_len` equal the parent's).
        prefix_len: usize,
        /// Planning round that produced it (1-based).
        round: u32,
    },
}

/// A rollout's reward.
#[derive(Debug, Clone, Copy, PartialEq)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub enum Reward {
    /// A finite score.
    Scored(f32),
    /// The verifier could not score it: advantage 0, excluded from statistics, reported.
    Unscorable,
}

impl Reward {
    /// The spec's lenient reading of a raw score: non-finite means unscorable.
    #[must_use]
    pub fn from_score_lenient(score: f32) -> Self {
        if score.is_finite() {
            Self::Scored(score)
        } else {
            Self::Unscorable
        }
    }

    /// The score, if scored.
    #[must_use]
    pub const fn score(self) -> Option<f32> {
        match self {
            Self::Scored(s) => Some(s),
            Self::Unscorable => None,
        }
    }
}

/// Largest rollout log-probability accepted (a little above 0 for engine rounding).
pub const MAX_LOGPROB: f32 = 1e-4;

/// One rollout: tokens, role spans, per-policy-token rollout log-probs (and optionally
/// entropies), reward and origin.
#[derive(Debug, Clone, PartialEq)]
pub struct Trajectory {
    id: TrajectoryId,
    origin: Origin,
    tokens: Vec<u32>,
    spans: Vec<Span>,
    logprobs: Vec<f32>,
    entropies: Option<Vec<f32>>,
    reward: Reward,
}

impl Trajectory {
    /// A root trajectory.
    ///
    /// `spans` must cover `0..tokens.len()` contiguously with non-empty spans; `logprobs` holds
    /// one finite value `<= MAX_LOGPROB` per policy token, in order.
    ///
    /// # Errors
    /// [`Error::InvalidSpans`], [`Error::LengthMismatch`], [`Error::NonFinite`],
    /// [`Error::OutOfRange`], or [`Error::NonFiniteReward`] for a `Reward::Scored` that is not
    /// finite.
    pub fn new(
        id: TrajectoryId,
        tokens: Vec<u32>,
        spans: Vec<Span>,
        logprobs: Vec<f32>,
        reward: Reward,
    ) -> Result<Self> {
        validate_spans(Some(id), &spans, tokens.len())?;
        let policy = count_policy(&spans, tokens.len());
        check_len("rollout log-probs vs policy tokens", policy, logprobs.len())?;
        check_logprobs(&logprobs)?;
        if let Reward::Scored(r) = reward
            && !r.is_finite()
        {
            return Err(Error::NonFiniteReward { trajectory: id });
        }
        Ok(Self {
            id,
            origin: Origin::Root,
            tokens,
            spans,
            logprobs,
            entropies: None,
            reward,
        })
    }

    /// Attaches per-policy-token entropies of the sampling distribution (finite, `>= 0`).
    ///
    /// # Errors
    /// [`Error::LengthMismatch`], [`Error::NonFinite`], [`Error::OutOfRange`].
    pub fn with_entropies(mut self, entropies: Vec<f32>) -> Result<Self> {
        check_len(
            "entropies vs policy tokens",
            self.logprobs.len(),
            entropies.len(),
        )?;
        crate::error::check_finite("entropy", &entropies)?;
        if let Some(index) = entropies.iter().position(|&e| e < 0.0) {
            return Err(Error::OutOfRange {
                what: "entropy",
                index,
            });
        }
        self.entropies = Some(entropies);
        Ok(self)
    }

    /// Replaces the reward.
    ///
    /// # Errors
    /// [`Error::NonFiniteReward`] for a non-finite `Reward::Scored`.
    pub fn with_reward(mut self, reward: Reward) -> Result<Self> {
        if let Reward::Scored(r) = reward
            && !r.is_finite()
        {
            return Err(Error::NonFiniteReward {
                trajectory: self.id,
            });
        }
        self.reward = reward;
        Ok(self)
    }

    pub(crate) fn set_origin(&mut self, id: TrajectoryId, origin: Origin) {
        self.id = id;
        self.origin = origin;
    }

    /// The id.
    #[must_use]
    pub fn id(&self) -> TrajectoryId {
        self.id
    }
    /// The origin.
    #[must_use]
    pub fn origin(&self) -> Origin {
        self.origin
    }
    /// Whether this is a root rollout.
    #[must_use]
    pub fn is_root(&self) -> bool {
        matches!(self.origin, Origin::Root)
    }
    /// Token ids.
    #[must_use]
    pub fn tokens(&self) -> &[u32] {
        &self.tokens
    }
    /// Role spans, in order.
    #[must_use]
    pub fn spans(&self) -> &[Span] {
        &self.spans
    }
    /// Rollout log-probs, one per policy token.
    #[must_use]
    pub fn logprobs(&self) -> &[f32] {
        &self.logprobs
    }
    /// Entropies, one per policy token, if attached.
    #[must_use]
    pub fn entropies(&self) -> Option<&[f32]> {
        self.entropies.as_deref()
    }
    /// The reward.
    #[must_use]
    pub fn reward(&self) -> Reward {
        self.reward
    }
    /// Number of tokens.
    #[must_use]
    pub fn len(&self) -> usize {
        self.tokens.len()
    }
    /// Whether there are no tokens.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }

    /// The role of the token at `position`.
    #[must_use]
    pub fn role_at(&self, position: usize) -> Option<Role> {
        let i = self.spans.partition_point(|s| s.end <= position);
        self.spans
            .get(i)
            .filter(|s| s.start <= position)
            .map(|s| s.role)
    }

    /// Number of policy tokens at positions `< position` (the policy-token index of `position`).
    #[must_use]
    pub fn policy_index(&self, position: usize) -> usize {
        self.spans
            .iter()
            .filter(|s| s.role.is_policy() && s.start < position)
            .map(|s| s.end.min(position) - s.start)
            .sum()
    }

    /// Positions of all policy tokens, in order.
    pub fn policy_positions(&self) -> impl Iterator<Item = usize> + Clone + '_ {
        self.spans
            .iter()
            .filter(|s| s.role.is_policy())
            .flat_map(|s| s.start..s.end)
    }

    /// The tool-call spans, in order.
    pub fn tool_calls(&self) -> impl Iterator<Item = &Span> + '_ {
        self.spans.iter().filter(|s| s.role == Role::ToolCall)
    }

    /// Whether the trajectory makes at least one tool call.
    #[must_use]
    pub fn uses_tools(&self) -> bool {
        self.tool_calls().next().is_some()
    }
}

/// The roles of positions `0..n` under `spans`, expanded one per token.
pub(crate) fn span_roles(spans: &[Span], n: usize) -> impl Iterator<Item = Role> + '_ {
    spans
        .iter()
        .filter(move |s| s.start < n)
        .flat_map(move |s| core::iter::repeat_n(s.role, s.end.min(n) - s.start))
}

/// Number of policy tokens covered by spans (bounded by `len`).
fn count_policy(spans: &[Span], len: usize) -> usize {
    spans
        .iter()
        .filter(|s| s.role.is_policy())
        .map(|s| s.end.min(len).saturating_sub(s.start))
        .sum()
}

fn check_logprobs(logprobs: &[f32]) -> Result<()> {
    crate::error::check_finite("rollout log-prob", logprobs)?;
    match logprobs.iter().position(|&l| l > MAX_LOGPROB) {
        Some(index) => Err(Error::OutOfRange {
            what: "rollout log-prob (must be <= 0)",
            index,
        }),
        None => Ok(()),
    }
}

/// Checks that spans cover `0..len` contiguously, each non-empty.
///
/// # Errors
/// [`Error::InvalidSpans`].
pub fn validate_spans(trajectory: Option<TrajectoryId>, spans: &[Span], len: usize) -> Result<()> {
    let mut at = 0;
    for s in spans {
        let bad = |reason| {
            Err(Error::InvalidSpans {
                trajectory,
                reason,
                position: s.start,
            })
        };
        if s.start != at {
            return bad("spans must be contiguous, starting at 0");
        }
        if s.end <= s.start {
            return bad("spans must be non-empty");
        }
        at = s.end;
    }
    if at != len {
        return Err(Error::InvalidSpans {
            trajectory,
            reason: "spans must end at the last token",
            position: at,
        });
    }
    Ok(())
}

/// Merges per-token roles into spans (consecutive equal roles become one span).
#[must_use]
pub fn spans_from_roles(roles: &[Role]) -> Vec<Span> {
    let mut spans: Vec<Span> = Vec::new();
    for (i, &role) in roles.iter().enumerate() {
        match spans.last_mut() {
            Some(last) if last.role == role => last.end = i + 1,
            _ => spans.push(Span {
                role,
                start: i,
                end: i + 1,
            }),
        }
    }
    spans
}

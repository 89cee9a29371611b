//! The rollout engine: episodes that walk the grammar, sampling the policy's tokens and
//! executing the zoom tool; groups of root rollouts; and continuations of a frozen prefix for
//! the core's branch requests.

use axpo_core::rng::Rng;
use axpo_core::{
    Batch, BranchRequest, BranchRollout, Group, GroupId, Reward, Segmenter, Span, TrainingTokens,
    Trajectory, TrajectoryId,
};

use super::env::{Image, Question, Window};
use super::error::{DemoError, DemoResult};
use super::grammar::{Actor, Context, Cursor, GrammarError, policy_contexts};
use super::policy::{Policy, Rows, features};
use super::vocab::PROMPT;

/// One rollout in progress: the stream so far, the grammar cursor, the tool's returned crop,
/// and the sampling log-probs and entropies of the policy tokens after the frozen prefix.
#[derive(Debug, Clone)]
pub struct Episode<'q> {
    question: &'q Question,
    tokens: Vec<u32>,
    cursor: Cursor,
    prefix_len: usize,
    observation: Option<Image>,
    logprobs: Vec<f32>,
    entropies: Vec<f32>,
}

impl<'q> Episode<'q> {
    /// A fresh rollout of `question`: the prompt, nothing sampled yet.
    #[must_use]
    pub fn fresh(question: &'q Question) -> Self {
        Self {
            question,
            tokens: PROMPT.to_vec(),
            cursor: Cursor::new(),
            prefix_len: PROMPT.len(),
            observation: None,
            logprobs: Vec::new(),
            entropies: Vec::new(),
        }
    }

    /// A rollout that continues a frozen `prefix` (prompt included): the prefix is replayed as
    /// context (the same image; a tool call inside the prefix is executed again), and only what
    /// follows it will be sampled.
    ///
    /// # Errors
    /// [`DemoError::Grammar`] if the prefix breaks the grammar; [`DemoError::Internal`] if it
    /// does not start with the prompt.
    pub fn continue_from(question: &'q Question, prefix: &[u32]) -> DemoResult<Self> {
        if !prefix.starts_with(&PROMPT) {
            return Err(DemoError::Internal(
                "a frozen prefix must start with the prompt".into(),
            ));
        }
        let mut e = Self::fresh(question);
        for &t in &prefix[PROMPT.len()..] {
            e.push(t, None)?;
        }
        e.prefix_len = prefix.len();
        Ok(e)
    }

    /// The question.
    #[must_use]
    pub fn question(&self) -> &'q Question {
        self.question
    }

    /// The tokens so far.
    #[must_use]
    pub fn tokens(&self) -> &[u32] {
        &self.tokens
    }

    fn push(&mut self, token: u32, sampled: Option<(f32, f32)>) -> Result<(), GrammarError> {
        self.cursor.push(token)?;
        self.tokens.push(token);
        if let Some((lp, h)) = sampled {
            self.logprobs.push(lp);
            self.entropies.push(h);
        }
        if self.observation.is_none()
            && let Some(window) = self.cursor.observed()
        {
            // The tool response is complete: execute the zoom.
            self.observation = Some(self.question.zoom(window));
        }
        Ok(())
    }

    /// Appends environment tokens and forced policy tokens (log-prob 0, entropy 0) until the
    /// policy has a real choice to make (returns its context) or the rollout is over (`None`).
    ///
    /// # Errors
    /// [`DemoError::Grammar`] (never, for a well-formed episode).
    pub fn advance(&mut self) -> DemoResult<Option<Context>> {
        loop {
            match self.cursor.actor() {
                Actor::Done => return Ok(None),
                Actor::Environment(t) => self.push(t, None)?,
                Actor::Policy(s) => match s.forced() {
                    Some(t) => self.push(t, Some((0.0, 0.0)))?,
                    None => return Ok(self.cursor.context()),
                },
            }
        }
    }

    /// Finishes the rollout: role spans from the core's segmenter, and the reward.
    ///
    /// # Errors
    /// [`DemoError::Internal`] if the rollout is not over or the segmenter disagrees with the
    /// grammar on which tokens the policy produced; a core error from the segmenter.
    pub fn finish(self, segmenter: &Segmenter) -> DemoResult<Finished> {
        if self.cursor.actor() != Actor::Done {
            return Err(DemoError::Internal(
                "finishing an unfinished rollout".into(),
            ));
        }
        let spans = segmenter.segment(&self.tokens, PROMPT.len())?;
        let tail_policy: usize = spans
            .iter()
            .filter(|s| s.role.is_policy())
            .map(|s| s.end.max(self.prefix_len) - s.start.max(self.prefix_len))
            .sum();
        if tail_policy != self.logprobs.len() {
            return Err(DemoError::Internal(format!(
                "segmenter found {tail_policy} policy tokens after the prefix, the sampler {}",
                self.logprobs.len()
            )));
        }
        Ok(Finished {
            reward: self.question.score(self.cursor.answer()),
            answer: self.cursor.answer(),
            think_region: self.cursor.think_region(),
            call: self.cursor.call_window(),
            target: self.question.target,
            prefix_len: self.prefix_len,
            tokens: self.tokens,
            spans,
            logprobs: self.logprobs,
            entropies: self.entropies,
        })
    }
}

/// A finished rollout.
#[derive(Debug, Clone, PartialEq)]
pub struct Finished {
    /// All tokens, prompt included.
    pub tokens: Vec<u32>,
    /// Role spans from the core's segmenter.
    pub spans: Vec<Span>,
    /// Sampling log-probs of the policy tokens after the frozen prefix.
    pub logprobs: Vec<f32>,
    /// Entropies of the same tokens.
    pub entropies: Vec<f32>,
    /// Length of the frozen prefix (the prompt for a root).
    pub prefix_len: usize,
    /// The binary reward.
    pub reward: f32,
    /// The answered digit.
    pub answer: Option<u8>,
    /// The region named in the thinking.
    pub think_region: Option<u8>,
    /// The zoom window of the tool call, if it made one.
    pub call: Option<Window>,
    /// The question's target cell.
    pub target: u8,
}

impl Finished {
    /// Whether it called the tool.
    #[must_use]
    pub fn used_tool(&self) -> bool {
        self.call.is_some()
    }

    /// Whether it zoomed on the window that shows the target.
    #[must_use]
    pub fn zoomed_on_target(&self) -> bool {
        self.call == Some(Window::of_region(self.target))
    }

    /// Whether its thinking named the target's region.
    #[must_use]
    pub fn thought_of_target(&self) -> bool {
        self.think_region == Some(self.target)
    }

    /// As a root trajectory of the core.
    ///
    /// # Errors
    /// A core validation error.
    pub fn into_root(self, id: TrajectoryId) -> DemoResult<Trajectory> {
        Ok(Trajectory::new(
            id,
            self.tokens,
            self.spans,
            self.logprobs,
            Reward::Scored(self.reward),
        )?
        .with_entropies(self.entropies)?)
    }

    /// As the answer to a branch request of `parent`.
    #[must_use]
    pub fn into_branch(self, parent: TrajectoryId) -> BranchRollout {
        BranchRollout {
            parent,
            prefix_len: self.prefix_len,
            tokens: self.tokens,
            spans: self.spans,
            tail_logprobs: self.logprobs,
            tail_entropies: Some(self.entropies),
            reward: Reward::Scored(self.reward),
        }
    }
}

/// Samples every episode to the end, batching the policy's forward pass across episodes.
///
/// # Errors
/// [`DemoError::Grammar`] (never, for well-formed episodes).
pub fn run_episodes(
    policy: &Policy,
    episodes: &mut [Episode<'_>],
    rng: &mut Rng,
) -> DemoResult<()> {
    let mut feats = Vec::new();
    let mut row = Vec::new();
    let mut states = Vec::new();
    let mut pending = Vec::new();
    loop {
        feats.clear();
        states.clear();
        pending.clear();
        for (i, e) in episodes.iter_mut().enumerate() {
            if let Some(ctx) = e.advance()? {
                features(e.question, &ctx, e.observation.as_ref(), &mut row);
                feats.extend_from_slice(&row);
                states.push(ctx.state);
                pending.push(i);
            }
        }
        if pending.is_empty() {
            return Ok(());
        }
        let dists = policy.distributions(&feats, &states);
        for (&i, d) in pending.iter().zip(&dists) {
            let (k, t) = d.sample(rng);
            episodes[i].push(t, Some((d.logp[k], d.entropy)))?;
        }
    }
}

/// Samples `sizes[g]` fresh rollouts of each `questions[g]`.
///
/// # Errors
/// As [`run_episodes`] and [`Episode::finish`].
pub fn sample_fresh(
    policy: &Policy,
    questions: &[Question],
    sizes: &[usize],
    rng: &mut Rng,
    segmenter: &Segmenter,
) -> DemoResult<Vec<Vec<Finished>>> {
    let mut episodes: Vec<Episode<'_>> = Vec::new();
    for (q, &n) in questions.iter().zip(sizes) {
        episodes.extend(std::iter::repeat_n(Episode::fresh(q), n));
    }
    run_episodes(policy, &mut episodes, rng)?;
    let mut out: Vec<Vec<Finished>> = Vec::with_capacity(questions.len());
    let mut it = episodes.into_iter();
    for &n in sizes {
        let mut g = Vec::with_capacity(n);
        for e in it.by_ref().take(n) {
            g.push(e.finish(segmenter)?);
        }
        out.push(g);
    }
    Ok(out)
}

/// The batch of root rollouts: group `g` is `GroupId(g)` (question `g`), ids numbered in order.
///
/// # Errors
/// A core validation error.
pub fn root_batch(groups: &[Vec<Finished>]) -> DemoResult<Batch> {
    let mut next = 0u32;
    let mut out = Vec::with_capacity(groups.len());
    for (g, rollouts) in groups.iter().enumerate() {
        let mut roots = Vec::with_capacity(rollouts.len());
        for f in rollouts {
            roots.push(f.clone().into_root(TrajectoryId(next))?);
            next += 1;
        }
        out.push(Group::new(GroupId(g as u32), roots)?);
    }
    Ok(Batch::new(out)?)
}

/// Continues each request's frozen prefix `count` times. The question of a trajectory of
/// `GroupId(g)` is `questions[g]`.
///
/// # Errors
/// [`DemoError::Internal`] for a request whose parent is not in the batch; as
/// [`run_episodes`].
pub fn sample_branches(
    policy: &Policy,
    batch: &Batch,
    questions: &[Question],
    requests: &[BranchRequest],
    rng: &mut Rng,
    segmenter: &Segmenter,
) -> DemoResult<Vec<(TrajectoryId, Finished)>> {
    let mut episodes = Vec::new();
    let mut parents = Vec::new();
    for r in requests {
        let (group, parent) = batch.find(r.parent).ok_or_else(|| {
            DemoError::Internal(format!("branch request for unknown {}", r.parent))
        })?;
        let question = questions
            .get(group.id().0 as usize)
            .ok_or_else(|| DemoError::Internal(format!("no question for {}", group.id())))?;
        let prefix = parent.tokens().get(..r.prefix_len).ok_or_else(|| {
            DemoError::Internal(format!("prefix of {} longer than the rollout", r.parent))
        })?;
        let e = Episode::continue_from(question, prefix)?;
        for _ in 0..r.count {
            episodes.push(e.clone());
            parents.push(r.parent);
        }
    }
    run_episodes(policy, &mut episodes, rng)?;
    parents
        .into_iter()
        .zip(episodes)
        .map(|(p, e)| Ok((p, e.finish(segmenter)?)))
        .collect()
}

/// The policy rows of the trained tokens: features of each token's context, its grammar state
/// and its id. The question of a trajectory of `GroupId(g)` is `questions[g]`.
///
/// # Errors
/// [`DemoError::Internal`] if a trained token is not a policy position; a grammar error.
pub fn training_rows(
    batch: &Batch,
    tokens: &TrainingTokens,
    questions: &[Question],
) -> DemoResult<Rows> {
    let mut rows = Rows::default();
    let mut buf = Vec::new();
    for (s, id) in tokens.sequences.iter().enumerate() {
        let (group, t) = batch
            .find(*id)
            .ok_or_else(|| DemoError::Internal(format!("trained {id} is not in the batch")))?;
        let question = questions
            .get(group.id().0 as usize)
            .ok_or_else(|| DemoError::Internal(format!("no question for {}", group.id())))?;
        let contexts = policy_contexts(t.tokens(), PROMPT.len())?;
        for k in tokens.seq_offsets[s]..tokens.seq_offsets[s + 1] {
            let pos = tokens.rows[k].position;
            let ctx = contexts
                .binary_search_by_key(&pos, |c| c.0)
                .ok()
                .map(|i| contexts[i].1)
                .ok_or_else(|| {
                    DemoError::Internal(format!("{id}: position {pos} is not a policy token"))
                })?;
            let obs = ctx.observed.map(|r| question.zoom(r));
            features(question, &ctx, obs.as_ref(), &mut buf);
            rows.features.extend_from_slice(&buf);
            rows.states.push(ctx.state);
            rows.targets.push(tokens.targets[k]);
        }
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::demo::env::{Split, TaskConfig};
    use crate::demo::policy::{PolicyShape, feature_width};
    use crate::demo::vocab::{TOOL_CALL_OPEN, segmenter};

    fn setup() -> (Policy, Vec<Question>) {
        let task = TaskConfig::default();
        let shape = PolicyShape {
            input: feature_width(task.global_size),
            hidden: 8,
        };
        let policy = Policy::new(shape, &mut Rng::new(2, 0));
        let questions = (0..6)
            .map(|i| Question::generate(&task, 2, Split::Train, i))
            .collect();
        (policy, questions)
    }

    #[test]
    fn root_rollouts_are_complete_and_scored() {
        let (policy, questions) = setup();
        let seg = segmenter();
        let groups = sample_fresh(&policy, &questions, &[5; 6], &mut Rng::new(1, 1), &seg).unwrap();
        let batch = root_batch(&groups).unwrap();
        assert_eq!(batch.root_count(), 30);
        for (g, group) in groups.iter().enumerate() {
            for f in group {
                assert_eq!(f.prefix_len, PROMPT.len());
                assert_eq!(f.reward, questions[g].score(f.answer));
                assert!(f.answer.is_some());
                let contexts = policy_contexts(&f.tokens, PROMPT.len()).unwrap();
                assert_eq!(contexts.len(), f.logprobs.len());
                assert_eq!(f.used_tool(), f.tokens.contains(&TOOL_CALL_OPEN));
                // Forced tokens: log-prob 0, entropy 0; choices: entropy > 0 (uniform-ish policy).
                for ((_, c), (lp, h)) in contexts.iter().zip(f.logprobs.iter().zip(&f.entropies)) {
                    if c.state.forced().is_some() {
                        assert_eq!((*lp, *h), (0.0, 0.0));
                    } else {
                        assert!(*lp < 0.0 && *h > 0.0);
                    }
                }
            }
        }
    }

    #[test]
    fn a_continuation_keeps_the_frozen_prefix_and_samples_only_the_tail() {
        let (policy, questions) = setup();
        let seg = segmenter();
        let mut rng = Rng::new(4, 4);
        let groups = sample_fresh(&policy, &questions, &[12; 6], &mut rng, &seg).unwrap();
        let (g, parent) = groups
            .iter()
            .enumerate()
            .find_map(|(g, v)| v.iter().find(|f| f.used_tool()).map(|f| (g, f)))
            .unwrap();
        let open = parent
            .tokens
            .iter()
            .position(|&t| t == TOOL_CALL_OPEN)
            .unwrap();
        // Cut after the call's opening token: the continuation must act.
        let prefix = &parent.tokens[..=open];
        let mut episodes = vec![Episode::continue_from(&questions[g], prefix).unwrap(); 8];
        run_episodes(&policy, &mut episodes, &mut rng).unwrap();
        for e in episodes {
            let f = e.finish(&seg).unwrap();
            assert_eq!(&f.tokens[..prefix.len()], prefix);
            assert!(f.used_tool());
            assert_eq!(f.prefix_len, prefix.len());
            // Tail policy tokens: zoom cx cy </tool_call> <|im_end|> d <|im_end|>.
            assert_eq!(f.logprobs.len(), 7);
        }
        // A prefix that already holds the whole tool response: the zoom is executed again.
        let answer_pos = parent.tokens.len() - 2;
        let e = Episode::continue_from(&questions[g], &parent.tokens[..answer_pos]).unwrap();
        assert_eq!(
            e.observation,
            parent.call.map(|w| questions[g].zoom(w)),
            "the replayed tool call returns the same crop"
        );
        // A prefix that breaks the grammar is refused, as is one without the prompt.
        let mut bad = prefix.to_vec();
        bad.push(TOOL_CALL_OPEN);
        assert!(Episode::continue_from(&questions[g], &bad).is_err());
        assert!(Episode::continue_from(&questions[g], &prefix[1..]).is_err());
    }

    #[test]
    fn training_rows_follow_the_trained_tokens() {
        let (policy, questions) = setup();
        let seg = segmenter();
        let groups = sample_fresh(&policy, &questions, &[4; 6], &mut Rng::new(3, 3), &seg).unwrap();
        let batch = root_batch(&groups).unwrap();
        let credited = axpo_core::assign(&batch, &axpo_core::AdvantageConfig::default()).unwrap();
        let tokens = TrainingTokens::new(&batch, &credited).unwrap();
        let rows = training_rows(&batch, &tokens, &questions).unwrap();
        assert_eq!(rows.len(), tokens.token_count());
        assert_eq!(rows.targets, tokens.targets);
        for (s, t) in rows.states.iter().zip(&rows.targets) {
            assert!(s.allows(*t));
        }
        // The rollout log-probs are the host's; the backend's agree.
        let pass = policy
            .head_pass(&axpo_core::backend::Cpu::new(), &rows)
            .unwrap();
        for (a, b) in pass.logp.iter().zip(&tokens.old_logp) {
            assert!((a - b).abs() < 1e-4);
        }
    }
}

//! The demo's grammar: which tokens the policy may emit at each point of a rollout, and a cursor
//! that walks a token stream through it (policy and environment turns alike).
//!
//! The policy always thinks first (`<think> r </think>`, naming the cell where it believes the
//! target is), then either answers a digit or opens a tool call `<tool_call> zoom cx cy
//! </tool_call> <|im_end|>` whose arguments are the zoom window's coordinates; after the
//! environment's tool response it answers. At most one call per rollout. The grammar never
//! dead-ends: every state has at least one valid token, so every rollout ends, after at most 11
//! policy tokens.

use std::fmt;

use super::env::Window;
use super::vocab::{
    COORD_BASE, COORDS, DIGIT_BASE, DIGITS, IM_END, REGION_BASE, REGIONS, THINK_CLOSE, THINK_OPEN,
    TOOL_CALL_CLOSE, TOOL_CALL_OPEN, TOOL_RESPONSE, ZOOM, token_coord, token_digit, token_region,
};

/// A policy position's grammar state: what the next policy token may be.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum State {
    /// `<think>` (forced).
    ThinkOpen,
    /// A region token: where the policy believes the target is.
    ThinkRegion,
    /// `</think>` (forced).
    ThinkClose,
    /// Act or answer: `<tool_call>` or a digit.
    Decide,
    /// The tool's name, `zoom` (forced).
    CallName,
    /// The zoom window's column: a coordinate token.
    CallX,
    /// The zoom window's row: a coordinate token.
    CallY,
    /// `</tool_call>` (forced).
    CallClose,
    /// `<|im_end|>` closing the acting turn (forced).
    CallEnd,
    /// A digit, after the tool response.
    Answer,
    /// `<|im_end|>` closing the answer (forced).
    AnswerEnd,
}

const REGION_TOKENS: [u32; REGIONS] = [
    REGION_BASE,
    REGION_BASE + 1,
    REGION_BASE + 2,
    REGION_BASE + 3,
    REGION_BASE + 4,
    REGION_BASE + 5,
    REGION_BASE + 6,
    REGION_BASE + 7,
    REGION_BASE + 8,
];

const COORD_TOKENS: [u32; COORDS] = [
    COORD_BASE,
    COORD_BASE + 1,
    COORD_BASE + 2,
    COORD_BASE + 3,
    COORD_BASE + 4,
];

const DIGIT_TOKENS: [u32; DIGITS] = [
    DIGIT_BASE,
    DIGIT_BASE + 1,
    DIGIT_BASE + 2,
    DIGIT_BASE + 3,
    DIGIT_BASE + 4,
    DIGIT_BASE + 5,
    DIGIT_BASE + 6,
    DIGIT_BASE + 7,
    DIGIT_BASE + 8,
    DIGIT_BASE + 9,
];

const DECIDE_TOKENS: [u32; DIGITS + 1] = [
    TOOL_CALL_OPEN,
    DIGIT_BASE,
    DIGIT_BASE + 1,
    DIGIT_BASE + 2,
    DIGIT_BASE + 3,
    DIGIT_BASE + 4,
    DIGIT_BASE + 5,
    DIGIT_BASE + 6,
    DIGIT_BASE + 7,
    DIGIT_BASE + 8,
    DIGIT_BASE + 9,
];

impl State {
    /// Every state, in [`State::index`] order.
    pub const ALL: [Self; 11] = [
        Self::ThinkOpen,
        Self::ThinkRegion,
        Self::ThinkClose,
        Self::Decide,
        Self::CallName,
        Self::CallX,
        Self::CallY,
        Self::CallClose,
        Self::CallEnd,
        Self::Answer,
        Self::AnswerEnd,
    ];

    /// Number of states.
    pub const COUNT: usize = 11;

    /// A dense index in `0..COUNT`.
    #[must_use]
    pub fn index(self) -> usize {
        match self {
            Self::ThinkOpen => 0,
            Self::ThinkRegion => 1,
            Self::ThinkClose => 2,
            Self::Decide => 3,
            Self::CallName => 4,
            Self::CallX => 5,
            Self::CallY => 6,
            Self::CallClose => 7,
            Self::CallEnd => 8,
            Self::Answer => 9,
            Self::AnswerEnd => 10,
        }
    }

    /// The tokens the policy may emit here (never empty).
    #[must_use]
    pub fn valid(self) -> &'static [u32] {
        match self {
            Self::ThinkOpen => &[THINK_OPEN],
            Self::ThinkRegion => &REGION_TOKENS,
            Self::CallX | Self::CallY => &COORD_TOKENS,
            Self::ThinkClose => &[THINK_CLOSE],
            Self::Decide => &DECIDE_TOKENS,
            Self::CallName => &[ZOOM],
            Self::CallClose => &[TOOL_CALL_CLOSE],
            Self::CallEnd | Self::AnswerEnd => &[IM_END],
            Self::Answer => &DIGIT_TOKENS,
        }
    }

    /// Whether `token` is valid here.
    #[must_use]
    pub fn allows(self, token: u32) -> bool {
        self.valid().contains(&token)
    }

    /// The only valid token, when there is one choice.
    #[must_use]
    pub fn forced(self) -> Option<u32> {
        match self.valid() {
            [t] => Some(*t),
            _ => None,
        }
    }
}

/// Who produces the next token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Actor {
    /// The policy, in this grammar state.
    Policy(State),
    /// The environment: the next token of its tool response, which is fixed.
    Environment(u32),
    /// The rollout is over.
    Done,
}

/// A token that the grammar does not allow where it appears.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrammarError {
    /// Who was expected to produce the token.
    pub expected: Actor,
    /// The offending token.
    pub token: u32,
    /// Its position after the prompt.
    pub position: usize,
}

impl fmt::Display for GrammarError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "token {} ({}) at position {} breaks the demo grammar (expected {:?})",
            self.token,
            super::vocab::token_text(self.token),
            self.position,
            self.expected
        )
    }
}

impl std::error::Error for GrammarError {}

/// What the policy sees at a position besides the images: the grammar state and the tokens it
/// has emitted that matter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Context {
    /// The grammar state.
    pub state: State,
    /// The region named in the thinking, once emitted.
    pub think_region: Option<u8>,
    /// The zoom window's column, once emitted.
    pub call_x: Option<u8>,
    /// The zoom window's row, once emitted.
    pub call_y: Option<u8>,
    /// The window whose crop the tool returned, once the response is complete.
    pub observed: Option<Window>,
}

/// Walks a rollout (after the prompt) through the grammar.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor {
    actor: Actor,
    /// Tokens pushed so far (after the prompt).
    pushed: usize,
    /// Progress through the tool response.
    env_done: usize,
    think_region: Option<u8>,
    call_x: Option<u8>,
    call_y: Option<u8>,
    observed: Option<Window>,
    answer: Option<u8>,
}

impl Default for Cursor {
    fn default() -> Self {
        Self::new()
    }
}

impl Cursor {
    /// A cursor right after the prompt.
    #[must_use]
    pub fn new() -> Self {
        Self {
            actor: Actor::Policy(State::ThinkOpen),
            pushed: 0,
            env_done: 0,
            think_region: None,
            call_x: None,
            call_y: None,
            observed: None,
            answer: None,
        }
    }

    /// Who produces the next token.
    #[must_use]
    pub fn actor(&self) -> Actor {
        self.actor
    }

    /// The policy's context, when the policy acts next.
    #[must_use]
    pub fn context(&self) -> Option<Context> {
        match self.actor {
            Actor::Policy(state) => Some(Context {
                state,
                think_region: self.think_region,
                call_x: self.call_x,
                call_y: self.call_y,
                observed: self.observed,
            }),
            Actor::Environment(_) | Actor::Done => None,
        }
    }

    /// The region named in the thinking, once named.
    #[must_use]
    pub fn think_region(&self) -> Option<u8> {
        self.think_region
    }

    /// The zoom window of the tool call, once both coordinates are emitted.
    #[must_use]
    pub fn call_window(&self) -> Option<Window> {
        Some(Window {
            x: self.call_x?,
            y: self.call_y?,
        })
    }

    /// The answered digit, once answered.
    #[must_use]
    pub fn answer(&self) -> Option<u8> {
        self.answer
    }

    /// The window whose crop the tool returned, once returned.
    #[must_use]
    pub fn observed(&self) -> Option<Window> {
        self.observed
    }

    /// Consumes the next token, whoever produced it.
    ///
    /// # Errors
    /// [`GrammarError`] if the token is not allowed here (the cursor is left unchanged).
    pub fn push(&mut self, token: u32) -> Result<(), GrammarError> {
        let bad = GrammarError {
            expected: self.actor,
            token,
            position: self.pushed,
        };
        let next = match self.actor {
            Actor::Done => return Err(bad),
            Actor::Environment(expected) => {
                if token != expected {
                    return Err(bad);
                }
                self.env_done += 1;
                match TOOL_RESPONSE.get(self.env_done) {
                    Some(&t) => Actor::Environment(t),
                    None => {
                        self.observed = self.call_window();
                        Actor::Policy(State::Answer)
                    }
                }
            }
            Actor::Policy(state) => {
                if !state.allows(token) {
                    return Err(bad);
                }
                match state {
                    State::ThinkOpen => Actor::Policy(State::ThinkRegion),
                    State::ThinkRegion => {
                        self.think_region = token_region(token);
                        Actor::Policy(State::ThinkClose)
                    }
                    State::ThinkClose => Actor::Policy(State::Decide),
                    State::Decide if token == TOOL_CALL_OPEN => Actor::Policy(State::CallName),
                    State::Decide | State::Answer => {
                        self.answer = token_digit(token);
                        Actor::Policy(State::AnswerEnd)
                    }
                    State::CallName => Actor::Policy(State::CallX),
                    State::CallX => {
                        self.call_x = token_coord(token);
                        Actor::Policy(State::CallY)
                    }
                    State::CallY => {
                        self.call_y = token_coord(token);
                        Actor::Policy(State::CallClose)
                    }
                    State::CallClose => Actor::Policy(State::CallEnd),
                    State::CallEnd => {
                        self.env_done = 0;
                        Actor::Environment(TOOL_RESPONSE[0])
                    }
                    State::AnswerEnd => Actor::Done,
                }
            }
        };
        self.actor = next;
        self.pushed += 1;
        Ok(())
    }
}

/// The policy context of every policy token of a rollout, as `(position, context)` pairs in
/// order; `tokens` is the whole stream and its first `prompt_len` tokens are the prompt.
///
/// # Errors
/// [`GrammarError`] if the stream breaks the grammar.
pub fn policy_contexts(
    tokens: &[u32],
    prompt_len: usize,
) -> Result<Vec<(usize, Context)>, GrammarError> {
    let mut cursor = Cursor::new();
    let mut out = Vec::with_capacity(10);
    for (pos, &t) in tokens.iter().enumerate().skip(prompt_len) {
        if let Some(ctx) = cursor.context() {
            out.push((pos, ctx));
        }
        cursor.push(t)?;
    }
    Ok(out)
}

// The coordinate tokens cover exactly the zoom-window grid.
const _: () = assert!(COORDS == super::env::WINDOWS_PER_AXIS);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::demo::vocab::{PROMPT, coord_token, digit_token, region_token, segmenter};
    use axpo_core::Role;

    fn tool_rollout() -> Vec<u32> {
        let mut t = PROMPT.to_vec();
        t.extend([THINK_OPEN, region_token(4), THINK_CLOSE]);
        t.extend([TOOL_CALL_OPEN, ZOOM, coord_token(2), coord_token(2)]);
        t.extend([TOOL_CALL_CLOSE, IM_END]);
        t.extend(TOOL_RESPONSE);
        t.extend([digit_token(7), IM_END]);
        t
    }

    #[test]
    fn a_tool_rollout_walks_the_grammar() {
        let t = tool_rollout();
        let mut c = Cursor::new();
        for &tok in &t[PROMPT.len()..] {
            c.push(tok).unwrap();
        }
        assert_eq!(c.actor(), Actor::Done);
        assert_eq!(c.answer(), Some(7));
        assert_eq!(c.think_region(), Some(4));
        assert_eq!(c.call_window(), Some(Window { x: 2, y: 2 }));
        assert_eq!(c.observed(), Some(Window { x: 2, y: 2 }));
        let ctx = policy_contexts(&t, PROMPT.len()).unwrap();
        // 3 think + 6 call + 2 answer policy tokens.
        assert_eq!(ctx.len(), 11);
        let last = ctx.last().unwrap().1;
        assert_eq!(last.state, State::AnswerEnd);
        assert_eq!(last.observed, Some(Window { x: 2, y: 2 }));
        // Before the response completes nothing is observed.
        assert!(ctx.iter().take(9).all(|(_, c)| c.observed.is_none()));
    }

    #[test]
    fn invalid_tokens_are_rejected_and_leave_the_cursor_unchanged() {
        let mut c = Cursor::new();
        let e = c.push(digit_token(1)).unwrap_err();
        assert_eq!(e.expected, Actor::Policy(State::ThinkOpen));
        assert_eq!(c, Cursor::new());
        let mut t = tool_rollout();
        // A region token where a coordinate belongs.
        t[PROMPT.len() + 5] = region_token(1);
        assert!(policy_contexts(&t, PROMPT.len()).is_err());
        // Trailing tokens after the end.
        let mut t = tool_rollout();
        t.push(IM_END);
        assert!(policy_contexts(&t, PROMPT.len()).is_err());
    }

    #[test]
    fn every_state_has_a_choice_and_forced_states_have_one() {
        for s in State::ALL {
            assert!(!s.valid().is_empty());
            assert_eq!(s.forced().is_some(), s.valid().len() == 1, "{s:?}");
            assert_eq!(State::ALL[s.index()], s);
        }
        assert_eq!(State::Decide.valid().len(), 11);
        assert!(State::Decide.allows(TOOL_CALL_OPEN));
        assert!(!State::Answer.allows(TOOL_CALL_OPEN));
    }

    #[test]
    fn the_core_segmenter_assigns_the_expected_roles() {
        let t = tool_rollout();
        let roles = segmenter().roles(&t, PROMPT.len()).unwrap();
        let p = PROMPT.len();
        assert!(roles[..p].iter().all(|r| *r == Role::Prompt));
        assert!(roles[p..p + 3].iter().all(|r| *r == Role::Think));
        assert!(roles[p + 3..p + 9].iter().all(|r| *r == Role::ToolCall));
        assert!(
            roles[p + 9..p + 9 + TOOL_RESPONSE.len()]
                .iter()
                .all(|r| *r == Role::ToolResponse)
        );
        assert!(roles[t.len() - 2..].iter().all(|r| *r == Role::Answer));
        // The policy tokens are exactly the grammar's policy positions.
        let policy: Vec<usize> = (0..t.len()).filter(|&i| roles[i].is_policy()).collect();
        let ctx: Vec<usize> = policy_contexts(&t, p)
            .unwrap()
            .iter()
            .map(|c| c.0)
            .collect();
        assert_eq!(policy, ctx);
    }
}

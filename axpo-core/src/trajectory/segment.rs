//! The segmenter: role spans from a raw token stream, using special-token ids alone.

use smallvec::SmallVec;

use super::{Role, Span, spans_from_roles};
use crate::error::{Error, Result};
use alloc::vec::Vec;

/// The special-token ids the segmenter recognises.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct SpecialTokens {
    /// `<think>`.
    pub think_open: u32,
    /// `</think>`.
    pub think_close: u32,
    /// `<tool_call>`.
    pub tool_call_open: u32,
    /// `</tool_call>`.
    pub tool_call_close: u32,
    /// `<tool_response>`.
    pub tool_response_open: u32,
    /// `</tool_response>`.
    pub tool_response_close: u32,
    /// `<|im_start|>`.
    pub im_start: u32,
    /// `<|im_end|>`.
    pub im_end: u32,
    /// `<|image_pad|>`.
    pub image_pad: u32,
    /// `<|endoftext|>` (padding after the end).
    pub end_of_text: u32,
}

impl SpecialTokens {
    /// The Qwen3 / Qwen3-VL tokenizer's ids.
    pub const QWEN3_VL: Self = Self {
        think_open: 151_667,
        think_close: 151_668,
        tool_call_open: 151_657,
        tool_call_close: 151_658,
        tool_response_open: 151_665,
        tool_response_close: 151_666,
        im_start: 151_644,
        im_end: 151_645,
        image_pad: 151_655,
        end_of_text: 151_643,
    };
}

impl Default for SpecialTokens {
    fn default() -> Self {
        Self::QWEN3_VL
    }
}

/// Qwen's `assistant` and `\n` token ids: `<|im_start|>assistant\n` opens a policy turn.
pub const QWEN_ASSISTANT_HEADER: [u32; 2] = [77_091, 198];

/// Turns a token stream into role spans.
///
/// Rules, applied left to right from `prompt_len` (everything before it is [`Role::Prompt`]):
/// - **Policy turn.** `<think> ... </think>` is [`Role::Think`], `<tool_call> ... </tool_call>`
///   is [`Role::ToolCall`], any other policy token is [`Role::Answer`]. A turn that starts inside
///   an unclosed `<think>` (the Thinking models' generation prompt ends with `<think>\n`) starts
///   in [`Role::Think`]. The policy's `<|im_end|>` ends the turn and takes the role of the token
///   before it. `<|endoftext|>` starts [`Role::Pad`] to the end of the stream.
/// - **Environment.** After the policy's `<|im_end|>`, every token is [`Role::ToolResponse`]
///   until `<|im_start|>` followed by the assistant header (default `assistant\n`), followed by
///   the generation prompt (default none; `<think>\n` for Thinking templates); the policy
///   resumes after them.
/// - `<|endoftext|>` outside a policy turn also starts [`Role::Pad`].
/// - Unclosed spans run to the end (truncated rollouts). The segmenter never fails on content;
///   it fails only when `prompt_len` exceeds the stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segmenter {
    special: SpecialTokens,
    assistant_header: SmallVec<[u32; 4]>,
    generation_prompt: SmallVec<[u32; 4]>,
}

impl Default for Segmenter {
    fn default() -> Self {
        Self::new(SpecialTokens::QWEN3_VL)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Policy(Mode),
    Environment,
    Pad,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Outside,
    Think,
    Call,
}

impl Segmenter {
    /// A segmenter with the given ids, Qwen's assistant header and no generation prompt.
    #[must_use]
    pub fn new(special: SpecialTokens) -> Self {
        Self {
            special,
            assistant_header: SmallVec::from_slice(&QWEN_ASSISTANT_HEADER),
            generation_prompt: SmallVec::new(),
        }
    }

    /// Sets the tokens that follow `<|im_start|>` to open a policy turn.
    #[must_use]
    pub fn with_assistant_header(mut self, header: &[u32]) -> Self {
        self.assistant_header = SmallVec::from_slice(header);
        self
    }

    /// Sets the tokens the environment appends after the assistant header before the policy
    /// continues (for Thinking templates: `<think>` and `\n`).
    #[must_use]
    pub fn with_generation_prompt(mut self, prompt: &[u32]) -> Self {
        self.generation_prompt = SmallVec::from_slice(prompt);
        self
    }

    /// The special-token ids.
    #[must_use]
    pub fn special(&self) -> &SpecialTokens {
        &self.special
    }

    /// Role of every token of `stream`, whose first `prompt_len` tokens are the prompt.
    ///
    /// # Errors
    /// [`Error::InvalidSpans`] if `prompt_len > stream.len()`.
    pub fn roles(&self, stream: &[u32], prompt_len: usize) -> Result<Vec<Role>> {
        if prompt_len > stream.len() {
            return Err(Error::InvalidSpans {
                trajectory: None,
                reason: "prompt length exceeds the stream",
                position: prompt_len,
            });
        }
        let sp = &self.special;
        let mut roles = Vec::with_capacity(stream.len());
        let mut open_think = false;
        for &t in &stream[..prompt_len] {
            roles.push(Role::Prompt);
            if t == sp.think_open {
                open_think = true;
            } else if t == sp.think_close {
                open_think = false;
            }
        }
        let mut phase = Phase::Policy(if open_think {
            Mode::Think
        } else {
            Mode::Outside
        });
        let mut i = prompt_len;
        while i < stream.len() {
            let t = stream[i];
            match phase {
                Phase::Pad => roles.push(Role::Pad),
                Phase::Policy(mode) => {
                    if t == sp.end_of_text {
                        roles.push(Role::Pad);
                        phase = Phase::Pad;
                    } else if t == sp.im_end {
                        let role = match mode {
                            Mode::Think => Role::Think,
                            Mode::Call => Role::ToolCall,
                            Mode::Outside => match roles.last() {
                                Some(r) if r.is_policy() => *r,
                                _ => Role::Answer,
                            },
                        };
                        roles.push(role);
                        phase = Phase::Environment;
                        open_think = false;
                    } else {
                        let (role, next) = match mode {
                            Mode::Think if t == sp.think_close => (Role::Think, Mode::Outside),
                            Mode::Think => (Role::Think, Mode::Think),
                            Mode::Call if t == sp.tool_call_close => {
                                (Role::ToolCall, Mode::Outside)
                            }
                            Mode::Call => (Role::ToolCall, Mode::Call),
                            Mode::Outside if t == sp.think_open => (Role::Think, Mode::Think),
                            Mode::Outside if t == sp.tool_call_open => (Role::ToolCall, Mode::Call),
                            Mode::Outside => (Role::Answer, Mode::Outside),
                        };
                        roles.push(role);
                        phase = Phase::Policy(next);
                    }
                }
                Phase::Environment if t == sp.end_of_text => {
                    roles.push(Role::Pad);
                    phase = Phase::Pad;
                }
                Phase::Environment => {
                    roles.push(Role::ToolResponse);
                    if t == sp.think_open {
                        open_think = true;
                    } else if t == sp.think_close {
                        open_think = false;
                    }
                    if t == sp.im_start {
                        let h = &self.assistant_header;
                        let g = &self.generation_prompt;
                        let rest = &stream[i + 1..];
                        if rest.starts_with(h) && rest[h.len()..].starts_with(g) {
                            let n = h.len() + g.len();
                            for &u in &rest[..n] {
                                roles.push(Role::ToolResponse);
                                if u == sp.think_open {
                                    open_think = true;
                                } else if u == sp.think_close {
                                    open_think = false;
                                }
                            }
                            i += n;
                            phase = Phase::Policy(if open_think {
                                Mode::Think
                            } else {
                                Mode::Outside
                            });
                        }
                    }
                }
            }
            i += 1;
        }
        Ok(roles)
    }

    /// Role spans of `stream` (see [`Segmenter::roles`]).
    ///
    /// # Errors
    /// As [`Segmenter::roles`].
    pub fn segment(&self, stream: &[u32], prompt_len: usize) -> Result<Vec<Span>> {
        Ok(spans_from_roles(&self.roles(stream, prompt_len)?))
    }
}

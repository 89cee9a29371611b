//! The segmenter on arbitrary token streams.
//!
//! Input: special-token ids drawn from a small alphabet (so that they collide with each other
//! and with the stream; sometimes distinct, sometimes any u32 through axpo-core's `Arbitrary`), an assistant header and a generation prompt of 0 to 3 tokens, a stream
//! of up to 64 tokens (mostly from the same alphabet), and a prompt length up to two past the
//! end.
//!
//! Properties:
//! - `roles` fails iff `prompt_len > stream.len()`, with [`Error::InvalidSpans`]; `segment`
//!   agrees with `roles` (same error, or `spans_from_roles` of the roles).
//! - One role per token; exactly the first `prompt_len` tokens are [`Role::Prompt`].
//! - The spans are valid: non-empty, contiguous from 0 to the end (`validate_spans`), and
//!   adjacent spans differ in role.
//! - Padding is absorbing and starts at `<|endoftext|>`; every tool-call span after the prompt
//!   starts with `<tool_call>`; a tool response only follows a policy `<|im_end|>`.
//! - Roles are causal: the roles of a prefix of the stream are the prefix of the roles (when the
//!   header and generation prompt hold no `<|endoftext|>` or `<|im_start|>`, which the lookahead
//!   reads differently on a cut stream).

use arbitrary::{Result, Unstructured};

use axpo_core::trajectory::{spans_from_roles, validate_spans};
use axpo_core::{Error, Role, Segmenter, SpecialTokens};

const ALPHABET: u32 = 16;

fn tok(u: &mut Unstructured<'_>) -> Result<u32> {
    if u.ratio(1u8, 32)? {
        u.arbitrary()
    } else {
        u.int_in_range(0..=ALPHABET - 1)
    }
}

struct Case {
    special: SpecialTokens,
    header: Vec<u32>,
    generation: Vec<u32>,
    stream: Vec<u32>,
    prompt_len: usize,
}

fn case(u: &mut Unstructured<'_>) -> Result<Case> {
    let special = if u.ratio(1u8, 16)? {
        // Any ids at all (axpo-core's `Arbitrary` impl): collisions are rare.
        u.arbitrary::<SpecialTokens>()?
    } else if u.ratio(1u8, 8)? {
        // Distinct ids, as in a real tokenizer.
        SpecialTokens {
            think_open: 0,
            think_close: 1,
            tool_call_open: 2,
            tool_call_close: 3,
            tool_response_open: 4,
            tool_response_close: 5,
            im_start: 6,
            im_end: 7,
            image_pad: 8,
            end_of_text: 9,
        }
    } else {
        SpecialTokens {
            think_open: tok(u)?,
            think_close: tok(u)?,
            tool_call_open: tok(u)?,
            tool_call_close: tok(u)?,
            tool_response_open: tok(u)?,
            tool_response_close: tok(u)?,
            im_start: tok(u)?,
            im_end: tok(u)?,
            image_pad: tok(u)?,
            end_of_text: tok(u)?,
        }
    };
    let mut header = Vec::new();
    for _ in 0..u.int_in_range(0..=3)? {
        header.push(tok(u)?);
    }
    let mut generation = Vec::new();
    for _ in 0..u.int_in_range(0..=3)? {
        generation.push(tok(u)?);
    }
    let n = u.int_in_range(0..=64)?;
    let mut stream = Vec::with_capacity(n);
    for _ in 0..n {
        stream.push(tok(u)?);
    }
    let prompt_len = u.int_in_range(0..=n + 2)?;
    Ok(Case {
        special,
        header,
        generation,
        stream,
        prompt_len,
    })
}

/// Runs one input.
pub fn run(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let Ok(c) = case(&mut u) else { return };
    let cut = u.int_in_range(0..=c.stream.len()).unwrap_or(0);
    check(&c, cut);
}

fn check(c: &Case, cut: usize) {
    let seg = Segmenter::new(c.special)
        .with_assistant_header(&c.header)
        .with_generation_prompt(&c.generation);
    let sp = c.special;
    let (stream, p) = (&c.stream[..], c.prompt_len);
    let roles = seg.roles(stream, p);
    let spans = seg.segment(stream, p);
    if p > stream.len() {
        assert!(
            matches!(roles, Err(Error::InvalidSpans { .. })),
            "prompt_len {p} > len {}: {roles:?}",
            stream.len()
        );
        assert!(
            matches!(spans, Err(Error::InvalidSpans { .. })),
            "{spans:?}"
        );
        return;
    }
    let roles = roles.unwrap_or_else(|e| panic!("roles failed on a valid prompt length: {e:?}"));
    let spans = spans.unwrap_or_else(|e| panic!("segment failed on a valid prompt length: {e:?}"));
    assert_eq!(roles.len(), stream.len(), "one role per token");
    assert_eq!(
        spans,
        spans_from_roles(&roles),
        "segment == spans_from_roles(roles)"
    );
    validate_spans(None, &spans, stream.len())
        .unwrap_or_else(|e| panic!("the segmenter's spans are invalid: {e:?}"));
    assert!(
        spans.windows(2).all(|w| w[0].role != w[1].role),
        "adjacent spans share a role"
    );
    for (i, &r) in roles.iter().enumerate() {
        assert_eq!(
            r == Role::Prompt,
            i < p,
            "Prompt exactly on the prompt, at {i}"
        );
    }
    // Padding: absorbing, and it starts at <|endoftext|>.
    if let Some(first_pad) = roles.iter().position(|&r| r == Role::Pad) {
        assert!(first_pad >= p);
        assert_eq!(
            stream[first_pad], sp.end_of_text,
            "padding starts at <|endoftext|>"
        );
        assert!(
            roles[first_pad..].iter().all(|&r| r == Role::Pad),
            "padding is absorbing"
        );
    }
    for s in &spans {
        if s.role == Role::ToolCall {
            assert_eq!(
                stream[s.start], sp.tool_call_open,
                "a tool-call span starts with <tool_call>: {s:?}"
            );
        }
    }
    // A tool response starts right after a policy token that is <|im_end|>.
    for w in spans.windows(2) {
        if w[1].role == Role::ToolResponse {
            assert!(w[0].role.is_policy(), "tool response after {:?}", w[0].role);
            assert_eq!(stream[w[1].start - 1], sp.im_end);
        }
    }
    // Causality.
    let lookahead_sensitive = c
        .header
        .iter()
        .chain(&c.generation)
        .any(|&t| t == sp.end_of_text || t == sp.im_start);
    if !lookahead_sensitive && cut >= p {
        let head = seg
            .roles(&stream[..cut], p)
            .unwrap_or_else(|e| panic!("roles of a prefix failed: {e:?}"));
        assert_eq!(
            head,
            roles[..cut],
            "roles of a prefix differ (cut at {cut})"
        );
    }
}

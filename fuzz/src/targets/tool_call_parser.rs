//! The demo environment's tool-call parser: the grammar cursor that reads the policy's
//! `<tool_call> zoom cx cy </tool_call>` tokens into a zoom window, `policy_contexts`, and
//! `Episode::continue_from`, which replays a frozen prefix and executes the zoom it contains.
//!
//! Input: byte 0 picks the question (seed and index) and whether the stream starts with the
//! demo's prompt; every following byte is one token: bytes below 40 are the vocabulary's ids
//! (so hand-written seeds read like token streams), 0xFF takes the next four bytes as any u32,
//! other bytes are ids just outside the vocabulary.
//!
//! Properties:
//! - `Cursor::push` accepts a token iff the current grammar state allows it (or it is the
//!   environment's expected token); a refused token leaves the cursor unchanged and the error
//!   names the position and the expected actor.
//! - A parsed call has both coordinates inside the zoom grid; the observed window appears only
//!   once the whole tool response is in, and equals the call's window; the zoom returns an
//!   8 × 8 crop with pixels in `[0, 1]`, and the window's digit is the question's digit when
//!   the window is the target's.
//! - At most one call and at most 11 policy tokens per rollout; the answer, once given, is a
//!   digit; nothing is accepted after the end.
//! - `policy_contexts` fails iff the walk fails; its positions are the policy positions, in
//!   order, after the prompt; for a complete rollout they are exactly the positions the core's
//!   segmenter marks as policy tokens.
//! - `Episode::continue_from` fails (`Internal` without the prompt, `Grammar` on a bad token)
//!   or replays the prefix exactly.

use axpo::demo::env::{Question, Split, TaskConfig, WINDOWS_PER_AXIS};
use axpo::demo::error::DemoError;
use axpo::demo::grammar::{Actor, Cursor, policy_contexts};
use axpo::demo::rollout::Episode;
use axpo::demo::vocab::{PROMPT, TOOL_CALL_OPEN, VOCAB_SIZE, segmenter};

/// Decodes the token stream.
fn tokens(rest: &[u8]) -> Vec<u32> {
    let mut out = Vec::with_capacity(rest.len());
    let mut i = 0;
    while i < rest.len() {
        let b = rest[i];
        i += 1;
        out.push(match b {
            0xFF => {
                let mut w = [0u8; 4];
                for (k, x) in rest[i..].iter().take(4).enumerate() {
                    w[k] = *x;
                }
                i += 4;
                u32::from_le_bytes(w)
            }
            b if usize::from(b) < VOCAB_SIZE => u32::from(b),
            b => u32::from(b) + 1000,
        });
    }
    out
}

/// Runs one input.
pub fn run(data: &[u8]) {
    let Some((&head, rest)) = data.split_first() else {
        return;
    };
    let mut stream = Vec::new();
    if head & 1 == 0 {
        stream.extend_from_slice(&PROMPT);
    }
    stream.extend(tokens(rest));
    let index = u64::from(head >> 1);
    let question = Question::generate(&TaskConfig::default(), 7, Split::Eval, index);
    walk(&stream, &question);
    replay(&stream, &question);
}

fn walk(stream: &[u32], q: &Question) {
    let prompt_len = if stream.starts_with(&PROMPT) {
        PROMPT.len()
    } else {
        0
    };
    let mut c = Cursor::new();
    let mut policy_positions = Vec::new();
    let mut calls = 0;
    let mut failed = false;
    for (pos, &t) in stream.iter().enumerate().skip(prompt_len) {
        let before = c.clone();
        let allowed = match c.actor() {
            Actor::Policy(s) => s.allows(t),
            Actor::Environment(e) => e == t,
            Actor::Done => false,
        };
        match c.push(t) {
            Ok(()) => {
                assert!(allowed, "the cursor accepted {t} in {:?}", before.actor());
                if let Actor::Policy(_) = before.actor() {
                    policy_positions.push(pos);
                    if t == TOOL_CALL_OPEN {
                        calls += 1;
                    }
                }
            }
            Err(e) => {
                assert!(!allowed, "the cursor refused {t} in {:?}", before.actor());
                assert_eq!(c, before, "a refused token changed the cursor");
                assert_eq!(e.token, t);
                assert_eq!(e.expected, before.actor());
                assert_eq!(e.position, pos - prompt_len);
                failed = true;
                break;
            }
        }
        check_cursor(&c, q);
    }
    assert!(calls <= 1, "{calls} tool calls");
    assert!(
        policy_positions.len() <= 11,
        "{} policy tokens",
        policy_positions.len()
    );
    match policy_contexts(stream, prompt_len) {
        Ok(ctx) => {
            assert!(
                !failed,
                "policy_contexts accepted a stream the cursor refuses"
            );
            let pos: Vec<usize> = ctx.iter().map(|c| c.0).collect();
            assert_eq!(pos, policy_positions, "policy_contexts positions");
            for (p, cx) in &ctx {
                assert!(cx.state.allows(stream[*p]), "context state at {p}");
            }
            if c.actor() == Actor::Done {
                // A complete rollout: the core's segmenter agrees on the policy tokens.
                let roles = segmenter()
                    .roles(stream, prompt_len)
                    .expect("the segmenter accepts a complete rollout");
                let seg: Vec<usize> = (0..stream.len())
                    .filter(|&i| roles[i].is_policy())
                    .collect();
                if prompt_len == PROMPT.len() {
                    assert_eq!(seg, policy_positions, "segmenter vs grammar");
                }
            }
        }
        Err(e) => assert!(failed, "policy_contexts refused a valid stream: {e}"),
    }
}

fn check_cursor(c: &Cursor, q: &Question) {
    if let Some(w) = c.call_window() {
        assert!(
            usize::from(w.x) < WINDOWS_PER_AXIS && usize::from(w.y) < WINDOWS_PER_AXIS,
            "a window outside the grid: {w:?}"
        );
        let img = q.zoom(w);
        assert_eq!(img.side(), 8);
        assert!(
            img.pixels().iter().all(|p| (0.0..=1.0).contains(p)),
            "zoom pixels outside [0, 1]"
        );
        if w == q.target_window() {
            assert_eq!(q.window_digit(w), Some(q.digit));
        }
    }
    if let Some(o) = c.observed() {
        assert_eq!(
            Some(o),
            c.call_window(),
            "observed a window that was not called"
        );
        assert!(matches!(c.actor(), Actor::Policy(_) | Actor::Done));
    }
    if let Some(a) = c.answer() {
        assert!(a < 10);
    }
    if let Some(r) = c.think_region() {
        assert!(r < 9);
    }
}

fn replay(stream: &[u32], q: &Question) {
    match Episode::continue_from(q, stream) {
        Ok(e) => {
            assert!(stream.starts_with(&PROMPT));
            assert_eq!(e.tokens(), stream, "the replayed prefix differs");
        }
        Err(DemoError::Internal(_)) => assert!(!stream.starts_with(&PROMPT)),
        Err(DemoError::Grammar(g)) => {
            assert!(stream.starts_with(&PROMPT));
            assert!(policy_contexts(stream, PROMPT.len()).is_err(), "{g}");
        }
        Err(e) => panic!("continue_from: unexpected error {e}"),
    }
}

//! The demo's vocabulary: 39 tokens laid out like a chat model's, with the special tokens the
//! core's [`Segmenter`] needs to cut a stream into role spans.
//!
//! A rollout that zooms reads (one token per item):
//!
//! ```text
//! prompt:        <|im_start|> user <|image_pad|> which_digit <|im_end|> <|im_start|> assistant \n
//! think:         <think> r4 </think>
//! tool call:     <tool_call> zoom c2 c2 </tool_call> <|im_end|>
//! tool response: <|im_start|> user <tool_response> <|image_pad|> </tool_response> <|im_end|> <|im_start|> assistant \n
//! answer:        d7 <|im_end|>
//! ```
//!
//! and one that answers from the global view alone: `prompt <think> r4 </think> d7 <|im_end|>`.

use axpo_core::{Segmenter, SpecialTokens};

/// `<|im_start|>`.
pub const IM_START: u32 = 0;
/// `<|im_end|>`.
pub const IM_END: u32 = 1;
/// `<think>`.
pub const THINK_OPEN: u32 = 2;
/// `</think>`.
pub const THINK_CLOSE: u32 = 3;
/// `<tool_call>`.
pub const TOOL_CALL_OPEN: u32 = 4;
/// `</tool_call>`.
pub const TOOL_CALL_CLOSE: u32 = 5;
/// `<tool_response>`.
pub const TOOL_RESPONSE_OPEN: u32 = 6;
/// `</tool_response>`.
pub const TOOL_RESPONSE_CLOSE: u32 = 7;
/// `<|image_pad|>`: stands for an image (the global view in the prompt, the crop in a response).
pub const IMAGE_PAD: u32 = 8;
/// `<|endoftext|>` (never produced; the segmenter needs an id).
pub const END_OF_TEXT: u32 = 9;
/// `user`.
pub const USER: u32 = 10;
/// `assistant`.
pub const ASSISTANT: u32 = 11;
/// `\n`.
pub const NEWLINE: u32 = 12;
/// The question: "which digit is in the framed cell?".
pub const WHICH_DIGIT: u32 = 13;
/// The zoom tool's name.
pub const ZOOM: u32 = 14;
/// `d0`; digits are `DIGIT_BASE..DIGIT_BASE + 10`.
pub const DIGIT_BASE: u32 = 15;
/// `r0`; regions (grid cells, row-major) are `REGION_BASE..REGION_BASE + 9`.
pub const REGION_BASE: u32 = 25;
/// `c0`; zoom-window coordinates are `COORD_BASE..COORD_BASE + 5`.
pub const COORD_BASE: u32 = 34;
/// Number of digits.
pub const DIGITS: usize = 10;
/// Number of regions (a 3 x 3 grid).
pub const REGIONS: usize = 9;
/// Number of zoom-window coordinates per axis.
pub const COORDS: usize = 5;
/// Vocabulary size.
pub const VOCAB_SIZE: usize = 39;

/// The special-token ids, for the core's segmenter.
pub const SPECIAL: SpecialTokens = SpecialTokens {
    think_open: THINK_OPEN,
    think_close: THINK_CLOSE,
    tool_call_open: TOOL_CALL_OPEN,
    tool_call_close: TOOL_CALL_CLOSE,
    tool_response_open: TOOL_RESPONSE_OPEN,
    tool_response_close: TOOL_RESPONSE_CLOSE,
    im_start: IM_START,
    im_end: IM_END,
    image_pad: IMAGE_PAD,
    end_of_text: END_OF_TEXT,
};

/// The prompt of every question.
pub const PROMPT: [u32; 8] = [
    IM_START,
    USER,
    IMAGE_PAD,
    WHICH_DIGIT,
    IM_END,
    IM_START,
    ASSISTANT,
    NEWLINE,
];

/// What the environment appends after a tool call (the crop itself is image content behind
/// `<|image_pad|>`).
pub const TOOL_RESPONSE: [u32; 9] = [
    IM_START,
    USER,
    TOOL_RESPONSE_OPEN,
    IMAGE_PAD,
    TOOL_RESPONSE_CLOSE,
    IM_END,
    IM_START,
    ASSISTANT,
    NEWLINE,
];

/// The segmenter for this vocabulary (assistant header `assistant \n`, no generation prompt).
#[must_use]
pub fn segmenter() -> Segmenter {
    Segmenter::new(SPECIAL).with_assistant_header(&[ASSISTANT, NEWLINE])
}

/// The token of digit `d` (`d < 10`).
#[must_use]
pub fn digit_token(d: u8) -> u32 {
    DIGIT_BASE + u32::from(d)
}

/// The digit a token stands for, if it is a digit.
#[must_use]
pub fn token_digit(t: u32) -> Option<u8> {
    (DIGIT_BASE..DIGIT_BASE + DIGITS as u32)
        .contains(&t)
        .then(|| (t - DIGIT_BASE) as u8)
}

/// The token of region `r` (`r < 9`).
#[must_use]
pub fn region_token(r: u8) -> u32 {
    REGION_BASE + u32::from(r)
}

/// The region a token stands for, if it is a region.
#[must_use]
pub fn token_region(t: u32) -> Option<u8> {
    (REGION_BASE..REGION_BASE + REGIONS as u32)
        .contains(&t)
        .then(|| (t - REGION_BASE) as u8)
}

/// The token of zoom coordinate `c` (`c < 5`).
#[must_use]
pub fn coord_token(c: u8) -> u32 {
    COORD_BASE + u32::from(c)
}

/// The zoom coordinate a token stands for, if it is one.
#[must_use]
pub fn token_coord(t: u32) -> Option<u8> {
    (COORD_BASE..COORD_BASE + COORDS as u32)
        .contains(&t)
        .then(|| (t - COORD_BASE) as u8)
}

/// A token's text.
#[must_use]
pub fn token_text(t: u32) -> String {
    if let Some(d) = token_digit(t) {
        return format!("d{d}");
    }
    if let Some(r) = token_region(t) {
        return format!("r{r}");
    }
    if let Some(c) = token_coord(t) {
        return format!("c{c}");
    }
    let s = match t {
        IM_START => "<|im_start|>",
        IM_END => "<|im_end|>",
        THINK_OPEN => "<think>",
        THINK_CLOSE => "</think>",
        TOOL_CALL_OPEN => "<tool_call>",
        TOOL_CALL_CLOSE => "</tool_call>",
        TOOL_RESPONSE_OPEN => "<tool_response>",
        TOOL_RESPONSE_CLOSE => "</tool_response>",
        IMAGE_PAD => "<|image_pad|>",
        END_OF_TEXT => "<|endoftext|>",
        USER => "user",
        ASSISTANT => "assistant",
        NEWLINE => "\\n",
        WHICH_DIGIT => "which_digit",
        ZOOM => "zoom",
        _ => "<unk>",
    };
    s.to_owned()
}

/// A token stream's text, space separated.
#[must_use]
pub fn render(tokens: &[u32]) -> String {
    tokens
        .iter()
        .map(|&t| token_text(t))
        .collect::<Vec<_>>()
        .join(" ")
}

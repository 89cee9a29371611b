//! One module per fuzz target; each `run(&[u8])` decodes an input and checks its properties
//! (see each module's documentation), panicking on a violation.

pub mod config_json;
pub mod credit;
pub mod logprob;
pub mod objective;
pub mod planner;
pub mod safetensors_loader;
pub mod segmenter;
pub mod tool_call_parser;
pub mod trajectory;

/// A target's entry point.
pub type Run = fn(&[u8]);

/// Every target: its name (the binary in `fuzz_targets/`) and its entry point.
pub const ALL: [(&str, Run); 9] = [
    ("segmenter", segmenter::run),
    ("trajectory", trajectory::run),
    ("planner", planner::run),
    ("credit", credit::run),
    ("objective", objective::run),
    ("logprob", logprob::run),
    ("safetensors_loader", safetensors_loader::run),
    ("config_json", config_json::run),
    ("tool_call_parser", tool_call_parser::run),
];

//! The demo's error type: everything that can stop a run, with a message that says what to fix.

use std::fmt;
use std::path::PathBuf;

use super::grammar::GrammarError;

/// Why a demo run failed.
#[derive(Debug)]
#[non_exhaustive]
pub enum DemoError {
    /// The core rejected an input or configuration.
    Core(axpo_core::Error),
    /// A token stream broke the demo's grammar (a bug in the rollout engine or a corrupt prefix).
    Grammar(GrammarError),
    /// Reading or writing a file failed.
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A flag combination is invalid.
    Config(String),
    /// The requested backend is not available in this build.
    BackendUnavailable(String),
    /// An internal invariant of the demo failed (a bug; please report it).
    Internal(String),
    /// A worker thread panicked.
    WorkerPanicked,
}

impl fmt::Display for DemoError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Core(e) => write!(f, "axpo-core: {e}"),
            Self::Grammar(e) => write!(f, "{e}"),
            Self::Io { path, source } => write!(f, "{}: {source}", path.display()),
            Self::Config(m) => write!(f, "invalid configuration: {m}"),
            Self::BackendUnavailable(m) => f.write_str(m),
            Self::Internal(m) => write!(f, "internal error in the demo (a bug): {m}"),
            Self::WorkerPanicked => f.write_str("a worker thread panicked"),
        }
    }
}

impl std::error::Error for DemoError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Core(e) => Some(e),
            Self::Grammar(e) => Some(e),
            Self::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

impl From<axpo_core::Error> for DemoError {
    fn from(e: axpo_core::Error) -> Self {
        Self::Core(e)
    }
}

impl From<GrammarError> for DemoError {
    fn from(e: GrammarError) -> Self {
        Self::Grammar(e)
    }
}

/// The demo's result type.
pub type DemoResult<T> = Result<T, DemoError>;

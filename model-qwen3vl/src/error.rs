//! The crate's error type.

use std::fmt;
use std::path::PathBuf;

/// Result alias of this crate.
pub type Result<T, E = ModelError> = std::result::Result<T, E>;

/// Everything that can go wrong while loading or running Qwen3-VL. No input makes the crate panic:
/// bad files, bad configs and bad inputs all come back as one of these.
#[derive(Debug)]
#[non_exhaustive]
pub enum ModelError {
    /// A file could not be read or written.
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A JSON file (config, index) is not valid JSON or does not have the expected structure.
    Json {
        /// The file (or `"<string>"`).
        path: PathBuf,
        /// The parse error.
        source: serde_json::Error,
    },
    /// A configuration value is missing or invalid.
    InvalidConfig {
        /// The offending field, e.g. `"text_config.head_dim"`.
        field: String,
        /// What is wrong.
        reason: String,
    },
    /// The checkpoint is a variant this crate does not implement (e.g. the MoE models).
    Unsupported {
        /// What is not supported.
        what: String,
    },
    /// A safetensors file is truncated, corrupt, or inconsistent with its index.
    Safetensors {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A tensor the model needs is not in the checkpoint (or the inputs file).
    MissingTensor {
        /// The tensor name.
        name: String,
    },
    /// A tensor has the wrong shape.
    TensorShape {
        /// The tensor name.
        name: String,
        /// The shape required.
        expected: Vec<usize>,
        /// The shape found.
        got: Vec<usize>,
    },
    /// A tensor has an element type that cannot be used here.
    TensorDType {
        /// The tensor name.
        name: String,
        /// The element type found.
        dtype: String,
    },
    /// The number of image tokens in the prompt does not match the image grids.
    ImageTokenMismatch {
        /// Image tokens required by the grids.
        expected: usize,
        /// Image tokens found in the prompt.
        got: usize,
    },
    /// A model input is malformed (empty prompt, token id outside the vocabulary, bad grid...).
    InvalidInput {
        /// What is wrong.
        reason: String,
    },
    /// An image file could not be decoded, or an image buffer is malformed.
    Image {
        /// What is wrong.
        reason: String,
    },
    /// A backend op failed.
    Backend(axpo_core::Error),
}

impl ModelError {
    pub(crate) fn config(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::InvalidConfig {
            field: field.into(),
            reason: reason.into(),
        }
    }

    pub(crate) fn input(reason: impl Into<String>) -> Self {
        Self::InvalidInput {
            reason: reason.into(),
        }
    }
}

impl fmt::Display for ModelError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Io { path, source } => write!(f, "{}: {source}", path.display()),
            Self::Json { path, source } => write!(f, "{}: invalid JSON: {source}", path.display()),
            Self::InvalidConfig { field, reason } => write!(f, "invalid config: {field}: {reason}"),
            Self::Unsupported { what } => write!(f, "unsupported: {what}"),
            Self::Safetensors { path, reason } => {
                write!(f, "{}: bad safetensors file: {reason}", path.display())
            }
            Self::MissingTensor { name } => write!(f, "missing tensor `{name}`"),
            Self::TensorShape {
                name,
                expected,
                got,
            } => write!(
                f,
                "tensor `{name}` has shape {got:?}, expected {expected:?}"
            ),
            Self::TensorDType { name, dtype } => {
                write!(f, "tensor `{name}` has unsupported element type {dtype}")
            }
            Self::ImageTokenMismatch { expected, got } => write!(
                f,
                "the prompt has {got} image tokens but the image grids need {expected}"
            ),
            Self::InvalidInput { reason } => write!(f, "invalid input: {reason}"),
            Self::Image { reason } => write!(f, "image: {reason}"),
            Self::Backend(e) => write!(f, "backend: {e}"),
        }
    }
}

impl std::error::Error for ModelError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Io { source, .. } => Some(source),
            Self::Json { source, .. } => Some(source),
            Self::Backend(e) => Some(e),
            _ => None,
        }
    }
}

impl From<axpo_core::Error> for ModelError {
    fn from(e: axpo_core::Error) -> Self {
        Self::Backend(e)
    }
}

//! The op families, one module each (the same names as the shader files).

pub(crate) mod attention;
pub(crate) mod buffer;
pub(crate) mod elementwise;
pub(crate) mod embedding;
pub(crate) mod logprob;
pub(crate) mod matmul;
pub(crate) mod norm;
pub(crate) mod rotary;

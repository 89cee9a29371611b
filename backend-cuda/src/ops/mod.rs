//! The `Backend` op families on CUDA.

// Helpers mirror kernel signatures, which take many scalars.
#![allow(clippy::too_many_arguments)]

pub(crate) mod attention;
pub(crate) mod elementwise;
pub(crate) mod embedding;
pub(crate) mod logprob;
pub(crate) mod matmul;
pub(crate) mod norm;

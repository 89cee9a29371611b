//! The checks, one module per op family (the same names as the backend op families).

pub mod attention;
pub mod buffer;
pub mod elementwise;
pub mod embedding;
pub mod logprob;
pub mod matmul;
pub mod norm;
pub mod objective;
pub mod rotary;

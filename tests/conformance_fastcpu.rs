//! The conformance suite on the fast CPU backend (`axpo-core`, feature `fast-cpu`: `faer` matrix
//! products on every core, multithreaded attention): the backend the Qwen3-VL forward pass and
//! the demo run on.

axpo_tests::conformance_suite!(axpo_core::backend::FastCpu::new());

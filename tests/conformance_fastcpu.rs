//! The conformance suite on the model crate's fast CPU backend (`faer` matrix products on every
//! core, multithreaded attention): the kernel the Qwen3-VL forward pass runs on.

axpo_tests::conformance_suite!(axpo_model_qwen3vl::FastCpu::new());

//! The conformance suite on the reference CPU backend.

axpo_tests::conformance_suite!(axpo_core::backend::Cpu::new());

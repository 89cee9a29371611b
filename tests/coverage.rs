//! Placeholder: written by the conformance-suite work.

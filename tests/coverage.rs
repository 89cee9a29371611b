//! Every op of `Op::ALL` has at least one conformance check, in the family the op belongs to.

use std::collections::BTreeSet;

use axpo_core::backend::Op;
use axpo_tests::suite::{CHECKS, family_of};

#[test]
fn every_op_has_a_check() {
    let covered: BTreeSet<Op> = CHECKS.iter().flat_map(|c| c.ops.iter().copied()).collect();
    let all: BTreeSet<Op> = Op::ALL.iter().copied().collect();
    let missing: Vec<&Op> = all.difference(&covered).collect();
    assert!(
        missing.is_empty(),
        "ops without a conformance check: {missing:?}"
    );
    let unknown: Vec<&Op> = covered.difference(&all).collect();
    assert!(
        unknown.is_empty(),
        "checks name ops outside Op::ALL: {unknown:?}"
    );
}

#[test]
fn every_op_has_a_value_check_not_only_an_error_check() {
    for op in Op::ALL {
        let value_checks: Vec<&str> = CHECKS
            .iter()
            .filter(|c| c.ops.contains(op) && !c.name.contains("rejects"))
            .map(|c| c.name)
            .collect();
        assert!(
            !value_checks.is_empty(),
            "{op:?} is only covered by error checks"
        );
    }
}

#[test]
fn checks_live_in_their_ops_family_and_have_unique_names() {
    let families = [
        "buffer",
        "matmul",
        "elementwise",
        "norm",
        "rotary",
        "attention",
        "embedding",
        "logprob",
        "objective",
    ];
    let mut names = BTreeSet::new();
    for c in CHECKS {
        assert!(
            families.contains(&c.family),
            "{}: unknown family {}",
            c.name,
            c.family
        );
        assert!(names.insert(c.name), "check name {} appears twice", c.name);
        for op in c.ops {
            assert_eq!(
                family_of(*op),
                c.family,
                "{}::{} checks {op:?}, which belongs to {}",
                c.family,
                c.name,
                family_of(*op)
            );
        }
    }
    assert!(CHECKS.len() >= Op::ALL.len());
}

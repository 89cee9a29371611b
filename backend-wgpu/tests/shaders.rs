//! Every WGSL file, in every specialisation the backend can ask for, parses and validates with
//! naga on the host (no adapter needed).

use axpo_backend_wgpu::kernels::{Family, specialise};
use axpo_core::backend::DType;

/// Parses and validates one specialisation; returns its number of entry points.
fn validate(family: Family, dtypes: &[(&str, DType)]) -> Result<usize, String> {
    let source = specialise(family, dtypes);
    let module = naga::front::wgsl::parse_str(&source).map_err(|e| {
        format!(
            "{}.wgsl {dtypes:?} does not parse:\n{}",
            family.name(),
            e.emit_to_string(&source)
        )
    })?;
    let mut validator = naga::valid::Validator::new(
        naga::valid::ValidationFlags::all(),
        naga::valid::Capabilities::default(),
    );
    validator.validate(&module).map_err(|e| {
        format!(
            "{}.wgsl {dtypes:?} does not validate:\n{}",
            family.name(),
            e.emit_to_string(&source)
        )
    })?;
    Ok(module.entry_points.len())
}

#[test]
fn every_shader_validates_in_every_specialisation() {
    for family in Family::ALL {
        let entries = validate(family, &[]).unwrap();
        assert!(entries > 0, "{}.wgsl has no entry point", family.name());
        for name in family.float_inputs() {
            for dtype in [DType::Bf16, DType::F16] {
                validate(family, &[(name, dtype)]).unwrap();
            }
        }
    }
}

#[test]
fn every_family_has_its_file() {
    let names: Vec<&str> = Family::ALL.iter().map(|f| f.name()).collect();
    assert_eq!(
        names,
        [
            "buffer",
            "matmul",
            "elementwise",
            "norm",
            "rotary",
            "attention",
            "embedding",
            "logprob"
        ]
    );
    for family in Family::ALL {
        assert!(family.source().contains("@compute"), "{}", family.name());
    }
}

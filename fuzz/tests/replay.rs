//! Replays every committed input — `seeds/<target>/*` and `regressions/<target>/*` — through its
//! target's checks, so that `cargo test` (in `fuzz/`) catches a regression without libFuzzer.
//! `regressions/<target>/<id>-*` are the inputs of the findings in the README: each failed
//! its target's checks before its fix.

use std::fs;
use std::path::Path;

use axpo_fuzz::targets::ALL;

fn replay(kind: &str) -> usize {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join(kind);
    let mut n = 0;
    for (name, run) in ALL {
        let dir = root.join(name);
        let Ok(entries) = fs::read_dir(&dir) else {
            continue;
        };
        let mut files: Vec<_> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
        files.sort();
        for f in files.iter().filter(|f| f.is_file()) {
            let data = fs::read(f).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
            eprintln!(
                "{kind}/{name}/{}",
                f.file_name().unwrap_or_default().to_string_lossy()
            );
            run(&data);
            n += 1;
        }
    }
    n
}

#[test]
fn every_target_has_seeds_and_they_pass() {
    for (name, _) in ALL {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("seeds")
            .join(name);
        let count = fs::read_dir(&dir)
            .map(|d| {
                d.filter(|e| e.as_ref().is_ok_and(|e| e.path().is_file()))
                    .count()
            })
            .unwrap_or(0);
        assert!(
            count > 0,
            "seeds/{name} is missing or empty (CI passes it to cargo fuzz run)"
        );
    }
    assert!(replay("seeds") >= ALL.len());
}

#[test]
fn regressions_pass() {
    replay("regressions");
}

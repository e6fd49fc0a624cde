//! Every input that once broke a fuzz target (`regressions/<target>/`, written by
//! `lirpa-fuzz`) and every seed of the corpus runs through its target again: no
//! panic, no non-finite bound.

use lirpa_fuzz::{Target, regression_dir, run_caught, seeds};

#[test]
fn saved_crashes_and_seeds_run_cleanly() {
    let mut failures = Vec::new();
    let mut count = 0;
    for t in Target::ALL {
        let mut cases: Vec<(String, Vec<u8>)> = std::fs::read_dir(regression_dir(t))
            .map(|rd| {
                rd.flatten()
                    .filter(|e| e.file_name() != ".gitkeep")
                    .map(|e| (e.path().display().to_string(), std::fs::read(e.path()).unwrap()))
                    .collect()
            })
            .unwrap_or_default();
        cases.extend(seeds(t).into_iter().enumerate().map(|(i, s)| (format!("{} seed {i}", t.name()), s)));
        for (name, input) in cases {
            count += 1;
            if let Err(e) = run_caught(t, &input) {
                failures.push(format!("{name}: {e}"));
            }
        }
    }
    assert!(count > 3, "no case ran");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

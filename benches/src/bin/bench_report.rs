//! Print Markdown tables of our criterion means next to auto_LiRPA's recorded times.
//! Run after `cargo bench -p lirpa-benches --bench bounds --bench alpha` (or
//! `cargo xtask bench`); benches not run show as "not run".

use lirpa_benches::{ALPHA, BenchCase, CASES, METHODS, alpha_cases};
use std::path::PathBuf;

fn target_dir() -> PathBuf {
    std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../target")))
}

/// Mean time in seconds of one criterion benchmark, if it has run.
fn criterion_mean(group: &str, function: &str, param: &str) -> Option<f64> {
    let p = target_dir().join("criterion").join(group).join(function).join(param).join("new/estimates.json");
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(p).ok()?).ok()?;
    Some(v["mean"]["point_estimate"].as_f64()? * 1e-9)
}

/// One table row: our mean, auto_LiRPA's time and the speed-up.
fn row(case: &BenchCase, key: &str, method: &str) -> String {
    let ours = criterion_mean(method, &case.name, key);
    let theirs = case.auto_lirpa_seconds(key, method);
    let fmt = |x: Option<f64>| x.map_or("not run".to_string(), |s| format!("{:.3}", s * 1e3));
    let ratio = match (ours, theirs) {
        (Some(o), Some(t)) if o > 0.0 => format!("{:.1}x", t / o),
        _ => "-".into(),
    };
    format!("| {} | {key} | {method} | {} | {} | {ratio} |", case.name, fmt(ours), fmt(theirs))
}

fn header() {
    println!("| case | bounds | method | lirpa (ms) | auto_LiRPA (ms) | speed-up |");
    println!("|---|---|---|---:|---:|---:|");
}

fn main() {
    header();
    for (folder, name) in CASES {
        let case = match BenchCase::load(folder, name) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("skipping {name}: {e}");
                continue;
            }
        };
        for key in ["bounds", "spec_bounds"] {
            for (mname, _) in METHODS {
                println!("{}", row(&case, key, mname));
            }
        }
    }
    println!();
    header();
    for (folder, name) in alpha_cases() {
        match BenchCase::load(&folder, &name) {
            Ok(case) => {
                println!("{}", row(&case, "bounds", ALPHA));
                // Against our own CROWN where the case has no recorded α-CROWN time.
                let own = criterion_mean("CROWN", &name, "bounds");
                if let (None, Some(a), Some(c)) =
                    (case.auto_lirpa_seconds("bounds", ALPHA), criterion_mean(ALPHA, &name, "bounds"), own)
                {
                    println!(
                        "| {name} | bounds | alpha-CROWN / our CROWN | {:.3} | {:.3} | {:.0}x slower |",
                        a * 1e3,
                        c * 1e3,
                        a / c
                    );
                }
            }
            Err(e) => eprintln!("skipping {name}: {e}"),
        }
    }
}

//! Print a Markdown table of our criterion means next to auto_LiRPA's recorded times.
//! Run after `cargo bench -p lirpa-benches --bench bounds` (or `cargo xtask bench`).

use lirpa_benches::{BenchCase, CASES, METHODS};
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

fn main() {
    println!("| case | bounds | method | lirpa (ms) | auto_LiRPA (ms) | speed-up |");
    println!("|---|---|---|---:|---:|---:|");
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
                let ours = criterion_mean(mname, name, key);
                let theirs = case.auto_lirpa_seconds(key, mname);
                let fmt = |x: Option<f64>| x.map_or("not run".to_string(), |s| format!("{:.3}", s * 1e3));
                let ratio = match (ours, theirs) {
                    (Some(o), Some(t)) if o > 0.0 => format!("{:.1}x", t / o),
                    _ => "-".into(),
                };
                println!("| {name} | {key} | {mname} | {} | {} | {ratio} |", fmt(ours), fmt(theirs));
            }
        }
    }
}

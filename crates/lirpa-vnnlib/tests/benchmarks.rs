//! Every `.vnnlib` file under `../shared/benchmarks` parses, with every input bounded
//! and every output row sized to the declared outputs. For ACAS Xu, the box is checked
//! against the numbers read from the file's text independently (line by line).

use std::path::{Path, PathBuf};

fn benchmarks() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/benchmarks")
}

fn vnnlib_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).expect("benchmark folder") {
        let p = e.expect("entry").path();
        if p.is_dir() {
            vnnlib_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "vnnlib") {
            out.push(p);
        }
    }
}

#[test]
fn every_benchmark_property_parses() {
    let mut files = Vec::new();
    vnnlib_files(&benchmarks(), &mut files);
    assert!(files.len() >= 100, "expected the VNN-COMP properties under {}", benchmarks().display());
    for f in &files {
        let p = lirpa_vnnlib::parse_file(f).unwrap_or_else(|e| panic!("{e}"));
        assert!(p.n_inputs > 0 && p.n_outputs > 0, "{}", f.display());
        assert!(!p.regions.is_empty(), "{}: no region", f.display());
        for r in &p.regions {
            assert!(r.lower.iter().zip(&r.upper).all(|(l, u)| l.is_finite() && u.is_finite() && l <= u));
            for c in &r.outputs {
                assert_eq!(c.mat.len(), c.rhs.len());
                assert!(c.mat.iter().all(|row| row.len() == p.n_outputs));
            }
        }
    }
    eprintln!("{} vnnlib files parsed", files.len());
}

#[test]
fn acas_boxes_match_the_text() {
    let dir = benchmarks().join("vnncomp2021_acasxu");
    for k in 1..=4 {
        let path = dir.join(format!("prop_{k}.vnnlib"));
        let text = std::fs::read_to_string(&path).expect("acas property");
        let (mut lo, mut hi) = (vec![f64::NAN; 5], vec![f64::NAN; 5]);
        for line in text.lines().map(str::trim) {
            // Lines like "(assert (<= X_0 0.679857769))".
            let Some(rest) = line.strip_prefix("(assert (") else { continue };
            let parts: Vec<&str> = rest.trim_end_matches(')').split_whitespace().collect();
            if parts.len() != 3 || !parts[1].starts_with("X_") {
                continue;
            }
            let i: usize = parts[1][2..].parse().unwrap();
            let v: f64 = parts[2].parse().unwrap();
            if parts[0] == "<=" { hi[i] = v } else { lo[i] = v }
        }
        let p = lirpa_vnnlib::parse_file(&path).unwrap();
        assert_eq!(p.input_box(), (lo, hi), "{}", path.display());
    }
}

//! Data-driven verification tests on VNN-COMP instances with known answers
//! (`expected_results_vnncomp.csv`, a majority vote of the competition's trusted tools,
//! see `shared/notes/vnncomp.md` §1).
//!
//! Every answer must agree with the expected one or be `unknown`/`timeout`; a wrong
//! answer fails. The instances below were chosen because lirpa solves each in well
//! under a second on this machine, so each must also be solved (not unknown) within
//! its generous timeout. Every `sat` counterexample is checked here again, the way
//! the VNN-COMP scorer does: printed in the competition format, read back, the input
//! inside the property's box, the model run in `f32` (ONNX semantics) agreeing with
//! the printed outputs, and the outputs in the unsafe set (tolerance 1e-4, the
//! scorer's).

use lirpa_verify::{Model, Problem, Verdict, VerifyOptions, verify};
use std::path::{Path, PathBuf};
use std::time::Duration;

fn bench(folder: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/benchmarks").join(folder)
}

fn expected(folder: &str, onnx: &str, vnnlib: &str) -> String {
    let text = std::fs::read_to_string(bench(folder).join("expected_results_vnncomp.csv")).unwrap();
    text.lines()
        .map(|l| l.split(',').collect::<Vec<_>>())
        .find(|f| f[0] == onnx && f[1] == vnnlib)
        .unwrap_or_else(|| panic!("{onnx} {vnnlib}: not in the expected results"))[2]
        .to_string()
}

/// Read back `((X_0 v)\n...(Y_m v))`: the values of X and of Y, in index order.
fn read_counterexample(text: &str) -> (Vec<f64>, Vec<f64>) {
    let (mut x, mut y) = (Vec::new(), Vec::new());
    for tok in text.split(')').map(|t| t.trim().trim_start_matches('(').trim_start_matches('(')) {
        if tok.is_empty() {
            continue;
        }
        let mut it = tok.split_whitespace();
        let (name, v) = (it.next().unwrap(), it.next().unwrap().parse::<f64>().unwrap());
        let (vec, idx) = match name.split_once('_').unwrap() {
            ("X", i) => (&mut x, i.parse::<usize>().unwrap()),
            ("Y", j) => (&mut y, j.parse::<usize>().unwrap()),
            _ => panic!("bad name {name}"),
        };
        assert_eq!(idx, vec.len(), "indices in order");
        vec.push(v);
    }
    (x, y)
}

/// The scorer's check of a counterexample, independently of the verifier's.
fn check_counterexample(model: &Model, problem: &Problem, text: &str) {
    let (x, y) = read_counterexample(text);
    assert_eq!((x.len(), y.len()), (problem.n_inputs, problem.n_outputs));
    let x32: Vec<f32> = x.iter().map(|&v| v as f32).collect();
    let y32 = model.forward32(&x32).unwrap();
    for (a, b) in y32.iter().zip(&y) {
        assert!((*a as f64 - b).abs() <= 1e-4 + 1e-3 * b.abs(), "f32 output {a} vs printed {b}");
    }
    let tol = 1e-4;
    let ok = problem.regions.iter().any(|r| {
        x.iter().zip(r.lower.iter().zip(&r.upper)).all(|(v, (l, u))| *v >= l - tol && *v <= u + tol)
            && r.disjuncts.iter().any(|d| {
                d.c.iter()
                    .zip(&d.d)
                    .all(|(row, rhs)| row.iter().zip(&y).map(|(a, b)| a * b).sum::<f64>() <= rhs + tol)
            })
    });
    assert!(ok, "the counterexample does not violate the property");
}

fn run(folder: &str, onnx: &str, vnnlib: &str) -> &'static str {
    let dir = bench(folder);
    let model = Model::load(dir.join(onnx)).unwrap();
    let problem = Problem::from_property(&lirpa_vnnlib::parse_file(dir.join(vnnlib)).unwrap());
    let mut opts = VerifyOptions::with_timeout(Duration::from_secs(30));
    // Not proven and no counterexample yet: do not spend the whole timeout attacking.
    opts.extra_attack = Duration::from_secs(5);
    let (verdict, _) = verify(&model, &problem, &opts).unwrap();
    let exp = expected(folder, onnx, vnnlib);
    let word = verdict.word();
    eprintln!("{folder} {onnx} {vnnlib}: {word} (expected {exp})");
    assert!(
        !(word == "sat" && exp == "unsat" || word == "unsat" && exp == "sat"),
        "{onnx} {vnnlib}: WRONG answer {word}, expected {exp}"
    );
    if let Verdict::Sat(ce) = &verdict {
        let text = verdict.vnncomp_text();
        assert!(text.starts_with("sat\n((X_0 "), "{text}");
        check_counterexample(&model, &problem, text.strip_prefix("sat\n").unwrap());
        assert!(problem.is_counterexample(&ce.x, &ce.y));
    }
    word
}

#[test]
fn acasxu_selection() {
    let net = |a: u32, b: u32| format!("ACASXU_run2a_{a}_{b}_batch_2000.onnx");
    let cases: Vec<(String, &str)> = vec![
        (net(1, 1), "prop_1.vnnlib"),
        (net(1, 8), "prop_1.vnnlib"),
        (net(2, 1), "prop_2.vnnlib"),
        (net(3, 5), "prop_2.vnnlib"),
        (net(5, 9), "prop_2.vnnlib"),
        (net(1, 7), "prop_3.vnnlib"),
        (net(1, 9), "prop_3.vnnlib"),
        (net(2, 4), "prop_3.vnnlib"),
        (net(1, 8), "prop_4.vnnlib"),
        (net(4, 4), "prop_4.vnnlib"),
        (net(1, 9), "prop_7.vnnlib"),
        (net(4, 5), "prop_10.vnnlib"),
    ];
    let mut solved = [0usize; 2];
    for (onnx, vnnlib) in &cases {
        match run("vnncomp2021_acasxu", onnx, vnnlib) {
            "sat" => solved[0] += 1,
            "unsat" => solved[1] += 1,
            other => panic!("{onnx} {vnnlib}: {other}, but it is solved in well under a second"),
        }
    }
    assert!(solved[0] >= 5 && solved[1] >= 5, "{solved:?}");
}

#[test]
fn vnncomp2021_test_set() {
    for (onnx, vnnlib) in [
        ("test_sat.onnx", "test_prop.vnnlib"),
        ("test_unsat.onnx", "test_prop.vnnlib"),
        ("test_nano.onnx", "test_nano.vnnlib"),
    ] {
        let word = run("vnncomp2021_test", onnx, vnnlib);
        assert!(word == "sat" || word == "unsat", "{onnx}: {word}");
    }
}

/// mnistfc 2021: sat instances the attack finds in well under a second here, and an
/// unsat one CROWN proves without branching (both measured with `cargo xtask vnncomp
/// vnncomp2021_mnistfc`); the input is [1, 784, 1].
#[test]
fn mnistfc_selection() {
    let net = "mnist-net_256x2.onnx";
    for vnnlib in ["prop_3_0.05.vnnlib", "prop_8_0.05.vnnlib", "prop_14_0.05.vnnlib", "prop_4_0.03.vnnlib"] {
        let word = run("vnncomp2021_mnistfc", net, vnnlib);
        assert!(word == "sat" || word == "unsat", "{net} {vnnlib}: {word}");
    }
}

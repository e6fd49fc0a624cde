//! The `lirpa` command end to end. Each case is data: arguments, expected exit status,
//! and a check of stdout (JSON bounds) or of the one-line stderr message.

use std::process::Command;

const ROOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");

fn lirpa(args: &[&str]) -> (i32, String, String) {
    let out =
        Command::new(env!("CARGO_BIN_EXE_lirpa")).current_dir(ROOT).args(args).output().expect("run lirpa");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

fn write_tmp(name: &str, text: &str) -> String {
    let dir = std::env::temp_dir().join(format!("lirpa-cli-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p.to_string_lossy().into_owned()
}

const BOX: &[&str] = &["--lower", "models/toy_lower.json", "--upper", "models/toy_upper.json"];

/// The f32 bounds contain auto_LiRPA's exact golden interval `[lo, hi]` and are within
/// 1e-5 of it: the relaxations raise an intercept by the rounding error they measure,
/// so an f32 bound may be a few ulps looser than the exact value, never tighter.
fn sound_and_close(v: &serde_json::Value, lo: f64, hi: f64) -> bool {
    let (l, u) = (v["lower"][0].as_f64().unwrap(), v["upper"][0].as_f64().unwrap());
    l <= lo && l >= lo - 1e-5 && u >= hi && u <= hi + 1e-5
}

#[test]
fn json_bounds_of_the_toy_model() {
    // auto_LiRPA's toy example (notes §4.2): IBP [-6, 4], CROWN and CROWN-IBP [-3, 3].
    for (method, lo, hi) in [("ibp", -6.0, 4.0), ("crown", -3.0, 3.0), ("crown-ibp", -3.0, 3.0)] {
        let mut args = vec!["bounds", "models/toy.onnx", "--method", method, "--json"];
        args.extend(BOX);
        let (code, stdout, stderr) = lirpa(&args);
        assert_eq!(code, 0, "{stderr}");
        let v: serde_json::Value = serde_json::from_str(stdout.trim()).expect("stdout is only JSON");
        assert!(sound_and_close(&v, lo, hi), "{method}: {v}");
    }
    // With a specification matrix: bounds of -y.
    let c = write_tmp("c.json", "[[-1.0]]");
    let mut args = vec!["bounds", "models/toy.onnx", "--json", "--spec-c", &c];
    args.extend(BOX);
    let (code, stdout, _) = lirpa(&args);
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert!(sound_and_close(&v, -3.0, 3.0), "{v}");
    // An L∞ ball around a centre gives the same as the equivalent box.
    let center = write_tmp("center.json", "[0.5, -0.5]");
    let (code, stdout, _) =
        lirpa(&["bounds", "models/toy.onnx", "--json", "--norm", "inf", "--eps", "1.5", "--center", &center]);
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert!(sound_and_close(&v, -3.0, 3.0), "{v}");
}

#[test]
fn bad_input_gives_one_line_error() {
    let nan = write_tmp("nan.json", "[1, NaN]");
    let short = write_tmp("short.json", "[1]");
    let text = write_tmp("text.json", "[1, \"a\"]");
    let not_onnx = write_tmp("bad.onnx", "this is not protobuf");
    let bad_c = write_tmp("badc.json", "[[1.0, 2.0]]");
    let cases: &[(&[&str], &str)] = &[
        (
            &[
                "bounds",
                "models/missing.onnx",
                "--lower",
                "models/toy_lower.json",
                "--upper",
                "models/toy_upper.json",
            ],
            "missing.onnx",
        ),
        (
            &[
                "bounds",
                "models/toy.onnx",
                "--method",
                "magic",
                "--lower",
                "models/toy_lower.json",
                "--upper",
                "models/toy_upper.json",
            ],
            "magic",
        ),
        (&["bounds", "models/toy.onnx", "--lower", &nan, "--upper", "models/toy_upper.json"], "nan.json"),
        (&["bounds", "models/toy.onnx", "--lower", &text, "--upper", "models/toy_upper.json"], "element 1"),
        (&["bounds", "models/toy.onnx", "--norm", "inf", "--eps", "0.1", "--center", &short], "has 1 values"),
        (
            &[
                "bounds",
                "models/toy.onnx",
                "--lower",
                "models/toy_upper.json",
                "--upper",
                "models/toy_lower.json",
            ],
            "lower",
        ),
        (
            &["bounds", &not_onnx, "--lower", "models/toy_lower.json", "--upper", "models/toy_upper.json"],
            "bad.onnx",
        ),
        (
            &[
                "bounds",
                "models/toy.onnx",
                "--spec-c",
                &bad_c,
                "--lower",
                "models/toy_lower.json",
                "--upper",
                "models/toy_upper.json",
            ],
            "2 columns",
        ),
        (&["bounds", "models/toy.onnx"], "give either"),
        (
            &[
                "bounds",
                "models/toy.onnx",
                "--norm",
                "inf",
                "--eps",
                "-1",
                "--center",
                "models/toy_lower.json",
            ],
            "eps",
        ),
    ];
    for (args, needle) in cases {
        let (code, stdout, stderr) = lirpa(args);
        assert_ne!(code, 0, "{args:?} should fail");
        assert!(stdout.is_empty(), "{args:?}: stdout {stdout}");
        assert_eq!(stderr.trim_end().lines().count(), 1, "{args:?}: not one line: {stderr}");
        assert!(stderr.contains(needle), "{args:?}: {stderr} should mention {needle}");
    }
}

#[test]
fn ops_lists_the_standard_operators() {
    let (code, stdout, _) = lirpa(&["ops"]);
    assert_eq!(code, 0);
    for op in ["Gemm", "MatMul", "Relu", "LeakyRelu", "Reshape", "Transpose"] {
        assert!(stdout.lines().any(|l| l.split('\t').nth(1) == Some(op)), "{op} missing from:\n{stdout}");
    }
}

/// `lirpa verify` on the vnncomp2021_test instances (expected answers from the
/// benchmark's `expected_results_vnncomp.csv`: test_sat is sat, test_unsat unsat):
/// the results file, the counterexample's VNN-COMP form, JSON, and errors.
#[test]
fn verify_writes_vnncomp_results() {
    let bench = concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/benchmarks/vnncomp2021_test");
    let prop = format!("{bench}/test_prop.vnnlib");
    let results = write_tmp("results.txt", "no_result_in_file");
    let (code, stdout, stderr) = lirpa(&[
        "verify",
        &format!("{bench}/test_sat.onnx"),
        &prop,
        "--timeout",
        "30",
        "--results",
        &results,
    ]);
    assert_eq!(code, 0, "{stderr}");
    let file = std::fs::read_to_string(&results).unwrap();
    assert_eq!(file, stdout);
    let mut lines = file.lines();
    assert_eq!(lines.next(), Some("sat"));
    let ce: Vec<&str> = lines.collect();
    // 5 inputs, 5 outputs, in index order, one per line, all in one s-expression.
    assert_eq!(ce.len(), 10, "{file}");
    for (k, line) in ce.iter().enumerate() {
        let name = if k < 5 { format!("X_{k}") } else { format!("Y_{}", k - 5) };
        let inner = line
            .trim_start_matches("((")
            .trim_start_matches('(')
            .trim_end_matches("))")
            .trim_end_matches(')');
        let (n, v) = inner.split_once(' ').unwrap();
        assert_eq!(n, name);
        assert!(v.parse::<f64>().unwrap().is_finite());
    }
    assert!(ce[0].starts_with("((X_0 ") && ce[9].ends_with("))"));

    let (code, stdout, stderr) =
        lirpa(&["verify", &format!("{bench}/test_unsat.onnx"), &prop, "--timeout", "30", "--json"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.is_empty(), "--json is quiet: {stderr}");
    let v: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(v["result"], "unsat");

    let (code, _, stderr) = lirpa(&["verify", "models/toy.onnx", &prop, "--timeout", "5"]);
    assert_ne!(code, 0);
    assert!(stderr.contains("declares 5 inputs"), "{stderr}");
    let (code, _, stderr) = lirpa(&["verify", "models/toy.onnx", &prop, "--timeout", "-1"]);
    assert_ne!(code, 0);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
}

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

/// `--perturbation P.json`: tensors by ONNX name. The toy model's input as a box gives
/// the same bounds as `--lower/--upper`; its input exact at `[1, -1]` (hidden layer
/// `relu(W1·x) = [2, 3]`, output −1) with `W2` in an L∞ ball of radius 0.5 around its
/// stored `[1, −1]` gives exactly `−1 ± 0.5·(2 + 3) = [−3.5, 1.5]` by every method;
/// a reference weights case matches auto_LiRPA's recorded CROWN bounds of `C·y`.
#[test]
fn perturbation_file_by_tensor_name() {
    let boxed = write_tmp("p_box.json", r#"[{"tensor": "x", "lower": [-1, -2], "upper": [2, 1]}]"#);
    let (code, stdout, stderr) = lirpa(&["bounds", "models/toy.onnx", "--json", "--perturbation", &boxed]);
    assert_eq!(code, 0, "{stderr}");
    let v: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert!(sound_and_close(&v, -3.0, 3.0), "{v}");
    let weight = "models/toy_weights.json"; // the README's example
    for method in ["ibp", "crown", "crown-ibp", "alpha-crown", "forward", "forward+backward"] {
        let (code, stdout, stderr) =
            lirpa(&["bounds", "models/toy.onnx", "--json", "--method", method, "--perturbation", weight]);
        assert_eq!(code, 0, "{method}: {stderr}");
        let v: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
        assert!(sound_and_close(&v, -3.5, 1.5), "{method}: {v}");
    }

    // A reference case (../shared/reference/weights): the input exact, fc2.weight in an
    // L∞ ball, C·y by CROWN, against auto_LiRPA's recorded bounds (README tolerance).
    let dir = format!("{ROOT}/../shared/reference/weights/mlp_8_16_16_4__w_fc2_linf_0.05");
    let case: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(format!("{dir}/case.json")).unwrap()).unwrap();
    let p = serde_json::json!([
        {"tensor": "input", "value": case["center"]},
        {"tensor": "fc2.weight", "norm": "inf", "eps": 0.05},
    ]);
    let p = write_tmp("p_case.json", &p.to_string());
    let c = write_tmp("p_c.json", &case["spec_c"].to_string());
    let model = format!("{dir}/model.onnx");
    let (code, stdout, stderr) =
        lirpa(&["bounds", &model, "--json", "--method", "crown", "--perturbation", &p, "--spec-c", &c]);
    assert_eq!(code, 0, "{stderr}");
    let v: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    let reference = &case["spec_bounds"]["CROWN"];
    for side in ["lower", "upper"] {
        let (ours, theirs) = (v[side].as_array().unwrap(), reference[side].as_array().unwrap());
        assert_eq!(ours.len(), theirs.len());
        for (a, b) in ours.iter().zip(theirs) {
            let (a, b) = (a.as_f64().unwrap(), b.as_f64().unwrap());
            assert!((a - b).abs() <= 1e-4 * b.abs().max(1.0), "{side}: ours {a}, auto_LiRPA {b}");
        }
    }
}

/// Bad perturbation files: one line on stderr naming the file and the entry or tensor.
#[test]
fn bad_perturbation_file_gives_one_line_error() {
    let cases: &[(&str, &str, &[&str])] = &[
        (
            "p_missing.json",
            r#"[{"tensor": "W2", "norm": "inf", "eps": 0.5}]"#,
            &["graph input 'x' is not listed"],
        ),
        (
            "p_unknown.json",
            r#"[{"tensor": "x", "value": [1, 2]}, {"tensor": "W9", "norm": "inf", "eps": 0.5}]"#,
            &["'W9'", "not an initializer"],
        ),
        (
            "p_twice.json",
            r#"[{"tensor": "x", "value": [1, 2]}, {"tensor": "x", "value": [1, 2]}]"#,
            &["'x' is listed twice"],
        ),
        (
            "p_len.json",
            r#"[{"tensor": "x", "value": [1, 2, 3]}]"#,
            &["tensor 'x'", "3 numbers", "2 elements"],
        ),
        (
            "p_both.json",
            r#"[{"tensor": "x", "value": [1, 2], "lower": [0, 0], "upper": [1, 1]}]"#,
            &["entry 0 ('x')", "exactly one of"],
        ),
        (
            "p_norm.json",
            r#"[{"tensor": "x", "norm": "3", "eps": 1, "center": [0, 0]}]"#,
            &["entry 0 ('x')", "norm"],
        ),
        (
            "p_eps.json",
            r#"[{"tensor": "x", "norm": "inf", "eps": -1, "center": [0, 0]}]"#,
            &["entry 0", "eps"],
        ),
        ("p_nocenter.json", r#"[{"tensor": "x", "norm": "inf", "eps": 1}]"#, &["tensor 'x'", "centre"]),
        ("p_key.json", r#"[{"tensor": "x", "valu": [1, 2]}]"#, &["entry 0 ('x')", "unknown key \"valu\""]),
        ("p_name.json", r#"[{"value": [1, 2]}]"#, &["entry 0", "missing \"tensor\""]),
        ("p_nan.json", r#"[{"tensor": "x", "value": [1, "a"]}]"#, &["entry 0 ('x')", "element 1"]),
        ("p_obj.json", r#"{"tensor": "x"}"#, &["expected a JSON array"]),
    ];
    for (name, text, needles) in cases {
        let p = write_tmp(name, text);
        let (code, stdout, stderr) = lirpa(&["bounds", "models/toy.onnx", "--perturbation", &p]);
        assert_ne!(code, 0, "{name}: {stdout}");
        assert_eq!(stderr.trim().lines().count(), 1, "{name}: {stderr}");
        assert!(stderr.contains(name), "{name}: the file is not named: {stderr}");
        for n in *needles {
            assert!(stderr.contains(n), "{name}: expected '{n}' in: {stderr}");
        }
    }
    // The input flags and --perturbation exclude each other.
    let p = write_tmp("p_ok.json", r#"[{"tensor": "x", "value": [1, 2]}]"#);
    let mut args = vec!["bounds", "models/toy.onnx", "--perturbation", &p];
    args.extend(BOX);
    let (code, _, stderr) = lirpa(&args);
    assert_ne!(code, 0);
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
}

/// `lirpa train`: a short CROWN-IBP run on the digits data writes a model that `lirpa
/// bounds` loads, prints JSON with one entry per epoch and the test evaluation; bad
/// arguments and data are one-line errors naming what is wrong.
#[test]
fn train_writes_a_model_and_refuses_bad_input() {
    let dir = format!("{ROOT}/../shared/reference/training");
    let (model, data) = (format!("{dir}/init_mlp.onnx"), format!("{dir}/digits.csv"));
    let out = write_tmp("trained.onnx", "");
    let base = ["train", &model, "--data", &data, "--out", &out];
    let mut args: Vec<&str> = base.to_vec();
    args.extend([
        "--split",
        "1437",
        "--method",
        "crown-ibp",
        "--eps",
        "0.02",
        "--epochs",
        "3",
        "--schedule",
        "start=2,length=1",
    ]);
    args.extend(["--json", "--threads", "1", "--quantize", "4"]);
    let (code, stdout, stderr) = lirpa(&args);
    assert_eq!(code, 0, "{stderr}");
    let v: serde_json::Value = serde_json::from_str(stdout.trim()).expect("stdout is only JSON");
    assert_eq!(v["epochs"].as_array().unwrap().len(), 3);
    assert!(v["epochs"][2]["eps_last"].as_f64().unwrap() == 0.02, "{v}");
    assert!(v["test"][0]["clean_err"].as_f64().unwrap() < 50.0, "{v}");
    assert_eq!(v["quantized"][0]["bits"], 4);
    let mut bounds =
        vec!["bounds", out.as_str(), "--method", "crown", "--json", "--norm", "inf", "--eps", "0.1"];
    let center = write_tmp("center.json", &format!("[{}]", vec!["0.5"; 64].join(",")));
    bounds.extend(["--center", center.as_str()]);
    let (code, stdout, stderr) = lirpa(&bounds);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(stdout.trim()).unwrap()["lower"].as_array().unwrap().len(),
        10
    );

    let bad_csv = write_tmp("bad.csv", "a,b,label\n0.5,x,1\n");
    for (extra, needle) in [
        (vec!["--method", "pgd"], "unknown training method 'pgd'"),
        (vec!["--schedule", "begin=2"], "unknown schedule key 'begin'"),
        (vec!["--norm", "1"], "--norm 1"),
        (vec!["--split", "5000"], "--split 5000"),
        (vec!["--quantize", "1"], "--quantize 1"),
    ] {
        let mut a: Vec<&str> = base.to_vec();
        a.extend(extra);
        let (code, _, stderr) = lirpa(&a);
        assert!(code != 0 && stderr.lines().count() == 1 && stderr.contains(needle), "{needle}: {stderr}");
    }
    let (code, _, stderr) = lirpa(&["train", &model, "--data", &bad_csv, "--out", &out]);
    assert!(code != 0 && stderr.contains("bad.csv, line 2: 'x' is not a number"), "{stderr}");
    let (code, _, stderr) = lirpa(&["train", "models/toy.onnx", "--data", &data, "--out", &out]);
    assert!(code != 0 && stderr.lines().count() == 1 && stderr.contains("at least 2 outputs"), "{stderr}");
}

#[test]
fn fp_sound_bounds_enclose_the_default_ones_and_bad_modes_are_one_line() {
    // Every mode and method on the toy model: the sound bounds contain the golden
    // interval and the default bounds.
    for method in ["ibp", "crown", "crown-ibp", "alpha-crown", "forward"] {
        let run = |extra: &[&str]| {
            let mut args = vec!["bounds", "models/toy.onnx", "--method", method, "--json"];
            args.extend(BOX);
            args.extend(extra);
            let (code, stdout, stderr) = lirpa(&args);
            assert_eq!(code, 0, "{method} {extra:?}: {stderr}");
            let v: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
            (v["lower"][0].as_f64().unwrap(), v["upper"][0].as_f64().unwrap())
        };
        let (l0, u0) = run(&[]);
        for mode in ["--fp-sound", "--fp-sound=real", "--fp-sound=float32-model"] {
            for dtype in ["f32", "f64"] {
                let (l, u) = run(&[mode, "--dtype", dtype]);
                // The golden intervals (α-CROWN may be tighter than CROWN's).
                let (lo, hi) = if method == "ibp" { (-6.0, 4.0) } else { (-3.0, 3.0) };
                assert!(
                    method == "alpha-crown" || method == "forward" || (l <= lo && u >= hi),
                    "{method} {mode} {dtype}: [{l}, {u}]"
                );
                assert!(dtype == "f64" || (l <= l0 && u >= u0), "{method} {mode}: [{l}, {u}] ⊉ [{l0}, {u0}]");
            }
        }
    }
    let mut args = vec!["bounds", "models/toy.onnx", "--fp-sound=exact"];
    args.extend(BOX);
    let (code, _, stderr) = lirpa(&args);
    assert_ne!(code, 0);
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(stderr.contains("fp-sound"), "{stderr}");
}

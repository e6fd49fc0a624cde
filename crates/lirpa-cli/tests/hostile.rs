//! Hostile input (issue 15), end to end against the `lirpa` binary. Each case is data:
//! the files it writes (models built here in memory, JSON, VNN-LIB), the arguments and
//! the expected outcome: a one-line error containing a given text with exit status 1
//! or 2 (never a panic's 101 or an abort's 134), or exit 0 with an answer checked
//! against the right one.

use lirpa::onnx::proto::{
    AttributeProto, DimValue, Dimension, GraphProto, ModelProto, NodeProto, OperatorSetIdProto, TensorProto,
    TensorShapeProto, TypeProto, TypeProtoTensor, ValueInfoProto,
};
use prost::Message;
use std::process::Command;

const ROOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");

fn tmp(name: &str, bytes: &[u8]) -> String {
    let dir = std::env::temp_dir().join(format!("lirpa-hostile-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p.to_string_lossy().into_owned()
}

// ------------------------------------------------------------ ONNX models in memory

fn value(name: &str, dims: &[i64]) -> ValueInfoProto {
    let dim = dims.iter().map(|&d| Dimension { value: Some(DimValue::DimValue(d)) }).collect();
    ValueInfoProto {
        name: name.into(),
        r#type: Some(TypeProto {
            tensor_type: Some(TypeProtoTensor { elem_type: 1, shape: Some(TensorShapeProto { dim }) }),
        }),
    }
}

fn floats(name: &str, dims: &[i64], data: &[f32]) -> TensorProto {
    TensorProto {
        name: name.into(),
        dims: dims.to_vec(),
        data_type: 1,
        float_data: data.to_vec(),
        ..Default::default()
    }
}

fn ints(name: &str, data: &[i64]) -> TensorProto {
    TensorProto {
        name: name.into(),
        dims: vec![data.len() as i64],
        data_type: 7,
        int64_data: data.to_vec(),
        ..Default::default()
    }
}

fn attr_f(name: &str, f: f32) -> AttributeProto {
    AttributeProto { name: name.into(), f, r#type: 1, ..Default::default() }
}

fn attr_ints(name: &str, v: &[i64]) -> AttributeProto {
    AttributeProto { name: name.into(), ints: v.to_vec(), r#type: 7, ..Default::default() }
}

fn attr_t(name: &str, t: TensorProto) -> AttributeProto {
    AttributeProto { name: name.into(), t: Some(t), r#type: 4, ..Default::default() }
}

fn node(op: &str, name: &str, inputs: &[&str], output: &str, attribute: Vec<AttributeProto>) -> NodeProto {
    NodeProto {
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: vec![output.into()],
        name: name.into(),
        op_type: op.into(),
        attribute,
        domain: String::new(),
    }
}

/// A model with input `x` of `dims`, output `y` of `out_dims`.
fn model(dims: &[i64], out_dims: &[i64], initializer: Vec<TensorProto>, nodes: Vec<NodeProto>) -> Vec<u8> {
    ModelProto {
        ir_version: 8,
        graph: Some(GraphProto {
            node: nodes,
            name: "hostile".into(),
            initializer,
            input: vec![value("x", dims)],
            output: vec![value("y", out_dims)],
            ..Default::default()
        }),
        opset_import: vec![OperatorSetIdProto { domain: String::new(), version: 17 }],
        ..Default::default()
    }
    .encode_to_vec()
}

/// `y = alpha·x·B + beta·C` with `B = [[1], [1]]`, `C = [1]`, on `x` of shape `[1, 2]`.
fn gemm(attrs: Vec<AttributeProto>) -> Vec<u8> {
    model(
        &[1, 2],
        &[1, 1],
        vec![floats("B", &[2, 1], &[1.0, 1.0]), floats("C", &[1], &[1.0])],
        vec![node("Gemm", "gemm0", &["x", "B", "C"], "y", attrs)],
    )
}

// ------------------------------------------------------------ running the binary

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

fn lirpa(args: &[String]) -> Run {
    let out =
        Command::new(env!("CARGO_BIN_EXE_lirpa")).current_dir(ROOT).args(args).output().expect("run lirpa");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// What a case must give.
enum Expect {
    /// A one-line error containing this text, exit status 1 or 2.
    Error(&'static str),
    /// Exit 0 and this check of stdout.
    Ok(fn(&str) -> bool),
    /// Either a one-line error naming the overflow, or exit 0 with finite bounds that
    /// pass the check (the right answer).
    ErrorOr(&'static str, fn(&str) -> bool),
}

fn json_bounds(stdout: &str) -> Option<(Vec<f64>, Vec<f64>)> {
    let v: serde_json::Value = serde_json::from_str(stdout.trim()).ok()?;
    let get = |k: &str| -> Option<Vec<f64>> { v[k].as_array()?.iter().map(|x| x.as_f64()).collect() };
    Some((get("lower")?, get("upper")?))
}

fn finite_bounds(stdout: &str) -> bool {
    json_bounds(stdout).is_some_and(|(l, u)| {
        l.iter().chain(&u).all(|x| x.is_finite()) && l.iter().zip(&u).all(|(a, b)| a <= b)
    })
}

/// `1e38·(x0 + x1)` over `[0.3, 0.5] × [0.2, 0.3]` plus 1: `[5e37, 8e37]` (to f32's
/// precision: the input box and `alpha` are rounded to f32).
fn gemm_alpha_right(stdout: &str) -> bool {
    json_bounds(stdout).is_some_and(|(l, u)| {
        l.len() == 1 && (l[0] / 5e37 - 1.0).abs() < 1e-6 && (u[0] / 8e37 - 1.0).abs() < 1e-6
    })
}

fn check(name: &str, args: &[String], expect: &Expect) -> Result<(), String> {
    let r = lirpa(args);
    let one_line = r.stderr.trim_end().lines().count() == 1;
    let fail = |why: &str| {
        Err(format!("{name}: {why}; exit {}, stderr: {}, stdout: {:.300}", r.code, r.stderr.trim(), r.stdout))
    };
    let error_ok = |text: &str| (r.code == 1 || r.code == 2) && one_line && r.stderr.contains(text);
    match expect {
        Expect::Error(text) if error_ok(text) => Ok(()),
        Expect::Error(text) => fail(&format!("expected a one-line error containing '{text}'")),
        Expect::Ok(f) if r.code == 0 && f(&r.stdout) => Ok(()),
        Expect::Ok(_) => fail("expected exit 0 and the right answer"),
        Expect::ErrorOr(text, f) if error_ok(text) || (r.code == 0 && f(&r.stdout)) => Ok(()),
        Expect::ErrorOr(text, _) => {
            fail(&format!("expected the right finite answer or an error containing '{text}'"))
        }
    }
}

const METHODS: [&str; 6] = ["ibp", "crown", "crown-ibp", "alpha-crown", "forward", "forward+backward"];

fn s(v: &[&str]) -> Vec<String> {
    v.iter().map(|x| x.to_string()).collect()
}

#[test]
fn hostile_inputs_get_an_error_or_the_right_answer() {
    let toy_box = ["--lower", "models/toy_lower.json", "--upper", "models/toy_upper.json"];
    let conv_pads = |p: i64| {
        tmp(
            &format!("conv_pads_{p}.onnx"),
            &model(
                &[1, 1, 4, 4],
                &[1, 1, 4, 4],
                vec![floats("W", &[1, 1, 2, 2], &[1.0; 4])],
                vec![node("Conv", "conv0", &["x", "W"], "y", vec![attr_ints("pads", &[p, 0, p, 0])])],
            ),
        )
    };
    let box16 = (
        tmp("l16.json", format!("{:?}", vec![0.0; 16]).as_bytes()),
        tmp("u16.json", format!("{:?}", vec![1.0; 16]).as_bytes()),
    );
    let box1 = (tmp("l1.json", b"[0]"), tmp("u1.json", b"[1]"));
    let box2 = (tmp("l2.json", b"[0.3, 0.2]"), tmp("u2.json", b"[0.5, 0.3]"));
    // A ReLU of 2^22 elements, from a one-element input: CROWN's identity
    // specification alone is 2^44 coefficients (petabytes with the passes).
    let wide = tmp(
        "wide.onnx",
        &model(
            &[1, 1],
            &[1, 4194304],
            vec![ints("shape", &[1, 4194304])],
            vec![
                node(
                    "ConstantOfShape",
                    "big",
                    &["shape"],
                    "c",
                    vec![attr_t("value", floats("v", &[1], &[1.0]))],
                ),
                node("Add", "add0", &["x", "c"], "s", vec![]),
                node("Relu", "relu0", &["s"], "y", vec![]),
            ],
        ),
    );
    let wrapped = tmp(
        "wrapped.onnx",
        &model(
            &[4611686018427387909, 4],
            &[4, 4611686018427387909],
            vec![],
            vec![node("Transpose", "t0", &["x"], "y", vec![attr_ints("perm", &[1, 0])])],
        ),
    );
    let zero_dim =
        tmp("zero.onnx", &model(&[1, 0], &[1, 0], vec![], vec![node("Relu", "r0", &["x"], "y", vec![])]));
    let const_of_shape = tmp(
        "cos.onnx",
        &model(
            &[1, 1],
            &[1000000, 1000000],
            vec![ints("shape", &[1000000, 1000000])],
            vec![
                node("ConstantOfShape", "huge", &["shape"], "c", vec![]),
                node("Add", "add0", &["x", "c"], "y", vec![]),
            ],
        ),
    );
    let pad = tmp(
        "pad.onnx",
        &model(
            &[1, 1, 4, 4],
            &[1, 1, 1000004, 1000004],
            vec![ints("pads", &[0, 0, 500000, 500000, 0, 0, 500000, 500000])],
            vec![node("Pad", "pad0", &["x", "pads"], "y", vec![])],
        ),
    );
    let gemm_alpha = tmp("gemm_alpha.onnx", &gemm(vec![attr_f("alpha", 1e38)]));
    let gemm_beta_inf = tmp("gemm_beta.onnx", &gemm(vec![attr_f("beta", f32::INFINITY)]));
    let gemm_alpha_ninf = tmp("gemm_alpha_ninf.onnx", &gemm(vec![attr_f("alpha", f32::NEG_INFINITY)]));
    let gemm_typo = tmp("gemm_typo.onnx", &gemm(vec![attr_f("bteta", 2.0)]));

    let f32max = tmp("f32max.json", b"[3.4028235e38, 3.4028235e38]");
    let zero2 = tmp("zero2.json", b"[0, 0]");
    let huge_c = tmp("huge_c.json", b"[[3e38]]");
    let rows: String = format!("[{}]", vec!["[1]"; 100_000].join(","));
    let many_rows = tmp("rows.json", rows.as_bytes());
    let deep_json = tmp("deep.json", "[".repeat(100_000).as_bytes());

    let decl = "(declare-const X_0 Real)(declare-const X_1 Real)(declare-const Y_0 Real)\n";
    let toy_box_vnnlib = "(assert (>= X_0 -1))(assert (<= X_0 2))(assert (>= X_1 -2))(assert (<= X_1 1))\n";
    // (or (and (or (and ... (<= Y_0 -100) ...)))) 10,000 levels deep: the toy model's
    // output is in [-3, 3], so the property holds.
    let mut deep = String::from("(<= Y_0 -100)");
    for k in 0..10_000 {
        deep = format!("({} {deep})", if k % 2 == 0 { "and" } else { "or" });
    }
    let deep_vnnlib = tmp("deep.vnnlib", format!("{decl}{toy_box_vnnlib}(assert {deep})").as_bytes());
    let parens =
        tmp("parens.vnnlib", format!("{decl}{}{}", "(".repeat(200_000), ")".repeat(200_000)).as_bytes());
    let not_vnnlib = tmp("not.vnnlib", format!("{decl}{toy_box_vnnlib}(assert (not (>= Y_0 0)))").as_bytes());
    let and_or = tmp(
        "and_or.vnnlib",
        format!("{decl}{toy_box_vnnlib}(assert (and (or (<= Y_0 -100) (>= Y_0 100)) (<= Y_0 1000)))")
            .as_bytes(),
    );
    let empty_set = tmp("empty.vnnlib", format!("{decl}(assert (>= X_0 1))(assert (<= X_0 0))(assert (>= X_1 0))(assert (<= X_1 1))(assert (<= Y_0 0))").as_bytes());
    let toy_prop = tmp("toy.vnnlib", format!("{decl}{toy_box_vnnlib}(assert (<= Y_0 -100))").as_bytes());

    let bounds = |model: &str, method: &str, extra: &[&str]| -> Vec<String> {
        let mut v = s(&["bounds", model, "--method", method, "--json"]);
        v.extend(s(extra));
        v
    };
    let mut cases: Vec<(String, Vec<String>, Expect)> = Vec::new();
    for m in METHODS {
        for p in [4611686018427387904i64, 1_000_000_000] {
            cases.push((
                format!("conv pads {p} ({m})"),
                bounds(&conv_pads(p), m, &["--lower", &box16.0, "--upper", &box16.1]),
                Expect::Error("conv0"),
            ));
        }
        cases.push((
            format!("wrapped dims ({m})"),
            bounds(&wrapped, m, &toy_box),
            Expect::Error("overflows"),
        ));
        cases.push((format!("zero dim ({m})"), bounds(&zero_dim, m, &toy_box), Expect::Error("zero-size")));
        cases.push((
            format!("ConstantOfShape 1e12 ({m})"),
            bounds(&const_of_shape, m, &["--lower", &box1.0, "--upper", &box1.1]),
            Expect::Error("memory budget"),
        ));
        cases.push((
            format!("Pad 1e12 ({m})"),
            bounds(&pad, m, &["--lower", &box16.0, "--upper", &box16.1]),
            Expect::Error("memory budget"),
        ));
        cases.push((
            format!("Gemm alpha 1e38 ({m})"),
            bounds(&gemm_alpha, m, &["--lower", &box2.0, "--upper", &box2.1]),
            Expect::ErrorOr("gemm0", gemm_alpha_right),
        ));
        cases.push((
            format!("Gemm beta inf ({m})"),
            bounds(&gemm_beta_inf, m, &["--lower", &box2.0, "--upper", &box2.1]),
            Expect::Error("attribute 'beta'"),
        ));
        cases.push((
            format!("Gemm alpha -inf ({m})"),
            bounds(&gemm_alpha_ninf, m, &["--lower", &box2.0, "--upper", &box2.1]),
            Expect::Error("attribute 'alpha'"),
        ));
        cases.push((
            format!("Gemm unknown attribute ({m})"),
            bounds(&gemm_typo, m, &["--lower", &box2.0, "--upper", &box2.1]),
            Expect::Error("unknown attribute 'bteta'"),
        ));
        for dtype in ["f32", "f64"] {
            cases.push((
                format!("centre at f32 max ({m}, {dtype})"),
                bounds(
                    "models/toy.onnx",
                    m,
                    &["--norm", "inf", "--eps", "1", "--center", &f32max, "--dtype", dtype],
                ),
                Expect::ErrorOr("overflow the number type", finite_bounds),
            ));
            cases.push((
                format!("L2 radius 1e38 ({m}, {dtype})"),
                bounds(
                    "models/toy.onnx",
                    m,
                    &["--norm", "2", "--eps", "1e38", "--center", &zero2, "--dtype", dtype],
                ),
                Expect::ErrorOr("overflow the number type", finite_bounds),
            ));
            cases.push((
                format!("spec entries 3e38 ({m}, {dtype})"),
                bounds(
                    "models/toy.onnx",
                    m,
                    &[
                        "--spec-c",
                        &huge_c,
                        "--lower",
                        "models/toy_lower.json",
                        "--upper",
                        "models/toy_upper.json",
                        "--dtype",
                        dtype,
                    ],
                ),
                Expect::ErrorOr("overflow the number type", finite_bounds),
            ));
        }
    }
    for m in ["crown", "alpha-crown", "forward+backward"] {
        cases.push((
            format!("petabyte CROWN ({m})"),
            bounds(&wide, m, &["--lower", &box1.0, "--upper", &box1.1]),
            Expect::Error("memory budget"),
        ));
    }
    cases.push((
        "spec rows past the budget".into(),
        bounds(
            "models/toy.onnx",
            "crown",
            &[
                "--spec-c",
                &many_rows,
                "--max-memory",
                "2M",
                "--lower",
                "models/toy_lower.json",
                "--upper",
                "models/toy_upper.json",
            ],
        ),
        Expect::Error("fewer specification rows"),
    ));
    cases.push((
        "spec rows within the budget".into(),
        bounds(
            "models/toy.onnx",
            "crown",
            &["--spec-c", &many_rows, "--lower", "models/toy_lower.json", "--upper", "models/toy_upper.json"],
        ),
        Expect::Ok(|o| json_bounds(o).is_some_and(|(l, _)| l.len() == 100_000)),
    ));
    cases.push((
        "huge --threads (bounds)".into(),
        bounds("models/toy.onnx", "crown", &[&toy_box[..], &["--threads", "1000000000"]].concat()),
        Expect::Error("--threads"),
    ));
    cases.push((
        "huge --threads (verify)".into(),
        s(&["verify", "models/toy.onnx", &toy_prop, "--threads", "100000000"]),
        Expect::Error("--threads"),
    ));
    cases.push((
        "bad --max-memory".into(),
        s(&["bounds", "models/toy.onnx", "--max-memory", "lots"]),
        Expect::Error("--max-memory"),
    ));
    for t in ["1e19", "1e20", "1e308", "inf", "NaN", "0", "-1", "604801"] {
        let arg = format!("--timeout={t}");
        cases.push((
            format!("timeout {t}"),
            s(&["verify", "models/toy.onnx", &toy_prop, &arg]),
            Expect::Error("--timeout"),
        ));
    }
    cases.push((
        "timeout at the maximum".into(),
        s(&["verify", "models/toy.onnx", &toy_prop, "--timeout", "604800"]),
        Expect::Ok(|o| o.starts_with("unsat")),
    ));
    let small = ["--max-memory", "64M"];
    cases.push((
        "/dev/zero model".into(),
        bounds("/dev/zero", "crown", &[&toy_box[..], &small[..]].concat()),
        Expect::Error("longer than"),
    ));
    cases.push((
        "/dev/zero centre".into(),
        bounds(
            "models/toy.onnx",
            "crown",
            &["--norm", "inf", "--eps", "1", "--center", "/dev/zero", "--max-memory", "64M"],
        ),
        Expect::Error("longer than"),
    ));
    cases.push((
        "/dev/zero spec".into(),
        bounds("models/toy.onnx", "crown", &[&toy_box[..], &["--spec-c", "/dev/zero"], &small[..]].concat()),
        Expect::Error("longer than"),
    ));
    cases.push((
        "/dev/zero perturbation".into(),
        bounds("models/toy.onnx", "crown", &["--perturbation", "/dev/zero", "--max-memory", "64M"]),
        Expect::Error("longer than"),
    ));
    cases.push((
        "/dev/zero property".into(),
        s(&["verify", "models/toy.onnx", "/dev/zero", "--max-memory", "64M"]),
        Expect::Error("longer than"),
    ));
    cases.push((
        "/dev/urandom property".into(),
        bounds("models/toy.onnx", "crown", &["--vnnlib", "/dev/urandom", "--max-memory", "64M"]),
        Expect::Error("/dev/urandom"),
    ));
    cases.push((
        "deep JSON".into(),
        bounds("models/toy.onnx", "crown", &["--norm", "inf", "--eps", "1", "--center", &deep_json]),
        Expect::Error("not valid JSON"),
    ));
    cases.push((
        "VNN-LIB nested 10,000 deep (bounds)".into(),
        bounds("models/toy.onnx", "crown", &["--vnnlib", &deep_vnnlib]),
        Expect::Ok(|o| json_bounds(o).is_some_and(|(l, u)| l[0] <= -3.0 && u[0] >= 3.0)),
    ));
    cases.push((
        "VNN-LIB nested 10,000 deep (verify)".into(),
        s(&["verify", "models/toy.onnx", &deep_vnnlib, "--timeout", "20"]),
        Expect::Ok(|o| o.starts_with("unsat")),
    ));
    cases.push((
        "200,000 parentheses".into(),
        s(&["verify", "models/toy.onnx", &parens, "--timeout", "20"]),
        Expect::Error("expected an operator"),
    ));
    cases.push((
        "VNN-LIB not".into(),
        s(&["verify", "models/toy.onnx", &not_vnnlib]),
        Expect::Error("'not' is not supported"),
    ));
    cases.push((
        "VNN-LIB (and (or ...))".into(),
        s(&["verify", "models/toy.onnx", &and_or, "--timeout", "20"]),
        Expect::Ok(|o| o.starts_with("unsat")),
    ));
    cases.push((
        "empty input set (bounds)".into(),
        bounds("models/toy.onnx", "crown", &["--vnnlib", &empty_set]),
        Expect::Error("input set is empty"),
    ));
    cases.push((
        "empty input set (verify)".into(),
        s(&["verify", "models/toy.onnx", &empty_set]),
        Expect::Ok(|o| o.starts_with("unsat")),
    ));
    cases.push((
        "unwritable --results".into(),
        s(&["verify", "models/toy.onnx", &toy_prop, "--results", "/nonexistent/dir/out.txt"]),
        Expect::Error("cannot write the results"),
    ));

    let failures: Vec<String> =
        cases.iter().filter_map(|(name, args, e)| check(name, args, e).err()).collect();
    let _ =
        std::fs::remove_dir_all(std::env::temp_dir().join(format!("lirpa-hostile-{}", std::process::id())));
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

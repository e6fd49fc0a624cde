//! Every registered operator under every method: for each operator type the linked
//! plugins register, small graphs that use it (generated below: operand shapes,
//! attributes, constant inputs) are bounded by IBP, CROWN, CROWN-IBP, forward,
//! forward+backward and α-CROWN. Each method either bounds soundly (every output at
//! sampled points of the input set lies inside the bounds) or refuses with
//! `Error::Unimplemented` naming the operator, and then only where [`REFUSED`] says
//! so, with the reason. An operator without generated inputs must be listed in
//! [`NO_INPUTS`] with the reason. The out-of-tree template (`com.example` Swish) is
//! linked and walked too.
//!
//! Each graph puts the operator between two ReLUs, so that α-CROWN has parameters on
//! both sides of it and needs its adjoint (`relaxed_forward`): every perturbed
//! operand is `x + 0.5·relu(x)` of its own graph input `x`, and the bounded node is
//! `relu(y − y(c))`, with `y` the operator's output and `y(c)` its value at the centre.

use lirpa::core::{Attr, Attributes, DType, Error, GraphBuilder, TensorData};
// The out-of-tree plugin template is walked like the standard plugins (naming the
// crate links its registration).
use lirpa::sample::{Rng, sample_points};
use lirpa::{BoundOptions, BoundRequest, Graph, InputValue, Method, Norm, Perturbation};
use lirpa_example_swish as _;

/// Operator types with no generated inputs, and why.
const NO_INPUTS: &[(&str, &str)] = &[
    ("Constant", "no input: the graph builder folds it into a constant"),
    ("ConstantOfShape", "its input is a shape, always constant: folded"),
    ("Shape", "its output does not depend on input values: folded"),
];

/// Refusals that are expected: `(operator, method, reason)`. Any other refusal, or a
/// listed one that no longer happens, fails the test.
const REFUSED: &[(&str, Method, &str)] = &[];

/// One operand of the operator under test.
#[derive(Clone, Debug)]
enum Arg {
    /// A perturbed tensor of this shape.
    X(Vec<usize>),
    /// The same tensor as operand `k` (e.g. `Mul(x, x)`).
    Same(usize),
    /// A constant.
    C(TensorData),
    /// An omitted optional input.
    Omit,
}

#[derive(Clone, Debug)]
struct Case {
    op: &'static str,
    domain: &'static str,
    opset: i64,
    attrs: Attributes,
    args: Vec<Arg>,
    /// Operands centred in `[1.5, 2.5]` instead of `[-1, 1]` (functions of positive
    /// inputs).
    positive: bool,
    label: String,
}

fn case(op: &'static str, args: Vec<Arg>) -> Case {
    Case {
        op,
        domain: "",
        opset: 17,
        attrs: Attributes::default(),
        args,
        positive: false,
        label: String::new(),
    }
}

impl Case {
    fn attr(mut self, name: &str, v: Attr) -> Case {
        self.attrs.insert(name, v);
        self
    }
    fn opset(mut self, v: i64) -> Case {
        self.opset = v;
        self
    }
    fn positive(mut self) -> Case {
        self.positive = true;
        self
    }
    fn label(mut self, l: &str) -> Case {
        self.label = l.to_string();
        self
    }
    fn name(&self) -> String {
        if self.label.is_empty() { self.op.to_string() } else { format!("{} ({})", self.op, self.label) }
    }
}

fn x(shape: &[usize]) -> Arg {
    Arg::X(shape.to_vec())
}

/// A deterministic constant of `shape` with values in `[lo, hi]`.
fn konst(shape: &[usize], lo: f64, hi: f64, seed: u64) -> Arg {
    let mut rng = Rng::new(seed);
    let n: usize = shape.iter().product();
    Arg::C(TensorData::float(shape, (0..n).map(|_| lo + (hi - lo) * rng.uniform()).collect()).unwrap())
}

fn ints(v: &[i64]) -> Arg {
    Arg::C(TensorData::new(&[v.len()], DType::Int, v.iter().map(|&i| i as f64).collect()).unwrap())
}

/// The generated uses of the operators of the standard plugins (the unary
/// element-wise ones come from the soundness harness's list, see [`unary_cases`]).
fn structured_cases() -> Vec<Case> {
    let ints_attr = |v: &[i64]| Attr::Ints(v.to_vec());
    vec![
        case("Add", vec![x(&[2, 3]), konst(&[3], -1.0, 1.0, 1)]),
        case("Add", vec![x(&[2, 3]), x(&[2, 3])]).label("two perturbed"),
        case("Sub", vec![x(&[2, 3]), x(&[1, 3])]).label("broadcast"),
        case("Mul", vec![x(&[2, 3]), konst(&[2, 3], -2.0, 2.0, 2)]),
        case("Mul", vec![x(&[2, 3]), x(&[2, 3])]).label("two perturbed"),
        case("Mul", vec![x(&[2, 3]), Arg::Same(0)]).label("square"),
        case("Div", vec![x(&[2, 3]), konst(&[3], 1.0, 2.0, 3)]),
        case("Div", vec![x(&[2, 3]), x(&[2, 3])]).label("perturbed divisor").positive(),
        case("Neg", vec![x(&[4])]),
        case("Identity", vec![x(&[4])]),
        case("Dropout", vec![x(&[4])]),
        case("Cast", vec![x(&[4])]).attr("to", Attr::Int(1)),
        case("Flatten", vec![x(&[1, 2, 3])]).attr("axis", Attr::Int(1)),
        case("Reshape", vec![x(&[2, 3]), ints(&[3, 2])]),
        case("Squeeze", vec![x(&[2, 1, 3]), ints(&[1])]),
        case("Unsqueeze", vec![x(&[2, 3]), ints(&[0])]),
        case("Transpose", vec![x(&[2, 3, 2])]).attr("perm", ints_attr(&[2, 0, 1])),
        case("Concat", vec![x(&[2, 2]), konst(&[2, 1], -1.0, 1.0, 4), x(&[2, 3])]).attr("axis", Attr::Int(1)),
        case("Slice", vec![x(&[3, 4]), ints(&[1]), ints(&[4]), ints(&[1])]),
        case("Gather", vec![x(&[3, 4]), ints(&[2, 0, 2])]).attr("axis", Attr::Int(1)),
        case("Pad", vec![x(&[2, 3]), ints(&[0, 1, 1, 0])]).attr("mode", Attr::String("reflect".into())),
        case("Gemm", vec![x(&[2, 3]), konst(&[4, 3], -1.0, 1.0, 5), konst(&[4], -1.0, 1.0, 6)])
            .attr("transB", Attr::Int(1)),
        case("Gemm", vec![x(&[2, 3]), x(&[3, 2])]).label("perturbed weight"),
        case("MatMul", vec![x(&[2, 3]), konst(&[3, 4], -1.0, 1.0, 7)]),
        case("MatMul", vec![x(&[2, 2, 3]), x(&[2, 3, 2])]).label("two perturbed"),
        case("Relu", vec![x(&[5])]),
        case("LeakyRelu", vec![x(&[5])]).attr("alpha", Attr::Float(0.1)),
        case("Conv", vec![x(&[1, 2, 4, 4]), konst(&[3, 2, 3, 3], -0.5, 0.5, 8), konst(&[3], -1.0, 1.0, 9)])
            .attr("pads", ints_attr(&[1, 1, 1, 1])),
        case("Conv", vec![x(&[1, 1, 3, 3]), x(&[2, 1, 2, 2])]).label("perturbed weight"),
        case("ConvTranspose", vec![x(&[1, 2, 3, 3]), konst(&[2, 2, 2, 2], -0.5, 0.5, 10)])
            .attr("strides", ints_attr(&[2, 2])),
        case("AveragePool", vec![x(&[1, 2, 4, 4])])
            .attr("kernel_shape", ints_attr(&[2, 2]))
            .attr("strides", ints_attr(&[2, 2])),
        case("GlobalAveragePool", vec![x(&[1, 2, 3, 3])]),
        case("MaxPool", vec![x(&[1, 2, 4, 4])])
            .attr("kernel_shape", ints_attr(&[2, 2]))
            .attr("strides", ints_attr(&[2, 2])),
        case(
            "BatchNormalization",
            vec![
                x(&[1, 2, 3, 3]),
                konst(&[2], 0.5, 2.0, 11),
                konst(&[2], -1.0, 1.0, 12),
                konst(&[2], -1.0, 1.0, 13),
                konst(&[2], 0.5, 2.0, 14),
            ],
        ),
        case("Softmax", vec![x(&[2, 4])]).attr("axis", Attr::Int(-1)),
        case("ReduceSum", vec![x(&[2, 3]), ints(&[1])]),
        case("ReduceMean", vec![x(&[2, 3])]).opset(13).attr("axes", ints_attr(&[0])),
        case("ReduceMax", vec![x(&[2, 3])]).opset(13).attr("axes", ints_attr(&[1])),
        case("ReduceMin", vec![x(&[3, 2])]).opset(13).attr("axes", ints_attr(&[0])),
        case("LayerNormalization", vec![x(&[2, 4]), konst(&[4], 0.5, 1.5, 15), konst(&[4], -1.0, 1.0, 16)]),
    ]
}

/// Every registered operator that builds as unary element-wise (with parameterised
/// variants: Pow exponents, Clip bounds, …), from the soundness harness, except those
/// `structured` already uses.
fn unary_cases(structured: &[Case]) -> Vec<Case> {
    lirpa_soundness::registered_unary_specs()
        .into_iter()
        .filter(|s| !structured.iter().any(|c| c.op == s.op_type))
        .map(|s| {
            let reg = lirpa::registered_ops()
                .into_iter()
                .find(|r| r.op_type == s.op_type && r.domain == s.domain)
                .expect("registered");
            let mut args = vec![x(&[4])];
            args.extend(s.const_inputs.iter().map(|c| c.clone().map_or(Arg::Omit, Arg::C)));
            Case {
                op: reg.op_type,
                domain: reg.domain,
                opset: s.opset,
                attrs: s.attrs.clone(),
                args,
                positive: false,
                label: s.label(),
            }
        })
        .collect()
}

/// The graph of a case and the input sets of its operands.
struct Built {
    graph: Graph<f64>,
    inputs: Vec<InputValue<f64>>,
}

fn build(c: &Case, norm: Norm, seed: u64) -> lirpa::Result<Built> {
    // The operator alone first, for its output at the centre.
    let (pre, inputs) = build_with(c, norm, seed, None)?;
    let centres: Vec<Vec<f64>> = inputs
        .iter()
        .map(|i| match i {
            InputValue::Perturbed(p) => p.center(),
            InputValue::Exact(v) => v.clone(),
        })
        .collect();
    let refs: Vec<&[f64]> = centres.iter().map(|v| v.as_slice()).collect();
    let yc = pre.forward(&refs, pre.output()?)?;
    let (graph, inputs) = build_with(c, norm, seed, Some(yc))?;
    Ok(Built { graph, inputs })
}

/// The graph of a case: up to the operator's output `y` when `yc` is `None`, else up
/// to `relu(y − yc)`.
fn build_with(
    c: &Case,
    norm: Norm,
    seed: u64,
    yc: Option<Vec<f64>>,
) -> lirpa::Result<(Graph<f64>, Vec<InputValue<f64>>)> {
    let mut b = GraphBuilder::<f64>::new();
    let mut rng = Rng::new(seed);
    let mut names: Vec<Option<String>> = Vec::new();
    let mut inputs = Vec::new();
    let none = Attributes::default();
    b.add_constant("half", TensorData::scalar(0.5))?;
    for (k, a) in c.args.iter().enumerate() {
        match a {
            Arg::X(shape) => {
                let xn = format!("x{k}");
                b.add_input(&xn, shape)?;
                let n: usize = shape.iter().product();
                let centre: Vec<f64> = (0..n)
                    .map(|_| if c.positive { 1.5 + rng.uniform() } else { 2.0 * rng.uniform() - 1.0 })
                    .collect();
                let eps = if norm == Norm::Inf { 0.3 } else { 0.6 };
                inputs.push(InputValue::Perturbed(Perturbation::new_ball(norm, centre, eps)?));
                let (r, h, p) = (format!("r{k}"), format!("h{k}"), format!("p{k}"));
                b.add_node(&r, "Relu", "", 13, &none, &[Some(&xn)])?;
                b.add_node(&h, "Mul", "", 13, &none, &[Some(&r), Some("half")])?;
                b.add_node(&p, "Add", "", 13, &none, &[Some(&xn), Some(&h)])?;
                names.push(Some(p));
            }
            Arg::Same(j) => names.push(names[*j].clone()),
            Arg::C(t) => {
                let cn = format!("c{k}");
                b.add_constant(&cn, t.clone())?;
                names.push(Some(cn));
            }
            Arg::Omit => names.push(None),
        }
    }
    let refs: Vec<Option<&str>> = names.iter().map(|n| n.as_deref()).collect();
    b.add_node("y", c.op, c.domain, c.opset, &c.attrs, &refs)?;
    let Some(yc) = yc else { return Ok((b.finish(&["y"])?, inputs)) };
    let shape = b.shape("y").expect("defined").to_vec();
    b.add_constant("yc", TensorData::float(&shape, yc)?)?;
    b.add_node("d", "Sub", "", 13, &none, &[Some("y"), Some("yc")])?;
    b.add_node("out", "Relu", "", 13, &none, &[Some("d")])?;
    Ok((b.finish(&["out"])?, inputs))
}

fn options(method: Method) -> BoundOptions {
    let mut o = BoundOptions::with_method(method);
    o.optimize.iterations = 4;
    o
}

/// Sampled outputs outside `[lower, upper]` (with a small tolerance), as messages.
fn containment(g: &Graph<f64>, inputs: &[InputValue<f64>], lower: &[f64], upper: &[f64]) -> Vec<String> {
    let sets: Vec<Vec<Vec<f64>>> = inputs
        .iter()
        .enumerate()
        .map(|(k, i)| match i {
            InputValue::Perturbed(p) => sample_points(p, 64, 100 + k as u64),
            InputValue::Exact(v) => vec![v.clone(); 64],
        })
        .collect();
    let mut bad = Vec::new();
    for s in 0..64 {
        let point: Vec<&[f64]> = sets.iter().map(|v| v[s].as_slice()).collect();
        let y = match g.forward(&point, g.output().expect("one output")) {
            Ok(y) => y,
            Err(e) => {
                bad.push(format!("forward at sample {s}: {e}"));
                continue;
            }
        };
        for (j, &v) in y.iter().enumerate() {
            let tol = 1e-7 * (1.0 + v.abs());
            if !(lower[j] - tol <= v && v <= upper[j] + tol) {
                bad.push(format!("sample {s} element {j}: {v} outside [{}, {}]", lower[j], upper[j]));
            }
        }
    }
    bad
}

/// Bound one graph by every method; failures and refusals are appended.
fn check_graph(
    name: &str,
    op: &str,
    built: &Built,
    failures: &mut Vec<String>,
    refusals: &mut Vec<(String, Method)>,
) {
    for method in Method::ALL {
        let r =
            lirpa::compute_bounds(&built.graph, &built.inputs, &options(method), &BoundRequest::default());
        match r {
            Ok(r) => {
                for m in containment(&built.graph, &built.inputs, &r.lower, &r.upper).into_iter().take(3) {
                    failures.push(format!("{name} / {method}: unsound: {m}"));
                }
            }
            Err(Error::Unimplemented { op_type, msg, .. }) if op_type == op => {
                eprintln!("{name} / {method}: refused: {msg}");
                refusals.push((op.to_string(), method));
            }
            Err(e) => failures.push(format!("{name} / {method}: {e}")),
        }
    }
}

#[test]
fn every_operator_under_every_method() {
    let mut cases = structured_cases();
    cases.extend(unary_cases(&cases));
    // Every registered operator type has a generated use or a reason.
    for reg in lirpa::registered_ops() {
        let covered = cases.iter().any(|c| c.op == reg.op_type && c.domain == reg.domain);
        let excused = NO_INPUTS.iter().any(|(op, _)| *op == reg.op_type);
        assert!(
            covered || excused,
            "operator {} ({}) has no generated inputs and no reason in NO_INPUTS",
            reg.op_type,
            reg.plugin
        );
        assert!(!(covered && excused), "{} has generated inputs and is listed in NO_INPUTS", reg.op_type);
    }
    let (mut failures, mut refusals) = (Vec::new(), Vec::new());
    let mut graphs = 0;
    for (i, c) in cases.iter().enumerate() {
        // Centred in [-1, 1] first; functions that refuse it (a domain error at the
        // input bounds, e.g. Log) are given positive operands.
        let mut positive = c.clone();
        positive.positive = true;
        let variants = [c.clone(), positive];
        for norm in [Norm::Inf, Norm::L2] {
            let bounded = |b: &Built| {
                let o = options(Method::Ibp);
                lirpa::compute_bounds(&b.graph, &b.inputs, &o, &BoundRequest::default()).is_ok()
            };
            let Some(b) = variants.iter().find_map(|v| build(v, norm, i as u64).ok().filter(bounded)) else {
                failures.push(format!(
                    "{} {norm:?}: no input set on which the graph builds and IBP bounds it",
                    c.name()
                ));
                continue;
            };
            graphs += 1;
            check_graph(&format!("{} {norm:?}", c.name()), c.op, &b, &mut failures, &mut refusals);
        }
    }
    // Forward mode where IBP succeeds: forward-mode bounds of sigmoid(x) + 0.1 reach
    // below 0 under a wide L1 ball unless intersected with IBP's, and Sqrt refuses them.
    graphs += 1;
    check_graph(
        "Sqrt(sigmoid(x) + 0.1), L1 ball of radius 3",
        "Sqrt",
        &sqrt_sigmoid(),
        &mut failures,
        &mut refusals,
    );
    for (op, method) in &refusals {
        if !REFUSED.iter().any(|(o, m, _)| o == op && m == method) {
            failures.push(format!("{op} / {method}: refused, but not listed in REFUSED"));
        }
    }
    for (op, method, why) in REFUSED {
        if !refusals.iter().any(|(o, m)| o == op && m == method) {
            failures.push(format!("{op} / {method} is listed in REFUSED ({why}) but was not refused"));
        }
    }
    eprintln!(
        "{} cases, {graphs} graphs, {} methods each, {} refusals",
        cases.len(),
        Method::ALL.len(),
        refusals.len()
    );
    assert!(failures.is_empty(), "{} failures:\n{}", failures.len(), failures.join("\n"));
}

/// `relu(sqrt(sigmoid(W·x) + 0.1) − c)` under an L1 ball of radius 3.
fn sqrt_sigmoid() -> Built {
    let mut b = GraphBuilder::<f64>::new();
    let none = Attributes::default();
    b.add_input("x", &[1, 3]).unwrap();
    let Arg::C(w) = konst(&[3, 3], -3.0, 3.0, 77) else { unreachable!() };
    b.add_constant("w", w).unwrap();
    b.add_constant("tenth", TensorData::scalar(0.1)).unwrap();
    b.add_constant("c", TensorData::scalar(0.8)).unwrap();
    b.add_node("m", "MatMul", "", 13, &none, &[Some("x"), Some("w")]).unwrap();
    b.add_node("s", "Sigmoid", "", 13, &none, &[Some("m")]).unwrap();
    b.add_node("a", "Add", "", 13, &none, &[Some("s"), Some("tenth")]).unwrap();
    b.add_node("q", "Sqrt", "", 13, &none, &[Some("a")]).unwrap();
    b.add_node("d", "Sub", "", 13, &none, &[Some("q"), Some("c")]).unwrap();
    b.add_node("out", "Relu", "", 13, &none, &[Some("d")]).unwrap();
    let p = Perturbation::new_ball(Norm::L1, vec![0.2, -0.4, 0.1], 3.0).unwrap();
    Built { graph: b.finish(&["out"]).unwrap(), inputs: vec![InputValue::Perturbed(p)] }
}

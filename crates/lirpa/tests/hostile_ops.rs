//! Every registered operator on random shapes and attributes (hostile ones included:
//! zero, huge and overflowing dimensions, negative or huge integers, NaN and infinite
//! floats, misspelt attribute names): building the node and bounding it by every
//! method never panics; a shape whose element count overflows is an error; a bound
//! that is returned is finite.
//!
//! Case count: `PROPTEST_CASES` (each case tries every operator); seed:
//! `PROPTEST_RNG_SEED`.

use lirpa::core::rng::Rng;
use lirpa::core::{Attr, Attributes, DType, GraphBuilder, TensorData};
use lirpa::{BoundOptions, BoundRequest, InputValue, Method, Perturbation};
use proptest::prelude::*;

/// Dimensions: mostly small, sometimes zero, huge or overflowing together.
fn dim(rng: &mut Rng) -> usize {
    match rng.below(40) {
        0 => 0,
        1 => 1 << 31,
        2 => 4611686018427387909,
        3 => usize::MAX,
        4 => 100_000,
        _ => 1 + rng.below(4),
    }
}

fn int(rng: &mut Rng) -> i64 {
    match rng.below(30) {
        0 => i64::MAX,
        1 => i64::MIN,
        2 => 1 << 40,
        3 => -(1 << 40),
        4 => 4611686018427387904,
        _ => rng.below(7) as i64 - 2,
    }
}

fn float(rng: &mut Rng) -> f64 {
    match rng.below(30) {
        0 => f64::NAN,
        1 => f64::INFINITY,
        2 => f64::NEG_INFINITY,
        3 => 1e38,
        4 => -1e38,
        5 => 0.0,
        _ => rng.uniform() * 2.0 - 0.5,
    }
}

/// Attributes an operator may read (ONNX's names), by op type.
fn attribute_names(op: &str) -> &'static [&'static str] {
    match op {
        "Gemm" => &["alpha", "beta", "transA", "transB"],
        "Conv" | "ConvTranspose" | "MaxPool" | "AveragePool" => &[
            "pads",
            "strides",
            "dilations",
            "group",
            "auto_pad",
            "kernel_shape",
            "ceil_mode",
            "output_padding",
        ],
        "Transpose" => &["perm"],
        "Flatten" | "Softmax" | "Concat" | "Gather" => &["axis"],
        "LayerNormalization" => &["axis", "epsilon"],
        "BatchNormalization" => &["epsilon", "momentum"],
        "ReduceSum" | "ReduceMean" | "ReduceMax" | "ReduceMin" => {
            &["axes", "keepdims", "noop_with_empty_axes"]
        }
        "Squeeze" | "Unsqueeze" => &["axes"],
        "Pad" => &["mode", "pads", "value"],
        "LeakyRelu" => &["alpha"],
        "Clip" => &["min", "max"],
        "Gelu" => &["approximate"],
        "ConstantOfShape" | "Constant" => &["value", "value_float", "value_ints"],
        "Cast" => &["to"],
        "Slice" => &["starts", "ends", "axes"],
        _ => &[],
    }
}

fn attr(rng: &mut Rng, name: &str, rank: usize) -> Attr {
    match (name, rng.below(6)) {
        ("auto_pad", _) => {
            Attr::String(["NOTSET", "VALID", "SAME_UPPER", "SAME_LOWER", "bogus"][rng.below(5)].into())
        }
        ("mode", _) => Attr::String(["constant", "reflect", "edge", "wrap", "bogus"][rng.below(5)].into()),
        ("approximate", _) => Attr::String(["none", "tanh", "bogus"][rng.below(3)].into()),
        ("value", 0) => Attr::Float(float(rng)),
        ("value", _) => Attr::Tensor(TensorData::float(&[1], vec![float(rng)]).expect("one value")),
        (_, 0) => Attr::Float(float(rng)),
        (_, 1 | 2) => Attr::Int(int(rng)),
        _ => {
            let n = rng.below(2 * rank.max(1) + 1);
            Attr::Ints((0..n).map(|_| int(rng)).collect())
        }
    }
}

/// One random use of `op` through the graph builder, then bounds by every method.
fn one(op: &str, domain: &str, rng: &mut Rng) {
    lirpa::core::budget::set_max_memory(256 << 20);
    let rank = rng.below(5);
    let shape: Vec<usize> = (0..rank).map(|_| dim(rng)).collect();
    let mut b = GraphBuilder::<f32>::new();
    let overflows = shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d)).is_none();
    match b.add_input("x", &shape) {
        Ok(_) => assert!(!overflows, "{op}: input shape {shape:?} overflows but was accepted"),
        Err(_) => return,
    }
    let mut inputs: Vec<Option<String>> = vec![Some("x".into())];
    for k in 1..1 + rng.below(3) {
        let name = format!("c{k}");
        let value = if rng.below(2) == 0 {
            // A small float constant shaped like a suffix of the input.
            let s: Vec<usize> = shape[rng.below(rank + 1)..].iter().map(|&d| d.min(4)).collect();
            let n: usize = s.iter().product();
            TensorData::float(&s, (0..n).map(|_| float(rng)).collect())
        } else {
            // An integer vector (shapes, pads, axes, indices).
            let n = rng.below(2 * rank + 2);
            TensorData::new(&[n], DType::Int, (0..n).map(|_| int(rng) as f64).collect())
        };
        let Ok(value) = value else { continue };
        if b.add_constant(&name, value).is_ok() {
            inputs.push(if rng.below(8) == 0 { None } else { Some(name) });
        }
    }
    let mut attrs = Attributes::default();
    for &n in attribute_names(op) {
        if rng.below(3) == 0 {
            attrs.insert(n, attr(rng, n, rank));
        }
    }
    if rng.below(10) == 0 {
        attrs.insert("bteta", Attr::Float(1.0));
    }
    let names: Vec<Option<&str>> = inputs.iter().map(|s| s.as_deref()).collect();
    let opset = [1, 11, 13, 17, 18][rng.below(5)];
    if b.add_node("y", op, domain, opset, &attrs, &names).is_err() {
        return;
    }
    assert!(!attrs.0.contains_key("bteta"), "{op}: the unknown attribute 'bteta' was accepted");
    let Ok(g) = b.finish(&["y"]) else { return };
    let n = g.node(g.inputs()[0]).numel();
    let total: usize = g.nodes().iter().map(|n| n.numel()).sum();
    if n > 4096 || total > 100_000 {
        return;
    }
    let Ok(ptb) = Perturbation::new_box(vec![-0.5f32; n], vec![0.5f32; n]) else { return };
    let values = [InputValue::Perturbed(ptb)];
    for method in [Method::Ibp, Method::Crown, Method::CrownIbp, Method::AlphaCrown, Method::Forward] {
        let mut opts = BoundOptions { method, max_memory: Some(64 << 20), ..Default::default() };
        opts.optimize.iterations = 2;
        if let Ok(r) = lirpa::compute_bounds(&g, &values, &opts, &BoundRequest::default()) {
            assert!(
                r.lower.iter().chain(&r.upper).all(|x| x.is_finite()),
                "{op} by {method}: a non-finite bound was returned"
            );
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    #[test]
    fn every_operator_survives_hostile_shapes_and_attributes(seed in any::<u64>()) {
        let mut rng = Rng::new(seed);
        for r in lirpa::registered_ops() {
            let s = rng.next_u64();
            let (op, domain) = (r.op_type, r.domain);
            let res = std::panic::catch_unwind(|| one(op, domain, &mut Rng::new(s)));
            prop_assert!(res.is_ok(), "{} (seed {}) panicked", op, s);
        }
    }
}

/// Under a budget too small for the default intermediate batches, CROWN shrinks them
/// and gives the same bounds; under one too small for the bounded node's own pass it
/// refuses, saying what to change.
#[test]
fn intermediate_batches_fit_the_budget() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/reference/synthetic/mlp_relu_deep__linf_0.02/model.onnx");
    let g = lirpa::load_onnx::<f32>(&dir).expect("reference model");
    let n = g.node(g.input().unwrap()).numel();
    // The widest value a pass crosses (weights are inside their operators).
    let widest =
        g.nodes().iter().filter(|n| n.op_type() != "Constant").map(|n| n.numel()).max().unwrap() as u64;
    let outputs = g.node(g.output().unwrap()).numel() as u64;
    let values =
        [InputValue::Perturbed(Perturbation::new_ball(lirpa::Norm::Inf, vec![0.1f32; n], 0.05).unwrap())];
    let run = |max_memory: Option<u64>| {
        let opts = BoundOptions {
            max_memory,
            threads: 1,
            crown_batch_size: 0,
            ..BoundOptions::with_method(Method::Crown)
        };
        lirpa::compute_bounds(&g, &values, &opts, &BoundRequest::default())
    };
    let free = run(None).expect("unbounded");
    // The bounded node's pass (outputs rows) fits; an unlimited intermediate batch
    // (widest rows) does not: batches of a few rows.
    let per_row = widest * 4 * 4;
    let fitted = run(Some(per_row * outputs.max(2))).expect("batches fit the budget");
    // The same rows, bounded in smaller batches (products of fewer rows may sum in
    // another order: equal to rounding).
    let close = |a: &[f32], b: &[f32]| a.iter().zip(b).all(|(x, y)| (x - y).abs() <= 1e-5 * (1.0 + x.abs()));
    assert!(close(&free.lower, &fitted.lower) && close(&free.upper, &fitted.upper), "{free:?} vs {fitted:?}");
    let e = run(Some(per_row * outputs / 2)).expect_err("the output pass does not fit").to_string();
    assert!(e.contains("memory budget") && e.contains("fewer specification rows"), "{e}");
}

//! `verify` with floating-point-sound bounds on a VNN-LIB instance whose counterexample
//! exists only in floating point: `y = (2²⁴·x + 1) − 2²⁴·x − 1/2` is `1/2 > 0` in real
//! arithmetic for every `x`, but at `x = 1` its float32 evaluation (any summation
//! order) rounds `2²⁴ + 1` to `2²⁴` and gives `−1/2`. The property's unsafe set is
//! `y ≤ 0`.

use lirpa::Graph;
use lirpa::core::registry::BuilderFor;
use lirpa::core::{Attr, Attributes, FpSound, GraphBuilder, TensorData};
use lirpa_verify::{Counterexample, Model, Problem, Verdict, VerifyOptions};
use std::time::Duration;

const PROPERTY: &str = "(declare-const X_0 Real)
(declare-const Y_0 Real)
(assert (>= X_0 0.5))
(assert (<= X_0 1.0))
(assert (<= Y_0 0.0))
";

fn graph<T: lirpa::Scalar + BuilderFor>() -> Graph<T> {
    let mut b = GraphBuilder::<T>::new();
    b.add_input("x", &[1, 1]).unwrap();
    let big = (1u64 << 24) as f64;
    let consts: [(&str, &[usize], Vec<f64>); 4] = [
        ("w1", &[2, 1], vec![big, big]),
        ("b1", &[2], vec![1.0, 0.0]),
        ("w2", &[1, 2], vec![1.0, -1.0]),
        ("b2", &[1], vec![-0.5]),
    ];
    for (name, shape, v) in consts {
        b.add_constant(name, TensorData::float(shape, v).unwrap()).unwrap();
    }
    let mut attrs = Attributes::default();
    attrs.insert("transB", Attr::Int(1));
    b.add_node("h", "Gemm", "", 13, &attrs, &[Some("x"), Some("w1"), Some("b1")]).unwrap();
    b.add_node("y", "Gemm", "", 13, &attrs, &[Some("h"), Some("w2"), Some("b2")]).unwrap();
    b.finish(&["y"]).unwrap()
}

fn verify(mode: FpSound) -> Verdict {
    let model = Model::from_graphs(graph::<f32>(), graph::<f64>()).unwrap();
    let problem = Problem::from_property(&lirpa_vnnlib::parse_str(PROPERTY).unwrap());
    let mut opts = VerifyOptions::with_timeout(Duration::from_secs(3));
    opts.extra_attack = Duration::from_millis(200);
    opts.fp_sound = mode;
    lirpa_verify::verify(&model, &problem, &opts).unwrap().0
}

#[test]
fn a_float32_only_counterexample_is_never_proven_away_by_the_float32_model_mode() {
    // The float32 model violates the property at x = 1; f64 (and real arithmetic) do not.
    let model = Model::from_graphs(graph::<f32>(), graph::<f64>()).unwrap();
    let problem = Problem::from_property(&lirpa_vnnlib::parse_str(PROPERTY).unwrap());
    assert_eq!(model.forward32(&[1.0]).unwrap(), vec![-0.5]);
    assert_eq!(model.forward64(&[1.0]).unwrap(), vec![0.5]);
    let ce = Counterexample { x: vec![1.0], y: vec![-0.5] };
    assert_eq!(model.recheck(&problem, &ce), (true, false), "violated in f32 only");

    // Bounds of the real network prove it (rightly, for the real network) in the
    // default and the real sound mode; bounds covering the float32 evaluation must not.
    assert_eq!(verify(FpSound::Off), Verdict::Unsat);
    assert_eq!(verify(FpSound::Real), Verdict::Unsat);
    let v = verify(FpSound::Float32Model);
    assert_ne!(v, Verdict::Unsat, "float32-model mode proved a property the float32 model violates");
}

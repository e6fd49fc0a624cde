//! Golden values of auto_LiRPA's toy example (examples/simple/toy.py, re-run with
//! auto_LiRPA 0.3; notes/auto_lirpa.md §4.2), on the bundled `models/toy.onnx`.

use lirpa::{BoundOptions, BoundRequest, InputValue, Method, Perturbation};

fn toy_bounds(method: Method, return_a: bool) -> lirpa::BoundResult<f64> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../models/toy.onnx");
    let graph = lirpa::load_onnx::<f64>(path).expect("bundled toy model");
    let ptb = Perturbation::new_box(vec![-1.0, -2.0], vec![2.0, 1.0]).unwrap();
    let req = BoundRequest { return_a, ..Default::default() };
    lirpa::compute_bounds(&graph, &[InputValue::Perturbed(ptb)], &BoundOptions::with_method(method), &req)
        .unwrap()
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-12
}

#[test]
fn toy_golden_values() {
    for (method, lo, hi) in
        [(Method::Ibp, -6.0, 4.0), (Method::Crown, -3.0, 3.0), (Method::CrownIbp, -3.0, 3.0)]
    {
        let r = toy_bounds(method, false);
        assert!(close(r.lower[0], lo) && close(r.upper[0], hi), "{method}: [{}, {}]", r.lower[0], r.upper[0]);
    }
    // CROWN's linear coefficients: lA = [-1/3, -1/3], lbias = -2; uA = [-4/3, 1/3], ubias = 4/3.
    let r = toy_bounds(Method::Crown, true);
    assert_eq!(r.a.len(), 1);
    let a = &r.a[0].a;
    let (la, ua) = (a.lower.as_ref().unwrap(), a.upper.as_ref().unwrap());
    let bias = r.bias.as_ref().unwrap();
    assert!(close(la[(0, 0)], -1.0 / 3.0) && close(la[(0, 1)], -1.0 / 3.0), "lA {la:?}");
    assert!(close(ua[(0, 0)], -4.0 / 3.0) && close(ua[(0, 1)], 1.0 / 3.0), "uA {ua:?}");
    assert!(close(bias.lower[0], -2.0) && close(bias.upper[0], 4.0 / 3.0), "bias {bias:?}");
}

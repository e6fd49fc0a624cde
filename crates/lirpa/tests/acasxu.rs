//! All 45 ACAS Xu networks with the prop_1 input box (taken from the reference case
//! `acas_2_1_prop1`, whose `source` is prop_1.vnnlib): IBP and CROWN bounds contain the
//! outputs of our own forward evaluation at 10,000 sampled inputs (the box centre,
//! random vertices and uniform points). Our forward pass itself is checked against
//! onnxruntime's outputs by the reference test (`output` at the centre).

mod common;

use lirpa::sample::sample_points;
use lirpa::{BoundOptions, BoundRequest, InputValue, Method, Perturbation};

#[test]
fn acasxu_prop1_bounds_contain_sampled_outputs() {
    let case = common::Case::load(&common::reference_dir().join("vnncomp/acas_2_1_prop1"));
    let ptb: Perturbation<f32> = case.perturbation();
    let dir = common::shared_dir().join("benchmarks/vnncomp2021_acasxu");
    let mut nets: Vec<_> = std::fs::read_dir(&dir)
        .expect("ACAS Xu benchmark folder")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "onnx"))
        .collect();
    nets.sort();
    assert_eq!(nets.len(), 45, "expected the 45 ACAS Xu networks in {}", dir.display());
    let points = sample_points(&ptb, 10_000, 7);
    let mut checked = 0usize;
    for net in &nets {
        let g = lirpa::load_onnx::<f32>(net).unwrap();
        let out = g.output().unwrap();
        let outputs: Vec<Vec<f32>> = points.iter().map(|x| g.forward(&[x], out).unwrap()).collect();
        for method in [Method::Ibp, Method::Crown] {
            let r = lirpa::compute_bounds(
                &g,
                &[InputValue::Perturbed(ptb.clone())],
                &BoundOptions::with_method(method),
                &BoundRequest::default(),
            )
            .unwrap();
            for y in &outputs {
                for (i, &yi) in y.iter().enumerate() {
                    // A margin of a few f32 ulps for the forward pass's own rounding.
                    let m = 1e-6 * (1.0 + yi.abs());
                    assert!(
                        r.lower[i] <= yi + m && yi <= r.upper[i] + m,
                        "{}: {method} output {i}: {} not in [{}, {}]",
                        net.display(),
                        yi,
                        r.lower[i],
                        r.upper[i]
                    );
                    checked += 1;
                }
            }
        }
    }
    eprintln!("ACAS Xu prop_1: {checked} sampled output elements inside IBP and CROWN bounds on 45 networks");
}

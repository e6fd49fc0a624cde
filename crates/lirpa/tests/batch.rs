//! `compute_bounds_batch`: a batch of perturbation sets (each with its own
//! specification) bounded in one call gives, sample by sample, exactly what
//! `compute_bounds` gives, whatever the thread count; a failing sample fails alone.

mod common;

use faer::Mat;
use lirpa::sample::Rng;
use lirpa::{BoundOptions, BoundRequest, InputValue, Method, Norm, Perturbation};

#[test]
fn batch_equals_one_by_one() {
    let case = common::Case::load(&common::reference_dir().join("synthetic/cnn__linf_0.02"));
    let graph = case.graph::<f32>().unwrap();
    let center: Vec<f32> = case.center().iter().map(|&v| v as f32).collect();
    let n_out = graph.node(graph.output().unwrap()).numel();
    let mut rng = Rng::new(3);
    let mut inputs = Vec::new();
    let mut specs = Vec::new();
    for s in 0..6 {
        let c: Vec<f32> = center.iter().map(|&v| v + 0.05 * (rng.uniform() as f32 - 0.5)).collect();
        let eps = if s == 5 { f32::NAN } else { 0.01 + 0.01 * s as f32 };
        inputs.push(match Perturbation::new_ball(Norm::Inf, c.clone(), eps) {
            Ok(p) => vec![InputValue::Perturbed(p)],
            Err(_) => vec![InputValue::Exact(vec![f32::NAN; c.len()])],
        });
        specs.push(Mat::from_fn(2, n_out, |i, j| {
            if j == s % n_out {
                1.0
            } else if j == (i + s + 1) % n_out {
                -1.0
            } else {
                0.0
            }
        }));
    }
    let reqs: Vec<BoundRequest<'_, f32>> =
        specs.iter().map(|c| BoundRequest { c: Some(c.as_ref()), ..Default::default() }).collect();
    for method in [Method::Ibp, Method::Crown, Method::CrownIbp] {
        let one = BoundOptions { threads: 1, ..BoundOptions::with_method(method) };
        let expect: Vec<_> =
            (0..inputs.len()).map(|s| lirpa::compute_bounds(&graph, &inputs[s], &one, &reqs[s])).collect();
        for threads in [1, 2, 0] {
            let opts = BoundOptions { threads, ..BoundOptions::with_method(method) };
            let got = lirpa::compute_bounds_batch(&graph, &inputs, &opts, &reqs).unwrap();
            assert_eq!(got.len(), inputs.len());
            for (g, e) in got.iter().zip(&expect) {
                match (g, e) {
                    (Ok(g), Ok(e)) => {
                        assert!(g.lower == e.lower && g.upper == e.upper, "{method:?}, {threads} threads")
                    }
                    (Err(g), Err(e)) => assert_eq!(g.to_string(), e.to_string()),
                    _ => panic!("{method:?}: one failed where the other did not"),
                }
            }
            assert!(got[..5].iter().all(|r| r.is_ok()) && got[5].is_err(), "only the NaN sample fails");
        }
    }
    assert!(lirpa::compute_bounds_batch(&graph, &inputs[..2], &BoundOptions::default(), &reqs).is_err());
}

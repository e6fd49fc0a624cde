//! Both networks of the VNN-COMP 2023 ViT benchmark (patch embedding by a
//! convolution, class token, multi-head self-attention with Softmax, BatchNorm as the
//! norm layer, ReLU MLPs, mean pooling), with the input box of the first listed
//! instance's .vnnlib: IBP, CROWN and CROWN-IBP bounds (f32) contain our forward
//! outputs, in f32 and in f64, at 10,000 sampled inputs (the box centre, random
//! vertices, uniform points).
//!
//! Sample count: `LIRPA_SAMPLES` (default 10,000).

mod common;

use lirpa::sample::sample_points;
use lirpa::{BoundOptions, BoundRequest, InputValue, Method};

#[test]
fn vit_benchmark_bounds_contain_sampled_outputs() {
    let n_samples: usize = std::env::var("LIRPA_SAMPLES").ok().and_then(|s| s.parse().ok()).unwrap_or(10_000);
    let dir = common::shared_dir().join("benchmarks/vnncomp2023_vit");
    let mut nets = 0;
    for (onnx, vnnlib) in common::first_instance_per_network(&dir, "instances.csv") {
        let g = lirpa::load_onnx::<f32>(&onnx).unwrap();
        let ptb = common::vnnlib_box_f32(&vnnlib);
        let out = g.output().unwrap();
        let points = sample_points(&ptb, n_samples, 23);
        // Outputs in f32 (as the bounds are computed) and in f64 (closer to the real
        // network: on pgd_2_3_16 the two differ by up to 0.06, and the f64 forward pass
        // matches onnx's reference evaluator to 1e-6).
        let g64 = lirpa::load_onnx::<f64>(&onnx).unwrap();
        let mut ys: Vec<Vec<f64>> = Vec::with_capacity(2 * points.len());
        for x in &points {
            ys.push(g.forward(&[x], out).unwrap().iter().map(|&v| v as f64).collect());
            let x64: Vec<f64> = x.iter().map(|&v| v as f64).collect();
            ys.push(g64.forward(&[&x64], g64.output().unwrap()).unwrap());
        }
        for method in [Method::Ibp, Method::Crown, Method::CrownIbp] {
            let opts = BoundOptions { threads: 0, ..BoundOptions::with_method(method) };
            let r = lirpa::compute_bounds(
                &g,
                &[InputValue::Perturbed(ptb.clone())],
                &opts,
                &BoundRequest::default(),
            )
            .unwrap();
            for (k, y) in ys.iter().enumerate() {
                for (i, &yi) in y.iter().enumerate() {
                    let m = 1e-5 * (1.0 + yi.abs());
                    assert!(
                        r.lower[i] as f64 <= yi + m && yi <= r.upper[i] as f64 + m,
                        "{} with {}: {method}: sample {} ({}) output {i}: {} not in [{}, {}]",
                        onnx.display(),
                        vnnlib.display(),
                        k / 2,
                        if k % 2 == 0 { "f32" } else { "f64" },
                        yi,
                        r.lower[i],
                        r.upper[i]
                    );
                }
            }
            eprintln!(
                "{}: {method} bounds contain {n_samples} sampled outputs (f32 and f64); output 0 in [{}, {}]",
                onnx.display(),
                r.lower[0],
                r.upper[0]
            );
        }
        nets += 1;
    }
    assert_eq!(nets, 2, "expected the two ViT networks");
}

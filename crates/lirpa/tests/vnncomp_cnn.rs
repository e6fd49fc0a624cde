//! Every network of the VNN-COMP 2021 oval21 and cifar10_resnet benchmarks, with the
//! input box of its first listed instance's .vnnlib: CROWN bounds (windowed
//! coefficients, all cores) contain our forward outputs at 10,000 sampled inputs (the
//! box centre, random vertices, uniform points). Our forward pass is checked against
//! onnxruntime by the reference test (oval_wide_img19, resnet_2b_prop0).
//!
//! Sample count: `LIRPA_SAMPLES` (default 10,000).

mod common;

use lirpa::sample::sample_points;
use lirpa::{BoundOptions, BoundRequest, InputValue, Method};

#[test]
fn cnn_benchmarks_crown_bounds_contain_sampled_outputs() {
    let n_samples: usize = std::env::var("LIRPA_SAMPLES").ok().and_then(|s| s.parse().ok()).unwrap_or(10_000);
    let root = common::shared_dir().join("benchmarks");
    let mut nets = 0;
    for (bench, csv) in [
        ("vnncomp2021_oval21", "oval21_instances.csv"),
        ("vnncomp2021_cifar10_resnet", "cifar10_resnet_instances.csv"),
    ] {
        let dir = root.join(bench);
        for (onnx, vnnlib) in common::first_instance_per_network(&dir, csv) {
            let g = lirpa::load_onnx::<f32>(&onnx).unwrap();
            let ptb = common::vnnlib_box_f32(&vnnlib);
            let opts = BoundOptions { threads: 0, ..BoundOptions::with_method(Method::Crown) };
            let r = lirpa::compute_bounds(
                &g,
                &[InputValue::Perturbed(ptb.clone())],
                &opts,
                &BoundRequest::default(),
            )
            .unwrap();
            let out = g.output().unwrap();
            for (k, x) in sample_points(&ptb, n_samples, 11).iter().enumerate() {
                let y = g.forward(&[x], out).unwrap();
                for (i, &yi) in y.iter().enumerate() {
                    let m = 1e-5 * (1.0 + yi.abs());
                    assert!(
                        r.lower[i] <= yi + m && yi <= r.upper[i] + m,
                        "{} with {}: sample {k} output {i}: {} not in [{}, {}]",
                        onnx.display(),
                        vnnlib.display(),
                        yi,
                        r.lower[i],
                        r.upper[i]
                    );
                }
            }
            eprintln!("{}: CROWN bounds contain {n_samples} sampled outputs", onnx.display());
            nets += 1;
        }
    }
    assert_eq!(nets, 5, "expected 3 oval21 and 2 cifar10_resnet networks");
}

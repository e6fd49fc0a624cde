//! The Rust side of the Python overhead measurement (`crates/lirpa-py/examples/
//! overhead.py` is the Python side, with the same work): CROWN bounds of the
//! `mlp_relu__linf_0.05` reference MLP (20-wide input) in an L∞ ball of radius 0.05
//! around 1,000 centres in one `compute_bounds_batch` call (every core), and around one
//! centre in one `compute_bounds` call. Prints the best of several runs of each.
//!
//! `cargo run --release -p lirpa-benches --example batch_overhead`

use lirpa::{BoundOptions, BoundRequest, InputValue, Method, Norm, Perturbation};
use std::time::Instant;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/reference/synthetic/mlp_relu__linf_0.05");
    let case: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("case.json")).unwrap()).unwrap();
    let center: Vec<f64> = case["center"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
    let graph = lirpa::load_onnx::<f32>(dir.join("model.onnx")).unwrap();
    // Centre r, element i: centre + 0.01·sin(20r + i) (overhead.py computes the same).
    let row = |r: usize| -> Vec<f32> {
        center.iter().enumerate().map(|(i, c)| (c + 0.01 * ((20 * r + i) as f64).sin()) as f32).collect()
    };
    let inputs = |n: usize| -> Vec<Vec<InputValue<f32>>> {
        (0..n)
            .map(|r| vec![InputValue::Perturbed(Perturbation::new_ball(Norm::Inf, row(r), 0.05).unwrap())])
            .collect()
    };
    let opts = BoundOptions { method: Method::Crown, threads: 0, ..Default::default() };
    let best = |runs: usize, f: &mut dyn FnMut()| {
        (0..runs)
            .map(|_| {
                let t = Instant::now();
                f();
                t.elapsed().as_secs_f64()
            })
            .fold(f64::INFINITY, f64::min)
    };
    let n = 1000;
    let reqs: Vec<BoundRequest<'_, f32>> = (0..n).map(|_| BoundRequest::default()).collect();
    let batch = best(7, &mut || {
        // The perturbation sets are built in the timed region, as the Python call builds them.
        let res = lirpa::compute_bounds_batch(&graph, &inputs(n), &opts, &reqs).unwrap();
        assert!(res.iter().all(|r| r.is_ok()));
    });
    let one = best(2000, &mut || {
        let inp = inputs(1);
        lirpa::compute_bounds(&graph, &inp[0], &opts, &reqs[0]).unwrap();
    });
    println!("rust: batch of {n} centres {:.3} ms, one centre {:.1} us", batch * 1e3, one * 1e6);
}

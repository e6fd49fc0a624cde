//! The example plugin is sound: its lines enclose the function on sampled intervals,
//! and bounds of a small network that uses it contain sampled outputs.

use lirpa::core::{Attr, Attributes, GraphBuilder, TensorData};
use lirpa::sample::{Rng, sample_points};
use lirpa::{BoundOptions, BoundRequest, InputValue, Method, Norm, Perturbation};
use lirpa_example_swish::Swish;
use lirpa_kit::Func;

// Name the plugin so that its registration is linked (inventory's rule).
use lirpa_example_swish as _;

/// Intervals of every kind: narrow, wide, degenerate, around the minimum, far out.
fn interval(rng: &mut Rng) -> (f64, f64) {
    let c = match rng.below(4) {
        0 => -1.2784645 + (rng.uniform() - 0.5) * 0.1,
        1 => (rng.uniform() - 0.5) * 10.0,
        2 => (rng.uniform() - 0.5) * 200.0,
        _ => 0.0,
    };
    let w = match rng.below(5) {
        0 => 0.0,
        1 => 1e-6 * rng.uniform(),
        2 => rng.uniform(),
        3 => 10.0 * rng.uniform(),
        _ => 100.0 * rng.uniform(),
    };
    (c - w / 2.0, c + w / 2.0)
}

#[test]
fn lines_and_range_enclose_the_function() {
    let mut rng = Rng::new(7);
    let mut checked = 0usize;
    for beta in [0.5, 1.0, 1.702, 4.0] {
        let op = Swish::new(beta).unwrap().operator();
        for _ in 0..5000 {
            let (l, u) = interval(&mut rng);
            let (l, u) = (l as f32, u as f32);
            let r = op.relaxation::<f32>(&[l], &[u]).unwrap();
            let [kl, bl, ku, bu] = r.lines(0).map(|v| v as f64);
            let (lo, hi) = op.interval_f64(l as f64, u as f64).unwrap();
            for i in 0..=64 {
                let (l, u) = (l as f64, u as f64);
                let x = if i < 33 { l + (u - l) * i as f64 / 32.0 } else { l + (u - l) * rng.uniform() };
                let x = x.clamp(l, u);
                let y = op.func.f(x);
                assert!(kl * x + bl <= y && y <= ku * x + bu, "beta {beta} on [{l}, {u}] at {x}: lines");
                assert!(lo <= y && y <= hi, "beta {beta} on [{l}, {u}] at {x}: {y} not in [{lo}, {hi}]");
                checked += 1;
            }
        }
    }
    assert!(checked > 1_000_000);
}

#[test]
fn the_recorded_minimum_is_the_minimum() {
    // Independent check of the constants: a fine grid search of x·σ(x).
    let op = Swish::new(1.0).unwrap();
    let (mut best_x, mut best) = (0.0, f64::INFINITY);
    for i in 0..=400_000 {
        let x = -2.0 + 2.0 * i as f64 / 400_000.0;
        if op.f(x) < best {
            (best_x, best) = (x, op.f(x));
        }
    }
    assert!((best_x + 1.2784645).abs() < 1e-5, "argmin {best_x}");
    assert!((best + 0.2784645).abs() < 1e-6, "min {best}");
}

#[test]
fn network_bounds_contain_sampled_outputs() {
    let mut rng = Rng::new(11);
    let mut konst = |b: &mut GraphBuilder<f64>, name: &str, shape: &[usize], scale: f64| {
        let n: usize = shape.iter().product();
        let data = (0..n).map(|_| (rng.uniform() * 2.0 - 1.0) * scale).collect();
        b.add_constant(name, TensorData::float(shape, data).unwrap()).unwrap();
    };
    let mut b = GraphBuilder::<f64>::new();
    b.add_input("x", &[1, 4]).unwrap();
    let mut gemm = Attributes::default();
    gemm.insert("transB", Attr::Int(1));
    konst(&mut b, "w1", &[6, 4], 1.5);
    konst(&mut b, "b1", &[6], 0.5);
    b.add_node("h", "Gemm", "", 13, &gemm, &[Some("x"), Some("w1"), Some("b1")]).unwrap();
    let mut swish = Attributes::default();
    swish.insert("beta", Attr::Float(1.5));
    b.add_node("s", "Swish", "com.example", 1, &swish, &[Some("h")]).unwrap();
    konst(&mut b, "w2", &[3, 6], 1.5);
    konst(&mut b, "b2", &[3], 0.5);
    // A ReLU after Swish gives α-CROWN parameters whose gradient crosses Swish.
    b.add_node("r", "Relu", "", 13, &Attributes::default(), &[Some("s")]).unwrap();
    b.add_node("y", "Gemm", "", 13, &gemm, &[Some("r"), Some("w2"), Some("b2")]).unwrap();
    let g = b.finish(&["y"]).unwrap();
    let out = g.output().unwrap();
    for (norm, eps) in [(Norm::Inf, 0.3), (Norm::L2, 0.8), (Norm::L1, 1.0), (Norm::Inf, 3.0)] {
        let p = Perturbation::new_ball(norm, vec![0.2, -0.4, 0.7, -1.0], eps).unwrap();
        let points = sample_points(&p, 2000, 3);
        for method in Method::ALL {
            let r = lirpa::compute_bounds(
                &g,
                &[InputValue::Perturbed(p.clone())],
                &BoundOptions::with_method(method),
                &BoundRequest::default(),
            )
            .unwrap();
            for x in &points {
                let y = g.forward(&[x], out).unwrap();
                for (i, &yi) in y.iter().enumerate() {
                    assert!(
                        r.lower[i] <= yi && yi <= r.upper[i],
                        "{method} {norm:?} eps {eps}: output {i} = {} not in [{}, {}]",
                        yi,
                        r.lower[i],
                        r.upper[i]
                    );
                }
            }
        }
    }
}

/// The shared soundness harness on the plugin's registered operator: random intervals
/// of every kind (wide, narrow, degenerate, near special points), dense grids and
/// random points, interval rule and backward lines, in f32 and f64.
#[test]
fn soundness_harness_passes() {
    use lirpa::core::Attr;
    use lirpa_soundness::{Config, OpSpec, check_op};
    for beta in [0.5, 1.0, 3.0] {
        let spec = OpSpec::new("Swish").domain("com.example").opset(1).attr("beta", Attr::Float(beta));
        let report = check_op(&spec, &Config { cases: 2000, seed: 5, ..Default::default() }).unwrap();
        assert!(report.is_ok(), "{report}");
        assert!(report.samples > 100_000, "{report}");
    }
}

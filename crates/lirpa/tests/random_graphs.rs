//! Property tests over random small DAGs built through the operator registry: dense
//! layers, ReLU/LeakyReLU, fan-out, residual Add/Sub, scaling, views.
//!
//! - Soundness: the output at every sampled input lies inside the IBP, CROWN and
//!   CROWN-IBP bounds (f64, with every lower-slope choice).
//! - Ordering: with an interval-consistent relaxation (lower slope 0 on unstable ReLUs,
//!   `ZeroLb`), a backward pass over IBP intermediate bounds can only tighten IBP:
//!   CROWN-IBP ⊆ IBP. (Proof sketch: by induction over layers, the backward bound of a
//!   linear function of a layer is at least its minimum over that layer's IBP box,
//!   because such a relaxation has the same extrema as the activation on the box and
//!   an affine map's image lies in the IBP box of its output.) The same does not hold
//!   for the default adaptive slope: one unstable neuron with `l = -1, u = 1.1` and a
//!   positive output weight gets lower bound -1 from CROWN and 0 from IBP.
//!
//! Case count: `PROPTEST_CASES` (`cargo xtask soundness` raises it); seed:
//! `PROPTEST_RNG_SEED`.

use lirpa::core::{Attr, Attributes, GraphBuilder, TensorData};
use lirpa::sample::{Rng, sample_points};
use lirpa::{BoundOptions, BoundRequest, Graph, InputValue, Method, Norm, Perturbation};
use lirpa_ops_relu::ReluLowerSlope;
use proptest::prelude::*;

/// One step of a random graph: an op kind and choices it interprets.
#[derive(Clone, Debug)]
struct Step {
    kind: u8,
    a: usize,
    b: usize,
    width: usize,
}

#[derive(Clone, Debug)]
struct Spec {
    n_in: usize,
    steps: Vec<Step>,
    seed: u64,
    /// 0: box, 1: L∞ ball, 2: L2 ball, 3: L1 ball.
    set: u8,
    radius: f64,
}

fn arb_spec() -> impl Strategy<Value = Spec> {
    let step = (0u8..8, 0usize..64, 0usize..64, 1usize..6).prop_map(|(kind, a, b, width)| Step {
        kind,
        a,
        b,
        width,
    });
    (1usize..5, prop::collection::vec(step, 1..9), any::<u64>(), 0u8..4, 0.01f64..1.5)
        .prop_map(|(n_in, steps, seed, set, radius)| Spec { n_in, steps, seed, set, radius })
}

/// Adds a random constant of a shape and scale; returns its name.
type Konst<'a> = dyn FnMut(&mut GraphBuilder<f64>, &[usize], &mut Rng, f64) -> String + 'a;

/// Build the graph a spec describes. Every value has shape `[1, w]`.
fn build(spec: &Spec) -> Graph<f64> {
    let mut rng = Rng::new(spec.seed);
    let mut b = GraphBuilder::<f64>::new();
    b.add_input("x", &[1, spec.n_in]).unwrap();
    let mut vals: Vec<(String, usize)> = vec![("x".into(), spec.n_in)];
    let mut consts = 0;
    let mut konst = |b: &mut GraphBuilder<f64>, shape: &[usize], rng: &mut Rng, scale: f64| -> String {
        consts += 1;
        let name = format!("c{consts}");
        let n: usize = shape.iter().product();
        let data = (0..n).map(|_| (rng.uniform() * 2.0 - 1.0) * scale).collect();
        b.add_constant(&name, TensorData::float(shape, data).unwrap()).unwrap();
        name
    };
    let dense = |b: &mut GraphBuilder<f64>,
                 rng: &mut Rng,
                 konst: &mut Konst<'_>,
                 src: &(String, usize),
                 out: usize,
                 name: &str| {
        let w = konst(b, &[out, src.1], rng, 1.5);
        let bias = konst(b, &[out], rng, 0.5);
        let mut attrs = Attributes::default();
        attrs.insert("transB", Attr::Int(1));
        b.add_node(name, "Gemm", "", 13, &attrs, &[Some(&src.0), Some(&w), Some(&bias)]).unwrap();
    };
    for (i, s) in spec.steps.iter().enumerate() {
        let name = format!("v{i}");
        let src = vals[s.a % vals.len()].clone();
        let none = Attributes::default();
        let width = match s.kind {
            0 | 1 => {
                dense(&mut b, &mut rng, &mut konst, &src, s.width, &name);
                s.width
            }
            2 => {
                b.add_node(&name, "Relu", "", 13, &none, &[Some(&src.0)]).unwrap();
                src.1
            }
            3 => {
                let mut attrs = Attributes::default();
                attrs.insert("alpha", Attr::Float(0.1));
                b.add_node(&name, "LeakyRelu", "", 13, &attrs, &[Some(&src.0)]).unwrap();
                src.1
            }
            4 | 5 => {
                // Residual Add / Sub of two values of the same width (fan-out), or a
                // projection of the second one to that width first.
                let other = vals[s.b % vals.len()].clone();
                let other_name = if other.1 == src.1 {
                    other.0
                } else {
                    let p = format!("p{i}");
                    dense(&mut b, &mut rng, &mut konst, &other, src.1, &p);
                    p
                };
                let op = if s.kind == 4 { "Add" } else { "Sub" };
                b.add_node(&name, op, "", 13, &none, &[Some(&src.0), Some(&other_name)]).unwrap();
                src.1
            }
            6 => {
                let c = konst(&mut b, &[src.1], &mut rng, 2.0);
                let op = if s.b % 2 == 0 { "Mul" } else { "Add" };
                b.add_node(&name, op, "", 13, &none, &[Some(&src.0), Some(&c)]).unwrap();
                src.1
            }
            _ => {
                // A view round trip and a negation: Flatten, Neg.
                let f = format!("f{i}");
                b.add_node(&f, "Flatten", "", 13, &none, &[Some(&src.0)]).unwrap();
                b.add_node(&name, "Neg", "", 13, &none, &[Some(&f)]).unwrap();
                src.1
            }
        };
        vals.push((name, width));
    }
    let out = vals.last().unwrap().0.clone();
    b.finish(&[&out]).unwrap()
}

fn perturbation(spec: &Spec) -> Perturbation<f64> {
    let mut rng = Rng::new(spec.seed ^ 0xABCD);
    let center: Vec<f64> = (0..spec.n_in).map(|_| rng.uniform() * 2.0 - 1.0).collect();
    match spec.set {
        0 => {
            let r: Vec<f64> = (0..spec.n_in).map(|_| rng.uniform() * spec.radius).collect();
            Perturbation::new_box(
                center.iter().zip(&r).map(|(c, r)| c - r).collect(),
                center.iter().zip(&r).map(|(c, r)| c + r).collect(),
            )
            .unwrap()
        }
        1 => Perturbation::new_ball(Norm::Inf, center, spec.radius).unwrap(),
        2 => Perturbation::new_ball(Norm::L2, center, spec.radius).unwrap(),
        _ => Perturbation::new_ball(Norm::L1, center, spec.radius).unwrap(),
    }
}

fn bounds(
    g: &Graph<f64>,
    p: &Perturbation<f64>,
    method: Method,
    slope: ReluLowerSlope,
) -> (Vec<f64>, Vec<f64>) {
    let mut opts = BoundOptions::with_method(method);
    slope.set(&mut opts.relax).unwrap();
    let r = lirpa::compute_bounds(g, &[InputValue::Perturbed(p.clone())], &opts, &BoundRequest::default())
        .unwrap();
    (r.lower, r.upper)
}

fn tol(x: f64) -> f64 {
    1e-9 * (1.0 + x.abs())
}

proptest! {
    #[test]
    fn sampled_outputs_lie_inside_bounds(spec in arb_spec()) {
        let g = build(&spec);
        let p = perturbation(&spec);
        let out = g.output().unwrap();
        let points = sample_points(&p, 64, spec.seed);
        for slope in [ReluLowerSlope::Adaptive, ReluLowerSlope::SameSlope, ReluLowerSlope::ZeroLb, ReluLowerSlope::OneLb] {
            for method in [Method::Ibp, Method::Crown, Method::CrownIbp] {
                let (lo, hi) = bounds(&g, &p, method, slope);
                for x in &points {
                    let y = g.forward(&[x], out).unwrap();
                    for i in 0..y.len() {
                        prop_assert!(lo[i] <= y[i] + tol(y[i]) && y[i] <= hi[i] + tol(y[i]),
                            "{method} ({slope:?}) output {i}: {} not in [{}, {}]", y[i], lo[i], hi[i]);
                    }
                }
            }
        }
    }

    #[test]
    fn crown_ibp_never_looser_than_ibp_with_consistent_relaxation(spec in arb_spec()) {
        let g = build(&spec);
        let p = perturbation(&spec);
        let (il, iu) = bounds(&g, &p, Method::Ibp, ReluLowerSlope::ZeroLb);
        let (cl, cu) = bounds(&g, &p, Method::CrownIbp, ReluLowerSlope::ZeroLb);
        for i in 0..il.len() {
            prop_assert!(cl[i] >= il[i] - tol(il[i]) && cu[i] <= iu[i] + tol(iu[i]),
                "output {i}: CROWN-IBP [{}, {}] looser than IBP [{}, {}]", cl[i], cu[i], il[i], iu[i]);
        }
    }
}

//! Finite-difference checks of the training gradients ([`lirpa::TrainGraph`]): the
//! parameter and input-box gradients of clean outputs, IBP bounds, IBP bounds of a
//! specification folded into the last layers, CROWN-IBP and CROWN bounds (and with
//! respect to the specification matrix), with exact or perturbed weights, on random chains
//! of every trainable family (Gemm/MatMul, Conv with stride and padding,
//! BatchNormalization, average pooling, Flatten/Reshape, ReLU, LeakyReLU, Sigmoid and
//! Tanh), in f64.
//!
//! The objective mixes all of them with random weights, so one broken adjoint anywhere
//! shows. Bounds are piecewise smooth (ReLU kinks, the sign of a coefficient choosing a
//! line): central differences with a step of 1e-6 cross a kink rarely, so at most 2% of
//! the checked coordinates may disagree, and at least 30 must be non-zero.

use faer::Mat;
use lirpa::core::{Attr, Attributes, GraphBuilder, RelaxOptions, TensorData};
use lirpa::sample::Rng;
use lirpa::{Graph, SpecMethod, TrainGraph};
use proptest::prelude::*;
use proptest::strategy::ValueTree;

#[derive(Clone, Debug)]
struct Spec {
    conv: bool,
    widths: Vec<usize>,
    /// The activation: 0 ReLU, 1 LeakyReLU, 2 Sigmoid, 3 Tanh.
    act: u8,
    seed: u64,
    batch: usize,
    k: usize,
    /// Radius of the L∞ ball around every weight (0: exact weights).
    weight_eps: f64,
    /// The input set of a sample: its box, or the L2 ball of the same radius around the
    /// box's centre.
    l2: bool,
}

fn arb_spec() -> impl Strategy<Value = Spec> {
    (
        any::<bool>(),
        prop::collection::vec(2usize..7, 1..4),
        0u8..4,
        any::<u64>(),
        1usize..4,
        1usize..4,
        prop_oneof![Just(0.0), 0.001f64..0.05],
        any::<bool>(),
    )
        .prop_map(|(conv, widths, act, seed, batch, k, weight_eps, l2)| Spec {
            conv,
            widths,
            act,
            seed,
            batch,
            k,
            weight_eps,
            l2,
        })
}

fn rand_vec(rng: &mut Rng, n: usize, scale: f64) -> Vec<f64> {
    (0..n).map(|_| (rng.uniform() * 2.0 - 1.0) * scale).collect()
}

/// A chain: optional conv front (Conv stride 1 pad 1, ReLU, Conv stride 2, AveragePool,
/// Flatten) and then dense layers with activations.
fn build(spec: &Spec) -> (Graph<f64>, usize) {
    let mut rng = Rng::new(spec.seed);
    let mut b = GraphBuilder::<f64>::new();
    let mut consts = 0;
    let mut konst = |b: &mut GraphBuilder<f64>, shape: &[usize], rng: &mut Rng| -> String {
        consts += 1;
        let name = format!("c{consts}");
        let n: usize = shape.iter().product();
        let fan: usize = shape[1..].iter().product::<usize>().max(1);
        b.add_constant(&name, TensorData::float(shape, rand_vec(rng, n, 1.5 / (fan as f64).sqrt())).unwrap())
            .unwrap();
        name
    };
    let act = |b: &mut GraphBuilder<f64>, src: &str, name: &str, kind: u8| {
        let mut attrs = Attributes::default();
        let op = match kind {
            0 => "Relu",
            1 => {
                attrs.insert("alpha", Attr::Float(0.1));
                "LeakyRelu"
            }
            2 => "Sigmoid",
            _ => "Tanh",
        };
        b.add_node(name, op, "", 13, &attrs, &[Some(src)]).unwrap();
    };
    let (mut cur, mut width, n_in);
    if spec.conv {
        n_in = 2 * 6 * 6;
        b.add_input("x", &[1, 2, 6, 6]).unwrap();
        let w1 = konst(&mut b, &[3, 2, 3, 3], &mut rng);
        let b1 = konst(&mut b, &[3], &mut rng);
        let mut attrs = Attributes::default();
        attrs.insert("pads", Attr::Ints(vec![1, 1, 1, 1]));
        b.add_node("conv1", "Conv", "", 13, &attrs, &[Some("x"), Some(&w1), Some(&b1)]).unwrap();
        // Batch normalization (inference): scale and B trained, statistics fixed.
        let stat = |b: &mut GraphBuilder<f64>, name: &str, v: Vec<f64>| {
            b.add_constant(name, TensorData::float(&[3], v).unwrap()).unwrap();
        };
        stat(&mut b, "bn_scale", rand_vec(&mut rng, 3, 1.5));
        stat(&mut b, "bn_b", rand_vec(&mut rng, 3, 0.5));
        stat(&mut b, "bn_mean", rand_vec(&mut rng, 3, 0.5));
        let var = (0..3).map(|_| 0.2 + rng.uniform()).collect();
        stat(&mut b, "bn_var", var);
        let ins = [Some("conv1"), Some("bn_scale"), Some("bn_b"), Some("bn_mean"), Some("bn_var")];
        b.add_node("bn", "BatchNormalization", "", 13, &Attributes::default(), &ins).unwrap();
        act(&mut b, "bn", "act1", spec.act);
        let w2 = konst(&mut b, &[4, 3, 3, 3], &mut rng);
        let b2 = konst(&mut b, &[4], &mut rng);
        let mut attrs = Attributes::default();
        attrs.insert("pads", Attr::Ints(vec![1, 1, 1, 1]));
        attrs.insert("strides", Attr::Ints(vec![2, 2]));
        b.add_node("conv2", "Conv", "", 13, &attrs, &[Some("act1"), Some(&w2), Some(&b2)]).unwrap();
        act(&mut b, "conv2", "act2", spec.act);
        let mut attrs = Attributes::default();
        attrs.insert("kernel_shape", Attr::Ints(vec![2, 2]));
        attrs.insert("strides", Attr::Ints(vec![1, 1]));
        b.add_node("pool", "AveragePool", "", 13, &attrs, &[Some("act2")]).unwrap();
        b.add_node("flat", "Flatten", "", 13, &Attributes::default(), &[Some("pool")]).unwrap();
        cur = "flat".to_string();
        width = 4 * 2 * 2;
    } else {
        n_in = 4;
        b.add_input("x", &[1, 4]).unwrap();
        cur = "x".to_string();
        width = 4;
    }
    let last = spec.widths.len() - 1;
    for (i, &w) in spec.widths.iter().enumerate() {
        let out = if i == last { 3 } else { w };
        let name = format!("fc{i}");
        if i % 2 == 0 {
            let wt = konst(&mut b, &[out, width], &mut rng);
            let bias = konst(&mut b, &[out], &mut rng);
            let mut attrs = Attributes::default();
            attrs.insert("transB", Attr::Int(1));
            b.add_node(&name, "Gemm", "", 13, &attrs, &[Some(&cur), Some(&wt), Some(&bias)]).unwrap();
        } else {
            let wt = konst(&mut b, &[width, out], &mut rng);
            b.add_node(&name, "MatMul", "", 13, &Attributes::default(), &[Some(&cur), Some(&wt)]).unwrap();
        }
        cur = name;
        width = out;
        if i != last {
            let a = format!("a{i}");
            act(&mut b, &cur, &a, spec.act);
            cur = a;
        }
    }
    (b.finish(&[&cur]).unwrap(), n_in)
}

/// Everything the objective depends on, besides the parameters.
struct Problem {
    /// The radius of every sample's box (and of its L2 ball, with `Spec::l2`).
    eps: f64,
    lower: Mat<f64>,
    upper: Mat<f64>,
    point: Mat<f64>,
    c: Mat<f64>,
    k: usize,
    /// Weights of: clean outputs, output IBP lower/upper, IBP spec bound, CROWN-IBP spec bound.
    w_nat: Mat<f64>,
    w_l: Mat<f64>,
    w_u: Mat<f64>,
    w_ibp: Vec<f64>,
    w_crown: Vec<f64>,
    /// Weights of the CROWN bound (CROWN intermediate bounds).
    w_full: Vec<f64>,
}

fn problem(spec: &Spec, n_in: usize, n_out: usize) -> Problem {
    let mut rng = Rng::new(spec.seed ^ 0x5eed);
    let b = spec.batch;
    let center = Mat::from_fn(b, n_in, |_, _| rng.uniform() * 2.0 - 1.0);
    let eps = 0.05 + 0.2 * rng.uniform();
    let mut r = || rng.uniform() * 2.0 - 1.0;
    let c = Mat::from_fn(b * spec.k, n_out, |_, _| r());
    let w_nat = Mat::from_fn(b, n_out, |_, _| r());
    let w_l = Mat::from_fn(b, n_out, |_, _| r());
    let w_u = Mat::from_fn(b, n_out, |_, _| r());
    let w_ibp = (0..b * spec.k).map(|_| r()).collect();
    let w_crown = (0..b * spec.k).map(|_| r()).collect();
    let w_full = (0..b * spec.k).map(|_| r()).collect();
    Problem {
        eps,
        lower: Mat::from_fn(b, n_in, |i, j| center[(i, j)] - eps),
        upper: Mat::from_fn(b, n_in, |i, j| center[(i, j)] + eps),
        point: center,
        c,
        k: spec.k,
        w_nat,
        w_l,
        w_u,
        w_ibp,
        w_crown,
        w_full,
    }
}

fn dot(a: &Mat<f64>, b: &Mat<f64>) -> f64 {
    let mut s = 0.0;
    for j in 0..a.ncols() {
        for i in 0..a.nrows() {
            s += a[(i, j)] * b[(i, j)];
        }
    }
    s
}

/// The objective and its gradients: parameters, input lower, input upper, the
/// specification matrix.
type Objective = (f64, Vec<Vec<f64>>, Mat<f64>, Mat<f64>, Mat<f64>);

/// The objective, and its gradients (parameters, input lower, input upper, the
/// specification matrix).
fn objective(
    g: &TrainGraph<f64>,
    p: &Problem,
    lower: &Mat<f64>,
    upper: &Mat<f64>,
    c: &Mat<f64>,
    want_grad: bool,
) -> Objective {
    let nat = g.natural(p.point.as_ref()).unwrap();
    let ibp = g.ibp(lower.as_ref(), upper.as_ref()).unwrap();
    let (lb_i, tape_i) = g.spec_lower(&ibp, c.as_ref(), p.k, SpecMethod::Ibp).unwrap();
    let (lb_c, tape_c) = g.spec_lower(&ibp, c.as_ref(), p.k, SpecMethod::CrownIbp).unwrap();
    let crown = g.crown(lower.as_ref(), upper.as_ref()).unwrap();
    let (lb_f, tape_f) = g.spec_lower(&crown.bounds, c.as_ref(), p.k, SpecMethod::CrownIbp).unwrap();
    let last = ibp.lower.len() - 1;
    let y = nat.values.last().unwrap();
    let value = dot(y, &p.w_nat)
        + dot(&ibp.lower[last], &p.w_l)
        + dot(&ibp.upper[last], &p.w_u)
        + lb_i.iter().zip(&p.w_ibp).map(|(a, b)| a * b).sum::<f64>()
        + lb_c.iter().zip(&p.w_crown).map(|(a, b)| a * b).sum::<f64>()
        + lb_f.iter().zip(&p.w_full).map(|(a, b)| a * b).sum::<f64>();
    if !want_grad {
        return (value, Vec::new(), Mat::zeros(0, 0), Mat::zeros(0, 0), Mat::zeros(0, 0));
    }
    let mut grads = g.zero_grads();
    g.natural_backward(&nat, p.w_nat.clone(), &mut grads);
    let mut bg = g.zero_bound_grads(&ibp);
    bg.lower[last] += &p.w_l;
    bg.upper[last] += &p.w_u;
    let dc_i = g.spec_backward(&ibp, &tape_i, &p.w_ibp, &mut bg, &mut grads);
    let dc_c = g.spec_backward(&ibp, &tape_c, &p.w_crown, &mut bg, &mut grads);
    g.ibp_backward(&ibp, &mut bg, &mut grads);
    let mut bf = g.zero_bound_grads(&crown.bounds);
    let dc_f = g.spec_backward(&crown.bounds, &tape_f, &p.w_full, &mut bf, &mut grads);
    g.crown_backward(&crown, &mut bf, &mut grads);
    let (gl, gu) = (&bg.lower[0] + &bf.lower[0], &bg.upper[0] + &bf.upper[0]);
    (value, grads, gl, gu, dc_i + dc_c + dc_f)
}

struct Stats {
    checked: usize,
    nonzero: usize,
    bad: Vec<String>,
}

impl Stats {
    fn compare(&mut self, what: String, analytic: f64, numeric: f64) {
        self.checked += 1;
        if analytic.abs() > 1e-9 {
            self.nonzero += 1;
        }
        if (analytic - numeric).abs() > 1e-5 * (1.0 + analytic.abs().max(numeric.abs())) {
            self.bad.push(format!("{what}: analytic {analytic:.9} numeric {numeric:.9}"));
        }
    }
}

fn check(spec: &Spec, stats: &mut Stats) {
    let (graph, n_in) = build(spec);
    let mut g = TrainGraph::new(&graph, RelaxOptions::default(), faer::Par::Seq).unwrap();
    g.set_weight_eps(spec.weight_eps).unwrap();
    let p = problem(spec, n_in, g.n_out());
    g.set_input_l2(spec.l2.then_some(p.eps)).unwrap();
    let (_, grads, gl, gu, gc) = objective(&g, &p, &p.lower, &p.upper, &p.c, true);
    let h = 1e-6;
    let base = g.params().to_vec();
    let mut rng = Rng::new(spec.seed ^ 0xfd);
    for (k, pv) in base.iter().enumerate() {
        // Up to 12 coordinates per parameter tensor.
        for _ in 0..pv.len().min(12) {
            let i = (rng.uniform() * pv.len() as f64) as usize % pv.len();
            let mut at = |d: f64| {
                let mut v = base.clone();
                v[k][i] += d;
                g.set_params(v).unwrap();
                objective(&g, &p, &p.lower, &p.upper, &p.c, false).0
            };
            let num = (at(h) - at(-h)) / (2.0 * h);
            stats.compare(format!("param {k}[{i}]"), grads[k][i], num);
        }
    }
    g.set_params(base).unwrap();
    for _ in 0..8 {
        let (r, j) = (
            (rng.uniform() * spec.batch as f64) as usize % spec.batch,
            (rng.uniform() * n_in as f64) as usize % n_in,
        );
        for (name, analytic, is_lower) in [("lower", &gl, true), ("upper", &gu, false)] {
            let at = |d: f64| {
                let (mut l, mut u) = (p.lower.clone(), p.upper.clone());
                if is_lower {
                    l[(r, j)] += d;
                } else {
                    u[(r, j)] += d;
                }
                objective(&g, &p, &l, &u, &p.c, false).0
            };
            let num = (at(h) - at(-h)) / (2.0 * h);
            stats.compare(format!("input {name}[{r},{j}]"), analytic[(r, j)], num);
        }
    }
    for _ in 0..8 {
        let (r, j) = (rng.below(p.c.nrows()), rng.below(p.c.ncols()));
        let at = |d: f64| {
            let mut c = p.c.clone();
            c[(r, j)] += d;
            objective(&g, &p, &p.lower, &p.upper, &c, false).0
        };
        let num = (at(h) - at(-h)) / (2.0 * h);
        stats.compare(format!("spec C[{r},{j}]"), gc[(r, j)], num);
    }
}

#[test]
fn gradients_match_finite_differences() {
    let cases: u32 = std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(48);
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig { cases, ..Default::default() });
    let mut stats = Stats { checked: 0, nonzero: 0, bad: Vec::new() };
    let strategy = arb_spec();
    for _ in 0..cases {
        let spec = strategy.new_tree(&mut runner).unwrap().current();
        let before = stats.bad.len();
        check(&spec, &mut stats);
        if stats.bad.len() > before && std::env::var("DEBUG_SPEC").is_ok() {
            println!("{spec:?}");
        }
    }
    println!(
        "{} coordinates checked, {} non-zero, {} disagree{}",
        stats.checked,
        stats.nonzero,
        stats.bad.len(),
        stats.bad.iter().take(10).map(|s| format!("\n  {s}")).collect::<String>()
    );
    assert!(stats.nonzero >= 30, "too few non-zero gradients to mean anything");
    assert!(
        stats.bad.len() * 50 <= stats.checked,
        "{} of {} coordinates disagree with finite differences",
        stats.bad.len(),
        stats.checked
    );
}

/// An operator without a training rule is refused by node and type.
#[test]
fn untrainable_operator_is_refused_by_name() {
    let mut b = GraphBuilder::<f64>::new();
    b.add_input("x", &[1, 3]).unwrap();
    b.add_node("s", "Softmax", "", 13, &Attributes::default(), &[Some("x")]).unwrap();
    let g = b.finish(&["s"]).unwrap();
    let err =
        TrainGraph::new(&g, RelaxOptions::default(), faer::Par::Seq).err().expect("refused").to_string();
    assert!(err.contains("Softmax") && err.contains("'s'") && err.contains("training"), "{err}");
}

/// The training bounds are the engine's: CROWN-IBP lower bounds of `C·y` equal
/// `compute_bounds(Method::CrownIbp)` per sample, IBP ones (specification folded into the
/// trailing affine layers) are at least the engine's IBP bound of `C·y` computed from
/// output intervals, and every sampled point of the box satisfies both. With perturbed
/// weights, every sampled point of the box under sampled weights (vertices of the
/// weights' ball and uniform points) satisfies the bounds.
#[test]
fn training_bounds_agree_with_the_engine_and_contain_samples() {
    use lirpa::{BoundOptions, BoundRequest, InputValue, Method, Perturbation};
    let strategy = arb_spec();
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let (mut compared, mut weighted, mut same_crown) = (0, 0, 0);
    for _ in 0..96 {
        let spec = strategy.new_tree(&mut runner).unwrap().current();
        let (graph, n_in) = build(&spec);
        let mut g = TrainGraph::new(&graph, RelaxOptions::default(), faer::Par::Seq).unwrap();
        let p = problem(&spec, n_in, g.n_out());
        g.set_input_l2(spec.l2.then_some(p.eps)).unwrap();
        if spec.weight_eps > 0.0 {
            weight_perturbation_contains_samples(&mut g, &spec, &p, n_in);
            weighted += 1;
            continue;
        }
        let ibp = g.ibp(p.lower.as_ref(), p.upper.as_ref()).unwrap();
        let (lb_i, _) = g.spec_lower(&ibp, p.c.as_ref(), p.k, SpecMethod::Ibp).unwrap();
        let (lb_c, _) = g.spec_lower(&ibp, p.c.as_ref(), p.k, SpecMethod::CrownIbp).unwrap();
        let crown = g.crown(p.lower.as_ref(), p.upper.as_ref()).unwrap();
        let (lb_f, _) = g.spec_lower(&crown.bounds, p.c.as_ref(), p.k, SpecMethod::CrownIbp).unwrap();
        let mut rng = Rng::new(spec.seed);
        for s in 0..spec.batch {
            let lo: Vec<f64> = (0..n_in).map(|j| p.lower[(s, j)]).collect();
            let hi: Vec<f64> = (0..n_in).map(|j| p.upper[(s, j)]).collect();
            let c = Mat::from_fn(p.k, g.n_out(), |i, j| p.c[(s * p.k + i, j)]);
            let center: Vec<f64> = lo.iter().zip(&hi).map(|(l, h)| (l + h) / 2.0).collect();
            let ptb = if spec.l2 {
                Perturbation::new_ball(lirpa::Norm::L2, center.clone(), p.eps).unwrap()
            } else {
                Perturbation::new_box(lo.clone(), hi.clone()).unwrap()
            };
            let req = BoundRequest { c: Some(c.as_ref()), upper: false, ..Default::default() };
            let eng = |m| {
                lirpa::compute_bounds(
                    &graph,
                    &[InputValue::Perturbed(ptb.clone())],
                    &BoundOptions::with_method(m),
                    &req,
                )
                .unwrap()
                .lower
            };
            let (crown_ibp, ibp_e, crown_e) = (eng(Method::CrownIbp), eng(Method::Ibp), eng(Method::Crown));
            for i in 0..p.k {
                let (ours_c, ours_i) = (lb_c[s * p.k + i], lb_i[s * p.k + i]);
                assert!(
                    (ours_c - crown_ibp[i]).abs() <= 1e-9 * (1.0 + crown_ibp[i].abs()),
                    "CROWN-IBP {ours_c} vs engine {}",
                    crown_ibp[i]
                );
                assert!(
                    ours_i >= ibp_e[i] - 1e-9 * (1.0 + ibp_e[i].abs()),
                    "folded IBP {ours_i} looser than {}",
                    ibp_e[i]
                );
                // The engine's CROWN also intersects intermediate bounds with IBP, which can
                // change the adaptive slopes either way: the same bound where it did not matter.
                let ours_f = lb_f[s * p.k + i];
                same_crown += usize::from((ours_f - crown_e[i]).abs() <= 1e-9 * (1.0 + crown_e[i].abs()));
                compared += 1;
            }
            for _ in 0..64 {
                let x = sample_point(&mut rng, &lo, &hi, spec.l2.then_some(p.eps));
                let y = graph.forward_all(&[&x]).unwrap().pop().unwrap();
                for i in 0..p.k {
                    let cy: f64 = (0..y.len()).map(|j| c[(i, j)] * y[j]).sum();
                    let slack = 1e-9 * (1.0 + cy.abs());
                    assert!(
                        lb_c[s * p.k + i] <= cy + slack && lb_i[s * p.k + i] <= cy + slack,
                        "a sampled output is below a bound"
                    );
                    assert!(lb_f[s * p.k + i] <= cy + slack, "a sampled output is below the CROWN bound");
                }
            }
        }
    }
    println!(
        "{compared} bounds compared, {same_crown} CROWN bounds equal to the engine's, {weighted} weight-perturbed cases"
    );
    assert!(compared > 100 && weighted > 20 && same_crown * 2 > compared);
}

/// Sample weights in the L∞ ball of radius `spec.weight_eps` around every weight (half at
/// vertices) and inputs in each box: the clean outputs satisfy every bound computed with
/// the weight perturbation.
fn weight_perturbation_contains_samples(g: &mut TrainGraph<f64>, spec: &Spec, p: &Problem, n_in: usize) {
    g.set_weight_eps(spec.weight_eps).unwrap();
    let ibp = g.ibp(p.lower.as_ref(), p.upper.as_ref()).unwrap();
    let (lb_i, _) = g.spec_lower(&ibp, p.c.as_ref(), p.k, SpecMethod::Ibp).unwrap();
    let (lb_c, _) = g.spec_lower(&ibp, p.c.as_ref(), p.k, SpecMethod::CrownIbp).unwrap();
    let crown = g.crown(p.lower.as_ref(), p.upper.as_ref()).unwrap();
    let (lb_f, _) = g.spec_lower(&crown.bounds, p.c.as_ref(), p.k, SpecMethod::CrownIbp).unwrap();
    let last = ibp.lower.len() - 1;
    let (out_l, out_u) = (ibp.lower[last].clone(), ibp.upper[last].clone());
    let base = g.params().to_vec();
    // Which parameters the perturbation covers.
    let is_weight = g.perturbed_weights();
    let mut rng = Rng::new(spec.seed ^ 0x77);
    g.set_weight_eps(0.0).unwrap();
    for t in 0..48 {
        let w: Vec<Vec<f64>> = base
            .iter()
            .zip(&is_weight)
            .map(|(v, &wt)| {
                v.iter()
                    .map(|&x| {
                        let d = if t % 2 == 0 {
                            if rng.uniform() < 0.5 { -1.0 } else { 1.0 }
                        } else {
                            rng.uniform() * 2.0 - 1.0
                        };
                        if wt { x + d * spec.weight_eps } else { x }
                    })
                    .collect()
            })
            .collect();
        g.set_params(w).unwrap();
        let mut x = Mat::<f64>::zeros(spec.batch, n_in);
        for i in 0..spec.batch {
            let lo: Vec<f64> = (0..n_in).map(|j| p.lower[(i, j)]).collect();
            let hi: Vec<f64> = (0..n_in).map(|j| p.upper[(i, j)]).collect();
            for (j, v) in sample_point(&mut rng, &lo, &hi, spec.l2.then_some(p.eps)).into_iter().enumerate() {
                x[(i, j)] = v;
            }
        }
        let y = g.natural(x.as_ref()).unwrap().values.pop().unwrap();
        for s in 0..spec.batch {
            for o in 0..y.ncols() {
                let v = y[(s, o)];
                let slack = 1e-9 * (1.0 + v.abs());
                assert!(
                    out_l[(s, o)] <= v + slack && v <= out_u[(s, o)] + slack,
                    "an output leaves its IBP interval"
                );
            }
            for i in 0..p.k {
                let cy: f64 = (0..y.ncols()).map(|j| p.c[(s * p.k + i, j)] * y[(s, j)]).sum();
                let slack = 1e-9 * (1.0 + cy.abs());
                assert!(
                    lb_c[s * p.k + i] <= cy + slack && lb_i[s * p.k + i] <= cy + slack,
                    "a sampled output is below a bound"
                );
                assert!(lb_f[s * p.k + i] <= cy + slack, "a sampled output is below the CROWN bound");
            }
        }
    }
    g.set_params(base).unwrap();
}

/// A point of the box `[lo, hi]`, or with `l2 = Some(ε)` of the L2 ball of radius ε around
/// its centre (on the sphere half of the time).
fn sample_point(rng: &mut Rng, lo: &[f64], hi: &[f64], l2: Option<f64>) -> Vec<f64> {
    match l2 {
        None => lo.iter().zip(hi).map(|(l, h)| l + (h - l) * rng.uniform()).collect(),
        Some(eps) => {
            let d: Vec<f64> = lo.iter().map(|_| rng.normal()).collect();
            let n = d.iter().map(|v| v * v).sum::<f64>().sqrt().max(1e-300);
            let r = if rng.uniform() < 0.5 { eps } else { eps * rng.uniform() };
            lo.iter().zip(hi).zip(&d).map(|((l, h), v)| (l + h) / 2.0 + r * v / n).collect()
        }
    }
}

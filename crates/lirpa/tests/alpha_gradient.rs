//! α-CROWN on random small DAGs built through the operator registry (dense layers,
//! ReLU/LeakyReLU, fan-out, residual Add/Sub, scaling, views; element-wise chains;
//! products; LayerNormalization, ReduceMax/ReduceMin and Div between ReLU layers), in
//! f64:
//!
//! - the hand-written gradient of the bound with respect to the relaxation parameters
//!   ([`lirpa::bound_and_gradient`]) matches central finite differences, at random
//!   feasible parameters, for every coordinate away from a kink (a coordinate is at a
//!   kink when its one-sided differences disagree; those are skipped and counted);
//! - iteration 0 (CROWN-initialized parameters) reproduces CROWN exactly;
//! - α-CROWN bounds contain the outputs at sampled inputs and are never looser than
//!   CROWN.
//!
//! The graphs are generated from seeds (data driven); the test fails if too few
//! coordinates with a non-zero gradient were checked.

use lirpa::core::{Attr, Attributes, GraphBuilder, TensorData};
use lirpa::sample::{Rng, sample_points};
use lirpa::{
    AlphaRun, AlphaState, BoundOptions, BoundRequest, BoundResult, Graph, InputValue, Method, Norm,
    Perturbation,
};

/// Build a random graph from `seed`. Every value has shape `[1, w]`. Odd seeds give a
/// two-hidden-layer MLP (`x → Gemm → act → Gemm → act → Gemm`), whose intermediate
/// bounds never depend on optimized parameters through IBP; even seeds a random DAG.
fn build(seed: u64) -> (Graph<f64>, Perturbation<f64>) {
    build_with(seed, None)
}

/// [`build`], or with `act = Some(ops)` a two-hidden-layer MLP whose activations are all
/// the chain `ops` of element-wise operators (comma-separated, e.g. `"Tanh,Exp"`).
fn build_with(seed: u64, act: Option<&str>) -> (Graph<f64>, Perturbation<f64>) {
    build_full(seed, act, Mode { positive: false, scale: 1.5 })
}

/// How weights are drawn: `scale` bounds their magnitude; `positive` shifts the biases
/// of the hidden layers by `1 + 2·scale·width` (the first; inputs are within [-2, 2])
/// or `1 + 5·scale·width` (after an activation whose outputs are within [-5, 5]), so
/// that every pre-activation is at least 1 (for Log, Sqrt, Reciprocal, …).
#[derive(Clone, Copy)]
struct Mode {
    positive: bool,
    scale: f64,
}

/// Adds a random constant of a shape, scale and shift; returns its name.
type Konst<'a> = dyn FnMut(&mut GraphBuilder<f64>, &[usize], &mut Rng, f64, f64) -> String + 'a;

fn build_full(seed: u64, act: Option<&str>, mode: Mode) -> (Graph<f64>, Perturbation<f64>) {
    let mut rng = Rng::new(seed);
    let n_in = 1 + rng.below(4);
    let mlp = seed % 2 == 1 || act.is_some();
    let steps = if mlp { 4 } else { 3 + rng.below(10) };
    let mut b = GraphBuilder::<f64>::new();
    b.add_input("x", &[1, n_in]).unwrap();
    let mut vals: Vec<(String, usize)> = vec![("x".into(), n_in)];
    let mut consts = 0;
    let mut konst =
        |b: &mut GraphBuilder<f64>, shape: &[usize], rng: &mut Rng, scale: f64, shift: f64| -> String {
            consts += 1;
            let name = format!("c{consts}");
            let n: usize = shape.iter().product();
            let data = (0..n).map(|_| (rng.uniform() * 2.0 - 1.0) * scale + shift).collect();
            b.add_constant(&name, TensorData::float(shape, data).unwrap()).unwrap();
            name
        };
    let dense = |b: &mut GraphBuilder<f64>,
                 rng: &mut Rng,
                 konst: &mut Konst<'_>,
                 src: &(String, usize),
                 out: usize,
                 name: &str| {
        let w = konst(b, &[out, src.1], rng, mode.scale, 0.0);
        let shift = match (mode.positive && name != "out", src.0 == "x") {
            (false, _) => 0.0,
            (true, true) => 1.0 + 2.0 * mode.scale * src.1 as f64,
            (true, false) => 1.0 + 5.0 * mode.scale * src.1 as f64,
        };
        let bias = konst(b, &[out], rng, 0.5, shift);
        let mut attrs = Attributes::default();
        attrs.insert("transB", Attr::Int(1));
        b.add_node(name, "Gemm", "", 13, &attrs, &[Some(&src.0), Some(&w), Some(&bias)]).unwrap();
    };
    for i in 0..steps {
        let name = format!("v{i}");
        // Mostly a chain (deep enough for intermediate passes to matter), sometimes a skip.
        let src = if !mlp && rng.below(5) == 0 {
            vals[rng.below(vals.len())].clone()
        } else {
            vals.last().unwrap().clone()
        };
        let none = Attributes::default();
        // Layers and activations alternate mostly, with residual connections.
        let kind = match (mlp, i % 2) {
            (_, 0) => rng.below(2),
            (true, _) => 2 + rng.below(4),
            (false, _) => 2 + rng.below(6),
        };
        let width = match kind {
            0 | 1 => {
                let w = 2 + rng.below(5);
                dense(&mut b, &mut rng, &mut konst, &src, w, &name);
                w
            }
            2..=5 if act.is_some() => {
                // A chain of element-wise operators, the last one named `name`;
                // `Pow:p` is `Pow` with the constant exponent `p`.
                let ops: Vec<&str> = act.unwrap_or("Relu").split(',').collect();
                let mut prev = src.0.clone();
                for (k, op) in ops.iter().enumerate() {
                    let out = if k + 1 == ops.len() { name.clone() } else { format!("{name}_{k}") };
                    if let Some(p) = op.strip_prefix("Pow:") {
                        let e = format!("{out}_exponent");
                        let p: f64 = p.parse().unwrap();
                        b.add_constant(&e, TensorData::float(&[], vec![p]).unwrap()).unwrap();
                        b.add_node(&out, "Pow", "", 13, &none, &[Some(&prev), Some(&e)]).unwrap();
                    } else {
                        b.add_node(&out, op, "", 13, &none, &[Some(&prev)]).unwrap();
                    }
                    prev = out;
                }
                src.1
            }
            2..=4 => {
                b.add_node(&name, "Relu", "", 13, &none, &[Some(&src.0)]).unwrap();
                src.1
            }
            5 => {
                let mut attrs = Attributes::default();
                attrs.insert("alpha", Attr::Float(0.1));
                b.add_node(&name, "LeakyRelu", "", 13, &attrs, &[Some(&src.0)]).unwrap();
                src.1
            }
            _ => {
                let other = vals[rng.below(vals.len())].clone();
                let other_name = if other.1 == src.1 {
                    other.0
                } else {
                    let p = format!("p{i}");
                    dense(&mut b, &mut rng, &mut konst, &other, src.1, &p);
                    p
                };
                let op = if rng.below(2) == 0 { "Add" } else { "Sub" };
                b.add_node(&name, op, "", 13, &none, &[Some(&src.0), Some(&other_name)]).unwrap();
                src.1
            }
        };
        vals.push((name, width));
    }
    // End with a dense layer so that the last activation's parameters matter.
    let last = vals.last().unwrap().clone();
    let width = 1 + rng.below(3);
    dense(&mut b, &mut rng, &mut konst, &last, width, "out");
    let g = b.finish(&["out"]).unwrap();
    let center: Vec<f64> = (0..n_in).map(|_| rng.uniform() * 2.0 - 1.0).collect();
    let radius = 0.05 + rng.uniform();

    let p = match rng.below(4) {
        0 => {
            let r: Vec<f64> = (0..n_in).map(|_| rng.uniform() * radius).collect();
            Perturbation::new_box(
                center.iter().zip(&r).map(|(c, r)| c - r).collect(),
                center.iter().zip(&r).map(|(c, r)| c + r).collect(),
            )
            .unwrap()
        }
        1 => Perturbation::new_ball(Norm::Inf, center, radius).unwrap(),
        2 => Perturbation::new_ball(Norm::L2, center, radius).unwrap(),
        _ => Perturbation::new_ball(Norm::L1, center, radius).unwrap(),
    };
    (g, p)
}

fn opts(iterations: usize) -> BoundOptions {
    let mut o = BoundOptions::with_method(Method::AlphaCrown);
    o.optimize.iterations = iterations;
    o
}

fn sum(v: &[f64]) -> f64 {
    v.iter().sum()
}

/// Every parameter of a run, as (pass, node, side) and its vector.
fn params(run: &mut AlphaRun<f64>) -> Vec<&mut Vec<f64>> {
    run.passes
        .iter_mut()
        .flat_map(|p| p.nodes.iter_mut())
        .flat_map(|n| [&mut n.lower, &mut n.upper])
        .flatten()
        .collect()
}

/// `st` with its parameters moved at random (uniformly by up to ±0.5, from `seed`),
/// then projected into their valid ranges by one warm-started evaluation, whose returned
/// state holds them.
fn random_feasible(
    g: &Graph<f64>,
    inputs: &[InputValue<f64>],
    req: &BoundRequest<'_, f64>,
    mut st: AlphaState<f64>,
    seed: u64,
) -> AlphaState<f64> {
    let mut rng = Rng::new(seed ^ 0x5EED);
    for run in &mut st.runs {
        for v in params(run) {
            v.iter_mut().for_each(|x| *x += rng.uniform() - 0.5);
        }
    }
    lirpa::compute_bounds_optimized(g, inputs, &opts(1), req, Some(&st)).unwrap().1
}

/// CROWN's bounds, after checking that α-CROWN's iteration 0 reproduces them exactly;
/// also that iteration's state. `what` names the graph in failures.
fn iteration_zero_is_crown(
    g: &Graph<f64>,
    inputs: &[InputValue<f64>],
    req: &BoundRequest<'_, f64>,
    what: &str,
) -> (BoundResult<f64>, AlphaState<f64>) {
    let crown = lirpa::compute_bounds(g, inputs, &BoundOptions::with_method(Method::Crown), req).unwrap();
    let (it0, st) = lirpa::compute_bounds_optimized(g, inputs, &opts(1), req, None).unwrap();
    assert_eq!((&it0.lower, &it0.upper), (&crown.lower, &crown.upper), "{what}: iteration 0 is not CROWN");
    (crown, st)
}

/// α-CROWN (20 iterations) is never looser than `crown` and contains the outputs at 64
/// inputs sampled from `p` (from `seed`); returns how many bounds it tightened.
fn alpha_is_sound_and_tighter(
    g: &Graph<f64>,
    p: &Perturbation<f64>,
    req: &BoundRequest<'_, f64>,
    crown: &BoundResult<f64>,
    seed: u64,
    what: &str,
) -> usize {
    let inputs = [InputValue::Perturbed(p.clone())];
    let alpha = lirpa::compute_bounds(g, &inputs, &opts(20), req).unwrap();
    let mut tightened = 0;
    for i in 0..crown.lower.len() {
        assert!(alpha.lower[i] >= crown.lower[i] && alpha.upper[i] <= crown.upper[i], "{what}: looser");
        if alpha.lower[i] > crown.lower[i] + 1e-9 || alpha.upper[i] < crown.upper[i] - 1e-9 {
            tightened += 1;
        }
    }
    let out = g.output().unwrap();
    for x in sample_points(p, 64, seed) {
        let y = g.forward(&[&x], out).unwrap();
        for (i, &yi) in y.iter().enumerate() {
            let t = 1e-9 * (1.0 + yi.abs());
            assert!(
                alpha.lower[i] <= yi + t && yi <= alpha.upper[i] + t,
                "{what}: output {i} = {yi} outside alpha-CROWN [{}, {}]",
                alpha.lower[i],
                alpha.upper[i]
            );
        }
    }
    tightened
}

const SEEDS: u64 = 300;

/// The loss of a run is the sum of its side's final bounds; its parameters include
/// those of the intermediate passes, whose effect goes through intermediate bounds.
/// The engine's gradient treats bounds that come from interval propagation (elements
/// where IBP is tighter than the backward pass, and nodes bounded by IBP) as constants
/// (documented in the engine); on the random DAGs (even seeds) those can depend on
/// intermediate passes' parameters, so there only the final pass's parameters are
/// checked; on the two-layer MLPs (odd seeds) every parameter is.
#[test]
fn gradient_matches_central_differences() {
    let mut stats = Stats::default();
    for seed in 0..SEEDS {
        let (g, p) = build(seed);
        let inputs = [InputValue::Perturbed(p)];
        let req = BoundRequest::default();
        let (_, st) = lirpa::compute_bounds_optimized(&g, &inputs, &opts(1), &req, None).unwrap();
        for mut run in st.runs {
            // Random feasible parameters (inside [0.1, 1] suits Relu and LeakyRelu(0.1)).
            let mut rng = Rng::new(seed ^ 0x5EED ^ run.upper as u64);
            for v in params(&mut run) {
                v.iter_mut().for_each(|x| *x = 0.15 + 0.8 * rng.uniform());
            }
            check_run(&g, &inputs, &req, &run, seed % 2 == 0, seed, &mut stats);
        }
    }
    stats.report("gradient", 100, 20);
}

#[derive(Default)]
struct Stats {
    checked: usize,
    nonzero: usize,
    kinks: usize,
    intermediate: usize,
    worst: f64,
    /// Count (and print) disagreeing coordinates instead of failing at the first.
    tolerate_mismatch: bool,
    mismatches: usize,
}

impl Stats {
    fn report(&self, what: &str, min_nonzero: usize, min_intermediate: usize) {
        let Stats { checked, nonzero, kinks, intermediate, worst, mismatches, .. } = self;
        eprintln!(
            "{what}: {checked} coordinates checked ({nonzero} non-zero, {intermediate} of intermediate passes), \
             {kinks} at kinks, worst relative error {worst:.2e}, {mismatches} mismatches"
        );
        assert!(*nonzero >= min_nonzero, "{what}: only {nonzero} non-zero gradient coordinates were checked");
        assert!(
            *intermediate >= min_intermediate,
            "{what}: only {intermediate} non-zero intermediate-pass coordinates were checked"
        );
    }

    /// At most one in `one_in` of the non-zero coordinates checked may disagree.
    fn assert_few_mismatches(&self, what: &str, one_in: usize) {
        assert!(
            self.mismatches * one_in <= self.nonzero,
            "{what}: {} of {} non-zero gradient coordinates disagree with finite differences",
            self.mismatches,
            self.nonzero
        );
    }
}

/// Compare the gradient of `run`'s bound with central finite differences, coordinate by
/// coordinate (only the final pass's parameters when `final_only`).
fn check_run(
    g: &Graph<f64>,
    inputs: &[InputValue<f64>],
    req: &BoundRequest<'_, f64>,
    run: &AlphaRun<f64>,
    final_only: bool,
    seed: u64,
    st: &mut Stats,
) {
    let (b0, mut grad) = lirpa::bound_and_gradient(g, inputs, &opts(1), req, run).unwrap();
    let f0 = sum(&b0);
    let grads: Vec<Vec<f64>> = params(&mut grad).into_iter().map(|v| v.clone()).collect();
    let n_final = run
        .passes
        .last()
        .unwrap()
        .nodes
        .iter()
        .map(|n| [&n.lower, &n.upper].iter().filter(|x| x.is_some()).count())
        .sum::<usize>();
    let n_vec = grads.len();
    let h = 1e-6;
    for (k, gk) in grads.iter().enumerate() {
        if final_only && k < n_vec - n_final {
            continue;
        }
        for (i, &gi) in gk.iter().enumerate() {
            let eval = |d: f64| {
                let mut r = run.clone();
                params(&mut r)[k][i] += d;
                sum(&lirpa::bound_and_gradient(g, inputs, &opts(1), req, &r).unwrap().0)
            };
            let (fp, fm) = (eval(h), eval(-h));
            let (dp, dm) = ((fp - f0) / h, (f0 - fm) / h);
            // A kink: the one-sided differences disagree absolutely, or relatively
            // (a parameter at the end of its range, where one side is flat).
            let big = dp.abs().max(dm.abs());
            if (dp - dm).abs() > 1e-4 * (1.0 + dp.abs()) || (big > 1e-8 && (dp - dm).abs() > 0.1 * big) {
                st.kinks += 1;
                continue;
            }
            let fd = (fp - fm) / (2.0 * h);
            let err = (fd - gi).abs() / (1.0 + fd.abs());
            if st.tolerate_mismatch && err >= 1e-5 {
                eprintln!(
                    "  mismatch: seed {seed}: {} run, parameter vector {k} element {i}: analytic {}, finite differences {fd}",
                    if run.upper { "upper" } else { "lower" },
                    gi
                );
                st.mismatches += 1;
                continue;
            }
            st.worst = st.worst.max(err);
            assert!(
                err < 1e-5,
                "seed {seed}: {} run, parameter vector {k} element {i}: analytic {}, finite differences {fd}",
                if run.upper { "upper" } else { "lower" },
                gi
            );
            st.checked += 1;
            if gi.abs() > 1e-9 {
                st.nonzero += 1;
                if k < n_vec - n_final {
                    st.intermediate += 1;
                }
            }
        }
    }
}

const SSHAPE_SEEDS: u64 = 60;

/// The S-shaped activations (Sigmoid, Tanh), whose parameters are tangent points: on
/// two-hidden-layer MLPs, at random feasible tangent points (the CROWN points moved at
/// random, then projected into their valid ranges by a warm-started evaluation), the
/// gradient of every pass's parameters (the intermediate ones through the chords'
/// dependence on the input bounds) matches central differences. Coordinates at the end
/// of their range are kinks (one-sided differences disagree) and are skipped.
///
/// Known gap: on 3 of the 60 graphs a few coordinates disagree (about 1% of the
/// non-zero ones: 2-4% relative error on intermediate-pass coordinates, and one graph
/// whose bound does not move with its parameters at all while the analytic gradient is
/// non-zero, which suggests a bound taken from interval propagation). They are printed
/// and must stay below 2% of the non-zero coordinates checked.
#[test]
fn sshape_gradient_matches_central_differences() {
    let mut stats = Stats { tolerate_mismatch: true, ..Stats::default() };
    for seed in 0..SSHAPE_SEEDS {
        let act = if seed % 2 == 0 { "Sigmoid" } else { "Tanh" };
        let (g, p) = build_with(seed, Some(act));
        let inputs = [InputValue::Perturbed(p)];
        let req = BoundRequest::default();
        let (_, st) = lirpa::compute_bounds_optimized(&g, &inputs, &opts(1), &req, None).unwrap();
        for run in &random_feasible(&g, &inputs, &req, st, seed).runs {
            check_run(&g, &inputs, &req, run, false, seed, &mut stats);
        }
    }
    stats.report("S-shaped gradient", 50, 10);
    stats.assert_few_mismatches("S-shaped gradient", 50);
}

/// Chains of element-wise operators with optimizable tangent points (or slopes)
/// besides the S-shaped ones, and how their graphs are drawn: convex/concave (Exp, Log,
/// Reciprocal, Sqrt, Softplus, Pow), periodic (Sin, Cos) and Gelu. The functions defined for
/// positive inputs only get positive pre-activations; Exp and the powers small weights.
const CHAINS: &[(&str, Mode)] = &[
    ("Softplus", Mode { positive: false, scale: 1.5 }),
    ("Sin", Mode { positive: false, scale: 1.5 }),
    ("Cos", Mode { positive: false, scale: 1.5 }),
    ("Exp", Mode { positive: false, scale: 0.3 }),
    ("Log", Mode { positive: true, scale: 1.5 }),
    ("Sqrt", Mode { positive: true, scale: 1.5 }),
    ("Reciprocal", Mode { positive: true, scale: 1.5 }),
    ("Pow:2", Mode { positive: false, scale: 0.5 }),
    ("Pow:3", Mode { positive: false, scale: 0.5 }),
    ("Pow:-1", Mode { positive: true, scale: 1.5 }),
    ("Pow:0.5", Mode { positive: true, scale: 1.5 }),
    ("Pow:-2", Mode { positive: true, scale: 0.5 }),
    ("Gelu", Mode { positive: false, scale: 1.5 }),
    ("Pow:5", Mode { positive: false, scale: 0.3 }),
];

const CHAIN_SEEDS: u64 = 56;

fn build_chain(seed: u64) -> (Graph<f64>, Perturbation<f64>, &'static str) {
    let (act, mode) = CHAINS[seed as usize % CHAINS.len()];
    let (g, p) = build_full(seed, Some(act), mode);
    (g, p, act)
}

/// [`sshape_gradient_matches_central_differences`] for [`CHAINS`] (with the same
/// tolerance for disagreeing coordinates).
#[test]
fn convex_and_periodic_gradient_matches_central_differences() {
    let mut stats = Stats { tolerate_mismatch: true, ..Stats::default() };
    for seed in 0..CHAIN_SEEDS {
        let (g, p, act) = build_chain(seed);
        let inputs = [InputValue::Perturbed(p)];
        let req = BoundRequest::default();
        let (_, st) = lirpa::compute_bounds_optimized(&g, &inputs, &opts(1), &req, None).unwrap();
        let before = stats.mismatches;
        for run in &random_feasible(&g, &inputs, &req, st, seed).runs {
            check_run(&g, &inputs, &req, run, false, seed, &mut stats);
        }
        if stats.mismatches > before {
            eprintln!("  ({act})");
        }
    }
    stats.report("convex/periodic gradient", 400, 200);
    stats.assert_few_mismatches("convex/periodic gradient", 50);
}

#[test]
fn iteration_zero_is_crown_and_alpha_crown_is_sound_and_tighter() {
    let mut tightened = 0;
    // The random DAGs, then MLPs with S-shaped activations and with the chains.
    let sshape = (0..SSHAPE_SEEDS).map(|s| (s, Some(if s % 2 == 0 { "Sigmoid" } else { "Tanh" })));
    let chains = (0..CHAIN_SEEDS).map(|s| (s, Some("chain")));
    for (seed, act) in (0..SEEDS).map(|s| (s, None)).chain(sshape).chain(chains) {
        let (g, p, act) = match act {
            Some("chain") => {
                let (g, p, act) = build_chain(seed);
                (g, p, Some(act))
            }
            _ => {
                let (g, p) = build_with(seed, act);
                (g, p, act)
            }
        };
        let inputs = [InputValue::Perturbed(p.clone())];
        let req = BoundRequest::default();
        let what = format!("seed {seed} ({act:?})");
        let (crown, _) = iteration_zero_is_crown(&g, &inputs, &req, &what);
        tightened += alpha_is_sound_and_tighter(&g, &p, &req, &crown, seed, &what);
    }
    eprintln!("alpha-CROWN tightened {tightened} bounds");
    assert!(tightened > 0);
}

/// Warm start (the branch-and-bound API): restarting from the returned parameters with
/// a single evaluation gives the best iteration's bounds, so their sum is at least
/// CROWN's, and strictly better on graphs where α-CROWN helps.
#[test]
fn warm_start_resumes_from_the_returned_parameters() {
    let mut better = 0;
    for seed in 0..SEEDS {
        let (g, p) = build(seed);
        let inputs = [InputValue::Perturbed(p)];
        let req = BoundRequest::default();
        let crown =
            lirpa::compute_bounds(&g, &inputs, &BoundOptions::with_method(Method::Crown), &req).unwrap();
        let (_, st) = lirpa::compute_bounds_optimized(&g, &inputs, &opts(20), &req, None).unwrap();
        let (warm, _) = lirpa::compute_bounds_optimized(&g, &inputs, &opts(1), &req, Some(&st)).unwrap();
        let (wl, cl) = (sum(&warm.lower), sum(&crown.lower));
        let (wu, cu) = (sum(&warm.upper), sum(&crown.upper));
        let t = 1e-9 * (1.0 + cl.abs() + cu.abs());
        assert!(
            wl >= cl - t && wu <= cu + t,
            "seed {seed}: warm start [{wl}, {wu}] looser than CROWN [{cl}, {cu}]"
        );
        if wl > cl + 1e-6 || wu < cu - 1e-6 {
            better += 1;
        }
    }
    eprintln!("warm start: better than CROWN on {better} graphs");
    assert!(better > 0);
}

/// A random graph with products of perturbed values, from `seed`: two dense layers of
/// the input (the first sometimes after a hidden Tanh layer), each optionally through
/// Sigmoid or Tanh, multiplied element-wise (a
/// bilinear Mul), a dense layer, its square (`Mul(q, q)`), a dense layer, sometimes a
/// second bilinear product (Mul, or MatMul by a reshaped projection) with another
/// projection of the first product, and a final dense layer. Every value has shape
/// `[1, w]`.
fn build_products(seed: u64) -> (Graph<f64>, Perturbation<f64>) {
    let mut rng = Rng::new(seed);
    let n_in = 1 + rng.below(3);
    let mut b = GraphBuilder::<f64>::new();
    b.add_input("x", &[1, n_in]).unwrap();
    let mut k = 0;
    let mut dense =
        |b: &mut GraphBuilder<f64>, rng: &mut Rng, src: &str, n_src: usize, out: usize| -> String {
            k += 1;
            let (w, bias, name) = (format!("w{k}"), format!("b{k}"), format!("d{k}"));
            let data = (0..out * n_src).map(|_| (rng.uniform() * 2.0 - 1.0) * 1.2).collect();
            b.add_constant(&w, TensorData::float(&[out, n_src], data).unwrap()).unwrap();
            let data = (0..out).map(|_| rng.uniform() - 0.5).collect();
            b.add_constant(&bias, TensorData::float(&[out], data).unwrap()).unwrap();
            let mut attrs = Attributes::default();
            attrs.insert("transB", Attr::Int(1));
            b.add_node(&name, "Gemm", "", 13, &attrs, &[Some(src), Some(&w), Some(&bias)]).unwrap();
            name
        };
    let none = Attributes::default();
    let w = 2 + rng.below(3);
    // Sometimes a hidden Tanh layer first: the bounds of `h1` then come from a pass with
    // parameters, and reach the product through the interval rule of `a1`.
    let h1 = if rng.below(2) == 0 {
        let w0 = 2 + rng.below(3);
        let h0 = dense(&mut b, &mut rng, "x", n_in, w0);
        b.add_node("t0", "Tanh", "", 13, &Attributes::default(), &[Some(&h0)]).unwrap();
        dense(&mut b, &mut rng, "t0", w0, w)
    } else {
        dense(&mut b, &mut rng, "x", n_in, w)
    };
    let h2 = dense(&mut b, &mut rng, "x", n_in, w);
    let act = |b: &mut GraphBuilder<f64>, rng: &mut Rng, v: String, name: &str| -> String {
        match rng.below(3) {
            0 => v,
            c => {
                let op = if c == 1 { "Sigmoid" } else { "Tanh" };
                b.add_node(name, op, "", 13, &none, &[Some(&v)]).unwrap();
                name.to_string()
            }
        }
    };
    let a1 = act(&mut b, &mut rng, h1, "a1");
    let a2 = act(&mut b, &mut rng, h2, "a2");
    b.add_node("p", "Mul", "", 13, &none, &[Some(&a1), Some(&a2)]).unwrap();
    let w2 = 2 + rng.below(3);
    let q = dense(&mut b, &mut rng, "p", w, w2);
    b.add_node("s", "Mul", "", 13, &none, &[Some(&q), Some(&q)]).unwrap();
    let w3 = 1 + rng.below(3);
    let mut last = dense(&mut b, &mut rng, "s", w2, w3);
    let mut w_last = w3;
    match rng.below(3) {
        0 => {
            let other = dense(&mut b, &mut rng, "p", w, w3);
            b.add_node("r", "Mul", "", 13, &none, &[Some(&last), Some(&other)]).unwrap();
            last = "r".into();
        }
        1 => {
            // A MatMul of two perturbed values: [1, w3]·[w3, k2].
            let k2 = 1 + rng.below(2);
            let other = dense(&mut b, &mut rng, "p", w, w3 * k2);
            let shape = "shape_r";
            b.add_constant(
                shape,
                TensorData::new(&[2], lirpa::core::DType::Int, vec![w3 as f64, k2 as f64]).unwrap(),
            )
            .unwrap();
            b.add_node("o2", "Reshape", "", 13, &none, &[Some(&other), Some(shape)]).unwrap();
            b.add_node("r", "MatMul", "", 13, &none, &[Some(&last), Some("o2")]).unwrap();
            last = "r".into();
            w_last = k2;
        }
        _ => {}
    }
    let n_out = 1 + rng.below(2);
    let out = dense(&mut b, &mut rng, &last, w_last, n_out);
    let g = b.finish(&[&out]).unwrap();
    let center: Vec<f64> = (0..n_in).map(|_| rng.uniform() * 2.0 - 1.0).collect();
    let radius = 0.05 + 0.5 * rng.uniform();
    let p = if rng.below(2) == 0 {
        Perturbation::new_ball(Norm::Inf, center, radius).unwrap()
    } else {
        Perturbation::new_ball(Norm::L2, center, radius).unwrap()
    };
    (g, p)
}

const PRODUCT_SEEDS: u64 = 60;

/// Products of perturbed values (bilinear Mul, whose parameters interpolate the
/// McCormick planes, and squares, whose parameters are tangent points), with S-shaped
/// activations before them: at random feasible parameters (the initial ones moved at
/// random, then projected by a warm-started evaluation), the gradient of every pass's
/// parameters (the intermediate ones through `bounds_grad`) matches central differences;
/// iteration 0 is CROWN, and α-CROWN is sound on sampled inputs and never looser than
/// CROWN.
///
/// Every coordinate of the final pass must agree. Known gap: about 6% of the non-zero
/// intermediate-pass coordinates disagree (201 of 3458 at the time of writing; about 35%
/// without the products' `bounds_grad`). They come from the engine's gradient treating
/// the IBP reference of an intermediate bound as a constant where it wins (IBP through a
/// square is tight): with that intersection disabled in an experiment, 8 of 4518 disagree.
/// They are printed and must stay below 10% of the non-zero coordinates.
#[test]
fn product_gradient_matches_central_differences() {
    let mut stats = Stats { tolerate_mismatch: true, ..Stats::default() };
    let mut strict = Stats::default();
    let mut tightened = 0;
    for seed in 0..PRODUCT_SEEDS {
        let (g, p) = build_products(seed);
        let inputs = [InputValue::Perturbed(p.clone())];
        let req = BoundRequest::default();
        let what = format!("seed {seed}");
        let (crown, st) = iteration_zero_is_crown(&g, &inputs, &req, &what);
        for run in &random_feasible(&g, &inputs, &req, st, seed).runs {
            check_run(&g, &inputs, &req, run, true, seed, &mut strict);
            check_run(&g, &inputs, &req, run, false, seed, &mut stats);
        }
        tightened += alpha_is_sound_and_tighter(&g, &p, &req, &crown, seed, &what);
    }
    strict.report("product gradient, final pass", 100, 0);
    stats.report("product gradient", 100, 20);
    eprintln!("alpha-CROWN tightened {tightened} product-graph bounds");
    assert!(tightened > 0);
    stats.assert_few_mismatches("product gradient", 10);
}

/// A deadline that has passed stops α-CROWN after its first iteration (CROWN), on the
/// graphs where 20 iterations do tighten something.
#[test]
fn a_passed_deadline_stops_after_iteration_zero() {
    let mut checked = 0;
    for seed in 0..SEEDS {
        let (g, p) = build(seed);
        let inputs = [InputValue::Perturbed(p.clone())];
        let req = BoundRequest::default();
        let crown =
            lirpa::compute_bounds(&g, &inputs, &BoundOptions::with_method(Method::Crown), &req).unwrap();
        let full = lirpa::compute_bounds(&g, &inputs, &opts(20), &req).unwrap();
        if full.lower == crown.lower && full.upper == crown.upper {
            continue;
        }
        let mut late = opts(20);
        late.optimize.deadline = Some(std::time::Instant::now());
        let stopped = lirpa::compute_bounds(&g, &inputs, &late, &req).unwrap();
        assert_eq!((&stopped.lower, &stopped.upper), (&crown.lower, &crown.upper), "seed {seed}");
        checked += 1;
    }
    assert!(checked >= 5, "only {checked} graphs where α-CROWN tightens");
}

/// A two-hidden-layer MLP whose first two Gemm layers have a perturbed weight (an L∞
/// ball, or an L2 ball for the first), with random `transB` and `alpha`, the second a
/// perturbed bias too, and a perturbed input (L∞ or L2): the bilinear Gemm of a
/// perturbed weight. Returns the graph and one value per graph input.
fn build_weights(seed: u64) -> (Graph<f64>, Vec<InputValue<f64>>) {
    let mut rng = Rng::new(seed);
    let n_in = 1 + rng.below(3);
    let mut b = GraphBuilder::<f64>::new();
    let mut inputs = Vec::new();
    let random = |rng: &mut Rng, n: usize| (0..n).map(|_| rng.uniform() * 2.0 - 1.0).collect::<Vec<f64>>();
    b.add_input("x", &[1, n_in]).unwrap();
    let x = random(&mut rng, n_in);
    let norm = if rng.below(2) == 0 { Norm::Inf } else { Norm::L2 };
    inputs.push(InputValue::Perturbed(Perturbation::new_ball(norm, x, 0.1 + 0.4 * rng.uniform()).unwrap()));
    let (mut src, mut width) = ("x".to_string(), n_in);
    for k in 0..3 {
        let out = 2 + rng.below(3);
        let trans_b = rng.below(2) == 0;
        let (w, bias, y) = (format!("w{k}"), format!("b{k}"), format!("y{k}"));
        let shape = if trans_b { [out, width] } else { [width, out] };
        let wv = random(&mut rng, out * width);
        if k < 2 {
            b.add_input(&w, &shape).unwrap();
            let norm = if k == 0 && rng.below(2) == 0 { Norm::L2 } else { Norm::Inf };
            let eps = 0.05 + 0.2 * rng.uniform();
            inputs.push(InputValue::Perturbed(Perturbation::new_ball(norm, wv, eps).unwrap()));
        } else {
            b.add_constant(&w, TensorData::float(&shape, wv).unwrap()).unwrap();
        }
        let bv = random(&mut rng, out);
        if k == 1 {
            b.add_input(&bias, &[out]).unwrap();
            inputs.push(InputValue::Perturbed(Perturbation::new_ball(Norm::Inf, bv, 0.1).unwrap()));
        } else {
            b.add_constant(&bias, TensorData::float(&[out], bv).unwrap()).unwrap();
        }
        let mut attrs = Attributes::default();
        attrs.insert("transB", Attr::Int(trans_b as i64));
        attrs.insert("alpha", Attr::Float(if rng.below(2) == 0 { 1.0 } else { -0.8 }));
        b.add_node(&y, "Gemm", "", 13, &attrs, &[Some(&src), Some(&w), Some(&bias)]).unwrap();
        (src, width) = (y, out);
        if k < 2 {
            let r = format!("r{k}");
            b.add_node(&r, "Relu", "", 13, &Attributes::default(), &[Some(&src)]).unwrap();
            src = r;
        }
    }
    (b.finish(&[&src]).unwrap(), inputs)
}

const WEIGHT_SEEDS: u64 = 40;

/// Gemm layers with perturbed weights (the bilinear Gemm, whose parameters are the
/// McCormick interpolation of its product terms, mapped through the transposition and
/// `alpha`): iteration 0 is CROWN, and at random parameters inside `[0.15, 0.95]` the
/// gradient of every final-pass parameter matches central differences exactly, and of
/// the intermediate passes' parameters up to the same IBP-reference gap as
/// [`product_gradient_matches_central_differences`] (at most 10%). Interior parameters:
/// at `r = 1` the plane's coefficient on the weight is `x_l = 0` behind an unstable ReLU,
/// where the bound has a kink (`|coefficient|·eps`) that the one-sided differences
/// cannot see at the end of the feasible range. Measured: every one of about 2,000
/// non-zero final-pass coordinates agrees (relative error below 2e-9); 55 of about 400
/// intermediate-pass coordinates disagree (all of them the first layer's pass, whose
/// bounds reach the final bound through a ReLU's interval rule and the next product's
/// planes), about as many with `transB = 0` and `alpha = 1`, so not the Gemm's index
/// maps: the products' intermediate-pass gap described above.
#[test]
fn weight_gemm_gradient_matches_central_differences() {
    let mut stats = Stats { tolerate_mismatch: true, ..Stats::default() };
    let mut strict = Stats::default();
    for seed in 0..WEIGHT_SEEDS {
        let (g, inputs) = build_weights(seed);
        let req = BoundRequest::default();
        let (_, st) = iteration_zero_is_crown(&g, &inputs, &req, &format!("weights seed {seed}"));
        for mut run in st.runs {
            let mut rng = Rng::new(seed ^ 0x5EED ^ run.upper as u64);
            for v in params(&mut run) {
                v.iter_mut().for_each(|x| *x = 0.15 + 0.8 * rng.uniform());
            }
            let run = &run;
            check_run(&g, &inputs, &req, run, true, seed, &mut strict);
            check_run(&g, &inputs, &req, run, false, seed, &mut stats);
        }
    }
    strict.report("weight Gemm gradient, final pass", 100, 0);
    stats.report("weight Gemm gradient", 100, 20);
    stats.assert_few_mismatches("weight Gemm gradient", 10);
}

/// The operators whose adjoints (`relaxed_forward`) are not a per-element line choice
/// of one input: LayerNormalization (a chain of lines per row), ReduceMax/ReduceMin
/// (selected inputs and constant lines) and Div by a perturbed divisor (planes with the
/// reciprocal's line), each between two ReLU layers:
/// `x → Gemm → Relu → Gemm → op → Gemm → Relu → Gemm`. Returns the graph, its set and
/// the operator's name.
fn build_adjoint(seed: u64) -> (Graph<f64>, Perturbation<f64>, &'static str) {
    let mut rng = Rng::new(seed);
    let n_in = 2 + rng.below(2);
    let mut b = GraphBuilder::<f64>::new();
    b.add_input("x", &[1, n_in]).unwrap();
    let mut k = 0;
    let mut dense = |b: &mut GraphBuilder<f64>,
                     rng: &mut Rng,
                     src: &str,
                     n_src: usize,
                     out: usize,
                     shift: f64|
     -> String {
        k += 1;
        let (w, bias, name) = (format!("w{k}"), format!("b{k}"), format!("d{k}"));
        let data = (0..out * n_src).map(|_| (rng.uniform() * 2.0 - 1.0) * 1.2).collect();
        b.add_constant(&w, TensorData::float(&[out, n_src], data).unwrap()).unwrap();
        let data = (0..out).map(|_| rng.uniform() - 0.5 + shift).collect();
        b.add_constant(&bias, TensorData::float(&[out], data).unwrap()).unwrap();
        let mut attrs = Attributes::default();
        attrs.insert("transB", Attr::Int(1));
        b.add_node(&name, "Gemm", "", 13, &attrs, &[Some(src), Some(&w), Some(&bias)]).unwrap();
        name
    };
    let none = Attributes::default();
    let w = 4;
    let h1 = dense(&mut b, &mut rng, "x", n_in, w, 0.0);
    b.add_node("r1", "Relu", "", 13, &none, &[Some(&h1)]).unwrap();
    let h2 = dense(&mut b, &mut rng, "r1", w, w, 0.0);
    let (op, y, wy) = match seed % 5 {
        0 => {
            let scale = TensorData::float(&[w], (0..w).map(|_| 0.5 + rng.uniform()).collect()).unwrap();
            let bias = TensorData::float(&[w], (0..w).map(|_| rng.uniform() - 0.5).collect()).unwrap();
            b.add_constant("ln_s", scale).unwrap();
            b.add_constant("ln_b", bias).unwrap();
            let ins = [Some(h2.as_str()), Some("ln_s"), Some("ln_b")];
            b.add_node("y", "LayerNormalization", "", 17, &none, &ins).unwrap();
            ("LayerNormalization", "y", w)
        }
        c @ (1 | 2) => {
            let op = if c == 1 { "ReduceMax" } else { "ReduceMin" };
            let shape = TensorData::new(&[3], lirpa::core::DType::Int, vec![1.0, 2.0, 2.0]).unwrap();
            b.add_constant("shape", shape).unwrap();
            b.add_node("v", "Reshape", "", 13, &none, &[Some(&h2), Some("shape")]).unwrap();
            let mut attrs = Attributes::default();
            attrs.insert("axes", Attr::Ints(vec![2]));
            attrs.insert("keepdims", Attr::Int(0));
            b.add_node("y", op, "", 13, &attrs, &[Some("v")]).unwrap();
            (op, "y", 2)
        }
        c => {
            // A positive divisor: a large bias.
            let d = dense(&mut b, &mut rng, "r1", w, w, 8.0);
            let num = if c == 3 {
                h2
            } else {
                b.add_constant("num", TensorData::float(&[w], vec![1.0, -2.0, 0.5, 3.0]).unwrap()).unwrap();
                "num".to_string()
            };
            b.add_node("y", "Div", "", 13, &none, &[Some(&num), Some(&d)]).unwrap();
            (if c == 3 { "Div" } else { "Div (constant numerator)" }, "y", w)
        }
    };
    let h3 = dense(&mut b, &mut rng, y, wy, 3, 0.0);
    b.add_node("r3", "Relu", "", 13, &none, &[Some(&h3)]).unwrap();
    let out = dense(&mut b, &mut rng, "r3", 3, 2, 0.0);
    let g = b.finish(&[&out]).unwrap();
    let center: Vec<f64> = (0..n_in).map(|_| rng.uniform() * 2.0 - 1.0).collect();
    let p = Perturbation::new_ball(Norm::Inf, center, 0.2 + 0.4 * rng.uniform()).unwrap();
    (g, p, op)
}

/// [`gradient_matches_central_differences`] on [`build_adjoint`]'s graphs: the gradient
/// of the final pass's ReLU parameters crosses the operator's adjoint, and must agree
/// with central differences on every coordinate away from a kink; iteration 0 is
/// CROWN, and α-CROWN is sound on sampled inputs and never looser than CROWN.
#[test]
fn adjoint_gradient_matches_central_differences() {
    let mut stats = Stats::default();
    let mut per_op: Vec<(&str, usize)> = Vec::new();
    for seed in 0..40 {
        let (g, p, op) = build_adjoint(seed);
        let inputs = [InputValue::Perturbed(p.clone())];
        let req = BoundRequest::default();
        let what = format!("seed {seed} ({op})");
        let (crown, st) = iteration_zero_is_crown(&g, &inputs, &req, &what);
        let before = stats.nonzero;
        for mut run in st.runs {
            let mut rng = Rng::new(seed ^ 0x5EED ^ run.upper as u64);
            for v in params(&mut run) {
                v.iter_mut().for_each(|x| *x = 0.15 + 0.8 * rng.uniform());
            }
            check_run(&g, &inputs, &req, &run, true, seed, &mut stats);
        }
        alpha_is_sound_and_tighter(&g, &p, &req, &crown, seed, &what);
        match per_op.iter_mut().find(|(o, _)| *o == op) {
            Some((_, n)) => *n += stats.nonzero - before,
            None => per_op.push((op, stats.nonzero - before)),
        }
    }
    eprintln!("non-zero coordinates per operator: {per_op:?}");
    stats.report("adjoint gradient", 100, 0);
    for (op, n) in per_op {
        assert!(n >= 10, "{op}: only {n} non-zero gradient coordinates checked");
    }
}

/// With two threads the lower and upper optimizations run side by side on their own
/// states: the bounds, linear forms and returned parameters must be those of one
/// after the other (one thread), bit for bit.
#[test]
fn sides_in_parallel_match_one_after_the_other() {
    let sshape = (0..SSHAPE_SEEDS).map(|s| (s, Some(if s % 2 == 0 { "Sigmoid" } else { "Tanh" })));
    for (seed, act) in (0..SEEDS).map(|s| (s, None)).chain(sshape) {
        let (g, p) = build_with(seed, act);
        let inputs = [InputValue::Perturbed(p)];
        let req = BoundRequest { return_a: true, ..Default::default() };
        let run = |threads: usize| {
            let o = BoundOptions { threads, ..opts(8) };
            lirpa::compute_bounds_optimized(&g, &inputs, &o, &req, None).unwrap()
        };
        let (seq, seq_state) = run(1);
        let (par, par_state) = run(2);
        let what = format!("seed {seed} ({act:?})");
        let bits = |v: &[f64]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&seq.lower), bits(&par.lower), "{what}: lower bounds");
        assert_eq!(bits(&seq.upper), bits(&par.upper), "{what}: upper bounds");
        assert_eq!(format!("{:?}", seq.a), format!("{:?}", par.a), "{what}: linear forms");
        assert_eq!(format!("{:?}", seq.bias), format!("{:?}", par.bias), "{what}: biases");
        assert_eq!(format!("{:?}", seq_state), format!("{:?}", par_state), "{what}: parameters");
    }
}

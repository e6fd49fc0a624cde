//! β-CROWN: constraints on intermediate nodes ([`NodeConstraint`], a branch-and-bound
//! sub-domain's splits) entering the bound with multipliers β ≥ 0. On random ReLU MLPs
//! and random split sets that a sampled point satisfies (ReLU splits `z ≥ 0`/`z ≤ 0` and
//! general ones `z ≥ t`/`z ≤ t`):
//!
//! - any β ≥ 0 with any α gives a lower bound below every sampled output that satisfies
//!   the splits and below a local-descent minimum over that set;
//! - with every unstable neuron split (the network is linear on the sub-domain), the
//!   optimized bound is within 1e-3 of the exact optimum of the sub-domain's linear
//!   program (solved here by enumerating the vertices of its feasible polytope), and
//!   never above it;
//! - β = 0 reproduces α-CROWN with the same constraints given as clamped intermediate
//!   bounds, bit for bit;
//! - the hand-written gradient in β matches central finite differences;
//! - an infeasible split set that no interval detects drives the bound above any
//!   threshold;
//! - sub-domains bounded as one batch get what each gets alone.

use faer::Mat;
use lirpa::sample::{ReluMlp, Rng, sample_points};
use lirpa::{
    AlphaRun, BoundOptions, BoundRequest, Graph, InputValue, Method, NodeBounds, NodeConstraint, NodeId,
    Perturbation, SubDomain, bound_and_gradient, compute_bounds_keep, compute_bounds_optimized,
    compute_bounds_optimized_batch, compute_bounds_optimized_keep,
};
use std::sync::Arc;

/// A sub-domain of a random MLP: the input box, a point `x0` in it, specification rows
/// and split constraints that `x0` satisfies.
struct Domain {
    mlp: Arc<ReluMlp>,
    lo: Vec<f64>,
    hi: Vec<f64>,
    x0: Vec<f64>,
    c: Vec<Vec<f64>>,
    constraints: Vec<NodeConstraint>,
}

/// Node ids of the hidden layers' pre-activations (`g0`, `g1`, … before a ReLU).
fn hidden(g: &Graph<f64>, layers: usize) -> Vec<NodeId> {
    (0..layers - 1)
        .map(|i| g.nodes().iter().position(|n| n.name == format!("g{i}")).expect("layer node"))
        .collect()
}

impl Domain {
    /// A random domain; each hidden neuron is split with probability `p` (general
    /// thresholds for about a third of them when `general`).
    fn random(seed: u64, p: f64, general: bool) -> Domain {
        let mut rng = Rng::new(1000 + seed);
        let n_in = 2 + (seed % 2) as usize;
        let widths: &[usize] = if seed.is_multiple_of(3) { &[8, 6] } else { &[6, 5] };
        let mlp = Arc::new(ReluMlp::new(seed, n_in, widths, 3).unwrap());
        let centre: Vec<f64> = (0..n_in).map(|_| rng.uniform() * 2.0 - 1.0).collect();
        let eps = 0.3 + 0.7 * rng.uniform();
        let lo: Vec<f64> = centre.iter().map(|c| c - eps).collect();
        let hi: Vec<f64> = centre.iter().map(|c| c + eps).collect();
        let x0: Vec<f64> = lo.iter().zip(&hi).map(|(l, h)| l + (h - l) * rng.uniform()).collect();
        let c = (0..2).map(|_| (0..3).map(|_| rng.uniform() * 2.0 - 1.0).collect()).collect();
        let mut d = Domain { mlp, lo, hi, x0, c, constraints: vec![] };
        d.split(&mut rng, p, general);
        d
    }

    /// Another sub-domain of the same network and box: a new point, new splits.
    fn sibling(&self, seed: u64, p: f64, general: bool) -> Domain {
        let mut rng = Rng::new(5000 + seed);
        let x0 = self.lo.iter().zip(&self.hi).map(|(l, h)| l + (h - l) * rng.uniform()).collect();
        let mlp = self.mlp.clone();
        let mut d = Domain {
            mlp,
            lo: self.lo.clone(),
            hi: self.hi.clone(),
            x0,
            c: self.c.clone(),
            constraints: vec![],
        };
        d.split(&mut rng, p, general);
        d
    }

    /// Split each hidden neuron with probability `p`, the way `x0` lies.
    fn split(&mut self, rng: &mut Rng, p: f64, general: bool) {
        let d = self;
        let z = d.values(&d.x0.clone());
        for node in hidden(&d.mlp.graph, d.mlp.layers.len()) {
            for (index, &v) in z[node].iter().enumerate() {
                if rng.uniform() >= p {
                    continue;
                }
                let (ge, threshold) = if general && rng.uniform() < 0.35 {
                    let ge = rng.uniform() < 0.5;
                    let off = 0.3 * rng.uniform();
                    (ge, if ge { v - off } else { v + off })
                } else {
                    (v >= 0.0, 0.0)
                };
                d.constraints.push(NodeConstraint { node, index, ge, threshold });
            }
        }
    }

    /// Values of every node at `x`.
    fn values(&self, x: &[f64]) -> Vec<Vec<f64>> {
        self.mlp.graph.forward_all(&[x]).unwrap()
    }

    /// Whether `x` satisfies the constraints; then the specification rows' values.
    fn objective(&self, x: &[f64]) -> Option<Vec<f64>> {
        let z = self.values(x);
        if !self.constraints.iter().all(|c| c.holds(z[c.node][c.index])) {
            return None;
        }
        let out = z.last().unwrap();
        Some(self.c.iter().map(|r| r.iter().zip(out).map(|(a, b)| a * b).sum()).collect())
    }

    fn inputs(&self) -> Vec<InputValue<f64>> {
        vec![InputValue::Perturbed(Perturbation::new_box(self.lo.clone(), self.hi.clone()).unwrap())]
    }

    fn spec(&self) -> Mat<f64> {
        Mat::from_fn(self.c.len(), 3, |i, j| self.c[i][j])
    }

    fn opts(&self, iterations: usize) -> BoundOptions {
        let mut o = BoundOptions::with_method(Method::AlphaCrown);
        o.constraints = Some(Arc::new(self.constraints.clone()));
        o.optimize.iterations = iterations;
        o
    }

    /// The lower bounds of the specification rows with the parameters of `run`.
    fn bound(&self, opts: &BoundOptions, run: &AlphaRun<f64>) -> (Vec<f64>, AlphaRun<f64>) {
        let c = self.spec();
        let req = BoundRequest { c: Some(c.as_ref()), upper: false, ..Default::default() };
        bound_and_gradient(&self.mlp.graph, &self.inputs(), opts, &req, run).unwrap()
    }

    /// The parameter layout of a lower-bound run (CROWN-initialized, β = 0).
    fn layout(&self, opts: &BoundOptions) -> AlphaRun<f64> {
        let c = self.spec();
        let req = BoundRequest { c: Some(c.as_ref()), upper: false, ..Default::default() };
        let one = BoundOptions {
            optimize: lirpa::OptimizeOptions { iterations: 1, ..opts.optimize },
            ..opts.clone()
        };
        let (_, st) = compute_bounds_optimized(&self.mlp.graph, &self.inputs(), &one, &req, None).unwrap();
        st.runs.into_iter().next().unwrap()
    }

    /// Per row, the minimum over sampled points satisfying the constraints, refined by
    /// random local descent that stays in the set; and how many samples satisfied them.
    fn sampled_minimum(&self, seed: u64) -> (Vec<f64>, usize) {
        let ptb = Perturbation::new_box(self.lo.clone(), self.hi.clone()).unwrap();
        let mut best: Vec<(f64, Vec<f64>)> = vec![(f64::INFINITY, self.x0.clone()); self.c.len()];
        let mut feasible = 0;
        for x in std::iter::once(self.x0.clone()).chain(sample_points(&ptb, 3000, seed)) {
            let Some(v) = self.objective(&x) else { continue };
            feasible += 1;
            for (b, &vr) in best.iter_mut().zip(&v) {
                if vr < b.0 {
                    *b = (vr, x.clone());
                }
            }
        }
        let mut rng = Rng::new(seed ^ 0x5eed);
        for (r, (val, x)) in best.iter_mut().enumerate() {
            for step in [0.1, 0.03, 0.01, 0.003, 0.001] {
                for _ in 0..150 {
                    let cand: Vec<f64> = (0..x.len())
                        .map(|i| {
                            let s = step * (self.hi[i] - self.lo[i]) * (rng.uniform() * 2.0 - 1.0);
                            (x[i] + s).clamp(self.lo[i], self.hi[i])
                        })
                        .collect();
                    if let Some(v) = self.objective(&cand)
                        && v[r] < *val
                    {
                        *val = v[r];
                        *x = cand;
                    }
                }
            }
        }
        (best.into_iter().map(|b| b.0).collect(), feasible)
    }
}

/// Random relaxation parameters in `[0, 1]` (projected onto each relaxation's feasible
/// set by the engine) and random multipliers in `[0, scale]`, a third of them 0.
fn randomize(run: &mut AlphaRun<f64>, rng: &mut Rng, scale: f64) {
    for p in run.passes.iter_mut().flat_map(|p| p.nodes.iter_mut()) {
        for v in [&mut p.lower, &mut p.upper].into_iter().flatten() {
            v.iter_mut().for_each(|x| *x = rng.uniform());
        }
    }
    for b in run.beta.iter_mut().flat_map(|b| b.values.iter_mut()) {
        *b = if rng.uniform() < 0.33 { 0.0 } else { scale * rng.uniform() };
    }
}

fn tol(v: f64) -> f64 {
    1e-9 * (1.0 + v.abs())
}

#[test]
fn any_beta_and_alpha_bound_below_every_point_of_the_subdomain() {
    let (mut checked, mut feasible_total) = (0, 0);
    for seed in 0..24 {
        let d = Domain::random(seed, 0.4, seed % 2 == 0);
        let opts = d.opts(1);
        let mut run = d.layout(&opts);
        assert_eq!(
            run.beta.as_ref().map_or(0, |b| b.constraints.len()),
            d.constraints.len(),
            "seed {seed}: one multiplier per constraint"
        );
        let (minimum, feasible) = d.sampled_minimum(seed);
        feasible_total += feasible;
        let mut rng = Rng::new(seed);
        for trial in 0..8 {
            randomize(&mut run, &mut rng, [0.3, 1.0, 3.0, 10.0][trial % 4]);
            let (bound, _) = d.bound(&opts, &run);
            for (r, (&b, &m)) in bound.iter().zip(&minimum).enumerate() {
                assert!(
                    b <= m + tol(m),
                    "seed {seed} trial {trial} row {r}: bound {b} above the sub-domain's minimum {m}"
                );
                checked += 1;
            }
        }
    }
    assert!(checked >= 300 && feasible_total >= 5_000, "{checked} bounds, {feasible_total} feasible samples");
}

/// An affine function of the input: `rows × n` coefficients and offsets.
#[derive(Clone)]
struct Affine {
    a: Vec<Vec<f64>>,
    b: Vec<f64>,
}

impl Affine {
    fn at(&self, x: &[f64]) -> Vec<f64> {
        self.a
            .iter()
            .zip(&self.b)
            .map(|(r, b)| r.iter().zip(x).map(|(p, q)| p * q).sum::<f64>() + b)
            .collect()
    }
}

/// The network on the activation pattern of `x0`: the affine pre-activations of each
/// hidden layer and the affine output.
fn linearized(mlp: &ReluMlp, x0: &[f64]) -> (Vec<Affine>, Affine) {
    let n = x0.len();
    let mut h = Affine {
        a: (0..n).map(|i| (0..n).map(|j| (i == j) as u8 as f64).collect()).collect(),
        b: vec![0.0; n],
    };
    let mut pre = Vec::new();
    for (k, (w, bias)) in mlp.layers.iter().enumerate() {
        let z = Affine {
            a: w.iter()
                .map(|row| (0..n).map(|j| row.iter().zip(&h.a).map(|(wi, hr)| wi * hr[j]).sum()).collect())
                .collect(),
            b: w.iter()
                .zip(bias)
                .map(|(row, b)| row.iter().zip(&h.b).map(|(wi, hb)| wi * hb).sum::<f64>() + b)
                .collect(),
        };
        if k + 1 == mlp.layers.len() {
            return (pre, z);
        }
        let active: Vec<bool> = z.at(x0).iter().map(|v| *v > 0.0).collect();
        h = Affine {
            a: z.a.iter().zip(&active).map(|(r, &on)| if on { r.clone() } else { vec![0.0; n] }).collect(),
            b: z.b.iter().zip(&active).map(|(&b, &on)| if on { b } else { 0.0 }).collect(),
        };
        pre.push(z);
    }
    unreachable!("the MLP has an output layer")
}

/// `min c·x + c0` subject to `g·x ≥ h` (each row) and the box, by enumerating the
/// vertices of the feasible polytope (`n ≤ 3`): exact up to rounding.
fn lp_min(obj: &[f64], c0: f64, rows: &[(Vec<f64>, f64)], lo: &[f64], hi: &[f64]) -> Option<f64> {
    let n = obj.len();
    let mut all: Vec<(Vec<f64>, f64)> = rows.to_vec();
    for i in 0..n {
        let e: Vec<f64> = (0..n).map(|j| (i == j) as u8 as f64).collect();
        all.push((e.clone(), lo[i]));
        all.push((e.iter().map(|v| -v).collect(), -hi[i]));
    }
    let feasible = |x: &[f64]| {
        all.iter()
            .all(|(g, h)| g.iter().zip(x).map(|(a, b)| a * b).sum::<f64>() >= h - 1e-9 * (1.0 + h.abs()))
    };
    let mut best: Option<f64> = None;
    let mut pick = vec![0usize; n];
    let m = all.len();
    // Every n-subset of the constraints, active: solve by Gaussian elimination.
    fn next(pick: &mut [usize], m: usize) -> bool {
        let n = pick.len();
        for i in (0..n).rev() {
            if pick[i] < m - n + i {
                pick[i] += 1;
                for j in i + 1..n {
                    pick[j] = pick[j - 1] + 1;
                }
                return true;
            }
        }
        false
    }
    for (i, p) in pick.iter_mut().enumerate() {
        *p = i;
    }
    loop {
        let mut a: Vec<Vec<f64>> = pick
            .iter()
            .map(|&k| {
                let mut r = all[k].0.clone();
                r.push(all[k].1);
                r
            })
            .collect();
        let mut ok = true;
        for col in 0..n {
            let piv = (col..n).max_by(|&p, &q| a[p][col].abs().total_cmp(&a[q][col].abs())).unwrap();
            if a[piv][col].abs() < 1e-12 {
                ok = false;
                break;
            }
            a.swap(col, piv);
            for r in 0..n {
                if r != col {
                    let f = a[r][col] / a[col][col];
                    let pivot_row = a[col].clone();
                    for (x, p) in a[r].iter_mut().zip(&pivot_row).skip(col) {
                        *x -= f * p;
                    }
                }
            }
        }
        if ok {
            let x: Vec<f64> = (0..n).map(|i| a[i][n] / a[i][i]).collect();
            if feasible(&x) {
                let v = obj.iter().zip(&x).map(|(p, q)| p * q).sum::<f64>() + c0;
                best = Some(best.map_or(v, |b: f64| b.min(v)));
            }
        }
        if !next(&mut pick, m) {
            return best;
        }
    }
}

#[test]
fn fully_split_subdomain_bound_reaches_the_lp_optimum() {
    let mut worst_gap: f64 = 0.0;
    let mut cases = 0;
    for seed in 0..12 {
        let mut d = Domain::random(seed, 0.0, false);
        let nodes = hidden(&d.mlp.graph, d.mlp.layers.len());
        let z0 = d.values(&d.x0.clone());
        // Split every neuron the sub-domain's CROWN bounds leave unstable, on the side of
        // x0, until none is left; add a general constraint on a third of the others.
        let mut rng = Rng::new(seed);
        for _ in 0..10 {
            let crown = BoundOptions {
                method: Method::Crown,
                constraints: Some(Arc::new(d.constraints.clone())),
                ..Default::default()
            };
            let (_, inter) =
                compute_bounds_keep(&d.mlp.graph, &d.inputs(), &crown, &BoundRequest::default()).unwrap();
            let mut added = 0;
            for &node in &nodes {
                let (l, u) = inter[node].as_ref().expect("hidden bounds");
                for j in 0..l.len() {
                    if l[j] < 0.0
                        && u[j] > 0.0
                        && !d.constraints.iter().any(|c| c.node == node && c.index == j)
                    {
                        d.constraints.push(NodeConstraint {
                            node,
                            index: j,
                            ge: z0[node][j] >= 0.0,
                            threshold: 0.0,
                        });
                        added += 1;
                    }
                }
            }
            if added == 0 {
                break;
            }
        }
        for &node in &nodes {
            for (j, &v) in z0[node].iter().enumerate() {
                if !d.constraints.iter().any(|c| c.node == node && c.index == j) && rng.uniform() < 0.33 {
                    let ge = rng.uniform() < 0.5;
                    let off = 0.2 * rng.uniform();
                    d.constraints.push(NodeConstraint {
                        node,
                        index: j,
                        ge,
                        threshold: if ge { v - off } else { v + off },
                    });
                }
            }
        }
        // The linear program of the sub-domain.
        let (pre, out) = linearized(&d.mlp, &d.x0);
        let rows: Vec<(Vec<f64>, f64)> = d
            .constraints
            .iter()
            .map(|c| {
                let layer = nodes.iter().position(|&n| n == c.node).unwrap();
                let s = c.sign();
                let g: Vec<f64> = pre[layer].a[c.index].iter().map(|v| s * v).collect();
                (g, s * (c.threshold - pre[layer].b[c.index]))
            })
            .collect();
        let mut opts = d.opts(1000);
        opts.optimize.lr_beta = 0.5;
        opts.optimize.lr_decay = 0.995;
        opts.optimize.early_stop_patience = 0;
        let c = d.spec();
        let req = BoundRequest { c: Some(c.as_ref()), upper: false, ..Default::default() };
        let (res, _) = compute_bounds_optimized(&d.mlp.graph, &d.inputs(), &opts, &req, None).unwrap();
        for (r, cr) in d.c.iter().enumerate() {
            let obj: Vec<f64> =
                (0..d.lo.len()).map(|j| cr.iter().zip(&out.a).map(|(ci, orow)| ci * orow[j]).sum()).collect();
            let c0: f64 = cr.iter().zip(&out.b).map(|(ci, b)| ci * b).sum();
            let lp = lp_min(&obj, c0, &rows, &d.lo, &d.hi).expect("x0 is feasible");
            let b = res.lower[r];
            assert!(
                b <= lp + 1e-7 * (1.0 + lp.abs()),
                "seed {seed} row {r}: bound {b} above the LP optimum {lp}"
            );
            assert!(
                b >= lp - 1e-3,
                "seed {seed} row {r}: bound {b} more than 1e-3 below the LP optimum {lp}"
            );
            worst_gap = worst_gap.max(lp - b);
            cases += 1;
        }
    }
    assert!(cases >= 24);
    eprintln!("worst gap to the LP optimum over {cases} rows: {worst_gap:.3e}");
}

#[test]
fn beta_zero_is_alpha_crown_with_clamped_bounds() {
    for seed in 0..10 {
        let d = Domain::random(seed, 0.4, seed % 2 == 1);
        let mut with_beta = d.opts(10);
        with_beta.optimize.lr_beta = 0.0;
        // The same constraints as known intermediate bounds.
        let mut nb = NodeBounds::default();
        for c in &d.constraints {
            let n = d.mlp.graph.node(c.node).numel();
            let entry = match nb.nodes.iter_mut().position(|(id, _, _)| *id == c.node) {
                Some(k) => &mut nb.nodes[k],
                None => {
                    nb.nodes.push((c.node, vec![f64::NEG_INFINITY; n], vec![f64::INFINITY; n]));
                    nb.nodes.last_mut().unwrap()
                }
            };
            if c.ge {
                entry.1[c.index] = entry.1[c.index].max(c.threshold);
            } else {
                entry.2[c.index] = entry.2[c.index].min(c.threshold);
            }
        }
        let clamped =
            BoundOptions { constraints: None, node_bounds: Some(Arc::new(nb)), ..with_beta.clone() };
        let c = d.spec();
        let req = BoundRequest { c: Some(c.as_ref()), ..Default::default() };
        let (a, sa) = compute_bounds_optimized(&d.mlp.graph, &d.inputs(), &with_beta, &req, None).unwrap();
        let (b, _) = compute_bounds_optimized(&d.mlp.graph, &d.inputs(), &clamped, &req, None).unwrap();
        assert_eq!((&a.lower, &a.upper), (&b.lower, &b.upper), "seed {seed}");
        assert!(sa.runs.iter().all(|r| r.beta.as_ref().is_some_and(|b| b.values.iter().all(|v| *v == 0.0))));
    }
}

#[test]
fn beta_gradient_matches_central_differences() {
    let (mut checked, mut kinks) = (0, 0);
    for seed in 0..16 {
        let d = Domain::random(seed, 0.5, seed % 2 == 0);
        let opts = d.opts(1);
        let mut run = d.layout(&opts);
        let mut rng = Rng::new(seed + 77);
        randomize(&mut run, &mut rng, 2.0);
        for v in run.beta.iter_mut().flat_map(|b| b.values.iter_mut()) {
            *v += 0.05; // away from the projection at 0
        }
        let (b0, grad) = d.bound(&opts, &run);
        let g = grad.beta.expect("gradient in β").values;
        let sum = |b: &[f64]| b.iter().sum::<f64>();
        for (k, &gk) in g.iter().enumerate() {
            let beta = run.beta.as_ref().unwrap().values[k];
            let h = 1e-6 * (1.0 + beta);
            let shifted = |delta: f64| {
                let mut r = run.clone();
                r.beta.as_mut().unwrap().values[k] += delta;
                sum(&d.bound(&opts, &r).0)
            };
            let (plus, minus) = (shifted(h), shifted(-h));
            let (right, left) = ((plus - sum(&b0)) / h, (sum(&b0) - minus) / h);
            if (right - left).abs() > 1e-5 * (1.0 + right.abs()) {
                kinks += 1;
                continue;
            }
            let fd = (plus - minus) / (2.0 * h);
            assert!(
                (gk - fd).abs() <= 1e-5 * (1.0 + fd.abs()),
                "seed {seed} β {k}: gradient {gk} but finite differences {fd}"
            );
            if fd != 0.0 {
                checked += 1;
            }
        }
    }
    assert!(checked >= 100, "{checked} non-zero coordinates checked ({kinks} at kinks)");
}

#[test]
fn infeasible_splits_drive_the_bound_above_any_threshold() {
    use lirpa::core::{Attr, Attributes, GraphBuilder, TensorData};
    // y = relu(x) + relu(x − 0.5) on x ∈ [−1, 1]; the splits x ≤ 0 and x − 0.5 ≥ 0 hold
    // nowhere, but each interval alone is non-empty.
    let mut b = GraphBuilder::<f64>::new();
    b.add_input("x", &[1, 1]).unwrap();
    b.add_constant("w0", TensorData::float(&[2, 1], vec![1.0, 1.0]).unwrap()).unwrap();
    b.add_constant("b0", TensorData::float(&[2], vec![0.0, -0.5]).unwrap()).unwrap();
    b.add_constant("w1", TensorData::float(&[1, 2], vec![1.0, 1.0]).unwrap()).unwrap();
    let mut t = Attributes::default();
    t.insert("transB", Attr::Int(1));
    b.add_node("g0", "Gemm", "", 13, &t, &[Some("x"), Some("w0"), Some("b0")]).unwrap();
    b.add_node("r0", "Relu", "", 13, &Attributes::default(), &[Some("g0")]).unwrap();
    b.add_node("g1", "Gemm", "", 13, &t, &[Some("r0"), Some("w1"), None]).unwrap();
    let g = b.finish(&["g1"]).unwrap();
    let node = g.nodes().iter().position(|n| n.name == "g0").unwrap();
    let constraints = vec![
        NodeConstraint { node, index: 0, ge: false, threshold: 0.0 },
        NodeConstraint { node, index: 1, ge: true, threshold: 0.0 },
    ];
    let inputs = vec![InputValue::Perturbed(Perturbation::new_box(vec![-1.0], vec![1.0]).unwrap())];
    let mut opts = BoundOptions::with_method(Method::AlphaCrown);
    opts.constraints = Some(Arc::new(constraints));
    let crown = BoundOptions { method: Method::Crown, ..opts.clone() };
    let (plain, inter) = compute_bounds_keep(&g, &inputs, &crown, &BoundRequest::default()).unwrap();
    assert!(!NodeBounds::infeasible(&inter), "the intervals alone do not show it");
    assert!(plain.lower[0] <= 0.0, "without β the bound stays at most the output's range");
    opts.optimize.iterations = 100;
    opts.optimize.lr_beta = 1.0;
    opts.optimize.lr_decay = 1.0;
    opts.optimize.early_stop_patience = 0;
    let (res, _) = compute_bounds_optimized(&g, &inputs, &opts, &BoundRequest::default(), None).unwrap();
    // The output is at most 1.5 on the box: a lower bound of 10 proves the set empty.
    assert!(res.lower[0] > 10.0, "lower bound {} after 100 steps", res.lower[0]);
}

/// Sub-domains bounded as one batch (their rows stacked in one optimization) get the
/// bounds, parameters and linear forms of bounding each alone: each group's relaxations
/// use its own intermediate bounds and its β only its own splits (a sibling's split
/// does not hold on it: leaking its multiplier would change, and could unsound, the
/// bound).
#[test]
fn batched_subdomains_match_one_at_a_time() {
    for seed in 0..8 {
        let base = Domain::random(seed, 0.3, seed % 2 == 1);
        let domains: Vec<Domain> = (0..4)
            .map(|k| {
                if k == 0 {
                    base.sibling(99, 0.0, false)
                } else {
                    base.sibling(seed * 10 + k, 0.3, k % 2 == 1)
                }
            })
            .collect();
        // Each domain's intermediate bounds (CROWN with its splits clamped), given as fixed.
        let setups: Vec<(BoundOptions, Mat<f64>)> = domains
            .iter()
            .map(|d| {
                let mut o = d.opts(6);
                o.optimize.lr_alpha = 0.05;
                o.optimize.lr_beta = 0.1;
                let c = d.spec();
                let crown = BoundOptions { method: Method::Crown, ..o.clone() };
                let req = BoundRequest { c: Some(c.as_ref()), upper: false, ..Default::default() };
                let (_, inter) = compute_bounds_keep(&d.mlp.graph, &d.inputs(), &crown, &req).unwrap();
                let nodes =
                    inter.into_iter().enumerate().filter_map(|(id, b)| b.map(|(l, u)| (id, l, u))).collect();
                o.node_bounds = Some(Arc::new(NodeBounds { nodes }));
                o.fixed_node_bounds = true;
                (o, c)
            })
            .collect();
        let opts = &setups[0].0;
        let subs: Vec<SubDomain<'_, f64>> = setups
            .iter()
            .map(|(o, c)| SubDomain {
                c: c.as_ref(),
                node_bounds: o.node_bounds.clone(),
                constraints: o.constraints.clone(),
                warm: None,
            })
            .collect();
        let req = BoundRequest { c: None, upper: false, return_a: true, ..Default::default() };
        let batch =
            compute_bounds_optimized_batch(&base.mlp.graph, &base.inputs(), opts, &req, &subs).unwrap();
        for (k, ((o, c), (res, st, _))) in setups.iter().zip(&batch).enumerate() {
            let one = BoundRequest { c: Some(c.as_ref()), ..req };
            let (r1, s1, _) =
                compute_bounds_optimized_keep(&base.mlp.graph, &base.inputs(), o, &one, None).unwrap();
            for (a, b) in res.lower.iter().zip(&r1.lower) {
                assert!((a - b).abs() <= tol(*b), "seed {seed} domain {k}: batched {a} alone {b}");
            }
            let (b, b1) = (st.runs[0].beta.as_ref(), s1.runs[0].beta.as_ref());
            assert_eq!(b.map(|b| &b.constraints), b1.map(|b| &b.constraints), "seed {seed} domain {k}");
            for (x, y) in b.iter().flat_map(|b| &b.values).zip(b1.iter().flat_map(|b| &b.values)) {
                assert!((x - y).abs() <= tol(*y), "seed {seed} domain {k}: β {x} vs {y}");
            }
            let (a, a1) = (res.a[0].a.lower.as_ref().unwrap(), r1.a[0].a.lower.as_ref().unwrap());
            assert_eq!((a.nrows(), a.ncols()), (a1.nrows(), a1.ncols()));
            for i in 0..a.nrows() {
                for j in 0..a.ncols() {
                    assert!((a[(i, j)] - a1[(i, j)]).abs() <= tol(a1[(i, j)]), "seed {seed} domain {k}: A");
                }
            }
            assert_eq!(res.node_a.len(), r1.node_a.len(), "seed {seed} domain {k}");
        }
    }
}

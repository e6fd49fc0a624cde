//! Property tests of the products of perturbed tensors and the attention operators
//! (plugins `lirpa-ops-bilinear` and `lirpa-ops-attention`) on random small graphs
//! built through the registry: element-wise products with and without broadcasting,
//! squares, batched `x·yᵀ` and `softmax·v` products (with a broadcast batch), a
//! constant left factor of MatMul, Div by
//! a positive perturbed value or of a constant, Softmax, reductions, ReLU, fan-out.
//!
//! Soundness: the output at every sampled input lies inside the IBP, CROWN and
//! CROWN-IBP bounds (f64). Every value has shape `[b, m, c]` (`c` varies). Input sets:
//! L∞ balls or boxes with some degenerate coordinates, radii log-uniform in
//! `[1e-3, 50]` (saturated softmaxes, large products).
//!
//! Case count: `PROPTEST_CASES`; seed: `PROPTEST_RNG_SEED`.

use lirpa::core::{Attr, Attributes, DType, GraphBuilder, TensorData};
use lirpa::sample::{Rng, sample_points};
use lirpa::{BoundOptions, BoundRequest, Graph, InputValue, Method, Norm, Perturbation};
use proptest::prelude::*;

#[derive(Clone, Debug)]
struct Step {
    kind: u8,
    a: usize,
    b: usize,
    width: usize,
}

#[derive(Clone, Debug)]
struct Spec {
    b: usize,
    m: usize,
    c: usize,
    steps: Vec<Step>,
    seed: u64,
    boxed: bool,
    radius: f64,
}

fn arb_spec() -> impl Strategy<Value = Spec> {
    let step = (0u8..14, 0usize..64, 0usize..64, 1usize..4).prop_map(|(kind, a, b, width)| Step {
        kind,
        a,
        b,
        width,
    });
    (
        1usize..3,
        1usize..4,
        1usize..4,
        prop::collection::vec(step, 1..7),
        any::<u64>(),
        any::<bool>(),
        -3.0f64..1.7,
    )
        .prop_map(|(b, m, c, steps, seed, boxed, radius)| Spec {
            b,
            m,
            c,
            steps,
            seed,
            boxed,
            radius: 10f64.powf(radius),
        })
}

struct Builder {
    g: GraphBuilder<f64>,
    rng: Rng,
    n: usize,
    m: usize,
}

impl Builder {
    fn name(&mut self, p: &str) -> String {
        self.n += 1;
        format!("{p}{}", self.n)
    }
    fn konst(&mut self, shape: &[usize], lo: f64, hi: f64) -> String {
        let name = self.name("c");
        let n: usize = shape.iter().product();
        let data = (0..n).map(|_| lo + (hi - lo) * self.rng.uniform()).collect();
        self.g.add_constant(&name, TensorData::float(shape, data).unwrap()).unwrap();
        name
    }
    fn op(&mut self, op: &str, attrs: &[(&str, Attr)], inputs: &[&str]) -> String {
        let name = self.name("v");
        let mut at = Attributes::default();
        for (k, v) in attrs {
            at.insert(*k, v.clone());
        }
        let ins: Vec<Option<&str>> = inputs.iter().map(|s| Some(*s)).collect();
        self.g.add_node(&name, op, "", 13, &at, &ins).unwrap();
        name
    }
    /// `v · W + bias`: `[b, m, c] → [b, m, w]` (MatMul by a constant, Add).
    fn proj(&mut self, v: &(String, usize), w: usize) -> (String, usize) {
        let wt = self.konst(&[v.1, w], -1.2, 1.2);
        let bias = self.konst(&[w], -0.5, 0.5);
        let p = self.op("MatMul", &[], &[&v.0, &wt]);
        (self.op("Add", &[], &[&p, &bias]), w)
    }
    fn fit(&mut self, v: &(String, usize), w: usize) -> (String, usize) {
        if v.1 == w { v.clone() } else { self.proj(v, w) }
    }
    fn transpose(&mut self, v: &str) -> String {
        self.op("Transpose", &[("perm", Attr::Ints(vec![0, 2, 1]))], &[v])
    }
    /// A strictly positive value of width `w`: `softmax(proj(u)) + 0.25`.
    fn positive(&mut self, u: &(String, usize), w: usize) -> String {
        let p = self.fit(u, w);
        let s = self.op("Softmax", &[("axis", Attr::Int(-1))], &[&p.0]);
        let c = self.konst(&[1], 0.25, 0.25);
        self.op("Add", &[], &[&s, &c])
    }
}

fn build(spec: &Spec) -> Graph<f64> {
    let mut bd = Builder { g: GraphBuilder::new(), rng: Rng::new(spec.seed), n: 0, m: spec.m };
    bd.g.add_input("x", &[spec.b, spec.m, spec.c]).unwrap();
    let mut vals: Vec<(String, usize)> = vec![("x".into(), spec.c)];
    for s in &spec.steps {
        let v = vals[s.a % vals.len()].clone();
        let u = vals[s.b % vals.len()].clone();
        let next = match s.kind {
            0 => bd.proj(&v, s.width),
            1 => {
                // Element-wise product of two perturbed values of one shape.
                let u = bd.fit(&u, v.1);
                (bd.op("Mul", &[], &[&v.0, &u.0]), v.1)
            }
            2 => {
                // Broadcast product with a [b, 1, c] value (a mean over the sequence).
                let u = bd.fit(&u, v.1);
                let r = bd.op(
                    "ReduceMean",
                    &[("axes", Attr::Ints(vec![1])), ("keepdims", Attr::Int(1))],
                    &[&u.0],
                );
                (bd.op("Mul", &[], &[&r, &v.0]), v.1)
            }
            3 => {
                // Scores v·uᵀ: [b, m, m].
                let u = bd.fit(&u, v.1);
                let t = bd.transpose(&u.0);
                (bd.op("MatMul", &[], &[&v.0, &t]), bd.m)
            }
            4 => (bd.op("Softmax", &[("axis", Attr::Int(-1))], &[&v.0]), v.1),
            5 => {
                // Attention-style a·u with a: [b, m, m].
                let a = bd.fit(&v, bd.m);
                (bd.op("MatMul", &[], &[&a.0, &u.0]), u.1)
            }
            6 => {
                let d = bd.positive(&u, v.1);
                (bd.op("Div", &[], &[&v.0, &d]), v.1)
            }
            7 => (bd.op("Mul", &[], &[&v.0, &v.0]), v.1),
            8 => (bd.op("Relu", &[], &[&v.0]), v.1),
            9 => {
                let op = if s.width % 2 == 0 { "ReduceMax" } else { "ReduceMin" };
                (bd.op(op, &[("axes", Attr::Ints(vec![-1])), ("keepdims", Attr::Int(1))], &[&v.0]), 1)
            }
            10 => {
                // A constant divided by a positive perturbed value.
                let d = bd.positive(&v, v.1);
                let c = bd.konst(&[v.1], -2.0, 2.0);
                (bd.op("Div", &[], &[&c, &d]), v.1)
            }
            13 => {
                // LayerNormalization over the last axis, with a constant scale and bias.
                let g = bd.konst(&[v.1], -1.5, 1.5);
                let be = bd.konst(&[v.1], -0.5, 0.5);
                let eps = if s.width % 2 == 0 { 1e-5 } else { 0.1 };
                let attrs = [("axis", Attr::Int(-1)), ("epsilon", Attr::Float(eps))];
                (bd.op("LayerNormalization", &attrs, &[&v.0, &g, &be]), v.1)
            }
            12 => {
                // A constant left factor: C·v with C of shape [m, m] (broadcast batch).
                let c = bd.konst(&[bd.m, bd.m], -1.0, 1.0);
                (bd.op("MatMul", &[], &[&c, &v.0]), v.1)
            }
            _ => {
                // A batched product with a broadcast batch: u summed over the batch.
                let u = bd.fit(&u, v.1);
                // ReduceSum takes its axes as an input from opset 13 on.
                let name = bd.name("axes");
                bd.g.add_constant(&name, TensorData::new(&[1], DType::Int, vec![0.0]).unwrap()).unwrap();
                let r = bd.op("ReduceSum", &[("keepdims", Attr::Int(1))], &[&u.0, &name]);
                let t = bd.transpose(&r);
                (bd.op("MatMul", &[], &[&v.0, &t]), bd.m)
            }
        };
        vals.push(next);
    }
    let out = vals.last().unwrap().0.clone();
    bd.g.finish(&[&out]).unwrap()
}

fn perturbation(spec: &Spec) -> Perturbation<f64> {
    let mut rng = Rng::new(spec.seed ^ 0x5EED);
    let n = spec.b * spec.m * spec.c;
    let center: Vec<f64> = (0..n).map(|_| rng.uniform() * 2.0 - 1.0).collect();
    if spec.boxed {
        // Per-element radii, some degenerate.
        let r: Vec<f64> =
            (0..n).map(|_| if rng.below(4) == 0 { 0.0 } else { rng.uniform() * spec.radius }).collect();
        Perturbation::new_box(
            center.iter().zip(&r).map(|(c, r)| c - r).collect(),
            center.iter().zip(&r).map(|(c, r)| c + r).collect(),
        )
        .unwrap()
    } else {
        Perturbation::new_ball(Norm::Inf, center, spec.radius).unwrap()
    }
}

fn tol(x: f64) -> f64 {
    1e-9 * (1.0 + x.abs())
}

proptest! {
    #[test]
    fn sampled_outputs_lie_inside_bilinear_bounds(spec in arb_spec()) {
        let g = build(&spec);
        let p = perturbation(&spec);
        let out = g.output().unwrap();
        let points = sample_points(&p, 64, spec.seed);
        for method in [Method::Ibp, Method::Crown, Method::CrownIbp] {
            let opts = BoundOptions::with_method(method);
            let r = lirpa::compute_bounds(&g, &[InputValue::Perturbed(p.clone())], &opts, &BoundRequest::default())
                .unwrap();
            for x in &points {
                let y = g.forward(&[x], out).unwrap();
                for (i, &yi) in y.iter().enumerate() {
                    prop_assert!(r.lower[i] <= yi + tol(yi) && yi <= r.upper[i] + tol(yi),
                        "{method}: output {i}: {} not in [{}, {}]", yi, r.lower[i], r.upper[i]);
                }
            }
        }
    }
}

/// Hand-derived: `z = x·y` with `x ∈ [1, 2]`, `y ∈ [-1, 3]` (one box input `v` of
/// shape [2], `x = v[0]`, `y = v[1]` by Gather). McCormick lower plane
/// `y_l·x + x_l·y − x_l·y_l = −x + y + 1`, minimised over the box at `x = 2, y = −1`:
/// −2, which is the true minimum `2·(−1)`. Upper plane `y_u·x + x_l·y − x_l·y_u =
/// 3x + y − 3`, maximised at `x = 2, y = 3`: 6, the true maximum `2·3`.
#[test]
fn mccormick_planes_hand_derived() {
    let mut b = GraphBuilder::<f64>::new();
    b.add_input("v", &[2]).unwrap();
    let none = Attributes::default();
    let idx0 = TensorData::new(&[1], DType::Int, vec![0.0]).unwrap();
    let idx1 = TensorData::new(&[1], DType::Int, vec![1.0]).unwrap();
    b.add_constant("i0", idx0).unwrap();
    b.add_constant("i1", idx1).unwrap();
    b.add_node("x", "Gather", "", 13, &none, &[Some("v"), Some("i0")]).unwrap();
    b.add_node("y", "Gather", "", 13, &none, &[Some("v"), Some("i1")]).unwrap();
    b.add_node("z", "Mul", "", 13, &none, &[Some("x"), Some("y")]).unwrap();
    let g = b.finish(&["z"]).unwrap();
    let p = Perturbation::new_box(vec![1.0, -1.0], vec![2.0, 3.0]).unwrap();
    let r = lirpa::compute_bounds(
        &g,
        &[InputValue::Perturbed(p)],
        &BoundOptions::with_method(Method::Crown),
        &BoundRequest::default(),
    )
    .unwrap();
    assert!(
        (r.lower[0] + 2.0).abs() < 1e-9 && (r.upper[0] - 6.0).abs() < 1e-9,
        "{:?} {:?}",
        r.lower,
        r.upper
    );
}

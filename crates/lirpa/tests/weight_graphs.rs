//! Property test: random small MLPs of Gemm (random `transA` on the first layer,
//! `transB`, `alpha`, `beta`, broadcast or full bias, or no bias) and MatMul layers with
//! ReLU between them, where random initializers (weights and biases) are graph inputs
//! with random sets (box, L∞, L2, L1 balls) and the model input is perturbed, exact, or
//! a constant (then the first product has a constant `A` and a perturbed weight).
//! Weights and inputs are sampled from their sets (independently) and evaluated with
//! `Graph::forward_all`; every method's bounds must contain every sampled output.
//!
//! Case count: `PROPTEST_CASES`; seed: `PROPTEST_RNG_SEED`.

use lirpa::core::{Attr, Attributes, GraphBuilder, TensorData};
use lirpa::sample::{Rng, sample_points};
use lirpa::{BoundOptions, BoundRequest, Graph, InputValue, Method, Norm, Perturbation};
use proptest::prelude::*;
use std::collections::HashMap;

#[derive(Clone, Debug)]
struct Layer {
    /// 0, 1: Gemm; 2: MatMul.
    kind: u8,
    width: usize,
    trans_b: bool,
    /// Index into `ALPHAS` / `BETAS`.
    alpha: usize,
    beta: usize,
    /// 0: no bias, 1: bias `[width]`, 2: bias `[rows, width]`.
    bias: u8,
    perturb_w: bool,
    perturb_b: bool,
}

#[derive(Clone, Debug)]
struct Spec {
    rows: usize,
    n_in: usize,
    trans_a: bool,
    layers: Vec<Layer>,
    perturb_x: bool,
    seed: u64,
    radius: f64,
}

const ALPHAS: [f64; 3] = [1.0, 0.5, -1.5];
const BETAS: [f64; 2] = [1.0, -0.7];

fn arb_spec() -> impl Strategy<Value = Spec> {
    let layer =
        (0u8..3, 1usize..5, any::<bool>(), 0usize..3, 0usize..2, 0u8..3, any::<bool>(), any::<bool>())
            .prop_map(|(kind, width, trans_b, alpha, beta, bias, perturb_w, perturb_b)| Layer {
                kind,
                width,
                trans_b,
                alpha,
                beta,
                bias,
                perturb_w,
                perturb_b,
            });
    (
        1usize..3,
        1usize..5,
        any::<bool>(),
        prop::collection::vec(layer, 1..4),
        any::<bool>(),
        any::<u64>(),
        0.01f64..0.6,
    )
        .prop_map(|(rows, n_in, trans_a, layers, perturb_x, seed, radius)| Spec {
            rows,
            n_in,
            trans_a,
            layers,
            perturb_x,
            seed,
            radius,
        })
}

/// A random set around `center`: box, L∞, L2 or L1 ball.
fn random_set(rng: &mut Rng, center: Vec<f64>, radius: f64) -> Perturbation<f64> {
    match rng.next_u64() % 4 {
        0 => {
            let r: Vec<f64> = center.iter().map(|_| rng.uniform() * radius).collect();
            Perturbation::new_box(
                center.iter().zip(&r).map(|(c, r)| c - r).collect(),
                center.iter().zip(&r).map(|(c, r)| c + r).collect(),
            )
            .unwrap()
        }
        1 => Perturbation::new_ball(Norm::Inf, center, radius).unwrap(),
        2 => Perturbation::new_ball(Norm::L2, center, radius).unwrap(),
        _ => Perturbation::new_ball(Norm::L1, center, radius).unwrap(),
    }
}

/// Where a tensor's value comes from: a constant, or graph input `k`.
enum Source {
    Const(Vec<f64>),
    Input(usize),
}

/// The graph, one value per graph input (the model input first), and every tensor's
/// source by name (for [`reference_forward`]).
fn build(spec: &Spec) -> (Graph<f64>, Vec<InputValue<f64>>, HashMap<String, Source>) {
    let mut rng = Rng::new(spec.seed);
    let mut b = GraphBuilder::<f64>::new();
    let mut inputs = Vec::new();
    let mut sources = HashMap::new();
    // A tensor: a graph input with a random set (a perturbed initializer), or a constant.
    let mut tensor =
        |b: &mut GraphBuilder<f64>, rng: &mut Rng, name: &str, shape: &[usize], perturbed: bool| {
            let n: usize = shape.iter().product();
            let value: Vec<f64> = (0..n).map(|_| rng.uniform() * 2.0 - 1.0).collect();
            if perturbed {
                b.add_input(name, shape).unwrap();
                sources.insert(name.to_string(), Source::Input(inputs.len()));
                inputs.push(if name == "x" && !spec.perturb_x {
                    InputValue::Exact(value)
                } else {
                    InputValue::Perturbed(random_set(rng, value, spec.radius))
                });
            } else {
                b.add_constant(name, TensorData::float(shape, value.clone()).unwrap()).unwrap();
                sources.insert(name.to_string(), Source::Const(value));
            }
        };
    let x_shape = if spec.trans_a { [spec.n_in, spec.rows] } else { [spec.rows, spec.n_in] };
    // A constant model input (the first layer's `A` constant, its weight perturbed) in a
    // third of the cases where the input is not perturbed and the first weight is.
    let x_const = !spec.perturb_x && spec.seed.is_multiple_of(3) && spec.layers[0].perturb_w;
    tensor(&mut b, &mut rng, "x", &x_shape, !x_const);
    let (mut src, mut width) = ("x".to_string(), spec.n_in);
    for (i, l) in spec.layers.iter().enumerate() {
        let (w, bias, out) = (format!("w{i}"), format!("b{i}"), format!("y{i}"));
        if l.kind == 2 {
            // MatMul by a [width_in, width] weight.
            tensor(&mut b, &mut rng, &w, &[width, l.width], l.perturb_w);
            let none = Attributes::default();
            let a = if i == 0 && spec.trans_a {
                b.add_node("xt", "Transpose", "", 13, &none, &[Some("x")]).unwrap();
                "xt".to_string()
            } else {
                src.clone()
            };
            b.add_node(&out, "MatMul", "", 13, &none, &[Some(&a), Some(&w)]).unwrap();
        } else {
            let w_shape = if l.trans_b { [l.width, width] } else { [width, l.width] };
            tensor(&mut b, &mut rng, &w, &w_shape, l.perturb_w);
            let mut attrs = Attributes::default();
            attrs.insert("transA", Attr::Int((i == 0 && spec.trans_a) as i64));
            attrs.insert("transB", Attr::Int(l.trans_b as i64));
            attrs.insert("alpha", Attr::Float(ALPHAS[l.alpha]));
            attrs.insert("beta", Attr::Float(BETAS[l.beta]));
            let c = match l.bias {
                0 => None,
                1 => Some(vec![l.width]),
                _ => Some(vec![spec.rows, l.width]),
            };
            if let Some(shape) = &c {
                tensor(&mut b, &mut rng, &bias, shape, l.perturb_b);
            }
            let ins = [Some(src.as_str()), Some(w.as_str()), c.as_ref().map(|_| bias.as_str())];
            let n = if c.is_some() { 3 } else { 2 };
            b.add_node(&out, "Gemm", "", 13, &attrs, &ins[..n]).unwrap();
        }
        width = l.width;
        src = out;
        if i + 1 < spec.layers.len() {
            let r = format!("r{i}");
            b.add_node(&r, "Relu", "", 13, &Attributes::default(), &[Some(&src)]).unwrap();
            src = r;
        }
    }
    (b.finish(&[&src]).unwrap(), inputs, sources)
}

/// The MLP of `spec` evaluated directly (row-major loops, no operator code), with the
/// graph inputs' values `args`.
fn reference_forward(spec: &Spec, sources: &HashMap<String, Source>, args: &[&[f64]]) -> Vec<f64> {
    let get = |name: &str| -> Vec<f64> {
        match &sources[name] {
            Source::Const(v) => v.clone(),
            Source::Input(k) => args[*k].to_vec(),
        }
    };
    let m = spec.rows;
    let xv = get("x");
    // x as rows × n_in.
    let mut h: Vec<f64> = if spec.trans_a {
        (0..m * spec.n_in).map(|p| xv[(p % spec.n_in) * m + p / spec.n_in]).collect()
    } else {
        xv
    };
    let mut width = spec.n_in;
    for (i, l) in spec.layers.iter().enumerate() {
        let w = get(&format!("w{i}"));
        // W'[t, j] of the `width × l.width` product.
        let wp =
            |t: usize, j: usize| if l.kind != 2 && l.trans_b { w[j * width + t] } else { w[t * l.width + j] };
        let (alpha, beta) = if l.kind == 2 { (1.0, 0.0) } else { (ALPHAS[l.alpha], BETAS[l.beta]) };
        let c = if l.kind != 2 && l.bias != 0 { Some(get(&format!("b{i}"))) } else { None };
        let mut y = vec![0.0; m * l.width];
        for r in 0..m {
            for j in 0..l.width {
                let dot: f64 = (0..width).map(|t| h[r * width + t] * wp(t, j)).sum();
                let bias = c.as_ref().map_or(0.0, |c| if l.bias == 1 { c[j] } else { c[r * l.width + j] });
                y[r * l.width + j] = alpha * dot + beta * bias;
            }
        }
        if i + 1 < spec.layers.len() {
            y.iter_mut().for_each(|v| *v = v.max(0.0));
        }
        h = y;
        width = l.width;
    }
    h
}

const METHODS: [Method; 6] = [
    Method::Ibp,
    Method::Crown,
    Method::CrownIbp,
    Method::Forward,
    Method::ForwardBackward,
    Method::AlphaCrown,
];

proptest! {
    #[test]
    fn sampled_weights_and_inputs_lie_inside_bounds(spec in arb_spec()) {
        let (g, inputs, sources) = build(&spec);
        let n = 48;
        let samples: Vec<Vec<Vec<f64>>> = inputs
            .iter()
            .enumerate()
            .map(|(k, v)| match v {
                InputValue::Exact(x) => vec![x.clone(); n],
                InputValue::Perturbed(p) => sample_points(p, n, spec.seed ^ (k as u64 + 1)),
            })
            .collect();
        let out = g.output().unwrap();
        let ys: Vec<Vec<f64>> = (0..n)
            .map(|s| {
                let args: Vec<&[f64]> = samples.iter().map(|x| &x[s][..]).collect();
                let y = g.forward_all(&args).unwrap().swap_remove(out);
                let expected = reference_forward(&spec, &sources, &args);
                for (a, b) in y.iter().zip(&expected) {
                    assert!((a - b).abs() <= 1e-9 * (1.0 + b.abs()), "forward {y:?}, expected {expected:?}");
                }
                y
            })
            .collect();
        for method in METHODS {
            let mut opts = BoundOptions::with_method(method);
            opts.optimize.iterations = 5;
            let r = lirpa::compute_bounds(&g, &inputs, &opts, &BoundRequest::default());
            let r = match r {
                Ok(r) => r,
                Err(e) => return Err(TestCaseError::fail(format!("{method}: {e}"))),
            };
            for y in &ys {
                for (i, &yi) in y.iter().enumerate() {
                    let tol = 1e-9 * (1.0 + yi.abs());
                    prop_assert!(r.lower[i] <= yi + tol && yi <= r.upper[i] + tol,
                        "{method} output {i}: {} not in [{}, {}]", yi, r.lower[i], r.upper[i]);
                }
            }
        }
    }
}

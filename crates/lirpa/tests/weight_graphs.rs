//! Property test: random small MLPs of Gemm (random `transA` on the first layer,
//! `transB`, `alpha`, `beta`, broadcast or full bias, or no bias) and MatMul layers with
//! ReLU between them, where random initializers (weights and biases) are graph inputs
//! with random sets (box, L∞, L2, L1 balls) and the model input is perturbed, exact, or
//! a constant (then the first product has a constant `A` and a perturbed weight).
//! Weights and inputs are sampled from their sets (independently) and evaluated with
//! `Graph::forward_all`; every method's bounds must contain every sampled output.
//!
//! A second property test does the same for random 1-D and 2-D Conv networks with
//! perturbed weights (the bilinear plugin's im2col product), and a tiny Conv is checked
//! by hand and by brute force over the corners of its box.
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
/// The tensors of a random network: graph inputs with their sets, and where each came from.
struct Tensors {
    inputs: Vec<InputValue<f64>>,
    sources: HashMap<String, Source>,
    perturb_x: bool,
    radius: f64,
}

impl Tensors {
    fn new(perturb_x: bool, radius: f64) -> Self {
        Tensors { inputs: Vec::new(), sources: HashMap::new(), perturb_x, radius }
    }

    /// Add a tensor with random values: a graph input with a random set (a perturbed
    /// initializer; the input `x` stays exact unless `perturb_x`), or a constant.
    fn tensor(
        &mut self,
        b: &mut GraphBuilder<f64>,
        rng: &mut Rng,
        name: &str,
        shape: &[usize],
        perturbed: bool,
    ) {
        let n: usize = shape.iter().product();
        let value: Vec<f64> = (0..n).map(|_| rng.uniform() * 2.0 - 1.0).collect();
        if perturbed {
            b.add_input(name, shape).unwrap();
            self.sources.insert(name.to_string(), Source::Input(self.inputs.len()));
            self.inputs.push(if name == "x" && !self.perturb_x {
                InputValue::Exact(value)
            } else {
                InputValue::Perturbed(random_set(rng, value, self.radius))
            });
        } else {
            b.add_constant(name, TensorData::float(shape, value.clone()).unwrap()).unwrap();
            self.sources.insert(name.to_string(), Source::Const(value));
        }
    }
}

fn build(spec: &Spec) -> (Graph<f64>, Vec<InputValue<f64>>, HashMap<String, Source>) {
    let mut rng = Rng::new(spec.seed);
    let mut b = GraphBuilder::<f64>::new();
    let mut net = Tensors::new(spec.perturb_x, spec.radius);
    let x_shape = if spec.trans_a { [spec.n_in, spec.rows] } else { [spec.rows, spec.n_in] };
    // A constant model input (the first layer's `A` constant, its weight perturbed) in a
    // third of the cases where the input is not perturbed and the first weight is.
    let x_const = !spec.perturb_x && spec.seed.is_multiple_of(3) && spec.layers[0].perturb_w;
    net.tensor(&mut b, &mut rng, "x", &x_shape, !x_const);
    let (mut src, mut width) = ("x".to_string(), spec.n_in);
    for (i, l) in spec.layers.iter().enumerate() {
        let (w, bias, out) = (format!("w{i}"), format!("b{i}"), format!("y{i}"));
        if l.kind == 2 {
            // MatMul by a [width_in, width] weight.
            net.tensor(&mut b, &mut rng, &w, &[width, l.width], l.perturb_w);
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
            net.tensor(&mut b, &mut rng, &w, &w_shape, l.perturb_w);
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
                net.tensor(&mut b, &mut rng, &bias, shape, l.perturb_b);
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
    (b.finish(&[&src]).unwrap(), net.inputs, net.sources)
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

proptest! {
    #[test]
    fn sampled_weights_and_inputs_lie_inside_bounds(spec in arb_spec()) {
        let (g, inputs, sources) = build(&spec);
        let ys = sampled_outputs(&g, &inputs, spec.seed, |args| reference_forward(&spec, &sources, args));
        check_contains(&g, &inputs, &ys)?;
    }
}

// ---------------------------------------------------------------------------------
// Conv with a perturbed weight (the bilinear plugin's im2col product).
// ---------------------------------------------------------------------------------

#[derive(Clone, Debug)]
struct ConvLayer {
    co: usize,
    k: usize,
    strides: [usize; 2],
    dil: usize,
    /// Top, left, bottom, right (1-D: left and right only).
    pads: [usize; 4],
    /// 0: `pads`, 1: `SAME_UPPER`, 2: `VALID`.
    auto_pad: u8,
    /// Depthwise-style groups (`group = C_in`) where the channels allow it.
    grouped: bool,
    /// 0: no bias, 1: constant, 2: perturbed.
    bias: u8,
    perturb_w: bool,
}

#[derive(Clone, Debug)]
struct ConvSpec {
    two_d: bool,
    c: usize,
    h: usize,
    w: usize,
    layers: Vec<ConvLayer>,
    perturb_x: bool,
    seed: u64,
    radius: f64,
}

fn arb_conv_spec() -> impl Strategy<Value = ConvSpec> {
    let layer =
        (
            (1usize..4, 1usize..4, 1usize..3, 1usize..3, 1usize..3),
            prop::array::uniform4(0usize..3),
            (0u8..3, any::<bool>(), 0u8..3, any::<bool>()),
        )
            .prop_map(|((co, k, s0, s1, dil), pads, (auto_pad, grouped, bias, perturb_w))| {
                ConvLayer { co, k, strides: [s0, s1], dil, pads, auto_pad, grouped, bias, perturb_w }
            });
    (
        any::<bool>(),
        (1usize..4, 2usize..6, 2usize..7),
        prop::collection::vec(layer, 1..3),
        any::<bool>(),
        any::<u64>(),
        0.01f64..0.5,
    )
        .prop_map(|(two_d, (c, h, w), mut layers, perturb_x, seed, radius)| {
            // At least one perturbed weight.
            layers[0].perturb_w |= !layers.iter().any(|l| l.perturb_w);
            ConvSpec { two_d, c, h: if two_d { h } else { 1 }, w, layers, perturb_x, seed, radius }
        })
}

/// One layer's resolved geometry (the test's own arithmetic, not `lirpa_core::spatial`).
#[derive(Clone, Debug)]
struct Geo {
    ci: usize,
    co: usize,
    g: usize,
    hi: usize,
    wi: usize,
    kh: usize,
    kw: usize,
    sh: usize,
    sw: usize,
    dh: usize,
    dw: usize,
    pt: usize,
    pl: usize,
    pb: usize,
    pr: usize,
    ho: usize,
    wo: usize,
    auto_pad: u8,
}

/// Every layer's geometry: kernels that do not fit the (padded) input shrink (dilation 1,
/// then a smaller kernel).
fn resolve(spec: &ConvSpec) -> Vec<Geo> {
    let (mut c, mut h, mut w) = (spec.c, spec.h, spec.w);
    let mut out = Vec::new();
    for l in &spec.layers {
        let g = if l.grouped && l.co.is_multiple_of(c) { c } else { 1 };
        let dims: [(usize, usize, usize, usize, usize, usize); 2] = std::array::from_fn(|d| {
            // (size, k, stride, dilation, pad before, pad after) of dimension d (0: h).
            let n = if d == 0 { h } else { w };
            if d == 0 && !spec.two_d {
                return (n, 1, 1, 1, 0, 0);
            }
            let s = l.strides[d];
            let (mut p0, mut p1) = (l.pads[d], l.pads[d + 2]);
            if l.auto_pad == 2 {
                (p0, p1) = (0, 0);
            }
            let (mut k, mut dil) = (l.k, l.dil);
            let span = n + if l.auto_pad == 0 { p0 + p1 } else { 0 };
            if (k - 1) * dil + 1 > span {
                dil = 1;
                k = k.min(span);
            }
            if l.auto_pad == 1 {
                let total = ((n.div_ceil(s) - 1) * s + (k - 1) * dil + 1).saturating_sub(n);
                (p0, p1) = (total / 2, total - total / 2);
            }
            (n, k, s, dil, p0, p1)
        });
        let [(hi, kh, sh, dh, pt, pb), (wi, kw, sw, dw, pl, pr)] = dims;
        let ho = (hi + pt + pb - (kh - 1) * dh - 1) / sh + 1;
        let wo = (wi + pl + pr - (kw - 1) * dw - 1) / sw + 1;
        out.push(Geo {
            ci: c,
            co: l.co,
            g,
            hi,
            wi,
            kh,
            kw,
            sh,
            sw,
            dh,
            dw,
            pt,
            pl,
            pb,
            pr,
            ho,
            wo,
            auto_pad: l.auto_pad,
        });
        (c, h, w) = (l.co, ho, wo);
    }
    out
}

/// The convolution of `x` by `w` (`[co][ci/g][kh][kw]`) plus `b`, by direct loops.
fn conv_reference(geo: &Geo, x: &[f64], w: &[f64], b: Option<&[f64]>) -> Vec<f64> {
    let (cig, cog) = (geo.ci / geo.g, geo.co / geo.g);
    let mut y = vec![0.0; geo.co * geo.ho * geo.wo];
    for o in 0..geo.co {
        for oy in 0..geo.ho {
            for ox in 0..geo.wo {
                let mut acc = b.map_or(0.0, |b| b[o]);
                for i in 0..cig {
                    for ky in 0..geo.kh {
                        for kx in 0..geo.kw {
                            let ih = (oy * geo.sh + ky * geo.dh) as isize - geo.pt as isize;
                            let iw = (ox * geo.sw + kx * geo.dw) as isize - geo.pl as isize;
                            if ih < 0 || iw < 0 || ih as usize >= geo.hi || iw as usize >= geo.wi {
                                continue;
                            }
                            let c = (o / cog) * cig + i;
                            acc += w[((o * cig + i) * geo.kh + ky) * geo.kw + kx]
                                * x[(c * geo.hi + ih as usize) * geo.wi + iw as usize];
                        }
                    }
                }
                y[(o * geo.ho + oy) * geo.wo + ox] = acc;
            }
        }
    }
    y
}

/// A built network: graph, graph-input values, tensor sources, layer geometries.
type ConvNet = (Graph<f64>, Vec<InputValue<f64>>, HashMap<String, Source>, Vec<Geo>);

fn build_conv_net(spec: &ConvSpec) -> ConvNet {
    let geos = resolve(spec);
    let mut rng = Rng::new(spec.seed);
    let mut b = GraphBuilder::<f64>::new();
    let mut net = Tensors::new(spec.perturb_x, spec.radius);
    let x_const = !spec.perturb_x && spec.seed.is_multiple_of(3) && spec.layers[0].perturb_w;
    let spatial = |h: usize, w: usize| if spec.two_d { vec![h, w] } else { vec![w] };
    let mut x_shape = vec![1, spec.c];
    x_shape.extend(spatial(spec.h, spec.w));
    net.tensor(&mut b, &mut rng, "x", &x_shape, !x_const);
    let mut src = "x".to_string();
    for (i, (l, geo)) in spec.layers.iter().zip(&geos).enumerate() {
        let (w, bias, out) = (format!("w{i}"), format!("b{i}"), format!("y{i}"));
        let mut w_shape = vec![geo.co, geo.ci / geo.g];
        w_shape.extend(spatial(geo.kh, geo.kw));
        net.tensor(&mut b, &mut rng, &w, &w_shape, l.perturb_w);
        if l.bias != 0 {
            net.tensor(&mut b, &mut rng, &bias, &[geo.co], l.bias == 2);
        }
        let pair = |a: usize, b: usize| -> Vec<i64> {
            if spec.two_d { vec![a as i64, b as i64] } else { vec![b as i64] }
        };
        let mut attrs = Attributes::default();
        attrs.insert("strides", Attr::Ints(pair(geo.sh, geo.sw)));
        attrs.insert("dilations", Attr::Ints(pair(geo.dh, geo.dw)));
        attrs.insert("group", Attr::Int(geo.g as i64));
        match geo.auto_pad {
            0 => {
                let mut p = pair(geo.pt, geo.pl);
                p.extend(pair(geo.pb, geo.pr));
                attrs.insert("pads", Attr::Ints(p));
            }
            1 => {
                attrs.insert("auto_pad", Attr::String("SAME_UPPER".into()));
            }
            _ => {
                attrs.insert("auto_pad", Attr::String("VALID".into()));
            }
        }
        let ins = [Some(src.as_str()), Some(w.as_str()), Some(bias.as_str())];
        let n = if l.bias != 0 { 3 } else { 2 };
        b.add_node(&out, "Conv", "", 13, &attrs, &ins[..n]).unwrap();
        src = out;
        if i + 1 < spec.layers.len() {
            let r = format!("r{i}");
            b.add_node(&r, "Relu", "", 13, &Attributes::default(), &[Some(&src)]).unwrap();
            src = r;
        }
    }
    (b.finish(&[&src]).unwrap(), net.inputs, net.sources, geos)
}

fn conv_net_reference(
    spec: &ConvSpec,
    geos: &[Geo],
    sources: &HashMap<String, Source>,
    args: &[&[f64]],
) -> Vec<f64> {
    let get = |name: &str| -> Vec<f64> {
        match &sources[name] {
            Source::Const(v) => v.clone(),
            Source::Input(k) => args[*k].to_vec(),
        }
    };
    let mut h = get("x");
    for (i, (l, geo)) in spec.layers.iter().zip(geos).enumerate() {
        let b = (l.bias != 0).then(|| get(&format!("b{i}")));
        h = conv_reference(geo, &h, &get(&format!("w{i}")), b.as_deref());
        if i + 1 < spec.layers.len() {
            h.iter_mut().for_each(|v| *v = v.max(0.0));
        }
    }
    h
}

/// Every method's bounds of `g` contain `ys`.
/// The outputs at 48 points sampled from every input's set (seeded by `seed`), each
/// checked against `reference`, the network computed by direct loops.
fn sampled_outputs(
    g: &Graph<f64>,
    inputs: &[InputValue<f64>],
    seed: u64,
    reference: impl Fn(&[&[f64]]) -> Vec<f64>,
) -> Vec<Vec<f64>> {
    let n = 48;
    let samples: Vec<Vec<Vec<f64>>> = inputs
        .iter()
        .enumerate()
        .map(|(k, v)| match v {
            InputValue::Exact(x) => vec![x.clone(); n],
            InputValue::Perturbed(p) => sample_points(p, n, seed ^ (k as u64 + 1)),
        })
        .collect();
    let out = g.output().unwrap();
    (0..n)
        .map(|s| {
            let args: Vec<&[f64]> = samples.iter().map(|x| &x[s][..]).collect();
            let y = g.forward_all(&args).unwrap().swap_remove(out);
            let expected = reference(&args);
            assert_eq!(y.len(), expected.len());
            for (a, b) in y.iter().zip(&expected) {
                assert!((a - b).abs() <= 1e-9 * (1.0 + b.abs()), "forward {y:?}, expected {expected:?}");
            }
            y
        })
        .collect()
}

fn check_contains(g: &Graph<f64>, inputs: &[InputValue<f64>], ys: &[Vec<f64>]) -> Result<(), TestCaseError> {
    for method in Method::ALL {
        let mut opts = BoundOptions::with_method(method);
        opts.optimize.iterations = 5;
        let r = lirpa::compute_bounds(g, inputs, &opts, &BoundRequest::default())
            .map_err(|e| TestCaseError::fail(format!("{method}: {e}")))?;
        for y in ys {
            for (i, &yi) in y.iter().enumerate() {
                let tol = 1e-9 * (1.0 + yi.abs());
                prop_assert!(
                    r.lower[i] <= yi + tol && yi <= r.upper[i] + tol,
                    "{method} output {i}: {} not in [{}, {}]",
                    yi,
                    r.lower[i],
                    r.upper[i]
                );
            }
        }
    }
    Ok(())
}

proptest! {
    /// Random 1-D and 2-D Conv networks (padding, auto_pad, stride, dilation, groups,
    /// constant or perturbed bias) with perturbed weights (and input): every sampled
    /// output lies inside every method's bounds.
    #[test]
    fn conv_sampled_weights_and_inputs_lie_inside_bounds(spec in arb_conv_spec()) {
        let (g, inputs, sources, geos) = build_conv_net(&spec);
        let ys = sampled_outputs(&g, &inputs, spec.seed, |args| conv_net_reference(&spec, &geos, &sources, args));
        check_contains(&g, &inputs, &ys)?;
    }
}

/// A tiny 1-D Conv, `x ∈ [1, 1, 3]`, `w ∈ [1, 1, 2]`, `pads = [1, 0]`, a constant bias:
/// `y = [w1·x0, w0·x0 + w1·x1, w0·x1 + w1·x2] + b`. Each output is a sum of products of
/// distinct box variables, so its exact range is the sum of the products' intervals,
/// which the brute force over the 2^5 corners of the box (a multilinear function is
/// extremal at a vertex) confirms. IBP is exact there; every method contains it; with an
/// exact input every method is exact (the planes of `w·x` with `x` fixed are `w·x`).
#[test]
fn conv_with_a_box_weight_matches_hand_and_brute_force() {
    let (wl, wu) = ([0.5, -1.0], [1.5, 0.5]);
    let (xl, xu) = ([-1.0, 0.5, 2.0], [1.0, 1.0, 3.0]);
    let bias = 0.25;
    // By hand: [w1·x0] = [-1, 0.5]·[-1, 1] = [-1, 1]; w0·x0 = [0.5, 1.5]·[-1, 1] = [-1.5, 1.5],
    // w1·x1 = [-1, 0.5]·[0.5, 1] = [-1, 0.5]; w0·x1 = [0.25, 1.5], w1·x2 = [-3, 1.5].
    let hand_lower = [-1.0 + bias, -2.5 + bias, -2.75 + bias];
    let hand_upper = [1.0 + bias, 2.0 + bias, 3.0 + bias];
    let build = || {
        let mut b = GraphBuilder::<f64>::new();
        b.add_input("x", &[1, 1, 3]).unwrap();
        b.add_input("w", &[1, 1, 2]).unwrap();
        b.add_constant("b", TensorData::float(&[1], vec![bias]).unwrap()).unwrap();
        let mut attrs = Attributes::default();
        attrs.insert("pads", Attr::Ints(vec![1, 0]));
        b.add_node("y", "Conv", "", 13, &attrs, &[Some("x"), Some("w"), Some("b")]).unwrap();
        b.finish(&["y"]).unwrap()
    };
    let g = build();
    let forward = |x: &[f64], w: &[f64]| g.forward(&[x, w], g.output().unwrap()).unwrap();
    // Brute force over the corners.
    let (mut lo, mut hi) = ([f64::INFINITY; 3], [f64::NEG_INFINITY; 3]);
    for corner in 0..32u32 {
        let bit = |i: u32| corner >> i & 1 == 1;
        let x: Vec<f64> = (0..3).map(|i| if bit(i) { xu[i as usize] } else { xl[i as usize] }).collect();
        let w: Vec<f64> = (0..2).map(|i| if bit(3 + i) { wu[i as usize] } else { wl[i as usize] }).collect();
        let y = forward(&x, &w);
        assert_eq!(
            y,
            vec![w[1] * x[0] + bias, w[0] * x[0] + w[1] * x[1] + bias, w[0] * x[1] + w[1] * x[2] + bias]
        );
        for j in 0..3 {
            lo[j] = lo[j].min(y[j]);
            hi[j] = hi[j].max(y[j]);
        }
    }
    assert_eq!(lo, hand_lower);
    assert_eq!(hi, hand_upper);
    let boxed =
        |l: &[f64], u: &[f64]| InputValue::Perturbed(Perturbation::new_box(l.to_vec(), u.to_vec()).unwrap());
    let inputs = [boxed(&xl, &xu), boxed(&wl, &wu)];
    for method in Method::ALL {
        let mut opts = BoundOptions::with_method(method);
        opts.optimize.iterations = 5;
        let r = lirpa::compute_bounds(&g, &inputs, &opts, &BoundRequest::default()).unwrap();
        for j in 0..3 {
            assert!(r.lower[j] <= lo[j] + 1e-12 && hi[j] <= r.upper[j] + 1e-12, "{method} {j}: {r:?}");
            if method == Method::Ibp {
                assert!(
                    (r.lower[j] - lo[j]).abs() < 1e-12 && (r.upper[j] - hi[j]).abs() < 1e-12,
                    "IBP {r:?}"
                );
            }
        }
    }
    // An exact input: y is linear in w, every method exact, `[Σ w_t·x_t]` by hand.
    let x = [1.0, -2.0, 0.5];
    let inputs = [InputValue::Exact(x.to_vec()), boxed(&wl, &wu)];
    let exact_lower = [-1.0 + bias, 0.5 - 1.0 + bias, -3.0 - 0.5 + bias];
    let exact_upper = [0.5 + bias, 1.5 + 2.0 + bias, -1.0 + 0.25 + bias];
    for method in Method::ALL {
        let mut opts = BoundOptions::with_method(method);
        opts.optimize.iterations = 5;
        let r = lirpa::compute_bounds(&g, &inputs, &opts, &BoundRequest::default()).unwrap();
        for j in 0..3 {
            assert!(
                (r.lower[j] - exact_lower[j]).abs() < 1e-9 && (r.upper[j] - exact_upper[j]).abs() < 1e-9,
                "{method} {j}: {r:?}"
            );
        }
    }
}

//! Floating-point-sound bounds (`BoundOptions::fp_sound`) against an exact oracle.
//!
//! Networks are built from dyadic constants (weights `k/2¹⁰`, biases `k/2²⁰`, inputs
//! `k/2²⁰`), so every value of a piecewise-linear network at a dyadic input is a dyadic
//! rational that `i128` holds exactly (a value at scale `s` is `n/2ˢ`); the test
//! evaluates the network that way, without any rounding, and compares with tolerance 0.
//! Sigmoid, Tanh and BatchNormalization (whose `√(var + ε)` is built exact but whose
//! division is not dyadic) make the oracle an enclosure instead: their results are
//! rounded outward to 2⁻⁶⁴ (Sigmoid and Tanh from `f64` values moved out by far more
//! than their error), and a sound bound must contain the whole enclosure.
//!
//! - Random small DAGs (Gemm, ReLU, LeakyReLU with α = 1/4, residual Add, fan-out; and
//!   with Sigmoid, Tanh, BatchNormalization, MaxPool), f32 and f64, IBP, CROWN,
//!   CROWN-IBP, α-CROWN, forward and forward+backward: no sound-mode bound excludes
//!   the exact output at random vertices of the box or at the vertex where CROWN's
//!   linear bound is smallest (largest) (tiny boxes keep every ReLU stable, so CROWN's
//!   bound is attained there up to rounding, which is what round-to-nearest gets
//!   wrong).
//! - The default mode's bounds are violated on the same networks (the oracle sees
//!   rounding), on a built cancellation network (large cancelling weights, a bias that
//!   is no sum of them) in f32 and f64, and on BatchNormalizations whose folded
//!   constant cancels; the sound mode's are not.
//! - Operators without an error model are refused by name.

use lirpa::core::registry::BuilderFor;
use lirpa::core::{Attr, Attributes, FpSound, GraphBuilder, TensorData};
use lirpa::sample::Rng;
use lirpa::{BoundOptions, BoundRequest, Graph, InputValue, Method, Perturbation, Scalar};

const W_SCALE: i32 = 10;
const B_SCALE: i32 = 20;
const X_SCALE: i32 = 20;

#[derive(Clone, Debug)]
enum Layer {
    /// `y = W·x + b`: weights `w[o][i]/2¹⁰`, biases `b[o]/2²⁰`.
    Gemm {
        src: usize,
        w: Vec<Vec<i128>>,
        b: Vec<i128>,
    },
    Relu(usize),
    /// LeakyReLU with α = 1/4.
    Leaky(usize),
    Add(usize, usize),
    Sigmoid(usize),
    Tanh(usize),
    /// BatchNormalization in inference mode, `scale·(x − mean)/√(var + ε) + B`, with
    /// `ε = 2⁻¹⁰` and `var = p²/2⁸ − ε`, so that `√(var + ε) = p/16` exactly: `scale`
    /// `k/2¹⁰`, `B` and `mean` `k/2²⁰`.
    Bn {
        src: usize,
        scale: Vec<i128>,
        b: Vec<i128>,
        mean: Vec<i128>,
        p: Vec<i128>,
    },
    /// MaxPool over adjacent pairs (kernel 2, stride 1, through reshapes to `[1, 1, 1, n]`).
    MaxPool(usize),
}

/// The finest scale the oracle keeps (`2⁻⁶⁴`): enclosures of irrational or non-dyadic
/// values are rounded outward to it.
const FINE: i32 = 64;

/// `[lo, hi]` at scale `s`, rounded outward to scale `to ≤ s`.
fn coarsen((lo, hi): (i128, i128), s: i32, to: i32) -> (i128, i128) {
    let k = s - to;
    (lo >> k, -((-hi) >> k))
}

/// An `f64` at most `n/2ˢ` (`up`: at least).
fn to_f64(n: i128, s: i32, up: bool) -> f64 {
    let v = n as f64;
    let v = match (v as i128).cmp(&n) {
        std::cmp::Ordering::Greater if !up => v.next_down(),
        std::cmp::Ordering::Less if up => v.next_up(),
        _ => v,
    };
    v / 2f64.powi(s)
}

/// `v` at scale `FINE`, rounded down (`up`: up); `v` is finite and small.
fn from_f64(v: f64, up: bool) -> i128 {
    let x = v * 2f64.powi(FINE); // exact: a power of two
    (if up { x.ceil() } else { x.floor() }) as i128
}

/// An enclosure of `f([lo, hi])` for a non-decreasing `f` evaluated in `f64` with a
/// relative error below `2⁻⁴⁸` (Sigmoid from `exp`, `tanh`: a few ulps): the ends are
/// evaluated at `f64` values outside `[lo, hi]` and moved out by `2⁻⁴⁷` relative (and
/// by a tiny absolute amount where the value underflowed).
fn monotone((lo, hi): (i128, i128), s: i32, f: impl Fn(f64) -> f64) -> (i128, i128) {
    let out = |x: f64, up: bool| {
        let y = f(x);
        // An exact 0 (tanh(0)) stays 0; sigmoid underflows only below -745.
        let d = y.abs() * 2f64.powi(-47) + if y == 0.0 && x != 0.0 { 2f64.powi(-1000) } else { 0.0 };
        from_f64(if up { y + d } else { y - d }, up)
    };
    (out(to_f64(lo, s, false), false), out(to_f64(hi, s, true), true))
}

fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

/// A network: the input width and layers; value 0 is the input, value `k + 1` layer `k`.
#[derive(Clone, Debug)]
struct Net {
    n_in: usize,
    layers: Vec<Layer>,
}

impl Net {
    fn width(&self, v: usize) -> usize {
        match v {
            0 => self.n_in,
            _ => match &self.layers[v - 1] {
                Layer::Gemm { w, .. } => w.len(),
                Layer::Relu(s)
                | Layer::Leaky(s)
                | Layer::Add(s, _)
                | Layer::Sigmoid(s)
                | Layer::Tanh(s)
                | Layer::Bn { src: s, .. } => self.width(*s),
                Layer::MaxPool(s) => self.width(*s) - 1,
            },
        }
    }

    /// A random network of Gemm, ReLU, LeakyReLU and Add layers; with `smooth`, also
    /// Sigmoid, Tanh, BatchNormalization and MaxPool.
    fn random(seed: u64) -> Net {
        Net::random_with(seed, false)
    }

    fn random_with(seed: u64, smooth: bool) -> Net {
        let mut rng = Rng::new(seed);
        let mut int = |n: f64| ((rng.uniform() * 2.0 - 1.0) * n).round() as i128;
        let n_in = 1 + (seed % 4) as usize;
        let mut net = Net { n_in, layers: vec![] };
        let mut gemms = 0;
        for k in 0..(3 + seed % 6) as usize {
            let last = net.layers.len();
            let pick = (int(1e6).unsigned_abs() as usize) % (last + 1);
            let kind = int(1e6).unsigned_abs() % if smooth { 8 } else { 4 };
            let layer = match kind {
                _ if k == 0 || (kind == 0 && gemms < 4) => {
                    gemms += 1;
                    let (src, out) = (last, 1 + (int(1e6).unsigned_abs() % 5) as usize);
                    let n = net.width(src);
                    // Weights up to 16 with 14 significant bits: products and sums round
                    // in f32.
                    let w = (0..out).map(|_| (0..n).map(|_| int(16.0 * 1024.0)).collect()).collect();
                    let b = (0..out).map(|_| int((1 << 24) as f64)).collect();
                    Layer::Gemm { src, w, b }
                }
                1 => Layer::Relu(last),
                2 => Layer::Leaky(last),
                4 => Layer::Sigmoid(last),
                5 => Layer::Tanh(last),
                6 => {
                    let n = net.width(last);
                    let scale: Vec<i128> = (0..n).map(|_| int(4.0 * 1024.0)).collect();
                    let mean: Vec<i128> = (0..n).map(|_| int((1u64 << 30) as f64)).collect();
                    let p: Vec<i128> = (0..n).map(|_| 1 + int(1000.0).abs()).collect();
                    // B close to mean·scale/std for some channels: the fold cancels.
                    let b = (0..n)
                        .map(|k| {
                            let folded = mean[k] * scale[k] * 16 / (p[k] << W_SCALE);
                            if k % 2 == 0 { folded + int(16.0) } else { int((1 << 22) as f64) }
                        })
                        .collect();
                    Layer::Bn { src: last, scale, b, mean, p }
                }
                7 if net.width(last) >= 2 => Layer::MaxPool(last),
                7 => Layer::Relu(last),
                _ => {
                    if net.width(pick) == net.width(last) {
                        Layer::Add(last, pick)
                    } else {
                        Layer::Relu(last)
                    }
                }
            };
            net.layers.push(layer);
        }
        if smooth && !matches!(net.layers.last(), Some(Layer::Gemm { .. })) {
            // Outputs of order one: the oracle's resolution (2⁻⁶⁴ absolute) stays far
            // below the sound bounds' slack (a Sigmoid may put out 1e-44).
            let n = net.width(net.layers.len());
            let w = (0..2).map(|_| (0..n).map(|_| int(16.0 * 1024.0)).collect()).collect();
            let b = (0..2).map(|_| int((1 << 24) as f64)).collect();
            net.layers.push(Layer::Gemm { src: net.layers.len(), w, b });
        }
        net
    }

    fn graph<T: Scalar + BuilderFor>(&self) -> Graph<T> {
        let mut b = GraphBuilder::<T>::new();
        b.add_input("v0", &[1, self.n_in]).unwrap();
        let none = Attributes::default();
        for (k, layer) in self.layers.iter().enumerate() {
            let name = format!("v{}", k + 1);
            match layer {
                Layer::Gemm { src, w, b: bias } => {
                    let (out, n) = (w.len(), w[0].len());
                    let wd = w.iter().flatten().map(|&x| x as f64 / (1i64 << W_SCALE) as f64).collect();
                    let bd = bias.iter().map(|&x| x as f64 / (1i64 << B_SCALE) as f64).collect();
                    b.add_constant(&format!("w{k}"), TensorData::float(&[out, n], wd).unwrap()).unwrap();
                    b.add_constant(&format!("b{k}"), TensorData::float(&[out], bd).unwrap()).unwrap();
                    let mut attrs = Attributes::default();
                    attrs.insert("transB", Attr::Int(1));
                    let ins = [Some(format!("v{src}")), Some(format!("w{k}")), Some(format!("b{k}"))];
                    let ins: Vec<Option<&str>> = ins.iter().map(|s| s.as_deref()).collect();
                    b.add_node(&name, "Gemm", "", 13, &attrs, &ins).unwrap();
                }
                Layer::Relu(s) => {
                    b.add_node(&name, "Relu", "", 13, &none, &[Some(&format!("v{s}"))]).unwrap();
                }
                Layer::Leaky(s) => {
                    let mut attrs = Attributes::default();
                    attrs.insert("alpha", Attr::Float(0.25));
                    b.add_node(&name, "LeakyRelu", "", 13, &attrs, &[Some(&format!("v{s}"))]).unwrap();
                }
                Layer::Add(a, c) => {
                    let ins = [Some(format!("v{a}")), Some(format!("v{c}"))];
                    let ins: Vec<Option<&str>> = ins.iter().map(|s| s.as_deref()).collect();
                    b.add_node(&name, "Add", "", 13, &none, &ins).unwrap();
                }
                Layer::Sigmoid(s) => {
                    b.add_node(&name, "Sigmoid", "", 13, &none, &[Some(&format!("v{s}"))]).unwrap();
                }
                Layer::Tanh(s) => {
                    b.add_node(&name, "Tanh", "", 13, &none, &[Some(&format!("v{s}"))]).unwrap();
                }
                Layer::Bn { src, scale, b: bias, mean, p } => {
                    let n = scale.len();
                    let eps = 2f64.powi(-10);
                    let f = |v: &[i128], sc: i32| v.iter().map(|&x| x as f64 / 2f64.powi(sc)).collect();
                    let var = p.iter().map(|&q| (q * q) as f64 / 256.0 - eps).collect();
                    for (c, data) in [
                        ("scale", f(scale, W_SCALE)),
                        ("bias", f(bias, B_SCALE)),
                        ("mean", f(mean, B_SCALE)),
                        ("var", var),
                    ] {
                        b.add_constant(&format!("{c}{k}"), TensorData::float(&[n], data).unwrap()).unwrap();
                    }
                    let mut attrs = Attributes::default();
                    attrs.insert("epsilon", Attr::Float(eps));
                    let ins: Vec<String> = vec![
                        format!("v{src}"),
                        format!("scale{k}"),
                        format!("bias{k}"),
                        format!("mean{k}"),
                        format!("var{k}"),
                    ];
                    let ins: Vec<Option<&str>> = ins.iter().map(|s| Some(s.as_str())).collect();
                    b.add_node(&name, "BatchNormalization", "", 15, &attrs, &ins).unwrap();
                }
                Layer::MaxPool(s) => {
                    let n = self.width(*s);
                    let shape = |c: &str, v: Vec<f64>| {
                        TensorData::new(&[v.len()], lirpa::core::DType::Int, v).map(|t| (c.to_string(), t))
                    };
                    let (c4, t4) = shape(&format!("s4_{k}"), vec![1.0, 1.0, 1.0, n as f64]).unwrap();
                    let (c2, t2) = shape(&format!("s2_{k}"), vec![1.0, (n - 1) as f64]).unwrap();
                    b.add_constant(&c4, t4).unwrap();
                    b.add_constant(&c2, t2).unwrap();
                    let (r4, mp) = (format!("r4_{k}"), format!("mp_{k}"));
                    b.add_node(&r4, "Reshape", "", 13, &none, &[Some(&format!("v{s}")), Some(&c4)]).unwrap();
                    let mut attrs = Attributes::default();
                    attrs.insert("kernel_shape", Attr::Ints(vec![1, 2]));
                    b.add_node(&mp, "MaxPool", "", 13, &attrs, &[Some(&r4)]).unwrap();
                    b.add_node(&name, "Reshape", "", 13, &none, &[Some(&mp), Some(&c2)]).unwrap();
                }
            }
        }
        b.finish(&[&format!("v{}", self.layers.len())]).unwrap()
    }

    /// An enclosure of the exact output at input `x` (numerators at scale 2⁻²⁰):
    /// `(numerators [lo, hi], scale)`. Without Sigmoid, Tanh and BatchNormalization
    /// every value is exact (`lo = hi`); those round their results outward to scale
    /// 2⁻⁶⁴ (see [`monotone`]), and the scale never exceeds 2⁻⁶⁴ after a layer.
    fn exact(&self, x: &[i128]) -> (Vec<(i128, i128)>, i32) {
        type Vals = (Vec<(i128, i128)>, i32);
        let mut vals: Vec<Vals> = vec![(x.iter().map(|&v| (v, v)).collect(), X_SCALE)];
        let rescale = |(v, s): &Vals, to: i32| -> Vec<(i128, i128)> {
            v.iter().map(|&(l, h)| (l << (to - s), h << (to - s))).collect()
        };
        for layer in &self.layers {
            let (v, s): Vals = match layer {
                Layer::Gemm { src, w, b } => {
                    let (xv, s) = &vals[*src];
                    let s_out = (s + W_SCALE).max(B_SCALE);
                    let xs = rescale(&(xv.clone(), *s), s_out - W_SCALE);
                    let y = w
                        .iter()
                        .zip(b)
                        .map(|(row, &bo)| {
                            let bo = bo << (s_out - B_SCALE);
                            let lo =
                                row.iter().zip(&xs).map(|(&wi, &(l, h))| wi * if wi >= 0 { l } else { h });
                            let hi =
                                row.iter().zip(&xs).map(|(&wi, &(l, h))| wi * if wi >= 0 { h } else { l });
                            (lo.sum::<i128>() + bo, hi.sum::<i128>() + bo)
                        })
                        .collect();
                    (y, s_out)
                }
                Layer::Relu(s) => {
                    (vals[*s].0.iter().map(|&(l, h)| (l.max(0), h.max(0))).collect(), vals[*s].1)
                }
                Layer::Leaky(s) => {
                    let f = |n: i128| if n >= 0 { n << 2 } else { n };
                    (vals[*s].0.iter().map(|&(l, h)| (f(l), f(h))).collect(), vals[*s].1 + 2)
                }
                Layer::Add(a, c) => {
                    let s = vals[*a].1.max(vals[*c].1);
                    let (va, vc) = (rescale(&vals[*a], s), rescale(&vals[*c], s));
                    (va.iter().zip(&vc).map(|(p, q)| (p.0 + q.0, p.1 + q.1)).collect(), s)
                }
                Layer::Sigmoid(src) | Layer::Tanh(src) => {
                    let f: fn(f64) -> f64 =
                        if matches!(layer, Layer::Sigmoid(_)) { sigmoid } else { f64::tanh };
                    let (v, s) = &vals[*src];
                    (v.iter().map(|&e| monotone(e, *s, f)).collect(), FINE)
                }
                Layer::Bn { src, scale, b, mean, p } => {
                    // 16·scale·(x − mean)/p + B at scale 2⁻⁶⁴, the division rounded out.
                    let (v, s) = &vals[*src];
                    let s_in = (*s).max(B_SCALE);
                    let y = v
                        .iter()
                        .enumerate()
                        .map(|(k, &(l, h))| {
                            let m = mean[k] << (s_in - B_SCALE);
                            let (dl, dh) = ((l << (s_in - s)) - m, (h << (s_in - s)) - m);
                            let (nl, nh) = if scale[k] >= 0 { (dl, dh) } else { (dh, dl) };
                            // scale·d at scale s_in + 10, times 16, to scale 64: a shift
                            // (s_in + 10 ≤ 64 + 10 - 4 keeps it a left shift or a floor).
                            let at = |n: i128, up: bool| {
                                let num = 16 * scale[k] * n;
                                let sh = FINE - (s_in + W_SCALE);
                                // A right shift floors: ⌊⌊x⌋/p⌋ ≤ x/p, and ⌈⌊x⌋/p⌉ + 1 ≥ x/p.
                                let (num, floored) =
                                    if sh >= 0 { (num << sh, false) } else { (num >> -sh, true) };
                                let q = num.div_euclid(p[k]);
                                let exact = num.rem_euclid(p[k]) == 0;
                                if up { q + i128::from(!exact) + i128::from(floored) } else { q }
                            };
                            let bo = b[k] << (FINE - B_SCALE);
                            (at(nl, false) + bo, at(nh, true) + bo)
                        })
                        .collect();
                    (y, FINE)
                }
                Layer::MaxPool(src) => {
                    let (v, s) = &vals[*src];
                    (v.windows(2).map(|w| (w[0].0.max(w[1].0), w[0].1.max(w[1].1))).collect(), *s)
                }
            };
            let v = if s > FINE { v.into_iter().map(|e| coarsen(e, s, FINE)).collect() } else { v };
            vals.push((v, s.min(FINE)));
        }
        vals.pop().unwrap()
    }
}

/// `bound ≤ n/2ˢ` (lower) or `bound ≥ n/2ˢ` (upper), exactly.
fn holds(bound: f64, n: i128, s: i32, upper: bool) -> bool {
    let v = bound * 2f64.powi(s); // exact: a power of two
    assert!(v.is_finite() && v.abs() < 2f64.powi(120), "bound {bound} out of the oracle's range");
    if upper { v.floor() as i128 >= n } else { v.ceil() as i128 <= n }
}

/// A box of half-width `2⁻ʳ` around a dyadic centre, as numerators at scale 2⁻²⁰.
fn make_box(n: usize, seed: u64, r: i32) -> (Vec<i128>, Vec<i128>) {
    let mut rng = Rng::new(seed ^ 0x5EED);
    let c: Vec<i128> =
        (0..n).map(|_| ((rng.uniform() * 2.0 - 1.0) * (1 << X_SCALE) as f64) as i128).collect();
    let h = 1i128 << (X_SCALE - r);
    (c.iter().map(|v| v - h).collect(), c.iter().map(|v| v + h).collect())
}

struct Outcome {
    checked: usize,
    violated: usize,
    first: Option<String>,
}

/// Bound `net` on the box with `opts` in `T` and check every bound against the exact
/// outputs at random vertices and at the vertices CROWN's linear bounds point to.
fn check<T: Scalar + BuilderFor>(
    net: &Net,
    b: &(Vec<i128>, Vec<i128>),
    opts: &BoundOptions,
    seed: u64,
) -> Outcome {
    check_spec::<T>(net, b, opts, seed, None)
}

/// [`check`] of `C·y` for an integer specification matrix `C` (rows).
fn check_spec<T: Scalar + BuilderFor>(
    net: &Net,
    (lo, hi): &(Vec<i128>, Vec<i128>),
    opts: &BoundOptions,
    seed: u64,
    spec: Option<&[Vec<i128>]>,
) -> Outcome {
    let g = net.graph::<T>();
    let scale = (1i64 << X_SCALE) as f64;
    let to_t = |v: &[i128]| v.iter().map(|&n| T::from_f64(n as f64 / scale)).collect::<Vec<T>>();
    let p = Perturbation::new_box(to_t(lo), to_t(hi)).unwrap();
    let inputs = [InputValue::Perturbed(p)];
    let c = spec.map(|rows| {
        faer::Mat::<T>::from_fn(rows.len(), rows[0].len(), |r, k| T::from_f64(rows[r][k] as f64))
    });
    let req = BoundRequest {
        return_a: opts.method == Method::Crown,
        c: c.as_ref().map(|c| c.as_ref()),
        ..Default::default()
    };
    let res = lirpa::compute_bounds(&g, &inputs, opts, &req).unwrap();
    let n = lo.len();
    let mut vertices: Vec<Vec<i128>> = Vec::new();
    let mut rng = Rng::new(seed);
    for _ in 0..16 {
        vertices.push((0..n).map(|j| if rng.uniform() < 0.5 { lo[j] } else { hi[j] }).collect());
    }
    if let Some(a) = res.a.first() {
        for (m, up) in [(a.a.lower.as_ref(), false), (a.a.upper.as_ref(), true)] {
            let Some(m) = m else { continue };
            for r in 0..m.nrows() {
                let pick = |j: usize| (m[(r, j)] > T::zero()) == up;
                vertices.push((0..n).map(|j| if pick(j) { hi[j] } else { lo[j] }).collect());
            }
        }
    }
    let mut out = Outcome { checked: 0, violated: 0, first: None };

    for x in &vertices {
        let (mut y, s) = net.exact(x);
        if let Some(rows) = spec {
            // C·[lo, hi], exactly.
            y = rows
                .iter()
                .map(|row| {
                    let at = |up: bool| {
                        row.iter()
                            .zip(&y)
                            .map(|(&c, &(l, h))| c * if (c >= 0) == up { h } else { l })
                            .sum::<i128>()
                    };
                    (at(false), at(true))
                })
                .collect();
        }
        for (i, &(ylo, yhi)) in y.iter().enumerate() {
            for (b, up) in [(res.lower[i], false), (res.upper[i], true)] {
                out.checked += 1;
                let yi = if up { yhi } else { ylo };
                if !holds(b.as_f64(), yi, s, up) {
                    out.violated += 1;
                    out.first.get_or_insert_with(|| {
                        format!(
                            "{} {} {:?} output {i}: {} bound {:e} excludes the exact {:e}",
                            T::NAME,
                            opts.method,
                            opts.fp_sound,
                            if up { "upper" } else { "lower" },
                            b.as_f64(),
                            yi as f64 / 2f64.powi(s)
                        )
                    });
                }
            }
        }
    }
    out
}

fn opts(method: Method, fp_sound: FpSound) -> BoundOptions {
    let mut o = BoundOptions { fp_sound, ..BoundOptions::with_method(method) };
    o.optimize.iterations = 5;
    o
}

const METHODS: [Method; 6] = [
    Method::Ibp,
    Method::Crown,
    Method::CrownIbp,
    Method::AlphaCrown,
    Method::Forward,
    Method::ForwardBackward,
];

/// Every method in both sound modes, f32 and f64, must contain the exact outputs (of
/// `C·y` with a specification): `(bounds checked, default-mode bounds that exclude an
/// exact output in f32, in f64)`.
fn check_every_method(
    net: &Net,
    b: &(Vec<i128>, Vec<i128>),
    seed: u64,
    spec: Option<&[Vec<i128>]>,
) -> (usize, usize, usize) {
    let (mut checked, mut default_f32, mut default_f64) = (0, 0, 0);
    for method in METHODS {
        for mode in [FpSound::Off, FpSound::Real, FpSound::Float32Model] {
            let (o32, o64) = (
                check_spec::<f32>(net, b, &opts(method, mode), seed, spec),
                check_spec::<f64>(net, b, &opts(method, mode), seed, spec),
            );
            if mode == FpSound::Off {
                default_f32 += o32.violated;
                default_f64 += o64.violated;
                continue;
            }
            for o in [o32, o64] {
                checked += o.checked;
                assert_eq!(o.violated, 0, "seed {seed}: {}", o.first.unwrap());
            }
        }
    }
    (checked, default_f32, default_f64)
}

#[test]
fn sound_bounds_contain_exact_outputs_on_random_graphs() {
    let (mut default_violations, mut checked) = (0, 0);
    for seed in 0..60u64 {
        let net = Net::random(seed);
        // Tiny boxes (every ReLU stable: CROWN is exact up to rounding) and wider ones.
        let b = make_box(net.n_in, seed, if seed % 3 == 0 { 4 } else { 18 });
        let (c, v, _) = check_every_method(&net, &b, seed, None);
        checked += c;
        default_violations += v;
    }
    println!(
        "{checked} sound bounds checked; {default_violations} default-mode f32 bounds excluded an exact output"
    );
    assert!(default_violations > 0, "the oracle should see round-to-nearest bounds fail on these networks");
}

#[test]
fn sound_bounds_enclose_exact_outputs_through_smooth_and_pooling_layers() {
    let (mut default_violations, mut checked) = (0, 0);
    let mut kinds = [0usize; 4];
    for seed in 0..48u64 {
        let net = Net::random_with(seed, true);
        for l in &net.layers {
            match l {
                Layer::Sigmoid(_) => kinds[0] += 1,
                Layer::Tanh(_) => kinds[1] += 1,
                Layer::Bn { .. } => kinds[2] += 1,
                Layer::MaxPool(_) => kinds[3] += 1,
                _ => {}
            }
        }
        let b = make_box(net.n_in, seed, if seed % 3 == 0 { 4 } else { 18 });
        let (c, v, _) = check_every_method(&net, &b, seed, None);
        checked += c;
        default_violations += v;
    }
    println!(
        "{checked} sound bounds checked (Sigmoid, Tanh, BatchNormalization, MaxPool layers: {kinds:?}); \
         {default_violations} default-mode f32 bounds excluded the exact output's enclosure"
    );
    assert!(kinds.iter().all(|&k| k >= 5), "every layer kind should occur: {kinds:?}");
}

/// Weights `±2²⁴` (f32) or `±2³⁴` (f64) that cancel, biases with low bits that no sum of
/// them keeps, one stable ReLU layer, and a box of half-width 2⁻²⁰: the exact extremes
/// are at vertices, and round-to-nearest concretization lands on the wrong side of them
/// for about half the outputs.
fn cancellation_net(big: i128, outputs: usize, seed: u64) -> Net {
    let mut rng = Rng::new(seed);
    let mut odd = |n: f64| (((rng.uniform() * 2.0 - 1.0) * n).round() as i128) | 1;
    let w1 = vec![vec![big << W_SCALE, -(big << W_SCALE), 1 << W_SCALE]; 1]
        .into_iter()
        .chain((0..3).map(|_| vec![odd(1e4), odd(1e4), odd(1e4)]))
        .collect::<Vec<_>>();
    // The first unit swings by `big·2⁻¹⁹` and sits at `big·2⁻¹⁸`: stable.
    let b1 = vec![odd((1 << 23) as f64) + (big << 2), 1 << 28, 1 << 28, 1 << 28];
    let w2 = (0..outputs).map(|_| vec![big << W_SCALE, odd(2e3), odd(2e3), odd(2e3)]).collect();
    let b2 = (0..outputs).map(|_| odd((1i64 << 40) as f64)).collect();
    Net {
        n_in: 3,
        layers: vec![
            Layer::Gemm { src: 0, w: w1, b: b1 },
            Layer::Relu(1),
            Layer::Gemm { src: 2, w: w2, b: b2 },
        ],
    }
}

/// One input copied to 8 channels, then a BatchNormalization whose mean (about 2²⁰)
/// times `scale/√(var + ε)` (not dyadic: `√(var + ε) = p/16` with `p` odd) nearly
/// cancels `B`: the folded constant `B − mean·a` loses about 2⁻³² absolute in `f64` to
/// the fold, far more than its own rounding, on a box of half-width 2⁻²⁰.
fn batch_norm_fold_net(seed: u64) -> Net {
    let mut rng = Rng::new(seed);
    let mut odd = |n: f64| (((rng.uniform() * 2.0 - 1.0) * n).round() as i128) | 1;
    let c = 8;
    let scale: Vec<i128> = (0..c).map(|_| odd(4096.0)).collect();
    let p: Vec<i128> = (0..c).map(|_| 3 + 2 * odd(100.0).abs()).collect();
    let mean: Vec<i128> = (0..c).map(|_| (1i128 << 40) + odd(1e6)).collect();
    // B = mean·a rounded to 2⁻²⁰: a = 16·scale/(p·2¹⁰).
    let b = (0..c).map(|k| (mean[k] * 16 * scale[k]) / (p[k] << W_SCALE)).collect();
    Net {
        n_in: 1,
        layers: vec![
            Layer::Gemm { src: 0, w: vec![vec![1 << W_SCALE]; c], b: vec![0; c] },
            Layer::Bn { src: 1, scale, b, mean, p },
        ],
    }
}

#[test]
fn batch_norm_fold_cancellation_is_covered() {
    let mut default_violations = 0;
    for seed in 0..20u64 {
        let net = batch_norm_fold_net(seed);
        let b = make_box(1, seed, 20);
        let (_, v32, v64) = check_every_method(&net, &b, seed, None);
        default_violations += v32 + v64;
    }
    println!("{default_violations} default-mode bounds excluded the exact output's enclosure");
    assert!(default_violations > 0, "the fold's cancellation should fool round-to-nearest");
}

/// `C·σ(W·x + b)` with large cancelling rows in `C` (the specification is the only
/// linear map after the activation): the products and sums of the activation's lines
/// with `C` round by far more than the result's ulp.
#[test]
fn specification_sums_over_smooth_activations_are_covered() {
    let mut default_violations = 0;
    for seed in 0..20u64 {
        let mut rng = Rng::new(seed);
        let mut int = |n: f64| ((rng.uniform() * 2.0 - 1.0) * n).round() as i128;
        // Pre-activations near 0 (Sigmoid's intercepts near 1/2 dominate its lines).
        let w = (0..6).map(|_| (0..2).map(|_| int(2.0)).collect()).collect();
        let b = (0..6).map(|_| int(64.0)).collect();
        let act = if seed % 2 == 0 { Layer::Sigmoid(1) } else { Layer::Tanh(1) };
        let net = Net { n_in: 2, layers: vec![Layer::Gemm { src: 0, w, b }, act] };
        // Rows of ±2²⁰-sized entries that nearly cancel, plus small ones.
        let spec: Vec<Vec<i128>> = (0..4)
            .map(|_| {
                let big = (1 << 20) + int(1000.0);
                vec![big, -big, big, -big, int(1000.0), int(1000.0)]
            })
            .collect();
        let bx = make_box(2, seed, 18);
        let (_, v32, v64) = check_every_method(&net, &bx, seed, Some(&spec));
        default_violations += v32 + v64;
    }
    println!("{default_violations} default-mode bounds excluded the exact output's enclosure");
}

#[test]
fn cancellation_fools_round_to_nearest_not_the_sound_mode() {
    for (name, big) in [("f32", 1i128 << 24), ("f64", 1i128 << 34)] {
        let mut default_violations = 0;
        for seed in 0..20u64 {
            let net = cancellation_net(big, 8, seed);
            let b = make_box(3, seed, 20);
            for method in METHODS {
                let run = |mode| match name {
                    "f32" => check::<f32>(&net, &b, &opts(method, mode), seed),
                    _ => check::<f64>(&net, &b, &opts(method, mode), seed),
                };
                default_violations += run(FpSound::Off).violated;
                for mode in [FpSound::Real, FpSound::Float32Model] {
                    let o = run(mode);
                    assert_eq!(o.violated, 0, "{name} seed {seed}: {}", o.first.unwrap());
                }
            }
        }
        println!("{name}: {default_violations} default-mode bounds excluded an exact output");
        assert!(default_violations > 0, "{name}: the cancellation network should fool round-to-nearest");
    }
}

#[test]
fn unsupported_operators_are_refused_by_name() {
    let mut b = GraphBuilder::<f32>::new();
    b.add_input("x", &[1, 2]).unwrap();
    b.add_node("s", "Exp", "", 13, &Attributes::default(), &[Some("x")]).unwrap();
    let g = b.finish(&["s"]).unwrap();
    let p = Perturbation::new_box(vec![0.0f32, 0.0], vec![1.0, 1.0]).unwrap();
    let inputs = [InputValue::Perturbed(p)];
    let err =
        lirpa::compute_bounds(&g, &inputs, &opts(Method::Crown, FpSound::Real), &BoundRequest::default())
            .unwrap_err()
            .to_string();
    assert!(err.contains("Exp") && err.contains("'s'") && err.contains("fp-sound"), "{err}");
    assert!(!err.contains("''"), "{err}");
    assert!(!err.contains('\n'));
}

//! Floating-point-sound bounds (`BoundOptions::fp_sound`) against an exact oracle.
//!
//! Networks are built from dyadic constants (weights `k/2¹⁰`, biases `k/2²⁰`, inputs
//! `k/2²⁰`), so every value of the real network at a dyadic input is a dyadic rational
//! that `i128` holds exactly (a value at scale `s` is `n/2ˢ`); the test evaluates the
//! network that way, without any rounding, and compares with tolerance 0.
//!
//! - Random small DAGs (Gemm, ReLU, LeakyReLU with α = 1/4, residual Add, fan-out), f32
//!   and f64, IBP, CROWN, CROWN-IBP and α-CROWN: no sound-mode bound excludes the
//!   exact output at random vertices of the box or at the vertex where CROWN's linear
//!   bound is smallest (largest) (tiny boxes keep every ReLU stable, so CROWN's bound is
//!   attained there up to rounding, which is what round-to-nearest gets wrong).
//! - The default mode's bounds are violated on the same networks (the oracle sees
//!   rounding), and on a built cancellation network (large cancelling weights, a bias
//!   that is no sum of them) in f32 and f64; the sound mode's are not.
//! - Operators without an error model, and the forward modes, are refused by name.

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
                Layer::Relu(s) | Layer::Leaky(s) | Layer::Add(s, _) => self.width(*s),
            },
        }
    }

    fn random(seed: u64) -> Net {
        let mut rng = Rng::new(seed);
        let mut int = |n: f64| ((rng.uniform() * 2.0 - 1.0) * n).round() as i128;
        let n_in = 1 + (seed % 4) as usize;
        let mut net = Net { n_in, layers: vec![] };
        let mut gemms = 0;
        for k in 0..(3 + seed % 6) as usize {
            let last = net.layers.len();
            let pick = (int(1e6).unsigned_abs() as usize) % (last + 1);
            let kind = int(1e6).unsigned_abs() % 4;
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
            }
        }
        b.finish(&[&format!("v{}", self.layers.len())]).unwrap()
    }

    /// The exact output at input `x` (numerators at scale 2⁻²⁰): `(numerators, scale)`.
    fn exact(&self, x: &[i128]) -> (Vec<i128>, i32) {
        let mut vals: Vec<(Vec<i128>, i32)> = vec![(x.to_vec(), X_SCALE)];
        let rescale =
            |(v, s): &(Vec<i128>, i32), to: i32| -> Vec<i128> { v.iter().map(|&n| n << (to - s)).collect() };
        for layer in &self.layers {
            let next = match layer {
                Layer::Gemm { src, w, b } => {
                    let (xv, s) = &vals[*src];
                    let s_out = (s + W_SCALE).max(B_SCALE);
                    let xs = rescale(&(xv.clone(), *s), s_out - W_SCALE);
                    let y = w
                        .iter()
                        .zip(b)
                        .map(|(row, &bo)| {
                            row.iter().zip(&xs).map(|(&wi, &xi)| wi * xi).sum::<i128>()
                                + (bo << (s_out - B_SCALE))
                        })
                        .collect();
                    (y, s_out)
                }
                Layer::Relu(s) => (vals[*s].0.iter().map(|&n| n.max(0)).collect(), vals[*s].1),
                Layer::Leaky(s) => {
                    (vals[*s].0.iter().map(|&n| if n >= 0 { n << 2 } else { n }).collect(), vals[*s].1 + 2)
                }
                Layer::Add(a, c) => {
                    let s = vals[*a].1.max(vals[*c].1);
                    let (va, vc) = (rescale(&vals[*a], s), rescale(&vals[*c], s));
                    (va.iter().zip(&vc).map(|(p, q)| p + q).collect(), s)
                }
            };
            vals.push(next);
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
    (lo, hi): &(Vec<i128>, Vec<i128>),
    opts: &BoundOptions,
    seed: u64,
) -> Outcome {
    let g = net.graph::<T>();
    let scale = (1i64 << X_SCALE) as f64;
    let to_t = |v: &[i128]| v.iter().map(|&n| T::from_f64(n as f64 / scale)).collect::<Vec<T>>();
    let p = Perturbation::new_box(to_t(lo), to_t(hi)).unwrap();
    let inputs = [InputValue::Perturbed(p)];
    let req = BoundRequest { return_a: opts.method == Method::Crown, ..Default::default() };
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
        let (y, s) = net.exact(x);
        for (i, &yi) in y.iter().enumerate() {
            for (b, up) in [(res.lower[i], false), (res.upper[i], true)] {
                out.checked += 1;
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

const METHODS: [Method; 4] = [Method::Ibp, Method::Crown, Method::CrownIbp, Method::AlphaCrown];

#[test]
fn sound_bounds_contain_exact_outputs_on_random_graphs() {
    let (mut default_violations, mut checked) = (0, 0);
    for seed in 0..60u64 {
        let net = Net::random(seed);
        // Tiny boxes (every ReLU stable: CROWN is exact up to rounding) and wider ones.
        let b = make_box(net.n_in, seed, if seed % 3 == 0 { 4 } else { 18 });
        for method in METHODS {
            for mode in [FpSound::Real, FpSound::Float32Model] {
                for o in [
                    check::<f32>(&net, &b, &opts(method, mode), seed),
                    check::<f64>(&net, &b, &opts(method, mode), seed),
                ] {
                    checked += o.checked;
                    assert_eq!(o.violated, 0, "seed {seed}: {}", o.first.unwrap());
                }
            }
            default_violations += check::<f32>(&net, &b, &opts(method, FpSound::Off), seed).violated;
        }
    }
    println!(
        "{checked} sound bounds checked; {default_violations} default-mode f32 bounds excluded an exact output"
    );
    assert!(default_violations > 0, "the oracle should see round-to-nearest bounds fail on these networks");
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

#[test]
fn cancellation_fools_round_to_nearest_not_the_sound_mode() {
    for (name, big) in [("f32", 1i128 << 24), ("f64", 1i128 << 34)] {
        let mut default_violations = 0;
        for seed in 0..20u64 {
            let net = cancellation_net(big, 8, seed);
            let b = make_box(3, seed, 20);
            for method in [Method::Crown, Method::CrownIbp, Method::AlphaCrown, Method::Ibp] {
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
fn unsupported_operators_and_methods_are_refused_by_name() {
    let mut b = GraphBuilder::<f32>::new();
    b.add_input("x", &[1, 2]).unwrap();
    b.add_node("s", "Sigmoid", "", 13, &Attributes::default(), &[Some("x")]).unwrap();
    let g = b.finish(&["s"]).unwrap();
    let p = Perturbation::new_box(vec![0.0f32, 0.0], vec![1.0, 1.0]).unwrap();
    let inputs = [InputValue::Perturbed(p)];
    let err =
        lirpa::compute_bounds(&g, &inputs, &opts(Method::Crown, FpSound::Real), &BoundRequest::default())
            .unwrap_err()
            .to_string();
    assert!(err.contains("Sigmoid") && err.contains("'s'") && err.contains("fp-sound"), "{err}");
    assert!(!err.contains("''"), "{err}");
    assert!(!err.contains('\n'));
    let net = Net::random(1).graph::<f32>();
    let p = Perturbation::new_box(vec![0.0f32; 2], vec![0.1; 2]).unwrap();
    for method in [Method::Forward, Method::ForwardBackward] {
        let err = lirpa::compute_bounds(
            &net,
            &[InputValue::Perturbed(p.clone())],
            &opts(method, FpSound::Real),
            &BoundRequest::default(),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("fp-sound") && err.contains(&method.to_string()), "{err}");
    }
}

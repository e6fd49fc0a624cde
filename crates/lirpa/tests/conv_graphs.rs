//! Property tests over random small convolutional graphs built through the operator
//! registry: Conv (random kernel, stride, dilation, asymmetric padding, groups, 1-D and
//! 2-D), ConvTranspose, ReLU, MaxPool, AveragePool, GlobalAveragePool, BatchNormalization, Pad,
//! residual Add of two perturbed values, and a dense head.
//!
//! - Soundness: every sampled output lies inside the IBP, CROWN, CROWN-IBP and α-CROWN
//!   bounds, and α-CROWN is never looser than CROWN.
//! - Equivalence: with windowed (compact) coefficients on convolutional layers, CROWN
//!   gives the same bounds as with dense coefficients (`ConvMode::Auto` vs `Dense`), and
//!   so do the α-CROWN bound and its gradient at random relaxation parameters.
//!
//! Case count: `PROPTEST_CASES`; seed: `PROPTEST_RNG_SEED`.

use lirpa::core::{Attr, Attributes, GraphBuilder, TensorData};
use lirpa::sample::{Rng, sample_points};
use lirpa::{BoundOptions, BoundRequest, ConvMode, Graph, InputValue, Method, Norm, Perturbation};
use proptest::prelude::*;

#[derive(Clone, Debug)]
struct Spec {
    one_d: bool,
    c0: usize,
    h: usize,
    w: usize,
    /// (kind, four parameters) per step.
    steps: Vec<(u8, [usize; 4])>,
    seed: u64,
    /// 0: box, 1: L∞, 2: L2, 3: L1.
    set: u8,
    radius: f64,
}

fn arb_spec() -> impl Strategy<Value = Spec> {
    let step = (0u8..10, prop::array::uniform4(0usize..12));
    (
        any::<bool>(),
        1usize..4,
        3usize..9,
        3usize..9,
        prop::collection::vec(step, 1..7),
        any::<u64>(),
        0u8..4,
        0.01f64..0.8,
    )
        .prop_map(|(one_d, c0, h, w, steps, seed, set, radius)| Spec {
            one_d,
            c0,
            h,
            w,
            steps,
            seed,
            set,
            radius,
        })
}

fn ints(v: &[i64]) -> Attr {
    Attr::Ints(v.to_vec())
}

/// Build the graph; steps whose parameters do not fit the current shape are skipped
/// (the builder must then return an error, never panic).
fn build(spec: &Spec) -> Graph<f64> {
    let mut rng = Rng::new(spec.seed);
    let mut b = GraphBuilder::<f64>::new();
    let in_shape: Vec<usize> =
        if spec.one_d { vec![1, spec.c0, spec.w] } else { vec![1, spec.c0, spec.h, spec.w] };
    b.add_input("x", &in_shape).unwrap();
    let dims = in_shape.len() - 2;
    let mut vals: Vec<String> = vec!["x".into()];
    let mut n = 0;
    let mut konst = |b: &mut GraphBuilder<f64>, shape: &[usize], rng: &mut Rng, lo: f64, hi: f64| -> String {
        n += 1;
        let name = format!("k{n}");
        let len: usize = shape.iter().product();
        let data = (0..len).map(|_| lo + (hi - lo) * rng.uniform()).collect();
        b.add_constant(&name, TensorData::float(shape, data).unwrap()).unwrap();
        name
    };
    let rep = |v: i64| -> Vec<i64> { vec![v; dims] };
    for (i, (kind, p)) in spec.steps.iter().enumerate() {
        let src = vals.last().unwrap().clone();
        let shape = b.shape(&src).unwrap().clone();
        let c = shape[1];
        let name = format!("v{i}");
        let mut attrs = Attributes::default();
        let res = match kind {
            0..=2 => {
                // Conv with random geometry.
                let groups = if p[0] % 3 == 0 && c > 1 { c } else { 1 };
                let co = if groups > 1 { c * (1 + p[1] % 2) } else { 1 + p[1] % 4 };
                let k = 1 + p[2] % 3;
                let mut wshape = vec![co, c / groups];
                wshape.extend(std::iter::repeat_n(k, dims));
                let wt = konst(&mut b, &wshape, &mut rng, -1.0, 1.0);
                let bias = konst(&mut b, &[co], &mut rng, -0.5, 0.5);
                attrs.insert("group", Attr::Int(groups as i64));
                attrs.insert("strides", ints(&rep(1 + (p[3] % 2) as i64)));
                attrs.insert("dilations", ints(&rep(1 + (p[3] / 2 % 2) as i64)));
                let pads: Vec<i64> = (0..2 * dims).map(|j| ((p[j % 4] + j) % 3) as i64).collect();
                attrs.insert("pads", ints(&pads));
                b.add_node(&name, "Conv", "", 13, &attrs, &[Some(&src), Some(&wt), Some(&bias)])
            }
            3 | 4 => b.add_node(&name, "Relu", "", 13, &attrs, &[Some(&src)]),
            5 => {
                let k = 1 + p[0] % 3;
                attrs.insert("kernel_shape", ints(&rep(k as i64)));
                attrs.insert("strides", ints(&rep(1 + (p[1] % 3) as i64)));
                let pad = (p[2] % k.max(1)).min(k / 2) as i64;
                attrs.insert("pads", ints(&vec![pad; 2 * dims]));
                let op = if p[3] % 2 == 0 { "MaxPool" } else { "AveragePool" };
                if op == "AveragePool" {
                    attrs.insert("count_include_pad", Attr::Int((p[3] / 2 % 2) as i64));
                }
                b.add_node(&name, op, "", 13, &attrs, &[Some(&src)])
            }
            6 => {
                let scale = konst(&mut b, &[c], &mut rng, -1.5, 1.5);
                let bias = konst(&mut b, &[c], &mut rng, -0.5, 0.5);
                let mean = konst(&mut b, &[c], &mut rng, -0.5, 0.5);
                let var = konst(&mut b, &[c], &mut rng, 0.1, 2.0);
                b.add_node(
                    &name,
                    "BatchNormalization",
                    "",
                    13,
                    &attrs,
                    &[Some(&src), Some(&scale), Some(&bias), Some(&mean), Some(&var)],
                )
            }
            7 => {
                // Residual: Add the latest value to an earlier one of the same shape.
                match vals.iter().rev().skip(1).find(|v| b.shape(v) == Some(&shape)) {
                    Some(other) => {
                        let other = other.clone();
                        b.add_node(&name, "Add", "", 13, &attrs, &[Some(&src), Some(&other)])
                    }
                    None => b.add_node(&name, "Relu", "", 13, &attrs, &[Some(&src)]),
                }
            }
            9 => {
                // ConvTranspose with random stride, padding, output padding.
                let co = 1 + p[1] % 3;
                let k = 1 + p[2] % 3;
                let mut wshape = vec![c, co];
                wshape.extend(std::iter::repeat_n(k, dims));
                let wt = konst(&mut b, &wshape, &mut rng, -1.0, 1.0);
                let bias = konst(&mut b, &[co], &mut rng, -0.5, 0.5);
                let s = 1 + (p[3] % 2) as i64;
                attrs.insert("strides", ints(&rep(s)));
                attrs.insert("output_padding", ints(&rep((p[0] % 2) as i64 * (s - 1))));
                let pads: Vec<i64> =
                    (0..2 * dims).map(|j| ((p[j % 4] + j) % 2) as i64 * (k as i64 - 1).min(1)).collect();
                attrs.insert("pads", ints(&pads));
                b.add_node(&name, "ConvTranspose", "", 13, &attrs, &[Some(&src), Some(&wt), Some(&bias)])
            }
            _ => {
                let pads: Vec<i64> = (0..2 * shape.len())
                    .map(|j| if j % shape.len() >= 2 { ((p[j % 4] + j) % 2) as i64 } else { 0 })
                    .collect();
                let pads_name = format!("pads{i}");
                let data = pads.iter().map(|&v| v as f64).collect();
                let t = TensorData::new(&[pads.len()], lirpa::core::DType::Int, data).unwrap();
                b.add_constant(&pads_name, t).unwrap();
                // Fill value -0.5, 0 or 0.5 (a non-zero fill goes to the bias).
                let fill_name = format!("fill{i}");
                let fill = TensorData::float(&[], vec![(p[1] % 3) as f64 * 0.5 - 0.5]).unwrap();
                b.add_constant(&fill_name, fill).unwrap();
                b.add_node(&name, "Pad", "", 13, &attrs, &[Some(&src), Some(&pads_name), Some(&fill_name)])
            }
        };
        if res.is_ok() {
            vals.push(name);
        }
    }
    // Dense head: Flatten, Gemm to 3 outputs.
    let last = vals.last().unwrap().clone();
    let mut fl = Attributes::default();
    fl.insert("axis", Attr::Int(1));
    b.add_node("flat", "Flatten", "", 13, &fl, &[Some(&last)]).unwrap();
    let width = b.shape("flat").unwrap()[1];
    let w = konst(&mut b, &[3, width], &mut rng, -1.0, 1.0);
    let mut g = Attributes::default();
    g.insert("transB", Attr::Int(1));
    b.add_node("out", "Gemm", "", 13, &g, &[Some("flat"), Some(&w)]).unwrap();
    b.finish(&["out"]).unwrap()
}

fn perturbation(spec: &Spec, n: usize) -> Perturbation<f64> {
    let mut rng = Rng::new(spec.seed ^ 0x5EED);
    let center: Vec<f64> = (0..n).map(|_| rng.uniform() * 2.0 - 1.0).collect();
    match spec.set {
        0 => {
            let r: Vec<f64> = (0..n).map(|_| rng.uniform() * spec.radius).collect();
            Perturbation::new_box(
                center.iter().zip(&r).map(|(c, r)| c - r).collect(),
                center.iter().zip(&r).map(|(c, r)| c + r).collect(),
            )
            .unwrap()
        }
        1 => Perturbation::new_ball(Norm::Inf, center, spec.radius).unwrap(),
        2 => Perturbation::new_ball(Norm::L2, center, spec.radius * 3.0).unwrap(),
        _ => Perturbation::new_ball(Norm::L1, center, spec.radius * 5.0).unwrap(),
    }
}

fn bounds(g: &Graph<f64>, p: &Perturbation<f64>, method: Method, mode: ConvMode) -> (Vec<f64>, Vec<f64>) {
    let opts = BoundOptions { conv_mode: mode, ..BoundOptions::with_method(method) };
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
        let n = g.node(g.input().unwrap()).numel();
        let p = perturbation(&spec, n);
        let out = g.output().unwrap();
        let points = sample_points(&p, 48, spec.seed);
        let crown = bounds(&g, &p, Method::Crown, ConvMode::Auto);
        for method in [Method::Ibp, Method::Crown, Method::CrownIbp, Method::AlphaCrown] {
            let (lo, hi) = bounds(&g, &p, method, ConvMode::Auto);
            if method == Method::AlphaCrown {
                for i in 0..lo.len() {
                    prop_assert!(lo[i] >= crown.0[i] && hi[i] <= crown.1[i],
                        "α-CROWN output {i}: [{}, {}] looser than CROWN [{}, {}]", lo[i], hi[i], crown.0[i], crown.1[i]);
                }
            }
            for x in &points {
                let y = g.forward(&[x], out).unwrap();
                for i in 0..y.len() {
                    prop_assert!(lo[i] <= y[i] + tol(y[i]) && y[i] <= hi[i] + tol(y[i]),
                        "{method} output {i}: {} not in [{}, {}]", y[i], lo[i], hi[i]);
                }
            }
        }
    }

    #[test]
    fn windowed_and_dense_coefficients_agree(spec in arb_spec()) {
        let g = build(&spec);
        let n = g.node(g.input().unwrap()).numel();
        let p = perturbation(&spec, n);
        let (wl, wu) = bounds(&g, &p, Method::Crown, ConvMode::Auto);
        let (dl, du) = bounds(&g, &p, Method::Crown, ConvMode::Dense);
        for i in 0..wl.len() {
            prop_assert!((wl[i] - dl[i]).abs() <= tol(dl[i]) && (wu[i] - du[i]).abs() <= tol(du[i]),
                "CROWN output {i}: windowed [{}, {}] vs dense [{}, {}]", wl[i], wu[i], dl[i], du[i]);
        }
        // α-CROWN: the bound and its gradient at random parameters. (Whole optimization
        // runs are not compared: Adam's normalized steps turn rounding-level gradient
        // differences into different trajectories.)
        let inputs = [InputValue::Perturbed(p.clone())];
        let req = BoundRequest::default();
        let alpha = |mode| BoundOptions { conv_mode: mode, ..BoundOptions::with_method(Method::AlphaCrown) };
        let (_, st) = lirpa::compute_bounds_optimized(&g, &inputs, &alpha(ConvMode::Dense), &req, None).unwrap();
        let mut rng = Rng::new(spec.seed ^ 0xa1fa);
        for mut run in st.runs {
            for v in run.passes.iter_mut().flat_map(|p| p.nodes.iter_mut()).flat_map(|n| [&mut n.lower, &mut n.upper]).flatten() {
                v.iter_mut().for_each(|x| *x = rng.uniform());
            }
            let (wb, wg) = lirpa::bound_and_gradient(&g, &inputs, &alpha(ConvMode::Auto), &req, &run).unwrap();
            let (db, dg) = lirpa::bound_and_gradient(&g, &inputs, &alpha(ConvMode::Dense), &req, &run).unwrap();
            for i in 0..wb.len() {
                prop_assert!((wb[i] - db[i]).abs() <= tol(db[i]), "α bound {i}: windowed {} vs dense {}", wb[i], db[i]);
            }
            let flat = |r: &lirpa::AlphaRun<f64>| -> Vec<f64> {
                r.passes.iter().flat_map(|p| p.nodes.iter()).flat_map(|n| [&n.lower, &n.upper]).flatten().flatten().copied().collect()
            };
            let (wg, dg) = (flat(&wg), flat(&dg));
            let scale = dg.iter().fold(1.0f64, |m, x| m.max(x.abs()));
            for (k, (a, b)) in wg.iter().zip(&dg).enumerate() {
                prop_assert!((a - b).abs() <= 1e-9 * scale, "α gradient {k}: windowed {a} vs dense {b}");
            }
        }
    }
}

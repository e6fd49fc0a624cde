//! Deterministic sampling of perturbation sets, for soundness checks: every bound
//! must contain the model's output at every sampled point.

use crate::{Norm, Perturbation, Scalar};

pub use lirpa_core::rng::Rng;

/// Points of a perturbation set: the centre, then a mix of extreme points (box
/// vertices, sphere points, L1 vertices) and interior points. Every point lies in the
/// set (coordinates are clamped to it, so rounding cannot leave it).
pub fn sample_points<T: Scalar>(ptb: &Perturbation<T>, count: usize, seed: u64) -> Vec<Vec<T>> {
    let mut rng = Rng::new(seed);
    let center: Vec<f64> = ptb.center().iter().map(|x| x.as_f64()).collect();
    let (lo, hi) = ptb.interval();
    let (lo, hi): (Vec<f64>, Vec<f64>) =
        (lo.iter().map(|x| x.as_f64()).collect(), hi.iter().map(|x| x.as_f64()).collect());
    let n = center.len();
    let mut out = Vec::with_capacity(count);
    for k in 0..count {
        let p: Vec<f64> = if k == 0 {
            center.clone()
        } else {
            match ptb {
                Perturbation::Box { .. } | Perturbation::Ball { norm: Norm::Inf, .. } => {
                    if k % 2 == 1 {
                        (0..n).map(|i| if rng.next_u64() & 1 == 0 { lo[i] } else { hi[i] }).collect()
                    } else {
                        (0..n).map(|i| lo[i] + (hi[i] - lo[i]) * rng.uniform()).collect()
                    }
                }
                Perturbation::Ball { norm: Norm::L2, eps, .. } => {
                    let g: Vec<f64> = (0..n).map(|_| rng.normal()).collect();
                    let norm = g.iter().map(|x| x * x).sum::<f64>().sqrt().max(1e-300);
                    // Radius slightly inside the sphere so rounding cannot leave the ball.
                    let r = eps.as_f64()
                        * (1.0 - 1e-6)
                        * if k % 2 == 1 { 1.0 } else { rng.uniform().powf(1.0 / n as f64) };
                    (0..n).map(|i| center[i] + r * g[i] / norm).collect()
                }
                Perturbation::Ball { norm: Norm::L1, eps, .. } => {
                    let e = eps.as_f64() * (1.0 - 1e-6);
                    if k % 2 == 1 {
                        let mut p = center.clone();
                        let i = rng.below(n);
                        p[i] += if rng.next_u64() & 1 == 0 { e } else { -e };
                        p
                    } else {
                        // Uniform direction on the L1 sphere, random radius.
                        let w: Vec<f64> = (0..n).map(|_| -rng.uniform().max(1e-300).ln()).collect();
                        let s: f64 = w.iter().sum();
                        let r = e * rng.uniform();
                        (0..n)
                            .map(|i| {
                                center[i] + r * w[i] / s * if rng.next_u64() & 1 == 0 { 1.0 } else { -1.0 }
                            })
                            .collect()
                    }
                }
            }
        };
        out.push(p.iter().enumerate().map(|(i, &x)| T::from_f64(x.clamp(lo[i], hi[i]))).collect());
    }
    out
}

/// A random ReLU MLP `n_in → widths… → n_out` (`Gemm` with `transB = 1`, `Relu` between
/// layers; nodes `x`, `g0`, `r0`, `g1`, …), with its weights for tests that compute
/// with them independently: layer `i` maps `h` to `W_i·h + b_i`, `W_i` row-major
/// `width × inputs`, uniform in `±1.5/√inputs`, biases in `±0.3`.
pub struct ReluMlp {
    pub graph: crate::Graph<f64>,
    /// `(W, b)` per layer, `W[o][i]`.
    pub layers: Vec<(Vec<Vec<f64>>, Vec<f64>)>,
}

impl ReluMlp {
    /// Build it from `seed` (needs the linear and ReLU operator plugins).
    pub fn new(seed: u64, n_in: usize, widths: &[usize], n_out: usize) -> crate::Result<ReluMlp> {
        ReluMlp::with_activation(seed, n_in, widths, n_out, "Relu")
    }

    /// The same network with another element-wise activation (an ONNX operator type,
    /// e.g. `Sigmoid`) in place of ReLU.
    pub fn with_activation(
        seed: u64,
        n_in: usize,
        widths: &[usize],
        n_out: usize,
        activation: &str,
    ) -> crate::Result<ReluMlp> {
        use crate::core::{Attr, Attributes, GraphBuilder, TensorData};
        let mut rng = Rng::new(seed);
        let mut b = GraphBuilder::<f64>::new();
        b.add_input("x", &[1, n_in])?;
        let mut src = ("x".to_string(), n_in);
        let mut dims: Vec<usize> = widths.to_vec();
        dims.push(n_out);
        let mut layers = Vec::new();
        for (i, &w) in dims.iter().enumerate() {
            let scale = 1.5 / (src.1 as f64).sqrt();
            let wd: Vec<f64> = (0..w * src.1).map(|_| (rng.uniform() * 2.0 - 1.0) * scale).collect();
            let bd: Vec<f64> = (0..w).map(|_| (rng.uniform() * 2.0 - 1.0) * 0.3).collect();
            layers.push((wd.chunks(src.1).map(<[f64]>::to_vec).collect(), bd.clone()));
            b.add_constant(&format!("w{i}"), TensorData::float(&[w, src.1], wd)?)?;
            b.add_constant(&format!("b{i}"), TensorData::float(&[w], bd)?)?;
            let mut attrs = Attributes::default();
            attrs.insert("transB", Attr::Int(1));
            let name = format!("g{i}");
            let (wn, bn) = (format!("w{i}"), format!("b{i}"));
            b.add_node(&name, "Gemm", "", 13, &attrs, &[Some(&src.0), Some(&wn), Some(&bn)])?;
            src = (name, w);
            if i + 1 < dims.len() {
                let r = format!("r{i}");
                b.add_node(&r, activation, "", 13, &Attributes::default(), &[Some(&src.0)])?;
                src = (r, w);
            }
        }
        Ok(ReluMlp { graph: b.finish(&[&src.0])?, layers })
    }
}

//! LayerNormalization `y = (x − μ)·(v + ε)^{-1/2}·γ + β` over the trailing axes from
//! `axis`, with `μ` the mean and `v` the (biased) variance of each normalized group.
//!
//! Relaxation (decomposed, as auto_LiRPA's `complex` LayerNorm, in one operator):
//!
//! 1. `d = x − μ` is exact (a linear map); its interval comes from the input box.
//! 2. `s_i = d_i²`: chord above, tangent at the point of `[d_l, d_u]` nearest 0 below.
//! 3. `w = mean(s) + ε`, exact given `s`; `w ∈ [mean(s_l) + ε, mean(s_u) + ε]`.
//! 4. `r = w^{-1/2}` (convex, decreasing): chord above, tangent at the midpoint below.
//!    A lower bound of `w` that is not positive (`ε = 0` and a variance that may
//!    vanish) is an error naming the node.
//! 5. `p_i = d_i·r`: the McCormick planes of the bilinear plugin (`d` as `x`).
//! 6. `y_i = γ_i·p_i + β_i`, exact.
//!
//! A backward pass composes the lines right to left, choosing at each step the line
//! the sign of the current coefficient requires, per row. Everything is computed in
//! f64; every line's constant is widened outward by `8·ε_T` of its magnitude. The final
//! bias is widened by `(N + 16)·ε_64` times the sum, over every term of the chain, of
//! |bias term| and |coefficient|·max|variable| on the box (the rounding of sums with
//! cancellation is relative to the sum of |terms|, not to the sum), plus
//! `8·ε_T·(|bias| + Σ_j |c_j|·max(|l_j|, |u_j|))` for the casts to `T`. Scale and bias
//! must be constants.

use crate::groups::{norm_axis, reduce_groups};
use faer::{Mat, MatRef};
use lirpa_core::op::{BackwardCtx, Evaluate, Interval, IntervalRule, LinearRelaxation, NodeDef, Operator};
use lirpa_core::{
    BackwardResult, BuiltOp, Error, LinearA, LinearBias, Result, Scalar, broadcast_source_index, numel,
};
use smallvec::smallvec;

#[derive(Debug)]
pub struct LayerNorm {
    groups: Vec<Vec<usize>>,
    /// Scale and bias per position within a group.
    gamma: Vec<f64>,
    beta: Vec<f64>,
    eps: f64,
    n: usize,
}

pub fn build_layer_norm<T: Scalar>(node: &NodeDef<'_>) -> Result<BuiltOp<T>> {
    let shape = node.input(0)?.shape.clone();
    let rank = shape.len();
    let axis = norm_axis(node.attrs.int_or("axis", -1)?, rank)?;
    let eps = node.attrs.float_or("epsilon", 1e-5)?;
    if eps.is_nan() || eps < 0.0 || !eps.is_finite() {
        return Err(Error::Invalid(format!(
            "LayerNormalization epsilon {eps} is not a finite non-negative number"
        )));
    }
    let inner = &shape[axis..];
    let per: usize = numel(inner);
    let param = |i: usize, default: f64| -> Result<Vec<f64>> {
        match node.inputs.get(i).and_then(|x| x.as_ref()) {
            None => Ok(vec![default; per]),
            Some(_) => {
                let t = node.const_input(i).map_err(|_| {
                    Error::unimplemented(format!("LayerNormalization with a perturbed input {i}"))
                })?;
                let src = broadcast_source_index(&t.shape, inner)?;
                Ok(src.iter().map(|&j| t.data[j]).collect())
            }
        }
    };
    let gamma = param(1, 1.0)?;
    let beta = param(2, 0.0)?;
    let groups = reduce_groups(&shape, &(axis..rank).collect::<Vec<_>>(), true).0;
    Ok(BuiltOp::new(LayerNorm { groups, gamma, beta, eps, n: numel(&shape) }, &[0], shape))
}

/// Intervals of the intermediate quantities of one group.
struct GroupBounds {
    dl: Vec<f64>,
    du: Vec<f64>,
    /// Interval of `r = (mean(s) + ε)^{-1/2}` and of `w = mean(s) + ε`.
    rl: f64,
    ru: f64,
    wl: f64,
    wu: f64,
}

fn closest_to_zero(l: f64, u: f64) -> f64 {
    l.max(0.0).min(u)
}

/// The line of `s = d²` on `[dl, du]` as `(slope, intercept)`, widened outward by
/// `margin`: the tangent at the point nearest 0 (`below`) or the chord.
fn square_line(dl: f64, du: f64, below: bool, margin: f64) -> (f64, f64) {
    if below {
        let mm = closest_to_zero(dl, du);
        (2.0 * mm, -(mm * mm) - margin * mm * mm)
    } else {
        let s = dl + du;
        (s, -(dl * du) + margin * ((dl * du).abs() + s.abs() * dl.abs().max(du.abs())))
    }
}

impl GroupBounds {
    /// Lines of `r = w^{-1/2}`: `(slope, intercept)` of the tangent at the midpoint
    /// (below) and of the chord (above), widened outward by `margin`.
    fn r_lines(&self, margin: f64) -> ((f64, f64), (f64, f64)) {
        let f = |w: f64| w.powf(-0.5);
        let mid = 0.5 * (self.wl + self.wu);
        let t_s = -0.5 * mid.powf(-1.5);
        let t_b = f(mid) - t_s * mid;
        let t_b = t_b - margin * (t_b.abs() + t_s.abs() * self.wu);
        let (c_s, c_b) = if self.wu - self.wl > 1e-9 * self.wu {
            let s = (f(self.wu) - f(self.wl)) / (self.wu - self.wl);
            (s, f(self.wl) - s * self.wl)
        } else {
            let s = -0.5 * self.wu.powf(-1.5);
            (s, f(self.wl) - s * self.wl)
        };
        let c_b = c_b + margin * (c_b.abs() + c_s.abs() * self.wu);
        ((t_s, t_b), (c_s, c_b))
    }

    /// The McCormick plane of `p_i = d_i·r` as `(α, γ)` in `α·d_i + d_l·r + γ`: the lower
    /// plane (`low`) or the upper one, its constant widened outward by `margin`.
    fn plane(&self, i: usize, low: bool, margin: f64) -> (f64, f64) {
        let (al, ga) = if low { (self.rl, -self.dl[i] * self.rl) } else { (self.ru, -self.dl[i] * self.ru) };
        (al, if low { ga - margin * ga.abs() } else { ga + margin * ga.abs() })
    }
}

fn group_bounds(l: &[f64], u: &[f64], eps: f64) -> Result<GroupBounds> {
    let n = l.len() as f64;
    let (sl, su): (f64, f64) = (l.iter().sum(), u.iter().sum());
    let mut dl = Vec::with_capacity(l.len());
    let mut du = Vec::with_capacity(l.len());
    for i in 0..l.len() {
        // d_i = x_i (1 − 1/N) − Σ_{j≠i} x_j / N, exact interval on a box; widened by
        // a few ulps of the terms for rounding.
        let lo = l[i] * (1.0 - 1.0 / n) - (su - u[i]) / n;
        let hi = u[i] * (1.0 - 1.0 / n) - (sl - l[i]) / n;
        let m = 1e-14 * (l[i].abs().max(u[i].abs()) + sl.abs().max(su.abs()) / n);
        dl.push(lo - m);
        du.push(hi + m);
    }
    let s_lo: f64 = dl.iter().zip(&du).map(|(&a, &b)| closest_to_zero(a, b).powi(2)).sum::<f64>() / n;
    let s_hi: f64 = dl.iter().zip(&du).map(|(&a, &b)| a.abs().max(b.abs()).powi(2)).sum::<f64>() / n;
    let (wl, wu) = ((s_lo + eps) * (1.0 - 1e-14), (s_hi + eps) * (1.0 + 1e-14));
    if wl.is_nan() || wl <= 0.0 || !wu.is_finite() {
        return Err(Error::Invalid(format!(
            "LayerNormalization: the variance plus epsilon may reach {wl} (epsilon {eps}); its inverse square root is unbounded"
        )));
    }
    let (rl, ru) = (wu.powf(-0.5) * (1.0 - 1e-14), wl.powf(-0.5) * (1.0 + 1e-14));
    Ok(GroupBounds { dl, du, rl, ru, wl, wu })
}

impl LayerNorm {
    /// The intervals of every group's intermediate quantities, with the group's input
    /// bounds in `f64`.
    #[allow(clippy::type_complexity)]
    fn all_bounds<T: Scalar>(
        &self,
        ctx: &BackwardCtx<'_, T>,
    ) -> Result<Vec<(GroupBounds, Vec<f64>, Vec<f64>)>> {
        let x = ctx.bounds(0)?;
        check(&x)?;
        let mut all = Vec::with_capacity(self.groups.len());
        for g in &self.groups {
            let l: Vec<f64> = g.iter().map(|&j| x.lower[j].as_f64()).collect();
            let u: Vec<f64> = g.iter().map(|&j| x.upper[j].as_f64()).collect();
            all.push((group_bounds(&l, &u, self.eps)?, l, u));
        }
        Ok(all)
    }
}

impl<T: Scalar> Evaluate<T> for LayerNorm {
    fn forward(&self, inputs: &[&[T]], out: &mut [T]) -> Result<()> {
        let x = inputs[0];
        for g in &self.groups {
            let n = g.len() as f64;
            let mean = g.iter().map(|&j| x[j].as_f64()).sum::<f64>() / n;
            let var = g.iter().map(|&j| (x[j].as_f64() - mean).powi(2)).sum::<f64>() / n;
            let r = 1.0 / (var + self.eps).sqrt();
            for (k, &j) in g.iter().enumerate() {
                out[j] = T::from_f64((x[j].as_f64() - mean) * r * self.gamma[k] + self.beta[k]);
            }
        }
        Ok(())
    }
}

fn check<T: Scalar>(x: &Interval<'_, T>) -> Result<()> {
    for (i, (l, u)) in x.lower.iter().zip(x.upper).enumerate() {
        if !l.is_finite() || !u.is_finite() {
            return Err(Error::NonFinite(format!(
                "LayerNormalization input bounds [{l}, {u}] at element {i}"
            )));
        }
    }
    Ok(())
}

fn mul_interval(xl: f64, xu: f64, yl: f64, yu: f64) -> (f64, f64) {
    let (a, b, c, d) = (xl * yl, xl * yu, xu * yl, xu * yu);
    (a.min(b).min(c.min(d)), a.max(b).max(c.max(d)))
}

impl<T: Scalar> IntervalRule<T> for LayerNorm {
    fn interval(&self, inputs: &[Interval<'_, T>], lower: &mut [T], upper: &mut [T]) -> Result<()> {
        let x = inputs[0];
        check(&x)?;
        for g in &self.groups {
            let l: Vec<f64> = g.iter().map(|&j| x.lower[j].as_f64()).collect();
            let u: Vec<f64> = g.iter().map(|&j| x.upper[j].as_f64()).collect();
            let b = group_bounds(&l, &u, self.eps)?;
            for (k, &j) in g.iter().enumerate() {
                let (pl, pu) = mul_interval(b.dl[k], b.du[k], b.rl, b.ru);
                let (ga, be) = (self.gamma[k], self.beta[k]);
                let (lo, hi) =
                    if ga >= 0.0 { (ga * pl + be, ga * pu + be) } else { (ga * pu + be, ga * pl + be) };
                let m = 1e-14 * (lo.abs().max(hi.abs()) + be.abs());
                lower[j] = T::from_f64(lo - m).next_down();
                upper[j] = T::from_f64(hi + m).next_up();
            }
        }
        Ok(())
    }
}

impl<T: Scalar> LinearRelaxation<T> for LayerNorm {
    fn backward(&self, ctx: &BackwardCtx<'_, T>, a: LinearA<T>) -> Result<BackwardResult<T>> {
        let margin = 8.0 * T::epsilon().as_f64();
        let spec = a.spec();
        let all = self.all_bounds(ctx)?;
        let side = |m: &Mat<T>, lower: bool, bias: &mut [T]| -> Mat<T> {
            let mut out = Mat::<T>::zeros(spec, self.n);
            for (g, (b, l, u)) in self.groups.iter().zip(&all) {
                let k = g.len();
                let nf = k as f64;
                let ((t_s, t_b), (c_s, c_b)) = b.r_lines(margin);
                let mut cd = vec![0.0f64; k];
                let dmax: Vec<f64> = b.dl.iter().zip(&b.du).map(|(a, c)| a.abs().max(c.abs())).collect();
                let smax: f64 = dmax.iter().map(|v| v * v).sum();
                for row in 0..spec {
                    let mut bsum = 0.0f64;
                    let mut cr = 0.0f64;
                    // Rounding: every product and sum below is off by at most a few ulps of
                    // the magnitudes that enter it. `mass` bounds, over the box, the sum of
                    // |term| of every bias term and |coefficient|·max|variable| of every
                    // computed coefficient (with the absolute sums that feed it, since
                    // cancellation does not shrink the error of a sum).
                    let mut mass = 0.0f64;
                    // y = γ p + β; p = d·r (McCormick, d as x, r as y).
                    for (i, &j) in g.iter().enumerate() {
                        let c = m[(row, j)].as_f64();
                        cd[i] = 0.0;
                        if c == 0.0 {
                            continue;
                        }
                        bsum += c * self.beta[i];
                        mass += (c * self.beta[i]).abs();
                        let cp = c * self.gamma[i];
                        if cp == 0.0 {
                            continue;
                        }
                        let (al, ga) = b.plane(i, (cp > 0.0) == lower, margin);
                        cd[i] = cp * al;
                        cr += cp * b.dl[i];
                        bsum += cp * ga;
                        mass += cp.abs() * dmax[i] * b.ru + (cp * b.dl[i]).abs() * b.ru + (cp * ga).abs();
                    }
                    // The sum `cr` over the group: its error scales with Σ|terms| (in `mass`).
                    // r = w^{-1/2}.
                    let cw = if cr == 0.0 {
                        0.0
                    } else if (cr > 0.0) == lower {
                        bsum += cr * t_b;
                        mass += (cr * t_b).abs();
                        cr * t_s
                    } else {
                        bsum += cr * c_b;
                        mass += (cr * c_b).abs();
                        cr * c_s
                    };
                    // w = mean(s) + ε; s_i = d_i².
                    if cw != 0.0 {
                        bsum += cw * self.eps;
                        let cs = cw / nf;
                        mass += cw.abs() * b.wu + (cw * self.eps).abs() + cs.abs() * smax;
                        for i in 0..k {
                            let (dl, du) = (b.dl[i], b.du[i]);
                            let (k, c) = square_line(dl, du, (cs > 0.0) == lower, margin);
                            let (cdi, bi) = (cs * k, cs * c);
                            mass += (cd[i].abs() + cdi.abs()) * dmax[i] + bi.abs();
                            cd[i] += cdi;
                            bsum += bi;
                        }
                    }
                    // d = x − mean(x).
                    let mean_cd = cd.iter().sum::<f64>() / nf;
                    let cd_abs = cd.iter().map(|v| v.abs()).sum::<f64>() / nf;
                    let mut cast_margin = 0.0;
                    for (i, &j) in g.iter().enumerate() {
                        let cx = cd[i] - mean_cd;
                        out[(row, j)] = T::from_f64(cx);
                        let xm = l[i].abs().max(u[i].abs());
                        cast_margin += cx.abs() * xm;
                        mass += (cd[i].abs() + cd_abs) * xm;
                    }
                    // f64 sums of up to `k` terms (a few more along the chain), then the casts
                    // of the coefficients and of the bias to `T`.
                    let gamma = (nf + 16.0) * f64::EPSILON;
                    let widen = gamma * mass + margin * (cast_margin + bsum.abs());
                    let total = if lower { bsum - widen } else { bsum + widen };
                    bias[row] += T::from_f64(total);
                }
            }
            out
        };
        let mut bias = LinearBias::zeros(spec);
        let lower = a.lower.as_ref().map(|m| side(m, true, &mut bias.lower));
        let upper = a.upper.as_ref().map(|m| side(m, false, &mut bias.upper));
        Ok(BackwardResult { inputs: smallvec![Some(LinearA::dense(lower, upper))], bias })
    }

    fn needs_input_bounds(&self) -> &[usize] {
        &[0]
    }

    /// The chain of lines [`backward`](LinearRelaxation::backward) chose for each row,
    /// evaluated left to right at `z`: `d = x − μ`, the square lines of `d` and the line
    /// of `r` the signs of the row's aggregated coefficients took, then each element's
    /// McCormick plane at `(d_i, r)`, scaled and shifted. `Σ_j a_j·out_j` is then the
    /// row's bound function at `z` (up to the final rounding widening, a constant).
    fn relaxed_forward(
        &self,
        ctx: &BackwardCtx<'_, T>,
        a: MatRef<'_, T>,
        upper: bool,
        z: &[&[T]],
        out: &mut [T],
    ) -> Result<()> {
        let margin = 8.0 * T::epsilon().as_f64();
        let lower = !upper;
        let all = self.all_bounds(ctx)?;
        let mut d = Vec::new();
        for row in 0..a.nrows() {
            let zr = &z[0][row * self.n..(row + 1) * self.n];
            let o = &mut out[row * self.n..(row + 1) * self.n];
            for (g, (b, _, _)) in self.groups.iter().zip(&all) {
                let nf = g.len() as f64;
                let mean = g.iter().map(|&j| zr[j].as_f64()).sum::<f64>() / nf;
                d.clear();
                d.extend(g.iter().map(|&j| zr[j].as_f64() - mean));
                let cp = |i: usize, j: usize| a[(row, j)].as_f64() * self.gamma[i];
                let cr: f64 = g.iter().enumerate().map(|(i, &j)| cp(i, j) * b.dl[i]).sum();
                let ((t_s, t_b), (c_s, c_b)) = b.r_lines(margin);
                let (rs, rb) = if (cr > 0.0) == lower { (t_s, t_b) } else { (c_s, c_b) };
                let cs = cr * rs;
                let w = d
                    .iter()
                    .enumerate()
                    .map(|(i, &di)| {
                        let (k, c) = square_line(b.dl[i], b.du[i], (cs > 0.0) == lower, margin);
                        k * di + c
                    })
                    .sum::<f64>()
                    / nf
                    + self.eps;
                let r = rs * w + rb;
                for (i, &j) in g.iter().enumerate() {
                    let (al, ga) = b.plane(i, (cp(i, j) > 0.0) == lower, margin);
                    o[j] = T::from_f64(self.gamma[i] * (al * d[i] + b.dl[i] * r + ga) + self.beta[i]);
                }
            }
        }
        Ok(())
    }
}

impl<T: Scalar> Operator<T> for LayerNorm {
    fn op_type(&self) -> &str {
        "LayerNormalization"
    }
}

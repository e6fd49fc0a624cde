//! Softmax with auto_LiRPA's default `lse` relaxation (Wei et al., "Convex Bounds on
//! the Softmax Function with Applications to Robustness Verification", AISTATS 2023).
//!
//! For one softmax vector `σ(x)` with input bounds `l ≤ x ≤ u` and tangent point
//! `x0 = (l + u)/2` (auto_LiRPA's choice):
//!
//! - **Lower.** With `ē_j(x_j) = κ_j·x_j + β_j` the chord of `exp` on `[l_j, u_j]`
//!   (`ē_j ≥ exp` there), `L_k(x) = e^{x_k} / Σ_j ē_j(x_j) ≤ σ_k(x)` on the box.
//!   `log L_k = x_k − log(affine)` is convex, so `L_k` is convex and its tangent at
//!   `x0` is a lower bound: `∂L_k/∂x_j = L_k·δ_kj − (L_k/SE)·κ_j`.
//! - **Upper.** With `p_k ≤ σ_k ≤ P_k` the interval bounds below and
//!   `t = −log σ_k = LSE(x) − x_k ∈ [−log P_k, −log p_k]`, `σ_k = e^{−t}` lies below
//!   its chord `a_k − c_k·t` on that range. `U_k(x) = a_k − c_k·(LSE(x) − x_k)` is
//!   concave (LSE is convex, `c_k ≥ 0`), so its tangent at `x0` is an upper bound:
//!   `∂U_k/∂x_j = c_k·δ_kj − c_k·σ_j(x0)`.
//!
//! The Jacobians are diagonal plus rank one, so the backward rule costs O(K) per row
//! and vector. IBP: `σ_k ∈ [e^{l_k}/(e^{l_k} + Σ_{j≠k} e^{u_j}), e^{u_k}/(e^{u_k} + Σ_{j≠k} e^{l_j})]`.
//!
//! Soundness details (where auto_LiRPA takes shortcuts): everything is computed in
//! f64; an interval narrower than 1e-6 uses the line of slope `e^{u}` through
//! `(l, e^l)` instead of the ill-conditioned chord (it lies above `exp` on the
//! interval by the mean value theorem); the upper line of `e^{−t}` is anchored at
//! `(−log P, P)` with a slope `−c`, `p ≤ c ≤` the chord slope shrunk by its rounding
//! error (any such line lies above `e^{−t}` on the range; a degenerate range gets
//! `c = p` instead of auto_LiRPA's tangent, which lies below); the chord's own
//! intercept would amplify rounding by `1/(log P − log p)` on a narrow range;
//! `p`, `P` are widened by 1e-12 relative;
//! and each plane's constant is widened outward by `8·ε_T` times the plane's
//! magnitude over the box, which covers casting the coefficients to `T`.

use crate::groups::{norm_axis, reduce_groups};
use faer::Mat;
use lirpa_core::op::{BackwardCtx, Evaluate, Interval, IntervalRule, LinearRelaxation, NodeDef, Operator};
use lirpa_core::{BackwardResult, BuiltOp, Error, LinearA, LinearBias, Result, Scalar, numel};
use smallvec::smallvec;

#[derive(Debug)]
pub struct Softmax {
    /// The input elements of each softmax vector.
    groups: Vec<Vec<usize>>,
    n: usize,
}

pub fn build_softmax<T: Scalar>(node: &NodeDef<'_>) -> Result<BuiltOp<T>> {
    let shape = node.input(0)?.shape.clone();
    let rank = shape.len();
    if rank == 0 {
        return Err(Error::Shape("Softmax of a scalar".into()));
    }
    // Before opset 13 the input is flattened to 2-D at `axis` (default 1): softmax
    // runs over all trailing axes. From 13 on it runs over the one `axis` (default -1).
    let groups = if node.opset < 13 {
        let axis = norm_axis(node.attrs.int_or("axis", 1)?, rank)?;
        reduce_groups(&shape, &(axis..rank).collect::<Vec<_>>(), true).0
    } else {
        let axis = norm_axis(node.attrs.int_or("axis", -1)?, rank)?;
        reduce_groups(&shape, &[axis], true).0
    };
    Ok(BuiltOp::new(Softmax { groups, n: numel(&shape) }, &[0], shape))
}

/// Softmax of `x` (f64, stable).
fn softmax_f64(x: &[f64]) -> Vec<f64> {
    let m = x.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let e: Vec<f64> = x.iter().map(|&v| (v - m).exp()).collect();
    let s: f64 = e.iter().sum();
    e.into_iter().map(|v| v / s).collect()
}

/// Interval bounds of every `σ_k` from `l ≤ x ≤ u` (f64), widened by 1e-12 relative
/// and clamped to `[0, 1]`.
fn interval_f64(l: &[f64], u: &[f64]) -> (Vec<f64>, Vec<f64>) {
    let k = l.len();
    let mut lo = vec![0.0; k];
    let mut hi = vec![0.0; k];
    for i in 0..k {
        // Lower: e^{l_i} / (e^{l_i} + Σ_{j≠i} e^{u_j}), shifted by the largest exponent.
        let m = u
            .iter()
            .enumerate()
            .map(|(j, &v)| if j == i { l[i] } else { v })
            .fold(f64::NEG_INFINITY, f64::max);
        let s: f64 = (0..k).map(|j| if j == i { (l[i] - m).exp() } else { (u[j] - m).exp() }).sum();
        lo[i] = ((l[i] - m).exp() / s * (1.0 - 1e-12)).max(0.0);
        let m = l
            .iter()
            .enumerate()
            .map(|(j, &v)| if j == i { u[i] } else { v })
            .fold(f64::NEG_INFINITY, f64::max);
        let s: f64 = (0..k).map(|j| if j == i { (u[i] - m).exp() } else { (l[j] - m).exp() }).sum();
        hi[i] = ((u[i] - m).exp() / s * (1.0 + 1e-12)).min(1.0);
    }
    (lo, hi)
}

/// The planes of one softmax vector: `σ_k(x) ≥ Σ_j jl[k][j]·x_j + bl[k]` and
/// `σ_k(x) ≤ Σ_j ju[k][j]·x_j + bu[k]`, with the Jacobians in their
/// diagonal-plus-rank-one form: `jl[k][j] = dl[k]·δ_kj − vl[k]·kappa[j]`,
/// `ju[k][j] = c[k]·δ_kj − c[k]·sm[j]`.
struct Planes {
    dl: Vec<f64>,
    vl: Vec<f64>,
    kappa: Vec<f64>,
    bl: Vec<f64>,
    c: Vec<f64>,
    sm: Vec<f64>,
    bu: Vec<f64>,
}

fn planes(l: &[f64], u: &[f64], eps_t: f64) -> Planes {
    let k = l.len();
    let x0: Vec<f64> = l.iter().zip(u).map(|(a, b)| 0.5 * (a + b)).collect();
    // Lower: chords of exp, shifted by max u for range (the shift cancels in L).
    let shift = u.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let mut kappa = vec![0.0; k];
    let mut beta = vec![0.0; k];
    for j in 0..k {
        let (ls, us) = (l[j] - shift, u[j] - shift);
        let (el, eu) = (ls.exp(), us.exp());
        if us - ls > 1e-6 {
            kappa[j] = (eu - el) / (us - ls);
            beta[j] = el - kappa[j] * ls;
            // Cover rounding of the chord (it may not dip below exp).
            beta[j] += 1e-14 * eu * (1.0 + ls.abs() + us.abs());
        } else {
            kappa[j] = eu;
            beta[j] = el - eu * ls;
            beta[j] += 1e-14 * eu * (1.0 + ls.abs() + us.abs());
        }
    }
    let se0: f64 = (0..k).map(|j| kappa[j] * (x0[j] - shift) + beta[j]).sum();
    let dl: Vec<f64> = x0.iter().map(|&v| (v - shift).exp() / se0).collect();
    let vl: Vec<f64> = dl.iter().map(|&v| v / se0).collect();
    // Constant: L(x0) − J·x0 (in unshifted coordinates; J is shift-invariant).
    let kx0: f64 = kappa.iter().zip(&x0).map(|(a, b)| a * b).sum();
    let mut bl: Vec<f64> = (0..k).map(|i| dl[i] - dl[i] * x0[i] + vl[i] * kx0).collect();

    // Upper: chord of e^{-t} on [−log P, −log p].
    let (p, pp) = interval_f64(l, u);
    let sm = softmax_f64(&x0);
    let m0 = x0.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let lse0 = m0 + x0.iter().map(|&v| (v - m0).exp()).sum::<f64>().ln();
    let smx0: f64 = sm.iter().zip(&x0).map(|(a, b)| a * b).sum();
    let mut c = vec![0.0; k];
    let mut bu = vec![0.0; k];
    let mut anchor = vec![0.0; k];
    for i in 0..k {
        let (lo, hi) = (p[i], pp[i]);
        // A line `a − c·t` through `(−log P, P)` with a slope `−c`, `p ≤ c ≤ chord slope`,
        // lies above the convex `e^{−t}` on `[−log P, −log p]`. It is anchored at
        // `−log P` so that rounding in `c` only moves it by `|Δc|·(t + log P)`, tiny on
        // the range; the intercept `(p·log P − P·log p)/(log P − log p)` would amplify
        // rounding by `1/(log P − log p)`.
        let ci = if lo <= 1e-300 {
            0.0
        } else {
            let d = hi.ln() - lo.ln();
            // The computed `d` carries an absolute error of a few ulps of the logs:
            // shrink the chord slope by that relative error (a smaller slope, still at
            // least `p`, stays valid).
            let rel = 4.0 * f64::EPSILON * (1.0 + (hi.ln().abs() + lo.ln().abs()) / d);
            let chord = (hi - lo) / d * (1.0 - rel);
            if d > 0.0 && rel < 0.5 && chord.is_finite() { chord.max(lo) } else { lo }
        };
        let ai = hi - ci * hi.ln();
        c[i] = ci;
        let u_x0 = ai - ci * (lse0 - x0[i]);
        bu[i] = u_x0 - ci * x0[i] + ci * smx0;
        // Rounding of the intercept and of the tangent's constant.
        anchor[i] = hi + ci * (hi.ln().abs() + lse0.abs() + 2.0 * x0[i].abs() + smx0.abs());
    }
    // Outward margins: 8·ε_T times the magnitude of each plane over the box.
    let mag: Vec<f64> = l.iter().zip(u).map(|(a, b)| a.abs().max(b.abs())).collect();
    let sum_kappa_mag: f64 = kappa.iter().zip(&mag).map(|(a, b)| a.abs() * b).sum();
    let sum_sm_mag: f64 = sm.iter().zip(&mag).map(|(a, b)| a * b).sum();
    for i in 0..k {
        let ml = bl[i].abs() + dl[i] * mag[i] + vl[i] * sum_kappa_mag;
        bl[i] -= 8.0 * eps_t * ml + 1e-300;
        let mu = bu[i].abs() + anchor[i] + c[i] * mag[i] + c[i] * sum_sm_mag;
        bu[i] += 8.0 * eps_t * mu + 1e-300;
    }
    Planes { dl, vl, kappa, bl, c, sm, bu }
}

impl<T: Scalar> Evaluate<T> for Softmax {
    fn forward(&self, inputs: &[&[T]], out: &mut [T]) -> Result<()> {
        let x = inputs[0];
        for g in &self.groups {
            let v: Vec<f64> = g.iter().map(|&j| x[j].as_f64()).collect();
            for (&j, s) in g.iter().zip(softmax_f64(&v)) {
                out[j] = T::from_f64(s);
            }
        }
        Ok(())
    }
}

fn check<T: Scalar>(x: &Interval<'_, T>) -> Result<()> {
    for (i, (l, u)) in x.lower.iter().zip(x.upper).enumerate() {
        if !l.is_finite() || !u.is_finite() {
            return Err(Error::NonFinite(format!("softmax input bounds [{l}, {u}] at element {i}")));
        }
    }
    Ok(())
}

impl<T: Scalar> IntervalRule<T> for Softmax {
    fn interval(&self, inputs: &[Interval<'_, T>], lower: &mut [T], upper: &mut [T]) -> Result<()> {
        let x = inputs[0];
        check(&x)?;
        for g in &self.groups {
            let l: Vec<f64> = g.iter().map(|&j| x.lower[j].as_f64()).collect();
            let u: Vec<f64> = g.iter().map(|&j| x.upper[j].as_f64()).collect();
            let (lo, hi) = interval_f64(&l, &u);
            for (k, &j) in g.iter().enumerate() {
                lower[j] = T::from_f64(lo[k]).next_down().max(T::zero());
                upper[j] = T::from_f64(hi[k]).next_up().min(T::one());
            }
        }
        Ok(())
    }
}

impl<T: Scalar> LinearRelaxation<T> for Softmax {
    fn backward(&self, ctx: &BackwardCtx<'_, T>, a: LinearA<T>) -> Result<BackwardResult<T>> {
        let x = ctx.bounds(0)?;
        check(&x)?;
        let eps_t = T::epsilon().as_f64();
        let spec = a.spec();
        let all: Vec<Planes> = self
            .groups
            .iter()
            .map(|g| {
                let l: Vec<f64> = g.iter().map(|&j| x.lower[j].as_f64()).collect();
                let u: Vec<f64> = g.iter().map(|&j| x.upper[j].as_f64()).collect();
                planes(&l, &u, eps_t)
            })
            .collect();
        let mut bias = LinearBias::zeros(spec);
        // One side: positive coefficients take `pos_lower ? lower plane : upper plane`.
        let side = |m: &Mat<T>, lower: bool, bias: &mut [T]| -> Mat<T> {
            let mut out = Mat::<T>::zeros(spec, self.n);
            let mut s_lo = vec![0.0f64; spec];
            let mut s_up = vec![0.0f64; spec];
            let mut b = vec![0.0f64; spec];
            for (g, pl) in self.groups.iter().zip(&all) {
                s_lo.iter_mut().for_each(|v| *v = 0.0);
                s_up.iter_mut().for_each(|v| *v = 0.0);
                // Which plane each coefficient uses: the lower plane where
                // (coefficient > 0) == lower.
                for (k, &j) in g.iter().enumerate() {
                    for (r, &v) in m.col_as_slice(j).iter().enumerate() {
                        let v = v.as_f64();
                        if v == 0.0 {
                            continue;
                        }
                        if (v > 0.0) == lower {
                            s_lo[r] += v * pl.vl[k];
                            b[r] += v * pl.bl[k];
                        } else {
                            s_up[r] += v * pl.c[k];
                            b[r] += v * pl.bu[k];
                        }
                    }
                }
                for (k, &j) in g.iter().enumerate() {
                    let from = m.col_as_slice(j);
                    let to = out.col_as_slice_mut(j);
                    for r in 0..spec {
                        let v = from[r].as_f64();
                        let diag = if v == 0.0 {
                            0.0
                        } else if (v > 0.0) == lower {
                            v * pl.dl[k]
                        } else {
                            v * pl.c[k]
                        };
                        to[r] = T::from_f64(diag - s_lo[r] * pl.kappa[k] - s_up[r] * pl.sm[k]);
                    }
                }
            }
            for (o, v) in bias.iter_mut().zip(b) {
                *o += T::from_f64(v);
            }
            out
        };
        let lower = a.lower.as_ref().map(|m| side(m, true, &mut bias.lower));
        let upper = a.upper.as_ref().map(|m| side(m, false, &mut bias.upper));
        Ok(BackwardResult { inputs: smallvec![Some(LinearA::dense(lower, upper))], bias })
    }

    fn needs_input_bounds(&self) -> &[usize] {
        &[0]
    }

    /// The adjoint of `backward` for one side: every element of every row evaluated, at
    /// that row's input values `z`, on the plane its coefficient's sign selects (the lower
    /// plane where `backward` took it), for α-CROWN's gradient through a fixed relaxation.
    fn relaxed_forward(
        &self,
        ctx: &BackwardCtx<'_, T>,
        a: faer::MatRef<'_, T>,
        upper: bool,
        z: &[&[T]],
        out: &mut [T],
    ) -> Result<()> {
        let x = ctx.bounds(0)?;
        check(&x)?;
        let eps_t = T::epsilon().as_f64();
        let n = self.n;
        for g in &self.groups {
            let l: Vec<f64> = g.iter().map(|&j| x.lower[j].as_f64()).collect();
            let u: Vec<f64> = g.iter().map(|&j| x.upper[j].as_f64()).collect();
            let pl = planes(&l, &u, eps_t);
            for r in 0..a.nrows() {
                let zr = &z[0][r * n..(r + 1) * n];
                let kx: f64 = g.iter().zip(&pl.kappa).map(|(&j, k)| k * zr[j].as_f64()).sum();
                let smx: f64 = g.iter().zip(&pl.sm).map(|(&j, s)| s * zr[j].as_f64()).sum();
                for (k, &j) in g.iter().enumerate() {
                    let zj = zr[j].as_f64();
                    let v = if lirpa_core::linear::takes_lower_line(a[(r, j)], upper) {
                        pl.dl[k] * zj - pl.vl[k] * kx + pl.bl[k]
                    } else {
                        pl.c[k] * zj - pl.c[k] * smx + pl.bu[k]
                    };
                    out[r * n + j] = T::from_f64(v);
                }
            }
        }
        Ok(())
    }
}

impl<T: Scalar> Operator<T> for Softmax {
    fn op_type(&self) -> &str {
        "Softmax"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Both planes of every element at the corners and at pseudo-random points of
    /// narrow boxes (widths 1e-10 to 1e-3), where the chord of `e^{-t}` is
    /// ill-conditioned. The first box is the input range of a saturated LayerNorm
    /// output that once gave crossed bounds (intercept rounding amplified by
    /// `1/(log P − log p)`, about 1e-8).
    #[test]
    fn planes_enclose_softmax_on_narrow_boxes() {
        let mut boxes: Vec<(Vec<f64>, Vec<f64>)> =
            vec![(vec![0.40837720406, -0.43785825061], vec![0.40837721081, -0.43785824585])];
        let mut state = 0x2545F4914F6CDD1Du64;
        let mut uniform = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 11) as f64 / (1u64 << 53) as f64
        };
        for case in 0..300 {
            let k = 2 + case % 4;
            let width = 10f64.powf(-10.0 + 7.0 * uniform());
            let l: Vec<f64> = (0..k).map(|_| 6.0 * uniform() - 3.0).collect();
            let u: Vec<f64> = l.iter().map(|v| v + width * uniform()).collect();
            boxes.push((l, u));
        }
        for (l, u) in &boxes {
            let k = l.len();
            let pl = planes(l, u, f64::EPSILON);
            let mut points: Vec<Vec<f64>> = (0..1usize << k)
                .map(|m| (0..k).map(|j| if m >> j & 1 == 1 { u[j] } else { l[j] }).collect())
                .collect();
            for _ in 0..20 {
                points.push((0..k).map(|j| l[j] + (u[j] - l[j]) * uniform()).collect());
            }
            for x in &points {
                let s = softmax_f64(x);
                let kx: f64 = pl.kappa.iter().zip(x).map(|(a, b)| a * b).sum();
                let smx: f64 = pl.sm.iter().zip(x).map(|(a, b)| a * b).sum();
                for i in 0..k {
                    let lo = pl.dl[i] * x[i] - pl.vl[i] * kx + pl.bl[i];
                    let hi = pl.c[i] * x[i] - pl.c[i] * smx + pl.bu[i];
                    // Evaluating σ and the planes in f64 is off by a few ulps.
                    let tol = 1e-15;
                    assert!(
                        lo <= s[i] + tol && s[i] <= hi + tol,
                        "box {l:?} {u:?}, x {x:?}: σ_{i} = {} not in [{lo}, {hi}]",
                        s[i]
                    );
                }
            }
        }
    }

    /// The adjoint evaluates the planes `backward` chose: `Σ_j a[r, j]·out[r, j]` equals
    /// `A[r, :]·z[r, :] + bias[r]` for random bounds, coefficients (mixed signs, zeros) and
    /// points, both sides, two softmax groups.
    #[test]
    fn relaxed_forward_is_the_adjoint_of_backward() {
        use lirpa_core::op::RelaxOptions;
        let mut state = 0x1234_5678_9ABC_DEF1u64;
        let mut uniform = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 11) as f64 / (1u64 << 53) as f64
        };
        let op = Softmax { groups: vec![vec![0, 2, 4], vec![1, 3, 5]], n: 6 };
        let opts = RelaxOptions::default();
        for _ in 0..50 {
            let l: Vec<f64> = (0..6).map(|_| uniform() * 6.0 - 3.0).collect();
            let u: Vec<f64> = l.iter().map(|v| v + uniform() * 2.0).collect();
            let ivs = [Some(Interval { lower: l.as_slice(), upper: u.as_slice() })];
            let ctx = BackwardCtx { input_bounds: &ivs, options: &opts, par: faer::Par::Seq };
            let rows = 3;
            let a = Mat::<f64>::from_fn(rows, 6, |_, _| {
                let v = uniform();
                if v < 0.2 { 0.0 } else { v * 4.0 - 2.0 }
            });
            let z: Vec<f64> = (0..rows * 6).map(|_| uniform() * 8.0 - 4.0).collect();
            for upper in [false, true] {
                let la = if upper {
                    LinearA::dense(None, Some(a.clone()))
                } else {
                    LinearA::dense(Some(a.clone()), None)
                };
                let res = op.backward(&ctx, la).unwrap();
                let mut out = vec![0.0; rows * 6];
                op.relaxed_forward(&ctx, a.as_ref(), upper, &[&z], &mut out).unwrap();
                let m = res.inputs[0].clone().unwrap();
                let m = if upper { m.upper.unwrap() } else { m.lower.unwrap() };
                let bias = if upper { &res.bias.upper } else { &res.bias.lower };
                for r in 0..rows {
                    let lhs: f64 = (0..6).map(|j| a[(r, j)] * out[r * 6 + j]).sum();
                    let rhs: f64 = bias[r] + (0..6).map(|j| m[(r, j)] * z[r * 6 + j]).sum::<f64>();
                    assert!(
                        (lhs - rhs).abs() < 1e-12 * (1.0 + lhs.abs()),
                        "row {r} upper={upper}: {lhs} vs {rhs}"
                    );
                }
            }
        }
    }
}

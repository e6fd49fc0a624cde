//! `x / y` with a perturbed divisor `y` (and a perturbed or constant numerator), as
//! `x · r` with `r = 1/y` (auto_LiRPA rewrites Div the same way).
//!
//! The reciprocal is relaxed where `y` keeps one strict sign: for `0 < l ≤ y ≤ u` it
//! is convex (upper: the chord; lower: the tangent at the midpoint), for
//! `l ≤ y ≤ u < 0` concave (lower: the chord; upper: the tangent at the midpoint).
//! An interval of `y` that contains 0 is an error.

use crate::mul::relax_side;
use crate::{check_finite, mul_interval, plane};
use faer::{Mat, MatRef};
use lirpa_core::linear::chosen_line;
use lirpa_core::linear::scatter_columns;
use lirpa_core::op::{BackwardCtx, Evaluate, Interval, IntervalRule, LinearRelaxation, NodeDef, Operator};
use lirpa_core::{
    BackwardResult, BuiltOp, ElementwiseRelaxation, Error, LinearA, LinearBias, Result, Scalar,
    broadcast_shapes, broadcast_source_index, numel,
};
use smallvec::smallvec;

#[derive(Debug)]
pub struct BilinearDiv<T> {
    /// The numerator broadcast to the output, when it is a constant.
    numerator: Option<Vec<T>>,
    /// Source element of each output element in `x` (if perturbed) and `y`.
    sx: Vec<usize>,
    sy: Vec<usize>,
    nx: usize,
    ny: usize,
}

pub fn build_div<T: Scalar>(node: &NodeDef<'_>) -> Result<BuiltOp<T>> {
    let (x, y) = (node.input(0)?, node.input(1)?);
    if node.is_const(1) {
        return Err(Error::declined("the divisor is constant (an exact scaling)"));
    }
    let out = broadcast_shapes(&x.shape, &y.shape)?;
    let sx = broadcast_source_index(&x.shape, &out)?;
    let sy = broadcast_source_index(&y.shape, &out)?;
    let (numerator, edges): (Option<Vec<T>>, &[usize]) = match &x.value {
        Some(v) => (Some(sx.iter().map(|&j| T::from_f64(v.data[j])).collect()), &[1]),
        None => (None, &[0, 1]),
    };
    let op = BilinearDiv { numerator, sx, sy, nx: numel(&x.shape), ny: numel(&y.shape) };
    Ok(BuiltOp::new(op, edges, out))
}

impl<T: Scalar> BilinearDiv<T> {
    /// Index of the divisor among the operator's edges.
    fn y_edge(&self) -> usize {
        if self.numerator.is_some() { 0 } else { 1 }
    }

    /// Bounds and relaxation of `r = 1/y` per output element, from the divisor's bounds.
    fn reciprocal(&self, y: Interval<'_, T>) -> Result<(Vec<T>, Vec<T>, ElementwiseRelaxation<T>)> {
        let n = self.sy.len();
        let (mut rl, mut ru) = (vec![T::zero(); n], vec![T::zero(); n]);
        let mut rel = ElementwiseRelaxation {
            lower_slope: vec![T::zero(); n],
            lower_intercept: vec![T::zero(); n],
            upper_slope: vec![T::zero(); n],
            upper_intercept: vec![T::zero(); n],
        };
        for i in 0..n {
            let j = self.sy[i];
            (rl[i], ru[i]) = reciprocal_interval(i, y.lower[j], y.upper[j])?;
            let (ls, lb, us, ub) = reciprocal_lines(y.lower[j], y.upper[j]);
            (rel.lower_slope[i], rel.lower_intercept[i]) = (ls, lb);
            (rel.upper_slope[i], rel.upper_intercept[i]) = (us, ub);
        }
        Ok((rl, ru, rel))
    }
}

/// Bounds of `1/y` for `y ∈ [l, u]`, rounded outward, or an error if 0 is reachable.
fn reciprocal_interval<T: Scalar>(i: usize, l: T, u: T) -> Result<(T, T)> {
    if !(l > T::zero() || u < T::zero()) {
        return Err(Error::Invalid(format!(
            "division by a perturbed value whose bounds [{l}, {u}] (element {i}) contain 0"
        )));
    }
    let (lo, hi) = ((T::one() / u).next_down(), (T::one() / l).next_up());
    if !lo.is_finite() || !hi.is_finite() {
        return Err(Error::NonFinite(format!("reciprocal of the divisor's bounds [{l}, {u}] (element {i})")));
    }
    Ok((lo, hi))
}

/// Linear bounds of `1/y` on `[l, u]` (one strict sign), computed in f64 and widened
/// outward by `4·ε_T` of the terms' magnitude: `(lower slope, lower intercept, upper
/// slope, upper intercept)`.
fn reciprocal_lines<T: Scalar>(l: T, u: T) -> (T, T, T, T) {
    let (l, u) = (l.as_f64(), u.as_f64());
    let margin = 4.0 * T::epsilon().as_f64();
    let chord_slope = -1.0 / (l * u);
    let chord_b = 1.0 / l + 1.0 / u;
    let chord_m = margin * (1.0 / l.abs() + 1.0 / u.abs());
    let m = 0.5 * (l + u);
    let tan_slope = -1.0 / (m * m);
    let tan_b = 2.0 / m;
    let tan_m = margin * tan_b.abs();
    let f = T::from_f64;
    if l > 0.0 {
        (f(tan_slope), f(tan_b - tan_m), f(chord_slope), f(chord_b + chord_m))
    } else {
        (f(chord_slope), f(chord_b - chord_m), f(tan_slope), f(tan_b + tan_m))
    }
}

impl<T: Scalar> Evaluate<T> for BilinearDiv<T> {
    fn forward(&self, inputs: &[&[T]], out: &mut [T]) -> Result<()> {
        let y = inputs[self.y_edge()];
        for (i, o) in out.iter_mut().enumerate() {
            let num = match &self.numerator {
                Some(c) => c[i],
                None => inputs[0][self.sx[i]],
            };
            *o = num / y[self.sy[i]];
        }
        Ok(())
    }
}

impl<T: Scalar> IntervalRule<T> for BilinearDiv<T> {
    fn interval(&self, inputs: &[Interval<'_, T>], lower: &mut [T], upper: &mut [T]) -> Result<()> {
        let y = inputs[self.y_edge()];
        for i in 0..lower.len() {
            let j = self.sy[i];
            let (rl, ru) = reciprocal_interval(i, y.lower[j], y.upper[j])?;
            let (xl, xu) = match &self.numerator {
                Some(c) => (c[i], c[i]),
                None => (inputs[0].lower[self.sx[i]], inputs[0].upper[self.sx[i]]),
            };
            (lower[i], upper[i]) = mul_interval(xl, xu, rl, ru);
        }
        Ok(())
    }
}

impl<T: Scalar> LinearRelaxation<T> for BilinearDiv<T> {
    fn backward(&self, ctx: &BackwardCtx<'_, T>, a: LinearA<T>) -> Result<BackwardResult<T>> {
        let y = ctx.bounds(self.y_edge())?;
        check_finite("divisor", y.lower)?;
        check_finite("divisor", y.upper)?;
        let n = self.sy.len();
        let (rl, ru, rel) = self.reciprocal(y)?;
        let spec = a.spec();
        let mut bias = LinearBias::zeros(spec);
        // Coefficients on r (one column per output element) and, if perturbed, on x.
        let ident: Vec<usize> = (0..n).collect();
        let (ar, ax) = match &self.numerator {
            Some(c) => {
                let scale = |m: &Mat<T>| Ok(Mat::from_fn(m.nrows(), m.ncols(), |r, i| m[(r, i)] * c[i]));
                (a.map(scale)?, None)
            }
            None => {
                let x = ctx.bounds(0)?;
                check_finite("numerator", x.lower)?;
                let r = Interval { lower: &rl, upper: &ru };
                let (mut lx, mut lr, mut ux, mut ur) = (None, None, None, None);
                if let Some(m) = &a.lower {
                    let (p, q) = relax_side(m, true, x, r, &self.sx, &ident, self.nx, n, &mut bias.lower);
                    (lx, lr) = (Some(p), Some(q));
                }
                if let Some(m) = &a.upper {
                    let (p, q) = relax_side(m, false, x, r, &self.sx, &ident, self.nx, n, &mut bias.upper);
                    (ux, ur) = (Some(p), Some(q));
                }
                (LinearA::dense(lr, ur), Some(LinearA::dense(lx, ux)))
            }
        };
        let through = rel.backward(ar);
        bias.add_assign(&through.bias);
        let ar = through.inputs.into_iter().next().flatten().expect("one input");
        let ay = ar.map(|m| Ok(scatter_columns(m, &self.sy, self.ny)))?;
        let inputs = match ax {
            Some(ax) => smallvec![Some(ax), Some(ay)],
            None => smallvec![Some(ay)],
        };
        Ok(BackwardResult { inputs, bias })
    }

    fn needs_input_bounds(&self) -> &[usize] {
        if self.numerator.is_some() { &[0] } else { &[0, 1] }
    }

    /// The lines [`backward`](LinearRelaxation::backward) chose, at `z`: per element, the
    /// McCormick plane of `x·r` its coefficient's sign takes (or the constant numerator),
    /// with `r` on the reciprocal's line the sign of `r`'s coefficient takes.
    fn relaxed_forward(
        &self,
        ctx: &BackwardCtx<'_, T>,
        a: MatRef<'_, T>,
        upper: bool,
        z: &[&[T]],
        out: &mut [T],
    ) -> Result<()> {
        let (rl, ru, rel) = self.reciprocal(ctx.bounds(self.y_edge())?)?;
        let x = match self.numerator {
            Some(_) => None,
            None => Some(ctx.bounds(0)?),
        };
        let n = self.sy.len();
        let zy = z[self.y_edge()];
        for r in 0..a.nrows() {
            for i in 0..n {
                let ai = a[(r, i)];
                let yv = zy[r * self.ny + self.sy[i]];
                let recip = |c: T| {
                    let (k, b) = chosen_line(c, upper, &rel.lines(i));
                    k * yv + b
                };
                out[r * n + i] = match (&self.numerator, x) {
                    (Some(c), _) => c[i] * recip(ai * c[i]),
                    (None, Some(x)) => {
                        let xv = z[0][r * self.nx + self.sx[i]];
                        // As `relax_side`: a positive coefficient takes its side's plane.
                        let own = (ai > T::zero()) != upper;
                        let (al, be, ga) = plane(own, x.lower[self.sx[i]], rl[i], ru[i]);
                        al * xv + be * recip(ai * be) + ga
                    }
                    (None, None) => unreachable!("a perturbed numerator has bounds"),
                };
            }
        }
        Ok(())
    }
}

impl<T: Scalar> Operator<T> for BilinearDiv<T> {
    fn op_type(&self) -> &str {
        "Div"
    }
}

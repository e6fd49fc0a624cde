//! Element-wise product of two perturbed tensors, with ONNX (numpy) broadcasting.

use crate::{Product, by_sides, check_finite, mul_interval, plane};
use faer::{Mat, MatRef};
use lirpa_core::op::{BackwardCtx, Evaluate, Interval, IntervalRule, LinearRelaxation, NodeDef, Operator};
use lirpa_core::{
    BackwardResult, BuiltOp, ElementwiseRelaxation, Error, LinearA, Result, Scalar, broadcast_shapes,
    broadcast_source_index, numel,
};

/// `z[i] = x[sx[i]] · y[sy[i]]`.
pub type BilinearMul = Product<MulTerms>;

/// The terms of an element-wise product: one per output element.
#[derive(Debug)]
pub struct MulTerms {
    /// Source element of each output element in `x` and `y`.
    pub(crate) sx: Vec<usize>,
    pub(crate) sy: Vec<usize>,
    pub(crate) nx: usize,
    pub(crate) ny: usize,
}

impl BilinearMul {
    pub(crate) fn new(x: &[usize], y: &[usize], out: &[usize]) -> Result<Self> {
        Ok(Product(MulTerms {
            sx: broadcast_source_index(x, out)?,
            sy: broadcast_source_index(y, out)?,
            nx: numel(x),
            ny: numel(y),
        }))
    }
}

/// Decline the uses the linear plugin handles (a constant operand).
pub(crate) fn both_perturbed(node: &NodeDef<'_>) -> Result<()> {
    node.input(0)?;
    node.input(1)?;
    if node.is_const(0) || node.is_const(1) {
        return Err(Error::declined("an operand is constant (an exact scaling)"));
    }
    Ok(())
}

pub fn build_mul<T: Scalar>(node: &NodeDef<'_>) -> Result<BuiltOp<T>> {
    both_perturbed(node)?;
    let (x, y) = (&node.input(0)?.shape, &node.input(1)?.shape);
    if node.same_source(0, 1) {
        return Ok(BuiltOp::new(Square, &[0], x.clone()));
    }
    let out = broadcast_shapes(x, y)?;
    Ok(BuiltOp::new(BilinearMul::new(x, y, &out)?, &[0, 1], out))
}

impl<T: Scalar> Evaluate<T> for BilinearMul {
    fn forward(&self, inputs: &[&[T]], out: &mut [T]) -> Result<()> {
        let (x, y) = (inputs[0], inputs[1]);
        for (i, o) in out.iter_mut().enumerate() {
            *o = x[self.sx[i]] * y[self.sy[i]];
        }
        Ok(())
    }
}

impl<T: Scalar> IntervalRule<T> for BilinearMul {
    fn interval(&self, inputs: &[Interval<'_, T>], lower: &mut [T], upper: &mut [T]) -> Result<()> {
        let (x, y) = (inputs[0], inputs[1]);
        for i in 0..lower.len() {
            let (a, b) = (self.sx[i], self.sy[i]);
            (lower[i], upper[i]) = mul_interval(x.lower[a], x.upper[a], y.lower[b], y.upper[b]);
        }
        Ok(())
    }
}

/// Relax every product `x[sx[i]]·y[sy[i]]` of one side of a backward bound:
/// coefficients on `x` and `y` and the bias. `lower` selects the side.
#[allow(clippy::too_many_arguments)]
pub(crate) fn relax_side<T: Scalar>(
    m: &Mat<T>,
    lower: bool,
    x: Interval<'_, T>,
    y: Interval<'_, T>,
    sx: &[usize],
    sy: &[usize],
    nx: usize,
    ny: usize,
    bias: &mut [T],
) -> (Mat<T>, Mat<T>) {
    let zero = T::zero();
    let spec = m.nrows();
    let mut ax = Mat::<T>::zeros(spec, nx);
    let mut ay = Mat::<T>::zeros(spec, ny);
    for i in 0..m.ncols() {
        let (jx, jy) = (sx[i], sy[i]);
        let (xl, yl, yu) = (x.lower[jx], y.lower[jy], y.upper[jy]);
        // Positive coefficients take this side's own plane, negative ones the other.
        let own = plane(lower, xl, yl, yu);
        let other = plane(!lower, xl, yl, yu);
        let col = m.col_as_slice(i);
        for (r, &a) in col.iter().enumerate() {
            if a == zero {
                continue;
            }
            let (al, be, ga) = if a > zero { own } else { other };
            ax[(r, jx)] += a * al;
            ay[(r, jy)] += a * be;
            bias[r] += a * ga;
        }
    }
    (ax, ay)
}

impl<T: Scalar> LinearRelaxation<T> for BilinearMul {
    fn backward(&self, ctx: &BackwardCtx<'_, T>, a: LinearA<T>) -> Result<BackwardResult<T>> {
        let (x, y) = (ctx.bounds(0)?, ctx.bounds(1)?);
        check_finite("input 0", x.lower)?;
        check_finite("input 1", y.lower)?;
        check_finite("input 1", y.upper)?;
        by_sides(&a, |m, upper, bias| {
            let (ax, ay) = relax_side(m, !upper, x, y, &self.sx, &self.sy, self.nx, self.ny, bias);
            Ok((Some(ax), Some(ay)))
        })
    }

    fn needs_input_bounds(&self) -> &[usize] {
        &[0, 1]
    }

    /// The interpolation between the two McCormick planes of each side (see module `opt`).
    fn optimizable(&self) -> Option<&dyn lirpa_core::OptimizableRelaxation<T>> {
        Some(self)
    }

    /// The adjoint of `backward` for one side: each product evaluated, at the inputs'
    /// values `z` of every row, on the plane that row's coefficient sign selects (as
    /// `relax_side` does), for α-CROWN's gradient through a fixed relaxation.
    fn relaxed_forward(
        &self,
        ctx: &BackwardCtx<'_, T>,
        a: MatRef<'_, T>,
        upper: bool,
        z: &[&[T]],
        out: &mut [T],
    ) -> Result<()> {
        let (x, y) = (ctx.bounds(0)?, ctx.bounds(1)?);
        let n = a.ncols();
        let lower = !upper;
        for i in 0..n {
            let (jx, jy) = (self.sx[i], self.sy[i]);
            let (xl, yl, yu) = (x.lower[jx], y.lower[jy], y.upper[jy]);
            let (own, other) = (plane(lower, xl, yl, yu), plane(!lower, xl, yl, yu));
            for r in 0..a.nrows() {
                let (al, be, ga) = if a[(r, i)] >= T::zero() { own } else { other };
                out[r * n + i] = al * z[0][r * self.nx + jx] + be * z[1][r * self.ny + jy] + ga;
            }
        }
        Ok(())
    }
}

impl<T: Scalar> Operator<T> for BilinearMul {
    fn op_type(&self) -> &str {
        "Mul"
    }
}

/// `x·x` (both operands the same tensor), with auto_LiRPA's square relaxation: the
/// chord `(l + u)·x − l·u` above and the tangent at `m` below, where `m` is the point
/// of `[l, u]` closest to 0 (`x² − (2m·x − m²) = (x − m)² ≥ 0`). Constants are widened
/// outward by `4·ε` of the terms' magnitude.
#[derive(Debug)]
pub struct Square;

pub(crate) fn closest_to_zero<T: Scalar>(l: T, u: T) -> T {
    l.max(T::zero()).min(u)
}

/// The square's chord on `[l, u]`: `(l + u)·x − l·u`, its constant widened by `4ε` of
/// its terms' magnitude.
pub(crate) fn square_upper<T: Scalar>(l: T, u: T) -> (T, T) {
    let margin = T::from_f64(4.0) * T::epsilon();
    let s = l + u;
    (s, -(l * u) + margin * ((l * u).abs() + s.abs() * l.abs().max(u.abs())))
}

impl<T: Scalar> Evaluate<T> for Square {
    fn forward(&self, inputs: &[&[T]], out: &mut [T]) -> Result<()> {
        for (o, &x) in out.iter_mut().zip(inputs[0]) {
            *o = x * x;
        }
        Ok(())
    }
}

impl<T: Scalar> IntervalRule<T> for Square {
    fn interval(&self, inputs: &[Interval<'_, T>], lower: &mut [T], upper: &mut [T]) -> Result<()> {
        let x = inputs[0];
        for i in 0..lower.len() {
            let (l, u) = (x.lower[i], x.upper[i]);
            let m = closest_to_zero(l, u);
            lower[i] = m * m;
            upper[i] = (l * l).max(u * u);
        }
        Ok(())
    }

    fn interval_is_tight(&self) -> bool {
        true
    }
}

impl Square {
    /// The square's lines on the bounds of its input: the tangent at the point nearest 0
    /// below, the chord above, both widened by `4ε` of their magnitude.
    fn relaxation<T: Scalar>(&self, ctx: &BackwardCtx<'_, T>) -> Result<ElementwiseRelaxation<T>> {
        let x = ctx.bounds(0)?;
        check_finite("input 0", x.lower)?;
        check_finite("input 0", x.upper)?;
        let margin = T::from_f64(4.0) * T::epsilon();
        let n = x.lower.len();
        let mut rel = ElementwiseRelaxation {
            lower_slope: Vec::with_capacity(n),
            lower_intercept: Vec::with_capacity(n),
            upper_slope: Vec::with_capacity(n),
            upper_intercept: Vec::with_capacity(n),
        };
        for (&l, &u) in x.lower.iter().zip(x.upper) {
            let m = closest_to_zero(l, u);
            rel.lower_slope.push(m + m);
            rel.lower_intercept.push(-(m * m) - margin * m * m);
            let (us, ui) = square_upper(l, u);
            rel.upper_slope.push(us);
            rel.upper_intercept.push(ui);
        }
        Ok(rel)
    }
}

impl<T: Scalar> LinearRelaxation<T> for Square {
    fn backward(&self, ctx: &BackwardCtx<'_, T>, a: LinearA<T>) -> Result<BackwardResult<T>> {
        Ok(self.relaxation(ctx)?.backward(a))
    }

    fn needs_input_bounds(&self) -> &[usize] {
        &[0]
    }

    /// The lower tangent's point (see [`crate::opt`]).
    fn optimizable(&self) -> Option<&dyn lirpa_core::OptimizableRelaxation<T>> {
        Some(self)
    }

    /// The adjoint of `backward` (α-CROWN's gradient passes through fixed relaxations).
    fn relaxed_forward(
        &self,
        ctx: &BackwardCtx<'_, T>,
        a: MatRef<'_, T>,
        upper: bool,
        z: &[&[T]],
        out: &mut [T],
    ) -> Result<()> {
        self.relaxation(ctx)?.relaxed_forward(a, upper, z[0], out);
        Ok(())
    }
}

impl<T: Scalar> Operator<T> for Square {
    fn op_type(&self) -> &str {
        "Mul"
    }
}

//! Two-piece linear activations `f(x) = max(x, 0) + slope · min(x, 0)`: Relu
//! (`slope = 0`) and LeakyRelu.
//!
//! Relaxation on an input interval `[l, u]`, with `l_r = min(l, 0)` and
//! `u_r = max(u, 0, l_r + 1e-8)` (auto_LiRPA's formulas):
//! - upper line: the chord through `(l_r, f(l_r))` and `(u_r, f(u_r))`;
//! - lower line: through the origin with slope 1 or `slope`, chosen by
//!   [`ReluLowerSlope`] (adaptive: 1 when the chord slope exceeds 0.5, i.e. `u > -l`).
//!
//! Both lines are exact on stable neurons, so the relaxation is sound on `[l, u]`. The
//! upper intercept is raised by any rounding violation measured at the ends.

use lirpa_core::op::{BackwardCtx, Evaluate, Interval, IntervalRule, LinearRelaxation, NodeDef, Operator};
use lirpa_core::{
    BackwardResult, BuiltOp, ElementwiseRelaxation, LinearA, ReluLowerSlope, Result, Scalar, register_op,
};

register_op!("Relu", build_relu);
register_op!("LeakyRelu", build_leaky_relu);

/// The operator types this crate registers.
pub const OPS: &[&str] = &["LeakyRelu", "Relu"];

#[derive(Debug)]
pub struct TwoPiece<T> {
    op_type: &'static str,
    /// Slope on the negative side (0 for Relu).
    slope: T,
}

impl<T: Scalar> TwoPiece<T> {
    #[inline]
    fn f(&self, x: T) -> T {
        if x >= T::zero() { x } else { self.slope * x }
    }

    /// The intercept `b` of the chord is a difference of two products of size
    /// `|l_r·d|`: on wide intervals rounding can put the line below `f` at an end by a
    /// few ulps (found by the soundness harness). Measure the violation at both ends in
    /// `f64` (with a fused multiply-add) and raise the intercept by it, rounded up;
    /// exact cases are left untouched.
    fn secure_upper(&self, d: T, b: T, l_r: T, u_r: T) -> T {
        // f in f64 (exact for f32 operands).
        let f = |x: T| if x >= T::zero() { x.as_f64() } else { self.slope.as_f64() * x.as_f64() };
        let viol = |x: T| f(x) - d.as_f64().mul_add(x.as_f64(), b.as_f64());
        let v = viol(l_r).max(viol(u_r));
        if v > 0.0 {
            let nb = T::from_f64(b.as_f64() + v);
            let nb = if nb.as_f64() < b.as_f64() + v { nb.next_up() } else { nb };
            nb.next_up()
        } else {
            b
        }
    }

    /// The element-wise relaxation on `[lower, upper]`.
    pub fn relaxation(&self, lower: &[T], upper: &[T], mode: ReluLowerSlope) -> ElementwiseRelaxation<T> {
        let n = lower.len();
        let mut r = ElementwiseRelaxation {
            lower_slope: Vec::with_capacity(n),
            lower_intercept: vec![T::zero(); n],
            upper_slope: Vec::with_capacity(n),
            upper_intercept: Vec::with_capacity(n),
        };
        let tiny = T::from_f64(1e-8);
        let half = T::from_f64(0.5);
        for (&l, &u) in lower.iter().zip(upper) {
            let l_r = l.min(T::zero());
            let u_r = u.max(T::zero()).max(l_r + tiny);
            let d = (u_r - self.slope * l_r) / (u_r - l_r);
            let b = -l_r * d + self.slope * l_r;
            let b = self.secure_upper(d, b, l_r, u_r);
            let lower_d = match mode {
                ReluLowerSlope::SameSlope => d,
                ReluLowerSlope::ZeroLb => {
                    if d >= T::one() {
                        T::one()
                    } else {
                        self.slope
                    }
                }
                ReluLowerSlope::OneLb => {
                    if d > self.slope {
                        T::one()
                    } else {
                        self.slope
                    }
                }
                ReluLowerSlope::Adaptive => {
                    if d > half {
                        T::one()
                    } else {
                        self.slope
                    }
                }
            };
            r.upper_slope.push(d);
            r.upper_intercept.push(b);
            r.lower_slope.push(lower_d);
        }
        r
    }
}

impl<T: Scalar> Evaluate<T> for TwoPiece<T> {
    fn forward(&self, inputs: &[&[T]], out: &mut [T]) -> Result<()> {
        for (o, &x) in out.iter_mut().zip(inputs[0]) {
            *o = self.f(x);
        }
        Ok(())
    }
}

impl<T: Scalar> IntervalRule<T> for TwoPiece<T> {
    fn interval(&self, inputs: &[Interval<'_, T>], lower: &mut [T], upper: &mut [T]) -> Result<()> {
        // Monotone non-decreasing for slope >= 0.
        for i in 0..lower.len() {
            lower[i] = self.f(inputs[0].lower[i]);
            upper[i] = self.f(inputs[0].upper[i]);
        }
        Ok(())
    }
    fn interval_is_tight(&self) -> bool {
        true
    }
}

impl<T: Scalar> LinearRelaxation<T> for TwoPiece<T> {
    fn backward(&self, ctx: &BackwardCtx<'_, T>, a: LinearA<T>) -> Result<BackwardResult<T>> {
        let b = ctx.bounds(0)?;
        Ok(self.relaxation(b.lower, b.upper, ctx.options.relu_lower_slope).backward(a))
    }
    fn needs_input_bounds(&self) -> &[usize] {
        &[0]
    }
    fn refine_mask(&self, _input: usize, lower: &[T], upper: &[T]) -> Option<Vec<bool>> {
        Some(lower.iter().zip(upper).map(|(&l, &u)| l < T::zero() && u > T::zero()).collect())
    }
    /// Element-wise: the sign split works cell by cell on windowed coefficients.
    fn supports_window(&self) -> bool {
        true
    }
}

impl<T: Scalar> Operator<T> for TwoPiece<T> {
    fn op_type(&self) -> &str {
        self.op_type
    }
}

fn build_relu<T: Scalar>(node: &NodeDef<'_>) -> Result<BuiltOp<T>> {
    let x = node.input(0)?;
    Ok(BuiltOp::new(TwoPiece { op_type: "Relu", slope: T::zero() }, &[0], x.shape.clone()))
}

fn build_leaky_relu<T: Scalar>(node: &NodeDef<'_>) -> Result<BuiltOp<T>> {
    let x = node.input(0)?;
    let alpha = node.attrs.float_or("alpha", 0.01)?;
    if !(0.0..=1.0).contains(&alpha) {
        return Err(lirpa_core::Error::unimplemented(format!("LeakyRelu with alpha {alpha} outside [0, 1]")));
    }
    Ok(BuiltOp::new(TwoPiece { op_type: "LeakyRelu", slope: T::from_f64(alpha) }, &[0], x.shape.clone()))
}

//! A complete operator plugin in one file, the template to copy: `Swish`,
//! `y = x · σ(β·x)`, registered in the custom ONNX domain `com.example` (an ONNX node
//! `Swish` with `domain = "com.example"` and a float attribute `beta`, default 1).
//!
//! It uses only `lirpa-core`'s public API: the three operator traits, the builder
//! signature and [`register_op!`]. A program that uses it names the crate once
//! (`use lirpa_example_swish as _;`), or the linker drops its registration.
//!
//! # The relaxation, and why it is sound
//! Swish is neither monotone nor convex, so this plugin uses a relaxation that needs
//! only a bound on the curvature. With `z = β·x`,
//! `f''(x) = β·σ'(z)·(2 − z·tanh(z/2))`. Since `z·tanh(z/2) ≥ 0` and
//! `σ'(z) ≤ min(1/4, e^{−|z|})`, we get `−β/e ≤ f''(x) ≤ β/2`, so `|f''| ≤ M = β/2`.
//! For such a function the gap to the chord on `[l, u]` is at most
//! `M·(x−l)(u−x)/2 ≤ M·(u−l)²/8`, so
//! `chord(x) − m ≤ f(x) ≤ chord(x) + m` with `m = M·(u−l)²/8`.
//! On wide intervals constant lines are tighter: the minimum of `f` is at
//! `x* = z*/β` (`z* ≈ −1.27846`, `f(x*) ≈ −0.278465/β`) when `x*` is in `[l, u]`, else at
//! an end point; the maximum is at an end point. The plugin takes whichever of the two
//! relaxations has the smaller gap.
//!
//! Everything is computed in `f64` and the intercepts are widened by a relative margin
//! that covers rounding of `f`, of the chord and of the conversion to `T`.

use lirpa_core::op::{BackwardCtx, Evaluate, Interval, IntervalRule, LinearRelaxation, NodeDef, Operator};
use lirpa_core::{
    BackwardResult, BuiltOp, ElementwiseRelaxation, Error, LinearA, Result, Scalar, register_op,
};

register_op!(domain = DOMAIN, "Swish", build_swish);

/// The custom ONNX domain of this crate's operators.
pub const DOMAIN: &str = "com.example";

/// `σ(z)·z` at its minimum: `z* = −1.2784645427610738`, value `−0.2784645427610738`
/// (the root of `1 + z·(1 − σ(z)) = 0`), rounded down.
const MIN_VALUE_AT_BETA_1: f64 = -0.278_464_542_761_074_1;
const ARGMIN_AT_BETA_1: f64 = -1.278_464_542_761_074;

#[derive(Debug)]
pub struct Swish {
    beta: f64,
}

fn sigmoid(z: f64) -> f64 {
    if z >= 0.0 {
        1.0 / (1.0 + (-z).exp())
    } else {
        let e = z.exp();
        e / (1.0 + e)
    }
}

/// A relative margin that covers the rounding of a few f64 operations and of the final
/// conversion to `T`.
fn slack<T: Scalar>(scale: f64) -> f64 {
    let eps_t = (T::one().next_up() - T::one()).as_f64();
    (4.0 * eps_t + 1e-12) * (1.0 + scale.abs())
}

impl Swish {
    pub fn new(beta: f64) -> Result<Self> {
        if !(beta.is_finite() && beta > 0.0) {
            return Err(Error::Invalid(format!("Swish beta must be finite and > 0, got {beta}")));
        }
        Ok(Swish { beta })
    }

    pub fn f(&self, x: f64) -> f64 {
        x * sigmoid(self.beta * x)
    }

    /// Exact range of `f` on `[l, u]` (up to rounding, which the caller widens).
    fn range(&self, l: f64, u: f64) -> (f64, f64) {
        let (fl, fu) = (self.f(l), self.f(u));
        let xs = ARGMIN_AT_BETA_1 / self.beta;
        let lo = if l <= xs && xs <= u { MIN_VALUE_AT_BETA_1 / self.beta } else { fl.min(fu) };
        (lo, fl.max(fu))
    }

    /// Lower and upper lines `(slope, intercept)` on `[l, u]`, valid for `T`.
    pub fn lines<T: Scalar>(&self, l: f64, u: f64) -> ((f64, f64), (f64, f64)) {
        let (lo, hi) = self.range(l, u);
        let w = u - l;
        let m = self.beta / 2.0 * w * w / 8.0;
        let (fl, fu) = (self.f(l), self.f(u));
        let (lines, scale) = if w > 0.0 && 2.0 * m < hi - lo {
            let k = (fu - fl) / w;
            let b = fl - k * l;
            let scale = fl.abs().max(fu.abs()) + k.abs() * l.abs().max(u.abs()) + b.abs();
            (((k, b - m), (k, b + m)), scale)
        } else {
            (((0.0, lo), (0.0, hi)), lo.abs().max(hi.abs()))
        };
        let s = slack::<T>(scale);
        let ((kl, bl), (ku, bu)) = lines;
        ((kl, bl - s), (ku, bu + s))
    }
}

impl<T: Scalar> Evaluate<T> for Swish {
    fn forward(&self, inputs: &[&[T]], out: &mut [T]) -> Result<()> {
        for (o, &x) in out.iter_mut().zip(inputs[0]) {
            *o = T::from_f64(self.f(x.as_f64()));
        }
        Ok(())
    }
}

impl<T: Scalar> IntervalRule<T> for Swish {
    fn interval(&self, inputs: &[Interval<'_, T>], lower: &mut [T], upper: &mut [T]) -> Result<()> {
        for i in 0..lower.len() {
            let (l, u) = (inputs[0].lower[i].as_f64(), inputs[0].upper[i].as_f64());
            let (lo, hi) = self.range(l, u);
            lower[i] = T::from_f64(lo - slack::<T>(lo));
            upper[i] = T::from_f64(hi + slack::<T>(hi));
        }
        Ok(())
    }
    /// The range above is exact given exact input bounds.
    fn interval_is_tight(&self) -> bool {
        true
    }
}

impl<T: Scalar> LinearRelaxation<T> for Swish {
    fn backward(&self, ctx: &BackwardCtx<'_, T>, a: LinearA<T>) -> Result<BackwardResult<T>> {
        let b = ctx.bounds(0)?;
        let n = b.lower.len();
        let mut r = ElementwiseRelaxation {
            lower_slope: Vec::with_capacity(n),
            lower_intercept: Vec::with_capacity(n),
            upper_slope: Vec::with_capacity(n),
            upper_intercept: Vec::with_capacity(n),
        };
        for (&l, &u) in b.lower.iter().zip(b.upper) {
            let ((kl, bl), (ku, bu)) = self.lines::<T>(l.as_f64(), u.as_f64());
            r.lower_slope.push(T::from_f64(kl));
            r.lower_intercept.push(T::from_f64(bl));
            r.upper_slope.push(T::from_f64(ku));
            r.upper_intercept.push(T::from_f64(bu));
        }
        Ok(r.backward(a))
    }
    fn needs_input_bounds(&self) -> &[usize] {
        &[0]
    }
    fn supports_window(&self) -> bool {
        true
    }
}

impl<T: Scalar> Operator<T> for Swish {
    fn op_type(&self) -> &str {
        "Swish"
    }
}

fn build_swish<T: Scalar>(node: &NodeDef<'_>) -> Result<BuiltOp<T>> {
    let x = node.input(0)?;
    let beta = node.attrs.float_or("beta", 1.0)?;
    Ok(BuiltOp::new(Swish::new(beta)?, &[0], x.shape.clone()))
}

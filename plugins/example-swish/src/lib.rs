//! A complete operator plugin in one file, the template to copy: `Swish`,
//! `y = x · σ(β·x)`, registered in the custom ONNX domain `com.example` (an ONNX node
//! `Swish` with `domain = "com.example"` and a float attribute `beta`, default 1).
//!
//! It depends on `lirpa-core` (the builder signature and [`register_op!`]) and on the
//! plugin kit `lirpa-kit`, and on no other plugin: the function is a
//! [`lirpa_kit::Func`] (value, exact range, relaxation in `f64`), and the kit's
//! [`Elementwise`] adaptor makes it an operator for every method (IBP, CROWN,
//! CROWN-IBP, forward modes, and α-CROWN, whose gradient passes through the
//! relaxation's adjoint). A program that uses it names the crate once
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
//! Everything is computed in `f64`; the kit then verifies each line against `f` at the
//! interval ends and midpoint, shifts it by any violation plus a relative margin, and
//! rounds it outward to `T` (`lirpa_kit::line`), so rounding never breaks soundness.

use lirpa_core::op::NodeDef;
use lirpa_core::{BuiltOp, Error, Result, Scalar, register_op};
use lirpa_kit::line::{Line, Relax};
use lirpa_kit::{Elementwise, Func, build_unary};

register_op!(domain = DOMAIN, "Swish", build_swish);

/// The custom ONNX domain of this crate's operators.
pub const DOMAIN: &str = "com.example";

/// `σ(z)·z` at its minimum: `z* = −1.2784645427610738`, value `−0.2784645427610738`
/// (the root of `1 + z·(1 − σ(z)) = 0`), rounded down.
const MIN_VALUE_AT_BETA_1: f64 = -0.278_464_542_761_074_1;
const ARGMIN_AT_BETA_1: f64 = -1.278_464_542_761_074;

/// `x·σ(β·x)`.
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

impl Swish {
    pub fn new(beta: f64) -> Result<Self> {
        if !(beta.is_finite() && beta > 0.0) {
            return Err(Error::Invalid(format!("Swish beta must be finite and > 0, got {beta}")));
        }
        Ok(Swish { beta })
    }

    /// The operator: the kit's adaptor around this function.
    pub fn operator(self) -> Elementwise<Swish> {
        Elementwise::new(self)
    }

    /// `f`, with its limit 0 at `−∞`.
    fn value(&self, x: f64) -> f64 {
        if x == f64::NEG_INFINITY { 0.0 } else { x * sigmoid(self.beta * x) }
    }
}

impl Func for Swish {
    fn op_type(&self) -> &'static str {
        "Swish"
    }

    fn f(&self, x: f64) -> f64 {
        self.value(x)
    }

    /// The minimum is at `x*` when `x*` is in `[l, u]`, else at an end point; the
    /// maximum is at an end point.
    fn range(&self, l: f64, u: f64) -> (f64, f64) {
        let (fl, fu) = (self.value(l), self.value(u));
        let xs = ARGMIN_AT_BETA_1 / self.beta;
        let lo = if l <= xs && xs <= u { MIN_VALUE_AT_BETA_1 / self.beta } else { fl.min(fu) };
        (lo, fl.max(fu))
    }

    /// The chord shifted by `±M·(u−l)²/8`, or the constant bounds of the range,
    /// whichever has the smaller gap.
    fn relax(&self, l: f64, u: f64) -> Relax {
        let (lo, hi) = self.range(l, u);
        let w = u - l;
        let m = self.beta / 2.0 * w * w / 8.0;
        if w > 0.0 && 2.0 * m < hi - lo {
            let (fl, fu) = (self.value(l), self.value(u));
            let k = (fu - fl) / w;
            let chord = Line::through(k, l, fl);
            Relax::new(Line { k, b: chord.b - m }, Line { k, b: chord.b + m })
        } else {
            Relax::constant(lo, hi)
        }
    }
}

fn build_swish<T: Scalar>(node: &NodeDef<'_>) -> Result<BuiltOp<T>> {
    let beta = node.attrs.float_or("beta", 1.0)?;
    build_unary(node, Swish::new(beta)?)
}

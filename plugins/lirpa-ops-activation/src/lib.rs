//! Element-wise nonlinear operators with sound linear relaxations:
//!
//! - S-shaped: Sigmoid, Tanh, Atan, Erf (auto_LiRPA 0.7.1's tangent/chord cases, with
//!   tangent points found by bisection and verified, see [`sshape`]);
//! - Gelu (`approximate = "none"` or `"tanh"`): the chord slope with the tightest
//!   intercepts;
//! - convex or concave: Exp, Log, Reciprocal, Sqrt, Softplus, Pow with a constant
//!   exponent (`Pow(x, 2)` is auto_LiRPA's `BoundSqr`): chord on one side, tangent on
//!   the other (auto_LiRPA's tangent points);
//! - Sin and Cos: S-shaped on a monotone piece, chord and tangent on a convex or
//!   concave piece, else the constant bounds of the exact range;
//! - piecewise: Abs, Clip (constant bounds; HardTanh), Sign, Floor.
//!
//! Each function is a [`lirpa_kit::Func`] made an operator by the plugin kit's
//! [`Elementwise`] adaptor. Optimizable (α-CROWN, the kit's optimized rules): every
//! function above but the piecewise ones (the tangent points are parameters; the
//! slopes where a relaxation is a fixed-slope pair: Gelu, Sin and Cos across an
//! extremum, odd powers across 0).
//!
//! Every relaxation is computed in `f64` and made sound in floating point by
//! [`lirpa_kit::line::secure`] and [`lirpa_kit::line::to_scalar`] (a verified shift and
//! a `1e-12` relative margin on the intercepts, outward rounding to `T`). Inputs outside a function's
//! domain (Log of an interval reaching 0, Reciprocal across 0, Sqrt of a negative
//! value, …) and relaxations that overflow `T` are errors naming the operator; the
//! engine adds the node. No bound is ever NaN.

pub mod funcs;
pub mod special;
pub mod sshape;

use funcs::{Gelu, Piecewise, Pow, SKind, SShaped, Smooth, SmoothFn, Trig};
use lirpa_core::op::NodeDef;
use lirpa_core::{BuiltOp, Error, Result, Scalar, register_op};
pub use lirpa_kit::Elementwise;
use lirpa_kit::build_unary as unary;

register_op!("Sigmoid", build_sigmoid);
register_op!("Tanh", build_tanh);
register_op!("Atan", build_atan);
register_op!("Erf", build_erf);
register_op!("Gelu", build_gelu);
register_op!("Exp", build_exp);
register_op!("Log", build_log);
register_op!("Reciprocal", build_reciprocal);
register_op!("Sqrt", build_sqrt);
register_op!("Softplus", build_softplus);
register_op!("Pow", build_pow);
register_op!("Sin", build_sin);
register_op!("Cos", build_cos);
register_op!("Abs", build_abs);
register_op!("Clip", build_clip);
register_op!("Sign", build_sign);
register_op!("Floor", build_floor);

fn build_sigmoid<T: Scalar>(node: &NodeDef<'_>) -> Result<BuiltOp<T>> {
    unary(node, SShaped(SKind::Sigmoid))
}
fn build_tanh<T: Scalar>(node: &NodeDef<'_>) -> Result<BuiltOp<T>> {
    unary(node, SShaped(SKind::Tanh))
}
fn build_atan<T: Scalar>(node: &NodeDef<'_>) -> Result<BuiltOp<T>> {
    unary(node, SShaped(SKind::Atan))
}
fn build_erf<T: Scalar>(node: &NodeDef<'_>) -> Result<BuiltOp<T>> {
    unary(node, SShaped(SKind::Erf))
}
fn build_gelu<T: Scalar>(node: &NodeDef<'_>) -> Result<BuiltOp<T>> {
    match node.attrs.string("approximate")? {
        None | Some("none") => unary(node, Gelu { tanh: false }),
        Some("tanh") => unary(node, Gelu { tanh: true }),
        Some(a) => Err(Error::Invalid(format!("Gelu with unknown approximate = '{a}'"))),
    }
}
fn build_exp<T: Scalar>(node: &NodeDef<'_>) -> Result<BuiltOp<T>> {
    unary(node, SmoothFn(Smooth::Exp))
}
fn build_log<T: Scalar>(node: &NodeDef<'_>) -> Result<BuiltOp<T>> {
    unary(node, SmoothFn(Smooth::Log))
}
fn build_reciprocal<T: Scalar>(node: &NodeDef<'_>) -> Result<BuiltOp<T>> {
    unary(node, SmoothFn(Smooth::Reciprocal))
}
fn build_sqrt<T: Scalar>(node: &NodeDef<'_>) -> Result<BuiltOp<T>> {
    unary(node, SmoothFn(Smooth::Sqrt))
}
fn build_softplus<T: Scalar>(node: &NodeDef<'_>) -> Result<BuiltOp<T>> {
    unary(node, SmoothFn(Smooth::Softplus))
}
fn build_sin<T: Scalar>(node: &NodeDef<'_>) -> Result<BuiltOp<T>> {
    unary(node, Trig { cos: false })
}
fn build_cos<T: Scalar>(node: &NodeDef<'_>) -> Result<BuiltOp<T>> {
    unary(node, Trig { cos: true })
}
fn build_abs<T: Scalar>(node: &NodeDef<'_>) -> Result<BuiltOp<T>> {
    unary(node, Piecewise::Abs)
}
fn build_sign<T: Scalar>(node: &NodeDef<'_>) -> Result<BuiltOp<T>> {
    unary(node, Piecewise::Sign)
}
fn build_floor<T: Scalar>(node: &NodeDef<'_>) -> Result<BuiltOp<T>> {
    unary(node, Piecewise::Floor)
}

/// A scalar constant input, or an error saying what is unsupported.
fn scalar_input(node: &NodeDef<'_>, i: usize, what: &str) -> Result<Option<f64>> {
    match node.inputs.get(i) {
        None | Some(None) => Ok(None),
        Some(Some(_)) => {
            if !node.is_const(i) {
                return Err(Error::unimplemented(format!("{} with a perturbed {what}", node.op_type)));
            }
            let t = node.const_input(i)?;
            if t.numel() != 1 {
                return Err(Error::unimplemented(format!(
                    "{} with a non-scalar {what} of shape {:?}",
                    node.op_type, t.shape
                )));
            }
            Ok(Some(t.data[0]))
        }
    }
}

fn build_pow<T: Scalar>(node: &NodeDef<'_>) -> Result<BuiltOp<T>> {
    let p =
        scalar_input(node, 1, "exponent")?.ok_or_else(|| Error::Invalid("Pow needs an exponent".into()))?;
    if !p.is_finite() {
        return Err(Error::Invalid(format!("Pow with a non-finite exponent {p}")));
    }
    unary(node, Pow { p })
}

fn build_clip<T: Scalar>(node: &NodeDef<'_>) -> Result<BuiltOp<T>> {
    let (lo, hi) = if node.opset < 11 {
        (node.attrs.float("min")?, node.attrs.float("max")?)
    } else {
        (scalar_input(node, 1, "min")?, scalar_input(node, 2, "max")?)
    };
    let (lo, hi) = (lo.unwrap_or(f64::NEG_INFINITY), hi.unwrap_or(f64::INFINITY));
    if lo.is_nan() || hi.is_nan() {
        return Err(Error::Invalid("Clip with a NaN bound".into()));
    }
    unary(node, Piecewise::Clip(lo, hi))
}

#[cfg(test)]
mod tests {
    use super::*;
    use lirpa_kit::Func;
    use lirpa_kit::line::Line;

    fn relax(func: impl Func, l: f64, u: f64) -> (Line, Line) {
        Elementwise::new(func).relax_f64(l, u).unwrap()
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() <= 1e-9 * b.abs().max(1.0)
    }

    /// Exp on [0, 1] (auto_LiRPA): lower tangent at min(0.5, 0.99) = 0.5, slope e^0.5,
    /// intercept e^0.5·(1 - 0.5); upper chord through (0, 1) with slope e - 1.
    #[test]
    fn exp_tangent_and_chord() {
        let (lo, hi) = relax(SmoothFn(Smooth::Exp), 0.0, 1.0);
        let e = std::f64::consts::E;
        assert!(close(lo.k, e.sqrt()) && close(lo.b, 0.5 * e.sqrt()), "{lo:?}");
        assert!(close(hi.k, e - 1.0) && close(hi.b, 1.0), "{hi:?}");
        // Secured: the lower intercept is below, the upper above, the exact values.
        assert!(lo.b <= 0.5 * e.sqrt() && hi.b >= 1.0);
    }

    /// Sigmoid on [1, 3] (concave side): chord below, tangent at 2 above.
    #[test]
    fn sigmoid_concave_side() {
        let s = funcs::sigmoid;
        let (lo, hi) = relax(SShaped(SKind::Sigmoid), 1.0, 3.0);
        let k = (s(3.0) - s(1.0)) / 2.0;
        assert!(close(lo.k, k) && close(lo.b, s(1.0) - k), "{lo:?}");
        let d = s(2.0) * (1.0 - s(2.0));
        assert!(close(hi.k, d) && close(hi.b, s(2.0) - 2.0 * d), "{hi:?}");
    }

    /// Tanh on [-1, 3]: the chord slope (tanh 3 + tanh 1)/4 ≈ 0.439 exceeds
    /// tanh'(-1) ≈ 0.420, so the lower line is the tangent at the d < 0 whose line
    /// touches tanh at 3.01 (the grid point above 3); it is below tanh on the whole
    /// interval.
    #[test]
    fn tanh_crossing_zero_tangent_is_valid() {
        let (lo, hi) = relax(SShaped(SKind::Tanh), -1.0, 3.0);
        for i in 0..=400 {
            let x = -1.0 + 4.0 * i as f64 / 400.0;
            assert!(lo.k * x + lo.b <= x.tanh(), "lower at {x}");
            assert!(hi.k * x + hi.b >= x.tanh(), "upper at {x}");
        }
        // The tangent touches tanh at 3.01, to bisection precision.
        let gap = 3.01f64.tanh() - (lo.k * 3.01 + lo.b);
        assert!((0.0..1e-9).contains(&gap), "gap {gap}");
    }

    /// Sin on [2, 3] lies in the decreasing piece around π (S-shaped, reflected) and
    /// in the concave piece [0, π]: the bounds must contain sin on the interval.
    #[test]
    fn sin_reflected_piece() {
        let (lo, hi) = relax(Trig { cos: false }, 2.0, 3.0);
        for i in 0..=100 {
            let x = 2.0 + i as f64 / 100.0;
            assert!(lo.k * x + lo.b <= x.sin() && hi.k * x + hi.b >= x.sin(), "at {x}");
        }
        assert!(lo.k < 0.0 && hi.k < 0.0);
    }

    /// Sin on [1, 4] crosses the maximum at π/2 and the inflection at π: the chord
    /// slope k = (sin 4 - sin 1)/3 ≈ -0.533 with intercepts touching sin at the ends
    /// or where cos y = k (y ≈ 2.133); the upper line at 4 is ≈ -0.15, far below the
    /// constant bound 1.
    #[test]
    fn sin_across_an_extremum() {
        let (lo, hi) = relax(Trig { cos: false }, 1.0, 4.0);
        let k = (4f64.sin() - 1f64.sin()) / 3.0;
        assert!(close(lo.k, k) && close(hi.k, k));
        for i in 0..=300 {
            let x = 1.0 + 3.0 * i as f64 / 300.0;
            assert!(lo.k * x + lo.b <= x.sin() && hi.k * x + hi.b >= x.sin(), "at {x}");
        }
        let y = k.acos();
        assert!(close(hi.b, y.sin() - k * y), "{hi:?}");
        assert!(hi.k * 4.0 + hi.b < 0.0);
    }

    #[test]
    fn domain_errors_are_errors() {
        let e = Elementwise::new(SmoothFn(Smooth::Log));
        assert!(e.relax_f64(-1.0, 1.0).unwrap_err().to_string().contains("Log"));
        assert!(e.interval_f64(0.0, 1.0).is_err());
        let r = Elementwise::new(SmoothFn(Smooth::Reciprocal));
        assert!(r.relax_f64(-1.0, 1.0).is_err() && r.relax_f64(-2.0, -1.0).is_ok());
        let s = Elementwise::new(SmoothFn(Smooth::Sqrt));
        assert!(s.relax_f64(-1e-9, 1.0).is_err() && s.relax_f64(0.0, 0.0).is_ok());
        // Overflow is an error, not an infinite line.
        let x = Elementwise::new(SmoothFn(Smooth::Exp));
        assert!(x.relax_f64(0.0, 1000.0).is_err());
        assert!(x.relaxation::<f32>(&[0.0], &[88.0]).is_ok());
    }
}

//! Products of two perturbed tensors: Mul, MatMul and Div.
//!
//! Every product term `x·y` is relaxed by auto_LiRPA's default McCormick planes
//! (`bivariate.py`):
//!
//! ```text
//!     lower: y_l·x + x_l·y − x_l·y_l      (x·y − lower = (x − x_l)(y − y_l) ≥ 0)
//!     upper: y_u·x + x_l·y − x_l·y_u      (upper − x·y = (x − x_l)(y_u − y) ≥ 0)
//! ```
//!
//! For a backward bound, a positive coefficient on the product takes the lower plane
//! of the lower bound (the upper plane of the upper bound) and a negative one the
//! other plane. MatMul applies this to each product term `x[.., i, t]·y[.., t, j]`
//! and sums. Div `x / y` is `x · r` with `r = 1/y`, relaxed by the reciprocal's chord
//! and midpoint tangent where `y` keeps one strict sign; an interval of `y` that
//! reaches 0 is an error naming the node.
//!
//! Gemm with a perturbed factor (a perturbed weight, alone or with a perturbed input,
//! or a perturbed bias) is the MatMul of its transposed operands, scaled, plus the bias
//! (module `gemm`). Conv with a perturbed weight or bias is the same operator: the
//! batched MatMul of the weight (`[g, C_out/g, C_in/g·kh·kw]`) and the input's im2col,
//! an index map whose padding taps are the constant 0 (module `conv`).
//!
//! These builders register with priority 10 for Mul, MatMul, Gemm, Conv and Div and
//! *decline* (see [`lirpa_core::registry`]) the uses the linear and conv plugins handle
//! exactly: a constant factor of Mul, a constant right operand of MatMul, a constant
//! divisor, a Conv whose weight and bias are constant.
//! They take a constant left operand of MatMul (exact here) and a constant numerator
//! of Div (an exact scaling of the reciprocal).
//!
//! Floating point: the planes' constant terms are widened outward by a relative
//! `4·ε` of their magnitude (ε the machine epsilon of the number type), and the
//! reciprocal's bounds `1/u`, `1/l` are rounded outward, so rounding in the
//! relaxation itself cannot make a bound unsound.

mod conv;
mod div;
mod gemm;
mod matmul;
mod mul;
mod opt;

use lirpa_core::register_op;

/// Priority of these builders over the linear plugin's (0).
pub const PRIORITY: i32 = 10;

register_op!(priority = 10, "Mul", mul::build_mul);
register_op!(priority = 10, "MatMul", matmul::build_matmul);
register_op!(priority = 10, "Div", div::build_div);
register_op!(priority = 10, "Gemm", gemm::build_gemm);
register_op!(priority = 10, "Conv", conv::build_conv);

use lirpa_core::Scalar;

/// The McCormick planes of one product term, as `(α, β, γ)` with
/// `plane = α·x + β·y + γ`, for the lower (`lower = true`) or upper plane, with the
/// constant widened outward for rounding.
#[inline]
pub(crate) fn plane<T: Scalar>(lower: bool, xl: T, yl: T, yu: T) -> (T, T, T) {
    let margin = T::from_f64(4.0) * T::epsilon();
    if lower {
        let p = xl * yl;
        (yl, xl, -p - margin * p.abs())
    } else {
        let p = xl * yu;
        (yu, xl, -p + margin * p.abs())
    }
}

/// Interval of `x·y` for `x ∈ [xl, xu]`, `y ∈ [yl, yu]`: the extremes of the four
/// corner products.
#[inline]
pub(crate) fn mul_interval<T: Scalar>(xl: T, xu: T, yl: T, yu: T) -> (T, T) {
    let (a, b, c, d) = (xl * yl, xl * yu, xu * yl, xu * yu);
    (a.min(b).min(c.min(d)), a.max(b).max(c.max(d)))
}

/// A product of two perturbed tensors described by its product terms `L` (Mul's
/// `mul::MulTerms`, MatMul's `matmul::MatMulTerms`): the one type whose α-CROWN rule
/// (module `opt`) serves both. Its operator rules are implemented per `L`.
#[derive(Debug)]
pub struct Product<L>(pub(crate) L);

impl<L> std::ops::Deref for Product<L> {
    type Target = L;

    fn deref(&self) -> &L {
        &self.0
    }
}

/// One side's coefficients on the two inputs of a product.
pub(crate) type SidePair<T> = (Option<faer::Mat<T>>, Option<faer::Mat<T>>);

/// The backward result of a product of two inputs, side by side: `side(m, upper, bias)`
/// gives the coefficients on both inputs of the side whose coefficients on the product
/// are `m` (dense) and adds that side's constants to `bias`.
pub(crate) fn by_sides<T: Scalar>(
    a: &lirpa_core::LinearA<T>,
    mut side: impl FnMut(&faer::Mat<T>, bool, &mut [T]) -> lirpa_core::Result<SidePair<T>>,
) -> lirpa_core::Result<lirpa_core::BackwardResult<T>> {
    let mut bias = lirpa_core::LinearBias::zeros(a.spec());
    let (lx, ly) = match &a.lower {
        Some(m) => side(m, false, &mut bias.lower)?,
        None => (None, None),
    };
    let (ux, uy) = match &a.upper {
        Some(m) => side(m, true, &mut bias.upper)?,
        None => (None, None),
    };
    let dense = lirpa_core::LinearA::dense;
    Ok(lirpa_core::BackwardResult {
        inputs: smallvec::smallvec![Some(dense(lx, ux)), Some(dense(ly, uy))],
        bias,
    })
}

/// Refuse infinite or NaN input bounds with a clear message (a relaxation built on
/// them would produce NaN).
pub(crate) fn check_finite<T: Scalar>(what: &str, xs: &[T]) -> lirpa_core::Result<()> {
    match xs.iter().position(|x| !x.is_finite()) {
        Some(i) => Err(lirpa_core::Error::NonFinite(format!("{what} bound {i}"))),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use lirpa_core::{Attributes, Error, GraphBuilder, TensorData};

    /// This test binary links only this plugin: a product by a constant, which it
    /// declines, has no other builder and is reported as not implemented, with the
    /// reason.
    #[test]
    fn declined_use_without_the_linear_plugin_is_unimplemented() {
        let mut b = GraphBuilder::<f64>::new();
        b.add_input("x", &[3]).unwrap();
        b.add_constant("c", TensorData::float(&[3], vec![1.0, 2.0, 3.0]).unwrap()).unwrap();
        let err =
            b.add_node("scaled", "Mul", "", 13, &Attributes::default(), &[Some("x"), Some("c")]).unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, Error::Unimplemented { .. }), "{msg}");
        assert!(msg.contains("'scaled'") && msg.contains("declined") && msg.contains("constant"), "{msg}");
    }

    /// Hand-checked interval and reciprocal relaxation of Div on one element:
    /// `x ∈ [1, 2]`, `y ∈ [2, 4]`: `x/y ∈ [1/4, 1]`.
    #[test]
    fn div_interval_hand_checked() {
        let mut b = GraphBuilder::<f64>::new();
        b.add_input("x", &[1]).unwrap();
        b.add_input("y", &[1]).unwrap();
        b.add_node("q", "Div", "", 13, &Attributes::default(), &[Some("x"), Some("y")]).unwrap();
        let g = b.finish(&["q"]).unwrap();
        let op = g.node(g.find("q").unwrap()).op().unwrap();
        let (xl, xu, yl, yu) = ([1.0], [2.0], [2.0], [4.0]);
        let ins = [
            lirpa_core::Interval { lower: &xl[..], upper: &xu[..] },
            lirpa_core::Interval { lower: &yl[..], upper: &yu[..] },
        ];
        let (mut lo, mut hi) = ([0.0], [0.0]);
        op.interval(&ins, &mut lo, &mut hi).unwrap();
        assert!((lo[0] - 0.25).abs() < 1e-12 && (hi[0] - 1.0).abs() < 1e-12, "{lo:?} {hi:?}");
        // A divisor interval reaching 0 is an error, not a NaN.
        let (yl, yu) = ([-1.0], [1.0]);
        let ins = [ins[0], lirpa_core::Interval { lower: &yl[..], upper: &yu[..] }];
        assert!(op.interval(&ins, &mut lo, &mut hi).is_err());
    }
}

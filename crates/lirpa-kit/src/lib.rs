//! The plugin kit: what an element-wise operator plugin needs beyond `lirpa-core`,
//! usable by an out-of-tree plugin without depending on another plugin.
//!
//! - [`line`](mod@line): lines in `f64`, their verification against the function
//!   ([`line::secure`]: checked at the interval ends, the midpoint and the contact
//!   points, the intercept shifted by any violation plus a `1e-12` relative margin) and
//!   their sound rounding to the bound type `T` ([`line::to_scalar`], outward);
//! - [`Func`]: one element-wise function in `f64` (value, domain, exact range,
//!   relaxation), with the optional tangent-point parametrization of its relaxation
//!   ([`Tangents`], α-CROWN) and helpers for common shapes ([`convex_plan`],
//!   [`fixed_slope_pivots`]);
//! - [`Elementwise`]: the adaptor that makes a [`Func`] an operator: IBP on the exact
//!   range rounded outward, CROWN and forward mode through its verified lines, the
//!   adjoint for α-CROWN's gradient, optimized tangent points when the function has
//!   [`Func::tangents`], and training for non-decreasing functions;
//!   [`build_unary`] is a builder's one line.
//!
//! ```text
//! #[derive(Debug)]
//! struct Cube;
//! impl lirpa_kit::Func for Cube { /* op_type, f, range, relax */ }
//! fn build<T: Scalar>(node: &NodeDef<'_>) -> Result<BuiltOp<T>> { lirpa_kit::build_unary(node, Cube) }
//! lirpa_core::register_op!(domain = "com.example", "Cube", build);
//! ```

mod elementwise;
mod func;
pub mod line;
mod opt;

pub use elementwise::{Elementwise, build_unary};
pub use func::{
    FixedLine, Func, Pivot, Tangent, TangentPlan, Tangents, convex_plan, domain_error, fixed_slope_pivots,
    monotone_range,
};
pub use opt::Elem;

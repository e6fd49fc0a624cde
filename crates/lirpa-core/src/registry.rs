//! The operator registry. Plugin crates submit an [`OpRegistration`] per operator
//! type with [`register_op!`]; importers look builders up by `(domain, op_type)`.
//!
//! A plugin crate that no code names is not linked and its registrations vanish: the
//! facade crate names every standard plugin, and tests check the registered set.

use crate::op::{BuiltOp, NodeDef};
use crate::{Result, Scalar};

/// A builder of an operator for one number type.
pub type BuildFn<T> = fn(&NodeDef<'_>) -> Result<BuiltOp<T>>;

/// One registered operator type.
pub struct OpRegistration {
    /// Operator domain: `""` for the standard ONNX domain.
    pub domain: &'static str,
    pub op_type: &'static str,
    /// The crate that registered it, for diagnostics.
    pub plugin: &'static str,
    pub build_f32: BuildFn<f32>,
    pub build_f64: BuildFn<f64>,
}

inventory::collect!(OpRegistration);

/// Select the builder of a registration for `T`.
pub trait BuilderFor: Scalar {
    fn builder(reg: &OpRegistration) -> BuildFn<Self>;
}
impl BuilderFor for f32 {
    fn builder(reg: &OpRegistration) -> BuildFn<f32> {
        reg.build_f32
    }
}
impl BuilderFor for f64 {
    fn builder(reg: &OpRegistration) -> BuildFn<f64> {
        reg.build_f64
    }
}

/// Normalize the standard domain's two spellings.
fn norm_domain(d: &str) -> &str {
    if d == "ai.onnx" { "" } else { d }
}

/// The registration for an operator type, if any plugin provides it.
pub fn lookup(domain: &str, op_type: &str) -> Option<&'static OpRegistration> {
    let domain = norm_domain(domain);
    inventory::iter::<OpRegistration>
        .into_iter()
        .find(|r| r.op_type == op_type && norm_domain(r.domain) == domain)
}

/// All registrations, sorted by `(domain, op_type)` (inventory's order is unspecified).
pub fn registered_ops() -> Vec<&'static OpRegistration> {
    let mut v: Vec<_> = inventory::iter::<OpRegistration>.into_iter().collect();
    v.sort_by_key(|r| (r.domain, r.op_type));
    v
}

/// Register an operator builder. The builder is a generic function
/// `fn build<T: Scalar>(node: &NodeDef) -> Result<BuiltOp<T>>`; it is instantiated
/// for `f32` and `f64`.
///
/// ```text
/// lirpa_core::register_op!("Relu", build_relu);
/// lirpa_core::register_op!(domain = "com.example", "Swish", build_swish);
/// ```
#[macro_export]
macro_rules! register_op {
    (domain = $domain:expr, $op_type:expr, $($builder:ident)::+) => {
        $crate::reexport::inventory::submit! {
            $crate::registry::OpRegistration {
                domain: $domain,
                op_type: $op_type,
                plugin: env!("CARGO_PKG_NAME"),
                build_f32: $($builder)::+::<f32>,
                build_f64: $($builder)::+::<f64>,
            }
        }
    };
    ($op_type:expr, $($builder:ident)::+) => {
        $crate::register_op!(domain = "", $op_type, $($builder)::+);
    };
}

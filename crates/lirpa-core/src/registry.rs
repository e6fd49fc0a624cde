//! The operator registry. Plugin crates submit an [`OpRegistration`] per operator
//! type with [`register_op!`](crate::register_op); importers look builders up by `(domain, op_type)`.
//!
//! Several plugins may register the same `(domain, op_type)`, each with a
//! `priority`. The graph builder tries the builders from the highest priority down;
//! a builder that does not handle a particular use of its operator (e.g. a bilinear
//! plugin shown a product by a constant) returns [`Error::Declined`](crate::Error::Declined)
//! and the next one is tried. Two registrations of one operator type never share a
//! priority (the facade's tests check it), so the order is deterministic.
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
    /// Builders of the same operator type are tried from the highest priority down
    /// (the standard plugins use 0; a plugin that refines some uses of an operator
    /// registers with a higher one and declines the others).
    pub priority: i32,
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

/// The registration of an operator type with the highest priority, if any plugin
/// provides it.
pub fn lookup(domain: &str, op_type: &str) -> Option<&'static OpRegistration> {
    lookup_all(domain, op_type).into_iter().next()
}

/// Every registration of an operator type, highest priority first (ties by plugin
/// name, so that the order never depends on link order).
pub fn lookup_all(domain: &str, op_type: &str) -> Vec<&'static OpRegistration> {
    let domain = norm_domain(domain);
    let mut v: Vec<_> = inventory::iter::<OpRegistration>
        .into_iter()
        .filter(|r| r.op_type == op_type && norm_domain(r.domain) == domain)
        .collect();
    v.sort_by(|a, b| b.priority.cmp(&a.priority).then(a.plugin.cmp(b.plugin)));
    v
}

/// All registrations, sorted by `(domain, op_type)` and then by decreasing priority
/// (inventory's order is unspecified).
pub fn registered_ops() -> Vec<&'static OpRegistration> {
    let mut v: Vec<_> = inventory::iter::<OpRegistration>.into_iter().collect();
    v.sort_by(|a, b| {
        (a.domain, a.op_type)
            .cmp(&(b.domain, b.op_type))
            .then(b.priority.cmp(&a.priority))
            .then(a.plugin.cmp(b.plugin))
    });
    v
}

/// The operator types a plugin registers (sorted, each once), by its package name
/// (`"lirpa-ops-relu"`) or crate name (`"lirpa_ops_relu"`): the registrations are the
/// one list of what a plugin provides.
pub fn plugin_ops(plugin: &str) -> Vec<&'static str> {
    let norm = |s: &str| s.replace('-', "_");
    let plugin = norm(plugin);
    let mut v: Vec<&'static str> =
        registered_ops().iter().filter(|r| norm(r.plugin) == plugin).map(|r| r.op_type).collect();
    v.dedup();
    v
}

/// Register an operator builder. The builder is a generic function
/// `fn build<T: Scalar>(node: &NodeDef) -> Result<BuiltOp<T>>`; it is instantiated
/// for `f32` and `f64`.
///
/// ```text
/// lirpa_core::register_op!("Relu", build_relu);
/// lirpa_core::register_op!(domain = "com.example", "Swish", build_swish);
/// // Tried before the priority-0 builder of "Mul"; declines what it does not handle.
/// lirpa_core::register_op!(priority = 10, "Mul", build_bilinear_mul);
/// ```
#[macro_export]
macro_rules! register_op {
    (priority = $priority:expr, domain = $domain:expr, $op_type:expr, $($builder:ident)::+) => {
        $crate::reexport::inventory::submit! {
            $crate::registry::OpRegistration {
                domain: $domain,
                op_type: $op_type,
                priority: $priority,
                plugin: env!("CARGO_PKG_NAME"),
                build_f32: $($builder)::+::<f32>,
                build_f64: $($builder)::+::<f64>,
            }
        }
    };
    (priority = $priority:expr, $op_type:expr, $($builder:ident)::+) => {
        $crate::register_op!(priority = $priority, domain = "", $op_type, $($builder)::+);
    };
    (domain = $domain:expr, $op_type:expr, $($builder:ident)::+) => {
        $crate::register_op!(priority = 0, domain = $domain, $op_type, $($builder)::+);
    };
    ($op_type:expr, $($builder:ident)::+) => {
        $crate::register_op!(priority = 0, domain = "", $op_type, $($builder)::+);
    };
}

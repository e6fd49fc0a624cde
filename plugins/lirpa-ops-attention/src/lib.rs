//! Operators of attention blocks beyond products: Softmax (auto_LiRPA's default
//! `lse` relaxation, Wei et al., AISTATS 2023), the reductions ReduceSum and
//! ReduceMean (exact) and ReduceMax/ReduceMin (a sound selection relaxation), and
//! LayerNormalization (a decomposed relaxation, see `layernorm`).
//!
//! Every operator here works on *groups*: sets of input elements that one output
//! element (a reduction) or one softmax vector depends on, computed once when the
//! operator is built from its axes.

mod groups;
mod layernorm;
mod reduce;
mod softmax;

use lirpa_core::register_op;

register_op!("Softmax", softmax::build_softmax);
register_op!("ReduceSum", reduce::build_reduce_sum);
register_op!("ReduceMean", reduce::build_reduce_mean);
register_op!("ReduceMax", reduce::build_reduce_max);
register_op!("ReduceMin", reduce::build_reduce_min);
register_op!("LayerNormalization", layernorm::build_layer_norm);

/// The operator types this crate registers (checked by the facade's tests).
pub const OPS: &[&str] =
    &["LayerNormalization", "ReduceMax", "ReduceMean", "ReduceMin", "ReduceSum", "Softmax"];

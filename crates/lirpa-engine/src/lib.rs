//! Bound propagation engines over a [`Graph`]: IBP, CROWN (backward linear bound
//! propagation on a general DAG, summing coefficients at fan-out), CROWN-IBP and
//! α-CROWN (optimized relaxations, with a hand-written gradient of the bound).
//!
//! The engine knows operators only through the traits of `lirpa-core`.

mod backward;
mod options;

pub use backward::alpha::{
    AlphaNode, AlphaPass, AlphaRun, AlphaState, bound_and_gradient, compute_bounds_optimized,
};
pub use backward::{BoundResult, InputValue, LinearBoundA, compute_bounds};
pub use options::{BoundOptions, BoundRequest, ConvMode, Method, OptimizeOptions};

pub use lirpa_core::{Graph, NodeId, Perturbation, Scalar};

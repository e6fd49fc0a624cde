//! Bound propagation engines over a [`Graph`]: IBP, CROWN (backward linear bound
//! propagation on a general DAG, summing coefficients at fan-out) and CROWN-IBP.
//!
//! The engine knows operators only through the traits of `lirpa-core`.

mod backward;
mod options;

pub use backward::{BoundResult, InputValue, LinearBoundA, compute_bounds};
pub use options::{BoundOptions, BoundRequest, ConvMode, Method};

pub use lirpa_core::{Graph, NodeId, Perturbation, Scalar};

//! Bound propagation engines over a [`Graph`]: IBP, CROWN (backward linear bound
//! propagation on a general DAG, summing coefficients at fan-out), CROWN-IBP and
//! α-CROWN (optimized relaxations, with a hand-written gradient of the bound).
//!
//! The engine knows operators only through the traits of `lirpa-core`.

mod backward;
mod options;
pub mod train;

pub use backward::alpha::{
    AlphaNode, AlphaPass, AlphaRun, AlphaState, bound_and_gradient, compute_bounds_optimized,
    compute_bounds_optimized_keep,
};
pub use backward::{
    BoundResult, InputValue, IntermediateBounds, LinearBoundA, compute_bounds, compute_bounds_keep,
};
pub use options::{BoundOptions, BoundRequest, ConvMode, Method, NodeBounds, OptimizeOptions};
pub use train::{BoundGrads, CrownTape, IbpTape, NaturalTape, SpecMethod, SpecTape, TrainGraph};

pub use lirpa_core::{Graph, NodeId, Perturbation, Scalar};

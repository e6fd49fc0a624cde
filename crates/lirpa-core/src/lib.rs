//! Core of lirpa: the bound graph, the operator traits and their registry, the
//! linear-function algebra (`A·x + b` with lower and upper sides) on faer, and
//! perturbation sets with their concretization.
//!
//! This crate names no concrete operator and knows nothing of ONNX: operators are
//! plugins that register a builder with [`register_op!`], and importers feed the
//! [`GraphBuilder`] with op types, attributes and tensors.

pub mod attr;
pub mod budget;
pub mod error;
pub mod fpsound;
pub mod graph;
pub mod linear;
pub mod op;
pub mod perturbation;
pub mod recent;
pub mod registry;
pub mod rng;
pub mod scalar;
pub mod spatial;
pub mod tensor;
pub mod train;
pub mod window;

pub use attr::{Attr, Attributes};
pub use budget::checked_numel;
pub use error::{Error, Result};
pub use fpsound::{FpKind, FpRounding, FpSound};
pub use graph::{Graph, GraphBuilder, Node, NodeId, NodeKind};
pub use linear::{BackwardResult, ElementwiseRelaxation, FormInput, LinearA, LinearBias, LinearForm};
pub use op::{
    BackwardCtx, BatchInput, BuiltOp, Evaluate, InputDef, Interval, IntervalRule, LinearRelaxation, NodeDef,
    Operator, OptimizableRelaxation, RelaxOption, RelaxOptions, SideParams,
};
pub use perturbation::{Norm, Perturbation};
pub use registry::{OpRegistration, lookup, lookup_all, plugin_ops, registered_ops};
pub use scalar::Scalar;
pub use tensor::{DType, Shape, TensorData, broadcast_shapes, broadcast_source_index, numel};
pub use train::{AffineTrain, ElementwiseTrain, Param, TrainRule, Trainable};
pub use window::{Window, spatial_dims};

/// Re-exported so that plugins use the same version of these crates as the core.
pub mod reexport {
    pub use faer;
    pub use inventory;
    pub use smallvec;
}
pub use faer::Par;

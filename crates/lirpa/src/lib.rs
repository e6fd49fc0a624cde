//! lirpa: provable bounds on what a neural network can output when its input is
//! perturbed, by linear relaxation based perturbation analysis (IBP, CROWN,
//! CROWN-IBP), on ONNX models, without Python.
//!
//! This facade re-exports the core API and links the standard operator plugins
//! (each behind a cargo feature), so that their registrations are present.
//!
//! ```no_run
//! use lirpa::{BoundOptions, BoundRequest, InputValue, Method, Norm, Perturbation};
//! let graph = lirpa::load_onnx::<f32>("model.onnx")?;
//! let n = graph.node(graph.input()?).numel();
//! let ptb = Perturbation::new_ball(Norm::Inf, vec![0.0; n], 0.1)?;
//! let res = lirpa::compute_bounds(
//!     &graph,
//!     &[InputValue::Perturbed(ptb)],
//!     &BoundOptions::with_method(Method::Crown),
//!     &BoundRequest::default(),
//! )?;
//! println!("{:?} {:?}", res.lower, res.upper);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

// Name every plugin so the linker keeps its registrations (inventory's rule).
#[cfg(feature = "activation")]
use lirpa_ops_activation as _;
#[cfg(feature = "attention")]
use lirpa_ops_attention as _;
#[cfg(feature = "bilinear")]
use lirpa_ops_bilinear as _;
#[cfg(feature = "conv")]
use lirpa_ops_conv as _;
#[cfg(feature = "linear")]
use lirpa_ops_linear as _;
#[cfg(feature = "relu")]
use lirpa_ops_relu as _;

pub mod sample;
pub mod tensors;

pub use lirpa_core::{
    self as core, Error, Graph, LinearA, LinearBias, NodeId, Norm, Perturbation, Result, Scalar,
    registered_ops,
};
pub use lirpa_engine::{
    AlphaNode, AlphaPass, AlphaRun, AlphaState, BetaParams, BoundGrads, BoundOptions, BoundRequest,
    BoundResult, ConvMode, CrownTape, IbpTape, InputValue, IntermediateBounds, LinearBoundA, Method,
    NaturalTape, NodeBounds, NodeConstraint, OptimizeOptions, SpecMethod, SpecTape, TrainGraph,
    bound_and_gradient, compute_bounds, compute_bounds_batch, compute_bounds_keep, compute_bounds_optimized,
    compute_bounds_optimized_keep,
};
pub use lirpa_onnx::{
    self as onnx, LoadOptions, Loaded, OnnxError, load as load_onnx, load_bytes_with as load_onnx_bytes_with,
    load_with as load_onnx_with,
};
pub use tensors::{PerturbedModel, TensorPerturbation, TensorSet, load_perturbed, load_perturbed_bytes};

/// The operator types the enabled standard plugins register.
pub fn standard_ops() -> Vec<&'static str> {
    #[allow(unused_mut)]
    let mut v: Vec<&'static str> = Vec::new();
    #[cfg(feature = "linear")]
    v.extend(lirpa_ops_linear::OPS);
    #[cfg(feature = "relu")]
    v.extend(lirpa_ops_relu::OPS);
    #[cfg(feature = "conv")]
    v.extend(lirpa_ops_conv::OPS);
    #[cfg(feature = "bilinear")]
    v.extend(lirpa_ops_bilinear::OPS);
    #[cfg(feature = "attention")]
    v.extend(lirpa_ops_attention::OPS);
    #[cfg(feature = "activation")]
    v.extend(lirpa_ops_activation::OPS);
    v.sort_unstable();
    // Bilinear refines operator types the linear and conv plugins also register.
    v.dedup();
    v
}

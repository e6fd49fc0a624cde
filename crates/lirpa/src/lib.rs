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

/// Each standard plugin, named once: behind its cargo feature, linked (inventory keeps
/// the registrations of a crate only when some code names it) and listed by
/// [`standard_plugins`].
macro_rules! standard_plugins {
    ($($feature:literal => $krate:ident),* $(,)?) => {
        $(
            #[cfg(feature = $feature)]
            use $krate as _;
        )*
        /// The crate names of the standard plugins this build links (by cargo feature).
        pub fn standard_plugins() -> Vec<&'static str> {
            vec![$(
                #[cfg(feature = $feature)]
                stringify!($krate),
            )*]
        }
    };
}

standard_plugins! {
    "linear" => lirpa_ops_linear,
    "relu" => lirpa_ops_relu,
    "conv" => lirpa_ops_conv,
    "bilinear" => lirpa_ops_bilinear,
    "attention" => lirpa_ops_attention,
    "activation" => lirpa_ops_activation,
}

pub mod sample;
pub mod tensors;

pub use lirpa_core::{
    self as core, Error, Graph, LinearA, LinearBias, NodeId, Norm, Perturbation, Result, Scalar,
    registered_ops,
};
pub use lirpa_engine::{
    AlphaNode, AlphaPass, AlphaRun, AlphaState, BetaParams, BoundGrads, BoundOptions, BoundRequest,
    BoundResult, ConvMode, CrownTape, DomainResult, IbpTape, InputValue, IntermediateBounds, LinearBoundA,
    Method, NaturalTape, NodeBounds, NodeConstraint, OptimizeOptions, SpecMethod, SpecTape, SubDomain,
    TrainGraph, bound_and_gradient, compute_bounds, compute_bounds_batch, compute_bounds_keep,
    compute_bounds_optimized, compute_bounds_optimized_batch, compute_bounds_optimized_keep,
};
pub use lirpa_onnx::{
    self as onnx, LoadOptions, Loaded, OnnxError, load as load_onnx, load_bytes_with as load_onnx_bytes_with,
    load_with as load_onnx_with,
};
pub use tensors::{PerturbedModel, TensorPerturbation, TensorSet, load_perturbed, load_perturbed_bytes};

/// The operator types the enabled standard plugins register (from their registrations;
/// sorted, each once: the bilinear plugin refines types the linear and conv plugins
/// also register).
pub fn standard_ops() -> Vec<&'static str> {
    let mut v: Vec<&'static str> = standard_plugins().into_iter().flat_map(lirpa_core::plugin_ops).collect();
    v.sort_unstable();
    v.dedup();
    v
}

//! Perturbations keyed by ONNX tensor name: any graph input and any initializer (a
//! weight or a bias) can be given a set of values.
//!
//! ```no_run
//! use lirpa::{Norm, TensorPerturbation, TensorSet};
//! let model = lirpa::load_perturbed::<f32>(
//!     "model.onnx",
//!     &[
//!         TensorPerturbation::new("input", TensorSet::Exact(vec![0.5; 8])),
//!         TensorPerturbation::new("fc2.weight", TensorSet::Ball { norm: Norm::Inf, eps: 0.01, center: None }),
//!     ],
//! )?;
//! // `model.inputs` has one `InputValue` per graph input of `model.graph`.
//! # Ok::<(), lirpa::OnnxError>(())
//! ```
//!
//! Initializers named here become graph inputs after the model's own inputs, in the
//! order listed (see [`lirpa_onnx::LoadOptions`]); initializers not named keep their
//! stored values.

use lirpa_core::registry::BuilderFor;
use lirpa_core::{Error, Graph, Norm, Perturbation, Scalar, TensorData};
use lirpa_engine::InputValue;
use lirpa_onnx::{LoadOptions, OnnxError};
use std::collections::HashSet;
use std::path::Path;

/// The set of values of one tensor, flattened row-major.
#[derive(Clone, Debug, PartialEq)]
pub enum TensorSet<T: Scalar> {
    /// Exactly this value (a graph input that is not perturbed).
    Exact(Vec<T>),
    /// An Lp ball of radius `eps` around `center` (for an initializer, `None` means its
    /// stored value). An L2 ball is over the whole tensor (a Frobenius ball for a matrix).
    Ball { norm: Norm, eps: T, center: Option<Vec<T>> },
    /// Element-wise bounds.
    Box { lower: Vec<T>, upper: Vec<T> },
}

/// The set of values of the tensor named `tensor` (an ONNX graph input or initializer).
#[derive(Clone, Debug, PartialEq)]
pub struct TensorPerturbation<T: Scalar> {
    pub tensor: String,
    pub set: TensorSet<T>,
}

impl<T: Scalar> TensorPerturbation<T> {
    pub fn new(tensor: impl Into<String>, set: TensorSet<T>) -> Self {
        TensorPerturbation { tensor: tensor.into(), set }
    }
}

/// A model loaded for [`TensorPerturbation`]s: the graph and one [`InputValue`] per
/// graph input, in the graph's order, ready for [`crate::compute_bounds`].
#[derive(Debug)]
pub struct PerturbedModel<T: Scalar> {
    pub graph: Graph<T>,
    pub inputs: Vec<InputValue<T>>,
    /// The names of the graph inputs, in order (the model's inputs, then the perturbed
    /// initializers).
    pub names: Vec<String>,
}

/// Load `path` with the named tensors' sets (see [`load_perturbed_bytes`]).
pub fn load_perturbed<T: Scalar + BuilderFor>(
    path: impl AsRef<Path>,
    tensors: &[TensorPerturbation<T>],
) -> Result<PerturbedModel<T>, OnnxError> {
    let path = path.as_ref();
    let shown = path.display().to_string();
    let bytes = lirpa_core::budget::read_file_limited(path, None)
        .map_err(|err| OnnxError::Io { path: shown.clone(), err })?;
    load_perturbed_bytes(&bytes, &shown, tensors)
}

/// Load a model from memory with the named tensors' sets: every graph input must be
/// listed exactly once; every other name must be an initializer, which becomes a graph
/// input. Errors name the file (`name`) and the tensor.
pub fn load_perturbed_bytes<T: Scalar + BuilderFor>(
    bytes: &[u8],
    name: &str,
    tensors: &[TensorPerturbation<T>],
) -> Result<PerturbedModel<T>, OnnxError> {
    let fail = |msg: String| OnnxError::Graph { path: name.to_string(), err: Box::new(Error::Invalid(msg)) };
    let declared = lirpa_onnx::graph_input_names(bytes, name)?;
    let mut seen = HashSet::new();
    for t in tensors {
        if !seen.insert(t.tensor.as_str()) {
            return Err(fail(format!("tensor '{}' is listed twice", t.tensor)));
        }
    }
    if let Some(missing) = declared.iter().find(|d| !seen.contains(d.as_str())) {
        return Err(fail(format!("graph input '{missing}' is not listed")));
    }
    let perturbed: Vec<String> =
        tensors.iter().filter(|t| !declared.contains(&t.tensor)).map(|t| t.tensor.clone()).collect();
    let loaded =
        lirpa_onnx::load_bytes_with::<T>(bytes, name, &LoadOptions { perturbed: perturbed.clone() })?;
    let graph = loaded.graph;
    let names: Vec<String> = graph.inputs().iter().map(|&id| graph.node(id).name.clone()).collect();
    let mut inputs = Vec::with_capacity(names.len());
    for (k, (input, &id)) in names.iter().zip(graph.inputs()).enumerate() {
        let entry = tensors.iter().find(|t| &t.tensor == input).expect("every graph input is listed");
        let stored = k.checked_sub(declared.len()).map(|j| &loaded.initial[j]);
        let value = input_value(&entry.set, graph.node(id).numel(), stored)
            .map_err(|e| fail(format!("tensor '{input}': {e}")))?;
        inputs.push(value);
    }
    Ok(PerturbedModel { graph, inputs, names })
}

/// The engine's value of one tensor of `n` elements; `stored` is an initializer's value.
fn input_value<T: Scalar>(
    set: &TensorSet<T>,
    n: usize,
    stored: Option<&TensorData>,
) -> Result<InputValue<T>, String> {
    let check = |what: &str, v: &[T]| {
        if v.len() != n {
            return Err(format!("{what} has {} numbers, the tensor has {n} elements", v.len()));
        }
        match v.iter().position(|x| !x.is_finite()) {
            Some(i) => Err(format!("{what} value {i} is not finite")),
            None => Ok(()),
        }
    };
    Ok(match set {
        TensorSet::Exact(v) => {
            check("the value", v)?;
            InputValue::Exact(v.clone())
        }
        TensorSet::Ball { norm, eps, center } => {
            let center = match (center, stored) {
                (Some(c), _) => c.clone(),
                (None, Some(s)) => s.data.iter().map(|&x| T::from_f64(x)).collect(),
                (None, None) => return Err("a graph input needs a centre".into()),
            };
            check("the centre", &center)?;
            InputValue::Perturbed(Perturbation::new_ball(*norm, center, *eps).map_err(|e| e.to_string())?)
        }
        TensorSet::Box { lower, upper } => {
            check("the lower bound", lower)?;
            check("the upper bound", upper)?;
            InputValue::Perturbed(
                Perturbation::new_box(lower.clone(), upper.clone()).map_err(|e| e.to_string())?,
            )
        }
    })
}

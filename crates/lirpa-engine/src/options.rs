use faer::{MatRef, Par};
use lirpa_core::{Error, NodeId, RelaxOptions, Result, Scalar};
use serde::{Deserialize, Serialize};

/// The bound propagation method.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Method {
    /// Interval bound propagation.
    Ibp,
    /// Backward linear bound propagation, with CROWN intermediate bounds.
    Crown,
    /// IBP for intermediate bounds, CROWN for the bounded node.
    CrownIbp,
}

impl std::str::FromStr for Method {
    type Err = Error;
    fn from_str(s: &str) -> Result<Method> {
        match s.to_ascii_lowercase().as_str() {
            "ibp" => Ok(Method::Ibp),
            "crown" | "backward" => Ok(Method::Crown),
            "crown-ibp" | "ibp+backward" | "ibp+crown" => Ok(Method::CrownIbp),
            other => {
                Err(Error::Invalid(format!("unknown method '{other}' (expected ibp, crown or crown-ibp)")))
            }
        }
    }
}

impl std::fmt::Display for Method {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Method::Ibp => "IBP",
            Method::Crown => "CROWN",
            Method::CrownIbp => "CROWN-IBP",
        })
    }
}

/// Options of a bound computation (the counterpart of auto_LiRPA's `bound_opts`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct BoundOptions {
    pub method: Method,
    pub relax: RelaxOptions,
    /// Compute intermediate bounds by a backward pass only for the elements whose
    /// consumers need them (e.g. unstable ReLU inputs); the others keep IBP bounds.
    pub sparse_intermediate: bool,
    /// Threads for dense products: 1 is sequential, 0 uses every rayon thread.
    pub threads: usize,
    /// Form of the coefficients on spatial (convolutional) nodes.
    pub conv_mode: ConvMode,
    /// Most specification rows per backward pass for intermediate bounds (auto_LiRPA's
    /// `crown_batch_size`); 0 means no limit. Bounds memory, and lets batches run on
    /// separate threads.
    pub crown_batch_size: usize,
}

/// How backward passes represent coefficients on `[1, C, H, W]` nodes (auto_LiRPA's
/// `conv_mode`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ConvMode {
    /// Windowed (compact) coefficients for intermediate bounds of spatial nodes whose
    /// operator supports them, switching to dense where a window covers its node.
    #[default]
    Auto,
    /// Always dense `spec × numel` matrices.
    Dense,
}

impl std::str::FromStr for ConvMode {
    type Err = Error;
    fn from_str(s: &str) -> Result<ConvMode> {
        match s {
            "auto" => Ok(ConvMode::Auto),
            "dense" => Ok(ConvMode::Dense),
            other => Err(Error::Invalid(format!("unknown conv mode '{other}' (expected auto or dense)"))),
        }
    }
}

impl Default for BoundOptions {
    fn default() -> Self {
        BoundOptions {
            method: Method::Crown,
            relax: RelaxOptions::default(),
            sparse_intermediate: true,
            threads: 1,
            conv_mode: ConvMode::Auto,
            crown_batch_size: 256,
        }
    }
}

impl BoundOptions {
    pub fn with_method(method: Method) -> Self {
        BoundOptions { method, ..Default::default() }
    }
    pub(crate) fn par(&self) -> Par {
        match self.threads {
            1 => Par::Seq,
            n => Par::rayon(n),
        }
    }
}

/// What to bound.
#[derive(Clone, Copy, Debug)]
pub struct BoundRequest<'a, T: Scalar> {
    /// The node to bound; the graph's single output when `None`.
    pub node: Option<NodeId>,
    /// A specification matrix `C` (rows over the node's flattened elements): bounds of
    /// `C·y` instead of `y`.
    pub c: Option<MatRef<'a, T>>,
    pub lower: bool,
    pub upper: bool,
    /// Also return the linear coefficients with respect to each perturbed input.
    pub return_a: bool,
}

impl<T: Scalar> Default for BoundRequest<'_, T> {
    fn default() -> Self {
        BoundRequest { node: None, c: None, lower: true, upper: true, return_a: false }
    }
}

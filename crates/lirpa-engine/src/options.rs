use faer::{MatRef, Par};
use lirpa_core::fpsound::{above, below};
use lirpa_core::{Error, FpSound, NodeId, RelaxOptions, Result, Scalar};
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
    /// CROWN with optimized relaxations (α-CROWN, auto_LiRPA's `CROWN-Optimized`):
    /// CROWN intermediate bounds, then projected Adam on the relaxation parameters of
    /// the bounded node's pass ([`OptimizeOptions`]).
    AlphaCrown,
    /// Forward mode (auto_LiRPA's `forward`): linear bounds in terms of the perturbed
    /// inputs propagated from the inputs to every node.
    Forward,
    /// Forward mode for intermediate bounds, backward (CROWN) for the bounded node
    /// (auto_LiRPA's `forward+backward`).
    ForwardBackward,
}

impl Method {
    /// Every method.
    pub const ALL: [Method; 6] = [
        Method::Ibp,
        Method::Crown,
        Method::CrownIbp,
        Method::Forward,
        Method::ForwardBackward,
        Method::AlphaCrown,
    ];

    /// Whether intermediate bounds come from backward (CROWN) passes.
    pub fn crown_intermediate(self) -> bool {
        matches!(self, Method::Crown | Method::AlphaCrown)
    }
}

impl std::str::FromStr for Method {
    type Err = Error;
    fn from_str(s: &str) -> Result<Method> {
        match s.to_ascii_lowercase().as_str() {
            "ibp" => Ok(Method::Ibp),
            "crown" | "backward" => Ok(Method::Crown),
            "crown-ibp" | "ibp+backward" | "ibp+crown" => Ok(Method::CrownIbp),
            "alpha-crown" | "crown-optimized" | "alpha-crown-optimized" => Ok(Method::AlphaCrown),
            "forward" => Ok(Method::Forward),
            "forward+backward" | "forward-backward" | "forward+crown" => Ok(Method::ForwardBackward),
            other => Err(Error::Invalid(format!(
                "unknown method '{other}' (expected ibp, crown, crown-ibp, alpha-crown, forward or forward+backward)"
            ))),
        }
    }
}

impl std::fmt::Display for Method {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Method::Ibp => "IBP",
            Method::Crown => "CROWN",
            Method::CrownIbp => "CROWN-IBP",
            Method::AlphaCrown => "alpha-CROWN",
            Method::Forward => "forward",
            Method::ForwardBackward => "forward+backward",
        })
    }
}

/// Options of a bound computation (the counterpart of auto_LiRPA's `bound_opts`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
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
    /// The optimizer of α-CROWN (auto_LiRPA's `optimize_bound_args`).
    pub optimize: OptimizeOptions,
    /// Memory budget of one computation in bytes (`None`: the process-wide budget of
    /// `lirpa_core::budget`, by default half of the machine's memory). The engine
    /// estimates what a computation allocates before starting it, shrinks the
    /// intermediate batches (`crown_batch_size`) to fit, and refuses with an error
    /// saying what to change when the bounded node's pass alone does not fit.
    pub max_memory: Option<u64>,
    /// Known element-wise bounds of intermediate nodes, intersected with every bound the
    /// engine computes for those nodes (branch and bound: the parent domain's bounds,
    /// ReLU split constraints). Not serialized.
    #[serde(skip)]
    pub node_bounds: Option<std::sync::Arc<NodeBounds>>,
    /// Linear constraints on elements of intermediate nodes that every input of the set
    /// under study satisfies (branch and bound: the split constraints of a sub-domain).
    /// Every method intersects the bounds of a constrained node with them (as
    /// [`NodeBounds`]); α-CROWN also adds each to the bounded node's backward pass as a
    /// Lagrangian term with an optimized multiplier β ≥ 0 (β-CROWN). Not serialized.
    #[serde(skip)]
    pub constraints: Option<std::sync::Arc<Vec<NodeConstraint>>>,
    /// Take the bounds of an intermediate node that [`BoundOptions::node_bounds`] gives
    /// finitely on every element as they are (with the constraints applied): no
    /// interval or backward pass recomputes them. Branch and bound keeps its parent
    /// domain's intermediate bounds this way, β-CROWN's default: only the bounded node's
    /// pass is computed (and optimized).
    pub fixed_node_bounds: bool,
    /// Floating-point-sound bounds ([`FpSound`]): every bound encloses the exact
    /// real-arithmetic output (and, with `float32-model`, the model's `f32`
    /// evaluation), whatever rounding happened; operators that cannot be bounded so
    /// are refused by name. Off by default.
    pub fp_sound: FpSound,
}

/// `x = v` where `v` is above `x` (a tighter lower bound).
fn raise<T: Scalar>(x: &mut T, v: T) {
    if v > *x {
        *x = v;
    }
}

/// `x = v` where `v` is below `x` (a tighter upper bound).
fn lower_to<T: Scalar>(x: &mut T, v: T) {
    if v < *x {
        *x = v;
    }
}

/// A constraint on one element of an intermediate node: `node[index] ≥ threshold`
/// (`ge`) or `node[index] ≤ threshold`. For a ReLU split the threshold is 0 (`ge`:
/// the active side); general branching splits at any point.
///
/// Written `σ·(z − t) ≥ 0` with `σ = +1` for `≥` and `−1` for `≤`: for any `β ≥ 0`,
/// `f(x) ≥ f(x) − β·σ·(z(x) − t)` on the inputs that satisfy it, so the backward bound of
/// the right-hand side is a lower bound of `f` there (and `f + β·σ·(z − t)` an upper one).
/// **Soundness is the caller's**: every input the result is used for must satisfy it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct NodeConstraint {
    pub node: NodeId,
    pub index: usize,
    pub ge: bool,
    pub threshold: f64,
}

impl NodeConstraint {
    /// `σ`: +1 for `≥`, −1 for `≤`.
    pub fn sign(&self) -> f64 {
        if self.ge { 1.0 } else { -1.0 }
    }

    /// Whether the value `z` of the node's element satisfies the constraint.
    pub fn holds(&self, z: f64) -> bool {
        if self.ge { z >= self.threshold } else { z <= self.threshold }
    }

    /// Intersect `(lo, hi)`, the bounds of node `id`, with the constraints on `id` (the
    /// threshold rounded outward in `f32`).
    pub fn apply_all<T: Scalar>(constraints: &[NodeConstraint], id: NodeId, lo: &mut [T], hi: &mut [T]) {
        let n = lo.len().min(hi.len());
        for c in constraints.iter().filter(|c| c.node == id && c.index < n) {
            if c.ge {
                raise(&mut lo[c.index], below(c.threshold));
            } else {
                lower_to(&mut hi[c.index], above(c.threshold));
            }
        }
    }
}

/// Element-wise bounds of intermediate nodes that the caller knows to hold on the whole
/// input set (or on the part of it under study: a branch-and-bound sub-domain).
///
/// Whenever IBP, CROWN or α-CROWN computes the bounds of one of these nodes as an
/// intermediate node (including the interval reference that decides which elements a
/// backward pass refines), the result is intersected with them, so every later
/// relaxation sees them. This is how ReLU-split branch and bound applies its split
/// constraints (active: `lower = max(lower, 0)`, inactive: `upper = min(upper, 0)`)
/// and how a sub-domain reuses its parent's intermediate bounds. The bounds the
/// bounded node itself receives are not changed.
///
/// **Soundness is the caller's**: the bounds must hold for every input of the set the
/// result is used for. When they make a node's interval empty (`lower > upper`), no
/// input satisfies them and every result is vacuous; [`NodeBounds::infeasible`]
/// detects it on the returned intermediate bounds.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct NodeBounds {
    /// `(node, lower, upper)`, each vector over the node's flattened elements (use
    /// `±inf` for no bound). In `f32` they are rounded outward.
    pub nodes: Vec<(NodeId, Vec<f64>, Vec<f64>)>,
}

impl NodeBounds {
    /// Intersect `(lo, hi)`, the bounds of node `id`, with the known bounds of `id`.
    pub fn apply<T: Scalar>(&self, id: NodeId, lo: &mut [T], hi: &mut [T]) {
        for (node, l, u) in &self.nodes {
            if *node != id {
                continue;
            }
            for (x, &b) in lo.iter_mut().zip(l) {
                raise(x, below(b));
            }
            for (x, &b) in hi.iter_mut().zip(u) {
                lower_to(x, above(b));
            }
        }
    }

    /// The known bounds of node `id`, if any.
    pub fn get(&self, id: NodeId) -> Option<(&[f64], &[f64])> {
        self.nodes.iter().find(|(n, _, _)| *n == id).map(|(_, l, u)| (l.as_slice(), u.as_slice()))
    }

    /// Whether some node's interval in `bounds` (as returned with the intermediate
    /// bounds) is empty: the constrained set has no input.
    pub fn infeasible<T: Scalar>(bounds: &[Option<(Vec<T>, Vec<T>)>]) -> bool {
        bounds.iter().flatten().any(|(l, u)| l.iter().zip(u).any(|(a, b)| a > b))
    }
}

/// Options of the relaxation-parameter optimization (α-CROWN), with auto_LiRPA's
/// defaults (`optimize_bound_args`): Adam, learning rate 0.5 decayed by 0.98 per
/// iteration, 20 iterations, best bound kept per element, patience 10.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OptimizeOptions {
    /// Bound evaluations (the first one uses the CROWN relaxation).
    pub iterations: usize,
    /// Adam learning rate of the relaxation parameters.
    pub lr_alpha: f64,
    /// Learning-rate factor per iteration (exponential decay).
    pub lr_decay: f64,
    /// Adam learning rate of the multipliers β of [`BoundOptions::constraints`]
    /// (β-CROWN's `lr_beta`).
    pub lr_beta: f64,
    /// Adam's moment decay rates and denominator guard (torch defaults).
    pub adam_beta1: f64,
    pub adam_beta2: f64,
    pub adam_eps: f64,
    /// Return the best bound of each element over all iterations (always at least as
    /// tight as CROWN, which is iteration 0); otherwise the last iteration's.
    /// auto_LiRPA starts keeping the best after half the iterations; we keep it from the
    /// start, so the result is never looser than CROWN.
    pub keep_best: bool,
    /// Stop after this many iterations without any element improving (0: never).
    pub early_stop_patience: usize,
    /// Stop iterating once this instant has passed (the best bound so far is returned,
    /// sound like every iterate); the first iteration always runs. For callers with a
    /// time limit (`lirpa verify`); not serialized.
    #[serde(skip)]
    pub deadline: Option<std::time::Instant>,
}

impl Default for OptimizeOptions {
    fn default() -> Self {
        OptimizeOptions {
            iterations: 20,
            lr_alpha: 0.5,
            lr_beta: 0.05,
            lr_decay: 0.98,
            adam_beta1: 0.9,
            adam_beta2: 0.999,
            adam_eps: 1e-8,
            keep_best: true,
            early_stop_patience: 10,
            deadline: None,
        }
    }
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
            optimize: OptimizeOptions::default(),
            max_memory: None,
            node_bounds: None,
            constraints: None,
            fixed_node_bounds: false,
            fp_sound: FpSound::Off,
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

impl<T: Scalar> BoundRequest<'_, T> {
    /// The node the request bounds in `graph`: `node`, or the graph's single output.
    pub fn target(&self, graph: &lirpa_core::Graph<T>) -> Result<NodeId> {
        match self.node {
            Some(t) if t < graph.len() => Ok(t),
            Some(t) => Err(Error::Invalid(format!("node {t} does not exist"))),
            None => graph.output(),
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

#[cfg(test)]
mod tests {
    use super::NodeBounds;

    #[test]
    fn node_bounds_intersect_and_round_outward() {
        // 0.1 is not an f32: the lower bound must round down, the upper one up.
        let nb =
            NodeBounds { nodes: vec![(3, vec![0.1, f64::NEG_INFINITY, 0.0], vec![0.1, 2.0, f64::INFINITY])] };
        let (mut lo, mut hi) = (vec![-1.0f32, -1.0, -1.0], vec![1.0f32, 1.0, 1.0]);
        nb.apply(3, &mut lo, &mut hi);
        assert!((lo[0] as f64) <= 0.1 && (hi[0] as f64) >= 0.1 && lo[0] < hi[0]);
        assert_eq!((lo[1], hi[1]), (-1.0, 1.0), "looser known bounds change nothing");
        assert_eq!((lo[2], hi[2]), (0.0, 1.0));
        // Another node is untouched; f64 values are taken exactly.
        let (mut l2, mut h2) = (vec![-1.0f64; 3], vec![1.0f64; 3]);
        nb.apply(4, &mut l2, &mut h2);
        assert_eq!((l2[0], h2[0]), (-1.0, 1.0));
        nb.apply(3, &mut l2, &mut h2);
        assert_eq!((l2[0], h2[0]), (0.1, 0.1));
        assert!(!NodeBounds::infeasible(&[Some((l2.clone(), h2.clone()))]));
        let nb = NodeBounds { nodes: vec![(3, vec![0.5; 3], vec![f64::INFINITY; 3])] };
        nb.apply(3, &mut l2, &mut h2);
        assert!(NodeBounds::infeasible(&[None, Some((l2, h2))]), "lower 0.5 above upper 0.1");
    }
}

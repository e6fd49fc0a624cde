//! IBP, CROWN and CROWN-IBP on a general DAG.

use crate::options::{BoundOptions, BoundRequest, ConvMode, Method, NodeConstraint};
use faer::{Mat, MatRef, Par};
use lirpa_core::op::{BackwardCtx, Interval, SideParams};
use lirpa_core::perturbation::concretize_box;
use lirpa_core::{
    Error, Graph, LinearA, LinearBias, NodeId, NodeKind, Operator, Perturbation, Result, Scalar, Window,
    spatial_dims,
};
use smallvec::SmallVec;
use std::borrow::Cow;

/// The value of one graph input: exact, or a perturbation set.
#[derive(Clone, Debug)]
pub enum InputValue<T: Scalar> {
    Exact(Vec<T>),
    Perturbed(Perturbation<T>),
}

/// Linear coefficients of the bound with respect to one perturbed graph input.
#[derive(Clone, Debug)]
pub struct LinearBoundA<T: Scalar> {
    pub input: NodeId,
    pub a: LinearA<T>,
}

/// Bounds of a node (or of `C·node`), and on request the linear functions of the
/// perturbed inputs they came from: `lower = min_x Σ A_l·x + bias.lower`.
#[derive(Clone, Debug)]
pub struct BoundResult<T: Scalar> {
    pub lower: Vec<T>,
    pub upper: Vec<T>,
    /// Coefficients per perturbed input (empty unless `return_a` with a linear method).
    pub a: Vec<LinearBoundA<T>>,
    /// The bias of those linear functions.
    pub bias: Option<LinearBias<T>>,
    /// With `return_a` (CROWN-family methods): the coefficients each non-affine node of
    /// the bounded node's pass received (dense, by node id), i.e. how the bound depends
    /// on that node's output; branching heuristics (BaBSR) read them.
    pub node_a: Vec<(NodeId, LinearA<T>)>,
}

/// The recorded coefficients of a sweep, dense, by node.
pub(super) fn node_forms<T: Scalar>(recorded: Vec<Option<LinearA<T>>>) -> Vec<(NodeId, LinearA<T>)> {
    recorded.into_iter().enumerate().filter_map(|(id, a)| a.map(|a| (id, a.into_dense()))).collect()
}

type Bounds<T> = (Vec<T>, Vec<T>);

/// The element-wise bounds of the intermediate nodes a computation used, per node
/// (`None`: not computed), as [`compute_bounds_keep`](crate::compute_bounds_keep) returns them.
pub type IntermediateBounds<T> = Vec<Option<(Vec<T>, Vec<T>)>>;

pub(crate) mod alpha;
mod forward;
mod fpsound;

/// What one reverse sweep ([`State::sweep`]) does besides each operator's default rule.
pub(super) struct SweepHooks<'a, T> {
    /// Relaxation parameters per node id (shorter than the graph: none beyond): an
    /// optimizable relaxation with parameters uses them instead of its default rule.
    pub params: Vec<Option<SideParams<'a, T>>>,
    /// Keep the coefficients every non-affine node received.
    pub record: bool,
    /// Lagrangian terms of node constraints, added where the sweep passes their nodes.
    pub terms: Option<ConstraintTerms<'a, T>>,
}

impl<T> SweepHooks<'_, T> {
    pub(super) fn none() -> Self {
        SweepHooks { params: Vec::new(), record: false, terms: None }
    }
}

/// The result of a sweep: coefficients per perturbed root, the bias, and (when
/// recording) the coefficients each non-affine node received, by node id.
pub(super) struct Swept<T: Scalar> {
    pub roots: Vec<(NodeId, LinearA<T>)>,
    pub bias: LinearBias<T>,
    pub recorded: Vec<Option<LinearA<T>>>,
}

/// β-CROWN's terms in one sweep: constraint `k` ([`NodeConstraint`], `σ·(z − t) ≥ 0`)
/// with multiplier `beta[r·K + k] ≥ 0` in specification row `r`. A lower side gets
/// `−β·σ·(z − t)`, an upper side `+β·σ·(z − t)`: both stay sound for any `β ≥ 0` on the
/// inputs satisfying the constraints.
#[derive(Clone, Copy)]
pub(super) struct ConstraintTerms<'a, T> {
    pub constraints: &'a [NodeConstraint],
    pub beta: &'a [T],
}

impl<T: Scalar> ConstraintTerms<'_, T> {
    fn touches(&self, id: NodeId) -> bool {
        self.constraints.iter().any(|c| c.node == id)
    }

    /// Add the terms of the constraints on node `id` to its (dense) coefficients `a`
    /// and to `bias`.
    /// In the sound mode (`sound`) the bias takes the rounding of both updates outward.
    fn add_to(&self, id: NodeId, mut a: LinearA<T>, bias: &mut LinearBias<T>, sound: bool) -> LinearA<T> {
        let k_all = self.constraints.len();
        for (k, c) in self.constraints.iter().enumerate().filter(|(_, c)| c.node == id) {
            // Sound: the threshold rounded to the side that keeps `σ·(z − t) ≥ 0`.
            let t = match (sound, c.ge) {
                (false, _) => T::from_f64(c.threshold),
                (true, true) => lirpa_core::fpsound::below(c.threshold),
                (true, false) => lirpa_core::fpsound::above(c.threshold),
            };
            let sigma = T::from_f64(c.sign());
            for (side, m) in [(false, a.lower.as_mut()), (true, a.upper.as_mut())] {
                let Some(m) = m else { continue };
                let dir = if side { T::one() } else { -T::one() };
                let b = if side { &mut bias.upper } else { &mut bias.lower };
                for r in 0..m.nrows() {
                    let beta = self.beta[r * k_all + k];
                    if beta != T::zero() && c.index < m.ncols() {
                        m[(r, c.index)] += dir * sigma * beta;
                        b[r] -= dir * sigma * beta * t;
                        if sound {
                            b[r] = fpsound::beta_term_outward(b[r], beta * t, m[(r, c.index)], t, side);
                        }
                    }
                }
            }
        }
        a
    }
}

/// Compute bounds of a node of `graph`, whose inputs take `inputs` (one per graph
/// input, in order), with the method and options of `opts`.
pub fn compute_bounds<T: Scalar>(
    graph: &Graph<T>,
    inputs: &[InputValue<T>],
    opts: &BoundOptions,
    req: &BoundRequest<'_, T>,
) -> Result<BoundResult<T>> {
    match opts.method {
        Method::AlphaCrown => {
            return alpha::compute_bounds_optimized(graph, inputs, opts, req, None).map(|(r, _)| r);
        }
        Method::Forward | Method::ForwardBackward => {
            return forward::compute_bounds_forward(graph, inputs, opts, req);
        }
        _ => {}
    }
    let st = State::new(graph, inputs, opts)?;
    st.run(req)
}

/// [`compute_bounds`], also returning the intermediate bounds it computed (after
/// [`BoundOptions::node_bounds`] were applied): a branch-and-bound loop passes them
/// to its sub-domains through `node_bounds`, and checks them with
/// [`NodeBounds::infeasible`](crate::NodeBounds::infeasible). With α-CROWN they are
/// those of the last evaluation. Forward modes return none.
pub fn compute_bounds_keep<T: Scalar>(
    graph: &Graph<T>,
    inputs: &[InputValue<T>],
    opts: &BoundOptions,
    req: &BoundRequest<'_, T>,
) -> Result<(BoundResult<T>, IntermediateBounds<T>)> {
    match opts.method {
        Method::AlphaCrown => {
            let (r, _, b) = alpha::compute_bounds_optimized_keep(graph, inputs, opts, req, None)?;
            Ok((r, b))
        }
        Method::Forward | Method::ForwardBackward => {
            Ok((forward::compute_bounds_forward(graph, inputs, opts, req)?, vec![]))
        }
        _ => {
            let mut st = State::new(graph, inputs, opts)?;
            let r = st.run_mut(req)?;
            Ok((r, st.bounds))
        }
    }
}

struct State<'g, T: Scalar> {
    graph: &'g Graph<T>,
    opts: &'g BoundOptions,
    par: Par,
    /// Perturbation of each perturbed input node.
    ptb: Vec<Option<&'g Perturbation<T>>>,
    perturbed: Vec<bool>,
    /// Exact values of unperturbed nodes (constants borrowed from the graph).
    values: Vec<Option<Cow<'g, [T]>>>,
    /// Final (sound) element-wise bounds of perturbed nodes, once computed.
    bounds: Vec<Option<Bounds<T>>>,
    /// The floating-point-sound mode's magnitudes and error models (`None`: off).
    fp: Option<fpsound::FpState<T>>,
    /// A batch of sub-domains stacked by rows ([`alpha::compute_bounds_optimized_batch`]):
    /// relaxations see each group's own bounds. `None`: one domain, `bounds`.
    groups: Option<RowGroups<T>>,
}

/// Sub-domains of one model bounded in one sweep: group `g` owns the specification
/// rows `ranges[g]` (its rows are stacked after the previous group's), and its
/// relaxations use its own intermediate bounds `bounds[g]`. Affine operators are
/// applied to all rows at once; that is where batching pays.
pub(super) struct RowGroups<T> {
    pub ranges: Vec<std::ops::Range<usize>>,
    pub bounds: Vec<Vec<Option<Bounds<T>>>>,
    /// `owns[g][k]`: constraint `k` of the batch's β is group `g`'s own.
    pub owns: Vec<Vec<bool>>,
}

impl<T: Scalar> RowGroups<T> {
    /// β's feasible set in a batch: a group's rows have no multiplier (zero) for
    /// another group's constraints, which need not hold on its domain.
    pub fn mask_beta(&self, b: &mut alpha::BetaParams<T>) {
        let k_all = b.constraints.len();
        for (range, owns) in self.ranges.iter().zip(&self.owns) {
            for r in range.clone() {
                for (k, own) in owns.iter().enumerate() {
                    if !own {
                        b.values[r * k_all + k] = T::zero();
                    }
                }
            }
        }
    }
}

impl<'g, T: Scalar> State<'g, T> {
    fn new(graph: &'g Graph<T>, inputs: &'g [InputValue<T>], opts: &'g BoundOptions) -> Result<Self> {
        let n = graph.len();
        if inputs.len() != graph.inputs().len() {
            return Err(Error::Invalid(format!(
                "the model has {} inputs but {} input values were given",
                graph.inputs().len(),
                inputs.len()
            )));
        }
        let mut ptb = vec![None; n];
        let mut perturbed = vec![false; n];
        let mut values: Vec<Option<Cow<'g, [T]>>> = vec![None; n];
        for (&id, v) in graph.inputs().iter().zip(inputs) {
            let node = graph.node(id);
            match v {
                InputValue::Exact(x) => {
                    if x.len() != node.numel() {
                        return Err(Error::Invalid(format!(
                            "input '{}' has {} elements, {} values were given",
                            node.name,
                            node.numel(),
                            x.len()
                        )));
                    }
                    if let Some(i) = x.iter().position(|v| !v.is_finite()) {
                        return Err(Error::NonFinite(format!("input '{}' element {i}", node.name)));
                    }
                    values[id] = Some(Cow::Borrowed(x.as_slice()));
                }
                InputValue::Perturbed(p) => {
                    p.validate()?;
                    if p.len() != node.numel() {
                        return Err(Error::Invalid(format!(
                            "input '{}' has {} elements, the perturbation has {}",
                            node.name,
                            node.numel(),
                            p.len()
                        )));
                    }
                    ptb[id] = Some(p);
                    perturbed[id] = true;
                }
            }
        }
        for (id, node) in graph.nodes().iter().enumerate() {
            match &node.kind {
                NodeKind::Input => {}
                NodeKind::Constant(c) => values[id] = Some(Cow::Borrowed(c.as_slice())),
                NodeKind::Op(op) => {
                    perturbed[id] = node.inputs.iter().any(|&i| perturbed[i]);
                    if !perturbed[id] {
                        let args: SmallVec<[&[T]; 4]> =
                            node.inputs.iter().map(|&i| values[i].as_deref().expect("unperturbed")).collect();
                        let mut out = vec![T::zero(); node.numel()];
                        op.forward(&args, &mut out).map_err(|e| e.at_node(&node.name, op.op_type()))?;
                        drop(args);
                        values[id] = Some(Cow::Owned(out));
                    }
                }
            }
        }
        for c in opts.constraints.iter().flat_map(|cs| cs.iter()) {
            if c.node >= n || c.index >= graph.node(c.node).numel() || !c.threshold.is_finite() {
                return Err(Error::Invalid(format!(
                    "constraint on element {} of node {} (threshold {}) does not fit the model",
                    c.index, c.node, c.threshold
                )));
            }
        }
        let mut st = State {
            graph,
            opts,
            par: opts.par(),
            ptb,
            perturbed,
            values,
            bounds: vec![None; n],
            fp: None,
            groups: None,
        };
        st.fp = st.fp_state()?;
        Ok(st)
    }

    fn run(mut self, req: &BoundRequest<'_, T>) -> Result<BoundResult<T>> {
        self.run_mut(req)
    }

    /// Apply the caller's known bounds of node `id` ([`BoundOptions::node_bounds`]) and
    /// its constraints ([`BoundOptions::constraints`]).
    fn constrain(&self, id: NodeId, (mut lo, mut hi): Bounds<T>) -> Bounds<T> {
        if let Some(nb) = &self.opts.node_bounds {
            nb.apply(id, &mut lo, &mut hi);
        }
        if let Some(cs) = &self.opts.constraints {
            NodeConstraint::apply_all(cs, id, &mut lo, &mut hi);
        }
        (lo, hi)
    }

    /// The caller's bounds of node `id` when [`BoundOptions::fixed_node_bounds`] takes
    /// them as they are (finite on every element).
    pub(super) fn fixed(&self, id: NodeId) -> Option<Bounds<T>> {
        if !self.opts.fixed_node_bounds {
            return None;
        }
        let nb = self.opts.node_bounds.as_ref()?;
        nb.get(id)?;
        let n = self.graph.node(id).numel();
        let b = self.constrain(id, (vec![T::neg_infinity(); n], vec![T::infinity(); n]));
        (b.0.iter().chain(&b.1).all(|v| v.is_finite())).then_some(b)
    }

    fn run_mut(&mut self, req: &BoundRequest<'_, T>) -> Result<BoundResult<T>> {
        let target = self.check_request(req)?;
        let node = self.graph.node(target);
        if !self.perturbed[target] {
            let v = self.values[target].as_ref().expect("unperturbed value");
            let y = match req.c {
                Some(c) => lirpa_core::linear::mat_vec(c, v),
                None => v.to_vec(),
            };
            let (lower, upper) = match (req.c, self.fp.is_some()) {
                (Some(c), true) => fpsound::widen_product(c, v, y),
                _ => (y.clone(), y),
            };
            return Ok(BoundResult { lower, upper, a: vec![], bias: None, node_a: vec![] });
        }

        let (lower, upper, a, bias, node_a) = match self.opts.method {
            Method::Ibp => {
                let (l, u) = self.ibp_spec(target, req.c)?;
                (l, u, vec![], None, vec![])
            }
            Method::Crown
            | Method::CrownIbp
            | Method::AlphaCrown
            | Method::Forward
            | Method::ForwardBackward => {
                self.ensure_bounds(target)?;
                let c = LinearA::both(self.spec_mat(target, req), req.lower, req.upper);
                let hooks = SweepHooks { record: req.return_a, ..SweepHooks::none() };
                let Swept { roots, bias, recorded } = self.sweep(target, c, self.par, &hooks)?;
                let (l, u) = self.concretize(&roots, &bias, req.lower, req.upper);
                if req.return_a {
                    let a = roots
                        .into_iter()
                        .map(|(input, a)| LinearBoundA { input, a: a.into_dense() })
                        .collect();
                    (l, u, a, Some(bias), node_forms(recorded))
                } else {
                    (l, u, vec![], None, vec![])
                }
            }
        };
        let check = |v: &[T], side: &str| -> Result<()> {
            match v.iter().position(|x| x.is_nan()) {
                Some(i) => Err(Error::NonFinite(format!("{side} bound {i} of node '{}'", node.name))),
                None => Ok(()),
            }
        };
        check(&lower, "lower")?;
        check(&upper, "upper")?;
        Ok(BoundResult { lower, upper, a, bias, node_a })
    }

    /// Validate a request and return the bounded node.
    pub(super) fn check_request(&self, req: &BoundRequest<'_, T>) -> Result<NodeId> {
        let target = req.target(self.graph)?;
        let node = self.graph.node(target);
        if let Some(c) = req.c {
            if c.ncols() != node.numel() {
                return Err(Error::Invalid(format!(
                    "the specification matrix has {} columns but node '{}' has {} elements",
                    c.ncols(),
                    node.name,
                    node.numel()
                )));
            }
            for j in 0..c.ncols() {
                for i in 0..c.nrows() {
                    if !c[(i, j)].is_finite() {
                        return Err(Error::NonFinite(format!("specification matrix row {i}, column {j}")));
                    }
                }
            }
        }
        Ok(target)
    }

    pub(super) fn spec_mat(&self, target: NodeId, req: &BoundRequest<'_, T>) -> Mat<T> {
        let n = self.graph.node(target).numel();
        req.c.map_or_else(|| Mat::identity(n, n), |c| c.to_owned())
    }

    pub(super) fn check_finite(&self, id: NodeId, v: &[T], what: &str) -> Result<()> {
        match v.iter().position(|x| x.is_nan()) {
            Some(i) => Err(Error::NonFinite(format!(
                "optimized {what} bound {i} of node '{}'",
                self.graph.node(id).name
            ))),
            None => Ok(()),
        }
    }

    /// Perturbed nodes `target` depends on (itself included).
    pub(super) fn cone(&self, target: NodeId) -> Vec<bool> {
        let mut in_cone = vec![false; target + 1];
        in_cone[target] = true;
        for id in (0..=target).rev() {
            if in_cone[id] && self.perturbed[id] {
                for &i in &self.graph.node(id).inputs {
                    in_cone[i] = true;
                }
            } else {
                in_cone[id] = false;
            }
        }
        in_cone
    }

    // ---------------------------------------------------------------- IBP

    /// Interval of a node's input edge: final bounds, the exact value, or `memo`.
    fn interval_of<'a>(&'a self, id: NodeId, memo: &'a [Option<Bounds<T>>]) -> Option<Interval<'a, T>> {
        if let Some(v) = &self.values[id] {
            return Some(Interval { lower: v, upper: v });
        }
        self.bounds[id].as_ref().or(memo[id].as_ref()).map(|(l, u)| Interval { lower: l, upper: u })
    }

    /// IBP bounds of `target`, starting from the final bounds already known.
    fn ibp(&self, target: NodeId) -> Result<Bounds<T>> {
        if let Some(b) = &self.bounds[target] {
            return Ok(b.clone());
        }
        // Nodes of the cone that still need an interval, in topological order.
        let mut todo = vec![false; target + 1];
        todo[target] = true;
        for id in (0..=target).rev() {
            if todo[id] {
                for &i in &self.graph.node(id).inputs {
                    todo[i] = self.perturbed[i] && self.bounds[i].is_none();
                }
            }
        }
        let mut memo: Vec<Option<Bounds<T>>> = vec![None; target + 1];
        for id in 0..=target {
            if todo[id] && self.perturbed[id] && self.bounds[id].is_none() {
                memo[id] = Some(self.ibp_one(id, &memo)?);
            }
        }
        Ok(memo[target].take().expect("computed"))
    }

    /// IBP of one node from the intervals of its inputs.
    fn ibp_one(&self, id: NodeId, memo: &[Option<Bounds<T>>]) -> Result<Bounds<T>> {
        let node = self.graph.node(id);
        let op = match &node.kind {
            NodeKind::Input => return Ok(self.input_interval(id)),
            NodeKind::Op(op) => op.as_ref(),
            NodeKind::Constant(_) => unreachable!("constants are not perturbed"),
        };
        // An affine map of a perturbed input with a non-box set: use the dual norm
        // (exact), as auto_LiRPA does on the first layer.
        if let Some(root) = self.single_perturbed_root(id)
            && !self.ptb[root].expect("root").is_box()
        {
            // Windowed rows where the operator supports them (first conv layer).
            let rows: Vec<usize> = (0..node.numel()).collect();
            return self.bound_rows(id, &rows, self.par);
        }
        let ins: SmallVec<[Interval<'_, T>; 4]> = node
            .inputs
            .iter()
            .map(|&i| self.interval_of(i, memo).expect("inputs are bounded before their consumers"))
            .collect();
        let mut lo = vec![T::zero(); node.numel()];
        let mut hi = vec![T::zero(); node.numel()];
        op.interval(&ins, &mut lo, &mut hi).map_err(|e| e.at_node(&node.name, op.op_type()))?;
        if let Some(fp) = &self.fp {
            fp.widen(self, id, &ins, &mut lo, &mut hi)?;
        }
        Ok((lo, hi))
    }

    /// If `id` is an affine operator whose only perturbed input edge is a graph input,
    /// that input.
    fn single_perturbed_root(&self, id: NodeId) -> Option<NodeId> {
        let node = self.graph.node(id);
        let op = node.op()?;
        if !op.is_affine() {
            return None;
        }
        let mut pert = node.inputs.iter().filter(|&&i| self.perturbed[i]);
        let first = *pert.next()?;
        if pert.next().is_some() || !matches!(self.graph.node(first).kind, NodeKind::Input) {
            return None;
        }
        Some(first)
    }

    /// IBP bounds of `C·target` (or of `target`). A specification is first carried
    /// back exactly through the affine operators before `target` (as auto_LiRPA merges
    /// `C` into the last linear layer), then concretized on the IBP intervals of the
    /// nodes where that stops (or on the perturbation set of an input).
    fn ibp_spec(&self, target: NodeId, c: Option<MatRef<'_, T>>) -> Result<Bounds<T>> {
        let Some(c) = c else { return self.ibp(target) };
        if self.fp.is_some() {
            let (l, u) = self.ibp(target)?;
            return Ok(self.concretize_box_sound(c, &l, &u));
        }
        let mut pending: Vec<Option<LinearA<T>>> = (0..=target).map(|_| None).collect();
        pending[target] = Some(LinearA::both(c.to_owned(), true, true));
        let mut bias = LinearBias::zeros(c.nrows());
        let mut roots = Vec::new();
        let (mut lo, mut hi) = (vec![T::zero(); c.nrows()], vec![T::zero(); c.nrows()]);
        for id in (0..=target).rev() {
            let Some(a) = pending[id].take() else { continue };
            let node = self.graph.node(id);
            if let Some(v) = &self.values[id] {
                bias.add_assign(&a.times_vector(v));
                continue;
            }
            match node.op() {
                Some(op) if op.is_affine() => {
                    let res = self
                        .backward_op(node.inputs.as_slice(), op, a, self.par)
                        .map_err(|e| e.at_node(&node.name, op.op_type()))?;
                    bias.add_assign(&res.bias);
                    for (k, ak) in res.inputs.into_iter().enumerate() {
                        if let (Some(ak), Some(&i)) = (ak, node.inputs.get(k)) {
                            let ak = self.settle(i, ak)?;
                            match &mut pending[i] {
                                Some(acc) => acc.add_assign(ak)?,
                                slot @ None => *slot = Some(ak),
                            }
                        }
                    }
                }
                None => roots.push((id, a.into_dense())),
                Some(_) => {
                    let a = a.into_dense();
                    let (l, u) = self.ibp(id)?;
                    if let Some(al) = &a.lower {
                        add(&mut lo, &concretize_box(al.as_ref(), &l, &u, false));
                    }
                    if let Some(au) = &a.upper {
                        add(&mut hi, &concretize_box(au.as_ref(), &l, &u, true));
                    }
                }
            }
        }
        let (rl, ru) = self.concretize(&roots, &bias, true, true);
        add(&mut lo, &rl);
        add(&mut hi, &ru);
        Ok((lo, hi))
    }

    // ---------------------------------------------------------------- CROWN

    /// Compute final bounds of every node in the cone of `target` whose consumers'
    /// relaxations need them, in topological order.
    fn ensure_bounds(&mut self, target: NodeId) -> Result<()> {
        let mut in_cone = vec![false; target + 1];
        in_cone[target] = true;
        let mut needed = vec![false; target + 1];
        for id in (0..=target).rev() {
            if !in_cone[id] || !self.perturbed[id] {
                continue;
            }
            let node = self.graph.node(id);
            for &i in &node.inputs {
                in_cone[i] = true;
            }
            if let Some(op) = node.op() {
                for &k in op.needs_input_bounds() {
                    if let Some(&i) = node.inputs.get(k) {
                        needed[i] = self.perturbed[i];
                    }
                }
            }
        }
        for (id, &need) in needed.iter().enumerate() {
            if need && self.bounds[id].is_none() {
                self.fp_catch_up(id)?;
                let b = self.constrain(id, self.intermediate_bounds(id)?);
                self.bounds[id] = Some(b);
                self.fp_refresh(Some(id))?;
            }
        }
        self.fp_catch_up(target)
    }

    /// The sound mode's error models of the nodes up to `upto`, caught up with the
    /// latest bounds before a sweep visits them.
    fn fp_catch_up(&mut self, upto: NodeId) -> Result<()> {
        self.with_fp(|fp, st| fp.catch_up(st, upto))
    }

    /// The sound mode's error models after node `from` got its bounds (`None`: all
    /// recomputed from the current bounds; see [`fpsound::FpState::refresh`]).
    pub(super) fn fp_refresh(&mut self, from: Option<NodeId>) -> Result<()> {
        self.with_fp(|fp, st| fp.refresh(st, from))
    }

    /// `f` on the sound mode's state (if on) and this state.
    fn with_fp(&mut self, f: impl FnOnce(&mut fpsound::FpState<T>, &Self) -> Result<()>) -> Result<()> {
        if let Some(mut fp) = self.fp.take() {
            let r = f(&mut fp, self);
            self.fp = Some(fp);
            r?;
        }
        Ok(())
    }

    fn intermediate_bounds(&self, id: NodeId) -> Result<Bounds<T>> {
        let node = self.graph.node(id);
        let Some(op) = node.op() else {
            return Ok(self.input_interval(id));
        };
        if let Some(b) = self.fixed(id) {
            return Ok(b);
        }
        if !self.opts.method.crown_intermediate() {
            return self.ibp(id);
        }
        let inputs_bounded = node.inputs.iter().all(|&i| !self.perturbed[i] || self.bounds[i].is_some());
        if op.interval_is_tight() && inputs_bounded {
            return self.ibp_one(id, &vec![None; id + 1]);
        }
        let reference = self.constrain(id, self.ibp(id)?);
        if let Some(root) = self.single_perturbed_root(id)
            && self.ptb[root].expect("root").is_box()
        {
            return Ok(reference); // IBP is exact on an affine map of a box.
        }
        let rows = self.rows_to_refine(id, &reference);
        if rows.is_empty() {
            return Ok(reference);
        }
        // Rows are independent: bound them in batches (bounded memory per pass, and
        // batches run on separate threads when parallelism is allowed).
        // Small passes stay on one thread: spawning costs more than it saves.
        let threads = if rows.len() >= 128 { self.par.degree().max(1) } else { 1 };
        let max_batch = match self.opts.crown_batch_size {
            0 => usize::MAX,
            b => b,
        };
        let batch = rows.len().div_ceil(threads).clamp(1, max_batch);
        let chunks: Vec<&[usize]> = rows.chunks(batch).collect();
        let results: Vec<Result<Bounds<T>>> = if threads > 1 && chunks.len() > 1 {
            use rayon::prelude::*;
            chunks.par_iter().map(|c| self.bound_rows(id, c, Par::Seq)).collect()
        } else {
            let par = if chunks.len() > 1 { Par::Seq } else { self.par };
            chunks.iter().map(|c| self.bound_rows(id, c, par)).collect()
        };
        let (mut lo, mut hi) = reference;
        for (chunk, res) in chunks.iter().zip(results) {
            let (cl, cu) = res?;
            for (r, &j) in chunk.iter().enumerate() {
                lo[j] = lo[j].max(cl[r]);
                hi[j] = hi[j].min(cu[r]);
            }
        }
        Ok((lo, hi))
    }

    /// Backward bounds of elements `rows` of node `id` (which must be an operator).
    fn bound_rows(&self, id: NodeId, rows: &[usize], par: Par) -> Result<Bounds<T>> {
        let (roots, bias) = self.backward_from(id, self.selection_coeffs(id, rows), par)?;
        Ok(self.concretize(&roots, &bias, true, true))
    }

    /// Both sides' coefficients selecting elements `rows` of node `id`: windowed (one
    /// 1×1 window per row) where the node's operator takes windows, dense otherwise.
    pub(super) fn selection_coeffs(&self, id: NodeId, rows: &[usize]) -> LinearA<T> {
        let node = self.graph.node(id);
        let n = node.numel();
        let windowed = node.op().is_some_and(|op| op.supports_window());
        let spatial = spatial_dims(&node.shape).filter(|_| self.opts.conv_mode == ConvMode::Auto);
        match spatial {
            Some((c, h, w)) if windowed && h * w > 1 => {
                let (win, sel) = Window::select::<T>(c, h, w, rows);
                LinearA { window: Some(win), ..LinearA::both(sel, true, true) }
            }
            _ => LinearA::both(selection(rows, n), true, true),
        }
    }

    /// Elements of `id` whose bounds some consumer's relaxation depends on.
    fn rows_to_refine(&self, id: NodeId, (lo, hi): &Bounds<T>) -> Vec<usize> {
        let n = lo.len();
        if !self.opts.sparse_intermediate {
            return (0..n).collect();
        }
        let mut mask = vec![false; n];
        for consumer in self.graph.nodes().iter().skip(id + 1) {
            let Some(op) = consumer.op() else { continue };
            for &k in op.needs_input_bounds() {
                if consumer.inputs.get(k) != Some(&id) {
                    continue;
                }
                match op.refine_mask(k, lo, hi) {
                    None => return (0..n).collect(),
                    Some(m) => mask.iter_mut().zip(m).for_each(|(a, b)| *a |= b),
                }
            }
        }
        mask.iter().enumerate().filter(|(_, m)| **m).map(|(i, _)| i).collect()
    }

    /// Propagate coefficients `a` on `target` back to the perturbed graph inputs with
    /// every operator's default rule. Returns the coefficients per perturbed input and
    /// the accumulated bias.
    #[allow(clippy::type_complexity)]
    fn backward_from(
        &self,
        target: NodeId,
        a: LinearA<T>,
        par: Par,
    ) -> Result<(Vec<(NodeId, LinearA<T>)>, LinearBias<T>)> {
        let s = self.sweep(target, a, par, &SweepHooks::none())?;
        Ok((s.roots, s.bias))
    }

    /// The reverse sweep, the one place coefficients travel from a node back to the
    /// perturbed inputs (summed at fan-out, in reverse topological order). `hooks` say
    /// what it does besides each operator's default rule: optimized relaxation
    /// parameters (α-CROWN), recording the coefficients each non-affine node received
    /// (the adjoint of the gradient sweep), Lagrangian terms of node constraints
    /// (β-CROWN).
    pub(super) fn sweep(
        &self,
        target: NodeId,
        a: LinearA<T>,
        par: Par,
        hooks: &SweepHooks<'_, T>,
    ) -> Result<Swept<T>> {
        let spec = a.spec();
        let sides = (a.lower.is_some(), a.upper.is_some());
        let mut bias = LinearBias::zeros(spec);
        let mut pending: Vec<Option<LinearA<T>>> = (0..=target).map(|_| None).collect();
        let mut recorded: Vec<Option<LinearA<T>>> =
            (0..if hooks.record { target + 1 } else { 0 }).map(|_| None).collect();
        pending[target] = Some(a);
        let mut roots = Vec::new();
        for id in (0..=target).rev() {
            let a = match (pending[id].take(), hooks.terms) {
                (a, Some(t)) if self.values[id].is_none() && t.touches(id) => {
                    let n = self.graph.node(id).numel();
                    let zeros = || Mat::zeros(spec, n);
                    let a = a
                        .map(LinearA::into_dense)
                        .unwrap_or_else(|| LinearA::dense(sides.0.then(zeros), sides.1.then(zeros)));
                    Some(t.add_to(id, a, &mut bias, self.fp.is_some()))
                }
                (a, _) => a,
            };
            let Some(a) = a else { continue };
            let node = self.graph.node(id);
            if let Some(v) = &self.values[id] {
                self.add_times_vector(&mut bias, &a, v);
                continue;
            }
            let op = match &node.kind {
                NodeKind::Input => {
                    // Kept windowed: concretization reads windows directly.
                    roots.push((id, a));
                    continue;
                }
                NodeKind::Op(op) => op.as_ref(),
                NodeKind::Constant(_) => unreachable!("constants have values"),
            };
            let optimized = hooks.params.get(id).copied().flatten().zip(op.optimizable());
            // Windows stay windows through operators that take them; the optimized rule
            // of a relaxation that does not gets dense coefficients.
            let a = match optimized {
                Some((_, opt)) if a.window.is_some() && !opt.supports_window() => a.into_dense(),
                _ => a,
            };
            if hooks.record && !op.is_affine() {
                recorded[id] = Some(a.clone());
            }
            if let Some(fp) = &self.fp {
                fp.step(id, &a, &mut bias);
            }
            let res = match optimized {
                _ if op.is_affine() => self
                    .backward_op(node.inputs.as_slice(), op, a, par)
                    .map_err(|e| e.at_node(&node.name, op.op_type()))?,
                Some((params, opt)) => {
                    let total = a.spec();
                    self.grouped_backward(id, a, |ctx, a, rows| {
                        opt.backward_with(ctx, a, params_block(params, rows, total))
                    })?
                }
                None => {
                    self.grouped_backward(id, a, |ctx, a, _| self.apply_rule(ctx.input_bounds, op, a, par))?
                }
            };
            self.add_bias(&mut bias, &res.bias);
            for (k, ak) in res.inputs.into_iter().enumerate() {
                let Some(ak) = ak else { continue };
                let i = *node.inputs.get(k).ok_or_else(|| {
                    Error::Invalid(format!(
                        "backward rule of node '{}' returned coefficients for input {k}, which does not exist",
                        node.name
                    ))
                })?;
                let ak = self.settle(i, ak)?;
                match &mut pending[i] {
                    Some(acc) => {
                        acc.add_assign(ak)?;
                        if let Some(fp) = &self.fp {
                            fp.fan_out(i, acc, &mut bias);
                        }
                    }
                    slot @ None => *slot = Some(ak),
                }
            }
        }
        roots.sort_by_key(|(id, _)| *id);
        Ok(Swept { roots, bias, recorded })
    }

    /// Call `f` with the backward context of node `id` (its inputs' bounds); errors
    /// name the node.
    pub(super) fn with_ctx<R>(
        &self,
        id: NodeId,
        f: impl FnOnce(&BackwardCtx<'_, T>) -> Result<R>,
    ) -> Result<R> {
        let node = self.graph.node(id);
        let ctx_bounds = self.ctx_bounds(node.inputs.as_slice());
        let ctx = BackwardCtx { input_bounds: &ctx_bounds, options: &self.opts.relax, par: self.par };
        let op_type = node.op().map_or("", |op| op.op_type());
        f(&ctx).map_err(|e| e.at_node(&node.name, op_type))
    }

    /// Call `f` once per row group of a batch ([`RowGroups`]) with the group's rows of
    /// `0..rows` and the backward context of node `id` with the group's bounds; without
    /// groups, once with every row and the state's bounds. Errors name the node.
    pub(super) fn for_groups(
        &self,
        id: NodeId,
        rows: usize,
        mut f: impl FnMut(std::ops::Range<usize>, &BackwardCtx<'_, T>) -> Result<()>,
    ) -> Result<()> {
        let Some(groups) = &self.groups else { return self.with_ctx(id, |ctx| f(0..rows, ctx)) };
        let node = self.graph.node(id);
        let op_type = node.op().map_or("", |op| op.op_type());
        for (range, bounds) in groups.ranges.iter().zip(&groups.bounds) {
            let ctx_bounds = self.ctx_bounds_in(bounds, node.inputs.as_slice());
            let ctx = BackwardCtx { input_bounds: &ctx_bounds, options: &self.opts.relax, par: self.par };
            f(range.clone(), &ctx).map_err(|e| e.at_node(&node.name, op_type))?;
        }
        Ok(())
    }

    /// The backward rule `f` of a non-affine node, applied to each row group's block of
    /// `a` with the group's context (`f` gets the block's rows), the results stacked.
    fn grouped_backward(
        &self,
        id: NodeId,
        a: LinearA<T>,
        f: impl Fn(
            &BackwardCtx<'_, T>,
            LinearA<T>,
            std::ops::Range<usize>,
        ) -> Result<lirpa_core::BackwardResult<T>>,
    ) -> Result<lirpa_core::BackwardResult<T>> {
        let Some(groups) = &self.groups else {
            let rows = 0..a.spec();
            return self.with_ctx(id, |ctx| f(ctx, a, rows));
        };
        let mut parts = Vec::with_capacity(groups.ranges.len());
        self.for_groups(id, a.spec(), |rows, ctx| {
            parts.push(f(ctx, a.row_block(rows.clone()), rows)?);
            Ok(())
        })?;
        let cols: SmallVec<[usize; 4]> =
            self.graph.node(id).inputs.iter().map(|&i| self.graph.node(i).numel()).collect();
        lirpa_core::BackwardResult::vstack(parts, &cols)
    }

    /// The intervals of `inputs` a relaxation sees: exact values, or final bounds.
    fn ctx_bounds(&self, inputs: &[NodeId]) -> SmallVec<[Option<Interval<'_, T>>; 4]> {
        self.ctx_bounds_in(&self.bounds, inputs)
    }

    /// [`ctx_bounds`](Self::ctx_bounds) with the bounds `bounds` (a row group's).
    fn ctx_bounds_in<'a>(
        &'a self,
        bounds: &'a [Option<Bounds<T>>],
        inputs: &[NodeId],
    ) -> SmallVec<[Option<Interval<'a, T>>; 4]> {
        inputs
            .iter()
            .map(|&i| match (&self.values[i], &bounds[i]) {
                (Some(v), _) => Some(Interval { lower: v, upper: v }),
                (None, Some((l, u))) => Some(Interval { lower: l.as_slice(), upper: u.as_slice() }),
                (None, None) => None,
            })
            .collect()
    }

    fn backward_op(
        &self,
        inputs: &[NodeId],
        op: &dyn Operator<T>,
        a: LinearA<T>,
        par: Par,
    ) -> Result<lirpa_core::BackwardResult<T>> {
        self.apply_rule(&self.ctx_bounds(inputs), op, a, par)
    }

    /// An operator's default backward rule with the input intervals `ctx_bounds`.
    fn apply_rule(
        &self,
        ctx_bounds: &[Option<Interval<'_, T>>],
        op: &dyn Operator<T>,
        a: LinearA<T>,
        par: Par,
    ) -> Result<lirpa_core::BackwardResult<T>> {
        for &k in op.needs_input_bounds() {
            if ctx_bounds.get(k).is_none_or(|b| b.is_none()) {
                return Err(Error::Invalid(format!("bounds of input {k} were not computed")));
            }
        }
        let ctx = BackwardCtx { input_bounds: ctx_bounds, options: &self.opts.relax, par };
        let a = if a.window.is_some() && !op.supports_window() { a.into_dense() } else { a };
        op.backward(&ctx, a)
    }

    /// Check coefficients an operator returned for node `id` and choose their form:
    /// a window that covers the whole node becomes dense.
    fn settle(&self, id: NodeId, a: LinearA<T>) -> Result<LinearA<T>> {
        let numel = self.graph.node(id).numel();
        match &a.window {
            None => {
                if a.cols() != numel && a.spec() > 0 {
                    return Err(Error::Shape(format!(
                        "backward rule returned {} coefficients per row for a node of {numel} elements",
                        a.cols()
                    )));
                }
                Ok(a)
            }
            Some(w) => {
                if w.numel() != numel || a.cols() != w.cols() {
                    return Err(Error::Shape(format!(
                        "backward rule returned a window of {}x{}x{} (node {}x{}x{}) with {} columns \
                         for a node of {numel} elements",
                        w.c,
                        w.ph,
                        w.pw,
                        w.c,
                        w.h,
                        w.w,
                        a.cols()
                    )));
                }
                Ok(if w.covers_node() { a.into_dense() } else { a })
            }
        }
    }

    /// Concretize linear bounds over the perturbation sets of the roots.
    fn concretize(
        &self,
        roots: &[(NodeId, LinearA<T>)],
        bias: &LinearBias<T>,
        lower: bool,
        upper: bool,
    ) -> Bounds<T> {
        let mut lo = if lower { bias.lower.clone() } else { vec![T::neg_infinity(); bias.lower.len()] };
        let mut hi = if upper { bias.upper.clone() } else { vec![T::infinity(); bias.upper.len()] };
        for (id, a) in roots {
            let p = self.ptb[*id].expect("perturbed root");
            // In the sound mode, the concretization's own rounding, outward.
            let conc = |m: &Mat<T>, up: bool| {
                let mut v = match &a.window {
                    None => p.concretize(m.as_ref(), up),
                    Some(w) => p.concretize_windowed(m.as_ref(), w, up),
                };
                fpsound::move_out(&mut v, self.concretize_error(*id, a, m), up);
                v
            };
            if let (true, Some(al)) = (lower, &a.lower) {
                fpsound::add_outward(&mut lo, &conc(al, false), false, self.fp.is_some());
            }
            if let (true, Some(au)) = (upper, &a.upper) {
                fpsound::add_outward(&mut hi, &conc(au, true), true, self.fp.is_some());
            }
        }
        (lo, hi)
    }
}

/// Dense rows `e_j` selecting elements `rows` of a node of `n` elements.
fn selection<T: Scalar>(rows: &[usize], n: usize) -> Mat<T> {
    let mut sel = Mat::<T>::zeros(rows.len(), n);
    for (r, &j) in rows.iter().enumerate() {
        sel[(r, j)] = T::one();
    }
    sel
}

fn add<T: Scalar>(acc: &mut [T], x: &[T]) {
    for (a, b) in acc.iter_mut().zip(x) {
        *a += *b;
    }
}

/// Rows `rows` of per-row relaxation parameters laid out for `total` rows.
pub(super) fn params_block<T>(
    p: SideParams<'_, T>,
    rows: std::ops::Range<usize>,
    total: usize,
) -> SideParams<'_, T> {
    SideParams {
        lower: p.lower.map(|v| row_slice(v, &rows, total)),
        upper: p.upper.map(|v| row_slice(v, &rows, total)),
    }
}

/// Rows `r` of a row-major block of `total` rows.
pub(super) fn row_slice<'a, T>(v: &'a [T], r: &std::ops::Range<usize>, total: usize) -> &'a [T] {
    let w = v.len() / total.max(1);
    &v[r.start * w..r.end * w]
}

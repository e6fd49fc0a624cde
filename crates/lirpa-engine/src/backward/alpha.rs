//! α-CROWN: CROWN whose relaxation parameters (e.g. the lower slopes of unstable
//! ReLUs) are optimized by projected Adam on the bound itself.
//!
//! ## Gradient of a bound with respect to the parameters
//!
//! We have no autograd, so the vector-Jacobian product of the backward pass is written
//! by hand. For one specification row `r` and fixed signs of all coefficients (away
//! from kinks), the backward pass with parameters `α` computes
//! `bound_r = min_{x ∈ S} c_r · N_r(x; α)`, where `N_r` is the *linearized network*: every
//! nonlinear node replaced by the line its coefficient chose in row `r`, every affine
//! node kept. The adjoint of each step of the backward pass is then:
//!
//! - concretization (`min_x a·x` by dual norm or box): its gradient in `a` is the
//!   minimizing point `x*` ([`Perturbation::extreme_points`]);
//! - a product with a weight (any affine node): the node's own forward map, applied
//!   to the adjoint values of its inputs ([`Evaluate::forward`] row by row);
//! - a sign split with lines (any relaxed node): evaluating the chosen line
//!   ([`LinearRelaxation::relaxed_forward`]).
//!
//! So the adjoint values `z_v` (the linearized network evaluated at `x*`, one row per
//! specification row) come from one forward sweep, and by the envelope theorem
//! `∂bound_r/∂α_v = ∂(a_v · out_v(z; α_v))/∂α_v`, which each operator computes in
//! [`OptimizableRelaxation::param_grad`] from the coefficients `a_v` it received. One
//! step costs one backward pass plus one forward sweep over the specification rows.
//!
//! ## Optimization (auto_LiRPA's `_get_optimized_bounds` with `fix_interm_bounds`)
//!
//! Intermediate bounds are CROWN's and stay fixed (auto_LiRPA's default
//! `fix_interm_bounds: True`); the parameters of every optimizable node in the
//! bounded node's cone are optimized for the bounded node, one row per specification
//! row and one set per side (the lower and upper bounds are optimized independently,
//! as auto_LiRPA's two separate runs; Adam acts per coordinate and each row's
//! parameters only affect that row's bound, so one joint run is the same
//! optimization). Every parameter value in the feasible set gives a sound bound, so the
//! best bound per element over the iterations is sound; iteration 0 is CROWN.
//!
//! [`Perturbation::extreme_points`]: lirpa_core::Perturbation::extreme_points
//! [`Evaluate::forward`]: lirpa_core::Evaluate::forward
//! [`LinearRelaxation::relaxed_forward`]: lirpa_core::LinearRelaxation::relaxed_forward
//! [`OptimizableRelaxation::param_grad`]: lirpa_core::OptimizableRelaxation::param_grad

use super::{BoundResult, Bounds, InputValue, LinearBoundA, State};
use crate::options::{BoundOptions, BoundRequest, Method};
use faer::Mat;
use lirpa_core::op::{BackwardCtx, Interval, SideParams};
use lirpa_core::{
    Error, Graph, LinearA, LinearBias, NodeId, NodeKind, OptimizableRelaxation, Result, Scalar,
};
use smallvec::SmallVec;
use std::borrow::Cow;

/// The relaxation parameters of one optimizable node for one bounded node.
#[derive(Clone, Debug, PartialEq)]
pub struct AlphaNode<T> {
    pub node: NodeId,
    /// Values per specification row (the operator's row width).
    pub width: usize,
    /// Parameters of the lower-bound pass, row-major `spec × width` (`None` if the lower
    /// bound was not requested).
    pub lower: Option<Vec<T>>,
    /// Parameters of the upper-bound pass.
    pub upper: Option<Vec<T>>,
}

/// Relaxation parameters of an optimized bound computation: what
/// [`compute_bounds_optimized`] returns, and takes back as a warm start (e.g. per branch
/// of a branch-and-bound loop, where only the intermediate bounds change).
#[derive(Clone, Debug, PartialEq)]
pub struct AlphaState<T> {
    /// The bounded node.
    pub target: NodeId,
    /// Specification rows.
    pub spec: usize,
    /// One entry per optimizable node of the bounded node's cone, in topological order.
    pub nodes: Vec<AlphaNode<T>>,
}

impl<T: Scalar> AlphaState<T> {
    /// Whether `other` was made for the same bounded node, rows and parameter layout.
    fn same_layout(&self, other: &AlphaState<T>) -> bool {
        self.target == other.target
            && self.spec == other.spec
            && self.nodes.len() == other.nodes.len()
            && self.nodes.iter().zip(&other.nodes).all(|(a, b)| {
                a.node == b.node
                    && a.width == b.width
                    && a.lower.is_some() == b.lower.is_some()
                    && a.upper.is_some() == b.upper.is_some()
            })
    }
}

/// Bounds with optimized relaxations (α-CROWN), whatever `opts.method` says; returns
/// the bounds and the best parameters. `warm` (parameters of an earlier call on the same
/// node and specification, e.g. the parent branch) replaces the CROWN initialization;
/// it is projected onto the current feasible sets, and ignored if its layout differs.
pub fn compute_bounds_optimized<T: Scalar>(
    graph: &Graph<T>,
    inputs: &[InputValue<T>],
    opts: &BoundOptions,
    req: &BoundRequest<'_, T>,
    warm: Option<&AlphaState<T>>,
) -> Result<(BoundResult<T>, AlphaState<T>)> {
    let opts = BoundOptions { method: Method::AlphaCrown, ..opts.clone() };
    let mut st = State::new(graph, inputs, &opts)?;
    let target = st.check_request(req)?;
    let empty = AlphaState { target, spec: 0, nodes: vec![] };
    if !st.perturbed[target] {
        let plain = BoundOptions { method: Method::Crown, ..opts.clone() };
        let res = State::new(graph, inputs, &plain)?.run(req)?;
        return Ok((res, empty));
    }
    st.ensure_bounds(target)?;
    let c = st.spec_a(target, req);
    let mut state = st.init_alpha(target, &c, req)?;
    if let Some(w) = warm.filter(|w| w.same_layout(&state)) {
        state = w.clone();
        st.project(&mut state)?;
    }
    let o = &opts.optimize;
    let iterations = o.iterations.max(1);
    let mut best_state = state.clone();
    let mut best: Option<Bounds<T>> = None;
    let mut adam = Adam::new(&state);
    let mut since_improved = 0;
    let mut last = None;
    for it in 0..iterations {
        let need_grad = it + 1 < iterations;
        let pass = st.alpha_pass(target, &c, &state, need_grad, false)?;
        st.check_finite(target, &pass.bounds)?;
        let improved = match &mut best {
            None => {
                best = Some(pass.bounds.clone());
                true
            }
            Some((bl, bu)) => {
                let mut any = false;
                for r in 0..state.spec {
                    if pass.bounds.0[r] > bl[r] {
                        bl[r] = pass.bounds.0[r];
                        copy_row(&mut best_state, &state, r, false);
                        any = true;
                    }
                    if pass.bounds.1[r] < bu[r] {
                        bu[r] = pass.bounds.1[r];
                        copy_row(&mut best_state, &state, r, true);
                        any = true;
                    }
                }
                any
            }
        };
        since_improved = if improved { 0 } else { since_improved + 1 };
        let stop = o.early_stop_patience > 0 && since_improved >= o.early_stop_patience;
        if !need_grad || stop {
            last = Some(pass.bounds);
            break;
        }
        let lr = o.lr_alpha * o.lr_decay.powi(it as i32);
        adam.step(&mut state, &pass.grads, lr, o);
        st.project(&mut state)?;
    }
    let (bounds, state) = if o.keep_best {
        (best.expect("one iteration ran"), best_state)
    } else {
        (last.expect("the loop ends with a pass"), state)
    };
    let (mut lower, mut upper) = bounds;
    let (mut a, mut bias) = (vec![], None);
    if req.return_a {
        let pass = st.alpha_pass(target, &c, &state, false, true)?;
        a = pass.roots.into_iter().map(|(input, a)| LinearBoundA { input, a }).collect();
        bias = pass.bias;
        (lower, upper) = pass.bounds;
    }
    Ok((BoundResult { lower, upper, a, bias }, state))
}

/// The bound computed with the given parameters, and its gradient with respect to
/// them (same layout as `state`): the building block of the optimizer, public for tests
/// and for custom optimizers. Intermediate bounds are CROWN's.
pub fn bound_and_gradient<T: Scalar>(
    graph: &Graph<T>,
    inputs: &[InputValue<T>],
    opts: &BoundOptions,
    req: &BoundRequest<'_, T>,
    state: &AlphaState<T>,
) -> Result<(BoundResult<T>, AlphaState<T>)> {
    let opts = BoundOptions { method: Method::AlphaCrown, ..opts.clone() };
    let mut st = State::new(graph, inputs, &opts)?;
    let target = st.check_request(req)?;
    if !st.perturbed[target] {
        return Err(Error::Invalid("the bounded node is not perturbed: there is nothing to optimize".into()));
    }
    st.ensure_bounds(target)?;
    let c = st.spec_a(target, req);
    let layout = st.init_alpha(target, &c, req)?;
    if !layout.same_layout(state) {
        return Err(Error::Invalid(
            "the parameters were made for another node, specification or model".into(),
        ));
    }
    let pass = st.alpha_pass(target, &c, state, true, false)?;
    let mut grad = state.clone();
    for (g, pg) in grad.nodes.iter_mut().zip(pass.grads) {
        g.lower = pg.0;
        g.upper = pg.1;
    }
    let (lower, upper) = pass.bounds;
    Ok((BoundResult { lower, upper, a: vec![], bias: None }, grad))
}

fn copy_row<T: Scalar>(dst: &mut AlphaState<T>, src: &AlphaState<T>, r: usize, upper: bool) {
    for (d, s) in dst.nodes.iter_mut().zip(&src.nodes) {
        let w = d.width;
        let (d, s) = if upper { (&mut d.upper, &s.upper) } else { (&mut d.lower, &s.lower) };
        if let (Some(d), Some(s)) = (d, s) {
            d[r * w..(r + 1) * w].copy_from_slice(&s[r * w..(r + 1) * w]);
        }
    }
}

/// Per-coordinate Adam moments (torch's `Adam`), one pair per node and side.
struct Adam<T> {
    t: i32,
    m: Vec<[Vec<T>; 2]>,
    v: Vec<[Vec<T>; 2]>,
}

impl<T: Scalar> Adam<T> {
    fn new(state: &AlphaState<T>) -> Self {
        let zeros = |p: &Option<Vec<T>>| p.as_ref().map_or(vec![], |p| vec![T::zero(); p.len()]);
        let m: Vec<[Vec<T>; 2]> = state.nodes.iter().map(|n| [zeros(&n.lower), zeros(&n.upper)]).collect();
        Adam { t: 0, v: m.clone(), m }
    }

    /// One step: ascent on the lower bounds, descent on the upper bounds.
    #[allow(clippy::type_complexity)]
    fn step(
        &mut self,
        state: &mut AlphaState<T>,
        grads: &[(Option<Vec<T>>, Option<Vec<T>>)],
        lr: f64,
        o: &crate::options::OptimizeOptions,
    ) {
        self.t += 1;
        let (b1, b2) = (T::from_f64(o.adam_beta1), T::from_f64(o.adam_beta2));
        let c1 = T::one() - b1.powi(self.t);
        let c2 = T::one() - b2.powi(self.t);
        let (lr, eps) = (T::from_f64(lr), T::from_f64(o.adam_eps));
        for (k, node) in state.nodes.iter_mut().enumerate() {
            for side in 0..2 {
                let (p, g, dir) = match side {
                    0 => (&mut node.lower, &grads[k].0, T::one()),
                    _ => (&mut node.upper, &grads[k].1, -T::one()),
                };
                let (Some(p), Some(g)) = (p.as_mut(), g.as_ref()) else { continue };
                let (m, v) = (&mut self.m[k][side], &mut self.v[k][side]);
                for i in 0..p.len() {
                    let gi = g[i];
                    m[i] = b1 * m[i] + (T::one() - b1) * gi;
                    v[i] = b2 * v[i] + (T::one() - b2) * gi * gi;
                    let step = lr * (m[i] / c1) / ((v[i] / c2).sqrt() + eps);
                    if step.is_finite() {
                        p[i] += dir * step;
                    }
                }
            }
        }
    }
}

/// One bound evaluation with given parameters.
struct Pass<T: Scalar> {
    bounds: Bounds<T>,
    /// Gradient per optimizable node (same order as the state) and side.
    #[allow(clippy::type_complexity)]
    grads: Vec<(Option<Vec<T>>, Option<Vec<T>>)>,
    roots: Vec<(NodeId, LinearA<T>)>,
    bias: Option<LinearBias<T>>,
}

impl<'g, T: Scalar> State<'g, T> {
    /// Validate a request and return the bounded node.
    fn check_request(&self, req: &BoundRequest<'_, T>) -> Result<NodeId> {
        let target = match req.node {
            Some(t) if t < self.graph.len() => t,
            Some(t) => return Err(Error::Invalid(format!("node {t} does not exist"))),
            None => self.graph.output()?,
        };
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

    fn spec_a(&self, target: NodeId, req: &BoundRequest<'_, T>) -> LinearA<T> {
        let n = self.graph.node(target).numel();
        let m = req.c.map_or_else(|| Mat::identity(n, n), |c| c.to_owned());
        LinearA::both(m, req.lower, req.upper)
    }

    fn check_finite(&self, target: NodeId, (lo, hi): &Bounds<T>) -> Result<()> {
        let name = &self.graph.node(target).name;
        for (side, v) in [("lower", lo), ("upper", hi)] {
            if let Some(i) = v.iter().position(|x| x.is_nan()) {
                return Err(Error::NonFinite(format!("optimized {side} bound {i} of node '{name}'")));
            }
        }
        Ok(())
    }

    /// Call `f` with the backward context of node `id` (its inputs' bounds).
    fn with_ctx<R>(&self, id: NodeId, f: impl FnOnce(&BackwardCtx<'_, T>) -> Result<R>) -> Result<R> {
        let node = self.graph.node(id);
        let ctx_bounds: SmallVec<[Option<Interval<'_, T>>; 4]> = node
            .inputs
            .iter()
            .map(|&i| match (&self.values[i], &self.bounds[i]) {
                (Some(v), _) => Some(Interval { lower: &**v, upper: &**v }),
                (None, Some((l, u))) => Some(Interval { lower: l.as_slice(), upper: u.as_slice() }),
                (None, None) => None,
            })
            .collect();
        let ctx = BackwardCtx { input_bounds: &ctx_bounds, options: &self.opts.relax, par: self.par };
        let op_type = node.op().map_or("", |op| op.op_type());
        f(&ctx).map_err(|e| e.at_node(&node.name, op_type))
    }

    /// Perturbed nodes `target` depends on (itself included).
    fn cone(&self, target: NodeId) -> Vec<bool> {
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

    fn optimizable(&self, id: NodeId) -> Option<&'g dyn OptimizableRelaxation<T>> {
        self.graph.node(id).op().and_then(|op| op.optimizable())
    }

    /// CROWN-initialized parameters of every optimizable node of the cone.
    fn init_alpha(&self, target: NodeId, c: &LinearA<T>, req: &BoundRequest<'_, T>) -> Result<AlphaState<T>> {
        let spec = c.spec();
        let cone = self.cone(target);
        let mut nodes = Vec::new();
        for id in 0..=target {
            if !cone[id] {
                continue;
            }
            let Some(opt) = self.optimizable(id) else { continue };
            let row = self.with_ctx(id, |ctx| opt.init_params(ctx))?;
            let full = || -> Vec<T> { (0..spec).flat_map(|_| row.iter().copied()).collect() };
            nodes.push(AlphaNode {
                node: id,
                width: row.len(),
                lower: req.lower.then(full),
                upper: req.upper.then(full),
            });
        }
        Ok(AlphaState { target, spec, nodes })
    }

    fn project(&self, state: &mut AlphaState<T>) -> Result<()> {
        for n in &mut state.nodes {
            let opt = self
                .optimizable(n.node)
                .ok_or_else(|| Error::Invalid(format!("node {} has no optimizable relaxation", n.node)))?;
            let w = n.width;
            self.with_ctx(n.node, |ctx| {
                for p in [&mut n.lower, &mut n.upper].into_iter().flatten() {
                    for row in p.chunks_mut(w.max(1)) {
                        opt.project(ctx, row);
                    }
                }
                Ok(())
            })?;
        }
        Ok(())
    }

    /// One backward pass with parameters `state`; with `need_grad`, also the gradient of
    /// each row's bound with respect to that row's parameters.
    fn alpha_pass(
        &self,
        target: NodeId,
        c: &LinearA<T>,
        state: &AlphaState<T>,
        need_grad: bool,
        keep_linear: bool,
    ) -> Result<Pass<T>> {
        let (has_lower, has_upper) = (c.lower.is_some(), c.upper.is_some());
        let mut slot = vec![None; target + 1];
        for (k, n) in state.nodes.iter().enumerate() {
            slot[n.node] = Some(k);
        }
        let (roots, bias, recorded) = self.alpha_backward(target, c.clone(), state, &slot, need_grad)?;
        let bounds = self.concretize(&roots, &bias, has_lower, has_upper);
        let mut grads: Vec<(Option<Vec<T>>, Option<Vec<T>>)> = vec![(None, None); state.nodes.len()];
        if need_grad {
            for upper in [false, true] {
                if (upper && !has_upper) || (!upper && !has_lower) {
                    continue;
                }
                let z = self.adjoint_forward(target, &roots, &recorded, state, &slot, upper)?;
                for (k, n) in state.nodes.iter().enumerate() {
                    let params = if upper { &n.upper } else { &n.lower };
                    let Some(params) = params else { continue };
                    let mut g = vec![T::zero(); params.len()];
                    let a = recorded[n.node]
                        .as_ref()
                        .and_then(|a| if upper { &a.upper } else { &a.lower }.as_ref());
                    if let Some(a) = a {
                        let opt = self.optimizable(n.node).expect("optimizable");
                        let zin = self.input_rows(n.node, &z, state.spec);
                        let zs: SmallVec<[&[T]; 4]> = zin.iter().map(|x| &**x).collect();
                        self.with_ctx(n.node, |ctx| {
                            opt.param_grad(ctx, params, a.as_ref(), upper, &zs, &mut g)
                        })?;
                    }
                    if upper {
                        grads[k].1 = Some(g);
                    } else {
                        grads[k].0 = Some(g);
                    }
                }
            }
        }
        let (roots, bias) = if keep_linear { (roots, Some(bias)) } else { (vec![], None) };
        Ok(Pass { bounds, grads, roots, bias })
    }

    /// The backward sweep of [`State::backward_from`] with dense coefficients, where
    /// optimizable nodes use their parameters. With `record`, keeps the coefficients each
    /// non-affine node received (the adjoint sweep chooses its lines by their signs).
    #[allow(clippy::type_complexity)]
    fn alpha_backward(
        &self,
        target: NodeId,
        a: LinearA<T>,
        state: &AlphaState<T>,
        slot: &[Option<usize>],
        record: bool,
    ) -> Result<(Vec<(NodeId, LinearA<T>)>, LinearBias<T>, Vec<Option<LinearA<T>>>)> {
        let mut bias = LinearBias::zeros(a.spec());
        let mut pending: Vec<Option<LinearA<T>>> = (0..=target).map(|_| None).collect();
        let mut recorded: Vec<Option<LinearA<T>>> = (0..=target).map(|_| None).collect();
        pending[target] = Some(a);
        let mut roots = Vec::new();
        for id in (0..=target).rev() {
            let Some(a) = pending[id].take() else { continue };
            let node = self.graph.node(id);
            if let Some(v) = &self.values[id] {
                bias.add_assign(&a.times_vector(v));
                continue;
            }
            let op = match &node.kind {
                NodeKind::Input => {
                    roots.push((id, a.into_dense()));
                    continue;
                }
                NodeKind::Op(op) => op.as_ref(),
                NodeKind::Constant(_) => unreachable!("constants have values"),
            };
            let a = a.into_dense();
            if record && !op.is_affine() {
                recorded[id] = Some(a.clone());
            }
            let res = match (slot[id], op.optimizable()) {
                (Some(k), Some(opt)) => {
                    let n = &state.nodes[k];
                    let params = SideParams { lower: n.lower.as_deref(), upper: n.upper.as_deref() };
                    self.with_ctx(id, |ctx| opt.backward_with(ctx, a, params))?
                }
                _ => self
                    .backward_op(node.inputs.as_slice(), op, a, self.par)
                    .map_err(|e| e.at_node(&node.name, op.op_type()))?,
            };
            bias.add_assign(&res.bias);
            for (k, ak) in res.inputs.into_iter().enumerate() {
                let Some(ak) = ak else { continue };
                let i = *node.inputs.get(k).ok_or_else(|| {
                    Error::Invalid(format!(
                        "backward rule of node '{}' returned coefficients for input {k}, which does not exist",
                        node.name
                    ))
                })?;
                let ak = self.settle(i, ak.into_dense())?;
                match &mut pending[i] {
                    Some(acc) => acc.add_assign(ak)?,
                    slot @ None => *slot = Some(ak),
                }
            }
        }
        roots.sort_by_key(|(id, _)| *id);
        Ok((roots, bias, recorded))
    }

    /// Values of node `id`'s inputs in the adjoint sweep, row-major `rows × numel`
    /// (constants repeated per row).
    fn input_rows<'a>(&'a self, id: NodeId, z: &'a [Option<Vec<T>>], rows: usize) -> Vec<Cow<'a, [T]>> {
        self.graph
            .node(id)
            .inputs
            .iter()
            .map(|&i| match (&self.values[i], &z[i]) {
                (Some(v), _) => Cow::Owned((0..rows).flat_map(|_| v.iter().copied()).collect()),
                (None, Some(zi)) => Cow::Borrowed(zi.as_slice()),
                (None, None) => Cow::Owned(vec![T::zero(); rows * self.graph.node(i).numel()]),
            })
            .collect()
    }

    /// The adjoint sweep of side `upper`: the linearized network of each specification
    /// row evaluated at that row's optimal input point (see the module documentation).
    fn adjoint_forward(
        &self,
        target: NodeId,
        roots: &[(NodeId, LinearA<T>)],
        recorded: &[Option<LinearA<T>>],
        state: &AlphaState<T>,
        slot: &[Option<usize>],
        upper: bool,
    ) -> Result<Vec<Option<Vec<T>>>> {
        let rows = state.spec;
        let cone = self.cone(target);
        let mut z: Vec<Option<Vec<T>>> = vec![None; target + 1];
        let side = |a: &LinearA<T>| if upper { a.upper.clone() } else { a.lower.clone() };
        for id in 0..=target {
            if !cone[id] || !self.perturbed[id] {
                continue;
            }
            let node = self.graph.node(id);
            let n = node.numel();
            let out = match &node.kind {
                NodeKind::Input => {
                    let p = self.ptb[id].expect("perturbed input");
                    match roots.iter().find(|(r, _)| *r == id).and_then(|(_, a)| side(a)) {
                        Some(a) => p.extreme_points(a.as_ref(), upper),
                        None => {
                            let c = p.center();
                            (0..rows).flat_map(|_| c.iter().copied()).collect()
                        }
                    }
                }
                NodeKind::Constant(_) => continue,
                NodeKind::Op(op) => {
                    let mut out = vec![T::zero(); rows * n];
                    if op.is_affine() {
                        for r in 0..rows {
                            let args: SmallVec<[&[T]; 4]> = node
                                .inputs
                                .iter()
                                .map(|&i| match (&self.values[i], &z[i]) {
                                    (Some(v), _) => &**v,
                                    (None, Some(zi)) => {
                                        let ni = self.graph.node(i).numel();
                                        &zi[r * ni..(r + 1) * ni]
                                    }
                                    (None, None) => unreachable!("inputs of a cone node are in the cone"),
                                })
                                .collect();
                            op.forward(&args, &mut out[r * n..(r + 1) * n])
                                .map_err(|e| e.at_node(&node.name, op.op_type()))?;
                        }
                    } else if let Some(a) = recorded[id].as_ref().and_then(side) {
                        let zin = self.input_rows(id, &z, rows);
                        let zs: SmallVec<[&[T]; 4]> = zin.iter().map(|x| &**x).collect();
                        match (slot[id], op.optimizable()) {
                            (Some(k), Some(opt)) => {
                                let n = &state.nodes[k];
                                let params = if upper { &n.upper } else { &n.lower };
                                let params = params.as_deref().expect("parameters of a requested side");
                                self.with_ctx(id, |ctx| {
                                    opt.relaxed_forward_with(ctx, params, a.as_ref(), upper, &zs, &mut out)
                                })?
                            }
                            _ => self.with_ctx(id, |ctx| {
                                op.relaxed_forward(ctx, a.as_ref(), upper, &zs, &mut out)
                            })?,
                        }
                    }
                    // A node that received no coefficients does not affect the bound: zeros.
                    out
                }
            };
            z[id] = Some(out);
        }
        Ok(z)
    }
}

//! α-CROWN: CROWN whose relaxation parameters (e.g. the lower slopes of unstable
//! ReLUs) are optimized by projected Adam on the bound itself.
//!
//! The gradient of a bound with respect to the parameters is the adjoint sweep in
//! [`adjoint`]; this module holds the parameters and the optimizer.
//!
//! ## Optimization (auto_LiRPA's `_get_optimized_bounds`)
//!
//! As auto_LiRPA does when no intermediate bounds are given, every bound computation
//! of the run has its own parameters: each intermediate node bounded by a backward
//! pass (a *pass*, keyed by its start node and the rows it refines, fixed at iteration
//! 0) and the bounded node itself. Each iteration recomputes the intermediate bounds
//! with their parameters (intersected with IBP, as CROWN does), then the final bound;
//! the loss is the sum of the final bounds of one side, and its gradient reaches the
//! intermediate passes' parameters through the intermediate bounds
//! ([`OptimizableRelaxation::bounds_grad`]: how a relaxation moves with its input
//! bounds), swept in reverse topological order; a node bounded by a tight interval rule
//! from another node's bounds (Sigmoid before a product) passes its bound gradients on by
//! central differences of its element-wise interval rule. The lower and upper bounds are two
//! independent runs, as in auto_LiRPA. Every parameter value in the feasible sets gives
//! sound bounds, so the best final bound per element over the iterations is sound;
//! iteration 0 is CROWN.
//!
//! [`OptimizableRelaxation::bounds_grad`]: lirpa_core::OptimizableRelaxation::bounds_grad
//!
//! [`Perturbation::extreme_points`]: lirpa_core::Perturbation::extreme_points
//! [`Evaluate::forward`]: lirpa_core::Evaluate::forward
//! [`LinearRelaxation::relaxed_forward`]: lirpa_core::LinearRelaxation::relaxed_forward
//! [`OptimizableRelaxation::param_grad`]: lirpa_core::OptimizableRelaxation::param_grad

use super::{
    BoundResult, Bounds, ConstraintTerms, InputValue, LinearBoundA, RowGroups, State, SweepHooks, Swept,
    selection,
};
use crate::options::{BoundOptions, BoundRequest, Method, NodeBounds, NodeConstraint, OptimizeOptions};
use faer::{Accum, Mat, MatRef, Par};
use lirpa_core::op::{BatchInput, Interval, SideParams};
use lirpa_core::{
    Error, Graph, LinearA, LinearBias, NodeId, NodeKind, OptimizableRelaxation, Result, Scalar,
};
use smallvec::SmallVec;
use std::borrow::Cow;
use std::sync::{Arc, OnceLock};

mod adjoint;
use adjoint::{AffineCache, PassRecord, affine_cache};

/// The relaxation parameters of one optimizable node in one pass.
#[derive(Clone, Debug, PartialEq)]
pub struct AlphaNode<T> {
    pub node: NodeId,
    /// Values per row of the pass (the operator's row width).
    pub width: usize,
    /// Parameters used by the pass's lower-bound coefficients, row-major
    /// `rows × width` (`None` if the pass has no lower side).
    pub lower: Option<Vec<T>>,
    /// Parameters used by its upper-bound coefficients.
    pub upper: Option<Vec<T>>,
}

/// The parameters of one backward pass: the bound of an intermediate node (both sides,
/// some of its elements) or of the bounded node (one side, every specification row).
#[derive(Clone, Debug, PartialEq)]
pub struct AlphaPass<T> {
    /// The node the pass bounds.
    pub start: NodeId,
    /// The elements it bounds (intermediate passes), or the specification rows.
    pub rows: Vec<usize>,
    /// Parameters of the optimizable nodes of the pass's cone, in topological order.
    pub nodes: Vec<AlphaNode<T>>,
}

/// One optimization run (one side of the final bound): the parameters of every pass,
/// intermediate passes in topological order, the bounded node's pass last.
#[derive(Clone, Debug, PartialEq)]
pub struct AlphaRun<T> {
    /// Whether this run optimizes the upper bound.
    pub upper: bool,
    pub passes: Vec<AlphaPass<T>>,
    /// β-CROWN's multipliers of the bounded node's pass (`None` without constraints).
    pub beta: Option<BetaParams<T>>,
}

/// The multipliers β of the constraints ([`BoundOptions::constraints`]) on the
/// perturbed nodes the bounded node depends on, in the bounded node's pass: one per
/// specification row and constraint. Every `β ≥ 0` gives a sound bound on the inputs
/// that satisfy the constraints (see [`NodeConstraint`]).
#[derive(Clone, Debug, PartialEq)]
pub struct BetaParams<T> {
    pub constraints: Vec<NodeConstraint>,
    /// Row-major `spec × constraints.len()`.
    pub values: Vec<T>,
}

/// Relaxation parameters of an optimized bound computation: what
/// [`compute_bounds_optimized`](crate::compute_bounds_optimized) returns, and takes back as a warm start (e.g. per branch
/// of a branch-and-bound loop, where only the intermediate bounds change).
#[derive(Clone, Debug, PartialEq)]
pub struct AlphaState<T> {
    /// The bounded node.
    pub target: NodeId,
    /// Specification rows.
    pub spec: usize,
    /// One run per requested side (lower first).
    pub runs: Vec<AlphaRun<T>>,
}

impl<T: Scalar> AlphaState<T> {
    /// The same parameters in another precision (e.g. `f32` to store a
    /// branch-and-bound domain's warm start in half the memory: any parameter value
    /// is projected onto its feasible set before use, so rounding never costs soundness).
    pub fn cast<U: Scalar>(&self) -> AlphaState<U> {
        let v = |x: &Vec<T>| x.iter().map(|&y| U::from_f64(y.as_f64())).collect::<Vec<U>>();
        AlphaState {
            target: self.target,
            spec: self.spec,
            runs: self
                .runs
                .iter()
                .map(|r| AlphaRun {
                    upper: r.upper,
                    passes: r
                        .passes
                        .iter()
                        .map(|p| AlphaPass {
                            start: p.start,
                            rows: p.rows.clone(),
                            nodes: p
                                .nodes
                                .iter()
                                .map(|n| AlphaNode {
                                    node: n.node,
                                    width: n.width,
                                    lower: n.lower.as_ref().map(v),
                                    upper: n.upper.as_ref().map(v),
                                })
                                .collect(),
                        })
                        .collect(),
                    beta: r
                        .beta
                        .as_ref()
                        .map(|b| BetaParams { constraints: b.constraints.clone(), values: v(&b.values) }),
                })
                .collect(),
        }
    }
}

impl<T: Scalar> AlphaRun<T> {
    /// Whether `other` has the same passes, rows and parameter layout.
    pub fn same_layout(&self, other: &AlphaRun<T>) -> bool {
        self.upper == other.upper
            && self.passes.len() == other.passes.len()
            && self.passes.iter().zip(&other.passes).all(|(p, q)| {
                p.start == q.start
                    && p.rows == q.rows
                    && p.nodes.len() == q.nodes.len()
                    && p.nodes.iter().zip(&q.nodes).all(|(a, b)| {
                        a.node == b.node
                            && a.width == b.width
                            && a.lower.is_some() == b.lower.is_some()
                            && a.upper.is_some() == b.upper.is_some()
                    })
            })
            && match (&self.beta, &other.beta) {
                (None, None) => true,
                (Some(a), Some(b)) => a.constraints == b.constraints && a.values.len() == b.values.len(),
                _ => false,
            }
    }

    /// Take the parameters of `warm` wherever they apply: same pass start node, same
    /// optimizable node and width, same row (element of the start node, or
    /// specification row); other rows keep their CROWN initialization. In a
    /// branch-and-bound loop the refined rows change from branch to branch, so the
    /// layouts rarely match exactly.
    pub fn warm_start(&mut self, warm: &AlphaRun<T>) {
        if warm.upper != self.upper {
            return;
        }
        // β of a constraint the warm run had (same node, element, side and threshold),
        // row by row; a new constraint keeps β = 0.
        if let (Some(b), Some(wb)) = (self.beta.as_mut(), warm.beta.as_ref()) {
            let (k, wk) = (b.constraints.len(), wb.constraints.len());
            let rows = (b.values.len() / k.max(1)).min(wb.values.len() / wk.max(1));
            for (j, c) in b.constraints.iter().enumerate() {
                let Some(wj) = wb.constraints.iter().position(|w| w == c) else { continue };
                for r in 0..rows {
                    b.values[r * k + j] = wb.values[r * wk + wj];
                }
            }
        }
        for pass in &mut self.passes {
            let Some(wp) = warm.passes.iter().find(|p| p.start == pass.start) else { continue };
            // Row of `wp` holding each row of `pass`.
            let src: Vec<Option<usize>> =
                pass.rows.iter().map(|j| wp.rows.iter().position(|k| k == j)).collect();
            for node in &mut pass.nodes {
                let Some(wn) = wp.nodes.iter().find(|n| n.node == node.node && n.width == node.width) else {
                    continue;
                };
                let w = node.width;
                for (dst, from) in [(&mut node.lower, &wn.lower), (&mut node.upper, &wn.upper)] {
                    let (Some(dst), Some(from)) = (dst.as_mut(), from.as_ref()) else { continue };
                    for (r, s) in src.iter().enumerate() {
                        if let Some(s) = s {
                            dst[r * w..(r + 1) * w].copy_from_slice(&from[s * w..(s + 1) * w]);
                        }
                    }
                }
            }
        }
    }

    /// Every parameter vector, in a fixed order: the relaxation parameters (`false`),
    /// then the multipliers β (`true`).
    fn params_mut(&mut self) -> impl Iterator<Item = (bool, &mut Vec<T>)> {
        self.passes
            .iter_mut()
            .flat_map(|p| p.nodes.iter_mut())
            .flat_map(|n| [&mut n.lower, &mut n.upper])
            .flatten()
            .map(|p| (false, p))
            .chain(self.beta.as_mut().map(|b| (true, &mut b.values)))
    }
}

/// Bounds with optimized relaxations (α-CROWN), whatever `opts.method` says; returns
/// the bounds and the best parameters. `warm` (parameters of an earlier call on the same
/// node and specification, e.g. the parent branch) replaces the CROWN initialization
/// wherever its passes, nodes and rows match ([`AlphaRun::warm_start`]); it is projected
/// onto the current feasible sets.
///
/// With `return_a`, the linear coefficients and bounds are those of the best iteration
/// (by the sum of the bounds) rather than the best per element.
pub fn compute_bounds_optimized<T: Scalar>(
    graph: &Graph<T>,
    inputs: &[InputValue<T>],
    opts: &BoundOptions,
    req: &BoundRequest<'_, T>,
    warm: Option<&AlphaState<T>>,
) -> Result<(BoundResult<T>, AlphaState<T>)> {
    compute_bounds_optimized_keep(graph, inputs, opts, req, warm).map(|(r, s, _)| (r, s))
}

/// [`compute_bounds_optimized`], also returning the intermediate bounds of the last
/// evaluation (see [`super::compute_bounds_keep`]).
#[allow(clippy::type_complexity)]
pub fn compute_bounds_optimized_keep<T: Scalar>(
    graph: &Graph<T>,
    inputs: &[InputValue<T>],
    opts: &BoundOptions,
    req: &BoundRequest<'_, T>,
    warm: Option<&AlphaState<T>>,
) -> Result<(BoundResult<T>, AlphaState<T>, Vec<Option<Bounds<T>>>)> {
    let opts = BoundOptions { method: Method::AlphaCrown, ..opts.clone() };
    let mut st = State::new(graph, inputs, &opts)?;
    let target = st.check_request(req)?;
    if !st.perturbed[target] {
        let plain = BoundOptions { method: Method::Crown, ..opts.clone() };
        let res = State::new(graph, inputs, &plain)?.run(req)?;
        let spec = res.lower.len();
        return Ok((res, AlphaState { target, spec, runs: vec![] }, vec![]));
    }
    let c_full = st.spec_mat(target, req);
    let spec = c_full.nrows();
    let mut lower = vec![T::neg_infinity(); spec];
    let mut upper = vec![T::infinity(); spec];
    let mut runs = Vec::new();
    let mut roots: Vec<(NodeId, LinearA<T>)> = Vec::new();
    let mut node_a: Vec<(NodeId, LinearA<T>)> = Vec::new();
    let mut bias = LinearBias::zeros(spec);
    let sides: Vec<bool> = [(false, req.lower), (true, req.upper)]
        .into_iter()
        .filter_map(|(side_upper, wanted)| wanted.then_some(side_upper))
        .collect();
    let optimize_side = |st: &mut State<'_, T>, side_upper: bool| {
        let c = LinearA::both(c_full.clone(), !side_upper, side_upper);
        let warm_run = warm.and_then(|w| w.runs.iter().find(|r| r.upper == side_upper));
        st.optimize_run(target, &c, side_upper, warm_run, &opts.optimize, req.return_a)
    };
    // The two sides are independent optimizations: with two threads or more, each
    // runs on its own state with half of them (the same results as one after the other).
    let threads = opts.par().degree();
    let outcomes = if sides.len() == 2 && threads >= 2 {
        let half = BoundOptions { threads: threads / 2, ..opts.clone() };
        let (mut st_lo, mut st_hi) = (State::new(graph, inputs, &half)?, State::new(graph, inputs, &half)?);
        let (lo, hi) = rayon::join(|| optimize_side(&mut st_lo, false), || optimize_side(&mut st_hi, true));
        // The intermediate bounds returned are those of the last evaluation, as one
        // after the other: the upper side's.
        st.bounds = std::mem::take(&mut st_hi.bounds);
        vec![(false, lo?), (true, hi?)]
    } else {
        let mut outcomes = Vec::with_capacity(sides.len());
        for &side_upper in &sides {
            outcomes.push((side_upper, optimize_side(&mut st, side_upper)?));
        }
        outcomes
    };
    for (side_upper, (bounds, run, lin)) in outcomes {
        if side_upper {
            upper = bounds;
        } else {
            lower = bounds;
        }
        if let Some((r, b, nodes)) = lin {
            if side_upper {
                bias.upper = b.upper;
            } else {
                bias.lower = b.lower;
            }
            for (forms, side) in [(&mut roots, r), (&mut node_a, nodes)] {
                for (id, a) in side {
                    merge_side(forms, id, a, side_upper);
                }
            }
        }
        runs.push(run);
    }
    let (a, bias) = if req.return_a {
        (roots.into_iter().map(|(input, a)| LinearBoundA { input, a }).collect(), Some(bias))
    } else {
        (vec![], None)
    };
    let node_a = if req.return_a { node_a } else { vec![] };
    Ok((BoundResult { lower, upper, a, bias, node_a }, AlphaState { target, spec, runs }, st.bounds))
}

/// One sub-domain of a batch ([`compute_bounds_optimized_batch`](crate::compute_bounds_optimized_batch)): its specification
/// rows, the intermediate bounds known on it, its constraints (β-CROWN's splits) and
/// the parameters to start from.
#[derive(Clone, Debug)]
pub struct SubDomain<'a, T: Scalar> {
    pub c: MatRef<'a, T>,
    pub node_bounds: Option<Arc<NodeBounds>>,
    pub constraints: Option<Arc<Vec<NodeConstraint>>>,
    pub warm: Option<&'a AlphaState<T>>,
}

/// What [`compute_bounds_optimized_batch`](crate::compute_bounds_optimized_batch) gives per
/// sub-domain: as [`compute_bounds_optimized_keep`](crate::compute_bounds_optimized_keep).
pub type DomainResult<T> = (BoundResult<T>, AlphaState<T>, Vec<Option<Bounds<T>>>);

/// [`compute_bounds_optimized_keep`] for a batch of sub-domains of one model and one
/// bounded node (`req.node`, sides and `return_a`; `req.c` must be `None`: each domain
/// has its own specification): the same results, domain by domain, computed in one
/// optimization whose backward and adjoint sweeps stack the rows of every domain, so
/// that affine operators do one wide product instead of one narrow product per domain.
/// Each domain's relaxations see its own intermediate bounds, and its β only its own
/// constraints; α and β are optimized jointly (Adam is per coordinate, so this is the
/// same optimization as one domain at a time, up to the summation order of products).
///
/// Batching applies when every domain's bound is one pass (all intermediate bounds given,
/// e.g. [`BoundOptions::fixed_node_bounds`]); otherwise the domains are bounded one at a
/// time.
pub fn compute_bounds_optimized_batch<T: Scalar>(
    graph: &Graph<T>,
    inputs: &[InputValue<T>],
    opts: &BoundOptions,
    req: &BoundRequest<'_, T>,
    domains: &[SubDomain<'_, T>],
) -> Result<Vec<DomainResult<T>>> {
    if req.c.is_some() {
        return Err(Error::Invalid(
            "a batch of sub-domains takes each domain's specification, not req.c".into(),
        ));
    }
    let opts_d: Vec<BoundOptions> = domains
        .iter()
        .map(|d| BoundOptions {
            method: Method::AlphaCrown,
            node_bounds: d.node_bounds.clone(),
            constraints: d.constraints.clone(),
            ..opts.clone()
        })
        .collect();
    let reqs: Vec<BoundRequest<'_, T>> =
        domains.iter().map(|d| BoundRequest { c: Some(d.c), ..*req }).collect();
    let one_by_one = || -> Result<Vec<DomainResult<T>>> {
        (0..domains.len())
            .map(|d| compute_bounds_optimized_keep(graph, inputs, &opts_d[d], &reqs[d], domains[d].warm))
            .collect()
    };
    // The floating-point-sound mode's error terms read one domain's magnitudes.
    if domains.len() < 2 || opts.fp_sound != lirpa_core::FpSound::Off {
        return one_by_one();
    }
    let mut states = Vec::with_capacity(domains.len());
    for o in &opts_d {
        states.push(State::new(graph, inputs, o)?);
    }
    let target = states[0].check_request(&reqs[0])?;
    for (st, r) in states.iter().zip(&reqs) {
        if st.check_request(r)? != target {
            return Err(Error::Invalid("the domains of a batch bound different nodes".into()));
        }
    }
    if !states[0].perturbed[target] {
        return one_by_one();
    }
    let leader_opts =
        BoundOptions { method: Method::AlphaCrown, node_bounds: None, constraints: None, ..opts.clone() };
    // Per side: its bounds (all rows), each domain's run, the linear forms (all rows).
    type Side<T> = (bool, Vec<T>, Vec<AlphaRun<T>>, Option<RootForms<T>>);
    let mut sides: Vec<Side<T>> = Vec::new();
    // Domain `d` owns rows `ranges[d]` of the stacked specification.
    let mut ranges = Vec::with_capacity(domains.len());
    let mut r0 = 0;
    for d in domains {
        ranges.push(r0..r0 + d.c.nrows());
        r0 += d.c.nrows();
    }
    let mut stacked_c = Mat::<T>::zeros(r0, domains[0].c.ncols());
    for (d, r) in domains.iter().zip(&ranges) {
        stacked_c.as_mut().subrows_mut(r.start, r.len()).copy_from(d.c);
    }
    for (upper, wanted) in [(false, req.lower), (true, req.upper)] {
        if !wanted {
            continue;
        }
        let mut runs = Vec::with_capacity(domains.len());
        for (d, st) in states.iter_mut().enumerate() {
            let c = LinearA::both(st.spec_mat(target, &reqs[d]), !upper, upper);
            let mut run = st.init_run(target, &c, upper)?;
            if let Some(w) = domains[d].warm.and_then(|w| w.runs.iter().find(|r| r.upper == upper)) {
                run.warm_start(w);
            }
            if run.passes.len() != 1 {
                return one_by_one();
            }
            runs.push(run);
        }
        let Some(batched) = stack_runs(&runs) else { return one_by_one() };
        let mut leader = State::new(graph, inputs, &leader_opts)?;
        leader.bounds = states[0].bounds.clone();
        let owns = runs.iter().map(|r| owned_constraints(r, batched.beta.as_ref())).collect();
        leader.groups = Some(RowGroups {
            ranges: ranges.clone(),
            bounds: states.iter().map(|s| s.bounds.clone()).collect(),
            owns,
        });
        let c = LinearA::both(stacked_c.clone(), !upper, upper);
        let (bounds, run, lin) = leader.optimize(target, &c, batched, &opts.optimize, req.return_a)?;
        sides.push((upper, bounds, unstack_run(&run, &runs, &ranges), lin));
    }
    let mut out = Vec::with_capacity(domains.len());
    for (d, r) in ranges.iter().enumerate() {
        let spec = r.len();
        let mut res = BoundResult {
            lower: vec![T::neg_infinity(); spec],
            upper: vec![T::infinity(); spec],
            a: vec![],
            bias: None,
            node_a: vec![],
        };
        let mut bias = LinearBias::zeros(spec);
        let mut root_forms = Vec::new();
        let mut runs = Vec::new();
        for (upper, bounds, split, lin) in &sides {
            let b = bounds[r.clone()].to_vec();
            if *upper {
                res.upper = b;
            } else {
                res.lower = b;
            }
            runs.push(split[d].clone());
            let Some((roots, lb, nodes)) = lin else { continue };
            let (src, dst) = if *upper { (&lb.upper, &mut bias.upper) } else { (&lb.lower, &mut bias.lower) };
            dst.copy_from_slice(&src[r.clone()]);
            for (id, a) in roots {
                merge_side(&mut root_forms, *id, a.row_block(r.clone()), *upper);
            }
            for (id, a) in nodes {
                merge_side(&mut res.node_a, *id, a.row_block(r.clone()), *upper);
            }
        }
        if req.return_a {
            res.a = root_forms.into_iter().map(|(input, a)| LinearBoundA { input, a }).collect();
            res.bias = Some(bias);
        }
        out.push((res, AlphaState { target, spec, runs }, std::mem::take(&mut states[d].bounds)));
    }
    Ok(out)
}

/// Rows `r` of the final pass's parameters and β of `src` into `dst` (same layout).
fn copy_run_rows<T: Scalar>(dst: &mut AlphaRun<T>, src: &AlphaRun<T>, r: std::ops::Range<usize>) {
    let (Some(d), Some(s)) = (dst.passes.last_mut(), src.passes.last()) else { return };
    for (dn, sn) in d.nodes.iter_mut().zip(&s.nodes) {
        let w = sn.width;
        for (dv, sv) in [(&mut dn.lower, &sn.lower), (&mut dn.upper, &sn.upper)] {
            if let (Some(dv), Some(sv)) = (dv.as_mut(), sv.as_ref()) {
                dv[r.start * w..r.end * w].copy_from_slice(&sv[r.start * w..r.end * w]);
            }
        }
    }
    if let (Some(d), Some(s)) = (dst.beta.as_mut(), src.beta.as_ref()) {
        let k = s.constraints.len();
        d.values[r.start * k..r.end * k].copy_from_slice(&s.values[r.start * k..r.end * k]);
    }
}

/// Rows `r` of linear forms `src` into `dst` (the same nodes and shapes: two
/// evaluations of one run).
fn copy_form_rows<T: Scalar>(dst: &mut RootForms<T>, src: &RootForms<T>, r: std::ops::Range<usize>) {
    let rows = |d: &mut LinearA<T>, s: &LinearA<T>| {
        for (dm, sm) in [(d.lower.as_mut(), s.lower.as_ref()), (d.upper.as_mut(), s.upper.as_ref())] {
            if let (Some(dm), Some(sm)) = (dm, sm)
                && dm.ncols() == sm.ncols()
            {
                dm.as_mut().subrows_mut(r.start, r.len()).copy_from(sm.as_ref().subrows(r.start, r.len()));
            }
        }
    };
    for ((_, d), (_, s)) in dst.0.iter_mut().zip(&src.0).chain(dst.2.iter_mut().zip(&src.2)) {
        rows(d, s);
    }
    dst.1.lower[r.clone()].copy_from_slice(&src.1.lower[r.clone()]);
    dst.1.upper[r.clone()].copy_from_slice(&src.1.upper[r]);
}

/// Put side `upper` of node `id`'s coefficients `a` into `forms` (the two sides come
/// from two runs).
fn merge_side<T: Scalar>(forms: &mut Vec<(NodeId, LinearA<T>)>, id: NodeId, a: LinearA<T>, upper: bool) {
    match forms.iter_mut().find(|(i, _)| *i == id) {
        Some((_, acc)) => {
            if upper {
                acc.upper = a.upper;
            } else {
                acc.lower = a.lower;
            }
        }
        None => forms.push((id, a)),
    }
}

/// One run for a batch of domains' runs of one side (each a single pass with the same
/// nodes): their parameters stacked by rows; β over the union of their constraints
/// (row-major `rows × union`, zero where a constraint is not the row's domain's, see
/// [`RowGroups::mask_beta`]). `None` when the layouts differ.
fn stack_runs<T: Scalar>(runs: &[AlphaRun<T>]) -> Option<AlphaRun<T>> {
    let first = runs.first()?;
    let same_nodes = |p: &AlphaPass<T>| {
        p.nodes.len() == first.passes[0].nodes.len()
            && p.nodes.iter().zip(&first.passes[0].nodes).all(|(a, b)| {
                a.node == b.node
                    && a.width == b.width
                    && a.lower.is_some() == b.lower.is_some()
                    && a.upper.is_some() == b.upper.is_some()
            })
    };
    if !runs.iter().all(|r| r.passes.len() == 1 && r.upper == first.upper && same_nodes(&r.passes[0])) {
        return None;
    }
    let rows: usize = runs.iter().map(|r| r.passes[0].rows.len()).sum();
    let nodes = first.passes[0]
        .nodes
        .iter()
        .enumerate()
        .map(|(k, n)| {
            let cat = |pick: fn(&AlphaNode<T>) -> &Option<Vec<T>>| {
                pick(n).as_ref().map(|_| {
                    runs.iter().flat_map(|r| pick(&r.passes[0].nodes[k]).iter().flatten().copied()).collect()
                })
            };
            AlphaNode { node: n.node, width: n.width, lower: cat(|n| &n.lower), upper: cat(|n| &n.upper) }
        })
        .collect();
    let mut union: Vec<NodeConstraint> = Vec::new();
    for b in runs.iter().filter_map(|r| r.beta.as_ref()) {
        for c in &b.constraints {
            if !union.contains(c) {
                union.push(*c);
            }
        }
    }
    let beta = (!union.is_empty()).then(|| {
        let k_all = union.len();
        let mut values = vec![T::zero(); rows * k_all];
        let mut r0 = 0;
        for r in runs {
            let spec = r.passes[0].rows.len();
            if let Some(b) = &r.beta {
                let k = b.constraints.len();
                for (j, c) in b.constraints.iter().enumerate() {
                    let u = union.iter().position(|x| x == c).expect("in the union");
                    for row in 0..spec {
                        values[(r0 + row) * k_all + u] = b.values[row * k + j];
                    }
                }
            }
            r0 += spec;
        }
        BetaParams { constraints: union, values }
    });
    Some(AlphaRun {
        upper: first.upper,
        passes: vec![AlphaPass { start: first.passes[0].start, rows: (0..rows).collect(), nodes }],
        beta,
    })
}

/// Which constraints of the union `beta` (see [`stack_runs`]) are `run`'s own.
fn owned_constraints<T: Scalar>(run: &AlphaRun<T>, beta: Option<&BetaParams<T>>) -> Vec<bool> {
    let own = run.beta.as_ref().map_or(&[][..], |b| &b.constraints[..]);
    beta.map_or_else(Vec::new, |b| b.constraints.iter().map(|c| own.contains(c)).collect())
}

/// The per-domain runs of a stacked run (inverse of [`stack_runs`]), in the layout of
/// `templates` (each domain's own run), rows `ranges[d]` for domain `d`.
fn unstack_run<T: Scalar>(
    run: &AlphaRun<T>,
    templates: &[AlphaRun<T>],
    ranges: &[std::ops::Range<usize>],
) -> Vec<AlphaRun<T>> {
    templates
        .iter()
        .zip(ranges)
        .map(|(t, r)| {
            let mut own = t.clone();
            for (dst, src) in own.passes[0].nodes.iter_mut().zip(&run.passes[0].nodes) {
                let w = src.width;
                for (d, s) in [(&mut dst.lower, &src.lower), (&mut dst.upper, &src.upper)] {
                    if let (Some(d), Some(s)) = (d.as_mut(), s.as_ref()) {
                        d.copy_from_slice(&s[r.start * w..r.end * w]);
                    }
                }
            }
            if let (Some(b), Some(all)) = (own.beta.as_mut(), run.beta.as_ref()) {
                let (k, k_all) = (b.constraints.len(), all.constraints.len());
                for (j, c) in b.constraints.iter().enumerate() {
                    let Some(u) = all.constraints.iter().position(|x| x == c) else { continue };
                    for row in 0..r.len() {
                        b.values[row * k + j] = all.values[(r.start + row) * k_all + u];
                    }
                }
            }
            own
        })
        .collect()
}

/// The final bound of `run`'s side computed with the parameters of `run`, and the
/// gradient of the sum of those bounds with respect to every parameter of the run
/// (same layout as `run`): the building block of the optimizer, public for tests and
/// custom optimizers. `run` must have the layout [`compute_bounds_optimized`](crate::compute_bounds_optimized) returns
/// for the same request.
pub fn bound_and_gradient<T: Scalar>(
    graph: &Graph<T>,
    inputs: &[InputValue<T>],
    opts: &BoundOptions,
    req: &BoundRequest<'_, T>,
    run: &AlphaRun<T>,
) -> Result<(Vec<T>, AlphaRun<T>)> {
    let opts = BoundOptions { method: Method::AlphaCrown, ..opts.clone() };
    let mut st = State::new(graph, inputs, &opts)?;
    let target = st.check_request(req)?;
    if !st.perturbed[target] {
        return Err(Error::Invalid("the bounded node is not perturbed: there is nothing to optimize".into()));
    }
    let c = LinearA::both(st.spec_mat(target, req), !run.upper, run.upper);
    let layout = st.init_run(target, &c, run.upper)?;
    if !layout.same_layout(run) {
        return Err(Error::Invalid(
            "the parameters were made for another node, specification or model".into(),
        ));
    }
    let mut run = run.clone();
    let ev = st.evaluate_run(target, &c, &mut run, true, false, &affine_cache(graph.len()))?;
    let mut grad = run;
    let mut g = ev.grads.into_iter();
    for (_, p) in grad.params_mut() {
        *p = g.next().expect("one gradient per parameter vector");
    }
    Ok((ev.bounds, grad))
}

/// Per-coordinate Adam moments (torch's `Adam`), in the order of `params_mut`.
struct Adam<T> {
    t: i32,
    m: Vec<Vec<T>>,
    v: Vec<Vec<T>>,
}

impl<T: Scalar> Adam<T> {
    fn new(run: &mut AlphaRun<T>) -> Self {
        let m: Vec<Vec<T>> = run.params_mut().map(|(_, p)| vec![T::zero(); p.len()]).collect();
        Adam { t: 0, v: m.clone(), m }
    }

    /// One step along `dir · grad` (ascent for a lower bound, descent for an upper one),
    /// with the learning rates of iteration `it` (α's and β's, decayed).
    fn step(&mut self, run: &mut AlphaRun<T>, grads: Vec<Vec<T>>, it: usize, dir: T, o: &OptimizeOptions) {
        self.t += 1;
        let (b1, b2) = (T::from_f64(o.adam_beta1), T::from_f64(o.adam_beta2));
        let c1 = T::one() - b1.powi(self.t);
        let c2 = T::one() - b2.powi(self.t);
        let decay = o.lr_decay.powi(it as i32);
        let eps = T::from_f64(o.adam_eps);
        let (a1, a2) = (T::one() - b1, T::one() - b2);
        let inv_c2 = T::one() / c2;
        for (k, ((is_beta, p), g)) in run.params_mut().zip(grads).enumerate() {
            let lr = T::from_f64(if is_beta { o.lr_beta } else { o.lr_alpha } * decay);
            // `dir · lr / c1` folded: the step is `s · m / (√(v / c2) + eps)`.
            let s = dir * lr / c1;
            let (m, v) = (&mut self.m[k], &mut self.v[k]);
            // Branch-free so that it vectorizes: an element no coefficient reached
            // (zero gradient and moments) takes a zero step.
            for ((pi, &gi), (mi, vi)) in p.iter_mut().zip(&g).zip(m.iter_mut().zip(v.iter_mut())) {
                *mi = b1 * *mi + a1 * gi;
                *vi = b2 * *vi + a2 * gi * gi;
                let step = s * *mi / ((*vi * inv_c2).sqrt() + eps);
                *pi = if step.is_finite() { *pi + step } else { *pi };
            }
        }
    }
}

/// Linear bounds of the target in terms of its perturbed roots: the coefficients per
/// root node and the bias.
type RootForms<T> = (Vec<(NodeId, LinearA<T>)>, LinearBias<T>, Vec<(NodeId, LinearA<T>)>);

/// One evaluation of a run.
struct Eval<T: Scalar> {
    /// The final bounds of the run's side.
    bounds: Vec<T>,
    /// Gradients in the order of `AlphaRun::params_mut` (empty without `need_grad`).
    grads: Vec<Vec<T>>,
    linear: Option<RootForms<T>>,
}

/// How an intermediate node gets its bounds.
enum Plan<T> {
    Done(Bounds<T>),
    /// A backward pass over these rows, intersected with the IBP reference.
    Rows(Bounds<T>, Vec<usize>),
}

/// One side's coefficient matrix.
fn side_of<T: Scalar>(a: &LinearA<T>, upper: bool) -> Option<&Mat<T>> {
    if upper { a.upper.as_ref() } else { a.lower.as_ref() }
}

/// Dense form of coefficients that may be windowed.
fn densified<T: Scalar>(a: &LinearA<T>) -> Cow<'_, LinearA<T>> {
    if a.window.is_some() { Cow::Owned(a.clone().into_dense()) } else { Cow::Borrowed(a) }
}

fn slots<T>(nodes: &[AlphaNode<T>], len: usize) -> Vec<Option<usize>> {
    let mut slot = vec![None; len];
    for (k, n) in nodes.iter().enumerate() {
        slot[n.node] = Some(k);
    }
    slot
}

impl<'g, T: Scalar> State<'g, T> {
    /// Nodes of the cone of `target` whose bounds some relaxation needs, in order (as
    /// [`State::ensure_bounds`]).
    fn needed_nodes(&self, target: NodeId) -> Vec<NodeId> {
        let cone = self.cone(target);
        let mut needed = vec![false; target + 1];
        for (id, &in_cone) in cone.iter().enumerate() {
            if !in_cone {
                continue;
            }
            if let Some(op) = self.graph.node(id).op() {
                for &k in op.needs_input_bounds() {
                    if let Some(&i) = self.graph.node(id).inputs.get(k) {
                        needed[i] |= self.perturbed[i];
                    }
                }
            }
        }
        (0..=target).filter(|&i| needed[i]).collect()
    }

    /// How node `id` is bounded, mirroring [`State::intermediate_bounds`] for CROWN.
    fn plan(&self, id: NodeId) -> Result<Plan<T>> {
        let node = self.graph.node(id);
        let Some(op) = node.op() else {
            return Ok(Plan::Done(self.input_interval(id)));
        };
        if let Some(b) = self.fixed(id) {
            return Ok(Plan::Done(b));
        }
        let inputs_bounded = node.inputs.iter().all(|&i| !self.perturbed[i] || self.bounds[i].is_some());
        if op.interval_is_tight() && inputs_bounded {
            return Ok(Plan::Done(self.ibp_one(id, &vec![None; id + 1])?));
        }
        let reference = self.constrain(id, self.ibp(id)?);
        if let Some(root) = self.single_perturbed_root(id)
            && self.ptb[root].expect("root").is_box()
        {
            return Ok(Plan::Done(reference));
        }
        let rows = self.rows_to_refine(id, &reference);
        if rows.is_empty() {
            return Ok(Plan::Done(reference));
        }
        Ok(Plan::Rows(reference, rows))
    }

    fn optimizable(&self, id: NodeId) -> Option<&'g dyn OptimizableRelaxation<T>> {
        self.graph.node(id).op().and_then(|op| op.optimizable())
    }

    /// CROWN-initialized parameters of the optimizable nodes of the cone of `start`,
    /// from the current bounds.
    fn init_nodes(&self, start: NodeId, rows: usize, lower: bool, upper: bool) -> Result<Vec<AlphaNode<T>>> {
        let cone = self.cone(start);
        let mut nodes = Vec::new();
        for (id, &in_cone) in cone.iter().enumerate() {
            if !in_cone {
                continue;
            }
            let Some(opt) = self.optimizable(id) else { continue };
            let row = self.with_ctx(id, |ctx| opt.init_params(ctx))?;
            let full = || -> Vec<T> { (0..rows).flat_map(|_| row.iter().copied()).collect() };
            nodes.push(AlphaNode {
                node: id,
                width: row.len(),
                lower: lower.then(full),
                upper: upper.then(full),
            });
        }
        Ok(nodes)
    }

    fn project(&self, nodes: &mut [AlphaNode<T>]) -> Result<()> {
        for n in nodes {
            let opt = self
                .optimizable(n.node)
                .ok_or_else(|| Error::Invalid(format!("node {} has no optimizable relaxation", n.node)))?;
            let w = n.width.max(1);
            for p in [&mut n.lower, &mut n.upper].into_iter().flatten() {
                let rows = p.len() / w;
                self.for_groups(n.node, rows, |r, ctx| {
                    for row in p[r.start * w..r.end * w].chunks_mut(w) {
                        opt.project(ctx, row);
                    }
                    Ok(())
                })?;
            }
        }
        Ok(())
    }

    fn reset_bounds(&mut self) {
        self.bounds.iter_mut().for_each(|b| *b = None);
    }

    /// The passes of a run and their CROWN-initialized parameters.
    fn init_run(&mut self, target: NodeId, c: &LinearA<T>, upper: bool) -> Result<AlphaRun<T>> {
        self.reset_bounds();
        let mut passes = Vec::new();
        for id in self.needed_nodes(target) {
            let b = match self.plan(id)? {
                Plan::Done(b) => b,
                Plan::Rows(reference, rows) => {
                    let nodes = self.init_nodes(id, rows.len(), true, true)?;
                    let pass = AlphaPass { start: id, rows, nodes };
                    let (b, _) = self.intermediate_pass(&pass, reference, false)?;
                    passes.push(pass);
                    b
                }
            };
            self.bounds[id] = Some(self.constrain(id, b));
        }
        let spec = c.spec();
        let nodes = self.init_nodes(target, spec, !upper, upper)?;
        passes.push(AlphaPass { start: target, rows: (0..spec).collect(), nodes });
        let cone = self.cone(target);
        let constraints: Vec<NodeConstraint> = self
            .opts
            .constraints
            .iter()
            .flat_map(|cs| cs.iter())
            .filter(|c| cone.get(c.node).copied().unwrap_or(false))
            .copied()
            .collect();
        let beta = (!constraints.is_empty())
            .then(|| BetaParams { values: vec![T::zero(); spec * constraints.len()], constraints });
        Ok(AlphaRun { upper, passes, beta })
    }

    /// Bounds of an intermediate node from its pass, intersected with `reference`.
    fn intermediate_pass(
        &self,
        pass: &AlphaPass<T>,
        reference: Bounds<T>,
        record: bool,
    ) -> Result<(Bounds<T>, PassRecord<T>)> {
        let id = pass.start;
        let a = self.selection_coeffs(id, &pass.rows);
        let Swept { roots, bias, recorded } =
            self.sweep(id, a, self.par, &self.hooks(&pass.nodes, record, None))?;
        let (cl, cu) = self.concretize(&roots, &bias, true, true);
        self.check_finite(id, &cl, "intermediate lower")?;
        self.check_finite(id, &cu, "intermediate upper")?;
        let (mut lo, mut hi) = reference;
        let mut active = [vec![false; pass.rows.len()], vec![false; pass.rows.len()]];
        for (r, &j) in pass.rows.iter().enumerate() {
            if cl[r] >= lo[j] {
                lo[j] = cl[r];
                active[0][r] = true;
            }
            if cu[r] <= hi[j] {
                hi[j] = cu[r];
                active[1][r] = true;
            }
        }
        Ok(((lo, hi), PassRecord { roots, recorded, active }))
    }

    /// Optimize one side: projected Adam over every pass's parameters.
    #[allow(clippy::type_complexity)]
    fn optimize_run(
        &mut self,
        target: NodeId,
        c: &LinearA<T>,
        upper: bool,
        warm: Option<&AlphaRun<T>>,
        o: &OptimizeOptions,
        keep_linear: bool,
    ) -> Result<(Vec<T>, AlphaRun<T>, Option<RootForms<T>>)> {
        let mut run = self.init_run(target, c, upper)?;
        if let Some(w) = warm {
            run.warm_start(w);
        }
        self.optimize(target, c, run, o, keep_linear)
    }

    /// Projected Adam from the parameters `run` (see [`State::optimize_run`]).
    #[allow(clippy::type_complexity)]
    fn optimize(
        &mut self,
        target: NodeId,
        c: &LinearA<T>,
        mut run: AlphaRun<T>,
        o: &OptimizeOptions,
        keep_linear: bool,
    ) -> Result<(Vec<T>, AlphaRun<T>, Option<RootForms<T>>)> {
        let upper = run.upper;
        let cache = affine_cache(self.graph.len());
        let iterations = o.iterations.max(1);
        let mut adam = Adam::new(&mut run);
        let better = |a: T, b: T| if upper { a < b } else { a > b };
        // The best iteration by the sum of the bounds is chosen per row group (per
        // domain of a batch: what it would be alone).
        let groups: Vec<std::ops::Range<usize>> =
            self.groups.as_ref().map_or_else(|| std::iter::once(0..c.spec()).collect(), |g| g.ranges.clone());
        let mut best: Option<Vec<T>> = None;
        let mut best_run = run.clone();
        let mut best_sum = vec![T::zero(); groups.len()];
        let mut last = Vec::new();
        let mut since_improved = 0;
        // With `keep_linear`, the linear forms (and bounds) of the iteration returned:
        // the best by the sum (`keep_best`) or the last, kept as they are evaluated.
        let mut linear: Option<(Vec<T>, RootForms<T>)> = None;
        for it in 0..iterations {
            let need_grad = it + 1 < iterations;
            let mut ev = self.evaluate_run(target, c, &mut run, need_grad, keep_linear, &cache)?;
            let sums: Vec<T> =
                groups.iter().map(|r| ev.bounds[r.clone()].iter().fold(T::zero(), |a, &b| a + b)).collect();
            let wins: Vec<bool> =
                (0..groups.len()).map(|g| best.is_none() || better(sums[g], best_sum[g])).collect();
            if let Some(lin) = ev.linear.take() {
                match &mut linear {
                    Some((b, l)) if groups.len() > 1 => {
                        for (r, &w) in groups.iter().zip(&wins) {
                            if w || !o.keep_best {
                                b[r.clone()].copy_from_slice(&ev.bounds[r.clone()]);
                                copy_form_rows(l, &lin, r.clone());
                            }
                        }
                    }
                    _ if !o.keep_best || wins[0] => linear = Some((ev.bounds.clone(), lin)),
                    _ => {}
                }
            }
            for (g, r) in groups.iter().enumerate() {
                if wins[g] {
                    best_sum[g] = sums[g];
                    if groups.len() == 1 {
                        best_run = run.clone();
                    } else {
                        copy_run_rows(&mut best_run, &run, r.clone());
                    }
                }
            }
            let improved = match &mut best {
                None => {
                    best = Some(ev.bounds.clone());
                    true
                }
                Some(b) => {
                    let mut any = false;
                    for (x, &y) in b.iter_mut().zip(&ev.bounds) {
                        if better(y, *x) {
                            *x = y;
                            any = true;
                        }
                    }
                    any
                }
            };
            last = ev.bounds;
            since_improved = if improved { 0 } else { since_improved + 1 };
            let late = o.deadline.is_some_and(|d| std::time::Instant::now() >= d);
            if !need_grad || late || (o.early_stop_patience > 0 && since_improved >= o.early_stop_patience) {
                break;
            }
            let dir = if upper { -T::one() } else { T::one() };
            adam.step(&mut run, ev.grads, it, dir, o);
        }
        let (bounds, run) =
            if o.keep_best { (best.expect("one iteration ran"), best_run) } else { (last, run) };
        Ok(match linear {
            Some((bounds, lin)) => (bounds, run, Some(lin)),
            None => (bounds, run, None),
        })
    }

    /// One evaluation of a run: intermediate bounds with their passes' parameters, then
    /// the final bound; with `need_grad`, the gradient of the sum of the final bounds
    /// with respect to every parameter (in the order of `AlphaRun::params_mut`).
    fn evaluate_run(
        &mut self,
        target: NodeId,
        c: &LinearA<T>,
        run: &mut AlphaRun<T>,
        need_grad: bool,
        keep_linear: bool,
        cache: &AffineCache<T>,
    ) -> Result<Eval<T>> {
        let last = run.passes.len() - 1;
        let mut records: Vec<Option<PassRecord<T>>> = (0..=last).map(|_| None).collect();
        let mut next = 0;
        // A batch's groups keep the bounds they came with (one pass: the final one).
        let needed = if self.groups.is_some() { vec![] } else { self.needed_nodes(target) };
        if self.groups.is_none() {
            self.reset_bounds();
        }
        for id in needed {
            let b = if next < last && run.passes[next].start == id {
                let reference = self.constrain(id, self.ibp(id)?);
                self.project(&mut run.passes[next].nodes)?;
                let (b, rec) = self.intermediate_pass(&run.passes[next], reference, need_grad)?;
                records[next] = Some(rec);
                next += 1;
                b
            } else {
                self.intermediate_bounds(id)?
            };
            self.bounds[id] = Some(self.constrain(id, b));
        }
        if next != last {
            return Err(Error::Invalid("the parameters do not match the model's intermediate bounds".into()));
        }
        self.project(&mut run.passes[last].nodes)?;
        if let Some(b) = run.beta.as_mut() {
            // β's feasible set: β ≥ 0 (NaN, which no step should make, becomes 0).
            b.values.iter_mut().for_each(|v| *v = if *v > T::zero() { *v } else { T::zero() });
            if let Some(g) = &self.groups {
                g.mask_beta(b);
            }
        }
        let hooks = self.hooks(&run.passes[last].nodes, need_grad || keep_linear, run.beta.as_ref());
        let Swept { roots, bias, recorded } = self.sweep(target, c.clone(), self.par, &hooks)?;
        let (lo, hi) = self.concretize(&roots, &bias, !run.upper, run.upper);
        let bounds = if run.upper { hi } else { lo };
        self.check_finite(target, &bounds, if run.upper { "upper" } else { "lower" })?;
        let spec = bounds.len();
        records[last] = Some(PassRecord { roots, recorded, active: [vec![true; spec], vec![true; spec]] });
        let grads = if need_grad { self.reverse(run, &records, cache)? } else { vec![] };
        let linear = if keep_linear {
            let rec = records[last].take().expect("final record");
            Some((
                rec.roots.into_iter().map(|(i, a)| (i, a.into_dense())).collect(),
                bias,
                super::node_forms(rec.recorded),
            ))
        } else {
            None
        };
        Ok(Eval { bounds, grads, linear })
    }

    /// The sweep hooks of a pass: the parameters of its optimizable nodes, recording
    /// on request, and the constraints' terms with `beta` (final pass only).
    fn hooks<'a>(
        &self,
        nodes: &'a [AlphaNode<T>],
        record: bool,
        beta: Option<&'a BetaParams<T>>,
    ) -> SweepHooks<'a, T> {
        let mut params = vec![None; nodes.iter().map(|n| n.node + 1).max().unwrap_or(0)];
        for n in nodes {
            params[n.node] = Some(SideParams { lower: n.lower.as_deref(), upper: n.upper.as_deref() });
        }
        let terms = beta.map(|b| ConstraintTerms { constraints: &b.constraints, beta: &b.values });
        SweepHooks { params, record, terms }
    }
}

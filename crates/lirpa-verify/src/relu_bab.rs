//! ReLU-split branch and bound, for inputs too large to split (MNIST, CIFAR).
//!
//! A domain is the set of inputs of the region's box whose ReLU inputs satisfy a list
//! of split constraints ([`Split`]: element `i` of a ReLU input node is `>= 0`, the
//! ReLU *active*, or `<= 0`, *inactive*), with the disjuncts not yet proven on it.
//! The engine enforces the constraints through [`NodeBounds`]: every bound it computes
//! for a split node is intersected with them (active: `lower = max(lower, 0)`,
//! inactive: `upper = min(upper, 0)`), so later layers' intermediate bounds and the
//! final bound see them. A child domain also starts from its parent's intermediate
//! bounds (valid on the subset), which carries the root's α-CROWN intermediate bounds
//! down the tree. The two children of a split cover the parent (`z = 0` is in both),
//! so `unsat` needs every leaf proven (some row of every disjunct positive, or the
//! domain empty: some intermediate interval with `lower > upper`).
//!
//! **Bounding** ([`ClampBounder::beta`], the default): β-CROWN. Every split enters
//! the final bound as a constraint with a multiplier β ≥ 0 ([`lirpa::NodeConstraint`]),
//! optimized with α by a few warm-started Adam steps (a new split's β at 0); a domain
//! keeps its parent's intermediate bounds (the engine's `fixed_node_bounds`), so only
//! the final bound is computed. Without β ([`ClampBounder::new`]) the splits only
//! clamp intermediate bounds, recomputed per domain.
//!
//! **Branching** (BaBSR): the unstable neurons of the domain (`l < 0 < u`) are
//! ranked by the bound's loss at their relaxation, `−λ·t` for a negative coefficient
//! `λ` on the ReLU's output and the triangle's intercept `t = −l·u/(u−l)` (the
//! coefficients come with the domain's bound; by the triangle height alone when they
//! do not); the best [`ReluBabOptions::candidates`] are each tried (both children
//! bounded), and the one whose worse child is best is split; its children's bounds
//! are kept, so the chosen split costs nothing more.

use crate::{Counterexample, Progress, Region, Result, bab::BabResult};
use lirpa::{
    AlphaState, BoundOptions, BoundRequest, Graph, InputValue, Method, NodeBounds, NodeConstraint, NodeId,
    Perturbation,
};
use rayon::prelude::*;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// One split constraint: element `index` of node `node` (the input of a split
/// activation) is `>= threshold` (`active`) or `<= threshold`; a ReLU split has
/// threshold 0.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Split {
    pub node: NodeId,
    pub index: usize,
    pub active: bool,
    pub threshold: f64,
}

impl Split {
    /// A ReLU split: `z >= 0` (`active`) or `z <= 0`.
    pub fn relu(node: NodeId, index: usize, active: bool) -> Split {
        Split { node, index, active, threshold: 0.0 }
    }

    /// Whether pre-activation values `z` (of every node, as `Graph::forward_all`)
    /// satisfy the constraint.
    pub fn holds(&self, z: &[Vec<f64>]) -> bool {
        self.constraint().holds(z[self.node][self.index])
    }

    /// The split as an engine constraint.
    pub fn constraint(&self) -> NodeConstraint {
        NodeConstraint { node: self.node, index: self.index, ge: self.active, threshold: self.threshold }
    }

    /// Apply the constraint to `nb` (the intermediate bounds of a domain).
    pub fn apply(&self, nb: &mut NodeBounds) {
        let t = self.threshold;
        match nb.nodes.iter_mut().find(|(id, _, _)| *id == self.node) {
            Some((_, l, u)) => {
                if self.active {
                    l[self.index] = l[self.index].max(t);
                } else {
                    u[self.index] = u[self.index].min(t);
                }
            }
            None => {
                // Not bounded yet by the parent: add a row of infinities (the graph size
                // is not known here, so the vectors are grown to the index).
                let n = self.index + 1;
                let mut l = vec![f64::NEG_INFINITY; n];
                let mut u = vec![f64::INFINITY; n];
                if self.active {
                    l[self.index] = t;
                } else {
                    u[self.index] = t;
                }
                nb.nodes.push((self.node, l, u));
            }
        }
    }
}

/// The inputs of the graph's ReLU nodes.
pub fn relu_inputs(g: &Graph<f64>) -> Vec<NodeId> {
    let mut v: Vec<NodeId> = g
        .nodes()
        .iter()
        .filter(|n| n.op().is_some_and(|op| op.is_splittable_activation()))
        .filter_map(|n| n.inputs.first().copied())
        .collect();
    v.sort_unstable();
    v.dedup();
    v
}

/// Where the elements of a split node are split.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SplitKind {
    /// At 0, the kink of a piecewise-linear activation: each side is exact.
    Kink,
    /// At the midpoint of the element's interval (general branching, GenBaB): each
    /// side gets a tighter relaxation of a smooth activation.
    Midpoint,
}

/// The nodes whose elements branch and bound splits: ReLU inputs at their kink, and
/// the inputs of the other element-wise relaxed operators (one input, as many
/// elements, a relaxation that reads the input's bounds) at the midpoint.
pub fn split_nodes(g: &Graph<f64>) -> Vec<(NodeId, SplitKind)> {
    let relu = relu_inputs(g);
    let mut v: Vec<(NodeId, SplitKind)> = relu.iter().map(|&n| (n, SplitKind::Kink)).collect();
    for n in g.nodes() {
        let Some(op) = n.op() else { continue };
        let [input] = n.inputs.as_slice() else { continue };
        if op.is_affine()
            || op.needs_input_bounds() != [0]
            || g.node(*input).numel() != n.numel()
            || v.iter().any(|(id, _)| id == input)
        {
            continue;
        }
        v.push((*input, SplitKind::Midpoint));
    }
    v.sort_unstable_by_key(|(id, _)| *id);
    v
}

/// Narrowest interval a midpoint split still halves, relative to its magnitude.
const MIN_SPLIT_WIDTH: f64 = 1e-4;

/// The split of element `j` of a node of kind `kind` with bounds `[l, u]`, if any (a
/// ReLU input only while unstable).
fn split_at(kind: SplitKind, node: NodeId, j: usize, l: f64, u: f64) -> Option<Split> {
    match kind {
        SplitKind::Kink => (l < 0.0 && u > 0.0).then(|| Split::relu(node, j, true)),
        SplitKind::Midpoint => (u - l > MIN_SPLIT_WIDTH * (1.0 + l.abs().max(u.abs()))).then_some(Split {
            node,
            index: j,
            active: true,
            threshold: 0.5 * (l + u),
        }),
    }
}

/// Bounds of one domain.
#[derive(Clone, Debug)]
pub struct DomainBound {
    /// Lower bounds of the specification rows.
    pub lower: Vec<f64>,
    /// The input corners minimizing each row's linear lower bound (the signs of its
    /// coefficients w.r.t. the input): counterexample candidates.
    pub corners: Option<Corners>,
    /// Intermediate bounds computed on the domain (split constraints included).
    pub intermediate: Arc<NodeBounds>,
    /// Some intermediate interval is empty: no input satisfies the splits.
    pub infeasible: bool,
    /// α-CROWN parameters, for warm-starting the children (in `f32`: half the memory
    /// of a waiting domain; any value is projected onto its feasible set before use).
    pub alpha: Option<Arc<AlphaState<f32>>>,
    /// The best split candidates by their score (BaBSR-like, see `split_scores`), best
    /// first; empty when the bounder gives no coefficients.
    pub scores: Vec<(Split, f64)>,
}

/// Per row of a bound, the corner of the input box minimizing its linear lower bound:
/// one bit per input, set where the row's coefficient is positive (the lower end).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Corners {
    rows: usize,
    inputs: usize,
    bits: Vec<u64>,
}

impl Corners {
    /// The corners of the rows of `a` (rows × inputs).
    pub fn new(a: faer::MatRef<'_, f64>) -> Corners {
        let (rows, n) = (a.nrows(), a.ncols());
        let mut c = Corners { rows, inputs: n, bits: vec![0u64; (rows * n).div_ceil(64)] };
        for i in 0..rows {
            for j in 0..n {
                if a[(i, j)] > 0.0 {
                    c.set(i * n + j);
                }
            }
        }
        c
    }

    fn set(&mut self, k: usize) {
        self.bits[k / 64] |= 1 << (k % 64);
    }

    fn bit(&self, k: usize) -> bool {
        self.bits.get(k / 64).is_some_and(|w| w >> (k % 64) & 1 == 1)
    }

    /// Rows held.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Row `r`'s corner of the box `[lower, upper]`.
    pub fn point(&self, r: usize, lower: &[f64], upper: &[f64]) -> Vec<f64> {
        let n = self.inputs;
        (0..n.min(lower.len())).map(|j| if self.bit(r * n + j) { lower[j] } else { upper[j] }).collect()
    }

    /// The corners of rows `rows`, in that order.
    fn select(&self, rows: &[usize]) -> Corners {
        let n = self.inputs;
        let mut c = Corners { rows: rows.len(), inputs: n, bits: vec![0u64; (rows.len() * n).div_ceil(64)] };
        for (i, &r) in rows.iter().enumerate() {
            for j in 0..n {
                if self.bit(r * n + j) {
                    c.set(i * n + j);
                }
            }
        }
        c
    }

    fn bytes(&self) -> usize {
        8 * self.bits.len()
    }
}

/// Candidates kept per domain.
const SCORED: usize = 32;

/// Scores of the candidate splits of the relaxed nodes whose coefficients `node_a`
/// the bound recorded, from the coefficient `λ` each element's output received (summed
/// over the specification rows). At a kink (ReLU, BaBSR's intercept score): the bound
/// loses `λ·t` where a negative `λ` meets the upper line's intercept
/// `t = −l·u/(u−l)`, and the split removes it. At a midpoint (a smooth activation):
/// `|λ|·(u−l)²`, the order of the relaxation's gap. The [`SCORED`] best, best first.
fn split_scores(
    graph: &Graph<f64>,
    kinds: &[(NodeId, SplitKind)],
    node_a: &[(NodeId, lirpa::LinearA<f64>)],
    inter: &lirpa::IntermediateBounds<f64>,
) -> Vec<(Split, f64)> {
    let mut out = Vec::new();
    for (id, a) in node_a {
        let (Some(&v), Some(m)) = (graph.node(*id).inputs.first(), a.lower.as_ref()) else { continue };
        let Some(&(_, kind)) = kinds.iter().find(|(n, _)| *n == v) else { continue };
        let Some(Some((l, u))) = inter.get(v) else { continue };
        if m.ncols() != l.len() {
            continue;
        }
        for j in 0..l.len() {
            let Some(split) = split_at(kind, v, j, l[j], u[j]) else { continue };
            let score = match kind {
                SplitKind::Kink => {
                    let t = -l[j] * u[j] / (u[j] - l[j]);
                    t * (0..m.nrows()).map(|r| (-m[(r, j)]).max(0.0)).sum::<f64>()
                }
                SplitKind::Midpoint => {
                    (u[j] - l[j]).powi(2) * (0..m.nrows()).map(|r| m[(r, j)].abs()).sum::<f64>()
                }
            };
            out.push((split, score));
        }
    }
    out.sort_by(|a, b| b.1.total_cmp(&a.1));
    out.truncate(SCORED);
    out
}

/// [`SplitBounder::bound`] of each query, in parallel (one thread each), in order.
fn bound_each<B: SplitBounder + ?Sized>(
    b: &B,
    lower: &[f64],
    upper: &[f64],
    queries: &[Query<'_>],
) -> Result<Vec<DomainBound>> {
    queries.par_iter().map(|q| b.bound(lower, upper, &q.c, Some(&q.known), &q.splits, q.warm)).collect()
}

/// One sub-domain to bound in a batch ([`SplitBounder::bound_batch`]): the arguments
/// of [`SplitBounder::bound`] but the box.
pub struct Query<'a> {
    pub c: Vec<&'a [f64]>,
    pub known: Arc<NodeBounds>,
    pub splits: Vec<Split>,
    pub warm: Option<&'a AlphaState<f64>>,
}

/// A sound bounding method for split domains: for every `x` of the box whose ReLU
/// inputs satisfy `splits`, `C·f(x) >= lower`. `known` holds intermediate bounds valid
/// on the domain (the parent's, with the splits applied); the bounder must keep them.
pub trait SplitBounder: Sync {
    /// [`bound`](Self::bound) for each query, in order (an error of any fails the
    /// batch); by default the queries in parallel, one thread each.
    fn bound_batch(&self, lower: &[f64], upper: &[f64], queries: &[Query<'_>]) -> Result<Vec<DomainBound>> {
        bound_each(self, lower, upper, queries)
    }

    fn bound(
        &self,
        lower: &[f64],
        upper: &[f64],
        c: &[&[f64]],
        known: Option<&Arc<NodeBounds>>,
        splits: &[Split],
        warm: Option<&AlphaState<f64>>,
    ) -> Result<DomainBound>;

    /// A cheaper sound bound of the same domain, for ranking split candidates
    /// (filtered smart branching); the bound itself by default.
    #[allow(clippy::too_many_arguments)]
    fn screen(
        &self,
        lower: &[f64],
        upper: &[f64],
        c: &[&[f64]],
        known: Option<&Arc<NodeBounds>>,
        splits: &[Split],
        warm: Option<&AlphaState<f64>>,
    ) -> Result<DomainBound> {
        self.bound(lower, upper, c, known, splits, warm)
    }
}

/// CROWN or α-CROWN with the split constraints applied to intermediate bounds, or
/// β-CROWN ([`ClampBounder::beta`]).
pub struct ClampBounder<'g> {
    graph: &'g Graph<f64>,
    opts: BoundOptions,
    beta: bool,
    /// The split nodes, for the candidates' scores.
    kinds: Vec<(NodeId, SplitKind)>,
}

impl ClampBounder<'_> {
    /// The same bounder with floating-point-sound bounds ([`BoundOptions::fp_sound`]).
    pub fn fp_sound(mut self, mode: lirpa::core::FpSound) -> Self {
        self.opts.fp_sound = mode;
        self
    }
}

impl<'g> ClampBounder<'g> {
    /// `method` CROWN or α-CROWN (`iterations` of it, iterating no later than
    /// `deadline`), `threads` as `BoundOptions`: the splits only clamp intermediate
    /// bounds, which are recomputed on every domain.
    pub fn new(
        graph: &'g Graph<f64>,
        method: Method,
        iterations: usize,
        threads: usize,
        deadline: Option<std::time::Instant>,
    ) -> Self {
        let mut opts = BoundOptions { threads, ..BoundOptions::with_method(method) };
        opts.optimize.iterations = iterations;
        opts.optimize.deadline = deadline;
        ClampBounder { graph, opts, beta: false, kinds: split_nodes(graph) }
    }

    /// β-CROWN: every split enters the bound as a constraint with an optimized
    /// multiplier ([`lirpa::NodeConstraint`]), α and β by `iterations` of projected Adam
    /// (warm-started from the parent, a new split's β at 0); a domain keeps its parent's
    /// intermediate bounds (with its splits applied) instead of recomputing them, so
    /// only the final bound is computed.
    pub fn beta(
        graph: &'g Graph<f64>,
        iterations: usize,
        threads: usize,
        deadline: Option<std::time::Instant>,
    ) -> Self {
        let mut b = ClampBounder::new(graph, Method::AlphaCrown, iterations, threads, deadline);
        b.opts.fixed_node_bounds = true;
        b.opts.optimize.lr_alpha = BETA_LR_ALPHA;
        b.opts.optimize.lr_beta = BETA_LR_BETA;
        b.beta = true;
        b
    }
}

/// Learning rates of α and β in sub-domains (α,β-CROWN's branch-and-bound defaults:
/// α starts from the parent's optimized values, so it moves slowly).
const BETA_LR_ALPHA: f64 = 0.01;
const BETA_LR_BETA: f64 = 0.05;

impl SplitBounder for ClampBounder<'_> {
    /// One evaluation with the parent's α and β (no optimization step), no scores.
    fn screen(
        &self,
        lower: &[f64],
        upper: &[f64],
        c: &[&[f64]],
        known: Option<&Arc<NodeBounds>>,
        splits: &[Split],
        warm: Option<&AlphaState<f64>>,
    ) -> Result<DomainBound> {
        let mut cheap =
            ClampBounder { graph: self.graph, opts: self.opts.clone(), beta: self.beta, kinds: vec![] };
        cheap.opts.optimize.iterations = 1;
        cheap.bound(lower, upper, c, known, splits, warm)
    }

    fn bound(
        &self,
        lower: &[f64],
        upper: &[f64],
        c: &[&[f64]],
        known: Option<&Arc<NodeBounds>>,
        splits: &[Split],
        warm: Option<&AlphaState<f64>>,
    ) -> Result<DomainBound> {
        let cm = spec_matrix(c);
        let req =
            BoundRequest { node: None, c: Some(cm.as_ref()), lower: true, upper: false, return_a: true };
        let ptb = Perturbation::new_box(lower.to_vec(), upper.to_vec())?;
        let inputs = [InputValue::Perturbed(ptb)];
        // β-CROWN keeps given intermediate bounds: at the root, CROWN's.
        let known = match known {
            None if self.beta => Some(self.crown_intermediate(&inputs, &req)?),
            k => k.cloned(),
        };
        let mut opts = BoundOptions { node_bounds: known, ..self.opts.clone() };
        if self.beta && !splits.is_empty() {
            opts.constraints = Some(Arc::new(splits.iter().map(Split::constraint).collect()));
        }
        let (res, inter, alpha) = if opts.method == Method::AlphaCrown {
            let (r, st, b) = lirpa::compute_bounds_optimized_keep(self.graph, &inputs, &opts, &req, warm)?;
            (r, b, Some(st))
        } else {
            let (r, b) = lirpa::compute_bounds_keep(self.graph, &inputs, &opts, &req)?;
            (r, b, None)
        };
        Ok(self.domain_bound(res, inter, alpha))
    }

    /// β-CROWN bounds the batch in one engine call per thread of the pool (a share of
    /// the domains each), whose sweeps stack the domains' rows
    /// ([`lirpa::compute_bounds_optimized_batch`]).
    fn bound_batch(&self, lower: &[f64], upper: &[f64], queries: &[Query<'_>]) -> Result<Vec<DomainBound>> {
        if !self.beta || queries.len() < 2 {
            return bound_each(self, lower, upper, queries);
        }
        let inputs = [InputValue::Perturbed(Perturbation::new_box(lower.to_vec(), upper.to_vec())?)];
        let parts: Vec<Vec<DomainBound>> = balanced_parts(queries, rayon::current_num_threads())
            .into_par_iter()
            .map(|part| self.bound_stacked(&inputs, part))
            .collect::<Result<_>>()?;
        Ok(parts.into_iter().flatten().collect())
    }
}

/// `queries` cut into at most `threads` consecutive, non-empty parts with about equal
/// numbers of specification rows (a domain's cost is about proportional to its rows,
/// and domains differ in how many disjuncts are still open): the `k`-th cut is where
/// the running count of rows comes nearest to `k / threads` of them.
fn balanced_parts<'q, 'a>(queries: &'q [Query<'a>], threads: usize) -> Vec<&'q [Query<'a>]> {
    let n = queries.len();
    let threads = threads.clamp(1, n.max(1));
    // prefix[i]: rows of the first i queries.
    let mut prefix = Vec::with_capacity(n + 1);
    prefix.push(0usize);
    for q in queries {
        prefix.push(prefix[prefix.len() - 1] + q.c.len().max(1));
    }
    let total = prefix[n];
    let mut parts = Vec::with_capacity(threads);
    let mut start = 0;
    for k in 1..threads {
        // Leave at least one query for each part still to come (the range is never
        // empty: `threads <= n` and each earlier cut left enough).
        let cut = (start + 1..=n - (threads - k))
            .min_by_key(|&i| (prefix[i] * threads).abs_diff(k * total))
            .unwrap_or(start + 1);
        parts.push(&queries[start..cut]);
        start = cut;
    }
    if start < n {
        parts.push(&queries[start..]);
    }
    parts
}

/// The root bound of the split phase: α-CROWN with optimized intermediate bounds when
/// its parameters fit `max_params`. Otherwise the intermediate bounds of the last split
/// nodes whose parameters fit are optimized, the others keep CROWN's; with none, CROWN's
/// intermediate bounds with the final bound's α and β optimized (`final_only`, the
/// bound the sub-domains use). α-CROWN keeps one parameter per (unstable element of an
/// intermediate node, element of a relaxed node before it), plus optimizer state: on
/// the 4-block CIFAR ResNet that is gigabytes and seconds per iteration.
pub struct RootBounder<'g> {
    optimized: ClampBounder<'g>,
    final_only: ClampBounder<'g>,
    max_params: usize,
    /// Most α parameters of the partly optimized root.
    partial_params: usize,
    /// The box last planned, CROWN's intermediate bounds on it and the plan.
    planned: std::sync::Mutex<Option<Planned>>,
}

type Planned = (Vec<f64>, Vec<f64>, Arc<NodeBounds>, RootPlan);

/// What [`RootBounder`] does on a box.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RootPlan {
    /// α-CROWN with every intermediate bound optimized.
    Optimized,
    /// α-CROWN on the intermediate bounds of these split nodes, CROWN's elsewhere.
    Partial(Vec<NodeId>),
    /// CROWN's intermediate bounds, the final bound's α and β optimized.
    FinalOnly,
}

impl<'g> RootBounder<'g> {
    pub fn new(
        optimized: ClampBounder<'g>,
        final_only: ClampBounder<'g>,
        max_params: usize,
        partial_params: usize,
    ) -> Self {
        RootBounder { optimized, final_only, max_params, partial_params, planned: Default::default() }
    }

    /// What the root bound of the box `[lower, upper]` does, from CROWN's intermediate
    /// bounds and the α parameters they imply ([`alpha_params`]); computed once per box
    /// and kept for [`SplitBounder::bound`].
    pub fn plan(&self, lower: &[f64], upper: &[f64]) -> Result<RootPlan> {
        Ok(self.planned(lower, upper)?.1)
    }

    fn planned(&self, lower: &[f64], upper: &[f64]) -> Result<(Arc<NodeBounds>, RootPlan)> {
        let mut cache = self.planned.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((l, u, inter, plan)) = cache.as_ref()
            && l == lower
            && u == upper
        {
            return Ok((inter.clone(), plan.clone()));
        }
        let req = BoundRequest { node: None, c: None, lower: true, upper: false, return_a: false };
        let inputs = [InputValue::Perturbed(Perturbation::new_box(lower.to_vec(), upper.to_vec())?)];
        let inter = self.final_only.crown_intermediate(&inputs, &req)?;
        let per_node = alpha_params_per_node(self.graph(), &self.final_only.kinds, &inter);
        let plan = if total_params(&per_node) <= self.max_params {
            RootPlan::Optimized
        } else {
            // The last split nodes whose parameters fit (the deepest bounds are the
            // loosest), the others kept at CROWN's bounds.
            let mut used = 0usize;
            let mut chosen = Vec::new();
            for &(id, p) in per_node.iter().rev() {
                if p > 0 && used.saturating_add(p) <= self.partial_params {
                    used += p;
                    chosen.push(id);
                }
            }
            if chosen.is_empty() { RootPlan::FinalOnly } else { RootPlan::Partial(chosen) }
        };
        *cache = Some((lower.to_vec(), upper.to_vec(), inter.clone(), plan.clone()));
        Ok((inter, plan))
    }
}

/// About how many parameters α-CROWN with optimized intermediate bounds holds on
/// intermediate bounds `inter`: per split node, its unstable elements (those it
/// refines) times the elements of the split nodes before it (its cone's relaxed
/// nodes, for a chain or a residual network).
pub fn alpha_params(g: &Graph<f64>, kinds: &[(NodeId, SplitKind)], inter: &NodeBounds) -> usize {
    total_params(&alpha_params_per_node(g, kinds, inter))
}

fn total_params(per_node: &[(NodeId, usize)]) -> usize {
    per_node.iter().fold(0usize, |a, (_, p)| a.saturating_add(*p))
}

/// [`alpha_params`] per split node, in the order of `kinds`.
fn alpha_params_per_node(
    g: &Graph<f64>,
    kinds: &[(NodeId, SplitKind)],
    inter: &NodeBounds,
) -> Vec<(NodeId, usize)> {
    let mut before = 0usize;
    let mut out = Vec::with_capacity(kinds.len());
    for &(id, _) in kinds {
        let unstable = inter.get(id).map_or(g.node(id).numel(), |(l, u)| {
            l.iter().zip(u).filter(|(l, u)| **l < 0.0 && **u > 0.0).count()
        });
        out.push((id, unstable.saturating_mul(before)));
        before += g.node(id).numel();
    }
    out
}

impl SplitBounder for RootBounder<'_> {
    fn bound(
        &self,
        lower: &[f64],
        upper: &[f64],
        c: &[&[f64]],
        known: Option<&Arc<NodeBounds>>,
        splits: &[Split],
        warm: Option<&AlphaState<f64>>,
    ) -> Result<DomainBound> {
        if known.is_some() || !splits.is_empty() {
            return self.final_only.bound(lower, upper, c, known, splits, warm);
        }
        let (inter, plan) = self.planned(lower, upper)?;
        let chosen = match plan {
            // CROWN's bounds served only the plan: α-CROWN recomputes its own.
            RootPlan::Optimized => return self.optimized.bound(lower, upper, c, None, splits, warm),
            RootPlan::FinalOnly => return self.final_only.bound(lower, upper, c, Some(&inter), splits, warm),
            RootPlan::Partial(chosen) => chosen,
        };
        let kept = Arc::new(NodeBounds {
            nodes: inter.nodes.iter().filter(|(id, _, _)| !chosen.contains(id)).cloned().collect(),
        });
        let mut partial = ClampBounder {
            graph: self.graph(),
            opts: BoundOptions { fixed_node_bounds: true, ..self.optimized.opts.clone() },
            beta: false,
            kinds: self.optimized.kinds.clone(),
        };
        // Its iterations stop at a third of the time left: the rest is for the split.
        if let Some(d) = partial.opts.optimize.deadline {
            let now = Instant::now();
            partial.opts.optimize.deadline = Some(now + d.saturating_duration_since(now) / 3);
        }
        partial.bound(lower, upper, c, Some(&kept), splits, warm)
    }
}

impl RootBounder<'_> {
    fn graph(&self) -> &Graph<f64> {
        self.final_only.graph
    }
}

/// The specification matrix of rows `c`.
fn spec_matrix(c: &[&[f64]]) -> faer::Mat<f64> {
    let n_out = c.first().map_or(0, |r| r.len());
    faer::Mat::<f64>::from_fn(c.len(), n_out, |i, j| c[i][j])
}

impl ClampBounder<'_> {
    /// CROWN's intermediate bounds (what β-CROWN keeps at the root).
    fn crown_intermediate(
        &self,
        inputs: &[InputValue<f64>],
        req: &BoundRequest<'_, f64>,
    ) -> Result<Arc<NodeBounds>> {
        let crown = BoundOptions { method: Method::Crown, ..self.opts.clone() };
        let (_, inter) = lirpa::compute_bounds_keep(self.graph, inputs, &crown, req)?;
        Ok(Arc::new(crate::bab::keep_bounds(inter)))
    }

    /// One engine call for `queries`, on one thread.
    fn bound_stacked(&self, inputs: &[InputValue<f64>], queries: &[Query<'_>]) -> Result<Vec<DomainBound>> {
        let specs: Vec<faer::Mat<f64>> = queries.iter().map(|q| spec_matrix(&q.c)).collect();
        let subs: Vec<lirpa::SubDomain<'_, f64>> = queries
            .iter()
            .zip(&specs)
            .map(|(q, c)| lirpa::SubDomain {
                c: c.as_ref(),
                node_bounds: Some(q.known.clone()),
                constraints: (!q.splits.is_empty())
                    .then(|| Arc::new(q.splits.iter().map(Split::constraint).collect())),
                warm: q.warm,
            })
            .collect();
        let req = BoundRequest { node: None, c: None, lower: true, upper: false, return_a: true };
        let opts = BoundOptions { threads: 1, ..self.opts.clone() };
        let out = lirpa::compute_bounds_optimized_batch(self.graph, inputs, &opts, &req, &subs)?;
        Ok(out.into_iter().map(|(r, st, inter)| self.domain_bound(r, inter, Some(st))).collect())
    }

    /// A domain's bound from the engine's result: infeasibility, split scores and the
    /// input coefficients (row-major) of the lower bounds.
    fn domain_bound(
        &self,
        res: lirpa::BoundResult<f64>,
        inter: lirpa::IntermediateBounds<f64>,
        alpha: Option<AlphaState<f64>>,
    ) -> DomainBound {
        let infeasible = NodeBounds::infeasible(&inter);
        let scores = split_scores(self.graph, &self.kinds, &res.node_a, &inter);
        let corners = res.a.first().and_then(|a| a.a.lower.as_ref()).map(|m| Corners::new(m.as_ref()));
        DomainBound {
            lower: res.lower,
            corners,
            intermediate: Arc::new(crate::bab::keep_bounds(inter)),
            infeasible,
            alpha: alpha.map(|a| Arc::new(a.cast())),
            scores,
        }
    }
}

/// Options of the ReLU-split loop.
#[derive(Clone, Debug)]
pub struct ReluBabOptions {
    /// Domains branched per parallel batch.
    pub batch: usize,
    /// Split candidates tried per domain (both children bounded for each).
    pub candidates: usize,
    /// Most domains waiting (a guard; the byte budget below is what binds).
    pub max_pending: usize,
    /// Most bytes the waiting domains may hold (their intermediate bounds, linear
    /// coefficients and α,β state): the cap on waiting domains is also this over the
    /// size of the root's children, so a deep network sheds with `unknown` before the
    /// machine runs out of memory.
    pub max_pending_bytes: usize,
    /// α,β iterations per sub-domain (warm-started from the parent; 0: CROWN); `None`:
    /// [`sub_iterations`] by the root bound.
    pub sub_iterations: Option<usize>,
    /// Filtered smart branching: the best this many candidates by score are ranked by
    /// a cheap bound of both their children ([`SplitBounder::screen`]) before the
    /// [`ReluBabOptions::candidates`] best of them are bounded fully (0 or 1: off, the
    /// default: with 3, mnistfc 256x2 prop_1_0.03 reached a worst bound of -0.58
    /// instead of -0.74 in 10 s, but prop_3_0.03 was no longer proven in 10 s and
    /// 256x4 prop_0_0.03 ended at -0.55 instead of -0.41).
    pub screen: usize,
    /// β-CROWN sub-domains ([`ClampBounder::beta`]); otherwise the splits only clamp
    /// recomputed intermediate bounds.
    pub beta: bool,
}

impl Default for ReluBabOptions {
    fn default() -> Self {
        // Measured on mnistfc 256x2 prop_1_0.03 (worst open bound after 10 s, one
        // core): β-CROWN sub-domains with the parent's intermediate bounds and BaBSR
        // branching reach -0.51 (3 iterations); clamping only (the earlier loop) -1.03;
        // recomputing optimized intermediate bounds per domain -0.78 (10x fewer
        // domains). Two or four candidates per split: no better.
        ReluBabOptions {
            batch: 16,
            candidates: 1,
            max_pending: 1_000_000,
            max_pending_bytes: 4 << 30,
            screen: 0,
            sub_iterations: None,
            beta: true,
        }
    }
}

/// α,β iterations per β-CROWN sub-domain by default, by whether the root optimized
/// every intermediate bound (full α-CROWN). With optimized intermediate bounds, the
/// parent's α is near its optimum and the new split's β (started at 0) needs the
/// iterations: oval21 cifar_base_kw img4631 is proven in 40 s with 6 (worst bound
/// −0.0052 at 60 s with 3); cifar_wide_kw img6762 ends at −0.011 instead of −0.024;
/// resnet_2b prop_10 takes the same time. Without them (CROWN's intermediate bounds
/// below the ResNets' α budget), domains count more than iterations: resnet_4b prop_0
/// ends at −0.081 with 6 and −0.066 with 3, prop_14 at −0.23 and −0.16 (60 s, two
/// threads). The cost elsewhere is small: mnistfc 256x2 prop_1_0.03 (α-CROWN root, 10 s,
/// one core) reached −0.51 with 3, −0.53 with 5, −0.56 with 10 (−0.89 with 1: no β
/// optimization).
pub fn sub_iterations(optimized_root: bool) -> usize {
    if optimized_root { 6 } else { 3 }
}

/// A domain with its bound.
struct Node {
    splits: Vec<Split>,
    bound: DomainBound,
    open: Vec<usize>,
    worst: f64,
    /// The domain's intermediate bounds are `bound.intermediate` (an ancestor's,
    /// shared) with every split of `splits` applied: what β-CROWN's sub-domains keep,
    /// stored once instead of once per waiting domain.
    derived: bool,
}

impl Node {
    /// The domain's intermediate bounds.
    fn intermediate(&self) -> std::borrow::Cow<'_, NodeBounds> {
        if !self.derived || self.splits.is_empty() {
            return std::borrow::Cow::Borrowed(&*self.bound.intermediate);
        }
        let mut known = (*self.bound.intermediate).clone();
        for s in &self.splits {
            s.apply(&mut known);
        }
        std::borrow::Cow::Owned(known)
    }

    /// The intermediate bounds and split list of the child of split `s`.
    fn child(&self, s: Split) -> (Arc<NodeBounds>, Vec<Split>) {
        let mut known = self.intermediate().into_owned();
        s.apply(&mut known);
        let mut splits = self.splits.clone();
        splits.push(s);
        (Arc::new(known), splits)
    }

    /// The child of this domain bounded by `bound` under `splits` (`known`: the
    /// intermediate bounds it was given). When the bound kept them as they were, the
    /// child shares this domain's intermediate bounds and derives its own from its
    /// splits.
    fn kid(
        &self,
        splits: Vec<Split>,
        known: &NodeBounds,
        mut bound: DomainBound,
        open: Vec<usize>,
        worst: f64,
    ) -> Node {
        let derived = *bound.intermediate == *known;
        if derived {
            bound.intermediate = self.bound.intermediate.clone();
        }
        Node { splits, bound, open, worst, derived }
    }

    /// About how many bytes the domain holds (what it shares with others counted too:
    /// an upper estimate).
    fn bytes(&self) -> usize {
        let f = std::mem::size_of::<f64>();
        let b = &self.bound;
        let inter: usize = if self.derived {
            0
        } else {
            b.intermediate.nodes.iter().map(|(_, l, u)| l.len() + u.len()).sum()
        };
        let alpha: usize = b.alpha.as_ref().map_or(0, |a| {
            a.runs
                .iter()
                .flat_map(|r| {
                    r.passes
                        .iter()
                        .flat_map(|p| p.nodes.iter())
                        .map(|n| n.lower.as_ref().map_or(0, Vec::len) + n.upper.as_ref().map_or(0, Vec::len))
                })
                .sum()
        });
        let beta: usize = b.alpha.as_ref().map_or(0, |a| {
            a.runs
                .iter()
                .filter_map(|r| r.beta.as_ref())
                .map(|b| b.values.len() + 4 * b.constraints.len())
                .sum()
        });
        f * (inter + b.lower.len())
            + std::mem::size_of::<f32>() * (alpha + beta)
            + b.corners.as_ref().map_or(0, Corners::bytes)
            + std::mem::size_of::<Split>() * self.splits.len()
            + std::mem::size_of::<Node>()
    }
}

/// A bound is accepted as a proof only above this margin (as in input split).
fn proof_tol(d: f64) -> f64 {
    1e-9 * (1.0 + d.abs())
}

/// Which disjuncts of `open` stay open under `bound` (rows stacked in `open`'s order),
/// and the worst best-row margin among them.
fn evaluate(region: &Region, open: &[usize], bound: &DomainBound) -> (Vec<usize>, f64) {
    if bound.infeasible {
        return (vec![], f64::INFINITY);
    }
    let mut still = Vec::new();
    let mut worst = f64::INFINITY;
    let mut r0 = 0;
    for &k in open {
        let d = &region.disjuncts[k].d;
        let mut best = f64::NEG_INFINITY;
        let mut proven = false;
        for (i, di) in d.iter().enumerate() {
            let m = bound.lower[r0 + i] - di;
            proven |= m > proof_tol(*di);
            best = best.max(m);
        }
        r0 += d.len();
        if !proven {
            still.push(k);
            worst = worst.min(best);
        }
    }
    (still, worst)
}

fn rows<'r>(region: &'r Region, open: &[usize]) -> Vec<&'r [f64]> {
    open.iter().flat_map(|&k| region.disjuncts[k].c.iter().map(Vec::as_slice)).collect()
}

/// Counterexample candidates of a domain: the corners minimizing each open
/// disjunct's first row's linear lower bound.
fn candidates_x(region: &Region, open: &[usize], bound: &DomainBound) -> Vec<Vec<f64>> {
    let Some(corners) = &bound.corners else { return vec![] };
    let mut out = Vec::new();
    let mut r0 = 0;
    for &k in open {
        let r = r0;
        r0 += region.disjuncts[k].d.len();
        if r >= corners.rows() {
            break;
        }
        out.push(corners.point(r, &region.lower, &region.upper));
    }
    out
}

enum Branched {
    Children(Vec<Node>),
    Cex(Counterexample),
    /// No unstable neuron left, with the worst margin.
    Stuck(f64),
    Deadline,
}

/// The splits a domain tries (best first, at most [`ReluBabOptions::candidates`]),
/// or why it cannot branch.
enum Plan {
    Try(Vec<Split>),
    Stuck(f64),
    Deadline,
}

fn choose(
    region: &Region,
    split_nodes: &[(NodeId, SplitKind)],
    node: &Node,
    bounder: &dyn SplitBounder,
    opts: &ReluBabOptions,
    warm: Option<&AlphaState<f64>>,
    deadline: Instant,
) -> Result<Plan> {
    // Candidates by their score where the bound gave one ([`split_scores`]),
    // otherwise by the height of a ReLU's triangle relaxation or an interval's width.
    let mut cand: Vec<(f64, Split)> = node
        .bound
        .scores
        .iter()
        .filter(|(sp, score)| split_nodes.iter().any(|(id, _)| *id == sp.node) && *score > 0.0)
        .map(|&(sp, score)| (score, sp))
        .collect();
    if cand.is_empty() {
        for (id, l, u) in &node.intermediate().nodes {
            let Some(&(_, kind)) = split_nodes.iter().find(|(n, _)| n == id) else { continue };
            for (i, (&l, &u)) in l.iter().zip(u).enumerate() {
                if let Some(sp) = split_at(kind, *id, i, l, u) {
                    let score = if kind == SplitKind::Kink { -l * u / (u - l) } else { u - l };
                    cand.push((score, sp));
                }
            }
        }
    }
    if cand.is_empty() {
        return Ok(Plan::Stuck(node.worst));
    }
    cand.sort_by(|a, b| b.0.total_cmp(&a.0));
    if opts.screen > 1 && cand.len() > 1 {
        // Rank the best-scored candidates by the worse of their children's cheap bounds.
        let c = rows(region, &node.open);
        cand.truncate(opts.screen);
        let mut ranked = Vec::with_capacity(cand.len());
        for (_, s) in cand {
            let mut worse = f64::INFINITY;
            for active in [true, false] {
                if Instant::now() >= deadline {
                    return Ok(Plan::Deadline);
                }
                let (known, splits) = node.child(Split { active, ..s });
                let b = bounder.screen(&region.lower, &region.upper, &c, Some(&known), &splits, warm)?;
                worse = worse.min(evaluate(region, &node.open, &b).1);
            }
            ranked.push((worse, s));
        }
        cand = ranked;
        cand.sort_by(|a, b| b.0.total_cmp(&a.0));
    }
    cand.truncate(opts.candidates.max(1));
    Ok(Plan::Try(cand.into_iter().map(|(_, s)| s).collect()))
}

/// Branch a batch of domains: each chooses its splits ([`choose`]), the children of
/// every candidate of every domain are bounded in one [`SplitBounder::bound_batch`],
/// and each domain keeps the candidate whose worse child is best (its children's
/// bounds are kept, so the chosen split costs nothing more).
fn branch_batch(
    region: &Region,
    split_nodes: &[(NodeId, SplitKind)],
    batch: Vec<Node>,
    bounder: &dyn SplitBounder,
    check: &Check<'_>,
    opts: &ReluBabOptions,
    deadline: Instant,
) -> Result<Vec<Branched>> {
    // The parents' warm starts, back in f64.
    let warms: Vec<Option<AlphaState<f64>>> =
        batch.par_iter().map(|n| n.bound.alpha.as_ref().map(|a| a.cast())).collect();
    let plans: Vec<Plan> = batch
        .par_iter()
        .zip(&warms)
        .map(|(n, w)| choose(region, split_nodes, n, bounder, opts, w.as_ref(), deadline))
        .collect::<Result<_>>()?;
    // The children to bound: (domain, candidate) of each, two per candidate.
    let mut queries = Vec::new();
    let mut owners = Vec::new();
    for (i, (n, plan)) in batch.iter().zip(&plans).enumerate() {
        let Plan::Try(splits) = plan else { continue };
        for (k, &s) in splits.iter().enumerate() {
            for active in [true, false] {
                let (known, splits) = n.child(Split { active, ..s });
                let c = rows(region, &n.open);
                queries.push(Query { c, known, splits, warm: warms[i].as_ref() });
                owners.push((i, k));
            }
        }
    }
    if Instant::now() >= deadline {
        return Ok(batch.iter().map(|_| Branched::Deadline).collect());
    }
    let bounds = bounder.bound_batch(&region.lower, &region.upper, &queries)?;
    // Per domain and candidate: the children kept and the worse child's margin.
    let mut tried: Vec<Vec<(f64, Vec<Node>)>> = plans
        .iter()
        .map(|p| match p {
            Plan::Try(s) => s.iter().map(|_| (f64::INFINITY, Vec::new())).collect(),
            _ => Vec::new(),
        })
        .collect();
    for ((mut b, q), &(i, k)) in bounds.into_iter().zip(queries).zip(&owners) {
        let node = &batch[i];
        // The child is a subset of the parent: the parent's bounds hold on it.
        for (x, &p) in b.lower.iter_mut().zip(&node.bound.lower) {
            *x = x.max(p);
        }
        let (open_k, worst_k) = evaluate(region, &node.open, &b);
        let (score, kids) = &mut tried[i][k];
        *score = score.min(worst_k);
        if !open_k.is_empty() {
            // The bound's rows follow `node.open`; keep only the open ones' rows.
            let b = restrict(region, &node.open, &open_k, b);
            kids.push(node.kid(q.splits, &q.known, b, open_k, worst_k));
        }
    }
    let out: Vec<Branched> = plans
        .into_iter()
        .zip(tried)
        .map(|(plan, tried)| match plan {
            Plan::Stuck(w) => Branched::Stuck(w),
            Plan::Deadline => Branched::Deadline,
            Plan::Try(_) => {
                let kids = tried.into_iter().reduce(|a, b| if b.0 > a.0 { b } else { a }).map(|b| b.1);
                Branched::Children(kids.unwrap_or_default())
            }
        })
        .collect();
    // The kept children's candidate points (minimizers of their linear bounds), checked
    // in one batched forward pass.
    let xs: Vec<Vec<f64>> = out
        .iter()
        .filter_map(|b| if let Branched::Children(k) = b { Some(k) } else { None })
        .flatten()
        .flat_map(|k| candidates_x(region, &k.open, &k.bound))
        .collect();
    Ok(match check(&xs) {
        Some(ce) => vec![Branched::Cex(ce)],
        None => out,
    })
}

/// Keep the rows (and coefficient rows) of the disjuncts `keep` out of those of `from`.
fn restrict(region: &Region, from: &[usize], keep: &[usize], mut b: DomainBound) -> DomainBound {
    if from.len() == keep.len() {
        return b;
    }
    let mut lower = Vec::new();
    let mut kept = Vec::new();
    let mut r0 = 0;
    for &k in from {
        let m = region.disjuncts[k].d.len();
        if keep.contains(&k) {
            lower.extend_from_slice(&b.lower[r0..r0 + m]);
            kept.extend(r0..r0 + m);
        }
        r0 += m;
    }
    b.lower = lower;
    b.corners = b.corners.map(|c| c.select(&kept));
    // The α state was made for the parent's rows: keep it (warm starts match rows by
    // index and skip what does not apply).
    b
}

/// Ordered worst margin first.
struct Pending(Node, u64);

impl PartialEq for Pending {
    fn eq(&self, o: &Self) -> bool {
        self.cmp(o) == std::cmp::Ordering::Equal
    }
}
impl Eq for Pending {}
impl PartialOrd for Pending {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Pending {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        o.0.worst.total_cmp(&self.0.worst).then(self.1.cmp(&o.1))
    }
}

/// The first counterexample among candidate points, each checked independently.
pub type Check<'a> = dyn Fn(&[Vec<f64>]) -> Option<Counterexample> + Sync + 'a;

/// A local attack from a point of the region on one of its disjuncts (PGD).
pub type LocalAttack<'a> = dyn Fn(&[f64], usize) -> Result<Option<Counterexample>> + Sync + 'a;

/// Every this many batches, the worst domain of the batch is attacked from the points
/// minimizing its linear lower bounds.
const ATTACK_EVERY: u64 = 8;

/// ReLU-split branch and bound on `region`. `root` bounds the whole region first
/// (α-CROWN), `bounder` the sub-domains; `attack` runs from the most promising
/// domains' candidate points now and then. Returns the result and the number of
/// domains bounded.
#[allow(clippy::too_many_arguments)]
pub fn relu_split(
    region: &Region,
    split_nodes: &[(NodeId, SplitKind)],
    root: &dyn SplitBounder,
    bounder: &dyn SplitBounder,
    check: &Check<'_>,
    attack: &LocalAttack<'_>,
    opts: &ReluBabOptions,
    deadline: Instant,
    progress: &dyn Fn(&Progress),
) -> Result<(BabResult, u64)> {
    let start = Instant::now();
    let open: Vec<usize> = (0..region.disjuncts.len()).collect();
    let c = rows(region, &open);
    if c.is_empty() {
        // No output constraint: every point of the box is unsafe.
        let centre: Vec<f64> = region.lower.iter().zip(&region.upper).map(|(l, u)| 0.5 * (l + u)).collect();
        return Ok((
            check(&[centre])
                .map_or(BabResult::Unknown("no output constraint".into()), BabResult::Counterexample),
            0,
        ));
    }
    let b = root.bound(&region.lower, &region.upper, &c, None, &[], None)?;
    let (open, worst) = evaluate(region, &open, &b);
    if open.is_empty() {
        return Ok((BabResult::Proven, 1));
    }
    if let Some(ce) = check(&candidates_x(region, &open, &b)) {
        return Ok((BabResult::Counterexample(ce), 1));
    }
    let b = restrict(region, &(0..region.disjuncts.len()).collect::<Vec<_>>(), &open, b);
    let mut heap = std::collections::BinaryHeap::new();
    let mut seq = 0u64;
    heap.push(Pending(Node { splits: vec![], bound: b, open, worst, derived: false }, seq));
    let mut done = 1u64;
    let mut stuck: Option<f64> = None;
    let mut last_report = start;
    let mut batches = 0u64;
    // The size of a waiting domain: the root's at first, then the largest child of the
    // last batch (sub-domains carry less α state than the root).
    let mut node_bytes = heap.peek().map_or(1, |p| p.0.bytes()).max(1);
    while !heap.is_empty() {
        if Instant::now() >= deadline {
            return Ok((BabResult::Timeout, done));
        }
        let cap = opts.max_pending.min(opts.max_pending_bytes / node_bytes).max(1);
        if heap.len() > cap {
            return Ok((
                BabResult::Unknown(format!(
                    "more than {cap} split domains pending (memory cap: {} MiB at about {} KiB each)",
                    opts.max_pending_bytes >> 20,
                    node_bytes >> 10
                )),
                done,
            ));
        }
        let take = opts.batch.max(1).min(heap.len());
        let batch: Vec<Node> = (0..take).filter_map(|_| heap.pop().map(|p| p.0)).collect();
        batches += 1;
        if batches.is_multiple_of(ATTACK_EVERY)
            && let Some(worst) = batch.first()
        {
            for (&k, x) in worst.open.iter().zip(candidates_x(region, &worst.open, &worst.bound)) {
                if let Some(ce) = attack(&x, k)? {
                    return Ok((BabResult::Counterexample(ce), done));
                }
            }
        }
        let worst = batch.iter().map(|n| n.worst).fold(f64::INFINITY, f64::min);
        done += 2 * opts.candidates.max(1) as u64 * batch.len() as u64;
        for o in branch_batch(region, split_nodes, batch, bounder, check, opts, deadline)? {
            match o {
                Branched::Children(kids) => {
                    if let Some(b) = kids.iter().map(Node::bytes).max() {
                        node_bytes = b.max(1);
                    }
                    for k in kids {
                        seq += 1;
                        heap.push(Pending(k, seq));
                    }
                }
                Branched::Cex(ce) => return Ok((BabResult::Counterexample(ce), done)),
                Branched::Stuck(w) => stuck = Some(stuck.map_or(w, |s| s.min(w))),
                Branched::Deadline => return Ok((BabResult::Timeout, done)),
            }
        }
        if last_report.elapsed() >= Duration::from_secs(1) {
            last_report = Instant::now();
            progress(&Progress {
                phase: "split",
                per_second: done as f64 / start.elapsed().as_secs_f64().max(1e-9),
                domains: done,
                pending: heap.len(),
                worst_bound: worst,
                elapsed: start.elapsed(),
            });
        }
    }
    Ok(match stuck {
        None => (BabResult::Proven, done),
        Some(w) => (
            BabResult::Unknown(format!(
                "a domain with every split made is not proven (worst margin {w:.4e})"
            )),
            done,
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn corners_are_the_signs_of_the_coefficients() {
        // 5 rows of 70 inputs: rows cross the 64-bit words.
        let mut rng = lirpa::sample::Rng::new(7);
        let a = faer::Mat::<f64>::from_fn(5, 70, |_, _| rng.uniform() - 0.5);
        let lower: Vec<f64> = (0..70).map(|j| -(j as f64)).collect();
        let upper: Vec<f64> = (0..70).map(|j| j as f64 + 0.5).collect();
        let corners = Corners::new(a.as_ref());
        assert_eq!(corners.rows(), 5);
        assert_eq!(Corners::new(a.as_ref().subcols(0, 10).subrows(0, 1)).rows(), 1);
        let expect = |r: usize| -> Vec<f64> {
            (0..70).map(|j| if a[(r, j)] > 0.0 { lower[j] } else { upper[j] }).collect()
        };
        for r in 0..5 {
            assert_eq!(corners.point(r, &lower, &upper), expect(r), "row {r}");
        }
        let kept = corners.select(&[3, 1]);
        assert_eq!(kept.point(0, &lower, &upper), expect(3));
        assert_eq!(kept.point(1, &lower, &upper), expect(1));
    }

    /// A β-CROWN child keeps the intermediate bounds it was given: it shares its
    /// parent's and derives its own from its splits, exactly; a bounder that recomputes
    /// them (the splits only clamping) keeps its own.
    #[test]
    fn kept_intermediate_bounds_are_derived_from_the_splits() {
        let g = lirpa::sample::ReluMlp::new(11, 3, &[12, 12], 2).unwrap().graph;
        let (lo, hi) = (vec![-1.0; 3], vec![1.0; 3]);
        let c: Vec<&[f64]> = vec![&[1.0, -1.0]];
        let nodes = split_nodes(&g);
        for beta in [true, false] {
            let bounder = if beta {
                ClampBounder::beta(&g, 2, 1, None)
            } else {
                ClampBounder::new(&g, Method::Crown, 0, 1, None)
            };
            let root_bound = bounder.bound(&lo, &hi, &c, None, &[], None).unwrap();
            let root = Node { splits: vec![], bound: root_bound, open: vec![0], worst: -1.0, derived: false };
            // Split the first unstable neuron of each split node, one after the other.
            let mut node = root;
            let mut depth = 0;
            for &(id, _) in &nodes {
                let inter = node.intermediate().into_owned();
                let Some((_, l, u)) = inter.nodes.iter().find(|(n, _, _)| *n == id) else { continue };
                let Some(i) = (0..l.len()).find(|&i| l[i] < 0.0 && u[i] > 0.0) else { continue };
                let s = Split::relu(id, i, depth % 2 == 0);
                let (known, splits) = node.child(s);
                let mut manual = inter.clone();
                s.apply(&mut manual);
                assert_eq!(*known, manual, "the child's bounds are its parent's with the split");
                let b = bounder.bound(&lo, &hi, &c, Some(&known), &splits, None).unwrap();
                let own = (*b.intermediate).clone();
                let kid = node.kid(splits, &known, b, vec![0], -1.0);
                assert_eq!(kid.derived, own == *known, "β {beta}");
                if beta {
                    assert!(kid.derived, "β-CROWN keeps the given bounds");
                    assert!(Arc::ptr_eq(&kid.bound.intermediate, &node.bound.intermediate));
                }
                assert_eq!(*kid.intermediate(), own, "β {beta}, depth {depth}");
                node = kid;
                depth += 1;
            }
            assert!(depth >= 2, "only {depth} splits made");
        }
    }

    #[test]
    fn balanced_parts_cover_the_queries_in_order_with_even_rows() {
        let row = [1.0, -1.0];
        let known = Arc::new(NodeBounds::default());
        let query =
            |rows: usize| Query { c: vec![&row[..]; rows], known: known.clone(), splits: vec![], warm: None };
        // (rows of each query, threads, rows of each part expected)
        let cases: &[(&[usize], usize, &[usize])] = &[
            (&[9, 1, 1, 1, 1, 1, 1, 1, 1, 1], 2, &[9, 9]),
            (&[1, 1, 1, 1], 2, &[2, 2]),
            (&[3, 3, 3, 3, 3, 3], 3, &[6, 6, 6]),
            (&[1, 1, 9], 2, &[2, 9]),
            (&[5], 4, &[5]),
            (&[2, 2], 4, &[2, 2]),
            (&[1, 1, 1], 1, &[3]),
        ];
        for &(rows, threads, want) in cases {
            let queries: Vec<Query<'_>> = rows.iter().map(|&r| query(r)).collect();
            let parts = balanced_parts(&queries, threads);
            let got: Vec<usize> = parts.iter().map(|p| p.iter().map(|q| q.c.len()).sum()).collect();
            assert_eq!(got, want, "rows {rows:?} on {threads} threads");
            // Consecutive, in order, every query once.
            let mut next = queries.as_ptr();
            for p in &parts {
                assert!(!p.is_empty());
                assert_eq!(p.as_ptr(), next);
                next = next.wrapping_add(p.len());
            }
            assert_eq!(next, queries.as_ptr().wrapping_add(queries.len()));
        }
    }
}

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
//! **Branching** (BaBSR-like, with a bound-improvement check): the unstable neurons
//! of the domain (`l < 0 < u`) are ranked by the height of their triangle
//! relaxation, `-l·u/(u-l)` (the intercept BaBSR weighs), the best
//! [`ReluBabOptions::candidates`] are each tried (both children bounded), and the one
//! whose worse child is best is split; its children's bounds are kept, so the
//! chosen split costs nothing more.
//!
//! **β-CROWN** plugs in as another [`SplitBounder`]: it receives the split list of
//! the domain (and the parent's α state for warm starts), which is what its
//! multipliers are attached to; the loop does not change.

use crate::{Counterexample, Progress, Region, Result, bab::BabResult};
use lirpa::{
    AlphaState, BoundOptions, BoundRequest, Graph, InputValue, Method, NodeBounds, NodeId, Perturbation,
};
use rayon::prelude::*;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// One split constraint: element `index` of the ReLU input node `node` is `>= 0`
/// (`active`) or `<= 0`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Split {
    pub node: NodeId,
    pub index: usize,
    pub active: bool,
}

impl Split {
    /// Whether pre-activation values `z` (of every node, as `Graph::forward_all`)
    /// satisfy the constraint.
    pub fn holds(&self, z: &[Vec<f64>]) -> bool {
        let v = z[self.node][self.index];
        if self.active { v >= 0.0 } else { v <= 0.0 }
    }

    /// Apply the constraint to `nb` (the intermediate bounds of a domain).
    pub fn apply(&self, nb: &mut NodeBounds) {
        match nb.nodes.iter_mut().find(|(id, _, _)| *id == self.node) {
            Some((_, l, u)) => {
                if self.active {
                    l[self.index] = l[self.index].max(0.0);
                } else {
                    u[self.index] = u[self.index].min(0.0);
                }
            }
            None => {
                // Not bounded yet by the parent: add a row of infinities (the graph size
                // is not known here, so the vectors are grown to the index).
                let n = self.index + 1;
                let mut l = vec![f64::NEG_INFINITY; n];
                let mut u = vec![f64::INFINITY; n];
                if self.active {
                    l[self.index] = 0.0;
                } else {
                    u[self.index] = 0.0;
                }
                nb.nodes.push((self.node, l, u));
            }
        }
    }
}

/// The inputs of the graph's ReLU nodes: the nodes whose elements can be split.
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

/// Bounds of one domain.
#[derive(Clone, Debug)]
pub struct DomainBound {
    /// Lower bounds of the specification rows.
    pub lower: Vec<f64>,
    /// Coefficients of the linear lower bounds w.r.t. the input (rows × inputs).
    pub a: Option<Vec<f64>>,
    /// Intermediate bounds computed on the domain (split constraints included).
    pub intermediate: Arc<NodeBounds>,
    /// Some intermediate interval is empty: no input satisfies the splits.
    pub infeasible: bool,
    /// α-CROWN parameters, for warm-starting the children.
    pub alpha: Option<Arc<AlphaState<f64>>>,
}

/// A sound bounding method for split domains: for every `x` of the box whose ReLU
/// inputs satisfy `splits`, `C·f(x) >= lower`. `known` holds intermediate bounds valid
/// on the domain (the parent's, with the splits applied); the bounder must keep them.
pub trait SplitBounder: Sync {
    fn bound(
        &self,
        lower: &[f64],
        upper: &[f64],
        c: &[&[f64]],
        known: Option<&Arc<NodeBounds>>,
        splits: &[Split],
        warm: Option<&AlphaState<f64>>,
    ) -> Result<DomainBound>;
}

/// CROWN or α-CROWN with the split constraints applied to intermediate bounds.
pub struct ClampBounder<'g> {
    graph: &'g Graph<f64>,
    opts: BoundOptions,
}

impl<'g> ClampBounder<'g> {
    /// `method` CROWN or α-CROWN (`iterations` of it, iterating no later than
    /// `deadline`), `threads` as `BoundOptions`.
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
        ClampBounder { graph, opts }
    }
}

impl SplitBounder for ClampBounder<'_> {
    fn bound(
        &self,
        lower: &[f64],
        upper: &[f64],
        c: &[&[f64]],
        known: Option<&Arc<NodeBounds>>,
        _splits: &[Split],
        warm: Option<&AlphaState<f64>>,
    ) -> Result<DomainBound> {
        let n_out = c.first().map_or(0, |r| r.len());
        let cm = faer::Mat::<f64>::from_fn(c.len(), n_out, |i, j| c[i][j]);
        let req =
            BoundRequest { node: None, c: Some(cm.as_ref()), lower: true, upper: false, return_a: true };
        let ptb = Perturbation::new_box(lower.to_vec(), upper.to_vec())?;
        let opts = BoundOptions { node_bounds: known.cloned(), ..self.opts.clone() };
        let inputs = [InputValue::Perturbed(ptb)];
        let (res, inter, alpha) = if opts.method == Method::AlphaCrown {
            let (r, st, b) = lirpa::compute_bounds_optimized_keep(self.graph, &inputs, &opts, &req, warm)?;
            (r, b, Some(Arc::new(st)))
        } else {
            let (r, b) = lirpa::compute_bounds_keep(self.graph, &inputs, &opts, &req)?;
            (r, b, None)
        };
        let infeasible = NodeBounds::infeasible(&inter);
        let n = lower.len();
        let a = res.a.first().and_then(|a| a.a.lower.as_ref()).map(|m| {
            let mut v = vec![0.0; c.len() * n];
            for i in 0..c.len() {
                for j in 0..n {
                    v[i * n + j] = m[(i, j)];
                }
            }
            v
        });
        Ok(DomainBound {
            lower: res.lower,
            a,
            intermediate: Arc::new(crate::bab::keep_bounds(inter)),
            infeasible,
            alpha,
        })
    }
}

/// Options of the ReLU-split loop.
#[derive(Clone, Debug)]
pub struct ReluBabOptions {
    /// Domains branched per parallel batch.
    pub batch: usize,
    /// Split candidates tried per domain (both children bounded for each).
    pub candidates: usize,
    /// Most domains waiting (each holds its intermediate bounds).
    pub max_pending: usize,
    /// α-CROWN iterations for sub-domains (warm-started from the parent); 0: CROWN.
    pub sub_iterations: usize,
}

impl Default for ReluBabOptions {
    fn default() -> Self {
        // Measured on mnistfc 256x2 (20-30 s): CROWN sub-domains (3 candidates) prove
        // nothing the root does not; α-CROWN with 5 warm-started iterations proves
        // prop_0_0.03 in 0.7 s, and is too slow to afford several candidates.
        ReluBabOptions { batch: 4, candidates: 1, max_pending: 20_000, sub_iterations: 5 }
    }
}

/// A domain with its bound.
struct Node {
    splits: Vec<Split>,
    bound: DomainBound,
    open: Vec<usize>,
    worst: f64,
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
    let Some(a) = &bound.a else { return vec![] };
    let n = region.lower.len();
    let mut out = Vec::new();
    let mut r0 = 0;
    for &k in open {
        let r = r0;
        r0 += region.disjuncts[k].d.len();
        if a.len() < (r + 1) * n {
            break;
        }
        out.push(
            (0..n).map(|j| if a[r * n + j] > 0.0 { region.lower[j] } else { region.upper[j] }).collect(),
        );
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

fn branch(
    region: &Region,
    split_nodes: &[NodeId],
    node: Node,
    bounder: &dyn SplitBounder,
    check: &(dyn Fn(&[f64]) -> Option<Counterexample> + Sync),
    opts: &ReluBabOptions,
    deadline: Instant,
) -> Result<Branched> {
    // Unstable neurons, by the height of their triangle relaxation.
    let mut cand: Vec<(f64, Split)> = Vec::new();
    for (id, l, u) in &node.bound.intermediate.nodes {
        if !split_nodes.contains(id) {
            continue;
        }
        for (i, (&l, &u)) in l.iter().zip(u).enumerate() {
            if l < 0.0 && u > 0.0 {
                cand.push((-l * u / (u - l), Split { node: *id, index: i, active: true }));
            }
        }
    }
    if cand.is_empty() {
        return Ok(Branched::Stuck(node.worst));
    }
    cand.sort_by(|a, b| b.0.total_cmp(&a.0));
    cand.truncate(opts.candidates.max(1));
    let c = rows(region, &node.open);
    let mut best: Option<(f64, Vec<Node>)> = None;
    for (_, s) in cand {
        let mut kids = Vec::new();
        let mut score = f64::INFINITY;
        for active in [true, false] {
            if Instant::now() >= deadline {
                return Ok(Branched::Deadline);
            }
            let s = Split { active, ..s };
            let mut known = (*node.bound.intermediate).clone();
            s.apply(&mut known);
            let mut splits = node.splits.clone();
            splits.push(s);
            let mut b = bounder.bound(
                &region.lower,
                &region.upper,
                &c,
                Some(&Arc::new(known)),
                &splits,
                node.bound.alpha.as_deref(),
            )?;
            // The child is a subset of the parent: the parent's bounds hold on it.
            for (x, &p) in b.lower.iter_mut().zip(&node.bound.lower) {
                *x = x.max(p);
            }
            let (open_k, worst_k) = evaluate(region, &node.open, &b);
            let open_k: Vec<usize> = open_k.into_iter().collect();
            score = score.min(worst_k);
            if !open_k.is_empty() {
                // The bound's rows follow `node.open`; keep only the open ones' rows.
                let b = restrict(region, &node.open, &open_k, b);
                kids.push(Node { splits, bound: b, open: open_k, worst: worst_k });
            }
        }
        if best.as_ref().is_none_or(|(v, _)| score > *v) {
            best = Some((score, kids));
        }
    }
    let kids = best.map(|b| b.1).unwrap_or_default();
    for k in &kids {
        for x in candidates_x(region, &k.open, &k.bound) {
            if let Some(ce) = check(&x) {
                return Ok(Branched::Cex(ce));
            }
        }
    }
    Ok(Branched::Children(kids))
}

/// Keep the rows (and coefficient rows) of the disjuncts `keep` out of those of `from`.
fn restrict(region: &Region, from: &[usize], keep: &[usize], mut b: DomainBound) -> DomainBound {
    if from.len() == keep.len() {
        return b;
    }
    let n = region.lower.len();
    let mut lower = Vec::new();
    let mut a = b.a.as_ref().map(|_| Vec::new());
    let mut r0 = 0;
    for &k in from {
        let m = region.disjuncts[k].d.len();
        if keep.contains(&k) {
            lower.extend_from_slice(&b.lower[r0..r0 + m]);
            if let (Some(dst), Some(src)) = (a.as_mut(), b.a.as_ref()) {
                dst.extend_from_slice(&src[r0 * n..(r0 + m) * n]);
            }
        }
        r0 += m;
    }
    b.lower = lower;
    b.a = a;
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

/// ReLU-split branch and bound on `region`. `root` bounds the whole region first
/// (α-CROWN), `bounder` the sub-domains. Returns the result and the number of domains
/// bounded.
#[allow(clippy::too_many_arguments)]
pub fn relu_split(
    region: &Region,
    split_nodes: &[NodeId],
    root: &dyn SplitBounder,
    bounder: &dyn SplitBounder,
    check: &(dyn Fn(&[f64]) -> Option<Counterexample> + Sync),
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
            check(&centre)
                .map_or(BabResult::Unknown("no output constraint".into()), BabResult::Counterexample),
            0,
        ));
    }
    let b = root.bound(&region.lower, &region.upper, &c, None, &[], None)?;
    let (open, worst) = evaluate(region, &open, &b);
    if open.is_empty() {
        return Ok((BabResult::Proven, 1));
    }
    for x in candidates_x(region, &open, &b) {
        if let Some(ce) = check(&x) {
            return Ok((BabResult::Counterexample(ce), 1));
        }
    }
    let b = restrict(region, &(0..region.disjuncts.len()).collect::<Vec<_>>(), &open, b);
    let mut heap = std::collections::BinaryHeap::new();
    let mut seq = 0u64;
    heap.push(Pending(Node { splits: vec![], bound: b, open, worst }, seq));
    let mut done = 1u64;
    let mut stuck: Option<f64> = None;
    let mut last_report = start;
    while !heap.is_empty() {
        if Instant::now() >= deadline {
            return Ok((BabResult::Timeout, done));
        }
        if heap.len() > opts.max_pending {
            return Ok((
                BabResult::Unknown(format!(
                    "more than {} ReLU-split domains pending (memory cap)",
                    opts.max_pending
                )),
                done,
            ));
        }
        let take = opts.batch.max(1).min(heap.len());
        let batch: Vec<Node> = (0..take).filter_map(|_| heap.pop().map(|p| p.0)).collect();
        let worst = batch.iter().map(|n| n.worst).fold(f64::INFINITY, f64::min);
        done += 2 * opts.candidates.max(1) as u64 * batch.len() as u64;
        let outs: Vec<Result<Branched>> = batch
            .into_par_iter()
            .map(|n| branch(region, split_nodes, n, bounder, check, opts, deadline))
            .collect();
        for o in outs {
            match o? {
                Branched::Children(kids) => {
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
                phase: "ReLU split",
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
                "a domain with every ReLU split is not proven (worst margin {w:.4e}; without β-CROWN the split constraints only clamp intermediate bounds)"
            )),
            done,
        ),
    })
}

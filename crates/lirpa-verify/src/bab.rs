//! Input-split branch and bound.
//!
//! A domain is a sub-box of a region with the disjuncts not yet proven on it. A batch
//! of domains is bounded in parallel (rayon, one engine call each, sequential inside);
//! a disjunct `C·y <= d` is proven on a box when some row has `lower(C_i·y) > d_i`
//! (the conjunction is then empty there), and stays proven on sub-boxes. Unproven
//! domains are checked for a counterexample (the box centre and, per open disjunct,
//! the corner minimizing the bounding linear function of its best row) and split in
//! two along the input dimension with the largest `Σ |A_ij|·(u_j - l_j)` over the
//! open disjuncts' best rows (the dimension with the largest effect on the bound, as
//! α,β-CROWN's input-split heuristics and nnenum's smear) or along the widest side;
//! near the root, when the two disagree, both halves of both are bounded and the split
//! whose worse half is better wins (measured on ACAS Xu: the widest side alone solves
//! property 1 with 100x fewer boxes than the score, the score is better on properties
//! 5 and 6). Pending domains are taken worst parent bound first: for an unsat region
//! every domain of the tree is bounded anyway, so the order changes nothing, and a
//! counterexample is usually in the worst domains. At most `max_pending` domains wait
//! (the box, and the parent's intermediate bounds shared by the two children: about
//! 2.5 kB each on ACAS Xu); beyond that the region ends `unknown`.
//!
//! **Plugging in stronger bounds.** The loop sees bounds only through [`Bounder`]:
//! a second, stronger one (α-CROWN, [`CrownBounder::alpha`]) bounds again the boxes the
//! first does not prove from [`BabOptions::strong_depth`] on (near the root most boxes
//! are far from proven and α-CROWN's cost would be wasted; deep, it turns many near
//! misses into proofs: ACAS Xu 4_2 property 2 needs 12k boxes instead of over 500k). Each sub-box passes its intermediate bounds to
//! its children ([`Bounder::bound_known`], the engine's `NodeBounds`): they hold on
//! every sub-box, are intersected with the children's, and spare the backward passes
//! of the neurons they already prove stable (twice the boxes per second on ACAS Xu).
//! ReLU-split branch and bound is [`crate::relu_bab`].

use crate::{Counterexample, Progress, Region, Result};
use lirpa::{BoundOptions, BoundRequest, Graph, InputValue, Method, NodeBounds, Perturbation};
use rayon::prelude::*;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Lower bounds of `C·y` over a box, and the coefficients of the linear lower bound
/// with respect to the input (row-major, rows × inputs) when the method has them.
#[derive(Clone, Debug)]
pub struct BoxBound {
    pub lower: Vec<f64>,
    pub a: Option<Vec<f64>>,
    /// The intermediate bounds the computation used (valid on the box and on every
    /// sub-box of it), when the bounder keeps them.
    pub intermediate: Option<Arc<NodeBounds>>,
}

/// A sound bounding method: for every `x` in `[lower, upper]`,
/// `C·f(x) >= BoxBound::lower`.
pub trait Bounder: Sync {
    fn bound(&self, lower: &[f64], upper: &[f64], c: &[&[f64]]) -> Result<BoxBound>;

    /// [`Bounder::bound`] knowing intermediate bounds valid on the box (those of a
    /// box containing it): they are intersected with the ones computed.
    fn bound_known(
        &self,
        lower: &[f64],
        upper: &[f64],
        c: &[&[f64]],
        _known: Option<&Arc<NodeBounds>>,
    ) -> Result<BoxBound> {
        self.bound(lower, upper, c)
    }
}

/// CROWN through `lirpa::compute_bounds` on the `f64` graph.
pub struct CrownBounder<'g> {
    graph: &'g Graph<f64>,
    opts: BoundOptions,
}

impl<'g> CrownBounder<'g> {
    /// Sequential bounds (parallelism comes from bounding many sub-boxes at once).
    pub fn new(graph: &'g Graph<f64>) -> Self {
        Self::with_threads(graph, 1)
    }

    /// α-CROWN with `iterations`, sequential, iterating no later than `deadline`.
    pub fn alpha(graph: &'g Graph<f64>, iterations: usize, deadline: Option<std::time::Instant>) -> Self {
        let mut opts = BoundOptions { threads: 1, ..BoundOptions::with_method(Method::AlphaCrown) };
        opts.optimize.iterations = iterations;
        opts.optimize.deadline = deadline;
        CrownBounder { graph, opts }
    }

    /// `threads` as in `BoundOptions` (0: all rayon threads), for one large bound.
    pub fn with_threads(graph: &'g Graph<f64>, threads: usize) -> Self {
        CrownBounder { graph, opts: BoundOptions { threads, ..BoundOptions::with_method(Method::Crown) } }
    }

    /// The same bounder with floating-point-sound bounds ([`BoundOptions::fp_sound`]).
    pub fn fp_sound(mut self, mode: lirpa::core::FpSound) -> Self {
        self.opts.fp_sound = mode;
        self
    }
}

impl Bounder for CrownBounder<'_> {
    fn bound(&self, lower: &[f64], upper: &[f64], c: &[&[f64]]) -> Result<BoxBound> {
        self.bound_known(lower, upper, c, None)
    }

    fn bound_known(
        &self,
        lower: &[f64],
        upper: &[f64],
        c: &[&[f64]],
        known: Option<&Arc<NodeBounds>>,
    ) -> Result<BoxBound> {
        let n_out = c.first().map_or(0, |r| r.len());
        let cm = faer::Mat::<f64>::from_fn(c.len(), n_out, |i, j| c[i][j]);
        let req =
            BoundRequest { node: None, c: Some(cm.as_ref()), lower: true, upper: false, return_a: true };
        let ptb = Perturbation::new_box(lower.to_vec(), upper.to_vec())?;
        let opts = BoundOptions { node_bounds: known.cloned(), ..self.opts.clone() };
        let (res, inter) =
            lirpa::compute_bounds_keep(self.graph, &[InputValue::Perturbed(ptb)], &opts, &req)?;
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
        Ok(BoxBound { lower: res.lower, a, intermediate: Some(Arc::new(keep_bounds(inter))) })
    }
}

/// The computed intermediate bounds as [`NodeBounds`].
pub fn keep_bounds(inter: lirpa::IntermediateBounds<f64>) -> NodeBounds {
    NodeBounds {
        nodes: inter.into_iter().enumerate().filter_map(|(id, b)| b.map(|(l, u)| (id, l, u))).collect(),
    }
}

/// Options of the loop.
#[derive(Clone, Debug)]
pub struct BabOptions {
    /// Domains bounded per parallel batch.
    pub batch: usize,
    /// Deepest split; 0 bounds the region once without splitting.
    pub max_depth: u32,
    /// Below this depth, when the `|A|·width` score and the widest side disagree,
    /// bound both halves of both and split the one whose worse half is better.
    pub lookahead_depth: u32,
    /// Most sub-boxes waiting; beyond it the region ends `unknown` (bounds memory).
    pub max_pending: usize,
    /// From this depth, a box CROWN does not prove is bounded again by the stronger
    /// bounder given to [`input_split`] (if any).
    pub strong_depth: u32,
}

/// The outcome on one region.
#[derive(Clone, Debug)]
pub enum BabResult {
    Proven,
    Counterexample(Counterexample),
    Timeout,
    Unknown(String),
}

struct Domain {
    lower: Vec<f64>,
    upper: Vec<f64>,
    /// Indices of the disjuncts not proven on this box.
    open: Vec<usize>,
    depth: u32,
    /// The parent's worst margin (`-inf` at the root).
    parent: f64,
    /// Intermediate bounds of the parent box (valid here).
    known: Option<Arc<NodeBounds>>,
    /// Consecutive splits on the path here that did not improve the bound.
    stalls: u32,
}

enum Outcome {
    Proven,
    Cex(Counterexample),
    Split(Domain, Domain, f64),
    /// Cannot split further (depth or width), with the worst margin.
    Stuck(f64),
}

/// See the split choice in [`process`].
const MAX_ELONGATION: f64 = 256.0;
const STALL: f64 = 0.02;
const STALLS: u32 = 3;

/// A bound is accepted as a proof only above this margin: the `f64` engine's
/// accumulated rounding is far below it.
fn proof_tol(d: f64) -> f64 {
    1e-9 * (1.0 + d.abs())
}

fn process(
    region: &Region,
    dom: Domain,
    bounder: &dyn Bounder,
    strong: Option<&dyn Bounder>,
    check: &(dyn Fn(&[f64]) -> Option<Counterexample> + Sync),
    opts: &BabOptions,
) -> Result<Outcome> {
    let rows: Vec<&[f64]> =
        dom.open.iter().flat_map(|&k| region.disjuncts[k].c.iter().map(Vec::as_slice)).collect();
    let n = dom.lower.len();
    // With no rows left to bound (a disjunct without output constraints), every point
    // is unsafe: the centre is a counterexample.
    let mut bound = if rows.is_empty() {
        BoxBound { lower: vec![], a: None, intermediate: None }
    } else {
        bounder.bound_known(&dom.lower, &dom.upper, &rows, dom.known.as_ref())?
    };
    let eval = |bound: &BoxBound| {
        let mut open = Vec::new();
        let mut best_rows = Vec::new(); // global row index of each open disjunct's best row
        let mut worst = f64::INFINITY;
        let mut r0 = 0;
        for &k in &dom.open {
            let dis = &region.disjuncts[k];
            let mut best = (usize::MAX, f64::NEG_INFINITY);
            let mut proven = false;
            for (i, d) in dis.d.iter().enumerate() {
                let m = bound.lower[r0 + i] - d;
                proven |= m > proof_tol(*d);
                if m > best.1 {
                    best = (r0 + i, m);
                }
            }
            r0 += dis.d.len();
            if proven {
                continue;
            }
            worst = worst.min(best.1);
            open.push(k);
            best_rows.push(best.0);
        }
        (open, best_rows, worst)
    };
    let (mut open, mut best_rows, mut worst) = eval(&bound);
    // Where CROWN fails deep in the tree, the stronger bounder (α-CROWN) gets a try.
    if let (false, Some(sb)) = (open.is_empty(), strong.filter(|_| dom.depth >= opts.strong_depth)) {
        let mut b2 = sb.bound_known(&dom.lower, &dom.upper, &rows, dom.known.as_ref())?;
        for (x, &p) in b2.lower.iter_mut().zip(&bound.lower) {
            *x = x.max(p); // both hold on the box
        }
        bound = b2;
        (open, best_rows, worst) = eval(&bound);
    }
    if open.is_empty() {
        return Ok(Outcome::Proven);
    }
    // Counterexample candidates.
    let centre: Vec<f64> = dom.lower.iter().zip(&dom.upper).map(|(l, u)| 0.5 * (l + u)).collect();
    if let Some(ce) = check(&centre) {
        return Ok(Outcome::Cex(ce));
    }
    if let Some(a) = &bound.a {
        for &r in &best_rows {
            if r == usize::MAX {
                continue;
            }
            let corner: Vec<f64> =
                (0..n).map(|j| if a[r * n + j] > 0.0 { dom.lower[j] } else { dom.upper[j] }).collect();
            if let Some(ce) = check(&corner) {
                return Ok(Outcome::Cex(ce));
            }
        }
    }
    if dom.depth >= opts.max_depth {
        return Ok(Outcome::Stuck(worst));
    }
    // Split dimension.
    let width: Vec<f64> = dom.lower.iter().zip(&dom.upper).map(|(l, u)| u - l).collect();
    let mut score = vec![0.0; n];
    if let Some(a) = &bound.a {
        for &r in best_rows.iter().filter(|&&r| r != usize::MAX) {
            for j in 0..n {
                score[j] += a[r * n + j].abs() * width[j];
            }
        }
    }
    let splittable = |j: usize| {
        let mid = 0.5 * (dom.lower[j] + dom.upper[j]);
        mid > dom.lower[j] && mid < dom.upper[j]
    };
    let pick = |s: &[f64]| {
        (0..n).filter(|&j| splittable(j)).fold(None, |b: Option<usize>, j| match b {
            Some(b) if s[b] >= s[j] => Some(b),
            _ => Some(j),
        })
    };
    let by_width = pick(&width);
    let mut dim = pick(&score);
    if dim.is_some_and(|j| score[j] <= 0.0) {
        dim = by_width; // no information from the coefficients: the widest side
    }
    // The score sees only the final linear function, not the relaxation gaps of the
    // unstable neurons: near a kink it can keep choosing the same few dimensions while
    // another stays wide (ACAS Xu 4_2 prop 2: four sides at 1e-15, one at 1.6e-2, the
    // bound stuck). A side more than `MAX_ELONGATION` times wider (relative to the
    // region) than the chosen one is split first.
    let rel: Vec<f64> = (0..n)
        .map(|j| {
            let full = region.upper[j] - region.lower[j];
            if full > 0.0 { width[j] / full } else { 0.0 }
        })
        .collect();
    let by_rel = pick(&rel);
    if let (Some(j), Some(k)) = (dim, by_rel)
        && rel[j] * MAX_ELONGATION < rel[k]
    {
        dim = Some(k);
    }
    // Likewise after `STALLS` consecutive splits on the path that did not improve the
    // bound (each by `STALL` of it): the score is blind to what matters there (ACAS Xu
    // 4_7 property 1 is solved with it; splitting the widest side at the first stall
    // instead loses property 5).
    let stalled = worst - dom.parent < STALL * dom.parent.abs();
    let stalls = if stalled { dom.stalls + 1 } else { 0 };
    if stalls >= STALLS && dom.depth >= opts.lookahead_depth {
        dim = by_rel;
    }
    if dim != by_width && dom.depth < opts.lookahead_depth {
        // The two heuristics disagree: bound both halves of both candidates and keep
        // the split whose worse half is better.
        let mut best: Option<(usize, f64)> = None;
        for j in [dim, by_width].into_iter().flatten() {
            let mid = 0.5 * (dom.lower[j] + dom.upper[j]);
            let mut worst_half = f64::INFINITY;
            for half in 0..2 {
                let (mut l, mut u) = (dom.lower.clone(), dom.upper.clone());
                if half == 0 {
                    u[j] = mid
                } else {
                    l[j] = mid
                }
                let b = bounder.bound_known(&l, &u, &rows, bound.intermediate.as_ref())?;
                worst_half = worst_half.min(objective(region, &dom.open, &b.lower));
            }
            if best.is_none_or(|(_, v)| worst_half > v) {
                best = Some((j, worst_half));
            }
        }
        dim = best.map(|b| b.0);
    }
    let Some(j) = dim.filter(|_| dom.depth < opts.max_depth) else { return Ok(Outcome::Stuck(worst)) };
    let mid = 0.5 * (dom.lower[j] + dom.upper[j]);
    let mut left = Domain {
        lower: dom.lower.clone(),
        upper: dom.upper.clone(),
        open: open.clone(),
        depth: dom.depth + 1,
        parent: worst,
        known: bound.intermediate.clone(),
        stalls,
    };
    left.upper[j] = mid;
    let mut right = Domain {
        lower: dom.lower,
        upper: dom.upper,
        open,
        depth: dom.depth + 1,
        parent: worst,
        known: bound.intermediate,
        stalls,
    };
    right.lower[j] = mid;
    Ok(Outcome::Split(left, right, worst))
}

/// A domain waiting, ordered worst parent margin first (most likely to hold a
/// counterexample), then most recent first (depth-first among equals).
struct Pending {
    margin: f64,
    seq: u64,
    dom: Domain,
}

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
        // BinaryHeap pops the greatest: the smallest margin, then the largest seq.
        o.margin.total_cmp(&self.margin).then(self.seq.cmp(&o.seq))
    }
}

/// The worst (over disjuncts `open`, rows stacked in `lower`) best-row margin.
fn objective(region: &Region, open: &[usize], lower: &[f64]) -> f64 {
    let mut r0 = 0;
    let mut worst = f64::INFINITY;
    for &k in open {
        let d = &region.disjuncts[k].d;
        let best = d.iter().enumerate().map(|(i, d)| lower[r0 + i] - d).fold(f64::NEG_INFINITY, f64::max);
        worst = worst.min(best);
        r0 += d.len();
    }
    worst
}

/// A short attack inside a box `(lower, upper)` against the disjuncts still open (their
/// indices in the region).
pub type LocalAttack<'a> = dyn Fn(&[f64], &[f64], &[usize]) -> Result<Option<Counterexample>> + Sync + 'a;

/// Branch and bound on the input box of `region`. Returns the result and the number
/// of domains bounded. `check` confirms a counterexample candidate.
#[allow(clippy::too_many_arguments)]
pub fn input_split(
    region: &Region,
    bounder: &dyn Bounder,
    strong: Option<&dyn Bounder>,
    check: &(dyn Fn(&[f64]) -> Option<Counterexample> + Sync),
    local_attack: &LocalAttack<'_>,
    opts: &BabOptions,
    deadline: Instant,
    progress: &dyn Fn(&Progress),
) -> Result<(BabResult, u64)> {
    let start = Instant::now();
    let mut last_report = start;
    let mut stack = std::collections::BinaryHeap::new();
    let mut seq = 0u64;
    stack.push(Pending {
        margin: f64::NEG_INFINITY,
        seq,
        dom: Domain {
            lower: region.lower.clone(),
            upper: region.upper.clone(),
            open: (0..region.disjuncts.len()).collect(),
            depth: 0,
            parent: f64::NEG_INFINITY,
            known: None,
            stalls: 0,
        },
    });
    let mut done = 0u64;
    let mut stuck: Option<f64> = None;
    while !stack.is_empty() {
        if Instant::now() >= deadline {
            return Ok((BabResult::Timeout, done));
        }
        if stack.len() > opts.max_pending {
            return Ok((
                BabResult::Unknown(format!("more than {} sub-boxes pending (memory cap)", opts.max_pending)),
                done,
            ));
        }
        let take = opts.batch.max(1).min(stack.len());
        let batch: Vec<Domain> = (0..take).filter_map(|_| stack.pop().map(|p| p.dom)).collect();
        done += batch.len() as u64;
        let outs: Vec<Result<Outcome>> =
            batch.into_par_iter().map(|d| process(region, d, bounder, strong, check, opts)).collect();
        let mut worst = f64::INFINITY;
        let mut worst_box: Option<(Vec<f64>, Vec<f64>, Vec<usize>)> = None;
        for o in outs {
            match o? {
                Outcome::Proven => {}
                Outcome::Cex(ce) => return Ok((BabResult::Counterexample(ce), done)),
                Outcome::Split(a, b, w) => {
                    if w < worst {
                        worst_box = Some((a.lower.clone(), b.upper.clone(), a.open.clone()));
                    }
                    worst = worst.min(w);
                    for dom in [b, a] {
                        seq += 1;
                        stack.push(Pending { margin: w, seq, dom });
                    }
                }
                Outcome::Stuck(w) => {
                    worst = worst.min(w);
                    stuck = Some(stuck.map_or(w, |s| s.min(w)));
                }
            }
        }
        // A short attack inside the worst box of the batch (the parent of the worst
        // split): counterexamples often sit in small pockets the corners miss.
        if let Some((l, u, open)) = worst_box
            && let Some(ce) = local_attack(&l, &u, &open)?
        {
            return Ok((BabResult::Counterexample(ce), done));
        }
        if last_report.elapsed() >= Duration::from_secs(1) {
            last_report = Instant::now();
            progress(&Progress {
                phase: "input split",
                per_second: done as f64 / start.elapsed().as_secs_f64().max(1e-9),
                domains: done,
                pending: stack.len(),
                worst_bound: worst,
                elapsed: start.elapsed(),
            });
        }
    }
    Ok(match stuck {
        None => (BabResult::Proven, done),
        Some(w) if opts.max_depth == 0 => (
            BabResult::Unknown(format!(
                "CROWN does not prove every disjunct (worst margin {w:.4e}) and no time is left to split activations"
            )),
            done,
        ),
        Some(w) => {
            (BabResult::Unknown(format!("boxes cannot be split further (worst margin {w:.4e})")), done)
        }
    })
}

//! The floating-point-sound mode in the engine ([`BoundOptions::fp_sound`]): where a
//! number becomes a bound, the rounding error of everything computed on the way is
//! added outward (see [`lirpa_core::fpsound`] for the error bounds).
//!
//! Per backward step through node `y` with coefficients `Λ` (rows) the operator
//! computes `Λ' = Λ·W` and `Λ·c` (affine) or `Λ·s`, `Λ·b` (element-wise lines); the
//! error of `Λ'·x + bias` against exact arithmetic is at most
//! `Σ_k |Λ_rk|·(g·|W|·|x| + g_b·|c|)_k + η` (`g` from the operator's [`FpRounding`],
//! `g_b` from the bias sum's length, the output's size) or `g·Σ_k |Λ_rk|·m_k + η` with
//! `m_k ≥ |s|·|x| + |b|` (element-wise lines) over the set. `|c|` and `|W|·|x|` come
//! from the operator's own interval rule on the symmetric box `[−M, M]` of its inputs'
//! magnitudes `M`, which themselves come from sound intervals (plus the magnitudes of
//! folded constants, [`LinearRelaxation::fp_folded_magnitude`]). The bias is moved down
//! (lower side) or up by that much. Sums of
//! coefficients at fan-out, constants' products, bias accumulation and concretization
//! get the same treatment; IBP widens each affine interval by the same term.
//!
//! [`BoundOptions::fp_sound`]: crate::BoundOptions::fp_sound
//! [`LinearRelaxation::fp_folded_magnitude`]: lirpa_core::op::LinearRelaxation::fp_folded_magnitude

use super::{Bounds, State};
use faer::MatRef;
use lirpa_core::fpsound::{abs_dot, gamma, lower_by, magnitudes, raise_by, unit_roundoff, up};
use lirpa_core::op::Interval;
use lirpa_core::{
    Error, FpKind, FpRounding, FpSound, Graph, LinearA, LinearBias, NodeId, NodeKind, Operator, Perturbation,
    Result, Scalar,
};
use smallvec::SmallVec;

/// What the sound mode knows of a computation: magnitudes of every perturbed node's
/// values and, per operator node, the magnitude of its formula and its error factor.
pub(super) struct FpState<T: Scalar> {
    pub mode: FpSound,
    /// `M`: a bound of `|x|` over the set, per perturbed node.
    mag: Vec<Option<Vec<T>>>,
    /// The sound interval `M` came from, per perturbed node.
    ivl: Vec<Option<Bounds<T>>>,
    /// Per perturbed operator node with arithmetic: `(m, g, η)`.
    step: Vec<Option<Step<T>>>,
    /// The first node whose magnitudes and step predate the latest bounds
    /// ([`FpState::catch_up`]).
    stale: usize,
}

impl<T: Scalar> Step<T> {
    /// Widen an affine interval rule's result by its rounding.
    fn widen(&self, lo: &mut [T], hi: &mut [T]) {
        for ((l, h), m) in lo.iter_mut().zip(hi.iter_mut()).zip(&self.fmag) {
            let w = up(self.factor * m.as_f64() + self.eta);
            *l = lower_by(*l, w);
            *h = raise_by(*h, w);
        }
    }
}

struct Step<T> {
    /// `m` per output element (what the interval rule's error is relative to).
    fmag: Vec<T>,
    factor: f64,
    /// The backward step's error per unit of `|Λ|`, per output element: the
    /// coefficient products' (`factor` times their part of `m`) plus the bias sum's,
    /// which runs over every output element (`γ` of the output's size times the
    /// constant's magnitude), plus, for a deployed float32 network, its evaluation
    /// error of a transcendental function.
    back: Vec<T>,
    /// Absolute (underflow) term per row.
    eta: f64,
}

/// The operator's rounding description, or the sound mode's refusal naming it.
fn rounding_of<T: Scalar>(graph: &Graph<T>, id: NodeId, op: &dyn Operator<T>) -> Result<FpRounding> {
    op.fp_rounding().ok_or_else(|| Error::Unimplemented {
        node: graph.node(id).name.clone(),
        op_type: op.op_type().to_string(),
        msg: "floating-point-sound bounds (--fp-sound): no rounding-error model for this operator yet".into(),
    })
}

/// The number of rounded operations per term the engine assumes for node `id`.
fn terms_of<T: Scalar>(graph: &Graph<T>, id: NodeId, r: &FpRounding) -> usize {
    r.terms.unwrap_or_else(|| {
        let node = graph.node(id);
        node.numel() + node.inputs.iter().map(|&i| graph.node(i).numel()).sum::<usize>() + FpRounding::SLACK
    })
}

/// An input of an error model: the magnitudes `M` of a perturbed input (the box
/// `[−M, M]`), or the values of an exact one (constants, weights: borrowed, never
/// copied).
pub(super) enum InputBox<'a, T> {
    Sym(Vec<T>),
    Exact(&'a [T]),
}

impl<T: Scalar> InputBox<'_, T> {
    /// `Σ|x|` over the box.
    fn sum(&self) -> f64 {
        match self {
            InputBox::Sym(m) => m.iter().map(|x| x.as_f64()).sum(),
            InputBox::Exact(v) => v.iter().map(|x| x.abs().as_f64()).sum(),
        }
    }
    /// The magnitudes, element by element.
    fn magnitudes(&self) -> impl Iterator<Item = T> + '_ {
        let (sym, exact): (&[T], &[T]) = match self {
            InputBox::Sym(m) => (m, &[]),
            InputBox::Exact(v) => (&[], v),
        };
        sym.iter().copied().chain(exact.iter().map(|x| x.abs()))
    }
}

/// The two parts of an affine operator's magnitude: its constant's `|c|` and its
/// linear part's `|W|·M`, from its interval rule on the symmetric boxes `[−M, M]` of its
/// perturbed inputs and the values of its exact ones, which returns `c ± |W|·M` up to
/// its own rounding (at most `γ·(|c| + |W|·M)`, covered by the margin): `(|c|, |W|·M)`,
/// each raised. Exact inputs' contributions are constants: they belong to `c`.
fn affine_parts<T: Scalar>(
    op: &dyn Operator<T>,
    boxes: &[InputBox<'_, T>],
    numel: usize,
    terms: usize,
) -> Result<(Vec<T>, Vec<T>)> {
    let negs: Vec<Option<Vec<T>>> = boxes
        .iter()
        .map(|b| match b {
            InputBox::Sym(m) => Some(m.iter().map(|&x| -x).collect()),
            InputBox::Exact(_) => None,
        })
        .collect();
    let ins: SmallVec<[Interval<'_, T>; 4]> = boxes
        .iter()
        .zip(&negs)
        .map(|(b, n)| match (b, n) {
            (InputBox::Sym(m), Some(n)) => Interval { lower: n, upper: m },
            (InputBox::Exact(v), _) => Interval { lower: v, upper: v },
            (InputBox::Sym(_), None) => unreachable!("negated above"),
        })
        .collect();
    let (mut lo, mut hi) = (vec![T::zero(); numel], vec![T::zero(); numel]);
    op.interval(&ins, &mut lo, &mut hi)?;
    // The computed ends are within g·(|c| + r) of c ∓ r, so half their sum and half
    // their difference are within that much (plus the f64 rounding the margin covers)
    // of |c| and r.
    let g = gamma(unit_roundoff::<T>(), terms);
    let (mut c, mut r) = (Vec::with_capacity(numel), Vec::with_capacity(numel));
    for (l, h) in lo.iter().zip(&hi) {
        let (l, h) = (l.as_f64(), h.as_f64());
        let slack = up(g * (l.abs() + h.abs()));
        c.push(raise_by(T::zero(), up(((l + h) / 2.0).abs() + slack)));
        r.push(raise_by(T::zero(), up((h - l) / 2.0 + slack)));
    }
    Ok((c, r))
}

impl<T: Scalar> FpState<T> {
    /// After node `from` got its bounds: its magnitudes from them, and every later node
    /// marked for [`FpState::catch_up`] (`None`: everything recomputed now). Until a
    /// later node is caught up, its error model stays the one of older, wider
    /// intervals: looser, still sound (relaxations only see tighter bounds), except for
    /// the direct consumers of `from` if its new bounds are wider somewhere than its old
    /// interval, which is why a sweep catches up the nodes it visits first.
    pub fn refresh(&mut self, st: &State<'_, T>, from: Option<NodeId>) -> Result<()> {
        let Some(f) = from else {
            self.stale = 0;
            return self.catch_up(st, st.graph.len());
        };
        if let Some((l, u)) = &st.bounds[f] {
            self.mag[f] = Some(magnitudes(l, u));
            self.ivl[f] = Some((l.clone(), u.clone()));
        }
        self.stale = self.stale.min(f + 1);
        Ok(())
    }

    /// Magnitudes and steps of the marked nodes up to `upto` (all: the graph's length),
    /// from sound intervals: `bounds` where known, else IBP widened by the rounding.
    pub fn catch_up(&mut self, st: &State<'_, T>, upto: NodeId) -> Result<()> {
        let g = st.graph;
        let end = (upto + 1).min(g.len());
        for id in self.stale..end {
            if !st.perturbed[id] {
                continue;
            }
            let node = g.node(id);
            let step = match node.op() {
                Some(op) => self.step_of(st, id, op)?,
                None => None,
            };
            let (l, u) = match (&st.bounds[id], &node.kind) {
                (Some(b), _) => b.clone(),
                (None, NodeKind::Input) => st.input_interval(id),
                (None, NodeKind::Op(op)) => {
                    let ins: SmallVec<[Interval<'_, T>; 4]> = node
                        .inputs
                        .iter()
                        .map(|&i| match (&st.values[i], &st.bounds[i], &self.ivl[i]) {
                            (Some(v), _, _) => Interval { lower: v, upper: v },
                            (None, Some((l, u)), _) | (None, None, Some((l, u))) => {
                                Interval { lower: l, upper: u }
                            }
                            _ => unreachable!("inputs are bounded before their consumers"),
                        })
                        .collect();
                    let (mut lo, mut hi) = (vec![T::zero(); node.numel()], vec![T::zero(); node.numel()]);
                    op.interval(&ins, &mut lo, &mut hi).map_err(|e| e.at_node(&node.name, op.op_type()))?;
                    // An affine interval's error is the step's own (same input
                    // magnitudes); the others' need no interval evaluation.
                    match (rounding_of(g, id, op.as_ref())?.kind, &step) {
                        (FpKind::Affine, Some(step)) => step.widen(&mut lo, &mut hi),
                        _ => self.widen(st, id, &ins, &mut lo, &mut hi)?,
                    }
                    (lo, hi)
                }
                (None, NodeKind::Constant(_)) => unreachable!("constants are not perturbed"),
            };
            self.step[id] = step;
            self.mag[id] = Some(magnitudes(&l, &u));
            self.ivl[id] = Some((l, u));
        }
        self.stale = self.stale.max(end);
        Ok(())
    }

    /// The error model of node `id` from its inputs' magnitudes (`None`: exact).
    fn step_of(&self, st: &State<'_, T>, id: NodeId, op: &dyn Operator<T>) -> Result<Option<Step<T>>> {
        let boxes: Vec<InputBox<'_, T>> = st
            .graph
            .node(id)
            .inputs
            .iter()
            .map(|&i| match (&st.values[i], &self.mag[i]) {
                (Some(v), _) => InputBox::Exact(v),
                (None, Some(m)) => InputBox::Sym(m.clone()),
                (None, None) => unreachable!("inputs are bounded before their consumers"),
            })
            .collect();
        self.step_from(st.graph, id, op, &boxes)
    }

    /// The error model of node `id` when its inputs lie in `boxes`.
    fn step_from(
        &self,
        g: &Graph<T>,
        id: NodeId,
        op: &dyn Operator<T>,
        boxes: &[InputBox<'_, T>],
    ) -> Result<Option<Step<T>>> {
        let node = g.node(id);
        let r = rounding_of(g, id, op)?;
        let terms = terms_of(g, id, &r);
        let factor = self.mode.factor::<T>(terms);
        // The bias `Λ·c` is a sum over every output element (or window cell).
        let bias_factor = self.mode.factor::<T>(node.numel() + FpRounding::SLACK).max(factor);
        let scaled = |x: f64| raise_by(T::zero(), up(x));
        let (fmag, back): (Vec<T>, Vec<T>) = match r.kind {
            FpKind::Exact => return Ok(None),
            FpKind::Affine | FpKind::Selection => {
                let (mut c, rad) = affine_parts(op, boxes, node.numel(), terms)
                    .map_err(|e| e.at_node(&node.name, op.op_type()))?;
                if let Some(folded) = op.fp_folded_magnitude() {
                    for (c, f) in c.iter_mut().zip(folded) {
                        *c = scaled(c.as_f64() + f);
                    }
                }
                let fmag: Vec<T> = c.iter().zip(&rad).map(|(c, r)| scaled(c.as_f64() + r.as_f64())).collect();
                // A selection's line may put the whole magnitude in either part.
                let back = match r.kind {
                    FpKind::Selection => fmag.iter().map(|m| scaled(bias_factor * m.as_f64())).collect(),
                    _ => c
                        .iter()
                        .zip(&rad)
                        .map(|(c, r)| scaled(bias_factor * c.as_f64() + factor * r.as_f64()))
                        .collect(),
                };
                (fmag, back)
            }
            FpKind::Elementwise { line_scale, offset } => {
                // The terms' count covers the bias sum; the deployed network's function
                // evaluation adds its error per element.
                let deployed = self.mode.function_error() * offset;
                let fmag: Vec<T> =
                    boxes[0].magnitudes().map(|m| scaled(m.as_f64() * line_scale + offset)).collect();
                let back = fmag.iter().map(|m| scaled(factor * m.as_f64() + deployed)).collect();
                (fmag, back)
            }
        };
        let sum_in: f64 = boxes.iter().map(InputBox::sum).sum();
        Ok(Some(Step {
            fmag,
            factor,
            back,
            eta: up(self.mode.underflow::<T>(terms.max(node.numel() + FpRounding::SLACK))
                * up(1.0 + sum_in * (1.0 + 1e-10))),
        }))
    }

    /// Widen the interval `(lo, hi)` of node `id`, computed by its operator's rule on
    /// the intervals `ins`, by the rule's rounding error (affine operators: their sums;
    /// element-wise ones: one product per element; copies need nothing).
    pub fn widen(
        &self,
        st: &State<'_, T>,
        id: NodeId,
        ins: &[Interval<'_, T>],
        lo: &mut [T],
        hi: &mut [T],
    ) -> Result<()> {
        let g = st.graph;
        let Some(op) = g.node(id).op() else { return Ok(()) };
        match rounding_of(g, id, op)?.kind {
            FpKind::Exact | FpKind::Selection => return Ok(()),
            FpKind::Elementwise { offset, .. } => {
                // One rounded product per element (e.g. LeakyReLU's `α·l`); a deployed
                // network's evaluation error of a transcendental function.
                let (f, eta) = (self.mode.factor::<T>(2), self.mode.underflow::<T>(2));
                let eta = up(eta + self.mode.function_error() * offset);
                for (l, h) in lo.iter_mut().zip(hi.iter_mut()) {
                    let w = up(f * l.abs().max(h.abs()).as_f64() + eta);
                    *l = lower_by(*l, w);
                    *h = raise_by(*h, w);
                }
                return Ok(());
            }
            FpKind::Affine => {}
        }
        let inputs = &g.node(id).inputs;
        let boxes: Vec<InputBox<'_, T>> = ins
            .iter()
            .zip(inputs)
            .map(|(b, &i)| match &st.values[i] {
                Some(v) => InputBox::Exact(v),
                None => InputBox::Sym(magnitudes(b.lower, b.upper)),
            })
            .collect();
        // The node's caught-up step holds for inputs within the magnitudes it was
        // computed from (exact inputs are the same values): no second interval rule.
        let within = |(&i, b): (&NodeId, &InputBox<'_, T>)| match (&self.mag[i], b) {
            (Some(m), InputBox::Sym(b)) => b.iter().zip(m).all(|(x, y)| x <= y),
            (_, InputBox::Exact(_)) => true,
            (None, InputBox::Sym(_)) => false,
        };
        if id < self.stale
            && let Some(Some(step)) = self.step.get(id)
            && inputs.iter().zip(&boxes).all(within)
        {
            step.widen(lo, hi);
        } else if let Some(step) = self.step_from(g, id, op, &boxes)? {
            step.widen(lo, hi);
        }
        Ok(())
    }

    /// Forward mode: move the biases of `form`, the linear bounds of node `id` that its
    /// operator composed from its inputs' (`ins`: for each input, the magnitude of its
    /// form's terms over the set, [`form_magnitude`], or the values of an exact input;
    /// `bounds`: the input bounds its relaxation used), outward by the composition's
    /// rounding. Composing `W·(A·x + b) + c` rounds by at most `γ·(|c| + |W|·m)` where
    /// `m ≥ |A|·|x| + |b|`: the operator's error model on the box `[−m, m]`.
    pub fn widen_form(
        &self,
        g: &Graph<T>,
        id: NodeId,
        ins: Vec<InputBox<'_, T>>,
        bounds: &[Option<Vec<T>>],
        form: &mut lirpa_core::LinearForm<T>,
    ) -> Result<()> {
        let Some(op) = g.node(id).op() else { return Ok(()) };
        // Relaxations hold on the input bounds they were given: cover those too.
        let boxes: Vec<InputBox<'_, T>> = ins
            .into_iter()
            .zip(bounds)
            .map(|(m, b)| match (m, b) {
                (InputBox::Sym(m), Some(b)) => {
                    InputBox::Sym(m.iter().zip(b).map(|(x, y)| x.max(*y)).collect())
                }
                (m, _) => m,
            })
            .collect();
        if let Some(step) = self.step_from(g, id, op, &boxes)? {
            step.widen(&mut form.lb, &mut form.ub);
        }
        Ok(())
    }

    /// Forward mode: the rounding error of concretizing the columns `m` of a form over
    /// perturbed input `id`'s set.
    pub fn form_concretize_error(&self, id: NodeId, m: MatRef<'_, T>) -> Option<Vec<f64>> {
        Some(concretization_error(m, None, self.mag[id].as_ref()?))
    }

    /// Move `bias` outward by the error of the backward step through node `id` with
    /// coefficients `a` (those the operator receives).
    pub fn step(&self, id: NodeId, a: &LinearA<T>, bias: &mut LinearBias<T>) {
        let Some(Some(s)) = self.step.get(id) else { return };
        widen_bias(a, &s.back, 1.0, s.eta, bias);
    }

    /// The error of summing coefficients at fan-out into `acc` on node `id` (one
    /// rounding per entry, relative to the sum).
    pub fn fan_out(&self, id: NodeId, acc: &LinearA<T>, bias: &mut LinearBias<T>) {
        let Some(Some(m)) = self.mag.get(id) else { return };
        widen_bias(acc, m, gamma(unit_roundoff::<T>(), 1), 0.0, bias);
    }
}

/// The magnitude of a form's terms over a set within `[−mx, mx]` (all perturbed inputs'
/// columns): `max(|lw|·mx + |lb|, |uw|·mx + |ub|)` per row, rounded up.
pub(super) fn form_magnitude<T: Scalar>(f: &lirpa_core::LinearForm<T>, mx: &[T]) -> Vec<T> {
    let l = abs_dot(f.lw.as_ref(), None, mx);
    let u = abs_dot(f.uw.as_ref(), None, mx);
    (0..f.lb.len())
        .map(|k| {
            let m = (l[k] + f.lb[k].abs().as_f64()).max(u[k] + f.ub[k].abs().as_f64());
            raise_by(T::zero(), up(m))
        })
        .collect()
}

/// Forward mode: `C·form` with the product's rounding outward (`γ·|C|·m`, `m` the form's
/// term magnitudes).
pub(super) fn spec_of_form<T: Scalar>(
    c: MatRef<'_, T>,
    f: &lirpa_core::LinearForm<T>,
    m: &[T],
    par: faer::Par,
) -> Result<lirpa_core::LinearForm<T>> {
    let dim = f.lw.ncols();
    let rows = c.nrows();
    let mut out = lirpa_core::LinearForm {
        lw: faer::Mat::zeros(rows, dim),
        lb: vec![T::zero(); rows],
        uw: faer::Mat::zeros(rows, dim),
        ub: vec![T::zero(); rows],
    };
    let c = c.to_owned();
    lirpa_core::linear::substitute_form(&mut out, &c, &c, f, par)?;
    let n = c.ncols() + 2;
    let (g, eta) = (gamma(unit_roundoff::<T>(), n), FpSound::Real.underflow::<T>(n));
    for (k, d) in abs_dot(c.as_ref(), None, m).into_iter().enumerate() {
        let w = up(g * d + eta);
        out.lb[k] = lower_by(out.lb[k], w);
        out.ub[k] = raise_by(out.ub[k], w);
    }
    Ok(out)
}

/// `bias.lower -= factor·|a.lower|·m + eta`, `bias.upper += factor·|a.upper|·m + eta`.
fn widen_bias<T: Scalar>(a: &LinearA<T>, m: &[T], factor: f64, eta: f64, bias: &mut LinearBias<T>) {
    let w = a.window.as_ref();
    if let Some(al) = &a.lower {
        for (b, d) in bias.lower.iter_mut().zip(abs_dot(al.as_ref(), w, m)) {
            *b = lower_by(*b, up(factor * d + eta));
        }
    }
    if let Some(au) = &a.upper {
        for (b, d) in bias.upper.iter_mut().zip(abs_dot(au.as_ref(), w, m)) {
            *b = raise_by(*b, up(factor * d + eta));
        }
    }
}

/// The error of a product `C·v` (a specification or coefficients times exact values)
/// over `n` columns: `γ·|C|·|v|` plus underflow.
pub(super) fn product_error<T: Scalar>(
    c: MatRef<'_, T>,
    window: Option<&lirpa_core::Window>,
    v: &[T],
) -> Vec<f64> {
    let n = c.ncols() + 2;
    let (g, eta) = (gamma(unit_roundoff::<T>(), n), FpSound::Real.underflow::<T>(n));
    let absv: Vec<T> = v.iter().map(|x| x.abs()).collect();
    abs_dot(c, window, &absv).into_iter().map(|d| up(g * d + eta)).collect()
}

impl<'g, T: Scalar> State<'g, T> {
    /// The sound mode's state for this computation, or `None` when it is off; refuses
    /// what the mode cannot bound (operators without an error model; inexact operators
    /// evaluated on exact inputs).
    pub(super) fn fp_state(&self) -> Result<Option<FpState<T>>> {
        let mode = self.opts.fp_sound;
        if !mode.is_on() {
            return Ok(None);
        }
        for (id, node) in self.graph.nodes().iter().enumerate() {
            if let (Some(op), false) = (node.op(), self.perturbed[id]) {
                let r = rounding_of(self.graph, id, op)?;
                if !matches!(r.kind, FpKind::Exact | FpKind::Selection) {
                    return Err(Error::Unimplemented {
                        node: node.name.clone(),
                        op_type: op.op_type().to_string(),
                        msg: "floating-point-sound bounds (--fp-sound) of a value computed from exact inputs"
                            .into(),
                    });
                }
            }
        }
        let n = self.graph.len();
        let mut fp = FpState {
            mode,
            mag: vec![None; n],
            ivl: vec![None; n],
            step: (0..n).map(|_| None).collect(),
            stale: 0,
        };
        fp.refresh(self, None)?;
        Ok(Some(fp))
    }

    /// The interval of perturbed input `id`, rounded outward (a ball's `c ± ε` is
    /// rounded).
    pub(super) fn input_interval(&self, id: NodeId) -> Bounds<T> {
        let p = self.ptb[id].expect("perturbed input");
        let (mut l, mut u) = p.interval();
        if self.opts.fp_sound.is_on() && matches!(p, Perturbation::Ball { .. }) {
            let uu = unit_roundoff::<T>();
            l.iter_mut().for_each(|x| *x = lower_by(*x, up(x.abs().as_f64() * uu)));
            u.iter_mut().for_each(|x| *x = raise_by(*x, up(x.abs().as_f64() * uu)));
        }
        (l, u)
    }

    /// In the sound mode, the error of concretizing coefficients `a` (one side, on the
    /// perturbed input `id`) over its set: `γ·|a|·M` with `M` the set's magnitudes.
    pub(super) fn concretize_error(&self, id: NodeId, a: &LinearA<T>, m: &faer::Mat<T>) -> Option<Vec<f64>> {
        let mag = self.fp.as_ref()?.mag[id].as_ref()?;
        Some(concretization_error(m.as_ref(), a.window.as_ref(), mag))
    }

    /// `bias += x`, rounded outward in the sound mode (each sum is within one ulp).
    pub(super) fn add_bias(&self, bias: &mut LinearBias<T>, x: &LinearBias<T>) {
        bias.add_assign(x);
        if self.opts.fp_sound.is_on() {
            bias.lower.iter_mut().for_each(|b| *b = b.next_down());
            bias.upper.iter_mut().for_each(|b| *b = b.next_up());
        }
    }

    /// `bias += a·v` for exact values `v`, with the product's error outward.
    pub(super) fn add_times_vector(&self, bias: &mut LinearBias<T>, a: &LinearA<T>, v: &[T]) {
        let mut x = a.times_vector(v);
        if self.opts.fp_sound.is_on() {
            let w = a.window.as_ref();
            if let Some(m) = &a.lower {
                for (b, e) in x.lower.iter_mut().zip(product_error(m.as_ref(), w, v)) {
                    *b = lower_by(*b, e);
                }
            }
            if let Some(m) = &a.upper {
                for (b, e) in x.upper.iter_mut().zip(product_error(m.as_ref(), w, v)) {
                    *b = raise_by(*b, e);
                }
            }
        }
        self.add_bias(bias, &x);
    }
}

/// `acc += x` element-wise, rounded outward (down when `upper` is false) when `sound`.
pub(super) fn add_outward<T: Scalar>(acc: &mut [T], x: &[T], upper: bool, sound: bool) {
    for (a, b) in acc.iter_mut().zip(x) {
        *a += *b;
        if sound {
            *a = if upper { a.next_up() } else { a.next_down() };
        }
    }
}

/// The rounding error of concretizing coefficients `m` (windowed by `window`) over a
/// set within `[−mag, mag]`: the centre and radius (or the dual norm) and the sums,
/// at most `2n + 8` roundings per term.
fn concretization_error<T: Scalar>(
    m: MatRef<'_, T>,
    window: Option<&lirpa_core::Window>,
    mag: &[T],
) -> Vec<f64> {
    let n = 2 * m.ncols() + 8;
    let (g, eta) = (gamma(unit_roundoff::<T>(), n), FpSound::Real.underflow::<T>(n));
    let sum: f64 = mag.iter().map(|x| x.as_f64()).sum();
    let eta = up(eta * up(1.0 + sum));
    abs_dot(m, window, mag).into_iter().map(|d| up(g * d + eta)).collect()
}

/// Move each value of `v` outward (up when `upper`) by its error bound, if any.
pub(super) fn move_out<T: Scalar>(v: &mut [T], err: Option<Vec<f64>>, upper: bool) {
    let Some(err) = err else { return };
    for (x, e) in v.iter_mut().zip(err) {
        *x = if upper { raise_by(*x, e) } else { lower_by(*x, e) };
    }
}

/// Bounds of `C·v` for exact values `v`, from its rounded value `y`.
pub(super) fn widen_product<T: Scalar>(c: MatRef<'_, T>, v: &[T], y: Vec<T>) -> Bounds<T> {
    let err = product_error(c, None, v);
    let (mut lo, mut hi) = (y.clone(), y);
    move_out(&mut lo, Some(err.clone()), false);
    move_out(&mut hi, Some(err), true);
    (lo, hi)
}

/// A bias entry `b'` just updated by `b' = b − d·σ·β·t` (with the coefficient, now
/// `m'`, updated by `d·σ·β`), moved outward (down on the lower side, `upper` false) by
/// the rounding of both updates: the exact term for the multiplier the coefficient
/// actually received, `β' = |m' − m|`, differs from the computed one by at most
/// `u·|m'|·|t|`, and the bias update rounds at most four times.
pub(super) fn beta_term_outward<T: Scalar>(b: T, beta_t: T, m: T, t: T, upper: bool) -> T {
    let u = unit_roundoff::<T>();
    let (b64, bt) = (b.abs().as_f64(), beta_t.abs().as_f64());
    let err = up(gamma(u, 4) * (b64 + 2.0 * bt) + gamma(u, 1) * t.abs().as_f64() * m.abs().as_f64())
        + FpSound::Real.underflow::<T>(4);
    if upper { raise_by(b, up(err)) } else { lower_by(b, up(err)) }
}

impl<T: Scalar> State<'_, T> {
    /// `C·y` for `y` in the box `[l, u]`, rounded outward.
    pub(super) fn concretize_box_sound(&self, c: MatRef<'_, T>, l: &[T], u: &[T]) -> Bounds<T> {
        let mut lo = lirpa_core::perturbation::concretize_box(c, l, u, false);
        let mut hi = lirpa_core::perturbation::concretize_box(c, l, u, true);
        let err = concretization_error(c, None, &magnitudes(l, u));
        move_out(&mut lo, Some(err.clone()), false);
        move_out(&mut hi, Some(err), true);
        (lo, hi)
    }
}

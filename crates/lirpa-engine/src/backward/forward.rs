//! Forward mode (auto_LiRPA's `forward`, Xu et al. 2020): every node gets linear bounds
//! `lw·x + lb <= v <= uw·x + ub` in terms of the perturbed inputs `x` (all perturbed
//! inputs concatenated), from its inputs' linear bounds through the operator's
//! [`forward_linear`](lirpa_core::LinearRelaxation::forward_linear) rule; each node's
//! bounds are those linear bounds concretized over the perturbation sets. Memory is
//! `O(numel × input dimension)` per node.
//!
//! `forward+backward` computes intermediate bounds this way and the bounded node by a
//! backward (CROWN) pass.

use super::{BoundResult, Bounds, State, fpsound};
use crate::options::{BoundOptions, BoundRequest, Method};
use faer::{Mat, MatRef};
use lirpa_core::op::{BackwardCtx, Interval};
use lirpa_core::{
    Error, FormInput, Graph, LinearA, LinearBias, LinearForm, NodeKind, Operator, Result, Scalar,
};
use smallvec::SmallVec;

pub(super) fn compute_bounds_forward<T: Scalar>(
    graph: &Graph<T>,
    inputs: &[super::InputValue<T>],
    opts: &BoundOptions,
    req: &BoundRequest<'_, T>,
) -> Result<BoundResult<T>> {
    let mut st = State::new(graph, inputs, opts)?;
    let target = st.check_request(req)?;
    if !st.perturbed[target] {
        let plain = BoundOptions { method: Method::Crown, ..opts.clone() };
        return State::new(graph, inputs, &plain)?.run(req);
    }
    // Column offsets of the perturbed inputs.
    let mut offsets = vec![usize::MAX; graph.len()];
    let mut dim = 0;
    for &id in graph.inputs() {
        if st.ptb[id].is_some() {
            offsets[id] = dim;
            dim += graph.node(id).numel();
        }
    }
    let last = if opts.method == Method::Forward { target } else { target.saturating_sub(1) };
    let cone = st.cone(target);
    let mut forms: Vec<Option<LinearForm<T>>> = (0..=target).map(|_| None).collect();
    // Each node's forward-mode bounds intersected with the interval rule on its inputs'
    // (likewise intersected) bounds. Relaxations use the forward-mode bounds, as
    // auto_LiRPA does; where one refuses them (linear bounds concretized over a wide set
    // can leave a function's domain where IBP's do not, e.g. Sqrt(sigmoid(x) + 0.1)),
    // its inputs take these instead and the rule is applied again.
    let mut tight: Vec<Option<Bounds<T>>> = vec![None; target + 1];
    // The sound mode's magnitudes: of the perturbed inputs' sets (all columns), and of
    // each node's form's terms.
    let mut mags: Vec<Option<Vec<T>>> = vec![None; target + 1];
    let input_mag: Vec<T> = match &st.fp {
        None => Vec::new(),
        Some(_) => {
            let mut m = vec![T::zero(); dim];
            for &id in graph.inputs() {
                if st.ptb[id].is_some() {
                    let (l, u) = st.input_interval(id);
                    m[offsets[id]..offsets[id] + l.len()]
                        .copy_from_slice(&lirpa_core::fpsound::magnitudes(&l, &u));
                }
            }
            m
        }
    };
    for id in 0..=last {
        if !cone[id] || !st.perturbed[id] {
            continue;
        }
        let node = graph.node(id);
        let n = node.numel();
        let form = match &node.kind {
            NodeKind::Input => {
                let mut w = Mat::<T>::zeros(n, dim);
                for j in 0..n {
                    w[(j, offsets[id] + j)] = T::one();
                }
                LinearForm { lw: w.clone(), lb: vec![T::zero(); n], uw: w, ub: vec![T::zero(); n] }
            }
            NodeKind::Constant(_) => continue,
            NodeKind::Op(op) => match forward_rule(&st, id, op.as_ref(), &forms, dim) {
                Ok(f) => f,
                Err(e) => {
                    let mut changed = false;
                    for &i in &node.inputs {
                        if let Some(t) = &tight[i]
                            && st.bounds[i].as_ref() != Some(t)
                        {
                            st.bounds[i] = Some(t.clone());
                            changed = true;
                        }
                    }
                    if !changed {
                        return Err(e);
                    }
                    forward_rule(&st, id, op.as_ref(), &forms, dim)?
                }
            },
        };
        let mut form = form;
        if let (Some(fp), NodeKind::Op(_)) = (&st.fp, &node.kind) {
            // The composition's rounding, outward.
            let ins: Vec<fpsound::InputBox<'_, T>> = node
                .inputs
                .iter()
                .map(|&i| match (&st.values[i], &mags[i]) {
                    (Some(v), _) => fpsound::InputBox::Exact(v),
                    (None, Some(m)) => fpsound::InputBox::Sym(m.clone()),
                    (None, None) => unreachable!("inputs have forms before their consumers"),
                })
                .collect();
            let used: Vec<Option<Vec<T>>> = node
                .inputs
                .iter()
                .map(|&i| st.bounds[i].as_ref().map(|(l, u)| lirpa_core::fpsound::magnitudes(l, u)))
                .collect();
            fp.widen_form(graph, id, ins, &used, &mut form)?;
        }
        if st.fp.is_some() {
            mags[id] = Some(fpsound::form_magnitude(&form, &input_mag));
        }
        let (lo, hi) = concretize_form(&st, &form, &offsets)?;
        if let Some(i) = lo.iter().chain(&hi).position(|x| x.is_nan()) {
            return Err(Error::NonFinite(format!("forward-mode bound {i} of node '{}'", node.name)));
        }
        tight[id] = Some(match node.op().map(|op| interval_on(&st, &tight, id, op)) {
            // A refused interval rule leaves the forward-mode bounds as they are.
            Some(Ok((il, iu))) => (
                lo.iter().zip(il).map(|(a, b)| a.max(b)).collect(),
                hi.iter().zip(iu).map(|(a, b)| a.min(b)).collect(),
            ),
            _ => (lo.clone(), hi.clone()),
        });
        st.bounds[id] = Some((lo, hi));
        forms[id] = Some(form);
    }
    let (lower, upper) = if opts.method == Method::Forward {
        let f = match (req.c, &mags[target]) {
            (None, _) => forms[target].take().expect("the bounded node has a form"),
            // The sound mode substitutes the form directly, with the product's error.
            (Some(c), Some(m)) => fpsound::spec_of_form(
                c,
                forms[target].as_ref().expect("the bounded node has a form"),
                m,
                st.par,
            )?,
            (Some(c), None) => spec_form(&st, target, c, &forms, dim)?,
        };
        let (mut lo, mut hi) = concretize_form(&st, &f, &offsets)?;
        if !req.lower {
            lo.iter_mut().for_each(|x| *x = T::neg_infinity());
        }
        if !req.upper {
            hi.iter_mut().for_each(|x| *x = T::infinity());
        }
        (lo, hi)
    } else {
        // The backward pass's error models from the bounds its relaxations will use.
        st.fp_refresh(None)?;
        let c = LinearA::both(st.spec_mat(target, req), req.lower, req.upper);
        let (roots, bias) = st.backward_from(target, c, st.par)?;
        st.concretize(&roots, &bias, req.lower, req.upper)
    };
    let name = &graph.node(target).name;
    if let Some(i) = lower.iter().chain(&upper).position(|x| x.is_nan()) {
        return Err(Error::NonFinite(format!("bound {i} of node '{name}'")));
    }
    Ok(BoundResult { lower, upper, a: vec![], bias: None, node_a: vec![] })
}

/// The forward-mode rule of operator node `id` from its inputs' linear bounds, with
/// their element-wise bounds in `st.bounds`.
fn forward_rule<T: Scalar>(
    st: &State<'_, T>,
    id: usize,
    op: &dyn Operator<T>,
    forms: &[Option<LinearForm<T>>],
    dim: usize,
) -> Result<LinearForm<T>> {
    let node = st.graph.node(id);
    let ins: SmallVec<[FormInput<'_, T>; 4]> = node
        .inputs
        .iter()
        .map(|&i| match (&st.values[i], &forms[i]) {
            (Some(v), _) => Ok(FormInput::Exact(v)),
            (None, Some(f)) => Ok(FormInput::Linear(f)),
            (None, None) => Err(Error::Invalid(format!("forward mode: input {i} has no bounds"))),
        })
        .collect::<Result<_>>()?;
    let ctx_bounds = input_intervals(st, &st.bounds, &node.inputs);
    let ctx = BackwardCtx { input_bounds: &ctx_bounds, options: &st.opts.relax, par: st.par };
    op.forward_linear(&ctx, &ins, node.numel(), dim).map_err(|e| e.at_node(&node.name, op.op_type()))
}

/// The intervals of `inputs`: their values, else their `bounds` (`None`: not bounded).
fn input_intervals<'a, T: Scalar>(
    st: &'a State<'_, T>,
    bounds: &'a [Option<Bounds<T>>],
    inputs: &[usize],
) -> SmallVec<[Option<Interval<'a, T>>; 4]> {
    inputs
        .iter()
        .map(|&i| match (&st.values[i], &bounds[i]) {
            (Some(v), _) => Some(Interval { lower: v, upper: v }),
            (None, Some((l, u))) => Some(Interval { lower: l.as_slice(), upper: u.as_slice() }),
            (None, None) => None,
        })
        .collect()
}

/// The interval rule of operator node `id` on its inputs' values and `bounds`.
fn interval_on<T: Scalar>(
    st: &State<'_, T>,
    bounds: &[Option<Bounds<T>>],
    id: usize,
    op: &dyn Operator<T>,
) -> Result<Bounds<T>> {
    let node = st.graph.node(id);
    let ins: SmallVec<[Interval<'_, T>; 4]> = input_intervals(st, bounds, &node.inputs)
        .into_iter()
        .zip(&node.inputs)
        .map(|(b, i)| b.ok_or_else(|| Error::Invalid(format!("forward mode: input {i} has no bounds"))))
        .collect::<Result<_>>()?;
    let (mut lo, mut hi) = (vec![T::zero(); node.numel()], vec![T::zero(); node.numel()]);
    op.interval(&ins, &mut lo, &mut hi).map_err(|e| e.at_node(&node.name, op.op_type()))?;
    if let Some(fp) = &st.fp {
        fp.widen(st, id, &ins, &mut lo, &mut hi)?;
    }
    Ok((lo, hi))
}

/// Linear bounds of `C·target`: `C` is first carried back exactly through the trailing
/// affine operators (as auto_LiRPA merges it into the last linear layer), then the linear
/// bounds of the nodes where that stops are substituted with the sign split.
fn spec_form<T: Scalar>(
    st: &State<'_, T>,
    target: usize,
    c: MatRef<'_, T>,
    forms: &[Option<LinearForm<T>>],
    dim: usize,
) -> Result<LinearForm<T>> {
    let rows = c.nrows();
    let mut pending: Vec<Option<LinearA<T>>> = (0..=target).map(|_| None).collect();
    pending[target] = Some(LinearA::both(c.to_owned(), true, true));
    let mut bias = LinearBias::zeros(rows);
    let mut out = LinearForm {
        lw: Mat::zeros(rows, dim),
        lb: vec![T::zero(); rows],
        uw: Mat::zeros(rows, dim),
        ub: vec![T::zero(); rows],
    };
    for id in (0..=target).rev() {
        let Some(a) = pending[id].take() else { continue };
        let node = st.graph.node(id);
        if let Some(v) = &st.values[id] {
            bias.add_assign(&a.times_vector(v));
            continue;
        }
        match node.op() {
            Some(op) if op.is_affine() => {
                let res = st
                    .backward_op(node.inputs.as_slice(), op, a.into_dense(), st.par)
                    .map_err(|e| e.at_node(&node.name, op.op_type()))?;
                bias.add_assign(&res.bias);
                for (k, ak) in res.inputs.into_iter().enumerate() {
                    if let (Some(ak), Some(&i)) = (ak, node.inputs.get(k)) {
                        let ak = st.settle(i, ak.into_dense())?;
                        match &mut pending[i] {
                            Some(acc) => acc.add_assign(ak)?,
                            slot @ None => *slot = Some(ak),
                        }
                    }
                }
            }
            _ => {
                let f = forms[id].as_ref().ok_or_else(|| {
                    Error::Invalid(format!("forward mode: node '{}' has no linear bounds", node.name))
                })?;
                let a = a.into_dense();
                let (al, au) = (a.lower.expect("both sides"), a.upper.expect("both sides"));
                lirpa_core::linear::substitute_form(&mut out, &al, &au, f, st.par)?;
            }
        }
    }
    out.lb.iter_mut().zip(&bias.lower).for_each(|(a, b)| *a += *b);
    out.ub.iter_mut().zip(&bias.upper).for_each(|(a, b)| *a += *b);
    Ok(out)
}

/// Element-wise bounds from linear bounds: each perturbed input's block of columns is
/// concretized over its set.
fn concretize_form<T: Scalar>(
    st: &State<'_, T>,
    f: &LinearForm<T>,
    offsets: &[usize],
) -> Result<(Vec<T>, Vec<T>)> {
    let (mut lo, mut hi) = (f.lb.clone(), f.ub.clone());
    for (id, &off) in offsets.iter().enumerate() {
        if off == usize::MAX {
            continue;
        }
        let p = st.ptb[id].expect("perturbed input");
        let n = st.graph.node(id).numel();
        let (wl, wu) = (f.lw.as_ref().subcols(off, n), f.uw.as_ref().subcols(off, n));
        let (mut cl, mut cu) = (p.concretize(wl, false), p.concretize(wu, true));
        if let Some(fp) = &st.fp {
            fpsound::move_out(&mut cl, fp.form_concretize_error(id, wl), false);
            fpsound::move_out(&mut cu, fp.form_concretize_error(id, wu), true);
        }
        fpsound::add_outward(&mut lo, &cl, false, st.fp.is_some());
        fpsound::add_outward(&mut hi, &cu, true, st.fp.is_some());
    }
    Ok((lo, hi))
}

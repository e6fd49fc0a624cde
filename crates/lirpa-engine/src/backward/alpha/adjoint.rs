//! The adjoint sweep of α/β-CROWN: the gradient of a bound with respect to the
//! relaxation parameters and the split multipliers, written by hand.
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
//! [`OptimizableRelaxation::param_grad`]: lirpa_core::OptimizableRelaxation::param_grad

use super::*;
use crate::backward::row_slice;

/// The dense matrix of an affine operator, per perturbed input edge (`numel(out) ×
/// numel(input)`), and its constant term: the adjoint sweep evaluates affine nodes for
/// all rows at once with it.
pub(super) struct AffineMap<T> {
    mats: Vec<Option<Mat<T>>>,
    bias: Vec<T>,
}

/// Lazily built [`AffineMap`]s per node (`None`: too large or mostly zeros, evaluated
/// row by row).
pub(super) type AffineCache<T> = Vec<OnceLock<Option<AffineMap<T>>>>;

pub(super) fn affine_cache<T>(n: usize) -> AffineCache<T> {
    (0..n).map(|_| OnceLock::new()).collect()
}

/// Largest dense affine map kept (elements).
const AFFINE_MAP_LIMIT: usize = 1 << 24;

/// What a pass keeps for the gradient sweep.
pub(super) struct PassRecord<T: Scalar> {
    pub(super) roots: Vec<(NodeId, LinearA<T>)>,
    pub(super) recorded: Vec<Option<LinearA<T>>>,
    /// Rows whose backward bound is the node's bound (tighter than IBP), per side.
    pub(super) active: [Vec<bool>; 2],
}

impl<'g, T: Scalar> State<'g, T> {
    /// The reverse sweep over the passes (final first, then intermediate passes in
    /// reverse topological order), accumulating `∂loss/∂bounds` of intermediate nodes.
    pub(super) fn reverse(
        &self,
        run: &AlphaRun<T>,
        records: &[Option<PassRecord<T>>],
        cache: &AffineCache<T>,
    ) -> Result<Vec<Vec<T>>> {
        let n_nodes = self.graph.len();
        // ∂loss/∂(lower, upper bounds) of each node, allocated on first use.
        let mut gb: Vec<[Vec<T>; 2]> = (0..n_nodes).map(|_| [vec![], vec![]]).collect();
        let last = run.passes.len() - 1;
        let mut grads: Vec<Vec<[Option<Vec<T>>; 2]>> =
            run.passes.iter().map(|p| p.nodes.iter().map(|_| [None, None]).collect()).collect();
        let starts: Vec<NodeId> = run.passes.iter().map(|p| p.start).collect();
        let mut beta_grad: Option<Vec<T>> = None;
        let mut cursor = run.passes[last].start + 1;
        for p in (0..=last).rev() {
            let pass = &run.passes[p];
            // Nodes bounded by interval propagation between this pass and the next one
            // pass their bound gradients on to their inputs first (reverse order).
            for id in (pass.start + 1..cursor).rev() {
                if !starts.contains(&id) {
                    self.tight_bounds_grad(id, &mut gb)?;
                }
            }
            cursor = pass.start + 1;
            let rec = records[p].as_ref().expect("every pass was evaluated");
            let rows = pass.rows.len();
            // The adjoint sweep and the parameter gradients read dense coefficients, except
            // optimizable relaxations that take windows.
            let slot = slots(&pass.nodes, pass.start + 1);
            let roots: Vec<(NodeId, Cow<'_, LinearA<T>>)> =
                rec.roots.iter().map(|(i, a)| (*i, densified(a))).collect();
            let recorded: Vec<Option<Cow<'_, LinearA<T>>>> = rec
                .recorded
                .iter()
                .enumerate()
                .map(|(id, a)| {
                    let keep = slot.get(id).copied().flatten().is_some()
                        && self.optimizable(id).is_some_and(|o| o.supports_window());
                    a.as_ref().map(|a| if keep { Cow::Borrowed(a) } else { densified(a) })
                })
                .collect();
            for side in [false, true] {
                let s = side as usize;
                let weight: Vec<T> = if p == last {
                    if side != run.upper {
                        continue;
                    }
                    vec![T::one(); rows]
                } else {
                    let g = &gb[pass.start][s];
                    pass.rows
                        .iter()
                        .enumerate()
                        .map(|(r, &j)| if rec.active[s][r] && !g.is_empty() { g[j] } else { T::zero() })
                        .collect()
                };
                let beta = if p == last { run.beta.as_ref() } else { None };
                if (pass.nodes.is_empty() && beta.is_none()) || weight.iter().all(|w| *w == T::zero()) {
                    continue;
                }
                let z = self.adjoint_forward(
                    pass.start,
                    &roots,
                    &recorded,
                    &pass.nodes,
                    &slot,
                    side,
                    rows,
                    cache,
                )?;
                for (k, node) in pass.nodes.iter().enumerate() {
                    let params = if side { &node.upper } else { &node.lower };
                    let Some(params) = params else { continue };
                    let rec_a = recorded[node.node].as_deref();
                    let a = rec_a.and_then(|a| side_of(a, side));
                    let window = rec_a.and_then(|a| a.window.as_ref());
                    let mut g = vec![T::zero(); params.len()];
                    if let Some(a) = a {
                        let opt = self.optimizable(node.node).expect("optimizable");
                        let zin = self.input_rows(node.node, &z, rows);
                        let zs: SmallVec<[&[T]; 4]> = zin.iter().map(|x| &**x).collect();
                        self.for_groups(node.node, rows, |r, ctx| {
                            let (params, zs) = (row_slice(params, &r, rows), rows_of(&zs, &r, rows));
                            let g = row_slice_mut(&mut g, &r, rows);
                            let block = a.as_ref().subrows(r.start, r.len());
                            match window {
                                None => opt.param_grad(ctx, params, block, side, &zs, g),
                                Some(w) if r.len() == rows => {
                                    opt.param_grad_window(ctx, params, a, w, side, &zs, g)
                                }
                                Some(w) => {
                                    let (a, w) = (block.to_owned(), w.row_block(r));
                                    opt.param_grad_window(ctx, params, &a, &w, side, &zs, g)
                                }
                            }
                        })?;
                        let w = node.width;
                        for (r, &wr) in weight.iter().enumerate() {
                            g[r * w..(r + 1) * w].iter_mut().for_each(|x| *x *= wr);
                        }
                        if p == 0 {
                            // No earlier pass: nothing reads bound gradients.
                            grads[p][k][s] = Some(g);
                            continue;
                        }
                        let ins = &self.graph.node(node.node).inputs;
                        let sized = || -> Vec<Vec<T>> {
                            ins.iter().map(|&i| vec![T::zero(); self.graph.node(i).numel()]).collect()
                        };
                        let (mut bl, mut bu) = (sized(), sized());
                        self.with_ctx(node.node, |ctx| match window {
                            None => {
                                opt.bounds_grad(ctx, params, a.as_ref(), side, &zs, &weight, &mut bl, &mut bu)
                            }
                            Some(w) => opt
                                .bounds_grad_window(ctx, params, a, w, side, &zs, &weight, &mut bl, &mut bu),
                        })?;
                        for (e, &i) in ins.iter().enumerate() {
                            for (t, src) in [(0, &bl[e]), (1, &bu[e])] {
                                if src.iter().all(|x| *x == T::zero()) {
                                    continue;
                                }
                                let acc = &mut gb[i][t];
                                if acc.is_empty() {
                                    *acc = vec![T::zero(); src.len()];
                                }
                                acc.iter_mut().zip(src).for_each(|(a, b)| *a += *b);
                            }
                        }
                    }
                    grads[p][k][s] = Some(g);
                }
                if let Some(b) = beta {
                    beta_grad = Some(self.beta_grad(b, &z, side));
                }
            }
        }
        // Flatten in the order of `params_mut`; absent gradients are zeros.
        let mut out = Vec::new();
        for (p, pass) in run.passes.iter().enumerate() {
            for (k, node) in pass.nodes.iter().enumerate() {
                for (s, params) in [&node.lower, &node.upper].into_iter().enumerate() {
                    if let Some(params) = params {
                        out.push(grads[p][k][s].take().unwrap_or_else(|| vec![T::zero(); params.len()]));
                    }
                }
            }
        }
        if let Some(b) = &run.beta {
            out.push(beta_grad.unwrap_or_else(|| vec![T::zero(); b.values.len()]));
        }
        Ok(out)
    }

    /// `∂bound_r/∂β_rk` of the final pass (side `upper`): by the envelope theorem, the
    /// constraint's term `∓σ·(z − t)` at the adjoint values `z` (the linearized network
    /// of row `r` at its optimal input point), as for the relaxation parameters.
    fn beta_grad(&self, b: &BetaParams<T>, z: &[Option<Vec<T>>], upper: bool) -> Vec<T> {
        let k_all = b.constraints.len();
        let mut g = vec![T::zero(); b.values.len()];
        let dir = if upper { T::one() } else { -T::one() };
        for (k, c) in b.constraints.iter().enumerate() {
            let Some(zc) = z.get(c.node).and_then(|v| v.as_ref()) else { continue };
            let n = self.graph.node(c.node).numel();
            let (sigma, t) = (T::from_f64(c.sign()), T::from_f64(c.threshold));
            for (r, row) in g.chunks_mut(k_all).enumerate() {
                row[k] = dir * sigma * (zc[r * n + c.index] - t);
            }
        }
        g
    }

    /// `∂loss/∂bounds` of node `id` passed on to its input's bounds when the node was
    /// bounded by interval propagation from them (a non-affine operator whose interval
    /// rule is tight, e.g. Sigmoid between a backward pass and a product): the derivative
    /// of the interval rule by central differences, assuming it is element-wise. Each
    /// probe moves every other element's lower (or upper) input bound; an output of the
    /// untouched parity that moves shows the rule is not element-wise, and then nothing is
    /// passed on (the bounds stay constants for the gradient, as before). This only
    /// steers the optimization; it never affects soundness.
    fn tight_bounds_grad(&self, id: NodeId, gb: &mut [[Vec<T>; 2]]) -> Result<()> {
        let node = self.graph.node(id);
        let Some(op) = node.op() else { return Ok(()) };
        if !op.interval_is_tight() || op.is_affine() || (gb[id][0].is_empty() && gb[id][1].is_empty()) {
            return Ok(());
        }
        let perturbed: SmallVec<[usize; 2]> =
            (0..node.inputs.len()).filter(|&k| self.values[node.inputs[k]].is_none()).collect();
        if perturbed.len() != 1 {
            return Ok(());
        }
        let (k, i) = (perturbed[0], node.inputs[perturbed[0]]);
        let n = node.numel();
        let Some((l, u)) = &self.bounds[i] else { return Ok(()) };
        if l.len() != n {
            return Ok(());
        }
        let eval = |lo_in: &[T], hi_in: &[T]| -> Option<(Vec<T>, Vec<T>)> {
            let ins: SmallVec<[Interval<'_, T>; 4]> = node
                .inputs
                .iter()
                .enumerate()
                .map(|(e, &j)| {
                    if e == k {
                        Interval { lower: lo_in, upper: hi_in }
                    } else {
                        let v = self.values[j].as_deref().unwrap_or(&[]);
                        Interval { lower: v, upper: v }
                    }
                })
                .collect();
            let (mut lo, mut hi) = (vec![T::zero(); n], vec![T::zero(); n]);
            op.interval(&ins, &mut lo, &mut hi).ok()?;
            Some((lo, hi))
        };
        let rel = T::epsilon().sqrt();
        let (gl, gu) = (&gb[id][0], &gb[id][1]);
        let g = |v: &Vec<T>, j: usize| if v.is_empty() { T::zero() } else { v[j] };
        let mut acc = [vec![T::zero(); n], vec![T::zero(); n]];
        for (side, acc_side) in acc.iter_mut().enumerate() {
            for parity in 0..2 {
                let base = if side == 0 { l } else { u };
                // Steps small enough that the moved bound stays on its side of the
                // interval (a degenerate interval has no derivative here: step 0).
                let half = T::from_f64(0.5);
                let h: Vec<T> = (0..n)
                    .map(|j| {
                        if j % 2 == parity {
                            (rel * (T::one() + base[j].abs())).min(half * (u[j] - l[j])).max(T::zero())
                        } else {
                            T::zero()
                        }
                    })
                    .collect();
                let shifted =
                    |sign: T| -> Vec<T> { base.iter().zip(&h).map(|(&b, &d)| b + sign * d).collect() };
                let (plus, minus) = (shifted(T::one()), shifted(-T::one()));
                let pair = if side == 0 {
                    (eval(&plus, u), eval(&minus, u))
                } else {
                    (eval(l, &plus), eval(l, &minus))
                };
                let (Some((lp, hp)), Some((lm, hm))) = pair else {
                    return Ok(());
                };
                for j in 0..n {
                    if j % 2 != parity {
                        if lp[j] != lm[j] || hp[j] != hm[j] {
                            return Ok(());
                        }
                        continue;
                    }
                    let two_h = (plus[j] - minus[j]).abs();
                    if two_h == T::zero() {
                        continue;
                    }
                    let d = (g(gl, j) * (lp[j] - lm[j]) + g(gu, j) * (hp[j] - hm[j])) / two_h;
                    if d.is_finite() {
                        acc_side[j] += d;
                    }
                }
            }
        }
        for (t, src) in acc.into_iter().enumerate() {
            if src.iter().all(|x| *x == T::zero()) {
                continue;
            }
            let dst = &mut gb[i][t];
            if dst.is_empty() {
                *dst = vec![T::zero(); n];
            }
            dst.iter_mut().zip(&src).for_each(|(a, b)| *a += *b);
        }
        Ok(())
    }

    /// The dense map of affine node `id` (from its backward rule with identity
    /// coefficients), or `None` if it is too large or the rule fails.
    fn affine_map(&self, id: NodeId) -> Option<AffineMap<T>> {
        let node = self.graph.node(id);
        let op = node.op()?;
        let n = node.numel();
        let size: usize = node
            .inputs
            .iter()
            .filter(|&&i| self.values[i].is_none())
            .map(|&i| n * self.graph.node(i).numel())
            .sum();
        if size > AFFINE_MAP_LIMIT {
            return None;
        }
        // Probe a few rows first: sparse maps (convolutions, views, sums) are cheaper
        // row by row, and building them densely would cost a full pass.
        if n > 64 {
            let rows: Vec<usize> = (0..16).map(|k| k * n / 16).collect();
            let probe = LinearA::both(selection::<T>(&rows, n), true, false);
            let res = self.backward_op(node.inputs.as_slice(), op, probe, Par::Seq).ok()?;
            let (mut nnz, mut size) = (0usize, 0usize);
            for a in res.inputs.iter().flatten() {
                if let Some(m) = &a.clone().into_dense().lower {
                    size += m.nrows() * m.ncols();
                    nnz += (0..m.ncols())
                        .map(|j| m.col(j).iter().filter(|x| **x != T::zero()).count())
                        .sum::<usize>();
                }
            }
            if nnz * 4 < size {
                return None;
            }
        }
        let eye = LinearA::both(Mat::<T>::identity(n, n), true, false);
        let res = self.backward_op(node.inputs.as_slice(), op, eye, Par::Seq).ok()?;
        let mut mats = Vec::with_capacity(node.inputs.len());
        for (k, &i) in node.inputs.iter().enumerate() {
            if self.values[i].is_some() {
                mats.push(None);
                continue;
            }
            let m = res.inputs.get(k).cloned().flatten().map(|a| a.into_dense().lower)?;
            let m = m.unwrap_or_else(|| Mat::zeros(n, self.graph.node(i).numel()));
            if m.nrows() != n || m.ncols() != self.graph.node(i).numel() {
                return None;
            }
            // Sparse maps (convolutions, views, sums) are cheaper row by row.
            let nnz =
                (0..m.ncols()).map(|j| m.col(j).iter().filter(|x| **x != T::zero()).count()).sum::<usize>();
            if nnz * 4 < m.nrows() * m.ncols() {
                return None;
            }
            mats.push(Some(m));
        }
        let zeros: Vec<Vec<T>> =
            node.inputs.iter().map(|&i| vec![T::zero(); self.graph.node(i).numel()]).collect();
        let args: SmallVec<[&[T]; 4]> = node
            .inputs
            .iter()
            .zip(&zeros)
            .map(|(&i, z)| self.values[i].as_deref().unwrap_or(z.as_slice()))
            .collect();
        let mut bias = vec![T::zero(); n];
        op.forward(&args, &mut bias).ok()?;
        Some(AffineMap { mats, bias })
    }

    /// Values of node `id`'s inputs in the adjoint sweep, row-major `rows × numel`
    /// (constants repeated per row).
    fn input_rows<'a>(&'a self, id: NodeId, z: &'a [Option<Vec<T>>], rows: usize) -> Vec<Cow<'a, [T]>> {
        self.graph
            .node(id)
            .inputs
            .iter()
            .map(|&i| match (&self.values[i], z.get(i).and_then(|x| x.as_ref())) {
                (Some(v), _) => Cow::Owned((0..rows).flat_map(|_| v.iter().copied()).collect()),
                (None, Some(zi)) => Cow::Borrowed(zi.as_slice()),
                (None, None) => Cow::Owned(vec![T::zero(); rows * self.graph.node(i).numel()]),
            })
            .collect()
    }

    /// The adjoint sweep of side `upper` for a pass from `target`: the linearized
    /// network of each row evaluated at that row's optimal input point (see the module
    /// documentation).
    #[allow(clippy::too_many_arguments)]
    fn adjoint_forward(
        &self,
        target: NodeId,
        roots: &[(NodeId, Cow<'_, LinearA<T>>)],
        recorded: &[Option<Cow<'_, LinearA<T>>>],
        nodes: &[AlphaNode<T>],
        slot: &[Option<usize>],
        upper: bool,
        rows: usize,
        cache: &AffineCache<T>,
    ) -> Result<Vec<Option<Vec<T>>>> {
        let cone = self.cone(target);
        let mut z: Vec<Option<Vec<T>>> = vec![None; target + 1];
        for id in 0..=target {
            if !cone[id] || !self.perturbed[id] {
                continue;
            }
            let node = self.graph.node(id);
            let n = node.numel();
            let out = match &node.kind {
                NodeKind::Input => {
                    let p = self.ptb[id].expect("perturbed input");
                    match roots.iter().find(|(r, _)| *r == id).and_then(|(_, a)| side_of(a, upper)) {
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
                    // Building the dense map costs about `n` rows of products: worth it only
                    // when the run evaluates many more rows than that (a matrix product
                    // is a few times faster than row-by-row evaluation).
                    let worth =
                        rows.saturating_mul(self.opts.optimize.iterations.max(1)).saturating_mul(2) >= n;
                    let map = if op.is_affine() && worth {
                        cache[id].get_or_init(|| self.affine_map(id)).as_ref()
                    } else {
                        None
                    };
                    if let Some(map) = map {
                        // Batched: out = Σ_k Z_k · M_kᵀ + b, row-major.
                        let mut acc = Mat::<T>::zeros(rows, n);
                        for (k, &i) in node.inputs.iter().enumerate() {
                            let (Some(m), Some(zi)) = (&map.mats[k], &z[i]) else { continue };
                            let zr = MatRef::from_row_major_slice(zi.as_slice(), rows, m.ncols());
                            let par = lirpa_core::linear::par_for(rows, n, m.ncols(), self.par);
                            faer::linalg::matmul::matmul(
                                acc.as_mut(),
                                Accum::Add,
                                zr,
                                m.transpose(),
                                T::one(),
                                par,
                            );
                        }
                        for r in 0..rows {
                            for j in 0..n {
                                out[r * n + j] = acc[(r, j)] + map.bias[j];
                            }
                        }
                    } else if op.is_affine() {
                        let args: SmallVec<[BatchInput<'_, T>; 4]> = node
                            .inputs
                            .iter()
                            .map(|&i| match (&self.values[i], &z[i]) {
                                (Some(v), _) => BatchInput::Shared(v),
                                (None, Some(zi)) => BatchInput::Rows(zi.as_slice()),
                                (None, None) => unreachable!("inputs of a cone node are in the cone"),
                            })
                            .collect();
                        op.forward_batch(&args, rows, &mut out)
                            .map_err(|e| e.at_node(&node.name, op.op_type()))?;
                    } else if let Some((a, window)) = recorded[id]
                        .as_deref()
                        .and_then(|r| side_of(r, upper).map(|a| (a, r.window.as_ref())))
                    {
                        let zin = self.input_rows(id, &z, rows);
                        let zs: SmallVec<[&[T]; 4]> = zin.iter().map(|x| &**x).collect();
                        match (slot[id], op.optimizable()) {
                            (Some(k), Some(opt)) => {
                                let n = &nodes[k];
                                let params = if upper { &n.upper } else { &n.lower };
                                let params = params.as_deref().expect("parameters of a requested side");
                                self.for_groups(id, rows, |r, ctx| {
                                    let (params, zs) = (row_slice(params, &r, rows), rows_of(&zs, &r, rows));
                                    let out = row_slice_mut(&mut out, &r, rows);
                                    let block = a.as_ref().subrows(r.start, r.len());
                                    match window {
                                        None => opt.relaxed_forward_with(ctx, params, block, upper, &zs, out),
                                        Some(w) if r.len() == rows => opt
                                            .relaxed_forward_with_window(ctx, params, a, w, upper, &zs, out),
                                        Some(w) => {
                                            let (a, w) = (block.to_owned(), w.row_block(r));
                                            opt.relaxed_forward_with_window(
                                                ctx, params, &a, &w, upper, &zs, out,
                                            )
                                        }
                                    }
                                })?
                            }
                            _ => self.for_groups(id, rows, |r, ctx| {
                                let zs = rows_of(&zs, &r, rows);
                                let out = row_slice_mut(&mut out, &r, rows);
                                op.relaxed_forward(ctx, a.as_ref().subrows(r.start, r.len()), upper, &zs, out)
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

fn row_slice_mut<'a, T>(v: &'a mut [T], r: &std::ops::Range<usize>, total: usize) -> &'a mut [T] {
    let w = v.len() / total.max(1);
    &mut v[r.start * w..r.end * w]
}

/// Rows `r` of each input's values.
fn rows_of<'a, T>(zs: &[&'a [T]], r: &std::ops::Range<usize>, total: usize) -> SmallVec<[&'a [T]; 4]> {
    zs.iter().map(|z| row_slice(z, r, total)).collect()
}

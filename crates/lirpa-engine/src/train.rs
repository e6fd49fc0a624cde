//! Bounds as a differentiable function of the network's parameters, on batches.
//!
//! [`TrainGraph`] holds a graph's trainable operators with their current parameters and
//! computes, for a batch of points or boxes (one per row), with hand-written reverse
//! passes:
//! - the clean outputs and the gradient of `Σ g · y` ([`TrainGraph::natural`],
//!   [`TrainGraph::natural_backward`]);
//! - interval bounds of every node ([`TrainGraph::ibp`]) and the gradient of any
//!   weighted sum of them ([`TrainGraph::ibp_backward`]);
//! - lower bounds of `C·y` per sample, by CROWN-IBP (a backward pass through the whole
//!   network using the interval bounds of the pre-activation nodes) or by IBP with `C`
//!   folded into the trailing affine layers ([`TrainGraph::spec_lower`]), and the
//!   gradient of a weighted sum of those bounds with respect to the parameters and to
//!   the interval bounds it used ([`TrainGraph::spec_backward`]).
//!
//! The operators' rules come from [`lirpa_core::train`]; an operator without one is
//! refused by node and type. Every gradient here is checked against finite differences
//! (`crates/lirpa/tests/train_gradient.rs`).

use faer::{Mat, MatRef, Par};
use lirpa_core::{
    ElementwiseTrain, Error, Graph, NodeId, NodeKind, Operator, RelaxOptions, Result, Scalar, TrainRule,
};

/// One step of the chain: an operator with its parameter slots.
struct Step<T: Scalar> {
    node: NodeId,
    op: Box<dyn Operator<T>>,
    /// Indices into [`TrainGraph::params`] of this operator's parameters, in its order.
    params: Vec<usize>,
    /// The expanded bias of an affine step, refreshed with the parameters.
    bias: Option<Vec<T>>,
    /// With a weight perturbation: the same operator with every weight 1, whose product
    /// `Ones·v` sums `v` over each output's fan-in.
    ones: Option<Box<dyn Operator<T>>>,
    n_in: usize,
    n_out: usize,
}

/// A graph ready for training: a chain of trainable operators from its single input to
/// its single output.
pub struct TrainGraph<T: Scalar> {
    steps: Vec<Step<T>>,
    params: Vec<Vec<T>>,
    /// `(node, index among the node's parameters, model input slot)` of each parameter.
    owners: Vec<(NodeId, usize, usize)>,
    n_in: usize,
    relax: RelaxOptions,
    par: Par,
    /// Whether the reverse passes compute the gradient with respect to the input (a
    /// training step does not need it; the products of the first layer are saved).
    input_grad: bool,
    /// Radius of the L∞ ball around every weight (the first parameter of each affine
    /// operator that has parameters); 0: exact weights.
    weight_eps: T,
    /// `Some(ε)`: each sample's input set is the L2 ball of radius ε around the centre of
    /// its box (the box given to [`ibp`](Self::ibp) must contain the ball).
    input_l2: Option<T>,
    /// With an L2 input ball and an affine first step: its rows `W_j` and their norms
    /// (recomputed when the parameters change).
    dual_rows: Option<(Mat<T>, Vec<T>)>,
}

/// The values of every step's input and output on a batch (row per point).
pub struct NaturalTape<T: Scalar> {
    /// `values[0]` is the input, `values[i + 1]` the output of step `i`.
    pub values: Vec<Mat<T>>,
}

/// Interval bounds of every step's input and output on a batch of boxes.
pub struct IbpTape<T: Scalar> {
    pub lower: Vec<Mat<T>>,
    pub upper: Vec<Mat<T>>,
}

/// Gradients of a scalar with respect to interval bounds, indexed as [`IbpTape`].
pub struct BoundGrads<T: Scalar> {
    pub lower: Vec<Mat<T>>,
    pub upper: Vec<Mat<T>>,
}

/// How far [`TrainGraph::spec_lower`] goes back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SpecMethod {
    /// Through the whole network, relaxing activations on their interval input bounds
    /// (CROWN-IBP's final bound).
    CrownIbp,
    /// Only through the trailing affine steps, then the interval bounds of the value
    /// reached (IBP with the specification folded into the last layers).
    Ibp,
}

/// CROWN's intermediate bounds ([`TrainGraph::crown`]) and the passes that computed them.
pub struct CrownTape<T: Scalar> {
    /// Interval bounds of every value, CROWN's at the inputs of element-wise steps.
    pub bounds: IbpTape<T>,
    passes: Vec<(usize, SpecTape<T>)>,
}

/// What [`TrainGraph::spec_backward`] needs of a [`TrainGraph::spec_lower`] run.
pub struct SpecTape<T: Scalar> {
    method: SpecMethod,
    /// Specification rows per sample.
    k: usize,
    /// Coefficients on each visited step's output (`a_out[i]` for step `i`), and on the
    /// value where the pass stopped.
    a_out: Vec<Option<Mat<T>>>,
    a_end: Mat<T>,
    /// The index into the tape of the value where the pass stopped (0: the input).
    end: usize,
    /// Per visited affine step with perturbed weights, `Ones·(|m| + r)` of its input.
    fan_in: Vec<Option<Mat<T>>>,
    /// The number of steps before the bounded value.
    start: usize,
}

/// The Euclidean norm of each row.
fn row_norms<T: Scalar>(m: MatRef<'_, T>) -> Vec<T> {
    let mut sq = vec![T::zero(); m.nrows()];
    for j in 0..m.ncols() {
        for (s, &v) in sq.iter_mut().zip(m.col(j).iter()) {
            *s += v * v;
        }
    }
    sq.into_iter().map(|v| v.sqrt()).collect()
}

/// −1, 0 or 1.
fn sign<T: Scalar>(x: T) -> T {
    if x > T::zero() {
        T::one()
    } else if x < T::zero() {
        -T::one()
    } else {
        T::zero()
    }
}

fn sum_cols<T: Scalar>(m: MatRef<'_, T>, w: Option<&[T]>) -> Vec<T> {
    (0..m.ncols())
        .map(|j| {
            let c = m.col(j);
            match w {
                None => c.iter().copied().fold(T::zero(), |a, b| a + b),
                Some(w) => c.iter().zip(w).fold(T::zero(), |a, (&x, &wr)| a + x * wr),
            }
        })
        .collect()
}

impl<T: Scalar> TrainGraph<T> {
    /// Take the trainable operators of `graph` (a chain from its one input to its one
    /// output) and their parameters' current values.
    pub fn new(graph: &Graph<T>, relax: RelaxOptions, par: Par) -> Result<Self> {
        let input = graph.input()?;
        let output = graph.output()?;
        // Walk back from the output: each operator must have exactly one non-constant input.
        let mut chain = Vec::new();
        let mut id = output;
        while id != input {
            let node = graph.node(id);
            let NodeKind::Op(op) = &node.kind else {
                return Err(Error::Invalid(format!(
                    "node '{}' ({}): training needs a chain of operators from the input to the output",
                    node.name,
                    node.op_type()
                )));
            };
            let live: Vec<NodeId> = node
                .inputs
                .iter()
                .copied()
                .filter(|&i| !matches!(graph.node(i).kind, NodeKind::Constant(_)))
                .collect();
            if live.len() != 1 || node.inputs.len() != 1 {
                return Err(Error::Unimplemented {
                    node: node.name.clone(),
                    op_type: op.op_type().to_string(),
                    msg: format!("training through an operator with {} graph inputs", node.inputs.len()),
                });
            }
            if op.trainable().is_none() {
                return Err(Error::Unimplemented {
                    node: node.name.clone(),
                    op_type: op.op_type().to_string(),
                    msg: "no training rule (gradient with respect to its parameters and bounds)".into(),
                });
            }
            chain.push(id);
            id = live[0];
        }
        chain.reverse();
        let mut params = Vec::new();
        let mut owners = Vec::new();
        let mut steps = Vec::new();
        for &id in &chain {
            let node = graph.node(id);
            let op = node.op().expect("checked above");
            let tr = op.trainable().expect("checked above");
            let mut slots = Vec::new();
            for (k, p) in tr.params().into_iter().enumerate() {
                slots.push(params.len());
                owners.push((id, k, p.input));
                params.push(p.values);
            }
            let values: Vec<&[T]> = slots.iter().map(|&i| params[i].as_slice()).collect();
            let op = tr.with_params(&values)?;
            let n_in = graph.node(node.inputs[0]).numel();
            steps.push(Step {
                node: id,
                op,
                params: slots,
                bias: None,
                ones: None,
                n_in,
                n_out: node.numel(),
            });
        }
        let n_in = graph.node(input).numel();
        let mut g = TrainGraph {
            steps,
            params,
            owners,
            n_in,
            relax,
            par,
            input_grad: true,
            weight_eps: T::zero(),
            input_l2: None,
            dual_rows: None,
        };
        g.refresh_bias();
        Ok(g)
    }

    fn refresh_bias(&mut self) {
        for s in &mut self.steps {
            s.bias = match s.op.trainable().map(|t| t.rule()) {
                Some(TrainRule::Affine(a)) => a.bias(),
                _ => None,
            };
        }
    }

    /// Whether [`natural_backward`](Self::natural_backward) and
    /// [`ibp_backward`](Self::ibp_backward) compute the gradient with respect to the input
    /// (default: yes; without it they return or leave zeros there).
    pub fn set_input_grad(&mut self, on: bool) {
        self.input_grad = on;
    }

    /// Perturb every weight ([`perturbed_weights`](Self::perturbed_weights): the first
    /// parameter of each affine operator whose weight enters linearly, a Gemm's `B`, a
    /// Conv's `W`) within an L∞ ball of radius `eps` around its current value, in every bound ([`ibp`](Self::ibp) and
    /// [`spec_lower`](Self::spec_lower)) and gradient. For `y = (W + Δ) x`, `|Δ| ≤ ε`,
    /// over an interval `x ∈ [m − r, m + r]`, the radius of `y` grows by
    /// `ε·Ones·(|m| + r)`, and a backward pass crossing the layer with coefficients `A`
    /// loses `ε·|A|·Ones·(|m| + r)` (the interval bound of `A·Δ·x`); both are sound for
    /// CROWN-IBP too, whose intermediate intervals include the perturbation.
    pub fn set_weight_eps(&mut self, eps: T) -> Result<()> {
        if !(eps.is_finite() && eps >= T::zero()) {
            return Err(Error::Invalid("the weight radius must be finite and non-negative".into()));
        }
        self.weight_eps = eps;
        self.ensure_ones()
    }

    /// Which parameters [`set_weight_eps`](Self::set_weight_eps) perturbs: the first
    /// parameter of each affine step with parameters whose weight enters linearly
    /// ([`lirpa_core::AffineTrain::weight_enters_linearly`]; not a BatchNormalization's scale).
    pub fn perturbed_weights(&self) -> Vec<bool> {
        let mut out = vec![false; self.params.len()];
        for s in &self.steps {
            let linear = match s.op.trainable().map(|t| t.rule()) {
                Some(TrainRule::Affine(a)) => a.weight_enters_linearly(),
                _ => false,
            };
            if let (true, Some(&k)) = (linear, s.params.first()) {
                out[k] = true;
            }
        }
        out
    }

    /// Take each sample's input set as the L2 ball of radius `eps` around the centre of
    /// the box passed to [`ibp`](Self::ibp) / [`crown`](Self::crown) (which must contain
    /// the ball, e.g. the box `[x − ε, x + ε]`), or (`None`) the box itself. With a ball,
    /// a first affine step bounds its outputs by the dual norm, `W x₀ ± ε‖W_j‖₂`, and a
    /// backward pass that reaches the input concretizes as `A x₀ − ε‖A‖₂`.
    pub fn set_input_l2(&mut self, eps: Option<T>) -> Result<()> {
        if eps.is_some_and(|e| !(e.is_finite() && e >= T::zero())) {
            return Err(Error::Invalid("the L2 radius must be finite and non-negative".into()));
        }
        self.input_l2 = eps;
        if eps.is_none() {
            self.dual_rows = None;
        } else if self.dual_rows.is_none() {
            self.refresh_dual_rows();
        }
        Ok(())
    }

    /// Compute the rows `W_j` of the first step's linear map (`n_out × n_in`) and their
    /// norms, when the input is an L2 ball and that step is affine.
    fn refresh_dual_rows(&mut self) {
        self.dual_rows = None;
        if self.input_l2.is_none() || self.steps.is_empty() {
            return;
        }
        let TrainRule::Affine(a) = self.rule(0) else { return };
        let s = &self.steps[0];
        let eye = Mat::<T>::identity(s.n_out, s.n_out);
        let mut rows = Mat::<T>::zeros(s.n_out, s.n_in);
        a.apply_t(eye.as_ref(), false, rows.as_mut(), self.par);
        let norms = row_norms(rows.as_ref());
        self.dual_rows = Some((rows, norms));
    }

    /// [`refresh_dual_rows`](Self::refresh_dual_rows)'s rows and norms, for step `i` = 0.
    fn first_rows(&self, i: usize) -> Option<&(Mat<T>, Vec<T>)> {
        if i == 0 { self.dual_rows.as_ref() } else { None }
    }

    /// Build the all-ones twins of the perturbed steps, once: they depend on the
    /// operators' shapes, not on the parameters' values.
    fn ensure_ones(&mut self) -> Result<()> {
        if self.weight_eps == T::zero() {
            return Ok(());
        }
        let perturbed = self.perturbed_weights();
        for s in &mut self.steps {
            if s.ones.is_some() || !s.params.first().is_some_and(|&k| perturbed[k]) {
                continue;
            }
            let tr = s.op.trainable().expect("trainable");
            let ones = vec![T::one(); self.params[s.params[0]].len()];
            let mut vals: Vec<&[T]> = s.params.iter().map(|&i| self.params[i].as_slice()).collect();
            vals[0] = &ones;
            s.ones = Some(tr.with_params(&vals)?);
        }
        Ok(())
    }

    /// `Ones·(|m| + r)` of step `i` (see [`set_weight_eps`](Self::set_weight_eps)) for the
    /// intervals `[l, u]` of its input, one row per sample.
    fn fan_in_magnitude(&self, i: usize, l: &Mat<T>, u: &Mat<T>) -> Option<Mat<T>> {
        let s = &self.steps[i];
        if self.weight_eps == T::zero() {
            return None;
        }
        let ones = s.ones.as_ref()?;
        let Some(TrainRule::Affine(a)) = ones.trainable().map(|t| t.rule()) else { return None };
        let half = T::from_f64(0.5);
        let v = Mat::<T>::from_fn(l.nrows(), s.n_in, |r, j| {
            let (m, rad) = ((l[(r, j)] + u[(r, j)]) * half, (u[(r, j)] - l[(r, j)]) * half);
            m.abs() + rad
        });
        let mut out = Mat::<T>::zeros(l.nrows(), s.n_out);
        a.apply(v.as_ref(), false, out.as_mut(), self.par);
        Some(out)
    }

    /// Add to `gl`, `gu` (the interval-bound gradients of step `i`'s input, whose bounds
    /// are `lu`) the gradient through `Ones·(|m| + r)` of `g` (rows: samples), scaled by
    /// `scale`.
    fn fan_in_backward(
        &self,
        i: usize,
        (l, u): (&Mat<T>, &Mat<T>),
        g: MatRef<'_, T>,
        scale: T,
        gl: &mut Mat<T>,
        gu: &mut Mat<T>,
    ) {
        let s = &self.steps[i];
        if self.weight_eps == T::zero() {
            return;
        }
        let Some(ones) = s.ones.as_ref() else { return };
        let Some(TrainRule::Affine(a)) = ones.trainable().map(|t| t.rule()) else { return };
        let mut q = Mat::<T>::zeros(g.nrows(), s.n_in);
        a.apply_t(g, false, q.as_mut(), self.par);
        let half = T::from_f64(0.5);
        for j in 0..s.n_in {
            for r in 0..g.nrows() {
                let m = (l[(r, j)] + u[(r, j)]) * half;
                let sign = sign(m);
                let (dm, dr) = (scale * sign * q[(r, j)], scale * q[(r, j)]);
                gl[(r, j)] += (dm - dr) * half;
                gu[(r, j)] += (dm + dr) * half;
            }
        }
    }

    /// Current parameter values, one vector per parameter.
    pub fn params(&self) -> &[Vec<T>] {
        &self.params
    }

    /// Input size of one point.
    pub fn n_in(&self) -> usize {
        self.n_in
    }

    /// Output size of one point.
    pub fn n_out(&self) -> usize {
        self.steps.last().map_or(self.n_in, |s| s.n_out)
    }

    /// `(graph node, model input slot)` of each parameter: where it is written back.
    pub fn param_origin(&self, k: usize) -> (NodeId, usize) {
        (self.owners[k].0, self.owners[k].2)
    }

    /// The model tensor of parameter `k` at its current value.
    pub fn export_param(&self, k: usize) -> Result<lirpa_core::TensorData> {
        let (node, idx, _) = self.owners[k];
        let step = self.steps.iter().find(|s| s.node == node).expect("owner is a step");
        step.op.trainable().expect("trainable").export_param(idx, &self.params[k])
    }

    /// Replace the parameters (same count and sizes as [`params`](Self::params)).
    pub fn set_params(&mut self, values: Vec<Vec<T>>) -> Result<()> {
        if values.len() != self.params.len()
            || values.iter().zip(&self.params).any(|(a, b)| a.len() != b.len())
        {
            return Err(Error::Invalid("set_params: parameter count or sizes differ".into()));
        }
        if values.iter().flatten().any(|v| !v.is_finite()) {
            return Err(Error::Invalid("set_params: a parameter is not finite".into()));
        }
        self.params = values;
        for s in &mut self.steps {
            let vals: Vec<&[T]> = s.params.iter().map(|&i| self.params[i].as_slice()).collect();
            let op = s.op.trainable().expect("trainable").with_params(&vals)?;
            s.op = op;
        }
        self.refresh_bias();
        self.refresh_dual_rows();
        Ok(())
    }

    /// Zeroed gradient vectors shaped like the parameters.
    pub fn zero_grads(&self) -> Vec<Vec<T>> {
        self.params.iter().map(|p| vec![T::zero(); p.len()]).collect()
    }

    fn rule(&self, i: usize) -> TrainRule<'_, T> {
        self.steps[i].op.trainable().expect("checked at construction").rule()
    }

    /// The gradient slots of step `i`'s parameters, taken out of `grads`.
    fn take_grads(&self, i: usize, grads: &mut [Vec<T>]) -> Vec<Vec<T>> {
        self.steps[i].params.iter().map(|&k| std::mem::take(&mut grads[k])).collect()
    }

    fn put_grads(&self, i: usize, grads: &mut [Vec<T>], local: Vec<Vec<T>>) {
        for (&k, g) in self.steps[i].params.iter().zip(local) {
            grads[k] = g;
        }
    }

    fn check_batch(&self, x: MatRef<'_, T>) -> Result<()> {
        if x.ncols() != self.n_in {
            return Err(Error::Invalid(format!(
                "a point has {} values, the model input {}",
                x.ncols(),
                self.n_in
            )));
        }
        Ok(())
    }

    /// The relaxation lines `[lower slope, lower intercept, upper slope, upper
    /// intercept]` of element-wise step `i` for every sample (row-major `batch × n`), on
    /// the interval bounds of its input; with `deriv`, also their derivatives.
    fn lines(
        &self,
        e: &dyn ElementwiseTrain<T>,
        tape: &IbpTape<T>,
        i: usize,
        mut deriv: Option<&mut [[T; 8]]>,
    ) -> Vec<[T; 4]> {
        let (l, u) = (&tape.lower[i], &tape.upper[i]);
        let (batch, n) = (l.nrows(), l.ncols());
        let mut out = Vec::with_capacity(batch * n);
        let (mut lr, mut ur) = (vec![T::zero(); n], vec![T::zero(); n]);
        for smp in 0..batch {
            for j in 0..n {
                lr[j] = l[(smp, j)];
                ur[j] = u[(smp, j)];
            }
            let rel = e.relax(&lr, &ur, &self.relax);
            out.extend((0..n).map(|j| {
                [rel.lower_slope[j], rel.lower_intercept[j], rel.upper_slope[j], rel.upper_intercept[j]]
            }));
            if let Some(d) = deriv.as_deref_mut() {
                e.relax_derivatives(&lr, &ur, &self.relax, &mut d[smp * n..(smp + 1) * n]);
            }
        }
        out
    }

    /// Clean evaluation of a batch (`rows × n_in`), keeping every value.
    pub fn natural(&self, x: MatRef<'_, T>) -> Result<NaturalTape<T>> {
        self.check_batch(x)?;
        let rows = x.nrows();
        let mut values = vec![x.to_owned()];
        for (i, s) in self.steps.iter().enumerate() {
            let inp = values.last().expect("input");
            let mut out = Mat::<T>::zeros(rows, s.n_out);
            match self.rule(i) {
                TrainRule::Affine(a) => {
                    a.apply(inp.as_ref(), false, out.as_mut(), self.par);
                    if let Some(b) = &s.bias {
                        for (j, &bj) in b.iter().enumerate() {
                            out.col_mut(j).iter_mut().for_each(|v| *v += bj);
                        }
                    }
                }
                TrainRule::Elementwise(e) => {
                    // Element-wise: a column is as good a set of elements as a row.
                    let mut d = vec![T::zero(); rows];
                    for j in 0..s.n_out {
                        e.value_and_derivative(inp.col_as_slice(j), out.col_as_slice_mut(j), &mut d);
                    }
                }
            }
            values.push(out);
        }
        Ok(NaturalTape { values })
    }

    /// Add to `grads` the gradient of `Σ_r g_r · y_r` (`g`: `rows × n_out`) with respect to
    /// the parameters, at the values of `tape`; returns the gradient with respect to the input.
    pub fn natural_backward(&self, tape: &NaturalTape<T>, g: Mat<T>, grads: &mut [Vec<T>]) -> Mat<T> {
        let mut g = g;
        for i in (0..self.steps.len()).rev() {
            let s = &self.steps[i];
            let x = &tape.values[i];
            let mut gin = Mat::<T>::zeros(g.nrows(), s.n_in);
            match self.rule(i) {
                TrainRule::Affine(a) => {
                    let mut local = self.take_grads(i, grads);
                    a.weight_grad(g.as_ref(), x.as_ref(), false, &mut local, self.par);
                    a.bias_grad(&sum_cols(g.as_ref(), None), &mut local);
                    self.put_grads(i, grads, local);
                    if i > 0 || self.input_grad {
                        a.apply_t(g.as_ref(), false, gin.as_mut(), self.par);
                    }
                }
                TrainRule::Elementwise(e) => {
                    let mut y = vec![T::zero(); g.nrows()];
                    for j in 0..s.n_in {
                        let d = gin.col_as_slice_mut(j);
                        e.value_and_derivative(x.col_as_slice(j), &mut y, d);
                        d.iter_mut().zip(g.col_as_slice(j)).for_each(|(d, g)| *d *= *g);
                    }
                }
            }
            g = gin;
        }
        g
    }

    /// Interval bounds of every value for a batch of boxes (`rows × n_in` each).
    pub fn ibp(&self, lower: MatRef<'_, T>, upper: MatRef<'_, T>) -> Result<IbpTape<T>> {
        self.check_batch(lower)?;
        self.check_batch(upper)?;
        let mut lo = vec![lower.to_owned()];
        let mut hi = vec![upper.to_owned()];
        for i in 0..self.steps.len() {
            let (ol, ou) = self.ibp_step(i, &lo[i], &hi[i]);
            lo.push(ol);
            hi.push(ou);
        }
        Ok(IbpTape { lower: lo, upper: hi })
    }

    /// The interval bounds of step `i`'s output from those of its input.
    fn ibp_step(&self, i: usize, l: &Mat<T>, u: &Mat<T>) -> (Mat<T>, Mat<T>) {
        let half = T::from_f64(0.5);
        let s = &self.steps[i];
        let rows = l.nrows();
        let mut ol = Mat::<T>::zeros(rows, s.n_out);
        let mut ou = Mat::<T>::zeros(rows, s.n_out);
        match self.rule(i) {
            TrainRule::Affine(a) => {
                let mid = Mat::<T>::from_fn(rows, s.n_in, |r, j| (l[(r, j)] + u[(r, j)]) * half);
                let rad = Mat::<T>::from_fn(rows, s.n_in, |r, j| (u[(r, j)] - l[(r, j)]) * half);
                let mut m = Mat::<T>::zeros(rows, s.n_out);
                let mut d = Mat::<T>::zeros(rows, s.n_out);
                a.apply(mid.as_ref(), false, m.as_mut(), self.par);
                match (self.first_rows(i), self.input_l2) {
                    (Some((_, norms)), Some(eps)) => {
                        for (j, &nj) in norms.iter().enumerate() {
                            d.col_mut(j).iter_mut().for_each(|v| *v = eps * nj);
                        }
                    }
                    _ => a.apply(rad.as_ref(), true, d.as_mut(), self.par),
                }
                if let Some(f) = self.fan_in_magnitude(i, l, u) {
                    d += f * faer::Scale(self.weight_eps);
                }
                let bias = s.bias.as_deref();
                for j in 0..s.n_out {
                    let b = bias.map_or(T::zero(), |b| b[j]);
                    for r in 0..rows {
                        let (c, w) = (m[(r, j)] + b, d[(r, j)]);
                        ol[(r, j)] = c - w;
                        ou[(r, j)] = c + w;
                    }
                }
            }
            TrainRule::Elementwise(e) => {
                let mut d = vec![T::zero(); rows];
                for j in 0..s.n_out {
                    e.value_and_derivative(l.col_as_slice(j), ol.col_as_slice_mut(j), &mut d);
                    e.value_and_derivative(u.col_as_slice(j), ou.col_as_slice_mut(j), &mut d);
                }
            }
        }
        (ol, ou)
    }

    /// Zeroed gradients shaped like `tape`.
    pub fn zero_bound_grads(&self, tape: &IbpTape<T>) -> BoundGrads<T> {
        let z = |v: &Vec<Mat<T>>| v.iter().map(|m| Mat::<T>::zeros(m.nrows(), m.ncols())).collect();
        BoundGrads { lower: z(&tape.lower), upper: z(&tape.upper) }
    }

    /// Propagate gradients with respect to the interval bounds of every value back to the
    /// parameters (added to `grads`) and to the input box (left in `g.lower[0]`,
    /// `g.upper[0]`).
    pub fn ibp_backward(&self, tape: &IbpTape<T>, g: &mut BoundGrads<T>, grads: &mut [Vec<T>]) {
        for i in (0..self.steps.len()).rev() {
            self.ibp_backward_step(i, tape, g, grads);
        }
    }

    /// The reverse of [`ibp_step`](Self::ibp_step): from the gradients of step `i`'s
    /// output bounds to those of its input and its parameters.
    fn ibp_backward_step(&self, i: usize, tape: &IbpTape<T>, g: &mut BoundGrads<T>, grads: &mut [Vec<T>]) {
        let half = T::from_f64(0.5);
        let s = &self.steps[i];
        let (l, u) = (&tape.lower[i], &tape.upper[i]);
        let rows = l.nrows();
        let (gl_out, gu_out) = (&g.lower[i + 1], &g.upper[i + 1]);
        let mut gl_in = Mat::<T>::zeros(rows, s.n_in);
        let mut gu_in = Mat::<T>::zeros(rows, s.n_in);
        match self.rule(i) {
            TrainRule::Affine(a) => {
                let g_mid = Mat::<T>::from_fn(rows, s.n_out, |r, j| gl_out[(r, j)] + gu_out[(r, j)]);
                let g_rad = Mat::<T>::from_fn(rows, s.n_out, |r, j| gu_out[(r, j)] - gl_out[(r, j)]);
                let mid = Mat::<T>::from_fn(rows, s.n_in, |r, j| (l[(r, j)] + u[(r, j)]) * half);
                let rad = Mat::<T>::from_fn(rows, s.n_in, |r, j| (u[(r, j)] - l[(r, j)]) * half);
                let mut local = self.take_grads(i, grads);
                a.weight_grad(g_mid.as_ref(), mid.as_ref(), false, &mut local, self.par);
                let dual = self.first_rows(i).zip(self.input_l2);
                match &dual {
                    // rad_j = ε‖W_j‖: ∂/∂W_j = ε·W_j/‖W_j‖, as the weight gradient of
                    // Σ_j (c_j/‖W_j‖)·(W_j · W_j) with the second factor held.
                    Some(((w_rows, norms), eps)) => {
                        let c = sum_cols(g_rad.as_ref(), None);
                        let diag = Mat::<T>::from_fn(s.n_out, s.n_out, |p, q| {
                            if p == q && norms[p] > T::zero() { *eps * c[p] / norms[p] } else { T::zero() }
                        });
                        a.weight_grad(diag.as_ref(), w_rows.as_ref(), false, &mut local, self.par);
                    }
                    None => a.weight_grad(g_rad.as_ref(), rad.as_ref(), true, &mut local, self.par),
                }
                a.bias_grad(&sum_cols(g_mid.as_ref(), None), &mut local);
                self.put_grads(i, grads, local);
                if i == 0 && !self.input_grad {
                    return;
                }
                let mut gm = Mat::<T>::zeros(rows, s.n_in);
                let mut gr = Mat::<T>::zeros(rows, s.n_in);
                a.apply_t(g_mid.as_ref(), false, gm.as_mut(), self.par);
                if dual.is_none() {
                    a.apply_t(g_rad.as_ref(), true, gr.as_mut(), self.par);
                }
                for j in 0..s.n_in {
                    for r in 0..rows {
                        gl_in[(r, j)] = (gm[(r, j)] - gr[(r, j)]) * half;
                        gu_in[(r, j)] = (gm[(r, j)] + gr[(r, j)]) * half;
                    }
                }
                let eps = self.weight_eps;
                self.fan_in_backward(i, (l, u), g_rad.as_ref(), eps, &mut gl_in, &mut gu_in);
            }
            TrainRule::Elementwise(e) => {
                let mut y = vec![T::zero(); rows];
                for j in 0..s.n_in {
                    let d = gl_in.col_as_slice_mut(j);
                    e.value_and_derivative(l.col_as_slice(j), &mut y, d);
                    d.iter_mut().zip(gl_out.col_as_slice(j)).for_each(|(d, g)| *d *= *g);
                    let d = gu_in.col_as_slice_mut(j);
                    e.value_and_derivative(u.col_as_slice(j), &mut y, d);
                    d.iter_mut().zip(gu_out.col_as_slice(j)).for_each(|(d, g)| *d *= *g);
                }
            }
        }
        g.lower[i] += gl_in;
        g.upper[i] += gu_in;
    }

    /// CROWN's intermediate bounds: the interval bounds of a batch of boxes with the
    /// input of every element-wise step past the first replaced, in order, by the
    /// bounds of a backward pass through the network relaxed on the bounds already
    /// computed (no intersection with IBP, so that the gradient has one path). A
    /// [`spec_lower`](Self::spec_lower) with [`SpecMethod::CrownIbp`] on
    /// [`CrownTape::bounds`] is then CROWN's bound of `C·y`.
    pub fn crown(&self, lower: MatRef<'_, T>, upper: MatRef<'_, T>) -> Result<CrownTape<T>> {
        let mut bounds = self.ibp(lower, upper)?;
        let batch = lower.nrows();
        let mut passes = Vec::new();
        for i in 1..self.steps.len() {
            if !matches!(self.rule(i), TrainRule::Elementwise(_)) {
                continue;
            }
            // Rows per sample: e_j (lower bounds), then −e_j (minus the upper bounds).
            let n = self.steps[i].n_in;
            let c = Mat::<T>::from_fn(batch * 2 * n, n, |r, j| {
                let q = r % (2 * n);
                if q == j {
                    T::one()
                } else if q == j + n {
                    -T::one()
                } else {
                    T::zero()
                }
            });
            let (lb, tape) = self.spec_lower_at(&bounds, c.as_ref(), 2 * n, SpecMethod::CrownIbp, i)?;
            for smp in 0..batch {
                for j in 0..n {
                    bounds.lower[i][(smp, j)] = lb[smp * 2 * n + j];
                    bounds.upper[i][(smp, j)] = -lb[smp * 2 * n + n + j];
                }
            }
            // The values after it follow from the new bounds by IBP (until the next pass).
            for t in i..self.steps.len() {
                let (ol, ou) = self.ibp_step(t, &bounds.lower[t], &bounds.upper[t]);
                bounds.lower[t + 1] = ol;
                bounds.upper[t + 1] = ou;
            }
            passes.push((i, tape));
        }
        Ok(CrownTape { bounds, passes })
    }

    /// Propagate gradients with respect to [`CrownTape::bounds`] (after the final pass's
    /// [`spec_backward`](Self::spec_backward)) to the parameters and the input box
    /// (`g.lower[0]`, `g.upper[0]`), as [`ibp_backward`](Self::ibp_backward) does for
    /// [`ibp`](Self::ibp). The reverse of [`crown`](Self::crown): from the output down, a value computed by a
    /// backward pass sends its gradient into that pass's adjoint; any other value
    /// through its step's interval rule.
    pub fn crown_backward(&self, tape: &CrownTape<T>, g: &mut BoundGrads<T>, grads: &mut [Vec<T>]) {
        for t in (0..self.steps.len()).rev() {
            let Some((i, pass)) = tape.passes.iter().find(|(i, _)| *i == t + 1) else {
                self.ibp_backward_step(t, &tape.bounds, g, grads);
                continue;
            };
            let (i, n) = (*i, self.steps[*i].n_in);
            let batch = g.lower[i].nrows();
            let mut w = vec![T::zero(); batch * 2 * n];
            for smp in 0..batch {
                for j in 0..n {
                    w[smp * 2 * n + j] = g.lower[i][(smp, j)];
                    w[smp * 2 * n + n + j] = -g.upper[i][(smp, j)];
                }
            }
            self.spec_backward(&tape.bounds, pass, &w, g, grads);
        }
    }

    /// Lower bounds of `C_s · y_s` for every sample `s` of `tape`'s batch: `c` stacks `k`
    /// rows per sample (`rows·k × n_out`, sample-major). Returns the bounds (`rows·k`) and
    /// what [`spec_backward`](Self::spec_backward) needs.
    pub fn spec_lower(
        &self,
        tape: &IbpTape<T>,
        c: MatRef<'_, T>,
        k: usize,
        method: SpecMethod,
    ) -> Result<(Vec<T>, SpecTape<T>)> {
        self.spec_lower_at(tape, c, k, method, self.steps.len())
    }

    /// [`spec_lower`](Self::spec_lower) of `C·v` for the value `v` after the first
    /// `start` steps (an intermediate node: `C` has its width).
    fn spec_lower_at(
        &self,
        tape: &IbpTape<T>,
        c: MatRef<'_, T>,
        k: usize,
        method: SpecMethod,
        start: usize,
    ) -> Result<(Vec<T>, SpecTape<T>)> {
        let batch = tape.lower[0].nrows();
        let width = tape.lower[start].ncols();
        if k == 0 || c.nrows() != batch * k || c.ncols() != width {
            return Err(Error::Invalid(format!(
                "the specification is {}x{}, expected {}x{}",
                c.nrows(),
                c.ncols(),
                batch * k,
                width
            )));
        }
        let nrows = c.nrows();
        let mut a = c.to_owned();
        let mut bias = vec![T::zero(); nrows];
        let mut a_out: Vec<Option<Mat<T>>> = (0..self.steps.len()).map(|_| None).collect();
        let mut fan_in: Vec<Option<Mat<T>>> = (0..self.steps.len()).map(|_| None).collect();
        let mut end = 0;
        for i in (0..start).rev() {
            let s = &self.steps[i];
            match self.rule(i) {
                TrainRule::Affine(r) => {
                    if let Some(b) = &s.bias {
                        for (j, &bj) in b.iter().enumerate() {
                            for (acc, &v) in bias.iter_mut().zip(a.col_as_slice(j)) {
                                *acc += v * bj;
                            }
                        }
                    }
                    if let Some(f) = self.fan_in_magnitude(i, &tape.lower[i], &tape.upper[i]) {
                        for o in 0..s.n_out {
                            for (row, acc) in bias.iter_mut().enumerate() {
                                *acc -= self.weight_eps * a[(row, o)].abs() * f[(row / k, o)];
                            }
                        }
                        fan_in[i] = Some(f);
                    }
                    let mut next = Mat::<T>::zeros(nrows, s.n_in);
                    r.apply_t(a.as_ref(), false, next.as_mut(), self.par);
                    a_out[i] = Some(std::mem::replace(&mut a, next));
                }
                TrainRule::Elementwise(e) => {
                    if method == SpecMethod::Ibp {
                        end = i + 1;
                        break;
                    }
                    let lines = self.lines(e, tape, i, None);
                    let n = s.n_in;
                    let mut next = Mat::<T>::zeros(nrows, n);
                    for j in 0..n {
                        let src = a.col_as_slice(j);
                        let dst = next.col_as_slice_mut(j);
                        for (row, (d, &v)) in dst.iter_mut().zip(src).enumerate() {
                            let ln = &lines[(row / k) * n + j];
                            let (sl, it) = if v >= T::zero() { (ln[0], ln[1]) } else { (ln[2], ln[3]) };
                            *d = v * sl;
                            bias[row] += v * it;
                        }
                    }
                    a_out[i] = Some(std::mem::replace(&mut a, next));
                }
            }
        }
        // Concretize over the interval bounds of the value reached.
        let (l, u) = (&tape.lower[end], &tape.upper[end]);
        let mut out = bias;
        if let (0, Some(eps)) = (end, self.input_l2) {
            // The L2 ball: A·x₀ − ε‖A‖₂ per row, x₀ the box's centre.
            let half = T::from_f64(0.5);
            let norms = row_norms(a.as_ref());
            for j in 0..a.ncols() {
                for (row, (o, &v)) in out.iter_mut().zip(a.col_as_slice(j)).enumerate() {
                    let smp = row / k;
                    *o += v * (l[(smp, j)] + u[(smp, j)]) * half;
                }
            }
            for (o, nr) in out.iter_mut().zip(&norms) {
                *o -= eps * *nr;
            }
            if out.iter().any(|v| !v.is_finite()) {
                return Err(Error::Invalid("a specification bound is not finite".into()));
            }
            return Ok((out, SpecTape { method, k, a_out, a_end: a, end, fan_in, start }));
        }
        for j in 0..a.ncols() {
            let (lc, uc) = (l.col_as_slice(j), u.col_as_slice(j));
            // Rows come k per sample.
            for (smp, (o, col)) in out.chunks_mut(k).zip(a.col_as_slice(j).chunks(k)).enumerate() {
                let (lo, hi) = (lc[smp], uc[smp]);
                for (o, &v) in o.iter_mut().zip(col) {
                    *o += if v >= T::zero() { v * lo } else { v * hi };
                }
            }
        }
        if out.iter().any(|v| !v.is_finite()) {
            return Err(Error::Invalid("a specification bound is not finite".into()));
        }
        Ok((out, SpecTape { method, k, a_out, a_end: a, end, fan_in, start }))
    }

    /// Add the gradient of `Σ_r w_r · lb_r` (`lb` from [`spec_lower`](Self::spec_lower))
    /// to `grads` (parameters) and to `g` (the interval bounds it used); propagate `g`
    /// further with [`ibp_backward`](Self::ibp_backward). Returns its gradient with
    /// respect to the specification matrix `C` (for a specification that is itself
    /// computed, as in loss fusion).
    pub fn spec_backward(
        &self,
        ibp: &IbpTape<T>,
        spec: &SpecTape<T>,
        w: &[T],
        g: &mut BoundGrads<T>,
        grads: &mut [Vec<T>],
    ) -> Mat<T> {
        let k = spec.k;
        let a = &spec.a_end;
        let nrows = a.nrows();
        let (l, u) = (&ibp.lower[spec.end], &ibp.upper[spec.end]);
        // dA at the end value, and the bound gradients there.
        let mut da = Mat::<T>::zeros(nrows, a.ncols());
        let l2 = if spec.end == 0 { self.input_l2 } else { None };
        if let Some(eps) = l2 {
            // bound = A·x₀ − ε‖A‖₂: ∂/∂A = x₀ − ε·A/‖A‖, ∂/∂x₀ = A (half to each box end).
            let half = T::from_f64(0.5);
            let norms = row_norms(a.as_ref());
            for j in 0..a.ncols() {
                for row in 0..nrows {
                    let (v, smp) = (a[(row, j)], row / k);
                    let x0 = (l[(smp, j)] + u[(smp, j)]) * half;
                    let unit = if norms[row] > T::zero() { v / norms[row] } else { T::zero() };
                    da[(row, j)] = w[row] * (x0 - eps * unit);
                    g.lower[0][(smp, j)] += w[row] * v * half;
                    g.upper[0][(smp, j)] += w[row] * v * half;
                }
            }
        }
        for j in 0..a.ncols() {
            if l2.is_some() {
                break;
            }
            let (lc, uc) = (l.col_as_slice(j), u.col_as_slice(j));
            let (ac, dc) = (a.col_as_slice(j), da.col_as_slice_mut(j));
            for smp in 0..nrows / k {
                let (mut gl, mut gu) = (T::zero(), T::zero());
                for row in smp * k..(smp + 1) * k {
                    let v = ac[row];
                    if v >= T::zero() {
                        dc[row] = w[row] * lc[smp];
                        gl += w[row] * v;
                    } else {
                        dc[row] = w[row] * uc[smp];
                        gu += w[row] * v;
                    }
                }
                g.lower[spec.end][(smp, j)] += gl;
                g.upper[spec.end][(smp, j)] += gu;
            }
        }
        for i in spec.end..spec.start {
            let s = &self.steps[i];
            let a_out = spec.a_out[i].as_ref().expect("visited by the pass");
            let mut da_out = Mat::<T>::zeros(nrows, s.n_out);
            match self.rule(i) {
                TrainRule::Affine(r) => {
                    // A_in = A_out·W and bias += A_out·b.
                    r.apply(da.as_ref(), false, da_out.as_mut(), self.par);
                    let mut local = self.take_grads(i, grads);
                    r.weight_grad(a_out.as_ref(), da.as_ref(), false, &mut local, self.par);
                    if let Some(b) = &s.bias {
                        r.bias_grad(&sum_cols(a_out.as_ref(), Some(w)), &mut local);
                        for (j, &bj) in b.iter().enumerate() {
                            for (d, &wr) in da_out.col_as_slice_mut(j).iter_mut().zip(w) {
                                *d += wr * bj;
                            }
                        }
                    }
                    self.put_grads(i, grads, local);
                    if let Some(f) = &spec.fan_in[i] {
                        // bound −= ε·Σ_o |A_out[row, o]|·f[sample, o]
                        let eps = self.weight_eps;
                        let mut df = Mat::<T>::zeros(f.nrows(), f.ncols());
                        for o in 0..s.n_out {
                            for row in 0..nrows {
                                let (v, smp) = (a_out[(row, o)], row / k);
                                let sign = sign(v);
                                da_out[(row, o)] -= eps * w[row] * sign * f[(smp, o)];
                                df[(smp, o)] -= eps * w[row] * v.abs();
                            }
                        }
                        let (l, u) = (&ibp.lower[i], &ibp.upper[i]);
                        let (gl, gu) = (&mut g.lower[i], &mut g.upper[i]);
                        self.fan_in_backward(i, (l, u), df.as_ref(), T::one(), gl, gu);
                    }
                }
                TrainRule::Elementwise(e) => {
                    debug_assert_eq!(spec.method, SpecMethod::CrownIbp);
                    let n = s.n_in;
                    let mut deriv = vec![[T::zero(); 8]; ibp.lower[i].nrows() * n];
                    let lines = self.lines(e, ibp, i, Some(&mut deriv));
                    for j in 0..n {
                        let (src, dsrc) = (a_out.col_as_slice(j), da.col_as_slice(j));
                        let dst = da_out.col_as_slice_mut(j);
                        // Gradients of the four line coefficients of element j of a sample,
                        // flushed when the rows move on to the next sample.
                        let mut gline = [T::zero(); 4];
                        for row in 0..nrows {
                            let (v, smp) = (src[row], row / k);
                            let ln = &lines[smp * n + j];
                            let (sl, it, off) =
                                if v >= T::zero() { (ln[0], ln[1], 0) } else { (ln[2], ln[3], 2) };
                            dst[row] = dsrc[row] * sl + w[row] * it;
                            gline[off] += dsrc[row] * v;
                            gline[off + 1] += w[row] * v;
                            if (row + 1) % k == 0 {
                                let d = &deriv[smp * n + j];
                                let (mut gl, mut gu) = (T::zero(), T::zero());
                                for t in 0..4 {
                                    gl += gline[t] * d[t];
                                    gu += gline[t] * d[t + 4];
                                }
                                g.lower[i][(smp, j)] += gl;
                                g.upper[i][(smp, j)] += gu;
                                gline = [T::zero(); 4];
                            }
                        }
                    }
                }
            }
            da = da_out;
        }
        da
    }
}

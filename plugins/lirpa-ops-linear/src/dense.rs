//! `y[m, :] = W · x[m, :] + b[m, :]` for every row `m`: Gemm and MatMul by a constant.

use faer::linalg::matmul::matmul;
use faer::{Accum, MatMut, MatRef, Par};
use lirpa_core::linear::par_for;
use lirpa_core::op::{
    BackwardCtx, BatchInput, Evaluate, Interval, IntervalRule, LinearRelaxation, NodeDef, Operator,
};
use lirpa_core::{
    AffineTrain, BackwardResult, BuiltOp, Error, LinearA, LinearBias, Param, Result, Scalar, Shape,
    TensorData, TrainRule, Trainable, broadcast_source_index, numel,
};
use smallvec::smallvec;

/// Below this many multiply-adds [`Dense`] evaluates by loops, not a matrix product.
const SMALL_PRODUCT: usize = 1 << 15;

/// A dense affine map applied to each of `rows` rows of the input.
#[derive(Debug)]
pub struct Dense<T: Scalar> {
    op_type: &'static str,
    rows: usize,
    n_in: usize,
    n_out: usize,
    /// `n_out × n_in`, row-major.
    w: Vec<T>,
    w_abs: Vec<T>,
    /// `rows × n_out`, row-major, if any.
    bias: Option<Vec<T>>,
    /// Where `w` and `bias` came from, to write trained values back.
    origin: Origin,
}

/// How the model's tensors map to `w` (`n_out × n_in`) and `bias`.
#[derive(Clone, Debug)]
enum Origin {
    /// Gemm: `w = alpha · B'ᵀ`, `bias = beta · C` (broadcast from `c_shape`).
    Gemm { trans_b: bool, alpha: f64, beta: f64, c_shape: Option<Shape> },
    /// MatMul by a constant `W` of shape `w_shape`: `w = Wᵀ`.
    MatMul { w_shape: Shape },
}

impl<T: Scalar> Dense<T> {
    fn w(&self) -> MatRef<'_, T> {
        MatRef::from_row_major_slice(&self.w, self.n_out, self.n_in)
    }

    /// `out[m] = w · x[m] (+ bias)` for a row-major `k·rows × n_in` input (`k` points of
    /// `rows` rows each): one matrix product, or plain loops below [`SMALL_PRODUCT`]
    /// multiply-adds (a matrix product's set-up costs more there: ACAS Xu's 50-wide
    /// layers, evaluated a million times by input splitting).
    fn apply(&self, w: &[T], x: &[T], out: &mut [T], with_bias: bool) {
        let total = x.len() / self.n_in.max(1);
        if total == 0 || self.n_out == 0 {
            return;
        }
        if total * self.n_in * self.n_out < SMALL_PRODUCT {
            for (xr, or) in x.chunks(self.n_in).zip(out.chunks_mut(self.n_out)).take(total) {
                for (o, wr) in or.iter_mut().zip(w.chunks(self.n_in)) {
                    let mut acc = T::zero();
                    for (a, b) in wr.iter().zip(xr) {
                        acc += *a * *b;
                    }
                    *o = acc;
                }
            }
        } else {
            let xm = MatRef::from_row_major_slice(&x[..total * self.n_in], total, self.n_in);
            let wm = MatRef::from_row_major_slice(w, self.n_out, self.n_in);
            let om = MatMut::from_row_major_slice_mut(&mut out[..total * self.n_out], total, self.n_out);
            matmul(om, Accum::Replace, xm, wm.transpose(), T::one(), Par::Seq);
        }
        if with_bias && let Some(b) = &self.bias {
            for (o, b) in out.chunks_mut(b.len()).flat_map(|c| c.iter_mut().zip(b)) {
                *o += *b;
            }
        }
    }
}

impl<T: Scalar> Evaluate<T> for Dense<T> {
    fn forward(&self, inputs: &[&[T]], out: &mut [T]) -> Result<()> {
        self.apply(&self.w, inputs[0], out, true);
        Ok(())
    }

    fn forward_batch(&self, inputs: &[BatchInput<'_, T>], rows: usize, out: &mut [T]) -> Result<()> {
        match inputs.first() {
            Some(BatchInput::Rows(x)) if x.len() == rows * self.rows * self.n_in => {
                self.apply(&self.w, x, out, true);
            }
            _ => {
                for (r, o) in out.chunks_mut(self.rows * self.n_out).enumerate().take(rows) {
                    let x = inputs.first().map_or(&[][..], |x| x.row(r, rows));
                    self.apply(&self.w, x, o, true);
                }
            }
        }
        Ok(())
    }
}

impl<T: Scalar> IntervalRule<T> for Dense<T> {
    fn interval(&self, inputs: &[Interval<'_, T>], lower: &mut [T], upper: &mut [T]) -> Result<()> {
        let x = inputs[0];
        let half = T::from_f64(0.5);
        let mid: Vec<T> = x.lower.iter().zip(x.upper).map(|(&l, &u)| (l + u) * half).collect();
        let rad: Vec<T> = x.lower.iter().zip(x.upper).map(|(&l, &u)| (u - l) * half).collect();
        if mid.iter().all(|m| *m == T::zero()) {
            // A symmetric box (the sound mode's magnitudes): the centre maps to the bias.
            lower.iter_mut().for_each(|l| *l = T::zero());
            if let Some(b) = &self.bias {
                for (o, b) in lower.chunks_mut(b.len()).flat_map(|c| c.iter_mut().zip(b)) {
                    *o += *b;
                }
            }
        } else {
            self.apply(&self.w, &mid, lower, true);
        }
        self.apply(&self.w_abs, &rad, upper, false);
        for (l, u) in lower.iter_mut().zip(upper.iter_mut()) {
            let (c, r) = (*l, *u);
            *l = c - r;
            *u = c + r;
        }
        Ok(())
    }
}

impl<T: Scalar> LinearRelaxation<T> for Dense<T> {
    fn fp_rounding(&self) -> Option<lirpa_core::FpRounding> {
        // Sums over the inputs (forward) or the outputs (backward) of one row; the
        // constants may carry Gemm's alpha and beta.
        let terms = self.n_in + self.n_out + lirpa_core::FpRounding::SLACK;
        Some(lirpa_core::FpRounding { kind: lirpa_core::FpKind::Affine, terms: Some(terms) })
    }
    fn backward(&self, ctx: &BackwardCtx<'_, T>, a: LinearA<T>) -> Result<BackwardResult<T>> {
        let spec = a.spec();
        let mut bias = LinearBias::zeros(spec);
        if let Some(b) = &self.bias {
            bias = a.times_vector(b);
        }
        let w = self.w();
        let a = a.map(|m| {
            let mut out = faer::Mat::<T>::zeros(spec, self.rows * self.n_in);
            for r in 0..self.rows {
                matmul(
                    out.as_mut().subcols_mut(r * self.n_in, self.n_in),
                    Accum::Replace,
                    m.as_ref().subcols(r * self.n_out, self.n_out),
                    w,
                    T::one(),
                    par_for(spec, self.n_in, self.n_out, ctx.par),
                );
            }
            Ok(out)
        })?;
        Ok(BackwardResult { inputs: smallvec![Some(a)], bias })
    }

    fn is_affine(&self) -> bool {
        true
    }

    fn trainable(&self) -> Option<&dyn Trainable<T>> {
        // One row (batch 1), and a bias that is one value per output element.
        let bias_ok = match &self.origin {
            Origin::Gemm { c_shape: Some(c), .. } => numel(c) == self.n_out,
            _ => true,
        };
        (self.rows == 1 && bias_ok).then_some(self as &dyn Trainable<T>)
    }
}

impl<T: Scalar> Trainable<T> for Dense<T> {
    fn params(&self) -> Vec<Param<T>> {
        let mut p = vec![Param { input: 1, values: self.w.clone() }];
        if let Some(b) = &self.bias {
            p.push(Param { input: 2, values: b.clone() });
        }
        p
    }

    fn with_params(&self, values: &[&[T]]) -> Result<Box<dyn Operator<T>>> {
        let want = 1 + usize::from(self.bias.is_some());
        if values.len() != want || values[0].len() != self.w.len() {
            return Err(Error::Invalid(format!("{}: wrong parameter count or size", self.op_type)));
        }
        let w = values[0].to_vec();
        let w_abs = w.iter().map(|x| x.abs()).collect();
        let bias = values.get(1).map(|b| b.to_vec());
        if bias.as_ref().is_some_and(|b| b.len() != self.rows * self.n_out) {
            return Err(Error::Invalid(format!("{}: wrong bias size", self.op_type)));
        }
        Ok(Box::new(Dense { w, w_abs, bias, origin: self.origin.clone(), ..*self }))
    }

    fn export_param(&self, k: usize, values: &[T]) -> Result<TensorData> {
        let v: Vec<f64> = values.iter().map(|x| x.as_f64()).collect();
        match (&self.origin, k) {
            (Origin::Gemm { trans_b, alpha, .. }, 0) => {
                let w: Vec<f64> = v.iter().map(|x| x / alpha).collect();
                Ok(if *trans_b {
                    TensorData::float(&[self.n_out, self.n_in], w)?
                } else {
                    TensorData::float(&[self.n_in, self.n_out], transpose(&w, self.n_out, self.n_in))?
                })
            }
            (Origin::Gemm { beta, c_shape: Some(c), .. }, 1) => {
                TensorData::float(c, v.iter().map(|x| x / beta).collect())
            }
            (Origin::MatMul { w_shape }, 0) => {
                TensorData::float(w_shape, transpose(&v, self.n_out, self.n_in))
            }
            _ => Err(Error::Invalid(format!("{}: no parameter {k}", self.op_type))),
        }
    }

    fn rule(&self) -> TrainRule<'_, T> {
        TrainRule::Affine(self)
    }
}

impl<T: Scalar> AffineTrain<T> for Dense<T> {
    fn apply(&self, x: MatRef<'_, T>, abs: bool, out: MatMut<'_, T>, par: Par) {
        let w = MatRef::from_row_major_slice(if abs { &self.w_abs } else { &self.w }, self.n_out, self.n_in);
        matmul(out, Accum::Replace, x, w.transpose(), T::one(), par);
    }

    fn apply_t(&self, g: MatRef<'_, T>, abs: bool, out: MatMut<'_, T>, par: Par) {
        let w = MatRef::from_row_major_slice(if abs { &self.w_abs } else { &self.w }, self.n_out, self.n_in);
        matmul(out, Accum::Replace, g, w, T::one(), par);
    }

    fn bias(&self) -> Option<Vec<T>> {
        self.bias.clone()
    }

    fn weight_grad(&self, g: MatRef<'_, T>, x: MatRef<'_, T>, abs: bool, grads: &mut [Vec<T>], par: Par) {
        let (n_out, n_in) = (self.n_out, self.n_in);
        if abs {
            // The product in the weights' row-major layout, then times sign(W).
            let mut gw = vec![T::zero(); n_out * n_in];
            let view = MatMut::from_row_major_slice_mut(&mut gw, n_out, n_in);
            matmul(view, Accum::Replace, g.transpose(), x, T::one(), par);
            for ((d, &s), &v) in grads[0].iter_mut().zip(&self.w).zip(&gw) {
                if s > T::zero() {
                    *d += v;
                } else if s < T::zero() {
                    *d -= v;
                }
            }
            return;
        }
        let gw = MatMut::from_row_major_slice_mut(&mut grads[0], n_out, n_in);
        matmul(gw, Accum::Add, g.transpose(), x, T::one(), par);
    }

    fn bias_grad(&self, g: &[T], grads: &mut [Vec<T>]) {
        if self.bias.is_some() {
            grads[1].iter_mut().zip(g).for_each(|(d, v)| *d += *v);
        }
    }
}

impl<T: Scalar> Operator<T> for Dense<T> {
    fn op_type(&self) -> &str {
        self.op_type
    }
}

fn cast<T: Scalar>(xs: &[f64]) -> Vec<T> {
    xs.iter().map(|&x| T::from_f64(x)).collect()
}

/// Transpose a row-major `r × c` matrix.
fn transpose(x: &[f64], r: usize, c: usize) -> Vec<f64> {
    let mut out = vec![0.0; x.len()];
    for i in 0..r {
        for j in 0..c {
            out[j * r + i] = x[i * c + j];
        }
    }
    out
}

#[allow(clippy::too_many_arguments)]
fn dense<T: Scalar>(
    op_type: &'static str,
    rows: usize,
    w_out_in: Vec<f64>,
    n_out: usize,
    n_in: usize,
    bias: Option<Vec<f64>>,
    origin: Origin,
) -> Dense<T> {
    let w: Vec<T> = cast(&w_out_in);
    let w_abs = w.iter().map(|x| x.abs()).collect();
    Dense { op_type, rows, n_in, n_out, w, w_abs, bias: bias.map(|b| cast(&b)), origin }
}

/// Gemm: `Y = alpha · A' · B' + beta · C` with `A` perturbed and `B`, `C` constant.
pub fn build_gemm<T: Scalar>(node: &NodeDef<'_>) -> Result<BuiltOp<T>> {
    let trans_a = node.attrs.int_or("transA", 0)? != 0;
    let trans_b = node.attrs.int_or("transB", 0)? != 0;
    let alpha = node.attrs.float_or("alpha", 1.0)?;
    let beta = node.attrs.float_or("beta", 1.0)?;
    let a = node.input(0)?;
    if node.is_const(0) && !node.is_const(1) {
        return Err(Error::unimplemented("Gemm with a constant A and a perturbed B"));
    }
    if !node.is_const(1) {
        return Err(Error::unimplemented("Gemm of two perturbed operands (bilinear)"));
    }
    if trans_a {
        return Err(Error::unimplemented("Gemm with transA=1 on a perturbed operand"));
    }
    let b = node.const_input(1)?;
    if a.shape.len() != 2 || b.shape.len() != 2 {
        return Err(Error::Shape(format!("Gemm needs 2-D operands, got {:?} and {:?}", a.shape, b.shape)));
    }
    let (m, k) = (a.shape[0], a.shape[1]);
    let (bk, n) = if trans_b { (b.shape[1], b.shape[0]) } else { (b.shape[0], b.shape[1]) };
    if bk != k {
        return Err(Error::Shape(format!("Gemm: A is {m}x{k} but B' is {bk}x{n}")));
    }
    // W = alpha · B'ᵀ, stored out × in.
    let mut w = if trans_b { b.data.clone() } else { transpose(&b.data, k, n) };
    if alpha != 1.0 {
        w.iter_mut().for_each(|x| *x *= alpha);
    }
    let bias = match node.inputs.get(2).and_then(|x| x.as_ref()) {
        None => None,
        Some(_) => {
            let c = node.const_input(2).map_err(|_| Error::unimplemented("Gemm with a perturbed C"))?;
            let idx = broadcast_source_index(&c.shape, &[m, n])?;
            Some(idx.iter().map(|&i| beta * c.data[i]).collect())
        }
    };
    let c_shape = node.inputs.get(2).and_then(|x| x.as_ref()).map(|c| c.shape.clone());
    let origin = Origin::Gemm { trans_b, alpha, beta, c_shape };
    Ok(BuiltOp::new(dense::<T>("Gemm", m, w, n, k, bias, origin), &[0], smallvec![m, n]))
}

/// MatMul `X · W` with a constant `W` (1-D or 2-D, or with leading dimensions of 1).
pub fn build_matmul<T: Scalar>(node: &NodeDef<'_>) -> Result<BuiltOp<T>> {
    let x = node.input(0)?;
    if node.is_const(0) && !node.is_const(1) {
        return Err(Error::unimplemented(
            "MatMul of a constant by a perturbed tensor (the bilinear plugin handles it)",
        ));
    }
    if !node.is_const(1) {
        return Err(Error::unimplemented(
            "product of two perturbed tensors in MatMul (the bilinear plugin relaxes it)",
        ));
    }
    let w: &TensorData = node.const_input(1)?;
    let wshape: Vec<usize> = match w.shape.len() {
        0 => return Err(Error::Shape("MatMul with a scalar".into())),
        1 => vec![w.shape[0], 1],
        _ => {
            let lead: usize = w.shape[..w.shape.len() - 2].iter().product();
            if lead != 1 {
                return Err(Error::unimplemented(format!(
                    "MatMul by a batched constant of shape {:?}",
                    w.shape
                )));
            }
            w.shape[w.shape.len() - 2..].to_vec()
        }
    };
    let (k, n) = (wshape[0], wshape[1]);
    let xs = &x.shape;
    let (rows, xk, mut out_shape): (usize, usize, Shape) = match xs.len() {
        0 => return Err(Error::Shape("MatMul with a scalar".into())),
        1 => (1, xs[0], Shape::new()),
        _ => {
            let r = xs[..xs.len() - 1].iter().product();
            (r, xs[xs.len() - 1], xs[..xs.len() - 1].into())
        }
    };
    if xk != k {
        return Err(Error::Shape(format!("MatMul: {:?} times {:?}", xs, w.shape)));
    }
    if w.shape.len() >= 2 {
        out_shape.push(n);
        // Leading 1-dimensions of W broadcast against X's.
        while out_shape.len() < w.shape.len() {
            out_shape.insert(0, 1);
        }
    }
    let wt = transpose(&w.data, k, n);
    let origin = Origin::MatMul { w_shape: w.shape.clone() };
    Ok(BuiltOp::new(dense::<T>("MatMul", rows, wt, n, k, None, origin), &[0], out_shape))
}

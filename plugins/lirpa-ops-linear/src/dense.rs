//! `y[m, :] = W · x[m, :] + b[m, :]` for every row `m`: Gemm and MatMul by a constant.

use faer::linalg::matmul::matmul;
use faer::{Accum, MatRef};
use lirpa_core::linear::par_for;
use lirpa_core::op::{BackwardCtx, Evaluate, Interval, IntervalRule, LinearRelaxation, NodeDef, Operator};
use lirpa_core::{
    BackwardResult, BuiltOp, Error, LinearA, LinearBias, Result, Scalar, Shape, TensorData,
    broadcast_source_index,
};
use smallvec::smallvec;

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
}

impl<T: Scalar> Dense<T> {
    fn w(&self) -> MatRef<'_, T> {
        MatRef::from_row_major_slice(&self.w, self.n_out, self.n_in)
    }

    /// `out[m] = w · x[m] (+ bias)` for a row-major `rows × n_in` input.
    fn apply(&self, w: &[T], x: &[T], out: &mut [T], with_bias: bool) {
        for m in 0..self.rows {
            let xr = &x[m * self.n_in..(m + 1) * self.n_in];
            for j in 0..self.n_out {
                let wr = &w[j * self.n_in..(j + 1) * self.n_in];
                let mut acc = T::zero();
                for t in 0..self.n_in {
                    acc += wr[t] * xr[t];
                }
                if with_bias && let Some(b) = &self.bias {
                    acc += b[m * self.n_out + j];
                }
                out[m * self.n_out + j] = acc;
            }
        }
    }
}

impl<T: Scalar> Evaluate<T> for Dense<T> {
    fn forward(&self, inputs: &[&[T]], out: &mut [T]) -> Result<()> {
        self.apply(&self.w, inputs[0], out, true);
        Ok(())
    }
}

impl<T: Scalar> IntervalRule<T> for Dense<T> {
    fn interval(&self, inputs: &[Interval<'_, T>], lower: &mut [T], upper: &mut [T]) -> Result<()> {
        let x = inputs[0];
        let half = T::from_f64(0.5);
        let mid: Vec<T> = x.lower.iter().zip(x.upper).map(|(&l, &u)| (l + u) * half).collect();
        let rad: Vec<T> = x.lower.iter().zip(x.upper).map(|(&l, &u)| (u - l) * half).collect();
        self.apply(&self.w, &mid, lower, true);
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

fn dense<T: Scalar>(
    op_type: &'static str,
    rows: usize,
    w_out_in: Vec<f64>,
    n_out: usize,
    n_in: usize,
    bias: Option<Vec<f64>>,
) -> Dense<T> {
    let w: Vec<T> = cast(&w_out_in);
    let w_abs = w.iter().map(|x| x.abs()).collect();
    Dense { op_type, rows, n_in, n_out, w, w_abs, bias: bias.map(|b| cast(&b)) }
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
    Ok(BuiltOp::new(dense::<T>("Gemm", m, w, n, k, bias), &[0], smallvec![m, n]))
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
    Ok(BuiltOp::new(dense::<T>("MatMul", rows, wt, n, k, None), &[0], out_shape))
}

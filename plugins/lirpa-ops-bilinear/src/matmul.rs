//! `x · y` for two perturbed tensors with ONNX MatMul semantics: `[.., m, k]` times
//! `[.., k, n]` with broadcast batch dimensions (1-D operands get a unit dimension
//! that the output drops), as attention's `Q·Kᵀ` and `softmax·V` use.
//!
//! Every product term `x[b, i, t]·y[b, t, j]` is relaxed by the McCormick planes of
//! the crate documentation and the terms are summed. With `A⁺`, `A⁻` the positive and
//! negative parts of the coefficients on the output, per batch and row `i`:
//!
//! ```text
//!     lower:  A_x[b, i, :] = A⁺[b, i, :]·Y_lᵀ + A⁻[b, i, :]·Y_uᵀ
//!             A_y[b, t, :] += x_l[b, i, t] · A[b, i, :]
//!             bias          = −A⁺·(X_l·Y_l) − A⁻·(X_l·Y_u)
//! ```
//!
//! and the upper bound exchanges `Y_l` and `Y_u`.

use crate::opt::ProductTerms;
use crate::{Product, by_sides, check_finite, mul_interval};
use faer::linalg::matmul::matmul;
use faer::{Accum, Mat, MatRef};
use lirpa_core::linear::{mat_vec, par_for, takes_lower_line};
use lirpa_core::op::{BackwardCtx, Evaluate, Interval, IntervalRule, LinearRelaxation, NodeDef, Operator};
use lirpa_core::{
    BackwardResult, BuiltOp, Error, LinearA, Par, Result, Scalar, Shape, broadcast_shapes,
    broadcast_source_index, numel,
};
use smallvec::smallvec;

pub type BilinearMatMul = Product<MatMulTerms>;

/// The terms `x[b, i, t]·y[b, t, j]` of a MatMul.
#[derive(Debug)]
pub struct MatMulTerms {
    pub(crate) m: usize,
    pub(crate) k: usize,
    pub(crate) n: usize,
    /// For every output batch, the batch of `x` and of `y` it reads.
    pub(crate) bx: Vec<usize>,
    pub(crate) by: Vec<usize>,
    /// Number of batches of `x` and `y`.
    pub(crate) nbx: usize,
    pub(crate) nby: usize,
}

/// Both operands perturbed, or a constant left operand (`C·y`, which the linear
/// plugin does not handle): the constant becomes an edge whose bounds are its value,
/// and the planes are then exact (`x = x_l` makes both planes equal `x_l·y`). A
/// constant right operand is declined: the linear plugin's exact `x·W`.
pub fn build_matmul<T: Scalar>(node: &NodeDef<'_>) -> Result<BuiltOp<T>> {
    node.input(0)?;
    if node.is_const(1) {
        return Err(Error::declined("the right operand is constant (an exact linear map)"));
    }
    let (xs, ys) = (node.input(0)?.shape.clone(), node.input(1)?.shape.clone());
    let (op, out) = BilinearMatMul::new(&xs, &ys)?;
    Ok(BuiltOp::new(op, &[0, 1], out))
}

impl BilinearMatMul {
    pub(crate) fn new(xs: &[usize], ys: &[usize]) -> Result<(Self, Shape)> {
        if xs.is_empty() || ys.is_empty() {
            return Err(Error::Shape("MatMul with a scalar operand".into()));
        }
        let x2: Shape = if xs.len() == 1 { smallvec![1, xs[0]] } else { xs.into() };
        let y2: Shape = if ys.len() == 1 { smallvec![ys[0], 1] } else { ys.into() };
        let (m, k) = (x2[x2.len() - 2], x2[x2.len() - 1]);
        let (k2, n) = (y2[y2.len() - 2], y2[y2.len() - 1]);
        if k != k2 {
            return Err(Error::Shape(format!("MatMul: {xs:?} times {ys:?}")));
        }
        let (bxs, bys) = (&x2[..x2.len() - 2], &y2[..y2.len() - 2]);
        let bo = broadcast_shapes(bxs, bys)?;
        let op = Product(MatMulTerms {
            m,
            k,
            n,
            bx: broadcast_source_index(bxs, &bo)?,
            by: broadcast_source_index(bys, &bo)?,
            nbx: numel(bxs),
            nby: numel(bys),
        });
        let mut out = bo;
        if xs.len() > 1 {
            out.push(m);
        }
        if ys.len() > 1 {
            out.push(n);
        }
        Ok((op, out))
    }

    /// `X_l · Y` per output batch (row-major `[b, i, j]`) and the same sum of absolute
    /// products (for the rounding margin).
    fn products<T: Scalar>(&self, xl: &[T], y: &[T]) -> (Vec<T>, Vec<T>) {
        let (m, k, n) = (self.m, self.k, self.n);
        let nb = self.bx.len();
        let mut g = vec![T::zero(); nb * m * n];
        let mut gabs = vec![T::zero(); nb * m * n];
        for b in 0..nb {
            let (xo, yo) = (self.bx[b] * m * k, self.by[b] * k * n);
            for i in 0..m {
                for t in 0..k {
                    let xv = xl[xo + i * k + t];
                    if xv == T::zero() {
                        continue;
                    }
                    for j in 0..n {
                        let p = xv * y[yo + t * n + j];
                        g[(b * m + i) * n + j] += p;
                        gabs[(b * m + i) * n + j] += p.abs();
                    }
                }
            }
        }
        (g, gabs)
    }

    /// Constant terms of the planes summed over t, widened outward: lower plane
    /// −X_l·Y_l (minus the margin), upper plane −X_l·Y_u (plus it).
    fn constants<T: Scalar>(&self, xl: &[T], yl: &[T], yu: &[T]) -> (Vec<T>, Vec<T>) {
        let margin = T::from_f64(4.0) * T::epsilon();
        let (gl, gl_abs) = self.products(xl, yl);
        let (gu, gu_abs) = self.products(xl, yu);
        let cl: Vec<T> = gl.iter().zip(&gl_abs).map(|(&g, &s)| -g - margin * s).collect();
        let cu: Vec<T> = gu.iter().zip(&gu_abs).map(|(&g, &s)| -g + margin * s).collect();
        (cl, cu)
    }

    /// One side of the backward bound. `(y_pos, y_neg)` are the bounds of `y` the
    /// positive and negative coefficients use (`(Y_l, Y_u)` for the lower bound),
    /// `(g_pos, g_neg)` the matching constant terms, summed over `t`.
    #[allow(clippy::too_many_arguments)]
    fn side<T: Scalar>(
        &self,
        a: &Mat<T>,
        xl: &[T],
        y_pos: &[T],
        y_neg: &[T],
        g_pos: &[T],
        g_neg: &[T],
        bias: &mut [T],
        par: Par,
    ) -> (Mat<T>, Mat<T>) {
        let (m, k, n) = (self.m, self.k, self.n);
        let spec = a.nrows();
        let zero = T::zero();
        let pos = Mat::from_fn(spec, a.ncols(), |r, c| a[(r, c)].max(zero));
        let neg = Mat::from_fn(spec, a.ncols(), |r, c| a[(r, c)].min(zero));
        let mut ax = Mat::<T>::zeros(spec, self.nbx * m * k);
        let mut ay = Mat::<T>::zeros(spec, self.nby * k * n);
        let par = par_for(spec, k, n, par);
        for b in 0..self.bx.len() {
            let (bx, by) = (self.bx[b], self.by[b]);
            let yp = MatRef::from_row_major_slice(&y_pos[by * k * n..(by + 1) * k * n], k, n);
            let yn = MatRef::from_row_major_slice(&y_neg[by * k * n..(by + 1) * k * n], k, n);
            for i in 0..m {
                let c0 = (b * m + i) * n;
                let x0 = (bx * m + i) * k;
                let dst = ax.as_mut().subcols_mut(x0, k);
                matmul(dst, Accum::Add, pos.as_ref().subcols(c0, n), yp.transpose(), T::one(), par);
                let dst = ax.as_mut().subcols_mut(x0, k);
                matmul(dst, Accum::Add, neg.as_ref().subcols(c0, n), yn.transpose(), T::one(), par);
                for t in 0..k {
                    let s = xl[x0 + t];
                    if s == zero {
                        continue;
                    }
                    for j in 0..n {
                        let from = a.col_as_slice(c0 + j);
                        let to = ay.col_as_slice_mut((by * k + t) * n + j);
                        for (d, &v) in to.iter_mut().zip(from) {
                            *d += s * v;
                        }
                    }
                }
            }
        }
        let bp = mat_vec(pos.as_ref(), g_pos);
        let bn = mat_vec(neg.as_ref(), g_neg);
        for ((o, p), q) in bias.iter_mut().zip(bp).zip(bn) {
            *o += p + q;
        }
        (ax, ay)
    }
}

impl<T: Scalar> Evaluate<T> for BilinearMatMul {
    fn forward(&self, inputs: &[&[T]], out: &mut [T]) -> Result<()> {
        let (m, k, n) = (self.m, self.k, self.n);
        let (x, y) = (inputs[0], inputs[1]);
        for b in 0..self.bx.len() {
            let (xo, yo) = (self.bx[b] * m * k, self.by[b] * k * n);
            for i in 0..m {
                for j in 0..n {
                    let mut acc = T::zero();
                    for t in 0..k {
                        acc += x[xo + i * k + t] * y[yo + t * n + j];
                    }
                    out[(b * m + i) * n + j] = acc;
                }
            }
        }
        Ok(())
    }
}

impl<T: Scalar> IntervalRule<T> for BilinearMatMul {
    fn interval(&self, inputs: &[Interval<'_, T>], lower: &mut [T], upper: &mut [T]) -> Result<()> {
        let (m, k, n) = (self.m, self.k, self.n);
        let (x, y) = (inputs[0], inputs[1]);
        for b in 0..self.bx.len() {
            let (xo, yo) = (self.bx[b] * m * k, self.by[b] * k * n);
            for i in 0..m {
                for j in 0..n {
                    let (mut lo, mut hi) = (T::zero(), T::zero());
                    for t in 0..k {
                        let (p, q) = (xo + i * k + t, yo + t * n + j);
                        let (a, c) = mul_interval(x.lower[p], x.upper[p], y.lower[q], y.upper[q]);
                        lo += a;
                        hi += c;
                    }
                    lower[(b * m + i) * n + j] = lo;
                    upper[(b * m + i) * n + j] = hi;
                }
            }
        }
        Ok(())
    }
}

impl<T: Scalar> LinearRelaxation<T> for BilinearMatMul {
    fn backward(&self, ctx: &BackwardCtx<'_, T>, a: LinearA<T>) -> Result<BackwardResult<T>> {
        let (x, y) = (ctx.bounds(0)?, ctx.bounds(1)?);
        check_finite("input 0", x.lower)?;
        check_finite("input 1", y.lower)?;
        check_finite("input 1", y.upper)?;
        let (cl, cu) = self.constants(x.lower, y.lower, y.upper);
        by_sides(&a, |m, upper, bias| {
            let (ax, ay) = if upper {
                self.side(m, x.lower, y.upper, y.lower, &cu, &cl, bias, ctx.par)
            } else {
                self.side(m, x.lower, y.lower, y.upper, &cl, &cu, bias, ctx.par)
            };
            Ok((Some(ax), Some(ay)))
        })
    }

    fn needs_input_bounds(&self) -> &[usize] {
        &[0, 1]
    }

    /// The interpolation between the two McCormick planes of each side, per product term
    /// (see module `opt`), when the product has at most `MATMUL_MAX_TERMS` (4096)
    /// terms (the parameters take `2·terms` values per row of every pass).
    fn optimizable(&self) -> Option<&dyn lirpa_core::OptimizableRelaxation<T>> {
        (self.terms() <= crate::opt::MATMUL_MAX_TERMS).then_some(self as _)
    }

    /// The adjoint of `backward` for one side: every output element of every row is the
    /// sum over `t` of the planes its coefficient's sign selects (as `backward`, with the
    /// same summed constants), evaluated at the inputs' values `z` of that row.
    fn relaxed_forward(
        &self,
        ctx: &BackwardCtx<'_, T>,
        a: MatRef<'_, T>,
        upper: bool,
        z: &[&[T]],
        out: &mut [T],
    ) -> Result<()> {
        let (x, y) = (ctx.bounds(0)?, ctx.bounds(1)?);
        let (cl, cu) = self.constants(x.lower, y.lower, y.upper);
        let (m, k, n) = (self.m, self.k, self.n);
        let (nxs, nys) = (self.nbx * m * k, self.nby * k * n);
        let no = a.ncols();
        for r in 0..a.nrows() {
            let (zx, zy) = (&z[0][r * nxs..(r + 1) * nxs], &z[1][r * nys..(r + 1) * nys]);
            for b in 0..self.bx.len() {
                let (xo, yo) = (self.bx[b] * m * k, self.by[b] * k * n);
                for i in 0..m {
                    for j in 0..n {
                        let o = (b * m + i) * n + j;
                        let low = takes_lower_line(a[(r, o)], upper);
                        let (ys, c) = if low { (y.lower, cl[o]) } else { (y.upper, cu[o]) };
                        let mut acc = c;
                        for t in 0..k {
                            let (p, q) = (xo + i * k + t, yo + t * n + j);
                            acc += ys[q] * zx[p] + x.lower[p] * zy[q];
                        }
                        out[r * no + o] = acc;
                    }
                }
            }
        }
        Ok(())
    }
}

impl<T: Scalar> Operator<T> for BilinearMatMul {
    fn op_type(&self) -> &str {
        "MatMul"
    }
}

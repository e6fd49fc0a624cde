//! Gemm `Y = alpha · A' · B' + beta · C` (`A' = A` or `Aᵀ` by `transA`, likewise `B'`)
//! with a perturbed factor: a weight perturbed alone or with the input, or a perturbed
//! bias. It is the bilinear MatMul of `A'` and `B'` ([`BilinearMatMul`], its McCormick
//! planes, its α-CROWN parameters and adjoints), seen through the transpositions as
//! index maps, scaled by `alpha`, plus the bias (a constant folded into the bound, or
//! an input edge whose coefficients are `beta` times the output's, summed over the
//! broadcast). Nothing of the product's relaxation is repeated here: every rule calls
//! the MatMul's with the transposed input bounds and maps its coefficients back.
//!
//! The builder declines a constant `B` with a constant or absent `C` and `transA = 0`
//! (the linear plugin's exact affine map).
//!
//! The index maps may also say "the constant 0" ([`ZERO`]): an element of `A'` or `B'`
//! that is no element of its input (a convolution's padding, module `conv`). Its bounds
//! and values are 0; the product's coefficients on it are dropped, which is exact since
//! it is the constant 0. The same operator therefore serves a Conv with a perturbed
//! weight, whose `B'` is the im2col of the input.

use crate::matmul::BilinearMatMul;
use faer::{Mat, MatRef};
use lirpa_core::linear::scatter_columns_scaled;
use lirpa_core::op::{BackwardCtx, Evaluate, Interval, IntervalRule, LinearRelaxation, NodeDef, Operator};
use lirpa_core::{
    BackwardResult, BuiltOp, Error, LinearA, OptimizableRelaxation, Result, Scalar, SideParams,
    broadcast_source_index,
};
use smallvec::smallvec;
use std::borrow::Cow;

/// An index-map entry standing for the constant 0 rather than an element of the input.
pub(crate) const ZERO: usize = usize::MAX;

/// The bias term of a Gemm.
#[derive(Debug)]
pub(crate) enum GemmBias<T: Scalar> {
    None,
    /// `beta · C` broadcast to the output, row-major `m × n`.
    Const(Vec<T>),
    /// A perturbed `C` (input edge 2) of `n_c` elements: output element `o` adds
    /// `scale[o] · C[src[o]]` (`scale` is `beta` everywhere).
    Input {
        src: Vec<usize>,
        scale: Vec<T>,
        n_c: usize,
    },
}

/// A Gemm with a perturbed factor (see the module documentation), or another operator
/// that is such a product seen through index maps (`op_type`).
#[derive(Debug)]
pub struct BilinearGemm<T: Scalar> {
    pub(crate) op_type: &'static str,
    pub(crate) mm: BilinearMatMul,
    /// For every element of `A'` (`B'`), the element of `A` (`B`) it is, or [`ZERO`];
    /// `None` for the identity.
    pub(crate) ta: Option<Vec<usize>>,
    pub(crate) tb: Option<Vec<usize>>,
    /// Number of elements of `A` and `B`.
    pub(crate) na: usize,
    pub(crate) nb: usize,
    pub(crate) alpha: T,
    pub(crate) bias: GemmBias<T>,
}

/// The index map of a transposition: element `i·c + t` of the `r × c` transposed matrix
/// is element `t·r + i` of the stored `c × r` one.
fn transpose_map(r: usize, c: usize) -> Vec<usize> {
    (0..r * c).map(|p| (p % c) * r + p / c).collect()
}

/// `v` read through `map` (`out[i] = v[map[i]]`, 0 where `map[i]` is [`ZERO`]), for
/// each of `rows` rows of `v`.
fn gather<'a, T: Scalar>(v: &'a [T], map: &Option<Vec<usize>>, rows: usize) -> Cow<'a, [T]> {
    match map {
        None => Cow::Borrowed(v),
        Some(map) => {
            let n = v.len() / rows.max(1);
            let mut out = Vec::with_capacity(rows * map.len());
            for r in 0..rows {
                out.extend(map.iter().map(|&i| if i == ZERO { T::zero() } else { v[r * n + i] }));
            }
            Cow::Owned(out)
        }
    }
}

/// Coefficients on the elements of `A'` (columns) summed onto the `n` elements of `A`
/// through `map`; columns of [`ZERO`] elements are dropped (they multiply the constant 0).
fn scatter_map<T: Scalar>(a: &Mat<T>, map: &[usize], n: usize) -> Mat<T> {
    debug_assert_eq!(a.ncols(), map.len());
    let mut out = Mat::<T>::zeros(a.nrows(), n);
    for (i, &j) in map.iter().enumerate() {
        if j == ZERO {
            continue;
        }
        let from = a.col_as_slice(i);
        for (d, &v) in out.col_as_slice_mut(j).iter_mut().zip(from) {
            *d += v;
        }
    }
    out
}

pub fn build_gemm<T: Scalar>(node: &NodeDef<'_>) -> Result<BuiltOp<T>> {
    let trans_a = node.attrs.int_or("transA", 0)? != 0;
    let trans_b = node.attrs.int_or("transB", 0)? != 0;
    let alpha = node.attrs.float_or("alpha", 1.0)?;
    let beta = node.attrs.float_or("beta", 1.0)?;
    let has_c = node.inputs.get(2).is_some_and(|c| c.is_some());
    if node.is_const(1) && (!has_c || node.is_const(2)) && !trans_a {
        return Err(Error::declined("B and C are constant (an exact affine map)"));
    }
    let (a, b) = (&node.input(0)?.shape, &node.input(1)?.shape);
    if a.len() != 2 || b.len() != 2 {
        return Err(Error::Shape(format!("Gemm needs 2-D operands, got {a:?} and {b:?}")));
    }
    let (m, k) = if trans_a { (a[1], a[0]) } else { (a[0], a[1]) };
    let (kb, n) = if trans_b { (b[1], b[0]) } else { (b[0], b[1]) };
    if kb != k {
        return Err(Error::Shape(format!("Gemm: A' is {m}x{k} but B' is {kb}x{n}")));
    }
    let (mm, out) = BilinearMatMul::new(&[m, k], &[k, n])?;
    let mut edges = vec![0, 1];
    let bias = if !has_c {
        GemmBias::None
    } else {
        let c = node.input(2)?;
        let src = broadcast_source_index(&c.shape, &[m, n])?;
        match &c.value {
            Some(v) => GemmBias::Const(src.iter().map(|&i| T::from_f64(beta * v.data[i])).collect()),
            None => {
                edges.push(2);
                let scale = vec![T::from_f64(beta); src.len()];
                GemmBias::Input { src, scale, n_c: c.shape.iter().product() }
            }
        }
    };
    let op = BilinearGemm {
        op_type: "Gemm",
        mm,
        ta: trans_a.then(|| transpose_map(m, k)),
        tb: trans_b.then(|| transpose_map(k, n)),
        na: m * k,
        nb: k * n,
        alpha: T::from_f64(alpha),
        bias,
    };
    Ok(BuiltOp::new(op, &edges, out))
}

impl<T: Scalar> BilinearGemm<T> {
    /// Run `f` with a context whose input bounds are those of `A'` and `B'`.
    fn with_inner<R>(&self, ctx: &BackwardCtx<'_, T>, f: impl FnOnce(&BackwardCtx<'_, T>) -> R) -> Result<R> {
        let (a, b) = (ctx.bounds(0)?, ctx.bounds(1)?);
        let (al, au) = (gather(a.lower, &self.ta, 1), gather(a.upper, &self.ta, 1));
        let (bl, bu) = (gather(b.lower, &self.tb, 1), gather(b.upper, &self.tb, 1));
        let bounds = [
            Some(Interval { lower: &al[..], upper: &au[..] }),
            Some(Interval { lower: &bl[..], upper: &bu[..] }),
        ];
        Ok(f(&BackwardCtx { input_bounds: &bounds, options: ctx.options, par: ctx.par }))
    }

    /// Coefficients on the product `A'·B'` from coefficients on the output.
    fn scaled(&self, m: MatRef<'_, T>) -> Mat<T> {
        let s = self.alpha;
        Mat::from_fn(m.nrows(), m.ncols(), |r, c| s * m[(r, c)])
    }

    fn inner_a(&self, a: &LinearA<T>) -> LinearA<T> {
        LinearA::dense(
            a.lower.as_ref().map(|m| self.scaled(m.as_ref())),
            a.upper.as_ref().map(|m| self.scaled(m.as_ref())),
        )
    }

    /// The product's backward result on `A'`, `B'` mapped to `A`, `B`, plus the bias
    /// for the coefficients `a` on the output.
    fn outer(&self, res: BackwardResult<T>, a: &LinearA<T>) -> Result<BackwardResult<T>> {
        let mut it = res.inputs.into_iter();
        let back =
            |e: Option<LinearA<T>>, map: &Option<Vec<usize>>, n: usize| -> Result<Option<LinearA<T>>> {
                e.map(|e| match map {
                    None => Ok(e),
                    Some(map) => e.map(|m| Ok(scatter_map(m, map, n))),
                })
                .transpose()
            };
        let ax = back(it.next().flatten(), &self.ta, self.na)?;
        let ay = back(it.next().flatten(), &self.tb, self.nb)?;
        let mut bias = res.bias;
        let mut inputs = smallvec![ax, ay];
        match &self.bias {
            GemmBias::None => {}
            GemmBias::Const(b) => bias.add_assign(&a.times_vector(b)),
            GemmBias::Input { src, scale, n_c } => {
                inputs.push(Some(a.clone().map(|m| Ok(scatter_columns_scaled(m, src, scale, *n_c)))?));
            }
        }
        Ok(BackwardResult { inputs, bias })
    }

    /// `z` of the edges mapped to the product's inputs, `a.nrows()` rows.
    fn inner_z<'a>(&self, z: &[&'a [T]], rows: usize) -> (Cow<'a, [T]>, Cow<'a, [T]>) {
        (gather(z[0], &self.ta, rows), gather(z[1], &self.tb, rows))
    }

    /// The output's value from the product's (`out`, in place): `alpha·out + bias`.
    fn finish_rows(&self, z: &[&[T]], rows: usize, out: &mut [T]) {
        let no = out.len() / rows.max(1);
        for r in 0..rows {
            for o in 0..no {
                let v = &mut out[r * no + o];
                *v = self.alpha * *v
                    + match &self.bias {
                        GemmBias::None => T::zero(),
                        GemmBias::Const(b) => b[o],
                        GemmBias::Input { src, scale, n_c } => scale[o] * z[2][r * n_c + src[o]],
                    };
            }
        }
    }

    /// A relaxed forward evaluation through the product's `inner` one.
    fn relaxed(
        &self,
        ctx: &BackwardCtx<'_, T>,
        a: MatRef<'_, T>,
        z: &[&[T]],
        out: &mut [T],
        inner: impl FnOnce(&BackwardCtx<'_, T>, MatRef<'_, T>, &[&[T]], &mut [T]) -> Result<()>,
    ) -> Result<()> {
        let rows = a.nrows();
        let (zx, zy) = self.inner_z(z, rows);
        let sa = self.scaled(a);
        self.with_inner(ctx, |c| inner(c, sa.as_ref(), &[&zx[..], &zy[..]], out))??;
        self.finish_rows(z, rows, out);
        Ok(())
    }
}

impl<T: Scalar> Evaluate<T> for BilinearGemm<T> {
    fn forward(&self, inputs: &[&[T]], out: &mut [T]) -> Result<()> {
        let (x, y) = self.inner_z(inputs, 1);
        self.mm.forward(&[&x[..], &y[..]], out)?;
        self.finish_rows(inputs, 1, out);
        Ok(())
    }
}

impl<T: Scalar> IntervalRule<T> for BilinearGemm<T> {
    fn interval(&self, inputs: &[Interval<'_, T>], lower: &mut [T], upper: &mut [T]) -> Result<()> {
        let (a, b) = (inputs[0], inputs[1]);
        let (al, au) = (gather(a.lower, &self.ta, 1), gather(a.upper, &self.ta, 1));
        let (bl, bu) = (gather(b.lower, &self.tb, 1), gather(b.upper, &self.tb, 1));
        let inner =
            [Interval { lower: &al[..], upper: &au[..] }, Interval { lower: &bl[..], upper: &bu[..] }];
        self.mm.interval(&inner, lower, upper)?;
        for o in 0..lower.len() {
            let (p, q) = (self.alpha * lower[o], self.alpha * upper[o]);
            let (mut lo, mut hi) = (p.min(q), p.max(q));
            match &self.bias {
                GemmBias::None => {}
                GemmBias::Const(b) => {
                    lo += b[o];
                    hi += b[o];
                }
                GemmBias::Input { src, scale, .. } => {
                    let c = inputs[2];
                    let (p, q) = (scale[o] * c.lower[src[o]], scale[o] * c.upper[src[o]]);
                    lo += p.min(q);
                    hi += p.max(q);
                }
            }
            lower[o] = lo;
            upper[o] = hi;
        }
        Ok(())
    }
}

impl<T: Scalar> LinearRelaxation<T> for BilinearGemm<T> {
    fn backward(&self, ctx: &BackwardCtx<'_, T>, a: LinearA<T>) -> Result<BackwardResult<T>> {
        let a = a.into_dense();
        let res = self.with_inner(ctx, |c| self.mm.backward(c, self.inner_a(&a)))??;
        self.outer(res, &a)
    }

    fn needs_input_bounds(&self) -> &[usize] {
        &[0, 1]
    }

    fn optimizable(&self) -> Option<&dyn OptimizableRelaxation<T>> {
        LinearRelaxation::<T>::optimizable(&self.mm).map(|_| self as _)
    }

    fn relaxed_forward(
        &self,
        ctx: &BackwardCtx<'_, T>,
        a: MatRef<'_, T>,
        upper: bool,
        z: &[&[T]],
        out: &mut [T],
    ) -> Result<()> {
        self.relaxed(ctx, a, z, out, |c, sa, zi, out| self.mm.relaxed_forward(c, sa, upper, zi, out))
    }
}

/// α-CROWN: the product's parameters (its McCormick interpolation per term), with the
/// coefficients and values mapped as in the CROWN rule.
impl<T: Scalar> OptimizableRelaxation<T> for BilinearGemm<T> {
    fn init_params(&self, ctx: &BackwardCtx<'_, T>) -> Result<Vec<T>> {
        self.with_inner(ctx, |c| self.mm.init_params(c))?
    }

    fn project(&self, ctx: &BackwardCtx<'_, T>, row: &mut [T]) {
        if self.with_inner(ctx, |c| self.mm.project(c, row)).is_err() {
            // The product's feasible set does not depend on its input bounds.
            OptimizableRelaxation::project(&self.mm, ctx, row);
        }
    }

    fn backward_with(
        &self,
        ctx: &BackwardCtx<'_, T>,
        a: LinearA<T>,
        params: SideParams<'_, T>,
    ) -> Result<BackwardResult<T>> {
        let a = a.into_dense();
        let res = self.with_inner(ctx, |c| self.mm.backward_with(c, self.inner_a(&a), params))??;
        self.outer(res, &a)
    }

    fn relaxed_forward_with(
        &self,
        ctx: &BackwardCtx<'_, T>,
        params: &[T],
        a: MatRef<'_, T>,
        upper: bool,
        z: &[&[T]],
        out: &mut [T],
    ) -> Result<()> {
        self.relaxed(ctx, a, z, out, |c, sa, zi, out| {
            self.mm.relaxed_forward_with(c, params, sa, upper, zi, out)
        })
    }

    fn param_grad(
        &self,
        ctx: &BackwardCtx<'_, T>,
        params: &[T],
        a: MatRef<'_, T>,
        upper: bool,
        z: &[&[T]],
        grad: &mut [T],
    ) -> Result<()> {
        let (zx, zy) = self.inner_z(z, a.nrows());
        let sa = self.scaled(a);
        self.with_inner(ctx, |c| {
            self.mm.param_grad(c, params, sa.as_ref(), upper, &[&zx[..], &zy[..]], grad)
        })?
    }

    fn bounds_grad(
        &self,
        ctx: &BackwardCtx<'_, T>,
        params: &[T],
        a: MatRef<'_, T>,
        upper: bool,
        z: &[&[T]],
        weight: &[T],
        grad_lower: &mut [Vec<T>],
        grad_upper: &mut [Vec<T>],
    ) -> Result<()> {
        let (zx, zy) = self.inner_z(z, a.nrows());
        let sa = self.scaled(a);
        // The product's gradients on A', B' (as many as their index maps, which need
        // not be the sizes of A, B), scattered back to A, B.
        let inner_len = |map: &Option<Vec<usize>>, n: usize| map.as_ref().map_or(n, |m| m.len());
        let (ia, ib) = (inner_len(&self.ta, self.na), inner_len(&self.tb, self.nb));
        let sized = |g: &[Vec<T>], i: usize, n: usize, inner: usize| {
            if g[i].len() == n { vec![T::zero(); inner] } else { Vec::new() }
        };
        let mut gl = vec![sized(grad_lower, 0, self.na, ia), sized(grad_lower, 1, self.nb, ib)];
        let mut gu = vec![sized(grad_upper, 0, self.na, ia), sized(grad_upper, 1, self.nb, ib)];
        self.with_inner(ctx, |c| {
            self.mm.bounds_grad(c, params, sa.as_ref(), upper, &[&zx[..], &zy[..]], weight, &mut gl, &mut gu)
        })??;
        for (outer, inner) in [(grad_lower, gl), (grad_upper, gu)] {
            for (i, map) in [(0, &self.ta), (1, &self.tb)] {
                for (j, g) in inner[i].iter().enumerate() {
                    match map.as_ref().map_or(j, |m| m[j]) {
                        ZERO => {}
                        o => outer[i][o] += *g,
                    }
                }
            }
        }
        Ok(())
    }
}

impl<T: Scalar> Operator<T> for BilinearGemm<T> {
    fn op_type(&self) -> &str {
        self.op_type
    }
}

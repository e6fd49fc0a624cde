//! ReduceSum and ReduceMean (exact affine maps) and ReduceMax/ReduceMin.
//!
//! ReduceMax's relaxation (as auto_LiRPA's max pooling): the lower line is the input
//! with the largest lower bound, `max ≥ x_{j*}`, which is exact when that input's
//! lower bound reaches every other input's upper bound; otherwise the upper line is
//! the constant `max_j u_j`. ReduceMin is `−max(−x)`.

use crate::groups::{norm_axis, reduce_groups};
use faer::{Mat, MatRef};
use lirpa_core::op::{BackwardCtx, Evaluate, Interval, IntervalRule, LinearRelaxation, NodeDef, Operator};
use lirpa_core::{BackwardResult, BuiltOp, Error, LinearA, LinearBias, Result, Scalar, numel};
use smallvec::smallvec;

/// The reduction's axes: the `axes` attribute, or (from `input_opset` on) the
/// optional second input, which must be constant. Empty axes reduce everything
/// unless `noop_with_empty_axes`.
fn reduce_axes(node: &NodeDef<'_>, input_opset: i64) -> Result<Option<Vec<usize>>> {
    let rank = node.input(0)?.shape.len();
    let raw: Option<Vec<i64>> = if node.opset >= input_opset {
        match node.inputs.get(1).and_then(|x| x.as_ref()) {
            None => None,
            Some(_) => Some(
                node.const_input(1)
                    .map_err(|_| Error::unimplemented("reduction axes given by a perturbed tensor"))?
                    .to_i64()?,
            ),
        }
    } else {
        node.attrs.ints("axes")?.map(|a| a.to_vec())
    };
    let raw = raw.filter(|a| !a.is_empty());
    let Some(raw) = raw else {
        return Ok(if node.attrs.int_or("noop_with_empty_axes", 0)? != 0 {
            None
        } else {
            Some((0..rank).collect())
        });
    };
    let mut axes = raw.iter().map(|&a| norm_axis(a, rank)).collect::<Result<Vec<_>>>()?;
    axes.sort_unstable();
    axes.dedup();
    Ok(Some(axes))
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Sum,
    Mean,
    Max,
    Min,
}

#[derive(Debug)]
pub struct Reduce {
    op_type: &'static str,
    kind: Kind,
    /// Input elements of each output element.
    groups: Vec<Vec<usize>>,
    n_in: usize,
}

fn build<T: Scalar>(
    node: &NodeDef<'_>,
    op_type: &'static str,
    kind: Kind,
    input_opset: i64,
) -> Result<BuiltOp<T>> {
    let shape = node.input(0)?.shape.clone();
    let keepdims = node.attrs.int_or("keepdims", 1)? != 0;
    let (groups, out) = match reduce_axes(node, input_opset)? {
        Some(axes) => reduce_groups(&shape, &axes, keepdims),
        None => ((0..numel(&shape)).map(|i| vec![i]).collect(), shape.clone()),
    };
    if groups.iter().any(|g| g.is_empty()) {
        return Err(Error::Shape(format!("{op_type} over an empty axis of {shape:?}")));
    }
    Ok(BuiltOp::new(Reduce { op_type, kind, groups, n_in: numel(&shape) }, &[0], out))
}

pub fn build_reduce_sum<T: Scalar>(node: &NodeDef<'_>) -> Result<BuiltOp<T>> {
    build(node, "ReduceSum", Kind::Sum, 13)
}
pub fn build_reduce_mean<T: Scalar>(node: &NodeDef<'_>) -> Result<BuiltOp<T>> {
    build(node, "ReduceMean", Kind::Mean, 18)
}
pub fn build_reduce_max<T: Scalar>(node: &NodeDef<'_>) -> Result<BuiltOp<T>> {
    build(node, "ReduceMax", Kind::Max, 18)
}
pub fn build_reduce_min<T: Scalar>(node: &NodeDef<'_>) -> Result<BuiltOp<T>> {
    build(node, "ReduceMin", Kind::Min, 18)
}

impl Reduce {
    fn scale<T: Scalar>(&self, g: &[usize]) -> T {
        match self.kind {
            Kind::Mean => T::one() / T::from_f64(g.len() as f64),
            _ => T::one(),
        }
    }

    fn is_linear(&self) -> bool {
        matches!(self.kind, Kind::Sum | Kind::Mean)
    }

    /// The relaxation of ReduceMax (ReduceMin as `−max(−x)`, the returned flag): per
    /// group, the selected input `j*` (the lower line `max ≥ x_{j*}`) and the constant
    /// upper line (`None` when `x_{j*}` is exact).
    #[allow(clippy::type_complexity)]
    fn selection<T: Scalar>(&self, ctx: &BackwardCtx<'_, T>) -> Result<(Vec<(usize, Option<T>)>, bool)> {
        let x = ctx.bounds(0)?;
        // Work on max: for Min, negate bounds and coefficients.
        let neg = self.kind == Kind::Min;
        let (lo, hi): (Vec<T>, Vec<T>) = if neg {
            (x.upper.iter().map(|&v| -v).collect(), x.lower.iter().map(|&v| -v).collect())
        } else {
            (x.lower.to_vec(), x.upper.to_vec())
        };
        let mut sel = Vec::with_capacity(self.groups.len());
        for g in &self.groups {
            let &js = g
                .iter()
                .max_by(|&&a, &&b| lo[a].partial_cmp(&lo[b]).unwrap_or(std::cmp::Ordering::Equal))
                .expect("non-empty");
            let u_other = g.iter().filter(|&&j| j != js).map(|&j| hi[j]).fold(T::neg_infinity(), T::max);
            let exact = lo[js] >= u_other;
            let umax = g.iter().map(|&j| hi[j]).fold(T::neg_infinity(), T::max);
            sel.push((js, if exact { None } else { Some(umax) }));
        }
        Ok((sel, neg))
    }
}

impl<T: Scalar> Evaluate<T> for Reduce {
    fn forward(&self, inputs: &[&[T]], out: &mut [T]) -> Result<()> {
        let x = inputs[0];
        for (o, g) in out.iter_mut().zip(&self.groups) {
            *o = match self.kind {
                Kind::Sum | Kind::Mean => g.iter().map(|&j| x[j]).sum::<T>() * self.scale::<T>(g),
                Kind::Max => g.iter().map(|&j| x[j]).fold(T::neg_infinity(), T::max),
                Kind::Min => g.iter().map(|&j| x[j]).fold(T::infinity(), T::min),
            };
        }
        Ok(())
    }
}

impl<T: Scalar> IntervalRule<T> for Reduce {
    fn interval(&self, inputs: &[Interval<'_, T>], lower: &mut [T], upper: &mut [T]) -> Result<()> {
        let x = inputs[0];
        let fwd = |v: &[T], out: &mut [T]| self.forward(&[v], out);
        // Every reduction here is monotone in each input.
        fwd(x.lower, lower)?;
        fwd(x.upper, upper)
    }
}

impl<T: Scalar> LinearRelaxation<T> for Reduce {
    fn backward(&self, ctx: &BackwardCtx<'_, T>, a: LinearA<T>) -> Result<BackwardResult<T>> {
        let spec = a.spec();
        if self.is_linear() {
            let a = a.map(|m| {
                let mut out = Mat::<T>::zeros(spec, self.n_in);
                for (o, g) in self.groups.iter().enumerate() {
                    let s: T = self.scale(g);
                    let from = m.col_as_slice(o);
                    for &j in g {
                        for (d, &v) in out.col_as_slice_mut(j).iter_mut().zip(from) {
                            *d = v * s;
                        }
                    }
                }
                Ok(out)
            })?;
            return Ok(BackwardResult::single(a));
        }
        let (sel, neg) = self.selection(ctx)?;
        let mut bias = LinearBias::zeros(spec);
        let sign = if neg { -T::one() } else { T::one() };
        // For max = f(x): lower line x_{j*}, upper line x_{j*} (exact) or umax.
        // In terms of the original coefficients on min = −max(−x): coefficient c on
        // min is −c on max of −x, whose input is −x: the line's x-coefficient flips
        // back, the constant keeps the sign of −c.
        let side = |m: &Mat<T>, lower: bool, bias: &mut [T]| -> Mat<T> {
            let mut out = Mat::<T>::zeros(spec, self.n_in);
            for (o, &(js, umax)) in sel.iter().enumerate() {
                let from = m.col_as_slice(o);
                for r in 0..spec {
                    let c = from[r] * sign; // coefficient on max(±x)
                    if c == T::zero() {
                        continue;
                    }
                    // The line used: a lower line where (c > 0) == lower.
                    let use_lower = (c > T::zero()) == lower;
                    match (use_lower, umax) {
                        (true, _) | (false, None) => out[(r, js)] += c * sign,
                        (false, Some(u)) => bias[r] += c * u,
                    }
                }
            }
            out
        };
        let lower = a.lower.as_ref().map(|m| side(m, true, &mut bias.lower));
        let upper = a.upper.as_ref().map(|m| side(m, false, &mut bias.upper));
        Ok(BackwardResult { inputs: smallvec![Some(LinearA::dense(lower, upper))], bias })
    }

    fn needs_input_bounds(&self) -> &[usize] {
        if self.is_linear() { &[] } else { &[0] }
    }

    fn is_affine(&self) -> bool {
        self.is_linear()
    }

    /// The lines [`backward`](LinearRelaxation::backward) chose, at `z`: `x_{j*}`, or the
    /// constant upper line where the coefficient's sign takes it.
    fn relaxed_forward(
        &self,
        ctx: &BackwardCtx<'_, T>,
        a: MatRef<'_, T>,
        upper: bool,
        z: &[&[T]],
        out: &mut [T],
    ) -> Result<()> {
        if self.is_linear() {
            return Err(Error::Invalid("ReduceSum/ReduceMean are affine: evaluate them directly".into()));
        }
        let (sel, neg) = self.selection(ctx)?;
        let sign = if neg { -T::one() } else { T::one() };
        let n = sel.len();
        for r in 0..a.nrows() {
            let zr = &z[0][r * self.n_in..(r + 1) * self.n_in];
            for (o, &(js, umax)) in sel.iter().enumerate() {
                // As in `backward`: the lower line of max(±x) where (c > 0) != upper.
                let c = a[(r, o)] * sign;
                out[r * n + o] = match umax {
                    Some(u) if (c > T::zero()) == upper => sign * u,
                    _ => zr[js],
                };
            }
        }
        Ok(())
    }
}

impl<T: Scalar> Operator<T> for Reduce {
    fn op_type(&self) -> &str {
        self.op_type
    }
}

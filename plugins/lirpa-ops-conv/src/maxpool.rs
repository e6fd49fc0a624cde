//! `MaxPool` with any kernel, stride, dilation and padding (symmetric or not; overlapping
//! windows; `ceil_mode`). Padding cells never win the max.
//!
//! Relaxation of `y = max_{i ∈ window} x_i` on input bounds `[l, u]` (auto_LiRPA's
//! non-optimized rule): let `i*` be the cell with the largest lower bound.
//! - lower line: `y >= x_{i*}` (always valid: the max is at least any element);
//! - upper line: `y <= x_{i*}` if `l_{i*} >= max_{j≠i*} u_j` (then `y = x_{i*}` exactly),
//!   else the constant `y <= max_j u_j`.
//!
//! Overlapping windows need nothing special in backward mode: every output's lines are
//! valid, and coefficients of different outputs that read the same input add up.

use faer::{Mat, MatRef};
use lirpa_core::op::{BackwardCtx, Evaluate, Interval, IntervalRule, LinearRelaxation, NodeDef, Operator};
use lirpa_core::spatial::{Geom, spatial_input};
use lirpa_core::{BackwardResult, BuiltOp, Error, LinearA, LinearBias, Result, Scalar, Shape};
use smallvec::SmallVec;

#[derive(Debug)]
pub struct MaxPool {
    /// Input elements of each output element's window (inside the input only).
    windows: Vec<SmallVec<[u32; 9]>>,
    n_in: usize,
}

/// One output's relaxation.
struct Lines<T> {
    /// The input with the largest lower bound.
    best: usize,
    /// `Some(max u)` when the upper line is that constant, `None` when it is `x_best`.
    upper_const: Option<T>,
}

impl MaxPool {
    fn lines<T: Scalar>(&self, lower: &[T], upper: &[T]) -> Vec<Lines<T>> {
        self.windows
            .iter()
            .map(|win| {
                let mut best = win[0] as usize;
                for &i in win.iter().skip(1) {
                    if lower[i as usize] > lower[best] {
                        best = i as usize;
                    }
                }
                let others = win.iter().filter(|&&i| i as usize != best).map(|&i| upper[i as usize]);
                let max_other = others.fold(T::neg_infinity(), |a, b| a.max(b));
                let upper_const =
                    if lower[best] >= max_other { None } else { Some(max_other.max(upper[best])) };
                Lines { best, upper_const }
            })
            .collect()
    }

    /// One side: `pos_lower` says whether positive coefficients take the lower line.
    fn side<T: Scalar>(&self, m: &Mat<T>, lines: &[Lines<T>], pos_lower: bool, bias: &mut [T]) -> Mat<T> {
        let mut out = Mat::<T>::zeros(m.nrows(), self.n_in);
        let zero = T::zero();
        for (o, line) in lines.iter().enumerate() {
            let col = m.col_as_slice(o);
            let dst = out.col_as_slice_mut(line.best);
            for r in 0..col.len() {
                let a = col[r];
                // Which line this coefficient takes: the lower line for (pos, lower side)
                // and (neg, upper side).
                let takes_lower = (a >= zero) == pos_lower;
                match (takes_lower, line.upper_const) {
                    (true, _) | (false, None) => dst[r] += a,
                    (false, Some(c)) => bias[r] += a * c,
                }
            }
        }
        out
    }
}

impl<T: Scalar> Evaluate<T> for MaxPool {
    fn forward(&self, inputs: &[&[T]], out: &mut [T]) -> Result<()> {
        for (o, win) in out.iter_mut().zip(&self.windows) {
            *o = win.iter().map(|&i| inputs[0][i as usize]).fold(T::neg_infinity(), |a, b| a.max(b));
        }
        Ok(())
    }
}

impl<T: Scalar> IntervalRule<T> for MaxPool {
    fn interval(&self, inputs: &[Interval<'_, T>], lower: &mut [T], upper: &mut [T]) -> Result<()> {
        let x = inputs[0];
        for (k, win) in self.windows.iter().enumerate() {
            lower[k] = win.iter().map(|&i| x.lower[i as usize]).fold(T::neg_infinity(), |a, b| a.max(b));
            upper[k] = win.iter().map(|&i| x.upper[i as usize]).fold(T::neg_infinity(), |a, b| a.max(b));
        }
        Ok(())
    }
    fn interval_is_tight(&self) -> bool {
        true
    }
}

impl<T: Scalar> LinearRelaxation<T> for MaxPool {
    fn fp_rounding(&self) -> Option<lirpa_core::FpRounding> {
        // Backward sums, per input element, the coefficients of the outputs whose
        // window holds it.
        let mut count = vec![0usize; self.n_in];
        self.windows.iter().flatten().for_each(|&i| count[i as usize] += 1);
        let most = count.into_iter().max().unwrap_or(0);
        Some(lirpa_core::FpRounding {
            kind: lirpa_core::FpKind::Selection,
            terms: Some(most + lirpa_core::FpRounding::SLACK),
        })
    }
    fn backward(&self, ctx: &BackwardCtx<'_, T>, a: LinearA<T>) -> Result<BackwardResult<T>> {
        let b = ctx.bounds(0)?;
        let lines = self.lines(b.lower, b.upper);
        let mut bias = LinearBias::zeros(a.spec());
        let lower = a.lower.as_ref().map(|m| self.side(m, &lines, true, &mut bias.lower));
        let upper = a.upper.as_ref().map(|m| self.side(m, &lines, false, &mut bias.upper));
        Ok(BackwardResult { inputs: smallvec::smallvec![Some(LinearA::dense(lower, upper))], bias })
    }
    fn needs_input_bounds(&self) -> &[usize] {
        &[0]
    }
    /// The adjoint of `backward` (α-CROWN gradients): the line each coefficient chose,
    /// evaluated at `z`.
    fn relaxed_forward(
        &self,
        ctx: &BackwardCtx<'_, T>,
        a: MatRef<'_, T>,
        upper: bool,
        z: &[&[T]],
        out: &mut [T],
    ) -> Result<()> {
        let b = ctx.bounds(0)?;
        let lines = self.lines(b.lower, b.upper);
        let n = lines.len();
        for r in 0..a.nrows() {
            for (o, line) in lines.iter().enumerate() {
                let takes_lower = (a[(r, o)] >= T::zero()) != upper;
                out[r * n + o] = match (takes_lower, line.upper_const) {
                    (true, _) | (false, None) => z[0][r * self.n_in + line.best],
                    (false, Some(c)) => c,
                };
            }
        }
        Ok(())
    }
}

impl<T: Scalar> Operator<T> for MaxPool {
    fn op_type(&self) -> &str {
        "MaxPool"
    }
}

pub fn build_max_pool<T: Scalar>(node: &NodeDef<'_>) -> Result<BuiltOp<T>> {
    let x = node.input(0)?;
    let (c, hi, wi, dims) = spatial_input(&x.shape, "MaxPool")?;
    if node.attrs.int_or("storage_order", 0)? != 0 {
        return Err(Error::unimplemented("MaxPool with storage_order 1"));
    }
    let ks = node
        .attrs
        .ints("kernel_shape")?
        .ok_or_else(|| Error::Invalid("MaxPool without kernel_shape".into()))?;
    if ks.len() != dims || ks.iter().any(|&k| k < 1) {
        return Err(Error::Invalid(format!("kernel_shape {ks:?} is invalid for {dims}-D")));
    }
    let kernel = if dims == 1 { [1, ks[0] as usize] } else { [ks[0] as usize, ks[1] as usize] };
    let g = Geom::from_attrs(node, dims, hi, wi, kernel)?;
    let mut windows = Vec::with_capacity(c * g.ho * g.wo);
    for ch in 0..c {
        for y in 0..g.ho {
            for xx in 0..g.wo {
                let mut win = SmallVec::new();
                for ky in 0..g.kh {
                    let Some(iy) = g.in_h(y, ky) else { continue };
                    for kx in 0..g.kw {
                        if let Some(ix) = g.in_w(xx, kx) {
                            win.push(((ch * hi + iy) * wi + ix) as u32);
                        }
                    }
                }
                if win.is_empty() {
                    return Err(Error::Invalid("MaxPool has an output window made only of padding".into()));
                }
                windows.push(win);
            }
        }
    }
    let shape =
        if dims == 1 { Shape::from_slice(&[1, c, g.wo]) } else { Shape::from_slice(&[1, c, g.ho, g.wo]) };
    Ok(BuiltOp::new(MaxPool { windows, n_in: c * hi * wi }, &[0], shape))
}

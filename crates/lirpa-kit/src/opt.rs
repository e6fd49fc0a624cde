//! α-CROWN for the element-wise functions with [`crate::Func::tangents`] (in the
//! activation plugin: Sigmoid, Tanh, Atan, Erf, Exp, Log, Reciprocal, Sqrt, Softplus,
//! Pow, Sin, Cos, Gelu): the tangent points of the
//! relaxation are free parameters, as in auto_LiRPA's optimized `BoundSShaped` and its
//! optimizable convex/concave activations, and so are the slopes of the fixed-slope
//! relaxations.
//!
//! Parameters: one row per specification row and side of a pass, `2n` values for `n`
//! elements: the lower line's parameter of every element, then the upper line's. A
//! fixed line (a chord, a constant bound, a fixed-slope line) ignores its parameter.
//! A tangent line's point moves in the range the function's plan
//! ([`crate::Tangents::plan`]) proves valid for the current input interval:
//! `[l, u]` on a convex or concave piece (Exp, Log, Reciprocal, Softplus, Pow; Sqrt and
//! `x^p`, `0 < p < 1`, stay a millionth of `u` away from 0), and for the S-shaped
//! functions and Sin/Cos on a monotone piece the range of
//! the S-curve plans of the activation plugin (`[l, u]` on the convex side, `[min(l, d), d]`
//! across the inflection, reflected for the upper line). Where CROWN takes the chord's
//! slope with the tightest intercepts (Sin and Cos across an extremum, Gelu, odd
//! powers across 0), each line's slope is the parameter instead (in `[-1, 1]`,
//! `[-0.2, 1.2]`, `[0, max f']`), with the tightest intercepts for that slope
//! ([`crate::Tangents::slope_relax`]). [`OptimizableRelaxation::project`] clamps into
//! the range, and the line is computed in `f64` from the parameter clamped again in
//! `f64`, then verified by [`crate::line::secure`] and rounded by
//! [`crate::line::to_scalar`] exactly as the CROWN lines are (a moved line that
//! overflows `T` falls back to the CROWN line). Soundness therefore never depends on
//! the parameters: any value, even one outside the range, gives a verified line.
//!
//! Initialization: the CROWN points (slopes), rounded to `T`. A parameter equal to the
//! rounded CROWN value stands for the CROWN value itself, so iteration 0 reproduces
//! the CROWN lines bit for bit.
//!
//! Gradient: the tangent at `t` has value `f(t) + f'(t)·(x - t)` at `x`, whose
//! derivative in `t` is `f''(t)·(x - t)`; a line of slope `k` through its pivot `c`
//! (the point where its intercept is attained) moves at rate `x - c`. The verification
//! margin is treated as a constant. The input bounds move the fixed lines (a chord,
//! a fixed-slope line through an end; [`crate::FixedLine`]) and the range (a
//! kink, taken as flat); [`OptimizableRelaxation::bounds_grad`] gives the former, so
//! that the parameters of intermediate passes are optimized through the final bound.

use crate::elementwise::{Elementwise, check_bounds};
use crate::func::{FixedLine, Func, Pivot, TangentPlan, Tangents};
use crate::line::{Line, check_points, check_values, secure_values, to_scalar};
use lirpa_core::linear::{Lines, forward_rows_by_side, split_rows, split_rows_by_side, takes_lower_line};
use lirpa_core::op::{BackwardCtx, OptimizableRelaxation, SideParams};
use lirpa_core::recent::Recent;
use lirpa_core::reexport::faer::{Mat, MatRef, Par};
use lirpa_core::reexport::smallvec::SmallVec;
use lirpa_core::{BackwardResult, Error, LinearA, LinearBias, Result, Scalar};
use std::sync::Arc;

/// The `f64` part of [`Elem`] for every element of some input bounds.
#[derive(Debug)]
pub(crate) struct PlanCache {
    elems: Vec<(f64, f64, Line, Line, Option<TangentPlan>, Known)>,
}

/// The plans of recent input bounds (keyed by their bits): every optimized rule of
/// one pass, and `project` once per row, reads them, and both sides of α-CROWN may
/// run at once.
pub(crate) type Plans = Recent<Arc<PlanCache>>;

/// Plans of this many recent input bounds are kept per operator.
pub(crate) const PLAN_CACHE_ENTRIES: usize = 8;

/// The lines the optimized rules of recent sweeps chose, keyed by the bits of the
/// elements' intervals and of the parameters and the side ([`chosen_key`]): the
/// adjoint sweep of a pass reads the lines (and their gradients) its backward pass
/// chose instead of computing them again.
pub(crate) type ChosenCache = Recent<Arc<Vec<Chosen>>>;

/// At most this many bytes of chosen lines per operator (as the table cache it replaced:
/// 64 MB made ERAN sigmoid α-CROWN about 5% faster, at twice the memory per operator).
pub(crate) const CHOSEN_CACHE_BYTES: usize = 32 << 20;
/// At most this many entries per operator (a look-up scans them): enough for every
/// pass crossing the operator in one iteration of a deep network or a batch.
pub(crate) const CHOSEN_CACHE_ENTRIES: usize = 128;

/// The cache key of an operator's input bounds, a pass's parameters and the side.
fn chosen_key<T: Scalar>(es: &[Elem<T>], p: &[T], upper: bool) -> Vec<u64> {
    let bounds = es.iter().flat_map(|e| [e.l.to_bits(), e.u.to_bits()]);
    bounds.chain(p.iter().map(|x| x.as_f64().to_bits())).chain([upper as u64]).collect()
}

/// The line one (row, element) took: its side, the line in `T` (held exactly as
/// `f64`), and how it moves with its parameter, at rate `scale·(z - point)` (a NaN
/// `scale`: not recorded, computed when needed).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Chosen {
    lower: bool,
    k: f64,
    b: f64,
    scale: f64,
    point: f64,
}

/// The function's values at an element's fixed check points (`l`, `u`, the midpoint
/// and the CROWN contacts): every moved line of the element is
/// checked at these points, so they are evaluated once.
#[derive(Clone, Debug, Default)]
struct Known {
    values: SmallVec<[(f64, f64); 8]>,
}

/// One element: its interval (`l`, `u`: the bounds in `T`, as `f64`), CROWN lines and,
/// on a finite interval, its plan ([`Elementwise::elems`]).
pub struct Elem<T> {
    pub l: f64,
    pub u: f64,
    pub crown: Lines<T>,
    pub plan: Option<TangentPlan>,
    known: Known,
}

/// The pivot of the line of slope `k` of a slope-parameterized element (lower or
/// upper), as a point; `None` when there is none.
fn pivot_at<T>(tg: &dyn Tangents, e: &Elem<T>, k: f64, lower: bool) -> Option<f64> {
    let (_, fixed) = tg.slope_relax(e.l, e.u, k)?;
    Some(fixed[if lower { 0 } else { 1 }]?.pivot.point(e.l, e.u))
}

/// The tangent point a parameter `p` stands for, given `(crown point, lo, hi)`.
#[inline]
fn pick<T: Scalar>(p: T, (t0, lo, hi): (f64, f64, f64)) -> f64 {
    if p.is_nan() || p == T::from_f64(t0) { t0 } else { p.as_f64().max(lo).min(hi) }
}

impl<F: Func> Elementwise<F> {
    fn tangents_or_err(&self) -> Result<&dyn Tangents> {
        self.func
            .tangents()
            .ok_or_else(|| Error::Invalid(format!("{} has no optimizable relaxation", self.func.op_type())))
    }

    /// Run `f` on the plans of input bounds `lower`, `upper` (computed once per bounds;
    /// the plans of the last few bounds are kept: both sides of α-CROWN may run at once).
    fn with_plans<T: Scalar, R>(
        &self,
        tg: &dyn Tangents,
        lower: &[T],
        upper: &[T],
        f: impl FnOnce(&PlanCache) -> Result<R>,
    ) -> Result<R> {
        let lo64: Vec<f64> = lower.iter().map(|x| x.as_f64()).collect();
        let hi64: Vec<f64> = upper.iter().map(|x| x.as_f64()).collect();
        let key: Vec<u64> = lo64.iter().chain(&hi64).map(|x| x.to_bits()).collect();
        let found = self.plans.lock().expect("plan cache").get(&key);
        let plans = match found {
            Some(p) => p,
            None => {
                let op = self.func.op_type();
                let elems = lo64
                    .iter()
                    .zip(&hi64)
                    .map(|(&l, &u)| {
                        let (l, u) = check_bounds(op, l, u)?;
                        self.func.domain(l, u)?;
                        if l.is_finite() && u.is_finite() {
                            let plan = tg.plan(l, u);
                            let values = check_values(l, u, &plan.relax.contacts, |p| self.func.f(p));
                            let (lo, hi) = self.secure_known(l, u, plan.relax, &values)?;
                            let known = Known { values: values.into_iter().collect() };
                            Ok((l, u, lo, hi, Some(plan), known))
                        } else {
                            let (lo, hi) = self.relax_f64(l, u)?;
                            Ok((l, u, lo, hi, None, Known::default()))
                        }
                    })
                    .collect::<Result<Vec<_>>>()?;
                let bytes = std::mem::size_of_val(elems.as_slice());
                let p = Arc::new(PlanCache { elems });
                self.plans.lock().expect("plan cache").put(key, bytes, p.clone());
                p
            }
        };
        f(&plans)
    }

    /// The elements of input bounds `lower`, `upper` as the optimized rules see them:
    /// CROWN lines and tangent plans (public so that a plugin can test its
    /// [`Tangents`] with [`lines_at`](Self::lines_at)).
    pub fn elems<T: Scalar>(&self, tg: &dyn Tangents, lower: &[T], upper: &[T]) -> Result<Vec<Elem<T>>> {
        self.with_plans(tg, lower, upper, |c| {
            c.elems
                .iter()
                .map(|(l, u, lo, hi, plan, known)| {
                    let (l, u) = (*l, *u);
                    let crown = self.to_lines::<T>(l, u, *lo, *hi)?;
                    Ok(Elem { l, u, crown, plan: *plan, known: known.clone() })
                })
                .collect()
        })
    }

    /// The lines of element `e` for the lower and upper tangent parameters `pl`, `pu`
    /// (verified and rounded to `T` as every optimized line: sound for any parameter).
    pub fn lines_at<T: Scalar>(&self, tg: &dyn Tangents, e: &Elem<T>, pl: T, pu: T) -> Result<Lines<T>> {
        let (kl, bl) = self.line_at(tg, e, pl, true);
        let (ku, bu) = self.line_at(tg, e, pu, false);
        Ok([kl, bl, ku, bu])
    }

    /// The lower (`lower = true`) or upper line `(slope, intercept)` of element `e` for
    /// parameter `p`, verified and rounded to `T`: only the line a coefficient takes
    /// is computed. An unmoved parameter gives the CROWN line bit for bit.
    pub fn line_at<T: Scalar>(&self, tg: &dyn Tangents, e: &Elem<T>, p: T, lower: bool) -> (T, T) {
        let c = self.chosen_at(tg, e, p, lower);
        (T::from_f64(c.k), T::from_f64(c.b))
    }

    /// [`line_at`](Self::line_at) with the line's rate of change in its parameter
    /// when the computation gives it.
    fn chosen_at<T: Scalar>(&self, tg: &dyn Tangents, e: &Elem<T>, p: T, lower: bool) -> Chosen {
        let (k, b) = if lower { (e.crown[0], e.crown[1]) } else { (e.crown[2], e.crown[3]) };
        let crown = Chosen { lower, k: k.as_f64(), b: b.as_f64(), scale: f64::NAN, point: f64::NAN };
        let Some(plan) = &e.plan else { return crown };
        let Some(range) = (if lower { plan.lower } else { plan.upper }) else { return crown };
        let t = pick(p, range);
        if t == range.0 {
            return crown;
        }
        let r = &plan.relax;
        let mut own = [f64::NAN; 16];
        let mut fresh = None;
        let (line, scale, point) = if plan.slope {
            let Some((rk, fixed)) = tg.slope_relax(e.l, e.u, t) else { return crown };
            own = rk.contacts;
            // A line of slope `t` through its pivot `c` moves at rate `z - c`.
            let c = fixed[if lower { 0 } else { 1 }].map(|fx| fx.pivot.point(e.l, e.u));
            let line = if lower { rk.lower } else { rk.upper };
            (line, if c.is_some() { 1.0 } else { f64::NAN }, c.unwrap_or(f64::NAN))
        } else {
            let tangent = if lower { tg.lower_tangent(t) } else { tg.upper_tangent(t) };
            own[0] = t;
            fresh = Some((t, tangent.value));
            (tangent.line, tangent.curvature, t)
        };
        // Checked at the points of `check_values` for the relaxation's contacts and the
        // moved line's own (its tangent point, or the candidates of its slope), reusing
        // the element's known values.
        let (l, u) = (e.l, e.u);
        let values = check_points(l, u, r.contacts.iter().chain(&own).copied()).map(|q| {
            let y = match e.known.values.iter().find(|(x, _)| *x == q) {
                Some(&(_, y)) => y,
                None => fresh.filter(|&(x, _)| x == q).map_or_else(|| self.func.f(q), |(_, y)| y),
            };
            (q, y)
        });
        let secured = secure_values(line, lower, values, self.func.extra_margin(l, u));
        // A tangent far up a steep function (Exp near the top of `T`'s range) can
        // overflow `T` where the CROWN line does not: keep the CROWN line there.
        if !(secured.k.is_finite() && secured.b.is_finite()) {
            return crown;
        }
        match to_scalar::<T>(secured, lower, l, u) {
            Some((k, b)) => Chosen { lower, k: k.as_f64(), b: b.as_f64(), scale, point },
            None => crown,
        }
    }

    /// The lines of a sweep's coefficients `m` (one side, `rows × n`), recorded for
    /// the adjoint sweep; blocks of rows in parallel under `par`.
    fn choose<T: Scalar>(
        &self,
        tg: &dyn Tangents,
        es: &[Elem<T>],
        p: &[T],
        m: MatRef<'_, T>,
        upper: bool,
        par: Par,
    ) -> Vec<Chosen> {
        let (rows, n) = (m.nrows(), es.len());
        let mut lines =
            vec![Chosen { lower: true, k: 0.0, b: 0.0, scale: f64::NAN, point: f64::NAN }; rows * n];
        // A block of `ROWS` rows, column by column (`m` is column-major).
        const ROWS: usize = 16;
        let block = |(bi, out): (usize, &mut [Chosen])| {
            let r0 = bi * ROWS;
            let nr = out.len() / n.max(1);
            for j in 0..n {
                for i in 0..nr {
                    let r = r0 + i;
                    let lower = takes_lower_line(m[(r, j)], upper);
                    let k = if lower { j } else { n + j };
                    out[i * n + j] = self.chosen_at(tg, &es[j], p[r * 2 * n + k], lower);
                }
            }
        };
        let chunk = (ROWS * n).max(1);
        if par.degree() > 1 && rows > ROWS {
            use rayon::prelude::*;
            lines.par_chunks_mut(chunk).enumerate().for_each(block);
        } else {
            lines.chunks_mut(chunk).enumerate().for_each(block);
        }
        lines
    }

    /// Check that `p` holds the parameters of `rows` rows of `n` elements.
    fn check_params<T>(&self, p: &[T], rows: usize, n: usize) -> Result<()> {
        if p.len() < rows * 2 * n {
            return Err(Error::Invalid(format!(
                "{}: {} relaxation parameters for {rows} rows of {n} elements",
                self.func.op_type(),
                p.len()
            )));
        }
        Ok(())
    }
}

impl<T: Scalar, F: Func> OptimizableRelaxation<T> for Elementwise<F> {
    fn init_params(&self, ctx: &BackwardCtx<'_, T>) -> Result<Vec<T>> {
        let tg = self.tangents_or_err()?;
        let b = ctx.bounds(0)?;
        let es = self.elems(tg, b.lower, b.upper)?;
        let n = es.len();
        let mut row = vec![T::zero(); 2 * n];
        for (j, e) in es.iter().enumerate() {
            if let Some(plan) = &e.plan {
                if let Some((t0, _, _)) = plan.lower {
                    row[j] = T::from_f64(t0);
                }
                if let Some((t0, _, _)) = plan.upper {
                    row[n + j] = T::from_f64(t0);
                }
            }
        }
        Ok(row)
    }

    fn project(&self, ctx: &BackwardCtx<'_, T>, row: &mut [T]) {
        // Bounds that cannot be read or relaxed leave the row as it is: the backward
        // pass reports the error, and any parameter value gives a verified line.
        let Some(tg) = self.func.tangents() else { return };
        let Ok(b) = ctx.bounds(0) else { return };
        let clamp = |p: &mut T, (t0, lo, hi): (f64, f64, f64)| {
            // Rounding to nearest keeps the rounded CROWN point inside the range.
            *p = if p.is_nan() { T::from_f64(t0) } else { p.max(T::from_f64(lo)).min(T::from_f64(hi)) };
        };
        let _ = self.with_plans(tg, b.lower, b.upper, |c| {
            let n = c.elems.len();
            if row.len() < 2 * n {
                return Ok(());
            }
            for (j, (.., plan, _)) in c.elems.iter().enumerate() {
                let Some(plan) = plan else { continue };
                if let Some(x) = plan.lower {
                    clamp(&mut row[j], x);
                }
                if let Some(x) = plan.upper {
                    clamp(&mut row[n + j], x);
                }
            }
            Ok(())
        });
    }

    fn backward_with(
        &self,
        ctx: &BackwardCtx<'_, T>,
        a: LinearA<T>,
        params: SideParams<'_, T>,
    ) -> Result<BackwardResult<T>> {
        let tg = self.tangents_or_err()?;
        let b = ctx.bounds(0)?;
        let es = self.elems(tg, b.lower, b.upper)?;
        let n = es.len();
        let a = a.into_dense();
        let mut bias = LinearBias::zeros(a.spec());
        let side = |m: Option<Mat<T>>, p: Option<&[T]>, upper: bool, bias: &mut Vec<T>| -> Result<_> {
            let Some(m) = m else { return Ok(None) };
            Ok(Some(match p {
                Some(p) => {
                    self.check_params(p, m.nrows(), n)?;
                    let p = &p[..m.nrows() * 2 * n];
                    let lines = self.choose(tg, &es, p, m.as_ref(), upper, ctx.par);
                    let out = split_rows_by_side(m, upper, bias, |r, j, lower| {
                        let c = lines[r * n + j];
                        debug_assert_eq!(c.lower, lower, "the side follows the same coefficient");
                        (T::from_f64(c.k), T::from_f64(c.b))
                    });
                    let bytes = std::mem::size_of_val(lines.as_slice());
                    self.chosen.lock().expect("chosen lines").put(
                        chosen_key(&es, p, upper),
                        bytes,
                        Arc::new(lines),
                    );
                    out
                }
                None => split_rows(m, upper, bias, |_, j| es[j].crown),
            }))
        };
        let lower = side(a.lower, params.lower, false, &mut bias.lower)?;
        let upper = side(a.upper, params.upper, true, &mut bias.upper)?;
        Ok(BackwardResult {
            inputs: lirpa_core::reexport::smallvec::smallvec![Some(LinearA::dense(lower, upper))],
            bias,
        })
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
        let tg = self.tangents_or_err()?;
        let b = ctx.bounds(0)?;
        let es = self.elems(tg, b.lower, b.upper)?;
        let n = es.len();
        self.check_params(params, a.nrows(), n)?;
        let params = &params[..a.nrows() * 2 * n];
        let recorded = self.chosen.lock().expect("chosen lines").get(&chosen_key(&es, params, upper));
        let recorded = recorded.as_deref();
        forward_rows_by_side(a, upper, z[0], out, |r, j, lower| match recorded.map(|l| l[r * n + j]) {
            Some(c) if c.lower == lower => (T::from_f64(c.k), T::from_f64(c.b)),
            _ => {
                let k = if lower { j } else { n + j };
                self.line_at(tg, &es[j], params[r * 2 * n + k], lower)
            }
        });
        Ok(())
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
        // The bound contains `a[r, j] · line(z[r, j])` with the line the coefficient
        // chose; a tangent at `t` moves at rate `f''(t)·(z - t)`.
        let tg = self.tangents_or_err()?;
        let b = ctx.bounds(0)?;
        let es = self.elems(tg, b.lower, b.upper)?;
        let n = es.len();
        self.check_params(params, a.nrows(), n)?;
        if grad.len() < params.len() {
            return Err(Error::Invalid(format!(
                "{}: gradient shorter than its parameters",
                self.func.op_type()
            )));
        }
        let params = &params[..a.nrows() * 2 * n];
        let recorded = self.chosen.lock().expect("chosen lines").get(&chosen_key(&es, params, upper));
        let recorded = recorded.as_deref();
        for r in 0..a.nrows() {
            let base = r * 2 * n;
            grad[base..base + 2 * n].iter_mut().for_each(|g| *g = T::zero());
            for (j, e) in es.iter().enumerate() {
                let Some(plan) = &e.plan else { continue };
                let x = a[(r, j)];
                if x == T::zero() {
                    continue;
                }
                let takes_lower = takes_lower_line(x, upper);
                let (k, range) = if takes_lower { (j, plan.lower) } else { (n + j, plan.upper) };
                let Some(range) = range else { continue };
                // A parameter outside the (rounded) range is clamped: the bound does not
                // move with it.
                let p = params[base + k];
                if p.is_nan() || p < T::from_f64(range.1) || p > T::from_f64(range.2) {
                    continue;
                }
                let t = pick(p, range);
                let zj = z[0][r * n + j].as_f64();
                let rate = match recorded.map(|l| l[r * n + j]) {
                    Some(c) if c.lower == takes_lower && !c.scale.is_nan() => c.scale * (zj - c.point),
                    _ if plan.slope => {
                        // A line of slope `t` through its pivot `c` moves at rate `z - c`.
                        match pivot_at(tg, e, t, takes_lower) {
                            Some(c) => zj - c,
                            None => continue,
                        }
                    }
                    _ => tg.d2f(t) * (zj - t),
                };
                grad[base + k] = T::from_f64(x.as_f64() * rate);
            }
        }
        Ok(())
    }

    // Negated comparison on purpose: a NaN width takes the branch of a failed test.
    #[allow(clippy::neg_cmp_op_on_partial_ord)]
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
        // Only the fixed lines move with the input bounds (a tangent at a given point
        // does not; the clamping into the range is a kink, taken as flat): a line
        // `f(c) + k·(z - c)` through the pivot `c` moves at rate `∂k/∂l·(z - c)`, plus
        // `f'(l) - k` when `c = l` (see [`FixedLine`]); the chord slope
        // `k = (f(u) - f(l))/(u - l)` has `∂k/∂l = (k - f'(l))/(u - l)` and
        // `∂k/∂u = (f'(u) - k)/(u - l)`. Intervals too narrow for the difference
        // quotient (where the chord's slope is the midpoint derivative) are left out.
        let tg = self.tangents_or_err()?;
        let b = ctx.bounds(0)?;
        let es = self.elems(tg, b.lower, b.upper)?;
        let n = es.len();
        let f = |x: f64| self.func.f(x);
        let (gl, gu) = (&mut grad_lower[0], &mut grad_upper[0]);
        for (j, e) in es.iter().enumerate() {
            let Some(plan) = &e.plan else { continue };
            let (l, u) = (e.l, e.u);
            let w = u - l;
            if !(w > 1e-7 * l.abs().max(u.abs()).max(1.0)) || plan.fixed == [None, None] {
                continue;
            }
            // Per side: (∂y/∂l, ∂y/∂u) as `(a + b·z)` pairs, from the fixed line.
            let k_chord = (f(u) - f(l)) / w;
            let (dfl, dfu) = (tg.df(l), tg.df(u));
            let rates = |fx: Option<FixedLine>, line_k: f64| -> Option<[f64; 4]> {
                let fx = fx?;
                let k = if fx.chord { k_chord } else { line_k };
                let (dkl, dku) = if fx.chord { ((k - dfl) / w, (dfu - k) / w) } else { (0.0, 0.0) };
                let c = fx.pivot.point(l, u);
                let el = if fx.pivot == Pivot::L { dfl - k } else { 0.0 };
                let eu = if fx.pivot == Pivot::U { dfu - k } else { 0.0 };
                // ∂y/∂l = dkl·z - dkl·c + el (a zero dkl leaves c out: it may be NaN).
                let cl = if dkl == 0.0 { 0.0 } else { dkl * c };
                let cu = if dku == 0.0 { 0.0 } else { dku * c };
                Some([el - cl, dkl, eu - cu, dku])
            };
            let lo_rates = if plan.lower.is_none() { rates(plan.fixed[0], plan.relax.lower.k) } else { None };
            let hi_rates = if plan.upper.is_none() { rates(plan.fixed[1], plan.relax.upper.k) } else { None };
            if lo_rates.is_none() && hi_rates.is_none() && !plan.slope {
                continue;
            }
            // A slope parameter fixes the slope; the line moves with the bounds through
            // its pivot when that is an end.
            let slope_rates = |r: usize, lower: bool| -> Option<[f64; 4]> {
                let (idx, range) = if lower { (j, plan.lower) } else { (n + j, plan.upper) };
                let k = pick(*params.get(r * 2 * n + idx)?, range?);
                let (_, fixed) = tg.slope_relax(l, u, k)?;
                rates(fixed[if lower { 0 } else { 1 }], k)
            };
            let (mut sl, mut su) = (0.0f64, 0.0f64);
            for r in 0..a.nrows() {
                let x = a[(r, j)];
                if weight[r] == T::zero() || x == T::zero() {
                    continue;
                }
                let lower = takes_lower_line(x, upper);
                let rr = if plan.slope {
                    slope_rates(r, lower)
                } else if lower {
                    lo_rates
                } else {
                    hi_rates
                };
                let Some([al, bl, au, bu]) = rr else {
                    continue;
                };
                let zj = z[0][r * n + j].as_f64();
                let wx = weight[r].as_f64() * x.as_f64();
                sl += wx * (al + bl * zj);
                su += wx * (au + bu * zj);
            }
            gl[j] += T::from_f64(sl);
            gu[j] += T::from_f64(su);
        }
        Ok(())
    }
}

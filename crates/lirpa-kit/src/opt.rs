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
use crate::line::{Line, Relax, check_values};
use lirpa_core::linear::{Lines, forward_rows, split_rows, takes_lower_line};
use lirpa_core::op::{BackwardCtx, OptimizableRelaxation, SideParams};
use lirpa_core::reexport::faer::{Mat, MatRef};
use lirpa_core::reexport::smallvec::SmallVec;
use lirpa_core::{BackwardResult, Error, LinearA, LinearBias, Result, Scalar};

/// The `f64` part of [`Elem`] for every element of some input bounds.
#[derive(Debug)]
pub(crate) struct PlanCache {
    lower: Vec<f64>,
    upper: Vec<f64>,
    elems: Vec<(f64, f64, Line, Line, Option<TangentPlan>, Known)>,
}

/// Tables of lines (`[lower k, b, upper k, b]` per row and element, in `f64`, which
/// holds any `T` exactly) of recent calls, newest first, keyed by the bits of the
/// elements' intervals and of the parameters. Bounded in bytes.
#[derive(Debug, Default)]
pub(crate) struct TableCache {
    entries: std::collections::VecDeque<TableEntry>,
}

/// Interval bits, parameter bits, lines.
type TableEntry = (Vec<u64>, Vec<u64>, Vec<[f64; 4]>);

/// At most this many bytes of tables per operator.
const TABLE_CACHE_BYTES: usize = 32 << 20;

impl TableCache {
    fn bytes(e: &TableEntry) -> usize {
        8 * (e.0.len() + e.1.len()) + 32 * e.2.len()
    }

    fn get(&self, bounds: &[u64], params: &[u64]) -> Option<&[[f64; 4]]> {
        self.entries.iter().find(|e| e.0 == bounds && e.1 == params).map(|e| e.2.as_slice())
    }

    fn put(&mut self, entry: TableEntry) {
        if Self::bytes(&entry) > TABLE_CACHE_BYTES / 4 {
            return;
        }
        self.entries.push_front(entry);
        let mut total = 0;
        let keep = self.entries.iter().take_while(|e| {
            total += Self::bytes(e);
            total <= TABLE_CACHE_BYTES
        });
        let keep = keep.count();
        self.entries.truncate(keep.max(1));
    }
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
    Some(match fixed[if lower { 0 } else { 1 }]?.pivot {
        Pivot::L => e.l,
        Pivot::U => e.u,
        Pivot::Inner(c) => c,
    })
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

    /// Run `f` on the plans of input bounds `lower`, `upper` (computed once per bounds).
    fn with_plans<T: Scalar, R>(
        &self,
        tg: &dyn Tangents,
        lower: &[T],
        upper: &[T],
        f: impl FnOnce(&PlanCache) -> Result<R>,
    ) -> Result<R> {
        let lo64: Vec<f64> = lower.iter().map(|x| x.as_f64()).collect();
        let hi64: Vec<f64> = upper.iter().map(|x| x.as_f64()).collect();
        let mut cache = self.plans.lock().expect("plan cache");
        if !cache.as_ref().is_some_and(|c| c.lower == lo64 && c.upper == hi64) {
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
            *cache = Some(PlanCache { lower: lo64, upper: hi64, elems });
        }
        f(cache.as_ref().expect("filled above"))
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
        let Some(plan) = &e.plan else { return Ok(e.crown) };
        let tl = plan.lower.map(|x| pick(pl, x));
        let tu = plan.upper.map(|x| pick(pu, x));
        if tl == plan.lower.map(|x| x.0) && tu == plan.upper.map(|x| x.0) {
            return Ok(e.crown);
        }
        let r = &plan.relax;
        // An unmoved line is the CROWN line; a moved tangent is checked at its new
        // contact point as well as at the relaxation's.
        let moved = |t: Option<f64>, t0: Option<(f64, f64, f64)>| t.filter(|&t| Some(t) != t0.map(|x| x.0));
        let (ml, mu) = (moved(tl, plan.lower), moved(tu, plan.upper));
        let mut pts: Vec<f64> = Vec::new();
        let (lo, hi) = if plan.slope {
            // Moved slopes: the lines of those slopes, checked at their candidates.
            let mut side = |k: Option<f64>, upper: bool, crown: crate::line::Line| match k
                .and_then(|k| tg.slope_relax(e.l, e.u, k))
            {
                Some((rk, _)) => {
                    pts.extend(rk.contacts.iter().filter(|c| !c.is_nan()));
                    if upper { rk.upper } else { rk.lower }
                }
                None => crown,
            };
            (side(ml, false, r.lower), side(mu, true, r.upper))
        } else {
            pts.extend(ml.into_iter().chain(mu));
            (ml.map_or(r.lower, |t| tg.lower_tangent(t)), mu.map_or(r.upper, |t| tg.upper_tangent(t)))
        };
        pts.extend(r.contacts.iter().filter(|c| !c.is_nan()));
        let relax = Relax::new(lo, hi).with_contacts(&pts);
        // Checked at the same points as `secure_f64`, reusing the element's known values.
        let (l, u) = (e.l, e.u);
        let values = check_values(l, u, &relax.contacts, |p| {
            e.known.values.iter().find(|(q, _)| *q == p).map_or_else(|| self.func.f(p), |(_, y)| *y)
        });
        // A tangent far up a steep function (Exp near the top of `T`'s range) can
        // overflow `T` where the CROWN line does not: keep the CROWN lines there.
        match self.secure_known(l, u, relax, &values).and_then(|(lo, hi)| self.to_lines::<T>(l, u, lo, hi)) {
            Ok(lines) => Ok(lines),
            _ => Ok(e.crown),
        }
    }

    /// The lines of every (row, element), row-major, for parameters `p` (`rows × 2n`).
    fn table<T: Scalar>(
        &self,
        tg: &dyn Tangents,
        es: &[Elem<T>],
        p: &[T],
        rows: usize,
    ) -> Result<Vec<Lines<T>>> {
        let n = es.len();
        if p.len() < rows * 2 * n {
            return Err(Error::Invalid(format!(
                "{}: {} relaxation parameters for {rows} rows of {n} elements",
                self.func.op_type(),
                p.len()
            )));
        }
        let bounds: Vec<u64> = es.iter().flat_map(|e| [e.l.to_bits(), e.u.to_bits()]).collect();
        let key: Vec<u64> = p[..rows * 2 * n].iter().map(|x| x.as_f64().to_bits()).collect();
        let to_t = |v: &[[f64; 4]]| v.iter().map(|l| l.map(T::from_f64)).collect::<Vec<Lines<T>>>();
        if let Some(hit) = self.tables.lock().expect("table cache").get(&bounds, &key) {
            return Ok(to_t(hit));
        }
        let mut t = Vec::with_capacity(rows * n);
        for r in 0..rows {
            let row = &p[r * 2 * n..(r + 1) * 2 * n];
            for (j, e) in es.iter().enumerate() {
                t.push(self.lines_at(tg, e, row[j], row[n + j])?);
            }
        }
        let stored = t.iter().map(|l| l.map(|v| v.as_f64())).collect();
        self.tables.lock().expect("table cache").put((bounds, key, stored));
        Ok(t)
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
                    let t = self.table(tg, &es, p, m.nrows())?;
                    split_rows(m, upper, bias, |r, j| t[r * n + j])
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
        let t = self.table(tg, &es, params, a.nrows())?;
        forward_rows(a, upper, z[0], out, |r, j| t[r * n + j]);
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
        for r in 0..a.nrows() {
            let base = r * 2 * n;
            grad[base..base + 2 * n].iter_mut().for_each(|g| *g = T::zero());
            for (j, e) in es.iter().enumerate() {
                let Some(plan) = &e.plan else { continue };
                let x = a[(r, j)];
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
                let rate = if plan.slope {
                    // A line of slope `t` through its pivot `c` moves at rate `z - c`.
                    match pivot_at(tg, e, t, takes_lower) {
                        Some(c) => zj - c,
                        None => continue,
                    }
                } else {
                    tg.d2f(t) * (zj - t)
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
                let c = match fx.pivot {
                    Pivot::L => l,
                    Pivot::U => u,
                    Pivot::Inner(c) => c,
                };
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

//! The S-shaped relaxation (auto_LiRPA 0.7.1's `BoundSShaped`, vanilla CROWN).
//!
//! `g` is increasing, convex on `x <= 0`, concave on `x >= 0`, and point-symmetric about
//! `(0, c)`: `g(-x) = 2c - g(x)` (sigmoid with `c = 1/2`, tanh, atan, erf, and sin on
//! `[-π/2, π/2]`). Lower line on `[l, u]`:
//! - `u <= 0` (convex): the tangent at the midpoint `m`;
//! - `l >= 0` (concave): the chord;
//! - `l < 0 < u`: the chord when its slope is below `g'(l)` (then it stays below `g`),
//!   else the tangent at `d <= 0`, the tangent point closest to 0 whose tangent stays
//!   below `g` up to `ū`, where `ū` is `u` rounded up to the next multiple of 0.01 (the
//!   grid of auto_LiRPA's precomputed table, so that the lines agree with it); and when
//!   `d >= m`, the tangent at `m` instead (auto_LiRPA's "smoothness enhancement").
//!
//! The upper line is the lower line of the reflected interval `[-u, -l]`, reflected.
//!
//! Validity of the tangent at `d`: on `x <= 0` it is a tangent of a convex function, so
//! below `g`; on `[0, ū]`, `g - line` is concave, `>= 0` at 0 and, by the bisection's
//! invariant, at `ū`, so `>= 0` between. The tangent point is found by bisection in `f64`
//! (no float table), keeping the end that passed the check; [`crate::line::secure`]
//! then re-checks the line at the interval ends and the contact point and adds a margin.

use crate::line::{Line, Relax, chord_slope, tangent};

/// Tangent points already found for one function, by grid index of `ū`: the bisection
/// depends only on the function and the grid point, so its result can be reused by
/// every later call (an exact memo, not a table of unverified values).
pub type TangentMemo = std::sync::Mutex<std::collections::HashMap<i64, Option<f64>>>;

pub struct SCurve<'a> {
    /// The memo of this function's tangent points, if it has one.
    pub memo: Option<&'a TangentMemo>,
    pub g: &'a dyn Fn(f64) -> f64,
    pub dg: &'a dyn Fn(f64) -> f64,
    /// `g(0)`.
    pub center: f64,
    /// The leftmost tangent point worth trying (`-π/2` for sin, `-inf` otherwise).
    pub d_min: f64,
}

/// auto_LiRPA's table step.
const STEP: f64 = 0.01;

impl SCurve<'_> {
    /// The largest `d <= 0` (to bisection precision) whose tangent stays below `g` at
    /// `ub >= 0`; `None` if no candidate passed.
    pub fn tangent_point(&self, ub: f64) -> Option<f64> {
        let Some(memo) = self.memo else { return self.bisect_tangent_point(ub) };
        let key = (ub / STEP).round() as i64;
        if let Some(&d) = memo.lock().expect("tangent memo").get(&key) {
            return d;
        }
        let d = self.bisect_tangent_point(ub);
        memo.lock().expect("tangent memo").insert(key, d);
        d
    }

    fn bisect_tangent_point(&self, ub: f64) -> Option<f64> {
        let (g, dg) = (self.g, self.dg);
        let gu = g(ub);
        let ok = |d: f64| {
            let v = g(d) + dg(d) * (ub - d);
            v <= gu
        };
        let mut lo = (-1.0f64).max(self.d_min);
        while !ok(lo) {
            if lo <= self.d_min || !lo.is_finite() {
                return None;
            }
            lo = (lo * 2.0).max(self.d_min);
        }
        let mut hi = 0.0f64;
        for _ in 0..80 {
            let m = 0.5 * (lo + hi);
            if m <= lo || m >= hi {
                break;
            }
            if ok(m) {
                lo = m;
            } else {
                hi = m;
            }
        }
        Some(lo)
    }

    /// The lower line on `[l, u]` and its contact point (`NaN` for a chord).
    pub fn lower(&self, l: f64, u: f64) -> (Line, f64) {
        let (g, dg) = (self.g, self.dg);
        let m = 0.5 * l + 0.5 * u;
        if u <= 0.0 {
            return (tangent(g, dg, m), m);
        }
        if l >= 0.0 {
            return (Line::through(chord_slope(g, dg, l, u), l, g(l)), f64::NAN);
        }
        let ub = ((u / STEP).floor().max(0.0) + 1.0) * STEP;
        let Some(d) = self.tangent_point(ub) else {
            // No tangent found (cannot happen for the functions here): the constant
            // minimum of an increasing function.
            return (Line::constant(g(l)), f64::NAN);
        };
        if d >= m {
            return (tangent(g, dg, m), m);
        }
        let k = chord_slope(g, dg, l, u);
        if k < dg(l) { (Line::through(k, l, g(l)), f64::NAN) } else { (tangent(g, dg, d), d) }
    }

    /// The upper line, by the point symmetry about `(0, c)`.
    pub fn upper(&self, l: f64, u: f64) -> (Line, f64) {
        let (line, t) = self.lower(-u, -l);
        (Line { k: line.k, b: 2.0 * self.center - line.b }, -t)
    }

    pub fn relax(&self, l: f64, u: f64) -> Relax {
        let (lo, tl) = self.lower(l, u);
        let (hi, tu) = self.upper(l, u);
        Relax::new(lo, hi).with_contacts(&[tl, tu])
    }
}

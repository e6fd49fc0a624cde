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
//! (no float table), keeping the end that passed the check; [`lirpa_kit::line::secure`]
//! then re-checks the line at the interval ends and the contact point and adds a margin.

use lirpa_kit::Tangent;
use lirpa_kit::line::{Line, Relax, chord_slope, tangent, tangent_and_value};

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
    /// `[g(x), g(-x), g'(x), g''(x)]` in one evaluation, the first three bit for bit
    /// equal to the separate calls (sigmoid: one `exp` gives all four); `None`: the
    /// separate calls.
    pub fused: Option<&'a dyn Fn(f64) -> [f64; 4]>,
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
        let (line, t, _) = self.lower_plan(l, u);
        (line, t)
    }

    /// [`lower`](Self::lower) and, when that line is a tangent, the range `[lo, hi]` of
    /// tangent points whose tangents are valid lower lines on `[l, u]` (α-CROWN's
    /// parameter range; it contains the contact point):
    /// - `u <= 0`: `[l, u]` (every tangent of the convex piece is below `g` there);
    /// - `l < 0 < u`: `[min(l, d), d]`, `d` the bisection's tangent point for `ū`: a
    ///   tangent at `t <= d` meets `g` again at or beyond `ū >= u`, so `g - line` is
    ///   `>= 0` on `[l, 0]` (convexity) and at `0` and `ū`, hence on `[0, ū]`
    ///   (concavity). (auto_LiRPA sets no lower limit; tangents left of `l` are valid
    ///   but flatter, and allowing them made the reference bounds looser here.)
    ///
    /// The chord cases have no range (`None`): the line is fixed.
    pub fn lower_plan(&self, l: f64, u: f64) -> (Line, f64, Option<(f64, f64)>) {
        let (g, dg) = (self.g, self.dg);
        let m = 0.5 * l + 0.5 * u;
        if u <= 0.0 {
            return (tangent(g, dg, m), m, Some((l, u)));
        }
        if l >= 0.0 {
            return (Line::through(chord_slope(g, dg, l, u), l, g(l)), f64::NAN, None);
        }
        let ub = ((u / STEP).floor().max(0.0) + 1.0) * STEP;
        let Some(d) = self.tangent_point(ub) else {
            // No tangent found (cannot happen for the functions here): the constant
            // minimum of an increasing function.
            return (Line::constant(g(l)), f64::NAN, None);
        };
        if d >= m {
            return (tangent(g, dg, m), m, Some((l, d)));
        }
        let k = chord_slope(g, dg, l, u);
        if k < dg(l) {
            (Line::through(k, l, g(l)), f64::NAN, None)
        } else {
            (tangent(g, dg, d), d, Some((l.min(d), d)))
        }
    }

    /// The upper line, by the point symmetry about `(0, c)`.
    pub fn upper(&self, l: f64, u: f64) -> (Line, f64) {
        let (line, t, _) = self.upper_plan(l, u);
        (line, t)
    }

    /// [`upper`](Self::upper) with its range of tangent points (the reflection of
    /// [`lower_plan`](Self::lower_plan) on `[-u, -l]`).
    pub fn upper_plan(&self, l: f64, u: f64) -> (Line, f64, Option<(f64, f64)>) {
        let (line, t, range) = self.lower_plan(-u, -l);
        (self.reflect(line), -t, range.map(|(lo, hi)| (-hi, -lo)))
    }

    /// The reflection of a line about `(0, c)`.
    fn reflect(&self, line: Line) -> Line {
        Line { k: line.k, b: 2.0 * self.center - line.b }
    }

    /// The tangent at `t` used as an upper line: computed as the reflection of the
    /// tangent at `-t`, exactly as [`upper`](Self::upper) computes it (so that the CROWN
    /// tangent point gives the CROWN line bit for bit).
    /// (A [`Tangent`]; its curvature is NaN without [`fused`](Self::fused).)
    pub fn upper_tangent(&self, t: f64) -> Tangent {
        let (line, value, curvature) = match self.fused {
            Some(fused) => {
                // `g''` is odd about the centre: `g''(t) = -g''(-t)`.
                let [g_neg, g_t, dg_neg, d2g_neg] = fused(-t);
                (Line::through(dg_neg, -t, g_neg), g_t, -d2g_neg)
            }
            None => (tangent(self.g, self.dg, -t), (self.g)(t), f64::NAN),
        };
        Tangent { line: self.reflect(line), value, curvature }
    }

    /// The tangent at `t` used as a lower line (a [`Tangent`]; its curvature is NaN
    /// without [`fused`](Self::fused)).
    pub fn lower_tangent(&self, t: f64) -> Tangent {
        match self.fused {
            Some(fused) => {
                let [g_t, _, dg_t, d2g_t] = fused(t);
                Tangent { line: Line::through(dg_t, t, g_t), value: g_t, curvature: d2g_t }
            }
            None => {
                let (line, value) = tangent_and_value(self.g, self.dg, t);
                Tangent { line, value, curvature: f64::NAN }
            }
        }
    }

    pub fn relax(&self, l: f64, u: f64) -> Relax {
        let (lo, tl) = self.lower(l, u);
        let (hi, tu) = self.upper(l, u);
        Relax::new(lo, hi).with_contacts(&[tl, tu])
    }
}

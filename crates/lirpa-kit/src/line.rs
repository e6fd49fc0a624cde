//! Lines in `f64`, the verification step that makes them sound in floating point, and
//! their conversion to the bound type `T`.
//!
//! Every relaxation is computed in `f64` from the input bounds (which `T` holds
//! exactly). Mathematically each line is valid by a convexity argument (a tangent of a
//! convex piece, a chord of a concave piece, a tangent point found by bisection and
//! checked at the contact point, …). The remaining floating-point error is removed by
//! [`secure`]: the line is evaluated at the interval ends, the midpoint and its contact
//! points, any violation found there is subtracted from (added to) the intercept, and a
//! relative margin of `1e-12` of the magnitudes involved is added on top, which exceeds
//! the rounding error of evaluating `f` and the line by orders of magnitude while staying
//! far below the parity tolerance. [`to_scalar`] then rounds the slope to `T` and widens
//! the intercept by the slope's rounding error times `max(|l|, |u|)`, rounding the
//! intercept outwards.

use lirpa_core::Scalar;
use lirpa_core::reexport::smallvec::SmallVec;

/// `y = k·x + b`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Line {
    pub k: f64,
    pub b: f64,
}

impl Line {
    pub fn constant(c: f64) -> Line {
        Line { k: 0.0, b: c }
    }
    /// The line of slope `k` through `(x0, y0)`.
    pub fn through(k: f64, x0: f64, y0: f64) -> Line {
        Line { k, b: y0 - k * x0 }
    }
    #[inline]
    pub fn at(&self, x: f64) -> f64 {
        self.k * x + self.b
    }
    /// The same line after the substitution `x = t - shift` (a line in `t` becomes a
    /// line in `x = t - shift`, i.e. `k·(x + shift) + b`).
    pub fn shifted(self, shift: f64) -> Line {
        Line { k: self.k, b: self.b + self.k * shift }
    }
}

impl std::ops::Neg for Line {
    type Output = Line;
    fn neg(self) -> Line {
        Line { k: -self.k, b: -self.b }
    }
}

/// A lower and an upper line valid on an interval, with the points where they touch
/// the function (checked by [`secure`]; `NaN` when none).
#[derive(Clone, Copy, Debug)]
pub struct Relax {
    pub lower: Line,
    pub upper: Line,
    pub contacts: [f64; 16],
}

impl Relax {
    pub fn new(lower: Line, upper: Line) -> Relax {
        Relax { lower, upper, contacts: [f64::NAN; 16] }
    }
    pub fn with_contacts(mut self, pts: &[f64]) -> Relax {
        for (c, &p) in self.contacts.iter_mut().zip(pts) {
            *c = p;
        }
        self
    }
    pub fn constant(lo: f64, hi: f64) -> Relax {
        Relax::new(Line::constant(lo), Line::constant(hi))
    }
}

/// Relative margin added to every intercept (see the module documentation).
pub const MARGIN: f64 = 1e-12;

/// Make `line` a sound lower (`lower = true`) or upper bound of `f` on `[l, u]` in
/// floating point: shift the intercept by the largest violation found at `l`, `u`,
/// the midpoint and `pts`, plus [`MARGIN`] times the magnitudes involved plus `extra`.
pub fn secure(
    f: &dyn Fn(f64) -> f64,
    l: f64,
    u: f64,
    line: Line,
    lower: bool,
    pts: &[f64],
    extra: f64,
) -> Line {
    secure_values(line, lower, check_values(l, u, pts, f), extra)
}

/// The points [`secure`] checks a line on `[l, u]` at (`l`, `u`, the midpoint and the
/// points of `pts` inside `[l, u]`, NaN skipped), with the function's values there,
/// given by `f` (which may look some of them up instead of evaluating).
pub fn check_values(
    l: f64,
    u: f64,
    pts: &[f64],
    mut f: impl FnMut(f64) -> f64,
) -> SmallVec<[(f64, f64); 24]> {
    check_points(l, u, pts.iter().copied()).map(|p| (p, f(p))).collect()
}

/// The points [`check_values`] evaluates at, without collecting them.
pub fn check_points(l: f64, u: f64, pts: impl Iterator<Item = f64>) -> impl Iterator<Item = f64> {
    let mid = 0.5 * l + 0.5 * u;
    [l, u, mid].into_iter().chain(pts).filter(move |p| *p >= l && *p <= u)
}

/// [`secure`] from the function's values `(p, f(p))` at the check points (which must
/// be `l`, `u`, the midpoint and the contacts inside `[l, u]`), for callers that
/// evaluate some of them once for many lines.
pub fn secure_values(
    line: Line,
    lower: bool,
    values: impl IntoIterator<Item = (f64, f64)>,
    extra: f64,
) -> Line {
    let mut viol = 0.0f64;
    let mut scale = line.b.abs();
    for (p, y) in values {
        let v = line.at(p);
        scale = scale.max(y.abs()).max((line.k * p).abs());
        let d = if lower { v - y } else { y - v };
        if d > viol {
            viol = d;
        }
    }
    let shift = viol + MARGIN * scale + extra;
    Line { k: line.k, b: if lower { line.b - shift } else { line.b + shift } }
}

/// Round `x` down to `T`.
pub fn down<T: Scalar>(x: f64) -> T {
    let t = T::from_f64(x);
    if t.as_f64() > x { t.next_down() } else { t }
}

/// Round `x` up to `T`.
pub fn up<T: Scalar>(x: f64) -> T {
    let t = T::from_f64(x);
    if t.as_f64() < x { t.next_up() } else { t }
}

/// Convert a secured line on `[l, u]` to `T`: the slope is rounded to nearest and the
/// intercept widened by the rounding error times `max(|l|, |u|)`, then rounded
/// outwards. `None` when a coefficient is not finite in `T`.
pub fn to_scalar<T: Scalar>(line: Line, lower: bool, l: f64, u: f64) -> Option<(T, T)> {
    let k = T::from_f64(line.k);
    let dk = (line.k - k.as_f64()).abs() * l.abs().max(u.abs());
    let (b, bt) = if lower {
        let b = line.b - dk;
        (b, down::<T>(b))
    } else {
        let b = line.b + dk;
        (b, up::<T>(b))
    };
    (k.is_finite() && bt.is_finite() && b.is_finite()).then_some((k, bt))
}

/// Chord slope of `f` on `[l, u]`; the derivative at the midpoint when the interval is
/// too narrow for the difference quotient to be accurate (the chord side of a relaxation
/// is secured at both ends, which suffices on a convex or concave piece).
pub fn chord_slope(f: &dyn Fn(f64) -> f64, df: &dyn Fn(f64) -> f64, l: f64, u: f64) -> f64 {
    let w = u - l;
    if w > 1e-7 * l.abs().max(u.abs()).max(1.0) { (f(u) - f(l)) / w } else { df(0.5 * l + 0.5 * u) }
}

/// The chord through `(l, f(l))`.
pub fn chord(f: &dyn Fn(f64) -> f64, df: &dyn Fn(f64) -> f64, l: f64, u: f64) -> Line {
    Line::through(chord_slope(f, df, l, u), l, f(l))
}

/// The tangent at `t`.
pub fn tangent(f: &dyn Fn(f64) -> f64, df: &dyn Fn(f64) -> f64, t: f64) -> Line {
    tangent_and_value(f, df, t).0
}

/// The tangent at `t` and `f(t)`.
pub fn tangent_and_value(f: &dyn Fn(f64) -> f64, df: &dyn Fn(f64) -> f64, t: f64) -> (Line, f64) {
    let y = f(t);
    (Line::through(df(t), t, y), y)
}

/// Relaxation of a function that is convex (or concave) on `[l, u]`: the chord on one
/// side, the tangent at `t` on the other.
pub fn convex_piece(
    f: &dyn Fn(f64) -> f64,
    df: &dyn Fn(f64) -> f64,
    l: f64,
    u: f64,
    t: f64,
    convex: bool,
) -> Relax {
    let c = chord(f, df, l, u);
    let tg = tangent(f, df, t);
    let r = if convex { Relax::new(tg, c) } else { Relax::new(c, tg) };
    r.with_contacts(&[t])
}

/// Lines of a fixed slope `k` with the tightest intercepts: `min`/`max` of `f(x) - k·x`
/// over `candidates` (the interval ends and every stationary point of `f - k·x`, which
/// the caller provides).
pub fn fixed_slope(f: &dyn Fn(f64) -> f64, k: f64, candidates: &[f64]) -> Relax {
    let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
    for &x in candidates {
        let v = f(x) - k * x;
        lo = lo.min(v);
        hi = hi.max(v);
    }
    Relax::new(Line { k, b: lo }, Line { k, b: hi }).with_contacts(candidates)
}

/// The root of an increasing (`increasing = true`) or decreasing function `g` on
/// `[a, b]`, where `g(a)` and `g(b)` have opposite signs, by bisection.
pub fn bisect_root(g: &dyn Fn(f64) -> f64, mut a: f64, mut b: f64, increasing: bool) -> f64 {
    for _ in 0..100 {
        let m = 0.5 * (a + b);
        if m <= a || m >= b {
            break;
        }
        let below = if increasing { g(m) < 0.0 } else { g(m) > 0.0 };
        if below {
            a = m;
        } else {
            b = m;
        }
    }
    0.5 * (a + b)
}

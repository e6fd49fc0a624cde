//! The element-wise functions: value, derivative, exact range and relaxation in `f64`
//! (each a [`Func`] of the plugin kit).

use crate::special::{erf, erfc};
use crate::sshape::{SCurve, TangentMemo};
use lirpa_core::Result;
use lirpa_kit::line::{Line, Relax, bisect_root, chord_slope, fixed_slope};
use lirpa_kit::{
    FixedLine, Func, Pivot, Tangent, TangentPlan, Tangents, convex_plan, domain_error, fixed_slope_pivots,
    monotone_range,
};
use std::f64::consts::{FRAC_PI_2, PI, SQRT_2};

/// Sigmoid, Tanh, Atan, Erf.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SKind {
    Sigmoid,
    Tanh,
    Atan,
    Erf,
}

#[derive(Debug)]
pub struct SShaped(pub SKind);

pub fn sigmoid(x: f64) -> f64 {
    if x >= 0.0 {
        1.0 / (1.0 + (-x).exp())
    } else {
        let e = x.exp();
        e / (1.0 + e)
    }
}

/// `[σ(x), σ(-x), σ'(x), σ''(x)]` from one `exp(-|x|)`: the first three bit for bit
/// [`sigmoid`] at `x` and `-x` and [`SShaped::df`] for sigmoid, which all use that
/// same exponential.
fn sigmoid_fused(x: f64) -> [f64; 4] {
    let e = (-x.abs()).exp();
    let (big, small) = (1.0 / (1.0 + e), e / (1.0 + e));
    let d = e / ((1.0 + e) * (1.0 + e));
    // `sigmoid(0)` takes the `x >= 0` branch at `x` and at `-x = -0`: both 1/(1 + 1).
    let (s, s_neg) = if x >= 0.0 { (big, small) } else { (small, big) };
    // σ'' = σ'·(1 - 2σ) = σ'·(σ(-x) - σ(x)).
    [s, s_neg, d, d * (s_neg - s)]
}

impl SShaped {
    fn df(&self, x: f64) -> f64 {
        match self.0 {
            SKind::Sigmoid => {
                let e = (-x.abs()).exp();
                e / ((1.0 + e) * (1.0 + e))
            }
            SKind::Tanh => {
                let c = x.cosh();
                1.0 / (c * c)
            }
            SKind::Atan => 1.0 / (1.0 + x * x),
            SKind::Erf => std::f64::consts::FRAC_2_SQRT_PI * (-x * x).exp(),
        }
    }
}

impl Func for SShaped {
    fn train_derivative(&self, x: f64) -> Option<f64> {
        Some(self.df(x))
    }
    fn op_type(&self) -> &'static str {
        match self.0 {
            SKind::Sigmoid => "Sigmoid",
            SKind::Tanh => "Tanh",
            SKind::Atan => "Atan",
            SKind::Erf => "Erf",
        }
    }
    fn f(&self, x: f64) -> f64 {
        match self.0 {
            SKind::Sigmoid => sigmoid(x),
            SKind::Tanh => x.tanh(),
            SKind::Atan => x.atan(),
            SKind::Erf => erf(x),
        }
    }
    fn extra_margin(&self, _l: f64, _u: f64) -> f64 {
        // erf's error is absolute (a few ulps of 1).
        if self.0 == SKind::Erf { 1e-15 } else { 0.0 }
    }
    fn range(&self, l: f64, u: f64) -> (f64, f64) {
        (self.f(l), self.f(u))
    }
    fn relax(&self, l: f64, u: f64) -> Relax {
        self.with_curve(|c| c.relax(l, u))
    }
    fn tangents(&self) -> Option<&dyn Tangents> {
        Some(self)
    }
    /// `|f'| ≤ S` and `|f| ≤ F`: `(3·S, 2·F)` (see [`Func::fp_line_bound`]).
    fn fp_line_bound(&self) -> Option<(f64, f64)> {
        let (s, f) = match self.0 {
            SKind::Sigmoid => (0.25, 1.0),
            SKind::Tanh => (1.0, 1.0),
            SKind::Atan => (1.0, FRAC_PI_2),
            SKind::Erf => (std::f64::consts::FRAC_2_SQRT_PI, 1.0),
        };
        Some((3.0 * s, 2.0 * f))
    }
}

impl SShaped {
    fn with_curve<R>(&self, k: impl FnOnce(&SCurve<'_>) -> R) -> R {
        let g = |x: f64| self.f(x);
        let dg = |x: f64| self.df(x);
        let center = if self.0 == SKind::Sigmoid { 0.5 } else { 0.0 };
        // One memo of tangent points per kind, shared by every operator and call.
        static MEMOS: [std::sync::LazyLock<TangentMemo>; 4] = [
            std::sync::LazyLock::new(Default::default),
            std::sync::LazyLock::new(Default::default),
            std::sync::LazyLock::new(Default::default),
            std::sync::LazyLock::new(Default::default),
        ];
        let memo: &TangentMemo = &MEMOS[self.0 as usize];
        let fused: Option<&dyn Fn(f64) -> [f64; 4]> =
            if self.0 == SKind::Sigmoid { Some(&sigmoid_fused) } else { None };
        k(&SCurve { memo: Some(memo), g: &g, dg: &dg, center, d_min: f64::NEG_INFINITY, fused })
    }
}

impl SShaped {
    /// `tangent` at `t` with its curvature filled in where the curve left it out.
    fn with_curvature(&self, mut tangent: Tangent, t: f64) -> Tangent {
        if tangent.curvature.is_nan() {
            tangent.curvature = Tangents::d2f(self, t);
        }
        tangent
    }
}

impl Tangents for SShaped {
    fn plan(&self, l: f64, u: f64) -> TangentPlan {
        self.with_curve(|c| {
            let (lo, tl, rl) = c.lower_plan(l, u);
            let (hi, tu, ru) = c.upper_plan(l, u);
            TangentPlan {
                lower: rl.map(|(a, b)| (tl, a, b)),
                upper: ru.map(|(a, b)| (tu, a, b)),
                relax: Relax::new(lo, hi).with_contacts(&[tl, tu]),
                // A line without a tangent range is a chord (the constant fallback of
                // `lower_plan` cannot happen for these functions).
                fixed: [rl.is_none().then_some(FixedLine::CHORD), ru.is_none().then_some(FixedLine::CHORD)],
                slope: false,
            }
        })
    }
    fn lower_tangent(&self, t: f64) -> Tangent {
        let tangent = self.with_curve(|c| c.lower_tangent(t));
        self.with_curvature(tangent, t)
    }
    fn upper_tangent(&self, t: f64) -> Tangent {
        let tangent = self.with_curve(|c| c.upper_tangent(t));
        self.with_curvature(tangent, t)
    }
    fn df(&self, x: f64) -> f64 {
        SShaped::df(self, x)
    }
    fn d2f(&self, x: f64) -> f64 {
        match self.0 {
            SKind::Sigmoid => {
                let s = sigmoid(x);
                s * (1.0 - s) * (1.0 - 2.0 * s)
            }
            SKind::Tanh => {
                let t = x.tanh();
                -2.0 * t * (1.0 - t * t)
            }
            SKind::Atan => {
                let q = 1.0 + x * x;
                -2.0 * x / (q * q)
            }
            SKind::Erf => -2.0 * x * std::f64::consts::FRAC_2_SQRT_PI * (-x * x).exp(),
        }
    }
}

// ---------------------------------------------------------------- Sin, Cos

/// `sin(x + phase)`: Sin (`phase = 0`) and Cos (`phase = π/2`).
///
/// Relaxation (in the sine's coordinate `y = x + phase`):
/// - inside one monotone piece `[jπ - π/2, jπ + π/2]`, sin is S-shaped about `(jπ, 0)`
///   (reflected for odd `j`): the S-shaped relaxation, as auto_LiRPA 0.7.1;
/// - else inside one convex or concave piece `[iπ, (i+1)π]`: chord and tangent at the
///   midpoint;
/// - else, below a width of 2π, the chord slope with the tightest intercepts (from the
///   ends and the stationary points `cos y = k`); wider, the constant bounds of the
///   exact range.
#[derive(Debug)]
pub struct Trig {
    pub cos: bool,
}

impl Trig {
    fn phase(&self) -> f64 {
        if self.cos { FRAC_PI_2 } else { 0.0 }
    }
    fn df(&self, x: f64) -> f64 {
        if self.cos { -x.sin() } else { x.cos() }
    }
    /// Beyond this magnitude the argument reduction is too coarse to be worth it.
    const LARGE: f64 = 1e9;
}

impl Func for Trig {
    fn op_type(&self) -> &'static str {
        if self.cos { "Cos" } else { "Sin" }
    }
    fn f(&self, x: f64) -> f64 {
        if self.cos { x.cos() } else { x.sin() }
    }
    fn range(&self, l: f64, u: f64) -> (f64, f64) {
        let (yl, yu) = (l + self.phase(), u + self.phase());
        if !(yl.abs() < Self::LARGE && yu.abs() < Self::LARGE) || yu - yl >= 2.0 * PI {
            return (-1.0, 1.0);
        }
        // Extremum points are counted as inside when within a tolerance of the ends
        // (conservative).
        let tol = 1e-9;
        let contains = |p0: f64| {
            let k = ((yl - tol - p0) / (2.0 * PI)).ceil();
            p0 + 2.0 * PI * k <= yu + tol
        };
        let (a, b) = (self.f(l), self.f(u));
        let hi = if contains(FRAC_PI_2) { 1.0 } else { a.max(b) };
        let lo = if contains(-FRAC_PI_2) { -1.0 } else { a.min(b) };
        (lo, hi)
    }
    fn relax(&self, l: f64, u: f64) -> Relax {
        self.trig_plan(l, u).relax
    }
    fn tangents(&self) -> Option<&dyn Tangents> {
        Some(self)
    }
    fn extra_margin(&self, l: f64, u: f64) -> f64 {
        // Reducing the argument by jπ costs an absolute error of a few ulps of |x|, and
        // sin is 1-Lipschitz.
        1e-14 * (l.abs().max(u.abs()) + 1.0)
    }
}

impl Trig {
    /// The relaxation on `[l, u]` with its tangent ranges (in `x`): on a monotone piece
    /// those of [`SCurve::lower_plan`]/[`SCurve::upper_plan`] in the piece's coordinate
    /// (exchanged and negated on a decreasing piece); on a convex or concave piece the
    /// tangent may move in `[l, u]`; across an extremum the lines are fixed.
    // Negated comparisons on purpose: a NaN takes the branch of a failed test.
    #[allow(clippy::neg_cmp_op_on_partial_ord)]
    fn trig_plan(&self, l: f64, u: f64) -> TangentPlan {
        let phase = self.phase();
        let (yl, yu) = (l + phase, u + phase);
        let constant = |this: &Self| {
            let (lo, hi) = this.range(l, u);
            let pivot = |v: f64| {
                let p = if v == this.f(l) {
                    Pivot::L
                } else if v == this.f(u) {
                    Pivot::U
                } else {
                    Pivot::Inner(f64::NAN)
                };
                Some(FixedLine { chord: false, pivot: p })
            };
            TangentPlan::fixed(Relax::constant(lo, hi), [pivot(lo), pivot(hi)])
        };
        if !(yl.abs() < Self::LARGE && yu.abs() < Self::LARGE) || yu - yl >= 2.0 * PI {
            return constant(self);
        }
        let jl = ((yl + FRAC_PI_2) / PI).floor();
        let ju = ((yu + FRAC_PI_2) / PI).floor();
        if jl == ju {
            let cj = jl * PI;
            let g = |t: f64| t.sin();
            let dg = |t: f64| t.cos();
            let s = SCurve { memo: None, g: &g, dg: &dg, center: 0.0, d_min: -FRAC_PI_2, fused: None };
            let (tl, tu) = (yl - cj, yu - cj);
            let (lo, a, ra) = s.lower_plan(tl, tu);
            let (hi, b, rb) = s.upper_plan(tl, tu);
            // A line in t = x + phase - cj.
            let shift = phase - cj;
            let back = |t: f64| t - shift;
            let range = |t: f64, r: Option<(f64, f64)>| r.map(|(p, q)| (back(t), back(p), back(q)));
            let chord = |r: Option<(f64, f64)>| r.is_none().then_some(FixedLine::CHORD);
            return if jl.rem_euclid(2.0) == 0.0 {
                TangentPlan {
                    lower: range(a, ra),
                    upper: range(b, rb),
                    relax: Relax::new(lo.shifted(shift), hi.shifted(shift))
                        .with_contacts(&[back(a), back(b)]),
                    fixed: [chord(ra), chord(rb)],
                    slope: false,
                }
            } else {
                // sin(y) = -sin(y - jπ) for odd j.
                TangentPlan {
                    lower: range(b, rb),
                    upper: range(a, ra),
                    relax: Relax::new((-hi).shifted(shift), (-lo).shifted(shift))
                        .with_contacts(&[back(a), back(b)]),
                    fixed: [chord(rb), chord(ra)],
                    slope: false,
                }
            };
        }
        let il = (yl / PI).floor();
        let iu = (yu / PI).floor();
        let f = |x: f64| self.f(x);
        let df = |x: f64| self.df(x);
        if il == iu {
            // sin is concave on [2mπ, (2m+1)π] and convex on the others.
            let convex = il.rem_euclid(2.0) == 1.0;
            return convex_plan(&f, &df, l, u, 0.5 * l + 0.5 * u, convex, l);
        }
        // Across an extremum: the chord slope k with the tightest intercepts; each side's
        // slope may move in [-1, 1].
        let k = (yu.sin() - yl.sin()) / (yu - yl);
        if !(k.abs() <= 1.0) {
            return constant(self);
        }
        let (relax, mut fixed) = self.across(l, u, k);
        // The CROWN slope is the chord's.
        for f in fixed.iter_mut().flatten() {
            f.chord = true;
        }
        TangentPlan { lower: Some((k, -1.0, 1.0)), upper: Some((k, -1.0, 1.0)), relax, fixed, slope: true }
    }

    /// The lines of slope `k` (`|k| <= 1`) with the tightest intercepts on `[l, u]`, from
    /// sin(y) - k·y at the ends and at its stationary points cos(y) = k (in the sine's
    /// coordinate `y = x + phase`; `u - l < 2π`), and their pivots (slope not the chord's).
    fn across(&self, l: f64, u: f64, k: f64) -> (Relax, [Option<FixedLine>; 2]) {
        let phase = self.phase();
        let (yl, yu) = (l + phase, u + phase);
        let a = k.clamp(-1.0, 1.0).acos();
        let mut cand = vec![yl, yu];
        for base in [a, -a] {
            let n0 = ((yl - base) / (2.0 * PI)).ceil();
            let mut y = base + 2.0 * PI * n0;
            while y <= yu && cand.len() < 6 {
                if y >= yl {
                    cand.push(y);
                }
                y += 2.0 * PI;
            }
        }
        let g = |y: f64| y.sin();
        let r = fixed_slope(&g, k, &cand);
        let xs: Vec<f64> = cand.iter().map(|y| y - phase).collect();
        let fixed = fixed_slope_pivots(&g, k, &cand, false).map(|p| {
            p.map(|mut p| {
                if let Pivot::Inner(y) = p.pivot {
                    p.pivot = Pivot::Inner(y - phase);
                }
                p
            })
        });
        (Relax::new(r.lower.shifted(phase), r.upper.shifted(phase)).with_contacts(&xs), fixed)
    }
}

impl Tangents for Trig {
    fn plan(&self, l: f64, u: f64) -> TangentPlan {
        self.trig_plan(l, u)
    }
    fn lower_tangent(&self, t: f64) -> Tangent {
        Tangent::of(&|x| self.f(x), &|x| Trig::df(self, x), &|x| Tangents::d2f(self, x), t)
    }
    fn upper_tangent(&self, t: f64) -> Tangent {
        self.lower_tangent(t)
    }
    fn df(&self, x: f64) -> f64 {
        Trig::df(self, x)
    }
    fn d2f(&self, x: f64) -> f64 {
        -self.f(x)
    }
    fn slope_relax(&self, l: f64, u: f64, k: f64) -> Option<(Relax, [Option<FixedLine>; 2])> {
        Some(self.across(l, u, k))
    }
}

// ---------------------------------------------------------------- convex / concave

/// Exp, Log, Reciprocal, Sqrt, Softplus.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Smooth {
    Exp,
    Log,
    Reciprocal,
    Sqrt,
    Softplus,
}

#[derive(Debug)]
pub struct SmoothFn(pub Smooth);

impl SmoothFn {
    fn df(&self, x: f64) -> f64 {
        match self.0 {
            Smooth::Exp => x.exp(),
            Smooth::Log => 1.0 / x,
            Smooth::Reciprocal => -1.0 / (x * x),
            Smooth::Sqrt => 0.5 / x.sqrt(),
            Smooth::Softplus => sigmoid(x),
        }
    }
}

impl Func for SmoothFn {
    fn op_type(&self) -> &'static str {
        match self.0 {
            Smooth::Exp => "Exp",
            Smooth::Log => "Log",
            Smooth::Reciprocal => "Reciprocal",
            Smooth::Sqrt => "Sqrt",
            Smooth::Softplus => "Softplus",
        }
    }
    fn f(&self, x: f64) -> f64 {
        match self.0 {
            Smooth::Exp => x.exp(),
            Smooth::Log => x.ln(),
            Smooth::Reciprocal => 1.0 / x,
            Smooth::Sqrt => x.sqrt(),
            Smooth::Softplus => {
                if x > 0.0 {
                    x + (-x).exp().ln_1p()
                } else {
                    x.exp().ln_1p()
                }
            }
        }
    }
    // Negated comparisons on purpose: a NaN takes the branch of a failed test.
    #[allow(clippy::neg_cmp_op_on_partial_ord)]
    fn domain(&self, l: f64, u: f64) -> Result<()> {
        match self.0 {
            Smooth::Log if !(l > 0.0) => Err(domain_error("Log", "a positive input", l, u)),
            Smooth::Sqrt if !(l >= 0.0) => Err(domain_error("Sqrt", "a non-negative input", l, u)),
            Smooth::Reciprocal if !(l > 0.0 || u < 0.0) => {
                Err(domain_error("Reciprocal", "an input interval that excludes 0", l, u))
            }
            _ => Ok(()),
        }
    }
    fn range(&self, l: f64, u: f64) -> (f64, f64) {
        monotone_range(&|x| self.f(x), l, u)
    }
    fn relax(&self, l: f64, u: f64) -> Relax {
        self.smooth_plan(l, u).relax
    }
    fn tangents(&self) -> Option<&dyn Tangents> {
        Some(self)
    }
}

/// The smallest tangent point allowed on `[l, u]` for a function whose derivative is
/// infinite at 0 (Sqrt, `x^p` with `0 < p < 1`): `l`, or a millionth of `u` when `l = 0`.
fn away_from_zero(l: f64, u: f64) -> f64 {
    if l > 0.0 { l } else { 1e-6 * u }
}

impl SmoothFn {
    /// Chord on one side, tangent on the other (auto_LiRPA's tangent points); the
    /// tangent may move in `[l, u]`.
    fn smooth_plan(&self, l: f64, u: f64) -> TangentPlan {
        let f = |x: f64| self.f(x);
        let df = |x: f64| self.df(x);
        let m = 0.5 * l + 0.5 * u;
        match self.0 {
            // auto_LiRPA: tangent at min(m, l + 0.99), chord above.
            Smooth::Exp => convex_plan(&f, &df, l, u, m.min(l + 0.99), true, l),
            Smooth::Softplus => convex_plan(&f, &df, l, u, m, true, l),
            Smooth::Log => convex_plan(&f, &df, l, u, m, false, l),
            Smooth::Reciprocal => convex_plan(&f, &df, l, u, m, l > 0.0, l),
            Smooth::Sqrt => {
                if m <= 0.0 {
                    TangentPlan::fixed(Relax::constant(0.0, f(u)), [None, None])
                } else {
                    convex_plan(&f, &df, l, u, m, false, away_from_zero(l, u))
                }
            }
        }
    }
}

impl Tangents for SmoothFn {
    fn plan(&self, l: f64, u: f64) -> TangentPlan {
        self.smooth_plan(l, u)
    }
    fn lower_tangent(&self, t: f64) -> Tangent {
        Tangent::of(&|x| self.f(x), &|x| SmoothFn::df(self, x), &|x| Tangents::d2f(self, x), t)
    }
    fn upper_tangent(&self, t: f64) -> Tangent {
        self.lower_tangent(t)
    }
    fn df(&self, x: f64) -> f64 {
        SmoothFn::df(self, x)
    }
    fn d2f(&self, x: f64) -> f64 {
        match self.0 {
            Smooth::Exp => x.exp(),
            Smooth::Log => -1.0 / (x * x),
            Smooth::Reciprocal => 2.0 / (x * x * x),
            Smooth::Sqrt => -0.25 / (x * x.sqrt()),
            Smooth::Softplus => {
                let s = sigmoid(x);
                s * (1.0 - s)
            }
        }
    }
}

// ---------------------------------------------------------------- Pow

/// `x^p` for a constant exponent `p`.
#[derive(Debug)]
pub struct Pow {
    pub p: f64,
}

impl Pow {
    fn int(&self) -> Option<i32> {
        (self.p.fract() == 0.0 && self.p.abs() < 1e9).then_some(self.p as i32)
    }
    fn df(&self, x: f64) -> f64 {
        match self.int() {
            Some(0) => 0.0,
            Some(n) => n as f64 * x.powi(n - 1),
            None => self.p * x.powf(self.p - 1.0),
        }
    }
}

impl Func for Pow {
    fn op_type(&self) -> &'static str {
        "Pow"
    }
    fn f(&self, x: f64) -> f64 {
        match self.int() {
            Some(n) => x.powi(n),
            None => x.powf(self.p),
        }
    }
    // Negated comparisons on purpose: a NaN takes the branch of a failed test.
    #[allow(clippy::neg_cmp_op_on_partial_ord)]
    fn domain(&self, l: f64, u: f64) -> Result<()> {
        match self.int() {
            Some(n) if n < 0 && !(l > 0.0 || u < 0.0) => {
                Err(domain_error("Pow", &format!("an input interval excluding 0 for exponent {n}"), l, u))
            }
            None if self.p < 0.0 && !(l > 0.0) => {
                Err(domain_error("Pow", &format!("a positive input for exponent {}", self.p), l, u))
            }
            None if !(l >= 0.0) => {
                Err(domain_error("Pow", &format!("a non-negative input for exponent {}", self.p), l, u))
            }
            _ => Ok(()),
        }
    }
    fn range(&self, l: f64, u: f64) -> (f64, f64) {
        match self.int() {
            Some(0) => (1.0, 1.0),
            Some(n) if n > 0 && n % 2 == 0 && l < 0.0 && u > 0.0 => (0.0, self.f(l).max(self.f(u))),
            _ => monotone_range(&|x| self.f(x), l, u),
        }
    }
    fn relax(&self, l: f64, u: f64) -> Relax {
        self.pow_plan(l, u).relax
    }
    fn tangents(&self) -> Option<&dyn Tangents> {
        Some(self)
    }
}

impl Pow {
    /// Chord and tangent on a convex or concave piece (the tangent may move in
    /// `[l, u]`); across 0 for an odd power, the chord slope with the tightest
    /// intercepts (fixed).
    fn pow_plan(&self, l: f64, u: f64) -> TangentPlan {
        let f = |x: f64| self.f(x);
        let df = |x: f64| self.df(x);
        let m = 0.5 * l + 0.5 * u;
        let constant = |lo: f64, hi: f64| TangentPlan::fixed(Relax::constant(lo, hi), [None, None]);
        match self.int() {
            Some(0) => constant(1.0, 1.0),
            Some(1) => {
                TangentPlan::fixed(Relax::new(Line { k: 1.0, b: 0.0 }, Line { k: 1.0, b: 0.0 }), [None, None])
            }
            // auto_LiRPA's BoundSqr: tangent at the point of [l, u] closest to 0.
            Some(2) => convex_plan(&f, &df, l, u, 0.0f64.clamp(l, u), true, l),
            Some(n) if n > 0 && n % 2 == 0 => convex_plan(&f, &df, l, u, m, true, l),
            Some(n) if n > 0 => {
                // Odd: concave on x <= 0, convex on x >= 0.
                if l >= 0.0 || u <= 0.0 {
                    convex_plan(&f, &df, l, u, m, l >= 0.0, l)
                } else {
                    // The chord slope with the tightest intercepts; each side's slope
                    // may move in [0, max f'] (f' is largest at an end).
                    let k = chord_slope(&f, &df, l, u);
                    let (relax, mut fixed) = self.odd_across(n, l, u, k);
                    for f in fixed.iter_mut().flatten() {
                        f.chord = true;
                    }
                    let range = Some((k, k.min(0.0), k.max(df(l).max(df(u)))));
                    TangentPlan { lower: range, upper: range, relax, fixed, slope: true }
                }
            }
            Some(n) => {
                // Negative integer; [l, u] excludes 0. Even: convex; odd: convex for x > 0.
                let convex = n % 2 == 0 || l > 0.0;
                convex_plan(&f, &df, l, u, m, convex, l)
            }
            None => {
                if u <= 0.0 || m <= 0.0 {
                    let (lo, hi) = self.range(l, u);
                    return constant(lo, hi);
                }
                let convex = self.p > 1.0 || self.p < 0.0;
                let lo = if self.p < 1.0 && self.p > 0.0 { away_from_zero(l, u) } else { l };
                convex_plan(&f, &df, l, u, m, convex, lo)
            }
        }
    }
}

impl Pow {
    /// Odd power `n` on `[l, u]` across 0: the lines of slope `k` with the tightest
    /// intercepts, from the ends and the stationary points `±(k/n)^(1/(n-1))`.
    fn odd_across(&self, n: i32, l: f64, u: f64, k: f64) -> (Relax, [Option<FixedLine>; 2]) {
        let f = |x: f64| self.f(x);
        let mut c = vec![l, u];
        if k > 0.0 {
            let r = (k / n as f64).powf(1.0 / (n - 1) as f64);
            c.extend([-r, r].into_iter().filter(|x| *x > l && *x < u));
        }
        (fixed_slope(&f, k, &c), fixed_slope_pivots(&f, k, &c, false))
    }
}

impl Tangents for Pow {
    fn plan(&self, l: f64, u: f64) -> TangentPlan {
        self.pow_plan(l, u)
    }
    fn lower_tangent(&self, t: f64) -> Tangent {
        Tangent::of(&|x| self.f(x), &|x| Pow::df(self, x), &|x| Tangents::d2f(self, x), t)
    }
    fn upper_tangent(&self, t: f64) -> Tangent {
        self.lower_tangent(t)
    }
    fn df(&self, x: f64) -> f64 {
        Pow::df(self, x)
    }
    fn d2f(&self, x: f64) -> f64 {
        match self.int() {
            Some(n) if (0..=1).contains(&n) => 0.0,
            Some(n) => (n as f64) * ((n - 1) as f64) * x.powi(n - 2),
            None => self.p * (self.p - 1.0) * x.powf(self.p - 2.0),
        }
    }
    fn slope_relax(&self, l: f64, u: f64, k: f64) -> Option<(Relax, [Option<FixedLine>; 2])> {
        match self.int() {
            Some(n) if n > 2 && n % 2 == 1 && l < 0.0 && u > 0.0 => Some(self.odd_across(n, l, u, k)),
            _ => None,
        }
    }
}

// ---------------------------------------------------------------- GELU

/// `x·Φ(x)` (ONNX Gelu, `approximate = "none"`) or its tanh approximation
/// `x/2·(1 + tanh(√(2/π)(x + 0.044715x³)))` (`approximate = "tanh"`).
///
/// Both have `GELU'` decreasing on `x <= -r`, increasing on `[-r, r]`, decreasing on
/// `x >= r`: for the exact GELU `GELU'' = φ(x)(2 - x²)`, so `r = √2`; for the tanh
/// form `GELU'' = 2σ'(2v)·h(x)` with `v = √(2/π)(x + 0.044715x³)` and
/// `h = 2v' + x·v'' + 2x(1 - 2σ(2v))·v'²`, an even function, positive at 0 and
/// decreasing to -∞, whose positive root `r` is found by bisection. Relaxation: the
/// chord slope `k`, with the tightest intercepts, from `f - k·x` at the ends and at
/// its stationary points (one at most per monotone piece of `GELU'`, by bisection).
#[derive(Debug)]
pub struct Gelu {
    pub tanh: bool,
}

const GELU_C: f64 = 0.797_884_560_802_865_4; // √(2/π)
const GELU_A: f64 = 0.044_715;

fn sigmoid_d(z: f64) -> f64 {
    let e = (-z.abs()).exp();
    e / ((1.0 + e) * (1.0 + e))
}

impl Gelu {
    fn df(&self, x: f64) -> f64 {
        if self.tanh {
            let v = GELU_C * (x + GELU_A * x * x * x);
            let dv = GELU_C * (1.0 + 3.0 * GELU_A * x * x);
            sigmoid(2.0 * v) + 2.0 * x * sigmoid_d(2.0 * v) * dv
        } else {
            0.5 * erfc(-x / SQRT_2) + x * (-0.5 * x * x).exp() / (2.0 * PI).sqrt()
        }
    }
    /// The positive inflection point.
    fn inflection(&self) -> f64 {
        if !self.tanh {
            return SQRT_2;
        }
        static R: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
        *R.get_or_init(|| {
            let h = |x: f64| {
                let v = GELU_C * (x + GELU_A * x * x * x);
                let dv = GELU_C * (1.0 + 3.0 * GELU_A * x * x);
                let ddv = 6.0 * GELU_C * GELU_A * x;
                2.0 * dv + x * ddv + 2.0 * x * (1.0 - 2.0 * sigmoid(2.0 * v)) * dv * dv
            };
            bisect_root(&h, 0.0, 4.0, false)
        })
    }
    // Negated comparisons on purpose: a NaN takes the branch of a failed test.
    #[allow(clippy::neg_cmp_op_on_partial_ord)]
    fn candidates(&self, k: f64, l: f64, u: f64) -> Vec<f64> {
        let mut c = vec![l, u];
        let g = |x: f64| self.df(x) - k;
        let r = self.inflection();
        for (a, b, inc) in [(f64::NEG_INFINITY, -r, false), (-r, r, true), (r, f64::INFINITY, false)] {
            let (a, b) = (a.max(l), b.min(u));
            if !(a < b) {
                continue;
            }
            let (ga, gb) = (g(a), g(b));
            if (ga <= 0.0) != (gb <= 0.0) || ga == 0.0 || gb == 0.0 {
                c.push(bisect_root(&g, a, b, inc));
            }
        }
        c
    }
}

impl Func for Gelu {
    fn op_type(&self) -> &'static str {
        "Gelu"
    }
    fn f(&self, x: f64) -> f64 {
        if x.is_infinite() {
            return if x > 0.0 { x } else { 0.0 };
        }
        if self.tanh {
            // x/2·(1 + tanh v) = x·σ(2v), without cancellation for negative x.
            x * sigmoid(2.0 * GELU_C * (x + GELU_A * x * x * x))
        } else {
            0.5 * x * erfc(-x / SQRT_2)
        }
    }
    fn range(&self, l: f64, u: f64) -> (f64, f64) {
        let (lc, uc) = (l.max(-60.0), u.min(60.0));
        let (mut lo, mut hi) = monotone_range(&|x| self.f(x), l, u);
        if lc < uc {
            let r = fixed_slope(&|x| self.f(x), 0.0, &self.candidates(0.0, lc, uc));
            lo = lo.min(r.lower.b);
            hi = hi.max(r.upper.b);
        }
        (lo, hi)
    }
    fn extra_margin(&self, l: f64, u: f64) -> f64 {
        // erfc near 1.4 is 1 - erf with an absolute error of a few ulps of 1.
        1e-14 * (1.0 + l.abs().max(u.abs()).min(1e6))
    }
    fn relax(&self, l: f64, u: f64) -> Relax {
        self.gelu_plan(l, u).relax
    }
    fn tangents(&self) -> Option<&dyn Tangents> {
        Some(self)
    }
}

impl Gelu {
    /// The chord slope with the tightest intercepts; each side's slope may move in
    /// `[-0.2, 1.2]` (GELU' stays within `[-0.13, 1.13]`).
    fn gelu_plan(&self, l: f64, u: f64) -> TangentPlan {
        let f = |x: f64| self.f(x);
        let df = |x: f64| self.df(x);
        let k = chord_slope(&f, &df, l, u);
        let (relax, mut fixed) = self.slope_lines(l, u, k);
        for f in fixed.iter_mut().flatten() {
            f.chord = true;
        }
        let range = Some((k, k.min(-0.2), k.max(1.2)));
        TangentPlan { lower: range, upper: range, relax, fixed, slope: true }
    }

    /// The lines of slope `k` with the tightest intercepts on `[l, u]` and their pivots.
    fn slope_lines(&self, l: f64, u: f64, k: f64) -> (Relax, [Option<FixedLine>; 2]) {
        let f = |x: f64| self.f(x);
        let c = self.candidates(k, l, u);
        (fixed_slope(&f, k, &c), fixed_slope_pivots(&f, k, &c, false))
    }
}

/// Gelu is optimized through its slopes only ([`Tangents::slope_relax`]).
impl Tangents for Gelu {
    fn plan(&self, l: f64, u: f64) -> TangentPlan {
        self.gelu_plan(l, u)
    }
    fn lower_tangent(&self, t: f64) -> Tangent {
        Tangent::of(&|x| self.f(x), &|x| Gelu::df(self, x), &|x| Tangents::d2f(self, x), t)
    }
    fn upper_tangent(&self, t: f64) -> Tangent {
        self.lower_tangent(t)
    }
    fn df(&self, x: f64) -> f64 {
        Gelu::df(self, x)
    }
    /// Not used: no Gelu line is a movable tangent.
    fn d2f(&self, _t: f64) -> f64 {
        0.0
    }
    fn slope_relax(&self, l: f64, u: f64, k: f64) -> Option<(Relax, [Option<FixedLine>; 2])> {
        Some(self.slope_lines(l, u, k))
    }
}

// ---------------------------------------------------------------- piecewise

/// Abs, Clip, Sign, Floor.
#[derive(Debug)]
pub enum Piecewise {
    Abs,
    /// `min(max(x, lo), hi)`.
    Clip(f64, f64),
    Sign,
    Floor,
}

fn sign(x: f64) -> f64 {
    if x > 0.0 {
        1.0
    } else if x < 0.0 {
        -1.0
    } else {
        0.0
    }
}

/// Fixed slope `k`, intercepts from explicit vertices `(x, y)` (one-sided limits at
/// jumps included): exact for piecewise-linear functions.
fn vertex_lines(k: f64, pts: &[(f64, f64)]) -> Relax {
    let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
    for &(x, y) in pts {
        lo = lo.min(y - k * x);
        hi = hi.max(y - k * x);
    }
    Relax::new(Line { k, b: lo }, Line { k, b: hi })
}

impl Func for Piecewise {
    fn op_type(&self) -> &'static str {
        match self {
            Piecewise::Abs => "Abs",
            Piecewise::Clip(..) => "Clip",
            Piecewise::Sign => "Sign",
            Piecewise::Floor => "Floor",
        }
    }
    fn f(&self, x: f64) -> f64 {
        match *self {
            Piecewise::Abs => x.abs(),
            Piecewise::Clip(a, b) => x.max(a).min(b),
            Piecewise::Sign => sign(x),
            Piecewise::Floor => x.floor(),
        }
    }
    fn range(&self, l: f64, u: f64) -> (f64, f64) {
        match self {
            Piecewise::Abs if l < 0.0 && u > 0.0 => (0.0, (-l).max(u)),
            _ => monotone_range(&|x| self.f(x), l, u),
        }
    }
    fn relax(&self, l: f64, u: f64) -> Relax {
        let f = |x: f64| self.f(x);
        match *self {
            // auto_LiRPA: chord above; below, the identity or its negation on a
            // stable sign, else 0.
            Piecewise::Abs => {
                let upper = if u > l {
                    Line::through((u.abs() - l.abs()) / (u - l), l, l.abs())
                } else {
                    Line::constant(l.abs())
                };
                let lower = if l >= 0.0 {
                    Line { k: 1.0, b: 0.0 }
                } else if u <= 0.0 {
                    Line { k: -1.0, b: 0.0 }
                } else {
                    Line::constant(0.0)
                };
                Relax::new(lower, upper)
            }
            // The chord slope with the tightest intercepts (auto_LiRPA's same-slope
            // HardTanh relaxation).
            Piecewise::Clip(a, b) => {
                let k = if u > l { (f(u) - f(l)) / (u - l) } else { 0.0 };
                let mut pts = vec![(l, f(l)), (u, f(u))];
                for x in [a, b] {
                    if x > l && x < u {
                        pts.push((x, f(x)));
                    }
                }
                vertex_lines(k, &pts)
            }
            Piecewise::Sign => {
                if l > 0.0 || u < 0.0 || (l == 0.0 && u == 0.0) {
                    return Relax::constant(f(l), f(u));
                }
                let k = (f(u) - f(l)) / (u - l);
                let mut pts = vec![(l, f(l)), (u, f(u)), (0.0, 0.0)];
                if l < 0.0 {
                    pts.push((0.0, -1.0));
                }
                if u > 0.0 {
                    pts.push((0.0, 1.0));
                }
                vertex_lines(k, &pts)
            }
            // floor(x) is in (x - 1, x]; constant bounds when they are as tight.
            Piecewise::Floor => {
                let (fl, fu) = (l.floor(), u.floor());
                if fu - fl <= 1.0 {
                    Relax::constant(fl, fu)
                } else {
                    Relax::new(Line { k: 1.0, b: -1.0 }, Line { k: 1.0, b: 0.0 })
                }
            }
        }
    }
}

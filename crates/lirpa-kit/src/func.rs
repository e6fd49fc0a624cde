//! The description of one element-wise function that [`crate::Elementwise`] turns into
//! an operator: value, domain, exact range and relaxation in `f64` ([`Func`]), and the
//! optional tangent-point parametrization of its relaxation for α-CROWN
//! ([`Tangents`]), with the helpers that build the plans of common shapes.

use crate::line::{Line, Relax, convex_piece};
use lirpa_core::{Error, Result};

/// One element-wise function. All methods work in `f64`.
pub trait Func: std::fmt::Debug + Send + Sync + 'static {
    fn op_type(&self) -> &'static str;
    fn f(&self, x: f64) -> f64;
    /// An error when `[l, u]` leaves the function's domain (e.g. Log of `x <= 0`).
    fn domain(&self, _l: f64, _u: f64) -> Result<()> {
        Ok(())
    }
    /// The exact range of `f` on `[l, u]` (`l <= u`, possibly infinite).
    fn range(&self, l: f64, u: f64) -> (f64, f64);
    /// Lower and upper lines on the finite interval `[l, u]` inside the domain, before
    /// the floating-point verification of [`crate::line::secure`].
    fn relax(&self, l: f64, u: f64) -> Relax;
    /// Absolute margin added to both intercepts on top of the relative one (used where
    /// a reduction of the argument loses absolute precision, e.g. sin of large inputs).
    fn extra_margin(&self, _l: f64, _u: f64) -> f64 {
        0.0
    }
    /// `f'(x)` for the non-decreasing functions that can be trained through (their
    /// interval rule is `[f(l), f(u)]`); `None` for the others.
    fn train_derivative(&self, _x: f64) -> Option<f64> {
        None
    }
    /// The tangent-point parametrization of the relaxation (α-CROWN), for the functions
    /// that have one.
    fn tangents(&self) -> Option<&dyn Tangents> {
        None
    }
    /// For the floating-point-sound mode: `(s, c)` such that every line `k·x + b` any
    /// relaxation of this function uses on input bounds inside `[−m, m]` (CROWN's,
    /// α-CROWN's, secured and rounded to the bound type) has `|k|·m + |b| ≤ s·m + c`,
    /// for every `m` ([`lirpa_core::FpKind::Elementwise`]); `c > 0` says floating point
    /// does not compute the function exactly. A function with a bounded derivative
    /// `|f'| ≤ S` and range `|f| ≤ F` has lines of slope at most `S` through a point of
    /// the graph within the interval, so `(3·S, 2·F)` holds with room for the securing
    /// margins. `None` (the default): the sound mode refuses the operator by name.
    fn fp_line_bound(&self) -> Option<(f64, f64)> {
        None
    }
}

/// How the relaxation on one interval may be optimized: for each line that is a
/// tangent, `(crown point, lo, hi)`, the tangent point [`Func::relax`] uses and the
/// range of tangent points whose tangents are valid on the interval (the point is in
/// it); `None` for a fixed line. `relax` is [`Func::relax`]'s result (same lines, same
/// contact points), `fixed` describes how each fixed line (lower, upper) moves with the
/// interval, for the gradient with respect to the input bounds (`None`: taken as
/// constant).
///
/// With `slope = true`, the free parameters are not tangent points but the slopes of
/// lines whose intercepts are the tightest for their slope ([`Tangents::slope_relax`];
/// Sin and Cos across an extremum).
#[derive(Clone, Copy, Debug)]
pub struct TangentPlan {
    pub lower: Option<(f64, f64, f64)>,
    pub upper: Option<(f64, f64, f64)>,
    pub relax: Relax,
    pub fixed: [Option<FixedLine>; 2],
    pub slope: bool,
}

impl TangentPlan {
    /// A relaxation with no free line (its lines' dependence on the interval given by
    /// `fixed`).
    pub fn fixed(relax: Relax, fixed: [Option<FixedLine>; 2]) -> TangentPlan {
        TangentPlan { lower: None, upper: None, relax, fixed, slope: false }
    }
}

/// A fixed line through the point `(c, f(c))` of the function, where `c` is [`Pivot`]:
/// with the chord slope `k = (f(u) - f(l))/(u - l)` (`chord = true`), or a slope that
/// does not depend on the interval (`chord = false`, e.g. a constant bound). Its value
/// at `z`, `f(c) + k·(z - c)`, moves with `l` at rate `∂k/∂l·(z - c)`, plus
/// `f'(l) - k` when `c = l` (the same for `u`); an interior `c` is a stationary point of
/// `f - k·x` (or a fixed point), which contributes nothing to first order.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct FixedLine {
    pub chord: bool,
    pub pivot: Pivot,
}

/// Where a fixed line touches the function.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Pivot {
    L,
    U,
    Inner(f64),
}

impl Pivot {
    /// The pivot as a point of the interval `[l, u]`.
    pub fn point(self, l: f64, u: f64) -> f64 {
        match self {
            Pivot::L => l,
            Pivot::U => u,
            Pivot::Inner(c) => c,
        }
    }
}

impl FixedLine {
    pub const CHORD: FixedLine = FixedLine { chord: true, pivot: Pivot::L };
}

/// The pivots of the lower and upper lines of slope `k` with the tightest intercepts
/// over `candidates` (`candidates[0] = l`, `candidates[1] = u`, the others stationary
/// points of `f - k·x`), as [`line::fixed_slope`](crate::line::fixed_slope) chooses them.
pub fn fixed_slope_pivots(
    f: &dyn Fn(f64) -> f64,
    k: f64,
    candidates: &[f64],
    chord: bool,
) -> [Option<FixedLine>; 2] {
    let (mut lo, mut hi) = ((f64::INFINITY, 0), (f64::NEG_INFINITY, 0));
    for (i, &x) in candidates.iter().enumerate() {
        let v = f(x) - k * x;
        if v < lo.0 {
            lo = (v, i);
        }
        if v > hi.0 {
            hi = (v, i);
        }
    }
    let pivot = |i: usize| match i {
        0 => Pivot::L,
        1 => Pivot::U,
        _ => Pivot::Inner(candidates[i]),
    };
    [Some(FixedLine { chord, pivot: pivot(lo.1) }), Some(FixedLine { chord, pivot: pivot(hi.1) })]
}

/// The plan of [`convex_piece`]: the tangent at `t` may move in `[lo, u]` (every
/// tangent of a convex or concave piece lies on one side of it), the chord is fixed.
pub fn convex_plan(
    f: &dyn Fn(f64) -> f64,
    df: &dyn Fn(f64) -> f64,
    l: f64,
    u: f64,
    t: f64,
    convex: bool,
    lo: f64,
) -> TangentPlan {
    let relax = convex_piece(f, df, l, u, t, convex);
    let tan = Some((t, lo.min(t), u));
    if convex {
        TangentPlan { lower: tan, upper: None, relax, fixed: [None, Some(FixedLine::CHORD)], slope: false }
    } else {
        TangentPlan { lower: None, upper: tan, relax, fixed: [Some(FixedLine::CHORD), None], slope: false }
    }
}

/// A tangent line at `t` with what its computation gives almost for free: `value`,
/// `f(t)` evaluated as accurately as [`Func::f`] does (the line is checked against it
/// at `t`), and `curvature`, `f''(t)` (the line's value at `x` moves with `t` at rate
/// `f''(t)·(x - t)`; used for gradients only).
#[derive(Clone, Copy, Debug)]
pub struct Tangent {
    pub line: Line,
    pub value: f64,
    pub curvature: f64,
}

impl Tangent {
    /// The tangent of `f` at `t` (derivatives `df`, `d2f`).
    pub fn of(f: &dyn Fn(f64) -> f64, df: &dyn Fn(f64) -> f64, d2f: &dyn Fn(f64) -> f64, t: f64) -> Tangent {
        let (line, value) = crate::line::tangent_and_value(f, df, t);
        Tangent { line, value, curvature: d2f(t) }
    }
}

/// A relaxation made of tangents whose points may move (α-CROWN, see
/// the activation plugin's `sshape`).
pub trait Tangents: Sync {
    /// The plan on the finite interval `[l, u]` (`l <= u`) inside the domain.
    fn plan(&self, l: f64, u: f64) -> TangentPlan;
    /// The tangent at `t` as a lower line (see [`Tangent`]).
    fn lower_tangent(&self, t: f64) -> Tangent;
    /// The tangent at `t` as an upper line (see [`Tangent`]).
    fn upper_tangent(&self, t: f64) -> Tangent;
    /// `f'(x)`.
    fn df(&self, x: f64) -> f64;
    /// `f''(t)`: the tangent's value at `x` moves with `t` at rate `f''(t)·(x - t)`.
    fn d2f(&self, t: f64) -> f64;
    /// For a plan with `slope = true`: the lines of slope `k` with the tightest
    /// intercepts on `[l, u]` and their pivots (`chord = false`: the slope is the
    /// parameter). A line's value at `x` moves with `k` at rate `x - c`, `c` its pivot.
    fn slope_relax(&self, _l: f64, _u: f64, _k: f64) -> Option<(Relax, [Option<FixedLine>; 2])> {
        None
    }
}

/// The error of input bounds `[l, u]` outside a function's domain (`what` it needs).
pub fn domain_error(op: &str, what: &str, l: f64, u: f64) -> Error {
    Error::Invalid(format!("{op} needs {what}, but its input bounds are [{l}, {u}]"))
}

/// The exact range of a monotone `f` on `[l, u]`.
pub fn monotone_range(f: &dyn Fn(f64) -> f64, l: f64, u: f64) -> (f64, f64) {
    let (a, b) = (f(l), f(u));
    (a.min(b), a.max(b))
}

/// A boxed function is a function (a plugin may pick its functions at build time).
impl Func for Box<dyn Func> {
    fn op_type(&self) -> &'static str {
        (**self).op_type()
    }
    fn f(&self, x: f64) -> f64 {
        (**self).f(x)
    }
    fn domain(&self, l: f64, u: f64) -> Result<()> {
        (**self).domain(l, u)
    }
    fn range(&self, l: f64, u: f64) -> (f64, f64) {
        (**self).range(l, u)
    }
    fn relax(&self, l: f64, u: f64) -> Relax {
        (**self).relax(l, u)
    }
    fn extra_margin(&self, l: f64, u: f64) -> f64 {
        (**self).extra_margin(l, u)
    }
    fn train_derivative(&self, x: f64) -> Option<f64> {
        (**self).train_derivative(x)
    }
    fn tangents(&self) -> Option<&dyn Tangents> {
        (**self).tangents()
    }
    fn fp_line_bound(&self) -> Option<(f64, f64)> {
        (**self).fp_line_bound()
    }
}

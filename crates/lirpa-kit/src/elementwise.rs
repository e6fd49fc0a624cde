//! The [`Elementwise`] adaptor: a [`Func`] as an operator (every core trait), with its
//! relaxation made sound in floating point by [`crate::line`](mod@crate::line), and α-CROWN parameters
//! for the functions with [`Func::tangents`] (module `opt`).

use crate::func::Func;
use crate::line::{self, Line, Relax, check_values, down, secure_values, to_scalar, up};
use crate::opt;
use lirpa_core::linear::Lines;
use lirpa_core::op::OptimizableRelaxation;
use lirpa_core::op::{BackwardCtx, Evaluate, Interval, IntervalRule, LinearRelaxation, NodeDef, Operator};
use lirpa_core::{
    BackwardResult, BuiltOp, ElementwiseRelaxation, ElementwiseTrain, Error, LinearA, Param, RelaxOptions,
    Result, Scalar, TensorData, TrainRule, Trainable,
};

/// An element-wise operator applying `F` to every element of its one input edge.
#[derive(Debug)]
pub struct Elementwise<F: Func> {
    /// Shared, so that training's copies of the operator share one function object.
    pub func: std::sync::Arc<F>,
    /// The sound `f64` lines of the last input bounds relaxed: a backward pass of every
    /// later node crosses this one with the same bounds, and the lines cost many
    /// function evaluations each.
    last: std::sync::Mutex<Option<RelaxCache>>,
    /// The α-CROWN plans (tangent ranges and secured CROWN lines) of recent input bounds.
    pub(crate) plans: std::sync::Mutex<opt::Plans>,
    /// The lines the optimized rules chose in recent sweeps, for the adjoint sweeps.
    pub(crate) chosen: std::sync::Mutex<opt::ChosenCache>,
}

/// Input bounds and the lines computed for them.
#[derive(Debug)]
struct RelaxCache {
    lower: Vec<f64>,
    upper: Vec<f64>,
    lines: Vec<(Line, Line)>,
}

impl<F: Func> Elementwise<F> {
    pub fn new(func: F) -> Self {
        Self::shared(std::sync::Arc::new(func))
    }

    fn shared(func: std::sync::Arc<F>) -> Self {
        Elementwise {
            func,
            last: std::sync::Mutex::new(None),
            plans: std::sync::Mutex::new(opt::Plans::new(opt::PLAN_CACHE_ENTRIES, usize::MAX)),
            chosen: std::sync::Mutex::new(opt::ChosenCache::new(
                opt::CHOSEN_CACHE_ENTRIES,
                opt::CHOSEN_CACHE_BYTES,
            )),
        }
    }
}

/// NaN bounds are an error; crossed bounds (`l > u`, which rounding in an engine's
/// intersection of two bounds can produce) are treated as the interval between them.
pub(crate) fn check_bounds(op: &str, l: f64, u: f64) -> Result<(f64, f64)> {
    if l.is_nan() || u.is_nan() {
        return Err(Error::Invalid(format!("{op}: invalid input bounds [{l}, {u}]")));
    }
    Ok((l.min(u), l.max(u)))
}

impl<F: Func> Elementwise<F> {
    /// The exact range on `[l, u]`, widened by a few ulps (IBP).
    pub fn interval_f64(&self, l: f64, u: f64) -> Result<(f64, f64)> {
        let op = self.func.op_type();
        let (l, u) = check_bounds(op, l, u)?;
        self.func.domain(l, u)?;
        let (lo, hi) = self.func.range(l, u);
        if lo.is_nan() || hi.is_nan() {
            return Err(Error::Invalid(format!("{op}: no bound on input bounds [{l}, {u}]")));
        }
        // The function itself is evaluated with a few ulps of error (more for erf-based
        // functions, whose error is absolute): widen by the relative margin and the
        // function's absolute one.
        let extra = self.func.extra_margin(l, u);
        Ok((lo - (line::MARGIN * lo.abs() + extra), hi + (line::MARGIN * hi.abs() + extra)))
    }

    /// Sound lower and upper lines on `[l, u]` in `f64`.
    pub fn relax_f64(&self, l: f64, u: f64) -> Result<(Line, Line)> {
        let op = self.func.op_type();
        let (l, u) = check_bounds(op, l, u)?;
        self.func.domain(l, u)?;
        if l.is_finite() && u.is_finite() {
            self.secure_f64(l, u, self.func.relax(l, u))
        } else {
            let (lo, hi) = self.interval_f64(l, u)?;
            self.secure_f64(l, u, Relax::constant(lo, hi))
        }
    }

    /// The lines of `r` on `[l, u]` made sound in floating point ([`secure`] on finite
    /// intervals, where `r` comes from [`Func::relax`]; taken as they are on infinite
    /// ones, where they are the constant bounds of [`interval_f64`](Self::interval_f64)).
    fn secure_f64(&self, l: f64, u: f64, r: Relax) -> Result<(Line, Line)> {
        if !(l.is_finite() && u.is_finite()) {
            return self.secure_known(l, u, r, &[]);
        }
        self.secure_known(l, u, r, &check_values(l, u, &r.contacts, |x| self.func.f(x)))
    }

    /// [`secure_f64`](Self::secure_f64) with the function's values at the check points
    /// given ([`check_values`]; empty on an infinite interval).
    pub(crate) fn secure_known(
        &self,
        l: f64,
        u: f64,
        r: Relax,
        values: &[(f64, f64)],
    ) -> Result<(Line, Line)> {
        let op = self.func.op_type();
        let (lower, upper) = if l.is_finite() && u.is_finite() {
            let extra = self.func.extra_margin(l, u);
            (
                secure_values(r.lower, true, values.iter().copied(), extra),
                secure_values(r.upper, false, values.iter().copied(), extra),
            )
        } else {
            (r.lower, r.upper)
        };
        if !(lower.k.is_finite() && lower.b.is_finite() && upper.k.is_finite() && upper.b.is_finite()) {
            return Err(Error::Invalid(format!(
                "{op}: the linear relaxation on input bounds [{l}, {u}] is not finite (overflow)"
            )));
        }
        Ok((lower, upper))
    }

    /// Sound lines in `f64` converted to `T` (`[lower slope, intercept, upper slope,
    /// intercept]`).
    pub(crate) fn to_lines<T: Scalar>(&self, l: f64, u: f64, lo: Line, hi: Line) -> Result<Lines<T>> {
        let overflow = || {
            Error::Invalid(format!(
                "{}: the linear relaxation on input bounds [{l}, {u}] overflows {}",
                self.func.op_type(),
                T::NAME
            ))
        };
        let (kl, bl) = to_scalar::<T>(lo, true, l, u).ok_or_else(overflow)?;
        let (ku, bu) = to_scalar::<T>(hi, false, l, u).ok_or_else(overflow)?;
        Ok([kl, bl, ku, bu])
    }

    /// The relaxation of every element, in `T`.
    pub fn relaxation<T: Scalar>(&self, lower: &[T], upper: &[T]) -> Result<ElementwiseRelaxation<T>> {
        let n = lower.len();
        let lo64: Vec<f64> = lower.iter().map(|x| x.as_f64()).collect();
        let hi64: Vec<f64> = upper.iter().map(|x| x.as_f64()).collect();
        let mut cache = self.last.lock().expect("relaxation cache");
        let hit = cache.as_ref().is_some_and(|c| c.lower == lo64 && c.upper == hi64);
        if !hit {
            let mut lines = Vec::with_capacity(n);
            for (&l, &u) in lo64.iter().zip(&hi64) {
                let (l, u) = (l.min(u), l.max(u));
                lines.push(self.relax_f64(l, u)?);
            }
            *cache = Some(RelaxCache { lower: lo64, upper: hi64, lines });
        }
        let c = cache.as_ref().expect("filled above");
        let mut r = ElementwiseRelaxation {
            lower_slope: Vec::with_capacity(n),
            lower_intercept: Vec::with_capacity(n),
            upper_slope: Vec::with_capacity(n),
            upper_intercept: Vec::with_capacity(n),
        };
        for ((&l, &u), &(lo, hi)) in c.lower.iter().zip(&c.upper).zip(&c.lines) {
            let (l, u) = (l.min(u), l.max(u));
            let [kl, bl, ku, bu] = self.to_lines::<T>(l, u, lo, hi)?;
            r.lower_slope.push(kl);
            r.lower_intercept.push(bl);
            r.upper_slope.push(ku);
            r.upper_intercept.push(bu);
        }
        Ok(r)
    }
}

impl<T: Scalar, F: Func> Evaluate<T> for Elementwise<F> {
    fn forward(&self, inputs: &[&[T]], out: &mut [T]) -> Result<()> {
        for (o, &x) in out.iter_mut().zip(inputs[0]) {
            *o = T::from_f64(self.func.f(x.as_f64()));
        }
        Ok(())
    }
}

impl<T: Scalar, F: Func> IntervalRule<T> for Elementwise<F> {
    fn interval(&self, inputs: &[Interval<'_, T>], lower: &mut [T], upper: &mut [T]) -> Result<()> {
        for i in 0..lower.len() {
            let (lo, hi) = self.interval_f64(inputs[0].lower[i].as_f64(), inputs[0].upper[i].as_f64())?;
            let (lo, hi) = (down::<T>(lo), up::<T>(hi));
            if lo.is_nan() || hi.is_nan() {
                return Err(Error::Invalid(format!("{}: NaN interval bound", self.func.op_type())));
            }
            lower[i] = lo;
            upper[i] = hi;
        }
        Ok(())
    }
    /// The interval rule computes the exact range (up to outward rounding).
    fn interval_is_tight(&self) -> bool {
        true
    }
}

impl<T: Scalar, F: Func> LinearRelaxation<T> for Elementwise<F> {
    /// The functions with a line bound ([`Func::fp_line_bound`]); the bias sum runs
    /// over every element.
    fn fp_rounding(&self) -> Option<lirpa_core::FpRounding> {
        let (line_scale, offset) = self.func.fp_line_bound()?;
        Some(lirpa_core::FpRounding {
            kind: lirpa_core::FpKind::Elementwise { line_scale, offset },
            terms: None,
        })
    }
    fn backward(&self, ctx: &BackwardCtx<'_, T>, a: LinearA<T>) -> Result<BackwardResult<T>> {
        let b = ctx.bounds(0)?;
        Ok(self.relaxation(b.lower, b.upper)?.backward(a))
    }
    fn needs_input_bounds(&self) -> &[usize] {
        &[0]
    }
    /// The functions with tangent lines ([`Func::tangents`]; see the `opt` module).
    fn optimizable(&self) -> Option<&dyn OptimizableRelaxation<T>> {
        self.func.tangents().is_some().then_some(self as &dyn OptimizableRelaxation<T>)
    }
    /// The non-decreasing functions ([`Func::train_derivative`]: Sigmoid, Tanh,
    /// Atan, Erf).
    fn trainable(&self) -> Option<&dyn Trainable<T>> {
        self.func.train_derivative(0.0).is_some().then_some(self as &dyn Trainable<T>)
    }
    fn elementwise_relaxation(&self, ctx: &BackwardCtx<'_, T>) -> Option<Result<ElementwiseRelaxation<T>>> {
        Some(ctx.bounds(0).and_then(|b| self.relaxation(b.lower, b.upper)))
    }
}

/// Nothing to train; training differentiates through the relaxation's dependence on
/// its input bounds.
impl<T: Scalar, F: Func> Trainable<T> for Elementwise<F> {
    fn params(&self) -> Vec<Param<T>> {
        Vec::new()
    }
    fn with_params(&self, _values: &[&[T]]) -> Result<Box<dyn Operator<T>>> {
        Ok(Box::new(Elementwise::shared(self.func.clone())))
    }
    fn export_param(&self, k: usize, _values: &[T]) -> Result<TensorData> {
        Err(Error::Invalid(format!("{}: no parameter {k}", self.func.op_type())))
    }
    fn rule(&self) -> TrainRule<'_, T> {
        TrainRule::Elementwise(self)
    }
}

impl<T: Scalar, F: Func> ElementwiseTrain<T> for Elementwise<F> {
    fn value_and_derivative(&self, x: &[T], y: &mut [T], dy: &mut [T]) {
        for ((&x, y), dy) in x.iter().zip(y.iter_mut()).zip(dy.iter_mut()) {
            *y = T::from_f64(self.func.f(x.as_f64()));
            *dy = T::from_f64(self.func.train_derivative(x.as_f64()).unwrap_or(0.0));
        }
    }

    /// The operator's own sound relaxation; where it is refused (never for the
    /// non-decreasing functions on finite bounds), the constant lines `f(l)`, `f(u)`.
    fn relax(&self, lower: &[T], upper: &[T], _options: &RelaxOptions) -> ElementwiseRelaxation<T> {
        self.relaxation(lower, upper).unwrap_or_else(|_| {
            let f = |x: &T| T::from_f64(self.func.f(x.as_f64()));
            let n = lower.len();
            ElementwiseRelaxation {
                lower_slope: vec![T::zero(); n],
                lower_intercept: lower.iter().map(f).collect(),
                upper_slope: vec![T::zero(); n],
                upper_intercept: upper.iter().map(f).collect(),
            }
        })
    }

    /// Central differences of the `f64` lines ([`Func::relax`], before the
    /// floating-point widening, which moves them by a relative 1e-12) in `l` and `u`,
    /// with a step of `1e-6·max(1, u − l)` kept inside the interval. The lines are
    /// piecewise smooth in the bounds (a tangent point on auto_LiRPA's grid, a switch
    /// between the tangent and chord cases): a step across a switch is a wrong
    /// derivative for that element, which only makes a training step less exact.
    fn relax_derivatives(&self, lower: &[T], upper: &[T], _options: &RelaxOptions, d: &mut [[T; 8]]) {
        let lines = |l: f64, u: f64| {
            let r = self.func.relax(l, u);
            [r.lower.k, r.lower.b, r.upper.k, r.upper.b]
        };
        for ((&l, &u), d) in lower.iter().zip(upper).zip(d.iter_mut()) {
            *d = [T::zero(); 8];
            let (l, u) = (l.as_f64(), u.as_f64());
            if !(l.is_finite() && u.is_finite() && u > l) {
                continue;
            }
            let h = (1e-6 * (u - l).max(1.0)).min((u - l) / 4.0);
            let (pl, ml, pu, mu) = (lines(l + h, u), lines(l - h, u), lines(l, u + h), lines(l, u - h));
            for t in 0..4 {
                d[t] = T::from_f64((pl[t] - ml[t]) / (2.0 * h));
                d[t + 4] = T::from_f64((pu[t] - mu[t]) / (2.0 * h));
            }
        }
    }
}

impl<T: Scalar, F: Func> Operator<T> for Elementwise<F> {
    fn op_type(&self) -> &str {
        self.func.op_type()
    }
}

/// Build the operator of `func` on a node's one input (what a plugin's builder returns
/// for a unary element-wise function).
pub fn build_unary<T: Scalar>(node: &NodeDef<'_>, func: impl Func) -> Result<BuiltOp<T>> {
    let x = node.input(0)?;
    Ok(BuiltOp::new(Elementwise::new(func), &[0], x.shape.clone()))
}

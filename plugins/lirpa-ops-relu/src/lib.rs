//! Two-piece linear activations `f(x) = max(x, 0) + slope · min(x, 0)`: Relu
//! (`slope = 0`) and LeakyRelu.
//!
//! Relaxation on an input interval `[l, u]`, with `l_r = min(l, 0)` and
//! `u_r = max(u, 0, l_r + 1e-8)` (auto_LiRPA's formulas):
//! - upper line: the chord through `(l_r, f(l_r))` and `(u_r, f(u_r))`;
//! - lower line: through the origin with slope 1 or `slope`, chosen by
//!   [`ReluLowerSlope`] (adaptive: 1 when the chord slope exceeds 0.5, i.e. `u > -l`).
//!
//! Both lines are exact on stable neurons, so the relaxation is sound on `[l, u]`. The
//! upper intercept is raised by any rounding violation measured at the ends.
//!
//! Optimizable (α-CROWN): on unstable neurons (`l < 0 < u`) the lower line's slope α
//! is a free parameter in `[slope, 1]` (any line through the origin with such a slope
//! lies below `f` everywhere), one per element and specification row, initialized to
//! the CROWN choice above. Stable neurons keep their exact lines.

use lirpa_core::linear::{Lines, chosen_line, split_rows, takes_lower_line};
use lirpa_core::op::{
    BackwardCtx, Evaluate, Interval, IntervalRule, LinearRelaxation, NodeDef, Operator,
    OptimizableRelaxation, SideParams,
};
use lirpa_core::recent::Recent;
use lirpa_core::reexport::faer::{Mat, MatRef};
use lirpa_core::{
    BackwardResult, BuiltOp, ElementwiseRelaxation, ElementwiseTrain, FormInput, LinearA, LinearBias,
    LinearForm, Param, RelaxOption, RelaxOptions, Result, Scalar, TensorData, TrainRule, Trainable, Window,
    register_op,
};

register_op!("Relu", build_relu);
register_op!("LeakyRelu", build_leaky_relu);

/// The relaxation option of this plugin: the lower slope on unstable neurons
/// ([`ReluLowerSlope`], by its kebab-case name; absent means `adaptive`).
pub const LOWER_SLOPE: &str = "relu_lower_slope";

lirpa_core::reexport::inventory::submit! {
    RelaxOption {
        key: LOWER_SLOPE,
        plugin: env!("CARGO_PKG_NAME"),
        help: "lower slope of Relu/LeakyRelu on unstable neurons: adaptive, same-slope, zero-lb or one-lb",
        check: |v| v.parse::<ReluLowerSlope>().map(|_| ()),
    }
}

/// Lower-slope choice for unstable two-piece linear activations (auto_LiRPA's
/// `activation_bound_option`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ReluLowerSlope {
    /// Slope 1 where `u > -l`, else the negative-side slope (auto_LiRPA's default).
    #[default]
    Adaptive,
    /// The same slope as the upper line.
    SameSlope,
    /// Always the negative-side slope.
    ZeroLb,
    /// Always slope 1.
    OneLb,
}

impl ReluLowerSlope {
    pub const ALL: [ReluLowerSlope; 4] =
        [ReluLowerSlope::Adaptive, ReluLowerSlope::SameSlope, ReluLowerSlope::ZeroLb, ReluLowerSlope::OneLb];

    /// The name [`RelaxOptions`] stores.
    pub fn name(self) -> &'static str {
        match self {
            ReluLowerSlope::Adaptive => "adaptive",
            ReluLowerSlope::SameSlope => "same-slope",
            ReluLowerSlope::ZeroLb => "zero-lb",
            ReluLowerSlope::OneLb => "one-lb",
        }
    }

    /// The choice in `options` (declared values only get there; the default otherwise).
    pub fn of(options: &RelaxOptions) -> ReluLowerSlope {
        options.get(LOWER_SLOPE).and_then(|v| v.parse().ok()).unwrap_or_default()
    }

    /// Set this choice in `options`.
    pub fn set(self, options: &mut RelaxOptions) -> Result<()> {
        options.set(LOWER_SLOPE, self.name())
    }
}

impl std::str::FromStr for ReluLowerSlope {
    type Err = lirpa_core::Error;
    fn from_str(s: &str) -> Result<ReluLowerSlope> {
        ReluLowerSlope::ALL
            .into_iter()
            .find(|m| m.name() == s)
            .ok_or_else(|| lirpa_core::Error::Invalid(format!("unknown ReLU lower slope '{s}'")))
    }
}

#[derive(Debug)]
pub struct TwoPiece<T: Scalar> {
    op_type: &'static str,
    /// Slope on the negative side (0 for Relu).
    slope: T,
    /// Relaxations of recent input bounds and lower-slope modes: every iteration of
    /// α/β-CROWN crosses the node with the same bounds (a sub-domain's stay fixed), in
    /// its sweep and adjoint.
    recent: std::sync::Mutex<Recent<std::sync::Arc<ElementwiseRelaxation<T>>>>,
}

/// At most this many recent relaxations per operator (a look-up scans them), and
/// this many bytes.
const RECENT_ENTRIES: usize = 128;
const RECENT_BYTES: usize = 32 << 20;

impl<T: Scalar> TwoPiece<T> {
    fn new(op_type: &'static str, slope: T) -> Self {
        TwoPiece { op_type, slope, recent: std::sync::Mutex::new(Recent::new(RECENT_ENTRIES, RECENT_BYTES)) }
    }

    /// [`relaxation`](Self::relaxation), from `recent` when these bounds were relaxed
    /// lately (equal bounds give equal lines: the result is the same).
    fn recent_relaxation(
        &self,
        lower: &[T],
        upper: &[T],
        mode: ReluLowerSlope,
    ) -> std::sync::Arc<ElementwiseRelaxation<T>> {
        let bits = lower.iter().chain(upper).map(|x| x.as_f64().to_bits());
        let key: Vec<u64> = bits.chain([mode as u64]).collect();
        if let Some(r) = self.recent.lock().expect("recent relaxations").get(&key) {
            return r;
        }
        let relaxation = std::sync::Arc::new(self.relaxation(lower, upper, mode));
        let bytes = 4 * lower.len() * std::mem::size_of::<T>();
        self.recent.lock().expect("recent relaxations").put(key, bytes, relaxation.clone());
        relaxation
    }
}

impl<T: Scalar> TwoPiece<T> {
    #[inline]
    fn f(&self, x: T) -> T {
        if x >= T::zero() { x } else { self.slope * x }
    }

    /// The intercept `b` of the chord is a difference of two products of size
    /// `|l_r·d|`: on wide intervals rounding can put the line below `f` at an end by a
    /// few ulps (found by the soundness harness). Measure the violation at both ends in
    /// `f64` (with a fused multiply-add) and raise the intercept by it, rounded up;
    /// exact cases are left untouched.
    fn secure_upper(&self, d: T, b: T, l_r: T, u_r: T) -> T {
        // f in f64 (exact for f32 operands).
        let f = |x: T| if x >= T::zero() { x.as_f64() } else { self.slope.as_f64() * x.as_f64() };
        // For f32 operands the f64 product is exact, so a plain multiply-add measures
        // the same as a fused one; f64 operands need the fused one (a software call
        // without FMA hardware, so it is kept to unstable neurons and to f64).
        let exact_product = T::NAME == "f32";
        let viol = |x: T| {
            let line = if exact_product {
                d.as_f64() * x.as_f64() + b.as_f64()
            } else {
                d.as_f64().mul_add(x.as_f64(), b.as_f64())
            };
            f(x) - line
        };
        let v = viol(l_r).max(viol(u_r));
        if v > 0.0 {
            let nb = T::from_f64(b.as_f64() + v);
            let nb = if nb.as_f64() < b.as_f64() + v { nb.next_up() } else { nb };
            nb.next_up()
        } else {
            b
        }
    }

    /// The element-wise relaxation on `[lower, upper]`.
    pub fn relaxation(&self, lower: &[T], upper: &[T], mode: ReluLowerSlope) -> ElementwiseRelaxation<T> {
        let n = lower.len();
        let mut r = ElementwiseRelaxation {
            lower_slope: Vec::with_capacity(n),
            lower_intercept: vec![T::zero(); n],
            upper_slope: Vec::with_capacity(n),
            upper_intercept: Vec::with_capacity(n),
        };
        let tiny = T::from_f64(1e-8);
        let half = T::from_f64(0.5);
        for (&l, &u) in lower.iter().zip(upper) {
            let (d, b) = if l >= T::zero() {
                // Stable: the line is f itself, exactly (what the formula gives in
                // exact arithmetic, without its rounding).
                (T::one(), T::zero())
            } else if u <= T::zero() {
                (self.slope, T::zero())
            } else {
                let l_r = l.min(T::zero());
                let u_r = u.max(T::zero()).max(l_r + tiny);
                let d = (u_r - self.slope * l_r) / (u_r - l_r);
                let b = -l_r * d + self.slope * l_r;
                (d, self.secure_upper(d, b, l_r, u_r))
            };
            let lower_d = match mode {
                ReluLowerSlope::SameSlope => d,
                ReluLowerSlope::ZeroLb => {
                    if d >= T::one() {
                        T::one()
                    } else {
                        self.slope
                    }
                }
                ReluLowerSlope::OneLb => {
                    if d > self.slope {
                        T::one()
                    } else {
                        self.slope
                    }
                }
                ReluLowerSlope::Adaptive => {
                    if d > half {
                        T::one()
                    } else {
                        self.slope
                    }
                }
            };
            r.upper_slope.push(d);
            r.upper_intercept.push(b);
            r.lower_slope.push(lower_d);
        }
        r
    }
}

impl<T: Scalar> Evaluate<T> for TwoPiece<T> {
    fn forward(&self, inputs: &[&[T]], out: &mut [T]) -> Result<()> {
        for (o, &x) in out.iter_mut().zip(inputs[0]) {
            *o = self.f(x);
        }
        Ok(())
    }
}

impl<T: Scalar> IntervalRule<T> for TwoPiece<T> {
    fn interval(&self, inputs: &[Interval<'_, T>], lower: &mut [T], upper: &mut [T]) -> Result<()> {
        // Monotone non-decreasing for slope >= 0.
        for i in 0..lower.len() {
            lower[i] = self.f(inputs[0].lower[i]);
            upper[i] = self.f(inputs[0].upper[i]);
        }
        Ok(())
    }
    fn interval_is_tight(&self) -> bool {
        true
    }
}

impl<T: Scalar> LinearRelaxation<T> for TwoPiece<T> {
    fn fp_rounding(&self) -> Option<lirpa_core::FpRounding> {
        // Every line (CROWN's or optimized) on `[l, u] ⊆ [−M, M]` has a slope between
        // the two pieces' (|s| ≤ S = max(1, |slope|)) and, through a point of `f` at an
        // end, an intercept of at most 2·S·M (plus the chord's securing margin).
        let s = self.slope.as_f64().abs().max(1.0);
        Some(lirpa_core::FpRounding {
            kind: lirpa_core::FpKind::Elementwise { line_scale: 3.0 * s + 1.0, offset: 0.0 },
            terms: None,
        })
    }
    fn backward(&self, ctx: &BackwardCtx<'_, T>, a: LinearA<T>) -> Result<BackwardResult<T>> {
        let b = ctx.bounds(0)?;
        Ok(self.recent_relaxation(b.lower, b.upper, ReluLowerSlope::of(ctx.options)).backward(a))
    }
    fn needs_input_bounds(&self) -> &[usize] {
        &[0]
    }
    fn refine_mask(&self, _input: usize, lower: &[T], upper: &[T]) -> Option<Vec<bool>> {
        Some(unstable_mask(lower, upper))
    }
    /// Linear on each side of 0, exact on stable inputs.
    fn is_splittable_activation(&self) -> bool {
        true
    }
    /// Element-wise: the sign split works cell by cell on windowed coefficients.
    fn supports_window(&self) -> bool {
        true
    }
    fn optimizable(&self) -> Option<&dyn OptimizableRelaxation<T>> {
        Some(self)
    }
    fn trainable(&self) -> Option<&dyn Trainable<T>> {
        Some(self)
    }
    fn forward_linear(
        &self,
        ctx: &BackwardCtx<'_, T>,
        inputs: &[FormInput<'_, T>],
        n_out: usize,
        _dim: usize,
    ) -> Result<LinearForm<T>> {
        let b = ctx.bounds(0)?;
        let r = self.relaxation(b.lower, b.upper, ReluLowerSlope::of(ctx.options));
        match inputs.first() {
            Some(FormInput::Linear(f)) if f.lw.nrows() == n_out => Ok(r.forward(f)),
            _ => Err(lirpa_core::Error::Invalid("forward mode: the input must carry linear bounds".into())),
        }
    }
    fn elementwise_relaxation(&self, ctx: &BackwardCtx<'_, T>) -> Option<Result<ElementwiseRelaxation<T>>> {
        Some(ctx.bounds(0).map(|b| self.relaxation(b.lower, b.upper, ReluLowerSlope::of(ctx.options))))
    }
}

/// Nothing to train; the gradient flows through the relaxation's dependence on the
/// input bounds.
impl<T: Scalar> Trainable<T> for TwoPiece<T> {
    fn params(&self) -> Vec<Param<T>> {
        Vec::new()
    }
    fn with_params(&self, _values: &[&[T]]) -> Result<Box<dyn Operator<T>>> {
        Ok(Box::new(TwoPiece::new(self.op_type, self.slope)))
    }
    fn export_param(&self, k: usize, _values: &[T]) -> Result<TensorData> {
        Err(lirpa_core::Error::Invalid(format!("{}: no parameter {k}", self.op_type)))
    }
    fn rule(&self) -> TrainRule<'_, T> {
        TrainRule::Elementwise(self)
    }
}

impl<T: Scalar> ElementwiseTrain<T> for TwoPiece<T> {
    fn value_and_derivative(&self, x: &[T], y: &mut [T], dy: &mut [T]) {
        for ((&x, y), dy) in x.iter().zip(y.iter_mut()).zip(dy.iter_mut()) {
            *y = self.f(x);
            *dy = if x >= T::zero() { T::one() } else { self.slope };
        }
    }

    fn relax(&self, lower: &[T], upper: &[T], options: &RelaxOptions) -> ElementwiseRelaxation<T> {
        self.relaxation(lower, upper, ReluLowerSlope::of(options))
    }

    /// Only the upper chord of an unstable element moves with its bounds (the lower
    /// line's slope is a piecewise-constant choice): with `u_r = max(u, l + 1e-8)`,
    /// `d = (u_r - s·l)/(u_r - l)` and intercept `b = (s - d)·l`.
    fn relax_derivatives(&self, lower: &[T], upper: &[T], _options: &RelaxOptions, d: &mut [[T; 8]]) {
        let (one, tiny, s) = (T::one(), T::from_f64(1e-8), self.slope);
        for ((&l, &u), d) in lower.iter().zip(upper).zip(d.iter_mut()) {
            *d = [T::zero(); 8];
            if !unstable(l, u) {
                continue;
            }
            let clipped = u < l + tiny;
            let u_r = if clipped { l + tiny } else { u };
            let den = (u_r - l) * (u_r - l);
            let slope = (u_r - s * l) / (u_r - l);
            let (mut dd_dl, mut dd_du) = (u_r * (one - s) / den, l * (s - one) / den);
            if clipped {
                dd_dl += dd_du;
                dd_du = T::zero();
            }
            d[2] = dd_dl;
            d[3] = s - slope - l * dd_dl;
            d[6] = dd_du;
            d[7] = -l * dd_du;
        }
    }
}

/// The CROWN lines of every element and which elements are unstable: the optimized
/// kernels below read these per column instead of rebuilding lines per cell.
struct Packed<T> {
    unstable: Vec<bool>,
    lines: Vec<Lines<T>>,
}

impl<T: Scalar> Packed<T> {
    /// The value at `z` of the line that coefficient `x` of side `upper` chose for
    /// element `j`, with lower slope `alpha` on unstable elements.
    #[inline]
    fn value(&self, j: usize, x: T, upper: bool, alpha: T, z: T) -> T {
        if self.unstable[j] && takes_lower_line(x, upper) {
            alpha * z
        } else {
            let (s, c) = chosen_line(x, upper, &self.lines[j]);
            s * z + c
        }
    }

    /// The sign split of coefficient `v` of element `j`: multiply it by the chosen
    /// line's slope and add its intercept term to `b` (lower slope `alpha`, intercept
    /// 0, on unstable elements when given; the CROWN lines otherwise).
    #[inline]
    fn split(&self, j: usize, v: &mut T, b: &mut T, upper: bool, alpha: Option<T>) {
        match alpha {
            Some(alpha) if self.unstable[j] && takes_lower_line(*v, upper) => *v *= alpha,
            _ => {
                let (s, c) = chosen_line(*v, upper, &self.lines[j]);
                *b += *v * c;
                *v *= s;
            }
        }
    }

    fn new(crown: &ElementwiseRelaxation<T>, b: &Interval<'_, T>) -> Self {
        let n = b.lower.len();
        Packed { unstable: unstable_mask(b.lower, b.upper), lines: (0..n).map(|j| crown.lines(j)).collect() }
    }
}

/// [`split_rows`] with a row's parameters: the CROWN lines, except that unstable
/// elements whose coefficient takes the lower line use the row's slope `p[r·n + j]`
/// (intercept 0).
fn split_with<T: Scalar>(mut m: Mat<T>, upper: bool, bias: &mut [T], packed: &Packed<T>, p: &[T]) -> Mat<T> {
    let (rows, n) = (m.nrows(), m.ncols());
    const TILE: usize = 16;
    for r0 in (0..rows).step_by(TILE) {
        let r1 = (r0 + TILE).min(rows);
        for j in 0..n {
            let col = &mut m.col_as_slice_mut(j)[r0..r1];
            for (k, (x, b)) in col.iter_mut().zip(&mut bias[r0..r1]).enumerate() {
                packed.split(j, x, b, upper, Some(p[(r0 + k) * n + j]));
            }
        }
    }
    m
}

/// [`split_with`] on windowed coefficients (parameters, if any, indexed by node
/// element); cells outside the node hold zeros and are left alone.
fn split_window_with<T: Scalar>(
    mut m: Mat<T>,
    w: &Window,
    upper: bool,
    bias: &mut [T],
    packed: &Packed<T>,
    p: Option<&[T]>,
) -> Mat<T> {
    let (hw, area, n) = (w.h * w.w, w.ph * w.pw, w.numel());
    for ch in 0..w.c {
        for y in 0..w.ph {
            for x in 0..w.pw {
                let col = m.col_as_slice_mut(ch * area + y * w.pw + x);
                for (r, (v, b)) in col.iter_mut().zip(bias.iter_mut()).enumerate() {
                    let Some((hy, wx)) = w.position(r, y, x) else { continue };
                    let j = ch * hw + hy * w.w + wx;
                    packed.split(j, v, b, upper, p.map(|p| p[r * n + j]));
                }
            }
        }
    }
    m
}

/// `(∂/∂l, ∂/∂u)` of `wx · y`, with `y` the value at `z` of the upper chord of an
/// unstable element on `[l, u]` (negative slope `s`). With `u_r = max(u, l + 1e-8)`,
/// `d = (u_r - s·l)/(u_r - l)` and `y = d·(z - l) + s·l`:
///   ∂y/∂u_r = (z - l)·l·(s - 1)/(u_r - l)²,
///   ∂y/∂l  = (z - l)·u_r·(1 - s)/(u_r - l)² + s - d   (+ ∂y/∂u_r when u_r = l + 1e-8).
#[inline]
fn chord_grad<T: Scalar>(l: T, u: T, s: T, z: T, wx: T) -> (T, T) {
    let tiny = T::from_f64(1e-8);
    let clipped = u < l + tiny;
    let u_r = if clipped { l + tiny } else { u };
    let den = (u_r - l) * (u_r - l);
    let d = (u_r - s * l) / (u_r - l);
    let zl = z - l;
    let dy_du = zl * l * (s - T::one()) / den;
    let dy_dl = zl * u_r * (T::one() - s) / den + s - d;
    if clipped { (wx * (dy_dl + dy_du), T::zero()) } else { (wx * dy_dl, wx * dy_du) }
}

/// Every in-node cell of every row of a windowed matrix, row by row: `f(r, column of
/// the window matrix, node element)`.
fn for_each_window_cell(w: &Window, mut f: impl FnMut(usize, usize, usize)) {
    let (hw, area) = (w.h * w.w, w.ph * w.pw);
    for r in 0..w.rows() {
        for y in 0..w.ph {
            for x in 0..w.pw {
                let Some((hy, wx)) = w.position(r, y, x) else { continue };
                let base = hy * w.w + wx;
                for ch in 0..w.c {
                    f(r, ch * area + y * w.pw + x, ch * hw + base);
                }
            }
        }
    }
}

/// Which elements of bounds `[lower, upper]` are unstable (`l < 0 < u`).
fn unstable_mask<T: Scalar>(lower: &[T], upper: &[T]) -> Vec<bool> {
    lower.iter().zip(upper).map(|(&l, &u)| unstable(l, u)).collect()
}

#[inline]
fn unstable<T: Scalar>(l: T, u: T) -> bool {
    l < T::zero() && u > T::zero()
}

impl<T: Scalar> OptimizableRelaxation<T> for TwoPiece<T> {
    fn init_params(&self, ctx: &BackwardCtx<'_, T>) -> Result<Vec<T>> {
        let b = ctx.bounds(0)?;
        Ok(self.recent_relaxation(b.lower, b.upper, ReluLowerSlope::of(ctx.options)).lower_slope.clone())
    }

    fn supports_window(&self) -> bool {
        true
    }

    fn project(&self, _ctx: &BackwardCtx<'_, T>, row: &mut [T]) {
        for x in row {
            // NaN (never produced by the engine) maps to the CROWN-safe slope 1.
            *x = if x.is_nan() { T::one() } else { x.max(self.slope).min(T::one()) };
        }
    }

    fn backward_with(
        &self,
        ctx: &BackwardCtx<'_, T>,
        a: LinearA<T>,
        params: SideParams<'_, T>,
    ) -> Result<BackwardResult<T>> {
        let b = ctx.bounds(0)?;
        let crown = self.recent_relaxation(b.lower, b.upper, ReluLowerSlope::of(ctx.options));
        let packed = Packed::new(&crown, &b);
        let mut bias = LinearBias::zeros(a.spec());
        let window = a.window;
        let side = |m: Option<Mat<T>>, p: Option<&[T]>, upper: bool, bias: &mut Vec<T>| {
            m.map(|m| match (p, &window) {
                (Some(p), None) => split_with(m, upper, bias, &packed, p),
                (None, None) => split_rows(m, upper, bias, |_, j| crown.lines(j)),
                (p, Some(w)) => split_window_with(m, w, upper, bias, &packed, p),
            })
        };
        let lower = side(a.lower, params.lower, false, &mut bias.lower);
        let upper = side(a.upper, params.upper, true, &mut bias.upper);
        Ok(BackwardResult {
            inputs: lirpa_core::reexport::smallvec::smallvec![Some(LinearA { lower, upper, window })],
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
        let b = ctx.bounds(0)?;
        let crown = self.recent_relaxation(b.lower, b.upper, ReluLowerSlope::of(ctx.options));
        let packed = Packed::new(&crown, &b);
        let n = b.lower.len();
        // Row by row on a row-major copy of `a`: every array is then read in order.
        let at = a.transpose().to_owned();
        for r in 0..a.nrows() {
            let (ar, k) = (at.col_as_slice(r), r * n..(r + 1) * n);
            let (zr, pr, or) = (&z[0][k.clone()], &params[k.clone()], &mut out[k]);
            for j in 0..n {
                or[j] = packed.value(j, ar[j], upper, pr[j], zr[j]);
            }
        }
        Ok(())
    }

    fn param_grad(
        &self,
        ctx: &BackwardCtx<'_, T>,
        _params: &[T],
        a: MatRef<'_, T>,
        upper: bool,
        z: &[&[T]],
        grad: &mut [T],
    ) -> Result<()> {
        // The bound contains `a[r, j] · (α · z[r, j])` where the coefficient took the
        // lower line of an unstable element; elsewhere α does not appear.
        let b = ctx.bounds(0)?;
        let n = b.lower.len();
        let unst = unstable_mask(b.lower, b.upper);
        let at = a.transpose().to_owned();
        for r in 0..a.nrows() {
            let (ar, k) = (at.col_as_slice(r), r * n..(r + 1) * n);
            let (zr, gr) = (&z[0][k.clone()], &mut grad[k]);
            for j in 0..n {
                let x = ar[j];
                gr[j] = if unst[j] && takes_lower_line(x, upper) { x * zr[j] } else { T::zero() };
            }
        }
        Ok(())
    }

    fn bounds_grad(
        &self,
        ctx: &BackwardCtx<'_, T>,
        _params: &[T],
        a: MatRef<'_, T>,
        upper: bool,
        z: &[&[T]],
        weight: &[T],
        grad_lower: &mut [Vec<T>],
        grad_upper: &mut [Vec<T>],
    ) -> Result<()> {
        // Only the chord of unstable elements depends on (l, u) (see `chord_grad`).
        let b = ctx.bounds(0)?;
        let n = b.lower.len();
        let (gl, gu) = (&mut grad_lower[0], &mut grad_upper[0]);
        for j in 0..n {
            let (l, u) = (b.lower[j], b.upper[j]);
            if !unstable(l, u) {
                continue;
            }
            let (mut sl, mut su) = (T::zero(), T::zero());
            for r in 0..a.nrows() {
                let x = a[(r, j)];
                if takes_lower_line(x, upper) || weight[r] == T::zero() {
                    continue; // this coefficient took the lower line
                }
                let (dl, du) = chord_grad(l, u, self.slope, z[0][r * n + j], weight[r] * x);
                sl += dl;
                su += du;
            }
            gl[j] += sl;
            gu[j] += su;
        }
        Ok(())
    }

    fn relaxed_forward_with_window(
        &self,
        ctx: &BackwardCtx<'_, T>,
        params: &[T],
        a: &Mat<T>,
        window: &Window,
        upper: bool,
        z: &[&[T]],
        out: &mut [T],
    ) -> Result<()> {
        let b = ctx.bounds(0)?;
        let crown = self.recent_relaxation(b.lower, b.upper, ReluLowerSlope::of(ctx.options));
        let packed = Packed::new(&crown, &b);
        let (n, z) = (b.lower.len(), z[0]);
        for_each_window_cell(window, |r, col, j| {
            let k = r * n + j;
            out[k] = packed.value(j, a[(r, col)], upper, params[k], z[k]);
        });
        Ok(())
    }

    fn param_grad_window(
        &self,
        ctx: &BackwardCtx<'_, T>,
        _params: &[T],
        a: &Mat<T>,
        window: &Window,
        upper: bool,
        z: &[&[T]],
        grad: &mut [T],
    ) -> Result<()> {
        let b = ctx.bounds(0)?;
        let n = b.lower.len();
        let unst = unstable_mask(b.lower, b.upper);
        grad.fill(T::zero());
        for_each_window_cell(window, |r, col, j| {
            let (x, k) = (a[(r, col)], r * n + j);
            if unst[j] && takes_lower_line(x, upper) {
                grad[k] = x * z[0][k];
            }
        });
        Ok(())
    }

    fn bounds_grad_window(
        &self,
        ctx: &BackwardCtx<'_, T>,
        _params: &[T],
        a: &Mat<T>,
        window: &Window,
        upper: bool,
        z: &[&[T]],
        weight: &[T],
        grad_lower: &mut [Vec<T>],
        grad_upper: &mut [Vec<T>],
    ) -> Result<()> {
        let b = ctx.bounds(0)?;
        let n = b.lower.len();
        let (gl, gu) = (&mut grad_lower[0], &mut grad_upper[0]);
        for_each_window_cell(window, |r, col, j| {
            let (l, u, x) = (b.lower[j], b.upper[j], a[(r, col)]);
            if !unstable(l, u) || takes_lower_line(x, upper) || weight[r] == T::zero() {
                return;
            }
            let (dl, du) = chord_grad(l, u, self.slope, z[0][r * n + j], weight[r] * x);
            gl[j] += dl;
            gu[j] += du;
        });
        Ok(())
    }
}

impl<T: Scalar> Operator<T> for TwoPiece<T> {
    fn op_type(&self) -> &str {
        self.op_type
    }
}

fn build_relu<T: Scalar>(node: &NodeDef<'_>) -> Result<BuiltOp<T>> {
    let x = node.input(0)?;
    Ok(BuiltOp::new(TwoPiece::new("Relu", T::zero()), &[0], x.shape.clone()))
}

fn build_leaky_relu<T: Scalar>(node: &NodeDef<'_>) -> Result<BuiltOp<T>> {
    let x = node.input(0)?;
    let alpha = node.attrs.float_or("alpha", 0.01)?;
    if !(0.0..=1.0).contains(&alpha) {
        return Err(lirpa_core::Error::unimplemented(format!("LeakyRelu with alpha {alpha} outside [0, 1]")));
    }
    Ok(BuiltOp::new(TwoPiece::new("LeakyRelu", T::from_f64(alpha)), &[0], x.shape.clone()))
}

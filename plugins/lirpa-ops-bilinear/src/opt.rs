//! α-CROWN for products of two perturbed tensors (Mul, MatMul) and squares (`Mul(x, x)`).
//!
//! Mul (one product term `x[sx[i]]·y[sy[i]]` per output element `i`) and MatMul (at
//! most [`MATMUL_MAX_TERMS`] terms `x[b, i, t]·y[b, t, j]`, numbered `output·k + t`) get
//! the bilinear parameterization below per product term, from one implementation over
//! their terms ([`ProductTerms`]). A side whose parameters are all 1 uses the operator's
//! CROWN rule itself (MatMul's sums its constants before rounding them), so that
//! iteration 0 is CROWN bit for bit.
//!
//! **Bilinear `x·y`** (auto_LiRPA's `MulHelper.interpolated_relaxation`): every lower
//! plane below `x·y` on the box that touches the convex envelope is a convex combination
//! of the two McCormick lower planes
//!
//! ```text
//!     P1 = y_l·x + x_l·y − x_l·y_l   (CROWN's)       P2 = y_u·x + x_u·y − x_u·y_u
//! ```
//!
//! and every such upper plane one of `Q1 = y_u·x + x_l·y − x_l·y_u` (CROWN's) and
//! `Q2 = y_l·x + x_u·y − x_u·y_l`. The parameter `r ∈ [0, 1]` of a plane weighs the first
//! (`r = 1`, the initialization, is CROWN). Parameters: one row per specification row and
//! side of a pass, `2n` values for `n` output elements: the lower plane's `r` of every
//! element, then the upper plane's.
//!
//! Soundness never depends on `r`: the slopes are interpolated in `f64` and rounded to
//! `T`, then the constant is the tightest one for those rounded slopes, the minimum (lower
//! plane) or maximum (upper plane) of `x·y − α·x − β·y` over the four corners of the box
//! (a bilinear function is extremal at a corner), each corner value widened by `4·ε_64`
//! of its terms' magnitude and the result rounded outward to `T`. In exact arithmetic it
//! equals the interpolated constant. `r = 1` gives CROWN's plane bit for bit.
//!
//! Gradient: the plane is affine in `r`, so `∂(a·plane(z))/∂r = a·((P1 − P2)(z))`; the
//! planes' dependence on the input bounds (`∂P1/∂x_l = y − y_l`, ...) is
//! [`OptimizableRelaxation::bounds_grad`].
//!
//! **Square `x²`** (auto_LiRPA's `BoundSqr`): the upper line is the chord (fixed); the
//! lower line is the tangent at a point `t = l + p·(u − l)` of `[l, u]`, with one
//! parameter `p ∈ [0, 1]` per element and row (initialized at CROWN's point, the point of
//! `[l, u]` nearest 0, which the initial `p` stands for exactly). The relative coordinate
//! keeps Adam's steps proportional to the interval (auto_LiRPA optimizes `t` itself; with
//! its learning rate 0.5 a step then jumps across a narrow interval). A tangent of the
//! convex `x²` lies below it everywhere; its constant `−t² − 4ε_T·t²` is computed in `T`
//! by the CROWN formula, which is sound for any `t`. Gradient `a·2(z − t)·(u − l)`; the
//! chord and the tangent point move with the bounds (`bounds_grad`).

use crate::matmul::MatMulTerms;
use crate::mul::{MulTerms, Square, closest_to_zero, square_upper};
use crate::{Product, by_sides, check_finite, plane};
use faer::{Mat, MatRef};
use lirpa_core::linear::{Lines, forward_rows, split_rows, takes_lower_line};
use lirpa_core::op::{BackwardCtx, Interval, LinearRelaxation, OptimizableRelaxation, SideParams};
use lirpa_core::{BackwardResult, Error, LinearA, LinearBias, Result, Scalar};
use smallvec::smallvec;

/// Round `v` down (`down`) or up to a `T` that is on the right side of it.
fn round_outward<T: Scalar>(v: f64, down: bool) -> T {
    let t = T::from_f64(v);
    if down && t.as_f64() > v {
        t.next_down()
    } else if !down && t.as_f64() < v {
        t.next_up()
    } else {
        t
    }
}

/// The slopes `(α, β)` of the two planes a parameter interpolates, for the lower
/// (`lower`) or the upper plane, and their constants: `((α1, β1, γ1), (α2, β2, γ2))`.
#[inline]
fn ends(lower: bool, xl: f64, xu: f64, yl: f64, yu: f64) -> ((f64, f64, f64), (f64, f64, f64)) {
    if lower { ((yl, xl, -xl * yl), (yu, xu, -xu * yu)) } else { ((yu, xl, -xl * yu), (yl, xu, -xu * yl)) }
}

/// The plane `(α, β, γ)` of side `lower` for the product `x·y`, `x ∈ [xl, xu]`,
/// `y ∈ [yl, yu]`, at parameter `r` (see the module documentation).
pub(crate) fn plane_at<T: Scalar>(lower: bool, r: T, xl: T, xu: T, yl: T, yu: T) -> (T, T, T) {
    if r == T::one() || r.is_nan() {
        return plane(lower, xl, yl, yu);
    }
    let r = r.as_f64().clamp(0.0, 1.0);
    let (xl, xu, yl, yu) = (xl.as_f64(), xu.as_f64(), yl.as_f64(), yu.as_f64());
    let ((a1, b1, _), (a2, b2, _)) = ends(lower, xl, xu, yl, yu);
    let al = T::from_f64(r * a1 + (1.0 - r) * a2);
    let be = T::from_f64(r * b1 + (1.0 - r) * b2);
    let (af, bf) = (al.as_f64(), be.as_f64());
    let tol = 4.0 * f64::EPSILON;
    let mut g = if lower { f64::INFINITY } else { f64::NEG_INFINITY };
    for x in [xl, xu] {
        for y in [yl, yu] {
            let (p, q, s) = (x * y, af * x, bf * y);
            let v = p - q - s;
            let e = tol * (p.abs() + q.abs() + s.abs());
            g = if lower { g.min(v - e) } else { g.max(v + e) };
        }
    }
    (al, be, round_outward(g, lower))
}

/// Largest MatMul of two perturbed tensors (number of product terms) whose planes are
/// optimizable: every pass keeps `2·terms` parameters per row.
pub(crate) const MATMUL_MAX_TERMS: usize = 4096;

/// A product of two perturbed tensors as a sum of product terms `x[px]·y[qy]`, each
/// summed into one output element: all that the optimizable planes (one parameter per
/// term and side) need to know of Mul (one term per output element) and MatMul.
pub trait ProductTerms {
    /// The operator's name in errors.
    const NAME: &'static str;

    /// Numbers of elements of `x` and `y`.
    fn input_sizes(&self) -> (usize, usize);

    /// Number of product terms.
    fn terms(&self) -> usize;

    /// Visit every product term: `(output element, term, x element, y element)`.
    fn for_terms(&self, f: impl FnMut(usize, usize, usize, usize));
}

impl ProductTerms for MulTerms {
    const NAME: &'static str = "Mul";

    fn input_sizes(&self) -> (usize, usize) {
        (self.nx, self.ny)
    }

    fn terms(&self) -> usize {
        self.sx.len()
    }

    /// Term `i` is output element `i`, `x[sx[i]]·y[sy[i]]`.
    fn for_terms(&self, mut f: impl FnMut(usize, usize, usize, usize)) {
        for (i, (&px, &qy)) in self.sx.iter().zip(&self.sy).enumerate() {
            f(i, i, px, qy);
        }
    }
}

impl ProductTerms for MatMulTerms {
    const NAME: &'static str = "MatMul";

    fn input_sizes(&self) -> (usize, usize) {
        (self.nbx * self.m * self.k, self.nby * self.k * self.n)
    }

    fn terms(&self) -> usize {
        self.bx.len() * self.m * self.k * self.n
    }

    /// Terms `x[b, i, t]·y[b, t, j]`, numbered `output·k + t`.
    fn for_terms(&self, mut f: impl FnMut(usize, usize, usize, usize)) {
        let (m, k, n) = (self.m, self.k, self.n);
        for b in 0..self.bx.len() {
            let (xo, yo) = (self.bx[b] * m * k, self.by[b] * k * n);
            for i in 0..m {
                for j in 0..n {
                    let o = (b * m + i) * n + j;
                    for t in 0..k {
                        f(o, o * k + t, xo + i * k + t, yo + t * n + j);
                    }
                }
            }
        }
    }
}

impl<L: ProductTerms> Product<L> {
    fn check_width<T: Scalar>(&self, p: &[T], rows: usize) -> Result<()> {
        let w = 2 * self.terms();
        if p.len() < rows * w {
            return Err(Error::Invalid(format!(
                "{}: {} relaxation parameters for {rows} rows of width {w}",
                L::NAME,
                p.len()
            )));
        }
        Ok(())
    }

    /// Whether a side's parameters are all at CROWN's value: then the CROWN rule itself
    /// is used (MatMul's sums its constants over `t` before rounding them, so that
    /// iteration 0 is CROWN bit for bit; Mul's gives the same planes).
    fn at_crown<T: Scalar>(p: &[T]) -> bool {
        p.iter().all(|&v| v == T::one())
    }
}

/// The plane of side `tl` of term `q` (of `nt`) between `x[px]` and `y[qy]`, at its
/// parameter in `row`.
#[allow(clippy::too_many_arguments)]
#[inline]
fn term_plane<T: Scalar>(
    tl: bool,
    row: &[T],
    nt: usize,
    q: usize,
    x: Interval<'_, T>,
    y: Interval<'_, T>,
    px: usize,
    qy: usize,
) -> (T, T, T) {
    let r = if tl { row[q] } else { row[nt + q] };
    plane_at(tl, r, x.lower[px], x.upper[px], y.lower[qy], y.upper[qy])
}

/// Mul and MatMul: per term, the interpolated planes of the module documentation.
impl<T: Scalar, L: ProductTerms> OptimizableRelaxation<T> for Product<L>
where
    Product<L>: LinearRelaxation<T>,
{
    fn init_params(&self, _ctx: &BackwardCtx<'_, T>) -> Result<Vec<T>> {
        Ok(vec![T::one(); 2 * self.terms()])
    }

    fn project(&self, _ctx: &BackwardCtx<'_, T>, row: &mut [T]) {
        for v in row {
            *v = if v.is_nan() { T::one() } else { v.max(T::zero()).min(T::one()) };
        }
    }

    /// Per side, the CROWN rule for parameters that are missing or all at 1, else every
    /// term's interpolated plane.
    fn backward_with(
        &self,
        ctx: &BackwardCtx<'_, T>,
        a: LinearA<T>,
        params: SideParams<'_, T>,
    ) -> Result<BackwardResult<T>> {
        let (x, y) = (ctx.bounds(0)?, ctx.bounds(1)?);
        for (what, v) in
            [("input 0", x.lower), ("input 0", x.upper), ("input 1", y.lower), ("input 1", y.upper)]
        {
            check_finite(what, v)?;
        }
        let a = a.into_dense();
        let spec = a.spec();
        let nt = self.terms();
        let (nx, ny) = self.input_sizes();
        by_sides(&a, |m, upper, b| match if upper { params.upper } else { params.lower } {
            Some(p) if !Self::at_crown(p) => {
                self.check_width(p, spec)?;
                let mut ax = Mat::<T>::zeros(spec, nx);
                let mut ay = Mat::<T>::zeros(spec, ny);
                self.for_terms(|o, q, px, qy| {
                    for (r, &c) in m.col_as_slice(o).iter().enumerate() {
                        if c == T::zero() {
                            continue;
                        }
                        let tl = takes_lower_line(c, upper);
                        let row = &p[r * 2 * nt..(r + 1) * 2 * nt];
                        let (al, be, ga) = term_plane(tl, row, nt, q, x, y, px, qy);
                        ax[(r, px)] += c * al;
                        ay[(r, qy)] += c * be;
                        b[r] += c * ga;
                    }
                });
                Ok((Some(ax), Some(ay)))
            }
            _ => {
                let one = if upper {
                    LinearA::dense(None, Some(m.clone()))
                } else {
                    LinearA::dense(Some(m.clone()), None)
                };
                let res = LinearRelaxation::backward(self, ctx, one)?;
                let rb = if upper { &res.bias.upper } else { &res.bias.lower };
                b.iter_mut().zip(rb).for_each(|(d, v)| *d += *v);
                let mut it = res.inputs.into_iter();
                let take = |e: Option<LinearA<T>>| e.and_then(|e| if upper { e.upper } else { e.lower });
                Ok((take(it.next().flatten()), take(it.next().flatten())))
            }
        })
    }

    /// Every output element of every row is the sum of its terms' planes at the inputs'
    /// values `z` of that row.
    fn relaxed_forward_with(
        &self,
        ctx: &BackwardCtx<'_, T>,
        params: &[T],
        a: MatRef<'_, T>,
        upper: bool,
        z: &[&[T]],
        out: &mut [T],
    ) -> Result<()> {
        if Self::at_crown(params) {
            return LinearRelaxation::relaxed_forward(self, ctx, a, upper, z, out);
        }
        let (x, y) = (ctx.bounds(0)?, ctx.bounds(1)?);
        self.check_width(params, a.nrows())?;
        let nt = self.terms();
        let no = a.ncols();
        let (nx, ny) = self.input_sizes();
        for r in 0..a.nrows() {
            let row = &params[r * 2 * nt..(r + 1) * 2 * nt];
            let (zx, zy) = (&z[0][r * nx..(r + 1) * nx], &z[1][r * ny..(r + 1) * ny]);
            out[r * no..(r + 1) * no].iter_mut().for_each(|v| *v = T::zero());
            self.for_terms(|o, q, px, qy| {
                let tl = takes_lower_line(a[(r, o)], upper);
                let (al, be, ga) = term_plane(tl, row, nt, q, x, y, px, qy);
                out[r * no + o] += al * zx[px] + be * zy[qy] + ga;
            });
        }
        Ok(())
    }

    /// The plane is affine in its parameter: the derivative is the coefficient times the
    /// difference at `z` of the two planes it interpolates (0 where a parameter is
    /// outside `[0, 1]`).
    fn param_grad(
        &self,
        ctx: &BackwardCtx<'_, T>,
        params: &[T],
        a: MatRef<'_, T>,
        upper: bool,
        z: &[&[T]],
        grad: &mut [T],
    ) -> Result<()> {
        let (x, y) = (ctx.bounds(0)?, ctx.bounds(1)?);
        self.check_width(params, a.nrows())?;
        let nt = self.terms();
        let (nx, ny) = self.input_sizes();
        let f = |v: T| v.as_f64();
        for r in 0..a.nrows() {
            let base = r * 2 * nt;
            grad[base..base + 2 * nt].iter_mut().for_each(|g| *g = T::zero());
            let (zx, zy) = (&z[0][r * nx..(r + 1) * nx], &z[1][r * ny..(r + 1) * ny]);
            self.for_terms(|o, q, px, qy| {
                let c = a[(r, o)];
                if c == T::zero() {
                    return;
                }
                let tl = takes_lower_line(c, upper);
                let k = if tl { q } else { nt + q };
                let p = params[base + k];
                if p.is_nan() || p < T::zero() || p > T::one() {
                    return;
                }
                let ((a1, b1, g1), (a2, b2, g2)) =
                    ends(tl, f(x.lower[px]), f(x.upper[px]), f(y.lower[qy]), f(y.upper[qy]));
                let d = (a1 - a2) * f(zx[px]) + (b1 - b2) * f(zy[qy]) + (g1 - g2);
                grad[base + k] = T::from_f64(f(c) * d);
            });
        }
        Ok(())
    }

    /// Per term:
    ///
    /// ```text
    /// lower: r·P1 + (1 − r)·P2 with P1 = (x − x_l)(y − y_l) gap, P2 = (x − x_u)(y − y_u):
    ///   ∂/∂x_l = r(y − y_l), ∂/∂y_l = r(x − x_l), ∂/∂x_u = (1 − r)(y − y_u), ∂/∂y_u = (1 − r)(x − x_u);
    /// upper: r·Q1 + (1 − r)·Q2, Q1 = y_u x + x_l y − x_l y_u, Q2 = y_l x + x_u y − x_u y_l:
    ///   ∂/∂x_l = r(y − y_u), ∂/∂y_u = r(x − x_l), ∂/∂x_u = (1 − r)(y − y_l), ∂/∂y_l = (1 − r)(x − x_u).
    /// ```
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
        let (x, y) = (ctx.bounds(0)?, ctx.bounds(1)?);
        self.check_width(params, a.nrows())?;
        let nt = self.terms();
        let (nx, ny) = self.input_sizes();
        let f = |v: T| v.as_f64();
        // ∂/∂x_l, ∂/∂x_u, ∂/∂y_l, ∂/∂y_u
        let mut g = [vec![0.0f64; nx], vec![0.0f64; nx], vec![0.0f64; ny], vec![0.0f64; ny]];
        for r in 0..a.nrows() {
            let w = f(weight[r]);
            if w == 0.0 {
                continue;
            }
            let base = r * 2 * nt;
            let (zx, zy) = (&z[0][r * nx..(r + 1) * nx], &z[1][r * ny..(r + 1) * ny]);
            self.for_terms(|o, q, px, qy| {
                let c = a[(r, o)];
                if c == T::zero() {
                    return;
                }
                let tl = takes_lower_line(c, upper);
                let p = params[base + if tl { q } else { nt + q }];
                let qv = if p.is_nan() { 1.0 } else { f(p).clamp(0.0, 1.0) };
                let (zxv, zyv) = (f(zx[px]), f(zy[qy]));
                let (xl, xu, yl, yu) = (f(x.lower[px]), f(x.upper[px]), f(y.lower[qy]), f(y.upper[qy]));
                let wc = w * f(c);
                let d = if tl {
                    [qv * (zyv - yl), (1.0 - qv) * (zyv - yu), qv * (zxv - xl), (1.0 - qv) * (zxv - xu)]
                } else {
                    [qv * (zyv - yu), (1.0 - qv) * (zyv - yl), (1.0 - qv) * (zxv - xu), qv * (zxv - xl)]
                };
                g[0][px] += wc * d[0];
                g[1][px] += wc * d[1];
                g[2][qy] += wc * d[2];
                g[3][qy] += wc * d[3];
            });
        }
        let add = |dst: &mut Vec<T>, src: &[f64]| {
            if dst.len() == src.len() {
                dst.iter_mut().zip(src).for_each(|(d, s)| *d += T::from_f64(*s));
            }
        };
        add(&mut grad_lower[0], &g[0]);
        add(&mut grad_upper[0], &g[1]);
        add(&mut grad_lower[1], &g[2]);
        add(&mut grad_upper[1], &g[3]);
        Ok(())
    }
}

impl Square {
    /// The lines of element `j` with the lower tangent at `t` (CROWN's formula).
    fn lines_at<T: Scalar>(l: T, u: T, t: T) -> Lines<T> {
        let margin = T::from_f64(4.0) * T::epsilon();
        let (us, ui) = square_upper(l, u);
        [t + t, -(t * t) - margin * t * t, us, ui]
    }

    /// The parameter standing for CROWN's point (the point of `[l, u]` nearest 0).
    fn init_p<T: Scalar>(l: T, u: T) -> T {
        let (lf, uf) = (l.as_f64(), u.as_f64());
        if uf > lf {
            T::from_f64(((closest_to_zero(lf, uf) - lf) / (uf - lf)).clamp(0.0, 1.0))
        } else {
            T::zero()
        }
    }

    /// The tangent point of parameter `p` on `[l, u]`: `l + p·(u − l)`, exactly CROWN's
    /// point for the initial parameter.
    fn point<T: Scalar>(p: T, l: T, u: T) -> T {
        if p.is_nan() || p == Self::init_p(l, u) {
            return closest_to_zero(l, u);
        }
        let (lf, uf) = (l.as_f64(), u.as_f64());
        T::from_f64(lf + p.as_f64().clamp(0.0, 1.0) * (uf - lf)).max(l).min(u)
    }

    fn check_width<T: Scalar>(n: usize, p: &[T], rows: usize) -> Result<()> {
        if p.len() < rows * n {
            return Err(Error::Invalid(format!(
                "Mul (square): {} relaxation parameters for {rows} rows of width {n}",
                p.len()
            )));
        }
        Ok(())
    }
}

impl<T: Scalar> OptimizableRelaxation<T> for Square {
    fn init_params(&self, ctx: &BackwardCtx<'_, T>) -> Result<Vec<T>> {
        let x = ctx.bounds(0)?;
        Ok(x.lower.iter().zip(x.upper).map(|(&l, &u)| Self::init_p(l, u)).collect())
    }

    fn project(&self, ctx: &BackwardCtx<'_, T>, row: &mut [T]) {
        let Ok(x) = ctx.bounds(0) else { return };
        for ((v, &l), &u) in row.iter_mut().zip(x.lower).zip(x.upper) {
            *v = if v.is_nan() { Self::init_p(l, u) } else { v.max(T::zero()).min(T::one()) };
        }
    }

    fn backward_with(
        &self,
        ctx: &BackwardCtx<'_, T>,
        a: LinearA<T>,
        params: SideParams<'_, T>,
    ) -> Result<BackwardResult<T>> {
        let x = ctx.bounds(0)?;
        check_finite("input 0", x.lower)?;
        check_finite("input 0", x.upper)?;
        let n = x.lower.len();
        let a = a.into_dense();
        let spec = a.spec();
        let mut bias = LinearBias::zeros(spec);
        let crown: Vec<Lines<T>> = (0..n)
            .map(|j| Self::lines_at(x.lower[j], x.upper[j], closest_to_zero(x.lower[j], x.upper[j])))
            .collect();
        let side = |m: Option<Mat<T>>, p: Option<&[T]>, upper: bool, bias: &mut Vec<T>| -> Result<_> {
            let Some(m) = m else { return Ok(None) };
            Ok(Some(match p {
                Some(p) => {
                    Self::check_width(n, p, m.nrows())?;
                    split_rows(m, upper, bias, |r, j| {
                        let (l, u) = (x.lower[j], x.upper[j]);
                        Self::lines_at(l, u, Self::point(p[r * n + j], l, u))
                    })
                }
                None => split_rows(m, upper, bias, |_, j| crown[j]),
            }))
        };
        let lower = side(a.lower, params.lower, false, &mut bias.lower)?;
        let upper = side(a.upper, params.upper, true, &mut bias.upper)?;
        Ok(BackwardResult { inputs: smallvec![Some(LinearA::dense(lower, upper))], bias })
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
        let x = ctx.bounds(0)?;
        let n = a.ncols();
        Self::check_width(n, params, a.nrows())?;
        forward_rows(a, upper, z[0], out, |r, j| {
            let (l, u) = (x.lower[j], x.upper[j]);
            Self::lines_at(l, u, Self::point(params[r * n + j], l, u))
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
        // The tangent at t moves at rate 2(z − t) and t = l + p·(u − l).
        let x = ctx.bounds(0)?;
        let n = a.ncols();
        Self::check_width(n, params, a.nrows())?;
        for r in 0..a.nrows() {
            for j in 0..n {
                let k = r * n + j;
                grad[k] = T::zero();
                let c = a[(r, j)];
                let p = params[k];
                if c == T::zero()
                    || !takes_lower_line(c, upper)
                    || p.is_nan()
                    || p < T::zero()
                    || p > T::one()
                {
                    continue;
                }
                let (l, u) = (x.lower[j], x.upper[j]);
                let t = Self::point(p, l, u).as_f64();
                let zj = z[0][k].as_f64();
                grad[k] = T::from_f64(c.as_f64() * 2.0 * (zj - t) * (u.as_f64() - l.as_f64()));
            }
        }
        Ok(())
    }

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
        // The chord (l + u)·x − l·u: ∂/∂l = x − u, ∂/∂u = x − l. The tangent point
        // t = l + p·(u − l) moves with the bounds: the tangent's value moves at
        // 2(x − t)·(1 − p) with l and 2(x − t)·p with u.
        let x = ctx.bounds(0)?;
        let n = a.ncols();
        Self::check_width(n, params, a.nrows())?;
        let (gl, gu) = (&mut grad_lower[0], &mut grad_upper[0]);
        if gl.len() != n || gu.len() != n {
            return Ok(());
        }
        for j in 0..n {
            let (lt, ut) = (x.lower[j], x.upper[j]);
            let (l, u) = (lt.as_f64(), ut.as_f64());
            let (mut sl, mut su) = (0.0f64, 0.0f64);
            for r in 0..a.nrows() {
                let c = a[(r, j)];
                if c == T::zero() || weight[r] == T::zero() {
                    continue;
                }
                let wc = weight[r].as_f64() * c.as_f64();
                let zj = z[0][r * n + j].as_f64();
                if takes_lower_line(c, upper) {
                    let p = params[r * n + j];
                    let q = if p.is_nan() { Self::init_p(lt, ut) } else { p.max(T::zero()).min(T::one()) }
                        .as_f64();
                    let t = Self::point(p, lt, ut).as_f64();
                    sl += wc * 2.0 * (zj - t) * (1.0 - q);
                    su += wc * 2.0 * (zj - t) * q;
                } else {
                    sl += wc * (zj - u);
                    su += wc * (zj - l);
                }
            }
            gl[j] += T::from_f64(sl);
            gu[j] += T::from_f64(su);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::matmul::BilinearMatMul;
    use crate::mul::BilinearMul;

    /// A small deterministic generator (xorshift).
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> f64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            (self.0 >> 11) as f64 / (1u64 << 53) as f64
        }
    }

    /// Interpolated planes are sound for any parameter (inside [0, 1], at its ends,
    /// outside it, NaN), in f64 and f32, on boxes of every sign pattern, wide, narrow and
    /// degenerate: `x·y` minus the plane keeps its sign on a grid of the box (the products
    /// checked in f64, exact for f32 operands). `r = 1` is CROWN's plane; `r = 0` is the
    /// other McCormick plane up to the rounding margin.
    #[test]
    fn interpolated_planes_are_sound_for_any_parameter() {
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        for case in 0..3000 {
            let scale = [1e-3, 1.0, 30.0][case % 3];
            let w = [0.0, 1e-7, 0.5, 2.0][(case / 3) % 4];
            let xl = (rng.next() - 0.5) * 2.0 * scale;
            let yl = (rng.next() - 0.5) * 2.0 * scale;
            let (xu, yu) = (xl + w * scale * rng.next(), yl + w * scale * rng.next());
            let r = match case % 7 {
                0 => 1.0,
                1 => 0.0,
                2 => f64::NAN,
                3 => -0.5 - rng.next(),
                4 => 1.5 + rng.next(),
                _ => rng.next(),
            };
            for lower in [true, false] {
                let (a, b, g) = plane_at(lower, r, xl, xu, yl, yu);
                let (xf, xuf, ylf, yuf) = (xl as f32, xu as f32, yl as f32, yu as f32);
                let (a32, b32, g32) = plane_at(lower, r as f32, xf, xuf.max(xf), ylf, yuf.max(ylf));
                for i in 0..=8 {
                    for j in 0..=8 {
                        let x = xl + (xu - xl) * i as f64 / 8.0;
                        let y = yl + (yu - yl) * j as f64 / 8.0;
                        let v = a * x + b * y + g;
                        let tol = 1e-15 * (x * y).abs().max(1e-300);
                        if lower {
                            assert!(
                                v <= x * y + tol,
                                "lower r={r} box [{xl},{xu}]x[{yl},{yu}] at ({x},{y}): {v} > {}",
                                x * y
                            );
                        } else {
                            assert!(
                                v >= x * y - tol,
                                "upper r={r} box [{xl},{xu}]x[{yl},{yu}] at ({x},{y}): {v} < {}",
                                x * y
                            );
                        }
                        // f32: on the f32 box, evaluated exactly-enough in f64.
                        let x = xf as f64 + (xuf.max(xf) as f64 - xf as f64) * i as f64 / 8.0;
                        let y = ylf as f64 + (yuf.max(ylf) as f64 - ylf as f64) * j as f64 / 8.0;
                        let v = a32 as f64 * x + b32 as f64 * y + g32 as f64;
                        let tol = 1e-15 * (x * y).abs().max(1e-300);
                        assert!(
                            if lower { v <= x * y + tol } else { v >= x * y - tol },
                            "f32 lower={lower} r={r} box [{xf},{xuf}]x[{ylf},{yuf}] at ({x},{y})"
                        );
                    }
                }
            }
            if r == 1.0 {
                assert_eq!(plane_at(true, r, xl, xu, yl, yu), plane(true, xl, yl, yu));
                assert_eq!(plane_at(false, r, xl, xu, yl, yu), plane(false, xl, yl, yu));
            }
        }
    }

    /// At `r ∈ (0, 1)` the corner constant equals the interpolated McCormick constant (so
    /// the gradient of the interpolation is the gradient of the plane), up to rounding.
    #[test]
    fn corner_constant_is_the_interpolated_constant() {
        let mut rng = Rng(12345);
        for _ in 0..2000 {
            let (xl, yl) = (rng.next() * 4.0 - 2.0, rng.next() * 4.0 - 2.0);
            let (xu, yu) = (xl + rng.next() * 3.0, yl + rng.next() * 3.0);
            let r = rng.next();
            for lower in [true, false] {
                let ((a1, b1, g1), (a2, b2, g2)) = ends(lower, xl, xu, yl, yu);
                let (a, b, g) = plane_at(lower, r, xl, xu, yl, yu);
                let scale = 1.0 + xl.abs().max(xu.abs()) * yl.abs().max(yu.abs());
                assert!((a - (r * a1 + (1.0 - r) * a2)).abs() < 1e-14 * scale);
                assert!((b - (r * b1 + (1.0 - r) * b2)).abs() < 1e-14 * scale);
                assert!(
                    (g - (r * g1 + (1.0 - r) * g2)).abs() < 1e-13 * scale,
                    "{g} vs {}",
                    r * g1 + (1.0 - r) * g2
                );
            }
        }
    }

    use lirpa_core::op::{Interval, LinearRelaxation, RelaxOptions};

    /// `Σ_o a[r, o]·out[r, o]` (the relaxed forward values weighted by the coefficients)
    /// must equal what the backward rule returned, `Σ_e A_e[r, :]·z_e[r, :] + bias[r]`,
    /// for every row: the adjoint evaluates exactly the lines the backward pass chose.
    #[allow(clippy::too_many_arguments)]
    fn check_adjoint(
        what: &str,
        res: &BackwardResult<f64>,
        upper: bool,
        a: &Mat<f64>,
        z: &[Vec<f64>],
        out: &[f64],
    ) {
        let rows = a.nrows();
        let no = a.ncols();
        let bias = if upper { &res.bias.upper } else { &res.bias.lower };
        for r in 0..rows {
            let lhs: f64 = (0..no).map(|o| a[(r, o)] * out[r * no + o]).sum();
            let mut rhs = bias[r];
            let mut scale = bias[r].abs();
            for (e, ae) in res.inputs.iter().enumerate() {
                let ae = ae.as_ref().unwrap().clone().into_dense();
                let m = if upper { ae.upper.unwrap() } else { ae.lower.unwrap() };
                let ni = m.ncols();
                for c in 0..ni {
                    rhs += m[(r, c)] * z[e][r * ni + c];
                    scale += (m[(r, c)] * z[e][r * ni + c]).abs();
                }
            }
            assert!(
                (lhs - rhs).abs() <= 1e-12 * (1.0 + scale),
                "{what} row {r} upper={upper}: {lhs} vs {rhs}"
            );
        }
    }

    fn random_box(rng: &mut Rng, n: usize) -> (Vec<f64>, Vec<f64>) {
        let l: Vec<f64> = (0..n).map(|_| rng.next() * 4.0 - 2.0).collect();
        let u = l.iter().map(|v| v + if rng.next() < 0.2 { 0.0 } else { rng.next() * 2.0 }).collect();
        (l, u)
    }

    /// For Mul (with broadcasting), the square and MatMul (with a broadcast batch): the
    /// CROWN adjoint (`relaxed_forward`) against `backward`, and for Mul and the square
    /// the optimized adjoint (`relaxed_forward_with`) against `backward_with` at random
    /// parameters, on random bounds, coefficients (mixed signs, zeros) and points.
    #[test]
    fn relaxed_forward_is_the_adjoint_of_backward() {
        let mut rng = Rng(0xDEAD_BEEF_1234_5678);
        let opts = RelaxOptions::default();
        for case in 0..60 {
            // (name, operator, numel of each input, numel of the output)
            let (name, op, shapes, n_out): (&str, Box<dyn LinearRelaxation<f64>>, Vec<usize>, usize) =
                match case % 3 {
                    0 => {
                        ("Mul", Box::new(BilinearMul::new(&[2, 3], &[1, 3], &[2, 3]).unwrap()), vec![6, 3], 6)
                    }
                    1 => ("square", Box::new(Square), vec![5], 5),
                    _ => (
                        "MatMul",
                        Box::new(BilinearMatMul::new(&[2, 2, 3], &[1, 3, 2]).unwrap().0),
                        vec![12, 6],
                        8,
                    ),
                };
            let boxes: Vec<(Vec<f64>, Vec<f64>)> = shapes.iter().map(|&n| random_box(&mut rng, n)).collect();
            let ivs: Vec<Option<Interval<'_, f64>>> = boxes
                .iter()
                .map(|(l, u)| Some(Interval { lower: l.as_slice(), upper: u.as_slice() }))
                .collect();
            let ctx = BackwardCtx { input_bounds: &ivs, options: &opts, par: faer::Par::Seq };
            let rows = 4;
            let a = Mat::<f64>::from_fn(rows, n_out, |_, _| {
                let v = rng.next();
                if v < 0.15 { 0.0 } else { v * 4.0 - 2.0 }
            });
            let z: Vec<Vec<f64>> =
                shapes.iter().map(|&n| (0..rows * n).map(|_| rng.next() * 6.0 - 3.0).collect()).collect();
            let zs: Vec<&[f64]> = z.iter().map(|v| v.as_slice()).collect();
            for upper in [false, true] {
                let la = if upper {
                    LinearA::dense(None, Some(a.clone()))
                } else {
                    LinearA::dense(Some(a.clone()), None)
                };
                let res = op.backward(&ctx, la.clone()).unwrap();
                let mut out = vec![0.0; rows * n_out];
                op.relaxed_forward(&ctx, a.as_ref(), upper, &zs, &mut out).unwrap();
                check_adjoint(name, &res, upper, &a, &z, &out);
                let Some(opt) = op.optimizable() else { continue };
                let mut p: Vec<f64> = Vec::new();
                let init = opt.init_params(&ctx).unwrap();
                for _ in 0..rows {
                    let mut row: Vec<f64> = init.iter().map(|v| v + (rng.next() - 0.5) * 3.0).collect();
                    opt.project(&ctx, &mut row);
                    p.extend(row);
                }
                let sp = if upper {
                    SideParams { lower: None, upper: Some(&p) }
                } else {
                    SideParams { lower: Some(&p), upper: None }
                };
                let res = opt.backward_with(&ctx, la, sp).unwrap();
                opt.relaxed_forward_with(&ctx, &p, a.as_ref(), upper, &zs, &mut out).unwrap();
                check_adjoint(name, &res, upper, &a, &z, &out);
            }
        }
    }
}

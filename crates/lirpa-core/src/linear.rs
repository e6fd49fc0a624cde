//! The linear-function algebra of backward (CROWN) bound propagation.
//!
//! A backward pass carries, for a node `v` with `n` elements and a specification of
//! `s` rows, two matrices `A_l, A_u` of size `s × n` and two bias vectors such that
//! for every reachable value of `v`:
//!
//! ```text
//!     A_l · v + b_l  <=  C · y  <=  A_u · v + b_u
//! ```
//!
//! Matrices are faer `Mat<T>` (column-major): column `j` holds the coefficients of
//! element `j` of the node, so element-wise relaxations scale whole columns.
//! Either side may be absent when only one bound is asked for.

use crate::window::Window;
use crate::{Error, Result, Scalar};
use faer::linalg::matmul::matmul;
use faer::{Accum, Mat, MatRef, Par};
use smallvec::SmallVec;

/// The linear coefficients of a bound with respect to one node.
///
/// With `window: None` (dense form) column `j` is node element `j`. With a
/// [`Window`] the columns are the cells of each row's window (compact form on
/// spatial nodes); only operators that declare
/// [`supports_window`](crate::op::LinearRelaxation::supports_window) ever see it.
#[derive(Clone, Debug)]
pub struct LinearA<T: Scalar> {
    pub lower: Option<Mat<T>>,
    pub upper: Option<Mat<T>>,
    pub window: Option<Window>,
}

/// The constant terms of a bound, one entry per specification row.
#[derive(Clone, Debug, PartialEq)]
pub struct LinearBias<T: Scalar> {
    pub lower: Vec<T>,
    pub upper: Vec<T>,
}

impl<T: Scalar> LinearBias<T> {
    pub fn zeros(spec: usize) -> Self {
        LinearBias { lower: vec![T::zero(); spec], upper: vec![T::zero(); spec] }
    }
    pub fn add_assign(&mut self, other: &LinearBias<T>) {
        add_into(&mut self.lower, &other.lower);
        add_into(&mut self.upper, &other.upper);
    }
}

fn add_into<T: Scalar>(acc: &mut [T], x: &[T]) {
    for (a, b) in acc.iter_mut().zip(x) {
        *a += *b;
    }
}

impl<T: Scalar> LinearA<T> {
    /// The same matrix for both sides (a specification matrix `C`).
    pub fn both(m: Mat<T>, lower: bool, upper: bool) -> Self {
        match (lower, upper) {
            (true, true) => LinearA { lower: Some(m.clone()), upper: Some(m), window: None },
            (true, false) => LinearA { lower: Some(m), upper: None, window: None },
            (false, true) => LinearA { lower: None, upper: Some(m), window: None },
            (false, false) => LinearA { lower: None, upper: None, window: None },
        }
    }

    /// Dense coefficients on each side (no window).
    pub fn dense(lower: Option<Mat<T>>, upper: Option<Mat<T>>) -> Self {
        LinearA { lower, upper, window: None }
    }

    /// The same coefficients in dense form.
    pub fn into_dense(self) -> Self {
        match &self.window {
            None => self,
            Some(w) => LinearA {
                lower: self.lower.as_ref().map(|m| w.to_dense(m)),
                upper: self.upper.as_ref().map(|m| w.to_dense(m)),
                window: None,
            },
        }
    }

    /// Re-express windowed coefficients in the layout `to` (see [`Window::embed`]).
    fn embed(self, to: &Window) -> Self {
        let w = self.window.as_ref().expect("windowed");
        LinearA {
            lower: self.lower.as_ref().map(|m| w.embed(m, to)),
            upper: self.upper.as_ref().map(|m| w.embed(m, to)),
            window: Some(to.clone()),
        }
    }

    /// Number of specification rows.
    pub fn spec(&self) -> usize {
        self.any().map_or(0, |m| m.nrows())
    }

    /// Number of columns (elements of the node the coefficients refer to).
    pub fn cols(&self) -> usize {
        self.any().map_or(0, |m| m.ncols())
    }

    fn any(&self) -> Option<&Mat<T>> {
        self.lower.as_ref().or(self.upper.as_ref())
    }

    /// True when both sides are present and hold the same coefficients, as a
    /// specification does until the first relaxation splits them: an affine operator
    /// then needs one product instead of two.
    pub fn sides_equal(&self) -> bool {
        match (&self.lower, &self.upper) {
            (Some(l), Some(u)) => l.nrows() == u.nrows() && l.ncols() == u.ncols() && l == u,
            _ => false,
        }
    }

    /// Apply the same exact linear map to both sides (for affine operators), once when
    /// the sides are equal.
    pub fn map(self, mut f: impl FnMut(&Mat<T>) -> Result<Mat<T>>) -> Result<Self> {
        if self.sides_equal() {
            let m = f(self.lower.as_ref().expect("both sides"))?;
            return Ok(LinearA { lower: Some(m.clone()), upper: Some(m), window: self.window.clone() });
        }
        Ok(LinearA {
            lower: self.lower.as_ref().map(&mut f).transpose()?,
            upper: self.upper.as_ref().map(&mut f).transpose()?,
            window: self.window.clone(),
        })
    }

    /// Sum at fan-out: a node's coefficients are the sum of what all its consumers send.
    /// Windowed terms are brought to a common layout first (their union, or dense).
    pub fn add_assign(&mut self, mut other: LinearA<T>) -> Result<()> {
        if self.window != other.window {
            let common = match (&self.window, &other.window) {
                (Some(a), Some(b)) => a.union(b).filter(|u| !u.covers_node()),
                _ => None,
            };
            let this = std::mem::replace(self, LinearA::dense(None, None));
            match common {
                Some(u) => {
                    *self = this.embed(&u);
                    other = other.embed(&u);
                }
                None => {
                    *self = this.into_dense();
                    other = other.into_dense();
                }
            }
        }
        fn side<T: Scalar>(acc: &mut Option<Mat<T>>, x: Option<Mat<T>>) -> Result<()> {
            match (acc.as_mut(), x) {
                (_, None) => {}
                (None, Some(x)) => *acc = Some(x),
                (Some(a), Some(x)) => {
                    if a.nrows() != x.nrows() || a.ncols() != x.ncols() {
                        return Err(Error::Shape(format!(
                            "adding coefficient matrices {}x{} and {}x{}",
                            a.nrows(),
                            a.ncols(),
                            x.nrows(),
                            x.ncols()
                        )));
                    }
                    *a += &x;
                }
            }
            Ok(())
        }
        side(&mut self.lower, other.lower)?;
        side(&mut self.upper, other.upper)
    }

    /// Rows `rows` of each side (same window): one group's share of a batch of
    /// stacked specifications.
    pub fn row_block(&self, rows: std::ops::Range<usize>) -> Self {
        let side = |m: &Option<Mat<T>>| {
            m.as_ref().map(|m| m.as_ref().subrows(rows.start, rows.end - rows.start).to_owned())
        };
        let window = self.window.as_ref().map(|w| w.row_block(rows.clone()));
        LinearA { lower: side(&self.lower), upper: side(&self.upper), window }
    }

    /// Stack row blocks (the inverse of [`row_block`](Self::row_block)): the parts come
    /// in row order. Parts whose windows differ in geometry are brought to dense form; a side is
    /// present when it is present in every part.
    pub fn vstack(parts: Vec<LinearA<T>>) -> Result<Self> {
        // Windows of one geometry stack (each row keeps its corner); others go dense.
        let geometry = |w: &Option<Window>| w.as_ref().map(|w| (w.c, w.h, w.w, w.ph, w.pw));
        let same = parts.windows(2).all(|p| geometry(&p[0].window) == geometry(&p[1].window));
        let parts: Vec<LinearA<T>> =
            if same { parts } else { parts.into_iter().map(LinearA::into_dense).collect() };
        let window = parts.first().and_then(|p| p.window.clone()).map(|w| Window {
            oh: parts
                .iter()
                .flat_map(|p| p.window.as_ref().map_or(&[][..], |w| &w.oh[..]))
                .copied()
                .collect(),
            ow: parts
                .iter()
                .flat_map(|p| p.window.as_ref().map_or(&[][..], |w| &w.ow[..]))
                .copied()
                .collect(),
            ..w
        });
        let cols = parts.iter().map(LinearA::cols).max().unwrap_or(0);
        let side = |pick: fn(&LinearA<T>) -> Option<&Mat<T>>| -> Result<Option<Mat<T>>> {
            if parts.iter().any(|p| pick(p).is_none()) {
                return Ok(None);
            }
            let rows: usize = parts.iter().map(|p| pick(p).map_or(0, |m| m.nrows())).sum();
            let mut out = Mat::<T>::zeros(rows, cols);
            let mut r0 = 0;
            for m in parts.iter().filter_map(pick) {
                if m.ncols() != cols {
                    return Err(Error::Shape(format!(
                        "stacking coefficient blocks of {} and {cols} columns",
                        m.ncols()
                    )));
                }
                out.as_mut().subrows_mut(r0, m.nrows()).copy_from(m.as_ref());
                r0 += m.nrows();
            }
            Ok(Some(out))
        };
        Ok(LinearA { lower: side(|p| p.lower.as_ref())?, upper: side(|p| p.upper.as_ref())?, window })
    }

    /// `A · v` for a constant `v` on each side (contribution of an unperturbed input).
    pub fn times_vector(&self, v: &[T]) -> LinearBias<T> {
        let spec = self.spec();
        let side = |m: &Option<Mat<T>>| match (m, &self.window) {
            (None, _) => vec![T::zero(); spec],
            (Some(m), None) => mat_vec(m.as_ref(), v),
            (Some(m), Some(w)) => w.times_vector(m, v),
        };
        LinearBias { lower: side(&self.lower), upper: side(&self.upper) }
    }
}

/// What an operator's backward rule returns: coefficients for each of its inputs
/// (`None` where an input receives nothing) and the bias it adds.
#[derive(Clone, Debug)]
pub struct BackwardResult<T: Scalar> {
    pub inputs: SmallVec<[Option<LinearA<T>>; 2]>,
    pub bias: LinearBias<T>,
}

impl<T: Scalar> BackwardResult<T> {
    /// Stack the results of row blocks ([`LinearA::row_block`]) in row order: input `k`
    /// receives coefficients when any block sends some (zero rows elsewhere).
    pub fn vstack(parts: Vec<BackwardResult<T>>, cols: &[usize]) -> Result<Self> {
        let mut bias = LinearBias { lower: Vec::new(), upper: Vec::new() };
        let n_in = parts.iter().map(|p| p.inputs.len()).max().unwrap_or(0);
        let mut blocks: Vec<Vec<Option<LinearA<T>>>> = (0..n_in).map(|_| Vec::new()).collect();
        let mut sides = (false, false);
        let mut spec = Vec::new();
        for p in parts {
            spec.push(p.bias.lower.len().max(p.bias.upper.len()));
            bias.lower.extend(p.bias.lower);
            bias.upper.extend(p.bias.upper);
            for (k, b) in blocks.iter_mut().enumerate() {
                let a = p.inputs.get(k).cloned().flatten();
                if let Some(a) = &a {
                    sides.0 |= a.lower.is_some();
                    sides.1 |= a.upper.is_some();
                }
                b.push(a);
            }
        }
        let inputs = blocks
            .into_iter()
            .enumerate()
            .map(|(k, b)| {
                if b.iter().all(Option::is_none) {
                    return Ok(None);
                }
                let n = cols.get(k).copied().unwrap_or(0);
                let filled = b
                    .into_iter()
                    .zip(&spec)
                    .map(|(a, &rows)| {
                        let zeros = || Mat::zeros(rows, n);
                        match a {
                            Some(a) if a.lower.is_some() == sides.0 && a.upper.is_some() == sides.1 => a,
                            Some(a) => {
                                let a = a.into_dense();
                                LinearA::dense(
                                    sides.0.then(|| a.lower.unwrap_or_else(zeros)),
                                    sides.1.then(|| a.upper.unwrap_or_else(zeros)),
                                )
                            }
                            None => LinearA::dense(sides.0.then(zeros), sides.1.then(zeros)),
                        }
                    })
                    .collect();
                LinearA::vstack(filled).map(Some)
            })
            .collect::<Result<_>>()?;
        Ok(BackwardResult { inputs, bias })
    }

    /// A single input and no bias.
    pub fn single(a: LinearA<T>) -> Self {
        let spec = a.spec();
        BackwardResult { inputs: smallvec::smallvec![Some(a)], bias: LinearBias::zeros(spec) }
    }
}

/// Pick sequential execution for small products: rayon costs more than it saves there.
pub fn par_for(m: usize, n: usize, k: usize, par: Par) -> Par {
    if m.saturating_mul(n).saturating_mul(k) < (1 << 20) { Par::Seq } else { par }
}

/// `a · b`.
pub fn matmul_new<T: Scalar>(a: MatRef<'_, T>, b: MatRef<'_, T>, par: Par) -> Mat<T> {
    let mut out = Mat::<T>::zeros(a.nrows(), b.ncols());
    matmul(out.as_mut(), Accum::Replace, a, b, T::one(), par_for(a.nrows(), b.ncols(), a.ncols(), par));
    out
}

/// `a · v` for a vector `v`.
pub fn mat_vec<T: Scalar>(a: MatRef<'_, T>, v: &[T]) -> Vec<T> {
    debug_assert_eq!(a.ncols(), v.len());
    let mut out = vec![T::zero(); a.nrows()];
    for (j, &vj) in v.iter().enumerate() {
        if vj == T::zero() {
            continue;
        }
        let col = a.col(j);
        for (i, o) in out.iter_mut().enumerate() {
            *o += col[i] * vj;
        }
    }
    out
}

/// Coefficients with respect to an input from coefficients with respect to an output
/// that reads input element `src[i]` at output element `i` (broadcast, gather,
/// transpose, reshape): `A_in[:, src[i]] += A_out[:, i]`.
pub fn scatter_columns<T: Scalar>(a: &Mat<T>, src: &[usize], n_in: usize) -> Mat<T> {
    debug_assert_eq!(a.ncols(), src.len());
    let mut out = Mat::<T>::zeros(a.nrows(), n_in);
    for (i, &j) in src.iter().enumerate() {
        let from = a.col(i);
        let mut to = out.col_mut(j);
        for r in 0..from.nrows() {
            to[r] += from[r];
        }
    }
    out
}

/// Like [`scatter_columns`] with a per-output-element scale: `A_in[:, src[i]] += s[i] · A_out[:, i]`.
pub fn scatter_columns_scaled<T: Scalar>(a: &Mat<T>, src: &[usize], scale: &[T], n_in: usize) -> Mat<T> {
    let mut out = Mat::<T>::zeros(a.nrows(), n_in);
    for (i, &j) in src.iter().enumerate() {
        let s = scale[i];
        if s == T::zero() {
            continue;
        }
        let from = a.col(i);
        let mut to = out.col_mut(j);
        for r in 0..from.nrows() {
            to[r] += s * from[r];
        }
    }
    out
}

/// An element-wise linear relaxation `l_s·x + l_b <= f(x) <= u_s·x + u_b`, one slope
/// and intercept per element. This is how most nonlinear operators express themselves;
/// the sign split is done here, once, for all of them.
#[derive(Clone, Debug, PartialEq)]
pub struct ElementwiseRelaxation<T: Scalar> {
    pub lower_slope: Vec<T>,
    pub lower_intercept: Vec<T>,
    pub upper_slope: Vec<T>,
    pub upper_intercept: Vec<T>,
}

impl<T: Scalar> ElementwiseRelaxation<T> {
    /// Propagate coefficients through the relaxation. For the lower bound, positive
    /// coefficients take the lower line and negative ones the upper line; the upper
    /// bound does the opposite.
    /// Works on dense and windowed coefficients alike.
    pub fn backward(&self, a: LinearA<T>) -> BackwardResult<T> {
        let spec = a.spec();
        let mut bias = LinearBias::zeros(spec);
        let win = a.window.as_ref();
        let lower = a.lower.map(|m| {
            self.split(
                m,
                win,
                &mut bias.lower,
                (&self.lower_slope, &self.lower_intercept),
                (&self.upper_slope, &self.upper_intercept),
            )
        });
        let upper = a.upper.map(|m| {
            self.split(
                m,
                win,
                &mut bias.upper,
                (&self.upper_slope, &self.upper_intercept),
                (&self.lower_slope, &self.lower_intercept),
            )
        });
        BackwardResult { inputs: smallvec::smallvec![Some(LinearA { lower, upper, window: a.window })], bias }
    }

    fn split(
        &self,
        m: Mat<T>,
        win: Option<&Window>,
        bias: &mut [T],
        pos: (&[T], &[T]),
        neg: (&[T], &[T]),
    ) -> Mat<T> {
        match win {
            None => self.split_dense(m, bias, pos, neg),
            Some(w) => self.split_window(m, w, bias, pos, neg),
        }
    }

    fn split_window(
        &self,
        mut m: Mat<T>,
        w: &Window,
        bias: &mut [T],
        pos: (&[T], &[T]),
        neg: (&[T], &[T]),
    ) -> Mat<T> {
        let zero = T::zero();
        let (hw, area) = (w.h * w.w, w.ph * w.pw);
        // Column by column (faer matrices are column-major); cells outside the node
        // hold zero and stay zero.
        for ch in 0..w.c {
            for y in 0..w.ph {
                for x in 0..w.pw {
                    let col = m.col_as_slice_mut(ch * area + y * w.pw + x);
                    for (r, (v, b)) in col.iter_mut().zip(bias.iter_mut()).enumerate() {
                        let xv = *v;
                        if xv == zero {
                            continue;
                        }
                        let Some((hy, wx)) = w.position(r, y, x) else { continue };
                        let j = ch * hw + hy * w.w + wx;
                        if xv > zero {
                            *b += xv * pos.1[j];
                            *v = xv * pos.0[j];
                        } else {
                            *b += xv * neg.1[j];
                            *v = xv * neg.0[j];
                        }
                    }
                }
            }
        }
        m
    }

    fn split_dense(&self, mut m: Mat<T>, bias: &mut [T], pos: (&[T], &[T]), neg: (&[T], &[T])) -> Mat<T> {
        let zero = T::zero();
        for j in 0..m.ncols() {
            let (ps, pb, ns, nb) = (pos.0[j], pos.1[j], neg.0[j], neg.1[j]);
            let col = m.col_as_slice_mut(j);
            if ps == ns && pb == zero && nb == zero {
                // Same line on both sides (stable neuron): a plain scaling.
                if ps != T::one() {
                    col.iter_mut().for_each(|x| *x *= ps);
                }
                continue;
            }
            for (x, b) in col.iter_mut().zip(bias.iter_mut()) {
                if *x >= zero {
                    *b += *x * pb;
                    *x *= ps;
                } else {
                    *b += *x * nb;
                    *x *= ns;
                }
            }
        }
        m
    }
}

/// The two lines of an element-wise relaxation at one (row, element):
/// `[lower slope, lower intercept, upper slope, upper intercept]`.
pub type Lines<T> = [T; 4];

/// Whether a coefficient `x` of side `upper_side` takes the lower line: a non-negative
/// coefficient of a lower bound or a negative one of an upper bound. The same rule as
/// [`ElementwiseRelaxation::backward`].
#[inline]
pub fn takes_lower_line<T: Scalar>(x: T, upper_side: bool) -> bool {
    (x >= T::zero()) != upper_side
}

/// The line (`(slope, intercept)`) a coefficient `x` of side `upper_side` takes (see
/// [`takes_lower_line`]).
#[inline]
pub fn chosen_line<T: Scalar>(x: T, upper_side: bool, l: &Lines<T>) -> (T, T) {
    pick_side(l, takes_lower_line(x, upper_side))
}

/// Sign split of one side's dense coefficients `m` with lines that may differ per row
/// (optimized relaxations): `lines(r, j)` gives the lines of element `j` for row `r`.
/// Adds the intercepts to `bias` and returns the coefficients on the input.
pub fn split_rows<T: Scalar>(
    m: Mat<T>,
    upper_side: bool,
    bias: &mut [T],
    lines: impl Fn(usize, usize) -> Lines<T>,
) -> Mat<T> {
    split_rows_by_side(m, upper_side, bias, |r, j, lower| pick_side(&lines(r, j), lower))
}

/// [`split_rows`] for relaxations that compute only the line a coefficient takes:
/// `line(r, j, lower)` is the lower (`lower = true`, see [`takes_lower_line`]) or
/// upper line `(slope, intercept)` of element `j` for row `r`.
pub fn split_rows_by_side<T: Scalar>(
    mut m: Mat<T>,
    upper_side: bool,
    bias: &mut [T],
    line: impl Fn(usize, usize, bool) -> (T, T),
) -> Mat<T> {
    // `m` is column-major while per-row lines are usually stored row-major: visit
    // blocks of rows × columns so both stay in cache.
    let (rows, cols) = (m.nrows(), m.ncols());
    for r0 in (0..rows).step_by(ROW_TILE) {
        let r1 = (r0 + ROW_TILE).min(rows);
        for j in 0..cols {
            let col = &mut m.col_as_slice_mut(j)[r0..r1];
            for (k, (x, b)) in col.iter_mut().zip(&mut bias[r0..r1]).enumerate() {
                let (s, c) = line(r0 + k, j, takes_lower_line(*x, upper_side));
                *b += *x * c;
                *x *= s;
            }
        }
    }
    m
}

/// The lower (`lower = true`) or upper line of `l`.
#[inline]
fn pick_side<T: Scalar>(l: &Lines<T>, lower: bool) -> (T, T) {
    if lower { (l[0], l[1]) } else { (l[2], l[3]) }
}

/// Rows per block in the row-wise helpers (see [`split_rows`]).
const ROW_TILE: usize = 16;
/// Columns per block in the row-wise helpers.
const COL_TILE: usize = 64;

/// Visit every `(r, j)` of a `rows × cols` matrix in cache-friendly blocks: a block
/// of `COL_TILE` (64) columns, row by row inside it. Suits loops that read a column-major
/// matrix and row-major arrays together.
#[inline]
pub fn for_each_tiled(rows: usize, cols: usize, mut f: impl FnMut(usize, usize)) {
    for j0 in (0..cols).step_by(COL_TILE) {
        let j1 = (j0 + COL_TILE).min(cols);
        for r0 in (0..rows).step_by(ROW_TILE) {
            let r1 = (r0 + ROW_TILE).min(rows);
            for j in j0..j1 {
                for r in r0..r1 {
                    f(r, j);
                }
            }
        }
    }
}

/// The adjoint of [`split_rows`]: `out[r, j] = s · z[r, j] + c` with the line
/// `(s, c)` that coefficient `a[r, j]` chose. `z` and `out` are row-major
/// `a.nrows() × a.ncols()`.
pub fn forward_rows<T: Scalar>(
    a: MatRef<'_, T>,
    upper_side: bool,
    z: &[T],
    out: &mut [T],
    lines: impl Fn(usize, usize) -> Lines<T>,
) {
    forward_rows_by_side(a, upper_side, z, out, |r, j, lower| pick_side(&lines(r, j), lower))
}

/// [`forward_rows`] with the lines given by side, as in [`split_rows_by_side`].
pub fn forward_rows_by_side<T: Scalar>(
    a: MatRef<'_, T>,
    upper_side: bool,
    z: &[T],
    out: &mut [T],
    line: impl Fn(usize, usize, bool) -> (T, T),
) {
    let n = a.ncols();
    for_each_tiled(a.nrows(), n, |r, j| {
        let (s, c) = line(r, j, takes_lower_line(a[(r, j)], upper_side));
        out[r * n + j] = s * z[r * n + j] + c;
    });
}

impl<T: Scalar> ElementwiseRelaxation<T> {
    /// The lines of element `j`.
    #[inline]
    pub fn lines(&self, j: usize) -> Lines<T> {
        [self.lower_slope[j], self.lower_intercept[j], self.upper_slope[j], self.upper_intercept[j]]
    }

    /// The adjoint of [`backward`](Self::backward) for one side (see
    /// [`LinearRelaxation::relaxed_forward`](crate::op::LinearRelaxation::relaxed_forward)).
    pub fn relaxed_forward(&self, a: MatRef<'_, T>, upper_side: bool, z: &[T], out: &mut [T]) {
        forward_rows(a, upper_side, z, out, |_, j| self.lines(j));
    }
}

/// Linear bounds of a node's elements in terms of the perturbed inputs (forward mode):
/// `lw·x + lb <= v <= uw·x + ub`, one row per element, one column per perturbed input
/// element (all perturbed inputs concatenated).
#[derive(Clone, Debug)]
pub struct LinearForm<T: Scalar> {
    pub lw: Mat<T>,
    pub lb: Vec<T>,
    pub uw: Mat<T>,
    pub ub: Vec<T>,
}

/// An input of a forward-mode rule: an exact value or linear bounds.
#[derive(Clone, Copy, Debug)]
pub enum FormInput<'a, T: Scalar> {
    Exact(&'a [T]),
    Linear(&'a LinearForm<T>),
}

/// Add `al · v` (lower) and `au · v` (upper) to `out`, for a `v` with linear bounds `f`:
/// positive coefficients of the lower side take `f`'s lower bound, negative ones its
/// upper bound, and the opposite for the upper side.
pub fn substitute_form<T: Scalar>(
    out: &mut LinearForm<T>,
    al: &Mat<T>,
    au: &Mat<T>,
    f: &LinearForm<T>,
    par: Par,
) -> Result<()> {
    if al.ncols() != f.lw.nrows() || au.ncols() != f.lw.nrows() {
        return Err(Error::Shape(format!(
            "{} coefficients per row for a value of {} elements",
            al.ncols(),
            f.lw.nrows()
        )));
    }
    let split = |m: &Mat<T>| {
        let pos = Mat::from_fn(m.nrows(), m.ncols(), |i, j| m[(i, j)].max(T::zero()));
        let neg = Mat::from_fn(m.nrows(), m.ncols(), |i, j| m[(i, j)].min(T::zero()));
        (pos, neg)
    };
    let (lp, ln) = split(al);
    let (up, un) = split(au);
    let acc = |dst: &mut Mat<T>, a: &Mat<T>, b: &Mat<T>| {
        let p = par_for(a.nrows(), b.ncols(), a.ncols(), par);
        matmul(dst.as_mut(), Accum::Add, a.as_ref(), b.as_ref(), T::one(), p);
    };
    acc(&mut out.lw, &lp, &f.lw);
    acc(&mut out.lw, &ln, &f.uw);
    acc(&mut out.uw, &up, &f.uw);
    acc(&mut out.uw, &un, &f.lw);
    add_into(&mut out.lb, &mat_vec(lp.as_ref(), &f.lb));
    add_into(&mut out.lb, &mat_vec(ln.as_ref(), &f.ub));
    add_into(&mut out.ub, &mat_vec(up.as_ref(), &f.ub));
    add_into(&mut out.ub, &mat_vec(un.as_ref(), &f.lb));
    Ok(())
}

/// Forward-mode bounds of a node from its backward rule: `res` is what the rule returned
/// for identity coefficients on the node's `n_out` elements (a linear lower and upper
/// bound of each element in terms of its inputs, valid on the inputs' bounds), and the
/// inputs' linear bounds are substituted with the sign split (positive coefficients take
/// the lower bound of an input for the node's lower bound, negative ones its upper).
pub fn forward_from_backward<T: Scalar>(
    res: BackwardResult<T>,
    inputs: &[FormInput<'_, T>],
    n_out: usize,
    dim: usize,
    par: Par,
) -> Result<LinearForm<T>> {
    let mut out = LinearForm {
        lw: Mat::zeros(n_out, dim),
        lb: res.bias.lower,
        uw: Mat::zeros(n_out, dim),
        ub: res.bias.upper,
    };
    for (k, ak) in res.inputs.into_iter().enumerate() {
        let Some(ak) = ak else { continue };
        let ak = ak.into_dense();
        let input = inputs.get(k).ok_or_else(|| {
            Error::Invalid(format!("backward rule returned coefficients for input {k}, which does not exist"))
        })?;
        let (al, au) = match (ak.lower, ak.upper) {
            (Some(l), Some(u)) => (l, u),
            _ => return Err(Error::Invalid("backward rule dropped a side of identity coefficients".into())),
        };
        match input {
            FormInput::Exact(v) => {
                add_into(&mut out.lb, &mat_vec(al.as_ref(), v));
                add_into(&mut out.ub, &mat_vec(au.as_ref(), v));
            }
            FormInput::Linear(f) => substitute_form(&mut out, &al, &au, f, par)?,
        }
    }
    Ok(out)
}

impl<T: Scalar> ElementwiseRelaxation<T> {
    /// The forward-mode rule of an element-wise relaxation: row `j` of the output's
    /// bounds is the input's row `j` scaled by the chosen line's slope (the input's lower
    /// bound for a non-negative slope in the lower line, its upper bound otherwise), plus
    /// the intercept.
    pub fn forward(&self, f: &LinearForm<T>) -> LinearForm<T> {
        let (n, d) = (f.lw.nrows(), f.lw.ncols());
        let mut out = LinearForm {
            lw: Mat::zeros(n, d),
            lb: vec![T::zero(); n],
            uw: Mat::zeros(n, d),
            ub: vec![T::zero(); n],
        };
        for j in 0..n {
            let (ls, us) = (self.lower_slope[j], self.upper_slope[j]);
            let (lsrc, lb) = if ls >= T::zero() { (&f.lw, f.lb[j]) } else { (&f.uw, f.ub[j]) };
            let (usrc, ub) = if us >= T::zero() { (&f.uw, f.ub[j]) } else { (&f.lw, f.lb[j]) };
            for c in 0..d {
                out.lw[(j, c)] = ls * lsrc[(j, c)];
                out.uw[(j, c)] = us * usrc[(j, c)];
            }
            out.lb[j] = ls * lb + self.lower_intercept[j];
            out.ub[j] = us * ub + self.upper_intercept[j];
        }
        out
    }
}

//! The compact (windowed) form of coefficient matrices on spatial nodes.
//!
//! Backward bounds of a convolutional layer's neuron depend only on its receptive field.
//! A dense coefficient matrix over a `[C, H, W]` node costs `spec × C·H·W`; the
//! windowed form keeps, for every specification row, only a `C × ph × pw` window of
//! positions around that row's receptive field, with the window's top-left corner at
//! `(oh[r], ow[r])` in the node's coordinates. All rows share the window size, so an
//! operator whose backward rule is translation invariant (convolution, pooling,
//! element-wise maps, residual additions) maps every row with the same products, as
//! dense matrices do. This is auto_LiRPA's "patches" idea with one twist: the window
//! is per row, so it serves sparse (unstable-only) specifications too.
//!
//! Invariants:
//! - a windowed matrix has `spec` rows and `C·ph·pw` columns, column index
//!   `c·ph·pw + y·pw + x` for cell `(c, y, x)`, which covers node element
//!   `(c, oh[r] + y, ow[r] + x)`;
//! - cells outside the node (`oh[r] + y ∉ [0, H)` or similarly for `x`) hold zero;
//! - lower and upper matrices of one [`LinearA`](crate::LinearA) share the window.
//!
//! The engine converts to dense form where an operator does not understand windows and
//! where a window stops paying (it covers the whole node).

use crate::Scalar;
use faer::Mat;

/// The window layout shared by the lower and upper coefficient matrices of a node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Window {
    /// Channels, height and width of the node (1-D nodes have `h = 1`).
    pub c: usize,
    pub h: usize,
    pub w: usize,
    /// Window height and width.
    pub ph: usize,
    pub pw: usize,
    /// Top-left corner of each row's window in node coordinates (may be negative).
    pub oh: Vec<isize>,
    pub ow: Vec<isize>,
}

/// Channels, height and width of a node shape whose layout is `[1, C, H, W]` or
/// `[1, C, L]` (batch 1); `None` for other shapes.
pub fn spatial_dims(shape: &[usize]) -> Option<(usize, usize, usize)> {
    match shape {
        [1, c, h, w] => Some((*c, *h, *w)),
        [1, c, l] => Some((*c, 1, *l)),
        _ => None,
    }
}

impl Window {
    /// The windows of rows `rows` (a row block of the coefficients, see
    /// [`LinearA::row_block`](crate::LinearA::row_block)).
    pub fn row_block(&self, rows: std::ops::Range<usize>) -> Window {
        Window { oh: self.oh[rows.clone()].to_vec(), ow: self.ow[rows].to_vec(), ..self.clone() }
    }

    /// Number of specification rows.
    pub fn rows(&self) -> usize {
        self.oh.len()
    }

    /// Number of columns of a matrix in this layout.
    pub fn cols(&self) -> usize {
        self.c * self.ph * self.pw
    }

    /// Number of elements of the node.
    pub fn numel(&self) -> usize {
        self.c * self.h * self.w
    }

    /// True when the window is at least as large as the node: the dense form costs no
    /// more and is simpler for everything downstream.
    pub fn covers_node(&self) -> bool {
        self.ph * self.pw >= self.h * self.w
    }

    /// Selection rows `e_j` for node elements `elements`: one row each, a 1×1 window.
    pub fn select<T: Scalar>(c: usize, h: usize, w: usize, elements: &[usize]) -> (Window, Mat<T>) {
        let mut m = Mat::<T>::zeros(elements.len(), c);
        let (mut oh, mut ow) = (Vec::with_capacity(elements.len()), Vec::with_capacity(elements.len()));
        for (r, &j) in elements.iter().enumerate() {
            let (ch, rest) = (j / (h * w), j % (h * w));
            oh.push((rest / w) as isize);
            ow.push((rest % w) as isize);
            m[(r, ch)] = T::one();
        }
        (Window { c, h, w, ph: 1, pw: 1, oh, ow }, m)
    }

    /// Node element covered by cell `(y, x)` (any channel offset added by the caller)
    /// of row `r`, as `(row, col)` in node coordinates, if inside the node.
    #[inline]
    pub fn position(&self, r: usize, y: usize, x: usize) -> Option<(usize, usize)> {
        let hy = self.oh[r] + y as isize;
        let wx = self.ow[r] + x as isize;
        if hy >= 0 && (hy as usize) < self.h && wx >= 0 && (wx as usize) < self.w {
            Some((hy as usize, wx as usize))
        } else {
            None
        }
    }

    /// For every row, the flat node index of each in-node cell of channel 0, and the
    /// cell's window index (`y·pw + x`). Channel `c` adds `c·H·W` and `c·ph·pw`.
    pub fn for_each_cell(&self, r: usize, mut f: impl FnMut(usize, usize)) {
        for y in 0..self.ph {
            for x in 0..self.pw {
                if let Some((hy, wx)) = self.position(r, y, x) {
                    f(y * self.pw + x, hy * self.w + wx);
                }
            }
        }
    }

    /// Dense form (`spec × C·H·W`) of a matrix in this layout.
    pub fn to_dense<T: Scalar>(&self, m: &Mat<T>) -> Mat<T> {
        let (hw, area) = (self.h * self.w, self.ph * self.pw);
        let mut out = Mat::<T>::zeros(m.nrows(), self.numel());
        // Column by column of the window (faer matrices are column-major).
        for ch in 0..self.c {
            for y in 0..self.ph {
                for x in 0..self.pw {
                    let src = m.col_as_slice(ch * area + y * self.pw + x);
                    for (r, &v) in src.iter().enumerate() {
                        if let Some((hy, wx)) = self.position(r, y, x) {
                            out[(r, ch * hw + hy * self.w + wx)] = v;
                        }
                    }
                }
            }
        }
        out
    }

    /// Zero the cells outside the node (restores the invariant after an operator wrote
    /// into padding positions).
    pub fn zero_outside<T: Scalar>(&self, m: &mut Mat<T>) {
        let area = self.ph * self.pw;
        for r in 0..m.nrows() {
            for y in 0..self.ph {
                for x in 0..self.pw {
                    if self.position(r, y, x).is_none() {
                        for ch in 0..self.c {
                            m[(r, ch * area + y * self.pw + x)] = T::zero();
                        }
                    }
                }
            }
        }
    }

    /// `m · v` for a node-shaped vector `v` (the contribution of a constant).
    pub fn times_vector<T: Scalar>(&self, m: &Mat<T>, v: &[T]) -> Vec<T> {
        let (hw, area) = (self.h * self.w, self.ph * self.pw);
        let mut out = vec![T::zero(); m.nrows()];
        // Column by column of the window (faer matrices are column-major).
        for ch in 0..self.c {
            for y in 0..self.ph {
                for x in 0..self.pw {
                    let col = m.col_as_slice(ch * area + y * self.pw + x);
                    for (r, (&a, o)) in col.iter().zip(out.iter_mut()).enumerate() {
                        if let Some((hy, wx)) = self.position(r, y, x) {
                            *o += a * v[ch * hw + hy * self.w + wx];
                        }
                    }
                }
            }
        }
        out
    }

    /// The smallest common layout of two windows on the same node (per row, the
    /// bounding box of both windows), or `None` if they are on different nodes.
    pub fn union(&self, other: &Window) -> Option<Window> {
        if (self.c, self.h, self.w, self.rows()) != (other.c, other.h, other.w, other.rows()) {
            return None;
        }
        if self == other {
            return Some(self.clone());
        }
        let oh: Vec<isize> = self.oh.iter().zip(&other.oh).map(|(a, b)| *a.min(b)).collect();
        let ow: Vec<isize> = self.ow.iter().zip(&other.ow).map(|(a, b)| *a.min(b)).collect();
        let mut ph = 0;
        let mut pw = 0;
        for r in 0..self.rows() {
            let end_h = (self.oh[r] + self.ph as isize).max(other.oh[r] + other.ph as isize);
            let end_w = (self.ow[r] + self.pw as isize).max(other.ow[r] + other.pw as isize);
            ph = ph.max((end_h - oh[r]) as usize);
            pw = pw.max((end_w - ow[r]) as usize);
        }
        Some(Window { c: self.c, h: self.h, w: self.w, ph, pw, oh, ow })
    }

    /// Re-express a matrix of layout `self` in the larger layout `to` (which must
    /// contain every row's window, e.g. from [`Window::union`]).
    pub fn embed<T: Scalar>(&self, m: &Mat<T>, to: &Window) -> Mat<T> {
        if self == to {
            return m.clone();
        }
        let (area, to_area) = (self.ph * self.pw, to.ph * to.pw);
        let mut out = Mat::<T>::zeros(m.nrows(), to.cols());
        for r in 0..m.nrows() {
            let dy = (self.oh[r] - to.oh[r]) as usize;
            let dx = (self.ow[r] - to.ow[r]) as usize;
            for ch in 0..self.c {
                for y in 0..self.ph {
                    for x in 0..self.pw {
                        out[(r, ch * to_area + (y + dy) * to.pw + x + dx)] =
                            m[(r, ch * area + y * self.pw + x)];
                    }
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filled(rows: usize, cols: usize) -> Mat<f64> {
        Mat::from_fn(rows, cols, |i, j| (i * 31 + j * 7) as f64 % 5.0 - 2.0)
    }

    #[test]
    fn select_then_dense_is_the_selection_matrix() {
        let (win, m) = Window::select::<f64>(2, 3, 4, &[0, 5, 23]);
        let d = win.to_dense(&m);
        for (r, &j) in [0usize, 5, 23].iter().enumerate() {
            for k in 0..24 {
                assert_eq!(d[(r, k)], if k == j { 1.0 } else { 0.0 });
            }
        }
    }

    #[test]
    fn embed_in_union_keeps_the_dense_form() {
        let a = Window { c: 2, h: 5, w: 4, ph: 2, pw: 3, oh: vec![-1, 2], ow: vec![0, 1] };
        let b = Window { c: 2, h: 5, w: 4, ph: 3, pw: 1, oh: vec![1, -1], ow: vec![3, 0] };
        let mut ma = filled(2, a.cols());
        a.zero_outside(&mut ma);
        let u = a.union(&b).unwrap();
        assert_eq!(a.to_dense(&ma), u.to_dense(&a.embed(&ma, &u)));
        let v: Vec<f64> = (0..40).map(|i| i as f64 * 0.5 - 3.0).collect();
        let dense = a.to_dense(&ma);
        let direct: Vec<f64> = (0..2).map(|r| (0..40).map(|k| dense[(r, k)] * v[k]).sum()).collect();
        assert_eq!(a.times_vector(&ma, &v), direct);
    }
}

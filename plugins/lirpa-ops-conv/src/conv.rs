//! Convolution (1-D and 2-D; stride, dilation, asymmetric padding, groups), also used
//! for average pooling (a depthwise convolution with a per-position divisor).
//!
//! The backward rule is the transposed convolution applied to every row of the
//! coefficients at once: for each output position and kernel tap, the block of
//! `spec × C_out/g` coefficients is multiplied by the tap's `C_out/g × C_in/g` weight
//! matrix and added to the block of the input position it reads. Dense coefficients and
//! windowed ones (see `lirpa_core::window`) use the same loop; only the frame differs.

use faer::linalg::matmul::matmul;
use faer::{Accum, Mat, MatMut, MatRef, Par};
use lirpa_core::linear::mat_vec;
use lirpa_core::op::{
    BackwardCtx, BatchInput, Evaluate, Interval, IntervalRule, LinearRelaxation, NodeDef, Operator,
};
use lirpa_core::spatial::{Geom, spatial_input};
use lirpa_core::{
    AffineTrain, BackwardResult, BuiltOp, Error, LinearA, LinearBias, Param, Result, Scalar, Shape,
    TensorData, TrainRule, Trainable, Window,
};

/// A convolution `y[co] = scale ⊙ Σ W[co, ci] ⋆ x[ci] + b[co]` on a batch-1 input.
#[derive(Debug)]
pub struct Conv<T> {
    op_type: &'static str,
    ci: usize,
    co: usize,
    groups: usize,
    g: Geom,
    /// Weights `[co][ci/groups][kh][kw]` and their absolute values.
    w: Vec<T>,
    w_abs: Vec<T>,
    /// Per group: the `co/g × (ci/g)·kh·kw` weight matrix, column `i·kh·kw + ky·kw + kx`.
    group_weights: Vec<Mat<T>>,
    /// Bias expanded to the output (`co·ho·wo`), if any entry is non-zero.
    bias_map: Option<Vec<T>>,
    /// Per-output-position factor (`ho·wo`), for average pooling without padding count.
    out_scale: Option<Vec<T>>,
    /// The bias per output channel as given (training keeps an all-zero bias).
    bias: Option<Vec<T>>,
    /// The model's weight shape, for a Conv whose weight is trainable.
    weight_shape: Option<Shape>,
}

impl<T: Scalar> Conv<T> {
    /// Build from weights `[co][ci/groups][kh][kw]` (f64) and an optional bias.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        op_type: &'static str,
        ci: usize,
        co: usize,
        groups: usize,
        g: Geom,
        w: &[f64],
        bias: Option<&[f64]>,
        out_scale: Option<Vec<f64>>,
    ) -> Result<Self> {
        if groups == 0 || !ci.is_multiple_of(groups) || !co.is_multiple_of(groups) {
            return Err(Error::Invalid(format!(
                "group {groups} does not divide {ci} input and {co} output channels"
            )));
        }
        let (cig, cog) = (ci / groups, co / groups);
        let k = g.kh * g.kw;
        if w.len() != co * cig * k {
            return Err(Error::Shape(format!(
                "the weight has {} elements, expected {}",
                w.len(),
                co * cig * k
            )));
        }
        let group_weights = (0..groups)
            .map(|grp| Mat::from_fn(cog, cig * k, |o, j| T::from_f64(w[(grp * cog + o) * cig * k + j])))
            .collect();
        let p = g.ho * g.wo;
        let bias_map = match bias {
            Some(b) if b.iter().any(|&v| v != 0.0) => {
                if b.len() != co {
                    return Err(Error::Shape(format!("the bias has {} elements, expected {co}", b.len())));
                }
                Some((0..co * p).map(|j| T::from_f64(b[j / p])).collect())
            }
            _ => None,
        };
        Ok(Conv {
            op_type,
            ci,
            co,
            groups,
            g,
            w: w.iter().map(|&v| T::from_f64(v)).collect(),
            w_abs: w.iter().map(|&v| T::from_f64(v.abs())).collect(),
            group_weights,
            bias_map,
            out_scale: out_scale.map(|s| s.into_iter().map(T::from_f64).collect()),
            bias: bias.map(|b| b.iter().map(|&v| T::from_f64(v)).collect()),
            weight_shape: None,
        })
    }

    pub fn output_shape(&self, dims: usize) -> Shape {
        if dims == 1 {
            Shape::from_slice(&[1, self.co, self.g.wo])
        } else {
            Shape::from_slice(&[1, self.co, self.g.ho, self.g.wo])
        }
    }

    /// `out = scale ⊙ (w ⋆ x)` (no bias), by im2col and one product per group.
    fn convolve(&self, w: &[T], x: &[T], out: &mut [T]) {
        self.convolve_rows(w, x, 1, out);
    }

    /// [`convolve`](Self::convolve) of `rows` inputs at once (row-major `rows × numel`):
    /// the im2col matrices of a block of rows side by side, one product per group.
    fn convolve_rows(&self, w: &[T], x: &[T], rows: usize, out: &mut [T]) {
        let g = &self.g;
        let (cig, cog) = (self.ci / self.groups, self.co / self.groups);
        let (k, p) = (g.kh * g.kw, g.ho * g.wo);
        let n_out = self.co * p;
        // Rows per block: at most about 2^20 im2col cells.
        let block = ((1usize << 20) / (cig * k * p).max(1)).clamp(1, rows.max(1));
        let valid_w = self.valid_columns();
        // Transposed im2col: one contiguous column per kernel tap, positions down;
        // `im2col` writes every cell, so full blocks reuse one buffer.
        let mut cols = Mat::<T>::new();
        let mut res = Mat::<T>::new();
        for r0 in (0..rows).step_by(block) {
            let nr = block.min(rows - r0);
            if cols.nrows() != nr * p {
                cols = Mat::<T>::zeros(nr * p, cig * k);
                res = Mat::<T>::zeros(nr * p, cog);
            }
            for grp in 0..self.groups {
                self.im2col(x, r0, nr, grp, &valid_w, &mut cols);
                let wg =
                    MatRef::from_row_major_slice(&w[grp * cog * cig * k..][..cog * cig * k], cog, cig * k);
                matmul(res.as_mut(), Accum::Replace, cols.as_ref(), wg.transpose(), T::one(), Par::Seq);
                for o in 0..cog {
                    let src = res.col_as_slice(o);
                    for rr in 0..nr {
                        out[(r0 + rr) * n_out + (grp * cog + o) * p..][..p]
                            .copy_from_slice(&src[rr * p..][..p]);
                    }
                }
            }
        }
        if let Some(s) = &self.out_scale {
            for (j, v) in out[..rows * n_out].iter_mut().enumerate() {
                *v *= s[j % p];
            }
        }
    }

    /// Output columns whose input column is inside the image, per kernel column: a
    /// contiguous range.
    fn valid_columns(&self) -> Vec<(usize, usize)> {
        let g = &self.g;
        (0..g.kw)
            .map(|kx| {
                let ok: Vec<usize> = (0..g.wo).filter(|&xx| g.in_w(xx, kx).is_some()).collect();
                match (ok.first(), ok.last()) {
                    (Some(&a), Some(&b)) => (a, b + 1),
                    _ => (0, 0),
                }
            })
            .collect()
    }

    /// The transposed im2col matrix of rows `r0 .. r0 + nr` of `x` (row-major
    /// `rows × numel`) for group `grp`: row `rr·p + position`, column `tap` (channel
    /// `i` of the group, kernel cell `ky, kx`), zero where the tap reads padding.
    fn im2col(
        &self,
        x: &[T],
        r0: usize,
        nr: usize,
        grp: usize,
        valid_w: &[(usize, usize)],
        cols: &mut Mat<T>,
    ) {
        let g = &self.g;
        let cig = self.ci / self.groups;
        let (p, hw) = (g.ho * g.wo, g.hi * g.wi);
        let n_in = self.ci * hw;
        for i in 0..cig {
            for ky in 0..g.kh {
                for (kx, &(x0, x1)) in valid_w.iter().enumerate() {
                    let tap = (i * g.kh + ky) * g.kw + kx;
                    let col = cols.col_as_slice_mut(tap);
                    for rr in 0..nr {
                        let xc = &x[(r0 + rr) * n_in + (grp * cig + i) * hw..][..hw];
                        for y in 0..g.ho {
                            let dst = &mut col[rr * p + y * g.wo..][..g.wo];
                            let Some(iy) = g.in_h(y, ky) else {
                                dst.fill(T::zero());
                                continue;
                            };
                            let src = &xc[iy * g.wi..][..g.wi];
                            dst[..x0].fill(T::zero());
                            dst[x1..].fill(T::zero());
                            if x1 > x0 {
                                let ix0 = g.in_w(x0, kx).expect("valid column");
                                if g.sw == 1 {
                                    dst[x0..x1].copy_from_slice(&src[ix0..ix0 + (x1 - x0)]);
                                } else {
                                    for (t, d) in dst[x0..x1].iter_mut().enumerate() {
                                        *d = src[ix0 + t * g.sw];
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }

    fn add_bias(&self, out: &mut [T]) {
        if let Some(b) = &self.bias_map {
            out.iter_mut().zip(b).for_each(|(o, b)| *o += *b);
        }
    }

    /// `dst += src` through the transposed convolution. `src` has `co × ph × pw` cells
    /// per row, `dst` has `ci × qh × qw`; source cell `(y, x)` with tap `(ky, kx)` lands
    /// on destination cell `(y·sh + ky·dh − shift_h, x·sw + kx·dw − shift_w)` when that
    /// is inside `qh × qw`. Rows are independent: with a parallel `par` they are split
    /// in blocks across threads.
    fn transpose_acc(
        &self,
        src: MatRef<'_, T>,
        src_frame: (usize, usize),
        dst: MatMut<'_, T>,
        dst_frame: (usize, usize),
        shift: (isize, isize),
        par: Par,
    ) {
        let rows = src.nrows();
        let threads = par.degree();
        // Below this much work per thread, splitting costs more than it saves.
        let work = rows * self.ci * self.co / self.groups * self.g.kh * self.g.kw * src_frame.0 * src_frame.1;
        if threads >= 2 && rows >= 64 && work >= (1 << 22) {
            let half = rows / 2;
            let (s0, s1) = src.split_at_row(half);
            let (d0, d1) = dst.split_at_row_mut(half);
            let sub = Par::rayon(threads.div_ceil(2));
            rayon::join(
                || self.transpose_acc(s0, src_frame, d0, dst_frame, shift, sub),
                || self.transpose_acc(s1, src_frame, d1, dst_frame, shift, sub),
            );
            return;
        }
        self.transpose_acc_seq(src, src_frame, dst, dst_frame, shift);
    }

    fn transpose_acc_seq(
        &self,
        src: MatRef<'_, T>,
        (ph, pw): (usize, usize),
        mut dst: MatMut<'_, T>,
        (qh, qw): (usize, usize),
        (shift_h, shift_w): (isize, isize),
    ) {
        let g = &self.g;
        let rows = src.nrows();
        if rows == 0 {
            return;
        }
        let (cig, cog) = (self.ci / self.groups, self.co / self.groups);
        let k = g.kh * g.kw;
        let kk = cig * k;
        let (sp, dq) = (ph * pw, qh * qw);
        // Source positions per product: the product is `(rows·n) × cog` times
        // `cog × cig·k`; keep its result within a core's L2 cache (256 KiB of f32).
        if cog * cig <= 4 {
            // Depthwise (pooling) and other tiny channel blocks: a product per position
            // would be all overhead; add scaled source columns directly.
            self.transpose_acc_direct(src, (ph, pw), dst, (qh, qw), (shift_h, shift_w));
            return;
        }
        let chunk = ((1usize << 16) / (rows * kk).max(1)).clamp(1, sp);
        let contiguous = src.row_stride() == 1 && src.col_stride() == rows as isize;
        let mut gathered =
            if contiguous { Mat::<T>::zeros(0, 0) } else { Mat::<T>::zeros(rows * chunk, cog) };
        // A flat buffer viewed as a column-major `(rows·chunk) × kk` matrix: one zeroed
        // allocation instead of faer's column-by-column initialization.
        let ld = rows * chunk;
        let mut prod_buf = vec![T::zero(); ld * kk];
        // Destination columns must be contiguous slices; faer matrices are column-major.
        debug_assert_eq!(dst.row_stride(), 1);
        for grp in 0..self.groups {
            let wg = &self.group_weights[grp];
            let mut p0 = 0;
            while p0 < sp {
                let n = chunk.min(sp - p0);
                let m = rows * n;
                // The source block: row `pi·rows + r`, column `o` is src[r, (grp·cog + o)·sp + p0 + pi].
                let s = if contiguous {
                    // SAFETY: with row stride 1 and column stride `rows`, the cells of columns
                    // (grp·cog + o)·sp + p0 .. + n are the `m` consecutive values starting at
                    // ((grp·cog + o)·sp + p0)·rows, for o < cog, all inside `src`.
                    unsafe {
                        MatRef::from_raw_parts(
                            src.as_ptr().add((grp * cog * sp + p0) * rows),
                            m,
                            cog,
                            1,
                            (sp * rows) as isize,
                        )
                    }
                } else {
                    for o in 0..cog {
                        for pi in 0..n {
                            let c = (grp * cog + o) * sp + p0 + pi;
                            for r in 0..rows {
                                gathered[(pi * rows + r, o)] = src[(r, c)];
                            }
                        }
                    }
                    gathered.as_ref().subrows(0, m)
                };
                let prod_mut = MatMut::from_column_major_slice_with_stride_mut(&mut prod_buf, m, kk, ld);
                matmul(prod_mut, Accum::Replace, s, wg.as_ref(), T::one(), Par::Seq);
                let prod = MatRef::from_column_major_slice_with_stride(&prod_buf, m, kk, ld);
                // col2im: scatter each (position, tap) block to the input cell it reads.
                for pi in 0..n {
                    self.for_each_tap(p0 + pi, pw, (qh, qw), (shift_h, shift_w), |t, cell| {
                        let d0 = grp * cig * dq + cell;
                        for i in 0..cig {
                            let from =
                                &prod.col(i * k + t).try_as_col_major().expect("column-major").as_slice()
                                    [pi * rows..][..rows];
                            let to = dst
                                .as_mut()
                                .col_mut(d0 + i * dq)
                                .try_as_col_major_mut()
                                .expect("column-major");
                            for (d, v) in to.as_slice_mut().iter_mut().zip(from) {
                                *d += *v;
                            }
                        }
                    });
                }
                p0 += n;
            }
        }
    }

    /// [`Self::transpose_acc_seq`] without products: for every source cell, tap and
    /// channel pair, `dst[:, d] += w · src[:, s]` on contiguous columns.
    fn transpose_acc_direct(
        &self,
        src: MatRef<'_, T>,
        (ph, pw): (usize, usize),
        mut dst: MatMut<'_, T>,
        (qh, qw): (usize, usize),
        (shift_h, shift_w): (isize, isize),
    ) {
        let g = &self.g;
        let (cig, cog) = (self.ci / self.groups, self.co / self.groups);
        let k = g.kh * g.kw;
        let (sp, dq) = (ph * pw, qh * qw);
        for grp in 0..self.groups {
            let wg = &self.group_weights[grp];
            for o in 0..cog {
                for p in 0..sp {
                    let scol = (grp * cog + o) * sp + p;
                    let from = src.col(scol);
                    self.for_each_tap(p, pw, (qh, qw), (shift_h, shift_w), |t, cell| {
                        for i in 0..cig {
                            let wv = wg[(o, i * k + t)];
                            if wv == T::zero() {
                                continue;
                            }
                            let d = (grp * cig + i) * dq + cell;
                            // Coefficient matrices are column-major: row stride 1.
                            let to = dst.as_mut().col_mut(d).try_as_col_major_mut().expect("column-major");
                            let f = from.try_as_col_major().expect("column-major");
                            for (t, f) in to.as_slice_mut().iter_mut().zip(f.as_slice()) {
                                *t += wv * *f;
                            }
                        }
                    });
                }
            }
        }
    }

    /// For source cell `p` of a `· × pw` frame, every kernel tap `t = ky·kw + kx` whose
    /// destination cell `(p/pw·sh + ky·dh − shift_h, p%pw·sw + kx·dw − shift_w)` lies in
    /// the `qh × qw` frame: `f(t, cell)` with `cell` its flat index.
    #[inline]
    fn for_each_tap(
        &self,
        p: usize,
        pw: usize,
        (qh, qw): (usize, usize),
        (shift_h, shift_w): (isize, isize),
        mut f: impl FnMut(usize, usize),
    ) {
        let g = &self.g;
        let (y, x) = (p / pw, p % pw);
        for ky in 0..g.kh {
            let dy = (y * g.sh + ky * g.dh) as isize - shift_h;
            if dy < 0 || dy as usize >= qh {
                continue;
            }
            for kx in 0..g.kw {
                let dx = (x * g.sw + kx * g.dw) as isize - shift_w;
                if dx < 0 || dx as usize >= qw {
                    continue;
                }
                f(ky * g.kw + kx, dy as usize * qw + dx as usize);
            }
        }
    }

    /// Scale columns by the per-position output factor (pooling divisors).
    fn scale_columns(&self, m: &mut Mat<T>, win: Option<&Window>) {
        let Some(s) = &self.out_scale else { return };
        let p = self.g.ho * self.g.wo;
        match win {
            None => {
                for j in 0..m.ncols() {
                    let f = s[j % p];
                    m.col_as_slice_mut(j).iter_mut().for_each(|v| *v *= f);
                }
            }
            Some(w) => {
                let area = w.ph * w.pw;
                for r in 0..m.nrows() {
                    w.for_each_cell(r, |cell, node| {
                        for ch in 0..w.c {
                            m[(r, ch * area + cell)] *= s[node];
                        }
                    });
                }
            }
        }
    }

    /// Coefficients on the input from coefficients `m` on the output.
    fn backward_side(&self, mut m: Mat<T>, win: Option<&Window>, par: Par) -> (Mat<T>, Vec<T>) {
        let g = &self.g;
        let bias = match (&self.bias_map, win) {
            (None, _) => vec![T::zero(); m.nrows()],
            (Some(b), None) => mat_vec(m.as_ref(), b),
            (Some(b), Some(w)) => {
                // The bias is constant per channel and cells outside the node hold
                // zero, so every cell of a channel's window takes that channel's bias.
                let (p, area) = (g.ho * g.wo, w.ph * w.pw);
                let per_cell: Vec<T> = (0..w.c * area).map(|k| b[(k / area) * p]).collect();
                mat_vec(m.as_ref(), &per_cell)
            }
        };
        self.scale_columns(&mut m, win);
        let out = match win {
            None => {
                let mut dst = Mat::<T>::zeros(m.nrows(), self.ci * g.hi * g.wi);
                let shift = (g.pt as isize, g.pl as isize);
                self.transpose_acc(m.as_ref(), (g.ho, g.wo), dst.as_mut(), (g.hi, g.wi), shift, par);
                dst
            }
            Some(w) => {
                let (qh, qw) = g.input_window(w.ph, w.pw);
                let mut dst = Mat::<T>::zeros(m.nrows(), self.ci * qh * qw);
                self.transpose_acc(m.as_ref(), (w.ph, w.pw), dst.as_mut(), (qh, qw), (0, 0), par);
                dst
            }
        };
        (out, bias)
    }

    /// The window on the input that a window `w` on the output maps to.
    fn input_window(&self, w: &Window) -> Window {
        let g = &self.g;
        let (ph, pw) = g.input_window(w.ph, w.pw);
        Window {
            c: self.ci,
            h: g.hi,
            w: g.wi,
            ph,
            pw,
            oh: w.oh.iter().map(|&o| o * g.sh as isize - g.pt as isize).collect(),
            ow: w.ow.iter().map(|&o| o * g.sw as isize - g.pl as isize).collect(),
        }
    }
}

impl<T: Scalar> Evaluate<T> for Conv<T> {
    fn forward(&self, inputs: &[&[T]], out: &mut [T]) -> Result<()> {
        self.convolve(&self.w, inputs[0], out);
        self.add_bias(out);
        Ok(())
    }

    fn forward_batch(&self, inputs: &[BatchInput<'_, T>], rows: usize, out: &mut [T]) -> Result<()> {
        let BatchInput::Rows(x) = inputs[0] else {
            // One shared input: evaluate it once and repeat.
            let n = out.len() / rows.max(1);
            for r in 0..rows {
                self.forward(&[inputs[0].row(r, rows)], &mut out[r * n..(r + 1) * n])?;
            }
            return Ok(());
        };
        self.convolve_rows(&self.w, x, rows, out);
        if self.bias_map.is_some() {
            let n = out.len() / rows.max(1);
            for r in 0..rows {
                self.add_bias(&mut out[r * n..(r + 1) * n]);
            }
        }
        Ok(())
    }
}

impl<T: Scalar> IntervalRule<T> for Conv<T> {
    fn interval(&self, inputs: &[Interval<'_, T>], lower: &mut [T], upper: &mut [T]) -> Result<()> {
        let half = T::from_f64(0.5);
        let x = inputs[0];
        let mid: Vec<T> = x.lower.iter().zip(x.upper).map(|(&l, &u)| (l + u) * half).collect();
        let rad: Vec<T> = x.lower.iter().zip(x.upper).map(|(&l, &u)| (u - l) * half).collect();
        // A symmetric box (the sound mode's magnitudes) has no centre to convolve.
        if mid.iter().all(|m| *m == T::zero()) {
            lower.iter_mut().for_each(|l| *l = T::zero());
        } else {
            self.convolve(&self.w, &mid, lower);
        }
        self.add_bias(lower);
        self.convolve(&self.w_abs, &rad, upper);
        for (l, u) in lower.iter_mut().zip(upper.iter_mut()) {
            let (m, r) = (*l, *u);
            *l = m - r;
            *u = m + r;
        }
        Ok(())
    }
}

impl<T: Scalar> LinearRelaxation<T> for Conv<T> {
    fn fp_rounding(&self) -> Option<lirpa_core::FpRounding> {
        // Sums over the taps of one output (forward) or of one input (backward), plus
        // the weights' rounding from f64, the per-position scale and the bias.
        let taps = (self.ci + self.co) / self.groups * self.g.kh * self.g.kw;
        Some(lirpa_core::FpRounding {
            kind: lirpa_core::FpKind::Affine,
            terms: Some(taps + lirpa_core::FpRounding::SLACK),
        })
    }
    fn backward(&self, ctx: &BackwardCtx<'_, T>, a: LinearA<T>) -> Result<BackwardResult<T>> {
        let spec = a.spec();
        let win = a.window.as_ref();
        let mut bias = LinearBias::zeros(spec);
        let (lower, upper) = if a.sides_equal() {
            // One product serves both sides (a specification before any relaxation).
            let (m, b) = self.backward_side(a.lower.expect("both sides"), win, ctx.par);
            bias.upper = b.clone();
            bias.lower = b;
            (Some(m.clone()), Some(m))
        } else {
            let lower = a.lower.map(|m| {
                let (m, b) = self.backward_side(m, win, ctx.par);
                bias.lower = b;
                m
            });
            let upper = a.upper.map(|m| {
                let (m, b) = self.backward_side(m, win, ctx.par);
                bias.upper = b;
                m
            });
            (lower, upper)
        };
        let mut out = LinearA { lower, upper, window: win.map(|w| self.input_window(w)) };
        if let Some(w) = &out.window {
            if let Some(m) = out.lower.as_mut() {
                w.zero_outside(m);
            }
            if let Some(m) = out.upper.as_mut() {
                w.zero_outside(m);
            }
        }
        Ok(BackwardResult { inputs: smallvec::smallvec![Some(out)], bias })
    }
    fn is_affine(&self) -> bool {
        true
    }
    fn supports_window(&self) -> bool {
        true
    }
    fn trainable(&self) -> Option<&dyn Trainable<T>> {
        Some(self)
    }
}

impl<T: Scalar> Conv<T> {
    /// The same convolution with weights `w` and per-channel bias `bias`.
    fn rebuilt(&self, w: &[T], bias: Option<&[T]>) -> Result<Conv<T>> {
        let f = |v: &[T]| v.iter().map(|x| x.as_f64()).collect::<Vec<f64>>();
        let b = bias.map(f);
        let scale = self.out_scale.as_deref().map(f);
        let mut c = Conv::new(
            self.op_type,
            self.ci,
            self.co,
            self.groups,
            self.g.clone(),
            &f(w),
            b.as_deref(),
            scale,
        )?;
        c.weight_shape = self.weight_shape.clone();
        Ok(c)
    }
}

/// A Conv trains its weight and bias; average pooling (the same operator with fixed
/// weights) has nothing to train but passes gradients.
impl<T: Scalar> Trainable<T> for Conv<T> {
    fn params(&self) -> Vec<Param<T>> {
        if self.weight_shape.is_none() {
            return Vec::new();
        }
        let mut p = vec![Param { input: 1, values: self.w.clone() }];
        if let Some(b) = &self.bias {
            p.push(Param { input: 2, values: b.clone() });
        }
        p
    }

    fn with_params(&self, values: &[&[T]]) -> Result<Box<dyn Operator<T>>> {
        if self.weight_shape.is_none() {
            return Ok(Box::new(self.rebuilt(&self.w, self.bias.as_deref())?));
        }
        let want = 1 + usize::from(self.bias.is_some());
        if values.len() != want {
            return Err(Error::Invalid(format!(
                "{}: {} parameters given, {want} expected",
                self.op_type,
                values.len()
            )));
        }
        Ok(Box::new(self.rebuilt(values[0], values.get(1).copied())?))
    }

    fn export_param(&self, k: usize, values: &[T]) -> Result<TensorData> {
        let v: Vec<f64> = values.iter().map(|x| x.as_f64()).collect();
        match (&self.weight_shape, k) {
            (Some(shape), 0) => TensorData::float(shape, v),
            (Some(_), 1) if self.bias.is_some() => TensorData::float(&[self.co], v),
            _ => Err(Error::Invalid(format!("{}: no parameter {k}", self.op_type))),
        }
    }

    fn rule(&self) -> TrainRule<'_, T> {
        TrainRule::Affine(self)
    }
}

/// A column-major copy of `m` whose column stride is exactly its row count, so that
/// strided views of every `k`-th column can be taken safely.
fn contiguous<T: Scalar>(m: MatRef<'_, T>) -> Vec<T> {
    let mut v = Vec::with_capacity(m.nrows() * m.ncols());
    for j in 0..m.ncols() {
        v.extend(m.col(j).iter().copied());
    }
    v
}

/// The `rows × channels` view of a [`contiguous`] buffer of `rows × (·)` columns taking
/// column `first`, then every `stride`-th one (a cell of consecutive channels).
fn channel_view<T: Scalar>(
    buf: &[T],
    rows: usize,
    first: usize,
    channels: usize,
    stride: usize,
) -> MatRef<'_, T> {
    MatRef::from_column_major_slice_with_stride(&buf[first * rows..], rows, channels, stride * rows)
}

impl<T: Scalar> Conv<T> {
    /// Per kernel tap of group `grp`, the `C_in/g × C_out/g` matrix of weights `w`.
    fn tap_weights(&self, w: &[T], grp: usize) -> Vec<Mat<T>> {
        let (cig, cog, k) = (self.ci / self.groups, self.co / self.groups, self.g.kh * self.g.kw);
        (0..k).map(|t| Mat::from_fn(cig, cog, |i, o| w[((grp * cog + o) * cig + i) * k + t])).collect()
    }

    /// For every output position `p` and kernel tap `t` reading an input cell `q` inside
    /// the image: `f(p, t, q)`.
    fn for_each_position_tap(&self, mut f: impl FnMut(usize, usize, usize)) {
        let g = &self.g;
        for y in 0..g.ho {
            for x in 0..g.wo {
                for ky in 0..g.kh {
                    let Some(iy) = g.in_h(y, ky) else { continue };
                    for kx in 0..g.kw {
                        let Some(ix) = g.in_w(x, kx) else { continue };
                        f(y * g.wo + x, ky * g.kw + kx, iy * g.wi + ix);
                    }
                }
            }
        }
    }
}

impl<T: Scalar> AffineTrain<T> for Conv<T> {
    /// With the rows innermost (column-major, one point per row), a convolution is a sum
    /// over output positions and taps of `rows × C_in/g` by `C_in/g × C_out/g` products
    /// on strided column views: no im2col.
    fn apply(&self, x: MatRef<'_, T>, abs: bool, mut out: MatMut<'_, T>, _par: Par) {
        let rows = x.nrows();
        let g = &self.g;
        let (cig, cog) = (self.ci / self.groups, self.co / self.groups);
        let (hw, p) = (g.hi * g.wi, g.ho * g.wo);
        let xb = contiguous(x);
        let mut ob = vec![T::zero(); rows * self.co * p];
        let w = if abs { &self.w_abs } else { &self.w };
        for grp in 0..self.groups {
            let taps = self.tap_weights(w, grp);
            self.for_each_position_tap(|pos, t, q| {
                let xv = channel_view(&xb, rows, grp * cig * hw + q, cig, hw);
                let ov = MatMut::from_column_major_slice_with_stride_mut(
                    &mut ob[(grp * cog * p + pos) * rows..],
                    rows,
                    cog,
                    p * rows,
                );
                matmul(ov, Accum::Add, xv, taps[t].as_ref(), T::one(), Par::Seq);
            });
        }
        for j in 0..self.co * p {
            let f = self.out_scale.as_ref().map_or(T::one(), |s| s[j % p]);
            for (o, v) in out.as_mut().col_mut(j).iter_mut().zip(&ob[j * rows..(j + 1) * rows]) {
                *o = *v * f;
            }
        }
    }

    fn apply_t(&self, g: MatRef<'_, T>, abs: bool, mut out: MatMut<'_, T>, par: Par) {
        let twin;
        let conv = if abs {
            twin = self.rebuilt(&self.w_abs, None).expect("the same geometry");
            &twin
        } else {
            self
        };
        let mut m = g.to_owned();
        conv.scale_columns(&mut m, None);
        out.fill(T::zero());
        let gm = &conv.g;
        let shift = (gm.pt as isize, gm.pl as isize);
        if out.row_stride() == 1 {
            conv.transpose_acc(m.as_ref(), (gm.ho, gm.wo), out, (gm.hi, gm.wi), shift, par);
        } else {
            let mut dst = Mat::<T>::zeros(out.nrows(), out.ncols());
            conv.transpose_acc(m.as_ref(), (gm.ho, gm.wo), dst.as_mut(), (gm.hi, gm.wi), shift, par);
            out.copy_from(dst.as_ref());
        }
    }

    fn bias(&self) -> Option<Vec<T>> {
        let p = self.g.ho * self.g.wo;
        self.bias.as_ref().map(|b| (0..self.co * p).map(|j| b[j / p]).collect())
    }

    fn weight_grad(&self, g: MatRef<'_, T>, x: MatRef<'_, T>, abs: bool, grads: &mut [Vec<T>], _par: Par) {
        if self.weight_shape.is_none() || grads.is_empty() {
            return;
        }
        let rows = x.nrows();
        let gm = &self.g;
        let (cig, cog) = (self.ci / self.groups, self.co / self.groups);
        let (k, hw, p) = (gm.kh * gm.kw, gm.hi * gm.wi, gm.ho * gm.wo);
        let (xb, gb) = (contiguous(x), contiguous(g));
        for grp in 0..self.groups {
            // Per tap, Σ over positions of G_pᵀ · X_q (C_out/g × C_in/g).
            let mut acc: Vec<Mat<T>> = (0..k).map(|_| Mat::zeros(cog, cig)).collect();
            self.for_each_position_tap(|pos, t, q| {
                let xv = channel_view(&xb, rows, grp * cig * hw + q, cig, hw);
                let gv = channel_view(&gb, rows, grp * cog * p + pos, cog, p);
                matmul(acc[t].as_mut(), Accum::Add, gv.transpose(), xv, T::one(), Par::Seq);
            });
            for (t, a) in acc.iter().enumerate() {
                for o in 0..cog {
                    for i in 0..cig {
                        let at = ((grp * cog + o) * cig + i) * k + t;
                        let (v, w) = (a[(o, i)], self.w[at]);
                        grads[0][at] += match (abs, w > T::zero(), w < T::zero()) {
                            (false, _, _) | (true, true, _) => v,
                            (true, _, true) => -v,
                            _ => T::zero(),
                        };
                    }
                }
            }
        }
    }

    fn bias_grad(&self, g: &[T], grads: &mut [Vec<T>]) {
        if self.weight_shape.is_none() || self.bias.is_none() || grads.len() < 2 {
            return;
        }
        let p = self.g.ho * self.g.wo;
        for (j, v) in g.iter().enumerate() {
            grads[1][j / p] += *v;
        }
    }
}

impl<T: Scalar> Operator<T> for Conv<T> {
    fn op_type(&self) -> &str {
        self.op_type
    }
}

/// `Conv`: input `X` (perturbed or not), constant `W` and optional constant `B`.
pub fn build_conv<T: Scalar>(node: &NodeDef<'_>) -> Result<BuiltOp<T>> {
    let x = node.input(0)?;
    let (ci, hi, wi, dims) = spatial_input(&x.shape, "Conv")?;
    if !node.is_const(1) {
        return Err(Error::unimplemented(
            "Conv with a perturbed weight here (the bilinear plugin, lirpa-ops-bilinear, handles it)",
        ));
    }
    let w = node.const_input(1)?;
    w.check_finite("Conv weight")?;
    let groups = node.attrs.int_or("group", 1)?;
    if groups < 1 {
        return Err(Error::Invalid(format!("group {groups} must be positive")));
    }
    let groups = groups as usize;
    if w.shape.len() != dims + 2 {
        return Err(Error::Shape(format!("weight of shape {:?} for a {dims}-D convolution", w.shape)));
    }
    let co = w.shape[0];
    if w.shape[1] * groups != ci {
        return Err(Error::Shape(format!(
            "weight of shape {:?} with group {groups} does not match {ci} input channels",
            w.shape
        )));
    }
    let kernel = if dims == 1 { [1, w.shape[2]] } else { [w.shape[2], w.shape[3]] };
    if let Some(ks) = node.attrs.ints("kernel_shape")? {
        let ks: Vec<usize> = ks.iter().map(|&k| k as usize).collect();
        if ks != w.shape[2..] {
            return Err(Error::Shape(format!("kernel_shape {ks:?} does not match the weight {:?}", w.shape)));
        }
    }
    let g = Geom::from_attrs(node, dims, hi, wi, kernel)?;
    let bias = match node.inputs.get(2) {
        Some(Some(_)) => {
            let b = node.const_input(2).map_err(|_| {
                Error::unimplemented("Conv with a perturbed bias here (the bilinear plugin handles it)")
            })?;
            b.check_finite("Conv bias")?;
            Some(b.data.as_slice())
        }
        _ => None,
    };
    let mut conv = Conv::<T>::new("Conv", ci, co, groups, g, &w.data, bias, None)?;
    conv.weight_shape = Some(w.shape.clone());
    let shape = conv.output_shape(dims);
    Ok(BuiltOp::new(conv, &[0], shape))
}

/// `AveragePool` and `GlobalAveragePool`: a depthwise convolution with weight 1 and a
/// per-position divisor (the window size, or with `count_include_pad = 0` the number of
/// cells inside the input).
pub fn build_average_pool<T: Scalar>(node: &NodeDef<'_>) -> Result<BuiltOp<T>> {
    let x = node.input(0)?;
    let (c, hi, wi, dims) = spatial_input(&x.shape, node.op_type)?;
    let (g, include_pad) = if node.op_type == "GlobalAveragePool" {
        let g = Geom {
            hi,
            wi,
            ho: 1,
            wo: 1,
            kh: hi,
            kw: wi,
            sh: 1,
            sw: 1,
            dh: 1,
            dw: 1,
            pt: 0,
            pl: 0,
            pb: 0,
            pr: 0,
        };
        (g, true)
    } else {
        let ks = node
            .attrs
            .ints("kernel_shape")?
            .ok_or_else(|| Error::Invalid("AveragePool without kernel_shape".into()))?;
        if ks.len() != dims || ks.iter().any(|&k| k < 1) {
            return Err(Error::Invalid(format!("kernel_shape {ks:?} is invalid for {dims}-D")));
        }
        let kernel = if dims == 1 { [1, ks[0] as usize] } else { [ks[0] as usize, ks[1] as usize] };
        (Geom::from_attrs(node, dims, hi, wi, kernel)?, node.attrs.int_or("count_include_pad", 0)? != 0)
    };
    // Divisor per output position: cells of the window inside the counted region.
    let count = |start: isize, k: usize, d: usize, lo: isize, hi: isize| -> usize {
        (0..k).filter(|&t| (lo..hi).contains(&(start + (t * d) as isize))).count()
    };
    let (lo_h, hi_h, lo_w, hi_w) = if include_pad {
        (-(g.pt as isize), (g.hi + g.pb) as isize, -(g.pl as isize), (g.wi + g.pr) as isize)
    } else {
        (0, g.hi as isize, 0, g.wi as isize)
    };
    let mut scale = Vec::with_capacity(g.ho * g.wo);
    for y in 0..g.ho {
        for x in 0..g.wo {
            let nh = count((y * g.sh) as isize - g.pt as isize, g.kh, g.dh, lo_h, hi_h);
            let nw = count((x * g.sw) as isize - g.pl as isize, g.kw, g.dw, lo_w, hi_w);
            if nh * nw == 0 {
                return Err(Error::Invalid(format!(
                    "{} has an output window with no input cell",
                    node.op_type
                )));
            }
            scale.push(1.0 / (nh * nw) as f64);
        }
    }
    let ones = vec![1.0; c * g.kh * g.kw];
    let op_type = if node.op_type == "GlobalAveragePool" { "GlobalAveragePool" } else { "AveragePool" };
    let conv = Conv::<T>::new(op_type, c, c, c, g, &ones, None, Some(scale))?;
    let shape = conv.output_shape(dims);
    Ok(BuiltOp::new(conv, &[0], shape))
}

/// `ConvTranspose`, as the adjoint of a convolution: `y = Convᵀ(x) + b`, where `Conv`
/// maps the transposed convolution's output shape back to its input shape with the
/// same weights. Its forward pass is that convolution's backward rule, and its backward
/// rule is that convolution's forward pass applied to every coefficient row. Dense
/// coefficients only (a window on the output does not map to one uniform window on the
/// input when the stride is larger than 1).
#[derive(Debug)]
pub struct ConvTranspose<T> {
    dual: Conv<T>,
    dual_abs: Conv<T>,
    bias_map: Option<Vec<T>>,
}

impl<T: Scalar> ConvTranspose<T> {
    /// `out = Convᵀ(x)` with the weights of `c` (no bias).
    fn apply(c: &Conv<T>, x: &[T], out: &mut [T]) {
        let g = &c.g;
        let src = Mat::from_fn(1, x.len(), |_, j| x[j]);
        let mut dst = Mat::<T>::zeros(1, out.len());
        let shift = (g.pt as isize, g.pl as isize);
        c.transpose_acc(src.as_ref(), (g.ho, g.wo), dst.as_mut(), (g.hi, g.wi), shift, Par::Seq);
        for (j, o) in out.iter_mut().enumerate() {
            *o = dst[(0, j)];
        }
    }
}

impl<T: Scalar> Evaluate<T> for ConvTranspose<T> {
    fn forward(&self, inputs: &[&[T]], out: &mut [T]) -> Result<()> {
        Self::apply(&self.dual, inputs[0], out);
        if let Some(b) = &self.bias_map {
            out.iter_mut().zip(b).for_each(|(o, b)| *o += *b);
        }
        Ok(())
    }
}

impl<T: Scalar> IntervalRule<T> for ConvTranspose<T> {
    fn interval(&self, inputs: &[Interval<'_, T>], lower: &mut [T], upper: &mut [T]) -> Result<()> {
        let half = T::from_f64(0.5);
        let x = inputs[0];
        let mid: Vec<T> = x.lower.iter().zip(x.upper).map(|(&l, &u)| (l + u) * half).collect();
        let rad: Vec<T> = x.lower.iter().zip(x.upper).map(|(&l, &u)| (u - l) * half).collect();
        self.forward(&[&mid], lower)?;
        Self::apply(&self.dual_abs, &rad, upper);
        for (l, u) in lower.iter_mut().zip(upper.iter_mut()) {
            let (m, r) = (*l, *u);
            *l = m - r;
            *u = m + r;
        }
        Ok(())
    }
}

impl<T: Scalar> LinearRelaxation<T> for ConvTranspose<T> {
    fn backward(&self, _ctx: &BackwardCtx<'_, T>, a: LinearA<T>) -> Result<BackwardResult<T>> {
        let n_in = self.dual.co * self.dual.g.ho * self.dual.g.wo;
        let mut bias = LinearBias::zeros(a.spec());
        let side = |m: &Mat<T>, b: &mut Vec<T>| -> Mat<T> {
            if let Some(bm) = &self.bias_map {
                *b = mat_vec(m.as_ref(), bm);
            }
            let mut out = Mat::<T>::zeros(m.nrows(), n_in);
            let mut row = vec![T::zero(); m.ncols()];
            let mut res = vec![T::zero(); n_in];
            for r in 0..m.nrows() {
                row.iter_mut().enumerate().for_each(|(j, v)| *v = m[(r, j)]);
                self.dual.convolve(&self.dual.w, &row, &mut res);
                res.iter().enumerate().for_each(|(j, v)| out[(r, j)] = *v);
            }
            out
        };
        let lower = a.lower.as_ref().map(|m| side(m, &mut bias.lower));
        let upper = a.upper.as_ref().map(|m| side(m, &mut bias.upper));
        Ok(BackwardResult { inputs: smallvec::smallvec![Some(LinearA::dense(lower, upper))], bias })
    }
    fn is_affine(&self) -> bool {
        true
    }
}

impl<T: Scalar> Operator<T> for ConvTranspose<T> {
    fn op_type(&self) -> &str {
        "ConvTranspose"
    }
}

/// `ConvTranspose`: input `X`, constant `W` (`[C_in, C_out/group, k...]`), optional `B`;
/// `strides`, `dilations`, `pads`, `output_padding`, `output_shape`, `group`.
pub fn build_conv_transpose<T: Scalar>(node: &NodeDef<'_>) -> Result<BuiltOp<T>> {
    let x = node.input(0)?;
    let (ci, hi, wi, dims) = spatial_input(&x.shape, "ConvTranspose")?;
    if !node.is_const(1) {
        return Err(Error::unimplemented(
            "ConvTranspose with a perturbed weight (only constant weights are supported)",
        ));
    }
    if !matches!(node.attrs.string("auto_pad")?, None | Some("NOTSET") | Some("VALID")) {
        return Err(Error::unimplemented("ConvTranspose with auto_pad SAME_*; give explicit pads"));
    }
    let w = node.const_input(1)?;
    w.check_finite("ConvTranspose weight")?;
    let groups = node.attrs.int_or("group", 1)?.max(1) as usize;
    if w.shape.len() != dims + 2 || w.shape[0] != ci || ci % groups != 0 {
        return Err(Error::Shape(format!("weight of shape {:?} for {ci} input channels", w.shape)));
    }
    let co = w.shape[1] * groups;
    let kernel = if dims == 1 { [1, w.shape[2]] } else { [w.shape[2], w.shape[3]] };
    let get = |name: &str, default: i64| -> Result<Vec<usize>> {
        let v: Vec<i64> = node.attrs.ints(name)?.map_or_else(|| vec![default; dims], |v| v.to_vec());
        if v.len() != dims || v.iter().any(|&x| x < 0) {
            return Err(Error::Invalid(format!("attribute '{name}' {v:?} is invalid for {dims}-D")));
        }
        Ok(if dims == 1 {
            vec![if default == 0 { 0 } else { 1 }, v[0] as usize]
        } else {
            v.iter().map(|&x| x as usize).collect()
        })
    };
    let (s, d, op) = (get("strides", 1)?, get("dilations", 1)?, get("output_padding", 0)?);
    let pads: Vec<usize> = match node.attrs.ints("pads")? {
        Some(p) if p.len() == 2 * dims && p.iter().all(|&x| x >= 0) => {
            p.iter().map(|&x| x as usize).collect()
        }
        Some(p) => return Err(Error::Invalid(format!("attribute 'pads' {p:?} is invalid for {dims}-D"))),
        None => vec![0; 2 * dims],
    };
    let (pt, pl, pb, pr) =
        if dims == 1 { (0, pads[0], 0, pads[1]) } else { (pads[0], pads[1], pads[2], pads[3]) };
    let out_size =
        |i: usize, s: usize, k: usize, d: usize, op: usize, p0: usize, p1: usize| -> Result<usize> {
            let full = s
                .checked_mul(i.saturating_sub(1))
                .and_then(|v| v.checked_add(op))
                .and_then(|v| k.saturating_sub(1).checked_mul(d).and_then(|e| v.checked_add(e)))
                .and_then(|v| v.checked_add(1))
                .ok_or_else(|| Error::Invalid("ConvTranspose: the output size overflows".into()))?;
            full.checked_sub(p0.saturating_add(p1))
                .filter(|&o| o > 0)
                .ok_or_else(|| Error::Invalid("ConvTranspose: the padding removes the whole output".into()))
        };
    let ho = out_size(hi, s[0], kernel[0], d[0], op[0], pt, pb)?;
    let wo = out_size(wi, s[1], kernel[1], d[1], op[1], pl, pr)?;
    if node.attrs.ints("output_shape")?.is_some() {
        return Err(Error::unimplemented("ConvTranspose with output_shape; give pads and output_padding"));
    }
    if op[0] >= s[0].max(d[0]) || op[1] >= s[1].max(d[1]) {
        return Err(Error::Invalid(
            "ConvTranspose: output_padding must be smaller than stride or dilation".into(),
        ));
    }
    let g = Geom {
        hi: ho,
        wi: wo,
        ho: hi,
        wo: wi,
        kh: kernel[0],
        kw: kernel[1],
        sh: s[0],
        sw: s[1],
        dh: d[0],
        dw: d[1],
        pt,
        pl,
        pb,
        pr,
    };
    g.check_size()?;
    let abs: Vec<f64> = w.data.iter().map(|v| v.abs()).collect();
    let dual = Conv::<T>::new("ConvTranspose", co, ci, groups, g.clone(), &w.data, None, None)?;
    let dual_abs = Conv::<T>::new("ConvTranspose", co, ci, groups, g, &abs, None, None)?;
    let bias_map = match node.inputs.get(2) {
        Some(Some(_)) => {
            let b = node
                .const_input(2)
                .map_err(|_| Error::unimplemented("ConvTranspose with a perturbed bias"))?;
            b.check_finite("ConvTranspose bias")?;
            if b.numel() != co {
                return Err(Error::Shape(format!("the bias has {} elements, expected {co}", b.numel())));
            }
            Some((0..co * ho * wo).map(|j| T::from_f64(b.data[j / (ho * wo)])).collect())
        }
        _ => None,
    };
    let shape = if dims == 1 { Shape::from_slice(&[1, co, wo]) } else { Shape::from_slice(&[1, co, ho, wo]) };
    Ok(BuiltOp::new(ConvTranspose { dual, dual_abs, bias_map }, &[0], shape))
}

#[cfg(test)]
mod tests {
    use lirpa_core::{Attr, Attributes, GraphBuilder, TensorData};

    /// 1-D transposed convolution, stride 2, kernel [1, 1, 1], no padding: each input
    /// spreads over three outputs, overlapping at one: [1, 2] -> [1, 1, 3, 2, 2].
    #[test]
    fn conv_transpose_by_hand() {
        let mut b = GraphBuilder::<f64>::new();
        b.add_input("x", &[1, 1, 2]).unwrap();
        b.add_constant("w", TensorData::float(&[1, 1, 3], vec![1.0, 1.0, 1.0]).unwrap()).unwrap();
        let mut a = Attributes::default();
        a.insert("strides", Attr::Ints(vec![2]));
        b.add_node("y", "ConvTranspose", "", 13, &a, &[Some("x"), Some("w")]).unwrap();
        let g = b.finish(&["y"]).unwrap();
        assert_eq!(g.forward(&[&[1.0, 2.0]], g.output().unwrap()).unwrap(), vec![1.0, 1.0, 3.0, 2.0, 2.0]);
    }
}

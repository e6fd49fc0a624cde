//! Operators that gather elements by fixed indices: Slice, Gather (constant indices),
//! Concat, and Pad (constant, reflect and edge modes). All are one operator,
//! [`IndexMap`]: output element `i` is element `j` of input edge `k`, or a constant.

use lirpa_core::op::{BackwardCtx, Evaluate, Interval, IntervalRule, LinearRelaxation, NodeDef, Operator};
use lirpa_core::{
    BackwardResult, BuiltOp, Error, LinearA, LinearBias, Result, Scalar, Shape, Window, numel, spatial_dims,
};
use smallvec::SmallVec;

/// Marks an output element that takes the fill value.
const FILL: u32 = u32::MAX;

#[derive(Debug)]
pub struct IndexMap<T> {
    op_type: &'static str,
    /// Per output element: `(input edge, element)`, edge `FILL` for the fill value.
    src: Vec<(u32, u32)>,
    /// Elements of each input edge.
    n_in: SmallVec<[usize; 4]>,
    fill: T,
    /// For a constant Pad of only the spatial axes of a `[1, C, H, W]` (or `[1, C, L]`)
    /// tensor: windowed coefficients map to the input by a shift of their windows.
    spatial_pad: Option<SpatialPad>,
}

/// Geometry of a spatial constant Pad: input height and width, and the padding
/// before them (all non-negative).
#[derive(Clone, Copy, Debug)]
struct SpatialPad {
    top: usize,
    left: usize,
    in_h: usize,
    in_w: usize,
}

impl<T: Scalar> Evaluate<T> for IndexMap<T> {
    fn forward(&self, inputs: &[&[T]], out: &mut [T]) -> Result<()> {
        for (o, &(k, j)) in out.iter_mut().zip(&self.src) {
            *o = if k == FILL { self.fill } else { inputs[k as usize][j as usize] };
        }
        Ok(())
    }
}

impl<T: Scalar> IntervalRule<T> for IndexMap<T> {
    fn interval(&self, inputs: &[Interval<'_, T>], lower: &mut [T], upper: &mut [T]) -> Result<()> {
        for (i, &(k, j)) in self.src.iter().enumerate() {
            if k == FILL {
                lower[i] = self.fill;
                upper[i] = self.fill;
            } else {
                lower[i] = inputs[k as usize].lower[j as usize];
                upper[i] = inputs[k as usize].upper[j as usize];
            }
        }
        Ok(())
    }
    fn interval_is_tight(&self) -> bool {
        true
    }
}

impl<T: Scalar> IndexMap<T> {
    fn side(&self, m: &faer::Mat<T>, bias: &mut [T]) -> SmallVec<[faer::Mat<T>; 4]> {
        let mut outs: SmallVec<[faer::Mat<T>; 4]> =
            self.n_in.iter().map(|&n| faer::Mat::<T>::zeros(m.nrows(), n)).collect();
        for (i, &(k, j)) in self.src.iter().enumerate() {
            let col = m.col_as_slice(i);
            if k == FILL {
                if self.fill != T::zero() {
                    bias.iter_mut().zip(col).for_each(|(b, a)| *b += *a * self.fill);
                }
                continue;
            }
            let dst = outs[k as usize].col_as_slice_mut(j as usize);
            dst.iter_mut().zip(col).for_each(|(d, a)| *d += *a);
        }
        outs
    }
}

impl<T: Scalar> IndexMap<T> {
    /// Windowed coefficients through a spatial constant Pad: the same windows, shifted
    /// into the input's coordinates; cells that fall on padding move to the bias
    /// (times the fill value) and are zeroed (the window invariant).
    fn backward_windowed(&self, pad: SpatialPad, a: LinearA<T>) -> Result<BackwardResult<T>> {
        let w = a.window.as_ref().expect("windowed");
        let (top, left) = (pad.top, pad.left);
        let win = Window {
            c: w.c,
            h: pad.in_h,
            w: pad.in_w,
            ph: w.ph,
            pw: w.pw,
            oh: w.oh.iter().map(|&o| o - top as isize).collect(),
            ow: w.ow.iter().map(|&o| o - left as isize).collect(),
        };
        let area = w.ph * w.pw;
        let mut bias = LinearBias::zeros(a.spec());
        let fill = self.fill;
        let side = |mut m: faer::Mat<T>, bias: &mut [T]| {
            for ch in 0..win.c {
                for y in 0..win.ph {
                    for x in 0..win.pw {
                        let col = m.col_as_slice_mut(ch * area + y * win.pw + x);
                        for (r, (v, b)) in col.iter_mut().zip(bias.iter_mut()).enumerate() {
                            if *v != T::zero() && win.position(r, y, x).is_none() {
                                *b += *v * fill;
                                *v = T::zero();
                            }
                        }
                    }
                }
            }
            m
        };
        let lower = a.lower.map(|m| side(m, &mut bias.lower));
        let upper = a.upper.map(|m| side(m, &mut bias.upper));
        Ok(BackwardResult {
            inputs: smallvec::smallvec![Some(LinearA { lower, upper, window: Some(win) })],
            bias,
        })
    }
}

impl<T: Scalar> LinearRelaxation<T> for IndexMap<T> {
    fn fp_rounding(&self) -> Option<lirpa_core::FpRounding> {
        // Inputs laid end to end: one index space.
        let starts: SmallVec<[usize; 4]> =
            self.n_in.iter().scan(0, |acc, &n| Some(std::mem::replace(acc, *acc + n))).collect();
        let src = self.src.iter().map(|&(k, j)| (k != FILL).then(|| starts[k as usize] + j as usize));
        Some(lirpa_core::FpRounding::gather(src, self.n_in.iter().sum(), self.fill == T::zero()))
    }
    fn backward(&self, _ctx: &BackwardCtx<'_, T>, a: LinearA<T>) -> Result<BackwardResult<T>> {
        if let (Some(pad), Some(_)) = (self.spatial_pad, &a.window) {
            return self.backward_windowed(pad, a);
        }
        let mut bias = LinearBias::zeros(a.spec());
        let mut lower = a.lower.as_ref().map(|m| self.side(m, &mut bias.lower).into_iter());
        let mut upper = a.upper.as_ref().map(|m| self.side(m, &mut bias.upper).into_iter());
        let inputs = (0..self.n_in.len())
            .map(|_| {
                Some(LinearA::dense(
                    lower.as_mut().and_then(|it| it.next()),
                    upper.as_mut().and_then(|it| it.next()),
                ))
            })
            .collect();
        Ok(BackwardResult { inputs, bias })
    }
    fn is_affine(&self) -> bool {
        true
    }
    fn supports_window(&self) -> bool {
        self.spatial_pad.is_some()
    }
}

impl<T: Scalar> Operator<T> for IndexMap<T> {
    fn op_type(&self) -> &str {
        self.op_type
    }
}

/// Row-major strides.
fn strides(shape: &[usize]) -> Vec<usize> {
    let mut s = vec![1; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        s[i] = s[i + 1] * shape[i + 1];
    }
    s
}

/// Build the map by calling `f(out_index) -> (edge, element) | None (fill)` for every
/// output multi-index in row-major order.
fn build_map<T: Scalar>(
    op_type: &'static str,
    spatial_pad: Option<SpatialPad>,
    out_shape: &[usize],
    n_in: SmallVec<[usize; 4]>,
    fill: f64,
    edges: &[usize],
    mut f: impl FnMut(&[usize]) -> Option<(usize, usize)>,
) -> Result<BuiltOp<T>> {
    let n = lirpa_core::checked_numel(out_shape)?;
    if n > u32::MAX as usize - 1 || n_in.iter().any(|&m| m > u32::MAX as usize - 1) {
        return Err(Error::unimplemented(format!("{op_type} on more than 2^32 elements")));
    }
    let mut src = Vec::with_capacity(n);
    let mut idx = vec![0usize; out_shape.len()];
    for _ in 0..n {
        src.push(match f(&idx) {
            Some((k, j)) => (k as u32, j as u32),
            None => (FILL, 0),
        });
        for d in (0..idx.len()).rev() {
            idx[d] += 1;
            if idx[d] < out_shape[d] {
                break;
            }
            idx[d] = 0;
        }
    }
    let op = IndexMap { op_type, src, n_in, fill: T::from_f64(fill), spatial_pad };
    Ok(BuiltOp::new(op, edges, Shape::from_slice(out_shape)))
}

fn norm_axis(axis: i64, rank: usize, op: &str) -> Result<usize> {
    let a = if axis < 0 { axis + rank as i64 } else { axis };
    if a < 0 || a >= rank as i64 {
        return Err(Error::Invalid(format!("{op}: axis {axis} out of range for rank {rank}")));
    }
    Ok(a as usize)
}

/// Integers from an attribute (old opsets) or a constant input (new opsets).
fn ints_from(node: &NodeDef<'_>, attr: &str, input: usize) -> Result<Option<Vec<i64>>> {
    if let Some(v) = node.attrs.ints(attr)? {
        return Ok(Some(v.to_vec()));
    }
    match node.inputs.get(input).and_then(|x| x.as_ref()) {
        Some(_) => Ok(Some(
            node.const_input(input)
                .map_err(|_| Error::unimplemented(format!("{} with a computed '{attr}'", node.op_type)))?
                .to_i64()?,
        )),
        None => Ok(None),
    }
}

pub fn build_concat<T: Scalar>(node: &NodeDef<'_>) -> Result<BuiltOp<T>> {
    let first = node.input(0)?;
    let rank = first.shape.len();
    let axis = norm_axis(
        node.attrs.int("axis")?.ok_or_else(|| Error::Invalid("Concat needs an axis".into()))?,
        rank,
        "Concat",
    )?;
    let mut out = first.shape.clone();
    out[axis] = 0;
    let mut offsets = Vec::new();
    let mut n_in = SmallVec::new();
    let mut edges = Vec::new();
    for k in 0..node.inputs.len() {
        let x = node.input(k)?;
        if x.shape.len() != rank || x.shape.iter().enumerate().any(|(d, &s)| d != axis && s != first.shape[d])
        {
            return Err(Error::Shape(format!(
                "Concat: input {k} has shape {:?}, input 0 {:?}",
                x.shape, first.shape
            )));
        }
        offsets.push(out[axis]);
        out[axis] += x.shape[axis];
        n_in.push(numel(&x.shape));
        edges.push(k);
    }
    let shapes: Vec<Shape> =
        (0..node.inputs.len()).map(|k| node.input(k).map(|x| x.shape.clone())).collect::<Result<_>>()?;
    let st: Vec<Vec<usize>> = shapes.iter().map(|s| strides(s)).collect();
    build_map("Concat", None, &out.clone(), n_in, 0.0, &edges, |idx| {
        let k = offsets.iter().rposition(|&o| o <= idx[axis]).expect("offset 0");
        let mut j = 0;
        for (d, &i) in idx.iter().enumerate() {
            j += if d == axis { i - offsets[k] } else { i } * st[k][d];
        }
        Some((k, j))
    })
}

pub fn build_slice<T: Scalar>(node: &NodeDef<'_>) -> Result<BuiltOp<T>> {
    let x = node.input(0)?;
    let rank = x.shape.len();
    let starts = ints_from(node, "starts", 1)?.ok_or_else(|| Error::Invalid("Slice needs starts".into()))?;
    let ends = ints_from(node, "ends", 2)?.ok_or_else(|| Error::Invalid("Slice needs ends".into()))?;
    let axes = ints_from(node, "axes", 3)?.unwrap_or_else(|| (0..starts.len() as i64).collect());
    let steps = ints_from(node, "steps", 4)?.unwrap_or_else(|| vec![1; starts.len()]);
    if ends.len() != starts.len() || axes.len() != starts.len() || steps.len() != starts.len() {
        return Err(Error::Invalid("Slice: starts, ends, axes and steps differ in length".into()));
    }
    // Per axis: first index, step and count.
    let mut first: Vec<i64> = vec![0; rank];
    let mut step: Vec<i64> = vec![1; rank];
    let mut out: Vec<usize> = x.shape.to_vec();
    for i in 0..starts.len() {
        let a = norm_axis(axes[i], rank, "Slice")?;
        let dim = x.shape[a] as i64;
        let s = steps[i];
        if s == 0 {
            return Err(Error::Invalid("Slice: step 0".into()));
        }
        let clampi = |v: i64, lo: i64, hi: i64| v.max(lo).min(hi);
        let norm = |v: i64| if v < 0 { v + dim } else { v };
        let (b, e) = if s > 0 {
            (clampi(norm(starts[i]), 0, dim), clampi(norm(ends[i]), 0, dim))
        } else {
            (clampi(norm(starts[i]), -1, dim - 1), clampi(norm(ends[i]), -1, dim - 1))
        };
        let count = (if s > 0 { (e - b).max(0) + s - 1 } else { (b - e).max(0) - s - 1 }) / s.abs();
        first[a] = b;
        step[a] = s;
        out[a] = count.max(0) as usize;
    }
    let st = strides(&x.shape);
    let n_in = SmallVec::from_slice(&[numel(&x.shape)]);
    build_map("Slice", None, &out, n_in, 0.0, &[0], |idx| {
        let j = idx.iter().enumerate().map(|(d, &i)| (first[d] + i as i64 * step[d]) as usize * st[d]).sum();
        Some((0, j))
    })
}

pub fn build_gather<T: Scalar>(node: &NodeDef<'_>) -> Result<BuiltOp<T>> {
    let x = node.input(0)?;
    let rank = x.shape.len();
    let axis = norm_axis(node.attrs.int_or("axis", 0)?, rank, "Gather")?;
    let ind = node.const_input(1).map_err(|_| Error::unimplemented("Gather with computed indices"))?;
    let dim = x.shape[axis] as i64;
    let indices: Vec<usize> = ind
        .to_i64()?
        .iter()
        .map(|&i| {
            let v = if i < 0 { i + dim } else { i };
            if v < 0 || v >= dim {
                Err(Error::Invalid(format!("Gather: index {i} out of range for a dimension of {dim}")))
            } else {
                Ok(v as usize)
            }
        })
        .collect::<Result<_>>()?;
    let q = ind.shape.len();
    let mut out: Vec<usize> = x.shape[..axis].to_vec();
    out.extend_from_slice(&ind.shape);
    out.extend_from_slice(&x.shape[axis + 1..]);
    let st = strides(&x.shape);
    let ist = strides(&ind.shape);
    let n_in = SmallVec::from_slice(&[numel(&x.shape)]);
    build_map("Gather", None, &out, n_in, 0.0, &[0], |idx| {
        let flat_ind: usize = (0..q).map(|t| idx[axis + t] * ist[t]).sum();
        let mut j = indices[flat_ind] * st[axis];
        for d in 0..axis {
            j += idx[d] * st[d];
        }
        for d in axis + 1..rank {
            j += idx[d + q - 1] * st[d];
        }
        Some((0, j))
    })
}

pub fn build_pad<T: Scalar>(node: &NodeDef<'_>) -> Result<BuiltOp<T>> {
    let x = node.input(0)?;
    let rank = x.shape.len();
    let mode = node.attrs.string("mode")?.unwrap_or("constant");
    let pads = ints_from(node, "pads", 1)?.ok_or_else(|| Error::Invalid("Pad needs pads".into()))?;
    let value = match node.attrs.float("value")? {
        Some(v) => v,
        None => match node.inputs.get(2).and_then(|v| v.as_ref()) {
            Some(_) => {
                let v = node.const_input(2)?;
                v.check_finite("Pad constant_value")?;
                v.data.first().copied().unwrap_or(0.0)
            }
            None => 0.0,
        },
    };
    // `axes` is an input since opset 18.
    let axes: Vec<usize> = match node.inputs.get(3).and_then(|x| x.as_ref()) {
        Some(_) => node
            .const_input(3)?
            .to_i64()?
            .iter()
            .map(|&a| norm_axis(a, rank, "Pad"))
            .collect::<Result<_>>()?,
        None => (0..rank).collect(),
    };
    if pads.len() != 2 * axes.len() {
        return Err(Error::Invalid(format!("Pad: {} pads for {} axes", pads.len(), axes.len())));
    }
    let mut begin = vec![0i64; rank];
    let mut out: Vec<usize> = x.shape.to_vec();
    for (i, &a) in axes.iter().enumerate() {
        begin[a] = pads[i];
        let o = (x.shape[a] as i64)
            .checked_add(pads[i])
            .and_then(|v| v.checked_add(pads[i + axes.len()]))
            .ok_or_else(|| Error::Shape(format!("Pad: the output size on axis {a} overflows")))?;
        if o < 0 {
            return Err(Error::Shape(format!("Pad: negative output size on axis {a}")));
        }
        out[a] = o as usize;
    }
    if mode != "constant" && x.shape.contains(&0) {
        return Err(Error::Invalid(format!("Pad mode {mode} on an empty tensor")));
    }
    let st = strides(&x.shape);
    let shape = x.shape.clone();
    let n_in = SmallVec::from_slice(&[numel(&x.shape)]);
    let mode_s = mode.to_string();
    if !matches!(mode, "constant" | "reflect" | "edge" | "wrap") {
        return Err(Error::unimplemented(format!("Pad mode '{mode}'")));
    }
    // Constant padding of the spatial axes only (batch and channels untouched, no
    // cropping): windowed coefficients pass through by a shift.
    let spatial = match (mode, spatial_dims(&x.shape)) {
        ("constant", Some((_, h, w))) if begin.iter().all(|&b| b >= 0) => {
            let untouched = (0..2).all(|d| out[d] == x.shape[d] && begin[d] == 0);
            let grown = (2..rank).all(|d| out[d] >= x.shape[d]);
            (untouched && grown).then(|| SpatialPad {
                top: if rank == 4 { begin[2] as usize } else { 0 },
                left: begin[rank - 1] as usize,
                in_h: h,
                in_w: w,
            })
        }
        _ => None,
    };
    build_map("Pad", spatial, &out, n_in, value, &[0], |idx| {
        let mut j = 0usize;
        for d in 0..rank {
            let n = shape[d] as i64;
            let mut c = idx[d] as i64 - begin[d];
            if c < 0 || c >= n {
                match mode_s.as_str() {
                    "constant" => return None,
                    "edge" => c = c.clamp(0, n - 1),
                    "wrap" => c = c.rem_euclid(n),
                    _ => {
                        // reflect: mirror without repeating the edge.
                        if n == 1 {
                            c = 0;
                        } else {
                            let period = 2 * (n - 1);
                            let m = c.rem_euclid(period);
                            c = if m < n { m } else { period - m };
                        }
                    }
                }
            }
            j += c as usize * st[d];
        }
        Some((0, j))
    })
}

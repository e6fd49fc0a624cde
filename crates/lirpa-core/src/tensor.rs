//! Shapes (row-major, like ONNX) and the constant tensors that importers hand to
//! operator builders.

use crate::{Error, Result};
use smallvec::SmallVec;

/// A tensor shape, outermost dimension first. Flattening is row-major everywhere.
pub type Shape = SmallVec<[usize; 6]>;

/// Number of elements of a shape (1 for a scalar). Only for shapes already checked
/// (every node's, at graph building); a shape read from input goes through
/// [`crate::budget::checked_numel`] first.
pub fn numel(shape: &[usize]) -> usize {
    shape.iter().product()
}

/// Row-major strides of a shape.
pub fn strides(shape: &[usize]) -> Shape {
    let mut s: Shape = smallvec::smallvec![1; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        s[i] = s[i + 1] * shape[i + 1];
    }
    s
}

/// Element type of a constant, kept only to validate what builders read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum DType {
    Float,
    Int,
    Bool,
}

/// A constant tensor (weights, shapes, indices). Values are stored as `f64`, which
/// holds every `f32` and every integer up to 2^53 exactly.
#[derive(Clone, Debug, PartialEq)]
pub struct TensorData {
    pub shape: Shape,
    pub dtype: DType,
    pub data: Vec<f64>,
}

impl TensorData {
    pub fn new(shape: &[usize], dtype: DType, data: Vec<f64>) -> Result<Self> {
        let n = crate::budget::checked_numel(shape)?;
        if n != data.len() {
            return Err(Error::Shape(format!(
                "tensor of shape {shape:?} needs {n} values, got {}",
                data.len()
            )));
        }
        Ok(TensorData { shape: shape.into(), dtype, data })
    }

    pub fn float(shape: &[usize], data: Vec<f64>) -> Result<Self> {
        Self::new(shape, DType::Float, data)
    }

    pub fn scalar(x: f64) -> Self {
        TensorData { shape: Shape::new(), dtype: DType::Float, data: vec![x] }
    }

    pub fn numel(&self) -> usize {
        self.data.len()
    }

    /// The values as integers; an error if one is not integral.
    pub fn to_i64(&self) -> Result<Vec<i64>> {
        self.data
            .iter()
            .map(|&x| {
                if x.fract() == 0.0 && x.is_finite() {
                    Ok(x as i64)
                } else {
                    Err(Error::Invalid(format!("expected an integer tensor, found value {x}")))
                }
            })
            .collect()
    }

    /// Refuse NaN and infinities (weights of a model we are asked to bound).
    pub fn check_finite(&self, what: &str) -> Result<()> {
        if self.dtype == DType::Float && self.data.iter().any(|x| !x.is_finite()) {
            return Err(Error::NonFinite(what.to_string()));
        }
        Ok(())
    }
}

/// Numpy-style broadcast of two shapes.
pub fn broadcast_shapes(a: &[usize], b: &[usize]) -> Result<Shape> {
    let n = a.len().max(b.len());
    let mut out: Shape = SmallVec::with_capacity(n);
    for i in 0..n {
        let da = if i + a.len() >= n { a[i + a.len() - n] } else { 1 };
        let db = if i + b.len() >= n { b[i + b.len() - n] } else { 1 };
        let d = match (da, db) {
            (x, y) if x == y => x,
            (1, y) => y,
            (x, 1) => x,
            _ => return Err(Error::Shape(format!("cannot broadcast {a:?} with {b:?}"))),
        };
        out.push(d);
    }
    crate::budget::checked_numel(&out)?;
    Ok(out)
}

/// For every element of `out_shape` (row-major), the flat index of the element of a
/// tensor of shape `in_shape` that broadcasts onto it. `in_shape` must broadcast to
/// `out_shape`.
pub fn broadcast_source_index(in_shape: &[usize], out_shape: &[usize]) -> Result<Vec<usize>> {
    if in_shape.len() > out_shape.len() {
        return Err(Error::Shape(format!("{in_shape:?} does not broadcast to {out_shape:?}")));
    }
    let offset = out_shape.len() - in_shape.len();
    let in_strides = strides(in_shape);
    let mut eff: Shape = smallvec::smallvec![0; out_shape.len()];
    for (i, &d) in in_shape.iter().enumerate() {
        let od = out_shape[i + offset];
        if d == od {
            eff[i + offset] = in_strides[i];
        } else if d == 1 {
            eff[i + offset] = 0;
        } else {
            return Err(Error::Shape(format!("{in_shape:?} does not broadcast to {out_shape:?}")));
        }
    }
    let n = numel(out_shape);
    let mut res = Vec::with_capacity(n);
    let mut idx: Shape = smallvec::smallvec![0; out_shape.len()];
    let mut src = 0usize;
    for _ in 0..n {
        res.push(src);
        // Increment the multi-index, updating the source offset incrementally.
        for d in (0..out_shape.len()).rev() {
            idx[d] += 1;
            src += eff[d];
            if idx[d] < out_shape[d] {
                break;
            }
            src -= eff[d] * idx[d];
            idx[d] = 0;
        }
    }
    Ok(res)
}

/// For a permutation `perm` of the axes of `in_shape` (ONNX Transpose semantics:
/// output axis `i` is input axis `perm[i]`), the source flat index of every output
/// element and the output shape.
pub fn transpose_source_index(in_shape: &[usize], perm: &[usize]) -> Result<(Shape, Vec<usize>)> {
    let r = in_shape.len();
    let mut seen = vec![false; r];
    if perm.len() != r || perm.iter().any(|&p| p >= r || std::mem::replace(&mut seen[p], true)) {
        return Err(Error::Shape(format!("invalid permutation {perm:?} for shape {in_shape:?}")));
    }
    let out_shape: Shape = perm.iter().map(|&p| in_shape[p]).collect();
    let in_strides = strides(in_shape);
    let eff: Shape = perm.iter().map(|&p| in_strides[p]).collect();
    let n = numel(in_shape);
    let mut res = Vec::with_capacity(n);
    let mut idx: Shape = smallvec::smallvec![0; r];
    let mut src = 0usize;
    for _ in 0..n {
        res.push(src);
        for d in (0..r).rev() {
            idx[d] += 1;
            src += eff[d];
            if idx[d] < out_shape[d] {
                break;
            }
            src -= eff[d] * idx[d];
            idx[d] = 0;
        }
    }
    Ok((out_shape, res))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broadcast_index_matches_naive() {
        let out = [2usize, 3, 4];
        let inp = [3usize, 1];
        let idx = broadcast_source_index(&inp, &out).unwrap();
        for a in 0..2 {
            for b in 0..3 {
                for c in 0..4 {
                    assert_eq!(idx[a * 12 + b * 4 + c], b);
                }
            }
        }
        assert_eq!(broadcast_shapes(&[3, 1], &[2, 1, 4]).unwrap().as_slice(), &[2, 3, 4]);
        assert!(broadcast_shapes(&[3], &[4]).is_err());
    }

    #[test]
    fn transpose_index_matches_naive() {
        let (shape, idx) = transpose_source_index(&[2, 3, 4], &[2, 0, 1]).unwrap();
        assert_eq!(shape.as_slice(), &[4, 2, 3]);
        for c in 0..4 {
            for a in 0..2 {
                for b in 0..3 {
                    assert_eq!(idx[c * 6 + a * 3 + b], a * 12 + b * 4 + c);
                }
            }
        }
    }
}

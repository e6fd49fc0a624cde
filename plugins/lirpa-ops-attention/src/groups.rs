//! Index groups along axes of a row-major tensor.

use lirpa_core::{Error, Result, Shape};

/// Normalize a possibly negative axis of a tensor of rank `rank`.
pub fn norm_axis(axis: i64, rank: usize) -> Result<usize> {
    let r = rank as i64;
    let a = if axis < 0 { axis + r } else { axis };
    if a < 0 || a >= r.max(1) {
        return Err(Error::Shape(format!("axis {axis} is out of range for rank {rank}")));
    }
    Ok(a as usize)
}

/// Reduce `shape` over `axes` (sorted, distinct): for every output element (row-major
/// over the kept axes), the input elements it gathers, and the output shape
/// (`keepdims` keeps the reduced axes with size 1).
pub fn reduce_groups(shape: &[usize], axes: &[usize], keepdims: bool) -> (Vec<Vec<usize>>, Shape) {
    let rank = shape.len();
    let mut out_shape = Shape::new();
    let mut kept_shape = Vec::new();
    for (d, &n) in shape.iter().enumerate() {
        if axes.contains(&d) {
            if keepdims {
                out_shape.push(1);
            }
        } else {
            out_shape.push(n);
            kept_shape.push(n);
        }
    }
    let n_out: usize = kept_shape.iter().product();
    let mut groups = vec![Vec::new(); n_out];
    let total: usize = shape.iter().product();
    let mut idx = vec![0usize; rank];
    for flat in 0..total {
        // Output index: row-major over the kept axes.
        let mut o = 0;
        for d in 0..rank {
            if !axes.contains(&d) {
                o = o * shape[d] + idx[d];
            }
        }
        groups[o].push(flat);
        for d in (0..rank).rev() {
            idx[d] += 1;
            if idx[d] < shape[d] {
                break;
            }
            idx[d] = 0;
        }
    }
    (groups, out_shape)
}

//! Conv with a perturbed weight (alone, or with a perturbed input), or a perturbed
//! bias: per group `grp`,
//!
//! ```text
//!     Y[grp, o, p] = Σ_t W'[grp, o, t] · X'[grp, t, p]  (+ B[grp·C_out/g + o])
//! ```
//!
//! with `W'` the weight as stored (`[g, C_out/g, C_in/g·kh·kw]`, row-major, no
//! copy) and `X' = im2col(X)` (`[g, C_in/g·kh·kw, ho·wo]`), an index map of the input
//! whose padding taps are the constant 0. That is the batched bilinear MatMul of `W'`
//! and `X'` seen through index maps: the same operator as Gemm's ([`BilinearGemm`]),
//! so every rule (interval, McCormick planes, α-CROWN parameters and their gradients)
//! is the MatMul's. The output `[g, C_out/g, ho·wo]` is the `[1, C_out, ho, wo]`
//! layout itself. The geometry (pads, strides, dilations, `auto_pad`) is
//! [`lirpa_core::spatial::Geom`], shared with the conv plugin.
//!
//! Declined when the weight and the bias are constant: the conv plugin's exact
//! convolution.

use crate::gemm::{BilinearGemm, GemmBias, ZERO};
use crate::matmul::BilinearMatMul;
use lirpa_core::op::NodeDef;
use lirpa_core::spatial::{Geom, spatial_input};
use lirpa_core::{BuiltOp, Error, Result, Scalar, Shape};

pub fn build_conv<T: Scalar>(node: &NodeDef<'_>) -> Result<BuiltOp<T>> {
    let has_b = node.inputs.get(2).is_some_and(|c| c.is_some());
    if node.is_const(1) && (!has_b || node.is_const(2)) {
        return Err(Error::declined("the weight and bias are constant (an exact convolution)"));
    }
    let (ci, hi, wi, dims) = spatial_input(&node.input(0)?.shape, "Conv")?;
    let ws = node.input(1)?.shape.clone();
    let groups = node.attrs.int_or("group", 1)?;
    if groups < 1 {
        return Err(Error::Invalid(format!("group {groups} must be positive")));
    }
    let groups = groups as usize;
    if ws.len() != dims + 2 {
        return Err(Error::Shape(format!("weight of shape {ws:?} for a {dims}-D convolution")));
    }
    let co = ws[0];
    if ws[1] * groups != ci || !co.is_multiple_of(groups) {
        return Err(Error::Shape(format!(
            "weight of shape {ws:?} with group {groups} does not match {ci} input channels"
        )));
    }
    let kernel = if dims == 1 { [1, ws[2]] } else { [ws[2], ws[3]] };
    if let Some(ks) = node.attrs.ints("kernel_shape")? {
        let ks: Vec<usize> = ks.iter().map(|&k| k as usize).collect();
        if ks != ws[2..] {
            return Err(Error::Shape(format!("kernel_shape {ks:?} does not match the weight {ws:?}")));
        }
    }
    let g = Geom::from_attrs(node, dims, hi, wi, kernel)?;
    let (cig, cog, p) = (ci / groups, co / groups, g.ho * g.wo);
    let kk = cig * g.kh * g.kw;
    let (mm, _) = BilinearMatMul::new(&[groups, cog, kk], &[groups, kk, p])?;
    // im2col: element (grp, (i, ky, kx), (y, x)) of X' is input (grp·C_in/g + i, in_h, in_w)
    // or the constant 0 of the padding.
    let mut tb = Vec::with_capacity(groups * kk * p);
    for grp in 0..groups {
        for i in 0..cig {
            for ky in 0..g.kh {
                for kx in 0..g.kw {
                    for y in 0..g.ho {
                        for x in 0..g.wo {
                            tb.push(match (g.in_h(y, ky), g.in_w(x, kx)) {
                                (Some(h), Some(w)) => ((grp * cig + i) * hi + h) * wi + w,
                                _ => ZERO,
                            });
                        }
                    }
                }
            }
        }
    }
    // The operator's inputs: `A = W` (node input 1), `B = X` (node input 0), the bias.
    let mut edges = vec![1, 0];
    let bias = if !has_b {
        GemmBias::None
    } else {
        let b = node.input(2)?;
        if b.shape.iter().product::<usize>() != co {
            return Err(Error::Shape(format!("the bias has shape {:?}, expected [{co}]", b.shape)));
        }
        match &b.value {
            Some(v) => GemmBias::Const((0..co * p).map(|o| T::from_f64(v.data[o / p])).collect()),
            None => {
                edges.push(2);
                GemmBias::Input {
                    src: (0..co * p).map(|o| o / p).collect(),
                    scale: vec![T::one(); co * p],
                    n_c: co,
                }
            }
        }
    };
    let op = BilinearGemm {
        op_type: "Conv",
        mm,
        ta: None,
        tb: Some(tb),
        na: co * kk,
        nb: ci * hi * wi,
        alpha: T::one(),
        bias,
    };
    let out: Shape =
        if dims == 1 { Shape::from_slice(&[1, co, g.wo]) } else { Shape::from_slice(&[1, co, g.ho, g.wo]) };
    Ok(BuiltOp::new(op, &edges, out))
}

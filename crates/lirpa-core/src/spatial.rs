//! Geometry of a sliding window over a `[1, C, H, W]` (or `[1, C, L]`) tensor: output
//! size from kernel, strides, dilations, padding (`pads`, `auto_pad`) and `ceil_mode`,
//! and which input position each window tap reads. 1-D windows are normalized to 2-D
//! (`h = 1`, kernel height 1). Operator-free: every windowed operator's plugin reads
//! its attributes through [`Geom::from_attrs`].

use crate::op::NodeDef;
use crate::{Error, Result};

/// Spatial geometry of a sliding window on a `[1, C, H, W]` (or `[1, C, L]`) input.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Geom {
    pub hi: usize,
    pub wi: usize,
    pub ho: usize,
    pub wo: usize,
    pub kh: usize,
    pub kw: usize,
    pub sh: usize,
    pub sw: usize,
    pub dh: usize,
    pub dw: usize,
    /// Padding before the first row and column (padding after only changes `ho`, `wo`).
    pub pt: usize,
    pub pl: usize,
    /// Padding after the last row and column.
    pub pb: usize,
    pub pr: usize,
}

/// `(channels, h, w)` of an input with shape `[1, C, H, W]` or `[1, C, L]`, and the
/// number of spatial dimensions.
pub fn spatial_input(shape: &[usize], op: &str) -> Result<(usize, usize, usize, usize)> {
    match shape {
        [1, c, h, w] => Ok((*c, *h, *w, 2)),
        [1, c, l] => Ok((*c, 1, *l, 1)),
        [n, ..] if *n != 1 && (shape.len() == 3 || shape.len() == 4) => {
            Err(Error::unimplemented(format!("{op} with batch size {n} (only batch 1 is supported)")))
        }
        _ => Err(Error::unimplemented(format!(
            "{op} on an input of shape {shape:?} (expected [1, C, H, W] or [1, C, L])"
        ))),
    }
}

/// Read an attribute list of `dims` integers (or `default` for each), normalized to
/// two entries `[h, w]` (1-D: `[fill, x]`).
fn pair(node: &NodeDef<'_>, name: &str, dims: usize, default: i64, fill: usize) -> Result<[usize; 2]> {
    let v: Vec<i64> = match node.attrs.ints(name)? {
        Some(v) => v.to_vec(),
        None => vec![default; dims],
    };
    if v.len() != dims {
        return Err(Error::Invalid(format!("attribute '{name}' has {} entries, expected {dims}", v.len())));
    }
    if let Some(bad) = v.iter().find(|&&x| x < 0 || (x == 0 && name != "pads")) {
        return Err(Error::Invalid(format!("attribute '{name}' has an invalid entry {bad}")));
    }
    Ok(if dims == 1 { [fill, v[0] as usize] } else { [v[0] as usize, v[1] as usize] })
}

impl Geom {
    /// Geometry from the ONNX attributes `kernel_shape` (or `kernel`), `strides`,
    /// `dilations`, `pads`, `auto_pad` and `ceil_mode`, for an input of `hi × wi`.
    pub fn from_attrs(
        node: &NodeDef<'_>,
        dims: usize,
        hi: usize,
        wi: usize,
        kernel: [usize; 2],
    ) -> Result<Geom> {
        let [sh, sw] = pair(node, "strides", dims, 1, 1)?;
        let [dh, dw] = pair(node, "dilations", dims, 1, 1)?;
        let [kh, kw] = kernel;
        let ceil = node.attrs.int_or("ceil_mode", 0)? != 0;
        let auto_pad = node.attrs.string("auto_pad")?.unwrap_or("NOTSET");
        let extent = |k: usize, d: usize| -> Result<usize> {
            k.saturating_sub(1).checked_mul(d).and_then(|e| e.checked_add(1)).ok_or_else(|| {
                Error::Invalid(format!("the kernel extent ({k} taps, dilation {d}) overflows"))
            })
        };
        let (ekh, ekw) = (extent(kh, dh)?, extent(kw, dw)?);
        let (pt, pl, pb, pr) = match auto_pad {
            "NOTSET" => {
                let p: Vec<i64> = match node.attrs.ints("pads")? {
                    Some(p) => p.to_vec(),
                    None => vec![0; 2 * dims],
                };
                if p.len() != 2 * dims || p.iter().any(|&x| x < 0) {
                    return Err(Error::Invalid(format!("attribute 'pads' {p:?} is invalid for {dims}-D")));
                }
                let p: Vec<usize> = p.iter().map(|&x| x as usize).collect();
                if dims == 1 { (0, p[0], 0, p[1]) } else { (p[0], p[1], p[2], p[3]) }
            }
            "VALID" => (0, 0, 0, 0),
            "SAME_UPPER" | "SAME_LOWER" => {
                let same = |i: usize, s: usize, ek: usize| -> (usize, usize) {
                    let out = i.div_ceil(s);
                    let total = ((out - 1) * s + ek).saturating_sub(i);
                    let small = total / 2;
                    if auto_pad == "SAME_UPPER" { (small, total - small) } else { (total - small, small) }
                };
                let (pt, pb) = if dims == 1 { (0, 0) } else { same(hi, sh, ekh) };
                let (pl, pr) = same(wi, sw, ekw);
                (pt, pl, pb, pr)
            }
            other => return Err(Error::Invalid(format!("unknown auto_pad '{other}'"))),
        };
        let out = |i: usize, p0: usize, p1: usize, s: usize, ek: usize| -> Result<usize> {
            let span = i
                .checked_add(p0)
                .and_then(|v| v.checked_add(p1))
                .ok_or_else(|| Error::Invalid(format!("the padded size {i} + {p0} + {p1} overflows")))?;
            if span < ek {
                return Err(Error::Invalid(format!(
                    "the kernel (extent {ek}) is larger than the padded input ({span})"
                )));
            }
            let mut o = if ceil { (span - ek).div_ceil(s) + 1 } else { (span - ek) / s + 1 };
            // With ceil_mode the last window must start inside the input or the
            // leading padding (ONNX / PyTorch rule).
            if ceil && (o - 1) * s >= i + p0 {
                o -= 1;
            }
            Ok(o)
        };
        let ho = out(hi, pt, pb, sh, ekh)?;
        let wo = out(wi, pl, pr, sw, ekw)?;
        let g = Geom { hi, wi, ho, wo, kh, kw, sh, sw, dh, dw, pt, pl, pb, pr };
        g.check_size()?;
        Ok(g)
    }

    /// Refuse a geometry whose index maps (output positions × kernel taps, per
    /// channel) overflow or exceed the memory budget: builders allocate them.
    pub fn check_size(&self) -> Result<()> {
        crate::budget::checked_numel(&[self.ho, self.wo, self.kh.max(1), self.kw.max(1)]).map_err(|e| {
            Error::Invalid(format!(
                "output {}×{} with a {}×{} kernel: {e}",
                self.ho, self.wo, self.kh, self.kw
            ))
        })?;
        crate::budget::checked_numel(&[self.hi, self.wi])?;
        Ok(())
    }

    /// Input row of output row `y` at kernel row `ky`, if inside the input.
    #[inline]
    pub fn in_h(&self, y: usize, ky: usize) -> Option<usize> {
        let v = (y * self.sh + ky * self.dh) as isize - self.pt as isize;
        (v >= 0 && (v as usize) < self.hi).then_some(v as usize)
    }

    /// Input column of output column `x` at kernel column `kx`, if inside the input.
    #[inline]
    pub fn in_w(&self, x: usize, kx: usize) -> Option<usize> {
        let v = (x * self.sw + kx * self.dw) as isize - self.pl as isize;
        (v >= 0 && (v as usize) < self.wi).then_some(v as usize)
    }

    /// Window size on the input covering a `ph × pw` window of outputs.
    pub fn input_window(&self, ph: usize, pw: usize) -> (usize, usize) {
        ((ph - 1) * self.sh + (self.kh - 1) * self.dh + 1, (pw - 1) * self.sw + (self.kw - 1) * self.dw + 1)
    }
}

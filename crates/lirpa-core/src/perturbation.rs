//! Perturbation sets of a graph input and their concretization: the exact minimum and
//! maximum of a linear function `a · x` over the set.
//!
//! Concretization is the one place where a linear bound becomes a number, so a
//! floating-point-sound mode (outward rounding) only has to change this module and
//! the bias accumulation of the engine, never an operator.

use crate::{Error, Result, Scalar, Window};
use faer::MatRef;
use serde::{Deserialize, Serialize};

/// The norm of an Lp ball.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub enum Norm {
    Inf,
    L2,
    L1,
}

impl std::str::FromStr for Norm {
    type Err = Error;
    fn from_str(s: &str) -> Result<Norm> {
        match s.to_ascii_lowercase().as_str() {
            "inf" | "linf" | "infinity" => Ok(Norm::Inf),
            "2" | "l2" => Ok(Norm::L2),
            "1" | "l1" => Ok(Norm::L1),
            other => Err(Error::Invalid(format!("unknown norm '{other}' (expected inf, 2 or 1)"))),
        }
    }
}

/// A set of values for one graph input, flattened row-major.
#[derive(Clone, Debug, PartialEq)]
pub enum Perturbation<T: Scalar> {
    /// Per-element bounds `lower <= x <= upper`.
    Box { lower: Vec<T>, upper: Vec<T> },
    /// `‖x - center‖_p <= eps`.
    Ball { norm: Norm, center: Vec<T>, eps: T },
}

impl<T: Scalar> Perturbation<T> {
    /// Build and validate a box.
    pub fn new_box(lower: Vec<T>, upper: Vec<T>) -> Result<Self> {
        let p = Perturbation::Box { lower, upper };
        p.validate()?;
        Ok(p)
    }

    /// Build and validate a ball.
    pub fn new_ball(norm: Norm, center: Vec<T>, eps: T) -> Result<Self> {
        let p = Perturbation::Ball { norm, center, eps };
        p.validate()?;
        Ok(p)
    }

    /// Number of elements of the perturbed input.
    pub fn len(&self) -> usize {
        match self {
            Perturbation::Box { lower, .. } => lower.len(),
            Perturbation::Ball { center, .. } => center.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Refuse NaN, infinities, inverted boxes and negative radii.
    pub fn validate(&self) -> Result<()> {
        match self {
            Perturbation::Box { lower, upper } => {
                if lower.len() != upper.len() {
                    return Err(Error::Invalid(format!(
                        "box lower has {} values but upper has {}",
                        lower.len(),
                        upper.len()
                    )));
                }
                for (i, (l, u)) in lower.iter().zip(upper).enumerate() {
                    if !l.is_finite() || !u.is_finite() {
                        return Err(Error::NonFinite(format!("input box element {i}")));
                    }
                    if l > u {
                        return Err(Error::Invalid(format!("input box element {i}: lower {l} > upper {u}")));
                    }
                }
            }
            Perturbation::Ball { center, eps, .. } => {
                if let Some(i) = center.iter().position(|c| !c.is_finite()) {
                    return Err(Error::NonFinite(format!("ball center element {i}")));
                }
                if !eps.is_finite() || *eps < T::zero() {
                    return Err(Error::Invalid(format!("eps must be finite and >= 0, got {eps}")));
                }
            }
        }
        Ok(())
    }

    /// The centre of the set (for a box, the midpoint).
    pub fn center(&self) -> Vec<T> {
        match self {
            Perturbation::Box { lower, upper } => {
                let half = T::from_f64(0.5);
                lower.iter().zip(upper).map(|(&l, &u)| (l + u) * half).collect()
            }
            Perturbation::Ball { center, .. } => center.clone(),
        }
    }

    /// The smallest box containing the set (what IBP propagates).
    pub fn interval(&self) -> (Vec<T>, Vec<T>) {
        match self {
            Perturbation::Box { lower, upper } => (lower.clone(), upper.clone()),
            Perturbation::Ball { center, eps, .. } => {
                (center.iter().map(|&c| c - *eps).collect(), center.iter().map(|&c| c + *eps).collect())
            }
        }
    }

    /// Whether the set is an axis-aligned box (L∞ balls included), on which interval
    /// arithmetic through an affine map is exact.
    pub fn is_box(&self) -> bool {
        matches!(self, Perturbation::Box { .. } | Perturbation::Ball { norm: Norm::Inf, .. })
    }

    /// For each row `a` of `a_mat`, `min_x a·x` (`upper == false`) or `max_x a·x`
    /// (`upper == true`) over the set.
    pub fn concretize(&self, a_mat: MatRef<'_, T>, upper: bool) -> Vec<T> {
        let s = a_mat.nrows();
        let mut center_term = vec![T::zero(); s];
        let mut dev = vec![T::zero(); s];
        match self {
            Perturbation::Box { lower, upper: hi } => return concretize_box(a_mat, lower, hi, upper),
            Perturbation::Ball { norm, center, eps } => {
                // Dual norm: q = 1 for inf, 2 for 2, inf for 1.
                for (j, &c) in center[..a_mat.ncols()].iter().enumerate() {
                    let col = a_mat.col(j);
                    for i in 0..s {
                        center_term[i] += col[i] * c;
                        match norm {
                            Norm::Inf => dev[i] += col[i].abs(),
                            Norm::L2 => dev[i] += col[i] * col[i],
                            Norm::L1 => dev[i] = dev[i].max(col[i].abs()),
                        }
                    }
                }
                for d in dev.iter_mut() {
                    *d = if *norm == Norm::L2 { d.sqrt() * *eps } else { *d * *eps };
                }
            }
        }
        center_term.iter().zip(&dev).map(|(&c, &d)| if upper { c + d } else { c - d }).collect()
    }
}

impl<T: Scalar> Perturbation<T> {
    /// For each row `a` of `a_mat`, a point of the set where `a·x` reaches its minimum
    /// (`upper == false`) or maximum: the gradient of [`concretize`](Self::concretize)
    /// with respect to `a` (a subgradient at ties). Row-major `a_mat.nrows() × len`.
    pub fn extreme_points(&self, a_mat: MatRef<'_, T>, upper: bool) -> Vec<T> {
        let (s, n) = (a_mat.nrows(), a_mat.ncols());
        let mut out = vec![T::zero(); s * n];
        // Direction of steepest increase of `a·x` (decrease for the minimum).
        let sign = |x: T| -> T {
            let up = if upper { x > T::zero() } else { x < T::zero() };
            let down = if upper { x < T::zero() } else { x > T::zero() };
            if up {
                T::one()
            } else if down {
                -T::one()
            } else {
                T::zero()
            }
        };
        match self {
            Perturbation::Box { lower, upper: hi } => {
                let half = T::from_f64(0.5);
                for r in 0..s {
                    for j in 0..n {
                        let (c, rad) = ((lower[j] + hi[j]) * half, (hi[j] - lower[j]) * half);
                        out[r * n + j] = c + sign(a_mat[(r, j)]) * rad;
                    }
                }
            }
            Perturbation::Ball { norm, center, eps } => {
                for r in 0..s {
                    let row = &mut out[r * n..(r + 1) * n];
                    row.copy_from_slice(center);
                    match norm {
                        Norm::Inf => {
                            for j in 0..n {
                                row[j] += sign(a_mat[(r, j)]) * *eps;
                            }
                        }
                        Norm::L2 => {
                            let norm2 =
                                (0..n).map(|j| a_mat[(r, j)] * a_mat[(r, j)]).fold(T::zero(), |a, b| a + b);
                            let norm2 = norm2.sqrt();
                            if norm2 > T::zero() {
                                let dir = if upper { T::one() } else { -T::one() };
                                for j in 0..n {
                                    row[j] += dir * *eps * a_mat[(r, j)] / norm2;
                                }
                            }
                        }
                        Norm::L1 => {
                            let k =
                                (0..n).fold(
                                    0,
                                    |k, j| if a_mat[(r, j)].abs() > a_mat[(r, k)].abs() { j } else { k },
                                );
                            if n > 0 {
                                row[k] += sign(a_mat[(r, k)]) * *eps;
                            }
                        }
                    }
                }
            }
        }
        out
    }
}

impl<T: Scalar> Perturbation<T> {
    /// [`concretize`](Self::concretize) for coefficients in windowed form (see
    /// [`crate::window`]): the same numbers as on the dense form, without building it.
    /// Cells outside the node hold zero (the window invariant) and are skipped.
    pub fn concretize_windowed(&self, m: MatRef<'_, T>, w: &Window, upper: bool) -> Vec<T> {
        let s = m.nrows();
        let (hw, area) = (w.h * w.w, w.ph * w.pw);
        let mut center_term = vec![T::zero(); s];
        let mut dev = vec![T::zero(); s];
        let half = T::from_f64(0.5);
        let norm = match self {
            Perturbation::Box { .. } => Norm::Inf,
            Perturbation::Ball { norm, .. } => *norm,
        };
        for y in 0..w.ph {
            for x in 0..w.pw {
                for r in 0..s {
                    let Some((hy, wx)) = w.position(r, y, x) else { continue };
                    let node = hy * w.w + wx;
                    for ch in 0..w.c {
                        let a = m[(r, ch * area + y * w.pw + x)];
                        let j = ch * hw + node;
                        let (c, rad) = match self {
                            Perturbation::Box { lower, upper: hi } => {
                                ((lower[j] + hi[j]) * half, (hi[j] - lower[j]) * half)
                            }
                            Perturbation::Ball { center, .. } => (center[j], T::one()),
                        };
                        center_term[r] += a * c;
                        match norm {
                            Norm::Inf => dev[r] += a.abs() * rad,
                            Norm::L2 => dev[r] += a * a,
                            Norm::L1 => dev[r] = dev[r].max(a.abs()),
                        }
                    }
                }
            }
        }
        if let Perturbation::Ball { eps, .. } = self {
            for d in dev.iter_mut() {
                *d = if norm == Norm::L2 { d.sqrt() * *eps } else { *d * *eps };
            }
        }
        center_term.iter().zip(&dev).map(|(&c, &d)| if upper { c + d } else { c - d }).collect()
    }
}

/// For each row `a` of `a_mat`, `min` (or `max` when `upper`) of `a·x` over the box
/// `lower <= x <= upper`, computed as `a·c ∓ |a|·r` with centre `c` and radius `r`.
pub fn concretize_box<T: Scalar>(a_mat: MatRef<'_, T>, lower: &[T], hi: &[T], upper: bool) -> Vec<T> {
    let s = a_mat.nrows();
    let half = T::from_f64(0.5);
    let mut center_term = vec![T::zero(); s];
    let mut dev = vec![T::zero(); s];
    for j in 0..a_mat.ncols() {
        let (c, r) = ((lower[j] + hi[j]) * half, (hi[j] - lower[j]) * half);
        let col = a_mat.col(j);
        if r == T::zero() {
            for i in 0..s {
                center_term[i] += col[i] * c;
            }
        } else {
            for i in 0..s {
                center_term[i] += col[i] * c;
                dev[i] += col[i].abs() * r;
            }
        }
    }
    center_term.iter().zip(&dev).map(|(&c, &d)| if upper { c + d } else { c - d }).collect()
}

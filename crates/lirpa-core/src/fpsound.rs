//! Error-bound arithmetic of the floating-point-sound mode.
//!
//! A bound computed in round-to-nearest is, strictly, not a bound: each product and
//! sum may be off by half an ulp. The sound mode keeps the fast products and adds the
//! standard a-priori error bound of a sum of `n` rounded terms,
//! `|fl(Σ aᵢbᵢ) − Σ aᵢbᵢ| ≤ γ_n·Σ|aᵢ|·|bᵢ| + n·η` with `γ_n = n·u/(1 − n·u)` (`u` the
//! unit roundoff, `η` the smallest subnormal, for underflow), whatever the summation
//! order and with or without fused multiply-adds, to the bias of every linear bound,
//! in the outward direction. Everything here is computed in `f64` and rounded up.
//!
//! Operators take part through
//! [`LinearRelaxation::fp_rounding`](crate::op::LinearRelaxation::fp_rounding): an
//! operator that does not describe its rounding is refused by name in the sound mode.

use crate::{Scalar, Window};
use faer::MatRef;

/// How an operator's arithmetic rounds, for the floating-point-sound mode.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct FpRounding {
    pub kind: FpKind,
    /// An upper bound of the rounded operations on the path of any one term of any sum
    /// the operator computes (forward value, interval rule, backward coefficients and
    /// bias): the longest dot product plus the roundings of its own constants. `None`:
    /// the engine takes the number of elements of the output plus those of the inputs
    /// plus [`FpRounding::SLACK`], which bounds any affine map computed by sums.
    pub terms: Option<usize>,
}

/// The operator families the sound mode knows.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum FpKind {
    /// No arithmetic at all: every output element, and every backward coefficient, is a
    /// copy (or a negation) of one input element (reshapes, permutations, slices).
    Exact,
    /// `y = W·x + c`, with an interval rule computed by sums (centre/radius or
    /// `W⁺·l + W⁻·u`), so that on the symmetric box `[−m, m]` it returns
    /// `c ± |W|·m` up to its own rounding. Backward: `Λ·W` and `Λ·c` by sums.
    Affine,
    /// Element-wise, with an interval rule of at most one rounded product per element
    /// (ReLU, LeakyReLU's `α·l`) or a range already widened for the function's own
    /// evaluation error (the plugin kit's smooth functions): every line any of its
    /// relaxations uses, `s·x + b` on input bounds within `[−m, m]`, has
    /// `|s|·m + |b| ≤ line_scale·m + offset`. Backward: one product per coefficient, and
    /// the bias as a sum. `offset > 0` marks a function that floating point does not
    /// compute exactly (a transcendental one): with [`FpSound::Float32Model`] the
    /// deployed network's evaluation of it may differ from the exact function by
    /// [`FpSound::function_error`] times `offset`.
    Elementwise { line_scale: f64, offset: f64 },
    /// Relaxed by lines that select inputs or take constants within the output's range
    /// (MaxPool: `y ≥ x_i*`, `y ≤ x_i*` or `y ≤ max u`): every line `w·x + c` for output
    /// `k` has `|w|·M + |c|` at most the magnitude of the interval rule on the symmetric
    /// box `[−M, M]` of the inputs. The interval rule and the forward value are exact;
    /// backward sums coefficients (at most `terms` per entry) and the bias.
    Selection,
}

impl FpRounding {
    /// Rounded operations allowed beyond the sums' lengths when [`FpRounding::terms`]
    /// is `None` (scalings, folded constants).
    pub const SLACK: usize = 8;
}

impl FpRounding {
    /// A copy or permutation operator reading input element `src[i]` for output `i`
    /// over inputs of `n_in` elements (`None`: a fill value `fill_zero` tells whether it
    /// is 0): [`FpKind::Exact`] when no element is read twice and no non-zero fill
    /// enters a backward bias, else [`FpKind::Affine`] with the longest sum.
    pub fn gather(src: impl Iterator<Item = Option<usize>>, n_in: usize, fill_zero: bool) -> FpRounding {
        let mut count = vec![0usize; n_in];
        let mut fills = 0usize;
        for s in src {
            match s {
                Some(j) if j < n_in => count[j] += 1,
                Some(_) => {}
                None => fills += 1,
            }
        }
        let most = count.into_iter().max().unwrap_or(0);
        let fills = if fill_zero { 0 } else { fills };
        if most <= 1 && fills == 0 {
            FpRounding { kind: FpKind::Exact, terms: Some(0) }
        } else {
            FpRounding { kind: FpKind::Affine, terms: Some(most.max(fills) + FpRounding::SLACK) }
        }
    }
}

/// Which differences from exact arithmetic a sound bound covers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FpSound {
    /// Round to nearest everywhere (the default: fast, and sound only up to rounding).
    #[default]
    Off,
    /// Every bound encloses the exact real-arithmetic output of the model.
    Real,
    /// Also the model's evaluation in `f32` with any summation order (an inference
    /// engine's output).
    Float32Model,
}

impl FpSound {
    pub fn is_on(self) -> bool {
        self != FpSound::Off
    }

    /// The factor `g` such that `g·Σ|terms|` (plus [`FpSound::underflow`]) bounds the rounding
    /// error of a sum of `n`-term products computed in `T`, and, with
    /// [`FpSound::Float32Model`], also the difference between the exact value and its
    /// `f32` evaluation.
    pub fn factor<T: Scalar>(self, n: usize) -> f64 {
        match self {
            FpSound::Off => 0.0,
            FpSound::Real => gamma(unit_roundoff::<T>(), n),
            FpSound::Float32Model => up(gamma(unit_roundoff::<T>(), n) + gamma(unit_roundoff::<f32>(), n)),
        }
    }

    /// The error, relative to a function's range scale (the `offset` of
    /// [`FpKind::Elementwise`]), that [`FpSound::Float32Model`] allows a float32 inference
    /// engine's evaluation of a non-piecewise-linear element-wise function (Sigmoid,
    /// Tanh, ...): `2⁻¹⁷`, 64 ulps of `f32` at 1, far above the error of correctly rounded,
    /// libm-quality or vectorized polynomial implementations. `0` otherwise.
    pub fn function_error(self) -> f64 {
        match self {
            FpSound::Float32Model => 64.0 * unit_roundoff::<f32>() * 2.0,
            _ => 0.0,
        }
    }

    /// The absolute error term per rounded product of a sum of `n` terms (underflow):
    /// `n·η` of `T` (and of `f32` with [`FpSound::Float32Model`]).
    pub fn underflow<T: Scalar>(self, n: usize) -> f64 {
        let eta = |t: f64| t * n as f64;
        match self {
            FpSound::Off => 0.0,
            FpSound::Real => up(eta(tiny::<T>())),
            FpSound::Float32Model => up(eta(tiny::<T>()) + eta(tiny::<f32>())),
        }
    }
}

impl std::str::FromStr for FpSound {
    type Err = crate::Error;
    fn from_str(s: &str) -> crate::Result<FpSound> {
        match s {
            "off" => Ok(FpSound::Off),
            "real" | "" => Ok(FpSound::Real),
            "float32-model" => Ok(FpSound::Float32Model),
            other => Err(crate::Error::Invalid(format!(
                "unknown fp-sound mode '{other}' (expected real, float32-model or off)"
            ))),
        }
    }
}

/// The unit roundoff of `T` (half the machine epsilon).
pub fn unit_roundoff<T: Scalar>() -> f64 {
    T::epsilon().as_f64() / 2.0
}

/// The smallest positive subnormal of `T`.
fn tiny<T: Scalar>() -> f64 {
    T::zero().next_up().as_f64()
}

/// `γ_n = n·u/(1 − n·u)`, rounded up (with margin); infinite when `n·u ≥ 1/2`.
pub fn gamma(u: f64, n: usize) -> f64 {
    let nu = n as f64 * u;
    if nu >= 0.5 { f64::INFINITY } else { up(up(nu) / (1.0 - nu).next_down()) }
}

/// `x` moved up by a relative margin that covers a few `f64` roundings of the
/// computation that gave it (`1 + 2⁻⁴⁰`), and by one ulp.
pub fn up(x: f64) -> f64 {
    if x.is_finite() && x > 0.0 { (x * (1.0 + 1.0 / (1u64 << 40) as f64)).next_up() } else { x }
}

/// The largest `T` at most `b` (a known lower bound rounded outward).
pub fn below<T: Scalar>(b: f64) -> T {
    let v = T::from_f64(b);
    if v.as_f64() > b { v.next_down() } else { v }
}

/// The smallest `T` at least `b` (a known upper bound rounded outward).
pub fn above<T: Scalar>(b: f64) -> T {
    let v = T::from_f64(b);
    if v.as_f64() < b { v.next_up() } else { v }
}

/// A `T` at most `x − w` (`w ≥ 0` an error bound; `x` unchanged when `w = 0`), never
/// of magnitude below [`tiny_floor`] other than 0 (see there).
pub fn lower_by<T: Scalar>(x: T, w: f64) -> T {
    if w == 0.0 || !x.is_finite() {
        return x;
    }
    off_tiny(below::<T>((x.as_f64() - w).next_down()), false)
}

/// A `T` at least `x + w`, never of magnitude below [`tiny_floor`] other than 0.
pub fn raise_by<T: Scalar>(x: T, w: f64) -> T {
    if w == 0.0 || !x.is_finite() {
        return x;
    }
    off_tiny(above::<T>((x.as_f64() + w).next_up()), true)
}

/// `r` moved outward (up when `upward`) to 0 or `±tiny_floor` when it lies strictly
/// between them.
fn off_tiny<T: Scalar>(r: T, upward: bool) -> T {
    let t = tiny_floor::<T>();
    if r == T::zero() || r.abs() >= t {
        r
    } else if upward {
        if r > T::zero() { t } else { T::zero() }
    } else if r < T::zero() {
        -t
    } else {
        T::zero()
    }
}

/// `√(smallest normal)` of `T` (2⁻⁶³ for `f32`, 2⁻⁵¹¹ for `f64`): values moved outward
/// by an error term land at 0 or at least this far from it (still outward), so that
/// the products later computed from them (interval rules, magnitudes) do not go
/// subnormal, which x86 computes about a hundred times slower. An error term on an
/// exact 0 (a dead ReLU's output) would otherwise put subnormals into every following
/// layer's sums.
pub fn tiny_floor<T: Scalar>() -> T {
    T::min_positive_value().sqrt()
}

/// The largest absolute value in `[l, u]`, for every element.
pub fn magnitudes<T: Scalar>(l: &[T], u: &[T]) -> Vec<T> {
    l.iter().zip(u).map(|(a, b)| a.abs().max(b.abs())).collect()
}

/// An upper bound of `Σ_k |m_rk|·v_k` for every row `r` (`v ≥ 0` over the node's
/// elements; `m` dense over them, or windowed by `window`), computed in `f64` with its
/// own rounding covered.
pub fn abs_dot<T: Scalar>(m: MatRef<'_, T>, window: Option<&Window>, v: &[T]) -> Vec<f64> {
    let mut out = vec![0.0f64; m.nrows()];
    let n = m.ncols();
    match window {
        None => {
            for (j, &vj) in v.iter().enumerate().take(n) {
                let vj = vj.as_f64();
                if vj == 0.0 {
                    continue;
                }
                let col = m.col(j);
                for (o, a) in out.iter_mut().zip(col.iter()) {
                    *o += a.as_f64().abs() * vj;
                }
            }
        }
        Some(w) => {
            // Per window cell, each row's node element (once, for every channel).
            let (hw, area) = (w.h * w.w, w.ph * w.pw);
            let mut at = vec![usize::MAX; m.nrows()];
            for y in 0..w.ph {
                for x in 0..w.pw {
                    for (r, a) in at.iter_mut().enumerate() {
                        *a = w.position(r, y, x).map_or(usize::MAX, |(hy, wx)| hy * w.w + wx);
                    }
                    for ch in 0..w.c {
                        let col = m.col(ch * area + y * w.pw + x);
                        let vc = &v[ch * hw..(ch + 1) * hw];
                        for ((o, &k), a) in out.iter_mut().zip(&at).zip(col.iter()) {
                            if k != usize::MAX {
                                *o += a.as_f64().abs() * vc[k].as_f64();
                            }
                        }
                    }
                }
            }
        }
    }
    // Products of two f32 are exact in f64; f64 products and every sum round: a sum of
    // n + 1 non-negative rounded terms is at most (1 + γ) times the computed one; the
    // underflow of f64 products adds at most n·η.
    let g = 1.0 + gamma(unit_roundoff::<f64>(), n + 2);
    let eta = tiny::<f64>() * (n + 1) as f64;
    out.iter_mut().for_each(|o| *o = up(*o * g + eta));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gamma_and_outward_steps() {
        let u = unit_roundoff::<f32>();
        assert_eq!(u, 2f64.powi(-24));
        let g = gamma(u, 10);
        assert!(g > 10.0 * u && g < 10.0 * u * 1.001);
        assert!(gamma(u, 1 << 23).is_infinite());
        // Moving by an error term is strictly outward, never towards the inside.
        let x = 1.0f32;
        assert!(lower_by(x, 1e-30) < x && raise_by(x, 1e-30) > x);
        assert_eq!(lower_by(x, 0.0), x);
        // Error terms on 0 never make subnormals: outward to 0 or past √(smallest normal).
        let t = tiny_floor::<f32>();
        assert_eq!(t as f64, 2f64.powi(-63));
        assert_eq!((lower_by(0.0f32, 1e-45), raise_by(0.0f32, 1e-45)), (-t, t));
        assert_eq!((raise_by(-1e-30f32, 1e-45), lower_by(1e-30f32, 1e-45)), (0.0, 0.0));
        assert!((lower_by(x, 0.25) as f64) <= 0.75 && (raise_by(x, 0.25) as f64) >= 1.25);
        assert_eq!(FpSound::Off.factor::<f32>(100), 0.0);
        assert!(FpSound::Float32Model.factor::<f64>(100) > FpSound::Real.factor::<f32>(100));
    }

    #[test]
    fn abs_dot_bounds_the_absolute_product() {
        let m = faer::mat![[1.0f32, -2.0], [-0.5, 0.25]];
        let d = abs_dot(m.as_ref(), None, &[3.0, 4.0]);
        assert!(d[0] >= 11.0 && d[0] < 11.0 * (1.0 + 1e-12));
        assert!(d[1] >= 2.5 && d[1] < 2.5 * (1.0 + 1e-12));
    }
}

//! The number type of a bound computation: `f32` (the default, as auto_LiRPA) or `f64`.

use std::fmt::{Debug, Display};

/// A real floating-point type usable by the algebra and by every operator.
///
/// Operators are written once, generic over `T: Scalar`, and registered for both
/// `f32` and `f64` by [`crate::register_op!`].
pub trait Scalar:
    faer::traits::RealField
    + num_traits::Float
    + num_traits::NumAssign
    + std::iter::Sum
    + Copy
    + Default
    + Send
    + Sync
    + Debug
    + Display
    + 'static
{
    /// Name used in messages (`"f32"`, `"f64"`).
    const NAME: &'static str;
    fn from_f64(x: f64) -> Self;
    fn as_f64(self) -> f64;
    /// The next representable value towards `+inf` (used by outward rounding).
    fn next_up(self) -> Self;
    /// The next representable value towards `-inf`.
    fn next_down(self) -> Self;
}

impl Scalar for f32 {
    const NAME: &'static str = "f32";
    #[inline]
    fn from_f64(x: f64) -> Self {
        x as f32
    }
    #[inline]
    fn as_f64(self) -> f64 {
        self as f64
    }
    #[inline]
    fn next_up(self) -> Self {
        f32::next_up(self)
    }
    #[inline]
    fn next_down(self) -> Self {
        f32::next_down(self)
    }
}

impl Scalar for f64 {
    const NAME: &'static str = "f64";
    #[inline]
    fn from_f64(x: f64) -> Self {
        x
    }
    #[inline]
    fn as_f64(self) -> f64 {
        self
    }
    #[inline]
    fn next_up(self) -> Self {
        f64::next_up(self)
    }
    #[inline]
    fn next_down(self) -> Self {
        f64::next_down(self)
    }
}

/// Convert a slice of `f64` into `T`.
pub fn cast_vec<T: Scalar>(xs: &[f64]) -> Vec<T> {
    xs.iter().map(|&x| T::from_f64(x)).collect()
}

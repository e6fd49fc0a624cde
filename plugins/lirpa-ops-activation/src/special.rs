//! Special functions std does not provide, in `f64`: `erf`, `erfc`.
//!
//! Accuracy is a few ulps: below 3 the series `erf(x) = 2/√π · e^{-x²} · Σ 2ⁿ x^{2n+1} /
//! (1·3···(2n+1))` (positive terms, no cancellation), above it the continued fraction of
//! `erfc`. The relaxations never rely on this accuracy for soundness: they verify their
//! lines against this very function and widen by a margin (see `line.rs`).

const FRAC_2_SQRT_PI: f64 = std::f64::consts::FRAC_2_SQRT_PI;

/// The error function.
pub fn erf(x: f64) -> f64 {
    if x.is_nan() {
        return f64::NAN;
    }
    if x < 0.0 {
        return -erf(-x);
    }
    if x < 3.0 { erf_series(x) } else { 1.0 - erfc_cf(x) }
}

/// The complementary error function `1 - erf(x)`, accurate for large positive `x`.
pub fn erfc(x: f64) -> f64 {
    if x.is_nan() {
        return f64::NAN;
    }
    if x < 3.0 { 1.0 - erf(x) } else { erfc_cf(x) }
}

fn erf_series(x: f64) -> f64 {
    let x2 = x * x;
    let (mut term, mut sum) = (x, x);
    let mut n = 0.0;
    while term > 1e-17 * sum {
        n += 1.0;
        term *= 2.0 * x2 / (2.0 * n + 1.0);
        sum += term;
        if n > 200.0 {
            break;
        }
    }
    (FRAC_2_SQRT_PI * (-x2).exp() * sum).min(1.0)
}

/// `erfc(x) = e^{-x²}/√π / (x + (1/2)/(x + 1/(x + (3/2)/(x + …))))`, for `x >= 3`.
fn erfc_cf(x: f64) -> f64 {
    if x.is_infinite() {
        return 0.0;
    }
    let mut t = x;
    for n in (1..=80).rev() {
        t = x + (n as f64 / 2.0) / t;
    }
    (-x * x).exp() / (std::f64::consts::PI.sqrt() * t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn erf_matches_known_values() {
        // Values from Abramowitz & Stegun table 7.1 / high-precision references.
        let cases = [
            (0.0, 0.0),
            (0.5, 0.520_499_877_813_046_5),
            (1.0, 0.842_700_792_949_714_9),
            (2.0, 0.995_322_265_018_952_7),
            (3.0, 0.999_977_909_503_001_4),
            (-1.0, -0.842_700_792_949_714_9),
        ];
        for (x, e) in cases {
            assert!((erf(x) - e).abs() < 1e-14, "erf({x}) = {} vs {e}", erf(x));
        }
        // erfc(4) = 1.541725790028002e-8, erfc(6) = 2.151973671249892e-17.
        assert!((erfc(4.0) / 1.541_725_790_028_002e-8 - 1.0).abs() < 1e-12);
        assert!((erfc(6.0) / 2.151_973_671_249_892e-17 - 1.0).abs() < 1e-12);
        assert_eq!(erf(f64::INFINITY), 1.0);
        assert_eq!(erf(f64::NEG_INFINITY), -1.0);
        // Continuity at the switch point.
        assert!((erf(3.0 - 1e-12) - erf(3.0)).abs() < 1e-14);
    }
}

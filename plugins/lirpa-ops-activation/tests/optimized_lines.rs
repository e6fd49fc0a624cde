//! The plugin kit's optimized lines (α-CROWN) for every function of this plugin with
//! tangents: sound for any parameter, and the CROWN lines at the CROWN points.

use lirpa_core::linear::Lines;
use lirpa_kit::{Elementwise, Func};
use lirpa_ops_activation::funcs::{Gelu, Pow, SKind, SShaped, Smooth, SmoothFn, Trig};

/// A small deterministic generator (SplitMix64).
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> f64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Every function with an optimizable relaxation, with a name for messages.
fn optimizable_funcs() -> Vec<Box<dyn Func>> {
    let mut v: Vec<Box<dyn Func>> = Vec::new();
    for k in [SKind::Sigmoid, SKind::Tanh, SKind::Atan, SKind::Erf] {
        v.push(Box::new(SShaped(k)));
    }
    for k in [Smooth::Exp, Smooth::Log, Smooth::Reciprocal, Smooth::Sqrt, Smooth::Softplus] {
        v.push(Box::new(SmoothFn(k)));
    }
    for p in [2.0, 3.0, 4.0, 5.0, -1.0, -2.0, 0.5, 1.5, -0.5, 0.0, 1.0] {
        v.push(Box::new(Pow { p }));
    }
    v.push(Box::new(Trig { cos: false }));
    v.push(Box::new(Trig { cos: true }));
    v.push(Box::new(Gelu { tanh: false }));
    v.push(Box::new(Gelu { tanh: true }));
    v
}

/// A random interval for case `case`: centre and width of several scales; moved to
/// a positive lower end when it leaves the function's domain (`None` if it still
/// does).
fn interval(func: &dyn Func, rng: &mut Rng, case: usize) -> Option<(f64, f64)> {
    let c = (rng.next() - 0.5) * [1.0, 10.0, 100.0][case % 3];
    let w = [0.0, 1e-9, 1e-3, 0.5, 3.0, 40.0][case % 6] * rng.next();
    let (mut l, mut u) = (c - w, c + w);
    if func.domain(l, u).is_err() {
        let start = [0.0, 1e-3, 0.5, 2.0][(case / 6) % 4];
        (l, u) = (start, start + 2.0 * w);
    }
    func.domain(l, u).is_ok().then_some((l, u))
}

/// Optimized lines are sound whatever the parameters: for every optimizable
/// function, random intervals (wide, narrow, degenerate, on either side of 0 and
/// across it) and tangent parameters anywhere (inside the range, outside it, huge,
/// NaN), the lines in `f64` and `f32` contain `f` on a grid of the interval; the
/// CROWN points give the CROWN lines.
#[test]
fn optimized_lines_are_sound_for_any_parameter() {
    let mut rng = Rng(7);
    for func in optimizable_funcs() {
        let name = format!("{func:?}");
        let op = Elementwise::new(func);
        let tg = op.func.tangents().unwrap();
        let (mut checked, mut free) = (0, 0);
        for case in 0..400 {
            let Some((l, u)) = interval(op.func.as_ref(), &mut rng, case) else { continue };
            // Overflow in `f64` or `f32` (Exp, high powers) is an error, not a line.
            let Ok(crown) = op.relaxation::<f64>(&[l], &[u]) else { continue };
            let crown: Lines<f64> = crown.lines(0);
            let es = op.elems::<f64>(tg, &[l], &[u]).unwrap();
            let plan = es[0].plan.unwrap();
            let t0 = |x: Option<(f64, f64, f64)>| x.map_or(0.0, |x| x.0);
            let at_crown = op.lines_at(tg, &es[0], t0(plan.lower), t0(plan.upper)).unwrap();
            assert_eq!(at_crown, crown, "{name} on [{l}, {u}]: CROWN points");
            for (t, lo, hi) in plan.lower.into_iter().chain(plan.upper) {
                assert!(lo <= t && t <= hi, "{name} [{l}, {u}]: CROWN point {t} outside [{lo}, {hi}]");
            }
            free += plan.lower.is_some() as usize + plan.upper.is_some() as usize;
            let Ok(es32) = op.elems::<f32>(tg, &[l as f32], &[u as f32]) else { continue };
            checked += 1;
            for _ in 0..8 {
                // (Slope parameters, Sin and Cos across an extremum, are in [-1, 1].)
                let mut p = || match (rng.next() * 7.0) as usize {
                    0 => f64::NAN,
                    1 => (rng.next() - 0.5) * 1e6,
                    2 => l - rng.next() * 5.0,
                    3 => u + rng.next() * 5.0,
                    4 => rng.next() * 2.0 - 1.0,
                    _ => l + (u - l) * rng.next(),
                };
                let (pl, pu) = (p(), p());
                let l64 = op.lines_at(tg, &es[0], pl, pu).unwrap();
                let Ok(l32) = op.lines_at(tg, &es32[0], pl as f32, pu as f32) else { continue };
                let (l32f, u32f) = (es32[0].l, es32[0].u);
                for i in 0..=200 {
                    let x = l + (u - l) * i as f64 / 200.0;
                    let y = op.func.f(x);
                    assert!(l64[0] * x + l64[1] <= y, "{name} [{l}, {u}] ({pl}, {pu}): lower at {x}");
                    assert!(l64[2] * x + l64[3] >= y, "{name} [{l}, {u}] ({pl}, {pu}): upper at {x}");
                    let x = l32f + (u32f - l32f) * i as f64 / 200.0;
                    let y = op.func.f(x);
                    let lo = l32[0] as f64 * x + l32[1] as f64;
                    let hi = l32[2] as f64 * x + l32[3] as f64;
                    assert!(lo <= y && hi >= y, "{name} f32 [{l32f}, {u32f}] ({pl}, {pu}) at {x}");
                }
            }
        }
        assert!(checked >= 100, "{name}: only {checked} intervals checked");
        let trivial = matches!(name.as_str(), "Pow { p: 0.0 }" | "Pow { p: 1.0 }");
        assert!(trivial || free >= 50, "{name}: only {free} free tangent lines");
    }
}

//! Soundness harness for lirpa operators: does an operator's interval rule and its
//! backward linear relaxation contain the true outputs?
//!
//! For a unary operator (built through the registry from a `NodeDef`, like the importer
//! does), [`check_op`] draws random input intervals (wide, narrow, degenerate, at and
//! near special points such as 0, ±1, ±√2, ±π/2, ±π and overflow thresholds), and for
//! each one samples a dense grid plus random points and the points next to the ends,
//! and checks, in `f32` and in `f64`:
//!
//! - the interval rule: `lower <= f(x) <= upper`;
//! - the backward relaxation, fed with coefficient rows `+1`, `-1` (whose products are
//!   exact, so the check is strict) and random positive and negative magnitudes (checked
//!   up to the rounding of the products in `T`): for every row `c`,
//!   `A_lower·x + b_lower <= c·f(x) <= A_upper·x + b_upper`;
//! - for an operator with an optimizable relaxation (α-CROWN), the same rows with
//!   random parameters of both sides, projected onto the feasible set: any feasible
//!   parameter must give a sound relaxation;
//! - no bound is NaN; an interval outside the operator's domain is an `Error` (counted
//!   as rejected), never NaN.
//!
//! `f(x)` is the operator's own forward evaluation in `f64` (the truth the relaxation
//! must contain). In `f32`, an operator that holds its constants rounded to `f32`
//! computes a slightly different function: its own `f32` forward value, within one ulp,
//! is accepted too. [`check_chains`] then composes random chains of unary operators into
//! graphs and checks IBP, CROWN and CROWN-IBP through the engine.
//!
//! A plugin author calls it in a test of their own crate (after naming the plugin so
//! that its registration is linked):
//!
//! ```no_run
//! let report = lirpa_soundness::check_elementwise_op("Sigmoid", &Default::default(), 10_000, 1).unwrap();
//! assert!(report.is_ok(), "{report}");
//! ```

use faer::Mat;
use lirpa_core::op::{BackwardCtx, Interval, NodeDef, Operator, RelaxOptions};
use lirpa_core::registry::BuilderFor;
use lirpa_core::{
    Attr, Attributes, Error, GraphBuilder, InputDef, LinearA, Par, Perturbation, Result, Scalar, TensorData,
};
use lirpa_engine::{BoundOptions, BoundRequest, InputValue, Method};
use std::fmt;
use std::time::{Duration, Instant};

/// The operator to check: type, attributes and constant inputs after the perturbed one.
#[derive(Clone, Debug)]
pub struct OpSpec {
    pub domain: String,
    pub op_type: String,
    pub opset: i64,
    pub attrs: Attributes,
    /// Inputs 1, 2, … (constants; `None` for an omitted optional input).
    pub const_inputs: Vec<Option<TensorData>>,
}

impl OpSpec {
    pub fn new(op_type: &str) -> Self {
        OpSpec {
            domain: String::new(),
            op_type: op_type.into(),
            opset: 20,
            attrs: Attributes::default(),
            const_inputs: Vec::new(),
        }
    }
    pub fn domain(mut self, domain: &str) -> Self {
        self.domain = domain.into();
        self
    }
    pub fn opset(mut self, opset: i64) -> Self {
        self.opset = opset;
        self
    }
    pub fn attr(mut self, name: &str, value: Attr) -> Self {
        self.attrs.insert(name, value);
        self
    }
    pub fn attrs(mut self, attrs: &Attributes) -> Self {
        self.attrs = attrs.clone();
        self
    }
    /// Append a constant input (e.g. Pow's exponent, Clip's min and max).
    pub fn const_input(mut self, value: Option<TensorData>) -> Self {
        self.const_inputs.push(value);
        self
    }
    /// A short name: the op type with its constant inputs and attributes.
    pub fn label(&self) -> String {
        let mut parts: Vec<String> = self
            .const_inputs
            .iter()
            .map(|c| match c {
                None => "_".into(),
                Some(t) if t.numel() == 1 => format!("{}", t.data[0]),
                Some(t) => format!("{:?}", t.shape),
            })
            .collect();
        parts.extend(self.attrs.0.iter().map(|(k, v)| format!("{k}={v:?}")));
        if parts.is_empty() {
            self.op_type.clone()
        } else {
            format!("{}({})", self.op_type, parts.join(", "))
        }
    }

    /// Build the operator for an input of shape `shape`.
    pub fn build<T: Scalar + BuilderFor>(&self, shape: &[usize]) -> Result<Box<dyn Operator<T>>> {
        let reg = lirpa_core::lookup(&self.domain, &self.op_type).ok_or_else(|| {
            Error::Invalid(format!("operator {} (domain '{}') is not registered", self.op_type, self.domain))
        })?;
        let mut inputs = vec![Some(InputDef { shape: shape.into(), value: None, source: Some(0) })];
        for c in &self.const_inputs {
            inputs.push(c.as_ref().map(|t| InputDef {
                shape: t.shape.clone(),
                value: Some(std::sync::Arc::new(t.clone())),
                source: None,
            }));
        }
        let def = NodeDef {
            name: "checked",
            op_type: &self.op_type,
            domain: &self.domain,
            opset: self.opset,
            attrs: &self.attrs,
            inputs: &inputs,
        };
        let built = (T::builder(reg))(&def).map_err(|e| e.at_node("checked", &self.op_type))?;
        if built.edges.as_slice() != [0] || built.output_shape.as_slice() != shape {
            return Err(Error::Invalid(format!(
                "{} is not a unary element-wise operator here (edges {:?}, output shape {:?})",
                self.label(),
                built.edges,
                built.output_shape
            )));
        }
        Ok(built.op)
    }
}

/// How much to check.
#[derive(Clone, Debug)]
pub struct Config {
    /// Input intervals per number type.
    pub cases: usize,
    pub seed: u64,
    /// Evenly spaced points per interval (ends included).
    pub grid: usize,
    /// Uniformly random points per interval.
    pub random: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config { cases: 1000, seed: 0, grid: 33, random: 16 }
    }
}

/// What a check found.
#[derive(Clone, Debug, Default)]
pub struct Report {
    pub op: String,
    /// Intervals drawn (per number type, both types counted).
    pub intervals: usize,
    /// Intervals the operator refused with an error (outside its domain, overflow).
    pub rejected: usize,
    /// Sampled points checked against the interval and every relaxation row.
    pub samples: u64,
    /// Number of violations (the first ones are described in `failures`).
    pub violations: u64,
    /// Intervals on which the relaxation was also checked with random α-CROWN
    /// parameters (operators with an optimizable relaxation).
    pub optimized: usize,
    pub failures: Vec<String>,
    pub elapsed: Duration,
}

impl Report {
    pub fn is_ok(&self) -> bool {
        self.violations == 0
    }
    fn fail(&mut self, msg: String) {
        self.violations += 1;
        if self.failures.len() < 20 {
            self.failures.push(msg);
        }
    }
    fn merge(&mut self, o: Report) {
        self.intervals += o.intervals;
        self.rejected += o.rejected;
        self.samples += o.samples;
        self.violations += o.violations;
        self.optimized += o.optimized;
        for f in o.failures {
            if self.failures.len() < 20 {
                self.failures.push(f);
            }
        }
        self.elapsed += o.elapsed;
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: {} intervals ({} rejected), {} samples, {} violations, {:.2?}",
            self.op, self.intervals, self.rejected, self.samples, self.violations, self.elapsed
        )?;
        if self.optimized > 0 {
            write!(f, ", {} with random optimized parameters", self.optimized)?;
        }
        for x in &self.failures {
            write!(f, "\n  {x}")?;
        }
        Ok(())
    }
}

pub use lirpa_core::rng::Rng;

/// Points where element-wise functions change behaviour: 0, inflection points,
/// extrema, poles, and the overflow thresholds of `exp` in `f32` and `f64`.
pub const SPECIAL_POINTS: &[f64] = &[
    0.0,
    0.5,
    0.751_791_524_693_564_5, // GELU's minimum
    1.0,
    std::f64::consts::SQRT_2,
    std::f64::consts::FRAC_PI_2,
    2.0,
    3.0,
    std::f64::consts::PI,
    4.712_388_980_384_69,
    std::f64::consts::TAU,
    10.0,
    30.0,
    88.7,
    100.0,
    500.0,
    709.7,
    1e4,
    1e6,
];

/// A random input interval `[l, u]`.
pub fn random_interval(rng: &mut Rng) -> (f64, f64) {
    let special = |rng: &mut Rng| SPECIAL_POINTS[rng.below(SPECIAL_POINTS.len())] * rng.sign();
    match rng.below(8) {
        // Around a special point, any width.
        0 | 1 => {
            let c = special(rng) + rng.sign() * rng.log_uniform(-12.0, 0.0) * (rng.below(2) as f64);
            let w = rng.log_uniform(-10.0, 1.5);
            let a = rng.uniform();
            (c - a * w, c + (1.0 - a) * w)
        }
        // One end exactly at a special point.
        2 => {
            let p = special(rng);
            let w = rng.log_uniform(-8.0, 2.0);
            if rng.below(2) == 0 { (p, p + w) } else { (p - w, p) }
        }
        // Degenerate.
        3 => {
            let x = if rng.below(2) == 0 { special(rng) } else { rng.sign() * rng.log_uniform(-6.0, 3.0) };
            (x, x)
        }
        // Very narrow, anywhere.
        4 => {
            let c = rng.sign() * rng.log_uniform(-4.0, 3.0);
            let w = c.abs().max(1e-300) * rng.log_uniform(-15.0, -6.0);
            (c, c + w)
        }
        // Very wide.
        5 => (-rng.log_uniform(-2.0, 6.0), rng.log_uniform(-2.0, 6.0)),
        // Typical pre-activation ranges.
        _ => {
            let c = rng.sign() * rng.log_uniform(-3.0, 1.5);
            let w = rng.log_uniform(-3.0, 1.0);
            (c - w / 2.0, c + w / 2.0)
        }
    }
}

/// The sampled points of `[l, u]` in `T`: a grid, random points, and the neighbours
/// of the ends.
fn sample_interval<T: Scalar>(l: T, u: T, cfg: &Config, rng: &mut Rng, out: &mut Vec<T>) {
    out.clear();
    let (lf, uf) = (l.as_f64(), u.as_f64());
    let clamp = |x: T| {
        if x < l {
            l
        } else if x > u {
            u
        } else {
            x
        }
    };
    let g = cfg.grid.max(2);
    for i in 0..g {
        let t = i as f64 / (g - 1) as f64;
        out.push(clamp(T::from_f64(lf + (uf - lf) * t)));
    }
    for _ in 0..cfg.random {
        out.push(clamp(T::from_f64(lf + (uf - lf) * rng.uniform())));
    }
    out.push(clamp(l.next_up()));
    out.push(clamp(u.next_down()));
}

/// Check a unary element-wise operator on `cases` random intervals (see the crate
/// documentation). Errors only when the operator cannot be built.
pub fn check_elementwise_op(op_type: &str, attrs: &Attributes, cases: usize, seed: u64) -> Result<Report> {
    check_op(&OpSpec::new(op_type).attrs(attrs), &Config { cases, seed, ..Default::default() })
}

/// Check `spec` with `cfg`, in `f32` and `f64`.
pub fn check_op(spec: &OpSpec, cfg: &Config) -> Result<Report> {
    let truth = Truth { op: spec.build::<f64>(&[1])? };
    let mut r = check_typed::<f64>(spec, cfg, &truth)?;
    r.merge(check_typed::<f32>(spec, &Config { seed: cfg.seed.wrapping_add(1), ..cfg.clone() }, &truth)?);
    r.op = spec.label();
    Ok(r)
}

/// The relaxation rows of `rows` (one element on `[l, u]`) with random parameters for
/// both sides: each drawn as the CROWN initialization, a value in `[0, 1]`, a point of
/// `[l, u]` or anything of the interval's magnitude, then projected.
fn optimized_rows<T: Scalar>(
    opt: &dyn lirpa_core::op::OptimizableRelaxation<T>,
    ctx: &BackwardCtx<'_, T>,
    rows: &[f64],
    l: f64,
    u: f64,
    rng: &mut Rng,
) -> Result<Vec<(f64, f64, f64, f64)>> {
    let init = opt.init_params(ctx)?;
    let draw = |rng: &mut Rng| -> Vec<T> {
        let mut p = Vec::with_capacity(rows.len() * init.len());
        for _ in rows {
            let mut row: Vec<T> = init
                .iter()
                .map(|&x| match rng.below(4) {
                    0 => x,
                    1 => T::from_f64(rng.uniform()),
                    2 => T::from_f64(l + (u - l) * rng.uniform()),
                    _ => T::from_f64((rng.uniform() - 0.5) * 4.0 * l.abs().max(u.abs()).max(1.0)),
                })
                .collect();
            opt.project(ctx, &mut row);
            p.extend(row);
        }
        p
    };
    let (pl, pu) = (draw(rng), draw(rng));
    let a = LinearA::both(Mat::<T>::from_fn(rows.len(), 1, |i, _| T::from_f64(rows[i])), true, true);
    let back =
        opt.backward_with(ctx, a, lirpa_core::op::SideParams { lower: Some(&pl), upper: Some(&pu) })?;
    let Some(Some(ai)) = back.inputs.first() else {
        return Err(Error::Invalid("no coefficients for the input".into()));
    };
    let ai = ai.clone().into_dense();
    let (Some(al), Some(au)) = (ai.lower.as_ref(), ai.upper.as_ref()) else {
        return Err(Error::Invalid("a side was dropped".into()));
    };
    Ok((0..rows.len())
        .map(|r| {
            (
                al[(r, 0)].as_f64(),
                back.bias.lower[r].as_f64(),
                au[(r, 0)].as_f64(),
                back.bias.upper[r].as_f64(),
            )
        })
        .collect())
}

/// The `f64` forward evaluation, the truth the bounds must contain.
struct Truth {
    op: Box<dyn Operator<f64>>,
}

impl Truth {
    fn f(&self, x: f64) -> f64 {
        let mut out = [0.0];
        match self.op.forward(&[&[x]], &mut out) {
            Ok(()) => out[0],
            Err(_) => f64::NAN,
        }
    }
}

fn check_typed<T: Scalar + BuilderFor>(spec: &OpSpec, cfg: &Config, truth: &Truth) -> Result<Report> {
    let start = Instant::now();
    let op = spec.build::<T>(&[1])?;
    let mut rng = Rng::new(cfg.seed);
    let mut rep = Report { op: spec.label(), ..Default::default() };
    let options = RelaxOptions::default();
    let mut xs: Vec<T> = Vec::new();
    let label = format!("{} [{}]", spec.label(), T::NAME);
    for _ in 0..cfg.cases {
        let (l, u) = random_interval(&mut rng);
        let (l, u) = (down::<T>(l), up::<T>(u));
        if !(l.is_finite() && u.is_finite()) {
            continue;
        }
        rep.intervals += 1;
        let bounds = Interval { lower: std::slice::from_ref(&l), upper: std::slice::from_ref(&u) };
        let (mut lo, mut hi) = ([T::zero()], [T::zero()]);
        let ibp = op.interval(&[bounds], &mut lo, &mut hi);
        // Coefficient rows: +1, -1 (exact products), then random magnitudes of both signs.
        let c1 = rng.log_uniform(-3.0, 3.0);
        let c2 = -rng.log_uniform(-3.0, 3.0);
        let rows = [1.0, -1.0, T::from_f64(c1).as_f64(), T::from_f64(c2).as_f64()];
        let a = LinearA::both(Mat::<T>::from_fn(rows.len(), 1, |i, _| T::from_f64(rows[i])), true, true);
        let ctx = BackwardCtx { input_bounds: &[Some(bounds)], options: &options, par: Par::Seq };
        let back = op.backward(&ctx, a);
        let back = match (back, ibp) {
            (Ok(b), Ok(())) => b,
            (Err(e), _) | (_, Err(e)) => {
                if e.to_string().is_empty() {
                    rep.fail(format!("{label}: empty error message on [{l}, {u}]"));
                }
                rep.rejected += 1;
                continue;
            }
        };
        if lo[0].is_nan() || hi[0].is_nan() {
            rep.fail(format!("{label}: NaN interval bound on [{l}, {u}]"));
            continue;
        }
        let Some(Some(ai)) = back.inputs.first() else {
            rep.fail(format!("{label}: the relaxation returned no coefficients for the input"));
            continue;
        };
        let (Some(al), Some(au)) = (ai.lower.as_ref(), ai.upper.as_ref()) else {
            rep.fail(format!("{label}: the relaxation dropped a side"));
            continue;
        };
        let n = rows.len();
        let mut coef: Vec<(f64, f64, f64, f64)> = (0..n)
            .map(|r| {
                (
                    al[(r, 0)].as_f64(),
                    back.bias.lower[r].as_f64(),
                    au[(r, 0)].as_f64(),
                    back.bias.upper[r].as_f64(),
                )
            })
            .collect();
        // An optimizable relaxation must be sound for any parameters: the same rows
        // with random parameters (projected onto the feasible set), appended to `coef`.
        if let Some(opt) = op.optimizable() {
            match optimized_rows(opt, &ctx, &rows, l.as_f64(), u.as_f64(), &mut rng) {
                Ok(extra) => {
                    coef.extend(extra);
                    rep.optimized += 1;
                }
                Err(e) => rep.fail(format!("{label}: optimized relaxation on [{l}, {u}] failed: {e}")),
            }
        }
        if coef[..2]
            .iter()
            .any(|c| !(c.0.is_finite() && c.1.is_finite() && c.2.is_finite() && c.3.is_finite()))
            || coef.iter().any(|c| c.0.is_nan() || c.1.is_nan() || c.2.is_nan() || c.3.is_nan())
        {
            rep.fail(format!("{label}: NaN or infinite relaxation on [{l}, {u}]: {coef:?}"));
            continue;
        }
        sample_interval(l, u, cfg, &mut rng, &mut xs);
        let eps = T::from_f64(1.0).next_up().as_f64() - 1.0;
        // The smallest positive subnormal number of T.
        let tiny = T::zero().next_up().as_f64();
        for &x in &xs {
            let xf = x.as_f64();
            let y = truth.f(xf);
            rep.samples += 1;
            if y.is_nan() {
                rep.fail(format!("{label}: f({xf}) is NaN inside accepted input bounds [{l}, {u}]"));
                continue;
            }
            // In f32, an operator may hold its constants (e.g. LeakyRelu's alpha) rounded
            // to f32: its own forward value, within one f32 ulp, is accepted as well.
            let own = if T::NAME == "f64" {
                None
            } else {
                let mut o = [T::zero()];
                op.forward(&[&[x]], &mut o).ok().map(|_| {
                    let v = o[0];
                    (
                        v.as_f64(),
                        (v.next_up().as_f64() - v.as_f64())
                            .abs()
                            .max((v.as_f64() - v.next_down().as_f64()).abs()),
                    )
                })
            };
            let inside = |lo: f64, hi: f64, c: f64, tol: f64| {
                let ok = |y: f64, t: f64| {
                    let cy = c * y;
                    lo <= cy + t && cy - t <= hi
                };
                ok(y, tol) || own.is_some_and(|(y32, ulp)| ok(y32, tol + c.abs() * ulp))
            };
            if !inside(lo[0].as_f64(), hi[0].as_f64(), 1.0, 0.0) {
                rep.fail(format!(
                    "{label}: interval [{}, {}] on [{l}, {u}] misses f({xf}) = {y}",
                    lo[0], hi[0]
                ));
            }
            for (i, &(kl, bl, ku, bu)) in coef.iter().enumerate() {
                let r = i % n;
                if r >= 2 && !(kl.is_finite() && bl.is_finite() && ku.is_finite() && bu.is_finite()) {
                    // The product of a large row coefficient and a large slope overflowed
                    // T in the caller's arithmetic (rows ±1 are checked finite above).
                    continue;
                }
                let cy = rows[r] * y;
                let (vl, vu) = (kl * xf + bl, ku * xf + bu);
                // Rows ±1 are exact in T: only the f64 evaluation here rounds. Other rows
                // were multiplied in T by the relaxation's backward pass.
                let mag = (kl * xf).abs() + bl.abs() + (ku * xf).abs() + bu.abs() + cy.abs();
                let tol = if r < 2 {
                    4.0 * f64::EPSILON * mag
                } else {
                    // Relative rounding of the products, and their absolute rounding
                    // where they fall among T's subnormal numbers.
                    4.0 * eps * mag + 4.0 * tiny * (1.0 + xf.abs())
                };
                // The truth f(x) itself is rounded (to a subnormal or 0 near underflow).
                let tol = tol + rows[r].abs() * (4.0 * f64::EPSILON * y.abs() + 4.0 * f64::from_bits(1));
                if !inside(vl, vu, rows[r], tol) {
                    rep.fail(format!(
                        "{label}: row {} on [{:e}, {:e}] at x = {xf:e}: {vl:e} <= {cy:e} <= {vu:e} fails (f(x) = {y:e})",
                        rows[r],
                        l.as_f64(),
                        u.as_f64()
                    ));
                }
            }
        }
    }
    rep.elapsed = start.elapsed();
    Ok(rep)
}

fn down<T: Scalar>(x: f64) -> T {
    let t = T::from_f64(x);
    if t.as_f64() > x { t.next_down() } else { t }
}

fn up<T: Scalar>(x: f64) -> T {
    let t = T::from_f64(x);
    if t.as_f64() < x { t.next_up() } else { t }
}

/// Whether the registered operator `op_type` builds as a unary element-wise operator
/// with no attributes and no extra inputs.
pub fn is_unary(domain: &str, op_type: &str) -> bool {
    OpSpec::new(op_type).domain(domain).build::<f64>(&[1]).is_ok()
}

/// Every registered operator that builds as a unary element-wise operator with its
/// default attributes, plus parameterised variants of the standard ones that need
/// constants (Pow exponents, Clip bounds, LeakyRelu slopes, Gelu).
pub fn registered_unary_specs() -> Vec<OpSpec> {
    let mut v: Vec<OpSpec> = lirpa_core::registered_ops()
        .iter()
        .filter(|r| is_unary(r.domain, r.op_type))
        .map(|r| OpSpec::new(r.op_type).domain(r.domain))
        .collect();
    let scalar = |x: f64| Some(TensorData::scalar(x));
    let mut variants = Vec::new();
    for p in [2.0, 3.0, 4.0, 5.0, 0.5, 1.5, -1.0, -2.0, -0.5, 0.0, 1.0] {
        variants.push(OpSpec::new("Pow").const_input(scalar(p)));
    }
    for (a, b) in [(Some(-1.0), Some(1.0)), (Some(0.0), Some(6.0)), (None, Some(0.5)), (Some(-2.0), None)] {
        variants.push(OpSpec::new("Clip").const_input(a.and_then(scalar)).const_input(b.and_then(scalar)));
    }
    variants.push(OpSpec::new("Clip").opset(6).attr("min", Attr::Float(-0.5)).attr("max", Attr::Float(2.0)));
    variants.push(OpSpec::new("LeakyRelu").attr("alpha", Attr::Float(0.2)));
    variants.push(OpSpec::new("Gelu").attr("approximate", Attr::String("tanh".into())));
    for s in variants {
        if s.build::<f64>(&[1]).is_ok() {
            v.push(s);
        }
    }
    v
}

/// Random chains of `depth` unary operators from `specs`, composed into graphs of
/// `width` elements and bounded by IBP, CROWN and CROWN-IBP through the engine on a
/// random box; the bounds must contain the graph's outputs at sampled points. Chains
/// whose bounds the engine refuses with an error (a domain error deep in the chain)
/// count as rejected.
pub fn check_chains(
    specs: &[OpSpec],
    chains: usize,
    depth: usize,
    width: usize,
    seed: u64,
) -> Result<Report> {
    let start = Instant::now();
    let mut rng = Rng::new(seed ^ 0xC4A1);
    let mut rep = Report { op: format!("chains of {depth}"), ..Default::default() };
    if specs.is_empty() {
        return Ok(rep);
    }
    for _ in 0..chains {
        let chain: Vec<&OpSpec> = (0..depth).map(|_| &specs[rng.below(specs.len())]).collect();
        let name = chain.iter().map(|s| s.label()).collect::<Vec<_>>().join(" -> ");
        let mut b = GraphBuilder::<f64>::new();
        b.add_input("x", &[width])?;
        let mut prev = "x".to_string();
        for (i, s) in chain.iter().enumerate() {
            let mut inputs = vec![Some(prev.clone())];
            for (j, c) in s.const_inputs.iter().enumerate() {
                match c {
                    Some(t) => {
                        let n = format!("c{i}_{j}");
                        b.add_constant(&n, t.clone())?;
                        inputs.push(Some(n));
                    }
                    None => inputs.push(None),
                }
            }
            let out = format!("y{i}");
            let refs: Vec<Option<&str>> = inputs.iter().map(|x| x.as_deref()).collect();
            b.add_node(&out, &s.op_type, &s.domain, s.opset, &s.attrs, &refs)?;
            prev = out;
        }
        let graph = b.finish(&[&prev])?;
        let (mut lower, mut upper) = (Vec::with_capacity(width), Vec::with_capacity(width));
        for _ in 0..width {
            let (l, u) = random_interval(&mut rng);
            // Keep chains in ranges where most compositions are defined.
            let (l, u) = (l.clamp(-50.0, 50.0), u.clamp(-50.0, 50.0));
            lower.push(l);
            upper.push(u);
        }
        rep.intervals += 1;
        let ptb = Perturbation::new_box(lower.clone(), upper.clone())?;
        let points: Vec<Vec<f64>> = (0..32)
            .map(|k| {
                (0..width)
                    .map(|j| match k {
                        0 => lower[j],
                        1 => upper[j],
                        _ => lower[j] + (upper[j] - lower[j]) * rng.uniform(),
                    })
                    .collect()
            })
            .collect();
        let outs: Vec<Vec<f64>> =
            points.iter().map(|p| graph.forward(&[p], graph.output().unwrap()).unwrap_or_default()).collect();
        let mut refused = false;
        for method in [Method::Ibp, Method::Crown, Method::CrownIbp] {
            let res = match lirpa_engine::compute_bounds(
                &graph,
                &[InputValue::Perturbed(ptb.clone())],
                &BoundOptions::with_method(method),
                &BoundRequest::default(),
            ) {
                Ok(r) => r,
                Err(_) => {
                    refused = true;
                    continue;
                }
            };
            if res.lower.iter().chain(&res.upper).any(|x| x.is_nan()) {
                rep.fail(format!("{name}: {method:?} gave NaN bounds"));
                continue;
            }
            for y in &outs {
                for (j, &v) in y.iter().enumerate() {
                    if v.is_nan() {
                        continue;
                    }
                    rep.samples += 1;
                    let tol = 1e-9 * v.abs().max(1.0);
                    if res.lower[j] > v + tol || res.upper[j] < v - tol {
                        rep.fail(format!(
                            "{name}: {method:?} bounds [{}, {}] on input [{}, {}] miss output {v}",
                            res.lower[j], res.upper[j], lower[j], upper[j]
                        ));
                    }
                }
            }
        }
        if refused {
            rep.rejected += 1;
        }
    }
    rep.elapsed = start.elapsed();
    Ok(rep)
}

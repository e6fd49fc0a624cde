//! Complete verification of VNN-LIB properties on ONNX models: the answer `unsat`
//! (the property holds: no input of the box reaches the unsafe output set), `sat` with
//! a counterexample, `unknown` or `timeout`.
//!
//! The pipeline ([`verify`]):
//!
//! 1. **Falsification** ([`attack`]): random points and corners of each input box,
//!    then projected gradient descent (sign steps, restarts) on the property margin.
//!    Gradients are not a new trait method: for the piecewise-linear networks handled
//!    here, CROWN on a *degenerate* box `[x, x]` (every ReLU stable, every relaxation
//!    exact) returns, through `BoundRequest::return_a`, the coefficients `C·J(x)`,
//!    the Jacobian of the specification rows at `x`. So the attack reuses the engine
//!    and needs no change to the core or the plugins (for smooth activations the
//!    coefficients are those of the relaxation at a point, a usable descent
//!    direction).
//! 2. **Input-split branch and bound** ([`bab`]) for low-dimensional inputs (ACAS Xu,
//!    control benchmarks): each sub-box is bounded by a [`bab::Bounder`] (CROWN, and
//!    from depth [`VerifyOptions::alpha_depth`] on a few α-CROWN iterations where CROWN
//!    fails), split along the input dimension with the largest
//!    `|A|·width` effect on the open disjuncts' best rows, depth-first in parallel
//!    batches, checking the minimizing corner of each sub-box for a counterexample.
//! 3. For high-dimensional inputs: random points, then one CROWN bound per region;
//!    when it does not prove the property, PGD (a tenth of the time left), an α-CROWN
//!    root bound and **ReLU-split branch and bound** ([`relu_bab`]) until the
//!    deadline; if that ends `unknown` (memory cap, a fully split domain unproven), PGD
//!    runs for at most [`VerifyOptions::extra_attack`].
//!
//! **Soundness rules.** `sat` is returned only with a counterexample whose input lies
//! in the property's box and whose output, from an *independent* `f64` forward pass of
//! the model, satisfies the unsafe conjunction exactly ([`Model::confirm`]).
//! `unsat` is returned only when every disjunct of every region is proven on every
//! leaf box by a bound computed in `f64`. Nothing is returned after the deadline.

pub mod attack;
pub mod bab;
pub mod problem;
pub mod relu_bab;

use lirpa::{Graph, onnx::OnnxError};
pub use problem::{Disjunct, Problem, Region};
use std::path::Path;
use std::time::{Duration, Instant};

/// Errors of the verifier: loading, parsing, mismatched sizes, bound computation.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Onnx(#[from] OnnxError),
    #[error(transparent)]
    Vnnlib(#[from] lirpa_vnnlib::Error),
    #[error(transparent)]
    Bound(#[from] lirpa::Error),
    #[error("{0}")]
    Invalid(String),
}

pub type Result<T> = std::result::Result<T, Error>;

/// A model loaded twice: `f32` (the attack, ONNX semantics) and `f64` (bounds and the
/// independent check of counterexamples).
pub struct Model {
    pub g32: Graph<f32>,
    pub g64: Graph<f64>,
    pub n_inputs: usize,
    pub n_outputs: usize,
}

impl Model {
    /// Load an ONNX model with one input and one output.
    pub fn load(path: impl AsRef<Path>) -> Result<Model> {
        let path = path.as_ref();
        let g32 = lirpa::load_onnx::<f32>(path)?;
        let g64 = lirpa::load_onnx::<f64>(path)?;
        Model::from_graphs(g32, g64).map_err(|e| Error::Invalid(format!("{}: {e}", path.display())))
    }

    /// Load an ONNX model from memory; `name` (a file name, `<bytes>`) names it in errors.
    pub fn load_bytes(bytes: &[u8], name: &str) -> Result<Model> {
        let g32 = lirpa::onnx::load_bytes::<f32>(bytes, name)?;
        let g64 = lirpa::onnx::load_bytes::<f64>(bytes, name)?;
        Model::from_graphs(g32, g64).map_err(|e| Error::Invalid(format!("{name}: {e}")))
    }

    pub fn from_graphs(g32: Graph<f32>, g64: Graph<f64>) -> Result<Model> {
        let n_inputs = g64.node(g64.input()?).numel();
        let n_outputs = g64.node(g64.output()?).numel();
        Ok(Model { g32, g64, n_inputs, n_outputs })
    }

    /// Outputs of the `f64` graph at `x`.
    pub fn forward64(&self, x: &[f64]) -> Result<Vec<f64>> {
        Ok(self.g64.forward(&[x], self.g64.output()?)?)
    }

    /// Outputs of the `f32` graph at `x`.
    pub fn forward32(&self, x: &[f32]) -> Result<Vec<f32>> {
        Ok(self.g32.forward(&[x], self.g32.output()?)?)
    }

    /// Check a candidate `x` (inside `region`'s box) independently: round it to `f32`
    /// values inside the box where possible (so that a float32 run of the model sees
    /// the same point), run the `f64` graph, and accept it only if the output satisfies
    /// an unsafe conjunction of a region containing the point, exactly.
    pub fn confirm(&self, problem: &Problem, region: &Region, x: &[f64]) -> Option<Counterexample> {
        let x = snap(region, x);
        let y = self.forward64(&x).ok()?;
        problem.is_counterexample(&x, &y).then_some(Counterexample { x, y })
    }

    /// The first of the candidates `xs` that [`confirm`](Self::confirm) accepts: they
    /// are evaluated in batched forward passes (a matrix product per layer), one share
    /// per thread of the pool, and a point that looks unsafe there is confirmed by
    /// `confirm`'s own forward pass.
    pub fn confirm_many(
        &self,
        problem: &Problem,
        region: &Region,
        xs: &[Vec<f64>],
    ) -> Option<Counterexample> {
        use rayon::prelude::*;
        // A share below this many points is not worth a thread.
        const MIN_SHARE: usize = 8;
        let share = xs.len().div_ceil(rayon::current_num_threads().max(1)).max(MIN_SHARE);
        if xs.len() > share {
            return xs.par_chunks(share).find_map_first(|part| self.confirm_batch(problem, region, part));
        }
        self.confirm_batch(problem, region, xs)
    }

    /// [`confirm_many`](Self::confirm_many) on the calling thread.
    fn confirm_batch(&self, problem: &Problem, region: &Region, xs: &[Vec<f64>]) -> Option<Counterexample> {
        if xs.len() < 2 {
            return xs.first().and_then(|x| self.confirm(problem, region, x));
        }
        let snapped: Vec<Vec<f64>> = xs.iter().map(|x| snap(region, x)).collect();
        let flat: Vec<f64> = snapped.iter().flatten().copied().collect();
        let Ok(ys) = self.g64.forward_batch(&flat, xs.len()) else {
            return xs.iter().find_map(|x| self.confirm(problem, region, x));
        };
        let m = ys.len() / xs.len();
        snapped
            .iter()
            .zip(ys.chunks(m.max(1)))
            .filter(|(x, y)| problem.is_counterexample(x, y))
            .find_map(|(x, _)| self.confirm(problem, region, x))
    }

    /// Whether counterexample `ce` violates the property when the model runs in `f32`
    /// (its own precision, at `x` rounded to `f32`) and in `f64`: `(f32, f64)`.
    pub fn recheck(&self, problem: &Problem, ce: &Counterexample) -> (bool, bool) {
        let x32: Vec<f32> = ce.x.iter().map(|&v| v as f32).collect();
        let in_f32 = self.forward32(&x32).ok().is_some_and(|y| {
            let x: Vec<f64> = x32.iter().map(|&v| v as f64).collect();
            let y: Vec<f64> = y.iter().map(|&v| v as f64).collect();
            problem.is_counterexample(&x, &y)
        });
        let in_f64 = self.forward64(&ce.x).ok().is_some_and(|y| problem.is_counterexample(&ce.x, &y));
        (in_f32, in_f64)
    }

    fn check_sizes(&self, p: &Problem) -> Result<()> {
        if p.n_inputs != self.n_inputs || p.n_outputs != self.n_outputs {
            return Err(Error::Invalid(format!(
                "the property declares {} inputs and {} outputs, the model has {} and {}",
                p.n_inputs, p.n_outputs, self.n_inputs, self.n_outputs
            )));
        }
        Ok(())
    }
}

/// `x` clamped to `region`'s box and rounded to `f32` values inside it where possible
/// (so that a float32 run of the model sees the same point).
fn snap(region: &Region, x: &[f64]) -> Vec<f64> {
    x.iter()
        .zip(region.lower.iter().zip(&region.upper))
        .map(|(&v, (&l, &u))| {
            let v = v.clamp(l, u);
            let mut r = v as f32;
            if (r as f64) < l {
                r = r.next_up();
            }
            if (r as f64) > u {
                r = r.next_down();
            }
            if (r as f64) >= l && (r as f64) <= u { r as f64 } else { v }
        })
        .collect()
}

/// An input that violates the property and the model's output there (`f64` forward).
#[derive(Clone, Debug, PartialEq)]
pub struct Counterexample {
    pub x: Vec<f64>,
    pub y: Vec<f64>,
}

impl Counterexample {
    /// VNN-COMP form: `((X_0 v)\n(X_1 v)\n...\n(Y_m v))`, values printed so that they
    /// read back exactly.
    pub fn to_vnncomp(&self) -> String {
        let mut s = String::from("(");
        let n = self.x.len() + self.y.len();
        let vars = self.x.iter().enumerate().map(|(i, v)| ("X", i, v));
        for (k, (name, i, v)) in vars.chain(self.y.iter().enumerate().map(|(j, v)| ("Y", j, v))).enumerate() {
            s.push_str(&format!("({name}_{i} {v})"));
            s.push_str(if k + 1 == n { ")" } else { "\n" });
        }
        s
    }
}

/// The answer.
#[derive(Clone, Debug, PartialEq)]
pub enum Verdict {
    /// The property holds.
    Unsat,
    /// A checked counterexample.
    Sat(Counterexample),
    /// Neither proven nor falsified (with the reason).
    Unknown(String),
    /// The deadline came first.
    Timeout,
}

impl Verdict {
    /// The word of the VNN-COMP result file.
    pub fn word(&self) -> &'static str {
        match self {
            Verdict::Unsat => "unsat",
            Verdict::Sat(_) => "sat",
            Verdict::Unknown(_) => "unknown",
            Verdict::Timeout => "timeout",
        }
    }

    /// The VNN-COMP result file's content.
    pub fn vnncomp_text(&self) -> String {
        match self {
            Verdict::Sat(ce) => format!("sat\n{}\n", ce.to_vnncomp()),
            v => format!("{}\n", v.word()),
        }
    }
}

/// Progress of a long run, for a user.
#[derive(Clone, Debug)]
pub struct Progress {
    pub phase: &'static str,
    /// Sub-boxes (domains) bounded so far.
    pub domains: u64,
    /// Domains waiting.
    pub pending: usize,
    /// The smallest best-row margin among the domains of the last batch (`> 0` proves).
    pub worst_bound: f64,
    pub elapsed: Duration,
    /// Domains bounded per second in this phase.
    pub per_second: f64,
}

/// The root bound of the ReLU-split phase.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum RootBound {
    /// [`relu_bab::RootBounder`] when the time left affords it (all intermediate
    /// bounds optimized within a parameter budget, else the last ones that fit, else
    /// none); [`RootBound::Final`] otherwise.
    #[default]
    Auto,
    /// α-CROWN: every intermediate bound optimized jointly with the final one.
    Optimized,
    /// CROWN's intermediate bounds kept; only the final bound's α (and β) optimized,
    /// as in the sub-domains.
    Final,
}

/// Options of [`verify`].
pub struct VerifyOptions<'a> {
    /// Nothing is returned after this instant (a `Timeout` is returned at it).
    pub deadline: Instant,
    pub seed: u64,
    /// Random points per region in the first attack phase.
    pub samples: usize,
    /// PGD restarts and steps in the first attack phase.
    pub pgd_restarts: usize,
    pub pgd_steps: usize,
    /// Input-split branch and bound when the input has at most this many elements.
    pub max_split_inputs: usize,
    /// Sub-boxes bounded per parallel batch.
    pub batch: usize,
    /// PGD steps of the attack run in the worst box of each branch-and-bound batch
    /// (0: none, the default: on the hard ACAS Xu sat instances it found nothing the
    /// corner checks did not).
    pub local_steps: usize,
    /// See [`bab::BabOptions::lookahead_depth`].
    pub lookahead_depth: u32,
    /// After an `unknown` from the bounds, at most this long more is spent attacking.
    pub extra_attack: Duration,
    /// ReLU-split branch and bound for inputs not split (after CROWN, PGD and an
    /// α-CROWN root bound).
    pub relu_split: bool,
    /// α-CROWN iterations of the ReLU-split root bound.
    pub alpha_iterations: usize,
    /// Which root bound starts the ReLU-split phase.
    pub root: RootBound,
    /// Input split: α-CROWN iterations for the boxes CROWN does not prove from depth
    /// `alpha_depth` on (0: CROWN only).
    pub alpha_split_iterations: usize,
    pub alpha_depth: u32,
    /// Options of the ReLU-split loop.
    pub relu_bab: relu_bab::ReluBabOptions,
    /// Called about once a second during long phases.
    pub progress: Option<&'a (dyn Fn(&Progress) + Sync)>,
    /// Floating-point-sound bounds for every proof (`unsat` only from bounds that
    /// enclose the exact output, see [`lirpa::BoundOptions::fp_sound`]).
    pub fp_sound: lirpa::core::FpSound,
}

impl VerifyOptions<'_> {
    pub fn with_timeout(timeout: Duration) -> Self {
        VerifyOptions {
            deadline: Instant::now() + timeout,
            seed: 0,
            samples: 256,
            pgd_restarts: 8,
            pgd_steps: 40,
            max_split_inputs: 16,
            batch: 64,
            lookahead_depth: 10,
            local_steps: 0,
            extra_attack: Duration::from_secs(30),
            relu_split: true,
            alpha_iterations: 20,
            root: RootBound::Auto,
            // ACAS Xu property 2 on 3_3 / 4_2: CROWN alone times out at 116 s; with
            // 3 α-CROWN iterations from depth 12 on, 47 s / 18 s (from depth 0: 4_2 in
            // 34 s, 3_3 over 70 s).
            alpha_split_iterations: 3,
            alpha_depth: 12,
            relu_bab: relu_bab::ReluBabOptions::default(),
            progress: None,
            fp_sound: lirpa::core::FpSound::Off,
        }
    }
}

/// Statistics of a run.
#[derive(Clone, Debug, Default)]
pub struct Stats {
    pub domains: u64,
    pub attack_time: Duration,
    pub bab_time: Duration,
}

/// How many CROWN bounds of the model the time left must cover before the split phase
/// starts with an α-CROWN root bound (optimized intermediate bounds, then sub-domains).
const ALPHA_ROOT_COST: u32 = 40;

/// How many CROWN bounds of the model the time left must cover for a root that
/// optimizes every intermediate bound ([`relu_bab::RootPlan::Optimized`]); with less,
/// at most the last ones within [`MAX_PARTIAL_ROOT_ALPHA_PARAMS`] are. That root costs
/// 130-400 CROWN bounds (2 threads, `crown_cost` against the root's time): resnet_2b
/// 31.3 s against 0.245 s (0.16 s in a run with faster allocation), oval21
/// cifar_deep_kw 7.5 s against 0.023 s, cifar_wide_kw 4.8 s against 0.012 s,
/// cifar_base_kw 1.4 s against 0.005 s. On resnet_2b the full root does not pay: with
/// a 10 s cap it took the whole budget (27 of the 41 expected-unsat properties proven,
/// 37 with the partly optimized root, 36 with the final-only one), and at 60 s the
/// partly optimized root proves all 41 too (the slowest, prop_35, at 39.4 s; prop_10
/// at 20.7 s, 35.9 s after the full root).
const OPTIMIZED_ROOT_COST: u32 = 400;

/// With less time than that but this many CROWN bounds' worth, the root keeps CROWN's
/// intermediate bounds and optimizes the final bound only (as the sub-domains do).
const BETA_ROOT_COST: u32 = 4;

/// Most α parameters of an optimized root bound (see [`relu_bab::RootBounder`] and
/// [`relu_bab::alpha_params`]). Measured with 2 threads: oval21 cifar_deep_kw (5.4
/// million) takes 10 s for its 20 iterations, cifar_base_kw (0.4 million) 1 s; the
/// 4-block CIFAR ResNet (10-18 million) over 200 s and 7 GB, where the final-only root
/// proves 2 more of its properties in 60 s (11 of 17 expected unsat instead of 9).
const MAX_ROOT_ALPHA_PARAMS: usize = 8_000_000;

/// Above [`MAX_ROOT_ALPHA_PARAMS`], the root optimizes the intermediate bounds of the
/// last split nodes whose parameters come to at most this many.
const MAX_PARTIAL_ROOT_ALPHA_PARAMS: usize = 2_000_000;

/// Verify `problem` on `model`. See the crate documentation for the pipeline.
pub fn verify(model: &Model, problem: &Problem, opts: &VerifyOptions<'_>) -> Result<(Verdict, Stats)> {
    model.check_sizes(problem)?;
    let start = Instant::now();
    let mut stats = Stats::default();
    if problem.regions.is_empty() {
        return Ok((Verdict::Unsat, stats)); // no input satisfies the input constraints
    }

    // 1. Falsification. For high-dimensional inputs only the cheap random points come
    // first: one CROWN bound often settles the property, and PGD (a bound per step)
    // runs after it when it does not.
    let t = Instant::now();
    let split = problem.n_inputs <= opts.max_split_inputs;
    let budget = attack::Budget {
        deadline: opts.deadline,
        samples: opts.samples,
        restarts: if split { opts.pgd_restarts } else { 0 },
        steps: opts.pgd_steps,
    };
    let found = attack::attack(model, problem, &budget, opts.seed)?;
    stats.attack_time += t.elapsed();
    if let Some(ce) = found {
        return Ok((Verdict::Sat(ce), stats));
    }
    if Instant::now() >= opts.deadline {
        return Ok((Verdict::Timeout, stats));
    }

    // 2. Bounds: input split, or one CROWN bound per region.
    let t = Instant::now();
    // Many small bounds in parallel when splitting; one bound on all cores otherwise.
    let bounder =
        bab::CrownBounder::with_threads(&model.g64, if split { 1 } else { 0 }).fp_sound(opts.fp_sound);
    let alpha = bab::CrownBounder::alpha(&model.g64, opts.alpha_split_iterations, Some(opts.deadline))
        .fp_sound(opts.fp_sound);
    let strong: Option<&dyn bab::Bounder> = (split && opts.alpha_split_iterations > 0).then_some(&alpha as _);
    let bab_opts = bab::BabOptions {
        batch: opts.batch,
        max_depth: if split { 200 } else { 0 },
        lookahead_depth: opts.lookahead_depth,
        max_pending: 400_000,
        strong_depth: opts.alpha_depth,
    };
    let mut unknown: Option<String> = None;
    let mut timed_out = false;
    for region in &problem.regions {
        let check = |x: &[f64]| model.confirm(problem, region, x);
        let check_many = |xs: &[Vec<f64>]| model.confirm_many(problem, region, xs);
        let report = |p: &Progress| {
            if let Some(f) = opts.progress {
                f(&Progress { elapsed: start.elapsed(), ..p.clone() })
            }
        };
        let ri = problem.regions.iter().position(|r| std::ptr::eq(r, region)).expect("own region");
        let local_attack = |l: &[f64], u: &[f64], open: &[usize]| -> Result<Option<Counterexample>> {
            let budget =
                attack::Budget { deadline: opts.deadline, samples: 0, restarts: 1, steps: opts.local_steps };
            let mut rng =
                lirpa::sample::Rng::new(opts.seed ^ l.iter().map(|v| v.to_bits()).fold(0, |a, b| a ^ b));
            for &di in open {
                if let Some(ce) = attack::pgd(model, problem, ri, di, (l, u), false, &budget, &mut rng)? {
                    return Ok(Some(ce));
                }
            }
            Ok(None)
        };
        let (mut res, n) = bab::input_split(
            region,
            &bounder,
            strong,
            &check,
            &local_attack,
            &bab_opts,
            opts.deadline,
            &report,
        )?;
        stats.domains += n;
        // The CROWN bounds so far measure the model's cost: an α-CROWN iteration costs
        // tens of them (and cannot be interrupted), so the ReLU-split phase only starts
        // when enough time is left for a few.
        let crown_cost = t.elapsed();
        let left = opts.deadline.saturating_duration_since(Instant::now());
        let affordable = left > crown_cost * BETA_ROOT_COST;
        let full_root = left > crown_cost * ALPHA_ROOT_COST;
        // Every intermediate bound optimized only with time for it; otherwise at most
        // the last ones within the partial budget (which stops at a third of the time).
        let max_root_params = if left > crown_cost * OPTIMIZED_ROOT_COST { MAX_ROOT_ALPHA_PARAMS } else { 0 };
        if !split && opts.relu_split && affordable && matches!(res, bab::BabResult::Unknown(_)) {
            // CROWN did not prove the region: PGD (a tenth of the time left), then an
            // α-CROWN root bound and ReLU-split branch and bound.
            let now = Instant::now();
            let budget = attack::Budget {
                deadline: now + opts.deadline.saturating_duration_since(now) / 10,
                samples: 0,
                restarts: opts.pgd_restarts.max(1),
                steps: opts.pgd_steps,
            };
            let ta = Instant::now();
            let found = attack::attack(model, problem, &budget, opts.seed.wrapping_add(2))?;
            stats.attack_time += ta.elapsed();
            if let Some(ce) = found {
                stats.bab_time += t.elapsed();
                return Ok((Verdict::Sat(ce), stats));
            }
            let nodes = relu_bab::split_nodes(&model.g64);
            // With little time, optimized intermediate bounds cost too much: the root
            // keeps CROWN's and optimizes the final bound only, as the sub-domains do.
            // Smooth activations (general branching) get the same root as ReLUs: on
            // ERAN sigmoid 6x200 the optimized root proves in 3-5 s the 9
            // expected-unsat properties that the final-only root left to the split
            // (5 of them open at 60 s).
            let optimized = relu_bab::ClampBounder::new(
                &model.g64,
                lirpa::Method::AlphaCrown,
                opts.alpha_iterations,
                0,
                Some(opts.deadline),
            )
            .fp_sound(opts.fp_sound);
            let final_only =
                relu_bab::ClampBounder::beta(&model.g64, opts.alpha_iterations, 0, Some(opts.deadline))
                    .fp_sound(opts.fp_sound);
            // The root, and whether it optimizes every intermediate bound.
            let (root, optimized_root): (Box<dyn relu_bab::SplitBounder>, bool) = match opts.root {
                _ if !opts.relu_bab.beta => (Box::new(optimized), true),
                RootBound::Auto if !full_root => (Box::new(final_only), false),
                RootBound::Auto => {
                    let root = relu_bab::RootBounder::new(
                        optimized,
                        final_only,
                        max_root_params,
                        MAX_PARTIAL_ROOT_ALPHA_PARAMS,
                    );
                    let full = root.plan(&region.lower, &region.upper)? == relu_bab::RootPlan::Optimized;
                    (Box::new(root), full)
                }
                RootBound::Optimized => (Box::new(optimized), true),
                RootBound::Final => (Box::new(final_only), false),
            };
            let sub_iterations = opts
                .relu_bab
                .sub_iterations
                .unwrap_or_else(|| relu_bab::sub_iterations(optimized_root && opts.relu_bab.beta));
            let sub = match (sub_iterations, opts.relu_bab.beta) {
                (0, _) => relu_bab::ClampBounder::new(&model.g64, lirpa::Method::Crown, 0, 1, None),
                (k, true) => relu_bab::ClampBounder::beta(&model.g64, k, 1, Some(opts.deadline)),
                (k, false) => relu_bab::ClampBounder::new(
                    &model.g64,
                    lirpa::Method::AlphaCrown,
                    k,
                    1,
                    Some(opts.deadline),
                ),
            }
            .fp_sound(opts.fp_sound);
            let local = |x: &[f64], di: usize| -> Result<Option<Counterexample>> {
                let budget = attack::Budget {
                    deadline: opts.deadline,
                    samples: 0,
                    restarts: 1,
                    steps: opts.pgd_steps / 2,
                };
                attack::pgd_from(model, problem, ri, di, (&region.lower, &region.upper), x.to_vec(), &budget)
            };
            let (r, n) = relu_bab::relu_split(
                region,
                &nodes,
                root.as_ref(),
                &sub,
                &check_many,
                &local,
                &opts.relu_bab,
                opts.deadline,
                &report,
            )?;
            stats.domains += n;
            res = r;
        }
        match res {
            bab::BabResult::Proven => {}
            bab::BabResult::Counterexample(ce) => {
                stats.bab_time += t.elapsed();
                return Ok((Verdict::Sat(ce), stats));
            }
            bab::BabResult::Timeout => {
                timed_out = true;
                break;
            }
            bab::BabResult::Unknown(why) => unknown = unknown.or(Some(why)),
        }
    }
    stats.bab_time += t.elapsed();
    if timed_out {
        return Ok((Verdict::Timeout, stats));
    }
    let Some(why) = unknown else { return Ok((Verdict::Unsat, stats)) };

    // 3. Not proven: spend the remaining time on the attack.
    let t = Instant::now();
    let deadline = opts.deadline.min(Instant::now() + opts.extra_attack);
    let budget = attack::Budget { deadline, samples: 0, restarts: usize::MAX, steps: opts.pgd_steps };
    let found = attack::attack(model, problem, &budget, opts.seed.wrapping_add(1))?;
    stats.attack_time += t.elapsed();
    Ok((found.map_or(Verdict::Unknown(why), Verdict::Sat), stats))
}

/// Longest timeout accepted, in seconds (a week).
pub const MAX_TIMEOUT: f64 = 604_800.0;

/// Check a timeout in seconds: positive, finite and at most [`MAX_TIMEOUT`].
pub fn check_timeout(seconds: f64) -> Result<Duration> {
    if !seconds.is_finite() || seconds <= 0.0 || seconds > MAX_TIMEOUT {
        return Err(Error::Invalid(format!(
            "the timeout must be a positive number of seconds, at most {MAX_TIMEOUT} (a week), got {seconds}"
        )));
    }
    Ok(Duration::from_secs_f64(seconds))
}

/// Read a VNN-LIB property file within the memory budget (an eighth of
/// `lirpa_core::budget::max_memory`).
pub fn read_property(path: impl AsRef<Path>) -> Result<lirpa_vnnlib::Property> {
    Ok(lirpa_vnnlib::parse_file_limited(path, lirpa::core::budget::max_memory() / 8)?)
}

/// [`verify`] with a time limit counted from `started` (a process start, a call): the
/// search stops a margin before it (2% of the timeout, at least 0.1 s and at most 1 s,
/// for writing the answer), and an answer found after the limit is a
/// [`Verdict::Timeout`]. `opts.deadline` is set from them.
pub fn verify_within(
    model: &Model,
    problem: &Problem,
    started: Instant,
    timeout: Duration,
    opts: &mut VerifyOptions<'_>,
) -> Result<(Verdict, Stats)> {
    let secs = timeout.as_secs_f64();
    let margin = Duration::from_secs_f64((secs * 0.02).clamp(0.1, 1.0)).min(timeout / 2);
    opts.deadline = started + timeout - margin;
    let (verdict, stats) = verify(model, problem, opts)?;
    let verdict = if Instant::now() > started + timeout { Verdict::Timeout } else { verdict };
    Ok((verdict, stats))
}

/// Parse a property and verify it on a model file, with a timeout from now.
pub fn verify_files(
    model: impl AsRef<Path>,
    vnnlib: impl AsRef<Path>,
    opts: &VerifyOptions<'_>,
) -> Result<(Verdict, Stats)> {
    let model = Model::load(model)?;
    let problem = Problem::from_property(&lirpa_vnnlib::parse_file(vnnlib)?);
    verify(&model, &problem, opts)
}

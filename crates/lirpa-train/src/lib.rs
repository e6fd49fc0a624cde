//! Certified training: natural, IBP and CROWN-IBP training of an ONNX model's
//! initializers, with auto_LiRPA's recipe (Adam, an ε ramp, the κ mixing of natural and
//! robust cross-entropy, the β mixing of CROWN-IBP and IBP bounds, a step learning-rate
//! decay once ε is full), on batches bounded at once by [`lirpa::TrainGraph`].
//!
//! The robust loss of a sample with label `y` is the cross-entropy of the negated lower
//! bounds of its margins `z_y - z_j` (`j ≠ y`): `log(1 + Σ_j exp(-lb_j))`, which bounds the
//! cross-entropy of every output the perturbation set can produce.

mod data;
mod schedule;

pub use data::{DataError, Dataset};
pub use schedule::{EpsSchedule, Recipe};

use faer::{Mat, Par};
use lirpa::core::RelaxOptions;
use lirpa::{Error, Graph, SpecMethod, TrainGraph};
use std::time::Instant;

/// How the training loss bounds the outputs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TrainMethod {
    /// Cross-entropy of the clean outputs only.
    Natural,
    /// IBP bounds of the margins (the margin matrix folded into the last layer).
    Ibp,
    /// CROWN-IBP: `β·lb_CROWN-IBP + (1 − β)·lb_IBP`, β from 1 to 0 over the ramp.
    CrownIbp,
    /// CROWN: every intermediate bound by a backward pass (tighter, and far more
    /// expensive: a pass per activation layer with two rows per neuron and sample).
    Crown,
}

impl std::str::FromStr for TrainMethod {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "natural" => Ok(TrainMethod::Natural),
            "ibp" => Ok(TrainMethod::Ibp),
            "crown-ibp" => Ok(TrainMethod::CrownIbp),
            "crown" => Ok(TrainMethod::Crown),
            other => Err(format!("unknown training method '{other}' (natural, ibp, crown-ibp, crown)")),
        }
    }
}

/// The norm of the input set.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum InputNorm {
    /// The box `[x − ε, x + ε]`, intersected with the clipping range.
    #[default]
    Inf,
    /// The L2 ball of radius ε around `x` (clipping does not apply).
    L2,
}

/// Everything one training run is configured by.
#[derive(Clone, Debug)]
pub struct TrainConfig {
    pub method: TrainMethod,
    pub recipe: Recipe,
    pub norm: InputNorm,
    /// The input set of a sample `x` is the L∞ box `[x − ε, x + ε]`, intersected with
    /// `clip` when given (the data's valid range).
    pub clip: Option<(f32, f32)>,
    pub seed: u64,
    /// Threads of the dense products (1: sequential).
    pub threads: usize,
    /// Radius of an L∞ ball around every weight at the end of the ramp (0: exact
    /// weights): the robust loss then bounds the worst case over the weights as well
    /// (flat networks, which keep their accuracy when the weights are quantized).
    pub weight_eps: f64,
    /// Loss fusion (auto_LiRPA's `loss_fusion`): bound the cross-entropy itself,
    /// `log Σ_j exp(y_j − y_label)`, from above, so that the CROWN-IBP backward pass has
    /// one row per sample instead of one per margin.
    pub loss_fusion: bool,
}

impl Default for TrainConfig {
    /// Natural training with [`Recipe::default`], no clipping, seed 0, one thread.
    fn default() -> Self {
        TrainConfig {
            method: TrainMethod::Natural,
            recipe: Recipe::default(),
            norm: InputNorm::Inf,
            clip: None,
            seed: 0,
            threads: 1,
            weight_eps: 0.0,
            loss_fusion: false,
        }
    }
}

/// What one epoch did.
#[derive(Clone, Debug)]
pub struct EpochStats {
    pub epoch: usize,
    pub lr: f64,
    pub eps_first: f64,
    pub eps_last: f64,
    /// Mean loss over the epoch's samples.
    pub loss: f64,
    /// Mean robust cross-entropy over the samples of batches with ε > 0.
    pub robust_ce: f64,
    /// Fraction of training samples misclassified (clean).
    pub clean_err: f64,
    /// Fraction of training samples (of batches with ε > 0) with a margin bound ≤ 0.
    pub verified_err: f64,
    pub seconds: f64,
}

/// An error of training, naming what went wrong.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error(transparent)]
    Lirpa(#[from] Error),
    #[error(transparent)]
    Data(#[from] DataError),
    #[error("{0}")]
    Invalid(String),
}

/// The margin matrix of labels: for each sample, rows `e_y − e_j` for `j ≠ y`, in order.
pub fn margin_spec(labels: &[usize], classes: usize) -> Mat<f32> {
    let k = classes - 1;
    let mut c = Mat::<f32>::zeros(labels.len() * k, classes);
    for (s, &y) in labels.iter().enumerate() {
        for (row, j) in (s * k..).zip((0..classes).filter(|&j| j != y)) {
            c[(row, y)] = 1.0;
            c[(row, j)] = -1.0;
        }
    }
    c
}

/// The input boxes of a batch: `[x − ε, x + ε] ∩ clip`.
pub fn input_box(x: &Mat<f32>, eps: f32, clip: Option<(f32, f32)>) -> (Mat<f32>, Mat<f32>) {
    let (lo, hi) = clip.unwrap_or((f32::NEG_INFINITY, f32::INFINITY));
    let l = Mat::from_fn(x.nrows(), x.ncols(), |i, j| (x[(i, j)] - eps).max(lo));
    let u = Mat::from_fn(x.nrows(), x.ncols(), |i, j| (x[(i, j)] + eps).min(hi));
    (l, u)
}

/// The boxes to bound a batch from, with `g` set up for the norm: the clipped L∞ box, or
/// for an L2 ball its enclosing box `[x − ε, x + ε]` with the ball recorded in `g`.
fn input_set(
    g: &mut TrainGraph<f32>,
    x: &Mat<f32>,
    eps: f32,
    norm: InputNorm,
    clip: Option<(f32, f32)>,
) -> Result<(Mat<f32>, Mat<f32>), TrainError> {
    match norm {
        InputNorm::Inf => {
            g.set_input_l2(None)?;
            Ok(input_box(x, eps, clip))
        }
        InputNorm::L2 => {
            g.set_input_l2(Some(eps))?;
            Ok(input_box(x, eps, None))
        }
    }
}

/// `log(1 + Σ_j exp(−lb_j))` of each sample's `k` bounds, and its gradient with respect
/// to the bounds (stable for any magnitude).
fn robust_ce(lb: &[f32], k: usize) -> (Vec<f64>, Vec<f64>) {
    let mut loss = Vec::with_capacity(lb.len() / k);
    let mut grad = vec![0.0; lb.len()];
    for (s, row) in lb.chunks(k).enumerate() {
        // z = [0, −lb]; loss = logsumexp(z) − z_0.
        let m = row.iter().map(|&v| -(v as f64)).fold(0.0f64, f64::max);
        let e0 = (-m).exp();
        let es: Vec<f64> = row.iter().map(|&v| (-(v as f64) - m).exp()).collect();
        let z = e0 + es.iter().sum::<f64>();
        loss.push(m + z.ln());
        for (j, e) in es.iter().enumerate() {
            grad[s * k + j] = -e / z;
        }
    }
    (loss, grad)
}

/// Cross-entropy of each row of `logits` with its label, its gradient, and whether the
/// row is misclassified.
fn clean_ce(logits: &Mat<f32>, labels: &[usize]) -> (Vec<f64>, Mat<f64>, Vec<bool>) {
    let (n, c) = (logits.nrows(), logits.ncols());
    let mut loss = Vec::with_capacity(n);
    let mut grad = Mat::<f64>::zeros(n, c);
    let mut wrong = Vec::with_capacity(n);
    for (r, &y) in labels.iter().enumerate() {
        let row: Vec<f64> = (0..c).map(|j| logits[(r, j)] as f64).collect();
        let m = row.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let z: f64 = row.iter().map(|v| (v - m).exp()).sum();
        loss.push(m + z.ln() - row[y]);
        for j in 0..c {
            grad[(r, j)] = (row[j] - m).exp() / z - if j == y { 1.0 } else { 0.0 };
        }
        let arg = (0..c).fold(0, |b, j| if row[j] > row[b] { j } else { b });
        wrong.push(arg != y);
    }
    (loss, grad, wrong)
}

/// The chord of `exp` over `[l, u]` (an upper line, `exp` being convex): slope `s` and
/// intercept `t`, and their derivatives `[ds/dl, ds/du, dt/dl, dt/du]`. A degenerate
/// interval (`u − l ≤ 1e-6`) takes the constant line `exp(u)`.
fn exp_chord(l: f64, u: f64) -> (f64, f64, [f64; 4]) {
    if u - l > 1e-6 {
        let (el, eu) = (l.exp(), u.exp());
        let s = (eu - el) / (u - l);
        let (ds_dl, ds_du) = ((s - el) / (u - l), (eu - s) / (u - l));
        (s, el - s * l, [ds_dl, ds_du, el - s - l * ds_dl, -l * ds_du])
    } else {
        (0.0, u.exp(), [0.0, 0.0, 0.0, u.exp()])
    }
}

/// The robust term of loss fusion, summed over the batch, with its gradient (scaled by
/// `w`) added to `grads`: for each sample, an upper bound `ub` of `Σ_j exp(z_j − m)` with
/// `z_j = y_j − y_label` (`z_label = 0`) and `m` the largest upper bound of the `z_j`
/// (auto_LiRPA's shift; the loss `log ub + m` does not depend on it), mixing
/// `β·ub_CROWN-IBP + (1 − β)·ub_IBP`. IBP: `Σ_j exp(u_j − m)` over the interval bounds
/// `[l_j, u_j]` of the `z_j` (the margin matrix folded into the last layer). CROWN-IBP:
/// the chord `s_j·z + t_j` of `exp(z − m)` over `[l_j, u_j]` bounds each term from above,
/// and one backward pass bounds `Σ_j s_j·z_j` from above.
fn fused_robust(
    g: &TrainGraph<f32>,
    ibp: &lirpa::IbpTape<f32>,
    labels: &[usize],
    beta: f64,
    w: f64,
    grads: &mut [Vec<f32>],
    stats: &mut StepStats,
) -> Result<f64, TrainError> {
    let (n, classes) = (labels.len(), g.n_out());
    let k = classes - 1;
    // Rows per sample: z_j (e_j − e_y) for j ≠ y, then −z_j; their lower bounds are
    // l_j and −u_j.
    let margins = margin_spec(labels, classes);
    let c2 = Mat::<f32>::from_fn(n * 2 * k, classes, |r, col| {
        let (smp, i) = (r / (2 * k), r % (2 * k));
        let v = margins[(smp * k + i % k, col)];
        if i < k { -v } else { v }
    });
    let (zb, ztape) = g.spec_lower(ibp, c2.as_ref(), 2 * k, SpecMethod::Ibp)?;
    let zl = |s: usize, j: usize| zb[s * 2 * k + j] as f64;
    let zu = |s: usize, j: usize| -(zb[s * 2 * k + k + j] as f64);
    // Chords of exp(z − m) and the CROWN-IBP row Σ_j s_j·(e_y − e_j) (lower bound of −Σ s_j z_j).
    let mut ms = vec![0.0f64; n];
    let mut chords = vec![(0.0f64, 0.0f64, [0.0f64; 4]); n * k];
    for s in 0..n {
        ms[s] = (0..k).map(|j| zu(s, j)).fold(0.0, f64::max);
        for j in 0..k {
            let (sl, t, d) = exp_chord(zl(s, j) - ms[s], zu(s, j) - ms[s]);
            chords[s * k + j] = (sl, t, d);
        }
    }
    let crown = if beta > 1e-5 {
        let row = Mat::<f32>::from_fn(n, classes, |s, col| {
            (0..k).map(|j| chords[s * k + j].0 * margins[(s * k + j, col)] as f64).sum::<f64>() as f32
        });
        let (lb, tape) = g.spec_lower(ibp, row.as_ref(), 1, SpecMethod::CrownIbp)?;
        Some((lb, tape))
    } else {
        None
    };
    let mut total = 0.0;
    let (mut dzb, mut dlb) = (vec![0.0f32; zb.len()], vec![0.0f32; n]);
    let mut dsl = vec![0.0f64; n * k];
    for s in 0..n {
        let m = ms[s];
        let ub_i = (-m).exp() + (0..k).map(|j| (zu(s, j) - m).exp()).sum::<f64>();
        let ub_c = crown.as_ref().map(|(lb, _)| {
            (-m).exp() + (0..k).map(|j| chords[s * k + j].1 - chords[s * k + j].0 * m).sum::<f64>()
                - lb[s] as f64
        });
        let ub = match ub_c {
            Some(c) => beta * c + (1.0 - beta) * ub_i,
            None => ub_i,
        };
        let ub = ub.max(f64::MIN_POSITIVE);
        total += ub.ln() + m;
        if (0..k).all(|j| zu(s, j) < 0.0) {
            // verified by the interval bounds of the margins
        } else {
            stats.robust_wrong += 1;
        }
        let d_ub = w / ub;
        // IBP part: ∂/∂u_j of exp(u_j − m); the bound of row k + j is −u_j.
        for j in 0..k {
            dzb[s * 2 * k + k + j] -= (d_ub * (1.0 - beta) * (zu(s, j) - m).exp()) as f32;
        }
        if ub_c.is_some() {
            let dc = d_ub * beta;
            dlb[s] = -dc as f32;
            for j in 0..k {
                // ∂ub_c/∂t_j = 1, ∂ub_c/∂s_j = −m (the row's part comes from dC below):
                // t_j's gradient now, s_j's once its row part is known.
                let d = chords[s * k + j].2;
                dsl[s * k + j] = -m * dc;
                dzb[s * 2 * k + j] += (dc * d[2]) as f32;
                dzb[s * 2 * k + k + j] -= (dc * d[3]) as f32;
            }
        }
    }
    stats.robust_ce += total;
    stats.robust_n += n;
    let mut bg = g.zero_bound_grads(ibp);
    if let Some((_, tape)) = &crown {
        let d_row = g.spec_backward(ibp, tape, &dlb, &mut bg, grads);
        for s in 0..n {
            for j in 0..k {
                // The row is Σ_j s_j·margin_j: ∂/∂s_j = d_row · margin_j.
                let mut ds = dsl[s * k + j];
                for col in 0..classes {
                    ds += d_row[(s, col)] as f64 * margins[(s * k + j, col)] as f64;
                }
                let d = chords[s * k + j].2;
                dzb[s * 2 * k + j] += (ds * d[0]) as f32;
                dzb[s * 2 * k + k + j] -= (ds * d[1]) as f32;
            }
        }
    }
    g.spec_backward(ibp, &ztape, &dzb, &mut bg, grads);
    g.ibp_backward(ibp, &mut bg, grads);
    Ok(total)
}

/// Adam (β₁ 0.9, β₂ 0.999, ε 1e-8) over a list of parameter vectors.
struct Adam {
    m: Vec<Vec<f64>>,
    v: Vec<Vec<f64>>,
    t: i32,
}

impl Adam {
    fn new(params: &[Vec<f32>]) -> Self {
        let z = || params.iter().map(|p| vec![0.0; p.len()]).collect();
        Adam { m: z(), v: z(), t: 0 }
    }

    fn step(&mut self, params: &mut [Vec<f32>], grads: &[Vec<f32>], lr: f64) {
        self.t += 1;
        let (b1, b2, eps) = (0.9f64, 0.999f64, 1e-8);
        let (c1, c2) = (1.0 - b1.powi(self.t), 1.0 - b2.powi(self.t));
        for (((p, g), m), v) in params.iter_mut().zip(grads).zip(&mut self.m).zip(&mut self.v) {
            for i in 0..p.len() {
                let gi = g[i] as f64;
                m[i] = b1 * m[i] + (1.0 - b1) * gi;
                v[i] = b2 * v[i] + (1.0 - b2) * gi * gi;
                let step = lr * (m[i] / c1) / ((v[i] / c2).sqrt() + eps);
                p[i] = (p[i] as f64 - step) as f32;
            }
        }
    }
}

/// The mean loss of one batch at a fraction `frac` of the final radii, and its gradient
/// with respect to every parameter of `g` (what one training step descends).
pub fn loss_and_gradient(
    g: &mut TrainGraph<f32>,
    cfg: &TrainConfig,
    x: &Mat<f32>,
    labels: &[usize],
    frac: f64,
) -> Result<(f64, Vec<Vec<f32>>), TrainError> {
    let mut stats = StepStats::default();
    let grads = batch_gradient(g, cfg, x, labels, frac, &mut stats)?;
    Ok((stats.loss / labels.len().max(1) as f64, grads))
}

/// The robust cross-entropy of the margin bounds `lb` (`k` per sample): adds
/// `weight·Σ loss` to `total` and the statistics to `stats`; returns its gradient with
/// respect to `lb` (unweighted).
fn margin_loss(lb: &[f32], k: usize, weight: f64, total: &mut f64, stats: &mut StepStats) -> Vec<f64> {
    let (rl, rg) = robust_ce(lb, k);
    let sum: f64 = rl.iter().sum();
    *total += weight * sum;
    stats.robust_ce += sum;
    stats.robust_n += lb.len() / k;
    stats.robust_wrong += lb.chunks(k).filter(|row| row.iter().any(|&v| v <= 0.0)).count();
    rg
}

/// The gradient of the mean loss of one batch with respect to every parameter.
fn batch_gradient(
    g: &mut TrainGraph<f32>,
    cfg: &TrainConfig,
    x: &Mat<f32>,
    labels: &[usize],
    frac: f64,
    stats: &mut StepStats,
) -> Result<Vec<Vec<f32>>, TrainError> {
    let n = labels.len();
    let classes = g.n_out();
    let eps = cfg.recipe.eps * frac;
    let perturbed = cfg.recipe.eps > 0.0 || cfg.weight_eps > 0.0;
    let robust = cfg.method != TrainMethod::Natural && perturbed && frac >= 1e-20;
    let kappa = if robust { 1.0 - frac } else { 1.0 };
    let beta = match cfg.method {
        TrainMethod::CrownIbp => 1.0 - frac,
        _ => 0.0,
    };
    let mut grads = g.zero_grads();
    g.set_weight_eps((cfg.weight_eps * frac) as f32)?;
    let boxes = if robust { Some(input_set(g, x, eps as f32, cfg.norm, cfg.clip)?) } else { None };
    let g = &*g;
    let nat = g.natural(x.as_ref())?;
    let logits = nat.values.last().expect("output");
    let (ce, ce_grad, wrong) = clean_ce(logits, labels);
    stats.clean_wrong += wrong.iter().filter(|&&w| w).count();
    let mut total: f64 = kappa * ce.iter().sum::<f64>();
    let scale = 1.0 / n as f64;
    if kappa > 0.0 {
        let gy = Mat::from_fn(n, classes, |i, j| (kappa * scale * ce_grad[(i, j)]) as f32);
        g.natural_backward(&nat, gy, &mut grads);
    }
    if robust {
        let k = classes - 1;
        let (l, u) = boxes.expect("computed when robust");
        if cfg.method == TrainMethod::Crown {
            // CROWN's margin bounds (every intermediate bound by a backward pass).
            let c = margin_spec(labels, classes);
            let crown = g.crown(l.as_ref(), u.as_ref())?;
            let (lb, tape) = g.spec_lower(&crown.bounds, c.as_ref(), k, SpecMethod::CrownIbp)?;
            let rg = margin_loss(&lb, k, 1.0 - kappa, &mut total, stats);
            let w: Vec<f32> = rg.iter().map(|d| ((1.0 - kappa) * scale * d) as f32).collect();
            let mut bg = g.zero_bound_grads(&crown.bounds);
            g.spec_backward(&crown.bounds, &tape, &w, &mut bg, &mut grads);
            g.crown_backward(&crown, &mut bg, &mut grads);
        } else if cfg.loss_fusion {
            let ibp = g.ibp(l.as_ref(), u.as_ref())?;
            let w = (1.0 - kappa) * scale;
            let rl = fused_robust(g, &ibp, labels, beta, w, &mut grads, stats)?;
            total += (1.0 - kappa) * rl;
        } else {
            let ibp = g.ibp(l.as_ref(), u.as_ref())?;
            let c = margin_spec(labels, classes);
            let (lb_i, tape_i) = g.spec_lower(&ibp, c.as_ref(), k, SpecMethod::Ibp)?;
            let crown = if beta > 1e-5 {
                Some(g.spec_lower(&ibp, c.as_ref(), k, SpecMethod::CrownIbp)?)
            } else {
                None
            };
            let lb: Vec<f32> = match &crown {
                Some((lb_c, _)) => lb_c
                    .iter()
                    .zip(&lb_i)
                    .map(|(c, i)| (beta * *c as f64 + (1.0 - beta) * *i as f64) as f32)
                    .collect(),
                None => lb_i.clone(),
            };
            let rg = margin_loss(&lb, k, 1.0 - kappa, &mut total, stats);
            let w = (1.0 - kappa) * scale;
            let mut bg = g.zero_bound_grads(&ibp);
            let wi: Vec<f32> = rg.iter().map(|d| (w * (1.0 - beta) * d) as f32).collect();
            g.spec_backward(&ibp, &tape_i, &wi, &mut bg, &mut grads);
            if let Some((_, tape_c)) = &crown {
                let wc: Vec<f32> = rg.iter().map(|d| (w * beta * d) as f32).collect();
                g.spec_backward(&ibp, tape_c, &wc, &mut bg, &mut grads);
            }
            g.ibp_backward(&ibp, &mut bg, &mut grads);
        }
    }
    if !total.is_finite() {
        return Err(TrainError::Invalid("the loss is not finite (diverged: lower the learning rate)".into()));
    }
    stats.loss += total;
    Ok(grads)
}

/// A model being trained: its parameters and Adam's state.
pub struct Trainer {
    graph: TrainGraph<f32>,
    adam: Adam,
    cfg: TrainConfig,
}

/// What one step saw (sums over its samples).
#[derive(Clone, Debug, Default)]
pub struct StepStats {
    pub loss: f64,
    pub robust_ce: f64,
    pub clean_wrong: usize,
    pub robust_wrong: usize,
    /// Samples whose robust loss was computed (ε > 0).
    pub robust_n: usize,
}

impl Trainer {
    /// Start from `graph`'s current parameters.
    pub fn new(graph: &Graph<f32>, cfg: &TrainConfig) -> Result<Trainer, TrainError> {
        let par = if cfg.threads > 1 { Par::rayon(cfg.threads) } else { Par::Seq };
        let mut g = TrainGraph::new(graph, RelaxOptions::default(), par)?;
        g.set_input_grad(false);
        if g.n_out() < 2 {
            return Err(TrainError::Invalid("the model needs at least 2 outputs (classes)".into()));
        }
        let adam = Adam::new(g.params());
        Ok(Trainer { graph: g, adam, cfg: cfg.clone() })
    }

    /// The trained graph.
    pub fn graph(&self) -> &TrainGraph<f32> {
        &self.graph
    }

    /// One Adam step on the batch `x` (`rows × features`) with `labels`, at a fraction
    /// `frac` ∈ [0, 1] of the final radii (input and weights) and learning rate `lr`.
    pub fn step(
        &mut self,
        x: &Mat<f32>,
        labels: &[usize],
        frac: f64,
        lr: f64,
    ) -> Result<StepStats, TrainError> {
        let mut stats = StepStats::default();
        let grads = batch_gradient(&mut self.graph, &self.cfg, x, labels, frac, &mut stats)?;
        let mut params = self.graph.params().to_vec();
        self.adam.step(&mut params, &grads, lr);
        self.graph.set_params(params)?;
        Ok(stats)
    }
}

/// Train `graph`'s parameters on `data`; `progress` sees every epoch. Returns the trained
/// parameters (write them back with [`export_onnx`]).
pub fn train(
    graph: &Graph<f32>,
    data: &Dataset,
    cfg: &TrainConfig,
    mut progress: impl FnMut(&EpochStats),
) -> Result<TrainGraph<f32>, TrainError> {
    let mut trainer = Trainer::new(graph, cfg)?;
    let g = &trainer.graph;
    if g.n_in() != data.features {
        return Err(TrainError::Invalid(format!(
            "the data has {} features, the model input {} values",
            data.features,
            g.n_in()
        )));
    }
    if let Some(&bad) = data.labels.iter().find(|&&y| y >= g.n_out()) {
        return Err(TrainError::Invalid(format!("label {bad} but the model has {} outputs", g.n_out())));
    }
    let r = &cfg.recipe;
    if data.is_empty() || r.batch == 0 {
        return Err(TrainError::Invalid("no training data or a batch size of 0".into()));
    }
    let mut rng = lirpa::sample::Rng::new(cfg.seed);
    let mut order: Vec<usize> = (0..data.len()).collect();
    let batches = data.len().div_ceil(r.batch);
    for epoch in 1..=r.epochs {
        let t0 = Instant::now();
        for i in (1..order.len()).rev() {
            order.swap(i, rng.below(i + 1));
        }
        let lr = r.lr_at(epoch);
        let mut stats = StepStats::default();
        let (mut eps_first, mut eps_last) = (0.0, 0.0);
        for b in 0..batches {
            let idx = &order[b * r.batch..((b + 1) * r.batch).min(order.len())];
            let x = Mat::from_fn(idx.len(), data.features, |i, j| data.x[idx[i] * data.features + j]);
            let labels: Vec<usize> = idx.iter().map(|&i| data.labels[i]).collect();
            let frac = r.schedule.eps(1.0, epoch, b + 1, batches);
            if b == 0 {
                eps_first = r.eps * frac;
            }
            eps_last = r.eps * frac;
            let st = trainer.step(&x, &labels, frac, lr)?;
            stats.loss += st.loss;
            stats.robust_ce += st.robust_ce;
            stats.clean_wrong += st.clean_wrong;
            stats.robust_wrong += st.robust_wrong;
            stats.robust_n += st.robust_n;
        }
        let n = data.len() as f64;
        progress(&EpochStats {
            epoch,
            lr,
            eps_first,
            eps_last,
            loss: stats.loss / n,
            robust_ce: if stats.robust_n > 0 { stats.robust_ce / stats.robust_n as f64 } else { 0.0 },
            clean_err: stats.clean_wrong as f64 / n,
            verified_err: if stats.robust_n > 0 {
                stats.robust_wrong as f64 / stats.robust_n as f64
            } else {
                1.0
            },
            seconds: t0.elapsed().as_secs_f64(),
        });
    }
    Ok(trainer.graph)
}

/// The model `bytes` with every trained parameter of `g` (built from that model)
/// written back to its initializer.
pub fn export_onnx(bytes: &[u8], graph: &Graph<f32>, g: &TrainGraph<f32>) -> Result<Vec<u8>, TrainError> {
    let mut values = std::collections::HashMap::new();
    for k in 0..g.params().len() {
        let (node, slot) = g.param_origin(k);
        let name = lirpa::onnx::save::initializer_input(bytes, &graph.node(node).name, slot)?;
        values.insert(name, g.export_param(k)?);
    }
    Ok(lirpa::onnx::save::replace_initializers(bytes, &values)?)
}

/// Test-set figures of a model: clean error and verified error (percent) by IBP (the
/// margin matrix folded into the last layer) and by CROWN, at `eps` over the clipped box.
#[derive(Clone, Debug)]
pub struct Evaluation {
    pub clean_err: f64,
    pub ibp_err: f64,
    pub crown_err: f64,
}

/// Evaluate `graph` on `data` at radius `eps` of `norm` (see [`Evaluation`]); the CROWN
/// bounds of the samples run on `threads` threads (0: all).
pub fn evaluate(
    graph: &Graph<f32>,
    data: &Dataset,
    eps: f32,
    norm: InputNorm,
    clip: Option<(f32, f32)>,
    threads: usize,
) -> Result<Evaluation, TrainError> {
    use lirpa::{BoundOptions, BoundRequest, InputValue, Method, Perturbation};
    let mut g = TrainGraph::new(graph, RelaxOptions::default(), Par::Seq)?;
    let classes = g.n_out();
    let k = classes - 1;
    let n = data.len();
    let x = Mat::from_fn(n, data.features, |i, j| data.x[i * data.features + j]);
    let (l, u) = input_set(&mut g, &x, eps, norm, clip)?;
    let nat = g.natural(x.as_ref())?;
    let (_, _, wrong) = clean_ce(nat.values.last().expect("output"), &data.labels);
    let ibp = g.ibp(l.as_ref(), u.as_ref())?;
    let c = margin_spec(&data.labels, classes);
    let (lb_i, _) = g.spec_lower(&ibp, c.as_ref(), k, SpecMethod::Ibp)?;
    let ibp_ok = lb_i.chunks(k).filter(|r| r.iter().all(|&v| v > 0.0)).count();
    let opts = BoundOptions { threads, ..BoundOptions::with_method(Method::Crown) };
    let specs: Vec<Mat<f32>> = (0..n).map(|s| Mat::from_fn(k, classes, |i, j| c[(s * k + i, j)])).collect();
    let mut inputs = Vec::with_capacity(n);
    for s in 0..n {
        let lo: Vec<f32> = (0..data.features).map(|j| l[(s, j)]).collect();
        let hi: Vec<f32> = (0..data.features).map(|j| u[(s, j)]).collect();
        let set = match norm {
            InputNorm::Inf => Perturbation::new_box(lo, hi)?,
            InputNorm::L2 => {
                let centre = (0..data.features).map(|j| x[(s, j)]).collect();
                Perturbation::new_ball(lirpa::Norm::L2, centre, eps)?
            }
        };
        inputs.push(vec![InputValue::Perturbed(set)]);
    }
    let requests: Vec<BoundRequest<'_, f32>> = specs
        .iter()
        .map(|cs| BoundRequest { c: Some(cs.as_ref()), upper: false, ..Default::default() })
        .collect();
    let mut crown_ok = 0;
    for res in lirpa::compute_bounds_batch(graph, &inputs, &opts, &requests)? {
        if res?.lower.iter().all(|&v| v > 0.0) {
            crown_ok += 1;
        }
    }
    let pct = |ok: usize| 100.0 * (1.0 - ok as f64 / n as f64);
    Ok(Evaluation {
        clean_err: 100.0 * wrong.iter().filter(|&&w| w).count() as f64 / n as f64,
        ibp_err: pct(ibp_ok),
        crown_err: pct(crown_ok),
    })
}

/// The parameters of `g` with every weight tensor (a Gemm's `B`, a Conv's `W`: model
/// input 1 of its node) rounded to `bits`-bit symmetric uniform levels, `scale =
/// max|w| / (2^(bits−1) − 1)` per tensor; biases are kept.
pub fn quantized_params(g: &TrainGraph<f32>, bits: u32) -> Vec<Vec<f32>> {
    let levels = ((1u64 << (bits.clamp(2, 24) - 1)) - 1) as f32;
    g.params()
        .iter()
        .enumerate()
        .map(|(k, p)| {
            if g.param_origin(k).1 != 1 {
                return p.clone();
            }
            let max = p.iter().fold(0.0f32, |m, v| m.max(v.abs()));
            if max == 0.0 {
                return p.clone();
            }
            let scale = max / levels;
            p.iter().map(|v| (v / scale).round() * scale).collect()
        })
        .collect()
}

/// Percentage of `data` that `g` misclassifies.
pub fn clean_error(g: &TrainGraph<f32>, data: &Dataset) -> Result<f64, TrainError> {
    let x = Mat::from_fn(data.len(), data.features, |i, j| data.x[i * data.features + j]);
    let nat = g.natural(x.as_ref())?;
    let (_, _, wrong) = clean_ce(nat.values.last().expect("output"), &data.labels);
    Ok(100.0 * wrong.iter().filter(|&&w| w).count() as f64 / data.len().max(1) as f64)
}

#[cfg(test)]
mod tests {
    /// The chord of exp is above exp, and its derivatives are the central differences.
    #[test]
    fn exp_chord_and_its_derivatives() {
        for (l, u) in [(-3.0, 0.0), (-0.5, -0.1), (-20.0, -2.0), (-1.0, -1.0 + 1e-9), (0.3, 2.0)] {
            let (s, t, d) = super::exp_chord(l, u);
            for i in 0..=10 {
                let z = l + (u - l) * i as f64 / 10.0;
                assert!(s * z + t >= z.exp() - 1e-14 * (1.0 + t.abs() + (s * z).abs()), "below exp at {z}");
            }
            if u - l < 1e-3 {
                continue;
            }
            let h = 1e-6;
            let f = |l: f64, u: f64| {
                let (s, t, _) = super::exp_chord(l, u);
                [s, t]
            };
            let (pl, ml, pu, mu) = (f(l + h, u), f(l - h, u), f(l, u + h), f(l, u - h));
            let num = [
                (pl[0] - ml[0]) / (2.0 * h),
                (pu[0] - mu[0]) / (2.0 * h),
                (pl[1] - ml[1]) / (2.0 * h),
                (pu[1] - mu[1]) / (2.0 * h),
            ];
            for (a, n) in d.iter().zip(num) {
                assert!((a - n).abs() <= 1e-5 * (1.0 + a.abs()), "[{l}, {u}]: {d:?} vs {num:?}");
            }
        }
    }
}

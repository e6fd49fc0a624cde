//! Falsification: random points and corners of each input box, then projected
//! gradient descent with restarts on the margin `max_i (C_i·y - d_i)` of one unsafe
//! conjunction (a counterexample makes it `<= 0`).
//!
//! Gradients come from CROWN(-IBP) on the degenerate box `[x, x]` with `return_a`: every
//! ReLU is stable there and every relaxation of a piecewise-linear network is exact,
//! so the returned lower coefficients are `C·J(x)` and the lower bound is `C·y(x)`
//! (see the crate documentation). Every candidate goes through [`Model::confirm`].

use crate::{Counterexample, Error, Model, Problem, Region, Result};
use lirpa::sample::Rng;
use lirpa::{BoundOptions, BoundRequest, InputValue, Method, Perturbation};
use rayon::prelude::*;
use std::time::Instant;

/// How much to attack.
#[derive(Clone, Debug)]
pub struct Budget {
    pub deadline: Instant,
    /// Random points (centre, corners, interior) per region.
    pub samples: usize,
    /// PGD restarts over all regions and disjuncts (`usize::MAX`: until the deadline).
    pub restarts: usize,
    pub steps: usize,
}

enum Stop {
    Found(Counterexample),
    Deadline,
    Failed(Error),
}

/// A counterexample, if the attack finds one within the budget.
pub fn attack(
    model: &Model,
    problem: &Problem,
    budget: &Budget,
    seed: u64,
) -> Result<Option<Counterexample>> {
    let finish = |s: Option<Stop>| match s {
        Some(Stop::Found(ce)) => Ok(Some(ce)),
        Some(Stop::Failed(e)) => Err(e),
        Some(Stop::Deadline) | None => Ok(None),
    };
    // Random points.
    for (ri, region) in problem.regions.iter().enumerate() {
        let found = (0..budget.samples).into_par_iter().find_map_any(|k| {
            if Instant::now() >= budget.deadline {
                return Some(Stop::Deadline);
            }
            let mut rng = Rng::new(seed ^ ((ri as u64) << 40) ^ k as u64);
            let x = sample_point(region, k, &mut rng);
            let x32: Vec<f32> = x.iter().map(|&v| v as f32).collect();
            let y = match model.forward32(&x32) {
                Ok(y) => y,
                Err(e) => return Some(Stop::Failed(e)),
            };
            let y: Vec<f64> = y.iter().map(|&v| v as f64).collect();
            (region.margin(&y) <= 1e-6).then(|| model.confirm(problem, region, &x)).flatten().map(Stop::Found)
        });
        if let Some(s) = found {
            return finish(Some(s));
        }
    }
    // PGD restarts: first from each box centre per disjunct, then from random points.
    let targets: Vec<(usize, usize)> = problem
        .regions
        .iter()
        .enumerate()
        .flat_map(|(ri, r)| (0..r.disjuncts.len()).map(move |di| (ri, di)))
        .collect();
    if targets.is_empty() || budget.restarts == 0 {
        return Ok(None);
    }
    let found = (0..budget.restarts).into_par_iter().find_map_any(|r| {
        if Instant::now() >= budget.deadline {
            return Some(Stop::Deadline);
        }
        let (ri, di) = targets[r % targets.len()];
        let mut rng = Rng::new(seed.wrapping_mul(31) ^ 0x00A7_7AC4 ^ r as u64);
        let region = &problem.regions[ri];
        let (l, u) = (&region.lower, &region.upper);
        match pgd(model, problem, ri, di, (l, u), r >= targets.len(), budget, &mut rng) {
            Ok(Some(ce)) => Some(Stop::Found(ce)),
            Ok(None) => None,
            Err(e) => Some(Stop::Failed(e)),
        }
    });
    finish(found)
}

/// The centre (`k == 0`), a random corner (odd `k`), or a uniform point.
fn sample_point(region: &Region, k: usize, rng: &mut Rng) -> Vec<f64> {
    sample_in(&region.lower, &region.upper, k, rng)
}

fn sample_in(l: &[f64], u: &[f64], k: usize, rng: &mut Rng) -> Vec<f64> {
    (0..l.len())
        .map(|j| match k {
            0 => 0.5 * (l[j] + u[j]),
            k if k % 2 == 1 => {
                if rng.next_u64() & 1 == 0 {
                    l[j]
                } else {
                    u[j]
                }
            }
            _ => (l[j] + rng.uniform() * (u[j] - l[j])).clamp(l[j], u[j]),
        })
        .collect()
}

/// Values `C·y(x)` and coefficients `C·J(x)` (row-major, rows × inputs) of the `f32`
/// model at `x`, from CROWN on the degenerate box `[x, x]`.
pub fn value_and_gradient(model: &Model, x: &[f64], c: &[Vec<f64>]) -> Result<(Vec<f64>, Vec<f64>)> {
    let n = model.n_inputs;
    let x32: Vec<f32> = x.iter().map(|&v| v as f32).collect();
    let cm = faer::Mat::<f32>::from_fn(c.len(), model.n_outputs, |i, j| c[i][j] as f32);
    // CROWN-IBP: on a point, IBP's intermediate bounds are exact (and far cheaper than
    // CROWN's backward passes per layer), and the final backward pass gives C·J(x).
    let opts = BoundOptions { threads: 1, ..BoundOptions::with_method(Method::CrownIbp) };
    let req = BoundRequest { node: None, c: Some(cm.as_ref()), lower: true, upper: false, return_a: true };
    let ptb = Perturbation::new_box(x32.clone(), x32)?;
    let res = lirpa::compute_bounds(&model.g32, &[InputValue::Perturbed(ptb)], &opts, &req)?;
    let a = res
        .a
        .first()
        .and_then(|a| a.a.lower.as_ref())
        .ok_or_else(|| Error::Invalid("the bound returned no input coefficients".into()))?;
    let mut g = vec![0.0; c.len() * n];
    for i in 0..c.len() {
        for j in 0..n {
            g[i * n + j] = a[(i, j)] as f64;
        }
    }
    Ok((res.lower.iter().map(|&v| v as f64).collect(), g))
}

/// One PGD run on disjunct `di` of region `ri`, inside the box `(l, u)` (the region's
/// or a sub-box of it): sign steps scaled by the box's half-widths, decaying linearly,
/// projected onto the box.
#[allow(clippy::too_many_arguments)]
pub fn pgd(
    model: &Model,
    problem: &Problem,
    ri: usize,
    di: usize,
    (l, u): (&[f64], &[f64]),
    random_start: bool,
    budget: &Budget,
    rng: &mut Rng,
) -> Result<Option<Counterexample>> {
    let x = sample_in(l, u, if random_start { 2 } else { 0 }, rng);
    pgd_from(model, problem, ri, di, (l, u), x, budget)
}

/// [`pgd`] from the point `x` of the box (branch and bound starts it at the point
/// where a sub-domain's linear lower bound is smallest).
pub fn pgd_from(
    model: &Model,
    problem: &Problem,
    ri: usize,
    di: usize,
    (l, u): (&[f64], &[f64]),
    mut x: Vec<f64>,
    budget: &Budget,
) -> Result<Option<Counterexample>> {
    let region = &problem.regions[ri];
    let dis = &region.disjuncts[di];
    let n = l.len();
    if dis.c.is_empty() {
        return Ok(model.confirm(problem, region, &x));
    }
    let steps = budget.steps.max(1);
    for step in 0..=steps {
        if Instant::now() >= budget.deadline {
            return Ok(None);
        }
        let (v, g) = value_and_gradient(model, &x, &dis.c)?;
        let (mut worst, mut imax) = (f64::NEG_INFINITY, 0);
        for (i, (vi, di)) in v.iter().zip(&dis.d).enumerate() {
            if vi - di > worst {
                worst = vi - di;
                imax = i;
            }
        }
        if worst <= 1e-6
            && let Some(ce) = model.confirm(problem, region, &x)
        {
            return Ok(Some(ce));
        }
        if step == steps {
            break;
        }
        let size = 0.5 * (1.0 - step as f64 / steps as f64) + 0.01;
        for j in 0..n {
            let gj = g[imax * n + j];
            let h = 0.5 * (u[j] - l[j]);
            if gj != 0.0 {
                x[j] = (x[j] - size * h * gj.signum()).clamp(l[j], u[j]);
            }
        }
    }
    Ok(None)
}

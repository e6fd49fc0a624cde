//! Bound propagation engines over a [`Graph`]: IBP, CROWN (backward linear bound
//! propagation on a general DAG, summing coefficients at fan-out), CROWN-IBP and
//! α-CROWN (optimized relaxations, with a hand-written gradient of the bound).
//!
//! The engine knows operators only through the traits of `lirpa-core`.

mod backward;
mod options;
pub mod train;

mod guard;

pub use backward::alpha::{
    AlphaNode, AlphaPass, AlphaRun, AlphaState, BetaParams, DomainResult, SubDomain, bound_and_gradient,
};
pub use backward::{BoundResult, InputValue, IntermediateBounds, LinearBoundA};
pub use guard::{
    compute_bounds, compute_bounds_keep, compute_bounds_optimized, compute_bounds_optimized_batch,
    compute_bounds_optimized_keep,
};
pub use options::{
    BoundOptions, BoundRequest, ConvMode, Method, NodeBounds, NodeConstraint, OptimizeOptions,
};
pub use train::{BoundGrads, CrownTape, IbpTape, NaturalTape, SpecMethod, SpecTape, TrainGraph};

pub use lirpa_core::{Graph, NodeId, Perturbation, Scalar};

/// Bound a batch of perturbation sets of one model in one call: `inputs[s]` are the
/// graph inputs of sample `s` and `requests[s]` its request (its own specification
/// matrix, e.g. the margins of its label). Samples run in parallel on `opts.threads`
/// threads (0: all), each sequentially; the results are in sample order, one per
/// sample, each an error of its own where that sample fails.
pub fn compute_bounds_batch<T: Scalar>(
    graph: &Graph<T>,
    inputs: &[Vec<InputValue<T>>],
    opts: &BoundOptions,
    requests: &[BoundRequest<'_, T>],
) -> lirpa_core::Result<Vec<lirpa_core::Result<BoundResult<T>>>> {
    use rayon::prelude::*;
    if inputs.len() != requests.len() {
        return Err(lirpa_core::Error::Invalid(format!(
            "{} samples but {} requests",
            inputs.len(),
            requests.len()
        )));
    }
    let one = BoundOptions { threads: 1, ..opts.clone() };
    let run = |s: usize| compute_bounds(graph, &inputs[s], &one, &requests[s]);
    if opts.threads == 1 || inputs.len() < 2 {
        return Ok((0..inputs.len()).map(run).collect());
    }
    let work = || (0..inputs.len()).into_par_iter().map(run).collect();
    Ok(match opts.threads {
        0 => work(),
        n => match rayon::ThreadPoolBuilder::new().num_threads(n).build() {
            Ok(pool) => pool.install(work),
            Err(_) => (0..inputs.len()).map(run).collect(),
        },
    })
}

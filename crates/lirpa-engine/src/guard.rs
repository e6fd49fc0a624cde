//! The checks around every public bound computation: a memory estimate before the
//! work (against [`BoundOptions::max_memory`], or the process-wide budget of
//! [`lirpa_core::budget`]), with intermediate passes batched to fit it, and the
//! refusal of a non-finite bound after it, naming the node where the overflow first
//! appeared.
//!
//! The entry points here are those the crate exports (`compute_bounds`,
//! `compute_bounds_keep`, `compute_bounds_optimized`, `compute_bounds_optimized_keep`,
//! `compute_bounds_optimized_batch`);
//! the engine's own modules call the unchecked ones in `backward`.

use crate::backward::{self, BoundResult, InputValue, IntermediateBounds};
use crate::options::{BoundOptions, BoundRequest, Method};
use crate::{AlphaState, backward::alpha};
use lirpa_core::budget::check_bytes;
use lirpa_core::{Error, Graph, NodeId, Result, Scalar};

/// Matrices alive per specification row and element of the widest node a backward
/// pass crosses: lower and upper coefficients, their sum at fan-out and the product
/// being formed. α-CROWN also keeps its parameters, their Adam moments and the
/// adjoint sweep.
const LIVE_CROWN: u128 = 4;
const LIVE_ALPHA: u128 = 10;

/// What a computation would allocate at most, and the options adjusted to fit the
/// budget (smaller intermediate batches), or an error saying what to change.
pub(crate) fn fit_budget<T: Scalar>(
    graph: &Graph<T>,
    inputs: &[InputValue<T>],
    opts: &BoundOptions,
    req: &BoundRequest<'_, T>,
) -> Result<BoundOptions> {
    let budget = opts.max_memory.unwrap_or_else(lirpa_core::budget::max_memory);
    let target = req.target(graph)?;
    // The cone of the bounded node, and its widest node.
    let mut cone = vec![false; target + 1];
    cone[target] = true;
    for id in (0..=target).rev() {
        if cone[id] {
            for &i in &graph.node(id).inputs {
                cone[i] = true;
            }
        }
    }
    let (widest, wide_id) = (0..=target)
        .filter(|&i| cone[i])
        .map(|i| (graph.node(i).numel() as u128, i))
        .max()
        .unwrap_or((1, target));
    let sz = std::mem::size_of::<T>() as u128;
    let n_target = graph.node(target).numel() as u128;
    let rows = req.c.map_or(n_target, |c| c.nrows() as u128);
    let spec_desc = |rows: u128| {
        if req.c.is_some() { format!("{rows} specification rows") } else { format!("{rows} outputs") }
    };
    let f32_hint = if sz > 4 { ", --dtype f32" } else { "" };
    let advice = format!(
        "use fewer specification rows, --conv-mode auto (windowed coefficients){f32_hint}, \
         a cheaper method (IBP), or raise --max-memory"
    );
    let what = |rows: u128| {
        move || {
            format!(
                "bounding node '{}' by {} ({} × {widest} elements of node '{}')",
                graph.node(target).name,
                opts.method,
                spec_desc(rows),
                graph.node(wide_id).name,
            )
        }
    };
    let refuse = |bytes: u128, rows: u128| -> Result<()> {
        check_bytes(bytes, what(rows), budget).map_err(|e| Error::Invalid(format!("{e}; {advice}")))
    };
    // Every method keeps the bounds (or values) of every node of the cone.
    let all: u128 = (0..=target).filter(|&i| cone[i]).map(|i| graph.node(i).numel() as u128).sum();
    refuse(all * sz * 4, rows)?;
    let mut fitted = opts.clone();
    match opts.method {
        // IBP keeps intervals (and `C` carried back through the trailing affine
        // operators, at most the widest node per row).
        Method::Ibp => match req.c {
            Some(_) => refuse(rows * widest * sz * 2, rows)?,
            None => refuse(widest * sz * 4, 1)?,
        },
        Method::Forward | Method::ForwardBackward => {
            let n_in: u128 = graph
                .inputs()
                .iter()
                .zip(inputs)
                .filter(|(_, v)| matches!(v, InputValue::Perturbed(_)))
                .map(|(&i, _)| graph.node(i).numel() as u128)
                .sum();
            refuse(all * n_in.max(1) * sz * 2 + rows * widest * sz * LIVE_CROWN, rows)?;
        }
        Method::Crown | Method::CrownIbp | Method::AlphaCrown => {
            let live = if opts.method == Method::AlphaCrown { LIVE_ALPHA } else { LIVE_CROWN };
            let per_row = widest * sz * live;
            refuse(rows * per_row, rows)?;
            if opts.method != Method::CrownIbp {
                // Intermediate passes: `threads` batches of `crown_batch_size` rows at
                // once; shrink the batches to fit rather than fail.
                // Batches run on the rayon pool: at most its threads at once.
                let pool = rayon::current_num_threads().max(1);
                let threads = match opts.threads {
                    0 => pool,
                    n => n.min(pool),
                } as u128;
                let batch = match opts.crown_batch_size {
                    0 => widest,
                    b => (b as u128).min(widest),
                };
                if batch * threads * per_row > budget as u128 {
                    let fit = budget as u128 / (threads * per_row);
                    if fit == 0 {
                        refuse(threads * per_row, 1)?;
                    }
                    fitted.crown_batch_size = fit.max(1).min(usize::MAX as u128) as usize;
                }
                // α-CROWN runs the two sides side by side with two threads or more (two
                // final passes alive at once): one after the other where they do not fit.
                let both = req.lower && req.upper;
                if opts.method == Method::AlphaCrown
                    && both
                    && threads >= 2
                    && 2 * rows * per_row > budget as u128
                {
                    fitted.threads = 1;
                }
            }
        }
    }
    Ok(fitted)
}

/// Whether the caller's data (perturbations, exact inputs, specification) is finite: a
/// non-finite bound then comes from an overflow inside the computation.
fn inputs_finite<T: Scalar>(inputs: &[InputValue<T>], req: &BoundRequest<'_, T>) -> bool {
    let ok = inputs.iter().all(|v| match v {
        InputValue::Exact(x) => x.iter().all(|x| x.is_finite()),
        InputValue::Perturbed(p) => p.validate().is_ok(),
    });
    ok && req.c.is_none_or(|c| (0..c.ncols()).all(|j| (0..c.nrows()).all(|i| c[(i, j)].is_finite())))
}

/// The first node (in topological order, up to `target`) whose interval bounds are not
/// finite: where an overflow first appears.
fn first_non_finite<T: Scalar>(
    graph: &Graph<T>,
    inputs: &[InputValue<T>],
    opts: &BoundOptions,
    target: NodeId,
) -> Option<NodeId> {
    let ibp = BoundOptions { method: Method::Ibp, node_bounds: None, ..opts.clone() };
    (0..=target).filter(|&id| graph.node(id).op().is_some()).find(|&id| {
        let req = BoundRequest { node: Some(id), ..Default::default() };
        backward::compute_bounds(graph, inputs, &ibp, &req)
            .map_or(true, |r| r.lower.iter().chain(&r.upper).any(|x| !x.is_finite()))
    })
}

/// Refuse a non-finite requested bound (or the engine's own non-finite error), naming
/// the node where the overflow first appears.
fn check_finite<T: Scalar>(
    graph: &Graph<T>,
    inputs: &[InputValue<T>],
    opts: &BoundOptions,
    req: &BoundRequest<'_, T>,
    res: Result<BoundResult<T>>,
) -> Result<BoundResult<T>> {
    // Under caller-given node bounds (branch and bound), an infeasible domain may give
    // vacuous bounds; the caller checks it (`NodeBounds::infeasible`).
    if opts.node_bounds.is_some() {
        return res;
    }
    let bad = |v: &[T]| v.iter().any(|x| !x.is_finite());
    let res = match res {
        Ok(r) if !((req.lower && bad(&r.lower)) || (req.upper && bad(&r.upper))) => return Ok(r),
        Ok(_) => None,
        Err(Error::NonFinite(m)) if inputs_finite(inputs, req) => Some(m),
        Err(e) => return Err(e),
    };
    let target = match req.node {
        Some(t) => t,
        None => graph.output()?,
    };
    let hint = if std::mem::size_of::<T>() < 8 { "; --dtype f64 may help" } else { "" };
    let node = first_non_finite(graph, inputs, opts, target).unwrap_or(target);
    let n = graph.node(node);
    let detail = res.map(|m| format!(" ({m})")).unwrap_or_default();
    Err(Error::NonFinite(format!(
        "the {} bounds: they overflow the number type at node '{}' ({}){detail}{hint}",
        opts.method,
        n.name,
        n.op_type()
    )))
}

/// `backward::compute_bounds` within the memory budget, refusing non-finite bounds.
pub fn compute_bounds<T: Scalar>(
    graph: &Graph<T>,
    inputs: &[InputValue<T>],
    opts: &BoundOptions,
    req: &BoundRequest<'_, T>,
) -> Result<BoundResult<T>> {
    let fitted = fit_budget(graph, inputs, opts, req)?;
    check_finite(graph, inputs, opts, req, backward::compute_bounds(graph, inputs, &fitted, req))
}

/// `backward::compute_bounds_keep` within the memory budget, refusing non-finite
/// bounds.
pub fn compute_bounds_keep<T: Scalar>(
    graph: &Graph<T>,
    inputs: &[InputValue<T>],
    opts: &BoundOptions,
    req: &BoundRequest<'_, T>,
) -> Result<(BoundResult<T>, IntermediateBounds<T>)> {
    let fitted = fit_budget(graph, inputs, opts, req)?;
    let (r, b) = match backward::compute_bounds_keep(graph, inputs, &fitted, req) {
        Ok((r, b)) => (Ok(r), b),
        Err(e) => (Err(e), vec![]),
    };
    Ok((check_finite(graph, inputs, opts, req, r)?, b))
}

/// `alpha::compute_bounds_optimized` within the memory budget, refusing non-finite
/// bounds.
pub fn compute_bounds_optimized<T: Scalar>(
    graph: &Graph<T>,
    inputs: &[InputValue<T>],
    opts: &BoundOptions,
    req: &BoundRequest<'_, T>,
    warm: Option<&AlphaState<T>>,
) -> Result<(BoundResult<T>, AlphaState<T>)> {
    let opts = BoundOptions { method: Method::AlphaCrown, ..opts.clone() };
    let fitted = fit_budget(graph, inputs, &opts, req)?;
    let (r, s) = match alpha::compute_bounds_optimized(graph, inputs, &fitted, req, warm) {
        Ok((r, s)) => (Ok(r), Some(s)),
        Err(e) => (Err(e), None),
    };
    let r = check_finite(graph, inputs, &opts, req, r)?;
    Ok((r, s.expect("a result comes with its state")))
}

/// `alpha::compute_bounds_optimized_keep` within the memory budget, refusing
/// non-finite bounds.
pub fn compute_bounds_optimized_keep<T: Scalar>(
    graph: &Graph<T>,
    inputs: &[InputValue<T>],
    opts: &BoundOptions,
    req: &BoundRequest<'_, T>,
    warm: Option<&AlphaState<T>>,
) -> Result<(BoundResult<T>, AlphaState<T>, IntermediateBounds<T>)> {
    let opts = BoundOptions { method: Method::AlphaCrown, ..opts.clone() };
    let fitted = fit_budget(graph, inputs, &opts, req)?;
    let (r, s, b) = match alpha::compute_bounds_optimized_keep(graph, inputs, &fitted, req, warm) {
        Ok((r, s, b)) => (Ok(r), Some(s), b),
        Err(e) => (Err(e), None, vec![]),
    };
    let r = check_finite(graph, inputs, &opts, req, r)?;
    Ok((r, s.expect("a result comes with its state"), b))
}

/// `alpha::compute_bounds_optimized_batch` within the memory budget (all domains' rows
/// together), refusing non-finite bounds of domains without known bounds.
pub fn compute_bounds_optimized_batch<T: Scalar>(
    graph: &Graph<T>,
    inputs: &[InputValue<T>],
    opts: &BoundOptions,
    req: &BoundRequest<'_, T>,
    domains: &[alpha::SubDomain<'_, T>],
) -> Result<Vec<alpha::DomainResult<T>>> {
    let opts = BoundOptions { method: Method::AlphaCrown, ..opts.clone() };
    let rows: usize = domains.iter().map(|d| d.c.nrows()).sum();
    let cols = domains.first().map_or(0, |d| d.c.ncols());
    let all_rows = faer::Mat::<T>::zeros(rows, cols);
    let fitted = fit_budget(graph, inputs, &opts, &BoundRequest { c: Some(all_rows.as_ref()), ..*req })?;
    let out = alpha::compute_bounds_optimized_batch(graph, inputs, &fitted, req, domains)?;
    out.into_iter()
        .zip(domains)
        .map(|((r, s, b), d)| {
            let own = BoundOptions { node_bounds: d.node_bounds.clone(), ..opts.clone() };
            let r = check_finite(graph, inputs, &own, &BoundRequest { c: Some(d.c), ..*req }, Ok(r))?;
            Ok((r, s, b))
        })
        .collect()
}

//! Criterion bench of ReLU-split branch and bound's unit of work: bounding a batch of
//! sub-domains of mnistfc 256x6 (`prop_1_0.03`, its nine disjuncts) with β-CROWN
//! (the verifier's sub-domain bounder: the parent's intermediate bounds, three
//! warm-started α,β iterations). The batch is the eight children of the root's four
//! best-scored splits; it is bounded one domain at a time on one thread, the domains in
//! parallel (one thread each) on two, and as the loop does: as one batch whose sweeps
//! stack the domains' rows ([`SplitBounder::bound_batch`]), on one thread and on two.
//! Ids: `bab_domains/256x6/<mode>`; domains per second = 8 / time.

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use lirpa_verify::relu_bab::{ClampBounder, Query, Split, SplitBounder};
use rayon::prelude::*;
use std::sync::Arc;
use std::time::Duration;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn bench_domains(c: &mut Criterion) {
    let dir = lirpa_benches::reference_dir().join("../benchmarks/vnncomp2021_mnistfc");
    let Ok(model) = lirpa_verify::Model::load(dir.join("mnist-net_256x6.onnx")) else {
        eprintln!("skipping: no mnistfc network in {}", dir.display());
        return;
    };
    let prop = lirpa_vnnlib::parse_file(dir.join("prop_1_0.03.vnnlib")).expect("property");
    let problem = lirpa_verify::Problem::from_property(&prop);
    let region = &problem.regions[0];
    let rows: Vec<&[f64]> = region.disjuncts.iter().flat_map(|d| d.c.iter().map(Vec::as_slice)).collect();
    let g = &model.g64;
    let root = ClampBounder::beta(g, 20, 0, None)
        .bound(&region.lower, &region.upper, &rows, None, &[], None)
        .expect("root bound");
    let children: Vec<(Arc<lirpa::NodeBounds>, Vec<Split>)> = root
        .scores
        .iter()
        .take(4)
        .flat_map(|&(s, _)| [true, false].map(|active| Split { active, ..s }))
        .map(|s| {
            let mut known = (*root.intermediate).clone();
            s.apply(&mut known);
            (Arc::new(known), vec![s])
        })
        .collect();
    assert_eq!(children.len(), 8, "the root has four split candidates");
    let sub = ClampBounder::beta(g, 3, 1, None);
    let warm = root.alpha.as_ref().map(|a| a.cast::<f64>());
    let bound = |(known, splits): &(Arc<lirpa::NodeBounds>, Vec<Split>)| {
        sub.bound(&region.lower, &region.upper, &rows, Some(known), splits, warm.as_ref()).expect("bound")
    };
    let mut group = c.benchmark_group("bab_domains");
    group.sample_size(10).measurement_time(Duration::from_secs(5)).warm_up_time(Duration::from_millis(500));
    group.bench_function(BenchmarkId::new("256x6", "one_at_a_time"), |b| {
        b.iter(|| children.iter().map(bound).collect::<Vec<_>>())
    });
    let pool = rayon::ThreadPoolBuilder::new().num_threads(2).build().expect("pool");
    group.bench_function(BenchmarkId::new("256x6", "parallel_2_threads"), |b| {
        b.iter(|| pool.install(|| children.par_iter().map(bound).collect::<Vec<_>>()))
    });
    let queries: Vec<Query<'_>> = children
        .iter()
        .map(|(known, splits)| Query {
            c: rows.clone(),
            known: known.clone(),
            splits: splits.clone(),
            warm: warm.as_ref(),
        })
        .collect();
    for threads in [1, 2] {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().expect("pool");
        group.bench_function(BenchmarkId::new("256x6", format!("batched_{threads}_threads")), |b| {
            b.iter(|| {
                pool.install(|| sub.bound_batch(&region.lower, &region.upper, &queries).expect("batch"))
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench_domains);
criterion_main!(benches);

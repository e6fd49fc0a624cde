//! Criterion benches of α-CROWN (20 iterations, auto_LiRPA's defaults) on the mnistfc
//! 256x6 network and a reference CNN, `C·y` with each case's specification matrix,
//! every core. Ids: `alpha-CROWN/<case>/spec_bounds`, and `CROWN/<case>/spec_bounds`
//! for comparison. Time per iteration ≈ (α-CROWN − CROWN) / (2 runs × 20 iterations)
//! when both sides are bounded (lower and upper are optimized separately).

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use lirpa::{BoundOptions, BoundRequest, InputValue, Method};
use lirpa_benches::BenchCase;
use std::hint::black_box;
use std::time::Duration;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const ALPHA_CASES: &[(&str, &str)] =
    &[("vnncomp", "mnistfc_256x6_prop5_0.03"), ("synthetic", "cnn__linf_0.02")];

fn bench_alpha(c: &mut Criterion) {
    let cases: Vec<BenchCase> = ALPHA_CASES
        .iter()
        .filter_map(|(folder, name)| match BenchCase::load(folder, name) {
            Ok(c) => Some(c),
            Err(e) => {
                eprintln!("skipping {name}: {e}");
                None
            }
        })
        .collect();
    for (mname, method) in [("CROWN", Method::Crown), ("alpha-CROWN", Method::AlphaCrown)] {
        let mut group = c.benchmark_group(mname);
        group
            .sample_size(10)
            .measurement_time(Duration::from_secs(5))
            .warm_up_time(Duration::from_millis(500));
        let opts = BoundOptions { threads: 0, ..BoundOptions::with_method(method) };
        for case in &cases {
            let inputs = [InputValue::Perturbed(case.ptb.clone())];
            let req = BoundRequest { c: Some(case.spec_c.as_ref()), ..Default::default() };
            group.bench_function(BenchmarkId::new(&case.name, "spec_bounds"), |b| {
                b.iter(|| {
                    lirpa::compute_bounds(black_box(&case.graph), black_box(&inputs), &opts, &req).unwrap()
                })
            });
        }
        group.finish();
    }
}

criterion_group!(benches, bench_alpha);
criterion_main!(benches);

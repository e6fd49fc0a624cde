//! Criterion benches of α-CROWN (20 iterations, auto_LiRPA's defaults) on every
//! reference case with a recorded α-CROWN time and on ERAN sigmoid 6x200
//! ([`lirpa_benches::alpha_cases`]): output bounds, both sides, every core. Ids:
//! `alpha-CROWN/<case>/bounds`, printed against auto_LiRPA's times by `bench-report`.

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use lirpa::{BoundOptions, BoundRequest, InputValue, Method};
use lirpa_benches::{ALPHA, BenchCase, alpha_cases};
use std::hint::black_box;
use std::time::Duration;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn bench_alpha(c: &mut Criterion) {
    let mut group = c.benchmark_group(ALPHA);
    group.sample_size(10).measurement_time(Duration::from_secs(5)).warm_up_time(Duration::from_millis(500));
    let opts = BoundOptions { threads: 0, ..BoundOptions::with_method(Method::AlphaCrown) };
    for (folder, name) in alpha_cases() {
        let case = match BenchCase::load(&folder, &name) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("skipping {name}: {e}");
                continue;
            }
        };
        let inputs = [InputValue::Perturbed(case.ptb.clone())];
        let req = BoundRequest::default();
        group.bench_function(BenchmarkId::new(&case.name, "bounds"), |b| {
            b.iter(|| lirpa::compute_bounds(black_box(&case.graph), black_box(&inputs), &opts, &req).unwrap())
        });
    }
    group.finish();
}

criterion_group!(benches, bench_alpha);
criterion_main!(benches);

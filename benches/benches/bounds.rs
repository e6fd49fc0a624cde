//! Criterion benches of the bound computation alone (model already loaded) on the
//! reference cases, with every core and the CLI's allocator. Ids:
//! `<method>/<case>/<bounds|spec_bounds>`.

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use lirpa::{BoundOptions, BoundRequest, InputValue};
use lirpa_benches::{BenchCase, CASES, METHODS};
use std::hint::black_box;
use std::time::Duration;

// The allocator the `lirpa` binary uses (see crates/lirpa-cli/Cargo.toml).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn bench_bounds(c: &mut Criterion) {
    let cases: Vec<BenchCase> = CASES
        .iter()
        .filter_map(|(folder, name)| match BenchCase::load(folder, name) {
            Ok(c) => Some(c),
            Err(e) => {
                eprintln!("skipping {name}: {e}");
                None
            }
        })
        .collect();
    for &(mname, method) in METHODS {
        let mut group = c.benchmark_group(mname);
        group
            .sample_size(20)
            .measurement_time(Duration::from_secs(2))
            .warm_up_time(Duration::from_millis(500));
        // All cores (2 on the reference machine), as auto_LiRPA's recorded times (2 threads).
        let opts = BoundOptions { threads: 0, ..BoundOptions::with_method(method) };
        for case in &cases {
            let inputs = [InputValue::Perturbed(case.ptb.clone())];
            for (key, spec) in [("bounds", None), ("spec_bounds", Some(case.spec_c.as_ref()))] {
                let req = BoundRequest { c: spec, ..Default::default() };
                group.bench_function(BenchmarkId::new(&case.name, key), |b| {
                    b.iter(|| {
                        lirpa::compute_bounds(black_box(&case.graph), black_box(&inputs), &opts, &req)
                            .unwrap()
                    })
                });
            }
        }
        group.finish();
    }
}

criterion_group!(benches, bench_bounds);
criterion_main!(benches);

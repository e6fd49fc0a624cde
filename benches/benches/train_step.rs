//! Criterion bench of one certified-training step (clean forward, IBP and CROWN-IBP
//! bounds of the margins, loss, the reverse passes, Adam) at batch 128 from the seeded
//! initial digits models, at ε = 0.05 of 0.1 (κ = β = 0.5, so a CROWN-IBP step computes
//! both its IBP and its CROWN-IBP bounds) — auto_LiRPA's `step_bench` in
//! `../shared/reference/training/anchor.json`. Ids: `train_step/<model>/<mode>/<threads>`.

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use faer::Mat;
use lirpa_train::{Dataset, Recipe, TrainConfig, TrainMethod, Trainer};
use std::time::Duration;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn bench_step(c: &mut Criterion) {
    let dir = lirpa_benches::reference_dir().join("training");
    let Ok(data) = Dataset::load_csv(&dir.join("digits.csv")) else {
        eprintln!("skipping: no digits data in {}", dir.display());
        return;
    };
    let x = Mat::from_fn(128, data.features, |i, j| data.x[i * data.features + j]);
    let labels = &data.labels[..128];
    let mut group = c.benchmark_group("train_step");
    group.sample_size(20).measurement_time(Duration::from_secs(4)).warm_up_time(Duration::from_millis(500));
    for model in ["mlp", "cnn"] {
        let bytes = std::fs::read(dir.join(format!("init_{model}.onnx"))).expect("model");
        let graph = lirpa::onnx::load_bytes::<f32>(&bytes, model).expect("model");
        // `frac`: the fraction of the final ε (0.1) of the step.
        for (mode, method, frac) in [
            ("natural", TrainMethod::Natural, 0.0),
            ("ibp", TrainMethod::Ibp, 0.5),
            ("crown-ibp", TrainMethod::CrownIbp, 0.5),
        ] {
            for threads in [1, 2] {
                let recipe = Recipe { eps: 0.1, batch: 128, ..Recipe::default() };
                let cfg =
                    TrainConfig { method, recipe, clip: Some((0.0, 1.0)), threads, ..TrainConfig::default() };
                let id = BenchmarkId::new(format!("{model}/{mode}"), format!("threads_{threads}"));
                group.bench_function(id, |b| {
                    // Each measured step starts again from the initialization, as the anchor's did.
                    b.iter_batched(
                        || Trainer::new(&graph, &cfg).expect("trainable"),
                        |mut t| t.step(&x, labels, frac, 1e-3).expect("step"),
                        criterion::BatchSize::LargeInput,
                    )
                });
            }
        }
    }
    group.finish();
}

criterion_group!(benches, bench_step);
criterion_main!(benches);

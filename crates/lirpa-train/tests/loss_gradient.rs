//! Finite-difference check of the whole training loss (natural and robust cross-entropy
//! mixed by κ, CROWN-IBP and IBP bounds mixed by β, with and without loss fusion and
//! weight perturbation) on a batch of digits with the seeded MLP, in f32: central
//! differences of the loss along random parameter coordinates, with a step large enough
//! for f32 and a tolerance to match; at most 1 in 10 may disagree (a ReLU kink crossed).

use faer::Mat;
use lirpa::TrainGraph;
use lirpa::core::RelaxOptions;
use lirpa::sample::Rng;
use lirpa_train::{Dataset, InputNorm, Recipe, TrainConfig, TrainMethod};
use std::path::PathBuf;

fn training_dir() -> PathBuf {
    let shared = std::env::var("LIRPA_SHARED")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared"));
    shared.join("reference/training")
}

#[test]
fn training_loss_gradient_matches_finite_differences() {
    let dir = training_dir();
    let data = Dataset::load_csv(&dir.join("digits.csv")).unwrap();
    let bytes = std::fs::read(dir.join("init_mlp.onnx")).unwrap();
    let graph = lirpa::onnx::load_bytes::<f32>(&bytes, "mlp").unwrap();
    let x = Mat::from_fn(8, data.features, |i, j| data.x[i * data.features + j]);
    let labels = &data.labels[..8];
    let mut rng = Rng::new(7);
    let (mut checked, mut bad) = (0, Vec::new());
    for (method, loss_fusion, weight_eps, norm) in [
        (TrainMethod::CrownIbp, false, 0.0, InputNorm::Inf),
        (TrainMethod::CrownIbp, true, 0.0, InputNorm::Inf),
        (TrainMethod::Ibp, true, 0.0, InputNorm::Inf),
        (TrainMethod::CrownIbp, true, 0.002, InputNorm::Inf),
        (TrainMethod::Crown, false, 0.0, InputNorm::Inf),
        (TrainMethod::CrownIbp, false, 0.0, InputNorm::L2),
    ] {
        let recipe = Recipe { eps: 0.1, batch: 8, ..Recipe::default() };
        let cfg = TrainConfig {
            method,
            recipe,
            clip: Some((0.0, 1.0)),
            weight_eps,
            loss_fusion,
            ..TrainConfig::default()
        };
        let mut g = TrainGraph::new(&graph, RelaxOptions::default(), faer::Par::Seq).unwrap();
        let (_, grads) = lirpa_train::loss_and_gradient(&mut g, &cfg, &x, labels, 0.5).unwrap();
        let base = g.params().to_vec();
        for _ in 0..40 {
            // Coordinates with a sizeable gradient: f32 differences resolve those.
            let k = rng.below(base.len());
            let i = (0..64)
                .map(|_| rng.below(base[k].len()))
                .max_by(|&a, &b| grads[k][a].abs().total_cmp(&grads[k][b].abs()))
                .unwrap();
            let h = 2e-3f32;
            let mut at = |d: f32| {
                let mut v = base.clone();
                v[k][i] += d;
                g.set_params(v).unwrap();
                lirpa_train::loss_and_gradient(&mut g, &cfg, &x, labels, 0.5).unwrap().0
            };
            let num = (at(h) - at(-h)) / (2.0 * h as f64);
            let ana = grads[k][i] as f64;
            checked += 1;
            if (ana - num).abs() > 0.03 * ana.abs().max(num.abs()).max(1e-3) {
                bad.push(format!("{method:?} {norm:?} lf={loss_fusion} w={weight_eps}: param {k}[{i}] analytic {ana:.6} numeric {num:.6}"));
            }
        }
        g.set_params(base).unwrap();
    }
    println!("{checked} coordinates, {} disagree:\n{}", bad.len(), bad.join("\n"));
    assert!(bad.len() * 10 <= checked, "{} of {checked} disagree", bad.len());
}

//! Certified training on the digits data set against auto_LiRPA's anchor
//! (`../shared/reference/training/anchor.json`): the anchor's recipe from the same
//! initial models must reach a clean and a CROWN-verified test error (ε = 0.1, margins
//! over the clipped box) no worse than auto_LiRPA's plus 2 points; a naturally trained
//! model of the same architecture has a far higher verified error. The trained model
//! is written back as ONNX and re-loaded; its outputs are the trained graph's.

use faer::Mat;
use lirpa_train::{Dataset, EpsSchedule, Evaluation, Recipe, TrainConfig, TrainMethod};
use std::path::PathBuf;

fn training_dir() -> PathBuf {
    let shared = std::env::var("LIRPA_SHARED")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared"));
    shared.join("reference/training")
}

fn anchor(model: &str, mode: &str) -> (f64, f64) {
    let text = std::fs::read_to_string(training_dir().join("anchor.json")).expect("anchor.json");
    let v: serde_json::Value = serde_json::from_str(&text).expect("JSON");
    let run = &v["runs"][format!("{model}/{mode}")]["recorded"];
    (run["clean_error"].as_f64().unwrap(), run["verified_error"]["eps_0.1"]["CROWN"].as_f64().unwrap())
}

/// Train `init_{model}.onnx` with the anchor's recipe; the test-set evaluation at ε 0.1
/// of the model written back and re-loaded.
fn run(model: &str, method: TrainMethod) -> Evaluation {
    let dir = training_dir();
    let all = Dataset::load_csv(&dir.join("digits.csv")).unwrap();
    let (train, test) = (all.rows(0..1437), all.rows(1437..all.len()));
    let bytes = std::fs::read(dir.join(format!("init_{model}.onnx"))).unwrap();
    let graph = lirpa::onnx::load_bytes::<f32>(&bytes, model).unwrap();
    // The anchor's recipe.
    let recipe = Recipe {
        eps: 0.1,
        epochs: 60,
        schedule: EpsSchedule { start: 2, length: 23 },
        lr_step: Some(10),
        lr_decay: 0.5,
        ..Recipe::default()
    };
    let cfg = TrainConfig { method, recipe, clip: Some((0.0, 1.0)), ..TrainConfig::default() };
    let started = std::time::Instant::now();
    let trained = lirpa_train::train(&graph, &train, &cfg, |_| {}).unwrap();
    let seconds = started.elapsed().as_secs_f64();
    let out = lirpa_train::export_onnx(&bytes, &graph, &trained).unwrap();
    let reloaded = lirpa::onnx::load_bytes::<f32>(&out, "trained").unwrap();
    // The written model computes what was trained.
    let x = Mat::from_fn(5, test.features, |i, j| test.x[i * test.features + j]);
    let ours = trained.natural(x.as_ref()).unwrap();
    let logits = ours.values.last().unwrap();
    for i in 0..5 {
        let y = reloaded.forward_all(&[&test.x[i * test.features..(i + 1) * test.features]]).unwrap();
        let y = y.last().unwrap();
        for (j, v) in y.iter().enumerate() {
            assert!((v - logits[(i, j)]).abs() <= 1e-4 * (1.0 + v.abs()), "exported model differs");
        }
    }
    let e = lirpa_train::evaluate(&reloaded, &test, 0.1, cfg.norm, cfg.clip, 1).unwrap();
    println!(
        "{model} {method:?}: {seconds:.1} s, clean err {:.2}%, verified err IBP {:.2}% CROWN {:.2}%",
        e.clean_err, e.ibp_err, e.crown_err
    );
    e
}

#[test]
fn mlp_crown_ibp_matches_auto_lirpa_and_natural_does_not_verify() {
    let (clean, verified) = anchor("mlp", "crown-ibp");
    let e = run("mlp", TrainMethod::CrownIbp);
    assert!(e.clean_err <= clean + 2.0, "clean error {} vs anchor {clean}", e.clean_err);
    assert!(e.crown_err <= verified + 2.0, "verified error {} vs anchor {verified}", e.crown_err);
    let n = run("mlp", TrainMethod::Natural);
    assert!(
        n.crown_err >= 80.0 && n.crown_err > e.crown_err + 40.0,
        "natural model verified error {}",
        n.crown_err
    );
}

#[test]
fn cnn_crown_ibp_matches_auto_lirpa() {
    let (clean, verified) = anchor("cnn", "crown-ibp");
    let e = run("cnn", TrainMethod::CrownIbp);
    assert!(e.clean_err <= clean + 2.0, "clean error {} vs anchor {clean}", e.clean_err);
    assert!(e.crown_err <= verified + 2.0, "verified error {} vs anchor {verified}", e.crown_err);
}

/// The flat-landscape experiment at small scale: an MLP trained against the worst case
/// of its loss over an L∞ ball of radius 0.005 around every weight (inputs exact) keeps a
/// lower clean test error than the naturally trained one when the weights of both are
/// quantized to 4 and to 3 bits.
#[test]
fn weight_perturbation_training_survives_quantization() {
    let dir = training_dir();
    let all = Dataset::load_csv(&dir.join("digits.csv")).unwrap();
    let (train, test) = (all.rows(0..1437), all.rows(1437..all.len()));
    let bytes = std::fs::read(dir.join("init_mlp.onnx")).unwrap();
    let graph = lirpa::onnx::load_bytes::<f32>(&bytes, "mlp").unwrap();
    let errors = |method, weight_eps| {
        let recipe =
            Recipe { epochs: 60, schedule: EpsSchedule { start: 2, length: 23 }, ..Recipe::default() };
        let cfg = TrainConfig { method, recipe, weight_eps, ..TrainConfig::default() };
        let mut g = lirpa_train::train(&graph, &train, &cfg, |_| {}).unwrap();
        let base = g.params().to_vec();
        let mut out = vec![lirpa_train::clean_error(&g, &test).unwrap()];
        for bits in [4, 3] {
            g.set_params(base.clone()).unwrap();
            let q = lirpa_train::quantized_params(&g, bits);
            g.set_params(q).unwrap();
            out.push(lirpa_train::clean_error(&g, &test).unwrap());
        }
        out
    };
    let natural = errors(TrainMethod::Natural, 0.0);
    let flat = errors(TrainMethod::Ibp, 0.005);
    println!("clean test error (full, 4 bits, 3 bits): natural {natural:?}, weight-perturbed {flat:?}");
    assert!(flat[1] < natural[1] && flat[2] < natural[2], "natural {natural:?} vs weight-perturbed {flat:?}");
}

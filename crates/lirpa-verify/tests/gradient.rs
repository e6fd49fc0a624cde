//! The attack's gradients (CROWN on a degenerate box) match central finite
//! differences of the f64 forward pass on ACAS Xu networks, away from ReLU kinks.

use lirpa_verify::{Model, attack::value_and_gradient};
use std::path::Path;

#[test]
fn crown_at_a_point_is_the_jacobian() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/benchmarks/vnncomp2021_acasxu");
    let mut rng = lirpa::sample::Rng::new(7);
    let mut checked = 0;
    for net in ["1_1", "2_9", "5_3"] {
        let model = Model::load(dir.join(format!("ACASXU_run2a_{net}_batch_2000.onnx"))).unwrap();
        let c = vec![vec![1.0, -1.0, 0.0, 0.0, 0.0], vec![0.0, 0.0, -1.0, 0.0, 1.0]];
        for _ in 0..20 {
            let x: Vec<f64> = (0..5).map(|_| rng.uniform() - 0.5).collect();
            let (v, g) = value_and_gradient(&model, &x, &c).unwrap();
            let y = model.forward64(&x).unwrap();
            for (i, row) in c.iter().enumerate() {
                let cy: f64 = row.iter().zip(&y).map(|(a, b)| a * b).sum();
                assert!((v[i] - cy).abs() < 1e-4 * (1.0 + cy.abs()), "value {} vs {cy}", v[i]);
            }
            let h = 1e-6;
            for j in 0..5 {
                let (mut xp, mut xm) = (x.clone(), x.clone());
                xp[j] += h;
                xm[j] -= h;
                let (yp, ym) = (model.forward64(&xp).unwrap(), model.forward64(&xm).unwrap());
                for (i, row) in c.iter().enumerate() {
                    let fd: f64 =
                        row.iter().zip(yp.iter().zip(&ym)).map(|(a, (p, m))| a * (p - m) / (2.0 * h)).sum();
                    let gij = g[i * 5 + j];
                    // A kink inside [x-h, x+h] would make them differ; with random x
                    // that has probability ~0, and f32 rounding is far below 1e-2.
                    assert!(
                        (gij - fd).abs() < 1e-2 * (1.0 + fd.abs()),
                        "net {net} row {i} dim {j}: {gij} vs {fd}"
                    );
                    checked += 1;
                }
            }
        }
    }
    assert_eq!(checked, 3 * 20 * 5 * 2);
}

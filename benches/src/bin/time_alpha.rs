use lirpa::{BoundOptions, BoundRequest, InputValue, Method};
use lirpa_benches::BenchCase;
fn main() {
    for (folder, name) in [
        ("vnncomp", "mnistfc_256x6_prop5_0.03"),
        ("synthetic", "cnn__linf_0.02"),
        ("vnncomp", "acas_2_1_prop1"),
        ("vnncomp", "mnistfc_256x2_prop1_0.05"),
        ("synthetic", "mlp_relu__linf_0.05"),
        ("synthetic", "resnet_tiny__linf_0.01"),
        ("synthetic", "cnn__l2_0.3"),
    ] {
        let case = BenchCase::load(folder, name).unwrap();
        let inputs = [InputValue::Perturbed(case.ptb.clone())];
        for (key, spec) in [("spec", Some(case.spec_c.as_ref()))] {
            let req = BoundRequest { c: spec, ..Default::default() };
            let mut line = format!("{name} {key}:");
            for (m, it) in [(Method::Crown, 0), (Method::AlphaCrown, 1), (Method::AlphaCrown, 20)] {
                let mut o = BoundOptions { threads: 0, ..BoundOptions::with_method(m) };
                o.optimize.iterations = it.max(1);
                o.optimize.early_stop_patience = 0;
                let t = std::time::Instant::now();
                let r = lirpa::compute_bounds(&case.graph, &inputs, &o, &req).unwrap();
                let dt = t.elapsed().as_secs_f64();
                let mean = r.lower.iter().map(|x| *x as f64).sum::<f64>() / r.lower.len() as f64;
                line += &format!(" {m}/{it}: {dt:.3}s mean_lower {mean:.4};");
            }
            println!("{line}");
        }
    }
}

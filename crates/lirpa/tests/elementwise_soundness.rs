//! The soundness harness (`lirpa-soundness`) on every registered unary operator of the
//! standard plugins (with parameterised variants: Pow exponents, Clip bounds, …), in
//! `f32` and `f64`, and on random chains of them through the engine.
//!
//! `cargo test` runs a small count; `cargo xtask soundness --cases N [--op NAME]
//! [--seed S]` sets `LIRPA_SOUNDNESS_CASES`, `LIRPA_SOUNDNESS_OP` and
//! `LIRPA_SOUNDNESS_SEED`.

use lirpa_soundness::{Config, check_chains, check_op, registered_unary_specs};

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

#[test]
fn every_registered_unary_op_is_sound() {
    // Name the facade so that the standard plugins are linked.
    assert!(!lirpa::standard_ops().is_empty());
    let cases: usize = env_or("LIRPA_SOUNDNESS_CASES", 400);
    let seed: u64 = env_or("LIRPA_SOUNDNESS_SEED", 1);
    let only = std::env::var("LIRPA_SOUNDNESS_OP").ok();
    let specs: Vec<_> = registered_unary_specs()
        .into_iter()
        .filter(|s| only.as_deref().is_none_or(|o| s.op_type == o))
        .collect();
    assert!(!specs.is_empty(), "no unary operator matches {only:?}");
    // Every element-wise operator of the activation plugin is covered.
    if only.is_none() {
        for op in lirpa::core::plugin_ops("lirpa-ops-activation") {
            assert!(specs.iter().any(|s| s.op_type == *op), "{op} is not probed as a unary operator");
        }
    }
    let cfg = Config { cases, seed, ..Default::default() };
    let (mut samples, mut intervals, mut bad) = (0u64, 0usize, Vec::new());
    let start = std::time::Instant::now();
    for s in &specs {
        let r = check_op(s, &cfg).unwrap_or_else(|e| panic!("{}: {e}", s.label()));
        eprintln!("{r}");
        samples += r.samples;
        intervals += r.intervals;
        // Most intervals must be accepted (a relaxation that refuses everything
        // checks nothing); domain-restricted functions refuse about half.
        if r.rejected * 10 > r.intervals * 8 {
            bad.push(format!("{}: {} of {} intervals rejected", r.op, r.rejected, r.intervals));
        }
        if !r.is_ok() {
            bad.push(r.to_string());
        }
    }
    let chains = check_chains(&specs, (cases / 10).max(10), 3, 8, seed).unwrap();
    eprintln!("{chains}");
    if !chains.is_ok() {
        bad.push(chains.to_string());
    }
    eprintln!(
        "soundness: {} operator variants, {intervals} intervals, {samples} samples + {} chain samples in {:.2?}",
        specs.len(),
        chains.samples,
        start.elapsed()
    );
    assert!(bad.is_empty(), "soundness violations:\n{}", bad.join("\n"));
}

/// Domain errors name the node and the operator, for every method, and are never NaN.
#[test]
fn domain_errors_name_the_node() {
    use lirpa::core::{Attributes, GraphBuilder, TensorData};
    use lirpa::{BoundOptions, BoundRequest, InputValue, Method, Perturbation};
    for (op, lower, upper, exponent) in [
        ("Log", -0.5, 1.0, None),
        ("Log", 0.0, 1.0, None),
        ("Reciprocal", -0.5, 1.0, None),
        ("Sqrt", -0.5, 1.0, None),
        ("Pow", -0.5, 1.0, Some(0.5)),
        ("Pow", -0.5, 1.0, Some(-1.0)),
    ] {
        let mut b = GraphBuilder::<f32>::new();
        b.add_input("x", &[2]).unwrap();
        let mut inputs = vec![Some("x")];
        if let Some(p) = exponent {
            b.add_constant("p", TensorData::scalar(p)).unwrap();
            inputs.push(Some("p"));
        }
        b.add_node("the_node", op, "", 17, &Attributes::default(), &inputs).unwrap();
        let g = b.finish(&["the_node"]).unwrap();
        let ptb = Perturbation::new_box(vec![lower, 2.0], vec![upper, 3.0]).unwrap();
        for m in [Method::Ibp, Method::Crown, Method::CrownIbp] {
            let r = lirpa::compute_bounds(
                &g,
                &[InputValue::Perturbed(ptb.clone())],
                &BoundOptions::with_method(m),
                &BoundRequest::default(),
            );
            let e = r.err().unwrap_or_else(|| panic!("{op} on [{lower}, {upper}] with {m:?} must fail"));
            let msg = e.to_string();
            assert!(msg.contains("the_node") && msg.contains(op), "{op} {m:?}: {msg}");
        }
    }
}

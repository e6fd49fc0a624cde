//! Every standard operator is registered, by the plugin that owns it. This catches a
//! plugin the facade forgot to name (inventory drops the registrations of a crate that
//! no code names).

#[test]
fn standard_operators_are_registered() {
    let registered: Vec<(&str, &str)> =
        lirpa::registered_ops().iter().map(|r| (r.op_type, r.plugin)).collect();
    let expected = lirpa::standard_ops();
    assert!(expected.len() >= 19, "standard op list unexpectedly short: {expected:?}");
    for op in &expected {
        assert!(
            registered.iter().any(|(t, _)| t == op),
            "operator {op} is not registered; registered: {registered:?}"
        );
    }
    for (op, plugin) in &registered {
        let owner = owner_of(op);
        assert_eq!(*plugin, owner, "operator {op} registered by {plugin}");
    }
    // No operator type is registered twice.
    let mut names: Vec<_> = registered.iter().map(|(t, _)| *t).collect();
    names.sort_unstable();
    let before = names.len();
    names.dedup();
    assert_eq!(before, names.len(), "duplicate registrations");
}

/// The plugin that owns each standard operator, from each plugin's own list.
fn owner_of(op: &str) -> &'static str {
    if lirpa_ops_relu::OPS.contains(&op) {
        "lirpa-ops-relu"
    } else if lirpa_ops_conv::OPS.contains(&op) {
        "lirpa-ops-conv"
    } else if lirpa_ops_activation::OPS.contains(&op) {
        "lirpa-ops-activation"
    } else {
        "lirpa-ops-linear"
    }
}

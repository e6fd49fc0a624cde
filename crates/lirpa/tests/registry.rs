//! Every standard operator is registered, by the plugin that owns it. This catches a
//! plugin the facade forgot to name (inventory drops the registrations of a crate that
//! no code names).

#[test]
fn standard_operators_are_registered() {
    let registered: Vec<(&str, &str, i32)> =
        lirpa::registered_ops().iter().map(|r| (r.op_type, r.plugin, r.priority)).collect();
    let expected = lirpa::standard_ops();
    assert!(expected.len() >= 27, "standard op list unexpectedly short: {expected:?}");
    for op in &expected {
        assert!(
            registered.iter().any(|(t, _, _)| t == op),
            "operator {op} is not registered; registered: {registered:?}"
        );
    }
    // Each registration comes from a plugin that lists the operator as its own.
    for (op, plugin, _) in &registered {
        assert!(owns(plugin, op), "operator {op} registered by {plugin}, which does not list it");
    }
    // An operator type may be registered by several plugins (a refinement with a
    // higher priority that declines what it does not handle), never twice at one
    // priority: the order in which builders are tried is always defined.
    let mut keys: Vec<_> = registered.iter().map(|(t, _, p)| (*t, *p)).collect();
    keys.sort_unstable();
    let before = keys.len();
    keys.dedup();
    assert_eq!(before, keys.len(), "two registrations of one operator at one priority: {registered:?}");
    // The products are refined by the bilinear plugin, tried first.
    for op in ["Mul", "MatMul", "Div"] {
        let regs = lirpa::core::lookup_all("", op);
        let plugins: Vec<_> = regs.iter().map(|r| r.plugin).collect();
        assert_eq!(plugins, ["lirpa-ops-bilinear", "lirpa-ops-linear"], "{op}");
    }
}

/// Whether `plugin` lists `op` among the operators it registers.
fn owns(plugin: &str, op: &str) -> bool {
    let list: &[&str] = match plugin {
        "lirpa-ops-linear" => lirpa_ops_linear::OPS,
        "lirpa-ops-relu" => lirpa_ops_relu::OPS,
        "lirpa-ops-conv" => lirpa_ops_conv::OPS,
        "lirpa-ops-bilinear" => lirpa_ops_bilinear::OPS,
        "lirpa-ops-attention" => lirpa_ops_attention::OPS,
        "lirpa-ops-activation" => lirpa_ops_activation::OPS,
        _ => return false,
    };
    list.contains(&op)
}

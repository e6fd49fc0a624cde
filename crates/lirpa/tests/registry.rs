//! Every standard operator is registered, by the plugin that owns it. This catches a
//! plugin the facade forgot to name (inventory drops the registrations of a crate that
//! no code names) and a dropped or misplaced registration: the lists below are this
//! test's expectation; the plugins' own list is their registrations.

/// The operator types each standard plugin registers.
const EXPECTED: &[(&str, &[&str])] = &[
    (
        "lirpa_ops_linear",
        &[
            "Add",
            "Cast",
            "Concat",
            "Constant",
            "ConstantOfShape",
            "Div",
            "Dropout",
            "Flatten",
            "Gather",
            "Gemm",
            "Identity",
            "MatMul",
            "Mul",
            "Neg",
            "Pad",
            "Reshape",
            "Shape",
            "Slice",
            "Squeeze",
            "Sub",
            "Transpose",
            "Unsqueeze",
        ],
    ),
    ("lirpa_ops_relu", &["LeakyRelu", "Relu"]),
    (
        "lirpa_ops_conv",
        &["AveragePool", "BatchNormalization", "Conv", "ConvTranspose", "GlobalAveragePool", "MaxPool"],
    ),
    ("lirpa_ops_bilinear", &["Conv", "Div", "Gemm", "MatMul", "Mul"]),
    (
        "lirpa_ops_attention",
        &["LayerNormalization", "ReduceMax", "ReduceMean", "ReduceMin", "ReduceSum", "Softmax"],
    ),
    (
        "lirpa_ops_activation",
        &[
            "Abs",
            "Atan",
            "Clip",
            "Cos",
            "Erf",
            "Exp",
            "Floor",
            "Gelu",
            "Log",
            "Pow",
            "Reciprocal",
            "Sigmoid",
            "Sign",
            "Sin",
            "Softplus",
            "Sqrt",
            "Tanh",
        ],
    ),
];

#[test]
fn standard_operators_are_registered() {
    let mut plugins = lirpa::standard_plugins();
    plugins.sort_unstable();
    let mut expected: Vec<&str> = EXPECTED.iter().map(|(p, _)| *p).collect();
    expected.sort_unstable();
    assert_eq!(plugins, expected, "the facade's standard plugins");
    for (plugin, ops) in EXPECTED {
        assert_eq!(lirpa::core::plugin_ops(plugin), *ops, "operators registered by {plugin}");
    }
    let mut all: Vec<&str> = EXPECTED.iter().flat_map(|(_, ops)| ops.iter().copied()).collect();
    all.sort_unstable();
    all.dedup();
    assert_eq!(lirpa::standard_ops(), all);
    // Every registration in this binary comes from a standard plugin.
    let registered = lirpa::registered_ops();
    for r in &registered {
        let krate = r.plugin.replace('-', "_");
        assert!(plugins.contains(&krate.as_str()), "operator {} registered by {}", r.op_type, r.plugin);
    }
    // An operator type may be registered by several plugins (a refinement with a
    // higher priority that declines what it does not handle), never twice at one
    // priority: the order in which builders are tried is always defined.
    let mut keys: Vec<_> = registered.iter().map(|r| (r.domain, r.op_type, r.priority)).collect();
    keys.sort_unstable();
    let before = keys.len();
    keys.dedup();
    assert_eq!(before, keys.len(), "two registrations of one operator at one priority");
    // The products are refined by the bilinear plugin, tried first.
    for op in ["Mul", "MatMul", "Div"] {
        let regs = lirpa::core::lookup_all("", op);
        let plugins: Vec<_> = regs.iter().map(|r| r.plugin).collect();
        assert_eq!(plugins, ["lirpa-ops-bilinear", "lirpa-ops-linear"], "{op}");
    }
}

/// Relaxation options are keyed by the plugin that declares them: an unknown key or a
/// value the plugin refuses is an error naming it, serialized options round-trip, and
/// the ReLU plugin reads its own key back.
#[test]
fn relaxation_options_are_declared_by_plugins() {
    use lirpa::core::RelaxOptions;
    use lirpa_ops_relu::{LOWER_SLOPE, ReluLowerSlope};
    let keys: Vec<&str> = RelaxOptions::declared().iter().map(|o| o.key).collect();
    assert_eq!(keys, [LOWER_SLOPE]);
    let mut o = RelaxOptions::default();
    assert_eq!(ReluLowerSlope::of(&o), ReluLowerSlope::Adaptive);
    let e = o.set("no_such_option", "1").unwrap_err().to_string();
    assert!(e.contains("no_such_option") && e.contains(LOWER_SLOPE), "{e}");
    let e = o.set(LOWER_SLOPE, "steep").unwrap_err().to_string();
    assert!(e.contains("steep") && e.contains("lirpa-ops-relu"), "{e}");
    assert_eq!(o, RelaxOptions::default(), "a refused value leaves the options unchanged");
    for slope in ReluLowerSlope::ALL {
        slope.set(&mut o).unwrap();
        assert_eq!(ReluLowerSlope::of(&o), slope);
        let opts = lirpa::BoundOptions { relax: o.clone(), ..Default::default() };
        let json = serde_json::to_string(&opts).unwrap();
        assert!(json.contains(&format!("\"relax\":{{\"{LOWER_SLOPE}\":\"{}\"}}", slope.name())), "{json}");
        let back: lirpa::BoundOptions = serde_json::from_str(&json).unwrap();
        assert_eq!(back, opts);
    }
    let bad = r#"{"relax":{"relu_lower_slope":"steep"}}"#;
    let e = serde_json::from_str::<lirpa::BoundOptions>(bad).unwrap_err().to_string();
    assert!(e.contains("steep"), "{e}");
}

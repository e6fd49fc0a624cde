//! The lexical quirks of real VNN-LIB files (shared/notes/vnncomp.md §3), and
//! malformed input: errors with a line number, never a panic.

use lirpa_vnnlib::{OutputConjunction, parse_str};

const HEADER: &str = "(declare-const X_0 Real)\n(declare-const X_1 Real)\n(declare-const Y_0 Real)\n(declare-const Y_1 Real)\n(declare-const Y_2 Real)\n";

#[test]
fn quirks_parse_to_the_same_property() {
    // The plain form, then the same property with every quirk.
    let plain = format!(
        "{HEADER}(assert (<= X_0 0.029999999329447746))\n(assert (>= X_0 -0.499999896))\n\
         (assert (<= X_1 1))\n(assert (>= X_1 0))\n(assert (or (and (<= Y_1 Y_0) (<= Y_2 Y_0))))\n"
    );
    let quirky = format!(
        "; a comment line\n{HEADER}(assert (<= X_0 0.029999999329447746)) ; trailing comment\n\
         (assert\t(>=\tX_0\t-0.499999896))\r\n(assert (<= X_1 1))(assert (>= X_1 0))\n\
         (assert \n(or\n  (and (<= Y_1 Y_0)(<= Y_2 Y_0))\n)\n)"
    );
    assert!(!quirky.ends_with('\n'));
    let (a, b) = (parse_str(&plain).unwrap(), parse_str(&quirky).unwrap());
    assert_eq!(a, b);
    let r = &a.regions[0];
    assert_eq!(r.lower, vec![-0.499999896, 0.0]);
    assert_eq!(r.upper, vec![0.029999999329447746, 1.0]);
    // Y_1 <= Y_0 is the row e_1 - e_0 <= 0.
    assert_eq!(
        r.outputs,
        vec![OutputConjunction {
            mat: vec![vec![-1.0, 1.0, 0.0], vec![-1.0, 0.0, 1.0]],
            rhs: vec![0.0, 0.0]
        }]
    );
}

#[test]
fn input_and_mixed_disjunctions() {
    // ACAS Xu property 6 style: two input boxes in an `or`, then an output `or`.
    let text = format!(
        "{HEADER}(assert (or (and (<= X_0 1) (>= X_0 0) (<= X_1 1) (>= X_1 0)) \
         (and (<= X_0 3) (>= X_0 2) (<= X_1 1) (>= X_1 0))))\n\
         (assert (or (and (>= Y_0 Y_1)) (and (>= Y_0 Y_2))))"
    );
    let p = parse_str(&text).unwrap();
    assert_eq!(p.regions.len(), 2);
    assert!(p.regions.iter().all(|r| r.outputs.len() == 2));
    // nn4sys style: each disjunct an input box with its own output atom; a degenerate box.
    let text = format!(
        "{HEADER}(assert (or (and (<= X_0 1) (>= X_0 1) (<= X_1 0) (>= X_1 0) (>= Y_0 5)) \
         (and (<= X_0 2) (>= X_0 1.5) (<= X_1 0) (>= X_1 0) (<= Y_0 -5))))"
    );
    let p = parse_str(&text).unwrap();
    assert_eq!(p.regions.len(), 2);
    assert_eq!((p.regions[0].lower.clone(), p.regions[0].upper.clone()), (vec![1.0, 0.0], vec![1.0, 0.0]));
    assert_eq!(p.regions[1].outputs[0].rhs, vec![-5.0]);
}

#[test]
fn malformed_inputs_are_errors_with_a_line() {
    let good = format!(
        "{HEADER}(assert (<= X_0 1))\n(assert (>= X_0 0))\n(assert (<= X_1 1))\n(assert (>= X_1 0))\n(assert (>= Y_0 Y_1))\n"
    );
    parse_str(&good).unwrap();
    let cases = [
        (good[..good.len() - 10].to_string(), "unclosed"), // truncated
        (good.replace("(assert (>= Y_0 Y_1))", "(assert (>= Y_0 Y_1)))"), "unbalanced"),
        (good.replace("Y_1))\n", "Y_7))\n"), "not declared"), // unknown variable
        (good.replace("(assert (>= X_1 0))", ""), "not bounded"), // X without a bound
        (good.replace("(<= X_0 1)", "(<= X_0 abc)"), "expected a number"),
        (good.replace("(>= Y_0 Y_1)", "(>= (* Y_0 Y_1) 0)"), "not linear"),
    ];
    for (text, what) in cases {
        let e = parse_str(&text).unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains(what), "expected '{what}' in: {msg}");
        assert!(e.line >= 1, "{msg}");
    }
}

/// Deterministic fuzzing: delete, duplicate or replace random characters of real
/// property texts; the parser returns (Ok or Err) and never panics.
#[test]
fn mutated_files_never_panic() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/benchmarks");
    let texts: Vec<String> = [
        "vnncomp2021_acasxu/prop_1.vnnlib",
        "vnncomp2021_acasxu/prop_6.vnnlib",
        "vnncomp2021_test/test_prop.vnnlib",
    ]
    .iter()
    .map(|p| std::fs::read_to_string(dir.join(p)).expect("benchmark property"))
    .collect();
    let mut state = 0x2545_F491_4F6C_DD1Du64;
    let mut next = |n: usize| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state % n as u64) as usize
    };
    let alphabet = ['(', ')', ' ', '\n', 'X', 'Y', '_', '0', '9', '-', '.', 'e', ';', '<', '=', 'a'];
    let (mut ok, mut err) = (0, 0);
    for round in 0..3000 {
        let mut chars: Vec<char> = texts[round % texts.len()].chars().collect();
        for _ in 0..1 + next(4) {
            let i = next(chars.len());
            match next(3) {
                0 => {
                    chars.remove(i);
                }
                1 => chars.insert(i, chars[i]),
                _ => chars[i] = alphabet[next(alphabet.len())],
            }
        }
        if round % 10 == 0 {
            chars.truncate(next(chars.len()));
        }
        let text: String = chars.into_iter().collect();
        match parse_str(&text) {
            Ok(_) => ok += 1,
            Err(e) => {
                assert!(!e.message.is_empty());
                err += 1;
            }
        }
    }
    assert!(ok > 0 && err > 0, "{ok} parsed, {err} errors");
}

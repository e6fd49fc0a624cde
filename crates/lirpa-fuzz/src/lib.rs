//! An in-repo mutation fuzzer on stable Rust (no libFuzzer, no nightly toolchain).
//!
//! Three targets ([`Target`]): the ONNX loader with graph building and a bound
//! computation by every method, the VNN-LIB parser with the verifier's normalization,
//! and the command line's JSON inputs (vectors, specification matrices, perturbation
//! files, the latter loaded against the bundled toy model and bounded). Each target
//! takes bytes and must never panic; a bound it prints must be finite.
//!
//! The loop ([`fuzz`]) keeps a corpus seeded from `../shared` (the benchmarks and
//! reference cases beside the repository) and the repository's own models, mutates
//! inputs byte by byte (bit flips, interesting integers, protobuf varints, insertions,
//! deletions, duplications, splices, dictionary tokens) and, for ONNX, field by field
//! (dimensions, attributes, op types, initializers, decoded and re-encoded), runs each
//! case in-process under `catch_unwind`, and keeps an input whose outcome (the
//! result's class: an error message with numbers and names removed, or the shape of a
//! success) is new: the number of distinct outcomes is the coverage proxy. Every case
//! runs with a small memory budget (the size guard) in a worker process; the
//! supervisor (the `lirpa-fuzz` binary) restarts a worker that aborts (a stack overflow, an
//! allocation failure) or hangs, and saves the input that did it. A panicking,
//! aborting or hanging input is written to `regressions/<target>/`, which
//! `tests/regressions.rs` replays on every `cargo test`.

use lirpa::core::rng::Rng;
use lirpa::onnx::proto;
use prost::Message;
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// A fuzz target.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    Onnx,
    Vnnlib,
    Json,
}

impl Target {
    pub const ALL: [Target; 3] = [Target::Onnx, Target::Vnnlib, Target::Json];

    pub fn name(self) -> &'static str {
        match self {
            Target::Onnx => "onnx",
            Target::Vnnlib => "vnnlib",
            Target::Json => "json",
        }
    }

    pub fn parse(s: &str) -> Option<Target> {
        Target::ALL.into_iter().find(|t| t.name() == s)
    }

    /// Largest input a mutation may produce.
    fn max_len(self) -> usize {
        match self {
            Target::Onnx => 256 << 10,
            Target::Vnnlib | Target::Json => 64 << 10,
        }
    }
}

/// The memory budget of every fuzz case: anything larger is refused by the library's
/// own checks, which is what the fuzzer tests.
pub const CASE_MEMORY: u64 = 256 << 20;

/// The crate's directory (regressions live under it).
pub fn crate_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Where the inputs that crashed a target are kept (and replayed by the tests).
pub fn regression_dir(t: Target) -> PathBuf {
    crate_dir().join("regressions").join(t.name())
}

const TOY: &[u8] = include_bytes!("../../../models/toy.onnx");

// ------------------------------------------------------------------ the targets

/// Run one input through a target. `Ok` carries the outcome's class (the coverage
/// proxy); `Err` is an invariant violation (a non-finite bound printed). A panic is
/// the caller's to catch.
pub fn run(t: Target, data: &[u8]) -> Result<String, String> {
    lirpa::core::budget::set_max_memory(CASE_MEMORY);
    match t {
        Target::Onnx => run_onnx(data),
        Target::Vnnlib => run_vnnlib(data),
        Target::Json => run_json(data),
    }
}

/// An error message reduced to its class: digits and quoted names removed, cut short.
fn class(prefix: &str, msg: &str) -> String {
    let mut out = String::from(prefix);
    let mut quoted = false;
    for c in msg.chars() {
        match c {
            '\'' | '"' => {
                quoted = !quoted;
                out.push('_');
            }
            _ if quoted => {}
            c if c.is_ascii_digit() => {
                if !out.ends_with('#') {
                    out.push('#');
                }
            }
            c => out.push(c),
        }
        if out.len() > 90 {
            break;
        }
    }
    out
}

/// Bound `graph` over a box around 0 by every method (small models only), checking
/// that every printed bound is finite.
fn bound_all<T: lirpa::Scalar>(graph: &lirpa::Graph<T>, out: &mut String) -> Result<(), String> {
    use lirpa::{BoundOptions, BoundRequest, InputValue, Method, Perturbation};
    let Ok(input) = graph.input() else { return Ok(()) };
    let n = graph.node(input).numel();
    let total: usize = graph.nodes().iter().map(|n| n.numel()).sum();
    if n > 1024 || total > 50_000 {
        out.push_str(":big");
        return Ok(());
    }
    let ptb = match Perturbation::new_box(vec![T::from_f64(-0.5); n], vec![T::from_f64(0.5); n]) {
        Ok(p) => p,
        Err(_) => return Ok(()),
    };
    let inputs = [InputValue::Perturbed(ptb)];
    // α-CROWN's time and memory grow with outputs × the network (its estimate in the
    // engine's guard is not an upper bound there): only on small outputs.
    let outputs = graph.output().map_or(0, |o| graph.node(o).numel());
    let alpha = (outputs <= 16 && total <= 5_000).then_some(Method::AlphaCrown);
    for method in
        [Some(Method::Ibp), Some(Method::Crown), Some(Method::CrownIbp), alpha, Some(Method::Forward)]
            .into_iter()
            .flatten()
    {
        let mut opts = BoundOptions { method, max_memory: Some(CASE_MEMORY), ..Default::default() };
        opts.optimize.iterations = 2;
        opts.optimize.deadline = Some(Instant::now() + Duration::from_millis(200));
        let start = Instant::now();
        let res = lirpa::compute_bounds(graph, &inputs, &opts, &BoundRequest::default());
        if start.elapsed() > Duration::from_secs(2) {
            // Slow, not hung: later methods are skipped (the supervisor catches hangs).
            out.push_str(":slow");
            break;
        }
        match res {
            Ok(r) => {
                if r.lower.iter().chain(&r.upper).any(|x| !x.is_finite()) {
                    return Err(format!("{method} returned a non-finite bound"));
                }
                out.push_str(&format!(":{method}ok"));
            }
            Err(e) => out.push_str(&class(&format!(":{method}err:"), &e.to_string())),
        }
    }
    Ok(())
}

fn run_onnx(data: &[u8]) -> Result<String, String> {
    match lirpa::onnx::load_bytes::<f32>(data, "fuzz.onnx") {
        Ok(g) => {
            let mut out = format!("ok:{}", g.len().min(8));
            bound_all(&g, &mut out)?;
            Ok(out)
        }
        Err(e) => Ok(class("err:", &e.to_string())),
    }
}

fn run_vnnlib(data: &[u8]) -> Result<String, String> {
    let text = String::from_utf8_lossy(data);
    match lirpa_vnnlib::parse_str(&text) {
        Ok(p) => {
            let problem = lirpa_verify::Problem::from_property(&p);
            let (l, u) = p.input_box();
            if !p.regions.is_empty() && l.iter().chain(&u).any(|x| !x.is_finite()) {
                return Err("a non-empty property with a non-finite input box".into());
            }
            Ok(format!("ok:{}:{}", p.regions.len().min(4), problem.regions.len().min(4)))
        }
        Err(e) => Ok(class("err:", &e.message)),
    }
}

fn run_json(data: &[u8]) -> Result<String, String> {
    use lirpa_cli::{inputs, perturbation};
    let text = String::from_utf8_lossy(data);
    let mut out = String::new();
    match inputs::parse_vector(&text, "v.json") {
        Ok(v) => out.push_str(&format!("v{}", v.len().min(3))),
        Err(e) => out.push_str(&class("verr:", &format!("{e:#}"))),
    }
    match inputs::parse_matrix(&text, "c.json") {
        Ok(m) => out.push_str(&format!(":m{}", m.len().min(3))),
        Err(e) => out.push_str(&class(":merr:", &format!("{e:#}"))),
    }
    match perturbation::parse::<f32>(&text, "p.json") {
        Ok(entries) => match lirpa::load_perturbed_bytes::<f32>(TOY, "toy.onnx", &entries) {
            Ok(m) => {
                use lirpa::{BoundOptions, BoundRequest, Method};
                let opts = BoundOptions {
                    max_memory: Some(CASE_MEMORY),
                    ..BoundOptions::with_method(Method::Crown)
                };
                match lirpa::compute_bounds(&m.graph, &m.inputs, &opts, &BoundRequest::default()) {
                    Ok(r) if r.lower.iter().chain(&r.upper).any(|x| !x.is_finite()) => {
                        return Err("CROWN returned a non-finite bound".into());
                    }
                    Ok(_) => out.push_str(":pok"),
                    Err(e) => out.push_str(&class(":pbounderr:", &e.to_string())),
                }
            }
            Err(e) => out.push_str(&class(":ploaderr:", &e.to_string())),
        },
        Err(e) => out.push_str(&class(":perr:", &format!("{e:#}"))),
    }
    Ok(out)
}

// ------------------------------------------------------------------ seeds

/// The seed corpus of a target: files of `../shared` and of the repository (small
/// ones, so that a case stays fast) and a few written here.
pub fn seeds(t: Target) -> Vec<Vec<u8>> {
    let root = crate_dir().join("../..");
    let shared = root.join("../shared");
    let (ext, max) = match t {
        Target::Onnx => ("onnx", 64 << 10),
        Target::Vnnlib => ("vnnlib", 16 << 10),
        Target::Json => ("json", 16 << 10),
    };
    let mut files = Vec::new();
    for dir in [root.join("models"), shared.join("benchmarks"), shared.join("reference")] {
        collect(&dir, ext, max, &mut files);
    }
    files.sort();
    // At most 40 files per folder: 186 ACAS Xu properties are much alike.
    let mut per_dir: std::collections::HashMap<PathBuf, usize> = Default::default();
    let mut out: Vec<Vec<u8>> = Vec::new();
    for f in files {
        let k = per_dir.entry(f.parent().map(Path::to_path_buf).unwrap_or_default()).or_default();
        *k += 1;
        if *k <= 40
            && let Ok(b) = std::fs::read(&f)
        {
            out.push(b);
        }
    }
    let extra: &[&str] = match t {
        Target::Onnx => &[],
        Target::Vnnlib => &["(declare-const X_0 Real)(declare-const Y_0 Real)(declare-const Y_1 Real)\
             (assert (or (and (<= X_0 1) (>= X_0 0)) (and (<= X_0 3) (>= X_0 2))))\
             (assert (and (or (<= Y_0 Y_1) (>= (+ Y_0 (* 2 Y_1)) (- 3))) (<= Y_1 1e3)))"],
        Target::Json => &[
            "[0.5, -0.5]",
            "[[1.0, -1.0], [0, 2e-3]]",
            r#"[{"tensor": "input", "norm": "inf", "eps": 0.1, "center": [1, -1]}]"#,
            r#"[{"tensor": "input", "lower": [0, 0], "upper": [1, 1]}, {"tensor": "W2", "norm": "2", "eps": 0.5}]"#,
        ],
    };
    out.extend(extra.iter().map(|s| s.as_bytes().to_vec()));
    if t == Target::Onnx {
        out.push(TOY.to_vec());
    }
    out
}

fn collect(dir: &Path, ext: &str, max: u64, out: &mut Vec<PathBuf>) {
    let Ok(rd) = std::fs::read_dir(dir) else { return };
    for e in rd.flatten() {
        let p = e.path();
        if p.is_dir() {
            collect(&p, ext, max, out);
        } else if p.extension().is_some_and(|e| e == ext) && e.metadata().is_ok_and(|m| m.len() <= max) {
            out.push(p);
        }
    }
}

// ------------------------------------------------------------------ mutations

const INTERESTING: [i64; 16] = [
    0,
    1,
    -1,
    2,
    127,
    128,
    255,
    -128,
    65535,
    i32::MAX as i64,
    i32::MIN as i64,
    1 << 32,
    1 << 40,
    4611686018427387909,
    i64::MAX,
    i64::MIN,
];

const FLOATS: [f32; 10] =
    [0.0, -0.0, 1.0, -1.0, 1e38, -1e38, f32::MAX, f32::INFINITY, f32::NEG_INFINITY, f32::NAN];

const TEXT_TOKENS: [&str; 34] = [
    "(",
    ")",
    "((",
    "))",
    "and",
    "or",
    "not",
    "assert",
    "declare-const",
    "<=",
    ">=",
    "=",
    "+",
    "-",
    "*",
    "X_0",
    "Y_0",
    "X_99999999999",
    "1e308",
    "-1e308",
    "nan",
    "inf",
    "0",
    "-0",
    "1e-320",
    "[",
    "]",
    "{",
    "}",
    ",",
    "\"tensor\"",
    "\"eps\"",
    "\"norm\"",
    "\"center\"",
];

const JSON_TOKENS: [&str; 8] =
    ["\"lower\"", "\"upper\"", "\"value\"", "\"input\"", "\"W2\"", "1e39", "[[[[[[[[", "null"];

fn varint(mut v: u64, out: &mut Vec<u8>) {
    loop {
        let b = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(b);
            return;
        }
        out.push(b | 0x80);
    }
}

/// Byte-level mutations (one to four stacked).
pub fn mutate_bytes(rng: &mut Rng, data: &mut Vec<u8>, corpus: &[Vec<u8>], t: Target) {
    let rounds = 1 + rng.below(4);
    for _ in 0..rounds {
        let n = data.len();
        match rng.below(11) {
            0 if n > 0 => {
                let i = rng.below(n);
                data[i] ^= 1 << rng.below(8);
            }
            1 if n > 0 => {
                let i = rng.below(n);
                data[i] = rng.next_u64() as u8;
            }
            2 if n > 0 => {
                let i = rng.below(n);
                data[i] = [0u8, 0xff, 0x7f, 0x80, 0x01][rng.below(5)];
            }
            3 => {
                let i = rng.below(n + 1);
                let k = 1 + rng.below(16);
                let bytes: Vec<u8> = (0..k).map(|_| rng.next_u64() as u8).collect();
                data.splice(i..i, bytes);
            }
            4 if n > 0 => {
                let i = rng.below(n);
                let k = 1 + rng.below((n - i).min(64));
                data.drain(i..i + k);
            }
            5 if n > 0 => {
                let i = rng.below(n);
                let k = 1 + rng.below((n - i).min(256));
                let chunk = data[i..i + k].to_vec();
                let j = rng.below(n + 1);
                data.splice(j..j, chunk);
            }
            6 if !corpus.is_empty() => {
                let other = &corpus[rng.below(corpus.len())];
                if !other.is_empty() {
                    let i = rng.below(other.len());
                    let k = 1 + rng.below((other.len() - i).min(512));
                    let j = rng.below(n + 1);
                    let end = (j + rng.below(64)).min(n);
                    data.splice(j..end, other[i..i + k].iter().copied());
                }
            }
            7 => {
                let v = INTERESTING[rng.below(INTERESTING.len())];
                let w = [1usize, 2, 4, 8][rng.below(4)];
                if n >= w {
                    let i = rng.below(n - w + 1);
                    data[i..i + w].copy_from_slice(&v.to_le_bytes()[..w]);
                }
            }
            8 => {
                let mut v = Vec::new();
                varint(INTERESTING[rng.below(INTERESTING.len())] as u64, &mut v);
                let i = rng.below(n + 1);
                let end = (i + rng.below(3)).min(n);
                data.splice(i..end, v);
            }
            9 => {
                let tok = if t == Target::Json && rng.below(2) == 0 {
                    JSON_TOKENS[rng.below(JSON_TOKENS.len())]
                } else {
                    TEXT_TOKENS[rng.below(TEXT_TOKENS.len())]
                };
                let i = rng.below(n + 1);
                data.splice(i..i, tok.bytes());
            }
            10 if n > 0 => {
                let i = rng.below(n);
                data[i] = data[i].wrapping_add((rng.below(9) as u8).wrapping_sub(4));
            }
            _ => {}
        }
    }
    data.truncate(t.max_len());
}

/// A random element of `v`, if any.
fn pick<'a, T>(rng: &mut Rng, v: &'a mut [T]) -> Option<&'a mut T> {
    if v.is_empty() {
        return None;
    }
    let i = rng.below(v.len());
    v.get_mut(i)
}

/// A field-level mutation of a decoded ONNX model (dimensions, attributes, op types,
/// initializers, edges, opsets); `None` when the bytes do not decode.
pub fn mutate_onnx(rng: &mut Rng, data: &[u8]) -> Option<Vec<u8>> {
    let mut m = proto::ModelProto::decode(data).ok()?;
    let g = m.graph.as_mut()?;
    let big = |rng: &mut Rng| INTERESTING[rng.below(INTERESTING.len())];
    match rng.below(9) {
        0 => {
            let v = pick(rng, &mut g.input)?;
            let dims = &mut v.r#type.as_mut()?.tensor_type.as_mut()?.shape.as_mut()?.dim;
            let d = pick(rng, dims)?;
            d.value = Some(proto::DimValue::DimValue(if rng.below(2) == 0 {
                big(rng)
            } else {
                rng.below(70) as i64
            }));
        }
        1 | 2 => {
            let node = pick(rng, &mut g.node)?;
            if node.attribute.is_empty() || rng.below(4) == 0 {
                let names =
                    ["alpha", "beta", "pads", "strides", "axis", "perm", "kernel_shape", "bteta", "group"];
                node.attribute.push(proto::AttributeProto {
                    name: names[rng.below(names.len())].into(),
                    i: big(rng),
                    r#type: 2,
                    ..Default::default()
                });
            }
            let k = rng.below(node.attribute.len());
            let a = &mut node.attribute[k];
            match rng.below(4) {
                0 => a.f = FLOATS[rng.below(FLOATS.len())],
                1 => a.i = big(rng),
                2 if !a.ints.is_empty() => {
                    let j = rng.below(a.ints.len());
                    a.ints[j] = if rng.below(2) == 0 { big(rng) } else { rng.below(10) as i64 - 3 };
                }
                _ => {
                    let j = rng.below(a.name.len().max(1));
                    if j < a.name.len() && a.name.is_char_boundary(j) {
                        a.name.insert(j, 'x');
                    }
                }
            }
        }
        3 => {
            let ops: Vec<&str> = lirpa::registered_ops().iter().map(|r| r.op_type).collect();
            let node = pick(rng, &mut g.node)?;
            node.op_type = ops[rng.below(ops.len())].to_string();
        }
        4 => {
            let t = pick(rng, &mut g.initializer)?;
            if let Some(d) = pick(rng, &mut t.dims) {
                *d = if rng.below(2) == 0 { big(rng) } else { rng.below(5) as i64 };
            } else {
                t.dims.push(big(rng));
            }
        }
        5 => {
            let t = pick(rng, &mut g.initializer)?;
            if !t.float_data.is_empty() {
                let j = rng.below(t.float_data.len());
                t.float_data[j] = FLOATS[rng.below(FLOATS.len())];
            } else if t.raw_data.len() >= 4 {
                let j = rng.below(t.raw_data.len() / 4) * 4;
                t.raw_data[j..j + 4].copy_from_slice(&FLOATS[rng.below(FLOATS.len())].to_le_bytes());
            }
        }
        6 => {
            // Rewire an input edge to another value (or drop it).
            let values: Vec<String> = g
                .input
                .iter()
                .map(|v| v.name.clone())
                .chain(g.initializer.iter().map(|t| t.name.clone()))
                .chain(g.node.iter().flat_map(|n| n.output.clone()))
                .collect();
            let node = pick(rng, &mut g.node)?;
            let j = rng.below(node.input.len() + 1);
            let v = if values.is_empty() || rng.below(5) == 0 {
                String::new()
            } else {
                values[rng.below(values.len())].clone()
            };
            if j < node.input.len() {
                node.input[j] = v;
            } else {
                node.input.push(v);
            }
        }
        7 => {
            // Duplicate or remove a node.
            let j = rng.below(g.node.len().max(1));
            if rng.below(2) == 0 {
                let n = g.node.get(j)?.clone();
                g.node.insert(rng.below(g.node.len() + 1), n);
            } else if j < g.node.len() {
                g.node.remove(j);
            }
        }
        _ => {
            let o = pick(rng, &mut m.opset_import)?;
            o.version = [1, 6, 7, 9, 11, 13, 17, 18, 21, 1000][rng.below(10)];
        }
    }
    Some(m.encode_to_vec())
}

// ------------------------------------------------------------------ the loop

/// A case that broke a target: the input and what happened.
#[derive(Debug)]
pub struct Crash {
    pub input: Vec<u8>,
    pub what: String,
}

/// What a fuzzing run did.
#[derive(Debug, Default)]
pub struct Stats {
    pub execs: u64,
    /// Distinct outcome classes seen (the coverage proxy).
    pub outcomes: usize,
    pub corpus: usize,
    pub crashes: Vec<Crash>,
}

/// Run one case in-process, a panic turned into an `Err` with its message.
pub fn run_caught(t: Target, data: &[u8]) -> Result<String, String> {
    match std::panic::catch_unwind(|| run(t, data)) {
        Ok(r) => r,
        Err(p) => Err(format!(
            "panic: {}",
            p.downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default()
        )),
    }
}

/// Fuzz `t` in this process for `duration`: mutate, run under `catch_unwind`, keep
/// inputs with a new outcome. Before each case the input is written to `current` (when
/// given), so that a supervisor can save it if the process dies; `progress` gets the
/// statistics (and the number of distinct outcomes) about once a second.
pub fn fuzz(
    t: Target,
    seed: u64,
    duration: Duration,
    current: Option<&Path>,
    mut progress: impl FnMut(&Stats, usize),
) -> Stats {
    let mut rng = Rng::new(seed);
    // Saved crashes are replayed by the tests, not fuzzed again (a hang would only
    // hang the next worker).
    let mut corpus = seeds(t);
    if corpus.is_empty() {
        corpus.push(Vec::new());
    }
    let mut seen: HashSet<String> = HashSet::new();
    let mut stats = Stats::default();
    let start = Instant::now();
    // Every seed once, then mutations.
    let mut queue: Vec<Vec<u8>> = corpus.clone();
    let mut last = Instant::now();
    while start.elapsed() < duration {
        if last.elapsed() > Duration::from_secs(1) {
            progress(&stats, seen.len());
            last = Instant::now();
        }
        let input = match queue.pop() {
            Some(s) => s,
            None => {
                let mut d = corpus[rng.below(corpus.len())].clone();
                if t == Target::Onnx && rng.below(2) == 0 {
                    if let Some(m) = mutate_onnx(&mut rng, &d) {
                        d = m;
                    }
                } else {
                    mutate_bytes(&mut rng, &mut d, &corpus, t);
                }
                d
            }
        };
        if let Some(p) = current {
            let _ = std::fs::write(p, &input);
        }
        stats.execs += 1;
        match run_caught(t, &input) {
            Ok(outcome) => {
                if seen.insert(outcome) && corpus.len() < 20_000 {
                    corpus.push(input);
                }
            }
            Err(what) => {
                if !stats.crashes.iter().any(|c| c.what == what) {
                    stats.crashes.push(Crash { input, what });
                }
            }
        }
    }
    stats.outcomes = seen.len();
    stats.corpus = corpus.len();
    stats
}

/// Save a crashing input under `regressions/<target>/` (named by a hash of its bytes);
/// returns the path.
pub fn save_regression(t: Target, input: &[u8]) -> std::io::Result<PathBuf> {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    input.hash(&mut h);
    let dir = regression_dir(t);
    std::fs::create_dir_all(&dir)?;
    let p = dir.join(format!("crash-{:016x}", h.finish()));
    std::fs::write(&p, input)?;
    Ok(p)
}

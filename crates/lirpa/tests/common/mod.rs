//! Shared helpers of the data-driven tests: reading reference cases and checking our
//! bounds against them.
#![allow(dead_code)]

use lirpa::{
    BoundOptions, BoundRequest, Error, Graph, InputValue, Method, Norm, OnnxError, Perturbation, Scalar,
};
use serde_json::Value;
use std::path::{Path, PathBuf};

/// `../shared` beside the repository root, or `$LIRPA_SHARED`.
pub fn shared_dir() -> PathBuf {
    if let Ok(p) = std::env::var("LIRPA_SHARED") {
        return PathBuf::from(p);
    }
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared")
}

pub fn reference_dir() -> PathBuf {
    shared_dir().join("reference")
}

/// One recorded version's bounds: `(version, lower, upper)`.
pub type Recorded = (String, Vec<f64>, Vec<f64>);

pub struct Case {
    pub name: String,
    pub dir: PathBuf,
    pub json: Value,
}

fn floats(v: &Value) -> Vec<f64> {
    v.as_array().expect("array").iter().map(|x| x.as_f64().expect("number")).collect()
}

impl Case {
    pub fn load(dir: &Path) -> Case {
        let text = std::fs::read_to_string(dir.join("case.json")).expect("case.json");
        Case {
            name: dir.file_name().unwrap().to_string_lossy().into_owned(),
            dir: dir.to_path_buf(),
            json: serde_json::from_str(&text).expect("valid JSON"),
        }
    }

    /// The model, or why it is not supported yet (unregistered or unimplemented op).
    pub fn graph<T: Scalar + lirpa::core::registry::BuilderFor>(&self) -> Result<Graph<T>, String> {
        let path = self.dir.join(self.json["model"].as_str().unwrap());
        match lirpa::load_onnx::<T>(&path) {
            Ok(g) => Ok(g),
            Err(e) => match e.graph_error() {
                Some(Error::Unsupported { op_type, .. }) => {
                    Err(format!("operator {op_type} not supported yet"))
                }
                Some(Error::Unimplemented { .. }) => Err(e.to_string()),
                _ => panic!("{}: import failed: {e}", self.name),
            },
        }
    }

    pub fn perturbation<T: Scalar>(&self) -> Perturbation<T> {
        let cast = |v: &Value| floats(v).into_iter().map(T::from_f64).collect::<Vec<T>>();
        match self.json["norm"].as_str().unwrap() {
            "box" => Perturbation::new_box(cast(&self.json["input_lower"]), cast(&self.json["input_upper"]))
                .unwrap(),
            n => {
                let norm: Norm = n.parse().unwrap();
                let eps = T::from_f64(self.json["eps"].as_f64().unwrap());
                Perturbation::new_ball(norm, cast(&self.json["center"]), eps).unwrap()
            }
        }
    }

    pub fn center(&self) -> Vec<f64> {
        match self.json["norm"].as_str().unwrap() {
            "box" => floats(&self.json["input_lower"])
                .iter()
                .zip(floats(&self.json["input_upper"]))
                .map(|(l, u)| (l + u) / 2.0)
                .collect(),
            _ => floats(&self.json["center"]),
        }
    }

    pub fn spec_c(&self) -> Vec<Vec<f64>> {
        self.json["spec_c"].as_array().unwrap().iter().map(floats).collect()
    }

    /// The recorded bounds of `method` (per version), or `None` where auto_LiRPA failed
    /// or did not run it.
    pub fn recorded(&self, key: &str, method: &str) -> Option<Vec<Recorded>> {
        let m = self.json.get(key)?.get(method)?;
        let by = m.get("by_version")?.as_object()?;
        let v: Vec<_> = by
            .iter()
            .filter_map(|(ver, b)| Some((ver.clone(), floats(b.get("lower")?), floats(b.get("upper")?))))
            .collect();
        (!v.is_empty()).then_some(v)
    }

    pub fn seconds(&self, key: &str, method: &str) -> Option<f64> {
        self.json.get(key)?.get(method)?.get("seconds")?.as_f64()
    }

    pub fn sampled(&self) -> (Vec<f64>, Vec<f64>) {
        (floats(&self.json["sampled"]["min"]), floats(&self.json["sampled"]["max"]))
    }
}

/// Recorded bounds we deliberately do not reproduce (parity is not checked there;
/// soundness still is), each with its reason.
pub const KNOWN_DIVERGENCES: &[(&str, &str, &str)] = &[(
    "mlp_leakyrelu",
    "forward",
    "auto_LiRPA 0.7.1's forward-mode ReLU relaxation (relu.py `_forward_relaxation`: \
     `lw = mask_both * lower_k + mask_pos`, `uw = mask_pos + mask_both * upper_k`) gives \
     dead neurons (u <= 0) slope 0 on both sides, which for LeakyRelu(a) bounds a*x \
     (negative) by 0 from below: unsound. We keep slope a there.",
)];

fn known_divergence(case: &str, method: &str) -> Option<&'static str> {
    KNOWN_DIVERGENCES.iter().find(|(c, m, _)| case.starts_with(c) && *m == method).map(|(_, _, r)| *r)
}

pub fn parity(ours: f64, reference: f64) -> bool {
    (ours - reference).abs() <= 1e-4 * reference.abs().max(1.0)
}

/// What checking one case found.
#[derive(Default)]
pub struct CaseCheck {
    /// Failed checks (empty when all pass).
    pub fails: Vec<String>,
    /// Per method and bound kind: which recorded version we match, or that we are
    /// tighter than every version that we do not match.
    pub notes: Vec<String>,
}

/// Sampled points of the perturbation set checked against every bound (besides the
/// recorded `sampled` min/max, which only cover the raw outputs).
const OWN_SAMPLES: usize = 512;

/// Run every method on a case and return the failed checks (empty when all pass).
pub fn check_case<T: Scalar>(case: &Case, graph: &Graph<T>, methods: &[(&str, Method)]) -> Vec<String> {
    check_case_report(case, graph, methods).fails
}

/// Run every method on a case: forward output, soundness against the recorded samples
/// and against our own samples (raw outputs and `C·y`), and parity with a recorded
/// auto_LiRPA version. A bound that matches no version is accepted only when it is at
/// least as tight as one version element by element and every sampled output lies
/// inside it; the notes say which cases are tighter rather than equal.
pub fn check_case_report<T: Scalar>(case: &Case, graph: &Graph<T>, methods: &[(&str, Method)]) -> CaseCheck {
    let mut fails = Vec::new();
    let mut notes = Vec::new();
    let ptb = case.perturbation::<T>();
    // Forward evaluation at the centre matches the recorded output.
    let center: Vec<T> = case.center().into_iter().map(T::from_f64).collect();
    let out = graph.forward(&[&center], graph.output().unwrap()).unwrap();
    let expected = floats(&case.json["output"]);
    for (i, (o, e)) in out.iter().zip(&expected).enumerate() {
        if (o.as_f64() - e).abs() > 1e-4 * e.abs().max(1.0) {
            fails.push(format!("{}: forward output {i}: ours {o}, recorded {e}", case.name));
        }
    }
    let (smin, smax) = case.sampled();
    let c_rows = case.spec_c();
    let c = faer::Mat::<T>::from_fn(c_rows.len(), c_rows[0].len(), |i, j| T::from_f64(c_rows[i][j]));
    // Our own samples: raw outputs and C·y, evaluated by our forward pass.
    let own: Vec<Vec<f64>> = lirpa::sample::sample_points(&ptb, OWN_SAMPLES, 11)
        .iter()
        .map(|x| graph.forward(&[x], graph.output().unwrap()).unwrap().iter().map(|v| v.as_f64()).collect())
        .collect();
    let own_spec: Vec<Vec<f64>> = own
        .iter()
        .map(|y| c_rows.iter().map(|row| row.iter().zip(y).map(|(a, b)| a * b).sum()).collect())
        .collect();
    let slack = |v: f64| 1e-5 * v.abs().max(1.0);
    for &(name, method) in methods {
        let opts = BoundOptions::with_method(method);
        let inputs = [InputValue::Perturbed(ptb.clone())];
        for (key, spec) in [("bounds", None), ("spec_bounds", Some(c.as_ref()))] {
            let req = BoundRequest { c: spec, ..Default::default() };
            let res = match lirpa::compute_bounds(graph, &inputs, &opts, &req) {
                Ok(r) => r,
                Err(e) => {
                    fails.push(format!("{}: {name} {key}: error {e}", case.name));
                    continue;
                }
            };
            let (lo, hi): (Vec<f64>, Vec<f64>) = (
                res.lower.iter().map(|x| x.as_f64()).collect(),
                res.upper.iter().map(|x| x.as_f64()).collect(),
            );
            let mut sound = true;
            // Soundness against the recorded samples (raw outputs only: `sampled`
            // holds the element-wise range of y).
            if spec.is_none() {
                for i in 0..lo.len() {
                    if lo[i] > smin[i] + slack(smin[i]) || hi[i] < smax[i] - slack(smax[i]) {
                        sound = false;
                        fails.push(format!(
                            "{}: {name}: UNSOUND at output {i}: [{}, {}] vs sampled [{}, {}]",
                            case.name, lo[i], hi[i], smin[i], smax[i]
                        ));
                    }
                }
            }
            // Soundness against our own samples.
            let samples = if spec.is_none() { &own } else { &own_spec };
            'outer: for y in samples {
                for i in 0..lo.len() {
                    if lo[i] > y[i] + slack(y[i]) || hi[i] < y[i] - slack(y[i]) {
                        sound = false;
                        fails.push(format!(
                            "{}: {name} {key}: UNSOUND at element {i}: [{}, {}] misses sampled {}",
                            case.name, lo[i], hi[i], y[i]
                        ));
                        break 'outer;
                    }
                }
            }
            if let Some(reason) = known_divergence(&case.name, name) {
                notes.push(format!("{}: {name} {key}: parity not checked: {reason}", case.name));
            } else if let Some(versions) = case.recorded(key, name) {
                let matched: Vec<&str> = versions
                    .iter()
                    .filter(|(_, rl, ru)| {
                        lo.iter().zip(rl).all(|(a, b)| parity(*a, *b))
                            && hi.iter().zip(ru).all(|(a, b)| parity(*a, *b))
                    })
                    .map(|(v, _, _)| v.as_str())
                    .collect();
                let tighter_than: Vec<&str> = versions
                    .iter()
                    .filter(|(_, rl, ru)| {
                        lo.iter().zip(rl).all(|(a, b)| *a >= *b - 1e-4 * b.abs().max(1.0))
                            && hi.iter().zip(ru).all(|(a, b)| *a <= *b + 1e-4 * b.abs().max(1.0))
                    })
                    .map(|(v, _, _)| v.as_str())
                    .collect();
                if !matched.is_empty() {
                    notes.push(format!("{}: {name} {key}: parity with {}", case.name, matched.join(", ")));
                } else if !tighter_than.is_empty() && sound {
                    // Width ratio to the tightest version we beat (< 1: tighter).
                    let gain = versions
                        .iter()
                        .filter(|(v, _, _)| tighter_than.contains(&v.as_str()))
                        .map(|(_, rl, ru)| {
                            let w_ref: f64 = rl.iter().zip(ru).map(|(a, b)| b - a).sum();
                            let w_ours: f64 = lo.iter().zip(&hi).map(|(a, b)| b - a).sum();
                            w_ours / w_ref
                        })
                        .fold(0.0, f64::max);
                    notes.push(format!(
                        "{}: {name} {key}: TIGHTER than {} (total width ratio {gain:.4}), sound",
                        case.name,
                        tighter_than.join(", ")
                    ));
                } else {
                    let (v, rl, ru) = &versions[0];
                    let worst = lo
                        .iter()
                        .zip(rl)
                        .chain(hi.iter().zip(ru))
                        .map(|(a, b)| (a - b).abs() / b.abs().max(1.0))
                        .fold(0.0, f64::max);
                    fails.push(format!(
                        "{}: {name} {key}: no parity (worst relative difference {worst:.3e} vs {v}){}; ours {:?}..{:?}, ref {:?}..{:?}",
                        case.name,
                        if tighter_than.is_empty() { "" } else { ", tighter but not sound" },
                        &lo[..lo.len().min(3)],
                        &hi[..hi.len().min(3)],
                        &rl[..rl.len().min(3)],
                        &ru[..ru.len().min(3)]
                    ));
                }
            }
        }
    }
    CaseCheck { fails, notes }
}

/// Mean (lower, upper) bounds of one key (`bounds` or `spec_bounds`) of a case: our
/// CROWN, our α-CROWN and auto_LiRPA's recorded α-CROWN, if any.
pub struct AlphaMeans {
    pub key: String,
    pub crown: (f64, f64),
    pub alpha: (f64, f64),
    pub reference: Option<(f64, f64)>,
}

/// The tightest recorded bounds of `method` (the top-level `lower`/`upper`, from the
/// version with the tighter bounds), or `None`.
pub fn recorded_best(case: &Case, key: &str, method: &str) -> Option<(Vec<f64>, Vec<f64>)> {
    let m = case.json.get(key)?.get(method)?;
    Some((floats(m.get("lower")?), floats(m.get("upper")?)))
}

/// α-CROWN on a case, raw outputs and `C·y`: at least as tight as auto_LiRPA's recorded
/// α-CROWN bound minus `1e-3 · max(1, |ref|)` (README tolerance), never looser than our
/// CROWN, and containing every sampled output. Returns the failed checks and, per key,
/// the mean bounds.
pub fn check_alpha<T: Scalar>(case: &Case, graph: &Graph<T>) -> (Vec<String>, Vec<AlphaMeans>) {
    let mut fails = Vec::new();
    let mut means = Vec::new();
    let ptb = case.perturbation::<T>();
    let (smin, smax) = case.sampled();
    let c_rows = case.spec_c();
    let c = faer::Mat::<T>::from_fn(c_rows.len(), c_rows[0].len(), |i, j| T::from_f64(c_rows[i][j]));
    let inputs = [InputValue::Perturbed(ptb)];
    let f64s = |v: &[T]| v.iter().map(|x| x.as_f64()).collect::<Vec<f64>>();
    for (key, spec) in [("bounds", None), ("spec_bounds", Some(c.as_ref()))] {
        let req = BoundRequest { c: spec, ..Default::default() };
        let run = |m: Method| lirpa::compute_bounds(graph, &inputs, &BoundOptions::with_method(m), &req);
        let (crown, alpha) = match (run(Method::Crown), run(Method::AlphaCrown)) {
            (Ok(c), Ok(a)) => (c, a),
            (Err(e), _) | (_, Err(e)) => {
                fails.push(format!("{}: alpha-CROWN {key}: error {e}", case.name));
                continue;
            }
        };
        let (cl, cu, al, au) =
            (f64s(&crown.lower), f64s(&crown.upper), f64s(&alpha.lower), f64s(&alpha.upper));
        for i in 0..al.len() {
            if al[i] < cl[i] || au[i] > cu[i] {
                fails.push(format!(
                    "{}: alpha-CROWN {key} {i}: looser than CROWN: [{}, {}] vs [{}, {}]",
                    case.name, al[i], au[i], cl[i], cu[i]
                ));
            }
            if spec.is_none()
                && (al[i] > smin[i] + 1e-5 * smin[i].abs().max(1.0)
                    || au[i] < smax[i] - 1e-5 * smax[i].abs().max(1.0))
            {
                fails.push(format!(
                    "{}: alpha-CROWN: UNSOUND at output {i}: [{}, {}] vs sampled [{}, {}]",
                    case.name, al[i], au[i], smin[i], smax[i]
                ));
            }
        }
        // Every recorded α-CROWN bound is a target, whether or not each of our
        // relaxations on the path is optimizable (Softmax is not: auto_LiRPA's α-CROWN
        // gains nothing there either).
        if let Some((rl, ru)) = recorded_best(case, key, "alpha-CROWN") {
            for i in 0..al.len() {
                let tl = 1e-3 * rl[i].abs().max(1.0);
                let tu = 1e-3 * ru[i].abs().max(1.0);
                if al[i] < rl[i] - tl || au[i] > ru[i] + tu {
                    fails.push(format!(
                        "{}: alpha-CROWN {key} {i}: looser than auto_LiRPA: [{}, {}] vs [{}, {}]",
                        case.name, al[i], au[i], rl[i], ru[i]
                    ));
                }
            }
        }
        let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
        means.push(AlphaMeans {
            key: key.to_string(),
            crown: (mean(&cl), mean(&cu)),
            alpha: (mean(&al), mean(&au)),
            reference: recorded_best(case, key, "alpha-CROWN").map(|(l, u)| (mean(&l), mean(&u))),
        });
    }
    (fails, means)
}

/// Keep the import error type in scope for callers that match on it.
pub type ImportError = OnnxError;

/// The first instance of each network in a VNN-COMP benchmark's instance list (one
/// property per network), as `(onnx, vnnlib)` paths.
pub fn first_instance_per_network(dir: &Path, csv: &str) -> Vec<(PathBuf, PathBuf)> {
    let list = std::fs::read_to_string(dir.join(csv)).expect("instances csv");
    let mut seen = std::collections::BTreeSet::new();
    list.lines()
        .filter(|l| !l.trim().is_empty())
        .filter_map(|line| {
            let cols: Vec<&str> = line.split(',').collect();
            seen.insert(cols[0].to_string()).then(|| (dir.join(cols[0]), dir.join(cols[1])))
        })
        .collect()
}

/// The input box of a VNN-LIB property, in `f32`.
pub fn vnnlib_box_f32(vnnlib: &Path) -> Perturbation<f32> {
    let prop = lirpa_vnnlib::parse_file(vnnlib).unwrap();
    let (l, u) = prop.input_box();
    Perturbation::new_box(l.iter().map(|&v| v as f32).collect(), u.iter().map(|&v| v as f32).collect())
        .unwrap()
}

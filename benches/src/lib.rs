//! Benchmark cases: reference models with their perturbation, specification matrix
//! and auto_LiRPA's recorded times (`../shared/reference`).

use lirpa::{Graph, Method, Norm, Perturbation};
use serde_json::Value;
use std::path::PathBuf;

/// The cases benchmarked, as `(folder under reference/, case name)`.
pub const CASES: &[(&str, &str)] = &[
    ("synthetic", "mlp_relu__linf_0.05"),
    ("synthetic", "mlp_relu__l2_0.2"),
    ("synthetic", "mlp_relu__l1_0.5"),
    ("synthetic", "mlp_relu_deep__linf_0.02"),
    ("synthetic", "mlp_leakyrelu__linf_0.1"),
    ("vnncomp", "acas_2_1_prop1"),
    ("vnncomp", "acas_1_9_prop7"),
    ("vnncomp", "mnistfc_256x2_prop1_0.05"),
    ("vnncomp", "mnistfc_256x6_prop5_0.03"),
    ("synthetic", "cnn__linf_0.02"),
    ("synthetic", "cnn__l2_0.3"),
    ("synthetic", "cnn_bn_avgpool__linf_0.01"),
    ("synthetic", "cnn_maxpool__linf_0.01"),
    ("synthetic", "resnet_tiny__linf_0.01"),
    ("vnncomp", "oval_wide_img19"),
    ("vnncomp", "resnet_2b_prop0"),
    ("synthetic", "elem_softmax__linf_0.1"),
    ("synthetic", "attention__linf_0.02"),
    ("synthetic", "lstm__linf_0.05"),
    ("synthetic", "mlp_sigmoid__linf_0.1"),
    ("synthetic", "mlp_tanh__linf_0.1"),
    ("vnncomp", "eran_sigmoid_6x200_idx7167"),
];

pub const METHODS: &[(&str, Method)] =
    &[("IBP", Method::Ibp), ("CROWN", Method::Crown), ("CROWN-IBP", Method::CrownIbp)];

/// The criterion group (and `case.json` key) of α-CROWN.
pub const ALPHA: &str = "alpha-CROWN";

/// The reference folders the benchmarked cases come from.
const FOLDERS: &[&str] = &["synthetic", "vnncomp"];

/// The case α-CROWN is benchmarked on besides those with a recorded time: issue 13's
/// target for it is relative to our own CROWN time.
const ALPHA_EXTRA: (&str, &str) = ("vnncomp", "eran_sigmoid_6x200_idx7167");

/// The cases α-CROWN is benchmarked on, as `(folder, case)`: every reference case
/// (input perturbations) whose `case.json` records auto_LiRPA's α-CROWN time, and
/// ERAN sigmoid 6x200 (whose target is relative to our own CROWN); sorted by name.
pub fn alpha_cases() -> Vec<(String, String)> {
    let mut cases = vec![(ALPHA_EXTRA.0.to_string(), ALPHA_EXTRA.1.to_string())];
    for folder in FOLDERS {
        let Ok(dir) = std::fs::read_dir(reference_dir().join(folder)) else { continue };
        for entry in dir.flatten() {
            let Ok(text) = std::fs::read_to_string(entry.path().join("case.json")) else { continue };
            let Ok(json) = serde_json::from_str::<Value>(&text) else { continue };
            if json["bounds"]["alpha-CROWN"]["seconds"].is_f64() {
                let name = entry.file_name().to_string_lossy().into_owned();
                if name != ALPHA_EXTRA.1 {
                    cases.push((folder.to_string(), name));
                }
            }
        }
    }
    cases.sort_by(|a, b| a.1.cmp(&b.1));
    cases
}

/// `$LIRPA_SHARED/reference`, or `../shared/reference` beside the repository.
pub fn reference_dir() -> PathBuf {
    match std::env::var("LIRPA_SHARED") {
        Ok(p) => PathBuf::from(p).join("reference"),
        Err(_) => PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/reference")),
    }
}

pub struct BenchCase {
    pub name: String,
    pub graph: Graph<f32>,
    pub ptb: Perturbation<f32>,
    pub spec_c: faer::Mat<f32>,
    json: Value,
}

fn floats(v: &Value) -> Option<Vec<f32>> {
    v.as_array()?.iter().map(|x| x.as_f64().map(|f| f as f32)).collect()
}

impl BenchCase {
    /// Load a case; `Err` says why it cannot be benchmarked.
    pub fn load(folder: &str, name: &str) -> Result<BenchCase, String> {
        let dir = reference_dir().join(folder).join(name);
        let text =
            std::fs::read_to_string(dir.join("case.json")).map_err(|e| format!("{}: {e}", dir.display()))?;
        let json: Value = serde_json::from_str(&text).map_err(|e| format!("{name}: {e}"))?;
        let graph = lirpa::load_onnx::<f32>(dir.join("model.onnx")).map_err(|e| e.to_string())?;
        let bad = || format!("{name}: malformed case.json");
        let ptb = match json["norm"].as_str().ok_or_else(bad)? {
            "box" => Perturbation::new_box(
                floats(&json["input_lower"]).ok_or_else(bad)?,
                floats(&json["input_upper"]).ok_or_else(bad)?,
            ),
            n => Perturbation::new_ball(
                n.parse::<Norm>().map_err(|e| e.to_string())?,
                floats(&json["center"]).ok_or_else(bad)?,
                json["eps"].as_f64().ok_or_else(bad)? as f32,
            ),
        }
        .map_err(|e| e.to_string())?;
        let rows: Vec<Vec<f32>> = json["spec_c"]
            .as_array()
            .ok_or_else(bad)?
            .iter()
            .map(floats)
            .collect::<Option<_>>()
            .ok_or_else(bad)?;
        let spec_c = faer::Mat::from_fn(rows.len(), rows[0].len(), |i, j| rows[i][j]);
        Ok(BenchCase { name: name.to_string(), graph, ptb, spec_c, json })
    }

    /// auto_LiRPA's recorded time in seconds for `key` (`bounds` or `spec_bounds`).
    pub fn auto_lirpa_seconds(&self, key: &str, method: &str) -> Option<f64> {
        self.json.get(key)?.get(method)?.get("seconds")?.as_f64()
    }
}

//! `--perturbation P.json`: the set of every perturbed tensor by ONNX name, a JSON array
//! with one entry per tensor:
//!
//! ```json
//! [
//!   {"tensor": "input", "value": [0.1, 0.2]},
//!   {"tensor": "fc2.weight", "norm": "inf", "eps": 0.01},
//!   {"tensor": "fc2.bias", "lower": [-1, 0], "upper": [1, 0.5]},
//!   {"tensor": "fc3.weight", "norm": "2", "eps": 0.1, "center": [...]}
//! ]
//! ```
//!
//! A ball (`norm` `"inf"`, `"2"` or `"1"`, `eps`, `center` row-major; `center` optional
//! for an initializer, defaulting to its stored value), a box (`lower`, `upper`), or an
//! exact value (`value`, for a graph input that is not perturbed). Every graph input must
//! be listed; initializers listed become perturbed inputs ([`lirpa::load_perturbed`]).
//! Errors are one line naming the file and the entry.

use anyhow::{Result, anyhow, bail};
use lirpa::{Norm, PerturbedModel, Scalar, TensorPerturbation, TensorSet};
use serde_json::Value;
use std::path::Path;

/// Load `model` with the tensor sets of the file `path`.
pub fn load<T: Scalar + lirpa::core::registry::BuilderFor>(
    model: &Path,
    path: &Path,
) -> Result<PerturbedModel<T>> {
    let shown = path.display();
    let entries = read(path)?;
    lirpa::load_perturbed::<T>(model, &entries).map_err(|e| anyhow!("{shown}: {e}"))
}

/// Parse the file into one [`TensorPerturbation`] per entry.
pub fn read<T: Scalar>(path: &Path) -> Result<Vec<TensorPerturbation<T>>> {
    parse(&crate::inputs::read_text(path)?, &path.display().to_string())
}

/// Parse the text of a perturbation file; `shown` (the file) names it in errors.
pub fn parse<T: Scalar>(text: &str, shown: &str) -> Result<Vec<TensorPerturbation<T>>> {
    let v: Value = serde_json::from_str(text).map_err(|e| anyhow!("{shown}: not valid JSON: {e}"))?;
    let arr = v.as_array().ok_or_else(|| anyhow!("{shown}: expected a JSON array of tensor entries"))?;
    if arr.is_empty() {
        bail!("{shown}: no tensor entries");
    }
    arr.iter()
        .enumerate()
        .map(|(i, e)| {
            let name = e.get("tensor").and_then(Value::as_str).map(str::to_string);
            entry(e).map_err(|err| match &name {
                Some(n) => anyhow!("{shown}: entry {i} ('{n}'): {err}"),
                None => anyhow!("{shown}: entry {i}: {err}"),
            })
        })
        .collect()
}

fn entry<T: Scalar>(e: &Value) -> Result<TensorPerturbation<T>> {
    let obj = e.as_object().ok_or_else(|| anyhow!("expected an object"))?;
    let tensor = obj
        .get("tensor")
        .ok_or_else(|| anyhow!("missing \"tensor\""))?
        .as_str()
        .ok_or_else(|| anyhow!("\"tensor\" is not a string"))?;
    const KEYS: [&str; 7] = ["tensor", "norm", "eps", "center", "lower", "upper", "value"];
    if let Some(k) = obj.keys().find(|k| !KEYS.contains(&k.as_str())) {
        bail!("unknown key \"{k}\" (expected tensor with norm/eps/center, lower/upper, or value)");
    }
    let has = |k: &str| obj.contains_key(k);
    if has("center") && !(has("norm") || has("eps")) {
        bail!("\"center\" goes with \"norm\" and \"eps\"");
    }
    let set = match (has("norm") || has("eps"), has("lower") || has("upper"), has("value")) {
        (true, false, false) => {
            let norm = match obj.get("norm") {
                Some(Value::String(s)) => s.parse::<Norm>()?,
                Some(Value::Number(n)) => n.to_string().parse::<Norm>()?,
                Some(_) => bail!("\"norm\" must be \"inf\", \"2\" or \"1\""),
                None => bail!("missing \"norm\""),
            };
            let eps = match obj.get("eps").map(Value::as_f64) {
                Some(Some(x)) if x.is_finite() && x >= 0.0 => x,
                Some(_) => bail!("\"eps\" must be a finite number >= 0"),
                None => bail!("missing \"eps\""),
            };
            let center = obj.get("center").map(|c| numbers(c, "center")).transpose()?;
            TensorSet::Ball { norm, eps: T::from_f64(eps), center }
        }
        (false, true, false) => {
            let get =
                |k: &str| obj.get(k).ok_or_else(|| anyhow!("missing \"{k}\"")).and_then(|v| numbers(v, k));
            let (lower, upper) = (get("lower")?, get("upper")?);
            TensorSet::Box { lower, upper }
        }
        (false, false, true) => TensorSet::Exact(numbers(&obj["value"], "value")?),
        _ => bail!("give exactly one of norm and eps (and center), lower and upper, or value"),
    };
    Ok(TensorPerturbation::new(tensor, set))
}

/// A JSON array of finite numbers.
fn numbers<T: Scalar>(v: &Value, what: &str) -> Result<Vec<T>> {
    let arr = v.as_array().ok_or_else(|| anyhow!("\"{what}\" is not an array of numbers"))?;
    arr.iter()
        .enumerate()
        .map(|(i, x)| match x.as_f64() {
            Some(f) if f.is_finite() => Ok(T::from_f64(f)),
            _ => bail!("\"{what}\" element {i} is not a finite number ({x})"),
        })
        .collect()
}

//! JSON inputs of the command line: `--center`, `--lower`, `--upper` (arrays of finite
//! numbers) and `--spec-c` (rows of finite numbers), read within the memory budget.

use anyhow::{Context, Result, anyhow, bail};
use std::path::Path;

/// Read a text input (JSON) within the memory budget: `/dev/zero` is an error.
pub fn read_text(path: &Path) -> Result<String> {
    let limit = lirpa::core::budget::max_memory() / 4;
    let bytes = lirpa::core::budget::read_file_limited(path, Some(limit))
        .with_context(|| format!("{}: cannot read", path.display()))?;
    String::from_utf8(bytes).map_err(|e| anyhow!("{}: not UTF-8 text: {e}", path.display()))
}

/// Parse a JSON array of finite numbers; `shown` (the file) names it in errors.
pub fn parse_vector(text: &str, shown: &str) -> Result<Vec<f64>> {
    let v: serde_json::Value =
        serde_json::from_str(text).with_context(|| format!("{}: not valid JSON", shown))?;
    let arr = v.as_array().ok_or_else(|| anyhow!("{}: expected a JSON array of numbers", shown))?;
    arr.iter()
        .enumerate()
        .map(|(i, x)| match x.as_f64() {
            Some(f) if f.is_finite() => Ok(f),
            _ => bail!("{}: element {i} is not a finite number ({x})", shown),
        })
        .collect()
}

/// Parse a JSON array of rows of finite numbers (at least one row).
pub fn parse_matrix(text: &str, shown: &str) -> Result<Vec<Vec<f64>>> {
    let v: serde_json::Value =
        serde_json::from_str(text).with_context(|| format!("{}: not valid JSON", shown))?;
    let rows = v.as_array().ok_or_else(|| anyhow!("{}: expected a JSON array of rows", shown))?;
    let mut out = Vec::with_capacity(rows.len());
    for (r, row) in rows.iter().enumerate() {
        let row = row.as_array().ok_or_else(|| anyhow!("{}: row {r} is not an array", shown))?;
        let vals = row
            .iter()
            .enumerate()
            .map(|(j, x)| match x.as_f64() {
                Some(f) if f.is_finite() => Ok(f),
                _ => bail!("{}: row {r}, column {j} is not a finite number ({x})", shown),
            })
            .collect::<Result<Vec<_>>>()?;
        out.push(vals);
    }
    if out.is_empty() {
        bail!("{}: the specification matrix has no rows", shown);
    }
    Ok(out)
}

/// Most threads `--threads` accepts (a larger value would only spawn idle threads).
pub const MAX_THREADS: usize = 1024;

/// Parse `--threads`: 0 (all cores) up to [`MAX_THREADS`].
pub fn threads_arg(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(n) if n <= MAX_THREADS => Ok(n),
        _ => Err(format!("expected a number of threads from 0 (all cores) to {MAX_THREADS}, got '{s}'")),
    }
}

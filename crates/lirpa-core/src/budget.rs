//! The memory budget and checked size arithmetic.
//!
//! Every allocation whose size comes from the input (a shape read from a model, a
//! specification's row count, a file's length) is checked here first: a shape's element
//! count is computed with overflow checks ([`checked_numel`]) and compared with the
//! budget ([`max_memory`]); past it, the caller gets an error naming what was too
//! large instead of a `capacity overflow` panic or an allocation abort.
//!
//! The budget is process-wide (graph building has no options to carry it): by
//! default half of the machine's memory ([`default_max_memory`]), set by
//! [`set_max_memory`] (the CLI's `--max-memory`). The engine's
//! `BoundOptions::max_memory` overrides it for one computation.

use crate::{Error, Result};
use std::sync::atomic::{AtomicU64, Ordering};

static MAX_MEMORY: AtomicU64 = AtomicU64::new(0);

/// Bytes per element assumed for tensors whose element type is not known yet
/// (constants are held as `f64`).
pub const ELEM_BYTES: u64 = 8;

/// Half of the machine's physical memory (`/proc/meminfo`), or 8 GiB where it cannot be
/// read.
pub fn default_max_memory() -> u64 {
    static DEFAULT: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *DEFAULT.get_or_init(|| {
        let total_kib = std::fs::read_to_string("/proc/meminfo").ok().and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse::<u64>().ok()))
        });
        match total_kib {
            Some(k) if k > 0 => k.saturating_mul(1024) / 2,
            _ => 8 << 30,
        }
    })
}

/// The current budget in bytes.
pub fn max_memory() -> u64 {
    match MAX_MEMORY.load(Ordering::Relaxed) {
        0 => default_max_memory(),
        b => b,
    }
}

/// Set the process-wide budget in bytes (0 restores the default).
pub fn set_max_memory(bytes: u64) {
    MAX_MEMORY.store(bytes, Ordering::Relaxed);
}

/// Parse a size such as `512M`, `8G`, `1.5G`, `1000000` (bytes; suffixes K, M, G, T
/// are powers of 1024, an optional trailing `B` or `iB` is accepted).
pub fn parse_size(text: &str) -> Result<u64> {
    let t = text.trim();
    let upper = t.to_ascii_uppercase();
    let s = upper.trim_end_matches("IB").trim_end_matches('B');
    let (num, mult) = match s.chars().last() {
        Some('K') => (&s[..s.len() - 1], 1u64 << 10),
        Some('M') => (&s[..s.len() - 1], 1 << 20),
        Some('G') => (&s[..s.len() - 1], 1 << 30),
        Some('T') => (&s[..s.len() - 1], 1 << 40),
        _ => (s, 1),
    };
    let v: f64 =
        num.trim().parse().map_err(|_| Error::Invalid(format!("invalid size '{text}' (e.g. 512M, 8G)")))?;
    let bytes = v * mult as f64;
    if !(bytes.is_finite() && bytes >= 1.0 && bytes < 2f64.powi(63)) {
        return Err(Error::Invalid(format!(
            "invalid size '{text}': must be at least 1 byte and below 8 EiB"
        )));
    }
    Ok(bytes as u64)
}

/// A byte count for messages (`1.5 GiB`).
pub fn show_bytes(b: u64) -> String {
    let f = b as f64;
    match b {
        _ if b >= 1 << 40 => format!("{:.1} TiB", f / (1u64 << 40) as f64),
        _ if b >= 1 << 30 => format!("{:.1} GiB", f / (1u64 << 30) as f64),
        _ if b >= 1 << 20 => format!("{:.1} MiB", f / (1u64 << 20) as f64),
        _ => format!("{b} bytes"),
    }
}

/// Number of elements of `shape`, with overflow checked and the size (at
/// [`ELEM_BYTES`] per element) within the budget.
pub fn checked_numel(shape: &[usize]) -> Result<usize> {
    let n = shape
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| Error::Shape(format!("the element count of shape {shape:?} overflows")))?;
    check_bytes(n as u128 * ELEM_BYTES as u128, || format!("a tensor of shape {shape:?}"), max_memory())?;
    Ok(n)
}

/// Refuse `bytes` (what `what` needs) when it exceeds `budget`.
pub fn check_bytes(bytes: u128, what: impl FnOnce() -> String, budget: u64) -> Result<()> {
    if bytes > budget as u128 {
        let shown =
            if bytes > u64::MAX as u128 { "more than 16 EiB".to_string() } else { show_bytes(bytes as u64) };
        return Err(Error::Invalid(format!(
            "{} needs {shown}, above the memory budget of {} (--max-memory)",
            what(),
            show_bytes(budget)
        )));
    }
    Ok(())
}

/// `a + b` for sizes read from input, an error naming `what` on overflow.
pub fn add(a: usize, b: usize, what: &str) -> Result<usize> {
    a.checked_add(b).ok_or_else(|| Error::Shape(format!("{what} overflows")))
}

/// `a · b` for sizes read from input, an error naming `what` on overflow.
pub fn mul(a: usize, b: usize, what: &str) -> Result<usize> {
    a.checked_mul(b).ok_or_else(|| Error::Shape(format!("{what} overflows")))
}

/// Read a whole file, refusing one longer than `limit` bytes (or than the memory budget
/// when `None`) without reading past the limit: `/dev/zero` is an error, not a hang.
pub fn read_file_limited(path: &std::path::Path, limit: Option<u64>) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let limit = limit.unwrap_or_else(max_memory);
    let f = std::fs::File::open(path)?;
    let mut buf = Vec::new();
    f.take(limit.saturating_add(1)).read_to_end(&mut buf)?;
    if buf.len() as u64 > limit {
        return Err(std::io::Error::other(format!(
            "the file is longer than {} (the memory budget, --max-memory)",
            show_bytes(limit)
        )));
    }
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_and_overflow_is_an_error() {
        assert_eq!(parse_size("512M").unwrap(), 512 << 20);
        assert_eq!(parse_size("1.5GiB").unwrap(), 3 << 29);
        assert_eq!(parse_size("4096").unwrap(), 4096);
        for bad in ["", "-1G", "inf", "nanG", "0", "1e30T", "G"] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
        assert!(checked_numel(&[4611686018427387909, 4]).unwrap_err().to_string().contains("overflows"));
        assert!(checked_numel(&[1 << 40, 1 << 10]).unwrap_err().to_string().contains("memory budget"));
        assert_eq!(checked_numel(&[2, 3, 4]).unwrap(), 24);
        assert_eq!(checked_numel(&[]).unwrap(), 1);
    }
}

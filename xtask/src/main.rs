//! Project automation, in the cargo-xtask style: `cargo xtask <command>`.
//!
//! - `ci`: exactly what `.ci/run` runs (format check, clippy and rustdoc with warnings
//!   denied, release build, all tests, the README's main command on the bundled model,
//!   the Python package's tests, `vnncomp vnncomp2021_test`).
//! - `soundness [--cases N] [--seed S] [--op NAME]`: the soundness harness
//!   (`lirpa-soundness`) on every registered unary operator (or only NAME) with N
//!   random intervals per number type, then the sampling property tests with many more
//!   cases than `cargo test` uses, plus the ACAS Xu sampling test (skipped with --op).
//! - `reduced-build`: the CLI with only the `linear` and `relu` operator families.
//! - `bench`: the criterion benches and the ratio table against auto_LiRPA's times.
//! - `vnncomp BENCHMARK [--limit N] [--timeout-cap S] [--filter TEXT]`: run a VNN-COMP
//!   benchmark folder's `instances.csv` through `lirpa verify` (one process per
//!   instance, as the competition does) and print the answers against
//!   `expected_results_vnncomp.csv` (with per-network counts when there are at most 20
//!   networks); fails on any wrong answer.
//! - `fuzz [--seconds N] [--target onnx|vnnlib|json|all] [--seed S]`: the in-repo
//!   mutation fuzzer (`crates/lirpa-fuzz`), N seconds per target; `ci` runs it for 5.
//! - `python`: the Python package's tests (`crates/lirpa-py`, pytest) in a virtual
//!   environment it makes under the target directory; `ci` runs them.

use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};
use std::process::Command;

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let root = project_root();
    std::env::set_current_dir(&root)?;
    match args.first().map(String::as_str) {
        Some("ci") => ci(),
        Some("soundness") => soundness(&args[1..]),
        Some("bench") => bench(&args[1..]),
        Some("reduced-build") => reduced_build(),
        Some("vnncomp") => vnncomp(&args[1..]),
        Some("fuzz") => fuzz(&args[1..]),
        Some("python") => python_tests(),
        _ => {
            eprintln!(
                "usage: cargo xtask <ci | soundness [--cases N] [--seed S] [--op NAME] | bench [FILTER] | \
                 reduced-build | vnncomp BENCHMARK [--limit N] [--timeout-cap S] [--filter TEXT] | \
                 fuzz [--seconds N] [--target onnx|vnnlib|json|all] [--seed S] | python>"
            );
            bail!("unknown or missing command")
        }
    }
}

fn project_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("xtask lives in the workspace").to_path_buf()
}

fn run(cmd: &mut Command) -> Result<()> {
    eprintln!("$ {cmd:?}");
    let status = cmd.status().with_context(|| format!("cannot start {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed with {status}");
    }
    Ok(())
}

/// The cargo target directory: `CARGO_TARGET_DIR` when it is set.
fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| project_root().join("target"), PathBuf::from)
}

/// The release `lirpa` binary.
fn release_lirpa() -> PathBuf {
    target_dir().join("release/lirpa")
}

/// The Python package's tests (`crates/lirpa-py/tests`, pytest): in a virtual
/// environment under the target directory (`py-venv`) with maturin, numpy, pytest, ray
/// and tqdm from PyPI, the package built by `maturin develop --release` into it with
/// the same target directory (the Rust crates are not compiled again). Skipped, saying
/// so, only when there is no `python3` (or `$PYTHON`).
fn python_tests() -> Result<()> {
    let python = std::env::var("PYTHON").unwrap_or_else(|_| "python3".into());
    let found = Command::new(&python).arg("--version").output().is_ok_and(|o| o.status.success());
    if !found {
        eprintln!("SKIPPED: the Python package's tests (crates/lirpa-py/tests): no {python} on this machine");
        return Ok(());
    }
    let venv = target_dir().join("py-venv");
    let py = venv.join("bin/python");
    if !py.exists() {
        run(Command::new(&python).args(["-m", "venv"]).arg(&venv))?;
    }
    run(Command::new(&py).args(["-m", "pip", "install", "-q", "--upgrade", "pip"]))?;
    run(Command::new(&py).args([
        "-m",
        "pip",
        "install",
        "-q",
        "maturin>=1.9.4,<2",
        "numpy",
        "pytest",
        "ray",
        "tqdm",
    ]))?;
    let path = std::env::join_paths(
        std::iter::once(venv.join("bin"))
            .chain(std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())),
    )?;
    run(Command::new(&py)
        .args(["-m", "maturin", "develop", "--release", "-q", "-m", "crates/lirpa-py/Cargo.toml"])
        .env("VIRTUAL_ENV", &venv)
        .env("PATH", &path)
        .env("CARGO_TARGET_DIR", target_dir()))?;
    run(Command::new(&py).args(["-m", "pytest", "-q", "-ra", "crates/lirpa-py/tests"]))
}

fn cargo() -> Command {
    Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
}

/// The README's main command: bounds of the bundled toy model.
pub const MAIN_JOB: &[&str] = &[
    "run",
    "--release",
    "-q",
    "-p",
    "lirpa-cli",
    "--",
    "bounds",
    "models/toy.onnx",
    "--method",
    "crown",
    "--lower",
    "models/toy_lower.json",
    "--upper",
    "models/toy_upper.json",
];

fn ci() -> Result<()> {
    let fmt = cargo().args(["fmt", "--version"]).output().map(|o| o.status.success()).unwrap_or(false);
    if fmt {
        run(cargo().args(["fmt", "--all", "--", "--check"]))?;
    } else {
        eprintln!("rustfmt is not installed: format check skipped");
    }
    // House rules: no clippy warning (release profile, as the build below) and no
    // rustdoc warning, on every target of the workspace.
    run(cargo().args(["clippy", "--workspace", "--all-targets", "--release", "--", "-D", "warnings"]))?;
    run(cargo().args(["doc", "--no-deps", "--workspace"]).env("RUSTDOCFLAGS", "-D warnings"))?;
    reduced_build()?;
    // One release build serves the tests, the CLI and the benches' compilation check.
    run(cargo().args(["build", "--release", "--workspace", "--all-targets"]))?;
    run(cargo().args(["test", "--release", "--workspace"]))?;
    run(cargo().args(MAIN_JOB))?;
    python_tests()?;
    // The VNN-COMP smoke test: five small instances through `lirpa verify`.
    vnncomp(&["vnncomp2021_test".to_string()])?;
    // Every fuzz target briefly: no panic, abort or hang on mutated input.
    fuzz(&["--seconds".to_string(), "5".to_string()])?;
    Ok(())
}

/// `fuzz [--seconds N] [--target T] [--seed S]`: the in-repo mutation fuzzer
/// (`crates/lirpa-fuzz`) on each target for N seconds (default 10); fails when an input
/// panics, aborts, hangs or gets a non-finite bound printed (it is saved under
/// `crates/lirpa-fuzz/regressions/`, which its tests replay).
fn fuzz(args: &[String]) -> Result<()> {
    let seconds = flag(args, "--seconds")?.unwrap_or_else(|| "10".into());
    seconds.parse::<f64>().context("--seconds takes a number")?;
    let mut cmd = cargo();
    cmd.args(["run", "--release", "-q", "-p", "lirpa-fuzz", "--", "--seconds", &seconds]);
    for f in ["--target", "--seed"] {
        if let Some(v) = flag(args, f)? {
            cmd.args([f, &v]);
        }
    }
    run(&mut cmd)
}

/// A downstream build with only some operator families: the CLI built with
/// `--no-default-features --features linear,relu` registers exactly those plugins'
/// operators, and a model that needs another family fails with a clear error naming
/// the node and the operator. (Run before the full build, which overwrites the binary.)
fn reduced_build() -> Result<()> {
    run(cargo().args([
        "build",
        "--release",
        "-p",
        "lirpa-cli",
        "--no-default-features",
        "--features",
        "linear,relu",
    ]))?;
    let bin_path = release_lirpa();
    let bin = bin_path.as_path();
    let ops = Command::new(bin).arg("ops").output().context("running the reduced lirpa")?;
    let listed = String::from_utf8_lossy(&ops.stdout);
    let has = |op: &str| listed.lines().any(|l| l.split('\t').nth(1) == Some(op));
    if !ops.status.success() || !has("Relu") || !has("Gemm") || has("Conv") {
        bail!("the reduced build (linear, relu) lists the wrong operators:\n{listed}");
    }
    let cnn = Path::new("../shared/reference/synthetic/cnn__linf_0.02/model.onnx");
    if cnn.exists() {
        let out = Command::new(bin)
            .args(["bounds", cnn.to_str().unwrap(), "--method", "ibp", "--norm", "inf", "--eps", "0.1"])
            .args(["--center", "models/toy_lower.json"])
            .output()
            .context("running the reduced lirpa")?;
        let err = String::from_utf8_lossy(&out.stderr);
        if out.status.success() || !err.contains("Conv") {
            bail!("the reduced build should refuse a CNN naming the Conv operator, said: {err}");
        }
        eprintln!("reduced build: {}", err.trim());
    }
    Ok(())
}

fn flag(args: &[String], name: &str) -> Result<Option<String>> {
    match args.iter().position(|a| a == name) {
        None => Ok(None),
        Some(i) => args.get(i + 1).cloned().map(Some).with_context(|| format!("{name} needs a value")),
    }
}

fn soundness(args: &[String]) -> Result<()> {
    let cases = flag(args, "--cases")?.unwrap_or_else(|| "20000".into());
    let seed = flag(args, "--seed")?;
    let op = flag(args, "--op")?;
    cases.parse::<u64>().context("--cases takes a number")?;
    if let Some(s) = &seed {
        s.parse::<u64>().context("--seed takes a number")?;
    }
    // The harness on every registered unary operator (or only --op), f32 and f64.
    let mut cmd = cargo();
    cmd.args(["test", "--release", "-p", "lirpa", "--test", "elementwise_soundness", "--", "--nocapture"])
        .env("LIRPA_SOUNDNESS_CASES", &cases);
    if let Some(s) = &seed {
        cmd.env("LIRPA_SOUNDNESS_SEED", s);
    }
    if let Some(o) = &op {
        cmd.env("LIRPA_SOUNDNESS_OP", o);
    }
    eprintln!("soundness: {cases} random intervals per operator and number type");
    run(&mut cmd)?;
    if op.is_some() {
        return Ok(());
    }
    // The random graph properties.
    let mut cmd = cargo();
    cmd.args([
        "test",
        "--release",
        "-p",
        "lirpa",
        "--test",
        "random_graphs",
        "--test",
        "bilinear_graphs",
        "--test",
        "weight_graphs",
        "--test",
        "acasxu",
    ])
    .env("PROPTEST_CASES", &cases);
    if let Some(s) = seed {
        cmd.env("PROPTEST_RNG_SEED", s).env("PROPTEST_RNG_ALGORITHM", "cc");
    }
    eprintln!("soundness: {cases} random graphs per property");
    run(&mut cmd)
}

fn bench(args: &[String]) -> Result<()> {
    let mut cmd = cargo();
    cmd.args(["bench", "-p", "lirpa-benches", "--bench", "bounds", "--bench", "alpha", "--"]);
    cmd.args(args);
    run(&mut cmd)?;
    run(cargo().args(["run", "--release", "-q", "-p", "lirpa-benches", "--bin", "bench-report"]))
}

/// `cargo xtask vnncomp BENCHMARK`: see the module documentation.
fn vnncomp(args: &[String]) -> Result<()> {
    let Some(bench) = args.first().filter(|a| !a.starts_with("--")) else {
        bail!("vnncomp needs a benchmark folder (a path, or a name under ../shared/benchmarks)")
    };
    let limit: usize = flag(args, "--limit")?.map_or(Ok(usize::MAX), |v| v.parse()).context("--limit")?;
    let cap: f64 =
        flag(args, "--timeout-cap")?.map_or(Ok(f64::INFINITY), |v| v.parse()).context("--timeout-cap")?;
    let filter = flag(args, "--filter")?.unwrap_or_default();
    let dir = if Path::new(bench).is_dir() {
        PathBuf::from(bench)
    } else {
        project_root().join("../shared/benchmarks").join(bench)
    };
    let instances = std::fs::read_dir(&dir)
        .with_context(|| format!("{}: cannot read", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.ends_with("instances.csv")))
        .with_context(|| format!("{}: no instances.csv", dir.display()))?;
    let expected_text = std::fs::read_to_string(dir.join("expected_results_vnncomp.csv")).unwrap_or_default();
    let expected = |onnx: &str, vnnlib: &str| -> String {
        // The expected results name files by path or by bare file name.
        let norm = |s: &str| s.rsplit('/').next().unwrap_or(s).trim_end_matches(".gz").to_string();
        expected_text
            .lines()
            .map(|l| l.split(',').collect::<Vec<_>>())
            .find(|f| f.len() >= 3 && norm(f[0]) == norm(onnx) && norm(f[1]) == norm(vnnlib))
            .map_or("?".into(), |f| f[2].to_string())
    };
    run(cargo().args(["build", "--release", "-q", "-p", "lirpa-cli"]))?;
    let exe = release_lirpa();
    let out = std::env::temp_dir().join(format!("lirpa-vnncomp-{}.txt", std::process::id()));
    let text = std::fs::read_to_string(&instances)?;
    let (mut counts, mut wrong, mut sum, mut max) = (std::collections::BTreeMap::new(), 0, 0.0f64, 0.0f64);
    let mut per_net = std::collections::BTreeMap::new();
    println!(
        "{:<44} {:<28} {:>7} {:>8} {:>8} {:>6}",
        "onnx", "vnnlib", "timeout", "expected", "result", "secs"
    );
    for line in text.lines().map(|l| l.trim_end_matches('\r')).filter(|l| !l.trim().is_empty()).take(limit) {
        if !line.contains(filter.as_str()) {
            continue;
        }
        let f: Vec<&str> = line.split(',').map(str::trim).collect();
        if f.len() < 3 {
            bail!("{}: bad line '{line}'", instances.display());
        }
        let timeout: f64 = f[2].parse().with_context(|| format!("bad timeout in '{line}'"))?;
        let timeout = timeout.min(cap);
        let _ = std::fs::remove_file(&out);
        let t = std::time::Instant::now();
        let status = Command::new(&exe)
            .args(["verify", &dir.join(f[0]).to_string_lossy(), &dir.join(f[1]).to_string_lossy()])
            .args(["--timeout", &timeout.to_string(), "--json", "--results"])
            .arg(&out)
            .stdout(std::process::Stdio::null())
            .status()?;
        let secs = t.elapsed().as_secs_f64();
        let result = if status.success() {
            std::fs::read_to_string(&out)
                .ok()
                .and_then(|s| s.lines().next().map(str::to_string))
                .unwrap_or("none".into())
        } else {
            format!("error({})", status.code().unwrap_or(-1))
        };
        let exp = expected(f[0], f[1]);
        let bad = (result == "sat" && exp == "unsat") || (result == "unsat" && exp == "sat");
        wrong += bad as usize;
        sum += secs;
        max = max.max(secs);
        *counts.entry(result.clone()).or_insert(0usize) += 1;
        let net = per_net.entry(f[0].to_string()).or_insert_with(std::collections::BTreeMap::new);
        *net.entry(if bad { "wrong".to_string() } else { result.clone() }).or_insert(0usize) += 1;
        println!(
            "{:<44} {:<28} {:>7} {:>8} {:>8} {:>6.2}{}",
            f[0],
            f[1],
            timeout,
            exp,
            result,
            secs,
            if bad { "  WRONG" } else { "" }
        );
    }
    let _ = std::fs::remove_file(&out);
    if per_net.len() > 1 && per_net.len() <= 20 {
        for (net, c) in &per_net {
            let c: Vec<String> = c.iter().map(|(k, v)| format!("{v} {k}")).collect();
            println!("  {net}: {}", c.join(", "));
        }
    }
    let summary: Vec<String> = counts.iter().map(|(k, v)| format!("{v} {k}")).collect();
    println!("{}; {wrong} wrong; wall time sum {sum:.1} s, max {max:.2} s", summary.join(", "));
    if wrong > 0 {
        bail!("{wrong} wrong answers");
    }
    Ok(())
}

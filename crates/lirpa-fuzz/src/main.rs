//! `lirpa-fuzz --replay FILE --target T` runs one saved input (outcome and time).
//! `lirpa-fuzz [--target onnx|vnnlib|json|all] [--seconds N] [--seed S]`: fuzz each
//! target for N seconds (default 10) in a worker process, restarted when it aborts or
//! hangs; prints executions, distinct outcomes (the coverage proxy) and crashes, and
//! exits non-zero when a target panicked, aborted, hung or printed a non-finite bound
//! (the input is saved under `crates/lirpa-fuzz/regressions/<target>/`).

use lirpa_fuzz::{Target, fuzz, save_regression};
use std::path::PathBuf;
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

/// A worker that has not started a new case for this long is hung.
const HANG: Duration = Duration::from_secs(30);

fn arg<'a>(args: &'a [String], name: &str) -> Option<&'a str> {
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).map(String::as_str)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let seconds: f64 = match arg(&args, "--seconds").map(str::parse).unwrap_or(Ok(10.0)) {
        Ok(s) if s > 0.0 && s <= 1e6 => s,
        _ => {
            eprintln!("error: --seconds must be a positive number of seconds");
            return ExitCode::from(2);
        }
    };
    let seed: u64 = arg(&args, "--seed").and_then(|s| s.parse().ok()).unwrap_or(0);
    if let Some(file) = arg(&args, "--replay") {
        // Run one saved input through a target, with its outcome and time.
        let t = Target::parse(arg(&args, "--target").unwrap_or("onnx"));
        let (Some(t), Ok(data)) = (t, std::fs::read(file)) else {
            eprintln!("error: --replay FILE --target onnx|vnnlib|json");
            return ExitCode::from(2);
        };
        let start = Instant::now();
        let r = lirpa_fuzz::run_caught(t, &data);
        println!("{r:?} in {:.3} s", start.elapsed().as_secs_f64());
        return if r.is_ok() { ExitCode::SUCCESS } else { ExitCode::FAILURE };
    }
    if let Some(t) = arg(&args, "--worker") {
        return worker(t, seconds, seed, arg(&args, "--current"));
    }
    let targets: Vec<Target> = match arg(&args, "--target").unwrap_or("all") {
        "all" => Target::ALL.to_vec(),
        t => match Target::parse(t) {
            Some(t) => vec![t],
            None => {
                eprintln!("error: unknown target '{t}' (onnx, vnnlib, json or all)");
                return ExitCode::from(2);
            }
        },
    };
    let mut failed = false;
    for t in targets {
        failed |= !supervise(t, seconds, seed);
    }
    if failed { ExitCode::FAILURE } else { ExitCode::SUCCESS }
}

/// The worker: fuzz in-process, then write the statistics and the crashes next to
/// `current`.
fn worker(target: &str, seconds: f64, seed: u64, current: Option<&str>) -> ExitCode {
    let Some(t) = Target::parse(target) else { return ExitCode::from(2) };
    std::panic::set_hook(Box::new(|_| {}));
    let current = current.map(PathBuf::from);
    // Executions so far, for the supervisor if this worker is killed.
    let progress_file = current.as_ref().map(|p| p.with_extension("progress"));
    let progress = |s: &lirpa_fuzz::Stats, outcomes: usize| {
        if let Some(p) = &progress_file {
            let _ = std::fs::write(p, format!("{} {} 0\n", s.execs, outcomes));
        }
    };
    let stats = fuzz(t, seed, Duration::from_secs_f64(seconds), current.as_deref(), progress);
    let mut report = format!("{} {} {}\n", stats.execs, stats.outcomes, stats.corpus);
    for c in &stats.crashes {
        let saved = save_regression(t, &c.input).map(|p| p.display().to_string()).unwrap_or_default();
        report.push_str(&format!("{saved}\t{}\n", c.what.replace('\n', " ")));
    }
    if let Some(p) = current {
        let _ = std::fs::write(p.with_extension("stats"), report);
    }
    ExitCode::SUCCESS
}

/// Fuzz `t` for `seconds` through worker processes; false if anything crashed.
fn supervise(t: Target, seconds: f64, seed: u64) -> bool {
    let dir = std::env::temp_dir().join(format!("lirpa-fuzz-{}", std::process::id()));
    let _ = std::fs::create_dir_all(&dir);
    let current = dir.join(format!("{}.cur", t.name()));
    let stats_file = current.with_extension("stats");
    let exe = std::env::current_exe().expect("own executable");
    let start = Instant::now();
    let total = Duration::from_secs_f64(seconds);
    let (mut execs, mut outcomes, mut corpus, mut restarts) = (0u64, 0usize, 0usize, 0u64);
    let mut crashes: Vec<String> = Vec::new();
    while start.elapsed() < total {
        let left = (total - start.elapsed()).as_secs_f64().max(0.1);
        let _ = std::fs::remove_file(&stats_file);
        let _ = std::fs::remove_file(&current);
        let _ = std::fs::remove_file(current.with_extension("progress"));
        let mut child = match Command::new(&exe)
            .args(["--worker", t.name(), "--seconds", &left.to_string()])
            .args(["--seed", &(seed + restarts).to_string(), "--current"])
            .arg(&current)
            .spawn()
        {
            Ok(c) => c,
            Err(e) => {
                eprintln!("error: cannot start a fuzz worker: {e}");
                return false;
            }
        };
        let status = loop {
            std::thread::sleep(Duration::from_millis(100));
            if let Ok(Some(s)) = child.try_wait() {
                break Some(s);
            }
            let stale = std::fs::metadata(&current)
                .and_then(|m| m.modified())
                .ok()
                .and_then(|m| m.elapsed().ok())
                .is_some_and(|e| e > HANG);
            if stale {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
        };
        restarts += 1;
        match std::fs::read_to_string(&stats_file) {
            Ok(report) if status.is_some_and(|s| s.success()) => {
                let mut lines = report.lines();
                let nums: Vec<u64> =
                    lines.next().unwrap_or("").split(' ').filter_map(|x| x.parse().ok()).collect();
                if let [e, o, c] = nums[..] {
                    execs += e;
                    outcomes = outcomes.max(o as usize);
                    corpus = corpus.max(c as usize);
                }
                crashes.extend(lines.map(str::to_string));
            }
            _ => {
                // The executions it reported before dying count.
                let nums: Vec<u64> = std::fs::read_to_string(current.with_extension("progress"))
                    .unwrap_or_default()
                    .split_whitespace()
                    .filter_map(|x| x.parse().ok())
                    .collect();
                if let [e, o, _] = nums[..] {
                    execs += e;
                    outcomes = outcomes.max(o as usize);
                }
                // The worker died (abort, stack overflow, out of memory) or hung: the
                // input it was running is the crash.
                let input = std::fs::read(&current).unwrap_or_default();
                let what = match status {
                    Some(s) => format!("worker exited with {s}"),
                    None => format!("hang (no new case for {} s)", HANG.as_secs()),
                };
                let saved = save_regression(t, &input).map(|p| p.display().to_string()).unwrap_or_default();
                crashes.push(format!("{saved}\t{what}"));
            }
        }
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "{}: {execs} executions in {secs:.0} s ({:.0}/s), {outcomes} distinct outcomes, corpus {corpus}, {} crashes{}",
        t.name(),
        execs as f64 / secs,
        crashes.len(),
        if restarts > 1 { format!(", {restarts} worker runs") } else { String::new() }
    );
    for c in &crashes {
        println!("  crash: {c}");
    }
    let _ = std::fs::remove_dir_all(&dir);
    crashes.is_empty()
}

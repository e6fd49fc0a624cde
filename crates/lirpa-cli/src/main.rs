//! `lirpa`: provable bounds of an ONNX model's outputs under an input perturbation.

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand, ValueEnum};
use lirpa::{BoundOptions, BoundRequest, Graph, InputValue, Method, Norm, Perturbation, Scalar};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

mod train;

use lirpa_cli::{inputs, perturbation};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "lirpa",
    version,
    about = "Provable output bounds of neural networks (IBP, CROWN, CROWN-IBP)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Memory budget (e.g. 512M, 8G; default half of the machine's memory): larger
    /// tensors, files and bound computations are refused with an error saying what
    /// to change.
    #[arg(long, global = true)]
    max_memory: Option<String>,
}

#[derive(Subcommand)]
enum Command {
    /// Bound the model's outputs (or C·outputs) over a perturbation of its input.
    Bounds(BoundsArgs),
    /// Verify a VNN-LIB property: unsat (holds), sat (with a counterexample),
    /// unknown or timeout.
    Verify(VerifyArgs),
    /// Train the model's initializers (natural, IBP or CROWN-IBP certified training)
    /// and write the trained model as ONNX.
    Train(train::TrainArgs),
    /// List the operator types this build supports.
    Ops,
}

#[derive(clap::Args)]
struct VerifyArgs {
    /// The ONNX model.
    model: PathBuf,
    /// The VNN-LIB property (its unsafe set).
    spec: PathBuf,
    /// Seconds from the start of the process; no answer is given after it.
    #[arg(long, default_value_t = 60.0)]
    timeout: f64,
    /// Write the VNN-COMP result (first line sat/unsat/unknown/timeout, then the
    /// counterexample) to this file.
    #[arg(long)]
    results: Option<PathBuf>,
    /// Print one JSON object on stdout and no progress on stderr.
    #[arg(long)]
    json: bool,
    /// Threads (0 = all cores).
    #[arg(long, default_value_t = 0, value_parser = inputs::threads_arg)]
    threads: usize,
    /// Seed of the attack.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// PGD restarts of the first attack (default: the library's).
    #[arg(long)]
    pgd_restarts: Option<usize>,
    /// Split look-ahead depth (default: the library's).
    #[arg(long)]
    lookahead_depth: Option<u32>,
    /// PGD steps per restart (default: the library's).
    #[arg(long)]
    pgd_steps: Option<usize>,
    /// ReLU-split sub-domains without β-CROWN: the splits only clamp recomputed
    /// intermediate bounds (the behaviour before β-CROWN, for comparison).
    #[arg(long)]
    no_beta: bool,
    /// α,β optimization iterations per ReLU-split sub-domain (default: 6 after a root
    /// that optimized every intermediate bound, 3 otherwise).
    #[arg(long)]
    sub_iterations: Option<usize>,
    /// Split candidates whose children are both bounded per ReLU-split domain (default:
    /// the library's).
    #[arg(long)]
    branch_candidates: Option<usize>,
    /// Candidates ranked by a cheap bound of their children before branching
    /// (filtered smart branching; default: the library's, 0 = off).
    #[arg(long)]
    screen_candidates: Option<usize>,
    /// ReLU-split domains branched per batch (their children are bounded in one
    /// stacked engine call; default: the library's).
    #[arg(long)]
    bab_batch: Option<usize>,
    /// Root bound of the ReLU-split phase: `optimized` (α-CROWN intermediate bounds),
    /// `final` (CROWN's intermediate bounds, the final bound's α and β optimized) or
    /// `auto` (by the time left and the model).
    #[arg(long, value_enum, default_value_t = RootArg::Auto)]
    root: RootArg,
    #[command(flatten)]
    fp: FpArg,
}

#[derive(Clone, Copy, ValueEnum)]
enum RootArg {
    Auto,
    Optimized,
    Final,
}

#[derive(Clone, Copy, ValueEnum)]
enum MethodArg {
    Ibp,
    Crown,
    #[value(name = "crown-ibp")]
    CrownIbp,
    /// α-CROWN: CROWN with relaxation parameters optimized by projected Adam.
    #[value(name = "alpha-crown", alias = "crown-optimized")]
    AlphaCrown,
    /// Forward mode (linear bounds propagated from the input).
    Forward,
    /// Forward mode for intermediate bounds, backward for the output.
    #[value(name = "forward+backward", alias = "forward-backward")]
    ForwardBackward,
}

#[derive(Clone, Copy, ValueEnum)]
enum NormArg {
    Inf,
    #[value(name = "2")]
    L2,
    #[value(name = "1")]
    L1,
}

#[derive(Clone, Copy, ValueEnum)]
enum DtypeArg {
    F32,
    F64,
}

#[derive(clap::Args)]
struct BoundsArgs {
    /// The ONNX model.
    model: PathBuf,
    #[arg(long, value_enum, default_value = "crown")]
    method: MethodArg,
    /// α-CROWN: optimizer iterations (default 20).
    #[arg(long)]
    iterations: Option<usize>,
    /// α-CROWN: Adam learning rate of the relaxation parameters (default 0.5).
    #[arg(long)]
    lr_alpha: Option<f64>,
    /// Norm of the ball around --center.
    #[arg(long, value_enum, requires_all = ["eps", "center"], conflicts_with_all = ["lower", "upper"])]
    norm: Option<NormArg>,
    /// Radius of the ball.
    #[arg(long, allow_negative_numbers = true)]
    eps: Option<f64>,
    /// JSON array: the ball's centre, row-major over the model input.
    #[arg(long)]
    center: Option<PathBuf>,
    /// JSON array: per-element lower bounds of the input box.
    #[arg(long, requires = "upper")]
    lower: Option<PathBuf>,
    /// JSON array: per-element upper bounds of the input box.
    #[arg(long, requires = "lower")]
    upper: Option<PathBuf>,
    /// A VNN-LIB property: its input box (the hull of its input regions).
    #[arg(long, conflicts_with_all = ["norm", "lower", "upper"])]
    vnnlib: Option<PathBuf>,
    /// JSON array, one entry per tensor by ONNX name (graph inputs and perturbed
    /// initializers): {"tensor", "norm", "eps", "center"}, {"tensor", "lower", "upper"}
    /// or {"tensor", "value"}; every graph input must be listed.
    #[arg(long, conflicts_with_all = ["norm", "lower", "upper", "vnnlib"])]
    perturbation: Option<PathBuf>,
    /// JSON array of rows over the flattened output: bound C·y instead of y.
    #[arg(long)]
    spec_c: Option<PathBuf>,
    /// Print `{"lower": [...], "upper": [...]}` and nothing else on stdout.
    #[arg(long)]
    json: bool,
    /// Number type of the computation.
    #[arg(long, value_enum, default_value = "f32")]
    dtype: DtypeArg,
    /// Threads (0 = all cores, 1 = sequential). Small models stay sequential either way.
    #[arg(long, default_value_t = 0, value_parser = inputs::threads_arg)]
    threads: usize,
    /// Coefficients on convolutional layers: windowed where it pays (auto) or dense.
    #[arg(long, default_value = "auto")]
    conv_mode: String,
    #[command(flatten)]
    fp: FpArg,
}

/// `--fp-sound[=real|float32-model]`, shared by `bounds` and `verify`.
#[derive(clap::Args)]
struct FpArg {
    /// Floating-point-sound bounds: enclose the exact real-arithmetic output whatever
    /// rounding happened (`real`, the default of the flag), and also the model's
    /// float32 evaluation in any summation order (`float32-model`).
    #[arg(long = "fp-sound", value_name = "MODE", num_args = 0..=1, require_equals = true,
          default_missing_value = "real", value_parser = ["real", "float32-model", "off"])]
    mode: Option<String>,
}

impl FpArg {
    fn mode(&self) -> Result<lirpa::core::FpSound> {
        Ok(self.mode.as_deref().unwrap_or("off").parse()?)
    }
}

fn main() -> ExitCode {
    let started = std::time::Instant::now();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if !e.use_stderr() => {
            let _ = e.print(); // --help, --version
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            // One line on stderr, as for every other error.
            let text = e.render().to_string();
            let parts: Vec<&str> = text
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with("For more information"))
                .collect();
            eprintln!("{}", parts.join("; "));
            return ExitCode::from(2);
        }
    };
    if let Some(m) = &cli.max_memory {
        match lirpa::core::budget::parse_size(m) {
            Ok(b) => lirpa::core::budget::set_max_memory(b),
            Err(e) => {
                eprintln!("error: --max-memory: {e}");
                return ExitCode::from(2);
            }
        }
    }
    let res = match cli.command {
        Command::Bounds(args) => match args.dtype {
            DtypeArg::F32 => bounds::<f32>(&args),
            DtypeArg::F64 => bounds::<f64>(&args),
        },
        Command::Verify(args) => verify(&args, started),
        Command::Train(args) => train::run(&args),
        Command::Ops => {
            for r in lirpa::registered_ops() {
                let d = if r.domain.is_empty() { "ai.onnx" } else { r.domain };
                println!("{d}\t{}\t{}\tpriority {}", r.op_type, r.plugin, r.priority);
            }
            Ok(())
        }
    };
    match res {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let msg = format!("{e:#}").replace('\n', " ");
            eprintln!("error: {msg}");
            ExitCode::FAILURE
        }
    }
}

/// Read a JSON array of finite numbers.
fn read_vector(path: &Path) -> Result<Vec<f64>> {
    inputs::parse_vector(&inputs::read_text(path)?, &path.display().to_string())
}

/// Read a JSON array of rows of finite numbers.
fn read_matrix(path: &Path) -> Result<Vec<Vec<f64>>> {
    inputs::parse_matrix(&inputs::read_text(path)?, &path.display().to_string())
}

fn cast<T: Scalar>(v: &[f64]) -> Vec<T> {
    v.iter().map(|&x| T::from_f64(x)).collect()
}

fn bounds<T: Scalar + lirpa::core::registry::BuilderFor>(args: &BoundsArgs) -> Result<()> {
    if let Some(p) = &args.perturbation {
        let model = perturbation::load::<T>(&args.model, p)?;
        return report(args, &model.graph, &model.inputs);
    }
    let graph: Graph<T> = lirpa::load_onnx(&args.model)?;
    let input = graph.input().with_context(|| format!("{}", args.model.display()))?;
    let n = graph.node(input).numel();
    let check_len = |v: &[f64], path: &Path| -> Result<()> {
        if v.len() != n {
            bail!("{}: has {} values but the model input has {n} elements", path.display(), v.len());
        }
        Ok(())
    };
    let ptb: Perturbation<T> = match (&args.norm, &args.lower, &args.upper) {
        _ if args.vnnlib.is_some() => {
            let path = args.vnnlib.as_ref().expect("checked");
            let prop = lirpa_verify::read_property(path)?;
            if prop.n_inputs != n {
                bail!(
                    "{}: declares {} inputs but the model input has {n} elements",
                    path.display(),
                    prop.n_inputs
                );
            }
            if prop.regions.is_empty() {
                bail!(
                    "{}: the input set is empty (every input box is empty or its constraints are false): \
                     there is nothing to bound (`lirpa verify` answers unsat)",
                    path.display()
                );
            }
            let (l, u) = prop.input_box();
            Perturbation::new_box(cast(&l), cast(&u))?
        }
        (Some(norm), None, None) => {
            let center_path = args.center.as_ref().expect("clap requires --center");
            let center = read_vector(center_path)?;
            check_len(&center, center_path)?;
            let eps = args.eps.expect("clap requires --eps");
            let norm = match norm {
                NormArg::Inf => Norm::Inf,
                NormArg::L2 => Norm::L2,
                NormArg::L1 => Norm::L1,
            };
            Perturbation::new_ball(norm, cast(&center), T::from_f64(eps))?
        }
        (None, Some(lp), Some(up)) => {
            let (l, u) = (read_vector(lp)?, read_vector(up)?);
            check_len(&l, lp)?;
            check_len(&u, up)?;
            Perturbation::new_box(cast(&l), cast(&u))?
        }
        _ => bail!(
            "give either --norm, --eps and --center, or --lower and --upper, or --vnnlib, or --perturbation"
        ),
    };
    report(args, &graph, &[InputValue::Perturbed(ptb)])
}

/// Bound `graph` over `inputs` (one value per graph input) and print the result.
fn report<T: Scalar>(args: &BoundsArgs, graph: &Graph<T>, inputs: &[InputValue<T>]) -> Result<()> {
    let c = match &args.spec_c {
        None => None,
        Some(p) => {
            let rows = read_matrix(p)?;
            let m = graph.node(graph.output()?).numel();
            if let Some(r) = rows.iter().position(|r| r.len() != m) {
                bail!(
                    "{}: row {r} has {} columns but the model output has {m} elements",
                    p.display(),
                    rows[r].len()
                );
            }
            Some(faer::Mat::<T>::from_fn(rows.len(), m, |i, j| T::from_f64(rows[i][j])))
        }
    };
    let method = match args.method {
        MethodArg::Ibp => Method::Ibp,
        MethodArg::Crown => Method::Crown,
        MethodArg::CrownIbp => Method::CrownIbp,
        MethodArg::AlphaCrown => Method::AlphaCrown,
        MethodArg::Forward => Method::Forward,
        MethodArg::ForwardBackward => Method::ForwardBackward,
    };
    let conv_mode = args.conv_mode.parse()?;
    let fp_sound = args.fp.mode()?;
    let mut opts = BoundOptions { method, threads: args.threads, conv_mode, fp_sound, ..Default::default() };
    if let Some(it) = args.iterations {
        opts.optimize.iterations = it;
    }
    if let Some(lr) = args.lr_alpha {
        opts.optimize.lr_alpha = lr;
    }
    let req = BoundRequest { c: c.as_ref().map(|c| c.as_ref()), ..Default::default() };
    let res = lirpa::compute_bounds(graph, inputs, &opts, &req)?;
    if args.json {
        let to = |v: &[T]| v.iter().map(|x| x.as_f64()).collect::<Vec<f64>>();
        let out = serde_json::json!({ "lower": to(&res.lower), "upper": to(&res.upper) });
        println!("{out}");
    } else {
        let what = if c.is_some() { "C·y row" } else { "output" };
        println!(
            "{} bounds of {} ({} {})",
            method,
            args.model.display(),
            res.lower.len(),
            if c.is_some() { "rows of C·y" } else { "outputs" }
        );
        println!("{:>10}  {:>16}  {:>16}", what, "lower", "upper");
        for (i, (l, u)) in res.lower.iter().zip(&res.upper).enumerate() {
            println!("{i:>10}  {:>16.8}  {:>16.8}", l.as_f64(), u.as_f64());
        }
    }
    Ok(())
}

fn verify(args: &VerifyArgs, started: std::time::Instant) -> Result<()> {
    use lirpa_verify::{Verdict, VerifyOptions};
    let timeout = lirpa_verify::check_timeout(args.timeout).context("--timeout")?;
    if let Some(p) = &args.results {
        // Before the work, not after it: an unwritable path fails now.
        std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(p)
            .with_context(|| format!("{}: cannot write the results", p.display()))?;
    }
    if args.threads > 0 {
        // A second initialisation (never here) would only fail; ignore it.
        let _ = rayon::ThreadPoolBuilder::new().num_threads(args.threads).build_global();
    }
    let write = |v: &Verdict| -> Result<()> {
        if let Some(p) = &args.results {
            std::fs::write(p, v.vnncomp_text()).with_context(|| format!("{}: cannot write", p.display()))?;
        }
        Ok(())
    };
    let quiet = args.json;
    let progress = |p: &lirpa_verify::Progress| {
        if !quiet {
            eprintln!(
                "[{:>7.1}s] {}: {} domains done ({:.0}/s), {} pending, worst bound {:.4e}",
                p.elapsed.as_secs_f64(),
                p.phase,
                p.domains,
                p.per_second,
                p.pending,
                p.worst_bound
            );
        }
    };
    let mut opts = VerifyOptions::with_timeout(timeout);
    opts.seed = args.seed;
    opts.pgd_restarts = args.pgd_restarts.unwrap_or(opts.pgd_restarts);
    opts.pgd_steps = args.pgd_steps.unwrap_or(opts.pgd_steps);
    opts.lookahead_depth = args.lookahead_depth.unwrap_or(opts.lookahead_depth);
    opts.relu_bab.beta = !args.no_beta;
    opts.relu_bab.sub_iterations = args.sub_iterations.or(opts.relu_bab.sub_iterations);
    opts.relu_bab.candidates = args.branch_candidates.unwrap_or(opts.relu_bab.candidates);
    opts.relu_bab.screen = args.screen_candidates.unwrap_or(opts.relu_bab.screen);
    opts.relu_bab.batch = args.bab_batch.unwrap_or(opts.relu_bab.batch).max(1);
    opts.root = match args.root {
        RootArg::Auto => lirpa_verify::RootBound::Auto,
        RootArg::Optimized => lirpa_verify::RootBound::Optimized,
        RootArg::Final => lirpa_verify::RootBound::Final,
    };
    opts.progress = Some(&progress);
    opts.fp_sound = args.fp.mode()?;
    let model = lirpa_verify::Model::load(&args.model)?;
    let problem = lirpa_verify::Problem::from_property(&lirpa_verify::read_property(&args.spec)?);
    let (verdict, stats) = lirpa_verify::verify_within(&model, &problem, started, timeout, &mut opts)?;
    write(&verdict)?;
    let secs = started.elapsed().as_secs_f64();
    if args.json {
        let mut out = serde_json::json!({
            "result": verdict.word(),
            "seconds": secs,
            "domains": stats.domains,
            "attack_seconds": stats.attack_time.as_secs_f64(),
            "bab_seconds": stats.bab_time.as_secs_f64(),
        });
        match &verdict {
            Verdict::Sat(ce) => {
                let (f32_holds, f64_holds) = model.recheck(&problem, ce);
                out["counterexample"] = serde_json::json!({ "x": ce.x, "y": ce.y, "holds_f32": f32_holds, "holds_f64": f64_holds });
            }
            Verdict::Unknown(why) => out["reason"] = serde_json::json!(why),
            _ => {}
        }
        println!("{out}");
    } else {
        print!("{}", verdict.vnncomp_text());
        if let Verdict::Unknown(why) = &verdict {
            eprintln!("unknown: {why}");
        }
        if let Verdict::Sat(ce) = &verdict {
            let (f32_holds, f64_holds) = model.recheck(&problem, ce);
            eprintln!(
                "counterexample re-checked: violates the property in f32: {f32_holds}, in f64: {f64_holds}"
            );
        }
        eprintln!(
            "{} in {secs:.2} s ({} domains; attack {:.2} s, branch and bound {:.2} s)",
            verdict.word(),
            stats.domains,
            stats.attack_time.as_secs_f64(),
            stats.bab_time.as_secs_f64()
        );
    }
    Ok(())
}

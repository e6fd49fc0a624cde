//! `lirpa train`: certified training of an ONNX model's initializers.

use anyhow::{Context, Result, bail};
use lirpa_train::{Dataset, EpochStats, EpsSchedule, Recipe, TrainConfig, TrainMethod};
use std::io::{IsTerminal, Write};
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct TrainArgs {
    /// The ONNX model whose initializers are trained (its current values are the start).
    model: PathBuf,
    /// Training data: CSV with a header, the flattened input, the label last.
    #[arg(long)]
    data: PathBuf,
    /// Use only the first N rows of --data for training; the rest are the test set
    /// (unless --test is given).
    #[arg(long)]
    split: Option<usize>,
    /// Test data (same format): clean and verified error are reported after training.
    #[arg(long)]
    test: Option<PathBuf>,
    /// natural, ibp, crown-ibp or crown.
    #[arg(long, default_value = "crown-ibp")]
    method: String,
    /// Radius of the L∞ input set at the end of the ramp.
    #[arg(long, default_value_t = 0.1)]
    eps: f64,
    /// Norm of the input set: inf (a box, clipped to the data range) or 2 (a ball).
    #[arg(long, default_value = "inf")]
    norm: String,
    #[arg(long, default_value_t = 60)]
    epochs: usize,
    #[arg(long, default_value_t = 64)]
    batch: usize,
    /// Adam's learning rate.
    #[arg(long, default_value_t = 1e-3)]
    lr: f64,
    /// The ε ramp, auto_LiRPA's `start=S,length=L` (ε = 0 before epoch S, a per-batch
    /// linear ramp over L epochs). Default: the full ε from the first epoch.
    #[arg(long)]
    schedule: Option<String>,
    /// Multiply the learning rate by --lr-decay every K epochs once ε is full.
    #[arg(long)]
    lr_step: Option<usize>,
    #[arg(long, default_value_t = 0.5)]
    lr_decay: f64,
    /// Seed of the shuffling.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// The valid input range the input set is clipped to: `auto` (the range the training
    /// features span), `none`, or `LO,HI`.
    #[arg(long, default_value = "auto")]
    clip: String,
    /// Threads (0 = all cores). The products of one training step on small models are
    /// too small to split (measured: 2 threads are slower on the digits models), so 1.
    #[arg(long, default_value_t = 1, value_parser = lirpa_cli::inputs::threads_arg)]
    threads: usize,
    /// Loss fusion: bound the cross-entropy itself from above (one backward row per
    /// sample instead of one per margin), as auto_LiRPA's `loss_fusion`.
    #[arg(long)]
    loss_fusion: bool,
    /// Also perturb every weight within an L∞ ball of this radius (ramped like ε): the
    /// robust loss bounds the worst case over the weights too (a flat network).
    #[arg(long, default_value_t = 0.0)]
    weight_eps: f64,
    /// Also report the clean test error with the weights quantized to these bit widths
    /// (comma-separated, e.g. 4,3).
    #[arg(long, value_delimiter = ',')]
    quantize: Vec<u32>,
    /// Where the trained model is written (ONNX).
    #[arg(long)]
    out: PathBuf,
    /// Print a JSON summary on stdout (per-epoch statistics and the test evaluation).
    #[arg(long)]
    json: bool,
}

fn parse_clip(s: &str, data: &Dataset) -> Result<Option<(f32, f32)>> {
    Ok(match s {
        "none" => None,
        "auto" => {
            let lo = data.x.iter().copied().fold(f32::INFINITY, f32::min);
            let hi = data.x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            Some((lo, hi))
        }
        _ => {
            let (a, b) = s.split_once(',').context("--clip: expected auto, none or LO,HI")?;
            let (a, b): (f32, f32) = (a.trim().parse()?, b.trim().parse()?);
            if !(a.is_finite() && b.is_finite() && a <= b) {
                bail!("--clip: '{s}' is not a range LO <= HI");
            }
            Some((a, b))
        }
    })
}

/// The model file, refused past 2 GiB (the protobuf limit) before it is read.
fn read_model(path: &std::path::Path) -> Result<Vec<u8>> {
    use std::io::Read;
    let shown = path.display();
    let f = std::fs::File::open(path).with_context(|| format!("{shown}: cannot read"))?;
    let mut bytes = Vec::new();
    f.take((2u64 << 30) + 1).read_to_end(&mut bytes).with_context(|| format!("{shown}: cannot read"))?;
    if bytes.len() as u64 > 2u64 << 30 {
        bail!("{shown}: larger than 2 GiB, not an ONNX model");
    }
    Ok(bytes)
}

pub fn run(args: &TrainArgs) -> Result<()> {
    let method: TrainMethod = args.method.parse().map_err(anyhow::Error::msg)?;
    if args.loss_fusion && !matches!(method, TrainMethod::Ibp | TrainMethod::CrownIbp) {
        bail!("--loss-fusion applies to the ibp and crown-ibp methods");
    }
    let norm = match args.norm.as_str() {
        "inf" => lirpa_train::InputNorm::Inf,
        "2" => lirpa_train::InputNorm::L2,
        other => bail!("--norm {other}: the input set is an L∞ box (inf) or an L2 ball (2)"),
    };
    let non_negative = |v: f64| v.is_finite() && v >= 0.0;
    let positive = |v: f64| v.is_finite() && v > 0.0;
    if !(non_negative(args.eps) && non_negative(args.weight_eps)) {
        bail!("--eps and --weight-eps must be finite non-negative numbers");
    }
    if let Some(b) = args.quantize.iter().find(|&&b| !(2..=16).contains(&b)) {
        bail!("--quantize {b}: bit widths from 2 to 16");
    }
    if !(positive(args.lr) && positive(args.lr_decay)) {
        bail!("--lr and --lr-decay must be positive");
    }
    if args.batch == 0 || args.epochs == 0 {
        bail!("--batch and --epochs must be positive");
    }
    let schedule: EpsSchedule = match &args.schedule {
        Some(s) => s.parse().map_err(|e| anyhow::anyhow!("--schedule: {e}"))?,
        None => EpsSchedule::default(),
    };
    let bytes = read_model(&args.model)?;
    let graph = lirpa::onnx::load_bytes::<f32>(&bytes, &args.model.display().to_string())?;
    let all = Dataset::load_csv(&args.data)?;
    let (train, split_test) = match args.split {
        Some(n) if n == 0 || n >= all.len() => bail!("--split {n}: the data has {} rows", all.len()),
        Some(n) => (all.rows(0..n), Some(all.rows(n..all.len()))),
        None => (all, None),
    };
    let test = match &args.test {
        Some(p) => Some(Dataset::load_csv(p)?),
        None => split_test,
    };
    let threads = if args.threads == 0 {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    } else {
        args.threads
    };
    let cfg = TrainConfig {
        method,
        norm,
        recipe: Recipe {
            eps: args.eps,
            epochs: args.epochs,
            batch: args.batch,
            lr: args.lr,
            schedule,
            lr_step: args.lr_step,
            lr_decay: args.lr_decay,
        },
        clip: parse_clip(&args.clip, &train)?,
        seed: args.seed,
        threads,
        weight_eps: args.weight_eps,
        loss_fusion: args.loss_fusion,
    };
    let tty = std::io::stderr().is_terminal() && !args.json;
    let mut epochs: Vec<EpochStats> = Vec::new();
    let started = std::time::Instant::now();
    let trained = lirpa_train::train(&graph, &train, &cfg, |s| {
        if !args.json {
            let bar_len = 20 * s.epoch / args.epochs;
            let bar = format!("[{}{}]", "#".repeat(bar_len), ".".repeat(20 - bar_len));
            let line = format!(
                "{bar} epoch {}/{}  lr {:.2e}  eps {:.4}-{:.4}  loss {:.4}  clean err {:.1}%  IBP-verified err {:.1}%  {:.2} s",
                s.epoch,
                args.epochs,
                s.lr,
                s.eps_first,
                s.eps_last,
                s.loss,
                100.0 * s.clean_err,
                100.0 * s.verified_err,
                s.seconds
            );
            let mut err = std::io::stderr();
            let _ = if tty { writeln!(err, "\r{line}") } else { writeln!(err, "{line}") };
        }
        epochs.push(s.clone());
    })?;
    let seconds = started.elapsed().as_secs_f64();
    let out = lirpa_train::export_onnx(&bytes, &graph, &trained)?;
    std::fs::write(&args.out, &out).with_context(|| format!("{}: cannot write", args.out.display()))?;
    let mut evals = Vec::new();
    if let Some(test) = &test {
        let model = lirpa::onnx::load_bytes::<f32>(&out, &args.out.display().to_string())?;
        for eps in [args.eps, args.eps / 2.0] {
            let e = lirpa_train::evaluate(&model, test, eps as f32, cfg.norm, cfg.clip, threads)?;
            if !args.json {
                eprintln!(
                    "test ({} samples), eps {eps}: clean err {:.2}%  verified err IBP {:.2}%  CROWN {:.2}%",
                    test.len(),
                    e.clean_err,
                    e.ibp_err,
                    e.crown_err
                );
            }
            evals.push(serde_json::json!({"eps": eps, "clean_err": e.clean_err, "ibp_err": e.ibp_err, "crown_err": e.crown_err}));
        }
    }
    let mut quant = Vec::new();
    if let Some(test) = &test {
        let mut g = trained;
        let base = g.params().to_vec();
        for &bits in &args.quantize {
            g.set_params(base.clone())?;
            g.set_params(lirpa_train::quantized_params(&g, bits))?;
            let err = lirpa_train::clean_error(&g, test)?;
            if !args.json {
                eprintln!("test, weights quantized to {bits} bits: clean err {err:.2}%");
            }
            quant.push(serde_json::json!({"bits": bits, "clean_err": err}));
        }
    }
    if args.json {
        let ep: Vec<_> = epochs
            .iter()
            .map(|s| serde_json::json!({"epoch": s.epoch, "lr": s.lr, "eps_first": s.eps_first, "eps_last": s.eps_last,
                "loss": s.loss, "robust_ce": s.robust_ce, "clean_err": s.clean_err, "verified_err": s.verified_err, "seconds": s.seconds}))
            .collect();
        println!(
            "{}",
            serde_json::json!({"train_seconds": seconds, "epochs": ep, "test": evals, "quantized": quant})
        );
    } else {
        eprintln!("trained in {seconds:.1} s; written to {}", args.out.display());
    }
    Ok(())
}

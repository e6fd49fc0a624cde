//! A fixed number of bound computations on one reference case, for profilers
//! (`perf record`, `valgrind --tool=callgrind`), which criterion's adaptive loop suits
//! poorly. `cargo run --release -p lirpa-benches --example profile -- synthetic
//! cnn__linf_0.02 THREADS ITERATIONS [METHOD [FP_SOUND]]` (`FP_SOUND`: off, real or
//! float32-model).
use lirpa::{BoundOptions, BoundRequest, InputValue, Method};
use lirpa_benches::BenchCase;
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (folder, name) = (&args[1], &args[2]);
    let threads: usize = args[3].parse().unwrap();
    let iters: usize = args[4].parse().unwrap();
    let method: Method = args.get(5).map(|s| s.parse().unwrap()).unwrap_or(Method::Crown);
    let fp_sound = args.get(6).map(|s| s.parse().unwrap()).unwrap_or_default();
    let case = BenchCase::load(folder, name).unwrap();
    let opts = BoundOptions { threads, fp_sound, ..BoundOptions::with_method(method) };
    let inputs = [InputValue::Perturbed(case.ptb.clone())];
    let req = BoundRequest::default();
    let t = std::time::Instant::now();
    for _ in 0..iters {
        std::hint::black_box(lirpa::compute_bounds(&case.graph, &inputs, &opts, &req).unwrap());
    }
    println!(
        "{name} {method} {fp_sound:?} threads={threads}: {:.3} ms/iter",
        t.elapsed().as_secs_f64() * 1e3 / iters as f64
    );
}

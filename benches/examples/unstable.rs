//! Where a ReLU-split verification starts: the unstable elements (lower bound < 0 <
//! upper bound) of each split node and their mean width under CROWN's and α-CROWN's
//! intermediate bounds, and the bounds of the property's rows (and of the last split
//! node's input, when it has the output's size: an output ReLU). A third argument skips
//! α-CROWN (minutes on the 4-block ResNet).
//!
//! `cargo run --release -p lirpa-benches --example unstable -- MODEL VNNLIB [crown]`
use lirpa::{BoundOptions, BoundRequest, InputValue, Method, Perturbation};

fn main() {
    let a: Vec<String> = std::env::args().collect();
    assert!(a.len() >= 3, "usage: unstable MODEL VNNLIB [crown]");
    let model = lirpa_verify::Model::load(&a[1]).unwrap();
    let problem = lirpa_verify::Problem::from_property(&lirpa_vnnlib::parse_file(&a[2]).unwrap());
    let r = &problem.regions[0];
    let g = &model.g64;
    let inputs = [InputValue::Perturbed(Perturbation::new_box(r.lower.clone(), r.upper.clone()).unwrap())];
    let nodes = lirpa_verify::relu_bab::split_nodes(g);
    let c = faer::Mat::<f64>::from_fn(r.disjuncts.len(), r.disjuncts[0].c[0].len(), |i, j| {
        r.disjuncts[i].c[0][j]
    });
    let req = BoundRequest { node: None, c: Some(c.as_ref()), lower: true, upper: false, return_a: false };
    let methods = if a.len() > 3 { vec![Method::Crown] } else { vec![Method::Crown, Method::AlphaCrown] };
    let last = nodes.last().unwrap().0;
    let pre = (g.node(last).numel() == c.ncols() && methods.len() > 1).then_some(last);
    for (m, node) in methods.iter().map(|m| (*m, None)).chain(pre.map(|p| (Method::AlphaCrown, Some(p)))) {
        let req = BoundRequest { node, ..req };
        let mut opts = BoundOptions { threads: 0, ..BoundOptions::with_method(m) };
        opts.optimize.iterations = 20;
        let t = std::time::Instant::now();
        let (res, inter) = if m == Method::Crown {
            lirpa::compute_bounds_keep(g, &inputs, &opts, &req).unwrap()
        } else {
            let (r, _, b) = lirpa::compute_bounds_optimized_keep(g, &inputs, &opts, &req, None).unwrap();
            (r, b)
        };
        println!(
            "{m:?} {node:?} {:.2}s final {:?}",
            t.elapsed().as_secs_f64(),
            res.lower.iter().map(|v| (v * 100.0).round() / 100.0).collect::<Vec<_>>()
        );
        for (id, _) in &nodes {
            if let Some(Some((l, u))) = inter.get(*id) {
                let un: Vec<usize> = (0..l.len()).filter(|&j| l[j] < 0.0 && u[j] > 0.0).collect();
                let w: f64 = un.iter().map(|&j| u[j] - l[j]).sum::<f64>() / un.len().max(1) as f64;
                println!("  node {id}: {} of {} unstable, mean width {w:.3}", un.len(), l.len());
            }
        }
    }
}

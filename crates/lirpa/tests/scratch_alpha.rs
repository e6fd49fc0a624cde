mod common;
use common::{Case, reference_dir};
use lirpa::*;
#[test]
fn scratch() {
    let name = std::env::var("CASE").unwrap();
    let case = Case::load(&reference_dir().join(name));
    let g = case.graph::<f32>().unwrap();
    let c_rows = case.spec_c();
    let c = faer::Mat::<f32>::from_fn(c_rows.len(), c_rows[0].len(), |i, j| c_rows[i][j] as f32);
    let inputs = [InputValue::Perturbed(case.perturbation::<f32>())];
    let req = BoundRequest { c: Some(c.as_ref()), ..Default::default() };
    for it in [1usize, 2, 5, 20, 100] {
        let mut o = BoundOptions::with_method(Method::AlphaCrown);
        o.optimize.iterations = it;
        o.optimize.early_stop_patience = 0;
        let r = compute_bounds(&g, &inputs, &o, &req).unwrap();
        eprintln!("it {it}: {:?}", &r.lower[..3]);
    }
    eprintln!("ref {:?}", common::recorded_best(&case, "spec_bounds", "alpha-CROWN").unwrap().0);
}

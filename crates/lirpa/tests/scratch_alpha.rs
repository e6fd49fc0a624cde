mod common;
use common::{Case, reference_dir};
#[test]
fn scratch() {
    let root = reference_dir();
    for sub in ["synthetic", "vnncomp"] {
        let mut dirs: Vec<_> =
            std::fs::read_dir(root.join(sub)).unwrap().map(|e| e.unwrap().path()).collect();
        dirs.sort();
        for d in dirs {
            let case = Case::load(&d);
            if case.name.starts_with("oval") || case.name.starts_with("resnet_2b") {
                continue;
            }
            let Ok(g) = case.graph::<f32>() else { continue };
            let t = std::time::Instant::now();
            let f = common::check_case(
                &case,
                &g,
                &[("forward", lirpa::Method::Forward), ("forward+backward", lirpa::Method::ForwardBackward)],
            );
            eprintln!("{} {:?} fails {}", case.name, t.elapsed(), f.len());
            for x in f.iter().take(3) {
                eprintln!("   {x}");
            }
        }
    }
}

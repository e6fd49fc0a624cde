//! A VNN-LIB property in the form the verifier works on: input regions (boxes), each
//! with a disjunction of output conjunctions `C·y <= d` that are **unsafe**.

use lirpa_vnnlib::Property;

/// One conjunction `C·y <= d` (all rows) of the unsafe output set.
#[derive(Clone, Debug, PartialEq)]
pub struct Disjunct {
    /// Rows over the flattened output.
    pub c: Vec<Vec<f64>>,
    pub d: Vec<f64>,
}

impl Disjunct {
    /// `max_i (C_i·y - d_i)`: `<= 0` exactly when `y` is in this unsafe set. With no
    /// rows every output is unsafe (`-inf`).
    pub fn margin(&self, y: &[f64]) -> f64 {
        self.c
            .iter()
            .zip(&self.d)
            .map(|(row, d)| row.iter().zip(y).map(|(a, b)| a * b).sum::<f64>() - d)
            .fold(f64::NEG_INFINITY, f64::max)
    }
}

/// An input box and the unsafe output conjunctions for inputs in it.
#[derive(Clone, Debug, PartialEq)]
pub struct Region {
    pub lower: Vec<f64>,
    pub upper: Vec<f64>,
    pub disjuncts: Vec<Disjunct>,
}

impl Region {
    pub fn contains(&self, x: &[f64]) -> bool {
        x.len() == self.lower.len()
            && x.iter().zip(self.lower.iter().zip(&self.upper)).all(|(v, (l, u))| l <= v && v <= u)
    }

    /// The smallest margin over the disjuncts (`<= 0`: `y` is unsafe).
    pub fn margin(&self, y: &[f64]) -> f64 {
        self.disjuncts.iter().map(|d| d.margin(y)).fold(f64::INFINITY, f64::min)
    }
}

/// A property: a counterexample is an `x` in some region whose output lies in one of
/// that region's disjuncts.
#[derive(Clone, Debug, PartialEq)]
pub struct Problem {
    pub n_inputs: usize,
    pub n_outputs: usize,
    pub regions: Vec<Region>,
}

impl Problem {
    pub fn from_property(p: &Property) -> Problem {
        let regions = p
            .regions
            .iter()
            .map(|r| {
                let mut disjuncts: Vec<Disjunct> =
                    r.outputs.iter().map(|o| Disjunct { c: o.mat.clone(), d: o.rhs.clone() }).collect();
                if disjuncts.is_empty() {
                    // No output constraint: every output is unsafe.
                    disjuncts.push(Disjunct { c: vec![], d: vec![] });
                }
                Region { lower: r.lower.clone(), upper: r.upper.clone(), disjuncts }
            })
            .collect();
        Problem { n_inputs: p.n_inputs, n_outputs: p.n_outputs, regions }
    }

    /// True when `(x, y)` violates the property exactly as written (no tolerance).
    pub fn is_counterexample(&self, x: &[f64], y: &[f64]) -> bool {
        y.len() == self.n_outputs
            && y.iter().all(|v| v.is_finite())
            && self.regions.iter().any(|r| r.contains(x) && r.margin(y) <= 0.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn margins_follow_the_rows() {
        // Unsafe: y0 >= y1 and y0 >= 3, i.e. rows (-1, 1) <= 0 and (-1, 0) <= -3.
        let d = Disjunct { c: vec![vec![-1.0, 1.0], vec![-1.0, 0.0]], d: vec![0.0, -3.0] };
        assert_eq!(d.margin(&[4.0, 1.0]), -1.0);
        assert_eq!(d.margin(&[2.0, 1.0]), 1.0);
        assert_eq!(Disjunct { c: vec![], d: vec![] }.margin(&[0.0]), f64::NEG_INFINITY);
        let p = Problem {
            n_inputs: 1,
            n_outputs: 2,
            regions: vec![Region { lower: vec![0.0], upper: vec![1.0], disjuncts: vec![d] }],
        };
        assert!(p.is_counterexample(&[0.5], &[4.0, 1.0]));
        assert!(!p.is_counterexample(&[1.5], &[4.0, 1.0]), "outside the box");
        assert!(!p.is_counterexample(&[0.5], &[2.0, 1.0]));
        assert!(!p.is_counterexample(&[0.5], &[f64::NAN, 1.0]));
    }
}

//! Operators of attention blocks beyond products: Softmax (auto_LiRPA's default
//! `lse` relaxation, Wei et al., AISTATS 2023), the reductions ReduceSum and
//! ReduceMean (exact) and ReduceMax/ReduceMin (a sound selection relaxation), and
//! LayerNormalization (a decomposed relaxation, see `layernorm`).
//!
//! Every operator here works on *groups*: sets of input elements that one output
//! element (a reduction) or one softmax vector depends on, computed once when the
//! operator is built from its axes.

mod groups;
mod layernorm;
mod reduce;
mod softmax;

use lirpa_core::register_op;

register_op!("Softmax", softmax::build_softmax);
register_op!("ReduceSum", reduce::build_reduce_sum);
register_op!("ReduceMean", reduce::build_reduce_mean);
register_op!("ReduceMax", reduce::build_reduce_max);
register_op!("ReduceMin", reduce::build_reduce_min);
register_op!("LayerNormalization", layernorm::build_layer_norm);

#[cfg(test)]
mod tests {
    use lirpa_core::{Attr, Attributes, GraphBuilder, Interval, TensorData};

    fn eval(
        op: &str,
        attrs: Attributes,
        x: &[f64],
        shape: &[usize],
        consts: &[(&str, TensorData)],
    ) -> Vec<f64> {
        let mut b = GraphBuilder::<f64>::new();
        b.add_input("x", shape).unwrap();
        let mut ins = vec![Some("x")];
        for (name, t) in consts {
            b.add_constant(name, t.clone()).unwrap();
            ins.push(Some(name));
        }
        b.add_node("y", op, "", 13, &attrs, &ins).unwrap();
        let g = b.finish(&["y"]).unwrap();
        g.forward(&[x], g.output().unwrap()).unwrap()
    }

    /// Hand-computed: x = [1, 2, 3], γ = [1, 2, 1], β = [0, 0, 1], ε = 0: mean 2,
    /// variance 2/3, so y = [−1, 0, 1]·sqrt(3/2)·γ + β = [−1.2247, 0, 2.2247].
    #[test]
    fn layer_norm_forward_hand_computed() {
        let mut at = Attributes::default();
        at.insert("epsilon", Attr::Float(0.0));
        let g = TensorData::float(&[3], vec![1.0, 2.0, 1.0]).unwrap();
        let be = TensorData::float(&[3], vec![0.0, 0.0, 1.0]).unwrap();
        let y = eval("LayerNormalization", at, &[1.0, 2.0, 3.0], &[1, 3], &[("g", g), ("b", be)]);
        let s = 1.5f64.sqrt();
        for (a, e) in y.iter().zip([-s, 0.0, s + 1.0]) {
            assert!((a - e).abs() < 1e-12, "{y:?}");
        }
    }

    /// Hand-computed: softmax([0, ln 2]) = [1/3, 2/3]; IBP of x ∈ [0, 1] × [0, 0]:
    /// σ_0 ∈ [1/(1 + 1), e/(e + 1)].
    #[test]
    fn softmax_forward_and_interval_hand_computed() {
        let y = eval("Softmax", Attributes::default(), &[0.0, 2f64.ln()], &[1, 2], &[]);
        assert!((y[0] - 1.0 / 3.0).abs() < 1e-12 && (y[1] - 2.0 / 3.0).abs() < 1e-12, "{y:?}");
        let mut b = GraphBuilder::<f64>::new();
        b.add_input("x", &[1, 2]).unwrap();
        b.add_node("y", "Softmax", "", 13, &Attributes::default(), &[Some("x")]).unwrap();
        let g = b.finish(&["y"]).unwrap();
        let op = g.node(g.output().unwrap()).op().unwrap();
        let (l, u) = ([0.0, 0.0], [1.0, 0.0]);
        let (mut lo, mut hi) = ([0.0; 2], [0.0; 2]);
        op.interval(&[Interval { lower: &l, upper: &u }], &mut lo, &mut hi).unwrap();
        let e = 1f64.exp();
        assert!((lo[0] - 0.5).abs() < 1e-9 && (hi[0] - e / (e + 1.0)).abs() < 1e-9, "{lo:?} {hi:?}");
        assert!(lo[0] <= 0.5 && hi[0] >= e / (e + 1.0), "outward rounding");
    }

    /// ReduceSum over axis 1 of a [2, 3] tensor (axes as an input from opset 13 on),
    /// ReduceMean over all axes, ReduceMax/ReduceMin over the last axis.
    #[test]
    fn reductions_hand_computed() {
        let x = [1.0, -2.0, 3.0, 4.0, 5.0, -6.0];
        let axes = TensorData::new(&[1], lirpa_core::DType::Int, vec![1.0]).unwrap();
        let y = eval("ReduceSum", Attributes::default(), &x, &[2, 3], &[("axes", axes)]);
        assert_eq!(y, vec![2.0, 3.0]);
        let y = eval("ReduceMean", Attributes::default(), &x, &[2, 3], &[]);
        assert!(y.len() == 1 && (y[0] - 5.0 / 6.0).abs() < 1e-12, "{y:?}");
        let mut at = Attributes::default();
        at.insert("axes", Attr::Ints(vec![-1]));
        at.insert("keepdims", Attr::Int(0));
        assert_eq!(eval("ReduceMax", at.clone(), &x, &[2, 3], &[]), vec![3.0, 5.0]);
        assert_eq!(eval("ReduceMin", at, &x, &[2, 3], &[]), vec![-2.0, -6.0]);
    }
}

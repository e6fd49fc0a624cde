//! Affine and shape operators. Every operator here is exact: its backward rule is a
//! linear map of the coefficients, with no relaxation and no input bounds.

mod dense;
mod elementwise;
mod index;
mod shape;

use lirpa_core::register_op;

register_op!("Gemm", dense::build_gemm);
register_op!("MatMul", dense::build_matmul);
register_op!("Add", elementwise::build_add);
register_op!("Sub", elementwise::build_sub);
register_op!("Mul", elementwise::build_mul);
register_op!("Div", elementwise::build_div);
register_op!("Neg", elementwise::build_neg);
register_op!("Constant", shape::build_constant);
register_op!("ConstantOfShape", shape::build_constant_of_shape);
register_op!("Identity", shape::build_identity);
register_op!("Dropout", shape::build_identity);
register_op!("Cast", shape::build_cast);
register_op!("Flatten", shape::build_flatten);
register_op!("Reshape", shape::build_reshape);
register_op!("Squeeze", shape::build_squeeze);
register_op!("Unsqueeze", shape::build_unsqueeze);
register_op!("Transpose", shape::build_transpose);
register_op!("Shape", shape::build_shape);
register_op!("Concat", index::build_concat);
register_op!("Slice", index::build_slice);
register_op!("Gather", index::build_gather);
register_op!("Pad", index::build_pad);

#[cfg(test)]
mod tests {
    use lirpa_core::{Attributes, Error, GraphBuilder};

    /// Without the bilinear plugin (this test binary links only this crate), a product
    /// of two perturbed tensors, a square `Mul(x, x)` included, is a clear "not
    /// implemented" naming the node.
    #[test]
    fn product_of_perturbed_tensors_is_unimplemented_here() {
        for (op, rhs) in [("Mul", "y"), ("Mul", "x"), ("MatMul", "y"), ("Div", "y")] {
            let mut b = GraphBuilder::<f32>::new();
            b.add_input("x", &[2, 2]).unwrap();
            b.add_input("y", &[2, 2]).unwrap();
            let err =
                b.add_node("prod", op, "", 13, &Attributes::default(), &[Some("x"), Some(rhs)]).unwrap_err();
            let msg = err.to_string();
            assert!(matches!(err, Error::Unimplemented { .. }), "{op}: {msg}");
            assert!(msg.contains("'prod'") && msg.contains("perturbed tensor"), "{op}: {msg}");
        }
    }
}

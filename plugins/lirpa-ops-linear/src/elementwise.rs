//! Element-wise affine maps with numpy broadcasting:
//! `y[i] = Σ_k s_k[i] · x_k[src_k[i]] + c[i]`. Add, Sub, Neg, and Mul/Div by a constant.

use lirpa_core::linear::{scatter_columns, scatter_columns_scaled};
use lirpa_core::op::{BackwardCtx, Evaluate, Interval, IntervalRule, LinearRelaxation, NodeDef, Operator};
use lirpa_core::{
    BackwardResult, BuiltOp, Error, LinearA, LinearBias, Result, Scalar, Shape, TensorData, broadcast_shapes,
    broadcast_source_index, numel,
};
use smallvec::SmallVec;

/// One perturbed operand.
#[derive(Debug)]
struct Term<T> {
    /// Source element of every output element; `None` when it is the identity.
    src: Option<Vec<usize>>,
    n_in: usize,
    /// Scale of every output element; `None` for 1.
    scale: Option<Vec<T>>,
}

#[derive(Debug)]
pub struct Affine<T: Scalar> {
    op_type: &'static str,
    n_out: usize,
    terms: Vec<Term<T>>,
    offset: Option<Vec<T>>,
}

impl<T: Scalar> Term<T> {
    #[inline]
    fn at(&self, i: usize) -> (usize, T) {
        (self.src.as_ref().map_or(i, |s| s[i]), self.scale.as_ref().map_or(T::one(), |s| s[i]))
    }
}

impl<T: Scalar> Evaluate<T> for Affine<T> {
    fn forward(&self, inputs: &[&[T]], out: &mut [T]) -> Result<()> {
        for (i, o) in out.iter_mut().enumerate() {
            let mut acc = self.offset.as_ref().map_or(T::zero(), |c| c[i]);
            for (t, x) in self.terms.iter().zip(inputs) {
                let (j, s) = t.at(i);
                acc += s * x[j];
            }
            *o = acc;
        }
        Ok(())
    }
}

impl<T: Scalar> IntervalRule<T> for Affine<T> {
    fn interval(&self, inputs: &[Interval<'_, T>], lower: &mut [T], upper: &mut [T]) -> Result<()> {
        for i in 0..self.n_out {
            let c = self.offset.as_ref().map_or(T::zero(), |c| c[i]);
            let (mut lo, mut hi) = (c, c);
            for (t, x) in self.terms.iter().zip(inputs) {
                let (j, s) = t.at(i);
                if s >= T::zero() {
                    lo += s * x.lower[j];
                    hi += s * x.upper[j];
                } else {
                    lo += s * x.upper[j];
                    hi += s * x.lower[j];
                }
            }
            lower[i] = lo;
            upper[i] = hi;
        }
        Ok(())
    }
}

impl<T: Scalar> LinearRelaxation<T> for Affine<T> {
    fn fp_rounding(&self) -> Option<lirpa_core::FpRounding> {
        // Forward: one product and one sum per operand; backward: a sum over the
        // outputs that read one input element (broadcasting), one product each.
        let most = self
            .terms
            .iter()
            .map(|t| match &t.src {
                None => 1,
                Some(src) => lirpa_core::FpRounding::gather(src.iter().map(|&j| Some(j)), t.n_in, true)
                    .terms
                    .unwrap_or(1),
            })
            .max()
            .unwrap_or(0);
        let terms = most.max(self.terms.len()) + lirpa_core::FpRounding::SLACK;
        Some(lirpa_core::FpRounding { kind: lirpa_core::FpKind::Affine, terms: Some(terms) })
    }
    fn backward(&self, _ctx: &BackwardCtx<'_, T>, a: LinearA<T>) -> Result<BackwardResult<T>> {
        let bias = match &self.offset {
            Some(c) => a.times_vector(c),
            None => LinearBias::zeros(a.spec()),
        };
        let mut inputs = SmallVec::new();
        for t in &self.terms {
            let ak = match (&t.src, &t.scale) {
                (None, None) => a.clone(),
                (src, scale) => a.clone().map(|m| {
                    let ident: Vec<usize>;
                    let src = match src {
                        Some(s) => s.as_slice(),
                        None => {
                            ident = (0..self.n_out).collect();
                            &ident
                        }
                    };
                    Ok(match scale {
                        Some(s) => scatter_columns_scaled(m, src, s, t.n_in),
                        None => scatter_columns(m, src, t.n_in),
                    })
                })?,
            };
            inputs.push(Some(ak));
        }
        Ok(BackwardResult { inputs, bias })
    }

    fn is_affine(&self) -> bool {
        true
    }
}

impl<T: Scalar> Operator<T> for Affine<T> {
    fn op_type(&self) -> &str {
        self.op_type
    }
}

/// An operand of a binary node, broadcast to the output shape.
enum Operand {
    Var { edge: usize, src: Option<Vec<usize>>, n_in: usize },
    Const(Vec<f64>),
}

fn operand(node: &NodeDef<'_>, i: usize, out: &[usize]) -> Result<Operand> {
    let inp = node.input(i)?;
    let src = broadcast_source_index(&inp.shape, out)?;
    Ok(match &inp.value {
        Some(v) => Operand::Const(src.iter().map(|&j| v.data[j]).collect()),
        None => {
            let identity = inp.shape.as_slice() == out;
            Operand::Var { edge: i, src: (!identity).then_some(src), n_in: numel(&inp.shape) }
        }
    })
}

fn out_shape(node: &NodeDef<'_>) -> Result<Shape> {
    broadcast_shapes(&node.input(0)?.shape, &node.input(1)?.shape)
}

fn cast<T: Scalar>(xs: &[f64]) -> Vec<T> {
    xs.iter().map(|&x| T::from_f64(x)).collect()
}

/// Assemble `Σ sign_k · operand_k` for Add and Sub.
fn build_sum<T: Scalar>(node: &NodeDef<'_>, op_type: &'static str, signs: [f64; 2]) -> Result<BuiltOp<T>> {
    let shape = out_shape(node)?;
    let n = numel(&shape);
    let mut terms = Vec::new();
    let mut edges = Vec::new();
    let mut offset: Option<Vec<f64>> = None;
    for (i, &sg) in signs.iter().enumerate() {
        match operand(node, i, &shape)? {
            Operand::Var { edge, src, n_in } => {
                edges.push(edge);
                terms.push(Term { src, n_in, scale: (sg != 1.0).then(|| vec![T::from_f64(sg); n]) });
            }
            Operand::Const(c) => {
                let acc = offset.get_or_insert_with(|| vec![0.0; n]);
                acc.iter_mut().zip(&c).for_each(|(a, b)| *a += sg * b);
            }
        }
    }
    let op = Affine { op_type, n_out: n, terms, offset: offset.map(|c| cast(&c)) };
    Ok(BuiltOp::new(op, &edges, shape))
}

pub fn build_add<T: Scalar>(node: &NodeDef<'_>) -> Result<BuiltOp<T>> {
    build_sum(node, "Add", [1.0, 1.0])
}

pub fn build_sub<T: Scalar>(node: &NodeDef<'_>) -> Result<BuiltOp<T>> {
    build_sum(node, "Sub", [1.0, -1.0])
}

pub fn build_neg<T: Scalar>(node: &NodeDef<'_>) -> Result<BuiltOp<T>> {
    let x = node.input(0)?;
    let n = numel(&x.shape);
    let op = Affine {
        op_type: "Neg",
        n_out: n,
        terms: vec![Term { src: None, n_in: n, scale: Some(vec![-T::one(); n]) }],
        offset: None,
    };
    Ok(BuiltOp::new(op, &[0], x.shape.clone()))
}

/// `x · c` or `x / c` with a constant `c` (either side for Mul).
fn build_scale<T: Scalar>(node: &NodeDef<'_>, op_type: &'static str, divide: bool) -> Result<BuiltOp<T>> {
    let shape = out_shape(node)?;
    let (a, b) = (operand(node, 0, &shape)?, operand(node, 1, &shape)?);
    let (var, c) = match (a, b) {
        (Operand::Var { edge, src, n_in }, Operand::Const(c)) => ((edge, src, n_in), c),
        (Operand::Const(c), Operand::Var { edge, src, n_in }) if !divide => ((edge, src, n_in), c),
        (Operand::Const(_), Operand::Var { .. }) => {
            return Err(Error::unimplemented(
                "division by a perturbed tensor (the bilinear plugin relaxes it)",
            ));
        }
        (Operand::Var { .. }, Operand::Var { .. }) => {
            return Err(Error::unimplemented(format!(
                "product of two perturbed tensors in {op_type} (the bilinear plugin relaxes it)"
            )));
        }
        (Operand::Const(_), Operand::Const(_)) => unreachable!("folded by the graph builder before building"),
    };
    let scale: Vec<T> = if divide {
        if let Some(z) = c.iter().position(|&x| x == 0.0) {
            return Err(Error::Invalid(format!("division by a constant that is zero at element {z}")));
        }
        c.iter().map(|&x| T::from_f64(1.0 / x)).collect()
    } else {
        cast(&c)
    };
    let (edge, src, n_in) = var;
    let op = Affine {
        op_type,
        n_out: numel(&shape),
        terms: vec![Term { src, n_in, scale: Some(scale) }],
        offset: None,
    };
    Ok(BuiltOp::new(op, &[edge], shape))
}

/// `x · c` with a constant `c`. A product of perturbed tensors, `Mul(x, x)` included,
/// is refused here: the bilinear plugin, which refines Mul, relaxes it (its square has
/// the tangent-and-chord relaxation), so `Mul(x, x)` is the same operator whatever else
/// is linked, or refused.
pub fn build_mul<T: Scalar>(node: &NodeDef<'_>) -> Result<BuiltOp<T>> {
    if node.is_const(0) && node.is_const(1) {
        return build_const_binary(node, |a, b| a * b);
    }
    build_scale(node, "Mul", false)
}

pub fn build_div<T: Scalar>(node: &NodeDef<'_>) -> Result<BuiltOp<T>> {
    if node.is_const(0) && node.is_const(1) {
        return build_const_binary(node, |a, b| a / b);
    }
    build_scale(node, "Div", true)
}

/// Both operands constant: compute the result now (the graph stores it as a constant).
fn build_const_binary<T: Scalar>(node: &NodeDef<'_>, f: fn(f64, f64) -> f64) -> Result<BuiltOp<T>> {
    let shape = out_shape(node)?;
    let (a, b) = (node.const_input(0)?, node.const_input(1)?);
    let ia = broadcast_source_index(&a.shape, &shape)?;
    let ib = broadcast_source_index(&b.shape, &shape)?;
    let data: Vec<f64> = ia.iter().zip(&ib).map(|(&i, &j)| f(a.data[i], b.data[j])).collect();
    crate::shape::constant_op(TensorData::float(&shape, data)?)
}

//! Operators that only move elements: views (Reshape, Flatten, Squeeze, Unsqueeze,
//! Identity, Dropout, Cast), permutations (Transpose), and constants (Constant, Shape).

use faer::{MatMut, MatRef, Par};
use lirpa_core::linear::scatter_columns;
use lirpa_core::op::{BackwardCtx, Evaluate, Interval, IntervalRule, LinearRelaxation, NodeDef, Operator};
use lirpa_core::{
    AffineTrain, Attr, BackwardResult, BuiltOp, DType, Error, LinearA, LinearBias, Param, Result, Scalar,
    Shape, TensorData, TrainRule, Trainable, numel,
};
use smallvec::smallvec;

/// The same elements in the same row-major order, under another shape.
#[derive(Debug)]
pub struct View {
    op_type: &'static str,
}

impl<T: Scalar> Evaluate<T> for View {
    fn forward(&self, inputs: &[&[T]], out: &mut [T]) -> Result<()> {
        out.copy_from_slice(inputs[0]);
        Ok(())
    }
}

impl<T: Scalar> IntervalRule<T> for View {
    fn interval(&self, inputs: &[Interval<'_, T>], lower: &mut [T], upper: &mut [T]) -> Result<()> {
        lower.copy_from_slice(inputs[0].lower);
        upper.copy_from_slice(inputs[0].upper);
        Ok(())
    }
    fn interval_is_tight(&self) -> bool {
        true
    }
}

impl<T: Scalar> LinearRelaxation<T> for View {
    fn backward(&self, _ctx: &BackwardCtx<'_, T>, a: LinearA<T>) -> Result<BackwardResult<T>> {
        Ok(BackwardResult::single(a))
    }
    fn fp_rounding(&self) -> Option<lirpa_core::FpRounding> {
        Some(lirpa_core::FpRounding { kind: lirpa_core::FpKind::Exact, terms: Some(0) })
    }
    fn is_affine(&self) -> bool {
        true
    }
    fn trainable(&self) -> Option<&dyn Trainable<T>> {
        Some(self)
    }
}

/// A view is the identity on flattened values, with nothing to train.
impl<T: Scalar> Trainable<T> for View {
    fn params(&self) -> Vec<Param<T>> {
        Vec::new()
    }
    fn with_params(&self, _values: &[&[T]]) -> Result<Box<dyn Operator<T>>> {
        Ok(Box::new(View { op_type: self.op_type }))
    }
    fn export_param(&self, k: usize, _values: &[T]) -> Result<TensorData> {
        Err(Error::Invalid(format!("{}: no parameter {k}", self.op_type)))
    }
    fn rule(&self) -> TrainRule<'_, T> {
        TrainRule::Affine(self)
    }
}

impl<T: Scalar> AffineTrain<T> for View {
    fn apply(&self, x: MatRef<'_, T>, _abs: bool, mut out: MatMut<'_, T>, _par: Par) {
        out.copy_from(x);
    }
    fn apply_t(&self, g: MatRef<'_, T>, _abs: bool, mut out: MatMut<'_, T>, _par: Par) {
        out.copy_from(g);
    }
    fn bias(&self) -> Option<Vec<T>> {
        None
    }
    fn weight_grad(
        &self,
        _g: MatRef<'_, T>,
        _x: MatRef<'_, T>,
        _abs: bool,
        _grads: &mut [Vec<T>],
        _par: Par,
    ) {
    }
    fn bias_grad(&self, _g: &[T], _grads: &mut [Vec<T>]) {}
}

impl<T: Scalar> Operator<T> for View {
    fn op_type(&self) -> &str {
        self.op_type
    }
}

fn view<T: Scalar>(op_type: &'static str, in_shape: &[usize], out: Shape) -> Result<BuiltOp<T>> {
    if numel(in_shape) != lirpa_core::checked_numel(&out)? {
        return Err(Error::Shape(format!("{op_type}: cannot view {in_shape:?} as {out:?}")));
    }
    Ok(BuiltOp::new(View { op_type }, &[0], out))
}

/// Output element `i` is input element `src[i]`.
#[derive(Debug)]
pub struct Permute {
    op_type: &'static str,
    src: Vec<usize>,
}

impl<T: Scalar> Evaluate<T> for Permute {
    fn forward(&self, inputs: &[&[T]], out: &mut [T]) -> Result<()> {
        for (o, &j) in out.iter_mut().zip(&self.src) {
            *o = inputs[0][j];
        }
        Ok(())
    }
}

impl<T: Scalar> IntervalRule<T> for Permute {
    fn interval(&self, inputs: &[Interval<'_, T>], lower: &mut [T], upper: &mut [T]) -> Result<()> {
        for (i, &j) in self.src.iter().enumerate() {
            lower[i] = inputs[0].lower[j];
            upper[i] = inputs[0].upper[j];
        }
        Ok(())
    }
    fn interval_is_tight(&self) -> bool {
        true
    }
}

impl<T: Scalar> LinearRelaxation<T> for Permute {
    fn backward(&self, _ctx: &BackwardCtx<'_, T>, a: LinearA<T>) -> Result<BackwardResult<T>> {
        let n_in = self.src.len();
        Ok(BackwardResult::single(a.map(|m| Ok(scatter_columns(m, &self.src, n_in)))?))
    }
    fn fp_rounding(&self) -> Option<lirpa_core::FpRounding> {
        Some(lirpa_core::FpRounding::gather(self.src.iter().map(|&j| Some(j)), self.src.len(), true))
    }
    fn is_affine(&self) -> bool {
        true
    }
}

impl<T: Scalar> Operator<T> for Permute {
    fn op_type(&self) -> &str {
        self.op_type
    }
}

/// A node with no edges whose value is fixed (folded into a constant by the builder).
#[derive(Debug)]
pub struct ConstOp<T> {
    value: Vec<T>,
}

impl<T: Scalar> Evaluate<T> for ConstOp<T> {
    fn forward(&self, _inputs: &[&[T]], out: &mut [T]) -> Result<()> {
        out.copy_from_slice(&self.value);
        Ok(())
    }
}

impl<T: Scalar> IntervalRule<T> for ConstOp<T> {
    fn interval(&self, _inputs: &[Interval<'_, T>], lower: &mut [T], upper: &mut [T]) -> Result<()> {
        lower.copy_from_slice(&self.value);
        upper.copy_from_slice(&self.value);
        Ok(())
    }
}

impl<T: Scalar> LinearRelaxation<T> for ConstOp<T> {
    fn backward(&self, _ctx: &BackwardCtx<'_, T>, a: LinearA<T>) -> Result<BackwardResult<T>> {
        let bias: LinearBias<T> = a.times_vector(&self.value);
        Ok(BackwardResult { inputs: smallvec![], bias })
    }
    fn fp_rounding(&self) -> Option<lirpa_core::FpRounding> {
        Some(lirpa_core::FpRounding { kind: lirpa_core::FpKind::Affine, terms: None })
    }
    fn is_affine(&self) -> bool {
        true
    }
}

impl<T: Scalar> Operator<T> for ConstOp<T> {
    fn op_type(&self) -> &str {
        "Constant"
    }
}

/// A builder result for a value known at build time.
pub fn constant_op<T: Scalar>(value: TensorData) -> Result<BuiltOp<T>> {
    let shape = value.shape.clone();
    let op = ConstOp { value: value.data.iter().map(|&x| T::from_f64(x)).collect() };
    Ok(BuiltOp::new(op, &[], shape))
}

pub fn build_constant<T: Scalar>(node: &NodeDef<'_>) -> Result<BuiltOp<T>> {
    let first = node.attrs.0.iter().next();
    if let Some((name, _)) = first {
        node.attrs.mark(name);
    }
    let value = match first {
        Some((name, attr)) => match (name.as_str(), attr) {
            ("value", Attr::Tensor(t)) => t.clone(),
            ("value_float", Attr::Float(f)) => TensorData::scalar(*f),
            ("value_floats", Attr::Floats(v)) => TensorData::float(&[v.len()], v.clone())?,
            ("value_int", Attr::Int(i)) => TensorData::new(&[], DType::Int, vec![*i as f64])?,
            ("value_ints", Attr::Ints(v)) => {
                TensorData::new(&[v.len()], DType::Int, v.iter().map(|&x| x as f64).collect())?
            }
            (other, _) => return Err(Error::unimplemented(format!("Constant with attribute '{other}'"))),
        },
        None => return Err(Error::Invalid("Constant without a value".into())),
    };
    value.check_finite("Constant value")?;
    constant_op(value)
}

/// ConstantOfShape: a tensor of the shape given by a constant input, filled with the
/// one-element `value` attribute (default a float 0).
pub fn build_constant_of_shape<T: Scalar>(node: &NodeDef<'_>) -> Result<BuiltOp<T>> {
    let dims = node
        .const_input(0)
        .map_err(|_| Error::unimplemented("ConstantOfShape with a shape computed from perturbed values"))?
        .to_i64()?;
    if let Some(d) = dims.iter().find(|&&d| d < 0) {
        return Err(Error::Shape(format!("ConstantOfShape with a negative dimension {d}")));
    }
    let shape: Vec<usize> = dims.iter().map(|&d| d as usize).collect();
    let (dtype, fill) = match node.attrs.tensor("value")? {
        None => (DType::Float, 0.0),
        Some(t) if t.numel() == 1 => (t.dtype, t.data[0]),
        Some(t) => {
            return Err(Error::Shape(format!("ConstantOfShape value has {} elements, not 1", t.numel())));
        }
    };
    let value = TensorData::new(&shape, dtype, vec![fill; lirpa_core::checked_numel(&shape)?])?;
    value.check_finite("ConstantOfShape value")?;
    constant_op(value)
}

pub fn build_identity<T: Scalar>(node: &NodeDef<'_>) -> Result<BuiltOp<T>> {
    let x = node.input(0)?;
    view(if node.op_type == "Dropout" { "Dropout" } else { "Identity" }, &x.shape, x.shape.clone())
}

pub fn build_cast<T: Scalar>(node: &NodeDef<'_>) -> Result<BuiltOp<T>> {
    let x = node.input(0)?;
    let to = node.attrs.int_or("to", 1)?;
    // FLOAT, FLOAT16, DOUBLE, BFLOAT16: a no-op for bounds.
    if matches!(to, 1 | 10 | 11 | 16) {
        return view("Cast", &x.shape, x.shape.clone());
    }
    match &x.value {
        Some(v) => {
            let data =
                v.data.iter().map(|x| if to == 9 { (*x != 0.0) as u8 as f64 } else { x.trunc() }).collect();
            constant_op(TensorData::new(&v.shape, DType::Int, data)?)
        }
        None => Err(Error::unimplemented(format!("Cast of a perturbed tensor to element type {to}"))),
    }
}

fn norm_axis(axis: i64, rank: usize) -> Result<usize> {
    let r = rank as i64;
    let a = if axis < 0 { axis + r } else { axis };
    if a < 0 || a > r {
        return Err(Error::Invalid(format!("axis {axis} out of range for rank {rank}")));
    }
    Ok(a as usize)
}

pub fn build_flatten<T: Scalar>(node: &NodeDef<'_>) -> Result<BuiltOp<T>> {
    let x = node.input(0)?;
    let axis = norm_axis(node.attrs.int_or("axis", 1)?, x.shape.len())?;
    let outer = x.shape[..axis].iter().product();
    let inner = x.shape[axis..].iter().product();
    view("Flatten", &x.shape, smallvec![outer, inner])
}

pub fn build_reshape<T: Scalar>(node: &NodeDef<'_>) -> Result<BuiltOp<T>> {
    let x = node.input(0)?;
    let target =
        node.const_input(1).map_err(|_| Error::unimplemented("Reshape with a computed shape"))?.to_i64()?;
    let allow_zero = node.attrs.int_or("allowzero", 0)? != 0;
    let n = numel(&x.shape);
    let mut out: Shape = Shape::new();
    let mut infer = None;
    for (i, &d) in target.iter().enumerate() {
        match d {
            -1 if infer.is_none() => {
                infer = Some(i);
                out.push(1);
            }
            0 if !allow_zero => out
                .push(*x.shape.get(i).ok_or_else(|| Error::Shape("Reshape: 0 past the input rank".into()))?),
            d if d >= 0 => out.push(d as usize),
            _ => return Err(Error::Shape(format!("Reshape: invalid target shape {target:?}"))),
        }
    }
    if let Some(i) = infer {
        let known: usize = out.iter().enumerate().filter(|(j, _)| *j != i).map(|(_, d)| d).product();
        if known == 0 || !n.is_multiple_of(known) {
            return Err(Error::Shape(format!("Reshape: cannot reshape {:?} to {target:?}", x.shape)));
        }
        out[i] = n / known;
    }
    view("Reshape", &x.shape, out)
}

/// Axes of Squeeze/Unsqueeze: an attribute before opset 13, an input after.
fn axes(node: &NodeDef<'_>) -> Result<Option<Vec<i64>>> {
    if let Some(a) = node.attrs.ints("axes")? {
        return Ok(Some(a.to_vec()));
    }
    match node.inputs.get(1).and_then(|x| x.as_ref()) {
        Some(_) => Ok(Some(node.const_input(1)?.to_i64()?)),
        None => Ok(None),
    }
}

pub fn build_squeeze<T: Scalar>(node: &NodeDef<'_>) -> Result<BuiltOp<T>> {
    let x = node.input(0)?;
    let r = x.shape.len();
    let out: Shape = match axes(node)? {
        None => x.shape.iter().copied().filter(|&d| d != 1).collect(),
        Some(ax) => {
            let ax: Vec<usize> = ax.iter().map(|&a| norm_axis(a, r)).collect::<Result<_>>()?;
            for &a in &ax {
                if a >= r || x.shape[a] != 1 {
                    return Err(Error::Shape(format!("Squeeze: axis {a} of {:?} is not 1", x.shape)));
                }
            }
            x.shape.iter().enumerate().filter(|(i, _)| !ax.contains(i)).map(|(_, &d)| d).collect()
        }
    };
    view("Squeeze", &x.shape, out)
}

pub fn build_unsqueeze<T: Scalar>(node: &NodeDef<'_>) -> Result<BuiltOp<T>> {
    let x = node.input(0)?;
    let ax = axes(node)?.ok_or_else(|| Error::Invalid("Unsqueeze needs axes".into()))?;
    let r = x.shape.len() + ax.len();
    let mut ax: Vec<usize> = ax.iter().map(|&a| norm_axis(a, r)).collect::<Result<_>>()?;
    ax.sort_unstable();
    let mut out = Shape::new();
    let mut it = x.shape.iter();
    for i in 0..r {
        if ax.contains(&i) {
            out.push(1);
        } else {
            out.push(*it.next().ok_or_else(|| Error::Shape("Unsqueeze: bad axes".into()))?);
        }
    }
    view("Unsqueeze", &x.shape, out)
}

pub fn build_transpose<T: Scalar>(node: &NodeDef<'_>) -> Result<BuiltOp<T>> {
    let x = node.input(0)?;
    let perm: Vec<usize> = match node.attrs.ints("perm")? {
        Some(p) => p.iter().map(|&a| norm_axis(a, x.shape.len())).collect::<Result<_>>()?,
        None => (0..x.shape.len()).rev().collect(),
    };
    let (out, src) = lirpa_core::tensor::transpose_source_index(&x.shape, &perm)?;
    if src.iter().enumerate().all(|(i, &j)| i == j) {
        return view("Transpose", &x.shape, out);
    }
    Ok(BuiltOp::new(Permute { op_type: "Transpose", src }, &[0], out))
}

pub fn build_shape<T: Scalar>(node: &NodeDef<'_>) -> Result<BuiltOp<T>> {
    let x = node.input(0)?;
    let r = x.shape.len() as i64;
    let clamp = |a: i64| if a < 0 { (a + r).max(0) } else { a.min(r) } as usize;
    let start = clamp(node.attrs.int_or("start", 0)?);
    let end = clamp(node.attrs.int_or("end", r)?);
    let dims: Vec<f64> = x.shape[start..end.max(start)].iter().map(|&d| d as f64).collect();
    constant_op(TensorData::new(&[dims.len()], DType::Int, dims)?)
}

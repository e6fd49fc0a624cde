//! The operator traits. An operator is a node's semantics, split by concern:
//!
//! - [`Evaluate`]: the clean forward computation;
//! - [`IntervalRule`]: interval bound propagation (IBP);
//! - [`LinearRelaxation`]: the backward (CROWN) rule, which maps linear coefficients
//!   on the output to linear coefficients on the inputs plus a bias;
//! - [`Operator`]: the object the graph stores, bundling the three. Later concerns
//!   (forward-mode rules, optimizable relaxation parameters) are reached through
//!   accessor methods with a `None` default, so existing plugins keep compiling.
//!
//! A relaxation never depends on the engine that uses it: it sees only its own input
//! bounds and options through [`BackwardCtx`].

use crate::linear::{BackwardResult, FormInput, LinearA, LinearForm};
use crate::{Attributes, Result, Scalar, Shape, TensorData, Window};
use faer::{Mat, MatRef, Par};
use serde::{Deserialize, Serialize};
use smallvec::SmallVec;
use std::collections::BTreeMap;
use std::fmt::Debug;

/// Borrowed element-wise bounds of one tensor.
#[derive(Clone, Copy, Debug)]
pub struct Interval<'a, T> {
    pub lower: &'a [T],
    pub upper: &'a [T],
}

/// Clean forward evaluation on flattened row-major values. Input and output shapes
/// were fixed when the operator was built.
pub trait Evaluate<T: Scalar> {
    /// `inputs[i]` is the value of graph input edge `i`; `out` has the output's length.
    fn forward(&self, inputs: &[&[T]], out: &mut [T]) -> Result<()>;

    /// Evaluate `rows` independent points at once (the adjoint sweep of α-CROWN runs
    /// one point per specification row). An input is either the same for every row or
    /// given per row, row-major `rows × numel`; `out` is row-major `rows × numel(output)`.
    /// The default calls [`forward`](Self::forward) row by row; operators with a
    /// batched kernel (a convolution as one matrix product) override it.
    fn forward_batch(&self, inputs: &[BatchInput<'_, T>], rows: usize, out: &mut [T]) -> Result<()> {
        if rows == 0 {
            return Ok(());
        }
        let n = out.len() / rows;
        let mut args: smallvec::SmallVec<[&[T]; 4]> = smallvec::SmallVec::with_capacity(inputs.len());
        for r in 0..rows {
            args.clear();
            args.extend(inputs.iter().map(|x| x.row(r, rows)));
            self.forward(&args, &mut out[r * n..(r + 1) * n])?;
        }
        Ok(())
    }
}

/// One input of [`Evaluate::forward_batch`].
#[derive(Clone, Copy, Debug)]
pub enum BatchInput<'a, T> {
    /// The same value for every row.
    Shared(&'a [T]),
    /// One value per row, row-major `rows × numel`.
    Rows(&'a [T]),
}

impl<'a, T> BatchInput<'a, T> {
    /// The value of row `r` of `rows`.
    pub fn row(&self, r: usize, rows: usize) -> &'a [T] {
        match *self {
            BatchInput::Shared(v) => v,
            BatchInput::Rows(v) => {
                let n = v.len() / rows.max(1);
                &v[r * n..(r + 1) * n]
            }
        }
    }
}

/// Interval bound propagation.
pub trait IntervalRule<T: Scalar> {
    /// Element-wise bounds of the output from element-wise bounds of the inputs.
    fn interval(&self, inputs: &[Interval<'_, T>], lower: &mut [T], upper: &mut [T]) -> Result<()>;

    /// True when interval propagation from exact input bounds already gives the best
    /// element-wise bounds of the output (monotone element-wise functions such as
    /// ReLU). The engine then bounds this node by IBP instead of a backward pass.
    fn interval_is_tight(&self) -> bool {
        false
    }
}

/// Options read by relaxations, keyed by name. Core knows no key: a plugin declares
/// each of its options with a [`RelaxOption`] (name, help, validation) and reads it
/// back typed (the ReLU plugin's `relu_lower_slope`, for instance). Only declared keys
/// with valid values get in ([`set`](Self::set), and deserialization, which reads a
/// map of strings), so a relaxation can parse its value without a failure path.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "BTreeMap<String, String>", into = "BTreeMap<String, String>")]
pub struct RelaxOptions {
    values: BTreeMap<String, String>,
}

/// A relaxation option a plugin declares (`inventory::submit!`, through
/// `lirpa_core::reexport::inventory`): its key, what it means and which values it takes.
pub struct RelaxOption {
    pub key: &'static str,
    /// The crate that declared it, for diagnostics.
    pub plugin: &'static str,
    /// What it chooses and its values, for messages and `--help`-like listings.
    pub help: &'static str,
    /// Accept a value or say why not.
    pub check: fn(&str) -> Result<()>,
}

inventory::collect!(RelaxOption);

impl RelaxOptions {
    /// The value of `key`, if set (a relaxation takes its own default otherwise).
    pub fn get(&self, key: &str) -> Option<&str> {
        self.values.get(key).map(String::as_str)
    }

    /// Set `key` to `value`; an error when no linked plugin declares `key`, or when its
    /// [`RelaxOption::check`] refuses the value.
    pub fn set(&mut self, key: &str, value: &str) -> Result<()> {
        let Some(opt) = inventory::iter::<RelaxOption>.into_iter().find(|o| o.key == key) else {
            let mut known: Vec<&str> = inventory::iter::<RelaxOption>.into_iter().map(|o| o.key).collect();
            known.sort_unstable();
            return Err(crate::Error::Invalid(format!(
                "unknown relaxation option '{key}' (declared by the linked plugins: {})",
                known.join(", ")
            )));
        };
        (opt.check)(value).map_err(|e| {
            crate::Error::Invalid(format!("relaxation option '{key}' ({}): {e}; {}", opt.plugin, opt.help))
        })?;
        self.values.insert(key.to_string(), value.to_string());
        Ok(())
    }

    /// Every option declared by the linked plugins, by key.
    pub fn declared() -> Vec<&'static RelaxOption> {
        let mut v: Vec<_> = inventory::iter::<RelaxOption>.into_iter().collect();
        v.sort_by_key(|o| o.key);
        v
    }
}

impl TryFrom<BTreeMap<String, String>> for RelaxOptions {
    type Error = crate::Error;
    fn try_from(map: BTreeMap<String, String>) -> Result<Self> {
        let mut o = RelaxOptions::default();
        for (k, v) in &map {
            o.set(k, v)?;
        }
        Ok(o)
    }
}

impl From<RelaxOptions> for BTreeMap<String, String> {
    fn from(o: RelaxOptions) -> Self {
        o.values
    }
}

/// What a backward rule may look at.
pub struct BackwardCtx<'a, T: Scalar> {
    /// Bounds of each input edge, where the engine computed them. An operator listed
    /// an input in [`LinearRelaxation::needs_input_bounds`] gets `Some` there.
    pub input_bounds: &'a [Option<Interval<'a, T>>],
    pub options: &'a RelaxOptions,
    /// Parallelism allowed for dense products.
    pub par: Par,
}

impl<'a, T: Scalar> BackwardCtx<'a, T> {
    /// Bounds of input `i`, or an error naming the missing bound.
    pub fn bounds(&self, i: usize) -> Result<Interval<'a, T>> {
        self.input_bounds.get(i).copied().flatten().ok_or_else(|| {
            crate::Error::Invalid(format!("bounds of input {i} are needed but were not computed"))
        })
    }
}

/// The backward (CROWN) rule.
pub trait LinearRelaxation<T: Scalar> {
    /// Given coefficients `a` on this node's output, return coefficients on each input
    /// edge and the bias, such that the bound stays valid.
    fn backward(&self, ctx: &BackwardCtx<'_, T>, a: LinearA<T>) -> Result<BackwardResult<T>>;

    /// Input edges whose bounds this relaxation needs (pre-activation nodes).
    fn needs_input_bounds(&self) -> &[usize] {
        &[]
    }

    /// Among the elements of input `input`, the ones whose bounds matter beyond what
    /// `lower`/`upper` already give (e.g. unstable ReLU inputs); `None` means all of
    /// them. The engine refines only these with a backward pass.
    fn refine_mask(&self, _input: usize, _lower: &[T], _upper: &[T]) -> Option<Vec<bool>> {
        None
    }

    /// True for operators that are exactly affine in their perturbed inputs (no
    /// relaxation): the engine may pass a specification through them.
    fn is_affine(&self) -> bool {
        false
    }

    /// True for a splittable piecewise-linear activation (ReLU, LeakyReLU): element-wise
    /// on input 0, linear on each side of one breakpoint at 0, and relaxed exactly
    /// wherever its input's bounds do not straddle 0. Branch and bound may then split
    /// the elements of input 0 at 0 (`x ≤ 0` or `x ≥ 0`) and bound each side.
    fn is_splittable_activation(&self) -> bool {
        false
    }

    /// True when [`backward`](Self::backward) accepts coefficients in windowed form
    /// (`a.window` is `Some`, see [`crate::window`]) on this node's output and returns
    /// windowed or dense coefficients for its inputs. Operators that return `false`
    /// always receive dense coefficients.
    fn supports_window(&self) -> bool {
        false
    }

    /// The forward-mode rule (auto_LiRPA's `bound_forward`): linear bounds of this node's
    /// elements in terms of the perturbed inputs (`dim` columns), from those of its
    /// inputs. `ctx` carries the inputs' bounds as for `backward`.
    ///
    /// The default derives it from [`backward`](Self::backward) with identity
    /// coefficients (each element's lower and upper linear bound in terms of the inputs,
    /// see [`crate::linear::forward_from_backward`]), so every operator has a forward rule;
    /// operators override it where a direct rule is cheaper (e.g. element-wise ones).
    fn forward_linear(
        &self,
        ctx: &BackwardCtx<'_, T>,
        inputs: &[FormInput<'_, T>],
        n_out: usize,
        dim: usize,
    ) -> Result<LinearForm<T>> {
        let eye = faer::Mat::<T>::identity(n_out, n_out);
        let res = self.backward(ctx, LinearA::both(eye, true, true))?;
        crate::linear::forward_from_backward(res, inputs, n_out, dim, ctx.par)
    }

    /// How this operator's arithmetic rounds, for the floating-point-sound mode (see
    /// [`crate::fpsound`]). `None` (the default): that mode refuses the operator by name
    /// rather than bound it unsoundly.
    fn fp_rounding(&self) -> Option<crate::FpRounding> {
        None
    }

    /// For an affine operator whose constant term was folded from several model
    /// constants (BatchNormalization's `B − mean·scale/√(var + ε)`), per output element
    /// an upper bound of the magnitudes of the folded terms (`|B| + |mean·scale/√(var + ε)|`),
    /// which the cancellation in the fold can make much larger than the constant itself:
    /// the floating-point-sound mode adds it to the element's magnitude so that the
    /// fold's rounding is covered. `None` (the default): the constant is a model constant.
    fn fp_folded_magnitude(&self) -> Option<Vec<f64>> {
        None
    }

    /// Optimizable relaxation parameters (α-CROWN), if this relaxation has any.
    fn optimizable(&self) -> Option<&dyn OptimizableRelaxation<T>> {
        None
    }

    /// The trainable side of this operator (see [`crate::train`]), if it has one.
    /// Training refuses, by node and operator name, a graph with an operator without it.
    fn trainable(&self) -> Option<&dyn crate::train::Trainable<T>> {
        None
    }

    /// For an element-wise operator (one input edge; output element `j` depends on input
    /// element `j` only): the lines its relaxation takes on the input bounds in `ctx`,
    /// the same [`backward`](Self::backward) applies with the sign split
    /// ([`ElementwiseRelaxation::backward`](crate::ElementwiseRelaxation::backward)).
    /// When given, [`relaxed_forward`](Self::relaxed_forward) need not be written: its
    /// default evaluates these lines. `None` (the default) for other operators.
    fn elementwise_relaxation(
        &self,
        _ctx: &BackwardCtx<'_, T>,
    ) -> Option<Result<crate::ElementwiseRelaxation<T>>> {
        None
    }

    /// The adjoint of [`backward`](Self::backward), for gradients of a bound: evaluate,
    /// row by row, the linear lines `backward` chose for the (dense) coefficients `a`
    /// it received on this node's output, at the points `z`.
    ///
    /// `upper` tells which side `a` belongs to (coefficients of an upper bound take the
    /// upper line where they are positive). `z[i]` holds the values of input edge `i`,
    /// row-major `a.nrows() × numel(input i)`; `out` receives this node's values, row-major
    /// `a.nrows() × numel(output)`. Affine operators ([`is_affine`](Self::is_affine)) need
    /// not implement it: the engine evaluates them with [`Evaluate::forward`] row by row.
    /// The default evaluates the lines of
    /// [`elementwise_relaxation`](Self::elementwise_relaxation) where the operator gives
    /// them, and otherwise refuses, naming the missing piece.
    fn relaxed_forward(
        &self,
        ctx: &BackwardCtx<'_, T>,
        a: MatRef<'_, T>,
        upper: bool,
        z: &[&[T]],
        out: &mut [T],
    ) -> Result<()> {
        match (self.elementwise_relaxation(ctx), z.first()) {
            (Some(r), Some(z)) => {
                r?.relaxed_forward(a, upper, z, out);
                Ok(())
            }
            _ => Err(crate::Error::unimplemented(
                "relaxed forward evaluation (gradient of an optimized bound)",
            )),
        }
    }
}

/// Relaxation parameters per specification row for each side of a backward pass,
/// row-major `rows × width` (see [`OptimizableRelaxation`]). A side is `None` when that
/// side's coefficients are absent.
#[derive(Clone, Copy, Debug)]
pub struct SideParams<'a, T> {
    pub lower: Option<&'a [T]>,
    pub upper: Option<&'a [T]>,
}

/// A relaxation with free parameters (α-CROWN): any parameter value in the feasible
/// set gives a sound relaxation, and the engine optimizes them by projected gradient
/// steps on the bound itself.
///
/// Parameters are kept per specification row of the pass that uses them (auto_LiRPA
/// keys them by the node whose bound is computed, then by its rows) and per side: the
/// lower-bound pass and the upper-bound pass each have their own. One row holds
/// `width` values; their meaning is the operator's (ReLU: one lower slope per
/// element; an S-shaped function may keep tangent points, several per element).
///
/// Contract, checked by the engine's gradient test: for parameters `p` from
/// [`init_params`](Self::init_params), [`backward_with`](Self::backward_with) returns
/// exactly what [`LinearRelaxation::backward`] returns (iteration 0 is CROWN), and
/// [`param_grad`](Self::param_grad) is the derivative of `Σ_r a_r · out_r` (with `out` from
/// [`relaxed_forward_with`](Self::relaxed_forward_with)) with respect to the parameters,
/// at fixed `z` and sign pattern of `a`.
pub trait OptimizableRelaxation<T: Scalar> {
    /// Initial parameters of one row, from the CROWN relaxation on the current input
    /// bounds; its length is the row width.
    fn init_params(&self, ctx: &BackwardCtx<'_, T>) -> Result<Vec<T>>;

    /// Project one row onto the feasible set, in place.
    fn project(&self, ctx: &BackwardCtx<'_, T>, row: &mut [T]);

    /// True when [`backward_with`](Self::backward_with) accepts windowed coefficients
    /// (see [`LinearRelaxation::supports_window`]; row `r`'s parameters stay indexed by
    /// node element). The engine then also calls the `*_window` variants of the adjoint
    /// methods below, whose defaults convert to dense. The default: the engine converts
    /// windows to dense before calling anything.
    fn supports_window(&self) -> bool {
        false
    }

    /// The backward rule with the given parameters (row `r` of each side's parameters
    /// serves row `r` of that side's coefficients, which are dense).
    fn backward_with(
        &self,
        ctx: &BackwardCtx<'_, T>,
        a: LinearA<T>,
        params: SideParams<'_, T>,
    ) -> Result<BackwardResult<T>>;

    /// [`LinearRelaxation::relaxed_forward`] with the given parameters of side `upper`.
    fn relaxed_forward_with(
        &self,
        ctx: &BackwardCtx<'_, T>,
        params: &[T],
        a: MatRef<'_, T>,
        upper: bool,
        z: &[&[T]],
        out: &mut [T],
    ) -> Result<()>;

    /// The gradient of the bound of side `upper` with respect to that side's parameters,
    /// given the coefficients `a` this node received and the values `z` of its inputs in
    /// the linearized network at the optimal point (row-major, as in
    /// [`LinearRelaxation::relaxed_forward`]). Written into `grad` (`rows × width`).
    fn param_grad(
        &self,
        ctx: &BackwardCtx<'_, T>,
        params: &[T],
        a: MatRef<'_, T>,
        upper: bool,
        z: &[&[T]],
        grad: &mut [T],
    ) -> Result<()>;

    /// How the bound of side `upper` depends on this relaxation's input bounds (the
    /// chord of a ReLU moves with `l` and `u`): adds `Σ_r weight[r] · ∂(a_r · out_r)/∂l`
    /// to `grad_lower[i]` (and likewise for `u`) for each input edge `i` listed in
    /// [`LinearRelaxation::needs_input_bounds`] (`grad_lower[i]` has that input's length;
    /// other entries are empty). This lets the engine optimize the parameters of
    /// intermediate bounds through the final bound (auto_LiRPA's joint optimization). The
    /// default treats the input bounds as constants (a zero contribution), which only makes
    /// the optimization less effective, never unsound.
    #[allow(clippy::too_many_arguments)]
    fn bounds_grad(
        &self,
        _ctx: &BackwardCtx<'_, T>,
        _params: &[T],
        _a: MatRef<'_, T>,
        _upper: bool,
        _z: &[&[T]],
        _weight: &[T],
        _grad_lower: &mut [Vec<T>],
        _grad_upper: &mut [Vec<T>],
    ) -> Result<()> {
        Ok(())
    }

    /// [`relaxed_forward_with`](Self::relaxed_forward_with) for coefficients `a` in the
    /// layout of `window`. Values of `out` at elements outside a row's window are never
    /// read (nothing downstream of this node in the pass depends on them). The default
    /// converts `a` to dense.
    #[allow(clippy::too_many_arguments)]
    fn relaxed_forward_with_window(
        &self,
        ctx: &BackwardCtx<'_, T>,
        params: &[T],
        a: &Mat<T>,
        window: &Window,
        upper: bool,
        z: &[&[T]],
        out: &mut [T],
    ) -> Result<()> {
        self.relaxed_forward_with(ctx, params, window.to_dense(a).as_ref(), upper, z, out)
    }

    /// [`param_grad`](Self::param_grad) for coefficients in the layout of `window`; the
    /// default converts them to dense.
    #[allow(clippy::too_many_arguments)]
    fn param_grad_window(
        &self,
        ctx: &BackwardCtx<'_, T>,
        params: &[T],
        a: &Mat<T>,
        window: &Window,
        upper: bool,
        z: &[&[T]],
        grad: &mut [T],
    ) -> Result<()> {
        self.param_grad(ctx, params, window.to_dense(a).as_ref(), upper, z, grad)
    }

    /// [`bounds_grad`](Self::bounds_grad) for coefficients in the layout of `window`; the
    /// default converts them to dense.
    #[allow(clippy::too_many_arguments)]
    fn bounds_grad_window(
        &self,
        ctx: &BackwardCtx<'_, T>,
        params: &[T],
        a: &Mat<T>,
        window: &Window,
        upper: bool,
        z: &[&[T]],
        weight: &[T],
        grad_lower: &mut [Vec<T>],
        grad_upper: &mut [Vec<T>],
    ) -> Result<()> {
        self.bounds_grad(ctx, params, window.to_dense(a).as_ref(), upper, z, weight, grad_lower, grad_upper)
    }
}

/// A node's semantics as stored in the graph.
pub trait Operator<T: Scalar>:
    Evaluate<T> + IntervalRule<T> + LinearRelaxation<T> + Debug + Send + Sync
{
    /// The operator type it was built from (e.g. `"Gemm"`).
    fn op_type(&self) -> &str;
}

/// One input of a node being built: its shape and, if known at build time, its value.
#[derive(Clone, Debug)]
pub struct InputDef {
    pub shape: Shape,
    /// Shared, so that handing a large weight to several builders copies nothing.
    pub value: Option<std::sync::Arc<TensorData>>,
    /// The graph value feeding this input (its node id), when the builder knows it:
    /// two inputs with the same source are the same tensor (e.g. `Mul(x, x)`).
    pub source: Option<usize>,
}

/// Everything a builder knows about the node it builds.
#[derive(Clone, Copy, Debug)]
pub struct NodeDef<'a> {
    pub name: &'a str,
    pub op_type: &'a str,
    pub domain: &'a str,
    /// Version of the operator set the model declares for this node's domain.
    pub opset: i64,
    pub attrs: &'a Attributes,
    /// Inputs in order; `None` for an omitted optional input.
    pub inputs: &'a [Option<InputDef>],
}

impl<'a> NodeDef<'a> {
    /// Input `i`, or an error if it is missing.
    pub fn input(&self, i: usize) -> Result<&'a InputDef> {
        self.inputs
            .get(i)
            .and_then(|x| x.as_ref())
            .ok_or_else(|| crate::Error::Invalid(format!("input {i} is missing")))
    }

    /// The value of input `i`, which must be a constant.
    pub fn const_input(&self, i: usize) -> Result<&'a TensorData> {
        self.input(i)?.value.as_deref().ok_or_else(|| {
            crate::Error::Invalid(format!(
                "input {i} must be a constant (perturbed values are not supported here)"
            ))
        })
    }

    /// Whether inputs `i` and `j` are present and known to be the same tensor.
    pub fn same_source(&self, i: usize, j: usize) -> bool {
        let src = |k: usize| self.inputs.get(k).and_then(|x| x.as_ref()).and_then(|x| x.source);
        matches!((src(i), src(j)), (Some(a), Some(b)) if a == b)
    }

    /// Whether input `i` is present and constant.
    pub fn is_const(&self, i: usize) -> bool {
        matches!(self.inputs.get(i), Some(Some(InputDef { value: Some(_), .. })))
    }
}

/// What a builder returns: the operator, which node inputs become graph edges (in the
/// order the operator's methods see them), and the output shape. Inputs that are not
/// edges must be constants the operator captured.
#[derive(Debug)]
pub struct BuiltOp<T: Scalar> {
    pub op: Box<dyn Operator<T>>,
    pub edges: SmallVec<[usize; 4]>,
    pub output_shape: Shape,
}

impl<T: Scalar> BuiltOp<T> {
    pub fn new(op: impl Operator<T> + 'static, edges: &[usize], output_shape: Shape) -> Self {
        BuiltOp { op: Box::new(op), edges: edges.into(), output_shape }
    }
}

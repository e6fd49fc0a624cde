//! What training needs of an operator: its trainable constants and the vector-Jacobian
//! products of its clean evaluation, its interval rule and its backward relaxation with
//! respect to its inputs and to those constants.
//!
//! An operator opts in through [`LinearRelaxation::trainable`](crate::LinearRelaxation::trainable);
//! one without it is refused by name wherever a gradient is needed (never a silent zero
//! gradient). Every method works on a *batch*: `rows` independent points (samples, or
//! specification rows of several samples), each a row of a faer matrix, so that the
//! engine's products are wide.
//!
//! Two shapes of rule cover the operator families a trained network is made of:
//! - [`AffineTrain`]: `y = W x + b` for a linear map `W` (a dense layer, a convolution,
//!   a batch normalization at inference, a reshape) with trainable `W` and `b`. Its
//!   backward relaxation is exact (`A ↦ A W`), its interval rule is the centre/radius
//!   form (`W·mid + b`, `|W|·rad`), so the engine needs only products by `W`, `|W|`, their
//!   transposes, and the weight gradient of `Σ_r g_r · (W x_r)`.
//! - [`ElementwiseTrain`]: `y_i = f(x_i)` for a non-decreasing `f` (ReLU, sigmoid, …):
//!   the value and derivative of `f`, the relaxation lines the backward rule uses, and
//!   the derivatives of those lines with respect to the input bounds (CROWN-IBP's
//!   gradient flows through them into the interval bounds).

use crate::{ElementwiseRelaxation, Operator, RelaxOptions, Result, Scalar, TensorData};
use faer::{MatMut, MatRef, Par};

/// One trainable constant of an operator.
#[derive(Clone, Debug)]
pub struct Param<T> {
    /// The node input (in the model's own numbering, e.g. 1 for a Gemm's `B`) whose
    /// constant this parameter is: where it is written back.
    pub input: usize,
    /// Current values, in the operator's own layout.
    pub values: Vec<T>,
}

/// The trainable side of an operator.
pub trait Trainable<T: Scalar>: Send + Sync {
    /// The trainable constants, in a fixed order. May be empty (a reshape).
    fn params(&self) -> Vec<Param<T>>;

    /// The same operator with new values of its parameters (in the order and layouts of
    /// [`params`](Self::params)).
    fn with_params(&self, values: &[&[T]]) -> Result<Box<dyn Operator<T>>>;

    /// The model tensor of parameter `k` with values `values` (layout of `params`), in
    /// the model's layout, for writing a trained model back.
    fn export_param(&self, k: usize, values: &[T]) -> Result<TensorData>;

    /// The rule the engine differentiates.
    fn rule(&self) -> TrainRule<'_, T>;
}

/// See the module documentation.
#[derive(Clone, Copy)]
pub enum TrainRule<'a, T: Scalar> {
    Affine(&'a dyn AffineTrain<T>),
    Elementwise(&'a dyn ElementwiseTrain<T>),
}

/// `y = W x + b` on each row. Matrices hold one point per row: `x` is `rows × n_in`,
/// `y` is `rows × n_out`.
pub trait AffineTrain<T: Scalar>: Send + Sync {
    /// `out = x · Wᵀ` (with `|W|` when `abs`), no bias.
    fn apply(&self, x: MatRef<'_, T>, abs: bool, out: MatMut<'_, T>, par: Par);

    /// `out = g · W` (with `|W|` when `abs`): the transpose, which is also the backward
    /// rule's map of coefficients.
    fn apply_t(&self, g: MatRef<'_, T>, abs: bool, out: MatMut<'_, T>, par: Par);

    /// The bias expanded to the `n_out` output elements, if any.
    fn bias(&self) -> Option<Vec<T>>;

    /// Add to `grads` (one vector per parameter, layouts of [`Trainable::params`]) the
    /// gradient of `Σ_r g_r · (W' x_r)` with respect to the weight, where `W'` is `W` or,
    /// when `abs`, `|W|` (whose derivative is `sign(W)`).
    fn weight_grad(&self, g: MatRef<'_, T>, x: MatRef<'_, T>, abs: bool, grads: &mut [Vec<T>], par: Par);

    /// Add to `grads` the gradient of `g · b` with respect to the bias parameter (`g` has
    /// the `n_out` output elements; nothing when there is no bias).
    fn bias_grad(&self, g: &[T], grads: &mut [Vec<T>]);

    /// Whether the first parameter is `W` itself with a bias independent of it, so that
    /// an L∞ ball of radius ε around it moves the output by at most `ε·Ones·|x|` (a weight
    /// perturbation in training). An operator whose offset depends on that parameter (a
    /// batch normalization's scale) returns `false` and keeps it exact.
    fn weight_enters_linearly(&self) -> bool {
        true
    }
}

/// `y_i = f(x_i)` for a non-decreasing `f`, so that `[f(l), f(u)]` is its interval rule.
pub trait ElementwiseTrain<T: Scalar>: Send + Sync {
    /// `y = f(x)` and `dy = f'(x)` element-wise (at a kink, either one-sided derivative).
    fn value_and_derivative(&self, x: &[T], y: &mut [T], dy: &mut [T]);

    /// The relaxation the backward rule uses on `[lower, upper]`.
    fn relax(&self, lower: &[T], upper: &[T], options: &RelaxOptions) -> ElementwiseRelaxation<T>;

    /// The derivatives of that relaxation's lines: for each element `i`, `d[i]` holds the
    /// derivatives of (lower slope, lower intercept, upper slope, upper intercept) with
    /// respect to `l` (first four) and to `u` (last four). Piecewise-constant choices
    /// (which line) contribute nothing.
    fn relax_derivatives(&self, lower: &[T], upper: &[T], options: &RelaxOptions, d: &mut [[T; 8]]);
}

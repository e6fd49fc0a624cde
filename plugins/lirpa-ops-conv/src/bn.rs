//! `BatchNormalization` in inference mode: a per-channel affine map
//! `y = a[c]·x + b[c]` with `a = scale / sqrt(var + ε)`, `b = B − mean·a`.

use lirpa_core::linear::mat_vec;
use lirpa_core::op::{BackwardCtx, Evaluate, Interval, IntervalRule, LinearRelaxation, NodeDef, Operator};
use lirpa_core::reexport::faer::{MatMut, MatRef, Par};
use lirpa_core::{
    AffineTrain, BackwardResult, BuiltOp, Error, LinearA, LinearBias, Param, Result, Scalar, TensorData,
    TrainRule, Trainable,
};

/// A per-channel affine map on a `[1, C, ...]` tensor.
#[derive(Debug)]
pub struct ChannelAffine<T> {
    /// Multiplier and offset expanded to every element.
    mul: Vec<T>,
    add: Vec<T>,
    /// Channels and elements per channel.
    c: usize,
    inner: usize,
    /// The model's per-channel `scale`, `B`, `input_mean` and `sqrt(input_var + ε)`, for
    /// training `scale` and `B` (the statistics stay those of the model).
    stats: Stats,
}

#[derive(Clone, Debug)]
struct Stats {
    scale: Vec<f64>,
    b: Vec<f64>,
    mean: Vec<f64>,
    std: Vec<f64>,
}

impl<T: Scalar> ChannelAffine<T> {
    /// `a = scale / std`, `b = B − mean·a` in `f64`, rounded to `T` once.
    fn from_stats(stats: Stats, c: usize, inner: usize) -> Self {
        let mut mul = Vec::with_capacity(c * inner);
        let mut add = Vec::with_capacity(c * inner);
        for ch in 0..c {
            let a = stats.scale[ch] / stats.std[ch];
            let off = stats.b[ch] - stats.mean[ch] * a;
            mul.extend(std::iter::repeat_n(T::from_f64(a), inner));
            add.extend(std::iter::repeat_n(T::from_f64(off), inner));
        }
        ChannelAffine { mul, add, c, inner, stats }
    }

    fn inv_std(&self, ch: usize) -> T {
        T::from_f64(1.0 / self.stats.std[ch])
    }
}

impl<T: Scalar> ChannelAffine<T> {
    fn side(&self, mut m: faer::Mat<T>, win: Option<&lirpa_core::Window>) -> (faer::Mat<T>, Vec<T>) {
        let bias = match win {
            None => mat_vec(m.as_ref(), &self.add),
            Some(w) => w.times_vector(&m, &self.add),
        };
        match win {
            None => {
                for j in 0..m.ncols() {
                    let f = self.mul[j];
                    m.col_as_slice_mut(j).iter_mut().for_each(|v| *v *= f);
                }
            }
            Some(w) => {
                let area = w.ph * w.pw;
                for j in 0..m.ncols() {
                    let f = self.mul[(j / area) * self.inner];
                    m.col_as_slice_mut(j).iter_mut().for_each(|v| *v *= f);
                }
            }
        }
        (m, bias)
    }
}

impl<T: Scalar> Evaluate<T> for ChannelAffine<T> {
    fn forward(&self, inputs: &[&[T]], out: &mut [T]) -> Result<()> {
        for (j, o) in out.iter_mut().enumerate() {
            *o = self.mul[j] * inputs[0][j] + self.add[j];
        }
        Ok(())
    }
}

impl<T: Scalar> IntervalRule<T> for ChannelAffine<T> {
    fn interval(&self, inputs: &[Interval<'_, T>], lower: &mut [T], upper: &mut [T]) -> Result<()> {
        let x = inputs[0];
        for j in 0..lower.len() {
            let (a, b) = (self.mul[j] * x.lower[j], self.mul[j] * x.upper[j]);
            lower[j] = a.min(b) + self.add[j];
            upper[j] = a.max(b) + self.add[j];
        }
        Ok(())
    }
    fn interval_is_tight(&self) -> bool {
        true
    }
}

impl<T: Scalar> LinearRelaxation<T> for ChannelAffine<T> {
    fn fp_rounding(&self) -> Option<lirpa_core::FpRounding> {
        // One product and one sum per element (forward), one product per coefficient
        // (backward); the fold of `a` in f64 (three roundings) and its rounding to `T`.
        Some(lirpa_core::FpRounding {
            kind: lirpa_core::FpKind::Affine,
            terms: Some(4 + lirpa_core::FpRounding::SLACK),
        })
    }
    /// `|B| + |mean·a|` per element: the fold `b = B − mean·a` may cancel.
    fn fp_folded_magnitude(&self) -> Option<Vec<f64>> {
        let s = &self.stats;
        let mut out = Vec::with_capacity(self.c * self.inner);
        for ch in 0..self.c {
            let a = s.scale[ch] / s.std[ch];
            let m = lirpa_core::fpsound::up(s.b[ch].abs() + (s.mean[ch] * a).abs());
            out.extend(std::iter::repeat_n(m, self.inner));
        }
        Some(out)
    }
    fn backward(&self, _ctx: &BackwardCtx<'_, T>, a: LinearA<T>) -> Result<BackwardResult<T>> {
        let win = a.window.as_ref();
        let mut bias = LinearBias::zeros(a.spec());
        let lower = a.lower.map(|m| {
            let (m, b) = self.side(m, win);
            bias.lower = b;
            m
        });
        let upper = a.upper.map(|m| {
            let (m, b) = self.side(m, win);
            bias.upper = b;
            m
        });
        Ok(BackwardResult {
            inputs: smallvec::smallvec![Some(LinearA { lower, upper, window: a.window })],
            bias,
        })
    }
    fn is_affine(&self) -> bool {
        true
    }
    fn supports_window(&self) -> bool {
        // Window columns are channel-major like the node, one block of `ph·pw` per channel.
        self.c > 0
    }
    fn trainable(&self) -> Option<&dyn Trainable<T>> {
        Some(self)
    }
}

/// Trains `scale` (model input 1) and `B` (input 2); the statistics stay the model's.
impl<T: Scalar> Trainable<T> for ChannelAffine<T> {
    fn params(&self) -> Vec<Param<T>> {
        let cast = |v: &[f64]| v.iter().map(|&x| T::from_f64(x)).collect();
        vec![
            Param { input: 1, values: cast(&self.stats.scale) },
            Param { input: 2, values: cast(&self.stats.b) },
        ]
    }
    fn with_params(&self, values: &[&[T]]) -> Result<Box<dyn Operator<T>>> {
        if values.len() != 2 || values.iter().any(|v| v.len() != self.c) {
            return Err(Error::Invalid("BatchNormalization: wrong parameter count or size".into()));
        }
        let f = |v: &[T]| v.iter().map(|x| x.as_f64()).collect();
        let stats = Stats { scale: f(values[0]), b: f(values[1]), ..self.stats.clone() };
        Ok(Box::new(ChannelAffine::from_stats(stats, self.c, self.inner)))
    }
    fn export_param(&self, k: usize, values: &[T]) -> Result<TensorData> {
        if k > 1 {
            return Err(Error::Invalid(format!("BatchNormalization: no parameter {k}")));
        }
        TensorData::float(&[self.c], values.iter().map(|v| v.as_f64()).collect())
    }
    fn rule(&self) -> TrainRule<'_, T> {
        TrainRule::Affine(self)
    }
}

/// A diagonal map: `W = diag(mul)`, its own transpose.
impl<T: Scalar> AffineTrain<T> for ChannelAffine<T> {
    fn apply(&self, x: MatRef<'_, T>, abs: bool, mut out: MatMut<'_, T>, _par: Par) {
        for j in 0..x.ncols() {
            let f = if abs { self.mul[j].abs() } else { self.mul[j] };
            for (o, &v) in out.as_mut().col_mut(j).iter_mut().zip(x.col(j).iter()) {
                *o = f * v;
            }
        }
    }
    fn apply_t(&self, g: MatRef<'_, T>, abs: bool, out: MatMut<'_, T>, par: Par) {
        self.apply(g, abs, out, par);
    }
    fn bias(&self) -> Option<Vec<T>> {
        Some(self.add.clone())
    }
    /// The offset `B − mean·scale/std` moves with the scale.
    fn weight_enters_linearly(&self) -> bool {
        false
    }
    /// `∂/∂scale_c` of `Σ g·(mul·x)`, `mul_c = scale_c·inv_std_c` (`|mul|`: times its sign).
    fn weight_grad(&self, g: MatRef<'_, T>, x: MatRef<'_, T>, abs: bool, grads: &mut [Vec<T>], _par: Par) {
        for j in 0..x.ncols() {
            let ch = j / self.inner.max(1);
            let dot = g.col(j).iter().zip(x.col(j).iter()).fold(T::zero(), |a, (&p, &q)| a + p * q);
            let sign = if !abs || self.mul[j] > T::zero() {
                T::one()
            } else if self.mul[j] < T::zero() {
                -T::one()
            } else {
                T::zero()
            };
            grads[0][ch] += sign * dot * self.inv_std(ch);
        }
    }
    /// `add_c = B_c − mean_c·scale_c·inv_std_c`.
    fn bias_grad(&self, g: &[T], grads: &mut [Vec<T>]) {
        for (j, &v) in g.iter().enumerate() {
            let ch = j / self.inner.max(1);
            grads[1][ch] += v;
            grads[0][ch] -= v * T::from_f64(self.stats.mean[ch]) * self.inv_std(ch);
        }
    }
}

impl<T: Scalar> Operator<T> for ChannelAffine<T> {
    fn op_type(&self) -> &str {
        "BatchNormalization"
    }
}

/// `BatchNormalization(X, scale, B, input_mean, input_var)` with constant statistics.
pub fn build_batch_norm<T: Scalar>(node: &NodeDef<'_>) -> Result<BuiltOp<T>> {
    let x = node.input(0)?;
    if node.attrs.int_or("training_mode", 0)? != 0 {
        return Err(Error::unimplemented("BatchNormalization in training mode"));
    }
    let shape = &x.shape;
    if shape.len() < 2 || shape[0] != 1 {
        return Err(Error::unimplemented(format!(
            "BatchNormalization on shape {shape:?} (expected [1, C, ...])"
        )));
    }
    let (c, inner) = (shape[1], shape[2..].iter().product::<usize>());
    let eps = node.attrs.float_or("epsilon", 1e-5)?;
    let mut params = Vec::with_capacity(4);
    for (i, name) in [(1, "scale"), (2, "B"), (3, "input_mean"), (4, "input_var")] {
        let t = node
            .const_input(i)
            .map_err(|_| Error::unimplemented(format!("BatchNormalization with a non-constant '{name}'")))?;
        t.check_finite(name)?;
        if t.numel() != c {
            return Err(Error::Shape(format!("'{name}' has {} elements for {c} channels", t.numel())));
        }
        params.push(t.data.as_slice());
    }
    let (scale, b, mean, var) = (params[0], params[1], params[2], params[3]);
    if let Some(ch) = (0..c).find(|&ch| var[ch] + eps <= 0.0) {
        return Err(Error::Invalid(format!("channel {ch} has variance {} + epsilon <= 0", var[ch])));
    }
    let std = var.iter().map(|&v| (v + eps).sqrt()).collect();
    let stats = Stats { scale: scale.to_vec(), b: b.to_vec(), mean: mean.to_vec(), std };
    Ok(BuiltOp::new(ChannelAffine::from_stats(stats, c, inner), &[0], shape.clone()))
}

//! `BatchNormalization` in inference mode: a per-channel affine map
//! `y = a[c]·x + b[c]` with `a = scale / sqrt(var + ε)`, `b = B − mean·a`.

use lirpa_core::linear::mat_vec;
use lirpa_core::op::{BackwardCtx, Evaluate, Interval, IntervalRule, LinearRelaxation, NodeDef, Operator};
use lirpa_core::{BackwardResult, BuiltOp, Error, LinearA, LinearBias, Result, Scalar};

/// A per-channel affine map on a `[1, C, ...]` tensor.
#[derive(Debug)]
pub struct ChannelAffine<T> {
    /// Multiplier and offset expanded to every element.
    mul: Vec<T>,
    add: Vec<T>,
    /// Channels and elements per channel.
    c: usize,
    inner: usize,
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
    let mut mul = Vec::with_capacity(c * inner);
    let mut add = Vec::with_capacity(c * inner);
    for ch in 0..c {
        if var[ch] + eps <= 0.0 {
            return Err(Error::Invalid(format!("channel {ch} has variance {} + epsilon <= 0", var[ch])));
        }
        let a = scale[ch] / (var[ch] + eps).sqrt();
        let off = b[ch] - mean[ch] * a;
        mul.extend(std::iter::repeat_n(T::from_f64(a), inner));
        add.extend(std::iter::repeat_n(T::from_f64(off), inner));
    }
    Ok(BuiltOp::new(ChannelAffine { mul, add, c, inner }, &[0], shape.clone()))
}

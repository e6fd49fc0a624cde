//! Convolutional operators: `Conv` (1-D/2-D, stride, dilation, asymmetric padding,
//! groups), `ConvTranspose`, `BatchNormalization` (inference), `AveragePool`, `GlobalAveragePool` and
//! `MaxPool` (any kernel, stride, padding).
//!
//! Convolution, pooling averages and batch normalization are exact (affine); their
//! backward rules accept windowed coefficients (`lirpa_core::window`), so bounds of
//! deep convolutional layers never need a dense `spec × C·H·W` matrix per layer.
//! `MaxPool` is relaxed (see [`maxpool`]).

pub mod bn;
pub mod conv;
pub mod maxpool;

use lirpa_core::register_op;

register_op!("Conv", conv::build_conv);
register_op!("ConvTranspose", conv::build_conv_transpose);
register_op!("AveragePool", conv::build_average_pool);
register_op!("GlobalAveragePool", conv::build_average_pool);
register_op!("BatchNormalization", bn::build_batch_norm);
register_op!("MaxPool", maxpool::build_max_pool);

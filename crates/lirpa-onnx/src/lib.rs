//! ONNX import in pure Rust: no protoc, no onnxruntime.
//!
//! The importer decodes the protobuf with hand-written prost messages ([`proto`]),
//! turns initializers and `Constant` nodes into constants, treats symbolic (batch)
//! dimensions as 1, and hands every node to the [`GraphBuilder`], which builds it
//! through the operator registry and folds constant subgraphs. An operator no plugin
//! provides is an error naming the node, its op type and the opset.

pub mod proto;
pub mod save;

use lirpa_core::registry::BuilderFor;
use lirpa_core::{Attr, Attributes, DType, Error, Graph, GraphBuilder, Scalar, TensorData};
use prost::Message;
use std::collections::{HashMap, HashSet};
use std::path::Path;

/// An import error, naming the file.
#[derive(Debug, thiserror::Error)]
pub enum OnnxError {
    // The causes are part of the message (one line), not chained as `source`.
    #[error("{path}: cannot read: {err}")]
    Io { path: String, err: std::io::Error },
    #[error("{path}: not a valid ONNX model: {err}")]
    Decode { path: String, err: prost::DecodeError },
    #[error("{path}: {err}")]
    // Boxed: the graph error is large and every `Result` of this crate carries it.
    Graph { path: String, err: Box<Error> },
}

impl OnnxError {
    /// The underlying graph error, if the file was decoded.
    pub fn graph_error(&self) -> Option<&Error> {
        match self {
            OnnxError::Graph { err, .. } => Some(err.as_ref()),
            _ => None,
        }
    }
}

/// How to import a model beyond its own semantics.
#[derive(Clone, Debug, Default)]
pub struct LoadOptions {
    /// Initializers (weights, biases) to import as graph inputs instead of constants,
    /// so that they can be perturbed. They become graph inputs after the model's own
    /// inputs, in this order; builders see them as non-constant operands.
    pub perturbed: Vec<String>,
}

/// A model loaded with [`LoadOptions`]: the graph and the stored value of each
/// initializer turned into an input (in [`LoadOptions::perturbed`]'s order), the
/// default centre of its perturbation.
#[derive(Debug)]
pub struct Loaded<T: Scalar> {
    pub graph: Graph<T>,
    pub initial: Vec<TensorData>,
}

/// Load an ONNX file into a graph over `T`.
pub fn load<T: Scalar + BuilderFor>(path: impl AsRef<Path>) -> Result<Graph<T>, OnnxError> {
    Ok(load_with(path, &LoadOptions::default())?.graph)
}

/// Load an ONNX file with some initializers turned into graph inputs.
pub fn load_with<T: Scalar + BuilderFor>(
    path: impl AsRef<Path>,
    options: &LoadOptions,
) -> Result<Loaded<T>, OnnxError> {
    let path = path.as_ref();
    let shown = path.display().to_string();
    // Bounded read: a model longer than the memory budget (or `/dev/zero`) is an error.
    let bytes = lirpa_core::budget::read_file_limited(path, None)
        .map_err(|err| OnnxError::Io { path: shown.clone(), err })?;
    load_bytes_with(&bytes, &shown, options)
}

/// Load an ONNX model from memory; `name` is used in error messages.
pub fn load_bytes<T: Scalar + BuilderFor>(bytes: &[u8], name: &str) -> Result<Graph<T>, OnnxError> {
    Ok(load_bytes_with(bytes, name, &LoadOptions::default())?.graph)
}

/// [`load_bytes`] with some initializers turned into graph inputs ([`LoadOptions`]).
pub fn load_bytes_with<T: Scalar + BuilderFor>(
    bytes: &[u8],
    name: &str,
    options: &LoadOptions,
) -> Result<Loaded<T>, OnnxError> {
    let model =
        proto::ModelProto::decode(bytes).map_err(|err| OnnxError::Decode { path: name.to_string(), err })?;
    convert(&model, options).map_err(|err| OnnxError::Graph { path: name.to_string(), err: Box::new(err) })
}

fn convert<T: Scalar + BuilderFor>(
    model: &proto::ModelProto,
    options: &LoadOptions,
) -> Result<Loaded<T>, Error> {
    let graph = model.graph.as_ref().ok_or_else(|| Error::Invalid("the model has no graph".into()))?;
    let opsets: HashMap<&str, i64> = model
        .opset_import
        .iter()
        .map(|o| (if o.domain == "ai.onnx" { "" } else { o.domain.as_str() }, o.version))
        .collect();
    let mut b = GraphBuilder::<T>::new();

    let init_names: HashSet<&str> = graph.initializer.iter().map(|t| t.name.as_str()).collect();
    for inp in &graph.input {
        if init_names.contains(inp.name.as_str()) {
            continue; // Old IR versions list initializers as inputs too.
        }
        b.add_input(&inp.name, &value_shape(inp)?)?;
    }
    let mut perturbed: HashMap<&str, Option<TensorData>> = HashMap::new();
    for p in &options.perturbed {
        if !init_names.contains(p.as_str()) {
            return Err(Error::Invalid(format!("perturbed tensor '{p}' is not an initializer of the model")));
        }
        if perturbed.insert(p.as_str(), None).is_some() {
            return Err(Error::Invalid(format!("perturbed tensor '{p}' is listed twice")));
        }
    }
    for t in &graph.initializer {
        let value = tensor(t).map_err(|e| Error::Invalid(format!("initializer '{}': {e}", t.name)))?;
        match perturbed.get_mut(t.name.as_str()) {
            Some(slot) => {
                if value.dtype != DType::Float {
                    return Err(Error::Invalid(format!(
                        "perturbed tensor '{}' is not a floating-point tensor",
                        t.name
                    )));
                }
                value.check_finite(&format!("initializer '{}'", t.name))?;
                *slot = Some(value);
            }
            None => {
                b.add_constant(&t.name, value)?;
            }
        }
    }
    let mut initial = Vec::with_capacity(options.perturbed.len());
    for p in &options.perturbed {
        let value = perturbed.remove(p.as_str()).flatten().ok_or_else(|| {
            Error::Invalid(format!("perturbed tensor '{p}' is listed twice among the initializers"))
        })?;
        b.add_input(p, &value.shape)?;
        initial.push(value);
    }

    // Values read by some node or by the graph output (to reject unused-output tricks).
    let mut consumed: HashSet<&str> = graph.output.iter().map(|o| o.name.as_str()).collect();
    for n in &graph.node {
        consumed.extend(n.input.iter().map(|s| s.as_str()));
    }

    for node in topological(&graph.node)? {
        let shown = if node.name.is_empty() {
            node.output.first().cloned().unwrap_or_default()
        } else {
            node.name.clone()
        };
        let ctx = |e: Error| match e {
            Error::Node { msg, op_type, node: out } if out != shown => {
                Error::Node { node: format!("{shown}' (output '{out}"), op_type, msg }
            }
            Error::Unsupported { op_type, domain, opset, known, .. } => {
                Error::Unsupported { node: shown.clone(), op_type, domain, opset, known }
            }
            other => other,
        };
        let out = node
            .output
            .first()
            .ok_or_else(|| Error::Invalid(format!("node '{shown}' ({}) has no output", node.op_type)))?;
        if let Some(extra) =
            node.output.iter().skip(1).find(|o| !o.is_empty() && consumed.contains(o.as_str()))
        {
            return Err(Error::Unimplemented {
                node: shown.clone(),
                op_type: node.op_type.clone(),
                msg: format!("its output '{extra}' (beyond the first) is used"),
            });
        }
        let mut attrs = Attributes::default();
        for a in &node.attribute {
            attrs.insert(a.name.clone(), attribute(a).map_err(|e| ctx(e.at_node(&shown, &node.op_type)))?);
        }
        let inputs: Vec<Option<&str>> =
            node.input.iter().map(|s| if s.is_empty() { None } else { Some(s.as_str()) }).collect();
        let domain = if node.domain == "ai.onnx" { "" } else { node.domain.as_str() };
        let opset = opsets.get(domain).copied().unwrap_or(0);
        b.add_node(out, &node.op_type, domain, opset, &attrs, &inputs).map_err(ctx)?;
    }
    let outputs: Vec<&str> = graph.output.iter().map(|o| o.name.as_str()).collect();
    Ok(Loaded { graph: b.finish(&outputs)?, initial })
}

/// Nodes in an order where every input is defined first (ONNX requires it, not every
/// exporter obeys).
fn topological(nodes: &[proto::NodeProto]) -> Result<Vec<&proto::NodeProto>, Error> {
    let produced: HashSet<&str> = nodes.iter().flat_map(|n| n.output.iter().map(|s| s.as_str())).collect();
    let mut defined: HashSet<&str> = HashSet::new();
    let mut done = vec![false; nodes.len()];
    let mut order = Vec::with_capacity(nodes.len());
    loop {
        let mut progress = false;
        for (i, n) in nodes.iter().enumerate() {
            if done[i] {
                continue;
            }
            let ready = n
                .input
                .iter()
                .all(|s| s.is_empty() || !produced.contains(s.as_str()) || defined.contains(s.as_str()));
            if ready {
                done[i] = true;
                progress = true;
                defined.extend(n.output.iter().map(|s| s.as_str()));
                order.push(n);
            }
        }
        if order.len() == nodes.len() {
            return Ok(order);
        }
        if !progress {
            let stuck =
                nodes.iter().zip(&done).find(|(_, d)| !**d).map(|(n, _)| n.name.clone()).unwrap_or_default();
            return Err(Error::Invalid(format!("the graph has a cycle (at node '{stuck}')")));
        }
    }
}

fn value_shape(v: &proto::ValueInfoProto) -> Result<Vec<usize>, Error> {
    let t = v
        .r#type
        .as_ref()
        .and_then(|t| t.tensor_type.as_ref())
        .ok_or_else(|| Error::Invalid(format!("input '{}' is not a tensor", v.name)))?;
    let Some(shape) = &t.shape else {
        return Err(Error::Invalid(format!("input '{}' has no shape", v.name)));
    };
    shape
        .dim
        .iter()
        .map(|d| match d.value {
            Some(proto::DimValue::DimValue(n)) if n > 0 => usize::try_from(n)
                .map_err(|_| Error::Invalid(format!("input '{}' has a dimension {n} too large", v.name))),
            Some(proto::DimValue::DimValue(n)) => Err(Error::Invalid(format!(
                "input '{}' has a dimension of size {n} (zero-size and negative dimensions are not supported)",
                v.name
            ))),
            // Symbolic or unknown dimensions (the batch) are taken as 1.
            _ => Ok(1),
        })
        .collect()
}

fn attribute(a: &proto::AttributeProto) -> Result<Attr, Error> {
    let ty = if a.r#type != 0 {
        a.r#type
    } else if a.t.is_some() {
        4
    } else if !a.floats.is_empty() {
        6
    } else if !a.ints.is_empty() {
        7
    } else if !a.s.is_empty() {
        3
    } else if a.f != 0.0 {
        1
    } else {
        2
    };
    Ok(match ty {
        1 => Attr::Float(a.f as f64),
        2 => Attr::Int(a.i),
        3 => Attr::String(String::from_utf8_lossy(&a.s).into_owned()),
        4 => Attr::Tensor(tensor(a.t.as_ref().ok_or_else(|| {
            Error::Invalid(format!("attribute '{}' has type TENSOR but no tensor", a.name))
        })?)?),
        6 => Attr::Floats(a.floats.iter().map(|&x| x as f64).collect()),
        7 => Attr::Ints(a.ints.clone()),
        8 => Attr::Strings(a.strings.iter().map(|s| String::from_utf8_lossy(s).into_owned()).collect()),
        other => return Err(Error::unimplemented(format!("attribute '{}' of type {other}", a.name))),
    })
}

fn f16_to_f64(bits: u16) -> f64 {
    let sign = if bits & 0x8000 != 0 { -1.0 } else { 1.0 };
    let exp = ((bits >> 10) & 0x1f) as i32;
    let frac = (bits & 0x3ff) as f64;
    sign * match exp {
        0 => frac * 2f64.powi(-24),
        31 => {
            if frac == 0.0 {
                f64::INFINITY
            } else {
                f64::NAN
            }
        }
        e => (1.0 + frac / 1024.0) * 2f64.powi(e - 15),
    }
}

/// Decode a tensor from its typed fields or its little-endian `raw_data`.
pub fn tensor(t: &proto::TensorProto) -> Result<TensorData, Error> {
    if t.data_location == 1 {
        return Err(Error::unimplemented(format!("tensor '{}' stores its data in an external file", t.name)));
    }
    let shape: Vec<usize> = t
        .dims
        .iter()
        .map(|&d| usize::try_from(d).map_err(|_| Error::Invalid(format!("negative dimension {d}"))))
        .collect::<Result<_, _>>()?;
    let raw = &t.raw_data;
    fn chunks<const N: usize>(raw: &[u8], f: impl Fn([u8; N]) -> f64) -> Vec<f64> {
        raw.chunks_exact(N).map(|c| f(c.try_into().expect("exact chunk"))).collect()
    }
    let (dtype, data): (DType, Vec<f64>) = match t.data_type {
        1 => (
            DType::Float,
            if raw.is_empty() {
                t.float_data.iter().map(|&x| x as f64).collect()
            } else {
                chunks(raw, |b| f32::from_le_bytes(b) as f64)
            },
        ),
        11 => (
            DType::Float,
            if raw.is_empty() { t.double_data.clone() } else { chunks(raw, f64::from_le_bytes) },
        ),
        10 => (
            DType::Float,
            if raw.is_empty() {
                t.int32_data.iter().map(|&x| f16_to_f64(x as u16)).collect()
            } else {
                chunks(raw, |b| f16_to_f64(u16::from_le_bytes(b)))
            },
        ),
        7 => (
            DType::Int,
            if raw.is_empty() {
                t.int64_data.iter().map(|&x| x as f64).collect()
            } else {
                chunks(raw, |b| i64::from_le_bytes(b) as f64)
            },
        ),
        6 => (
            DType::Int,
            if raw.is_empty() {
                t.int32_data.iter().map(|&x| x as f64).collect()
            } else {
                chunks(raw, |b| i32::from_le_bytes(b) as f64)
            },
        ),
        5 => (
            DType::Int,
            if raw.is_empty() {
                t.int32_data.iter().map(|&x| x as f64).collect()
            } else {
                chunks(raw, |b| i16::from_le_bytes(b) as f64)
            },
        ),
        3 => (
            DType::Int,
            if raw.is_empty() {
                t.int32_data.iter().map(|&x| x as f64).collect()
            } else {
                chunks(raw, |b: [u8; 1]| b[0] as i8 as f64)
            },
        ),
        2 => (
            DType::Int,
            if raw.is_empty() {
                t.int32_data.iter().map(|&x| x as f64).collect()
            } else {
                chunks(raw, |b: [u8; 1]| b[0] as f64)
            },
        ),
        9 => (
            DType::Bool,
            if raw.is_empty() {
                t.int32_data.iter().map(|&x| (x != 0) as u8 as f64).collect()
            } else {
                chunks(raw, |b: [u8; 1]| (b[0] != 0) as u8 as f64)
            },
        ),
        12 | 13 => (
            DType::Int,
            if raw.is_empty() {
                t.uint64_data.iter().map(|&x| x as f64).collect()
            } else if t.data_type == 13 {
                chunks(raw, |b| u64::from_le_bytes(b) as f64)
            } else {
                chunks(raw, |b| u32::from_le_bytes(b) as f64)
            },
        ),
        other => return Err(Error::unimplemented(format!("tensor '{}' has element type {other}", t.name))),
    };
    TensorData::new(&shape, dtype, data)
}

/// The names of the model's declared graph inputs (initializers that old IR versions
/// also list as inputs excluded), in order.
pub fn graph_input_names(bytes: &[u8], name: &str) -> Result<Vec<String>, OnnxError> {
    let model =
        proto::ModelProto::decode(bytes).map_err(|err| OnnxError::Decode { path: name.to_string(), err })?;
    let graph = model.graph.as_ref().ok_or_else(|| OnnxError::Graph {
        path: name.into(),
        err: Box::new(Error::Invalid("the model has no graph".into())),
    })?;
    let init_names: HashSet<&str> = graph.initializer.iter().map(|t| t.name.as_str()).collect();
    Ok(graph.input.iter().filter(|i| !init_names.contains(i.name.as_str())).map(|i| i.name.clone()).collect())
}

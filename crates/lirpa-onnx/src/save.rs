//! Writing a model back with new initializer values (a trained model).
//!
//! The model's bytes are copied field by field; only the `initializer` entries of the
//! graph that are replaced are re-encoded (name, dims, data type float, raw data), so
//! everything lirpa does not read (doc strings, metadata, value infos, other fields) is
//! kept exactly.

use crate::proto;
use lirpa_core::{Error, TensorData};
use prost::Message;
use std::collections::HashMap;

/// ONNX field numbers used here.
const MODEL_GRAPH: u64 = 7;
const GRAPH_INITIALIZER: u64 = 5;

fn read_varint(b: &[u8], pos: &mut usize) -> Result<u64, Error> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = *b.get(*pos).ok_or_else(|| Error::Invalid("truncated protobuf varint".into()))?;
        *pos += 1;
        v |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Ok(v);
        }
    }
    Err(Error::Invalid("protobuf varint longer than 10 bytes".into()))
}

fn write_varint(mut v: u64, out: &mut Vec<u8>) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// One field of a message: `(field number, wire type, the whole field's bytes, the
/// payload of a length-delimited field)`.
type Field<'a> = (u64, u64, &'a [u8], &'a [u8]);

fn fields(b: &[u8]) -> Result<Vec<Field<'_>>, Error> {
    let mut pos = 0;
    let mut out = Vec::new();
    while pos < b.len() {
        let start = pos;
        let key = read_varint(b, &mut pos)?;
        let (field, wire) = (key >> 3, key & 7);
        let payload_start;
        match wire {
            0 => {
                read_varint(b, &mut pos)?;
                payload_start = pos;
            }
            1 => {
                pos += 8;
                payload_start = pos;
            }
            2 => {
                let len = read_varint(b, &mut pos)? as usize;
                payload_start = pos;
                pos =
                    pos.checked_add(len).ok_or_else(|| Error::Invalid("protobuf length overflow".into()))?;
            }
            5 => {
                pos += 4;
                payload_start = pos;
            }
            w => return Err(Error::Invalid(format!("unsupported protobuf wire type {w}"))),
        }
        if pos > b.len() {
            return Err(Error::Invalid("truncated protobuf field".into()));
        }
        let payload = if wire == 2 { &b[payload_start..pos] } else { &b[pos..pos] };
        out.push((field, wire, &b[start..pos], payload));
    }
    Ok(out)
}

fn length_delimited(field: u64, payload: &[u8], out: &mut Vec<u8>) {
    write_varint(field << 3 | 2, out);
    write_varint(payload.len() as u64, out);
    out.extend_from_slice(payload);
}

/// A float32 TensorProto.
fn tensor_proto(name: &str, t: &TensorData) -> Vec<u8> {
    let raw: Vec<u8> = t.data.iter().flat_map(|&v| (v as f32).to_le_bytes()).collect();
    let p = proto::TensorProto {
        dims: t.shape.iter().map(|&d| d as i64).collect(),
        data_type: 1,
        name: name.to_string(),
        raw_data: raw,
        ..Default::default()
    };
    p.encode_to_vec()
}

/// The model `bytes` with the initializers named in `values` replaced (as float32).
/// Every name must be an initializer of the model's graph.
pub fn replace_initializers(bytes: &[u8], values: &HashMap<String, TensorData>) -> Result<Vec<u8>, Error> {
    let mut out = Vec::with_capacity(bytes.len());
    let mut done = std::collections::HashSet::new();
    for (field, wire, whole, payload) in fields(bytes)? {
        if field != MODEL_GRAPH || wire != 2 {
            out.extend_from_slice(whole);
            continue;
        }
        let mut graph = Vec::with_capacity(payload.len());
        for (gf, gw, gwhole, gpayload) in fields(payload)? {
            if gf == GRAPH_INITIALIZER && gw == 2 {
                let t = proto::TensorProto::decode(gpayload)
                    .map_err(|e| Error::Invalid(format!("an initializer does not decode: {e}")))?;
                if let Some(v) = values.get(&t.name) {
                    let old: usize = t.dims.iter().map(|&d| d.max(0) as usize).product();
                    if old != v.numel() {
                        return Err(Error::Invalid(format!(
                            "initializer '{}' has {old} elements, the new value {}",
                            t.name,
                            v.numel()
                        )));
                    }
                    length_delimited(GRAPH_INITIALIZER, &tensor_proto(&t.name, v), &mut graph);
                    done.insert(t.name.clone());
                    continue;
                }
            }
            graph.extend_from_slice(gwhole);
        }
        length_delimited(MODEL_GRAPH, &graph, &mut out);
    }
    if let Some(missing) = values.keys().find(|k| !done.contains(*k)) {
        return Err(Error::Invalid(format!("'{missing}' is not an initializer of the model")));
    }
    Ok(out)
}

/// The name of input `slot` of the node whose first output is `output`, if that input is
/// an initializer of the model (what a trained parameter is written back to).
pub fn initializer_input(bytes: &[u8], output: &str, slot: usize) -> Result<String, Error> {
    let model = proto::ModelProto::decode(bytes)
        .map_err(|e| Error::Invalid(format!("not a valid ONNX model: {e}")))?;
    let graph = model.graph.ok_or_else(|| Error::Invalid("the model has no graph".into()))?;
    let node = graph
        .node
        .iter()
        .find(|n| n.output.first().is_some_and(|o| o == output))
        .ok_or_else(|| Error::Invalid(format!("no node has output '{output}'")))?;
    let name =
        node.input.get(slot).filter(|s| !s.is_empty()).ok_or_else(|| {
            Error::Invalid(format!("node '{output}' ({}) has no input {slot}", node.op_type))
        })?;
    if !graph.initializer.iter().any(|t| &t.name == name) {
        return Err(Error::Unimplemented {
            node: output.to_string(),
            op_type: node.op_type.clone(),
            msg: format!("its input '{name}' is computed, not an initializer: it cannot be trained"),
        });
    }
    Ok(name.clone())
}

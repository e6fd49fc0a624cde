//! The bound graph: a DAG of nodes in topological order (a node's inputs always have
//! smaller ids), built through the operator registry.

use crate::op::{InputDef, NodeDef, Operator};
use crate::registry::{BuilderFor, lookup_all, registered_ops};
use crate::{Attributes, DType, Error, Result, Scalar, Shape, TensorData, numel};
use smallvec::SmallVec;
use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;

/// Index of a node in its graph.
pub type NodeId = usize;

/// What a node is.
#[derive(Debug)]
pub enum NodeKind<T: Scalar> {
    /// A graph input: its value is given, exactly or as a perturbation set.
    Input,
    /// A value known when the graph was built.
    Constant(Vec<T>),
    /// An operator applied to its input edges.
    Op(Box<dyn Operator<T>>),
}

#[derive(Debug)]
pub struct Node<T: Scalar> {
    pub name: String,
    pub kind: NodeKind<T>,
    /// Input edges; every id is smaller than this node's id.
    pub inputs: SmallVec<[NodeId; 4]>,
    pub shape: Shape,
}

impl<T: Scalar> Node<T> {
    pub fn numel(&self) -> usize {
        numel(&self.shape)
    }
    pub fn op(&self) -> Option<&dyn Operator<T>> {
        match &self.kind {
            NodeKind::Op(op) => Some(op.as_ref()),
            _ => None,
        }
    }
    pub fn op_type(&self) -> &str {
        match &self.kind {
            NodeKind::Input => "Input",
            NodeKind::Constant(_) => "Constant",
            NodeKind::Op(op) => op.op_type(),
        }
    }
}

/// A computational graph ready for bound propagation.
#[derive(Debug)]
pub struct Graph<T: Scalar> {
    // Invariant: topologically ordered (inputs of node i are < i).
    nodes: Vec<Node<T>>,
    inputs: Vec<NodeId>,
    outputs: Vec<NodeId>,
}

impl<T: Scalar> Graph<T> {
    pub fn nodes(&self) -> &[Node<T>] {
        &self.nodes
    }
    pub fn node(&self, id: NodeId) -> &Node<T> {
        &self.nodes[id]
    }
    pub fn len(&self) -> usize {
        self.nodes.len()
    }
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }
    /// Graph inputs, in declaration order.
    pub fn inputs(&self) -> &[NodeId] {
        &self.inputs
    }
    /// Graph outputs, in declaration order.
    pub fn outputs(&self) -> &[NodeId] {
        &self.outputs
    }
    /// The single output; an error if the graph has several.
    pub fn output(&self) -> Result<NodeId> {
        match self.outputs.as_slice() {
            [o] => Ok(*o),
            other => {
                Err(Error::Invalid(format!("the graph has {} outputs; name the node to bound", other.len())))
            }
        }
    }
    /// The single input; an error if the graph has several.
    pub fn input(&self) -> Result<NodeId> {
        match self.inputs.as_slice() {
            [i] => Ok(*i),
            other => {
                Err(Error::Invalid(format!("the graph has {} inputs; give a value for each", other.len())))
            }
        }
    }
    /// Find a node by name.
    pub fn find(&self, name: &str) -> Option<NodeId> {
        self.nodes.iter().position(|n| n.name == name)
    }

    /// Evaluate every node on the given input values (one per graph input).
    pub fn forward_all(&self, inputs: &[&[T]]) -> Result<Vec<Vec<T>>> {
        Ok(self.eval(inputs)?.into_iter().map(Cow::into_owned).collect())
    }

    fn eval<'a>(&'a self, inputs: &[&'a [T]]) -> Result<Vec<Cow<'a, [T]>>> {
        if inputs.len() != self.inputs.len() {
            return Err(Error::Invalid(format!(
                "the graph has {} inputs, {} values were given",
                self.inputs.len(),
                inputs.len()
            )));
        }
        // Constants are borrowed, not copied, on every evaluation.
        let mut values: Vec<Cow<'a, [T]>> = Vec::with_capacity(self.nodes.len());
        for (id, node) in self.nodes.iter().enumerate() {
            let v = match &node.kind {
                NodeKind::Input => {
                    let k = self.inputs.iter().position(|&i| i == id).expect("input node listed");
                    if inputs[k].len() != node.numel() {
                        return Err(Error::Invalid(format!(
                            "input '{}' has {} elements, {} values were given",
                            node.name,
                            node.numel(),
                            inputs[k].len()
                        )));
                    }
                    Cow::Borrowed(inputs[k])
                }
                NodeKind::Constant(c) => Cow::Borrowed(c.as_slice()),
                NodeKind::Op(op) => {
                    let args: SmallVec<[&[T]; 4]> = node.inputs.iter().map(|&i| &*values[i]).collect();
                    let mut out = vec![T::zero(); node.numel()];
                    op.forward(&args, &mut out).map_err(|e| e.at_node(&node.name, op.op_type()))?;
                    Cow::Owned(out)
                }
            };
            values.push(v);
        }
        Ok(values)
    }

    /// Evaluate the output of a single-input graph at `rows` points (`x` row-major,
    /// `rows × numel(input)`) at once: each operator evaluates all rows in one call
    /// ([`Evaluate::forward_batch`](crate::op::Evaluate::forward_batch), a matrix
    /// product for dense layers). Row-major `rows × numel(output)`.
    pub fn forward_batch(&self, x: &[T], rows: usize) -> Result<Vec<T>> {
        let (input, output) = (self.input()?, self.output()?);
        if x.len() != rows.saturating_mul(self.nodes[input].numel()) {
            return Err(Error::Invalid(format!(
                "{} values given for {rows} points of input '{}' ({} elements each)",
                x.len(),
                self.nodes[input].name,
                self.nodes[input].numel()
            )));
        }
        // Per node: `None` for constants (shared), else its rows.
        let mut values: Vec<Option<Vec<T>>> = Vec::with_capacity(self.nodes.len());
        for (id, node) in self.nodes.iter().enumerate() {
            let v = match &node.kind {
                NodeKind::Input if id == input => Some(x.to_vec()),
                NodeKind::Input => return Err(Error::Invalid("the graph has more than one input".into())),
                NodeKind::Constant(_) => None,
                NodeKind::Op(op) => {
                    let args: SmallVec<[crate::op::BatchInput<'_, T>; 4]> = node
                        .inputs
                        .iter()
                        .map(|&i| match (&values[i], &self.nodes[i].kind) {
                            (Some(v), _) => crate::op::BatchInput::Rows(v.as_slice()),
                            (None, NodeKind::Constant(c)) => crate::op::BatchInput::Shared(c.as_slice()),
                            (None, _) => crate::op::BatchInput::Shared(&[]),
                        })
                        .collect();
                    let mut out = vec![T::zero(); crate::budget::checked_numel(&[rows, node.numel()])?];
                    op.forward_batch(&args, rows, &mut out)
                        .map_err(|e| e.at_node(&node.name, op.op_type()))?;
                    Some(out)
                }
            };
            values.push(v);
        }
        Ok(values.swap_remove(output).unwrap_or_default())
    }

    /// Evaluate the graph and return the value of `node`.
    pub fn forward(&self, inputs: &[&[T]], node: NodeId) -> Result<Vec<T>> {
        Ok(self.eval(inputs)?.swap_remove(node).into_owned())
    }

    /// For each node, how many edges leave it (counting repeated use).
    pub fn consumer_counts(&self) -> Vec<usize> {
        let mut c = vec![0; self.nodes.len()];
        for n in &self.nodes {
            for &i in &n.inputs {
                c[i] += 1;
            }
        }
        c
    }
}

/// Attributes that ONNX defines and that do not change what lirpa computes, so no
/// builder reads them (training-mode settings, hints, names). Any other attribute a
/// builder does not read is an error naming it.
pub const IGNORED_ATTRIBUTES: &[(&str, &str)] = &[
    ("*", "name"),
    ("*", "doc_string"),
    ("BatchNormalization", "momentum"),
    ("BatchNormalization", "spatial"),
    ("BatchNormalization", "training_mode"),
    ("BatchNormalization", "is_test"),
    ("Dropout", "seed"),
    ("Dropout", "ratio"),
    ("Dropout", "is_test"),
    ("Cast", "saturate"),
    ("Cast", "to"),
    ("MaxPool", "storage_order"),
    ("Conv", "kernel_shape"),
    ("ConvTranspose", "kernel_shape"),
];

fn ignored_attribute(op_type: &str, name: &str) -> bool {
    IGNORED_ATTRIBUTES.iter().any(|&(o, a)| (o == "*" || o == op_type) && a == name)
}

/// Refuse NaN and infinities in float attributes (Gemm's `alpha`, `beta`, an
/// epsilon, a tensor attribute), whatever the operator and the method.
fn check_attributes_finite(attrs: &Attributes) -> Result<()> {
    for (k, v) in &attrs.0 {
        let finite = match v {
            crate::Attr::Float(f) => f.is_finite(),
            crate::Attr::Floats(f) => f.iter().all(|x| x.is_finite()),
            crate::Attr::Tensor(t) => t.dtype != DType::Float || t.data.iter().all(|x| x.is_finite()),
            _ => true,
        };
        if !finite {
            return Err(Error::NonFinite(format!("attribute '{k}'")));
        }
    }
    Ok(())
}

/// Builds a [`Graph`] by name, looking operators up in the registry and folding every
/// node whose inputs are all constant.
pub struct GraphBuilder<T: Scalar> {
    nodes: Vec<Node<T>>,
    inputs: Vec<NodeId>,
    by_name: HashMap<String, NodeId>,
    consts: HashMap<NodeId, Arc<TensorData>>,
    /// Elements of every node so far (checked against the memory budget).
    elements: usize,
}

impl<T: Scalar + BuilderFor> Default for GraphBuilder<T> {
    fn default() -> Self {
        GraphBuilder {
            nodes: Vec::new(),
            inputs: Vec::new(),
            by_name: HashMap::new(),
            consts: HashMap::new(),
            elements: 0,
        }
    }
}

impl<T: Scalar + BuilderFor> GraphBuilder<T> {
    pub fn new() -> Self {
        Self::default()
    }

    fn push(&mut self, node: Node<T>) -> Result<NodeId> {
        if self.by_name.contains_key(&node.name) {
            return Err(Error::Invalid(format!("value '{}' is defined twice", node.name)));
        }
        // The whole graph within the budget, not only each tensor: every node's value
        // (or its bounds) is held at once by evaluation and IBP.
        self.elements = self.elements.saturating_add(numel(&node.shape));
        crate::budget::check_bytes(
            self.elements as u128 * crate::budget::ELEM_BYTES as u128,
            || format!("the graph up to value '{}' ({} elements in all)", node.name, self.elements),
            crate::budget::max_memory(),
        )?;
        let id = self.nodes.len();
        self.by_name.insert(node.name.clone(), id);
        self.nodes.push(node);
        Ok(id)
    }

    /// Declare a graph input.
    pub fn add_input(&mut self, name: &str, shape: &[usize]) -> Result<NodeId> {
        let n = crate::budget::checked_numel(shape)
            .map_err(|e| Error::Invalid(format!("input '{name}': {e}")))?;
        if n == 0 {
            return Err(Error::Invalid(format!(
                "input '{name}' has shape {shape:?}, with no element (zero-size dimensions are not supported)"
            )));
        }
        let id = self.push(Node {
            name: name.into(),
            kind: NodeKind::Input,
            inputs: SmallVec::new(),
            shape: shape.into(),
        })?;
        self.inputs.push(id);
        Ok(id)
    }

    /// Declare a constant (weights, shapes). NaN and infinities are refused.
    pub fn add_constant(&mut self, name: &str, value: TensorData) -> Result<NodeId> {
        value.check_finite(&format!("constant '{name}'"))?;
        let data = value.data.iter().map(|&x| T::from_f64(x)).collect();
        let id = self.push(Node {
            name: name.into(),
            kind: NodeKind::Constant(data),
            inputs: SmallVec::new(),
            shape: value.shape.clone(),
        })?;
        self.consts.insert(id, Arc::new(value));
        Ok(id)
    }

    /// The id of a value defined so far.
    pub fn id(&self, name: &str) -> Option<NodeId> {
        self.by_name.get(name).copied()
    }

    /// Shape of a value defined so far.
    pub fn shape(&self, name: &str) -> Option<&Shape> {
        self.id(name).map(|i| &self.nodes[i].shape)
    }

    /// Add an operator node. `inputs` are value names (`None` for an omitted optional
    /// input). Returns the id of the node holding the result, which is a constant if
    /// every input was.
    pub fn add_node(
        &mut self,
        name: &str,
        op_type: &str,
        domain: &str,
        opset: i64,
        attrs: &Attributes,
        inputs: &[Option<&str>],
    ) -> Result<NodeId> {
        let mut ids: SmallVec<[Option<NodeId>; 4]> = SmallVec::new();
        let mut defs: Vec<Option<InputDef>> = Vec::with_capacity(inputs.len());
        for inp in inputs {
            match inp {
                None => {
                    ids.push(None);
                    defs.push(None);
                }
                Some(n) => {
                    let id = self.id(n).ok_or_else(|| Error::Node {
                        node: name.into(),
                        op_type: op_type.into(),
                        msg: format!("input '{n}' is not defined before this node"),
                    })?;
                    ids.push(Some(id));
                    defs.push(Some(InputDef {
                        shape: self.nodes[id].shape.clone(),
                        value: self.consts.get(&id).cloned(),
                        source: Some(id),
                    }));
                }
            }
        }
        check_attributes_finite(attrs).map_err(|e| e.at_node(name, op_type))?;
        let regs = lookup_all(domain, op_type);
        if regs.is_empty() {
            let mut known: Vec<&str> = registered_ops().iter().map(|r| r.op_type).collect();
            known.dedup();
            return Err(Error::Unsupported {
                node: name.into(),
                op_type: op_type.into(),
                domain: if domain.is_empty() { "ai.onnx".into() } else { domain.into() },
                opset,
                known: known.join(", "),
            });
        }
        let def = NodeDef { name, op_type, domain, opset, attrs, inputs: &defs };
        attrs.clear_read();
        // Builders from the highest priority down; one may decline and leave the
        // node to the next.
        let mut declined = Vec::new();
        let mut built = None;
        for reg in regs {
            match (T::builder(reg))(&def) {
                Ok(b) => {
                    built = Some(b);
                    break;
                }
                Err(Error::Declined(why)) => declined.push(format!("{}: {why}", reg.plugin)),
                Err(e) => return Err(e.at_node(name, op_type)),
            }
        }
        let built = built.ok_or_else(|| Error::Unimplemented {
            node: name.into(),
            op_type: op_type.into(),
            msg: format!("every registered builder declined ({})", declined.join("; ")),
        })?;
        if let Some(a) = attrs.unread().into_iter().find(|a| !ignored_attribute(op_type, a)) {
            return Err(Error::Node {
                node: name.into(),
                op_type: op_type.into(),
                msg: format!("unknown attribute '{a}' (not one this operator's builder reads)"),
            });
        }
        let n_out =
            crate::budget::checked_numel(&built.output_shape).map_err(|e| e.at_node(name, op_type))?;
        let mut edges: SmallVec<[NodeId; 4]> = SmallVec::new();
        for &k in &built.edges {
            let id = ids.get(k).copied().flatten().ok_or_else(|| Error::Node {
                node: name.into(),
                op_type: op_type.into(),
                msg: format!("builder uses input {k}, which is missing"),
            })?;
            edges.push(id);
        }
        if edges.iter().all(|e| self.consts.contains_key(e)) {
            // Constant folding: evaluate now, in T.
            let args: SmallVec<[&[T]; 4]> = edges
                .iter()
                .map(|&e| match &self.nodes[e].kind {
                    NodeKind::Constant(c) => c.as_slice(),
                    _ => unreachable!("checked constant"),
                })
                .collect();
            let mut out = vec![T::zero(); n_out];
            built.op.forward(&args, &mut out).map_err(|e| e.at_node(name, op_type))?;
            drop(args);
            let value =
                TensorData::new(&built.output_shape, DType::Float, out.iter().map(|x| x.as_f64()).collect())?;
            return self.add_constant(name, value);
        }
        if n_out == 0 {
            return Err(Error::Node {
                node: name.into(),
                op_type: op_type.into(),
                msg: format!(
                    "its output has shape {:?}, with no element (zero-size dimensions are not supported)",
                    built.output_shape
                ),
            });
        }
        self.push(Node {
            name: name.into(),
            kind: NodeKind::Op(built.op),
            inputs: edges,
            shape: built.output_shape,
        })
    }

    /// Finish the graph with the named outputs.
    pub fn finish(self, outputs: &[&str]) -> Result<Graph<T>> {
        let mut outs = Vec::with_capacity(outputs.len());
        for o in outputs {
            outs.push(self.id(o).ok_or_else(|| Error::Invalid(format!("output '{o}' is not defined")))?);
        }
        if outs.is_empty() {
            return Err(Error::Invalid("the graph declares no output".into()));
        }
        Ok(Graph { nodes: self.nodes, inputs: self.inputs, outputs: outs })
    }
}

//! The native half of the Python package `lirpa` (`lirpa._lirpa`): ONNX models loaded
//! in `f32` or `f64`, a batch of perturbation sets bounded in one call, and VNN-LIB
//! verification. The Python half (`python/lirpa`) gives it auto_LiRPA's shape
//! (`BoundedModel`, `PerturbationLpNorm`, `compute_bounds`), normalizes arguments
//! (numpy arrays of the model's number type, one row per batch element) and
//! distributes verification over Ray.
//!
//! Every computation runs with the GIL released ([`Python::detach`]) and under
//! `catch_unwind`: a Rust error is a Python exception carrying the Rust message (the
//! command line's), and a panic is a `RuntimeError`, never an abort of the interpreter.

use lirpa::core::registry::BuilderFor;
use lirpa::{
    BoundOptions, BoundRequest, BoundResult, Graph, InputValue, Method, NodeId, Norm, OnnxError,
    Perturbation, Scalar, TensorPerturbation, TensorSet,
};
use numpy::ndarray::{Array2, Array3};
use numpy::{Element, IntoPyArray, PyReadonlyArray2, PyReadonlyArray3, PyUntypedArrayMethods};
use pyo3::exceptions::{
    PyFileNotFoundError, PyNotImplementedError, PyOSError, PyPermissionError, PyRuntimeError, PyValueError,
};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;
use std::time::Instant;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// What kind of Python exception an error becomes; the message is the Rust one.
#[derive(Debug)]
enum Kind {
    Value,
    NotFound,
    Permission,
    Os,
    NotImplemented,
    Runtime,
}

/// An error on its way to Python (built without the GIL, raised with it).
#[derive(Debug)]
struct Fail {
    kind: Kind,
    msg: String,
}

type Res<T> = Result<T, Fail>;

impl Fail {
    fn value(msg: impl Into<String>) -> Fail {
        Fail { kind: Kind::Value, msg: msg.into() }
    }
}

impl From<Fail> for PyErr {
    fn from(f: Fail) -> PyErr {
        match f.kind {
            Kind::Value => PyValueError::new_err(f.msg),
            Kind::NotFound => PyFileNotFoundError::new_err(f.msg),
            Kind::Permission => PyPermissionError::new_err(f.msg),
            Kind::Os => PyOSError::new_err(f.msg),
            Kind::NotImplemented => PyNotImplementedError::new_err(f.msg),
            Kind::Runtime => PyRuntimeError::new_err(f.msg),
        }
    }
}

fn io_kind(e: &std::io::Error) -> Kind {
    match e.kind() {
        std::io::ErrorKind::NotFound => Kind::NotFound,
        std::io::ErrorKind::PermissionDenied => Kind::Permission,
        _ => Kind::Os,
    }
}

fn graph_kind(e: &lirpa::Error) -> Kind {
    match e {
        lirpa::Error::Unsupported { .. } | lirpa::Error::Unimplemented { .. } => Kind::NotImplemented,
        _ => Kind::Value,
    }
}

impl From<lirpa::Error> for Fail {
    fn from(e: lirpa::Error) -> Fail {
        Fail { kind: graph_kind(&e), msg: e.to_string() }
    }
}

impl From<OnnxError> for Fail {
    fn from(e: OnnxError) -> Fail {
        let kind = match &e {
            OnnxError::Io { err, .. } => io_kind(err),
            OnnxError::Decode { .. } => Kind::Value,
            OnnxError::Graph { err, .. } => graph_kind(err),
        };
        Fail { kind, msg: e.to_string() }
    }
}

impl From<lirpa_verify::Error> for Fail {
    fn from(e: lirpa_verify::Error) -> Fail {
        match e {
            lirpa_verify::Error::Onnx(e) => e.into(),
            lirpa_verify::Error::Bound(e) => e.into(),
            e => Fail::value(e.to_string()),
        }
    }
}

/// Run `f` without the GIL and without letting a panic reach the interpreter.
fn detached<T: Send>(py: Python<'_>, f: impl FnOnce() -> Res<T> + Send) -> PyResult<T> {
    let out = py.detach(|| catch_unwind(AssertUnwindSafe(f)));
    match out {
        Ok(r) => r.map_err(PyErr::from),
        Err(p) => {
            let what = p
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| p.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".into());
            Err(PyRuntimeError::new_err(format!("internal error (a bug in lirpa, please report it): {what}")))
        }
    }
}

/// One loaded model in one number type.
struct Net<T: Scalar> {
    graph: Graph<T>,
    input: NodeId,
    /// The values of the perturbed initializers (graph inputs after the model's input).
    weights: Vec<InputValue<T>>,
    /// Graph input names (the model's input, then the perturbed initializers).
    names: Vec<String>,
}

enum AnyNet {
    F32(Net<f32>),
    F64(Net<f64>),
}

/// A weight perturbation from Python: (initializer, norm, eps).
type WeightPtb = (String, String, f64);

impl<T: Scalar + BuilderFor> Net<T> {
    fn load(bytes: &[u8], name: &str, weights: &[WeightPtb]) -> Res<Net<T>> {
        if weights.is_empty() {
            let graph = lirpa::onnx::load_bytes::<T>(bytes, name)?;
            let input = graph.input().map_err(|e| Fail::value(format!("{name}: {e}")))?;
            let names = vec![graph.node(input).name.clone()];
            graph.output().map_err(|e| Fail::value(format!("{name}: {e}")))?;
            return Ok(Net { graph, input, weights: Vec::new(), names });
        }
        let declared = lirpa::onnx::graph_input_names(bytes, name)?;
        if declared.len() != 1 {
            return Err(Fail::value(format!(
                "{name}: the model has {} inputs; the Python API bounds models with one input",
                declared.len()
            )));
        }
        let mut tensors = Vec::with_capacity(weights.len() + 1);
        // The model input's value is given per call; a placeholder here.
        tensors.push(TensorPerturbation::new(declared[0].clone(), TensorSet::Exact(Vec::new())));
        for (tensor, norm, eps) in weights {
            let norm: Norm = norm.parse()?;
            tensors.push(TensorPerturbation::new(
                tensor.clone(),
                TensorSet::Ball { norm, eps: T::from_f64(*eps), center: None },
            ));
        }
        // The placeholder has the wrong length: load with the right one.
        let n = {
            let g = lirpa::onnx::load_bytes::<T>(bytes, name)?;
            g.node(g.input()?).numel()
        };
        tensors[0].set = TensorSet::Exact(vec![T::zero(); n]);
        let model = lirpa::load_perturbed_bytes::<T>(bytes, name, &tensors)?;
        let input = model.graph.inputs()[0];
        model.graph.output().map_err(|e| Fail::value(format!("{name}: {e}")))?;
        Ok(Net { input, weights: model.inputs[1..].to_vec(), names: model.names, graph: model.graph })
    }
}

/// The perturbation of the model input, per batch row.
enum RowSet<T> {
    Exact(Array2<T>),
    Ball { norm: Norm, eps: f64, center: Array2<T> },
    Box { lower: Array2<T>, upper: Array2<T> },
}

/// The specification: none, one matrix for every row, or one per row.
enum Spec<T> {
    None,
    Shared(Array2<T>),
    PerRow(Array3<T>),
}

/// The linear bounds of one perturbed input: its name, lA, uA (batch × rows × n, where
/// computed), lbias, ubias (batch × rows).
type InputA<T> = (String, Option<Array3<T>>, Option<Array3<T>>, Array2<T>, Array2<T>);

/// What `compute_bounds` returns before it becomes numpy arrays.
struct Bounds<T> {
    lower: Array2<T>,
    upper: Array2<T>,
    /// Per perturbed input.
    a: Vec<InputA<T>>,
}

fn rows_of<T: Copy>(a: &Array2<T>, r: usize) -> Vec<T> {
    a.row(r).iter().copied().collect()
}

impl<T: Scalar> Net<T> {
    fn n_in(&self) -> usize {
        self.graph.node(self.input).numel()
    }

    fn output(&self) -> NodeId {
        self.graph.output().expect("checked at load")
    }

    fn n_out(&self) -> usize {
        self.graph.node(self.output()).numel()
    }

    fn check_width(&self, what: &str, a: &Array2<T>) -> Res<()> {
        let n = self.n_in();
        if a.ncols() != n {
            return Err(Fail::value(format!(
                "{what} has {} values per row but the model input has {n} elements",
                a.ncols()
            )));
        }
        Ok(())
    }

    fn compute(
        &self,
        set: &RowSet<T>,
        spec: &Spec<T>,
        opts: &BoundOptions,
        lower: bool,
        upper: bool,
        return_a: bool,
    ) -> Res<Bounds<T>> {
        let batch = match set {
            RowSet::Exact(x) | RowSet::Ball { center: x, .. } => x.nrows(),
            RowSet::Box { lower, .. } => lower.nrows(),
        };
        match set {
            RowSet::Exact(x) | RowSet::Ball { center: x, .. } => self.check_width("x", x)?,
            RowSet::Box { lower: l, upper: u } => {
                self.check_width("x_L", l)?;
                self.check_width("x_U", u)?;
                if u.nrows() != batch {
                    return Err(Fail::value(format!("x_L has {batch} rows but x_U has {}", u.nrows())));
                }
            }
        }
        if batch == 0 {
            return Err(Fail::value("the batch is empty (x has no rows)"));
        }
        let m = self.n_out();
        let mats: Vec<faer::Mat<T>> = match spec {
            Spec::None => Vec::new(),
            Spec::Shared(c) => vec![faer::Mat::from_fn(c.nrows(), c.ncols(), |i, j| c[(i, j)])],
            Spec::PerRow(c) => {
                if c.shape()[0] != batch {
                    return Err(Fail::value(format!(
                        "C has {} matrices but the batch has {batch} rows",
                        c.shape()[0]
                    )));
                }
                (0..batch)
                    .map(|b| faer::Mat::from_fn(c.shape()[1], c.shape()[2], |i, j| c[(b, i, j)]))
                    .collect()
            }
        };
        if let Some(c) = mats.iter().find(|c| c.ncols() != m) {
            return Err(Fail::value(format!(
                "C has {} columns but the model output has {m} elements",
                c.ncols()
            )));
        }
        if mats.iter().any(|c| c.nrows() == 0) {
            return Err(Fail::value("C has no rows"));
        }
        let mut inputs = Vec::with_capacity(batch);
        for r in 0..batch {
            let first = match set {
                RowSet::Exact(x) => InputValue::Exact(rows_of(x, r)),
                RowSet::Ball { norm, eps, center } => InputValue::Perturbed(Perturbation::new_ball(
                    *norm,
                    rows_of(center, r),
                    T::from_f64(*eps),
                )?),
                RowSet::Box { lower, upper } => {
                    InputValue::Perturbed(Perturbation::new_box(rows_of(lower, r), rows_of(upper, r))?)
                }
            };
            let mut v = Vec::with_capacity(1 + self.weights.len());
            v.push(first);
            v.extend(self.weights.iter().cloned());
            inputs.push(v);
        }
        let requests: Vec<BoundRequest<'_, T>> = (0..batch)
            .map(|r| BoundRequest {
                c: mats.get(if mats.len() == 1 { 0 } else { r }).map(|c| c.as_ref()),
                lower,
                upper,
                return_a,
                ..Default::default()
            })
            .collect();
        let results: Vec<BoundResult<T>> = if batch == 1 {
            vec![lirpa::compute_bounds(&self.graph, &inputs[0], opts, &requests[0])?]
        } else {
            let all = lirpa::compute_bounds_batch(&self.graph, &inputs, opts, &requests)?;
            let mut out = Vec::with_capacity(batch);
            for (r, res) in all.into_iter().enumerate() {
                out.push(res.map_err(|e| {
                    let f = Fail::from(e);
                    Fail { kind: f.kind, msg: format!("batch row {r}: {}", f.msg) }
                })?);
            }
            out
        };
        let k = results[0].lower.len().max(results[0].upper.len());
        let fill = |pick: &dyn Fn(&BoundResult<T>) -> &Vec<T>| {
            Array2::from_shape_fn((batch, k), |(b, i)| pick(&results[b]).get(i).copied().unwrap_or(T::nan()))
        };
        let lo = fill(&|r| &r.lower);
        let hi = fill(&|r| &r.upper);
        let mut a = Vec::new();
        if return_a {
            let per = results[0].a.len();
            for j in 0..per {
                let id = results[0].a[j].input;
                let name = self.graph.node(id).name.clone();
                let n = self.graph.node(id).numel();
                let mat = |pick: &dyn Fn(&lirpa::LinearA<T>) -> Option<faer::Mat<T>>| -> Option<Array3<T>> {
                    let ms: Vec<faer::Mat<T>> = results
                        .iter()
                        .map(|r| pick(&r.a[j].a.clone().into_dense()))
                        .collect::<Option<_>>()?;
                    Some(Array3::from_shape_fn((batch, k, n), |(b, i, c)| ms[b][(i, c)]))
                };
                let la = mat(&|a| a.lower.clone());
                let ua = mat(&|a| a.upper.clone());
                let bias = |up: bool| {
                    Array2::from_shape_fn((batch, k), |(b, i)| {
                        results[b]
                            .bias
                            .as_ref()
                            .map_or(T::zero(), |bi| if up { bi.upper[i] } else { bi.lower[i] })
                    })
                };
                a.push((name, la, ua, bias(false), bias(true)));
            }
        }
        Ok(Bounds { lower: lo, upper: hi, a })
    }

    fn forward(&self, x: &Array2<T>) -> Res<Array2<T>> {
        self.check_width("x", x)?;
        let out = self.output();
        let mut rows = Vec::with_capacity(x.nrows());
        for r in 0..x.nrows() {
            let xr = rows_of(x, r);
            let mut values: Vec<&[T]> = vec![&xr];
            let centers: Vec<Vec<T>> = self
                .weights
                .iter()
                .map(|w| match w {
                    InputValue::Exact(v) => v.clone(),
                    InputValue::Perturbed(p) => p.center(),
                })
                .collect();
            values.extend(centers.iter().map(|c| c.as_slice()));
            rows.push(self.graph.forward(&values, out)?);
        }
        let m = self.n_out();
        Ok(Array2::from_shape_fn((x.nrows(), m), |(r, i)| rows[r][i]))
    }
}

/// Read the model source: a path (str) or the ONNX bytes.
fn model_bytes(source: &Bound<'_, PyAny>) -> PyResult<(Vec<u8>, String)> {
    if let Ok(b) = source.cast::<PyBytes>() {
        return Ok((b.as_bytes().to_vec(), "<bytes>".to_string()));
    }
    let path: std::path::PathBuf = source.extract()?;
    let shown = path.display().to_string();
    let py = source.py();
    let bytes = detached(py, || {
        lirpa::core::budget::read_file_limited(&path, None)
            .map_err(|err| Fail::from(OnnxError::Io { path: shown.clone(), err }))
    })?;
    Ok((bytes, shown))
}

/// An ONNX model loaded for bounding (the native half of `lirpa.BoundedModel`).
#[pyclass(frozen, module = "lirpa._lirpa")]
struct Model {
    net: AnyNet,
    name: String,
    /// The model as loaded, for `verify` (which loads it in both number types).
    bytes: Vec<u8>,
}

#[pymethods]
impl Model {
    /// `Model(source, dtype="float32", weights=[])`: `source` is a path or the ONNX
    /// bytes; `weights` lists perturbed initializers as `(name, norm, eps)`.
    #[new]
    #[pyo3(signature = (source, dtype = "float32", weights = Vec::new()))]
    fn new(
        py: Python<'_>,
        source: &Bound<'_, PyAny>,
        dtype: &str,
        weights: Vec<WeightPtb>,
    ) -> PyResult<Model> {
        let (bytes, name) = model_bytes(source)?;
        let net = match dtype {
            "float32" => detached(py, || Net::<f32>::load(&bytes, &name, &weights).map(AnyNet::F32))?,
            "float64" => detached(py, || Net::<f64>::load(&bytes, &name, &weights).map(AnyNet::F64))?,
            other => {
                return Err(PyValueError::new_err(format!("dtype must be float32 or float64, got {other}")));
            }
        };
        Ok(Model { net, name, bytes })
    }

    /// `"float32"` or `"float64"`.
    #[getter]
    fn dtype(&self) -> &'static str {
        match self.net {
            AnyNet::F32(_) => "float32",
            AnyNet::F64(_) => "float64",
        }
    }

    /// The file name (or `<bytes>`).
    #[getter]
    fn name(&self) -> &str {
        &self.name
    }

    /// The model input's shape (batch 1).
    #[getter]
    fn input_shape(&self) -> Vec<usize> {
        match &self.net {
            AnyNet::F32(n) => n.graph.node(n.input).shape.to_vec(),
            AnyNet::F64(n) => n.graph.node(n.input).shape.to_vec(),
        }
    }

    /// The model output's shape (batch 1).
    #[getter]
    fn output_shape(&self) -> Vec<usize> {
        match &self.net {
            AnyNet::F32(n) => n.graph.node(n.output()).shape.to_vec(),
            AnyNet::F64(n) => n.graph.node(n.output()).shape.to_vec(),
        }
    }

    /// The graph input names: the model's input, then the perturbed initializers.
    #[getter]
    fn input_names(&self) -> Vec<String> {
        match &self.net {
            AnyNet::F32(n) => n.names.clone(),
            AnyNet::F64(n) => n.names.clone(),
        }
    }

    /// The ONNX bytes the model was loaded from.
    #[getter]
    fn onnx_bytes<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        PyBytes::new(py, &self.bytes)
    }

    /// Outputs at each row of `x` (batch × n_in, the model's dtype).
    fn forward<'py>(&self, py: Python<'py>, x: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
        match &self.net {
            AnyNet::F32(n) => {
                let x = array2::<f32>(x, "x")?;
                Ok(detached(py, || n.forward(&x))?.into_pyarray(py).into_any())
            }
            AnyNet::F64(n) => {
                let x = array2::<f64>(x, "x")?;
                Ok(detached(py, || n.forward(&x))?.into_pyarray(py).into_any())
            }
        }
    }

    /// Bounds of every row's perturbation set: `kind` is `"exact"` (`x` only),
    /// `"ball"` (`x` the centres, `norm`, `eps`) or `"box"` (`x_l`, `x_u`). `c` is
    /// `None`, a matrix (rows × n_out) or one per row (batch × rows × n_out).
    /// `options` is the JSON of `BoundOptions` (its `method` is replaced by `method`).
    /// Returns `(lower, upper, a)`, `a` a list of `(input name, lA, uA, lbias, ubias)`.
    #[pyo3(signature = (kind, method, x=None, x_l=None, x_u=None, norm="inf", eps=0.0, c=None, lower=true, upper=true, return_a=false, options=None))]
    #[allow(clippy::too_many_arguments)]
    fn compute_bounds<'py>(
        &self,
        py: Python<'py>,
        kind: &str,
        method: &str,
        x: Option<&Bound<'py, PyAny>>,
        x_l: Option<&Bound<'py, PyAny>>,
        x_u: Option<&Bound<'py, PyAny>>,
        norm: &str,
        eps: f64,
        c: Option<&Bound<'py, PyAny>>,
        lower: bool,
        upper: bool,
        return_a: bool,
        options: Option<&str>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let opts = bound_options(method, options)?;
        let call = Call { kind, x, x_l, x_u, norm, eps, c, sides: (lower, upper, return_a) };
        match &self.net {
            AnyNet::F32(n) => bounds_py(py, n, &call, &opts),
            AnyNet::F64(n) => bounds_py(py, n, &call, &opts),
        }
    }
}

/// The options of a call: `BoundOptions` from JSON (unknown keys refused), `threads`
/// 0 (every core of the pool) unless given, and the method.
fn bound_options(method: &str, json: Option<&str>) -> PyResult<BoundOptions> {
    let method: Method = method.parse().map_err(|e: lirpa::Error| PyValueError::new_err(e.to_string()))?;
    let mut v: serde_json::Value = match json {
        None => serde_json::json!({}),
        Some(t) => serde_json::from_str(t).map_err(|e| PyValueError::new_err(format!("options: {e}")))?,
    };
    let Some(map) = v.as_object_mut() else {
        return Err(PyValueError::new_err("options must be a dict"));
    };
    map.remove("method");
    map.entry("threads").or_insert(serde_json::json!(0));
    let mut opts: BoundOptions =
        serde_json::from_value(v).map_err(|e| PyValueError::new_err(format!("options: {e}")))?;
    opts.method = method;
    Ok(opts)
}

fn array2<T: Element + Copy>(obj: &Bound<'_, PyAny>, what: &str) -> PyResult<Array2<T>> {
    let a: PyReadonlyArray2<'_, T> = obj.extract().map_err(|_| {
        PyValueError::new_err(format!(
            "{what} must be a 2-D array (batch × elements) of {}",
            std::any::type_name::<T>()
        ))
    })?;
    Ok(a.as_array().to_owned())
}

/// The arguments of one `compute_bounds` call as Python gave them (see
/// `Model::compute_bounds`).
#[derive(Clone, Copy)]
struct Call<'a, 'py> {
    kind: &'a str,
    x: Option<&'a Bound<'py, PyAny>>,
    x_l: Option<&'a Bound<'py, PyAny>>,
    x_u: Option<&'a Bound<'py, PyAny>>,
    norm: &'a str,
    eps: f64,
    c: Option<&'a Bound<'py, PyAny>>,
    /// Lower, upper, return_a.
    sides: (bool, bool, bool),
}

fn bounds_py<'py, T: Scalar + Element>(
    py: Python<'py>,
    net: &Net<T>,
    call: &Call<'_, 'py>,
    opts: &BoundOptions,
) -> PyResult<Bound<'py, PyAny>> {
    let Call { kind, x, x_l, x_u, norm, eps, c, sides: (lower, upper, return_a) } = *call;
    let need = |o: Option<&Bound<'py, PyAny>>, what: &str| {
        o.ok_or_else(|| PyValueError::new_err(format!("{what} is required")))
            .and_then(|o| array2::<T>(o, what))
    };
    let set = match kind {
        "exact" => RowSet::Exact(need(x, "x")?),
        "ball" => {
            let norm: Norm = norm.parse().map_err(|e: lirpa::Error| PyValueError::new_err(e.to_string()))?;
            RowSet::Ball { norm, eps, center: need(x, "x")? }
        }
        "box" => RowSet::Box { lower: need(x_l, "x_L")?, upper: need(x_u, "x_U")? },
        other => return Err(PyValueError::new_err(format!("unknown perturbation kind '{other}'"))),
    };
    let spec = match c {
        None => Spec::None,
        Some(c) => {
            let arr: &Bound<'py, numpy::PyUntypedArray> =
                c.cast().map_err(|_| PyValueError::new_err("C must be a numpy array"))?;
            match arr.ndim() {
                2 => Spec::Shared(array2::<T>(c, "C")?),
                3 => {
                    let a: PyReadonlyArray3<'_, T> = c.extract()?;
                    Spec::PerRow(a.as_array().to_owned())
                }
                d => return Err(PyValueError::new_err(format!("C must have 2 or 3 dimensions, got {d}"))),
            }
        }
    };
    let b = detached(py, || net.compute(&set, &spec, opts, lower, upper, return_a))?;
    let a = PyDict::new(py);
    for (name, la, ua, lb, ub) in b.a {
        let d = PyDict::new(py);
        d.set_item("lA", la.map(|m| m.into_pyarray(py)))?;
        d.set_item("uA", ua.map(|m| m.into_pyarray(py)))?;
        d.set_item("lbias", lb.into_pyarray(py))?;
        d.set_item("ubias", ub.into_pyarray(py))?;
        a.set_item(name, d)?;
    }
    Ok((b.lower.into_pyarray(py), b.upper.into_pyarray(py), a).into_pyobject(py)?.into_any())
}

/// `verify(model, vnnlib, is_path, timeout, threads, seed, started)`: verify a VNN-LIB
/// property (a path when `is_path`, otherwise its text) on a model (ONNX bytes with
/// its name), on a pool of `threads` threads (0: every core). The time limit counts
/// from `started` (seconds of `time.monotonic()` the caller read, or now). Returns a
/// dict: `status`, `x`, `y` (a counterexample, or `None`), `reason`, `seconds`,
/// `domains`, `attack_seconds`, `bab_seconds`, `text` (the VNN-COMP result file).
#[pyfunction]
#[pyo3(signature = (model, name, vnnlib, is_path, timeout, threads=0, seed=0))]
#[allow(clippy::too_many_arguments)]
fn verify<'py>(
    py: Python<'py>,
    model: &[u8],
    name: &str,
    vnnlib: &str,
    is_path: bool,
    timeout: f64,
    threads: usize,
    seed: u64,
) -> PyResult<Bound<'py, PyDict>> {
    let started = Instant::now();
    let timeout = lirpa_verify::check_timeout(timeout).map_err(|e| PyValueError::new_err(e.to_string()))?;
    let model = model.to_vec();
    let run = || -> Res<(lirpa_verify::Verdict, lirpa_verify::Stats)> {
        let prop = if is_path {
            let p = Path::new(vnnlib);
            lirpa_verify::read_property(p).map_err(|e| {
                let kind = match std::fs::metadata(p) {
                    Err(io) => io_kind(&io),
                    Ok(_) => Kind::Value,
                };
                Fail { kind, msg: e.to_string() }
            })?
        } else {
            lirpa_vnnlib::parse_str(vnnlib).map_err(|e| Fail::value(e.to_string()))?
        };
        let m = lirpa_verify::Model::load_bytes(&model, name)?;
        let problem = lirpa_verify::Problem::from_property(&prop);
        let mut opts = lirpa_verify::VerifyOptions::with_timeout(timeout);
        opts.seed = seed;
        let go = |opts: &mut lirpa_verify::VerifyOptions<'_>| {
            lirpa_verify::verify_within(&m, &problem, started, timeout, opts).map_err(Fail::from)
        };
        if threads == 0 {
            go(&mut opts)
        } else {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().map_err(|e| Fail {
                kind: Kind::Runtime,
                msg: format!("cannot start {threads} threads: {e}"),
            })?;
            pool.install(|| go(&mut opts))
        }
    };
    let (verdict, stats) = detached(py, run)?;
    let d = PyDict::new(py);
    d.set_item("status", verdict.word())?;
    d.set_item("text", verdict.vnncomp_text())?;
    match &verdict {
        lirpa_verify::Verdict::Sat(ce) => {
            d.set_item("x", ce.x.clone().into_pyarray(py))?;
            d.set_item("y", ce.y.clone().into_pyarray(py))?;
        }
        _ => {
            d.set_item("x", py.None())?;
            d.set_item("y", py.None())?;
        }
    }
    let reason = match &verdict {
        lirpa_verify::Verdict::Unknown(why) => Some(why.clone()),
        _ => None,
    };
    d.set_item("reason", reason)?;
    d.set_item("seconds", started.elapsed().as_secs_f64())?;
    d.set_item("domains", stats.domains)?;
    d.set_item("attack_seconds", stats.attack_time.as_secs_f64())?;
    d.set_item("bab_seconds", stats.bab_time.as_secs_f64())?;
    Ok(d)
}

/// The operator types this build supports: `(domain, op_type, plugin, priority)`.
#[pyfunction]
fn operators() -> Vec<(String, String, String, i32)> {
    lirpa::registered_ops()
        .into_iter()
        .map(|r| {
            let d = if r.domain.is_empty() { "ai.onnx" } else { r.domain };
            (d.to_string(), r.op_type.to_string(), r.plugin.to_string(), r.priority)
        })
        .collect()
}

/// The default `BoundOptions` as JSON (the Python `options` dict mirrors it).
#[pyfunction]
fn default_options() -> String {
    serde_json::to_string(&BoundOptions { threads: 0, ..Default::default() }).expect("serializable")
}

/// The memory budget (bytes) of every load and bound computation; `set` changes it.
#[pyfunction]
#[pyo3(signature = (set=None))]
fn max_memory(set: Option<u64>) -> u64 {
    if let Some(b) = set {
        lirpa::core::budget::set_max_memory(b);
    }
    lirpa::core::budget::max_memory()
}

#[pymodule]
fn _lirpa(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Model>()?;
    m.add_function(wrap_pyfunction!(verify, m)?)?;
    m.add_function(wrap_pyfunction!(operators, m)?)?;
    m.add_function(wrap_pyfunction!(default_options, m)?)?;
    m.add_function(wrap_pyfunction!(max_memory, m)?)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}

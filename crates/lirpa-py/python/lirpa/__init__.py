"""lirpa: provable bounds on neural-network outputs, with auto_LiRPA's API.

The bound computation is the Rust library `lirpa` (IBP, CROWN, CROWN-IBP, alpha-CROWN,
forward and forward+backward on ONNX models); this package gives it auto_LiRPA's shape::

    import numpy as np, lirpa
    model = lirpa.BoundedModel("model.onnx")                # or the ONNX bytes
    ptb = lirpa.PerturbationLpNorm(norm=np.inf, eps=0.1)
    lb, ub = model.compute_bounds(x=centres, ptb=ptb, method="CROWN")  # (batch, n_out) each

A batch of centres (the leading dimension of ``x``) is bounded in one call, in
parallel. Every computation releases the GIL. Errors are Python exceptions
(``ValueError``, ``FileNotFoundError``, ``NotImplementedError`` for an operator no
plugin implements) carrying the Rust library's message.

``lirpa.verify(model, property)`` decides a VNN-LIB property (``sat`` with a
counterexample, ``unsat``, ``unknown`` or ``timeout``); ``lirpa.distributed.verify_many``
spreads many of them over a Ray cluster.
"""

from __future__ import annotations

import io
import json
import math
import os
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Tuple, Union

import numpy as np

from . import _lirpa

__version__ = _lirpa.__version__

__all__ = [
    "BoundedModel",
    "BoundedTensor",
    "PerturbationLpNorm",
    "VerifyResult",
    "verify",
    "from_torch",
    "operators",
    "default_options",
    "max_memory",
    "METHODS",
]

#: The bound methods (auto_LiRPA's names; ``"backward"`` and ``"CROWN-Optimized"`` are
#: accepted as aliases of CROWN and alpha-CROWN).
METHODS = ("IBP", "CROWN", "CROWN-IBP", "alpha-CROWN", "forward", "forward+backward")


def _norm_name(norm: Any) -> str:
    """``np.inf``/``"inf"``, ``2`` or ``1`` as the library's norm name."""
    if isinstance(norm, str):
        if norm.lower() in ("inf", "linf", "l_inf"):
            return "inf"
        if norm in ("1", "2"):
            return norm
    elif isinstance(norm, (int, float, np.integer, np.floating)):
        if math.isinf(float(norm)) and float(norm) > 0:
            return "inf"
        if float(norm) in (1.0, 2.0):
            return str(int(norm))
    raise ValueError(f"norm must be np.inf, 2 or 1, got {norm!r}")


class PerturbationLpNorm:
    """An Lp ball of radius ``eps`` around each row of ``x`` (``norm`` = ``np.inf``, 2
    or 1), or the box ``x_L``..``x_U`` (same leading batch dimension as ``x``), as
    auto_LiRPA's ``PerturbationLpNorm``."""

    def __init__(
        self,
        norm: Union[float, int, str] = np.inf,
        eps: Optional[float] = None,
        x_L: Optional[Any] = None,
        x_U: Optional[Any] = None,
    ) -> None:
        self.norm = norm
        self.norm_name = _norm_name(norm)
        if (x_L is None) != (x_U is None):
            raise ValueError("give both x_L and x_U, or neither")
        if x_L is None and eps is None:
            raise ValueError("give eps (a ball around x) or x_L and x_U (a box)")
        if x_L is not None and self.norm_name != "inf":
            raise ValueError("x_L/x_U describe a box: use norm=np.inf")
        if eps is not None:
            eps = float(eps)
            if not math.isfinite(eps) or eps < 0:
                raise ValueError(f"eps must be a finite number >= 0, got {eps}")
        self.eps = eps
        self.x_L = x_L
        self.x_U = x_U

    def __repr__(self) -> str:
        if self.x_L is not None:
            return "PerturbationLpNorm(norm=inf, x_L=..., x_U=...)"
        return f"PerturbationLpNorm(norm={self.norm_name}, eps={self.eps})"


class BoundedTensor:
    """A centre ``x`` with its perturbation (auto_LiRPA's ``BoundedTensor``), accepted
    as ``x`` by :meth:`BoundedModel.compute_bounds`."""

    def __init__(self, x: Any, ptb: PerturbationLpNorm) -> None:
        self.x = x
        self.ptb = ptb


def default_options() -> Dict[str, Any]:
    """The default bound options (the library's ``BoundOptions``, as a dict): the keys
    ``options=`` accepts. Unknown keys are refused."""
    return json.loads(_lirpa.default_options())


def operators() -> List[Tuple[str, str, str, int]]:
    """The operator types this build supports: ``(domain, op_type, plugin, priority)``."""
    return _lirpa.operators()


def max_memory(set: Optional[int] = None) -> int:
    """The memory budget in bytes of loads and bound computations (default half of the
    machine's memory); ``set`` changes it."""
    return _lirpa.max_memory(set)


def _rows(a: Any, dtype: np.dtype, what: str) -> np.ndarray:
    """``a`` as a C-contiguous (batch, elements) array of ``dtype``."""
    arr = np.asarray(a)
    if arr.dtype == object or not (
        np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)
    ):
        raise ValueError(f"{what} must be an array of numbers, got dtype {arr.dtype}")
    if arr.ndim == 0:
        raise ValueError(f"{what} must have a batch dimension, got a scalar")
    arr = arr.reshape(1, -1) if arr.ndim == 1 else arr.reshape(arr.shape[0], -1)
    return np.ascontiguousarray(arr, dtype=dtype)


def _to_numpy(x: Any) -> Any:
    """A torch tensor (or anything with ``.detach().cpu().numpy()``) as numpy."""
    if hasattr(x, "detach") and hasattr(x, "cpu"):
        return x.detach().cpu().numpy()
    return x


class BoundedModel:
    """An ONNX model ready for bounding (auto_LiRPA's ``BoundedModule``).

    ``source`` is a path or the ONNX bytes; ``dtype`` is ``np.float32`` (default) or
    ``np.float64``, the number type of every computation and of the returned arrays.
    ``perturbed`` maps initializer names (weights, biases) to a
    :class:`PerturbationLpNorm` with ``eps`` around their stored values (auto_LiRPA's
    ``BoundedParameter``). ``options`` are default bound options for every call (see
    :func:`default_options`)."""

    def __init__(
        self,
        source: Union[str, os.PathLike, bytes],
        dtype: Any = np.float32,
        perturbed: Optional[Mapping[str, PerturbationLpNorm]] = None,
        options: Optional[Mapping[str, Any]] = None,
    ) -> None:
        dt = np.dtype(dtype)
        if dt not in (np.dtype(np.float32), np.dtype(np.float64)):
            raise ValueError(f"dtype must be float32 or float64, got {dt}")
        weights = []
        for name, p in (perturbed or {}).items():
            if not isinstance(p, PerturbationLpNorm) or p.eps is None:
                raise ValueError(f"perturbed['{name}'] must be a PerturbationLpNorm with eps")
            weights.append((str(name), p.norm_name, float(p.eps)))
        if isinstance(source, (bytes, bytearray, memoryview)):
            source = bytes(source)
        elif isinstance(source, os.PathLike):
            source = os.fspath(source)
        self._m = _lirpa.Model(source, dt.name, weights)
        self.dtype = dt
        self.options = dict(options or {})

    @property
    def input_shape(self) -> Tuple[int, ...]:
        """The model input's shape (batch 1)."""
        return tuple(self._m.input_shape)

    @property
    def output_shape(self) -> Tuple[int, ...]:
        """The model output's shape (batch 1)."""
        return tuple(self._m.output_shape)

    @property
    def input_names(self) -> List[str]:
        """The graph inputs: the model's input, then the perturbed initializers."""
        return list(self._m.input_names)

    @property
    def name(self) -> str:
        return self._m.name

    @property
    def onnx_bytes(self) -> bytes:
        return self._m.onnx_bytes

    def __call__(self, x: Any) -> np.ndarray:
        """The model's outputs at each row of ``x``: ``(batch, n_out)``."""
        return self.forward(x)

    def forward(self, x: Any) -> np.ndarray:
        """The model's outputs at each row of ``x``: ``(batch, n_out)``."""
        return self._m.forward(_rows(_to_numpy(x), self.dtype, "x"))

    def compute_bounds(
        self,
        x: Any = None,
        ptb: Optional[PerturbationLpNorm] = None,
        method: str = "CROWN",
        C: Any = None,
        bound_lower: bool = True,
        bound_upper: bool = True,
        return_A: bool = False,
        options: Optional[Mapping[str, Any]] = None,
    ) -> Any:
        """Bounds of the model's outputs (or of ``C·y``) over the perturbation of each
        row of ``x``: returns ``(lb, ub)``, each ``(batch, n)`` in the model's dtype
        (``None`` for a side not asked for); with ``return_A`` also a dict by input
        name of ``{"lA", "uA", "lbias", "ubias"}`` (``(batch, n, n_in)`` and
        ``(batch, n)``).

        ``x``: the centres, ``(batch, *input_shape)`` or ``(batch, n_in)`` (a 1-D array
        is one row), or a :class:`BoundedTensor`; ``ptb``: a
        :class:`PerturbationLpNorm` (``None``: the input is exact, for models with
        perturbed weights). ``method``: one of :data:`METHODS`. ``C``: ``(rows, n_out)``
        for every row or ``(batch, rows, n_out)``. ``options``: bound options (see
        :func:`default_options`; merged over the model's), e.g. ``{"optimize":
        {"iterations": 50}, "threads": 1}``; ``threads`` defaults to every core."""
        if isinstance(x, BoundedTensor):
            if ptb is None:
                ptb = x.ptb
            x = x.x
        x = _to_numpy(x)
        opts = dict(self.options)
        opts.update(options or {})
        if not isinstance(method, str):
            raise ValueError(f"method must be a string (one of {', '.join(METHODS)}), got {method!r}")
        kw: Dict[str, Any] = {}
        if ptb is None:
            if x is None:
                raise ValueError("x is required")
            kind = "exact"
            kw["x"] = _rows(x, self.dtype, "x")
        elif not isinstance(ptb, PerturbationLpNorm):
            raise ValueError(f"ptb must be a PerturbationLpNorm, got {type(ptb).__name__}")
        elif ptb.x_L is not None:
            kind = "box"
            kw["x_l"] = _rows(_to_numpy(ptb.x_L), self.dtype, "x_L")
            kw["x_u"] = _rows(_to_numpy(ptb.x_U), self.dtype, "x_U")
        else:
            if x is None:
                raise ValueError("x (the centres of the balls) is required")
            kind = "ball"
            kw["x"] = _rows(x, self.dtype, "x")
            kw["norm"] = ptb.norm_name
            kw["eps"] = ptb.eps
        if C is not None:
            c = np.asarray(_to_numpy(C))
            if c.ndim not in (2, 3):
                raise ValueError(f"C must be (rows, n_out) or (batch, rows, n_out), got shape {c.shape}")
            kw["c"] = np.ascontiguousarray(c, dtype=self.dtype)
        lb, ub, a = self._m.compute_bounds(
            kind,
            method,
            lower=bool(bound_lower),
            upper=bool(bound_upper),
            return_a=bool(return_A),
            options=json.dumps(opts) if opts else None,
            **kw,
        )
        lb = lb if bound_lower else None
        ub = ub if bound_upper else None
        if return_A:
            return lb, ub, a
        return lb, ub

    def __repr__(self) -> str:
        return f"BoundedModel({self.name!r}, dtype={self.dtype.name}, input_shape={self.input_shape})"


@dataclass
class VerifyResult:
    """The answer of :func:`verify`: ``status`` is ``"sat"`` (with a counterexample
    ``x``, ``y``, checked by an independent float64 forward pass), ``"unsat"`` (the
    property holds), ``"unknown"`` (with ``reason``) or ``"timeout"``."""

    status: str
    x: Optional[np.ndarray] = None
    y: Optional[np.ndarray] = None
    reason: Optional[str] = None
    seconds: float = 0.0
    domains: int = 0
    attack_seconds: float = 0.0
    bab_seconds: float = 0.0
    #: The VNN-COMP result file's content (``sat`` and the counterexample, or the word).
    text: str = ""
    extra: Dict[str, Any] = field(default_factory=dict)

    @property
    def counterexample(self) -> Optional[Tuple[np.ndarray, np.ndarray]]:
        """``(x, y)`` for ``sat``, else ``None``."""
        return None if self.x is None else (self.x, self.y)

    @property
    def statistics(self) -> Dict[str, Any]:
        return {
            "seconds": self.seconds,
            "domains": self.domains,
            "attack_seconds": self.attack_seconds,
            "bab_seconds": self.bab_seconds,
        }


def _model_source(model: Any) -> Tuple[bytes, str]:
    if isinstance(model, BoundedModel):
        return model.onnx_bytes, model.name
    if isinstance(model, (bytes, bytearray, memoryview)):
        return bytes(model), "<bytes>"
    path = os.fspath(model)
    with open(path, "rb") as f:
        return f.read(), path


def _property_source(prop: Any) -> Tuple[str, bool]:
    """``(path or text, is_path)``: a ``PathLike`` is a path; a string is VNN-LIB text
    when it holds a declaration or a line break, a path otherwise."""
    if isinstance(prop, (bytes, bytearray)):
        return bytes(prop).decode("utf-8"), False
    if isinstance(prop, os.PathLike):
        return os.fspath(prop), True
    if not isinstance(prop, str):
        raise ValueError(f"the property must be a path or VNN-LIB text, got {type(prop).__name__}")
    if "declare-const" in prop or "\n" in prop or prop.lstrip().startswith("("):
        return prop, False
    return prop, True


def verify(
    model: Union["BoundedModel", str, os.PathLike, bytes],
    vnnlib: Union[str, os.PathLike, bytes],
    timeout: float = 60.0,
    threads: int = 0,
    seed: int = 0,
) -> VerifyResult:
    """Verify a VNN-LIB property (a path or its text) on a model (a
    :class:`BoundedModel`, a path or ONNX bytes), as ``lirpa verify`` does: attack,
    then branch and bound, within ``timeout`` seconds from the call. ``threads``: 0
    uses every core; otherwise a pool of that many threads runs the search."""
    data, name = _model_source(model)
    text, is_path = _property_source(vnnlib)
    r = _lirpa.verify(data, name, text, is_path, float(timeout), int(threads), int(seed))
    return VerifyResult(**r)


def from_torch(
    module: Any,
    example_input: Any,
    dtype: Any = np.float32,
    opset: int = 13,
    **kwargs: Any,
) -> BoundedModel:
    """Export a PyTorch ``nn.Module`` to ONNX in memory (``torch.onnx.export`` with
    ``example_input``) and load it as a :class:`BoundedModel` (``kwargs`` go to it).
    Needs PyTorch (an optional dependency: ``pip install lirpa[torch]``)."""
    try:
        import torch  # noqa: F401
    except ImportError as e:
        raise ImportError("lirpa.from_torch needs PyTorch: pip install torch onnx") from e
    buf = io.BytesIO()
    module = module.eval()
    export_kw = dict(input_names=["input"], output_names=["output"], opset_version=opset)
    try:
        torch.onnx.export(module, (example_input,), buf, dynamo=False, **export_kw)
    except TypeError:  # torch < 2.5 has no `dynamo` argument
        torch.onnx.export(module, (example_input,), buf, **export_kw)
    return BoundedModel(buf.getvalue(), dtype=dtype, **kwargs)

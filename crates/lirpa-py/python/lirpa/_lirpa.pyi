"""Type stubs of the native module ``lirpa._lirpa`` (crates/lirpa-py/src/lib.rs). Use
the ``lirpa`` package's API (``BoundedModel``, ``verify``); this module is its
implementation."""

import os
from typing import Any, Dict, List, Optional, Tuple, Union

import numpy as np
import numpy.typing as npt

__version__: str

class Model:
    """An ONNX model loaded in float32 or float64, with optional perturbed weights
    ``(initializer, norm, eps)``."""

    def __init__(
        self,
        source: Union[str, os.PathLike[str], bytes],
        dtype: str = "float32",
        weights: List[Tuple[str, str, float]] = ...,
    ) -> None: ...
    @property
    def dtype(self) -> str: ...
    @property
    def name(self) -> str: ...
    @property
    def input_shape(self) -> List[int]: ...
    @property
    def output_shape(self) -> List[int]: ...
    @property
    def input_names(self) -> List[str]: ...
    @property
    def onnx_bytes(self) -> bytes: ...
    def forward(self, x: npt.NDArray[Any]) -> npt.NDArray[Any]: ...
    def compute_bounds(
        self,
        kind: str,
        method: str,
        x: Optional[npt.NDArray[Any]] = None,
        x_l: Optional[npt.NDArray[Any]] = None,
        x_u: Optional[npt.NDArray[Any]] = None,
        norm: str = "inf",
        eps: float = 0.0,
        c: Optional[npt.NDArray[Any]] = None,
        lower: bool = True,
        upper: bool = True,
        return_a: bool = False,
        options: Optional[str] = None,
    ) -> Tuple[npt.NDArray[Any], npt.NDArray[Any], Dict[str, Dict[str, Optional[npt.NDArray[Any]]]]]: ...

def verify(
    model: bytes,
    name: str,
    vnnlib: str,
    is_path: bool,
    timeout: float,
    threads: int = 0,
    seed: int = 0,
) -> Dict[str, Any]: ...
def operators() -> List[Tuple[str, str, str, int]]: ...
def default_options() -> str: ...
def max_memory(set: Optional[int] = None) -> int: ...

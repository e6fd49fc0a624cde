"""Generates the small models bundled in this folder (run once at development time;
nothing at run time needs Python). Requires `pip install onnx`.

- toy.onnx: auto_LiRPA's examples/simple/toy.py network, y = W2 · relu(W1 · x) with
  W1 = [[1, -1], [2, -1]], W2 = [[1, -1]]. With x in [-1, 2] x [-2, 1] auto_LiRPA 0.3
  gives IBP [-6, 4], CROWN [-3, 3] (notes/auto_lirpa.md §4.2).
"""
import onnx
from onnx import TensorProto, helper, numpy_helper
import numpy as np

def toy():
    w1 = numpy_helper.from_array(np.array([[1, -1], [2, -1]], dtype=np.float32), "W1")
    w2 = numpy_helper.from_array(np.array([[1, -1]], dtype=np.float32), "W2")
    nodes = [
        helper.make_node("Gemm", ["x", "W1"], ["h"], name="fc1", transB=1),
        helper.make_node("Relu", ["h"], ["r"], name="relu1"),
        helper.make_node("Gemm", ["r", "W2"], ["y"], name="fc2", transB=1),
    ]
    g = helper.make_graph(nodes, "toy",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 1])], [w1, w2])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)], producer_name="lirpa-models")
    m.ir_version = 8
    onnx.checker.check_model(m)
    onnx.save(m, "toy.onnx")

toy()

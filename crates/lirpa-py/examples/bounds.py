"""The README's Python example: auto_LiRPA's toy network (models/toy.onnx), CROWN
bounds over the box [-1, 2] x [-2, 1] (auto_LiRPA's answer: [-3, 3]), then a batch of
three centres, each in an L-inf ball of radius 0.5, by every method in one call each."""

from pathlib import Path

import numpy as np

import lirpa

model = lirpa.BoundedModel(Path(__file__).resolve().parents[3] / "models" / "toy.onnx")
box = lirpa.PerturbationLpNorm(x_L=np.array([[-1.0, -2.0]]), x_U=np.array([[2.0, 1.0]]))
lb, ub = model.compute_bounds(ptb=box, method="CROWN")
print(f"CROWN over the box: [{lb[0, 0]:.8f}, {ub[0, 0]:.8f}]")

x = np.array([[0.0, 0.0], [1.0, -1.0], [-0.5, 0.5]])
ball = lirpa.PerturbationLpNorm(norm=np.inf, eps=0.5)
for method in lirpa.METHODS:
    lb, ub = model.compute_bounds(x=x, ptb=ball, method=method)
    rows = ", ".join(f"[{l:.4f}, {u:.4f}]" for l, u in zip(lb[:, 0], ub[:, 0]))
    print(f"{method:>16}: {rows}")

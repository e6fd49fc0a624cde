"""The Python side of the overhead measurement (benches/examples/batch_overhead.rs is
the Rust side, with the same work): CROWN bounds of the mlp_relu__linf_0.05 reference
MLP in an L-inf ball of radius 0.05 around 1,000 centres in one call, and around one
centre. Prints the best of several runs of each; numpy conversion included.

python3 crates/lirpa-py/examples/overhead.py"""

import time
import json
from pathlib import Path

import numpy as np

import lirpa

d = Path(__file__).resolve().parents[3].parent / "shared/reference/synthetic/mlp_relu__linf_0.05"
case = json.load(open(d / "case.json"))
c = np.array(case["center"])
model = lirpa.BoundedModel(d / "model.onnx")
n = 1000
r = np.arange(n)[:, None]
i = np.arange(c.size)[None, :]
x = c[None, :] + 0.01 * np.sin(20 * r + i)
ptb = lirpa.PerturbationLpNorm(norm=np.inf, eps=0.05)


def best(runs, f):
    out = []
    for _ in range(runs):
        t = time.perf_counter()
        f()
        out.append(time.perf_counter() - t)
    return min(out)


batch = best(7, lambda: model.compute_bounds(x=x, ptb=ptb, method="CROWN"))
one = best(2000, lambda: model.compute_bounds(x=x[:1], ptb=ptb, method="CROWN"))
print(f"python: batch of {n} centres {batch * 1e3:.3f} ms, one centre {one * 1e6:.1f} us")

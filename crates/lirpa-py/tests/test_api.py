"""The Python API: batches, number types, options, return_A, errors as exceptions,
the GIL released during a bound, and verification."""

import threading
import time

import numpy as np
import pytest

import lirpa
from conftest import load_case

TOY_PROP = """
(declare-const X_0 Real)
(declare-const X_1 Real)
(declare-const Y_0 Real)
(assert (>= X_0 -1.0))
(assert (<= X_0 2.0))
(assert (>= X_1 -2.0))
(assert (<= X_1 1.0))
(assert (>= Y_0 3.5))
"""


@pytest.fixture(scope="module")
def toy(repo):
    return lirpa.BoundedModel(repo / "models" / "toy.onnx")


@pytest.fixture(scope="module")
def mlp(shared):
    d = shared / "reference" / "synthetic" / "mlp_relu__linf_0.05"
    return lirpa.BoundedModel(d / "model.onnx"), load_case(d)


def test_toy_golden_values(toy):
    # auto_LiRPA's examples/simple/toy.py: CROWN over [-1, 2] x [-2, 1] is [-3, 3].
    ptb = lirpa.PerturbationLpNorm(x_L=np.array([[-1.0, -2.0]]), x_U=np.array([[2.0, 1.0]]))
    lb, ub = toy.compute_bounds(ptb=ptb, method="CROWN")
    assert lb.dtype == np.float32 and lb.shape == (1, 1)
    assert -3.00001 < lb[0, 0] <= -3.0 and ub[0, 0] == pytest.approx(3.0)
    # With a BoundedTensor, as auto_LiRPA writes it.
    lb2, ub2 = toy.compute_bounds(x=lirpa.BoundedTensor(np.array([[0.5, -0.5]]), ptb), method="CROWN")
    assert lb2[0, 0] == lb[0, 0] and ub2[0, 0] == ub[0, 0]


@pytest.mark.parametrize("method", lirpa.METHODS)
def test_batch_of_centres_in_one_call(mlp, method):
    """Several centres in one call give, row by row, the bounds of one call each."""
    model, case = mlp
    rng = np.random.default_rng(0)
    c0 = np.array(case["center"])
    x = np.stack([c0] + [c0 + 0.05 * rng.standard_normal(c0.shape) for _ in range(5)])
    ptb = lirpa.PerturbationLpNorm(norm=np.inf, eps=case["eps"])
    C = np.array(case["spec_c"])
    lb, ub = model.compute_bounds(x=x, ptb=ptb, method=method, C=C)
    assert lb.shape == (6, C.shape[0]) and ub.shape == (6, C.shape[0])
    for r in range(6):
        l1, u1 = model.compute_bounds(x=x[r], ptb=ptb, method=method, C=C)
        np.testing.assert_allclose(lb[r], l1[0], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(ub[r], u1[0], rtol=1e-5, atol=1e-6)
        # Sound at the centre of each row.
        y = model.forward(x[r])[0] @ C.T
        assert np.all(lb[r] <= y + 1e-5) and np.all(ub[r] >= y - 1e-5)
    # Row 0 is the reference case itself: parity with a recorded version.
    if method in ("IBP", "CROWN", "CROWN-IBP", "forward"):
        ref = case["spec_bounds"][method]["by_version"]
        assert any(
            np.allclose(lb[0], v["lower"], rtol=1e-4, atol=1e-4) and np.allclose(ub[0], v["upper"], rtol=1e-4, atol=1e-4)
            for v in ref.values()
        )


def test_batch_of_boxes_and_per_row_specifications(mlp):
    model, case = mlp
    c0 = np.array(case["center"])
    x = np.stack([c0, c0 + 0.1, c0 - 0.1])
    ptb = lirpa.PerturbationLpNorm(x_L=x - 0.05, x_U=x + 0.05)
    C = np.array(case["spec_c"])
    Cs = np.stack([C, -C, 2 * C])
    lb, ub = model.compute_bounds(ptb=ptb, method="CROWN", C=Cs)
    for r in range(3):
        ball = lirpa.PerturbationLpNorm(norm=np.inf, eps=0.05)
        l1, u1 = model.compute_bounds(x=x[r : r + 1], ptb=ball, method="CROWN", C=Cs[r])
        np.testing.assert_allclose(lb[r], l1[0], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(ub[r], u1[0], rtol=1e-5, atol=1e-6)


def test_float64_and_input_shapes(shared):
    d = shared / "reference" / "synthetic" / "cnn__linf_0.02"
    case = load_case(d)
    m64 = lirpa.BoundedModel(d / "model.onnx", dtype=np.float64)
    m32 = lirpa.BoundedModel(d / "model.onnx")
    x = np.array(case["center"]).reshape([1] + case["input_shape"][1:])  # (1, C, H, W)
    x = np.concatenate([x, x])  # a batch of 2, 4-D
    ptb = lirpa.PerturbationLpNorm(eps=case["eps"])
    lb64, ub64 = m64.compute_bounds(x=x, ptb=ptb, method="IBP")
    lb32, ub32 = m32.compute_bounds(x=x.astype(np.float32), ptb=ptb, method="IBP")
    assert lb64.dtype == np.float64 and lb32.dtype == np.float32 and lb64.shape == (2, 10)
    np.testing.assert_allclose(lb64, lb32, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(ub64, ub32, rtol=1e-4, atol=1e-4)


def test_bound_sides_options_and_return_a(mlp):
    model, case = mlp
    x = np.array([case["center"]])
    ptb = lirpa.PerturbationLpNorm(eps=case["eps"])
    lb, ub = model.compute_bounds(x=x, ptb=ptb, bound_upper=False)
    assert ub is None and lb.shape == (1, 10)
    # Options mirror BoundOptions: more α-CROWN iterations never loosen the bound.
    l5, _ = model.compute_bounds(x=x, ptb=ptb, method="alpha-CROWN", options={"optimize": {"iterations": 5}})
    l30, _ = model.compute_bounds(x=x, ptb=ptb, method="alpha-CROWN", options={"optimize": {"iterations": 30}})
    assert np.all(l30 >= l5 - 1e-6)
    assert set(lirpa.default_options()) >= {"optimize", "threads", "relax", "conv_mode"}
    # return_A: the bound is min over the ball of lA·x + lbias (L∞: lA·x0 − eps·|lA|·1).
    lb, ub, A = model.compute_bounds(x=x, ptb=ptb, method="CROWN", return_A=True)
    a = A[model.input_names[0]]
    la, lbias = a["lA"][0].astype(np.float64), a["lbias"][0]
    est = la @ x[0] - case["eps"] * np.abs(la).sum(axis=1) + lbias
    np.testing.assert_allclose(est, lb[0], rtol=1e-4, atol=1e-4)


def test_operators_listed():
    ops = {op for _, op, _, _ in lirpa.operators()}
    assert {"Gemm", "Relu", "Conv", "Softmax", "Sigmoid"} <= ops


def test_errors_are_exceptions(toy, tmp_path):
    ptb = lirpa.PerturbationLpNorm(eps=0.1)
    with pytest.raises(FileNotFoundError, match="no_such_model.onnx"):
        lirpa.BoundedModel(tmp_path / "no_such_model.onnx")
    with pytest.raises(ValueError, match="not a valid ONNX model"):
        lirpa.BoundedModel(b"\x07\x07 certainly not protobuf")
    with pytest.raises(ValueError, match="3 values per row but the model input has 2"):
        toy.compute_bounds(x=np.zeros((4, 3)), ptb=ptb)
    with pytest.raises(ValueError, match="non-finite"):
        toy.compute_bounds(x=np.array([[np.nan, 0.0]]), ptb=ptb)
    with pytest.raises(ValueError, match="non-finite"):
        toy.compute_bounds(x=np.array([[np.inf, 0.0]]), ptb=ptb)
    with pytest.raises(ValueError, match="unknown method 'crown-plus'"):
        toy.compute_bounds(x=np.zeros((1, 2)), ptb=ptb, method="crown-plus")
    with pytest.raises(ValueError, match="unknown field `iterationz`"):
        toy.compute_bounds(x=np.zeros((1, 2)), ptb=ptb, options={"optimize": {"iterationz": 3}})
    with pytest.raises(ValueError, match="C has 3 columns but the model output has 1"):
        toy.compute_bounds(x=np.zeros((1, 2)), ptb=ptb, C=np.ones((2, 3)))
    with pytest.raises(ValueError, match="eps"):
        lirpa.PerturbationLpNorm(eps=float("nan"))
    with pytest.raises(ValueError, match="norm"):
        lirpa.PerturbationLpNorm(norm=3, eps=0.1)
    with pytest.raises(ValueError, match="x_L has 2 rows but x_U has 1"):
        toy.compute_bounds(ptb=lirpa.PerturbationLpNorm(x_L=np.zeros((2, 2)), x_U=np.ones((1, 2))))
    with pytest.raises(ValueError, match="dtype"):
        lirpa.BoundedModel(toy.onnx_bytes, dtype=np.int32)
    with pytest.raises(ValueError, match="graph input 'x'|fc9.weight|not"):
        lirpa.BoundedModel(toy.onnx_bytes, perturbed={"fc9.weight": lirpa.PerturbationLpNorm(eps=0.1)})
    with pytest.raises(ValueError, match="timeout"):
        lirpa.verify(toy, TOY_PROP, timeout=-1)
    with pytest.raises(FileNotFoundError, match="missing.vnnlib"):
        lirpa.verify(toy, str(tmp_path / "missing.vnnlib"))
    with pytest.raises(ValueError, match="declares 5 inputs"):
        lirpa.verify(toy, TOY_PROP.replace("(declare-const X_1 Real)", "\n".join(
            f"(declare-const X_{i} Real)\n(assert (>= X_{i} 0))\n(assert (<= X_{i} 1))" for i in range(1, 5))))
    # The interpreter is still fine and the model still works.
    lb, ub = toy.compute_bounds(x=np.zeros((1, 2)), ptb=ptb)
    assert np.all(lb <= ub)


def test_an_operator_no_plugin_implements_is_not_implemented(tmp_path):
    # A one-node model of an operator nobody registers (hand-encoded ONNX protobuf).
    def field(num, wire, payload):
        return bytes([num << 3 | wire]) + (bytes([len(payload)]) + payload if wire == 2 else payload)

    shape = field(1, 2, field(1, 0, b"\x01")) + field(1, 2, field(1, 0, b"\x02"))
    vi = lambda name: field(1, 2, name) + field(2, 2, field(1, 2, field(1, 0, b"\x01") + field(2, 2, shape)))
    node = field(1, 2, b"x") + field(2, 2, b"y") + field(3, 2, b"n") + field(4, 2, b"Hardmax")
    graph = field(1, 2, node) + field(2, 2, b"g") + field(11, 2, vi(b"x")) + field(12, 2, vi(b"y"))
    model = field(1, 0, b"\x07") + field(7, 2, graph) + field(8, 2, field(2, 0, b"\x0d"))
    with pytest.raises(NotImplementedError, match="Hardmax"):
        lirpa.BoundedModel(model)


def test_gil_is_released_during_a_bound(shared):
    """Another Python thread runs while a long bound is computed."""
    d = shared / "reference" / "vnncomp" / "mnistfc_256x6_prop5_0.03"
    case = load_case(d)
    model = lirpa.BoundedModel(d / "model.onnx")
    lo, hi = np.array(case["input_lower"]), np.array(case["input_upper"])
    x = np.stack([(lo + hi) / 2] * 8)
    ptb = lirpa.PerturbationLpNorm(x_L=np.stack([lo] * 8), x_U=np.stack([hi] * 8))
    started, done, took = threading.Event(), threading.Event(), []

    def work():
        started.set()
        t = time.perf_counter()
        model.compute_bounds(x=x, ptb=ptb, method="alpha-CROWN", options={"threads": 1})
        took.append(time.perf_counter() - t)
        done.set()

    th = threading.Thread(target=work)
    th.start()
    started.wait()
    ticks = 0
    while not done.is_set():
        ticks += 1
        time.sleep(0)
    th.join()
    assert took[0] > 0.3, f"the bound took only {took[0]:.3f} s: too short to tell"
    # With the GIL held for the whole call this thread would be stopped for all of it.
    assert ticks > 1000, f"only {ticks} iterations of the other thread in {took[0]:.2f} s"


def test_verify_unsat_sat_and_text(toy, repo, shared):
    r = lirpa.verify(toy, TOY_PROP, timeout=10)
    assert r.status == "unsat" and r.counterexample is None and r.text == "unsat\n"
    sat = TOY_PROP.replace("(>= Y_0 3.5)", "(>= Y_0 0.9)")  # the maximum is 1, at (-1, -2)
    r = lirpa.verify(repo / "models" / "toy.onnx", sat, timeout=10, threads=1)
    assert r.status == "sat" and r.text.startswith("sat\n")
    x, y = r.counterexample
    assert x.shape == (2,) and y[0] >= 0.9
    assert -1 <= x[0] <= 2 and -2 <= x[1] <= 1
    np.testing.assert_allclose(lirpa.BoundedModel(toy.onnx_bytes, dtype=np.float64).forward(x)[0], y, rtol=1e-9)
    bench = shared / "benchmarks" / "vnncomp2021_acasxu"
    r = lirpa.verify(bench / "ACASXU_run2a_1_1_batch_2000.onnx", bench / "prop_1.vnnlib", timeout=60)
    assert r.status == "unsat" and r.domains > 0 and r.statistics["seconds"] > 0


def test_from_torch_without_torch_says_so():
    try:
        import torch  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match="needs PyTorch"):
            lirpa.from_torch(object(), None)
        return
    import torch

    net = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.ReLU(), torch.nn.Linear(2, 1))
    m = lirpa.from_torch(net, torch.zeros(1, 2))
    lb, ub = m.compute_bounds(x=np.zeros((1, 2)), ptb=lirpa.PerturbationLpNorm(eps=0.1))
    y = net(torch.zeros(1, 2)).detach().numpy()
    assert lb[0, 0] <= y[0, 0] <= ub[0, 0]


def test_readme_example_runs(repo):
    import subprocess
    import sys

    out = subprocess.run(
        [sys.executable, str(repo / "crates" / "lirpa-py" / "examples" / "bounds.py")],
        capture_output=True, text=True, check=True,
    ).stdout
    assert out.startswith("CROWN over the box: [-3.0000") and "alpha-CROWN" in out, out

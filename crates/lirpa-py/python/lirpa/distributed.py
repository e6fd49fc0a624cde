"""Verification of many (model, property) instances over a Ray cluster.

Each instance is one Ray task running :func:`lirpa.verify` with as many threads as
the task was given CPUs (``cpus_per_task``); results come back as the tasks finish.
The model and property files are read on the calling machine and shipped through
Ray's object store (each model once), so the workers need the ``lirpa`` package but
not the files.

On this machine, ``ray.init()`` (``address=None``) starts a local cluster. On several
machines, start Ray on each (same Python and ``lirpa`` version on all)::

    head$    ray start --head --port=6379
    worker$  ray start --address=HEAD_IP:6379

then pass ``address="auto"`` (on a cluster machine) or ``address="ray://HEAD_IP:10001"``
(Ray Client, from elsewhere) to :func:`verify_many`.
"""

from __future__ import annotations

import csv
import os
import sys
import time
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import lirpa

__all__ = ["Instance", "InstanceResult", "read_instances", "iter_verify", "verify_many"]


@dataclass
class Instance:
    """One verification instance: an ONNX model, a VNN-LIB property and its timeout
    (seconds; ``None``: the ``timeout`` given to :func:`verify_many`)."""

    onnx: str
    vnnlib: str
    timeout: Optional[float] = None


@dataclass
class InstanceResult:
    """The result of one instance (``index`` is its position in the input list)."""

    index: int
    instance: Instance
    result: lirpa.VerifyResult
    #: Wall seconds of the task, loading included.
    run_seconds: float

    @property
    def status(self) -> str:
        return self.result.status


def read_instances(csv_path: Union[str, os.PathLike]) -> List[Instance]:
    """A VNN-COMP ``instances.csv`` (``onnx,vnnlib,timeout`` per line, paths relative
    to its folder)."""
    base = os.path.dirname(os.fspath(csv_path))
    out = []
    with open(csv_path, newline="") as f:
        for row in csv.reader(f):
            if not row or not row[0].strip():
                continue
            if len(row) < 2:
                raise ValueError(f"{csv_path}: bad line {','.join(row)!r}")
            t = float(row[2]) if len(row) > 2 and row[2].strip() else None
            out.append(Instance(os.path.join(base, row[0].strip()), os.path.join(base, row[1].strip()), t))
    return out


def _as_instance(x: Any) -> Instance:
    if isinstance(x, Instance):
        return x
    if isinstance(x, (tuple, list)) and len(x) in (2, 3):
        return Instance(os.fspath(x[0]), os.fspath(x[1]), float(x[2]) if len(x) == 3 else None)
    raise ValueError(f"an instance is (onnx, vnnlib) or (onnx, vnnlib, timeout), got {x!r}")


def _run(model: bytes, name: str, prop: str, timeout: float, seed: int) -> Tuple[Dict[str, Any], float]:
    """The Ray task: one verification with the task's CPUs as its threads."""
    import ray

    t = time.monotonic()
    cpus = ray.get_runtime_context().get_assigned_resources().get("CPU", 1)
    threads = max(1, int(cpus))
    r = lirpa.verify(model, prop, timeout=timeout, threads=threads, seed=seed)
    return r.__dict__, time.monotonic() - t


class _Progress:
    """A progress bar: tqdm when installed, otherwise one stderr line rewritten."""

    def __init__(self, total: int, enabled: bool) -> None:
        self.total, self.enabled, self.done, self.counts = total, enabled, 0, {}
        self.start = time.monotonic()
        self.bar = None
        # A terminal gets a bar; a log (CI) a line every tenth of the work.
        self.tty = enabled and sys.stderr.isatty()
        self.every = max(1, total // 10)
        if self.tty:
            try:
                from tqdm import tqdm

                self.bar = tqdm(total=total, unit="inst", file=sys.stderr)
            except ImportError:
                pass

    def update(self, status: str) -> None:
        self.done += 1
        self.counts[status] = self.counts.get(status, 0) + 1
        if not self.enabled:
            return
        summary = " ".join(f"{k}={v}" for k, v in sorted(self.counts.items()))
        if self.bar is not None:
            self.bar.set_postfix_str(summary)
            self.bar.update(1)
        elif self.tty or self.done % self.every == 0 or self.done == self.total:
            el = time.monotonic() - self.start
            start, end = ("\r", "") if self.tty else ("", "\n")
            sys.stderr.write(f"{start}[{self.done}/{self.total}] {summary} {el:.1f}s{end}")
            sys.stderr.flush()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        elif self.tty:
            sys.stderr.write("\n")


def iter_verify(
    instances: Union[Sequence[Any], str, os.PathLike],
    timeout: Optional[float] = None,
    address: Optional[str] = None,
    cpus_per_task: float = 1,
    seed: int = 0,
    progress: bool = True,
) -> Iterator[InstanceResult]:
    """Like :func:`verify_many`, but yield each :class:`InstanceResult` as its task
    finishes (completion order)."""
    import ray

    if isinstance(instances, (str, os.PathLike)):
        items = read_instances(instances)
    else:
        items = [_as_instance(x) for x in instances]
    if not ray.is_initialized():
        ray.init(address=address, include_dashboard=False, log_to_driver=False)
    task = ray.remote(num_cpus=cpus_per_task)(_run)
    models: Dict[str, Any] = {}
    futures = {}
    for i, inst in enumerate(items):
        t = inst.timeout if inst.timeout is not None else (timeout if timeout is not None else 60.0)
        if timeout is not None:
            t = min(t, timeout)
        if inst.onnx not in models:
            with open(inst.onnx, "rb") as f:
                models[inst.onnx] = ray.put(f.read())
        with open(inst.vnnlib) as f:
            prop = f.read()
        futures[task.remote(models[inst.onnx], inst.onnx, prop, t, seed)] = i
    bar = _Progress(len(items), progress)
    pending = list(futures)
    try:
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            for ref in done:
                i = futures[ref]
                r, secs = ray.get(ref)
                res = InstanceResult(i, items[i], lirpa.VerifyResult(**r), secs)
                bar.update(res.status)
                yield res
    finally:
        bar.close()
        for ref in pending:
            ray.cancel(ref, force=True)


def verify_many(
    instances: Union[Sequence[Any], str, os.PathLike],
    timeout: Optional[float] = None,
    address: Optional[str] = None,
    cpus_per_task: float = 1,
    csv_path: Optional[Union[str, os.PathLike]] = None,
    category: str = "",
    seed: int = 0,
    progress: bool = True,
    on_result: Optional[Callable[[InstanceResult], None]] = None,
) -> List[InstanceResult]:
    """Verify every instance as a Ray task and return the results in input order.

    ``instances``: ``(onnx, vnnlib)`` or ``(onnx, vnnlib, timeout)`` tuples,
    :class:`Instance` objects, or the path of a VNN-COMP ``instances.csv``.
    ``timeout``: seconds per instance where it has none, and a cap where it has one.
    ``address``: the Ray cluster (``None``: this machine, or the cluster ``ray.init``
    already joined). ``cpus_per_task``: CPUs (and threads) per verification.
    ``csv_path``: a CSV in VNN-COMP's results format (``category,onnx,vnnlib,
    prepare_secs,result,run_secs``), one line written as each instance finishes.
    ``on_result`` is called with each result as it arrives."""
    results: List[Optional[InstanceResult]] = []
    f = open(csv_path, "w", newline="") if csv_path is not None else None
    try:
        w = csv.writer(f) if f is not None else None
        for res in iter_verify(instances, timeout, address, cpus_per_task, seed, progress):
            while len(results) <= res.index:
                results.append(None)
            results[res.index] = res
            if w is not None:
                w.writerow([category, res.instance.onnx, res.instance.vnnlib, 0, res.status, f"{res.run_seconds:.6f}"])
                f.flush()
            if on_result is not None:
                on_result(res)
    finally:
        if f is not None:
            f.close()
    return [r for r in results if r is not None]

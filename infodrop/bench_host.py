"""The host cost of one call: tiny tensors, so that the kernels cost next to nothing and what is
measured is Python, argument checks, dispatch and autograd (`python -m infodrop bench --host`
and benchmarks/test_host_overhead.py).

On a GPU, training is launch-bound when this cost exceeds the kernels' time: it is the number
to compare with the per-layer kernel times of docs/performance.md.  On a CUDA device each row
also gives the device time per call (CUDA events around the same calls), side by side.
"""

import time
from dataclasses import dataclass

import torch
from torch.nn import functional as F

from .functional import information_dropout
from .modules import InformationDropout

SHAPE = (2, 4)
PASSES = ("forward (no grad)", "forward+backward")


@dataclass(frozen=True)
class HostContender:
    name: str
    help: str


CONTENDERS = {c.name: c for c in (
    HostContender("functional", "infodrop.information_dropout(x, alpha_logit)"),
    HostContender("module", "infodrop.InformationDropout()(x, alpha_logit), KL from .kl"),
    HostContender("raw-op", "torch.ops.infodrop.information_dropout.default, fixed seed"),
    HostContender("dropout", "torch.nn.functional.dropout(x, 0.5)"),
    HostContender("mul", "x * y: one elementwise op, the floor of any call"),
)}


def make_call(name: str, pass_: str, device: str = "cpu"):
    """A zero-argument callable for one call of ``name`` in ``pass_`` (no synchronisation)."""
    backward = pass_ == "forward+backward"
    g = torch.Generator().manual_seed(0)
    x = torch.rand(SHAPE, generator=g).to(device).requires_grad_(backward)
    y = torch.randn(SHAPE, generator=g).to(device).requires_grad_(backward and name != "dropout")
    grad_z, grad_kl = torch.ones(SHAPE, device=device), torch.ones(SHAPE[0], device=device)
    if name == "functional":
        def forward():
            return information_dropout(x, y)
    elif name == "module":
        layer = InformationDropout().to(device)

        def forward():
            return layer(x, y), layer.kl
    elif name == "raw-op":
        op = torch.ops.infodrop.information_dropout.default
        scalars = [torch.tensor(v, device=device) for v in (1, 0.0, 1.0)]

        def forward():
            return op(x, y, scalars[0], 0, scalars[1], scalars[2], "log_uniform", 0.7, 1e-3,
                      False, False, True)
    elif name == "dropout":
        def forward():
            return (F.dropout(x, 0.5, True),)
    elif name == "mul":
        def forward():
            return (x * y,)
    else:
        raise ValueError(f"host contender must be one of {tuple(CONTENDERS)}, got {name!r}")
    if pass_ not in PASSES:
        raise ValueError(f"pass must be one of {PASSES}, got {pass_!r}")

    inputs = (x,) if name in ("dropout", "mul") else (x, y)
    if backward:
        # autograd.grad, not .backward(): the inputs stand for activations, whose gradients
        # flow on rather than accumulate into .grad
        def call():
            outputs = forward()
            torch.autograd.grad(outputs, inputs, (grad_z, grad_kl)[:len(outputs)])
    else:
        def call():
            with torch.no_grad():
                forward()
    return call


def time_call(call, calls: int, rounds: int, device: str = "cpu"):
    """(host, device) microseconds per call: the best of ``rounds`` loops of ``calls`` calls,
    after one untimed loop.  Host time is the loop's wall time before any synchronisation;
    device time (CUDA only, else None) is CUDA events around the same loop."""
    cuda = device == "cuda"
    for _ in range(calls):
        call()
    host, gpu = [], []
    for _ in range(rounds):
        if cuda:
            torch.cuda.synchronize()
            start_event, end_event = (torch.cuda.Event(enable_timing=True) for _ in range(2))
            start_event.record()
        start = time.perf_counter()
        for _ in range(calls):
            call()
        host.append((time.perf_counter() - start) / calls * 1e6)
        if cuda:
            end_event.record()
            torch.cuda.synchronize()
            gpu.append(start_event.elapsed_time(end_event) / calls * 1e3)
    return min(host), (min(gpu) if cuda else None)


def run(device: str = "cpu", calls: int = 2000, rounds: int = 5):
    """One record per (contender, pass)."""
    records = []
    for name in CONTENDERS:
        for pass_ in PASSES:
            host, gpu = time_call(make_call(name, pass_, device), calls, rounds, device)
            records.append({"contender": name, "pass": pass_, "host_us": host,
                            "device_us": gpu, "shape": list(SHAPE), "device": device})
    return records


def format_table(records) -> str:
    """Rows: contenders; columns: each pass's host time and its ratio to F.dropout's."""
    by = {(r["contender"], r["pass"]): r for r in records}
    cuda = any(r["device_us"] is not None for r in records)
    head = f"{'contender':<12}"
    for pass_ in PASSES:
        head += f" {pass_ + ' us':>24} {'/ dropout':>9}" + (f" {'device us':>10}" if cuda else "")
    lines = [head, "-" * len(head)]
    for name in dict.fromkeys(r["contender"] for r in records):
        line = f"{name:<12}"
        for pass_ in PASSES:
            r, base = by[name, pass_], by[("dropout", pass_)]
            line += f" {r['host_us']:24.1f} {r['host_us'] / base['host_us']:8.2f}x"
            if cuda:
                line += f" {r['device_us']:10.1f}"
        lines.append(line)
    return "\n".join(lines)

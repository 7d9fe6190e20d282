"""The host cost of one layer: tiny tensors, so that the kernels cost next to nothing and what
is measured is Python, argument checks, dispatch and autograd (`python -m infodrop bench
--host` and benchmarks/test_host_overhead.py).  Two measures:

- "call": one call, and (forward+backward) the backward of exactly its outputs, given their
  gradients (torch.autograd.grad): the layer's cost as the op's user sees it;
- "in a network": LAYERS calls chained as the layers of a network are, each on the previous
  output with its own alpha_logit, and one backward of the loss (the output's sum plus the KL
  of every layer summed once, as infodrop.kl_divergence does), over LAYERS: what one more
  layer adds to a training step, without the fixed cost of a backward call per layer.

On a GPU, training is launch-bound when this cost exceeds the kernels' time: it is the number
to compare with the per-layer kernel times of docs/performance.md.  On a CUDA device each row
also gives the device time per layer (CUDA events around the same steps), side by side.
"""

import time
from dataclasses import dataclass

import torch
from torch.nn import functional as F

from ._backends import _runs_on, backends
from .functional import information_dropout
from .modules import InformationDropout

SHAPE = (2, 4)
LAYERS = 10
PASSES = ("forward (no grad)", "forward+backward")


@dataclass(frozen=True)
class HostContender:
    name: str
    help: str


CONTENDERS = {c.name: c for c in (
    HostContender("functional", "infodrop.information_dropout(x, alpha_logit): the fastest "
                  "backend of the device (the compiled kernel: cuda on a GPU)"),
    HostContender("triton", "infodrop.information_dropout(x, alpha_logit, backend='triton'): the "
                  "fallback without nvcc, whose host time issue 19 holds to 1.5x cuda's"),
    HostContender("module", "infodrop.InformationDropout()(x, alpha_logit), KL from .kl"),
    HostContender("raw-op", "torch.ops.infodrop.information_dropout.default, fixed seed"),
    HostContender("dropout", "torch.nn.functional.dropout(x, 0.5)"),
    HostContender("mul", "x * y: one elementwise op, the floor of any call"),
)}


def _layers(name: str, device: str):
    """LAYERS callables (z, alpha_logit) -> (z, kl or None) of contender ``name``."""
    if name == "functional":
        return [lambda z, y: information_dropout(z, y)] * LAYERS
    if name == "triton":
        return [lambda z, y: information_dropout(z, y, backend="triton")] * LAYERS
    if name == "module":
        def call_module(layer):
            return lambda z, y: (layer(z, y), layer.kl)

        return [call_module(InformationDropout().to(device)) for _ in range(LAYERS)]
    if name == "raw-op":
        op = torch.ops.infodrop.information_dropout.default
        seed, mu, sigma = (torch.tensor(v, device=device) for v in (1, 0.0, 1.0))
        return [lambda z, y: op(z, y, seed, 0, mu, sigma, "log_uniform", 0.7, 1e-3, False,
                                False, True)] * LAYERS
    if name == "dropout":
        return [lambda z, y: (F.dropout(z, 0.5, True), None)] * LAYERS
    if name == "mul":
        return [lambda z, y: (z * y, None)] * LAYERS
    raise ValueError(f"host contender must be one of {tuple(CONTENDERS)}, got {name!r}")


def make_call(name: str, pass_: str, device: str = "cpu", layers: int = 1):
    """A zero-argument callable running one step of ``name`` in ``pass_`` over ``layers`` chained
    layers (1: one call and the backward of its outputs); no synchronisation."""
    if pass_ not in PASSES:
        raise ValueError(f"pass must be one of {PASSES}, got {pass_!r}")
    backward = pass_ == "forward+backward"
    calls = _layers(name, device)[:layers]
    g = torch.Generator().manual_seed(0)
    x = torch.rand(SHAPE, generator=g).to(device).requires_grad_(backward)
    # one alpha_logit per layer, as each layer's alpha branch makes its own; F.dropout has none
    logits = [torch.randn(SHAPE, generator=g).to(device).requires_grad_(backward
                                                                       and name != "dropout")
              for _ in range(layers)]
    inputs = [t for t in [x] + logits if t.requires_grad]
    grad_z, grad_kl = torch.ones(SHAPE, device=device), torch.ones(SHAPE[0], device=device)

    def forward():
        z, kls = x, []
        for layer, y in zip(calls, logits):
            z, kl = layer(z, y)
            if kl is not None:
                kls.append(kl)
        return z, kls

    def call_backward():
        # autograd.grad, not .backward(): the inputs stand for activations, whose gradients
        # flow on rather than accumulate into .grad
        z, kls = forward()
        if layers == 1:
            outputs = [z] + kls
            torch.autograd.grad(outputs, inputs, [grad_z, grad_kl][:len(outputs)])
        else:
            torch.autograd.grad(z.sum() + torch.stack(kls).sum() if kls else z.sum(), inputs)

    def call_forward():
        with torch.no_grad():
            forward()

    return call_backward if backward else call_forward


def time_call(call, calls: int, rounds: int, device: str = "cpu"):
    """(host, device) microseconds per step: the best of ``rounds`` loops of ``calls`` steps,
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


MEASURES = {"call": 1, "in a network": LAYERS}


def runs_on(name: str, device: str) -> bool:
    """Whether contender ``name`` runs on ``device`` here: triton needs a GPU (or the
    interpreter, TRITON_INTERPRET=1, for CPU tensors) and triton installed; the others always."""
    if name != "triton":
        return True
    return backends()["triton"] and _runs_on("triton", torch.device(device))


def run(device: str = "cpu", steps: int = 200, rounds: int = 5, contenders=None):
    """One record per (contender, pass, measure) of ``contenders`` (default: all) that run on
    ``device`` (runs_on); times in microseconds per layer."""
    records = []
    for name in contenders or CONTENDERS:
        if name not in CONTENDERS:
            raise ValueError(f"host contender must be one of {tuple(CONTENDERS)}, got {name!r}")
        if not runs_on(name, device):
            continue
        for pass_ in PASSES:
            for measure, layers in MEASURES.items():
                host, gpu = time_call(make_call(name, pass_, device, layers),
                                      steps * LAYERS // layers, rounds, device)
                records.append({"contender": name, "pass": pass_, "measure": measure,
                                "layers": layers, "host_us": host / layers,
                                "device_us": None if gpu is None else gpu / layers,
                                "shape": list(SHAPE), "device": device})
    return records


def ratios(records, name: str, base: str) -> dict:
    """{(pass, measure): host time of ``name`` / host time of ``base``} where both ran."""
    by = {(r["contender"], r["pass"], r["measure"]): r["host_us"] for r in records}
    return {(p, m): by[name, p, m] / by[base, p, m] for p in PASSES for m in MEASURES
            if (name, p, m) in by and (base, p, m) in by}


def format_table(records) -> str:
    """Rows: contenders; columns: each pass and measure, host time per layer and its ratio to
    F.dropout's (and the device time on a GPU)."""
    by = {(r["contender"], r["pass"], r["measure"]): r for r in records}
    cuda = any(r["device_us"] is not None for r in records)
    columns = [(p, m) for p in PASSES for m in MEASURES]
    head = f"{'contender':<12}" + "".join(
        f" {p + ', ' + m:>34}" + (f" {'device':>7}" if cuda else "") for p, m in columns)
    lines = [head, "-" * len(head)]
    for name in dict.fromkeys(r["contender"] for r in records):
        line = f"{name:<12}"
        for pass_, measure in columns:
            r, base = by[name, pass_, measure], by["dropout", pass_, measure]
            line += f" {r['host_us']:22.1f} us {r['host_us'] / base['host_us']:7.2f}x"
            if cuda:
                line += f" {r['device_us']:7.1f}"
        lines.append(line)
    return "\n".join(lines)

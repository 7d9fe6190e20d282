"""The cost of Information Dropout inside a real network: one whole training step (forward,
cross-entropy, backward, SGD with momentum) of a torchvision network, and its peak memory, with
the layers put in by infodrop.convert (`python -m infodrop bench --network` and
benchmarks/test_network_step.py; needs the "models" extra).

Contenders, on the same targets of each network:
- plain: the network as built;
- dropout: nn.Dropout(0.5) on the targets' outputs: what the paper's layer replaces;
- heads-<head>: the alpha heads alone (computed and back-propagated, no dropout op): what the
  paper's alpha branch costs by itself;
- fused-<head>: infodrop.convert with that alpha head, the fused op (backend "auto");
- reference-conv: the same with backend="reference" (the pure-PyTorch op);
- <contender>-cl: plain, dropout, the heads and the fused op with the model and its input in
  channels_last, the layout convnets are trained in on GPUs ("/ plain" and "added ms" compare
  within a layout: plain-cl is their base).
"added ms" is what a contender adds to the step of what it is built on (fused over its heads
alone, dropout and heads over plain); "layer ms" is the dropout layers' own forward and backward
in a profiled step (LAYER_EVENTS): the issue's "own share" of nn.Dropout and of the fused op,
measured directly, since a few ms are below the step-to-step noise of a shared machine.  The
contenders alternate in passes (see run), so that a machine that slows down during the run
slows all of them alike.  The "fused" steps have the KL term in the loss
(KL_WEIGHT * kl.mean(): the cost of its backward is in the step, as with kl_weight).
"""

import gc
import statistics
import sys
import time
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from .conversion import convert
from .modules import kl_divergence

# beta / N_train of a run with beta = 1 on 100k images: the KL term's backward is always part of
# the step, whatever its weight
KL_WEIGHT = 1e-5
HEADS = ("conv", "1x1")


@dataclass(frozen=True)
class Network:
    name: str
    builder: str  # the torchvision.models function
    targets: tuple


NETWORKS = {n.name: n for n in (
    # the setting: Information Dropout on the outputs of the last three stages
    Network("resnet18", "resnet18", ("layer2", "layer3", "layer4")),
    # the ReLUs that end the last three conv groups (before their max-pooling)
    Network("vgg11_bn", "vgg11_bn", ("features.13", "features.20", "features.27")),
)}

_CONTIGUOUS = {
    "plain": "the network as built",
    "dropout": "nn.Dropout(0.5) on the targets' outputs",
    **{f"heads-{h}": f"the {h} alpha heads alone, no dropout op" for h in HEADS},
    **{f"fused-{h}": f"infodrop.convert(alpha_head={h!r}), fused op" for h in HEADS},
    "reference-conv": "infodrop.convert(alpha_head='conv', backend='reference')",
}
CHANNELS_LAST = "-cl"  # the suffix of a contender's channels_last twin
CONTENDERS = {**_CONTIGUOUS, **{name + CHANNELS_LAST: f"{text}, channels_last"
                                for name, text in _CONTIGUOUS.items() if name != "reference-conv"}}


def layout(contender: str):
    """(the contender without its layout suffix, whether it is channels_last)."""
    stem = contender.removesuffix(CHANNELS_LAST)
    return stem, stem != contender


class _TouchAlpha(torch.autograd.Function):
    """z = x, and zero gradients for alpha_logit and the logit bias (the head's bias, where the
    wrapper hands it to the op, whose kernels then add it: InfoDropWrapper): the heads run
    forward and backward as they would under Information Dropout, with no dropout op between."""

    @staticmethod
    def forward(ctx, x, alpha_logit, logit_bias):
        ctx.logit_shape = alpha_logit.shape
        ctx.bias = None if logit_bias is None else (logit_bias.shape, logit_bias.dtype)
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        bias = None if ctx.bias is None else grad.new_zeros(ctx.bias[0], dtype=ctx.bias[1])
        return grad, grad.new_zeros(()).expand(ctx.logit_shape), bias


class _NoDropout(nn.Module):
    """In place of a wrapper's InformationDropout: its backend, which decides whether the
    wrapper hands the head's bias to the layer (InfoDropWrapper), and no op."""

    def __init__(self, backend="auto"):
        super().__init__()
        self.backend = backend

    def forward(self, x, alpha_logit, logit_bias=None):
        return _TouchAlpha.apply(x, alpha_logit, logit_bias)


def build(network, contender: str, image_size: int, *, backend: str | None = None):
    """The network of ``contender`` (random weights, seeded), in training mode.  ``network``: a
    name of NETWORKS or a Network (gpu_check's ResNet-50); ``backend``: the fused contenders'
    backend (default "auto")."""
    import torchvision  # the "models" extra, only when a network is benchmarked

    spec = network if isinstance(network, Network) else NETWORKS[network]
    contender, channels_last = layout(contender)
    torch.manual_seed(0)
    model = getattr(torchvision.models, spec.builder)()
    example = torch.randn(2, 3, image_size, image_size)
    if contender == "dropout":
        modules = dict(model.named_modules())
        for name in spec.targets:
            parent, _, child = name.rpartition(".")
            modules[parent]._modules[child] = nn.Sequential(modules[name], nn.Dropout(0.5))
    elif contender != "plain":
        kind, head = contender.split("-")
        options = {"backend": "reference"} if kind == "reference" else \
            {"backend": backend} if backend else {}
        convert(model, spec.targets, alpha_head=head, example_input=example, **options)
        if kind == "heads":
            for m in model.modules():
                if hasattr(m, "alpha_head"):
                    m.dropout = _NoDropout(m.dropout.backend)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model.train()


def make_step(network, contender: str, batch: int = 32, image_size: int = 64, *,
              device: str = "cpu", backend: str | None = None, autocast: torch.dtype | None = None,
              compile_backend=None):
    """One training step of ``contender``, as a closure over its model, data and optimizer, on
    ``device``, under autocast to ``autocast`` where given (gpu_check: bf16 on CUDA).

    ``compile_backend``: where given, the model runs as ``torch.compile(model,
    backend=compile_backend)`` ("inductor": torch.compile's default, as gpu_check times it; the
    CPU tests take the cheap "aot_eager"); the loss, the KL term (kl_divergence of the compiled
    model, as a user writes it) and the optimizer stay eager."""
    model = build(network, contender, image_size, backend=backend).to(device)
    forward = model if compile_backend is None else torch.compile(model, backend=compile_backend)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(batch, 3, image_size, image_size, generator=g).to(device)
    if layout(contender)[1]:
        x = x.contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 1000, (batch,), generator=g).to(device)
    has_kl = contender.startswith(("fused", "reference"))
    device_type = torch.device(device).type

    def step():
        with torch.autocast(device_type, dtype=autocast, enabled=autocast is not None):
            loss = F.cross_entropy(forward(x), y)
            if has_kl:
                loss = loss + KL_WEIGHT * kl_divergence(forward).mean()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


# The layer's own work in a profiled step: top-level events (inclusive CPU time) of its forward
# and backward.  nn.Dropout on the CPU is bernoulli_ + mul inside aten::dropout, its backward a
# MulBackward0 (the only multiplication with a gradient in the dropout contender's networks);
# on CUDA, native_dropout.
LAYER_EVENTS = {  # (forward events, backward events)
    "dropout": (("aten::dropout",), ("autograd::engine::evaluate_function: MulBackward0",
                                     "autograd::engine::evaluate_function: NativeDropoutBackward0")),
    "fused": (("infodrop::information_dropout",),
              ("autograd::engine::evaluate_function: InformationDropoutBackward",)),
}


def layer_seconds(step, contender) -> float | None:
    """CPU seconds of the dropout layers' own forward and backward in one profiled step (not the
    alpha heads); None for the contenders without such a layer or whose layer is many small ops
    (the reference).  An error if the step's profile lacks the forward or the backward events
    (renamed ops would otherwise read as a layer that costs nothing)."""
    from torch.profiler import ProfilerActivity, profile

    events = LAYER_EVENTS.get(contender.split("-")[0])
    if events is None:
        return None
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        step()
    total = {}
    for e in prof.events():
        for i, names in enumerate(events):
            if e.name in names:
                total[i] = total.get(i, 0) + e.cpu_time_total
    if len(total) != 2:
        raise RuntimeError(f"bench --network: the profile of {contender!r} has no event of its "
                           f"layer's {'forward' if 0 not in total else 'backward'} ({events})")
    return sum(total.values()) / 1e6


def peak_bytes(step) -> int | None:
    """Peak bytes of live CPU tensors during one call of ``step`` (parameters, optimizer state
    and data included), from the profiler's memory timeline; None where the profiler cannot
    give one (its memory timeline is a private API)."""
    from torch.profiler import ProfilerActivity, profile

    try:
        with profile(activities=[ProfilerActivity.CPU], profile_memory=True, record_shapes=True,
                     with_stack=True) as prof:
            step()
        from torch.profiler._memory_profiler import Action

        live = peak = 0
        for _, action, (key, _), size in prof._memory_profile().timeline:
            if key.device.type == "cpu":
                live += -size if action == Action.DESTROY else \
                    size if action in (Action.PREEXISTING, Action.CREATE) else 0
                peak = max(peak, live)
        return peak
    except Exception:  # noqa: BLE001 - a private API: any failure means "not measured"
        return None


def run(networks, contenders, *, batch=32, image_size=64, warmup=1, repeats=3, blocks=3,
        memory=True, progress=True):
    """One record per (network, contender): step times, their median per pass and overall, and
    the peak bytes of a step.

    ``blocks`` passes over the contenders, each building its model afresh and timing
    ``repeats`` steps after ``warmup``: the contenders alternate, and one model lives at a time
    (vgg11_bn with its optimizer state is 1.6 GB).  Comparisons are made within a pass and their
    median taken over the passes (paired), so that load that comes and goes on a shared machine
    shifts all contenders of a pass alike."""
    records = []
    for network in networks:
        times, layer, peaks = {c: [] for c in contenders}, {c: [] for c in contenders}, {}
        for block in range(blocks):
            for c in contenders:
                if progress:
                    print(f"\r{network}: pass {block + 1}/{blocks} {c}".ljust(50), end="",
                          file=sys.stderr, flush=True)
                step = make_step(network, c, batch, image_size)
                for _ in range(warmup):
                    step()
                pass_times = []
                for _ in range(repeats):
                    start = time.perf_counter()
                    step()
                    pass_times.append(time.perf_counter() - start)
                times[c].append(pass_times)
                layer[c].append(layer_seconds(step, c))
                if block == 0:
                    peaks[c] = peak_bytes(step) if memory else None
                del step
                gc.collect()
        if progress:
            print(file=sys.stderr)
        for c in contenders:
            records.append({"network": network, "contender": c, "batch": batch,
                            "image_size": image_size, "targets": list(NETWORKS[network].targets),
                            "times_s": [t for pass_times in times[c] for t in pass_times],
                            "pass_medians_s": [statistics.median(t) for t in times[c]],
                            "median_s": statistics.median(t for pass_times in times[c] for t in pass_times),
                            "layer_s": None if None in layer[c] else statistics.median(layer[c]),
                            "peak_bytes": peaks[c]})
    return records


def _paired(records, network, contender, base, compare):
    """Median over the passes of compare(contender's pass median, base's), None where either
    was not measured."""
    medians = {r["contender"]: r["pass_medians_s"] for r in records if r["network"] == network}
    if contender not in medians or base not in medians:
        return None
    return statistics.median(compare(a, b) for a, b in zip(medians[contender], medians[base]))


def ratio_to_plain(records, network, contender):
    """Over plain in the contender's layout."""
    plain = "plain" + (CHANNELS_LAST if layout(contender)[1] else "")
    return _paired(records, network, contender, plain, lambda a, b: a / b)


def own_share(records, network, contender):
    """Seconds the contender's layer adds to the step beyond what it is built on, in the same
    layout: fused and reference over the heads alone (same head), the heads and dropout over
    plain."""
    stem, channels_last = layout(contender)
    base = {"dropout": "plain", "reference-conv": "heads-conv", **{f"heads-{h}": "plain" for h in HEADS},
            **{f"fused-{h}": f"heads-{h}" for h in HEADS}}.get(stem)
    if base is None:
        return None
    base += CHANNELS_LAST if channels_last else ""
    return _paired(records, network, contender, base, lambda a, b: a - b)


def targets_met(records):
    """The issue's two targets, per network and layout where measured: [(text, met)]."""
    verdicts = []
    for network in dict.fromkeys(r["network"] for r in records):
        layer = {r["contender"]: r.get("layer_s") for r in records if r["network"] == network}
        for suffix, in_layout in (("", ""), (CHANNELS_LAST, " in channels_last")):
            dropout = layer.get("dropout" + suffix)
            for head in HEADS:
                fused = layer.get(f"fused-{head}{suffix}")
                if fused is not None and dropout is not None:
                    verdicts.append((f"{network}: the fused layer's own time with the {head} head"
                                     f"{in_layout} ({fused * 1e3:.1f} ms) <= nn.Dropout's "
                                     f"({dropout * 1e3:.1f} ms)", fused <= dropout))
            ratio = ratio_to_plain(records, network, "fused-1x1" + suffix)
            if network == "resnet18" and ratio is not None:
                verdicts.append((f"resnet18: the step with the 1x1 head{in_layout} is {ratio:.3f}x "
                                 "plain's (target <= 1.05x)", ratio <= 1.05))
    return verdicts


def format_table(records) -> str:
    lines = []
    for network in dict.fromkeys(r["network"] for r in records):
        rows = [r for r in records if r["network"] == network]
        plains = {layout(r["contender"])[1]: r for r in rows if layout(r["contender"])[0] == "plain"}
        first = rows[0]
        lines += ["", f"{network}, batch {first['batch']}, {first['image_size']}x{first['image_size']}, "
                      f"targets {', '.join(first['targets'])}",
                  f"{'contender':<15} {'step ms':>9} {'/ plain':>8} {'added ms':>9} {'layer ms':>9} "
                  f"{'peak MiB':>9} {'/ plain':>8}"]
        lines.append("-" * len(lines[-1]))
        for r in rows:
            ratio = ratio_to_plain(records, network, r["contender"])
            ratio = f"{ratio:7.3f}x" if ratio is not None else f"{'-':>8}"
            share = own_share(records, network, r["contender"])
            share = f"{share * 1e3:+9.1f}" if share is not None else f"{'':>9}"
            layer = f"{r['layer_s'] * 1e3:9.1f}" if r.get("layer_s") is not None else f"{'':>9}"
            peak, plain = r["peak_bytes"], plains.get(layout(r["contender"])[1])
            mib = f"{peak / 2**20:9.1f}" if peak else f"{'-':>9}"
            mratio = f"{peak / plain['peak_bytes']:7.3f}x" if peak and plain and plain["peak_bytes"] \
                else f"{'-':>8}"
            lines.append(f"{r['contender']:<15} {r['median_s'] * 1e3:9.1f} {ratio} {share} {layer} {mib} "
                         f"{mratio}")
    verdicts = targets_met(records)
    if verdicts:
        lines += ["", "targets:"] + [f"  {'met   ' if ok else 'missed'} {text}" for text, ok in verdicts]
    return "\n".join(lines)

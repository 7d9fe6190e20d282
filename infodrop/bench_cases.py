"""The benchmark matrix shared by `python -m infodrop bench` and `pytest benchmarks/`.

A case is a layer shape and dtype on a device; a pass is "forward" (no grad) or "forward+backward";
a contender is one way of computing the layer (or a yardstick beside it).  make_step() turns
(contender, case, pass) into a zero-argument callable that runs one iteration, so both harnesses
time exactly the same work.
"""

import math
from dataclasses import dataclass

import torch

from . import reference
from ._backends import backends
from .functional import information_dropout
from .testing import DTYPES, make_grads
from .testing import make_inputs as make_layer_inputs


@dataclass(frozen=True)
class Case:
    """One layer's activations: shape (batch first), dtype, device, and whether the tensors are
    channels_last (4-D shapes only; the layout convnets are trained in on GPUs)."""

    name: str
    shape: tuple
    dtype: torch.dtype = torch.float32
    device: str = "cpu"
    channels_last: bool = False

    def __post_init__(self):
        if self.channels_last and len(self.shape) != 4:
            raise ValueError(f"channels_last needs a 4-D shape (N, C, H, W), got {self.shape}")

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    @property
    def label(self) -> str:
        dims = "x".join(map(str, self.shape))
        layout = " channels_last" if self.channels_last else ""
        return f"{self.name} {dims} {str(self.dtype).removeprefix('torch.')} {self.device}{layout}"


# The paper's layers (docs/spec.md section 1): the MLP of Fig. 3a, All-CNN-32's two dropout layers and
# All-CNN-96's first, float32; bfloat16 once, at the shape with the most published timings.
SHAPES = {
    "mlp": ((256, 1024), torch.float32),
    "allcnn32-a": ((128, 96, 16, 16), torch.float32),
    "allcnn32-b": ((128, 192, 8, 8), torch.float32),
    "allcnn96": ((64, 32, 48, 48), torch.float32),
    "allcnn32-a-bf16": ((128, 96, 16, 16), torch.bfloat16),
}
PASSES = ("forward", "forward+backward")


def parse_case(text: str, device: str = "cpu") -> Case:
    """A name of SHAPES, or dimensions like "4x8x3" with an optional ":dtype" ("4x8:bfloat16")."""
    if text in SHAPES:
        shape, dtype = SHAPES[text]
        return Case(text, shape, dtype, device)
    dims, _, dtype_name = text.partition(":")
    dtype_name = dtype_name or "float32"
    if dtype_name not in DTYPES:
        raise ValueError(f"unknown dtype {dtype_name!r} in {text!r}; one of {list(DTYPES)}")
    try:
        shape = tuple(int(n) for n in dims.split("x"))
    except ValueError:
        raise ValueError(f"{text!r} is neither a shape name ({', '.join(SHAPES)}) nor "
                         "dimensions like 4x8x3[:dtype]") from None
    if len(shape) < 2 or min(shape) < 1:
        raise ValueError(f"{text!r}: need a batch and at least one more dimension, all >= 1")
    return Case("custom", shape, DTYPES[dtype_name], device)


@dataclass(frozen=True)
class Contender:
    """How one contender runs, and the least memory traffic its own computation needs.

    ``traffic`` counts full-size tensors (element_size * numel bytes each) read or written once:
    (forward, backward).  The per-sample KL sums (B values) are left out.
    """

    name: str
    help: str
    uses_logit: bool  # takes (x, alpha_logit) and returns (z, kl); else x -> z
    traffic: tuple
    device_types: tuple = ("cpu", "cuda")


def _fused(backend):
    def run(x, logit):
        return information_dropout(x, logit, backend=backend)

    return run


def _reference(x, logit):
    # As a user without infodrop's kernels would write it: PyTorch's own normal noise.
    return reference.information_dropout(x, logit, torch.randn_like(x))


def _dropout(x):
    return torch.nn.functional.dropout(x, p=0.5, training=True)


def _clone(x):
    return x.clone()


# forward reads x and alpha_logit and writes z (3); backward reads grad_z, x and alpha_logit and
# writes grad_x and grad_logit (5).  Dropout: x -> z, grad_z -> grad_x.  Clone's backward hands
# grad_z through untouched: no traffic.
_LAYER_TRAFFIC, _DROPOUT_TRAFFIC, _CLONE_TRAFFIC = (3, 5), (2, 2), (2, 0)
CONTENDERS = {
    "fused-cpu": Contender("fused-cpu", "infodrop's fused op, compiled CPU kernels", True,
                           _LAYER_TRAFFIC, ("cpu",)),
    "fused-cuda": Contender("fused-cuda", "infodrop's fused op, CUDA kernels", True,
                            _LAYER_TRAFFIC, ("cuda",)),
    "fused-triton": Contender("fused-triton", "infodrop's fused op, Triton kernels", True,
                              _LAYER_TRAFFIC, ("cuda",)),
    "reference": Contender("reference", "eager pure-PyTorch reference, noise from randn_like",
                           True, _LAYER_TRAFFIC),
    "reference-compiled": Contender("reference-compiled", "torch.compile of that reference",
                                    True, _LAYER_TRAFFIC),
    "dropout": Contender("dropout", "torch.nn.functional.dropout, binary, p = 0.5", False,
                         _DROPOUT_TRAFFIC),
    "clone": Contender("clone", "x.clone(): the memory-traffic floor", False, _CLONE_TRAFFIC),
}
FUSED = ("fused-cpu", "fused-cuda", "fused-triton")

_compiled_reference = None


def _function(contender: Contender):
    global _compiled_reference
    if contender.name in FUSED:
        return _fused(contender.name.removeprefix("fused-"))
    if contender.name == "reference-compiled":
        if _compiled_reference is None:
            # One compiled function, static shapes: each (shape, dtype, grad mode) of the matrix
            # is its own graph, so raise dynamo's per-function recompile limit above their count.
            torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, 64)
            _compiled_reference = torch.compile(_reference, dynamic=False)
        return _compiled_reference
    return {"reference": _reference, "dropout": _dropout, "clone": _clone}[contender.name]


def unavailable(contender: Contender, device: str):
    """Why the contender cannot run on this device here, or None when it can."""
    if device not in contender.device_types:
        return f"{contender.name} does not run on {device}"
    if contender.name in FUSED and not backends()[contender.name.removeprefix("fused-")]:
        return f"backend {contender.name.removeprefix('fused-')!r} is not available here"
    return None


def in_layout(case: Case, tensors):
    """``tensors`` (detached) in the case's layout: the same values, channels_last strides for the
    full-size ones where the case asks for them, requires_grad kept."""
    def convert(t):
        same = t.detach()
        if case.channels_last and t.dim() == 4:
            same = same.contiguous(memory_format=torch.channels_last)
        return same.requires_grad_(t.requires_grad)

    return tuple(convert(t) for t in tensors)


def make_inputs(case: Case, requires_grad: bool, seed: int = 0):
    """The layer's inputs (as after a ReLU) and its output gradients for one case, in its layout."""
    x, logit = make_layer_inputs(case.shape, case.dtype, seed=seed, device=case.device)
    grad_z, grad_kl = make_grads(case.shape, case.dtype, seed=seed + 1, device=case.device)
    x, logit, grad_z, grad_kl = in_layout(case, (x, logit, grad_z, grad_kl))
    return x.requires_grad_(requires_grad), logit.requires_grad_(requires_grad), grad_z, grad_kl


def make_step(contender: Contender, case: Case, pass_: str, *, inputs=None, sync: bool = True):
    """A callable running one iteration of ``pass_``; with ``sync`` it waits for the device before
    returning (for wall-clock timers; CUDA-event timers such as triton.testing.do_bench want no
    synchronisation per call).  ``inputs``: make_inputs(case, requires_grad=True) made once, for
    many steps at a shape too large to draw again for each (the forward runs under no_grad)."""
    if pass_ not in PASSES:
        raise ValueError(f"pass must be one of {PASSES}, got {pass_!r}")
    backward = pass_ == "forward+backward"
    x, logit, grad_z, grad_kl = inputs if inputs is not None else make_inputs(case, backward)
    fn = _function(contender)
    inputs = (x, logit) if contender.uses_logit else (x,)
    grads = (grad_z, grad_kl) if contender.uses_logit else (grad_z,)
    sync = torch.cuda.synchronize if sync and case.device == "cuda" else (lambda: None)

    if backward:
        def step():
            outputs = fn(*inputs)
            outputs = outputs if contender.uses_logit else (outputs,)
            # autograd.grad, not .backward(): no accumulation into .grad between iterations
            torch.autograd.grad(outputs, inputs, grads)
            sync()
    else:
        def step():
            with torch.no_grad():
                fn(*inputs)
            sync()
    return step


def saved_bytes(contender: Contender, case: Case) -> int:
    """Bytes that one forward with grad keeps alive for backward, measured, not estimated.

    Every tensor autograd saves passes through a saved_tensors_hooks pack hook; the bytes are
    those of the distinct storages behind them (a tensor saved twice, or a view of a saved
    storage, counts once; an input saved counts, since the graph keeps it alive).
    """
    x, logit, _, _ = make_inputs(case, requires_grad=True)
    fn = _function(contender)
    storages = {}

    def pack(tensor):
        storage = tensor.untyped_storage()
        storages[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        outputs = fn(x, logit) if contender.uses_logit else fn(x)
    del outputs
    return sum(storages.values())


def traffic_bytes(contender: Contender, case: Case, pass_: str) -> int:
    """Least bytes the contender's computation must move in one iteration of ``pass_``."""
    forward, backward = contender.traffic
    tensors = forward + (backward if pass_ == "forward+backward" else 0)
    return tensors * case.numel * torch.empty((), dtype=case.dtype).element_size()

"""The eager call path of information_dropout: what made it cost ~8x F.dropout's host time is
gone (a filesystem lookup of triton on every call, two tensors made per call for constant
options, torch.ops' generic argument conversion, a Python autograd wrapper), and the fast
path is the same op as torch.ops.infodrop.information_dropout.  Timings are in
benchmarks/test_host_overhead.py and `python -m infodrop bench --host`, not here."""

import importlib.util

import pytest
import torch
from torch.overrides import TorchFunctionMode

import infodrop
from infodrop import _backends
from infodrop.testing import make_inputs

from ._helpers import requires_compiled

pytestmark = requires_compiled


def test_backend_resolution_does_not_search_the_import_path_per_call(monkeypatch):
    x, logit = make_inputs((2, 4))
    infodrop.information_dropout(x, logit)
    infodrop.backends()
    calls = []
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda *a, **k: calls.append(a) or real(*a, **k))
    for _ in range(3):
        infodrop.information_dropout(x, logit)
        _backends.resolve("auto", torch.device("cuda"))
        infodrop.backends()
    assert calls == []


def test_an_explicit_backend_is_resolved_without_asking_the_driver(monkeypatch):
    """backend="cpu" (or "triton", "cuda") went through backends(), which asked
    torch.cuda.is_available() and built a dict on every call; tensors on the backend's device
    already say it can run there."""
    x, logit = make_inputs((2, 4))
    asked = []
    real = torch.cuda.is_available
    monkeypatch.setattr(torch.cuda, "is_available", lambda: asked.append(1) or real())
    for backend in ("cpu", "reference"):
        infodrop.information_dropout(x, logit, backend=backend)
        assert _backends.resolve(backend, torch.device("cpu")) == backend
    assert asked == []


def _saved_scalars(x, logit, **options):
    """The 0-dim tensors autograd saves for the backward (seed, mu, sigma) of one call."""
    saved = []

    def pack(t):
        saved.append(t)
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        infodrop.information_dropout(x, logit, **options)
    return [t for t in saved if t.dim() == 0]


def test_constant_options_are_not_made_on_every_call():
    x, logit = make_inputs((2, 4))
    x.requires_grad_()
    first, second = _saved_scalars(x, logit), _saved_scalars(x, logit)
    # seed, mu, sigma: the seed is drawn per call; mu and sigma (numbers) are the same tensors
    assert len(first) == len(second) == 3
    assert first[0] is not second[0]
    assert first[1] is second[1] and first[2] is second[2]
    assert (first[1].item(), first[2].item()) == (0.0, 1.0)
    # a learned sigma is passed through as it is, not copied
    sigma = torch.tensor(1.5, requires_grad=True)
    assert _saved_scalars(x, logit, prior="log_normal", sigma=sigma)[2] is sigma


def test_constants_made_under_inference_mode_still_serve_autograd():
    x, logit = make_inputs((2, 4), torch.float64)
    with torch.inference_mode():
        infodrop.information_dropout(x, logit, prior="log_normal", mu=0.25)
    x.requires_grad_()
    z, kl = infodrop.information_dropout(x, logit, prior="log_normal", mu=0.25)
    (z.sum() + kl.sum()).backward()
    assert torch.isfinite(x.grad).all()


class _RecordOps(TorchFunctionMode):
    def __init__(self):
        super().__init__()
        self.seen = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        self.seen.append(func)
        return func(*args, **(kwargs or {}))


def test_a_torch_function_mode_sees_the_op_and_gets_the_same_result():
    x, logit = make_inputs((3, 7))
    eager = infodrop.information_dropout(x, logit, seed=5)
    with _RecordOps() as mode:
        seen = infodrop.information_dropout(x, logit, seed=5)
    assert torch.ops.infodrop.information_dropout.default in mode.seen
    for a, b in zip(eager, seen):
        assert torch.equal(a, b)


@pytest.mark.parametrize("training", ["False", 1, None])
def test_training_must_be_a_bool(training):
    """A string "False" is truthy: it applied noise."""
    x, logit = make_inputs((2, 4))
    with pytest.raises(TypeError, match="training must be a bool"):
        infodrop.information_dropout(x, logit, training=training)

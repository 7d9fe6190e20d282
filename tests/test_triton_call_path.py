"""The eager call path of the Triton backend (issue 19 point 3: its host time per call at most
1.5x the cuda path's): an eager call on plain tensors runs the op's bodies through an
autograd.Function (infodrop.triton.ops.InformationDropoutTriton), not through torch.library's
custom-op dispatch, which took about half the host time of a forward + backward; and it gives
what the op gives, bit for bit, gradients included.  Whatever must see the op (a dispatch mode,
torch.func transforms, torch.jit.trace, torch.compile: tests/test_compile_modes.py) still gets
it.  Runs where
the Triton kernels run: on a GPU, and on the CPU under TRITON_INTERPRET=1 (tests/test_triton.py
runs this file so)."""

import warnings

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

import infodrop

from ._helpers import interpreted

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
pytestmark = [pytest.mark.skipif(
    not infodrop.backends()["triton"] or (DEVICE == "cpu" and not interpreted()),
    reason="the Triton kernels run on a GPU, or on the CPU under TRITON_INTERPRET=1")]
if DEVICE == "cuda":  # then among the tests `make gpu-check` runs (-m cuda)
    pytestmark.append(pytest.mark.cuda)


def _inputs(dtype=torch.float32):
    g = torch.Generator().manual_seed(0)
    x = torch.rand(3, 5, 4, 4, generator=g).to(DEVICE, dtype).requires_grad_()
    logit = torch.randn(3, 5, 4, 4, generator=g).to(DEVICE, dtype).requires_grad_()
    return x, logit


def _op_args(x, logit):
    seed = torch.tensor(7, dtype=torch.int64, device=DEVICE)
    zero, one = (torch.tensor(v, device=DEVICE) for v in (0.0, 1.0))
    return x, logit, seed, 3, zero, one, "log_uniform", 0.7, 1e-3, False, False, True


def _with_grads(z, kl, x, logit):
    grad_z = torch.linspace(-1, 1, z.numel(), device=DEVICE).reshape(z.shape)
    grad_kl = torch.arange(1.0, kl.numel() + 1, device=DEVICE)
    return (z, kl) + torch.autograd.grad((z, kl), (x, logit), (grad_z, grad_kl))


def test_an_eager_call_runs_without_the_custom_op_and_gives_what_the_op_gives(monkeypatch):
    from infodrop.triton import ops

    x, logit = _inputs()
    want = _with_grads(*torch.ops.infodrop_triton.information_dropout(*_op_args(x, logit)),
                       x, logit)
    calls = []
    op = ops.information_dropout
    monkeypatch.setattr(ops, "information_dropout", lambda *a: calls.append(a) or op(*a))
    z, kl = ops.fused(*_op_args(x, logit), direct=True)
    assert calls == []
    assert type(z.grad_fn).__name__ == "InformationDropoutTritonBackward"
    for name, w, g in zip(("z", "kl", "grad_x", "grad_logit"), want, _with_grads(z, kl, x, logit)):
        assert torch.equal(g, w), name
    with torch.no_grad():  # nothing to differentiate: the forward body alone
        z_no_grad, kl_no_grad = ops.fused(*_op_args(x, logit), direct=True)
    assert z_no_grad.grad_fn is None and calls == []
    assert torch.equal(z_no_grad, want[0]) and torch.equal(kl_no_grad, want[1])
    # infodrop.information_dropout takes this path for plain tensors in eager mode
    z, _ = infodrop.information_dropout(x, logit, seed=7, offset=3, backend="triton")
    assert type(z.grad_fn).__name__ == "InformationDropoutTritonBackward" and calls == []


def test_the_eager_path_gradients_are_not_differentiable_as_the_ops_are():
    x, logit = _inputs(torch.float64)
    z, kl = infodrop.information_dropout(x, logit, seed=7, backend="triton")
    grad_x, = torch.autograd.grad(z.sum() + kl.sum(), x, create_graph=True)
    with pytest.raises(RuntimeError, match="not differentiable"):
        grad_x.sum().backward()


class _Seen(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.ops = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops.append(func)
        return func(*args, **(kwargs or {}))


def test_a_dispatch_mode_sees_the_op_and_gets_the_same_result():
    x, logit = _inputs()
    eager = infodrop.information_dropout(x, logit, seed=5, backend="triton")
    with _Seen() as mode:
        seen = infodrop.information_dropout(x, logit, seed=5, backend="triton")
    assert torch.ops.infodrop_triton.information_dropout.default in mode.ops
    for a, b in zip(eager, seen):
        assert torch.equal(a, b)


def test_torch_func_transforms_still_get_the_op():
    """vmap runs the op once per slice (PyTorch's batching fallback for custom ops); the
    direct path's autograd.Function has no vmap rule and would refuse."""
    x, logit = (t.detach() for t in _inputs())
    got = torch.func.vmap(lambda a, b: infodrop.information_dropout(
        a, b, seed=1, backend="triton")[0])(x, logit)
    seed = torch.tensor(1, dtype=torch.int64, device=DEVICE)
    zero, one = (torch.tensor(v, device=DEVICE) for v in (0.0, 1.0))
    for b in range(x.shape[0]):
        want, _ = torch.ops.infodrop_triton.information_dropout(
            x[b], logit[b], seed, 0, zero, one, "log_uniform", 0.7, 1e-3, False, False, True)
        assert torch.equal(got[b], want)


def test_torch_jit_trace_records_the_op():
    """The tracer records dispatcher ops only: through the direct path it saw the body's
    allocations and sums, not the kernels, and the trace failed (interpreter) or replayed
    without them; it gets the op, as it did before the direct path (the cuda path's typed
    binding goes through the dispatcher and is recorded)."""
    x, logit = (t.detach() for t in _inputs())

    def call(a, b):
        return infodrop.information_dropout(a, b, seed=3, backend="triton")[0]

    with warnings.catch_warnings():  # the checks on shapes become constants of the trace
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        traced = torch.jit.trace(call, (x, logit), check_trace=False)
    assert "infodrop_triton::information_dropout" in {n.kind() for n in traced.graph.nodes()}
    other = x.flip(0)
    assert torch.equal(traced(other, logit), call(other, logit))

"""The Triton ops walk channels_last and channels_last_3d tensors in place (issue 18) and launch
few kernels per call (issue 19): no copy of x, alpha_logit, grad_z or an output; outputs in the
input's memory format; results equal to the contiguous call's bit for bit (the noise is a
function of the logical index), but for the sums (KL, the prior's gradients), whose partials
split differently; at most 2 kernels per forward call and 3 per backward call, no host
synchronisation.

The kernels run here under TRITON_INTERPRET=1 (tests/test_triton.py runs this file in such a
subprocess) and on a GPU.  What a call dispatches is recorded by a TorchDispatchMode; the
kernel launches themselves are recorded as such and run outside the mode (the interpreter
copies the tensors it hands to numpy, which a GPU launch does not)."""

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode, _disable_current_modes

import infodrop
from infodrop._layout import SampleLayout, walkable_layout
from infodrop._spec import kl_dtype
from infodrop.testing import DTYPES, TOLERANCE

from ._helpers import interpreted

if not infodrop.backends()["triton"]:
    pytest.skip("triton does not run here (no GPU, TRITON_INTERPRET is not 1)",
                allow_module_level=True)

from infodrop.triton import ops  # noqa: E402 (imports triton)

DEVICE = "cpu" if interpreted() else "cuda"
SEED, OFFSET = 4242, 9
# W not a multiple of 4 and odd C (groups straddle channels and samples), C above one channel
# block, a 5-d channels_last_3d tensor
LAYOUTS = [((2, 3, 5, 7), torch.channels_last), ((3, 33, 3, 6), torch.channels_last),
           ((2, 5, 3, 4, 3), torch.channels_last_3d)]
PRIORS = [dict(), dict(prior="log_normal", mu=0.3, sigma=1.4, mask_inactive=True),
          dict(unit_mean=True)]
COPIES = {"copy_", "clone", "contiguous", "_to_copy", "copy"}


def _inputs(shape, dtype, memory_format):
    g = torch.Generator().manual_seed(7)
    x = torch.rand(shape, generator=g, dtype=torch.float64) + 0.05
    x[0, 0] = 0.0  # inactive units (mask_inactive)
    logit = torch.randn(shape, generator=g, dtype=torch.float64)
    grad_z = torch.randn(shape, generator=g, dtype=torch.float64)
    grad_kl = torch.randn(shape[0], generator=g, dtype=torch.float64)
    contiguous = [t.to(DEVICE, dtype) for t in (x, logit, grad_z)]
    walked = [t.to(memory_format=memory_format) for t in contiguous]
    return contiguous, walked, grad_kl.to(DEVICE, kl_dtype(dtype))


def _prior(options):
    return [torch.tensor(options.get(name, default), device=DEVICE, requires_grad=True)
            for name, default in (("mu", 0.0), ("sigma", 1.0))]


def _forward_backward(x, logit, grad_z, grad_kl, options, prior=None):
    x, logit = x.detach().requires_grad_(), logit.detach().requires_grad_()
    mu, sigma = prior or _prior(options)
    mu.grad = sigma.grad = None
    rest = {k: v for k, v in options.items() if k not in ("mu", "sigma")}
    z, kl = infodrop.information_dropout(x, logit, mu=mu, sigma=sigma, seed=SEED, offset=OFFSET,
                                         backend="triton", **rest)
    torch.autograd.backward((z, kl), (grad_z, grad_kl))
    return z, kl, x.grad, logit.grad, mu.grad, sigma.grad


def test_layout_rule_is_csrc_layout_h():
    x = torch.empty(2, 3, 5, 7)
    assert walkable_layout(x) == SampleLayout(1, 105, False)
    assert walkable_layout(x.to(memory_format=torch.channels_last)) == SampleLayout(3, 35, True)
    assert walkable_layout(torch.empty(2, 5, 3, 4, 3).to(memory_format=torch.channels_last_3d)
                           ) == SampleLayout(5, 36, True)
    assert walkable_layout(x.transpose(2, 3)) is None  # not a layout the kernels walk
    assert walkable_layout(x.transpose(0, 1)) is None  # batch not outermost
    assert walkable_layout(torch.empty(2, 3, 5, 8)[..., :7]) is None  # samples not dense
    # size-1 dimensions may have any stride
    assert walkable_layout(torch.empty(4, 6, 1, 1).to(memory_format=torch.channels_last)
                           ) == SampleLayout(1, 6, False)


@pytest.mark.parametrize("dtype", DTYPES.values(), ids=DTYPES.keys())
@pytest.mark.parametrize("options", PRIORS, ids=["log_uniform", "log_normal", "unit_mean"])
@pytest.mark.parametrize("shape, memory_format", LAYOUTS, ids=lambda v: str(v))
def test_channels_last_equals_contiguous_bit_for_bit(shape, memory_format, options, dtype):
    contiguous, walked, grad_kl = _inputs(shape, dtype, memory_format)
    want = _forward_backward(*contiguous, grad_kl, options)
    got = _forward_backward(*walked, grad_kl, options)
    for name, w, g in zip(("z", "kl", "grad_x", "grad_logit", "grad_mu", "grad_sigma"), want, got):
        if w is None:  # mu and sigma of the log-uniform prior: not inputs of the op
            assert g is None, name
            continue
        assert g.dtype == w.dtype and g.shape == w.shape, name
        if name in ("z", "grad_x", "grad_logit"):
            assert g.is_contiguous(memory_format=memory_format), name
            assert torch.equal(g, w), name
        else:  # sums in the compute dtype: the programs' partials split differently
            rtol, atol = TOLERANCE[w.dtype]
            torch.testing.assert_close(g, w, rtol=rtol, atol=atol, msg=name)


class _Recorder(TorchDispatchMode):
    """The aten ops a Triton op call dispatches, and its kernel launches ("kernel:NAME").  The
    infodrop_triton ops are custom ops, seen here as one op: their Python body (what the op
    runs) is run under this mode so that what it dispatches is recorded too."""

    def __init__(self, monkeypatch):
        super().__init__()
        self.calls = []
        launch = ops._launch

        def recording_launch(kernel, *args, **kwargs):
            self.calls.append("kernel:" + kernel.fn.__name__)
            with _disable_current_modes():
                launch(kernel, *args, **kwargs)

        monkeypatch.setattr(ops, "_launch", recording_launch)
        self.bodies = {op._opoverload: op._init_fn
                       for op in (ops.information_dropout, ops.information_dropout_backward)}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func in self.bodies:
            with self:
                return self.bodies[func](*args, **(kwargs or {}))
        self.calls.append(func.overloadpacket.__name__)
        return func(*args, **(kwargs or {}))

    def kernels(self):
        """What would run on a GPU: the launches and every op that is not an allocation, a view
        or metadata."""
        free = {"empty", "empty_like", "empty_strided", "detach", "view", "alias", "as_strided",
                "_reshape_alias", "t", "unsqueeze", "squeeze", "expand", "select", "slice",
                "split", "unbind", "new_empty", "new_empty_strided"}
        return [c for c in self.calls if c not in free]


def _op_args(x, logit, options):
    compute = kl_dtype(x.dtype)
    scalar = lambda v, d: torch.tensor(v, dtype=d, device=DEVICE)  # noqa: E731
    prior = options.get("prior", "log_uniform")
    return (x, logit, scalar(SEED, torch.int64), OFFSET, scalar(options.get("mu", 0.0), compute),
            scalar(options.get("sigma", 1.0), compute), prior, 0.7, 1e-3,
            options.get("mask_inactive", False), options.get("unit_mean", False), True)


@pytest.mark.parametrize("options", PRIORS[:2], ids=["log_uniform", "log_normal"])
@pytest.mark.parametrize("shape, memory_format",
                         LAYOUTS[:1] + [((2, 3, 5, 7), torch.contiguous_format)], ids=str)
def test_no_copies_and_at_most_2_forward_and_3_backward_kernels(monkeypatch, shape, memory_format,
                                                                 options):
    _, (x, logit, grad_z), grad_kl = _inputs(shape, torch.float32, memory_format)
    args = _op_args(x, logit, options)
    recorder = _Recorder(monkeypatch)
    with recorder:
        z, kl = ops.information_dropout(*args)
    assert not COPIES & set(recorder.calls), recorder.calls
    assert recorder.kernels() == ["kernel:forward_kernel", "sum"], recorder.calls
    assert z.is_contiguous(memory_format=memory_format)

    recorder = _Recorder(monkeypatch)
    with recorder:
        # the expanded gradient of kl.sum() (stride 0) is read in place too
        grads = ops.information_dropout_backward(grad_z, grad_kl[:1].expand(shape[0]), *args)
    assert not COPIES & set(recorder.calls), recorder.calls
    log_normal = options.get("prior") == "log_normal"
    assert recorder.kernels() == ["kernel:backward_kernel"] + (
        ["kernel:prior_grads_kernel"] if log_normal else []), recorder.calls
    assert all(g.is_contiguous(memory_format=memory_format) for g in grads[:2])
    if not log_normal:
        assert grads[2].item() == 0.0 and grads[3].item() == 0.0


def test_mixed_layouts_copy_only_the_odd_input(monkeypatch):
    """x channels_last and alpha_logit contiguous (as an alpha head may give): alpha_logit is
    read through one copy in x's layout, x is not copied, z is in x's memory format."""
    _, (x, _, _), _ = _inputs((2, 3, 5, 7), torch.float32, torch.channels_last)
    logit = torch.randn(x.shape, device=DEVICE)
    recorder = _Recorder(monkeypatch)
    with recorder:
        z, _ = ops.information_dropout(*_op_args(x, logit, {}))
    assert recorder.calls.count("copy_") == 1 and not {"clone", "_to_copy"} & set(recorder.calls), \
        recorder.calls
    assert z.is_contiguous(memory_format=torch.channels_last)
    want, _ = ops.information_dropout(*_op_args(x.contiguous(), logit, {}))
    assert torch.equal(z, want)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last])
def test_no_host_synchronisation(memory_format):
    _, (x, logit, grad_z), grad_kl = _inputs((4, 8, 6, 6), torch.float32, memory_format)
    for options in PRIORS:
        prior = _prior(options)  # a tensor from a Python number is a synchronising copy
        _forward_backward(x, logit, grad_z, grad_kl, options, prior)  # compiles first
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")
        try:
            _forward_backward(x, logit, grad_z, grad_kl, options, prior)
        finally:
            torch.cuda.set_sync_debug_mode("default")

"""Memory formats the kernels walk in place (issue 18): channels_last and channels_last_3d
inputs are read and written where they lie, with no copy of any tensor, the outputs come back in
the input's memory format, and the results equal the contiguous ones bit for bit (the noise and
the KL's summation order are functions of the logical index, docs/spec.md section 3)."""

import pytest
import torch

import infodrop
from infodrop.testing import DTYPES, make_grads, make_inputs

from ._helpers import aten_ops_run_by, backend_devices

PAIRS = backend_devices()
if not PAIRS:
    pytest.skip("no fused backend runs here", allow_module_level=True)

SEED, OFFSET = 4242, 5
COPIES = {"aten::copy_", "aten::clone", "aten::contiguous"}
# odd C and W not a multiple of 4, laid out to cover the CPU's runs (ops_cpu.cpp): groups of
# whole channels (the last group partial; one task or two), tiles of 1024 positions (the last
# partial) in one group of channels or two, and (5-d) a channel of 16 tiles
SHAPES = {4: [(2, 5, 3, 7), (2, 7, 12, 25), (1, 45, 29, 27), (2, 37, 33, 35), (2, 7, 61, 67)],
          5: [(2, 3, 5, 3, 7), (1, 35, 3, 11, 37), (2, 3, 9, 31, 59)]}
LAST = {4: torch.channels_last, 5: torch.channels_last_3d}


@pytest.fixture(params=PAIRS)
def backend_device(request):
    return request.param


def _run(backend, x, logit, grad_z, grad_kl, prior, training):
    """z, kl and the gradients of x, alpha_logit and (log_normal) mu and sigma."""
    x, logit = x.detach().requires_grad_(), logit.detach().requires_grad_()
    inputs, options = [x, logit], dict(prior=prior, training=training)
    if prior == "log_normal":
        compute = torch.float64 if x.dtype == torch.float64 else torch.float32
        mu = torch.tensor(0.3, dtype=compute, device=x.device, requires_grad=True)
        sigma = torch.tensor(1.4, dtype=compute, device=x.device, requires_grad=True)
        inputs += [mu, sigma]
        options.update(mu=mu, sigma=sigma)
    z, kl = infodrop.information_dropout(x, logit, seed=SEED, offset=OFFSET, backend=backend,
                                         **options)
    grads = torch.autograd.grad([z, kl], inputs, [grad_z, grad_kl])
    return (z, kl, *grads)


def _case(device, shape, dtype, prior, memory_format):
    x, logit = make_inputs(shape, dtype, prior=prior, device=device)
    grad_z, grad_kl = make_grads(shape, dtype, device=device)
    return [t.contiguous(memory_format=memory_format) for t in (x, logit, grad_z)] + [grad_kl]


@pytest.mark.parametrize("ndim", [4, 5])
@pytest.mark.parametrize("dtype", list(DTYPES.values()), ids=list(DTYPES))
@pytest.mark.parametrize("prior", ["log_uniform", "log_normal"])
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_channels_last_equals_contiguous_bit_for_bit(backend_device, ndim, dtype, prior, training):
    backend, device = backend_device
    for shape in SHAPES[ndim]:
        x, logit, grad_z, grad_kl = _case(device, shape, dtype, prior, torch.contiguous_format)
        last = [t.contiguous(memory_format=LAST[ndim]) for t in (x, logit, grad_z)]
        assert not last[0].is_contiguous()
        want = _run(backend, x, logit, grad_z, grad_kl, prior, training)
        got = _run(backend, *last, grad_kl, prior, training)
        names = ["z", "kl", "grad_x", "grad_alpha_logit", "grad_mu", "grad_sigma"]
        for name, g, w in zip(names, got, want):
            assert torch.equal(g, w), f"{name} differs for {shape}"
        # z and the gradients of x and alpha_logit in the input's memory format
        for name, t in zip(["z", "grad_x", "grad_alpha_logit"], (got[0], got[2], got[3])):
            assert t.stride() == last[0].stride(), f"{name} lost the layout for {shape}"


@pytest.mark.parametrize("ndim", [4, 5])
def test_channels_last_is_walked_without_copies(backend_device, ndim):
    """The op's forward and backward on channels_last tensors run no aten copy: before issue 18
    the glue copied x, alpha_logit and grad_z to contiguous tensors and the outputs back."""
    backend, device = backend_device
    x, logit, grad_z, grad_kl = _case(device, SHAPES[ndim][-1], torch.float32, "log_uniform",
                                      LAST[ndim])
    x, logit = x.requires_grad_(), logit.requires_grad_()
    ops = aten_ops_run_by(lambda: _run(backend, x, logit, grad_z, grad_kl, "log_uniform", True))
    assert not ops & COPIES, sorted(ops & COPIES)


def test_mixed_layouts_copy_nothing_on_cpu():
    """An alpha head may return alpha_logit contiguous beside channels_last x: the CPU kernels
    walk each tensor in its own layout, and the gradient of each comes back in its own."""
    if not infodrop.backends()["cpu"]:
        pytest.skip("the compiled CPU extension is not built")
    x, logit, grad_z, grad_kl = _case("cpu", SHAPES[4][3], torch.float32, "log_uniform",
                                      torch.contiguous_format)
    mixed = (x.contiguous(memory_format=torch.channels_last), logit,
             grad_z.contiguous(memory_format=torch.channels_last))
    ops = aten_ops_run_by(lambda: _run("cpu", *mixed, grad_kl, "log_uniform", True))
    assert not ops & COPIES, sorted(ops & COPIES)
    got = _run("cpu", *mixed, grad_kl, "log_uniform", True)
    want = _run("cpu", x, logit, grad_z, grad_kl, "log_uniform", True)
    for g, w in zip(got, want):
        assert torch.equal(g, w)
    assert got[0].stride() == mixed[0].stride() and got[2].stride() == mixed[0].stride()
    assert got[3].is_contiguous()

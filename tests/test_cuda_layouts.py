"""The CUDA kernels on channels_last inputs, on a GPU (skipped where there is none): walked in
place (no copy, clone or contiguous in the op, outputs in the input's memory format) and equal
bit for bit to the same op on contiguous inputs, for every dtype, for the pairs of channels (C
even; S % 4 == 0 or not), one channel per tile (odd C, W not a multiple of 4, S % 4 != 0), and
pointers not aligned to a pair.  The indexing itself is enumerated on the CPU by
tests/test_cuda_walker.py; this is what only a GPU can show."""

import pytest
import torch

import infodrop
from infodrop.testing import make_grads, make_inputs

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (none here)")]

SEED, OFFSET = 2016, 3
# (shape, memory format): pairs (C even, S % 4 == 0) in 2-d and 3-d; odd C with W = 9 (S = 63);
# pairs straddling Philox groups (S = 49, ResNet-50's layer4 positions); one channel per tile in
# 3-d; one position
SHAPES = [((3, 6, 4, 6), torch.channels_last), ((2, 4, 2, 2, 2), torch.channels_last_3d),
          ((3, 5, 7, 9), torch.channels_last), ((2, 8, 7, 7), torch.channels_last),
          ((2, 3, 3, 5, 7), torch.channels_last_3d), ((4, 6, 1, 1), torch.channels_last)]
COPIES = ("aten::copy_", "aten::clone", "aten::contiguous")


def _ids(case):
    shape, fmt = case
    return "x".join(map(str, shape)) + ("-3d" if fmt == torch.channels_last_3d else "")


def _forward_backward(x, logit, grad_z, grad_kl, prior, backend="cuda"):
    x, logit = x.detach().requires_grad_(), logit.detach().requires_grad_()
    z, kl = infodrop.information_dropout(x, logit, prior=prior, mu=0.1, sigma=1.2, seed=SEED,
                                         offset=OFFSET, backend=backend)
    torch.autograd.backward((z, kl), (grad_z, grad_kl))
    return z, kl, x.grad, logit.grad


def _bits(t):
    """t's bit patterns in logical order (NaNs compare equal to the same NaN)."""
    ints = {2: torch.int16, 4: torch.int32, 8: torch.int64}[t.element_size()]
    return t.contiguous().view(ints)


def _unaligned(t, fmt):
    """t's values, laid out in `fmt`, starting one element into its storage (so not aligned to
    a pair of elements: the single-channel path)."""
    like = torch.empty_like(t, memory_format=fmt)
    storage = torch.empty(t.numel() + 1, dtype=t.dtype, device=t.device)
    view = storage[1:].as_strided(t.shape, like.stride())
    return view.copy_(t)


@pytest.mark.parametrize("case", SHAPES, ids=_ids)
@pytest.mark.parametrize("prior", ["log_uniform", "log_normal"])
@pytest.mark.parametrize("aligned", [True, False], ids=["aligned", "offset-by-one"])
def test_channels_last_equals_contiguous_bit_for_bit_and_keeps_its_layout(case, prior, aligned,
                                                                          dtype):
    shape, fmt = case
    x, logit = make_inputs(shape, dtype, prior=prior, device="cuda")
    grad_z, grad_kl = make_grads(shape, dtype, device="cuda")
    want = _forward_backward(x, logit, grad_z, grad_kl, prior)
    lay = (lambda t: t.contiguous(memory_format=fmt)) if aligned else (lambda t: _unaligned(t, fmt))
    got = _forward_backward(lay(x), lay(logit), lay(grad_z), grad_kl, prior)
    for name, g, w in zip(("z", "grad_x", "grad_alpha_logit"), (got[0], got[2], got[3]),
                          (want[0], want[2], want[3])):
        assert g.is_contiguous(memory_format=fmt), name
        assert torch.equal(_bits(g), _bits(w)), name  # the same noise, the same per-element math
    # the KL is a sum: the same terms, added in another order
    torch.testing.assert_close(got[1], want[1], rtol=1e-5 if dtype != torch.float64 else 1e-12,
                               atol=0)


@pytest.mark.parametrize("case", SHAPES[:4], ids=_ids)
@pytest.mark.parametrize("prior", ["log_uniform", "log_normal"])
def test_logits_out_of_the_device_range_take_the_same_path_in_both_layouts(case, prior, dtype):
    """Logits beyond +-80 (the IEEE path; elementwise.h's device_in_range) scattered so that a
    contiguous step and a channels-last tile holding one of them group different in-range
    neighbours: each element's path (special-function or IEEE) is decided by its own logit, and
    its in-range neighbours, which run with the options as run-time values there and folded in
    the other layout, round alike (tests/test_device_rounding.py checks that without a GPU)."""
    shape, fmt = case
    x, logit = make_inputs(shape, dtype, prior=prior, device="cuda")
    flat = logit.view(-1)
    flat[::7] = 100.0
    flat[3::11] = -90.0
    grad_z, grad_kl = make_grads(shape, dtype, device="cuda")
    want = _forward_backward(x, logit, grad_z, grad_kl, prior)
    lay = lambda t: t.contiguous(memory_format=fmt)  # noqa: E731
    got = _forward_backward(lay(x), lay(logit), lay(grad_z), grad_kl, prior)
    for g, w in zip((got[0], got[2], got[3]), (want[0], want[2], want[3])):
        assert torch.equal(_bits(g), _bits(w))
    # and right: the IEEE path takes eps back in natural units (the kernels draw eps log2 e for
    # the special-function path, elementwise.h natural_eps), which the layouts share
    cpu = _forward_backward(*(t.cpu() for t in (x, logit, grad_z, grad_kl)), prior, backend="cpu")
    tolerance = 1e-12 if dtype == torch.float64 else 2e-5 if dtype == torch.float32 else 2e-2
    for name, g, c in zip(("z", "kl", "grad_x", "grad_alpha_logit"), want, cpu):
        torch.testing.assert_close(g.cpu(), c, rtol=tolerance, atol=tolerance, msg=name)


@pytest.mark.parametrize("case", SHAPES[:3], ids=_ids)
def test_channels_last_op_copies_nothing(case):
    shape, fmt = case
    x, logit = (t.contiguous(memory_format=fmt).requires_grad_()
                for t in make_inputs(shape, torch.bfloat16, device="cuda"))
    grad_z = make_grads(shape, torch.bfloat16, device="cuda")[0].contiguous(memory_format=fmt)
    _forward_backward(x, logit, grad_z, torch.ones(shape[0], device="cuda"), "log_uniform")
    x.grad = logit.grad = None  # the profiled backward stores its gradients, adds nothing
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as profile:
        z, kl = infodrop.information_dropout(x, logit, seed=SEED, backend="cuda")
        torch.autograd.backward((z, kl), (grad_z, torch.ones_like(kl)))
        torch.cuda.synchronize()
    names = {event.name for event in profile.events()}
    assert not names & set(COPIES), names & set(COPIES)
    assert x.grad.is_contiguous(memory_format=fmt) and logit.grad.is_contiguous(memory_format=fmt)


def test_mixed_layouts_give_each_gradient_its_input_layout():
    """An alpha head may return another memory format than x: alpha_logit is walked in x's
    layout (one copy of alpha_logit, not of x) and its gradient comes back in its own."""
    shape = (2, 6, 5, 7)
    x, logit = make_inputs(shape, torch.float32, device="cuda")
    grad_z, grad_kl = make_grads(shape, torch.float32, device="cuda")
    want = _forward_backward(x, logit, grad_z, grad_kl, "log_uniform")
    got = _forward_backward(x.contiguous(memory_format=torch.channels_last), logit,
                            grad_z, grad_kl, "log_uniform")
    assert got[0].is_contiguous(memory_format=torch.channels_last)
    assert got[2].is_contiguous(memory_format=torch.channels_last)
    assert got[3].is_contiguous()
    for g, w in zip((got[0], got[2], got[3]), (want[0], want[2], want[3])):
        assert torch.equal(_bits(g), _bits(w))

"""Property-based test (issue 13, point 8): over shapes (empty and 1-element samples included),
memory layouts, dtypes, options, seeds and offsets, the fused CPU op equals the float64
reference given the same noise stream, gradients included (x, alpha_logit, mu, sigma), and
never produces a NaN that the reference does not.

The profile is derandomized (the same examples on every run, so a failure reproduces) with no
deadline (the machines are shared and busy) and a bounded number of examples."""

import math

import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import infodrop
from infodrop import reference
from infodrop.testing import DTYPES, TOLERANCE

from ._helpers import requires_compiled

pytestmark = requires_compiled

PROFILE = settings(max_examples=200, deadline=None, derandomize=True, database=None,
                   suppress_health_check=[HealthCheck.too_slow])

# shapes the issue names, then any small shape: batch first, 0 to 3 more dims, empty ones too
NAMED_SHAPES = [(3, 0), (0, 4), (1, 1), (2, 1, 1), (1,), (5,), (2, 3, 4, 5)]
shapes = st.one_of(st.sampled_from(NAMED_SHAPES),
                   st.lists(st.integers(0, 6), min_size=0, max_size=3).flatmap(
                       lambda rest: st.integers(1, 3).map(lambda b: (b, *rest))))
u64 = st.integers(0, (1 << 64) - 1)


@st.composite
def cases(draw):
    shape = draw(shapes)
    layouts = ["contiguous", "sliced"] + (["transposed"] if len(shape) >= 2 else []) + (
        ["channels_last"] if len(shape) == 4 else [])
    prior = draw(st.sampled_from(["log_uniform", "log_normal"]))
    options = dict(
        prior=prior,
        max_alpha=draw(st.sampled_from([0.7, 1.0, 0.05, 2.0])),
        alpha_min=draw(st.sampled_from([1e-3, 0.0, 0.1])),
        mask_inactive=draw(st.booleans()),
        unit_mean=draw(st.booleans()),
        training=draw(st.booleans()),
        noise_in_eval=draw(st.booleans()),
    )
    return dict(shape=shape, layout=draw(st.sampled_from(layouts)),
                dtype=draw(st.sampled_from(list(DTYPES.values()))), options=options,
                mu=draw(st.sampled_from([0.0, 0.4, -1.3])),
                sigma=draw(st.sampled_from([1.0, 1.7, 0.5])),
                logit_scale=draw(st.sampled_from([3.0, 20.0])),
                specials=draw(st.booleans()),
                seed=draw(u64), offset=draw(u64), values=draw(st.integers(0, 2**31 - 1)))


def _inputs(case):
    """x (>= 0 with exact zeros; > 0 for the log-normal prior), logit, grad_z, grad_kl, in the
    case's dtype and layout; with specials, a NaN and a +inf in x."""
    shape, dtype = case["shape"], case["dtype"]
    g = torch.Generator().manual_seed(case["values"])
    x = torch.rand(shape, generator=g, dtype=torch.float64) * 3
    if case["options"]["prior"] == "log_normal":
        x = torch.nn.functional.softplus(torch.randn(shape, generator=g, dtype=torch.float64) * 2)
    x = torch.where(torch.rand(shape, generator=g, dtype=torch.float64) < 0.2, 0.0, x)
    if case["specials"] and x.numel() >= 2:
        x.view(-1)[0], x.view(-1)[-1] = math.nan, math.inf
    logit = torch.randn(shape, generator=g, dtype=torch.float64) * case["logit_scale"]
    grad_z = torch.randn(shape, generator=g, dtype=torch.float64)
    grad_kl = torch.randn(shape[0], generator=g, dtype=torch.float64)
    return [_layout(t.to(dtype), case["layout"]) for t in (x, logit, grad_z)] + [grad_kl]


def _layout(t, layout):
    if layout == "channels_last":
        return t.contiguous(memory_format=torch.channels_last)
    if layout == "transposed":
        return t.transpose(-1, -2).contiguous().transpose(-1, -2)
    if layout == "sliced":
        return torch.stack([t, torch.full_like(t, 7.0)], dim=-1)[..., 0]
    return t


def _assert_matches(name, actual, expected, rtol, atol):
    """No NaN where expected has none; elsewhere close (infinities equal).  None (a gradient
    of something the output does not read) equals zeros."""
    if actual is None and expected is None:
        return
    actual = torch.zeros_like(expected) if actual is None else actual.double()
    expected = torch.zeros_like(actual) if expected is None else expected
    new_nan = actual.isnan() & ~expected.isnan()
    assert not new_nan.any(), f"{name}: NaN where the reference has none"
    keep = ~expected.isnan()
    torch.testing.assert_close(actual[keep], expected[keep], rtol=rtol, atol=atol,
                               msg=lambda m: f"{name}: {m}")


@PROFILE
@given(cases())
def test_fused_cpu_op_equals_the_reference(case):
    x, logit, grad_z, grad_kl = _inputs(case)
    dtype, options = case["dtype"], case["options"]
    kl_dtype = torch.float64 if dtype == torch.float64 else torch.float32

    xf, lf = x.detach().requires_grad_(), logit.detach().requires_grad_()
    muf = torch.tensor(case["mu"], dtype=kl_dtype, requires_grad=True)
    sigmaf = torch.tensor(case["sigma"], dtype=kl_dtype, requires_grad=True)
    z, kl = infodrop.information_dropout(xf, lf, mu=muf, sigma=sigmaf, seed=case["seed"],
                                         offset=case["offset"], backend="cpu", **options)
    assert z.dtype == dtype and z.shape == x.shape and kl.shape == (x.shape[0],)
    torch.autograd.backward((z, kl), (grad_z, grad_kl.to(kl.dtype)))

    xr, lr = x.double().requires_grad_(), logit.double().requires_grad_()
    mur = torch.tensor(case["mu"], dtype=torch.float64, requires_grad=True)
    sigmar = torch.tensor(case["sigma"], dtype=torch.float64, requires_grad=True)
    eps = infodrop.noise(x.shape, case["seed"], case["offset"], dtype=torch.float64)
    z_ref, kl_ref = reference.information_dropout(xr, lr, eps, mu=mur, sigma=sigmar, **options)
    torch.autograd.backward((z_ref, kl_ref), (grad_z.double(), grad_kl.double()))

    # tolerances of tests/test_cpu_kernel.py: z per dtype; kl and the prior's gradients sum
    # over a sample or the whole tensor, so theirs grow with the count
    rtol, atol = TOLERANCE[dtype]
    per_sample = x[0].numel() if x.shape[0] else 0
    kl_rtol = TOLERANCE[kl_dtype][0] * 10
    _assert_matches("z", z, z_ref.double(), rtol, atol)
    _assert_matches("kl", kl, kl_ref, kl_rtol, 1e-4 * per_sample**0.5)
    _assert_matches("grad x", xf.grad, xr.grad, rtol, atol * 10)
    _assert_matches("grad alpha_logit", lf.grad, lr.grad, rtol, atol * 10)
    n = x.numel()
    _assert_matches("grad mu", muf.grad, mur.grad, 1e-3, 1e-4 * n**0.5)
    _assert_matches("grad sigma", sigmaf.grad, sigmar.grad, 1e-3, 1e-4 * n**0.5)

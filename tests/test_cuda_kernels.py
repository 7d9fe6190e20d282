"""The GPU backends' kernels (cuda, triton) against the CPU kernel and the reference, given the
same noise stream: forward, per-sample KL, and every gradient (x, alpha_logit, mu, sigma).

Runs for every GPU backend that can run here: cuda and triton on a GPU, and triton on the CPU
under TRITON_INTERPRET=1 (tests/test_triton.py runs this file that way in a subprocess, since
the variable must be set before triton is imported)."""

import os

import pytest
import torch

import infodrop
from infodrop import reference

from ._helpers import DTYPES, TOLERANCE, make_inputs, requires_compiled

pytestmark = requires_compiled  # the CPU kernel is one of the two references


def _runnable():
    available, gpu = infodrop.backends(), torch.cuda.is_available()
    pairs = [pytest.param((name, "cuda"), marks=pytest.mark.cuda)
             for name in ("cuda", "triton") if gpu and available[name]]
    if not gpu and available["triton"] and os.environ.get("TRITON_INTERPRET") == "1":
        pairs.append(pytest.param(("triton", "cpu")))
    return pairs


RUNNABLE = _runnable()
if not RUNNABLE:
    pytest.skip("no GPU backend runs here (no GPU; tests/test_triton.py runs this file under "
                "TRITON_INTERPRET=1)", allow_module_level=True)

SEED, OFFSET = 31337, 11
# ragged heads and tails around the 4-element groups, and a sample spanning two Triton
# programs (1024 elements each) that begins and ends inside a group
SHAPES = [(5,), (3, 7), (2, 3, 5, 7), (2, 1030)]
OPTIONS = [
    dict(),
    dict(prior="log_normal", mu=0.4, sigma=1.7),
    dict(mask_inactive=True),
    dict(prior="log_normal", mask_inactive=True),
    dict(unit_mean=True),
    dict(training=False),
    dict(training=False, noise_in_eval=True),
    dict(max_alpha=1.0, alpha_min=0.0),
]


@pytest.fixture(params=RUNNABLE, ids=lambda pair: "-".join(pair))
def backend_device(request):
    return request.param


def _kl_tolerance(dtype, per_sample):
    rtol = TOLERANCE[dtype if dtype in (torch.float32, torch.float64) else torch.float32][0]
    return dict(rtol=rtol * 10, atol=1e-4 * per_sample**0.5)


def _assert_close(actual, expected, dtype, scale=1.0):
    rtol, atol = TOLERANCE[dtype]
    torch.testing.assert_close(actual.cpu().double(), expected.cpu().double(), rtol=rtol,
                               atol=atol * scale)


def _run(backend, device, x, logit, grad_z, grad_kl, options):
    """z, kl and the gradients of (x, logit, mu, sigma) of one backend on one device."""
    options = dict(options)
    mu = torch.tensor(options.pop("mu", 0.0), device=device, requires_grad=True)
    sigma = torch.tensor(options.pop("sigma", 1.0), device=device, requires_grad=True)
    xd, ld = (t.detach().to(device).clone().requires_grad_() for t in (x, logit))
    z, kl = infodrop.information_dropout(xd, ld, mu=mu, sigma=sigma, seed=SEED, offset=OFFSET,
                                         backend=backend, **options)
    torch.autograd.backward((z, kl), (grad_z.to(device), grad_kl.to(device, kl.dtype)))
    return z.detach(), kl.detach(), xd.grad, ld.grad, mu.grad, sigma.grad


def _reference(x, logit, grad_z, grad_kl, options):
    options = dict(options)
    mu = torch.tensor(options.pop("mu", 0.0), dtype=torch.float64, requires_grad=True)
    sigma = torch.tensor(options.pop("sigma", 1.0), dtype=torch.float64, requires_grad=True)
    xr, lr = (t.detach().double().clone().requires_grad_() for t in (x, logit))
    eps = infodrop.noise(x.shape, SEED, OFFSET, dtype=torch.float64)
    z, kl = reference.information_dropout(xr, lr, eps, mu=mu, sigma=sigma, **options)
    torch.autograd.backward((z, kl), (grad_z.double(), grad_kl.double()))
    return z.detach(), kl.detach(), xr.grad, lr.grad, mu.grad, sigma.grad


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: str(d).split(".")[-1])
@pytest.mark.parametrize("options", OPTIONS, ids=str)
def test_matches_cpu_kernel_and_reference(backend_device, dtype, options):
    backend, device = backend_device
    for shape in SHAPES:
        x, logit = make_inputs(shape, dtype, prior=options.get("prior", "log_uniform"), zeros=0.2)
        g = torch.Generator().manual_seed(2)
        grad_z = torch.randn(shape, generator=g).to(dtype)
        grad_kl = torch.randn(shape[0], generator=g)
        got = _run(backend, device, x, logit, grad_z, grad_kl, options)
        cpu = _run("cpu", "cpu", x, logit, grad_z, grad_kl, options)
        want = _reference(x, logit, grad_z, grad_kl, options)
        z, kl, grad_x, grad_logit, grad_mu, grad_sigma = got
        assert z.dtype == dtype and z.shape == x.shape and z.device.type == device
        assert kl.dtype == cpu[1].dtype and kl.shape == (shape[0],)
        n = x[0].numel()
        for expected in (cpu, want):
            _assert_close(z, expected[0], dtype)
            torch.testing.assert_close(kl.cpu().double(), expected[1].double(),
                                       **_kl_tolerance(dtype, n))
            _assert_close(grad_x, expected[2], dtype, scale=10)
            _assert_close(grad_logit, expected[3], dtype, scale=10)
        if options.get("prior") == "log_normal":
            for expected in (cpu, want):
                for actual, wanted in ((grad_mu, expected[4]), (grad_sigma, expected[5])):
                    torch.testing.assert_close(actual.cpu().double(), wanted.double(), rtol=1e-3,
                                               atol=1e-4 * x.numel() ** 0.5)
        else:
            assert grad_mu is None or torch.all(grad_mu == 0)


@pytest.mark.parametrize("prior", reference.PRIORS)
def test_float64_options_stay_float64(backend_device, prior):
    """Without noise, the KL and grad_alpha_logit of float64 inputs match the reference to
    float64 rounding: max_alpha and alpha_min must reach the kernel as float64 (rounded to
    float32 they move alpha by about 3e-8 relative)."""
    backend, device = backend_device
    x, logit = make_inputs((3, 50), torch.float64, prior=prior)
    options = dict(prior=prior, max_alpha=0.7, alpha_min=1e-3, training=False)
    results = []
    for backend_, device_ in ((backend, device), ("reference", "cpu")):
        ld = logit.to(device_).requires_grad_()
        _, kl = infodrop.information_dropout(x.to(device_), ld, seed=SEED, backend=backend_,
                                             **options)
        kl.sum().backward()
        results.append((kl.detach().cpu(), ld.grad.cpu()))
    for actual, expected in zip(*results):
        torch.testing.assert_close(actual, expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("start", [0, 3, (1 << 40) + 1, (1 << 64) - 9])
def test_noise_stream_matches_cpu(backend_device, start):
    backend, device = backend_device
    if backend == "triton":  # infodrop.noise prefers the compiled kernels: call the Triton op
        from infodrop.triton import ops

        bits = start - (1 << 64) if start >= 1 << 63 else start
        got = ops.noise(9, torch.tensor(-5, dtype=torch.int64, device=device), 7, bits)
    else:
        got = infodrop.noise((9,), (1 << 64) - 5, 7, start=start, device=device)
    want = infodrop.noise((9,), (1 << 64) - 5, 7, start=start)
    torch.testing.assert_close(got.cpu(), want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("layout", ["channels_last", "sliced"])
def test_non_contiguous_inputs_use_logical_order(backend_device, layout):
    backend, device = backend_device
    x, logit = (t.to(device) for t in make_inputs((2, 6, 5, 7), torch.float32))
    if layout == "channels_last":
        xs, ls = (t.contiguous(memory_format=torch.channels_last) for t in (x, logit))
    else:
        xs, ls = (torch.cat([t, t], dim=3)[..., ::2][..., :7] for t in (x, logit))
        x, logit = xs.contiguous(), ls.contiguous()
    assert not xs.is_contiguous()
    z, kl = infodrop.information_dropout(xs, ls, seed=SEED, backend=backend)
    z_c, kl_c = infodrop.information_dropout(x, logit, seed=SEED, backend=backend)
    torch.testing.assert_close(z, z_c, rtol=0, atol=0)
    torch.testing.assert_close(kl, kl_c, rtol=0, atol=0)
    if layout == "channels_last":
        assert z.is_contiguous(memory_format=torch.channels_last)


def test_gradcheck_float64(backend_device):
    backend, device = backend_device
    x, logit = (t.to(device) for t in make_inputs((2, 3, 5), torch.float64, prior="log_normal"))
    x = (x + 0.05).requires_grad_()
    mu = torch.tensor(0.2, dtype=torch.float64, device=device, requires_grad=True)
    sigma = torch.tensor(1.3, dtype=torch.float64, device=device, requires_grad=True)

    def f(x, logit, mu, sigma):
        return infodrop.information_dropout(x, logit, prior="log_normal", mu=mu, sigma=sigma,
                                            seed=SEED, backend=backend)

    assert torch.autograd.gradcheck(f, (x, logit.requires_grad_(), mu, sigma))


def test_empty_tensors_give_empty_results(backend_device):
    backend, device = backend_device
    x = torch.empty((3, 0), device=device)
    z, kl = infodrop.information_dropout(x, x, seed=SEED, backend=backend)
    assert z.shape == (3, 0) and torch.equal(kl.cpu(), torch.zeros(3))


def test_opcheck_schema_and_autograd_registration(backend_device):
    """The fake-tensor and compiled parts of opcheck are in tests/test_cuda.py: under the
    Triton interpreter, wrap_triton hands back the raw kernel, which cannot run on fake tensors."""
    backend, device = backend_device
    if backend == "triton":
        import infodrop.triton.ops  # noqa: F401  (registers torch.ops.infodrop_triton)
    namespace = torch.ops.infodrop if backend == "cuda" else torch.ops.infodrop_triton
    x, logit = (t.to(device).requires_grad_() for t in make_inputs((3, 4, 6), prior="log_normal"))
    args = (x, logit, torch.tensor(SEED, device=device), 3, torch.tensor(0.1, device=device),
            torch.tensor(1.2, device=device), "log_normal", 0.7, 1e-3, False, False, True)
    torch.library.opcheck(namespace.information_dropout.default, args,
                          test_utils=("test_schema", "test_autograd_registration"))
    grads = (torch.randn_like(x), torch.randn(3, device=device))
    detached = tuple(a.detach() if isinstance(a, torch.Tensor) else a for a in args)
    torch.library.opcheck(namespace.information_dropout_backward.default, grads + detached,
                          test_utils=("test_schema",))

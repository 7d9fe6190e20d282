"""Every fused backend against the reference, written once and run for each (backend, device)
pair that runs here (tests/_helpers.py): forward, per-sample KL, every gradient (x,
alpha_logit, mu, sigma), every dtype, option and memory layout, the noise stream, gradcheck
and the op's registration.  A GPU backend is also compared with the CPU kernel.

Here (no GPU) that is the CPU kernels; tests/test_triton.py runs this file again under
TRITON_INTERPRET=1 for the Triton kernels, and on a GPU the cuda and triton pairs join."""

import pytest
import torch

import infodrop
from infodrop import reference
from infodrop._spec import PRIORS, kl_dtype
from infodrop.testing import TOLERANCE, make_grads, make_inputs

from ._helpers import aten_ops_run_by, backend_devices, interpreted

PAIRS = backend_devices()
if not PAIRS:
    pytest.skip("no fused backend runs here", allow_module_level=True)

SEED, OFFSET = 31337, 11
# ragged heads and tails around the 4-element groups and the SIMD blocks, 1-element samples,
# and a sample spanning two Triton programs (1024 elements each) that begins and ends inside a
# group; compiled backends also get samples spanning several CPU runs (1024-position tiles)
SHAPES = [(5,), (3, 7), (2, 3, 5, 7), (4, 1000), (2, 1030)]
LARGE_SHAPES = [(2, 16384 + 70), (1, 3, 33, 33)]
OPTIONS = [
    dict(),
    dict(prior="log_normal"),
    dict(prior="log_normal", mu=0.4, sigma=1.7),
    dict(prior="log_normal", mask_inactive=True),
    dict(mask_inactive=True),
    dict(unit_mean=True),
    dict(training=False),
    dict(training=False, noise_in_eval=True),
    dict(max_alpha=1.0, alpha_min=0.0),
]


@pytest.fixture(params=PAIRS)
def backend_device(request):
    return request.param


def _shapes():
    return SHAPES if interpreted() else SHAPES + LARGE_SHAPES


def _kl_tolerance(dtype, per_sample):
    """kl sums per_sample elements: its tolerance grows with the sum."""
    rtol = TOLERANCE[dtype if dtype in (torch.float32, torch.float64) else torch.float32][0]
    return dict(rtol=rtol * 10, atol=1e-4 * per_sample**0.5)


def _assert_close(actual, expected, dtype, scale=1.0):
    rtol, atol = TOLERANCE[dtype]
    torch.testing.assert_close(actual.cpu().double(), expected.cpu().double(), rtol=rtol,
                               atol=atol * scale)


def _run(backend, device, x, logit, grad_z, grad_kl, options):
    """z, kl and the gradients of (x, logit, mu, sigma) of one backend on one device."""
    options = dict(options)
    compute = kl_dtype(x.dtype)
    mu = torch.tensor(options.pop("mu", 0.0), dtype=compute, device=device, requires_grad=True)
    sigma = torch.tensor(options.pop("sigma", 1.0), dtype=compute, device=device,
                         requires_grad=True)
    xd, ld = (t.detach().to(device).clone().requires_grad_() for t in (x, logit))
    z, kl = infodrop.information_dropout(xd, ld, mu=mu, sigma=sigma, seed=SEED, offset=OFFSET,
                                         backend=backend, **options)
    torch.autograd.backward((z, kl), (grad_z.to(device), grad_kl.to(device)))
    return z.detach(), kl.detach(), xd.grad, ld.grad, mu.grad, sigma.grad


def _reference(x, logit, grad_z, grad_kl, options):
    """The same quantities from autograd through the float64 reference, fed the same noise."""
    options = dict(options)
    mu = torch.tensor(options.pop("mu", 0.0), dtype=torch.float64, requires_grad=True)
    sigma = torch.tensor(options.pop("sigma", 1.0), dtype=torch.float64, requires_grad=True)
    xr, lr = (t.detach().double().clone().requires_grad_() for t in (x, logit))
    eps = infodrop.noise(x.shape, SEED, OFFSET, dtype=torch.float64)
    z, kl = reference.information_dropout(xr, lr, eps, mu=mu, sigma=sigma, **options)
    torch.autograd.backward((z, kl), (grad_z.double(), grad_kl.double()))
    return z.detach(), kl.detach(), xr.grad, lr.grad, mu.grad, sigma.grad


@pytest.mark.parametrize("options", OPTIONS, ids=str)
def test_matches_reference(backend_device, dtype, options):
    backend, device = backend_device
    for shape in _shapes():
        prior = options.get("prior", "log_uniform")
        x, logit = make_inputs(shape, dtype, prior=prior, zeros=0.2)
        grad_z, grad_kl = make_grads(shape, dtype, seed=2)
        got = _run(backend, device, x, logit, grad_z, grad_kl, options)
        expected = [_reference(x, logit, grad_z, grad_kl, options)]
        if backend != "cpu" and infodrop.backends()["cpu"]:
            expected.append(_run("cpu", "cpu", x, logit, grad_z, grad_kl, options))
        z, kl, grad_x, grad_logit, grad_mu, grad_sigma = got
        assert z.dtype == dtype and z.shape == x.shape and z.device.type == device
        assert kl.dtype == kl_dtype(dtype) and kl.shape == (shape[0],)
        n = x[0].numel()
        for want in expected:
            _assert_close(z, want[0], dtype)
            torch.testing.assert_close(kl.cpu().double(), want[1].double(),
                                       **_kl_tolerance(dtype, n))
            _assert_close(grad_x, want[2], dtype, scale=10)
            _assert_close(grad_logit, want[3], dtype, scale=10)
            if prior == "log_normal":
                for actual, wanted in ((grad_mu, want[4]), (grad_sigma, want[5])):
                    torch.testing.assert_close(actual.cpu().double(), wanted.double(),
                                               rtol=1e-3, atol=1e-4 * x.numel() ** 0.5)
        if prior != "log_normal":
            assert grad_mu is None or torch.all(grad_mu == 0)


@pytest.mark.parametrize("prior", PRIORS)
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
def test_noise_stream_matches_reference_model(backend_device, start):
    backend, device = backend_device
    got = infodrop.noise((9,), (1 << 64) - 5, 7, start=start, device=device, backend=backend)
    want = reference.noise((9,), (1 << 64) - 5, 7, start=start)
    torch.testing.assert_close(got.cpu(), want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("layout", ["channels_last", "transposed", "sliced"])
def test_non_contiguous_inputs_use_logical_order(backend_device, layout):
    backend, device = backend_device
    x, logit = make_inputs((2, 6, 5, 7), torch.float32, device=device)
    if layout == "channels_last":
        xs, ls = (t.contiguous(memory_format=torch.channels_last) for t in (x, logit))
    elif layout == "transposed":
        xs, ls = (t.transpose(2, 3).contiguous().transpose(2, 3) for t in (x, logit))
    else:
        xs, ls = (torch.cat([t, t], dim=3)[..., ::2][..., :7] for t in (x, logit))
        x, logit = xs.contiguous(), ls.contiguous()
    assert not xs.is_contiguous()
    z, kl = infodrop.information_dropout(xs, ls, seed=SEED, backend=backend)
    z_c, kl_c = infodrop.information_dropout(x, logit, seed=SEED, backend=backend)
    torch.testing.assert_close(z, z_c, rtol=0, atol=0)
    # CUDA walks channels_last in place: its steps hold other elements than the contiguous
    # ones, and each step's KL is one log of their product (csrc/infodrop/elementwise.h
    # minus_log_of_product), so the sum is the same terms grouped otherwise
    in_place_cuda = backend == "cuda" and layout == "channels_last"
    torch.testing.assert_close(kl, kl_c, rtol=1e-5 if in_place_cuda else 0, atol=0)
    if layout == "channels_last":
        assert z.is_contiguous(memory_format=torch.channels_last)


def test_expanded_grad_is_accepted(backend_device):
    """sum().backward() hands the op an expanded (stride 0) grad_z."""
    backend, device = backend_device
    x, logit = make_inputs((3, 40), torch.float32, device=device)
    x.requires_grad_()
    z, kl = infodrop.information_dropout(x, logit, seed=SEED, backend=backend)
    z.sum().backward()
    eps = reference.noise(x.shape, SEED, 0, device=device)
    alpha = 1e-3 + 0.7 * torch.sigmoid(logit)
    torch.testing.assert_close(x.grad, torch.exp(alpha * eps), rtol=2e-5, atol=2e-5)


def test_gradcheck_float64(backend_device):
    backend, device = backend_device
    x, logit = make_inputs((2, 3, 5), torch.float64, prior="log_normal", device=device)
    x = (x + 0.05).requires_grad_()  # away from the kinks at 0 and at the log-normal floor
    mu = torch.tensor(0.2, dtype=torch.float64, device=device, requires_grad=True)
    sigma = torch.tensor(1.3, dtype=torch.float64, device=device, requires_grad=True)
    for unit_mean in (False, True):
        def f(x, logit, mu, sigma, unit_mean=unit_mean):
            return infodrop.information_dropout(x, logit, prior="log_normal", mu=mu, sigma=sigma,
                                                unit_mean=unit_mean, seed=SEED, backend=backend)

        assert torch.autograd.gradcheck(f, (x, logit.requires_grad_(), mu, sigma))


@pytest.mark.parametrize("shape", [(0, 5), (3, 0), (0,)])
def test_empty_tensors_give_empty_results(backend_device, shape):
    backend, device = backend_device
    x = torch.rand(shape, device=device)
    z, kl = infodrop.information_dropout(x, torch.zeros_like(x), seed=SEED, backend=backend)
    assert z.shape == x.shape and kl.shape == (shape[0],)
    assert torch.equal(kl.cpu(), torch.zeros(shape[0]))


def test_nan_input_propagates(backend_device):
    backend, device = backend_device
    x, logit = make_inputs((2, 40), torch.float32)
    logit[0, 3] = float("nan")
    x[1, 5] = float("nan")
    z, kl = infodrop.information_dropout(x.to(device), logit.to(device), seed=SEED,
                                         backend=backend)
    z, kl = z.cpu(), kl.cpu()
    assert z[0, 3].isnan() and z[1, 5].isnan() and kl[0].isnan()
    assert not z[0, :3].isnan().any()


def test_opcheck_schema_and_autograd_registration(backend_device):
    """The fake-tensor and compiled parts of opcheck run in tests/test_op.py (cpu) and
    tests/test_cuda.py (GPU): under the Triton interpreter, wrap_triton hands back the raw
    kernel, which cannot run on fake tensors."""
    backend, device = backend_device
    if backend == "triton":
        import infodrop.triton.ops  # noqa: F401  (registers torch.ops.infodrop_triton)
    namespace = torch.ops.infodrop_triton if backend == "triton" else torch.ops.infodrop
    x, logit = (t.requires_grad_() for t in make_inputs((3, 4, 6), prior="log_normal",
                                                           device=device))
    args = (x, logit, torch.tensor(SEED, device=device), 3, torch.tensor(0.1, device=device),
            torch.tensor(1.2, device=device), "log_normal", 0.7, 1e-3, False, False, True)
    torch.library.opcheck(namespace.information_dropout.default, args,
                          test_utils=("test_schema", "test_autograd_registration"))
    grads = make_grads((3, 4, 6), device=device)
    detached = tuple(a.detach() if isinstance(a, torch.Tensor) else a for a in args)
    torch.library.opcheck(namespace.information_dropout_backward.default, grads + detached,
                          test_utils=("test_schema",))


def test_double_backward_raises_naming_the_op(backend_device):
    """Second derivatives were silently None (PyTorch only warned that the backward op has no
    autograd kernel): differentiating the gradients must raise instead."""
    backend, device = backend_device
    x, logit = (t.requires_grad_() for t in make_inputs((2, 5), torch.float64, device=device))
    z, kl = infodrop.information_dropout(x, logit, seed=SEED, backend=backend)
    grad_x, = torch.autograd.grad(z.sum() + kl.sum(), x, create_graph=True)
    with pytest.raises(RuntimeError, match="information_dropout.*not differentiable"):
        grad_x.sum().backward()


@pytest.mark.parametrize("wrt", ["x", "alpha_logit", "grad_z"])
def test_double_backward_raises_however_it_is_asked(backend_device, wrt):
    """Issue 17: torch.autograd.grad(..., allow_unused=True) of the gradients, and
    gradgradcheck, returned None/zeros: the error node hung off detached copies of the
    gradients, so a graph walk to the op's inputs never reached it."""
    backend, device = backend_device
    x, logit = (t.requires_grad_() for t in make_inputs((2, 5), torch.float64, device=device))
    grad_z = torch.randn(2, 5, dtype=torch.float64, device=device, requires_grad=True)
    z, kl = infodrop.information_dropout(x, logit, seed=SEED, backend=backend)
    grads = torch.autograd.grad((z, kl), (x, logit), (grad_z, torch.ones_like(kl)),
                                create_graph=True)
    inputs = {"x": x, "alpha_logit": logit, "grad_z": grad_z}
    with pytest.raises(RuntimeError, match="information_dropout.*not differentiable"):
        torch.autograd.grad(sum(g.sum() for g in grads), inputs[wrt], allow_unused=True)


def test_gradgradcheck_raises_naming_the_op(backend_device):
    backend, device = backend_device
    x, logit = (t.requires_grad_() for t in make_inputs((2, 5), torch.float64, device=device))

    def f(x, logit):
        return infodrop.information_dropout(x, logit, seed=SEED, backend=backend)

    with pytest.raises(RuntimeError, match="information_dropout.*not differentiable"):
        torch.autograd.gradgradcheck(f, (x, logit))


def test_forward_mode_ad_raises_naming_the_op(backend_device):
    """torch.func.jvp returned zeros: forward-mode AD must raise, naming the op."""
    backend, device = backend_device
    x, logit = make_inputs((2, 5), torch.float64, device=device)

    def z_of(x):
        return infodrop.information_dropout(x, logit, seed=SEED, backend=backend)[0]

    with pytest.raises(RuntimeError, match="information_dropout.*(forward-mode|torch.func)"):
        torch.func.jvp(z_of, (x,), (torch.ones_like(x),))
    with torch.autograd.forward_ad.dual_level():
        dual = torch.autograd.forward_ad.make_dual(x, torch.ones_like(x))
        with pytest.raises(RuntimeError, match="information_dropout.*forward-mode"):
            z_of(dual)


def _bias(channels, seed=5):
    """A per-channel logit bias spanning the sigmoid's range, float32 as parameters are."""
    return torch.randn(channels, generator=torch.Generator().manual_seed(seed)) * 2


def _as_layout(t, layout):
    return t.contiguous(memory_format=torch.channels_last) if layout == "channels_last" else t


@pytest.mark.parametrize("bias_dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_logit_bias_is_added_to_the_logits_of_its_channels(backend_device, layout, bias_dtype):
    """float32: a call with logit_bias gives bit for bit what the call on alpha_logit + bias
    gives, forward and backward (the CUDA channels-last kernels add it to each tile's channels,
    every other path before the kernels: the same float32 sums, a float64 bias rounded to
    float32 first), and the bias's gradient is the channel sums of alpha_logit's."""
    backend, device = backend_device
    x, logit = (_as_layout(t, layout) for t in make_inputs((2, 6, 5, 7), device=device))
    grad_z, grad_kl = make_grads((2, 6, 5, 7), seed=2, device=device)
    bias = _bias(6).to(device, bias_dtype).requires_grad_()
    lb = logit.clone().requires_grad_()
    z, kl = infodrop.information_dropout(x, lb, logit_bias=bias, seed=SEED, backend=backend)
    torch.autograd.backward((z, kl), (grad_z, grad_kl))
    summed = _as_layout(logit + bias.detach().float().view(1, -1, 1, 1), layout).requires_grad_()
    z2, kl2 = infodrop.information_dropout(x, summed, seed=SEED, backend=backend)
    grad_sum, = torch.autograd.grad((z2, kl2), summed, (grad_z, grad_kl))
    torch.testing.assert_close(z, z2, rtol=0, atol=0)
    torch.testing.assert_close(kl, kl2, rtol=0, atol=0)
    torch.testing.assert_close(lb.grad, grad_sum, rtol=0, atol=0)
    assert bias.grad.dtype == bias_dtype
    torch.testing.assert_close(bias.grad, grad_sum.sum((0, 2, 3)).to(bias_dtype), rtol=1e-6,
                               atol=1e-5)


@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_logit_bias_matches_reference(backend_device, dtype, layout):
    """Every dtype against the float64 reference, which adds the bias in the compute dtype (the
    16-bit paths that add it before the kernels round the sum to x's dtype: within the dtype's
    tolerance; CUDA's channels-last kernels add it unrounded)."""
    backend, device = backend_device
    shape = (2, 6, 5, 7)
    x, logit = (_as_layout(t, layout) for t in make_inputs(shape, dtype, zeros=0.2))
    grad_z, grad_kl = make_grads(shape, dtype, seed=2)
    got, want = [], []
    for out, (bk, dev, cast) in ((got, (backend, device, lambda t: t)),
                                 (want, ("reference", "cpu", torch.Tensor.double))):
        xd, ld, bias = (cast(t).to(dev).detach().clone().requires_grad_()
                        for t in (x, logit, _bias(6)))
        if bk == "reference":
            eps = infodrop.noise(shape, SEED, OFFSET, dtype=torch.float64)
            z, kl = reference.information_dropout(xd, ld, eps, logit_bias=bias)
        else:
            z, kl = infodrop.information_dropout(xd, ld, logit_bias=bias, seed=SEED,
                                                 offset=OFFSET, backend=bk)
        torch.autograd.backward((z, kl), (cast(grad_z).to(dev), cast(grad_kl).to(dev)))
        out += [z, kl, xd.grad, ld.grad, bias.grad]
    _assert_close(got[0], want[0], dtype)
    kl_tolerance = _kl_tolerance(dtype, x[0].numel())
    if dtype in (torch.float16, torch.bfloat16):  # each unit's KL of a logit rounded to 8-11 bits
        kl_tolerance["rtol"] = 2e-3
    torch.testing.assert_close(got[1].cpu().double(), want[1].double(), **kl_tolerance)
    _assert_close(got[2], want[2], dtype, scale=10)
    _assert_close(got[3], want[3], dtype, scale=10)
    # 70 logits per channel: their gradients' errors add up
    _assert_close(got[4], want[4], dtype, scale=10 * 70 ** 0.5)
    assert got[4].dtype == torch.float32  # the bias's own dtype, as a parameter's gradient


def test_gradcheck_float64_with_logit_bias(backend_device):
    backend, device = backend_device
    x, logit = make_inputs((2, 3, 5), torch.float64, prior="log_normal", device=device)
    x = (x + 0.05).requires_grad_()
    bias = _bias(3).double().to(device).requires_grad_()

    def f(x, logit, bias):
        return infodrop.information_dropout(x, logit, logit_bias=bias, prior="log_normal",
                                            seed=SEED, backend=backend)

    assert torch.autograd.gradcheck(f, (x, logit.requires_grad_(), bias))


@pytest.mark.parametrize("dtype_", [torch.float32, torch.float64], ids=str)
def test_logit_bias_takes_no_pass_of_its_own_where_the_kernels_add_it(backend_device, dtype_):
    """CUDA's channels-last kernels of 16- and 32-bit types add the bias as they read the
    logits: the call runs no add over them, forward or backward; every other path adds it to
    alpha_logit first (one add)."""
    backend, device = backend_device
    x, logit = (_as_layout(t, "channels_last") for t in make_inputs((2, 6, 5, 7), dtype_, device=device))
    logit.requires_grad_()
    bias = _bias(6).to(device).requires_grad_()

    def step():
        z, kl = infodrop.information_dropout(x, logit, logit_bias=bias, seed=SEED, backend=backend)
        (z.sum() + kl.sum()).backward()

    fused = backend == "cuda" and dtype_ != torch.float64
    assert ("aten::add" in aten_ops_run_by(step)) is not fused

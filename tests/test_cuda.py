"""The CUDA extension: that its kernels are registered wherever the build had CUDA, and, on a
GPU, what only a GPU can show: opcheck and torch.compile of the cuda and triton ops, no host
synchronisation, grids with many blocks per sample or more than 65535 samples, unaligned
pointers, device checks.  (Agreement with the CPU kernel and the reference for every dtype and
option, and gradcheck: tests/test_cuda_kernels.py.)"""

import os

import pytest
import torch

import infodrop
from infodrop import _ops
from infodrop._spec import kl_dtype
from infodrop.testing import make_inputs

from ._helpers import requires_compiled

gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (none here)")
SEED = 2016


def _cuda_toolkit_found():
    homes = (os.environ.get("CUDA_HOME"), "/usr/local/cuda")
    return any(home and os.path.exists(os.path.join(home, "bin", "nvcc")) for home in homes)


def _build_had_cuda():
    """What setup.py decides: torch with CUDA, nvcc found, INFODROP_CUDA not 0."""
    return (torch.version.cuda is not None and _cuda_toolkit_found()
            and os.environ.get("INFODROP_CUDA") != "0")


@requires_compiled
@pytest.mark.skipif(not _build_had_cuda(), reason="this build has no CUDA (torch or nvcc)")
def test_cuda_kernels_are_registered_for_every_op():
    assert _ops.CUDA_BUILT, "setup.py found CUDA but infodrop._C_cuda did not load"
    for op in ("information_dropout", "information_dropout_backward", "noise_"):
        assert torch._C._dispatch_has_kernel_for_dispatch_key(f"infodrop::{op}", "CUDA"), op
    assert infodrop.backends(detail=True)["cuda"]["built"]
    assert infodrop.backends()["cuda"] == torch.cuda.is_available()


def _backends_on_gpu():
    available = infodrop.backends()
    return [name for name in ("cuda", "triton") if available[name]]


def _fused_ops(backend):
    if backend == "cuda":
        return torch.ops.infodrop.information_dropout, torch.ops.infodrop.information_dropout_backward
    import infodrop.triton.ops  # noqa: F401  (registers torch.ops.infodrop_triton)

    return (torch.ops.infodrop_triton.information_dropout,
            torch.ops.infodrop_triton.information_dropout_backward)


def _op_args(x, logit, prior, device="cuda"):
    compute = kl_dtype(x.dtype)
    return (x, logit, torch.tensor(SEED, device=device), 3,
            torch.tensor(0.1, dtype=compute, device=device),
            torch.tensor(1.2, dtype=compute, device=device), prior, 0.7, 1e-3, False, False, True)


def _cuda_inputs(shape, dtype=torch.float32, **kwargs):
    return tuple(t.cuda() for t in make_inputs(shape, dtype, **kwargs))


@pytest.mark.cuda
@gpu
@pytest.mark.parametrize("backend", ["cuda", "triton"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
@pytest.mark.parametrize("prior", ["log_uniform", "log_normal"])
def test_opcheck(backend, dtype, prior):
    if backend not in _backends_on_gpu():
        pytest.skip(f"{backend} is not available")
    forward, backward = _fused_ops(backend)
    x, logit = _cuda_inputs((3, 4, 6), dtype, prior=prior)
    args = _op_args(x.requires_grad_(), logit.requires_grad_(), prior)
    torch.library.opcheck(forward.default, args)
    grads = (torch.randn_like(x), torch.randn(3, device="cuda"))
    detached = tuple(a.detach() if isinstance(a, torch.Tensor) else a for a in args)
    torch.library.opcheck(backward.default, grads + detached,
                          test_utils=("test_schema", "test_faketensor", "test_aot_dispatch_dynamic"))


@pytest.mark.cuda
@gpu
@pytest.mark.parametrize("backend", ["cuda", "triton"])
def test_compiled_layer_matches_eager(backend):
    if backend not in _backends_on_gpu():
        pytest.skip(f"{backend} is not available")
    x, logit = _cuda_inputs((4, 8, 6, 6))

    def layer(x, logit):
        z, kl = infodrop.information_dropout(x, logit, seed=5, offset=1, backend=backend)
        return (z * z).sum() + kl.mean()

    eager_x, compiled_x = x.clone().requires_grad_(), x.clone().requires_grad_()
    eager = layer(eager_x, logit)
    compiled = torch.compile(layer, fullgraph=True)(compiled_x, logit)
    eager.backward()
    compiled.backward()
    torch.testing.assert_close(compiled, eager, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(compiled_x.grad, eager_x.grad, rtol=1e-5, atol=1e-5)


@pytest.mark.cuda
@gpu
@pytest.mark.parametrize("backend", ["cuda", "triton"])
def test_drawn_seed_needs_no_host_synchronisation(backend):
    if backend not in _backends_on_gpu():
        pytest.skip(f"{backend} is not available")
    x, logit = _cuda_inputs((2, 64))
    x.requires_grad_()
    infodrop.information_dropout(x, logit, backend=backend)  # warm-up: kernels compiled, loaded
    torch.cuda.set_sync_debug_mode("error")
    try:
        z, kl = infodrop.information_dropout(x, logit, backend=backend)
        (z.sum() + kl.sum()).backward()
    finally:
        torch.cuda.set_sync_debug_mode("default")


@pytest.mark.cuda
@gpu
@pytest.mark.parametrize("backend", ["cuda", "triton"])
@pytest.mark.parametrize("shape", [(3, 300_001), (70_000, 3)], ids=["long-rows", "many-samples"])
def test_large_grids_match_cpu_kernel(backend, shape):
    if backend not in _backends_on_gpu():
        pytest.skip(f"{backend} is not available")
    x, logit = make_inputs(shape, prior="log_normal")
    grad_z = torch.randn(shape)
    results = []
    for device, name in (("cuda", backend), ("cpu", "cpu")):
        xd = x.to(device).requires_grad_()
        mu = torch.tensor(0.3, device=device, requires_grad=True)
        z, kl = infodrop.information_dropout(xd, logit.to(device), prior="log_normal", mu=mu,
                                             seed=SEED, backend=name)
        torch.autograd.backward((z, kl), (grad_z.to(device), torch.ones_like(kl)))
        results.append([t.cpu() for t in (z, kl, xd.grad, mu.grad)])
    (z, kl, grad_x, grad_mu), (z_c, kl_c, grad_x_c, grad_mu_c) = results
    torch.testing.assert_close(z, z_c, rtol=2e-5, atol=2e-5)
    torch.testing.assert_close(kl, kl_c, rtol=1e-4, atol=1e-4 * shape[1] ** 0.5)
    torch.testing.assert_close(grad_x, grad_x_c, rtol=2e-4, atol=2e-4)
    torch.testing.assert_close(grad_mu, grad_mu_c, rtol=1e-4, atol=1e-3 * x.numel() ** 0.5)


@pytest.mark.cuda
@gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_unaligned_tensors_match_aligned(dtype):
    """Views that start one element into a buffer cannot take the 16-byte path."""
    x, logit = _cuda_inputs((3, 1001), dtype)
    shifted = [torch.empty(x.numel() + 1, dtype=dtype, device="cuda")[1:].view(x.shape).copy_(t)
               for t in (x, logit)]
    z, kl = infodrop.information_dropout(x, logit, seed=SEED, backend="cuda")
    z_u, kl_u = infodrop.information_dropout(*shifted, seed=SEED, backend="cuda")
    torch.testing.assert_close(z_u, z, rtol=0, atol=0)
    torch.testing.assert_close(kl_u, kl, rtol=1e-6, atol=1e-6)


@pytest.mark.cuda
@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA GPUs")
@pytest.mark.parametrize("backend", ["cuda", "triton"])
def test_tensors_on_a_gpu_that_is_not_the_current_one(backend):
    if not infodrop.backends()[backend]:
        pytest.skip(f"backend {backend!r} is not available")
    x, logit = make_inputs((3, 1000))
    want_z, want_kl = infodrop.information_dropout(x, logit, seed=SEED, backend="cpu")
    with torch.cuda.device(0):
        xd, ld = x.to("cuda:1").requires_grad_(), logit.to("cuda:1").requires_grad_()
        z, kl = infodrop.information_dropout(xd, ld, seed=SEED, backend=backend)
        (z.sum() + kl.sum()).backward()
        eps = infodrop.noise(x.shape, SEED, device="cuda:1")
    assert z.device == kl.device == xd.grad.device == eps.device == torch.device("cuda:1")
    torch.testing.assert_close(z.cpu(), want_z, rtol=2e-5, atol=2e-5)
    torch.testing.assert_close(kl.cpu(), want_kl, rtol=2e-4, atol=1e-3)


@pytest.mark.cuda
@gpu
def test_results_are_deterministic():
    x, logit = _cuda_inputs((16, 50_000))
    first = infodrop.information_dropout(x, logit, seed=SEED, backend="cuda")
    second = infodrop.information_dropout(x, logit, seed=SEED, backend="cuda")
    assert all(torch.equal(a, b) for a, b in zip(first, second))


@pytest.mark.cuda
@gpu
def test_a_seed_on_the_cpu_is_accepted():
    x, logit = _cuda_inputs((2, 10))
    args = list(_op_args(x, logit, "log_uniform"))
    z_device, _ = torch.ops.infodrop.information_dropout(*args)
    args[2] = args[2].cpu()
    z_host, _ = torch.ops.infodrop.information_dropout(*args)
    torch.testing.assert_close(z_host, z_device, rtol=0, atol=0)


@pytest.mark.cuda
@gpu
@pytest.mark.parametrize("argument", [4, 5])
def test_prior_scalars_on_another_device_are_rejected_by_name(argument):
    x, logit = _cuda_inputs((2, 10))
    args = list(_op_args(x, logit, "log_normal"))
    args[argument] = args[argument].cpu()
    with pytest.raises(RuntimeError, match="mu" if argument == 4 else "sigma"):
        torch.ops.infodrop.information_dropout(*args)


@pytest.mark.cuda
@gpu
def test_module_trains_on_the_gpu():
    layer = infodrop.InformationDropout(prior="log_normal").cuda()
    x, logit = _cuda_inputs((4, 3, 8, 8), prior="log_normal")
    x.requires_grad_()
    logit.requires_grad_()
    z = layer(x, logit)
    (z.sum() + infodrop.kl_divergence(layer).sum()).backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    assert logit.grad is not None and torch.isfinite(logit.grad).all()
    # the log-normal prior follows the data on the GPU too (a moment match, no gradient step)
    assert layer.mu.is_cuda and torch.isfinite(layer.mu) and layer.mu.item() != 0.0
    assert layer.sigma.is_cuda and layer.sigma.item() > 0 and layer.sigma.item() != 1.0



@pytest.mark.cuda
@gpu
def test_without_the_extension_gpu_tensors_go_to_triton(monkeypatch):
    if not infodrop.backends()["triton"]:
        pytest.skip("triton is not available")
    monkeypatch.setattr(_ops, "CUDA_BUILT", False)
    assert infodrop.functional.resolve("auto", torch.device("cuda")) == "triton"
    torch.testing.assert_close(infodrop.noise((1000,), 7, 3, start=5, device="cuda").cpu(),
                               infodrop.noise((1000,), 7, 3, start=5), rtol=1e-5, atol=1e-5)
    x, logit = _cuda_inputs((2, 50))
    z, kl = infodrop.information_dropout(x, logit, seed=SEED)
    z_cpu, kl_cpu = infodrop.information_dropout(x.cpu(), logit.cpu(), seed=SEED, backend="cpu")
    torch.testing.assert_close(z.cpu(), z_cpu, rtol=2e-5, atol=2e-5)
    torch.testing.assert_close(kl.cpu(), kl_cpu, rtol=1e-4, atol=1e-4)

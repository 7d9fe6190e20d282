"""The Triton kernels as PyTorch operators: torch.library.triton_op + wrap_triton, so that
torch.compile traces into the kernels, with autograd through the fused backward as for the
compiled ops (csrc/autograd.cpp).  The ops take the arguments of
torch.ops.infodrop.information_dropout (same schema, namespace infodrop_triton)."""

import contextlib

import torch
import triton
from torch.library import triton_op, wrap_triton

from .._spec import PRIORS, kl_dtype
from . import kernels

GROUPS = 256  # Philox groups per program: 1024 elements


def groups_per_program(dtype) -> int:
    """GROUPS, halved for float64: its 1024-element forward program spills registers on sm_90
    (ptxas -v; tests/test_triton_aot.py keeps every kernel free of spills)."""
    return GROUPS // 2 if dtype == torch.float64 else GROUPS


def _check(x, alpha_logit, seed, mu, sigma, prior):
    if prior not in PRIORS:
        raise ValueError(f"prior must be one of {PRIORS}, got {prior!r}")
    if alpha_logit.shape != x.shape or alpha_logit.dtype != x.dtype:
        raise ValueError("alpha_logit must have the shape and dtype of x")
    if x.dim() == 0:
        raise ValueError("x must have a batch dimension, got a 0-dim tensor")
    if seed.numel() != 1 or seed.dtype != torch.int64:
        raise ValueError("seed must be a one-element int64 tensor")
    for name, t in (("mu", mu), ("sigma", sigma)):
        if t.numel() != 1 or not t.dtype.is_floating_point:
            raise ValueError(f"{name} must be a one-element floating-point tensor")


def _u32_halves(bits: int):
    bits &= (1 << 64) - 1
    return bits & 0xFFFFFFFF, bits >> 32


def _layout(x):
    """(samples, elements per sample, programs per sample)."""
    samples = x.shape[0]
    per_sample = x.numel() // samples if samples else 0
    # +2 groups: a sample can begin and end inside a group
    return samples, per_sample, triton.cdiv(per_sample // 4 + 2, groups_per_program(x.dtype))


def _launch(kernel, grid, device, *args, **constexprs):
    """Runs a kernel through wrap_triton on ``device``.  Triton launches on the current CUDA
    device and on PyTorch's current stream of it (its launcher asks torch for the stream), which
    is what makes the ops safe under torch.cuda.stream and CUDA graph capture
    (tests/test_cuda_graphs.py); a tensor on another GPU would be read by a kernel on the wrong
    device, hence the guard; the CPU tensors of the interpreter need none."""
    guard = torch.cuda.device(device) if device.type == "cuda" else contextlib.nullcontext()
    with guard:
        wrap_triton(kernel)[grid](*args, **constexprs)


def _like(x, contiguous):
    """The result in x's memory format (as empty_like(x), like the compiled backends)."""
    return contiguous if x.is_contiguous() else torch.empty_like(x).copy_(contiguous)


def _kernel_options(x, prior, max_alpha, alpha_min, mask_inactive, unit_mean, apply_noise):
    return dict(MAX_ALPHA=max_alpha, ALPHA_MIN=alpha_min, FLOAT64=x.dtype == torch.float64,
                LOG_NORMAL=prior == "log_normal", MASK_INACTIVE=mask_inactive,
                UNIT_MEAN=unit_mean, APPLY_NOISE=apply_noise, GROUPS=groups_per_program(x.dtype))


def _device_scalars(x, seed, mu, sigma):
    """seed, mu and sigma where the kernels read them: on x's device, mu and sigma in the
    compute dtype."""
    compute = kl_dtype(x.dtype)
    return (seed.reshape(()).to(x.device), mu.reshape(()).to(x.device, compute),
            sigma.reshape(()).to(x.device, compute))


_NOT_DIFFERENTIABLE = ("infodrop_triton::information_dropout: its gradients are not "
                       "differentiable (no double backward); use backend='reference' for "
                       "higher-order derivatives")


class _NotDifferentiable(torch.autograd.Function):
    """apply(count, *grads, *inputs) -> grads, as outputs whose backward raises.  The node's
    edges lead to the backward's own inputs: the engine runs only nodes on a path to what it is
    asked for, so an error node hung off detached copies of the gradients (DelayedError) let
    torch.autograd.grad(..., allow_unused=True) and gradgradcheck answer None/zeros."""

    @staticmethod
    def forward(ctx, count, *tensors):
        return tensors[:count]  # autograd hands them out as views carrying this node

    @staticmethod
    def backward(ctx, *grads):
        raise RuntimeError(_NOT_DIFFERENTIABLE)


def _not_differentiable(grads, inputs):
    """The gradients, made to raise when differentiated (double backward) wherever they depend
    on something that requires grad, as csrc/autograd.cpp does.  once_differentiable looks at
    the incoming gradients only, not at the saved x, so it would leave them without a grad_fn
    and double backward would fail with an error that does not say why."""
    if not torch.is_grad_enabled() or not any(t.requires_grad for t in inputs):
        return grads
    return _NotDifferentiable.apply(len(grads), *(g.detach() for g in grads), *inputs)


def _register_autograd(forward_op: str, backward_op) -> None:
    """Autograd of the Triton forward op through its backward op, as csrc/autograd.cpp does for
    the compiled ops (the Triton kernels are Python-registered, so their autograd is too)."""

    def setup_context(ctx, inputs, output):
        x, alpha_logit, seed, offset, mu, sigma, *options = inputs
        # The noise is not saved: the backward regenerates it from (seed, offset).
        ctx.save_for_backward(x, alpha_logit, seed, mu, sigma)
        ctx.offset = offset
        ctx.options = options

    def backward(ctx, grad_z, grad_kl):
        x, alpha_logit, seed, mu, sigma = ctx.saved_tensors
        grad_x, grad_logit, grad_mu, grad_sigma = _not_differentiable(
            backward_op(grad_z, grad_kl, x, alpha_logit, seed, ctx.offset, mu, sigma,
                        *ctx.options),
            (grad_z, grad_kl, x, alpha_logit, mu, sigma))
        return (grad_x, grad_logit, None, None, grad_mu, grad_sigma) + (None,) * len(ctx.options)

    torch.library.register_autograd(forward_op, backward, setup_context=setup_context)


@triton_op("infodrop_triton::information_dropout", mutates_args=())
def information_dropout(x: torch.Tensor, alpha_logit: torch.Tensor, seed: torch.Tensor,
                        offset: int, mu: torch.Tensor, sigma: torch.Tensor, prior: str,
                        max_alpha: float, alpha_min: float, mask_inactive: bool, unit_mean: bool,
                        apply_noise: bool) -> tuple[torch.Tensor, torch.Tensor]:
    _check(x, alpha_logit, seed, mu, sigma, prior)
    samples, per_sample, blocks = _layout(x)
    xc, lc = x.contiguous(), alpha_logit.contiguous()
    z = torch.empty_like(xc)
    partials = torch.zeros((samples, blocks), dtype=kl_dtype(x.dtype), device=x.device)
    if x.numel():
        seed_d, mu_d, sigma_d = _device_scalars(x, seed, mu, sigma)
        _launch(kernels.forward_kernel, (samples * blocks,), x.device,
                xc, lc, z, partials, seed_d, *_u32_halves(offset), mu_d, sigma_d, per_sample,
                blocks, **_kernel_options(x, prior, max_alpha, alpha_min, mask_inactive,
                                          unit_mean, apply_noise))
    return _like(x, z), partials.sum(1)


@triton_op("infodrop_triton::information_dropout_backward", mutates_args=())
def information_dropout_backward(
        grad_z: torch.Tensor, grad_kl: torch.Tensor, x: torch.Tensor, alpha_logit: torch.Tensor,
        seed: torch.Tensor, offset: int, mu: torch.Tensor, sigma: torch.Tensor, prior: str,
        max_alpha: float, alpha_min: float, mask_inactive: bool, unit_mean: bool,
        apply_noise: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    _check(x, alpha_logit, seed, mu, sigma, prior)
    samples, per_sample, blocks = _layout(x)
    compute = kl_dtype(x.dtype)
    xc, lc = x.contiguous(), alpha_logit.contiguous()
    gzc = grad_z.to(x.dtype).contiguous()
    gklc = grad_kl.to(x.device, compute).contiguous()
    grad_x, grad_logit = torch.empty_like(xc), torch.empty_like(lc)
    # per program: grad_kl[b] * (sum of d kl / d mu, sum of d kl / d sigma); zero unless
    # the prior is log-normal
    prior_partials = torch.zeros((samples * blocks, 2), dtype=compute, device=x.device)
    if x.numel():
        seed_d, mu_d, sigma_d = _device_scalars(x, seed, mu, sigma)
        _launch(kernels.backward_kernel, (samples * blocks,), x.device,
                gzc, gklc, xc, lc, grad_x, grad_logit, prior_partials, seed_d,
                *_u32_halves(offset), mu_d, sigma_d, per_sample, blocks,
                **_kernel_options(x, prior, max_alpha, alpha_min, mask_inactive, unit_mean,
                                  apply_noise))
    prior_grads = prior_partials.sum(0)
    return (_like(x, grad_x), _like(alpha_logit, grad_logit),
            prior_grads[0].to(mu.dtype).reshape(mu.shape).clone(),
            prior_grads[1].to(sigma.dtype).reshape(sigma.shape).clone())


_register_autograd("infodrop_triton::information_dropout",
                   torch.ops.infodrop_triton.information_dropout_backward)


def fused(x, alpha_logit, seed, offset, mu, sigma, *options):
    """infodrop_triton::information_dropout as infodrop.information_dropout calls it.  Its
    autograd is registered in Python without a forward-mode derivative, where PyTorch would
    silently give zero tangents: forward-mode AD (and torch.func.jvp) raises instead, as for
    the compiled ops."""
    for t in (x, alpha_logit, mu, sigma):
        if torch.autograd.forward_ad.unpack_dual(t).tangent is not None:
            raise RuntimeError("infodrop_triton::information_dropout: forward-mode AD (jvp) is "
                               "not implemented; use backend='reference' for forward-mode "
                               "derivatives")
    return information_dropout(x, alpha_logit, seed, offset, mu, sigma, *options)


@triton_op("infodrop_triton::noise", mutates_args=())
def noise(numel: int, seed: torch.Tensor, offset: int, start: int) -> torch.Tensor:
    """The noise stream (float32) at indices start .. start + numel - 1 on seed's device;
    start is uint64 bits in an int, as in infodrop::noise_."""
    out = torch.empty(numel, dtype=torch.float32, device=seed.device)
    if numel:
        start_bits = start & ((1 << 64) - 1)
        first_group, head = start_bits >> 2, start_bits & 3
        programs = triton.cdiv(head + numel, 4 * GROUPS)
        _launch(kernels.noise_kernel, (programs,), seed.device, out, numel, first_group, head,
                seed.reshape(()), *_u32_halves(offset), GROUPS=GROUPS)
    return out

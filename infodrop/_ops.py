"""Loads the compiled operator library and gives PyTorch what it needs beyond the kernels:
fake (meta) implementations for torch.compile, and autograd through the fused backward op."""

import torch

from ._spec import kl_dtype

try:
    from . import _C  # noqa: F401  (registers torch.ops.infodrop.* and the CPU kernels)
except ImportError as error:  # a source checkout that was never built: reference only
    COMPILED_ERROR = error
else:
    COMPILED_ERROR = None

try:
    from . import _C_cuda  # noqa: F401  (registers the CUDA kernels, when built)
except ImportError:
    CUDA_BUILT = False
else:
    CUDA_BUILT = True

COMPILED = COMPILED_ERROR is None


def register_autograd(forward_op: str, backward_op) -> None:
    """Autograd of a fused forward op with the schema of infodrop::information_dropout, through
    ``backward_op`` (the schema of infodrop::information_dropout_backward).  Shared by the
    compiled ops and the Triton ops (infodrop/triton/ops.py)."""

    def setup_context(ctx, inputs, output):
        x, alpha_logit, seed, offset, mu, sigma, *options = inputs
        # The noise is not saved: the backward regenerates it from (seed, offset).
        ctx.save_for_backward(x, alpha_logit, seed, mu, sigma)
        ctx.offset = offset
        ctx.options = options

    def backward(ctx, grad_z, grad_kl):
        x, alpha_logit, seed, mu, sigma = ctx.saved_tensors
        grad_x, grad_logit, grad_mu, grad_sigma = backward_op(
            grad_z, grad_kl, x, alpha_logit, seed, ctx.offset, mu, sigma, *ctx.options)
        return (grad_x, grad_logit, None, None, grad_mu, grad_sigma) + (None,) * len(ctx.options)

    torch.library.register_autograd(forward_op, backward, setup_context=setup_context)


if COMPILED:

    @torch.library.register_fake("infodrop::information_dropout")
    def _forward_fake(x, alpha_logit, seed, offset, mu, sigma, prior, max_alpha, alpha_min,
                      mask_inactive, unit_mean, apply_noise):
        return torch.empty_like(x), x.new_empty((x.shape[0],), dtype=kl_dtype(x.dtype))

    @torch.library.register_fake("infodrop::information_dropout_backward")
    def _backward_fake(grad_z, grad_kl, x, alpha_logit, seed, offset, mu, sigma, prior,
                       max_alpha, alpha_min, mask_inactive, unit_mean, apply_noise):
        return (torch.empty_like(x), torch.empty_like(alpha_logit), torch.empty_like(mu),
                torch.empty_like(sigma))

    register_autograd("infodrop::information_dropout",
                      torch.ops.infodrop.information_dropout_backward)

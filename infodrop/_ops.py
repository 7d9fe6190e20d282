"""Loads the compiled operator library (schemas, CPU and CUDA kernels, and their autograd,
csrc/autograd.cpp) and registers the fake (meta) kernels that torch.compile and opcheck trace
with."""

import torch

from ._checks import check_logit_bias
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
# torch.ops.infodrop.information_dropout through a typed binding, for eager calls
# (infodrop/functional.py says when)
direct_information_dropout = _C.information_dropout if COMPILED else None


if COMPILED:

    @torch.library.register_fake("infodrop::information_dropout")
    def _forward_fake(x, alpha_logit, seed, offset, mu, sigma, prior, max_alpha, alpha_min,
                      mask_inactive, unit_mean, apply_noise, logit_bias=None):
        check_logit_bias(x, logit_bias)  # as the kernels do: a traced call fails where it would
        return torch.empty_like(x), x.new_empty((x.shape[0],), dtype=kl_dtype(x.dtype))

    @torch.library.register_fake("infodrop::information_dropout_backward")
    def _backward_fake(grad_z, grad_kl, x, alpha_logit, seed, offset, mu, sigma, prior,
                       max_alpha, alpha_min, mask_inactive, unit_mean, apply_noise,
                       logit_bias=None):
        return (torch.empty_like(x), torch.empty_like(alpha_logit), torch.empty_like(mu),
                torch.empty_like(sigma))

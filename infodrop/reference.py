"""Pure-PyTorch reference of Information Dropout (docs/spec.md sections 1 and 3).

Written for clarity, not speed: every compiled backend is checked against these functions, and
autograd through them is the ground truth for gradients.  Nothing here is fused; each step is
one readable tensor expression.
"""

import math

import torch

from ._spec import PHILOX_M0, PHILOX_M1, PHILOX_W0, PHILOX_W1, PRIORS, X_FLOOR, kl_dtype

_MASK32 = 0xFFFFFFFF


def _mulhilo(a: torch.Tensor, m: int):
    """High and low 32-bit words of a * m for 32-bit a held in int64.

    The product may exceed 2^63 and wrap, but wrapping keeps the low 64 bits, and both words
    are read from those bits, so the result is exact.
    """
    prod = a * m
    return (prod >> 32) & _MASK32, prod & _MASK32


def philox4x32_10(counter, key):
    """Philox4x32-10 on int64 tensors holding 32-bit words; counter: 4 words, key: 2 words."""
    c0, c1, c2, c3 = counter
    k0, k1 = key
    for _ in range(10):
        hi0, lo0 = _mulhilo(c0, PHILOX_M0)
        hi1, lo1 = _mulhilo(c2, PHILOX_M1)
        c0, c1, c2, c3 = hi1 ^ c1 ^ k0, lo1, hi0 ^ c3 ^ k1, lo0
        k0 = (k0 + PHILOX_W0) & _MASK32
        k1 = (k1 + PHILOX_W1) & _MASK32
    return c0, c1, c2, c3


def _uniform(r: torch.Tensor) -> torch.Tensor:
    # (r >> 9) * 2^-23 + 2^-24: the 23 high bits centred in their bin, exact in float32,
    # never 0 (log is finite) and never 1.
    return (r >> 9).to(torch.float32) * 2.0**-23 + 2.0**-24


def _split_u64(value: int):
    return value & _MASK32, (value >> 32) & _MASK32


def noise(shape, seed: int, offset: int = 0, *, start: int = 0, device="cpu",
          dtype=torch.float32) -> torch.Tensor:
    """The noise stream eps at indices start .. start + numel - 1, in pure PyTorch.

    An independent model of the C++ header's stream (spec section 3): Philox on int64 tensors
    and the Box-Muller transform in float32.
    """
    shape = tuple(shape)
    numel = math.prod(shape)
    # the uint64 indices as int64 bits (wrapping past 2^63), and the group index shifted as
    # unsigned: an arithmetic shift would copy the sign bit into the group's top two bits
    signed_start = start - (1 << 64) if start >= 1 << 63 else start
    index = torch.arange(numel, dtype=torch.int64, device=device) + signed_start
    group, lane = (index >> 2) & ((1 << 62) - 1), index & 3
    seed_lo, seed_hi = _split_u64(seed)
    off_lo, off_hi = _split_u64(offset)
    counter = (group & _MASK32, (group >> 32) & _MASK32,
               torch.full_like(group, off_lo), torch.full_like(group, off_hi))
    key = (torch.full_like(group, seed_lo), torch.full_like(group, seed_hi))
    r0, r1, r2, r3 = philox4x32_10(counter, key)
    first_pair = lane < 2
    a = torch.where(first_pair, r0, r2)
    b = torch.where(first_pair, r1, r3)
    rad = torch.sqrt(-2.0 * torch.log(_uniform(a)))
    theta = (2.0 * math.pi) * _uniform(b)
    eps = torch.where(lane % 2 == 0, rad * torch.cos(theta), rad * torch.sin(theta))
    return eps.reshape(shape).to(dtype)


def alpha_from_logit(alpha_logit, *, max_alpha=0.7, alpha_min=1e-3):
    """alpha = alpha_min + max_alpha * sigmoid(logit): capped noise scale of the alpha branch."""
    return alpha_min + max_alpha * torch.sigmoid(alpha_logit)


def kl_per_unit(x, alpha, *, prior="log_uniform", max_alpha=0.7, alpha_min=1e-3, mu=0.0,
                sigma=1.0, mask_inactive=False):
    """KL(p(z|x) || q(z)) of each unit (Propositions 2 and 3 of the paper)."""
    if prior == "log_uniform":
        kl = -torch.log(alpha / (alpha_min + max_alpha))
    elif prior == "log_normal":
        # where() rather than clamp so that dkl/dx is exactly 0 at and below the floor
        log_x = torch.log(torch.where(x > X_FLOOR, x, torch.full_like(x, X_FLOOR)))
        kl = ((log_x - mu) ** 2 + alpha**2) / (2 * sigma**2) - torch.log(alpha / sigma) - 0.5
    else:
        raise ValueError(f"prior must be one of {PRIORS}, got {prior!r}")
    if mask_inactive:
        kl = torch.where(x == 0, torch.zeros_like(kl), kl)
    return kl


def per_channel(values, like):
    """A per-channel tensor (dim 1: logit_bias) viewed to broadcast against ``like``."""
    return values.view((1, -1) + (1,) * (like.dim() - 2))


def information_dropout(x, alpha_logit, eps, *, prior="log_uniform", max_alpha=0.7,
                        alpha_min=1e-3, mu=0.0, sigma=1.0, mask_inactive=False,
                        unit_mean=False, training=True, noise_in_eval=False, logit_bias=None):
    """z = x * exp(alpha * eps) and the per-sample KL, given the standard-normal noise eps
    (read only where noise is applied: None is fine with ``training=False``).  ``logit_bias``
    (one value per channel of x, dim 1) is added to alpha_logit in the compute dtype.

    Half types are computed in float32 and z is returned in x's dtype; kl has shape (B,) and
    dtype float32 (float64 for float64 inputs), like the fused kernels.
    """
    compute = kl_dtype(x.dtype)
    xc, logit = x.to(compute), alpha_logit.to(compute)
    if logit_bias is not None:
        logit = logit + per_channel(logit_bias.to(compute), logit)
    alpha = alpha_from_logit(logit, max_alpha=max_alpha, alpha_min=alpha_min)
    if training or noise_in_eval:
        log_noise = alpha * eps.to(compute)
        if unit_mean:
            log_noise = log_noise - alpha**2 / 2
        z = xc * torch.exp(log_noise)
    else:
        z = xc
    if torch.is_tensor(mu):
        mu = mu.to(compute)
    if torch.is_tensor(sigma):
        sigma = sigma.to(compute)
    kl = kl_per_unit(xc, alpha, prior=prior, max_alpha=max_alpha, alpha_min=alpha_min, mu=mu,
                     sigma=sigma, mask_inactive=mask_inactive)
    return z.to(x.dtype), kl.flatten(start_dim=1).sum(dim=1) if kl.dim() > 1 else kl

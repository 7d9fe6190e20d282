"""The functional API: information_dropout() and noise() (docs/spec.md section 4)."""

import math

import torch

from . import reference
from ._backends import resolve
from ._checks import check_options, check_tensor_pair, check_u64
from ._spec import kl_dtype

_INT64_MIN, _INT64_MAX = -(1 << 63), (1 << 63) - 1


def _draw_seed(generator, device):
    # A device tensor drawn from the device's generator: no host synchronisation, and
    # torch.compile traces it like any random op.
    return torch.randint(_INT64_MIN, _INT64_MAX, (), dtype=torch.int64, device=device,
                         generator=generator)


def _seed_tensor(seed_bits, generator, device, apply_noise):
    if seed_bits is not None:
        return torch.full((), seed_bits, dtype=torch.int64, device=device)
    if apply_noise:
        return _draw_seed(generator, device)
    return torch.zeros((), dtype=torch.int64, device=device)  # unused: no noise drawn


def _scalar_tensor(value, dtype, device):
    if isinstance(value, torch.Tensor):
        return value.reshape(()).to(dtype=dtype, device=device)
    return torch.full((), float(value), dtype=dtype, device=device)


def _as_uint64(bits: int) -> int:
    return bits + (1 << 64) if bits < 0 else bits


def information_dropout(x, alpha_logit, *, prior="log_uniform", max_alpha=0.7, alpha_min=1e-3,
                        mu=0.0, sigma=1.0, mask_inactive=False, unit_mean=False, training=True,
                        noise_in_eval=False, seed=None, offset=0, generator=None,
                        backend="auto"):
    """Information Dropout: z = x * exp(alpha * eps) and the per-sample KL term.

    alpha = alpha_min + max_alpha * sigmoid(alpha_logit); eps ~ N(0, 1) is the noise stream of
    (seed, offset) (docs/spec.md section 3), drawn from ``generator`` (or PyTorch's default
    generator for x's device) when ``seed`` is None.  Returns ``(z, kl)`` with z shaped like x
    and kl of shape (B,): the KL summed over every non-batch element of each sample.
    Add ``beta * kl.mean() / N_train`` to the loss (paper eq. 3).
    """
    check_tensor_pair(x, alpha_logit)
    check_options(prior, max_alpha, alpha_min, mu, sigma)
    offset_bits = check_u64(offset, "offset")
    seed_bits = None if seed is None else check_u64(seed, "seed")
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
    apply_noise = bool(training or noise_in_eval)
    chosen = resolve(backend, x.device)
    compute = kl_dtype(x.dtype)
    if chosen == "reference":
        if seed_bits is None:  # the pure-PyTorch stream takes a Python int: this syncs
            seed_bits = int(_draw_seed(generator, x.device).item()) if apply_noise else 0
        eps = reference.noise(x.shape, _as_uint64(seed_bits), _as_uint64(offset_bits),
                              device=x.device)
        return reference.information_dropout(
            x, alpha_logit, eps, prior=prior, max_alpha=max_alpha, alpha_min=alpha_min, mu=mu,
            sigma=sigma, mask_inactive=mask_inactive, unit_mean=unit_mean, training=training,
            noise_in_eval=noise_in_eval)
    seed_t = _seed_tensor(seed_bits, generator, x.device, apply_noise)
    fused = torch.ops.infodrop.information_dropout
    if chosen == "triton":
        from .triton import ops as triton_ops  # imports triton only where it is used

        fused = triton_ops.information_dropout
    return fused(
        x, alpha_logit, seed_t, offset_bits, _scalar_tensor(mu, compute, x.device),
        _scalar_tensor(sigma, compute, x.device), prior, float(max_alpha), float(alpha_min),
        bool(mask_inactive), bool(unit_mean), apply_noise)


def noise(shape, seed, offset=0, *, start=0, device="cpu", dtype=torch.float32, backend="auto"):
    """The noise stream eps at indices start .. start + numel - 1, shaped ``shape``.

    ``backend`` is chosen as in :func:`information_dropout` ("auto": the compiled kernel of
    ``device`` where there is one, else Triton on a GPU, else the pure-PyTorch model in
    infodrop.reference); every backend gives the same values up to float32 rounding.
    """
    shape = tuple(shape)
    if any(not isinstance(n, int) or n < 0 for n in shape):
        raise ValueError(f"shape must be a sequence of non-negative ints, got {shape}")
    seed_bits, offset_bits = check_u64(seed, "seed"), check_u64(offset, "offset")
    start_bits = check_u64(start, "start")
    numel = math.prod(shape)
    if _as_uint64(start_bits) + numel > 1 << 64:
        raise ValueError("start + numel must not exceed 2**64")
    device = torch.device(device)
    chosen = resolve(backend, device)
    if chosen == "reference":
        return reference.noise(shape, seed, offset, start=start, device=device, dtype=dtype)
    seed_t = torch.full((), seed_bits, dtype=torch.int64, device=device)
    if chosen == "triton":
        from .triton import ops as triton_ops

        out = triton_ops.noise(numel, seed_t, offset_bits, start_bits).reshape(shape)
    else:
        out = torch.empty(shape, dtype=torch.float32, device=device)
        torch.ops.infodrop.noise_(out, seed_t, offset_bits, start_bits)
    return out.to(dtype)

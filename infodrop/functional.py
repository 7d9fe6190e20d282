"""The functional API: information_dropout() and noise() (docs/spec.md section 4)."""

import math

import torch

from . import _ops, reference
from ._backends import resolve
from ._checks import check_logit_bias, check_options, check_tensor_pair, check_u64
from ._per_rank import fold_rank
from ._spec import kl_dtype
from ._tracing import exporting

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
    return _constant(0, torch.int64, device)  # unused: no noise drawn


# 0-dim tensors of constant options (mu and sigma given as numbers, the unused seed), made
# once per (value, dtype, device) instead of on every call (a tensor creation costs about as
# much as the whole F.dropout call).  Nothing writes to them: the op only reads and saves them.
_CONSTANTS = {}


def _constant(value, dtype, device):
    if torch.compiler.is_compiling():  # traced: a constant of the graph, not a cached tensor
        return torch.full((), value, dtype=dtype, device=device)
    key = (value, dtype, device)
    tensor = _CONSTANTS.get(key)
    if tensor is None:
        # never an inference tensor: autograd saves these for the backward
        with torch.inference_mode(False):
            tensor = _CONSTANTS[key] = torch.full((), value, dtype=dtype, device=device)
    return tensor


def _scalar_tensor(value, dtype, device):
    """mu or sigma as the 0-dim tensor of the compute dtype on x's device that the op takes."""
    if not isinstance(value, torch.Tensor):
        return _constant(float(value), dtype, device)
    if value.dim() == 0 and value.dtype == dtype and value.device == device:
        return value
    return value.reshape(()).to(dtype=dtype, device=device)


def _as_uint64(bits: int) -> int:
    return bits + (1 << 64) if bits < 0 else bits


def information_dropout(x, alpha_logit, *, prior="log_uniform", max_alpha=0.7, alpha_min=1e-3,
                        mu=0.0, sigma=1.0, mask_inactive=False, unit_mean=False, training=True,
                        noise_in_eval=False, seed=None, offset=0, generator=None,
                        backend="auto", logit_bias=None):
    """Information Dropout: z = x * exp(alpha * eps) and the per-sample KL term.

    alpha = alpha_min + max_alpha * sigmoid(alpha_logit + logit_bias), ``logit_bias`` (optional)
    one value per channel of x (dim 1), as an alpha head's bias: the CUDA kernels add it as they
    read alpha_logit (channels_last x), saving the pass a convolution's bias takes on its own;
    elsewhere it is added before them.  eps ~ N(0, 1) is the noise stream of
    (seed, offset) (docs/spec.md section 3), drawn from ``generator`` (or PyTorch's default
    generator for x's device) when ``seed`` is None.  Returns ``(z, kl)`` with z shaped like x
    and kl of shape (B,): the KL summed over every non-batch element of each sample.
    Add ``beta * kl.mean() / N_train`` to the loss (paper eq. 3).
    """
    check_options(prior, max_alpha, alpha_min, mu, sigma, mask_inactive, unit_mean, training,
                  noise_in_eval)
    offset_bits = check_u64(offset, "offset")
    seed_bits = None if seed is None else check_u64(seed, "seed")
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
    return _information_dropout(x, alpha_logit, prior, max_alpha, alpha_min, mu, sigma,
                                mask_inactive, unit_mean, training, noise_in_eval, seed_bits,
                                offset_bits, generator, backend, logit_bias)


def _information_dropout(x, alpha_logit, prior, max_alpha, alpha_min, mu, sigma, mask_inactive,
                         unit_mean, training, noise_in_eval, seed_bits, offset_bits, generator,
                         backend, logit_bias=None):
    """information_dropout() once its options are known to be valid: the modules check theirs
    when they are set, not on every call (the checks are a tenth of the call's host time)."""
    alpha_logit = check_tensor_pair(x, alpha_logit)  # applies the autocast rule
    check_logit_bias(x, logit_bias)
    apply_noise = training or noise_in_eval
    if apply_noise and seed_bits is None:
        offset_bits = fold_rank(offset_bits)
    device = x.device
    chosen = resolve(backend, device)
    if not apply_noise and exporting():
        # z = x and a KL of plain torch ops: the exported graph (torch.export, ONNX) needs no
        # custom op where none is needed; eager calls keep the one fused call
        chosen = "reference"
    if chosen == "reference":
        eps = None  # the reference reads eps only where it applies noise
        if apply_noise:
            if seed_bits is None:  # the pure-PyTorch stream takes a Python int: this syncs
                seed_bits = int(_draw_seed(generator, device).item())
            eps = reference.noise(x.shape, _as_uint64(seed_bits), _as_uint64(offset_bits),
                                  device=device)
        return reference.information_dropout(
            x, alpha_logit, eps, prior=prior, max_alpha=max_alpha, alpha_min=alpha_min, mu=mu,
            sigma=sigma, mask_inactive=mask_inactive, unit_mean=unit_mean, training=training,
            noise_in_eval=noise_in_eval, logit_bias=logit_bias)
    compute = kl_dtype(x.dtype)
    if prior == "log_normal":
        mu, sigma = _scalar_tensor(mu, compute, device), _scalar_tensor(sigma, compute, device)
    else:  # the log-uniform KL reads neither
        mu, sigma = _constant(0.0, compute, device), _constant(1.0, compute, device)
    args = (x, alpha_logit, _seed_tensor(seed_bits, generator, device, apply_noise), offset_bits,
            mu, sigma, prior, float(max_alpha), float(alpha_min), mask_inactive, unit_mean,
            apply_noise)
    if chosen == "triton":
        from .triton import ops as triton_ops  # imports triton only where it is used

        if logit_bias is not None:  # added before the kernels, as csrc/glue/op_glue.h does
            bias = reference.per_channel(logit_bias.to(compute), x)
            args = (x, (alpha_logit + bias).to(x.dtype)) + args[2:]
        return triton_ops.fused(*args, direct=_direct_call_allowed(x, alpha_logit))
    if logit_bias is not None:
        args += (logit_bias,)
    op = (_ops.direct_information_dropout if _direct_call_allowed(x, alpha_logit, logit_bias)
          else torch.ops.infodrop.information_dropout.default)
    try:
        return op(*args)
    except RuntimeError as error:
        if "functorch transforms" in str(error):  # PyTorch's message does not name the op
            raise RuntimeError("infodrop.information_dropout does not support torch.func "
                               "transforms (vmap, grad, jvp); use backend='reference' for them"
                               ) from error
        raise


def _direct_call_allowed(x, alpha_logit, logit_bias=None):
    """Whether the op may be called through its typed binding (csrc/bindings.cpp: the same
    dispatcher entry, ~2.5 us cheaper than torch.ops' generic argument conversion): in eager
    mode on plain tensors (a Parameter as logit_bias too).  torch.compile must see torch.ops to
    trace the op, and a tensor subclass or a __torch_function__ mode must see the call as an op
    (dispatch modes see both)."""
    return (type(x) is torch.Tensor and type(alpha_logit) is torch.Tensor
            and (logit_bias is None or not torch.overrides.has_torch_function((logit_bias,)))
            and not torch.compiler.is_compiling()
            and not torch._C._is_torch_function_mode_enabled())


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
    chosen = resolve(backend, device, tensors_on_device=False)
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

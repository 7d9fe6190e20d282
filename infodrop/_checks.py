"""Argument checks of the public API: each bad argument gets an error that names it."""

import math
import numbers

import torch

from ._spec import PRIORS

_U64 = 1 << 64


def check_tensor_pair(x, alpha_logit):
    for name, t in (("x", x), ("alpha_logit", alpha_logit)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if not x.dtype.is_floating_point:
        raise TypeError(f"x must be a floating-point tensor, got {x.dtype}")
    if alpha_logit.dtype != x.dtype:
        raise TypeError(f"alpha_logit must have the dtype of x ({x.dtype}), got {alpha_logit.dtype}")
    if alpha_logit.shape != x.shape:
        raise ValueError(f"alpha_logit must have the shape of x {tuple(x.shape)}, "
                         f"got {tuple(alpha_logit.shape)}")
    if alpha_logit.device != x.device:
        raise ValueError(f"alpha_logit must be on the device of x ({x.device}), "
                         f"got {alpha_logit.device}")
    if x.dim() == 0:
        raise ValueError("x must have a batch dimension (shape (B, ...)), got a 0-dim tensor")


def _real(value, name):
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    return value


def check_options(prior, max_alpha, alpha_min, mu, sigma):
    if prior not in PRIORS:
        raise ValueError(f"prior must be one of {PRIORS}, got {prior!r}")
    if _real(max_alpha, "max_alpha") <= 0:
        raise ValueError(f"max_alpha must be > 0, got {max_alpha}")
    if _real(alpha_min, "alpha_min") < 0:
        raise ValueError(f"alpha_min must be >= 0, got {alpha_min}")
    for name, value in (("mu", mu), ("sigma", sigma)):
        if isinstance(value, torch.Tensor):
            if value.numel() != 1 or not value.dtype.is_floating_point:
                raise ValueError(f"{name} must be a number or a one-element floating-point "
                                 f"tensor, got shape {tuple(value.shape)} and {value.dtype}")
        else:
            _real(value, name)
    # A tensor sigma is checked only where that costs no device synchronisation or graph break.
    if isinstance(sigma, torch.Tensor):
        if sigma.device.type == "cpu" and not torch.compiler.is_compiling() and sigma.item() <= 0:
            raise ValueError(f"sigma must be > 0, got {sigma.item()}")
    elif sigma <= 0:
        raise ValueError(f"sigma must be > 0, got {sigma}")


def check_u64(value, name):
    """A 64-bit unsigned integer argument (seed, offset, start), returned as int64 bits."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    value = int(value)
    if not 0 <= value < _U64:
        raise ValueError(f"{name} must be in [0, 2**64), got {value}")
    return value - _U64 if value >= 1 << 63 else value

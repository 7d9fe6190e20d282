"""Argument checks of the public API: each bad argument gets an error that names it.

They run on every call, so valid arguments take the cheapest path (a type test and a
comparison); the compiled op repeats the structural checks in C++ (csrc/glue/op_glue.h).
Comparisons, not math.isfinite, so that torch.compile(dynamic=True) can trace them on
symbolic floats.
"""

import math
import numbers

import torch

from ._spec import PRIORS

_U64 = 1 << 64
_CAP_LIMIT = 2.0**126


def check_tensor_pair(x, alpha_logit):
    """Checks x and alpha_logit and returns the alpha_logit to use: cast to x's dtype where the
    autocast rule makes a dtype mismatch valid (docs/spec.md section 4; the raw op's kernel of
    the rule: csrc/autocast.cpp).  Applied here, in the mismatch's branch, it costs valid calls
    nothing."""
    if type(x) is not torch.Tensor or type(alpha_logit) is not torch.Tensor:
        for name, t in (("x", x), ("alpha_logit", alpha_logit)):
            if not isinstance(t, torch.Tensor):
                raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if not x.dtype.is_floating_point:
        raise TypeError(f"x must be a floating-point tensor, got {x.dtype}")
    if alpha_logit.dtype != x.dtype:
        # under torch.autocast a floating alpha_logit takes x's dtype: like dropout, the layer
        # never changes the dtype of the activation stream
        if not (alpha_logit.dtype.is_floating_point and torch.is_autocast_enabled(x.device.type)):
            raise TypeError(f"alpha_logit must have the dtype of x ({x.dtype}), got {alpha_logit.dtype}")
        alpha_logit = alpha_logit.to(x.dtype)
    if alpha_logit.shape != x.shape:
        raise ValueError(f"alpha_logit must have the shape of x {tuple(x.shape)}, "
                         f"got {tuple(alpha_logit.shape)}")
    if alpha_logit.device != x.device:
        raise ValueError(f"alpha_logit must be on the device of x ({x.device}), "
                         f"got {alpha_logit.device}")
    if x.dim() == 0:
        raise ValueError("x must have a batch dimension (shape (B, ...)), got a 0-dim tensor")
    return alpha_logit


def check_logit_bias(x, logit_bias):
    """logit_bias: None, or one floating-point value per channel of x (dim 1) on x's device
    (docs/spec.md section 4)."""
    if logit_bias is None:
        return
    if not isinstance(logit_bias, torch.Tensor):
        raise TypeError(f"logit_bias must be None or a torch.Tensor, got {type(logit_bias).__name__}")
    if not logit_bias.dtype.is_floating_point:
        raise TypeError(f"logit_bias must be a floating-point tensor, got {logit_bias.dtype}")
    if x.dim() < 2:
        raise ValueError(f"logit_bias needs an x with channels (dim 1), got x of shape {tuple(x.shape)}")
    if logit_bias.shape != (x.shape[1],):
        raise ValueError(f"logit_bias must have shape ({x.shape[1]},), one value per channel of x, "
                         f"got {tuple(logit_bias.shape)}")
    if logit_bias.device != x.device:
        raise ValueError(f"logit_bias must be on the device of x ({x.device}), got {logit_bias.device}")


def _real(value, name):
    if type(value) is not float and (isinstance(value, bool) or not isinstance(value, numbers.Real)):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    if not -math.inf < value < math.inf:  # also false for NaN
        raise ValueError(f"{name} must be finite, got {value}")
    return value


def _check_bool(value, name):
    if type(value) is not bool:
        raise TypeError(f"{name} must be a bool, got {type(value).__name__} {value!r}")


def _check_prior_scalar(value, name, check_values):
    """mu or sigma: a number, or a one-element floating-point tensor (a learned parameter).

    A tensor's value is checked where that costs no device synchronisation and no graph break:
    on the CPU, outside torch.compile.  On a GPU a NaN or inf propagates into z and the KL
    (never a wrong finite number), and a non-positive sigma gives NaN (docs/spec.md
    section 4)."""
    if not isinstance(value, torch.Tensor):
        value = _real(value, name)
        if name == "sigma" and not value > 0:
            raise ValueError(f"sigma must be > 0, got {value}")
        return
    if value.numel() != 1 or not value.dtype.is_floating_point:
        raise ValueError(f"{name} must be a number or a one-element floating-point "
                         f"tensor, got shape {tuple(value.shape)} and {value.dtype}")
    if check_values and value.device.type == "cpu" and not torch.compiler.is_compiling():
        number = value.item()
        if not -math.inf < number < math.inf:
            raise ValueError(f"{name} must be finite, got {number}")
        if name == "sigma" and not number > 0:
            raise ValueError(f"sigma must be > 0, got {number}")


def check_options(prior, max_alpha, alpha_min, mu, sigma, mask_inactive=False, unit_mean=False,
                  training=True, noise_in_eval=False):
    # The common case in one expression (a fraction of a microsecond); anything else, valid
    # or not, takes the full checks below, which name what is wrong.
    if (prior == "log_uniform" and type(max_alpha) is float and type(alpha_min) is float
            and 0.0 < max_alpha < _CAP_LIMIT and 0.0 <= alpha_min < _CAP_LIMIT - max_alpha
            and type(mu) is float and type(sigma) is float and type(mask_inactive) is bool
            and type(unit_mean) is bool and type(training) is bool
            and type(noise_in_eval) is bool and -math.inf < mu < math.inf
            and 0.0 < sigma < math.inf):
        return
    if prior not in PRIORS:
        raise ValueError(f"prior must be one of {PRIORS}, got {prior!r}")
    if not _real(max_alpha, "max_alpha") > 0:
        raise ValueError(f"max_alpha must be > 0, got {max_alpha}")
    if not _real(alpha_min, "alpha_min") >= 0:
        raise ValueError(f"alpha_min must be >= 0, got {alpha_min}")
    if not alpha_min + max_alpha < _CAP_LIMIT:  # as the compiled op (csrc/glue/op_glue.h)
        raise ValueError("alpha_min + max_alpha must be below 2**126 (8.5e37), so that the cap "
                         f"and its reciprocal are normal float32 numbers, got {alpha_min + max_alpha}")
    # mu and sigma enter only the log-normal KL: their values matter there alone
    log_normal = prior == "log_normal"
    _check_prior_scalar(mu, "mu", log_normal)
    _check_prior_scalar(sigma, "sigma", log_normal)
    for name, flag in (("mask_inactive", mask_inactive), ("unit_mean", unit_mean),
                       ("training", training), ("noise_in_eval", noise_in_eval)):
        _check_bool(flag, name)


def check_u64(value, name):
    """A 64-bit unsigned integer argument (seed, offset, start), returned as int64 bits."""
    if type(value) is not int and (isinstance(value, bool) or not isinstance(value, numbers.Integral)):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    value = int(value)
    if not 0 <= value < _U64:
        raise ValueError(f"{name} must be in [0, 2**64), got {value}")
    return value - _U64 if value >= 1 << 63 else value

"""Inputs and tolerances shared by the tests."""

import pytest
import torch

import infodrop

DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16]
# (rtol, atol) of the fused kernels against the reference, per dtype: float32 is limited by the
# 2^-20 approximations (SPEC section 5); the half types by one rounding of z to 8 or 11 bits.
TOLERANCE = {
    torch.float32: (2e-5, 2e-5),
    torch.float64: (1e-5, 1e-5),  # eps is float32 math for every dtype
    torch.float16: (2e-3, 2e-3),
    torch.bfloat16: (1.6e-2, 1.6e-2),
}

requires_compiled = pytest.mark.skipif(not infodrop.backends()["cpu"],
                                       reason="the compiled CPU extension is not built")


def make_inputs(shape, dtype=torch.float32, *, seed=0, prior="log_uniform", zeros=0.0):
    """x >= 0 as after a ReLU (log_uniform) or x > 0 after a Softplus (log_normal), with a
    fraction of exact zeros, and logits spanning the sigmoid's range."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(shape, generator=g, dtype=torch.float64) * 3
    if prior == "log_normal":
        x = torch.nn.functional.softplus(torch.randn(shape, generator=g, dtype=torch.float64) * 2)
    if zeros:
        x = torch.where(torch.rand(shape, generator=g, dtype=torch.float64) < zeros, 0.0, x)
    logit = torch.randn(shape, generator=g, dtype=torch.float64) * 3
    return x.to(dtype), logit.to(dtype)


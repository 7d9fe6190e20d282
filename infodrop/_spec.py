"""The constants and small rules of docs/spec.md, written once for the Python side.

The reference, the Triton kernels, the argument checks and the modules import them from here
(the C++/CUDA side has its own copy in csrc/infodrop/, checked against the same known answers).
"""

import torch

# Philox4x32-10 (spec section 3): round multipliers and key increments.
PHILOX_M0, PHILOX_M1 = 0xD2511F53, 0xCD9E8D57
PHILOX_W0, PHILOX_W1 = 0x9E3779B9, 0xBB67AE85

X_FLOOR = 1e-4  # floor of x inside log x (the authors' code): Softplus can underflow to 0
PRIORS = ("log_uniform", "log_normal")
# The prior that fits each activation's output (spec section 1): the log-uniform prior is
# scale-invariant and allows exact zeros (ReLU); the log-normal one needs x > 0 (Softplus).
PRIOR_OF_ACTIVATION = {"relu": "log_uniform", "softplus": "log_normal"}


def kl_dtype(dtype: torch.dtype) -> torch.dtype:
    """Per-sample KL sums are float32, float64 for float64 inputs (spec section 1)."""
    return torch.float64 if dtype == torch.float64 else torch.float32

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
# What each activation the blocks know by name outputs, and which priors fit it (spec section 1):
# the log-uniform KL does not read x (its prior is scale-invariant, exact zeros allowed, and the
# multiplicative noise keeps x's sign), so it fits any output; the log-normal KL reads log x and
# fits only outputs > 0 (Softplus, sigmoid: an underflow to 0 meets the x floor below).
ACTIVATION_OUTPUT = {
    "relu": "non-negative", "relu6": "non-negative", "hardsigmoid": "non-negative",
    "softplus": "positive", "sigmoid": "positive",
    "gelu": "signed", "silu": "signed", "mish": "signed", "hardswish": "signed", "elu": "signed",
    "selu": "signed", "celu": "signed", "leaky_relu": "signed", "tanh": "signed",
    "identity": "signed",
}
PRIORS_THAT_FIT = {"non-negative": ("log_uniform",), "positive": ("log_normal", "log_uniform"),
                   "signed": ("log_uniform",)}
# The default prior of each activation: the first that fits (ReLU -> log-uniform, Softplus ->
# log-normal, as in the paper).
PRIOR_OF_ACTIVATION = {name: PRIORS_THAT_FIT[output][0] for name, output in ACTIVATION_OUTPUT.items()}

# The module's log-normal prior follows the data (docs/spec.md section 1): its sigma never goes
# below this floor (= the default alpha_min), which a batch of constant x with alpha_min = 0 would
# otherwise reach, making the KL's 1 / sigma^2 infinite.
PRIOR_SIGMA_FLOOR = 1e-3


def kl_dtype(dtype: torch.dtype) -> torch.dtype:
    """Per-sample KL sums are float32, float64 for float64 inputs (spec section 1)."""
    return torch.float64 if dtype == torch.float64 else torch.float32

"""docs/spec.md section 5: the fast float32 approximations stay within 2^-20 of float64, on dense sweeps.

The noise's log, sqrt and sin/cos are swept in test_noise.py; here the sigmoid, the log of the
KL and the exp of the noise, through the op (one element per sample, so kl is per unit)."""

import torch

import infodrop

from ._helpers import requires_compiled

pytestmark = requires_compiled

BOUND = 2.0**-20
N = 1 << 18


def test_sigmoid_and_log_of_the_log_uniform_kl():
    logit = torch.linspace(-30, 30, N).reshape(N, 1)
    x = torch.ones(N, 1)
    _, kl = infodrop.information_dropout(x, logit, training=False, backend="cpu")
    alpha = 1e-3 + 0.7 * torch.sigmoid(logit.double().flatten())
    exact = -torch.log(alpha / 0.701)
    # kl -> 0 at the cap, where float32 alpha itself carries 2^-24 relative error
    assert ((kl.double() - exact).abs() / (exact.abs() + 1)).max() < BOUND


def test_log_of_x_in_the_log_normal_kl():
    x = torch.logspace(-4, 6, N).reshape(N, 1)
    logit = torch.zeros(N, 1)
    _, kl = infodrop.information_dropout(x, logit, prior="log_normal", training=False, backend="cpu")
    alpha = torch.tensor(1e-3 + 0.7 * 0.5, dtype=torch.float64)
    log_x = torch.log(x.double().flatten())
    exact = (log_x**2 + alpha**2) / 2 - torch.log(alpha) - 0.5
    assert ((kl.double() - exact).abs() / (exact.abs() + 1)).max() < 4 * BOUND


def test_exp_of_the_noise():
    logit = torch.linspace(-8, 8, N).reshape(N, 1)
    x = torch.ones(N, 1)
    z, _ = infodrop.information_dropout(x, logit, seed=3, backend="cpu")
    eps = infodrop.noise((N, 1), 3, dtype=torch.float64)
    alpha = 1e-3 + 0.7 * torch.sigmoid(logit.double())
    exact = torch.exp(alpha * eps)
    # float32 alpha * eps adds |alpha eps| 2^-24 to the exponent: a few 2^-24 at |eps| <= 6
    assert ((z.double() - exact).abs() / exact).max() < 2 * BOUND

"""The pure-PyTorch reference against the closed forms of docs/spec.md section 1."""

import math

import pytest
import torch

from infodrop import reference
from infodrop.testing import make_inputs


def test_alpha_is_capped_sigmoid():
    logit = torch.linspace(-40, 40, 101, dtype=torch.float64)
    alpha = reference.alpha_from_logit(logit, max_alpha=0.7, alpha_min=1e-3)
    expected = 1e-3 + 0.7 / (1 + torch.exp(-logit))
    torch.testing.assert_close(alpha, expected)
    assert alpha.min() > 1e-3 - 1e-12 and alpha.max() <= 0.701


def test_log_uniform_kl_closed_form_and_mask():
    x, logit = make_inputs((4, 30), torch.float64, zeros=0.3)
    eps = torch.randn_like(x)
    for mask in (False, True):
        _, kl = reference.information_dropout(x, logit, eps, mask_inactive=mask)
        alpha = 1e-3 + 0.7 * torch.sigmoid(logit)
        per_unit = -torch.log(alpha / 0.701)
        if mask:
            per_unit = per_unit * (x != 0)
        torch.testing.assert_close(kl, per_unit.sum(dim=1))
        assert (kl >= 0).all()


def test_log_uniform_kl_is_zero_at_the_cap():
    x = torch.ones(2, 5, dtype=torch.float64)
    logit = torch.full_like(x, 60.0)  # sigmoid == 1: alpha == alpha_min + max_alpha
    _, kl = reference.information_dropout(x, logit, torch.zeros_like(x))
    assert kl.abs().max() < 1e-12


@pytest.mark.parametrize("mu, sigma", [(0.0, 1.0), (0.3, 0.5)])
def test_log_normal_kl_is_the_gaussian_kl(mu, sigma):
    """KL(N(log x, alpha^2) || N(mu, sigma^2)) from its textbook form."""
    x, logit = make_inputs((3, 40), torch.float64, prior="log_normal")
    _, kl = reference.information_dropout(x, logit, torch.zeros_like(x), prior="log_normal",
                                          mu=mu, sigma=sigma)
    alpha = 1e-3 + 0.7 * torch.sigmoid(logit)
    m1, s1 = torch.log(x.clamp_min(1e-4)), alpha
    gaussian_kl = torch.log(sigma / s1) + (s1**2 + (m1 - mu) ** 2) / (2 * sigma**2) - 0.5
    torch.testing.assert_close(kl, gaussian_kl.sum(dim=1))


def test_log_normal_floor_gives_zero_x_gradient():
    x = torch.tensor([[0.0, 1e-5, 2e-4, 1.0]], dtype=torch.float64, requires_grad=True)
    logit = torch.zeros_like(x)
    _, kl = reference.information_dropout(x, logit, torch.zeros_like(x), prior="log_normal")
    kl.sum().backward()
    assert x.grad[0, 0] == 0 and x.grad[0, 1] == 0
    assert x.grad[0, 2] != 0 and x.grad[0, 3] == 0  # log 1 - mu == 0


def test_noise_and_unit_mean():
    x, logit = make_inputs((2, 50), torch.float64)
    eps = torch.randn_like(x)
    alpha = 1e-3 + 0.7 * torch.sigmoid(logit)
    z, _ = reference.information_dropout(x, logit, eps)
    torch.testing.assert_close(z, x * torch.exp(alpha * eps))
    z, _ = reference.information_dropout(x, logit, eps, unit_mean=True)
    torch.testing.assert_close(z, x * torch.exp(alpha * eps - alpha**2 / 2))


def test_unit_mean_noise_has_mean_one():
    n = 400_000
    x = torch.ones(1, n, dtype=torch.float64)
    logit = torch.zeros_like(x)  # alpha = 0.351
    eps = torch.randn(1, n, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    z, _ = reference.information_dropout(x, logit, eps, unit_mean=True)
    assert abs(z.mean().item() - 1) < 4 * z.std().item() / math.sqrt(n)
    z, _ = reference.information_dropout(x, logit, eps)
    assert z.mean().item() == pytest.approx(math.exp(0.351**2 / 2), rel=3e-3)


def test_eval_mode_is_deterministic_and_keeps_kl():
    x, logit = make_inputs((3, 20), torch.float64)
    eps = torch.randn_like(x)
    z_train, kl_train = reference.information_dropout(x, logit, eps)
    z_eval, kl_eval = reference.information_dropout(x, logit, eps, training=False)
    assert torch.equal(z_eval, x)
    torch.testing.assert_close(kl_eval, kl_train)
    z_noisy, _ = reference.information_dropout(x, logit, eps, training=False, noise_in_eval=True)
    torch.testing.assert_close(z_noisy, z_train)


def test_kl_sums_every_non_batch_element():
    x, logit = make_inputs((2, 3, 4, 5), torch.float64)
    _, kl = reference.information_dropout(x, logit, torch.zeros_like(x))
    _, kl_flat = reference.information_dropout(x.reshape(2, -1), logit.reshape(2, -1),
                                               torch.zeros(2, 60, dtype=torch.float64))
    torch.testing.assert_close(kl, kl_flat)
    assert kl.shape == (2,)

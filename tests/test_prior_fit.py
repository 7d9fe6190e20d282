"""Fig. 1's comparison of p(z) with the priors: samples drawn from each prior are recognised."""

import pytest
import torch

from infodrop.paper import analysis
from infodrop.paper.models import build_model


def test_log_normal_samples_fit_the_log_normal_not_the_log_uniform():
    g = torch.Generator().manual_seed(0)
    z = torch.exp(0.5 + 2.0 * torch.randn(20_000, generator=g, dtype=torch.float64))
    fit = analysis.prior_fit(z, prior_mu=0.5, prior_sigma=2.0)
    assert fit["ks_log_normal_fit"] < 0.02 and fit["ks_log_normal_prior"] < 0.02
    assert fit["ks_log_uniform"] > 0.1
    assert fit["log_z_mean"] == pytest.approx(0.5, abs=0.05)
    assert fit["log_z_std"] == pytest.approx(2.0, abs=0.05)
    # a wrong prior is told apart
    assert analysis.prior_fit(z, prior_mu=3.0, prior_sigma=1.0)["ks_log_normal_prior"] > 0.3


def test_log_uniform_samples_with_zeros_fit_the_relu_prior():
    g = torch.Generator().manual_seed(1)
    z = torch.exp(torch.empty(30_000, dtype=torch.float64).uniform_(-4, 2, generator=g))
    z[:10_000] = 0  # q0 = 1/3
    fit = analysis.prior_fit(z)
    assert fit["zero_fraction"] == pytest.approx(1 / 3)
    assert fit["ks_log_uniform"] < 0.02 and fit["ks_log_normal_fit"] > 0.04
    assert "ks_log_normal_prior" not in fit


def test_prior_fit_needs_positive_values():
    with pytest.raises(ValueError, match="at least 2 positive"):
        analysis.prior_fit(torch.zeros(10))


def test_post_noise_activations_are_noisy_and_shaped_like_the_layer():
    torch.manual_seed(0)
    model = build_model("allcnn32", image_shape=(1, 32, 32), width=0.05).eval()
    images = torch.rand(2, 1, 32, 32)
    first = analysis.post_noise_activations(model, "features.5.dropout", images)
    second = analysis.post_noise_activations(model, "features.5.dropout", images)
    channels = model.features[5].main.out_channels
    assert first.shape == (2 * channels * 8 * 8,) and not torch.equal(first, second)
    assert not model.training  # the model is left as it was

"""Diagnostics: the TC estimator against Gaussians of known TC, KL maps that add up to the
layers' KL, information per layer, and the nuisance classifier."""

import math

import pytest
import torch
from torch import nn

from infodrop.modules import InfoDropConv2d
from infodrop.paper import analysis
from infodrop.paper.data import ImageSet
from infodrop.paper.models import build_model, information_dropout_layers


def gaussian_samples(cov, n, seed=0):
    g = torch.Generator().manual_seed(seed)
    chol = torch.linalg.cholesky(torch.as_tensor(cov, dtype=torch.float64))
    return torch.randn(n, chol.shape[0], generator=g, dtype=torch.float64) @ chol.T


@pytest.mark.parametrize("rho", [0.0, 0.5, 0.9])
def test_total_correlation_of_a_correlated_pair(rho):
    cov = [[4.0, 2.0 * rho], [2.0 * rho, 1.0]]  # unequal variances: TC ignores the scale
    expected = -0.5 * math.log(1 - rho ** 2)
    assert analysis.total_correlation(gaussian_samples(cov, 200_000)) == pytest.approx(
        expected, abs=0.01)


def test_total_correlation_of_a_random_covariance():
    g = torch.Generator().manual_seed(1)
    a = torch.randn(6, 6, generator=g, dtype=torch.float64)
    cov = a @ a.T + 0.5 * torch.eye(6, dtype=torch.float64)
    expected = -0.5 * (torch.logdet(cov) - cov.diagonal().log().sum()).item()
    estimate = analysis.total_correlation(gaussian_samples(cov, 400_000))
    assert estimate == pytest.approx(expected, rel=0.02)


def test_total_correlation_rejects_too_few_samples():
    with pytest.raises(ValueError, match="N > D"):
        analysis.total_correlation(torch.randn(5, 8))


def small_all_cnn(activation):
    torch.manual_seed(0)
    return build_model("allcnn32", image_shape=(1, 32, 32), width=0.05, activation=activation)


@pytest.mark.parametrize("activation", ["relu", "softplus"])
def test_kl_maps_sum_to_each_layers_kl(activation):
    model = small_all_cnn(activation).eval()
    images = torch.rand(3, 1, 32, 32)
    maps = analysis.kl_maps(model, images)
    assert [m.shape for m in maps.values()] == [(3, 16, 16), (3, 8, 8)]
    model(images)
    for name, layer in information_dropout_layers(model):
        torch.testing.assert_close(maps[name].sum(dim=(1, 2)), layer.kl, rtol=1e-4, atol=1e-3)


def test_kl_maps_png_is_written(tmp_path):
    model = small_all_cnn("softplus")
    images = torch.rand(2, 1, 32, 32)
    path = analysis.save_kl_maps(images, analysis.kl_maps(model, images), tmp_path / "m.png")
    assert path.read_bytes()[:4] == b"\x89PNG"


def test_information_per_layer_divides_the_kl_by_the_units():
    model = small_all_cnn("relu")
    info = analysis.information_per_layer(model, torch.rand(4, 1, 32, 32))
    first = info["features.2.dropout"]
    channels = model.features[2].main.out_channels
    assert first["per_channel"] == pytest.approx(first["total"] / channels)
    assert first["per_unit"] == pytest.approx(first["total"] / (channels * 16 * 16))


def test_layer_total_correlation_is_finite_and_non_negative():
    model = small_all_cnn("softplus")
    tc = analysis.layer_total_correlation(model, "features.5.dropout", torch.rand(8, 1, 32, 32))
    assert math.isfinite(tc) and tc >= 0


def nuisance_sets(informative):
    """Images whose left half brightness encodes the nuisance class, or does not."""
    g = torch.Generator().manual_seed(0)
    n = 300
    nuisance = torch.randint(0, 3, (n,), generator=g)
    images = torch.rand(n, 1, 8, 8, generator=g) * 0.1
    source = nuisance if informative else torch.randint(0, 3, (n,), generator=g)
    images[:, :, :, :4] += source.view(n, 1, 1, 1) / 3
    whole = ImageSet(images, torch.zeros(n, dtype=torch.int64), nuisance)
    return whole.subset(range(200)), whole.subset(range(200, n))


def test_nuisance_accuracy_finds_a_nuisance_only_when_it_is_there():
    torch.manual_seed(0)
    model = nn.Sequential(InfoDropConv2d(1, 4, 3, padding=1))
    seen = analysis.nuisance_accuracy(model, "0", *nuisance_sets(True), noisy=False)
    hidden = analysis.nuisance_accuracy(model, "0", *nuisance_sets(False), noisy=False)
    assert seen > 90 and hidden < 60


def test_nuisance_accuracy_needs_nuisance_labels():
    sets = nuisance_sets(True)
    plain = ImageSet(sets[0].images, sets[0].labels)
    with pytest.raises(ValueError, match="no nuisance labels"):
        analysis.nuisance_accuracy(nn.Sequential(nn.Identity()), "0", plain, sets[1])

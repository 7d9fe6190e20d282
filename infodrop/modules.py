"""nn.Modules: the Information Dropout layer and the conv/linear blocks of the paper's Table 2."""

import torch
from torch import nn

from . import functional
from ._backends import check_backend_name
from ._checks import check_options
from ._spec import PRIOR_OF_ACTIVATION

_ACTIVATIONS = {"relu": nn.ReLU, "softplus": nn.Softplus}


class InformationDropout(nn.Module):
    """Multiplies x by log-normal noise exp(alpha * eps) whose scale comes from alpha_logit.

    ``forward(x, alpha_logit) -> z``; the per-sample KL of that call is kept in ``self.kl``
    (shape (B,)) for the loss, see :func:`kl_divergence`.  Like ``nn.Dropout``, noise is
    applied in training mode only (unless ``noise_in_eval``); the KL is computed in both.
    With the log_normal prior, mu and sigma are learnable parameters as in the authors' code
    (``learn_prior=False`` keeps them fixed, as buffers).
    """

    def __init__(self, prior="log_uniform", max_alpha=0.7, alpha_min=1e-3, mu=0.0, sigma=1.0,
                 learn_prior=True, mask_inactive=False, unit_mean=False, noise_in_eval=False,
                 backend="auto"):
        super().__init__()
        check_options(prior, max_alpha, alpha_min, mu, sigma)
        check_backend_name(backend)
        self.prior = prior
        self.max_alpha = float(max_alpha)
        self.alpha_min = float(alpha_min)
        self.mask_inactive = bool(mask_inactive)
        self.unit_mean = bool(unit_mean)
        self.noise_in_eval = bool(noise_in_eval)
        self.backend = backend
        if prior == "log_normal":
            mu_t, sigma_t = torch.tensor(float(mu)), torch.tensor(float(sigma))
            if learn_prior:
                self.mu, self.sigma = nn.Parameter(mu_t), nn.Parameter(sigma_t)
            else:
                self.register_buffer("mu", mu_t)
                self.register_buffer("sigma", sigma_t)
        else:
            self.mu, self.sigma = 0.0, 1.0  # unused by the log-uniform KL
        self.kl = None

    def forward(self, x, alpha_logit):
        z, self.kl = functional.information_dropout(
            x, alpha_logit, prior=self.prior, max_alpha=self.max_alpha, alpha_min=self.alpha_min,
            mu=self.mu, sigma=self.sigma, mask_inactive=self.mask_inactive,
            unit_mean=self.unit_mean, training=self.training, noise_in_eval=self.noise_in_eval,
            backend=self.backend)
        return z

    def extra_repr(self):
        parts = [f"prior={self.prior!r}", f"max_alpha={self.max_alpha}", f"alpha_min={self.alpha_min}"]
        for flag in ("mask_inactive", "unit_mean", "noise_in_eval"):
            if getattr(self, flag):
                parts.append(f"{flag}=True")
        if self.backend != "auto":
            parts.append(f"backend={self.backend!r}")
        return ", ".join(parts)


class _InfoDropBlock(nn.Module):
    """f = act(BN(main(x))), alpha_logit = alpha_branch(x), z = InformationDropout(f, alpha_logit)."""

    def __init__(self, main, alpha_branch, norm, activation, prior, dropout_kwargs):
        super().__init__()
        if activation not in _ACTIVATIONS:
            raise ValueError(f"activation must be one of {tuple(_ACTIVATIONS)}, got {activation!r}")
        self.main = main
        self.norm = norm
        self.activation = _ACTIVATIONS[activation]()
        self.alpha_branch = alpha_branch  # its own weights and bias, no batch norm (authors' code)
        self.dropout = InformationDropout(prior=prior or PRIOR_OF_ACTIVATION[activation],
                                          **dropout_kwargs)

    def forward(self, x):
        f = self.activation(self.norm(self.main(x)))
        return self.dropout(f, self.alpha_branch(x))

    @property
    def kl(self):
        """Per-sample KL of the last forward, shape (B,)."""
        return self.dropout.kl


class InfoDropConv2d(_InfoDropBlock):
    """A conv + batch norm + activation whose output goes through Information Dropout, with
    alpha from a parallel conv of the same kernel, stride and padding on the same input (the
    layer that replaces "stride-2 conv + dropout" in the paper's All-CNN networks)."""

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, *,
                 activation="relu", batch_norm=True, prior=None, **dropout_kwargs):
        conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding, bias=not batch_norm)
        alpha = nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding, bias=True)
        norm = nn.BatchNorm2d(out_channels) if batch_norm else nn.Identity()
        super().__init__(conv, alpha, norm, activation, prior, dropout_kwargs)


class InfoDropLinear(_InfoDropBlock):
    """A linear layer (+ optional batch norm) + activation followed by Information Dropout,
    with alpha from a parallel linear layer on the same input."""

    def __init__(self, in_features, out_features, *, activation="relu", batch_norm=False,
                 prior=None, **dropout_kwargs):
        linear = nn.Linear(in_features, out_features, bias=not batch_norm)
        alpha = nn.Linear(in_features, out_features, bias=True)
        norm = nn.BatchNorm1d(out_features) if batch_norm else nn.Identity()
        super().__init__(linear, alpha, norm, activation, prior, dropout_kwargs)


def kl_divergence(model: nn.Module) -> torch.Tensor:
    """Per-sample KL, shape (B,), summed over every Information Dropout layer of ``model`` in
    its last forward pass."""
    kls = [m.kl for m in model.modules() if isinstance(m, InformationDropout) and m.kl is not None]
    if not kls:
        raise RuntimeError("kl_divergence: the model has no InformationDropout layer that has "
                           "run a forward pass")
    return torch.stack(kls).sum(dim=0)

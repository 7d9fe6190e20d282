"""The "dropout" slot of the paper's networks: Information Dropout or one of its baselines.

Every network here is built from two kinds of layer: a plain layer (conv/linear + optional
batch norm + activation) and a *slot* layer, the plain layer followed by one of
``DROPOUT_KINDS``.  With "info" the slot is a single InfoDropConv2d/InfoDropLinear, whose
alpha branch sees the same input as the main branch (the authors' code).
"""

import torch
from torch import nn

from ...modules import InfoDropConv2d, InfoDropLinear, InformationDropout

DROPOUT_KINDS = ("info", "binary", "lognormal", "none")
ACTIVATIONS = {"relu": nn.ReLU, "softplus": nn.Softplus}


class ConstantLogNormalDropout(nn.Module):
    """z = x * exp(alpha * eps) with one fixed alpha for every unit and sample: the
    "log-normal noise with constant variance" baseline of Fig. 3.  The noise law is the one of
    Information Dropout (no mean correction), so the baseline differs only in alpha not being
    learned per unit; with a fixed alpha the KL does not depend on the weights, so none is kept."""

    def __init__(self, alpha=0.7):
        super().__init__()
        if not alpha > 0:
            raise ValueError(f"alpha must be > 0, got {alpha}")
        self.alpha = float(alpha)

    def forward(self, x):
        if not self.training:
            return x
        return x * torch.exp(self.alpha * torch.randn_like(x))

    def extra_repr(self):
        return f"alpha={self.alpha}"


def check_choice(value, choices, name):
    if value not in choices:
        raise ValueError(f"{name} must be one of {tuple(choices)}, got {value!r}")


def _baseline_noise(dropout, binary_p, max_alpha):
    if dropout == "binary":
        return nn.Dropout(binary_p)
    if dropout == "lognormal":
        return ConstantLogNormalDropout(max_alpha)  # alpha at the cap: same variance as info
    return nn.Identity()


def conv_layer(in_ch, out_ch, kernel_size, stride=1, *, activation, dropout="none",
               binary_p=0.5, max_alpha=0.7):
    """3x3 (or 1x1) conv, "same" padding, batch norm before the activation (Table 2), then the
    dropout slot when ``dropout`` is not "none"."""
    check_choice(dropout, DROPOUT_KINDS, "dropout")
    check_choice(activation, ACTIVATIONS, "activation")
    padding = kernel_size // 2
    if dropout == "info":
        return InfoDropConv2d(in_ch, out_ch, kernel_size, stride, padding, activation=activation,
                              batch_norm=True, max_alpha=max_alpha)
    return nn.Sequential(
        nn.Conv2d(in_ch, out_ch, kernel_size, stride, padding, bias=False),
        nn.BatchNorm2d(out_ch), ACTIVATIONS[activation](),
        _baseline_noise(dropout, binary_p, max_alpha))


def linear_layer(in_features, out_features, *, activation, dropout="none", binary_p=0.5,
                 max_alpha=0.7):
    """Linear + activation, then the dropout slot (the fully connected net of Fig. 3a has no
    batch norm)."""
    check_choice(dropout, DROPOUT_KINDS, "dropout")
    check_choice(activation, ACTIVATIONS, "activation")
    if dropout == "info":
        return InfoDropLinear(in_features, out_features, activation=activation,
                              max_alpha=max_alpha)
    return nn.Sequential(nn.Linear(in_features, out_features), ACTIVATIONS[activation](),
                         _baseline_noise(dropout, binary_p, max_alpha))


NOISE_MODULES = (InformationDropout, nn.Dropout, ConstantLogNormalDropout)


def set_noise(model: nn.Module, enabled: bool) -> None:
    """Switch the noise of every dropout layer on or off without touching batch norm: the
    "N" (noisy) evaluation of Fig. 4 and the noise-free batch-norm re-estimation need both."""
    for module in model.modules():
        if isinstance(module, NOISE_MODULES):
            module.train(enabled)


def information_dropout_layers(model: nn.Module):
    """(name, InformationDropout) pairs in forward order, e.g. ("features.3.dropout", layer)."""
    return [(name, m) for name, m in model.named_modules() if isinstance(m, InformationDropout)]

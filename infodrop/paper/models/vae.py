"""The basic VAE of Kingma & Welling replicated in Section 7 / Table 1: one hidden layer in the
encoder and in the decoder (``hidden`` = 512 k units), a latent of ``latent`` = 256 k units,
Bernoulli pixels.  Two latents: the original Gaussian one, and an Information Dropout layer
(Softplus activations, log-normal prior with mu = 0, sigma = 1: docs/spec.md section 2), for which
the VAE is the special case y = x of the Information Bottleneck."""

import torch
from torch import nn
from torch.nn import functional as F

from ...modules import InformationDropout

LATENTS = ("gaussian", "info")


class GaussianLatent(nn.Module):
    """z = mu + sigma * eps with KL(N(mu, sigma^2) || N(0, 1)) per sample in ``self.kl``."""

    def __init__(self, hidden, latent):
        super().__init__()
        self.mean = nn.Linear(hidden, latent)
        self.log_var = nn.Linear(hidden, latent)
        self.kl = None

    def forward(self, h):
        mean, log_var = self.mean(h), self.log_var(h)
        self.kl = 0.5 * (mean.square() + log_var.exp() - 1 - log_var).sum(dim=1)
        if not self.training:
            return mean
        return mean + torch.exp(0.5 * log_var) * torch.randn_like(mean)


class InfoDropoutLatent(nn.Module):
    """z = softplus(W h) * exp(alpha(h) eps), KL of log z against N(0, 1) in ``self.kl``;
    returns log z, the variable the log-normal prior is on.

    Decoding log z rather than z changes no bound (log is a bijection) but the optimisation:
    on MNIST-5k (k = 1, 30 epochs) the test ELBO was -179.3 decoding z, -166.0 decoding log z,
    the Gaussian VAE's -166.2 (docs/results.md).  max_alpha defaults to 1 (not the
    classifiers' 0.7): a latent unit the decoder does not use can then match the N(0, 1) prior
    exactly and cost no KL, as in the Gaussian VAE."""

    def __init__(self, hidden, latent, max_alpha=1.0):
        super().__init__()
        self.activation = nn.Linear(hidden, latent)
        self.alpha = nn.Linear(hidden, latent)
        self.dropout = InformationDropout(prior="log_normal", max_alpha=max_alpha, mu=0.0,
                                          sigma=1.0, learn_prior=False)

    def forward(self, h):
        z = self.dropout(F.softplus(self.activation(h)), self.alpha(h))
        return torch.log(z.clamp_min(1e-30))  # softplus can underflow to 0 in float32

    @property
    def kl(self):
        return self.dropout.kl


class VAE(nn.Module):
    """forward(x) -> (reconstruction logits shaped like x, per-sample KL (B,))."""

    def __init__(self, in_features, *, latent_kind="gaussian", hidden=512, latent=256,
                 max_alpha=1.0):
        super().__init__()
        if latent_kind not in LATENTS:
            raise ValueError(f"latent_kind must be one of {LATENTS}, got {latent_kind!r}")
        self.encoder = nn.Sequential(nn.Flatten(), nn.Linear(in_features, hidden), nn.ReLU())
        self.latent = (GaussianLatent(hidden, latent) if latent_kind == "gaussian"
                       else InfoDropoutLatent(hidden, latent, max_alpha))
        self.decoder = nn.Sequential(nn.Linear(latent, hidden), nn.ReLU(),
                                     nn.Linear(hidden, in_features))

    def forward(self, x):
        z = self.latent(self.encoder(x))
        return self.decoder(z).view_as(x), self.latent.kl


def negative_elbo(model: VAE, x: torch.Tensor) -> tuple:
    """Per-sample (reconstruction nats, KL nats) of a batch of images in [0, 1]: the negative
    ELBO is their sum (Table 1 reports its mean with the sign flipped)."""
    logits, kl = model(x)
    reconstruction = F.binary_cross_entropy_with_logits(logits, x, reduction="none")
    return reconstruction.flatten(1).sum(dim=1), kl

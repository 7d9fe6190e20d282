"""The networks of the paper's experiments and build_model(), the factory the CLI uses."""

from ...modules import track_kl
from .allcnn import AllCNN, all_cnn_32, all_cnn_96
from .mlp import MLP
from .slots import DROPOUT_KINDS, ConstantLogNormalDropout, information_dropout_layers, set_noise
from .vae import LATENTS, VAE, negative_elbo

MODELS = ("allcnn32", "allcnn96", "mlp", "vae")
# Input side the convolutional nets are designed for (Table 2).
INPUT_SIZE = {"allcnn32": 32, "allcnn96": 96}


def build_model(name, *, image_shape, num_classes=10, dropout="info", activation="relu",
                width=1.0, max_alpha=0.7, binary_p=0.5, latent="gaussian"):
    """``width``: fraction of Table 2's filters for All-CNN, hidden units for the MLP, k of
    Table 1 (latent 256 k, hidden 512 k) for the VAE.  ``image_shape`` = (C, H, W).  The
    model is tracked (infodrop.track_kl): kl_divergence(model) is each pass's KL."""
    return track_kl(_untracked(name, image_shape, num_classes, dropout, activation, width,
                               max_alpha, binary_p, latent))


def _untracked(name, image_shape, num_classes, dropout, activation, width, max_alpha, binary_p,
               latent):
    channels, height, wide = image_shape
    if name in INPUT_SIZE and (height, wide) != (INPUT_SIZE[name],) * 2:
        raise ValueError(f"{name} takes {INPUT_SIZE[name]}x{INPUT_SIZE[name]} images, got "
                         f"{height}x{wide} (pick data of that size or --image-size)")
    common = dict(num_classes=num_classes, dropout=dropout, activation=activation,
                  max_alpha=max_alpha, binary_p=binary_p)
    if name == "allcnn32":
        return all_cnn_32(in_channels=channels, width=width, **common)
    if name == "allcnn96":
        return all_cnn_96(in_channels=channels, width=width, **common)
    if name == "mlp":
        return MLP(channels * height * wide, width=int(width), **common)
    if name == "vae":
        k = width
        return VAE(channels * height * wide, latent_kind=latent, hidden=max(1, round(512 * k)),
                   latent=max(1, round(256 * k)))
    raise ValueError(f"model must be one of {MODELS}, got {name!r}")


__all__ = ["AllCNN", "all_cnn_32", "all_cnn_96", "MLP", "VAE", "negative_elbo", "LATENTS",
           "DROPOUT_KINDS", "ConstantLogNormalDropout", "information_dropout_layers",
           "set_noise", "MODELS", "INPUT_SIZE", "build_model"]

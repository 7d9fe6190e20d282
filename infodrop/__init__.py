"""infodrop: fused Information Dropout (Achille & Soatto, arXiv:1611.01353) for PyTorch."""

from . import reference
from ._backends import backends
from ._per_rank import is_per_rank_noise_enabled, use_per_rank_noise
from ._version import __version__
from .adapters import InfoDropout, InfoDropWrapper
from .conversion import convert
from .functional import information_dropout, noise
from .modules import InfoDropConv2d, InfoDropLinear, InformationDropout, kl_divergence, track_kl

__all__ = ["__version__", "backends", "information_dropout", "noise", "reference", "InformationDropout",
           "InfoDropConv2d", "InfoDropLinear", "kl_divergence", "track_kl", "InfoDropout",
           "InfoDropWrapper", "convert", "use_per_rank_noise", "is_per_rank_noise_enabled"]

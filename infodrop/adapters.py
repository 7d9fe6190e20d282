"""The modules that put Information Dropout into an existing network (what infodrop.convert
inserts, also usable by hand):

- ``InfoDropout``: single-input, a drop-in for ``nn.Dropout`` (also inside ``nn.Sequential``);
  alpha comes from the activation itself through a learned per-channel affine map.
- ``InfoDropWrapper``: a module whose output goes through Information Dropout, with alpha from
  a parallel head (a conv or linear layer) on the module's input, as in the paper.

Both compose ``InformationDropout``: its options pass through, its KL is in ``.kl`` and
``infodrop.kl_divergence(model)`` finds it.
"""

import math

import torch
import torch.nn.functional as F
from torch import nn

from ._backends import picks_cuda
from .modules import InformationDropout


def alpha_of_dropout_rate(p, alpha_min, max_alpha):
    """The alpha whose log-normal noise has the relative variance of binary dropout at rate p:
    Var / mean^2 = exp(alpha^2) - 1 = p / (1 - p), so alpha = sqrt(-log(1 - p)); kept inside
    the open range (alpha_min, alpha_min + max_alpha) so its logit is finite."""
    if not 0 <= p < 1:
        raise ValueError(f"p must be in [0, 1), got {p}")
    alpha = math.sqrt(-math.log1p(-p))
    return alpha_min + max_alpha * min(max((alpha - alpha_min) / max_alpha, 0.05), 0.95)


class InfoDropout(nn.Module):
    """Information Dropout with one input: ``z = x * exp(alpha * eps)``, alpha from x itself.

    ``alpha_logit = weight[c] * x + bias[c]`` per channel ``c`` along ``dim`` (1: the channels
    of (B, C, ...) maps and the features of (B, F) vectors; -1: the features of (B, L, F)
    sequences).  Initialised with ``weight = 0`` and the bias that gives every unit
    ``init_alpha`` (default: the middle of the range ``alpha_min + max_alpha / 2``); training
    then learns how the noise depends on the activation.  ``**options`` are those of
    :class:`InformationDropout` (prior, max_alpha, alpha_min, ...); the KL of the last forward is
    in ``.kl``.  Like ``nn.Dropout`` the noise is on in training mode only.
    """

    _one_layer_call_per_call = True  # kl_divergence of it is exact untracked (modules.py)

    def __init__(self, num_features, dim=1, init_alpha=None, *, device=None, dtype=None, **options):
        super().__init__()
        if type(num_features) is not int or num_features < 1:
            raise ValueError(f"num_features must be an int >= 1, got {num_features!r}")
        if type(dim) is not int:
            raise TypeError(f"dim must be an int, got {type(dim).__name__}")
        self.num_features, self.dim = num_features, dim
        self.dropout = InformationDropout(**options)
        low, high = self.dropout.alpha_min, self.dropout.alpha_min + self.dropout.max_alpha
        if init_alpha is None:
            init_alpha = low + self.dropout.max_alpha / 2
        if not low < init_alpha < high:
            raise ValueError(f"init_alpha must be in ({low}, {high}) (alpha_min, alpha_min + "
                             f"max_alpha), got {init_alpha}")
        self.init_alpha = float(init_alpha)
        factory = {"device": device, "dtype": dtype}
        self.weight = nn.Parameter(torch.empty(num_features, **factory))
        self.bias = nn.Parameter(torch.empty(num_features, **factory))
        self.reset_parameters()

    def reset_parameters(self):
        fraction = (self.init_alpha - self.dropout.alpha_min) / self.dropout.max_alpha
        nn.init.zeros_(self.weight)
        nn.init.constant_(self.bias, math.log(fraction / (1 - fraction)))

    def forward(self, x):
        if x.dim() < 2 or not -x.dim() <= self.dim < x.dim() or x.shape[self.dim] != self.num_features:
            raise ValueError(f"InfoDropout({self.num_features}, dim={self.dim}) needs an input with "
                             f"{self.num_features} channels in dimension {self.dim}, got shape "
                             f"{tuple(x.shape)}")
        shape = [1] * x.dim()
        shape[self.dim] = self.num_features
        # in x's dtype: under autocast x may be bfloat16 while the parameters stay float32
        alpha_logit = torch.addcmul(self.bias.view(shape).to(x.dtype), self.weight.view(shape).to(x.dtype), x)
        return self.dropout(x, alpha_logit)

    @property
    def kl(self):
        """Per-sample KL of the last forward, shape (B,)."""
        return self.dropout.kl

    def extra_repr(self):
        return f"{self.num_features}, dim={self.dim}, init_alpha={self.init_alpha:.4g}"


def _head_bias_to_op(head, backend, device):
    """Whether the wrapper hands the bias of its alpha head to the op rather than to the head:
    where the op is CUDA's, whose channels-last kernels add it as they read the logits (its
    other layouts add it in one pass, as cuDNN adds a convolution's); a plain nn.Conv2d or
    nn.Linear head with a bias and no hooks, which the wrapper can call without its bias.  The
    CPU's convolutions add their bias inside them, and the Triton kernels take none."""
    return (type(head) in (nn.Conv2d, nn.Linear) and head.bias is not None
            and not (head._forward_hooks or head._forward_pre_hooks
                     or nn.modules.module._global_forward_hooks
                     or nn.modules.module._global_forward_pre_hooks)
            and picks_cuda(backend, device))


def _without_bias(head, x):
    if type(head) is nn.Linear:
        return F.linear(x, head.weight)
    return head._conv_forward(x, head.weight, None)


class InfoDropWrapper(nn.Module):
    """``z = InformationDropout(module(x), alpha_head(x))``: ``module`` keeps its weights (under
    ``.module``); ``alpha_head`` maps the module's input to a logit shaped like its output.  On
    the CUDA backend the head's bias goes to the op as its ``logit_bias`` (_head_bias_to_op):
    the same logits, without a pass of their own for the bias."""

    def __init__(self, module, alpha_head, *, name="", **options):
        super().__init__()
        self.module = module
        self.alpha_head = alpha_head
        self.dropout = InformationDropout(**options)
        self.name = name  # the module's name in the converted model, for errors

    def forward(self, x, *args, **kwargs):
        # the head first: an in-place module would otherwise hand the head its own output
        head, logit_bias = self.alpha_head, None
        if _head_bias_to_op(head, self.dropout.backend, x.device):
            alpha_logit, logit_bias = _without_bias(head, x), head.bias
        else:
            alpha_logit = head(x)
        out = self.module(x, *args, **kwargs)
        if alpha_logit.shape != out.shape:
            raise ValueError(f"infodrop: the alpha head of {self.name!r} gives shape "
                             f"{tuple(alpha_logit.shape)} for input {tuple(x.shape)}, but "
                             f"{self.name!r} returns {tuple(out.shape)} (an input size the "
                             "head's stride cannot follow, e.g. odd sizes before a pooling "
                             "that rounds down)")
        # the activation's dtype, whatever autocast made of the head's (timm's convnext under
        # bfloat16 autocast: float32 LayerNorm outputs, bfloat16 convs): the network's own
        # dataflow keeps its dtypes
        alpha_logit = alpha_logit.to(out.dtype)
        # the bias only where there is one: hooks on the layer keep seeing (x, alpha_logit)
        if logit_bias is None:
            return self.dropout(out, alpha_logit)
        return self.dropout(out, alpha_logit, logit_bias)

    @property
    def kl(self):
        """Per-sample KL of the last forward, shape (B,)."""
        return self.dropout.kl

    def extra_repr(self):
        return f"name={self.name!r}" if self.name else ""

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
from torch import nn

from ._backends import picks_cuda
from ._layout import walkable_layout
from .modules import InformationDropout
from .reference import per_channel


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


def _hooked(module):
    """Whether calling ``module`` runs more than its forward: hooks of its own or global ones
    (forward or backward), or a forward set on the instance."""
    hooks = nn.modules.module
    return bool(module._forward_hooks or module._forward_pre_hooks or module._backward_hooks
                or module._backward_pre_hooks or hooks._global_forward_hooks
                or hooks._global_forward_pre_hooks or hooks._global_backward_hooks
                or hooks._global_backward_pre_hooks or "forward" in module.__dict__)


def _head_bias_for_op(head, backend, x):
    """The bias of the alpha head where the wrapper may leave it out of the head, for the op to
    add (None elsewhere): the op is CUDA's, whose channels-last kernels add it as they read the
    logits, saving the pass cuDNN's convolutions spend on their bias; the head is a plain
    nn.Conv2d with a bias (on (B, C, H, W) inputs: the bias is then per channel, dim 1) and
    nothing but its forward to run.  The CPU's convolutions add their bias inside them."""
    if (type(head) is not nn.Conv2d or head.bias is None or x.dim() != 4 or _hooked(head)
            or not picks_cuda(backend, x.device)):
        return None
    return head.bias


def _kernels_add_bias(out):
    """Whether CUDA's kernels add a logit_bias to this output's logits as they read them (a
    channels-last walk of 16- or 32-bit elements, csrc/cuda/ops_cuda.cpp); elsewhere the op
    would add it in a pass of its own, forward and backward."""
    layout = walkable_layout(out)
    return layout is not None and layout.channels_last and out.element_size() <= 4


class InfoDropWrapper(nn.Module):
    """``z = InformationDropout(module(x), alpha_head(x))``: ``module`` keeps its weights (under
    ``.module``); ``alpha_head`` maps the module's input to a logit shaped like its output.  On
    the CUDA backend the head's bias goes to the op as its ``logit_bias`` where its kernels add
    it (_head_bias_for_op, _kernels_add_bias): the same logits, without a pass of their own for
    the bias; hooks on ``.dropout`` then see it as a keyword argument."""

    def __init__(self, module, alpha_head, *, name="", **options):
        super().__init__()
        self.module = module
        self.alpha_head = alpha_head
        self.dropout = InformationDropout(**options)
        self.name = name  # the module's name in the converted model, for errors

    def forward(self, x, *args, **kwargs):
        # the head first: an in-place module would otherwise hand the head its own output
        head = self.alpha_head
        logit_bias = _head_bias_for_op(head, self.dropout.backend, x)
        alpha_logit = head(x) if logit_bias is None else head._conv_forward(x, head.weight, None)
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
        if logit_bias is not None and not _kernels_add_bias(out):
            # added as the convolution would have: in its output's dtype
            alpha_logit = alpha_logit + per_channel(logit_bias.to(alpha_logit.dtype), alpha_logit)
            logit_bias = None
        alpha_logit = alpha_logit.to(out.dtype)
        # the bias by keyword, where there is one: hooks on the layer see (x, alpha_logit)
        if logit_bias is None:
            return self.dropout(out, alpha_logit)
        return self.dropout(out, alpha_logit, logit_bias=logit_bias)

    @property
    def kl(self):
        """Per-sample KL of the last forward, shape (B,)."""
        return self.dropout.kl

    def extra_repr(self):
        return f"name={self.name!r}" if self.name else ""

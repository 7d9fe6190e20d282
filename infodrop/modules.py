"""nn.Modules: the Information Dropout layer, the conv/linear blocks of the paper's Table 2, and
the KL of a forward pass (track_kl, kl_divergence).

The KL of a forward pass.  A model whose forward is *tracked* (:func:`track_kl`, to call
before its first forward; :func:`infodrop.convert` runs it) opens a pass on each call:
every :class:`InformationDropout` layer under it drops what it held and records the KL of each
of its calls in this pass (a layer called twice holds both; a layer not called holds nothing,
so neither a skipped layer nor an earlier eval forward leaks into the sum).  A layer called
outside any tracked pass holds its last call's KL only (and :func:`kl_divergence` of a model
whose layers did so raises).  Nothing of this is in ``state_dict``,
and ``deepcopy``/``pickle`` leave the KL tensors (graph tensors) behind.
"""

import sys
import weakref

import torch
from torch import nn

from . import functional, reference
from ._backends import check_backend_name
from ._checks import check_options
from ._spec import ACTIVATION_OUTPUT, PRIOR_SIGMA_FLOOR, PRIORS_THAT_FIT, X_FLOOR, kl_dtype
from ._tracing import exporting

REDUCTIONS = ("none", "mean", "sum")
_PRIOR_UNITS = 1 << 16  # the units of a call that the prior's moment match reads (see below)


class _ApplyKLGradient(torch.autograd.Function):
    """z unchanged; its backward also gives the KL the gradient of ``weight * kl.mean()``.

    z is marked dirty (as an in-place op would be) rather than returned as a view: a view made
    inside a Function may not be modified in place, and networks apply in-place ReLUs and adds
    to activations.  z is a fresh output of the op that nothing has saved, so this is safe.
    Nothing is saved for the backward but the KL's shape, so checkpointing has nothing to redo.
    """

    @staticmethod
    def forward(ctx, z, kl, weight):
        ctx.mark_dirty(z)
        ctx.kl_meta = (kl.shape, kl.dtype, kl.device, weight / max(kl.shape[0], 1))
        return z

    @staticmethod
    def backward(ctx, grad_z):
        shape, dtype, device, per_sample = ctx.kl_meta
        return grad_z, torch.full(shape, per_sample, dtype=dtype, device=device), None


_CHECKPOINT_FORWARD = []  # the code object of torch.utils.checkpoint's reentrant forward, once known


def _reentrant_checkpoint():
    """The node (ctx) of the torch.utils.checkpoint(use_reentrant=True) whose forward runs this
    call (without gradients), or None.  A walk up the stack: called only for a training layer
    that runs without gradients, never on the usual paths."""
    if not _CHECKPOINT_FORWARD:
        from torch.utils.checkpoint import CheckpointFunction

        _CHECKPOINT_FORWARD.append(CheckpointFunction.forward.__code__)
    frame = sys._getframe(2)
    while frame is not None:
        if frame.f_code is _CHECKPOINT_FORWARD[0]:
            return frame.f_locals["ctx"]
        frame = frame.f_back
    return None


class _PriorUsed:
    """The prior (mu, sigma) that one training call ran with, kept for the recomputation of
    that call by torch.utils.checkpoint, which must read it rather than the buffers the call
    has moved since.  Found, as checkpointing reproduces the call's noise, by the state of the
    generator the call draws its noise from (``rng``): checkpointing restores it before it
    recomputes.  Held by the autograd nodes that may recompute the call, so it lives exactly
    as long as they do; the layer keeps weak references only."""

    __slots__ = ("rng", "mu", "sigma", "__weakref__")
    _KEY = "infodrop_priors_used"  # of the nodes' metadata

    def __init__(self, rng, mu, sigma):
        self.rng, self.mu, self.sigma = rng, mu, sigma

    def hold_by(self, node):
        node.metadata.setdefault(self._KEY, []).append(self)


def _noise_rng_state(device):
    """The state of the default generator of ``device``, which the layer (it takes no
    generator) draws its noise seed from and checkpointing (preserve_rng_state=True, its
    default) restores before it recomputes a forward: host memory, read without a sync."""
    if device.type == "cpu":
        return torch.default_generator.get_state()
    return torch.get_device_module(device.type).get_rng_state(device)


def _set(layer, name, value):
    """Sets a plain attribute (no tensor, parameter or module) of a layer without
    nn.Module.__setattr__, whose checks cost 3 us: as much as a sixth of a layer's call."""
    object.__setattr__(layer, name, value)


def _named_error(module, error):
    """The error of a call inside ``module``, naming it (a layer deep in a model is otherwise
    anonymous); other exception types than these pass unchanged."""
    if type(error) in (TypeError, ValueError, RuntimeError):
        return type(error)(f"{module._get_name()}({module.extra_repr()}): {error}")
    return error


class InformationDropout(nn.Module):
    """Multiplies x by log-normal noise exp(alpha * eps) whose scale comes from alpha_logit.

    ``forward(x, alpha_logit, logit_bias=None) -> z`` (``logit_bias``: one value per channel
    of x added to alpha_logit, as in :func:`infodrop.functional.information_dropout`).  Like
    ``nn.Dropout``, noise is applied in training mode
    only (unless ``noise_in_eval``); the KL is computed in both.  ``self.kl`` is the per-sample
    KL (shape (B,)) of this layer in the current pass (module docstring; the calls of the pass
    summed), None if it has not run in it; :func:`kl_divergence` sums the layers of a model.

    ``kl_weight`` (``beta / N_train``): the layer applies the KL's gradient in its own backward,
    exactly the gradient of ``kl_weight * kl.mean()`` added to the loss, in training mode, so
    that a model trains in an unchanged loop (also under torch.utils.checkpoint, reentrant or
    not).  Its KL is then held detached, for logging: adding it to the loss changes nothing.
    Without ``kl_weight``, a training call inside ``checkpoint(use_reentrant=True)`` raises:
    its KL cannot have a gradient there.

    The log-normal prior ``N(mu, sigma^2)`` of log z: with ``learn_prior`` (the default) it
    follows the data like batch-norm statistics, with no gradient step: each training call
    moves the buffers ``mu`` and ``sigma`` by ``prior_momentum`` towards the prior that
    minimises this call's KL (mu = mean of log x, sigma^2 = mean of alpha^2 + (log x - mu)^2
    over the units of the call's first samples, at most 2**16 units; sigma >= 1e-3), so no
    optimiser can push it anywhere a KL is not finite.
    ``learn_prior=False`` keeps the given mu and sigma.  Checkpoints of the earlier module (mu
    and sigma as parameters) load unchanged.  Under torch.utils.checkpoint the forward that
    the backward recomputes is the same call again: it runs with the prior the call ran with
    (not the buffers the call has moved since), moves nothing and records no KL, so gradients,
    KL and buffers are those of the run without checkpointing, as the noise is (checkpointing
    restores the generators for both: ``preserve_rng_state=True``, its default).

    Errors raised inside the call name the layer and its options.
    """

    _one_layer_call_per_call = True  # kl_divergence(layer) is exact untracked (its docstring)
    # whether _kl_calls holds a call made outside any tracked pass; a class default, so that
    # layers pickled before it existed load
    _kl_untracked = False
    _priors_used = ()  # weak references to the _PriorUsed of calls that may be recomputed

    def __init__(self, prior="log_uniform", max_alpha=0.7, alpha_min=1e-3, mu=0.0, sigma=1.0,
                 learn_prior=True, mask_inactive=False, unit_mean=False, noise_in_eval=False,
                 backend="auto", *, kl_weight=None, prior_momentum=0.1, device=None, dtype=None):
        super().__init__()
        check_options(prior, max_alpha, alpha_min, mu, sigma, mask_inactive, unit_mean, True,
                      noise_in_eval)
        check_backend_name(backend)
        if not isinstance(learn_prior, bool):
            raise TypeError(f"learn_prior must be a bool, got {type(learn_prior).__name__}")
        if not (isinstance(prior_momentum, (int, float)) and 0 < prior_momentum <= 1):
            raise ValueError(f"prior_momentum must be a number in (0, 1], got {prior_momentum!r}")
        self.prior = prior
        self.max_alpha = float(max_alpha)
        self.alpha_min = float(alpha_min)
        self.mask_inactive = mask_inactive
        self.unit_mean = unit_mean
        self.noise_in_eval = noise_in_eval
        self.backend = backend
        self.kl_weight = kl_weight
        self.learn_prior = learn_prior and prior == "log_normal"
        self.prior_momentum = float(prior_momentum)
        if prior == "log_normal":
            self._prior_init = (float(mu), float(sigma))
            factory = dict(device=device, dtype=torch.float32 if dtype is None else dtype)
            self.register_buffer("mu", torch.empty((), **factory))
            self.register_buffer("sigma", torch.empty((), **factory))
            self.reset_parameters()
        else:
            self.mu, self.sigma = 0.0, 1.0  # unused by the log-uniform KL
        self._kl_calls = ()  # the KLs of this layer's calls in the current pass
        self._kl_depth = 0  # how many tracked passes around this layer are open

    @property
    def kl_weight(self):
        return self._kl_weight

    @kl_weight.setter
    def kl_weight(self, value):
        # a number, as beta / N_train is; settable, for a warm-up of beta
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                                  or not 0 <= value < float("inf")):
            raise ValueError(f"kl_weight must be None or a finite number >= 0, got {value!r}")
        self._kl_weight = None if value is None else float(value)

    def reset_parameters(self):
        """The prior's initial mu and sigma (the layer has no other state)."""
        if self.prior == "log_normal":
            with torch.no_grad():
                self.mu.fill_(self._prior_init[0])
                self.sigma.fill_(self._prior_init[1])

    def forward(self, x, alpha_logit, logit_bias=None):
        # While autograd recomputes a checkpointed forward (inside a backward), the call is
        # the same call again: it runs with the prior that call ran with (_PriorUsed), and it
        # neither moves the prior nor records its KL a second time.
        compiling = torch.compiler.is_compiling()
        recompute = not compiling and torch._C._current_graph_task_id() != -1
        training = self.training
        weight = self._kl_weight
        learned = self.learn_prior and training
        reentrant = None  # the reentrant checkpoint whose forward runs this call, if one does
        if (training and not compiling and not torch.is_grad_enabled()
                and (learned or weight is None)):
            reentrant = _reentrant_checkpoint()
        if weight is None and reentrant is not None:
            raise RuntimeError(
                f"{self._get_name()}({self.extra_repr()}) runs inside "
                "torch.utils.checkpoint(use_reentrant=True), whose forward has no gradients: "
                "the KL's gradient would be lost. Pass kl_weight=beta / N_train to the layer "
                "(it then applies the KL's gradient in its backward; kl_weight=0.0 if the KL "
                "is only logged), or use use_reentrant=False")
        mu, sigma = self.mu, self.sigma
        used = None  # the prior of this call, kept for its recomputation
        if learned and recompute:
            mu, sigma = self._prior_used(x.device)
        elif learned:
            # _follow_prior updates the buffers in place after this call, and the op saves mu
            # and sigma for its backward: it gets copies (one stack), so that this call's
            # backward, and that of an earlier call of the same pass, read the values they ran
            # with rather than failing the saved tensors' version check
            mu, sigma = torch.stack((mu, sigma)).unbind()
            # checkpointing may recompute the call: a reentrant checkpoint, or saved-tensor
            # hooks (a non-reentrant checkpoint's; checked rather than told apart, cheaply)
            if reentrant is not None or (
                    not compiling and torch.is_grad_enabled()
                    and torch._C._autograd._top_saved_tensors_default_hooks(False) is not None):
                used = _PriorUsed(_noise_rng_state(x.device), mu, sigma)
        try:
            z, kl = functional.information_dropout(
                x, alpha_logit, prior=self.prior, max_alpha=self.max_alpha,
                alpha_min=self.alpha_min, mu=mu, sigma=sigma,
                mask_inactive=self.mask_inactive, unit_mean=self.unit_mean, training=training,
                noise_in_eval=self.noise_in_eval, backend=self.backend, logit_bias=logit_bias)
        except (TypeError, ValueError, RuntimeError) as error:
            raise _named_error(self, error) from error
        if used is not None:
            self._keep_prior_used(used, (reentrant,) if reentrant is not None
                                  else (z.grad_fn, kl.grad_fn))
        if learned and not recompute:
            self._follow_prior(x, alpha_logit, logit_bias)
        if weight is not None:
            if training and weight and kl.requires_grad:
                z = _ApplyKLGradient.apply(z, kl, weight)
            kl = kl.detach()
        # an exported program has no Python attributes to record into: its KL lives in the graph
        if not (recompute or exporting()):
            if self._kl_depth:
                _set(self, "_kl_calls", self._kl_calls + (kl,))
            else:  # no pass to belong to: the last call only (kl_divergence tells them apart)
                _set(self, "_kl_calls", (kl,))
                _set(self, "_kl_untracked", True)
        return z

    def _keep_prior_used(self, used, nodes):
        """``used`` held by the autograd nodes that may recompute its call (the reentrant
        checkpoint's, or those of the call's outputs: a non-reentrant checkpoint recomputes
        while the backward runs on the graph that holds them), looked up through a weak
        reference, so that it goes with them."""
        held = False
        for node in dict.fromkeys(nodes):  # z and kl share the fused op's node
            if node is not None:
                used.hold_by(node)
                held = True
        if held:
            live = tuple(ref for ref in self._priors_used if ref() is not None)
            _set(self, "_priors_used", live + (weakref.ref(used),))

    def _prior_used(self, device):
        """(mu, sigma) that the call being recomputed ran with: the _PriorUsed of the same
        generator state (the latest, should a generator reseeded between calls give two calls
        whose graphs are both alive the same state: they then drew the same noise as well).
        The buffers where none has it: checkpointing with preserve_rng_state=False, whose
        recomputation draws other noise too."""
        rng = _noise_rng_state(device)
        for ref in reversed(self._priors_used):
            used = ref()
            if used is not None and torch.equal(used.rng, rng):
                return used.mu, used.sigma
        return self.mu, self.sigma

    @torch.no_grad()
    def _follow_prior(self, x, alpha_logit, logit_bias=None):
        """Move mu and sigma towards the minimiser of this call's summed log-normal KL, estimated
        on the call's first samples (at most _PRIOR_UNITS units: the moving average over calls
        does the rest, at a small fraction of the op's cost).  In place: a buffer replaced by a
        tensor made inside a compiled region is module state that a CUDA graph's next replay
        overwrites (mode="reduce-overhead"); forward() hands the op copies for this reason."""
        if x.numel() == 0:
            return
        samples = max(1, min(x.shape[0], _PRIOR_UNITS // (x.numel() // x.shape[0])))
        compute = kl_dtype(x.dtype)
        x, alpha_logit = x[:samples].to(compute), alpha_logit[:samples].to(compute)
        if logit_bias is not None:
            alpha_logit = alpha_logit + reference.per_channel(logit_bias.to(compute), alpha_logit)
        var_log, mean_log = torch.var_mean(x.clamp_min(X_FLOOR).log(), correction=0)
        # alpha = alpha_min + max_alpha * s: E[alpha^2] from the mean and variance of s
        var_s, mean_s = torch.var_mean(torch.sigmoid(alpha_logit), correction=0)
        mean_alpha2 = (self.alpha_min + self.max_alpha * mean_s).square() + self.max_alpha ** 2 * var_s
        mu = torch.lerp(self.mu.to(compute), mean_log, self.prior_momentum)
        sigma = torch.lerp(self.sigma.to(compute).square(), var_log + mean_alpha2,
                           self.prior_momentum).sqrt().clamp_min(PRIOR_SIGMA_FLOOR)
        # an inf or NaN in x leaves the prior where it was (without a device sync)
        finite = torch.isfinite(mu) & torch.isfinite(sigma)
        self.mu.copy_(torch.where(finite, mu, self.mu))
        self.sigma.copy_(torch.where(finite, sigma, self.sigma))

    @property
    def kl(self):
        """Per-sample KL, shape (B,), of this layer's calls in the current pass (summed), or
        None if it has not run in it."""
        calls = self._kl_calls
        if len(calls) <= 1:
            return calls[0] if calls else None
        if any(kl.shape != calls[0].shape for kl in calls):
            raise ValueError(
                f"{self._get_name()}({self.extra_repr()}) ran {len(calls)} times in this pass with "
                f"batch sizes {[kl.shape[0] for kl in calls]}: its per-sample KLs cannot be "
                "added; use infodrop.kl_divergence(model, reduction='mean')")
        return torch.stack(calls).sum(dim=0)

    def __getstate__(self):
        # deepcopy and pickle: the KLs are graph tensors of one pass, not state of the layer
        state = super().__getstate__()
        state["_kl_calls"], state["_kl_depth"], state["_kl_untracked"] = (), 0, False
        state["_priors_used"] = ()  # (weak references) the graph of a pass holds these
        return state

    def extra_repr(self):
        parts = [f"prior={self.prior!r}", f"max_alpha={self.max_alpha}", f"alpha_min={self.alpha_min}"]
        for flag in ("mask_inactive", "unit_mean", "noise_in_eval"):
            if getattr(self, flag):
                parts.append(f"{flag}=True")
        if self.prior == "log_normal" and not self.learn_prior:
            parts.append("learn_prior=False")
        if self._kl_weight is not None:
            parts.append(f"kl_weight={self._kl_weight:g}")
        if self.backend != "auto":
            parts.append(f"backend={self.backend!r}")
        return ", ".join(parts)


# The activations the blocks know by name (infodrop/_spec.py says what each outputs).
_ACTIVATIONS = {
    "relu": nn.ReLU, "relu6": nn.ReLU6, "hardsigmoid": nn.Hardsigmoid, "softplus": nn.Softplus,
    "sigmoid": nn.Sigmoid, "gelu": nn.GELU, "silu": nn.SiLU, "mish": nn.Mish,
    "hardswish": nn.Hardswish, "elu": nn.ELU, "selu": nn.SELU, "celu": nn.CELU,
    "leaky_relu": nn.LeakyReLU, "tanh": nn.Tanh, "identity": nn.Identity,
}
_ACTIVATION_NAME = {cls: name for name, cls in _ACTIVATIONS.items()}
_DROPOUT_OPTIONS = ("max_alpha", "alpha_min", "mu", "sigma", "learn_prior", "mask_inactive",
                    "unit_mean", "noise_in_eval", "backend", "kl_weight", "prior_momentum")


def _activation_and_prior(block, activation, prior):
    """(activation module, prior) of a block: the prior that fits the activation's output."""
    if isinstance(activation, str):
        if activation not in _ACTIVATIONS:
            raise ValueError(f"{block}: activation must be an nn.Module or one of "
                             f"{tuple(_ACTIVATIONS)}, got {activation!r}")
        name, module = activation, _ACTIVATIONS[activation]()
    elif isinstance(activation, nn.Module):
        name, module = _ACTIVATION_NAME.get(type(activation)), activation
    else:
        raise TypeError(f"{block}: activation must be a name or an nn.Module, "
                        f"got {type(activation).__name__}")
    output = ACTIVATION_OUTPUT.get(name)
    if prior is None:
        if output is None:
            raise ValueError(f"{block}: cannot tell which prior fits activation {module!r}: pass "
                             "prior='log_uniform' (any output, exact zeros allowed) or "
                             "prior='log_normal' (outputs > 0 only)")
        return module, PRIORS_THAT_FIT[output][0]
    if output is not None and prior not in PRIORS_THAT_FIT[output]:
        raise ValueError(f"{block}: prior={prior!r} does not fit activation {name!r}, whose output "
                         f"is {output} (log_normal needs x > 0); it fits {PRIORS_THAT_FIT[output]}")
    return module, prior


class _InfoDropBlock(nn.Module):
    """f = act(norm(main(x))), alpha_logit = alpha_branch(x), z = InformationDropout(f, alpha_logit)."""

    _one_layer_call_per_call = True  # kl_divergence(block) is exact untracked (its docstring)

    def __init__(self, main, alpha_branch, norm, activation, prior, dropout_options, factory):
        super().__init__()
        block = type(self).__name__
        unknown = sorted(set(dropout_options) - set(_DROPOUT_OPTIONS))
        if unknown:
            raise TypeError(f"{block} got unexpected keyword arguments {unknown}; it takes its "
                            f"layer's arguments, activation, batch_norm, prior and the options "
                            f"of InformationDropout {_DROPOUT_OPTIONS}")
        self.main = main
        self.norm = norm
        self.activation, prior = _activation_and_prior(block, activation, prior)
        self.alpha_branch = alpha_branch  # its own weights and bias, no batch norm (authors' code)
        try:
            self.dropout = InformationDropout(prior=prior, **dropout_options, **factory)
        except (TypeError, ValueError) as error:
            raise type(error)(f"{block}: {error}") from error

    def forward(self, x):
        f = self.activation(self.norm(self.main(x)))
        return self.dropout(f, self.alpha_branch(x))

    def reset_parameters(self):
        """Re-initialises every child that has parameters or statistics (as built)."""
        for child in self.children():
            if hasattr(child, "reset_parameters"):
                child.reset_parameters()

    @property
    def kl(self):
        """Per-sample KL of this block in the current pass (InformationDropout.kl)."""
        return self.dropout.kl


class InfoDropConv2d(_InfoDropBlock):
    """A conv + batch norm + activation whose output goes through Information Dropout, with
    alpha from a parallel conv of the same geometry (kernel, stride, padding, dilation, groups)
    on the same input: the layer that replaces "stride-2 conv + dropout" in the paper's All-CNN
    networks.  Takes nn.Conv2d's arguments; ``bias`` defaults to ``not batch_norm`` (the
    alpha conv always has one); ``activation`` is a name (infodrop/_spec.py) or an nn.Module,
    and ``prior`` defaults to the one that fits it (relu -> log_uniform, softplus ->
    log_normal); the other keywords are InformationDropout's options."""

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1,
                 groups=1, bias=None, padding_mode="zeros", device=None, dtype=None, *,
                 activation="relu", batch_norm=True, prior=None, **dropout_options):
        factory = dict(device=device, dtype=dtype)
        geometry = dict(kernel_size=kernel_size, stride=stride, padding=padding,
                        dilation=dilation, groups=groups, padding_mode=padding_mode, **factory)
        try:
            conv = nn.Conv2d(in_channels, out_channels,
                             bias=not batch_norm if bias is None else bias, **geometry)
        except (TypeError, ValueError) as error:
            raise type(error)(f"InfoDropConv2d: {error}") from error
        alpha = nn.Conv2d(in_channels, out_channels, bias=True, **geometry)
        norm = nn.BatchNorm2d(out_channels, **factory) if batch_norm else nn.Identity()
        super().__init__(conv, alpha, norm, activation, prior, dropout_options, factory)


class InfoDropLinear(_InfoDropBlock):
    """A linear layer (+ optional batch norm) + activation followed by Information Dropout,
    with alpha from a parallel linear layer on the same input.  Takes nn.Linear's arguments
    (``bias`` defaults to ``not batch_norm``); activation and prior as InfoDropConv2d."""

    def __init__(self, in_features, out_features, bias=None, device=None, dtype=None, *,
                 activation="relu", batch_norm=False, prior=None, **dropout_options):
        factory = dict(device=device, dtype=dtype)
        linear = nn.Linear(in_features, out_features, bias=not batch_norm if bias is None else bias,
                           **factory)
        alpha = nn.Linear(in_features, out_features, bias=True, **factory)
        norm = nn.BatchNorm1d(out_features, **factory) if batch_norm else nn.Identity()
        super().__init__(linear, alpha, norm, activation, prior, dropout_options, factory)


def _open_pass(model, args):
    for layer in model._infodrop_kl_layers:
        if not layer._kl_depth:  # an outer tracked pass keeps what its layers recorded
            _set(layer, "_kl_calls", ())
            _set(layer, "_kl_untracked", False)
        _set(layer, "_kl_depth", layer._kl_depth + 1)


def _close_pass(model, args, output):
    for layer in model._infodrop_kl_layers:
        if layer._kl_depth:
            _set(layer, "_kl_depth", layer._kl_depth - 1)


def _list_layers(model):
    """model's InformationDropout layers, also kept on the model for its pass hooks (walking
    model.modules() on every forward would cost 0.1 ms on a ResNet-50)."""
    layers = tuple(m for m in model.modules() if isinstance(m, InformationDropout))
    _set(model, "_infodrop_kl_layers", layers)
    return layers


def _compiled_module(model):
    """The module a torch.compile wrapper (OptimizedModule) runs, else ``model``: pass hooks on
    the wrapper run outside the compiled forward, around it, so the layers' pass depth that its
    graph was compiled with changes and its next call compiles a second graph (a minute for a
    ResNet-50 under inductor); the module's own hooks run inside it."""
    if not hasattr(model, "_orig_mod"):
        return model
    from torch._dynamo.eval_frame import OptimizedModule

    return model._orig_mod if isinstance(model, OptimizedModule) else model


def track_kl(model: nn.Module) -> nn.Module:
    """Make each call of ``model`` one pass of the KL bookkeeping (module docstring): every
    InformationDropout layer under it then holds the KLs of its calls in that pass, and
    :func:`kl_divergence` sums exactly those.  Forward hooks on ``model`` and the list of its
    layers (which deepcopy and pickle carry, state_dict ignores); calling it again updates that
    list, as each :func:`kl_divergence` call does.  Call it before the model's first forward
    (:func:`kl_divergence` raises for a model whose layers ran untracked), and before
    torch.compile (which does not see hooks added after it compiles).  Returns ``model``."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    tracked = _compiled_module(model)  # a compiled model: the module it compiled
    _list_layers(tracked)
    if _open_pass not in tracked._forward_pre_hooks.values():
        tracked.register_forward_pre_hook(_open_pass)
        tracked.register_forward_hook(_close_pass, always_call=True)
    return model


def _check_tracked(model):
    """Raises if ``model`` is not tracked and any of its layers holds a call made outside any
    tracked pass: which of them ran in the model's last pass is then unknown (tracking it now
    would make only later passes exact)."""
    if not isinstance(model, nn.Module) or _open_pass in model._forward_pre_hooks.values():
        return
    untracked = [name for name, m in model.named_modules()
                 if isinstance(m, InformationDropout) and m._kl_untracked and m._kl_calls]
    if untracked:
        raise RuntimeError(
            f"kl_divergence: the model was not tracked when its InformationDropout layers "
            f"{untracked} ran, so which of them ran in its last forward pass is unknown (a layer "
            "that pass skipped still holds an earlier call's KL): call infodrop.track_kl(model) "
            "once before its first forward pass (infodrop.convert does)")


def kl_divergence(model: nn.Module, reduction: str = "none") -> torch.Tensor:
    """The KL of ``model``'s last forward pass, summed over its InformationDropout layers and
    over each layer's calls in that pass (module docstring; tracks ``model`` on first use).

    A model that ran untracked is an error (RuntimeError): its layers hold each its last call,
    and a layer that the last pass skipped would add an earlier pass's KL.  Call
    :func:`track_kl` before its first forward (:func:`infodrop.convert` does).  A layer, a
    block (InfoDropConv2d, InfoDropLinear) or an adapter runs its one layer once per call:
    its last call is its pass, untracked or not.

    ``reduction="none"``: per sample, shape (B,) (every call must have the same batch size;
    otherwise a ValueError names the layers); ``"mean"``: the sum over layers and calls of each
    call's batch mean, a scalar that any mix of batch sizes allows (``loss + beta / N_train *
    kl_divergence(model, "mean")`` is the paper's loss); ``"sum"``: the sum of everything.
    Layers with ``kl_weight`` contribute their KL detached (their gradient is applied in their
    own backward)."""
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
    model = _compiled_module(model)  # kl_divergence(torch.compile(model)): the model's KL
    if not getattr(model, "_one_layer_call_per_call", False):
        _check_tracked(model)
    track_kl(model)
    calls = [(m, kl) for m in model._infodrop_kl_layers for kl in m._kl_calls]
    if not calls:
        raise RuntimeError("kl_divergence: no InformationDropout layer of the model has run in "
                           "its last forward pass")
    if reduction == "mean":
        return sum(kl.mean() for _, kl in calls)
    if reduction == "sum":
        return sum(kl.sum() for _, kl in calls)
    if len({kl.shape for _, kl in calls}) > 1:
        names = {m: name or "model" for name, m in model.named_modules()}
        sizes = sorted({(names[m], kl.shape[0]) for m, kl in calls})
        raise ValueError(f"kl_divergence: the layers ran with different batch sizes {sizes}: "
                         "their per-sample KLs cannot be added; use reduction='mean'")
    return torch.stack([kl for _, kl in calls]).sum(dim=0)

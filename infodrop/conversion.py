"""infodrop.convert: Information Dropout in an existing network (torchvision, timm, your own),
in place, in the spirit of Liger-Kernel's apply_* patching.

One forward of an example input, with hooks, tells each target's input and output shapes (so
the alpha heads' channels and strides), its device and dtype, and whether its output is
non-negative; every new parameter is created before ``convert`` returns, so an optimizer built
afterwards sees it.  The probe runs in eval mode under no_grad and restores each module's mode:
batch-norm statistics are left as they were, and it draws no random numbers (the new heads are
initialised from PyTorch's generator, as any new layer is).
"""

import difflib

import torch
from torch import nn

from .adapters import InfoDropout, InfoDropWrapper, alpha_of_dropout_rate
from .modules import InformationDropout, _compiled_module, track_kl

ALPHA_HEADS = ("conv", "1x1")
_DROPOUTS = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d)
_DEFAULT_SIDE = 64  # of the example convert builds when none is given: deep enough for 5 halvings


def convert(model, targets=(), *, replace_dropout=False, alpha_head="conv", kl_weight=None,
            example_input=None, allow_negative=False, **options):
    """Puts Information Dropout into ``model`` in place and returns it.

    targets: names from ``model.named_modules()`` (``["layer3", "layer4"]`` of a ResNet,
        ``"features.10"`` of a VGG).  Each target's output goes through Information Dropout with
        alpha from a head on the target's input; the target is replaced by an
        :class:`InfoDropWrapper` holding it under ``.module`` (its weights are kept; their
        state_dict keys gain ``.module``).
    replace_dropout: every ``nn.Dropout``/``Dropout1d``/``Dropout2d``/``Dropout3d`` with p > 0
        becomes an :class:`InfoDropout` whose initial noise has the variance of the dropout it
        replaces (p = 0 placeholders, which timm builds wherever a drop rate is 0, stay).
    alpha_head: "conv" (the paper: a 3x3 conv with the target's stride, or the target's own
        kernel, stride, padding, dilation and groups when the target is a Conv2d) or "1x1" (a
        strided 1x1 conv: ~9x cheaper).  Targets with (B, F) outputs get a Linear head.
    kl_weight: passed to each layer (``beta / N_train``: the layer then adds the KL's gradient
        in its backward, so the training loop needs no KL term).
    example_input: a batch the model accepts (default: ``randn(2, C, 64, 64)`` with C the
        ``in_channels`` of the model's first Conv2d, or ``randn(2, F)`` for a first Linear).
    allow_negative: Information Dropout models non-negative activations (after a ReLU or a
        Softplus); a target whose output has negative values in the example is an error unless
        this is True.  With the log-uniform prior its KL does not depend on x, and the layer is
        then multiplicative log-normal noise on signed activations (as in variational dropout);
        the log-normal prior needs x > 0 whatever this says.
    **options: those of :class:`InformationDropout` (prior, max_alpha, alpha_min, ...).
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    if _compiled_module(model) is not model:
        # its named_modules() are the compiled module's under "_orig_mod.", and a graph
        # compiled before the change would be thrown away at the next call
        raise ValueError("convert: model is a torch.compile wrapper (OptimizedModule): convert "
                         "the model, then compile it: torch.compile(infodrop.convert(model, ...))")
    if alpha_head not in ALPHA_HEADS:
        raise ValueError(f"alpha_head must be one of {ALPHA_HEADS}, got {alpha_head!r}")
    if isinstance(targets, str):
        targets = [targets]  # one name, not its characters
    targets = list(targets or ())
    if kl_weight is not None:
        options["kl_weight"] = kl_weight
    InformationDropout(**options)  # the options' errors now, before the model is touched
    prior = options.get("prior", "log_uniform")

    modules = dict(model.named_modules())
    _check_targets(targets, modules)
    dropouts = [name for name, m in modules.items()
                if replace_dropout and isinstance(m, _DROPOUTS) and m.p > 0 and name not in targets]
    if not targets and not dropouts:
        raise ValueError("convert: nothing to convert: give targets, or replace_dropout=True on "
                         "a model with nn.Dropout layers of p > 0")
    guessed = example_input is None
    if guessed:
        example_input = _default_example(model)
    try:
        seen = _probe(model, example_input, {name: modules[name] for name in targets + dropouts})
    except RuntimeError as error:
        if not guessed:
            raise
        raise ValueError(f"convert: the model does not run on the example input convert guessed, of "
                         f"shape {tuple(example_input.shape)} ({error}); pass example_input=") from error

    for name in targets + dropouts:
        _check_activation(name, seen[name], prior, allow_negative, model, example_input)
    # every replacement is built before any is made: a failure leaves the model as it was
    replacements = {name: _wrapper(name, modules[name], seen[name], alpha_head, options)
                    for name in targets}
    replacements.update({name: _info_dropout(name, modules[name], seen[name], options)
                         for name in dropouts})
    for name, new in replacements.items():
        parent, _, child = name.rpartition(".")
        # through _modules: Sequential children are named "0", "1", ...; resolved from the
        # original module objects, so a target nested in another target is found too
        modules[parent]._modules[child] = new
    # each forward of the model is one KL pass: kl_divergence(model) sums that forward's calls
    return track_kl(model)


def _check_targets(targets, modules):
    for name in targets:
        if type(name) is not str:
            raise TypeError(f"targets: each must be a str (a name from model.named_modules()), "
                            f"got {type(name).__name__}")
        if name == "":
            raise ValueError("targets: '' is the model itself; name a submodule")
        if name not in modules:
            close = difflib.get_close_matches(name, [n for n in modules if n], n=3)
            hint = f" (did you mean {', '.join(map(repr, close))}?)" if close else ""
            raise ValueError(f"targets: the model has no submodule {name!r}{hint}; the names are "
                             "those of model.named_modules()")
        if isinstance(modules[name], (InfoDropWrapper, InfoDropout, InformationDropout)):
            raise ValueError(f"targets: {name!r} is already an Information Dropout module")
    if len(set(targets)) != len(targets):
        raise ValueError(f"targets: a name is given twice: {targets}")


def _default_example(model):
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            weight = m.weight
            shape = ((2, m.in_channels, _DEFAULT_SIDE, _DEFAULT_SIDE) if isinstance(m, nn.Conv2d)
                     else (2, m.in_features))
            g = torch.Generator().manual_seed(0)
            return torch.randn(shape, generator=g).to(weight.device, weight.dtype)
    raise ValueError("convert: the model has no Conv2d or Linear to guess its input from; pass "
                     "example_input=")


class _Seen:
    """What the probe saw of one module: its input and output (shape, dtype, device), the
    least output value, and how often it ran."""

    def __init__(self):
        self.calls, self.input, self.output, self.least = 0, None, None, None

    def record(self, name, args, output):
        if not args or not isinstance(args[0], torch.Tensor) or not isinstance(output, torch.Tensor):
            raise TypeError(f"convert: {name!r} must take a tensor as its first input and return a "
                            "tensor to get Information Dropout on its output")
        x = args[0]
        now_in = (tuple(x.shape), x.dtype, x.device)
        now_out = (tuple(output.shape), output.dtype, output.device)
        if self.calls and (now_in, now_out) != (self.input, self.output):
            raise ValueError(f"convert: {name!r} runs more than once in a forward, with other "
                             "shapes each time; one alpha head cannot serve every call: target a "
                             "module that runs once")
        self.input, self.output = now_in, now_out
        least = float(output.detach().min()) if output.numel() else 0.0
        self.least = least if self.least is None else min(self.least, least)
        self.calls += 1


def _eval_forward(model, example_input, hooks):
    """One eval-mode, no_grad forward of example_input with forward hooks {module: hook}; each
    module's mode is restored afterwards."""
    handles = [m.register_forward_hook(hook) for m, hook in hooks.items()]
    modes = {m: m.training for m in model.modules()}
    try:
        model.eval()
        with torch.no_grad():
            model(example_input)
    finally:
        for handle in handles:
            handle.remove()
        for m, mode in modes.items():
            m.training = mode


def _probe(model, example_input, watched):
    """What each watched module ({name: module}) saw in one forward of example_input."""
    seen = {name: _Seen() for name in watched}
    _eval_forward(model, example_input, {
        m: (lambda m, args, out, name=name: seen[name].record(name, args, out))
        for name, m in watched.items()})
    for name, s in seen.items():
        if not s.calls:
            raise ValueError(f"convert: {name!r} did not run in the forward of the example input "
                             "(an unused module, or one a different input would reach)")
    return seen


def _check_activation(name, seen, prior, allow_negative, model, example_input):
    if prior == "log_normal" and not seen.least > 0:
        raise ValueError(f"convert: the log_normal prior needs x > 0 (a Softplus output), but "
                         f"{name!r} returned values down to {seen.least:.3g}; use the "
                         "log_uniform prior (ReLU outputs) or another target")
    if seen.least < 0 and not allow_negative:
        hint = _non_negative_near(name, model, example_input)
        raise ValueError(
            f"convert: {name!r} returns negative values (down to {seen.least:.3g}) but Information "
            "Dropout is for non-negative activations (after a ReLU or a Softplus). "
            + (f"Non-negative outputs near it: {', '.join(map(repr, hint))}. " if hint else "")
            + "allow_negative=True applies the noise to signed values anyway (log_uniform prior: "
              "multiplicative noise, its KL does not depend on x).")


def _non_negative_near(name, model, example_input, limit=4):
    """Up to ``limit`` modules inside the nearest ancestor of ``name`` (or inside ``name``)
    whose outputs were >= 0: targets to suggest instead."""
    watched = dict(model.named_modules())
    watched.pop("")
    least = {}

    def record(module, args, out, key):
        if isinstance(out, torch.Tensor) and out.numel() and out.dim() in (2, 4):
            least[key] = min(least.get(key, 0.0), float(out.detach().min()))

    _eval_forward(model, example_input, {m: (lambda m, a, o, key=key: record(m, a, o, key))
                                         for key, m in watched.items()
                                         if not isinstance(m, _DROPOUTS)})
    good = [key for key, value in least.items() if value >= 0]
    scope = name
    while True:
        found = [key for key in good if key == scope or key.startswith(scope + ".")]
        if found:
            return found[:limit]
        scope = scope.rpartition(".")[0]
        if scope == "":
            return []  # nothing near it: a list from elsewhere in the model would mislead


def _factory(seen):
    _, dtype, device = seen.output
    return {"device": device, "dtype": dtype}


def _wrapper(name, module, seen, kind, options):
    in_shape, out_shape = seen.input[0], seen.output[0]
    if len(in_shape) == 2 and len(out_shape) == 2:
        head = nn.Linear(in_shape[1], out_shape[1], **_factory(seen))
    elif len(in_shape) == 4 and len(out_shape) == 4:
        head = _conv_head(name, module, in_shape, out_shape, kind, _factory(seen))
    else:
        raise ValueError(f"convert: {name!r} maps {in_shape} to {out_shape}; alpha heads are built "
                         "for (B, C, H, W) -> (B, C', H', W') maps and (B, F) -> (B, F') vectors")
    with torch.no_grad():
        got = tuple(head(torch.zeros((1,) + in_shape[1:], **_factory(seen))).shape)
    if got[1:] != out_shape[1:]:
        raise ValueError(f"convert: no {kind!r} alpha head maps {name!r}'s input {in_shape} to its "
                         f"output {out_shape} (the head gives {(out_shape[0],) + got[1:]})")
    if getattr(module, "inplace", False):
        module.inplace = False  # an in-place activation would overwrite the head's saved input
    wrapper = InfoDropWrapper(module, head, name=name, **options)
    wrapper.dropout.to(seen.output[2])  # a learned prior's mu and sigma
    # the new parts take the target's mode; the target's own children keep theirs
    for part in (wrapper, wrapper.alpha_head, wrapper.dropout):
        part.training = module.training
    return wrapper


def _conv_head(name, module, in_shape, out_shape, kind, factory):
    channels_in, channels_out = in_shape[1], out_shape[1]
    if kind == "conv" and isinstance(module, nn.Conv2d):
        return nn.Conv2d(channels_in, channels_out, module.kernel_size, module.stride, module.padding,
                         module.dilation, module.groups, padding_mode=module.padding_mode, **factory)
    stride = tuple(_stride(i, o, name) for i, o in zip(in_shape[2:], out_shape[2:]))
    # kernel k, padding k // 2, stride s: ceil(size / s) outputs, the size of "same" convs and
    # of poolings that round up; the probe's check in _wrapper catches any other rounding
    kernel = 3 if kind == "conv" else 1
    return nn.Conv2d(channels_in, channels_out, kernel, stride, kernel // 2, **factory)


def _stride(size_in, size_out, name):
    for stride in range(1, size_in + 1):
        if -(-size_in // stride) == size_out:
            return stride
    raise ValueError(f"convert: {name!r} maps a spatial size {size_in} to {size_out}; the alpha "
                     "heads follow strides (outputs no larger than inputs) only")


def _info_dropout(name, module, seen, options):
    shape = seen.input[0]
    if len(shape) < 2:
        raise ValueError(f"convert: {name!r} sees inputs of shape {shape}; InfoDropout needs (B, C, ...)")
    # channels: dim 1 of (B, F) vectors and (B, C, ...) maps; the last dim of (B, L, F) sequences
    # (nn.Dropout after an nn.Linear); Dropout1d/2d/3d drop channels, which are dim 1
    dim = -1 if len(shape) == 3 and type(module) is nn.Dropout else 1
    layer = InfoDropout(shape[dim], dim, **_factory(seen), **options)
    layer.init_alpha = alpha_of_dropout_rate(module.p, layer.dropout.alpha_min, layer.dropout.max_alpha)
    layer.reset_parameters()
    layer.dropout.to(seen.output[2])
    layer.train(module.training)
    return layer

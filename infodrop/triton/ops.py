"""The Triton kernels as PyTorch operators: torch.library.triton_op + wrap_triton, so that
torch.compile traces into the kernels, with autograd through the fused backward as for the
compiled ops (csrc/autograd.cpp).  The ops take the arguments of
torch.ops.infodrop.information_dropout (same schema, namespace infodrop_triton)."""

import torch
from torch._library.triton import set_wrap_triton_enabled
from torch.library import triton_op, wrap_triton
from torch.utils._python_dispatch import _get_current_dispatch_mode
from triton.runtime.jit import JITFunction

from .._layout import walkable_layout
from .._spec import PRIORS, kl_dtype
from . import kernels

GROUPS = 256  # Philox groups per program: 1024 elements
# channels per program of a channels-last walk: one warp's threads across neighbouring channels
CHANNEL_BLOCK = 32
PRIOR_BLOCK = 1024  # partials summed per step by prior_grads_kernel


def groups_per_program(dtype, backward: bool = False, aligned: bool = True) -> int:
    """GROUPS; twice that in the forward over channels-first samples of whole groups (aligned,
    _Walk.aligned), the main path: its per-program work (the Philox key schedule, the KL's
    reduction) spread over 16 elements per thread instead of 8, 65.2 -> 58.8 instructions per
    element in the float32 forward on sm_90 (the ragged bfloat16 log-normal forward spilled 8
    bytes at that size on sm_80 with triton 3.6); for float64 a half (forward) and a quarter
    (backward).  ptxas's spills differ between targets and triton versions, not monotonically
    with the program size: a 1024-element float64 forward spilled on sm_90; the float64
    log-normal backward spilled 4 bytes at 512 elements on sm_80 with triton 3.6 (torch 2.11's)
    and at 256 on sm_90 with 3.8, none at 128, until its noise moved to the special-function
    unit (device_math.py): then 4 bytes at 128 (channels-last, sm_90, 3.8) and none at 256
    (ptxas -v; tests/test_triton_aot.py keeps every kernel free of spills with both)."""
    if dtype != torch.float64:
        return GROUPS if backward or not aligned else 2 * GROUPS
    return GROUPS // 4 if backward else GROUPS // 2


def _check(x, alpha_logit, seed, mu, sigma, prior):
    if prior not in PRIORS:
        raise ValueError(f"prior must be one of {PRIORS}, got {prior!r}")
    if alpha_logit.shape != x.shape or alpha_logit.dtype != x.dtype:
        raise ValueError("alpha_logit must have the shape and dtype of x")
    if x.dim() == 0:
        raise ValueError("x must have a batch dimension, got a 0-dim tensor")
    if seed.numel() != 1 or seed.dtype != torch.int64:
        raise ValueError("seed must be a one-element int64 tensor")
    for name, t in (("mu", mu), ("sigma", sigma)):
        if t.numel() != 1 or not t.dtype.is_floating_point:
            raise ValueError(f"{name} must be a one-element floating-point tensor")


def _cdiv(a: int, b: int) -> int:
    """ceil(a / b) of ints, on the host: triton.cdiv is a constexpr function, whose call
    unwraps its arguments (a few us of every call's host time)."""
    return -(-a // b)


def _u32_halves(bits: int):
    bits &= (1 << 64) - 1
    return bits & 0xFFFFFFFF, bits >> 32


class _Walk:
    """x as the kernels walk it (itself where infodrop/_layout.py says they can, else a
    contiguous copy), its layout, and the launch sizes: the ints a kernel takes after
    mu_ptr, sigma_ptr, and the number of programs."""

    def __init__(self, x, backward=False):
        layout = walkable_layout(x)
        if layout is None:
            x = x.contiguous()
            layout = walkable_layout(x)
        self.x, self.layout = x, layout
        samples = x.shape[0]
        channels, positions, channels_last = layout
        # a channels-first sample of whole Philox groups (kernels.channels_first_tile)
        self.aligned = not channels_last and channels * positions % 4 == 0
        self.groups = groups = groups_per_program(x.dtype, backward, self.aligned)
        if channels_last:
            # per channel, its S positions touch at most (S + 2) // 4 + 1 groups
            blocks = (_cdiv(channels, CHANNEL_BLOCK)
                      * _cdiv((positions + 2) // 4 + 1, groups // CHANNEL_BLOCK))
        else:
            # +2 groups: a sample can begin and end inside a group
            blocks = _cdiv(positions // 4 + 2, groups)
        self.sizes = (channels * positions, blocks, channels, positions)
        self.programs = samples * blocks

    def like(self, t):
        """t laid out as the walked x: itself where its layout is the same (any strides of its
        size-1 dimensions), else a copy (one pass over t, e.g. an alpha head that returns
        another memory format than x)."""
        # equal strides (sizes are checked equal): the same layout, without walking it
        if t is self.x or t.stride() == self.x.stride() or walkable_layout(t) == self.layout:
            return t
        return torch.empty_like(self.x).copy_(t)

    def output(self, like):
        """(result, work): a tensor laid out as empty_like(like) (the caller's memory format)
        and the buffer the kernel writes, laid out as the walked x: the result itself where
        the two agree, else a scratch that _finish copies into the result."""
        result = torch.empty_like(like)
        same = result.stride() == self.x.stride() or walkable_layout(result) == self.layout
        return result, (result if same else torch.empty_like(self.x))


def _finish(result, work):
    if work is not result:
        result.copy_(work)
    return result


def _launch(kernel, grid, device, *args, **constexprs):
    """Runs a kernel on ``device``.  Through wrap_triton, so that make_fx and torch.compile
    trace it (triton_op turns wrap_triton off in eager calls); not under TRITON_INTERPRET=1,
    where @triton.jit makes interpreter functions that the wrap_triton of some torch versions
    (2.11) refuses.  Triton launches on the current CUDA device and on PyTorch's current stream
    of it (its launcher asks torch for the stream), which is what makes the ops safe under
    torch.cuda.stream and CUDA graph capture (tests/test_cuda_graphs.py); a tensor on another
    GPU would be read by a kernel on the wrong device, hence the guard, entered only when
    needed; the CPU tensors of the interpreter need none."""
    launcher = wrap_triton(kernel) if isinstance(kernel, JITFunction) else kernel
    if device.type == "cuda" and device.index != torch.cuda.current_device():
        with torch.cuda.device(device):
            launcher[grid](*args, **constexprs)
    else:
        launcher[grid](*args, **constexprs)


def _kernel_options(x, walk, prior, max_alpha, alpha_min, mask_inactive, unit_mean,
                    apply_noise):
    return dict(MAX_ALPHA=max_alpha, ALPHA_MIN=alpha_min, FLOAT64=x.dtype == torch.float64,
                LOG_NORMAL=prior == "log_normal", MASK_INACTIVE=mask_inactive,
                UNIT_MEAN=unit_mean, APPLY_NOISE=apply_noise,
                CHANNELS_LAST=walk.layout.channels_last, ALIGNED=walk.aligned,
                GROUPS=walk.groups, CHANNEL_BLOCK=CHANNEL_BLOCK)


def _on(t, device, dtype=None):
    """t on ``device`` (in ``dtype``): itself when it already is, without a dispatched
    no-op .to() on every call."""
    if t.device == device and (dtype is None or t.dtype == dtype):
        return t
    return t.to(device, dtype)


def _device_scalars(x, seed, mu, sigma):
    """seed, mu and sigma where the kernels read them: on x's device, mu and sigma in the
    compute dtype."""
    compute = kl_dtype(x.dtype)
    return _on(seed, x.device), _on(mu, x.device, compute), _on(sigma, x.device, compute)


_NOT_DIFFERENTIABLE = ("infodrop_triton::information_dropout: its gradients are not "
                       "differentiable (no double backward); use backend='reference' for "
                       "higher-order derivatives")


class _NotDifferentiable(torch.autograd.Function):
    """apply(count, *grads, *inputs) -> grads, as outputs whose backward raises.  The node's
    edges lead to the backward's own inputs: the engine runs only nodes on a path to what it is
    asked for, so an error node hung off detached copies of the gradients (DelayedError) let
    torch.autograd.grad(..., allow_unused=True) and gradgradcheck answer None/zeros."""

    @staticmethod
    def forward(ctx, count, *tensors):
        return tensors[:count]  # autograd hands them out as views carrying this node

    @staticmethod
    def backward(ctx, *grads):
        raise RuntimeError(_NOT_DIFFERENTIABLE)


def _not_differentiable(grads, inputs):
    """The gradients, made to raise when differentiated (double backward) wherever they depend
    on something that requires grad, as csrc/autograd.cpp does.  once_differentiable looks at
    the incoming gradients only, not at the saved x, so it would leave them without a grad_fn
    and double backward would fail with an error that does not say why."""
    if not torch.is_grad_enabled() or not any(t.requires_grad for t in inputs):
        return grads
    return _NotDifferentiable.apply(len(grads), *(g.detach() for g in grads), *inputs)


def _setup_context(ctx, inputs, output):
    x, alpha_logit, seed, offset, mu, sigma, *options = inputs
    # The noise is not saved: the backward regenerates it from (seed, offset).
    ctx.save_for_backward(x, alpha_logit, seed, mu, sigma)
    ctx.offset = offset
    ctx.options = options


def _backward_through(backward_op):
    """The autograd backward of the forward op, given what runs its backward op: that op
    (registered autograd, below) or its body (InformationDropoutTriton)."""

    def backward(ctx, grad_z, grad_kl):
        x, alpha_logit, seed, mu, sigma = ctx.saved_tensors
        grad_x, grad_logit, grad_mu, grad_sigma = _not_differentiable(
            backward_op(grad_z, grad_kl, x, alpha_logit, seed, ctx.offset, mu, sigma,
                        *ctx.options),
            (grad_z, grad_kl, x, alpha_logit, mu, sigma))
        return (grad_x, grad_logit, None, None, grad_mu, grad_sigma) + (None,) * len(ctx.options)

    return backward


def _forward(x: torch.Tensor, alpha_logit: torch.Tensor, seed: torch.Tensor,
             offset: int, mu: torch.Tensor, sigma: torch.Tensor, prior: str,
             max_alpha: float, alpha_min: float, mask_inactive: bool, unit_mean: bool,
             apply_noise: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Two kernels: the fused forward, which writes z in x's memory format and one KL partial
    per program, and the sum of each sample's partials."""
    _check(x, alpha_logit, seed, mu, sigma, prior)
    samples = x.shape[0]
    if x.numel() == 0:
        return torch.empty_like(x), torch.zeros(samples, dtype=kl_dtype(x.dtype), device=x.device)
    walk = _Walk(x)
    z, z_work = walk.output(x)
    partials = torch.empty((samples, walk.programs // samples), dtype=kl_dtype(x.dtype),
                           device=x.device)
    seed_d, mu_d, sigma_d = _device_scalars(x, seed, mu, sigma)
    _launch(kernels.forward_kernel, (walk.programs,), x.device,
            walk.x, walk.like(alpha_logit), z_work, partials, seed_d, *_u32_halves(offset),
            mu_d, sigma_d, *walk.sizes,
            **_kernel_options(x, walk, prior, max_alpha, alpha_min, mask_inactive,
                              unit_mean, apply_noise))
    return _finish(z, z_work), partials.sum(1)


def _backward(
        grad_z: torch.Tensor, grad_kl: torch.Tensor, x: torch.Tensor, alpha_logit: torch.Tensor,
        seed: torch.Tensor, offset: int, mu: torch.Tensor, sigma: torch.Tensor, prior: str,
        max_alpha: float, alpha_min: float, mask_inactive: bool, unit_mean: bool,
        apply_noise: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """One kernel with the log-uniform prior (it also writes the zero gradients of mu and
    sigma), two with the log-normal one (the second sums the gradients of mu and sigma)."""
    _check(x, alpha_logit, seed, mu, sigma, prior)
    grad_mu = torch.empty(mu.shape, dtype=mu.dtype, device=x.device)
    grad_sigma = torch.empty(sigma.shape, dtype=sigma.dtype, device=x.device)
    if x.numel() == 0:
        return (torch.empty_like(x), torch.empty_like(alpha_logit), grad_mu.zero_(),
                grad_sigma.zero_())
    walk = _Walk(x, backward=True)
    compute = kl_dtype(x.dtype)
    grad_x, grad_x_work = walk.output(x)
    grad_logit, grad_logit_work = walk.output(alpha_logit)
    log_normal = prior == "log_normal"
    # per program: grad_kl[b] * (sum of d kl / d mu, sum of d kl / d sigma); unused (one
    # element) with the log-uniform prior
    prior_partials = torch.empty((walk.programs if log_normal else 1, 2), dtype=compute,
                                 device=x.device)
    seed_d, mu_d, sigma_d = _device_scalars(x, seed, mu, sigma)
    # grad_kl is read with its stride: the expanded gradient of kl.sum() or kl.mean() (stride
    # 0) needs no copy
    grad_kl = _on(grad_kl, x.device, compute)
    _launch(kernels.backward_kernel, (walk.programs,), x.device,
            walk.like(_on(grad_z, x.device, x.dtype)), grad_kl, grad_kl.stride(0), walk.x,
            walk.like(alpha_logit), grad_x_work, grad_logit_work, prior_partials, grad_mu,
            grad_sigma, seed_d, *_u32_halves(offset), mu_d, sigma_d, *walk.sizes,
            **_kernel_options(x, walk, prior, max_alpha, alpha_min, mask_inactive,
                              unit_mean, apply_noise))
    if log_normal:
        _launch(kernels.prior_grads_kernel, (1,), x.device, prior_partials, walk.programs,
                grad_mu, grad_sigma, BLOCK=PRIOR_BLOCK)
    return _finish(grad_x, grad_x_work), _finish(grad_logit, grad_logit_work), grad_mu, grad_sigma


information_dropout = triton_op("infodrop_triton::information_dropout", mutates_args=())(_forward)
information_dropout_backward = triton_op("infodrop_triton::information_dropout_backward",
                                         mutates_args=())(_backward)
torch.library.register_autograd(
    "infodrop_triton::information_dropout",
    _backward_through(torch.ops.infodrop_triton.information_dropout_backward),
    setup_context=_setup_context)


class InformationDropoutTriton(torch.autograd.Function):
    """The op's forward and backward bodies with the op's autograd, called directly: an eager
    call on plain tensors skips torch.library's custom-op dispatch (Python), which took a third
    of a forward's host time and 40% of a forward + backward's with the kernels stubbed out
    (docs/performance.md), as the cuda path's typed binding skips torch.ops' argument
    conversion.  wrap_triton is off in the bodies, as triton_op turns it off for plain tensors:
    through it each launch would go through a higher-order op.  The context is set up inside
    forward: with a separate setup_context, Function.apply binds its arguments through
    inspect.signature on every call."""

    @staticmethod
    def forward(ctx, *inputs):
        with set_wrap_triton_enabled(False):
            output = _forward(*inputs)
        _setup_context(ctx, inputs, output)
        return output

    @staticmethod
    def backward(ctx, grad_z, grad_kl):
        with set_wrap_triton_enabled(False):
            return _eager_backward(ctx, grad_z, grad_kl)


_eager_backward = _backward_through(_backward)


def fused(x, alpha_logit, seed, offset, mu, sigma, *options, direct=False):
    """infodrop_triton::information_dropout as infodrop.information_dropout calls it; with
    ``direct`` (an eager call on plain tensors: functional._direct_call_allowed) and neither a
    dispatch mode, a torch.func transform nor torch.jit.trace active, which must see the op
    (the tracer records dispatcher ops, not the bodies' kernel launches), through
    InformationDropoutTriton.  Its autograd is registered in Python without a forward-mode
    derivative, where PyTorch would silently give zero tangents: forward-mode AD (and
    torch.func.jvp) raises instead, as for the compiled ops."""
    # dual tensors exist only inside forward_ad.dual_level() (torch.func.jvp's are functorch's,
    # which the op refuses): outside it, no unpack_dual per tensor on every call
    for t in (x, alpha_logit, mu, sigma) if torch.autograd.forward_ad._current_level >= 0 else ():
        if torch.autograd.forward_ad.unpack_dual(t).tangent is not None:
            raise RuntimeError("infodrop_triton::information_dropout: forward-mode AD (jvp) is "
                               "not implemented; use backend='reference' for forward-mode "
                               "derivatives")
    if (direct and _get_current_dispatch_mode() is None
            and torch._C._functorch.peek_interpreter_stack() is None
            and not torch._C._is_tracing()):
        if torch.is_grad_enabled() and any(t.requires_grad for t in (x, alpha_logit, mu, sigma)):
            return InformationDropoutTriton.apply(x, alpha_logit, seed, offset, mu, sigma,
                                                  *options)
        with set_wrap_triton_enabled(False):  # nothing to differentiate: the body alone
            return _forward(x, alpha_logit, seed, offset, mu, sigma, *options)
    return information_dropout(x, alpha_logit, seed, offset, mu, sigma, *options)


@triton_op("infodrop_triton::noise", mutates_args=())
def noise(numel: int, seed: torch.Tensor, offset: int, start: int) -> torch.Tensor:
    """The noise stream (float32) at indices start .. start + numel - 1 on seed's device;
    start is uint64 bits in an int, as in infodrop::noise_."""
    out = torch.empty(numel, dtype=torch.float32, device=seed.device)
    if numel:
        start_bits = start & ((1 << 64) - 1)
        first_group, head = start_bits >> 2, start_bits & 3
        programs = _cdiv(head + numel, 4 * GROUPS)
        _launch(kernels.noise_kernel, (programs,), seed.device, out, numel, first_group, head,
                seed, *_u32_halves(offset), GROUPS=GROUPS)
    return out

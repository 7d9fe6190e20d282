"""The Triton kernels compiled ahead of time for a GPU architecture, without a GPU or driver.

TRITON_INTERPRET=1 runs the kernels' numerics on the CPU but checks nothing that the GPU
compiler checks (which globals a kernel may read, types, layouts, register allocation by
ptxas); compiling for a real target does.  tests/test_triton_aot.py compiles every kernel for
sm_80 and sm_90, benchmarks/gpu_code_stats.py reads the SASS of these compiles, and
infodrop.backends(detail=True) asks kernels_compile_for() about the visible GPU.

The signatures are those of the launches in ops.py: pointers 16-byte aligned (as every
allocation of the caching allocator is; Triton specialises on it and vectorises the loads),
integer arguments i32, or i64 where a value reaches 2**31 (Triton's rule for Python ints).
"""

import dataclasses
import functools

import torch
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

from . import kernels
from .ops import CHANNEL_BLOCK, GROUPS, PRIOR_BLOCK, groups_per_program

DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)
PRIORS = ("log_uniform", "log_normal")
FLAGS = ("MASK_INACTIVE", "UNIT_MEAN", "APPLY_NOISE")
# the layer's defaults (docs/spec.md section 1): the constexpr values of a typical launch
MAX_ALPHA, ALPHA_MIN = 0.7, 1e-3

_TRITON_TYPE = {torch.float32: "fp32", torch.float64: "fp64", torch.float16: "fp16",
                torch.bfloat16: "bf16"}
# the integer arguments of each kernel (all others are pointers or constexprs)
_INTS = {"offset_lo", "offset_hi", "per_sample", "blocks_per_sample", "channels", "positions",
         "grad_kl_stride", "n", "first_group", "head", "programs"}


@dataclasses.dataclass(frozen=True)
class Variant:
    """One compile: a kernel, the dtype of its tensors, its constexprs and integer width."""

    kernel: str  # "forward_kernel", "backward_kernel", "noise_kernel" or "prior_grads_kernel"
    dtype: torch.dtype = torch.float32
    prior: str = "log_uniform"
    flags: tuple = FLAGS  # the flags of FLAGS that are on (the others are off)
    wide: bool = False  # i64 integer arguments (sizes or stream offsets >= 2**31)
    channels_last: bool = False  # the walk of a channels-last sample (infodrop/_layout.py)
    # channels-first samples of whole Philox groups (per_sample % 4 == 0; ops._Walk.aligned)
    aligned: bool = True

    @property
    def label(self) -> str:
        if self.kernel == "noise_kernel":
            return f"noise_kernel {'i64' if self.wide else 'i32'}"
        if self.kernel == "prior_grads_kernel":
            return f"prior_grads_kernel {str(self.dtype).removeprefix('torch.')}"
        flags = "on" if self.flags == FLAGS else "+".join(self.flags) or "off"
        return (f"{self.kernel} {str(self.dtype).removeprefix('torch.')} {self.prior} "
                f"flags={flags}{' channels_last' if self.channels_last else ''}"
                f"{' ragged' if not self.aligned else ''}"
                f"{' i64' if self.wide else ''}")

    def constexprs(self) -> dict:
        if self.kernel == "noise_kernel":
            return {"GROUPS": GROUPS}
        if self.kernel == "prior_grads_kernel":
            return {"BLOCK": PRIOR_BLOCK}
        aligned = self.aligned and not self.channels_last
        groups = groups_per_program(self.dtype, self.kernel == "backward_kernel", aligned)
        return dict(MAX_ALPHA=MAX_ALPHA, ALPHA_MIN=ALPHA_MIN, FLOAT64=self.dtype == torch.float64,
                    LOG_NORMAL=self.prior == "log_normal", GROUPS=groups,
                    CHANNELS_LAST=self.channels_last, CHANNEL_BLOCK=CHANNEL_BLOCK,
                    ALIGNED=aligned,
                    **{flag: flag in self.flags for flag in FLAGS})

    def signature(self) -> dict:
        fn = getattr(kernels, self.kernel)
        tensor = _TRITON_TYPE[self.dtype]
        # the per-sample sums, grad_kl, mu and sigma are in the compute dtype (docs/spec.md section 4)
        compute = "fp64" if self.dtype == torch.float64 else "fp32"
        if self.kernel == "noise_kernel":
            tensor = "fp32"
        pointers = {"seed_ptr": "*i64", "kl_partials_ptr": f"*{compute}",
                    "prior_partials_ptr": f"*{compute}", "grad_kl_ptr": f"*{compute}",
                    "mu_ptr": f"*{compute}", "sigma_ptr": f"*{compute}",
                    "grad_mu_ptr": f"*{compute}", "grad_sigma_ptr": f"*{compute}"}
        integer = "i64" if self.wide else "i32"
        return {name: ("constexpr" if param.is_constexpr else integer if name in _INTS
                       else pointers.get(name, f"*{tensor}"))
                for name, param in zip(fn.arg_names, fn.params)}

    def source(self) -> ASTSource:
        fn = getattr(kernels, self.kernel)
        signature = self.signature()
        aligned = {(i,): [["tt.divisibility", 16]]
                   for i, kind in enumerate(signature.values()) if kind.startswith("*")}
        return ASTSource(fn, signature, self.constexprs(), aligned)


def variants() -> list:
    """Every code path of every kernel at least once, without the full product of the flags:
    per kernel, dtype and prior, the flags all on and all off (each branch of each flag both
    taken and not taken) on channels-first samples of whole groups, and all on on channels-last
    ones and on channels-first ones that end inside a group (ALIGNED off); integer
    arguments i32, and once per kernel and layout i64."""
    out = []
    for kernel in ("forward_kernel", "backward_kernel"):
        for dtype in DTYPES:
            for prior in PRIORS:
                out += [Variant(kernel, dtype, prior, flags) for flags in (FLAGS, ())]
                out.append(Variant(kernel, dtype, prior, channels_last=True))
                out.append(Variant(kernel, dtype, prior, aligned=False))
        out += [Variant(kernel, wide=True), Variant(kernel, wide=True, channels_last=True)]
    out += [Variant("noise_kernel"), Variant("noise_kernel", wide=True)]
    out += [Variant("prior_grads_kernel", dtype) for dtype in (torch.float32, torch.float64)]
    return out


def compile_variant(variant: Variant, capability: int):
    """The compiled kernel (its .asm holds "ptx" and "cubin"; .n_regs, .n_spills and
    .metadata.shared are filled in) for compute capability ``capability`` (e.g. 90)."""
    return triton.compile(variant.source(), target=GPUTarget("cuda", capability, 32))


@functools.cache
def kernels_compile_for(capability: int) -> tuple:
    """(True, "") when the kernels compile for this compute capability (e.g. 90 for
    sm_90), else (False, why).  One float32 variant each: it catches what fails for a whole
    architecture (an unsupported target, a construct its compiler rejects) in a few seconds;
    tests/test_triton_aot.py covers every variant."""
    for variant in (Variant("forward_kernel"), Variant("backward_kernel"), Variant("noise_kernel"),
                    Variant("prior_grads_kernel")):
        try:
            compile_variant(variant, capability)
        except Exception as error:  # noqa: BLE001 (any compiler error is the answer)
            return False, f"{variant.kernel} does not compile for sm_{capability}: {_root(error)}"
    return True, ""


def _root(error: BaseException) -> str:
    """The innermost error's message, on one line: Triton wraps the error of each nested @jit
    function in a CompilationError whose message starts with a source excerpt."""
    while error.__cause__ is not None:
        error = error.__cause__
    message = getattr(error, "error_message", None) or str(error)
    return f"{type(error).__name__}: {' '.join(message.split())}"

"""Counted, not estimated: what the generated code of both GPU backends does per element.

    python -m benchmarks.gpu_code_stats [--arch 90] [--json FILE]

Reads the SASS of infodrop/_C_cuda*.so (the CUDA kernels, as built) and of the Triton kernels
compiled ahead of time (infodrop.triton.aot), no GPU needed, and prints per kernel and dtype:
registers, spills (local memory), shared memory, theoretical occupancy, and the instructions
per element of the main path (log-uniform prior, noise on, whole steps; infodrop/sass.py says
how the path is found) by class, with the issue floor (the busiest pipe or issue) and the MUFU
floor (special-function unit and conversions alone, 16 per SM and clock) in ps per element on
an H100 SXM (132 SMs, 1.98 GHz) or A100 (108 SMs, 1.41 GHz) next to the memory floor.
--predict adds the predicted times of the kernels at ResNet-50's shapes on an H200
(PREDICT below says how), and of the converted ResNet-50 step (RESNET_STEP_MEASURED).
"""

import argparse
import glob
import json
import math
import os
import re
import sys
import tempfile

from benchmarks import sass

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

DTYPES = {"float32": ("IffE", 4, 8), "float64": ("IddE", 8, 4),
          "float16": ("IN3c104HalfEfE", 2, 8), "bfloat16": ("IN3c108BFloat16EfE", 2, 8)}
# (SMs, clock in Hz, copy bandwidth in bytes/s) per compute capability
GPUS = {90: (132, 1.98e9, 3.0e12), 80: (108, 1.41e9, 1.8e12)}
# bytes moved per element: forward x, logit -> z; backward grad_z, x, logit -> grad_x, grad_logit
TENSORS = {"forward": 3, "backward": 5, "noise": 1}


def cuda_library():
    found = sorted(glob.glob(os.path.join(ROOT, "infodrop", "_C_cuda*.so")))
    return found[0] if found else None


def _row(backend, kernel, dtype, registers, local, shared, threads, counts, elements, capability):
    element_bytes = DTYPES[dtype][1] if kernel != "noise" else 4
    per_element = {c: counts[c] / elements for c in sass.CLASSES}
    sms, clock, bandwidth = GPUS[capability]
    issue_ps = sass.cycles_per_sm(per_element, capability) / (sms * clock) * 1e12
    mufu_ps = sass.mufu_cycles_per_sm(per_element, capability) / (sms * clock) * 1e12
    memory_ps = TENSORS[kernel.split()[0]] * element_bytes / bandwidth * 1e12
    bound = "memory" if memory_ps >= issue_ps else "MUFU" if mufu_ps >= issue_ps else "issue"
    return dict(backend=backend, kernel=kernel, dtype=dtype, registers=registers, spill_bytes=local,
                shared=shared, occupancy=sass.occupancy(registers, threads, shared, capability),
                per_element=per_element, total=sum(per_element.values()), issue_ps=issue_ps,
                mufu_ps=mufu_ps, memory_ps=memory_ps, bound=bound)


def cuda_rows(library, capability):
    arch = f"sm_{capability}"
    with tempfile.TemporaryDirectory() as directory:
        cubin = sass.extract_cubins(library, directory)[arch]
        resources = sass.resource_usage(cubin)
        code = sass.disassemble(cubin)
    rows = []
    for name, (instructions, labels) in sorted(code.items()):
        kernel = re.search(r"(forward|backward|noise)_(last_)?kernel", name).group(1)
        # channels-last kernels: the tag ends in the tile's channels W (4 W elements per step)
        # and how its Philox groups are known (kernels.cu's Groups: 0 at run time, 1 aligned,
        # 2 straddling)
        last = re.search(r"_last_kernel(I.*?)Li([12])ELN.*?GroupsE([012])EE", name)
        dtype = next((d for d, (tag, _, _) in DTYPES.items()
                      if (f"{last.group(1)}E" == tag if last else f"_kernel{tag}" in name)), None)
        if kernel == "noise":
            dtype, elements = "float32", 4  # one Philox group per step
        elif last:
            width, groups = int(last.group(2)), int(last.group(3))
            kernel += {1: " cl-single", 2: " cl-pairs"}[width] + (" straddling" if groups == 2 else "")
            elements = 4 * width
        else:
            elements = DTYPES[dtype][2]
        r = resources[name]
        path = sass.main_path(instructions, labels)
        # no PTX in the library to ask ptxas: local memory or a stack frame would hold spills
        rows.append(_row("cuda", kernel, dtype, r.registers, r.local + r.stack, r.shared, 256,
                         path.counts, elements, capability))
    return rows


def triton_rows(capability):
    import torch

    from infodrop.triton import aot

    dtypes = {"float32": torch.float32, "float64": torch.float64, "float16": torch.float16,
              "bfloat16": torch.bfloat16}
    variants = [(k.removesuffix("_kernel"), d, aot.Variant(k, dtypes[d], flags=("APPLY_NOISE",)))
                for k in ("forward_kernel", "backward_kernel") for d in dtypes]
    variants.append(("noise", "float32", aot.Variant("noise_kernel")))
    rows = []
    for kernel, dtype, variant in variants:
        compiled = aot.compile_variant(variant, capability)
        path = sass.write_cubin(compiled.asm["cubin"])
        try:
            (r,) = sass.resource_usage(path).values()
            (instructions, labels), = sass.disassemble(path).values()
        finally:
            os.unlink(path)
        threads = 32 * compiled.metadata.num_warps
        # a program is straight-line code over GROUPS * 4 elements, spread over its threads
        elements = variant.constexprs()["GROUPS"] * 4 / threads
        shared = max(r.shared, compiled.metadata.shared)
        stores, loads, _ = sass.ptxas_spills(compiled.asm["ptx"])
        rows.append(_row("triton", kernel, dtype, r.registers, stores + loads, shared, threads,
                         sass.main_path(instructions, labels).counts, elements, capability))
    return rows


def table(rows, capability):
    head = ("| backend | kernel | dtype | regs | spill B | smem B | occupancy | instr/elem | "
            "FP32 | ALU | IMAD | MUFU | conv | FP64 | mem | other | issue floor | MUFU floor "
            "| memory floor | bound |")
    lines = [f"sm_{capability}; per element, main path; floors in ps per element", "", head,
             "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        e = r["per_element"]
        lines.append(
            f"| {r['backend']} | {r['kernel']} | {r['dtype']} | {r['registers']} | "
            f"{r['spill_bytes']} | {r['shared']} | {r['occupancy']:.0%} | {r['total']:.1f} | "
            + " | ".join(f"{e[c]:.1f}" for c in sass.CLASSES)
            + f" | {r['issue_ps']:.2f} | {r['mufu_ps']:.2f} | {r['memory_ps']:.2f} | {r['bound']} |")
    return "\n".join(lines)


# How --predict turns the sm_90 floors into times on an H200 (132 SMs at 1.98 GHz, as the
# H100 rows assume), calibrated on the first H200 measurements (the session's
# shared/docs/gpu-measurements-h200.md, 2026-12-04; docs/performance.md quotes them):
# - memory: the copy bandwidth measured there, 3.9 TB/s, at the 85% of it that F.dropout
#   reached (73-91%);
# - issue: the kernels reached 0.69 of their counted issue floor there (bf16 forward at
#   128x512x28x28: floor 198 us, measured 290 us; fp32: 206 us, 293 us), the "1.5x optimistic"
#   of the first prediction, which took the floor as the time;
# - plus 3 us per kernel call (its tail and the small kernel that sums the per-block partials).
PREDICT = dict(bandwidth=3.9e12, memory_efficiency=0.85, issue_efficiency=0.69, tail_us=3.0)
# ResNet-50's layers at batch 128 (layer1-4 outputs' shapes): the measured ones of the H200 doc
RESNET_SHAPES = [((128, 256, 56, 56), "bfloat16"), ((128, 512, 28, 28), "bfloat16"),
                 ((128, 1024, 14, 14), "bfloat16"), ((128, 512, 28, 28), "float32")]


# The converted ResNet-50 step measured on the H200 (2026-12-04, as docs/performance.md's
# "channels_last in place (CUDA, issue 18)" quotes it; batch 128, bf16 autocast, channels_last,
# 1x1 alpha heads on layer2-4), ms per step: plain; converted; what the converted step's
# transposing copies took (aten::copy_, less the dropout model's), which issue 18 removed; and
# its fused kernels then (forward + backward, on the contiguous copies), which the channels-last
# kernels predicted here replace.
RESNET_STEP_MEASURED = dict(plain=29.7, converted=36.4, copies=4.25, kernels=1.13)
# The plain step under torch.compile(model) (inductor), measured in the same run, ms: the
# compiled converted step has never run; it is predicted from the eager one (resnet_step).
RESNET_COMPILED_PLAIN_MS = 25.8
# The inputs of layer2-4 (layer1-3's outputs), which the alpha heads read: eager autograd adds
# each head's data gradient to the block's own in one more pass (reading two of these tensors,
# writing one), which inductor fuses into the ReLU backward that reads the block's gradient
# anyway, leaving one more read (2 of those 6 bytes per element in bfloat16).
RESNET_HEAD_INPUTS = [(128, 256, 56, 56), (128, 512, 28, 28), (128, 1024, 14, 14)]
RESNET_STEP_TARGET = 1.06  # issue 19: the converted step at most 1.06x the plain one
# Where the converted step runs Information Dropout: the outputs of layer2-4, bfloat16
RESNET_TARGETS = [("layer2", (128, 512, 28, 28)), ("layer3", (128, 1024, 14, 14)),
                  ("layer4", (128, 2048, 7, 7))]


def channels_last_kernel(shape, element_bytes=2):
    """The CUDA kernel that walks a channels_last (B, C, ...) tensor in place, as csrc/cuda/
    walker.h's last_shape picks it for a fresh tensor (its pointers aligned): pairs of channels
    where C is even and the type has at most 4 bytes, their Philox groups straddling where the
    positions per channel are not a multiple of 4; one channel per tile otherwise."""
    if element_bytes > 4 or shape[1] % 2:
        return "cl-single"
    return "cl-pairs" if math.prod(shape[2:]) % 4 == 0 else "cl-pairs straddling"


def resnet_step(rows):
    """The converted ResNet-50 step predicted from the CUDA rows: the measured step without its
    copies and its kernels of then, plus the channels-last kernels' predicted time (PREDICT)."""
    kernels = {(r["kernel"], r["dtype"]): r for r in rows if r["backend"] == "cuda"}
    lines = ["The converted ResNet-50 step predicted on an H200 (CUDA kernels, bfloat16, "
             "channels_last in place; RESNET_STEP_MEASURED), us per step", "",
             "| layer | shape | kernel | contiguous fwd + bwd | channels_last fwd + bwd |",
             "|---|---|---|---|---|"]
    contiguous = walked = 0.0
    for name, shape in RESNET_TARGETS:
        kind = channels_last_kernel(shape)
        numel = math.prod(shape)
        c = sum(predicted_us(kernels[(k, "bfloat16")], numel) for k in ("forward", "backward"))
        w = sum(predicted_us(kernels[(f"{k} {kind}", "bfloat16")], numel)
                for k in ("forward", "backward"))
        contiguous, walked = contiguous + c, walked + w
        lines.append(f"| {name} | {'x'.join(map(str, shape))} | {kind} | {c:.0f} | {w:.0f} |")
    lines.append(f"| all | | | {contiguous:.0f} | {walked:.0f} ({walked / contiguous - 1:+.1%}) |")
    m = RESNET_STEP_MEASURED
    # the heads' bias, which the kernels now add as they read the logits (their counts above
    # include it), was a pass of its own then: read and write each logit (2 + 2 bytes)
    bias_pass = _pass_ms(4, [shape for _, shape in RESNET_TARGETS])
    step = m["converted"] - m["copies"] - m["kernels"] - bias_pass + walked / 1000
    lines += ["", f"Step: {m['converted']} ms measured - {m['copies']} (copies) - {m['kernels']} "
              f"(kernels then) - {bias_pass:.3f} (the heads' bias pass, now in the kernels) + "
              f"{walked / 1000:.3f} (channels_last kernels predicted) = "
              f"{step:.2f} ms, {step / m['plain']:.4f}x plain ({m['plain']} ms; issue 19: at most "
              f"{RESNET_STEP_TARGET}x, {RESNET_STEP_TARGET * m['plain']:.2f} ms)"]
    # compiled: what the eager step adds to plain, less the heads' gradient accumulation that
    # inductor fuses, on the compiled plain step
    added = step - m["plain"]
    fused = _pass_ms(4, RESNET_HEAD_INPUTS)
    compiled = RESNET_COMPILED_PLAIN_MS + added - fused
    lines += ["", f"Under torch.compile(model): {RESNET_COMPILED_PLAIN_MS} ms (plain, measured) + "
              f"{added:.3f} (what the eager step adds) - {fused:.3f} (the heads' data-gradient "
              f"accumulation, fused by inductor into the ReLU backward: 4 of its 6 bytes per "
              f"element of layer2-4's inputs) = {compiled:.2f} ms, "
              f"{compiled / RESNET_COMPILED_PLAIN_MS:.4f}x plain (issue 19: at most "
              f"{RESNET_STEP_TARGET}x, {RESNET_STEP_TARGET * RESNET_COMPILED_PLAIN_MS:.2f} ms)"]
    return "\n".join(lines)


def _pass_ms(bytes_per_element, shapes):
    """ms of a memory-bound pass moving ``bytes_per_element`` over tensors of ``shapes``
    (PREDICT's bandwidth and efficiency)."""
    total = bytes_per_element * sum(map(math.prod, shapes))
    return total / (PREDICT["bandwidth"] * PREDICT["memory_efficiency"]) * 1e3


def predicted_us(row, numel):
    """The predicted time of one call of the kernel of `row` on `numel` elements (PREDICT)."""
    memory = row["memory_ps"] * 3.0e12 / PREDICT["bandwidth"] / PREDICT["memory_efficiency"]
    compute = row["issue_ps"] / PREDICT["issue_efficiency"]
    return max(memory, compute) * numel * 1e-6 + PREDICT["tail_us"]


def predictions(rows):
    lines = []
    for backend in ("cuda", "triton"):
        kernels = {(r["kernel"], r["dtype"]): r for r in rows if r["backend"] == backend}
        if not kernels:
            continue
        # the Triton kernels under the CUDA kernels' calibration: no Triton run calibrates it yet
        lines += [f"{dict(cuda='CUDA', triton='Triton')[backend]} kernels predicted on an H200 "
                  "(PREDICT), us per call", "",
                  "| shape | dtype | forward | backward | forward + backward |",
                  "|---|---|---|---|---|"]
        for shape, dtype in RESNET_SHAPES:
            numel = math.prod(shape)
            fwd = predicted_us(kernels[("forward", dtype)], numel)
            bwd = predicted_us(kernels[("backward", dtype)], numel)
            lines.append(f"| {'x'.join(map(str, shape))} | {dtype} | {fwd:.0f} | {bwd:.0f} | "
                         f"{fwd + bwd:.0f} |")
        lines.append("")
        if backend == "cuda":
            lines += [resnet_step(rows), ""]
    return "\n".join(lines).rstrip()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", type=int, default=90, choices=sorted(GPUS))
    parser.add_argument("--json", help="also write the rows to this file")
    parser.add_argument("--predict", action="store_true",
                        help="also print the kernels' predicted times at ResNet-50's shapes")
    parser.add_argument("--cuda-only", action="store_true", help="leave the Triton rows out")
    args = parser.parse_args(argv)
    rows = []
    library = cuda_library()
    if library is None:
        print("infodrop/_C_cuda*.so not built: CUDA rows left out", file=sys.stderr)
    else:
        rows += cuda_rows(library, args.arch)
    if not args.cuda_only:
        rows += triton_rows(args.arch)
    print(table(rows, args.arch))
    if args.predict:
        print()
        print(predictions(rows))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()

"""The generated code of the GPU backends, read without a GPU (infodrop/sass.py): the CUDA
kernels, as built into infodrop/_C_cuda, keep everything in registers (no local memory, no
stack: a spill would add memory traffic the floors in docs/performance.md do not count), and the
counting tool's main path is the one it says (whole vector steps with the noise on).  The
Triton kernels' spills are checked with every compile in tests/test_triton_aot.py."""

import glob
import os
import pathlib
import re

import pytest
import torch
from torch.utils import cpp_extension

from benchmarks import gpu_code_stats, sass
from infodrop import _cuda_archs

ROOT = pathlib.Path(__file__).resolve().parents[1]
LIBRARIES = sorted(glob.glob(str(ROOT / "infodrop" / "_C_cuda*.so")))

needs_library = pytest.mark.skipif(
    not LIBRARIES, reason="infodrop/_C_cuda was not built (no nvcc or INFODROP_CUDA=0)")


def _tools_or_skip():
    try:
        sass.tool("cuobjdump"), sass.tool("nvdisasm")
    except FileNotFoundError as error:
        pytest.skip(str(error))


@pytest.fixture(scope="module")
def cubins(tmp_path_factory):
    _tools_or_skip()
    return sass.extract_cubins(LIBRARIES[0], str(tmp_path_factory.mktemp("cubins")))


def _archs_the_build_targets(monkeypatch):
    """The sm_XX of the nvcc flags the installed torch makes for setup.py's build here: from
    TORCH_CUDA_ARCH_LIST, else setup.py's default where no GPU shows, else the GPUs shown (the
    GPU machine's build targeted its own sm_90 alone, not the default's sm_80 and sm_90)."""
    if not torch.cuda.is_available() and not os.environ.get("TORCH_CUDA_ARCH_LIST"):
        monkeypatch.setenv("TORCH_CUDA_ARCH_LIST", _cuda_archs.WITHOUT_A_GPU)
    return {"sm_" + arch for arch in
            re.findall(r"code=sm_(\w+)", " ".join(cpp_extension._get_cuda_arch_flags()))}


def test_the_archs_a_build_targets_follow_the_machine(monkeypatch):
    monkeypatch.delenv("TORCH_CUDA_ARCH_LIST", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert _archs_the_build_targets(monkeypatch) == {"sm_80", "sm_90"}  # setup.py's default
    monkeypatch.setenv("TORCH_CUDA_ARCH_LIST", "9.0+PTX")  # as a user may set it
    assert _archs_the_build_targets(monkeypatch) == {"sm_90"}
    # the first GPU run's machine: one H200 shown, no list set
    monkeypatch.delenv("TORCH_CUDA_ARCH_LIST")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda i=None: (9, 0))
    monkeypatch.setattr(torch.cuda, "get_arch_list", lambda: ["sm_80", "sm_90", "sm_100"])
    assert _archs_the_build_targets(monkeypatch) == {"sm_90"}


@needs_library
def test_cuda_kernels_are_built_for_the_archs_torch_targets_without_spills(cubins, monkeypatch):
    assert set(cubins) == _archs_the_build_targets(monkeypatch)
    for arch, cubin in cubins.items():
        resources = sass.resource_usage(cubin)
        # fwd and bwd x 4 dtypes, noise; channels_last: fwd and bwd x (4 dtypes single-channel,
        # 3 dtypes x pairs on aligned or straddling Philox groups)
        assert len(resources) == 9 + 20, resources.keys()
        for name, r in resources.items():
            assert (r.local, r.stack) == (0, 0), (arch, name, r)


@needs_library
def test_main_path_of_the_float32_forward_is_a_whole_step_with_noise(cubins):
    if "sm_90" not in cubins:
        pytest.skip(f"its counts are of sm_90 code; built for {sorted(cubins)}")
    (instructions, labels), = [code for name, code in sass.disassemble(cubins["sm_90"]).items()
                               if "forward_kernelIffE" in name]
    path = sass.main_path(instructions, labels)
    assert path.loop
    # two 16-byte loads each of x and alpha_logit and two 16-byte stores of z: a whole step
    # of 8 floats
    assert path.opcodes["LDG.E.128.CONSTANT"] + path.opcodes["LDG.E.128"] == 4
    assert path.opcodes["STG.E.128"] == 2
    # Philox4x32-10 of the step's two groups: 2 multiplies per round
    assert path.opcodes["IMAD.WIDE.U32"] + path.opcodes["IMAD.HI.U32"] >= 40
    # the log-uniform prior: Box-Muller's log for each of the 4 pairs and the KL's one log of
    # the step's product (elementwise.h minus_log_of_product), not one per element
    assert path.opcodes["MUFU.LG2"] == 4 + 1
    assert sum(path.counts.values()) == sum(path.opcodes.values())


@needs_library
@pytest.mark.parametrize("width, known, groups, pairs", [(2, 1, 2, 4), (2, 2, 4, 6), (1, 0, 2, 3)],
                         ids=["pairs", "pairs-straddling", "single"])
def test_main_path_of_the_channels_last_bfloat16_forward(cubins, width, known, groups, pairs):
    """The channels_last tile: 4 positions x `width` channels, each position's channels one
    access (32 bits for a pair, 16 for one channel) of x and alpha_logit (8 loads) and z (4
    stores), and the logit_bias of its channels (one float load each: the main path is the one
    with the bias, whose branch is taken where an alpha head's bias is fused); the noise of the
    logical index: one Philox group per channel where the channels start groups, else the two
    groups a channel's 4 elements straddle (the main path of the single-channel kernel, which
    decides at run time, is the one with the most Philox work), of which a straddling channel
    takes three Box-Muller pairs (elementwise.h noise_of_four)."""
    tag = f"forward_last_kernelIN3c108BFloat16EfLi{width}ELN"
    suffix = f"GroupsE{known}EE"
    (instructions, labels), = [code for name, code in sass.disassemble(cubins["sm_90"]).items()
                               if tag in name and suffix in name]
    path = sass.main_path(instructions, labels)
    assert path.loop
    access = "" if width == 2 else ".U16"
    loads = {op: n for op, n in path.opcodes.items() if op.startswith("LDG")}
    assert sum(loads.values()) == 8 + width
    assert loads.get(f"LDG.E{access}.CONSTANT", 0) + loads.get(f"LDG.E{access}", 0) == 8 + (width == 2) * 2
    assert path.opcodes[f"STG.E{access}"] == 4
    # Philox4x32-10: 2 multiplies per round, per group
    assert path.opcodes["IMAD.WIDE.U32"] + path.opcodes["IMAD.HI.U32"] >= 20 * groups
    # Box-Muller's log per pair drawn (two per aligned group, three per straddling channel),
    # and one log of the tile's KL product
    assert path.opcodes["MUFU.LG2"] == pairs + 1


def test_main_path_skips_slow_paths_and_ragged_steps_and_keeps_the_noise():
    """A hand-written loop body: a noise branch (Philox multiply or not), a call to a slow path
    placed shorter than its fast path, and a ragged (predicated) or whole (vector) store."""
    I = sass.Instruction  # noqa: E741
    listing = [
        I(0x00, "S2R", False),
        # loop head: noise on or off
        I(0x10, "ISETP.NE.AND", False), I(0x20, "BRA", True, ".L_x_1"),
        I(0x30, "IMAD.WIDE.U32", False), I(0x40, "LOP3.LUT", False),
        # .L_x_1: IEEE division, fast path or a call of its slow path
        I(0x50, "FCHK", False), I(0x60, "BRA", True, ".L_x_2"),
        I(0x70, "CALL.REL.NOINC", False), I(0x80, "BRA", False, ".L_x_3"),
        I(0x90, "FFMA", False), I(0xa0, "FFMA", False), I(0xb0, "FFMA", False),
        # .L_x_3: whole step (one vector store) or ragged (predicated stores)
        I(0xc0, "ISETP.GE.AND", False), I(0xd0, "BRA", True, ".L_x_4"),
        I(0xe0, "STG.E", True), I(0xf0, "STG.E", True), I(0x100, "BRA", False, ".L_x_5"),
        I(0x110, "STG.E.128", False),
        # .L_x_5: back to the loop head
        I(0x120, "BRA", True, ".L_x_0"), I(0x130, "EXIT", False),
    ]
    labels = {".L_x_0": 1, ".L_x_1": 5, ".L_x_2": 9, ".L_x_3": 12, ".L_x_4": 17, ".L_x_5": 18}
    path = sass.main_path(listing, labels)
    assert path.loop
    assert path.opcodes["IMAD.WIDE.U32"] == 1 and path.opcodes["FFMA"] == 3
    assert path.opcodes["STG.E.128"] == 1
    assert "CALL.REL.NOINC" not in path.opcodes and "STG.E" not in path.opcodes
    assert "S2R" not in path.opcodes and "EXIT" not in path.opcodes  # outside the loop


def test_main_path_follows_a_loop_exit_written_as_a_call():
    """sm_80 code leaves the step loop by `@P0 CALL.REL.NOINC` to a label of the kernel (sm_90
    by `@P0 BRA`): that is an edge out of the loop, else the loop over samples around it (with
    its partial-sum store) looks like the smallest loop that stores, and is counted instead."""
    I = sass.Instruction  # noqa: E741
    listing = [
        I(0x00, "S2R", False),
        # .L_x_0: a sample; no steps for this thread: straight to its partial sum
        I(0x10, "ISETP.GE.AND", False), I(0x20, "BRA", True, ".L_x_2"),
        # .L_x_1: a step (noise on or off, a whole store), then leave the loop or take the
        # next step; more blocks than the sample loop has without the exit's edge
        I(0x30, "ISETP.NE.AND", False), I(0x40, "BRA", True, ".L_x_3"),
        I(0x50, "IMAD.WIDE.U32", False),
        I(0x60, "STG.E.128", False), I(0x70, "ISETP.GE.AND", False),
        I(0x80, "CALL.REL.NOINC", True, ".L_x_2"),
        I(0x90, "BRA", False, ".L_x_1"),
        # .L_x_2: the sample's partial sum, then the next sample
        I(0xa0, "BSYNC", False), I(0xb0, "STG.E", True), I(0xc0, "BRA", True, ".L_x_0"),
        I(0xd0, "EXIT", False),
    ]
    labels = {".L_x_0": 1, ".L_x_1": 3, ".L_x_3": 6, ".L_x_2": 10}
    path = sass.main_path(listing, labels)
    assert path.loop
    assert path.opcodes["IMAD.WIDE.U32"] == 1 and path.opcodes["STG.E.128"] == 1
    assert "STG.E" not in path.opcodes and "BSYNC" not in path.opcodes


@needs_library
def test_sm_80_counts_come_from_the_step_loop(cubins):
    """The float32 forward's main path on sm_80: a whole step with its two Philox groups and
    two 16-byte stores, as on sm_90 (the loop exit above made it 16 instructions per element,
    the sample loop's)."""
    if "sm_80" not in cubins:
        pytest.skip(f"built for {sorted(cubins)}")
    (instructions, labels), = [code for name, code in sass.disassemble(cubins["sm_80"]).items()
                               if "forward_kernelIffE" in name]
    path = sass.main_path(instructions, labels)
    assert path.opcodes["STG.E.128"] == 2
    assert path.opcodes["IMAD.WIDE.U32"] + path.opcodes["IMAD.HI.U32"] >= 40


# Issue 19's targets, instructions per element of the main path counted on sm_90.
TARGETS = {"forward": 50, "backward": 75}


def _target_cases():
    for kernel in TARGETS:
        for dtype in ("float32", "float16", "bfloat16"):
            yield pytest.param(kernel, dtype, id=f"{kernel}-{dtype}")


@needs_library
@pytest.mark.parametrize("kernel,dtype", list(_target_cases()))
def test_cuda_kernels_meet_the_instruction_targets_on_sm_90(cubins, kernel, dtype):
    tag, _, elements = gpu_code_stats.DTYPES[dtype]
    (instructions, labels), = [code for name, code in sass.disassemble(cubins["sm_90"]).items()
                               if f"{kernel}_kernel{tag}" in name]
    path = sass.main_path(instructions, labels)
    assert path.opcodes["STG.E.128"] >= 1  # the whole step with noise, not a ragged one
    assert path.total / elements <= TARGETS[kernel]


def test_mufu_floor_is_the_special_function_unit_alone():
    counts = dict.fromkeys(sass.CLASSES, 0.0)
    counts.update(fp32=20.0, alu=20.0, mufu=6.0, conv=0.5)
    # 46.5 instructions issue in 46.5 / 128 clocks; 6.5 on the 16-wide unit take 6.5 / 16
    assert sass.mufu_cycles_per_sm(counts, 90) == pytest.approx(6.5 / 16)
    assert sass.cycles_per_sm(counts, 90) == pytest.approx(6.5 / 16)
    counts["fp32"] = 60.0
    assert sass.cycles_per_sm(counts, 90) == pytest.approx(86.5 / 128)
    assert sass.mufu_cycles_per_sm(counts, 90) == pytest.approx(6.5 / 16)


def test_channels_last_kernel_is_the_walkers_choice():
    """walker.h's last_shape: pairs where C is even and the type has at most 4 bytes, their
    Philox groups straddling where S % 4 != 0 (ResNet-50's layer4: 7 x 7)."""
    pick = gpu_code_stats.channels_last_kernel
    assert pick((128, 512, 28, 28)) == pick((128, 1024, 14, 14)) == "cl-pairs"
    assert pick((128, 2048, 7, 7)) == "cl-pairs straddling"
    assert pick((8, 3, 4, 4)) == pick((8, 4, 4, 4), element_bytes=8) == "cl-single"


def test_resnet_step_prediction_adds_the_channels_last_kernels_to_the_measured_step():
    """The step predicted from the rows it is given: a change in one kernel's count moves it."""
    def rows(straddling_issue_ps):
        out = []
        for kernel in ("forward", "backward"):
            for kind, issue in (("", 1.0), (" cl-pairs", 2.0),
                                (" cl-pairs straddling", straddling_issue_ps)):
                out.append(dict(backend="cuda", kernel=kernel + kind, dtype="bfloat16",
                                issue_ps=issue, memory_ps=0.0))
        return out

    def step_ms(text):
        return float(re.search(r"= ([0-9.]+) ms, ([0-9.]+)x plain", text).group(1))

    slow, fast = (gpu_code_stats.resnet_step(rows(ps)) for ps in (10.0, 2.0))
    # per layer and pass: issue_ps / 0.69 per element plus 3 us (PREDICT); layer4 has 12.8M
    layer4 = 128 * 2048 * 49
    moved = 2 * (10.0 - 2.0) / gpu_code_stats.PREDICT["issue_efficiency"] * layer4 * 1e-6
    assert step_ms(slow) - step_ms(fast) == pytest.approx(moved / 1000, abs=0.006)
    m = gpu_code_stats.RESNET_STEP_MEASURED
    walked = sum(2 * (2.0 / 0.69 * 128 * n * 1e-6 + 3.0)
                 for n in (512 * 784, 1024 * 196, 2048 * 49))
    # the heads' bias pass of the measured step, which the kernels now do: 4 bytes per logit
    bias_ms = 4 * 128 * (512 * 784 + 1024 * 196 + 2048 * 49) / (3.9e12 * 0.85) * 1e3
    assert bias_ms == pytest.approx(0.108, abs=0.001)
    assert step_ms(fast) == pytest.approx(m["converted"] - m["copies"] - m["kernels"] - bias_ms
                                          + walked / 1000, abs=0.006)
    assert "| layer4 | 128x2048x7x7 | cl-pairs straddling |" in slow
    # under torch.compile: what the eager step adds to plain, on the compiled plain step, less
    # the heads' gradient accumulation (4 bytes per element of layer2-4's inputs, 180 million)
    compiled = float(re.search(r"= ([0-9.]+) ms, [0-9.]+x plain \(issue 19: at most",
                               fast).group(1))
    accumulation_ms = 4 * 128 * (256 * 56 * 56 + 512 * 28 * 28 + 1024 * 14 * 14) / (3.9e12 * 0.85) * 1e3
    assert accumulation_ms == pytest.approx(0.217, abs=0.001)
    assert compiled == pytest.approx(gpu_code_stats.RESNET_COMPILED_PLAIN_MS + step_ms(fast)
                                     - m["plain"] - accumulation_ms, abs=0.006)

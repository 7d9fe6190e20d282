"""The generated code of the GPU backends, read without a GPU (infodrop/sass.py): the CUDA
kernels, as built into infodrop/_C_cuda, keep everything in registers (no local memory, no
stack: a spill would add memory traffic the floors in docs/performance.md do not count), and the
counting tool's main path is the one it says (whole vector steps with the noise on).  The
Triton kernels' spills are checked with every compile in tests/test_triton_aot.py."""

import glob
import pathlib

import pytest

from benchmarks import sass

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


@needs_library
def test_cuda_kernels_are_built_for_sm_80_and_sm_90_without_spills(cubins):
    assert {"sm_80", "sm_90"} <= set(cubins)
    for arch, cubin in cubins.items():
        resources = sass.resource_usage(cubin)
        # fwd and bwd x 4 dtypes, noise; channels_last: fwd and bwd x (4 dtypes single-channel,
        # 3 dtypes x pairs on aligned or straddling Philox groups)
        assert len(resources) == 9 + 20, resources.keys()
        for name, r in resources.items():
            assert (r.local, r.stack) == (0, 0), (arch, name, r)


@needs_library
def test_main_path_of_the_float32_forward_is_a_whole_step_with_noise(cubins):
    (instructions, labels), = [code for name, code in sass.disassemble(cubins["sm_90"]).items()
                               if "forward_kernelIffE" in name]
    path = sass.main_path(instructions, labels)
    assert path.loop
    # one 16-byte load each of x and alpha_logit and one 16-byte store of z: a whole step
    assert path.opcodes["LDG.E.128.CONSTANT"] + path.opcodes["LDG.E.128"] == 2
    assert path.opcodes["STG.E.128"] == 1
    # Philox4x32-10 of the step's group: 2 multiplies per round
    assert path.opcodes["IMAD.WIDE.U32"] + path.opcodes["IMAD.HI.U32"] >= 20
    assert sum(path.counts.values()) == sum(path.opcodes.values())


@needs_library
@pytest.mark.parametrize("width, known, groups", [(2, 1, 2), (2, 2, 4), (1, 0, 2)],
                         ids=["pairs", "pairs-straddling", "single"])
def test_main_path_of_the_channels_last_bfloat16_forward(cubins, width, known, groups):
    """The channels_last tile: 4 positions x `width` channels, each position's channels one
    access (32 bits for a pair, 16 for one channel) of x and alpha_logit (8 loads) and z (4
    stores); the noise of the logical index: one Philox group per channel where the channels
    start groups, else the two groups a channel's 4 elements straddle (the main path of the
    single-channel kernel, which decides at run time, is the one with the most Philox work)."""
    tag = f"forward_last_kernelIN3c108BFloat16EfLi{width}ELN"
    suffix = f"GroupsE{known}EE"
    (instructions, labels), = [code for name, code in sass.disassemble(cubins["sm_90"]).items()
                               if tag in name and suffix in name]
    path = sass.main_path(instructions, labels)
    assert path.loop
    access = "" if width == 2 else ".U16"
    assert path.opcodes[f"LDG.E{access}.CONSTANT"] + path.opcodes[f"LDG.E{access}"] == 8
    assert path.opcodes[f"STG.E{access}"] == 4
    # Philox4x32-10: 2 multiplies per round, per group
    assert path.opcodes["IMAD.WIDE.U32"] + path.opcodes["IMAD.HI.U32"] >= 20 * groups


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

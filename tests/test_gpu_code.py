"""The generated code of the GPU backends, read without a GPU (infodrop/sass.py): the CUDA
kernels, as built into infodrop/_C_cuda, keep everything in registers (no local memory, no
stack: a spill would add memory traffic the floors in docs/performance.md do not count), and the
counting tool's main path is the one it says (whole vector steps with the noise on).  The
Triton kernels' spills are checked with every compile in tests/test_triton_aot.py."""

import glob
import os
import pathlib

import pytest

from infodrop import sass

ROOT = pathlib.Path(__file__).resolve().parents[1]
LIBRARIES = sorted(glob.glob(str(ROOT / "infodrop" / "_C_cuda*.so")))

pytestmark = pytest.mark.skipif(
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


def test_cuda_kernels_are_built_for_sm_80_and_sm_90_without_spills(cubins):
    assert {"sm_80", "sm_90"} <= set(cubins)
    for arch, cubin in cubins.items():
        resources = sass.resource_usage(cubin)
        assert len(resources) == 9, resources.keys()  # fwd and bwd x 4 dtypes, noise
        for name, r in resources.items():
            assert (r.local, r.stack) == (0, 0), (arch, name, r)


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

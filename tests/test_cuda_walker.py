"""The CUDA kernels' walk over memory (csrc/cuda/walker.h) on the CPU: tests/cuda_walker_harness.cpp,
built with the host compiler, enumerates every (block, thread, step) of a launch and checks that
every element is read and written exactly once, by its own sample, and summed once into that
sample's partial; for the noise kernel that every output is written once with its own
stream index; and for the channels_last kernels that the in-place walk gives every element the
logical index (hence the noise) the contiguous walk gives it.  No GPU has run kernels.cu: this
is what says it touches the right memory."""

import pathlib
import shutil
import subprocess

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
HARNESS = ROOT / "tests" / "cuda_walker_harness.cpp"
WALKER = ROOT / "csrc" / "cuda" / "walker.h"
CXX = shutil.which("g++") or shutil.which("c++")

pytestmark = pytest.mark.skipif(CXX is None, reason="no C++ compiler (g++) to build the harness")

# The step widths: 4 elements for 8- and 4-byte types, 8 for 2-byte types.
ELEMENT_BYTES = (8, 4, 2)
# (samples, per_sample): one-element samples, samples shorter than a step, ragged lengths
# whose steps straddle two samples, lengths that are multiples of a step, and empty samples
SHAPES = [(1, 1), (5, 1), (3, 3), (2, 7), (7, 13), (4, 8), (3, 1030), (6, 0), (1, 2049)]


def _step_launches():
    launches = []
    for element_bytes in ELEMENT_BYTES:
        for aligned in (1, 0):
            for samples, per_sample in SHAPES:
                launches.append(f"steps {samples} {per_sample} {element_bytes} {aligned} 1056 65535")
            # many blocks per sample, each thread taking several steps (grid-stride loop)
            launches.append(f"steps 2 100001 {element_bytes} {aligned} 6 65535")
            # more samples than grid rows (a 5-row grid): the loop over samples, and a row
            # taking samples of different first steps
            launches.append(f"steps 23 9 {element_bytes} {aligned} 1056 5")
            launches.append(f"steps 11 1031 {element_bytes} {aligned} 16 4")
    return launches


# (n, start): heads and tails inside a group, starts beyond 2**32 groups, many blocks
NOISE = [(1, 0), (1, 3), (3, 2), (4, 4), (5, 7), (1000, 1), (1000, 8), (65539, 4 * 2**33 + 2),
         (200003, 12)]


def _noise_launches():
    # aligned only where start % 4 == 0 (ops_cuda.cpp decides it so)
    return [f"noise {n} {start} {aligned} {resident}" for n, start in NOISE
            for aligned in ({0, int(start % 4 == 0)}) for resident in (1, 3, 1056)]


# Channels-last launches (samples, channels, positions): odd C, S % 4 != 0 (W = 5, 7: rows not
# a multiple of 4), one channel, one position, ResNet-50's layer4 (2048 x 7 x 7), C even with S %
# 4 == 0 (pairs), more channel groups than threads in the grid (the cursor's wrap)
LAST_SHAPES = [(2, 3, 35), (3, 4, 6), (2, 6, 12), (4, 2, 4), (1, 1, 1), (3, 1, 7), (2, 5, 1),
               (5, 16, 16), (2, 7, 20), (3, 64, 49), (2, 2048, 49), (2, 10, 28)]


def _last_launches():
    launches = []
    for element_bytes in ELEMENT_BYTES:
        for pairs_aligned in (1, 0):
            for samples, channels, positions in LAST_SHAPES:
                launches.append(f"last {samples} {channels} {positions} {element_bytes} "
                                f"{pairs_aligned} 1056 65535")
            # several blocks per sample whose grid stride is below the channel groups (stride
            # 768 tiles, 1025 groups), and more samples than grid rows
            launches.append(f"last 1 2050 8 {element_bytes} {pairs_aligned} 3 65535")
            launches.append(f"last 1 2051 9 {element_bytes} {pairs_aligned} 2 65535")
            launches.append(f"last 23 6 20 {element_bytes} {pairs_aligned} 1056 5")
            launches.append(f"last 11 9 13 {element_bytes} {pairs_aligned} 16 4")
    return launches


# noise_of_four from every residue of i0, across group boundaries, with a group's high word
# set (i0 >= 2^34) and a 64-bit offset
FOUR_LAUNCHES = ["four 1 0 0 64", "four 12345678901 3 17179869180 9",
                 "four 18446744073709551615 4294967297 1000 33"]


def _build(directory: pathlib.Path, walker_dir: pathlib.Path) -> pathlib.Path:
    binary = directory / "harness"
    subprocess.run([CXX, "-std=c++17", "-O2", "-Wall", "-Werror", f"-I{walker_dir}",
                    str(HARNESS), "-o", str(binary)], check=True, capture_output=True, text=True)
    return binary


def _run(binary: pathlib.Path, launches):
    result = subprocess.run([str(binary)], input="\n".join(launches) + "\n", check=True,
                            capture_output=True, text=True, timeout=120)
    lines = result.stdout.splitlines()
    assert len(lines) == len(launches)
    return dict(zip(launches, lines))


@pytest.fixture(scope="module")
def harness(tmp_path_factory):
    return _build(tmp_path_factory.mktemp("walker"), ROOT / "csrc")


def test_every_element_once_by_its_sample_and_every_partial_once(harness):
    results = _run(harness, _step_launches())
    failed = {launch: line for launch, line in results.items() if not line.startswith("ok ")}
    assert not failed
    # the cases meant to need them did get several blocks and fewer rows than samples
    assert results["steps 2 100001 4 1 6 65535"] == "ok 3 2"
    assert results["steps 23 9 2 0 1056 5"] == "ok 1 5"


def test_noise_writes_every_output_once_with_its_stream_index(harness):
    results = _run(harness, _noise_launches())
    failed = {launch: line for launch, line in results.items() if not line.startswith("ok ")}
    assert not failed
    assert results["noise 200003 12 1 3"] == "ok 3 1"  # a grid-stride loop over the groups


def test_channels_last_walk_takes_every_element_once_with_its_logical_index_and_noise(harness):
    """The in-place channels_last walk: every element once, at the memory offset of its logical
    index, with the noise of that index, pairs aligned, warp neighbours adjacent."""
    results = _run(harness, _last_launches())
    failed = {launch: line for launch, line in results.items() if not line.startswith("ok ")}
    assert not failed
    # pairs exactly where C is even, the type has at most 4 bytes and the pointers are aligned
    # (S % 4 != 0 too: layer4's 7 x 7); several blocks and fewer rows than samples where meant
    assert results["last 2 6 12 2 1 1056 65535"] == "ok 1 2 2"
    assert results["last 2 6 12 2 0 1056 65535"] == "ok 1 2 1"
    assert results["last 2 6 12 8 1 1056 65535"] == "ok 1 2 1"
    assert results["last 2 2048 49 2 1 1056 65535"] == "ok 52 2 2"
    assert results["last 2 2048 49 2 0 1056 65535"] == "ok 104 2 1"
    assert results["last 2 7 20 4 1 1056 65535"] == "ok 1 2 1"
    assert results["last 1 2050 8 4 1 3 65535"] == "ok 3 1 2"
    assert results["last 23 6 20 4 0 1056 5"] == "ok 1 5 1"


# Mutations of walker.h that each break one invariant; the harness must catch every one (a
# check that cannot fail checks nothing).
MUTANTS = {
    "last ragged step dropped": ("stop(end > begin ? (end + V - 1) / V : first)",
                                 "stop(end > begin ? end / V : first)"),
    "whole step past the sample's end": ("end / V - first_whole : 0", "end / V - first_whole + 1 : 0"),
    "whole step before the sample's begin": ("first_whole((begin + V - 1) / V)",
                                             "first_whole(begin / V)"),
    "aligned steps not whole": ("whole_steps(aligned && ", "whole_steps(false && "),
    "partial slots shared by blocks": ("return b * blocks + block;", "return b * blocks;"),
    "grid rows not stepped": ("b += rows", "b += rows + 1"),
    "float4 store past out's end": ("(g << 2) - start + 4 <= n", "(g << 2) - start + 3 <= n"),
    "channels-last wrap one group short": ("      group -= groups;", "      group -= groups - 1;"),
    "channels-last last quad read whole": ("shape.positions - 4 * quad < 4 ?",
                                           "shape.positions - 4 * quad < 3 ?"),
    "pairs of odd channels": ("channels % 2 == 0 && pairs_aligned",
                              "channels % 1 == 0 && pairs_aligned"),
    "logit_bias of the tile's group, not its first channel": (
        "channel(static_cast<uint32_t>(group * shape.width))",
        "channel(static_cast<uint32_t>(group))"),
    "noise lanes shifted by one too few": ("(r & 2) ? joined[j + 2]", "(r & 2) ? joined[j + 1]"),
    "straddling noise's third pair from the wrong group": ("late ? b.r2 : a.r0",
                                                           "late ? a.r2 : a.r0"),
    "noise groups one short": ("((start_ + static_cast<uint64_t>(n_) - 1) >> 2) - (start_ >> 2) + 1",
                               "((start_ + static_cast<uint64_t>(n_) - 1) >> 2) - (start_ >> 2)"),
}


def test_straddling_tiles_noise_is_the_streams(harness):
    """A channels-last tile whose channel straddles two Philox groups draws both groups' words
    but three Box-Muller pairs (elementwise.h noise_of_four): each of its four values must be
    the stream's at its index, for every i0 % 4."""
    results = _run(harness, FOUR_LAUNCHES)
    assert all(line == "ok" for line in results.values()), results


@pytest.mark.parametrize("mutant", MUTANTS)
def test_harness_catches_a_broken_walker(mutant, tmp_path):
    original, broken = MUTANTS[mutant]
    shutil.copytree(ROOT / "csrc" / "infodrop", tmp_path / "infodrop")
    (tmp_path / "cuda").mkdir()
    shutil.copy(WALKER, tmp_path / "cuda" / "walker.h")
    # the walk is walker.h's; the lanes a tile's noise is picked from are elementwise.h's
    holders = [path for path in (tmp_path / "cuda" / "walker.h",
                                 tmp_path / "infodrop" / "elementwise.h")
               if path.read_text().count(original) == 1]
    assert len(holders) == 1, f"walker.h or elementwise.h changed: update the mutant {mutant!r}"
    holders[0].write_text(holders[0].read_text().replace(original, broken))
    results = _run(_build(tmp_path, tmp_path),
                   _step_launches() + _noise_launches() + _last_launches() + FOUR_LAUNCHES)
    assert any(line.startswith("FAIL ") for line in results.values())

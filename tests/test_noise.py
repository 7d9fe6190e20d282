"""The noise stream of docs/spec.md section 3: Philox known answers, the shared KAT file, agreement of
the compiled kernels with the pure-PyTorch model, accuracy against float64, and statistics."""

import json
import math
import pathlib

import pytest
import torch

import infodrop
from infodrop import reference

from ._helpers import requires_compiled

# docs/spec.md section 3's known answers live in ../shared/testdata/, which a clean clone elsewhere
# lacks: the tests read this copy, and check it against the original wherever that exists.
KAT_FILE = pathlib.Path(__file__).resolve().parent / "data" / "noise_kat.json"
SHARED_KAT_FILE = (pathlib.Path(__file__).resolve().parents[2] / "shared" / "testdata"
                   / "noise_kat.json")


def _philox(counter, key):
    words = [torch.tensor([w], dtype=torch.int64) for w in counter + key]
    return tuple(int(w) for w in reference.philox4x32_10(words[:4], words[4:]))


def test_philox_known_answers():
    assert _philox((0, 0, 0, 0), (0, 0)) == (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)
    ones = 0xFFFFFFFF
    assert _philox((ones,) * 4, (ones,) * 2) == (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)


def _kat_cases():
    return json.loads(KAT_FILE.read_text())["cases"]


@pytest.mark.skipif(not SHARED_KAT_FILE.exists(), reason="no shared/ beside this checkout")
def test_known_answers_copy_matches_shared():
    assert json.loads(KAT_FILE.read_text()) == json.loads(SHARED_KAT_FILE.read_text())


@pytest.mark.parametrize("source", ["compiled", "reference"])
def test_shared_known_answers(source):
    if source == "compiled" and not infodrop.backends()["cpu"]:
        pytest.skip("compiled CPU backend not built")
    noise = infodrop.noise if source == "compiled" else reference.noise
    for case in _kat_cases():
        for index, expected in zip(case["index"], case["eps"]):
            got = noise((1,), case["seed"], case["offset"], start=index).item()
            assert got == pytest.approx(expected, rel=1e-5, abs=1e-6), (case["seed"], index)


@requires_compiled
# 2**34 - 32: a SIMD block whose Philox group index crosses 2**32 (the counter's carry)
@pytest.mark.parametrize("start", [0, 1, 3, 4, 63, 2**32 - 5, 2**34 - 32, 2**34 + 2])
def test_compiled_stream_equals_reference_model(start):
    # sizes with ragged heads and tails around the 4-element groups and the SIMD blocks
    for numel in (1, 5, 64, 67, 1000):
        got = infodrop.noise((numel,), 12345, 678, start=start)
        want = reference.noise((numel,), 12345, 678, start=start)
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


@requires_compiled
def test_a_slice_of_the_stream_is_the_stream_at_its_start():
    whole = infodrop.noise((3, 100), 9, 2)
    part = infodrop.noise((37,), 9, 2, start=113)
    torch.testing.assert_close(part, whole.flatten()[113:150], rtol=0, atol=0)


@requires_compiled
def test_accuracy_against_float64_box_muller():
    """Dense check of the fast log, sqrt and sin/cos: the same Philox words mapped in float64."""
    n = 1 << 20
    eps = infodrop.noise((n,), 2024, 1).double()
    index = torch.arange(n, dtype=torch.int64)
    group, lane = index >> 2, index & 3
    zero = torch.zeros_like(group)
    r = reference.philox4x32_10((group, zero, zero + 1, zero), (zero + 2024, zero))
    a = torch.where(lane < 2, r[0], r[2])
    b = torch.where(lane < 2, r[1], r[3])
    ua = (a >> 9).double() * 2.0**-23 + 2.0**-24
    ub = (b >> 9).double() * 2.0**-23 + 2.0**-24
    rad, theta = torch.sqrt(-2 * torch.log(ua)), 2 * math.pi * ub
    exact = torch.where(lane % 2 == 0, rad * torch.cos(theta), rad * torch.sin(theta))
    # 2^-20 relative on rad, 2^-20 absolute on sin/cos, plus float32 rounding of the products
    assert ((eps - exact).abs() / (rad + 1e-300)).max() < 2 * 2.0**-20


@pytest.mark.parametrize("source", ["compiled", "reference"])
def test_stream_statistics(source):
    if source == "compiled" and not infodrop.backends()["cpu"]:
        pytest.skip("compiled CPU backend not built")
    noise = infodrop.noise if source == "compiled" else reference.noise
    n = 1 << 18
    eps = noise((n,), 77, 5).double()
    tol = 5 / math.sqrt(n)
    assert abs(eps.mean()) < tol
    assert abs(eps.var() - 1) < 5 * math.sqrt(2 / n)
    # normality: Kolmogorov-Smirnov distance to the standard normal CDF
    ecdf = torch.arange(1, n + 1, dtype=torch.float64) / n
    cdf = torch.special.ndtr(eps.sort().values)
    assert (ecdf - cdf).abs().max() < 1.95 / math.sqrt(n)  # p ~ 0.001
    # no correlation between neighbours, within a group of 4 and across groups
    for lag in (1, 2, 3, 4, 5):
        assert abs((eps[:-lag] * eps[lag:]).mean()) < tol, lag
    # nor between seeds, nor between offsets
    for other in (noise((n,), 78, 5), noise((n,), 77, 6)):
        assert abs((eps * other.double()).mean()) < tol


@requires_compiled
def test_noise_rejects_bad_arguments():
    with pytest.raises(ValueError, match="seed"):
        infodrop.noise((3,), -1)
    with pytest.raises(ValueError, match="offset"):
        infodrop.noise((3,), 1, 2**64)
    with pytest.raises(TypeError, match="start"):
        infodrop.noise((3,), 1, start=1.5)
    with pytest.raises(ValueError, match="shape"):
        infodrop.noise((3, -1), 1)
    with pytest.raises(ValueError, match="start"):
        infodrop.noise((3,), 1, start=2**64 - 2)

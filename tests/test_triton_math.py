"""The Triton backend's own float32 log (Box-Muller's under TRITON_INTERPRET=1; compiled for a GPU the
kernels take device_math.py's lg2 and polynomial instead), against float64 on a dense sweep of the
uniforms the noise stream can produce, the ends included (docs/spec.md section 5: error below 2^-20).
Runs where Triton runs: on a GPU, or on the CPU under TRITON_INTERPRET=1 (tests/test_triton.py
runs this file that way in a subprocess)."""

import pytest
import torch

import infodrop

if not infodrop.backends()["triton"]:
    pytest.skip("triton cannot run here (no GPU; tests/test_triton.py runs this file under "
                "TRITON_INTERPRET=1)", allow_module_level=True)

import triton  # noqa: E402
import triton.language as tl  # noqa: E402

from infodrop.triton import device_math  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
BLOCK = 4096


@triton.jit
def _log_kernel(x_ptr, y_ptr, n, BLOCK: tl.constexpr):
    i = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = i < n
    tl.store(y_ptr + i, device_math.log_normal_f32(tl.load(x_ptr + i, mask=mask, other=1.0)), mask=mask)


def _log(x):
    y = torch.empty_like(x)
    _log_kernel[(triton.cdiv(x.numel(), BLOCK),)](x, y, x.numel(), BLOCK=BLOCK)
    return y


def test_log_of_every_kind_of_uniform_is_within_2_pow_minus_20():
    # uniform(r) = k * 2^-23 + 2^-24 for the 23-bit k = r >> 9: every 128th k, and the 4096
    # smallest and largest (log near 0 and near 1, where the relative error is hardest to keep)
    k = torch.cat([torch.arange(0, 1 << 23, 128), torch.arange(0, 4096),
                   torch.arange((1 << 23) - 4096, 1 << 23)]).double()
    u = k * 2.0**-23 + 2.0**-24
    got = _log(u.float().to(DEVICE)).cpu().double()
    want = torch.log(u)
    assert torch.all(got <= 0), "a positive log(u) would make Box-Muller's radius NaN"
    assert ((got - want).abs() / want.abs()).max().item() < 2.0**-20


def test_log_of_normal_floats_across_the_exponent_range():
    x = torch.logspace(-37, 38, 200_001, dtype=torch.float64).float()
    got = _log(x.to(DEVICE)).cpu().double()
    want = torch.log(x.double())
    assert ((got - want).abs() / want.abs().clamp_min(1e-3)).max().item() < 2.0**-20

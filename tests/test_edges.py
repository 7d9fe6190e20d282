"""Fast math at the ends of the float range (issue 13, point 3): every backend's exp, log and
sigmoid behave as IEEE float32 evaluation of the SPEC formulas, as the float32 reference does:
exp overflows to inf and underflows to a subnormal or 0, log(0) = -inf, log(inf) = inf, NaN
propagates, and sigmoid(x) = 1 / (1 + exp(-x)) is 0 where exp(-x) overflows.

Checked three ways: the shared header's scalar instantiation (what a CUDA thread runs, minus
intrinsics) compiled by g++ against csrc/; the CPU kernels of every instruction set; and the
Triton kernels under TRITON_INTERPRET=1.  The last two run in subprocesses, since the ISA and
the interpreter are chosen when the extension or triton is first imported."""

import importlib.util
import math
import os
import pathlib
import shutil
import subprocess
import sys

import pytest
import torch

import infodrop  # noqa: F401  (registers torch.ops.infodrop)

from ._helpers import requires_compiled

ROOT = pathlib.Path(__file__).resolve().parents[1]
FLT_TRUE_MIN = 2.0**-149

# ---- the header's scalar float path, compiled on the host ------------------------------------

HARNESS = r"""
#include <cstdio>
#include "infodrop/fastmath.h"
// For each x read (a hex float): exp, log, sigmoid and 1 - sigmoid of (float)x in the float
// path, then sigmoid and 1 - sigmoid of x in the double path.
int main() {
  double x;
  while (std::scanf("%la", &x) == 1) {
    const float xf = static_cast<float>(x);
    float s, oms;
    infodrop::fast_sigmoid(xf, s, oms);
    double sd, omsd;
    infodrop::fast_sigmoid(x, sd, omsd);
    std::printf("%a %a %a %a %a %a\n", infodrop::fast_exp(xf), infodrop::fast_log(xf), s, oms,
                sd, omsd);
  }
}
"""

SPECIALS = [0.0, -0.0, math.inf, -math.inf, math.nan, 1.0, -1.0, 2.0**-149, 1e-45, 1e-40,
            2.0**-126, 1.1754942e-38, 88.0, 88.5, 88.72283172607422, 88.72283935546875, 89.0,
            100.0, 3.4e38, -3.4e38, -87.0, -87.33, -87.5, -88.0, -88.72283172607422,
            -88.72283935546875, -100.0, -103.9, -103.97, -104.0, -200.0, 1e30, -1e30]
DOUBLE_SPECIALS = [-700.0, -709.78, -709.7827128933840, -709.7827128933841, -709.79, -720.0,
                   -745.0, -800.0, 720.0, 800.0]


def _compile(tmp_path, name, source):
    """An executable of a C++ harness of the shared math headers (skips without g++)."""
    compiler = shutil.which("g++")
    if compiler is None:
        pytest.skip("g++ is not installed")
    (tmp_path / f"{name}.cpp").write_text(source)
    exe = tmp_path / name
    subprocess.run([compiler, "-std=c++17", "-O2", "-Wall", "-Werror", f"-I{ROOT / 'csrc'}",
                    str(tmp_path / f"{name}.cpp"), "-o", str(exe)], check=True,
                   capture_output=True, text=True)
    return exe


def _harness(tmp_path):
    return _compile(tmp_path, "harness", HARNESS)


def _evaluate(exe, xs):
    out = subprocess.run([str(exe)], input="".join(float(x).hex() + "\n" for x in xs),
                         capture_output=True, text=True, check=True).stdout.split("\n")
    rows = [[float.fromhex(w) if "0x" in w else float(w) for w in line.split()]
            for line in out if line]
    assert len(rows) == len(xs)
    return torch.tensor(rows, dtype=torch.float64).T


def _assert_matches(name, x, got, want, rtol, atol):
    """got equals want where want is inf, NaN or 0 and is within rtol / atol elsewhere."""
    exact = ~want.isfinite() | (want == 0)
    bad = (got.isnan() != want.isnan()) | (exact & ~want.isnan() & (got != want))
    bad |= ~exact & ~((got - want).abs() <= atol + rtol * want.abs())
    assert not bad.any(), (f"{name}: at x = {x[bad][:6].tolist()} got {got[bad][:6].tolist()}, "
                           f"want {want[bad][:6].tolist()}")


def test_header_float_path_is_ieee_at_the_edges(tmp_path):
    exe = _harness(tmp_path)
    # the specials, a dense sweep across both ends of exp's range and every binade of log's
    xs = torch.tensor(SPECIALS + torch.linspace(-110, 95, 20_001).tolist()
                      + [2.0**e * m for e in range(-149, 128) for m in (1.0, 1.37, 1.999)],
                      dtype=torch.float32)
    e, lg, s, oms, _, _ = _evaluate(exe, xs.tolist())
    xd = xs.double()
    bound = 2.0**-20
    # subnormal results carry FLT_TRUE_MIN absolute rounding; relative error elsewhere
    _assert_matches("exp", xd, e, torch.exp(xs).double(), bound, FLT_TRUE_MIN)
    # log near x = 1 is small: its error is relative to |log x| + 1 (tests/test_fastmath.py)
    want_log = torch.log(xs).double()
    _assert_matches("log", xd, lg, want_log, 0.0, bound * (want_log.abs() + 1))
    # sigmoid as torch.sigmoid (float32) computes it, zeros included; 1 - s from float64
    _assert_matches("sigmoid", xd, s, torch.sigmoid(xs).double(), bound, FLT_TRUE_MIN)
    _assert_matches("1 - sigmoid", xd, oms, torch.sigmoid(-xd).float().double(), bound,
                    FLT_TRUE_MIN)


def test_header_double_sigmoid_is_zero_where_exp_overflows(tmp_path):
    exe = _harness(tmp_path)
    xs = torch.tensor(DOUBLE_SPECIALS + [0.0, 1.0, -1.0, -30.0, math.nan, -math.inf, math.inf],
                      dtype=torch.float64)
    _, _, _, _, s, oms = _evaluate(exe, xs.tolist())
    _assert_matches("sigmoid", xs, s, torch.sigmoid(xs), 1e-15, 1e-323)
    # 1 - s has no overflow rule (torch.sigmoid(-x) has): the true value, subnormal or 0
    e = torch.exp(-xs.abs())
    _assert_matches("1 - sigmoid", xs, oms, torch.where(xs > 0, e / (1 + e), 1 / (1 + e)), 1e-15,
                    1e-323)


IN_RANGE_HARNESS = r"""
#include <cstdio>
#include <cstring>
#include <random>
#include "infodrop/elementwise.h"
using namespace infodrop;
static bool same(float a, float b) { return as_uint(a) == as_uint(b) || (a != a && b != b); }
// The fast paths against the IEEE ones, bit for bit, where the fast paths say they apply.
// Prints: mismatches, then how many inputs each side of the ranges took (both must be > 0).
int main() {
  long bad = 0, inside = 0, outside = 0;
  for (uint64_t b = 0; b <= 0xffffffffu; b += 997) {  // every sign, exponent and mantissa region
    const float x = as_float(static_cast<uint32_t>(b));
    const bool exp_outside = outside_exp_range(x), log_outside = outside_log_range(x);
    // the ranges themselves: |x| <= 86 for exp and the sigmoid, positive normal x for log
    bad += exp_outside != !(x >= -86.0f && x <= 86.0f);
    bad += log_outside != !(x >= 1.17549435e-38f && x <= 3.40282347e38f);
    if (!exp_outside) {
      bad += !same(exp_in_range(x), exp_ieee(x));
      float s, oms;
      sigmoid_in_range(x, s, oms);
      const float e = exp_ieee(-x), s_ieee = reciprocal(1.0f + e);
      bad += !same(s, s_ieee) + !same(oms, e * s_ieee);
    }
    if (!log_outside) bad += !same(log_of_normal(x), fast_log(x));
  }
  // whole elements, every option: InRangeMath equals IeeeMath wherever it does not flag an input
  const float specials[] = {0.f, 1e-45f, 1e-40f, 1.17e-38f, 1e-4f, 1.f, 85.9f, 86.f, 86.1f, 87.f,
                            88.8f, 104.f, 1e30f, 3.4e38f, INFINITY, NAN};
  std::mt19937 rng(1);
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  const auto pick = [&]() {
    const float v = specials[rng() % (sizeof specials / sizeof specials[0])];
    return (rng() & 1) ? -v : v;
  };
  for (int options = 0; options < 32; ++options) {
    Params<float> p;
    p.set_options((options & 16) ? 40.0f : 0.7f, (options & 8) ? 0.0f : 1e-3f,
                  Prior(options & 1), options & 2, options & 4, true);
    p.set_prior(0.3f, 1.5f);
    for (int i = 0; i < 20000; ++i) {
      const float x = i % 4 == 1 ? pick() : std::ldexp(u(rng), int(rng() % 40) - 20);
      const float logit = i % 4 == 2 ? pick() : 100.0f * u(rng);
      const float eps = i % 4 == 3 ? pick() : 6.0f * u(rng);
      InRangeMath<float> fast;
      IeeeMath<float> ieee;
      const ForwardOut<float> f1 = forward_element_with(fast, x, logit, eps, p);
      const ForwardOut<float> f2 = forward_element_with(ieee, x, logit, eps, p);
      InRangeMath<float> fast_b;
      const BackwardOut<float> b1 = backward_element_with(fast_b, 0.7f, 1.3f, x, logit, eps, p);
      const BackwardOut<float> b2 = backward_element_with(ieee, 0.7f, 1.3f, x, logit, eps, p);
      const bool flagged = fast.outside || fast_b.outside;
      (flagged ? outside : inside) += 1;
      if (!flagged)
        bad += !same(f1.z, f2.z) + !same(f1.kl, f2.kl) + !same(b1.grad_x, b2.grad_x) +
               !same(b1.grad_logit, b2.grad_logit) + !same(b1.dmu, b2.dmu) +
               !same(b1.dsigma, b2.dsigma);
    }
  }
  std::printf("%ld %ld %ld\n", bad, inside, outside);
}
"""


def test_header_fast_paths_equal_the_ieee_paths_where_they_apply(tmp_path):
    """The in-range fast paths (exp_in_range, sigmoid_in_range, log_of_normal, InRangeMath) take
    every input their range tests let through to the same bits as the IEEE paths, and the
    range tests let through exactly |x| <= 86 (exp, sigmoid) and positive normal x (log)."""
    exe = _compile(tmp_path, "in_range", IN_RANGE_HARNESS)
    bad, inside, outside = map(int, subprocess.run([str(exe)], capture_output=True, text=True,
                                                   check=True).stdout.split())
    assert bad == 0
    assert inside > 100_000 and outside > 100_000  # both sides of the ranges were exercised


# ---- the op on the CPU kernels and on Triton --------------------------------------------------

EDGE_SCRIPT = r"""
import math, sys
import torch, infodrop
from infodrop import reference

backend = sys.argv[1]
W = 64  # rows of W equal values fill whole SIMD blocks: the vector lanes run, not the scalar head


def run(x, logit, **options):
    out = []
    for fused in (True, False):
        xr, lr = x.clone().requires_grad_(), logit.clone().requires_grad_()
        if fused:
            z, kl = infodrop.information_dropout(xr, lr, seed=3, offset=1, backend=backend,
                                                 **options)
        else:
            z, kl = reference.information_dropout(xr, lr, infodrop.noise(x.shape, 3, 1), **options)
        (z.sum() + kl.sum()).backward()
        out.append((z.detach(), kl.detach(), xr.grad, lr.grad))
    return out


def check_value(name, got, want, rtol=1e-4, atol=1e-30):
    # equal where the reference gives inf or NaN, close elsewhere
    bad = (got.isnan() != want.isnan()) | (want.isinf() & (got != want))
    bad |= want.isfinite() & ~((got - want).abs() <= atol + rtol * want.abs())
    assert not bad.any(), f"{name}: got {got[bad][:6].tolist()}, want {want[bad][:6].tolist()}"


def check_grad(name, got, want):
    # no NaN where the reference has none; where it has one (inf * 0), anything.  Loose rtol:
    # the float32 reference's own 1 - s (in d sigmoid) cancels where s is near 1.
    keep = ~want.isnan()
    check_value(name, got[keep], want[keep], rtol=2e-3, atol=1e-6)


def check(case, x, logit, **options):
    (z, kl, gx, gl), (zr, klr, gxr, glr) = run(x, logit, **options)
    check_value(case + " z", z, zr)
    check_value(case + " kl", kl, klr, atol=W * 2.0**-20)  # kl -> 0 at the cap: absolute
    check_grad(case + " grad x", gx, gxr)
    check_grad(case + " grad logit", gl, glr)
    return zr, klr


# exp(alpha eps) overflows to inf (and underflows) where the float32 reference's does
g = torch.Generator().manual_seed(0)
x, logit = torch.rand(1, 2000, generator=g) * 3, torch.randn(1, 2000, generator=g) * 3
zr, _ = check("max_alpha=50", x, logit, max_alpha=50.0)
assert zr.isinf().sum() > 5
zr, _ = check("max_alpha=50 unit_mean", x, logit, max_alpha=50.0, unit_mean=True)
assert (zr == 0).sum() > 5

# sigmoid at the ends: with alpha_min = 0 the KL is inf where the reference's sigmoid is 0
logits = [-math.inf, -200, -100, -88.72283935546875, -88.72283172607422, -88, -87.5, -87, -30,
          0, 30, 100, math.inf]
logit = torch.tensor(logits).repeat_interleave(W).reshape(-1, W)
for prior in ("log_uniform", "log_normal"):
    _, klr = check(f"alpha_min=0 {prior}", torch.full_like(logit, 2.0), logit, prior=prior,
                   alpha_min=0.0)
    assert klr.isinf().sum() == 4 and klr.isfinite().sum() == len(logits) - 4

# x at the ends, through exp (z) and the log-normal KL's log x
xs = [math.inf, 0.0, 1e-45, 1e-30, 1e30, 3.4e38, math.nan]
x = torch.tensor(xs).repeat_interleave(W).reshape(-1, W)
for prior in ("log_uniform", "log_normal"):
    _, klr = check(f"x edges {prior}", x, torch.zeros_like(x), prior=prior)
assert klr[0] == math.inf

# NaN logits propagate
logit = torch.zeros(2, W)
logit[1] = math.nan
check("nan logit", torch.ones(2, W), logit)
print("ok")
"""


def _run_edges(backend, env):
    return subprocess.run([sys.executable, "-c", EDGE_SCRIPT, backend], cwd=ROOT,
                          env=dict(os.environ, **env), capture_output=True, text=True,
                          timeout=900)


def _cpu_flags():
    try:
        with open("/proc/cpuinfo") as f:
            return set(next(line for line in f if line.startswith("flags")).split())
    except (OSError, StopIteration):
        return set()


@requires_compiled
@pytest.mark.parametrize("isa", ["avx512", "avx2", "baseline"])
def test_cpu_kernels_overflow_like_the_reference(isa):
    needs = {"avx512": {"avx512f", "avx512bw", "avx512dq", "avx512vl"},
             "avx2": {"avx2", "fma", "f16c"}}
    if not needs.get(isa, set()) <= _cpu_flags():
        pytest.skip(f"this CPU cannot run the {isa} kernels")
    result = _run_edges("cpu", {"INFODROP_CPU_ISA": isa})
    assert result.returncode == 0 and result.stdout.split() == ["ok"], result.stderr


@pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="triton is not installed")
def test_triton_kernels_overflow_like_the_reference():
    result = _run_edges("triton", {"TRITON_INTERPRET": "1"})
    assert result.returncode == 0 and result.stdout.split() == ["ok"], result.stderr


@requires_compiled
def test_cap_beyond_float32_is_rejected_by_the_op():
    """1 / (alpha_min + max_alpha) must be a normal float32 (the kernels compute in float32)."""
    x = torch.ones(2, 4)
    args = (torch.tensor([1]), 0, torch.tensor(0.0), torch.tensor(1.0), "log_uniform")
    torch.ops.infodrop.information_dropout(x, x, *args, 1e37, 1e-3, False, False, True)
    with pytest.raises(RuntimeError, match="alpha_min \\+ max_alpha must be below 2\\^126"):
        torch.ops.infodrop.information_dropout(x, x, *args, 1e38, 1e-3, False, False, True)

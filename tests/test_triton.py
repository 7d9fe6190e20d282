"""The Triton backend on a machine without a GPU: its kernels run on the CPU under
TRITON_INTERPRET=1, which must be set before triton is imported, hence a subprocess; and what
infodrop.backends() and backend selection say about it."""

import importlib.util
import os
import pathlib
import subprocess
import sys

import pytest
import torch

import infodrop

ROOT = pathlib.Path(__file__).resolve().parents[1]
requires_triton = pytest.mark.skipif(importlib.util.find_spec("triton") is None,
                                     reason="triton is not installed")


def _run_interpreted(*args):
    env = dict(os.environ, TRITON_INTERPRET="1")
    return subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=900)


@requires_triton
@pytest.mark.slow
def test_kernels_and_math_pass_under_interpreter():
    result = _run_interpreted("-m", "pytest", "-q", "-p", "no:cacheprovider", "-rs",
                              "tests/test_backend_numerics.py", "tests/test_triton_math.py",
                              "tests/test_triton_layouts.py", "tests/test_triton_call_path.py",
                              "-k", "triton or log", "-m", "not cuda")
    report = result.stdout + result.stderr
    assert result.returncode == 0, report
    assert " passed" in report and "skipped" not in report, report


@requires_triton
def test_interpreter_makes_triton_available_and_auto_still_picks_cpu():
    result = _run_interpreted("-c", (
        "import torch, infodrop\n"
        "from infodrop._backends import resolve\n"
        "print(infodrop.backends()['triton'], resolve('auto', torch.device('cpu')),"
        " resolve('triton', torch.device('cpu')))"))
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["True", "cpu" if infodrop.backends()["cpu"] else "reference",
                                     "triton"]


@requires_triton
def test_interpreted_kernels_run_where_wrap_triton_refuses_them():
    """torch 2.11's wrap_triton raises "wrap_triton only works on functions annotated with
    triton.jit" for the functions TRITON_INTERPRET=1 makes (issue 17: the interpreted tests
    failed there): the ops launch those directly.  Its check is reproduced here."""
    result = _run_interpreted("-c", (
        "import torch, infodrop\n"
        "from triton.runtime.jit import JITFunction\n"
        "from infodrop.triton import ops\n"
        "def wrap_triton(kernel):\n"
        "    if not isinstance(kernel, JITFunction):\n"
        "        raise RuntimeError('wrap_triton only works on functions annotated with"
        " triton.jit')\n"
        "    return kernel\n"
        "ops.wrap_triton = wrap_triton\n"
        "x = torch.rand(2, 8, requires_grad=True)\n"
        "z, kl = infodrop.information_dropout(x, x, seed=1, backend='triton')\n"
        "(z.sum() + kl.sum()).backward()\n"
        "print(infodrop.noise((5,), 3, backend='triton').shape == (5,), x.grad.shape == x.shape)"))
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["True", "True"]


@requires_triton
def test_backends_report_triton_as_built():
    detail = infodrop.backends(detail=True)
    assert detail["triton"]["built"]
    assert detail["triton"]["runs"] == infodrop.backends()["triton"]
    if os.environ.get("TRITON_INTERPRET") != "1":
        assert infodrop.backends()["triton"] == torch.cuda.is_available()


def test_backends_detail_says_why_a_backend_cannot_run():
    for name, info in infodrop.backends(detail=True).items():
        assert set(info) == {"runs", "built", "why"} | ({"compiles"} if name == "triton" else set())
        assert info["runs"] == infodrop.backends()[name]
        assert (info["why"] == "") == info["runs"], (name, info)


@pytest.mark.skipif(infodrop.backends()["triton"], reason="triton can run here")
def test_naming_triton_where_it_cannot_run_says_what_can():
    x = torch.rand(2, 3)
    with pytest.raises(RuntimeError, match="'triton' is not available here; available: .*reference"):
        infodrop.information_dropout(x, x, backend="triton")


@requires_triton
def test_float_options_reach_the_kernels_exactly():
    """Compiled Triton passes a Python float argument as fp32, which would round max_alpha and
    alpha_min for float64 inputs (the interpreter keeps float64, so tests/test_cuda_kernels.py
    can catch it on a GPU only): the kernels take them as constexpr."""
    from triton.runtime.jit import mangle_type

    from infodrop.triton import kernels

    assert mangle_type(0.7) == "fp32"  # the hazard; if Triton changes this, revisit the kernels
    for kernel in (kernels.forward_kernel, kernels.backward_kernel):
        constexprs = {p.name for p in kernel.params if p.is_constexpr}
        assert {"MAX_ALPHA", "ALPHA_MIN"} <= constexprs, kernel.fn.__name__


def test_backends_detail_says_whether_triton_compiles_for_the_visible_gpu(monkeypatch):
    module = importlib.import_module("infodrop._backends")

    calls = []

    def compile_for(capability):
        calls.append(capability)
        return False, "noise_kernel does not compile for sm_75: NameError: something"

    monkeypatch.setattr(module, "TRITON_IMPORTABLE", True)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (7, 5))
    aot = pytest.importorskip("infodrop.triton.aot")
    monkeypatch.setattr(aot, "kernels_compile_for", compile_for)
    module._triton_compiles_for_gpu.cache_clear()
    try:
        infodrop.backends()  # the plain call, on every op call, never compiles
        assert calls == []
        for _ in range(2):
            assert infodrop.backends(detail=True)["triton"]["compiles"] == {
                "arch": "sm_75", "ok": False,
                "why": "noise_kernel does not compile for sm_75: NameError: something"}
        assert calls == [75]  # once per process
    finally:
        module._triton_compiles_for_gpu.cache_clear()
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert infodrop.backends(detail=True)["triton"]["compiles"] is None

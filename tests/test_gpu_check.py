"""`make gpu-check` (benchmarks/gpu_check.py) where there is no GPU: it says so and exits with
status 2, rather than reporting checks that did not run; its build step works with a Python that
already has torch and no network (a GPU container); and its timed sections, run here on the CPU
at tiny sizes with a wall-clock timer in place of do_bench, write what the report promises, so
that the next GPU session does not spend its minutes on a typo."""

import json
import os
import pathlib
import shutil
import subprocess
import sys
import time

import pytest
import torch

from benchmarks import gpu_check
from infodrop import bench_cases

ROOT = pathlib.Path(__file__).resolve().parents[1]
no_gpu = pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is visible: make gpu-check runs")


@no_gpu
def test_gpu_check_without_a_gpu_says_so_and_fails(tmp_path):
    result = subprocess.run([sys.executable, "-m", "benchmarks.gpu_check", "--build", "--out",
                             str(tmp_path)], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2
    assert "no CUDA GPU" in result.stderr
    assert not (tmp_path / "report.md").exists() and not (tmp_path / "build.log").exists()


@no_gpu
@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_make_gpu_check_with_a_python_that_has_torch_says_no_gpu(tmp_path):
    """The active Python (PYTHON=, here this interpreter) is used as it is: no venv is made, no
    pip runs; the recipe's own status is 2 (make reports it as "Error 2")."""
    env = {**os.environ, "OUT": str(tmp_path)}
    result = subprocess.run(["make", "--no-print-directory", "gpu-check", f"PYTHON={sys.executable}"],
                            cwd=ROOT, capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 2
    assert "no CUDA GPU" in result.stderr
    assert "gpu-check] Error 2" in result.stderr
    # the one command make ran: no venv made, no pip
    assert result.stdout.splitlines() == [f"{sys.executable} -m benchmarks.gpu_check --build"]
    assert list(tmp_path.iterdir()) == []


@no_gpu
def test_gpu_session_script_leaves_its_log_in_out(tmp_path):
    """benchmarks/gpu_session.sh, the one device call: whatever happens, $OUT has its log."""
    out, wheels = tmp_path / "out", tmp_path / "wheels"
    out.mkdir(), wheels.mkdir()
    env = {**os.environ, "OUT": str(out), "PYTHON": sys.executable, "WHEELS": str(wheels)}
    subprocess.run(["bash", "benchmarks/gpu_session.sh"], cwd=ROOT, capture_output=True, text=True,
                   timeout=300, env=env)
    log = (out / "session.log").read_text()
    assert "no CUDA GPU" in log and "gpu-check: exit 2" in log
    assert f"{sys.executable} -m benchmarks.gpu_check --build" in log


def _wall_clock_ms(fn, rep_ms=100):
    fn()
    start = time.perf_counter()
    fn()
    return (time.perf_counter() - start) * 1e3


@pytest.fixture
def cpu_report(tmp_path, monkeypatch):
    """A report in tmp_path/run, copied to tmp_path/out as $OUT; do_bench (CUDA only) replaced."""
    monkeypatch.setattr(gpu_check, "do_bench_ms", _wall_clock_ms)
    (tmp_path / "out").mkdir()
    monkeypatch.setenv("OUT", str(tmp_path / "out"))
    return gpu_check.Report(str(tmp_path / "run"))


def test_host_section_times_the_backends_and_compares_triton_with_cuda(cpu_report):
    """Issue 19 point 3 (Triton's host time per call at most 1.5x the cuda path's) is measured
    on the GPU: the section times each contender that runs on the device and says which did
    not (triton on the CPU without the interpreter)."""
    from infodrop import bench_host

    gpu_check.host(cpu_report, gpu_check.Clock(600), device="cpu", steps=2, rounds=1)
    ran = [c for c in gpu_check.HOST_CONTENDERS if bench_host.runs_on(c, "cpu")]
    records = cpu_report.results["host"]
    assert [(r["contender"], r["pass"], r["measure"]) for r in records] == [
        (c, p, m) for c in ran for p in bench_host.PASSES for m in bench_host.MEASURES]
    assert all(r["host_us"] > 0 for r in records)
    text = "\n".join(cpu_report.lines)
    assert "functional runs the 'cpu' backend" in text
    table = bench_host.format_table(records).splitlines()
    assert table[-1] in text and table[-1].startswith("dropout")
    if "triton" in ran:
        assert text.count("- Triton / cpu, ") == len(bench_host.PASSES) * len(bench_host.MEASURES)
    else:
        assert "Not timed: triton (does not run on cpu here)." in text and "- Triton /" not in text


def test_host_section_gives_no_ratio_of_triton_to_itself(cpu_report, monkeypatch):
    """Without the CUDA extension "auto" runs Triton on a GPU: functional is Triton then."""
    from infodrop import _backends

    monkeypatch.setattr(_backends, "resolve", lambda backend, device: "triton")
    gpu_check.host(cpu_report, gpu_check.Clock(600), device="cpu", steps=1, rounds=1)
    text = "\n".join(cpu_report.lines)
    assert "No Triton / cuda ratio: functional ran the 'triton' backend itself" in text
    assert "- Triton /" not in text


def test_host_section_stops_at_its_budget(cpu_report):
    gpu_check.host(cpu_report, gpu_check.Clock(0), device="cpu", steps=2, rounds=1)
    assert cpu_report.results["host"] == []
    assert "Not timed: functional (the section's budget is spent)" in "\n".join(cpu_report.lines)


def test_layer_section_times_every_contender_in_both_layouts(cpu_report):
    clock = gpu_check.Clock(600)
    gpu_check.layer(cpu_report, clock, [], shapes=(((2, 3, 4, 5), torch.float32),),
                    contenders=("fused-cuda", "reference", "dropout"), device="cpu")
    text = "\n".join(cpu_report.lines)
    for layout in ("", " channels_last"):
        label = f"resnet50 2x3x4x5 float32 cpu{layout}"
        assert f"| {label} | copy | x.clone() |" in text
        for pass_ in bench_cases.PASSES:
            assert f"| {label} | {pass_} | fused-cuda | - (fused-cuda does not run on cpu)" in text
            for name in ("reference", "dropout"):
                assert f"| {label} | {pass_} | {name} | " in text
    assert "FAILED" not in text
    records = cpu_report.results["layer"]
    assert len(records) == 2 * 2 * 2 and all(r["us"] > 0 and r["GB_per_s"] > 0 for r in records)
    cpu_report.flush()
    copied = pathlib.Path(os.environ["OUT"]) / "report.md"
    assert copied.read_text() == "\n".join(cpu_report.lines) + "\n"


def test_a_failing_torch_compile_is_recorded_and_not_retried(cpu_report, monkeypatch):
    real = bench_cases._function
    calls = []

    def function(contender):
        if contender.name == "reference-compiled":
            calls.append(contender)
            raise RuntimeError("Unsupported: dynamo refused\nsecond line")
        return real(contender)

    monkeypatch.setattr(bench_cases, "_function", function)
    gpu_check.layer(cpu_report, gpu_check.Clock(600), [], shapes=(((2, 3, 2, 2), torch.float32),),
                    contenders=("reference-compiled", "dropout"), device="cpu")
    text = "\n".join(cpu_report.lines)
    assert len(calls) == 1
    assert "| reference-compiled | FAILED: RuntimeError: Unsupported: dynamo refused |" in text
    assert text.count("- (torch.compile failed above)") == 3  # the other pass and layout
    assert "torch.compile of the reference failed: `RuntimeError: Unsupported: dynamo refused`" in text
    assert text.count("| dropout | ") == 4


def test_a_spent_budget_skips_and_says_so(cpu_report):
    gpu_check.layer(cpu_report, gpu_check.Clock(0), [], shapes=(((2, 3, 2, 2), torch.float32),),
                    device="cpu")
    gpu_check.network(cpu_report, gpu_check.Clock(0), device="cpu")
    text = "\n".join(cpu_report.lines)
    assert "| 2x3x2x2 torch.float32 | | | skipped: the section's budget is spent |" in text
    # the network's eager rows: five in channels_last, four in NCHW (no heads alone there)
    assert text.count("skipped: the section's budget is spent") == 1 + 9
    assert "| heads-1x1 |  | channels_last | eager | skipped: the section's budget is spent |" in text
    assert "| heads-1x1 |  | NCHW |" not in text
    # the overall deadline leaves the compiled steps no time either: skipped, not overrun
    for stem, backend in gpu_check.NETWORK_COMPILED:
        assert (f"| {stem} | {backend or ''} | channels_last | torch.compile | skipped: too little time "
                f"left to compile (0 s of the compiled steps' budget, "
                f"{gpu_check.NETWORK_COMPILE_RESERVE_S} s needed) |") in text
    assert cpu_report.results["layer"] == [] and cpu_report.results["network"] == []


def test_compiled_steps_need_room_in_their_own_budget(cpu_report, monkeypatch):
    """The eager rows may run while the compiled steps' budget is too small for a compile."""
    monkeypatch.setitem(gpu_check.BUDGET_S, "network-compiled", 30)
    clock = gpu_check.Clock(600)
    assert clock.budget("network-compiled") == 30 and clock.budget("network") == 100
    gpu_check.network(cpu_report, clock, contenders=(), device="cpu")
    text = "\n".join(cpu_report.lines)
    assert gpu_check.NETWORK_COMPILE_RESERVE_S > 30
    assert text.count("| torch.compile | skipped: too little time left to compile (30 s of the "
                      f"compiled steps' budget, {gpu_check.NETWORK_COMPILE_RESERVE_S} s needed) |"
                      ) == 2
    assert cpu_report.results["network"] == []


def test_a_failing_compile_of_the_step_is_recorded_and_not_retried(cpu_report):
    pytest.importorskip("torchvision")
    calls = []

    def refusing(gm, example_inputs):
        calls.append(gm)
        raise RuntimeError("inductor refused\nsecond line")

    torch._dynamo.reset()
    gpu_check.network(cpu_report, gpu_check.Clock(600), builder=("resnet18", ("layer3", "layer4")),
                      contenders=(), compiled=(("plain", None), ("fused-1x1", "cpu")), batch=2,
                      side=32, device="cpu", compile_backend=refusing)
    text = "\n".join(cpu_report.lines)
    assert len(calls) == 1  # the converted model was not compiled after plain failed
    assert "| plain |  | channels_last | torch.compile | FAILED: BackendCompilerFailed: " in text
    assert "RuntimeError: inductor refused" in text and "second line" not in text
    assert "| fused-1x1 | cpu | channels_last | torch.compile | skipped: torch.compile failed above |" \
        in text
    assert "torch.compile of the step failed: `BackendCompilerFailed: " in text
    assert cpu_report.results["network"] == []


@pytest.mark.usefixtures("one_thread")
def test_network_section_times_and_profiles_the_converted_step(cpu_report):
    """Every row comes out of a real run: the eager ones, the heads alone, and the compiled steps
    (aot_eager here, inductor on the GPU), each model compiled once in one graph."""
    pytest.importorskip("torchvision")
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    gpu_check.network(cpu_report, gpu_check.Clock(600), builder=("resnet18", ("layer3", "layer4")),
                      contenders=(("plain", None), ("heads-1x1", None), ("fused-1x1", "cpu")),
                      compiled=(("plain", None), ("fused-1x1", "cpu")),
                      profiled=("fused-1x1-cl", "cpu"), batch=2, side=32, device="cpu",
                      compile_backend="aot_eager")
    text = "\n".join(cpu_report.lines)
    assert "FAILED" not in text and "skipped" not in text
    records = cpu_report.results["network"]
    # channels_last, then compiled, then NCHW: the target's rows before the diagnostic ones
    assert [(r["contender"], r["backend"], r["layout"], r["compiled"]) for r in records] == [
        ("plain", None, "channels_last", False), ("heads-1x1", None, "channels_last", False),
        ("fused-1x1", "cpu", "channels_last", False),
        ("plain", None, "channels_last", True), ("fused-1x1", "cpu", "channels_last", True),
        ("plain", None, "NCHW", False), ("fused-1x1", "cpu", "NCHW", False)]
    assert all(r["ms"] > 0 and r["first_step_s"] > 0 for r in records)
    assert {r["compile_backend"] for r in records} == {None, "aot_eager"}
    assert counters["stats"]["unique_graphs"] == 2 and counters["aot_autograd"]["ok"] == 2
    ms = {(r["contender"], r["layout"], r["compiled"]): r["ms"] for r in records}
    assert "| plain |  | channels_last | eager | " in text and "| 1.000x |  | - |" in text
    # what each row is compared with: the fused layer with its heads alone where they ran, the
    # compiled steps with compiled plain
    heads = ms["heads-1x1", "channels_last", False] - ms["plain", "channels_last", False]
    assert f"| {heads:+.1f} (plain) |" in text
    fused = ms["fused-1x1", "channels_last", False] - ms["heads-1x1", "channels_last", False]
    assert f"| {fused:+.1f} (heads-1x1) |" in text
    compiled = ms["fused-1x1", "channels_last", True]
    plain = ms["plain", "channels_last", True]
    assert (f"| fused-1x1 | cpu | channels_last | torch.compile | {compiled:.1f} | "
            f"{compiled / plain:.3f}x | {compiled - plain:+.1f} (plain) | - |") in text
    assert "First compiled step (the compile, forward and backward): plain " in text
    assert "## Top device ops of the converted step (fused-1x1-cl, backend cpu" in text
    profile = (pathlib.Path(os.environ["OUT"]) / "profile.txt").read_text()
    assert "Self CPU time total" in profile and "aten::" in profile
    # a row per op and input shapes (on the GPU the heads' bias adds, with their (C, 1, 1)
    # operand, are rows of their own); the CPU convolution takes the bias itself
    assert "Input Shapes" in profile and "[[2, 512, 1, 1], [512, 512, 3, 3]" in profile
    saved = json.loads((pathlib.Path(os.environ["OUT"]) / "results.json").read_text())
    assert [r["compiled"] for r in saved["network"]] == [r["compiled"] for r in records]


def test_build_uses_every_cpu_and_keeps_what_is_set(monkeypatch):
    monkeypatch.delenv("MAX_JOBS", raising=False)
    assert gpu_check.build_environment()["MAX_JOBS"] == str(len(os.sched_getaffinity(0)))
    monkeypatch.setenv("MAX_JOBS", "3")
    assert gpu_check.build_environment()["MAX_JOBS"] == "3"
    if not torch.cuda.is_available():  # setup.py's default pair of architectures then
        assert gpu_check.build_environment().get("TORCH_CUDA_ARCH_LIST") == \
            os.environ.get("TORCH_CUDA_ARCH_LIST")


# The build step in a copy of the tracked tree, as on a GPU machine as it comes: the running
# interpreter (which has torch), no package index.  INFODROP_CUDA=0 keeps the CUDA extension out:
# nvcc would take many minutes on this machine's cores, and setup.py's CUDA branch is the same
# command with one more extension.


@pytest.fixture(scope="module")
def built_copy(tmp_path_factory):
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout: the tracked files are not known")
    files = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, text=True,
                           check=True).stdout.split("\0")
    copy = tmp_path_factory.mktemp("tree") / "infodrop"
    for name in filter(None, files):
        if (ROOT / name).is_file():
            (copy / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, copy / name)
    env = {**os.environ, "INFODROP_CUDA": "0", "PIP_NO_INDEX": "1"}
    result = subprocess.run([sys.executable, "-m", "benchmarks.gpu_check", "--build-only", "--out",
                             str(copy / "runs")], cwd=copy, capture_output=True, text=True,
                            timeout=1800, env=env)
    log = (copy / "runs" / "build.log").read_text() if (copy / "runs" / "build.log").exists() else ""
    assert result.returncode == 0, result.stdout + result.stderr + log[-3000:]
    return copy, env


_USE_IT = ("import sys, torch, infodrop; from infodrop import _ops; assert _ops.COMPILED, "
           "_ops.COMPILED_ERROR; x = torch.rand(2, 3, 4); z, kl = infodrop.information_dropout("
           "x, torch.zeros_like(x), backend='cpu'); assert z.shape == x.shape; print(infodrop.__file__)")


@pytest.mark.slow
def test_build_step_works_with_this_python_and_no_index(built_copy):
    copy, env = built_copy
    assert list((copy / "infodrop").glob("_C.*.so")) and not list((copy / "infodrop").glob("_C_cuda*"))
    report = json.loads((copy / "runs" / "results.json").read_text())
    assert report["Build in place"]["status"] == "passed"
    used = subprocess.run([sys.executable, "-c", _USE_IT], cwd=copy, capture_output=True, text=True,
                          timeout=300, env=env)
    assert used.returncode == 0, used.stderr
    assert used.stdout.strip() == str(copy / "infodrop" / "__init__.py")


@pytest.mark.slow
def test_pip_install_without_build_isolation_or_index(built_copy, tmp_path):
    """pip install --no-build-isolation --no-index --no-deps: the installed torch is the one
    built against, nothing is fetched (pip builds the tree in place: the objects of the build
    above are reused)."""
    copy, env = built_copy
    target = tmp_path / "site"
    result = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-build-isolation",
                             "--no-index", "--no-deps", "--target", str(target), str(copy)],
                            capture_output=True, text=True, timeout=900, env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    used = subprocess.run([sys.executable, "-c", _USE_IT], cwd=tmp_path, capture_output=True,
                          text=True, timeout=300, env={**env, "PYTHONPATH": str(target)})
    assert used.returncode == 0, used.stderr
    assert used.stdout.strip() == str(target / "infodrop" / "__init__.py")


def _counted_rows():
    """Rows of gpu_code_stats for every kernel its predictions read, from made-up counts."""
    from benchmarks import gpu_code_stats as stats
    from benchmarks import sass

    counts = dict.fromkeys(sass.CLASSES, 0.0)
    counts.update(fp32=20.0, alu=20.0, mufu=5.0)
    kinds = ["", " cl-pairs", " cl-pairs straddling"]
    return [stats._row(backend, kernel + kind, dtype, 48, 0, 0, 256, counts, 1, 90)
            for backend in ("cuda", "triton") for kernel in ("forward", "backward")
            for dtype in stats.DTYPES for kind in (kinds if backend == "cuda" else [""])]


def test_counted_code_section_gives_the_predictions_to_compare_with(cpu_report, monkeypatch):
    from benchmarks import gpu_code_stats as stats

    rows = _counted_rows()
    monkeypatch.setattr(stats, "cuda_library", lambda: "library")
    monkeypatch.setattr(stats, "cuda_rows", lambda library, arch: [r for r in rows
                                                                     if r["backend"] == "cuda"])
    monkeypatch.setattr(stats, "triton_rows", lambda arch: [r for r in rows
                                                            if r["backend"] == "triton"])
    assert gpu_check.code_stats(cpu_report, 90) == rows
    text = "\n".join(cpu_report.lines)
    assert "## Predicted from these counts before this run" in text
    assert stats.predictions(rows) in text and "The converted ResNet-50 step predicted" in text
    cpu_report.lines.clear()
    gpu_check.code_stats(cpu_report, 80)  # PREDICT holds for sm_90 only
    assert "## Predicted" not in "\n".join(cpu_report.lines)

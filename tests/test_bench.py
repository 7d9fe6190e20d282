"""python -m infodrop bench: the JSON it writes, saved-for-backward bytes, bad arguments.

Timings are not checked (they depend on the machine); what is checked is what the benchmark
reports beside them, on a tiny shape.
"""

import json
import os
import subprocess
import sys

import pytest
import torch

import infodrop
from infodrop import bench
from infodrop.bench_cases import CONTENDERS, Case, Contender, parse_case, saved_bytes

from ._helpers import interpreted, requires_compiled

SHAPE = (4, 3, 5)
NUMEL = 60


def test_bench_writes_every_record(tmp_path, capsys):
    path = tmp_path / "bench.json"
    names = ["fused-cpu", "reference", "dropout", "clone"] if infodrop.backends()["cpu"] else \
        ["reference", "dropout", "clone"]
    assert bench.main(["--shapes", "4x3x5", "--contenders", *names, "--warmup", "0",
                       "--repeats", "2", "--json", str(path), "--no-progress"]) == 0
    data = json.loads(path.read_text())
    assert data["environment"]["threads"] == torch.get_num_threads()
    assert data["repeats"] == 2 and data["warmup"] == 0
    results = data["results"]
    assert [(r["contender"], r["pass"]) for r in results] == \
        [(n, p) for n in names for p in ("forward", "forward+backward")]
    for r in results:
        assert r["shape"] == list(SHAPE) and r["dtype"] == "float32" and r["device"] == "cpu"
        assert len(r["times_s"]) == 2 and r["median_s"] > 0
        assert r["elements_per_s"] == pytest.approx(NUMEL / r["median_s"])
        assert r["effective_GB_per_s"] == pytest.approx(r["traffic_bytes"] / r["median_s"] / 1e9)
    by_name = {(r["contender"], r["pass"]): r for r in results}
    # least traffic, float32: clone reads x and writes z; its backward hands grad_z through
    assert by_name["clone", "forward"]["traffic_bytes"] == 2 * 4 * NUMEL
    assert by_name["clone", "forward+backward"]["traffic_bytes"] == 2 * 4 * NUMEL
    assert by_name["reference", "forward+backward"]["traffic_bytes"] == 8 * 4 * NUMEL
    assert by_name["clone", "forward"]["saved_bytes"] == 0
    out = capsys.readouterr().out
    table = out[out.index("custom 4x3x5 float32 cpu"):].splitlines()
    assert [line.split()[0] for line in table[3:]] == names


@requires_compiled
def test_fused_op_saves_its_two_inputs_and_three_scalars():
    # x and alpha_logit (float32), and the int64 seed, mu and sigma (float32) 0-dim tensors;
    # never the noise.
    case = Case("tiny", SHAPE)
    assert saved_bytes(CONTENDERS["fused-cpu"], case) == 2 * 4 * NUMEL + 8 + 4 + 4


def test_saved_bytes_counts_each_storage_once(monkeypatch):
    """sin saves its input; x * x saves x twice, which is one storage."""
    from infodrop import bench_cases

    case = Case("tiny", SHAPE, torch.bfloat16)
    for fn in (torch.sin, lambda x: x * x):
        monkeypatch.setattr(bench_cases, "_function", lambda contender, fn=fn: fn)
        assert saved_bytes(Contender("probe", "", False, (2, 2)), case) == 2 * NUMEL


def test_channels_last_case_gives_the_same_values_in_channels_last():
    from infodrop import bench_cases

    plain = bench_cases.make_inputs(Case("r", (2, 3, 4, 5)), requires_grad=True)
    case = Case("r", (2, 3, 4, 5), channels_last=True)
    assert case.label == "r 2x3x4x5 float32 cpu channels_last"
    inputs = bench_cases.make_inputs(case, requires_grad=True)
    for a, b in zip(plain, inputs):
        assert torch.equal(a, b) and a.requires_grad == b.requires_grad
    x, logit, grad_z, grad_kl = inputs
    for t in (x, logit, grad_z):
        assert t.is_contiguous(memory_format=torch.channels_last) and not t.is_contiguous()
    assert grad_kl.shape == (2,)
    with pytest.raises(ValueError, match="channels_last needs a 4-D shape"):
        Case("r", (2, 3, 4), channels_last=True)


def test_step_runs_on_the_inputs_it_is_given(monkeypatch):
    """gpu_check draws the large inputs once per shape and times every step on them."""
    from infodrop import bench_cases

    case = Case("r", (2, 3, 4, 5), channels_last=True)
    inputs = bench_cases.make_inputs(case, requires_grad=True)
    seen = []

    def fn(x, logit):
        seen.append((x, logit))
        return x * logit.sigmoid(), (x * logit).flatten(1).sum(1)

    monkeypatch.setattr(bench_cases, "_function", lambda contender: fn)
    for pass_ in bench_cases.PASSES:
        bench_cases.make_step(CONTENDERS["reference"], case, pass_, inputs=inputs, sync=False)()
    assert len(seen) == 2 and all(x is inputs[0] and logit is inputs[1] for x, logit in seen)
    assert inputs[0].grad is None  # autograd.grad: nothing accumulates between steps


def test_parse_case():
    assert parse_case("allcnn32-a-bf16").shape == (128, 96, 16, 16)
    assert parse_case("allcnn32-a-bf16").dtype == torch.bfloat16
    custom = parse_case("2x7:float16", "cuda")
    assert (custom.shape, custom.dtype, custom.device) == ((2, 7), torch.float16, "cuda")


@pytest.mark.parametrize("args, named", [
    (["--shapes", "4x0"], "--shapes"),
    (["--shapes", "huge"], "--shapes"),
    (["--shapes", "4x3:int8"], "--shapes"),
    (["--repeats", "0"], "--repeats"),
    (["--warmup", "-1"], "--warmup"),
    (["--contenders", "numpy"], "--contenders"),
    (["--threads", "0"], "--threads"),
])
def test_bench_rejects_bad_arguments(args, named, capsys):
    with pytest.raises(SystemExit) as exit_info:
        bench.main(args)
    assert exit_info.value.code == 2 and named in capsys.readouterr().err


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA device is visible")
def test_bench_on_cuda_without_a_gpu_says_so():
    run = subprocess.run([sys.executable, "-m", "infodrop", "bench", "--device", "cuda"],
                         capture_output=True, text=True)
    assert run.returncode == 2 and "no CUDA device is visible" in run.stderr


@requires_compiled
def test_host_cost_table_has_every_contender_and_pass(tmp_path, capsys, monkeypatch):
    from infodrop import bench_host

    real_run = bench_host.run
    monkeypatch.setattr(bench_host, "run", lambda device: real_run(device, steps=2, rounds=2))
    path = tmp_path / "host.json"
    assert bench.main(["--host", "--json", str(path)]) == 0
    records = json.loads(path.read_text())["results"]
    # triton runs on a GPU or under the interpreter only; the suite's main run has neither
    ran = [c for c in bench_host.CONTENDERS if c != "triton" or interpreted()]
    assert [(r["contender"], r["pass"], r["measure"]) for r in records] == \
        [(c, p, m) for c in ran for p in bench_host.PASSES for m in bench_host.MEASURES]
    assert all(r["host_us"] > 0 and r["device_us"] is None for r in records)
    out = capsys.readouterr().out
    table = out.splitlines()[:-1] if not interpreted() else out.splitlines()
    assert [line.split()[0] for line in table[-len(ran):]] == ran
    assert ("not run on cpu: triton" in out) is not interpreted()


@requires_compiled
def test_host_cost_of_the_triton_backend_is_timed_through_triton():
    """The Triton fallback's host time (issue 19: at most 1.5x the cuda path's) is a contender
    of its own: under the interpreter here, on the GPU in gpu-check; each of its calls goes
    through infodrop.triton (counted), not the compiled kernel "functional" resolves to."""
    script = (
        "import infodrop.triton.ops as t\n"
        "from infodrop import bench_host\n"
        "calls = []\n"
        "real = t.fused\n"
        "t.fused = lambda *a, **k: calls.append(1) or real(*a, **k)\n"
        "records = bench_host.run('cpu', steps=1, rounds=1, contenders=('triton', 'dropout'))\n"
        "print(sorted({r['contender'] for r in records}), len(calls) > 0,\n"
        "      sorted(bench_host.ratios(records, 'triton', 'dropout')) == sorted(\n"
        "          (p, m) for p in bench_host.PASSES for m in bench_host.MEASURES))\n")
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         env={**os.environ, "TRITON_INTERPRET": "1"}, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.split("\n")[-2] == "['dropout', 'triton'] True True"

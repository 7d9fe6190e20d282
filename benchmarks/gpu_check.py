"""`make gpu-check`: everything this project can only learn on a GPU, on a GPU machine as it
comes (torch installed, no network, no venv), in one command and one report
(runs/gpu-check/report.md, copied to $OUT when that is set), designed to take under 8 minutes on
an H100 or H200, the build included:

0. with --build, the extensions built in place by this Python (setup.py build_ext --inplace,
   MAX_JOBS from the CPU count, TORCH_CUDA_ARCH_LIST from the GPU found)
1. every backend against the reference and the CPU kernel: python -m infodrop check --device cuda
2. the tests marked cuda (the CUDA-graph tests among them)
3. the counted code of both GPU backends (benchmarks/gpu_code_stats.py)
4. the host time of a layer call on tiny tensors (infodrop/bench_host.py), cuda path, Triton and
   F.dropout: Triton's against the cuda path's (issue 19: at most 1.5x)
5. the layer at ResNet-50's shapes, contiguous and channels_last, forward and forward+backward,
   timed by triton.testing.do_bench (CUDA events, no synchronisation per call, the L2 flushed
   before each): fused CUDA and Triton, the eager reference, torch.compile of it and F.dropout,
   with the GB/s of each one's least traffic against a copy of the same tensor, measured
6. the ResNet-50 training step (torchvision, batch 128, 224x224, bf16 autocast, SGD momentum):
   plain, nn.Dropout, and converted with 1x1 alpha heads on layer2-4 on the CUDA and on the Triton
   backend, and the 1x1 alpha heads alone (no dropout op), what they add to the converted step
   by themselves, in channels_last; then plain and converted (CUDA backend, channels_last) under
   torch.compile(model) (inductor; the loss, the KL and the optimizer eager), the ratio against
   compiled plain, each started only while its own budget has room for a compile; then the
   eager steps in NCHW while the section's budget lasts
7. the top device ops of a profiled converted step (CUDA backend, channels_last)

Each section has a time budget (BUDGET_S) inside an overall deadline: what does not fit is
skipped and the report says so; a failing section (torch.compile, say) is recorded, not fatal.
Without a CUDA GPU it prints "no CUDA GPU" and exits with status 2, having checked and built
nothing.  --build-only builds and exits, GPU or not (the test of the build step runs it).
"""

import argparse
import gc
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import sysconfig
import time

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Seconds per section: caps, inside DEADLINE_S from the start (build included), which leaves
# 40 s of benchmarks/gpu_session.sh's 510 for Python's start, the copy to $OUT and a slow
# section.  Expected on an H100/H200 (16 cores): build ~60 (measured on the H200), check ~20,
# tests ~60, code stats ~20 (not capped: in process, no timer), host ~15, layer ~120 (16
# torch.compile graphs of ~5 s), network: its channels_last eager steps ~35 (five models, ~25
# steps each), then its compiled steps with what is left, at most network-compiled (~40-60 s per
# compile, not measured yet: the report gives each first step), then the NCHW eager steps if
# the network's budget still allows.
DEADLINE_S = 470
BUDGET_S = {"check": 60, "tests": 150, "host": 40, "layer": 150, "network": 100,
            "network-compiled": 150}
# torch.compile of the reference starts only with this much of the layer's budget left: one graph
# takes seconds to compile, the other contenders' timings fractions of one
COMPILE_RESERVE_S = 30
# the build's own limit on a GPU machine (~60 s measured there); --build-only has none: on a
# loaded 2-core machine the CPU extension alone took 10 minutes
BUILD_LIMIT_S = 300

# ResNet-50's activations where Information Dropout goes (outputs of layer1-3 at batch 128), bf16
# as trained, and the middle one in fp32
LAYER_SHAPES = (((128, 256, 56, 56), torch.bfloat16), ((128, 512, 28, 28), torch.bfloat16),
                ((128, 1024, 14, 14), torch.bfloat16), ((128, 512, 28, 28), torch.float32))
LAYER_CONTENDERS = ("fused-cuda", "fused-triton", "reference", "reference-compiled", "dropout")

NETWORK = ("resnet50", ("layer2", "layer3", "layer4"))  # torchvision builder, targets
NETWORK_BATCH, NETWORK_SIDE = 128, 224
# (contender of infodrop/bench_network.py, backend of the fused op); each in channels_last first
NETWORK_CONTENDERS = (("plain", None), ("dropout", None), ("heads-1x1", None), ("fused-1x1", "cuda"),
                      ("fused-1x1", "triton"))
# timed in channels_last only: the alpha heads alone (the part of the converted step that is
# neither the layer's kernels nor layout copies) are wanted where the target is
CHANNELS_LAST_ONLY = ("heads-1x1",)
# then these under torch.compile(model), channels_last, within BUDGET_S["network-compiled"]
NETWORK_COMPILED = (("plain", None), ("fused-1x1", "cuda"))
# a compiled step starts only with this much of that budget left: compiling ResNet-50's forward
# and backward takes tens of seconds even on 16 cores (not measured yet: ~40-60 s expected), its
# timing a few; 90 so that one started at the deadline's edge still ends before
# gpu_session.sh's limit (the report keeps what came before it either way)
NETWORK_COMPILE_RESERVE_S = 90
PROFILED = ("fused-1x1-cl", "cuda")
PROFILE_ROWS = 40


class Clock:
    """Seconds left to a section: its cap, or what is left to the overall deadline if less."""

    def __init__(self, deadline_s):
        self.start = time.monotonic()
        self.deadline = self.start + deadline_s

    def budget(self, section):
        return max(0.0, min(BUDGET_S[section], self.deadline - time.monotonic()))

    def elapsed(self):
        return time.monotonic() - self.start


class Report:
    """The markdown report, written (and copied to $OUT) after every section, so that a run
    stopped from outside still leaves what it measured; logs go beside it."""

    def __init__(self, directory):
        self.directory = directory
        self.lines = []
        self.results = {}
        os.makedirs(directory, exist_ok=True)

    def add(self, *lines):
        self.lines += lines

    def save_file(self, name, text):
        path = os.path.join(self.directory, name)
        with open(path, "w") as f:
            f.write(text)
        out = os.environ.get("OUT")
        if out and os.path.isdir(out):
            shutil.copy(path, os.path.join(out, name))
        return path

    def flush(self):
        self.save_file("results.json", json.dumps(self.results, indent=1, default=str) + "\n")
        return self.save_file("report.md", "\n".join(self.lines) + "\n")


def run_command(title, command, report, log_name, timeout_s, env=None):
    """Runs ``command`` in the repository, its whole output to ``log_name`` and the tail to the
    report; stopped (with its process group: pytest-xdist's workers too) after ``timeout_s``
    (None: no limit)."""
    started = time.monotonic()
    if timeout_s is not None and timeout_s < 1:
        report.add(f"## {title}: skipped (no time left)", "")
        return False
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        output, _ = process.communicate(timeout=timeout_s)
        status = "passed" if process.returncode == 0 else f"FAILED (exit {process.returncode})"
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        output, _ = process.communicate()
        status = f"STOPPED after its {timeout_s:.0f} s budget"
    seconds = time.monotonic() - started
    print(f"{title}: {status} ({seconds:.0f} s)", flush=True)
    report.save_file(log_name, output)
    report.add(f"## {title}: {status} ({seconds:.0f} s; whole log: {log_name})", "", "```",
               " ".join(command), *output.strip().splitlines()[-30:], "```", "")
    report.results[title] = {"status": status, "seconds": seconds}
    return process.returncode == 0


def build_environment():
    """MAX_JOBS from the CPUs this process may use, TORCH_CUDA_ARCH_LIST the visible GPU's
    (one architecture: half the nvcc time of setup.py's default pair); either kept where set."""
    env = dict(os.environ)
    env.setdefault("MAX_JOBS", str(len(os.sched_getaffinity(0))))
    if torch.cuda.is_available():
        major, minor = torch.cuda.get_device_capability()
        env.setdefault("TORCH_CUDA_ARCH_LIST", f"{major}.{minor}")
    return env


def build(report, timeout_s=None):
    """setup.py build_ext --inplace with this Python: no venv, no pip, nothing downloaded."""
    env = build_environment()
    report.add(f"MAX_JOBS={env['MAX_JOBS']} TORCH_CUDA_ARCH_LIST={env.get('TORCH_CUDA_ARCH_LIST', '')}"
               f" INFODROP_CUDA={env.get('INFODROP_CUDA', '')}", "")
    return run_command("Build in place", [sys.executable, "setup.py", "build_ext", "--inplace"],
                       report, "build.log", timeout_s, env=env)


def pytest_command():
    """The cuda-marked tests, on 4 processes where pytest-xdist is installed (it is on the GPU
    machines' image), each test stopped after 120 s where pytest-timeout is."""
    import importlib.util

    # a test module that cannot be imported (a package the image lacks) fails alone, not the run
    command = [sys.executable, "-m", "pytest", "-q", "-rfE", "-m", "cuda", "-p", "no:cacheprovider",
               "--continue-on-collection-errors"]
    if importlib.util.find_spec("xdist") is not None:
        command += ["-n", "4"]
    if importlib.util.find_spec("pytest_timeout") is not None:
        command += ["--timeout", "120"]
    return command + ["tests"]


def code_stats(report, arch):
    import benchmarks.gpu_code_stats as stats

    table_arch = arch if arch in stats.GPUS else 90
    rows = []
    library = stats.cuda_library()
    if library is not None:
        rows += stats.cuda_rows(library, table_arch)
    rows += stats.triton_rows(table_arch)
    report.add(f"## Counted code (benchmarks/gpu_code_stats.py, sm_{table_arch})", "",
               stats.table(rows, table_arch), "")
    if table_arch == 90 and rows:  # PREDICT is calibrated on sm_90 (the H200's first run)
        report.add("## Predicted from these counts before this run (gpu_code_stats --predict), "
                   "to compare with the tables below", "", stats.predictions(rows), "")
    return rows


def predicted_us(rows, backend, kernel, dtype, numel, bandwidth):
    """max(memory floor at the measured bandwidth, counted issue floor) for `numel` elements."""
    for r in rows:
        if (r["backend"], r["kernel"], r["dtype"]) == (backend, kernel, dtype):
            memory_ps = r["memory_ps"] * 3.0e12 / bandwidth  # the table assumed 3.0 TB/s
            return max(memory_ps, r["issue_ps"]) * numel * 1e-6
    return None


def do_bench_ms(fn, rep_ms=100):
    """Median ms of ``fn`` by triton.testing.do_bench: CUDA events around each call, no
    synchronisation between calls, the L2 cache flushed before each."""
    from triton.testing import do_bench

    return do_bench(fn, warmup=25, rep=rep_ms, return_mode="median")


def error_text(error):
    """One line of the report for a failure: the error's first line, and its second where the
    first only leads to it (torch.compile's BackendCompilerFailed: "backend='inductor' raised:",
    then the backend's error)."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()] or [""]
    text = " ".join(lines[:2]) if lines[0].endswith(":") else lines[0]
    return f"{type(error).__name__}: {text[:300]}"


# bench_host's contenders timed here: "functional" runs the backend "auto" picks (the compiled
# kernel, cuda, once built), "triton" the fallback, F.dropout the yardstick
HOST_CONTENDERS = ("functional", "triton", "dropout")
HOST_STEPS, HOST_ROUNDS = 100, 5


def host(report, clock, *, device="cuda", steps=HOST_STEPS, rounds=HOST_ROUNDS):
    """Host time per layer call on tiny tensors, and Triton's against the cuda path's (issue 19
    point 3: at most 1.5x); device is a parameter for the CPU test of this code."""
    from infodrop import bench_host
    from infodrop._backends import resolve

    budget_end = time.monotonic() + clock.budget("host")
    auto = resolve("auto", torch.device(device))
    records, left_out = [], []
    for name in HOST_CONTENDERS:
        if not bench_host.runs_on(name, device):
            left_out.append(f"{name} (does not run on {device} here)")
        elif time.monotonic() > budget_end:
            left_out.append(f"{name} (the section's budget is spent)")
        else:
            records += bench_host.run(device, steps, rounds, contenders=(name,))
    report.results["host"] = records
    report.add(f"## Host time per layer call ({bench_host.SHAPE} tensors, infodrop/bench_host.py; "
               f"best of {rounds} loops; functional runs the {auto!r} backend)", "")
    if any(r["contender"] == "dropout" for r in records):
        report.add("```", *bench_host.format_table(records).splitlines(), "```", "")
    if left_out:
        report.add(f"Not timed: {', '.join(left_out)}.", "")
    if auto == "triton":  # no compiled CUDA kernel: nothing to compare Triton with
        report.add("No Triton / cuda ratio: functional ran the 'triton' backend itself (the CUDA "
                   "extension was not built).")
    else:
        for (pass_, measure), ratio in bench_host.ratios(records, "triton", "functional").items():
            report.add(f"- Triton / {auto}, {pass_}, {measure}: {ratio:.2f}x (issue 19: at most "
                       "1.5x)")
    report.add("")


def layer(report, clock, rows, *, shapes=LAYER_SHAPES, contenders=LAYER_CONTENDERS, device="cuda"):
    """The layer's table; shapes, contenders and device are parameters for the CPU test of this
    code (tests/test_gpu_check.py), which has no GPU to run it on."""
    from infodrop import bench_cases as bc

    budget_end = time.monotonic() + clock.budget("layer")
    report.add("## The layer at ResNet-50's shapes (triton.testing.do_bench: median, CUDA events, "
               "no sync per call, L2 flushed)", "",
               "GB/s: the contender's least traffic (forward 3 full-size tensors, forward+backward "
               "8; F.dropout 2 and 4, masks left out) over its time; 'of copy': over the bandwidth "
               "of x.clone() measured on the same tensor. 'predicted': the fused kernels' floors "
               "from the counted code (no launch overhead or per-sample sums).", "",
               "| shape, dtype, layout | pass | contender | time | GB/s | of copy | predicted |",
               "|---|---|---|---|---|---|---|")
    compile_error = None
    records = report.results.setdefault("layer", [])
    for shape, dtype in shapes:
        if time.monotonic() > budget_end:
            report.add(f"| {'x'.join(map(str, shape))} {dtype} | | | skipped: the section's "
                       "budget is spent | | | |")
            continue
        base = bc.make_inputs(bc.Case("resnet50", shape, dtype, device), requires_grad=True)
        for channels_last in (False, True):
            case = bc.Case("resnet50", shape, dtype, device, channels_last=channels_last)
            inputs = bc.in_layout(case, base)
            copy_ms = do_bench_ms(lambda x=inputs[0]: x.clone())
            bandwidth = 2 * case.numel * inputs[0].element_size() / (copy_ms * 1e-3)
            report.add(f"| {case.label} | copy | x.clone() | {copy_ms * 1e3:.1f} us | "
                       f"{bandwidth / 1e9:.0f} | 100% | |")
            print(report.lines[-1], flush=True)
            for pass_ in bc.PASSES:
                for name in contenders:
                    contender = bc.CONTENDERS[name]
                    why = bc.unavailable(contender, device)
                    if why is None and time.monotonic() > budget_end:
                        why = "the section's budget is spent"
                    if why is None and name == "reference-compiled":
                        if compile_error:
                            why = "torch.compile failed above"
                        elif time.monotonic() > budget_end - COMPILE_RESERVE_S:
                            why = "too little of the section's budget left to compile"
                    if why:
                        report.add(f"| {case.label} | {pass_} | {name} | - ({why}) | | | |")
                        continue
                    try:
                        ms = do_bench_ms(bc.make_step(contender, case, pass_, inputs=inputs,
                                                      sync=False))
                    except Exception as error:  # noqa: BLE001 - recorded; the rest still runs
                        message = error_text(error)
                        if name == "reference-compiled":
                            compile_error = message
                        report.add(f"| {case.label} | {pass_} | {name} | FAILED: {message} | | | |")
                        print(report.lines[-1], flush=True)
                        continue
                    gbs = bc.traffic_bytes(contender, case, pass_) / (ms * 1e-3) / 1e9
                    predicted = ""
                    if name.startswith("fused-"):
                        kernels = ("forward",) if pass_ == "forward" else ("forward", "backward")
                        parts = [predicted_us(rows, name.removeprefix("fused-"), k,
                                              str(dtype).removeprefix("torch."), case.numel,
                                              bandwidth) for k in kernels]
                        if parts and None not in parts:
                            predicted = f"{sum(parts):.1f} us"
                    report.add(f"| {case.label} | {pass_} | {name} | {ms * 1e3:.1f} us | {gbs:.0f} | "
                               f"{gbs * 1e9 / bandwidth:.0%} | {predicted} |")
                    print(report.lines[-1], flush=True)
                    records.append({"case": case.label, "pass": pass_, "contender": name,
                                    "us": ms * 1e3, "GB_per_s": gbs, "copy_GB_per_s": bandwidth / 1e9})
            del inputs
        del base
        gc.collect()
        torch.cuda.empty_cache()
    if compile_error:
        report.add("", f"torch.compile of the reference failed: `{compile_error}`")
    report.add("")


def profile_table(step, cuda=True):
    """The top ops of three profiled steps, by their own device time (CPU time without CUDA),
    one row per op and input shapes: the alpha heads' bias adds (a (C, 1, 1) operand), their
    bias gradients and the extra gradient accumulations at layer2-4's inputs are then rows of
    their own, apart from the network's own adds and sums (docs/performance.md: the levers
    outside the layer's kernels)."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with profile(activities=activities, record_shapes=True) as prof:
        for _ in range(3):
            step()
        if cuda:
            torch.cuda.synchronize()
    key = "self_device_time_total" if cuda else "self_cpu_time_total"
    return prof.key_averages(group_by_input_shape=True).table(sort_by=key, row_limit=PROFILE_ROWS)


def network(report, clock, *, builder=NETWORK, contenders=NETWORK_CONTENDERS, compiled=NETWORK_COMPILED,
            profiled=PROFILED, batch=NETWORK_BATCH, side=NETWORK_SIDE, device="cuda",
            compile_backend="inductor"):
    """The network's table and profile; what it runs is a parameter for the CPU test (which
    compiles with a cheap backend)."""
    from infodrop import bench_network as bn

    spec = bn.Network(builder[0], *builder)
    targets = ", ".join(spec.targets)
    budget_end = time.monotonic() + clock.budget("network")
    torch.backends.cudnn.benchmark = True  # as CNNs are trained
    report.add(f"## {spec.name} training step (torchvision, batch {batch}, {side}x{side}, bf16 "
               "autocast, SGD momentum, KL term in the loss; cudnn.benchmark; do_bench median "
               "after 3 warm-up steps)", "",
               f"Converted: infodrop.convert(alpha_head='1x1') on {targets} (their outputs); "
               "dropout: nn.Dropout(0.5) in the same places; heads-1x1: the same alpha heads "
               "computed and back-propagated with no dropout op between (what they cost alone). "
               "'vs plain' and 'added ms' compare within a layout and step: 'added' is over the "
               "contender named, fused over its heads alone where they were timed. Compiled "
               f"step: torch.compile(model) ({compile_backend}); the loss, the KL and the "
               "optimizer eager.", "",
               "| contender | backend | layout | step | ms/step | vs plain | added ms (over) | "
               "peak GiB |",
               "|---|---|---|---|---|---|---|---|")
    records = report.results.setdefault("network", [])
    measured, table = {}, None  # (stem, layout, step) -> ms
    cuda = torch.device(device).type == "cuda"

    def row(stem, backend, layout, step_kind, *cells):
        report.add(f"| {stem} | {backend or ''} | {layout} | {step_kind} | " + " | ".join(cells) + " |")
        print(report.lines[-1], flush=True)

    def time_row(stem, backend, layout, suffix, step_backend=None):
        """Times one contender and reports its row; the error's text if it failed."""
        nonlocal table
        step_kind = "eager" if step_backend is None else "torch.compile"
        try:
            step = bn.make_step(spec, stem + suffix, batch, side, device=device, backend=backend,
                                autocast=torch.bfloat16, compile_backend=step_backend)
            started = time.monotonic()
            step()  # torch.compile compiles here (lazily: the forward's graph, then the backward's)
            if cuda:
                torch.cuda.synchronize()
            first_s = time.monotonic() - started
            for _ in range(2):
                step()
            if cuda:
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
            ms = do_bench_ms(step, rep_ms=600)
            peak = torch.cuda.max_memory_allocated() / 2**30 if cuda else None
            if step_backend is None and (stem + suffix, backend) == profiled:
                table = profile_table(step, cuda)
        except Exception as error:  # noqa: BLE001 - recorded; the rest still runs
            message = error_text(error)
            row(stem, backend, layout, step_kind, f"FAILED: {message}", "", "", "")
            return message
        finally:
            step = None
            gc.collect()
            if cuda:
                torch.cuda.empty_cache()
        measured[stem, layout, step_kind] = ms
        plain = measured.get(("plain", layout, step_kind))
        ratio = f"{ms / plain:.3f}x" if plain else ""
        # the fused layer over its heads alone where they were timed, the rest over plain
        base = "heads-" + stem.removeprefix("fused-") if stem.startswith("fused-") else "plain"
        if (base, layout, step_kind) not in measured:
            base = "plain"
        added = f"{ms - measured[base, layout, step_kind]:+.1f} ({base})" \
            if stem != "plain" and (base, layout, step_kind) in measured else ""
        gib = "-" if peak is None else f"{peak:.1f}"
        row(stem, backend, layout, step_kind, f"{ms:.1f}", ratio, added, gib)
        records.append({"contender": stem, "backend": backend, "layout": layout,
                        "compiled": step_backend is not None, "compile_backend": step_backend,
                        "ms": ms, "peak_GiB": peak, "first_step_s": first_s})
        return None

    def eager_rows(suffix, layout):
        for stem, backend in contenders:
            if not suffix and stem in CHANNELS_LAST_ONLY:
                continue
            if time.monotonic() > budget_end:
                row(stem, backend, layout, "eager", "skipped: the section's budget is spent", "",
                    "", "")
            else:
                time_row(stem, backend, layout, suffix)

    # channels_last first, then the compiled steps, then NCHW: the target is the
    # channels_last step, eager and compiled; the NCHW rows only show what the layout costs
    eager_rows(bn.CHANNELS_LAST, "channels_last")
    # a run stopped from outside during a compile still leaves the eager table and the profile
    if table is not None:
        report.save_file("profile.txt", table)
    report.flush()
    # the compiled steps: each starts only with NETWORK_COMPILE_RESERVE_S of their own budget
    # left (a compile cannot be stopped halfway), and none after a compile failed
    compiled_end = time.monotonic() + clock.budget("network-compiled")
    compile_error = None
    for stem, backend in compiled:
        left = max(0.0, compiled_end - time.monotonic())
        why = "torch.compile failed above" if compile_error else \
            f"too little time left to compile ({left:.0f} s of the compiled steps' budget, " \
            f"{NETWORK_COMPILE_RESERVE_S} s needed)" if left < NETWORK_COMPILE_RESERVE_S else None
        if why:
            row(stem, backend, "channels_last", "torch.compile", f"skipped: {why}", "", "", "")
            continue
        compile_error = time_row(stem, backend, "channels_last", bn.CHANNELS_LAST, compile_backend)
        torch._dynamo.reset()  # the compiled graphs go with their model
        report.flush()
    eager_rows("", "NCHW")
    report.add("")
    firsts = [f"{r['contender']} {r['first_step_s']:.0f} s" for r in records if r["compiled"]]
    if firsts:
        report.add(f"First compiled step (the compile, forward and backward): {', '.join(firsts)}.", "")
    if compile_error:
        report.add(f"torch.compile of the step failed: `{compile_error}`", "")
    if table is not None:
        report.add(f"## Top device ops of the converted step ({profiled[0]}, backend "
                   f"{profiled[1]}; 3 steps, torch.profiler key_averages by own device time)", "",
                   "```", *table.strip().splitlines(), "```", "")
    report.flush()


def header(report):
    name = torch.cuda.get_device_name()
    major, minor = torch.cuda.get_device_capability()
    try:
        import triton

        triton_version = triton.__version__
    except ImportError:
        triton_version = "not installed"
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                                text=True).stdout.strip() or "unknown"
    except OSError:
        commit = "unknown"
    report.add(f"# gpu-check on {name} (sm_{major}{minor}), {time.strftime('%Y-%m-%d %H:%M %Z')}", "",
               f"torch {torch.__version__} (CUDA {torch.version.cuda}), triton {triton_version}, "
               f"Python {platform.python_version()} ({sys.executable}), {os.cpu_count()} CPUs, "
               f"commit {commit}", "")
    report.results["environment"] = {"gpu": name, "capability": f"{major}.{minor}",
                                     "torch": torch.__version__, "triton": triton_version,
                                     "commit": commit}
    return 10 * major + minor


def section(title, report, fn, *args):
    """Runs one in-process section; an exception is recorded in the report, not fatal."""
    started = time.monotonic()
    try:
        result = fn(*args)
    except Exception as error:  # noqa: BLE001 - the report says what failed; the rest runs
        report.add(f"## {title}: FAILED", "", "```", f"{type(error).__name__}: {error}"[:2000], "```", "")
        result = None
    seconds = time.monotonic() - started
    print(f"{title}: {seconds:.0f} s", flush=True)
    report.results.setdefault("seconds", {})[title] = seconds
    report.flush()
    return result


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=os.path.join(ROOT, "runs", "gpu-check"))
    parser.add_argument("--build", action="store_true",
                        help="first build the extensions in place with this Python")
    parser.add_argument("--build-only", action="store_true",
                        help="build the extensions in place with this Python and stop (no GPU needed)")
    args = parser.parse_args(argv)
    clock = Clock(DEADLINE_S)
    if args.build_only:
        report = Report(args.out)
        ok = build(report)
        report.flush()
        return 0 if ok else 1
    if not torch.cuda.is_available():
        print("gpu-check: no CUDA GPU is visible here (torch.cuda.is_available() is False); "
              "nothing was checked or built. Run `make gpu-check` on a machine with a CUDA GPU.",
              file=sys.stderr)
        return 2
    report = Report(args.out)
    arch = header(report)
    if args.build:
        if not build(report, timeout_s=BUILD_LIMIT_S):
            print(f"gpu-check: the build failed: {report.flush()}", file=sys.stderr)
            return 1
        # setup.py skips the CUDA extension quietly where it finds no nvcc: say so up front
        cuda_library = os.path.join(ROOT, "infodrop", "_C_cuda" + sysconfig.get_config_var("EXT_SUFFIX"))
        report.add(f"CUDA extension built: {'yes' if os.path.exists(cuda_library) else 'NO'} "
                   f"({cuda_library})", "")
        report.flush()
    python = sys.executable
    ok = run_command("Every backend against the reference", [python, "-m", "infodrop", "check",
                                                             "--device", "cuda"],
                     report, "check.log", clock.budget("check"))
    report.flush()
    ok &= run_command("Tests marked cuda", pytest_command(), report, "tests.log", clock.budget("tests"))
    report.flush()
    rows = section("Counted code", report, code_stats, report, arch) or []
    section("Host time", report, host, report, clock)
    section("The layer", report, layer, report, clock, rows)
    section("ResNet-50 step", report, network, report, clock)
    report.add(f"Whole run: {clock.elapsed():.0f} s.")
    path = report.flush()
    print(f"report: {path}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

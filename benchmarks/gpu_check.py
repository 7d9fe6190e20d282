"""`make gpu-check`: everything this project can only learn on a GPU, in one command and one
report (runs/gpu-check/report.md), in a few minutes on an H100:

1. every backend against the reference and the CPU kernel: python -m infodrop check --device cuda
2. the tests marked cuda, and the CUDA-graph capture tests (tests/test_cuda_graphs.py)
3. the copy bandwidth, measured (a 512 MiB device-to-device copy)
4. the benchmark at the paper's shapes (infodrop/bench_cases.py SHAPES), timed with CUDA events:
   fused CUDA, Triton, the eager reference, torch.compile of the reference and F.dropout; achieved
   GB/s of the least traffic of each, against the copy bandwidth, and for the fused kernels the
   time predicted from their counted instructions (benchmarks/gpu_code_stats.py)

Without a CUDA GPU it prints "no CUDA GPU" and exits with status 2 (nothing was checked).
"""

import argparse
import os
import subprocess
import sys
import time

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

CONTENDERS = ("fused-cuda", "fused-triton", "reference", "reference-compiled", "dropout")


def run_step(title, command, report):
    started = time.time()
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    output = (result.stdout + result.stderr).strip().splitlines()
    status = "passed" if result.returncode == 0 else f"FAILED (exit {result.returncode})"
    print(f"{title}: {status} ({time.time() - started:.0f} s)", flush=True)
    report += [f"## {title}: {status}", "", "```", " ".join(command), *output[-25:], "```", ""]
    return result.returncode == 0


def timed(fn, iterations):
    """Mean milliseconds per call, CUDA events around `iterations` calls after a warm-up."""
    for _ in range(3):
        fn()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(iterations):
        fn()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) / iterations


def copy_bandwidth():
    """Bytes per second of a device-to-device copy (read + write)."""
    src = torch.empty(256 * 2**20, dtype=torch.float16, device="cuda")
    dst = torch.empty_like(src)
    ms = timed(lambda: dst.copy_(src), 20)
    return 2 * src.numel() * src.element_size() / (ms * 1e-3)


def predicted_us(rows, backend, kernel, dtype, numel, bandwidth):
    """max(memory floor at the measured bandwidth, counted issue floor) for `numel` elements."""
    for r in rows:
        if (r["backend"], r["kernel"], r["dtype"]) == (backend, kernel, dtype):
            memory_ps = r["memory_ps"] * 3.0e12 / bandwidth  # the table assumed 3.0 TB/s
            return max(memory_ps, r["issue_ps"]) * numel * 1e-6
    return None


def benchmark(report, bandwidth, rows, iterations):
    from infodrop import bench_cases as bc

    report += ["## Benchmark (CUDA events, mean of "
               f"{iterations} calls after 3 warm-up; copy bandwidth {bandwidth / 1e9:.0f} GB/s)", "",
               "| shape | pass | contender | time | GB/s (least traffic) | of copy | predicted |",
               "|---|---|---|---|---|---|---|"]
    for name, (shape, dtype) in bc.SHAPES.items():
        case = bc.Case(name, shape, dtype, "cuda")
        for pass_ in bc.PASSES:
            for contender_name in CONTENDERS:
                contender = bc.CONTENDERS[contender_name]
                why = bc.unavailable(contender, "cuda")
                if why:
                    report.append(f"| {case.label} | {pass_} | {contender_name} | - ({why}) | | | |")
                    continue
                ms = timed(bc.make_step(contender, case, pass_), iterations)
                traffic = bc.traffic_bytes(contender, case, pass_)
                gbs = traffic / (ms * 1e-3) / 1e9
                predicted = ""
                if contender_name.startswith("fused-"):
                    backend = contender_name.removeprefix("fused-")
                    dtype_name = str(dtype).removeprefix("torch.")
                    kernels = ("forward",) if pass_ == "forward" else ("forward", "backward")
                    parts = [predicted_us(rows, backend, k, dtype_name, case.numel, bandwidth)
                             for k in kernels]
                    if None not in parts:
                        predicted = f"{sum(parts):.1f} us (kernels only)"
                report.append(f"| {case.label} | {pass_} | {contender_name} | {ms * 1e3:.1f} us | "
                              f"{gbs:.0f} | {gbs * 1e9 / bandwidth:.0%} | {predicted} |")
                print(report[-1], flush=True)
    report.append("")
    report.append("Each timed call ends in a device synchronisation (bench_cases.make_step), so "
                  "small shapes include launch latency; predicted times are the kernels' floors "
                  "without launch overhead or the per-sample sums.")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=os.path.join(ROOT, "runs", "gpu-check"))
    parser.add_argument("--iterations", type=int, default=50)
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print("gpu-check: no CUDA GPU is visible here (torch.cuda.is_available() is False); "
              "nothing was checked. Run `make gpu-check` on a machine with a CUDA GPU.",
              file=sys.stderr)
        return 2
    import benchmarks.gpu_code_stats as stats

    name = torch.cuda.get_device_name()
    major, minor = torch.cuda.get_device_capability()
    arch = 10 * major + minor
    report = [f"# gpu-check on {name} (sm_{arch}), torch {torch.__version__}", ""]
    python = sys.executable
    ok = run_step("Every backend against the reference", [python, "-m", "infodrop", "check",
                                                          "--device", "cuda"], report)
    ok &= run_step("Tests marked cuda", [python, "-m", "pytest", "-q", "-m", "cuda", "tests"],
                   report)
    ok &= run_step("CUDA graph capture", [python, "-m", "pytest", "-q", "tests/test_cuda_graphs.py"],
                   report)
    table_arch = arch if arch in stats.GPUS else 90
    rows = []
    library = stats.cuda_library()
    if library is not None:
        rows += stats.cuda_rows(library, table_arch)
    rows += stats.triton_rows(table_arch)
    report += [f"## Counted code (benchmarks/gpu_code_stats.py, sm_{table_arch})", "",
               stats.table(rows, table_arch), ""]
    bandwidth = copy_bandwidth()
    print(f"copy bandwidth: {bandwidth / 1e9:.0f} GB/s", flush=True)
    benchmark(report, bandwidth, rows, args.iterations)
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, "report.md")
    with open(path, "w") as f:
        f.write("\n".join(report) + "\n")
    print(f"report: {path}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

"""python -m infodrop bench: throughput of the fused op against its alternatives, without pytest.

For each shape: the median time of each contender (after warm-up) for the forward pass alone
(no grad) and for forward + backward, its ratio to the fused op of the device, and the bytes it
saves for backward (measured through saved_tensors_hooks).  The matrix is the one the
pytest-benchmark suite in benchmarks/ runs (infodrop/bench_cases.py).
"""

import argparse
import json
import platform
import statistics
import sys
import time

import torch

from . import bench_host
from .bench_cases import (
    CONTENDERS,
    FUSED,
    PASSES,
    SHAPES,
    make_step,
    parse_case,
    saved_bytes,
    traffic_bytes,
    unavailable,
)

DEFAULT_WARMUP, DEFAULT_REPEATS = 3, 15
QUICK = {"shapes": ["mlp"], "warmup": 1, "repeats": 3}


def time_step(step, warmup: int, repeats: int):
    """Seconds of each of ``repeats`` calls, after ``warmup`` calls (compilation, caches)."""
    for _ in range(warmup):
        step()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return times


def run(cases, contenders, passes, warmup, repeats, progress=True):
    """One record per (case, contender, pass) that runs here, and the (case, contender) skipped."""
    jobs, skipped = [], []
    for case in cases:
        for c in contenders:
            why = unavailable(c, case.device)
            if why:
                skipped.append({"case": case.label, "contender": c.name, "why": why})
            else:
                jobs.append((case, c))
    records = []
    total = len(jobs) * len(passes)
    for case, contender in jobs:
        saved = saved_bytes(contender, case)
        for pass_ in passes:
            if progress:  # one overwritten line on stderr: the tables stay clean on stdout
                print(f"\r[{len(records) + 1}/{total}] {case.name} {contender.name} {pass_}"
                      .ljust(72), end="", file=sys.stderr, flush=True)
            times = time_step(make_step(contender, case, pass_), warmup, repeats)
            median = statistics.median(times)
            records.append({
                "case": case.label, "shape": list(case.shape),
                "dtype": str(case.dtype).removeprefix("torch."), "device": case.device,
                "contender": contender.name, "pass": pass_, "times_s": times,
                "median_s": median, "elements_per_s": case.numel / median,
                "traffic_bytes": traffic_bytes(contender, case, pass_),
                "effective_GB_per_s": traffic_bytes(contender, case, pass_) / median / 1e9,
                "saved_bytes": saved,
            })
    if progress and total:
        print(file=sys.stderr)
    return records, skipped


def _fused_median(records, case, pass_):
    for name in FUSED:  # the first fused backend measured is the yardstick
        for r in records:
            if (r["case"], r["contender"], r["pass"]) == (case, name, pass_):
                return r["median_s"]
    return None


def format_tables(records, passes) -> str:
    """One table per case: rows are contenders, columns the passes' medians and ratios."""
    lines = []
    for case in dict.fromkeys(r["case"] for r in records):
        rows = [r for r in records if r["case"] == case]
        head = f"{'contender':<19}"
        for pass_ in passes:
            head += f" {pass_ + ' ms':>20} {'/ fused':>8} {'GB/s':>7}"
        head += f" {'saved for bwd':>14}"
        lines += ["", case, head, "-" * len(head)]
        for name in dict.fromkeys(r["contender"] for r in rows):
            line = f"{name:<19}"
            for pass_ in passes:
                r = next(r for r in rows if (r["contender"], r["pass"]) == (name, pass_))
                fused = _fused_median(records, case, pass_)
                ratio = f"{r['median_s'] / fused:7.2f}x" if fused else f"{'-':>8}"
                line += f" {r['median_s'] * 1e3:20.3f} {ratio} {r['effective_GB_per_s']:7.1f}"
            saved = next(r["saved_bytes"] for r in rows if r["contender"] == name)
            line += f" {_megabytes(saved):>14}"
            lines.append(line)
    return "\n".join(lines)


def _megabytes(n: int) -> str:
    return f"{n / 2**20:.2f} MiB" if n >= 2**20 else f"{n} B"


def environment(device: str) -> dict:
    info = {"torch": torch.__version__, "threads": torch.get_num_threads(),
            "cpu": platform.processor() or platform.machine(), "python": platform.python_version()}
    try:
        with open("/proc/cpuinfo") as f:
            info["cpu"] = next(line.split(":", 1)[1].strip() for line in f
                               if line.startswith("model name"))
    except (OSError, StopIteration):
        pass  # not Linux: platform's name stays
    if device == "cuda":
        info["gpu"] = torch.cuda.get_device_name()
    return info


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m infodrop bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--shapes", nargs="+", metavar="SHAPE",
                        help=f"names ({', '.join(SHAPES)}; default: all) or dimensions like "
                             "4x8x3[:bfloat16]")
    parser.add_argument("--contenders", nargs="+", choices=list(CONTENDERS), metavar="NAME",
                        default=list(CONTENDERS), help="default: all that run on --device; " +
                        "; ".join(f"{c.name}: {c.help}" for c in CONTENDERS.values()))
    parser.add_argument("--passes", nargs="+", choices=PASSES, default=list(PASSES))
    parser.add_argument("--warmup", type=int, help=f"untimed calls first (default {DEFAULT_WARMUP})")
    parser.add_argument("--repeats", type=int, help=f"timed calls (default {DEFAULT_REPEATS})")
    parser.add_argument("--threads", type=int, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--quick", action="store_true",
                        help=f"the mlp shape, {QUICK['warmup']} warm-up, {QUICK['repeats']} "
                             "repeats, unless given")
    parser.add_argument("--json", metavar="PATH", help="write the raw numbers here")
    parser.add_argument("--no-progress", action="store_true", help="no progress line on stderr")
    parser.add_argument("--host", action="store_true",
                        help="instead of the matrix: the host cost of one call on tiny tensors "
                             "(infodrop/bench_host.py), against F.dropout's")
    parser.add_argument("--network", nargs="*", metavar="NAME",
                        help="instead of the matrix: whole training steps of torchvision networks "
                             "converted by infodrop.convert (infodrop/bench_network.py; names: "
                             "resnet18, vgg11_bn; default: both; needs the 'models' extra)")
    parser.add_argument("--batch", type=int, default=32, help="--network: batch size (default 32)")
    parser.add_argument("--image-size", type=int, default=64,
                        help="--network: image side (default 64)")
    parser.add_argument("--no-memory", action="store_true",
                        help="--network: skip the peak-memory measurement (a profiled step each)")
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device is visible")
    defaults = QUICK if args.quick else {"shapes": list(SHAPES), "warmup": DEFAULT_WARMUP,
                                         "repeats": DEFAULT_REPEATS}
    warmup = defaults["warmup"] if args.warmup is None else args.warmup
    repeats = defaults["repeats"] if args.repeats is None else args.repeats
    if warmup < 0:
        parser.error(f"--warmup: must be >= 0, got {warmup}")
    if repeats < 1:
        parser.error(f"--repeats: must be >= 1, got {repeats}")
    if args.threads is not None:
        if args.threads < 1:
            parser.error(f"--threads: must be >= 1, got {args.threads}")
        torch.set_num_threads(args.threads)
    if args.host:
        return _host(args.device, args.json)
    if args.network is not None:
        if args.device != "cpu":
            parser.error("--network: measured on the CPU only (peak memory from the CPU profiler)")
        if args.batch < 1 or args.image_size < 32:
            parser.error(f"--batch must be >= 1 and --image-size >= 32, got {args.batch} and "
                         f"{args.image_size}")
        return _network(args, parser)
    try:
        cases = [parse_case(text, args.device) for text in args.shapes or defaults["shapes"]]
    except ValueError as error:
        parser.error(f"--shapes: {error}")
    contenders = [CONTENDERS[name] for name in dict.fromkeys(args.contenders)]
    passes = [p for p in PASSES if p in args.passes]

    env = environment(args.device)
    print(f"infodrop bench on {args.device} ({env['cpu']}, threads: {env['threads']}, torch "
          f"{env['torch']}): median of {repeats} after {warmup} warm-up; ratio to the fused op; "
          "GB/s of each contender's least traffic (inputs read once, outputs written once)")
    records, skipped = run(cases, contenders, passes, warmup, repeats,
                           progress=not args.no_progress)
    print(format_tables(records, passes))
    for why in dict.fromkeys(s["why"] for s in skipped):
        print(f"skipped: {why}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"environment": env, "warmup": warmup, "repeats": repeats,
                       "results": records, "skipped": skipped}, f, indent=1)
    return 0


def _host(device: str, json_path) -> int:
    env = environment(device)
    print(f"infodrop bench --host on {device} ({env['cpu']}, threads: {env['threads']}, torch "
          f"{env['torch']}): host microseconds per layer on {bench_host.SHAPE} tensors, one "
          f"call and in a network of {bench_host.LAYERS} chained layers (infodrop/bench_host.py),"
          " best of 5 loops; ratio to F.dropout's")
    records = bench_host.run(device)
    print(bench_host.format_table(records))
    skipped = [name for name in bench_host.CONTENDERS if not bench_host.runs_on(name, device)]
    if skipped:
        print(f"not run on {device}: {', '.join(skipped)} (triton needs a GPU, or "
              "TRITON_INTERPRET=1 for CPU tensors)")
    if json_path:
        with open(json_path, "w") as f:
            json.dump({"environment": env, "results": records}, f, indent=1)
    return 0



def _network(args, parser) -> int:
    from . import bench_network

    networks = args.network or list(bench_network.NETWORKS)
    unknown = [n for n in networks if n not in bench_network.NETWORKS]
    if unknown:
        parser.error(f"--network: unknown {unknown}; one of {list(bench_network.NETWORKS)}")
    try:
        import torchvision  # noqa: F401
    except ModuleNotFoundError as error:
        print(f"python -m infodrop bench --network needs the 'models' extra (missing: {error.name}): "
              "pip install -e '.[models]'", file=sys.stderr)
        return 2
    # each contender's model is built afresh in each pass (see bench_network.run); --quick: one
    # pass of one step, no warm-up
    settings = {"warmup": args.warmup if args.warmup is not None else 0 if args.quick else 1,
                "repeats": args.repeats or (1 if args.quick else 3), "blocks": 1 if args.quick else 3}
    env = environment("cpu")
    print(f"infodrop bench --network ({env['cpu']}, threads: {env['threads']}, torch {env['torch']}): "
          f"one training step (forward, cross-entropy + KL, backward, SGD momentum), median of "
          f"{settings['repeats'] * settings['blocks']} in {settings['blocks']} passes after "
          f"{settings['warmup']} warm-up each; '/ plain' and 'added ms' (over what the contender is "
          "built on: fused over its heads alone, dropout and heads over plain) compare within a "
          "pass and a layout (-cl: channels_last, over plain-cl), median over passes; 'layer ms': "
          "the dropout layers' own forward and backward in a profiled step; peak: live tensors in "
          "a step, from the profiler")
    records = bench_network.run(networks, list(bench_network.CONTENDERS), batch=args.batch,
                                image_size=args.image_size, memory=not args.no_memory,
                                progress=not args.no_progress, **settings)
    print(bench_network.format_table(records))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"environment": env, **settings, "results": records}, f, indent=1)
    return 0

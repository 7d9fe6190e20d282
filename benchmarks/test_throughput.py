"""pytest-benchmark suite: `pytest benchmarks/ --benchmark-only`.

The matrix of infodrop/bench_cases.py (also run by `python -m infodrop bench`), one benchmark
group per (shape, pass) so that pytest-benchmark's table compares the contenders directly.
Pedantic mode with fixed rounds: the slowest contenders take ~0.1 s a call on 2 cores, and
pytest-benchmark's default calibration would spend seconds on each of ~70 benchmarks.
"""

import pytest
import torch

from infodrop.bench_cases import (
    CONTENDERS,
    PASSES,
    SHAPES,
    make_step,
    parse_case,
    saved_bytes,
    traffic_bytes,
    unavailable,
)

ROUNDS, WARMUP_ROUNDS = 7, 2  # warm-up covers torch.compile's first call and allocator caches
DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(
    not torch.cuda.is_available(), reason="no CUDA device"))]


@pytest.mark.parametrize("contender", list(CONTENDERS))
@pytest.mark.parametrize("pass_", PASSES)
@pytest.mark.parametrize("shape", list(SHAPES))
@pytest.mark.parametrize("device", DEVICES)
def test_throughput(benchmark, device, shape, pass_, contender):
    case, contender = parse_case(shape, device), CONTENDERS[contender]
    why = unavailable(contender, device)
    if why:
        pytest.skip(why)
    benchmark.group = f"{case.label} {pass_}"
    benchmark.pedantic(make_step(contender, case, pass_), rounds=ROUNDS,
                       warmup_rounds=WARMUP_ROUNDS, iterations=1)
    median = benchmark.stats.stats.median
    benchmark.extra_info.update({
        "elements_per_s": case.numel / median,
        "effective_GB_per_s": traffic_bytes(contender, case, pass_) / median / 1e9,
        "saved_bytes": saved_bytes(contender, case),
    })

"""pytest-benchmark suite of the host cost of one call (infodrop/bench_host.py, also run by
`python -m infodrop bench --host`): tiny tensors, so that what is timed is Python, argument
checks, dispatch and autograd.  One group per pass; compare each row with `dropout`."""

import pytest
import torch

from infodrop import bench_host

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(
    not torch.cuda.is_available(), reason="no CUDA device"))]


@pytest.mark.parametrize("contender", list(bench_host.CONTENDERS))
@pytest.mark.parametrize("measure", list(bench_host.MEASURES))
@pytest.mark.parametrize("pass_", bench_host.PASSES)
@pytest.mark.parametrize("device", DEVICES)
def test_host_overhead(benchmark, device, pass_, measure, contender):
    """Times are per step: a step of the "in a network" measure has bench_host.LAYERS layers."""
    if not bench_host.runs_on(contender, device):
        pytest.skip(f"{contender} does not run on {device} here")
    layers = bench_host.MEASURES[measure]
    benchmark.group = f"host cost, {bench_host.SHAPE} {device}, {pass_}, {measure} ({layers} layers)"
    # fixed rounds of many calls, after warm-up: one call is microseconds, and the first
    # calls of a process (lazy initialisation, allocator) must not enter the statistics
    benchmark.pedantic(bench_host.make_call(contender, pass_, device, layers), rounds=50,
                       iterations=200 // layers, warmup_rounds=5)

"""pytest-benchmark suite of a whole training step of torchvision networks converted by
infodrop.convert (infodrop/bench_network.py, also run by `python -m infodrop bench --network`):
one group per network, so that the table compares every contender with "plain" directly; the
peak memory of a step is in each benchmark's extra_info.  Needs the "models" extra."""

import pytest

from infodrop import bench_network

pytest.importorskip("torchvision")

BATCH, IMAGE_SIZE = 32, 64


@pytest.mark.parametrize("contender", list(bench_network.CONTENDERS))
@pytest.mark.parametrize("network", list(bench_network.NETWORKS))
def test_network_step(benchmark, network, contender):
    step = bench_network.make_step(network, contender, BATCH, IMAGE_SIZE)
    benchmark.group = f"{network} training step, batch {BATCH}, {IMAGE_SIZE}x{IMAGE_SIZE}"
    # a step is 0.1-1 s on 2 cores: fixed rounds, not pytest-benchmark's calibration
    benchmark.pedantic(step, rounds=5, warmup_rounds=1, iterations=1)
    benchmark.extra_info["peak_bytes"] = bench_network.peak_bytes(step)

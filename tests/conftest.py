import pytest
import torch

from infodrop.testing import DTYPES


@pytest.fixture(params=list(DTYPES.values()), ids=lambda d: str(d).split(".")[-1])
def dtype(request):
    return request.param


@pytest.fixture(scope="module")
def one_thread():
    """Small networks on small inputs: one thread runs them as fast as two, and two threads
    spin-wait on a busy machine (the convert and network-benchmark tests ran 10x slower)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)

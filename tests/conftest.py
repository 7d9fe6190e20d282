import pytest

from infodrop.testing import DTYPES


@pytest.fixture(params=list(DTYPES.values()), ids=lambda d: str(d).split(".")[-1])
def dtype(request):
    return request.param

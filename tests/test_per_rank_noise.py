"""Per-rank noise (docs/spec.md section 3): two gloo processes that call the usual identical
torch.manual_seed draw different noise by default; infodrop.use_per_rank_noise(False) and an
explicit seed give identical noise; rank 0 draws what a single process draws."""

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.utils._python_dispatch import TorchDispatchMode

import infodrop
from infodrop.testing import make_inputs

from ._helpers import requires_compiled

pytestmark = [requires_compiled,
              pytest.mark.skipif(not dist.is_available(), reason="torch.distributed is not built")]

WORLD = 2


class OpLog(TorchDispatchMode):
    """The ops a call dispatches (device work and host syncs alike go through here)."""

    def __init__(self):
        super().__init__()
        self.ops = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops.append(str(func))
        return func(*args, **(kwargs or {}))


def _dispatched_ops(x, logit):
    with OpLog() as log:
        infodrop.information_dropout(x, logit)
    return log.ops


def _draws():
    """z of each case, every case starting from the same torch.manual_seed."""
    x, logit = make_inputs((2, 3, 4))
    out = {}

    def draw(name, **options):
        torch.manual_seed(0)
        out[name] = infodrop.information_dropout(x, logit, **options)[0]

    draw("default")
    draw("reference", backend="reference")
    draw("explicit seed", seed=123)
    torch.manual_seed(0)
    compiled = torch.compile(lambda a, b: infodrop.information_dropout(a, b)[0], fullgraph=True)
    out["compiled"] = compiled(x, logit)
    out["ops"] = _dispatched_ops(x, logit)
    infodrop.use_per_rank_noise(False)
    try:
        draw("opt-out")
        out["ops without the rule"] = _dispatched_ops(x, logit)
    finally:
        infodrop.use_per_rank_noise(True)
    return out


def _worker(rank, store_path, out_dir):
    dist.init_process_group("gloo", init_method=f"file://{store_path}", rank=rank,
                            world_size=WORLD)
    try:
        torch.save(_draws(), f"{out_dir}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def draws(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ranks")
    mp.spawn(_worker, args=(str(tmp / "store"), str(tmp)), nprocs=WORLD, join=True)
    return [torch.load(tmp / f"rank{rank}.pt") for rank in range(WORLD)]


def test_identically_seeded_ranks_draw_different_noise(draws):
    for case in ("default", "reference", "compiled"):
        assert not torch.equal(draws[0][case], draws[1][case]), case


def test_backends_and_compile_fold_the_rank_alike(draws):
    for rank_draws in draws:
        torch.testing.assert_close(rank_draws["compiled"], rank_draws["default"])
        torch.testing.assert_close(rank_draws["reference"], rank_draws["default"])


def test_opt_out_and_explicit_seed_give_identical_noise(draws):
    for case in ("opt-out", "explicit seed"):
        torch.testing.assert_close(draws[0][case], draws[1][case], rtol=0, atol=0)


def test_folding_the_rank_dispatches_no_op(draws):
    rank_1 = draws[1]
    assert rank_1["ops"] == rank_1["ops without the rule"]
    assert rank_1["ops"] == ["aten.randint.low_generator", "infodrop.information_dropout.default"]


def test_rank_0_draws_what_a_single_process_draws(draws):
    single = _draws()
    for case in ("default", "reference", "explicit seed", "compiled", "opt-out"):
        torch.testing.assert_close(draws[0][case], single[case])


def test_the_switch_takes_only_a_bool():
    with pytest.raises(TypeError, match="enabled must be a bool"):
        infodrop.use_per_rank_noise(0)
    assert infodrop.is_per_rank_noise_enabled() is True

"""Several processes (issue 17, point 4; docs/spec.md section 4, "Distributed training"): a
converted torchvision ResNet trains a step under DistributedDataParallel and under FSDP2
(``fully_shard``) with two gloo processes on the CPU.  What must hold:

- per-rank noise (docs/spec.md section 3): each call of a layer on rank r draws exactly what a
  single process draws from the same generator state with ``offset = r * 0x9E3779B97F4A7C15
  mod 2^64``, so identically seeded ranks fed the same input draw different noise;
- the KL of a pass is the rank's own: ``kl_divergence(model)`` on each rank is the KL of the
  inputs that rank's layers saw, never another rank's or a reduced number;
- a step trains: DDP and FSDP2 reach the same parameters from the same start and data, and
  layers with ``kl_weight`` (the KL's gradient applied in their backward) the same as the KL in
  the loss;
- DDP broadcasts the layer's prior buffers (mu, sigma) from rank 0 before each forward, as it
  does batch-norm statistics, although the layer moves them;
- a checkpoint written by torch.distributed.checkpoint from the two FSDP2 ranks loads into one
  plain process with the same parameters and buffers (the log-normal prior's mu and sigma),
  and one written by one process loads into the two FSDP2 ranks.

The two ranks run once (a module fixture: the process start and torch's import dominate) and
save what they saw; the tests read it.
"""

import warnings

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn
from torch.nn import functional as F

import infodrop

from ._helpers import requires_compiled

torchvision = pytest.importorskip("torchvision")


def _gloo_missing():
    if not dist.is_available():
        return "torch.distributed is not built in this torch"
    if not dist.is_gloo_available():
        return "torch.distributed has no gloo backend in this torch"
    return None


_MISSING = _gloo_missing()
pytestmark = [requires_compiled, pytest.mark.usefixtures("one_thread"),
              pytest.mark.skipif(_MISSING is not None, reason=str(_MISSING))]

WORLD = 2
STRATEGIES = ("ddp", "fsdp2")
SHAPE = (4, 3, 32, 32)


def _rank_offset(rank):
    """docs/spec.md section 3: the offset a call that draws its seed uses on ``rank``."""
    return rank * 0x9E3779B97F4A7C15 % (1 << 64)


def _model():
    """A torchvision ResNet-18 converted after two stages (the log-uniform prior, ReLU outputs)
    with a Softplus Information Dropout head before the classifier (the log-normal prior, whose
    mu and sigma are buffers the layer moves in training).  Identical on every rank."""
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=10)
    infodrop.convert(model, ["layer3", "layer4"], example_input=torch.zeros(SHAPE))
    model.fc = nn.Sequential(infodrop.InfoDropLinear(512, 16, activation="softplus"),
                             nn.Linear(16, 10))
    return model


def _batches(rank):
    """Step 1: the same batch on every rank (per-rank noise is about the same input);
    step 2: each rank's own batch (the KL of a pass is about the rank's own data)."""
    same = torch.Generator().manual_seed(1)
    own = torch.Generator().manual_seed(10 + rank)
    return [(torch.randn(SHAPE, generator=g), torch.randint(0, 10, (SHAPE[0],), generator=g))
            for g in (same, own)]


class _Calls:
    """Each InformationDropout call of a step: the generator state it drew its seed from, its
    inputs, the prior it read, its options and z."""

    def __init__(self, model):
        self.calls = []
        self.handles = []
        for layer in model.modules():
            if isinstance(layer, infodrop.InformationDropout):
                self.handles.append(layer.register_forward_pre_hook(self._before))
                self.handles.append(layer.register_forward_hook(self._after))

    def _before(self, layer, args):
        x, alpha_logit = (a.detach().clone() for a in args)
        options = dict(prior=layer.prior, max_alpha=layer.max_alpha, alpha_min=layer.alpha_min,
                       mask_inactive=layer.mask_inactive, unit_mean=layer.unit_mean)
        if layer.prior == "log_normal":
            options.update(mu=layer.mu.detach().clone(), sigma=layer.sigma.detach().clone())
        self.calls.append(dict(rng=torch.get_rng_state(), x=x, alpha_logit=alpha_logit,
                               options=options))

    def _after(self, layer, args, z):
        self.calls[-1]["z"] = z.detach().clone()


def _local_state(model):
    """Every parameter (gathered where FSDP2 shards it) and buffer, as plain tensors."""
    from torch.distributed.tensor import DTensor

    return {name: (value.full_tensor() if isinstance(value, DTensor) else value).detach().clone()
            for name, value in model.state_dict().items()}


def _wrapped(model, strategy):
    """model under DDP or FSDP2, tracked, with its optimiser."""
    if strategy == "ddp":
        wrapped = nn.parallel.DistributedDataParallel(model)
    else:
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import fully_shard

        mesh = init_device_mesh("cpu", (WORLD,))
        # a unit per stage (the converted ones are InfoDropWrappers) and the head, then the root
        for unit in (model.layer1, model.layer2, model.layer3, model.layer4, model.fc):
            fully_shard(unit, mesh=mesh)
        wrapped = fully_shard(model, mesh=mesh)
    infodrop.track_kl(wrapped)
    return wrapped, torch.optim.SGD(wrapped.parameters(), lr=0.1)


def _train(strategy, rank, checkpoint_dir):
    model = _model()
    wrapped, optimizer = _wrapped(model, strategy)
    # what the inner model's buffers hold when its forward starts (after DDP's broadcast)
    starts = []
    model.register_forward_pre_hook(
        lambda module, args: starts.append({n: b.clone() for n, b in module.named_buffers()}))
    torch.manual_seed(1234)  # the same generator on every rank, as the usual training script has
    steps = []
    for x, y in _batches(rank):
        calls = _Calls(model)
        out = wrapped(x)
        kl = infodrop.kl_divergence(wrapped)
        loss = F.cross_entropy(out, y) + 1e-3 * kl.mean()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        for handle in calls.handles:
            handle.remove()
        steps.append(dict(calls=calls.calls, kl=kl.detach(), state=_local_state(model),
                          buffers={n: b.clone() for n, b in model.named_buffers()}))
    result = dict(steps=steps, starts=starts, state=steps[-1]["state"], rng=torch.get_rng_state())
    if strategy == "fsdp2":
        import torch.distributed.checkpoint as dcp

        # FSDP2 leaves buffers each rank's own (as batch-norm statistics are): the checkpoint
        # is rank 0's once they are broadcast, the recipe docs/spec.md gives
        result["buffers before sync"] = {n: b.clone() for n, b in model.named_buffers()}
        with torch.no_grad():
            for buffer in model.buffers():
                dist.broadcast(buffer, 0)
        result["saved"] = _local_state(model)
        dcp.save(model.state_dict(), checkpoint_id=checkpoint_dir)
    return result


def _step_with_kl_weight(strategy, rank):
    """_train's first step, the KL's gradient applied by the layers (kl_weight) instead of the
    loss: the training loop a converted model is promised to need (README), unchanged."""
    model = _model()
    for layer in model.modules():
        if isinstance(layer, infodrop.InformationDropout):
            layer.kl_weight = 1e-3
    wrapped, optimizer = _wrapped(model, strategy)
    torch.manual_seed(1234)
    x, y = _batches(rank)[0]
    F.cross_entropy(wrapped(x), y).backward()
    optimizer.step()
    return _local_state(model)


def _single_process_state():
    """The state one plain process checkpoints: every tensor of _model() moved off its
    initial value, so that a load shows."""
    model = _model()
    with torch.no_grad():
        for value in model.state_dict().values():
            value.mul_(2).add_(1)
    return model.state_dict()


def _load_sharded(rank, checkpoint_dir):
    """The single process's checkpoint loaded into the two FSDP2 ranks' sharded model."""
    import torch.distributed.checkpoint as dcp

    model = _model()
    _wrapped(model, "fsdp2")
    state = model.state_dict()
    dcp.load(state, checkpoint_id=checkpoint_dir)
    model.load_state_dict(state)
    return _local_state(model)


def _worker(rank, store, out_dir):
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=WORLD)
    try:
        for strategy in STRATEGIES:
            result = _train(strategy, rank, f"{out_dir}/checkpoint")
            result["kl_weight state"] = _step_with_kl_weight(strategy, rank)
            torch.save(result, f"{out_dir}/{strategy}-rank{rank}.pt")
        torch.save(_load_sharded(rank, f"{out_dir}/single"), f"{out_dir}/loaded-rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    import torch.distributed.checkpoint as dcp

    tmp = tmp_path_factory.mktemp("distributed")
    with warnings.catch_warnings():  # DCP warns that it saves from one process, the point here
        warnings.filterwarnings("ignore", "torch.distributed is disabled")
        dcp.save(_single_process_state(), checkpoint_id=tmp / "single", no_dist=True)
    mp.spawn(_worker, args=(str(tmp / "store"), str(tmp)), nprocs=WORLD, join=True)
    ranks = {s: [torch.load(tmp / f"{s}-rank{r}.pt") for r in range(WORLD)] for s in STRATEGIES}
    ranks["loaded"] = [torch.load(tmp / f"loaded-rank{r}.pt") for r in range(WORLD)]
    return ranks, tmp / "checkpoint"


def _replay(call, rank):
    """The call as one plain process makes it: the same generator state, the offset of
    ``rank`` given explicitly (no torch.distributed here)."""
    torch.set_rng_state(call["rng"])
    return infodrop.information_dropout(call["x"], call["alpha_logit"], offset=_rank_offset(rank),
                                        **call["options"])


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_each_rank_draws_its_own_noise(runs, strategy):
    ranks = runs[0][strategy]
    for rank, run in enumerate(ranks):
        for step in run["steps"]:
            assert len(step["calls"]) == 3  # layer3, layer4, the Softplus head
            for call in step["calls"]:
                torch.testing.assert_close(call["z"], _replay(call, rank)[0])
    # step 1 feeds both ranks the same batch: the first layer sees the same input on both...
    first = [run["steps"][0]["calls"][0] for run in ranks]
    assert torch.equal(first[0]["x"], first[1]["x"])
    assert torch.equal(first[0]["alpha_logit"], first[1]["alpha_logit"])
    # ...from the same generator state, and still draws different noise
    assert torch.equal(first[0]["rng"], first[1]["rng"])
    assert not torch.equal(first[0]["z"], first[1]["z"])


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_the_kl_of_a_pass_is_the_ranks_own(runs, strategy):
    ranks = runs[0][strategy]
    for step in range(2):
        kls = []
        for rank, run in enumerate(ranks):
            calls = run["steps"][step]["calls"]
            own = sum(_replay(call, rank)[1] for call in calls)
            torch.testing.assert_close(run["steps"][step]["kl"], own)
            kls.append(own)
        assert not torch.allclose(kls[0], kls[1])


def test_a_step_trains_alike_under_ddp_and_fsdp2(runs):
    ranks = runs[0]
    start = _model()
    ddp, fsdp = (ranks[s][0]["state"] for s in STRATEGIES)
    for name, value in start.named_parameters():
        assert not torch.equal(ddp[name], value), name  # every parameter learned
        assert torch.equal(ranks["ddp"][1]["state"][name], ddp[name]), name  # replicas agree
        # both average the ranks' gradients: the same step (up to the order of the reduction)
        torch.testing.assert_close(fsdp[name], ddp[name], rtol=1e-4, atol=1e-5, msg=name)


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_kl_weight_takes_the_step_of_the_kl_in_the_loss(runs, strategy):
    for run in runs[0][strategy]:
        step_1 = run["steps"][0]["state"]
        for name, value in run["kl_weight state"].items():
            torch.testing.assert_close(value, step_1[name], rtol=1e-5, atol=1e-6, msg=name)


def test_the_generator_stays_identical_across_ranks(runs):
    """The rank goes into the offset, not the generator: one saved generator state resumes
    every rank, at any world size."""
    for strategy in STRATEGIES:
        ranks = runs[0][strategy]
        assert torch.equal(ranks[0]["rng"], ranks[1]["rng"])


def test_ddp_broadcasts_the_prior_buffers_the_layer_moves(runs):
    ranks = runs[0]["ddp"]
    names = ("fc.0.dropout.mu", "fc.0.dropout.sigma")
    after_step_1 = [run["steps"][0]["buffers"] for run in ranks]
    for name in names:
        # each rank moved its prior with its own (noisy) activations...
        assert not torch.equal(after_step_1[0][name], after_step_1[1][name]), name
        # ...and the next forward starts from rank 0's on every rank
        for run in ranks:
            assert torch.equal(run["starts"][1][name], after_step_1[0][name]), name


# DCP warns that it loads in one process, which is the point here
@pytest.mark.filterwarnings("ignore:torch.distributed is disabled")
def test_a_checkpoint_of_two_ranks_loads_into_one_process(runs):
    import torch.distributed.checkpoint as dcp

    ranks, checkpoint = runs
    fsdp = ranks["fsdp2"]
    mu = "fc.0.dropout.mu"
    assert not torch.equal(fsdp[0]["buffers before sync"][mu], fsdp[1]["buffers before sync"][mu])
    model = _model()
    state = model.state_dict()
    dcp.load(state, checkpoint_id=checkpoint, no_dist=True)
    model.load_state_dict(state)
    loaded = model.state_dict()
    assert loaded.keys() == fsdp[0]["saved"].keys()
    # the layers' only state is the log-normal prior: no generator state, no KL of a pass
    assert {name for name in loaded if ".dropout." in name} == {mu, "fc.0.dropout.sigma"}
    for name, value in fsdp[0]["saved"].items():
        assert torch.equal(loaded[name], value), name
    assert loaded[mu].data_ptr() == model.fc[0].dropout.mu.data_ptr()


def test_a_checkpoint_of_one_process_loads_into_two_ranks(runs):
    """The other way: the sharded parameters take their shards of the saved tensors, and every
    rank's buffers (the prior's mu and sigma too) the saved values."""
    saved = _single_process_state()
    for loaded in runs[0]["loaded"]:
        assert loaded.keys() == saved.keys()
        for name, value in saved.items():
            assert torch.equal(loaded[name], value), name

"""A layer with a learned log-normal prior under torch.utils.checkpoint (reentrant or not): its
recomputed forward uses the prior its first run used, the step's gradients, KL and prior buffers
are those of the step without checkpointing, and the buffers move once per call, not twice."""

import copy
import pickle

import pytest
import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

import infodrop

WEIGHT = 0.25
MODES = {"reentrant": True, "non-reentrant": False}


class Shared(nn.Module):
    """One Softplus block (log-normal prior, learned: its buffers move in every training call)
    called ``calls`` times in a pass: each call checkpointed on its own, or all of them in one
    checkpointed function (``together``), or no checkpoint (``mode=None``)."""

    def __init__(self, calls=1, together=False, mode=None, kl_weight=None):
        super().__init__()
        self.block = infodrop.InfoDropLinear(8, 8, activation="softplus", kl_weight=kl_weight)
        self.calls, self.together, self.mode = calls, together, mode
        infodrop.track_kl(self)

    def wrap(self, function, x):
        if self.mode is None:
            return function(x)
        return checkpoint(function, x, use_reentrant=MODES[self.mode])

    def run(self, x):
        for _ in range(self.calls):
            x = self.block(x)
        return x

    def forward(self, x):
        if self.together:
            return self.wrap(self.run, x)
        for _ in range(self.calls):
            x = self.wrap(self.block, x)
        return x


def step(model, seed=7):
    """One training step's gradients (x and every parameter), the KL of its pass and the prior's
    buffers after it; the KL in the loss unless the layer applies it (kl_weight)."""
    x = torch.randn(5, 8, generator=torch.Generator().manual_seed(seed), requires_grad=True)
    torch.manual_seed(seed)  # the noise: checkpointing restores this generator's state
    loss = model(x).sum()
    kl = infodrop.kl_divergence(model)
    if model.block.dropout.kl_weight is None:
        loss = loss + kl.sum()
    loss.backward()
    grads = [x.grad] + [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    return grads, kl.detach(), [b.clone() for b in model.buffers()]


def pair(mode, **options):
    """A model checkpointed in ``mode`` and its twin without checkpointing, alike."""
    torch.manual_seed(0)
    plain = Shared(**options)
    checkpointed = Shared(mode=mode, **options)
    checkpointed.load_state_dict(plain.state_dict())
    return plain, checkpointed


def assert_same_step(plain, checkpointed, steps=2):
    """Steps (the prior moves in each) give the same gradients, KL and buffers, exactly: the
    recomputation runs the same ops on the same values."""
    for seed in range(steps):
        want, got = step(plain, seed), step(checkpointed, seed)
        for name, a, b in zip(("gradients", "kl", "buffers"), got, want):
            for u, v in zip(a, b) if isinstance(a, list) else [(a, b)]:
                assert torch.equal(u, v), f"step {seed}: {name} differ by {(u - v).abs().max()}"


CASES = [  # (mode, kl_weight): reentrant checkpointing needs kl_weight (test_kl_pass.py)
    ("non-reentrant", None), ("non-reentrant", WEIGHT), ("reentrant", WEIGHT)]


@pytest.mark.parametrize("mode, kl_weight", CASES)
def test_a_checkpointed_layer_recomputes_with_the_prior_it_ran_with(mode, kl_weight):
    """Before: the recomputation read the buffers the call had already moved (main.weight's
    gradient off by up to 0.07)."""
    assert_same_step(*pair(mode, kl_weight=kl_weight))


@pytest.mark.parametrize("together", [False, True], ids=["each-call", "one-checkpoint"])
@pytest.mark.parametrize("mode, kl_weight", CASES)
def test_a_layer_called_twice_recomputes_each_call_with_its_own_prior(mode, kl_weight, together):
    """The second call ran with the prior the first moved; the recomputations (in the backward's
    order, the second first) read each its own."""
    assert_same_step(*pair(mode, kl_weight=kl_weight, calls=2, together=together))


def test_two_checkpointed_passes_then_one_backward():
    """A pass's recomputation may come after the next pass moved the prior again (gradient
    accumulation over passes before one backward): it still reads its own call's prior."""
    plain, checkpointed = pair("non-reentrant")
    grads = []
    for model in (plain, checkpointed):
        loss = 0
        for seed in (1, 2):
            x = torch.randn(5, 8, generator=torch.Generator().manual_seed(seed))
            torch.manual_seed(seed)
            loss = loss + model(x).sum() + infodrop.kl_divergence(model).sum()
        loss.backward()
        grads.append([p.grad for p in model.parameters()])
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_a_retained_graph_recomputes_alike_twice():
    """backward(retain_graph=True) then backward again: the second recomputation also finds the
    prior the call used (it is held as long as the graph that may recompute the call)."""
    plain, checkpointed = pair("non-reentrant")
    x = torch.randn(5, 8)
    results = []
    for model in (plain, checkpointed):
        torch.manual_seed(3)
        loss = model(x).sum() + infodrop.kl_divergence(model).sum()
        loss.backward(retain_graph=True)
        first = [p.grad.clone() for p in model.parameters()]
        model.zero_grad()
        loss.backward()
        results.append((first, [p.grad for p in model.parameters()]))
    for got, want in zip(*results):
        for a, b in zip(got, want):
            torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_the_recorded_prior_goes_with_the_graph_of_its_pass():
    """What a recomputation looks up belongs to the graph of one pass, not to the layer: deepcopy
    and pickle leave it behind, and it is freed with the graph (here: the pass's output and the
    KL the layer holds until its next pass)."""
    model = Shared(mode="non-reentrant")
    layer = model.block.dropout
    x = torch.randn(5, 8, requires_grad=True)
    out = model(x)
    assert len(layer._priors_used) == 1 and layer._priors_used[0]() is not None
    assert not copy.deepcopy(model).block.dropout._priors_used
    pickle.loads(pickle.dumps(model))
    del out
    with torch.no_grad():
        model(x)  # the next pass (without gradients, which nothing recomputes)
    assert layer._priors_used[0]() is None
